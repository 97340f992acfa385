//! The Nexmark source: generates person, auction or bid rows straight into
//! Arrow builders (no per-row objects for bids), deterministically for a
//! given seed. See [`generator`] for the event model.

mod count_char;
pub mod generator;

pub use count_char::{count_char, functions};

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::{OperatorError, Source};

use crate::{ConnectorError, Options, Result, conform};
use generator::{EventType, GeneratorConfig, auction, bid, event_type, person};

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
        let table = match options
            .get_any(&["table", "event.type"])
            .as_deref()
            .unwrap_or("bid")
        {
            "person" | "persons" => EventType::Person,
            "auction" | "auctions" => EventType::Auction,
            "bid" | "bids" => EventType::Bid,
            other => {
                return Err(ConnectorError::Config(format!(
                    "unknown nexmark table '{other}' (expected 'person', 'auction' or 'bid')"
                )));
            }
        };
        let defaults = GeneratorConfig::default();
        let rate: f64 = options.parse(&["first-event.rate", "event.rate"], 10_000_000.0)?;
        if rate.is_nan() || rate <= 0.0 {
            return Err(ConnectorError::Config(
                "option 'first-event.rate' must be positive".into(),
            ));
        }
        let generator = GeneratorConfig {
            first_event_rate: rate,
            base_time: options.parse(&["base-time"], defaults.base_time)?,
            seed: options.parse(&["seed"], defaults.seed)?,
            flink_compat: options.parse(&["flink-compat"], false)?,
        };
        let events: u64 = options.parse(&["events.num"], 100_000_000)?;
        let batch_size: usize = options.parse(&["batch.size"], 8192)?;
        let max_emit_speed = options.parse(&["max-emit-speed"], true)?;
        let native = native_schema(table);
        let mut columns = Vec::new();
        for field in schema.fields() {
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
            schema: native,
        }
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

enum Col {
    Int(Int64Builder),
    Str(StringBuilder),
    Ts(TimestampMillisecondBuilder),
}

impl Col {
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
            .map(|&i| match self.native.field(i).data_type() {
                DataType::Int64 => Col::Int(Int64Builder::with_capacity(n)),
                DataType::Utf8 => Col::Str(StringBuilder::with_capacity(n, n * 64)),
                _ => Col::Ts(TimestampMillisecondBuilder::with_capacity(n)),
            })
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
            if event_type(id) != table {
                continue;
            }
            let t = cfg.timestamp(number);
            last_ts = t;
            rows += 1;
            match table {
                EventType::Bid => {
                    let b = bid(cfg, id, t);
                    for (col, &i) in cols.iter_mut().zip(&self.config.columns) {
                        match i {
                            0 => col.int(b.auction),
                            1 => col.int(b.bidder),
                            2 => col.int(b.price),
                            3 => col.str(b.channel),
                            4 => col.str(b.url),
                            5 => col.ts(b.date_time),
                            _ => col.str(b.extra),
                        }
                    }
                }
                EventType::Auction => {
                    let a = auction(cfg, number, id, t);
                    for (col, &i) in cols.iter_mut().zip(&self.config.columns) {
                        match i {
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
                        }
                    }
                }
                EventType::Person => {
                    let p = person(cfg, id, t);
                    for (col, &i) in cols.iter_mut().zip(&self.config.columns) {
                        match i {
                            0 => col.int(p.id),
                            1 => col.str(&p.name),
                            2 => col.str(&p.email_address),
                            3 => col.str(&p.credit_card),
                            4 => col.str(p.city),
                            5 => col.str(p.state),
                            6 => col.ts(p.date_time),
                            _ => col.str(p.extra),
                        }
                    }
                }
            }
        }
        (rows, last_ts)
    }

    /// Builds the next batch, or `None` when the configured events are done.
    pub fn next_record_batch(&mut self) -> Result<Option<RecordBatch>> {
        let mut cols = self.builders();
        let (rows, last_ts) = self.generate(&mut cols);
        if rows == 0 {
            return Ok(None);
        }
        if !self.config.max_emit_speed {
            let started = *self.started.get_or_insert_with(Instant::now);
            let due = Duration::from_millis(
                (last_ts - self.config.generator.base_time - self.resumed_ms).max(0) as u64,
            );
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let fields: Vec<Field> = self
            .config
            .columns
            .iter()
            .map(|&i| self.native.field(i).clone())
            .collect();
        let columns = cols.iter_mut().map(Col::finish).collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        Ok(Some(conform(batch, &self.config.schema)?))
    }
}

impl Source for NexmarkSource {
    fn name(&self) -> String {
        format!(
            "nexmark {:?} source at event {}",
            self.config.table, self.next
        )
        .to_lowercase()
    }

    fn progress(&self) -> Option<(u64, u64)> {
        self.config.events.map(|total| (self.next, total))
    }

    /// The index of the next event: generation is a pure function of it.
    fn position(&self) -> Option<Vec<u8>> {
        Some(self.next.to_le_bytes().to_vec())
    }

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

    fn next_batch(&mut self) -> eddy_operators::Result<Option<RecordBatch>> {
        self.next_record_batch()
            .map_err(|e| OperatorError::Connector(format!("{}: {e}", self.name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;

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
        let opts = options(&[
            ("connector", "nexmark"),
            ("events.num", "1000"),
            ("batch.size", "100"),
        ]);
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
        let err = NexmarkConfig::parse(&options(&[("connector", "nexmark")]), &schema).unwrap_err();
        assert!(err.to_string().contains("has no column 'prize'"), "{err}");
        let err = NexmarkConfig::parse(&options(&[("table", "bidz")]), &schema).unwrap_err();
        assert!(
            err.to_string().contains("unknown nexmark table 'bidz'"),
            "{err}"
        );
    }
}
