//! Hash partitioning: key columns → hash → key group → subtask.
//!
//! The same [`key_groups`] function decides where a row is shuffled and
//! under which key group its state is stored, so state can later be
//! reassigned to another parallelism a key group at a time.

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use eddy_state::keys::{key_group, subtask_for_key_group};

use crate::Result;

/// A fixed hash state: partitioning must not change between runs.
const HASH_STATE: RandomState = RandomState::with_seed(0x5eed_edd1);

/// The key group of every row, from the given key columns.
pub fn key_groups(keys: &[ArrayRef], num_rows: usize, out: &mut Vec<u16>) -> Result<()> {
    out.clear();
    if keys.is_empty() {
        out.resize(num_rows, 0);
        return Ok(());
    }
    let mut hashes = vec![0u64; num_rows];
    create_hashes(keys, &HASH_STATE, &mut hashes)?;
    out.extend(hashes.iter().map(|&h| key_group(h)));
    Ok(())
}

/// Splits `batch` into one batch per subtask (of `parallelism`) by the hash
/// of the columns at `key_indices`. Empty parts are omitted.
pub fn hash_partition(
    batch: &RecordBatch,
    key_indices: &[usize],
    parallelism: usize,
) -> Result<Vec<(usize, RecordBatch)>> {
    if parallelism == 1 {
        return Ok(vec![(0, batch.clone())]);
    }
    let keys: Vec<ArrayRef> = key_indices
        .iter()
        .map(|&i| batch.column(i).clone())
        .collect();
    let mut groups = Vec::with_capacity(batch.num_rows());
    key_groups(&keys, batch.num_rows(), &mut groups)?;
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); parallelism];
    for (row, &kg) in groups.iter().enumerate() {
        indices[subtask_for_key_group(kg, parallelism)].push(row as u32);
    }
    let mut out = Vec::new();
    for (subtask, idx) in indices.into_iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        if idx.len() == batch.num_rows() {
            out.push((subtask, batch.clone()));
        } else {
            out.push((subtask, take_record_batch(batch, &UInt32Array::from(idx))?));
        }
    }
    Ok(out)
}
