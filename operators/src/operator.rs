//! The traits every operator, source and sink implements.
//!
//! An [`Operator`] has one required method, [`Operator::process_batch`];
//! every other hook has a default, so adding a hook later does not touch
//! every operator. Operators never see channels, other inputs, barriers in
//! flight or end-of-stream counting: the runtime ([`crate::runtime`]) does
//! that and calls the hooks in a fixed order:
//!
//! ```text
//! open ─► (process_batch | handle_watermark | handle_checkpoint | on_timer)* ─► on_close
//! ```
//!
//! `handle_watermark` is called once per *merged* watermark advance (the
//! minimum over all inputs), never with a smaller value than before.
//! `on_timer` is called on processing time, between messages, once the
//! instant [`Operator::next_timer`] names has passed, whether or not input
//! arrives: early firings, idle timeouts, processing-time watermarks.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_state::StateBackend;

use crate::Result;
use crate::checkpoint::CheckpointHandle;
use crate::message::Timestamp;
use crate::metrics::JobMetrics;

/// What an operator emits: rows, rows for a side output, or a watermark for
/// its downstream.
#[derive(Debug, Clone)]
pub enum Emit {
    Data(RecordBatch),
    /// Rows for side output `port` (1 and up; 0 is the main output), e.g.
    /// a window's late rows for a dead-letter sink. They skip the rest of
    /// the fused chain and leave by the edges attached to that port.
    Side(usize, RecordBatch),
    Watermark(Timestamp),
    /// The output will have no rows for a while (every split of a source
    /// subtask is idle): downstream, the watermark does not wait for it
    /// until it sends rows or a watermark again.
    Idle,
}

/// The side output of late rows (a window operator's dead-letter output).
pub const LATE_PORT: usize = 1;

/// The side output of a source's bad records (`'bad-data'` =
/// `'dead-letter'`).
pub const BAD_DATA_PORT: usize = 2;

/// Where a [`Collector`] hands its items on [`Collector::flush`]: the rest
/// of the fused chain.
pub(crate) type Downstream<'a> = &'a mut dyn FnMut(Emit) -> Result<()>;

/// Collects an operator's output during one hook call. The runtime takes
/// what was collected when the hook returns; an operator that emits a lot
/// in one call (a window over millions of keys firing) calls
/// [`Collector::flush`] now and then to pass it on at once instead.
#[derive(Default)]
pub struct Collector<'a> {
    items: Vec<Emit>,
    downstream: Option<Downstream<'a>>,
}

impl std::fmt::Debug for Collector<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("items", &self.items.len())
            .field("streaming", &self.downstream.is_some())
            .finish()
    }
}

impl<'a> Collector<'a> {
    /// A collector whose [`Self::flush`] hands items to `downstream`.
    pub(crate) fn streaming(downstream: Downstream<'a>) -> Self {
        Self {
            items: Vec::new(),
            downstream: Some(downstream),
        }
    }

    /// Passes what was collected so far downstream now (in order), if the
    /// runtime allows it; otherwise it stays until the hook returns.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(down) = self.downstream.as_mut() {
            for item in std::mem::take(&mut self.items) {
                down(item)?;
            }
        }
        Ok(())
    }

    /// Emits a batch (empty batches are dropped).
    pub fn collect(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.items.push(Emit::Data(batch));
        }
    }

    /// Emits a batch on side output `port` (empty batches are dropped).
    pub fn collect_side(&mut self, port: usize, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.items.push(Emit::Side(port, batch));
        }
    }

    pub fn emit_watermark(&mut self, watermark: Timestamp) {
        self.items.push(Emit::Watermark(watermark));
    }

    /// Marks the output idle (see [`Emit::Idle`]).
    pub fn emit_idle(&mut self) {
        self.items.push(Emit::Idle);
    }

    pub(crate) fn take(&mut self) -> Vec<Emit> {
        std::mem::take(&mut self.items)
    }
}

/// What an operator learns about where it runs.
#[derive(Debug, Clone)]
pub struct OperatorContext {
    /// `stage-name[subtask/parallelism]`, for messages.
    pub task_name: String,
    /// A name unique to this operator within the job, stable across runs
    /// of the same plan: its state table is named after it.
    pub operator_id: String,
    pub subtask: usize,
    pub parallelism: usize,
    pub state: Arc<dyn StateBackend>,
    pub metrics: JobMetrics,
    pub checkpoints: CheckpointHandle,
}

pub trait Operator: Send {
    /// A short name for logs and errors (`WindowAggregate`, `Project`...).
    fn name(&self) -> String;

    /// Called once before any other hook.
    fn open(&mut self, _ctx: &OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Processes one batch of input rows.
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()>;

    /// A batch of input `input` of a multi-input operator (a join: 0 is
    /// the left side, 1 the right). Channel `i` of
    /// [`crate::runtime::run_operator_harness`] is input `i`. The default
    /// ignores the input.
    fn process_input_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Collector,
    ) -> Result<()> {
        self.process_batch(batch, out)
    }

    /// A batch straight from a source, read from one of its `partition`s
    /// (splits). Only the first operator of a source's chain is called so;
    /// the default ignores the partition. The watermark generator keeps a
    /// watermark per partition.
    fn process_partition_batch(
        &mut self,
        _partition: usize,
        batch: RecordBatch,
        out: &mut Collector,
    ) -> Result<()> {
        self.process_batch(batch, out)
    }

    /// The source was given `partition` (split `split`) to read: from now
    /// on it holds the watermark back, until it ends or idles.
    fn start_partition(
        &mut self,
        _partition: usize,
        _split: &str,
        _out: &mut Collector,
    ) -> Result<()> {
        Ok(())
    }

    /// The source read the last row of `partition`: it no longer holds
    /// the watermark back.
    fn end_partition(&mut self, _partition: usize, _out: &mut Collector) -> Result<()> {
        Ok(())
    }

    /// When (processing time) the operator next wants [`Self::on_timer`]
    /// called. Asked after every hook; `None`: no timer.
    fn next_timer(&self) -> Option<Instant> {
        None
    }

    /// Processing time reached the operator's [`Self::next_timer`].
    fn on_timer(&mut self, _now: Instant, _out: &mut Collector) -> Result<()> {
        Ok(())
    }

    /// The merged input watermark advanced to `watermark`. The default
    /// forwards it; an operator that holds rows back (a window) emits what
    /// the watermark completes first, then forwards it.
    fn handle_watermark(&mut self, watermark: Timestamp, out: &mut Collector) -> Result<()> {
        out.emit_watermark(watermark);
        Ok(())
    }

    /// Every input delivered `Barrier(checkpoint)`: snapshot state now.
    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        Ok(())
    }

    /// Every input ended. Emit anything still held.
    fn on_close(&mut self, _out: &mut Collector) -> Result<()> {
        Ok(())
    }
}
