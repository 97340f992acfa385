//! Formats: how rows become bytes and bytes rows, shared by every
//! connector that carries bytes (files today; Kafka, brokers tomorrow).
//!
//! A format is found by its name in the [`FormatRegistry`] and declares its
//! own options, prefixed with its name as in Flink
//! (`'json.ignore-parse-errors'`, `'csv.field-delimiter'`). A connector
//! that takes a `'format'` option accepts the chosen format's options
//! besides its own; the registry checks them the same way.
//!
//! Records of the formats here are lines, so a file can be cut at line
//! boundaries and read in parallel; [`decode_lines`] decodes a buffer of
//! lines and, when that fails, finds the line that did.

mod csv;
mod json;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

pub use self::csv::CsvFormat;
pub use self::json::JsonFormat;
pub(crate) use self::json::TIMESTAMP_FORMAT;
use crate::options::{OptionDecl, Options};
use crate::{ConnectorError, Result};

/// A data format, registered by name.
pub trait Format: Send + Sync + Debug {
    fn name(&self) -> &'static str;

    /// One line for `SHOW CONNECTORS` and the README.
    fn help(&self) -> &'static str;

    /// Its options, named with the format's prefix (`json.…`).
    fn options(&self) -> Vec<OptionDecl>;

    /// A decoder of records of `schema`, if the format can be read.
    fn decoder(&self, schema: &SchemaRef, options: &Options) -> Result<Option<Box<dyn Decoder>>>;

    /// An encoder of rows of `schema`, if the format can be written.
    fn encoder(&self, schema: &SchemaRef, options: &Options) -> Result<Option<Box<dyn Encoder>>>;

    /// The extension of files written in this format (`jsonl`).
    fn extension(&self) -> &'static str;
}

/// Turns records (one per line) into rows.
pub trait Decoder: Send + Debug {
    /// Decodes the `rows` records in `buf`, separated by `\n`; on failure,
    /// the reason (without position: [`decode_lines`] finds the line).
    fn decode(&mut self, buf: &[u8], rows: usize) -> std::result::Result<RecordBatch, String>;

    /// Skip records that fail to decode instead of failing
    /// (`'json.ignore-parse-errors'`).
    fn ignore_parse_errors(&self) -> bool {
        false
    }

    /// Lines at the start of a file that are not records (a CSV header).
    fn header_lines(&self) -> usize {
        0
    }

    /// The schema of the batches it produces.
    fn schema(&self) -> SchemaRef;
}

/// Turns rows into bytes.
pub trait Encoder: Send + Debug {
    /// Appends the encoding of `batch` to `out`.
    fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()>;

    /// What a file starts with (a CSV header), if anything.
    fn header(&self) -> Option<Vec<u8>> {
        None
    }
}

/// Formats by name.
#[derive(Debug, Clone)]
pub struct FormatRegistry {
    formats: BTreeMap<String, Arc<dyn Format>>,
}

impl Default for FormatRegistry {
    /// The built-in formats: `json` and `csv`.
    fn default() -> Self {
        let mut registry = Self {
            formats: BTreeMap::new(),
        };
        registry.register(Arc::new(JsonFormat));
        registry.register(Arc::new(CsvFormat));
        registry
    }
}

impl FormatRegistry {
    /// Adds a format, replacing one of the same name.
    pub fn register(&mut self, format: Arc<dyn Format>) {
        self.formats.insert(format.name().to_string(), format);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Format>> {
        self.formats.get(&name.to_ascii_lowercase())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.formats.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Format>> {
        self.formats.values()
    }

    /// The decoder for `options`' `'format'`, which must be readable.
    pub fn decoder(&self, schema: &SchemaRef, options: &Options) -> Result<Box<dyn Decoder>> {
        let format = self.chosen(options)?;
        format.decoder(schema, options)?.ok_or_else(|| {
            ConnectorError::Config(format!("the format '{}' cannot be read", format.name()))
        })
    }

    /// The encoder for `options`' `'format'`, which must be writable, and
    /// the extension of its files.
    pub fn encoder(
        &self,
        schema: &SchemaRef,
        options: &Options,
    ) -> Result<(Box<dyn Encoder>, &'static str)> {
        let format = self.chosen(options)?;
        let encoder = format.encoder(schema, options)?.ok_or_else(|| {
            ConnectorError::Config(format!("the format '{}' cannot be written", format.name()))
        })?;
        Ok((encoder, format.extension()))
    }

    /// The format `options`' `'format'` names.
    pub(crate) fn chosen(&self, options: &Options) -> Result<&Arc<dyn Format>> {
        let name = options.require("format")?;
        self.get(name).ok_or_else(|| ConnectorError::Option {
            option: "format".into(),
            message: format!(
                "unknown format '{name}' (formats: {})",
                self.names().collect::<Vec<_>>().join(", ")
            ),
        })
    }
}

/// A record that failed to decode: its line within the buffer (0-based)
/// and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    pub line: usize,
    pub reason: String,
}

/// What [`decode_lines`] made of a buffer.
#[derive(Debug)]
pub struct Decoded {
    /// The rows (`None` if no line held a record).
    pub batch: Option<RecordBatch>,
    /// Records skipped because they failed to decode (only when the
    /// decoder ignores parse errors).
    pub skipped: usize,
}

/// Decodes `rows` lines of `buf` at once; if that fails, line by line to
/// find the first bad record, or to skip every bad one when the decoder
/// ignores parse errors.
pub fn decode_lines(
    decoder: &mut dyn Decoder,
    buf: &[u8],
    rows: usize,
) -> std::result::Result<Decoded, BadRecord> {
    let whole = match decoder.decode(buf, rows) {
        Ok(batch) => {
            return Ok(Decoded {
                batch: (batch.num_rows() > 0).then_some(batch),
                skipped: 0,
            });
        }
        Err(reason) => reason,
    };
    let mut good = Vec::new();
    let mut skipped = 0;
    for (line, text) in buf.split(|&b| b == b'\n').enumerate() {
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match decoder.decode(text, 1) {
            Ok(batch) => good.push(batch),
            Err(_) if decoder.ignore_parse_errors() => skipped += 1,
            Err(reason) => return Err(BadRecord { line, reason }),
        }
    }
    if skipped == 0 {
        // Each line decodes alone but not together: report the buffer.
        return Err(BadRecord {
            line: 0,
            reason: whole,
        });
    }
    let schema = decoder.schema();
    let batch = concat_batches(&schema, &good).map_err(|e| BadRecord {
        line: 0,
        reason: e.to_string(),
    })?;
    Ok(Decoded {
        batch: (batch.num_rows() > 0).then_some(batch),
        skipped,
    })
}

/// The rows the format and file tests read: `k` text, `ts` a timestamp,
/// `v` a number.
#[cfg(test)]
pub(crate) fn test_schema() -> SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("v", DataType::Int64, true),
    ]))
}
