//! `'format' = 'csv'`: comma-separated values, one record per line.
//!
//! Columns are matched by position, as in Flink. Flink's CSV format has no
//! header; Eddy reads and writes one with `'csv.header' = 'true'`. Empty
//! fields are NULL (or only the `'csv.null-literal'` when one is set).
//! A quoted field must not span lines: records are lines, so that a file
//! can be cut into byte ranges and read in parallel.

use datafusion::arrow::csv::{ReaderBuilder, WriterBuilder};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use std::sync::Arc;

use super::json::TIMESTAMP_FORMAT;
use super::{Decoder, Encoder, Format, Records};
use crate::options::{OptionDecl, OptionType, Options};
use crate::{ConnectorError, Result, conform, readable_changelog};

const DELIMITER: &str = "csv.field-delimiter";
const QUOTE: &str = "csv.quote-character";
const HEADER: &str = "csv.header";
const NULL_LITERAL: &str = "csv.null-literal";
const ALLOW_COMMENTS: &str = "csv.allow-comments";
const IGNORE_PARSE_ERRORS: &str = "csv.ignore-parse-errors";

#[derive(Debug)]
pub struct CsvFormat;

impl Format for CsvFormat {
    fn name(&self) -> &'static str {
        "csv"
    }

    fn help(&self) -> &'static str {
        "comma-separated values, one record per line, columns by position"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::optional(
                DELIMITER,
                OptionType::String,
                ",",
                "the field delimiter, one character",
            ),
            OptionDecl::optional(
                QUOTE,
                OptionType::String,
                "\"",
                "the quote character, one character",
            ),
            OptionDecl::optional(
                HEADER,
                OptionType::Bool,
                "false",
                "the first line of a file names the columns (read: skipped; written: the column names)",
            ),
            OptionDecl::unset(
                NULL_LITERAL,
                OptionType::String,
                "the text that stands for NULL (by default an empty field is NULL)",
            ),
            OptionDecl::optional(
                ALLOW_COMMENTS,
                OptionType::Bool,
                "false",
                "skip lines that start with '#'",
            ),
            OptionDecl::optional(
                IGNORE_PARSE_ERRORS,
                OptionType::Bool,
                "false",
                "skip (and count) records that do not parse as the declared types, instead of failing",
            ),
        ]
    }

    fn decoder(&self, schema: &SchemaRef, options: &Options) -> Result<Option<Box<dyn Decoder>>> {
        let settings = Settings::from(options)?;
        let null_regex = settings
            .null_literal
            .as_ref()
            .map(|l| regex::Regex::new(&format!("^{}$", regex::escape(l))))
            .transpose()
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
        // Read every column as nullable, then cast to the declared types.
        let read = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        Ok(Some(Box::new(CsvDecoder {
            declared: schema.clone(),
            read,
            settings,
            null_regex,
        })))
    }

    fn encoder(&self, schema: &SchemaRef, options: &Options) -> Result<Option<Box<dyn Encoder>>> {
        let settings = Settings::from(options)?;
        Ok(Some(Box::new(CsvEncoder {
            schema: crate::readable_schema(schema),
            settings,
        })))
    }

    fn extension(&self) -> &'static str {
        "csv"
    }
}

#[derive(Debug, Clone)]
struct Settings {
    delimiter: u8,
    quote: u8,
    header: bool,
    null_literal: Option<String>,
    comments: bool,
    ignore_parse_errors: bool,
}

impl Settings {
    fn from(options: &Options) -> Result<Self> {
        let byte = |key: &str, default: u8| -> Result<u8> {
            match options.get(key) {
                None => Ok(default),
                Some(v) => match v.as_bytes() {
                    [b] => Ok(*b),
                    b"\\t" => Ok(b'\t'),
                    _ => Err(ConnectorError::Option {
                        option: key.to_string(),
                        message: format!("option '{key}' must be one character, not '{v}'"),
                    }),
                },
            }
        };
        Ok(Self {
            delimiter: byte(DELIMITER, b',')?,
            quote: byte(QUOTE, b'"')?,
            header: options.bool(HEADER)?.unwrap_or(false),
            null_literal: options.get(NULL_LITERAL).map(str::to_string),
            comments: options.bool(ALLOW_COMMENTS)?.unwrap_or(false),
            ignore_parse_errors: options.bool(IGNORE_PARSE_ERRORS)?.unwrap_or(false),
        })
    }
}

#[derive(Debug)]
struct CsvDecoder {
    declared: SchemaRef,
    read: SchemaRef,
    settings: Settings,
    null_regex: Option<regex::Regex>,
}

/// `Parser error: Error while parsing value 'x' ... at line 1. Row data: ...`
/// without its prefix and its position (the caller knows the line).
fn clean(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let text = text.strip_prefix("Parser error: ").unwrap_or(&text);
    match text.split_once(" at line ") {
        Some((reason, rest)) => {
            let after = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            let after = after.trim_start_matches('.').trim();
            if after.is_empty() {
                reason.to_string()
            } else {
                format!("{reason} ({after})")
            }
        }
        None => text.to_string(),
    }
}

impl Decoder for CsvDecoder {
    fn decode(&mut self, records: &Records) -> std::result::Result<RecordBatch, String> {
        let (buf, rows) = (&*records.lines(), records.len());
        let mut builder = ReaderBuilder::new(self.read.clone())
            .with_header(false)
            .with_delimiter(self.settings.delimiter)
            .with_quote(self.settings.quote)
            .with_batch_size(rows + 1);
        if self.settings.comments {
            builder = builder.with_comment(b'#');
        }
        if let Some(r) = &self.null_regex {
            builder = builder.with_null_regex(r.clone());
        }
        let mut decoder = builder.build_decoder();
        let mut at = 0;
        while at < buf.len() {
            let consumed = decoder.decode(&buf[at..]).map_err(|e| clean(&e))?;
            if consumed == 0 {
                break;
            }
            at += consumed;
        }
        // The end of input: a last record without a line end counts.
        decoder.decode(&[]).map_err(|e| clean(&e))?;
        let batch = decoder
            .flush()
            .map_err(|e| clean(&e))?
            .unwrap_or_else(|| RecordBatch::new_empty(self.read.clone()));
        conform(batch, &self.declared).map_err(|e| clean(&e))
    }

    fn ignore_parse_errors(&self) -> bool {
        self.settings.ignore_parse_errors
    }

    fn header_lines(&self) -> usize {
        usize::from(self.settings.header)
    }

    fn schema(&self) -> SchemaRef {
        self.declared.clone()
    }
}

#[derive(Debug)]
struct CsvEncoder {
    schema: SchemaRef,
    settings: Settings,
}

impl Encoder for CsvEncoder {
    fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        let batch = readable_changelog(batch)?;
        let mut writer = WriterBuilder::new()
            .with_header(false)
            .with_delimiter(self.settings.delimiter)
            .with_quote(self.settings.quote)
            .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
            .with_null(self.settings.null_literal.clone().unwrap_or_default())
            .build(out);
        writer.write(&batch)?;
        Ok(())
    }

    fn header(&self) -> Option<Vec<u8>> {
        self.settings.header.then(|| {
            let d = char::from(self.settings.delimiter).to_string();
            let names: Vec<&str> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            format!("{}\n", names.join(&d)).into_bytes()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{OnBad, decode_text};

    fn schema() -> SchemaRef {
        crate::format::test_schema()
    }

    fn decoder(pairs: &[(&str, &str)]) -> Box<dyn Decoder> {
        let options = Options::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        CsvFormat.decoder(&schema(), &options).unwrap().unwrap()
    }

    #[test]
    fn fields_by_position_with_nulls_and_a_delimiter() {
        let mut d = decoder(&[(DELIMITER, ";"), (NULL_LITERAL, "N/A")]);
        let batch = d
            .decode(&Records::split_lines(
                b"a;2024-01-01T00:00:01;1\nb;2024-01-01 00:00:02;N/A",
            ))
            .unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert!(batch.column(2).is_null(1));
    }

    #[test]
    fn the_bad_record_is_found_with_its_reason() {
        let text = b"a,2024-01-01T00:00:01,1\nb,2024-01-01T00:00:01,x\n";
        let bad = decode_text(decoder(&[]).as_mut(), text, OnBad::Fail).unwrap_err();
        assert_eq!(bad.record, 1);
        assert!(
            bad.reason.starts_with("Error while parsing value 'x'"),
            "{}",
            bad.reason
        );
        let ok = decode_text(
            decoder(&[(IGNORE_PARSE_ERRORS, "true")]).as_mut(),
            text,
            OnBad::SetAside,
        )
        .unwrap();
        assert_eq!((ok.bad.len(), ok.batch.unwrap().num_rows()), (1, 1));
    }

    #[test]
    fn writes_a_header_and_rows() {
        let batch = decoder(&[])
            .decode(&Records::split_lines(b"a,2024-01-01T00:00:01.5,1\n"))
            .unwrap();
        let options = Options::new([(HEADER.to_string(), "true".to_string())]);
        let mut enc = CsvFormat.encoder(&schema(), &options).unwrap().unwrap();
        let mut out = enc.header().unwrap();
        enc.encode(&batch, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "k,ts,v\na,2024-01-01T00:00:01.500Z,1\n"
        );
    }
}
