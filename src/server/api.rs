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
use datafusion::arrow::datatypes::{Field, Schema};
use eddy_engine::{JobState, JobStatus};
use eddy_planner::graph::{EdgeKind, PhysicalGraph};
use serde_json::{Value, json};

use super::statements::{self, Answer, FailureKind};
use super::store::{Desired, JobRecord};
use super::views::json_rows;
use super::{App, MAX_BODY_BYTES};

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
        .merge(super::dashboard::router())
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
    let (answers, failure) = statements::run(app, sql);
    let mut results = Vec::new();
    for answer in answers {
        match answer_json(answer) {
            Ok(v) => results.push(v),
            Err(e) => return e.into_response(),
        }
    }
    let Some(f) = failure else {
        return Json(json!({ "results": results })).into_response();
    };
    let status = match f.kind {
        FailureKind::Syntax
        | FailureKind::UnknownTable
        | FailureKind::UnknownColumn
        | FailureKind::Invalid => StatusCode::BAD_REQUEST,
        FailureKind::NotSupported => StatusCode::NOT_IMPLEMENTED,
        FailureKind::Forbidden => StatusCode::FORBIDDEN,
        FailureKind::Conflict => StatusCode::CONFLICT,
        FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut body = json!({"message": f.message, "statement": f.statement});
    if let Some(rendered) = &f.rendered {
        body["rendered"] = json!(rendered);
    }
    if let Some(at) = f.position(sql) {
        body["line"] = json!(at.line);
        body["column"] = json!(at.column);
    }
    (status, Json(json!({ "error": body, "results": results }))).into_response()
}

/// What one statement did, as JSON.
fn answer_json(answer: Answer) -> Result<Value, ApiError> {
    Ok(match answer {
        Answer::Done { name, .. } => json!({"kind": "created", "name": name}),
        Answer::Explain(plan) => json!({"kind": "explain", "plan": plan}),
        Answer::Info(text) => json!({"kind": "info", "text": text}),
        Answer::Job { id, .. } => json!({"kind": "job", "job": id}),
        Answer::Rows(rows) => {
            let mut out = Vec::new();
            for batch in &rows.batches {
                let r = json_rows(batch)
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
                out.extend(r);
            }
            json!({"kind": "rows", "columns": columns_json(&rows.schema), "rows": out})
        }
    })
}

/// Each column's name and Arrow type, as the API lists columns.
fn columns_json(schema: &Schema) -> Vec<Value> {
    let column = |f: &Field| json!({"name": f.name(), "type": f.data_type().to_string()});
    schema.fields().iter().map(|f| column(f)).collect()
}

/// `GET /api/views`: each materialized view, its columns and row count.
async fn list_views(State(app): State<Arc<App>>) -> Response {
    let mut views = Vec::new();
    for name in app.views.names() {
        let Some(view) = app.views.get(&name) else {
            continue;
        };
        let columns = columns_json(&view.schema);
        views.push(json!({"name": name, "columns": columns, "rows": view.len()}));
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
    if let Ok(graph) = app.manager.graph(&id) {
        v["graph"] = graph_json(&graph);
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

/// The dataflow as nodes and edges, for the dashboard's drawing. A node's
/// operators are those whose metrics label starts `node<id> `, or, for a
/// source, `<stage>-source` ([`PhysicalGraph::source_stage`]).
fn graph_json(graph: &PhysicalGraph) -> Value {
    let nodes: Vec<Value> = graph
        .nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "kind": PhysicalGraph::kind_name(&n.kind),
                "detail": graph.describe_node(n.id),
                "parallelism": n.parallelism,
                "stage": graph.source_stage(n.id),
            })
        })
        .collect();
    let edges: Vec<Value> = graph
        .edges
        .iter()
        .map(|e| {
            let kind = match &e.kind {
                EdgeKind::Forward => "forward",
                EdgeKind::Shuffle { .. } => "shuffle",
                EdgeKind::Gather => "gather",
            };
            json!({"from": e.from, "to": e.to, "kind": kind, "late": e.port != 0})
        })
        .collect();
    json!({"nodes": nodes, "edges": edges})
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
