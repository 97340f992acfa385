//! The session window aggregate: per key, rows closer than `gap` in event
//! time form one session `[first, last + gap)`; a row that bridges two
//! sessions merges them (Flink's merging session windows).
//!
//! ```text
//!  key k:   [1 .. 1+gap)      [9 .. 9+gap)       a row at 6 with gap 4:
//!           [1 ........................ 9+gap)   one session
//! ```
//!
//! A session fires when the watermark reaches its last millisecond; a row
//! whose (merged) session has already ended by the watermark is late. Each
//! session keeps one DataFusion `Accumulator` per aggregate; merging moves
//! the states across (`state()` then `merge_batch`).
//!
//! With an allowed lateness `L`, a fired session is kept until the
//! watermark reaches `end - 1 + L`: a late row that falls into it, extends
//! it or bridges it with another merges as usual, and the session's result
//! is corrected at once. With early firing, open sessions emit their
//! running results every delay. Either makes the output a changelog: a
//! session that keeps its bounds updates its row (`-U`, `+U`); one whose
//! bounds moved, or that swallowed others, deletes the rows they stood for
//! (`-D`) and inserts its own (`+I`).
//!
//! Sessions live in memory between checkpoints. At a barrier each one is
//! written to the operator's state table under its key's key group (keys,
//! bounds, fired or not, its accumulators' `state()`), with the result rows
//! it stands for in a second batch, and read back on open.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int8Array, Int64Array, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::OwnedRow;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::aggregate::{
    KeyCodec, accumulator_from_state, accumulator_state_columns, aggregate_fields, evaluate_args,
    evaluate_filters, event_time_millis, key_fields,
};
use crate::emit::EmitControl;
use crate::keyed_state::{KeyedState, int64_column, split_by_key_group};
use crate::late::{LateOutput, REASON_LATE, REASON_NO_TIME};
use crate::message::Timestamp;
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::updating::{OP_DELETE, OP_INSERT, OP_UPDATE_AFTER, OP_UPDATE_BEFORE};
use crate::watermark::Clock;
use crate::{OperatorError, Result};

/// State-table tags (after the key group): sessions, and the result rows
/// they stand for.
const TAG_SESSION: u8 = 0;
const TAG_EMITTED: u8 = 1;

/// A result row: `(start, end, values)`.
type Emitted = (i64, i64, Vec<ScalarValue>);

struct Session {
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// The rows standing in the output for this session and the sessions
    /// merged into it (changelog output only).
    emitted: Vec<Emitted>,
}

/// A session window aggregate over `time_column`, grouped by `key_columns`.
pub struct SessionWindowOperator {
    key_columns: Vec<usize>,
    time_column: usize,
    gap: i64,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    converter: KeyCodec,
    output_schema: SchemaRef,
    /// Open sessions of each key, by start.
    sessions: HashMap<OwnedRow, std::collections::BTreeMap<i64, Session>>,
    /// Every open session as `(end, key, start)`: firing order.
    by_end: BTreeSet<(i64, OwnedRow, i64)>,
    /// Fired sessions kept for late rows, as `(end - 1 + lateness, key, start)`.
    by_expiry: BTreeSet<(i64, OwnedRow, i64)>,
    /// Allowed lateness and early firing.
    emit: EmitControl,
    /// Open sessions that took rows since the last early firing.
    dirty: HashSet<(OwnedRow, i64)>,
    watermark: Timestamp,
    late: Option<LateOutput>,
    metrics: Option<JobMetrics>,
    state: Option<KeyedState>,
}

impl std::fmt::Debug for SessionWindowOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWindowOperator")
            .field("gap", &self.gap)
            .field("open_sessions", &self.by_end.len())
            .finish_non_exhaustive()
    }
}

impl SessionWindowOperator {
    /// The output schema is keys, `window_start`, `window_end`, then one
    /// column per aggregate, as for the other window aggregates.
    pub fn try_new(
        input_schema: &SchemaRef,
        key_columns: Vec<usize>,
        time_column: usize,
        gap: i64,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    ) -> Result<Self> {
        if gap <= 0 || filters.len() != aggregates.len() {
            return Err(OperatorError::Internal(format!(
                "invalid session window (gap {gap} ms)"
            )));
        }
        let key_fields = key_fields(input_schema, &key_columns);
        let converter = KeyCodec::new(&key_fields)?;
        let mut fields = key_fields;
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        fields.push(Field::new("window_start", ts.clone(), false));
        fields.push(Field::new("window_end", ts, false));
        fields.extend(aggregate_fields(&aggregates));
        Ok(Self {
            key_columns,
            time_column,
            gap,
            aggregates,
            filters,
            converter,
            output_schema: Arc::new(Schema::new(fields)),
            sessions: HashMap::new(),
            by_end: BTreeSet::new(),
            by_expiry: BTreeSet::new(),
            emit: EmitControl::default(),
            dirty: HashSet::new(),
            watermark: Timestamp::MIN,
            late: None,
            metrics: None,
            state: None,
        })
    }

    /// Sends late rows to the dead-letter side output.
    pub fn with_late_output(mut self, late: LateOutput) -> Self {
        self.late = Some(late);
        self
    }

    /// Keeps fired sessions for `ms` more of event time, correcting them
    /// with late rows; the output becomes a changelog.
    pub fn with_allowed_lateness(mut self, ms: i64) -> Result<Self> {
        self.emit.set_allowed_lateness(ms)?;
        self.output_schema = self.emit.output_schema(&self.output_schema);
        Ok(self)
    }

    /// Emits the running results of open sessions every `delay` (checked
    /// as input arrives); the output becomes a changelog.
    pub fn with_early_fire(mut self, delay: Option<Duration>) -> Self {
        self.emit.early_fire = delay;
        self.output_schema = self.emit.output_schema(&self.output_schema);
        self
    }

    /// Reads processing time from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.emit.clock = clock;
        self
    }

    fn changelog(&self) -> bool {
        self.emit.changelog()
    }

    /// Takes every open session of `key` that overlaps `[start, end)` out,
    /// merged into one (a fresh session if none overlaps); the caller
    /// updates it with the row and puts it back.
    fn merge_into_new(
        &mut self,
        key: &OwnedRow,
        mut start: i64,
        mut end: i64,
    ) -> Result<(i64, Session)> {
        let mut taken: Vec<(i64, Session)> = Vec::new();
        if let Some(open) = self.sessions.get_mut(key) {
            let overlapping: Vec<i64> = open
                .iter()
                .filter(|(s, sess)| **s < end && sess.end > start)
                .map(|(s, _)| *s)
                .collect();
            for s in overlapping {
                if let Some(old) = open.remove(&s) {
                    if !self.by_end.remove(&(old.end, key.clone(), s)) {
                        let expiry = old.end - 1 + self.emit.allowed_lateness;
                        self.by_expiry.remove(&(expiry, key.clone(), s));
                    }
                    self.dirty.remove(&(key.clone(), s));
                    start = start.min(s);
                    end = end.max(old.end);
                    taken.push((s, old));
                }
            }
        }
        // The common case (the row extends one session) keeps that
        // session's accumulators; only a row bridging several moves state.
        let mut sessions = taken.into_iter().map(|(_, sess)| sess);
        let Some(mut merged) = sessions.next() else {
            let accumulators = self
                .aggregates
                .iter()
                .map(|a| a.create_accumulator())
                .collect::<datafusion::error::Result<_>>()?;
            return Ok((
                start,
                Session {
                    end,
                    accumulators,
                    emitted: Vec::new(),
                },
            ));
        };
        for mut other in sessions {
            merged.emitted.append(&mut other.emitted);
            for (acc, other_acc) in merged.accumulators.iter_mut().zip(&mut other.accumulators) {
                let state: Vec<ArrayRef> = other_acc
                    .state()?
                    .into_iter()
                    .map(|v| v.to_array())
                    .collect::<datafusion::error::Result<_>>()?;
                acc.merge_batch(&state)?;
            }
        }
        merged.end = end;
        Ok((start, merged))
    }

    /// The session's current result row.
    fn result(&self, start: i64, session: &mut Session) -> Result<Emitted> {
        let values = session
            .accumulators
            .iter_mut()
            .map(|a| a.evaluate())
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        Ok((start, session.end, values))
    }

    /// Emits the session's result: appended as it is, or (changelog) as
    /// the change from the rows standing for it, which it then replaces.
    fn emit(
        &self,
        key: &OwnedRow,
        start: i64,
        session: &mut Session,
        out: &mut Collector,
    ) -> Result<()> {
        let new = self.result(start, session)?;
        if !self.changelog() {
            return self.output(key, vec![(new, None)], out);
        }
        let rows = match session.emitted.as_slice() {
            [] => vec![(new.clone(), Some(OP_INSERT))],
            [old] if *old == new => vec![],
            [old] if old.0 == new.0 && old.1 == new.1 => vec![
                (old.clone(), Some(OP_UPDATE_BEFORE)),
                (new.clone(), Some(OP_UPDATE_AFTER)),
            ],
            standing => standing
                .iter()
                .map(|old| (old.clone(), Some(OP_DELETE)))
                .chain([(new.clone(), Some(OP_INSERT))])
                .collect(),
        };
        session.emitted = vec![new];
        self.output(key, rows, out)
    }

    /// One output batch of `key`'s rows, with their `_op` codes if the
    /// output is a changelog.
    fn output(
        &self,
        key: &OwnedRow,
        rows: Vec<(Emitted, Option<i8>)>,
        out: &mut Collector,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len();
        let mut columns = self.converter.decode(std::iter::repeat_n(key.row(), n))?;
        columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(
            rows.iter().map(|((s, _, _), _)| *s),
        )));
        columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(
            rows.iter().map(|((_, e, _), _)| *e),
        )));
        let fields = self.output_schema.fields();
        for (a, field) in fields
            .iter()
            .skip(columns.len())
            .take(self.aggregates.len())
            .enumerate()
        {
            let array = ScalarValue::iter_to_array(rows.iter().map(|((_, _, v), _)| v[a].clone()))?;
            let array = if array.data_type() == field.data_type() {
                array
            } else {
                cast(&array, field.data_type())?
            };
            columns.push(array);
        }
        if self.changelog() {
            columns.push(Arc::new(Int8Array::from_iter_values(
                rows.iter().map(|(_, op)| op.unwrap_or(OP_INSERT)),
            )));
        }
        out.collect(RecordBatch::try_new(self.output_schema.clone(), columns)?);
        Ok(())
    }

    /// Every session as a state row (keys, `_start`, `_end`, `_fired`, its
    /// accumulators' states), and every result row sessions stand for
    /// (keys, `_session`, then the row). The sessions are rebuilt from what
    /// was written, as taking an accumulator's state may reset it.
    fn snapshot_rows(&mut self) -> Result<(Option<RecordBatch>, Option<RecordBatch>)> {
        let fired: HashSet<(&OwnedRow, i64)> = self
            .by_expiry
            .iter()
            .map(|(_, key, start)| (key, *start))
            .collect();
        let mut all: Vec<(&OwnedRow, i64, &mut Session, bool)> = Vec::new();
        for (key, sessions) in self.sessions.iter_mut() {
            for (&start, session) in sessions.iter_mut() {
                let was_fired = fired.contains(&(key, start));
                all.push((key, start, session, was_fired));
            }
        }
        if all.is_empty() {
            return Ok((None, None));
        }
        let k = self.key_columns.len();
        let key_fields: Vec<Field> = self.output_schema.fields()[..k]
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let mut fields = key_fields.clone();
        let mut columns = self
            .converter
            .decode(all.iter().map(|(key, ..)| key.row()))?;
        for (name, values) in [
            ("_start", all.iter().map(|a| a.1).collect::<Vec<_>>()),
            ("_end", all.iter().map(|a| a.2.end).collect()),
        ] {
            fields.push(Field::new(name, DataType::Int64, false));
            columns.push(Arc::new(Int64Array::from(values)));
        }
        fields.push(Field::new("_fired", DataType::Boolean, false));
        columns.push(Arc::new(BooleanArray::from_iter(
            all.iter().map(|a| Some(a.3)),
        )));
        let states_at = columns.len();
        for a in 0..self.aggregates.len() {
            accumulator_state_columns(
                all.iter_mut().map(|s| &mut s.2.accumulators[a]),
                &format!("_state_{a}"),
                &mut fields,
                &mut columns,
            )?;
        }
        let sessions = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        // The result rows sessions stand for (changelog output only).
        let stood: Vec<(&OwnedRow, i64, &Emitted)> = all
            .iter()
            .flat_map(|(key, start, s, _)| s.emitted.iter().map(move |e| (*key, *start, e)))
            .collect();
        let emitted = if stood.is_empty() {
            None
        } else {
            let mut fields = key_fields;
            let mut columns = self
                .converter
                .decode(stood.iter().map(|(key, ..)| key.row()))?;
            for (name, values) in [
                ("_session", stood.iter().map(|e| e.1).collect::<Vec<_>>()),
                ("_start", stood.iter().map(|e| e.2.0).collect()),
                ("_end", stood.iter().map(|e| e.2.1).collect()),
            ] {
                fields.push(Field::new(name, DataType::Int64, false));
                columns.push(Arc::new(Int64Array::from(values)));
            }
            for a in 0..self.aggregates.len() {
                let column = ScalarValue::iter_to_array(stood.iter().map(|e| e.2.2[a].clone()))?;
                fields.push(Field::new(
                    format!("_value_{a}"),
                    column.data_type().clone(),
                    true,
                ));
                columns.push(column);
            }
            Some(RecordBatch::try_new(
                Arc::new(Schema::new(fields)),
                columns,
            )?)
        };
        // Taking an accumulator's state may reset it: rebuild from it.
        for (r, (_, _, session, _)) in all.iter_mut().enumerate() {
            let mut at = states_at;
            for (acc, agg) in session.accumulators.iter_mut().zip(&self.aggregates) {
                *acc = accumulator_from_state(
                    agg.create_accumulator()?,
                    sessions.columns(),
                    &mut at,
                    r,
                )?;
            }
        }
        Ok((Some(sessions), emitted))
    }

    fn restore_sessions(&mut self, rows: &RecordBatch) -> Result<()> {
        let k = self.key_columns.len();
        let bad = || OperatorError::Internal("bad session state".into());
        let keys = self
            .converter
            .encode(&rows.columns()[..k], rows.num_rows())?;
        let int = |i: usize| int64_column(rows, i);
        let (starts, ends) = (int(k)?, int(k + 1)?);
        let fired = rows.column(k + 2).as_boolean_opt().ok_or_else(bad)?;
        for r in 0..rows.num_rows() {
            let mut at = k + 3;
            let accumulators = self
                .aggregates
                .iter()
                .map(|agg| {
                    accumulator_from_state(agg.create_accumulator()?, rows.columns(), &mut at, r)
                })
                .collect::<Result<Vec<_>>>()?;
            let session = Session {
                end: ends.value(r),
                accumulators,
                emitted: Vec::new(),
            };
            self.keep(
                keys.row(r).owned(),
                starts.value(r),
                session,
                fired.value(r),
            );
        }
        Ok(())
    }

    fn restore_emitted(&mut self, rows: &RecordBatch) -> Result<()> {
        let k = self.key_columns.len();
        let bad = || OperatorError::Internal("bad session state".into());
        let keys = self
            .converter
            .encode(&rows.columns()[..k], rows.num_rows())?;
        let int = |i: usize| int64_column(rows, i);
        let (sessions, starts, ends) = (int(k)?, int(k + 1)?, int(k + 2)?);
        for r in 0..rows.num_rows() {
            let values = (0..self.aggregates.len())
                .map(|a| ScalarValue::try_from_array(rows.column(k + 3 + a), r))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let session = self
                .sessions
                .get_mut(&keys.row(r).owned())
                .and_then(|s| s.get_mut(&sessions.value(r)))
                .ok_or_else(bad)?;
            session
                .emitted
                .push((starts.value(r), ends.value(r), values));
        }
        Ok(())
    }

    /// Puts a session back, queued to fire or (fired) to expire.
    fn keep(&mut self, key: OwnedRow, start: i64, session: Session, fired: bool) {
        if fired {
            let expiry = session.end - 1 + self.emit.allowed_lateness;
            self.by_expiry.insert((expiry, key.clone(), start));
        } else {
            self.by_end.insert((session.end, key.clone(), start));
        }
        self.sessions.entry(key).or_default().insert(start, session);
    }

    /// Emits the running results of the sessions that took rows since the
    /// last early firing, if `early_fire` has passed since then.
    fn fire_early(&mut self, out: &mut Collector) -> Result<()> {
        if !self.emit.early_fire_due() {
            return Ok(());
        }
        for (key, start) in std::mem::take(&mut self.dirty) {
            let Some(mut session) = self.sessions.get_mut(&key).and_then(|s| s.remove(&start))
            else {
                continue;
            };
            self.emit(&key, start, &mut session, out)?;
            self.sessions.entry(key).or_default().insert(start, session);
        }
        Ok(())
    }
}

impl Operator for SessionWindowOperator {
    fn name(&self) -> String {
        format!("SessionWindowAggregate(gap {} ms)", self.gap)
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.metrics = Some(ctx.metrics.clone());
        let state = KeyedState::open(ctx)?;
        for (_, suffix, rows) in state.scan()? {
            if suffix.first() == Some(&TAG_EMITTED) {
                self.restore_emitted(&rows)?;
            } else {
                self.restore_sessions(&rows)?;
            }
        }
        for meta in state.metas()? {
            if let Ok(bytes) = <[u8; 8]>::try_from(meta.as_slice()) {
                self.watermark = self.watermark.max(i64::from_le_bytes(bytes));
            }
        }
        self.state = Some(state);
        Ok(())
    }

    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        let Some(state) = self.state.clone() else {
            return Ok(());
        };
        let k = self.key_columns.len();
        let (sessions, emitted) = self.snapshot_rows()?;
        let mut entries = Vec::new();
        for (tag, rows) in [(TAG_SESSION, sessions), (TAG_EMITTED, emitted)] {
            if let Some(rows) = rows {
                for (kg, part) in split_by_key_group(&rows, &rows.columns()[..k])? {
                    entries.push((kg, vec![tag], part));
                }
            }
        }
        entries.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        state.replace(&entries, &self.watermark.to_le_bytes())
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let ts = event_time_millis(&batch, self.time_column)?;
        let keys: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.converter.encode(&keys, batch.num_rows())?;
        let n = batch.num_rows();
        let args = evaluate_args(&self.aggregates, &batch)?;
        let masks = evaluate_filters(&self.filters, &batch)?;
        let mut late: Vec<(u32, &'static str)> = Vec::new();
        // Fired sessions that late rows changed: corrected once per batch.
        let mut corrected: Vec<(OwnedRow, i64)> = Vec::new();
        for row in 0..n {
            if ts.is_null(row) {
                late.push((row as u32, REASON_NO_TIME));
                continue;
            }
            let t = ts.value(row);
            let key = rows.row(row).owned();
            let (start, mut session) = self.merge_into_new(&key, t, t + self.gap)?;
            if session.end - 1 + self.emit.allowed_lateness <= self.watermark {
                // Nothing kept could take the row: the merged session has
                // already ended (and expired) by the watermark. (Merging
                // only happens with kept sessions, so nothing was lost.)
                late.push((row as u32, REASON_LATE));
                continue;
            }
            for ((acc, values), mask) in session.accumulators.iter_mut().zip(&args).zip(&masks) {
                let included = mask.as_ref().is_none_or(|m| {
                    let m = m.as_boolean();
                    m.is_valid(row) && m.value(row)
                });
                if included {
                    let one: Vec<ArrayRef> = values.iter().map(|v| v.slice(row, 1)).collect();
                    acc.update_batch(&one)?;
                }
            }
            let fired = session.end - 1 <= self.watermark;
            if fired {
                corrected.push((key.clone(), start));
            } else if self.emit.early_fire.is_some() {
                self.dirty.insert((key.clone(), start));
            }
            self.keep(key, start, session, fired);
        }
        for (key, start) in corrected {
            // Gone if a later row merged it into another session.
            let Some(mut session) = self.sessions.get_mut(&key).and_then(|s| s.remove(&start))
            else {
                continue;
            };
            self.emit(&key, start, &mut session, out)?;
            self.sessions.entry(key).or_default().insert(start, session);
        }
        if !late.is_empty() {
            if let Some(m) = &self.metrics {
                m.add_late_rows(late.len() as u64);
            }
            if let Some(output) = &self.late {
                output.emit(&batch, &late, self.watermark, out)?;
            }
        }
        self.fire_early(out)
    }

    /// Early firings happen on time, also when no row arrives.
    fn next_timer(&self) -> Option<std::time::Instant> {
        self.emit.next_early_fire(!self.dirty.is_empty())
    }

    fn on_timer(&mut self, _now: std::time::Instant, out: &mut Collector) -> Result<()> {
        self.fire_early(out)
    }

    fn handle_watermark(&mut self, watermark: Timestamp, out: &mut Collector) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        while let Some((end, _, _)) = self.by_end.first() {
            if end - 1 > self.watermark {
                break;
            }
            let Some((_, key, start)) = self.by_end.pop_first() else {
                break;
            };
            let session = self.sessions.get_mut(&key).and_then(|s| s.remove(&start));
            if let Some(mut session) = session {
                self.dirty.remove(&(key.clone(), start));
                self.emit(&key, start, &mut session, out)?;
                if self.emit.allowed_lateness > 0
                    && session.end - 1 + self.emit.allowed_lateness > self.watermark
                {
                    self.keep(key.clone(), start, session, true);
                }
            }
            if self.sessions.get(&key).is_some_and(|s| s.is_empty()) {
                self.sessions.remove(&key);
            }
        }
        // Kept sessions whose lateness ran out.
        while let Some((expiry, _, _)) = self.by_expiry.first() {
            if *expiry > self.watermark {
                break;
            }
            let Some((_, key, start)) = self.by_expiry.pop_first() else {
                break;
            };
            if let Some(open) = self.sessions.get_mut(&key) {
                open.remove(&start);
                if open.is_empty() {
                    self.sessions.remove(&key);
                }
            }
        }
        out.emit_watermark(watermark);
        Ok(())
    }
}
