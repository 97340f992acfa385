//! Arrow types as Postgres types, and Arrow rows as Postgres data rows in
//! the text or the binary format, as each client asks.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;

/// The Postgres type a column of `data_type` is sent as. Types without a
/// match (decimals, intervals, lists, rows, maps) are sent as text, in
/// Arrow's display form.
pub(crate) fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        _ => Type::TEXT,
    }
}

/// The row description of `schema`, each column in the format the client
/// asked for (`format(i)`).
pub(crate) fn fields(
    schema: &datafusion::arrow::datatypes::Schema,
    format: impl Fn(usize) -> FieldFormat,
) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                format(i),
            )
        })
        .collect()
}

/// Encodes `batch`'s rows for the columns `fields` describes.
pub(crate) fn encode(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
) -> PgWireResult<Vec<DataRow>> {
    let columns: Vec<Column> = batch
        .columns()
        .iter()
        .zip(fields.iter())
        .map(|(a, f)| Column::new(a, f.datatype()))
        .collect::<PgWireResult<_>>()?;
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for column in &columns {
            column.encode(&mut encoder, row)?;
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

/// A column in the one Arrow type its Postgres type is encoded from.
enum Column {
    Bool(ArrayRef),
    I16(ArrayRef),
    I32(ArrayRef),
    I64(ArrayRef),
    F32(ArrayRef),
    F64(ArrayRef),
    Bytes(ArrayRef),
    Date(ArrayRef),
    Timestamp(ArrayRef),
    TimestampTz(ArrayRef),
    /// Anything else, as its display text.
    Text(ArrayRef),
}

fn cast_to(array: &ArrayRef, to: &DataType) -> PgWireResult<ArrayRef> {
    cast(array, to).map_err(|e| PgWireError::ApiError(Box::new(e)))
}

impl Column {
    fn new(array: &ArrayRef, pg: &Type) -> PgWireResult<Self> {
        let micros = DataType::Timestamp(TimeUnit::Microsecond, None);
        Ok(match *pg {
            Type::BOOL => Column::Bool(array.clone()),
            Type::INT2 => Column::I16(cast_to(array, &DataType::Int16)?),
            Type::INT4 => Column::I32(cast_to(array, &DataType::Int32)?),
            Type::INT8 => Column::I64(cast_to(array, &DataType::Int64)?),
            Type::FLOAT4 => Column::F32(cast_to(array, &DataType::Float32)?),
            Type::FLOAT8 => Column::F64(array.clone()),
            Type::BYTEA => Column::Bytes(cast_to(array, &DataType::LargeBinary)?),
            Type::DATE => Column::Date(cast_to(array, &DataType::Date32)?),
            Type::TIMESTAMP => Column::Timestamp(cast_to(array, &micros)?),
            Type::TIMESTAMPTZ => {
                // The instant, whatever zone the column is shown in.
                let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
                let utc = cast_to(array, &utc)?;
                Column::TimestampTz(cast_to(&utc, &micros)?)
            }
            _ => Column::Text(text(array)?),
        })
    }

    fn encode(&self, encoder: &mut DataRowEncoder, row: usize) -> PgWireResult<()> {
        fn value<T>(array: &ArrayRef, row: usize, get: impl Fn(&ArrayRef) -> T) -> Option<T> {
            (!array.is_null(row)).then(|| get(array))
        }
        match self {
            Column::Bool(a) => encoder.encode_field(&value(a, row, |a| a.as_boolean().value(row))),
            Column::I16(a) => {
                encoder.encode_field(&value(a, row, |a| a.as_primitive::<Int16Type>().value(row)))
            }
            Column::I32(a) => {
                encoder.encode_field(&value(a, row, |a| a.as_primitive::<Int32Type>().value(row)))
            }
            Column::I64(a) => {
                encoder.encode_field(&value(a, row, |a| a.as_primitive::<Int64Type>().value(row)))
            }
            Column::F32(a) => encoder.encode_field(&value(a, row, |a| {
                a.as_primitive::<Float32Type>().value(row)
            })),
            Column::F64(a) => encoder.encode_field(&value(a, row, |a| {
                a.as_primitive::<Float64Type>().value(row)
            })),
            Column::Bytes(a) => {
                encoder.encode_field(&value(a, row, |a| a.as_binary::<i64>().value(row).to_vec()))
            }
            Column::Date(a) => encoder.encode_field(
                &value(a, row, |a| {
                    let days = a.as_primitive::<Date32Type>().value(row);
                    NaiveDate::from_num_days_from_ce_opt(days + 719_163)
                })
                .flatten(),
            ),
            Column::Timestamp(a) => encoder.encode_field(
                &value(a, row, |a| {
                    let us = a.as_primitive::<TimestampMicrosecondType>().value(row);
                    DateTime::<Utc>::from_timestamp_micros(us).map(|t| t.naive_utc())
                })
                .flatten(),
            ),
            Column::TimestampTz(a) => encoder.encode_field(
                &value(a, row, |a| {
                    let us = a.as_primitive::<TimestampMicrosecondType>().value(row);
                    DateTime::<Utc>::from_timestamp_micros(us)
                })
                .flatten(),
            ),
            Column::Text(a) => {
                let text = a.as_string::<i32>();
                encoder.encode_field(&(!text.is_null(row)).then(|| text.value(row)))
            }
        }
    }
}

/// A column as text: cast where Arrow can, else in its display form.
fn text(array: &ArrayRef) -> PgWireResult<ArrayRef> {
    if let Ok(text) = cast(array, &DataType::Utf8) {
        return Ok(text);
    }
    let options = FormatOptions::default();
    let f = ArrayFormatter::try_new(array.as_ref(), &options)
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let strings: StringArray = (0..array.len())
        .map(|i| (!array.is_null(i)).then(|| f.value(i).to_string()))
        .collect();
    Ok(Arc::new(strings))
}
