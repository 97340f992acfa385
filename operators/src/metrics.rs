//! Job-wide counters, cheap to update from any task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Wall-clock time in ms since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters of one running job. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct JobMetrics {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    rows_in: AtomicU64,
    rows_out: AtomicU64,
    late_rows: AtomicU64,
    watermark: AtomicU64,
    progress_done: AtomicU64,
    progress_total: AtomicU64,
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
    pub fn add_rows_in(&self, n: u64) {
        self.inner.rows_in.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_rows_out(&self, n: u64) {
        self.inner.rows_out.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_late_rows(&self, n: u64) {
        self.inner.late_rows.fetch_add(n, Ordering::Relaxed);
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
    }

    pub fn checkpoint_failed(&self) {
        self.inner
            .checkpoints_failed
            .fetch_add(1, Ordering::Relaxed);
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
