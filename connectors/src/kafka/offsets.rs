//! Where a Kafka source starts and ends, as Flink's options say
//! (`scan.startup.*`, `scan.bounded.*`), and how a partition's position is
//! kept in checkpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    BOUNDED_MODE, BOUNDED_OFFSETS, BOUNDED_TIMESTAMP, STARTUP_MODE, STARTUP_OFFSETS,
    STARTUP_TIMESTAMP, option_error,
};
use crate::Result;
use crate::options::Options;

/// `scan.startup.mode`: where a fresh start reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Startup {
    Earliest,
    Latest,
    /// The consumer group's committed offsets; a partition without one
    /// follows `properties.auto.offset.reset` (an error without it, as in
    /// Flink).
    Group,
    Timestamp(i64),
    /// Partitions not listed start at the earliest offset.
    Specific(BTreeMap<i32, i64>),
}

/// `scan.bounded.mode`: where the source ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bound {
    Unbounded,
    /// The partitions' ends when the job first started.
    Latest,
    /// Before the first record after this epoch millisecond.
    Timestamp(i64),
    /// Exclusive end offsets; partitions not listed end where they ended
    /// when the job first started.
    Specific(BTreeMap<i32, i64>),
}

impl Startup {
    pub(crate) fn from_options(options: &Options) -> Result<Self> {
        Ok(match options.get(STARTUP_MODE).unwrap_or("group-offsets") {
            "earliest-offset" => Startup::Earliest,
            "latest-offset" => Startup::Latest,
            "timestamp" => Startup::Timestamp(required_millis(
                options,
                STARTUP_TIMESTAMP,
                "scan.startup.mode = 'timestamp'",
            )?),
            "specific-offsets" => Startup::Specific(specific_offsets(
                STARTUP_OFFSETS,
                options.get(STARTUP_OFFSETS),
            )?),
            _ => Startup::Group,
        })
    }
}

impl Bound {
    pub(crate) fn from_options(options: &Options) -> Result<Self> {
        Ok(match options.get(BOUNDED_MODE).unwrap_or("unbounded") {
            "latest-offset" => Bound::Latest,
            "timestamp" => Bound::Timestamp(required_millis(
                options,
                BOUNDED_TIMESTAMP,
                "scan.bounded.mode = 'timestamp'",
            )?),
            "specific-offsets" => Bound::Specific(specific_offsets(
                BOUNDED_OFFSETS,
                options.get(BOUNDED_OFFSETS),
            )?),
            _ => Bound::Unbounded,
        })
    }

    pub(crate) fn is_bounded(&self) -> bool {
        *self != Bound::Unbounded
    }
}

fn required_millis(options: &Options, option: &str, mode: &str) -> Result<i64> {
    let millis = options
        .count(option)?
        .ok_or_else(|| option_error(option, format!("{mode} needs '{option}'")))?;
    i64::try_from(millis).map_err(|_| option_error(option, "the timestamp is too large"))
}

/// Flink's `'partition:0,offset:42;partition:1,offset:300'`.
fn specific_offsets(option: &str, text: Option<&str>) -> Result<BTreeMap<i32, i64>> {
    let text = text.ok_or_else(|| {
        option_error(
            option,
            format!("this mode needs '{option}' = 'partition:0,offset:42;partition:1,offset:300'"),
        )
    })?;
    let mut offsets = BTreeMap::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            option_error(
                option,
                format!("'{entry}' is not 'partition:<n>,offset:<n>'"),
            )
        };
        let (partition, offset) = entry.split_once(',').ok_or_else(bad)?;
        let partition = partition
            .trim()
            .strip_prefix("partition:")
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|p| *p >= 0)
            .ok_or_else(bad)?;
        let offset = offset
            .trim()
            .strip_prefix("offset:")
            .and_then(|o| o.trim().parse::<i64>().ok())
            .filter(|o| *o >= 0)
            .ok_or_else(bad)?;
        offsets.insert(partition, offset);
    }
    Ok(offsets)
}

/// A partition's position as kept in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
    /// The next offset to read.
    pub next: i64,
    /// The exclusive end offset of a bounded source.
    pub end: Option<i64>,
}

impl Position {
    /// Nothing is left to read.
    pub(crate) fn at_end(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_specific_offsets_parse() -> Result<()> {
        let parsed = specific_offsets("o", Some("partition:0,offset:42; partition:3,offset:7"))?;
        assert_eq!(parsed, BTreeMap::from([(0, 42), (3, 7)]));
        let err = specific_offsets("o", Some("partition:0;offset:1")).unwrap_err();
        assert!(err.to_string().contains("'partition:0' is not"), "{err}");
        Ok(())
    }

    #[test]
    fn a_position_knows_its_end() {
        let at = |next, end| Position { next, end }.at_end();
        assert!(at(5, Some(5)));
        assert!(!at(4, Some(5)));
        assert!(!at(100, None));
    }
}
