//! A PostgreSQL client on its own current-thread runtime, for the sink's
//! writers and committer and the source's readers.

use eddy_operators::OperatorError;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::pg_error;

type OpResult<T> = eddy_operators::Result<T>;

/// A client on its own current-thread runtime: the sink's calls block on
/// it, and the connection's task runs while they do.
pub(crate) struct Connection {
    pub runtime: tokio::runtime::Runtime,
    pub client: Client,
}

impl Connection {
    pub fn open(config: &tokio_postgres::Config, table: &str) -> OpResult<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| OperatorError::Connector(format!("postgres: a runtime: {e}")))?;
        let (client, connection) = runtime
            .block_on(config.connect(NoTls))
            .map_err(|e| pg_error(&format!("cannot connect for {table}"), &e))?;
        runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("postgres: the connection ended: {e}");
            }
        });
        let this = Self { runtime, client };
        this.execute("SET TIME ZONE 'UTC'; SET standard_conforming_strings = on")?;
        Ok(this)
    }

    pub fn execute(&self, sql: &str) -> OpResult<()> {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| pg_error(&statement(sql), &e))
    }

    /// The first column of each row `sql` returns (NULLs left out).
    pub fn column(&self, sql: &str) -> OpResult<Vec<String>> {
        Ok(self
            .rows(sql)?
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect())
    }
}

/// A statement, shortened for a message.
fn statement(sql: &str) -> String {
    match sql.char_indices().nth(120) {
        Some((end, _)) => format!("{}...", &sql[..end]),
        None => sql.to_string(),
    }
}

impl Connection {
    /// The rows `sql` returns, each column's text (`None`: NULL).
    pub fn rows(&self, sql: &str) -> OpResult<Vec<Vec<Option<String>>>> {
        let messages = self
            .runtime
            .block_on(self.client.simple_query(sql))
            .map_err(|e| pg_error(&statement(sql), &e))?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}
