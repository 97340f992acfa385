//! The lookup join (Flink's processing-time temporal join,
//! `JOIN t FOR SYSTEM_TIME AS OF s.proc_time`): each input row is joined
//! with the rows a bounded table holds when the row is processed.
//!
//! ```text
//!  input ──► LookupJoin ──► input columns ++ table columns [++ _op]
//!                ▲
//!        table (read whole at open; read again when its version changes,
//!               checked at most once per `recheck`)
//! ```
//!
//! - Keys: expressions over the input, equal to columns of the table; a
//!   NULL key matches nothing, as in SQL.
//! - INNER drops rows without a match; LEFT pads them with NULLs.
//! - The residual condition is evaluated on each (input, table) pair.
//! - A changelog input keeps its `_op` on each output row: the join is
//!   row by row, so a retraction takes back what its insert produced as
//!   long as the table did not change in between (processing-time
//!   semantics, as in Flink).
//! - No state is checkpointed: after a restart the table is read again,
//!   as it is then.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt32Array, UInt32Builder};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::operator::{Collector, Operator, OperatorContext};
use crate::{OperatorError, Result};

/// A bounded table a lookup join reads whole.
pub trait LookupTable: Send + Sync + fmt::Debug {
    /// Names the table for logs and errors.
    fn name(&self) -> String;
    /// Every row of the table, as it is now.
    fn load(&self) -> Result<Vec<RecordBatch>>;
    /// A value that changes whenever the table does (e.g. from its files'
    /// lengths and modification times); `None` when it cannot tell, and
    /// the table is read once.
    fn version(&self) -> Option<u64>;
}

/// Whether input rows without a match are dropped or padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LookupJoinType {
    Inner,
    Left,
}

pub struct LookupJoinOperator {
    table: Arc<dyn LookupTable>,
    table_schema: SchemaRef,
    table_keys: Vec<usize>,
    probe_keys: Vec<Arc<dyn PhysicalExpr>>,
    join_type: LookupJoinType,
    /// Over the input's row columns ++ the table's columns.
    residual: Option<Arc<dyn PhysicalExpr>>,
    /// The input's changelog column (its last), if any.
    op_column: Option<usize>,
    pair_schema: SchemaRef,
    output: SchemaRef,
    converter: RowConverter,
    /// The table, and its rows by key (in the converter's row format; a
    /// probe looks up its row's bytes, with no copy).
    rows: RecordBatch,
    index: HashMap<Box<[u8]>, Vec<u32>>,
    version: Option<u64>,
    checked: Instant,
    recheck: Duration,
}

impl fmt::Debug for LookupJoinOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupJoinOperator")
            .field("table", &self.table.name())
            .field("rows", &self.rows.num_rows())
            .finish_non_exhaustive()
    }
}

/// The parts of a lookup join, as planned.
#[derive(Debug)]
pub struct LookupJoinSpec {
    pub table: Arc<dyn LookupTable>,
    pub table_schema: SchemaRef,
    pub table_keys: Vec<usize>,
    /// Over the input (its row columns and `_op`), of the table keys' types.
    pub probe_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub join_type: LookupJoinType,
    pub residual: Option<Arc<dyn PhysicalExpr>>,
    /// The input's row columns, the table's, then the input's `_op` if it
    /// has one (`op_column`).
    pub output: SchemaRef,
    pub op_column: Option<usize>,
    /// How often the table's version is checked.
    pub recheck: Duration,
}

impl LookupJoinOperator {
    pub fn try_new(spec: LookupJoinSpec) -> Result<Self> {
        if spec.probe_keys.len() != spec.table_keys.len() || spec.table_keys.is_empty() {
            return Err(OperatorError::Internal(
                "a lookup join needs as many input keys as table keys, and at least one".into(),
            ));
        }
        let width = spec.output.fields().len() - usize::from(spec.op_column.is_some());
        let pair: Vec<Field> = spec.output.fields()[..width]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let converter = RowConverter::new(
            spec.table_keys
                .iter()
                .map(|&k| SortField::new(spec.table_schema.field(k).data_type().clone()))
                .collect(),
        )?;
        Ok(Self {
            rows: RecordBatch::new_empty(spec.table_schema.clone()),
            table: spec.table,
            table_schema: spec.table_schema,
            table_keys: spec.table_keys,
            probe_keys: spec.probe_keys,
            join_type: spec.join_type,
            residual: spec.residual,
            op_column: spec.op_column,
            pair_schema: Arc::new(Schema::new(pair)),
            output: spec.output,
            converter,
            index: HashMap::new(),
            version: None,
            checked: Instant::now(),
            recheck: spec.recheck,
        })
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// Reads the table and indexes its rows by key.
    fn load(&mut self) -> Result<()> {
        let version = self.table.version();
        let batches = self.table.load()?;
        let rows = concat_batches(&self.table_schema, &batches)?;
        let keys: Vec<ArrayRef> = self
            .table_keys
            .iter()
            .map(|&k| rows.column(k).clone())
            .collect();
        let converted = self.converter.convert_columns(&keys)?;
        let mut index: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        for (i, key) in converted.iter().enumerate() {
            if keys.iter().all(|k| k.is_valid(i)) {
                index.entry(key.as_ref().into()).or_default().push(i as u32);
            }
        }
        tracing::info!(
            table = %self.table.name(),
            rows = rows.num_rows(),
            keys = index.len(),
            "lookup join read its table"
        );
        self.rows = rows;
        self.index = index;
        self.version = version;
        self.checked = Instant::now();
        Ok(())
    }

    /// Reads the table again if it changed, at most once per `recheck`.
    fn refresh(&mut self) -> Result<()> {
        if self.version.is_none() || self.checked.elapsed() < self.recheck {
            return Ok(());
        }
        self.checked = Instant::now();
        if self.table.version() != self.version {
            self.load()?;
        }
        Ok(())
    }
}

impl Operator for LookupJoinOperator {
    fn name(&self) -> String {
        "LookupJoin".into()
    }

    fn open(&mut self, _ctx: &OperatorContext) -> Result<()> {
        self.load()
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        self.refresh()?;
        let keys: Vec<ArrayRef> = self
            .probe_keys
            .iter()
            .map(|k| k.evaluate(&batch).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<_>>()?;
        let converted = self.converter.convert_columns(&keys)?;
        let (mut probe, mut table) = (UInt32Builder::new(), UInt32Builder::new());
        for i in 0..n {
            if !keys.iter().all(|k| k.is_valid(i)) {
                continue;
            }
            if let Some(matches) = self.index.get(converted.row(i).as_ref()) {
                for &j in matches {
                    probe.append_value(i as u32);
                    table.append_value(j);
                }
            }
        }
        let (probe, table) = (probe.finish(), table.finish());
        let width = self.op_column.unwrap_or(batch.num_columns());
        let pairs = |probe: &UInt32Array, table: &UInt32Array| -> Result<Vec<ArrayRef>> {
            let mut columns = Vec::with_capacity(self.output.fields().len());
            for c in &batch.columns()[..width] {
                columns.push(take(c.as_ref(), probe, None)?);
            }
            for c in self.rows.columns() {
                columns.push(take(c.as_ref(), table, None)?);
            }
            Ok(columns)
        };
        let mut columns = pairs(&probe, &table)?;
        let mut matched_probe = probe.clone();
        if let Some(residual) = &self.residual {
            let pair_batch = RecordBatch::try_new(self.pair_schema.clone(), columns)?;
            let keep = residual
                .evaluate(&pair_batch)?
                .into_array(pair_batch.num_rows())?;
            let keep = keep
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| OperatorError::Internal("a join condition is not boolean".into()))?
                .clone();
            let kept = filter_record_batch(&pair_batch, &keep)?;
            matched_probe = datafusion::arrow::compute::filter(&probe, &keep)?
                .as_any()
                .downcast_ref::<UInt32Array>()
                .cloned()
                .ok_or_else(|| OperatorError::Internal("probe indices".into()))?;
            columns = kept.columns().to_vec();
        }
        // LEFT: the input rows that kept no match, padded with NULLs.
        let mut probe_order = matched_probe;
        if self.join_type == LookupJoinType::Left {
            let mut seen = vec![false; n];
            for i in probe_order.values() {
                seen[*i as usize] = true;
            }
            let unmatched: UInt32Array = (0..n as u32).filter(|&i| !seen[i as usize]).collect();
            if !unmatched.is_empty() {
                let none: UInt32Array = std::iter::repeat_n(None::<u32>, unmatched.len()).collect();
                let padded = pairs(&unmatched, &none)?;
                let both = RecordBatch::try_new(self.pair_schema.clone(), columns)?;
                let padded = RecordBatch::try_new(self.pair_schema.clone(), padded)?;
                columns = concat_batches(&self.pair_schema, [&both, &padded])?
                    .columns()
                    .to_vec();
                let mut order: Vec<u32> = probe_order.values().to_vec();
                order.extend(unmatched.values());
                probe_order = UInt32Array::from(order);
            }
        }
        if let Some(op) = self.op_column {
            columns.push(take(batch.column(op).as_ref(), &probe_order, None)?);
        }
        if probe_order.is_empty() {
            return Ok(());
        }
        out.collect(RecordBatch::try_new(self.output.clone(), columns)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
