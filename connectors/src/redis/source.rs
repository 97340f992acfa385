//! A Redis stream read through a consumer group.
//!
//! ```text
//!  enumerator: XGROUP CREATE stream group 0|$ MKSTREAM (once); with 'scan.bounded.mode' = 'latest',
//!              the stream's last entry now is the split's end
//!  reader:  add_split(position = last entry handed over, end)
//!           1. the consumer's pending entries after the position (delivered before a crash,
//!              never acknowledged): XREADGROUP ... STREAMS stream <position>
//!           2. then new entries: XREADGROUP ... STREAMS stream >   (wait(): the same with BLOCK)
//!  checkpoint complete ──► XACK the entries handed over up to its position
//! ```
//!
//! Entries are decoded by the format: with `'field'`, that field's value
//! is a record; without, the entry's fields are a JSON object whose keys
//! are the columns. A bad entry goes by `'bad-data'`, its position being
//! the stream and the entry's id.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use eddy_operators::source::{Poll, SourceReader, Split, SplitEnumerator};
use eddy_operators::{OperatorError, SourceProvider};
use redis::Value;
use redis::streams::{StreamId, StreamReadReply};

use super::{BOUNDED_MODE, CONSUMER, FIELD, GROUP, STARTUP_MODE, STREAM, connect, redis_error};
use crate::bad_data::{BadData, BadDataPolicy, MessageAt, decode_messages};
use crate::format::{Decoder, Format, Records};
use crate::options::Options;
use crate::registry::ConnectorContext;
use crate::{Result, option_error};

type OpResult<T> = eddy_operators::Result<T>;

/// Entries read per call.
const COUNT: usize = 1_000;

/// A stream entry's id, `ms-seq`, in its order.
type EntryId = (u64, u64);

fn parse_id(text: &str) -> Option<EntryId> {
    let (ms, seq) = text.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn id_text((ms, seq): EntryId) -> String {
    format!("{ms}-{seq}")
}

/// An entry's text fields as a JSON object, `{"field":"value",...}`, its
/// fields in name order (as a dead letter shows it), written straight
/// into the bytes the decoder reads.
fn fields_as_json(entry: &StreamId) -> Vec<u8> {
    let mut fields: Vec<(&String, std::borrow::Cow<'_, str>)> = entry
        .map
        .iter()
        .filter_map(|(k, v)| match v {
            Value::BulkString(b) => Some((k, String::from_utf8_lossy(b))),
            Value::SimpleString(t) => Some((k, std::borrow::Cow::Borrowed(t.as_str()))),
            _ => None,
        })
        .collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = vec![b'{'];
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing strings to a Vec does not fail.
        let _ = serde_json::to_writer(&mut out, k.as_str());
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, v.as_ref());
    }
    out.push(b'}');
    out
}

/// `connector = 'redis'` as a source.
#[derive(Debug, Clone)]
pub struct RedisSource {
    client: redis::Client,
    table: String,
    stream: String,
    group: String,
    consumer: String,
    field: Option<String>,
    earliest: bool,
    bounded: bool,
    format: Arc<dyn Format>,
    options: Options,
    schema: SchemaRef,
}

impl RedisSource {
    pub(crate) fn try_new(ctx: &ConnectorContext<'_>) -> Result<Self> {
        let options = ctx.options;
        let stream = options.require_text(STREAM, "a Redis source")?;
        let format = ctx.formats.chosen(options)?.clone();
        let field = options.get(FIELD).map(str::to_string);
        if field.is_none() && format.name() != "json" {
            return Err(option_error(
                FIELD,
                format!(
                    "'format' = '{}' reads a record from one field of each entry: name it with 'field'",
                    format.name()
                ),
            ));
        }
        let source = Self {
            client: super::client(options)?,
            table: ctx.name.to_string(),
            stream,
            group: options.get(GROUP).unwrap_or("eddy").to_string(),
            consumer: options
                .get(CONSUMER)
                .map(str::to_string)
                .unwrap_or_else(|| format!("eddy-{}", ctx.name)),
            field,
            earliest: options.get(STARTUP_MODE) != Some("latest"),
            bounded: options.get(BOUNDED_MODE) == Some("latest"),
            format,
            options: options.clone(),
            schema: ctx.schema.clone(),
        };
        // Fails early if the format cannot read these columns.
        source.decoder()?;
        Ok(source)
    }

    fn decoder(&self) -> Result<Box<dyn Decoder>> {
        crate::format::decoder_of(self.format.as_ref(), &self.schema, &self.options)
    }
}

impl SourceProvider for RedisSource {
    fn enumerator(&self) -> OpResult<Box<dyn SplitEnumerator>> {
        Ok(Box::new(RedisEnumerator {
            source: self.clone(),
        }))
    }

    fn reader(&self) -> OpResult<Box<dyn SourceReader>> {
        let decoder = self.decoder()?;
        let policy = BadDataPolicy::of(&self.options, decoder.ignore_parse_errors());
        Ok(Box::new(RedisReader {
            source: self.clone(),
            connection: None,
            decoder,
            bad: BadData::new(policy, &self.table),
            split: None,
            at: Position::default(),
            replaying: None,
            delivered: VecDeque::new(),
            stash: Vec::new(),
            past_end: false,
            checkpointing: false,
            read: 0,
        }))
    }

    fn max_parallelism(&self) -> Option<usize> {
        Some(1)
    }
}

/// Where a split is: the last entry handed over, and the entry it ends at
/// (bounded reading; `(0, 0)` for a stream that was empty).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Position {
    last: Option<EntryId>,
    end: Option<EntryId>,
}

impl Position {
    /// `last|end`, each an id or empty.
    fn encode(self) -> Vec<u8> {
        let text = |id: Option<EntryId>| id.map(id_text).unwrap_or_default();
        format!("{}|{}", text(self.last), text(self.end)).into_bytes()
    }

    fn decode(bytes: &[u8]) -> OpResult<Self> {
        let bad = || {
            OperatorError::Connector("redis: a checkpointed position that is not last|end".into())
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let (last, end) = text.split_once('|').ok_or_else(bad)?;
        let id = |t: &str| match t {
            "" => Ok(None),
            t => parse_id(t).map(Some).ok_or_else(bad),
        };
        Ok(Self {
            last: id(last)?,
            end: id(end)?,
        })
    }
}

/// Makes the group, and the one split of the stream.
struct RedisEnumerator {
    source: RedisSource,
}

impl SplitEnumerator for RedisEnumerator {
    fn list(&mut self) -> OpResult<Vec<Split>> {
        let s = &self.source;
        let mut connection = connect(&s.client)?;
        let start = if s.earliest { "0" } else { "$" };
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&s.stream)
            .arg(&s.group)
            .arg(start)
            .arg("MKSTREAM")
            .query(&mut connection);
        match created {
            Ok(()) => {
                tracing::info!(stream = %s.stream, group = %s.group, "redis: created the consumer group at {start}")
            }
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => {
                return Err(redis_error(
                    &format!("cannot create group '{}' on '{}'", s.group, s.stream),
                    &e,
                ));
            }
        }
        let end = match s.bounded {
            false => None,
            true => {
                let last: Vec<StreamId> = redis::cmd("XREVRANGE")
                    .arg(&s.stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query::<redis::streams::StreamRangeReply>(&mut connection)
                    .map_err(|e| {
                        redis_error(&format!("cannot read the end of '{}'", s.stream), &e)
                    })?
                    .ids;
                Some(last.first().and_then(|e| parse_id(&e.id)).unwrap_or((0, 0)))
            }
        };
        Ok(vec![Split {
            id: format!("redis {}", s.stream),
            position: Position { last: None, end }.encode(),
            size: None,
        }])
    }
}

struct RedisReader {
    source: RedisSource,
    connection: Option<redis::Connection>,
    decoder: Box<dyn Decoder>,
    bad: BadData,
    split: Option<usize>,
    at: Position,
    /// Reading the consumer's pending entries after this id (a restore),
    /// before new ones.
    replaying: Option<EntryId>,
    /// Entries handed over and not yet acknowledged, in order.
    delivered: VecDeque<EntryId>,
    /// Entries read while waiting, not yet handed over.
    stash: Vec<StreamId>,
    /// An entry after the end was read: the split is done.
    past_end: bool,
    /// The job takes checkpoints: a split read to its end waits for one to
    /// cover its last entries, and acknowledges them, before it finishes.
    checkpointing: bool,
    read: u64,
}

impl RedisReader {
    fn connection(&mut self) -> OpResult<&mut redis::Connection> {
        if self.connection.is_none() {
            self.connection = Some(connect(&self.source.client)?);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| OperatorError::Internal("redis: no connection".into()))
    }

    /// `XREADGROUP` after `from` (`>`: new entries), waiting up to
    /// `block` for some.
    fn read(&mut self, from: &str, block: Option<Duration>) -> OpResult<Vec<StreamId>> {
        let s = self.source.clone();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&s.group)
            .arg(&s.consumer)
            .arg("COUNT")
            .arg(COUNT);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&s.stream).arg(from);
        let reply: Option<StreamReadReply> = cmd.query(self.connection()?).map_err(|e| {
            self.connection = None;
            redis_error(&format!("cannot read '{}'", s.stream), &e)
        })?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect())
    }

    /// The records of `entries`: a field's value, or the fields as a JSON
    /// object.
    fn records(&self, entries: &[StreamId]) -> Records {
        let mut records = Records::default();
        for entry in entries {
            match &self.source.field {
                Some(field) => match entry.map.get(field) {
                    Some(Value::BulkString(bytes)) => records.push(bytes),
                    Some(Value::SimpleString(text)) => records.push(text.as_bytes()),
                    _ => records.push(b""),
                },
                None => records.push(&fields_as_json(entry)),
            }
        }
        records
    }

    /// Hands `entries` over as rows (and bad records), or nothing if
    /// none of them holds a row.
    fn hand_over(&mut self, split: usize, entries: Vec<StreamId>) -> OpResult<Option<Poll>> {
        let ids: Vec<EntryId> = entries.iter().filter_map(|e| parse_id(&e.id)).collect();
        let Some(&last) = ids.last() else {
            return Ok(None);
        };
        let records = self.records(&entries);
        let stream = &self.source.stream;
        let polled = decode_messages(self.decoder.as_mut(), &self.bad, split, &records, |i| {
            let id = entries.get(i).map_or("?", |e| e.id.as_str());
            MessageAt {
                partition: format!("{stream} {id}"),
                offset: None,
                timestamp: ids.get(i).map(|id| id.0 as i64),
                described: format!("redis stream '{stream}' entry {id}"),
            }
        })?;
        self.read += ids.len() as u64;
        self.delivered.extend(ids);
        self.at.last = Some(last);
        Ok(polled)
    }

    /// `XACK`s `ids`.
    fn acknowledge(&mut self, ids: Vec<EntryId>) -> OpResult<()> {
        let (stream, group) = (self.source.stream.clone(), self.source.group.clone());
        let ids: Vec<String> = ids.into_iter().map(id_text).collect();
        for chunk in ids.chunks(COUNT) {
            redis::cmd("XACK")
                .arg(&stream)
                .arg(&group)
                .arg(chunk)
                .query::<i64>(self.connection()?)
                .map_err(|e| {
                    redis_error(&format!("cannot acknowledge entries of '{stream}'"), &e)
                })?;
        }
        Ok(())
    }

    /// Entries to hand over now, without waiting: those read while
    /// waiting, the pending ones of a restore, or new ones. `None`: the
    /// split is read to its end.
    fn next_entries(&mut self) -> OpResult<Option<Vec<StreamId>>> {
        if !self.stash.is_empty() {
            return Ok(Some(std::mem::take(&mut self.stash)));
        }
        if let Some(after) = self.replaying {
            let entries = self.read(&id_text(after), None)?;
            self.replaying = entries.last().and_then(|e| parse_id(&e.id));
            // Those up to the restored position were in a complete
            // checkpoint, and their acknowledgement was cut short.
            let covered = |e: &StreamId| {
                parse_id(&e.id).is_some_and(|id| self.at.last.is_some_and(|last| id <= last))
            };
            let (old, new): (Vec<StreamId>, Vec<StreamId>) = entries.into_iter().partition(covered);
            self.acknowledge(old.iter().filter_map(|e| parse_id(&e.id)).collect())?;
            return Ok(Some(new));
        }
        let done = self.past_end
            || self
                .at
                .end
                .is_some_and(|end| self.at.last.is_some_and(|last| last >= end));
        if done {
            return Ok(None);
        }
        let entries = self.read(">", None)?;
        if entries.is_empty() && self.at.end.is_some() {
            // Every entry up to the end was delivered to the group.
            return Ok(None);
        }
        Ok(Some(entries))
    }
}

impl SourceReader for RedisReader {
    fn name(&self) -> String {
        format!("redis stream {}", self.source.stream)
    }

    fn open(&mut self, ctx: &eddy_operators::operator::OperatorContext) -> OpResult<()> {
        self.checkpointing = ctx.checkpoints.enabled();
        Ok(())
    }

    fn add_split(&mut self, split: usize, assigned: Split) -> OpResult<()> {
        self.at = Position::decode(&assigned.position)?;
        self.split = Some(split);
        // Entries delivered before a restart are in the consumer's
        // pending list: those after the position are read again.
        self.replaying = Some((0, 0));
        Ok(())
    }

    fn poll(&mut self) -> OpResult<Poll> {
        let Some(split) = self.split else {
            return Ok(Poll::Pending);
        };
        let Some(mut entries) = self.next_entries()? else {
            // Read to its end: finished once its entries are acknowledged,
            // after a checkpoint covers them (a bounded job's last
            // checkpoint comes after its sources end, too late for that).
            if self.checkpointing && !self.delivered.is_empty() {
                return Ok(Poll::Pending);
            }
            let rest = std::mem::take(&mut self.delivered).into();
            self.acknowledge(rest)?;
            self.split = None;
            return Ok(Poll::Finished(split));
        };
        if let Some(end) = self.at.end {
            let before = entries.len();
            // Entries after the end stay pending for this consumer.
            entries.retain(|e| parse_id(&e.id).is_some_and(|id| id <= end));
            self.past_end |= entries.len() < before;
        }
        Ok(self.hand_over(split, entries)?.unwrap_or(Poll::Pending))
    }

    fn wait(&mut self, timeout: Duration) {
        let read_to_end = self.past_end
            || self
                .at
                .end
                .is_some_and(|end| self.at.last.is_some_and(|last| last >= end));
        if self.split.is_none() || self.replaying.is_some() || !self.stash.is_empty() || read_to_end
        {
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return;
        }
        match self.read(">", Some(timeout.min(Duration::from_millis(200)))) {
            Ok(entries) => self.stash = entries,
            // The next poll reads again and fails the job if it must.
            Err(e) => tracing::debug!("{e}"),
        }
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        self.split
            .map(|s| (s, self.at.encode()))
            .into_iter()
            .collect()
    }

    fn checkpoint_complete(&mut self, checkpoint: u64, positions: &[(usize, Vec<u8>)]) {
        let Some(upto) = positions
            .iter()
            .find_map(|(_, p)| Position::decode(p).ok()?.last)
        else {
            return;
        };
        let mut covered = Vec::new();
        while self.delivered.front().is_some_and(|&id| id <= upto) {
            covered.extend(self.delivered.pop_front());
        }
        if let Err(e) = self.acknowledge(covered) {
            // Left pending: a restore acknowledges them when it reads the
            // consumer's pending entries.
            tracing::warn!("after checkpoint {checkpoint}: {e}");
        }
    }

    fn progress(&self) -> u64 {
        self.read
    }
}
