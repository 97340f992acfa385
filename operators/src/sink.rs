//! Sinks, and the one two-phase commit protocol every sink follows.
//!
//! ```text
//!  rows ──► Sink::write_batch ... Barrier(n) ──► Sink::pre_commit(n) ──► SinkCommit { position, committable }
//!                                                                              │ stored in checkpoint n
//!  checkpoint n complete (manifest durable) ──► Committer::commit([committable, ...])   (phase two)
//!  restore from n ──► Committer::recover(committables, positions of n) (idempotent) ──► Sink::recover(n, position): abort the rest
//! ```
//!
//! A sink's writer ([`Sink`]) runs in its subtask; its [`Committer`] runs
//! where the checkpoint completes (the coordinator) and again at recovery,
//! so it is made from the plan ([`SinkProvider::committer`]), not from a
//! writer. At recovery it also gets the positions the writers kept in the
//! restored checkpoint: a sink whose pending output cannot be resumed
//! from a committable alone (a Kafka transaction of a dead producer) keeps
//! that output in its position and publishes it from there. A committable
//! is opaque, serialisable data: a file sink's
//! pending renames, a Kafka transaction's id and epoch, a database
//! transaction's id. A sink that cannot take part says so with its
//! [`DeliveryGuarantee`], which EXPLAIN shows.
//!
//! [`SinkOperator`] puts a sink at the end of an operator chain and drives
//! the protocol: the position goes into this operator's state table (so it
//! is part of checkpoint `n`), the committable to the coordinator. At the
//! end of input the last part is handed over the same way, for the job's
//! final checkpoint. Without a coordinator (tests) it commits at once.

use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_state::StateTable;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::checkpoint::{CheckpointHandle, FINAL};
use crate::message::Timestamp;
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Operator, OperatorContext};

/// What a sink promises about its output after a failure and a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryGuarantee {
    /// Every row is visible exactly once: output is committed with the
    /// checkpoint that covers it.
    ExactlyOnce,
    /// No row is lost; rows after the last checkpoint are written again.
    AtLeastOnce,
    /// Nothing is promised (the rows are discarded, or shown once).
    None,
}

impl DeliveryGuarantee {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryGuarantee::ExactlyOnce => "exactly-once",
            DeliveryGuarantee::AtLeastOnce => "at-least-once",
            DeliveryGuarantee::None => "none",
        }
    }
}

/// What a sink hands a checkpoint at a barrier: see [`Sink::pre_commit`].
#[derive(Debug, Clone, Default)]
pub struct SinkCommit {
    /// Bytes kept with the sink's state and given back to
    /// [`Sink::recover`] (a file's committed length).
    pub position: Option<Vec<u8>>,
    /// What makes the part written since the last barrier visible, given
    /// to the [`Committer`] once the checkpoint is complete.
    pub committable: Option<serde_json::Value>,
}

/// A destination of record batches: the writer, in one subtask.
pub trait Sink: Send {
    fn name(&self) -> String;

    fn open(&mut self, _ctx: &OperatorContext) -> Result<()> {
        Ok(())
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()>;

    /// The input's watermark advanced (a file sink commits partitions by
    /// it). The default ignores it.
    fn on_watermark(&mut self, _watermark: Timestamp) -> Result<()> {
        Ok(())
    }

    /// Makes everything written so far durable or visible.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// Phase one of the commit, at the barrier of `checkpoint`: make what
    /// was written since the last barrier durable (but not yet visible, if
    /// the sink can hold it back) and describe how to publish it. `last`:
    /// the input ended and this is the final part. The default flushes.
    fn pre_commit(&mut self, _checkpoint: u64, _last: bool) -> Result<SinkCommit> {
        self.flush()?;
        Ok(SinkCommit::default())
    }

    /// Resume after a restore from `checkpoint` (0: a fresh start), whose
    /// `pre_commit` returned `position`. The committables of `checkpoint`
    /// were committed already; abort or delete whatever was begun after it.
    fn recover(&mut self, _checkpoint: u64, _position: Option<&[u8]>) -> Result<()> {
        Ok(())
    }

    /// The stream ended: write any trailer and flush.
    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}

/// Phase two of the commit: makes output visible.
pub trait Committer: Send + Sync + Debug {
    /// Publishes what `committables` (from [`SinkCommit::committable`])
    /// stand for. Called once their checkpoint is complete, and again when
    /// a job is restored from it: committing twice must change nothing.
    fn commit(&self, committables: &[serde_json::Value]) -> Result<()>;

    /// Phase two again, when a job is restored from the checkpoint that
    /// holds `committables` (called for every sink, with none if it has
    /// none), before any writer opens. `positions`: what each writer's
    /// [`Sink::pre_commit`] returned as its position in that checkpoint,
    /// by subtask (of the parallelism the job had then). The default
    /// commits.
    fn recover(
        &self,
        committables: &[serde_json::Value],
        _positions: &std::collections::BTreeMap<usize, Vec<u8>>,
    ) -> Result<()> {
        self.commit(committables)
    }
}

/// The key of a sink subtask's position in its operator's state table.
pub fn position_key(subtask: usize) -> [u8; 8] {
    (subtask as u64).to_be_bytes()
}

/// A sink as the plan declares it, options checked: makes the writer of
/// each subtask and the committer.
pub trait SinkProvider: Send + Sync + Debug {
    fn writer(&self) -> Result<Box<dyn Sink>>;

    /// `None` for sinks without a second phase.
    fn committer(&self) -> Option<Arc<dyn Committer>> {
        None
    }

    fn guarantee(&self) -> DeliveryGuarantee;
}

/// The operator that drives a [`Sink`] (see the module docs).
pub struct SinkOperator {
    sink: Box<dyn Sink>,
    committer: Option<Arc<dyn Committer>>,
    metrics: Option<JobMetrics>,
    checkpoints: CheckpointHandle,
    table: Option<Arc<dyn StateTable>>,
    /// The operator id: names this sink's committables in checkpoints.
    id: String,
    key: Vec<u8>,
    last_barrier: Option<u64>,
}

impl std::fmt::Debug for SinkOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkOperator")
            .field("sink", &self.sink.name())
            .finish()
    }
}

impl SinkOperator {
    pub fn new(sink: Box<dyn Sink>, committer: Option<Arc<dyn Committer>>) -> Self {
        Self {
            sink,
            committer,
            metrics: None,
            checkpoints: CheckpointHandle::default(),
            table: None,
            id: String::new(),
            key: Vec::new(),
            last_barrier: None,
        }
    }

    /// Gives a part's committable to the checkpoint that publishes it (or
    /// commits it at once in a job without checkpoints).
    fn hand_over(&self, checkpoint: u64, committable: Option<serde_json::Value>) -> Result<()> {
        let (Some(committable), Some(committer)) = (committable, &self.committer) else {
            return Ok(());
        };
        if self.checkpoints.enabled() {
            self.checkpoints
                .add_committable(checkpoint, &self.id, committable);
            Ok(())
        } else {
            committer.commit(&[committable])
        }
    }
}

impl Operator for SinkOperator {
    fn name(&self) -> String {
        format!("Sink({})", self.sink.name())
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.metrics = Some(ctx.metrics.clone());
        self.checkpoints = ctx.checkpoints.clone();
        self.id = ctx.operator_id.clone();
        let table = ctx.state.open_table(&ctx.operator_id)?;
        self.key = position_key(ctx.subtask).to_vec();
        self.sink.open(ctx)?;
        let restored = self.checkpoints.restored();
        let position = match restored {
            Some(_) => table.get(&self.key)?,
            None => None,
        };
        self.sink
            .recover(restored.unwrap_or(0), position.as_deref())?;
        self.table = Some(table);
        Ok(())
    }

    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Collector) -> Result<()> {
        if let Some(m) = &self.metrics {
            m.add_rows_out(batch.num_rows() as u64);
        }
        self.sink.write_batch(&batch)
    }

    fn handle_watermark(&mut self, watermark: Timestamp, _out: &mut Collector) -> Result<()> {
        self.sink.on_watermark(watermark)
    }

    fn handle_checkpoint(&mut self, checkpoint: u64, _out: &mut Collector) -> Result<()> {
        self.last_barrier = Some(checkpoint);
        let commit = self.sink.pre_commit(checkpoint, false)?;
        if let (Some(position), Some(table)) = (&commit.position, &self.table) {
            table.put(&self.key, position)?;
        }
        self.hand_over(checkpoint, commit.committable)
    }

    fn on_close(&mut self, _out: &mut Collector) -> Result<()> {
        self.sink.finish()?;
        if self.checkpoints.stopping() {
            // Stopped: the last checkpoint covers everything to publish.
            return Ok(());
        }
        let id = self.checkpoints.next_id(self.last_barrier);
        let commit = self.sink.pre_commit(id, true)?;
        // Part of the final checkpoint, which is written after every task
        // closed.
        if let (Some(position), Some(table)) = (&commit.position, &self.table) {
            table.put(&self.key, position)?;
        }
        self.hand_over(FINAL, commit.committable)
    }
}
