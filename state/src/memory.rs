//! An in-memory backend for unit tests: a `BTreeMap` per table.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{Entry, Result, StateBackend, StateTable};

#[derive(Debug, Default)]
pub struct MemoryBackend {
    tables: Mutex<HashMap<String, Arc<MemoryTable>>>,
}

#[derive(Debug, Default)]
struct MemoryTable {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryTable {
    fn map(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-written.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateBackend for MemoryBackend {
    fn open_table(&self, name: &str) -> Result<Arc<dyn StateTable>> {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let table = tables.entry(name.to_string()).or_default().clone();
        Ok(table)
    }
}

impl StateTable for MemoryTable {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map().get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.map().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.map().remove(key);
        Ok(())
    }

    fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<Entry>> {
        if start >= end {
            return Ok(vec![]);
        }
        Ok(self
            .map()
            .range(start.to_vec()..end.to_vec())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn first(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>> {
        if start >= end {
            return Ok(None);
        }
        Ok(self
            .map()
            .range(start.to_vec()..end.to_vec())
            .next()
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        let mut map = self.map();
        let keys: Vec<_> = map
            .range(start.to_vec()..end.to_vec())
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            map.remove(&k);
        }
        Ok(())
    }

    fn write_batch(&self, ops: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<()> {
        let mut map = self.map();
        for (k, v) in ops {
            match v {
                Some(v) => map.insert(k.clone(), v.clone()),
                None => map.remove(k),
            };
        }
        Ok(())
    }
}
