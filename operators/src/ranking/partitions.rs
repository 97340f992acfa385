//! The state shared by Top-N ([`crate::rank`]) and OVER aggregates
//! ([`crate::over`]): rows by partition key, sorted within a partition,
//! with timers, the watermark, and incremental snapshots of the partitions
//! that changed since the last barrier:
//!
//! ```text
//!   key group | partition key (row format)  →  encoded Partition
//!   0xFFFF | subtask                         →  the watermark
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::row::{RowConverter, SortField};

use crate::keyed_state::{KeyMap, KeyedState, mark_dirty};
use crate::metrics::JobMetrics;
use crate::operator::OperatorContext;
use crate::ttl::{IdleKeys, NEVER_WRITTEN, StateTtl};
use crate::{OperatorError, Result};

/// One stored row: its ORDER BY key and the row (both in row format) and
/// its event time (`FirstByTime` only; 0 otherwise).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: Box<[u8]>,
    pub row: Box<[u8]>,
    pub time: i64,
}

/// A partition's rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Partition {
    /// Sorted by key; equal keys in arrival order.
    pub entries: Vec<Entry>,
    /// `FirstByTime`: rows emitted so far (OVER: the leading entries
    /// already emitted).
    pub emitted: u64,
    /// `WindowClose`: when the window fires (`window_end - 1`).
    pub fires_at: i64,
    /// When it was last written, under a time-to-live (see [`crate::ttl`]).
    pub written: i64,
    /// An UNBOUNDED OVER frame's running accumulators, encoded (empty:
    /// none).
    pub acc: Vec<u8>,
}

impl Partition {
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            emitted: 0,
            fires_at: i64::MAX,
            written: NEVER_WRITTEN,
            acc: Vec::new(),
        }
    }

    /// `emitted | fires_at | written | n | per entry: time, key length,
    /// row length, key, row [| accumulators' length, accumulators]`;
    /// integers little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .entries
            .iter()
            .map(|e| 16 + e.key.len() + e.row.len())
            .sum();
        let mut out = Vec::with_capacity(28 + size);
        out.extend_from_slice(&self.emitted.to_le_bytes());
        out.extend_from_slice(&self.fires_at.to_le_bytes());
        out.extend_from_slice(&self.written.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.time.to_le_bytes());
            out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
            out.extend_from_slice(&(e.row.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.key);
            out.extend_from_slice(&e.row);
        }
        if !self.acc.is_empty() {
            out.extend_from_slice(&(self.acc.len() as u32).to_le_bytes());
            out.extend_from_slice(&self.acc);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || OperatorError::Internal("a partition state entry is corrupt".into());
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let b = bytes.get(at..at + n).ok_or_else(bad)?;
            at += n;
            Ok(b)
        };
        let u64_of =
            |b: &[u8]| -> Result<u64> { Ok(u64::from_le_bytes(b.try_into().map_err(|_| bad())?)) };
        let u32_of =
            |b: &[u8]| -> Result<u32> { Ok(u32::from_le_bytes(b.try_into().map_err(|_| bad())?)) };
        let emitted = u64_of(take(8)?)?;
        let fires_at = u64_of(take(8)?)? as i64;
        let written = u64_of(take(8)?)? as i64;
        let n = u32_of(take(4)?)? as usize;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let time = u64_of(take(8)?)? as i64;
            let key_len = u32_of(take(4)?)? as usize;
            let row_len = u32_of(take(4)?)? as usize;
            let key = take(key_len)?.into();
            let row = take(row_len)?.into();
            entries.push(Entry { key, row, time });
        }
        // Partitions without accumulators end here.
        let acc = match take(4) {
            Ok(len) => {
                let len = u32_of(len)? as usize;
                take(len)?.to_vec()
            }
            Err(_) => Vec::new(),
        };
        if at != bytes.len() {
            return Err(bad());
        }
        Ok(Self {
            entries,
            emitted,
            fires_at,
            written,
            acc,
        })
    }
}

/// When a partition needs attention: `(time, key group, partition key)`.
pub(crate) type Timer = (i64, u16, Box<[u8]>);

/// Partitions, their timers and the watermark, kept in the state backend.
pub(crate) struct PartitionStore {
    pub partitions: KeyMap<Partition>,
    /// Partitions changed since the last barrier, with their key group.
    pub dirty: KeyMap<u16>,
    /// Earliest first; an entry whose partition moved on is skipped.
    pub timers: BinaryHeap<Reverse<Timer>>,
    pub watermark: i64,
    state: Option<KeyedState>,
    metrics: Option<JobMetrics>,
    /// Partitions by last write, under a time-to-live.
    idle: IdleKeys<Box<[u8]>>,
    unknown_retractions: u64,
    /// Names the operator in logs.
    what: &'static str,
}

impl PartitionStore {
    pub fn new(what: &'static str) -> Self {
        Self {
            partitions: KeyMap::default(),
            dirty: KeyMap::default(),
            timers: BinaryHeap::new(),
            watermark: i64::MIN,
            state: None,
            metrics: None,
            idle: IdleKeys::new(None),
            unknown_retractions: 0,
            what,
        }
    }

    /// Reads back what this subtask owns, with a timer for each partition
    /// `timer_of` gives a time.
    pub fn open(
        &mut self,
        ctx: &OperatorContext,
        timer_of: impl Fn(&[u8], &Partition) -> Option<i64>,
    ) -> Result<()> {
        let state = KeyedState::open(ctx)?;
        self.watermark = self.watermark.max(state.stored_watermark()?);
        let mut restored = 0usize;
        for (kg, key, value) in state.scan_raw()? {
            let part = Partition::decode(&value)?;
            restored += part.entries.len();
            if let Some(t) = timer_of(&key, &part) {
                self.timers.push(Reverse((t, kg, key.clone().into())));
            }
            self.idle.restored(part.written, kg, key.clone().into());
            self.partitions.insert(key.into(), part);
        }
        if restored > 0 {
            tracing::info!(
                rows = restored,
                "{} restored its rows from state",
                self.what
            );
        }
        self.state = Some(state);
        self.metrics = Some(ctx.metrics.clone());
        self.idle.set_metrics(ctx.metrics.clone());
        Ok(())
    }

    /// Partitions idle for `ttl` expire (set before [`Self::open`]).
    pub fn set_ttl(&mut self, ttl: Option<StateTtl>) {
        self.idle.set_ttl(ttl);
    }

    /// Reads the clock and drops the partitions idle for the time-to-live,
    /// except those `pending` keeps (rows still waiting for the watermark).
    /// Call it before the writes of a batch: they are stamped with this
    /// time.
    pub fn expire_idle(&mut self, pending: impl Fn(&Partition) -> bool) {
        self.idle.advance(self.watermark);
        let expired = self
            .idle
            .drop_idle(&mut self.partitions, |p| (!pending(p)).then_some(p.written));
        for (kg, key) in expired {
            mark_dirty(&mut self.dirty, &key, kg);
        }
    }

    /// The partition of `key`, created empty if there is none.
    pub fn partition_mut(&mut self, key: &[u8]) -> &mut Partition {
        if !self.partitions.contains_key(key) {
            self.partitions.insert(key.into(), Partition::new());
        }
        self.partitions
            .get_mut(key)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// The partition of `key` changed (or is gone): written at the next
    /// barrier, and its time-to-live starts again.
    pub fn mark_dirty(&mut self, key: &[u8], kg: u16) {
        mark_dirty(&mut self.dirty, key, kg);
        if self.idle.enabled()
            && let Some(part) = self.partitions.get_mut(key)
        {
            self.idle.written(&mut part.written, kg, || key.into());
        }
    }

    pub fn count_late(&self, n: u64) {
        if let (Some(m), true) = (&self.metrics, n > 0) {
            m.add_late_rows(n);
        }
    }

    /// A retraction of a row that is not stored: logged once, ignored.
    pub fn unknown_retraction(&mut self) {
        if self.unknown_retractions == 0 {
            tracing::warn!(
                "the input of a {} retracted a row it never sent (or whose state expired); ignored",
                self.what
            );
        }
        self.unknown_retractions += 1;
    }

    /// Checkpoint barrier: writes the partitions changed since the last one.
    pub fn checkpoint(&mut self) -> Result<()> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        state.write_dirty(
            &mut self.dirty,
            &self.partitions,
            Partition::encode,
            self.watermark,
        )
    }
}

/// The row encoders of a partitioned, ordered operator over `input`.
pub(crate) struct Converters {
    /// Of the partition key columns; `None` without any (one partition).
    pub partition: Option<RowConverter>,
    /// Of the ORDER BY columns, so that bytes compare in order: NULLs
    /// first ascending and last descending, as in Flink.
    pub order: RowConverter,
    /// Of the first `width` columns: a stored row.
    pub row: RowConverter,
}

impl Converters {
    pub fn new(
        input: &Schema,
        partition: &[usize],
        order: &[(usize, bool)],
        width: usize,
    ) -> Result<Self> {
        let field = |c: usize| input.field(c).data_type().clone();
        let partition = if partition.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                partition
                    .iter()
                    .map(|&c| SortField::new(field(c)))
                    .collect(),
            )?)
        };
        let order = RowConverter::new(
            order
                .iter()
                .map(|&(c, descending)| {
                    let options = SortOptions {
                        descending,
                        nulls_first: !descending,
                    };
                    SortField::new_with_options(field(c), options)
                })
                .collect(),
        )?;
        let row = RowConverter::new((0..width).map(|c| SortField::new(field(c))).collect())?;
        Ok(Self {
            partition,
            order,
            row,
        })
    }
}
