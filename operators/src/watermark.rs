//! The watermark generator: bounded out-of-orderness from `WATERMARK FOR`,
//! per source partition.
//!
//! Each partition (split) of a source has its own watermark: the highest
//! value of the `WATERMARK FOR col AS expr` expression over its rows. The
//! source's watermark is the minimum over its partitions, so a partition
//! that is behind holds the others back and its rows are not made late by
//! the others' progress. Two kinds of partitions do not hold it back:
//!
//! - one that **ended** (its file was read to the end);
//! - one that is **idle**: it has produced no rows for the source's
//!   `'watermark.idle-timeout'` (processing time). When it produces rows
//!   again it holds the watermark back again, from where it stands.
//!
//! ```text
//!  partition 0:  12:00:07 ─┐
//!  partition 1:  12:00:03 ─┼─ min ─► 12:00:03 (partition 2 idle: left out)
//!  partition 2:  11:59:40 ─┘
//! ```
//!
//! The emitted watermark never moves backwards. A partition counts from its
//! first batch on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use crate::message::{MAX_WATERMARK, Timestamp};
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::{OperatorError, Result};
use eddy_state::StateTable;

/// The generator's entry in its state table.
const STATE_KEY: &[u8] = b"watermarks";

/// Where the generator reads processing time (a test sets its own).
pub type Clock = Box<dyn Fn() -> Instant + Send>;

#[derive(Debug, Clone, Copy)]
struct Partition {
    /// Highest watermark expression value seen, `Timestamp::MIN` if none.
    max: Timestamp,
    /// When it last delivered rows.
    active_at: Instant,
    ended: bool,
}

/// Emits the minimum over the source's live partitions of their
/// `max(expr)` as the watermark, after the batch that advanced it.
/// Upstream watermarks are ignored, except the final one that ends a
/// bounded input.
pub struct WatermarkOperator {
    expr: Arc<dyn PhysicalExpr>,
    idle_timeout: Option<Duration>,
    partitions: BTreeMap<usize, Partition>,
    current: Timestamp,
    clock: Clock,
    table: Option<Arc<dyn StateTable>>,
    metrics: Option<JobMetrics>,
}

impl std::fmt::Debug for WatermarkOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkOperator")
            .field("current", &self.current)
            .field("partitions", &self.partitions)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl WatermarkOperator {
    pub fn new(expr: Arc<dyn PhysicalExpr>) -> Self {
        Self {
            expr,
            idle_timeout: None,
            partitions: BTreeMap::new(),
            current: Timestamp::MIN,
            clock: Box::new(Instant::now),
            table: None,
            metrics: None,
        }
    }

    /// A partition without rows for this long stops holding the watermark
    /// back.
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Reads processing time from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The highest watermark expression value over `batch`, if any row has one.
    fn batch_max(&self, batch: &RecordBatch) -> Result<Option<Timestamp>> {
        let values = self.expr.evaluate(batch)?.into_array(batch.num_rows())?;
        let millis = cast(&values, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let millis = millis
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| {
                OperatorError::Internal(format!(
                    "watermark expression produced {}",
                    values.data_type()
                ))
            })?;
        Ok(max(millis))
    }

    /// `current`, then `(partition, max, ended)` per partition.
    fn encode(&self) -> Vec<u8> {
        let mut out = self.current.to_le_bytes().to_vec();
        for (&id, p) in &self.partitions {
            out.extend_from_slice(&(id as u64).to_le_bytes());
            out.extend_from_slice(&p.max.to_le_bytes());
            out.push(u8::from(p.ended));
        }
        out
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<()> {
        let bad = || OperatorError::Internal("bad watermark generator state".into());
        let i64_at = |at: usize| -> Result<i64> {
            let b: [u8; 8] = bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad)?;
            Ok(i64::from_le_bytes(b))
        };
        self.current = i64_at(0)?;
        let now = (self.clock)();
        let mut at = 8;
        while at < bytes.len() {
            let id = i64_at(at)? as usize;
            let max = i64_at(at + 8)?;
            let ended = *bytes.get(at + 16).ok_or_else(bad)? != 0;
            self.partitions.insert(
                id,
                Partition {
                    max,
                    active_at: now,
                    ended,
                },
            );
            at += 17;
        }
        Ok(())
    }

    /// Emits the minimum over live partitions if it moved forward.
    fn advance(&mut self, now: Instant, out: &mut Collector) {
        let idle = |p: &Partition| {
            self.idle_timeout
                .is_some_and(|t| now.saturating_duration_since(p.active_at) >= t)
        };
        let Some(wm) = self
            .partitions
            .values()
            .filter(|p| !p.ended && !idle(p))
            .map(|p| p.max)
            .min()
        else {
            return;
        };
        if wm > self.current {
            self.current = wm;
            if let Some(m) = &self.metrics {
                m.set_watermark(wm);
            }
            out.emit_watermark(wm);
        }
    }
}

impl Operator for WatermarkOperator {
    fn name(&self) -> String {
        "Watermark".into()
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.metrics = Some(ctx.metrics.clone());
        let table = ctx
            .state
            .open_table(&format!("{}-{}", ctx.operator_id, ctx.subtask))?;
        if let Some(bytes) = table.get(STATE_KEY)? {
            self.decode(&bytes)?;
        }
        self.table = Some(table);
        Ok(())
    }

    /// The partitions' progress is part of the checkpoint, so that a
    /// recovered job holds the same watermark: a row that was late before
    /// the crash is late after it.
    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        if let Some(table) = &self.table {
            table.put(STATE_KEY, &self.encode())?;
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        self.process_partition_batch(0, batch, out)
    }

    fn process_partition_batch(
        &mut self,
        partition: usize,
        batch: RecordBatch,
        out: &mut Collector,
    ) -> Result<()> {
        let batch_max = self.batch_max(&batch)?;
        let now = (self.clock)();
        let p = self.partitions.entry(partition).or_insert(Partition {
            max: Timestamp::MIN,
            active_at: now,
            ended: false,
        });
        if batch.num_rows() > 0 {
            p.active_at = now;
        }
        if let Some(m) = batch_max {
            p.max = p.max.max(m);
        }
        out.collect(batch);
        self.advance(now, out);
        Ok(())
    }

    fn end_partition(&mut self, partition: usize, out: &mut Collector) -> Result<()> {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.ended = true;
        }
        let now = (self.clock)();
        self.advance(now, out);
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::col;

    use super::*;
    use crate::operator::Emit;

    fn batch(times: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        )]));
        let ts = TimestampMillisecondArray::from(times.to_vec());
        RecordBatch::try_new(schema, vec![Arc::new(ts)]).unwrap()
    }

    /// A generator over `ts` (no delay) with a hand-moved clock.
    fn generator(idle: Option<Duration>) -> (WatermarkOperator, Arc<Mutex<Instant>>) {
        let now = Arc::new(Mutex::new(Instant::now()));
        let clock = now.clone();
        let expr = col("ts", &batch(&[]).schema()).unwrap();
        let op = WatermarkOperator::new(expr)
            .with_idle_timeout(idle)
            .with_clock(Box::new(move || *clock.lock().unwrap()));
        (op, now)
    }

    fn watermarks(out: &mut Collector) -> Vec<Timestamp> {
        out.take()
            .into_iter()
            .filter_map(|e| match e {
                Emit::Watermark(w) => Some(w),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_slowest_partition_holds_the_watermark() {
        let (mut op, _) = generator(None);
        let mut out = Collector::default();
        op.process_partition_batch(0, batch(&[1_000]), &mut out)
            .unwrap();
        assert_eq!(watermarks(&mut out), [1_000]);
        op.process_partition_batch(1, batch(&[200]), &mut out)
            .unwrap();
        // Partition 1 is behind: no new watermark, and never a smaller one.
        assert_eq!(watermarks(&mut out), Vec::<Timestamp>::new());
        op.process_partition_batch(0, batch(&[5_000]), &mut out)
            .unwrap();
        assert_eq!(watermarks(&mut out), Vec::<Timestamp>::new());
        op.process_partition_batch(1, batch(&[3_000]), &mut out)
            .unwrap();
        assert_eq!(watermarks(&mut out), [3_000]);
        // Partition 1 ends: partition 0 alone decides.
        op.end_partition(1, &mut out).unwrap();
        assert_eq!(watermarks(&mut out), [5_000]);
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark_back() {
        let (mut op, now) = generator(Some(Duration::from_secs(10)));
        let mut out = Collector::default();
        op.process_partition_batch(1, batch(&[100]), &mut out)
            .unwrap();
        op.process_partition_batch(0, batch(&[2_000]), &mut out)
            .unwrap();
        assert_eq!(watermarks(&mut out), [100]);
        // Nine seconds of silence on partition 1: still active.
        *now.lock().unwrap() += Duration::from_secs(9);
        op.process_partition_batch(0, batch(&[4_000]), &mut out)
            .unwrap();
        assert_eq!(watermarks(&mut out), Vec::<Timestamp>::new());
        // Past the timeout: partition 0 alone decides.
        *now.lock().unwrap() += Duration::from_secs(2);
        op.process_partition_batch(0, batch(&[6_000]), &mut out)
            .unwrap();
        assert_eq!(watermarks(&mut out), [6_000]);
        // Partition 1 wakes up behind: it holds the watermark again, which
        // does not move back.
        op.process_partition_batch(1, batch(&[300]), &mut out)
            .unwrap();
        op.process_partition_batch(0, batch(&[8_000]), &mut out)
            .unwrap();
        assert_eq!(watermarks(&mut out), Vec::<Timestamp>::new());
        op.process_partition_batch(1, batch(&[7_000]), &mut out)
            .unwrap();
        assert_eq!(watermarks(&mut out), [7_000]);
    }
}
