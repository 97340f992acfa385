//! The Postgres wire protocol (`--pg-listen`): psql, tokio-postgres,
//! psycopg and Grafana run the same statements as `POST /api/sql`, over
//! the simple and the extended (prepared) protocols.
//!
//! - Statements go through [`statements::run`]; failures carry SQLSTATEs
//!   (42601 syntax, 42P01 unknown relation, 42703 unknown column, 0A000
//!   not supported) and the position of the mistake.
//! - Ad-hoc queries over views and the catalog (`\d`) are planned by
//!   DataFusion ([`batch`]); their rows go in the text or binary format
//!   each client asks for.
//! - `SUBSCRIBE [TO] v` streams a view's rows, then every change, with
//!   the changelog op and event id first, until the client goes away.
//! - Transactions and session settings are accepted and have no effect:
//!   every statement takes effect at once.
//! - With `--auth-token` the token is the password (MD5); without one,
//!   on loopback, any user and database are let in.

pub(crate) mod catalog;
mod types;

use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use futures::{Sink, SinkExt, stream};
use pgwire::api::auth::md5pass::{Md5PasswordAuthStartupHandler, hash_md5_password};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::simplequery::Query;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::App;
use super::batch;
use super::statements::{self, Answer, Failure, FailureKind};

/// Session settings clients ask for, with the values Eddy answers.
pub(crate) const PARAMETERS: &[(&str, &str)] = &[
    ("server_version", "16.6"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("timezone", "UTC"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
    ("search_path", "public"),
    ("transaction_isolation", "read committed"),
    ("max_identifier_length", "63"),
];

/// Accepts connections until the runtime ends.
pub(crate) async fn serve(app: Arc<App>, listener: tokio::net::TcpListener) {
    let handlers = Arc::new(Handlers {
        backend: Arc::new(Backend { app: app.clone() }),
        password: app.auth_token.clone(),
        connections: Arc::new(ConnectionManager::new()),
    });
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a Postgres connection");
                continue;
            }
        };
        let handlers = handlers.clone();
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                tracing::debug!(%peer, error = %e, "a Postgres connection ended");
            }
        });
    }
}

struct Handlers {
    backend: Arc<Backend>,
    password: Option<String>,
    /// Every connection, so that a client's cancel request (psql's
    /// Ctrl-C) finds its query.
    connections: Arc<ConnectionManager>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.backend.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.backend.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let connections = self.connections.clone();
        Arc::new(match &self.password {
            None => Startup::Open(OpenStartup(connections)),
            Some(token) => Startup::Password(Box::new(
                Md5PasswordAuthStartupHandler::new(
                    Arc::new(TokenSource(token.clone())),
                    Arc::new(DefaultServerParameterProvider::default()),
                )
                .with_connection_manager(connections),
            )),
        })
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.connections.clone()))
    }
}

/// Without a token: anyone in (the listener is loopback).
struct OpenStartup(Arc<ConnectionManager>);

impl NoopStartupHandler for OpenStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.0.clone())
    }
}

/// With a token: the password is the token.
#[derive(Debug)]
struct TokenSource(String);

#[async_trait]
impl AuthSource for TokenSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let salt = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            .to_le_bytes()[..4]
            .to_vec();
        let user = login.user().unwrap_or_default();
        let hash = hash_md5_password(user, &self.0, &salt);
        Ok(Password::new(Some(salt), hash.into_bytes()))
    }
}

enum Startup {
    Open(OpenStartup),
    Password(Box<Md5PasswordAuthStartupHandler<TokenSource, DefaultServerParameterProvider>>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(s) => s.on_startup(client, message).await,
            Startup::Password(s) => s.on_startup(client, message).await,
        }
    }
}

/// Runs statements for every connection.
struct Backend {
    app: Arc<App>,
}

/// A statement prepared by a client (the extended protocol).
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    sql: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// An ad-hoc query: its columns and parameter types as planned.
    Query {
        columns: datafusion::arrow::datatypes::SchemaRef,
        parameters: Vec<Option<DataType>>,
    },
    /// A session command with no effect, answered with this tag.
    Local(Local),
    /// Anything else: run when executed, one text column if it answers
    /// with text (EXPLAIN, SHOW, DESCRIBE).
    Statement { text_column: Option<&'static str> },
}

/// Runs blocking work (the planner, the job manager, DataFusion's
/// collection) off the connection's task.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> PgWireResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))
}

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match subscribe_target(&query.query) {
            Some(target) => subscribe(&self.app, client, target, &query.query).await,
            None => self._on_query(client, query).await,
        }
    }

    async fn do_query<C>(&self, client: &mut C, sql: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(local) = Local::of(sql) {
            return Ok(vec![local.response()]);
        }
        let app = self.app.clone();
        let text = sql.to_string();
        let (answers, failure) = blocking(move || statements::run(&app, &text)).await?;
        let mut responses = Vec::new();
        for answer in answers {
            responses.push(respond(client, answer, &|_| FieldFormat::Text).await?);
        }
        if let Some(f) = failure {
            responses.push(Response::Error(Box::new(error_info(&f, sql))));
        }
        Ok(responses)
    }
}

/// An answer as the protocol's response; a submitted job is told to the
/// client as a notice.
async fn respond<C>(
    client: &mut C,
    answer: Answer,
    format: &(dyn Fn(usize) -> FieldFormat + Sync),
) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    Ok(match answer {
        Answer::Done { tag, .. } => Response::Execution(Tag::new(&tag)),
        Answer::Job { tag, id } => {
            let notice =
                ErrorInfo::new("NOTICE".into(), "00000".into(), format!("started job {id}"));
            client
                .send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                    notice,
                )))
                .await?;
            Response::Execution(Tag::new(&tag))
        }
        Answer::Explain(text) => lines("QUERY PLAN", &text),
        Answer::Info(text) => lines("info", &text),
        Answer::Rows(rows) => {
            let fields = Arc::new(types::fields(&rows.schema, format));
            let mut data = Vec::new();
            for batch in &rows.batches {
                data.extend(types::encode(batch, &fields)?.into_iter().map(Ok));
            }
            Response::Query(QueryResponse::new(fields, stream::iter(data)))
        }
    })
}

/// Text as rows of one column, a line each.
fn lines(column: &str, text: &str) -> Response {
    let field = FieldInfo::new(column.into(), None, None, Type::TEXT, FieldFormat::Text);
    let fields = Arc::new(vec![field]);
    let mut encoder = pgwire::api::results::DataRowEncoder::new(fields.clone());
    let mut rows = Vec::new();
    for line in text.lines() {
        let r = encoder
            .encode_field(&Some(line))
            .map(|_| encoder.take_row());
        rows.push(r);
    }
    Response::Query(QueryResponse::new(fields, stream::iter(rows)))
}

/// A failure as Postgres's error: its SQLSTATE, the message, the
/// position of the mistake in `sql` (1-based, in characters), and the
/// CLI's rendering with the caret as the detail.
fn error_info(f: &Failure, sql: &str) -> ErrorInfo {
    let code = match f.kind {
        FailureKind::Syntax => "42601",
        FailureKind::UnknownTable => "42P01",
        FailureKind::UnknownColumn => "42703",
        FailureKind::Invalid => "42000",
        FailureKind::NotSupported => "0A000",
        FailureKind::Forbidden => "42501",
        FailureKind::Conflict => "55000",
        FailureKind::Internal => "XX000",
    };
    let mut info = ErrorInfo::new("ERROR".into(), code.into(), f.message.clone());
    if let Some(span) = f.span
        && let Some(before) = sql.get(..span.start)
    {
        info.position = Some((before.chars().count() + 1).to_string());
    }
    info
}

fn user_error(f: &Failure, sql: &str) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(f, sql)))
}

/// Transaction and session commands: accepted, without effect.
#[derive(Debug, Clone, PartialEq)]
enum Local {
    Tag(&'static str),
    Begin,
    End(&'static str),
    /// `SHOW name` of a session setting.
    Show(String, String),
}

impl Local {
    fn of(sql: &str) -> Option<Local> {
        let words: Vec<String> = sql
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .map(|w| w.to_lowercase())
            .collect();
        let first = words.first()?.as_str();
        let second = words.get(1).map(String::as_str);
        Some(match (first, second) {
            ("begin", _) | ("start", Some("transaction")) => Local::Begin,
            ("commit" | "end", _) => Local::End("COMMIT"),
            ("rollback" | "abort", _) => Local::End("ROLLBACK"),
            ("discard", _) => Local::Tag("DISCARD ALL"),
            ("deallocate", _) => Local::Tag("DEALLOCATE"),
            ("reset", _) => Local::Tag("RESET"),
            // Postgres's `SET name = value`: a session setting. Eddy's
            // options are quoted or dotted (`SET 'key' = 'value'`,
            // `SET parallelism.default = 2`) and go to Eddy.
            ("set", Some(name)) if !name.starts_with(['\'', '`', '"']) && !name.contains('.') => {
                Local::Tag("SET")
            }
            ("show", Some(name)) if words.len() == 2 => {
                let name = name.trim_matches('"');
                let (_, value) = PARAMETERS.iter().find(|(k, _)| *k == name)?;
                Local::Show(name.to_string(), value.to_string())
            }
            _ => return None,
        })
    }

    fn response(&self) -> Response {
        match self {
            Local::Tag(tag) => Response::Execution(Tag::new(tag)),
            Local::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Local::End(tag) => Response::TransactionEnd(Tag::new(tag)),
            Local::Show(name, value) => lines(name, value),
        }
    }
}

/// How a subscription's rows go to the client.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Delivery {
    /// `SUBSCRIBE v`: data rows, for drivers that read row by row.
    Rows,
    /// `COPY (SUBSCRIBE v) TO STDOUT`: copy data, which psql prints as it
    /// comes.
    Copy,
}

/// The view of `SUBSCRIBE [TO] v` or `COPY (SUBSCRIBE [TO] v) TO
/// STDOUT`, if `sql` is one.
fn subscribe_target(sql: &str) -> Option<(String, Delivery)> {
    let sql = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = sql.split_whitespace().collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let (inner, delivery) = match lower.as_slice() {
        [copy, .., to, stdout] if copy == "copy" && to == "to" && stdout == "stdout" => {
            let inner = words[1..words.len() - 2].join(" ");
            let inner = inner
                .strip_prefix('(')?
                .strip_suffix(')')?
                .trim()
                .to_string();
            (inner, Delivery::Copy)
        }
        _ => (sql.to_string(), Delivery::Rows),
    };
    let mut words = inner.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("subscribe") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("to") {
        name = words.next()?;
    }
    let name = name.trim_matches('"').to_string();
    words.next().is_none().then_some((name, delivery))
}

/// `SUBSCRIBE v`: the view's rows as `+I`, then each change as its
/// checkpoint completes, a row at a time (each sent at once), until the
/// client goes away, falls behind, or the view is dropped. Columns: `op`,
/// `event_id`, then the view's, all as text.
async fn subscribe<C>(
    app: &App,
    client: &mut C,
    (view, delivery): (String, Delivery),
    sql: &str,
) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
    use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
    let ready = PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(TransactionStatus::Idle));
    let Some(v) = app.views.get(&view) else {
        let mut f = Failure::new(
            FailureKind::UnknownTable,
            format!("there is no materialized view '{view}'"),
        );
        f.span = sql
            .find(&view)
            .map(|at| eddy_parser::ast::Span::new(at, at + view.len()));
        let error = PgWireBackendMessage::ErrorResponse(error_info(&f, sql).into());
        client.send(error).await?;
        return client.send(ready).await.map_err(Into::into);
    };
    let mut changes = super::live::Subscription::of(v.clone(), None)
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let mut names = vec!["op".to_string(), "event_id".to_string()];
    names.extend(v.schema.fields().iter().map(|f| f.name().clone()));
    let fields: Vec<FieldInfo> = names
        .iter()
        .map(|n| FieldInfo::new(n.clone(), None, None, Type::TEXT, FieldFormat::Text))
        .collect();
    let fields = Arc::new(fields);
    let start = match delivery {
        Delivery::Rows => PgWireBackendMessage::RowDescription(
            pgwire::messages::data::RowDescription::new(fields.iter().map(Into::into).collect()),
        ),
        Delivery::Copy => PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            0,
            names.len() as i16,
            vec![0; names.len()],
        )),
    };
    client.send(start).await?;
    let mut encoder = pgwire::api::results::DataRowEncoder::new(fields.clone());
    let mut sent = 0;
    let handle = client.session_extensions().get::<Arc<ConnectionHandle>>();
    let receiver = match handle {
        Some(h) => Some(h.start_query().await),
        None => None,
    };
    // Resolves when the client cancels, never without a cancel handle.
    let mut cancelled = std::pin::pin!(async move {
        let cancelled = match receiver {
            Some(r) => r.await.is_ok(),
            None => false,
        };
        if !cancelled {
            futures::future::pending::<()>().await;
        }
    });
    loop {
        let next = std::pin::pin!(changes.next());
        let m = match futures::future::select(next, cancelled.as_mut()).await {
            futures::future::Either::Left((Some(m), _)) => m,
            futures::future::Either::Left((None, _)) => break,
            futures::future::Either::Right(((), _)) => {
                // Ctrl-C in psql: end as Postgres ends a cancelled query.
                let info = ErrorInfo::new(
                    "ERROR".into(),
                    "57014".into(),
                    "canceling statement due to user request".into(),
                );
                client
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await?;
                return client.send(ready).await.map_err(Into::into);
            }
        };
        // A reset or a close is told in its own row, without values.
        let row = m.data.get("row");
        let mut values = vec![
            Some(row.map_or(m.event.to_string(), |_| {
                json_text(m.data.get("op")).unwrap_or_default()
            })),
            m.id.clone(),
        ];
        values.extend(
            names[2..]
                .iter()
                .map(|n| json_text(row.and_then(|r| r.get(n)))),
        );
        let message = match delivery {
            Delivery::Rows => {
                for value in &values {
                    encoder.encode_field(value)?;
                }
                PgWireBackendMessage::DataRow(encoder.take_row())
            }
            Delivery::Copy => {
                PgWireBackendMessage::CopyData(CopyData::new(copy_line(&values).into()))
            }
        };
        client.send(message).await?;
        sent += 1;
    }
    let end = Tag::new("SUBSCRIBE").with_rows(sent);
    if delivery == Delivery::Copy {
        client
            .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
            .await?;
    }
    client
        .send(PgWireBackendMessage::CommandComplete(end.into()))
        .await?;
    client.send(ready).await.map_err(Into::into)
}

/// One row in COPY's text format: tab-separated, `\N` for NULL, with
/// backslash, tab and line breaks escaped.
fn copy_line(values: &[Option<String>]) -> String {
    let mut line = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            line.push('\t');
        }
        match v {
            None => line.push_str("\\N"),
            Some(v) => {
                for c in v.chars() {
                    match c {
                        '\\' => line.push_str("\\\\"),
                        '\t' => line.push_str("\\t"),
                        '\n' => line.push_str("\\n"),
                        '\r' => line.push_str("\\r"),
                        c => line.push(c),
                    }
                }
            }
        }
    }
    line.push('\n');
    line
}

/// A JSON value as Postgres's text form.
fn json_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(if *b { "t" } else { "f" }.to_string()),
        other => Some(other.to_string()),
    }
}

/// Parses and plans statements for the extended protocol.
#[derive(Debug)]
pub(crate) struct Parser {
    app: Arc<App>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let text = sql.to_string();
        if let Some(local) = Local::of(sql) {
            let kind = Kind::Local(local);
            return Ok(Some(Prepared { sql: text, kind }));
        }
        let app = self.app.clone();
        let planned = {
            let text = text.clone();
            blocking(move || batch::describe(&app, &text)).await?
        };
        let kind = match planned {
            Some(Ok(p)) => Kind::Query {
                columns: p.schema(),
                parameters: p.parameter_types(),
            },
            Some(Err(f)) => return Err(user_error(&f, sql)),
            None => {
                let statements = eddy_parser::parse_statements(sql).map_err(|e| {
                    let e = eddy_planner::SessionError::Parse(e);
                    let f = statements::Failure::new(FailureKind::Syntax, &e);
                    user_error(&f, sql)
                })?;
                let text_column = match statements.first().map(|s| &s.kind) {
                    Some(eddy_parser::ast::StatementKind::Explain(_)) => Some("QUERY PLAN"),
                    Some(
                        eddy_parser::ast::StatementKind::Show(_)
                        | eddy_parser::ast::StatementKind::Describe(_)
                        | eddy_parser::ast::StatementKind::DescribeConnector(_),
                    ) => Some("info"),
                    _ => None,
                };
                Kind::Statement { text_column }
            }
        };
        Ok(Some(Prepared { sql: text, kind }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(match &stmt.kind {
            Kind::Query { parameters, .. } => parameters
                .iter()
                .map(|t| t.as_ref().map_or(Type::UNKNOWN, types::pg_type))
                .collect(),
            _ => Vec::new(),
        })
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = |i: usize| format.map_or(FieldFormat::Text, |f| f.format_for(i));
        Ok(match &stmt.kind {
            Kind::Query { columns, .. } => types::fields(columns, format),
            Kind::Local(Local::Show(name, _)) => {
                vec![FieldInfo::new(
                    name.clone(),
                    None,
                    None,
                    Type::TEXT,
                    format(0),
                )]
            }
            Kind::Statement {
                text_column: Some(c),
            } => vec![FieldInfo::new(
                c.to_string(),
                None,
                None,
                Type::TEXT,
                format(0),
            )],
            Kind::Local(_) | Kind::Statement { text_column: None } => Vec::new(),
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::new(Parser {
            app: self.app.clone(),
        })
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let sql = prepared.sql.clone();
        let format = |i: usize| portal.result_column_format.format_for(i);
        match &prepared.kind {
            Kind::Local(local) => Ok(local.response()),
            Kind::Query { parameters, .. } => {
                let values = parameter_values(portal, parameters)?;
                let app = self.app.clone();
                let text = sql.clone();
                let rows = blocking(move || match batch::prepare(&app, &text) {
                    Some(Ok(p)) => p.run(values),
                    Some(Err(f)) => Err(f),
                    None => Err(Failure::new(
                        FailureKind::Internal,
                        "the query changed kind",
                    )),
                })
                .await?
                .map_err(|f| user_error(&f, &sql))?;
                respond(client, Answer::Rows(rows), &format).await
            }
            Kind::Statement { .. } => {
                if !portal.parameters.is_empty() {
                    let f = Failure::new(
                        FailureKind::NotSupported,
                        "parameters ($1, ...) are taken by queries over views only",
                    );
                    return Err(user_error(&f, &sql));
                }
                let app = self.app.clone();
                let text = sql.clone();
                let (mut answers, failure) = blocking(move || statements::run(&app, &text)).await?;
                if let Some(f) = failure {
                    return Err(user_error(&f, &sql));
                }
                match answers.len() {
                    1 => respond(client, answers.remove(0), &format).await,
                    _ => Err(user_error(
                        &Failure::new(
                            FailureKind::Syntax,
                            "a prepared statement holds one statement",
                        ),
                        &sql,
                    )),
                }
            }
        }
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let parser = self.query_parser();
        let ours = parser.get_parameter_types(&target.statement)?;
        let count = ours.len().max(target.parameter_types.len());
        let parameters = (0..count)
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| ours.get(i).cloned())
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        // Text until the portal says otherwise.
        let fields = parser.get_result_schema(&target.statement, None)?;
        Ok(DescribeStatementResponse::new(parameters, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self.query_parser().get_result_schema(
            &portal.statement.statement,
            Some(&portal.result_column_format),
        )?;
        Ok(DescribePortalResponse::new(fields))
    }
}

/// A portal's parameters as values of the types the query expects.
fn parameter_values(
    portal: &Portal<Prepared>,
    expected: &[Option<DataType>],
) -> PgWireResult<Vec<ScalarValue>> {
    let declared = &portal.statement.parameter_types;
    (0..portal.parameter_len())
        .map(|i| {
            let ours = expected.get(i).cloned().flatten();
            let pg = declared
                .get(i)
                .cloned()
                .flatten()
                .or_else(|| ours.as_ref().map(types::pg_type))
                .unwrap_or(Type::TEXT);
            let value = match pg {
                Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, &pg)?),
                Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(i, &pg)?),
                Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(i, &pg)?),
                Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, &pg)?),
                Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(i, &pg)?),
                Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(i, &pg)?),
                _ => ScalarValue::Utf8(portal.parameter::<String>(i, &Type::TEXT)?),
            };
            match ours {
                Some(t) => value
                    .cast_to(&t)
                    .map_err(|e| PgWireError::ApiError(Box::new(e))),
                None => Ok(value),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Delivery, Local, copy_line, subscribe_target};

    #[test]
    fn subscriptions_are_told_apart_from_other_statements() {
        let rows = |v: &str| Some((v.to_string(), Delivery::Rows));
        assert_eq!(subscribe_target("SUBSCRIBE counts"), rows("counts"));
        assert_eq!(
            subscribe_target(" subscribe to \"counts\" ;"),
            rows("counts")
        );
        assert_eq!(
            subscribe_target("COPY (SUBSCRIBE TO counts) TO STDOUT;"),
            Some(("counts".to_string(), Delivery::Copy))
        );
        assert_eq!(subscribe_target("SUBSCRIBE counts WHERE k = 1"), None);
        assert_eq!(subscribe_target("SELECT * FROM counts"), None);
        assert_eq!(subscribe_target("COPY counts TO STDOUT"), None);
    }

    #[test]
    fn copy_rows_escape_what_copy_text_escapes() {
        let line = copy_line(&[Some("+I".into()), None, Some("a\tb\\c\nd".into())]);
        assert_eq!(line, "+I\t\\N\ta\\tb\\\\c\\nd\n");
    }

    #[test]
    fn postgres_session_commands_are_local_and_eddy_settings_are_not() {
        assert_eq!(Local::of("BEGIN"), Some(Local::Begin));
        assert_eq!(
            Local::of("set extra_float_digits = 3"),
            Some(Local::Tag("SET"))
        );
        assert_eq!(Local::of("SET 'parallelism.default' = '2'"), None);
        assert_eq!(Local::of("SET parallelism.default = 2"), None);
        assert_eq!(Local::of("SHOW TABLES"), None);
        assert!(matches!(
            Local::of("show server_version"),
            Some(Local::Show(..))
        ));
    }
}
