//! Checkpoint coordination: who asks for a checkpoint, who answers, and
//! when it counts as done.
//!
//! ```text
//!  coordinator ──requested = n──► sources: snapshot offset, Barrier(n) ──► tasks align,
//!       ▲                                                                   snapshot, pass it on
//!       └────────────── Ack(n) from every subtask ◄──────────────────────────────┘
//!  all acked: RocksDB checkpoint + manifest (state crate), then the sinks' committers
//! ```
//!
//! One checkpoint is in flight at a time. Operators write their state to
//! the state backend only while handling a barrier, so once every subtask
//! has acknowledged `n` the live database holds exactly the state as of the
//! barriers of `n`: the coordinator checkpoints it then, before it asks for
//! `n + 1`. A checkpoint that cannot complete because a task ended first
//! (a bounded input ran out) is abandoned; the job's end is then recorded
//! by a final checkpoint that commits all remaining sink output.
//!
//! A clean stop (SIGTERM, Ctrl-C) takes a checkpoint at once, then has the
//! sources end without draining: windows do not fire, and nothing written
//! after that checkpoint is committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use eddy_state::RocksDbBackend;
use eddy_state::checkpoint::{CheckpointStore, Committable};

use crate::metrics::JobMetrics;
use crate::sink::Committer;
use crate::{OperatorError, Result};

/// What tasks tell the coordinator.
#[derive(Debug)]
enum Event {
    /// A subtask snapshotted its chain for checkpoint `id` and passed the
    /// barrier on.
    Ack { id: u64, alignment: Duration },
    /// A subtask ended (input exhausted, stopped or failed).
    TaskEnded,
}

/// The tasks' side of checkpointing, shared by every subtask of a job.
/// The default handle belongs to a job without checkpoints.
#[derive(Debug, Clone, Default)]
pub struct CheckpointHandle {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The checkpoint sources should start next (0: none yet).
    requested: AtomicU64,
    /// The last checkpoint that completed in this run (0: none yet).
    completed: AtomicU64,
    /// Sources end without draining (after a final checkpoint).
    stop: AtomicBool,
    /// A task failed: every other task stops at once.
    cancel: AtomicBool,
    /// The checkpoint this run resumed from.
    restored: Option<u64>,
    /// The id the first checkpoint of this run will have.
    first_id: u64,
    /// How often checkpoints are taken (`None`: only at the end).
    interval: Option<Duration>,
    /// Sink output waiting for the checkpoint that publishes it, by the
    /// checkpoint whose barrier closed it ([`FINAL`]: the end of input).
    commits: std::sync::Mutex<BTreeMap<u64, Vec<Committable>>>,
    events: Option<Sender<Event>>,
}

/// The checkpoint id sinks give output closed by the end of input.
pub const FINAL: u64 = u64::MAX;

impl CheckpointHandle {
    /// The handle of a job resumed from checkpoint `restored`, without a
    /// coordinator (operator tests, harnesses).
    pub fn resumed(restored: u64) -> Self {
        Self {
            inner: Arc::new(Shared {
                restored: Some(restored),
                first_id: restored + 1,
                ..Shared::default()
            }),
        }
    }

    /// The checkpoint this run resumed from, if any.
    pub fn restored(&self) -> Option<u64> {
        self.inner.restored
    }

    /// The id of the checkpoint that will follow the last one this task
    /// saw, given the last barrier it handled.
    pub fn next_id(&self, last_barrier: Option<u64>) -> u64 {
        last_barrier.map_or(self.inner.first_id.max(1), |b| b + 1)
    }

    /// For sources: the checkpoint to start now, if one was requested
    /// since `injected`.
    pub fn barrier_due(&self, injected: &mut u64) -> Option<u64> {
        let requested = self.inner.requested.load(Ordering::Acquire);
        (requested > *injected).then(|| {
            *injected = requested;
            requested
        })
    }

    /// The last checkpoint of this run that completed (0: none yet). A
    /// source tells its reader (a Kafka consumer commits its offsets to
    /// its group, for lag monitoring).
    pub fn completed(&self) -> u64 {
        self.inner.completed.load(Ordering::Acquire)
    }

    /// True once sources should end without draining.
    pub fn stopping(&self) -> bool {
        self.inner.stop.load(Ordering::Acquire)
    }

    /// A task failed: asks every other task of the job to stop now.
    pub fn cancel(&self) {
        self.inner.cancel.store(true, Ordering::Release);
    }

    /// True once a task of the job failed.
    pub fn cancelled(&self) -> bool {
        self.inner.cancel.load(Ordering::Acquire)
    }

    /// How often the job checkpoints (`None`: only at the end, or never).
    /// A sink whose transactions span a checkpoint interval checks its
    /// timeout against it.
    pub fn interval(&self) -> Option<Duration> {
        self.inner.interval
    }

    /// True if the job takes checkpoints.
    pub fn enabled(&self) -> bool {
        self.inner.events.is_some()
    }

    pub(crate) fn ack(&self, id: u64, alignment: Duration) {
        if let Some(tx) = &self.inner.events {
            let _ = tx.send(Event::Ack { id, alignment });
        }
    }

    pub(crate) fn task_ended(&self) {
        if let Some(tx) = &self.inner.events {
            let _ = tx.send(Event::TaskEnded);
        }
    }

    /// The committable of sink `sink`'s output up to barrier `id`
    /// ([`FINAL`] at end of input), committed once a checkpoint covering
    /// it is complete.
    pub fn add_committable(&self, id: u64, sink: &str, payload: serde_json::Value) {
        self.add_commits(
            id,
            vec![Committable {
                sink: sink.to_string(),
                payload,
            }],
        );
    }

    fn add_commits(&self, id: u64, commits: Vec<Committable>) {
        if commits.is_empty() {
            return;
        }
        let mut map = self.inner.commits.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id).or_default().extend(commits);
    }

    /// Takes the commits a checkpoint `id` publishes: all closed by
    /// barriers up to `id`.
    fn take_commits(&self, id: u64) -> Vec<Committable> {
        let mut map = self.inner.commits.lock().unwrap_or_else(|e| e.into_inner());
        let later = match id.checked_add(1) {
            Some(next) => map.split_off(&next),
            None => BTreeMap::new(),
        };
        let taken = std::mem::replace(&mut *map, later);
        taken.into_values().flatten().collect()
    }
}

/// How a job checkpoints.
#[derive(Debug)]
pub struct Checkpointing {
    pub store: Arc<CheckpointStore>,
    pub db: RocksDbBackend,
    /// `None`: only the final checkpoint (and one on a clean stop).
    pub interval: Option<Duration>,
    /// The checkpoint the state was restored from.
    pub restored: Option<u64>,
    /// Set from outside (a signal handler) to stop the job cleanly.
    pub stop: Arc<AtomicBool>,
}

/// Each sink's committer, by sink operator id.
pub type Committers = BTreeMap<String, Arc<dyn Committer>>;

/// One sink's committables, with its id and committer.
type SinkCommits<'a> = (&'a str, &'a Arc<dyn Committer>, Vec<serde_json::Value>);

/// The committables of `commits` by sink, each with its sink's committer.
fn by_sink<'a>(
    committers: &'a Committers,
    commits: &'a [Committable],
) -> Result<Vec<SinkCommits<'a>>> {
    let mut grouped: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for c in commits {
        grouped.entry(&c.sink).or_default().push(c.payload.clone());
    }
    grouped
        .into_iter()
        .map(|(sink, payloads)| {
            let committer = committers.get(sink).ok_or_else(|| {
                OperatorError::Internal(format!(
                    "the checkpoint holds output of sink {sink}, which the job does not have"
                ))
            })?;
            Ok((sink, committer, payloads))
        })
        .collect()
}

/// Has every committable committed by its sink's committer: phase two,
/// when a checkpoint is complete.
pub fn commit_all(committers: &Committers, commits: &[Committable]) -> Result<()> {
    for (_, committer, payloads) in by_sink(committers, commits)? {
        committer.commit(&payloads)?;
    }
    Ok(())
}

/// Phase two at recovery: has every sink's committer recover the
/// committables of the restored checkpoint (none, for some), with the
/// positions its writers kept in that checkpoint's `state` (a sink's table
/// is named after its operator id).
pub fn recover_all(
    committers: &Committers,
    commits: &[Committable],
    state: &dyn eddy_state::StateBackend,
) -> Result<()> {
    let mut grouped: BTreeMap<&str, (&Arc<dyn Committer>, Vec<serde_json::Value>)> = committers
        .iter()
        .map(|(sink, committer)| (sink.as_str(), (committer, Vec::new())))
        .collect();
    for (sink, committer, payloads) in by_sink(committers, commits)? {
        grouped.insert(sink, (committer, payloads));
    }
    // Every committer, with or without committables: a sink may have
    // begun something since that it must clean up.
    for (sink, (committer, payloads)) in grouped {
        let mut positions = BTreeMap::new();
        for (key, value) in state.open_table(sink)?.scan_range(b"", &[0xff; 9])? {
            if let Ok(subtask) = <[u8; 8]>::try_from(key.as_slice()) {
                positions.insert(u64::from_be_bytes(subtask) as usize, value);
            }
        }
        committer.recover(&payloads, &positions)?;
    }
    Ok(())
}

/// The running coordinator of one job.
#[derive(Debug)]
pub(crate) struct Coordinator {
    handle: CheckpointHandle,
    thread: JoinHandle<Outcome>,
    store: Arc<CheckpointStore>,
    db: RocksDbBackend,
    metrics: JobMetrics,
    committers: Arc<Committers>,
}

/// How the coordinator ended.
#[derive(Debug)]
struct Outcome {
    next_id: u64,
    stopped: bool,
}

impl Coordinator {
    /// Starts the coordinator's thread; tasks get its [`Self::handle`].
    pub(crate) fn start(
        config: Checkpointing,
        tasks: usize,
        metrics: JobMetrics,
        committers: Committers,
    ) -> Result<Coordinator> {
        let committers = Arc::new(committers);
        let first_id = config.store.highest_id()? + 1;
        let (tx, rx) = unbounded();
        let handle = CheckpointHandle {
            inner: Arc::new(Shared {
                restored: config.restored,
                first_id,
                interval: config.interval,
                events: Some(tx),
                ..Shared::default()
            }),
        };
        let looper = Loop {
            handle: handle.clone(),
            events: rx,
            store: config.store.clone(),
            db: config.db.clone(),
            interval: config.interval,
            stop: config.stop,
            tasks,
            metrics: metrics.clone(),
            committers: committers.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("checkpoints".into())
            .spawn(move || looper.run(first_id))
            .map_err(|e| OperatorError::Internal(format!("cannot spawn a thread: {e}")))?;
        Ok(Coordinator {
            handle,
            thread,
            store: config.store,
            db: config.db,
            metrics,
            committers,
        })
    }

    pub(crate) fn handle(&self) -> CheckpointHandle {
        self.handle.clone()
    }

    /// After every task ended: records the job's end with a final
    /// checkpoint that publishes all remaining output, unless the tasks
    /// failed (`succeeded` false) or the job was stopped.
    pub(crate) fn finish(self, succeeded: bool) -> Result<()> {
        let outcome = self
            .thread
            .join()
            .map_err(|_| OperatorError::Internal("the checkpoint coordinator panicked".into()))?;
        if !succeeded || outcome.stopped {
            return Ok(());
        }
        let started = Instant::now();
        let commits = self.handle.take_commits(FINAL);
        let manifest = self.store.write(&self.db, outcome.next_id, true, commits)?;
        if !manifest.commits.is_empty() {
            eddy_state::checkpoint::crash_point("manifest-written");
        }
        commit_all(&self.committers, &manifest.commits)?;
        self.metrics.checkpoint_completed(
            manifest.id,
            started.elapsed(),
            manifest.size(),
            Duration::ZERO,
        );
        tracing::info!(
            checkpoint = manifest.id,
            commits = manifest.commits.len(),
            "final checkpoint: input exhausted, all output committed"
        );
        Ok(())
    }
}

struct Loop {
    handle: CheckpointHandle,
    events: Receiver<Event>,
    store: Arc<CheckpointStore>,
    db: RocksDbBackend,
    interval: Option<Duration>,
    stop: Arc<AtomicBool>,
    tasks: usize,
    metrics: JobMetrics,
    committers: Arc<Committers>,
}

/// What waiting for the next event came to.
enum Wait {
    Due,
    AllEnded,
}

impl Loop {
    fn run(self, first_id: u64) -> Outcome {
        let mut next = first_id;
        let mut ended = 0;
        loop {
            match self.wait(&mut ended) {
                Wait::AllEnded => {
                    return Outcome {
                        next_id: next,
                        stopped: false,
                    };
                }
                Wait::Due => {}
            }
            let stopping = self.stop.load(Ordering::Acquire);
            let completed = self.checkpoint(next, &mut ended);
            next += 1;
            if stopping && completed {
                self.handle.inner.stop.store(true, Ordering::Release);
                tracing::info!(checkpoint = next - 1, "stopping after the checkpoint");
                while ended < self.tasks {
                    match self.events.recv() {
                        Ok(Event::TaskEnded) => ended += 1,
                        Ok(Event::Ack { .. }) => {}
                        Err(_) => break,
                    }
                }
                return Outcome {
                    next_id: next,
                    stopped: true,
                };
            }
        }
    }

    /// Waits until a checkpoint is due (the interval passed, or a stop was
    /// asked for), or every task ended. Once any task ended no checkpoint
    /// is started: a source that ended cannot inject a barrier.
    fn wait(&self, ended: &mut usize) -> Wait {
        let deadline = self.interval.map(|i| Instant::now() + i);
        loop {
            if *ended == self.tasks {
                return Wait::AllEnded;
            }
            let now = Instant::now();
            if *ended == 0 {
                if self.stop.load(Ordering::Acquire) {
                    return Wait::Due;
                }
                if deadline.is_some_and(|d| now >= d) {
                    return Wait::Due;
                }
            }
            let tick = Duration::from_millis(50);
            let timeout = deadline.map_or(tick, |d| d.saturating_duration_since(now).min(tick));
            match self.events.recv_timeout(timeout) {
                Ok(Event::TaskEnded) => *ended += 1,
                // An ack of an abandoned checkpoint.
                Ok(Event::Ack { .. }) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Wait::AllEnded,
            }
        }
    }

    /// Runs checkpoint `id` to completion; false if it was abandoned.
    fn checkpoint(&self, id: u64, ended: &mut usize) -> bool {
        let started = Instant::now();
        self.handle.inner.requested.store(id, Ordering::Release);
        tracing::debug!(checkpoint = id, "checkpoint started");
        let mut acks = 0;
        let mut alignment = Duration::ZERO;
        while acks < self.tasks {
            match self.events.recv() {
                Ok(Event::Ack {
                    id: a,
                    alignment: t,
                }) if a == id => {
                    acks += 1;
                    alignment = alignment.max(t);
                }
                Ok(Event::Ack { .. }) => {}
                Ok(Event::TaskEnded) => {
                    *ended += 1;
                    tracing::debug!(checkpoint = id, "checkpoint abandoned: a task ended");
                    return false;
                }
                Err(_) => return false,
            }
        }
        let commits = self.handle.take_commits(id);
        let result = self.store.write(&self.db, id, false, commits.clone());
        if result.is_err() {
            // Published by the next checkpoint that completes.
            self.handle.add_commits(id, commits);
        }
        if let Ok(m) = &result {
            if !m.commits.is_empty() {
                eddy_state::checkpoint::crash_point("manifest-written");
            }
            // Once the manifest is durable the commit is decided: a commit
            // that fails here is redone at recovery.
            if let Err(e) = commit_all(&self.committers, &m.commits) {
                tracing::error!(checkpoint = id, error = %e, "cannot publish sink output");
            }
        }
        match result {
            Ok(manifest) => {
                self.handle.inner.completed.store(id, Ordering::Release);
                let duration = started.elapsed();
                self.metrics
                    .checkpoint_completed(id, duration, manifest.size(), alignment);
                for (table, bytes) in self.db.table_sizes() {
                    self.metrics.set_state_bytes(&table, bytes);
                }
                tracing::info!(
                    checkpoint = id,
                    duration_ms = duration.as_millis() as u64,
                    size_bytes = manifest.size(),
                    alignment_ms = alignment.as_millis() as u64,
                    commits = manifest.commits.len(),
                    "checkpoint complete"
                );
                true
            }
            Err(e) => {
                self.metrics.checkpoint_failed();
                tracing::error!(checkpoint = id, error = %e, "checkpoint failed");
                false
            }
        }
    }
}
