//! The updating aggregate: `GROUP BY` without a window. Every batch updates
//! the groups it touches and emits a changelog of their results:
//!
//! ```text
//!   first result of a group     +I new
//!   a group's result changes    -U old, +U new
//! ```
//!
//! as a trailing `_op` column (Int8: 0 = +I, 1 = -U, 2 = +U, 3 = -D) so sinks
//! can upsert or retract. Input rows are append-only. Each group keeps one
//! DataFusion `Accumulator` per aggregate and its last emitted result. State
//! lives in memory (not yet written at checkpoints).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int8Array, UInt32Array};
use datafusion::arrow::compute::{filter, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter};
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

struct Group {
    accumulators: Vec<Box<dyn Accumulator>>,
    last: Option<Vec<ScalarValue>>,
}

pub struct UpdatingAggregateOperator {
    key_columns: Vec<usize>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
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

impl UpdatingAggregateOperator {
    /// Output: keys, one column per aggregate, then `_op`.
    pub fn try_new(
        input_schema: &SchemaRef,
        key_columns: Vec<usize>,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
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
        Ok(Self {
            key_columns,
            aggregates,
            filters,
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
        // Rows per group, groups in order of first appearance.
        let mut order: Vec<OwnedRow> = Vec::new();
        let mut members: HashMap<OwnedRow, Vec<u32>> = HashMap::new();
        for i in 0..n {
            let key = rows.row(i).owned();
            let entry = members.entry(key.clone()).or_default();
            if entry.is_empty() {
                order.push(key);
            }
            entry.push(i as u32);
        }
        let args = evaluate_args(&self.aggregates, &batch)?;
        let masks = evaluate_filters(&self.filters, &batch)?;

        let mut out_keys: Vec<OwnedRow> = Vec::new();
        let mut out_values: Vec<Vec<ScalarValue>> = Vec::new();
        let mut ops: Vec<i8> = Vec::new();
        for key in order {
            let indices = UInt32Array::from(members.remove(&key).unwrap_or_default());
            let group = match self.groups.get_mut(&key) {
                Some(g) => g,
                None => {
                    let accumulators = self
                        .aggregates
                        .iter()
                        .map(|a| a.create_accumulator())
                        .collect::<datafusion::error::Result<_>>()?;
                    self.groups.entry(key.clone()).or_insert(Group {
                        accumulators,
                        last: None,
                    })
                }
            };
            for ((acc, values), mask) in group.accumulators.iter_mut().zip(&args).zip(&masks) {
                let mut taken: Vec<ArrayRef> = values
                    .iter()
                    .map(|v| take(v.as_ref(), &indices, None))
                    .collect::<std::result::Result<_, _>>()?;
                if let Some(mask) = mask {
                    let m = take(mask.as_ref(), &indices, None)?;
                    let m = m.as_boolean();
                    taken = taken
                        .iter()
                        .map(|v| filter(v.as_ref(), m))
                        .collect::<std::result::Result<_, _>>()?;
                }
                acc.update_batch(&taken)?;
            }
            let new = group
                .accumulators
                .iter_mut()
                .map(|a| a.evaluate())
                .collect::<datafusion::error::Result<Vec<_>>>()?;
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
