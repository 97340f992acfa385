//! Idle-state retention (`SET 'table.exec.state.ttl'`), as in Flink: the
//! state of a key (a join key's rows on one side, a Top-N or OVER
//! partition, an updating aggregate's group) that has not been written for
//! the time-to-live, in processing time, is dropped without emitting
//! anything. A later row of that key starts from nothing, so results are
//! no longer exact: a join misses the dropped rows, an aggregate starts its
//! group again with `+I`. That is the trade the setting makes, for state
//! that no longer grows with every key ever seen.
//!
//! Each key records when it was last written (milliseconds since the Unix
//! epoch, stored with the key in checkpoints, so retention continues across
//! restarts). [`IdleKeys`] keeps one timer per key, earliest first; a timer
//! that comes due for a key written since is pushed back to that write's
//! expiry, so a busy key costs one timer, not one per write.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use crate::metrics::JobMetrics;

/// Processing time in ms since the Unix epoch.
pub type TtlClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The time-to-live of idle keys, and the clock it is measured on.
#[derive(Clone)]
pub struct StateTtl {
    pub ttl_ms: i64,
    clock: TtlClock,
}

impl std::fmt::Debug for StateTtl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateTtl")
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl StateTtl {
    /// Keys idle for `ttl_ms` of wall-clock time expire.
    pub fn new(ttl_ms: i64) -> Self {
        Self::with_clock(ttl_ms, Arc::new(|| crate::metrics::unix_ms() as i64))
    }

    /// The same, on another clock (tests).
    pub fn with_clock(ttl_ms: i64, clock: TtlClock) -> Self {
        Self {
            ttl_ms: ttl_ms.max(1),
            clock,
        }
    }
}

/// A key never written under a time-to-live (or restored from state
/// written without one).
pub(crate) const NEVER_WRITTEN: i64 = i64::MIN;

/// When keys were last written, to find those idle for the time-to-live.
pub(crate) struct IdleKeys<K> {
    ttl: Option<StateTtl>,
    /// The clock, read once per call of [`Self::tick`].
    now: i64,
    /// `(due, key group, key)`, earliest first; at most one per live key,
    /// plus one for each time a key was dropped and created again.
    timers: BinaryHeap<Reverse<(i64, u16, K)>>,
    metrics: Option<JobMetrics>,
}

impl<K: Ord + Clone> IdleKeys<K> {
    pub fn new(ttl: Option<StateTtl>) -> Self {
        Self {
            ttl,
            now: 0,
            timers: BinaryHeap::new(),
            metrics: None,
        }
    }

    pub fn set_ttl(&mut self, ttl: Option<StateTtl>) {
        self.ttl = ttl;
    }

    /// Where expired keys are counted.
    pub fn set_metrics(&mut self, metrics: JobMetrics) {
        self.metrics = Some(metrics);
    }

    pub fn enabled(&self) -> bool {
        self.ttl.is_some()
    }

    /// Reads the clock: the time of the writes until the next tick.
    pub fn tick(&mut self) {
        if let Some(ttl) = &self.ttl {
            self.now = (ttl.clock)();
        }
    }

    /// The key whose last write `written` holds was written now; `key`
    /// makes its timer if it has none (it was never written before).
    pub fn written(&mut self, written: &mut i64, kg: u16, key: impl FnOnce() -> K) {
        let Some(ttl) = &self.ttl else {
            return;
        };
        if *written == NEVER_WRITTEN {
            self.timers
                .push(Reverse((self.now.saturating_add(ttl.ttl_ms), kg, key())));
        }
        *written = self.now;
    }

    /// A key read back from state, last written at `written`.
    pub fn restored(&mut self, written: i64, kg: u16, key: K) {
        let Some(ttl) = &self.ttl else {
            return;
        };
        // State written without a time-to-live starts its time now.
        let from = if written == NEVER_WRITTEN {
            (ttl.clock)()
        } else {
            written
        };
        self.timers
            .push(Reverse((from.saturating_add(ttl.ttl_ms), kg, key)));
    }

    /// The keys idle for the time-to-live as of the last tick. `written`
    /// gives a key's last write (`None`: it is gone already; the current
    /// time keeps a key that must not expire yet).
    pub fn expired(&mut self, mut written: impl FnMut(&K) -> Option<i64>) -> Vec<(u16, K)> {
        let Some(ttl) = &self.ttl else {
            return Vec::new();
        };
        let (ttl_ms, now) = (ttl.ttl_ms, self.now);
        let mut out = Vec::new();
        let mut last: Option<(i64, u16, K)> = None;
        while self.timers.peek().is_some_and(|Reverse(t)| t.0 <= now) {
            let Some(Reverse(timer)) = self.timers.pop() else {
                break;
            };
            // A key created twice has two timers, popped one after the
            // other once they agree: keep one.
            if last.as_ref() == Some(&timer) {
                continue;
            }
            let (_, kg, key) = &timer;
            match written(key) {
                None => {}
                Some(w) if w.saturating_add(ttl_ms) > now => {
                    self.timers
                        .push(Reverse((w.saturating_add(ttl_ms), *kg, key.clone())));
                }
                Some(_) => out.push((*kg, key.clone())),
            }
            last = Some(timer);
        }
        if let (Some(m), false) = (&self.metrics, out.is_empty()) {
            m.add_expired_keys(out.len() as u64);
        }
        out
    }

    /// Reads the clock, then removes from `map` the keys idle for the
    /// time-to-live and returns them (with their key group). `written`
    /// gives a value's last write; `None` keeps it (rows still waiting for
    /// the watermark) as if written now.
    pub fn drop_idle<V, S: BuildHasher>(
        &mut self,
        map: &mut HashMap<K, V, S>,
        written: impl Fn(&V) -> Option<i64>,
    ) -> Vec<(u16, K)>
    where
        K: Hash,
    {
        if !self.enabled() {
            return Vec::new();
        }
        self.tick();
        let now = self.now;
        let expired = self.expired(|key| map.get(key).map(|v| written(v).unwrap_or(now)));
        for (_, key) in &expired {
            map.remove(key);
        }
        expired
    }
}

#[cfg(test)]
mod tests;
