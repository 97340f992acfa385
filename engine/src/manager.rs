//! The job manager: owns running jobs, each with its own metrics, stop
//! request and outcome.
//!
//! ```text
//!  submit(job) ─► state dir: recover (commit the restored checkpoint, check the plan)
//!              ─► build ─► start tasks + checkpoint coordinator ─► a waiter thread joins them
//!  status / list: state, metrics      stop: final checkpoint, then end      cancel: end now
//!  wait(id): the outcome (finished, stopped, cancelled, or failed with the subtask and message)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use eddy_operators::checkpoint::CheckpointHandle;
use eddy_operators::metrics::JobMetrics;
use eddy_operators::runtime::RunningDataflow;
use eddy_planner::{BuildEnv, Job, build};

use crate::recovery::{Recovery, prepare, read_job};
use crate::{EngineError, Result};

/// A job's name, unique within a manager.
pub type JobId = String;

/// Where a job stands.
#[derive(Debug, Clone)]
pub enum JobState {
    Running,
    /// The input ended and every output was committed.
    Finished,
    /// Stopped after a final checkpoint: it resumes from there.
    Stopped,
    /// Cancelled without a checkpoint.
    Cancelled,
    /// The reader of its output went away (`eddy run q.sql | head`).
    OutputClosed,
    /// A subtask failed: the error names it.
    Failed(Arc<eddy_operators::OperatorError>),
    /// Its state directory recorded it as finished: nothing was run.
    AlreadyFinished {
        checkpoint: u64,
    },
}

impl JobState {
    pub fn is_running(&self) -> bool {
        matches!(self, JobState::Running)
    }
}

/// A job as `status` and `list` show it.
#[derive(Debug, Clone)]
pub struct JobStatus {
    pub id: JobId,
    pub state: JobState,
    /// The checkpoint it resumed from, if any.
    pub resumed_from: Option<u64>,
    /// How long restoring its state took (until every task had opened).
    pub restore_ms: Option<u64>,
    pub metrics: JobMetrics,
    pub state_dir: PathBuf,
    /// How often it was restarted after a failure.
    pub restarts: u32,
}

/// One job the manager owns.
struct Entry {
    job: Job,
    metrics: JobMetrics,
    /// A stop request: a final checkpoint, then the end.
    stop: Arc<AtomicBool>,
    /// The running tasks' handle: cancels them (replaced at a restart).
    tasks: Mutex<Option<CheckpointHandle>>,
    state: Mutex<JobState>,
    done: Condvar,
    resumed_from: Option<u64>,
    started_unix_ms: u64,
    state_dir: PathBuf,
    /// Restarts after failures so far.
    restarts: AtomicU32,
}

impl Entry {
    fn set_state(&self, state: JobState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        self.done.notify_all();
    }

    fn status(&self) -> JobStatus {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let opened = self.metrics.opened_unix_ms();
        JobStatus {
            id: self.job.name.clone(),
            restore_ms: self
                .resumed_from
                .filter(|_| opened > 0)
                .map(|_| opened.saturating_sub(self.started_unix_ms)),
            state,
            resumed_from: self.resumed_from,
            metrics: self.metrics.clone(),
            state_dir: self.state_dir.clone(),
            restarts: self.restarts.load(Ordering::Acquire),
        }
    }
}

/// Runs jobs: see the module docs.
#[derive(Debug)]
pub struct JobManager {
    state_root: PathBuf,
    env: BuildEnv,
    jobs: Mutex<BTreeMap<JobId, Arc<Entry>>>,
    /// [`Self::stop_all`] was called: jobs submitted since stop too.
    stopping: AtomicBool,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("job", &self.job.name)
            .finish_non_exhaustive()
    }
}

impl JobManager {
    /// A manager keeping each job's state under `state_root/<job>/`,
    /// building with `env`'s functions and connectors.
    pub fn new(state_root: impl Into<PathBuf>, env: BuildEnv) -> Self {
        Self {
            state_root: state_root.into(),
            env,
            jobs: Mutex::new(BTreeMap::new()),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<JobId, Arc<Entry>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>> {
        self.jobs()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::UnknownJob(id.to_string()))
    }

    /// Starts `job` from its state directory (resuming from its newest
    /// checkpoint there, if any). Returns at once; [`Self::wait`] waits.
    /// Damaged checkpoints skipped on the way are logged. A job that fails
    /// is restarted from its last checkpoint as its restart strategy says.
    pub fn submit(&self, job: Job) -> Result<JobId> {
        let id = job.name.clone();
        for use_of in job.graph.processing_time_uses() {
            tracing::warn!(job = %id, "a replay will not give live's answer: {use_of}");
        }
        if self
            .jobs()
            .get(&id)
            .is_some_and(|e| e.status().state.is_running())
        {
            return Err(EngineError::AlreadyRunning(id));
        }
        let dir = self.state_root.join(&job.name);
        let stop = Arc::new(AtomicBool::new(self.stopping.load(Ordering::Acquire)));
        let metrics = JobMetrics::new(&id);
        let started_unix_ms = eddy_operators::metrics::unix_ms();
        let (running, state, resumed_from) = match launch(&self.env, &job, &dir, &stop, &metrics)? {
            Launched::AlreadyFinished(checkpoint) => (
                None,
                JobState::AlreadyFinished { checkpoint },
                Some(checkpoint),
            ),
            Launched::Running(running, restored) => (Some(running), JobState::Running, restored),
        };
        let entry = Arc::new(Entry {
            tasks: Mutex::new(running.as_ref().map(RunningDataflow::handle)),
            job,
            metrics,
            stop,
            state: Mutex::new(state),
            done: Condvar::new(),
            resumed_from,
            started_unix_ms,
            state_dir: dir,
            restarts: AtomicU32::new(0),
        });
        self.jobs().insert(id.clone(), entry.clone());
        let Some(running) = running else {
            return Ok(id);
        };
        // A stop_all between the flag's first reading and now reaches the
        // job here.
        if self.stopping.load(Ordering::Acquire) {
            entry.stop.store(true, Ordering::Release);
        }
        let env = self.env.clone();
        std::thread::Builder::new()
            .name(format!("wait {}", id.chars().take(10).collect::<String>()))
            .spawn(move || supervise(&env, &entry, running))
            .map_err(|e| EngineError::Io {
                path: "a thread".into(),
                source: e,
            })?;
        Ok(id)
    }

    /// Starts the job recorded in `dir` (a job's state directory, as
    /// `submit` left it) from its newest checkpoint, without its SQL.
    pub fn resume(&self, dir: &Path) -> Result<JobId> {
        let job = read_job(dir)?;
        let expected = self.state_root.join(&job.name);
        if dir != expected {
            return Err(EngineError::Unreadable {
                path: dir.display().to_string(),
                reason: format!(
                    "it holds job {}, whose state belongs in {}",
                    job.name,
                    expected.display()
                ),
            });
        }
        self.submit(job)
    }

    /// Asks a job to stop after a final checkpoint (it can resume from
    /// there).
    pub fn stop(&self, id: &str) -> Result<()> {
        self.entry(id)?.stop.store(true, Ordering::Release);
        Ok(())
    }

    /// Asks every running job to stop after a final checkpoint, and jobs
    /// submitted from now on too (they stop after their first).
    pub fn stop_all(&self) {
        self.stopping.store(true, Ordering::Release);
        for entry in self.jobs().values() {
            entry.stop.store(true, Ordering::Release);
        }
    }

    /// Ends a job now, without a checkpoint.
    pub fn cancel(&self, id: &str) -> Result<()> {
        let entry = self.entry(id)?;
        if let Some(tasks) = &*entry.tasks.lock().unwrap_or_else(|e| e.into_inner()) {
            tasks.cancel();
        }
        Ok(())
    }

    pub fn status(&self, id: &str) -> Result<JobStatus> {
        Ok(self.entry(id)?.status())
    }

    /// The dataflow a job runs (the plan as data).
    pub fn graph(&self, id: &str) -> Result<eddy_planner::graph::PhysicalGraph> {
        Ok(self.entry(id)?.job.graph.clone())
    }

    pub fn list(&self) -> Vec<JobStatus> {
        self.jobs().values().map(|e| e.status()).collect()
    }

    /// Waits until the job is no longer running; its final status.
    pub fn wait(&self, id: &str) -> Result<JobStatus> {
        let entry = self.entry(id)?;
        let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.is_running() {
            state = entry.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        drop(state);
        Ok(entry.status())
    }
}

/// A job's run, as it began.
enum Launched {
    /// Its state directory recorded it as finished at this checkpoint.
    AlreadyFinished(u64),
    /// Running, resumed from this checkpoint if any.
    Running(RunningDataflow, Option<u64>),
}

/// Recovers `job`'s state in `dir` (committing the restored checkpoint's
/// output), builds it and starts its tasks.
fn launch(
    env: &BuildEnv,
    job: &Job,
    dir: &Path,
    stop: &Arc<AtomicBool>,
    metrics: &JobMetrics,
) -> Result<Launched> {
    let id = &job.name;
    let started = Instant::now();
    let dataflow = build(&job.graph, env).map_err(|source| EngineError::Build {
        job: id.clone(),
        source,
    })?;
    match prepare(job, dir, &dataflow.committers, stop.clone())? {
        Recovery::AlreadyFinished { checkpoint } => Ok(Launched::AlreadyFinished(checkpoint)),
        Recovery::Ready(prepared) => {
            for warning in &prepared.warnings {
                tracing::warn!(job = %id, "{warning}");
            }
            let state = Arc::new(prepared.checkpointing.db.clone());
            let restored = prepared.restored;
            let running = dataflow
                .start_with(state, metrics.clone(), Some(prepared.checkpointing))
                .map_err(|source| EngineError::Runtime {
                    job: id.clone(),
                    source,
                })?;
            tracing::info!(job = %id, state = %dir.display(), ms = started.elapsed().as_millis() as u64, "started");
            Ok(Launched::Running(running, restored))
        }
    }
}

/// Waits for a job's tasks; when they fail and its restart strategy
/// allows, starts it again from its last checkpoint after the delay.
fn supervise(env: &BuildEnv, entry: &Entry, running: RunningDataflow) {
    let name = &entry.job.name;
    let mut state = ended(entry, running);
    loop {
        let restart = match &state {
            JobState::Failed(cause) if !entry.stop.load(Ordering::Acquire) => {
                let n = entry.restarts.load(Ordering::Acquire);
                entry
                    .job
                    .restart
                    .delay(n, noise())
                    .map(|d| (n + 1, d, cause.clone()))
            }
            _ => None,
        };
        let Some((attempt, delay, cause)) = restart else {
            tracing::info!(job = %name, state = ?state, "ended");
            entry.set_state(state);
            return;
        };
        entry.restarts.store(attempt, Ordering::Release);
        tracing::warn!(
            job = %name, restart = attempt, delay_ms = delay.as_millis() as u64, cause = %cause,
            "the job failed: restarting it from its last checkpoint"
        );
        if !sleep_unless_stopped(delay, &entry.stop) {
            entry.set_state(state);
            return;
        }
        state = match launch(
            env,
            &entry.job,
            &entry.state_dir,
            &entry.stop,
            &entry.metrics,
        ) {
            Ok(Launched::Running(next, _)) => {
                *entry.tasks.lock().unwrap_or_else(|e| e.into_inner()) = Some(next.handle());
                ended(entry, next)
            }
            Ok(Launched::AlreadyFinished(checkpoint)) => {
                entry.set_state(JobState::AlreadyFinished { checkpoint });
                return;
            }
            // Publishing the restored checkpoint's output reaches a system
            // outside (a database, a broker) that may still be away: one
            // more failed attempt, under the same strategy.
            Err(e @ EngineError::Commit { .. }) => JobState::Failed(Arc::new(
                eddy_operators::OperatorError::Connector(e.to_string()),
            )),
            Err(e) => {
                tracing::error!(job = %name, error = %e, "the job cannot be restarted");
                let failed = eddy_operators::OperatorError::Internal(format!(
                    "restart {attempt} failed: {e} (after: {cause})"
                ));
                entry.set_state(JobState::Failed(Arc::new(failed)));
                return;
            }
        };
    }
}

/// How a run of a job ended, once its tasks have.
fn ended(entry: &Entry, running: RunningDataflow) -> JobState {
    let result = running.join();
    let stopped = entry.stop.load(Ordering::Acquire);
    match result {
        Ok(()) if stopped => JobState::Stopped,
        Ok(()) => JobState::Finished,
        Err(e) if e.is_cancelled() => JobState::Cancelled,
        Err(e) if e.is_output_closed() => JobState::OutputClosed,
        Err(e) => JobState::Failed(Arc::new(e)),
    }
}

/// Sleeps for `delay`, waking early to give up if the job is stopped.
fn sleep_unless_stopped(delay: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
    true
}

/// A number in [0, 1) for a restart delay's jitter.
fn noise() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}
