//! A session: runs the statements of a file against a catalog, turning
//! each continuous query into a [`Job`] (a physical graph to build and run).

use std::collections::BTreeMap;
use std::sync::Arc;

use eddy_parser::ast::{Query, Statement, StatementKind};
use eddy_parser::{ParseError, parse_statements, render_diagnostic};

use crate::binder::Binder;
use crate::catalog::{Catalog, columns_schema};
use crate::error::{PlanError, PlanErrorKind};
use crate::functions::Functions;
use crate::graph::PhysicalGraph;
use crate::plan::{QueryPlanner, sink_schema};

/// A continuous query ready to run: its graph ends in a sink.
#[derive(Debug, Clone)]
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

#[derive(Debug)]
pub struct Session {
    catalog: Catalog,
    functions: Functions,
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

/// Settings of a session that shape how the queries after them are
/// planned. Each is a `SET 'key' = 'value'` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
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
            dead_letter_sink: None,
            dead_letter_wanted: false,
        }
    }
}

/// Checkpoint every 10 s unless told otherwise.
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: i64 = 10_000;
/// Keep the last 3 complete checkpoints: two to fall back on.
pub const DEFAULT_CHECKPOINTS_RETAINED: usize = 3;

/// The sink option a table-mode SELECT's sink gets.
pub const RESULT_MODE: &str = "result-mode";

/// The settings `SET` knows, for the message about an unknown one.
const KNOWN_SETTINGS: &str = "parallelism, 'late.policy', 'late.dead-letter-sink', 'table.exec.emit.allow-lateness', 'table.exec.emit.early-fire.enabled', 'table.exec.emit.early-fire.delay', 'sql-client.execution.result-mode', 'execution.checkpointing.interval', 'state.checkpoints.num-retained', 'state.cache.size', 'table.exec.state.ttl'";

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

    fn next_job_name(&mut self, what: &str) -> String {
        self.jobs += 1;
        format!("job{}-{what}", self.jobs)
    }

    fn statement(
        &mut self,
        stmt: &Statement,
        sql: &str,
        explain: bool,
    ) -> Result<Outcome, SessionError> {
        let binder = Binder {
            functions: &self.functions,
            sql,
        };
        match &stmt.kind {
            StatementKind::CreateSource(s) => {
                if explain {
                    return Err(
                        PlanError::not_supported("EXPLAIN of CREATE SOURCE", stmt.span).into(),
                    );
                }
                Ok(Outcome::Created(
                    self.catalog.create_source(s, &binder, stmt.span)?,
                ))
            }
            StatementKind::CreateSink(s) => {
                let options = sink_options(s)?;
                let declared = s
                    .columns
                    .as_ref()
                    .map(|c| columns_schema(c).map(Arc::new))
                    .transpose()?;
                let Some(query) = &s.query else {
                    if explain {
                        return Err(PlanError::not_supported(
                            "EXPLAIN of CREATE SINK without AS SELECT",
                            stmt.span,
                        )
                        .into());
                    }
                    // Without a column list the sink takes the columns of
                    // whatever is written to it (an INSERT's query, or a
                    // window's late rows).
                    self.catalog
                        .create_sink(&s.name, declared, &options, stmt.span)?;
                    return Ok(Outcome::Created(s.name.value.clone()));
                };
                let def = self
                    .catalog
                    .sink_def(&s.name, declared.clone(), &options, stmt.span)?;
                if self.catalog.sink(&s.name.value).is_some()
                    || self.catalog.source(&s.name.value).is_some()
                {
                    return Err(PlanError::user(
                        format!("'{}' is already defined", s.name.value),
                        s.name.span,
                    )
                    .into());
                }
                let graph = self.plan_query(
                    query,
                    sql,
                    &def.name,
                    def.options.clone(),
                    declared.as_deref(),
                )?;
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
                    .create_sink(&s.name, schema, &options, stmt.span)?;
                let name = self.next_job_name(&s.name.value);
                Ok(Outcome::Job(Job {
                    name,
                    graph,
                    is_select: false,
                    checkpoint_interval_ms: self.settings.checkpoint_interval_ms,
                    checkpoints_retained: self.settings.checkpoints_retained,
                }))
            }
            StatementKind::Insert(ins) => {
                let Some(sink) = self.catalog.sink(&ins.target.value).cloned() else {
                    let names: Vec<&str> = self.catalog.sink_names().collect();
                    let hint = crate::error::did_you_mean(&crate::error::suggestions(
                        &ins.target.value,
                        names.iter().copied(),
                    ));
                    return Err(PlanError::user(
                        format!("unknown sink '{}'{hint}", ins.target.value),
                        ins.target.span,
                    )
                    .into());
                };
                let graph = self.plan_query(
                    &ins.query,
                    sql,
                    &sink.name,
                    sink.options.clone(),
                    sink.schema.as_deref(),
                )?;
                if explain {
                    return Ok(Outcome::Explain(graph.explain()));
                }
                let name = self.next_job_name(&sink.name);
                Ok(Outcome::Job(Job {
                    name,
                    graph,
                    is_select: false,
                    checkpoint_interval_ms: self.settings.checkpoint_interval_ms,
                    checkpoints_retained: self.settings.checkpoints_retained,
                }))
            }
            StatementKind::Query(q) => {
                let mut sink = self.select_sink.clone();
                if self.settings.result_table {
                    sink.insert(RESULT_MODE.to_string(), "table".to_string());
                }
                let graph = self.plan_query(q, sql, "select", sink, None)?;
                if explain {
                    return Ok(Outcome::Explain(graph.explain()));
                }
                let name = self.next_job_name("select");
                Ok(Outcome::Job(Job {
                    name,
                    graph,
                    is_select: true,
                    checkpoint_interval_ms: self.settings.checkpoint_interval_ms,
                    checkpoints_retained: self.settings.checkpoints_retained,
                }))
            }
            StatementKind::CreateView(v) => {
                let what = if v.materialized {
                    "CREATE MATERIALIZED VIEW"
                } else {
                    "CREATE VIEW"
                };
                Err(PlanError::not_supported(what, v.name.span).into())
            }
            StatementKind::Drop(d) => {
                use eddy_parser::ast::ObjectKind;
                let dropped = match d.kind {
                    ObjectKind::Source => self.catalog.drop_source(&d.name.value),
                    ObjectKind::Sink => self.catalog.drop_sink(&d.name.value),
                    ObjectKind::View | ObjectKind::MaterializedView => false,
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
            StatementKind::Show(what) => {
                use eddy_parser::ast::ShowKind;
                let names: Vec<&str> = match what {
                    ShowKind::Sources => self.catalog.source_names().collect(),
                    ShowKind::Sinks => self.catalog.sink_names().collect(),
                    ShowKind::Views => vec![],
                    ShowKind::Jobs => {
                        return Err(PlanError::not_supported(
                            "SHOW JOBS (it needs `eddy server`)",
                            stmt.span,
                        )
                        .into());
                    }
                };
                Ok(Outcome::Info(
                    names.iter().map(|n| format!("{n}\n")).collect(),
                ))
            }
            StatementKind::Describe(name) => {
                let schema = match (
                    self.catalog.source(&name.value),
                    self.catalog.sink(&name.value),
                ) {
                    (Some(s), _) => s.schema.clone(),
                    (None, Some(k)) => k
                        .schema
                        .clone()
                        .unwrap_or_else(|| Arc::new(datafusion::arrow::datatypes::Schema::empty())),
                    (None, None) => {
                        let names: Vec<&str> = self
                            .catalog
                            .source_names()
                            .chain(self.catalog.sink_names())
                            .collect();
                        let hint = crate::error::did_you_mean(&crate::error::suggestions(
                            &name.value,
                            names.iter().copied(),
                        ));
                        return Err(PlanError::user(
                            format!("unknown table '{}'{hint}", name.value),
                            name.span,
                        )
                        .into());
                    }
                };
                let text = schema
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}\n", f.name(), f.data_type()))
                    .collect();
                Ok(Outcome::Info(text))
            }
            StatementKind::Set(option) => match option.key.as_str() {
                "parallelism" => {
                    let n: usize =
                        option
                            .value
                            .parse()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| {
                                PlanError::user(
                                    format!(
                                        "parallelism must be a positive integer, not '{}'",
                                        option.value
                                    ),
                                    option.span,
                                )
                            })?;
                    self.parallelism = n;
                    Ok(Outcome::Info(String::new()))
                }
                "late.policy" => {
                    match option.value.to_ascii_lowercase().as_str() {
                        "drop" => {
                            self.settings.late_policy = LatePolicy::Drop;
                            self.settings.dead_letter_wanted = false;
                        }
                        "dead-letter" => {
                            self.settings.dead_letter_wanted = true;
                            if let Some(sink) = &self.settings.dead_letter_sink {
                                self.settings.late_policy = LatePolicy::DeadLetter(sink.clone());
                            }
                        }
                        other => {
                            return Err(PlanError::user(
                                format!("'late.policy' is 'drop' or 'dead-letter', not '{other}'"),
                                option.span,
                            )
                            .into());
                        }
                    }
                    Ok(Outcome::Info(String::new()))
                }
                "late.dead-letter-sink" => {
                    let name = &option.value;
                    let Some(sink) = self.catalog.sink(name) else {
                        let names: Vec<&str> = self.catalog.sink_names().collect();
                        let hint = crate::error::did_you_mean(&crate::error::suggestions(
                            name,
                            names.iter().copied(),
                        ));
                        return Err(PlanError::user(
                            format!(
                                "unknown sink '{name}'{hint}: declare it first with CREATE SINK {name} WITH (...)"
                            ),
                            option.span,
                        )
                        .into());
                    };
                    if sink.schema.is_some() {
                        return Err(PlanError::user(
                            format!(
                                "the dead-letter sink '{name}' has a column list; declare it without one (it takes the late rows' columns, `_reason` and `_watermark`)"
                            ),
                            option.span,
                        )
                        .into());
                    }
                    self.settings.dead_letter_sink = Some(sink.name.clone());
                    if self.settings.dead_letter_wanted {
                        self.settings.late_policy = LatePolicy::DeadLetter(sink.name.clone());
                    }
                    Ok(Outcome::Info(String::new()))
                }
                "table.exec.emit.allow-lateness" => {
                    let ms = duration_setting(option)?;
                    self.settings.allowed_lateness_ms = ms;
                    Ok(Outcome::Info(String::new()))
                }
                "table.exec.emit.early-fire.enabled" => {
                    self.settings.early_fire_enabled = match option
                        .value
                        .to_ascii_lowercase()
                        .as_str()
                    {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(PlanError::user(
                                    format!(
                                        "'table.exec.emit.early-fire.enabled' is 'true' or 'false', not '{other}'"
                                    ),
                                    option.span,
                                )
                                .into());
                        }
                    };
                    Ok(Outcome::Info(String::new()))
                }
                "table.exec.emit.early-fire.delay" => {
                    let ms = duration_setting(option)?;
                    self.settings.early_fire_delay_ms = Some(ms);
                    Ok(Outcome::Info(String::new()))
                }
                "execution.checkpointing.interval" => {
                    let off = ["off", "none"].contains(&option.value.trim());
                    self.settings.checkpoint_interval_ms =
                        if off { 0 } else { duration_setting(option)? };
                    Ok(Outcome::Info(String::new()))
                }
                "state.checkpoints.num-retained" => {
                    self.settings.checkpoints_retained = option
                        .value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| {
                            PlanError::user(
                                format!(
                                    "'state.checkpoints.num-retained' is a number of checkpoints, at least 1, not '{}'",
                                    option.value
                                ),
                                option.span,
                            )
                        })?;
                    Ok(Outcome::Info(String::new()))
                }
                "state.cache.size" => {
                    let bytes = eddy_connectors::parse_memory_bytes(&option.value)
                        .filter(|&b| b > 0)
                        .ok_or_else(|| {
                            PlanError::user(
                                format!(
                                    "cannot read the memory size '{}' (write e.g. '64 mb', '512 kb' or '1 gb')",
                                    option.value
                                ),
                                option.span,
                            )
                        })?;
                    self.settings.state_cache_bytes = Some(bytes);
                    Ok(Outcome::Info(String::new()))
                }
                "table.exec.state.ttl" | "state.ttl" => {
                    // 0 turns it off, as in Flink.
                    let off = ["off", "none"].contains(&option.value.trim());
                    self.settings.state_ttl_ms = if off {
                        None
                    } else {
                        Some(duration_setting(option)?).filter(|&ms| ms > 0)
                    };
                    Ok(Outcome::Info(String::new()))
                }
                "sql-client.execution.result-mode" => {
                    self.settings.result_table = match option.value.to_ascii_lowercase().as_str() {
                        "table" => true,
                        "changelog" | "tableau" => false,
                        other => {
                            return Err(PlanError::user(
                                    format!(
                                        "'sql-client.execution.result-mode' is 'table' or 'changelog', not '{other}'"
                                    ),
                                    option.span,
                                )
                                .into());
                        }
                    };
                    Ok(Outcome::Info(String::new()))
                }
                other => Err(PlanError::not_supported(
                    format!("the setting '{other}' (known: {KNOWN_SETTINGS})"),
                    option.span,
                )
                .into()),
            },
            StatementKind::Explain(inner) => {
                if explain {
                    return Err(
                        PlanError::user("EXPLAIN EXPLAIN is not meaningful", stmt.span).into(),
                    );
                }
                self.statement(inner, sql, true)
            }
        }
    }

    fn plan_query(
        &self,
        q: &Query,
        sql: &str,
        sink: &str,
        sink_options: BTreeMap<String, String>,
        target: Option<&datafusion::arrow::datatypes::Schema>,
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
        let planner = QueryPlanner {
            catalog: &self.catalog,
            binder: Binder {
                functions: &self.functions,
                sql,
            },
            parallelism: self.parallelism,
            settings: &self.settings,
            ctes: Vec::new(),
        };
        Ok(planner.plan(q)?.into_graph(sink, sink_options, target)?)
    }
}

/// The value of a `SET` whose value is a duration, in milliseconds.
fn duration_setting(option: &eddy_parser::ast::SqlOption) -> Result<i64, PlanError> {
    eddy_connectors::parse_duration_ms(&option.value).ok_or_else(|| {
        PlanError::user(
            format!(
                "cannot read the duration '{}' (write e.g. '5 s', '500 ms' or '1 min')",
                option.value
            ),
            option.span,
        )
    })
}

/// A sink's options, with `PARTITIONED BY (a, b)` as the file sink's
/// `'partitioned-by' = 'a,b'`.
fn sink_options(
    s: &eddy_parser::ast::CreateSink,
) -> Result<Vec<eddy_parser::ast::SqlOption>, PlanError> {
    let mut options = s.options.clone();
    let Some(first) = s.partitioned_by.first() else {
        return Ok(options);
    };
    let connector = options
        .iter()
        .find(|o| o.key == "connector")
        .map(|o| o.value.as_str());
    if !matches!(connector, Some("file" | "filesystem")) {
        return Err(PlanError::user(
            "PARTITIONED BY needs a file sink (connector = 'file')",
            first.span,
        ));
    }
    if let Some(o) = options
        .iter()
        .find(|o| o.key == eddy_connectors::PARTITIONED_BY)
    {
        return Err(PlanError::user(
            "write the partition columns once: PARTITIONED BY (...) or 'partitioned-by'",
            o.span,
        ));
    }
    let columns: Vec<&str> = s.partitioned_by.iter().map(|c| c.value.as_str()).collect();
    options.push(eddy_parser::ast::SqlOption {
        key: eddy_connectors::PARTITIONED_BY.to_string(),
        value: columns.join(","),
        span: first.span,
    });
    Ok(options)
}
