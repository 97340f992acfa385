//! `eddy sql`: an interactive SQL shell, on a server or embedded.
//!
//! ```text
//!  eddy sql --server http://127.0.0.1:8080   statements go to POST /api/sql; SUBSCRIBE v follows
//!                                            GET /api/views/v/subscribe until Ctrl-C
//!  eddy sql                                  an embedded session: a SELECT runs in the foreground
//!                                            until it ends or Ctrl-C cancels it; other jobs run
//!                                            in the background until the shell exits
//! ```
//!
//! A statement ends with `;` at the end of a line and may span lines.
//! History is kept in `~/.eddy_history`. `\q` quits, `\jobs` lists the
//! embedded session's jobs, `\h` helps. Without a terminal, statements are
//! read from stdin (`eddy sql < script.sql`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use eddy_engine::{JobManager, JobState};
use eddy_planner::{Outcome, Session};
use rustyline::error::ReadlineError;
use serde_json::Value;

mod client;

#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// A server's URL (`http://127.0.0.1:8080`): statements run there.
    /// Without it the shell runs its own session.
    #[arg(long)]
    server: Option<String>,
    /// The server's bearer token (its --auth-token).
    #[arg(long, env = "EDDY_AUTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Embedded: subtasks per keyed operator (default: number of cores).
    #[arg(long, short = 'p')]
    parallelism: Option<usize>,
}

/// Where statements run.
trait Backend {
    /// Runs one or more statements, printing what they did.
    fn run(&mut self, sql: &str, interrupted: &Interrupt) -> anyhow::Result<()>;
    /// A meta-command (`\jobs`); false if it is not one of its own.
    fn meta(&mut self, _command: &str) -> anyhow::Result<bool> {
        Ok(false)
    }
    /// The shell is closing.
    fn close(&mut self) {}
}

/// Ctrl-C while a statement runs: set by the signal handler, taken by the
/// statement, which stops what it runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

const HELP: &str = "\
statements end with ';' and may span lines
  SELECT ...            runs until it ends or Ctrl-C (embedded); reads a view at once (server)
  SUBSCRIBE v           follows a materialized view until Ctrl-C (server)
  \\jobs                 the session's jobs (embedded)
  \\q                    quit (Ctrl-D too)
";

/// `eddy sql`.
pub fn shell(args: SqlArgs) -> anyhow::Result<()> {
    let interrupt = Interrupt::default();
    let flag = interrupt.0.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Release))
        .context("cannot handle Ctrl-C")?;
    let mut backend: Box<dyn Backend> = match &args.server {
        Some(url) => Box::new(client::Remote::new(url, args.token.clone())?),
        None => Box::new(Embedded::new(
            args.parallelism.unwrap_or_else(crate::default_parallelism),
        )),
    };
    let mut editor = rustyline::DefaultEditor::new().context("cannot open the terminal")?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".eddy_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "eddy> "
        } else {
            "   -> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            // Ctrl-C at the prompt forgets what was typed.
            Err(ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read a line"),
        };
        let trimmed = line.trim();
        if statement.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            match trimmed {
                "\\q" | "\\quit" => break,
                "\\h" | "\\help" | "\\?" => print!("{HELP}"),
                other => {
                    if !backend.meta(other)? {
                        eprintln!("unknown command {other}; \\h lists them");
                    }
                }
            }
            continue;
        }
        if statement.is_empty() && matches!(trimmed, "quit" | "exit") {
            break;
        }
        if trimmed.is_empty() && statement.is_empty() {
            continue;
        }
        statement.push_str(&line);
        statement.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut statement);
        let _ = editor.add_history_entry(sql.trim_end());
        interrupt.take();
        if let Err(e) = backend.run(&sql, &interrupt) {
            eprintln!("error: {}", crate::error_chain(&e));
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    backend.close();
    Ok(())
}

/// An embedded session: jobs run in this process.
struct Embedded {
    session: Session,
    manager: Arc<JobManager>,
    state_root: PathBuf,
    /// Jobs started in the background, in order.
    jobs: Mutex<Vec<String>>,
}

impl Embedded {
    fn new(parallelism: usize) -> Self {
        let session = crate::new_session(parallelism);
        let state_root = std::env::temp_dir().join(format!("eddy-sql-{}", std::process::id()));
        let manager = Arc::new(JobManager::new(&state_root, session.build_env()));
        Self {
            session,
            manager,
            state_root,
            jobs: Mutex::new(Vec::new()),
        }
    }

    /// Runs a SELECT's job until it ends or Ctrl-C cancels it.
    fn foreground(&self, job: eddy_planner::Job, interrupt: &Interrupt) -> anyhow::Result<()> {
        let id = self.manager.submit(job)?;
        loop {
            let status = self.manager.status(&id)?;
            if !status.state.is_running() {
                if let JobState::Failed(e) = status.state {
                    anyhow::bail!("{e}");
                }
                eprintln!("({} rows)", status.metrics.rows_out());
                return Ok(());
            }
            if interrupt.take() {
                self.manager.cancel(&id)?;
                let status = self.manager.wait(&id)?;
                eprintln!("cancelled ({} rows)", status.metrics.rows_out());
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Backend for Embedded {
    fn run(&mut self, sql: &str, interrupt: &Interrupt) -> anyhow::Result<()> {
        let (outcomes, errors) = self.session.execute_all(sql);
        for e in &errors {
            eprint!("{}", e.render(sql, "input"));
        }
        for outcome in outcomes {
            match outcome {
                Outcome::Created(name) => println!("created {name}"),
                Outcome::Explain(text) | Outcome::Info(text) => print!("{text}"),
                Outcome::Job(job) if job.is_select => self.foreground(job, interrupt)?,
                Outcome::Job(job) => {
                    let id = self.manager.submit(job)?;
                    println!("started job {id} in the background (\\jobs lists jobs)");
                    self.jobs.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                }
            }
        }
        Ok(())
    }

    fn meta(&mut self, command: &str) -> anyhow::Result<bool> {
        if command != "\\jobs" {
            return Ok(false);
        }
        for id in self.jobs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let status = self.manager.status(id)?;
            let m = &status.metrics;
            println!(
                "{id}  {:?}  {} rows in, {} out",
                status.state,
                m.rows_in(),
                m.rows_out()
            );
        }
        Ok(true)
    }

    /// Background jobs stop after a final checkpoint.
    fn close(&mut self) {
        self.manager.stop_all();
        for job in self.manager.list() {
            let _ = self.manager.wait(&job.id);
        }
        let _ = std::fs::remove_dir_all(&self.state_root);
    }
}

/// Prints rows given as JSON objects under `columns` as an aligned table.
pub(crate) fn print_table(columns: &[String], rows: &[Value]) {
    let cell = |v: &Value| match v {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: &[String]| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        println!(" {}", padded.join(" | ").trim_end());
    };
    line(columns);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("-{}-", rule.join("-+-"));
    for r in &cells {
        line(r);
    }
    println!("({} rows)", rows.len());
}
