//! The catalog: sources and sinks declared so far in a session.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use eddy_connectors::{
    ConnectorError, ConnectorRegistry, METADATA_FIELD, OptionError, Role, SourceChangelog, Table,
    Validated,
};
use eddy_operators::{DeliveryGuarantee, SourceProvider};
use eddy_parser::ast::{self, Span};

use crate::binder::{AggMode, Binder, Scope, coerce, sql_type};
use crate::error::{PlanError, Result, did_you_mean, suggestions};
use crate::expr::ScalarExpr;

#[derive(Debug, Clone)]
pub struct SourceDef {
    pub name: String,
    /// The table's columns, computed ones included, in declared order.
    pub schema: SchemaRef,
    /// The columns the connector reads, and how the table's columns are
    /// computed from them; `None` when there are no computed columns.
    pub computed: Option<ComputedColumns>,
    pub watermark: Option<WatermarkDef>,
    /// The connector's name, as registered.
    pub connector: String,
    /// The options given (under their declared names), `connector` too.
    pub options: BTreeMap<String, String>,
    /// Made when the source was declared: its splits, parallelism limit
    /// and lookup table.
    pub provider: Arc<dyn SourceProvider>,
    /// `PRIMARY KEY (...) NOT ENFORCED`: its rows are versions of their
    /// key, for an event-time temporal join. Elsewhere they are read as
    /// they come (append-only), as in Flink.
    pub primary_key: Vec<String>,
    /// A computed column `name AS PROCTIME()`: a processing-time attribute
    /// (when the table has no WATERMARK), as in Flink.
    pub proctime: Option<String>,
    /// Whether its rows are changes: then the connector's rows carry an
    /// `_op` column after the physical ones.
    pub changelog: SourceChangelog,
}

/// `schema` with a changelog's `_op` column last.
pub(crate) fn with_op_column(schema: &Schema) -> Schema {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(
        crate::plan::OP_COLUMN,
        datafusion::arrow::datatypes::DataType::Int8,
        false,
    ));
    Schema::new(fields)
}

/// The first computed column that is `PROCTIME()`, if any.
fn proctime_column(columns: &[ast::ColumnDef]) -> Option<String> {
    columns.iter().find_map(|c| match &c.kind {
        ast::ColumnKind::Computed(ast::Expr {
            kind: ast::ExprKind::Function(f),
            ..
        }) if f.args.is_empty()
            && f.over.is_none()
            && f.name
                .value
                .eq_ignore_ascii_case(crate::functions::PROCTIME) =>
        {
            Some(c.name.value.clone())
        }
        _ => None,
    })
}

/// A table with computed columns: the connector reads `physical`, and
/// `exprs` (over those) make each of the table's columns.
#[derive(Debug, Clone)]
pub struct ComputedColumns {
    pub physical: SchemaRef,
    pub exprs: Vec<ScalarExpr>,
}

/// A view: a named query, planned where it is read.
#[derive(Debug, Clone)]
pub struct ViewDef {
    pub name: String,
    /// `CREATE VIEW v (a, b)`: the names of its columns.
    pub columns: Vec<ast::Ident>,
    pub query: ast::Query,
    /// The text the query's spans point into.
    pub sql: Arc<str>,
}

/// `WATERMARK FOR column AS expr`, bound over the source's columns.
#[derive(Debug, Clone)]
pub struct WatermarkDef {
    pub column: String,
    pub expr: ScalarExpr,
}

#[derive(Debug, Clone)]
pub struct SinkDef {
    pub name: String,
    /// Declared columns, or those of the query that created the sink.
    pub schema: Option<SchemaRef>,
    /// The connector's name, as registered.
    pub connector: String,
    /// The options given (under their declared names), `connector` too.
    pub options: BTreeMap<String, String>,
    pub guarantee: DeliveryGuarantee,
    /// `PRIMARY KEY (...) NOT ENFORCED`'s columns (a table's).
    pub primary_key: Vec<String>,
}

/// Tables are sources, sinks or both (one name in both maps); views are
/// named queries.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    sources: BTreeMap<String, SourceDef>,
    sinks: BTreeMap<String, SinkDef>,
    views: BTreeMap<String, ViewDef>,
    /// Tables that are written and cannot be read as declared (a file
    /// path still to be written): why, for the query that reads one.
    unreadable: BTreeMap<String, String>,
}

/// The span of `WITH (...)`: from the first option to the last.
fn options_span(options: &[ast::SqlOption], fallback: Span) -> Span {
    match (options.first(), options.last()) {
        (Some(a), Some(b)) => a.span.union(b.span),
        _ => fallback,
    }
}

/// Where an error about option `key` points: its value or its key.
fn option_span(options: &[ast::SqlOption], key: &str, value: bool, fallback: Span) -> Span {
    options
        .iter()
        .find(|o| o.key.eq_ignore_ascii_case(key))
        .map_or(fallback, |o| {
            let span = if value { o.value_span } else { o.key_span };
            if span == Span::default() {
                o.span
            } else {
                span
            }
        })
}

/// Checks a `WITH (...)` list against the registry, with errors at the
/// option they are about.
pub(crate) fn validate_options(
    registry: &ConnectorRegistry,
    options: &[ast::SqlOption],
    role: Role,
    span: Span,
) -> Result<Validated> {
    let given: Vec<(String, String)> = options
        .iter()
        .map(|o| (o.key.to_ascii_lowercase(), o.value.clone()))
        .collect();
    registry.validate(&given, role).map_err(|e: OptionError| {
        let at = match e.key() {
            Some(key) => option_span(
                options,
                key,
                e.is_about_value(),
                options_span(options, span),
            ),
            None => options_span(options, span),
        };
        PlanError::user(e.to_string(), at)
    })
}

/// A connector's error, at the option it is about when it names one.
pub(crate) fn connector_error(
    e: ConnectorError,
    options: &[ast::SqlOption],
    span: Span,
) -> PlanError {
    let at = match &e {
        ConnectorError::Option { option, .. } => {
            option_span(options, option, true, options_span(options, span))
        }
        _ => options_span(options, span),
    };
    PlanError::user(e.to_string(), at)
}

/// The options as stored in the catalog and the plan.
fn given_options(validated: &Validated) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = validated
        .options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    map.insert(
        eddy_connectors::registry::CONNECTOR.to_string(),
        validated.connector.name().to_string(),
    );
    map
}

/// The schema of a column list's physical columns (computed ones are
/// neither read nor written by a connector).
pub(crate) fn columns_schema(columns: &[ast::ColumnDef]) -> Result<Schema> {
    check_unique(columns)?;
    Ok(Schema::new(
        columns
            .iter()
            .filter_map(|c| {
                let t = c.data_type()?;
                let field = Field::new(&c.name.value, sql_type(t), true);
                Some(match &c.kind {
                    // The connector fills it: its key travels with the
                    // field, through the plan, to the connector.
                    ast::ColumnKind::Metadata { key, .. } => {
                        let key = key.clone().unwrap_or_else(|| c.name.value.clone());
                        field.with_metadata([(METADATA_FIELD.to_string(), key)].into())
                    }
                    _ => field,
                })
            })
            .collect::<Vec<_>>(),
    ))
}

/// The columns a table's writers get: its physical and non-`VIRTUAL`
/// metadata columns.
pub(crate) fn written_schema(columns: &[ast::ColumnDef]) -> Result<Schema> {
    let virtual_columns: HashSet<&str> = columns
        .iter()
        .filter(|c| {
            matches!(
                c.kind,
                ast::ColumnKind::Metadata {
                    is_virtual: true,
                    ..
                }
            )
        })
        .map(|c| c.name.value.as_str())
        .collect();
    let all = columns_schema(columns)?;
    Ok(Schema::new(
        all.fields()
            .iter()
            .filter(|f| !virtual_columns.contains(f.name().as_str()))
            .cloned()
            .collect::<Vec<_>>(),
    ))
}

/// Checks each metadata column's key against what the connector offers,
/// at the column (`written`: the table is also a sink, which writes its
/// non-`VIRTUAL` ones).
fn check_metadata(columns: &[ast::ColumnDef], validated: &Validated, written: bool) -> Result<()> {
    let offered = validated.connector.metadata_keys();
    for c in columns {
        let ast::ColumnKind::Metadata {
            key, is_virtual, ..
        } = &c.kind
        else {
            continue;
        };
        let key = key.as_deref().unwrap_or(&c.name.value);
        let names: Vec<&str> = offered.iter().map(|m| m.name).collect();
        let Some(found) = offered.iter().find(|m| m.name == key) else {
            let hint = match names.is_empty() {
                true => format!(
                    "the '{}' connector has no metadata",
                    validated.connector.name()
                ),
                false => format!("its metadata: {}", names.join(", ")),
            };
            return Err(PlanError::user(
                format!("unknown metadata key '{key}' ({hint})"),
                c.span,
            ));
        };
        if written && !is_virtual && !found.writable {
            return Err(PlanError::user(
                format!("metadata '{key}' can only be read: declare the column VIRTUAL"),
                c.span,
            ));
        }
    }
    Ok(())
}

fn check_unique(columns: &[ast::ColumnDef]) -> Result<()> {
    let mut seen = HashSet::new();
    for c in columns {
        if !seen.insert(c.name.value.clone()) {
            return Err(PlanError::user(
                format!("column '{}' is declared twice", c.name.value),
                c.name.span,
            ));
        }
    }
    Ok(())
}

/// A table's columns, bound: what the connector reads, the table's own
/// columns, and how they are computed when some are.
fn bind_columns(
    s: &ast::CreateSource,
    binder: &Binder<'_>,
) -> Result<(SchemaRef, SchemaRef, Option<ComputedColumns>)> {
    let physical = Arc::new(columns_schema(&s.columns)?);
    if s.columns.iter().all(|c| c.data_type().is_some()) {
        return Ok((physical.clone(), physical, None));
    }
    let df = DFSchema::try_from_qualified_schema(s.name.value.as_str(), &physical)?;
    let scope = Scope::single(&s.name.value, &s.name.value, Arc::new(df));
    let mut fields = Vec::new();
    let mut exprs = Vec::new();
    for c in &s.columns {
        let (expr, field) = match &c.kind {
            ast::ColumnKind::Physical(_) | ast::ColumnKind::Metadata { .. } => {
                let i = physical
                    .index_of(&c.name.value)
                    .map_err(|e| PlanError::internal(e.to_string()))?;
                let field = physical.field(i).clone();
                (ScalarExpr::column(c.name.value.clone(), i), field)
            }
            ast::ColumnKind::Computed(e) => {
                let bound = binder.bind(e, &scope, AggMode::Forbidden("a computed column"))?;
                let (bound, field) = coerce(bound, &scope.schema, e.span)?;
                let expr = ScalarExpr::from_df(&bound, &scope.schema)?;
                (expr, field.with_name(c.name.value.clone()))
            }
        };
        exprs.push(expr);
        fields.push(field);
    }
    let computed = ComputedColumns {
        physical: physical.clone(),
        exprs,
    };
    Ok((physical, Arc::new(Schema::new(fields)), Some(computed)))
}

/// `WATERMARK FOR column AS expr`, bound over the table's columns.
fn bind_watermark(
    s: &ast::CreateSource,
    schema: &SchemaRef,
    binder: &Binder<'_>,
) -> Result<Option<WatermarkDef>> {
    let Some(w) = &s.watermark else {
        return Ok(None);
    };
    let field = schema.field_with_name(&w.column.value).map_err(|_| {
        PlanError::unknown_column(
            format!("WATERMARK FOR names unknown column '{}'", w.column.value),
            w.column.span,
        )
    })?;
    if !matches!(field.data_type(), DataType::Timestamp(..)) {
        return Err(PlanError::user(
            format!(
                "the WATERMARK column '{}' must be a TIMESTAMP, not {}",
                w.column.value,
                field.data_type()
            ),
            w.column.span,
        ));
    }
    let df = DFSchema::try_from_qualified_schema(s.name.value.as_str(), schema)?;
    let scope = Scope::single(&s.name.value, &s.name.value, Arc::new(df));
    let bound = binder.bind(
        &w.expr,
        &scope,
        AggMode::Forbidden("a WATERMARK expression"),
    )?;
    let (expr, field) = coerce(bound, &scope.schema, w.expr.span)?;
    if !matches!(field.data_type(), DataType::Timestamp(..)) {
        return Err(PlanError::user(
            format!(
                "a WATERMARK expression must produce a TIMESTAMP, not {}",
                field.data_type()
            ),
            w.expr.span,
        ));
    }
    Ok(Some(WatermarkDef {
        column: w.column.value.clone(),
        expr: ScalarExpr::from_df(&expr, &scope.schema)?,
    }))
}

impl Catalog {
    pub fn source(&self, name: &str) -> Option<&SourceDef> {
        self.sources.get(name)
    }

    pub fn sink(&self, name: &str) -> Option<&SinkDef> {
        self.sinks.get(name)
    }

    pub fn source_names(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    pub fn sink_names(&self) -> impl Iterator<Item = &str> {
        self.sinks.keys().map(String::as_str)
    }

    pub fn view(&self, name: &str) -> Option<&ViewDef> {
        self.views.get(name)
    }

    pub fn view_names(&self) -> impl Iterator<Item = &str> {
        self.views.keys().map(String::as_str)
    }

    /// Every table (source or sink) and view name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.source_names().chain(self.view_names()).collect();
        names.extend(self.sink_names().filter(|n| !self.sources.contains_key(*n)));
        names.sort_unstable();
        names
    }

    /// Removes a source; false if there was none.
    pub fn drop_source(&mut self, name: &str) -> bool {
        self.sources.remove(name).is_some()
    }

    /// Removes a sink; false if there was none.
    pub fn drop_sink(&mut self, name: &str) -> bool {
        self.sinks.remove(name).is_some()
    }

    /// Why a table that is written cannot be read, if it cannot.
    pub fn unreadable(&self, name: &str) -> Option<&str> {
        self.unreadable.get(name).map(String::as_str)
    }

    /// Removes a table, the source and the sink it is; false if there was
    /// none.
    pub fn drop_table(&mut self, name: &str) -> bool {
        self.unreadable.remove(name);
        let source = self.sources.remove(name).is_some();
        self.sinks.remove(name).is_some() || source
    }

    /// Removes a view; false if there was none.
    pub fn drop_view(&mut self, name: &str) -> bool {
        self.views.remove(name).is_some()
    }

    fn exists(&self, name: &str) -> bool {
        self.sources.contains_key(name)
            || self.sinks.contains_key(name)
            || self.views.contains_key(name)
    }

    fn check_free(&self, name: &ast::Ident) -> Result<()> {
        if self.exists(&name.value) {
            return Err(PlanError::user(
                format!("'{}' is already defined", name.value),
                name.span,
            ));
        }
        Ok(())
    }

    /// `CREATE VIEW`; false if it existed and `IF NOT EXISTS` was said.
    pub(crate) fn create_view(&mut self, v: &ast::CreateView, sql: &Arc<str>) -> Result<bool> {
        if v.if_not_exists && self.exists(&v.name.value) {
            return Ok(false);
        }
        self.check_free(&v.name)?;
        let view = ViewDef {
            name: v.name.value.clone(),
            columns: v.columns.clone(),
            query: v.query.clone(),
            sql: sql.clone(),
        };
        self.views.insert(v.name.value.clone(), view);
        Ok(true)
    }

    /// `CREATE SOURCE`, or `CREATE TABLE`: a source if its connector reads,
    /// and also a sink if it is a table and its connector writes. `options`
    /// are the statement's, `PARTITIONED BY` among them.
    pub(crate) fn create_source(
        &mut self,
        s: &ast::CreateSource,
        options: &[ast::SqlOption],
        binder: &Binder<'_>,
        registry: &ConnectorRegistry,
        span: Span,
    ) -> Result<String> {
        let name = s.name.value.clone();
        if s.if_not_exists && self.exists(&name) {
            return Ok(name);
        }
        self.check_free(&s.name)?;
        let (physical, schema, computed) = bind_columns(s, binder)?;
        for k in &s.primary_key {
            if schema.field_with_name(&k.value).is_err() {
                return Err(PlanError::unknown_column(
                    format!("PRIMARY KEY names unknown column '{}'", k.value),
                    k.span,
                ));
            }
        }
        let watermark = bind_watermark(s, &schema, binder)?;
        let role = if s.table { Role::Both } else { Role::Source };
        let validated = validate_options(registry, options, role, span)?;
        let (reads, writes) = (
            validated.connector.is_source(),
            s.table && validated.connector.is_sink(),
        );
        check_metadata(&s.columns, &validated, writes)?;
        if reads {
            self.check_dead_letter(&validated, options, span)?;
        }
        let primary_key: Vec<String> = s.primary_key.iter().map(|k| k.value.clone()).collect();
        // A table read and written is checked for each use when it is
        // used (INSERT checks the sink; as Flink, which validates a table
        // as a source or a sink when it is read or written).
        let sink = writes
            .then(|| {
                let schema = Some(Arc::new(written_schema(&s.columns)?));
                let checked = (!reads).then_some(registry);
                let key = primary_key.clone();
                sink_of(&s.name, (schema, key), &validated, options, checked, span)
            })
            .transpose()?;
        let changelog = if reads {
            registry.source_changelog(&validated)
        } else {
            SourceChangelog::AppendOnly
        };
        if changelog == SourceChangelog::Upsert && primary_key.is_empty() {
            return Err(PlanError::user(
                format!(
                    "the '{}' connector reads upserts by key: declare the key with PRIMARY KEY (...) NOT ENFORCED",
                    validated.connector.name()
                ),
                s.name.span,
            ));
        }
        let read_schema = match changelog {
            SourceChangelog::AppendOnly => physical.clone(),
            _ => Arc::new(with_op_column(&physical)),
        };
        let table = Table {
            name: &name,
            schema: &read_schema,
            primary_key: &primary_key,
        };
        let provider = match reads.then(|| registry.source(&validated, table)) {
            Some(Err(e)) if writes => {
                self.unreadable.insert(name.clone(), e.to_string());
                None
            }
            Some(result) => Some(result.map_err(|e| connector_error(e, options, span))?),
            None => None,
        };
        if let Some(provider) = provider {
            let def = SourceDef {
                name: name.clone(),
                schema,
                computed,
                watermark,
                connector: validated.connector.name().to_string(),
                options: given_options(&validated),
                provider,
                primary_key,
                proctime: proctime_column(&s.columns),
                changelog,
            };
            self.sources.insert(name.clone(), def);
        }
        if let Some(sink) = sink {
            self.sinks.insert(name.clone(), sink);
        }
        Ok(name)
    }

    /// Makes sink `name` (a materialized view: its connector keeps the
    /// rows) readable by other jobs too, through the same connector: as a
    /// retracting changelog when its query emits one, else append-only.
    pub(crate) fn read_sink_too(
        &mut self,
        name: &ast::Ident,
        registry: &ConnectorRegistry,
    ) -> Result<()> {
        let Some(sink) = self.sinks.get(&name.value) else {
            return Err(PlanError::internal(format!("no sink '{}'", name.value)));
        };
        let written = sink
            .schema
            .clone()
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let changelog = written.index_of(crate::plan::OP_COLUMN).is_ok();
        let fields: Vec<Field> = written
            .fields()
            .iter()
            .filter(|f| f.name() != crate::plan::OP_COLUMN)
            .map(|f| f.as_ref().clone())
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let given = vec![(
            eddy_connectors::registry::CONNECTOR.to_string(),
            sink.connector.clone(),
        )];
        let validated = registry
            .validate(&given, Role::Source)
            .map_err(|e| PlanError::internal(e.to_string()))?;
        let (changelog, read_schema) = if changelog {
            (
                SourceChangelog::Retracting,
                Arc::new(with_op_column(&schema)),
            )
        } else {
            (SourceChangelog::AppendOnly, schema.clone())
        };
        let table = Table {
            name: &name.value,
            schema: &read_schema,
            primary_key: &[],
        };
        let provider = registry
            .source(&validated, table)
            .map_err(|e| PlanError::user(e.to_string(), name.span))?;
        let def = SourceDef {
            name: name.value.clone(),
            schema,
            computed: None,
            watermark: None,
            connector: sink.connector.clone(),
            options: given_options(&validated),
            provider,
            primary_key: Vec::new(),
            proctime: None,
            changelog,
        };
        self.sources.insert(name.value.clone(), def);
        Ok(())
    }

    /// `'bad-data' = 'dead-letter'` names a declared sink that takes the
    /// dead-letter rows: without a column list, or with theirs.
    fn check_dead_letter(
        &self,
        validated: &Validated,
        options: &[ast::SqlOption],
        span: Span,
    ) -> Result<()> {
        use eddy_connectors::bad_data::{BAD_DATA, DEAD_LETTER_SINK, dead_letter_schema};
        if validated.options.get(BAD_DATA) != Some("dead-letter") {
            return Ok(());
        }
        let fallback = options_span(options, span);
        let Some(name) = validated.options.get(DEAD_LETTER_SINK) else {
            return Err(PlanError::user(
                "'bad-data' = 'dead-letter' needs 'bad-data.dead-letter-sink', the name of a declared sink",
                option_span(options, BAD_DATA, true, fallback),
            ));
        };
        let at = option_span(options, DEAD_LETTER_SINK, true, fallback);
        let Some(sink) = self.sinks.get(name) else {
            let hint = did_you_mean(&suggestions(name, self.sink_names()));
            return Err(PlanError::user(
                format!(
                    "unknown sink '{name}'{hint}: declare the dead-letter sink before the source"
                ),
                at,
            ));
        };
        let want = dead_letter_schema();
        if let Some(schema) = &sink.schema {
            let fits = schema.fields().len() == want.fields().len()
                && schema
                    .fields()
                    .iter()
                    .zip(want.fields())
                    .all(|(have, want)| {
                        have.name() == want.name() && have.data_type() == want.data_type()
                    });
            if !fits {
                let columns: Vec<String> = want
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", f.name(), crate::types::sql_name(f.data_type())))
                    .collect();
                return Err(PlanError::user(
                    format!(
                        "the dead-letter sink '{name}' must have the columns ({}), or no column list",
                        columns.join(", ")
                    ),
                    at,
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn create_sink(
        &mut self,
        name: &ast::Ident,
        schema: Option<SchemaRef>,
        options: &[ast::SqlOption],
        registry: &ConnectorRegistry,
        span: Span,
    ) -> Result<SinkDef> {
        self.check_free(name)?;
        let sink = self.sink_def(name, schema, options, registry, span)?;
        self.sinks.insert(sink.name.clone(), sink.clone());
        Ok(sink)
    }

    /// Validates a sink definition without registering it.
    pub(crate) fn sink_def(
        &self,
        name: &ast::Ident,
        schema: Option<SchemaRef>,
        options: &[ast::SqlOption],
        registry: &ConnectorRegistry,
        span: Span,
    ) -> Result<SinkDef> {
        let validated = validate_options(registry, options, Role::Sink, span)?;
        sink_of(
            name,
            (schema, Vec::new()),
            &validated,
            options,
            Some(registry),
            span,
        )
    }
}

/// A sink of validated options, checked by the connector now if
/// `registry` is given.
fn sink_of(
    name: &ast::Ident,
    (schema, primary_key): (Option<SchemaRef>, Vec<String>),
    validated: &Validated,
    options: &[ast::SqlOption],
    registry: Option<&ConnectorRegistry>,
    span: Span,
) -> Result<SinkDef> {
    if let (Some(schema), Some(registry)) = (&schema, registry) {
        // What only the connector can check (a partition column, a
        // path), now rather than when the job starts.
        let table = Table {
            name: &name.value,
            schema,
            primary_key: &primary_key,
        };
        registry
            .sink(validated, table)
            .map_err(|e| connector_error(e, options, span))?;
    }
    Ok(SinkDef {
        name: name.value.clone(),
        schema,
        connector: validated.connector.name().to_string(),
        guarantee: validated.connector.guarantee(&validated.options),
        options: given_options(validated),
        primary_key,
    })
}
