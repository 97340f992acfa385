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
//! State lives in memory: sessions are not yet written to the state store
//! at checkpoints (the tumbling/hopping operator is).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::aggregate::{
    aggregate_fields, evaluate_args, evaluate_filters, event_time_millis, key_converter, key_fields,
};
use crate::late::{LateOutput, REASON_LATE, REASON_NO_TIME};
use crate::message::Timestamp;
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::{OperatorError, Result};

struct Session {
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
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
                    self.by_end.remove(&(old.end, key.clone(), s));
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
            return Ok((start, Session { end, accumulators }));
        };
        for mut other in sessions {
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

    fn fire(
        &mut self,
        key: &OwnedRow,
        start: i64,
        mut session: Session,
        out: &mut Collector,
    ) -> Result<()> {
        let mut columns = self.converter.convert_rows([key.row()])?;
        columns.push(Arc::new(TimestampMillisecondArray::from_value(start, 1)));
        columns.push(Arc::new(TimestampMillisecondArray::from_value(
            session.end,
            1,
        )));
        for (acc, field) in session
            .accumulators
            .iter_mut()
            .zip(self.output_schema.fields().iter().skip(columns.len()))
        {
            let value = acc.evaluate()?;
            let array = value.to_array()?;
            let array = if array.data_type() == field.data_type() {
                array
            } else {
                cast(&array, field.data_type())?
            };
            columns.push(array);
        }
        out.collect(RecordBatch::try_new(self.output_schema.clone(), columns)?);
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
        for row in 0..n {
            if ts.is_null(row) {
                late.push((row as u32, REASON_NO_TIME));
                continue;
            }
            let t = ts.value(row);
            let key = rows.row(row).owned();
            let (start, mut session) = self.merge_into_new(&key, t, t + self.gap)?;
            if session.end - 1 <= self.watermark {
                // Nothing open could take the row: the merged session has
                // already ended by the watermark. (Merging only happens
                // with open sessions, so nothing was lost.)
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
            self.by_end.insert((session.end, key.clone(), start));
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
        Ok(())
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
            if let Some(session) = session {
                self.fire(&key, start, session, out)?;
            }
            if self.sessions.get(&key).is_some_and(|s| s.is_empty()) {
                self.sessions.remove(&key);
            }
        }
        out.emit_watermark(watermark);
        Ok(())
    }
}
