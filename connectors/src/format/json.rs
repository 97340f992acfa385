//! `'format' = 'json'`: one JSON object per line.
//!
//! Reading: keys are the column names; missing keys and `null` are NULL;
//! other keys are ignored. A timestamp may be an RFC 3339 string (with or
//! without a zone, `T` or a space) or integer epoch milliseconds.
//! Writing: one object per row with every column (NULL as `null`),
//! timestamps as ISO-8601 in UTC, a changelog's `_op` as an `op` field
//! (`+I`, `-U`, `+U`, `-D`).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::{ReaderBuilder, WriterBuilder, writer::LineDelimited};
use datafusion::arrow::record_batch::RecordBatch;

use super::json_fast::FastJson;
use super::{Decoder, Encoder, Format, Records};
use crate::options::{OptionDecl, OptionType, Options};
use crate::{Result, conform, readable_changelog};

/// ISO-8601 in UTC, with as many fraction digits as the value needs.
pub(crate) const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.fZ";

const IGNORE_PARSE_ERRORS: &str = "json.ignore-parse-errors";
/// Batches in a row the fast path may leave to arrow-json before it is
/// no longer tried.
const GIVE_UP: u32 = 8;
const TIMESTAMP_STANDARD: &str = "json.timestamp-format.standard";

#[derive(Debug)]
pub struct JsonFormat;

impl Format for JsonFormat {
    fn name(&self) -> &'static str {
        "json"
    }

    fn help(&self) -> &'static str {
        "JSON lines: one object per row, keys are column names"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::optional(
                IGNORE_PARSE_ERRORS,
                OptionType::Bool,
                "false",
                "skip (and count) records that are not valid JSON of the declared types, instead of failing",
            ),
            OptionDecl::unset(
                TIMESTAMP_STANDARD,
                OptionType::OneOf(&["SQL", "ISO-8601"]),
                "how timestamps are written: SQL '2024-05-01 12:00:00.5' or ISO-8601 '2024-05-01T12:00:00.5' (Flink's); by default RFC 3339 in UTC, '2024-05-01T12:00:00.5Z'. Any of them is read",
            ),
        ]
    }

    fn decoder(&self, schema: &SchemaRef, options: &Options) -> Result<Option<Box<dyn Decoder>>> {
        let decode_schema = decode_schema(schema);
        Ok(Some(Box::new(JsonDecoder {
            declared: schema.clone(),
            fast: FastJson::new(&decode_schema),
            misses: 0,
            decode_schema,
            ignore_parse_errors: options.bool(IGNORE_PARSE_ERRORS)?.unwrap_or(false),
        })))
    }

    fn encoder(&self, _schema: &SchemaRef, options: &Options) -> Result<Option<Box<dyn Encoder>>> {
        let timestamps = match options.get(TIMESTAMP_STANDARD) {
            Some(s) if s.eq_ignore_ascii_case("SQL") => "%Y-%m-%d %H:%M:%S%.f",
            Some(_) => "%Y-%m-%dT%H:%M:%S%.f",
            None => TIMESTAMP_FORMAT,
        };
        Ok(Some(Box::new(JsonEncoder { timestamps })))
    }

    fn extension(&self) -> &'static str {
        "jsonl"
    }

    fn decodes_by_name(&self) -> bool {
        true
    }
}

/// Timestamps are decoded as milliseconds (which also takes integers),
/// then cast to the declared type; every column may be missing.
pub(crate) fn decode_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| decode_field(f))
            .collect::<Vec<_>>(),
    ))
}

/// `field` as decoded: nullable, timestamps (in structs too) in ms.
fn decode_field(field: &Field) -> Field {
    let t = match field.data_type() {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        DataType::Struct(children) => {
            DataType::Struct(children.iter().map(|c| Arc::new(decode_field(c))).collect())
        }
        other => other.clone(),
    };
    field.clone().with_data_type(t).with_nullable(true)
}

/// Decodes `rows` JSON objects of `buf` as rows of `schema` (a
/// [`decode_schema`]); errors without arrow's prefix.
pub(crate) fn decode_json(
    schema: &SchemaRef,
    buf: &[u8],
    rows: usize,
) -> std::result::Result<RecordBatch, String> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows + 1)
        .build_decoder()
        .map_err(|e| clean(&e))?;
    let mut at = 0;
    while at < buf.len() {
        let consumed = decoder.decode(&buf[at..]).map_err(|e| clean(&e))?;
        if consumed == 0 {
            break;
        }
        at += consumed;
    }
    Ok(decoder
        .flush()
        .map_err(|e| clean(&e))?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

/// An error's text without arrow's `Json error: ` prefix.
pub(crate) fn clean(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    s.strip_prefix("Json error: ").unwrap_or(&s).to_string()
}

#[derive(Debug)]
struct JsonDecoder {
    declared: SchemaRef,
    decode_schema: SchemaRef,
    /// The fast path, when every column is of a type it reads; dropped
    /// after [`GIVE_UP`] batches in a row that it left to arrow-json (the
    /// input is not of the common shape, and trying costs).
    fast: Option<FastJson>,
    /// Batches in a row the fast path left to arrow-json.
    misses: u32,
    ignore_parse_errors: bool,
}

impl Decoder for JsonDecoder {
    fn decode(&mut self, records: &Records) -> std::result::Result<RecordBatch, String> {
        let fast = self.fast.as_ref().map(|f| f.decode(records));
        let batch = match fast {
            Some(Some(batch)) => {
                self.misses = 0;
                batch
            }
            missed => {
                if missed.is_some() {
                    self.misses += 1;
                    if self.misses >= GIVE_UP {
                        self.fast = None;
                    }
                }
                decode_json(&self.decode_schema, &records.lines(), records.len())?
            }
        };
        conform(batch, &self.declared).map_err(|e| clean(&e))
    }

    fn ignore_parse_errors(&self) -> bool {
        self.ignore_parse_errors
    }

    fn schema(&self) -> SchemaRef {
        self.declared.clone()
    }
}

#[derive(Debug)]
struct JsonEncoder {
    /// How timestamps are written (chrono's format).
    timestamps: &'static str,
}

impl Encoder for JsonEncoder {
    fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        write_json(&readable_changelog(batch)?, self.timestamps, out)
    }
}

/// Appends `batch` as JSON lines, NULLs written, timestamps in chrono's
/// `timestamps` format.
pub(crate) fn write_json(batch: &RecordBatch, timestamps: &str, out: &mut Vec<u8>) -> Result<()> {
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_timestamp_format(timestamps.to_string())
        .build::<_, LineDelimited>(out);
    writer.write(batch)?;
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{OnBad, decode_text};
    use datafusion::arrow::util::pretty::pretty_format_batches;

    fn schema() -> SchemaRef {
        crate::format::test_schema()
    }

    fn decoder(ignore: bool) -> Box<dyn Decoder> {
        let value = if ignore { "true" } else { "false" };
        let options = Options::new([(IGNORE_PARSE_ERRORS.to_string(), value.to_string())]);
        JsonFormat.decoder(&schema(), &options).unwrap().unwrap()
    }

    #[test]
    fn timestamps_in_every_accepted_spelling() {
        let text = r#"{"k": "a", "ts": "2024-01-01T00:00:01Z", "v": 1}
{"k": "b", "ts": "2024-01-01 00:00:02", "v": null}

{"k": "c", "ts": 1704067203000, "extra": true}
{"k": "d", "ts": "2024-01-01T02:00:04+02:00", "v": 4}
"#;
        let batch = decoder(false)
            .decode(&Records::split_lines(text.as_bytes()))
            .unwrap();
        let expected = "\
+---+---------------------+---+
| k | ts                  | v |
+---+---------------------+---+
| a | 2024-01-01T00:00:01 | 1 |
| b | 2024-01-01T00:00:02 |   |
| c | 2024-01-01T00:00:03 |   |
| d | 2024-01-01T00:00:04 | 4 |
+---+---------------------+---+";
        assert_eq!(
            pretty_format_batches(&[batch]).unwrap().to_string(),
            expected
        );
    }

    #[test]
    fn the_bad_line_is_found_or_skipped() {
        let text =
            b"{\"k\": \"a\", \"v\": 1}\n{\"k\": \"b\", \"v\": \"x\"}\n{\"k\": \"c\", \"v\": 3}\n";
        let bad = decode_text(decoder(false).as_mut(), text, OnBad::Fail).unwrap_err();
        assert_eq!(bad.record, 1);
        assert!(bad.reason.contains("\"x\""), "{}", bad.reason);
        let decoded = decode_text(decoder(true).as_mut(), text, OnBad::SetAside).unwrap();
        assert_eq!(decoded.bad.len(), 1);
        assert_eq!(decoded.batch.unwrap().num_rows(), 2);
    }

    #[test]
    fn writes_utc_timestamps_and_nulls() {
        let text = b"{\"k\": \"a\", \"ts\": 1704067200500, \"v\": 1}\n{\"k\": null, \"ts\": 1704067201000}\n";
        let batch = decoder(false).decode(&Records::split_lines(text)).unwrap();
        let written = |standard: Option<&str>| {
            let options =
                Options::new(standard.map(|s| (TIMESTAMP_STANDARD.to_string(), s.to_string())));
            let mut encoder = JsonFormat.encoder(&schema(), &options).unwrap().unwrap();
            let mut out = Vec::new();
            encoder.encode(&batch, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            written(None),
            "{\"k\":\"a\",\"ts\":\"2024-01-01T00:00:00.500Z\",\"v\":1}\n{\"k\":null,\"ts\":\"2024-01-01T00:00:01Z\",\"v\":null}\n"
        );
        // Flink's standards, which it reads back.
        let sql = written(Some("SQL"));
        assert!(
            sql.starts_with("{\"k\":\"a\",\"ts\":\"2024-01-01 00:00:00.500\""),
            "{sql}"
        );
        let iso = written(Some("ISO-8601"));
        assert!(
            iso.starts_with("{\"k\":\"a\",\"ts\":\"2024-01-01T00:00:00.500\""),
            "{iso}"
        );
        for text in [sql, iso] {
            let again = decoder(false)
                .decode(&Records::split_lines(text.as_bytes()))
                .unwrap();
            assert_eq!(again, batch);
        }
    }
}
