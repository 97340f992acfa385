//! `connector = 'kafka'`: topics as a source and a sink, with Flink SQL's
//! option names, over librdkafka (the `rdkafka` crate, built from source).
//!
//! - [`source`]: each partition is a split, spread over the source's
//!   subtasks, with its own position (the next offset, kept in Eddy's
//!   checkpoints, never auto-committed) and its own watermark. Startup and
//!   bounded modes as Flink's (`scan.startup.mode`, `scan.bounded.mode`).
//! - [`sink`]: `sink.delivery-guarantee` = `at-least-once` (an idempotent
//!   producer flushed at each barrier), `exactly-once` (a transaction per
//!   checkpoint, committed through the commit protocol, recoverable after a
//!   crash: see [`transaction`]) or `none`.
//!
//! Every `properties.*` option goes to the client without the prefix, as
//! in Flink (`properties.bootstrap.servers`).

mod decode;
mod key;
mod offsets;
pub mod sink;
pub mod source;
mod transaction;

use std::sync::Arc;

use eddy_operators::{DeliveryGuarantee, SinkProvider, SourceProvider};
use rdkafka::ClientConfig;

pub use self::sink::KafkaSinkProvider;
pub use self::source::KafkaSource;
use crate::Result;
use crate::options::{OptionDecl, OptionType, Options};
use crate::registry::{Connector, ConnectorContext, FormatSupport, SourceChangelog};

/// A record's headers, in order: key, and value if it has one.
pub(crate) type Headers = Vec<(String, Option<Vec<u8>>)>;

pub(crate) const TOPIC: &str = "topic";
pub(crate) const TOPIC_PATTERN: &str = "topic-pattern";
pub(crate) const PROPERTIES: &str = "properties.";
pub(crate) const BOOTSTRAP: &str = "properties.bootstrap.servers";
pub(crate) const GROUP_ID: &str = "properties.group.id";
pub(crate) const STARTUP_MODE: &str = "scan.startup.mode";
pub(crate) const STARTUP_TIMESTAMP: &str = "scan.startup.timestamp-millis";
pub(crate) const STARTUP_OFFSETS: &str = "scan.startup.specific-offsets";
pub(crate) const BOUNDED_MODE: &str = "scan.bounded.mode";
pub(crate) const BOUNDED_TIMESTAMP: &str = "scan.bounded.timestamp-millis";
pub(crate) const BOUNDED_OFFSETS: &str = "scan.bounded.specific-offsets";
pub(crate) const DISCOVERY: &str = "scan.topic-partition-discovery.interval";
pub(crate) const DELIVERY: &str = "sink.delivery-guarantee";
pub(crate) const TXN_PREFIX: &str = "sink.transactional-id-prefix";
pub(crate) const PARTITIONER: &str = "sink.partitioner";
pub(crate) const RETRY_ATTEMPTS: &str = "sink.retry.max-attempts";
pub(crate) const RETRY_INITIAL: &str = "sink.retry.initial-backoff";
pub(crate) const RETRY_MAX: &str = "sink.retry.max-backoff";

/// `connector = 'kafka'`, and `'upsert-kafka'`: a (compacted) topic as a
/// table keyed by its `PRIMARY KEY (...) NOT ENFORCED`, as Flink's. An
/// upsert source reads the topic from the earliest offset as a changelog
/// of upserts (a tombstone deletes its key), which the planner normalizes
/// by keeping each key's last row; an upsert sink writes a changelog as
/// upserts, `-D` as a tombstone.
#[derive(Debug)]
pub struct KafkaConnector {
    upsert: bool,
}

impl KafkaConnector {
    pub const KAFKA: Self = Self { upsert: false };
    pub const UPSERT_KAFKA: Self = Self { upsert: true };

    fn kafka_options() -> Vec<OptionDecl> {
        vec![
            OptionDecl::unset(
                TOPIC,
                OptionType::String,
                "the topic; a source also takes a ;-separated list",
            ),
            OptionDecl::unset(
                TOPIC_PATTERN,
                OptionType::String,
                "a regular expression: the source reads every topic whose whole name matches",
            )
            .source_only(),
            OptionDecl::required(
                BOOTSTRAP,
                OptionType::String,
                "the brokers to connect to first (host:port, comma-separated)",
            ),
            OptionDecl::unset(
                "properties.*",
                OptionType::String,
                "any other librdkafka client property, without the prefix (properties.group.id, properties.isolation.level, ...)",
            ),
            OptionDecl::unset(
                key::KEY_FIELDS,
                OptionType::String,
                "the columns that form each record's key, ;-separated (needs key.format)",
            ),
            OptionDecl::unset(
                key::KEY_FORMAT,
                OptionType::Format,
                "the format of the key columns",
            ),
            OptionDecl::optional(
                key::VALUE_FIELDS_INCLUDE,
                OptionType::OneOf(&["ALL", "EXCEPT_KEY"]),
                "ALL",
                "ALL: the value holds every column; EXCEPT_KEY: all but the key's (read from the key)",
            ),
            OptionDecl::optional(
                STARTUP_MODE,
                OptionType::OneOf(&[
                    "earliest-offset",
                    "latest-offset",
                    "group-offsets",
                    "timestamp",
                    "specific-offsets",
                ]),
                "group-offsets",
                "where a fresh start reads from (a restore reads from the checkpoint)",
            )
            .source_only(),
            OptionDecl::unset(
                STARTUP_TIMESTAMP,
                OptionType::Count,
                "with scan.startup.mode = 'timestamp': the first record at or after this epoch millisecond",
            )
            .source_only(),
            OptionDecl::unset(
                STARTUP_OFFSETS,
                OptionType::String,
                "with scan.startup.mode = 'specific-offsets': 'partition:0,offset:42;partition:1,offset:300'",
            )
            .source_only(),
            OptionDecl::optional(
                BOUNDED_MODE,
                OptionType::OneOf(&["unbounded", "latest-offset", "timestamp", "specific-offsets"]),
                "unbounded",
                "where the source ends: the job finishes once every partition reaches its end",
            )
            .source_only(),
            OptionDecl::unset(
                BOUNDED_TIMESTAMP,
                OptionType::Count,
                "with scan.bounded.mode = 'timestamp': stop before the first record after this epoch millisecond",
            )
            .source_only(),
            OptionDecl::unset(
                BOUNDED_OFFSETS,
                OptionType::String,
                "with scan.bounded.mode = 'specific-offsets': 'partition:0,offset:42;...' (exclusive ends)",
            )
            .source_only(),
            OptionDecl::optional(
                DISCOVERY,
                OptionType::Duration,
                "5 min",
                "look for new partitions (and topics of a pattern) this often; 0 turns it off; off when bounded",
            )
            .source_only(),
            OptionDecl::optional(
                DELIVERY,
                OptionType::OneOf(&["at-least-once", "exactly-once", "none"]),
                "at-least-once",
                "at-least-once: an idempotent producer flushed at each checkpoint; exactly-once: a transaction per checkpoint",
            )
            .sink_only(),
            OptionDecl::unset(
                TXN_PREFIX,
                OptionType::String,
                "exactly-once: the prefix of the transactional ids (unique per sink across jobs on one cluster)",
            )
            .sink_only(),
            OptionDecl::unset(
                RETRY_ATTEMPTS,
                OptionType::Count,
                "sends of a record before the job fails with its last error (librdkafka's retries + 1; at least 2 for an idempotent producer)",
            )
            .sink_only(),
            OptionDecl::unset(
                RETRY_INITIAL,
                OptionType::Duration,
                "the first wait before a retry, doubled each time with jitter (librdkafka's retry.backoff.ms, 100 ms)",
            )
            .sink_only(),
            OptionDecl::unset(
                RETRY_MAX,
                OptionType::Duration,
                "the longest wait between retries (librdkafka's retry.backoff.max.ms, 1 s)",
            )
            .sink_only(),
            OptionDecl::optional(
                PARTITIONER,
                OptionType::OneOf(&["default", "fixed", "round-robin"]),
                "default",
                "default: by the key's hash (murmur2, as Java clients), else spread; fixed: subtask i to partition i % n; round-robin",
            )
            .sink_only(),
        ]
    }

    /// `kafka`'s options but those [`NOT_UPSERT`], `key.format` required.
    fn upsert_options() -> Vec<OptionDecl> {
        Self::kafka_options()
            .into_iter()
            .filter(|o| !NOT_UPSERT.contains(&o.name))
            .map(|o| match o.name {
                key::KEY_FORMAT => OptionDecl::required(
                    key::KEY_FORMAT,
                    OptionType::Format,
                    "the format of the key: the PRIMARY KEY's columns",
                ),
                _ => o,
            })
            .collect()
    }
}

impl Connector for KafkaConnector {
    fn name(&self) -> &'static str {
        match self.upsert {
            false => "kafka",
            true => "upsert-kafka",
        }
    }

    fn help(&self) -> &'static str {
        match self.upsert {
            false => {
                "Apache Kafka topics: a source (partitions as splits, offsets in checkpoints) and an at-least-once or exactly-once sink"
            }
            true => {
                "a compacted Kafka topic as a table keyed by its PRIMARY KEY: a changelog source (a tombstone deletes) and an upsert sink"
            }
        }
    }

    fn options(&self) -> Vec<OptionDecl> {
        match self.upsert {
            false => Self::kafka_options(),
            true => Self::upsert_options(),
        }
    }

    fn format(&self) -> FormatSupport {
        FormatSupport::Required
    }

    fn format_aliases(&self) -> &'static [&'static str] {
        &[crate::registry::LEGACY_FORMAT, "value.format"]
    }

    fn is_source(&self) -> bool {
        true
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn source(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SourceProvider>> {
        Ok(Arc::new(KafkaSource::try_new(ctx, self.upsert)?))
    }

    fn sink(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SinkProvider>> {
        Ok(Arc::new(KafkaSinkProvider::try_new(ctx, self.upsert)?))
    }

    fn metadata_keys(&self) -> &'static [crate::registry::MetadataKey] {
        decode::METADATA
    }

    fn changelog(&self, _options: &Options) -> SourceChangelog {
        match self.upsert {
            false => SourceChangelog::AppendOnly,
            true => SourceChangelog::Upsert,
        }
    }

    fn guarantee(&self, options: &Options) -> DeliveryGuarantee {
        match options.get(DELIVERY) {
            Some("exactly-once") => DeliveryGuarantee::ExactlyOnce,
            Some("none") => DeliveryGuarantee::None,
            _ => DeliveryGuarantee::AtLeastOnce,
        }
    }
}

/// Options of `kafka` that `upsert-kafka` does not take: the key is the
/// primary key, reading starts at the earliest offset, and records go to
/// their key's partition.
const NOT_UPSERT: &[&str] = &[
    TOPIC_PATTERN,
    key::KEY_FIELDS,
    STARTUP_MODE,
    STARTUP_TIMESTAMP,
    STARTUP_OFFSETS,
    PARTITIONER,
];

/// The client configuration of `properties.*`, with Eddy's settings over
/// them where Eddy owns the behaviour (offsets are never auto-committed).
pub(crate) fn client_config(options: &Options) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in options.iter() {
        if let Some(property) = key.strip_prefix(PROPERTIES) {
            config.set(property, value);
        }
    }
    config.set("log_level", "4");
    config
}

pub(crate) use crate::option_error;

/// A client error, in words that name the Kafka source or sink.
pub(crate) fn kafka_error(
    what: &str,
    e: rdkafka::error::KafkaError,
) -> eddy_operators::OperatorError {
    eddy_operators::OperatorError::Connector(format!("kafka: {what}: {e}"))
}

#[cfg(test)]
mod tests;
