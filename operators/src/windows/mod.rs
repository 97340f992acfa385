//! Window aggregates: tumbling, hopping and cumulating windows
//! ([`window`]), session windows ([`session`]), and what they share: late
//! rows ([`late`]), allowed lateness and early firing (`emit`), and state
//! larger than memory (`spill`).

pub(crate) mod emit;
pub mod late;
pub mod session;
pub(crate) mod spill;
pub mod window;
