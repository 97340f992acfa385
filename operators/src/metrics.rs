//! Metrics: counters of each job, and of each operator and subtask in it,
//! cheap to update from any task.
//!
//! Every figure is kept twice: in atomics that the job's owner reads (the
//! progress line, `eddy bench`, a job's status), and through the
//! [`metrics`] crate's facade, named `eddy_*` and labelled by `job`,
//! `operator` and `subtask`, so that a server only has to install an
//! exporter (Prometheus) to publish them. Without an installed recorder
//! the facade costs nothing.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `eddy_operator_rows_in_total`, `eddy_operator_batches_in_total` | job, operator, subtask | rows and batches into an operator |
//! | `eddy_operator_rows_out_total`, `eddy_operator_batches_out_total` | job, operator, subtask | rows and batches it emitted |
//! | `eddy_operator_late_rows_total` | job, operator, subtask | rows dropped as late |
//! | `eddy_task_watermark_ms` | job, operator, subtask | the subtask's input watermark (its first operator's) |
//! | `eddy_task_backpressure_ms_total` | job, operator, subtask | time blocked on a full output channel (its last operator's) |
//! | `eddy_state_bytes` | job, table | a state table's size (RocksDB's estimate), after each checkpoint |
//! | `eddy_checkpoint_duration_seconds`, `eddy_checkpoint_bytes` | job | the last completed checkpoint |
//! | `eddy_checkpoints_total`, `eddy_checkpoints_failed_total` | job | checkpoints |
//! | `eddy_source_rows_total`, `eddy_sink_rows_total` | job | rows read by sources, written by sinks |
//! | `eddy_source_bad_records_total` | job, outcome (`dropped`, `dead-letter`) | records that did not decode, under `'bad-data'` |

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Wall-clock time in ms since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters of one running job. Cloning shares them. An operator's
/// handle ([`JobMetrics::for_operator`]) also counts into that operator's
/// own counters.
#[derive(Debug, Clone, Default)]
pub struct JobMetrics {
    inner: Arc<Counters>,
    operator: Option<Arc<OperatorCounters>>,
}

#[derive(Debug, Default)]
struct Counters {
    /// The job's name, the `job` label of every metric.
    job: String,
    /// Rows read by sources and written by sinks, through the facade
    /// (handles made once: they are counted per batch).
    source_rows: FacadeCounter,
    sink_rows: FacadeCounter,
    bad_dropped_facade: FacadeCounter,
    bad_dead_lettered_facade: FacadeCounter,
    /// Every operator subtask's counters, in the order they were made.
    operators: Mutex<Vec<Arc<OperatorCounters>>>,
    rows_in: AtomicU64,
    rows_out: AtomicU64,
    late_rows: AtomicU64,
    bad_dropped: AtomicU64,
    bad_dead_lettered: AtomicU64,
    watermark: AtomicU64,
    progress_done: AtomicU64,
    progress_total: AtomicU64,
    /// Bytes read by sources that count them (files).
    bytes_read: AtomicU64,
    checkpoints: AtomicU64,
    checkpoints_failed: AtomicU64,
    last_checkpoint_id: AtomicU64,
    last_checkpoint_ms: AtomicU64,
    last_checkpoint_bytes: AtomicU64,
    last_alignment_ms: AtomicU64,
    max_checkpoint_ms: AtomicU64,
    spilled_bytes: AtomicU64,
    /// Keys whose state expired (`'table.exec.state.ttl'`).
    expired_keys: AtomicU64,
    /// When the last task finished opening its operators (restoring their
    /// state), in ms since the Unix epoch.
    opened_unix_ms: AtomicU64,
}

/// A facade counter that does nothing until made for a job.
#[derive(Debug)]
struct FacadeCounter(metrics::Counter);

impl Default for FacadeCounter {
    fn default() -> Self {
        Self(metrics::Counter::noop())
    }
}

/// The latest completed checkpoint, as shown in progress output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointStats {
    pub completed: u64,
    pub failed: u64,
    pub id: u64,
    pub duration_ms: u64,
    pub size_bytes: u64,
    pub alignment_ms: u64,
    /// The longest any checkpoint took.
    pub max_duration_ms: u64,
}

impl JobMetrics {
    /// The metrics of job `job`.
    pub fn new(job: &str) -> Self {
        Self {
            inner: Arc::new(Counters {
                job: job.to_string(),
                source_rows: FacadeCounter(metrics::counter!(
                    "eddy_source_rows_total",
                    "job" => job.to_string()
                )),
                sink_rows: FacadeCounter(metrics::counter!(
                    "eddy_sink_rows_total",
                    "job" => job.to_string()
                )),
                bad_dropped_facade: FacadeCounter(metrics::counter!(
                    "eddy_source_bad_records_total",
                    "job" => job.to_string(),
                    "outcome" => "dropped"
                )),
                bad_dead_lettered_facade: FacadeCounter(metrics::counter!(
                    "eddy_source_bad_records_total",
                    "job" => job.to_string(),
                    "outcome" => "dead-letter"
                )),
                ..Counters::default()
            }),
            operator: None,
        }
    }

    pub fn job(&self) -> &str {
        &self.inner.job
    }

    /// A handle for subtask `subtask` of operator `operator` (`node3
    /// WindowAggregate`): what it counts also goes to its own counters.
    pub fn for_operator(&self, operator: &str, subtask: usize) -> JobMetrics {
        let counters = Arc::new(OperatorCounters::new(&self.inner.job, operator, subtask));
        self.inner
            .operators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(counters.clone());
        JobMetrics {
            inner: self.inner.clone(),
            operator: Some(counters),
        }
    }

    /// This handle's operator counters, if it is an operator's.
    pub fn operator(&self) -> Option<&Arc<OperatorCounters>> {
        self.operator.as_ref()
    }

    /// Every operator subtask's figures so far.
    pub fn operators(&self) -> Vec<OperatorSnapshot> {
        self.inner
            .operators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|o| o.snapshot())
            .collect()
    }

    pub fn add_rows_in(&self, n: u64) {
        self.inner.rows_in.fetch_add(n, Ordering::Relaxed);
        self.inner.source_rows.0.increment(n);
    }

    pub fn add_rows_out(&self, n: u64) {
        self.inner.rows_out.fetch_add(n, Ordering::Relaxed);
        self.inner.sink_rows.0.increment(n);
    }

    pub fn add_late_rows(&self, n: u64) {
        self.inner.late_rows.fetch_add(n, Ordering::Relaxed);
        if let Some(op) = &self.operator {
            op.late_rows.fetch_add(n, Ordering::Relaxed);
            op.facade.late_rows.increment(n);
        }
    }

    /// Bad records a source skipped (`'bad-data'` = `'drop'`).
    pub fn add_bad_dropped(&self, n: u64) {
        self.inner.bad_dropped.fetch_add(n, Ordering::Relaxed);
        self.inner.bad_dropped_facade.0.increment(n);
    }

    /// Bad records a source sent to its dead-letter sink.
    pub fn add_bad_dead_lettered(&self, n: u64) {
        self.inner.bad_dead_lettered.fetch_add(n, Ordering::Relaxed);
        self.inner.bad_dead_lettered_facade.0.increment(n);
    }

    /// Bad records skipped and sent to dead-letter sinks, so far.
    pub fn bad_records(&self) -> (u64, u64) {
        (
            self.inner.bad_dropped.load(Ordering::Relaxed),
            self.inner.bad_dead_lettered.load(Ordering::Relaxed),
        )
    }

    /// A state table's size, as the state backend estimates it.
    pub fn set_state_bytes(&self, table: &str, bytes: u64) {
        metrics::gauge!("eddy_state_bytes", "job" => self.inner.job.clone(), "table" => table.to_string())
            .set(bytes as f64);
    }

    pub fn set_watermark(&self, wm: i64) {
        self.inner
            .watermark
            .fetch_max(wm.max(0) as u64, Ordering::Relaxed);
    }

    /// A bounded source starts: its total amount of work.
    pub fn add_progress_total(&self, n: u64) {
        self.inner.progress_total.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_progress_done(&self, n: u64) {
        self.inner.progress_done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_bytes_read(&self, n: u64) {
        self.inner.bytes_read.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes read by the sources that count them (files).
    pub fn bytes_read(&self) -> u64 {
        self.inner.bytes_read.load(Ordering::Relaxed)
    }

    /// Work done and total over all bounded sources (0 total if none).
    pub fn progress(&self) -> (u64, u64) {
        (
            self.inner.progress_done.load(Ordering::Relaxed),
            self.inner.progress_total.load(Ordering::Relaxed),
        )
    }

    pub fn checkpoint_completed(
        &self,
        id: u64,
        duration: std::time::Duration,
        size_bytes: u64,
        alignment: std::time::Duration,
    ) {
        let c = &self.inner;
        c.last_checkpoint_id.store(id, Ordering::Relaxed);
        c.last_checkpoint_ms
            .store(duration.as_millis() as u64, Ordering::Relaxed);
        c.last_checkpoint_bytes.store(size_bytes, Ordering::Relaxed);
        c.last_alignment_ms
            .store(alignment.as_millis() as u64, Ordering::Relaxed);
        c.max_checkpoint_ms
            .fetch_max(duration.as_millis() as u64, Ordering::Relaxed);
        c.checkpoints.fetch_add(1, Ordering::Relaxed);
        let job = c.job.clone();
        metrics::counter!("eddy_checkpoints_total", "job" => job.clone()).increment(1);
        metrics::gauge!("eddy_checkpoint_duration_seconds", "job" => job.clone())
            .set(duration.as_secs_f64());
        metrics::gauge!("eddy_checkpoint_bytes", "job" => job).set(size_bytes as f64);
    }

    pub fn checkpoint_failed(&self) {
        self.inner
            .checkpoints_failed
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("eddy_checkpoints_failed_total", "job" => self.inner.job.clone())
            .increment(1);
    }

    pub fn checkpoints(&self) -> CheckpointStats {
        let c = &self.inner;
        CheckpointStats {
            completed: c.checkpoints.load(Ordering::Relaxed),
            failed: c.checkpoints_failed.load(Ordering::Relaxed),
            id: c.last_checkpoint_id.load(Ordering::Relaxed),
            duration_ms: c.last_checkpoint_ms.load(Ordering::Relaxed),
            size_bytes: c.last_checkpoint_bytes.load(Ordering::Relaxed),
            alignment_ms: c.last_alignment_ms.load(Ordering::Relaxed),
            max_duration_ms: c.max_checkpoint_ms.load(Ordering::Relaxed),
        }
    }

    /// State an operator moved from memory to the state backend.
    pub fn add_spilled_bytes(&self, n: u64) {
        self.inner.spilled_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn spilled_bytes(&self) -> u64 {
        self.inner.spilled_bytes.load(Ordering::Relaxed)
    }

    /// Keys whose state was dropped, idle for the time-to-live.
    pub fn add_expired_keys(&self, n: u64) {
        self.inner.expired_keys.fetch_add(n, Ordering::Relaxed);
    }

    pub fn expired_keys(&self) -> u64 {
        self.inner.expired_keys.load(Ordering::Relaxed)
    }

    /// A task opened its operators (and they restored their state).
    pub fn task_opened(&self) {
        self.inner
            .opened_unix_ms
            .fetch_max(unix_ms(), Ordering::Relaxed);
    }

    /// When the last task to open did (ms since the Unix epoch; 0: none).
    pub fn opened_unix_ms(&self) -> u64 {
        self.inner.opened_unix_ms.load(Ordering::Relaxed)
    }

    /// Rows read by sources.
    pub fn rows_in(&self) -> u64 {
        self.inner.rows_in.load(Ordering::Relaxed)
    }

    /// Rows written by sinks.
    pub fn rows_out(&self) -> u64 {
        self.inner.rows_out.load(Ordering::Relaxed)
    }

    /// Rows dropped because every window they belong to had already fired.
    pub fn late_rows(&self) -> u64 {
        self.inner.late_rows.load(Ordering::Relaxed)
    }

    /// The highest watermark any source has emitted (ms), 0 if none.
    pub fn watermark(&self) -> u64 {
        self.inner.watermark.load(Ordering::Relaxed)
    }
}

/// One operator subtask's counters.
#[derive(Debug)]
pub struct OperatorCounters {
    job: String,
    /// `node3 WindowAggregate`.
    pub operator: String,
    pub subtask: usize,
    rows_in: AtomicU64,
    batches_in: AtomicU64,
    rows_out: AtomicU64,
    batches_out: AtomicU64,
    late_rows: AtomicU64,
    blocked_ns: AtomicU64,
    watermark: AtomicI64,
    /// A source subtask's lag, summed over its splits, once known.
    source_lag: Mutex<Option<(u64, crate::source::LagUnit)>>,
    facade: Facade,
}

/// The same counters, through the `metrics` facade.
#[derive(Debug)]
struct Facade {
    rows_in: metrics::Counter,
    batches_in: metrics::Counter,
    rows_out: metrics::Counter,
    batches_out: metrics::Counter,
    late_rows: metrics::Counter,
    blocked: metrics::Counter,
    watermark: metrics::Gauge,
}

/// An operator subtask's figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSnapshot {
    pub operator: String,
    pub subtask: usize,
    pub rows_in: u64,
    pub batches_in: u64,
    pub rows_out: u64,
    pub batches_out: u64,
    pub late_rows: u64,
    /// Time blocked on a full output channel (backpressure).
    pub blocked: Duration,
    /// The subtask's input watermark (ms), if it has one.
    pub watermark: Option<i64>,
    /// A source subtask's lag behind the end of its input (its splits'
    /// sum), where the source knows it.
    pub source_lag: Option<(u64, crate::source::LagUnit)>,
}

impl OperatorCounters {
    fn new(job: &str, operator: &str, subtask: usize) -> Self {
        let labels = [
            ("job", job.to_string()),
            ("operator", operator.to_string()),
            ("subtask", subtask.to_string()),
        ];
        Self {
            job: job.to_string(),
            operator: operator.to_string(),
            subtask,
            rows_in: AtomicU64::new(0),
            batches_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            batches_out: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            blocked_ns: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            source_lag: Mutex::new(None),
            facade: Facade {
                rows_in: metrics::counter!("eddy_operator_rows_in_total", &labels),
                batches_in: metrics::counter!("eddy_operator_batches_in_total", &labels),
                rows_out: metrics::counter!("eddy_operator_rows_out_total", &labels),
                batches_out: metrics::counter!("eddy_operator_batches_out_total", &labels),
                late_rows: metrics::counter!("eddy_operator_late_rows_total", &labels),
                blocked: metrics::counter!("eddy_task_backpressure_ms_total", &labels),
                watermark: metrics::gauge!("eddy_task_watermark_ms", &labels),
            },
        }
    }

    /// A batch of `rows` rows went into the operator.
    pub fn batch_in(&self, rows: usize) {
        self.rows_in.fetch_add(rows as u64, Ordering::Relaxed);
        self.batches_in.fetch_add(1, Ordering::Relaxed);
        self.facade.rows_in.increment(rows as u64);
        self.facade.batches_in.increment(1);
    }

    /// A source split's lag behind the end of its input, in `unit`s
    /// (`eddy_source_lag_records` or `eddy_source_lag_bytes`, labelled by
    /// split too).
    /// A source subtask's lag over all its splits, for the progress bar.
    pub fn set_total_source_lag(&self, lag: u64, unit: crate::source::LagUnit) {
        *self.source_lag.lock().unwrap_or_else(|e| e.into_inner()) = Some((lag, unit));
    }

    pub fn source_lag(&self, split: &str, lag: u64, unit: crate::source::LagUnit) {
        let labels = [
            ("job", self.job.clone()),
            ("operator", self.operator.clone()),
            ("subtask", self.subtask.to_string()),
            ("split", split.to_string()),
        ];
        metrics::gauge!(unit.metric(), &labels).set(lag as f64);
    }

    /// The operator emitted a batch of `rows` rows.
    pub fn batch_out(&self, rows: usize) {
        self.rows_out.fetch_add(rows as u64, Ordering::Relaxed);
        self.batches_out.fetch_add(1, Ordering::Relaxed);
        self.facade.rows_out.increment(rows as u64);
        self.facade.batches_out.increment(1);
    }

    /// The subtask's input watermark advanced.
    pub fn watermark(&self, wm: i64) {
        self.watermark.fetch_max(wm, Ordering::Relaxed);
        self.facade.watermark.set(wm as f64);
    }

    /// The subtask waited this long for room in an output channel.
    pub fn blocked(&self, waited: Duration) {
        let ns = waited.as_nanos() as u64;
        let total = self.blocked_ns.fetch_add(ns, Ordering::Relaxed) + ns;
        self.facade.blocked.absolute(total / 1_000_000);
    }

    pub fn snapshot(&self) -> OperatorSnapshot {
        let wm = self.watermark.load(Ordering::Relaxed);
        OperatorSnapshot {
            operator: self.operator.clone(),
            subtask: self.subtask,
            rows_in: self.rows_in.load(Ordering::Relaxed),
            batches_in: self.batches_in.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            batches_out: self.batches_out.load(Ordering::Relaxed),
            late_rows: self.late_rows.load(Ordering::Relaxed),
            blocked: Duration::from_nanos(self.blocked_ns.load(Ordering::Relaxed)),
            watermark: (wm > i64::MIN).then_some(wm),
            source_lag: *self.source_lag.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}
