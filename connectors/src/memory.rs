//! An in-process sink that keeps rows in memory, for embedding Eddy and for
//! tests. Not reachable from SQL options.

use std::sync::{Arc, Mutex};

use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::{Result, Sink};

/// A shared handle to the rows a [`MemorySink`] received.
#[derive(Debug, Clone, Default)]
pub struct MemoryCollector {
    batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl MemoryCollector {
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn sink(&self) -> MemorySink {
        MemorySink {
            collector: self.clone(),
        }
    }
}

#[derive(Debug)]
pub struct MemorySink {
    collector: MemoryCollector,
}

impl Sink for MemorySink {
    fn name(&self) -> String {
        "memory".into()
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.collector
            .batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(batch.clone());
        Ok(())
    }
}
