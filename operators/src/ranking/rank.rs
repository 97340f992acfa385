//! Top-N and deduplication: `ROW_NUMBER()`, `RANK()` or `DENSE_RANK()`
//! `OVER (PARTITION BY p ORDER BY o)` kept where the rank is at most N.
//!
//! Each partition keeps its rows sorted by the ORDER BY key (rows with
//! equal keys in arrival order). Three modes:
//!
//! ```text
//!   Updating      the visible top N changes as rows come and go: a changelog
//!                 (`_op` last). A row that enters pushes the last one out:
//!                   -U out, +U in  (-D or +I when only one happens)
//!                 With the rank in the output, every row whose rank moved is
//!                 retracted with its old rank and emitted with its new one.
//!   WindowClose   the partition holds one window (its keys include
//!                 window_end): its top N are emitted once, append-only,
//!                 when the watermark reaches window_end - 1; then dropped.
//!   FirstByTime   ROW_NUMBER ordered by the event-time attribute ascending
//!                 (keep-first deduplication when N = 1): a row is final
//!                 once the watermark passes its time, so it is emitted then,
//!                 append-only, and later rows of a full partition are dropped.
//! ```
//!
//! An append-only input keeps only the rows that rank within N (the others
//! can never come back); a changelog input keeps every row, so that a
//! retraction lets the next one move up. In the append-only modes a row
//! that is already behind the watermark is late: it is dropped and counted.
//!
//! NULLs sort first in ascending order and last in descending order (as in
//! Flink). At each checkpoint barrier the partitions changed since the
//! last one are written to the state backend (incrementally), keyed by key
//! group and partition key, with the watermark as the subtask's metadata.

use std::cmp::Reverse;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int8Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::RowConverter;
use serde::{Deserialize, Serialize};

use crate::operator::{Collector, Operator, OperatorContext};
use crate::partition::key_groups;
pub(crate) use crate::partitions::Entry;
use crate::partitions::{Converters, PartitionStore};
use crate::ttl::StateTtl;
use crate::updating::{OP_COLUMN, OP_DELETE, OP_INSERT, OP_UPDATE_AFTER, OP_UPDATE_BEFORE};
use crate::{OperatorError, Result};

/// How rows are numbered within a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RankFunction {
    /// 1, 2, 3, 4: ties in arrival order.
    RowNumber,
    /// 1, 2, 2, 4: ties share a rank, and leave a gap.
    Rank,
    /// 1, 2, 2, 3: ties share a rank, without gaps.
    DenseRank,
}

impl RankFunction {
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "row_number" => Some(RankFunction::RowNumber),
            "rank" => Some(RankFunction::Rank),
            "dense_rank" => Some(RankFunction::DenseRank),
            _ => None,
        }
    }

    pub fn as_sql(self) -> &'static str {
        match self {
            RankFunction::RowNumber => "ROW_NUMBER",
            RankFunction::Rank => "RANK",
            RankFunction::DenseRank => "DENSE_RANK",
        }
    }
}

/// When results are emitted (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RankMode {
    Updating,
    /// The input column holding each row's `window_end` (a partition key).
    WindowClose {
        window_end: usize,
    },
    /// The input column holding event time (the first ORDER BY key).
    FirstByTime {
        time: usize,
    },
    /// Ordered by processing time: the first N rows of each partition as
    /// they arrive, emitted at once; later ones are dropped.
    FirstSeen,
}

/// A Top-N over an input: which columns, which function, how many.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankSpec {
    pub function: RankFunction,
    /// Input columns of the partition key (empty: one partition).
    pub partition: Vec<usize>,
    /// Input columns of the ORDER BY key, each with `true` for DESC.
    pub order: Vec<(usize, bool)>,
    /// Rows with a rank of at most this are kept.
    pub limit: u64,
    /// The name of the rank column in the output, if it has one (after the
    /// input's columns).
    pub rank_column: Option<String>,
    /// The input's changelog column (its last), when it is updating.
    pub op_column: Option<usize>,
    pub mode: RankMode,
    /// Partitions idle this long (processing time, or event time) are dropped
    /// (`'table.exec.state.ttl'`; see [`crate::ttl`]). Not for
    /// `WindowClose`, whose state ends with each window.
    #[serde(default)]
    pub state_ttl_ms: Option<i64>,
    /// The time-to-live is event time: measured on the watermark
    /// (`'table.exec.state.ttl.time-domain' = 'event-time'`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_ttl_event_time: bool,
}

impl RankSpec {
    /// Only the `Updating` mode emits a changelog.
    pub fn emits_changelog(&self) -> bool {
        self.mode == RankMode::Updating
    }

    /// The input's columns (without `_op`), the rank if emitted, and `_op`
    /// if the output is a changelog.
    pub fn output_schema(&self, input: &Schema) -> SchemaRef {
        let width = self.op_column.unwrap_or(input.fields().len());
        let mut fields: Vec<Field> = input.fields()[..width]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if let Some(name) = &self.rank_column {
            fields.push(Field::new(name, DataType::Int64, false));
        }
        if self.emits_changelog() {
            fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        }
        Arc::new(Schema::new(fields))
    }
}

/// The ranks of the visible prefix of `entries` (those ranked at most
/// `limit`), into `out`.
fn visible_ranks(function: RankFunction, entries: &[Entry], limit: u64, out: &mut Vec<u64>) {
    out.clear();
    let mut rank = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let tie = i > 0 && entries[i - 1].key == e.key;
        rank = match function {
            RankFunction::RowNumber => i as u64 + 1,
            RankFunction::Rank if tie => rank,
            RankFunction::Rank => i as u64 + 1,
            RankFunction::DenseRank if tie => rank,
            RankFunction::DenseRank => rank + 1,
        };
        if rank > limit {
            return;
        }
        out.push(rank);
    }
}

/// Output rows being collected: row-format rows, their ranks and ops.
#[derive(Debug, Default)]
pub(crate) struct Emitted {
    data: Vec<u8>,
    ends: Vec<usize>,
    ranks: Vec<i64>,
    pub ops: Vec<i8>,
}

impl Emitted {
    pub fn push(&mut self, row: &[u8], rank: u64, op: i8) {
        self.data.extend_from_slice(row);
        self.ends.push(self.data.len());
        self.ranks.push(rank as i64);
        self.ops.push(op);
    }

    pub fn row(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }
}

/// How one insertion or removal changed a partition, for [`emit_change`].
enum Change<'a> {
    /// A row was inserted at this index.
    Inserted(usize),
    /// This row was removed from this index.
    Removed(usize, &'a Entry),
}

/// Emits the difference between the visible rows before a change (their
/// ranks `before`) and after it (`after`, over `entries` as they are now):
/// retractions first, then additions.
fn emit_change(
    entries: &[Entry],
    before: &[u64],
    after: &[u64],
    change: Change<'_>,
    with_rank: bool,
    out: &mut Emitted,
) {
    // Rows before the change keep their places and ranks.
    let (start, removed) = match change {
        Change::Inserted(at) => (at, None),
        Change::Removed(at, row) => (at, Some((at, row))),
    };
    // The entry that sits at index `k` now sat at `old(k)` before.
    let old = |k: usize| -> Option<usize> {
        match change {
            Change::Inserted(at) if k == at => None,
            Change::Inserted(at) if k > at => Some(k - 1),
            Change::Removed(at, _) if k >= at => Some(k + 1),
            _ => Some(k),
        }
    };
    let mut retract: Vec<(&[u8], u64)> = Vec::new();
    let mut add: Vec<(&[u8], u64)> = Vec::new();
    if let Some((at, row)) = removed
        && let Some(&r) = before.get(at)
    {
        retract.push((&row.row, r));
    }
    let end = after.len().max(before.len() + 1).min(entries.len());
    for (k, entry) in entries.iter().enumerate().take(end).skip(start) {
        let was = old(k).and_then(|o| before.get(o).copied());
        let is = after.get(k).copied();
        let moved = with_rank && was != is;
        match (was, is) {
            (Some(w), Some(i)) if moved => {
                retract.push((&entry.row, w));
                add.push((&entry.row, i));
            }
            (Some(w), None) => retract.push((&entry.row, w)),
            (None, Some(i)) => add.push((&entry.row, i)),
            _ => {}
        }
    }
    // As many retractions as additions pair up as updates; the rest are
    // deletions or insertions.
    let updates = retract.len().min(add.len());
    for (i, (row, rank)) in retract.into_iter().enumerate() {
        let op = if i < updates {
            OP_UPDATE_BEFORE
        } else {
            OP_DELETE
        };
        out.push(row, rank, op);
    }
    for (i, (row, rank)) in add.into_iter().enumerate() {
        let op = if i < updates {
            OP_UPDATE_AFTER
        } else {
            OP_INSERT
        };
        out.push(row, rank, op);
    }
}

/// The Top-N operator (see the module docs).
pub struct RankOperator {
    spec: RankSpec,
    /// Input columns that form a row (all but `_op`).
    width: usize,
    output: SchemaRef,
    partition_converter: Option<RowConverter>,
    order_converter: RowConverter,
    row_converter: RowConverter,
    store: PartitionStore,
    /// Scratch space for ranks before and after a change.
    before: Vec<u64>,
    after: Vec<u64>,
}

impl std::fmt::Debug for RankOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankOperator")
            .field("spec", &self.spec)
            .field("partitions", &self.store.partitions.len())
            .finish_non_exhaustive()
    }
}

impl RankOperator {
    pub fn try_new(input: &SchemaRef, spec: RankSpec) -> Result<Self> {
        let n = input.fields().len();
        if let Some(op) = spec.op_column {
            if op + 1 != n {
                return Err(OperatorError::Internal(
                    "a Top-N input's _op must be its last column".into(),
                ));
            }
            if spec.mode != RankMode::Updating {
                return Err(OperatorError::Internal(
                    "a window or first-rows Top-N needs an append-only input".into(),
                ));
            }
        }
        let width = spec.op_column.unwrap_or(n);
        let in_range = |c: usize| c < width;
        let mode_column = match spec.mode {
            RankMode::Updating | RankMode::FirstSeen => None,
            RankMode::WindowClose { window_end } => Some(window_end),
            RankMode::FirstByTime { time } => Some(time),
        };
        if !spec.partition.iter().copied().all(in_range)
            || !spec.order.iter().all(|&(c, _)| in_range(c))
            || !mode_column.is_none_or(in_range)
        {
            return Err(OperatorError::Internal(
                "a Top-N column is out of range".into(),
            ));
        }
        if spec.limit == 0 {
            return Err(OperatorError::Internal("a Top-N of 0 rows".into()));
        }
        let Converters {
            partition: partition_converter,
            order: order_converter,
            row: row_converter,
        } = Converters::new(input, &spec.partition, &spec.order, width)?;
        let output = spec.output_schema(input);
        let mut store = PartitionStore::new("Top-N");
        store.set_ttl(StateTtl::planned(
            spec.state_ttl_ms,
            spec.state_ttl_event_time,
        ));
        Ok(Self {
            spec,
            width,
            output,
            partition_converter,
            order_converter,
            row_converter,
            store,
            before: Vec::new(),
            after: Vec::new(),
        })
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// Measures the time-to-live on another clock (tests).
    pub fn with_state_ttl(mut self, ttl: Option<StateTtl>) -> Self {
        self.store.set_ttl(ttl);
        self
    }

    /// Drops partitions idle for the time-to-live, except first rows
    /// still waiting for the watermark; a window's partition never idles.
    fn expire_idle(&mut self) {
        let mode = self.spec.mode;
        self.store.expire_idle(|part| match mode {
            RankMode::Updating => false,
            RankMode::FirstByTime { .. } => !part.entries.is_empty(),
            RankMode::WindowClose { .. } | RankMode::FirstSeen => true,
        });
    }

    /// Turns collected rows into an output batch.
    fn collect(&self, emitted: Emitted, out: &mut Collector) -> Result<()> {
        if emitted.is_empty() {
            return Ok(());
        }
        let parser = self.row_converter.parser();
        let rows = (0..emitted.ends.len()).map(|i| parser.parse(emitted.row(i)));
        let mut columns = self.row_converter.convert_rows(rows)?;
        if self.spec.rank_column.is_some() {
            columns.push(Arc::new(Int64Array::from(emitted.ranks)));
        }
        if self.spec.emits_changelog() {
            columns.push(Arc::new(Int8Array::from(emitted.ops)));
        }
        out.collect(RecordBatch::try_new(self.output.clone(), columns)?);
        Ok(())
    }

    /// Applies one input row to its partition in the `Updating` mode.
    fn update(&mut self, pkey: &[u8], entry: Entry, accumulate: bool, emitted: &mut Emitted) {
        let function = self.spec.function;
        let limit = self.spec.limit;
        let with_rank = self.spec.rank_column.is_some();
        let keep_all = self.spec.op_column.is_some();
        if !accumulate && !self.store.partitions.contains_key(pkey) {
            self.store.unknown_retraction();
            return;
        }
        let part = self.store.partition_mut(pkey);
        visible_ranks(function, &part.entries, limit, &mut self.before);
        if accumulate {
            let at = part.entries.partition_point(|e| e.key <= entry.key);
            part.entries.insert(at, entry);
            visible_ranks(function, &part.entries, limit, &mut self.after);
            emit_change(
                &part.entries,
                &self.before,
                &self.after,
                Change::Inserted(at),
                with_rank,
                emitted,
            );
            // Rows ranked beyond the limit of an append-only input can
            // never come back.
            if !keep_all {
                part.entries.truncate(self.after.len());
            }
        } else {
            let first = part.entries.partition_point(|e| e.key < entry.key);
            let found = part.entries[first..]
                .iter()
                .take_while(|e| e.key == entry.key)
                .position(|e| e.row == entry.row);
            let Some(offset) = found else {
                self.store.unknown_retraction();
                return;
            };
            let at = first + offset;
            let removed = part.entries.remove(at);
            visible_ranks(function, &part.entries, limit, &mut self.after);
            emit_change(
                &part.entries,
                &self.before,
                &self.after,
                Change::Removed(at, &removed),
                with_rank,
                emitted,
            );
            if part.entries.is_empty() {
                self.store.partitions.remove(pkey);
            }
        }
    }

    /// `FirstSeen`: emits the row if its partition has emitted fewer than
    /// N; returns whether the partition changed.
    fn first_seen(&mut self, pkey: &[u8], entry: &Entry, emitted: &mut Emitted) -> bool {
        let limit = self.spec.limit;
        let part = self.store.partition_mut(pkey);
        if part.emitted >= limit {
            return false;
        }
        part.emitted += 1;
        emitted.push(&entry.row, part.emitted, OP_INSERT);
        true
    }

    /// Keeps a row of an append-only mode in its partition (or counts it
    /// late); returns whether the partition changed.
    fn hold(&mut self, pkey: &[u8], kg: u16, entry: Entry, at_time: i64) -> bool {
        let limit = self.spec.limit;
        let function = self.spec.function;
        match self.spec.mode {
            RankMode::WindowClose { .. } => {
                let fires_at = at_time.saturating_sub(1);
                if fires_at <= self.store.watermark {
                    self.store.count_late(1);
                    return false;
                }
                if !self.store.partitions.contains_key(pkey) {
                    self.store.timers.push(Reverse((fires_at, kg, pkey.into())));
                }
                let part = self.store.partition_mut(pkey);
                part.fires_at = fires_at;
                let at = part.entries.partition_point(|e| e.key <= entry.key);
                part.entries.insert(at, entry);
                visible_ranks(function, &part.entries, limit, &mut self.after);
                part.entries.truncate(self.after.len());
                true
            }
            RankMode::FirstByTime { .. } => {
                if entry.time <= self.store.watermark {
                    self.store.count_late(1);
                    return false;
                }
                let part = self.store.partition_mut(pkey);
                if part.emitted >= limit {
                    return false;
                }
                let at = part.entries.partition_point(|e| e.key <= entry.key);
                let time = entry.time;
                part.entries.insert(at, entry);
                part.entries.truncate((limit - part.emitted) as usize);
                if at == 0 {
                    self.store.timers.push(Reverse((time, kg, pkey.into())));
                }
                true
            }
            RankMode::Updating | RankMode::FirstSeen => false,
        }
    }

    /// Emits what the watermark completed: fired windows, and first rows
    /// now behind the watermark.
    fn fire(&mut self, out: &mut Collector) -> Result<()> {
        let mut emitted = Emitted::default();
        let limit = self.spec.limit;
        while let Some(Reverse((at, _, _))) = self.store.timers.peek() {
            if *at > self.store.watermark {
                break;
            }
            let Some(Reverse((_, kg, key))) = self.store.timers.pop() else {
                break;
            };
            match self.spec.mode {
                RankMode::WindowClose { .. } => {
                    let Some(part) = self.store.partitions.remove(&key) else {
                        continue;
                    };
                    visible_ranks(self.spec.function, &part.entries, limit, &mut self.after);
                    for (e, &rank) in part.entries.iter().zip(&self.after) {
                        emitted.push(&e.row, rank, OP_INSERT);
                    }
                }
                RankMode::FirstByTime { .. } => {
                    let Some(part) = self.store.partitions.get_mut(&key) else {
                        continue;
                    };
                    let ready = part
                        .entries
                        .iter()
                        .take_while(|e| e.time <= self.store.watermark)
                        .count();
                    if ready == 0 {
                        continue;
                    }
                    for e in part.entries.drain(..ready) {
                        part.emitted += 1;
                        emitted.push(&e.row, part.emitted, OP_INSERT);
                    }
                    if part.emitted >= limit {
                        part.entries.clear();
                    } else if let Some(next) = part.entries.first() {
                        self.store
                            .timers
                            .push(Reverse((next.time, kg, key.clone())));
                    }
                }
                RankMode::Updating | RankMode::FirstSeen => continue,
            }
            self.store.mark_dirty(&key, kg);
        }
        self.collect(emitted, out)
    }
}

impl Operator for RankOperator {
    fn name(&self) -> String {
        "TopN".into()
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        let mode = self.spec.mode;
        self.store.open(ctx, |_, part| match mode {
            RankMode::WindowClose { .. } => Some(part.fires_at),
            RankMode::FirstByTime { .. } => part.entries.first().map(|e| e.time),
            RankMode::Updating | RankMode::FirstSeen => None,
        })
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        self.expire_idle();
        let columns = |cs: &mut dyn Iterator<Item = usize>| -> Vec<ArrayRef> {
            cs.map(|c| batch.column(c).clone()).collect()
        };
        let partition_arrays = columns(&mut self.spec.partition.iter().copied());
        let pkeys = match &self.partition_converter {
            Some(c) => Some(c.convert_columns(&partition_arrays)?),
            None => None,
        };
        let order_arrays = columns(&mut self.spec.order.iter().map(|&(c, _)| c));
        let keys = self.order_converter.convert_columns(&order_arrays)?;
        let rows = self
            .row_converter
            .convert_columns(&columns(&mut (0..self.width)))?;
        let mut groups = Vec::with_capacity(n);
        key_groups(&partition_arrays, n, &mut groups)?;
        let ops = crate::updating::changelog_ops(&batch, self.spec.op_column)?;
        let times = match self.spec.mode {
            RankMode::Updating | RankMode::FirstSeen => None,
            RankMode::WindowClose { window_end: c } | RankMode::FirstByTime { time: c } => {
                Some(crate::aggregate::event_time_millis(&batch, c)?)
            }
        };
        let mut emitted = Emitted::default();
        let mut no_time = 0u64;
        for (i, &kg) in groups.iter().enumerate() {
            let pkey: &[u8] = match &pkeys {
                Some(p) => p.row(i).data(),
                None => &[],
            };
            let mut entry = Entry {
                key: keys.row(i).data().into(),
                row: rows.row(i).data().into(),
                time: 0,
            };
            let changed = match &times {
                None if self.spec.mode == RankMode::FirstSeen => {
                    self.first_seen(pkey, &entry, &mut emitted)
                }
                None => {
                    let accumulate = ops
                        .as_ref()
                        .is_none_or(|o| matches!(o.value(i), OP_INSERT | OP_UPDATE_AFTER));
                    self.update(pkey, entry, accumulate, &mut emitted);
                    true
                }
                Some(t) if t.is_null(i) => {
                    no_time += 1;
                    false
                }
                Some(t) => {
                    let time = t.value(i);
                    entry.time = time;
                    self.hold(pkey, kg, entry, time)
                }
            };
            if changed {
                self.store.mark_dirty(pkey, kg);
            }
        }
        if no_time > 0 {
            // A row without a time belongs to no window and is never final.
            self.store.count_late(no_time);
        }
        self.collect(emitted, out)
    }

    fn handle_watermark(&mut self, watermark: i64, out: &mut Collector) -> Result<()> {
        self.store.watermark = self.store.watermark.max(watermark);
        self.expire_idle();
        self.fire(out)?;
        out.emit_watermark(watermark);
        Ok(())
    }

    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        self.expire_idle();
        self.store.checkpoint()
    }
}

#[cfg(test)]
mod tests;
