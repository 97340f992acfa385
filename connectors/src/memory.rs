//! An in-process sink that keeps rows in memory, for embedding Eddy and for
//! tests: an embedding program registers a [`MemoryConnector`] (named
//! `memory`) with its own collector, and reads the rows from it.

use std::sync::{Arc, Mutex};

use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::{DeliveryGuarantee, Result, Sink, SinkProvider};

use crate::options::{OptionDecl, Options};
use crate::registry::{Connector, ConnectorContext};

/// `connector = 'memory'`: rows into a [`MemoryCollector`].
#[derive(Debug, Default)]
pub struct MemoryConnector {
    pub collector: MemoryCollector,
}

impl Connector for MemoryConnector {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn help(&self) -> &'static str {
        "rows kept in the memory of the program that embeds eddy"
    }

    fn options(&self) -> Vec<OptionDecl> {
        Vec::new()
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn sink(&self, _ctx: &ConnectorContext<'_>) -> crate::Result<Arc<dyn SinkProvider>> {
        Ok(Arc::new(self.collector.clone()))
    }

    fn guarantee(&self, _options: &Options) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

impl SinkProvider for MemoryCollector {
    fn writer(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.sink()))
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

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

    /// The rows received so far, leaving none.
    pub fn take(&self) -> Vec<RecordBatch> {
        std::mem::take(&mut *self.batches.lock().unwrap_or_else(|e| e.into_inner()))
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
