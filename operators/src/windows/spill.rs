//! Spilled runs: partial state an operator moved out of memory between
//! checkpoints, so that its state can outgrow memory.
//!
//! An operator whose in-memory state passes its cache size writes part of
//! it (for a window: the group keys and accumulator states of one window)
//! as a *run*, one entry per key group, to its spill table, and starts that
//! part afresh in memory. When the part is needed whole (the window fires)
//! it merges the runs one key group at a time, so only one key group's
//! worth is ever in memory. Keys:
//!
//! ```text
//!   scope (16 bytes: a window's end, start) | key group (u16) | epoch (u64) | seq (u32)  → Arrow IPC rows
//! ```
//!
//! Runs are written at any time, not only at barriers, so a RocksDB
//! checkpoint may hold runs written after the barriers it stands for. The
//! *epoch* tells them apart: a run written after a subtask handled barrier
//! `n` has epoch `n + 1`, and recovery from checkpoint `n` first deletes
//! every run of a later epoch (what they hold is in checkpoint `n`'s
//! snapshot, or replayed). Deleting the runs of a scope that is done waits
//! for the next barrier, so the checkpoint in flight still has them.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_state::StateTable;
use eddy_state::keys::{KeyBuilder, key_group_range};

use crate::Result;
use crate::checkpoint::CheckpointHandle;
use crate::keyed_state::{ipc_bytes, read_ipc};
use crate::operator::OperatorContext;

/// What runs belong to: a window's `(end, start)`, order-preserving.
pub(crate) type Scope = [u8; 16];

/// One subtask's spilled runs.
#[derive(Debug)]
pub(crate) struct SpillStore {
    table: Arc<dyn StateTable>,
    /// Key groups `[start, end)` this subtask owns.
    range: (u16, u16),
    checkpoints: CheckpointHandle,
    last_barrier: Option<u64>,
    seq: u32,
    /// Scopes with runs in this subtask's key groups.
    scopes: BTreeSet<Scope>,
    /// Scopes done with, whose runs go at the next barrier.
    retired: Vec<Scope>,
}

impl SpillStore {
    /// Opens the spill table of `ctx`'s operator, drops the runs later than
    /// the checkpoint this run resumed from, and finds the scopes that
    /// still have runs in this subtask's key groups.
    pub(crate) fn open(ctx: &OperatorContext) -> Result<Self> {
        let table = ctx
            .state
            .open_table(&format!("{}-spill", ctx.operator_id))?;
        let range = key_group_range(ctx.subtask, ctx.parallelism);
        let mut store = Self {
            table,
            range,
            checkpoints: ctx.checkpoints.clone(),
            last_barrier: None,
            seq: 0,
            scopes: BTreeSet::new(),
            retired: Vec::new(),
        };
        let valid = ctx.checkpoints.restored().unwrap_or(0);
        let mut cursor = Vec::new();
        let end = [0xff; 31];
        while let Some((key, _)) = store.table.first(&cursor, &end)? {
            let Some(scope) = key.get(..16).and_then(|s| Scope::try_from(s).ok()) else {
                break;
            };
            for kg in range.0..range.1 {
                let stale = KeyBuilder::new()
                    .bytes(&scope)
                    .u16(kg)
                    .u64(valid + 1)
                    .build();
                store.table.delete_range(&stale, &prefix(&scope, kg + 1))?;
            }
            let (lo, hi) = (prefix(&scope, range.0), prefix(&scope, range.1));
            if store.table.first(&lo, &hi)?.is_some() {
                store.scopes.insert(scope);
            }
            // Past every key group of this scope.
            cursor = prefix(&scope, u16::MAX);
        }
        Ok(store)
    }

    /// True if `scope` has runs.
    pub(crate) fn has(&self, scope: &Scope) -> bool {
        self.scopes.contains(scope)
    }

    /// Scopes with runs, in order.
    pub(crate) fn scopes(&self) -> impl Iterator<Item = &Scope> {
        self.scopes.iter()
    }

    /// Writes one run of `scope`: its rows cut by key group. Returns the
    /// bytes written.
    pub(crate) fn write(&mut self, scope: Scope, parts: &[(u16, RecordBatch)]) -> Result<u64> {
        let epoch = self.checkpoints.next_id(self.last_barrier);
        let mut bytes = 0;
        let mut ops = Vec::with_capacity(parts.len());
        for (kg, rows) in parts {
            let key = KeyBuilder::new()
                .bytes(&scope)
                .u16(*kg)
                .u64(epoch)
                .u32(self.seq)
                .build();
            let value = ipc_bytes(rows)?;
            bytes += value.len() as u64;
            ops.push((key, Some(value)));
        }
        self.seq = self.seq.wrapping_add(1);
        self.table.write_batch(&ops)?;
        self.scopes.insert(scope);
        Ok(bytes)
    }

    /// Every run of `scope` in key group `kg`.
    pub(crate) fn read(&self, scope: &Scope, kg: u16) -> Result<Vec<RecordBatch>> {
        self.table
            .scan_range(&prefix(scope, kg), &prefix(scope, kg + 1))?
            .into_iter()
            .map(|(_, v)| read_ipc(&v))
            .collect()
    }

    /// `scope` is done with: its runs are deleted at the next barrier.
    pub(crate) fn retire(&mut self, scope: &Scope) {
        if self.scopes.remove(scope) {
            self.retired.push(*scope);
        }
    }

    /// At checkpoint barrier `id`: deletes the runs of retired scopes.
    pub(crate) fn on_barrier(&mut self, id: u64) -> Result<()> {
        self.last_barrier = Some(id);
        for scope in std::mem::take(&mut self.retired) {
            self.table
                .delete_range(&prefix(&scope, self.range.0), &prefix(&scope, self.range.1))?;
        }
        Ok(())
    }

    /// The key groups this subtask owns.
    pub(crate) fn key_groups(&self) -> std::ops::Range<u16> {
        self.range.0..self.range.1
    }
}

/// `scope | kg`: where the runs of one key group of a scope start.
fn prefix(scope: &Scope, kg: u16) -> Vec<u8> {
    KeyBuilder::new().bytes(scope).u16(kg).build()
}
