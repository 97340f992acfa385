//! `connector = 'http'` against a real HTTP server on loopback (a small
//! one here, which records every request and answers some with 503):
//! every row arrives, in batches of at most the configured size, with the
//! configured header; a request answered 503 is sent again with the same
//! idempotency key until accepted; and a job killed with SIGKILL and
//! restarted delivers every row at least once.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A request as the server got it.
#[derive(Debug, Clone)]
struct Request {
    headers: BTreeMap<String, String>,
    body: String,
    /// The answer's status.
    status: u16,
}

/// An HTTP/1.1 server that answers 503 to every `fail_every`-th request
/// (from the first) and 200 to the rest, and keeps them all.
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(fail_every: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = requests.clone();
        let count = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut headers = BTreeMap::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let length: usize = headers
                    .get("content-length")
                    .map_or(0, |l| l.parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst);
                let status = if fail_every > 0 && n.is_multiple_of(fail_every) {
                    503
                } else {
                    200
                };
                kept.lock().unwrap().push(Request {
                    headers,
                    body: String::from_utf8(body).unwrap(),
                    status,
                });
                let reason = if status == 200 { "OK" } else { "Busy" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { port, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The ids in the accepted requests' bodies, with repeats.
    fn ids(&self) -> Vec<i64> {
        self.requests()
            .iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| {
                let rows: Vec<serde_json::Value> = serde_json::from_str(&r.body).unwrap();
                rows.into_iter()
                    .map(|row| row["id"].as_i64().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn job(port: u16, n: u64, rate: &str) -> String {
    format!(
        "CREATE TABLE gen (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '{rate}',
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{n}');
         CREATE TABLE hook (id BIGINT, twice BIGINT) WITH ('connector' = 'http',
           'url' = 'http://127.0.0.1:{port}/events?source=eddy', 'headers.X-Token' = 'abc',
           'sink.batch.max-rows' = '300', 'sink.retry.initial-backoff' = '10 ms');
         INSERT INTO hook SELECT id, id * 2 FROM gen;"
    )
}

#[test]
fn rows_arrive_in_batches_and_a_refused_request_is_sent_again_with_its_key() {
    // Every third request is refused once; its retry is the next one.
    let receiver = Receiver::start(3);
    let dir = tempfile::tempdir().unwrap();
    common::run_ok(common::eddy_job(
        &job(receiver.port, 1_000, "1000000000"),
        dir.path(),
        &[],
    ));
    let requests = receiver.requests();
    let ids = receiver.ids();
    assert_eq!(ids.len(), 1_000);
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        (1..=1_000).collect()
    );
    for r in &requests {
        assert_eq!(r.headers["x-token"], "abc");
        assert_eq!(r.headers["content-type"], "application/json");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&r.body).unwrap();
        assert!(!rows.is_empty() && rows.len() <= 300, "{} rows", rows.len());
        assert_eq!(rows[0]["twice"], rows[0]["id"].as_i64().unwrap() * 2);
    }
    // Each refused request was sent again, with the same key and body,
    // and accepted then.
    let refused: Vec<&Request> = requests.iter().filter(|r| r.status == 503).collect();
    assert!(!refused.is_empty());
    for r in refused {
        let key = &r.headers["idempotency-key"];
        let again: Vec<&Request> = requests
            .iter()
            .filter(|o| &o.headers["idempotency-key"] == key)
            .collect();
        assert_eq!(again.len(), 2, "{key}");
        assert_eq!(again[1].status, 200);
        assert_eq!(again[1].body, r.body);
    }
    let keys: BTreeSet<&String> = requests
        .iter()
        .map(|r| &r.headers["idempotency-key"])
        .collect();
    assert_eq!(
        keys.len(),
        requests.iter().filter(|r| r.status == 200).count()
    );
}

#[test]
fn killed_jobs_deliver_every_row_at_least_once() {
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let sql = job(receiver.port, 12_000, "4000");
    let kills = common::kill_until_done(&sql, dir.path(), "100ms", 5, 6);
    assert!(kills >= 3, "too few kills: {kills}");
    let ids = receiver.ids();
    eprintln!("{} rows for {} ids", ids.len(), 12_000);
    assert_eq!(
        ids.into_iter().collect::<BTreeSet<_>>(),
        (1..=12_000).collect()
    );
}
