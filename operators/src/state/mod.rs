//! How operators keep state: by key group in the state backend
//! (`keyed_state`), rows hash-partitioned to subtasks by key group
//! ([`partition`]), and idle keys dropped after a time-to-live ([`ttl`]).

pub(crate) mod keyed_state;
pub mod partition;
pub mod ttl;
