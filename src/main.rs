//! The `eddy` command: run SQL files, serve jobs, a SQL shell, benchmark
//! Nexmark queries.

mod bench;
mod server;
mod sql;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use eddy_engine::{JobId, JobManager, JobState, JobStatus};
use eddy_operators::metrics::CheckpointStats;
use eddy_operators::source::LagUnit;
use eddy_planner::{Job, Outcome, Session};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "eddy", version, about = "Eddy: a streaming SQL engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the statements of a SQL file; bounded sources end the jobs.
    Run {
        /// The SQL file.
        file: PathBuf,
        /// Subtasks per keyed operator (default: number of cores).
        #[arg(long, short = 'p')]
        parallelism: Option<usize>,
        /// How a bare SELECT prints its rows.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Where jobs keep their state and checkpoints. A run with the
        /// same directory resumes each job from its latest complete
        /// checkpoint (default: a temporary directory, removed when the
        /// run ends).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// How often jobs checkpoint, e.g. `10s`, `500ms`; `0` for only at
        /// the end and on Ctrl-C / SIGTERM. A SET of
        /// 'execution.checkpointing.interval' in the file wins.
        #[arg(long, value_parser = parse_interval)]
        checkpoint_interval: Option<i64>,
        /// No progress bar (there is none either when stderr is not a
        /// terminal); the summary line at the end stays.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Run a server: jobs that outlive the terminal, behind an HTTP API.
    Server(server::ServerArgs),
    /// An interactive SQL shell, on a server (--server URL) or embedded.
    Sql(sql::SqlArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Run a built-in Nexmark query over the built-in generator.
    Nexmark(bench::NexmarkArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            file,
            parallelism,
            format,
            state_dir,
            checkpoint_interval,
            quiet,
        } => run_file(
            &file,
            RunOptions {
                parallelism,
                format,
                state_dir,
                checkpoint_interval,
                quiet,
            },
        ),
        Command::Server(args) => server::serve(args).map(|()| ExitCode::SUCCESS),
        Command::Sql(args) => sql::shell(args).map(|()| ExitCode::SUCCESS),
        Command::Bench {
            bench: BenchCommand::Nexmark(args),
        } => bench::nexmark(&args).map(|()| ExitCode::SUCCESS),
    };
    if ABORTED.load(Ordering::Acquire) {
        return ExitCode::from(130);
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes, `outer: inner: ...`, each cause said once:
/// an error whose message already ends with its cause's (thiserror's
/// `"...: {source}"`) is not followed by it again.
pub(crate) fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let message = cause.to_string();
        if text.ends_with(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDDY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

pub(crate) fn parse_interval(text: &str) -> Result<i64, String> {
    eddy_connectors::parse_duration_ms(text)
        .ok_or_else(|| format!("cannot read the duration '{text}' (write e.g. 10s or 500ms)"))
}

/// A session with the functions eddy ships beyond the built-in ones,
/// registered through the same API an embedding program uses: the Nexmark
/// benchmark's `count_char`.
pub(crate) fn new_session(parallelism: usize) -> Session {
    let mut session = Session::new(parallelism);
    for f in eddy_connectors::nexmark::functions() {
        if let Err(e) = session.register_function(f) {
            // Only a second registration of the same name can fail.
            tracing::warn!("{e}");
        }
    }
    session
}

pub(crate) fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `eddy run`'s options.
struct RunOptions {
    parallelism: Option<usize>,
    format: Format,
    state_dir: Option<PathBuf>,
    checkpoint_interval: Option<i64>,
    quiet: bool,
}

/// `eddy run`: plan every statement, then run every job to completion.
/// A SQL error exits with status 2 and runs nothing.
fn run_file(path: &Path, options: RunOptions) -> anyhow::Result<ExitCode> {
    let RunOptions {
        parallelism,
        format,
        state_dir,
        checkpoint_interval,
        quiet,
    } = options;
    let sql =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut session = new_session(parallelism.unwrap_or_else(default_parallelism));
    if let Some(ms) = checkpoint_interval {
        session.settings.checkpoint_interval_ms = ms;
    }
    if let Format::Json = format {
        session.select_sink.insert("format".into(), "json".into());
    }
    let (outcomes, errors) = session.execute_all(&sql);
    if !errors.is_empty() {
        let origin = path.display().to_string();
        let rendered: Vec<String> = errors.iter().map(|e| e.render(&sql, &origin)).collect();
        eprint!("{}", rendered.join("\n"));
        if errors.len() > 1 {
            eprintln!("\n{} errors; nothing was run", errors.len());
        }
        return Ok(ExitCode::from(2));
    }
    let mut jobs = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Created(name) => tracing::info!("created {name}"),
            Outcome::Explain(text) | Outcome::Info(text) => print!("{text}"),
            Outcome::Job(job) => jobs.push(job),
        }
    }
    if jobs.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    // A script's INSERTs run as one job reading each source once, as a
    // statement set does; bare SELECTs print one after another.
    let (mut jobs, writes): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.is_select);
    jobs.extend(Job::merge(writes));
    let (state_root, temporary) = match state_dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("eddy-{}", std::process::id())),
            true,
        ),
    };
    let started = Instant::now();
    let result = run_jobs(jobs, &session, &state_root, None, !quiet);
    if temporary {
        let _ = std::fs::remove_dir_all(&state_root);
    }
    let report = result?;
    eprintln!("{}", summary(&report.totals, started.elapsed()));
    Ok(ExitCode::SUCCESS)
}

/// Starts every job through a job manager, shows live progress on a
/// terminal, waits for all. With `stop_after`, the jobs are stopped (as by
/// Ctrl-C) after that long.
pub(crate) fn run_jobs(
    jobs: Vec<Job>,
    session: &Session,
    state_root: &Path,
    stop_after: Option<Duration>,
    show_progress: bool,
) -> anyhow::Result<RunReport> {
    let manager = Arc::new(JobManager::new(state_root, session.build_env()));
    let started = Instant::now();
    let dead_letters = jobs.iter().any(|j| {
        j.graph
            .edges
            .iter()
            .any(|e| e.port == eddy_operators::operator::LATE_PORT)
    });
    let stop_requested = stop_on_signal(&manager);
    if let Some(after) = stop_after {
        let (manager, stop_requested) = (manager.clone(), stop_requested.clone());
        std::thread::spawn(move || {
            std::thread::sleep(after);
            stop_requested.store(true, Ordering::Release);
            manager.stop_all();
        });
    }
    // Jobs into sinks run side by side; bare SELECTs print to the terminal,
    // so they run one after another, in statement order.
    let (selects, others): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.is_select);
    let mut ids = Vec::new();
    for job in others {
        ids.push(submit(&manager, job)?);
    }
    let done = Arc::new(AtomicBool::new(false));
    // The bar shares the terminal with rows a SELECT prints: show it only
    // when the two do not mix.
    let show_progress = show_progress
        && std::io::stderr().is_terminal()
        && (selects.is_empty() || !std::io::stdout().is_terminal());
    let reporter = show_progress.then(|| {
        let (done, manager) = (done.clone(), manager.clone());
        std::thread::spawn(move || progress(&done, &manager, started))
    });
    let mut first_error = None;
    let mut statuses = Vec::new();
    for job in selects {
        let id = submit(&manager, job)?;
        let status = manager.wait(&id)?;
        let failed = match &status.state {
            // `eddy run q.sql | head`: the reader has what it wanted.
            JobState::OutputClosed => true,
            JobState::Failed(e) => {
                first_error.get_or_insert(anyhow::anyhow!("{id} failed: {e}"));
                true
            }
            _ => false,
        };
        statuses.push(status);
        if failed {
            break;
        }
    }
    for id in &ids {
        let status = manager.wait(id)?;
        if let JobState::Failed(e) = &status.state {
            first_error.get_or_insert(anyhow::anyhow!("{id} failed: {e}"));
        }
        statuses.push(status);
    }
    done.store(true, Ordering::Relaxed);
    if let Some(r) = reporter {
        let _ = r.join();
    }
    let totals = Totals::of(&statuses);
    tracing::info!(
        rows_in = totals.rows_in,
        rows_out = totals.rows_out,
        late_rows = totals.late_rows,
        bad_records_dropped = totals.bad_dropped,
        bad_records_dead_lettered = totals.bad_dead_lettered,
        expired_keys = totals.expired_keys,
        seconds = started.elapsed().as_secs_f64(),
        "finished"
    );
    for status in &statuses {
        if status.restarts > 0 {
            eprintln!(
                "note: {} was restarted {} time(s) after failures (their causes are in the log)",
                status.id, status.restarts
            );
        }
        if let JobState::AlreadyFinished { checkpoint } = status.state {
            eprintln!(
                "note: {} already finished (checkpoint {checkpoint} in {}); nothing to do",
                status.id,
                status.state_dir.display()
            );
        }
    }
    if totals.late_rows > 0 {
        let fate = if dead_letters {
            "were dropped or written to the dead-letter sink"
        } else {
            "were dropped"
        };
        eprintln!(
            "note: {} late rows {fate} (their windows had already fired)",
            totals.late_rows
        );
    }
    if totals.bad_dropped > 0 {
        eprintln!(
            "note: {} bad records were dropped ('bad-data' = 'drop')",
            totals.bad_dropped
        );
    }
    if totals.bad_dead_lettered > 0 {
        eprintln!(
            "note: {} bad records were sent to the dead-letter sink ('bad-data' = 'dead-letter')",
            totals.bad_dead_lettered
        );
    }
    let stopped = stop_requested.load(Ordering::Acquire) && first_error.is_none();
    if stopped {
        eprintln!(
            "stopped after a final checkpoint; run again with --state-dir {} to resume",
            state_root.display()
        );
    }
    let restore_ms = statuses
        .iter()
        .find_map(|s| s.resumed_from.zip(s.restore_ms));
    if let Some((id, ms)) = restore_ms {
        tracing::info!(checkpoint = id, restore_ms = ms, "state restored");
    }
    first_error.map_or(
        Ok(RunReport {
            totals,
            restore_ms,
            stopped,
        }),
        Err,
    )
}

/// Submits a job; a failure to start it names the job.
fn submit(manager: &JobManager, job: Job) -> anyhow::Result<JobId> {
    let name = job.name.clone();
    manager
        .submit(job)
        .with_context(|| format!("cannot start {name}"))
}

/// What [`run_jobs`] reports.
#[derive(Debug)]
pub(crate) struct RunReport {
    pub totals: Totals,
    /// Resumed from this checkpoint, and the ms from the start until every
    /// task had opened (restored its state).
    pub restore_ms: Option<(u64, u64)>,
    /// Stopped (signal or `stop_after`) after a final checkpoint.
    pub stopped: bool,
}

/// The metrics of several jobs, added up.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    pub rows_in: u64,
    pub rows_out: u64,
    pub late_rows: u64,
    /// Bad records skipped, and sent to dead-letter sinks (`'bad-data'`).
    pub bad_dropped: u64,
    pub bad_dead_lettered: u64,
    pub expired_keys: u64,
    pub spilled_bytes: u64,
    pub progress: (u64, u64),
    /// Bytes read by sources that count them (files).
    pub bytes_read: u64,
    /// The highest watermark (ms since the epoch), 0 before any.
    pub watermark: u64,
    /// The latest completed checkpoint of any job.
    pub checkpoints: CheckpointStats,
    /// How far sources that know it are behind their input's end: bytes
    /// (files), records (topics); `None` where no source says.
    pub lag_bytes: Option<u64>,
    pub lag_records: Option<u64>,
}

impl Totals {
    fn of(statuses: &[JobStatus]) -> Self {
        let mut t = Totals::default();
        for s in statuses {
            let m = &s.metrics;
            t.rows_in += m.rows_in();
            t.rows_out += m.rows_out();
            t.late_rows += m.late_rows();
            let (dropped, dead_lettered) = m.bad_records();
            t.bad_dropped += dropped;
            t.bad_dead_lettered += dead_lettered;
            t.expired_keys += m.expired_keys();
            t.spilled_bytes += m.spilled_bytes();
            let (done, total) = m.progress();
            t.progress = (t.progress.0 + done, t.progress.1 + total);
            t.bytes_read += m.bytes_read();
            t.watermark = t.watermark.max(m.watermark());
            for (lag, unit) in m.operators().iter().filter_map(|o| o.source_lag) {
                let sum = match unit {
                    LagUnit::Bytes => &mut t.lag_bytes,
                    LagUnit::Records => &mut t.lag_records,
                };
                *sum = Some(sum.unwrap_or(0) + lag);
            }
            let c = m.checkpoints();
            if c.id >= t.checkpoints.id {
                let max = t.checkpoints.max_duration_ms.max(c.max_duration_ms);
                let completed = t.checkpoints.completed + c.completed;
                t.checkpoints = CheckpointStats {
                    completed,
                    max_duration_ms: max,
                    ..c
                };
            }
        }
        t
    }
}

/// The progress bar's message: what `now` holds, with rates since `before`
/// (`seconds` ago).
fn progress_message(now: &Totals, before: &Totals, seconds: f64) -> String {
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds.max(1e-3);
    let mut parts = vec![format!(
        "{} rows ({}/s)",
        count(now.rows_in),
        count(rate(now.rows_in, before.rows_in) as u64)
    )];
    if now.bytes_read > 0 {
        parts.push(format!(
            "{:.0} MB ({:.0} MB/s)",
            now.bytes_read as f64 / 1e6,
            rate(now.bytes_read, before.bytes_read) / 1e6
        ));
    }
    if let Some(time) = event_time(now.watermark) {
        parts.push(format!("event time {time}"));
    }
    // Catching up on a followed input, then following it.
    match (now.lag_bytes, now.lag_records) {
        (Some(0) | None, Some(0) | None) if now.lag_bytes.or(now.lag_records).is_some() => {
            parts.push("caught up".to_string());
        }
        (bytes, records) => {
            if let Some(b) = bytes.filter(|b| *b > 0) {
                parts.push(format!("{:.1} MB behind", b as f64 / 1e6));
            }
            if let Some(r) = records.filter(|r| *r > 0) {
                parts.push(format!("{} records behind", count(r)));
            }
        }
    }
    parts.push(format!("{} out", count(now.rows_out)));
    parts.push(format!("{} late", count(now.late_rows)));
    let bad = now.bad_dead_lettered + now.bad_dropped;
    if bad > 0 {
        parts.push(format!(
            "{} dead letters, {} bad dropped",
            count(now.bad_dead_lettered),
            count(now.bad_dropped)
        ));
    }
    let chk = now.checkpoints;
    if chk.completed > 0 {
        parts.push(format!(
            "checkpoint {} ({} ms, {:.1} MB, aligned in {} ms)",
            chk.id,
            chk.duration_ms,
            chk.size_bytes as f64 / 1e6,
            chk.alignment_ms
        ));
    }
    if now.spilled_bytes > 0 {
        parts.push(format!("{:.0} MB spilled", now.spilled_bytes as f64 / 1e6));
    }
    if now.expired_keys > 0 {
        parts.push(format!("{} idle keys expired", count(now.expired_keys)));
    }
    parts.join(", ")
}

/// The line `eddy run` ends with, progress bar or not.
fn summary(t: &Totals, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let mut line = format!(
        "done in {secs:.2} s: {} rows read ({}/s)",
        count(t.rows_in),
        count((t.rows_in as f64 / secs.max(1e-3)) as u64)
    );
    if t.bytes_read > 0 {
        line += &format!(", {:.0} MB", t.bytes_read as f64 / 1e6);
    }
    line += &format!(", {} rows written", count(t.rows_out));
    if let Some(time) = event_time(t.watermark) {
        line += &format!(", event time up to {time}");
    }
    // Late rows and bad records get notes of their own below it.
    if t.late_rows > 0 {
        line += &format!(", {} late", count(t.late_rows));
    }
    if t.bad_dead_lettered > 0 {
        line += &format!(", {} dead letters", count(t.bad_dead_lettered));
    }
    line
}

/// A watermark as a UTC date and time; `None` before the first and for
/// the end of input.
fn event_time(watermark_ms: u64) -> Option<String> {
    if watermark_ms == 0 || watermark_ms >= i64::MAX as u64 / 2 {
        return None;
    }
    let t = chrono::DateTime::from_timestamp_millis(watermark_ms as i64)?;
    Some(t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// `1234567` as `1,234,567`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Set by a second Ctrl-C or SIGTERM: `eddy` exits with status 130.
static ABORTED: AtomicBool = AtomicBool::new(false);

/// How long cancelled jobs get to end before the process exits anyway.
const ABORT_GRACE: Duration = Duration::from_secs(3);

/// Ctrl-C or SIGTERM asks every job to stop after a checkpoint; a second
/// one cancels them (no checkpoint) and exits with status 130 once their
/// threads are done, or after [`ABORT_GRACE`] whatever they are doing.
/// (Exiting while tasks still run would run RocksDB's C++ destructors under
/// them, and die of a signal.)
fn stop_on_signal(manager: &Arc<JobManager>) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, manager) = (stop.clone(), manager.clone());
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::AcqRel) {
            eprintln!("stopping now, without a checkpoint");
            ABORTED.store(true, Ordering::Release);
            for job in manager.list() {
                let _ = manager.cancel(&job.id);
            }
            std::thread::spawn(|| {
                std::thread::sleep(ABORT_GRACE);
                std::process::exit(130);
            });
            return;
        }
        eprintln!("stopping after a checkpoint (press Ctrl-C again to stop at once)");
        manager.stop_all();
    });
    if let Err(e) = installed {
        tracing::warn!(error = %e, "cannot handle Ctrl-C / SIGTERM");
    }
    stop
}

/// Live progress on stderr: a bar while bounded sources replay (how much
/// of their input is read, and an ETA), with rows and bytes read and their
/// rates, the event time reached, rows out, late rows and dead letters.
fn progress(done: &AtomicBool, manager: &JobManager, started: Instant) {
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {percent:>3}% ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    let mut last = (Instant::now(), Totals::default());
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let t = Totals::of(&manager.list());
        let (work_done, total) = t.progress;
        bar.set_length(total.max(1));
        bar.set_position(work_done.min(total));
        let elapsed = last.0.elapsed();
        if elapsed >= Duration::from_secs(1) {
            bar.set_message(progress_message(&t, &last.1, elapsed.as_secs_f64()));
            last = (Instant::now(), t);
        }
    }
    bar.finish_and_clear();
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "progress reporter stopped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bar says how far a followed input is behind while catching up,
    /// and that it caught up once nothing is left.
    #[test]
    fn the_progress_message_shows_the_catch_up() {
        let behind = Totals {
            rows_in: 10,
            lag_bytes: Some(12_500_000),
            lag_records: Some(1_234),
            ..Totals::default()
        };
        let message = progress_message(&behind, &Totals::default(), 1.0);
        assert!(message.contains("12.5 MB behind"), "{message}");
        assert!(message.contains("1,234 records behind"), "{message}");
        let caught_up = Totals {
            lag_bytes: Some(0),
            ..behind
        };
        let caught_up = Totals {
            lag_records: None,
            ..caught_up
        };
        let message = progress_message(&caught_up, &Totals::default(), 1.0);
        assert!(message.contains("caught up"), "{message}");
        assert!(!message.contains("behind"), "{message}");
        let unknown = progress_message(&Totals::default(), &Totals::default(), 1.0);
        assert!(
            !unknown.contains("caught up") && !unknown.contains("behind"),
            "{unknown}"
        );
    }
}
