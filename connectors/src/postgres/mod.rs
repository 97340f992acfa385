//! `connector = 'postgres'` (and Flink's `'jdbc'` with a
//! `jdbc:postgresql://` URL): a PostgreSQL table as a sink, and read as a
//! bounded scan or a lookup join's table ([`source`]), over tokio-postgres,
//! with the options of Flink's JDBC connector.
//!
//! - With `PRIMARY KEY (...) NOT ENFORCED` the sink upserts: `+I`/`+U` are
//!   `INSERT ... ON CONFLICT (key) DO UPDATE`, `-D` and `-U` are a
//!   `DELETE` (a `+U` after it in the same transaction puts the row back;
//!   without one, as after a filter over an aggregate, the row is gone).
//!   Without one it appends, and a query that updates its rows is refused.
//! - [`sink`]: each subtask writes what arrives between two checkpoint
//!   barriers in one database transaction. `'sink.delivery-guarantee'` =
//!   `'at-least-once'` (the default) commits it at the barrier;
//!   `'exactly-once'` prepares it there (`PREPARE TRANSACTION`) and commits
//!   it once the checkpoint is complete (`COMMIT PREPARED`), through the
//!   commit protocol, so a crash neither loses nor repeats a row.

mod connection;
mod sink;
mod source;
mod sql;

use std::sync::Arc;

use eddy_operators::{DeliveryGuarantee, SinkProvider, SourceProvider};

pub use self::sink::PostgresSinkProvider;
pub use self::source::PostgresSource;
use crate::options::{OptionDecl, OptionType, Options};
use crate::registry::{Connector, ConnectorContext};
use crate::{Result, option_error};

pub(crate) const URL: &str = "url";
pub(crate) const TABLE: &str = "table-name";
pub(crate) const USERNAME: &str = "username";
pub(crate) const PASSWORD: &str = "password";
pub(crate) const MAX_ROWS: &str = "sink.buffer-flush.max-rows";
pub(crate) const DELIVERY: &str = "sink.delivery-guarantee";
pub(crate) const TXN_PREFIX: &str = "sink.transactional-id-prefix";
pub(crate) const FETCH_SIZE: &str = "scan.fetch-size";
pub(crate) const CACHE_MAX_ROWS: &str = "lookup.cache.max-rows";
pub(crate) const CACHE_TTL: &str = "lookup.cache.ttl";

/// `connector = 'postgres'`, also answering to Flink's `'jdbc'`.
#[derive(Debug)]
pub struct PostgresConnector;

impl Connector for PostgresConnector {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["jdbc"]
    }

    fn help(&self) -> &'static str {
        "a PostgreSQL table: a bounded scan, a lookup join's table, and a sink (appended, or upserted by its PRIMARY KEY; a transaction per checkpoint, committed at the barrier: at-least-once, or once the checkpoint is complete: exactly-once)"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::required(
                URL,
                OptionType::String,
                "postgres://user:password@host:port/database, or Flink's jdbc:postgresql://host:port/database",
            ),
            OptionDecl::required(
                TABLE,
                OptionType::String,
                "the table written (as SQL names it: orders, or shop.orders)",
            ),
            OptionDecl::unset(
                USERNAME,
                OptionType::String,
                "the user, if the URL names none",
            ),
            OptionDecl::unset(
                PASSWORD,
                OptionType::String,
                "the password, if the URL gives none",
            ),
            OptionDecl::optional(
                MAX_ROWS,
                OptionType::Count,
                "1000",
                "rows per INSERT statement (an upsert sink first keeps each key's last change of them)",
            )
            .sink_only(),
            OptionDecl::optional(
                DELIVERY,
                OptionType::OneOf(&["at-least-once", "exactly-once"]),
                "at-least-once",
                "at-least-once: a transaction per checkpoint, committed at its barrier; exactly-once: prepared at the barrier and committed once the checkpoint is complete (the server needs max_prepared_transactions > 0)",
            )
            .sink_only(),
            OptionDecl::optional(
                FETCH_SIZE,
                OptionType::Count,
                "8192",
                "rows a scan fetches from its cursor at a time",
            )
            .source_only(),
            OptionDecl::optional(
                CACHE_TTL,
                OptionType::Duration,
                "1 min",
                "a lookup join reads the whole table again this often (Flink's full cache)",
            )
            .source_only(),
            OptionDecl::optional(
                CACHE_MAX_ROWS,
                OptionType::Count,
                "1000000",
                "a lookup table with more rows fails the job (the join keeps it whole)",
            )
            .source_only(),
            OptionDecl::unset(
                TXN_PREFIX,
                OptionType::String,
                "exactly-once: the prefix of the prepared transactions' ids (default eddy-<table-name>; unique per sink across jobs on one server)",
            )
            .sink_only(),
        ]
    }

    fn is_source(&self) -> bool {
        true
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn source(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SourceProvider>> {
        Ok(Arc::new(PostgresSource::try_new(ctx)?))
    }

    fn sink(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SinkProvider>> {
        Ok(Arc::new(PostgresSinkProvider::try_new(ctx)?))
    }

    fn guarantee(&self, options: &Options) -> DeliveryGuarantee {
        match options.get(DELIVERY) {
            Some("exactly-once") => DeliveryGuarantee::ExactlyOnce,
            _ => DeliveryGuarantee::AtLeastOnce,
        }
    }
}

/// The client configuration of `url` (either spelling), with `username`
/// and `password` over what it says.
pub(crate) fn client_config(options: &Options) -> Result<tokio_postgres::Config> {
    let url = options.require(URL)?.trim();
    let mut config = parse_url(url).map_err(|message| option_error(URL, message))?;
    if let Some(user) = options.get(USERNAME) {
        config.user(user);
    }
    if let Some(password) = options.get(PASSWORD) {
        config.password(password);
    }
    if config.get_user().is_none() {
        return Err(option_error(
            URL,
            "name the user: postgres://user@host/database, or 'username'",
        ));
    }
    config.application_name("eddy");
    Ok(config)
}

/// `postgres://` and `postgresql://` URLs as libpq reads them, and JDBC's
/// `jdbc:postgresql://host:port/db?user=u&password=p`.
fn parse_url(url: &str) -> std::result::Result<tokio_postgres::Config, String> {
    let libpq = match url.strip_prefix("jdbc:") {
        Some(rest) if rest.starts_with("postgresql://") => rest,
        Some(_) => {
            return Err(format!(
                "'{url}' is not a PostgreSQL URL: Eddy's JDBC connector speaks PostgreSQL only (jdbc:postgresql://host:port/database)"
            ));
        }
        None => url,
    };
    if !(libpq.starts_with("postgres://") || libpq.starts_with("postgresql://")) {
        return Err(format!(
            "'{url}' is not a PostgreSQL URL (write postgres://user:password@host:port/database)"
        ));
    }
    libpq
        .parse::<tokio_postgres::Config>()
        .map_err(|e| format!("cannot read the URL '{url}': {e}"))
}

/// A database error in words that name the sink, with the server's
/// detail when it gave one.
pub(crate) fn pg_error(what: &str, e: &tokio_postgres::Error) -> eddy_operators::OperatorError {
    let detail = match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    };
    eddy_operators::OperatorError::Connector(format!("postgres: {what}: {detail}"))
}

#[cfg(test)]
mod tests;
