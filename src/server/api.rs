//! The HTTP API: routes, and one handler per route. Its document is
//! `openapi.json`, served at `/api/openapi.json`; a test checks that
//! every path it lists is routed.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use eddy_connectors::registry::CONNECTOR;
use eddy_engine::{EngineError, JobState, JobStatus};
use eddy_parser::ast::{ObjectKind, Span, StatementKind};
use eddy_planner::graph::NodeKind;
use eddy_planner::{MATERIALIZED_VIEW, Outcome, SessionError};
use serde_json::{Value, json};

use super::store::{Desired, JobRecord};
use super::{App, MAX_BODY_BYTES, changes_catalog};

const OPENAPI: &str = include_str!("openapi.json");

pub(crate) fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/api/sql", post(sql))
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/output", get(super::live::job_output))
        .route("/api/jobs/{id}/stop", post(stop))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/jobs/{id}/resume", post(resume))
        .route("/api/views", get(list_views))
        .route("/api/views/{name}/subscribe", get(super::live::subscribe))
        .route("/ws", get(super::live::websocket))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// An error as JSON: `{"error": {"message": ...}}` with a status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl std::fmt::Display) -> Self {
        Self {
            status,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    ApiError::new(status, message).into_response()
}

/// With a token configured, every request carries it.
async fn authorize(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(token) = &app.auth_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "this server needs 'Authorization: Bearer <token>' (its --auth-token)",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("header"));
            return response;
        }
    }
    next.run(request).await
}

#[derive(serde::Deserialize)]
struct SqlRequest {
    sql: String,
}

/// `POST /api/sql`: runs the statements in order, one result each; the
/// first error ends the request, with the results before it. The body is
/// `{"sql": "..."}` as JSON, or the SQL itself with any other content
/// type (`curl --data-binary @q.sql`).
async fn sql(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let sql = if json {
        match serde_json::from_slice::<SqlRequest>(&body) {
            Ok(request) => request.sql,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("a bad request body: {e}")),
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(sql) => sql,
            Err(_) => return error(StatusCode::BAD_REQUEST, "the SQL is not UTF-8"),
        }
    };
    match tokio::task::spawn_blocking(move || run_sql(&app, &sql)).await {
        Ok(response) => response,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn run_sql(app: &App, sql: &str) -> Response {
    let statements = match eddy_parser::parse_statements(sql) {
        Ok(s) => s,
        Err(e) => return sql_error(sql, &SessionError::Parse(e), 0, Vec::new()),
    };
    let mut results = Vec::new();
    for (i, statement) in statements.iter().enumerate() {
        let text = &sql[statement.span.start..statement.span.end];
        if matches!(statement.kind, StatementKind::Query(_))
            && let Some(answer) = super::select::over_views(&app.views, text)
        {
            match answer {
                Ok(v) => results.push(v),
                Err(e) => return e.into_response(),
            }
            continue;
        }
        let refused = app.allowed.check(statement, app.session().connectors());
        if let Err(reason) = refused {
            let at = Some(statement.span);
            let body = located(sql, &reason, i, at, None);
            return (
                StatusCode::FORBIDDEN,
                Json(json!({"error": body, "results": results})),
            )
                .into_response();
        }
        let outcome = app.session().execute_statement(statement, sql);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return sql_error(sql, &e, i, results),
        };
        if changes_catalog(statement)
            && let Err(e) = app.store().append_catalog(text)
        {
            return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
        }
        if let StatementKind::Drop(d) = &statement.kind
            && d.kind == ObjectKind::MaterializedView
        {
            drop_view(app, &d.name.value);
        }
        match outcome_json(app, outcome, text) {
            Ok(v) => results.push(v),
            Err(e) => return e.into_response(),
        }
    }
    Json(json!({ "results": results })).into_response()
}

/// A statement's error: its message, line and column in the request's
/// SQL, and the same text with a caret as the CLI prints it.
fn sql_error(sql: &str, e: &SessionError, statement: usize, results: Vec<Value>) -> Response {
    let (message, span) = match e {
        SessionError::Parse(p) => (&p.message, Some(p.span)),
        SessionError::Plan(p) => (&p.message, p.span),
    };
    let body = located(
        sql,
        message,
        statement,
        span,
        Some(e.render(sql, "request")),
    );
    let status = if e.is_not_supported() {
        StatusCode::NOT_IMPLEMENTED
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(json!({ "error": body, "results": results }))).into_response()
}

/// An error's body: the message and statement, the line and column of
/// `span` in `sql`, and the rendered text if there is one.
fn located(
    sql: &str,
    message: &str,
    statement: usize,
    span: Option<Span>,
    rendered: Option<String>,
) -> Value {
    let mut body = json!({"message": message, "statement": statement});
    if let Some(rendered) = rendered {
        body["rendered"] = json!(rendered);
    }
    if let Some(span) = span {
        let at = eddy_parser::line_col(sql, span.start);
        body["line"] = json!(at.line);
        body["column"] = json!(at.column);
    }
    body
}

/// What one statement did, as JSON; a job is submitted first.
fn outcome_json(app: &App, outcome: Outcome, text: &str) -> Result<Value, ApiError> {
    Ok(match outcome {
        Outcome::Created(name) => json!({"kind": "created", "name": name}),
        Outcome::Explain(plan) => json!({"kind": "explain", "plan": plan}),
        Outcome::Info(text) => json!({"kind": "info", "text": text}),
        Outcome::Job(job) if job.is_select => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "in the server a SELECT reads materialized views; to run a query continuously, \
                 make it one (CREATE MATERIALIZED VIEW v AS SELECT ...) or write its rows to a \
                 table (INSERT INTO ... SELECT)",
            ));
        }
        Outcome::Job(mut job) => {
            let view = view_of(&job);
            // A view is for watching: it publishes at each checkpoint, so
            // it checkpoints every second unless its SQL says otherwise.
            if view.is_some() && job.checkpoint_interval_ms == app.default_interval_ms {
                job.checkpoint_interval_ms = VIEW_INTERVAL_MS;
            }
            let plan = job.graph.explain();
            let number = app.store().next_number();
            // `job3-out` from the session; the server's numbers never repeat.
            let base = job.name.split_once('-').map_or(&*job.name, |(_, b)| b);
            job.name = format!("{number}-{base}");
            let id = app.manager.submit(job).map_err(|e| {
                let status = match e {
                    EngineError::AlreadyRunning(_) => StatusCode::CONFLICT,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                ApiError::new(status, e)
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
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
            json!({"kind": "job", "job": id})
        }
    })
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

/// `GET /api/views`: each materialized view, its columns and row count.
async fn list_views(State(app): State<Arc<App>>) -> Response {
    let mut views = Vec::new();
    for name in app.views.names() {
        let Some(view) = app.views.get(&name) else {
            continue;
        };
        let rows = view.len();
        let columns: Vec<Value> = view
            .schema
            .fields()
            .iter()
            .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
            .collect();
        views.push(json!({"name": name, "columns": columns, "rows": rows}));
    }
    Json(json!({ "views": views })).into_response()
}

/// A job's state as a word, and its error if it failed.
fn state_json(state: &JobState) -> (&'static str, Option<String>) {
    match state {
        JobState::Running => ("running", None),
        JobState::Finished | JobState::AlreadyFinished { .. } => ("finished", None),
        JobState::Stopped => ("stopped", None),
        JobState::Cancelled => ("cancelled", None),
        JobState::OutputClosed => ("output-closed", None),
        JobState::Failed(e) => ("failed", Some(e.to_string())),
    }
}

/// A job as the list shows it: from the manager if it ran since the
/// server started, else from the store.
fn summary(app: &App, id: &str, record: &JobRecord) -> Value {
    let status = app.manager.status(id).ok();
    let (state, error) = match &status {
        Some(s) => state_json(&s.state),
        None => match record.desired {
            Desired::Running => ("failed", app.start_error(id)),
            Desired::Stopped => ("stopped", None),
            Desired::Cancelled => ("cancelled", None),
        },
    };
    let mut v = json!({
        "id": id,
        "state": state,
        "error": error,
        "sql": record.sql,
        "created_unix_ms": record.created_unix_ms,
    });
    if let Some(s) = &status {
        let m = &s.metrics;
        v["rows_in"] = json!(m.rows_in());
        v["rows_out"] = json!(m.rows_out());
        v["late_rows"] = json!(m.late_rows());
        v["restarts"] = json!(s.restarts);
        v["resumed_from"] = json!(s.resumed_from);
        let wm = m.watermark();
        v["watermark_ms"] = json!((wm > 0).then_some(wm));
    }
    v
}

/// `GET /api/jobs`.
async fn list_jobs(State(app): State<Arc<App>>) -> Response {
    let records = app.store().jobs().clone();
    let jobs: Vec<Value> = records
        .iter()
        .map(|(id, record)| summary(&app, id, record))
        .collect();
    Json(json!({ "jobs": jobs })).into_response()
}

fn record(app: &App, id: &str) -> Result<JobRecord, ApiError> {
    app.store()
        .jobs()
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("there is no job '{id}'")))
}

/// `GET /api/jobs/{id}`: the summary, the plan, each operator subtask's
/// figures and the last checkpoint.
async fn job(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let record = match record(&app, &id) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let mut v = summary(&app, &id, &record);
    v["plan"] = json!(record.plan);
    if let Ok(status) = app.manager.status(&id) {
        detail(&mut v, &status);
    }
    Json(v).into_response()
}

fn detail(v: &mut Value, status: &JobStatus) {
    let m = &status.metrics;
    let c = m.checkpoints();
    v["checkpoint"] = json!({
        "completed": c.completed,
        "failed": c.failed,
        "last_id": c.id,
        "last_duration_ms": c.duration_ms,
        "last_size_bytes": c.size_bytes,
        "last_alignment_ms": c.alignment_ms,
        "max_duration_ms": c.max_duration_ms,
    });
    let operators: Vec<Value> = m
        .operators()
        .iter()
        .map(|o| {
            json!({
                "operator": o.operator,
                "subtask": o.subtask,
                "rows_in": o.rows_in,
                "rows_out": o.rows_out,
                "batches_in": o.batches_in,
                "batches_out": o.batches_out,
                "late_rows": o.late_rows,
                "backpressure_ms": o.blocked.as_millis() as u64,
                "watermark_ms": o.watermark,
            })
        })
        .collect();
    v["operators"] = json!(operators);
    v["state_dir"] = json!(status.state_dir.display().to_string());
}

/// `POST /api/jobs/{id}/stop`: a final checkpoint, then the end; the job
/// stays stopped across restarts until resumed.
async fn stop(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    control(&app, &id, Desired::Stopped)
}

/// `POST /api/jobs/{id}/cancel`: the end now, without a checkpoint.
async fn cancel(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    control(&app, &id, Desired::Cancelled)
}

/// `POST /api/jobs/{id}/resume`: starts a job that is not running from
/// its latest checkpoint.
async fn resume(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    control(&app, &id, Desired::Running)
}

fn control(app: &App, id: &str, desired: Desired) -> Response {
    if let Err(e) = record(app, id) {
        return e.into_response();
    }
    let running = app.manager.status(id).is_ok_and(|s| s.state.is_running());
    let result = match desired {
        Desired::Stopped if running => app.manager.stop(id),
        Desired::Cancelled if running => app.manager.cancel(id),
        Desired::Running if running => {
            return error(
                StatusCode::CONFLICT,
                format!("job '{id}' is running already"),
            );
        }
        Desired::Running => {
            let dir = app.store().jobs_root().join(id);
            app.manager.resume(&dir).map(|_| ())
        }
        Desired::Stopped | Desired::Cancelled => {
            return error(StatusCode::CONFLICT, format!("job '{id}' is not running"));
        }
    };
    if let Err(e) = result {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    if let Err(e) = app.store().set_desired(id, desired) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    }
    (StatusCode::ACCEPTED, Json(json!({"job": id}))).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `GET /metrics`: everything counted through the facade, and per job its
/// state, restarts and watermark lag behind wall time.
async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = app.recorder.render();
    text.push_str(&super::prometheus::job_series(&app.manager.list()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
