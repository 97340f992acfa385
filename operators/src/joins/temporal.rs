//! The event-time temporal join (Flink's join against a versioned table,
//! `JOIN r FOR SYSTEM_TIME AS OF o.ts ON o.k = r.k`): each row of the probe
//! input (0) joins the version of its key that was valid at the row's
//! event time, in the versioned input (1).
//!
//! ```text
//!   probe rows ──►┐
//!                 ├─ TemporalJoin ─► probe columns ++ version columns
//!   versions ───►┘   (append-only, once the watermark passes each probe row)
//! ```
//!
//! - The versioned input is an append-only stream of versions: each row is
//!   the new value of its key (its primary key) from its own event time on,
//!   as an upsert source's rows are. Versions may arrive in any order.
//! - A probe row waits until the watermark (the minimum of both inputs')
//!   passes its time: then no version valid at its time can still arrive.
//!   It is joined with the version of its key with the latest time at or
//!   before its own (of two versions with the same time, the later to
//!   arrive), and the residual condition is checked on that pair. INNER
//!   drops a row without one (or whose pair fails the residual); LEFT pads
//!   it with NULLs. A row with a NULL key never matches.
//! - A probe row already behind the watermark is late: counted and dropped
//!   (the versions it needed may be gone).
//! - State: the probe rows waiting for the watermark, and per key the
//!   versions from the one valid at the watermark on (older ones can no
//!   longer be chosen). It is kept in [`crate::partitions`]' store,
//!   checkpointed incrementally, by key group:
//!
//! ```text
//!   key group | 0 | key (row format)  →  the probe rows waiting, by time
//!   key group | 1 | key               →  the versions kept, by time
//! ```

use std::cmp::Reverse;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::row::Rows;
use datafusion::physical_expr::PhysicalExpr;
use serde::{Deserialize, Serialize};

use crate::lookup::LookupJoinType;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::partition::key_groups;
use crate::partitions::{Converters, Entry, PartitionStore};
use crate::{OperatorError, Result};

/// The columns of one input of a temporal join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemporalSide {
    /// Key columns (the probe's equal the versions' primary key, pairwise,
    /// of the same types).
    pub keys: Vec<usize>,
    /// The event-time column.
    pub time: usize,
}

const PROBES: u8 = 0;
const VERSIONS: u8 = 1;

/// One input's schema and row encoders.
struct Input {
    side: TemporalSide,
    converters: Converters,
    /// Its columns, nullable (the versions' are NULL in padded rows).
    schema: SchemaRef,
}

impl Input {
    fn new(schema: &SchemaRef, side: TemporalSide) -> Result<Self> {
        let n = schema.fields().len();
        if side.time >= n || side.keys.iter().any(|&k| k >= n) {
            return Err(OperatorError::Internal(
                "a temporal join column is out of range".into(),
            ));
        }
        let converters = Converters::new(schema, &side.keys, &[(side.time, false)], n)?;
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        Ok(Self {
            side,
            converters,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

/// A batch of one input, encoded: its key columns, keys and rows in row
/// format, event times and key groups.
struct Decoded {
    keys: Vec<ArrayRef>,
    key_rows: Rows,
    rows: Rows,
    times: TimestampMillisecondArray,
    groups: Vec<u16>,
}

impl Input {
    fn decode(&self, batch: &RecordBatch) -> Result<Decoded> {
        let keys: Vec<ArrayRef> = self
            .side
            .keys
            .iter()
            .map(|&k| batch.column(k).clone())
            .collect();
        let Some(key_converter) = &self.converters.partition else {
            return Err(OperatorError::Internal(
                "a temporal join without keys".into(),
            ));
        };
        let mut groups = Vec::with_capacity(batch.num_rows());
        key_groups(&keys, batch.num_rows(), &mut groups)?;
        Ok(Decoded {
            key_rows: key_converter.convert_columns(&keys)?,
            rows: self.converters.row.convert_columns(batch.columns())?,
            times: crate::aggregate::event_time_millis(batch, self.side.time)?,
            keys,
            groups,
        })
    }
}

/// A probe row and the version it joins, if any (row format).
type Pair = (Box<[u8]>, Option<Box<[u8]>>);

/// The event-time temporal join operator (see the module docs).
pub struct TemporalJoinOperator {
    join_type: LookupJoinType,
    inputs: [Input; 2],
    /// Over probe columns ++ version columns.
    residual: Option<Arc<dyn PhysicalExpr>>,
    pair_schema: SchemaRef,
    output: SchemaRef,
    store: PartitionStore,
}

impl std::fmt::Debug for TemporalJoinOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporalJoinOperator")
            .field("join_type", &self.join_type)
            .field("entries", &self.store.partitions.len())
            .finish_non_exhaustive()
    }
}

/// The rows a temporal join's residual condition is evaluated on: the
/// probe's columns, then the versions', all nullable.
pub fn pair_schema(probe: &Schema, versions: &Schema) -> SchemaRef {
    let fields: Vec<Field> = probe
        .fields()
        .iter()
        .chain(versions.fields())
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// A store key: the side, then the join key.
fn store_key(side: u8, key: &[u8]) -> Box<[u8]> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(side);
    k.extend_from_slice(key);
    k.into()
}

impl TemporalJoinOperator {
    pub fn try_new(
        join_type: LookupJoinType,
        probe: (&SchemaRef, TemporalSide),
        versions: (&SchemaRef, TemporalSide),
        residual: Option<Arc<dyn PhysicalExpr>>,
    ) -> Result<Self> {
        if probe.1.keys.len() != versions.1.keys.len() || probe.1.keys.is_empty() {
            return Err(OperatorError::Internal(
                "a temporal join needs the same keys on both sides".into(),
            ));
        }
        for (&p, &v) in probe.1.keys.iter().zip(&versions.1.keys) {
            let (pt, vt) = (
                probe.0.field(p).data_type(),
                versions.0.field(v).data_type(),
            );
            if pt != vt {
                return Err(OperatorError::Internal(format!(
                    "temporal join keys of types {pt} and {vt} differ"
                )));
            }
        }
        let inputs = [
            Input::new(probe.0, probe.1)?,
            Input::new(versions.0, versions.1)?,
        ];
        let mut fields: Vec<Field> = probe
            .0
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(inputs[1].schema.fields().iter().map(|f| f.as_ref().clone()));
        let output = Arc::new(Schema::new(fields));
        Ok(Self {
            join_type,
            inputs,
            residual,
            pair_schema: pair_schema(probe.0, versions.0),
            output,
            store: PartitionStore::new("temporal join"),
        })
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// The time of the second version kept for `vkey`: when the first
    /// stops being valid.
    fn second_version(&self, vkey: &[u8]) -> Option<i64> {
        self.store
            .partitions
            .get(vkey)
            .and_then(|p| p.entries.get(1))
            .map(|e| e.time)
    }

    /// Drops the versions of `vkey` older than the one valid at the
    /// watermark: no probe row still to come can choose them. While it
    /// keeps more than one, a timer at the second one's time trims it
    /// again; one is set whenever that time changed from `before`, so a
    /// key has one live timer (`fire` skips the stale ones).
    fn trim_versions(&mut self, vkey: Box<[u8]>, kg: u16, before: Option<i64>) {
        let watermark = self.store.watermark;
        let Some(part) = self.store.partitions.get_mut(&vkey) else {
            return;
        };
        let valid = part.entries.partition_point(|e| e.time <= watermark);
        if valid > 1 {
            part.entries.drain(..valid - 1);
            self.store.mark_dirty(&vkey, kg);
        }
        match self.second_version(&vkey) {
            Some(t) if Some(t) != before => self.store.timers.push(Reverse((t, kg, vkey))),
            _ => {}
        }
    }

    /// Puts a row in the entry `skey`, after those with the same time or
    /// earlier; returns its position.
    fn insert_by_time(&mut self, skey: &[u8], kg: u16, row: &[u8], time: i64) -> usize {
        let part = self.store.partition_mut(skey);
        let at = part.entries.partition_point(|e| e.time <= time);
        let entry = Entry {
            key: Box::default(),
            row: row.into(),
            time,
        };
        part.entries.insert(at, entry);
        self.store.mark_dirty(skey, kg);
        at
    }

    /// Stores a batch of versions.
    fn add_versions(&mut self, batch: &RecordBatch) -> Result<()> {
        let Decoded {
            keys,
            key_rows,
            rows,
            times,
            groups,
        } = self.inputs[1].decode(batch)?;
        let mut no_time = 0;
        for (i, &kg) in groups.iter().enumerate() {
            if keys.iter().any(|k| k.is_null(i)) {
                continue;
            }
            if times.is_null(i) {
                no_time += 1;
                continue;
            }
            let time = times.value(i);
            let key = key_rows.row(i);
            let vkey = store_key(VERSIONS, key.as_ref());
            let before = self.second_version(&vkey);
            self.insert_by_time(&vkey, kg, rows.row(i).as_ref(), time);
            self.trim_versions(vkey, kg, before);
        }
        // A version without a time is valid at no time.
        self.store.count_late(no_time);
        Ok(())
    }

    /// Holds a batch of probe rows until the watermark passes them (a row
    /// with a NULL key of a LEFT join is padded at once).
    fn add_probes(&mut self, batch: &RecordBatch, out: &mut Collector) -> Result<()> {
        let Decoded {
            keys,
            key_rows,
            rows,
            times,
            groups,
        } = self.inputs[0].decode(batch)?;
        let mut late = 0;
        let mut unmatched = Vec::new();
        for (i, &kg) in groups.iter().enumerate() {
            if times.is_null(i) || times.value(i) <= self.store.watermark {
                late += 1;
                continue;
            }
            if keys.iter().any(|k| k.is_null(i)) {
                if self.join_type == LookupJoinType::Left {
                    unmatched.push((rows.row(i).as_ref().into(), None));
                }
                continue;
            }
            let time = times.value(i);
            let pkey = store_key(PROBES, key_rows.row(i).as_ref());
            if self.insert_by_time(&pkey, kg, rows.row(i).as_ref(), time) == 0 {
                self.store.timers.push(Reverse((time, kg, pkey)));
            }
        }
        self.store.count_late(late);
        self.emit(unmatched, out)
    }

    /// Joins the probe rows the watermark passed with their versions.
    fn fire(&mut self, out: &mut Collector) -> Result<()> {
        let watermark = self.store.watermark;
        let mut pairs: Vec<Pair> = Vec::new();
        while let Some(Reverse((at, _, _))) = self.store.timers.peek() {
            if *at > watermark {
                break;
            }
            let Some(Reverse((at, kg, pkey))) = self.store.timers.pop() else {
                break;
            };
            if pkey.first() == Some(&VERSIONS) {
                // Only the timer of the current second version is live.
                if self.second_version(&pkey) == Some(at) {
                    self.trim_versions(pkey, kg, Some(at));
                }
                continue;
            }
            let Some(probes) = self.store.partitions.get_mut(&pkey) else {
                continue;
            };
            let ready = probes.entries.partition_point(|e| e.time <= watermark);
            if ready == 0 {
                continue;
            }
            let done: Vec<Entry> = probes.entries.drain(..ready).collect();
            if let Some(next) = probes.entries.first() {
                self.store
                    .timers
                    .push(Reverse((next.time, kg, pkey.clone())));
            } else {
                self.store.partitions.remove(&pkey);
            }
            self.store.mark_dirty(&pkey, kg);
            let vkey = store_key(VERSIONS, &pkey[1..]);
            let versions = self.store.partitions.get(&vkey);
            for probe in done {
                let version = versions.and_then(|v| {
                    let valid = v.entries.partition_point(|e| e.time <= probe.time);
                    valid.checked_sub(1).map(|i| v.entries[i].row.clone())
                });
                pairs.push((probe.row, version));
            }
            let before = self.second_version(&vkey);
            self.trim_versions(vkey, kg, before);
        }
        self.emit(pairs, out)
    }

    /// Emits each probe row with its version, if it has one that passes
    /// the residual; otherwise padded (LEFT) or not at all (INNER).
    fn emit(&self, pairs: Vec<Pair>, out: &mut Collector) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let [probe, versions] = &self.inputs;
        let parser = probe.converters.row.parser();
        let probe_columns = probe
            .converters
            .row
            .convert_rows(pairs.iter().map(|(p, _)| parser.parse(p)))?;
        let found: Vec<&Box<[u8]>> = pairs.iter().filter_map(|(_, v)| v.as_ref()).collect();
        let vparser = versions.converters.row.parser();
        let version_rows = if found.is_empty() {
            versions
                .schema
                .fields()
                .iter()
                .map(|f| datafusion::arrow::array::new_empty_array(f.data_type()))
                .collect()
        } else {
            versions
                .converters
                .row
                .convert_rows(found.iter().map(|v| vparser.parse(v)))?
        };
        // Per pair: its version's index among the found ones, if any.
        let mut next = 0u32;
        let mut slots: Vec<Option<u32>> = pairs
            .iter()
            .map(|(_, v)| {
                v.as_ref().map(|_| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        let take_all = |idx: &UInt32Array| -> Result<Vec<ArrayRef>> {
            version_rows
                .iter()
                .map(|a| Ok(take(a.as_ref(), idx, None)?))
                .collect()
        };
        if let Some(residual) = &self.residual
            && next > 0
        {
            let idx: UInt32Array = slots.iter().copied().collect();
            let mut columns = probe_columns.clone();
            columns.extend(take_all(&idx)?);
            let pair_batch = RecordBatch::try_new(self.pair_schema.clone(), columns)?;
            let result = residual
                .evaluate(&pair_batch)?
                .into_array(pair_batch.num_rows())?;
            let pass = result.as_boolean_opt().ok_or_else(|| {
                OperatorError::Internal("a temporal join condition is not boolean".into())
            })?;
            for (i, slot) in slots.iter_mut().enumerate() {
                if !(pass.is_valid(i) && pass.value(i)) {
                    *slot = None;
                }
            }
        }
        let keep: Vec<u32> = (0..pairs.len() as u32)
            .filter(|&i| self.join_type == LookupJoinType::Left || slots[i as usize].is_some())
            .collect();
        if keep.is_empty() {
            return Ok(());
        }
        let keep_idx = UInt32Array::from(keep.clone());
        let mut columns: Vec<ArrayRef> = probe_columns
            .iter()
            .map(|a| Ok(take(a.as_ref(), &keep_idx, None)?))
            .collect::<Result<_>>()?;
        let version_idx: UInt32Array = keep.iter().map(|&i| slots[i as usize]).collect();
        columns.extend(take_all(&version_idx)?);
        out.collect(RecordBatch::try_new(self.output.clone(), columns)?);
        Ok(())
    }
}

impl Operator for TemporalJoinOperator {
    fn name(&self) -> String {
        "TemporalJoin".into()
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        // Probe rows wait for their first time; versions for their
        // second's (see `trim_versions`).
        self.store.open(ctx, |key, part| {
            let at = usize::from(key.first() == Some(&VERSIONS));
            part.entries.get(at).map(|e| e.time)
        })
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
        match input {
            0 => self.add_probes(&batch, out),
            1 => self.add_versions(&batch),
            _ => Err(OperatorError::Internal(format!(
                "a temporal join has two inputs, not input {input}"
            ))),
        }
    }

    fn handle_watermark(&mut self, watermark: i64, out: &mut Collector) -> Result<()> {
        self.store.watermark = self.store.watermark.max(watermark);
        self.fire(out)?;
        out.emit_watermark(watermark);
        Ok(())
    }

    fn handle_checkpoint(&mut self, _checkpoint: u64, _out: &mut Collector) -> Result<()> {
        self.store.checkpoint()
    }

    fn on_close(&mut self, out: &mut Collector) -> Result<()> {
        // The end of both inputs: every version that will ever be valid
        // has arrived.
        self.store.watermark = i64::MAX;
        self.fire(out)
    }
}

#[cfg(test)]
mod tests;
