//! Sources as splits: the model of Flink's FLIP-27 and RisingWave.
//!
//! A source is cut into independent *splits*: a file or a byte range of
//! one, a Kafka partition, the Nexmark generator's one stream. Each split
//! has its own position (kept in checkpoints) and its own watermark. Three
//! small traits, each with one job:
//!
//! ```text
//!  SourceProvider (one per source in the plan: options already checked)
//!     ├─ enumerator() ─► SplitEnumerator: lists the splits (again every
//!     │                  discovery interval, for new partitions or files)
//!     └─ reader()     ─► SourceReader, one per subtask: reads the splits
//!                        the runtime assigns it, never blocking
//!
//!  runtime: enumerator ──splits──► assigner ──Spread: split i to reader i % n──► readers
//!                                           └─OnDemand: the next split to a reader with none
//! ```
//!
//! The runtime owns coordination: it assigns splits, keeps every split's
//! position in the checkpoint (by split id, so a restore at another
//! parallelism reassigns them), injects barriers, fires processing-time
//! timers and marks idleness on its own clock. A reader only reads:
//! [`SourceReader::poll`] returns what is there *now* (rows of one split,
//! the end of a split, or [`Poll::Pending`]) and never waits for data;
//! [`SourceReader::wait`] is where the runtime lets it wait, for a bounded
//! time, when it has nothing. A reader that does I/O on a tokio runtime
//! hands its batches over a bounded channel and waits on that channel.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;

use crate::Result;
use crate::lookup::LookupTable;
use crate::operator::OperatorContext;

/// One independent piece of a source, read by one reader at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Names the split in checkpoints and messages; the same in every run
    /// of the job (`data.json:0+67108864`, `bids-3`).
    pub id: String,
    /// Where reading starts, in the connector's own encoding: the split's
    /// beginning when listed, a checkpointed position after a restore.
    pub position: Vec<u8>,
    /// The split's amount of work, in the units of
    /// [`SourceReader::progress`] (bytes, events), when known: bounded
    /// sources report progress against the sum.
    pub size: Option<u64>,
}

/// How the runtime hands splits to a source's readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitAssignment {
    /// Split `i` (in listing order) goes to reader `i % readers`, all at
    /// once: each reader reads its splits side by side (partitions of a
    /// topic).
    Spread,
    /// A reader gets the next unread split whenever it holds none: readers
    /// that finish early take more (byte ranges of files).
    OnDemand,
}

/// What a reader has now.
#[derive(Debug)]
pub enum Poll {
    /// Rows of the split the runtime numbered `split` when it assigned it.
    Batch(usize, RecordBatch),
    /// Split `split` was read to its end.
    Finished(usize),
    /// Records of split `split` that did not decode, under `'bad-data'` =
    /// `'drop'` or `'dead-letter'` (counted, and their dead-letter rows
    /// sent on [`crate::operator::BAD_DATA_PORT`]), and the rows read with
    /// them. The runtime takes both at once, so that no checkpoint barrier
    /// falls between a position and the dead letters read before it.
    Rejected(usize, Rejected, Option<RecordBatch>),
    /// Nothing at the moment: the runtime goes on with barriers, timers
    /// and idleness, then calls [`SourceReader::wait`].
    Pending,
}

/// Bad records a reader set aside.
#[derive(Debug)]
pub enum Rejected {
    /// This many were skipped.
    Dropped(u64),
    /// Their dead-letter rows, one per record.
    DeadLetters(RecordBatch),
}

/// Lists a source's splits.
pub trait SplitEnumerator: Send {
    /// Every split the source has now, in a stable order. Called once at
    /// the start of a run and then every [`Self::discovery_interval`]; the
    /// runtime adds the splits whose id it has not seen.
    fn list(&mut self) -> Result<Vec<Split>>;

    /// How often to list again for new splits. `None` (the default): the
    /// splits are fixed, and the source is bounded once they are read.
    fn discovery_interval(&self) -> Option<Duration> {
        None
    }
}

/// Reads the splits assigned to one subtask. See the module docs.
pub trait SourceReader: Send {
    /// Names the source for logs and errors (`file data.json`).
    fn name(&self) -> String;

    fn open(&mut self, _ctx: &OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Takes split `split` (the runtime's number for it, used in
    /// [`Poll`]), to read from its position on.
    fn add_split(&mut self, split: usize, assigned: Split) -> Result<()>;

    /// Rows, the end of a split, or nothing now. Must not wait for data.
    fn poll(&mut self) -> Result<Poll>;

    /// Called after [`Poll::Pending`]: wait until data may be there, at
    /// most `timeout`. The default sleeps for `timeout`; a reader fed by
    /// another thread waits on its channel instead.
    fn wait(&mut self, timeout: Duration) {
        std::thread::sleep(timeout);
    }

    /// The position to resume from of every split it holds and has not
    /// finished, taken at a checkpoint barrier (between two polls).
    fn positions(&self) -> Vec<(usize, Vec<u8>)>;

    /// Checkpoint `checkpoint` completed; `positions` are what
    /// [`Self::positions`] returned at its barrier. The default does
    /// nothing; a Kafka reader commits them to its consumer group, so that
    /// lag monitoring sees the job's progress (never to resume from).
    fn checkpoint_complete(&mut self, _checkpoint: u64, _positions: &[(usize, Vec<u8>)]) {}

    /// Units of work done since the reader was created, for progress (see
    /// [`Split::size`]).
    fn progress(&self) -> u64 {
        0
    }

    /// Bytes read since the reader was created, if it counts them (a
    /// file's), for progress and metrics.
    fn bytes_read(&self) -> u64 {
        0
    }

    /// How far each split it reads is behind the end of its input, by
    /// split name, where the reader knows, in [`Self::lag_unit`]s (Kafka:
    /// the latest offset minus the position, per partition). The default
    /// knows none.
    fn lag(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// What [`Self::lag`] counts.
    fn lag_unit(&self) -> LagUnit {
        LagUnit::Records
    }
}

/// What a source's lag counts: records (a topic's offsets) or bytes (a
/// file's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagUnit {
    Records,
    Bytes,
}

impl LagUnit {
    /// The gauge it is exported as.
    pub fn metric(self) -> &'static str {
        match self {
            LagUnit::Records => "eddy_source_lag_records",
            LagUnit::Bytes => "eddy_source_lag_bytes",
        }
    }
}

/// A source as the plan declares it, its options checked: makes the
/// enumerator and the readers of each run.
pub trait SourceProvider: Send + Sync + Debug {
    fn enumerator(&self) -> Result<Box<dyn SplitEnumerator>>;

    /// A reader for one subtask; it gets its splits through
    /// [`SourceReader::add_split`].
    fn reader(&self) -> Result<Box<dyn SourceReader>>;

    fn assignment(&self) -> SplitAssignment {
        SplitAssignment::OnDemand
    }

    /// The most subtasks that can have work: the planner gives the source
    /// no more (the Nexmark generator is one split; a file has as many as
    /// it was cut into when the job was planned). `None`: no limit.
    fn max_parallelism(&self) -> Option<usize> {
        None
    }

    /// The source read whole, for a lookup join, if it is bounded.
    fn lookup_table(&self) -> Option<Arc<dyn LookupTable>> {
        None
    }

    /// The same source told that the job keeps only rows meeting every
    /// one of `bounds`, if the connector can use that to skip input (a
    /// Parquet row group whose statistics exclude them). Rows it reads are
    /// filtered all the same, so a source may skip less. `None`, the
    /// default: it reads everything.
    fn bounded(&self, _bounds: &[ColumnBound]) -> Option<Arc<dyn SourceProvider>> {
        None
    }

    /// The same source reading only the declared columns `columns`
    /// (ascending), if the connector can leave the others undecoded (JSON
    /// read by name, Parquet by column). `None`, the default: [`project`]
    /// projects what it reads.
    fn projected(&self, _columns: &[usize]) -> Option<Arc<dyn SourceProvider>> {
        None
    }
}

/// `column op value`: a condition on a declared column that every row a
/// job keeps from a source meets (see [`SourceProvider::bounded`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnBound {
    pub column: String,
    pub op: BoundOp,
    /// Not NULL.
    pub value: ScalarValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundOp {
    Eq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl ColumnBound {
    /// Whether a value between `min` and `max` (inclusive) may meet the
    /// bound: `false` only when none can. Values of other types than the
    /// bound's, or that do not compare, may.
    pub fn may_hold(&self, min: &ScalarValue, max: &ScalarValue) -> bool {
        use std::cmp::Ordering::{Greater, Less};
        let (Some(to_min), Some(to_max)) = (
            self.value.partial_cmp(min).filter(|_| !min.is_null()),
            self.value.partial_cmp(max).filter(|_| !max.is_null()),
        ) else {
            return true;
        };
        match self.op {
            BoundOp::Eq => to_min != Less && to_max != Greater,
            // column < value: some value in range is below it.
            BoundOp::Lt => to_min == Greater,
            BoundOp::LtEq => to_min != Less,
            BoundOp::Gt => to_max == Less,
            BoundOp::GtEq => to_max != Greater,
        }
    }
}

/// `provider` reading only its declared columns `columns` (ascending): the
/// connector's own [`SourceProvider::projected`] where it has one, else
/// each batch it reads, projected.
pub fn project(provider: Arc<dyn SourceProvider>, columns: Vec<usize>) -> Arc<dyn SourceProvider> {
    provider.projected(&columns).unwrap_or_else(|| {
        Arc::new(Projected {
            inner: provider,
            columns: columns.into(),
        })
    })
}

/// A source whose batches are projected after reading.
#[derive(Debug)]
struct Projected {
    inner: Arc<dyn SourceProvider>,
    columns: Arc<[usize]>,
}

impl SourceProvider for Projected {
    fn enumerator(&self) -> Result<Box<dyn SplitEnumerator>> {
        self.inner.enumerator()
    }

    fn reader(&self) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(ProjectedReader {
            inner: self.inner.reader()?,
            columns: self.columns.clone(),
        }))
    }

    fn assignment(&self) -> SplitAssignment {
        self.inner.assignment()
    }

    fn max_parallelism(&self) -> Option<usize> {
        self.inner.max_parallelism()
    }
}

struct ProjectedReader {
    inner: Box<dyn SourceReader>,
    columns: Arc<[usize]>,
}

impl ProjectedReader {
    fn project(&self, batch: RecordBatch) -> Result<RecordBatch> {
        Ok(batch.project(&self.columns)?)
    }
}

impl SourceReader for ProjectedReader {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.inner.open(ctx)
    }

    fn add_split(&mut self, split: usize, assigned: Split) -> Result<()> {
        self.inner.add_split(split, assigned)
    }

    fn poll(&mut self) -> Result<Poll> {
        Ok(match self.inner.poll()? {
            Poll::Batch(split, batch) => Poll::Batch(split, self.project(batch)?),
            Poll::Rejected(split, rejected, batch) => {
                let batch = batch.map(|b| self.project(b)).transpose()?;
                Poll::Rejected(split, rejected, batch)
            }
            other => other,
        })
    }

    fn wait(&mut self, timeout: Duration) {
        self.inner.wait(timeout);
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        self.inner.positions()
    }

    fn checkpoint_complete(&mut self, checkpoint: u64, positions: &[(usize, Vec<u8>)]) {
        self.inner.checkpoint_complete(checkpoint, positions);
    }

    fn progress(&self) -> u64 {
        self.inner.progress()
    }

    fn bytes_read(&self) -> u64 {
        self.inner.bytes_read()
    }

    fn lag(&self) -> Vec<(String, u64)> {
        self.inner.lag()
    }

    fn lag_unit(&self) -> LagUnit {
        self.inner.lag_unit()
    }
}

/// Reads every split of `provider` to its end with one reader: a bounded
/// source as a list of batches (a lookup join's table, tests).
pub fn read_all(provider: &dyn SourceProvider) -> Result<Vec<RecordBatch>> {
    let splits = provider.enumerator()?.list()?;
    let mut reader = provider.reader()?;
    let mut open = splits.len();
    for (i, split) in splits.into_iter().enumerate() {
        reader.add_split(i, split)?;
    }
    let mut batches = Vec::new();
    while open > 0 {
        match reader.poll()? {
            Poll::Batch(_, batch) => batches.push(batch),
            Poll::Finished(_) => open -= 1,
            // No dead-letter output here: the good rows only.
            Poll::Rejected(_, _, batch) => batches.extend(batch),
            Poll::Pending => reader.wait(Duration::from_millis(1)),
        }
    }
    Ok(batches)
}
