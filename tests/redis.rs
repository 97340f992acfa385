//! `connector = 'redis'` against a real Redis server (Debian's package,
//! started per test): orders read from a stream through a consumer group,
//! totals per customer kept in hashes and rows copied to another stream,
//! each compared with answers worked out here; a bad entry sent to the
//! dead-letter sink with its reason and position; and jobs killed with
//! SIGKILL and restarted, after which every entry was read at least once,
//! the hashes are exact, and every entry is acknowledged.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::redis::Redis;
use redis::streams::StreamRangeReply;

fn orders(n: usize, customers: usize) -> Vec<Vec<(String, String)>> {
    (0..n)
        .map(|i| {
            vec![
                ("id".to_string(), i.to_string()),
                ("customer".to_string(), format!("c{}", i % customers)),
                ("amount".to_string(), (i % 50).to_string()),
            ]
        })
        .collect()
}

/// Each customer's count and total amount over `orders`.
fn totals(orders: &[Vec<(String, String)>]) -> BTreeMap<String, (i64, i64)> {
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for o in orders {
        let Ok(amount) = o[2].1.parse::<i64>() else {
            continue;
        };
        let e = out.entry(o[1].1.clone()).or_default();
        *e = (e.0 + 1, e.1 + amount);
    }
    out
}

/// What the `total:<customer>` hashes hold.
fn hashes(redis: &Redis, customers: usize) -> BTreeMap<String, (i64, i64)> {
    (0..customers)
        .filter_map(|c| {
            let h: BTreeMap<String, String> = redis.run_cmd(&["HGETALL", &format!("total:c{c}")]);
            (!h.is_empty()).then(|| {
                (
                    format!("c{c}"),
                    (h["n"].parse().unwrap(), h["spent"].parse().unwrap()),
                )
            })
        })
        .collect()
}

/// The ids in stream `copy`, with repeats.
fn copied_ids(redis: &Redis) -> Vec<i64> {
    let reply: StreamRangeReply = redis.run_cmd(&["XRANGE", "copy", "-", "+"]);
    reply
        .ids
        .iter()
        .map(|e| e.get::<String>("id").unwrap().parse().unwrap())
        .collect()
}

fn pending(redis: &Redis) -> i64 {
    let summary: redis::Value = redis.run_cmd(&["XPENDING", "orders", "eddy"]);
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("XPENDING: {other:?}"),
        },
        other => panic!("XPENDING: {other:?}"),
    }
}

fn job(redis: &Redis, dir: &Path, threshold: i64) -> String {
    format!(
        "CREATE SINK dlq WITH ('connector' = 'file', 'path' = '{dlq}/', 'format' = 'json');
         CREATE TABLE orders (id BIGINT, customer STRING, amount BIGINT)
         WITH ('connector' = 'redis', 'url' = '{url}', 'stream' = 'orders',
               'scan.bounded.mode' = 'latest',
               'bad-data' = 'dead-letter', 'bad-data.dead-letter-sink' = 'dlq');
         CREATE TABLE totals (customer STRING, n BIGINT, spent BIGINT,
           PRIMARY KEY (customer) NOT ENFORCED)
         WITH ('connector' = 'redis', 'url' = '{url}', 'mode' = 'hash', 'key.prefix' = 'total:');
         CREATE TABLE copy (id BIGINT, customer STRING)
         WITH ('connector' = 'redis', 'url' = '{url}', 'stream' = 'copy');
         INSERT INTO totals SELECT customer, COUNT(*), SUM(amount) FROM orders GROUP BY customer;
         INSERT INTO copy SELECT id, customer FROM orders WHERE amount >= {threshold};",
        dlq = dir.join("dlq").display(),
        url = redis.url(),
    )
}

#[test]
fn orders_from_a_stream_keep_totals_in_hashes_and_a_bad_entry_is_a_dead_letter() {
    let redis = Redis::start();
    let mut input = orders(600, 5);
    input[300][2].1 = "lots".into();
    redis.xadd("orders", &input);
    let bad_id: StreamRangeReply = redis.run_cmd(&["XRANGE", "orders", "-", "+"]);
    let bad_id = bad_id.ids[300].id.clone();

    let dir = tempfile::tempdir().unwrap();
    common::run_ok(common::eddy_job(
        &job(&redis, dir.path(), 45),
        dir.path(),
        &["-p", "2", "--checkpoint-interval", "100ms"],
    ));

    assert_eq!(hashes(&redis, 5), totals(&input));
    let want: BTreeSet<i64> = input
        .iter()
        .filter(|o| o[2].1.parse::<i64>().is_ok_and(|a| a >= 45))
        .map(|o| o[0].1.parse().unwrap())
        .collect();
    let got = copied_ids(&redis);
    assert_eq!(got.len(), want.len());
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);

    let rows = common::dead_letters(&dir.path().join("dlq"));
    let dead = format!("{rows:?}");
    assert_eq!(rows.len(), 1, "{dead}");
    assert_eq!(rows[0]["_source"], "orders");
    assert_eq!(rows[0]["_partition"], format!("orders {bad_id}"));
    assert!(
        rows[0]["_record"]
            .as_str()
            .unwrap()
            .contains("\"amount\":\"lots\""),
        "{dead}"
    );
    assert!(
        rows[0]["_reason"].as_str().unwrap().contains("amount"),
        "{dead}"
    );
    assert_eq!(pending(&redis), 0, "entries left unacknowledged");
}

#[test]
fn killed_jobs_read_every_entry_at_least_once_and_the_hashes_end_exact() {
    let redis = Redis::start();
    let input = orders(60_000, 7);
    redis.xadd("orders", &input);
    let dir = tempfile::tempdir().unwrap();
    let sql = job(&redis, dir.path(), 0);
    let kills = common::kill_until_done(&sql, dir.path(), "50ms", 4, 3);
    assert!(kills >= 2, "too few kills: {kills}");
    assert_eq!(hashes(&redis, 7), totals(&input));
    let ids = copied_ids(&redis);
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    eprintln!("{} copies of {} ids", ids.len(), distinct.len());
    assert_eq!(distinct, (0..60_000).collect());
    assert_eq!(pending(&redis), 0, "entries left unacknowledged");
}

/// The server is killed and started again while the job reads: the job
/// fails, is restarted from its last checkpoint with backoff until the
/// server is back, and ends with exact hashes, every entry copied at least
/// once and none left pending.
#[test]
fn a_server_restarted_under_a_running_job_is_ridden_out_by_the_restart_strategy() {
    let mut redis = Redis::start();
    let input = orders(60_000, 7);
    redis.xadd("orders", &input);
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "{}{}",
        common::RESTART_WITH_BACKOFF,
        job(&redis, dir.path(), 0)
    );
    common::disrupt_running_job(&sql, dir.path(), || redis.restart());
    assert_eq!(hashes(&redis, 7), totals(&input));
    let ids: BTreeSet<i64> = copied_ids(&redis).into_iter().collect();
    assert_eq!(ids, (0..60_000).collect());
    assert_eq!(pending(&redis), 0, "entries left unacknowledged");
}

/// A stream sink with `'field'` writes each row encoded by the format in
/// that field, and a source with the same `'field'` reads the rows back.
#[test]
fn rows_written_in_one_field_are_read_back_by_a_source_of_that_field() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let write = format!(
        "CREATE TABLE ids (id BIGINT, label AS CONCAT('n', CAST(id AS STRING)))
           WITH ('connector' = 'datagen', 'fields.id.kind' = 'sequence',
                 'fields.id.start' = '1', 'fields.id.end' = '300');
         CREATE TABLE events (id BIGINT, label STRING)
           WITH ('connector' = 'redis', 'url' = '{url}', 'stream' = 'events',
                 'field' = 'payload', 'format' = 'json');
         INSERT INTO events SELECT id, label FROM ids;"
    );
    common::run_ok(common::eddy_job(&write, dir.path(), &[]));
    let entries: StreamRangeReply = redis.run_cmd(&["XRANGE", "events", "-", "+"]);
    assert_eq!(entries.ids.len(), 300);
    let first: String = entries.ids[0].get("payload").unwrap();
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first, serde_json::json!({"id": 1, "label": "n1"}));

    let read = format!(
        "CREATE TABLE events (id BIGINT, label STRING)
           WITH ('connector' = 'redis', 'url' = '{url}', 'stream' = 'events',
                 'field' = 'payload', 'scan.bounded.mode' = 'latest');
         CREATE TABLE copy (id BIGINT, customer STRING)
           WITH ('connector' = 'redis', 'url' = '{url}', 'stream' = 'copy');
         INSERT INTO copy SELECT id, label FROM events WHERE id % 3 = 0;"
    );
    common::run_ok(common::eddy_job(
        &read,
        dir.path(),
        &["--checkpoint-interval", "100ms"],
    ));
    let ids: BTreeSet<i64> = copied_ids(&redis).into_iter().collect();
    assert_eq!(ids, (1..=300).filter(|i| i % 3 == 0).collect());
}
