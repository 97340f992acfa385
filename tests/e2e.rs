//! End to end through the `eddy` binary: a JSON-lines file with event times
//! out of order (within the watermark bound), a tumbling COUNT / SUM / MAX
//! per key into a JSON file sink, at parallelism 1 and 4, compared with an
//! answer computed here, independently of the engine.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use datafusion::arrow::temporal_conversions::timestamp_ms_to_datetime;

const BASE: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
const WINDOW: i64 = 10_000;

/// A small deterministic generator, so the test needs no RNG crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

struct Row {
    key: String,
    ts: i64,
    value: Option<i64>,
}

fn rows(n: usize, seed: u64) -> Vec<Row> {
    let mut rng = Lcg(seed);
    (0..n)
        .map(|i| Row {
            key: format!("k{}", rng.next(13)),
            // In order every 100 ms, then pushed up to 4 s later: out of
            // order, but never by the 5 s the watermark allows.
            ts: BASE + i as i64 * 100 + rng.next(4_000) as i64,
            value: (rng.next(10) > 0).then(|| rng.next(1_000) as i64 - 200),
        })
        .collect()
}

fn iso(ms: i64) -> String {
    timestamp_ms_to_datetime(ms)
        .expect("valid timestamp")
        .format("%Y-%m-%dT%H:%M:%S%.fZ")
        .to_string()
}

/// Writes the rows, spelling timestamps every way the JSON source accepts.
fn write_input(path: &Path, rows: &[Row]) {
    let mut text = String::new();
    for (i, r) in rows.iter().enumerate() {
        let dt = timestamp_ms_to_datetime(r.ts).unwrap();
        let ts = match i % 4 {
            0 => format!("\"{}\"", dt.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            1 => format!("\"{}\"", dt.format("%Y-%m-%d %H:%M:%S%.3f")),
            2 => r.ts.to_string(),
            _ => {
                let local = timestamp_ms_to_datetime(r.ts + 3_600_000).unwrap();
                format!("\"{}+01:00\"", local.format("%Y-%m-%dT%H:%M:%S%.3f"))
            }
        };
        let value = r.value.map_or("null".to_string(), |v| v.to_string());
        text += &format!("{{\"k\": \"{}\", \"ts\": {ts}, \"v\": {value}}}\n", r.key);
    }
    std::fs::write(path, text).unwrap();
}

type Key = (String, String, String);

#[derive(Debug, PartialEq)]
struct Agg {
    n: i64,
    total: Option<i64>,
    top: Option<i64>,
}

/// The answer, computed directly: group by key and 10-second window.
fn expected(rows: &[Row]) -> BTreeMap<Key, Agg> {
    let mut out: BTreeMap<Key, Agg> = BTreeMap::new();
    for r in rows {
        let start = r.ts - r.ts.rem_euclid(WINDOW);
        let agg = out
            .entry((r.key.clone(), iso(start), iso(start + WINDOW)))
            .or_insert(Agg {
                n: 0,
                total: None,
                top: None,
            });
        agg.n += 1;
        if let Some(v) = r.value {
            agg.total = Some(agg.total.unwrap_or(0) + v);
            agg.top = Some(agg.top.map_or(v, |t| t.max(v)));
        }
    }
    out
}

/// `eddy run sql_path --parallelism p`, which must succeed.
fn run_eddy(sql_path: &Path, parallelism: usize) {
    let output = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "run",
            sql_path.to_str().unwrap(),
            "--parallelism",
            &parallelism.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "eddy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run_query(dir: &Path, parallelism: usize) -> BTreeMap<Key, Agg> {
    run_query_split(dir, parallelism, "32 mb")
}

/// The query over the input cut into byte ranges of `split_size`.
fn run_query_split(dir: &Path, parallelism: usize, split_size: &str) -> BTreeMap<Key, Agg> {
    let out_dir = dir.join(format!(
        "out-p{parallelism}-{}/",
        split_size.replace(' ', "")
    ));
    let sql = format!(
        "CREATE SOURCE events (k VARCHAR, ts TIMESTAMP(3), v BIGINT,
           WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
         WITH (connector = 'file', path = '{input}', format = 'json', 'source.split-size' = '{split_size}');
         CREATE SINK totals WITH (connector = 'file', path = '{out}', format = 'json') AS
         SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS total, MAX(v) AS top
         FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
         GROUP BY k, window_start, window_end;",
        input = dir.join("input.json").display(),
        out = out_dir.display(),
    );
    let sql_path = dir.join(format!("q{parallelism}.sql"));
    std::fs::write(&sql_path, sql).unwrap();
    run_eddy(&sql_path, parallelism);
    read_totals(&out_dir)
}

/// The totals the tumbling query's JSON sink committed in `out_dir`.
fn read_totals(out_dir: &Path) -> BTreeMap<Key, Agg> {
    let text = common::committed_parts(out_dir);
    let mut got = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {line}"))
                .to_string()
        };
        let key = (s("k"), s("window_start"), s("window_end"));
        let agg = Agg {
            n: v["n"].as_i64().unwrap(),
            total: v["total"].as_i64(),
            top: v["top"].as_i64(),
        };
        assert!(got.insert(key, agg).is_none(), "duplicate row {line}");
    }
    got
}

#[test]
fn tumbling_aggregate_matches_an_independent_answer_at_parallelism_1_and_4() {
    let dir = tempfile::tempdir().unwrap();
    let input = rows(3_000, 42);
    write_input(&dir.path().join("input.json"), &input);
    let want = expected(&input);
    assert!(
        want.len() > 100,
        "the test data should span many windows and keys"
    );
    assert_eq!(run_query(dir.path(), 1), want);
    assert_eq!(run_query(dir.path(), 4), want);
}

/// The same file cut into ~20 byte ranges, read by 1, 2 and 4 subtasks
/// (each range's rows in its own watermark): the same answer each time.
#[test]
fn a_file_read_in_parallel_byte_ranges_gives_the_same_answer_at_every_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let input = rows(3_000, 7);
    write_input(&dir.path().join("input.json"), &input);
    let size = std::fs::metadata(dir.path().join("input.json"))
        .unwrap()
        .len();
    assert!(
        size > 16 * 8_192,
        "{size} bytes make about 20 splits of 8 kb"
    );
    let want = expected(&input);
    for parallelism in [1, 2, 4] {
        assert_eq!(
            run_query_split(dir.path(), parallelism, "8 kb"),
            want,
            "parallelism {parallelism}"
        );
    }
}

/// A partitioned file sink through the binary, over `tests/slt/data/
/// orders.json`: rows go to `customer=<c>/minute=<m>/` (the minute's ':'
/// escaped as Hive does), without the partition columns, and each
/// partition ends with a `_SUCCESS` file. Expected rows worked out by hand:
/// ann has orders 1, 3, 6, 8, bob 2, 5, 7, 10, cid 4 and 9, all in the
/// first minute of 2024; order 4 has a NULL amount, which partitions under
/// Hive's default name.
#[test]
fn a_partitioned_file_sink_writes_one_directory_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sql = format!(
        "CREATE SOURCE orders (id BIGINT, customer VARCHAR, amount DOUBLE, qty BIGINT, ts TIMESTAMP(3))
         WITH (connector = 'file', path = '{input}', format = 'json', 'batch.size' = '3');
         CREATE SINK parts PARTITIONED BY (customer, minute, big)
         WITH (connector = 'file', path = '{out}/', format = 'json') AS
         SELECT id, customer, DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm') AS minute,
                CASE WHEN amount > 5 THEN 'yes' WHEN amount <= 5 THEN 'no' END AS big
         FROM orders;",
        input = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/slt/data/orders.json")
            .display(),
        out = out.display(),
    );
    let sql_path = dir.path().join("q.sql");
    std::fs::write(&sql_path, sql).unwrap();
    for parallelism in [1, 3] {
        run_eddy(&sql_path, parallelism);
        let minute = "minute=2024-01-01 00%3A00";
        let expected: &[(&str, &[i64])] = &[
            ("ann", &[1, 3]),
            ("ann", &[6, 8]),
            ("bob", &[2, 7]),
            ("bob", &[5, 10]),
            ("cid", &[9]),
            ("cid", &[4]),
        ];
        let bigs = ["yes", "no", "yes", "no", "yes", "__DEFAULT_PARTITION__"];
        let mut dirs = Vec::new();
        for ((customer, ids), big) in expected.iter().zip(bigs) {
            let part = out.join(format!("customer={customer}/{minute}/big={big}"));
            let text = common::committed_parts(&part);
            let mut got: Vec<i64> = text
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    assert_eq!(v.as_object().unwrap().len(), 1, "only id is written: {l}");
                    v["id"].as_i64().unwrap()
                })
                .collect();
            got.sort();
            assert_eq!(got, *ids, "{}", part.display());
            assert!(part.join("_SUCCESS").exists(), "{}", part.display());
            dirs.push(part);
        }
        // Nothing else was written.
        let mut all = Vec::new();
        let mut stack = vec![out.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if !p.ends_with("_SUCCESS") {
                    all.push(p.parent().unwrap().to_path_buf());
                }
            }
        }
        all.sort();
        all.dedup();
        dirs.sort();
        assert_eq!(all, dirs);
    }
}

/// Parquet both ways through the binary: the input written as Parquet
/// parts by two jobs, each of every other row (rolled small, so there are
/// many files), then read back from one directory by the
/// tumbling query at parallelism 1 and 3, which must give the answer
/// computed here; and again with a filter the Parquet source is given
/// (row groups it excludes are skipped), which must give the answer over
/// the rows that pass it.
#[test]
fn parquet_written_and_read_back_gives_the_independent_answer() {
    let dir = tempfile::tempdir().unwrap();
    let input = rows(3_000, 11);
    // Every other row, twice: two writers' parts of the same times, in one
    // directory. Read one after another, the later ones' rows would be
    // late; they are read side by side.
    let pq = dir.path().join("pq");
    std::fs::create_dir(&pq).unwrap();
    for (name, parity) in [("a", 0), ("b", 1)] {
        let half: Vec<Row> = (parity..input.len())
            .step_by(2)
            .map(|i| Row {
                key: input[i].key.clone(),
                ts: input[i].ts,
                value: input[i].value,
            })
            .collect();
        write_input(&dir.path().join(format!("{name}.json")), &half);
        let out = dir.path().join(format!("pq-{name}"));
        let write = format!(
            "CREATE SOURCE events (k VARCHAR, ts TIMESTAMP(3), v BIGINT)
             WITH (connector = 'file', path = '{input}', format = 'json', 'batch.size' = '200');
             CREATE SINK pq WITH (connector = 'file', path = '{out}/', format = 'parquet',
               'parquet.block.size' = '2 kb', 'sink.rolling-policy.file-size' = '6 kb') AS
             SELECT k, ts, v FROM events;",
            input = dir.path().join(format!("{name}.json")).display(),
            out = out.display(),
        );
        let sql_path = dir.path().join(format!("write-{name}.sql"));
        std::fs::write(&sql_path, write).unwrap();
        run_eddy(&sql_path, 1);
        let mut parts = 0;
        for entry in std::fs::read_dir(&out).unwrap() {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            if file.starts_with("part-") && file.ends_with(".parquet") {
                std::fs::rename(out.join(&file), pq.join(format!("{name}-{file}"))).unwrap();
                parts += 1;
            }
        }
        assert!(parts > 1, "{parts} parts from {name}");
    }
    for (filter, parallelism) in [("", 1), ("", 3), ("WHERE v >= 400", 3)] {
        let out = dir
            .path()
            .join(format!("out-{parallelism}-{}/", filter.len()));
        let sql = format!(
            "CREATE SOURCE again (k VARCHAR, ts TIMESTAMP(3), v BIGINT,
               WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
             WITH (connector = 'file', path = '{pq}', format = 'parquet');
             CREATE VIEW kept AS SELECT * FROM again {filter};
             CREATE SINK totals WITH (connector = 'file', path = '{out}', format = 'json') AS
             SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS total, MAX(v) AS top
             FROM TABLE(TUMBLE(TABLE kept, DESCRIPTOR(ts), INTERVAL '10' SECOND))
             GROUP BY k, window_start, window_end;",
            pq = pq.display(),
            out = out.display(),
        );
        let sql_path = dir.path().join("read.sql");
        std::fs::write(&sql_path, sql).unwrap();
        run_eddy(&sql_path, parallelism);
        let kept: Vec<Row> = input
            .iter()
            .filter(|r| filter.is_empty() || r.value.is_some_and(|v| v >= 400))
            .map(|r| Row {
                key: r.key.clone(),
                ts: r.ts,
                value: r.value,
            })
            .collect();
        assert_eq!(
            read_totals(&out),
            expected(&kept),
            "{filter} at parallelism {parallelism}"
        );
    }
}

/// Live and replay give the same rows, late data included: the same
/// Nexmark bids run once paced by their event time (`'max-emit-speed' =
/// 'false'`, as a live stream arrives: about 2 s of wall time) and once
/// at full speed. A seventh of the bids are pushed 300 ms back in event
/// time against a 100 ms watermark bound, so many are late; which ones is
/// decided by event time and watermarks, not by arrival, so both runs drop
/// the same ones. Every bid is either counted in a window or late.
#[test]
fn a_paced_run_and_a_full_speed_replay_give_the_same_rows_and_late_rows() {
    let dir = tempfile::tempdir().unwrap();
    let run = |paced: bool| {
        let out = dir.path().join(format!("out-{paced}/"));
        let sql = format!(
            "CREATE SOURCE bid (auction BIGINT, price BIGINT, date_time TIMESTAMP(3),
               t AS CASE WHEN auction % 7 = 0 THEN date_time - INTERVAL '0.3' SECOND ELSE date_time END,
               WATERMARK FOR t AS t - INTERVAL '0.1' SECOND)
             WITH (connector = 'nexmark', table = 'bid', 'events.num' = '8000',
                   'first-event.rate' = '4000', 'batch.size' = '100', 'max-emit-speed' = '{}');
             CREATE SINK w WITH (connector = 'file', path = '{}', format = 'json') AS
             SELECT window_start, COUNT(*) AS n, SUM(price) AS s
             FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(t), INTERVAL '0.2' SECOND))
             GROUP BY window_start, window_end;",
            !paced,
            out.display()
        );
        let sql_path = dir.path().join(format!("q-{paced}.sql"));
        std::fs::write(&sql_path, sql).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["run", sql_path.to_str().unwrap(), "--quiet"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        let late: u64 = stderr
            .split_once(" late rows were dropped")
            .and_then(|(before, _)| before.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0);
        let mut rows: Vec<(String, i64, i64)> = common::committed_parts(&out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let start = v["window_start"].as_str().unwrap().to_string();
                (start, v["n"].as_i64().unwrap(), v["s"].as_i64().unwrap())
            })
            .collect();
        rows.sort();
        (rows, late)
    };
    let (live, live_late) = run(true);
    let (replay, replay_late) = run(false);
    assert_eq!(replay, live);
    assert_eq!(replay_late, live_late);
    assert!(live.len() >= 8, "{live:?}");
    assert!(live_late > 100, "{live_late} late");
    // 92% of Nexmark's events are bids: 7,360 of 8,000.
    let counted: i64 = live.iter().map(|r| r.1).sum();
    assert_eq!(counted as u64 + live_late, 7_360);
}

/// An event-time state time-to-live expires the same keys live and in a
/// replay. Datagen's rows are 1 ms of event time apart; `'steady'` has a
/// row every 2 ms, while `'even'` and `'odd'` take turns, each busy for 20 s
/// of event time and then idle for 20 s, well past the 5 s time-to-live
/// (and past a batch of rows, the step of the watermark at full speed). So
/// each of them is counted from nothing at each of its busy spells: the
/// answer worked out here replays the rule row by row. The same query runs
/// paced, as the rows would arrive live (40,000 a second: 3 s of wall
/// time), and at full speed on two subtasks; both give that answer, which
/// differs from the count with no time-to-live.
#[test]
fn an_event_time_state_ttl_expires_the_same_keys_live_and_in_a_replay() {
    const ROWS: i64 = 120_000;
    const TTL: i64 = 5_000;
    let key = |id: i64| match (id % 2, (id / 20_000) % 2) {
        (0, _) => "steady",
        (_, 0) => "even",
        _ => "odd",
    };
    let count = |ttl: Option<i64>| {
        let mut last: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for id in 0..ROWS {
            let entry = last.entry(key(id)).or_insert((id, 0));
            if ttl.is_some_and(|ttl| id - entry.0 >= ttl) {
                entry.1 = 0;
            }
            *entry = (id, entry.1 + 1);
        }
        last.into_iter()
            .map(|(k, (_, n))| (k.to_string(), n))
            .collect::<BTreeMap<String, i64>>()
    };
    let expected = count(Some(TTL));
    assert_eq!(expected["even"], 10_000);
    assert_ne!(expected, count(None));

    let dir = tempfile::tempdir().unwrap();
    let run = |rate: &str, parallelism: usize| {
        let out = dir.path().join(format!("out-{rate}/"));
        let sql = format!(
            "SET 'table.exec.state.ttl' = '5 s';
             SET 'table.exec.state.ttl.time-domain' = 'event-time';
             CREATE TABLE ids (id BIGINT,
               k AS CASE WHEN id % 2 = 0 THEN 'steady' WHEN (id / 20000) % 2 = 0 THEN 'even' ELSE 'odd' END,
               ts AS TO_TIMESTAMP_LTZ(1767225600000 + id, 3),
               WATERMARK FOR ts AS ts)
             WITH ('connector' = 'datagen', 'rows-per-second' = '{rate}',
                   'fields.id.kind' = 'sequence', 'fields.id.start' = '0', 'fields.id.end' = '{}');
             CREATE SINK counts WITH (connector = 'file', path = '{}', format = 'json') AS
             SELECT k, COUNT(*) AS n FROM ids GROUP BY k;",
            ROWS - 1,
            out.display()
        );
        let sql_path = dir.path().join(format!("q-{rate}.sql"));
        std::fs::write(&sql_path, sql).unwrap();
        run_eddy(&sql_path, parallelism);
        // The changelog's net effect: each key's last +I or +U.
        let mut table = BTreeMap::new();
        for line in common::committed_parts(&out).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let k = v["k"].as_str().unwrap().to_string();
            match v["op"].as_str().unwrap() {
                "+I" | "+U" => table.insert(k, v["n"].as_i64().unwrap()),
                _ => table.remove(&k),
            };
        }
        table
    };
    assert_eq!(run("40000", 1), expected, "paced");
    assert_eq!(run("1000000000", 2), expected, "full speed");
}
