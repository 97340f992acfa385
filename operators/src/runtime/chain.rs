//! A subtask's fused chain of operators and the edges its output leaves
//! by: what the task loops ([`super::task`], [`super::source`]) drive.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use datafusion::arrow::record_batch::RecordBatch;

use super::Partitioning;
use crate::message::Message;
use crate::metrics::OperatorCounters;
use crate::operator::{Collector, Emit, Operator};
use crate::partition::hash_partition;
use crate::{OperatorError, Result};

/// One edge leaving a subtask.
#[derive(Debug)]
pub struct OutEdge {
    /// The output it carries: 0 = main, others = side outputs.
    pub(super) port: usize,
    pub(super) partitioning: Partitioning,
    pub(super) senders: Vec<Sender<Message>>,
    /// Where time blocked on a full channel is counted (backpressure).
    pub(super) blocked: Option<Arc<OperatorCounters>>,
}

impl OutEdge {
    fn send_data(&self, batch: &RecordBatch) -> Result<()> {
        match &self.partitioning {
            // Cloning a batch clones reference-counted buffers, not data.
            Partitioning::Forward | Partitioning::Gather => {
                self.send(&self.senders[0], Message::Data(batch.clone()))
            }
            Partitioning::Hash(keys) => {
                for (target, part) in hash_partition(batch, keys, self.senders.len())? {
                    self.send(&self.senders[target], Message::Data(part))?;
                }
                Ok(())
            }
        }
    }

    fn broadcast(&self, msg: Message) -> Result<()> {
        for s in &self.senders {
            self.send(s, msg.clone())?;
        }
        Ok(())
    }

    /// Sends, counting the wait when the channel is full.
    fn send(&self, sender: &Sender<Message>, msg: Message) -> Result<()> {
        let msg = match sender.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(OperatorError::Disconnected),
            Err(TrySendError::Full(msg)) => msg,
        };
        let waiting = Instant::now();
        let sent = sender.send(msg).map_err(|_| OperatorError::Disconnected);
        if let Some(counters) = &self.blocked {
            counters.blocked(waiting.elapsed());
        }
        sent
    }
}

/// A fused chain of operators and the edges its output leaves by.
pub struct Chain {
    pub(super) ops: Vec<Box<dyn Operator>>,
    /// Each operator's counters (rows and batches in and out, watermark).
    pub(super) stats: Vec<Arc<OperatorCounters>>,
    pub(super) outputs: Vec<OutEdge>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.ops.iter().map(|o| o.name()).collect();
        f.debug_struct("Chain")
            .field("ops", &names)
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// Feeds `item` to operator `level`, and what it emits to the next.
    pub(super) fn push(&mut self, level: usize, item: Emit) -> Result<()> {
        let ops = self.ops.get_mut(level..).unwrap_or_default();
        let stats = self.stats.get(level..).unwrap_or_default();
        push_into(ops, stats, &self.outputs, item)
    }

    /// Feeds a batch of input `input` (a join's side) to the first operator.
    pub(super) fn push_input(&mut self, input: usize, batch: RecordBatch) -> Result<()> {
        let Some((op, rest)) = self.ops.split_first_mut() else {
            return emit_to(&self.outputs, Emit::Data(batch));
        };
        let (stat, rest_stats) = split_stats(&self.stats);
        if let Some(s) = stat {
            s.batch_in(batch.num_rows());
        }
        let outputs = &self.outputs;
        let mut forward = |item: Emit| {
            count_out(stat, &item);
            push_into(rest, rest_stats, outputs, item)
        };
        let mut out = Collector::streaming(&mut forward);
        op.process_input_batch(input, batch, &mut out)
            .and_then(|()| out.flush())
            .map_err(|e| with_operator(op.as_ref(), e))
    }

    /// Calls `hook` on the first operator, if there is one, and feeds what
    /// it emits to the rest.
    fn at_first(
        &mut self,
        hook: impl FnOnce(&mut dyn Operator, &mut Collector) -> Result<()>,
    ) -> Result<()> {
        let Some(op) = self.ops.first_mut() else {
            return Ok(());
        };
        let mut out = Collector::default();
        hook(op.as_mut(), &mut out).map_err(|e| with_operator(op.as_ref(), e))?;
        self.pass_on(0, out)
    }

    /// Feeds a source's batch, read from `partition`, to the first operator.
    pub(super) fn push_source(&mut self, partition: usize, batch: RecordBatch) -> Result<()> {
        if self.ops.is_empty() {
            return emit_to(&self.outputs, Emit::Data(batch));
        }
        if let Some(s) = self.stats.first() {
            s.batch_in(batch.num_rows());
        }
        self.at_first(|op, out| op.process_partition_batch(partition, batch, out))
    }

    /// Tells the first operator that the source was given `partition`.
    pub(super) fn start_partition(&mut self, partition: usize, split: &str) -> Result<()> {
        self.at_first(|op, out| op.start_partition(partition, split, out))
    }

    /// Tells the first operator that the source's `partition` ended.
    pub(super) fn end_partition(&mut self, partition: usize) -> Result<()> {
        self.at_first(|op, out| op.end_partition(partition, out))
    }

    /// The earliest timer any operator asked for.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.ops.iter().filter_map(|op| op.next_timer()).min()
    }

    /// Calls `on_timer` on every operator whose timer is due now, first to
    /// last, passing what each emits down the chain.
    pub(super) fn fire_timers(&mut self) -> Result<()> {
        let now = Instant::now();
        for level in 0..self.ops.len() {
            let op = &mut self.ops[level];
            if op.next_timer().is_none_or(|t| t > now) {
                continue;
            }
            let mut out = Collector::default();
            op.on_timer(now, &mut out)
                .map_err(|e| with_operator(op.as_ref(), e))?;
            self.pass_on(level, out)?;
        }
        Ok(())
    }

    /// Hands what operator `level` emitted to the rest of the chain.
    fn pass_on(&mut self, level: usize, mut out: Collector) -> Result<()> {
        for item in out.take() {
            count_out(self.stats.get(level), &item);
            self.push(level + 1, item)?;
        }
        Ok(())
    }

    pub(super) fn broadcast(&self, msg: Message) -> Result<()> {
        broadcast_to(&self.outputs, msg)
    }

    pub(super) fn checkpoint(&mut self, id: u64) -> Result<()> {
        for level in 0..self.ops.len() {
            let mut out = Collector::default();
            let op = &mut self.ops[level];
            op.handle_checkpoint(id, &mut out)
                .map_err(|e| with_operator(op.as_ref(), e))?;
            self.pass_on(level, out)?;
        }
        self.broadcast(Message::Barrier(id))
    }

    pub(super) fn close(&mut self) -> Result<()> {
        for level in 0..self.ops.len() {
            let mut out = Collector::default();
            let op = &mut self.ops[level];
            op.on_close(&mut out)
                .map_err(|e| with_operator(op.as_ref(), e))?;
            self.pass_on(level, out)?;
        }
        self.broadcast(Message::EndOfStream)
    }
}

/// Feeds `item` to the first of `ops` and what that emits to the rest of
/// them (whenever it flushes, and when its hook returns); past the last
/// operator, to `outputs`. `stats` are the operators' counters.
fn push_into(
    ops: &mut [Box<dyn Operator>],
    stats: &[Arc<OperatorCounters>],
    outputs: &[OutEdge],
    item: Emit,
) -> Result<()> {
    let Some((op, rest)) = ops.split_first_mut() else {
        return emit_to(outputs, item);
    };
    // Side rows and idleness leave the chain at once.
    if let Emit::Side(..) | Emit::Idle = item {
        return emit_to(outputs, item);
    }
    let (stat, rest_stats) = split_stats(stats);
    if let Some(s) = stat {
        match &item {
            Emit::Data(batch) => s.batch_in(batch.num_rows()),
            Emit::Watermark(wm) => s.watermark(*wm),
            Emit::Side(..) | Emit::Idle => {}
        }
    }
    let mut forward = |item: Emit| {
        count_out(stat, &item);
        push_into(rest, rest_stats, outputs, item)
    };
    let mut out = Collector::streaming(&mut forward);
    match item {
        Emit::Data(batch) => op.process_batch(batch, &mut out),
        Emit::Watermark(wm) => op.handle_watermark(wm, &mut out),
        Emit::Side(..) | Emit::Idle => Ok(()),
    }
    .and_then(|()| out.flush())
    .map_err(|e| with_operator(op.as_ref(), e))
}

fn split_stats(
    stats: &[Arc<OperatorCounters>],
) -> (Option<&Arc<OperatorCounters>>, &[Arc<OperatorCounters>]) {
    match stats.split_first() {
        Some((first, rest)) => (Some(first), rest),
        None => (None, &[]),
    }
}

/// Counts a batch an operator emitted.
fn count_out(stat: Option<&Arc<OperatorCounters>>, item: &Emit) {
    if let (Some(s), Emit::Data(batch) | Emit::Side(_, batch)) = (stat, item) {
        s.batch_out(batch.num_rows());
    }
}

fn emit_to(outputs: &[OutEdge], item: Emit) -> Result<()> {
    match item {
        Emit::Data(batch) => {
            for edge in outputs.iter().filter(|e| e.port == 0) {
                edge.send_data(&batch)?;
            }
            Ok(())
        }
        Emit::Side(port, batch) => {
            for edge in outputs.iter().filter(|e| e.port == port) {
                edge.send_data(&batch)?;
            }
            Ok(())
        }
        Emit::Watermark(wm) => broadcast_to(outputs, Message::Watermark(wm)),
        Emit::Idle => broadcast_to(outputs, Message::Idle),
    }
}

fn broadcast_to(outputs: &[OutEdge], msg: Message) -> Result<()> {
    for edge in outputs {
        edge.broadcast(msg.clone())?;
    }
    Ok(())
}

fn with_operator(op: &dyn Operator, e: OperatorError) -> OperatorError {
    match e {
        // Connector errors already name their file and position; an error
        // of an operator further down the chain (passed up by a flush)
        // names that one.
        OperatorError::Connector(_)
        | OperatorError::Disconnected
        | OperatorError::Cancelled
        | OperatorError::OutputClosed
        | OperatorError::InTask { .. } => e,
        other => OperatorError::InTask {
            task: op.name(),
            source: Box::new(other),
        },
    }
}
