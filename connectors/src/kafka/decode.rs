//! From polled records to rows of the table: the value's columns by the
//! format, the key's (with `value.fields-include` = `EXCEPT_KEY`) by the
//! key format, and metadata columns (`part INT METADATA FROM 'partition'`)
//! from the records themselves. Records are decoded a partition's batch at
//! a time, not one by one.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::message::{BorrowedMessage, Message, Timestamp};

use super::key::{Layout, project_schema};
use crate::format::{BadRecord, Decoder, Format, decode_lines};
use crate::options::Options;
use crate::registry::{MetadataKey, metadata_key};
use crate::{ConnectorError, Result};

/// The metadata a Kafka table may declare (Flink's keys; `headers` is not
/// offered yet).
pub(crate) const METADATA: &[MetadataKey] = &[
    MetadataKey {
        name: "topic",
        sql_type: "STRING",
        writable: false,
        help: "the record's topic",
    },
    MetadataKey {
        name: "partition",
        sql_type: "INT",
        writable: false,
        help: "the record's partition",
    },
    MetadataKey {
        name: "offset",
        sql_type: "BIGINT",
        writable: false,
        help: "the record's offset in its partition",
    },
    MetadataKey {
        name: "timestamp",
        sql_type: "TIMESTAMP_LTZ(3)",
        writable: true,
        help: "the record's timestamp; a sink sets it",
    },
    MetadataKey {
        name: "timestamp-type",
        sql_type: "STRING",
        writable: false,
        help: "NoTimestampType, CreateTime or LogAppendTime",
    },
];

/// A partition's records polled and not yet decoded.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Values, one per line.
    buf: Vec<u8>,
    /// Keys, one per line, when the source reads keys.
    key_buf: Vec<u8>,
    /// Each record's offset.
    pub offsets: Vec<i64>,
    /// Each record's timestamp (ms) and its type, when metadata asks.
    timestamps: Vec<Option<i64>>,
    timestamp_types: Vec<&'static str>,
}

/// Records are lines to the decoders: a line break inside a record
/// (pretty-printed JSON) is only whitespace.
fn push_line(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend(bytes.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
    buf.push(b'\n');
}

impl Pending {
    /// Keeps a record with a value (a tombstone is no row of an
    /// append-only source).
    pub(crate) fn push(&mut self, message: &BorrowedMessage<'_>, decoders: &Decoders) {
        let Some(payload) = message.payload() else {
            return;
        };
        push_line(&mut self.buf, payload);
        self.offsets.push(message.offset());
        if decoders.key.is_some() {
            push_line(&mut self.key_buf, message.key().unwrap_or_default());
        }
        if !decoders.metadata.is_empty() {
            let (ms, kind) = match message.timestamp() {
                Timestamp::NotAvailable => (None, "NoTimestampType"),
                Timestamp::CreateTime(ms) => (Some(ms), "CreateTime"),
                Timestamp::LogAppendTime(ms) => (Some(ms), "LogAppendTime"),
            };
            self.timestamps.push(ms);
            self.timestamp_types.push(kind);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.offsets.len()
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.key_buf.clear();
        self.offsets.clear();
        self.timestamps.clear();
        self.timestamp_types.clear();
    }
}

/// Turns a partition's pending records into rows of the table.
pub(crate) struct Decoders {
    value: Box<dyn Decoder>,
    /// With `value.fields-include` = `EXCEPT_KEY`.
    key: Option<Box<dyn Decoder>>,
    layout: Layout,
    schema: SchemaRef,
    /// Metadata columns: their index and key.
    metadata: Vec<(usize, String)>,
}

impl Decoders {
    pub(crate) fn new(
        schema: &SchemaRef,
        layout: &Layout,
        format: &Arc<dyn Format>,
        options: &Options,
    ) -> Result<Self> {
        let cannot = |f: &Arc<dyn Format>| {
            ConnectorError::Config(format!("the format '{}' cannot be read", f.name()))
        };
        let value_schema = project_schema(schema, &layout.value);
        let value = format
            .decoder(&value_schema, options)?
            .ok_or_else(|| cannot(format))?;
        let key = match (&layout.key_format, layout.reads_keys()) {
            (Some(key_format), true) => {
                let key_schema = project_schema(schema, &layout.key);
                Some(
                    key_format
                        .decoder(&key_schema, options)?
                        .ok_or_else(|| cannot(key_format))?,
                )
            }
            _ => None,
        };
        let metadata: Vec<(usize, String)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(i, f)| metadata_key(f).map(|k| (i, k.to_string())))
            .collect();
        if !metadata.is_empty() && value.ignore_parse_errors() {
            return Err(ConnectorError::Config(
                "metadata columns cannot be read together with ignore-parse-errors yet: a skipped record would shift them"
                    .into(),
            ));
        }
        Ok(Self {
            value,
            key,
            layout: layout.clone(),
            schema: schema.clone(),
            metadata,
        })
    }

    /// The rows of `pending`, read from `topic`'s `partition`; on failure,
    /// the bad record and which part of it failed.
    pub(crate) fn decode(
        &mut self,
        topic: &str,
        partition: i32,
        pending: &Pending,
    ) -> std::result::Result<Option<RecordBatch>, (BadRecord, &'static str)> {
        let rows = pending.len();
        let values = decode_lines(&mut *self.value, &pending.buf, rows).map_err(|b| (b, ""))?;
        if self.key.is_none() && self.metadata.is_empty() {
            return Ok(values.batch);
        }
        let whole = |reason: String| (BadRecord { line: 0, reason }, "");
        let Some(values) = values.batch else {
            return Ok(None);
        };
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.schema.fields().len()];
        for (j, &i) in self.layout.value.iter().enumerate() {
            columns[i] = Some(values.column(j).clone());
        }
        if let Some(decoder) = &mut self.key {
            let keys =
                decode_lines(&mut **decoder, &pending.key_buf, rows).map_err(|b| (b, "key: "))?;
            let keys = keys
                .batch
                .filter(|k| k.num_rows() == values.num_rows())
                .ok_or_else(|| {
                    whole("keys and values skipped different records as unreadable".into())
                })?;
            for (j, &i) in self.layout.key.iter().enumerate() {
                columns[i] = Some(keys.column(j).clone());
            }
        }
        for (i, key) in &self.metadata {
            let array: ArrayRef = match key.as_str() {
                "topic" => Arc::new(StringArray::from(vec![topic; rows])),
                "partition" => Arc::new(Int32Array::from(vec![partition; rows])),
                "offset" => Arc::new(Int64Array::from(pending.offsets.clone())),
                "timestamp" => {
                    Arc::new(TimestampMillisecondArray::from(pending.timestamps.clone()))
                }
                "timestamp-type" => Arc::new(StringArray::from(pending.timestamp_types.clone())),
                other => return Err(whole(format!("no metadata '{other}'"))),
            };
            let declared = self.schema.field(*i).data_type();
            columns[*i] = Some(cast(&array, declared).map_err(|e| whole(e.to_string()))?);
        }
        let columns = columns
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| whole("a column is in neither the key nor the value".into()))?;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map(Some)
            .map_err(|e| whole(e.to_string()))
    }
}
