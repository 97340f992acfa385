//! An `eddy server` in a child process, on a free port, spoken to with
//! curl (a real HTTP client, as a user's).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Child,
    pub url: String,
    /// The Postgres port's `host:port`.
    pub pg: String,
    pub dir: PathBuf,
    /// The server's stderr, copied here by a thread.
    pub log: PathBuf,
}

impl Server {
    /// Starts `eddy server` in `dir` (state in `dir/state`) with `args`.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        let log = dir.join(format!(
            "server-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .current_dir(dir)
            .args(["server", "--state-dir", "state", "--listen", "127.0.0.1:0"])
            .args(["--pg-listen", "127.0.0.1:0"])
            .args(args)
            .env("EDDY_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start eddy server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let copy = log.clone();
        std::thread::spawn(move || {
            let mut out = std::fs::File::create(&copy).expect("log");
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                use std::io::Write as _;
                let _ = writeln!(out, "{line}");
                if let Some(at) = line.find("listening on http://") {
                    let words: Vec<&str> = line[at + "listening on ".len()..]
                        .split_whitespace()
                        .collect();
                    let http = words[0].to_string();
                    let pg = words
                        .iter()
                        .find_map(|w| w.strip_prefix("postgres://"))
                        .unwrap_or_default()
                        .to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((http, pg));
                    }
                }
            }
        });
        let (url, pg) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addresses) => addresses,
            Err(_) => panic!(
                "the server did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        Server {
            child,
            url,
            pg,
            dir: dir.to_path_buf(),
            log,
        }
    }

    /// Asserts that `eddy server` with `args` (and no token) refuses to
    /// start for want of a token.
    pub fn assert_needs_a_token(dir: &Path, args: &[&str]) {
        let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .current_dir(dir)
            .args(["server", "--state-dir", "other"])
            .args(args)
            .env_remove("EDDY_AUTH_TOKEN")
            .output()
            .expect("run eddy server");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("needs --auth-token"), "{stderr}");
    }

    /// Runs `psql` against the Postgres port with `args` (and
    /// `PGPASSWORD` if given): its exit code, stdout and stderr.
    pub fn psql(&self, password: Option<&str>, args: &[&str]) -> (i32, String, String) {
        let (host, port) = self.pg.rsplit_once(':').expect("host:port");
        let mut command = Command::new("psql");
        command
            .args([
                "-h",
                host,
                "-p",
                port,
                "-U",
                "eddy",
                "-d",
                "eddy",
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(args)
            .env_remove("PGPASSWORD");
        if let Some(p) = password {
            command.env("PGPASSWORD", p);
        }
        let out = command
            .output()
            .expect("run psql (Debian's postgresql-client)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A request with curl: the status and the body. A body goes as JSON
    /// if it starts with `{`, else as `application/sql`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg(format!("{}{path}", self.url));
        if let Some(token) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if let Some(body) = body {
            let kind = if body.starts_with('{') { "json" } else { "sql" };
            cmd.args(["-H", &format!("Content-Type: application/{kind}")]);
            cmd.args(["--data-binary", "@-"]);
            cmd.stdin(Stdio::piped());
        }
        cmd.stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("curl");
        if let Some(body) = body {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(body.as_bytes()).expect("write body");
        }
        let out = child.wait_with_output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.request("GET", path, None, None);
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    pub fn post(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.request("POST", path, None, None);
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// `POST /api/sql`.
    pub fn sql(&self, sql: &str) -> (u16, Value) {
        let body = serde_json::json!({ "sql": sql }).to_string();
        let (status, body) = self.request("POST", "/api/sql", Some(&body), None);
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// Polls `GET /api/jobs/{id}` until `done` holds (a minute at most).
    pub fn wait_job(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, job) = self.get(&format!("/api/jobs/{id}"));
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < until,
                "job {id} never got {what}: {job}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
