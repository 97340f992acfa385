//! `eddy server` through real HTTP (curl): statements, jobs and their
//! control, errors with positions, a kill -9 and a resumed job, the
//! token, the body cap, the OpenAPI document and `/metrics`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::server::Server;
use serde_json::Value;

/// A source of ids 1..=n at `rate` rows per second, and a file sink.
fn ids_sql(n: u32, rate: u32) -> String {
    format!(
        "CREATE TABLE ids (id BIGINT) WITH ('connector' = 'datagen',
           'rows-per-second' = '{rate}',
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{n}');
         CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = 'out/',
           'format' = 'json');"
    )
}

/// How many times each id is in the committed output files.
fn committed_ids(dir: &Path) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return counts;
    };
    for entry in entries {
        let entry = entry.unwrap();
        if !entry.file_name().to_string_lossy().starts_with("part-") {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            *counts.entry(row["id"].as_i64().unwrap()).or_default() += 1;
        }
    }
    counts
}

fn job_id(results: &Value, i: usize) -> String {
    results["results"][i]["job"]
        .as_str()
        .unwrap_or_else(|| panic!("no job in result {i}: {results}"))
        .to_string()
}

#[test]
fn statements_start_jobs_that_are_listed_stopped_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--checkpoint-interval", "200ms"]);
    let (status, created) = server.sql(&ids_sql(100_000, 500));
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["results"][0]["kind"], "created");
    assert_eq!(created["results"][0]["name"], "ids");

    let (status, started) = server.sql("INSERT INTO out SELECT id FROM ids");
    assert_eq!(status, 200, "{started}");
    let id = job_id(&started, 0);
    let (_, jobs) = server.get("/api/jobs");
    let listed = &jobs["jobs"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["sql"], "INSERT INTO out SELECT id FROM ids");

    // Its detail: the plan, the operators' figures, checkpoints.
    let job = server.wait_job(&id, "a checkpoint and rows", |j| {
        j["checkpoint"]["completed"].as_u64() >= Some(1) && j["rows_out"].as_u64() > Some(0)
    });
    assert_eq!(job["state"], "running");
    assert!(job["plan"].as_str().unwrap().contains("datagen"), "{job}");
    let operators = job["operators"].as_array().unwrap();
    assert!(
        operators
            .iter()
            .any(|o| o["rows_out"].as_u64() > Some(0) && o["subtask"] == 0),
        "{job}"
    );

    // Stop: a final checkpoint, then stopped; resume: from it.
    let (status, _) = server.post(&format!("/api/jobs/{id}/stop"));
    assert_eq!(status, 202);
    let stopped = server.wait_job(&id, "stopped", |j| j["state"] == "stopped");
    let (status, again) = server.post(&format!("/api/jobs/{id}/stop"));
    assert_eq!(status, 409, "{again}");
    let last = stopped["checkpoint"]["last_id"].as_u64().unwrap();
    let (status, _) = server.post(&format!("/api/jobs/{id}/resume"));
    assert_eq!(status, 202);
    let resumed = server.wait_job(&id, "running again", |j| j["state"] == "running");
    assert_eq!(resumed["resumed_from"].as_u64(), Some(last), "{resumed}");
    let (status, _) = server.post(&format!("/api/jobs/{id}/resume"));
    assert_eq!(status, 409);

    // Cancel: at once, no checkpoint.
    let (status, _) = server.post(&format!("/api/jobs/{id}/cancel"));
    assert_eq!(status, 202);
    server.wait_job(&id, "cancelled", |j| j["state"] == "cancelled");
    let (status, output) = server.get(&format!("/api/jobs/{id}/output"));
    assert_eq!(status, 404);
    assert!(
        output["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sink"),
        "{output}"
    );
    let (status, missing) = server.get("/api/jobs/nope");
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["message"], "there is no job 'nope'");
}

#[test]
fn errors_carry_the_statement_line_column_and_caret() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let sql = "CREATE TABLE t (x BIGINT) WITH ('connector' = 'datagen');\n\
               EXPLAIN SELECT x FROM t;\n\
               SELECT y\n  FROM t;";
    let (status, body) = server.sql(sql);
    assert_eq!(status, 400, "{body}");
    // The statements before the error ran and say what they did.
    assert_eq!(body["results"][0]["kind"], "created");
    assert_eq!(body["results"][1]["kind"], "explain");
    assert!(
        body["results"][1]["plan"]
            .as_str()
            .unwrap()
            .contains("datagen")
    );
    let error = &body["error"];
    assert_eq!(error["statement"], 2);
    assert_eq!(
        (error["line"].as_u64(), error["column"].as_u64()),
        (Some(3), Some(8))
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("'y'") && message.contains("x"),
        "{message}"
    );
    // The CLI's rendering: the line and a caret under `y`.
    let rendered = error["rendered"].as_str().unwrap();
    assert!(rendered.contains("request:3:8"), "{rendered}");
    assert!(rendered.contains("SELECT y\n"), "{rendered}");
    assert!(rendered.contains("       ^"), "{rendered}");

    let (status, body) = server.sql("SELEC 1");
    assert_eq!(status, 400);
    assert_eq!(
        (
            body["error"]["line"].as_u64(),
            body["error"]["column"].as_u64()
        ),
        (Some(1), Some(1))
    );
    // The catalog kept the table: a second request sees it.
    // The SQL may also be the body itself.
    let (status, body) = server.request("POST", "/api/sql", Some("DESCRIBE t"), None);
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["results"][0]["text"]
            .as_str()
            .unwrap()
            .contains("BIGINT")
    );
}

#[test]
fn a_killed_server_resumes_its_jobs_and_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    let server = Server::start(dir.path(), &["--checkpoint-interval", "100ms"]);
    let (status, body) = server.sql(&ids_sql(n, 1000));
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.sql("CREATE VIEW evens AS SELECT id FROM ids WHERE id % 2 = 0");
    assert_eq!(status, 200, "{body}");
    let (status, started) = server.sql("INSERT INTO out SELECT id FROM ids");
    assert_eq!(status, 200, "{started}");
    let id = job_id(&started, 0);
    // Some output is committed, the input is not all read: kill -9.
    server.wait_job(&id, "committed output", |_| {
        !committed_ids(&dir.path().join("out")).is_empty()
    });
    server.kill();

    let server = Server::start(dir.path(), &["--checkpoint-interval", "100ms"]);
    // The catalog came back (the view too), and the job runs again from
    // its latest checkpoint.
    let (status, body) = server.sql("SHOW VIEWS");
    assert_eq!(status, 200, "{body}");
    assert!(
        body["results"][0]["text"]
            .as_str()
            .unwrap()
            .contains("evens"),
        "{body}"
    );
    let resumed = server.wait_job(&id, "resumed", |j| j["resumed_from"].is_u64());
    assert!(resumed["resumed_from"].as_u64() >= Some(1), "{resumed}");
    let finished = server.wait_job(&id, "finished", |j| j["state"] == "finished");
    assert_eq!(finished["error"], Value::Null);
    let counts = committed_ids(&dir.path().join("out"));
    let expected: BTreeMap<i64, usize> = (1..=i64::from(n)).map(|i| (i, 1)).collect();
    assert_eq!(counts.len(), expected.len());
    assert!(counts == expected, "some ids are missing or repeated");
    // A new job gets a new id: it never meets the old one's state.
    let (status, started) = server.sql("INSERT INTO out SELECT id FROM ids WHERE id < 0");
    assert_eq!(status, 200, "{started}");
    assert_ne!(job_id(&started, 0), id);
}

#[test]
fn a_token_guards_every_route_and_bodies_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--auth-token", "s3cret"]);
    let (status, body) = server.request("GET", "/api/jobs", None, None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = server.request("GET", "/metrics", None, Some("wrong"));
    assert_eq!(status, 401);
    let (status, body) = server.request("GET", "/api/jobs", None, Some("s3cret"));
    assert_eq!(status, 200, "{body}");
    let big = format!("{{\"sql\": \"{}\"}}", " ".repeat(2 << 20));
    let (status, _) = server.request("POST", "/api/sql", Some(&big), Some("s3cret"));
    assert_eq!(status, 413);

    // Any address but loopback needs a token.
    Server::assert_needs_a_token(dir.path(), &["--listen", "0.0.0.0:0"]);
}

#[test]
fn every_documented_path_is_routed_and_metrics_are_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--checkpoint-interval", "100ms"]);
    let (status, doc) = server.get("/api/openapi.json");
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10, "{doc}");
    for (path, methods) in paths {
        for method in methods.as_object().unwrap().keys() {
            let path = path.replace("{id}", "nope").replace("{name}", "nope");
            let body = (method == "post").then_some("{\"sql\": \"SHOW TABLES\"}");
            let (status, text) = server.request(&method.to_uppercase(), &path, body, None);
            // An unrouted path is a bare 404 (or 405); a routed one answers
            // (404 with a JSON error for an unknown job).
            assert!(status != 405, "{method} {path}: 405");
            assert!(
                status != 404 || text.contains("error"),
                "{method} {path} is not routed"
            );
        }
    }

    let (status, body) = server.sql(&format!(
        "{}\nINSERT INTO out SELECT id FROM ids",
        ids_sql(1_000_000, 1000)
    ));
    assert_eq!(status, 200, "{body}");
    let id = job_id(&body, 2);
    server.wait_job(&id, "a checkpoint", |j| {
        j["checkpoint"]["completed"].as_u64() >= Some(1)
    });
    let (status, text) = server.request("GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let value = |prefix: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let job = format!("job=\"{id}\"");
    let rows = text
        .lines()
        .find(|l| {
            l.starts_with("eddy_operator_rows_out_total{")
                && l.contains(&job)
                && l.contains("subtask=\"0\"")
        })
        .unwrap_or_else(|| panic!("no per-operator rows of {id}:\n{text}"));
    assert!(rows.contains("operator=\""), "{rows}");
    assert!(
        value(&format!("eddy_job_running{{{job}}}")) == Some(1.0),
        "{text}"
    );
    assert!(
        value(&format!("eddy_checkpoints_total{{{job}}}")) >= Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE eddy_operator_rows_out_total counter"),
        "{text}"
    );

    // SIGTERM: every job stops after a final checkpoint, the server exits
    // cleanly, and the next start resumes the job from that checkpoint.
    assert_eq!(server.terminate(), Some(0));
    let server = Server::start(dir.path(), &["--checkpoint-interval", "100ms"]);
    let resumed = server.wait_job(&id, "resumed", |j| j["resumed_from"].is_u64());
    assert_eq!(resumed["state"], "running", "{resumed}");
}

/// ids 1..=n and a view of their count and sum per `id % 3`.
fn counts_sql(n: u32, rate: u32) -> String {
    format!(
        "CREATE TABLE ids (id BIGINT) WITH ('connector' = 'datagen',
           'rows-per-second' = '{rate}',
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{n}');
         CREATE MATERIALIZED VIEW counts AS
           SELECT id % 3 AS k, COUNT(*) AS n, SUM(id) AS s FROM ids GROUP BY id % 3;"
    )
}

/// The view's rows for ids 1..=n, computed by hand: (k, count, sum).
fn counts_expected(n: i64) -> Vec<(i64, i64, i64)> {
    (0..3)
        .map(|k| {
            let ids: Vec<i64> = (1..=n).filter(|i| i % 3 == k).collect();
            (k, ids.len() as i64, ids.iter().sum())
        })
        .collect()
}

fn counts_rows(rows: &[Value]) -> Vec<(i64, i64, i64)> {
    let mut out: Vec<(i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["k"].as_i64().unwrap(),
                r["n"].as_i64().unwrap(),
                r["s"].as_i64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// `SELECT * FROM counts` through the API.
fn select_counts(server: &Server) -> Vec<(i64, i64, i64)> {
    let (status, body) = server.sql("SELECT k, n, s FROM counts WHERE n > 0 ORDER BY k");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["kind"], "rows");
    counts_rows(body["results"][0]["rows"].as_array().unwrap())
}

/// The rows a stream of SSE changes leaves (each `+I`/`+U` adds its row,
/// each `-U`/`-D` takes one away), and the ops seen.
fn fold_events(text: &str) -> (Vec<Value>, Vec<String>) {
    let mut rows: Vec<Value> = Vec::new();
    let mut ops = Vec::new();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let event: Value = serde_json::from_str(data).unwrap();
        let Some(op) = event["op"].as_str() else {
            continue;
        };
        ops.push(op.to_string());
        match op {
            "+I" | "+U" => rows.push(event["row"].clone()),
            _ => {
                let at = rows
                    .iter()
                    .position(|r| *r == event["row"])
                    .unwrap_or_else(|| panic!("{op} of a row not there: {event}"));
                rows.remove(at);
            }
        }
    }
    (rows, ops)
}

#[test]
fn a_materialized_view_is_queried_and_followed_live() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let n = 600;
    let (status, body) = server.sql(&counts_sql(n, 400));
    assert_eq!(status, 200, "{body}");
    let id = job_id(&body, 1);
    let (_, listed) = server.get("/api/views");
    assert_eq!(listed["views"][0]["name"], "counts");
    // A subscriber from the start, and one that joins later.
    let live = dir.path().join("live.txt");
    let mut curl = std::process::Command::new("curl")
        .args(["-sN", &format!("{}/api/views/counts/subscribe", server.url)])
        .stdout(std::fs::File::create(&live).unwrap())
        .spawn()
        .unwrap();
    let finished = server.wait_job(&id, "finished", |j| j["state"] == "finished");
    assert_eq!(finished["error"], Value::Null);
    let expected = counts_expected(i64::from(n));
    assert_eq!(select_counts(&server), expected);
    // The live subscriber saw every change up to the same rows.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (rows, ops) = loop {
        let (rows, ops) = fold_events(&std::fs::read_to_string(&live).unwrap());
        if counts_rows(&rows) == expected || std::time::Instant::now() > until {
            break (rows, ops);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = curl.kill();
    let _ = curl.wait();
    assert_eq!(counts_rows(&rows), expected);
    assert!(
        ops.iter().any(|o| o == "-U") && ops.iter().any(|o| o == "+U"),
        "{ops:?}"
    );
    // The job's output is its view.
    let out = std::process::Command::new("curl")
        .args(["-sN", "--max-time", "1"])
        .arg(format!("{}/api/jobs/{id}/output", server.url))
        .output()
        .unwrap();
    let out = String::from_utf8(out.stdout).unwrap();
    assert_eq!(counts_rows(&fold_events(&out).0), expected);
    // A late subscriber gets the rows as a snapshot, with an event id.
    let late = sse_for(&server, "counts", 1, None);
    assert_eq!(counts_rows(&fold_events(&late).0), expected);
    let last_id = late
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap()
        .to_string();
    // Reconnecting with that id misses nothing and repeats nothing: no
    // change came since, so nothing is sent again.
    let resumed = sse_for(&server, "counts", 1, Some(&last_id));
    assert!(fold_events(&resumed).1.is_empty(), "{resumed}");
    // An id of another server run gets a fresh snapshot.
    let other = sse_for(&server, "counts", 1, Some("1-5"));
    assert_eq!(counts_rows(&fold_events(&other).0), expected);
}

/// What `GET /api/views/{view}/subscribe` sends in `seconds`.
fn sse_for(server: &Server, view: &str, seconds: u32, last_event_id: Option<&str>) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sN", "--max-time", &seconds.to_string()]);
    if let Some(id) = last_event_id {
        cmd.args(["-H", &format!("Last-Event-ID: {id}")]);
    }
    let out = cmd
        .arg(format!("{}/api/views/{view}/subscribe", server.url))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_view_survives_kill_9_and_drop_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    let server = Server::start(dir.path(), &[]);
    let (status, body) = server.sql(&counts_sql(n, 1000));
    assert_eq!(status, 200, "{body}");
    let id = job_id(&body, 1);
    // Part of the input is in the view: kill -9.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while select_counts(&server).is_empty() {
        assert!(std::time::Instant::now() < until, "the view stayed empty");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.kill();
    let server = Server::start(dir.path(), &[]);
    let resumed = server.wait_job(&id, "finished", |j| j["state"] == "finished");
    assert!(resumed["resumed_from"].as_u64() >= Some(1), "{resumed}");
    // Each id counted once: nothing lost in the crash, nothing doubled.
    let expected = counts_expected(i64::from(n));
    assert_eq!(select_counts(&server), expected);
    assert_eq!(
        counts_rows(&fold_events(&sse_for(&server, "counts", 1, None)).0),
        expected
    );
    // Finished, it keeps its rows across another restart, where its job
    // does not run again: the rows are rebuilt from the view's logs up to
    // its last checkpoint.
    server.kill();
    let server = Server::start(dir.path(), &[]);
    server.wait_job(&id, "finished", |j| j["state"] == "finished");
    assert_eq!(select_counts(&server), expected);

    let (status, body) = server.sql("DROP MATERIALIZED VIEW counts");
    assert_eq!(status, 200, "{body}");
    drop(server);
    // The catalog's replay at the next start does not bring it back.
    let server = Server::start(dir.path(), &[]);
    let (_, listed) = server.get("/api/views");
    assert_eq!(listed["views"], serde_json::json!([]), "{listed}");
    let (status, body) = server.sql("SELECT * FROM counts");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("counts"),
        "{body}"
    );
    let (status, _) = server.get("/api/views/counts/subscribe");
    assert_eq!(status, 404);
    assert!(!dir.path().join("state/views/counts").exists());
}

/// A stopped view keeps the rows of its final checkpoint across a restart,
/// where its job stays stopped: they are rebuilt from its logs.
#[test]
fn a_stopped_view_keeps_its_rows_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (status, body) = server.sql(&counts_sql(1_000_000, 2000));
    assert_eq!(status, 200, "{body}");
    let id = job_id(&body, 1);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while select_counts(&server).len() < 3 {
        assert!(std::time::Instant::now() < until, "the view stayed empty");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, _) = server.post(&format!("/api/jobs/{id}/stop"));
    assert_eq!(status, 202);
    server.wait_job(&id, "stopped", |j| j["state"] == "stopped");
    let before = select_counts(&server);
    assert_eq!(before.len(), 3, "{before:?}");
    server.kill();
    let server = Server::start(dir.path(), &[]);
    let (_, job) = server.get(&format!("/api/jobs/{id}"));
    assert_eq!(job["state"], "stopped", "{job}");
    assert_eq!(select_counts(&server), before);
}

#[test]
fn a_subscriber_that_stops_reading_is_dropped_and_the_job_never_waits() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // 300,000 changes, each an +I of its own key.
    let (status, body) = server.sql(
        "CREATE TABLE ids (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '1000000',
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '300000');
         CREATE MATERIALIZED VIEW every AS SELECT id, COUNT(*) AS n FROM ids GROUP BY id;",
    );
    assert_eq!(status, 200, "{body}");
    let id = job_id(&body, 1);
    let address = server.url.trim_start_matches("http://");
    let mut slow = std::net::TcpStream::connect(address).unwrap();
    write!(
        slow,
        "GET /api/views/every/subscribe HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // The job ends while the client reads nothing.
    server.wait_job(&id, "finished", |j| j["state"] == "finished");
    assert_eq!(select_counts_of(&server, "every"), 300_000);
    // What the client then reads ends with its dismissal.
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut text = Vec::new();
    let _ = slow.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("event: close"), "no close event");
    assert!(text.contains("fell behind"), "no reason");
}

fn select_counts_of(server: &Server, view: &str) -> i64 {
    let (status, body) = server.sql(&format!("SELECT COUNT(*) AS c FROM {view}"));
    assert_eq!(status, 200, "{body}");
    body["results"][0]["rows"][0]["c"].as_i64().unwrap()
}

#[test]
fn a_view_is_followed_over_websocket_with_the_sse_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let n = 600;
    let (status, body) = server.sql(&counts_sql(n, 400));
    assert_eq!(status, 200, "{body}");
    let ws = server.url.replace("http://", "ws://");
    let (mut socket, _) = tungstenite::connect(format!("{ws}/ws?view=counts")).unwrap();
    let expected = counts_expected(i64::from(n));
    // Fold each change as the SSE test does, until the rows are final.
    let mut text = String::new();
    loop {
        let message = socket.read().unwrap();
        let tungstenite::Message::Text(frame) = message else {
            continue;
        };
        let frame: Value = serde_json::from_str(&frame).unwrap();
        assert!(
            frame["id"].is_string() || frame["event"] == "close",
            "{frame}"
        );
        if frame["event"] == "change" {
            text.push_str(&format!("data: {}\n", frame["data"]));
        }
        if counts_rows(&fold_events(&text).0) == expected {
            break;
        }
    }
    let _ = socket.close(None);
    // The same messages an SSE client gets for the snapshot.
    let sse = sse_for(&server, "counts", 1, None);
    assert_eq!(counts_rows(&fold_events(&sse).0), expected);
    let unknown = tungstenite::connect(format!("{ws}/ws?view=nope"));
    match unknown {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("a WebSocket to an unknown view: {:?}", other.map(|_| ())),
    }
}

#[test]
fn file_tables_stay_under_the_allowed_paths() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    let server = Server::start(dir.path(), &[]);
    let table = |name: &str, options: &str| {
        server.sql(&format!(
            "CREATE TABLE {name} (x BIGINT) WITH ({options}, 'format' = 'json')"
        ))
    };
    let (status, body) = table("fine", "'connector' = 'filesystem', 'path' = 'data/out/'");
    assert_eq!(status, 200, "{body}");
    for (name, options) in [
        (
            "up",
            "'connector' = 'filesystem', 'path' = '../escape/'".to_string(),
        ),
        (
            "abs",
            "'connector' = 'file', 'path' = 'file:///etc/passwd'".to_string(),
        ),
        (
            "linked",
            "'connector' = 'filesystem', 'path' = 'link/secret.json'".to_string(),
        ),
        (
            "legacy",
            "'connector.type' = 'filesystem', 'connector.path' = '/etc/hosts'".to_string(),
        ),
        (
            "dotdot",
            "'connector' = 'filesystem', 'path' = 'data/../../x/'".to_string(),
        ),
    ] {
        let (status, body) = table(name, &options);
        assert_eq!(status, 403, "{name}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("the server's allowed paths"), "{message}");
        assert_eq!(body["error"]["line"], 1);
    }
    // Nothing refused reached the catalog.
    let (_, shown) = server.sql("SHOW TABLES");
    let tables = shown["results"][0]["text"].as_str().unwrap();
    assert!(
        tables.contains("fine") && !tables.contains("linked"),
        "{tables}"
    );
    drop(server);

    // --allow-path adds a root: the linked directory is then fine.
    let server = Server::start(
        dir.path(),
        &[
            "--allow-path",
            outside.path().to_str().unwrap(),
            "--allow-path",
            ".",
        ],
    );
    let (status, body) = server.sql(
        "CREATE TABLE linked (x BIGINT) WITH ('connector' = 'filesystem', \
         'path' = 'link/secret.json', 'format' = 'json')",
    );
    assert_eq!(status, 200, "{body}");
}

/// `SELECT SUM(n), SUM(s) FROM counts` through the API: (0, 0) if empty.
fn select_totals(server: &Server) -> (i64, i64) {
    let (status, body) = server.sql("SELECT n, s FROM totals");
    assert_eq!(status, 200, "{body}");
    let row = &body["results"][0]["rows"][0];
    (
        row["n"].as_i64().unwrap_or(0),
        row["s"].as_i64().unwrap_or(0),
    )
}

#[test]
fn a_view_is_read_by_another_job_as_a_changelog_exactly_once_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let n: i64 = 3000;
    let args = ["--checkpoint-interval", "100ms"];
    let server = Server::start(dir.path(), &args);
    let (status, body) = server.sql(&counts_sql(n as u32, 1000));
    assert_eq!(status, 200, "{body}");
    let counts_job = job_id(&body, 1);
    // A global aggregate over the view's changes: right only if each
    // count's old row is taken back when its new one comes.
    let totals = "CREATE MATERIALIZED VIEW totals AS SELECT SUM(n) AS n, SUM(s) AS s FROM counts";
    let (status, plan) = server.sql(&format!("EXPLAIN {totals}"));
    assert_eq!(status, 200, "{plan}");
    let plan = plan["results"][0]["plan"].as_str().unwrap();
    assert!(plan.contains("connector='materialized-view'"), "{plan}");
    let (status, body) = server.sql(totals);
    assert_eq!(status, 200, "{body}");
    let totals_job = job_id(&body, 0);
    // Part of the input has gone through both: kill -9.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while select_totals(&server).0 == 0 {
        assert!(std::time::Instant::now() < until, "totals stayed empty");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, job) = server.get(&format!("/api/jobs/{counts_job}"));
    assert_eq!(
        job["state"], "running",
        "the kill came too late to test anything"
    );
    server.kill();
    let server = Server::start(dir.path(), &args);
    server.wait_job(&counts_job, "finished", |j| j["state"] == "finished");
    // By hand: ids 1..=n, each counted once.
    let expected = (n, n * (n + 1) / 2);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut got = select_totals(&server);
    while got != expected && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
        got = select_totals(&server);
    }
    assert_eq!(got, expected);
    let (_, listed) = server.get("/api/views");
    let names: Vec<&str> = listed["views"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["counts", "totals"]);
    // Dropping a view that a job reads fails that job, saying why.
    let (status, body) = server.sql("DROP MATERIALIZED VIEW counts");
    assert_eq!(status, 200, "{body}");
    let failed = server.wait_job(&totals_job, "failed", |j| j["state"] == "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("'counts' was dropped"), "{error}");
}
