//! Materialized views: a job's changelog folded into the rows it leaves,
//! kept current in the server, readable at once and followable live.
//!
//! ```text
//!  job ─► ViewWriter (a sink subtask) ─ pre-commit(checkpoint) ─► <views>/<v>/<subtask>.log  (durable)
//!                                                               └► staged in the View
//!        checkpoint complete ─► ViewCommitter ─► publish: rows updated, changes to subscribers
//!  restore from checkpoint N ─► the log is cut after N and replayed: the rows as of N
//! ```
//!
//! A reader never sees a change that a restore would take back: changes
//! become visible when their checkpoint completes (exactly-once).
//! Subscribers get changes through a bounded broadcast: one that falls
//! behind is told so and dropped; the job never waits for it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{Int8Type, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use eddy_connectors::MaterializingSink;
use eddy_connectors::options::{OptionDecl, Options};
use eddy_connectors::registry::{Connector, ConnectorContext};
use eddy_operators::sink::{Committer, SinkCommit};
use eddy_operators::updating::{OP_COLUMN, OP_DELETE, OP_UPDATE_AFTER, OP_UPDATE_BEFORE};
use eddy_operators::{DeliveryGuarantee, OperatorContext, OperatorError, Sink, SinkProvider};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Changes kept for clients that reconnect (`Last-Event-ID`).
const RETAINED: usize = 10_000;
/// Changes a subscriber may fall behind by before it is dropped.
pub const SUBSCRIBER_BUFFER: usize = 4096;

/// One change, as subscribers get it.
#[derive(Debug, Clone)]
pub enum Change {
    Row {
        seq: u64,
        op: &'static str,
        row: Arc<Value>,
    },
    /// The view went back to a checkpoint (its job was restored): start
    /// again from a snapshot.
    Reset { seq: u64 },
}

/// How a subscriber catches up before the live changes.
#[derive(Debug)]
pub struct Catchup {
    /// Retained changes after the client's last one.
    pub replay: Vec<Change>,
    /// Or the current rows, to send as `+I` changes numbered `seq`: kept
    /// as Arrow and turned into JSON a few at a time as they are sent, so
    /// that many subscribers joining a large view at once do not hold a
    /// JSON copy of it each.
    pub snapshot: Option<RecordBatch>,
    /// The number of the last change before the live ones.
    pub seq: u64,
    pub receiver: broadcast::Receiver<Change>,
}

/// Every view of a server.
#[derive(Debug)]
pub struct Views {
    root: PathBuf,
    /// Tells a client's `Last-Event-ID` of an earlier server run from one
    /// of this run.
    generation: u64,
    views: Mutex<BTreeMap<String, Arc<View>>>,
}

impl Views {
    pub fn new(root: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            root,
            generation: eddy_operators::metrics::unix_ms(),
            views: Mutex::new(BTreeMap::new()),
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<View>>> {
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Arc<View>> {
        self.map().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    /// The view `name` of rows `schema` (its `_op` column aside), made on
    /// first use.
    fn open(&self, name: &str, schema: &SchemaRef) -> Result<Arc<View>, OperatorError> {
        let schema = MaterializingSink::output_schema(schema);
        let mut map = self.map();
        if let Some(view) = map.get(name).filter(|v| v.schema == schema) {
            return Ok(view.clone());
        }
        let view = Arc::new(View::new(
            name,
            schema,
            self.root.join(name),
            self.generation,
        )?);
        map.insert(name.to_string(), view.clone());
        Ok(view)
    }

    /// The directory of view `name`'s logs.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A view whose job does not run (stopped or cancelled before the
    /// server restarted): its rows as of the job's last checkpoint
    /// `checkpoint`, rebuilt from its logs, so that it can still be
    /// queried and followed. A view that never logged a change stays
    /// unknown (its columns are in its logs).
    pub fn reopen(&self, name: &str, checkpoint: u64) -> Result<(), OperatorError> {
        let dir = self.dir(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let subtasks: Vec<usize> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        let Some(schema) = subtasks
            .iter()
            .find_map(|s| first_record_schema(&log_path(&dir, *s)))
        else {
            return Ok(());
        };
        let view = self.open(name, &schema)?;
        for subtask in subtasks {
            view.restore(subtask, checkpoint)?;
        }
        Ok(())
    }

    /// Forgets a view and deletes its logs.
    pub fn drop_view(&self, name: &str) {
        self.map().remove(name);
        let _ = std::fs::remove_dir_all(self.root.join(name));
    }
}

/// One view: its rows (per sink subtask), the changes staged for
/// checkpoints not yet complete, the recent changes, and subscribers.
#[derive(Debug)]
pub struct View {
    pub name: String,
    /// The rows' columns (without `_op`).
    pub schema: SchemaRef,
    dir: PathBuf,
    generation: u64,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Change>,
}

#[derive(Debug)]
struct Inner {
    converter: RowConverter,
    /// Each sink subtask's rows, with how many times each is there.
    parts: BTreeMap<usize, BTreeMap<OwnedRow, i64>>,
    /// Written at a checkpoint's barrier, published when it completes:
    /// the changes, and where the subtask's log ends after them.
    staged: BTreeMap<(usize, u64), (RecordBatch, u64)>,
    /// How many bytes of each subtask's log are committed: jobs that read
    /// the view read its logs up to there (see `view_source.rs`). Known
    /// once the subtask restored or published in this server run.
    published: BTreeMap<usize, u64>,
    /// The latest changes, oldest first.
    retained: VecDeque<Change>,
    seq: u64,
}

impl View {
    fn new(
        name: &str,
        schema: SchemaRef,
        dir: PathBuf,
        generation: u64,
    ) -> Result<Self, OperatorError> {
        let converter = RowConverter::new(
            schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(Self {
            name: name.to_string(),
            schema,
            dir,
            generation,
            inner: Mutex::new(Inner {
                converter,
                parts: BTreeMap::new(),
                staged: BTreeMap::new(),
                published: BTreeMap::new(),
                retained: VecDeque::new(),
                seq: 0,
            }),
            events: broadcast::channel(SUBSCRIBER_BUFFER).0,
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An event id: this server run and a change's number.
    pub fn event_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.generation)
    }

    /// The change number of an event id of this run.
    pub fn parse_event_id(&self, id: &str) -> Option<u64> {
        let (generation, seq) = id.split_once('-')?;
        (generation.parse::<u64>().ok()? == self.generation)
            .then(|| seq.parse().ok())
            .flatten()
    }

    /// The current rows, and the number of the last change in them.
    pub fn snapshot(&self) -> Result<(RecordBatch, u64), OperatorError> {
        let inner = self.inner();
        Ok((snapshot_of(&inner, &self.schema)?, inner.seq))
    }

    /// How many rows the view holds.
    pub fn len(&self) -> usize {
        let inner = self.inner();
        let counts = inner.parts.values().flat_map(|part| part.values());
        counts.map(|n| (*n).max(0) as usize).sum()
    }

    /// A subscription from a client's last event: the changes after it if
    /// they are still retained, else the current rows (sent as `+I`
    /// changes); then the live ones from the receiver.
    pub fn subscribe(&self, last: Option<u64>) -> Result<Catchup, OperatorError> {
        let inner = self.inner();
        let receiver = self.events.subscribe();
        let oldest = inner.retained.front().map_or(inner.seq + 1, change_seq);
        if let Some(last) = last.filter(|l| *l + 1 >= oldest && *l <= inner.seq) {
            let replay = inner
                .retained
                .iter()
                .filter(|c| change_seq(c) > last)
                .cloned()
                .collect();
            return Ok(Catchup {
                replay,
                snapshot: None,
                seq: inner.seq,
                receiver,
            });
        }
        Ok(Catchup {
            replay: Vec::new(),
            snapshot: Some(snapshot_of(&inner, &self.schema)?),
            seq: inner.seq,
            receiver,
        })
    }

    fn stage(&self, subtask: usize, checkpoint: u64, batch: RecordBatch, log_end: u64) {
        self.inner()
            .staged
            .insert((subtask, checkpoint), (batch, log_end));
    }

    /// How many bytes of subtask `subtask`'s log are committed, once known.
    pub fn published(&self, subtask: usize) -> Option<u64> {
        self.inner().published.get(&subtask).copied()
    }

    /// Makes a subtask's changes up to `checkpoint` visible.
    fn publish(&self, subtask: usize, checkpoint: u64) -> Result<(), OperatorError> {
        let mut inner = self.inner();
        let due: Vec<(usize, u64)> = inner
            .staged
            .range((subtask, 0)..=(subtask, checkpoint))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some((batch, log_end)) = inner.staged.remove(&key) {
                self.apply(&mut inner, subtask, &batch, true)?;
                inner.published.insert(subtask, log_end);
            }
        }
        Ok(())
    }

    /// Folds a changelog batch into a subtask's rows; with `announce`,
    /// tells subscribers the batch's net change (see [`net_changes`]).
    fn apply(
        &self,
        inner: &mut Inner,
        subtask: usize,
        batch: &RecordBatch,
        announce: bool,
    ) -> Result<(), OperatorError> {
        let ops = batch
            .schema()
            .index_of(OP_COLUMN)
            .ok()
            .map(|i| batch.column(i).as_primitive::<Int8Type>().clone());
        let op = |i: usize| ops.as_ref().map_or(0, |o| o.value(i));
        let rows_batch = batch.project(
            &(0..batch.num_columns())
                .filter(|i| batch.schema().field(*i).name() != OP_COLUMN)
                .collect::<Vec<_>>(),
        )?;
        let rows = inner.converter.convert_columns(rows_batch.columns())?;
        for i in 0..rows_batch.num_rows() {
            let row = rows.row(i).owned();
            if removes(op(i)) {
                remove_row(&mut inner.parts, subtask, &row);
            } else {
                *inner
                    .parts
                    .entry(subtask)
                    .or_default()
                    .entry(row)
                    .or_insert(0) += 1;
            }
        }
        if !announce {
            return Ok(());
        }
        let net = net_changes(&rows, op);
        let indices = UInt32Array::from_iter_values(net.iter().map(|i| *i as u32));
        let changed = take_record_batch(&rows_batch, &indices)?;
        for (i, json) in net.into_iter().zip(json_rows(&changed)?) {
            inner.seq += 1;
            let change = Change::Row {
                seq: inner.seq,
                op: match op(i) {
                    OP_UPDATE_BEFORE => "-U",
                    OP_UPDATE_AFTER => "+U",
                    OP_DELETE => "-D",
                    _ => "+I",
                },
                row: Arc::new(json),
            };
            self.announce(inner, change);
        }
        Ok(())
    }

    fn announce(&self, inner: &mut Inner, change: Change) {
        if inner.retained.len() == RETAINED {
            inner.retained.pop_front();
        }
        inner.retained.push_back(change.clone());
        // No receiver is not an error: nobody is watching.
        let _ = self.events.send(change);
    }

    pub fn log_path(&self, subtask: usize) -> PathBuf {
        log_path(&self.dir, subtask)
    }

    /// Appends a checkpoint's changes to a subtask's log, durably; where
    /// the log ends after them.
    fn log(
        &self,
        subtask: usize,
        checkpoint: u64,
        batch: &RecordBatch,
    ) -> Result<u64, OperatorError> {
        let path = self.log_path(subtask);
        let mut bytes = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()?;
        }
        let mut record = Vec::with_capacity(bytes.len() + RECORD_HEADER);
        record.extend_from_slice(&checkpoint.to_le_bytes());
        record.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        record.extend_from_slice(&bytes);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        file.write_all(&record).map_err(|e| io_error(&path, e))?;
        file.sync_data().map_err(|e| io_error(&path, e))?;
        let end = file.metadata().map_err(|e| io_error(&path, e))?.len();
        Ok(end)
    }

    /// A subtask's rows as of `checkpoint`: its log is cut after that
    /// checkpoint (what came later was never committed) and replayed.
    /// Subscribers are told to start again.
    fn restore(&self, subtask: usize, checkpoint: u64) -> Result<(), OperatorError> {
        self.rebuild(subtask, checkpoint, u64::MAX)
    }

    /// A subtask's rows from the first `committed` bytes of its log (what
    /// a checkpoint recorded as its end), the rest cut: a finished job's
    /// view, rebuilt without running the job.
    fn restore_committed(&self, subtask: usize, committed: u64) -> Result<(), OperatorError> {
        self.rebuild(subtask, u64::MAX, committed)
    }

    /// A subtask's rows from its log's records up to `checkpoint` and
    /// within the first `committed` bytes; the rest of the log is cut.
    fn rebuild(
        &self,
        subtask: usize,
        checkpoint: u64,
        committed: u64,
    ) -> Result<(), OperatorError> {
        let path = self.log_path(subtask);
        let mut data = Vec::new();
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut data).map_err(|e| io_error(&path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, e)),
        }
        let mut at = 0;
        let mut batches = Vec::new();
        while let Some((cp, len)) = record_header(&data[at..]) {
            // A record cut short by a crash, or of a later checkpoint.
            let end = at + RECORD_HEADER + len;
            if cp > checkpoint || end > data.len() || end as u64 > committed {
                break;
            }
            batches.extend(decode_record(&data[at + RECORD_HEADER..][..len])?);
            at += RECORD_HEADER + len;
        }
        if at < data.len() {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_error(&path, e))?;
            file.set_len(at as u64).map_err(|e| io_error(&path, e))?;
            file.sync_all().map_err(|e| io_error(&path, e))?;
        }
        let mut inner = self.inner();
        inner.parts.remove(&subtask);
        inner.staged.retain(|(s, _), _| *s != subtask);
        inner.published.insert(subtask, at as u64);
        for batch in &batches {
            self.apply(&mut inner, subtask, batch, false)?;
        }
        inner.seq += 1;
        inner.retained.clear();
        let reset = Change::Reset { seq: inner.seq };
        self.announce(&mut inner, reset);
        Ok(())
    }
}

/// A log record: the checkpoint (u64 LE), the length of what follows (u64
/// LE), then the changes as an Arrow IPC stream.
pub const RECORD_HEADER: usize = 16;

/// Subtask `subtask`'s log in view directory `dir`.
pub fn log_path(dir: &Path, subtask: usize) -> PathBuf {
    dir.join(format!("{subtask}.log"))
}

/// The checkpoint and body length of the record `data` starts with, if
/// its header is whole.
pub fn record_header(data: &[u8]) -> Option<(u64, usize)> {
    let checkpoint = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    let len = u64::from_le_bytes(data.get(8..RECORD_HEADER)?.try_into().ok()?);
    Some((checkpoint, len as usize))
}

/// The columns of the changes in a log's first record, if it has one.
fn first_record_schema(path: &Path) -> Option<SchemaRef> {
    let data = std::fs::read(path).ok()?;
    let (_, len) = record_header(&data)?;
    let body = data.get(RECORD_HEADER..RECORD_HEADER + len)?;
    Some(StreamReader::try_new(body, None).ok()?.schema())
}

/// The changes of a record's body.
pub fn decode_record(body: &[u8]) -> Result<Vec<RecordBatch>, OperatorError> {
    let reader = StreamReader::try_new(body, None)?;
    reader.map(|b| b.map_err(OperatorError::from)).collect()
}

/// Whether a changelog op takes a row away (`-U`, `-D`).
fn removes(op: i8) -> bool {
    op == OP_UPDATE_BEFORE || op == OP_DELETE
}

/// A batch's changes netted per row, as the positions of the changes to
/// announce: a row added and taken away within the batch is not
/// announced at all, so an updating aggregate tells its subscribers each
/// key's change once per checkpoint, not once per input batch. A row
/// whose count went down (up) by `n` is announced `n` times, by its last
/// removal (addition) and with that change's op. Removals come first, so
/// that a client that keys rows never takes away a row just added.
fn net_changes(rows: &Rows, op: impl Fn(usize) -> i8) -> Vec<usize> {
    // Per distinct row: its net count, its last removal and last addition.
    let mut net: HashMap<Row<'_>, (i64, usize, usize)> = HashMap::new();
    for i in 0..rows.num_rows() {
        let entry = net.entry(rows.row(i)).or_insert((0, i, i));
        if removes(op(i)) {
            entry.0 -= 1;
            entry.1 = i;
        } else {
            entry.0 += 1;
            entry.2 = i;
        }
    }
    let mut removals = Vec::new();
    let mut additions = Vec::new();
    for (count, last_removal, last_addition) in net.into_values() {
        let n = count.unsigned_abs() as usize;
        match count.signum() {
            -1 => removals.extend(std::iter::repeat_n(last_removal, n)),
            1 => additions.extend(std::iter::repeat_n(last_addition, n)),
            _ => {}
        }
    }
    removals.sort_unstable();
    additions.sort_unstable();
    removals.extend(additions);
    removals
}

fn change_seq(change: &Change) -> u64 {
    match change {
        Change::Row { seq, .. } | Change::Reset { seq } => *seq,
    }
}

/// Takes one `row` away: from `subtask`'s rows, or any other's if a
/// retraction was routed elsewhere than its row.
fn remove_row(
    parts: &mut BTreeMap<usize, BTreeMap<OwnedRow, i64>>,
    subtask: usize,
    row: &OwnedRow,
) {
    let holder = if parts.get(&subtask).is_some_and(|p| p.contains_key(row)) {
        Some(subtask)
    } else {
        parts
            .iter()
            .find(|(_, p)| p.contains_key(row))
            .map(|(s, _)| *s)
    };
    let Some(part) = holder.and_then(|s| parts.get_mut(&s)) else {
        tracing::warn!("a retraction of a row the view does not hold: ignored");
        return;
    };
    if let Some(count) = part.get_mut(row) {
        *count -= 1;
        if *count <= 0 {
            part.remove(row);
        }
    }
}

fn snapshot_of(inner: &Inner, schema: &SchemaRef) -> Result<RecordBatch, OperatorError> {
    let rows = inner.parts.values().flat_map(|part| {
        part.iter()
            .flat_map(|(row, n)| std::iter::repeat_n(row.row(), (*n).max(0) as usize))
    });
    let columns = inner.converter.convert_rows(rows)?;
    if schema.fields().is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Each row of `batch` as a JSON object (nulls written as null).
pub fn json_rows(batch: &RecordBatch) -> Result<Vec<Value>, OperatorError> {
    use datafusion::arrow::json::writer::{JsonArray, WriterBuilder};
    let mut buf = Vec::new();
    {
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, JsonArray>(&mut buf);
        writer.write(batch)?;
        writer.finish()?;
    }
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(|e| OperatorError::Internal(format!("view rows: {e}")))
}

fn io_error(path: &Path, e: std::io::Error) -> OperatorError {
    OperatorError::Internal(format!("{}: {e}", path.display()))
}

/// The `materialized-view` connector: the sink of a CREATE MATERIALIZED
/// VIEW's job. It is registered by the server only.
#[derive(Debug)]
pub struct ViewConnector {
    pub views: Arc<Views>,
}

impl Connector for ViewConnector {
    fn name(&self) -> &'static str {
        eddy_planner::MATERIALIZED_VIEW
    }

    fn help(&self) -> &'static str {
        "the current rows of a materialized view, kept by `eddy server` (made by CREATE MATERIALIZED VIEW)"
    }

    fn options(&self) -> Vec<OptionDecl> {
        Vec::new()
    }

    fn is_source(&self) -> bool {
        true
    }

    fn is_sink(&self) -> bool {
        true
    }

    /// Another job reading the view: its changes (see `view_source.rs`).
    fn source(
        &self,
        ctx: &ConnectorContext<'_>,
    ) -> eddy_connectors::Result<Arc<dyn eddy_operators::SourceProvider>> {
        Ok(Arc::new(super::view_source::ViewSource {
            views: self.views.clone(),
            name: ctx.name.to_string(),
            schema: ctx.schema.clone(),
        }))
    }

    fn sink(&self, ctx: &ConnectorContext<'_>) -> eddy_connectors::Result<Arc<dyn SinkProvider>> {
        let view = self
            .views
            .open(ctx.name, ctx.schema)
            .map_err(|e| eddy_connectors::ConnectorError::Config(e.to_string()))?;
        Ok(Arc::new(ViewSink { view }))
    }

    fn guarantee(&self, _options: &Options) -> DeliveryGuarantee {
        DeliveryGuarantee::ExactlyOnce
    }
}

#[derive(Debug)]
struct ViewSink {
    view: Arc<View>,
}

impl SinkProvider for ViewSink {
    fn writer(&self) -> eddy_operators::Result<Box<dyn Sink>> {
        Ok(Box::new(ViewWriter {
            view: self.view.clone(),
            subtask: 0,
            pending: Vec::new(),
            log_end: 0,
        }))
    }

    fn committer(&self) -> Option<Arc<dyn Committer>> {
        Some(Arc::new(ViewCommitter {
            view: self.view.clone(),
        }))
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        DeliveryGuarantee::ExactlyOnce
    }
}

/// One sink subtask of a view's job.
struct ViewWriter {
    view: Arc<View>,
    subtask: usize,
    pending: Vec<RecordBatch>,
    /// Where its log ends: the position each checkpoint keeps.
    log_end: u64,
}

impl Sink for ViewWriter {
    fn name(&self) -> String {
        format!("view {}", self.view.name)
    }

    fn open(&mut self, ctx: &OperatorContext) -> eddy_operators::Result<()> {
        self.subtask = ctx.subtask;
        Ok(())
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> eddy_operators::Result<()> {
        if batch.num_rows() > 0 {
            self.pending.push(batch.clone());
        }
        Ok(())
    }

    /// Its position in every checkpoint is where its log ends, so that a
    /// finished job's view can be rebuilt from the logs alone.
    fn pre_commit(&mut self, checkpoint: u64, _last: bool) -> eddy_operators::Result<SinkCommit> {
        let position = |end: u64| Some(end.to_le_bytes().to_vec());
        let Some(first) = self.pending.first() else {
            return Ok(SinkCommit {
                position: position(self.log_end),
                committable: None,
            });
        };
        let batch = concat_batches(&first.schema(), &self.pending)?;
        self.pending.clear();
        self.log_end = self.view.log(self.subtask, checkpoint, &batch)?;
        self.view
            .stage(self.subtask, checkpoint, batch, self.log_end);
        Ok(SinkCommit {
            position: position(self.log_end),
            committable: Some(json!({"subtask": self.subtask, "checkpoint": checkpoint})),
        })
    }

    /// With a position, the committer rebuilt this subtask's rows from its
    /// log up to it already (see [`ViewCommitter::recover`]); without one
    /// (a checkpoint from before positions were kept, or a fresh start),
    /// the log is cut after `checkpoint` and replayed here.
    fn recover(&mut self, checkpoint: u64, position: Option<&[u8]>) -> eddy_operators::Result<()> {
        self.pending.clear();
        match position.and_then(|p| <[u8; 8]>::try_from(p).ok()) {
            Some(end) => self.log_end = u64::from_le_bytes(end),
            None => {
                self.view.restore(self.subtask, checkpoint)?;
                self.log_end = self.view.published(self.subtask).unwrap_or(0);
            }
        }
        Ok(())
    }
}

/// Publishes a view's staged changes when their checkpoint completes.
#[derive(Debug)]
struct ViewCommitter {
    view: Arc<View>,
}

impl Committer for ViewCommitter {
    fn commit(&self, committables: &[Value]) -> eddy_operators::Result<()> {
        for c in committables {
            let (Some(subtask), Some(checkpoint)) =
                (c["subtask"].as_u64(), c["checkpoint"].as_u64())
            else {
                return Err(OperatorError::Internal(format!(
                    "a bad view committable: {c}"
                )));
            };
            self.view.publish(subtask as usize, checkpoint)?;
        }
        Ok(())
    }

    /// The rows as of the checkpoint, from each writer's log up to the end
    /// the checkpoint recorded: a finished job's view has them without
    /// running again, and a running job's writers start from them.
    fn recover(
        &self,
        _committables: &[Value],
        positions: &BTreeMap<usize, Vec<u8>>,
    ) -> eddy_operators::Result<()> {
        for (subtask, position) in positions {
            let Ok(end) = <[u8; 8]>::try_from(position.as_slice()) else {
                return Err(OperatorError::Internal(format!(
                    "a bad view position for subtask {subtask}"
                )));
            };
            self.view
                .restore_committed(*subtask, u64::from_le_bytes(end))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::DataType;
    use eddy_operators::updating::OP_INSERT;
    use proptest::prelude::*;

    /// The rows `changes` leave in a multiset of rows, applied in order.
    fn fold(changes: impl IntoIterator<Item = (i64, i8)>) -> BTreeMap<i64, i64> {
        let mut rows = BTreeMap::new();
        for (row, op) in changes {
            *rows.entry(row).or_insert(0) += if removes(op) { -1 } else { 1 };
        }
        rows.retain(|_, n| *n != 0);
        rows
    }

    proptest! {
        /// The net changes leave the rows all the changes leave, are no
        /// more than them, take away before they add, and keep ops.
        #[test]
        fn net_changes_leave_the_same_rows(
            changes in proptest::collection::vec(
                (0i64..6, prop_oneof![
                    Just(OP_INSERT), Just(OP_UPDATE_BEFORE), Just(OP_UPDATE_AFTER), Just(OP_DELETE)
                ]),
                0..60,
            )
        ) {
            let values = Int64Array::from_iter_values(changes.iter().map(|c| c.0));
            let converter = RowConverter::new(vec![SortField::new(DataType::Int64)]).unwrap();
            let rows = converter.convert_columns(&[Arc::new(values)]).unwrap();
            let net = net_changes(&rows, |i| changes[i].1);
            let announced: Vec<(i64, i8)> = net.iter().map(|i| changes[*i]).collect();
            prop_assert_eq!(fold(announced.iter().copied()), fold(changes.iter().copied()));
            prop_assert!(announced.len() <= changes.len());
            let first_addition = announced.iter().position(|c| !removes(c.1));
            if let Some(at) = first_addition {
                prop_assert!(announced[at..].iter().all(|c| !removes(c.1)));
            }
        }
    }

    #[test]
    fn an_updated_key_is_announced_once() {
        // -U 1, +U 2, -U 2, +U 3: the row 1 went, the row 3 came.
        let changes = [
            (1i64, OP_UPDATE_BEFORE),
            (2, OP_UPDATE_AFTER),
            (2, OP_UPDATE_BEFORE),
            (3, OP_UPDATE_AFTER),
        ];
        let values = Int64Array::from_iter_values(changes.iter().map(|c| c.0));
        let converter = RowConverter::new(vec![SortField::new(DataType::Int64)]).unwrap();
        let rows = converter.convert_columns(&[Arc::new(values)]).unwrap();
        assert_eq!(net_changes(&rows, |i| changes[i].1), vec![0, 3]);
    }
}
