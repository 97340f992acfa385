//! The runtime: stages of subtasks on threads, joined by bounded channels.
//!
//! A [`Dataflow`] is a list of [`Stage`]s. A stage runs `parallelism`
//! subtasks; each subtask is one thread that drives a fused chain of
//! operators (and, for a source stage, the source's reader in front of
//! them). Stages are connected by [`Partitioning`] edges:
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
//! The runtime owns the coordination, so operators only compute:
//! - [`task`]: the loop of a task with inputs merges watermarks (minimum
//!   over inputs neither ended nor idle), aligns barriers, counts ends of
//!   stream and fires processing-time timers;
//! - [`source`]: the loop of a source subtask assigns splits, keeps their
//!   positions in checkpoints, injects barriers and never blocks on its
//!   reader;
//! - [`chain`]: the fused operators of a subtask and its output edges;
//! - here: wiring, threads, and failure: an error or a panic in any
//!   subtask cancels every other subtask of the job, and the job ends with
//!   the failing subtask's name and message.

mod chain;
mod source;
mod task;

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, bounded};
use eddy_state::StateBackend;

pub use self::chain::{Chain, OutEdge};
use self::source::{SplitAssigner, run_source};
pub use self::task::run_task;
use crate::checkpoint::{CheckpointHandle, Checkpointing, Committers, Coordinator};
use crate::message::Message;
use crate::metrics::JobMetrics;
use crate::operator::{Operator, OperatorContext};
use crate::source::SourceProvider;
use crate::{OperatorError, Result};

/// Messages buffered per channel before the producer blocks.
pub const CHANNEL_CAPACITY: usize = 8;

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
    /// A source stage's source: its subtasks read its splits.
    pub source: Option<Arc<dyn SourceProvider>>,
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
#[derive(Debug, Default)]
pub struct Dataflow {
    pub stages: Vec<Stage>,
    /// The committer of each sink with a second commit phase, by sink
    /// operator id: used when checkpoints complete and at recovery.
    pub committers: Committers,
}

/// A dataflow whose tasks are running.
#[derive(Debug)]
pub struct RunningDataflow {
    handles: Vec<(String, JoinHandle<Result<()>>)>,
    coordinator: Option<Coordinator>,
    handle: CheckpointHandle,
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
        mut self,
        state: Arc<dyn StateBackend>,
        metrics: JobMetrics,
        checkpointing: Option<Checkpointing>,
    ) -> Result<RunningDataflow> {
        let tasks = self.stages.iter().map(|s| s.parallelism).sum();
        let restored = checkpointing.as_ref().and_then(|c| c.restored);
        // Splits are listed (and restored positions applied) once per
        // source, before any subtask reads.
        let assigners = self
            .stages
            .iter()
            .map(|s| {
                s.source
                    .as_ref()
                    .map(|p| {
                        let table = format!("{}-source-splits", s.name);
                        SplitAssigner::start(
                            p.as_ref(),
                            s.parallelism,
                            state.as_ref(),
                            &table,
                            restored.is_some(),
                        )
                        .map(Arc::new)
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let committers = std::mem::take(&mut self.committers);
        let coordinator = checkpointing
            .map(|c| Coordinator::start(c, tasks, metrics.clone(), committers))
            .transpose()?;
        let handle = coordinator
            .as_ref()
            .map(Coordinator::handle)
            .unwrap_or_default();
        let root = handle.clone();
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
                        blocked: None,
                    });
                }
            }
        }

        let mut handles = Vec::new();
        let mut assigners = assigners;
        for (s, stage) in self.stages.into_iter().enumerate().rev() {
            let stage = Arc::new(stage);
            let assigner = assigners[s].take();
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
                let assigner = assigner.clone();
                let handle = std::thread::Builder::new()
                    .name(task_name.chars().take(15).collect())
                    .spawn(move || {
                        // A panic is this task's failure like any error: it
                        // must not leave the others, or the coordinator
                        // waiting for this task, behind.
                        let run = std::panic::AssertUnwindSafe(|| {
                            let task = Subtask {
                                stage: &stage,
                                subtask,
                                name: &name,
                                state,
                                metrics,
                                handle: &handle,
                            };
                            task.run(task_inputs, task_outputs, assigner.as_deref())
                        });
                        let result = std::panic::catch_unwind(run).unwrap_or_else(|payload| {
                            Err(OperatorError::Panicked(panic_message(payload.as_ref())))
                        });
                        if let Err(e) = &result
                            && !e.is_secondary()
                        {
                            // Fail fast: every other task of the job stops.
                            handle.cancel();
                            tracing::error!(task = %name, error = %e, "task failed");
                        }
                        handle.task_ended();
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
            handle: root,
            metrics,
        })
    }
}

impl RunningDataflow {
    /// The tasks' shared handle: [`CheckpointHandle::cancel`] ends them.
    pub fn handle(&self) -> CheckpointHandle {
        self.handle.clone()
    }

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

/// The text of a panic's payload (a `&str` or a `String` for the
/// `panic!` macros).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// One subtask about to run: where it is and what it shares with the job.
struct Subtask<'a> {
    stage: &'a Stage,
    subtask: usize,
    name: &'a str,
    state: Arc<dyn StateBackend>,
    metrics: JobMetrics,
    handle: &'a CheckpointHandle,
}

impl Subtask<'_> {
    /// The context of operator `operator_id` (`name` for metrics): its
    /// metrics count into its own counters too.
    fn context(&self, operator_id: String, name: &str) -> OperatorContext {
        let metrics = self
            .metrics
            .for_operator(&format!("{operator_id} {name}"), self.subtask);
        OperatorContext {
            task_name: self.name.to_string(),
            operator_id,
            subtask: self.subtask,
            parallelism: self.stage.parallelism,
            state: self.state.clone(),
            metrics,
            checkpoints: self.handle.clone(),
        }
    }

    /// Opens the chain (and the source's reader), then runs the task loop.
    fn run(
        self,
        inputs: TaskInputs,
        outputs: Vec<OutEdge>,
        assigner: Option<&SplitAssigner>,
    ) -> Result<()> {
        let stage = self.stage;
        let mut ops = (stage.operators)(self.subtask)?;
        let mut stats = Vec::with_capacity(ops.len());
        for (k, op) in ops.iter_mut().enumerate() {
            let operator_id = stage
                .operator_ids
                .get(k)
                .cloned()
                .unwrap_or_else(|| format!("{}-{k}", stage.name));
            let ctx = self.context(operator_id, &op.name());
            stats.extend(ctx.metrics.operator().cloned());
            op.open(&ctx)
                .map_err(|e| OperatorError::Connector(format!("opening {}: {e}", op.name())))?;
        }
        let mut outputs = outputs;
        for edge in &mut outputs {
            edge.blocked = stats.last().cloned();
        }
        let mut chain = Chain {
            ops,
            stats,
            outputs,
        };
        match (&stage.source, assigner) {
            (Some(provider), Some(assigner)) => {
                let mut reader = provider.reader()?;
                let ctx = self.context(format!("{}-source", stage.name), "Source");
                reader.open(&ctx)?;
                self.metrics.task_opened();
                run_source(reader.as_mut(), assigner, &mut chain, &ctx)
            }
            _ => {
                self.metrics.task_opened();
                run_task(inputs, &mut chain, self.handle)
            }
        }
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
        stats: Vec::new(),
        outputs: vec![OutEdge {
            port: 0,
            partitioning: Partitioning::Forward,
            senders: vec![tx],
            blocked: None,
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

    use std::time::Duration;

    use super::*;
    use crate::operator::Collector;
    use crate::source::{Poll, SourceReader, Split, SplitEnumerator};

    /// Emits `n` one-row batches (one split), counting them.
    #[derive(Debug)]
    struct CountingSource {
        n: usize,
        produced: Arc<AtomicUsize>,
    }

    struct CountingReader {
        n: usize,
        left: Option<(usize, usize)>,
        produced: Arc<AtomicUsize>,
    }

    struct OneSplit;

    impl SplitEnumerator for OneSplit {
        fn list(&mut self) -> Result<Vec<Split>> {
            Ok(vec![Split {
                id: "only".into(),
                position: vec![],
                size: None,
            }])
        }
    }

    impl SourceProvider for CountingSource {
        fn enumerator(&self) -> Result<Box<dyn SplitEnumerator>> {
            Ok(Box::new(OneSplit))
        }

        fn reader(&self) -> Result<Box<dyn SourceReader>> {
            Ok(Box::new(CountingReader {
                n: self.n,
                left: None,
                produced: self.produced.clone(),
            }))
        }
    }

    impl SourceReader for CountingReader {
        fn name(&self) -> String {
            "counting".into()
        }

        fn add_split(&mut self, split: usize, _assigned: Split) -> Result<()> {
            self.left = Some((split, self.n));
            Ok(())
        }

        fn poll(&mut self) -> Result<Poll> {
            let Some((split, left)) = self.left.as_mut() else {
                return Ok(Poll::Pending);
            };
            if *left == 0 {
                let split = *split;
                self.left = None;
                return Ok(Poll::Finished(split));
            }
            *left -= 1;
            self.produced.fetch_add(1, Ordering::SeqCst);
            let batch =
                RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1])) as _)])?;
            Ok(Poll::Batch(*split, batch))
        }

        fn positions(&self) -> Vec<(usize, Vec<u8>)> {
            Vec::new()
        }
    }

    /// A slow consumer: records how far the source had run ahead of it.
    struct SlowSink {
        produced: Arc<AtomicUsize>,
        consumed: usize,
        max_ahead: Arc<AtomicUsize>,
        fail_at: Option<usize>,
        panic_at: Option<usize>,
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
            if self.panic_at == Some(self.consumed) {
                panic!("boom at batch {}", self.consumed);
            }
            let ahead = self.produced.load(Ordering::SeqCst) - self.consumed;
            self.max_ahead.fetch_max(ahead, Ordering::SeqCst);
            std::thread::yield_now();
            Ok(())
        }
    }

    fn pipeline(n: usize, fail_at: Option<usize>) -> (Dataflow, Arc<AtomicUsize>) {
        pipeline_with(n, fail_at, None)
    }

    fn pipeline_with(
        n: usize,
        fail_at: Option<usize>,
        panic_at: Option<usize>,
    ) -> (Dataflow, Arc<AtomicUsize>) {
        let produced = Arc::new(AtomicUsize::new(0));
        let max_ahead = Arc::new(AtomicUsize::new(0));
        let source = Arc::new(CountingSource {
            n,
            produced: produced.clone(),
        });
        let (p, m) = (produced.clone(), max_ahead.clone());
        let sink: ChainFactory = Box::new(move |_| {
            let op = SlowSink {
                produced: p.clone(),
                consumed: 0,
                max_ahead: m.clone(),
                fail_at,
                panic_at,
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
        (
            Dataflow {
                stages,
                ..Dataflow::default()
            },
            max_ahead,
        )
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

    #[test]
    fn a_panic_fails_the_job_and_stops_every_task_even_while_checkpointing() {
        // The source would run for ever: only the failure can end the job.
        let (dataflow, _) = pipeline_with(usize::MAX, None, Some(3));
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(eddy_state::checkpoint::CheckpointStore::new(dir.path(), 2).unwrap());
        let db = store
            .restore(None, eddy_state::RocksDbOptions::default())
            .unwrap();
        let checkpointing = Checkpointing {
            store,
            db: db.clone(),
            interval: Some(Duration::from_millis(1)),
            restored: None,
            stop: Arc::default(),
        };
        let err = dataflow
            .start_with(Arc::new(db), JobMetrics::default(), Some(checkpointing))
            .unwrap()
            .join()
            .unwrap_err();
        assert_eq!(err.to_string(), "sink: panicked: boom at batch 3");
    }

    /// Passes rows and watermarks through.
    struct PassThrough;

    impl Operator for PassThrough {
        fn name(&self) -> String {
            "PassThrough".into()
        }

        fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
            out.collect(batch);
            Ok(())
        }
    }

    #[test]
    fn when_every_input_idles_the_highest_watermark_goes_on_then_idle() {
        // Input 0 reached 12 s and idled; input 1 never had a watermark and
        // idles too, in whichever order they arrive.
        let inputs = vec![
            vec![
                Message::Watermark(12_000),
                Message::Idle,
                Message::EndOfStream,
            ],
            vec![Message::Idle, Message::EndOfStream],
        ];
        let out = run_operator_harness(
            Box::new(PassThrough),
            Arc::new(MemoryBackend::default()),
            inputs,
        )
        .unwrap();
        let marks: Vec<String> = out
            .iter()
            .filter_map(|m| match m {
                Message::Watermark(w) => Some(format!("wm {w}")),
                Message::Idle => Some("idle".into()),
                _ => None,
            })
            .collect();
        assert_eq!(marks, ["wm 12000", "idle"]);
    }
}
