//! Job-wide counters, cheap to update from any task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
