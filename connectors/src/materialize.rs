//! Table mode (`SET 'sql-client.execution.result-mode' = 'table'`, Flink's
//! name): a SELECT's changelog is folded into the table it leaves, and that
//! table goes to the real sink when the input ends. `+I`/`+U` add a row,
//! `-U`/`-D` take one away; rows keep the order they first appeared in.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Int8Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use eddy_operators::OperatorContext;
use eddy_operators::sink::SinkCommit;
use eddy_operators::updating::{OP_COLUMN, OP_DELETE, OP_UPDATE_BEFORE};
use eddy_operators::{Result, Sink};

pub struct MaterializingSink {
    inner: Box<dyn Sink>,
    /// The changelog column of the input, if it has one.
    op: Option<usize>,
    converter: RowConverter,
    output: SchemaRef,
    /// How many times each row is in the table (retractions subtract).
    counts: HashMap<OwnedRow, i64>,
    order: Vec<OwnedRow>,
}

impl std::fmt::Debug for MaterializingSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaterializingSink")
            .field("rows", &self.counts.len())
            .finish_non_exhaustive()
    }
}

impl MaterializingSink {
    /// What the inner sink receives: `schema` without its `_op` column.
    pub fn output_schema(schema: &SchemaRef) -> SchemaRef {
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| f.name() != OP_COLUMN)
            .cloned()
            .collect();
        Arc::new(Schema::new(fields))
    }

    pub fn new(inner: Box<dyn Sink>, schema: &SchemaRef) -> Result<Self> {
        let output = Self::output_schema(schema);
        let converter = RowConverter::new(
            output
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(Self {
            inner,
            op: schema.index_of(OP_COLUMN).ok(),
            converter,
            output,
            counts: HashMap::new(),
            order: Vec::new(),
        })
    }
}

impl Sink for MaterializingSink {
    fn name(&self) -> String {
        format!("{} (table mode)", self.inner.name())
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.inner.open(ctx)
    }

    fn recover(&mut self, checkpoint: u64, position: Option<&[u8]>) -> Result<()> {
        self.inner.recover(checkpoint, position)
    }

    /// The table is written to the inner sink when the input ends: only
    /// then does a checkpoint have anything of it to commit. (The table
    /// itself is not part of checkpoints: table mode is for results shown
    /// at the end of a bounded query.)
    fn pre_commit(&mut self, checkpoint: u64, last: bool) -> Result<SinkCommit> {
        if last {
            self.inner.pre_commit(checkpoint, last)
        } else {
            Ok(SinkCommit::default())
        }
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns: Vec<_> = batch
            .columns()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.op)
            .map(|(_, c)| c.clone())
            .collect();
        let rows = self.converter.convert_columns(&columns)?;
        let ops = self.op.map(|i| batch.column(i).as_primitive::<Int8Type>());
        for (i, row) in rows.iter().enumerate() {
            let delta = match ops.map(|o| o.value(i)) {
                Some(OP_UPDATE_BEFORE | OP_DELETE) => -1,
                _ => 1,
            };
            let count = self.counts.entry(row.owned()).or_insert_with(|| {
                self.order.push(row.owned());
                0
            });
            *count += delta;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let mut rows = Vec::new();
        for row in &self.order {
            let n = self.counts.get(row).copied().unwrap_or(0);
            rows.extend(std::iter::repeat_n(row.row(), n.max(0) as usize));
        }
        if !rows.is_empty() {
            let columns = self.converter.convert_rows(rows)?;
            self.inner
                .write_batch(&RecordBatch::try_new(self.output.clone(), columns)?)?;
        }
        self.inner.finish()
    }
}
