//! Operators over ordered partitions: Top-N and deduplication ([`rank`]),
//! OVER aggregates ([`over`]), and the partition store they share
//! (`partitions`).

pub mod over;
pub(crate) mod partitions;
pub mod rank;
