//! The updating aggregate: `GROUP BY` without a window. Every batch updates
//! the groups it touches and emits a changelog of their results:
//!
//! ```text
//!   first result of a group     +I new
//!   a group's result changes    -U old, +U new
//! ```
//!
//! as a trailing `_op` column (Int8: 0 = +I, 1 = -U, 2 = +U, 3 = -D) so sinks
//! can upsert or retract. Each group keeps a state per aggregate and its
//! last emitted result, in memory between checkpoints; at a barrier every
//! group is written to the operator's state table by key group (keys, row
//! count, last result, and each aggregate's state: an accumulator's
//! `state()` values, or its value counts / kept rows in row encoding), and
//! read back on open.
//!
//! The input may itself be a changelog (an aggregate over an aggregate, the
//! shape of Nexmark q4): its `+I`/`+U` rows are accumulated and its
//! `-U`/`-D` rows retracted, and a group whose rows are all retracted is
//! deleted (`-D`). Retraction arrives in any order, so each aggregate keeps
//! what it needs to undo any one row:
//!
//! ```text
//!   COUNT, SUM, AVG, VAR*, STDDEV*, MEDIAN   DataFusion's retracting accumulator
//!   MIN, MAX, COUNT(DISTINCT)                value → count, ordered (arrow row encoding)
//!   anything else                            the current argument rows; recomputed
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Int8Array, Int64Array, UInt32Array,
};
use datafusion::arrow::compute::{filter, take};
use datafusion::arrow::datatypes::{DataType, Field, Int8Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::aggregate::{
    KeyCodec, accumulator_from_state, accumulator_state_columns, aggregate_fields, evaluate_args,
    evaluate_filters, key_fields,
};
use crate::keyed_state::{KeyedState, int64_column, split_by_key_group};
use crate::operator::{Collector, Operator, OperatorContext};
use crate::ttl::{IdleKeys, NEVER_WRITTEN, StateTtl};
use crate::{OperatorError, Result};

/// The changelog column's name and codes.
pub const OP_COLUMN: &str = "_op";
pub const OP_INSERT: i8 = 0;
pub const OP_UPDATE_BEFORE: i8 = 1;
pub const OP_UPDATE_AFTER: i8 = 2;
pub const OP_DELETE: i8 = 3;

/// The `_op` codes of a changelog batch whose changelog column is
/// `op_column` (`None`: append-only, no codes).
pub fn changelog_ops(batch: &RecordBatch, op_column: Option<usize>) -> Result<Option<Int8Array>> {
    let Some(c) = op_column else {
        return Ok(None);
    };
    let ops = batch
        .column(c)
        .as_primitive_opt::<Int8Type>()
        .ok_or_else(|| OperatorError::Internal("_op is not Int8".into()))?;
    Ok(Some(ops.clone()))
}

/// The text of a changelog code (`+I`, `-U`, `+U`, `-D`).
pub fn op_name(op: i8) -> &'static str {
    match op {
        OP_INSERT => "+I",
        OP_UPDATE_BEFORE => "-U",
        OP_UPDATE_AFTER => "+U",
        _ => "-D",
    }
}

/// How an aggregate follows its input (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Strategy {
    /// Append-only input: a plain accumulator.
    Accumulate,
    /// DataFusion's retracting ("sliding") accumulator; its retraction does
    /// not depend on the order rows came in.
    Retract,
    Min,
    Max,
    /// COUNT(DISTINCT x): the number of values with a non-zero count.
    DistinctCount,
    Recompute,
}

/// Functions whose retracting accumulator undoes any row, not only the
/// oldest (DataFusion's sliding MIN/MAX and ARRAY_AGG assume FIFO).
const ORDER_FREE_RETRACT: &[&str] = &[
    "count",
    "sum",
    "avg",
    "var",
    "var_pop",
    "stddev",
    "stddev_pop",
    "median",
];

impl Strategy {
    fn choose(agg: &AggregateFunctionExpr, updating_input: bool) -> Self {
        if !updating_input {
            return Strategy::Accumulate;
        }
        let name = agg.fun().name().to_ascii_lowercase();
        let single = agg.expressions().len() == 1;
        match name.as_str() {
            "min" if single => Strategy::Min,
            "max" if single => Strategy::Max,
            // DataFusion's retracting COUNT(DISTINCT) keeps value counts,
            // but its `state()` (what a checkpoint stores) does not.
            "count" if single && agg.is_distinct() => Strategy::DistinctCount,
            n if ORDER_FREE_RETRACT.contains(&n)
                && !agg.is_distinct()
                && agg.create_sliding_accumulator().is_ok() =>
            {
                Strategy::Retract
            }
            _ => Strategy::Recompute,
        }
    }
}

enum AggState {
    Accumulator(Box<dyn Accumulator>),
    /// MIN/MAX: each non-NULL value and how many rows hold it.
    Ordered(BTreeMap<OwnedRow, u64>),
    /// The current argument rows, in arrival order.
    Rows(Vec<OwnedRow>),
}

struct Group {
    states: Vec<AggState>,
    /// Input rows in the group: accumulated minus retracted.
    live: i64,
    last: Option<Vec<ScalarValue>>,
    /// When it was last updated, under a time-to-live.
    written: i64,
}

/// One aggregate: its expression, how it is kept, and an encoder of its
/// argument rows (for `Ordered` and `Rows`).
struct Aggregate {
    expr: Arc<AggregateFunctionExpr>,
    strategy: Strategy,
    args: Option<RowConverter>,
}

impl Aggregate {
    fn new_accumulator(&self) -> Result<Box<dyn Accumulator>> {
        Ok(match self.strategy {
            Strategy::Retract => self.expr.create_sliding_accumulator()?,
            _ => self.expr.create_accumulator()?,
        })
    }

    fn new_state(&self) -> Result<AggState> {
        Ok(match self.strategy {
            Strategy::Accumulate | Strategy::Retract => {
                AggState::Accumulator(self.new_accumulator()?)
            }
            Strategy::Min | Strategy::Max | Strategy::DistinctCount => {
                AggState::Ordered(BTreeMap::new())
            }
            Strategy::Recompute => AggState::Rows(Vec::new()),
        })
    }

    fn converter(&self) -> Result<&RowConverter> {
        self.args
            .as_ref()
            .ok_or_else(|| OperatorError::Internal("no argument encoder".into()))
    }

    /// Adds (`retract = false`) or removes these argument rows.
    fn apply(&self, state: &mut AggState, values: &[ArrayRef], retract: bool) -> Result<()> {
        if values.first().is_none_or(|v| v.is_empty()) {
            return Ok(());
        }
        match state {
            AggState::Accumulator(acc) if retract => acc.retract_batch(values)?,
            AggState::Accumulator(acc) => acc.update_batch(values)?,
            AggState::Ordered(counts) => {
                let rows = self.converter()?.convert_columns(values)?;
                for (i, row) in rows.iter().enumerate() {
                    // MIN and MAX skip NULLs.
                    if values[0].is_null(i) {
                        continue;
                    }
                    let value = row.owned();
                    if !retract {
                        *counts.entry(value).or_default() += 1;
                    } else if let Some(n) = counts.get_mut(&value) {
                        *n -= 1;
                        if *n == 0 {
                            counts.remove(&value);
                        }
                    }
                }
            }
            AggState::Rows(kept) => {
                let rows = self.converter()?.convert_columns(values)?;
                for row in rows.iter() {
                    if !retract {
                        kept.push(row.owned());
                    } else if let Some(at) = kept.iter().position(|k| k.row() == row) {
                        kept.remove(at);
                    }
                }
            }
        }
        Ok(())
    }

    fn evaluate(&self, state: &mut AggState) -> Result<ScalarValue> {
        let first_value = |row: Option<&OwnedRow>| -> Result<ScalarValue> {
            let Some(row) = row else {
                return Ok(ScalarValue::try_from(self.expr.field().data_type())?);
            };
            let columns = self.converter()?.convert_rows([row.row()])?;
            Ok(ScalarValue::try_from_array(&columns[0], 0)?)
        };
        match state {
            AggState::Accumulator(acc) => Ok(acc.evaluate()?),
            AggState::Ordered(counts) if self.strategy == Strategy::DistinctCount => {
                Ok(ScalarValue::Int64(Some(counts.len() as i64)))
            }
            AggState::Ordered(counts) if self.strategy == Strategy::Min => {
                first_value(counts.keys().next())
            }
            AggState::Ordered(counts) => first_value(counts.keys().next_back()),
            AggState::Rows(kept) => {
                let mut acc = self.expr.create_accumulator()?;
                if !kept.is_empty() {
                    let columns = self
                        .converter()?
                        .convert_rows(kept.iter().map(|r| r.row()))?;
                    acc.update_batch(&columns)?;
                }
                Ok(acc.evaluate()?)
            }
        }
    }
}

pub struct UpdatingAggregateOperator {
    key_columns: Vec<usize>,
    exprs: Vec<Arc<AggregateFunctionExpr>>,
    aggregates: Vec<Aggregate>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// The input's `_op` column, when the input is a changelog.
    op_column: Option<usize>,
    converter: KeyCodec,
    output_schema: SchemaRef,
    groups: HashMap<OwnedRow, Group>,
    state: Option<KeyedState>,
    /// Groups by last update, under a time-to-live.
    idle: IdleKeys<OwnedRow>,
}

impl std::fmt::Debug for UpdatingAggregateOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdatingAggregateOperator")
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

/// `values` at `indices`, then only where `mask` (if any) is true.
fn select_rows(
    values: &[ArrayRef],
    mask: Option<&ArrayRef>,
    indices: &UInt32Array,
) -> Result<Vec<ArrayRef>> {
    let taken: Vec<ArrayRef> = values
        .iter()
        .map(|v| take(v.as_ref(), indices, None))
        .collect::<std::result::Result<_, _>>()?;
    let Some(mask) = mask else { return Ok(taken) };
    let m = take(mask.as_ref(), indices, None)?;
    let m = m.as_boolean();
    Ok(taken
        .iter()
        .map(|v| filter(v.as_ref(), m))
        .collect::<std::result::Result<_, _>>()?)
}

impl UpdatingAggregateOperator {
    /// Output: keys, one column per aggregate, then `_op`. With `op_column`,
    /// the input is a changelog whose codes are in that column.
    pub fn try_new(
        input_schema: &SchemaRef,
        key_columns: Vec<usize>,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
        op_column: Option<usize>,
    ) -> Result<Self> {
        if filters.len() != aggregates.len() {
            return Err(OperatorError::Internal(
                "one filter slot per aggregate".into(),
            ));
        }
        let key_fields = key_fields(input_schema, &key_columns);
        let converter = KeyCodec::new(&key_fields)?;
        let mut fields = key_fields;
        fields.extend(aggregate_fields(&aggregates));
        fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        let exprs = aggregates.clone();
        let aggregates = aggregates
            .into_iter()
            .map(|expr| {
                let strategy = Strategy::choose(&expr, op_column.is_some());
                let args = match strategy {
                    Strategy::Accumulate | Strategy::Retract => None,
                    _ => Some(RowConverter::new(
                        expr.expressions()
                            .iter()
                            .map(|e| Ok(SortField::new(e.data_type(input_schema)?)))
                            .collect::<Result<Vec<_>>>()?,
                    )?),
                };
                Ok(Aggregate {
                    expr,
                    strategy,
                    args,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            key_columns,
            exprs,
            aggregates,
            filters,
            op_column,
            converter,
            output_schema: Arc::new(Schema::new(fields)),
            groups: HashMap::new(),
            state: None,
            idle: IdleKeys::new(None),
        })
    }

    /// Drops a group once it is not updated for the time-to-live (see
    /// [`crate::ttl`]): a later row of its key starts it again, with `+I`.
    pub fn with_state_ttl(mut self, ttl: Option<StateTtl>) -> Self {
        self.idle.set_ttl(ttl);
        self
    }

    fn expire_idle(&mut self) {
        self.idle.drop_idle(&mut self.groups, |g| Some(g.written));
    }

    /// Every group as one state row: keys, `_live`, `_written`, `_has_last`, the last
    /// result (one column per aggregate), then each aggregate's state
    /// (its accumulator's `state()` columns, or one binary column of row
    /// encodings and counts). Accumulators are rebuilt from what was
    /// written, as taking an accumulator's state may reset it.
    fn snapshot_rows(&mut self) -> Result<Option<RecordBatch>> {
        if self.groups.is_empty() {
            return Ok(None);
        }
        let mut groups: Vec<(&OwnedRow, &mut Group)> = self.groups.iter_mut().collect();
        let k = self.key_columns.len();
        let mut columns = self
            .converter
            .decode(groups.iter().map(|(key, _)| key.row()))?;
        let mut fields: Vec<Field> = self.output_schema.fields()[..k]
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.push(Field::new("_live", DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from_iter_values(
            groups.iter().map(|(_, g)| g.live),
        )));
        fields.push(Field::new("_written", DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from_iter_values(
            groups.iter().map(|(_, g)| g.written),
        )));
        fields.push(Field::new("_has_last", DataType::Boolean, false));
        columns.push(Arc::new(BooleanArray::from_iter(
            groups.iter().map(|(_, g)| Some(g.last.is_some())),
        )));
        for a in 0..self.aggregates.len() {
            let typed = groups
                .iter()
                .find_map(|(_, g)| g.last.as_ref().map(|l| l[a].data_type()))
                .unwrap_or_else(|| self.output_schema.field(k + a).data_type().clone());
            let values = groups
                .iter()
                .map(|(_, g)| match &g.last {
                    Some(l) => Ok(l[a].clone()),
                    None => Ok(ScalarValue::try_from(&typed)?),
                })
                .collect::<Result<Vec<_>>>()?;
            fields.push(Field::new(format!("_last_{a}"), typed, true));
            columns.push(ScalarValue::iter_to_array(values)?);
        }
        // Where each accumulator's state columns start.
        let mut state_at = vec![None; self.aggregates.len()];
        for (a, agg) in self.aggregates.iter().enumerate() {
            match agg.strategy {
                Strategy::Accumulate | Strategy::Retract => {
                    state_at[a] = Some(columns.len());
                    let mut accumulators = Vec::with_capacity(groups.len());
                    for (_, g) in groups.iter_mut() {
                        match &mut g.states[a] {
                            AggState::Accumulator(acc) => accumulators.push(acc),
                            _ => {
                                return Err(OperatorError::Internal("accumulator expected".into()));
                            }
                        }
                    }
                    accumulator_state_columns(
                        accumulators.into_iter(),
                        &format!("_state_{a}"),
                        &mut fields,
                        &mut columns,
                    )?;
                }
                _ => {
                    let mut encoded = BinaryBuilder::new();
                    for (_, g) in groups.iter() {
                        let mut bytes = Vec::new();
                        match &g.states[a] {
                            AggState::Ordered(counts) => {
                                for (value, n) in counts {
                                    encode_row(&mut bytes, value.row().as_ref(), *n);
                                }
                            }
                            AggState::Rows(kept) => {
                                for value in kept {
                                    encode_row(&mut bytes, value.row().as_ref(), 1);
                                }
                            }
                            AggState::Accumulator(_) => {
                                return Err(OperatorError::Internal("rows expected".into()));
                            }
                        }
                        encoded.append_value(&bytes);
                    }
                    fields.push(Field::new(format!("_state_{a}"), DataType::Binary, false));
                    columns.push(Arc::new(encoded.finish()));
                }
            }
        }
        let rows = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        for (r, (_, g)) in groups.iter_mut().enumerate() {
            for (a, agg) in self.aggregates.iter().enumerate() {
                if let Some(mut at) = state_at[a] {
                    g.states[a] = AggState::Accumulator(accumulator_from_state(
                        agg.new_accumulator()?,
                        rows.columns(),
                        &mut at,
                        r,
                    )?);
                }
            }
        }
        Ok(Some(rows))
    }

    /// Adds the groups of state rows written by [`Self::snapshot_rows`].
    fn restore_rows(&mut self, rows: &RecordBatch) -> Result<()> {
        let k = self.key_columns.len();
        let m = self.aggregates.len();
        let bad = || OperatorError::Internal("bad updating aggregate state".into());
        let keys = self
            .converter
            .encode(&rows.columns()[..k], rows.num_rows())?;
        let live = int64_column(rows, k)?;
        let written = int64_column(rows, k + 1)?;
        let has_last = rows.column(k + 2).as_boolean_opt().ok_or_else(bad)?;
        for r in 0..rows.num_rows() {
            let last = if has_last.value(r) {
                Some(
                    (0..m)
                        .map(|a| ScalarValue::try_from_array(rows.column(k + 3 + a), r))
                        .collect::<std::result::Result<Vec<_>, _>>()?,
                )
            } else {
                None
            };
            let mut at = k + 3 + m;
            let mut states = Vec::with_capacity(m);
            for agg in &self.aggregates {
                let mut state = agg.new_state()?;
                match &mut state {
                    AggState::Accumulator(acc) => {
                        *acc = accumulator_from_state(
                            agg.new_accumulator()?,
                            rows.columns(),
                            &mut at,
                            r,
                        )?;
                    }
                    AggState::Ordered(counts) => {
                        let bytes = rows.column(at).as_binary_opt::<i32>().ok_or_else(bad)?;
                        let parser = agg.converter()?.parser();
                        decode_rows(bytes.value(r), |row, n| {
                            counts.insert(parser.parse(row).owned(), n);
                        })
                        .ok_or_else(bad)?;
                        at += 1;
                    }
                    AggState::Rows(kept) => {
                        let bytes = rows.column(at).as_binary_opt::<i32>().ok_or_else(bad)?;
                        let parser = agg.converter()?.parser();
                        decode_rows(bytes.value(r), |row, _| {
                            kept.push(parser.parse(row).owned());
                        })
                        .ok_or_else(bad)?;
                        at += 1;
                    }
                }
                states.push(state);
            }
            let key = keys.row(r).owned();
            self.idle.restored(written.value(r), 0, key.clone());
            self.groups.insert(
                key,
                Group {
                    states,
                    live: live.value(r),
                    last,
                    written: written.value(r),
                },
            );
        }
        Ok(())
    }
}

/// Appends `(length, row bytes, count)`.
fn encode_row(out: &mut Vec<u8>, row: &[u8], count: u64) {
    out.extend_from_slice(&(row.len() as u32).to_le_bytes());
    out.extend_from_slice(row);
    out.extend_from_slice(&count.to_le_bytes());
}

/// Calls `f` with every `(row bytes, count)` [`encode_row`] wrote.
fn decode_rows(mut bytes: &[u8], mut f: impl FnMut(&[u8], u64)) -> Option<()> {
    while !bytes.is_empty() {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let row = bytes.get(4..4 + len)?;
        let count = u64::from_le_bytes(bytes.get(4 + len..12 + len)?.try_into().ok()?);
        f(row, count);
        bytes = &bytes[12 + len..];
    }
    Some(())
}

impl Operator for UpdatingAggregateOperator {
    fn name(&self) -> String {
        "UpdatingAggregate".into()
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        let state = KeyedState::open(ctx)?;
        for (_, _, rows) in state.scan()? {
            self.restore_rows(&rows)?;
        }
        if !self.groups.is_empty() {
            tracing::info!(groups = self.groups.len(), "restored groups from state");
        }
        self.idle.set_metrics(ctx.metrics.clone());
        self.state = Some(state);
        Ok(())
    }

    fn handle_watermark(&mut self, watermark: i64, out: &mut Collector) -> Result<()> {
        // The clock of an event-time time-to-live.
        self.idle.advance(watermark);
        out.emit_watermark(watermark);
        Ok(())
    }

    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        self.expire_idle();
        let Some(state) = self.state.clone() else {
            return Ok(());
        };
        let mut entries = Vec::new();
        if let Some(rows) = self.snapshot_rows()? {
            let k = self.key_columns.len();
            for (kg, part) in split_by_key_group(&rows, &rows.columns()[..k])? {
                entries.push((kg, Vec::new(), part));
            }
        }
        state.replace(&entries, &[])
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        self.expire_idle();
        let n = batch.num_rows();
        let keys: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.converter.encode(&keys, batch.num_rows())?;
        let ops = crate::updating::changelog_ops(&batch, self.op_column)?;
        // Rows per group (added, retracted), groups in order of first appearance.
        let mut order: Vec<OwnedRow> = Vec::new();
        let mut members: HashMap<OwnedRow, (Vec<u32>, Vec<u32>)> = HashMap::new();
        for i in 0..n {
            let key = rows.row(i).owned();
            let entry = members.entry(key.clone()).or_default();
            if entry.0.is_empty() && entry.1.is_empty() {
                order.push(key);
            }
            let retract = ops
                .as_ref()
                .is_some_and(|o| matches!(o.value(i), OP_UPDATE_BEFORE | OP_DELETE));
            if retract {
                entry.1.push(i as u32);
            } else {
                entry.0.push(i as u32);
            }
        }
        let args = evaluate_args(&self.exprs, &batch)?;
        let masks = evaluate_filters(&self.filters, &batch)?;

        let mut out_keys: Vec<OwnedRow> = Vec::new();
        let mut out_values: Vec<Vec<ScalarValue>> = Vec::new();
        let mut ops: Vec<i8> = Vec::new();
        for key in order {
            let (added, retracted) = members.remove(&key).unwrap_or_default();
            let group = match self.groups.get_mut(&key) {
                Some(g) => g,
                None => {
                    let states = self
                        .aggregates
                        .iter()
                        .map(|a| a.new_state())
                        .collect::<Result<_>>()?;
                    self.groups.entry(key.clone()).or_insert(Group {
                        states,
                        live: 0,
                        last: None,
                        written: NEVER_WRITTEN,
                    })
                }
            };
            group.live += added.len() as i64 - retracted.len() as i64;
            self.idle.written(&mut group.written, 0, || key.clone());
            let (added, retracted) = (UInt32Array::from(added), UInt32Array::from(retracted));
            for (((agg, state), values), mask) in self
                .aggregates
                .iter()
                .zip(group.states.iter_mut())
                .zip(&args)
                .zip(&masks)
            {
                // Additions first: a row may be retracted in the batch that added it.
                for (indices, retract) in [(&added, false), (&retracted, true)] {
                    if !indices.is_empty() {
                        let values = select_rows(values, mask.as_ref(), indices)?;
                        agg.apply(state, &values, retract)?;
                    }
                }
            }
            if group.live <= 0 {
                // Every row of the group was retracted: it is gone.
                if let Some(old) = self.groups.remove(&key).and_then(|g| g.last) {
                    out_keys.push(key);
                    out_values.push(old);
                    ops.push(OP_DELETE);
                }
                continue;
            }
            let new = self
                .aggregates
                .iter()
                .zip(group.states.iter_mut())
                .map(|(a, s)| a.evaluate(s))
                .collect::<Result<Vec<_>>>()?;
            match group.last.replace(new.clone()) {
                None => {
                    out_keys.push(key);
                    out_values.push(new);
                    ops.push(OP_INSERT);
                }
                Some(old) if old != new => {
                    out_keys.extend([key.clone(), key]);
                    out_values.extend([old, new]);
                    ops.extend([OP_UPDATE_BEFORE, OP_UPDATE_AFTER]);
                }
                Some(_) => {}
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        let mut columns = self.converter.decode(out_keys.iter().map(|k| k.row()))?;
        for (i, field) in self
            .output_schema
            .fields()
            .iter()
            .enumerate()
            .skip(columns.len())
            .take(self.aggregates.len())
        {
            let a = i - self.key_columns.len();
            let array = ScalarValue::iter_to_array(out_values.iter().map(|v| v[a].clone()))?;
            let array = if array.data_type() == field.data_type() {
                array
            } else {
                datafusion::arrow::compute::cast(&array, field.data_type())?
            };
            columns.push(array);
        }
        columns.push(Arc::new(Int8Array::from(ops)));
        out.collect(RecordBatch::try_new(self.output_schema.clone(), columns)?);
        Ok(())
    }
}
