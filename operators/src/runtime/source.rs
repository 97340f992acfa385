//! The loop of a source subtask, and the assigner that hands a source's
//! splits to its subtasks.
//!
//! ```text
//!  SplitAssigner (one per source, shared by its subtasks)
//!     listed splits − finished ones, restored positions applied
//!        │ Spread: split i → subtask i % n     OnDemand: next split → a subtask holding none
//!        ▼
//!  subtask loop:  barrier due? → positions of held splits + finished ones into the
//!                 │               source's table (by split id), snapshot chain, Barrier on
//!                 ├ stop / cancel?
//!                 ├ new splits? → reader.add_split, chain.start_partition
//!                 ├ timers due? → chain.fire_timers
//!                 └ reader.poll(): rows → chain | split finished | Pending → reader.wait
//! ```
//!
//! Split positions are stored by split id in one table per source, written
//! only at barriers, each key by the subtask holding the split. A restore
//! reads the whole table, at any parallelism: finished splits are dropped
//! from the listing, held ones resume from their positions, the rest start
//! afresh. A split handed out between two subtasks' barriers is in neither
//! snapshot, so it restarts from where the checkpoint last saw it: no row
//! is lost or counted twice.
//!
//! A subtask that has read all its splits (and can get no more) sends
//! `Watermark(MAX)`, so it no longer holds the watermark back, but keeps
//! passing barriers on until every subtask of the source is done; only then
//! do they all end. Checkpoints go on meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use eddy_state::{StateBackend, StateTable};

use super::chain::Chain;
use crate::message::MAX_WATERMARK;
use crate::operator::{BAD_DATA_PORT, Emit, OperatorContext};
use crate::source::{
    Poll, Rejected, SourceProvider, SourceReader, Split, SplitAssignment, SplitEnumerator,
};
use crate::{OperatorError, Result};

/// The value a finished split has in the source's table.
const FINISHED: &[u8] = b"\xff finished";

/// How long a subtask with nothing to read waits before looking again
/// (for barriers, stop requests, new splits): the most a barrier waits at
/// an idle source.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands a source's splits to its subtasks. See the module docs.
pub(crate) struct SplitAssigner {
    enumerator: Mutex<Box<dyn SplitEnumerator>>,
    assignment: SplitAssignment,
    readers: usize,
    discovery: Option<Duration>,
    state: Mutex<Assigned>,
    /// Subtasks that have not read all their splits yet.
    reading: AtomicUsize,
    /// Splits added so far: a subtask looks for new ones when it changes.
    added: AtomicUsize,
    table: Arc<dyn StateTable>,
}

#[derive(Default)]
struct Assigned {
    /// Every split known, numbered by position.
    splits: Vec<Split>,
    known: HashSet<String>,
    /// Splits no subtask holds yet: one queue for `OnDemand`, one per
    /// subtask for `Spread`.
    waiting: Vec<VecDeque<usize>>,
    /// Positions a restore found, by split id; finished splits.
    restored: BTreeMap<String, Vec<u8>>,
    finished: BTreeSet<String>,
    last_listing: Option<Instant>,
    /// Work (split sizes) the progress total has been told of.
    sized: u64,
}

impl std::fmt::Debug for SplitAssigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitAssigner")
            .field("assignment", &self.assignment)
            .field("readers", &self.readers)
            .finish_non_exhaustive()
    }
}

impl SplitAssigner {
    /// Lists the source's splits for `readers` subtasks; after a restore,
    /// applies the positions `table` holds.
    pub(crate) fn start(
        provider: &dyn SourceProvider,
        readers: usize,
        state: &dyn StateBackend,
        table_name: &str,
        restored: bool,
    ) -> Result<Self> {
        let table = state.open_table(table_name)?;
        let mut assigned = Assigned {
            waiting: vec![VecDeque::new(); readers.max(1)],
            ..Assigned::default()
        };
        if restored {
            for (key, value) in table.scan_range(b"", &[0xff; 8])? {
                let id = String::from_utf8_lossy(&key).into_owned();
                if value == FINISHED {
                    assigned.finished.insert(id);
                } else {
                    assigned.restored.insert(id, value);
                }
            }
        }
        let enumerator = provider.enumerator()?;
        let assigner = Self {
            discovery: enumerator.discovery_interval(),
            enumerator: Mutex::new(enumerator),
            assignment: provider.assignment(),
            readers: readers.max(1),
            state: Mutex::new(assigned),
            reading: AtomicUsize::new(readers.max(1)),
            added: AtomicUsize::new(0),
            table,
        };
        assigner.list()?;
        // Splits of the checkpoint that the listing no longer shows (a
        // partition or file found by an earlier discovery) resume too.
        let mut state = lock(&assigner.state);
        let leftover: Vec<(String, Vec<u8>)> = std::mem::take(&mut state.restored)
            .into_iter()
            .filter(|(id, _)| !state.known.contains(id))
            .collect();
        for (id, position) in leftover {
            Self::add(
                &mut state,
                assigner.assignment,
                assigner.readers,
                Split {
                    id,
                    position,
                    size: None,
                },
            );
        }
        assigner.added.store(state.splits.len(), Ordering::Release);
        drop(state);
        Ok(assigner)
    }

    /// Lists the splits and adds those not seen before.
    fn list(&self) -> Result<()> {
        let splits = lock(&self.enumerator).list()?;
        let mut state = lock(&self.state);
        state.last_listing = Some(Instant::now());
        for mut split in splits {
            if state.known.contains(&split.id) {
                continue;
            }
            if state.finished.contains(&split.id) {
                state.known.insert(split.id);
                continue;
            }
            if let Some(position) = state.restored.remove(&split.id) {
                split.position = position;
            }
            Self::add(&mut state, self.assignment, self.readers, split);
        }
        self.added.store(state.splits.len(), Ordering::Release);
        Ok(())
    }

    fn add(state: &mut Assigned, assignment: SplitAssignment, readers: usize, split: Split) {
        let index = state.splits.len();
        let queue = match assignment {
            SplitAssignment::OnDemand => 0,
            SplitAssignment::Spread => index % readers,
        };
        state.known.insert(split.id.clone());
        state.splits.push(split);
        state.waiting[queue].push_back(index);
    }

    /// Lists again if the discovery interval passed.
    fn discover(&self) -> Result<()> {
        let Some(interval) = self.discovery else {
            return Ok(());
        };
        let due = lock(&self.state)
            .last_listing
            .is_none_or(|at| at.elapsed() >= interval);
        if due {
            self.list()?;
        }
        Ok(())
    }

    /// Splits for `subtask` to take now, with their numbers. `holding`:
    /// how many it holds (an `OnDemand` reader gets one when it holds none).
    fn take(&self, subtask: usize, holding: usize) -> Vec<(usize, Split)> {
        let mut state = lock(&self.state);
        let queue = match self.assignment {
            SplitAssignment::OnDemand if holding > 0 => return Vec::new(),
            SplitAssignment::OnDemand => state.waiting[0].pop_front().into_iter().collect(),
            SplitAssignment::Spread => {
                let q = &mut state.waiting[subtask % self.readers];
                q.drain(..).collect::<Vec<_>>()
            }
        };
        queue
            .into_iter()
            .map(|i| (i, state.splits[i].clone()))
            .collect()
    }

    /// True when `subtask` will get no more splits: none wait for it and
    /// the source discovers none.
    fn exhausted(&self, subtask: usize) -> bool {
        if self.discovery.is_some() {
            return false;
        }
        let state = lock(&self.state);
        match self.assignment {
            SplitAssignment::OnDemand => state.waiting[0].is_empty(),
            SplitAssignment::Spread => state.waiting[subtask % self.readers].is_empty(),
        }
    }

    /// New work to add to the progress total (split sizes not counted yet).
    fn unsized_work(&self) -> u64 {
        let mut state = lock(&self.state);
        let total: u64 = state.splits.iter().filter_map(|s| s.size).sum();
        let new = total.saturating_sub(state.sized);
        state.sized = total;
        new
    }

    fn all_finished(&self) -> bool {
        self.reading.load(Ordering::Acquire) == 0
    }
}

/// One source subtask: its reader, the splits it holds, and what to
/// record at the next barrier.
struct SourceTask<'a> {
    reader: &'a mut dyn SourceReader,
    assigner: &'a SplitAssigner,
    ctx: &'a OperatorContext,
    /// Splits held and not finished: number → id.
    held: BTreeMap<usize, String>,
    /// Finished since the last barrier: recorded at the next one.
    finished: Vec<String>,
    /// The assigner's split count when this subtask last took splits.
    seen: usize,
    /// Read everything it will get: `Watermark(MAX)` was sent.
    done: bool,
    /// Marked idle downstream (holding no split) and nothing since.
    idle: bool,
    /// Progress units already reported.
    reported: u64,
    /// Bytes read already reported.
    reported_bytes: u64,
    /// Positions taken at barriers whose checkpoints have not completed.
    taken: BTreeMap<u64, Vec<(usize, Vec<u8>)>>,
}

impl SourceTask<'_> {
    /// Writes held splits' positions and finished splits to the source's
    /// table, snapshots the chain and passes the barrier on.
    fn checkpoint(&mut self, id: u64, chain: &mut Chain) -> Result<()> {
        let table = &self.assigner.table;
        let positions = self.reader.positions();
        for (index, position) in &positions {
            if let Some(split) = self.held.get(index) {
                table.put(split.as_bytes(), position)?;
            }
        }
        self.taken.insert(id, positions);
        for split in self.finished.drain(..) {
            table.put(split.as_bytes(), FINISHED)?;
        }
        chain.checkpoint(id)?;
        self.ctx.checkpoints.ack(id, Duration::ZERO);
        Ok(())
    }

    /// Tells the reader of the checkpoints that completed since it asked.
    fn notify_completed(&mut self) {
        let completed = self.ctx.checkpoints.completed();
        let Some(&first) = self.taken.keys().next() else {
            return;
        };
        if first > completed {
            return;
        }
        let rest = self.taken.split_off(&(completed + 1));
        let done = std::mem::replace(&mut self.taken, rest);
        // Only the newest matters: positions only move forward.
        if let Some((id, positions)) = done.into_iter().next_back() {
            self.reader.checkpoint_complete(id, &positions);
        }
    }

    /// Takes the splits waiting for this subtask, if there may be some: it
    /// holds none (and takes them one at a time), or splits were added.
    fn take_splits(&mut self, chain: &mut Chain) -> Result<()> {
        let added = self.assigner.added.load(Ordering::Acquire);
        let on_demand = self.assigner.assignment == SplitAssignment::OnDemand;
        if added == self.seen && !(on_demand && self.held.is_empty()) {
            return Ok(());
        }
        self.seen = added;
        let subtask = self.ctx.subtask;
        for (index, split) in self.assigner.take(subtask, self.held.len()) {
            tracing::debug!(source = %self.reader.name(), split = %split.id, subtask, "split assigned");
            self.held.insert(index, split.id.clone());
            let id = split.id.clone();
            self.reader.add_split(index, split)?;
            chain.start_partition(index, &id)?;
            self.idle = false;
        }
        let new = self.assigner.unsized_work();
        if new > 0 {
            self.ctx.metrics.add_progress_total(new);
        }
        Ok(())
    }

    /// Sets the lag gauges of the splits the reader knows it for.
    fn report_lag(&self) {
        if let Some(counters) = self.ctx.metrics.operator() {
            let unit = self.reader.lag_unit();
            let lags = self.reader.lag();
            if !lags.is_empty() {
                counters.set_total_source_lag(lags.iter().map(|(_, lag)| lag).sum(), unit);
            }
            for (split, lag) in lags {
                counters.source_lag(&split, lag, unit);
            }
        }
    }

    /// Hands a batch read from split `index` to the chain.
    fn push(&mut self, index: usize, batch: RecordBatch, chain: &mut Chain) -> Result<()> {
        self.ctx.metrics.add_rows_in(batch.num_rows() as u64);
        if let Some(counters) = self.ctx.metrics.operator() {
            counters.batch_out(batch.num_rows());
        }
        let done = self.reader.progress();
        self.ctx
            .metrics
            .add_progress_done(done.saturating_sub(self.reported));
        self.reported = done;
        let bytes = self.reader.bytes_read();
        self.ctx
            .metrics
            .add_bytes_read(bytes.saturating_sub(self.reported_bytes));
        self.reported_bytes = bytes;
        chain.push_source(index, batch)
    }

    /// Counts bad records, and sends their dead-letter rows on.
    fn reject(&mut self, rejected: Rejected, chain: &mut Chain) -> Result<()> {
        match rejected {
            Rejected::Dropped(n) => self.ctx.metrics.add_bad_dropped(n),
            Rejected::DeadLetters(batch) => {
                self.ctx
                    .metrics
                    .add_bad_dead_lettered(batch.num_rows() as u64);
                chain.push(0, Emit::Side(BAD_DATA_PORT, batch))?;
            }
        }
        Ok(())
    }

    /// Polls the reader once; false when it had nothing.
    fn poll(&mut self, chain: &mut Chain) -> Result<bool> {
        match self.reader.poll()? {
            Poll::Batch(index, batch) => {
                self.push(index, batch, chain)?;
                Ok(true)
            }
            Poll::Rejected(index, rejected, batch) => {
                self.reject(rejected, chain)?;
                if let Some(batch) = batch {
                    self.push(index, batch, chain)?;
                }
                Ok(true)
            }
            Poll::Finished(index) => {
                let Some(id) = self.held.remove(&index) else {
                    return Err(OperatorError::Internal(format!(
                        "{} finished split {index}, which it was not reading",
                        self.reader.name()
                    )));
                };
                tracing::debug!(source = %self.reader.name(), split = %id, "split finished");
                self.finished.push(id);
                chain.end_partition(index)?;
                Ok(true)
            }
            Poll::Pending => Ok(false),
        }
    }

    /// Nothing to read now: the subtask may be done (all its splits read),
    /// or idle (holding none); otherwise it waits for the reader.
    fn nothing_now(&mut self, chain: &mut Chain) -> Result<()> {
        if self.held.is_empty() && self.assigner.exhausted(self.ctx.subtask) {
            self.done = true;
            // End of this subtask's input: close every window it holds back.
            chain.push(0, Emit::Watermark(MAX_WATERMARK))?;
            self.assigner.reading.fetch_sub(1, Ordering::AcqRel);
            return Ok(());
        }
        if self.held.is_empty() && !self.idle {
            self.idle = true;
            chain.push(0, Emit::Idle)?;
        }
        let timeout = match chain.next_timer() {
            Some(t) => t
                .saturating_duration_since(Instant::now())
                .min(POLL_INTERVAL),
            None => POLL_INTERVAL,
        };
        if self.held.is_empty() {
            std::thread::sleep(timeout);
        } else {
            self.reader.wait(timeout);
        }
        Ok(())
    }
}

/// How often a source's lag is reported.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Runs one subtask of a source stage until the source ends, the job stops
/// or fails. See the module docs.
pub(crate) fn run_source(
    reader: &mut dyn SourceReader,
    assigner: &SplitAssigner,
    chain: &mut Chain,
    ctx: &OperatorContext,
) -> Result<()> {
    let handle = &ctx.checkpoints;
    let mut task = SourceTask {
        reader,
        assigner,
        ctx,
        held: BTreeMap::new(),
        finished: Vec::new(),
        seen: usize::MAX,
        done: false,
        idle: false,
        reported: 0,
        reported_bytes: 0,
        taken: BTreeMap::new(),
    };
    tracing::debug!(source = %task.reader.name(), subtask = ctx.subtask, "source started");
    let mut injected = 0;
    let mut last_lag = Instant::now();
    loop {
        if let Some(id) = handle.barrier_due(&mut injected) {
            task.checkpoint(id, chain)?;
        }
        task.notify_completed();
        if handle.stopping() {
            // Stopped after a final checkpoint: end without draining, so
            // that no window fires on a watermark the data did not bring.
            return chain.close();
        }
        if handle.cancelled() {
            return Err(OperatorError::Cancelled);
        }
        if ctx.subtask == 0 {
            assigner.discover()?;
        }
        chain.fire_timers()?;
        if task.done {
            if assigner.all_finished() {
                return chain.close();
            }
            std::thread::sleep(POLL_INTERVAL);
            continue;
        }
        task.take_splits(chain)?;
        if last_lag.elapsed() >= LAG_INTERVAL {
            last_lag = Instant::now();
            task.report_lag();
        }
        if !task.poll(chain)? {
            task.nothing_now(chain)?;
        }
    }
}
