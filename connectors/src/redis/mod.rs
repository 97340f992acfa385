//! `connector = 'redis'`: Redis Streams as a source, and a stream or
//! hashes as a sink, over redis-rs's synchronous client.
//!
//! - [`source`]: a stream read through a consumer group (`XREADGROUP`),
//!   one split per stream. The last entry handed over is the split's
//!   position in Eddy's checkpoints; entries are acknowledged (`XACK`)
//!   once a checkpoint that covers them completes, so a restore reads the
//!   entries delivered after the checkpointed position again, from the
//!   consumer's pending list (at-least-once).
//! - [`sink`]: `'mode'` = `'stream'` appends each row as an entry
//!   (`XADD`); `'hash'` keeps a hash per key equal to the query's current
//!   row (`DEL` and `HSET` in one `MULTI`, `-D` a `DEL`), the read model of
//!   CQRS. Both at-least-once: a restore writes the rows since the last
//!   checkpoint again (a hash ends the same).

mod sink;
mod source;

use std::sync::Arc;
use std::time::Duration;

use eddy_operators::{DeliveryGuarantee, OperatorError, SinkProvider, SourceProvider};

pub use self::sink::RedisSinkProvider;
pub use self::source::RedisSource;
use crate::options::{OptionDecl, OptionType, Options};
use crate::registry::{Connector, ConnectorContext, FormatSupport};
use crate::{ConnectorError, Result, option_error};

pub(crate) const URL: &str = "url";
pub(crate) const STREAM: &str = "stream";
pub(crate) const GROUP: &str = "group";
pub(crate) const CONSUMER: &str = "consumer";
pub(crate) const FIELD: &str = "field";
pub(crate) const STARTUP_MODE: &str = "scan.startup.mode";
pub(crate) const BOUNDED_MODE: &str = "scan.bounded.mode";
pub(crate) const MODE: &str = "mode";
pub(crate) const KEY_FIELDS: &str = "key.fields";
pub(crate) const KEY_PREFIX: &str = "key.prefix";

/// How long a call may wait for the server before the job fails (and its
/// restart strategy takes over).
const TIMEOUT: Duration = Duration::from_secs(10);

/// `connector = 'redis'`.
#[derive(Debug)]
pub struct RedisConnector;

impl Connector for RedisConnector {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn help(&self) -> &'static str {
        "Redis Streams: a source read through a consumer group (entries acknowledged after each checkpoint: at-least-once), and an at-least-once sink to a stream or to a hash per key"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::required(
                URL,
                OptionType::String,
                "redis://[user:password@]host:port[/db]",
            ),
            OptionDecl::unset(
                STREAM,
                OptionType::String,
                "the stream's key (a sink in 'stream' mode appends to it)",
            ),
            OptionDecl::optional(
                GROUP,
                OptionType::String,
                "eddy",
                "the consumer group the source reads through (created if missing)",
            )
            .source_only(),
            OptionDecl::unset(
                CONSUMER,
                OptionType::String,
                "the consumer's name in the group (default: eddy-<table>)",
            )
            .source_only(),
            OptionDecl::unset(
                FIELD,
                OptionType::String,
                "the entry field that holds a record of 'format' (read by a source, written by a stream sink); unset: the entry's fields are the columns, by name (a source then reads them with 'format' = 'json')",
            ),
            OptionDecl::optional(
                STARTUP_MODE,
                OptionType::OneOf(&["earliest", "latest"]),
                "earliest",
                "where a new consumer group starts: the stream's first entry or its end (an existing group goes on from where it is)",
            )
            .source_only(),
            OptionDecl::optional(
                BOUNDED_MODE,
                OptionType::OneOf(&["unbounded", "latest"]),
                "unbounded",
                "latest: stop after the entries the stream holds when the job starts",
            )
            .source_only(),
            OptionDecl::optional(
                MODE,
                OptionType::OneOf(&["stream", "hash"]),
                "stream",
                "stream: each row appended to 'stream' (XADD); hash: a hash per key holding the key's current row (-D deletes it)",
            )
            .sink_only(),
            OptionDecl::unset(
                KEY_FIELDS,
                OptionType::String,
                "hash mode: the columns of a row's key, ;-separated (default: the PRIMARY KEY)",
            )
            .sink_only(),
            OptionDecl::unset(
                KEY_PREFIX,
                OptionType::String,
                "hash mode: the start of every key (default: <table>:); the key columns' values follow, :-separated",
            )
            .sink_only(),
        ]
    }

    fn format(&self) -> FormatSupport {
        FormatSupport::Optional("json")
    }

    fn is_source(&self) -> bool {
        true
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn source(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SourceProvider>> {
        Ok(Arc::new(RedisSource::try_new(ctx)?))
    }

    fn sink(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SinkProvider>> {
        Ok(Arc::new(RedisSinkProvider::try_new(ctx)?))
    }

    fn guarantee(&self, _options: &Options) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

/// A client of `url`, checked for its form (no connection yet).
pub(crate) fn client(options: &Options) -> Result<redis::Client> {
    let url = options.require(URL)?.trim();
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(option_error(
            URL,
            format!("'{url}' is not a Redis URL (write redis://host:port)"),
        ));
    }
    redis::Client::open(url).map_err(|e| option_error(URL, format!("cannot read '{url}': {e}")))
}

/// A connection with timeouts, so that a server that is away fails the
/// job instead of hanging it.
pub(crate) fn connect(client: &redis::Client) -> eddy_operators::Result<redis::Connection> {
    let connection = client
        .get_connection_with_timeout(TIMEOUT)
        .map_err(|e| redis_error("cannot connect", &e))?;
    connection
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| connection.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| redis_error("cannot set timeouts", &e))?;
    Ok(connection)
}

/// A client error, in words that name the connector.
pub(crate) fn redis_error(what: &str, e: &redis::RedisError) -> OperatorError {
    OperatorError::Connector(format!("redis: {what}: {e}"))
}

/// The columns named by `key.fields` (or the primary key), as indexes.
pub(crate) fn key_columns(
    options: &Options,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    primary_key: &[String],
) -> Result<Vec<usize>> {
    let names: Vec<String> = match options.get(KEY_FIELDS) {
        Some(list) => list
            .split(';')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => primary_key.to_vec(),
    };
    names
        .iter()
        .map(|n| {
            schema.index_of(n).map_err(|_| ConnectorError::Option {
                option: KEY_FIELDS.into(),
                message: format!("'{n}' is not a column of the table"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
