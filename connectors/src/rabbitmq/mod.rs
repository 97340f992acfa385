//! `connector = 'rabbitmq'`: a queue as a source and an exchange as a
//! sink, over lapin (AMQP 0-9-1) on a one-worker tokio runtime per reader
//! or writer, which drives the connection between the engine's calls.
//!
//! - [`source`]: messages are consumed with `'prefetch'` unacknowledged at
//!   most (the backpressure), and acknowledged once a checkpoint that
//!   covers them completes (`basic.ack` with `multiple`). After a crash
//!   the broker delivers the unacknowledged ones again: at-least-once. A
//!   queue is not replayable: what was acknowledged is gone.
//! - [`sink`]: each row published to `'exchange'` with `'routing-key'`
//!   (or a column's value, `'routing-key.field'`), with publisher
//!   confirms awaited at every barrier: at-least-once.

mod sink;
mod source;

use std::sync::Arc;

use eddy_operators::{DeliveryGuarantee, OperatorError, SinkProvider, SourceProvider};

pub use self::sink::RabbitSinkProvider;
pub use self::source::RabbitSource;
use crate::options::{OptionDecl, OptionType, Options};
use crate::registry::{Connector, ConnectorContext, FormatSupport};
use crate::{Result, option_error};

pub(crate) const URL: &str = "url";
pub(crate) const QUEUE: &str = "queue";
pub(crate) const EXCHANGE: &str = "exchange";
pub(crate) const ROUTING_KEY: &str = "routing-key";
pub(crate) const ROUTING_KEY_FIELD: &str = "routing-key.field";
pub(crate) const PREFETCH: &str = "prefetch";
pub(crate) const BOUNDED_MODE: &str = "scan.bounded.mode";

/// `connector = 'rabbitmq'`.
#[derive(Debug)]
pub struct RabbitConnector;

impl Connector for RabbitConnector {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn help(&self) -> &'static str {
        "RabbitMQ: a queue as a source (acknowledged after each checkpoint: at-least-once, not replayable) and an exchange as a sink (publisher confirms at each checkpoint: at-least-once)"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::required(
                URL,
                OptionType::String,
                "amqp://user:password@host:port/vhost (%2f for the default vhost /)",
            ),
            OptionDecl::unset(QUEUE, OptionType::String, "the queue the source consumes")
                .source_only(),
            OptionDecl::optional(
                PREFETCH,
                OptionType::Count,
                "1000",
                "messages delivered and not yet acknowledged at most (they wait for a checkpoint)",
            )
            .source_only(),
            OptionDecl::optional(
                BOUNDED_MODE,
                OptionType::OneOf(&["unbounded", "latest"]),
                "unbounded",
                "latest: stop after as many messages as the queue held when the job started",
            )
            .source_only(),
            OptionDecl::optional(
                EXCHANGE,
                OptionType::String,
                "",
                "the exchange the sink publishes to ('' is the default exchange, which routes by queue name)",
            )
            .sink_only(),
            OptionDecl::unset(
                ROUTING_KEY,
                OptionType::String,
                "every message's routing key",
            )
            .sink_only(),
            OptionDecl::unset(
                ROUTING_KEY_FIELD,
                OptionType::String,
                "the column whose value is a message's routing key",
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
        Ok(Arc::new(RabbitSource::try_new(ctx)?))
    }

    fn sink(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SinkProvider>> {
        Ok(Arc::new(RabbitSinkProvider::try_new(ctx)?))
    }

    fn guarantee(&self, _options: &Options) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

/// The `url` option, checked for its scheme.
pub(crate) fn url(options: &Options) -> Result<String> {
    let url = options.require(URL)?.trim().to_string();
    if url.starts_with("amqps://") {
        return Err(option_error(
            URL,
            "this build has no TLS: connect with amqp:// (a TLS proxy in front of the broker)",
        ));
    }
    if !url.starts_with("amqp://") {
        return Err(option_error(
            URL,
            format!("'{url}' is not an AMQP URL (write amqp://user:password@host:5672/%2f)"),
        ));
    }
    Ok(url)
}

/// A runtime whose one worker drives a connection while the engine's
/// thread is elsewhere.
pub(crate) fn runtime() -> eddy_operators::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| OperatorError::Connector(format!("rabbitmq: a runtime: {e}")))
}

/// Opens a connection and a channel on `runtime`'s reactor.
pub(crate) async fn open(
    url: &str,
) -> std::result::Result<(lapin::Connection, lapin::Channel), String> {
    let properties = lapin::ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    let connection = lapin::Connection::connect(url, properties)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    Ok((connection, channel))
}

/// A client error, in words that name the connector.
pub(crate) fn rabbit_error(what: &str, e: impl std::fmt::Display) -> OperatorError {
    OperatorError::Connector(format!("rabbitmq: {what}: {e}"))
}
