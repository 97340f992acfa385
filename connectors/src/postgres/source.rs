//! A PostgreSQL table read: as a bounded source (Flink's JDBC scan) and
//! as the table of a lookup join.
//!
//! - Scan: one split, the whole table read through a cursor,
//!   `'scan.fetch-size'` rows at a time, in one transaction (a consistent
//!   snapshot). A restore before the scan finished reads it again from
//!   the start (at-least-once).
//! - Lookup (`JOIN t FOR SYSTEM_TIME AS OF s.proc_time`): the join keeps
//!   the whole table, read again every `'lookup.cache.ttl'` (Flink's
//!   full cache); a table of more than `'lookup.cache.max-rows'` rows
//!   fails the job rather than fill the memory.
//!
//! Values are read as text and cast to the declared column types (a
//! `TIMESTAMP` column is read as UTC).

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::lookup::LookupTable;
use eddy_operators::source::{Poll, SourceReader, Split, SplitEnumerator};
use eddy_operators::{OperatorError, SourceProvider};

use super::connection::Connection;
use super::sql::quote_ident;
use super::{CACHE_MAX_ROWS, CACHE_TTL, FETCH_SIZE, TABLE, client_config};
use crate::registry::ConnectorContext;
use crate::{ConnectorError, Result};

type OpResult<T> = eddy_operators::Result<T>;

/// `connector = 'postgres'` as a source.
#[derive(Debug, Clone)]
pub struct PostgresSource {
    config: tokio_postgres::Config,
    table: String,
    schema: SchemaRef,
    /// `SELECT <columns as text> FROM <table>`.
    select: String,
    fetch_size: usize,
    cache_ttl: Duration,
    cache_max_rows: usize,
}

/// A declared column as text the cast reads back: a timestamp in ISO
/// form (UTC, as the session runs), anything else as PostgreSQL spells it.
fn as_text(name: &str, ty: &DataType) -> String {
    let column = quote_ident(name);
    match ty {
        DataType::Timestamp(..) => {
            format!("to_char({column}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')")
        }
        _ => format!("{column}::text"),
    }
}

impl PostgresSource {
    pub(crate) fn try_new(ctx: &ConnectorContext<'_>) -> Result<Self> {
        let options = ctx.options;
        let table = options.require(TABLE)?.trim().to_string();
        let mut columns = Vec::new();
        for f in ctx.schema.fields() {
            let readable = !matches!(
                f.data_type(),
                DataType::Binary | DataType::LargeBinary | DataType::BinaryView
            ) && super::sql::writable(f);
            if !readable {
                return Err(ConnectorError::Config(format!(
                    "the postgres source reads columns of scalar types but BYTES; '{}' is {}",
                    f.name(),
                    f.data_type()
                )));
            }
            columns.push(as_text(f.name(), f.data_type()));
        }
        let ms = |key: &str, default: i64| -> Result<Duration> {
            Ok(Duration::from_millis(
                options.duration_ms(key)?.unwrap_or(default).max(1) as u64,
            ))
        };
        Ok(Self {
            config: client_config(options)?,
            select: format!("SELECT {} FROM {table}", columns.join(", ")),
            table,
            schema: ctx.schema.clone(),
            fetch_size: options.count(FETCH_SIZE)?.unwrap_or(8_192).max(1) as usize,
            cache_ttl: ms(CACHE_TTL, 60_000)?,
            cache_max_rows: options.count(CACHE_MAX_ROWS)?.unwrap_or(1_000_000) as usize,
        })
    }

    /// Rows of text as a batch of the declared columns.
    fn batch(&self, rows: &[Vec<Option<String>>]) -> OpResult<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let text: StringArray = rows.iter().map(|r| r[i].as_deref()).collect();
                cast(&text, f.data_type()).map_err(|e| {
                    OperatorError::Connector(format!(
                        "postgres: column '{}' of {} is not {}: {e}",
                        f.name(),
                        self.table,
                        f.data_type()
                    ))
                })
            })
            .collect::<OpResult<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl SourceProvider for PostgresSource {
    fn enumerator(&self) -> OpResult<Box<dyn SplitEnumerator>> {
        Ok(Box::new(OneTable(self.table.clone())))
    }

    fn reader(&self) -> OpResult<Box<dyn SourceReader>> {
        Ok(Box::new(ScanReader {
            source: self.clone(),
            connection: None,
            split: None,
            read: 0,
        }))
    }

    fn max_parallelism(&self) -> Option<usize> {
        Some(1)
    }

    fn lookup_table(&self) -> Option<Arc<dyn LookupTable>> {
        Some(Arc::new(self.clone()))
    }
}

struct OneTable(String);

impl SplitEnumerator for OneTable {
    fn list(&mut self) -> OpResult<Vec<Split>> {
        Ok(vec![Split {
            id: format!("postgres {}", self.0),
            position: Vec::new(),
            size: None,
        }])
    }
}

/// Reads the table through a cursor.
struct ScanReader {
    source: PostgresSource,
    /// Open, with the cursor declared in its transaction.
    connection: Option<Connection>,
    split: Option<usize>,
    read: u64,
}

impl SourceReader for ScanReader {
    fn name(&self) -> String {
        format!("postgres {}", self.source.table)
    }

    fn add_split(&mut self, split: usize, _assigned: Split) -> OpResult<()> {
        self.split = Some(split);
        Ok(())
    }

    fn poll(&mut self) -> OpResult<Poll> {
        let Some(split) = self.split else {
            return Ok(Poll::Pending);
        };
        if self.connection.is_none() {
            let c = Connection::open(&self.source.config, &self.source.table)?;
            c.execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; DECLARE eddy_scan NO SCROLL CURSOR FOR {}",
                self.source.select
            ))?;
            self.connection = Some(c);
        }
        let Some(c) = &self.connection else {
            return Ok(Poll::Pending);
        };
        let rows = c.rows(&format!("FETCH {} FROM eddy_scan", self.source.fetch_size))?;
        if rows.is_empty() {
            c.execute("COMMIT")?;
            self.connection = None;
            self.split = None;
            return Ok(Poll::Finished(split));
        }
        self.read += rows.len() as u64;
        Ok(Poll::Batch(split, self.source.batch(&rows)?))
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        // A scan cut short starts again.
        self.split.map(|s| (s, Vec::new())).into_iter().collect()
    }

    fn progress(&self) -> u64 {
        self.read
    }
}

impl LookupTable for PostgresSource {
    fn name(&self) -> String {
        format!("postgres {}", self.table)
    }

    fn load(&self) -> OpResult<Vec<RecordBatch>> {
        let c = Connection::open(&self.config, &self.table)?;
        let rows = c.rows(&format!(
            "{} LIMIT {}",
            self.select,
            self.cache_max_rows.saturating_add(1)
        ))?;
        if rows.len() > self.cache_max_rows {
            return Err(OperatorError::Connector(format!(
                "postgres: the lookup table {} has more than 'lookup.cache.max-rows' = {} rows; the join keeps it whole: raise the limit",
                self.table, self.cache_max_rows
            )));
        }
        tracing::debug!(table = %self.table, rows = rows.len(), "postgres: read the lookup table");
        Ok(vec![self.batch(&rows)?])
    }

    /// Changes every `'lookup.cache.ttl'`: the join reads the table again.
    fn version(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_millis() as u64;
        Some(now / self.cache_ttl.as_millis().max(1) as u64)
    }
}
