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
//! last emitted result. State lives in memory (not yet written at
//! checkpoints).
//!
//! The input may itself be a changelog (an aggregate over an aggregate, the
//! shape of Nexmark q4): its `+I`/`+U` rows are accumulated and its
//! `-U`/`-D` rows retracted, and a group whose rows are all retracted is
//! deleted (`-D`). Retraction arrives in any order, so each aggregate keeps
//! what it needs to undo any one row:
//!
//! ```text
//!   COUNT, SUM, AVG, VAR*, STDDEV*, MEDIAN   DataFusion's retracting accumulator
//!   MIN, MAX                                 value → count, ordered (arrow row encoding)
//!   anything else                            the current argument rows; recomputed
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int8Array, UInt32Array};
use datafusion::arrow::compute::{filter, take};
use datafusion::arrow::datatypes::{DataType, Field, Int8Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::aggregate::{
    aggregate_fields, evaluate_args, evaluate_filters, key_converter, key_fields,
};
use crate::operator::{Collector, Operator};
use crate::{OperatorError, Result};

/// The changelog column's name and codes.
pub const OP_COLUMN: &str = "_op";
pub const OP_INSERT: i8 = 0;
pub const OP_UPDATE_BEFORE: i8 = 1;
pub const OP_UPDATE_AFTER: i8 = 2;
pub const OP_DELETE: i8 = 3;

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
            // Of the DISTINCT forms only COUNT's retracts by value counts.
            n if ORDER_FREE_RETRACT.contains(&n)
                && (!agg.is_distinct() || n == "count")
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
}

/// One aggregate: its expression, how it is kept, and an encoder of its
/// argument rows (for `Ordered` and `Rows`).
struct Aggregate {
    expr: Arc<AggregateFunctionExpr>,
    strategy: Strategy,
    args: Option<RowConverter>,
}

impl Aggregate {
    fn new_state(&self) -> Result<AggState> {
        Ok(match self.strategy {
            Strategy::Accumulate => AggState::Accumulator(self.expr.create_accumulator()?),
            Strategy::Retract => AggState::Accumulator(self.expr.create_sliding_accumulator()?),
            Strategy::Min | Strategy::Max => AggState::Ordered(BTreeMap::new()),
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
    converter: RowConverter,
    output_schema: SchemaRef,
    groups: HashMap<OwnedRow, Group>,
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
        let converter = key_converter(&key_fields)?;
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
        })
    }
}

impl Operator for UpdatingAggregateOperator {
    fn name(&self) -> String {
        "UpdatingAggregate".into()
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let n = batch.num_rows();
        let keys: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.converter.convert_columns(&keys)?;
        let ops = match self.op_column {
            Some(c) => Some(
                batch
                    .column(c)
                    .as_primitive_opt::<Int8Type>()
                    .ok_or_else(|| OperatorError::Internal("_op is not Int8".into()))?
                    .clone(),
            ),
            None => None,
        };
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
                    })
                }
            };
            group.live += added.len() as i64 - retracted.len() as i64;
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
        let mut columns = self
            .converter
            .convert_rows(out_keys.iter().map(|k| k.row()))?;
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
