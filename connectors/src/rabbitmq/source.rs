//! A RabbitMQ queue as a source.
//!
//! ```text
//!  reader's runtime:  basic.qos(prefetch) ─► basic.consume(queue) ─► deliveries ─► bounded channel
//!  poll():            what the channel holds, decoded by the format ─► rows (and bad records)
//!  barrier:           position = the last delivery tag handed over
//!  checkpoint complete ─► basic.ack(that tag, multiple)
//!  crash ─► the connection drops ─► the broker delivers every unacknowledged message again
//! ```

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use datafusion::arrow::datatypes::SchemaRef;
use eddy_operators::SourceProvider;
use eddy_operators::operator::OperatorContext;
use eddy_operators::source::{Poll, SourceReader, Split, SplitEnumerator};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use super::{BOUNDED_MODE, PREFETCH, QUEUE, open, rabbit_error, runtime};
use crate::Result;
use crate::bad_data::{BadData, BadDataPolicy, MessageAt, decode_messages};
use crate::format::{Decoder, Format, Records};
use crate::options::Options;
use crate::registry::ConnectorContext;

type OpResult<T> = eddy_operators::Result<T>;

/// Messages handed over per poll at most.
const BATCH: usize = 1_000;

/// A delivery: its tag and payload, or why the consumer stopped.
type Delivered = std::result::Result<(u64, Vec<u8>), String>;

/// `connector = 'rabbitmq'` as a source.
#[derive(Debug, Clone)]
pub struct RabbitSource {
    url: String,
    queue: String,
    prefetch: u16,
    bounded: bool,
    table: String,
    format: Arc<dyn Format>,
    options: Options,
    schema: SchemaRef,
}

impl RabbitSource {
    pub(crate) fn try_new(ctx: &ConnectorContext<'_>) -> Result<Self> {
        let options = ctx.options;
        let queue = options.require_text(QUEUE, "a RabbitMQ source")?;
        let source = Self {
            url: super::url(options)?,
            queue,
            prefetch: options
                .count(PREFETCH)?
                .unwrap_or(1_000)
                .clamp(1, u16::MAX as u64) as u16,
            bounded: options.get(BOUNDED_MODE) == Some("latest"),
            table: ctx.name.to_string(),
            format: ctx.formats.chosen(options)?.clone(),
            options: options.clone(),
            schema: ctx.schema.clone(),
        };
        source.decoder()?;
        Ok(source)
    }

    fn decoder(&self) -> Result<Box<dyn Decoder>> {
        crate::format::decoder_of(self.format.as_ref(), &self.schema, &self.options)
    }
}

impl SourceProvider for RabbitSource {
    fn enumerator(&self) -> OpResult<Box<dyn SplitEnumerator>> {
        Ok(Box::new(OneQueue(self.queue.clone())))
    }

    fn reader(&self) -> OpResult<Box<dyn SourceReader>> {
        let decoder = self.decoder()?;
        let policy = BadDataPolicy::of(&self.options, decoder.ignore_parse_errors());
        Ok(Box::new(RabbitReader {
            source: self.clone(),
            consumer: None,
            decoder,
            bad: BadData::new(policy, &self.table),
            split: None,
            stash: Vec::new(),
            handed: 0,
            acked: 0,
            remaining: None,
            checkpointing: false,
            read: 0,
        }))
    }

    fn max_parallelism(&self) -> Option<usize> {
        Some(1)
    }
}

struct OneQueue(String);

impl SplitEnumerator for OneQueue {
    fn list(&mut self) -> OpResult<Vec<Split>> {
        Ok(vec![Split {
            id: format!("rabbitmq {}", self.0),
            position: Vec::new(),
            size: None,
        }])
    }
}

/// A consumer running on its own runtime.
struct Consumer {
    runtime: tokio::runtime::Runtime,
    channel: lapin::Channel,
    deliveries: Receiver<Delivered>,
}

impl Consumer {
    /// Connects, sets the prefetch, and starts consuming; with `bounded`,
    /// also counts the queue's messages.
    fn start(source: &RabbitSource) -> OpResult<(Self, Option<u64>)> {
        let runtime = runtime()?;
        let (tx, deliveries) =
            crossbeam_channel::bounded::<Delivered>(source.prefetch as usize + 16);
        let queue = source.queue.clone();
        let (channel, count) = runtime
            .block_on(async {
                let (connection, channel) = open(&source.url).await?;
                channel
                    .basic_qos(source.prefetch, BasicQosOptions::default())
                    .await
                    .map_err(|e| format!("basic.qos: {e}"))?;
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let declared = channel
                    .queue_declare(&queue, passive, FieldTable::default())
                    .await
                    .map_err(|e| format!("there is no queue '{queue}': {e}"))?;
                let mut consumer = channel
                    .basic_consume(
                        &queue,
                        &format!("eddy-{}", source.table),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| format!("basic.consume: {e}"))?;
                tokio::spawn(async move {
                    // Held while consuming: dropping it closes the
                    // connection.
                    let _connection = connection;
                    while let Some(delivery) = consumer.next().await {
                        let item = delivery
                            .map(|d| (d.delivery_tag, d.data))
                            .map_err(|e| format!("the consumer stopped: {e}"));
                        let failed = item.is_err();
                        if tx.send(item).is_err() || failed {
                            break;
                        }
                    }
                });
                Ok::<_, String>((channel, declared.message_count() as u64))
            })
            .map_err(|e| rabbit_error(&format!("queue '{}'", source.queue), e))?;
        let consumer = Self {
            runtime,
            channel,
            deliveries,
        };
        Ok((consumer, source.bounded.then_some(count)))
    }
}

struct RabbitReader {
    source: RabbitSource,
    consumer: Option<Consumer>,
    decoder: Box<dyn Decoder>,
    bad: BadData,
    split: Option<usize>,
    /// Deliveries received while waiting.
    stash: Vec<(u64, Vec<u8>)>,
    /// The last delivery tag handed over.
    handed: u64,
    /// The last delivery tag acknowledged.
    acked: u64,
    /// Bounded: messages still to hand over.
    remaining: Option<u64>,
    checkpointing: bool,
    read: u64,
}

impl RabbitReader {
    fn ack(&mut self, tag: u64) -> OpResult<()> {
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        if tag <= self.acked {
            return Ok(());
        }
        let multiple = BasicAckOptions { multiple: true };
        consumer
            .runtime
            .block_on(consumer.channel.basic_ack(tag, multiple))
            .map_err(|e| rabbit_error("basic.ack", e))?;
        self.acked = tag;
        Ok(())
    }

    /// Up to `limit` deliveries now, without waiting.
    fn take(&mut self, limit: usize) -> OpResult<Vec<(u64, Vec<u8>)>> {
        let mut out: Vec<(u64, Vec<u8>)> =
            self.stash.drain(..self.stash.len().min(limit)).collect();
        let Some(consumer) = &self.consumer else {
            return Ok(out);
        };
        while out.len() < limit {
            match consumer.deliveries.try_recv() {
                Ok(Ok(d)) => out.push(d),
                Ok(Err(e)) => return Err(rabbit_error(&self.source.queue, e)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    return Err(rabbit_error(&self.source.queue, "the connection closed"));
                }
            }
        }
        Ok(out)
    }

    fn hand_over(&mut self, split: usize, messages: Vec<(u64, Vec<u8>)>) -> OpResult<Option<Poll>> {
        let Some(&(last, _)) = messages.last() else {
            return Ok(None);
        };
        let mut records = Records::default();
        for (_, payload) in &messages {
            records.push(payload);
        }
        let queue = &self.source.queue;
        let polled = decode_messages(self.decoder.as_mut(), &self.bad, split, &records, |i| {
            let tag = messages.get(i).map_or(0, |m| m.0);
            MessageAt {
                partition: queue.clone(),
                offset: Some(tag as i64),
                timestamp: None,
                described: format!("rabbitmq queue '{queue}' delivery {tag}"),
            }
        })?;
        self.handed = last;
        self.read += messages.len() as u64;
        if let Some(left) = &mut self.remaining {
            *left = left.saturating_sub(messages.len() as u64);
        }
        Ok(polled)
    }
}

impl SourceReader for RabbitReader {
    fn name(&self) -> String {
        format!("rabbitmq queue {}", self.source.queue)
    }

    fn open(&mut self, ctx: &OperatorContext) -> OpResult<()> {
        self.checkpointing = ctx.checkpoints.enabled();
        Ok(())
    }

    fn add_split(&mut self, split: usize, _assigned: Split) -> OpResult<()> {
        // A queue has no position to go back to: what a crash left
        // unacknowledged, the broker delivers again.
        let (consumer, remaining) = Consumer::start(&self.source)?;
        self.consumer = Some(consumer);
        self.remaining = remaining;
        self.split = Some(split);
        Ok(())
    }

    fn poll(&mut self) -> OpResult<Poll> {
        let Some(split) = self.split else {
            return Ok(Poll::Pending);
        };
        if self.remaining == Some(0) {
            // Read what the queue held: finished once a checkpoint has
            // covered (and acknowledged) it.
            if self.checkpointing && self.acked < self.handed {
                return Ok(Poll::Pending);
            }
            self.ack(self.handed)?;
            self.split = None;
            return Ok(Poll::Finished(split));
        }
        let limit = self.remaining.map_or(BATCH, |r| BATCH.min(r as usize));
        let messages = self.take(limit)?;
        Ok(self.hand_over(split, messages)?.unwrap_or(Poll::Pending))
    }

    fn wait(&mut self, timeout: Duration) {
        let Some(consumer) = &self.consumer else {
            std::thread::sleep(timeout);
            return;
        };
        if !self.stash.is_empty() || self.remaining == Some(0) {
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return;
        }
        match consumer.deliveries.recv_timeout(timeout) {
            Ok(Ok(d)) => self.stash.push(d),
            // The next poll meets the error again and says it.
            Ok(Err(e)) => tracing::debug!("rabbitmq: {e}"),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        self.split
            .map(|s| (s, self.handed.to_le_bytes().to_vec()))
            .into_iter()
            .collect()
    }

    fn checkpoint_complete(&mut self, checkpoint: u64, positions: &[(usize, Vec<u8>)]) {
        let Some(tag) = positions
            .iter()
            .find_map(|(_, p)| p.as_slice().try_into().ok().map(u64::from_le_bytes))
        else {
            return;
        };
        if let Err(e) = self.ack(tag) {
            // Left unacknowledged: delivered again after a restart.
            tracing::warn!("after checkpoint {checkpoint}: {e}");
        }
    }

    fn progress(&self) -> u64 {
        self.read
    }
}
