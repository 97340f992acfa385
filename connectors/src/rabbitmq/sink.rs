//! Rows published to a RabbitMQ exchange, one message each (persistent),
//! with publisher confirms: a barrier waits until the broker has confirmed
//! every message before it. At-least-once: a restore publishes the rows
//! since the last checkpoint again.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_operators::operator::OperatorContext;
use eddy_operators::sink::{Sink, SinkCommit};
use eddy_operators::updating::OP_COLUMN;
use eddy_operators::{DeliveryGuarantee, OperatorError, SinkProvider};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::PublisherConfirm;
use lapin::{BasicProperties, Channel};

use super::{EXCHANGE, ROUTING_KEY, ROUTING_KEY_FIELD, open, rabbit_error, runtime};
use crate::format::{Encoder, Format};
use crate::options::Options;
use crate::registry::ConnectorContext;
use crate::{ConnectorError, Result, option_error};

type OpResult<T> = eddy_operators::Result<T>;

/// `connector = 'rabbitmq'` as a sink.
#[derive(Debug)]
pub struct RabbitSinkProvider {
    url: String,
    exchange: String,
    routing: Routing,
    format: std::sync::Arc<dyn Format>,
    options: Options,
    schema: datafusion::arrow::datatypes::SchemaRef,
}

#[derive(Debug, Clone)]
enum Routing {
    Fixed(String),
    /// The value of this column.
    Column(usize),
}

impl RabbitSinkProvider {
    pub(crate) fn try_new(ctx: &ConnectorContext<'_>) -> Result<Self> {
        let options = ctx.options;
        let format = ctx.formats.chosen(options)?.clone();
        if !format.changelog() && ctx.schema.column_with_name(OP_COLUMN).is_some() {
            return Err(ConnectorError::Config(
                "a RabbitMQ exchange takes appended rows, and this query updates rows it wrote: use 'format' = 'debezium-json'".into(),
            ));
        }
        format.encoder(ctx.schema, options)?.ok_or_else(|| {
            ConnectorError::Config(format!("the format '{}' cannot be written", format.name()))
        })?;
        let routing = match (options.get(ROUTING_KEY), options.get(ROUTING_KEY_FIELD)) {
            (Some(_), Some(_)) => {
                return Err(option_error(
                    ROUTING_KEY_FIELD,
                    "give 'routing-key' or 'routing-key.field', not both",
                ));
            }
            (_, Some(field)) => {
                Routing::Column(ctx.schema.index_of(field.trim()).map_err(|_| {
                    option_error(ROUTING_KEY_FIELD, format!("'{field}' is not a column"))
                })?)
            }
            (key, None) => Routing::Fixed(key.unwrap_or_default().to_string()),
        };
        Ok(Self {
            url: super::url(options)?,
            exchange: options.get(EXCHANGE).unwrap_or_default().to_string(),
            routing,
            format,
            options: options.clone(),
            schema: ctx.schema.clone(),
        })
    }
}

impl SinkProvider for RabbitSinkProvider {
    fn writer(&self) -> OpResult<Box<dyn Sink>> {
        let encoder = self
            .format
            .encoder(&self.schema, &self.options)?
            .ok_or_else(|| {
                OperatorError::Connector("rabbitmq: the format cannot be written".into())
            })?;
        Ok(Box::new(RabbitWriter {
            url: self.url.clone(),
            exchange: self.exchange.clone(),
            routing: self.routing.clone(),
            encoder,
            publisher: None,
            unconfirmed: Vec::new(),
        }))
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

/// A channel in confirm mode, on its runtime.
struct Publisher {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    _connection: lapin::Connection,
}

struct RabbitWriter {
    url: String,
    exchange: String,
    routing: Routing,
    encoder: Box<dyn Encoder>,
    publisher: Option<Publisher>,
    /// Confirms not yet awaited.
    unconfirmed: Vec<PublisherConfirm>,
}

impl RabbitWriter {
    fn publisher(&mut self) -> OpResult<&Publisher> {
        if self.publisher.is_none() {
            let runtime = runtime()?;
            let url = self.url.clone();
            let (connection, channel) = runtime
                .block_on(async {
                    let (connection, channel) = open(&url).await?;
                    channel
                        .confirm_select(ConfirmSelectOptions::default())
                        .await
                        .map_err(|e| format!("confirm.select: {e}"))?;
                    Ok::<_, String>((connection, channel))
                })
                .map_err(|e| rabbit_error("the sink", e))?;
            self.publisher = Some(Publisher {
                runtime,
                channel,
                _connection: connection,
            });
        }
        self.publisher
            .as_ref()
            .ok_or_else(|| OperatorError::Internal("rabbitmq: no publisher".into()))
    }

    /// Waits for the broker to confirm every message published so far.
    fn confirm(&mut self) -> OpResult<()> {
        let confirms = std::mem::take(&mut self.unconfirmed);
        if confirms.is_empty() {
            return Ok(());
        }
        let publisher = self.publisher()?;
        publisher.runtime.block_on(async {
            for confirm in confirms {
                let confirmation = confirm
                    .await
                    .map_err(|e| rabbit_error("a publisher confirm", e))?;
                if confirmation.is_nack() {
                    return Err(rabbit_error(
                        "the broker refused a message",
                        "basic.nack (the queue may be full or gone)",
                    ));
                }
            }
            Ok(())
        })
    }
}

impl Sink for RabbitWriter {
    fn name(&self) -> String {
        format!("rabbitmq exchange '{}'", self.exchange)
    }

    fn open(&mut self, _ctx: &OperatorContext) -> OpResult<()> {
        self.publisher().map(drop)
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> OpResult<()> {
        let records = self.encoder.records(batch)?;
        let keys: Vec<String> = match &self.routing {
            Routing::Fixed(key) => vec![key.clone(); records.len()],
            Routing::Column(c) => {
                let f =
                    ArrayFormatter::try_new(batch.column(*c).as_ref(), &FormatOptions::default())?;
                (0..batch.num_rows())
                    .map(|r| f.value(r).to_string())
                    .collect()
            }
        };
        let exchange = self.exchange.clone();
        let publisher = self.publisher()?;
        let properties = BasicProperties::default().with_delivery_mode(2);
        let confirms = publisher.runtime.block_on(async {
            let mut confirms = Vec::with_capacity(records.len());
            for (payload, key) in records.iter().zip(&keys) {
                let confirm = publisher
                    .channel
                    .basic_publish(
                        exchange.as_str(),
                        key.as_str(),
                        BasicPublishOptions::default(),
                        payload,
                        properties.clone(),
                    )
                    .await
                    .map_err(|e| rabbit_error("basic.publish", e))?;
                confirms.push(confirm);
            }
            Ok::<_, OperatorError>(confirms)
        })?;
        self.unconfirmed.extend(confirms);
        Ok(())
    }

    fn flush(&mut self) -> OpResult<()> {
        self.confirm()
    }

    fn pre_commit(&mut self, _checkpoint: u64, _last: bool) -> OpResult<SinkCommit> {
        self.confirm()?;
        Ok(SinkCommit::default())
    }
}
