//! A session: runs the statements of a file against a catalog, turning
//! each continuous query into a [`Job`] (a physical graph to build and run).

use std::collections::BTreeMap;
use std::sync::Arc;

use eddy_connectors::registry::CONNECTOR;
use eddy_parser::ast::{self, Query, Span, Statement, StatementKind};
use eddy_parser::{ParseError, parse_statements, render_diagnostic};

use eddy_connectors::{Connector, ConnectorRegistry, Role};

use crate::binder::Binder;
use crate::catalog::{Catalog, columns_schema};
use crate::error::{PlanError, PlanErrorKind, did_you_mean, suggestions};
use crate::functions::Functions;
use crate::graph::{PhysicalGraph, SinkNode};
use crate::plan::{QueryPlanner, sink_schema};

/// The connector of materialized views' sinks; `eddy server` registers
/// it. Without it, CREATE MATERIALIZED VIEW is refused.
pub const MATERIALIZED_VIEW: &str = "materialized-view";

/// A continuous query ready to run: its graph ends in a sink.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub name: String,
    pub graph: PhysicalGraph,
    /// A bare SELECT, whose rows go to the session's select sink.
    pub is_select: bool,
    /// How often the job checkpoints (ms; 0: only at the end and on a
    /// clean stop), from `'execution.checkpointing.interval'`.
    pub checkpoint_interval_ms: i64,
    /// Complete checkpoints kept (`'state.checkpoints.num-retained'`).
    pub checkpoints_retained: usize,
    /// What the job manager does when the job fails
    /// (`'restart-strategy.type'`).
    #[serde(default)]
    pub restart: crate::restart::RestartStrategy,
}

impl Job {
    /// One job running all of `jobs` (a script's INSERTs), each source read
    /// once for all of them (see [`PhysicalGraph::merge`]). The first job's
    /// settings hold.
    pub fn merge(jobs: Vec<Job>) -> Option<Job> {
        let first = jobs.first()?.clone();
        if jobs.len() == 1 {
            return Some(first);
        }
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        Some(Job {
            name: set_name(&names),
            graph: PhysicalGraph::merge(jobs.into_iter().map(|j| j.graph)),
            ..first
        })
    }
}

/// The name of a job that runs several: the first's and how many more
/// (a state directory is named after its job, so the name stays short).
fn set_name(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first}+{}", rest.len()),
    }
}

/// What one statement did.
#[derive(Debug, Clone)]
pub enum Outcome {
    Created(String),
    Job(Job),
    Explain(String),
    /// Text for the user: SHOW, DESCRIBE, DROP, SET.
    Info(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("{0}")]
    Plan(#[from] PlanError),
}

impl SessionError {
    /// Renders the error for a person: message, `file:line:col`, the line
    /// and a caret under the offending text.
    pub fn render(&self, sql: &str, origin: &str) -> String {
        match self {
            SessionError::Parse(e) => render_diagnostic(sql, origin, e.span, &e.message),
            SessionError::Plan(e) => match e.span {
                Some(span) => render_diagnostic(sql, origin, span, &e.message),
                None => format!("error: {}\n", e.message),
            },
        }
    }

    pub fn is_not_supported(&self) -> bool {
        matches!(self, SessionError::Plan(e) if e.kind == PlanErrorKind::NotSupported)
    }
}

/// A named relation of the catalog; see [`Session::relations`].
#[derive(Debug, Clone)]
pub struct CatalogRelation {
    pub name: String,
    pub kind: RelationKind,
    pub schema: datafusion::arrow::datatypes::SchemaRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    /// A connector's table: read as a source, written as a sink, or both.
    Table,
    /// `CREATE VIEW`: a named query.
    View,
    /// `CREATE MATERIALIZED VIEW`: rows kept by a job.
    MaterializedView,
}

#[derive(Debug)]
pub struct Session {
    catalog: Catalog,
    functions: Functions,
    connectors: ConnectorRegistry,
    /// Parallelism of keyed operators (window aggregates).
    pub parallelism: usize,
    /// Options of the sink that receives a bare SELECT's rows.
    pub select_sink: BTreeMap<String, String>,
    /// `SET` options that shape the queries that follow.
    pub settings: Settings,
    jobs: usize,
}

/// What happens to a row that arrives after every window it belongs to
/// has fired (`SET 'late.policy' = ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LatePolicy {
    /// Dropped and counted (the default).
    #[default]
    Drop,
    /// Also written, with the reason, to this declared sink.
    DeadLetter(String),
}

/// The clock of `'table.exec.state.ttl'`
/// (`'table.exec.state.ttl.time-domain'`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeDomain {
    /// The wall clock, as in Flink (the default).
    #[default]
    ProcessingTime,
    /// The watermark: a replay expires state as live did.
    EventTime,
}

/// Settings of a session that shape how the queries after them are
/// planned. Each is a `SET 'key' = 'value'` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `'late.policy'`: `'drop'` or `'dead-letter'`, with the sink named by
    /// `'late.dead-letter-sink'`.
    pub late_policy: LatePolicy,
    /// `'table.exec.emit.allow-lateness'` (Flink's name): how long a fired
    /// window still takes late rows, emitting corrections.
    pub allowed_lateness_ms: i64,
    /// `'table.exec.emit.early-fire.enabled'` and
    /// `'table.exec.emit.early-fire.delay'` (Flink's names): open windows
    /// emit their running results this often.
    pub early_fire_enabled: bool,
    pub early_fire_delay_ms: Option<i64>,
    /// `'sql-client.execution.result-mode'` (Flink's name) = `'table'`: a
    /// bare SELECT shows the table its changelog leaves when the input
    /// ends, not every change (`'changelog'`, the default).
    pub result_table: bool,
    /// `'execution.checkpointing.interval'` (Flink's name), in ms; 0 turns
    /// periodic checkpoints off.
    pub checkpoint_interval_ms: i64,
    /// `'state.checkpoints.num-retained'` (Flink's name).
    pub checkpoints_retained: usize,
    /// `'state.cache.size'`: in-memory state per operator subtask before it
    /// spills to the state backend (`None`: the operators' default, 64 MB).
    pub state_cache_bytes: Option<u64>,
    /// `'table.exec.state.ttl'` (Flink's name; `'state.ttl'` for short):
    /// the state of a key of a regular join, Top-N, deduplication, OVER or
    /// updating aggregate that is not written for this long (processing
    /// time, ms) is dropped. `None`: kept for ever.
    pub state_ttl_ms: Option<i64>,
    /// `'table.exec.state.ttl.time-domain'`: `'event-time'` measures the
    /// time-to-live on the watermark instead of the wall clock, so that a
    /// replay expires state as live did.
    pub state_ttl_time_domain: TimeDomain,
    /// `'restart-strategy.*'` (Flink's names): what a failed job does.
    pub restart: crate::restart::RestartSettings,
    /// `'late.dead-letter-sink'`, kept until the policy asks for it.
    dead_letter_sink: Option<String>,
    /// `'late.policy' = 'dead-letter'` was set before its sink was named.
    dead_letter_wanted: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            late_policy: LatePolicy::default(),
            allowed_lateness_ms: 0,
            early_fire_enabled: false,
            early_fire_delay_ms: None,
            result_table: false,
            checkpoint_interval_ms: DEFAULT_CHECKPOINT_INTERVAL_MS,
            checkpoints_retained: DEFAULT_CHECKPOINTS_RETAINED,
            state_cache_bytes: None,
            state_ttl_ms: None,
            state_ttl_time_domain: TimeDomain::default(),
            restart: crate::restart::RestartSettings::default(),
            dead_letter_sink: None,
            dead_letter_wanted: false,
        }
    }
}

impl Settings {
    /// Whether a time-to-live, if one is set, is measured on the watermark.
    pub fn state_ttl_event_time(&self) -> bool {
        self.state_ttl_ms.is_some() && self.state_ttl_time_domain == TimeDomain::EventTime
    }
}

/// Checkpoint every 10 s unless told otherwise.
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: i64 = 10_000;
/// Keep the last 3 complete checkpoints: two to fall back on.
pub const DEFAULT_CHECKPOINTS_RETAINED: usize = 3;

/// The settings `SET` knows, for the message about an unknown one.
const KNOWN_SETTINGS: &str = "parallelism, 'late.policy', 'late.dead-letter-sink', 'table.exec.emit.allow-lateness', 'table.exec.emit.early-fire.enabled', 'table.exec.emit.early-fire.delay', 'sql-client.execution.result-mode', 'execution.checkpointing.interval', 'state.checkpoints.num-retained', 'state.cache.size', 'table.exec.state.ttl', 'table.exec.state.ttl.time-domain', 'restart-strategy.type' and its options";

impl Default for Session {
    fn default() -> Self {
        Self::new(1)
    }
}

impl Session {
    pub fn new(parallelism: usize) -> Self {
        let select_sink = [("connector", "stdout"), ("format", "table")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self {
            catalog: Catalog::default(),
            functions: Functions::default(),
            connectors: ConnectorRegistry::default(),
            parallelism: parallelism.max(1),
            select_sink,
            settings: Settings::default(),
            jobs: 0,
        }
    }

    /// Registers a scalar function (a DataFusion [`ScalarUDF`]) for the
    /// statements this session plans and the jobs it builds. The name and
    /// aliases must be new (see [`Functions::register_scalar`]).
    ///
    /// [`ScalarUDF`]: datafusion::logical_expr::ScalarUDF
    pub fn register_function(
        &mut self,
        udf: datafusion::logical_expr::ScalarUDF,
    ) -> Result<(), crate::functions::FunctionError> {
        self.functions.register_scalar(udf)
    }

    /// Registers a connector (a source and/or a sink, with its options)
    /// for the statements this session plans and the jobs it builds. Its
    /// name and aliases must be new.
    pub fn register_connector(
        &mut self,
        connector: std::sync::Arc<dyn Connector>,
    ) -> Result<(), eddy_connectors::ConnectorError> {
        self.connectors.register(connector)
    }

    pub fn connectors(&self) -> &ConnectorRegistry {
        &self.connectors
    }

    /// What building this session's jobs needs: its functions and
    /// connectors.
    pub fn build_env(&self) -> crate::BuildEnv {
        crate::BuildEnv {
            functions: self.functions.clone(),
            connectors: self.connectors.clone(),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn functions(&self) -> &Functions {
        &self.functions
    }

    /// Parses and plans every statement of `sql`, reporting every error of
    /// the file rather than only the first: a syntax error skips to the next
    /// statement, a planning error skips the statement. Nothing runs.
    pub fn execute_all(&mut self, sql: &str) -> (Vec<Outcome>, Vec<SessionError>) {
        let (statements, parse_errors) = eddy_parser::parse_statements_lenient(sql);
        let mut errors: Vec<(usize, SessionError)> = parse_errors
            .into_iter()
            .map(|e| (e.span.start, SessionError::Parse(e)))
            .collect();
        let mut out = Vec::new();
        for stmt in &statements {
            match self.statement(stmt, sql, false) {
                Ok(o) => out.push(o),
                Err(e) => errors.push((stmt.span.start, e)),
            }
        }
        errors.sort_by_key(|(at, _)| *at);
        (out, errors.into_iter().map(|(_, e)| e).collect())
    }

    /// Parses and plans every statement of `sql`, in order. Nothing runs:
    /// the caller starts the returned jobs.
    pub fn execute(&mut self, sql: &str) -> Result<Vec<Outcome>, SessionError> {
        let statements = parse_statements(sql)?;
        let mut out = Vec::new();
        for stmt in &statements {
            out.push(self.statement(stmt, sql, false)?);
        }
        Ok(out)
    }

    /// Plans one statement of `sql` (parsed from it, so that errors point
    /// into it). Nothing runs.
    pub fn execute_statement(
        &mut self,
        stmt: &Statement,
        sql: &str,
    ) -> Result<Outcome, SessionError> {
        self.statement(stmt, sql, false)
    }

    fn statement(
        &mut self,
        stmt: &Statement,
        sql: &str,
        explain: bool,
    ) -> Result<Outcome, SessionError> {
        let span = stmt.span;
        match &stmt.kind {
            StatementKind::CreateSource(s) => {
                if explain {
                    return Err(PlanError::not_supported("EXPLAIN of CREATE TABLE", span).into());
                }
                let options = self.partition_options(&s.options, &s.partitioned_by)?;
                let binder = Binder {
                    functions: &self.functions,
                    sql,
                };
                let name =
                    self.catalog
                        .create_source(s, &options, &binder, &self.connectors, span)?;
                Ok(Outcome::Created(name))
            }
            StatementKind::CreateSink(s) => self.create_sink(s, sql, span, explain),
            StatementKind::Insert(ins) => self.insert(ins, sql, explain),
            StatementKind::StatementSet(inserts) => self.statement_set(inserts, sql, explain),
            StatementKind::Query(q) => self.select(q, sql, explain),
            StatementKind::CreateView(v) => self.create_view(v, sql, explain),
            StatementKind::Drop(d) => self.drop(d),
            StatementKind::Show(what) => self.show(*what, span),
            StatementKind::Describe(name) => self.describe(name),
            StatementKind::DescribeConnector(name) => self.describe_connector(name),
            StatementKind::CreateFunction(f) => self.create_function(f),
            StatementKind::Set(option) => {
                self.set(option)?;
                Ok(Outcome::Info(String::new()))
            }
            StatementKind::Explain(inner) => {
                if explain {
                    return Err(PlanError::user("EXPLAIN EXPLAIN is not meaningful", span).into());
                }
                self.statement(inner, sql, true)
            }
        }
    }

    /// A job of this session's settings.
    fn job(&mut self, what: &str, graph: PhysicalGraph, is_select: bool) -> Outcome {
        self.jobs += 1;
        Outcome::Job(Job {
            name: format!("job{}-{what}", self.jobs),
            graph,
            is_select,
            checkpoint_interval_ms: self.settings.checkpoint_interval_ms,
            checkpoints_retained: self.settings.checkpoints_retained,
            restart: self.settings.restart.strategy(),
        })
    }

    /// `CREATE SINK name [(columns)] WITH (...) [AS query]`.
    fn create_sink(
        &mut self,
        s: &ast::CreateSink,
        sql: &str,
        span: Span,
        explain: bool,
    ) -> Result<Outcome, SessionError> {
        let options = self.partition_options(&s.options, &s.partitioned_by)?;
        let declared = s
            .columns
            .as_ref()
            .map(|c| columns_schema(c).map(Arc::new))
            .transpose()?;
        let Some(query) = &s.query else {
            if explain {
                return Err(PlanError::not_supported(
                    "EXPLAIN of CREATE SINK without AS SELECT",
                    span,
                )
                .into());
            }
            // Without a column list the sink takes the columns of
            // whatever is written to it (an INSERT's query, or a window's
            // late rows).
            self.catalog
                .create_sink(&s.name, declared, &options, &self.connectors, span)?;
            return Ok(Outcome::Created(s.name.value.clone()));
        };
        let def =
            self.catalog
                .sink_def(&s.name, declared.clone(), &options, &self.connectors, span)?;
        if self.catalog.sink(&s.name.value).is_some()
            || self.catalog.source(&s.name.value).is_some()
        {
            return Err(PlanError::user(
                format!("'{}' is already defined", s.name.value),
                s.name.span,
            )
            .into());
        }
        let graph = self.plan_query(query, sql, SinkNode::of(&def), declared.as_deref(), &[])?;
        let schema = sink_schema(&graph);
        if let Some(c) = s.partitioned_by.iter().find(|c| {
            schema
                .as_ref()
                .is_some_and(|sc| sc.index_of(&c.value).is_err())
        }) {
            return Err(PlanError::user(
                format!(
                    "PARTITIONED BY column '{}' is not a column of the query",
                    c.value
                ),
                c.span,
            )
            .into());
        }
        if explain {
            return Ok(Outcome::Explain(graph.explain()));
        }
        self.catalog
            .create_sink(&s.name, schema, &options, &self.connectors, span)?;
        Ok(self.job(&s.name.value, graph, false))
    }

    /// `INSERT INTO table [(columns)] query`: a job writing the table.
    fn insert(
        &mut self,
        ins: &ast::Insert,
        sql: &str,
        explain: bool,
    ) -> Result<Outcome, SessionError> {
        let (name, graph) = self.insert_graph(ins, sql)?;
        if explain {
            return Ok(Outcome::Explain(graph.explain()));
        }
        Ok(self.job(&name, graph, false))
    }

    /// The graph of one INSERT, and the table it writes.
    fn insert_graph(
        &self,
        ins: &ast::Insert,
        sql: &str,
    ) -> Result<(String, PhysicalGraph), SessionError> {
        let sink = self.writable(&ins.target)?;
        let graph = self.plan_query(
            &ins.query,
            sql,
            SinkNode::of(&sink),
            sink.schema.as_deref(),
            &ins.columns,
        )?;
        Ok((sink.name.clone(), graph))
    }

    /// The sink a table name writes: an error at the name if there is none
    /// or the table only reads.
    fn writable(&self, target: &ast::Ident) -> Result<crate::catalog::SinkDef, PlanError> {
        if let Some(sink) = self.catalog.sink(&target.value) {
            // What only the connector can check (a path, a partition
            // column), now rather than when the job starts.
            if let Some(schema) = &sink.schema {
                let given: Vec<(String, String)> = sink
                    .options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                self.connectors
                    .validate(&given, Role::Both)
                    .map_err(|e| e.to_string())
                    .and_then(|v| {
                        self.connectors
                            .sink(
                                &v,
                                eddy_connectors::Table {
                                    name: &sink.name,
                                    schema,
                                    primary_key: &sink.primary_key,
                                },
                            )
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|e| {
                        PlanError::user(
                            format!("table '{}' cannot be written: {e}", target.value),
                            target.span,
                        )
                    })?;
            }
            return Ok(sink.clone());
        }
        if let Some(source) = self.catalog.source(&target.value) {
            return Err(PlanError::user(
                format!(
                    "table '{}' cannot be written: its connector '{}' only reads (writable connectors: {})",
                    target.value,
                    source.connector,
                    self.connectors.names(Role::Sink)
                ),
                target.span,
            ));
        }
        if self.catalog.view(&target.value).is_some() {
            return Err(PlanError::user(
                format!("'{}' is a view, which cannot be written", target.value),
                target.span,
            ));
        }
        let names: Vec<&str> = self.catalog.sink_names().collect();
        let hint = did_you_mean(&suggestions(&target.value, names.iter().copied()));
        Err(PlanError::unknown_table(
            format!("unknown table '{}'{hint}", target.value),
            target.span,
        ))
    }

    /// `EXECUTE STATEMENT SET BEGIN insert; ... END`: one job writing
    /// every table, reading each source once.
    fn statement_set(
        &mut self,
        inserts: &[ast::Insert],
        sql: &str,
        explain: bool,
    ) -> Result<Outcome, SessionError> {
        let mut names = Vec::new();
        let mut graphs = Vec::new();
        for ins in inserts {
            let (name, graph) = self.insert_graph(ins, sql)?;
            names.push(name);
            graphs.push(graph);
        }
        let graph = PhysicalGraph::merge(graphs);
        if explain {
            return Ok(Outcome::Explain(graph.explain()));
        }
        names.dedup();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(self.job(&set_name(&names), graph, false))
    }

    /// `CREATE FUNCTION name AS 'class'`: Java classes are not loaded; a
    /// class known to be one of Eddy's functions (Nexmark's `CountChar`)
    /// names it.
    fn create_function(&mut self, f: &ast::CreateFunction) -> Result<Outcome, SessionError> {
        let known = crate::functions::JAVA_CLASSES
            .iter()
            .find(|(class, _)| *class == f.class);
        match known {
            Some((_, builtin))
                if *builtin == f.name.value && self.functions.scalar(builtin).is_some() =>
            {
                Ok(Outcome::Info(format!(
                    "function {} is Eddy's own; the class {} is not loaded\n",
                    f.name.value, f.class
                )))
            }
            _ => Err(PlanError::not_supported(
                "CREATE FUNCTION of a Java class (a program embedding Eddy registers functions with Session::register_function)",
                f.class_span,
            )
            .into()),
        }
    }

    /// `CREATE [TEMPORARY] VIEW name [(columns)] AS query`: checked by
    /// planning it once, then kept as a named query.
    fn create_view(
        &mut self,
        v: &ast::CreateView,
        sql: &str,
        explain: bool,
    ) -> Result<Outcome, SessionError> {
        if v.materialized {
            return self.create_materialized_view(v, sql, explain);
        }
        if explain {
            return Err(PlanError::not_supported("EXPLAIN of CREATE VIEW", v.name.span).into());
        }
        let sql: Arc<str> = Arc::from(sql);
        let mut catalog = self.catalog.clone();
        if catalog.create_view(v, &sql)? {
            self.planner(&catalog, &sql)
                .read_view(&v.name)
                .map_err(SessionError::from)?;
            self.catalog = catalog;
        }
        Ok(Outcome::Created(v.name.value.clone()))
    }

    /// `CREATE MATERIALIZED VIEW v AS query`: a job writing the query's
    /// changelog into the sink of the [`MATERIALIZED_VIEW`] connector,
    /// which a server registers (it keeps the view's current contents).
    fn create_materialized_view(
        &mut self,
        v: &ast::CreateView,
        sql: &str,
        explain: bool,
    ) -> Result<Outcome, SessionError> {
        let span = v.name.span;
        if self.connectors.get(MATERIALIZED_VIEW).is_none() {
            return Err(PlanError::user(
                "a materialized view is kept by `eddy server`: create it there \
                 (`eddy run` writes results to tables: CREATE SINK ... AS SELECT)",
                span,
            )
            .into());
        }
        if let Some(c) = v.columns.first() {
            return Err(
                PlanError::not_supported("column names on a materialized view", c.span).into(),
            );
        }
        if v.if_not_exists && self.catalog.sink(&v.name.value).is_some() {
            return Ok(Outcome::Created(v.name.value.clone()));
        }
        let sink = ast::CreateSink {
            name: v.name.clone(),
            columns: None,
            partitioned_by: Vec::new(),
            options: vec![ast::SqlOption {
                key: CONNECTOR.to_string(),
                value: MATERIALIZED_VIEW.to_string(),
                span,
                key_span: span,
                value_span: span,
            }],
            query: Some(v.query.clone()),
        };
        let outcome = self.create_sink(&sink, sql, span, explain)?;
        if !explain {
            // Other jobs read it as a changelog of its rows.
            self.catalog.read_sink_too(&v.name, &self.connectors)?;
        }
        Ok(outcome)
    }

    /// Whether `name` is a materialized view.
    pub fn is_materialized_view(&self, name: &str) -> bool {
        self.catalog
            .sink(name)
            .is_some_and(|s| s.connector == MATERIALIZED_VIEW)
    }

    /// Every named relation with its columns, sorted by name: what a
    /// client's catalog queries (`\d` in psql) list. A view whose query
    /// no longer plans is listed without columns.
    pub fn relations(&self) -> Vec<CatalogRelation> {
        let empty = || Arc::new(datafusion::arrow::datatypes::Schema::empty());
        let sql: Arc<str> = Arc::from("");
        let planner = self.planner(&self.catalog, &sql);
        self.catalog
            .names()
            .into_iter()
            .map(|name| {
                let (kind, schema) = if self.catalog.view(name).is_some() {
                    let ident = ast::Ident {
                        value: name.to_string(),
                        quoted: false,
                        span: Span::new(0, 0),
                    };
                    let schema = planner.read_view(&ident).map_or_else(
                        |_| empty(),
                        |r| {
                            let fields: Vec<_> = r.fields().to_vec();
                            Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
                        },
                    );
                    (RelationKind::View, schema)
                } else if let Some(source) = self
                    .catalog
                    .source(name)
                    .filter(|s| s.connector != MATERIALIZED_VIEW)
                {
                    (RelationKind::Table, source.schema.clone())
                } else {
                    let sink = self.catalog.sink(name).expect("a catalog name");
                    let kind = if sink.connector == MATERIALIZED_VIEW {
                        RelationKind::MaterializedView
                    } else {
                        RelationKind::Table
                    };
                    (kind, sink.schema.clone().unwrap_or_else(empty))
                };
                CatalogRelation {
                    name: name.to_string(),
                    kind,
                    schema,
                }
            })
            .collect()
    }

    /// A bare `SELECT`: its rows go to the session's select sink.
    fn select(
        &mut self,
        q: &ast::Query,
        sql: &str,
        explain: bool,
    ) -> Result<Outcome, SessionError> {
        let given: Vec<(String, String)> = self
            .select_sink
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let validated = self
            .connectors
            .validate(&given, Role::Sink)
            .map_err(|e| PlanError::user(format!("the select sink: {e}"), q.span))?;
        let sink = SinkNode {
            name: "select".into(),
            options: self.select_sink.clone(),
            guarantee: validated.connector.guarantee(&validated.options),
            result_table: self.settings.result_table,
            primary_key: Vec::new(),
        };
        let graph = self.plan_query(q, sql, sink, None, &[])?;
        if explain {
            return Ok(Outcome::Explain(graph.explain()));
        }
        Ok(self.job("select", graph, true))
    }

    /// `DROP SOURCE | SINK [IF EXISTS] name`.
    fn drop(&mut self, d: &ast::Drop) -> Result<Outcome, SessionError> {
        use eddy_parser::ast::ObjectKind;
        let dropped = match d.kind {
            ObjectKind::Source => self.catalog.drop_source(&d.name.value),
            ObjectKind::Sink => self.catalog.drop_sink(&d.name.value),
            ObjectKind::Table => self.catalog.drop_table(&d.name.value),
            ObjectKind::View => self.catalog.drop_view(&d.name.value),
            ObjectKind::MaterializedView => {
                self.is_materialized_view(&d.name.value) && self.catalog.drop_table(&d.name.value)
            }
        };
        if !dropped && !d.if_exists {
            let msg = format!(
                "there is no {} named '{}'",
                d.kind.as_str().to_lowercase(),
                d.name.value
            );
            return Err(PlanError::user(msg, d.name.span).into());
        }
        Ok(Outcome::Info(if dropped {
            format!("dropped {}", d.name.value)
        } else {
            String::new()
        }))
    }

    /// `SHOW SOURCES | SINKS | VIEWS | CONNECTORS`.
    fn show(&self, what: ast::ShowKind, span: Span) -> Result<Outcome, SessionError> {
        use eddy_parser::ast::ShowKind;
        let names: Vec<&str> = match what {
            ShowKind::Sources => self.catalog.source_names().collect(),
            ShowKind::Sinks => self.catalog.sink_names().collect(),
            ShowKind::Tables => {
                let mut names: Vec<&str> = self.catalog.source_names().collect();
                names.extend(self.catalog.sink_names());
                names.sort_unstable();
                names.dedup();
                names
            }
            ShowKind::Views => self.catalog.view_names().collect(),
            ShowKind::Connectors => return Ok(Outcome::Info(self.connectors.show())),
            ShowKind::Jobs => {
                return Err(
                    PlanError::not_supported("SHOW JOBS (it needs `eddy server`)", span).into(),
                );
            }
        };
        Ok(Outcome::Info(
            names.iter().map(|n| format!("{n}\n")).collect(),
        ))
    }

    /// `DESCRIBE name`: a table's or view's columns, with Flink's
    /// columns: name, type, null, key, extras (a computed column's
    /// expression) and watermark.
    fn describe(&self, name: &ast::Ident) -> Result<Outcome, SessionError> {
        let n = name.value.as_str();
        let rows: Vec<[String; 6]> = if self.catalog.view(n).is_some() {
            let sql: Arc<str> = Arc::from("");
            let relation = self.planner(&self.catalog, &sql).read_view(name)?;
            relation
                .fields()
                .iter()
                .map(|f| {
                    let time = relation.time_attribute() == Some(f.name());
                    describe_row(f, time, "", "", "")
                })
                .collect()
        } else if let Some(source) = self.catalog.source(n) {
            describe_source(source)
        } else if let Some(sink) = self.catalog.sink(n) {
            let schema = sink
                .schema
                .clone()
                .unwrap_or_else(|| Arc::new(datafusion::arrow::datatypes::Schema::empty()));
            schema
                .fields()
                .iter()
                .map(|f| describe_row(f, false, "", "", ""))
                .collect()
        } else {
            let names = self.catalog.names();
            let hint = did_you_mean(&suggestions(n, names.iter().copied()));
            return Err(
                PlanError::unknown_table(format!("unknown table '{n}'{hint}"), name.span).into(),
            );
        };
        let header = ["name", "type", "null", "key", "extras", "watermark"];
        Ok(Outcome::Info(text_table(&header, &rows)))
    }

    /// `DESCRIBE CONNECTOR name`: its options.
    fn describe_connector(&self, name: &ast::Ident) -> Result<Outcome, SessionError> {
        match self.connectors.describe(&name.value) {
            Some(text) => Ok(Outcome::Info(text)),
            None => {
                let hint = self
                    .connectors
                    .suggest_name(&name.value)
                    .map_or(String::new(), |n| format!(" (did you mean '{n}'?)"));
                let names: Vec<&str> = self.connectors.iter().map(|c| c.name()).collect();
                Err(PlanError::user(
                    format!(
                        "unknown connector '{}'{hint}; connectors: {}",
                        name.value,
                        names.join(", ")
                    ),
                    name.span,
                )
                .into())
            }
        }
    }

    /// A table's options, with `PARTITIONED BY (a, b)` as the connector's
    /// `'partitioned-by' = 'a,b'`, for connectors that declare it.
    fn partition_options(
        &self,
        options: &[ast::SqlOption],
        partitioned_by: &[ast::Ident],
    ) -> Result<Vec<ast::SqlOption>, PlanError> {
        let mut options = options.to_vec();
        let Some(first) = partitioned_by.first() else {
            return Ok(options);
        };
        let connector = options
            .iter()
            .find(|o| o.key.eq_ignore_ascii_case(CONNECTOR))
            .and_then(|o| self.connectors.get(&o.value));
        let takes_it = connector.is_some_and(|c| {
            c.options()
                .iter()
                .any(|d| d.name == eddy_connectors::file::PARTITIONED_BY)
        });
        if !takes_it {
            return Err(PlanError::user(
                "PARTITIONED BY needs a sink whose connector writes partitions (connector = 'file')",
                first.span,
            ));
        }
        if let Some(o) = options.iter().find(|o| {
            o.key
                .eq_ignore_ascii_case(eddy_connectors::file::PARTITIONED_BY)
        }) {
            return Err(PlanError::user(
                "write the partition columns once: PARTITIONED BY (...) or 'partitioned-by'",
                o.span,
            ));
        }
        let columns: Vec<&str> = partitioned_by.iter().map(|c| c.value.as_str()).collect();
        options.push(ast::SqlOption {
            key: eddy_connectors::file::PARTITIONED_BY.to_string(),
            value: columns.join(","),
            span: first.span,
            key_span: first.span,
            value_span: first.span,
        });
        Ok(options)
    }

    /// `SET 'key' = 'value'`: one function per setting family.
    fn set(&mut self, option: &ast::SqlOption) -> Result<(), PlanError> {
        let value = option.value.trim();
        let off = ["off", "none"].contains(&value);
        match option.key.as_str() {
            "parallelism" => {
                self.parallelism = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid(option, "parallelism must be a positive integer"))?;
            }
            "late.policy" | "late.dead-letter-sink" => self.set_late_policy(option)?,
            "table.exec.emit.allow-lateness" => {
                self.settings.allowed_lateness_ms = duration_setting(option)?;
            }
            "table.exec.emit.early-fire.enabled" => {
                self.settings.early_fire_enabled = bool_setting(option)?;
            }
            "table.exec.emit.early-fire.delay" => {
                self.settings.early_fire_delay_ms = Some(duration_setting(option)?);
            }
            "execution.checkpointing.interval" => {
                self.settings.checkpoint_interval_ms =
                    if off { 0 } else { duration_setting(option)? };
            }
            "state.checkpoints.num-retained" => {
                self.settings.checkpoints_retained = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        invalid(
                            option,
                            "'state.checkpoints.num-retained' is a number of checkpoints, at least 1",
                        )
                    })?;
            }
            "state.cache.size" => {
                let bytes = eddy_connectors::parse_memory_bytes(value)
                    .filter(|&b| b > 0)
                    .ok_or_else(|| {
                        PlanError::user(
                            format!(
                                "cannot read the memory size '{}' (write e.g. '64 mb', '512 kb' or '1 gb')",
                                option.value
                            ),
                            value_span(option),
                        )
                    })?;
                self.settings.state_cache_bytes = Some(bytes);
            }
            "table.exec.state.ttl" | "state.ttl" => {
                // 0 turns it off, as in Flink.
                self.settings.state_ttl_ms = if off {
                    None
                } else {
                    Some(duration_setting(option)?).filter(|&ms| ms > 0)
                };
            }
            "table.exec.state.ttl.time-domain" | "state.ttl.time-domain" => {
                self.settings.state_ttl_time_domain = match value.to_ascii_lowercase().as_str() {
                    "processing-time" | "processing_time" | "proctime" => {
                        TimeDomain::ProcessingTime
                    }
                    "event-time" | "event_time" | "rowtime" => TimeDomain::EventTime,
                    _ => {
                        return Err(invalid(
                            option,
                            "'table.exec.state.ttl.time-domain' is 'processing-time' (the wall clock) or 'event-time' (the watermark)",
                        ));
                    }
                };
            }
            key if key.starts_with("restart-strategy") => self.set_restart(option)?,
            "sql-client.execution.result-mode" => {
                self.settings.result_table = match value.to_ascii_lowercase().as_str() {
                    "table" => true,
                    "changelog" | "tableau" => false,
                    _ => {
                        return Err(invalid(
                            option,
                            "'sql-client.execution.result-mode' is 'table' or 'changelog'",
                        ));
                    }
                };
            }
            other => {
                return Err(PlanError::not_supported(
                    format!("the setting '{other}' (known: {KNOWN_SETTINGS})"),
                    option.key_span,
                ));
            }
        }
        Ok(())
    }

    /// `'late.policy'` (`'drop'` or `'dead-letter'`) and the sink it names,
    /// `'late.dead-letter-sink'`, in either order.
    fn set_late_policy(&mut self, option: &ast::SqlOption) -> Result<(), PlanError> {
        let settings = &mut self.settings;
        if option.key == "late.policy" {
            match option.value.to_ascii_lowercase().as_str() {
                "drop" => {
                    settings.late_policy = LatePolicy::Drop;
                    settings.dead_letter_wanted = false;
                }
                "dead-letter" => {
                    settings.dead_letter_wanted = true;
                    if let Some(sink) = &settings.dead_letter_sink {
                        settings.late_policy = LatePolicy::DeadLetter(sink.clone());
                    }
                }
                _ => return Err(invalid(option, "'late.policy' is 'drop' or 'dead-letter'")),
            }
            return Ok(());
        }
        let name = &option.value;
        let Some(sink) = self.catalog.sink(name) else {
            let names: Vec<&str> = self.catalog.sink_names().collect();
            let hint = did_you_mean(&suggestions(name, names.iter().copied()));
            return Err(PlanError::user(
                format!(
                    "unknown sink '{name}'{hint}: declare it first with CREATE SINK {name} WITH (...)"
                ),
                option.value_span,
            ));
        };
        if sink.schema.is_some() {
            return Err(PlanError::user(
                format!(
                    "the dead-letter sink '{name}' has a column list; declare it without one (it takes the late rows' columns, `_reason` and `_watermark`)"
                ),
                option.value_span,
            ));
        }
        settings.dead_letter_sink = Some(sink.name.clone());
        if settings.dead_letter_wanted {
            settings.late_policy = LatePolicy::DeadLetter(sink.name.clone());
        }
        Ok(())
    }

    /// A planner over `catalog` for statements of `sql`.
    fn planner<'a>(&'a self, catalog: &'a Catalog, sql: &'a str) -> QueryPlanner<'a> {
        QueryPlanner {
            catalog,
            binder: Binder {
                functions: &self.functions,
                sql,
            },
            parallelism: self.parallelism,
            settings: &self.settings,
            ctes: Vec::new(),
        }
    }

    /// The graph of `q` writing to `sink`: cast to the `target` columns if
    /// given, or to those of `columns` with NULL for the others.
    fn plan_query(
        &self,
        q: &Query,
        sql: &str,
        sink: SinkNode,
        target: Option<&datafusion::arrow::datatypes::Schema>,
        columns: &[ast::Ident],
    ) -> Result<PhysicalGraph, SessionError> {
        if self.settings.early_fire_enabled && self.settings.early_fire_delay_ms.is_none() {
            return Err(PlanError::user(
                "'table.exec.emit.early-fire.enabled' is 'true' but no delay is set: SET 'table.exec.emit.early-fire.delay' = '<how often, e.g. 5 s>'",
                q.span,
            )
            .into());
        }
        if self.settings.dead_letter_wanted && self.settings.late_policy == LatePolicy::Drop {
            return Err(PlanError::user(
                "'late.policy' is 'dead-letter' but no sink is named: SET 'late.dead-letter-sink' = '<a declared sink>'",
                q.span,
            )
            .into());
        }
        let mut plan = self.planner(&self.catalog, sql).plan(q)?;
        match (target, columns.first()) {
            (Some(target), Some(_)) => plan.spread_into(target, columns, &sink.name)?,
            (None, Some(first)) => {
                return Err(PlanError::user(
                    format!(
                        "'{}' declares no columns (it takes the query's): leave out the column list",
                        sink.name
                    ),
                    first.span,
                )
                .into());
            }
            _ => {}
        }
        let name = sink.name.clone();
        let graph = plan.into_graph(sink, target)?;
        self.check_sink_takes(&graph, &name, q.span)?;
        if let Some(node) = graph.event_time_ttl_without_watermark() {
            return Err(PlanError::user(
                format!(
                    "'table.exec.state.ttl.time-domain' is 'event-time' but no watermark reaches the {node} on every input, so its state would never expire: declare WATERMARK FOR a time column of its sources, or SET 'table.exec.state.ttl.time-domain' = 'processing-time'"
                ),
                q.span,
            )
            .into());
        }
        Ok(graph)
    }
}

impl Session {
    /// Asks the connector of sink `name` whether it takes the changelog
    /// of an updating query, now rather than when the job starts (the
    /// rest of what it checks, it checked against the declared columns).
    fn check_sink_takes(
        &self,
        graph: &PhysicalGraph,
        name: &str,
        span: Span,
    ) -> Result<(), PlanError> {
        let Some((sink, schema)) = graph.nodes.iter().find_map(|n| match &n.kind {
            crate::graph::NodeKind::Sink(s)
                if s.name == name
                    && !s.result_table
                    && n.schema
                        .index_of(eddy_operators::updating::OP_COLUMN)
                        .is_ok() =>
            {
                Some((s, Arc::new(n.schema.clone())))
            }
            _ => None,
        }) else {
            return Ok(());
        };
        let given: Vec<(String, String)> = sink.options.clone().into_iter().collect();
        self.connectors
            .validate(&given, Role::Sink)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                let table = eddy_connectors::Table {
                    name,
                    schema: &schema,
                    primary_key: &sink.primary_key,
                };
                self.connectors
                    .sink(&v, table)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| {
                PlanError::user(format!("'{name}' cannot take this query's rows: {e}"), span)
            })
    }
}

/// Where an error about a `SET` value points: the value.
fn value_span(option: &ast::SqlOption) -> Span {
    if option.value_span == Span::default() {
        option.span
    } else {
        option.value_span
    }
}

/// A `SET` value that does not fit: the rule, at the value.
fn invalid(option: &ast::SqlOption, rule: &str) -> PlanError {
    PlanError::user(
        format!("{rule}, not '{}'", option.value),
        value_span(option),
    )
}

impl Session {
    /// `SET 'restart-strategy.…'`: Flink's restart strategy settings.
    fn set_restart(&mut self, option: &ast::SqlOption) -> Result<(), PlanError> {
        let value = option.value.trim();
        let r = &mut self.settings.restart;
        let count = || -> Result<u32, PlanError> {
            value
                .parse::<u32>()
                .map_err(|_| invalid(option, "this setting is a number of attempts"))
        };
        let ms = || duration_setting(option).map(|ms| ms.max(0) as u64);
        let number = || -> Result<f64, PlanError> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| invalid(option, "this setting is a non-negative number"))
        };
        match option.key.as_str() {
            "restart-strategy.type" | "restart-strategy" => {
                let kind = value.to_ascii_lowercase();
                let known = [
                    "none",
                    "off",
                    "disable",
                    "fixed-delay",
                    "fixeddelay",
                    "exponential-delay",
                    "exponentialdelay",
                ];
                if !known.contains(&kind.as_str()) {
                    return Err(invalid(
                        option,
                        "'restart-strategy.type' is 'none', 'fixed-delay' or 'exponential-delay'",
                    ));
                }
                r.kind = kind;
            }
            "restart-strategy.fixed-delay.attempts" => r.fixed_attempts = count()?,
            "restart-strategy.fixed-delay.delay" => r.fixed_delay_ms = ms()?,
            "restart-strategy.exponential-delay.initial-backoff" => r.initial_ms = ms()?,
            "restart-strategy.exponential-delay.max-backoff" => r.max_ms = ms()?,
            "restart-strategy.exponential-delay.backoff-multiplier" => r.multiplier = number()?,
            "restart-strategy.exponential-delay.jitter-factor" => r.jitter = number()?.min(1.0),
            "restart-strategy.exponential-delay.attempts-before-reset-backoff" => {
                r.attempts = count()?
            }
            other => {
                return Err(PlanError::user(
                    format!(
                        "unknown restart setting '{other}' (known: {})",
                        crate::restart::RestartSettings::KEYS.join(", ")
                    ),
                    option.key_span,
                ));
            }
        }
        Ok(())
    }
}

/// The value of a `SET` whose value is a duration, in milliseconds.
fn duration_setting(option: &ast::SqlOption) -> Result<i64, PlanError> {
    eddy_connectors::parse_duration_ms(&option.value).ok_or_else(|| {
        PlanError::user(
            format!(
                "cannot read the duration '{}' (write e.g. '5 s', '500 ms' or '1 min')",
                option.value
            ),
            value_span(option),
        )
    })
}

/// The value of a `SET` whose value is `'true'` or `'false'`.
fn bool_setting(option: &ast::SqlOption) -> Result<bool, PlanError> {
    eddy_connectors::options::parse_bool(&option.value)
        .ok_or_else(|| invalid(option, &format!("'{}' is 'true' or 'false'", option.key)))
}

/// A source's columns for DESCRIBE.
fn describe_source(source: &crate::catalog::SourceDef) -> Vec<[String; 6]> {
    let key = if source.primary_key.is_empty() {
        String::new()
    } else {
        format!("PRI({})", source.primary_key.join(", "))
    };
    source
        .schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let computed = source.computed.as_ref().and_then(|c| {
                let e = &c.exprs[i];
                match e {
                    crate::expr::ScalarExpr::Column { name, .. } if name == f.name() => None,
                    other => Some(format!("AS {other}")),
                }
            });
            let watermark = source
                .watermark
                .as_ref()
                .filter(|w| w.column == *f.name())
                .map_or(String::new(), |w| w.expr.to_string());
            let is_key = source.primary_key.contains(f.name());
            describe_row(
                f,
                !watermark.is_empty(),
                if is_key { &key } else { "" },
                computed.as_deref().unwrap_or(""),
                &watermark,
            )
        })
        .collect()
}

/// One column of DESCRIBE: name, type (`*ROWTIME*` for the time
/// attribute), null, key, extras, watermark.
fn describe_row(
    f: &datafusion::arrow::datatypes::Field,
    time: bool,
    key: &str,
    extras: &str,
    watermark: &str,
) -> [String; 6] {
    let mut ty = crate::types::sql_name(f.data_type());
    if time {
        ty.push_str(" *ROWTIME*");
    }
    let null = if f.is_nullable() && key.is_empty() {
        "TRUE"
    } else {
        "FALSE"
    };
    [
        f.name().clone(),
        ty,
        null.into(),
        key.into(),
        extras.into(),
        watermark.into(),
    ]
}

/// Rows under a header, in columns as wide as their widest cell.
fn text_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join(" | ").trim_end())
    };
    let mut out = line(header.to_vec());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format!("{}\n", rule.join("-+-")));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
