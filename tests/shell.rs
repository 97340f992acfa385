//! `eddy sql`, the shell: statements from stdin (as a user pastes them),
//! embedded and on a server, and Ctrl-C (SIGINT) ending what runs without
//! ending the shell.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::Server;

/// `eddy sql ARGS` in `dir` with `input` on stdin (then closed), its
/// stdout collected as it comes.
fn shell(dir: &std::path::Path, args: &[&str], input: &str) -> (Child, Arc<Mutex<String>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .current_dir(dir)
        .arg("sql")
        .args(args)
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let copy = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            copy.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (child, out)
}

/// Waits until the shell's stdout holds `text` (a minute at most).
fn wait_for(out: &Arc<Mutex<String>>, text: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    while !out.lock().unwrap().contains(text) {
        assert!(
            Instant::now() < until,
            "never printed {text:?}: {}",
            out.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigint(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The shell's exit code, stdout and stderr once stdin's end closes it.
fn finish(mut child: Child, out: &Arc<Mutex<String>>) -> (Option<i32>, String, String) {
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let text = out.lock().unwrap().clone();
    (status.code(), text, err)
}

const IDS: &str = "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen',
  'rows-per-second' = '100000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '500');
";

#[test]
fn embedded_a_select_runs_until_ctrl_c_and_the_shell_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = format!(
        "{IDS}CREATE TABLE slow (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '20',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1000001', 'fields.id.end' = '2000000');
SELECT id FROM slow;
SELECX 1;
SELECT COUNT(*) AS c, SUM(id) AS s
  FROM g;
"
    );
    let (child, out) = shell(dir.path(), &[], &input);
    // The endless SELECT prints rows; Ctrl-C ends it, not the shell.
    wait_for(&out, "1000003");
    sigint(&child);
    let (code, stdout, stderr) = finish(child, &out);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");
    // The typo gets its caret, and the next statement still runs.
    assert!(
        stderr.contains("SELECX") && stderr.contains('^'),
        "{stderr}"
    );
    // 1 + ... + 500 = 125250, by hand.
    let last = stdout.lines().rev().find(|l| l.contains("125250"));
    assert!(last.is_some_and(|l| l.contains("500")), "{stdout}");
    assert!(
        stdout.contains("created g") && stdout.contains("created slow"),
        "{stdout}"
    );
}

#[test]
fn on_a_server_it_queries_and_follows_a_view_until_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--checkpoint-interval", "100ms"]);
    let (status, body) = server.sql(&format!(
        "{IDS}CREATE MATERIALIZED VIEW parity AS
           SELECT id % 2 AS odd, COUNT(*) AS n, SUM(id) AS s FROM g GROUP BY id % 2;"
    ));
    assert_eq!(status, 200, "{body}");
    let id = body["results"][1]["job"].as_str().unwrap().to_string();
    server.wait_job(&id, "finished", |j| j["state"] == "finished");
    let input = "SELECT odd, n, s\n  FROM parity ORDER BY odd;\nSELECT nope FROM parity;\nSUBSCRIBE parity;\n";
    let (child, out) = shell(dir.path(), &["--server", &server.url], input);
    // By hand: the 250 even ids 2..500 sum to 62750, the 250 odd ones to 62500.
    wait_for(&out, "+I | 1 | 250 | 62500");
    sigint(&child);
    let (code, stdout, stderr) = finish(child, &out);
    assert_eq!(code, Some(0), "{stderr}");
    let table: Vec<Vec<String>> = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("odd"))
        .skip(2)
        .take(2)
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect();
    assert_eq!(
        table,
        [["0", "250", "62750"], ["1", "250", "62500"]],
        "{stdout}"
    );
    assert!(stdout.contains("+I | 0 | 250 | 62750"), "{stdout}");
    assert!(stderr.contains("nope") && stderr.contains('^'), "{stderr}");
    assert!(stderr.contains("stopped following parity"), "{stderr}");
}
