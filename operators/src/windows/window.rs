//! The window aggregate: TUMBLE, HOP and CUMULATE windows.
//!
//! Rows are assigned to the windows `[start, end)` that hold their event
//! time ([`WindowAssigner`]: one for TUMBLE, several for HOP and CUMULATE); each open window keeps, per group key, the DataFusion
//! `GroupsAccumulator` state of every aggregate (the vectorised path: one
//! `update_batch` call per window per input batch). A window *fires* when
//! the watermark reaches its last millisecond (`end - 1 <= watermark`, as in
//! Flink): its rows are emitted as
//!
//! ```text
//!   key_0 .. key_k-1 | window_start | window_end | agg_0 .. agg_m-1
//! ```
//!
//! and its state is dropped. A row all of whose windows have already fired
//! is late: it is dropped and counted (a row behind the watermark whose window is
//! still open is *not* late and counts), and sent to the dead-letter output
//! if there is one ([`crate::late`]).
//!
//! **Allowed lateness** (Flink's `table.exec.emit.allow-lateness`): a fired
//! window is kept until the watermark passes `end - 1 + lateness`. A row
//! that arrives for it in that time updates it, and the window emits a
//! correction for each group whose result changed: `-U` (the result it
//! emitted before) and `+U` (the new one), or `+I` for a group it had not
//! emitted. The output is then a changelog (an `_op` column, see
//! [`crate::updating`]) whose first result of each window is `+I`. A row is
//! late only once every window it belongs to is past its lateness.
//!
//! **Early firing** (Flink's `table.exec.emit.early-fire.delay`): every
//! `delay` of processing time (checked as input arrives; a delay of 0
//! fires after every input batch) each open window that received rows
//! emits its running results as a changelog: `+I` for a group's first
//! result, then `-U`/`+U` when it changes; its final firing emits only
//! what changed since. The net effect of the changelog is the window's
//! final result.
//!
//! State: open windows live in memory between checkpoints. At a checkpoint
//! barrier every open window is written to the operator's state table (one
//! entry per window, keyed by its start, order-preserving; the value is the
//! Arrow IPC encoding of the group keys and the accumulators' serialisable
//! `state()`), and on open the operator restores whatever its table holds.
//!
//! **Larger than memory.** When the open windows' in-memory state passes
//! the cache size ([`WindowAggregateOperator::with_cache_bytes`], `SET
//! 'state.cache.size'`), the largest windows are spilled: their groups go
//! to the state backend as a run per key group ([`crate::spill`]) and they
//! start afresh in memory. A spilled window fires one key group at a time,
//! merging its runs with what memory holds, so memory holds one key group
//! of it at once, and its output is passed on as it goes. Windows that emit
//! a changelog (allowed lateness, early firing) are not spilled: they keep
//! what they emitted to diff against, in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int8Array, TimestampMillisecondArray, UInt32Array,
    new_null_array,
};
use datafusion::arrow::compute::{concat, concat_batches, take, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use eddy_state::keys::{KeyBuilder, decode_i64};

use crate::aggregate::{
    aggregate_fields, conform_columns, evaluate_args, evaluate_filters, event_time_millis,
    key_fields,
};
use crate::emit::EmitControl;
use crate::keyed_state::{self, KeyedState, split_by_key_group};
use crate::late::{LateOutput, REASON_LATE, REASON_NO_TIME, REASON_TOO_LATE};
use crate::message::Timestamp;
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::spill::{Scope, SpillStore};
use crate::updating::{OP_INSERT, OP_UPDATE_AFTER, OP_UPDATE_BEFORE};
use crate::watermark::Clock;
use crate::{OperatorError, Result};

/// A window's `(end, start)` in ms; ordering by it is firing order.
pub type WindowKey = (i64, i64);

/// Which windows a row belongs to (sizes in milliseconds, windows aligned
/// to the epoch, as Flink's window TVFs without an offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAssigner {
    /// `[k·size, (k+1)·size)`: one window per row.
    Tumble { size: i64 },
    /// Windows of `size` starting every `slide`: `ceil(size / slide)` per row.
    Hop { slide: i64, size: i64 },
    /// Windows growing by `step` from the start of each `size` period:
    /// `[k·size, k·size + j·step)`, for every `j` whose window holds the row.
    Cumulate { step: i64, size: i64 },
}

impl WindowAssigner {
    fn validate(self) -> Result<()> {
        let ok = match self {
            WindowAssigner::Tumble { size } => size > 0,
            WindowAssigner::Hop { slide, size } => slide > 0 && size > 0,
            WindowAssigner::Cumulate { step, size } => step > 0 && size > 0 && size % step == 0,
        };
        if ok {
            Ok(())
        } else {
            Err(OperatorError::Internal(format!("invalid window {self:?}")))
        }
    }

    /// Appends the `(end, start)` of every window that holds time `ts`.
    pub fn assign(self, ts: i64, out: &mut Vec<WindowKey>) {
        match self {
            WindowAssigner::Tumble { size } => {
                let start = ts - ts.rem_euclid(size);
                out.push((start + size, start));
            }
            WindowAssigner::Hop { slide, size } => {
                let mut start = ts - ts.rem_euclid(slide);
                while start > ts - size {
                    out.push((start + size, start));
                    start -= slide;
                }
            }
            WindowAssigner::Cumulate { step, size } => {
                let start = ts - ts.rem_euclid(size);
                let mut end = ts - ts.rem_euclid(step) + step;
                while end <= start + size {
                    out.push((end, start));
                    end += step;
                }
            }
        }
    }
}

/// A window aggregate over `time_column`, grouped by `key_columns`.
pub struct WindowAggregateOperator {
    key_columns: Vec<usize>,
    time_column: usize,
    assigner: WindowAssigner,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// `FILTER (WHERE ...)` per aggregate: rows where it is not true are
    /// left out of that aggregate.
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    key_schema: SchemaRef,
    output_schema: SchemaRef,
    /// Open windows by `(end, start)`: they fire in this order.
    windows: BTreeMap<WindowKey, WindowState>,
    /// Fired windows kept for late rows (allowed lateness).
    fired: BTreeMap<WindowKey, WindowState>,
    /// Allowed lateness and early firing.
    emit: EmitControl,
    /// Open windows that took rows since the last early firing.
    dirty: BTreeSet<WindowKey>,
    late: Option<LateOutput>,
    watermark: Timestamp,
    state: Option<KeyedState>,
    /// Open windows spill past this many bytes of in-memory state.
    cache_bytes: usize,
    spill: Option<SpillStore>,
    metrics: Option<JobMetrics>,
    group_ids: Vec<usize>,
}

/// In-memory state an operator subtask keeps before spilling to the state
/// backend, unless `SET 'state.cache.size'` says otherwise.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// A spilled window's output is passed on in batches of about this many rows.
const FLUSH_ROWS: usize = 8192;

impl std::fmt::Debug for WindowAggregateOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowAggregateOperator")
            .field("key_columns", &self.key_columns)
            .field("assigner", &self.assigner)
            .field("open_windows", &self.windows.len())
            .finish_non_exhaustive()
    }
}

/// Group keys of one window: interned by DataFusion's `GroupValues`, or a
/// single group when there are no key columns.
enum Groups {
    Single { used: bool },
    Values(Box<dyn GroupValues>),
}

struct WindowState {
    groups: Groups,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// The results this window has emitted so far (early, or when it fired
    /// and since), if any.
    emitted: Option<Emitted>,
}

/// Aggregate results a window emitted, by group id.
#[derive(Clone)]
struct Emitted {
    aggs: Vec<ArrayRef>,
    /// Groups `0..rows` have a result.
    rows: usize,
}

/// A window's results: group keys, aggregate values, number of groups.
type Results = (Vec<ArrayRef>, Vec<ArrayRef>, usize);

/// An input batch, evaluated for the aggregates.
struct Inputs {
    keys: Vec<ArrayRef>,
    args: Vec<Vec<ArrayRef>>,
    masks: Vec<Option<ArrayRef>>,
    rows: usize,
}

impl WindowState {
    /// Bytes of memory its groups and accumulators hold.
    fn size(&self) -> usize {
        let groups = match &self.groups {
            Groups::Single { .. } => 0,
            Groups::Values(values) => values.size(),
        };
        groups + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }

    /// Adds `inputs`; the group ids of its rows are left in `group_ids`.
    fn update(&mut self, inputs: &Inputs, group_ids: &mut Vec<usize>) -> Result<()> {
        let num_groups = intern(&mut self.groups, &inputs.keys, inputs.rows, group_ids)?;
        for ((acc, values), mask) in self
            .accumulators
            .iter_mut()
            .zip(&inputs.args)
            .zip(&inputs.masks)
        {
            let mask = mask.as_ref().map(|m| m.as_boolean());
            acc.update_batch(values, group_ids, mask, num_groups)?;
        }
        Ok(())
    }
}

/// Where a window stands relative to the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Open,
    /// Fired, but still within its allowed lateness.
    Fired,
    /// Past its allowed lateness: rows for it are late.
    Expired,
}

impl WindowAggregateOperator {
    /// `input_schema` is the schema of the rows this operator receives;
    /// `aggregates` are bound against it. The output schema is keys, then
    /// `window_start`, `window_end`, then one column per aggregate.
    pub fn try_new(
        input_schema: &SchemaRef,
        key_columns: Vec<usize>,
        time_column: usize,
        assigner: WindowAssigner,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
    ) -> Result<Self> {
        assigner.validate()?;
        let key_fields = key_fields(input_schema, &key_columns);
        let mut fields = key_fields.clone();
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        fields.push(Field::new("window_start", ts.clone(), false));
        fields.push(Field::new("window_end", ts, false));
        fields.extend(aggregate_fields(&aggregates));
        Ok(Self {
            key_columns,
            time_column,
            assigner,
            filters: vec![None; aggregates.len()],
            aggregates,
            key_schema: Arc::new(Schema::new(key_fields)),
            output_schema: Arc::new(Schema::new(fields)),
            windows: BTreeMap::new(),
            fired: BTreeMap::new(),
            emit: EmitControl::default(),
            dirty: BTreeSet::new(),
            late: None,
            watermark: Timestamp::MIN,
            state: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
            spill: None,
            metrics: None,
            group_ids: Vec::new(),
        })
    }

    /// Sets each aggregate's `FILTER (WHERE ...)` condition (a boolean
    /// expression over the input), in the order of the aggregates.
    pub fn with_filters(mut self, filters: Vec<Option<Arc<dyn PhysicalExpr>>>) -> Result<Self> {
        if filters.len() != self.aggregates.len() {
            return Err(OperatorError::Internal(format!(
                "{} filters for {} aggregates",
                filters.len(),
                self.aggregates.len()
            )));
        }
        self.filters = filters;
        Ok(self)
    }

    /// Keeps fired windows open for late rows for `ms` milliseconds; the
    /// output becomes a changelog (an `_op` column is appended).
    pub fn with_allowed_lateness(mut self, ms: i64) -> Result<Self> {
        self.emit.set_allowed_lateness(ms)?;
        self.output_schema = self.emit.output_schema(&self.output_schema);
        Ok(self)
    }

    /// Emits the running results of open windows every `delay` (checked as
    /// input arrives); the output becomes a changelog.
    pub fn with_early_fire(mut self, delay: Option<Duration>) -> Self {
        self.emit.early_fire = delay;
        self.output_schema = self.emit.output_schema(&self.output_schema);
        self
    }

    /// Spills open windows to the state backend once their in-memory state
    /// passes `bytes`.
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Reads processing time from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.emit.clock = clock;
        self
    }

    /// Sends late rows to the dead-letter side output.
    pub fn with_late_output(mut self, late: LateOutput) -> Self {
        self.late = Some(late);
        self
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    fn changelog(&self) -> bool {
        self.emit.changelog()
    }

    fn new_window(&self) -> Result<WindowState> {
        let groups = if self.key_columns.is_empty() {
            Groups::Single { used: false }
        } else {
            Groups::Values(new_group_values(
                self.key_schema.clone(),
                &GroupOrdering::None,
            )?)
        };
        let accumulators = self
            .aggregates
            .iter()
            .map(|a| new_accumulator(a))
            .collect::<Result<_>>()?;
        Ok(WindowState {
            groups,
            accumulators,
            emitted: None,
        })
    }

    /// A window fires once the watermark reaches its last millisecond, and
    /// takes late rows until the watermark passes its allowed lateness.
    fn status(&self, (end, _): WindowKey) -> Status {
        if end - 1 > self.watermark {
            Status::Open
        } else if end - 1 + self.emit.allowed_lateness > self.watermark {
            Status::Fired
        } else {
            Status::Expired
        }
    }

    /// What `batch` contributes: its group keys, each aggregate's
    /// arguments and `FILTER` mask.
    fn inputs(&self, batch: &RecordBatch) -> Result<Inputs> {
        let keys: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        Ok(Inputs {
            keys,
            args: evaluate_args(&self.aggregates, batch)?,
            masks: evaluate_filters(&self.filters, batch)?,
            rows: batch.num_rows(),
        })
    }

    /// Adds `batch` to `window`; the group ids of its rows are left in
    /// `group_ids`.
    fn accumulate_into(
        &self,
        window: &mut WindowState,
        batch: &RecordBatch,
        group_ids: &mut Vec<usize>,
    ) -> Result<()> {
        window.update(&self.inputs(batch)?, group_ids)
    }

    /// Adds `batch` (rows that all belong to window `key`) to that window:
    /// an open one, or a fired one within its allowed lateness (which then
    /// emits its corrections).
    fn accumulate(
        &mut self,
        key: WindowKey,
        batch: &RecordBatch,
        out: &mut Collector,
    ) -> Result<()> {
        let mut ids = std::mem::take(&mut self.group_ids);
        let result = match self.status(key) {
            Status::Open => {
                if !self.windows.contains_key(&key) {
                    let w = self.new_window()?;
                    self.windows.insert(key, w);
                }
                if self.emit.early_fire.is_some() {
                    self.dirty.insert(key);
                }
                let inputs = self.inputs(batch)?;
                match self.windows.get_mut(&key) {
                    Some(window) => window.update(&inputs, &mut ids),
                    None => Err(OperatorError::Internal("window vanished".into())),
                }
            }
            Status::Fired => self.update_fired(key, batch, &mut ids, out),
            Status::Expired => Err(OperatorError::Internal("rows for an expired window".into())),
        };
        self.group_ids = ids;
        result
    }

    /// Adds each window's rows of `batch` (windows that expired were left
    /// out by the caller).
    fn accumulate_parts(
        &mut self,
        batch: &RecordBatch,
        parts: BTreeMap<WindowKey, Vec<u32>>,
        out: &mut Collector,
    ) -> Result<()> {
        for (key, rows) in parts {
            if rows.len() == batch.num_rows() {
                self.accumulate(key, batch, out)?;
                continue;
            }
            let indices = UInt32Array::from(rows);
            let columns = batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let part = RecordBatch::try_new(batch.schema(), columns)?;
            self.accumulate(key, &part, out)?;
        }
        Ok(())
    }

    /// The group keys and aggregate results of a window, consuming its
    /// state. `None` for a window without rows.
    fn evaluate(&self, window: &mut WindowState) -> Result<Option<Results>> {
        let (keys, rows) = match &mut window.groups {
            Groups::Single { used: false } => return Ok(None),
            Groups::Single { used: true } => (vec![], 1),
            Groups::Values(values) => {
                let n = values.len();
                (values.emit(EmitTo::All)?, n)
            }
        };
        let aggs = window
            .accumulators
            .iter_mut()
            .map(|acc| Ok(acc.evaluate(EmitTo::All)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((keys, aggs, rows)))
    }

    /// Output rows of window `(end, start)`: `keys`, the bounds, `aggs` and,
    /// for a changelog, `op`.
    fn output(
        &self,
        (end, start): WindowKey,
        (mut keys, aggs, rows): Results,
        op: i8,
    ) -> Result<RecordBatch> {
        keys.push(Arc::new(TimestampMillisecondArray::from_value(start, rows)));
        keys.push(Arc::new(TimestampMillisecondArray::from_value(end, rows)));
        keys.extend(aggs);
        if self.changelog() {
            keys.push(Arc::new(Int8Array::from_value(op, rows)));
        }
        let columns = conform_columns(&self.output_schema, keys)?;
        Ok(RecordBatch::try_new(self.output_schema.clone(), columns)?)
    }

    /// Emits the result of window `key`; keeps it for late rows if there
    /// is an allowed lateness, else forgets it.
    fn fire(&mut self, key: WindowKey, mut window: WindowState, out: &mut Collector) -> Result<()> {
        self.dirty.remove(&key);
        if self.spill.as_ref().is_some_and(|s| s.has(&scope(key))) {
            return self.fire_spilled(key, window, out);
        }
        if self.emit.allowed_lateness > 0 {
            let kept = self.emit_changes(key, window, None, out)?;
            self.fired.insert(key, kept);
            return Ok(());
        }
        let emitted = window.emitted.take();
        let Some(results) = self.evaluate(&mut window)? else {
            return Ok(());
        };
        match emitted {
            None => out.collect(self.output(key, results, OP_INSERT)?),
            // It fired early: emit what changed since.
            Some(before) => {
                self.emit_diff(key, results, Some(&before), None, out)?;
            }
        }
        Ok(())
    }

    /// Fires window `key`, part of which was spilled: one key group at a
    /// time, its runs merged with what `window` (memory) holds for it.
    fn fire_spilled(
        &mut self,
        key: WindowKey,
        window: WindowState,
        out: &mut Collector,
    ) -> Result<()> {
        let scope = scope(key);
        let mut in_memory: BTreeMap<u16, RecordBatch> =
            self.states_by_key_group(window)?.into_iter().collect();
        let spill = self.spill.as_ref().ok_or_else(|| {
            OperatorError::Internal("spilled window without a spill table".into())
        })?;
        let (mut pending, mut rows) = (Vec::new(), 0);
        for kg in spill.key_groups() {
            let mut parts = spill.read(&scope, kg)?;
            parts.extend(in_memory.remove(&kg));
            if parts.is_empty() {
                continue;
            }
            let mut merged = self.new_window()?;
            for part in &parts {
                self.merge_states(&mut merged, part)?;
            }
            drop(parts);
            if let Some(results) = self.evaluate(&mut merged)? {
                let batch = self.output(key, results, OP_INSERT)?;
                rows += batch.num_rows();
                pending.push(batch);
            }
            if rows >= FLUSH_ROWS {
                out.collect(concat_batches(&self.output_schema, &pending)?);
                out.flush()?;
                (pending, rows) = (Vec::new(), 0);
            }
        }
        if !pending.is_empty() {
            out.collect(concat_batches(&self.output_schema, &pending)?);
        }
        if let Some(spill) = self.spill.as_mut() {
            spill.retire(&scope);
        }
        Ok(())
    }

    /// Spills the largest open windows while their in-memory state is over
    /// the cache size, down to half of it.
    fn spill_if_full(&mut self) -> Result<()> {
        if self.spill.is_none() || self.changelog() || self.key_columns.is_empty() {
            return Ok(());
        }
        let mut total: usize = self.windows.values().map(WindowState::size).sum();
        if total <= self.cache_bytes {
            return Ok(());
        }
        let mut sizes: Vec<(usize, WindowKey)> =
            self.windows.iter().map(|(k, w)| (w.size(), *k)).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        for (size, key) in sizes {
            if total <= self.cache_bytes / 2 {
                break;
            }
            self.spill_window(key)?;
            total -= size;
        }
        Ok(())
    }

    /// Writes window `key`'s groups to the spill table as one run and
    /// starts it afresh in memory.
    fn spill_window(&mut self, key: WindowKey) -> Result<()> {
        let fresh = self.new_window()?;
        let Some(window) = self.windows.insert(key, fresh) else {
            return Ok(());
        };
        let parts = self.states_by_key_group(window)?;
        if parts.is_empty() {
            return Ok(());
        }
        if let Some(spill) = self.spill.as_mut() {
            let bytes = spill.write(scope(key), &parts)?;
            if let Some(m) = &self.metrics {
                m.add_spilled_bytes(bytes);
            }
            tracing::debug!(
                window_end = key.0,
                groups = parts.iter().map(|(_, p)| p.num_rows()).sum::<usize>(),
                bytes,
                "spilled a window"
            );
        }
        Ok(())
    }

    /// A window's group keys and accumulator states (consuming it), cut by
    /// key group; empty for a window without rows.
    fn states_by_key_group(&self, window: WindowState) -> Result<Vec<(u16, RecordBatch)>> {
        let states = self.window_states(window)?;
        if states.num_rows() == 0 {
            return Ok(Vec::new());
        }
        split_by_key_group(&states, &states.columns()[..self.key_columns.len()])
    }

    /// Late rows for fired window `key`: update it and emit the changes of
    /// the groups they touched.
    fn update_fired(
        &mut self,
        key: WindowKey,
        batch: &RecordBatch,
        ids: &mut Vec<usize>,
        out: &mut Collector,
    ) -> Result<()> {
        let mut state = match self.fired.remove(&key) {
            Some(w) => w,
            None => self.new_window()?,
        };
        self.accumulate_into(&mut state, batch, ids)?;
        let mut touched: Vec<usize> = ids.clone();
        touched.sort_unstable();
        touched.dedup();
        let kept = self.emit_changes(key, state, Some(&touched), out)?;
        self.fired.insert(key, kept);
        Ok(())
    }

    /// Emits the running results of every open window that took rows
    /// since the last early firing, if `early_fire` has passed since then.
    fn fire_early(&mut self, out: &mut Collector) -> Result<()> {
        if !self.emit.early_fire_due() {
            return Ok(());
        }
        for key in std::mem::take(&mut self.dirty) {
            if let Some(window) = self.windows.remove(&key) {
                let kept = self.emit_changes(key, window, None, out)?;
                self.windows.insert(key, kept);
            }
        }
        Ok(())
    }

    /// Emits the changes of window `key` since its last emission (all of
    /// its groups, or only `candidates`) and returns it, still open, with
    /// its new results recorded as emitted.
    fn emit_changes(
        &self,
        key: WindowKey,
        window: WindowState,
        candidates: Option<&[usize]>,
        out: &mut Collector,
    ) -> Result<WindowState> {
        let (mut keep, mut now) = self.copy_window(window)?;
        if let Some(results) = self.evaluate(&mut now)? {
            keep.emitted =
                Some(self.emit_diff(key, results, keep.emitted.as_ref(), candidates, out)?);
        }
        Ok(keep)
    }

    /// Emits, for each group (of `candidates`, or all) whose result differs
    /// from `before`, `-U` old and `+U` new, or `+I` for a group without
    /// an earlier result. Returns the new results.
    fn emit_diff(
        &self,
        key: WindowKey,
        (keys, aggs, rows): Results,
        before: Option<&Emitted>,
        candidates: Option<&[usize]>,
        out: &mut Collector,
    ) -> Result<Emitted> {
        let (mut changed, mut inserted) = (Vec::new(), Vec::new());
        let mut consider = |g: usize| -> Result<()> {
            match before {
                Some(b) if g < b.rows => {
                    if !same_results(&b.aggs, &aggs, g)? {
                        changed.push(g as u32);
                    }
                }
                _ => inserted.push(g as u32),
            }
            Ok(())
        };
        match candidates {
            Some(groups) => groups.iter().try_for_each(|&g| consider(g))?,
            None => (0..rows).try_for_each(&mut consider)?,
        }
        let pick = |cols: &[ArrayRef], rows: &[u32]| -> Result<Vec<ArrayRef>> {
            let idx = UInt32Array::from(rows.to_vec());
            cols.iter()
                .map(|c| Ok(take(c.as_ref(), &idx, None)?))
                .collect()
        };
        let n = changed.len();
        if let (true, Some(before)) = (n > 0, before) {
            let old = (pick(&keys, &changed)?, pick(&before.aggs, &changed)?, n);
            out.collect(self.output(key, old, OP_UPDATE_BEFORE)?);
            let new = (pick(&keys, &changed)?, pick(&aggs, &changed)?, n);
            out.collect(self.output(key, new, OP_UPDATE_AFTER)?);
        }
        let n = inserted.len();
        if n > 0 {
            let new = (pick(&keys, &inserted)?, pick(&aggs, &inserted)?, n);
            out.collect(self.output(key, new, OP_INSERT)?);
        }
        Ok(Emitted { aggs, rows })
    }

    /// Two identical windows from one (group ids kept), through the
    /// accumulators' serialisable state.
    /// The first keeps what the window emitted so far.
    fn copy_window(&self, mut window: WindowState) -> Result<(WindowState, WindowState)> {
        let emitted = window.emitted.take();
        let batch = self.window_states(window)?;
        let mut first = self.decode_window(&batch)?;
        first.emitted = emitted;
        Ok((first, self.decode_window(&batch)?))
    }

    /// Writes every open (and every fired but kept) window to the state
    /// table, replacing what this subtask stored before: per window and
    /// key group, its rows (keys, accumulator states, what it emitted).
    fn snapshot(&mut self) -> Result<()> {
        let Some(state) = self.state.clone() else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let mut entries = Vec::new();
        for tag in [TAG_OPEN, TAG_FIRED] {
            let windows = if tag == TAG_OPEN {
                std::mem::take(&mut self.windows)
            } else {
                std::mem::take(&mut self.fired)
            };
            let mut restored_windows = BTreeMap::new();
            for (key, window) in windows {
                let (rows, restored) = self.encode_rows(window)?;
                if let Some(rows) = rows {
                    let k = self.key_columns.len();
                    for (kg, part) in split_by_key_group(&rows, &rows.columns()[..k])? {
                        entries.push((kg, window_key(key, tag), part));
                    }
                }
                restored_windows.insert(key, restored);
            }
            if tag == TAG_OPEN {
                self.windows = restored_windows;
            } else {
                self.fired = restored_windows;
            }
        }
        entries.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        state.replace(&entries, &self.watermark.to_le_bytes())?;
        tracing::debug!(
            windows = self.windows.len() + self.fired.len(),
            groups = entries
                .iter()
                .map(|(_, _, rows)| rows.num_rows())
                .sum::<usize>(),
            ms = started.elapsed().as_millis() as u64,
            "window state snapshotted"
        );
        Ok(())
    }

    /// A window as state rows: keys, accumulator states, then what it
    /// emitted (one nullable column per aggregate, and `_emitted`); `None`
    /// for a window without rows. Also returns the window, rebuilt from
    /// those states (DataFusion's `state()` consumes accumulators).
    fn encode_rows(&self, mut window: WindowState) -> Result<(Option<RecordBatch>, WindowState)> {
        let emitted = window.emitted.take();
        let states = self.window_states(window)?;
        let mut restored = self.decode_window(&states)?;
        restored.emitted = emitted;
        let n = states.num_rows();
        if n == 0 {
            return Ok((None, restored));
        }
        let mut fields: Vec<Field> = states
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = states.columns().to_vec();
        let k = self.key_columns.len() + 2;
        let done = restored.emitted.as_ref().map_or(0, |e| e.rows);
        for (i, f) in self.output_schema.fields()[k..k + self.aggregates.len()]
            .iter()
            .enumerate()
        {
            let nulls = new_null_array(f.data_type(), n - done);
            let column = match &restored.emitted {
                Some(e) => concat(&[e.aggs[i].slice(0, done).as_ref(), nulls.as_ref()])?,
                None => nulls,
            };
            fields.push(Field::new(
                format!("emitted_{i}"),
                f.data_type().clone(),
                true,
            ));
            columns.push(column);
        }
        fields.push(Field::new("_emitted", DataType::Boolean, false));
        columns.push(Arc::new(BooleanArray::from_iter(
            (0..n).map(|g| Some(g < done)),
        )));
        let rows = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        Ok((Some(rows), restored))
    }

    /// The window [`Self::encode_rows`] stored (its key groups' rows
    /// concatenated, in any order).
    fn decode_rows(&self, rows: &RecordBatch) -> Result<WindowState> {
        let m = self.aggregates.len();
        let width = rows.num_columns();
        let flags = rows
            .column(width - 1)
            .as_boolean_opt()
            .ok_or_else(|| OperatorError::Internal("bad window state".into()))?;
        // `Emitted` covers group ids `0..rows`: emitted groups go first.
        let (mut order, rest): (Vec<u32>, Vec<u32>) =
            (0..rows.num_rows() as u32).partition(|&i| flags.value(i as usize));
        let done = order.len();
        order.extend(rest);
        let rows = take_record_batch(rows, &UInt32Array::from(order))?;
        let states = rows.project(&(0..width - m - 1).collect::<Vec<_>>())?;
        let mut window = self.decode_window(&states)?;
        if done > 0 {
            window.emitted = Some(Emitted {
                aggs: rows.columns()[width - m - 1..width - 1]
                    .iter()
                    .map(|c| c.slice(0, done))
                    .collect(),
                rows: done,
            });
        }
        Ok(window)
    }

    /// A window's group keys and accumulator states as one batch.
    fn window_states(&self, mut window: WindowState) -> Result<RecordBatch> {
        let (mut columns, rows) = match &mut window.groups {
            Groups::Single { used } => (vec![], usize::from(*used)),
            Groups::Values(values) => {
                let n = values.len();
                (values.emit(EmitTo::All)?, n)
            }
        };
        let mut fields: Vec<Field> = self
            .key_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for (agg, acc) in self.aggregates.iter().zip(&mut window.accumulators) {
            if rows == 0 {
                continue;
            }
            let state = acc.state(EmitTo::All)?;
            for (f, col) in agg.state_fields()?.iter().zip(state) {
                fields.push(
                    f.as_ref()
                        .clone()
                        .with_nullable(true)
                        .with_data_type(col.data_type().clone()),
                );
                columns.push(col);
            }
        }
        let schema = Arc::new(Schema::new(fields));
        Ok(if rows == 0 {
            RecordBatch::new_empty(schema)
        } else {
            RecordBatch::try_new_with_options(
                schema,
                columns,
                &datafusion::arrow::record_batch::RecordBatchOptions::new()
                    .with_row_count(Some(rows)),
            )?
        })
    }

    fn decode_window(&self, batch: &RecordBatch) -> Result<WindowState> {
        let mut window = self.new_window()?;
        self.merge_states(&mut window, batch)?;
        Ok(window)
    }

    /// Adds the groups of `batch` (keys and accumulator states, as
    /// [`Self::window_states`] wrote them) to `window`.
    fn merge_states(&self, window: &mut WindowState, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let k = self.key_columns.len();
        let keys: Vec<ArrayRef> = batch.columns()[..k].to_vec();
        let mut ids = Vec::new();
        let num_groups = intern(&mut window.groups, &keys, rows, &mut ids)?;
        let mut offset = k;
        for (agg, acc) in self.aggregates.iter().zip(&mut window.accumulators) {
            let n = agg.state_fields()?.len();
            let state = batch.columns().get(offset..offset + n).ok_or_else(|| {
                OperatorError::Internal("window state has fewer columns than its aggregates".into())
            })?;
            acc.merge_batch(state, &ids, num_groups)?;
            offset += n;
        }
        Ok(())
    }

    /// Rebuilds the windows of the key groups this subtask owns, and the
    /// watermark (the highest any subtask stored: all saw the same ones).
    fn restore(&mut self) -> Result<()> {
        let Some(state) = self.state.clone() else {
            return Ok(());
        };
        let mut parts: BTreeMap<(WindowKey, u8), Vec<RecordBatch>> = BTreeMap::new();
        for (_, suffix, rows) in state.scan()? {
            let bad = || OperatorError::Internal("bad window key".into());
            let end = decode_i64(&suffix).ok_or_else(bad)?;
            let start = decode_i64(suffix.get(8..).unwrap_or_default()).ok_or_else(bad)?;
            let tag = *suffix.get(16).ok_or_else(bad)?;
            parts.entry(((end, start), tag)).or_default().push(rows);
        }
        let mut groups = 0;
        for ((key, tag), batches) in parts {
            let Some(rows) = keyed_state::concat(&batches)? else {
                continue;
            };
            groups += rows.num_rows();
            let window = self.decode_rows(&rows)?;
            if tag == TAG_FIRED {
                self.fired.insert(key, window);
            } else {
                self.windows.insert(key, window);
            }
        }
        for meta in state.metas()? {
            if let Ok(bytes) = <[u8; 8]>::try_from(meta.as_slice()) {
                self.watermark = self.watermark.max(i64::from_le_bytes(bytes));
            }
        }
        // Spilled windows fire from their runs even if memory held none of
        // their groups at the checkpoint.
        let spilled: Vec<WindowKey> = self
            .spill
            .iter()
            .flat_map(|s| s.scopes())
            .filter_map(window_of_scope)
            .collect();
        for key in spilled {
            if !self.windows.contains_key(&key) {
                let w = self.new_window()?;
                self.windows.insert(key, w);
            }
        }
        if !self.windows.is_empty() || !self.fired.is_empty() {
            tracing::info!(
                windows = self.windows.len(),
                fired = self.fired.len(),
                groups,
                "restored windows from state"
            );
        }
        Ok(())
    }
}

/// State-table tags after a window's `(end, start)`: open, or fired and
/// kept for late rows.
const TAG_OPEN: u8 = 0;
const TAG_FIRED: u8 = 1;

/// A window's key in the state table (after the key group): `(end,
/// start)`, then its tag.
fn window_key((end, start): WindowKey, tag: u8) -> Vec<u8> {
    let mut key = KeyBuilder::new().i64(end).i64(start).build();
    key.push(tag);
    key
}

/// The spill scope of window `(end, start)`: its bounds, order-preserving.
fn scope((end, start): WindowKey) -> Scope {
    let mut s = [0; 16];
    s.copy_from_slice(&KeyBuilder::new().i64(end).i64(start).build());
    s
}

fn window_of_scope(scope: &Scope) -> Option<WindowKey> {
    Some((decode_i64(scope)?, decode_i64(&scope[8..])?))
}

/// True if group `g` has the same result in every aggregate column.
fn same_results(a: &[ArrayRef], b: &[ArrayRef], g: usize) -> Result<bool> {
    for (x, y) in a.iter().zip(b) {
        let x = datafusion::common::ScalarValue::try_from_array(x.as_ref(), g)?;
        let y = datafusion::common::ScalarValue::try_from_array(y.as_ref(), g)?;
        if x != y {
            return Ok(false);
        }
    }
    Ok(true)
}

fn new_accumulator(agg: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    if agg.groups_accumulator_supported() {
        Ok(agg.create_groups_accumulator()?)
    } else {
        let agg = agg.clone();
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            agg.create_accumulator()
        })))
    }
}

/// Assigns group ids to the rows of `keys`; returns the number of groups.
fn intern(
    groups: &mut Groups,
    keys: &[ArrayRef],
    rows: usize,
    ids: &mut Vec<usize>,
) -> Result<usize> {
    match groups {
        Groups::Single { used } => {
            *used |= rows > 0;
            ids.clear();
            ids.resize(rows, 0);
            Ok(1)
        }
        Groups::Values(values) => {
            values.intern(keys, ids)?;
            Ok(values.len())
        }
    }
}

impl Operator for WindowAggregateOperator {
    fn name(&self) -> String {
        format!("WindowAggregate({:?})", self.assigner)
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.metrics = Some(ctx.metrics.clone());
        self.state = Some(KeyedState::open(ctx)?);
        self.spill = Some(SpillStore::open(ctx)?);
        self.restore()?;
        self.spill_if_full()
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let ts = event_time_millis(&batch, self.time_column)?;
        // Rows without an event time belong to no window.
        let mut late: Vec<(u32, &'static str)> = ts
            .nulls()
            .map(|n| n.iter().enumerate())
            .into_iter()
            .flatten()
            .filter(|(_, valid)| !valid)
            .map(|(row, _)| (row as u32, REASON_NO_TIME))
            .collect();
        let reason = if self.emit.allowed_lateness > 0 {
            REASON_TOO_LATE
        } else {
            REASON_LATE
        };
        let single = match self.assigner {
            // One window per row; usually one window per batch.
            WindowAssigner::Tumble { size } if late.is_empty() && !ts.is_empty() => {
                let first = ts.value(0) - ts.value(0).rem_euclid(size);
                ts.values()
                    .iter()
                    .all(|t| t - t.rem_euclid(size) == first)
                    .then_some((first + size, first))
            }
            _ => None,
        };
        if let Some(key) = single {
            if self.status(key) == Status::Expired {
                late.extend((0..batch.num_rows() as u32).map(|r| (r, reason)));
            } else {
                self.accumulate(key, &batch, out)?;
            }
        } else {
            // A row may belong to several windows; it is late only if every
            // one of them has expired.
            let mut by_window: BTreeMap<WindowKey, Vec<u32>> = BTreeMap::new();
            let mut keys = Vec::new();
            for (row, t) in ts.iter().enumerate() {
                let Some(t) = t else { continue };
                keys.clear();
                self.assigner.assign(t, &mut keys);
                // A row in a gap between hopping windows belongs to none:
                // it is not late, just outside every window.
                let mut taken = keys.is_empty();
                for &key in &keys {
                    if self.status(key) != Status::Expired {
                        taken = true;
                        by_window.entry(key).or_default().push(row as u32);
                    }
                }
                if !taken {
                    late.push((row as u32, reason));
                }
            }
            self.accumulate_parts(&batch, by_window, out)?;
        }
        if !late.is_empty() {
            if let Some(m) = &self.metrics {
                m.add_late_rows(late.len() as u64);
            }
            if let Some(output) = &self.late {
                late.sort_unstable_by_key(|(r, _)| *r);
                output.emit(&batch, &late, self.watermark, out)?;
            }
        }
        self.spill_if_full()?;
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
        while let Some((&key, _)) = self.windows.first_key_value() {
            if self.status(key) == Status::Open {
                break;
            }
            if let Some((key, window)) = self.windows.pop_first() {
                self.fire(key, window, out)?;
            }
        }
        while let Some((&key, _)) = self.fired.first_key_value() {
            if self.status(key) != Status::Expired {
                break;
            }
            self.fired.pop_first();
        }
        out.emit_watermark(watermark);
        Ok(())
    }

    fn handle_checkpoint(&mut self, checkpoint: u64, _out: &mut Collector) -> Result<()> {
        if let Some(spill) = self.spill.as_mut() {
            spill.on_barrier(checkpoint)?;
        }
        self.snapshot()
    }
}

#[cfg(test)]
mod tests;
