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
//! State lives in memory: sessions are not yet written to the state store
//! at checkpoints (the tumbling/hopping operator is).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int8Array, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::aggregate::{
    aggregate_fields, evaluate_args, evaluate_filters, event_time_millis, key_converter, key_fields,
};
use crate::emit::EmitControl;
use crate::late::{LateOutput, REASON_LATE, REASON_NO_TIME};
use crate::message::Timestamp;
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::updating::{OP_DELETE, OP_INSERT, OP_UPDATE_AFTER, OP_UPDATE_BEFORE};
use crate::watermark::Clock;
use crate::{OperatorError, Result};

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
    converter: RowConverter,
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
        let converter = key_converter(&key_fields)?;
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
        let mut columns = self
            .converter
            .convert_rows(std::iter::repeat_n(key.row(), n))?;
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
        Ok(())
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let ts = event_time_millis(&batch, self.time_column)?;
        let keys: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.converter.convert_columns(&keys)?;
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
