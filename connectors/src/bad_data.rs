//! `'bad-data'`: what a source does with a record that does not decode
//! (not JSON, a type mismatch, a missing key, an unknown schema id).
//!
//! ```text
//!   'bad-data' = 'fail'         the job fails, naming the source, the partition or
//!                               file, the offset or line, and the reason (default)
//!   'bad-data' = 'drop'         the record is skipped and counted
//!   'bad-data' = 'dead-letter'  the record goes to the sink named by
//!                               'bad-data.dead-letter-sink', as a row of
//!                               dead_letter_schema(), and is counted
//! ```
//!
//! A format's own `'json.ignore-parse-errors' = 'true'` (Flink's option)
//! is `'drop'` when `'bad-data'` is not given. A broker that is down is not
//! bad data: that is the restart strategy's business.

use std::sync::Arc;

use base64::Engine as _;
use datafusion::arrow::array::{
    ArrayRef, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::source::Rejected;

use crate::format::OnBad;
use crate::options::{OptionDecl, OptionType, Options};

pub const BAD_DATA: &str = "bad-data";
pub const DEAD_LETTER_SINK: &str = "bad-data.dead-letter-sink";

/// What a source does with a record that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadDataPolicy {
    Fail,
    Drop,
    DeadLetter,
}

impl BadDataPolicy {
    /// The policy of a source's options (`ignore_parse_errors`: its
    /// format's own option says to skip bad records).
    pub fn of(options: &Options, ignore_parse_errors: bool) -> Self {
        match options.get(BAD_DATA) {
            Some("drop") => Self::Drop,
            Some("dead-letter") => Self::DeadLetter,
            Some(_) => Self::Fail,
            None if ignore_parse_errors => Self::Drop,
            None => Self::Fail,
        }
    }

    /// What decoding does with a bad record: fail at once, or set it
    /// aside for [`BadData::reject`].
    pub fn on_bad(self) -> OnBad {
        match self {
            Self::Fail => OnBad::Fail,
            Self::Drop | Self::DeadLetter => OnBad::SetAside,
        }
    }
}

/// The options every source takes for it.
pub(crate) fn options() -> Vec<OptionDecl> {
    vec![
        OptionDecl::optional(
            BAD_DATA,
            OptionType::OneOf(&["fail", "drop", "dead-letter"]),
            "fail",
            "a record that does not decode: fail the job saying where, drop it (counted), or send it to the dead-letter sink",
        )
        .source_only(),
        OptionDecl::unset(
            DEAD_LETTER_SINK,
            OptionType::String,
            "with 'bad-data' = 'dead-letter': the declared sink that takes the bad records (any connector)",
        )
        .source_only(),
    ]
}

/// The columns of a dead-letter row: the record as it came (`_record`,
/// in `_encoding` `text` or `base64`), why it was rejected, and where it
/// was (`_partition` is a Kafka `topic-partition` or a file's path;
/// `_offset` a Kafka offset or a 1-based line).
pub fn dead_letter_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("_record", false),
        text("_encoding", false),
        text("_reason", false),
        text("_source", false),
        text("_partition", true),
        Field::new("_offset", DataType::Int64, true),
        Field::new(
            "_timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
    ]))
}

/// One bad record and where it was.
#[derive(Debug)]
pub struct BadRecordAt<'a> {
    pub bytes: &'a [u8],
    pub reason: &'a str,
    pub partition: &'a str,
    pub offset: Option<i64>,
    pub timestamp: Option<i64>,
}

/// Where a broker's message was, for a dead letter and for the error
/// that fails the job.
#[derive(Debug)]
pub struct MessageAt {
    /// The dead letter's `_partition` (a stream and entry id, a queue).
    pub partition: String,
    /// The dead letter's `_offset`, if the broker numbers messages.
    pub offset: Option<i64>,
    pub timestamp: Option<i64>,
    /// Where it was, in words (`redis stream 'orders' entry 17-0`).
    pub described: String,
}

/// Decodes a broker's messages (`records`, one each) into what a reader
/// hands over for split `split`: the rows, with the bad messages as the
/// policy says (dead letters saying where each was, by `at`), or the error
/// that names the first bad one under `'fail'`. `None`: nothing to hand
/// over.
pub fn decode_messages(
    decoder: &mut dyn crate::format::Decoder,
    bad: &BadData,
    split: usize,
    records: &crate::format::Records,
    at: impl Fn(usize) -> MessageAt,
) -> eddy_operators::Result<Option<eddy_operators::source::Poll>> {
    use eddy_operators::source::Poll;
    let decoded =
        crate::format::decode_records(decoder, records, bad.on_bad(), true).map_err(|b| {
            eddy_operators::OperatorError::Connector(format!(
                "{}: {}",
                at(b.record).described,
                b.reason
            ))
        })?;
    let places: Vec<MessageAt> = decoded.bad.iter().map(|b| at(b.record)).collect();
    let rejected = bad.reject(
        decoded
            .bad
            .iter()
            .zip(&places)
            .map(|(b, place)| BadRecordAt {
                bytes: records.get(b.record),
                reason: &b.reason,
                partition: &place.partition,
                offset: place.offset,
                timestamp: place.timestamp,
            }),
    );
    Ok(match (rejected, decoded.batch) {
        (Some(r), batch) => Some(Poll::Rejected(split, r, batch)),
        (None, Some(batch)) => Some(Poll::Batch(split, batch)),
        (None, None) => None,
    })
}

/// A reader's handling of its bad records, under its source's policy.
#[derive(Debug)]
pub struct BadData {
    policy: BadDataPolicy,
    /// The source's name, for `_source`.
    source: String,
}

impl BadData {
    pub fn new(policy: BadDataPolicy, source: &str) -> Self {
        Self {
            policy,
            source: source.to_string(),
        }
    }

    pub fn policy(&self) -> BadDataPolicy {
        self.policy
    }

    pub fn on_bad(&self) -> OnBad {
        self.policy.on_bad()
    }

    /// The records set aside, for the runtime: a count, or dead-letter
    /// rows. `None` if there were none.
    pub fn reject<'a>(
        &self,
        records: impl ExactSizeIterator<Item = BadRecordAt<'a>>,
    ) -> Option<Rejected> {
        let n = records.len();
        if n == 0 {
            return None;
        }
        if self.policy != BadDataPolicy::DeadLetter {
            tracing::debug!(source = %self.source, records = n, "bad records dropped");
            return Some(Rejected::Dropped(n as u64));
        }
        let mut record = StringBuilder::new();
        let mut encoding = StringBuilder::new();
        let mut reason = StringBuilder::new();
        let mut source = StringBuilder::new();
        let mut partition = StringBuilder::new();
        let mut offset = Int64Builder::new();
        let mut timestamp = TimestampMillisecondBuilder::new();
        for bad in records {
            match std::str::from_utf8(bad.bytes) {
                Ok(text) => {
                    record.append_value(text);
                    encoding.append_value("text");
                }
                Err(_) => {
                    record
                        .append_value(base64::engine::general_purpose::STANDARD.encode(bad.bytes));
                    encoding.append_value("base64");
                }
            }
            reason.append_value(bad.reason);
            source.append_value(&self.source);
            partition.append_value(bad.partition);
            offset.append_option(bad.offset);
            timestamp.append_option(bad.timestamp);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(record.finish()),
            Arc::new(encoding.finish()),
            Arc::new(reason.finish()),
            Arc::new(source.finish()),
            Arc::new(partition.finish()),
            Arc::new(offset.finish()),
            Arc::new(timestamp.finish()),
        ];
        match RecordBatch::try_new(dead_letter_schema(), columns) {
            Ok(batch) => Some(Rejected::DeadLetters(batch)),
            Err(e) => {
                // The columns are built to the schema above.
                tracing::error!(error = %e, "a dead-letter row does not fit its schema");
                Some(Rejected::Dropped(n as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_text_and_bytes_become_base64() {
        let bad = BadData::new(BadDataPolicy::DeadLetter, "orders");
        let records = [
            BadRecordAt {
                bytes: b"{oops",
                reason: "not JSON",
                partition: "orders-1",
                offset: Some(7),
                timestamp: Some(1000),
            },
            BadRecordAt {
                bytes: &[0xff, 0x00],
                reason: "not UTF-8",
                partition: "orders-1",
                offset: Some(8),
                timestamp: None,
            },
        ];
        let Some(Rejected::DeadLetters(batch)) = bad.reject(records.into_iter()) else {
            panic!("dead letters expected");
        };
        let text = |c: usize, r: usize| {
            datafusion::arrow::util::display::array_value_to_string(batch.column(c), r).unwrap()
        };
        assert_eq!((text(0, 0), text(1, 0)), ("{oops".into(), "text".into()));
        assert_eq!((text(0, 1), text(1, 1)), ("/wA=".into(), "base64".into()));
        assert_eq!(
            (text(3, 1), text(4, 1), text(5, 1)),
            ("orders".into(), "orders-1".into(), "8".into())
        );
        let dropped = BadData::new(BadDataPolicy::Drop, "orders");
        let one = BadRecordAt {
            bytes: b"x",
            reason: "r",
            partition: "p",
            offset: None,
            timestamp: None,
        };
        assert!(matches!(
            dropped.reject([one].into_iter()),
            Some(Rejected::Dropped(1))
        ));
    }

    #[test]
    fn ignore_parse_errors_means_drop_unless_bad_data_says_otherwise() {
        let none = Options::default();
        assert_eq!(BadDataPolicy::of(&none, false), BadDataPolicy::Fail);
        assert_eq!(BadDataPolicy::of(&none, true), BadDataPolicy::Drop);
        let dead = Options::new([(BAD_DATA.to_string(), "dead-letter".to_string())]);
        assert_eq!(BadDataPolicy::of(&dead, true), BadDataPolicy::DeadLetter);
    }
}
