//! The PostgreSQL sink: a writer per subtask, holding one database
//! transaction from the first row after a checkpoint barrier to the next
//! barrier, and (exactly-once) a committer that commits the prepared
//! transactions of complete checkpoints.
//!
//! ```text
//!  rows ──► pending (an upsert keeps each key's last change) ──► INSERT ... ON CONFLICT / DELETE, in BEGIN ...
//!  Barrier(n) ──► at-least-once: COMMIT
//!             └─► exactly-once: PREPARE TRANSACTION '<prefix>:<subtask>:<n>' ──► committable {gid}
//!  checkpoint n complete ──► Committer: COMMIT PREPARED gid (gone already: committed before)
//!  restore from n ──► Committer: COMMIT PREPARED of n's gids; each writer: the subtask's other
//!                     prepared transactions, COMMIT PREPARED up to n, ROLLBACK PREPARED after it
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::operator::OperatorContext;
use eddy_operators::sink::{Committer, Sink, SinkCommit};
use eddy_operators::updating::{OP_COLUMN, OP_DELETE, OP_UPDATE_BEFORE};
use eddy_operators::{DeliveryGuarantee, OperatorError, SinkProvider};

use super::connection::Connection;
use super::sql::{self, Literals};
use super::{DELIVERY, MAX_ROWS, TABLE, TXN_PREFIX, client_config, option_error, pg_error};
use crate::registry::ConnectorContext;
use crate::{ConnectorError, Result};

type OpResult<T> = eddy_operators::Result<T>;

/// What every writer and the committer share.
#[derive(Debug)]
struct Target {
    config: tokio_postgres::Config,
    table: String,
    /// The columns written, quoted.
    columns: Vec<String>,
    /// Where each written column is in the sink's batches.
    data: Vec<usize>,
    /// The primary key's columns, as indexes into `columns`; empty: the
    /// sink appends.
    key: Vec<usize>,
    op_column: Option<usize>,
    max_rows: usize,
    guarantee: DeliveryGuarantee,
    prefix: String,
}

/// `connector = 'postgres'` as a sink.
#[derive(Debug)]
pub struct PostgresSinkProvider {
    target: Arc<Target>,
}

impl PostgresSinkProvider {
    pub(crate) fn try_new(ctx: &ConnectorContext<'_>) -> Result<Self> {
        let options = ctx.options;
        let config = client_config(options)?;
        let table = options.require(TABLE)?.trim().to_string();
        let schema: &SchemaRef = ctx.schema;
        let op_column = schema.index_of(OP_COLUMN).ok();
        let data: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| Some(i) != op_column)
            .collect();
        if let Some(f) = data
            .iter()
            .map(|&i| schema.field(i))
            .find(|f| !sql::writable(f))
        {
            return Err(ConnectorError::Config(format!(
                "the postgres sink writes columns of scalar types; '{}' is {}",
                f.name(),
                f.data_type()
            )));
        }
        let columns: Vec<String> = data
            .iter()
            .map(|&i| sql::quote_ident(schema.field(i).name()))
            .collect();
        let key = ctx
            .primary_key
            .iter()
            .map(|k| {
                data.iter()
                    .position(|&i| schema.field(i).name() == k)
                    .ok_or_else(|| {
                        ConnectorError::Config(format!(
                            "the primary key column '{k}' is not written"
                        ))
                    })
            })
            .collect::<Result<Vec<usize>>>()?;
        if op_column.is_some() && key.is_empty() {
            return Err(ConnectorError::Config(format!(
                "this query updates rows it wrote, and '{table}' has no key to update them by: declare PRIMARY KEY (...) NOT ENFORCED on the sink so that they are upserted"
            )));
        }
        let guarantee = crate::registry::Connector::guarantee(&super::PostgresConnector, options);
        let prefix = match options.get(TXN_PREFIX) {
            Some(p) if p.contains(':') => {
                return Err(option_error(TXN_PREFIX, "the prefix cannot hold ':'"));
            }
            Some(p) => p.to_string(),
            None => format!("eddy-{}", table.replace(':', "-")),
        };
        let max_rows = options.count(MAX_ROWS)?.unwrap_or(1_000).max(1) as usize;
        Ok(Self {
            target: Arc::new(Target {
                config,
                table,
                columns,
                data,
                key,
                op_column,
                max_rows,
                guarantee,
                prefix,
            }),
        })
    }
}

impl SinkProvider for PostgresSinkProvider {
    fn writer(&self) -> OpResult<Box<dyn Sink>> {
        Ok(Box::new(PostgresWriter {
            target: self.target.clone(),
            connection: None,
            subtask: 0,
            parallelism: 1,
            in_transaction: false,
            appends: Vec::new(),
            changes: HashMap::new(),
        }))
    }

    fn committer(&self) -> Option<Arc<dyn Committer>> {
        (self.target.guarantee == DeliveryGuarantee::ExactlyOnce).then(|| {
            Arc::new(PostgresCommitter {
                target: self.target.clone(),
                connection: Mutex::new(None),
            }) as Arc<dyn Committer>
        })
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        self.target.guarantee
    }
}

/// A change of one key, the last in a batch of rows to write.
enum Change {
    Upsert(String),
    Delete,
}

struct PostgresWriter {
    target: Arc<Target>,
    connection: Option<Connection>,
    subtask: usize,
    parallelism: usize,
    /// A transaction is open (rows were written since the last barrier).
    in_transaction: bool,
    /// Rows to append, as `('v1', ...)`.
    appends: Vec<String>,
    /// Each key's last change, by the key as `('k1', ...)`.
    changes: HashMap<String, Change>,
}

impl PostgresWriter {
    fn connection(&mut self) -> OpResult<&Connection> {
        if self.connection.is_none() {
            self.connection = Some(Connection::open(&self.target.config, &self.target.table)?);
        }
        self.connection
            .as_ref()
            .ok_or_else(|| OperatorError::Internal("postgres: no connection".into()))
    }

    /// The id of the transaction prepared at `checkpoint`.
    fn gid(&self, checkpoint: u64) -> String {
        format!("{}:{}:{checkpoint}", self.target.prefix, self.subtask)
    }

    /// Sends what is pending, in the open transaction (begun first if
    /// there is none).
    fn flush_pending(&mut self) -> OpResult<()> {
        let t = self.target.clone();
        let mut statements = Vec::new();
        for rows in self.appends.chunks(t.max_rows) {
            let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
            statements.push(sql::insert(&t.table, &t.columns, &t.key, &rows, false));
        }
        self.appends.clear();
        let changes = std::mem::take(&mut self.changes);
        let (mut upserts, mut deletes) = (Vec::new(), Vec::new());
        for (key, change) in &changes {
            match change {
                Change::Upsert(row) => upserts.push(row.as_str()),
                Change::Delete => deletes.push(key.as_str()),
            }
        }
        for keys in deletes.chunks(t.max_rows) {
            statements.push(sql::delete(&t.table, &t.columns, &t.key, keys));
        }
        for rows in upserts.chunks(t.max_rows) {
            statements.push(sql::insert(&t.table, &t.columns, &t.key, rows, true));
        }
        if statements.is_empty() {
            return Ok(());
        }
        if !self.in_transaction {
            statements.insert(0, "BEGIN".to_string());
        }
        let script = statements.join(";\n");
        self.connection()?.execute(&script)?;
        self.in_transaction = true;
        Ok(())
    }

    /// The prepared transactions of this sink on the server, as (gid,
    /// subtask, checkpoint).
    fn prepared(&mut self) -> OpResult<Vec<(String, usize, u64)>> {
        let prefix = format!("{}:", self.target.prefix);
        let gids = self
            .connection()?
            .column("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")?;
        Ok(gids
            .into_iter()
            .filter_map(|gid| {
                let rest = gid.strip_prefix(&prefix)?;
                let (subtask, checkpoint) = rest.split_once(':')?;
                let (subtask, checkpoint) = (subtask.parse().ok()?, checkpoint.parse().ok()?);
                Some((gid, subtask, checkpoint))
            })
            .collect())
    }
}

impl Sink for PostgresWriter {
    fn name(&self) -> String {
        format!("postgres {}", self.target.table)
    }

    fn open(&mut self, ctx: &OperatorContext) -> OpResult<()> {
        self.subtask = ctx.subtask;
        self.parallelism = ctx.parallelism;
        if self.target.guarantee == DeliveryGuarantee::ExactlyOnce {
            let max = self
                .connection()?
                .column("SHOW max_prepared_transactions")?;
            if max.first().is_some_and(|m| m == "0") {
                return Err(OperatorError::Connector(format!(
                    "postgres: {DELIVERY} = 'exactly-once' prepares a transaction per checkpoint, and the server allows none: set max_prepared_transactions (at least the sink's parallelism, in postgresql.conf, then restart it), or use 'at-least-once'"
                )));
            }
        }
        Ok(())
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> OpResult<()> {
        let t = self.target.clone();
        let ops = eddy_operators::updating::changelog_ops(batch, t.op_column)?;
        let literals = Literals::new(t.data.iter().map(|&i| batch.column(i)))
            .map_err(|e| OperatorError::Connector(format!("postgres: {e}")))?;
        let all: Vec<usize> = (0..t.data.len()).collect();
        for row in 0..batch.num_rows() {
            let op = ops.as_ref().map(|o| o.value(row));
            let mut text = String::new();
            if t.key.is_empty() {
                literals.tuple(row, &all, &mut text);
                self.appends.push(text);
                continue;
            }
            literals.tuple(row, &t.key, &mut text);
            // A `-U` deletes: its `+U` replaces it in the same
            // transaction, unless a filter after an aggregate dropped the
            // `+U`, and then the row must go.
            let change = match op {
                Some(OP_DELETE | OP_UPDATE_BEFORE) => Change::Delete,
                _ => {
                    let mut values = String::new();
                    literals.tuple(row, &all, &mut values);
                    Change::Upsert(values)
                }
            };
            self.changes.insert(text, change);
        }
        if self.appends.len() + self.changes.len() >= t.max_rows {
            self.flush_pending()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> OpResult<()> {
        self.flush_pending()
    }

    fn pre_commit(&mut self, checkpoint: u64, _last: bool) -> OpResult<SinkCommit> {
        self.flush_pending()?;
        if !self.in_transaction {
            return Ok(SinkCommit::default());
        }
        self.in_transaction = false;
        if self.target.guarantee != DeliveryGuarantee::ExactlyOnce {
            self.connection()?.execute("COMMIT")?;
            return Ok(SinkCommit::default());
        }
        let gid = self.gid(checkpoint);
        self.connection()?
            .execute(&format!("PREPARE TRANSACTION '{gid}'"))?;
        Ok(SinkCommit {
            position: None,
            committable: Some(serde_json::json!({ "gid": gid })),
        })
    }

    /// Exactly-once: a transaction this subtask prepared and no checkpoint
    /// up to `checkpoint` committed is committed if it is from one of them
    /// (its commit was cut short), and rolled back if it is from after
    /// it. Subtask 0 also settles those of subtasks the job no longer has.
    fn recover(&mut self, checkpoint: u64, _position: Option<&[u8]>) -> OpResult<()> {
        if self.target.guarantee != DeliveryGuarantee::ExactlyOnce {
            return Ok(());
        }
        let (subtask, parallelism) = (self.subtask, self.parallelism);
        for (gid, owner, prepared_at) in self.prepared()? {
            if owner != subtask && !(subtask == 0 && owner >= parallelism) {
                continue;
            }
            let verb = match prepared_at <= checkpoint {
                true => "COMMIT",
                false => "ROLLBACK",
            };
            tracing::info!(
                "postgres: {verb} PREPARED '{gid}' (restored from checkpoint {checkpoint})"
            );
            self.connection()?
                .execute(&format!("{verb} PREPARED '{gid}'"))?;
        }
        Ok(())
    }
}

/// Commits the transactions that complete checkpoints prepared.
#[derive(Debug)]
struct PostgresCommitter {
    target: Arc<Target>,
    connection: Mutex<Option<Connection>>,
}

impl Committer for PostgresCommitter {
    fn commit(&self, committables: &[serde_json::Value]) -> OpResult<()> {
        let mut guard = self
            .connection
            .lock()
            .map_err(|_| OperatorError::Internal("postgres: a committer panicked".into()))?;
        for committable in committables {
            let Some(gid) = committable.get("gid").and_then(|g| g.as_str()) else {
                return Err(OperatorError::Internal(format!(
                    "postgres: a committable without a transaction id: {committable}"
                )));
            };
            if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
                *guard = Some(Connection::open(&self.target.config, &self.target.table)?);
            }
            let Some(connection) = guard.as_ref() else {
                continue;
            };
            let sql = format!("COMMIT PREPARED '{}'", gid.replace('\'', "''"));
            match connection
                .runtime
                .block_on(connection.client.batch_execute(&sql))
            {
                Ok(()) => tracing::debug!("postgres: committed '{gid}'"),
                // Committed before (a commit again after a restore).
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => {}
                Err(e) => return Err(pg_error(&sql, &e)),
            }
        }
        Ok(())
    }
}
