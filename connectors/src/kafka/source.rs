//! The Kafka source: partitions are splits.
//!
//! - The **enumerator** lists the partitions of the topics (or of every
//!   topic matching `topic-pattern`), again every
//!   `scan.topic-partition-discovery.interval` while unbounded. A partition
//!   listed at the first start begins where `scan.startup.mode` says and,
//!   when bounded, ends where `scan.bounded.mode` says; both are resolved
//!   to offsets then and kept in the split's position, so a restore reads
//!   to the same end. A partition found later begins at its earliest
//!   offset, as in Flink.
//! - A **reader** (one per subtask) has one consumer, manually assigned
//!   the partitions the runtime hands it; no consumer-group protocol runs.
//!   It polls without waiting, cuts what it got into a batch per
//!   partition, and decodes each batch at once with the format's decoder.
//!   librdkafka's prefetch queue is bounded (`queued.max.messages.kbytes`,
//!   16 MB per reader unless set), so a slow downstream, which stops the
//!   polling, stops the fetching: nothing is buffered without limit.
//!   When the queue is full librdkafka postpones the next fetch by
//!   `fetch.queue.backoff.ms`; its default (1 s) left a reader idle for
//!   most of a catch-up read, so readers use 10 ms unless set.
//! - A partition's position is its next offset: it lives in Eddy's
//!   checkpoints; offsets are never auto-committed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use eddy_operators::OperatorError;
use eddy_operators::source::{
    Poll, SourceProvider, SourceReader, Split, SplitAssignment, SplitEnumerator,
};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::decode::{Decoders, Pending};
use super::key::Layout;
use super::offsets::{Bound, Position, Startup};
use super::{
    BOOTSTRAP, DISCOVERY, GROUP_ID, TOPIC, TOPIC_PATTERN, client_config, kafka_error, option_error,
};
use crate::bad_data::{BadData, BadDataPolicy, BadRecordAt};
use crate::format::Format;
use crate::options::Options;
use crate::registry::ConnectorContext;
use crate::{ConnectorError, Result};

/// How long a metadata or offsets request may take before the job fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Records per batch, at most.
const BATCH_ROWS: usize = 8192;

/// The topics a source reads.
#[derive(Debug, Clone)]
enum Topics {
    List(Vec<String>),
    Pattern(Regex),
}

/// A checked `connector = 'kafka'` source.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    options: Options,
    schema: SchemaRef,
    format: Arc<dyn Format>,
    topics: Topics,
    startup: Startup,
    bound: Bound,
    discovery: Option<Duration>,
    layout: Layout,
    /// The table's name (dead-letter rows).
    table: String,
    /// `upsert-kafka`: keys are the primary key, a tombstone deletes it.
    upsert: bool,
}

/// A split's position: its partition and where it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SplitPosition {
    topic: String,
    partition: i32,
    #[serde(flatten)]
    at: Position,
}

impl KafkaSource {
    /// A `kafka` source; or with `upsert`, an `upsert-kafka` source: read
    /// from the earliest offset, as Flink does, keyed by the primary key,
    /// a changelog of upserts (`_op`).
    pub(crate) fn try_new(ctx: &ConnectorContext<'_>, upsert: bool) -> Result<Self> {
        let options = ctx.options;
        let topics = match (options.get(TOPIC), options.get(TOPIC_PATTERN)) {
            (Some(_), Some(_)) => {
                return Err(option_error(
                    TOPIC_PATTERN,
                    "give 'topic' or 'topic-pattern', not both",
                ));
            }
            (Some(list), None) => Topics::List(
                list.split(';')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            (None, Some(pattern)) => Topics::Pattern(
                Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| option_error(TOPIC_PATTERN, format!("not a regex: {e}")))?,
            ),
            (None, None) => {
                return Err(ConnectorError::Config(
                    "a Kafka source needs 'topic' (one, or a ;-separated list) or 'topic-pattern'"
                        .into(),
                ));
            }
        };
        let startup = match upsert {
            true => Startup::Earliest,
            false => Startup::from_options(options)?,
        };
        if startup == Startup::Group && !options.is_set(GROUP_ID) {
            return Err(option_error(
                super::STARTUP_MODE,
                "scan.startup.mode 'group-offsets' (the default) needs 'properties.group.id'; or choose 'earliest-offset' or 'latest-offset'",
            ));
        }
        let bound = Bound::from_options(options)?;
        let discovery = options
            .duration_ms(DISCOVERY)?
            .filter(|ms| *ms > 0 && !bound.is_bounded())
            .map(|ms| Duration::from_millis(ms as u64));
        let format = ctx.formats.chosen(options)?.clone();
        let layout = match upsert {
            true => Layout::upsert(options, ctx.schema, ctx.formats, ctx.primary_key)?,
            false => Layout::from_options(options, ctx.schema, ctx.formats)?,
        };
        // Fails early if the formats cannot read these columns.
        Decoders::new(ctx.schema, &layout, &format, options, upsert)?;
        Ok(Self {
            layout,
            table: ctx.name.to_string(),
            upsert,
            options: options.clone(),
            schema: ctx.schema.clone(),
            format,
            topics,
            startup,
            bound,
            discovery,
        })
    }

    fn name(&self) -> String {
        match &self.topics {
            Topics::List(list) => format!("kafka {}", list.join(";")),
            Topics::Pattern(p) => format!("kafka /{}/", p.as_str()),
        }
    }

    /// The decoders of a reader.
    fn decoders(&self) -> Result<Decoders> {
        Decoders::new(
            &self.schema,
            &self.layout,
            &self.format,
            &self.options,
            self.upsert,
        )
    }

    /// A consumer for metadata and offsets, or for reading.
    fn consumer(&self, reading: bool) -> eddy_operators::Result<BaseConsumer<Ends>> {
        let mut config = client_config(&self.options);
        if !self.options.is_set(GROUP_ID) {
            // No group protocol runs; librdkafka still wants a name.
            config.set("group.id", "eddy");
        }
        config.set("enable.auto.commit", "false");
        config.set("enable.auto.offset.store", "false");
        if reading {
            config.set("enable.partition.eof", "true");
            for (key, default) in [
                ("queued.max.messages.kbytes", "16384"),
                ("fetch.queue.backoff.ms", "10"),
                ("auto.offset.reset", "earliest"),
                // Statistics carry each partition's end, for the lag.
                ("statistics.interval.ms", "1000"),
            ] {
                if !self.options.is_set(&format!("properties.{key}")) {
                    config.set(key, default);
                }
            }
        }
        config
            .create_with_context(Ends::default())
            .map_err(|e| kafka_error("cannot create a consumer", e))
    }
}

/// Each partition's end as librdkafka's statistics last told it: the
/// last stable offset (the high watermark where there is none).
#[derive(Debug, Default, Clone)]
struct Ends(Arc<Mutex<HashMap<PartitionKey, i64>>>);

impl ClientContext for Ends {
    fn stats(&self, statistics: Statistics) {
        let mut ends = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                if partition >= 0 && end >= 0 {
                    ends.insert((topic.clone(), partition), end);
                }
            }
        }
    }
}

impl ConsumerContext for Ends {}

impl SourceProvider for KafkaSource {
    fn enumerator(&self) -> eddy_operators::Result<Box<dyn SplitEnumerator>> {
        Ok(Box::new(KafkaEnumerator {
            consumer: self.consumer(false)?,
            source: self.clone(),
            known: BTreeMap::new(),
        }))
    }

    fn reader(&self) -> eddy_operators::Result<Box<dyn SourceReader>> {
        let decoders = self.decoders()?;
        let policy = BadDataPolicy::of(&self.options, decoders.ignores_parse_errors());
        Ok(Box::new(KafkaReader {
            name: self.name(),
            consumer: self.consumer(true)?,
            parts: Parts {
                decoders,
                bad: BadData::new(policy, &self.table),
                by_partition: HashMap::new(),
                ready: VecDeque::new(),
                read: 0,
            },
            failed: None,
            commit_offsets: self.options.is_set(GROUP_ID),
        }))
    }

    fn assignment(&self) -> SplitAssignment {
        SplitAssignment::Spread
    }
}

/// Lists partitions and resolves where new ones start and end.
struct KafkaEnumerator {
    source: KafkaSource,
    consumer: BaseConsumer<Ends>,
    /// Splits listed before, by id, in listing order.
    known: BTreeMap<(String, i32), Split>,
}

impl KafkaEnumerator {
    fn unreachable(&self, e: KafkaError) -> OperatorError {
        OperatorError::Connector(format!(
            "kafka: cannot read the metadata of {} from {}: {e}",
            self.source.name(),
            self.source.options.get(BOOTSTRAP).unwrap_or("?")
        ))
    }

    /// Every partition of the source's topics now.
    fn partitions(&self) -> eddy_operators::Result<Vec<(String, i32)>> {
        let mut found = Vec::new();
        match &self.source.topics {
            Topics::List(topics) => {
                for topic in topics {
                    let metadata = self
                        .consumer
                        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                        .map_err(|e| self.unreachable(e))?;
                    for t in metadata.topics() {
                        if let Some(err) = t.error() {
                            return Err(OperatorError::Connector(format!(
                                "kafka: topic '{topic}': {err:?}"
                            )));
                        }
                        found.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
                    }
                }
            }
            Topics::Pattern(pattern) => {
                let metadata = self
                    .consumer
                    .fetch_metadata(None, REQUEST_TIMEOUT)
                    .map_err(|e| self.unreachable(e))?;
                for t in metadata.topics() {
                    if pattern.is_match(t.name()) && !t.name().starts_with("__") {
                        found.extend(
                            t.partitions()
                                .iter()
                                .map(|p| (t.name().to_string(), p.id())),
                        );
                    }
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Where `partitions` (all new) start and end: by the startup and
    /// bounded modes at the first listing, from the earliest offset after.
    fn resolve(
        &self,
        partitions: &[(String, i32)],
        first: bool,
    ) -> eddy_operators::Result<Vec<Position>> {
        let timeout = REQUEST_TIMEOUT;
        let mut positions = Vec::with_capacity(partitions.len());
        let committed = match (&self.source.startup, first) {
            (Startup::Group, true) => Some(self.committed(partitions)?),
            _ => None,
        };
        for (topic, partition) in partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(topic, *partition, timeout)
                .map_err(|e| kafka_error(&format!("offsets of {topic}-{partition}"), e))?;
            let next = if !first {
                low
            } else {
                match &self.source.startup {
                    Startup::Earliest => low,
                    Startup::Latest => high,
                    Startup::Timestamp(ts) => self.offset_at(topic, *partition, *ts, high)?,
                    Startup::Specific(map) => map.get(partition).copied().unwrap_or(low),
                    Startup::Group => {
                        self.group_start(committed.as_ref(), topic, *partition, (low, high))?
                    }
                }
            };
            let end = match &self.source.bound {
                Bound::Unbounded => None,
                Bound::Latest => Some(high),
                Bound::Timestamp(ts) => Some(self.offset_at(topic, *partition, ts + 1, high)?),
                Bound::Specific(map) => Some(map.get(partition).copied().unwrap_or(high)),
            };
            positions.push(Position { next, end });
        }
        Ok(positions)
    }

    /// The consumer group's committed offsets of `partitions`.
    fn committed(
        &self,
        partitions: &[(String, i32)],
    ) -> eddy_operators::Result<HashMap<(String, i32), Offset>> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            tpl.add_partition(topic, *partition);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, REQUEST_TIMEOUT)
            .map_err(|e| kafka_error("the group's committed offsets", e))?;
        Ok(committed.to_topic_map())
    }

    fn group_start(
        &self,
        committed: Option<&HashMap<(String, i32), Offset>>,
        topic: &str,
        partition: i32,
        (low, high): (i64, i64),
    ) -> eddy_operators::Result<i64> {
        if let Some(Offset::Offset(o)) =
            committed.and_then(|c| c.get(&(topic.to_string(), partition)))
        {
            return Ok(*o);
        }
        match self.source.options.get("properties.auto.offset.reset") {
            Some("earliest" | "smallest" | "beginning") => Ok(low),
            Some("latest" | "largest" | "end") => Ok(high),
            _ => Err(OperatorError::Connector(format!(
                "kafka: the group '{}' has no committed offset for {topic}-{partition}: set 'properties.auto.offset.reset' ('earliest' or 'latest') or another 'scan.startup.mode'",
                self.source.options.get(GROUP_ID).unwrap_or("")
            ))),
        }
    }

    /// The first offset of a record at or after `timestamp`, or `high`.
    fn offset_at(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        high: i64,
    ) -> eddy_operators::Result<i64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(timestamp))
            .map_err(|e| kafka_error("offsets by time", e))?;
        let found = self
            .consumer
            .offsets_for_times(tpl, REQUEST_TIMEOUT)
            .map_err(|e| kafka_error(&format!("offsets by time of {topic}-{partition}"), e))?;
        Ok(
            match found.find_partition(topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => high,
            },
        )
    }
}

impl SplitEnumerator for KafkaEnumerator {
    fn list(&mut self) -> eddy_operators::Result<Vec<Split>> {
        let first = self.known.is_empty();
        let new: Vec<(String, i32)> = self
            .partitions()?
            .into_iter()
            .filter(|p| !self.known.contains_key(p))
            .collect();
        if !new.is_empty() {
            let positions = self.resolve(&new, first)?;
            for ((topic, partition), at) in new.into_iter().zip(positions) {
                let position = SplitPosition {
                    topic: topic.clone(),
                    partition,
                    at,
                };
                let split = Split {
                    id: format!("{topic}-{partition}"),
                    position: serde_json::to_vec(&position).unwrap_or_default(),
                    size: at.end.map(|end| (end - at.next).max(0) as u64),
                };
                self.known.insert((topic, partition), split);
            }
        }
        Ok(self.known.values().cloned().collect())
    }

    fn discovery_interval(&self) -> Option<Duration> {
        self.source.discovery
    }
}

/// One subtask's reader: a consumer assigned its partitions.
struct KafkaReader {
    name: String,
    consumer: BaseConsumer<Ends>,
    parts: Parts,
    /// An error met while waiting, returned by the next poll.
    failed: Option<OperatorError>,
    /// Commit completed checkpoints' offsets to the user's consumer group.
    commit_offsets: bool,
}

/// The partitions a reader holds and the records polled but not yet
/// handed over (kept apart from the consumer, which messages borrow).
struct Parts {
    decoders: Decoders,
    bad: BadData,
    by_partition: HashMap<(String, i32), Part>,
    /// Decoded and not yet handed over, each batch with its partition and
    /// the offset after its last record.
    ready: VecDeque<(Poll, Option<(PartitionKey, i64)>)>,
    read: u64,
}

type PartitionKey = (String, i32);

/// One partition a reader holds.
struct Part {
    /// The runtime's number for the split.
    index: usize,
    at: Position,
    /// The offset after the last record handed over (the checkpointed
    /// position while records are pending).
    emitted: i64,
    /// Read to its end; the end is not yet handed over.
    done: bool,
    /// Records polled and not yet decoded.
    pending: Pending,
}

impl Parts {
    /// Takes one polled record; returns its partition if that is done.
    fn take(
        &mut self,
        message: &BorrowedMessage<'_>,
    ) -> eddy_operators::Result<Option<(String, i32)>> {
        let key = (message.topic().to_string(), message.partition());
        let Some(part) = self.by_partition.get_mut(&key).filter(|p| !p.done) else {
            return Ok(None);
        };
        let offset = message.offset();
        if part.at.end.is_some_and(|end| offset >= end) {
            return Ok(Some(key));
        }
        part.at.next = offset + 1;
        self.read += 1;
        part.pending.push(message, &self.decoders);
        if part.pending.len() >= BATCH_ROWS {
            let topic = key.0.clone();
            Self::decode(
                &mut self.decoders,
                &self.bad,
                (&topic, key.1),
                part,
                &mut self.ready,
            )?;
        }
        Ok(part.at.at_end().then_some(key))
    }

    /// Decodes what `part` holds into a batch, and hands its bad records
    /// to the policy. The last thing queued carries the partition's new
    /// position.
    fn decode(
        decoders: &mut Decoders,
        bad_data: &BadData,
        (topic, partition): (&str, i32),
        part: &mut Part,
        ready: &mut VecDeque<(Poll, Option<(PartitionKey, i64)>)>,
    ) -> eddy_operators::Result<()> {
        let Some(last) = part.pending.offsets.last().copied() else {
            return Ok(());
        };
        let pending = &part.pending;
        let decoded = decoders.decode(topic, partition, pending).map_err(|bad| {
            OperatorError::Connector(format!(
                "kafka topic '{topic}' partition {partition} offset {}: {}",
                pending.offsets.get(bad.record).copied().unwrap_or(-1),
                bad.reason
            ))
        })?;
        let name = format!("{topic}-{partition}");
        let rejected = decoded.bad.iter().map(|b| BadRecordAt {
            bytes: pending.record(b.record),
            reason: &b.reason,
            partition: &name,
            offset: pending.offsets.get(b.record).copied(),
            timestamp: pending.timestamps.get(b.record).copied().flatten(),
        });
        let rejected = bad_data.reject(rejected);
        part.pending.clear();
        let handed = Some(((topic.to_string(), partition), last + 1));
        match (rejected, decoded.batch) {
            (Some(r), batch) => ready.push_back((Poll::Rejected(part.index, r, batch), handed)),
            (None, Some(batch)) => ready.push_back((Poll::Batch(part.index, batch), handed)),
            (None, None) => {}
        }
        Ok(())
    }

    /// Decodes every partition's pending records.
    fn decode_all(&mut self) -> eddy_operators::Result<()> {
        for ((topic, partition), part) in &mut self.by_partition {
            Self::decode(
                &mut self.decoders,
                &self.bad,
                (topic, *partition),
                part,
                &mut self.ready,
            )?;
        }
        Ok(())
    }

    /// Hands over a partition's last records and its end. It is held
    /// (and checkpointed) until the end is handed over.
    fn finish(&mut self, key: &(String, i32)) -> eddy_operators::Result<()> {
        if let Some(part) = self.by_partition.get_mut(key).filter(|p| !p.done) {
            part.done = true;
            Self::decode(
                &mut self.decoders,
                &self.bad,
                (&key.0, key.1),
                part,
                &mut self.ready,
            )?;
            let end = (
                Poll::Finished(part.index),
                Some((key.clone(), part.at.next)),
            );
            self.ready.push_back(end);
        }
        Ok(())
    }

    /// The next thing to hand over, noting how far its partition got.
    fn pop(&mut self) -> Option<Poll> {
        let (poll, handed) = self.ready.pop_front()?;
        if let Some((key, next)) = handed {
            if matches!(poll, Poll::Finished(_)) {
                self.by_partition.remove(&key);
            } else if let Some(part) = self.by_partition.get_mut(&key) {
                part.emitted = next;
            }
        }
        Some(poll)
    }

    /// Where `key` resumes after a restore: after what was handed over if
    /// records are pending, else after what was polled (tombstones and
    /// transaction markers included).
    fn resume_at(&self, key: &PartitionKey, part: &Part) -> i64 {
        let pending = part.pending.len() > 0
            || self
                .ready
                .iter()
                .any(|(_, handed)| handed.as_ref().is_some_and(|(k, _)| k == key));
        if pending { part.emitted } else { part.at.next }
    }
}

/// Gives a finished partition back to the broker.
fn unassign(consumer: &BaseConsumer<Ends>, key: &PartitionKey) -> eddy_operators::Result<()> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&key.0, key.1);
    consumer
        .incremental_unassign(&tpl)
        .map_err(|e| kafka_error("unassign", e))
}

/// Handles one event from the consumer; false if there was none.
fn handle(
    consumer: &BaseConsumer<Ends>,
    parts: &mut Parts,
    name: &str,
    event: Option<std::result::Result<BorrowedMessage<'_>, KafkaError>>,
) -> eddy_operators::Result<bool> {
    match event {
        None => Ok(false),
        Some(Ok(message)) => {
            if let Some(done) = parts.take(&message)? {
                drop(message);
                parts.finish(&done)?;
                unassign(consumer, &done)?;
            }
            Ok(true)
        }
        Some(Err(KafkaError::PartitionEOF(_))) => {
            check_ends(consumer, parts)?;
            Ok(true)
        }
        Some(Err(e)) => {
            tracing::warn!(source = %name, error = %e, "kafka consumer error (librdkafka retries)");
            Ok(false)
        }
    }
}

/// A bounded partition whose consumer position reached its end (past
/// transaction markers, which are no records) is done.
fn check_ends(consumer: &BaseConsumer<Ends>, parts: &mut Parts) -> eddy_operators::Result<()> {
    let position = consumer
        .position()
        .map_err(|e| kafka_error("position", e))?;
    let done: Vec<PartitionKey> = parts
        .by_partition
        .iter_mut()
        .filter(|(_, part)| !part.done)
        .filter_map(|(key, part)| {
            let end = part.at.end?;
            let at = match position.find_partition(&key.0, key.1).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => return None,
            };
            // Only the end moves the position: records before it are read.
            (at >= end && part.at.next.max(at) >= end).then(|| {
                part.at.next = part.at.next.max(at);
                key.clone()
            })
        })
        .collect();
    for key in done {
        parts.finish(&key)?;
        unassign(consumer, &key)?;
    }
    Ok(())
}

impl SourceReader for KafkaReader {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn add_split(&mut self, split: usize, assigned: Split) -> eddy_operators::Result<()> {
        let position: SplitPosition = serde_json::from_slice(&assigned.position).map_err(|e| {
            OperatorError::Internal(format!("bad position of split {}: {e}", assigned.id))
        })?;
        let key = (position.topic.clone(), position.partition);
        let part = Part {
            index: split,
            at: position.at,
            emitted: position.at.next,
            done: false,
            pending: Pending::default(),
        };
        if part.at.at_end() {
            self.parts.ready.push_back((Poll::Finished(split), None));
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&key.0, key.1, Offset::Offset(part.at.next))
            .map_err(|e| kafka_error("assign", e))?;
        self.consumer
            .incremental_assign(&tpl)
            .map_err(|e| kafka_error(&format!("assign {}", assigned.id), e))?;
        self.parts.by_partition.insert(key, part);
        Ok(())
    }

    fn poll(&mut self) -> eddy_operators::Result<Poll> {
        if let Some(failed) = self.failed.take() {
            return Err(failed);
        }
        if let Some(ready) = self.parts.pop() {
            return Ok(ready);
        }
        for _ in 0..BATCH_ROWS {
            let event = self.consumer.poll(Duration::ZERO);
            if !handle(&self.consumer, &mut self.parts, &self.name, event)? {
                break;
            }
        }
        self.parts.decode_all()?;
        Ok(self.parts.pop().unwrap_or(Poll::Pending))
    }

    fn wait(&mut self, timeout: Duration) {
        // Waits for the next record and keeps it for the next poll.
        let event = self.consumer.poll(timeout);
        if let Err(e) = handle(&self.consumer, &mut self.parts, &self.name, event) {
            self.failed = Some(e);
        }
    }

    fn lag(&self) -> Vec<(String, u64)> {
        let ends = self
            .consumer
            .context()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.parts
            .by_partition
            .iter()
            .filter_map(|(key, part)| {
                let end = *ends.get(key)?;
                let behind = end.saturating_sub(part.emitted).max(0) as u64;
                Some((format!("{}-{}", key.0, key.1), behind))
            })
            .collect()
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        self.parts
            .by_partition
            .iter()
            .map(|(key, part)| {
                let (topic, partition) = key;
                let next = self.parts.resume_at(key, part);
                let position = SplitPosition {
                    topic: topic.clone(),
                    partition: *partition,
                    at: Position {
                        next,
                        end: part.at.end,
                    },
                };
                (
                    part.index,
                    serde_json::to_vec(&position).unwrap_or_default(),
                )
            })
            .collect()
    }

    fn progress(&self) -> u64 {
        self.parts.read
    }

    /// Commits the offsets of a completed checkpoint to the consumer group,
    /// so that lag monitoring follows the job. The job never reads them
    /// back: it resumes from its checkpoint.
    fn checkpoint_complete(&mut self, checkpoint: u64, positions: &[(usize, Vec<u8>)]) {
        if !self.commit_offsets {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (_, bytes) in positions {
            if let Ok(p) = serde_json::from_slice::<SplitPosition>(bytes) {
                let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.at.next));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(source = %self.name, checkpoint, error = %e, "kafka: cannot commit offsets to the group (for monitoring only)");
        }
    }
}
