//! Operators over ordered partitions: Top-N and deduplication ([`rank`]),
//! OVER aggregates ([`over`]), each key's last row ([`keep_last`], Flink's
//! ChangelogNormalize), and the partition store they share (`partitions`).

pub mod keep_last;
pub mod over;
pub(crate) mod partitions;
pub mod rank;
