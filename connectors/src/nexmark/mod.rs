//! The Nexmark source: generates person, auction or bid rows straight into
//! Arrow builders (no per-row objects for bids), deterministically for a
//! given seed. See [`generator`] for the event model.

mod count_char;
mod events;
pub mod generator;

pub use count_char::{count_char, functions};

use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_operators::source::{Poll, SourceProvider, SourceReader, Split, SplitEnumerator};

use datafusion::arrow::array::{
    ArrayRef, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::OperatorError;

use crate::options::{OptionDecl, OptionType};
use crate::registry::{Connector, ConnectorContext};
use crate::{ConnectorError, Options, Result, conform};
use generator::{Auction, Bid, EventType, GeneratorConfig, Person, auction, bid, person};

/// A validated `connector = 'nexmark'` source.
#[derive(Debug, Clone)]
pub struct NexmarkConfig {
    pub generator: GeneratorConfig,
    pub table: EventType,
    /// Number of events (of all three types) to generate; `None` = unbounded.
    pub events: Option<u64>,
    pub batch_size: usize,
    /// When false, events are emitted no faster than their event time.
    pub max_emit_speed: bool,
    /// Indices into the table's native columns, in the order of `schema`.
    columns: Vec<usize>,
    /// Flink's one-table schema (`event_type`, `person`, `auction`,
    /// `bid`), when declared: every event, of every kind.
    one_table: Option<Arc<events::OneTable>>,
    pub schema: SchemaRef,
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// The native columns of each table, named as in Flink's Nexmark DDL
/// (matched case-insensitively, ignoring underscores: `dateTime` and
/// `date_time` are the same column).
pub fn native_schema(table: EventType) -> Schema {
    use DataType::{Int64, Utf8};
    let f = |n: &str, t: DataType| Field::new(n, t, false);
    Schema::new(match table {
        EventType::Person => vec![
            f("id", Int64),
            f("name", Utf8),
            f("email_address", Utf8),
            f("credit_card", Utf8),
            f("city", Utf8),
            f("state", Utf8),
            f("date_time", ts()),
            f("extra", Utf8),
        ],
        EventType::Auction => vec![
            f("id", Int64),
            f("item_name", Utf8),
            f("description", Utf8),
            f("initial_bid", Int64),
            f("reserve", Int64),
            f("date_time", ts()),
            f("expires", ts()),
            f("seller", Int64),
            f("category", Int64),
            f("extra", Utf8),
        ],
        EventType::Bid => vec![
            f("auction", Int64),
            f("bidder", Int64),
            f("price", Int64),
            f("channel", Utf8),
            f("url", Utf8),
            f("date_time", ts()),
            f("extra", Utf8),
        ],
    })
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

impl NexmarkConfig {
    pub fn parse(options: &Options, schema: &SchemaRef) -> Result<Self> {
        let table = match options.get("table").unwrap_or("bid") {
            "person" | "persons" => EventType::Person,
            "auction" | "auctions" => EventType::Auction,
            "bid" | "bids" => EventType::Bid,
            other => {
                return Err(ConnectorError::Option {
                    option: "table".into(),
                    message: format!(
                        "unknown nexmark table '{other}' (expected 'person', 'auction' or 'bid')"
                    ),
                });
            }
        };
        let defaults = GeneratorConfig::default();
        let rate = options.number("first-event.rate")?.unwrap_or(10_000_000.0);
        if rate.is_nan() || rate <= 0.0 {
            return Err(ConnectorError::Option {
                option: "first-event.rate".into(),
                message: "option 'first-event.rate' must be positive".into(),
            });
        }
        if let Some(next) = options.number("next-event.rate")?
            && next != rate
        {
            return Err(ConnectorError::Option {
                option: "next-event.rate".into(),
                message: "a 'next-event.rate' other than 'first-event.rate' (a changing rate) is not supported yet".into(),
            });
        }
        let defaults_p = generator::Proportions::default();
        let proportion = |key: &str, default: u64| -> Result<u64> {
            match options.count(key)?.unwrap_or(default) {
                0 => Err(ConnectorError::Option {
                    option: key.into(),
                    message: format!("'{key}' must be at least 1"),
                }),
                n => Ok(n),
            }
        };
        let proportions = generator::Proportions {
            person: proportion("person.proportion", defaults_p.person)?,
            auction: proportion("auction.proportion", defaults_p.auction)?,
            bid: proportion("bid.proportion", defaults_p.bid)?,
        };
        let int = |key: &str, default: i64| -> Result<i64> {
            match options.get(key) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| ConnectorError::Option {
                    option: key.into(),
                    message: format!("option '{key}' has an invalid value '{v}'"),
                }),
            }
        };
        let generator = GeneratorConfig {
            first_event_rate: rate,
            base_time: int("base-time", defaults.base_time)?,
            seed: options.count("seed")?.unwrap_or(defaults.seed),
            flink_compat: options.bool("flink-compat")?.unwrap_or(false),
            proportions,
        };
        let events = options.count("events.num")?.unwrap_or(100_000_000);
        let batch_size = options.count("batch.size")?.unwrap_or(8192) as usize;
        let max_emit_speed = options.bool("max-emit-speed")?.unwrap_or(true);
        let one_table = events::OneTable::plan(schema)?.map(Arc::new);
        let native = native_schema(table);
        let mut columns = Vec::new();
        for field in schema.fields().iter().filter(|_| one_table.is_none()) {
            let wanted = normalize(field.name());
            let Some(idx) = native
                .fields()
                .iter()
                .position(|f| normalize(f.name()) == wanted)
            else {
                let names: Vec<_> = native.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(ConnectorError::Config(format!(
                    "nexmark table '{}' has no column '{}' (it has: {})",
                    format!("{table:?}").to_lowercase(),
                    field.name(),
                    names.join(", ")
                )));
            };
            columns.push(idx);
        }
        Ok(Self {
            generator,
            table,
            events: (events > 0).then_some(events),
            batch_size: batch_size.max(1),
            max_emit_speed,
            columns,
            one_table,
            schema: schema.clone(),
        })
    }

    /// A config for tests and benchmarks: every native column of `table`.
    pub fn all_columns(table: EventType, events: u64, generator: GeneratorConfig) -> Self {
        let native = Arc::new(native_schema(table));
        Self {
            generator,
            table,
            events: Some(events),
            batch_size: 8192,
            max_emit_speed: true,
            columns: (0..native.fields().len()).collect(),
            one_table: None,
            schema: native,
        }
    }
}

/// The `nexmark` connector: the benchmark's generator as a source.
#[derive(Debug)]
pub struct NexmarkConnector;

impl Connector for NexmarkConnector {
    fn name(&self) -> &'static str {
        "nexmark"
    }

    fn help(&self) -> &'static str {
        "the Nexmark benchmark's auction events (person, auction, bid), generated deterministically; one split"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::optional(
                "table",
                OptionType::OneOf(&["bid", "auction", "person", "bids", "auctions", "persons"]),
                "bid",
                "which events' rows the source has",
            )
            .with_aliases(&["event.type"]),
            OptionDecl::optional(
                "events.num",
                OptionType::Count,
                "100000000",
                "events of all three kinds to generate (0: unbounded)",
            ),
            OptionDecl::optional(
                "first-event.rate",
                OptionType::Number,
                "10000000",
                "events per second of event time",
            )
            .with_aliases(&["event.rate"]),
            OptionDecl::unset(
                "next-event.rate",
                OptionType::Number,
                "Flink's rate after the first: only equal to 'first-event.rate' (a constant rate) yet",
            ),
            OptionDecl::optional(
                "person.proportion",
                OptionType::Count,
                "1",
                "persons in each round of person + auction + bid events",
            ),
            OptionDecl::optional(
                "auction.proportion",
                OptionType::Count,
                "3",
                "auctions in each round of events",
            ),
            OptionDecl::optional(
                "bid.proportion",
                OptionType::Count,
                "46",
                "bids in each round of events",
            ),
            OptionDecl::optional("seed", OptionType::Count, "0", "the generator's seed"),
            OptionDecl::unset(
                "base-time",
                OptionType::String,
                "the first event's time, in ms since the epoch (default: Flink's 2015-07-15)",
            ),
            OptionDecl::optional(
                "flink-compat",
                OptionType::Bool,
                "false",
                "generate as Flink's nexmark generator does (its prices and names)",
            ),
            OptionDecl::optional(
                "max-emit-speed",
                OptionType::Bool,
                "true",
                "emit as fast as possible; false paces events by their event time",
            ),
            OptionDecl::optional("batch.size", OptionType::Count, "8192", "rows per batch"),
        ]
    }

    fn is_source(&self) -> bool {
        true
    }

    fn source(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SourceProvider>> {
        Ok(Arc::new(NexmarkConfig::parse(ctx.options, ctx.schema)?))
    }
}

/// The one split of the generator: its stream does not depend on
/// parallelism.
const SPLIT: &str = "nexmark";

impl SourceProvider for NexmarkConfig {
    fn enumerator(&self) -> eddy_operators::Result<Box<dyn SplitEnumerator>> {
        Ok(Box::new(OneSplit(self.events)))
    }

    fn reader(&self) -> eddy_operators::Result<Box<dyn SourceReader>> {
        Ok(Box::new(NexmarkReader {
            source: NexmarkSource::new(self.clone()),
            split: None,
            ahead: None,
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

/// Generates the configured table's rows, `batch_size` at a time.
#[derive(Debug)]
pub struct NexmarkSource {
    config: NexmarkConfig,
    next: u64,
    native: SchemaRef,
    started: Option<Instant>,
    /// Event time already covered when the source resumed at an offset
    /// (ms since `base_time`): pacing goes on from there.
    resumed_ms: i64,
}

/// Reads the generator's one split; when paced, a batch generated ahead of
/// its time waits in `ahead` (the split's position stays before it).
struct NexmarkReader {
    source: NexmarkSource,
    split: Option<usize>,
    ahead: Option<Ahead>,
}

struct Ahead {
    batch: RecordBatch,
    due: Instant,
    /// The event index before the batch.
    from: u64,
}

impl SourceReader for NexmarkReader {
    fn name(&self) -> String {
        self.source.name()
    }

    fn add_split(&mut self, split: usize, assigned: Split) -> eddy_operators::Result<()> {
        if !assigned.position.is_empty() {
            self.source.seek(&assigned.position)?;
        }
        self.split = Some(split);
        Ok(())
    }

    fn poll(&mut self) -> eddy_operators::Result<Poll> {
        let Some(split) = self.split else {
            return Ok(Poll::Pending);
        };
        if let Some(ahead) = self.ahead.take() {
            if Instant::now() < ahead.due {
                self.ahead = Some(ahead);
                return Ok(Poll::Pending);
            }
            return Ok(Poll::Batch(split, ahead.batch));
        }
        let from = self.source.next;
        match self
            .source
            .generate_batch()
            .map_err(|e| OperatorError::Connector(format!("{}: {e}", self.source.name())))?
        {
            None => {
                self.split = None;
                Ok(Poll::Finished(split))
            }
            Some((batch, None)) => Ok(Poll::Batch(split, batch)),
            Some((batch, Some(due))) => {
                self.ahead = Some(Ahead { batch, due, from });
                Ok(Poll::Pending)
            }
        }
    }

    fn wait(&mut self, timeout: Duration) {
        let wait = match &self.ahead {
            Some(a) => a.due.saturating_duration_since(Instant::now()).min(timeout),
            None => timeout,
        };
        std::thread::sleep(wait);
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        let at = self.ahead.as_ref().map_or(self.source.next, |a| a.from);
        self.split
            .map(|s| (s, at.to_le_bytes().to_vec()))
            .into_iter()
            .collect()
    }

    fn progress(&self) -> u64 {
        self.source.next
    }
}

/// One generated event.
pub(crate) enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

impl Event {
    /// The event numbered `number` (id `id`, at time `t`), of kind `kind`.
    fn new(cfg: &GeneratorConfig, kind: EventType, number: u64, id: u64, t: i64) -> Self {
        match kind {
            EventType::Person => Event::Person(person(cfg, id, t)),
            EventType::Auction => Event::Auction(auction(cfg, number, id, t)),
            EventType::Bid => Event::Bid(bid(cfg, id, t)),
        }
    }

    /// Appends its native column `i` (see [`native_schema`]) to `col`.
    fn append(&self, col: &mut Col, i: usize) {
        match self {
            Event::Bid(b) => match i {
                0 => col.int(b.auction),
                1 => col.int(b.bidder),
                2 => col.int(b.price),
                3 => col.str(b.channel),
                4 => col.str(b.url),
                5 => col.ts(b.date_time),
                _ => col.str(b.extra),
            },
            Event::Auction(a) => match i {
                0 => col.int(a.id),
                1 => col.str(&a.item_name),
                2 => col.str(&a.description),
                3 => col.int(a.initial_bid),
                4 => col.int(a.reserve),
                5 => col.ts(a.date_time),
                6 => col.ts(a.expires),
                7 => col.int(a.seller),
                8 => col.int(a.category),
                _ => col.str(a.extra),
            },
            Event::Person(p) => match i {
                0 => col.int(p.id),
                1 => col.str(&p.name),
                2 => col.str(&p.email_address),
                3 => col.str(&p.credit_card),
                4 => col.str(p.city),
                5 => col.str(p.state),
                6 => col.ts(p.date_time),
                _ => col.str(p.extra),
            },
        }
    }
}

/// A column being built, of one of the generator's three types.
pub(crate) enum Col {
    Int(Int64Builder),
    Str(StringBuilder),
    Ts(TimestampMillisecondBuilder),
}

impl Col {
    /// A builder for `n` values of a native column's type.
    fn for_type(t: &DataType, n: usize) -> Self {
        match t {
            DataType::Int64 => Col::Int(Int64Builder::with_capacity(n)),
            DataType::Utf8 => Col::Str(StringBuilder::with_capacity(n, n * 64)),
            _ => Col::Ts(TimestampMillisecondBuilder::with_capacity(n)),
        }
    }

    fn null(&mut self) {
        match self {
            Col::Int(b) => b.append_null(),
            Col::Str(b) => b.append_null(),
            Col::Ts(b) => b.append_null(),
        }
    }

    fn int(&mut self, v: i64) {
        if let Col::Int(b) = self {
            b.append_value(v)
        }
    }
    fn str(&mut self, v: &str) {
        if let Col::Str(b) = self {
            b.append_value(v)
        }
    }
    fn ts(&mut self, v: i64) {
        if let Col::Ts(b) = self {
            b.append_value(v)
        }
    }
    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Int(b) => Arc::new(b.finish()),
            Col::Str(b) => Arc::new(b.finish()),
            Col::Ts(b) => Arc::new(b.finish()),
        }
    }
}

impl NexmarkSource {
    pub fn new(config: NexmarkConfig) -> Self {
        let native = Arc::new(native_schema(config.table));
        Self {
            config,
            next: 0,
            native,
            started: None,
            resumed_ms: 0,
        }
    }

    /// Index of the next event to generate (the source's offset).
    pub fn offset(&self) -> u64 {
        self.next
    }

    fn builders(&self) -> Vec<Col> {
        let n = self.config.batch_size;
        self.config
            .columns
            .iter()
            .map(|&i| Col::for_type(self.native.field(i).data_type(), n))
            .collect()
    }

    /// Generates up to `batch_size` rows; returns the rows and the event
    /// time of the last event looked at.
    fn generate(&mut self, cols: &mut [Col]) -> (usize, i64) {
        let cfg = &self.config.generator;
        let end = self.config.events.unwrap_or(u64::MAX);
        let table = self.config.table;
        let mut rows = 0;
        let mut last_ts = 0;
        while rows < self.config.batch_size && self.next < end {
            let (number, id) = cfg.event_id(self.next);
            self.next += 1;
            if cfg.event_type(id) != table {
                continue;
            }
            let t = cfg.timestamp(number);
            last_ts = t;
            rows += 1;
            let event = Event::new(cfg, table, number, id, t);
            for (col, &i) in cols.iter_mut().zip(&self.config.columns) {
                event.append(col, i);
            }
        }
        (rows, last_ts)
    }

    /// Builds the next batch, or `None` when the configured events are
    /// done; when paced by event time, with the instant it is due if that
    /// is still to come.
    fn generate_batch(&mut self) -> Result<Option<(RecordBatch, Option<Instant>)>> {
        let (batch, last_ts) = match self.config.one_table.clone() {
            Some(one) => {
                let end = self.config.events.unwrap_or(u64::MAX);
                let cfg = &self.config.generator;
                one.generate(cfg, &mut self.next, end, self.config.batch_size)?
            }
            None => self.generate_one_kind()?,
        };
        let Some(batch) = batch else {
            return Ok(None);
        };
        let mut due = None;
        if !self.config.max_emit_speed {
            let started = *self.started.get_or_insert_with(Instant::now);
            let at = started
                + Duration::from_millis(
                    (last_ts - self.config.generator.base_time - self.resumed_ms).max(0) as u64,
                );
            due = (at > Instant::now()).then_some(at);
        }
        Ok(Some((batch, due)))
    }

    /// The next batch of the configured kind's rows, if any, and the time
    /// of the last event looked at.
    fn generate_one_kind(&mut self) -> Result<(Option<RecordBatch>, i64)> {
        let mut cols = self.builders();
        let (rows, last_ts) = self.generate(&mut cols);
        if rows == 0 {
            return Ok((None, last_ts));
        }
        let fields: Vec<Field> = self
            .config
            .columns
            .iter()
            .map(|&i| self.native.field(i).clone())
            .collect();
        let columns = cols.iter_mut().map(Col::finish).collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        Ok((Some(conform(batch, &self.config.schema)?), last_ts))
    }

    /// Builds the next batch at once (no pacing), or `None` at the end.
    pub fn next_record_batch(&mut self) -> Result<Option<RecordBatch>> {
        Ok(self.generate_batch()?.map(|(b, _)| b))
    }

    fn name(&self) -> String {
        format!(
            "nexmark {:?} source at event {}",
            self.config.table, self.next
        )
        .to_lowercase()
    }

    /// Goes on from the event index a checkpoint recorded.
    fn seek(&mut self, position: &[u8]) -> eddy_operators::Result<()> {
        let bytes: [u8; 8] = position.try_into().map_err(|_| {
            OperatorError::Connector(format!("{}: bad checkpointed position", self.name()))
        })?;
        self.next = u64::from_le_bytes(bytes);
        let cfg = &self.config.generator;
        let (number, _) = cfg.event_id(self.next);
        self.resumed_ms = (cfg.timestamp(number) - cfg.base_time).max(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;
    use generator::event_type;

    fn options(pairs: &[(&str, &str)]) -> Options {
        Options::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn generates_the_declared_columns_in_order_and_type() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("dateTime", ts(), true),
            Field::new("price", DataType::Float64, true),
            Field::new("auction", DataType::Int64, true),
        ]));
        let opts = options(&[("events.num", "1000"), ("batch.size", "100")]);
        let cfg = NexmarkConfig::parse(&opts, &schema).unwrap();
        let mut src = NexmarkSource::new(cfg);
        let mut total = 0;
        while let Some(batch) = src.next_record_batch().unwrap() {
            assert_eq!(batch.schema().fields(), schema.fields());
            total += batch.num_rows();
        }
        // Ids 0..1000: 20 persons, 60 auctions, 920 bids.
        assert_eq!(total, 920);
        assert_eq!(src.offset(), 1000);
    }

    #[test]
    fn rows_equal_the_generator_functions() {
        let cfg = NexmarkConfig::all_columns(EventType::Auction, 500, GeneratorConfig::default());
        let gen_cfg = cfg.generator.clone();
        let batch = NexmarkSource::new(cfg)
            .next_record_batch()
            .unwrap()
            .unwrap();
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let sellers: &Int64Array = batch.column(7).as_primitive::<Int64Type>();
        let mut row = 0;
        for k in 0..500 {
            let (number, id) = gen_cfg.event_id(k);
            if event_type(id) == EventType::Auction {
                let a = auction(&gen_cfg, number, id, gen_cfg.timestamp(number));
                assert_eq!((ids.value(row), sellers.value(row)), (a.id, a.seller));
                row += 1;
            }
        }
        assert_eq!(row, batch.num_rows());
    }

    #[test]
    fn unknown_columns_and_tables_are_reported() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "prize",
            DataType::Int64,
            true,
        )]));
        let err = NexmarkConfig::parse(&options(&[]), &schema).unwrap_err();
        assert!(err.to_string().contains("has no column 'prize'"), "{err}");
        let err = NexmarkConfig::parse(&options(&[("table", "bidz")]), &schema).unwrap_err();
        assert!(
            err.to_string().contains("unknown nexmark table 'bidz'"),
            "{err}"
        );
    }
}
