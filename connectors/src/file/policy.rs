//! When the file sink rolls a part file and commits a partition, with
//! Flink's filesystem options:
//!
//! - a part is rolled (closed, to be published with the next checkpoint)
//!   when it reaches `'sink.rolling-policy.file-size'`, or when it has
//!   been open `'sink.rolling-policy.rollover-interval'` (looked at every
//!   `'sink.rolling-policy.check-interval'`); every checkpoint also
//!   publishes the parts open at its barrier;
//! - with `'sink.partition-commit.policy.kind' = 'success-file'`, a
//!   partition gets its success file (`'sink.partition-commit.success-file.name'`)
//!   with the checkpoint after it is due: by `'partition-time'` once the
//!   watermark passes the partition's time (its values put into
//!   `'partition.time-extractor.timestamp-pattern'`, e.g. `'$dt $hm:00'`)
//!   plus `'sink.partition-commit.delay'`; by `'process-time'` (the
//!   default) once that delay has passed since the partition was first
//!   written. When the input ends, every partition written gets one.

use std::time::{Duration, Instant};

use crate::options::{OptionDecl, OptionType};
use crate::{ConnectorError, Options, Result};

const FILE_SIZE: &str = "sink.rolling-policy.file-size";
const ROLLOVER: &str = "sink.rolling-policy.rollover-interval";
const CHECK: &str = "sink.rolling-policy.check-interval";
const TRIGGER: &str = "sink.partition-commit.trigger";
const DELAY: &str = "sink.partition-commit.delay";
const POLICY: &str = "sink.partition-commit.policy.kind";
const SUCCESS_NAME: &str = "sink.partition-commit.success-file.name";
const PATTERN: &str = "partition.time-extractor.timestamp-pattern";

/// The file sink's options for rolling and committing.
pub(crate) fn options() -> Vec<OptionDecl> {
    vec![
        OptionDecl::optional(FILE_SIZE, OptionType::MemorySize, "128 mb", "roll a part file at this size"),
        OptionDecl::optional(
            ROLLOVER,
            OptionType::Duration,
            "30 min",
            "roll a part file open this long (parts are also published at every checkpoint)",
        ),
        OptionDecl::optional(
            CHECK,
            OptionType::Duration,
            "1 min",
            "how often open part files are checked against the rollover interval",
        ),
        OptionDecl::optional(
            TRIGGER,
            OptionType::OneOf(&["process-time", "partition-time"]),
            "process-time",
            "when a partition is due: a delay after it was first written, or once the watermark passes its time plus the delay",
        ),
        OptionDecl::optional(DELAY, OptionType::Duration, "0 s", "the partition commit delay"),
        OptionDecl::unset(
            POLICY,
            OptionType::String,
            "'success-file': a due partition gets a success file while the job runs (it always does when the input ends)",
        ),
        OptionDecl::optional(
            SUCCESS_NAME,
            OptionType::String,
            "_SUCCESS",
            "the name of a partition's success file",
        ),
        OptionDecl::unset(
            PATTERN,
            OptionType::String,
            "a partition's time from its values ('$dt $hm:00'); default: the first value, as yyyy-MM-dd HH:mm:ss",
        ),
    ]
    .into_iter()
    .map(OptionDecl::sink_only)
    .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    ProcessTime,
    PartitionTime,
}

/// How a partition is committed while the job runs.
#[derive(Debug, Clone)]
pub(crate) struct PartitionCommit {
    pub trigger: Trigger,
    pub delay: Duration,
    pub pattern: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub file_size: u64,
    pub rollover: Duration,
    pub check_interval: Duration,
    pub success_file: String,
    /// `None`: partitions are committed only when the input ends.
    pub commit: Option<PartitionCommit>,
}

fn duration(options: &Options, key: &str) -> Result<Duration> {
    Ok(Duration::from_millis(
        options.duration_ms(key)?.unwrap_or(0).max(0) as u64,
    ))
}

impl Policy {
    pub fn parse(options: &Options) -> Result<Self> {
        let kinds: Vec<String> = options
            .get(POLICY)
            .map(|v| {
                v.split(',')
                    .map(|k| k.trim().to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(other) = kinds.iter().find(|k| *k != "success-file") {
            return Err(ConnectorError::Option {
                option: POLICY.into(),
                message: format!(
                    "the partition commit policy '{other}' is not supported yet (only 'success-file'; there is no metastore)"
                ),
            });
        }
        let commit = (!kinds.is_empty())
            .then(|| -> Result<PartitionCommit> {
                Ok(PartitionCommit {
                    trigger: match options.get(TRIGGER) {
                        Some("partition-time") => Trigger::PartitionTime,
                        _ => Trigger::ProcessTime,
                    },
                    delay: duration(options, DELAY)?,
                    pattern: options.get(PATTERN).map(str::to_string),
                })
            })
            .transpose()?;
        Ok(Self {
            file_size: options.memory_bytes(FILE_SIZE)?.unwrap_or(128 << 20),
            rollover: duration(options, ROLLOVER)?,
            check_interval: duration(options, CHECK)?,
            success_file: options
                .get(SUCCESS_NAME)
                .unwrap_or(super::SUCCESS_FILE)
                .to_string(),
            commit,
        })
    }
}

impl PartitionCommit {
    /// Whether partition directory `dir` (`dt=2024-01-01/hm=10%3A00`),
    /// first written at `first_write`, is due at `watermark`.
    pub fn due(&self, dir: &str, first_write: Instant, watermark: i64) -> bool {
        match self.trigger {
            Trigger::ProcessTime => first_write.elapsed() >= self.delay,
            Trigger::PartitionTime => partition_time(dir, self.pattern.as_deref())
                .is_some_and(|t| t + self.delay.as_millis() as i64 <= watermark),
        }
    }
}

/// The time (ms since the epoch, UTC) of partition directory `dir`: its
/// values put into `pattern` (`$name` for each), or its first value, read
/// as `yyyy-MM-dd[ HH:mm:ss]`.
pub(crate) fn partition_time(dir: &str, pattern: Option<&str>) -> Option<i64> {
    let values: Vec<(&str, String)> = dir
        .split('/')
        .filter_map(|part| part.split_once('='))
        .map(|(name, value)| (name, unescape(value)))
        .collect();
    let text = match pattern {
        None => values.first()?.1.clone(),
        Some(p) => {
            // Longer names first, so `$dt` does not replace part of `$dtx`.
            let mut by_length = values.clone();
            by_length.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
            by_length.iter().fold(p.to_string(), |acc, (n, v)| {
                acc.replace(&format!("${n}"), v)
            })
        }
    };
    parse_timestamp(text.trim())
}

/// `%XX` escapes back to their characters.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `yyyy-MM-dd HH:mm:ss` or `yyyy-MM-dd` (Flink's default extractor's
/// forms) as ms since the epoch, UTC.
fn parse_timestamp(text: &str) -> Option<i64> {
    datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text)
        .ok()
        .map(|nanos| nanos.div_euclid(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_times_from_their_values() {
        // 2015-07-15 00:01:00 UTC.
        let t = 1_436_918_460_000;
        assert_eq!(
            partition_time("dt=2015-07-15/hm=00%3A01", Some("$dt $hm:00")),
            Some(t)
        );
        assert_eq!(partition_time("dt=2015-07-15 00%3A01%3A00", None), Some(t));
        assert_eq!(
            partition_time("dt=2015-07-15", None),
            Some(1_436_918_400_000)
        );
        assert_eq!(partition_time("dt=__DEFAULT_PARTITION__", None), None);
    }

    #[test]
    fn a_partition_is_due_by_the_watermark_or_the_clock() {
        let by_time = PartitionCommit {
            trigger: Trigger::PartitionTime,
            delay: Duration::from_secs(60),
            pattern: Some("$dt $hm:00".into()),
        };
        let t = 1_436_918_460_000;
        let dir = "dt=2015-07-15/hm=00%3A01";
        assert!(!by_time.due(dir, Instant::now(), t + 59_999));
        assert!(by_time.due(dir, Instant::now(), t + 60_000));
        let by_clock = PartitionCommit {
            trigger: Trigger::ProcessTime,
            delay: Duration::ZERO,
            pattern: None,
        };
        assert!(by_clock.due(dir, Instant::now(), i64::MIN));
    }
}
