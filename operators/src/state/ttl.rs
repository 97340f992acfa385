//! Idle-state retention (`SET 'table.exec.state.ttl'`), as in Flink: the
//! state of a key (a join key's rows on one side, a Top-N or OVER
//! partition, an updating aggregate's group) that has not been written for
//! the time-to-live is dropped without emitting anything. A later row of that key starts from nothing, so results are
//! no longer exact: a join misses the dropped rows, an aggregate starts its
//! group again with `+I`. That is the trade the setting makes, for state
//! that no longer grows with every key ever seen.
//!
//! The time-to-live is measured on one of two clocks
//! (`'table.exec.state.ttl.time-domain'`):
//! - processing time, Flink's only one: the wall clock. A replay at full
//!   speed then expires almost nothing that live would have expired;
//! - event time: the operator's input watermark. A key written while the
//!   watermark stood at `w` expires before the first row processed once the
//!   watermark has reached `w + ttl`, whatever the speed of the input, so a
//!   replay expires what live did (to within one watermark step: a row that
//!   arrives together with the watermark that expires its key may see the
//!   key in one run and not in another). A key written before the first
//!   watermark counts as written at it.
//!
//! Each key records when it was last written (milliseconds since the Unix
//! epoch on the chosen clock, stored with the key in checkpoints, so
//! retention continues across restarts). [`IdleKeys`] keeps one timer per key, earliest first; a timer
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
    clock: Clock,
}

#[derive(Clone)]
enum Clock {
    /// Processing time.
    Wall(TtlClock),
    /// Event time: the watermark the operator hands [`IdleKeys::advance`].
    Watermark,
}

impl std::fmt::Debug for StateTtl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateTtl")
            .field("ttl_ms", &self.ttl_ms)
            .field("event_time", &self.is_event_time())
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
            clock: Clock::Wall(clock),
        }
    }

    /// Keys idle for `ttl_ms` of event time (by the watermark) expire.
    pub fn event_time(ttl_ms: i64) -> Self {
        Self {
            ttl_ms: ttl_ms.max(1),
            clock: Clock::Watermark,
        }
    }

    /// The retention a plan asks for: `ttl_ms` (none: keys are kept for
    /// ever) on the watermark if `event_time`, else on the wall clock.
    pub fn planned(ttl_ms: Option<i64>, event_time: bool) -> Option<Self> {
        ttl_ms.map(|ms| match event_time {
            true => Self::event_time(ms),
            false => Self::new(ms),
        })
    }

    pub fn is_event_time(&self) -> bool {
        matches!(self.clock, Clock::Watermark)
    }
}

/// A key never written under a time-to-live (or restored from state
/// written without one).
pub(crate) const NEVER_WRITTEN: i64 = i64::MIN;

/// A key written before the clock was first read (for event time: before
/// the first watermark): it counts as written at that first reading.
const BEFORE_START: i64 = i64::MIN + 1;

/// When a key last written at `written` is due to expire; one written
/// before the clock was read is looked at again at its first reading.
fn due(written: i64, ttl_ms: i64) -> i64 {
    if written <= BEFORE_START {
        BEFORE_START
    } else {
        written.saturating_add(ttl_ms)
    }
}

/// When keys were last written, to find those idle for the time-to-live.
pub(crate) struct IdleKeys<K> {
    ttl: Option<StateTtl>,
    /// The clock, read once per call of [`Self::tick`].
    now: i64,
    /// The operator's input watermark (the clock of an event-time
    /// time-to-live).
    watermark: i64,
    /// `(due, key group, key)`, earliest first; at most one per live key,
    /// plus one for each time a key was dropped and created again.
    timers: BinaryHeap<Reverse<(i64, u16, K)>>,
    /// The first reading of the clock (for event time: the first
    /// watermark), when keys written before it (or restored without a
    /// time) count as written.
    started: i64,
    metrics: Option<JobMetrics>,
}

impl<K: Ord + Clone> IdleKeys<K> {
    pub fn new(ttl: Option<StateTtl>) -> Self {
        Self {
            ttl,
            now: i64::MIN,
            watermark: i64::MIN,
            timers: BinaryHeap::new(),
            started: i64::MIN,
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

    /// The operator's input watermark advanced to `watermark`: the clock
    /// of an event-time time-to-live (read at the next tick).
    pub fn advance(&mut self, watermark: i64) {
        self.watermark = self.watermark.max(watermark);
    }

    /// Reads the clock: the time of the writes until the next tick.
    pub fn tick(&mut self) {
        let Some(ttl) = &self.ttl else {
            return;
        };
        self.now = match &ttl.clock {
            Clock::Wall(clock) => clock(),
            Clock::Watermark => self.watermark,
        };
        if self.started == i64::MIN && self.now > BEFORE_START {
            self.started = self.now;
        }
    }

    /// The key whose last write `written` holds was written now; `key`
    /// makes its timer if it has none (it was never written before).
    pub fn written(&mut self, written: &mut i64, kg: u16, key: impl FnOnce() -> K) {
        let Some(ttl) = &self.ttl else {
            return;
        };
        let now = self.now.max(BEFORE_START);
        if *written == NEVER_WRITTEN {
            self.timers.push(Reverse((due(now, ttl.ttl_ms), kg, key())));
        }
        *written = now;
    }

    /// A key read back from state, last written at `written`.
    pub fn restored(&mut self, written: i64, kg: u16, key: K) {
        let Some(ttl) = &self.ttl else {
            return;
        };
        // State written without a time-to-live (or before the clock was
        // read) starts its time at the first reading.
        self.timers
            .push(Reverse((due(written, ttl.ttl_ms), kg, key)));
    }

    /// The keys idle for the time-to-live as of the last tick. `written`
    /// gives a key's last write (`None`: it is gone already; the current
    /// time keeps a key that must not expire yet).
    pub fn expired(&mut self, mut written: impl FnMut(&K) -> Option<i64>) -> Vec<(u16, K)> {
        let Some(ttl) = &self.ttl else {
            return Vec::new();
        };
        let (ttl_ms, now, started) = (ttl.ttl_ms, self.now, self.started);
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
            match written(key).map(|w| if w <= BEFORE_START { started } else { w }) {
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
