//! The loop of a task with inputs: the one place that merges watermarks,
//! aligns barriers, tracks idle and ended inputs and fires processing-time
//! timers, so operators only compute.
//!
//! ```text
//!  input 0 ── Data Data Barrier(7) ·········· (held until input 1 has it too)
//!  input 1 ── Data Watermark Data Barrier(7) ─► all aligned: snapshot, Barrier(7) on
//!  watermark = min over inputs that are neither ended nor idle, forwarded when it advances
//!              (all idle: the highest of theirs, then Idle)
//! ```

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Select};

use super::chain::Chain;
use crate::checkpoint::CheckpointHandle;
use crate::message::{Message, Timestamp};
use crate::operator::Emit;
use crate::{OperatorError, Result};

/// What the loop knows of each input.
#[derive(Debug)]
struct Inputs {
    watermarks: Vec<Timestamp>,
    ended: Vec<bool>,
    /// Delivered the pending barrier: not read until every input has.
    blocked: Vec<bool>,
    idle: Vec<bool>,
    /// The watermark last handed to the chain.
    current: Timestamp,
    /// `Idle` was sent downstream and nothing since.
    idle_sent: bool,
}

impl Inputs {
    fn new(n: usize) -> Self {
        Self {
            watermarks: vec![Timestamp::MIN; n],
            ended: vec![false; n],
            blocked: vec![false; n],
            idle: vec![false; n],
            current: Timestamp::MIN,
            idle_sent: false,
        }
    }

    /// Inputs that may be read now.
    fn readable(&self) -> Vec<usize> {
        (0..self.ended.len())
            .filter(|&i| !self.ended[i] && !self.blocked[i])
            .collect()
    }

    fn aligned(&self) -> bool {
        (0..self.ended.len()).all(|i| self.ended[i] || self.blocked[i])
    }

    /// Hands the chain the minimum watermark over inputs that have neither
    /// ended nor idle, if it advanced. When every live input is idle, none
    /// will advance on its own: as in Flink, the watermark moves to the
    /// highest of theirs, and the chain's output is idle too.
    fn advance(&mut self, chain: &mut Chain) -> Result<()> {
        let live = (0..self.ended.len()).filter(|&i| !self.ended[i]);
        if live.clone().count() > 0 && live.clone().all(|i| self.idle[i]) {
            let highest = live.map(|i| self.watermarks[i]).max();
            if let Some(wm) = highest.filter(|&wm| wm > self.current) {
                self.current = wm;
                chain.push(0, Emit::Watermark(wm))?;
            }
            if !self.idle_sent {
                self.idle_sent = true;
                chain.push(0, Emit::Idle)?;
            }
            return Ok(());
        }
        // Ended inputs no longer hold the others back. When every input
        // has ended the watermark stays where it is: a bounded source sends
        // `MAX_WATERMARK` itself before ending, while a stopped job must
        // not fire windows that the data did not complete.
        let Some(min) = live
            .filter(|&i| !self.idle[i])
            .map(|i| self.watermarks[i])
            .min()
        else {
            return Ok(());
        };
        if min > self.current {
            self.current = min;
            self.idle_sent = false;
            chain.push(0, Emit::Watermark(min))?;
        }
        Ok(())
    }

    /// Input `i` sent rows or a watermark: it is no longer idle.
    fn active(&mut self, i: usize) {
        self.idle[i] = false;
        self.idle_sent = false;
    }
}

/// Runs a task over its input channels until every input ended. Each
/// channel comes with the index of the input it belongs to (a join's
/// side), which its rows are handed to the first operator with.
pub fn run_task(
    inputs: Vec<(usize, Receiver<Message>)>,
    chain: &mut Chain,
    handle: &CheckpointHandle,
) -> Result<()> {
    let (sides, receivers): (Vec<usize>, Vec<Receiver<Message>>) = inputs.into_iter().unzip();
    let mut state = Inputs::new(receivers.len());
    let mut pending_barrier: Option<u64> = None;
    // When the first input delivered the pending barrier.
    let mut aligning_since = Instant::now();
    loop {
        let readable = state.readable();
        if readable.is_empty() {
            break;
        }
        let Some((idx, msg)) = receive(&receivers, &readable, chain.next_timer())? else {
            chain.fire_timers()?;
            continue;
        };
        match msg {
            Message::Data(batch) => {
                state.active(idx);
                chain.push_input(sides[idx], batch)?;
            }
            Message::Watermark(wm) => {
                state.active(idx);
                state.watermarks[idx] = state.watermarks[idx].max(wm);
                state.advance(chain)?;
            }
            Message::Idle => {
                state.idle[idx] = true;
                state.advance(chain)?;
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
                state.blocked[idx] = true;
            }
            Message::EndOfStream => {
                state.ended[idx] = true;
                state.advance(chain)?;
            }
        }
        if let Some(id) = pending_barrier
            && state.aligned()
        {
            let alignment = aligning_since.elapsed();
            chain.checkpoint(id)?;
            handle.ack(id, alignment);
            state.blocked.fill(false);
            pending_barrier = None;
        }
        if state.ended.iter().all(|&e| e) {
            break;
        }
        chain.fire_timers()?;
    }
    chain.close()
}

/// The next message of one of the `live` inputs, waiting until `deadline`
/// at most (`None`: the deadline passed first).
fn receive(
    inputs: &[Receiver<Message>],
    live: &[usize],
    deadline: Option<Instant>,
) -> Result<Option<(usize, Message)>> {
    if let [idx] = live {
        let got = match deadline {
            Some(d) => inputs[*idx].recv_deadline(d),
            None => inputs[*idx]
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        return match got {
            Ok(m) => Ok(Some((*idx, m))),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(OperatorError::Disconnected),
        };
    }
    let mut select = Select::new();
    for &i in live {
        select.recv(&inputs[i]);
    }
    let op = match deadline {
        Some(d) => match select.select_deadline(d) {
            Ok(op) => op,
            Err(_) => return Ok(None),
        },
        None => select.select(),
    };
    let idx = live[op.index()];
    op.recv(&inputs[idx])
        .map(|m| Some((idx, m)))
        .map_err(|_| OperatorError::Disconnected)
}
