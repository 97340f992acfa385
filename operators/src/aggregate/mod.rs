//! Aggregates: the updating aggregate ([`updating`]: `GROUP BY` without a
//! window), and here what every aggregating operator (window, session,
//! updating) does to an input batch before its own bookkeeping: evaluate
//! the aggregates' arguments and their `FILTER (WHERE ...)` masks.

pub mod updating;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{Field, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::{OperatorError, Result};

/// The arguments of each aggregate, evaluated over `batch`.
pub(crate) fn evaluate_args(
    aggregates: &[Arc<AggregateFunctionExpr>],
    batch: &RecordBatch,
) -> Result<Vec<Vec<ArrayRef>>> {
    let n = batch.num_rows();
    aggregates
        .iter()
        .map(|agg| {
            agg.expressions()
                .iter()
                .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
                .collect::<Result<Vec<_>>>()
        })
        .collect()
}

/// Each aggregate's `FILTER (WHERE ...)` over `batch`, as a boolean array.
pub(crate) fn evaluate_filters(
    filters: &[Option<Arc<dyn PhysicalExpr>>],
    batch: &RecordBatch,
) -> Result<Vec<Option<ArrayRef>>> {
    filters
        .iter()
        .map(|f| {
            let Some(f) = f else { return Ok(None) };
            let mask = f.evaluate(batch)?.into_array(batch.num_rows())?;
            if mask.as_boolean_opt().is_none() {
                return Err(OperatorError::Internal(format!(
                    "FILTER produced {}",
                    mask.data_type()
                )));
            }
            Ok(Some(mask))
        })
        .collect()
}

/// The output fields of the group keys (nullable, as grouping keeps NULL
/// as a group of its own).
pub(crate) fn key_fields(input: &SchemaRef, key_columns: &[usize]) -> Vec<Field> {
    key_columns
        .iter()
        .map(|&i| input.field(i).clone().with_nullable(true))
        .collect()
}

/// The output field of each aggregate.
pub(crate) fn aggregate_fields(aggregates: &[Arc<AggregateFunctionExpr>]) -> Vec<Field> {
    aggregates
        .iter()
        .map(|a| a.field().as_ref().clone().with_nullable(true))
        .collect()
}

/// Casts columns whose type differs from the schema (e.g. dictionary-
/// encoded group values) so the batch can be built.
pub(crate) fn conform_columns(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<Vec<ArrayRef>> {
    columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                Ok(datafusion::arrow::compute::cast(&c, f.data_type())?)
            }
        })
        .collect()
}

/// A column of event times as milliseconds (whatever its timestamp unit).
pub(crate) fn event_time_millis(
    batch: &RecordBatch,
    column: usize,
) -> Result<datafusion::arrow::array::TimestampMillisecondArray> {
    use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
    let ts = datafusion::arrow::compute::cast(
        batch.column(column),
        &DataType::Timestamp(TimeUnit::Millisecond, None),
    )?;
    ts.as_primitive_opt::<TimestampMillisecondType>()
        .cloned()
        .ok_or_else(|| OperatorError::Internal("the event-time column is not a timestamp".into()))
}

/// Group keys encoded as comparable, hashable rows. Without key columns
/// (a global aggregate or window) every row has the same, empty key: Arrow's
/// row format cannot encode zero columns, so one constant column stands in
/// for them and is dropped again when decoding.
pub(crate) struct KeyCodec {
    converter: datafusion::arrow::row::RowConverter,
    keyless: bool,
}

impl KeyCodec {
    pub fn new(key_fields: &[Field]) -> Result<Self> {
        use datafusion::arrow::datatypes::DataType;
        use datafusion::arrow::row::{RowConverter, SortField};
        let keyless = key_fields.is_empty();
        let fields = if keyless {
            vec![SortField::new(DataType::Boolean)]
        } else {
            key_fields
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect()
        };
        Ok(Self {
            converter: RowConverter::new(fields)?,
            keyless,
        })
    }

    /// The keys of `rows` rows, from their key columns.
    pub fn encode(
        &self,
        columns: &[datafusion::arrow::array::ArrayRef],
        rows: usize,
    ) -> Result<datafusion::arrow::row::Rows> {
        if self.keyless {
            let constant: datafusion::arrow::array::ArrayRef =
                std::sync::Arc::new(datafusion::arrow::array::BooleanArray::from(vec![
                    true;
                    rows
                ]));
            return Ok(self.converter.convert_columns(&[constant])?);
        }
        Ok(self.converter.convert_columns(columns)?)
    }

    /// The key columns of these keys (none when keyless).
    pub fn decode<'a>(
        &self,
        keys: impl IntoIterator<Item = datafusion::arrow::row::Row<'a>>,
    ) -> Result<Vec<datafusion::arrow::array::ArrayRef>> {
        if self.keyless {
            return Ok(Vec::new());
        }
        Ok(self.converter.convert_rows(keys)?)
    }
}

/// The `state()` of each accumulator, one row per accumulator, appended as
/// columns `{prefix}_0`, `{prefix}_1`... (what a checkpoint stores; see
/// [`accumulator_from_state`]).
pub(crate) fn accumulator_state_columns<'a>(
    accumulators: impl Iterator<Item = &'a mut Box<dyn Accumulator>>,
    prefix: &str,
    fields: &mut Vec<Field>,
    columns: &mut Vec<ArrayRef>,
) -> Result<()> {
    let states: Vec<Vec<ScalarValue>> = accumulators
        .map(|a| a.state())
        .collect::<datafusion::error::Result<_>>()?;
    let width = states.first().map_or(0, Vec::len);
    for j in 0..width {
        let column = ScalarValue::iter_to_array(states.iter().map(|s| s[j].clone()))?;
        fields.push(Field::new(
            format!("{prefix}_{j}"),
            column.data_type().clone(),
            true,
        ));
        columns.push(column);
    }
    Ok(())
}

/// `fresh` merged with row `row` of the state columns that start at
/// `*at`; `*at` moves past them.
pub(crate) fn accumulator_from_state(
    mut fresh: Box<dyn Accumulator>,
    columns: &[ArrayRef],
    at: &mut usize,
    row: usize,
) -> Result<Box<dyn Accumulator>> {
    let width = fresh.state()?.len();
    let slices: Vec<ArrayRef> = columns
        .get(*at..*at + width)
        .ok_or_else(|| OperatorError::Internal("fewer state columns than accumulators".into()))?
        .iter()
        .map(|c| c.slice(row, 1))
        .collect();
    fresh.merge_batch(&slices)?;
    *at += width;
    Ok(fresh)
}
