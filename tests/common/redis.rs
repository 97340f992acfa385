//! A Redis server of Debian's `redis-server` package, started for a test
//! on a free port, and stopped when dropped. It writes every change to its
//! append-only file, so that a restart keeps the data.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            port: super::kafka::free_ports().0,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.run();
        redis
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package: ./dev test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.connection().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }

    /// `cmd` and its arguments, run; its reply as `T`.
    pub fn run_cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.connection().unwrap())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Appends entries of `fields` to `stream`, a pipeline at a time.
    pub fn xadd(&self, stream: &str, entries: &[Vec<(String, String)>]) {
        let mut connection = self.connection().unwrap();
        for chunk in entries.chunks(500) {
            let mut pipe = redis::pipe();
            for fields in chunk {
                let cmd = pipe.cmd("XADD").arg(stream).arg("*");
                for (k, v) in fields {
                    cmd.arg(k).arg(v);
                }
                cmd.ignore();
            }
            pipe.query::<()>(&mut connection).unwrap();
        }
    }

    /// Stops the server (SIGKILL: what it acknowledged is on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data, after [`Self::stop`].
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
