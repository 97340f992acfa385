//! `connector = 'rabbitmq'` against a real RabbitMQ broker (Debian's
//! package, started per test as its own node): orders consumed from a
//! queue and the large ones published to another, compared with what the
//! test computes, a bad message sent to the dead-letter sink with its
//! reason and position, and the queue left empty (every message
//! acknowledged); and a job killed with SIGKILL and restarted, after which
//! every message was published on at least once and none is left.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::rabbitmq::RabbitMq;

fn order(i: usize) -> String {
    format!(
        "{{\"id\": {i}, \"customer\": \"c{}\", \"amount\": {}}}",
        i % 5,
        i % 50
    )
}

fn job(broker: &RabbitMq, dir: &Path, threshold: i64) -> String {
    format!(
        "CREATE SINK dlq WITH ('connector' = 'file', 'path' = '{dlq}/', 'format' = 'json');
         CREATE TABLE orders (id BIGINT, customer STRING, amount BIGINT)
         WITH ('connector' = 'rabbitmq', 'url' = '{url}', 'queue' = 'orders',
               'scan.bounded.mode' = 'latest', 'prefetch' = '500',
               'bad-data' = 'dead-letter', 'bad-data.dead-letter-sink' = 'dlq');
         CREATE TABLE large (id BIGINT, customer STRING, amount BIGINT)
         WITH ('connector' = 'rabbitmq', 'url' = '{url}', 'routing-key' = 'large');
         INSERT INTO large SELECT * FROM orders WHERE amount >= {threshold};",
        dlq = dir.join("dlq").display(),
        url = broker.url(),
    )
}

fn ids(messages: &[String]) -> Vec<i64> {
    messages
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).unwrap();
            v["id"].as_i64().unwrap()
        })
        .collect()
}

#[test]
fn orders_are_consumed_filtered_and_published_and_a_bad_one_is_a_dead_letter() {
    let broker = RabbitMq::start();
    broker.declare("orders");
    broker.declare("large");
    let mut input: Vec<String> = (0..500).map(order).collect();
    input[250] = "{not json".into();
    broker.publish("orders", &input);
    let dir = tempfile::tempdir().unwrap();
    let out = common::eddy_job(
        &job(&broker, dir.path(), 45),
        dir.path(),
        &["--checkpoint-interval", "100ms"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "eddy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: BTreeSet<i64> = (0..500)
        .filter(|&i| i != 250 && i % 50 >= 45)
        .map(|i| i as i64)
        .collect();
    let got = ids(&broker.drain("large"));
    assert_eq!(got.len(), want.len());
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    assert_eq!(broker.count("orders"), 0, "messages left unacknowledged");
    let rows = common::dead_letters(&dir.path().join("dlq"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["_record"], "{not json");
    assert_eq!(rows[0]["_partition"], "orders");
    assert!(rows[0]["_offset"].as_i64().is_some(), "{rows:?}");
}

#[test]
fn killed_jobs_publish_every_message_at_least_once_and_leave_none() {
    let broker = RabbitMq::start();
    broker.declare("orders");
    broker.declare("large");
    let n = 20_000;
    broker.publish("orders", &(0..n).map(order).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let sql = job(&broker, dir.path(), 0);
    let kills = common::kill_until_done(&sql, dir.path(), "50ms", 4, 4);
    assert!(kills >= 2, "too few kills: {kills}");
    let got = ids(&broker.drain("large"));
    eprintln!("{} messages for {n} orders", got.len());
    assert_eq!(
        got.into_iter().collect::<BTreeSet<_>>(),
        (0..n as i64).collect()
    );
    assert_eq!(broker.count("orders"), 0, "messages left");
}
