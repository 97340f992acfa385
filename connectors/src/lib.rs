//! # eddy-connectors
//!
//! Sources and sinks, and the formats they read and write:
//!
//! | connector   | source | sink | options |
//! |-------------|--------|------|---------|
//! | `nexmark`   | yes    |      | `table`, `events.num`, `first-event.rate`, `seed`, `base-time`, `flink-compat`, `max-emit-speed`, `batch.size` |
//! | `file`      | yes    | yes  | `path` (a file; for sources also a directory, one partition per file), `format` (`json` lines or `csv` with a header; sinks write `json`) |
//! | `stdout`    |        | yes  | `format` (`table` or `json`) |
//! | `blackhole` |        | yes  | (none: discards rows; for benchmarks) |
//!
//! Every source also takes `watermark.idle-timeout` (read by the planner
//! for the watermark generator).
//!
//! [`SourceConfig::parse`] and [`SinkConfig::parse`] validate options at
//! plan time, so a typo fails before anything runs; `build` makes the
//! runtime object.

mod blackhole;
mod file;
mod file_sink;
mod materialize;
mod memory;
pub mod nexmark;
mod options;
mod stdout;

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::lookup::LookupTable;
use eddy_operators::{Sink, Source};

pub use blackhole::BlackholeSink;
pub use file::{FileFormat, FileSource, PartitionedFileSource};
pub use file_sink::FileSink;
pub use materialize::MaterializingSink;
pub use memory::{MemoryCollector, MemorySink};
pub use options::{Options, parse_duration_ms, parse_memory_bytes};
pub use stdout::{StdoutFormat, StdoutSink};

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

impl From<ConnectorError> for eddy_operators::OperatorError {
    fn from(e: ConnectorError) -> Self {
        eddy_operators::OperatorError::Connector(e.to_string())
    }
}

const SOURCE_CONNECTORS: &str = "'nexmark' or 'file'";
const SINK_CONNECTORS: &str = "'file', 'stdout' or 'blackhole'";

/// A validated source definition.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    Nexmark(nexmark::NexmarkConfig),
    File(file::FileSourceConfig),
}

impl SourceConfig {
    /// Validates `options` for a source whose rows have `schema`.
    pub fn parse(options: &Options, schema: &SchemaRef) -> Result<Self> {
        let connector = options.require("connector")?;
        // Read by the planner for the source's watermark generator.
        if let Some(idle) = options.get("watermark.idle-timeout")
            && parse_duration_ms(&idle).is_none()
        {
            return Err(ConnectorError::Config(format!(
                "option 'watermark.idle-timeout' has an invalid value '{idle}' (write e.g. '10 s')"
            )));
        }
        let config = match connector.as_str() {
            "nexmark" => SourceConfig::Nexmark(nexmark::NexmarkConfig::parse(options, schema)?),
            "file" | "filesystem" => {
                SourceConfig::File(file::FileSourceConfig::parse(options, schema)?)
            }
            other => {
                return Err(ConnectorError::Config(format!(
                    "unknown source connector '{other}' (expected {SOURCE_CONNECTORS})"
                )));
            }
        };
        options.check_all_used()?;
        Ok(config)
    }

    /// Makes the source. Sources are not split yet: one subtask reads all.
    pub fn build(&self) -> Result<Box<dyn Source>> {
        Ok(match self {
            SourceConfig::Nexmark(c) => Box::new(nexmark::NexmarkSource::new(c.clone())),
            SourceConfig::File(c) if c.files.len() > 1 || c.path.is_dir() => {
                Box::new(file::PartitionedFileSource::open(c)?)
            }
            SourceConfig::File(c) => Box::new(FileSource::open(c.clone())?),
        })
    }
}

impl SourceConfig {
    /// The table a lookup join reads whole (`JOIN t FOR SYSTEM_TIME AS OF
    /// s.proc_time`): files only, which are bounded; `None` for sources
    /// that are not.
    pub fn lookup_table(&self) -> Option<Arc<dyn LookupTable>> {
        match self {
            SourceConfig::File(c) => Some(Arc::new(FileLookupTable {
                source: self.clone(),
                files: c.files.clone(),
                path: c.path.clone(),
            })),
            SourceConfig::Nexmark(_) => None,
        }
    }
}

/// A file (or a directory's files, as listed when the job was planned) read
/// whole, again whenever one of the files changes length or modification
/// time.
#[derive(Debug)]
struct FileLookupTable {
    source: SourceConfig,
    files: Vec<std::path::PathBuf>,
    path: std::path::PathBuf,
}

impl LookupTable for FileLookupTable {
    fn name(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn load(&self) -> eddy_operators::Result<Vec<RecordBatch>> {
        let mut source = self.source.build()?;
        let mut batches = Vec::new();
        while let Some(b) = source.next_batch()? {
            batches.push(b);
        }
        Ok(batches)
    }

    fn version(&self) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for f in &self.files {
            let meta = std::fs::metadata(f).ok()?;
            (meta.len(), meta.modified().ok()?).hash(&mut hasher);
        }
        Some(hasher.finish())
    }
}

/// The sink option that carries `CREATE SINK ... PARTITIONED BY (a, b)`:
/// `'partitioned-by' = 'a,b'`.
pub const PARTITIONED_BY: &str = "partitioned-by";

/// A validated sink definition.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    File {
        path: std::path::PathBuf,
        /// `PARTITIONED BY` columns (see [`PARTITIONED_BY`]).
        partition_by: Vec<String>,
    },
    Stdout(StdoutFormat),
    Blackhole,
}

impl SinkConfig {
    pub fn parse(options: &Options) -> Result<Self> {
        let connector = options.require("connector")?;
        let config = match connector.as_str() {
            "file" | "filesystem" => {
                let path = options.require("path")?.into();
                match options.get("format").as_deref().unwrap_or("json") {
                    "json" => {}
                    other => {
                        return Err(ConnectorError::Config(format!(
                            "unsupported sink format '{other}' (the file sink writes 'json')"
                        )));
                    }
                }
                let partition_by = options
                    .get(PARTITIONED_BY)
                    .map(|v| v.split(',').map(|c| c.trim().to_string()).collect())
                    .unwrap_or_default();
                SinkConfig::File { path, partition_by }
            }
            "stdout" | "print" => {
                SinkConfig::Stdout(StdoutFormat::parse(options.get("format").as_deref())?)
            }
            "blackhole" => SinkConfig::Blackhole,
            other => {
                return Err(ConnectorError::Config(format!(
                    "unknown sink connector '{other}' (expected {SINK_CONNECTORS})"
                )));
            }
        };
        options.check_all_used()?;
        Ok(config)
    }

    pub fn build(&self, schema: SchemaRef) -> Result<Box<dyn Sink>> {
        Ok(match self {
            SinkConfig::File { path, partition_by } => {
                Box::new(FileSink::create(path, schema, partition_by)?)
            }
            SinkConfig::Stdout(format) => Box::new(StdoutSink::new(*format, schema)),
            SinkConfig::Blackhole => Box::new(BlackholeSink),
        })
    }
}

/// Casts each column of `batch` to the type `schema` declares (a source's
/// DDL may declare e.g. `price DOUBLE` over integer data).
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The schema [`readable_changelog`] gives batches of `schema`: a
/// changelog's `_op` (Int8) becomes `op` (text).
pub fn readable_schema(schema: &SchemaRef) -> SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use eddy_operators::updating::OP_COLUMN;
    match schema.column_with_name(OP_COLUMN) {
        Some((idx, field)) if field.data_type() == &DataType::Int8 => {
            let mut fields: Vec<Field> =
                schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields[idx] = Field::new("op", DataType::Utf8, false);
            Arc::new(Schema::new(fields))
        }
        _ => schema.clone(),
    }
}

/// For people and files: a changelog's `_op` column (Int8 codes) becomes an
/// `op` column of `+I`, `-U`, `+U`, `-D`. Other batches pass unchanged.
pub fn readable_changelog(batch: &RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::datatypes::Int8Type;
    use eddy_operators::updating::{OP_COLUMN, op_name};
    let schema = batch.schema();
    let readable = readable_schema(&schema);
    if Arc::ptr_eq(&readable, &schema) {
        return Ok(batch.clone());
    }
    let Some((idx, _)) = schema.column_with_name(OP_COLUMN) else {
        return Ok(batch.clone());
    };
    let codes = batch.column(idx).as_primitive::<Int8Type>();
    let ops: StringArray = codes.iter().map(|c| c.map(op_name)).collect();
    let mut columns = batch.columns().to_vec();
    columns[idx] = Arc::new(ops);
    Ok(RecordBatch::try_new(readable, columns)?)
}
