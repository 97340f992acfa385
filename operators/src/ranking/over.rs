//! OVER aggregates: `agg(x) OVER (PARTITION BY p ORDER BY o frame)` adds to
//! every row the aggregate of the rows in its frame:
//!
//! ```text
//!   ROWS BETWEEN n PRECEDING AND CURRENT ROW     the row and the n before it
//!   RANGE BETWEEN INTERVAL d PRECEDING AND CURRENT ROW
//!                                                rows with o in [o - d, o]
//!                                                (rows tied with it included)
//!   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW   every row up to it
//!   RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW  and those tied with it
//! ```
//!
//! Two modes:
//! - **EventTime** (append-only input, ordered by its event-time attribute
//!   ascending; Flink's semantics): a row waits until the watermark passes
//!   its time, when no row can still come before it; rows are then emitted
//!   in time order, append-only, each once. A row already behind the
//!   watermark is late: dropped and counted. State: the rows a later frame
//!   can still reach (the last n, or those within d of the watermark).
//! - **Updating** (any other input or order, e.g. over an updating Top-N,
//!   Nexmark q6, which Flink rejects): the output is kept equal to the OVER
//!   query over the input's current rows. An inserted or retracted row
//!   changes its own result and those of the rows whose frame reaches it;
//!   each changed result is retracted (`-U`) and emitted anew (`+U`), as a
//!   changelog. Rows tied on the ORDER BY key are in arrival order. State:
//!   every current row (UNBOUNDED).
//!
//! Each result is computed afresh from its frame's rows with DataFusion's
//! accumulators, except for an UNBOUNDED frame in event-time mode: there a
//! partition keeps one running accumulator per aggregate (checkpointed
//! with the partition) and no emitted row. Rows are kept
//! in arrow's row format per partition, written to the state backend at
//! barriers for the partitions that changed.

use std::cmp::Reverse;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int8Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::RowConverter;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use serde::{Deserialize, Serialize};

use crate::aggregate::{accumulator_from_state, accumulator_state_columns, evaluate_args};
use crate::operator::{Collector, Operator, OperatorContext};
use crate::partition::key_groups;
use crate::partitions::{Converters, Entry, PartitionStore};
use crate::ttl::StateTtl;
use crate::updating::{OP_COLUMN, OP_DELETE, OP_INSERT, OP_UPDATE_AFTER, OP_UPDATE_BEFORE};
use crate::{OperatorError, Result};

/// Which rows of a partition a row's aggregate covers (up to itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverFrame {
    /// The row and this many rows before it.
    Rows(u64),
    /// Rows whose ORDER BY time is within this many ms before the row's
    /// (and the rows tied with it).
    RangeMs(i64),
    /// Every row before it (`UNBOUNDED PRECEDING`), and with `rows: false`
    /// (RANGE) those tied with it on the ORDER BY time.
    Unbounded { rows: bool },
}

impl OverFrame {
    /// A RANGE frame: over the ORDER BY time, ties included.
    fn by_time(self) -> bool {
        matches!(
            self,
            OverFrame::RangeMs(_) | OverFrame::Unbounded { rows: false }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverMode {
    EventTime,
    Updating,
}

/// An OVER window over an input (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverSpec {
    /// Input columns of the partition key (empty: one partition).
    pub partition: Vec<usize>,
    /// The ORDER BY column and `true` for DESC. A RANGE frame needs a
    /// timestamp in ascending order.
    pub order: (usize, bool),
    pub frame: OverFrame,
    /// The input's changelog column (its last), when it is updating.
    pub op_column: Option<usize>,
    pub mode: OverMode,
    /// Partitions idle this long (processing time, or event time) are dropped
    /// (`'table.exec.state.ttl'`; see [`crate::ttl`]); rows still waiting
    /// for the watermark are kept.
    #[serde(default)]
    pub state_ttl_ms: Option<i64>,
    /// The time-to-live is event time: measured on the watermark
    /// (`'table.exec.state.ttl.time-domain' = 'event-time'`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_ttl_event_time: bool,
}

impl OverSpec {
    pub fn emits_changelog(&self) -> bool {
        self.mode == OverMode::Updating
    }

    /// The input's columns (without `_op`), one column per aggregate, and
    /// `_op` if the output is a changelog.
    pub fn output_schema(&self, input: &Schema, aggregates: &[Field]) -> SchemaRef {
        let width = self.op_column.unwrap_or(input.fields().len());
        let mut fields: Vec<Field> = input.fields()[..width]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(aggregates.iter().cloned());
        if self.emits_changelog() {
            fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        }
        Arc::new(Schema::new(fields))
    }
}

/// The frame `[lo, hi]` of entry `i`.
fn frame_of(frame: OverFrame, entries: &[Entry], i: usize) -> (usize, usize) {
    match frame {
        OverFrame::Rows(n) => (i.saturating_sub(n as usize), i),
        OverFrame::RangeMs(d) => {
            let t = entries[i].time;
            let lo = entries.partition_point(|e| e.time < t.saturating_sub(d));
            let hi = entries.partition_point(|e| e.time <= t) - 1;
            (lo, hi)
        }
        OverFrame::Unbounded { rows: true } => (0, i),
        OverFrame::Unbounded { rows: false } => {
            let t = entries[i].time;
            (0, entries.partition_point(|e| e.time <= t) - 1)
        }
    }
}

/// The OVER aggregate operator (see the module docs).
pub struct OverAggregateOperator {
    spec: OverSpec,
    /// Input columns that form a row (all but `_op`).
    width: usize,
    output: SchemaRef,
    partition_converter: Option<RowConverter>,
    order_converter: RowConverter,
    frames: Frames,
    store: PartitionStore,
}

/// What computing a row's results takes: its frame, the aggregates, and
/// how stored rows decode.
struct Frames {
    frame: OverFrame,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    row_converter: RowConverter,
    /// The input without `_op`: what stored rows decode to.
    rows_schema: SchemaRef,
}

impl std::fmt::Debug for OverAggregateOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverAggregateOperator")
            .field("spec", &self.spec)
            .field("partitions", &self.store.partitions.len())
            .finish_non_exhaustive()
    }
}

/// Output rows being collected: row-format rows, aggregate values, ops.
#[derive(Default)]
struct Emitted {
    rows: Vec<Box<[u8]>>,
    values: Vec<Vec<ScalarValue>>,
    ops: Vec<i8>,
}

impl Emitted {
    fn push(&mut self, row: Box<[u8]>, values: Vec<ScalarValue>, op: i8) {
        self.rows.push(row);
        self.values.push(values);
        self.ops.push(op);
    }
}

impl Frames {
    /// The aggregates of each of `targets` (entry indices) over its frame
    /// among `entries`.
    fn results(&self, entries: &[Entry], targets: &[usize]) -> Result<Vec<Vec<ScalarValue>>> {
        let frames: Vec<(usize, usize)> = targets
            .iter()
            .map(|&i| frame_of(self.frame, entries, i))
            .collect();
        let (Some(low), Some(high)) = (
            frames.iter().map(|f| f.0).min(),
            frames.iter().map(|f| f.1).max(),
        ) else {
            return Ok(Vec::new());
        };
        // Decode the rows the frames cover once; each frame is a slice.
        let parser = self.row_converter.parser();
        let columns = self
            .row_converter
            .convert_rows(entries[low..=high].iter().map(|e| parser.parse(&e.row)))?;
        let batch = RecordBatch::try_new(self.rows_schema.clone(), columns)?;
        let args = evaluate_args(&self.aggregates, &batch)?;
        let mut out = Vec::with_capacity(targets.len());
        for &(lo, hi) in &frames {
            let mut values = Vec::with_capacity(self.aggregates.len());
            for (agg, args) in self.aggregates.iter().zip(&args) {
                let mut acc = agg.create_accumulator()?;
                let slices: Vec<ArrayRef> = args
                    .iter()
                    .map(|a| a.slice(lo - low, hi - lo + 1))
                    .collect();
                acc.update_batch(&slices)?;
                values.push(acc.evaluate()?);
            }
            out.push(values);
        }
        Ok(out)
    }

    /// The entries whose frame reaches position `at` of `entries`, a row
    /// at `time`: before `at`'s row is removed (`includes_self`), or before
    /// a row is inserted there (then `at` and later rows move one on).
    fn reaching(&self, entries: &[Entry], at: usize, time: i64, includes_self: bool) -> Vec<usize> {
        match self.frame {
            OverFrame::Rows(n) => {
                let reach = n as usize + usize::from(includes_self);
                (at..entries.len().min(at + reach)).collect()
            }
            OverFrame::RangeMs(d) => {
                let lo = entries.partition_point(|e| e.time < time);
                let hi = entries.partition_point(|e| e.time <= time.saturating_add(d));
                (lo..hi).collect()
            }
            OverFrame::Unbounded { rows: true } => (at..entries.len()).collect(),
            OverFrame::Unbounded { rows: false } => {
                (entries.partition_point(|e| e.time < time)..entries.len()).collect()
            }
        }
    }

    /// The results of `entries` in order, each over every row before it
    /// (and its ties, for RANGE), continuing the running accumulators
    /// `state` holds (none: a fresh start); the accumulators after them,
    /// as state.
    fn running(&self, entries: &[Entry], state: &[u8]) -> Result<(Vec<Vec<ScalarValue>>, Vec<u8>)> {
        let mut accs = self.restore_accumulators(state)?;
        let parser = self.row_converter.parser();
        let columns = self
            .row_converter
            .convert_rows(entries.iter().map(|e| parser.parse(&e.row)))?;
        let batch = RecordBatch::try_new(self.rows_schema.clone(), columns)?;
        let args = evaluate_args(&self.aggregates, &batch)?;
        let mut out = Vec::with_capacity(entries.len());
        let mut i = 0;
        while i < entries.len() {
            // RANGE: the row and those tied with it share one result.
            let end = match self.frame {
                OverFrame::Unbounded { rows: false } => {
                    i + entries[i..].partition_point(|e| e.time <= entries[i].time)
                }
                _ => i + 1,
            };
            for (acc, args) in accs.iter_mut().zip(&args) {
                let slices: Vec<ArrayRef> = args.iter().map(|a| a.slice(i, end - i)).collect();
                acc.update_batch(&slices)?;
            }
            let values = accs
                .iter_mut()
                .map(|a| a.evaluate())
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            out.extend(std::iter::repeat_n(values, end - i));
            i = end;
        }
        Ok((out, self.save_accumulators(&mut accs)?))
    }

    /// The accumulators encoded in `state`, or fresh ones.
    fn restore_accumulators(&self, state: &[u8]) -> Result<Vec<Box<dyn Accumulator>>> {
        let fresh = || -> Result<Vec<Box<dyn Accumulator>>> {
            Ok(self
                .aggregates
                .iter()
                .map(|a| a.create_accumulator())
                .collect::<datafusion::error::Result<_>>()?)
        };
        if state.is_empty() {
            return fresh();
        }
        let batch = crate::keyed_state::read_ipc(state)?;
        let mut at = 0;
        fresh()?
            .into_iter()
            .map(|acc| accumulator_from_state(acc, batch.columns(), &mut at, 0))
            .collect()
    }

    /// The accumulators' states as one row, encoded.
    fn save_accumulators(&self, accs: &mut [Box<dyn Accumulator>]) -> Result<Vec<u8>> {
        let (mut fields, mut columns) = (Vec::new(), Vec::new());
        for (j, acc) in accs.iter_mut().enumerate() {
            accumulator_state_columns(
                std::iter::once(acc),
                &format!("a{j}"),
                &mut fields,
                &mut columns,
            )?;
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        crate::keyed_state::ipc_bytes(&batch)
    }
}

impl OverAggregateOperator {
    pub fn try_new(
        input: &SchemaRef,
        spec: OverSpec,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
    ) -> Result<Self> {
        let n = input.fields().len();
        if spec.op_column.is_some_and(|op| op + 1 != n) {
            return Err(OperatorError::Internal(
                "an OVER aggregate's _op must be its last input column".into(),
            ));
        }
        if spec.op_column.is_some() && spec.mode == OverMode::EventTime {
            return Err(OperatorError::Internal(
                "an event-time OVER aggregate needs an append-only input".into(),
            ));
        }
        let width = spec.op_column.unwrap_or(n);
        let (order, descending) = spec.order;
        if order >= width || spec.partition.iter().any(|&c| c >= width) {
            return Err(OperatorError::Internal(
                "an OVER column is out of range".into(),
            ));
        }
        let order_type = input.field(order).data_type().clone();
        if spec.frame.by_time() && (descending || !matches!(order_type, DataType::Timestamp(..))) {
            return Err(OperatorError::Internal(
                "a RANGE frame needs an ascending timestamp".into(),
            ));
        }
        let Converters {
            partition: partition_converter,
            order: order_converter,
            row: row_converter,
        } = Converters::new(input, &spec.partition, &[spec.order], width)?;
        let rows_schema = Arc::new(Schema::new(
            input.fields()[..width]
                .iter()
                .map(|f| f.as_ref().clone())
                .collect::<Vec<_>>(),
        ));
        let agg_fields: Vec<Field> = aggregates
            .iter()
            .map(|a| a.field().as_ref().clone().with_nullable(true))
            .collect();
        let output = spec.output_schema(input, &agg_fields);
        let mut store = PartitionStore::new("OVER aggregate");
        store.set_ttl(StateTtl::planned(
            spec.state_ttl_ms,
            spec.state_ttl_event_time,
        ));
        Ok(Self {
            frames: Frames {
                frame: spec.frame,
                aggregates,
                row_converter,
                rows_schema,
            },
            spec,
            width,
            output,
            partition_converter,
            order_converter,
            store,
        })
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// Measures the time-to-live on another clock (tests).
    pub fn with_state_ttl(mut self, ttl: Option<StateTtl>) -> Self {
        self.store.set_ttl(ttl);
        self
    }

    /// Drops partitions idle for the time-to-live, except those with rows
    /// still waiting for the watermark.
    fn expire_idle(&mut self) {
        self.store
            .expire_idle(|part| part.entries.len() > part.emitted as usize);
    }

    /// Applies one row of the `Updating` mode: emits the results it
    /// changed, its own included.
    fn update(
        &mut self,
        pkey: &[u8],
        entry: Entry,
        accumulate: bool,
        out: &mut Emitted,
    ) -> Result<()> {
        if !accumulate && !self.store.partitions.contains_key(pkey) {
            self.store.unknown_retraction();
            return Ok(());
        }
        let frames = &self.frames;
        let entries = &mut self.store.partition_mut(pkey).entries;
        // The rows whose results change, before (old positions) and after
        // (new positions) the change, pairwise.
        let (before, after, changed) = if accumulate {
            let at = entries.partition_point(|e| e.key <= entry.key);
            let old = frames.reaching(entries, at, entry.time, false);
            let before = frames.results(entries, &old)?;
            entries.insert(at, entry);
            let new: Vec<usize> = old
                .iter()
                .map(|&k| if k >= at { k + 1 } else { k })
                .collect();
            // The new row's own result comes last, in the same pass.
            let mut targets = new.clone();
            targets.push(at);
            let mut after = frames.results(entries, &targets)?;
            if let Some(own) = after.pop() {
                out.push(entries[at].row.clone(), own, OP_INSERT);
            }
            (before, after, new)
        } else {
            let first = entries.partition_point(|e| e.key < entry.key);
            let found = entries[first..]
                .iter()
                .take_while(|e| e.key == entry.key)
                .position(|e| e.row == entry.row);
            let Some(offset) = found else {
                self.store.unknown_retraction();
                return Ok(());
            };
            let at = first + offset;
            let mut old = frames.reaching(entries, at, entry.time, true);
            let mut before = frames.results(entries, &old)?;
            let own = old.iter().position(|&k| k == at).map(|i| {
                old.remove(i);
                before.remove(i)
            });
            let removed = entries.remove(at);
            if let Some(values) = own {
                out.push(removed.row, values, OP_DELETE);
            }
            let new: Vec<usize> = old
                .iter()
                .map(|&k| if k > at { k - 1 } else { k })
                .collect();
            let after = frames.results(entries, &new)?;
            (before, after, new)
        };
        for ((old, new), k) in before.into_iter().zip(after).zip(changed) {
            if old != new {
                out.push(entries[k].row.clone(), old, OP_UPDATE_BEFORE);
                out.push(entries[k].row.clone(), new, OP_UPDATE_AFTER);
            }
        }
        if entries.is_empty() {
            self.store.partitions.remove(pkey);
        }
        Ok(())
    }

    /// Emits the rows of the `EventTime` mode that the watermark made final,
    /// and drops the rows no later frame reaches.
    fn fire(&mut self, out: &mut Emitted) -> Result<()> {
        let watermark = self.store.watermark;
        while let Some(Reverse((at, _, _))) = self.store.timers.peek() {
            if *at > watermark {
                break;
            }
            let Some(Reverse((_, kg, key))) = self.store.timers.pop() else {
                break;
            };
            let Some(mut part) = self.store.partitions.remove(&key) else {
                continue;
            };
            let done = part.emitted as usize;
            let ready = done
                + part.entries[done..]
                    .iter()
                    .take_while(|e| e.time <= watermark)
                    .count();
            if ready > done && matches!(self.spec.frame, OverFrame::Unbounded { .. }) {
                // Running accumulators: fired rows are not kept.
                let (values, state) = self.frames.running(&part.entries[done..ready], &part.acc)?;
                for (e, v) in part.entries[done..ready].iter().zip(values) {
                    out.push(e.row.clone(), v, OP_INSERT);
                }
                part.acc = state;
                part.entries.drain(..ready);
                part.emitted = 0;
                self.store.mark_dirty(&key, kg);
            } else if ready > done {
                let targets: Vec<usize> = (done..ready).collect();
                let values = self.frames.results(&part.entries[..ready], &targets)?;
                for (i, v) in targets.into_iter().zip(values) {
                    out.push(part.entries[i].row.clone(), v, OP_INSERT);
                }
                // Later rows (after the watermark) reach back n rows or d ms.
                let keep_from = match self.spec.frame {
                    OverFrame::Rows(n) => ready.saturating_sub(n as usize),
                    OverFrame::RangeMs(d) => {
                        let oldest = watermark.saturating_add(1).saturating_sub(d);
                        part.entries[..ready].partition_point(|e| e.time < oldest)
                    }
                    OverFrame::Unbounded { .. } => 0,
                };
                part.entries.drain(..keep_from);
                part.emitted = (ready - keep_from) as u64;
                self.store.mark_dirty(&key, kg);
            }
            if let Some(next) = part.entries.get(part.emitted as usize) {
                self.store
                    .timers
                    .push(Reverse((next.time, kg, key.clone())));
            }
            if !part.entries.is_empty() || !part.acc.is_empty() {
                self.store.partitions.insert(key, part);
            }
        }
        Ok(())
    }

    fn collect(&self, emitted: Emitted, out: &mut Collector) -> Result<()> {
        if emitted.rows.is_empty() {
            return Ok(());
        }
        let parser = self.frames.row_converter.parser();
        let mut columns = self
            .frames
            .row_converter
            .convert_rows(emitted.rows.iter().map(|r| parser.parse(r)))?;
        for j in 0..self.frames.aggregates.len() {
            let field = self.output.field(self.width + j);
            let values = emitted.values.iter().map(|v| v[j].clone());
            let array = ScalarValue::iter_to_array(values)?;
            let array = if array.data_type() == field.data_type() {
                array
            } else {
                datafusion::arrow::compute::cast(&array, field.data_type())?
            };
            columns.push(array);
        }
        if self.spec.emits_changelog() {
            columns.push(Arc::new(Int8Array::from(emitted.ops)));
        }
        out.collect(RecordBatch::try_new(self.output.clone(), columns)?);
        Ok(())
    }
}

impl Operator for OverAggregateOperator {
    fn name(&self) -> String {
        "OverAggregate".into()
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        let event_time = self.spec.mode == OverMode::EventTime;
        self.store.open(ctx, |_, part| {
            let next = part.entries.get(part.emitted as usize)?;
            event_time.then_some(next.time)
        })
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        self.expire_idle();
        let partition_arrays: Vec<ArrayRef> = self
            .spec
            .partition
            .iter()
            .map(|&c| batch.column(c).clone())
            .collect();
        let pkeys = match &self.partition_converter {
            Some(c) => Some(c.convert_columns(&partition_arrays)?),
            None => None,
        };
        let order = batch.column(self.spec.order.0).clone();
        let keys = self.order_converter.convert_columns(&[order])?;
        let rows = self
            .frames
            .row_converter
            .convert_columns(&batch.columns()[..self.width])?;
        let times = match (self.spec.mode, self.spec.frame) {
            (OverMode::EventTime, _) => Some(crate::aggregate::event_time_millis(
                &batch,
                self.spec.order.0,
            )?),
            (_, frame) if frame.by_time() => Some(crate::aggregate::event_time_millis(
                &batch,
                self.spec.order.0,
            )?),
            _ => None,
        };
        let mut groups = Vec::with_capacity(n);
        key_groups(&partition_arrays, n, &mut groups)?;
        let ops = crate::updating::changelog_ops(&batch, self.spec.op_column)?;
        let mut emitted = Emitted::default();
        let mut late = 0u64;
        for (i, &kg) in groups.iter().enumerate() {
            let pkey: &[u8] = match &pkeys {
                Some(p) => p.row(i).data(),
                None => &[],
            };
            // A row without a time is never final, and has no range.
            let time = match &times {
                Some(t) if t.is_null(i) => {
                    late += 1;
                    continue;
                }
                Some(t) => t.value(i),
                None => 0,
            };
            let entry = Entry {
                key: keys.row(i).data().into(),
                row: rows.row(i).data().into(),
                time,
            };
            match self.spec.mode {
                OverMode::Updating => {
                    let accumulate = ops
                        .as_ref()
                        .is_none_or(|o| matches!(o.value(i), OP_INSERT | OP_UPDATE_AFTER));
                    self.update(pkey, entry, accumulate, &mut emitted)?;
                }
                OverMode::EventTime => {
                    if time <= self.store.watermark {
                        late += 1;
                        continue;
                    }
                    let part = self.store.partition_mut(pkey);
                    let done = part.emitted as usize;
                    let at = done + part.entries[done..].partition_point(|e| e.time <= time);
                    part.entries.insert(at, entry);
                    if at == done {
                        self.store.timers.push(Reverse((time, kg, pkey.into())));
                    }
                }
            }
            self.store.mark_dirty(pkey, kg);
        }
        self.store.count_late(late);
        self.collect(emitted, out)
    }

    fn handle_watermark(&mut self, watermark: i64, out: &mut Collector) -> Result<()> {
        self.store.watermark = self.store.watermark.max(watermark);
        self.expire_idle();
        if self.spec.mode == OverMode::EventTime {
            let mut emitted = Emitted::default();
            self.fire(&mut emitted)?;
            self.collect(emitted, out)?;
        }
        out.emit_watermark(watermark);
        Ok(())
    }

    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        self.expire_idle();
        self.store.checkpoint()
    }
}

#[cfg(test)]
mod tests;
