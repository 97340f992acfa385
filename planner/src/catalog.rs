//! The catalog: sources and sinks declared so far in a session.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use eddy_connectors::{ConnectorError, ConnectorRegistry, OptionError, Role, Validated};
use eddy_operators::{DeliveryGuarantee, SourceProvider};
use eddy_parser::ast::{self, Span};

use crate::binder::{AggMode, Binder, Scope, coerce, sql_type};
use crate::error::{PlanError, Result};
use crate::expr::ScalarExpr;

#[derive(Debug, Clone)]
pub struct SourceDef {
    pub name: String,
    pub schema: SchemaRef,
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
}

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    sources: BTreeMap<String, SourceDef>,
    sinks: BTreeMap<String, SinkDef>,
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

pub(crate) fn columns_schema(columns: &[ast::ColumnDef]) -> Result<Schema> {
    let mut seen = HashSet::new();
    let mut fields = Vec::new();
    for c in columns {
        if !seen.insert(c.name.value.clone()) {
            return Err(PlanError::user(
                format!("column '{}' is declared twice", c.name.value),
                c.name.span,
            ));
        }
        fields.push(Field::new(&c.name.value, sql_type(&c.data_type), true));
    }
    Ok(Schema::new(fields))
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

    /// Removes a source; false if there was none.
    pub fn drop_source(&mut self, name: &str) -> bool {
        self.sources.remove(name).is_some()
    }

    /// Removes a sink; false if there was none.
    pub fn drop_sink(&mut self, name: &str) -> bool {
        self.sinks.remove(name).is_some()
    }

    fn check_free(&self, name: &ast::Ident) -> Result<()> {
        if self.sources.contains_key(&name.value) || self.sinks.contains_key(&name.value) {
            return Err(PlanError::user(
                format!("'{}' is already defined", name.value),
                name.span,
            ));
        }
        Ok(())
    }

    pub(crate) fn create_source(
        &mut self,
        s: &ast::CreateSource,
        binder: &Binder<'_>,
        registry: &ConnectorRegistry,
        span: Span,
    ) -> Result<String> {
        self.check_free(&s.name)?;
        let schema = Arc::new(columns_schema(&s.columns)?);
        for k in &s.primary_key {
            if schema.field_with_name(&k.value).is_err() {
                return Err(PlanError::user(
                    format!("PRIMARY KEY names unknown column '{}'", k.value),
                    k.span,
                ));
            }
        }
        let watermark = match &s.watermark {
            None => None,
            Some(w) => {
                let field = schema.field_with_name(&w.column.value).map_err(|_| {
                    PlanError::user(
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
                let df = DFSchema::try_from_qualified_schema(s.name.value.as_str(), &schema)?;
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
                Some(WatermarkDef {
                    column: w.column.value.clone(),
                    expr: ScalarExpr::from_df(&expr, &scope.schema)?,
                })
            }
        };
        let validated = validate_options(registry, &s.options, Role::Source, span)?;
        let provider = registry
            .source(&validated, &schema)
            .map_err(|e| connector_error(e, &s.options, span))?;
        let name = s.name.value.clone();
        self.sources.insert(
            name.clone(),
            SourceDef {
                name: name.clone(),
                schema,
                watermark,
                connector: validated.connector.name().to_string(),
                options: given_options(&validated),
                provider,
                primary_key: s.primary_key.iter().map(|k| k.value.clone()).collect(),
            },
        );
        Ok(name)
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
        if let Some(schema) = &schema {
            // What only the connector can check (a partition column, a
            // path), now rather than when the job starts.
            registry
                .sink(&validated, schema)
                .map_err(|e| connector_error(e, options, span))?;
        }
        Ok(SinkDef {
            name: name.value.clone(),
            schema,
            connector: validated.connector.name().to_string(),
            guarantee: validated.connector.guarantee(&validated.options),
            options: given_options(&validated),
        })
    }
}
