//! The adapter that puts a [`Sink`] at the end of an operator chain, and
//! drives its two-phase commit.
//!
//! At checkpoint barrier `n` the sink makes its output durable
//! ([`Sink::pre_commit`]); the position it returns is stored in this
//! operator's state table (so it is part of checkpoint `n`) and its renames
//! are handed to the coordinator, which does them once `n` is complete. At
//! the end of input the last part is handed over the same way, for the
//! job's final checkpoint. Without a coordinator (tests) renames are done
//! at once. On open the sink is told the checkpoint the job resumed from,
//! with the position it stored there.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_state::StateTable;
use eddy_state::checkpoint::Commit;

use crate::Result;
use crate::checkpoint::{CheckpointHandle, FINAL, publish};
use crate::message::Timestamp;
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Operator, OperatorContext, Sink};

pub struct SinkOperator {
    sink: Box<dyn Sink>,
    metrics: Option<JobMetrics>,
    checkpoints: CheckpointHandle,
    table: Option<Arc<dyn StateTable>>,
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
    pub fn new(sink: Box<dyn Sink>) -> Self {
        Self {
            sink,
            metrics: None,
            checkpoints: CheckpointHandle::default(),
            table: None,
            key: Vec::new(),
            last_barrier: None,
        }
    }

    fn hand_over(&self, checkpoint: u64, commits: Vec<Commit>) -> Result<()> {
        if self.checkpoints.enabled() {
            self.checkpoints.add_commits(checkpoint, commits);
            Ok(())
        } else {
            publish(&commits)
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
        let table = ctx.state.open_table(&ctx.operator_id)?;
        self.key = (ctx.subtask as u64).to_be_bytes().to_vec();
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

    fn handle_watermark(&mut self, _watermark: Timestamp, _out: &mut Collector) -> Result<()> {
        Ok(())
    }

    fn handle_checkpoint(&mut self, checkpoint: u64, _out: &mut Collector) -> Result<()> {
        self.last_barrier = Some(checkpoint);
        let commit = self.sink.pre_commit(checkpoint, false)?;
        if let (Some(position), Some(table)) = (&commit.position, &self.table) {
            table.put(&self.key, position)?;
        }
        self.hand_over(checkpoint, commit.commits)
    }

    fn on_close(&mut self, _out: &mut Collector) -> Result<()> {
        self.sink.finish()?;
        if self.checkpoints.stopping() {
            // Stopped: the last checkpoint covers everything to publish.
            return Ok(());
        }
        let id = self.checkpoints.next_id(self.last_barrier);
        let commit = self.sink.pre_commit(id, true)?;
        self.hand_over(FINAL, commit.commits)
    }
}
