//! Keyed operator state in the state backend, by key group.
//!
//! Every stateful operator has one table (a RocksDB column family) shared
//! by its subtasks. An entry's key starts with the key group of the rows it
//! holds, so each subtask owns one contiguous key range, and a job restarted
//! with another parallelism reads the key groups its subtasks own now:
//!
//! ```text
//!   key group (u16, big-endian) | operator-defined suffix (window, key...)  → Arrow IPC rows
//!   0xFFFF | subtask (u16)                                                  → operator metadata
//! ```
//!
//! Rows are stored as Arrow IPC; [`split_by_key_group`] cuts a batch of
//! state rows (one row per group key) into one batch per key group, with
//! the same hash the shuffle uses, so a key's state is found by the subtask
//! its rows are sent to.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_state::StateTable;
use eddy_state::keys::{KEY_GROUPS, key_group_range};

use crate::operator::OperatorContext;
use crate::partition::key_groups;
use crate::{OperatorError, Result};

const META_PREFIX: [u8; 2] = [0xff, 0xff];

/// One subtask's view of its operator's table.
#[derive(Debug, Clone)]
pub struct KeyedState {
    table: Arc<dyn StateTable>,
    /// Key groups `[start, end)` this subtask owns.
    range: (u16, u16),
    subtask: u16,
}

/// One stored entry: its key group, the rest of its key, its rows.
pub type StoredRows = (u16, Vec<u8>, RecordBatch);

/// One stored entry as bytes: its key group, the rest of its key, its value.
pub type StoredEntry = (u16, Vec<u8>, Vec<u8>);

impl KeyedState {
    /// The table of `ctx`'s operator (named after its operator id).
    pub fn open(ctx: &OperatorContext) -> Result<Self> {
        Ok(Self {
            table: ctx.state.open_table(&ctx.operator_id)?,
            range: key_group_range(ctx.subtask, ctx.parallelism),
            subtask: ctx.subtask as u16,
        })
    }

    /// Replaces everything this subtask stored with `entries` (key group,
    /// key suffix, rows) and its metadata with `meta`.
    pub fn replace(&self, entries: &[(u16, Vec<u8>, RecordBatch)], meta: &[u8]) -> Result<()> {
        let (start, end) = self.range;
        self.table
            .delete_range(&start.to_be_bytes(), &end.to_be_bytes())?;
        let mut ops = Vec::with_capacity(entries.len() + 1);
        for (kg, suffix, rows) in entries {
            if *kg < start || *kg >= end {
                return Err(OperatorError::Internal(format!(
                    "state of key group {kg} in a subtask owning {start}..{end}"
                )));
            }
            let mut key = kg.to_be_bytes().to_vec();
            key.extend_from_slice(suffix);
            ops.push((key, Some(ipc_bytes(rows)?)));
        }
        let mut meta_key = META_PREFIX.to_vec();
        meta_key.extend_from_slice(&self.subtask.to_be_bytes());
        ops.push((meta_key, Some(meta.to_vec())));
        self.table.write_batch(&ops)?;
        Ok(())
    }

    /// Every entry in the key groups this subtask owns, in key order.
    pub fn scan(&self) -> Result<Vec<StoredRows>> {
        let (start, end) = self.range;
        let mut out = Vec::new();
        for (key, value) in self
            .table
            .scan_range(&start.to_be_bytes(), &end.to_be_bytes())?
        {
            let kg = u16::from_be_bytes([key[0], key[1]]);
            out.push((kg, key[2..].to_vec(), read_ipc(&value)?));
        }
        Ok(out)
    }

    /// Writes single entries (key group, key suffix, value), deleting
    /// those whose value is `None`: an incremental snapshot.
    pub fn write(&self, entries: Vec<(u16, Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let (start, end) = self.range;
        let mut ops = Vec::with_capacity(entries.len());
        for (kg, suffix, value) in entries {
            if kg < start || kg >= end {
                return Err(OperatorError::Internal(format!(
                    "state of key group {kg} in a subtask owning {start}..{end}"
                )));
            }
            let mut key = kg.to_be_bytes().to_vec();
            key.extend_from_slice(&suffix);
            ops.push((key, value));
        }
        if !ops.is_empty() {
            self.table.write_batch(&ops)?;
        }
        Ok(())
    }

    /// Stores this subtask's metadata (what [`Self::metas`] returns), next
    /// to entries written with [`Self::write`].
    pub fn write_meta(&self, meta: &[u8]) -> Result<()> {
        let mut key = META_PREFIX.to_vec();
        key.extend_from_slice(&self.subtask.to_be_bytes());
        self.table.write_batch(&[(key, Some(meta.to_vec()))])?;
        Ok(())
    }

    /// Every entry in the key groups this subtask owns, in key order, as
    /// raw bytes (see [`Self::write`]).
    pub fn scan_raw(&self) -> Result<Vec<StoredEntry>> {
        let (start, end) = self.range;
        Ok(self
            .table
            .scan_range(&start.to_be_bytes(), &end.to_be_bytes())?
            .into_iter()
            .map(|(key, value)| {
                (
                    u16::from_be_bytes([key[0], key[1]]),
                    key[2..].to_vec(),
                    value,
                )
            })
            .collect())
    }

    /// The metadata of every subtask that stored some (after a change of
    /// parallelism, of the old subtasks).
    pub fn metas(&self) -> Result<Vec<Vec<u8>>> {
        let mut end = META_PREFIX.to_vec();
        end.extend_from_slice(&[0xff, 0xff, 0xff]);
        Ok(self
            .table
            .scan_range(&META_PREFIX, &end)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }
}

/// Keys (row format) mapped to `V`.
pub(crate) type KeyMap<V> =
    std::collections::HashMap<Box<[u8]>, V, datafusion::common::hash_utils::RandomState>;

/// Marks `key` changed since the last barrier, copying it only the first
/// time.
pub(crate) fn mark_dirty(dirty: &mut KeyMap<u16>, key: &[u8], kg: u16) {
    if !dirty.contains_key(key) {
        dirty.insert(key.into(), kg);
    }
}

impl KeyedState {
    /// Writes the entries of the `dirty` keys (deleting those `entries` no
    /// longer has), then the watermark as this subtask's metadata: an
    /// incremental snapshot of an operator keyed by row-format keys.
    pub(crate) fn write_dirty<V>(
        &self,
        dirty: &mut KeyMap<u16>,
        entries: &KeyMap<V>,
        encode: impl Fn(&V) -> Vec<u8>,
        watermark: i64,
    ) -> Result<()> {
        let ops = dirty
            .drain()
            .map(|(key, kg)| {
                let value = entries.get(&key).map(&encode);
                (kg, key.into_vec(), value)
            })
            .collect();
        self.write(ops)?;
        self.write_meta(&watermark.to_le_bytes())
    }

    /// The watermark [`Self::write_dirty`] stored: the highest any subtask
    /// stored (all saw the same ones), or `i64::MIN`.
    pub(crate) fn stored_watermark(&self) -> Result<i64> {
        let mut watermark = i64::MIN;
        for meta in self.metas()? {
            if let Ok(bytes) = <[u8; 8]>::try_from(meta.as_slice()) {
                watermark = watermark.max(i64::from_le_bytes(bytes));
            }
        }
        Ok(watermark)
    }
}

/// The key group of every row of `keys` (all rows in group 0 without keys),
/// and `batch` cut into one batch per key group, in key-group order.
pub fn split_by_key_group(
    batch: &RecordBatch,
    keys: &[ArrayRef],
) -> Result<Vec<(u16, RecordBatch)>> {
    let mut groups = Vec::new();
    key_groups(keys, batch.num_rows(), &mut groups)?;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); KEY_GROUPS as usize];
    for (row, &kg) in groups.iter().enumerate() {
        rows[kg as usize].push(row as u32);
    }
    let mut out = Vec::new();
    for (kg, idx) in rows.into_iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        let part = if idx.len() == batch.num_rows() {
            batch.clone()
        } else {
            take_record_batch(batch, &UInt32Array::from(idx))?
        };
        out.push((kg as u16, part));
    }
    Ok(out)
}

/// Concatenates stored batches of one logical entry (its key groups).
pub fn concat(batches: &[RecordBatch]) -> Result<Option<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    Ok(Some(concat_batches(&first.schema(), batches)?))
}

/// Arrow IPC stream bytes of one batch.
pub fn ipc_bytes(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema())?;
    writer.write(batch)?;
    Ok(writer.into_inner()?)
}

/// The batch [`ipc_bytes`] wrote.
pub fn read_ipc(bytes: &[u8]) -> Result<RecordBatch> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.collect::<std::result::Result<_, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}

/// Column `i` of stored state rows as Int64 (a bound, a count).
pub fn int64_column(rows: &RecordBatch, i: usize) -> Result<&Int64Array> {
    rows.column(i)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| OperatorError::Internal(format!("state column {i} is not Int64")))
}
