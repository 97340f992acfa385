//! Flink's restart strategies: what the job manager does when a job fails.
//!
//! ```sql
//! SET 'restart-strategy.type' = 'fixed-delay';          -- or 'exponential-delay', 'none'
//! SET 'restart-strategy.fixed-delay.attempts' = '3';
//! SET 'restart-strategy.fixed-delay.delay' = '10 s';
//! ```
//!
//! A failed job restarts from its last complete checkpoint, after the
//! delay; every restart is logged with its cause and counted. Eddy's
//! default is `none` (Flink's is `exponential-delay` when checkpointing is
//! on): a failure ends `eddy run` at once with the error.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a failed job is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub enum RestartStrategy {
    /// The job fails for good.
    #[default]
    None,
    /// At most `attempts` restarts, `delay_ms` apart.
    FixedDelay { attempts: u32, delay_ms: u64 },
    /// Restarts `initial_ms` apart, the wait multiplied by `multiplier`
    /// after each up to `max_ms`, with ±`jitter` of it at random, at most
    /// `attempts` times.
    ExponentialDelay {
        initial_ms: u64,
        max_ms: u64,
        multiplier: f64,
        jitter: f64,
        attempts: u32,
    },
}

impl RestartStrategy {
    /// The wait before restart number `restarts + 1`, or `None` to give up.
    /// `noise` in [0, 1) picks the jitter.
    pub fn delay(&self, restarts: u32, noise: f64) -> Option<Duration> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay_ms } => {
                (restarts < attempts).then(|| Duration::from_millis(delay_ms))
            }
            RestartStrategy::ExponentialDelay {
                initial_ms,
                max_ms,
                multiplier,
                jitter,
                attempts,
            } => {
                if restarts >= attempts {
                    return None;
                }
                let base =
                    (initial_ms as f64 * multiplier.powi(restarts as i32)).min(max_ms as f64);
                let spread = base * jitter * (2.0 * noise - 1.0);
                Some(Duration::from_millis((base + spread).max(0.0) as u64))
            }
        }
    }
}

/// The `restart-strategy.*` settings as given (Flink's defaults), turned
/// into a strategy when a job is made.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartSettings {
    pub kind: String,
    pub fixed_attempts: u32,
    pub fixed_delay_ms: u64,
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
    pub jitter: f64,
    pub attempts: u32,
}

impl Default for RestartSettings {
    fn default() -> Self {
        Self {
            kind: "none".into(),
            fixed_attempts: 1,
            fixed_delay_ms: 1_000,
            initial_ms: 1_000,
            max_ms: 60_000,
            multiplier: 1.5,
            jitter: 0.1,
            attempts: u32::MAX,
        }
    }
}

impl RestartSettings {
    /// Every key it takes, for messages.
    pub const KEYS: &'static [&'static str] = &[
        "restart-strategy.type",
        "restart-strategy.fixed-delay.attempts",
        "restart-strategy.fixed-delay.delay",
        "restart-strategy.exponential-delay.initial-backoff",
        "restart-strategy.exponential-delay.max-backoff",
        "restart-strategy.exponential-delay.backoff-multiplier",
        "restart-strategy.exponential-delay.jitter-factor",
        "restart-strategy.exponential-delay.attempts-before-reset-backoff",
    ];

    pub fn strategy(&self) -> RestartStrategy {
        match self.kind.as_str() {
            "fixed-delay" | "fixeddelay" => RestartStrategy::FixedDelay {
                attempts: self.fixed_attempts,
                delay_ms: self.fixed_delay_ms,
            },
            "exponential-delay" | "exponentialdelay" => RestartStrategy::ExponentialDelay {
                initial_ms: self.initial_ms,
                max_ms: self.max_ms,
                multiplier: self.multiplier,
                jitter: self.jitter,
                attempts: self.attempts,
            },
            _ => RestartStrategy::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_follow_the_strategy() {
        let fixed = RestartStrategy::FixedDelay {
            attempts: 2,
            delay_ms: 500,
        };
        assert_eq!(fixed.delay(0, 0.5), Some(Duration::from_millis(500)));
        assert_eq!(fixed.delay(1, 0.9), Some(Duration::from_millis(500)));
        assert_eq!(fixed.delay(2, 0.5), None);
        let exp = RestartStrategy::ExponentialDelay {
            initial_ms: 100,
            max_ms: 1_000,
            multiplier: 2.0,
            jitter: 0.1,
            attempts: 10,
        };
        // noise 0.5: no jitter.
        let waits: Vec<u64> = (0..6)
            .map(|n| exp.delay(n, 0.5).map_or(0, |d| d.as_millis() as u64))
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
        // The jitter stays within ±10%.
        assert_eq!(exp.delay(2, 0.0), Some(Duration::from_millis(360)));
        assert_eq!(exp.delay(10, 0.5), None);
        assert_eq!(RestartStrategy::None.delay(0, 0.5), None);
    }
}
