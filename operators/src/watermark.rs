//! The watermark generator: bounded out-of-orderness from `WATERMARK FOR`,
//! per split of the source.
//!
//! Each split (partition) a source subtask reads has its own watermark:
//! the highest value of the `WATERMARK FOR col AS expr` expression over its
//! rows. The subtask's watermark is the minimum over its splits, so a split
//! that is behind holds the others back and its rows are not made late by
//! the others' progress; downstream, the runtime takes the minimum over
//! subtasks. Two kinds of splits do not hold it back:
//!
//! - one that **ended** (its file or range was read to the end);
//! - one that is **idle**: it has produced no rows for the source's
//!   `'watermark.idle-timeout'` (processing time, checked on a timer, so
//!   also when no row arrives anywhere). When it produces rows again it
//!   holds the watermark back again, from where it stands. When every
//!   split is idle the watermark moves to the highest of theirs (as Flink
//!   does), the output is marked idle, and downstream stops waiting for
//!   this subtask.
//!
//! ```text
//!  split a:  12:00:07 ─┐
//!  split b:  12:00:03 ─┼─ min ─► 12:00:03 (split c idle: left out)
//!  split c:  11:59:40 ─┘
//! ```
//!
//! A split counts from when it is assigned. Each split's watermark is kept
//! in checkpoints by split id, so after a restore (at any parallelism) the
//! subtask that gets a split starts from its watermark: a row that was
//! late before the crash is late after it. The emitted watermark never
//! moves backwards.
//!
//! Over `PROCTIME()` ([`WatermarkOperator::with_processing_time`]) the
//! watermark is the wall clock, advanced on a timer whether or not rows
//! arrive, so processing-time windows close when their end passes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use crate::message::{MAX_WATERMARK, Timestamp};
use crate::metrics::{JobMetrics, unix_ms};
use crate::operator::{Collector, Operator, OperatorContext};
use crate::{OperatorError, Result};
use eddy_state::StateTable;

/// Where the generator reads processing time (a test sets its own).
pub type Clock = Box<dyn Fn() -> Instant + Send>;

/// How often a processing-time watermark follows the wall clock (Flink's
/// default auto-watermark interval).
const PROCESSING_TIME_TICK: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
struct Partition {
    /// The split's id (its key in the state table), if it came from one.
    split: Option<String>,
    /// Highest watermark expression value seen, `Timestamp::MIN` if none.
    max: Timestamp,
    /// When it last delivered rows.
    active_at: Instant,
    ended: bool,
    /// Its idleness was taken into account (see `advance`).
    marked_idle: bool,
}

/// Emits the minimum over the subtask's live splits of their `max(expr)`
/// as the watermark, after the batch that advanced it. Upstream
/// watermarks are ignored, except the final one that ends a bounded input.
pub struct WatermarkOperator {
    expr: Arc<dyn PhysicalExpr>,
    idle_timeout: Option<Duration>,
    processing_time: bool,
    partitions: BTreeMap<usize, Partition>,
    current: Timestamp,
    /// Every live split is idle, and `Idle` was emitted.
    idle: bool,
    last_tick: Option<Instant>,
    clock: Clock,
    table: Option<Arc<dyn StateTable>>,
    metrics: Option<JobMetrics>,
    /// See [`Self::with_monotonic_column`].
    monotonic_in: Option<usize>,
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

/// The row holding the latest value of timestamp column `column`, if any
/// row has one.
fn latest_row(column: &ArrayRef) -> Result<Option<usize>> {
    let millis = cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    let millis = millis
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| {
            OperatorError::Internal(format!("event time column of type {}", column.data_type()))
        })?;
    Ok(millis
        .iter()
        .enumerate()
        .filter_map(|(row, v)| Some((v?, row)))
        .max()
        .map(|(_, row)| row))
}

impl WatermarkOperator {
    pub fn new(expr: Arc<dyn PhysicalExpr>) -> Self {
        Self {
            expr,
            idle_timeout: None,
            processing_time: false,
            partitions: BTreeMap::new(),
            current: Timestamp::MIN,
            idle: false,
            last_tick: None,
            clock: Box::new(Instant::now),
            table: None,
            metrics: None,
            monotonic_in: None,
        }
    }

    /// A split without rows for this long stops holding the watermark
    /// back.
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The watermark also follows the wall clock (a `PROCTIME()` column).
    pub fn with_processing_time(mut self, on: bool) -> Self {
        self.processing_time = on;
        self
    }

    /// Reads processing time from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The expression never decreases as timestamp column `column` grows
    /// (it is the column, or the column minus a constant: a bounded
    /// out-of-orderness): a batch's watermark is then the expression of its
    /// latest row alone, not of every row.
    pub fn with_monotonic_column(mut self, column: Option<usize>) -> Self {
        self.monotonic_in = column;
        self
    }

    /// The highest watermark expression value over `batch`, if any row has one.
    fn batch_max(&self, batch: &RecordBatch) -> Result<Option<Timestamp>> {
        let latest;
        let batch = match self.monotonic_in {
            Some(column) => match latest_row(batch.column(column))? {
                Some(row) => {
                    latest = batch.slice(row, 1);
                    &latest
                }
                None => return Ok(None),
            },
            None => batch,
        };
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

    /// When `p` is (or was) idle from, if there is an idle timeout.
    fn idle_at(&self, p: &Partition) -> Option<Instant> {
        self.idle_timeout.map(|t| p.active_at + t)
    }

    /// Emits the minimum over live, active splits if it moved forward.
    /// When every live split is idle, the watermark moves to the highest
    /// of theirs, and the output is marked idle.
    fn advance(&mut self, now: Instant, out: &mut Collector) {
        let timeout = self.idle_timeout;
        let (mut any_live, mut min_active, mut highest) =
            (false, None::<Timestamp>, Timestamp::MIN);
        for p in self.partitions.values_mut().filter(|p| !p.ended) {
            any_live = true;
            p.marked_idle = timeout.is_some_and(|t| p.active_at + t <= now);
            highest = highest.max(p.max);
            if !p.marked_idle {
                min_active = Some(min_active.map_or(p.max, |m| m.min(p.max)));
            }
        }
        match min_active {
            Some(wm) => self.emit(wm, out),
            // Every split is idle: none will move on its own. As in Flink,
            // the watermark moves to the highest of theirs.
            None if any_live => {
                self.emit(highest, out);
                if !self.idle {
                    self.idle = true;
                    out.emit_idle();
                }
            }
            None => {}
        }
    }

    fn emit(&mut self, wm: Timestamp, out: &mut Collector) {
        if wm > self.current {
            self.current = wm;
            if let Some(m) = &self.metrics {
                m.set_watermark(wm);
            }
            out.emit_watermark(wm);
        }
    }

    fn partition(&mut self, partition: usize, now: Instant) -> &mut Partition {
        self.partitions.entry(partition).or_insert(Partition {
            split: None,
            max: Timestamp::MIN,
            active_at: now,
            ended: false,
            marked_idle: false,
        })
    }
}

impl Operator for WatermarkOperator {
    fn name(&self) -> String {
        "Watermark".into()
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.metrics = Some(ctx.metrics.clone());
        self.last_tick = Some((self.clock)());
        // Shared by the subtasks: each writes the splits it holds.
        self.table = Some(ctx.state.open_table(&ctx.operator_id)?);
        Ok(())
    }

    /// Each live split's watermark is part of the checkpoint, by split id.
    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        let Some(table) = &self.table else {
            return Ok(());
        };
        for p in self.partitions.values().filter(|p| !p.ended) {
            if let Some(split) = &p.split
                && p.max > Timestamp::MIN
            {
                table.put(split.as_bytes(), &p.max.to_le_bytes())?;
            }
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
        let rows = batch.num_rows() > 0;
        let p = self.partition(partition, now);
        if rows {
            p.active_at = now;
        }
        if let Some(m) = batch_max {
            p.max = p.max.max(m);
        }
        if rows {
            // The rows go downstream: the output is active again.
            self.idle = false;
        }
        out.collect(batch);
        self.advance(now, out);
        Ok(())
    }

    /// A new split holds the watermark back from its checkpointed
    /// watermark, or from nothing.
    fn start_partition(
        &mut self,
        partition: usize,
        split: &str,
        _out: &mut Collector,
    ) -> Result<()> {
        let restored = match &self.table {
            Some(table) => table.get(split.as_bytes())?,
            None => None,
        };
        let now = (self.clock)();
        let p = self.partition(partition, now);
        p.split = Some(split.to_string());
        p.ended = false;
        p.active_at = now;
        p.marked_idle = false;
        if let Some(bytes) = restored.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()) {
            p.max = p.max.max(i64::from_le_bytes(bytes));
        }
        self.idle = false;
        // No watermark yet: a subtask given several restored splits at
        // once would emit the first one's before the others hold it back,
        // and their rows between would be late. The next batch, end or
        // timer advances it.
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

    fn next_timer(&self) -> Option<Instant> {
        let tick = self.processing_time.then(|| {
            self.last_tick
                .map_or_else(Instant::now, |t| t + PROCESSING_TIME_TICK)
        });
        // The next split to go idle (due at once if it went and that was
        // not taken into account yet).
        let idle = self
            .partitions
            .values()
            .filter(|p| !p.ended && !p.marked_idle)
            .filter_map(|p| self.idle_at(p))
            .min();
        [tick, idle].into_iter().flatten().min()
    }

    fn on_timer(&mut self, now: Instant, out: &mut Collector) -> Result<()> {
        if self.processing_time {
            self.last_tick = Some(now);
            // Rows stamped before now (in this chain, before this call)
            // are not late: the watermark stays a millisecond behind.
            self.emit(unix_ms() as Timestamp - 1, out);
        }
        self.advance((self.clock)(), out);
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

    #[test]
    fn when_every_split_idles_the_highest_watermark_counts() {
        let (mut op, now) = generator(Some(Duration::from_secs(10)));
        let mut out = Collector::default();
        op.start_partition(0, "a", &mut out).unwrap();
        op.start_partition(1, "b", &mut out).unwrap();
        // Split b never has a row; a is at 12 s, held back by b.
        *now.lock().unwrap() += Duration::from_millis(1);
        op.process_partition_batch(0, batch(&[12_000]), &mut out)
            .unwrap();
        assert!(out.take().iter().all(|e| !matches!(e, Emit::Watermark(_))));
        // Both timeouts pass before any timer runs: every split is idle,
        // the highest watermark (a's) counts, then the output is idle.
        *now.lock().unwrap() += Duration::from_secs(30);
        let due = op.next_timer().unwrap();
        op.on_timer(due, &mut out).unwrap();
        let items = out.take();
        assert!(
            matches!(items[..], [Emit::Watermark(12_000), Emit::Idle]),
            "{items:?}"
        );
        // Nothing more happens until rows arrive.
        assert_eq!(op.next_timer(), None);
    }

    #[test]
    fn a_split_keeps_its_watermark_across_a_restore_in_another_subtask() {
        let state = Arc::new(eddy_state::MemoryBackend::default());
        let ctx = |subtask| OperatorContext {
            task_name: "t".into(),
            operator_id: "wm".into(),
            subtask,
            parallelism: 2,
            state: state.clone(),
            metrics: JobMetrics::default(),
            checkpoints: crate::checkpoint::CheckpointHandle::default(),
        };
        let (mut first, _) = generator(None);
        first.open(&ctx(0)).unwrap();
        let mut out = Collector::default();
        first.start_partition(3, "file@0", &mut out).unwrap();
        first
            .process_partition_batch(3, batch(&[7_000]), &mut out)
            .unwrap();
        first.handle_checkpoint(1, &mut out).unwrap();
        // Restored at another parallelism: subtask 1 gets the split, under
        // another number, and starts from its watermark.
        let (mut second, _) = generator(None);
        second.open(&ctx(1)).unwrap();
        let mut out = Collector::default();
        second.start_partition(0, "file@0", &mut out).unwrap();
        assert_eq!(watermarks(&mut out), Vec::<i64>::new());
        // Its next rows, older than its watermark, do not move it back.
        second
            .process_partition_batch(0, batch(&[5_000]), &mut out)
            .unwrap();
        assert_eq!(watermarks(&mut out), [7_000]);
    }

    /// A subtask given two restored splits at once must not emit the first
    /// one's watermark before the second holds it back: the second's rows
    /// in between would be late.
    #[test]
    fn restored_splits_taken_together_hold_each_other_back() {
        let state = Arc::new(eddy_state::MemoryBackend::default());
        let ctx = OperatorContext {
            task_name: "t".into(),
            operator_id: "wm".into(),
            subtask: 0,
            parallelism: 1,
            state: state.clone(),
            metrics: JobMetrics::default(),
            checkpoints: crate::checkpoint::CheckpointHandle::default(),
        };
        let (mut first, _) = generator(None);
        first.open(&ctx).unwrap();
        let mut out = Collector::default();
        first.start_partition(0, "ahead", &mut out).unwrap();
        first.start_partition(1, "behind", &mut out).unwrap();
        first
            .process_partition_batch(0, batch(&[9_000]), &mut out)
            .unwrap();
        first
            .process_partition_batch(1, batch(&[2_000]), &mut out)
            .unwrap();
        first.handle_checkpoint(1, &mut out).unwrap();
        let (mut second, _) = generator(None);
        second.open(&ctx).unwrap();
        let mut out = Collector::default();
        second.start_partition(0, "ahead", &mut out).unwrap();
        second.start_partition(1, "behind", &mut out).unwrap();
        second
            .process_partition_batch(1, batch(&[3_000]), &mut out)
            .unwrap();
        assert_eq!(watermarks(&mut out), [3_000]);
    }
}
