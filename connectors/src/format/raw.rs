//! `'format' = 'raw'`: each record is one value, its bytes as they are,
//! as Flink's raw format. The table has one physical column: `STRING`
//! (the bytes must be UTF-8) or `BYTES` / `VARBINARY`.
//!
//! A broker's message is one record whatever bytes it holds; a file's line
//! is one record (without its line break). A NULL is written as no bytes.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BinaryArray, StringArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::{Decoder, Encoder, Format, Records};
use crate::options::{OptionDecl, Options};
use crate::{ConnectorError, Result};

#[derive(Debug)]
pub struct RawFormat;

/// The one column's type, if it is one the format takes.
fn value_type(schema: &SchemaRef) -> Result<DataType> {
    let fields = schema.fields();
    let t = match fields.len() {
        1 => fields[0].data_type().clone(),
        n => {
            return Err(ConnectorError::Config(format!(
                "the 'raw' format reads and writes one column, not {n}"
            )));
        }
    };
    match t {
        DataType::Utf8 | DataType::Binary => Ok(t),
        other => Err(ConnectorError::Config(format!(
            "the 'raw' format's column is STRING or BYTES, not {other}"
        ))),
    }
}

impl Format for RawFormat {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn help(&self) -> &'static str {
        "each record one value, its bytes as they are: a single STRING or BYTES column"
    }

    fn options(&self) -> Vec<OptionDecl> {
        Vec::new()
    }

    fn decoder(&self, schema: &SchemaRef, _options: &Options) -> Result<Option<Box<dyn Decoder>>> {
        let text = value_type(schema)? == DataType::Utf8;
        Ok(Some(Box::new(RawDecoder {
            schema: schema.clone(),
            text,
        })))
    }

    fn encoder(&self, schema: &SchemaRef, _options: &Options) -> Result<Option<Box<dyn Encoder>>> {
        value_type(schema)?;
        Ok(Some(Box::new(RawEncoder)))
    }

    fn extension(&self) -> &'static str {
        "txt"
    }
}

#[derive(Debug)]
struct RawDecoder {
    schema: SchemaRef,
    /// A STRING column: the bytes must be UTF-8.
    text: bool,
}

impl Decoder for RawDecoder {
    fn decode(&mut self, records: &Records) -> std::result::Result<RecordBatch, String> {
        let column: ArrayRef = if self.text {
            let values = records
                .iter()
                .map(|r| std::str::from_utf8(r).map_err(|e| format!("not UTF-8: {e}")))
                .collect::<std::result::Result<Vec<&str>, String>>()?;
            Arc::new(StringArray::from(values))
        } else {
            Arc::new(BinaryArray::from_iter_values(records.iter()))
        };
        RecordBatch::try_new(self.schema.clone(), vec![column]).map_err(|e| e.to_string())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[derive(Debug)]
struct RawEncoder;

impl Encoder for RawEncoder {
    fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        for record in self.records(batch)? {
            out.extend_from_slice(&record);
            out.push(b'\n');
        }
        Ok(())
    }

    fn records(&mut self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let column = batch.column(0);
        let bytes = |v: Option<&[u8]>| v.unwrap_or_default().to_vec();
        Ok(match column.data_type() {
            DataType::Utf8 => column
                .as_string::<i32>()
                .iter()
                .map(|v| bytes(v.map(str::as_bytes)))
                .collect(),
            _ => column.as_binary::<i32>().iter().map(bytes).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn schema(t: DataType) -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", t, true)]))
    }

    #[test]
    fn a_record_is_one_value_line_breaks_and_all() {
        let mut records = Records::default();
        records.push(b"two\nlines");
        records.push(b"");
        records.push(&[0xff, 0x01]);
        let mut bytes = RawFormat
            .decoder(&schema(DataType::Binary), &Options::default())
            .unwrap()
            .unwrap();
        let batch = bytes.decode(&records).unwrap();
        let column = batch.column(0).as_binary::<i32>();
        assert_eq!(column.value(0), b"two\nlines");
        assert_eq!(column.value(1), b"");
        assert_eq!(column.value(2), &[0xff, 0x01]);
        let written = RawEncoder.records(&batch).unwrap();
        assert_eq!(
            written,
            vec![b"two\nlines".to_vec(), vec![], vec![0xff, 0x01]]
        );

        let mut text = RawFormat
            .decoder(&schema(DataType::Utf8), &Options::default())
            .unwrap()
            .unwrap();
        let err = text.decode(&records).unwrap_err();
        assert!(err.starts_with("not UTF-8"), "{err}");
        let err = RawFormat
            .decoder(&schema(DataType::Int64), &Options::default())
            .unwrap_err();
        assert!(err.to_string().contains("STRING or BYTES"), "{err}");
    }
}
