//! # eddy-connectors
//!
//! Sources, sinks and the formats they read and write, as plug-ins:
//!
//! - [`registry`]: connector names to [`Connector`]s, each declaring its
//!   options once ([`options`]); validation, errors, `SHOW CONNECTORS`,
//!   `DESCRIBE CONNECTOR` and the README's tables come from there;
//! - [`format`]: formats by name (`json`, `csv`), shared by every
//!   connector that carries bytes;
//! - the built-in connectors, one module each: [`nexmark`], [`file`],
//!   [`stdout`], [`blackhole`], [`kafka`], [`postgres`], [`redis`], [`rabbitmq`], [`http`], and [`memory`] for embedding
//!   programs.
//!
//! A connector makes a `SourceProvider` (splits and readers) and/or a
//! `SinkProvider` (writers and a committer), the runtime's interfaces in
//! `eddy-operators`.

pub mod bad_data;
pub mod blackhole;
pub mod datagen;
pub mod file;
pub mod format;
pub mod http;
pub mod kafka;
mod materialize;
pub mod memory;
pub mod nexmark;
pub mod options;
pub mod postgres;
pub mod print;
pub mod rabbitmq;
pub mod redis;
pub mod registry;
pub mod stdout;
pub mod values;

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

pub use materialize::MaterializingSink;
pub use memory::{MemoryCollector, MemoryConnector, MemorySink};
pub use options::{
    OptionDecl, OptionError, OptionType, Options, Role, parse_duration_ms, parse_memory_bytes,
};
pub use registry::{
    Connector, ConnectorContext, ConnectorRegistry, FormatSupport, METADATA_FIELD, MetadataKey,
    SourceChangelog, Table, Validated, metadata_key,
};

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{0}")]
    Config(String),
    /// A problem with the value of one option (the planner points at it).
    #[error("{message}")]
    Option { option: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Runtime(#[from] eddy_operators::OperatorError),
}

pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

impl From<ConnectorError> for eddy_operators::OperatorError {
    fn from(e: ConnectorError) -> Self {
        match e {
            ConnectorError::Runtime(e) => e,
            other => eddy_operators::OperatorError::Connector(other.to_string()),
        }
    }
}

/// An option-value error for the planner to point at.
pub(crate) fn option_error(option: &str, message: impl Into<String>) -> ConnectorError {
    ConnectorError::Option {
        option: option.to_string(),
        message: message.into(),
    }
}

/// The connectors every registry starts with.
pub(crate) fn builtin_connectors() -> Vec<Arc<dyn Connector>> {
    vec![
        Arc::new(nexmark::NexmarkConnector),
        Arc::new(file::FileConnector),
        Arc::new(stdout::StdoutConnector),
        Arc::new(print::PrintConnector),
        Arc::new(blackhole::BlackholeConnector),
        Arc::new(values::ValuesConnector),
        Arc::new(datagen::DatagenConnector),
        Arc::new(kafka::KafkaConnector::KAFKA),
        Arc::new(kafka::KafkaConnector::UPSERT_KAFKA),
        Arc::new(postgres::PostgresConnector),
        Arc::new(redis::RedisConnector),
        Arc::new(http::HttpConnector),
        Arc::new(rabbitmq::RabbitConnector),
    ]
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
