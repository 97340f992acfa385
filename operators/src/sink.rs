//! The adapter that puts a [`Sink`] at the end of an operator chain.

use datafusion::arrow::record_batch::RecordBatch;

use crate::Result;
use crate::message::Timestamp;
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Operator, OperatorContext, Sink};

pub struct SinkOperator {
    sink: Box<dyn Sink>,
    metrics: Option<JobMetrics>,
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
        }
    }
}

impl Operator for SinkOperator {
    fn name(&self) -> String {
        format!("Sink({})", self.sink.name())
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.metrics = Some(ctx.metrics.clone());
        self.sink.open(ctx)
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

    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        self.sink.flush()
    }

    fn on_close(&mut self, _out: &mut Collector) -> Result<()> {
        self.sink.finish()
    }
}
