//! Formats: how rows become bytes and bytes rows, shared by every
//! connector that carries bytes (files today; Kafka, brokers tomorrow).
//!
//! A format is found by its name in the [`FormatRegistry`] and declares its
//! own options, prefixed with its name as in Flink
//! (`'json.ignore-parse-errors'`, `'csv.field-delimiter'`). A connector
//! that takes a `'format'` option accepts the chosen format's options
//! besides its own; the registry checks them the same way.
//!
//! A decoder takes [`Records`]: a file's lines, or a broker's messages.
//! [`decode_records`] decodes them at once and, when that fails, finds the
//! records that did, to fail the job or to set them aside (`'bad-data'`).

mod avro;
mod csv;
mod debezium;
mod json;
mod json_fast;
mod parquet;
mod raw;
mod registry_client;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

pub(crate) use self::avro::key_options;
pub use self::avro::{AvroConfluentFormat, AvroFormat};
pub use self::csv::CsvFormat;
pub use self::debezium::DebeziumJsonFormat;
pub use self::json::JsonFormat;
pub(crate) use self::json::TIMESTAMP_FORMAT;
pub use self::parquet::{PARQUET, ParquetFormat, ParquetWriting};
pub use self::raw::RawFormat;
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

    /// Its records are changes (`_op`, a Debezium envelope), not rows.
    fn changelog(&self) -> bool {
        false
    }

    /// Its records never hold a line break, so a file of them is read by
    /// lines (not so Avro's binary records).
    fn line_based(&self) -> bool {
        true
    }

    /// It finds a column's value by the column's name, so a decoder of
    /// some of a table's columns reads just those (JSON; not CSV, whose
    /// fields are found by position).
    fn decodes_by_name(&self) -> bool {
        false
    }
}

/// A decoder of `format` for rows of `schema`, or the error that says the
/// format cannot be read.
pub fn decoder_of(
    format: &dyn Format,
    schema: &SchemaRef,
    options: &Options,
) -> Result<Box<dyn Decoder>> {
    format.decoder(schema, options)?.ok_or_else(|| {
        ConnectorError::Config(format!("the format '{}' cannot be read", format.name()))
    })
}

/// Turns records into rows.
pub trait Decoder: Send + Debug {
    /// Gets what decoding `records` needs from elsewhere (a schema
    /// registry's schemas). An error here is no bad record: the job fails.
    fn prepare(&mut self, _records: &Records) -> Result<()> {
        Ok(())
    }

    /// Decodes `records`; on failure, the reason (without position:
    /// [`decode_records`] finds the record).
    fn decode(&mut self, records: &Records) -> std::result::Result<RecordBatch, String>;

    /// Skip records that fail to decode instead of failing
    /// (`'json.ignore-parse-errors'`).
    fn ignore_parse_errors(&self) -> bool {
        false
    }

    /// Lines at the start of a file that are not records (a CSV header).
    fn header_lines(&self) -> usize {
        0
    }

    /// Each record is one row (a changelog format's update is two).
    fn one_row_per_record(&self) -> bool {
        true
    }

    /// The schema of the batches it produces.
    fn schema(&self) -> SchemaRef;
}

/// Turns rows into bytes.
pub trait Encoder: Send + Debug {
    /// Appends the encoding of `batch` to `out`, a line per record (a
    /// file's contents).
    fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()>;

    /// Each record of `batch` on its own (a broker's messages). By default
    /// the lines [`Self::encode`] writes.
    fn records(&mut self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.encode(batch, &mut out)?;
        Ok(out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

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
    /// The built-in formats: `json`, `csv`, `raw`, `debezium-json`, `avro`,
    /// `avro-confluent` and `parquet`.
    fn default() -> Self {
        let mut registry = Self {
            formats: BTreeMap::new(),
        };
        registry.register(Arc::new(JsonFormat));
        registry.register(Arc::new(CsvFormat));
        registry.register(Arc::new(RawFormat));
        registry.register(Arc::new(DebeziumJsonFormat));
        registry.register(Arc::new(AvroFormat));
        registry.register(Arc::new(AvroConfluentFormat));
        registry.register(Arc::new(ParquetFormat));
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

/// Records to decode, end to end in one buffer with a line break after
/// each, so that line formats read them as lines as they are.
#[derive(Debug, Default, Clone)]
pub struct Records {
    data: Vec<u8>,
    /// Where each record ends in `data` (its line break follows).
    ends: Vec<usize>,
    /// Some record holds a line break of its own.
    multiline: bool,
}

impl Records {
    /// Every line of `text` a record (a last line without a break too).
    pub fn split_lines(text: &[u8]) -> Self {
        let mut records = Self::default();
        for line in text.split(|&b| b == b'\n') {
            records.push(line);
        }
        if text.ends_with(b"\n") || text.is_empty() {
            records.data.pop();
            records.ends.pop();
        }
        records
    }

    /// The lines a file reader read into `buf`, each `lengths[i]` bytes
    /// with its line break (the last may have none).
    pub fn from_lines(mut buf: Vec<u8>, lengths: &[usize]) -> Self {
        let mut ends = Vec::with_capacity(lengths.len());
        let mut at = 0;
        for &n in lengths {
            at += n;
            ends.push(if buf.get(at - 1) == Some(&b'\n') {
                at - 1
            } else {
                at
            });
        }
        if !buf.ends_with(b"\n") && !lengths.is_empty() {
            buf.push(b'\n');
        }
        Self {
            data: buf,
            ends,
            multiline: false,
        }
    }

    /// The buffer the records were in, to read more into.
    pub fn into_buffer(self) -> Vec<u8> {
        self.data
    }

    pub fn push(&mut self, record: &[u8]) {
        self.multiline |= record.contains(&b'\n');
        self.data.extend_from_slice(record);
        self.ends.push(self.data.len());
        self.data.push(b'\n');
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.multiline = false;
    }

    /// Record `i`'s bytes.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] + 1 };
        &self.data[start..self.ends[i]]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The records as lines; a line break inside a record (pretty-printed
    /// JSON in a message) is read as a space.
    pub fn lines(&self) -> std::borrow::Cow<'_, [u8]> {
        if !self.multiline {
            return std::borrow::Cow::Borrowed(&self.data);
        }
        let mut out = self.data.clone();
        for (i, &end) in self.ends.iter().enumerate() {
            let start = if i == 0 { 0 } else { self.ends[i - 1] + 1 };
            for b in &mut out[start..end] {
                if *b == b'\n' {
                    *b = b' ';
                }
            }
        }
        std::borrow::Cow::Owned(out)
    }

    /// Record `i` alone.
    fn one(&self, i: usize) -> Self {
        let mut one = Self::default();
        one.push(self.get(i));
        one
    }
}

/// A record that failed to decode: its index among the records decoded
/// together, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    pub record: usize,
    pub reason: String,
}

/// What [`decode_records`] made of some records.
#[derive(Debug)]
pub struct Decoded {
    /// The rows (`None` if no record held one).
    pub batch: Option<RecordBatch>,
    /// The records set aside as bad, in order (only when asked to go on).
    pub bad: Vec<BadRecord>,
}

/// What [`decode_records`] does with a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBad {
    /// Return it as the error.
    Fail,
    /// Set it aside in [`Decoded::bad`] and go on.
    SetAside,
}

/// Decodes `records` at once; if that fails, record by record, to find the
/// first bad one or to set every bad one aside. With `strict` (records of
/// a broker: each must be one row), a record that gives no row is bad too.
/// An error of [`Decoder::prepare`] (a registry away) is returned as the
/// first record's, whatever `on_bad` says: it is not about the data.
pub fn decode_records(
    decoder: &mut dyn Decoder,
    records: &Records,
    on_bad: OnBad,
    strict: bool,
) -> std::result::Result<Decoded, BadRecord> {
    let strict = strict && decoder.one_row_per_record();
    decoder.prepare(records).map_err(|e| BadRecord {
        record: 0,
        reason: e.to_string(),
    })?;
    let whole = match decoder.decode(records) {
        Ok(batch) if !strict || batch.num_rows() == records.len() => {
            return Ok(Decoded {
                batch: (batch.num_rows() > 0).then_some(batch),
                bad: Vec::new(),
            });
        }
        Ok(_) => "a record holds no row".to_string(),
        Err(reason) => reason,
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..records.len() {
        let reason = match decoder.decode(&records.one(i)) {
            Ok(batch) if strict && batch.num_rows() != 1 => "an empty record".to_string(),
            Ok(batch) => {
                good.push(batch);
                continue;
            }
            Err(reason) => reason,
        };
        let record = BadRecord { record: i, reason };
        match on_bad {
            OnBad::Fail => return Err(record),
            OnBad::SetAside => bad.push(record),
        }
    }
    if bad.is_empty() {
        // Each record decodes alone but not together: report them all.
        return Err(BadRecord {
            record: 0,
            reason: whole,
        });
    }
    let schema = decoder.schema();
    let batch = concat_batches(&schema, &good).map_err(|e| BadRecord {
        record: 0,
        reason: e.to_string(),
    })?;
    Ok(Decoded {
        batch: (batch.num_rows() > 0).then_some(batch),
        bad,
    })
}

/// Decodes lines of text, as a file's (for tests).
#[cfg(test)]
pub(crate) fn decode_text(
    decoder: &mut dyn Decoder,
    text: &[u8],
    on_bad: OnBad,
) -> std::result::Result<Decoded, BadRecord> {
    decode_records(decoder, &Records::split_lines(text), on_bad, false)
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
