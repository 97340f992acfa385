//! Keep-last by key: each key's latest row, and a changelog of how it
//! changes. This is Flink's `ChangelogNormalize`, which turns an upsert
//! stream (an `upsert-kafka` topic: a row is the key's new value, a
//! tombstone deletes the key) into the retracting changelog the updating
//! operators consume:
//!
//! ```text
//!   input (key k)          stored for k     output
//!   +I/+U row, k unseen    row              +I row
//!   +I/+U row              old              -U old, +U row   (nothing if row = old)
//!   -D/-U (key only)       old              -D old           (nothing if k unseen)
//! ```
//!
//! A delete needs only the key: the row it retracts is the one stored.
//! Rows live in the partition store shared with Top-N (keyed by key group
//! and key, written incrementally at each barrier), under
//! `'table.exec.state.ttl'` when set.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int8Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use serde::{Deserialize, Serialize};

use super::partitions::{Entry, PartitionStore};
use super::rank::Emitted;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::partition::key_groups;
use crate::ttl::StateTtl;
use crate::updating::{OP_COLUMN, OP_DELETE, OP_INSERT, OP_UPDATE_AFTER, OP_UPDATE_BEFORE};
use crate::{OperatorError, Result};

/// Which columns form the key, and where the input's changelog is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeepLastSpec {
    /// Input columns of the key.
    pub keys: Vec<usize>,
    /// The input's `_op` column (its last); without one, every row is an
    /// upsert.
    pub op_column: Option<usize>,
    /// Keys idle this long (processing time, or event time) are forgotten.
    #[serde(default)]
    pub state_ttl_ms: Option<i64>,
    /// The time-to-live is event time: measured on the watermark
    /// (`'table.exec.state.ttl.time-domain' = 'event-time'`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_ttl_event_time: bool,
}

impl KeepLastSpec {
    /// The input's columns without `_op`, then `_op`.
    pub fn output_schema(&self, input: &Schema) -> SchemaRef {
        let width = self.op_column.unwrap_or(input.fields().len());
        let mut fields: Vec<Field> = input.fields()[..width]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        Arc::new(Schema::new(fields))
    }
}

/// The keep-last operator (see the module docs).
pub struct KeepLastOperator {
    spec: KeepLastSpec,
    /// Input columns that form a row (all but `_op`).
    width: usize,
    output: SchemaRef,
    key_converter: RowConverter,
    row_converter: RowConverter,
    store: PartitionStore,
}

impl std::fmt::Debug for KeepLastOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepLastOperator")
            .field("spec", &self.spec)
            .field("keys", &self.store.partitions.len())
            .finish_non_exhaustive()
    }
}

impl KeepLastOperator {
    pub fn try_new(input: &SchemaRef, spec: KeepLastSpec) -> Result<Self> {
        let n = input.fields().len();
        if spec.op_column.is_some_and(|op| op + 1 != n) {
            return Err(OperatorError::Internal(
                "a keep-last input's _op must be its last column".into(),
            ));
        }
        let width = spec.op_column.unwrap_or(n);
        if spec.keys.is_empty() || spec.keys.iter().any(|&k| k >= width) {
            return Err(OperatorError::Internal(
                "a keep-last key column is out of range".into(),
            ));
        }
        let field = |c: usize| SortField::new(input.field(c).data_type().clone());
        let key_converter = RowConverter::new(spec.keys.iter().map(|&c| field(c)).collect())?;
        let row_converter = RowConverter::new((0..width).map(field).collect())?;
        let mut store = PartitionStore::new("keep-last");
        store.set_ttl(StateTtl::planned(
            spec.state_ttl_ms,
            spec.state_ttl_event_time,
        ));
        Ok(Self {
            output: spec.output_schema(input),
            spec,
            width,
            key_converter,
            row_converter,
            store,
        })
    }

    /// Applies one row to its key's stored row; true if that changed.
    fn apply(&mut self, key: &[u8], row: &[u8], upsert: bool, emitted: &mut Emitted) -> bool {
        let stored = self
            .store
            .partitions
            .get(key)
            .and_then(|p| p.entries.first())
            .map(|e| e.row.clone());
        match (upsert, stored) {
            (true, Some(old)) if *old == *row => false,
            (true, old) => {
                match &old {
                    Some(old) => {
                        emitted.push(old, 0, OP_UPDATE_BEFORE);
                        emitted.push(row, 0, OP_UPDATE_AFTER);
                    }
                    None => emitted.push(row, 0, OP_INSERT),
                }
                let entry = Entry {
                    key: Box::default(),
                    row: row.into(),
                    time: 0,
                };
                self.store.partition_mut(key).entries = vec![entry];
                true
            }
            (false, Some(old)) => {
                emitted.push(&old, 0, OP_DELETE);
                self.store.partitions.remove(key);
                true
            }
            (false, None) => {
                self.store.unknown_retraction();
                false
            }
        }
    }

    fn collect(&self, emitted: Emitted, out: &mut Collector) -> Result<()> {
        if emitted.is_empty() {
            return Ok(());
        }
        let parser = self.row_converter.parser();
        let rows = (0..emitted.len()).map(|i| parser.parse(emitted.row(i)));
        let mut columns = self.row_converter.convert_rows(rows)?;
        columns.push(Arc::new(Int8Array::from(emitted.ops)));
        out.collect(RecordBatch::try_new(self.output.clone(), columns)?);
        Ok(())
    }
}

impl Operator for KeepLastOperator {
    fn name(&self) -> String {
        "KeepLast".into()
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.store.open(ctx, |_, _| None)
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        self.store.expire_idle(|_| false);
        let key_arrays: Vec<ArrayRef> = self
            .spec
            .keys
            .iter()
            .map(|&c| batch.column(c).clone())
            .collect();
        let keys = self.key_converter.convert_columns(&key_arrays)?;
        let rows = self
            .row_converter
            .convert_columns(&batch.columns()[..self.width])?;
        let mut groups = Vec::with_capacity(n);
        key_groups(&key_arrays, n, &mut groups)?;
        let ops = crate::updating::changelog_ops(&batch, self.spec.op_column)?;
        let mut emitted = Emitted::default();
        for (i, &kg) in groups.iter().enumerate() {
            let upsert = ops
                .as_ref()
                .is_none_or(|o| matches!(o.value(i), OP_INSERT | OP_UPDATE_AFTER));
            let key = keys.row(i);
            if self.apply(key.data(), rows.row(i).data(), upsert, &mut emitted) {
                self.store.mark_dirty(key.data(), kg);
            }
        }
        self.collect(emitted, out)
    }

    fn handle_watermark(&mut self, watermark: i64, out: &mut Collector) -> Result<()> {
        // The clock of an event-time time-to-live.
        self.store.watermark = self.store.watermark.max(watermark);
        out.emit_watermark(watermark);
        Ok(())
    }

    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        self.store.expire_idle(|_| false);
        self.store.checkpoint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Driven;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use eddy_state::{MemoryBackend, StateBackend};

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
            Field::new(OP_COLUMN, DataType::Int8, false),
        ]))
    }

    fn batch(rows: &[(i64, Option<&str>, i8)]) -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(Int8Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn operator() -> Box<dyn Operator> {
        let spec = KeepLastSpec {
            keys: vec![0],
            op_column: Some(2),
            state_ttl_ms: None,
            state_ttl_event_time: false,
        };
        Box::new(KeepLastOperator::try_new(&input(), spec).unwrap())
    }

    #[test]
    fn upserts_and_tombstones_become_a_retracting_changelog() {
        let state: Arc<dyn StateBackend> = Arc::new(MemoryBackend::default());
        let mut op = Driven::open(operator(), &state);
        let out = op.input(
            0,
            batch(&[
                (1, Some("a"), OP_INSERT),
                (2, Some("b"), OP_INSERT),
                (1, Some("c"), OP_UPDATE_AFTER),
                (1, Some("c"), OP_INSERT),
                (2, None, OP_DELETE),
                (3, None, OP_DELETE),
                (2, Some("d"), OP_INSERT),
            ]),
        );
        // The same row again changes nothing; a delete retracts the row
        // stored (its value too); a delete of an unseen key is nothing.
        assert_eq!(
            out,
            ["+I 1,a", "+I 2,b", "-U 1,a", "+U 1,c", "-D 2,b", "+I 2,d"]
        );
        op.checkpoint();
        // Restored: the stored rows are there to be retracted.
        let mut restored = Driven::open(operator(), &state);
        let out = restored.input(0, batch(&[(1, None, OP_DELETE), (2, Some("e"), OP_INSERT)]));
        assert_eq!(out, ["-D 1,c", "-U 2,d", "+U 2,e"]);
    }
}
