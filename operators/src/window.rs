//! The window aggregate: TUMBLE, HOP and CUMULATE windows.
//!
//! Rows are assigned to the windows `[start, end)` that hold their event
//! time ([`WindowAssigner`]: one for TUMBLE, several for HOP and CUMULATE); each open window keeps, per group key, the DataFusion
//! `GroupsAccumulator` state of every aggregate (the vectorised path: one
//! `update_batch` call per window per input batch). A window *fires* when
//! the watermark reaches its last millisecond (`end - 1 <= watermark`, as in
//! Flink): its rows are emitted as
//!
//! ```text
//!   key_0 .. key_k-1 | window_start | window_end | agg_0 .. agg_m-1
//! ```
//!
//! and its state is dropped. A row all of whose windows have already fired
//! is late: it is dropped and counted (a row behind the watermark whose window is
//! still open is *not* late and counts).
//!
//! State: open windows live in memory between checkpoints. At a checkpoint
//! barrier every open window is written to the operator's state table (one
//! entry per window, keyed by its start, order-preserving; the value is the
//! Arrow IPC encoding of the group keys and the accumulators' serialisable
//! `state()`), and on open the operator restores whatever its table holds.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, TimestampMillisecondArray, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use eddy_state::StateTable;
use eddy_state::keys::{KeyBuilder, decode_i64};

use crate::aggregate::{
    aggregate_fields, evaluate_args, evaluate_filters, event_time_millis, key_fields,
};
use crate::message::Timestamp;
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::{OperatorError, Result};

/// A window's `(end, start)` in ms; ordering by it is firing order.
pub type WindowKey = (i64, i64);

/// Which windows a row belongs to (sizes in milliseconds, windows aligned
/// to the epoch, as Flink's window TVFs without an offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAssigner {
    /// `[k·size, (k+1)·size)`: one window per row.
    Tumble { size: i64 },
    /// Windows of `size` starting every `slide`: `ceil(size / slide)` per row.
    Hop { slide: i64, size: i64 },
    /// Windows growing by `step` from the start of each `size` period:
    /// `[k·size, k·size + j·step)`, for every `j` whose window holds the row.
    Cumulate { step: i64, size: i64 },
}

impl WindowAssigner {
    fn validate(self) -> Result<()> {
        let ok = match self {
            WindowAssigner::Tumble { size } => size > 0,
            WindowAssigner::Hop { slide, size } => slide > 0 && size > 0,
            WindowAssigner::Cumulate { step, size } => step > 0 && size > 0 && size % step == 0,
        };
        if ok {
            Ok(())
        } else {
            Err(OperatorError::Internal(format!("invalid window {self:?}")))
        }
    }

    /// Appends the `(end, start)` of every window that holds time `ts`.
    pub fn assign(self, ts: i64, out: &mut Vec<WindowKey>) {
        match self {
            WindowAssigner::Tumble { size } => {
                let start = ts - ts.rem_euclid(size);
                out.push((start + size, start));
            }
            WindowAssigner::Hop { slide, size } => {
                let mut start = ts - ts.rem_euclid(slide);
                while start > ts - size {
                    out.push((start + size, start));
                    start -= slide;
                }
            }
            WindowAssigner::Cumulate { step, size } => {
                let start = ts - ts.rem_euclid(size);
                let mut end = ts - ts.rem_euclid(step) + step;
                while end <= start + size {
                    out.push((end, start));
                    end += step;
                }
            }
        }
    }
}

/// A window aggregate over `time_column`, grouped by `key_columns`.
pub struct WindowAggregateOperator {
    key_columns: Vec<usize>,
    time_column: usize,
    assigner: WindowAssigner,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// `FILTER (WHERE ...)` per aggregate: rows where it is not true are
    /// left out of that aggregate.
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    key_schema: SchemaRef,
    output_schema: SchemaRef,
    /// Open windows by `(end, start)`: they fire in this order.
    windows: BTreeMap<WindowKey, WindowState>,
    watermark: Timestamp,
    table: Option<Arc<dyn StateTable>>,
    metrics: Option<JobMetrics>,
    group_ids: Vec<usize>,
}

impl std::fmt::Debug for WindowAggregateOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowAggregateOperator")
            .field("key_columns", &self.key_columns)
            .field("assigner", &self.assigner)
            .field("open_windows", &self.windows.len())
            .finish_non_exhaustive()
    }
}

/// Group keys of one window: interned by DataFusion's `GroupValues`, or a
/// single group when there are no key columns.
enum Groups {
    Single { used: bool },
    Values(Box<dyn GroupValues>),
}

struct WindowState {
    groups: Groups,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

impl WindowAggregateOperator {
    /// `input_schema` is the schema of the rows this operator receives;
    /// `aggregates` are bound against it. The output schema is keys, then
    /// `window_start`, `window_end`, then one column per aggregate.
    pub fn try_new(
        input_schema: &SchemaRef,
        key_columns: Vec<usize>,
        time_column: usize,
        assigner: WindowAssigner,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
    ) -> Result<Self> {
        assigner.validate()?;
        let key_fields = key_fields(input_schema, &key_columns);
        let mut fields = key_fields.clone();
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        fields.push(Field::new("window_start", ts.clone(), false));
        fields.push(Field::new("window_end", ts, false));
        fields.extend(aggregate_fields(&aggregates));
        Ok(Self {
            key_columns,
            time_column,
            assigner,
            filters: vec![None; aggregates.len()],
            aggregates,
            key_schema: Arc::new(Schema::new(key_fields)),
            output_schema: Arc::new(Schema::new(fields)),
            windows: BTreeMap::new(),
            watermark: Timestamp::MIN,
            table: None,
            metrics: None,
            group_ids: Vec::new(),
        })
    }

    /// Sets each aggregate's `FILTER (WHERE ...)` condition (a boolean
    /// expression over the input), in the order of the aggregates.
    pub fn with_filters(mut self, filters: Vec<Option<Arc<dyn PhysicalExpr>>>) -> Result<Self> {
        if filters.len() != self.aggregates.len() {
            return Err(OperatorError::Internal(format!(
                "{} filters for {} aggregates",
                filters.len(),
                self.aggregates.len()
            )));
        }
        self.filters = filters;
        Ok(self)
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    fn new_window(&self) -> Result<WindowState> {
        let groups = if self.key_columns.is_empty() {
            Groups::Single { used: false }
        } else {
            Groups::Values(new_group_values(
                self.key_schema.clone(),
                &GroupOrdering::None,
            )?)
        };
        let accumulators = self
            .aggregates
            .iter()
            .map(|a| new_accumulator(a))
            .collect::<Result<_>>()?;
        Ok(WindowState {
            groups,
            accumulators,
        })
    }

    /// A window fires once the watermark reaches its last millisecond.
    fn is_closed(&self, (end, _): WindowKey) -> bool {
        end - 1 <= self.watermark
    }

    /// Adds `batch` (rows that all belong to window `key`) to that window.
    fn accumulate(&mut self, key: WindowKey, batch: &RecordBatch) -> Result<()> {
        if !self.windows.contains_key(&key) {
            let w = self.new_window()?;
            self.windows.insert(key, w);
        }
        let keys: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let args = evaluate_args(&self.aggregates, batch)?;
        let masks = evaluate_filters(&self.filters, batch)?;
        let Some(window) = self.windows.get_mut(&key) else {
            return Err(OperatorError::Internal("window vanished".into()));
        };
        let num_groups = intern(
            &mut window.groups,
            &keys,
            batch.num_rows(),
            &mut self.group_ids,
        )?;
        for ((acc, values), mask) in window.accumulators.iter_mut().zip(&args).zip(&masks) {
            let mask = mask.as_ref().map(|m| m.as_boolean());
            acc.update_batch(values, &self.group_ids, mask, num_groups)?;
        }
        Ok(())
    }

    /// Adds each window's rows of `batch`; windows that already fired are
    /// skipped and their rows counted (returned) as late.
    fn accumulate_parts(
        &mut self,
        batch: &RecordBatch,
        parts: BTreeMap<WindowKey, Vec<u32>>,
    ) -> Result<usize> {
        let mut late = 0;
        for (key, rows) in parts {
            if self.is_closed(key) {
                late += rows.len();
                continue;
            }
            if rows.len() == batch.num_rows() {
                self.accumulate(key, batch)?;
                continue;
            }
            let indices = UInt32Array::from(rows);
            let columns = batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let part = RecordBatch::try_new(batch.schema(), columns)?;
            self.accumulate(key, &part)?;
        }
        Ok(late)
    }

    /// Emits the result of window `(end, start)` and forgets it.
    fn fire(
        &mut self,
        (end, start): WindowKey,
        mut window: WindowState,
        out: &mut Collector,
    ) -> Result<()> {
        let (mut columns, rows) = match &mut window.groups {
            Groups::Single { used: false } => return Ok(()),
            Groups::Single { used: true } => (vec![], 1),
            Groups::Values(values) => {
                let n = values.len();
                (values.emit(EmitTo::All)?, n)
            }
        };
        columns.push(Arc::new(TimestampMillisecondArray::from_value(start, rows)));
        columns.push(Arc::new(TimestampMillisecondArray::from_value(end, rows)));
        for acc in &mut window.accumulators {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        let columns = conform_columns(&self.output_schema, columns)?;
        out.collect(RecordBatch::try_new(self.output_schema.clone(), columns)?);
        Ok(())
    }

    /// Writes every open window to the state table, replacing what was there.
    fn snapshot(&mut self) -> Result<()> {
        let Some(table) = self.table.clone() else {
            return Ok(());
        };
        let mut ops = Vec::new();
        let keys: Vec<WindowKey> = self.windows.keys().copied().collect();
        for key in keys {
            let Some(window) = self.windows.remove(&key) else {
                continue;
            };
            let (bytes, restored) = self.encode_window(window)?;
            self.windows.insert(key, restored);
            ops.push((KeyBuilder::new().i64(key.0).i64(key.1).build(), Some(bytes)));
        }
        table.delete_range(&[], &[0xff; 17])?;
        table.write_batch(&ops)?;
        Ok(())
    }

    /// Serialises a window (keys + accumulator states) and rebuilds it from
    /// those states, since DataFusion's `state()` consumes the accumulator.
    fn encode_window(&self, mut window: WindowState) -> Result<(Vec<u8>, WindowState)> {
        let (mut columns, rows) = match &mut window.groups {
            Groups::Single { used } => (vec![], usize::from(*used)),
            Groups::Values(values) => {
                let n = values.len();
                (values.emit(EmitTo::All)?, n)
            }
        };
        let mut fields: Vec<Field> = self
            .key_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for (agg, acc) in self.aggregates.iter().zip(&mut window.accumulators) {
            if rows == 0 {
                continue;
            }
            let state = acc.state(EmitTo::All)?;
            for (f, col) in agg.state_fields()?.iter().zip(state) {
                fields.push(
                    f.as_ref()
                        .clone()
                        .with_nullable(true)
                        .with_data_type(col.data_type().clone()),
                );
                columns.push(col);
            }
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = if rows == 0 {
            RecordBatch::new_empty(schema.clone())
        } else {
            RecordBatch::try_new_with_options(
                schema.clone(),
                columns,
                &datafusion::arrow::record_batch::RecordBatchOptions::new()
                    .with_row_count(Some(rows)),
            )?
        };
        let mut writer = StreamWriter::try_new(Vec::new(), &schema)?;
        writer.write(&batch)?;
        let bytes = writer.into_inner()?;
        let restored = self.decode_window(&batch)?;
        Ok((bytes, restored))
    }

    fn decode_window(&self, batch: &RecordBatch) -> Result<WindowState> {
        let mut window = self.new_window()?;
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(window);
        }
        let k = self.key_columns.len();
        let keys: Vec<ArrayRef> = batch.columns()[..k].to_vec();
        let mut ids = Vec::new();
        let num_groups = intern(&mut window.groups, &keys, rows, &mut ids)?;
        let mut offset = k;
        for (agg, acc) in self.aggregates.iter().zip(&mut window.accumulators) {
            let n = agg.state_fields()?.len();
            let state = batch.columns().get(offset..offset + n).ok_or_else(|| {
                OperatorError::Internal("window state has fewer columns than its aggregates".into())
            })?;
            acc.merge_batch(state, &ids, num_groups)?;
            offset += n;
        }
        Ok(window)
    }

    fn restore(&mut self) -> Result<()> {
        let Some(table) = self.table.clone() else {
            return Ok(());
        };
        for (key, value) in table.scan_range(&[], &[0xff; 17])? {
            let bad = || OperatorError::Internal("bad window key".into());
            let end = decode_i64(&key).ok_or_else(bad)?;
            let start = decode_i64(key.get(8..).unwrap_or_default()).ok_or_else(bad)?;
            let reader = StreamReader::try_new(Cursor::new(value), None)?;
            for batch in reader {
                let window = self.decode_window(&batch?)?;
                self.windows.insert((end, start), window);
            }
        }
        if !self.windows.is_empty() {
            tracing::info!(
                windows = self.windows.len(),
                "restored open windows from state"
            );
        }
        Ok(())
    }
}

fn new_accumulator(agg: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    if agg.groups_accumulator_supported() {
        Ok(agg.create_groups_accumulator()?)
    } else {
        let agg = agg.clone();
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            agg.create_accumulator()
        })))
    }
}

/// Assigns group ids to the rows of `keys`; returns the number of groups.
fn intern(
    groups: &mut Groups,
    keys: &[ArrayRef],
    rows: usize,
    ids: &mut Vec<usize>,
) -> Result<usize> {
    match groups {
        Groups::Single { used } => {
            *used |= rows > 0;
            ids.clear();
            ids.resize(rows, 0);
            Ok(1)
        }
        Groups::Values(values) => {
            values.intern(keys, ids)?;
            Ok(values.len())
        }
    }
}

/// Casts columns whose type differs from the schema (e.g. dictionary-
/// encoded group values) so the batch can be built.
fn conform_columns(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<Vec<ArrayRef>> {
    columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                Ok(cast(&c, f.data_type())?)
            }
        })
        .collect()
}

impl Operator for WindowAggregateOperator {
    fn name(&self) -> String {
        format!("WindowAggregate({:?})", self.assigner)
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.metrics = Some(ctx.metrics.clone());
        self.table = Some(
            ctx.state
                .open_table(&format!("{}-{}", ctx.operator_id, ctx.subtask))?,
        );
        self.restore()
    }

    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Collector) -> Result<()> {
        let ts = event_time_millis(&batch, self.time_column)?;
        // Rows without an event time belong to no window.
        let mut late = ts.null_count();
        if let WindowAssigner::Tumble { size } = self.assigner {
            // One window per row; usually one window per batch.
            let starts: Vec<Option<i64>> = ts
                .iter()
                .map(|t| t.map(|t| t - t.rem_euclid(size)))
                .collect();
            let first = starts.iter().flatten().next().copied();
            if late == 0 && first.is_some() && starts.iter().all(|s| *s == first) {
                if let Some(start) = first {
                    let key = (start + size, start);
                    if self.is_closed(key) {
                        late += batch.num_rows();
                    } else {
                        self.accumulate(key, &batch)?;
                    }
                }
            } else {
                let mut by_window: BTreeMap<WindowKey, Vec<u32>> = BTreeMap::new();
                for (row, s) in starts.iter().enumerate() {
                    if let Some(s) = s {
                        by_window
                            .entry((s + size, *s))
                            .or_default()
                            .push(row as u32);
                    }
                }
                late += self.accumulate_parts(&batch, by_window)?;
            }
        } else {
            // A row belongs to several windows; it is late only if every
            // one of them has fired.
            let mut by_window: BTreeMap<WindowKey, Vec<u32>> = BTreeMap::new();
            let mut keys = Vec::new();
            for (row, t) in ts.iter().enumerate() {
                let Some(t) = t else { continue };
                keys.clear();
                self.assigner.assign(t, &mut keys);
                let mut open = false;
                for &key in &keys {
                    if !self.is_closed(key) {
                        open = true;
                        by_window.entry(key).or_default().push(row as u32);
                    }
                }
                late += usize::from(!open);
            }
            self.accumulate_parts(&batch, by_window)?;
        }
        if late > 0
            && let Some(m) = &self.metrics
        {
            m.add_late_rows(late as u64);
        }
        Ok(())
    }

    fn handle_watermark(&mut self, watermark: Timestamp, out: &mut Collector) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        while let Some((&key, _)) = self.windows.first_key_value() {
            if !self.is_closed(key) {
                break;
            }
            if let Some((key, window)) = self.windows.pop_first() {
                self.fire(key, window, out)?;
            }
        }
        out.emit_watermark(watermark);
        Ok(())
    }

    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        self.snapshot()
    }
}

#[cfg(test)]
mod tests;
