//! `connector = 'datagen'` (Flink's): rows of random or sequential values,
//! per column:
//!
//! - `'fields.<col>.kind' = 'random'` (the default): numbers uniform in
//!   `['fields.<col>.min', 'fields.<col>.max']`, strings of
//!   `'fields.<col>.length'` letters and digits, booleans, and timestamps
//!   up to `'fields.<col>.max-past'` before the wall clock;
//! - `'fields.<col>.kind' = 'sequence'`: `start`, `start + 1`, ... `end`, once
//!   each; the source ends with its shortest sequence.
//!
//! `'number-of-rows'` bounds the source, `'rows-per-second'` paces it.
//! Row `i`'s values depend only on `'seed'`, `i` and the column (the
//! timestamps also on the clock), so a restored job goes on with the same
//! rows, and two runs with one seed generate the same table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::source::{Poll, Split, SplitEnumerator};
use eddy_operators::{OperatorError, SourceProvider, SourceReader};

use crate::nexmark::generator::Rng;
use crate::options::{OptionDecl, OptionType};
use crate::registry::{Connector, ConnectorContext};
use crate::{ConnectorError, Options, Result, conform, option_error};

#[derive(Debug)]
pub struct DatagenConnector;

impl Connector for DatagenConnector {
    fn name(&self) -> &'static str {
        "datagen"
    }

    fn help(&self) -> &'static str {
        "random or sequential values per column (Flink's datagen), deterministic for a seed; one split"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::optional(
                "rows-per-second",
                OptionType::Number,
                "10000",
                "rows generated per second of wall-clock time",
            ),
            OptionDecl::unset(
                "number-of-rows",
                OptionType::Count,
                "rows to generate, then end (default: unbounded, or the shortest sequence)",
            ),
            OptionDecl::optional("seed", OptionType::Count, "0", "the generator's seed"),
            OptionDecl::optional(
                "fields.#.kind",
                OptionType::OneOf(&["random", "sequence"]),
                "random",
                "how column # is generated",
            ),
            OptionDecl::unset(
                "fields.#.min",
                OptionType::Number,
                "a random number's least value",
            ),
            OptionDecl::unset(
                "fields.#.max",
                OptionType::Number,
                "a random number's greatest value",
            ),
            OptionDecl::unset(
                "fields.#.max-past",
                OptionType::Duration,
                "a random timestamp is at most this long before now (default 0)",
            ),
            OptionDecl::unset(
                "fields.#.length",
                OptionType::Count,
                "a random string's length (default 100)",
            ),
            OptionDecl::unset(
                "fields.#.start",
                OptionType::Number,
                "a sequence's first value",
            ),
            OptionDecl::unset(
                "fields.#.end",
                OptionType::Number,
                "a sequence's last value",
            ),
            OptionDecl::unset(
                "fields.#.null-rate",
                OptionType::Number,
                "the share of NULLs, from 0 to 1 (default 0)",
            ),
        ]
        .into_iter()
        .map(OptionDecl::source_only)
        .collect()
    }

    fn is_source(&self) -> bool {
        true
    }

    fn source(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SourceProvider>> {
        Ok(Arc::new(Datagen::parse(ctx.options, ctx.schema)?))
    }
}

/// How one column is generated.
#[derive(Debug, Clone)]
enum Kind {
    Sequence {
        start: i64,
        end: i64,
    },
    Random {
        min: f64,
        max: f64,
        length: usize,
        max_past_ms: i64,
    },
}

#[derive(Debug, Clone)]
struct ColumnGen {
    kind: Kind,
    null_rate: f64,
    /// The type values are built in before the cast to the declared one.
    native: DataType,
}

/// A validated datagen source.
#[derive(Debug, Clone)]
struct Datagen {
    columns: Vec<ColumnGen>,
    rows: Option<u64>,
    rows_per_second: f64,
    seed: u64,
    schema: SchemaRef,
}

impl Datagen {
    fn parse(options: &Options, schema: &SchemaRef) -> Result<Self> {
        for (key, _) in options.iter() {
            let Some(column) = key
                .strip_prefix("fields.")
                .and_then(|k| k.split('.').next())
            else {
                continue;
            };
            if schema.index_of(column).is_err() {
                return Err(option_error(
                    key,
                    format!("'{key}' names no column of the table ('{column}')"),
                ));
            }
        }
        let columns = schema
            .fields()
            .iter()
            .map(|f| column_gen(options, f))
            .collect::<Result<Vec<_>>>()?;
        let shortest = columns
            .iter()
            .filter_map(|c| match c.kind {
                Kind::Sequence { start, end } => Some((end - start + 1).max(0) as u64),
                Kind::Random { .. } => None,
            })
            .min();
        let rows = match (options.count("number-of-rows")?, shortest) {
            (Some(n), Some(s)) => Some(n.min(s)),
            (n, s) => n.or(s),
        };
        let rows_per_second = options.number("rows-per-second")?.unwrap_or(10_000.0);
        if rows_per_second.is_nan() || rows_per_second <= 0.0 {
            return Err(option_error(
                "rows-per-second",
                "'rows-per-second' must be positive",
            ));
        }
        Ok(Self {
            columns,
            rows,
            rows_per_second,
            seed: options.count("seed")?.unwrap_or(0),
            schema: schema.clone(),
        })
    }

    /// Rows `from..to` as a batch of the declared schema.
    fn rows(&self, from: u64, to: u64) -> Result<RecordBatch> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let arrays = self
            .columns
            .iter()
            .enumerate()
            .map(|(c, g)| g.generate(self.seed.wrapping_add(c as u64 * 7919), from, to, now_ms))
            .collect::<Vec<ArrayRef>>();
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(f, g)| Field::new(f.name(), g.native.clone(), true))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
        conform(batch, &self.schema)
    }
}

/// The generator of column `f`, from its `fields.<name>.*` options.
fn column_gen(options: &Options, f: &Field) -> Result<ColumnGen> {
    let key = |k: &str| format!("fields.{}.{k}", f.name());
    let number = |k: &str| options.number(&key(k));
    let native = match f.data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DataType::Int64,
        DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => DataType::Float64,
        DataType::Boolean => DataType::Boolean,
        DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8,
        DataType::Timestamp(..) => DataType::Timestamp(TimeUnit::Millisecond, None),
        other => {
            return Err(ConnectorError::Config(format!(
                "datagen cannot generate column '{}' of type {other} yet",
                f.name()
            )));
        }
    };
    let kind = match options.get(&key("kind")).unwrap_or("random") {
        "sequence" => {
            let (Some(start), Some(end)) = (number("start")?, number("end")?) else {
                return Err(option_error(
                    &key("kind"),
                    format!("a sequence needs '{}' and '{}'", key("start"), key("end")),
                ));
            };
            if !matches!(native, DataType::Int64 | DataType::Float64 | DataType::Utf8) {
                return Err(option_error(
                    &key("kind"),
                    format!("column '{}' cannot be a sequence", f.name()),
                ));
            }
            Kind::Sequence {
                start: start as i64,
                end: end as i64,
            }
        }
        _ => {
            let (min, max) = (number("min")?.unwrap_or(0.0), number("max")?.unwrap_or(1e9));
            if min > max {
                return Err(option_error(
                    &key("min"),
                    format!("'{}' is greater than '{}'", key("min"), key("max")),
                ));
            }
            Kind::Random {
                min,
                max,
                length: options.count(&key("length"))?.unwrap_or(100) as usize,
                max_past_ms: options.duration_ms(&key("max-past"))?.unwrap_or(0),
            }
        }
    };
    let null_rate = number("null-rate")?.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&null_rate) {
        return Err(option_error(
            &key("null-rate"),
            format!("'{}' must be between 0 and 1", key("null-rate")),
        ));
    }
    Ok(ColumnGen {
        kind,
        null_rate,
        native,
    })
}

const ALPHANUMERIC: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

impl ColumnGen {
    /// The values of rows `from..to`; row `i`'s from a generator seeded by
    /// (`seed`, `i`) alone.
    fn generate(&self, seed: u64, from: u64, to: u64, now_ms: i64) -> ArrayRef {
        let n = (to - from) as usize;
        let mut ints = Int64Builder::with_capacity(n);
        let mut floats = Float64Builder::with_capacity(n);
        let mut bools = BooleanBuilder::with_capacity(n);
        let mut strings = StringBuilder::with_capacity(n, n * 16);
        let mut times = TimestampMillisecondBuilder::with_capacity(n);
        for i in from..to {
            let mut rng = Rng::new(seed, i);
            if self.null_rate > 0.0 && rng.next_double() < self.null_rate {
                match self.native {
                    DataType::Int64 => ints.append_null(),
                    DataType::Float64 => floats.append_null(),
                    DataType::Boolean => bools.append_null(),
                    DataType::Utf8 => strings.append_null(),
                    _ => times.append_null(),
                }
                continue;
            }
            match (&self.kind, &self.native) {
                (Kind::Sequence { start, .. }, t) => {
                    let v = start + i as i64;
                    match t {
                        DataType::Float64 => floats.append_value(v as f64),
                        DataType::Utf8 => strings.append_value(v.to_string()),
                        _ => ints.append_value(v),
                    }
                }
                (Kind::Random { min, max, .. }, DataType::Int64) => {
                    let (lo, hi) = (min.ceil() as i64, max.floor() as i64);
                    ints.append_value(lo + rng.next_long(hi - lo + 1));
                }
                (Kind::Random { min, max, .. }, DataType::Float64) => {
                    floats.append_value(min + rng.next_double() * (max - min));
                }
                (Kind::Random { .. }, DataType::Boolean) => {
                    bools.append_value(rng.next_u64() & 1 == 1);
                }
                (Kind::Random { length, .. }, DataType::Utf8) => {
                    let s: String = (0..*length)
                        .map(|_| {
                            ALPHANUMERIC[rng.next_int(ALPHANUMERIC.len() as u32) as usize] as char
                        })
                        .collect();
                    strings.append_value(s);
                }
                (Kind::Random { max_past_ms, .. }, _) => {
                    times.append_value(now_ms - rng.next_long(max_past_ms + 1));
                }
            }
        }
        match self.native {
            DataType::Int64 => Arc::new(ints.finish()),
            DataType::Float64 => Arc::new(floats.finish()),
            DataType::Boolean => Arc::new(bools.finish()),
            DataType::Utf8 => Arc::new(strings.finish()),
            _ => Arc::new(times.finish()),
        }
    }
}

const SPLIT: &str = "datagen";
/// Rows per batch at most.
const BATCH: u64 = 4096;

impl SourceProvider for Datagen {
    fn enumerator(&self) -> eddy_operators::Result<Box<dyn SplitEnumerator>> {
        Ok(Box::new(OneSplit(self.rows)))
    }

    fn reader(&self) -> eddy_operators::Result<Box<dyn SourceReader>> {
        Ok(Box::new(DatagenReader {
            source: self.clone(),
            split: None,
            next: 0,
            started: None,
            resumed_at: 0,
        }))
    }

    fn max_parallelism(&self) -> Option<usize> {
        Some(1)
    }
}

struct OneSplit(Option<u64>);

impl SplitEnumerator for OneSplit {
    fn list(&mut self) -> eddy_operators::Result<Vec<Split>> {
        Ok(vec![Split {
            id: SPLIT.into(),
            position: 0u64.to_le_bytes().to_vec(),
            size: self.0,
        }])
    }
}

/// Reads the one split: its position is the next row's index; rows are
/// released as `'rows-per-second'` allows since the reader started.
struct DatagenReader {
    source: Datagen,
    split: Option<usize>,
    next: u64,
    started: Option<Instant>,
    /// `next` when the reader started (rows before were read by an earlier
    /// run).
    resumed_at: u64,
}

impl DatagenReader {
    /// Rows the rate allows by now, counted from the start of this run.
    fn allowed(&mut self) -> u64 {
        let started = *self.started.get_or_insert_with(Instant::now);
        let elapsed = started.elapsed().as_secs_f64();
        self.resumed_at + (elapsed * self.source.rows_per_second) as u64 + 1
    }
}

impl SourceReader for DatagenReader {
    fn name(&self) -> String {
        format!("datagen at row {}", self.next)
    }

    fn add_split(&mut self, split: usize, assigned: Split) -> eddy_operators::Result<()> {
        let bytes: [u8; 8] =
            assigned.position.as_slice().try_into().map_err(|_| {
                OperatorError::Connector("datagen: bad checkpointed position".into())
            })?;
        self.next = u64::from_le_bytes(bytes);
        self.resumed_at = self.next;
        self.split = Some(split);
        Ok(())
    }

    fn poll(&mut self) -> eddy_operators::Result<Poll> {
        let Some(split) = self.split else {
            return Ok(Poll::Pending);
        };
        let end = self.source.rows.unwrap_or(u64::MAX);
        if self.next >= end {
            self.split = None;
            return Ok(Poll::Finished(split));
        }
        let to = self.allowed().min(end).min(self.next + BATCH);
        if to <= self.next {
            return Ok(Poll::Pending);
        }
        let batch = self
            .source
            .rows(self.next, to)
            .map_err(|e| OperatorError::Connector(format!("datagen: {e}")))?;
        self.next = to;
        Ok(Poll::Batch(split, batch))
    }

    fn wait(&mut self, timeout: Duration) {
        let per_row = Duration::from_secs_f64(1.0 / self.source.rows_per_second);
        std::thread::sleep(per_row.min(timeout));
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        self.split
            .map(|s| (s, self.next.to_le_bytes().to_vec()))
            .into_iter()
            .collect()
    }

    fn progress(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;
    use eddy_operators::source::read_all;

    use super::*;

    fn datagen(pairs: &[(&str, &str)], schema: SchemaRef) -> Datagen {
        let options = Options::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Datagen::parse(&options, &schema).unwrap()
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("score", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn sequences_end_the_source_and_random_values_keep_to_their_bounds() {
        let g = datagen(
            &[
                ("rows-per-second", "1000000"),
                ("fields.id.kind", "sequence"),
                ("fields.id.start", "10"),
                ("fields.id.end", "5009"),
                ("fields.score.min", "-3"),
                ("fields.score.max", "3"),
                ("fields.name.length", "5"),
            ],
            schema(),
        );
        let batches = read_all(&g).unwrap();
        let ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(ids, (10..=5009).collect::<Vec<_>>());
        for b in &batches {
            assert_eq!(b.schema(), schema());
            let scores = b
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
            assert!(scores.values().iter().all(|s| (-3..=3).contains(s)));
            let names = b.column(2).as_string::<i32>();
            assert!(names.iter().all(|n| n.unwrap().len() == 5));
        }
    }

    #[test]
    fn one_seed_makes_one_table_and_a_resumed_reader_goes_on_with_it() {
        let opts = [("number-of-rows", "100"), ("rows-per-second", "1000000")];
        let all = |seed: &str| {
            let mut o = opts.to_vec();
            o.push(("seed", seed));
            let g = datagen(&o, schema());
            let b = read_all(&g).unwrap();
            datafusion::arrow::compute::concat_batches(&schema(), &b).unwrap()
        };
        assert_eq!(all("1"), all("1"));
        assert_ne!(all("1"), all("2"));
        let whole = all("1");
        let g = datagen(&[("number-of-rows", "100"), ("seed", "1")], schema());
        let tail = g.rows(60, 100).unwrap();
        assert_eq!(tail, whole.slice(60, 40));
        let ids: &Int64Array = tail.column(0).as_primitive();
        assert_eq!(ids.len(), 40);
    }

    #[test]
    fn an_option_for_a_missing_column_is_refused() {
        let options = Options::new([("fields.nope.kind".to_string(), "random".to_string())]);
        let err = Datagen::parse(&options, &schema()).unwrap_err();
        assert!(err.to_string().contains("names no column"), "{err}");
    }
}
