//! The watermark generator: bounded out-of-orderness from `WATERMARK FOR`.

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use crate::message::{MAX_WATERMARK, Timestamp};
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::{OperatorError, Result};

/// Emits `max(expr)` over the rows seen so far as the watermark, after the
/// batch that advanced it. `expr` is the source's `WATERMARK FOR col AS expr`
/// (typically `col - INTERVAL '4' SECOND`). Upstream watermarks are ignored,
/// except the final one that ends a bounded input.
#[derive(Debug)]
pub struct WatermarkOperator {
    expr: Arc<dyn PhysicalExpr>,
    current: Timestamp,
    metrics: Option<JobMetrics>,
}

impl WatermarkOperator {
    pub fn new(expr: Arc<dyn PhysicalExpr>) -> Self {
        Self {
            expr,
            current: Timestamp::MIN,
            metrics: None,
        }
    }
}

impl Operator for WatermarkOperator {
    fn name(&self) -> String {
        "Watermark".into()
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.metrics = Some(ctx.metrics.clone());
        Ok(())
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let values = self.expr.evaluate(&batch)?.into_array(batch.num_rows())?;
        let millis = cast(&values, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let millis = millis
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| {
                OperatorError::Internal(format!(
                    "watermark expression produced {}",
                    values.data_type()
                ))
            })?;
        let batch_max = max(millis);
        out.collect(batch);
        if let Some(wm) = batch_max
            && wm > self.current
        {
            self.current = wm;
            if let Some(m) = &self.metrics {
                m.set_watermark(wm);
            }
            out.emit_watermark(wm);
        }
        Ok(())
    }

    fn handle_watermark(&mut self, watermark: Timestamp, out: &mut Collector) -> Result<()> {
        if watermark == MAX_WATERMARK {
            self.current = MAX_WATERMARK;
            out.emit_watermark(watermark);
        }
        Ok(())
    }
}
