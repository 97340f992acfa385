//! The dashboard at `/` in a real browser: headless Chromium, driven over
//! the DevTools protocol by `tests/dashboard/drive.mjs` (Node). The pages
//! are checked against answers computed by hand, and screenshots are left
//! in the target directory (`dashboard-*.png`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::server::Server;
use serde_json::{Value, json};

/// Runs the browser through `steps`; each step's value.
fn drive(steps: &[Value]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/drive.mjs");
    let out = Command::new("node")
        .arg(script)
        .arg(Value::Array(steps.to_vec()).to_string())
        .output()
        .expect("run node (Debian's nodejs; ./dev test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "the driver said: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["failure"], Value::Null, "{report}");
    assert_eq!(report["errors"], json!([]), "the page logged errors");
    report["results"].as_array().unwrap().clone()
}

fn goto(url: &str) -> Value {
    json!({ "goto": url })
}

fn wait(js: &str) -> Value {
    json!({ "wait": js, "timeout": 60000 })
}

fn eval(js: &str) -> Value {
    json!({ "eval": js })
}

/// A step that moves the page to `hash` (same document: no load event).
fn hash(hash: &str) -> Value {
    eval(&format!("location.hash = {}", json!(hash)))
}

/// The cells of the rows of the table under `selector`, as text.
fn cells(selector: &str) -> Value {
    eval(&format!(
        "[...document.querySelectorAll('{selector} tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))"
    ))
}

fn screenshot(name: &str) -> (Value, PathBuf) {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{name}.png"));
    (json!({ "screenshot": path.display().to_string() }), path)
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{}",
        path.display()
    );
    assert!(bytes.len() > 10_000, "an empty picture: {}", path.display());
}

fn text_rows(v: &Value) -> Vec<Vec<String>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// 60 events, one a second from 2023-11-14 22:13:20 UTC, `v` = 0..59, in
/// a file, and a view of their 10-second windows.
const BASE_MS: i64 = 1_700_000_000_000;
const WINDOWS_SQL: &str = "
    CREATE SOURCE events (v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
      WITH (connector = 'file', path = 'events.json');
    CREATE MATERIALIZED VIEW w AS
      SELECT window_end, COUNT(*) AS n, SUM(v) AS total
      FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
      GROUP BY window_start, window_end;";

/// By hand: window k (0..6) ends at 22:13:30 + 10k s and holds v = 10k..10k+9,
/// so n = 10 and total = 100k + 45.
fn windows_expected() -> Vec<(String, i64, i64)> {
    let ends = [
        "22:13:30", "22:13:40", "22:13:50", "22:14:00", "22:14:10", "22:14:20",
    ];
    ends.iter()
        .enumerate()
        .map(|(k, end)| (format!("2023-11-14T{end}"), 10, 100 * k as i64 + 45))
        .collect()
}

#[test]
fn the_dashboard_lists_jobs_runs_sql_follows_a_view_and_draws_the_dataflow() {
    let dir = tempfile::tempdir().unwrap();
    let events: String = (0..60)
        .map(|v| format!("{{\"v\": {v}, \"ts\": {}}}\n", BASE_MS + v * 1000))
        .collect();
    std::fs::write(dir.path().join("events.json"), events).unwrap();
    let server = Server::start(dir.path(), &["--checkpoint-interval", "200ms"]);
    let (status, body) = server.sql(WINDOWS_SQL);
    assert_eq!(status, 200, "{body}");
    let id = body["results"][1]["job"].as_str().unwrap().to_string();
    server.wait_job(&id, "finished", |j| j["state"] == "finished");
    let (_, job) = server.get(&format!("/api/jobs/{id}"));
    let expected = windows_expected();

    let (home_shot, home_png) = screenshot("home");
    let (view_shot, view_png) = screenshot("view");
    let (job_shot, job_png) = screenshot("job");
    let url = &server.url;
    let results = drive(&[
        // 0-1: the home page lists the job, finished, and the view's 6 rows.
        goto(&format!("{url}/")),
        wait(&format!(
            "document.querySelector('[data-job=\"{id}\"] .state')?.textContent === 'finished' \
             && document.querySelector('[data-view=\"w\"] td.num')?.textContent"
        )),
        // 2-5: a query typed into the SQL box and run with the button.
        json!({ "type": "#sql", "text": "SELECT window_end, n, total FROM w WHERE total > 100 ORDER BY total" }),
        json!({ "click": "#run" }),
        wait("document.querySelectorAll('#results tbody tr').length === 5"),
        cells("#results"),
        // 6-9: a typo gets the caret.
        eval("document.querySelector('#sql').value = ''"),
        json!({ "type": "#sql", "text": "SELECT window_end, nn FROM w" }),
        json!({ "click": "#run" }),
        wait("document.querySelector('#sql-error')?.textContent"),
        // 10: the screenshot of the home page.
        home_shot,
        // 11-14: the view's page: its rows live, a table and a chart.
        hash("#/views/w"),
        wait(
            "document.getElementById('view-count')?.textContent === '6' && document.querySelector('#view-chart .uplot canvas') !== null",
        ),
        cells("#view-rows"),
        view_shot,
        // 15-18: the job's page: its graph and four charts.
        hash(&format!("#/jobs/{id}")),
        wait(
            "document.querySelectorAll('#graph g.node').length > 0 && document.querySelectorAll('.charts .uplot').length === 4",
        ),
        eval(
            "[...document.querySelectorAll('#graph g.node')].map(g => g.querySelector('text').textContent)",
        ),
        job_shot,
    ]);

    assert_eq!(results[1], "6", "the view's row count on the home page");
    let by_total: Vec<Vec<String>> = expected[1..]
        .iter()
        .map(|(end, n, total)| vec![end.clone(), n.to_string(), total.to_string()])
        .collect();
    assert_eq!(text_rows(&results[5]), by_total);
    let error = results[9].as_str().unwrap();
    assert!(error.contains("nn") && error.contains('^'), "{error}");
    // The view's table: the latest window first.
    let mut latest_first = expected.clone();
    latest_first.reverse();
    let shown: Vec<(String, i64, i64)> = text_rows(&results[13])
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap(), r[2].parse().unwrap()))
        .collect();
    assert_eq!(shown, latest_first);
    // The graph draws every node of the job's plan.
    let drawn: Vec<String> = results[17]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let planned: Vec<String> = job["graph"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("[{}] {}", n["id"], n["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(drawn, planned);
    for kind in ["Source", "WindowAggregate", "Sink"] {
        assert!(planned.iter().any(|p| p.ends_with(kind)), "{planned:?}");
    }
    for png in [home_png, view_png, job_png] {
        assert_png(&png);
    }
}

/// Counts and sums of ids 1..=m per `id % 3`, by hand, as the view's
/// table shows them: `[k, n, s]` as text, sorted by k.
fn counts_of_prefix(m: i64) -> Vec<Vec<String>> {
    (0..3)
        .map(|k| {
            let ids: Vec<i64> = (1..=m).filter(|i| i % 3 == k).collect();
            vec![
                k.to_string(),
                ids.len().to_string(),
                ids.iter().sum::<i64>().to_string(),
            ]
        })
        .filter(|r| r[1] != "0")
        .collect()
}

#[test]
fn behind_a_token_the_dashboard_signs_in_and_updates_live() {
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret";
    let server = Server::start(
        dir.path(),
        &["--checkpoint-interval", "200ms", "--auth-token", token],
    );
    let sql = "CREATE TABLE ids (id BIGINT) WITH ('connector' = 'datagen',
           'rows-per-second' = '300',
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000');
         CREATE MATERIALIZED VIEW counts AS
           SELECT id % 3 AS k, COUNT(*) AS n, SUM(id) AS s FROM ids GROUP BY id % 3;";
    let body = json!({ "sql": sql }).to_string();
    let (status, body) = server.request("POST", "/api/sql", Some(&body), Some(token));
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let id = body["results"][1]["job"].as_str().unwrap().to_string();

    let (shot, png) = screenshot("live-job");
    let url = &server.url;
    let sum_n = "[...document.querySelectorAll('#view-rows tbody tr')].reduce((a, tr) => a + Number(tr.cells[1].textContent.replace(/,/g, '')), 0)";
    let sorted_rows = "[...document.querySelectorAll('#view-rows tbody tr')].map(tr => [...tr.cells].map(td => td.textContent.replace(/,/g, ''))).sort((a, b) => a[0] - b[0])";
    let results = drive(&[
        // 0-3: the page asks for the token, and shows the job once given it.
        goto(&format!("{url}/")),
        wait("!document.getElementById('login').hidden"),
        json!({ "type": "#token", "text": token }),
        json!({ "click": "#login button" }),
        // 4: the job is listed, running.
        wait(&format!(
            "document.querySelector('[data-job=\"{id}\"] .state')?.textContent === 'running'"
        )),
        // 5-8: the view's page (SSE through fetch, with the token) shows
        // its three rows, then more rows counted as the job goes on.
        hash("#/views/counts"),
        wait("document.getElementById('view-count')?.textContent === '3'"),
        eval(&format!("window.firstCount = {sum_n}")),
        wait(&format!("{sum_n} > window.firstCount + 300")),
        // 9: the rows at one moment.
        eval(&format!(
            "JSON.stringify({{ rows: {sorted_rows}, total: {sum_n} }})"
        )),
        // 10-12: the job's page: the source's rate, measured live.
        hash(&format!("#/jobs/{id}")),
        wait(
            "(sources => sources.length > 0 && sources.every(g => /[1-9][0-9,.]* rows\\/s/.test(g.querySelector('text.rate').textContent)))([...document.querySelectorAll('#graph g.node')].filter(g => g.querySelector('text').textContent.endsWith('Source')))",
        ),
        shot,
    ]);
    let first = results[7].as_i64().unwrap();
    assert!(results[8].as_bool().unwrap());
    // What the page showed is the view of some prefix 1..=m of the ids:
    // every row agrees with a count made by hand.
    let moment: Value = serde_json::from_str(results[9].as_str().unwrap()).unwrap();
    let m = moment["total"].as_i64().unwrap();
    assert!(m > first, "{m} after {first}");
    let rows: Vec<Vec<String>> = text_rows(&moment["rows"]);
    assert_eq!(rows, counts_of_prefix(m));
    assert!(results[11].as_bool().unwrap());
    assert_png(&png);
    // Without the token the API still refuses; the page itself is public.
    assert_eq!(server.get("/api/jobs").0, 401);
    assert_eq!(server.get("/").0, 200);
}
