//! Ad-hoc queries: `SELECT ... FROM v [WHERE ...] [ORDER BY ...] [LIMIT
//! n]` over materialized views, and clients' queries of the Postgres
//! catalog (`pg_catalog`, `information_schema`), answered at once by
//! DataFusion in batch mode over each view's current rows. No job starts.
//!
//! A query is ad hoc when every table it reads is a materialized view or
//! a catalog table (or it reads none, as `SELECT version()`); a query that
//! reads a source is continuous and is planned as a job.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{self, ObjectName, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

use super::App;
use super::postgres::catalog;
use super::statements::{Failure, FailureKind, Rows};

/// The database name clients see (`current_database()`).
pub(crate) const DATABASE: &str = "eddy";

/// An ad-hoc query, planned over the current rows of the views it reads.
pub(crate) struct Prepared {
    ctx: SessionContext,
    plan: LogicalPlan,
}

impl Prepared {
    /// The columns the query returns.
    pub(crate) fn schema(&self) -> SchemaRef {
        Arc::new(self.plan.schema().as_arrow().clone())
    }

    /// The types of `$1`, `$2`, ... where the query implies them.
    pub(crate) fn parameter_types(&self) -> Vec<Option<DataType>> {
        let types = self.plan.get_parameter_types().unwrap_or_default();
        let count = types
            .keys()
            .filter_map(|k| k.strip_prefix('$')?.parse::<usize>().ok())
            .max()
            .unwrap_or(0);
        (1..=count)
            .map(|i| types.get(&format!("${i}")).cloned().flatten())
            .collect()
    }

    /// Runs the query with values for its parameters.
    pub(crate) fn run(self, parameters: Vec<ScalarValue>) -> Result<Rows, Failure> {
        let plan = if parameters.is_empty() {
            self.plan
        } else {
            self.plan
                .with_param_values(parameters)
                .map_err(|e| failure(&e))?
        };
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let ctx = self.ctx;
        let batches =
            block_on(async move { ctx.execute_logical_plan(plan).await?.collect().await })
                .map_err(|e| failure(&e))?;
        Ok(Rows { schema, batches })
    }
}

/// The answer of `sql` if it is an ad-hoc query; `None` if it is not
/// one (it is then a continuous query, planned as a job, or not SQL this
/// dialect reads).
pub(crate) fn query(app: &App, sql: &str) -> Option<Result<Rows, Failure>> {
    Some(prepare(app, sql)?.and_then(|p| p.run(Vec::new())))
}

/// Plans `sql` over the views' current rows, if it is an ad-hoc query.
pub(crate) fn prepare(app: &App, sql: &str) -> Option<Result<Prepared, Failure>> {
    plan(app, sql, Contents::Current)
}

/// Plans `sql` for its columns and parameter types only (a client's
/// Describe): the views are read empty, so no snapshot is taken.
pub(crate) fn describe(app: &App, sql: &str) -> Option<Result<Prepared, Failure>> {
    plan(app, sql, Contents::Empty)
}

/// What the views hold while a query is planned.
#[derive(Clone, Copy, PartialEq)]
enum Contents {
    Current,
    Empty,
}

fn plan(app: &App, sql: &str, contents: Contents) -> Option<Result<Prepared, Failure>> {
    let mut statement = parse_query(sql)?;
    let reads = Reads::of(&statement);
    let streaming = {
        let session = app.session();
        let names = session.catalog().names();
        reads.tables.iter().any(|t| {
            names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(t) && app.views.get(n).is_none())
        })
    };
    if streaming {
        return None;
    }
    let views: Vec<_> = app
        .views
        .names()
        .into_iter()
        .filter(|v| reads.tables.iter().any(|t| t.eq_ignore_ascii_case(v)))
        .filter_map(|v| app.views.get(&v))
        .collect();
    if !reads.tables.is_empty() && views.is_empty() && !reads.catalog {
        // Only unknown names: the planner says which, with suggestions.
        return None;
    }
    catalog::rewrite(&mut statement);
    name_columns(&mut statement);
    let mut config = SessionConfig::new().with_default_catalog_and_schema(DATABASE, "public");
    // Errors then say where in the SQL they are.
    config.options_mut().sql_parser.collect_spans = true;
    let ctx = SessionContext::new_with_config(config);
    let registered = (|| {
        for view in &views {
            let rows = match contents {
                Contents::Current => {
                    view.snapshot()
                        .map_err(|e| Failure::new(FailureKind::Internal, e))?
                        .0
                }
                Contents::Empty => RecordBatch::new_empty(view.schema.clone()),
            };
            let table = MemTable::try_new(view.schema.clone(), vec![vec![rows]])
                .map_err(|e| failure(&e))?;
            ctx.register_table(view.name.as_str(), Arc::new(table))
                .map_err(|e| failure(&e))?;
        }
        catalog::register_functions(&ctx);
        if reads.catalog {
            catalog::register_tables(&ctx, &relations(app)).map_err(|e| failure(&e))?;
        }
        Ok(())
    })();
    if let Err(f) = registered {
        return Some(Err(f));
    }
    let state = ctx.state();
    let planned = block_on(async {
        state
            .statement_to_plan(DfStatement::Statement(statement))
            .await
    });
    Some(
        planned
            .and_then(|plan| {
                // A query, nothing else: no DDL, no DML, no SET.
                let only_queries = SQLOptions::new()
                    .with_allow_ddl(false)
                    .with_allow_dml(false)
                    .with_allow_statements(false);
                only_queries.verify_plan(&plan)?;
                Ok(Prepared { ctx, plan })
            })
            .map_err(|e| located(failure(&e), &e, sql)),
    )
}

/// The failure at the position DataFusion's diagnostic gives, if any.
fn located(mut f: Failure, e: &DataFusionError, sql: &str) -> Failure {
    let at = e.iter().find_map(|e| e.diagnostic()?.span);
    if let Some(span) = at {
        let offset = |l: datafusion::common::Location| {
            let line_start: usize = sql
                .split_inclusive('\n')
                .take((l.line as usize).saturating_sub(1))
                .map(str::len)
                .sum();
            let line = &sql[line_start..];
            let column: usize = line
                .chars()
                .take((l.column as usize).saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            line_start + column
        };
        let (start, end) = (offset(span.start), offset(span.end));
        if span.start.line > 0 && start <= end && end <= sql.len() {
            f.span = Some(eddy_parser::ast::Span::new(start, end));
        }
    }
    f
}

/// Names the unnamed columns of the outer SELECT as Postgres does: a
/// function call after the function (`count`), any other expression
/// `?column?`. A name an earlier column has is left to DataFusion, which
/// wants names unique.
fn name_columns(statement: &mut ast::Statement) {
    let ast::Statement::Query(query) = statement else {
        return;
    };
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let mut taken: BTreeSet<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            ast::SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_lowercase()),
            ast::SelectItem::UnnamedExpr(ast::Expr::Identifier(i)) => Some(i.value.to_lowercase()),
            ast::SelectItem::UnnamedExpr(ast::Expr::CompoundIdentifier(p)) => {
                p.last().map(|i| i.value.to_lowercase())
            }
            _ => None,
        })
        .collect();
    for item in &mut select.projection {
        let ast::SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        let name = match expr {
            ast::Expr::Identifier(_)
            | ast::Expr::CompoundIdentifier(_)
            | ast::Expr::Cast { .. } => {
                continue;
            }
            ast::Expr::Function(f) => match f.name.0.last().and_then(|p| p.as_ident()) {
                Some(i) => i.value.to_lowercase(),
                None => continue,
            },
            _ => "?column?".to_string(),
        };
        if taken.insert(name.clone()) {
            *item = ast::SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: ast::Ident::with_quote('"', name),
            };
        }
    }
}

/// The catalog's relations, each materialized view with its view's
/// columns (without the changelog column its sink has).
fn relations(app: &App) -> Vec<eddy_planner::CatalogRelation> {
    let mut relations = app.session().relations();
    for r in &mut relations {
        if let Some(view) = app.views.get(&r.name) {
            r.schema = view.schema.clone();
        }
    }
    relations
}

/// `sql` as one query in Postgres's dialect, if it is one.
fn parse_query(sql: &str) -> Option<Box<ast::Statement>> {
    let mut statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).ok()?;
    if statements.len() != 1 {
        return None;
    }
    match statements.pop_front()? {
        DfStatement::Statement(s) if matches!(*s, ast::Statement::Query(_)) => Some(s),
        _ => None,
    }
}

/// The tables a query reads, its common table expressions aside.
#[derive(Default)]
struct Reads {
    /// Unqualified names, and names in the default schema.
    tables: BTreeSet<String>,
    /// Whether it reads `pg_catalog` or `information_schema`.
    catalog: bool,
    ctes: BTreeSet<String>,
}

impl Reads {
    fn of(statement: &ast::Statement) -> Self {
        let mut reads = Reads::default();
        let _ = statement.visit(&mut reads);
        let ctes = std::mem::take(&mut reads.ctes);
        reads.tables.retain(|t| !ctes.contains(t));
        reads
    }
}

impl Visitor for Reads {
    type Break = ();

    fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let parts: Vec<String> = relation
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.to_lowercase()))
            .collect();
        match parts.as_slice() {
            [schema, _] if catalog::is_schema(schema) => self.catalog = true,
            [table] if catalog::is_table(table) => self.catalog = true,
            [.., table] => {
                self.tables.insert(table.clone());
            }
            [] => {}
        }
        ControlFlow::Continue(())
    }
}

/// A DataFusion error as a failure of the right kind.
fn failure(e: &DataFusionError) -> Failure {
    let kind = match e.find_root() {
        DataFusionError::SQL(..) => FailureKind::Syntax,
        DataFusionError::SchemaError(s, _)
            if matches!(**s, datafusion::common::SchemaError::FieldNotFound { .. }) =>
        {
            FailureKind::UnknownColumn
        }
        // DataFusion says so only in words: "table 'x' not found".
        DataFusionError::Plan(m) if m.starts_with("table '") && m.ends_with("' not found") => {
            FailureKind::UnknownTable
        }
        DataFusionError::NotImplemented(_) => FailureKind::NotSupported,
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => FailureKind::Invalid,
        DataFusionError::Plan(_) => FailureKind::Invalid,
        _ => FailureKind::Internal,
    };
    Failure::new(kind, e.strip_backtrace())
}

/// Runs a future on the server's runtime from one of its blocking
/// threads (`spawn_blocking`), where queries are answered.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(f)
}
