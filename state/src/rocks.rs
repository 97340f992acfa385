//! The RocksDB backend: one database per job directory, one column family
//! per table.
//!
//! The live database is scratch space between checkpoints: a job always
//! starts from a checkpoint's copy of it (or from nothing), never from what
//! the live database held when the process died. So writes skip the
//! write-ahead log, and a checkpoint flushes the memtables and hard-links
//! the resulting SST files ([`RocksDbBackend::create_checkpoint`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, DBWithThreadMode, IteratorMode, MultiThreaded,
    Options, WriteBatch, WriteBufferManager, WriteOptions,
};

use crate::{Entry, Result, StateBackend, StateError, StateTable};

type Db = DBWithThreadMode<MultiThreaded>;

/// How much memory RocksDB may use: block cache and memtables share one
/// budget (memtables are charged to the cache).
#[derive(Debug, Clone, Copy)]
pub struct RocksDbOptions {
    pub memory_bytes: usize,
}

impl Default for RocksDbOptions {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
        }
    }
}

#[derive(Clone)]
pub struct RocksDbBackend {
    db: Arc<Db>,
    path: PathBuf,
    cf_options: Arc<Options>,
    creating: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for RocksDbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RocksDbBackend {
    /// Opens (or creates) the database in `dir`, with every column family
    /// it already holds, within the default memory budget.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, RocksDbOptions::default())
    }

    pub fn open_with(dir: &Path, options: RocksDbOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let cache = Cache::new_lru_cache(options.memory_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_write_buffer_size((options.memory_bytes / 4).max(1 << 20));
        let mut opts = cf_opts.clone();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_write_buffer_manager(&WriteBufferManager::new_write_buffer_manager_with_cache(
            options.memory_bytes / 2,
            false,
            cache,
        ));
        let existing = Db::list_cf(&opts, dir).unwrap_or_default();
        let cfs = existing
            .into_iter()
            .map(|name| rocksdb::ColumnFamilyDescriptor::new(name, cf_opts.clone()));
        let db = Db::open_cf_descriptors(&opts, dir, cfs).map_err(|e| rocks_err(dir, e))?;
        tracing::debug!(path = %dir.display(), "opened RocksDB state");
        Ok(Self {
            db: Arc::new(db),
            path: dir.to_path_buf(),
            cf_options: Arc::new(cf_opts),
            creating: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Each table's size as RocksDB estimates it: live data in SST files
    /// plus what the memtables hold.
    pub fn table_sizes(&self) -> Vec<(String, u64)> {
        let names = Db::list_cf(&Options::default(), &self.path).unwrap_or_default();
        names
            .into_iter()
            .filter(|n| n != "default")
            .filter_map(|name| {
                let cf = self.db.cf_handle(&name)?;
                let prop = |p: &str| {
                    self.db
                        .property_int_value_cf(&cf, p)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                };
                let bytes = prop("rocksdb.estimate-live-data-size")
                    + prop("rocksdb.cur-size-all-mem-tables");
                Some((name, bytes))
            })
            .collect()
    }

    /// Writes a consistent copy of every table to `dir` (which must not
    /// exist): memtables are flushed, SST files hard-linked.
    pub fn create_checkpoint(&self, dir: &Path) -> Result<()> {
        let checkpoint = Checkpoint::new(&self.db).map_err(|e| rocks_err(&self.path, e))?;
        checkpoint
            .create_checkpoint(dir)
            .map_err(|e| rocks_err(dir, e))
    }
}

/// Writes skip the WAL: see the module docs.
fn write_options() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

fn rocks_err(path: &Path, source: rocksdb::Error) -> StateError {
    StateError::RocksDb {
        path: path.display().to_string(),
        source,
    }
}

impl StateBackend for RocksDbBackend {
    fn open_table(&self, name: &str) -> Result<Arc<dyn StateTable>> {
        if self.db.cf_handle(name).is_none() {
            // Subtasks of one operator share its table and open it at once.
            let _creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
            if self.db.cf_handle(name).is_none() {
                self.db
                    .create_cf(name, &self.cf_options)
                    .map_err(|e| rocks_err(&self.path, e))?;
            }
        }
        Ok(Arc::new(RocksTable {
            backend: self.clone(),
            name: name.to_string(),
        }))
    }
}

#[derive(Debug)]
struct RocksTable {
    backend: RocksDbBackend,
    name: String,
}

impl RocksTable {
    fn cf(&self) -> Result<Arc<BoundColumnFamily<'_>>> {
        self.backend
            .db
            .cf_handle(&self.name)
            .ok_or_else(|| StateError::Corrupt {
                table: self.name.clone(),
                reason: "column family disappeared".into(),
            })
    }

    fn db(&self) -> &Db {
        &self.backend.db
    }

    fn err(&self, e: rocksdb::Error) -> StateError {
        rocks_err(&self.backend.path, e)
    }
}

impl StateTable for RocksTable {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db().get_cf(&self.cf()?, key).map_err(|e| self.err(e))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db()
            .put_cf_opt(&self.cf()?, key, value, &write_options())
            .map_err(|e| self.err(e))
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.db()
            .delete_cf_opt(&self.cf()?, key, &write_options())
            .map_err(|e| self.err(e))
    }

    fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<Entry>> {
        let cf = self.cf()?;
        let mut out = Vec::new();
        for item in self
            .db()
            .iterator_cf(&cf, IteratorMode::From(start, rocksdb::Direction::Forward))
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if &*k >= end {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn first(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>> {
        let cf = self.cf()?;
        let mut iter = self
            .db()
            .iterator_cf(&cf, IteratorMode::From(start, rocksdb::Direction::Forward));
        match iter.next() {
            Some(item) => {
                let (k, v) = item.map_err(|e| self.err(e))?;
                Ok((&*k < end).then(|| (k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        self.db()
            .delete_range_cf_opt(&self.cf()?, start, end, &write_options())
            .map_err(|e| self.err(e))
    }

    fn write_batch(&self, ops: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<()> {
        let cf = self.cf()?;
        let mut batch = WriteBatch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.put_cf(&cf, k, v),
                None => batch.delete_cf(&cf, k),
            }
        }
        self.db()
            .write_opt(batch, &write_options())
            .map_err(|e| self.err(e))
    }
}
