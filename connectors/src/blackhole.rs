//! `connector = 'blackhole'` (Flink's): a sink that discards rows, for
//! benchmarks.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::{DeliveryGuarantee, Result, Sink, SinkProvider};

use crate::options::{OptionDecl, Options};
use crate::registry::{Connector, ConnectorContext};

#[derive(Debug)]
pub struct BlackholeConnector;

impl Connector for BlackholeConnector {
    fn name(&self) -> &'static str {
        "blackhole"
    }

    fn help(&self) -> &'static str {
        "discards every row (for benchmarks)"
    }

    fn options(&self) -> Vec<OptionDecl> {
        Vec::new()
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn sink(&self, _ctx: &ConnectorContext<'_>) -> crate::Result<Arc<dyn SinkProvider>> {
        Ok(Arc::new(BlackholeSink))
    }

    fn guarantee(&self, _options: &Options) -> DeliveryGuarantee {
        DeliveryGuarantee::None
    }
}

#[derive(Debug, Default)]
pub struct BlackholeSink;

impl SinkProvider for BlackholeSink {
    fn writer(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(BlackholeSink))
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        DeliveryGuarantee::None
    }
}

impl Sink for BlackholeSink {
    fn name(&self) -> String {
        "blackhole".into()
    }

    fn write_batch(&mut self, _batch: &RecordBatch) -> Result<()> {
        Ok(())
    }
}
