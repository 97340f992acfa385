//! Exactly-once Kafka output: transactions per checkpoint, a marker that
//! records which committed, and a write-ahead log that outlives a crash.
//!
//! ```text
//!  rows ─► txn in slot A (id <prefix>-<subtask>-0) ─ barrier n: flush, marker n, pre-commit ─► WAL(n) in checkpoint n
//!  rows ─► txn in slot B (id <prefix>-<subtask>-1) ...           checkpoint n complete ─► commit slot A's txn
//! ```
//!
//! Each sink subtask has two transactional producers and alternates
//! between them: one holds the transaction closed by the last barrier
//! until its checkpoint completes, the other takes the rows after the
//! barrier. Every transaction also commits, atomically with its rows, an
//! offset of a marker consumer group (`<prefix>-<subtask>`, partition 0 of
//! the topic): the checkpoint id, with the sink's identity as metadata. So
//! "did the transaction of checkpoint n commit?" is answered by the broker.
//!
//! librdkafka cannot resume a pre-committed transaction of a dead producer
//! (Flink's Java client does it by producer id and epoch;
//! `init_transactions` with the same id aborts it). A crash after
//! checkpoint n completed and before its commit would lose its rows. So
//! the rows of each transaction are also kept, at the barrier, in
//! checkpoint n itself: the sink's position, a write-ahead log. On
//! recovery from checkpoint n, before any writer opens, the committer
//! ([`KafkaCommitter::recover`]), for each subtask with a transaction in n:
//!
//! 1. calls `init_transactions` on both of its ids, which aborts whatever
//!    they left open (the transaction after the barrier, or n's if it did
//!    not commit), so nothing lingers to hold `read_committed` consumers
//!    back;
//! 2. reads the marker: if it is below n, n's transaction did not commit,
//!    and the write-ahead log is sent again in a fresh transaction with
//!    the marker n.
//!
//! A `read_committed` consumer sees each row once. The cost: each row is
//! written twice (to Kafka, and once per checkpoint to the state store).
//! A writer that meets a barrier while its other transaction still waits
//! for an earlier checkpoint (which then failed) fails the job rather than
//! let a checkpoint complete without that transaction's rows; the restart
//! replays them from the last complete checkpoint. Recovery reads the
//! logs of every subtask of the restored run, so a job may resume at
//! another parallelism; the open transactions of subtasks it no longer has
//! are aborted too.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eddy_operators::{Committer, DeliveryGuarantee, OperatorError};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::{client_config, kafka_error};
use crate::options::Options;

type Result<T> = eddy_operators::Result<T>;

/// How long a flush, a commit or an init may take before the job fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

/// Remembers the first failed delivery, which fails the next flush.
#[derive(Debug, Default)]
pub(crate) struct DeliveryContext {
    failed: Mutex<Option<String>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            failed.get_or_insert_with(|| e.to_string());
        }
    }
}

pub(crate) type KafkaProducer = BaseProducer<DeliveryContext>;

/// Where the sink writes, and how: shared by its writers and committer.
#[derive(Debug)]
pub(crate) struct Target {
    pub topic: String,
    pub options: Options,
    pub guarantee: DeliveryGuarantee,
    /// Exactly-once: `sink.transactional-id-prefix`.
    pub prefix: String,
}

impl Target {
    /// The producers' configuration.
    pub(crate) fn config(&self) -> rdkafka::ClientConfig {
        let mut config = client_config(&self.options);
        if !self.options.is_set("properties.partitioner") {
            // Java clients' (and so Flink's) key hashing.
            config.set("partitioner", "murmur2_random");
        }
        if self.guarantee != DeliveryGuarantee::None {
            config.set("enable.idempotence", "true");
        }
        // Transient errors (a broker away, a timeout, a full queue on the
        // broker's side) are retried by librdkafka with exponential backoff
        // and jitter; then the record fails, and with it the next flush.
        if let Ok(Some(attempts)) = self.options.count(super::RETRY_ATTEMPTS) {
            config.set("retries", attempts.saturating_sub(1).to_string());
        }
        if let Ok(Some(ms)) = self.options.duration_ms(super::RETRY_INITIAL) {
            config.set("retry.backoff.ms", ms.max(1).to_string());
        }
        if let Ok(Some(ms)) = self.options.duration_ms(super::RETRY_MAX) {
            config.set("retry.backoff.max.ms", ms.max(1).to_string());
        }
        config
    }

    pub(crate) fn producer(&self) -> Result<KafkaProducer> {
        self.config()
            .create_with_context(DeliveryContext::default())
            .map_err(|e| kafka_error("cannot create a producer", e))
    }

    /// Transactional producer `k` (0 or 1) of `subtask`, with whatever a
    /// producer of its id left open aborted.
    pub(crate) fn slot(&self, subtask: usize, k: usize) -> Result<Arc<Slot>> {
        let id = format!("{}-{subtask}-{k}", self.prefix);
        let mut config = self.config();
        config.set("transactional.id", &id);
        let producer: KafkaProducer = config
            .create_with_context(DeliveryContext::default())
            .map_err(|e| kafka_error("cannot create a producer", e))?;
        producer
            .init_transactions(TIMEOUT)
            .map_err(|e| kafka_error(&format!("init transactions of {id}"), e))?;
        Ok(Arc::new(Slot {
            id,
            producer,
            state: Mutex::new(SlotState::Idle),
        }))
    }

    /// The consumer of `subtask`'s marker group.
    pub(crate) fn marker(&self, subtask: usize) -> Result<BaseConsumer> {
        let mut config = client_config(&self.options);
        config
            .set("group.id", format!("{}-{subtask}", self.prefix))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        config
            .create()
            .map_err(|e| kafka_error("cannot create the marker consumer", e))
    }

    /// The checkpoint of the last transaction of `identity` that committed.
    fn committed(&self, marker: &BaseConsumer, identity: &str) -> Result<Option<u64>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        let committed = marker
            .committed_offsets(tpl, TIMEOUT)
            .map_err(|e| kafka_error("read the transaction marker", e))?;
        Ok(committed
            .find_partition(&self.topic, 0)
            .and_then(|elem| match elem.offset() {
                Offset::Offset(o) if elem.metadata() == identity => Some(o as u64),
                _ => None,
            }))
    }

    /// Flushes `slot`'s transaction and adds the marker of `checkpoint`.
    pub(crate) fn close(
        &self,
        slot: &Slot,
        marker: &BaseConsumer,
        identity: &str,
        checkpoint: u64,
    ) -> Result<()> {
        flush(&slot.producer)?;
        let mut tpl = TopicPartitionList::new();
        let mut elem = tpl.add_partition(&self.topic, 0);
        elem.set_offset(Offset::Offset(checkpoint as i64))
            .map_err(|e| kafka_error("marker", e))?;
        elem.set_metadata(identity);
        let group = marker.group_metadata().ok_or_else(|| {
            OperatorError::Connector("kafka: no group metadata for the marker".into())
        })?;
        slot.producer
            .send_offsets_to_transaction(&tpl, &group, TIMEOUT)
            .map_err(|e| kafka_error("add the marker to the transaction", e))
    }

    /// Publishes the rows of `subtask`'s transaction of `checkpoint`,
    /// kept in `wal`, if it did not commit: see the module docs.
    fn settle(&self, subtask: usize, wal: &Wal, checkpoint: u64) -> Result<()> {
        let part = wal
            .parts
            .iter()
            .find(|p| p.checkpoint == checkpoint)
            .ok_or_else(|| {
                OperatorError::Connector(format!(
                    "kafka: the checkpoint holds no write-ahead log of subtask {subtask}'s transaction of checkpoint {checkpoint}: its rows cannot be published"
                ))
            })?;
        // Aborts both ids' open transactions (the marker's pending offsets
        // among them, which would block reading it).
        let slots = [self.slot(subtask, 0)?, self.slot(subtask, 1)?];
        let marker = self.marker(subtask)?;
        if self.committed(&marker, &wal.identity)? >= Some(checkpoint) {
            return Ok(());
        }
        tracing::info!(
            topic = %self.topic, subtask, checkpoint, rows = part.records.len(),
            "kafka: the restored checkpoint's transaction did not commit: sending its rows again"
        );
        let slot = &slots[0];
        slot.producer
            .begin_transaction()
            .map_err(|e| kafka_error("begin transaction", e))?;
        for record in &part.records {
            send(&slot.producer, &self.topic, record)?;
        }
        self.close(slot, &marker, &wal.identity, checkpoint)?;
        slot.producer
            .commit_transaction(TIMEOUT)
            .map_err(|e| kafka_error("commit the resent transaction", e))
    }
}

/// Where a transactional producer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// No transaction (after init, a commit or an abort).
    Idle,
    /// A transaction takes rows.
    Open,
    /// Closed by the barrier of this checkpoint, waiting for it to
    /// complete.
    PreCommitted(u64),
}

/// A transactional producer, shared by its writer and the committer.
pub(crate) struct Slot {
    pub id: String,
    pub producer: KafkaProducer,
    state: Mutex<SlotState>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("id", &self.id).finish()
    }
}

impl Slot {
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every live slot of a sink, by transactional id.
#[derive(Debug, Default)]
pub(crate) struct Slots(Mutex<HashMap<String, Arc<Slot>>>);

impl Slots {
    pub(crate) fn add(&self, slot: &Arc<Slot>) {
        let mut slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slots.insert(slot.id.clone(), slot.clone());
    }

    fn get(&self, id: &str) -> Option<Arc<Slot>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

/// What the committer gets: the transaction a barrier closed.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Committable {
    pub txn: String,
    pub subtask: usize,
    pub checkpoint: u64,
}

/// Commits the transactions of live producers; at recovery, settles the
/// restored checkpoint's from the write-ahead logs.
#[derive(Debug)]
pub(crate) struct KafkaCommitter {
    pub target: Arc<Target>,
    pub slots: Arc<Slots>,
}

fn parse(value: &serde_json::Value) -> Result<Committable> {
    serde_json::from_value(value.clone())
        .map_err(|e| OperatorError::Internal(format!("bad Kafka committable: {e}")))
}

impl Committer for KafkaCommitter {
    fn commit(&self, committables: &[serde_json::Value]) -> Result<()> {
        for value in committables {
            let c = parse(value)?;
            let Some(slot) = self.slots.get(&c.txn) else {
                return Err(OperatorError::Connector(format!(
                    "kafka: transaction {} of checkpoint {} has no producer in this process",
                    c.txn, c.checkpoint
                )));
            };
            let mut state = slot.state();
            if *state == SlotState::PreCommitted(c.checkpoint) {
                slot.producer
                    .commit_transaction(TIMEOUT)
                    .map_err(|e| kafka_error(&format!("commit transaction {}", c.txn), e))?;
                *state = SlotState::Idle;
                tracing::debug!(txn = %c.txn, checkpoint = c.checkpoint, "kafka transaction committed");
            }
        }
        Ok(())
    }

    fn recover(
        &self,
        committables: &[serde_json::Value],
        positions: &BTreeMap<usize, Vec<u8>>,
    ) -> Result<()> {
        let mut commits = committables.iter().map(parse).collect::<Result<Vec<_>>>()?;
        // Markers only grow: settle each subtask's transactions in order.
        commits.sort_by_key(|c| (c.subtask, c.checkpoint));
        for c in commits {
            let wal = positions.get(&c.subtask).and_then(|p| Wal::decode(p));
            let wal = wal.ok_or_else(|| {
                OperatorError::Connector(format!(
                    "kafka: the checkpoint holds no write-ahead log of sink subtask {}",
                    c.subtask
                ))
            })?;
            self.target.settle(c.subtask, &wal, c.checkpoint)?;
        }
        // Every other subtask of the restored run may have left a
        // transaction open (rows after the barrier): abort it now, also for
        // subtasks a smaller parallelism no longer has, so that it does not
        // hold `read_committed` readers back until it times out.
        let settled: Vec<usize> = committables
            .iter()
            .filter_map(|v| parse(v).ok().map(|c| c.subtask))
            .collect();
        for &subtask in positions.keys().filter(|s| !settled.contains(s)) {
            self.target.slot(subtask, 0)?;
            self.target.slot(subtask, 1)?;
        }
        Ok(())
    }
}

/// Sends one record, waiting while the producer's queue is full.
pub(crate) fn send(producer: &KafkaProducer, topic: &str, record: &Record) -> Result<()> {
    loop {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(value) = &record.value {
            r = r.payload(&value[..]);
        }
        if let Some(key) = &record.key {
            r = r.key(&key[..]);
        }
        if let Some(p) = record.partition {
            r = r.partition(p);
        }
        if let Some(ms) = record.timestamp {
            r = r.timestamp(ms);
        }
        if !record.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            r = r.headers(headers);
        }
        match producer.send(r) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(kafka_error(&format!("send to '{topic}'"), e)),
        }
    }
}

/// Waits until every record sent is acknowledged; fails on a failed one.
pub(crate) fn flush(producer: &KafkaProducer) -> Result<()> {
    producer
        .flush(TIMEOUT)
        .map_err(|e| kafka_error("flush", e))?;
    let failed = producer
        .context()
        .failed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match failed {
        Some(reason) => Err(OperatorError::Connector(format!(
            "kafka: a record was not delivered: {reason}"
        ))),
        None => Ok(()),
    }
}

/// A fresh sink identity: unique across starts of jobs.
pub(crate) fn new_identity() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}-{:x}", nanos, std::process::id())
}

/// One record of a transaction, kept for the write-ahead log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone (an upsert sink's delete).
    pub value: Option<Vec<u8>>,
    /// Epoch milliseconds (a `timestamp` metadata column); else the
    /// producer's time.
    pub timestamp: Option<i64>,
    /// A `headers` metadata column's entries, in order.
    pub headers: super::Headers,
}

/// The rows of one pre-committed transaction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct WalPart {
    /// The checkpoint whose barrier closed the transaction (its marker).
    pub checkpoint: u64,
    pub records: Vec<Record>,
}

/// The write-ahead log of a writer's pre-committed transactions: its
/// position in a checkpoint. Usually one part; two at the end of input
/// when the last checkpoint before it was abandoned.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Wal {
    /// Names this sink's transactions in its marker (a new job with the
    /// same prefix gets a new one).
    pub identity: String,
    /// By increasing checkpoint.
    pub parts: Vec<WalPart>,
}

impl Wal {
    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        Self::encode_parts(&self.identity, &self.parts.iter().collect::<Vec<_>>())
    }

    /// The log of `parts`: length-prefixed fields, -1 lengths for absent
    /// ones.
    pub(crate) fn encode_parts(identity: &str, parts: &[&WalPart]) -> Vec<u8> {
        let size: usize = parts
            .iter()
            .flat_map(|p| &p.records)
            .map(|r| 20 + r.value.as_ref().map_or(0, Vec::len) + r.key.as_ref().map_or(0, Vec::len))
            .sum();
        let mut out = Vec::with_capacity(16 + identity.len() + size);
        put_bytes(&mut out, Some(identity.as_bytes()));
        out.extend_from_slice(&(parts.len() as u32).to_be_bytes());
        for part in parts {
            out.extend_from_slice(&part.checkpoint.to_be_bytes());
            out.extend_from_slice(&(part.records.len() as u32).to_be_bytes());
            for r in &part.records {
                out.extend_from_slice(&r.partition.unwrap_or(-1).to_be_bytes());
                out.extend_from_slice(&r.timestamp.unwrap_or(i64::MIN).to_be_bytes());
                put_bytes(&mut out, r.key.as_deref());
                put_bytes(&mut out, r.value.as_deref());
                out.extend_from_slice(&(r.headers.len() as u32).to_be_bytes());
                for (key, value) in &r.headers {
                    put_bytes(&mut out, Some(key.as_bytes()));
                    put_bytes(&mut out, value.as_deref());
                }
            }
        }
        out
    }

    pub(crate) fn decode(mut bytes: &[u8]) -> Option<Self> {
        let identity = String::from_utf8(take_bytes(&mut bytes)??).ok()?;
        let parts = u32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?);
        let mut wal = Wal {
            identity,
            parts: Vec::new(),
        };
        for _ in 0..parts {
            let checkpoint = u64::from_be_bytes(take(&mut bytes, 8)?.try_into().ok()?);
            let count = u32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?);
            let mut records = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let partition = i32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?);
                let timestamp = i64::from_be_bytes(take(&mut bytes, 8)?.try_into().ok()?);
                let key = take_bytes(&mut bytes)?;
                let value = take_bytes(&mut bytes)?;
                let count = u32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?);
                let mut headers = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let key = String::from_utf8(take_bytes(&mut bytes)??).ok()?;
                    headers.push((key, take_bytes(&mut bytes)?));
                }
                records.push(Record {
                    partition: (partition >= 0).then_some(partition),
                    key,
                    value,
                    timestamp: (timestamp != i64::MIN).then_some(timestamp),
                    headers,
                });
            }
            wal.parts.push(WalPart {
                checkpoint,
                records,
            });
        }
        bytes.is_empty().then_some(wal)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            out.extend_from_slice(&(b.len() as i32).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Some(head)
}

/// A length-prefixed field: `None` if malformed, `Some(None)` if absent.
fn take_bytes(bytes: &mut &[u8]) -> Option<Option<Vec<u8>>> {
    let len = i32::from_be_bytes(take(bytes, 4)?.try_into().ok()?);
    if len < 0 {
        return Some(None);
    }
    Some(Some(take(bytes, len as usize)?.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_ahead_log_round_trips() {
        let wal = Wal {
            identity: "abc-1".into(),
            parts: vec![
                WalPart {
                    checkpoint: 41,
                    records: vec![Record {
                        partition: None,
                        key: None,
                        value: Some(b"{}".to_vec()),
                        timestamp: Some(-5),
                        headers: vec![
                            ("trace".into(), Some(b"t1".to_vec())),
                            ("empty".into(), None),
                        ],
                    }],
                },
                WalPart {
                    checkpoint: 42,
                    records: vec![Record {
                        partition: Some(3),
                        key: Some(b"k".to_vec()),
                        value: None,
                        timestamp: None,
                        headers: Vec::new(),
                    }],
                },
            ],
        };
        assert_eq!(Wal::decode(&wal.encode()), Some(wal));
        assert_eq!(Wal::decode(b"\0\0"), None);
    }
}
