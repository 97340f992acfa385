//! The tumbling-window aggregate.
//!
//! Rows are assigned to the window `[start, start + size)` that holds their
//! event time; each open window keeps, per group key, the DataFusion
//! `GroupsAccumulator` state of every aggregate (the vectorised path: one
//! `update_batch` call per window per input batch). A window *fires* when
//! the watermark reaches its last millisecond (`end - 1 <= watermark`, as in
//! Flink): its rows are emitted as
//!
//! ```text
//!   key_0 .. key_k-1 | window_start | window_end | agg_0 .. agg_m-1
//! ```
//!
//! and its state is dropped. A row whose window has already fired is late:
//! it is dropped and counted (a row behind the watermark whose window is
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
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use eddy_state::StateTable;
use eddy_state::keys::{KeyBuilder, decode_i64};

use crate::message::Timestamp;
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::{OperatorError, Result};

/// A tumbling window aggregate over `time_column`, grouped by `key_columns`.
pub struct WindowAggregateOperator {
    key_columns: Vec<usize>,
    time_column: usize,
    size_ms: i64,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    key_schema: SchemaRef,
    output_schema: SchemaRef,
    windows: BTreeMap<i64, WindowState>,
    watermark: Timestamp,
    table: Option<Arc<dyn StateTable>>,
    metrics: Option<JobMetrics>,
    group_ids: Vec<usize>,
}

impl std::fmt::Debug for WindowAggregateOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowAggregateOperator")
            .field("key_columns", &self.key_columns)
            .field("size_ms", &self.size_ms)
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
        size_ms: i64,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
    ) -> Result<Self> {
        if size_ms <= 0 {
            return Err(OperatorError::Internal(format!(
                "window size must be positive, got {size_ms} ms"
            )));
        }
        let key_fields: Vec<Field> = key_columns
            .iter()
            .map(|&i| input_schema.field(i).clone().with_nullable(true))
            .collect();
        let mut fields = key_fields.clone();
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        fields.push(Field::new("window_start", ts.clone(), false));
        fields.push(Field::new("window_end", ts, false));
        for agg in &aggregates {
            fields.push(agg.field().as_ref().clone().with_nullable(true));
        }
        Ok(Self {
            key_columns,
            time_column,
            size_ms,
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

    /// The window of `start` fires once the watermark reaches its last
    /// millisecond.
    fn is_closed(&self, start: i64) -> bool {
        start.saturating_add(self.size_ms - 1) <= self.watermark
    }

    fn window_start(&self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.size_ms)
    }

    /// Adds `batch` (all rows in the window of `start`) to that window.
    fn accumulate(&mut self, start: i64, batch: &RecordBatch) -> Result<()> {
        if !self.windows.contains_key(&start) {
            let w = self.new_window()?;
            self.windows.insert(start, w);
        }
        let keys: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let mut args = Vec::with_capacity(self.aggregates.len());
        for agg in &self.aggregates {
            let values = agg
                .expressions()
                .iter()
                .map(|e| {
                    e.evaluate(batch)
                        .and_then(|v| v.into_array(batch.num_rows()))
                })
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            args.push(values);
        }
        let Some(window) = self.windows.get_mut(&start) else {
            return Err(OperatorError::Internal("window vanished".into()));
        };
        let num_groups = intern(
            &mut window.groups,
            &keys,
            batch.num_rows(),
            &mut self.group_ids,
        )?;
        for (acc, values) in window.accumulators.iter_mut().zip(&args) {
            acc.update_batch(values, &self.group_ids, None, num_groups)?;
        }
        Ok(())
    }

    /// Emits the result of the window of `start` and forgets it.
    fn fire(&mut self, start: i64, mut window: WindowState, out: &mut Collector) -> Result<()> {
        let (mut columns, rows) = match &mut window.groups {
            Groups::Single { used: false } => return Ok(()),
            Groups::Single { used: true } => (vec![], 1),
            Groups::Values(values) => {
                let n = values.len();
                (values.emit(EmitTo::All)?, n)
            }
        };
        columns.push(Arc::new(TimestampMillisecondArray::from_value(start, rows)));
        columns.push(Arc::new(TimestampMillisecondArray::from_value(
            start + self.size_ms,
            rows,
        )));
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
        let starts: Vec<i64> = self.windows.keys().copied().collect();
        for start in starts {
            let Some(window) = self.windows.remove(&start) else {
                continue;
            };
            let (bytes, restored) = self.encode_window(window)?;
            self.windows.insert(start, restored);
            ops.push((KeyBuilder::new().i64(start).build(), Some(bytes)));
        }
        table.delete_range(&[], &[0xff; 9])?;
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
        for (key, value) in table.scan_range(&[], &[0xff; 9])? {
            let start =
                decode_i64(&key).ok_or_else(|| OperatorError::Internal("bad window key".into()))?;
            let reader = StreamReader::try_new(Cursor::new(value), None)?;
            for batch in reader {
                let window = self.decode_window(&batch?)?;
                self.windows.insert(start, window);
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
        format!("TumblingWindowAggregate({} ms)", self.size_ms)
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
        let ts = cast(
            batch.column(self.time_column),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let ts = ts
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| {
                OperatorError::Internal("window time column is not a timestamp".into())
            })?;
        // Rows without an event time belong to no window.
        let mut late = ts.null_count();
        let starts: Vec<Option<i64>> = ts.iter().map(|t| t.map(|t| self.window_start(t))).collect();
        let first = starts.iter().flatten().next().copied();
        let single = first.is_some() && late == 0 && starts.iter().all(|s| *s == first);
        if single && let Some(start) = first {
            if self.is_closed(start) {
                late += batch.num_rows();
            } else {
                self.accumulate(start, &batch)?;
            }
        } else {
            let mut by_window: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
            for (row, s) in starts.iter().enumerate() {
                if let Some(s) = s {
                    by_window.entry(*s).or_default().push(row as u32);
                }
            }
            for (start, rows) in by_window {
                if self.is_closed(start) {
                    late += rows.len();
                    continue;
                }
                let indices = UInt32Array::from(rows);
                let columns = batch
                    .columns()
                    .iter()
                    .map(|c| take(c.as_ref(), &indices, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let part = RecordBatch::try_new(batch.schema(), columns)?;
                self.accumulate(start, &part)?;
            }
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
        while let Some((&start, _)) = self.windows.first_key_value() {
            if !self.is_closed(start) {
                break;
            }
            if let Some((start, window)) = self.windows.pop_first() {
                self.fire(start, window, out)?;
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
