//! SQL text in, one answer per statement out: the core that HTTP
//! (`POST /api/sql`) and the Postgres wire protocol share. Each transport
//! only renders [`Answer`]s and maps a [`Failure`]'s kind to its own codes
//! (an HTTP status, a SQLSTATE).

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::EngineError;
use eddy_parser::ast::{ObjectKind, Span, Statement, StatementKind};
use eddy_planner::graph::NodeKind;
use eddy_planner::{MATERIALIZED_VIEW, Outcome, PlanErrorKind, SessionError};

use super::store::{Desired, JobRecord};
use super::{App, changes_catalog};
use eddy_connectors::registry::CONNECTOR;

/// What one statement did.
#[derive(Debug)]
pub(crate) enum Answer {
    /// DDL: the object's name, and what the statement was (`CREATE
    /// SOURCE`, `DROP VIEW`, `SET`, ...).
    Done {
        tag: String,
        name: String,
    },
    /// A submitted job: the statement's command and the job's id.
    Job {
        tag: String,
        id: String,
    },
    Explain(String),
    /// `SHOW`, `DESCRIBE`: a text table.
    Info(String),
    /// An ad-hoc query's rows.
    Rows(Rows),
}

/// An ad-hoc query's answer.
#[derive(Debug)]
pub(crate) struct Rows {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// What kind of mistake a failure is; transports map it to their codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Syntax,
    UnknownTable,
    UnknownColumn,
    /// Any other mistake in the SQL: a type, an option, a misuse.
    Invalid,
    NotSupported,
    /// A file path outside `--allow-path`.
    Forbidden,
    /// A job that runs already.
    Conflict,
    Internal,
}

/// Why a statement failed, and where in the request's text.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// The statement's index in the request.
    pub statement: usize,
    pub span: Option<Span>,
    /// The CLI's text with the line and a caret, where there is one.
    pub rendered: Option<String>,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl std::fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
            statement: 0,
            span: None,
            rendered: None,
        }
    }

    fn from_session(sql: &str, e: &SessionError, statement: usize) -> Self {
        let (kind, message, span) = match e {
            SessionError::Parse(p) => (FailureKind::Syntax, &p.message, Some(p.span)),
            SessionError::Plan(p) => {
                let kind = match p.kind {
                    PlanErrorKind::UnknownTable => FailureKind::UnknownTable,
                    PlanErrorKind::UnknownColumn => FailureKind::UnknownColumn,
                    PlanErrorKind::NotSupported => FailureKind::NotSupported,
                    PlanErrorKind::Internal => FailureKind::Internal,
                    PlanErrorKind::User => FailureKind::Invalid,
                };
                (kind, &p.message, p.span)
            }
        };
        Self {
            kind,
            message: message.clone(),
            statement,
            span,
            rendered: Some(e.render(sql, "request")),
        }
    }

    /// The line and column of the failure's start in `sql`.
    pub(crate) fn position(&self, sql: &str) -> Option<eddy_parser::LineCol> {
        self.span.map(|s| eddy_parser::line_col(sql, s.start))
    }
}

/// The answers of the statements that ran, and the failure that ended
/// the request early, if one did.
pub(crate) type Answers = (Vec<Answer>, Option<Failure>);

/// Runs the statements of `sql` in order; the first failure ends them.
/// A query that reads only materialized views and catalog tables is
/// answered at once ([`super::batch`]); so is text that Eddy's parser
/// refuses but is such a query in Postgres's dialect (a client's catalog
/// query).
pub(crate) fn run(app: &App, sql: &str) -> Answers {
    let statements = match eddy_parser::parse_statements(sql) {
        Ok(s) => s,
        Err(e) => {
            return match super::batch::query(app, sql) {
                Some(Ok(rows)) => (vec![Answer::Rows(rows)], None),
                Some(Err(mut f)) => {
                    if let Some(span) = f.span {
                        let text = eddy_parser::render_diagnostic(sql, "request", span, &f.message);
                        f.rendered = Some(text);
                    }
                    (Vec::new(), Some(f))
                }
                None => {
                    let e = SessionError::Parse(e);
                    (Vec::new(), Some(Failure::from_session(sql, &e, 0)))
                }
            };
        }
    };
    let mut answers = Vec::new();
    for (i, statement) in statements.iter().enumerate() {
        match run_one(app, sql, statement, i) {
            Ok(a) => answers.push(a),
            Err(mut f) => {
                f.statement = i;
                return (answers, Some(f));
            }
        }
    }
    (answers, None)
}

fn run_one(app: &App, sql: &str, statement: &Statement, i: usize) -> Result<Answer, Failure> {
    let text = &sql[statement.span.start..statement.span.end];
    if matches!(statement.kind, StatementKind::Query(_))
        && let Some(answer) = super::batch::query(app, text)
    {
        return answer.map(Answer::Rows).map_err(|mut f| {
            // A position in the statement, or the statement itself.
            let start = statement.span.start;
            let span = f.span.map_or(statement.span, |s| {
                Span::new(s.start + start, s.end + start)
            });
            f.span = Some(span);
            f.rendered = Some(eddy_parser::render_diagnostic(
                sql, "request", span, &f.message,
            ));
            f
        });
    }
    let refused = app.allowed.check(statement, app.session().connectors());
    if let Err(reason) = refused {
        let mut f = Failure::new(FailureKind::Forbidden, reason);
        f.span = Some(statement.span);
        return Err(f);
    }
    let outcome = app.session().execute_statement(statement, sql);
    let outcome = outcome.map_err(|e| Failure::from_session(sql, &e, i))?;
    if changes_catalog(statement) {
        app.store()
            .append_catalog(text)
            .map_err(|e| Failure::new(FailureKind::Internal, format!("{e:#}")))?;
    }
    if let StatementKind::Drop(d) = &statement.kind
        && d.kind == ObjectKind::MaterializedView
    {
        drop_view(app, &d.name.value);
    }
    answer(app, outcome, statement, text)
}

/// What one statement did; a job is submitted first.
fn answer(
    app: &App,
    outcome: Outcome,
    statement: &Statement,
    text: &str,
) -> Result<Answer, Failure> {
    Ok(match outcome {
        Outcome::Created(name) => Answer::Done {
            tag: tag(statement),
            name,
        },
        Outcome::Explain(plan) => Answer::Explain(plan),
        Outcome::Info(text) => Answer::Info(text),
        Outcome::Job(job) if job.is_select => {
            let mut f = Failure::new(
                FailureKind::NotSupported,
                "in the server a SELECT reads materialized views; to run a query \
                 continuously, make it one (CREATE MATERIALIZED VIEW v AS SELECT ...) or \
                 write its rows to a table (INSERT INTO ... SELECT)",
            );
            f.span = Some(statement.span);
            return Err(f);
        }
        Outcome::Job(job) => Answer::Job {
            tag: tag(statement),
            id: submit(app, job, text)?,
        },
    })
}

/// The command a statement was, as Postgres's command tags say it.
fn tag(statement: &Statement) -> String {
    match &statement.kind {
        StatementKind::CreateSource(_) => "CREATE SOURCE".into(),
        StatementKind::CreateSink(_) => "CREATE SINK".into(),
        StatementKind::CreateView(v) if v.materialized => "CREATE MATERIALIZED VIEW".into(),
        StatementKind::CreateView(_) => "CREATE VIEW".into(),
        StatementKind::CreateFunction(_) => "CREATE FUNCTION".into(),
        StatementKind::Drop(d) => format!("DROP {}", d.kind.as_str()),
        StatementKind::Set(_) => "SET".into(),
        StatementKind::Insert(_) => "INSERT 0 0".into(),
        StatementKind::StatementSet(_) => "EXECUTE STATEMENT SET".into(),
        _ => "OK".into(),
    }
}

/// Submits a job under a server-unique id and records it.
fn submit(app: &App, mut job: eddy_planner::Job, text: &str) -> Result<String, Failure> {
    let view = view_of(&job);
    // A view is for watching: it publishes at each checkpoint, so it
    // checkpoints every second unless its SQL says otherwise.
    if view.is_some() && job.checkpoint_interval_ms == app.default_interval_ms {
        job.checkpoint_interval_ms = VIEW_INTERVAL_MS;
    }
    let plan = job.graph.explain();
    let number = app.store().next_number();
    // `job3-out` from the session; the server's numbers never repeat.
    let base = job.name.split_once('-').map_or(&*job.name, |(_, b)| b);
    job.name = format!("{number}-{base}");
    let id = app.manager.submit(job).map_err(|e| match e {
        EngineError::AlreadyRunning(_) => Failure::new(FailureKind::Conflict, e),
        _ => Failure::new(FailureKind::Internal, e),
    })?;
    let record = JobRecord {
        sql: text.to_string(),
        plan,
        view,
        desired: Desired::Running,
        created_unix_ms: eddy_operators::metrics::unix_ms(),
    };
    app.store()
        .put_job(&id, record)
        .map_err(|e| Failure::new(FailureKind::Internal, format!("{e:#}")))?;
    Ok(id)
}

/// How often a materialized view's job checkpoints, unless set.
const VIEW_INTERVAL_MS: i64 = 1000;

/// The materialized view a job keeps, if it keeps one.
fn view_of(job: &eddy_planner::Job) -> Option<String> {
    job.graph.nodes.iter().find_map(|n| match &n.kind {
        NodeKind::Sink(s)
            if s.options.get(CONNECTOR).map(String::as_str) == Some(MATERIALIZED_VIEW) =>
        {
            Some(s.name.clone())
        }
        _ => None,
    })
}

/// After `DROP MATERIALIZED VIEW`: its job ends and its rows are freed.
fn drop_view(app: &App, name: &str) {
    let jobs: Vec<String> = app
        .store()
        .jobs()
        .iter()
        .filter(|(_, r)| r.view.as_deref() == Some(name) && r.desired == Desired::Running)
        .map(|(id, _)| id.clone())
        .collect();
    for id in jobs {
        if app.manager.cancel(&id).is_ok() {
            let _ = app.manager.wait(&id);
        }
        if let Err(e) = app.store().set_desired(&id, Desired::Cancelled) {
            tracing::warn!(job = %id, error = %format!("{e:#}"), "cannot record the job's end");
        }
    }
    app.views.drop_view(name);
}
