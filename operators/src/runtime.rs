//! The runtime: stages of subtasks on threads, joined by bounded channels.
//!
//! A [`Dataflow`] is a list of [`Stage`]s. A stage runs `parallelism`
//! subtasks; each subtask is one thread that drives a fused chain of
//! operators (and, for a source stage, the source in front of them).
//! Stages are connected by [`Partitioning`] edges:
//!
//! ```text
//!  Forward:  up[i] ──► down[i]           (same parallelism)
//!  Hash:     up[i] ──► down[hash(keys)]  (every pair has a channel)
//!  Gather:   up[i] ──► down[0]           (downstream parallelism 1)
//! ```
//!
//! Each channel is a bounded `crossbeam-channel`, so a slow consumer blocks
//! its producers all the way back to the source: memory stays bounded.
//!
//! The task loop ([`run_task`]) owns the coordination, so operators only
//! compute:
//! - **watermarks**: it tracks the latest watermark of each input and hands
//!   the chain the minimum over inputs that have not ended, only when it
//!   advances;
//! - **barriers**: an input that delivered `Barrier(n)` is not read again
//!   until every live input has delivered it; then the chain snapshots and
//!   the barrier moves on (aligned checkpoints);
//! - **end of stream**: when every input ended, the chain is closed and
//!   `EndOfStream` is sent downstream;
//! - **errors**: every error is wrapped with the task's name.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender, bounded};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_state::StateBackend;

use crate::checkpoint::{CheckpointHandle, Checkpointing, Coordinator};
use crate::message::{MAX_WATERMARK, Message, Timestamp};
use crate::metrics::JobMetrics;
use crate::operator::{Collector, Emit, Operator, OperatorContext, Source};
use crate::partition::hash_partition;
use crate::{OperatorError, Result};

/// Messages buffered per channel before the producer blocks.
pub const CHANNEL_CAPACITY: usize = 8;

/// Builds the source of one subtask.
pub type SourceFactory = Box<dyn Fn(usize) -> Result<Box<dyn Source>> + Send + Sync>;
/// Builds the operator chain of one subtask, first operator first.
pub type ChainFactory = Box<dyn Fn(usize) -> Result<Vec<Box<dyn Operator>>> + Send + Sync>;

/// A subtask's input channels, each with the index of its input.
type TaskInputs = Vec<(usize, Receiver<Message>)>;

/// How rows move from an upstream stage to a downstream one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    Forward,
    /// By the hash of these columns of the upstream output.
    Hash(Vec<usize>),
    Gather,
}

/// One input of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageInput {
    /// The upstream stage (an index into [`Dataflow::stages`], smaller than
    /// the reading stage's own).
    pub stage: usize,
    /// How rows reach the reading stage.
    pub partitioning: Partitioning,
    /// Which output of the upstream stage is read: 0 for its main output,
    /// or a side output (e.g. [`crate::operator::LATE_PORT`]).
    pub port: usize,
}

impl StageInput {
    /// The main output of stage `stage`.
    pub fn new(stage: usize, partitioning: Partitioning) -> Self {
        Self {
            stage,
            partitioning,
            port: 0,
        }
    }
}

/// One stage of a dataflow.
pub struct Stage {
    pub name: String,
    pub parallelism: usize,
    pub source: Option<SourceFactory>,
    pub operators: ChainFactory,
    /// The stages it reads, in input order: a join's first input is its
    /// left side. Empty for a source stage.
    pub inputs: Vec<StageInput>,
    /// Operator ids of the chain, used to name state tables.
    pub operator_ids: Vec<String>,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("name", &self.name)
            .field("parallelism", &self.parallelism)
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

/// A runnable dataflow: stages in topological order.
#[derive(Debug)]
pub struct Dataflow {
    pub stages: Vec<Stage>,
}

/// A dataflow whose tasks are running.
#[derive(Debug)]
pub struct RunningDataflow {
    handles: Vec<(String, JoinHandle<Result<()>>)>,
    coordinator: Option<Coordinator>,
    pub metrics: JobMetrics,
}

impl Dataflow {
    /// Starts every task on its own thread, without checkpoints.
    pub fn start(
        self,
        state: Arc<dyn StateBackend>,
        metrics: JobMetrics,
    ) -> Result<RunningDataflow> {
        self.start_with(state, metrics, None)
    }

    /// Starts every task on its own thread; with `checkpointing`, a
    /// coordinator takes checkpoints of `state` (which must then be its
    /// RocksDB backend).
    pub fn start_with(
        self,
        state: Arc<dyn StateBackend>,
        metrics: JobMetrics,
        checkpointing: Option<Checkpointing>,
    ) -> Result<RunningDataflow> {
        let tasks = self.stages.iter().map(|s| s.parallelism).sum();
        let coordinator = checkpointing
            .map(|c| Coordinator::start(c, tasks, metrics.clone()))
            .transpose()?;
        let handle = coordinator
            .as_ref()
            .map(Coordinator::handle)
            .unwrap_or_default();
        // inputs[s][j]: receivers of subtask j of stage s, one per upstream
        // subtask and input, each with the index of its input.
        let mut inputs: Vec<Vec<TaskInputs>> = self
            .stages
            .iter()
            .map(|s| (0..s.parallelism).map(|_| Vec::new()).collect())
            .collect();
        // outputs[s][i]: the edges leaving subtask i of stage s.
        let mut outputs: Vec<Vec<Vec<OutEdge>>> = self
            .stages
            .iter()
            .map(|s| (0..s.parallelism).map(|_| Vec::new()).collect())
            .collect();
        for (s, stage) in self.stages.iter().enumerate() {
            for (input_index, input) in stage.inputs.iter().enumerate() {
                let (up, part) = (input.stage, &input.partitioning);
                if up >= s {
                    return Err(OperatorError::Internal(format!(
                        "stage {s} reads from later stage {up}"
                    )));
                }
                let up_par = self.stages[up].parallelism;
                let down_par = stage.parallelism;
                match part {
                    Partitioning::Forward if up_par != down_par => {
                        return Err(OperatorError::Internal(format!(
                            "forward edge between parallelism {up_par} and {down_par}"
                        )));
                    }
                    Partitioning::Gather if down_par != 1 => {
                        return Err(OperatorError::Internal(
                            "gather into parallelism > 1".into(),
                        ));
                    }
                    _ => {}
                }
                for (i, out) in outputs[up].iter_mut().enumerate() {
                    let targets: Vec<usize> = match part {
                        Partitioning::Forward => vec![i],
                        Partitioning::Gather => vec![0],
                        Partitioning::Hash(_) => (0..down_par).collect(),
                    };
                    let mut senders = Vec::new();
                    for j in targets {
                        let (tx, rx) = bounded(CHANNEL_CAPACITY);
                        senders.push(tx);
                        inputs[s][j].push((input_index, rx));
                    }
                    out.push(OutEdge {
                        port: input.port,
                        partitioning: part.clone(),
                        senders,
                    });
                }
            }
        }

        let mut handles = Vec::new();
        for (s, stage) in self.stages.into_iter().enumerate().rev() {
            let stage = Arc::new(stage);
            let stage_inputs = std::mem::take(&mut inputs[s]);
            let stage_outputs = std::mem::take(&mut outputs[s]);
            for (subtask, (task_inputs, task_outputs)) in
                stage_inputs.into_iter().zip(stage_outputs).enumerate()
            {
                let task_name = if stage.parallelism > 1 {
                    format!("{}[{}/{}]", stage.name, subtask + 1, stage.parallelism)
                } else {
                    stage.name.clone()
                };
                let stage = stage.clone();
                let state = state.clone();
                let metrics = metrics.clone();
                let handle = handle.clone();
                let name = task_name.clone();
                let handle = std::thread::Builder::new()
                    .name(task_name.chars().take(15).collect())
                    .spawn(move || {
                        let result = run_subtask(
                            &stage,
                            subtask,
                            &name,
                            task_inputs,
                            task_outputs,
                            state,
                            metrics,
                            &handle,
                        );
                        handle.task_ended();
                        // The caller of `join` reports the error; log it for tracing only.
                        if let Err(e) = &result
                            && !e.is_secondary()
                        {
                            tracing::debug!(task = %name, error = %e, "task failed");
                        }
                        result.map_err(|e| OperatorError::InTask {
                            task: name,
                            source: Box::new(e),
                        })
                    })
                    .map_err(|e| OperatorError::Internal(format!("cannot spawn a thread: {e}")))?;
                handles.push((task_name, handle));
            }
        }
        Ok(RunningDataflow {
            handles,
            coordinator,
            metrics,
        })
    }
}

impl RunningDataflow {
    /// Waits for every task. Returns the first root-cause error, if any.
    pub fn join(self) -> Result<()> {
        let mut primary = None;
        let mut secondary = None;
        for (name, handle) in self.handles {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_secondary() => {
                    secondary.get_or_insert(e);
                }
                Ok(Err(e)) => {
                    primary.get_or_insert(e);
                }
                Err(_) => {
                    primary.get_or_insert(OperatorError::InTask {
                        task: name,
                        source: Box::new(OperatorError::Internal("the task panicked".into())),
                    });
                }
            }
        }
        let result = match primary.or(secondary) {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if let Some(c) = self.coordinator {
            c.finish(result.is_ok())?;
        }
        result
    }
}

#[allow(clippy::too_many_arguments)]
fn run_subtask(
    stage: &Stage,
    subtask: usize,
    task_name: &str,
    inputs: Vec<(usize, Receiver<Message>)>,
    outputs: Vec<OutEdge>,
    state: Arc<dyn StateBackend>,
    metrics: JobMetrics,
    handle: &CheckpointHandle,
) -> Result<()> {
    let mut ops = (stage.operators)(subtask)?;
    for (k, op) in ops.iter_mut().enumerate() {
        let operator_id = stage
            .operator_ids
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("{}-{k}", stage.name));
        let ctx = OperatorContext {
            task_name: task_name.to_string(),
            operator_id,
            subtask,
            parallelism: stage.parallelism,
            state: state.clone(),
            metrics: metrics.clone(),
            checkpoints: handle.clone(),
        };
        op.open(&ctx)
            .map_err(|e| OperatorError::Connector(format!("opening {}: {e}", op.name())))?;
    }
    let mut chain = Chain { ops, outputs };
    match &stage.source {
        Some(factory) => {
            let mut source = factory(subtask)?;
            let ctx = OperatorContext {
                task_name: task_name.to_string(),
                operator_id: format!("{}-source", stage.name),
                subtask,
                parallelism: stage.parallelism,
                state,
                metrics: metrics.clone(),
                checkpoints: handle.clone(),
            };
            source.open(&ctx)?;
            metrics.task_opened();
            run_source(source.as_mut(), &mut chain, &ctx)
        }
        None => {
            metrics.task_opened();
            run_task(inputs, &mut chain, handle)
        }
    }
}

/// Where a source's position is kept in its state table.
const POSITION_KEY: &[u8] = b"position";

fn run_source(source: &mut dyn Source, chain: &mut Chain, ctx: &OperatorContext) -> Result<()> {
    let (metrics, handle) = (&ctx.metrics, &ctx.checkpoints);
    let table = ctx
        .state
        .open_table(&format!("{}-{}", ctx.operator_id, ctx.subtask))?;
    if handle.restored().is_some()
        && let Some(position) = table.get(POSITION_KEY)?
    {
        source.seek(&position)?;
        tracing::info!(source = %source.name(), "source resumed from its checkpointed position");
    }
    tracing::debug!(source = %source.name(), "source started");
    let mut reported = 0;
    if let Some((done, total)) = source.progress() {
        metrics.add_progress_total(total);
        reported = done;
    }
    let mut injected = 0;
    let mut warned = false;
    loop {
        if let Some(id) = handle.barrier_due(&mut injected) {
            match source.position() {
                Some(position) => table.put(POSITION_KEY, &position)?,
                None if !warned => {
                    warned = true;
                    tracing::warn!(
                        source = %source.name(),
                        "the source cannot seek: after a recovery it is read from the start"
                    );
                }
                None => {}
            }
            chain.checkpoint(id)?;
            handle.ack(id, Duration::ZERO);
        }
        if handle.stopping() {
            // Stopped after a final checkpoint: end without draining, so
            // that no window fires on a watermark the data did not bring.
            return chain.close();
        }
        let Some(batch) = source.next_batch()? else {
            break;
        };
        metrics.add_rows_in(batch.num_rows() as u64);
        if let Some((done, _)) = source.progress() {
            metrics.add_progress_done(done.saturating_sub(reported));
            reported = done;
        }
        chain.push_source(source.partition(), batch)?;
        for partition in source.take_ended_partitions() {
            chain.end_partition(partition)?;
        }
    }
    // End of a bounded input: close every window, then end the stream.
    chain.push(0, Emit::Watermark(MAX_WATERMARK))?;
    chain.close()
}

/// The loop of a task with inputs: merges watermarks, aligns barriers,
/// counts ends of stream. See the module docs. Each channel comes with the
/// index of the input it belongs to (a join's side), which its rows are
/// handed to the first operator with.
pub fn run_task(
    inputs: Vec<(usize, Receiver<Message>)>,
    chain: &mut Chain,
    handle: &CheckpointHandle,
) -> Result<()> {
    let (sides, inputs): (Vec<usize>, Vec<Receiver<Message>>) = inputs.into_iter().unzip();
    let n = inputs.len();
    let mut watermarks = vec![Timestamp::MIN; n];
    let mut ended = vec![false; n];
    let mut blocked = vec![false; n];
    let mut current = Timestamp::MIN;
    let mut pending_barrier: Option<u64> = None;
    // When the first input delivered the pending barrier.
    let mut aligning_since = Instant::now();
    loop {
        let live: Vec<usize> = (0..n).filter(|&i| !ended[i] && !blocked[i]).collect();
        if live.is_empty() {
            break;
        }
        let (idx, msg) = receive(&inputs, &live)?;
        match msg {
            Message::Data(batch) => chain.push_input(sides[idx], batch)?,
            Message::Watermark(wm) => {
                watermarks[idx] = watermarks[idx].max(wm);
                advance_watermark(&watermarks, &ended, &mut current, chain)?;
            }
            Message::Barrier(id) => {
                if pending_barrier.is_some_and(|p| p != id) {
                    return Err(OperatorError::Internal(format!(
                        "barrier {id} arrived while aligning barrier {pending_barrier:?}"
                    )));
                }
                if pending_barrier.is_none() {
                    aligning_since = Instant::now();
                }
                pending_barrier = Some(id);
                blocked[idx] = true;
                if (0..n).all(|i| ended[i] || blocked[i]) {
                    let alignment = aligning_since.elapsed();
                    chain.checkpoint(id)?;
                    handle.ack(id, alignment);
                    blocked.fill(false);
                    pending_barrier = None;
                }
            }
            Message::EndOfStream => {
                ended[idx] = true;
                if let Some(id) = pending_barrier
                    && (0..n).all(|i| ended[i] || blocked[i])
                {
                    let alignment = aligning_since.elapsed();
                    chain.checkpoint(id)?;
                    handle.ack(id, alignment);
                    blocked.fill(false);
                    pending_barrier = None;
                }
                advance_watermark(&watermarks, &ended, &mut current, chain)?;
            }
        }
        if ended.iter().all(|&e| e) {
            break;
        }
    }
    chain.close()
}

fn receive(inputs: &[Receiver<Message>], live: &[usize]) -> Result<(usize, Message)> {
    if live.len() == 1 {
        let idx = live[0];
        return inputs[idx]
            .recv()
            .map(|m| (idx, m))
            .map_err(|_| OperatorError::Disconnected);
    }
    let mut select = Select::new();
    for &i in live {
        select.recv(&inputs[i]);
    }
    let op = select.select();
    let idx = live[op.index()];
    op.recv(&inputs[idx])
        .map(|m| (idx, m))
        .map_err(|_| OperatorError::Disconnected)
}

/// Hands the chain the minimum watermark over inputs that have not ended,
/// if it advanced.
fn advance_watermark(
    watermarks: &[Timestamp],
    ended: &[bool],
    current: &mut Timestamp,
    chain: &mut Chain,
) -> Result<()> {
    // Ended inputs no longer hold the others back. When every input has
    // ended the watermark stays where it is: a bounded source sends
    // `MAX_WATERMARK` itself before ending, while a stopped job must not
    // fire windows that the data did not complete.
    let Some(min) = watermarks
        .iter()
        .zip(ended)
        .filter(|&(_, &e)| !e)
        .map(|(&w, _)| w)
        .min()
    else {
        return Ok(());
    };
    if min > *current {
        *current = min;
        chain.push(0, Emit::Watermark(min))?;
    }
    Ok(())
}

/// One edge leaving a subtask.
#[derive(Debug)]
pub struct OutEdge {
    /// The output it carries: 0 = main, others = side outputs.
    port: usize,
    partitioning: Partitioning,
    senders: Vec<Sender<Message>>,
}

impl OutEdge {
    fn send_data(&self, batch: &datafusion::arrow::record_batch::RecordBatch) -> Result<()> {
        match &self.partitioning {
            // Cloning a batch clones reference-counted buffers, not data.
            Partitioning::Forward | Partitioning::Gather => {
                send(&self.senders[0], Message::Data(batch.clone()))
            }
            Partitioning::Hash(keys) => {
                for (target, part) in hash_partition(batch, keys, self.senders.len())? {
                    send(&self.senders[target], Message::Data(part))?;
                }
                Ok(())
            }
        }
    }

    fn broadcast(&self, msg: Message) -> Result<()> {
        for s in &self.senders {
            send(s, msg.clone())?;
        }
        Ok(())
    }
}

fn send(sender: &Sender<Message>, msg: Message) -> Result<()> {
    sender.send(msg).map_err(|_| OperatorError::Disconnected)
}

/// A fused chain of operators and the edges its output leaves by.
pub struct Chain {
    ops: Vec<Box<dyn Operator>>,
    outputs: Vec<OutEdge>,
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
    fn push(&mut self, level: usize, item: Emit) -> Result<()> {
        let ops = self.ops.get_mut(level..).unwrap_or_default();
        push_into(ops, &self.outputs, item)
    }

    /// Feeds a batch of input `input` (a join's side) to the first operator.
    fn push_input(&mut self, input: usize, batch: RecordBatch) -> Result<()> {
        let Some((op, rest)) = self.ops.split_first_mut() else {
            return self.emit(Emit::Data(batch));
        };
        let outputs = &self.outputs;
        let mut forward = |item: Emit| push_into(rest, outputs, item);
        let mut out = Collector::streaming(&mut forward);
        op.process_input_batch(input, batch, &mut out)
            .and_then(|()| out.flush())
            .map_err(|e| with_operator(op.as_ref(), e))
    }

    /// Feeds a source's batch, read from `partition`, to the first operator.
    fn push_source(&mut self, partition: usize, batch: RecordBatch) -> Result<()> {
        let Some(op) = self.ops.first_mut() else {
            return self.emit(Emit::Data(batch));
        };
        let mut out = Collector::default();
        op.process_partition_batch(partition, batch, &mut out)
            .map_err(|e| with_operator(op.as_ref(), e))?;
        for item in out.take() {
            self.push(1, item)?;
        }
        Ok(())
    }

    /// Tells the first operator that the source's `partition` ended.
    fn end_partition(&mut self, partition: usize) -> Result<()> {
        let Some(op) = self.ops.first_mut() else {
            return Ok(());
        };
        let mut out = Collector::default();
        op.end_partition(partition, &mut out)
            .map_err(|e| with_operator(op.as_ref(), e))?;
        for item in out.take() {
            self.push(1, item)?;
        }
        Ok(())
    }

    fn emit(&mut self, item: Emit) -> Result<()> {
        emit_to(&self.outputs, item)
    }

    fn broadcast(&self, msg: Message) -> Result<()> {
        broadcast_to(&self.outputs, msg)
    }

    fn checkpoint(&mut self, id: u64) -> Result<()> {
        for level in 0..self.ops.len() {
            let mut out = Collector::default();
            let op = &mut self.ops[level];
            op.handle_checkpoint(id, &mut out)
                .map_err(|e| with_operator(op.as_ref(), e))?;
            for item in out.take() {
                self.push(level + 1, item)?;
            }
        }
        self.broadcast(Message::Barrier(id))
    }

    fn close(&mut self) -> Result<()> {
        for level in 0..self.ops.len() {
            let mut out = Collector::default();
            let op = &mut self.ops[level];
            op.on_close(&mut out)
                .map_err(|e| with_operator(op.as_ref(), e))?;
            for item in out.take() {
                self.push(level + 1, item)?;
            }
        }
        self.broadcast(Message::EndOfStream)
    }
}

/// Feeds `item` to the first of `ops` and what that emits to the rest of
/// them (whenever it flushes, and when its hook returns); past the last
/// operator, to `outputs`.
fn push_into(ops: &mut [Box<dyn Operator>], outputs: &[OutEdge], item: Emit) -> Result<()> {
    let Some((op, rest)) = ops.split_first_mut() else {
        return emit_to(outputs, item);
    };
    // Side rows leave the chain at once.
    if let Emit::Side(..) = item {
        return emit_to(outputs, item);
    }
    let mut forward = |item: Emit| push_into(rest, outputs, item);
    let mut out = Collector::streaming(&mut forward);
    match item {
        Emit::Data(batch) => op.process_batch(batch, &mut out),
        Emit::Watermark(wm) => op.handle_watermark(wm, &mut out),
        Emit::Side(..) => Ok(()),
    }
    .and_then(|()| out.flush())
    .map_err(|e| with_operator(op.as_ref(), e))
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
        | OperatorError::OutputClosed
        | OperatorError::InTask { .. } => e,
        other => OperatorError::InTask {
            task: op.name(),
            source: Box::new(other),
        },
    }
}

/// Runs a single operator through the real task loop over scripted input
/// messages, returning everything it sent downstream. The harness for
/// operator tests: assert the exact output sequence, including *when*
/// windows fire.
pub fn run_operator_harness(
    op: Box<dyn Operator>,
    state: Arc<dyn StateBackend>,
    inputs: Vec<Vec<Message>>,
) -> Result<Vec<Message>> {
    run_operator_harness_with(op, state, inputs, CheckpointHandle::default())
}

/// [`run_operator_harness`] with a checkpoint handle, e.g.
/// [`CheckpointHandle::resumed`] for a run that recovers.
pub fn run_operator_harness_with(
    op: Box<dyn Operator>,
    state: Arc<dyn StateBackend>,
    inputs: Vec<Vec<Message>>,
    checkpoints: CheckpointHandle,
) -> Result<Vec<Message>> {
    let mut op = op;
    let ctx = OperatorContext {
        task_name: "harness".into(),
        operator_id: "harness-op".into(),
        subtask: 0,
        parallelism: 1,
        state,
        metrics: JobMetrics::default(),
        checkpoints,
    };
    op.open(&ctx)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut receivers = Vec::new();
    for (i, messages) in inputs.into_iter().enumerate() {
        let (in_tx, in_rx) = crossbeam_channel::unbounded();
        for m in messages {
            in_tx.send(m).map_err(|_| OperatorError::Disconnected)?;
        }
        receivers.push((i, in_rx));
    }
    let mut chain = Chain {
        ops: vec![op],
        outputs: vec![OutEdge {
            port: 0,
            partitioning: Partitioning::Forward,
            senders: vec![tx],
        }],
    };
    run_task(receivers, &mut chain, &ctx.checkpoints)?;
    drop(chain);
    Ok(rx.try_iter().collect())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::record_batch::RecordBatch;
    use eddy_state::MemoryBackend;

    use super::*;

    /// Emits `n` one-row batches, counting them.
    struct CountingSource {
        left: usize,
        produced: Arc<AtomicUsize>,
    }

    impl Source for CountingSource {
        fn name(&self) -> String {
            "counting".into()
        }

        fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            self.produced.fetch_add(1, Ordering::SeqCst);
            let batch =
                RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1])) as _)])?;
            Ok(Some(batch))
        }
    }

    /// A slow consumer: records how far the source had run ahead of it.
    struct SlowSink {
        produced: Arc<AtomicUsize>,
        consumed: usize,
        max_ahead: Arc<AtomicUsize>,
        fail_at: Option<usize>,
    }

    impl Operator for SlowSink {
        fn name(&self) -> String {
            "SlowSink".into()
        }

        fn process_batch(&mut self, _batch: RecordBatch, _out: &mut Collector) -> Result<()> {
            self.consumed += 1;
            if self.fail_at == Some(self.consumed) {
                return Err(OperatorError::Connector("sink rejected row 3".into()));
            }
            let ahead = self.produced.load(Ordering::SeqCst) - self.consumed;
            self.max_ahead.fetch_max(ahead, Ordering::SeqCst);
            std::thread::yield_now();
            Ok(())
        }
    }

    fn pipeline(n: usize, fail_at: Option<usize>) -> (Dataflow, Arc<AtomicUsize>) {
        let produced = Arc::new(AtomicUsize::new(0));
        let max_ahead = Arc::new(AtomicUsize::new(0));
        let p = produced.clone();
        let source: SourceFactory = Box::new(move |_| {
            Ok(Box::new(CountingSource {
                left: n,
                produced: p.clone(),
            }))
        });
        let (p, m) = (produced.clone(), max_ahead.clone());
        let sink: ChainFactory = Box::new(move |_| {
            let op = SlowSink {
                produced: p.clone(),
                consumed: 0,
                max_ahead: m.clone(),
                fail_at,
            };
            Ok(vec![Box::new(op) as Box<dyn Operator>])
        });
        let stages = vec![
            Stage {
                name: "source".into(),
                parallelism: 1,
                source: Some(source),
                operators: Box::new(|_| Ok(vec![])),
                inputs: vec![],
                operator_ids: vec![],
            },
            Stage {
                name: "sink".into(),
                parallelism: 1,
                source: None,
                operators: sink,
                inputs: vec![StageInput::new(0, Partitioning::Gather)],
                operator_ids: vec!["sink".into()],
            },
        ];
        (Dataflow { stages }, max_ahead)
    }

    #[test]
    fn a_slow_consumer_holds_the_source_back() {
        let (dataflow, max_ahead) = pipeline(2_000, None);
        dataflow
            .start(Arc::new(MemoryBackend::default()), JobMetrics::default())
            .unwrap()
            .join()
            .unwrap();
        // The channel holds CHANNEL_CAPACITY batches; one more may be in the
        // source's hand and one being received. Never the whole input.
        let ahead = max_ahead.load(Ordering::SeqCst);
        assert!(
            ahead <= CHANNEL_CAPACITY + 2,
            "source ran {ahead} batches ahead"
        );
    }

    #[test]
    fn the_failing_task_is_reported_not_its_neighbours() {
        let (dataflow, _) = pipeline(1_000, Some(3));
        let err = dataflow
            .start(Arc::new(MemoryBackend::default()), JobMetrics::default())
            .unwrap()
            .join()
            .unwrap_err();
        assert_eq!(err.to_string(), "sink: sink rejected row 3");
    }
}
