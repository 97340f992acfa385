//! The regular (updating) join: `INNER`, `LEFT`, `RIGHT` and `FULL` joins on
//! equi-keys plus a residual predicate, over append-only or changelog inputs.
//!
//! Each side keeps every row it has seen, by join key. A row that arrives is
//! joined with the other side's rows of its key (those that pass the
//! residual predicate) and then stored; a retraction (`-U`/`-D`) retracts the
//! rows it produced and is removed. The output is a changelog (`_op` last)
//! unless the join is `INNER` over two append-only inputs:
//!
//! ```text
//!   left row arrives, n matches     +I (l, r) for each match
//!   ... and none, LEFT/FULL join    +I (l, NULL)
//!   a right row's first match, RIGHT/FULL join: -D (NULL, r) before its +I (l, r)
//!   retraction                      the same rows as -D, and a preserved
//!                                   row's last match gone: +I (NULL, r)
//! ```
//!
//! A row of a preserved (outer) side counts the other side's rows it joins
//! with, so the NULL-padded row is retracted when the first match arrives and
//! emitted again when the last one is retracted. Rows with a NULL in a key
//! never match and are not stored.
//!
//! **Interval and window joins** are this operator with an expiry per side
//! ([`JoinInput::expiry`]): a row that no later row of the other side can
//! match (the watermark passed its time plus a bound) is dropped from
//! state, so state stays bounded by the interval. A preserved side whose
//! rows expire emits its NULL-padded rows when they expire unmatched
//! rather than on arrival, so such a join's output is append-only, as in
//! Flink. A row that arrives already expired is joined with what is still
//! stored and not kept.
//!
//! Rows are held in memory in arrow's row format and written to the state
//! backend at each checkpoint barrier, *incrementally*: only the keys that
//! changed since the last barrier are rewritten (or deleted), each as one
//! entry:
//!
//! ```text
//!   key group | side (0 left, 1 right) | join key (row format)  →  rows, match counts
//! ```
//!
//! so a job restarted with another parallelism reads the keys it owns now.
//! The row format is arrow's (stable for the arrow version a build uses; the
//! job's plan check refuses state written by another plan).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int8Array, UInt32Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::hash_utils::RandomState;
use datafusion::physical_expr::PhysicalExpr;

use crate::keyed_state::{KeyMap, KeyedState, mark_dirty};
use crate::operator::{Collector, Operator, OperatorContext};
use crate::partition::key_groups;
use crate::ttl::{IdleKeys, NEVER_WRITTEN, StateTtl};
use crate::updating::{OP_COLUMN, OP_DELETE, OP_INSERT, OP_UPDATE_AFTER};
use crate::{OperatorError, Result};

/// Which sides of a join keep their unmatched rows (NULL-padded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JoinType {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinType {
    pub fn as_sql(self) -> &'static str {
        match self {
            JoinType::Inner => "INNER",
            JoinType::Left => "LEFT",
            JoinType::Right => "RIGHT",
            JoinType::Full => "FULL",
        }
    }

    /// Whether side `side` (0 left, 1 right) is preserved.
    fn preserves(self, side: usize) -> bool {
        matches!(
            (self, side),
            (JoinType::Left | JoinType::Full, 0) | (JoinType::Right | JoinType::Full, 1)
        )
    }
}

/// One input of a join.
#[derive(Debug, Clone)]
pub struct JoinInput {
    /// The input's schema: its row columns, then its `_op` if it is a
    /// changelog.
    pub schema: SchemaRef,
    /// The key columns (the other side's keys have the same types).
    pub keys: Vec<usize>,
    /// The input's changelog column, which must be its last.
    pub op_column: Option<usize>,
    /// When its rows can no longer match (an interval or window join): a
    /// row expires once the watermark reaches its time column plus
    /// `after_ms`. Only for append-only inputs.
    pub expiry: Option<Expiry>,
}

/// See [`JoinInput::expiry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expiry {
    pub time_column: usize,
    pub after_ms: i64,
}

impl JoinInput {
    /// How many row columns the input has (all but `_op`).
    fn width(&self) -> usize {
        self.op_column.unwrap_or(self.schema.fields().len())
    }

    /// Its row columns, nullable (they are NULL in padded output rows).
    fn row_fields(&self) -> Vec<Field> {
        self.schema.fields()[..self.width()]
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect()
    }
}

/// The rows a join's residual condition is evaluated on: the left input's
/// row columns, then the right's.
pub fn pair_schema(left: &JoinInput, right: &JoinInput) -> SchemaRef {
    Arc::new(Schema::new(
        [left.row_fields(), right.row_fields()].concat(),
    ))
}

/// Whether a join's output is a changelog: an input is one (`updating`), or
/// a preserved side's padded rows are retracted when matches arrive (a
/// preserved side whose rows expire pads them when they expire instead).
pub fn emits_changelog(join_type: JoinType, updating: [bool; 2], expires: [bool; 2]) -> bool {
    updating.iter().any(|&u| u) || (0..2).any(|s| join_type.preserves(s) && !expires[s])
}

/// Side `s`'s columns and the other side's, in output order (left first).
fn in_order<T>(s: usize, mine: Vec<T>, theirs: Vec<T>) -> Vec<T> {
    let (mut first, second) = if s == 0 {
        (mine, theirs)
    } else {
        (theirs, mine)
    };
    first.extend(second);
    first
}

/// The rows of one side with one join key.
#[derive(Debug, Clone, PartialEq)]
struct KeyRows {
    /// Rows (row format), back to back; row `i` ends at `ends[i]`.
    data: Vec<u8>,
    ends: Vec<u32>,
    /// Per row: how many rows of the other side it joins with (kept for a
    /// preserved side only; zeros otherwise).
    matches: Vec<u32>,
    /// Per row: the watermark at which it can no longer match (`i64::MAX`
    /// for a side whose rows never expire).
    expires: Vec<i64>,
    /// When the key was last written, under a time-to-live.
    written: i64,
}

impl Default for KeyRows {
    fn default() -> Self {
        Self {
            data: Vec::new(),
            ends: Vec::new(),
            matches: Vec::new(),
            expires: Vec::new(),
            written: NEVER_WRITTEN,
        }
    }
}

impl KeyRows {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn row(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.data[start..self.ends[i] as usize]
    }

    fn push(&mut self, row: &[u8], matches: u32, expires: i64) {
        self.data.extend_from_slice(row);
        self.ends.push(self.data.len() as u32);
        self.matches.push(matches);
        self.expires.push(expires);
    }

    /// Removes one row equal to `row`; false if there is none.
    fn remove(&mut self, row: &[u8]) -> bool {
        let Some(i) = (0..self.len()).find(|&i| self.row(i) == row) else {
            return false;
        };
        self.remove_at(i);
        true
    }

    fn remove_at(&mut self, i: usize) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let len = self.ends[i] - start;
        self.data.drain(start as usize..self.ends[i] as usize);
        self.ends.remove(i);
        self.matches.remove(i);
        self.expires.remove(i);
        for end in &mut self.ends[i..] {
            *end -= len;
        }
    }

    /// Removes the rows that expire at or before `watermark`, handing each
    /// (its bytes and match count) to `f` first.
    fn expire(&mut self, watermark: i64, mut f: impl FnMut(&[u8], u32)) {
        if self.expires.iter().all(|&e| e > watermark) {
            return;
        }
        // One pass: keep the rows that live on, in order.
        let mut kept = KeyRows {
            written: self.written,
            ..KeyRows::default()
        };
        for i in 0..self.len() {
            if self.expires[i] <= watermark {
                f(self.row(i), self.matches[i]);
            } else {
                kept.push(self.row(i), self.matches[i], self.expires[i]);
            }
        }
        *self = kept;
    }

    /// `written | n | ends | matches | expires | data`, integers
    /// little-endian.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + 16 * self.len() + self.data.len());
        out.extend_from_slice(&self.written.to_le_bytes());
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        for v in self.ends.iter().chain(&self.matches) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in &self.expires {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || OperatorError::Internal("a join state entry is corrupt".into());
        let written = i64::from_le_bytes(
            bytes
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad)?,
        );
        let bytes = &bytes[8..];
        let u32_at = |at: usize| -> Result<u32> {
            let b = bytes.get(at..at + 4).ok_or_else(bad)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let n = u32_at(0)? as usize;
        let ends = (0..n)
            .map(|i| u32_at(4 + 4 * i))
            .collect::<Result<Vec<_>>>()?;
        let matches = (0..n)
            .map(|i| u32_at(4 + 4 * (n + i)))
            .collect::<Result<Vec<_>>>()?;
        let expires = (0..n)
            .map(|i| {
                let at = 4 + 8 * n + 8 * i;
                let b = bytes.get(at..at + 8).ok_or_else(bad)?;
                Ok(i64::from_le_bytes(b.try_into().map_err(|_| bad())?))
            })
            .collect::<Result<Vec<_>>>()?;
        let data = bytes.get(4 + 16 * n..).ok_or_else(bad)?.to_vec();
        if ends.last().map_or(0, |&e| e as usize) != data.len() {
            return Err(bad());
        }
        Ok(Self {
            data,
            ends,
            matches,
            expires,
            written,
        })
    }
}

/// When a key's rows expire: `(expiry, key group, key)`.
type Timer = (i64, u16, Box<[u8]>);

/// One side's state.
struct Side {
    input: JoinInput,
    /// Its row columns (nullable: they are NULL in padded output rows).
    rows_schema: SchemaRef,
    key_converter: RowConverter,
    row_converter: RowConverter,
    preserved: bool,
    rows: KeyMap<KeyRows>,
    /// Keys changed since the last barrier, with their key group.
    dirty: KeyMap<u16>,
    /// When rows expire: `(expiry, key group, key)`, earliest first (one
    /// entry per stored row; a key already expired is skipped).
    timers: BinaryHeap<Reverse<Timer>>,
    /// Keys by last write, under a time-to-live (sides whose rows do not
    /// expire by the watermark).
    idle: IdleKeys<Box<[u8]>>,
}

impl Side {
    /// Every stored row with the key of each input row (`n` rows, by
    /// `keys`; rows without a key match nothing).
    fn candidates(
        &self,
        keys: &datafusion::arrow::row::Rows,
        n: usize,
        has_key: &dyn Fn(usize) -> bool,
    ) -> Result<Candidates> {
        let mut c = Candidates {
            starts: Vec::with_capacity(n + 1),
            pair_input: Vec::new(),
            pair_slot: Vec::new(),
            columns: Vec::new(),
        };
        let parser = self.row_converter.parser();
        let mut cand_rows = Vec::new();
        for i in 0..n {
            c.starts.push(c.pair_input.len());
            if !has_key(i) {
                continue;
            }
            if let Some(stored) = self.rows.get(keys.row(i).as_ref()) {
                for slot in 0..stored.len() {
                    c.pair_input.push(i as u32);
                    c.pair_slot.push(slot as u32);
                    cand_rows.push(parser.parse(stored.row(slot)));
                }
            }
        }
        c.starts.push(c.pair_input.len());
        c.columns = if cand_rows.is_empty() {
            self.rows_schema
                .fields()
                .iter()
                .map(|f| datafusion::arrow::array::new_empty_array(f.data_type()))
                .collect()
        } else {
            self.row_converter.convert_rows(cand_rows)?
        };
        Ok(c)
    }

    /// Keeps a row under its key (with its match count, for a preserved
    /// side) until `expires`.
    fn store(&mut self, key: &[u8], row: &[u8], matches: u32, expires: i64, kg: u16) {
        match self.rows.get_mut(key) {
            Some(stored) => stored.push(row, matches, expires),
            None => {
                let mut stored = KeyRows::default();
                stored.push(row, matches, expires);
                self.rows.insert(key.into(), stored);
            }
        }
        if expires != i64::MAX {
            self.timers.push(Reverse((expires, kg, key.into())));
        }
        self.touch(key, kg);
    }

    /// Takes back a retracted row; false if it was not there.
    fn remove(&mut self, key: &[u8], row: &[u8], kg: u16) -> bool {
        let removed = match self.rows.get_mut(key) {
            Some(stored) => {
                let removed = stored.remove(row);
                if stored.len() == 0 {
                    self.rows.remove(key);
                }
                removed
            }
            None => false,
        };
        if removed {
            self.touch(key, kg);
        }
        removed
    }

    /// A preserved side whose rows expire emits its NULL-padded rows when
    /// they expire unmatched, not on arrival: its output is append-only.
    fn pads_on_expiry(&self) -> bool {
        self.preserved && self.input.expiry.is_some()
    }

    fn new(input: JoinInput, preserved: bool) -> Result<Self> {
        if input.expiry.is_some() && input.op_column.is_some() {
            return Err(OperatorError::Internal(
                "the rows of an updating join input cannot expire".into(),
            ));
        }
        if input
            .op_column
            .is_some_and(|c| c + 1 != input.schema.fields().len())
        {
            return Err(OperatorError::Internal(
                "a join input's _op must be its last column".into(),
            ));
        }
        let fields = input.row_fields();
        let sort = |dt: &DataType| SortField::new(dt.clone());
        // Without keys (every row meets every row) all rows share one
        // constant key.
        let key_fields = match input.keys.is_empty() {
            true => vec![sort(&DataType::Boolean)],
            false => input
                .keys
                .iter()
                .map(|&k| sort(input.schema.field(k).data_type()))
                .collect(),
        };
        let key_converter = RowConverter::new(key_fields)?;
        let row_converter =
            RowConverter::new(fields.iter().map(|f| sort(f.data_type())).collect())?;
        Ok(Self {
            input,
            rows_schema: Arc::new(Schema::new(fields)),
            key_converter,
            row_converter,
            preserved,
            rows: KeyMap::default(),
            dirty: KeyMap::default(),
            timers: BinaryHeap::new(),
            idle: IdleKeys::new(None),
        })
    }

    /// The rows of `key` changed (or are gone): written at the next
    /// barrier, and the key's time-to-live starts again.
    fn touch(&mut self, key: &[u8], kg: u16) {
        mark_dirty(&mut self.dirty, key, kg);
        if self.idle.enabled()
            && let Some(stored) = self.rows.get_mut(key)
        {
            self.idle.written(&mut stored.written, kg, || key.into());
        }
    }

    /// Reads the clock and drops the keys idle for the time-to-live.
    fn expire_idle(&mut self) {
        for (kg, key) in self.idle.drop_idle(&mut self.rows, |r| Some(r.written)) {
            mark_dirty(&mut self.dirty, &key, kg);
        }
    }
}

/// What one input row produced: an output row made of an input row and a
/// candidate (a stored row of the other side), either of which may be NULL.
struct Out {
    op: i8,
    input: Option<u32>,
    candidate: Option<u32>,
}

/// The stored rows of the other side that share a key with input rows:
/// pairs `starts[i]..starts[i + 1]` are input row `i`'s, each with its
/// input row and its slot among the key's stored rows.
struct Candidates {
    starts: Vec<usize>,
    pair_input: Vec<u32>,
    pair_slot: Vec<u32>,
    /// The candidates' columns, one row per pair.
    columns: Vec<ArrayRef>,
}

/// The rows of `columns` at `indices`.
fn take_all(columns: &[ArrayRef], indices: &UInt32Array) -> Result<Vec<ArrayRef>> {
    Ok(columns
        .iter()
        .map(|a| take(a, indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// For each pair, whether the residual condition holds (NULL does not).
fn passing(residual: &dyn PhysicalExpr, pairs: &RecordBatch) -> Result<Vec<bool>> {
    let n = pairs.num_rows();
    let result = residual.evaluate(pairs)?.into_array(n)?;
    let result = result
        .as_boolean_opt()
        .ok_or_else(|| OperatorError::Internal("a join condition is not boolean".into()))?;
    Ok((0..n)
        .map(|p| result.is_valid(p) && result.value(p))
        .collect())
}

/// The regular join operator (see the module docs).
pub struct JoinOperator {
    sides: [Side; 2],
    /// Non-equi condition over left rows ++ right rows.
    residual: Option<Arc<dyn PhysicalExpr>>,
    /// Left row columns ++ right row columns.
    pair_schema: SchemaRef,
    output: SchemaRef,
    changelog: bool,
    state: Option<KeyedState>,
    /// Retractions of rows this join never stored (already logged).
    unknown_retractions: u64,
    watermark: i64,
    /// The output watermark lags the input's by this much (ms), so that
    /// the left rows still stored, which may yet be emitted, are not late
    /// downstream (see [`Self::with_watermark_delay`]).
    watermark_delay: i64,
}

impl std::fmt::Debug for JoinOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = |s: &Side| s.rows.len();
        f.debug_struct("JoinOperator")
            .field("left_keys", &keys(&self.sides[0]))
            .field("right_keys", &keys(&self.sides[1]))
            .field("changelog", &self.changelog)
            .finish_non_exhaustive()
    }
}

impl JoinOperator {
    pub fn try_new(
        join_type: JoinType,
        left: JoinInput,
        right: JoinInput,
        residual: Option<Arc<dyn PhysicalExpr>>,
    ) -> Result<Self> {
        if left.keys.len() != right.keys.len() {
            return Err(OperatorError::Internal(
                "join sides have different numbers of keys".into(),
            ));
        }
        for (&l, &r) in left.keys.iter().zip(&right.keys) {
            let (lt, rt) = (
                left.schema.field(l).data_type(),
                right.schema.field(r).data_type(),
            );
            if lt != rt {
                return Err(OperatorError::Internal(format!(
                    "join keys of types {lt} and {rt} differ"
                )));
            }
        }
        let changelog = emits_changelog(
            join_type,
            [left.op_column.is_some(), right.op_column.is_some()],
            [left.expiry.is_some(), right.expiry.is_some()],
        );
        let pair_schema = pair_schema(&left, &right);
        let mut fields: Vec<Field> = pair_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let sides = [
            Side::new(left, join_type.preserves(0))?,
            Side::new(right, join_type.preserves(1))?,
        ];
        if changelog {
            fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        }
        Ok(Self {
            sides,
            residual,
            pair_schema,
            output: Arc::new(Schema::new(fields)),
            changelog,
            state: None,
            unknown_retractions: 0,
            watermark: i64::MIN,
            watermark_delay: 0,
        })
    }

    /// The schema of the rows it emits: left rows, right rows, `_op` when
    /// the output is a changelog.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// Drops a join key's rows on a side once they are not written for the
    /// time-to-live (see [`crate::ttl`]); a side whose rows expire by the
    /// watermark (an interval or window join) does not need it.
    pub fn with_state_ttl(mut self, ttl: Option<StateTtl>) -> Self {
        for side in &mut self.sides {
            if side.input.expiry.is_none() {
                side.idle.set_ttl(ttl.clone());
            }
        }
        self
    }

    /// Holds the output watermark `ms` behind the input's: an interval join
    /// whose left rows expire `ms - 1` after their time emits no row older
    /// than that, so its output keeps the left time attribute.
    pub fn with_watermark_delay(mut self, ms: i64) -> Self {
        self.watermark_delay = ms.max(0);
        self
    }

    fn expire_idle(&mut self) {
        for side in &mut self.sides {
            side.expire_idle();
        }
    }

    /// Joins a batch of side `s` with the other side's rows, then stores it.
    fn process_side(&mut self, s: usize, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        self.expire_idle();
        let [left, right] = &mut self.sides;
        let (this, other) = if s == 0 { (left, right) } else { (right, left) };
        let width = this.input.width();
        let values: Vec<ArrayRef> = batch.columns()[..width].to_vec();
        let key_arrays: Vec<ArrayRef> = this
            .input
            .keys
            .iter()
            .map(|&k| batch.column(k).clone())
            .collect();
        let keys = if key_arrays.is_empty() {
            let constant: ArrayRef = Arc::new(BooleanArray::from(vec![true; n]));
            this.key_converter.convert_columns(&[constant])?
        } else {
            this.key_converter.convert_columns(&key_arrays)?
        };
        let rows = this.row_converter.convert_columns(&values)?;
        let null_keys = key_arrays.iter().fold(None::<NullBuffer>, |acc, a| {
            NullBuffer::union(acc.as_ref(), a.logical_nulls().as_ref())
        });
        let has_key = |i: usize| null_keys.as_ref().is_none_or(|nb| nb.is_valid(i));
        let ops = crate::updating::changelog_ops(&batch, this.input.op_column)?;
        let expiry = match this.input.expiry {
            Some(e) => {
                let times = crate::aggregate::event_time_millis(&batch, e.time_column)?;
                Some((times, e.after_ms))
            }
            None => None,
        };
        let expires_at = |i: usize| match &expiry {
            Some((t, after)) if t.is_valid(i) => t.value(i).saturating_add(*after),
            // A row without a time never matches a time condition.
            Some(_) => i64::MIN,
            None => i64::MAX,
        };
        let mut groups = Vec::with_capacity(n);
        key_groups(&key_arrays, n, &mut groups)?;

        // The candidates: every stored row of the other side with the same key.
        let Candidates {
            starts,
            pair_input,
            pair_slot,
            columns: candidates,
        } = other.candidates(&keys, n, &has_key)?;
        let pass = match &self.residual {
            Some(residual) if !pair_input.is_empty() => {
                let idx = UInt32Array::from(pair_input.clone());
                let columns = in_order(s, take_all(&values, &idx)?, candidates.clone());
                let pairs = RecordBatch::try_new(self.pair_schema.clone(), columns)?;
                Some(passing(residual.as_ref(), &pairs)?)
            }
            _ => None,
        };
        let passes = |p: usize| pass.as_ref().is_none_or(|m| m[p]);

        // Walk the rows in order: emit, count matches, store or remove.
        let mut emitted: Vec<Out> = Vec::new();
        for i in 0..n {
            let accumulate = ops
                .as_ref()
                .is_none_or(|o| matches!(o.value(i), OP_INSERT | OP_UPDATE_AFTER));
            let key = keys.row(i);
            let matching = || (starts[i]..starts[i + 1]).filter(|&p| passes(p));
            let matched = matching().count();
            let (joined_op, padded_other_op) = if accumulate {
                (OP_INSERT, OP_DELETE)
            } else {
                (OP_DELETE, OP_INSERT)
            };
            let mut other_first_or_last = Vec::new();
            let other_pads_later = other.pads_on_expiry();
            if other.preserved && matched > 0 {
                let stored = other
                    .rows
                    .get_mut(key.as_ref())
                    .ok_or_else(|| OperatorError::Internal("join candidates vanished".into()))?;
                for p in matching() {
                    let m = &mut stored.matches[pair_slot[p] as usize];
                    if accumulate {
                        if *m == 0 {
                            other_first_or_last.push(p);
                        }
                        *m += 1;
                    } else {
                        *m = m.saturating_sub(1);
                        if *m == 0 {
                            other_first_or_last.push(p);
                        }
                    }
                }
                other.touch(key.as_ref(), groups[i]);
            }
            let padded = |op| Out {
                op,
                input: None,
                candidate: None,
            };
            // A preserved row of the other side loses its padded row before
            // its first join row, and gets it back after its last is gone.
            if other_pads_later {
                other_first_or_last.clear();
            }
            if accumulate {
                emitted.extend(other_first_or_last.iter().map(|&p| Out {
                    candidate: Some(p as u32),
                    ..padded(padded_other_op)
                }));
            }
            emitted.extend(matching().map(|p| Out {
                op: joined_op,
                input: Some(i as u32),
                candidate: Some(p as u32),
            }));
            // A row that waits for expiry and is already expired is padded
            // at once (it is not stored).
            let expires = expires_at(i);
            let stored_until_expiry = has_key(i) && expires > self.watermark;
            if this.preserved && matched == 0 && (!this.pads_on_expiry() || !stored_until_expiry) {
                emitted.push(Out {
                    input: Some(i as u32),
                    ..padded(joined_op)
                });
            }
            if !accumulate {
                emitted.extend(other_first_or_last.iter().map(|&p| Out {
                    candidate: Some(p as u32),
                    ..padded(padded_other_op)
                }));
            }
            if !has_key(i) || expires <= self.watermark {
                continue;
            }
            let row = rows.row(i);
            if accumulate {
                let matches = if this.preserved { matched as u32 } else { 0 };
                this.store(key.as_ref(), row.as_ref(), matches, expires, groups[i]);
            } else if !this.remove(key.as_ref(), row.as_ref(), groups[i]) {
                if self.unknown_retractions == 0 {
                    tracing::warn!(
                        "a join input retracted a row it never sent (or whose state expired); ignored"
                    );
                }
                self.unknown_retractions += 1;
            }
        }
        if emitted.is_empty() {
            return Ok(());
        }
        let input_idx: UInt32Array = emitted.iter().map(|o| o.input).collect();
        let cand_idx: UInt32Array = emitted.iter().map(|o| o.candidate).collect();
        let theirs = take_all(&candidates, &cand_idx)?;
        let mut columns = in_order(s, take_all(&values, &input_idx)?, theirs);
        if self.changelog {
            let ops: Int8Array = emitted.iter().map(|o| Some(o.op)).collect();
            columns.push(Arc::new(ops));
        }
        out.collect(RecordBatch::try_new(self.output.clone(), columns)?);
        Ok(())
    }
}

impl JoinOperator {
    /// Drops side `s`'s rows that the watermark has expired; a preserved
    /// side emits those that never matched, NULL-padded.
    fn expire(&mut self, s: usize, out: &mut Collector) -> Result<()> {
        let watermark = self.watermark;
        let side = &mut self.sides[s];
        let pads = side.pads_on_expiry();
        let mut unmatched: Vec<Vec<u8>> = Vec::new();
        // Each key is cleaned once per watermark, however many of its rows
        // expire (each row has a timer).
        let mut cleaned: HashSet<Box<[u8]>, RandomState> = HashSet::default();
        while let Some(Reverse((at, _, _))) = side.timers.peek() {
            if *at > watermark {
                break;
            }
            let Some(Reverse((_, kg, key))) = side.timers.pop() else {
                break;
            };
            if cleaned.contains(&key) {
                continue;
            }
            let Some(stored) = side.rows.get_mut(&key) else {
                continue;
            };
            stored.expire(watermark, |row, matches| {
                if pads && matches == 0 {
                    unmatched.push(row.to_vec());
                }
            });
            if stored.len() == 0 {
                side.rows.remove(&key);
            }
            mark_dirty(&mut side.dirty, &key, kg);
            cleaned.insert(key);
        }
        if unmatched.is_empty() {
            return Ok(());
        }
        let parser = side.row_converter.parser();
        let mine = side
            .row_converter
            .convert_rows(unmatched.iter().map(|r| parser.parse(r)))?;
        let n = unmatched.len();
        let theirs: Vec<ArrayRef> = self.sides[1 - s]
            .rows_schema
            .fields()
            .iter()
            .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), n))
            .collect();
        let mut columns = in_order(s, mine, theirs);
        if self.changelog {
            columns.push(Arc::new(Int8Array::from(vec![OP_INSERT; n])));
        }
        out.collect(RecordBatch::try_new(self.output.clone(), columns)?);
        Ok(())
    }
}

impl Operator for JoinOperator {
    fn name(&self) -> String {
        "Join".into()
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        let state = KeyedState::open(ctx)?;
        let mut restored = 0usize;
        for (kg, suffix, value) in state.scan_raw()? {
            let Some((&side, key)) = suffix.split_first() else {
                return Err(OperatorError::Internal(
                    "a join state key is corrupt".into(),
                ));
            };
            let side = self
                .sides
                .get_mut(side as usize)
                .ok_or_else(|| OperatorError::Internal("a join state key is corrupt".into()))?;
            let rows = KeyRows::decode(&value)?;
            restored += rows.len();
            for &e in rows.expires.iter().filter(|&&e| e != i64::MAX) {
                side.timers.push(Reverse((e, kg, key.into())));
            }
            side.idle.restored(rows.written, kg, key.into());
            side.rows.insert(key.into(), rows);
        }
        if restored > 0 {
            tracing::info!(rows = restored, "join restored its rows from state");
        }
        for side in &mut self.sides {
            side.idle.set_metrics(ctx.metrics.clone());
        }
        self.state = Some(state);
        Ok(())
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        self.process_input_batch(0, batch, out)
    }

    fn process_input_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut Collector,
    ) -> Result<()> {
        if input > 1 {
            return Err(OperatorError::Internal(format!(
                "a join has two inputs, not input {input}"
            )));
        }
        self.process_side(input, batch, out)
    }

    fn handle_watermark(&mut self, watermark: i64, out: &mut Collector) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        for side in &mut self.sides {
            side.idle.advance(self.watermark);
        }
        self.expire_idle();
        for s in 0..2 {
            self.expire(s, out)?;
        }
        let delayed = if watermark == i64::MAX {
            watermark
        } else {
            watermark.saturating_sub(self.watermark_delay)
        };
        out.emit_watermark(delayed);
        Ok(())
    }

    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        self.expire_idle();
        let Some(state) = &self.state else {
            return Ok(());
        };
        let mut ops = Vec::new();
        for (s, side) in self.sides.iter_mut().enumerate() {
            for (key, kg) in side.dirty.drain() {
                let mut suffix = Vec::with_capacity(1 + key.len());
                suffix.push(s as u8);
                suffix.extend_from_slice(&key);
                let value = side.rows.get(&key).map(KeyRows::encode);
                ops.push((kg, suffix, value));
            }
        }
        state.write(ops)
    }
}

#[cfg(test)]
mod tests;
