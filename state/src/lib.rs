//! # eddy-state
//!
//! Where operators keep state: ordered byte-keyed tables, one per stateful
//! operator, behind the [`StateBackend`] trait.
//!
//! ```text
//!   operator subtask ──open_table("window-agg-3")──► StateBackend
//!        │                                             ├─ RocksDbBackend: one DB per job
//!        └── get / put / delete / scan_range ──►       │   directory, a column family
//!                                                      │   per table
//!                                                      └─ MemoryBackend: BTreeMaps, for tests
//! ```
//!
//! Keys are bytes; [`keys`] builds them so that byte order equals logical
//! order (`key group, key, window/timestamp`), which turns "every window of
//! key group 7 that ends before t" into one range scan. The crate knows
//! nothing of Arrow or SQL.
//!
//! What an implementer guarantees:
//! - a `put` is visible to every later `get`/`scan_range` on the same table;
//! - `scan_range` returns entries in ascending byte order of their keys;
//! - tables of one backend are independent namespaces.
//!
//! [`checkpoint`] makes the RocksDB backend's state durable at a point in
//! time and finds it again after a crash.

pub mod checkpoint;
pub mod keys;
mod memory;
mod rocks;

use std::fmt::Debug;
use std::sync::Arc;

pub use memory::MemoryBackend;
pub use rocks::{RocksDbBackend, RocksDbOptions};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store error in {path}: {source}")]
    RocksDb {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("cannot create state directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt state in table '{table}': {reason}")]
    Corrupt { table: String, reason: String },
    /// A checkpoint file that is missing, truncated or fails its checksum.
    #[error("checkpoint file {path} is damaged: {reason}")]
    Damaged { path: String, reason: String },
    #[error("no usable checkpoint in {path}: {reasons}")]
    NoUsableCheckpoint { path: String, reasons: String },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// A key-value pair as stored.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One operator's table: ordered byte keys to byte values.
pub trait StateTable: Send + Sync + Debug {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;
    fn delete(&self, key: &[u8]) -> Result<()>;
    /// Entries with `start <= key < end`, in key order.
    fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<Entry>>;
    /// The first entry with `start <= key < end`, if any (a seek, without
    /// reading the rest of the range).
    fn first(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>>;
    /// Removes entries with `start <= key < end`.
    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()>;
    /// Applies several puts (value `Some`) and deletes (`None`) atomically.
    fn write_batch(&self, ops: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<()>;
}

/// A store of named tables. Shared by every subtask of a job.
pub trait StateBackend: Send + Sync + Debug {
    /// Opens (creating if needed) the table called `name`.
    fn open_table(&self, name: &str) -> Result<Arc<dyn StateTable>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract every backend must meet, run against each one.
    fn exercise(backend: &dyn StateBackend) {
        let t = backend.open_table("t").unwrap();
        let other = backend.open_table("other").unwrap();
        t.put(b"b", b"2").unwrap();
        t.put(b"a", b"1").unwrap();
        t.put(b"c", b"3").unwrap();
        other.put(b"a", b"x").unwrap();
        assert_eq!(t.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(t.get(b"zz").unwrap(), None);
        let keys: Vec<_> = t
            .scan_range(b"a", b"c")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(t.first(b"aa", b"z").unwrap().unwrap().0, b"b".to_vec());
        assert_eq!(t.first(b"a", b"a").unwrap(), None);
        assert_eq!(t.first(b"d", b"z").unwrap(), None);
        t.delete(b"b").unwrap();
        assert_eq!(t.get(b"b").unwrap(), None);
        t.write_batch(&[(b"d".to_vec(), Some(b"4".to_vec())), (b"a".to_vec(), None)])
            .unwrap();
        let all: Vec<_> = t.scan_range(b"", b"\xff").unwrap();
        assert_eq!(
            all,
            vec![
                (b"c".to_vec(), b"3".to_vec()),
                (b"d".to_vec(), b"4".to_vec())
            ]
        );
        t.delete_range(b"c", b"d").unwrap();
        assert_eq!(t.scan_range(b"", b"\xff").unwrap().len(), 1);
        assert_eq!(
            other.get(b"a").unwrap().as_deref(),
            Some(&b"x"[..]),
            "tables are independent"
        );
        // Reopening a table sees its data.
        assert_eq!(
            backend
                .open_table("t")
                .unwrap()
                .get(b"d")
                .unwrap()
                .as_deref(),
            Some(&b"4"[..])
        );
    }

    #[test]
    fn memory_backend_meets_the_contract() {
        exercise(&MemoryBackend::default());
    }

    #[test]
    fn rocksdb_backend_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&RocksDbBackend::open(dir.path()).unwrap());
    }

    #[test]
    fn rocksdb_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = RocksDbBackend::open(dir.path()).unwrap();
            db.open_table("w").unwrap().put(b"k", b"v").unwrap();
        }
        let db = RocksDbBackend::open(dir.path()).unwrap();
        assert_eq!(
            db.open_table("w").unwrap().get(b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
}
