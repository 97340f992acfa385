//! The `eddy` command: run SQL files, benchmark Nexmark queries.

mod bench;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use eddy_operators::checkpoint::{Checkpointing, publish};
use eddy_operators::metrics::JobMetrics;
use eddy_operators::runtime::RunningDataflow;
use eddy_planner::{BuildEnv, Job, Outcome, Session, build};
use eddy_state::RocksDbOptions;
use eddy_state::checkpoint::CheckpointStore;

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
    },
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
        } => run_file(&file, parallelism, format, state_dir, checkpoint_interval),
        Command::Bench {
            bench: BenchCommand::Nexmark(args),
        } => bench::nexmark(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
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

fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `eddy run`: plan every statement, then run every job to completion.
/// A SQL error exits with status 2 and runs nothing.
fn run_file(
    path: &Path,
    parallelism: Option<usize>,
    format: Format,
    state_dir: Option<PathBuf>,
    checkpoint_interval: Option<i64>,
) -> anyhow::Result<ExitCode> {
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
    let (state_root, temporary) = match state_dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("eddy-{}", std::process::id())),
            true,
        ),
    };
    let result = run_jobs(jobs, &session, &state_root, None);
    if temporary {
        let _ = std::fs::remove_dir_all(&state_root);
    }
    result.map(|_| ExitCode::SUCCESS)
}

/// Starts every job, shows live progress on a terminal, waits for all.
/// With `stop_after`, the jobs are stopped (as by Ctrl-C) after that long.
pub(crate) fn run_jobs(
    jobs: Vec<Job>,
    session: &Session,
    state_root: &Path,
    stop_after: Option<Duration>,
) -> anyhow::Result<RunReport> {
    let env = BuildEnv {
        functions: session.functions().clone(),
        memory: None,
    };
    let metrics = JobMetrics::default();
    let started = Instant::now();
    let started_unix_ms = eddy_operators::metrics::unix_ms();
    let dead_letters = jobs.iter().any(|j| {
        j.graph
            .edges
            .iter()
            .any(|e| e.port == eddy_operators::operator::LATE_PORT)
    });
    let stop = stop_signal();
    if let Some(after) = stop_after {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            stop.store(true, Ordering::Release);
        });
    }
    let resumed = std::cell::Cell::new(None);
    let start = |job: &Job| -> anyhow::Result<Option<RunningDataflow>> {
        let dataflow =
            build(&job.graph, &env).with_context(|| format!("cannot build {}", job.name))?;
        let Some(checkpointing) = recover(job, &state_root.join(&job.name), &stop)? else {
            return Ok(None);
        };
        if let Some(id) = checkpointing.restored {
            resumed.set(Some(id));
        }
        let state = Arc::new(checkpointing.db.clone());
        Ok(Some(dataflow.start_with(
            state,
            metrics.clone(),
            Some(checkpointing),
        )?))
    };
    // Jobs into sinks run side by side; bare SELECTs print to the terminal,
    // so they run one after another, in statement order.
    let (selects, others): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.is_select);
    let mut running = Vec::new();
    for job in &others {
        if let Some(r) = start(job)? {
            running.push((job.name.clone(), r));
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    // The bar shares the terminal with rows a SELECT prints: show it only
    // when the two do not mix.
    let show_progress =
        std::io::stderr().is_terminal() && (selects.is_empty() || !std::io::stdout().is_terminal());
    let reporter = show_progress.then(|| {
        let (done, metrics) = (done.clone(), metrics.clone());
        std::thread::spawn(move || progress(&done, &metrics, started))
    });
    let mut first_error = None;
    for job in &selects {
        let Some(r) = start(job)? else { continue };
        match r.join() {
            // `eddy run q.sql | head`: the reader has what it wanted.
            Err(e) if e.is_output_closed() => break,
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("{} failed: {e}", job.name));
                break;
            }
            Ok(()) => {}
        }
    }
    for (name, job) in running {
        if let Err(e) = job.join() {
            first_error.get_or_insert(anyhow::anyhow!("{name} failed: {e}"));
        }
    }
    done.store(true, Ordering::Relaxed);
    if let Some(r) = reporter {
        let _ = r.join();
    }
    tracing::info!(
        rows_in = metrics.rows_in(),
        rows_out = metrics.rows_out(),
        late_rows = metrics.late_rows(),
        expired_keys = metrics.expired_keys(),
        seconds = started.elapsed().as_secs_f64(),
        "finished"
    );
    if metrics.late_rows() > 0 {
        let fate = if dead_letters {
            "were dropped or written to the dead-letter sink"
        } else {
            "were dropped"
        };
        eprintln!(
            "note: {} late rows {fate} (their windows had already fired)",
            metrics.late_rows()
        );
    }
    let stopped = stop.load(Ordering::Acquire) && first_error.is_none();
    if stopped {
        eprintln!(
            "stopped after a final checkpoint; run again with --state-dir {} to resume",
            state_root.display()
        );
    }
    let restore_ms = resumed.get().map(|id| {
        let ms = metrics.opened_unix_ms().saturating_sub(started_unix_ms);
        tracing::info!(checkpoint = id, restore_ms = ms, "state restored");
        (id, ms)
    });
    first_error.map_or(
        Ok(RunReport {
            metrics,
            restore_ms,
            stopped,
        }),
        Err,
    )
}

/// What [`run_jobs`] reports.
#[derive(Debug)]
pub(crate) struct RunReport {
    pub metrics: JobMetrics,
    /// Resumed from this checkpoint, and the ms from the start until every
    /// task had opened (restored its state).
    pub restore_ms: Option<(u64, u64)>,
    /// Stopped (signal or `stop_after`) after a final checkpoint.
    pub stopped: bool,
}

/// Ctrl-C or SIGTERM asks every job to stop after a checkpoint; a second
/// one exits at once.
fn stop_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::AcqRel) {
            eprintln!("stopping now, without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("stopping after a checkpoint (press Ctrl-C again to stop at once)");
    });
    if let Err(e) = installed {
        tracing::warn!(error = %e, "cannot handle Ctrl-C / SIGTERM");
    }
    stop
}

/// Prepares a job's state from `dir`: the newest complete checkpoint there
/// (falling back past damaged ones, each reported), its commits redone,
/// the live database rebuilt from it. `None`: that checkpoint recorded the
/// job as finished, so there is nothing to run.
fn recover(job: &Job, dir: &Path, stop: &Arc<AtomicBool>) -> anyhow::Result<Option<Checkpointing>> {
    let store = CheckpointStore::new(dir, job.checkpoints_retained)
        .with_context(|| format!("cannot use state directory {}", dir.display()))?;
    let recovered = store
        .latest()
        .with_context(|| format!("cannot recover {}", job.name))?;
    check_plan(job, dir, recovered.as_ref().map(|r| r.manifest.id))?;
    if let Some(r) = &recovered {
        for damage in &r.skipped {
            eprintln!(
                "warning: {damage}; {} falls back to checkpoint {}",
                job.name, r.manifest.id
            );
        }
        publish(&r.manifest.commits).with_context(|| {
            format!("cannot publish the output of checkpoint {}", r.manifest.id)
        })?;
        if r.manifest.finished {
            eprintln!(
                "note: {} already finished (checkpoint {} in {}); nothing to do",
                job.name,
                r.manifest.id,
                dir.display()
            );
            return Ok(None);
        }
        tracing::info!(job = %job.name, checkpoint = r.manifest.id, "resuming from checkpoint");
    }
    let db = store
        .restore(recovered.as_ref(), RocksDbOptions::default())
        .with_context(|| format!("cannot open state in {}", dir.display()))?;
    tracing::info!(job = %job.name, state = %dir.display(), "starting");
    let interval = u64::try_from(job.checkpoint_interval_ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    Ok(Some(Checkpointing {
        store: Arc::new(store),
        db,
        interval,
        restored: recovered.map(|r| r.manifest.id),
        stop: stop.clone(),
    }))
}

/// Where a job's state directory records the plan its state belongs to.
const PLAN_FILE: &str = "plan.json";

/// Refuses to resume a job from state another plan wrote (its SQL changed:
/// other operators, columns or windows would read that state wrong), and
/// records the plan of a job that starts afresh. Parallelism, cache size
/// and state time-to-live may change between runs.
fn check_plan(job: &Job, dir: &Path, checkpoint: Option<u64>) -> anyhow::Result<()> {
    let mut shape = serde_json::to_value(&job.graph)?;
    strip_keys(&mut shape, &["parallelism", "cache_bytes", "state_ttl_ms"]);
    // Between subtasks of different counts a forward edge becomes a
    // gather; what flows along it is the same.
    if let Some(edges) = shape.get_mut("edges").and_then(|e| e.as_array_mut()) {
        for edge in edges {
            if edge.get("kind").and_then(|k| k.as_str()) == Some("Gather") {
                edge["kind"] = serde_json::Value::from("Forward");
            }
        }
    }
    let path = dir.join(PLAN_FILE);
    if let (Some(id), Ok(text)) = (checkpoint, std::fs::read_to_string(&path)) {
        let stored: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if stored != shape {
            anyhow::bail!(
                "{} is not the job that wrote checkpoint {id} in {}: its plan changed (see {}), so its state would be read wrong. Run it with the SQL it started with, or with a new --state-dir",
                job.name,
                dir.display(),
                path.display()
            );
        }
        return Ok(());
    }
    let tmp = dir.join(format!("{PLAN_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(&shape)?)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Removes every member named in `keys`, at any depth.
fn strip_keys(value: &mut serde_json::Value, keys: &[&str]) {
    match value {
        serde_json::Value::Object(map) => {
            for k in keys {
                map.remove(*k);
            }
            map.values_mut().for_each(|v| strip_keys(v, keys));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip_keys(v, keys)),
        _ => {}
    }
}

/// Live progress on stderr: a bar while bounded sources replay (how much
/// of their input is read), with rows in and out, late rows and the rate.
fn progress(done: &AtomicBool, metrics: &JobMetrics, started: Instant) {
    let bar = indicatif::ProgressBar::new(0);
    let style =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {percent:>3}% {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    let mut last = (Instant::now(), 0u64);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let (work_done, total) = metrics.progress();
        bar.set_length(total.max(1));
        bar.set_position(work_done.min(total));
        let rows = metrics.rows_in();
        if last.0.elapsed() >= Duration::from_secs(1) {
            let rate = (rows - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), rows);
            let chk = metrics.checkpoints();
            let checkpoint = if chk.completed > 0 {
                format!(
                    ", checkpoint {} ({} ms, {:.1} MB, aligned in {} ms)",
                    chk.id,
                    chk.duration_ms,
                    chk.size_bytes as f64 / 1e6,
                    chk.alignment_ms
                )
            } else {
                String::new()
            };
            let spilled = match metrics.spilled_bytes() {
                0 => String::new(),
                b => format!(", {:.0} MB spilled", b as f64 / 1e6),
            };
            let expired = match metrics.expired_keys() {
                0 => String::new(),
                n => format!(", {n} idle keys expired"),
            };
            bar.set_message(format!(
                "{rows} rows in ({rate:.0}/s), {} out, {} late{checkpoint}{spilled}{expired}",
                metrics.rows_out(),
                metrics.late_rows()
            ));
        }
    }
    bar.finish_and_clear();
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "progress reporter stopped"
    );
}
