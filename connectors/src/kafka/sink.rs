//! The Kafka sink, with Flink's `sink.delivery-guarantee`:
//!
//! - `none`: rows are sent and not waited for;
//! - `at-least-once` (the default): an idempotent producer, flushed at each
//!   checkpoint barrier, so a completed checkpoint means every row before
//!   it is in the topic; a restart sends the rows after it again;
//! - `exactly-once`: a transaction per checkpoint and subtask, published
//!   through the commit protocol and recoverable after a crash (see
//!   [`super::transaction`]).
//!
//! Each row is one record: its value in the table's format, its key (with
//! `key.fields`) in `key.format` (see [`super::key`]). `sink.partitioner`
//! picks the partition: `default` leaves it to the key's murmur2 hash (Java
//! clients' and Flink's), spreading keyless records; `fixed` sends subtask
//! i to partition i % n; `round-robin`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::kernels::boolean::not;
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{
    DataType, Int8Type, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::sink::SinkCommit;
use eddy_operators::updating::{OP_COLUMN, OP_DELETE, OP_UPDATE_BEFORE};
use eddy_operators::{
    Committer, DeliveryGuarantee, OperatorContext, OperatorError, Sink, SinkProvider,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;

use super::Headers;
use super::key::{Layout, project, project_schema};
use super::transaction::{
    Committable, KafkaCommitter, KafkaProducer, Record, Slot, SlotState, Slots, TIMEOUT, Target,
    Wal, WalPart, flush, new_identity, send,
};
use super::{DELIVERY, PARTITIONER, TOPIC, TXN_PREFIX, client_config, kafka_error, option_error};
use crate::format::{Encoder, Format};
use crate::registry::{ConnectorContext, metadata_key};
use crate::{ConnectorError, Result};

/// librdkafka's default `transaction.timeout.ms`.
const DEFAULT_TXN_TIMEOUT_MS: i64 = 60_000;

/// `sink.partitioner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partitioner {
    /// By the key's murmur2 hash, as Java clients (and Flink) do.
    Default,
    /// Subtask i writes to partition i % partitions.
    Fixed,
    RoundRobin,
}

impl Partitioner {
    /// The partition of the next record, when the sink chooses it.
    fn choose(self, subtask: usize, partitions: i32, sent: &mut u64) -> Option<i32> {
        match self {
            Partitioner::Default => None,
            Partitioner::Fixed => Some(subtask as i32 % partitions),
            Partitioner::RoundRobin => {
                *sent += 1;
                Some((*sent % partitions as u64) as i32)
            }
        }
    }
}

/// A checked `connector = 'kafka'` sink.
#[derive(Debug)]
pub struct KafkaSinkProvider {
    target: Arc<Target>,
    /// `upsert-kafka`: a changelog in, upserts and tombstones out.
    upsert: bool,
    layout: Layout,
    schema: SchemaRef,
    format: Arc<dyn Format>,
    partitioner: Partitioner,
    /// The producers holding transactions, shared with the committer.
    slots: Arc<Slots>,
}

impl KafkaSinkProvider {
    /// A `kafka` sink of appended rows; or with `upsert`, an `upsert-kafka`
    /// sink: each row keyed by the primary key, `+I` and `+U` written, `-D`
    /// a tombstone, `-U` skipped (the `+U` after it replaces the key's
    /// value).
    pub(crate) fn try_new(ctx: &ConnectorContext<'_>, upsert: bool) -> Result<Self> {
        let options = ctx.options;
        let format = ctx.formats.chosen(options)?.clone();
        if !upsert && !format.changelog() && ctx.schema.column_with_name(OP_COLUMN).is_some() {
            return Err(ConnectorError::Config(
                "the 'kafka' connector writes only appended rows, and this query updates rows it wrote: use 'upsert-kafka' with a PRIMARY KEY, or 'format' = 'debezium-json'"
                    .into(),
            ));
        }
        let topic = options.require(TOPIC)?;
        if topic.contains(';') {
            return Err(option_error(TOPIC, "a Kafka sink writes one topic"));
        }
        let guarantee =
            crate::registry::Connector::guarantee(&super::KafkaConnector::KAFKA, options);
        let prefix = options.get(TXN_PREFIX).unwrap_or_default().to_string();
        if guarantee == DeliveryGuarantee::ExactlyOnce && prefix.is_empty() {
            return Err(option_error(
                DELIVERY,
                "'sink.delivery-guarantee' = 'exactly-once' needs 'sink.transactional-id-prefix', unique to this sink on the cluster",
            ));
        }
        if guarantee != DeliveryGuarantee::None
            && options.count(super::RETRY_ATTEMPTS)?.is_some_and(|n| n < 2)
        {
            return Err(option_error(
                super::RETRY_ATTEMPTS,
                "an idempotent producer (at-least-once, exactly-once) needs at least 2 attempts",
            ));
        }
        let partitioner = match options.get(PARTITIONER).filter(|_| !upsert) {
            Some("fixed") => Partitioner::Fixed,
            Some("round-robin") => Partitioner::RoundRobin,
            _ => Partitioner::Default,
        };
        format.encoder(ctx.schema, options)?.ok_or_else(|| {
            ConnectorError::Config(format!("the format '{}' cannot be written", format.name()))
        })?;
        let layout = match upsert {
            true => Layout::upsert(options, ctx.schema, ctx.formats, ctx.primary_key)?,
            false => Layout::from_options(options, ctx.schema, ctx.formats)?,
        };
        Ok(Self {
            layout,
            upsert,
            target: Arc::new(Target {
                topic: topic.to_string(),
                options: options.clone(),
                guarantee,
                prefix,
            }),
            schema: ctx.schema.clone(),
            format,
            partitioner,
            slots: Arc::default(),
        })
    }
}

impl SinkProvider for KafkaSinkProvider {
    fn writer(&self) -> eddy_operators::Result<Box<dyn Sink>> {
        let cannot = || OperatorError::Internal("the format cannot be written".into());
        let options = &self.target.options;
        let value_schema = project_schema(&self.schema, &self.layout.value);
        let encoder = self
            .format
            .encoder(&value_schema, options)?
            .ok_or_else(cannot)?;
        let key_encoder = match &self.layout.key_format {
            Some(format) => {
                let key_schema = project_schema(&self.schema, &self.layout.key);
                Some(
                    format
                        .encoder(&key_schema, &crate::format::key_options(options))?
                        .ok_or_else(cannot)?,
                )
            }
            None => None,
        };
        let timestamp_column = self
            .schema
            .fields()
            .iter()
            .position(|f| metadata_key(f) == Some("timestamp"));
        let op_column = self
            .upsert
            .then(|| self.schema.index_of(OP_COLUMN).ok())
            .flatten();
        let headers_column = self
            .schema
            .fields()
            .iter()
            .position(|f| metadata_key(f) == Some("headers"));
        Ok(Box::new(KafkaSink {
            timestamp_column,
            headers_column,
            op_column,
            layout: self.layout.clone(),
            key_encoder,
            target: self.target.clone(),
            partitioner: self.partitioner,
            encoder,
            subtask: 0,
            partitions: 1,
            sent: 0,
            producer: None,
            txn: None,
            slots: self.slots.clone(),
        }))
    }

    fn committer(&self) -> Option<Arc<dyn Committer>> {
        (self.target.guarantee == DeliveryGuarantee::ExactlyOnce).then(|| {
            Arc::new(KafkaCommitter {
                target: self.target.clone(),
                slots: self.slots.clone(),
            }) as Arc<dyn Committer>
        })
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        self.target.guarantee
    }
}

/// A writer's exactly-once state.
struct Transactional {
    slots: [Arc<Slot>; 2],
    /// The slot taking rows now.
    current: usize,
    /// The rows of its transaction, for the write-ahead log.
    wal: Vec<Record>,
    /// The rows of the last transaction closed, until it is seen
    /// committed.
    pending: Option<WalPart>,
    /// At the end of input: the one closed before `pending`, still waiting
    /// for its (abandoned) checkpoint.
    closed: Option<WalPart>,
    identity: String,
    /// Adds the marker to transactions.
    marker: BaseConsumer,
}

/// One subtask's writer.
pub struct KafkaSink {
    target: Arc<Target>,
    /// An upsert sink's changelog column.
    op_column: Option<usize>,
    /// A `timestamp` metadata column: each record's timestamp.
    timestamp_column: Option<usize>,
    /// A `headers` metadata column: each record's headers.
    headers_column: Option<usize>,
    layout: Layout,
    key_encoder: Option<Box<dyn Encoder>>,
    partitioner: Partitioner,
    encoder: Box<dyn Encoder>,
    subtask: usize,
    partitions: i32,
    sent: u64,
    /// The producer of `none` and `at-least-once`.
    producer: Option<KafkaProducer>,
    txn: Option<Transactional>,
    slots: Arc<Slots>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.target.topic)
            .finish()
    }
}

impl KafkaSink {
    /// The slot taking rows, with a transaction begun.
    fn open_slot(&mut self) -> eddy_operators::Result<Arc<Slot>> {
        let txn = self.transactional()?;
        let slot = txn.slots[txn.current].clone();
        let mut state = slot.state();
        if *state == SlotState::Idle {
            slot.producer
                .begin_transaction()
                .map_err(|e| kafka_error("begin transaction", e))?;
            *state = SlotState::Open;
        }
        drop(state);
        Ok(slot)
    }

    fn transactional(&self) -> eddy_operators::Result<&Transactional> {
        self.txn
            .as_ref()
            .ok_or_else(|| OperatorError::Internal("the Kafka sink was not recovered".into()))
    }

    /// Checks `transaction.timeout.ms` against the checkpoint interval.
    fn check_timeout(&self, ctx: &OperatorContext) -> eddy_operators::Result<()> {
        let timeout_ms = self
            .target
            .options
            .get("properties.transaction.timeout.ms")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(DEFAULT_TXN_TIMEOUT_MS);
        match ctx.checkpoints.interval() {
            Some(interval) if interval.as_millis() as i64 >= timeout_ms => {
                Err(OperatorError::Connector(format!(
                    "kafka: 'properties.transaction.timeout.ms' ({timeout_ms} ms) must be longer than the checkpoint interval ({} ms): a transaction stays open from one checkpoint to the next",
                    interval.as_millis()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Closes the open transaction at the barrier of `checkpoint` (or at
    /// the end of input, `last`). The position is the write-ahead log of
    /// every transaction not known to be committed.
    fn pre_commit_transaction(
        &mut self,
        checkpoint: u64,
        last: bool,
    ) -> eddy_operators::Result<SinkCommit> {
        let subtask = self.subtask;
        let target = self.target.clone();
        let txn = self
            .txn
            .as_mut()
            .ok_or_else(|| OperatorError::Internal("the Kafka sink was not recovered".into()))?;
        match *txn.slots[1 - txn.current].state() {
            // At the end of input the final checkpoint commits both.
            SlotState::PreCommitted(n) if !last => {
                return Err(OperatorError::Connector(format!(
                    "kafka: the transaction of checkpoint {n} is still not committed (that checkpoint did not complete); failing so that a restart replays its rows"
                )));
            }
            SlotState::PreCommitted(_) => {}
            _ => txn.pending = None,
        }
        let slot = txn.slots[txn.current].clone();
        let mut committable = None;
        if *slot.state() == SlotState::Open {
            target.close(&slot, &txn.marker, &txn.identity, checkpoint)?;
            *slot.state() = SlotState::PreCommitted(checkpoint);
            tracing::debug!(txn = %slot.id, checkpoint, rows = txn.wal.len(), "kafka transaction pre-committed");
            committable = Some(
                serde_json::to_value(Committable {
                    txn: slot.id.clone(),
                    subtask,
                    checkpoint,
                })
                .map_err(|e| OperatorError::Internal(e.to_string()))?,
            );
            let part = WalPart {
                checkpoint,
                records: std::mem::take(&mut txn.wal),
            };
            txn.closed = txn.pending.replace(part);
            txn.current = 1 - txn.current;
        }
        let parts: Vec<&WalPart> = txn.closed.iter().chain(&txn.pending).collect();
        Ok(SinkCommit {
            position: Some(Wal::encode_parts(&txn.identity, &parts)),
            committable,
        })
    }

    /// What each row of `batch` sets besides its key and value: its
    /// `timestamp` and `headers` metadata columns, if declared.
    fn row_meta(
        &self,
        batch: &RecordBatch,
        tombstones: Option<&BooleanArray>,
    ) -> eddy_operators::Result<RowMeta> {
        let timestamps = match self.timestamp_column {
            Some(i) => {
                let millis = cast(
                    batch.column(i),
                    &DataType::Timestamp(TimeUnit::Millisecond, None),
                )?;
                let millis = millis.as_primitive::<TimestampMillisecondType>();
                Some(millis.iter().collect())
            }
            None => None,
        };
        let headers = match self.headers_column {
            Some(i) => Some(headers_of(batch.column(i))?),
            None => None,
        };
        Ok(RowMeta {
            timestamps,
            headers,
            tombstones: tombstones.map(|t| t.values().iter().collect()),
        })
    }

    /// Sends the encoded rows, each keyed by the key of the same row; a
    /// row marked a tombstone has no value (and none in `values`).
    fn send_records(
        &mut self,
        (values, keys): (Vec<Vec<u8>>, Option<Vec<Vec<u8>>>),
        mut meta: RowMeta,
    ) -> eddy_operators::Result<()> {
        let tombstones = meta.tombstones.as_deref();
        let slot = match self.target.guarantee {
            DeliveryGuarantee::ExactlyOnce => Some(self.open_slot()?),
            _ => None,
        };
        let producer = match (&slot, &self.producer) {
            (Some(slot), _) => &slot.producer,
            (None, Some(p)) => p,
            (None, None) => return Err(OperatorError::Internal("no Kafka producer".into())),
        };
        let mut values = values.into_iter();
        let rows = tombstones.map_or(values.len(), <[bool]>::len);
        let mut keys = keys.map(Vec::into_iter);
        if keys.as_ref().is_some_and(|k| k.len() != rows) {
            return Err(OperatorError::Internal(
                "the key format wrote a number of records other than the rows'".into(),
            ));
        }
        let mut kept = Vec::new();
        for row in 0..rows {
            let value = match tombstones.is_some_and(|t| t[row]) {
                true => None,
                false => Some(values.next().ok_or_else(|| {
                    OperatorError::Internal("the format wrote fewer records than rows".into())
                })?),
            };
            let record = Record {
                timestamp: meta
                    .timestamps
                    .as_ref()
                    .and_then(|t| t.get(row).copied().flatten()),
                headers: meta
                    .headers
                    .as_mut()
                    .and_then(|h| h.get_mut(row).map(std::mem::take))
                    .unwrap_or_default(),
                partition: self
                    .partitioner
                    .choose(self.subtask, self.partitions, &mut self.sent),
                key: keys.as_mut().and_then(Iterator::next),
                value,
            };
            send(producer, &self.target.topic, &record)?;
            if slot.is_some() {
                kept.push(record);
            }
        }
        producer.poll(std::time::Duration::ZERO);
        if let Some(txn) = &mut self.txn {
            txn.wal.extend(kept);
        }
        Ok(())
    }
}

/// What each row sets besides its key and value.
#[derive(Debug, Default)]
struct RowMeta {
    /// Record timestamps (epoch ms).
    timestamps: Option<Vec<Option<i64>>>,
    headers: Option<Vec<Headers>>,
    /// Rows that are deletes: no value.
    tombstones: Option<Vec<bool>>,
}

/// Each row's headers from a `MAP<STRING, BYTES>` (or `MAP<STRING,
/// STRING>`) column; a NULL map has none.
fn headers_of(column: &ArrayRef) -> eddy_operators::Result<Vec<Headers>> {
    let maps = column.as_map();
    let keys = cast(maps.keys(), &DataType::Utf8)?;
    let values = cast(maps.values(), &DataType::Binary)?;
    let (keys, values) = (keys.as_string::<i32>(), values.as_binary::<i32>());
    let offsets = maps.value_offsets();
    Ok((0..maps.len())
        .map(|row| {
            if maps.is_null(row) {
                return Vec::new();
            }
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            (start..end)
                .map(|e| {
                    let value = (!values.is_null(e)).then(|| values.value(e).to_vec());
                    (keys.value(e).to_string(), value)
                })
                .collect()
        })
        .collect())
}

/// An upsert sink's rows of a changelog: `+I`, `+U` and `-D` (`-U` is
/// left out: the `+U` after it replaces the key's value), and which of
/// them are deletes (tombstones).
fn upserts(
    batch: &RecordBatch,
    op: usize,
) -> eddy_operators::Result<(RecordBatch, Option<BooleanArray>)> {
    let ops = batch.column(op).as_primitive::<Int8Type>();
    let keep: BooleanArray = ops
        .iter()
        .map(|o| Some(o != Some(OP_UPDATE_BEFORE)))
        .collect();
    let kept = filter_record_batch(batch, &keep)?;
    let ops = kept.column(op).as_primitive::<Int8Type>();
    let deletes: BooleanArray = ops.iter().map(|o| Some(o == Some(OP_DELETE))).collect();
    Ok((kept, Some(deletes)))
}

impl Sink for KafkaSink {
    fn name(&self) -> String {
        format!("kafka {}", self.target.topic)
    }

    fn open(&mut self, ctx: &OperatorContext) -> eddy_operators::Result<()> {
        self.subtask = ctx.subtask;
        if self.target.guarantee == DeliveryGuarantee::ExactlyOnce {
            self.check_timeout(ctx)?;
        }
        if self.partitioner != Partitioner::Default {
            let probe: BaseConsumer = client_config(&self.target.options)
                .create()
                .map_err(|e| kafka_error("cannot create a client", e))?;
            let topic = &self.target.topic;
            let metadata = probe
                .fetch_metadata(Some(topic), TIMEOUT)
                .map_err(|e| kafka_error(&format!("metadata of '{topic}'"), e))?;
            self.partitions = metadata
                .topics()
                .first()
                .map_or(1, |t| t.partitions().len().max(1) as i32);
        }
        Ok(())
    }

    /// The committer settled the restored checkpoint's transaction before
    /// this runs; here both producers start afresh, aborting what a
    /// producer of their ids left open.
    fn recover(&mut self, _checkpoint: u64, position: Option<&[u8]>) -> eddy_operators::Result<()> {
        if self.target.guarantee != DeliveryGuarantee::ExactlyOnce {
            self.producer = Some(self.target.producer()?);
            return Ok(());
        }
        let identity = position
            .and_then(Wal::decode)
            .map(|w| w.identity)
            .unwrap_or_else(new_identity);
        let slots = [
            self.target.slot(self.subtask, 0)?,
            self.target.slot(self.subtask, 1)?,
        ];
        for slot in &slots {
            self.slots.add(slot);
        }
        self.txn = Some(Transactional {
            slots,
            current: 0,
            wal: Vec::new(),
            pending: None,
            closed: None,
            identity,
            marker: self.target.marker(self.subtask)?,
        });
        Ok(())
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> eddy_operators::Result<()> {
        let (batch, tombstones) = match self.op_column {
            Some(op) => upserts(batch, op)?,
            None => (batch.clone(), None),
        };
        let with_values = match &tombstones {
            Some(t) => filter_record_batch(&batch, &not(t)?)?,
            None => batch.clone(),
        };
        let values = self
            .encoder
            .records(&project(&with_values, &self.layout.value)?)?;
        let keys = match &mut self.key_encoder {
            Some(encoder) => Some(encoder.records(&project(&batch, &self.layout.key)?)?),
            None => None,
        };
        let meta = self.row_meta(&batch, tombstones.as_ref())?;
        self.send_records((values, keys), meta)
    }

    fn flush(&mut self) -> eddy_operators::Result<()> {
        if let Some(p) = &self.producer {
            flush(p)?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: u64, last: bool) -> eddy_operators::Result<SinkCommit> {
        match self.target.guarantee {
            DeliveryGuarantee::ExactlyOnce => self.pre_commit_transaction(checkpoint, last),
            DeliveryGuarantee::AtLeastOnce => {
                self.flush()?;
                Ok(SinkCommit::default())
            }
            DeliveryGuarantee::None => Ok(SinkCommit::default()),
        }
    }
}

impl Drop for KafkaSink {
    /// A transaction that took rows after the last barrier is aborted; a
    /// pre-committed one is left to its checkpoint.
    fn drop(&mut self) {
        let Some(txn) = &self.txn else { return };
        for slot in &txn.slots {
            let mut state = slot.state();
            if *state == SlotState::Open {
                let _ = slot.producer.abort_transaction(TIMEOUT);
                *state = SlotState::Idle;
            }
        }
    }
}
