//! `'format' = 'debezium-json'`: Debezium's change events, a changelog in
//! and out, as Flink's format.
//!
//! ```text
//!   {"before": null, "after": {...}, "op": "c"}   create   → +I after
//!   {"before": null, "after": {...}, "op": "r"}   snapshot → +I after
//!   {"before": {...}, "after": {...}, "op": "u"}  update   → -U before, +U after
//!   {"before": {...}, "after": null, "op": "d"}   delete   → -D before
//! ```
//!
//! The rows are the table's columns, with the changelog's `_op` last. With
//! `'debezium-json.schema-include' = 'true'` each event is wrapped as
//! Debezium's JSON converter writes it with schemas on: `{"schema": ...,
//! "payload": {...}}`. An update without `before` (a Postgres table
//! without `REPLICA IDENTITY FULL`) is a bad record. Events are decoded a
//! batch at a time into Arrow columns (`before` and `after` as structs),
//! then interleaved into rows.
//!
//! Written, `+I` and `+U` are `"op": "c"` events with `after`, `-U` and
//! `-D` are `"op": "d"` events with `before`, as Flink writes them.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int8Array, StringArray, StructArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Int8Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::updating::{
    OP_COLUMN, OP_DELETE, OP_INSERT, OP_UPDATE_AFTER, OP_UPDATE_BEFORE,
};

use super::json::{TIMESTAMP_FORMAT, clean, decode_json, decode_schema, write_json};
use super::{Decoder, Encoder, Format, Records};
use crate::options::{OptionDecl, OptionType, Options};
use crate::{ConnectorError, Result};

const SCHEMA_INCLUDE: &str = "debezium-json.schema-include";
const IGNORE_PARSE_ERRORS: &str = "debezium-json.ignore-parse-errors";

#[derive(Debug)]
pub struct DebeziumJsonFormat;

/// The table's columns: the schema without its `_op`, which must be last.
fn row_fields(schema: &SchemaRef) -> Result<Fields> {
    let fields = schema.fields();
    match fields.last() {
        Some(op) if op.name() == OP_COLUMN => Ok(fields[..fields.len() - 1].into()),
        _ => Err(ConnectorError::Config(
            "the 'debezium-json' format carries a changelog, and this table's rows are not one"
                .into(),
        )),
    }
}

impl Format for DebeziumJsonFormat {
    fn name(&self) -> &'static str {
        "debezium-json"
    }

    fn help(&self) -> &'static str {
        "Debezium's JSON change events: a changelog (c/r: +I, u: -U/+U, d: -D)"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::optional(
                SCHEMA_INCLUDE,
                OptionType::Bool,
                "false",
                "events are wrapped as {\"schema\": ..., \"payload\": ...} (Kafka Connect's JSON converter with schemas on); read only",
            ),
            OptionDecl::optional(
                IGNORE_PARSE_ERRORS,
                OptionType::Bool,
                "false",
                "skip (and count) events that do not decode, instead of failing",
            ),
        ]
    }

    fn decoder(&self, schema: &SchemaRef, options: &Options) -> Result<Option<Box<dyn Decoder>>> {
        let rows = row_fields(schema)?;
        let image = DataType::Struct(
            decode_schema(&Arc::new(Schema::new(rows.clone())))
                .fields()
                .clone(),
        );
        let envelope = Fields::from(vec![
            Field::new("before", image.clone(), true),
            Field::new("after", image, true),
            Field::new("op", DataType::Utf8, true),
        ]);
        let wrapped = options.bool(SCHEMA_INCLUDE)?.unwrap_or(false);
        let read = match wrapped {
            false => Schema::new(envelope),
            true => Schema::new(vec![Field::new(
                "payload",
                DataType::Struct(envelope),
                true,
            )]),
        };
        Ok(Some(Box::new(DebeziumDecoder {
            schema: schema.clone(),
            rows,
            read: Arc::new(read),
            wrapped,
            ignore_parse_errors: options.bool(IGNORE_PARSE_ERRORS)?.unwrap_or(false),
        })))
    }

    fn encoder(&self, schema: &SchemaRef, _options: &Options) -> Result<Option<Box<dyn Encoder>>> {
        Ok(Some(Box::new(DebeziumEncoder {
            rows: row_fields(schema)?,
        })))
    }

    fn extension(&self) -> &'static str {
        "jsonl"
    }

    fn changelog(&self) -> bool {
        true
    }
}

/// Which image (0 `before`, 1 `after`) of which event makes each row, and
/// each row's change.
type Changes = (Vec<(usize, usize)>, Vec<i8>);

#[derive(Debug)]
struct DebeziumDecoder {
    /// The table's columns and `_op`.
    schema: SchemaRef,
    rows: Fields,
    /// The events as decoded: `before`, `after` and `op`, maybe wrapped.
    read: SchemaRef,
    wrapped: bool,
    ignore_parse_errors: bool,
}

impl DebeziumDecoder {
    /// The rows of the events, in order.
    fn changes(
        before: &StructArray,
        after: &StructArray,
        op: &StringArray,
    ) -> std::result::Result<Changes, String> {
        let mut picks = Vec::with_capacity(op.len());
        let mut ops = Vec::with_capacity(op.len());
        for i in 0..op.len() {
            let image = |side: &StructArray, name: &str| match side.is_valid(i) {
                true => Ok(()),
                false => Err(format!("a '{}' event without '{name}'", op.value(i))),
            };
            match op.is_valid(i).then(|| op.value(i)) {
                Some("c" | "r") => {
                    image(after, "after")?;
                    picks.push((1, i));
                    ops.push(OP_INSERT);
                }
                Some("u") => {
                    image(before, "before").map_err(|e| {
                        format!("{e} (a Postgres table needs REPLICA IDENTITY FULL)")
                    })?;
                    image(after, "after")?;
                    picks.extend([(0, i), (1, i)]);
                    ops.extend([OP_UPDATE_BEFORE, OP_UPDATE_AFTER]);
                }
                Some("d") => {
                    image(before, "before")?;
                    picks.push((0, i));
                    ops.push(OP_DELETE);
                }
                Some(other) => return Err(format!("unknown Debezium op '{other}'")),
                None => return Err("an event without 'op'".into()),
            }
        }
        Ok((picks, ops))
    }
}

impl Decoder for DebeziumDecoder {
    fn decode(&mut self, records: &Records) -> std::result::Result<RecordBatch, String> {
        let batch = decode_json(&self.read, &records.lines(), records.len())?;
        let envelope = match self.wrapped {
            false => batch.into(),
            true => {
                let payload = batch.column(0).as_struct();
                if payload.null_count() > 0 {
                    return Err("an event without 'payload'".into());
                }
                payload.clone()
            }
        };
        let (before, after) = (
            envelope.column(0).as_struct(),
            envelope.column(1).as_struct(),
        );
        let op = envelope.column(2).as_string::<i32>();
        let (picks, ops) = Self::changes(before, after, op)?;
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for (j, field) in self.rows.iter().enumerate() {
            let sides = [before.column(j).as_ref(), after.column(j).as_ref()];
            let column = interleave(&sides, &picks).map_err(|e| clean(&e))?;
            columns.push(cast(&column, field.data_type()).map_err(|e| clean(&e))?);
        }
        columns.push(Arc::new(Int8Array::from(ops)));
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| clean(&e))
    }

    fn ignore_parse_errors(&self) -> bool {
        self.ignore_parse_errors
    }

    fn one_row_per_record(&self) -> bool {
        false
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[derive(Debug)]
struct DebeziumEncoder {
    rows: Fields,
}

impl Encoder for DebeziumEncoder {
    fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        let n = batch.num_rows();
        let ops = batch
            .column(batch.num_columns() - 1)
            .as_primitive::<Int8Type>();
        let adds: Vec<bool> = ops
            .iter()
            .map(|o| matches!(o, Some(OP_INSERT | OP_UPDATE_AFTER)))
            .collect();
        let columns: Vec<ArrayRef> = batch.columns()[..self.rows.len()].to_vec();
        let image = |valid: Vec<bool>| -> Result<ArrayRef> {
            let nulls = NullBuffer::from(valid);
            Ok(Arc::new(StructArray::try_new(
                self.rows.clone(),
                columns.clone(),
                Some(nulls),
            )?))
        };
        let after = image(adds.clone())?;
        let before = image(adds.iter().map(|a| !a).collect())?;
        let op: ArrayRef = Arc::new(StringArray::from_iter_values(
            adds.iter().map(|&a| if a { "c" } else { "d" }),
        ));
        let events =
            RecordBatch::try_from_iter(vec![("before", before), ("after", after), ("op", op)])?;
        debug_assert_eq!(events.num_rows(), n);
        write_json(&events, TIMESTAMP_FORMAT, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{OnBad, decode_text};
    use datafusion::arrow::datatypes::TimeUnit;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new(OP_COLUMN, DataType::Int8, false),
        ]))
    }

    fn rows(batch: &RecordBatch) -> Vec<String> {
        let ops = batch.column(3).as_primitive::<Int8Type>();
        (0..batch.num_rows())
            .map(|r| {
                let cell = |c: usize| {
                    datafusion::arrow::util::display::array_value_to_string(batch.column(c), r)
                        .unwrap()
                };
                format!(
                    "{} {},{},{}",
                    eddy_operators::updating::op_name(ops.value(r)),
                    cell(0),
                    cell(1),
                    cell(2)
                )
            })
            .collect()
    }

    #[test]
    fn events_become_changes_and_back() {
        let text = br#"{"before": null, "after": {"id": 1, "name": "a", "ts": 1700000000000}, "op": "r", "source": {"db": "x"}}
{"before": {"id": 1, "name": "a", "ts": 1700000000000}, "after": {"id": 1, "name": "b", "ts": "2023-11-14 22:13:21"}, "op": "u"}
{"before": {"id": 1, "name": "b", "ts": 1700000001000}, "after": null, "op": "d"}
"#;
        let mut decoder = DebeziumJsonFormat
            .decoder(&schema(), &Options::default())
            .unwrap()
            .unwrap();
        let batch = decoder.decode(&Records::split_lines(text)).unwrap();
        assert_eq!(
            rows(&batch),
            [
                "+I 1,a,2023-11-14T22:13:20",
                "-U 1,a,2023-11-14T22:13:20",
                "+U 1,b,2023-11-14T22:13:21",
                "-D 1,b,2023-11-14T22:13:21"
            ]
        );
        let mut out = Vec::new();
        DebeziumJsonFormat
            .encoder(&schema(), &Options::default())
            .unwrap()
            .unwrap()
            .encode(&batch, &mut out)
            .unwrap();
        let written = String::from_utf8(out).unwrap();
        let first = written.lines().next().unwrap();
        assert_eq!(
            first,
            r#"{"before":null,"after":{"id":1,"name":"a","ts":"2023-11-14T22:13:20Z"},"op":"c"}"#
        );
        // What it writes, it reads: +I/+U as creates, -U/-D as deletes.
        let again = decoder
            .decode(&Records::split_lines(written.as_bytes()))
            .unwrap();
        assert_eq!(
            rows(&again),
            [
                "+I 1,a,2023-11-14T22:13:20",
                "-D 1,a,2023-11-14T22:13:20",
                "+I 1,b,2023-11-14T22:13:21",
                "-D 1,b,2023-11-14T22:13:21"
            ]
        );
    }

    #[test]
    fn wrapped_events_and_bad_ones() {
        let options = Options::new([(SCHEMA_INCLUDE.to_string(), "true".to_string())]);
        let mut decoder = DebeziumJsonFormat
            .decoder(&schema(), &options)
            .unwrap()
            .unwrap();
        let text = br#"{"schema": {"type": "struct"}, "payload": {"before": null, "after": {"id": 2, "name": "x", "ts": null}, "op": "c"}}
{"schema": {}, "payload": {"before": null, "after": {"id": 3}, "op": "u"}}
{"schema": {}, "payload": {"before": null, "after": {"id": 4}, "op": "t"}}
"#;
        let decoded = decode_text(decoder.as_mut(), text, OnBad::SetAside).unwrap();
        assert_eq!(rows(&decoded.batch.unwrap()), ["+I 2,x,"]);
        let reasons: Vec<&str> = decoded.bad.iter().map(|b| b.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "a 'u' event without 'before' (a Postgres table needs REPLICA IDENTITY FULL)",
                "unknown Debezium op 't'"
            ]
        );
        let err = DebeziumJsonFormat
            .decoder(&schema().project(&[0, 1]).map(Arc::new).unwrap(), &options)
            .unwrap_err();
        assert!(err.to_string().contains("changelog"), "{err}");
    }
}
