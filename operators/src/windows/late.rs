//! Late rows: what a window operator does with a row that no window it
//! belongs to can take any more.
//!
//! Late rows are always counted ([`crate::metrics::JobMetrics::late_rows`]).
//! With `'late.policy' = 'dead-letter'` they are also sent, on the
//! operator's [`LATE_PORT`] side output, to a dead-letter sink: the row's
//! columns, then why it was late and the watermark at the time.
//!
//! ```text
//!   auction | bidder | price | date_time | _reason                        | _watermark
//!   1001    | 7      | 33    | 12:00:01  | every window of the row has... | 12:00:09
//! ```

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use crate::aggregate::conform_columns;
use crate::message::Timestamp;
use crate::operator::{Collector, LATE_PORT};
use crate::{OperatorError, Result};

/// The column of a dead-letter row that says why it was late.
pub const REASON_COLUMN: &str = "_reason";
/// The column of a dead-letter row holding the watermark it fell behind.
pub const WATERMARK_COLUMN: &str = "_watermark";

/// Why a row with an event time was dropped.
pub const REASON_LATE: &str = "late: every window of the row had fired";
/// Why a row was dropped when windows stay open for an allowed lateness.
pub const REASON_TOO_LATE: &str =
    "late: every window of the row had fired and its allowed lateness had passed";
/// Why a row without an event time was dropped.
pub const REASON_NO_TIME: &str = "the row has no event time (NULL)";

/// The schema of dead-letter rows: the named input columns (their types
/// from `input`), then `_reason` and `_watermark`.
pub fn late_schema(input: &Schema, columns: &[usize], names: &[String]) -> Result<Schema> {
    if columns.len() != names.len() {
        return Err(OperatorError::Internal(
            "one name per dead-letter column".into(),
        ));
    }
    let mut fields = Vec::with_capacity(columns.len() + 2);
    for (&c, name) in columns.iter().zip(names) {
        let field = input.fields().get(c).ok_or_else(|| {
            OperatorError::Internal(format!("dead-letter column {c} is not an input column"))
        })?;
        fields.push(Field::new(name, field.data_type().clone(), true));
    }
    fields.push(Field::new(REASON_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(
        WATERMARK_COLUMN,
        DataType::Timestamp(TimeUnit::Millisecond, None),
        true,
    ));
    Ok(Schema::new(fields))
}

/// Sends late rows to the dead-letter side output.
#[derive(Debug, Clone)]
pub struct LateOutput {
    columns: Vec<usize>,
    schema: SchemaRef,
}

impl LateOutput {
    /// Late rows will carry these input columns, under these names.
    pub fn try_new(input: &Schema, columns: Vec<usize>, names: &[String]) -> Result<Self> {
        let schema = Arc::new(late_schema(input, &columns, names)?);
        Ok(Self { columns, schema })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Emits rows `rows` of `batch`, each with its reason, and the watermark.
    pub(crate) fn emit(
        &self,
        batch: &RecordBatch,
        rows: &[(u32, &'static str)],
        watermark: Timestamp,
        out: &mut Collector,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from_iter_values(rows.iter().map(|(r, _)| *r));
        let mut columns: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&c| take(batch.column(c).as_ref(), &indices, None))
            .collect::<std::result::Result<_, _>>()?;
        columns.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, why)| *why),
        )));
        let wm = (watermark != Timestamp::MIN).then_some(watermark);
        columns.push(Arc::new(TimestampMillisecondArray::from(vec![
            wm;
            rows.len()
        ])));
        let columns = conform_columns(&self.schema, columns)?;
        out.collect_side(
            LATE_PORT,
            RecordBatch::try_new(self.schema.clone(), columns)?,
        );
        Ok(())
    }
}
