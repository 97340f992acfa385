//! Kafka end to end: the `eddy` binary against a real broker (a KRaft
//! single node started from Maven Central's jars, see
//! `tests/common/kafka.rs`).
//!
//! Expected answers are computed here from the records the test produced,
//! never from what eddy printed before.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::kafka::{Kafka, Record, TestHeaders, free_ports, sql_file};

/// A bid as JSON: auction, price, event time in ms.
fn bid(auction: i64, price: i64, ts_ms: i64) -> String {
    format!(
        r#"{{"auction": {auction}, "price": {price}, "date_time": "{}"}}"#,
        chrono::DateTime::from_timestamp_millis(ts_ms)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S%.3f")
    )
}

/// `n` bids over 4 partitions: auction `i % 7`, price `i`, 100 ms apart.
fn bids(n: i64) -> Vec<(i32, String)> {
    (0..n)
        .map(|i| ((i % 4) as i32, bid(i % 7, i, 1_700_000_000_000 + i * 100)))
        .collect()
}

/// Per 10-second window and auction, the count and max price of `bids(n)`.
fn expected_windows(n: i64) -> BTreeMap<(i64, i64), (i64, i64)> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let ts = 1_700_000_000_000 + i * 100;
        let window = ts - ts.rem_euclid(10_000);
        let e = out.entry((window, i % 7)).or_insert((0, i64::MIN));
        e.0 += 1;
        e.1 = e.1.max(i);
    }
    out
}

fn source_ddl(kafka: &Kafka, topic: &str, extra: &str) -> String {
    format!(
        "CREATE TABLE bids (
            auction BIGINT,
            price BIGINT,
            date_time TIMESTAMP(3),
            WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND
        ) WITH (
            'connector' = 'kafka',
            'topic' = '{topic}',
            'properties.bootstrap.servers' = '{}',
            'scan.startup.mode' = 'earliest-offset',
            'scan.bounded.mode' = 'latest-offset',
            'format' = 'json'{extra}
        );\n",
        kafka.bootstrap
    )
}

fn window_query(kafka: &Kafka, topic: &str, guarantee: &str) -> String {
    format!(
        "CREATE TABLE windows (
            window_start TIMESTAMP(3), auction BIGINT, bids BIGINT, top BIGINT
        ) WITH (
            'connector' = 'kafka',
            'topic' = '{topic}',
            'properties.bootstrap.servers' = '{}',
            'sink.delivery-guarantee' = '{guarantee}',
            'sink.transactional-id-prefix' = 'eddy-test-{topic}',
            'format' = 'json'
        );
        INSERT INTO windows
        SELECT window_start, auction, COUNT(*) AS bids, MAX(price) AS top
        FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
        GROUP BY window_start, window_end, auction;\n",
        kafka.bootstrap
    )
}

/// The windows a sink topic holds, as (window start ms, auction) → (count,
/// max), each row's number of copies counted.
fn windows_in(records: &[Record]) -> BTreeMap<(i64, i64), Vec<(i64, i64)>> {
    let mut out: BTreeMap<(i64, i64), Vec<(i64, i64)>> = BTreeMap::new();
    for record in records {
        let v: serde_json::Value = serde_json::from_str(&record.value).unwrap();
        let start = chrono::DateTime::parse_from_rfc3339(v["window_start"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        out.entry((start, v["auction"].as_i64().unwrap()))
            .or_default()
            .push((v["bids"].as_i64().unwrap(), v["top"].as_i64().unwrap()));
    }
    out
}

fn eddy(sql: &Path, state: Option<&Path>, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.arg("run").arg(sql).args(extra);
    if let Some(state) = state {
        cmd.arg("--state-dir").arg(state);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn run_ok(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "eddy failed: {stderr}");
    stderr
}

/// Produces 2 000 bids into a 4-partition topic, runs the window job
/// once into a sink with `guarantee`, and reads the sink's topic
/// (`read_committed` for exactly-once).
fn window_job_once(guarantee: &str) {
    let kafka = Kafka::start();
    kafka.create_topic("bids", 4);
    kafka.create_topic("windows", 2);
    let n = 2_000;
    kafka.produce("bids", &bids(n));
    let dir = tempfile::tempdir().unwrap();
    let sql = source_ddl(&kafka, "bids", "") + &window_query(&kafka, "windows", guarantee);
    let file = sql_file(dir.path(), "job.sql", &sql);
    let mut cmd = eddy(&file, None, &["--parallelism", "2"]);
    cmd.env("EDDY_LOG", "info,eddy_connectors=debug");
    eprintln!("{}", run_ok(cmd));
    let read_committed = guarantee == "exactly-once";
    let got = windows_in(&kafka.read_all("windows", read_committed));
    let want: BTreeMap<_, _> = expected_windows(n)
        .into_iter()
        .map(|(k, v)| (k, vec![v]))
        .collect();
    assert_same_windows(&got, &want);
}

#[test]
fn a_bounded_topic_is_aggregated_into_a_topic() {
    window_job_once("at-least-once");
}

#[test]
fn an_exactly_once_sink_commits_each_row_once() {
    window_job_once("exactly-once");
}

/// How one run of a job ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Finished,
    Killed,
}

/// Runs the job once; with `kill_after`, kills it (SIGKILL) once it has
/// completed that many more checkpoints, if it is still running; with
/// `crash_at`, eddy kills itself at that point of a checkpoint.
fn run_killed(sql: &Path, state: &Path, kill_after: Option<u64>, crash_at: Option<&str>) -> Ended {
    let mut cmd = eddy(
        sql,
        Some(state),
        &["--parallelism", "2", "--checkpoint-interval", "50ms"],
    );
    cmd.stdout(Stdio::null())
        .env_remove("EDDY_CRASH_AT")
        .env("EDDY_LOG", "info,eddy_connectors=debug");
    if let Some(point) = crash_at {
        cmd.env("EDDY_CRASH_AT", point);
    }
    let before = common::highest_checkpoint(state);
    let mut child = cmd.spawn().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            if let Ok(dir) = std::env::var("EDDY_KAFKA_LOGS") {
                let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
                std::fs::write(format!("{dir}/run-{n}.log"), &stderr).unwrap();
            }
            if status.success() {
                return Ended::Finished;
            }
            use std::os::unix::process::ExitStatusExt;
            assert!(
                matches!(status.signal(), Some(9 | 6)),
                "eddy failed ({status}): {stderr}"
            );
            return Ended::Killed;
        }
        if kill_after.is_some_and(|n| common::highest_checkpoint(state) >= before + n) {
            child.kill().unwrap();
            child.wait().unwrap();
            if let Ok(dir) = std::env::var("EDDY_KAFKA_LOGS") {
                let mut stderr = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
                let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
                std::fs::write(format!("{dir}/run-{n}.log"), &stderr).unwrap();
            }
            return Ended::Killed;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills and restarts the window job over `n` bids, produced while it
/// runs (about 20 000 a second), until it finishes; returns how often it
/// was killed.
fn kill_until_done(kafka: &Kafka, guarantee: &str, n: i64, seed: u64) -> usize {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for chunk in bids(n).chunks(1_000) {
                kafka.produce("bids", chunk);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        kill_and_restart(kafka, guarantee, n, seed)
    })
}

fn kill_and_restart(kafka: &Kafka, guarantee: &str, n: i64, seed: u64) -> usize {
    let dir = tempfile::tempdir().unwrap();
    // The source ends at the offsets the producer will reach.
    let ends = (0..4)
        .map(|p| {
            format!(
                "partition:{p},offset:{}",
                (0..n).filter(|i| i % 4 == p).count()
            )
        })
        .collect::<Vec<_>>()
        .join(";");
    let bounded = format!(
        ",\n            'scan.bounded.mode' = 'specific-offsets',\n            'scan.bounded.specific-offsets' = '{ends}'"
    );
    let sql = source_ddl(kafka, "bids", &bounded)
        .replace("'scan.bounded.mode' = 'latest-offset',", "")
        + &window_query(kafka, "windows", guarantee);
    let file = sql_file(dir.path(), "job.sql", &sql);
    let state = dir.path().join("state");
    let mut rng = seed;
    let mut kills = 0;
    for attempt in 0.. {
        assert!(attempt < 40, "the job did not finish in 40 runs");
        // The first run dies after a checkpoint is durable and before its
        // transaction commits: recovery must send that transaction again.
        let crash_at = (attempt == 1 && guarantee == "exactly-once").then_some("manifest-written");
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let kill_after = (attempt < 6 && crash_at.is_none()).then_some(1 + (rng >> 33) % 4);
        let ended = run_killed(&file, &state, kill_after, crash_at);
        eprintln!(
            "run {attempt}: kill after {kill_after:?} checkpoints, crash at {crash_at:?}: {ended:?}"
        );
        match ended {
            Ended::Finished => break,
            Ended::Killed => kills += 1,
        }
    }
    kills
}

fn seed() -> u64 {
    let seed = std::env::var("EDDY_KAFKA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed {seed} (EDDY_KAFKA_SEED={seed} repeats the kills)");
    seed
}

#[test]
fn killed_exactly_once_jobs_commit_every_window_once() {
    let kafka = Kafka::start();
    kafka.create_topic("bids", 4);
    kafka.create_topic("windows", 2);
    let n = 60_000;
    let kills = kill_until_done(&kafka, "exactly-once", n, seed());
    assert!(kills >= 2, "too few kills: {kills}");
    let got = windows_in(&kafka.read_all("windows", true));
    let want: BTreeMap<_, _> = expected_windows(n)
        .into_iter()
        .map(|(k, v)| (k, vec![v]))
        .collect();
    assert_same_windows(&got, &want);
}

/// Fails with the first differences only (there are thousands of windows).
fn assert_same_windows(
    got: &BTreeMap<(i64, i64), Vec<(i64, i64)>>,
    want: &BTreeMap<(i64, i64), Vec<(i64, i64)>>,
) {
    let keys: std::collections::BTreeSet<_> = got.keys().chain(want.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| got.get(k) != want.get(k))
        .map(|k| format!("{k:?}: got {:?}, want {:?}", got.get(k), want.get(k)))
        .collect();
    assert!(
        diffs.is_empty(),
        "{} of {} windows differ, first: {:#?}",
        diffs.len(),
        want.len(),
        &diffs[..diffs.len().min(8)]
    );
}

#[test]
fn killed_at_least_once_jobs_lose_no_window() {
    let kafka = Kafka::start();
    kafka.create_topic("bids", 4);
    kafka.create_topic("windows", 2);
    let n = 60_000;
    let kills = kill_until_done(&kafka, "at-least-once", n, seed());
    assert!(kills >= 2, "too few kills: {kills}");
    let got = windows_in(&kafka.read_all("windows", false));
    let want = expected_windows(n);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, copies) in &got {
        assert!(
            copies.iter().all(|c| c == &want[k]),
            "window {k:?}: {copies:?}"
        );
    }
}

/// `key.fields` writes the key columns as each record's key (and, with
/// the default partitioner, one key's records go to one partition);
/// `EXCEPT_KEY` leaves them out of the value.
#[test]
fn key_fields_become_record_keys() {
    let kafka = Kafka::start();
    kafka.create_topic("bids", 4);
    kafka.create_topic("keyed", 3);
    let n = 700;
    kafka.produce("bids", &bids(n));
    let dir = tempfile::tempdir().unwrap();
    let sql = source_ddl(&kafka, "bids", "")
        + &format!(
            "CREATE TABLE keyed (auction BIGINT, price BIGINT) WITH (
                'connector' = 'kafka', 'topic' = 'keyed',
                'properties.bootstrap.servers' = '{}',
                'key.fields' = 'auction', 'key.format' = 'json',
                'value.fields-include' = 'EXCEPT_KEY', 'value.format' = 'json'
            );
            INSERT INTO keyed SELECT auction, price FROM bids;\n",
            kafka.bootstrap
        );
    let file = sql_file(dir.path(), "job.sql", &sql);
    run_ok(eddy(&file, None, &["--parallelism", "2"]));
    let records = kafka.read_all("keyed", false);
    assert_eq!(records.len(), n as usize);
    let mut partition_of: BTreeMap<i64, i32> = BTreeMap::new();
    let mut prices: Vec<i64> = Vec::new();
    for r in &records {
        let key: serde_json::Value = serde_json::from_str(r.key.as_deref().unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        let (auction, price) = (
            key["auction"].as_i64().unwrap(),
            value["price"].as_i64().unwrap(),
        );
        assert_eq!(auction, price % 7, "bid {price} has auction {auction}");
        assert!(value.get("auction").is_none(), "EXCEPT_KEY: {}", r.value);
        let p = *partition_of.entry(auction).or_insert(r.partition);
        assert_eq!(p, r.partition, "auction {auction} is in two partitions");
        prices.push(price);
    }
    prices.sort_unstable();
    assert_eq!(prices, (0..n).collect::<Vec<_>>());
}

/// Flink's metadata columns: a source's `partition` and `offset` (VIRTUAL)
/// come from each record, and a sink's `timestamp` column becomes each
/// record's timestamp rather than part of its value.
#[test]
fn metadata_columns_are_read_and_the_timestamp_written() {
    let kafka = Kafka::start();
    kafka.create_topic("bids", 4);
    kafka.create_topic("out", 1);
    let n = 400;
    kafka.produce("bids", &bids(n));
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE TABLE bids (
            auction BIGINT, price BIGINT, date_time TIMESTAMP(3),
            part INT METADATA FROM 'partition' VIRTUAL,
            `offset` BIGINT METADATA VIRTUAL
        ) WITH (
            'connector' = 'kafka', 'topic' = 'bids',
            'properties.bootstrap.servers' = '{0}',
            'scan.startup.mode' = 'earliest-offset',
            'scan.bounded.mode' = 'latest-offset',
            'format' = 'json'
        );
        CREATE TABLE out (
            price BIGINT, part INT, off BIGINT,
            ts TIMESTAMP(3) METADATA FROM 'timestamp'
        ) WITH (
            'connector' = 'kafka', 'topic' = 'out',
            'properties.bootstrap.servers' = '{0}',
            'format' = 'json'
        );
        INSERT INTO out SELECT price, part, `offset`, date_time FROM bids;\n",
        kafka.bootstrap
    );
    let file = sql_file(dir.path(), "job.sql", &sql);
    run_ok(eddy(&file, None, &["--parallelism", "2"]));
    let records = kafka.read_all("out", false);
    assert_eq!(records.len(), n as usize);
    for r in &records {
        let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        let price = v["price"].as_i64().unwrap();
        // `bids(n)`: bid i went to partition i % 4, at offset i / 4.
        assert_eq!(v["part"].as_i64(), Some(price % 4), "{}", r.value);
        assert_eq!(v["off"].as_i64(), Some(price / 4), "{}", r.value);
        assert!(
            v.get("ts").is_none(),
            "the timestamp is no value field: {}",
            r.value
        );
        assert_eq!(r.timestamp, Some(1_700_000_000_000 + price * 100));
    }
}

/// A broker that never answers: the sink's records are retried
/// (`sink.retry.*`) until librdkafka gives up on them, and the job fails
/// with the last error instead of reporting success.
#[test]
fn a_sink_whose_broker_is_away_fails_the_job_with_the_last_error() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9: connections are refused at once.
    let sql = "CREATE TABLE out (v BIGINT) WITH (
            'connector' = 'kafka', 'topic' = 'out',
            'properties.bootstrap.servers' = '127.0.0.1:9',
            'properties.message.timeout.ms' = '1500',
            'sink.retry.max-attempts' = '3',
            'sink.retry.initial-backoff' = '10ms',
            'sink.retry.max-backoff' = '100ms',
            'format' = 'json'
        );
        INSERT INTO out VALUES (1), (2), (3);\n";
    let file = sql_file(dir.path(), "job.sql", sql);
    let out = eddy(&file, None, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the job must fail: {stderr}");
    assert!(
        stderr.contains("kafka: a record was not delivered"),
        "{stderr}"
    );
}

/// Flink's restart strategy: a job whose sink cannot reach its broker
/// fails, and is restarted from its last checkpoint after the delay, again
/// and again, until the broker is there; the rows then arrive.
#[test]
fn a_failed_job_is_restarted_under_its_restart_strategy() {
    let (port, controller) = free_ports();
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "SET 'restart-strategy.type' = 'fixed-delay';
        SET 'restart-strategy.fixed-delay.attempts' = '100';
        SET 'restart-strategy.fixed-delay.delay' = '300 ms';
        CREATE TABLE out (v BIGINT) WITH (
            'connector' = 'kafka', 'topic' = 'out',
            'properties.bootstrap.servers' = '127.0.0.1:{port}',
            'properties.message.timeout.ms' = '1500',
            'format' = 'json'
        );
        INSERT INTO out VALUES (1), (2), (3);\n"
    );
    let file = sql_file(dir.path(), "job.sql", &sql);
    let mut cmd = eddy(&file, None, &[]);
    cmd.env("EDDY_LOG", "warn");
    let mut child = cmd.spawn().unwrap();
    // Wait for the first restart in eddy's log, then start the broker.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let line = line.unwrap();
            if line.contains("restarting it from its last checkpoint") {
                let _ = tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the job never failed and restarted");
    let kafka = Kafka::start_on(port, controller);
    kafka.create_topic("out", 1);
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "eddy failed: {log}");
    assert!(log.contains("restarted"), "{log}");
    let mut values: Vec<i64> = kafka
        .read_all("out", false)
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.value).unwrap()["v"]
                .as_i64()
                .unwrap()
        })
        .collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values, [1, 2, 3]);
}

/// Malformed records of a topic go to a dead-letter topic, each with its
/// partition, offset and reason, and the good ones through the query; the
/// counts are in eddy's summary.
#[test]
fn malformed_records_go_to_a_dead_letter_topic() {
    let kafka = Kafka::start();
    kafka.create_topic("bids", 4);
    kafka.create_topic("dlq", 1);
    kafka.create_topic("clean", 1);
    let mut records = bids(40);
    records.insert(10, (1, "{not json".to_string()));
    records.insert(20, (0, r#"{"auction": "seven", "price": 1}"#.to_string()));
    kafka.produce("bids", &records);
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE SINK dlq WITH (
            'connector' = 'kafka', 'topic' = 'dlq',
            'properties.bootstrap.servers' = '{0}', 'format' = 'json'
        );\n",
        kafka.bootstrap
    ) + &source_ddl(
        &kafka,
        "bids",
        ", 'bad-data' = 'dead-letter', 'bad-data.dead-letter-sink' = 'dlq'",
    ) + &format!(
        "CREATE TABLE clean (auction BIGINT, price BIGINT) WITH (
            'connector' = 'kafka', 'topic' = 'clean',
            'properties.bootstrap.servers' = '{}', 'format' = 'json'
        );
        INSERT INTO clean SELECT auction, price FROM bids;\n",
        kafka.bootstrap
    );
    let file = sql_file(dir.path(), "job.sql", &sql);
    let stderr = run_ok(eddy(&file, None, &["--parallelism", "2"]));
    assert!(
        stderr.contains("note: 2 bad records were sent to the dead-letter sink"),
        "{stderr}"
    );
    let mut prices: Vec<i64> = kafka
        .read_all("clean", false)
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.value).unwrap()["price"]
                .as_i64()
                .unwrap()
        })
        .collect();
    prices.sort_unstable();
    assert_eq!(prices, (0..40).collect::<Vec<_>>());
    // Where each bad record was: its partition and offset in `bids`.
    let bad: BTreeMap<String, (i32, i64)> = kafka
        .read_all("bids", false)
        .into_iter()
        .filter(|r| !r.value.contains("date_time"))
        .map(|r| (r.value, (r.partition, r.offset)))
        .collect();
    let dead = kafka.read_all("dlq", false);
    assert_eq!(dead.len(), 2);
    for record in dead {
        let v: serde_json::Value = serde_json::from_str(&record.value).unwrap();
        let text = v["_record"].as_str().unwrap();
        let (partition, offset) = bad[text];
        assert_eq!(v["_partition"], format!("bids-{partition}"), "{v}");
        assert_eq!(v["_offset"], offset, "{v}");
        assert_eq!(v["_source"], "bids");
        assert!(!v["_reason"].as_str().unwrap().is_empty(), "{v}");
        assert!(v["_timestamp"].is_string(), "{v}");
    }
}

/// The last record of each key of `records` (keys as JSON objects), as
/// `key → Some(value)`, or `None` if it is a tombstone; each key must stay
/// in one partition.
fn last_per_key(records: &[Record]) -> BTreeMap<String, Option<serde_json::Value>> {
    let mut last = BTreeMap::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    for r in records {
        let key = r.key.clone().expect("an upsert record has a key");
        let p = *partition_of.entry(key.clone()).or_insert(r.partition);
        assert_eq!(p, r.partition, "key {key} is in two partitions");
        let value = (!r.tombstone).then(|| serde_json::from_str(&r.value).unwrap());
        last.insert(key, value);
    }
    last
}

/// `upsert-kafka` both ways. An updating aggregate writes each auction's
/// count and top price as upserts; a tombstone deletes one auction; a
/// second job reads the topic as a changelog (normalized by key) into a
/// copy (the tombstone passes through) and a global aggregate that
/// retracts each key's old row. Expected values come from the bids.
#[test]
fn upsert_kafka_writes_upserts_and_reads_them_back_as_a_changelog() {
    let kafka = Kafka::start();
    kafka.create_topic("bids", 4);
    for topic in ["top", "copy", "summary"] {
        kafka.create_topic(topic, 3);
    }
    let n = 500;
    kafka.produce("bids", &bids(n));
    let upsert_table = |name: &str, columns: &str, extra: &str| {
        format!(
            "CREATE TABLE {name} ({columns}) WITH (
                'connector' = 'upsert-kafka', 'topic' = '{name}',
                'properties.bootstrap.servers' = '{}',
                'key.format' = 'json', 'value.format' = 'json'{extra}
            );\n",
            kafka.bootstrap
        )
    };
    let top = "auction BIGINT, bids BIGINT, top BIGINT, PRIMARY KEY (auction) NOT ENFORCED";
    let dir = tempfile::tempdir().unwrap();
    let sql = source_ddl(&kafka, "bids", "")
        + &upsert_table("top", top, "")
        + "INSERT INTO top SELECT auction, COUNT(*), MAX(price) FROM bids GROUP BY auction;\n";
    run_ok(eddy(
        &sql_file(dir.path(), "write.sql", &sql),
        None,
        &["--parallelism", "2"],
    ));
    let mut want: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for i in 0..n {
        let e = want.entry(i % 7).or_insert((0, i64::MIN));
        e.0 += 1;
        e.1 = e.1.max(i);
    }
    let written = kafka.read_all("top", false);
    assert!(
        written.len() > want.len(),
        "updates are upserts of each key"
    );
    let last = last_per_key(&written);
    assert_eq!(last.len(), want.len());
    for (key, value) in &last {
        let auction = serde_json::from_str::<serde_json::Value>(key).unwrap()["auction"]
            .as_i64()
            .unwrap();
        let value = value.as_ref().unwrap();
        let got = (
            value["bids"].as_i64().unwrap(),
            value["top"].as_i64().unwrap(),
        );
        assert_eq!(got, want[&auction], "auction {auction}");
    }
    // Auction 3 is deleted: a tombstone in its key's partition.
    let key3 = last.keys().find(|k| k.contains(":3")).unwrap().clone();
    let partition = written
        .iter()
        .find(|r| r.key.as_ref() == Some(&key3))
        .unwrap()
        .partition;
    kafka.produce_keyed("top", &[(partition, &key3, None)]);
    want.remove(&3);

    let bounded = ", 'scan.bounded.mode' = 'latest-offset'";
    let sql = upsert_table("top", top, bounded)
        + &upsert_table("copy", top, "")
        + &upsert_table(
            "summary",
            "k INT, auctions BIGINT, total BIGINT, PRIMARY KEY (k) NOT ENFORCED",
            "",
        )
        + "EXECUTE STATEMENT SET BEGIN
           INSERT INTO copy SELECT auction, bids, top FROM top;
           INSERT INTO summary SELECT 1, COUNT(*), SUM(bids) FROM top;
           END;\n";
    run_ok(eddy(
        &sql_file(dir.path(), "read.sql", &sql),
        None,
        &["--parallelism", "2"],
    ));
    let copy = last_per_key(&kafka.read_all("copy", false));
    assert_eq!(copy.get(&key3), Some(&None), "the delete reached the copy");
    for (auction, (bids, top)) in &want {
        let key = copy
            .iter()
            .find(|(k, _)| {
                serde_json::from_str::<serde_json::Value>(k).unwrap()["auction"] == *auction
            })
            .unwrap();
        let value = key.1.as_ref().unwrap();
        assert_eq!(
            (value["bids"].as_i64(), value["top"].as_i64()),
            (Some(*bids), Some(*top))
        );
    }
    let summary = last_per_key(&kafka.read_all("summary", false));
    let total: i64 = want.values().map(|(bids, _)| bids).sum();
    let value = summary.values().next().unwrap().as_ref().unwrap();
    assert_eq!(
        (value["auctions"].as_i64(), value["total"].as_i64()),
        (Some(want.len() as i64), Some(total)),
        "{value}"
    );
}

/// `'format' = 'raw'`: a message is one value whatever bytes it holds,
/// line breaks and empty ones included, read and written as it is.
#[test]
fn raw_messages_pass_through_as_they_are() {
    let kafka = Kafka::start();
    kafka.create_topic("lines", 1);
    kafka.create_topic("copied", 1);
    let messages = ["first\nsecond", "", "  spaced  ", "{\"not\": \"parsed\"}"];
    let records: Vec<(i32, String)> = messages.iter().map(|m| (0, m.to_string())).collect();
    kafka.produce("lines", &records);
    let table = |name: &str, extra: &str| {
        format!(
            "CREATE TABLE {name} (line BYTES) WITH (
                'connector' = 'kafka', 'topic' = '{name}',
                'properties.bootstrap.servers' = '{}', 'format' = 'raw'{extra}
            );\n",
            kafka.bootstrap
        )
    };
    let sql = table(
        "lines",
        ", 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset'",
    ) + &table("copied", "")
        + "INSERT INTO copied SELECT line FROM lines;\n";
    let dir = tempfile::tempdir().unwrap();
    run_ok(eddy(&sql_file(dir.path(), "job.sql", &sql), None, &[]));
    let copied: Vec<String> = kafka
        .read_all("copied", false)
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(copied, messages);
}

/// A Debezium changelog (creates, updates that move a row between groups,
/// deletes) feeding an updating aggregate into an upsert topic: the final
/// value of each group is the one the events leave, applied here to a map.
#[test]
fn a_debezium_changelog_feeds_an_updating_aggregate() {
    let kafka = Kafka::start();
    kafka.create_topic("customers", 1);
    kafka.create_topic("regions", 2);
    // (op, id, before, after): (region, balance) images.
    type Image = Option<(&'static str, i64)>;
    let events: Vec<(&str, i64, Image, Image)> = vec![
        ("r", 1, None, Some(("eu", 10))),
        ("r", 2, None, Some(("eu", 20))),
        ("c", 3, None, Some(("us", 5))),
        ("u", 1, Some(("eu", 10)), Some(("eu", 15))),
        ("u", 2, Some(("eu", 20)), Some(("us", 20))),
        ("c", 4, None, Some(("apac", 7))),
        ("d", 3, Some(("us", 5)), None),
        ("u", 4, Some(("apac", 7)), Some(("apac", 8))),
        ("d", 4, Some(("apac", 8)), None),
        ("c", 5, None, Some(("eu", 1))),
    ];
    let image = |id: i64, i: Image| match i {
        Some((region, balance)) => {
            format!(r#"{{"id": {id}, "region": "{region}", "balance": {balance}}}"#)
        }
        None => "null".to_string(),
    };
    let records: Vec<(i32, String)> = events
        .iter()
        .map(|(op, id, before, after)| {
            let (b, a) = (image(*id, *before), image(*id, *after));
            (
                0,
                format!(r#"{{"before": {b}, "after": {a}, "op": "{op}", "ts_ms": 1}}"#),
            )
        })
        .collect();
    kafka.produce("customers", &records);
    let mut state: BTreeMap<i64, (&str, i64)> = BTreeMap::new();
    for (_, id, _, after) in &events {
        match after {
            Some(row) => state.insert(*id, *row),
            None => state.remove(id),
        };
    }
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (region, balance) in state.values() {
        let e = want.entry(region.to_string()).or_default();
        e.0 += 1;
        e.1 += balance;
    }
    let sql = format!(
        "CREATE TABLE customers (id BIGINT, region STRING, balance BIGINT) WITH (
            'connector' = 'kafka', 'topic' = 'customers',
            'properties.bootstrap.servers' = '{0}',
            'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
            'format' = 'debezium-json');
         CREATE TABLE regions (region STRING, customers BIGINT, balance BIGINT,
            PRIMARY KEY (region) NOT ENFORCED) WITH (
            'connector' = 'upsert-kafka', 'topic' = 'regions',
            'properties.bootstrap.servers' = '{0}',
            'key.format' = 'json', 'value.format' = 'json');
         INSERT INTO regions
         SELECT region, COUNT(*), SUM(balance) FROM customers GROUP BY region;\n",
        kafka.bootstrap
    );
    let dir = tempfile::tempdir().unwrap();
    run_ok(eddy(
        &sql_file(dir.path(), "job.sql", &sql),
        None,
        &["--parallelism", "2"],
    ));
    let mut got: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (key, value) in last_per_key(&kafka.read_all("regions", false)) {
        let region = serde_json::from_str::<serde_json::Value>(&key).unwrap()["region"]
            .as_str()
            .unwrap()
            .to_string();
        if let Some(v) = value {
            got.insert(
                region,
                (
                    v["customers"].as_i64().unwrap(),
                    v["balance"].as_i64().unwrap(),
                ),
            );
        }
    }
    // apac's last customer left: the aggregate deleted its row.
    assert_eq!(got, want);
    assert!(!got.contains_key("apac"));
}

/// `headers MAP<STRING, BYTES> METADATA`: a source reads each record's
/// headers (none is an empty map) and a sink writes them.
#[test]
fn headers_are_read_and_written() {
    let kafka = Kafka::start();
    kafka.create_topic("in", 1);
    kafka.create_topic("out", 1);
    let trace: &[(&str, Option<&str>)] = &[("trace", Some("t-1")), ("flag", None)];
    let records: Vec<(&str, TestHeaders<'_>)> = vec![
        (r#"{"v": 1}"#, trace),
        (r#"{"v": 2}"#, &[]),
        (r#"{"v": 3}"#, &[("tenant", Some("acme"))]),
    ];
    kafka.produce_with_headers("in", &records);
    let sql = format!(
        "CREATE TABLE src (v BIGINT, h MAP<STRING, BYTES> METADATA FROM 'headers') WITH (
            'connector' = 'kafka', 'topic' = 'in', 'properties.bootstrap.servers' = '{0}',
            'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
            'format' = 'json');
         CREATE TABLE dst (v BIGINT, headers MAP<STRING, BYTES> METADATA) WITH (
            'connector' = 'kafka', 'topic' = 'out', 'properties.bootstrap.servers' = '{0}',
            'format' = 'json');
         INSERT INTO dst SELECT v, h FROM src;\n",
        kafka.bootstrap
    );
    let dir = tempfile::tempdir().unwrap();
    run_ok(eddy(&sql_file(dir.path(), "job.sql", &sql), None, &[]));
    let out = kafka.read_all("out", false);
    type Written = Vec<(String, Vec<(String, Option<String>)>)>;
    let got: Written = out.into_iter().map(|r| (r.value, r.headers)).collect();
    let want: Written = records
        .iter()
        .map(|(value, headers)| {
            let v: serde_json::Value = serde_json::from_str(value).unwrap();
            let headers = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect();
            (format!(r#"{{"v":{}}}"#, v["v"]), headers)
        })
        .collect();
    assert_eq!(got, want);
}

/// `avro-confluent` against a schema registry: a sink registers its
/// schemas under `<topic>-value` and `<topic>-key` and frames each record
/// with its id; a
/// second writer with a newer schema (one more column) registers another;
/// a reader of the newer table reads both, the older records' new column
/// NULL, and sends a record whose id the registry does not know to the
/// dead-letter sink.
#[test]
fn avro_confluent_registers_resolves_and_rejects_unknown_ids() {
    let kafka = Kafka::start();
    let registry = common::registry::Registry::start();
    kafka.create_topic("bids", 4);
    kafka.create_topic("avro", 1);
    let n = 200;
    kafka.produce("bids", &bids(n));
    let avro_table = |name: &str, columns: &str, extra: &str| {
        format!(
            "CREATE TABLE {name} ({columns}) WITH (
                'connector' = 'kafka', 'topic' = 'avro',
                'properties.bootstrap.servers' = '{}',
                'format' = 'avro-confluent', 'avro-confluent.url' = '{}'{extra});\n",
            kafka.bootstrap, registry.url
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let write = source_ddl(&kafka, "bids", "")
        + &avro_table(
            "v1",
            "auction BIGINT, price BIGINT",
            ", 'key.fields' = 'auction', 'key.format' = 'avro-confluent'",
        )
        + &avro_table("v2", "auction BIGINT, price BIGINT, note STRING", "")
        + "INSERT INTO v1 SELECT auction, price FROM bids;\n";
    run_ok(eddy(&sql_file(dir.path(), "v1.sql", &write), None, &[]));
    let newer = write.replace(
        "INSERT INTO v1 SELECT auction, price FROM bids;",
        "INSERT INTO v2 SELECT auction, price, 'late' FROM bids WHERE price < 10;",
    );
    run_ok(eddy(&sql_file(dir.path(), "v2.sql", &newer), None, &[]));
    assert_eq!(
        registry.versions("avro-value").len(),
        2,
        "two writer schemas"
    );
    kafka.produce("avro", &[(0, "\0\0\0\0c\u{2}".to_string())]);

    let read = avro_table(
        "avro_in",
        "auction BIGINT, price BIGINT, note STRING",
        ", 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
           'bad-data' = 'dead-letter', 'bad-data.dead-letter-sink' = 'dlq'",
    );
    let read =
        "CREATE SINK dlq WITH ('connector' = 'file', 'path' = 'dlq.jsonl', 'format' = 'json');\n"
            .to_string()
            + &read
            + "CREATE SINK out WITH ('connector' = 'file', 'path' = 'out.jsonl', 'format' = 'json')
           AS SELECT auction, price, note FROM avro_in;\n";
    let mut cmd = eddy(&sql_file(dir.path(), "read.sql", &read), None, &[]);
    cmd.current_dir(dir.path());
    run_ok(cmd);
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let mut got: Vec<(i64, Option<String>)> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["price"].as_i64().unwrap(),
                v["note"].as_str().map(str::to_string),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(i64, Option<String>)> = (0..n).map(|p| (p, None)).collect();
    want.extend((0..10).map(|p| (p, Some("late".to_string()))));
    want.sort();
    assert_eq!(got, want);
    let dead = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["_reason"], "schema id 99 is not in the registry");
    assert_eq!(dead[0]["_offset"], n + 10);
}
