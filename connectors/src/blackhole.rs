//! A sink that discards rows (Flink's `blackhole`), for benchmarks.

use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::{Result, Sink};

#[derive(Debug, Default)]
pub struct BlackholeSink;

impl Sink for BlackholeSink {
    fn name(&self) -> String {
        "blackhole".into()
    }

    fn write_batch(&mut self, _batch: &RecordBatch) -> Result<()> {
        Ok(())
    }
}
