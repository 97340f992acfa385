//! `connector = 'rabbitmq'` against a real RabbitMQ broker (Debian's
//! package, started per test as its own node): orders consumed from a
//! queue and the large ones published to another, compared with what the
//! test computes, a bad message sent to the dead-letter sink with its
//! reason and position, and the queue left empty (every message
//! acknowledged); and a job killed with SIGKILL and restarted, after which
//! every message was published on at least once and none is left; and
//! examples/cqrs-orders.sql run against a real broker and PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::Ended;
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
    common::run_ok(common::eddy_job(
        &job(&broker, dir.path(), 45),
        dir.path(),
        &["--checkpoint-interval", "100ms"],
    ));
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

/// `examples/cqrs-orders.sql`, run as it is against real servers (their
/// ports put in its URLs, and the queue read to its end so that the job
/// finishes): each customer's totals in PostgreSQL equal what the test
/// computes, and the orders that do not decode are in the dead-letter
/// queue with the reason.
#[test]
fn the_cqrs_example_keeps_customer_totals_in_postgres() {
    let broker = RabbitMq::start();
    for queue in ["orders", "orders.dead"] {
        broker.declare(queue);
    }
    let pg = common::postgres::Postgres::start();
    pg.query(
        "CREATE TABLE customer_totals (customer text PRIMARY KEY, orders bigint,
           spent numeric(12, 2), last_order timestamptz)",
    );
    let customers = ["ann", "bob", "cy", "dee"];
    let mut messages = Vec::new();
    let mut want: std::collections::BTreeMap<&str, (i64, i64, i64)> = Default::default();
    for i in 0..300i64 {
        let customer = customers[(i % 4) as usize];
        let cents = 100 + i * 7 % 1_000;
        let second = i % 60;
        messages.push(format!(
            "{{\"order_id\": {i}, \"customer\": \"{customer}\", \"amount\": {}.{:02}, \"placed_at\": \"2026-01-05T10:00:{second:02}Z\"}}",
            cents / 100,
            cents % 100
        ));
        let e = want.entry(customer).or_default();
        *e = (e.0 + 1, e.1 + cents, e.2.max(second));
    }
    messages.insert(100, "{\"order_id\": \"one\"}".into());
    messages.insert(200, "not an order".into());
    broker.publish("orders", &messages);

    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cqrs-orders.sql"),
    )
    .unwrap();
    let sql = example
        .replace("localhost:5672", &format!("127.0.0.1:{}", broker.port))
        .replace("localhost:5432", &format!("127.0.0.1:{}", pg.port))
        .replace(
            "'queue' = 'orders',",
            "'queue' = 'orders', 'scan.bounded.mode' = 'latest',",
        );
    assert_ne!(sql, example, "the example's URLs were not found");
    let dir = tempfile::tempdir().unwrap();
    let (cmd, _) = common::eddy_checkpointed(&sql, dir.path(), "100ms");
    assert_eq!(
        common::run_killed(cmd, &dir.path().join("state"), None),
        Ended::Finished
    );

    let got = pg.query(
        "SELECT customer, orders, (spent * 100)::bigint, extract(second FROM last_order)::int
         FROM customer_totals ORDER BY customer",
    );
    let want: Vec<Vec<Option<String>>> = want
        .iter()
        .map(|(c, (n, cents, second))| {
            [
                c.to_string(),
                n.to_string(),
                cents.to_string(),
                second.to_string(),
            ]
            .into_iter()
            .map(Some)
            .collect()
        })
        .collect();
    assert_eq!(got, want);
    let dead: Vec<serde_json::Value> = broker
        .drain("orders.dead")
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect();
    let records: Vec<&str> = dead
        .iter()
        .map(|d| d["_record"].as_str().unwrap())
        .collect();
    assert_eq!(records, ["{\"order_id\": \"one\"}", "not an order"]);
    assert!(
        dead.iter()
            .all(|d| d["_source"] == "orders" && d["_reason"] != "")
    );
    assert_eq!(broker.count("orders"), 0);
}

/// The broker is killed and started again while the job reads: the job
/// fails, is restarted from its last checkpoint with backoff until the
/// broker is back, and every message is published on at least once, with
/// none left in the queue.
#[test]
fn a_broker_restarted_under_a_running_job_is_ridden_out_by_the_restart_strategy() {
    let mut broker = RabbitMq::start();
    broker.declare("orders");
    broker.declare("large");
    let n = 20_000;
    broker.publish("orders", &(0..n).map(order).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "{}{}",
        common::RESTART_WITH_BACKOFF,
        job(&broker, dir.path(), 0)
    );
    common::disrupt_running_job(&sql, dir.path(), || broker.restart());
    let got: BTreeSet<i64> = ids(&broker.drain("large")).into_iter().collect();
    assert_eq!(got, (0..n as i64).collect());
    assert_eq!(broker.count("orders"), 0, "messages left");
}
