//! From polled records to rows of the table: the value's columns by the
//! format, the key's (with `value.fields-include` = `EXCEPT_KEY`) by the
//! key format, and metadata columns (`part INT METADATA FROM 'partition'`)
//! from the records themselves. Records are decoded a partition's batch at
//! a time, not one by one.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Int8Array, Int32Array, Int64Array, MapBuilder, StringArray,
    StringBuilder, TimestampMillisecondArray, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{cast, interleave, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::updating::{OP_DELETE, OP_INSERT};
use rdkafka::message::{BorrowedMessage, Headers as _, Message, Timestamp};

use super::Headers;
use super::key::{Layout, project_schema};
use crate::bad_data::BadDataPolicy;
use crate::format::{BadRecord, Decoded, Decoder, Format, OnBad, Records, decode_records};
use crate::options::Options;
use crate::registry::{MetadataKey, metadata_key};
use crate::{ConnectorError, Result};

/// The metadata a Kafka table may declare (Flink's keys).
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
    MetadataKey {
        name: "headers",
        sql_type: "MAP<STRING, BYTES>",
        writable: true,
        help: "the record's headers (a key given twice keeps its last value); a sink sets them",
    },
];

/// A partition's records polled and not yet decoded.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The values of the records that have one.
    pub values: Records,
    /// Keys, when the source reads keys.
    pub keys: Records,
    /// Each record's offset.
    pub offsets: Vec<i64>,
    /// Each record is a tombstone (no value): an upsert source's delete.
    tombstones: Vec<bool>,
    /// Each record's timestamp (ms) and its type.
    pub timestamps: Vec<Option<i64>>,
    timestamp_types: Vec<&'static str>,
    /// Each record's headers, when a `headers` column asks.
    headers: Vec<Headers>,
}

impl Pending {
    /// Keeps a record. A tombstone is no row of an append-only source,
    /// and a delete of an upsert source's key.
    pub(crate) fn push(&mut self, message: &BorrowedMessage<'_>, decoders: &Decoders) {
        match message.payload() {
            Some(payload) => self.values.push(payload),
            None if decoders.upsert => {}
            None => return,
        }
        self.tombstones.push(message.payload().is_none());
        self.offsets.push(message.offset());
        if decoders.key.is_some() {
            self.keys.push(message.key().unwrap_or_default());
        }
        let (ms, kind) = match message.timestamp() {
            Timestamp::NotAvailable => (None, "NoTimestampType"),
            Timestamp::CreateTime(ms) => (Some(ms), "CreateTime"),
            Timestamp::LogAppendTime(ms) => (Some(ms), "LogAppendTime"),
        };
        self.timestamps.push(ms);
        self.timestamp_types.push(kind);
        if decoders.headers {
            let headers = message.headers().map_or_else(Vec::new, |h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            });
            self.headers.push(headers);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Record `i`'s bytes as they came: its value, or its key if it is a
    /// tombstone (dead-letter rows).
    pub(crate) fn record(&self, i: usize) -> &[u8] {
        if self.tombstones[i] {
            return if self.keys.is_empty() {
                &[]
            } else {
                self.keys.get(i)
            };
        }
        let j = self.tombstones[..i].iter().filter(|t| !**t).count();
        self.values.get(j)
    }

    pub(crate) fn clear(&mut self) {
        self.values.clear();
        self.keys.clear();
        self.offsets.clear();
        self.tombstones.clear();
        self.timestamps.clear();
        self.timestamp_types.clear();
        self.headers.clear();
    }
}

/// What a partition's pending records decoded to.
#[derive(Debug)]
pub(crate) struct DecodedRecords {
    pub batch: Option<RecordBatch>,
    /// Records set aside as bad (their index in the pending records), in
    /// order, with the reason.
    pub bad: Vec<BadRecord>,
}

fn is_bad(bad: &[BadRecord], record: usize) -> bool {
    bad.binary_search_by_key(&record, |b| b.record).is_ok()
}

/// Where each record's row is in a batch decoded from `records` (those
/// `present`), but those its decoder set aside (`own`).
fn rows_of(records: &[usize], own: &[BadRecord], n: usize) -> Vec<Option<usize>> {
    let mut rows = vec![None; n];
    let mut row = 0;
    for (j, &record) in records.iter().enumerate() {
        if !is_bad(own, j) {
            rows[record] = Some(row);
            row += 1;
        }
    }
    rows
}

/// Column `column` of `batch`, one row per good record: its row, or NULL
/// where the record has none (a tombstone's value).
fn gather(
    batch: &RecordBatch,
    column: usize,
    rows: &[Option<usize>],
    good: &[usize],
) -> std::result::Result<ArrayRef, String> {
    let values = batch.column(column);
    let null = new_null_array(values.data_type(), 1);
    let indices: Vec<(usize, usize)> = good
        .iter()
        .map(|&i| rows[i].map_or((1, 0), |r| (0, r)))
        .collect();
    interleave(&[values.as_ref(), null.as_ref()], &indices).map_err(|e| e.to_string())
}

/// Records' headers as a `MAP<STRING, BYTES>` column, a row per record.
fn headers_array(headers: &[Headers]) -> std::result::Result<ArrayRef, String> {
    let mut builder = MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new());
    for record in headers {
        for (key, value) in record {
            builder.keys().append_value(key);
            builder.values().append_option(value.as_deref());
        }
        builder.append(true).map_err(|e| e.to_string())?;
    }
    Ok(Arc::new(builder.finish()))
}

/// Turns a partition's pending records into rows of the table.
pub(crate) struct Decoders {
    value: Box<dyn Decoder>,
    /// With `value.fields-include` = `EXCEPT_KEY`, and for upserts.
    key: Option<Box<dyn Decoder>>,
    layout: Layout,
    schema: SchemaRef,
    /// Metadata columns: their index and key.
    metadata: Vec<(usize, String)>,
    /// A `headers` column is declared: records keep theirs.
    headers: bool,
    /// An upsert source: key columns come from the key, and each row
    /// carries `_op` (last): `+I`, or `-D` for a tombstone.
    upsert: bool,
    pub on_bad: OnBad,
}

impl Decoders {
    pub(crate) fn new(
        schema: &SchemaRef,
        layout: &Layout,
        format: &Arc<dyn Format>,
        options: &Options,
        upsert: bool,
    ) -> Result<Self> {
        let cannot = |f: &Arc<dyn Format>| {
            ConnectorError::Config(format!("the format '{}' cannot be read", f.name()))
        };
        let value_schema = project_schema(schema, &layout.value);
        let value = format
            .decoder(&value_schema, options)?
            .ok_or_else(|| cannot(format))?;
        let key = match &layout.key_format {
            Some(key_format) if upsert || layout.reads_keys() => {
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
        if !value.one_row_per_record() && (key.is_some() || !metadata.is_empty()) {
            return Err(ConnectorError::Config(format!(
                "the '{}' format gives some records two rows (an update): it cannot be read with keys or metadata columns yet",
                format.name()
            )));
        }
        let policy = BadDataPolicy::of(options, value.ignore_parse_errors());
        Ok(Self {
            value,
            key,
            layout: layout.clone(),
            schema: schema.clone(),
            headers: metadata.iter().any(|(_, k)| k == "headers"),
            metadata,
            upsert,
            on_bad: policy.on_bad(),
        })
    }

    /// The value format skips bad records of its own accord
    /// (`'json.ignore-parse-errors'`).
    pub(crate) fn ignores_parse_errors(&self) -> bool {
        self.value.ignore_parse_errors()
    }

    /// The rows of `pending`, read from `topic`'s `partition`, and the
    /// records set aside as bad; on failure, the bad record.
    pub(crate) fn decode(
        &mut self,
        topic: &str,
        partition: i32,
        pending: &Pending,
    ) -> std::result::Result<DecodedRecords, BadRecord> {
        let values = decode_records(&mut *self.value, &pending.values, self.on_bad, true)?;
        if self.key.is_none() && self.metadata.is_empty() && !self.upsert {
            return Ok(DecodedRecords {
                batch: values.batch,
                bad: values.bad,
            });
        }
        let keys = match &mut self.key {
            Some(decoder) => {
                let mut keys = decode_records(&mut **decoder, &pending.keys, self.on_bad, true)
                    .map_err(|b| BadRecord {
                        reason: format!("key: {}", b.reason),
                        ..b
                    })?;
                for b in &mut keys.bad {
                    b.reason = format!("key: {}", b.reason);
                }
                Some(keys)
            }
            None => None,
        };
        let n = pending.len();
        let with_value: Vec<usize> = (0..n).filter(|&i| !pending.tombstones[i]).collect();
        // Records bad in the value or the key (by record, not by value).
        let mut bad: Vec<BadRecord> = values
            .bad
            .iter()
            .map(|b| BadRecord {
                record: with_value[b.record],
                reason: b.reason.clone(),
            })
            .collect();
        if let Some(keys) = &keys {
            bad.extend(keys.bad.iter().cloned());
            bad.sort_by_key(|b| b.record);
            bad.dedup_by_key(|b| b.record);
        }
        let good: Vec<usize> = (0..n).filter(|&i| !is_bad(&bad, i)).collect();
        if good.is_empty() {
            return Ok(DecodedRecords { batch: None, bad });
        }
        let batch = self
            .assemble(
                (topic, partition),
                pending,
                (values, keys),
                &good,
                &with_value,
            )
            .map_err(|reason| BadRecord { record: 0, reason })?;
        Ok(DecodedRecords {
            batch: Some(batch),
            bad,
        })
    }

    /// The table's rows of the `good` records: value and key columns from
    /// their batches, metadata from the records, and `_op` for upserts.
    fn assemble(
        &self,
        (topic, partition): (&str, i32),
        pending: &Pending,
        (values, keys): (Decoded, Option<Decoded>),
        good: &[usize],
        with_value: &[usize],
    ) -> std::result::Result<RecordBatch, String> {
        let n = pending.len();
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.schema.fields().len()];
        let value_batch = values
            .batch
            .unwrap_or_else(|| RecordBatch::new_empty(self.value.schema()));
        let value_rows = rows_of(with_value, &values.bad, n);
        for (j, &i) in self.layout.value.iter().enumerate() {
            if !(self.upsert && self.layout.key.contains(&i)) {
                columns[i] = Some(gather(&value_batch, j, &value_rows, good)?);
            }
        }
        if let (Some(keys), Some(decoder)) = (keys, &self.key) {
            let all: Vec<usize> = (0..n).collect();
            let key_rows = rows_of(&all, &keys.bad, n);
            let key_batch = keys
                .batch
                .unwrap_or_else(|| RecordBatch::new_empty(decoder.schema()));
            for (j, &i) in self.layout.key.iter().enumerate() {
                columns[i] = Some(gather(&key_batch, j, &key_rows, good)?);
            }
        }
        let indices = UInt32Array::from_iter_values(good.iter().map(|&i| i as u32));
        for (i, key) in &self.metadata {
            let array: ArrayRef = match key.as_str() {
                "topic" => Arc::new(StringArray::from(vec![topic; n])),
                "partition" => Arc::new(Int32Array::from(vec![partition; n])),
                "offset" => Arc::new(Int64Array::from(pending.offsets.clone())),
                "timestamp" => {
                    Arc::new(TimestampMillisecondArray::from(pending.timestamps.clone()))
                }
                "timestamp-type" => Arc::new(StringArray::from(pending.timestamp_types.clone())),
                "headers" => headers_array(&pending.headers)?,
                other => return Err(format!("no metadata '{other}'")),
            };
            let array = take(&array, &indices, None).map_err(|e| e.to_string())?;
            let declared = self.schema.field(*i).data_type();
            columns[*i] = Some(cast(&array, declared).map_err(|e| e.to_string())?);
        }
        if self.upsert {
            let ops = good.iter().map(|&i| match pending.tombstones[i] {
                true => OP_DELETE,
                false => OP_INSERT,
            });
            columns[self.schema.fields().len() - 1] =
                Some(Arc::new(Int8Array::from_iter_values(ops)));
        }
        let columns = columns
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or("a column is in neither the key nor the value")?;
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())
    }
}
