//! The RocksDB backend: one database per job directory, one column family
//! per table.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BoundColumnFamily, DBWithThreadMode, IteratorMode, MultiThreaded, Options, WriteBatch,
};

use crate::{Entry, Result, StateBackend, StateError, StateTable};

type Db = DBWithThreadMode<MultiThreaded>;

#[derive(Debug, Clone)]
pub struct RocksDbBackend {
    db: Arc<Db>,
    path: PathBuf,
}

impl RocksDbBackend {
    /// Opens (or creates) the database in `dir`, with every column family
    /// it already holds.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let existing = Db::list_cf(&opts, dir).unwrap_or_default();
        let db = Db::open_cf(&opts, dir, existing).map_err(|e| rocks_err(dir, e))?;
        tracing::debug!(path = %dir.display(), "opened RocksDB state");
        Ok(Self {
            db: Arc::new(db),
            path: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
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
            self.db
                .create_cf(name, &Options::default())
                .map_err(|e| rocks_err(&self.path, e))?;
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
            .put_cf(&self.cf()?, key, value)
            .map_err(|e| self.err(e))
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.db()
            .delete_cf(&self.cf()?, key)
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

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        self.db()
            .delete_range_cf(&self.cf()?, start, end)
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
        self.db().write(batch).map_err(|e| self.err(e))
    }
}
