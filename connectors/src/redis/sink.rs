//! The Redis sink: rows appended to a stream, or a hash per key.
//!
//! - `'mode'` = `'stream'`: each row an entry (`XADD stream * col value
//!   ...`, a NULL column left out), sent a batch at a time; with
//!   `'field'`, the row encoded by `'format'` in that one field, as the
//!   source reads it back.
//! - `'mode'` = `'hash'`: the key is `'key.prefix'` and the key columns'
//!   values, `:`-separated. Each key's last change of a batch is sent at
//!   the barrier (or once 1 000 keys are waiting): `+I`/`+U` replace the
//!   hash (`DEL`, `HSET` in one `MULTI`), `-D` and a `-U` no `+U` follows
//!   delete it.
//!
//! At-least-once: a restore writes the rows since the last checkpoint
//! again; a hash ends as it would have.

use std::collections::HashMap;
use std::fmt::Write as _;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_operators::sink::Sink;
use eddy_operators::updating::{OP_COLUMN, OP_DELETE, OP_UPDATE_BEFORE};
use eddy_operators::{DeliveryGuarantee, SinkProvider};

use super::{FIELD, KEY_PREFIX, MODE, STREAM, connect, key_columns, redis_error};
use crate::format::Encoder;
use crate::registry::ConnectorContext;
use crate::{ConnectorError, Result, option_error};

type OpResult<T> = eddy_operators::Result<T>;

/// Keys waiting before they are sent ahead of the barrier.
const MAX_KEYS: usize = 1_000;

#[derive(Debug, Clone)]
enum Mode {
    /// To this stream: the columns as fields, or with `'field'`, the
    /// row encoded by the format in that one field.
    Stream(String, Option<String>),
    Hash {
        key: Vec<usize>,
        prefix: String,
    },
}

/// `connector = 'redis'` as a sink.
#[derive(Debug)]
pub struct RedisSinkProvider {
    client: redis::Client,
    mode: Mode,
    /// The columns written: all but `_op`.
    data: Vec<usize>,
    op_column: Option<usize>,
    schema: SchemaRef,
    table: String,
    format: std::sync::Arc<dyn crate::format::Format>,
    options: crate::options::Options,
}

impl RedisSinkProvider {
    pub(crate) fn try_new(ctx: &ConnectorContext<'_>) -> Result<Self> {
        let options = ctx.options;
        let op_column = ctx.schema.index_of(OP_COLUMN).ok();
        let mode = match options.get(MODE).unwrap_or("stream") {
            "hash" => {
                let key = key_columns(options, ctx.schema, ctx.primary_key)?;
                if key.is_empty() {
                    return Err(option_error(
                        MODE,
                        "'mode' = 'hash' keys each hash by columns: declare PRIMARY KEY (...) NOT ENFORCED, or 'key.fields'",
                    ));
                }
                let prefix = options
                    .get(KEY_PREFIX)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}:", ctx.name));
                if options.is_set(FIELD) {
                    return Err(option_error(
                        FIELD,
                        "a hash holds the row's columns as its fields: 'field' is for 'mode' = 'stream'",
                    ));
                }
                Mode::Hash { key, prefix }
            }
            _ => {
                if op_column.is_some() {
                    return Err(ConnectorError::Config(
                        "a Redis stream takes appended rows, and this query updates rows it wrote: use 'mode' = 'hash' with a PRIMARY KEY".into(),
                    ));
                }
                let stream = options.require_text(STREAM, "'mode' = 'stream'")?;
                Mode::Stream(stream, options.get(FIELD).map(str::to_string))
            }
        };
        let data = (0..ctx.schema.fields().len())
            .filter(|&i| Some(i) != op_column)
            .collect();
        let format = ctx.formats.chosen(options)?.clone();
        if matches!(mode, Mode::Stream(_, Some(_))) {
            format.encoder(ctx.schema, options)?.ok_or_else(|| {
                ConnectorError::Config(format!("the format '{}' cannot be written", format.name()))
            })?;
        }
        Ok(Self {
            client: super::client(options)?,
            mode,
            data,
            op_column,
            schema: ctx.schema.clone(),
            table: ctx.name.to_string(),
            format,
            options: options.clone(),
        })
    }
}

impl SinkProvider for RedisSinkProvider {
    fn writer(&self) -> OpResult<Box<dyn Sink>> {
        let encoder = match &self.mode {
            Mode::Stream(_, Some(_)) => self.format.encoder(&self.schema, &self.options)?,
            _ => None,
        };
        Ok(Box::new(RedisWriter {
            encoder,
            client: self.client.clone(),
            connection: None,
            mode: self.mode.clone(),
            names: self
                .data
                .iter()
                .map(|&i| self.schema.field(i).name().clone())
                .collect(),
            data: self.data.clone(),
            op_column: self.op_column,
            table: self.table.clone(),
            changes: HashMap::new(),
        }))
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

struct RedisWriter {
    /// Stream mode with `'field'`: encodes each row.
    encoder: Option<Box<dyn Encoder>>,
    client: redis::Client,
    connection: Option<redis::Connection>,
    mode: Mode,
    /// The written columns' names.
    names: Vec<String>,
    data: Vec<usize>,
    op_column: Option<usize>,
    table: String,
    /// Hash mode: each key's last change (`None`: delete), by key.
    changes: HashMap<String, Option<Vec<(usize, String)>>>,
}

impl RedisWriter {
    fn send(&mut self, pipe: &redis::Pipeline) -> OpResult<()> {
        if self.connection.is_none() {
            self.connection = Some(connect(&self.client)?);
        }
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        pipe.query::<()>(connection).map_err(|e| {
            self.connection = None;
            redis_error(&format!("cannot write {}", self.table), &e)
        })
    }

    /// Sends the hashes' changes.
    fn flush_changes(&mut self) -> OpResult<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, change) in &self.changes {
            pipe.cmd("DEL").arg(key).ignore();
            if let Some(values) = change.as_ref().filter(|v| !v.is_empty()) {
                let hset = pipe.cmd("HSET").arg(key);
                for (column, value) in values {
                    hset.arg(&self.names[*column]).arg(value);
                }
                hset.ignore();
            }
        }
        self.send(&pipe)?;
        self.changes.clear();
        Ok(())
    }
}

/// The non-NULL values of `row`, as (column, text).
fn values(formatters: &[(&dyn Array, ArrayFormatter<'_>)], row: usize) -> Vec<(usize, String)> {
    formatters
        .iter()
        .enumerate()
        .filter(|(_, (array, _))| !array.is_null(row))
        .map(|(i, (_, f))| (i, f.value(row).to_string()))
        .collect()
}

impl Sink for RedisWriter {
    fn name(&self) -> String {
        match &self.mode {
            Mode::Stream(stream, _) => format!("redis stream {stream}"),
            Mode::Hash { prefix, .. } => format!("redis hashes {prefix}*"),
        }
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> OpResult<()> {
        let options = FormatOptions::default();
        let formatters = self
            .data
            .iter()
            .map(|&i| {
                let column = batch.column(i).as_ref();
                ArrayFormatter::try_new(column, &options).map(|f| (column, f))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let ops = eddy_operators::updating::changelog_ops(batch, self.op_column)?;
        match self.mode.clone() {
            Mode::Stream(stream, Some(field)) => {
                let Some(encoder) = self.encoder.as_mut() else {
                    return Ok(());
                };
                let mut pipe = redis::pipe();
                for record in encoder.records(batch)? {
                    pipe.cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg(&field)
                        .arg(record)
                        .ignore();
                }
                self.send(&pipe)
            }
            Mode::Stream(stream, None) => {
                let mut pipe = redis::pipe();
                for row in 0..batch.num_rows() {
                    let xadd = pipe.cmd("XADD").arg(&stream).arg("*");
                    for (column, value) in values(&formatters, row) {
                        xadd.arg(&self.names[column]).arg(value);
                    }
                    xadd.ignore();
                }
                self.send(&pipe)
            }
            Mode::Hash { key, prefix } => {
                for row in 0..batch.num_rows() {
                    let mut name = prefix.clone();
                    for (n, &k) in key.iter().enumerate() {
                        if n > 0 {
                            name.push(':');
                        }
                        let position = self.data.iter().position(|&d| d == k).unwrap_or(k);
                        let _ = write!(name, "{}", formatters[position].1.value(row));
                    }
                    let change = match ops.as_ref().map(|o| o.value(row)) {
                        Some(OP_DELETE | OP_UPDATE_BEFORE) => None,
                        _ => Some(values(&formatters, row)),
                    };
                    self.changes.insert(name, change);
                }
                if self.changes.len() >= MAX_KEYS {
                    self.flush_changes()?;
                }
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> OpResult<()> {
        self.flush_changes()
    }
}

impl std::fmt::Debug for RedisWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisWriter")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}
