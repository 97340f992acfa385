//! `eddy server`: a long-running process that owns continuous jobs through
//! the job manager, behind an HTTP API and the Postgres wire protocol.
//!
//! ```text
//!  POST /api/sql ─┐                        ┌► DDL: catalog.jsonl
//!  Postgres port ─┴► statements::run ─► session ─► jobs: job manager ─► jobs.json, jobs/<id>/
//!                                   └► batch: SELECT over views and pg_catalog (DataFusion)
//!  GET /api/jobs[/{id}]   POST /api/jobs/{id}/stop|cancel|resume   GET /metrics
//!  CREATE MATERIALIZED VIEW v ─► a job into views::View ─► SELECT ... FROM v
//!                                                      └► SSE, WebSocket, SUBSCRIBE v
//! ```
//!
//! On start the server replays its catalog and resumes every job that was
//! running from its latest checkpoint, whether it went down cleanly or by
//! kill -9. On Ctrl-C or SIGTERM every job stops after a final checkpoint,
//! and resumes at the next start.

mod api;
mod batch;
mod dashboard;
mod live;
mod paths;
mod postgres;
pub mod prometheus;
mod statements;
mod store;
mod view_source;
mod views;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use eddy_engine::JobManager;
use eddy_parser::ast::{Statement, StatementKind};
use eddy_planner::Session;

use self::prometheus::PrometheusRecorder;
use self::store::{Desired, Store};
use self::views::{ViewConnector, Views};

/// Requests larger than this are refused (413).
pub const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Where the catalog, the jobs and their checkpoints live.
    #[arg(long, default_value = "eddy-state")]
    state_dir: PathBuf,
    /// The HTTP address. Any address but loopback needs --auth-token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The Postgres wire protocol's address (psql, drivers, Grafana); `off`
    /// turns it off. Any address but loopback needs --auth-token.
    #[arg(long, default_value = "127.0.0.1:5432", value_parser = parse_pg_listen)]
    pg_listen: PgListen,
    /// A bearer token every HTTP request must carry
    /// (`Authorization: Bearer TOKEN`), and the Postgres password.
    #[arg(long, env = "EDDY_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Subtasks per keyed operator (default: number of cores).
    #[arg(long, short = 'p')]
    parallelism: Option<usize>,
    /// A directory file tables may read and write under (repeatable; the
    /// working directory if none is given).
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_paths: Vec<PathBuf>,
    /// How often jobs checkpoint unless their SQL sets
    /// 'execution.checkpointing.interval'.
    #[arg(long, default_value = "10s", value_parser = crate::parse_interval)]
    checkpoint_interval: i64,
}

/// `--pg-listen`: an address, or off.
#[derive(Debug, Clone, Copy)]
struct PgListen(Option<SocketAddr>);

fn parse_pg_listen(s: &str) -> Result<PgListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(PgListen(None));
    }
    s.parse()
        .map(|a| PgListen(Some(a)))
        .map_err(|e| format!("{e} (an address such as 127.0.0.1:5432, or off)"))
}

/// What the handlers share.
/// Threads that run statements and ad-hoc queries at once.
const BLOCKING_THREADS: usize = 8;

#[derive(Debug)]
pub(crate) struct App {
    manager: Arc<JobManager>,
    /// The catalog every request sees, and the settings of SETs.
    session: Mutex<Session>,
    store: Mutex<Store>,
    recorder: PrometheusRecorder,
    auth_token: Option<String>,
    /// Why jobs that should run could not be resumed at start.
    start_errors: Mutex<BTreeMap<String, String>>,
    views: Arc<Views>,
    /// The checkpoint interval of jobs whose SQL sets none.
    default_interval_ms: i64,
    allowed: paths::AllowedPaths,
}

impl App {
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_error(&self, id: &str) -> Option<String> {
        let errors = self.start_errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.get(id).cloned()
    }
}

/// Whether a statement changes the catalog, so that a restart replays it.
fn changes_catalog(statement: &Statement) -> bool {
    match &statement.kind {
        StatementKind::CreateSource(_)
        | StatementKind::CreateSink(_)
        | StatementKind::CreateView(_)
        | StatementKind::Drop(_)
        | StatementKind::CreateFunction(_)
        | StatementKind::Set(_) => true,
        StatementKind::Insert(_)
        | StatementKind::StatementSet(_)
        | StatementKind::Query(_)
        | StatementKind::Show(_)
        | StatementKind::Describe(_)
        | StatementKind::DescribeConnector(_)
        | StatementKind::Explain(_) => false,
    }
}

/// `eddy server`: runs until Ctrl-C or SIGTERM.
pub fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let exposed = std::iter::once(args.listen)
        .chain(args.pg_listen.0)
        .find(|a| !a.ip().is_loopback());
    if let Some(address) = exposed
        && args.auth_token.is_none()
    {
        anyhow::bail!(
            "listening on {address} (not loopback) needs --auth-token or EDDY_AUTH_TOKEN"
        );
    }
    let recorder = PrometheusRecorder::install();
    let store = Store::open(&args.state_dir)?;
    let mut session =
        crate::new_session(args.parallelism.unwrap_or_else(crate::default_parallelism));
    session.settings.checkpoint_interval_ms = args.checkpoint_interval;
    let views = Views::new(store.views_root());
    session.register_connector(Arc::new(ViewConnector {
        views: views.clone(),
    }))?;
    replay_catalog(&mut session, &store)?;
    // A view created and dropped in an earlier run came back with the
    // replay of its CREATE: forget it.
    for name in views.names() {
        if !session.is_materialized_view(&name) {
            views.drop_view(&name);
        }
    }
    let manager = Arc::new(JobManager::new(store.jobs_root(), session.build_env()));
    let app = Arc::new(App {
        manager,
        session: Mutex::new(session),
        store: Mutex::new(store),
        recorder,
        auth_token: args.auth_token,
        start_errors: Mutex::new(BTreeMap::new()),
        views,
        default_interval_ms: args.checkpoint_interval,
        allowed: paths::AllowedPaths::new(&args.allow_paths)
            .context("cannot resolve --allow-path")?,
    });
    resume_jobs(&app);
    reopen_views(&app);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Statements and ad-hoc queries run on blocking threads: a few at
        // a time, the rest wait their turn. Fifty sessions querying at once
        // then do not make fifty threads, each with its own allocator heap
        // holding its last snapshot's memory (nothing else here blocks).
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("http")
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = Mutex::new(Some(stop_tx));
    ctrlc::set_handler(move || {
        if let Some(tx) = stop_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
    })
    .context("cannot handle Ctrl-C / SIGTERM")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        let mut postgres = String::new();
        if let Some(pg) = args.pg_listen.0 {
            let pg_listener = tokio::net::TcpListener::bind(pg).await.with_context(|| {
                format!("cannot listen on {pg} for Postgres clients (--pg-listen ADDR or off)")
            })?;
            postgres = format!(" and postgres://{}", pg_listener.local_addr()?);
            tokio::spawn(postgres::serve(app.clone(), pg_listener));
        }
        // Tests and scripts read this line to learn the ports.
        eprintln!(
            "eddy server listening on http://{address}{postgres} (state in {})",
            args.state_dir.display()
        );
        axum::serve(listener, api::router(app.clone()))
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
            .context("the HTTP server failed")
    })?;
    eprintln!("stopping every job after a final checkpoint");
    app.manager.stop_all();
    for job in app.manager.list() {
        let _ = app.manager.wait(&job.id);
    }
    Ok(())
}

/// Runs the stored catalog statements again; the jobs they planned are
/// not started (running jobs resume from their state instead).
fn replay_catalog(session: &mut Session, store: &Store) -> anyhow::Result<()> {
    let statements = store.catalog()?;
    for sql in &statements {
        if let Err(e) = session.execute(sql) {
            tracing::warn!(
                "a stored statement no longer plans, skipped:\n{}",
                e.render(sql, "catalog")
            );
        }
    }
    tracing::info!(statements = statements.len(), "catalog replayed");
    Ok(())
}

/// Starts every job that was running when the server last went down.
/// The views of jobs that do not run (stopped or cancelled), as of their
/// jobs' last checkpoints: a running job's view is rebuilt by the job.
fn reopen_views(app: &App) {
    let root = app.store().jobs_root();
    let idle: Vec<(String, String)> = app
        .store()
        .jobs()
        .iter()
        .filter(|(_, r)| r.desired != Desired::Running)
        .filter_map(|(id, r)| Some((id.clone(), r.view.clone()?)))
        .collect();
    for (id, view) in idle {
        let last = eddy_state::checkpoint::CheckpointStore::new(&root.join(&id), 1)
            .and_then(|store| store.latest());
        let checkpoint = match last {
            Ok(Some(recovered)) => recovered.manifest.id,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(job = %id, view = %view, error = %e, "the view's checkpoints cannot be read");
                continue;
            }
        };
        if let Err(e) = app.views.reopen(&view, checkpoint) {
            tracing::warn!(job = %id, view = %view, error = %e, "the view cannot be rebuilt");
        }
    }
}

fn resume_jobs(app: &App) {
    let root = app.store().jobs_root();
    let running: Vec<String> = app
        .store()
        .jobs()
        .iter()
        .filter(|(_, r)| r.desired == Desired::Running)
        .map(|(id, _)| id.clone())
        .collect();
    for id in running {
        match app.manager.resume(&root.join(&id)) {
            Ok(_) => tracing::info!(job = %id, "resumed"),
            Err(e) => {
                tracing::error!(job = %id, error = %e, "cannot resume");
                let mut errors = app.start_errors.lock().unwrap_or_else(|e| e.into_inner());
                errors.insert(id, format!("cannot resume: {e}"));
            }
        }
    }
}
