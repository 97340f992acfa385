//! Helpers shared by the integration tests (each test crate uses some).

#![allow(dead_code)]

pub mod channel;
pub mod kafka;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod registry;
pub mod server;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int8Type;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_connectors::{MemoryCollector, MemoryConnector};
use eddy_operators::metrics::JobMetrics;
use eddy_planner::{Outcome, Session, build};
use eddy_state::MemoryBackend;

/// The committed output of a file sink writing to directory `dir`: its
/// `part-*` files (in-progress parts are hidden files) concatenated in
/// name order, i.e. checkpoint order.
pub fn committed_parts(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part-"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(n)).unwrap())
        .collect()
}

/// The rows of `batches`, one string each (columns joined by ` | `),
/// sorted. A changelog (an `_op` column) is rendered as its net effect: the
/// rows it leaves in place; a retraction of a row that is not there fails.
pub fn render(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows: std::collections::BTreeMap<String, usize> = Default::default();
    for b in batches {
        let op = b.schema().index_of("_op").ok();
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != op)
            .map(|(_, c)| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..b.num_rows() {
            let text = fmts
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join(" | ");
            let code = op.map(|i| b.column(i).as_primitive::<Int8Type>().value(row));
            match code {
                // -U, -D: the row must be there to be taken away.
                Some(1 | 3) => {
                    let n = rows
                        .get_mut(&text)
                        .filter(|n| **n > 0)
                        .unwrap_or_else(|| panic!("retraction of a row never emitted: {text}"));
                    *n -= 1;
                }
                _ => *rows.entry(text).or_default() += 1,
            }
        }
    }
    rows.into_iter()
        .flat_map(|(row, n)| std::iter::repeat_n(row, n))
        .collect()
}

/// Runs `sql`, whose last statement is a SELECT, at `parallelism`, with
/// the functions eddy registers: the batches its sink received.
pub fn run_select(sql: &str, parallelism: usize) -> Vec<RecordBatch> {
    let mut session = Session::new(parallelism);
    for f in eddy_connectors::nexmark::functions() {
        session.register_function(f).unwrap();
    }
    run_in(session, sql)
}

/// Sends `session`'s bare SELECTs to a `memory` connector registered in it:
/// the rows they produce.
pub fn select_into_memory(session: &mut Session) -> MemoryCollector {
    let collector = MemoryCollector::default();
    session
        .register_connector(Arc::new(MemoryConnector {
            collector: collector.clone(),
        }))
        .unwrap();
    session.select_sink = [("connector".to_string(), "memory".to_string())]
        .into_iter()
        .collect();
    collector
}

/// Runs `sql`, whose last statement is a SELECT, in `session`: the batches
/// its sink received.
pub fn run_in(mut session: Session, sql: &str) -> Vec<RecordBatch> {
    let collector = select_into_memory(&mut session);
    let outcomes = session
        .execute(sql)
        .unwrap_or_else(|e| panic!("{}", e.render(sql, "case")));
    let Some(Outcome::Job(job)) = outcomes.into_iter().last() else {
        panic!("no job")
    };
    run_job(&session, &job);
    collector.batches()
}

/// Builds `job` with `session`'s connectors and functions and runs it to
/// its end, state in memory.
pub fn run_job(session: &Session, job: &eddy_planner::Job) {
    build(&job.graph, &session.build_env())
        .unwrap()
        .start(Arc::new(MemoryBackend::default()), JobMetrics::default())
        .unwrap()
        .join()
        .unwrap();
}

/// DataFusion's answer, in batch mode, to `sql` over `ctx`'s tables, as
/// [`render`] shows rows.
pub fn datafusion_answer(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let batches = runtime
        .block_on(async { ctx.sql(sql).await?.collect().await })
        .unwrap_or_else(|e| panic!("DataFusion: {e}\n{sql}"));
    render(&batches)
}

/// The highest checkpoint completed so far in a state directory, over all
/// its jobs (ids only grow, across runs too).
pub fn highest_checkpoint(state: &Path) -> u64 {
    let Ok(jobs) = std::fs::read_dir(state) else {
        return 0;
    };
    let mut highest = 0;
    for job in jobs.flatten() {
        let Ok(checkpoints) = std::fs::read_dir(job.path().join("checkpoints")) else {
            continue;
        };
        for c in checkpoints.flatten() {
            let name = c.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id
                && c.path().join("_eddy_checkpoint.json").exists()
            {
                highest = highest.max(id);
            }
        }
    }
    highest
}

/// How one run of a job that is killed on purpose ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Finished,
    Killed,
}

/// Runs `cmd` (an `eddy run` with its state in `state`, stderr piped)
/// once; with `kill_after`, kills it (SIGKILL) once it has completed that
/// many more checkpoints. A run that dies of SIGKILL or of SIGABRT (an
/// `EDDY_CRASH_AT` point) was killed; any other failure fails the test.
pub fn run_killed(mut cmd: std::process::Command, state: &Path, kill_after: Option<u64>) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    let before = highest_checkpoint(state);
    let mut child = cmd.spawn().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            if status.success() {
                return Ended::Finished;
            }
            let mut stderr = String::new();
            if let Some(pipe) = child.stderr.as_mut() {
                std::io::Read::read_to_string(pipe, &mut stderr).unwrap();
            }
            assert!(
                matches!(status.signal(), Some(9 | 6)),
                "eddy failed ({status}): {stderr}"
            );
            return Ended::Killed;
        }
        if kill_after.is_some_and(|n| highest_checkpoint(state) >= before + n) {
            child.kill().unwrap();
            child.wait().unwrap();
            return Ended::Killed;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// A seed for random kills, from the clock, printed so that a failure
/// can be told apart.
pub fn clock_seed() -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    seed
}

/// The next number of a small generator (a 64-bit LCG), upper bits.
pub fn next_random(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

/// `eddy run <dir>/job.sql <extra>` of `sql`, its stdout dropped and its
/// stderr piped.
pub fn eddy_job(sql: &str, dir: &Path, extra: &[&str]) -> std::process::Command {
    let file = dir.join("job.sql");
    std::fs::write(&file, sql).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.arg("run").arg(&file).args(extra);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// [`eddy_job`] with its state in `dir/state` and a checkpoint every
/// `interval`; and that state directory.
pub fn eddy_checkpointed(
    sql: &str,
    dir: &Path,
    interval: &str,
) -> (std::process::Command, std::path::PathBuf) {
    let state = dir.join("state");
    let cmd = eddy_job(
        sql,
        dir,
        &[
            "--checkpoint-interval",
            interval,
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    (cmd, state)
}

/// Runs `sql` (state in `dir/state`, a checkpoint every `interval`) until
/// it finishes, killing each of the first `killed_runs` runs (SIGKILL)
/// once it has completed 1 to `spread` more checkpoints, chosen at
/// random; returns how many runs were killed.
pub fn kill_until_done(
    sql: &str,
    dir: &Path,
    interval: &str,
    killed_runs: usize,
    spread: u64,
) -> usize {
    let mut rng = clock_seed();
    let mut kills = 0;
    for attempt in 0.. {
        assert!(attempt < 40, "the job did not finish in 40 runs");
        let kill_after = (attempt < killed_runs).then_some(1 + next_random(&mut rng) % spread);
        let (cmd, state) = eddy_checkpointed(sql, dir, interval);
        let ended = run_killed(cmd, &state, kill_after);
        eprintln!("run {attempt}: kill after {kill_after:?}: {ended:?}");
        match ended {
            Ended::Finished => break,
            Ended::Killed => kills += 1,
        }
    }
    kills
}

/// The rows a file dead-letter sink committed in directory `dir`.
pub fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    committed_parts(dir)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The settings of a job that rides out a server's absence: restarts from
/// its last checkpoint with backoff.
pub const RESTART_WITH_BACKOFF: &str = "SET 'restart-strategy.type' = 'exponential-delay';
SET 'restart-strategy.exponential-delay.initial-backoff' = '100 ms';
SET 'restart-strategy.exponential-delay.max-backoff' = '1 s';
";

/// Runs `sql` (a checkpoint every 50 ms), calls `disrupt` once two
/// checkpoints are complete (it stops and starts a server), and checks
/// that the job then restarts at least once and finishes.
pub fn disrupt_running_job(sql: &str, dir: &Path, disrupt: impl FnOnce()) {
    use std::time::{Duration, Instant};
    let (mut cmd, state) = eddy_checkpointed(sql, dir, "50ms");
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while highest_checkpoint(&state) < 2 {
        assert!(Instant::now() < deadline, "no checkpoint");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before the disruption"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    disrupt();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eddy failed: {stderr}");
    assert!(stderr.contains("restart"), "no restart: {stderr}");
}

/// Runs `cmd` (an `eddy run`), which must succeed; its stderr.
pub fn run_ok(mut cmd: std::process::Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "eddy failed: {stderr}");
    stderr
}
