//! Query planning: a bound SELECT becomes nodes of the physical graph.
//!
//! ```text
//!  plain query:     Source ─► [Watermark] ─► Project(WHERE, SELECT) ─► Sink
//!  window query:    Source ─► [Watermark] ─► Project(WHERE; keys, time, args)
//!                     ══ shuffle by keys ══► WindowAggregate ─► Project(HAVING; SELECT)
//!                     ══ gather ══► Sink
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::{Expr, Operator};
use eddy_parser::ast::{self, ExprKind, SelectItem, SetExpr, Span, TableRefKind, WindowKind};

use crate::binder::{AggMode, Binder, Scope, coerce, interval_millis};
use crate::catalog::{Catalog, SourceDef, with_op_column};
use crate::error::{PlanError, Result, did_you_mean, suggestions};
use crate::expr::ScalarExpr;
use crate::functions::Functions;
use crate::graph::{
    EdgeKind, KeepLastSpec, NodeKind, PhysicalGraph, PlanEdge, PlanNode, ProjectNode, SinkNode,
    SourceNode, WatermarkNode, WindowSpec,
};
use crate::session::Settings;
use eddy_connectors::SourceChangelog;

pub const WINDOW_START: &str = "window_start";
pub const WINDOW_END: &str = "window_end";
/// The changelog column of updating streams.
pub const OP_COLUMN: &str = "_op";
/// `window_end - 1 ms`: the last moment of the window (Flink's time attribute).
pub const WINDOW_TIME: &str = "window_time";

/// `window_end - 1 ms`.
fn window_time_of(end: Expr) -> Expr {
    Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
        Box::new(end),
        Operator::Minus,
        Box::new(crate::binder::interval_literal(1)),
    ))
}

fn ts_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Builds a graph node by node.
#[derive(Debug, Default)]
pub(crate) struct GraphBuilder {
    graph: PhysicalGraph,
    /// Dead-letter sinks: (node, port, sink, schema), added last.
    side_sinks: Vec<(usize, usize, SinkNode, Schema)>,
}

impl GraphBuilder {
    fn add(
        &mut self,
        kind: NodeKind,
        parallelism: usize,
        schema: Schema,
        input: Option<(usize, EdgeKind)>,
    ) -> usize {
        let id = self.graph.nodes.len();
        self.graph.nodes.push(PlanNode {
            id,
            parallelism,
            kind,
            schema,
        });
        if let Some((from, kind)) = input {
            self.graph.edges.push(PlanEdge {
                from,
                to: id,
                kind,
                port: 0,
                input: 0,
            });
        }
        id
    }

    /// Adds a sink reading side output `port` of node `from`.
    fn add_side_sink(&mut self, from: usize, port: usize, sink: SinkNode, schema: Schema) -> usize {
        let id = self.add(NodeKind::Sink(sink), 1, schema, None);
        let kind = if self.parallelism(from) == 1 {
            EdgeKind::Forward
        } else {
            EdgeKind::Gather
        };
        self.graph.edges.push(PlanEdge {
            from,
            to: id,
            kind,
            port,
            input: 0,
        });
        id
    }

    /// Adds a node reading input 1 (a join's right side) from `from` too.
    fn add_second_input(&mut self, to: usize, from: usize, kind: EdgeKind) {
        self.graph.edges.push(PlanEdge {
            from,
            to,
            kind,
            port: 0,
            input: 1,
        });
    }

    /// Moves `other`'s nodes into this graph; returns the offset added to
    /// their ids.
    fn merge(&mut self, other: GraphBuilder) -> usize {
        let offset = self.graph.nodes.len();
        for mut node in other.graph.nodes {
            node.id += offset;
            self.graph.nodes.push(node);
        }
        for mut edge in other.graph.edges {
            edge.from += offset;
            edge.to += offset;
            self.graph.edges.push(edge);
        }
        for (from, port, sink, schema) in other.side_sinks {
            self.side_sinks.push((from + offset, port, sink, schema));
        }
        offset
    }

    fn parallelism(&self, id: usize) -> usize {
        self.graph.nodes[id].parallelism
    }

    pub fn finish(mut self) -> PhysicalGraph {
        for (from, port, sink, schema) in std::mem::take(&mut self.side_sinks) {
            self.add_side_sink(from, port, sink, schema);
        }
        self.graph
    }
}

/// A planned query, before its final projection is fixed (a sink may ask
/// for other names and types).
pub(crate) struct QueryPlan {
    builder: GraphBuilder,
    input: usize,
    /// The schema the final projection reads (unqualified or qualified).
    input_schema: DFSchema,
    filter: Option<ScalarExpr>,
    items: Vec<(Expr, Field, Span)>,
    /// The input carries a changelog `_op` column, passed through last.
    changelog: bool,
    /// The output column that is still the input's watermarked time column,
    /// or that holds `PROCTIME()`.
    time_attribute: Option<String>,
    /// `time_attribute` is processing time: a reader generates its watermark.
    proctime: bool,
    /// The output column that is still a window aggregate's `window_end`
    /// (its rows of a window are complete once the watermark reaches it).
    window_end: Option<String>,
}

impl QueryPlan {
    /// The names and types the query produces.
    pub fn output_fields(&self) -> Vec<Field> {
        self.items.iter().map(|(_, f, _)| f.clone()).collect()
    }

    /// Renames the output columns to `columns` (`CREATE VIEW v (a, b)`,
    /// `WITH w (a, b) AS`, `(...) AS t (a, b)`); nothing if empty. The time
    /// attribute and window end follow their column.
    pub fn rename(&mut self, columns: &[ast::Ident], what: &str) -> Result<()> {
        if columns.is_empty() {
            return Ok(());
        }
        if columns.len() != self.items.len() {
            return Err(PlanError::user(
                format!(
                    "'{what}' names {} columns but its query produces {}",
                    columns.len(),
                    self.items.len()
                ),
                columns[0].span,
            ));
        }
        let mut seen = HashSet::new();
        for (c, (_, field, _)) in columns.iter().zip(self.items.iter_mut()) {
            if !seen.insert(c.value.as_str()) {
                return Err(PlanError::user(
                    format!("column '{}' is named twice", c.value),
                    c.span,
                ));
            }
            for attr in [&mut self.time_attribute, &mut self.window_end] {
                if attr.as_deref() == Some(field.name().as_str()) {
                    *attr = Some(c.value.clone());
                }
            }
            *field = field.as_ref().clone().with_name(&c.value);
        }
        Ok(())
    }

    /// `INSERT INTO t (a, c) ...`: the query's columns go to `columns` of
    /// `target`, in order; its other columns get NULL.
    pub fn spread_into(
        &mut self,
        target: &Schema,
        columns: &[ast::Ident],
        table: &str,
    ) -> Result<()> {
        if columns.len() != self.items.len() {
            return Err(PlanError::user(
                format!(
                    "the INSERT names {} columns of '{table}' but the query produces {}",
                    columns.len(),
                    self.items.len()
                ),
                columns.first().map_or(Span::default(), |c| c.span),
            ));
        }
        let mut given: Vec<Option<(Expr, Field, Span)>> = vec![None; target.fields().len()];
        for (c, item) in columns.iter().zip(std::mem::take(&mut self.items)) {
            let Ok(i) = target.index_of(&c.value) else {
                let names: Vec<&str> = target.fields().iter().map(|f| f.name().as_str()).collect();
                let hint = did_you_mean(&suggestions(&c.value, names.iter().copied()));
                return Err(PlanError::user(
                    format!("'{table}' has no column '{}'{hint}", c.value),
                    c.span,
                ));
            };
            if given[i].replace(item).is_some() {
                return Err(PlanError::user(
                    format!("column '{}' is named twice", c.value),
                    c.span,
                ));
            }
        }
        self.items = given
            .into_iter()
            .zip(target.fields())
            .map(|(item, f)| {
                item.unwrap_or_else(|| {
                    let null = ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null);
                    (
                        Expr::Literal(null, None),
                        f.as_ref().clone(),
                        Span::default(),
                    )
                })
            })
            .collect();
        Ok(())
    }

    /// Adds the final projection, cast and renamed to `target` if given,
    /// then the sink.
    pub fn into_graph(self, sink: SinkNode, target: Option<&Schema>) -> Result<PhysicalGraph> {
        let (mut builder, id, schema) = self.into_node(target.map(|t| (sink.name.as_str(), t)))?;
        let edge = if builder.parallelism(id) == 1 {
            EdgeKind::Forward
        } else {
            EdgeKind::Gather
        };
        builder.add(NodeKind::Sink(sink), 1, schema, Some((id, edge)));
        Ok(builder.finish())
    }

    /// Adds the final projection (cast and renamed to the sink's columns if
    /// given) and returns the builder, that node and its schema.
    fn into_node(
        mut self,
        target: Option<(&str, &Schema)>,
    ) -> Result<(GraphBuilder, usize, Schema)> {
        if let Some((sink_name, target)) = target {
            if target.fields().len() != self.items.len() {
                let span = self.items.first().map(|i| i.2).unwrap_or_default();
                return Err(PlanError::user(
                    format!(
                        "sink '{sink_name}' has {} columns but the query produces {}",
                        target.fields().len(),
                        self.items.len()
                    ),
                    span,
                ));
            }
            for ((expr, field, span), want) in self.items.iter_mut().zip(target.fields()) {
                if field.data_type() != want.data_type() {
                    if !datafusion::arrow::compute::can_cast_types(
                        field.data_type(),
                        want.data_type(),
                    ) {
                        return Err(PlanError::user(
                            format!(
                                "cannot write {} into column '{}' of type {} of sink '{sink_name}'",
                                field.data_type(),
                                want.name(),
                                want.data_type()
                            ),
                            *span,
                        ));
                    }
                    *expr = Expr::Cast(Cast::new(Box::new(expr.clone()), want.data_type().clone()));
                }
                *field = want.as_ref().clone().with_nullable(true);
            }
        }
        if self.changelog {
            let op = Expr::Column(Column::new_unqualified(OP_COLUMN));
            self.items.push((
                op,
                Field::new(OP_COLUMN, DataType::Int8, false),
                Span::default(),
            ));
        }
        let exprs = self
            .items
            .iter()
            .map(|(e, _, _)| ScalarExpr::from_df(e, &self.input_schema))
            .collect::<Result<Vec<_>>>()?;
        let schema = Schema::new(self.output_fields());
        let p = self.builder.parallelism(self.input);
        let project = ProjectNode {
            filter: self.filter,
            exprs,
        };
        let id = self.builder.add(
            NodeKind::Project(project),
            p,
            schema.clone(),
            Some((self.input, EdgeKind::Forward)),
        );
        Ok((self.builder, id, schema))
    }
}

mod aggregate;
mod join;
mod keyed;
mod lookup;
mod over;
mod rank;
mod temporal;
mod union;

pub(crate) struct QueryPlanner<'a> {
    pub catalog: &'a Catalog,
    pub binder: Binder<'a>,
    pub parallelism: usize,
    pub settings: &'a Settings,
    /// `WITH` queries in scope, innermost last, with their column names.
    pub ctes: Vec<(String, ast::Query, Vec<ast::Ident>)>,
}

/// A table a FROM item reads, already planned into `builder` up to `node`:
/// a source (and its watermark), or a subquery, view or `WITH` query.
pub(crate) struct Relation {
    name: String,
    /// Its columns; a changelog's `_op` is last.
    fields: Vec<Field>,
    /// The column the watermark follows, while rows still carry it.
    time_attribute: Option<String>,
    /// `time_attribute` holds `PROCTIME()`.
    proctime: bool,
    changelog: bool,
    /// See [`QueryPlan::window_end`].
    window_end: Option<String>,
    builder: GraphBuilder,
    node: usize,
}

impl Relation {
    /// Its columns (a changelog's `_op` last).
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The column the watermark follows, if rows still carry it.
    pub fn time_attribute(&self) -> Option<&String> {
        self.time_attribute.as_ref()
    }
}

/// The FROM clause, resolved.
struct From {
    /// The table's own columns (no window columns, no `_op`).
    columns: Vec<Field>,
    time_attribute: Option<String>,
    /// `time_attribute` holds `PROCTIME()`.
    proctime: bool,
    /// Rows come with a changelog `_op` column (the last of the scope).
    changelog: bool,
    /// See [`QueryPlan::window_end`].
    window_end: Option<String>,
    scope: Scope,
    window: Option<Window>,
}

struct Window {
    spec: WindowSpec,
    time_column: String,
    span: Span,
    /// SESSION's `PARTITION BY` columns.
    partition_by: Vec<ast::Ident>,
}

impl QueryPlanner<'_> {
    fn functions(&self) -> &Functions {
        self.binder.functions
    }

    /// Plans a query. What streaming cannot run yet is rejected with
    /// `not supported yet: <feature>` at the feature's position.
    pub fn plan(&self, q: &ast::Query) -> Result<QueryPlan> {
        self.plan_query(q, None)
    }

    /// [`Self::plan`], with the bound a reader puts on the query's rank
    /// (a Top-N; see [`rank`]).
    fn plan_query(&self, q: &ast::Query, top_n: Option<rank::TopN>) -> Result<QueryPlan> {
        if !q.with.is_empty() {
            let mut inner = self.with_ctes(self.ctes.len());
            let mut names = HashSet::new();
            for cte in &q.with {
                let name = &cte.alias.name;
                if !names.insert(name.value.clone()) {
                    return Err(PlanError::user(
                        format!("WITH query name '{}' specified more than once", name.value),
                        name.span,
                    ));
                }
                inner.ctes.push((
                    name.value.clone(),
                    cte.query.clone(),
                    cte.alias.columns.clone(),
                ));
            }
            let body = ast::Query {
                with: Vec::new(),
                ..q.clone()
            };
            return inner.plan_query(&body, top_n);
        }
        if let Some(o) = q.order_by.first() {
            return Err(PlanError::not_supported(
                "ORDER BY on a stream (use it inside OVER or a Top-N)",
                o.expr.span,
            ));
        }
        if let Some(l) = &q.limit {
            return Err(PlanError::not_supported("LIMIT on a stream", l.span));
        }
        match &q.body {
            SetExpr::Select(s) => self.plan_select(s, top_n),
            SetExpr::Query(inner) => self.plan_query(inner, top_n),
            other => self.plan_set_expr(other, q.span),
        }
    }

    /// A planner that sees the first `n` of this one's `WITH` queries.
    fn with_ctes(&self, n: usize) -> QueryPlanner<'_> {
        QueryPlanner {
            catalog: self.catalog,
            binder: Binder {
                functions: self.binder.functions,
                sql: self.binder.sql,
            },
            parallelism: self.parallelism,
            settings: self.settings,
            ctes: self.ctes[..n].to_vec(),
        }
    }

    /// Plans the table a name refers to: a `WITH` query, a view, else a
    /// source.
    fn read_table(&self, name: &ast::Ident) -> Result<Relation> {
        if let Some(i) = self.ctes.iter().rposition(|(n, _, _)| *n == name.value) {
            let (_, query, columns) = &self.ctes[i];
            return self
                .with_ctes(i)
                .plan_derived(query, &name.value, None, columns);
        }
        if self.catalog.view(&name.value).is_some() {
            return self.read_view(name);
        }
        if let Some(source) = self.catalog.source(&name.value) {
            return self.read_source(source);
        }
        if let Some(sink) = self.catalog.sink(&name.value) {
            let why = self.catalog.unreadable(&name.value).map_or_else(
                || format!("its connector '{}' only writes", sink.connector),
                str::to_string,
            );
            return Err(PlanError::user(
                format!("table '{}' cannot be read: {why}", name.value),
                name.span,
            ));
        }
        let mut names = self.catalog.names();
        names.extend(self.ctes.iter().map(|(n, _, _)| n.as_str()));
        let hint = did_you_mean(&suggestions(&name.value, names.iter().copied()));
        let known = if names.is_empty() {
            "no tables are defined yet".to_string()
        } else {
            format!("tables: {}", names.join(", "))
        };
        Err(PlanError::unknown_table(
            format!("unknown table '{}'{hint}; {known}", name.value),
            name.span,
        ))
    }

    /// A view, planned as the named subquery it is, over its own text (an
    /// error inside it names the view, at the place it is read, when the
    /// view was declared in another text).
    pub(crate) fn read_view(&self, name: &ast::Ident) -> Result<Relation> {
        let view = self
            .catalog
            .view(&name.value)
            .ok_or_else(|| PlanError::internal(format!("no view '{}'", name.value)))?;
        let planner = QueryPlanner {
            catalog: self.catalog,
            binder: Binder {
                functions: self.binder.functions,
                sql: &view.sql,
            },
            parallelism: self.parallelism,
            settings: self.settings,
            ctes: Vec::new(),
        };
        planner
            .plan_derived(&view.query, &view.name, None, &view.columns)
            .map_err(|e| {
                if *view.sql == *self.binder.sql {
                    return e;
                }
                PlanError {
                    message: format!("in view '{}': {}", view.name, e.message),
                    span: Some(name.span),
                    ..e
                }
            })
    }

    /// A source node, its computed columns, its watermark generator if it
    /// declares one, and the normalization of an upsert source.
    fn read_source(&self, source: &SourceDef) -> Result<Relation> {
        let mut builder = GraphBuilder::default();
        let changelog = source.changelog != SourceChangelog::AppendOnly;
        // A changelog's `_op` travels last, after the table's columns.
        let schema = match changelog {
            true => with_op_column(&source.schema),
            false => source.schema.as_ref().clone(),
        };
        // Validated with the source's other options.
        let option = |key: &str| source.options.get(key).map(|v| v.trim());
        let parallelism = option(eddy_connectors::registry::SCAN_PARALLELISM)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(self.parallelism)
            .min(source.provider.max_parallelism().unwrap_or(usize::MAX))
            .max(1);
        let mut id = self.read_columns(source, &schema, parallelism, &mut builder)?;
        // `name AS PROCTIME()` without a WATERMARK: processing time.
        let proctime = source
            .proctime
            .clone()
            .filter(|_| source.watermark.is_none());
        if let Some(column) = &proctime {
            id = proctime_watermark(&mut builder, id, &schema, column)?;
        }
        if let Some(wm) = &source.watermark {
            let node = WatermarkNode {
                column: wm.column.clone(),
                expr: wm.expr.clone(),
                idle_timeout_ms: option(eddy_connectors::registry::IDLE_TIMEOUT)
                    .and_then(eddy_connectors::parse_duration_ms),
                processing_time: false,
            };
            id = builder.add(
                NodeKind::Watermark(node),
                parallelism,
                schema.clone(),
                Some((id, EdgeKind::Forward)),
            );
        }
        if source.changelog == SourceChangelog::Upsert {
            id = self.normalize_upserts(source, &schema, id, &mut builder)?;
        }
        Ok(Relation {
            name: source.name.clone(),
            fields: schema.fields().iter().map(|f| f.as_ref().clone()).collect(),
            time_attribute: source
                .watermark
                .as_ref()
                .map(|w| w.column.clone())
                .or(proctime.clone()),
            proctime: proctime.is_some(),
            changelog,
            window_end: None,
            builder,
            node: id,
        })
    }

    /// The source node, and the projection that computes the table's
    /// computed columns from the physical ones (`_op` passed on last).
    fn read_columns(
        &self,
        source: &SourceDef,
        schema: &Schema,
        parallelism: usize,
        builder: &mut GraphBuilder,
    ) -> Result<usize> {
        let node = SourceNode {
            name: source.name.clone(),
            options: source.options.clone(),
            event_time: source.watermark.as_ref().map(|w| w.column.clone()),
            primary_key: source.primary_key.clone(),
            read: None,
            bounds: Vec::new(),
        };
        let changelog = source.changelog != SourceChangelog::AppendOnly;
        let Some(computed) = &source.computed else {
            let read = builder.add(NodeKind::Source(node), parallelism, schema.clone(), None);
            self.dead_letter_sink(source, read, builder)?;
            return Ok(read);
        };
        let mut physical = computed.physical.as_ref().clone();
        let mut exprs = computed.exprs.clone();
        if changelog {
            exprs.push(ScalarExpr::column(OP_COLUMN, physical.fields().len()));
            physical = with_op_column(&physical);
        }
        let read = builder.add(NodeKind::Source(node), parallelism, physical, None);
        self.dead_letter_sink(source, read, builder)?;
        let project = ProjectNode {
            filter: None,
            exprs,
        };
        Ok(builder.add(
            NodeKind::Project(project),
            parallelism,
            schema.clone(),
            Some((read, EdgeKind::Forward)),
        ))
    }

    /// An upsert source's rows, keyed by its primary key, made a
    /// retracting changelog by keeping each key's last row (Flink's
    /// ChangelogNormalize).
    fn normalize_upserts(
        &self,
        source: &SourceDef,
        schema: &Schema,
        input: usize,
        builder: &mut GraphBuilder,
    ) -> Result<usize> {
        let keys = source
            .primary_key
            .iter()
            .map(|k| schema.index_of(k))
            .collect::<std::result::Result<Vec<usize>, _>>()
            .map_err(|e| PlanError::internal(e.to_string()))?;
        let spec = KeepLastSpec {
            keys: keys.clone(),
            op_column: Some(schema.fields().len() - 1),
            state_ttl_ms: self.settings.state_ttl_ms,
            state_ttl_event_time: self.settings.state_ttl_event_time(),
        };
        let (p, edge) = self.keyed_edge(builder.parallelism(input), keys);
        Ok(builder.add(
            NodeKind::KeepLast(spec),
            p,
            schema.clone(),
            Some((input, edge)),
        ))
    }

    /// The dead-letter sink of a source with `'bad-data'` =
    /// `'dead-letter'`, fed by its reader's bad records.
    fn dead_letter_sink(
        &self,
        source: &SourceDef,
        read: usize,
        builder: &mut GraphBuilder,
    ) -> Result<()> {
        use eddy_connectors::bad_data::{BAD_DATA, DEAD_LETTER_SINK, dead_letter_schema};
        if source.options.get(BAD_DATA).map(String::as_str) != Some("dead-letter") {
            return Ok(());
        }
        let name = source
            .options
            .get(DEAD_LETTER_SINK)
            .cloned()
            .unwrap_or_default();
        let def = self.catalog.sink(&name).ok_or_else(|| {
            PlanError::internal(format!(
                "the dead-letter sink '{name}' of source '{}' was dropped",
                source.name
            ))
        })?;
        builder.side_sinks.push((
            read,
            eddy_operators::operator::BAD_DATA_PORT,
            SinkNode::of(def),
            dead_letter_schema().as_ref().clone(),
        ));
        Ok(())
    }

    /// A subquery, view or `WITH` query, planned up to its final
    /// projection, its columns renamed to `columns` if given.
    fn plan_derived(
        &self,
        q: &ast::Query,
        name: &str,
        top_n: Option<rank::TopN>,
        columns: &[ast::Ident],
    ) -> Result<Relation> {
        let mut plan = self.plan_query(q, top_n)?;
        plan.rename(columns, name)?;
        let (changelog, time_attribute) = (plan.changelog, plan.time_attribute.clone());
        let window_end = plan.window_end.clone();
        let proctime = plan.proctime;
        let (mut builder, mut node, schema) = plan.into_node(None)?;
        if let (true, Some(column)) = (proctime, &time_attribute) {
            node = proctime_watermark(&mut builder, node, &schema, column)?;
        }
        Ok(Relation {
            name: name.to_string(),
            fields: schema.fields().iter().map(|f| f.as_ref().clone()).collect(),
            time_attribute,
            proctime,
            changelog,
            window_end,
            builder,
            node,
        })
    }

    fn plan_select(&self, q: &ast::Select, top_n: Option<rank::TopN>) -> Result<QueryPlan> {
        if let Some((rewritten, derived)) = crate::legacy::rewrite_group_window(q)? {
            let Some(derived) = derived else {
                return self.plan_select(&rewritten, top_n);
            };
            let mut inner = self.with_ctes(self.ctes.len());
            inner.ctes.push(derived);
            return inner.plan_select(&rewritten, top_n);
        }
        // A bound on the rank of the one subquery read: a Top-N there.
        if let Some((rewritten, inner)) = self.top_n_filter(q)? {
            return self.plan_select_over(&rewritten, top_n, Some(inner));
        }
        self.plan_select_over(q, top_n, None)
    }

    /// Plans a SELECT; `top_n` bounds its rank, `inner_top_n` that of the
    /// subquery it reads.
    fn plan_select_over(
        &self,
        q: &ast::Select,
        top_n: Option<rank::TopN>,
        inner_top_n: Option<rank::TopN>,
    ) -> Result<QueryPlan> {
        if q.distinct {
            return self.plan_select_over(&self.distinct_as_group_by(q)?, top_n, inner_top_n);
        }
        let (from, builder, input) =
            self.resolve_from(&q.from, q.selection.as_ref(), inner_top_n)?;

        let filter = match &q.selection {
            Some(w) => Some(self.bind_predicate(w, &from, "WHERE")?),
            None => None,
        };
        let mut aggregate_calls = Vec::new();
        for item in &q.projection {
            if let SelectItem::Expr { expr, .. } = item {
                self.binder
                    .visit_aggregates(expr, &mut |e| aggregate_calls.push(e));
            }
        }
        if let Some(h) = &q.having {
            self.binder
                .visit_aggregates(h, &mut |e| aggregate_calls.push(e));
        }
        if q.group_by.is_empty() && aggregate_calls.is_empty() {
            if let Some(h) = &q.having {
                return Err(PlanError::user(
                    "HAVING needs GROUP BY or an aggregate function",
                    h.span,
                ));
            }
            if rank::has_rank(q) {
                return self.plan_rank(q, &from, builder, input, filter, top_n);
            }
            if over::has_over(q) {
                return self.plan_over(q, &from, builder, input, filter);
            }
            let items =
                self.select_items(q, &from.scope, AggMode::Forbidden("this query"), &|e| {
                    self.window_columns(e, &from)
                })?;
            let filter = filter
                .map(|(e, _)| ScalarExpr::from_df(&e, &from.scope.schema))
                .transpose()?;
            // `PROCTIME()` makes a processing-time attribute (and wins over
            // event time); else the time column, selected as it is, stays
            // a time attribute.
            let proctime = items.iter().find_map(|(e, f, _)| match e {
                Expr::ScalarFunction(sf) if sf.func.name() == crate::functions::PROCTIME => {
                    Some(f.name().clone())
                }
                _ => None,
            });
            let event_time = selected_as_is(&items, from.time_attribute.as_deref());
            let window_end = selected_as_is(&items, from.window_end.as_deref());
            return Ok(QueryPlan {
                changelog: from.changelog,
                proctime: proctime.is_some(),
                time_attribute: proctime.or(event_time),
                window_end,
                builder,
                input,
                input_schema: from.scope.schema.as_ref().clone(),
                filter,
                items,
            });
        }
        self.plan_window_aggregate(q, &from, builder, input, filter, &aggregate_calls)
    }

    /// `SELECT DISTINCT a, b ... FROM t` is `SELECT a, b ... FROM t GROUP
    /// BY a, b ...` (as in Flink): an updating aggregate without aggregate
    /// functions, or a window aggregate over a window TVF.
    fn distinct_as_group_by(&self, q: &ast::Select) -> Result<ast::Select> {
        let mut group_by = Vec::new();
        for item in &q.projection {
            let SelectItem::Expr { expr, .. } = item else {
                return Err(PlanError::not_supported(
                    "SELECT DISTINCT * (list the columns)",
                    q.span,
                ));
            };
            let mut aggregate = false;
            self.binder
                .visit_aggregates(expr, &mut |_| aggregate = true);
            if aggregate || !q.group_by.is_empty() {
                return Err(PlanError::not_supported(
                    "SELECT DISTINCT with GROUP BY or aggregate functions",
                    q.span,
                ));
            }
            group_by.push(expr.clone());
        }
        Ok(ast::Select {
            distinct: false,
            group_by,
            ..q.clone()
        })
    }

    /// Resolves the FROM clause: one table, or a join of several (whose
    /// planning may use `selection`, the WHERE clause, for keys).
    fn resolve_from(
        &self,
        items: &[ast::TableRef],
        selection: Option<&ast::Expr>,
        top_n: Option<rank::TopN>,
    ) -> Result<(From, GraphBuilder, usize)> {
        match items {
            [] => Err(PlanError::internal("a SELECT without FROM")),
            [t] if !matches!(t.kind, TableRefKind::Join(_)) => self.resolve_table(t, top_n),
            _ => self.plan_joins(&join::using_to_on(items)?, selection),
        }
    }

    /// Resolves one FROM item that is not a join.
    fn resolve_table(
        &self,
        t: &ast::TableRef,
        top_n: Option<rank::TopN>,
    ) -> Result<(From, GraphBuilder, usize)> {
        if let Some(e) = &t.for_system_time {
            return Err(PlanError::user(
                "FOR SYSTEM_TIME AS OF is only valid on the right side of a JOIN",
                e.span,
            ));
        }
        if let Some(a) = t.alias.as_ref().filter(|a| !a.columns.is_empty())
            && !matches!(t.kind, TableRefKind::Subquery(_))
        {
            return Err(PlanError::not_supported(
                "column aliases on a FROM item other than a subquery",
                a.columns[0].span,
            ));
        }
        let alias = t.alias.as_ref().map(|a| a.name.value.clone());
        let (relation, window) = match &t.kind {
            TableRefKind::Named(name) => (self.read_table(name)?, None),
            TableRefKind::Window(tvf) => (self.read_table(&tvf.table)?, Some(tvf)),
            TableRefKind::Subquery(q) => {
                let name = alias.clone().unwrap_or_else(|| "subquery".to_string());
                let columns = t.alias.as_ref().map_or(&[][..], |a| &a.columns);
                (self.plan_derived(q, &name, top_n, columns)?, None)
            }
            TableRefKind::Join(_) => {
                return Err(PlanError::internal("a join planned as one table"));
            }
        };
        let Relation {
            name: table,
            fields: relation_fields,
            time_attribute,
            proctime,
            changelog,
            window_end,
            builder,
            node,
        } = relation;
        let qualifier = alias.unwrap_or_else(|| table.clone());
        let columns: Vec<Field> = relation_fields
            .iter()
            .filter(|f| !(changelog && f.name() == OP_COLUMN))
            .cloned()
            .collect();
        let mut fields = columns.clone();
        let window = match window {
            None => None,
            Some(_) if changelog => {
                return Err(PlanError::not_supported(
                    "a window TVF over an updating (changelog) input",
                    t.span,
                ));
            }
            Some(tvf) => {
                if let Some(k) = tvf
                    .partition_by
                    .first()
                    .filter(|_| tvf.kind != WindowKind::Session)
                {
                    return Err(PlanError::user(
                        "only SESSION windows take PARTITION BY",
                        k.span,
                    ));
                }
                let interval = |e: &ast::Expr| -> Result<i64> {
                    let ms = interval_millis(e)?;
                    if ms <= 0 {
                        return Err(PlanError::user(
                            "a window interval must be positive",
                            e.span,
                        ));
                    }
                    Ok(ms)
                };
                let arity = |n: usize, what: &str| {
                    let span = tvf
                        .args
                        .get(n)
                        .or(tvf.args.last())
                        .map_or(t.span, |a| a.span);
                    PlanError::user(format!("{} takes {what}", tvf.kind.as_str()), span)
                };
                let spec = match (tvf.kind, tvf.args.as_slice()) {
                    (WindowKind::Tumble, [size]) => WindowSpec::Tumble {
                        size_ms: interval(size)?,
                    },
                    (WindowKind::Tumble, [_, offset]) => {
                        return Err(PlanError::not_supported(
                            "TUMBLE with an offset argument",
                            offset.span,
                        ));
                    }
                    (WindowKind::Hop, [slide, size]) => WindowSpec::Hop {
                        slide_ms: interval(slide)?,
                        size_ms: interval(size)?,
                    },
                    (WindowKind::Cumulate, [step, size]) => {
                        let (step_ms, size_ms) = (interval(step)?, interval(size)?);
                        if size_ms % step_ms != 0 {
                            return Err(PlanError::user(
                                "a CUMULATE window's size must be a whole number of steps",
                                size.span,
                            ));
                        }
                        WindowSpec::Cumulate { step_ms, size_ms }
                    }
                    (WindowKind::Session, [gap]) => WindowSpec::Session {
                        gap_ms: interval(gap)?,
                    },
                    (WindowKind::Session, _) => {
                        return Err(arity(1, "the table, the time column and a gap"));
                    }
                    (WindowKind::Tumble, _) => {
                        return Err(arity(1, "the table, the time column and a size"));
                    }
                    (WindowKind::Hop, _) => {
                        return Err(arity(2, "the table, the time column, a slide and a size"));
                    }
                    (WindowKind::Cumulate, _) => {
                        return Err(arity(2, "the table, the time column, a step and a size"));
                    }
                };
                let mut col = tvf.time_column.clone();
                if !columns.iter().any(|f| *f.name() == col.value)
                    && let Some(f) = crate::binder::folded_match(&col, &columns, |f| f.name())
                {
                    col.value = f.name().clone();
                }
                let col = &col;
                if !columns.iter().any(|f| *f.name() == col.value) {
                    let names: Vec<&str> = columns.iter().map(|f| f.name().as_str()).collect();
                    let hint = did_you_mean(&suggestions(&col.value, names.iter().copied()));
                    return Err(PlanError::unknown_column(
                        format!(
                            "unknown column '{}'{hint} in DESCRIPTOR; '{table}' has columns: {}",
                            col.value,
                            names.join(", ")
                        ),
                        col.span,
                    ));
                }
                if time_attribute.as_ref() != Some(&col.value) {
                    let how = if self.catalog.source(&table).is_some() {
                        format!(
                            "declare `WATERMARK FOR {} AS {} - INTERVAL '5' SECOND` in its CREATE SOURCE",
                            col.value, col.value
                        )
                    } else {
                        "a query keeps its source's time attribute only when it selects that column unchanged".to_string()
                    };
                    return Err(PlanError::user(
                        format!(
                            "column '{}' is not a time attribute of '{table}': {how}",
                            col.value
                        ),
                        col.span,
                    ));
                }
                for name in [WINDOW_START, WINDOW_END, WINDOW_TIME] {
                    if fields.iter().any(|f| f.name() == name) {
                        return Err(PlanError::user(
                            format!("table '{table}' already has a column named {name}"),
                            t.span,
                        ));
                    }
                    fields.push(Field::new(name, ts_ms(), false));
                }
                Some(Window {
                    spec,
                    time_column: col.value.clone(),
                    span: t.span,
                    partition_by: tvf.partition_by.clone(),
                })
            }
        };
        if changelog {
            fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        }
        let schema = DFSchema::try_from_qualified_schema(qualifier.as_str(), &Schema::new(fields))?;
        let scope = Scope::single(&qualifier, &table, Arc::new(schema));
        let from = From {
            columns,
            time_attribute,
            proctime,
            changelog,
            window_end,
            scope,
            window,
        };
        Ok((from, builder, node))
    }

    /// Without a window aggregate, `window_start`/`window_end` of a TVF are
    /// computed per row: `date_bin(size, time)` and that plus `size`.
    fn window_columns(&self, e: Expr, from: &From) -> Result<Expr> {
        let Some(w) = &from.window else { return Ok(e) };
        let mut uses_window = false;
        e.apply(|x| {
            if let Expr::Column(c) = x
                && (c.name == WINDOW_START || c.name == WINDOW_END || c.name == WINDOW_TIME)
            {
                uses_window = true;
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
        if !uses_window {
            return Ok(e);
        }
        let date_bin = self
            .functions()
            .scalar("date_bin")
            .ok_or_else(|| PlanError::internal("date_bin is missing"))?;
        let q = from.scope.qualifier().to_string();
        let time = Expr::Cast(Cast::new(
            Box::new(Expr::Column(Column::new(Some(q), &w.time_column))),
            ts_ms(),
        ));
        let WindowSpec::Tumble { size_ms } = w.spec else {
            return Err(PlanError::not_supported(
                "window_start/window_end of HOP, CUMULATE or SESSION windows outside GROUP BY",
                w.span,
            ));
        };
        let size = crate::binder::interval_literal(size_ms);
        let start =
            Expr::ScalarFunction(ScalarFunction::new_udf(date_bin, vec![size.clone(), time]));
        let end = Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
            Box::new(start.clone()),
            Operator::Plus,
            Box::new(size),
        ));
        Ok(e.transform_up(|x| {
            Ok(match &x {
                Expr::Column(c) if c.name == WINDOW_START => Transformed::yes(start.clone()),
                Expr::Column(c) if c.name == WINDOW_END => Transformed::yes(end.clone()),
                Expr::Column(c) if c.name == WINDOW_TIME => {
                    Transformed::yes(window_time_of(end.clone()))
                }
                _ => Transformed::no(x),
            })
        })?
        .data)
    }

    fn bind_predicate(
        &self,
        e: &ast::Expr,
        from: &From,
        clause: &'static str,
    ) -> Result<(Expr, Field)> {
        let bound = self
            .binder
            .bind(e, &from.scope, AggMode::Forbidden(clause))?;
        let bound = self.window_columns(bound, from)?;
        coerce_condition(bound, &from.scope.schema, e.span, clause)
    }

    /// Binds the SELECT list; `rewrite` maps each bound expression before
    /// coercion (window columns, group keys).
    fn select_items(
        &self,
        q: &ast::Select,
        scope: &Scope,
        aggs: AggMode<'_>,
        rewrite: &dyn Fn(Expr) -> Result<Expr>,
    ) -> Result<Vec<(Expr, Field, Span)>> {
        self.select_items_over(q, scope, aggs, rewrite, &scope.schema)
    }

    fn select_items_over(
        &self,
        q: &ast::Select,
        scope: &Scope,
        aggs: AggMode<'_>,
        rewrite: &dyn Fn(Expr) -> Result<Expr>,
        output_schema: &DFSchema,
    ) -> Result<Vec<(Expr, Field, Span)>> {
        let mut items = Vec::new();
        let mut used = HashSet::new();
        for (i, item) in q.projection.iter().enumerate() {
            match item {
                SelectItem::QualifiedWildcard { table: t, .. }
                    if scope.table(&t.value).is_none() =>
                {
                    let names: Vec<&str> =
                        scope.tables.iter().map(|t| t.qualifier.as_str()).collect();
                    return Err(PlanError::unknown_table(
                        format!(
                            "unknown table '{}' in {}.*; the query reads {}",
                            t.value,
                            t.value,
                            names
                                .iter()
                                .map(|n| format!("'{n}'"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        t.span,
                    ));
                }
                SelectItem::Wildcard { span } | SelectItem::QualifiedWildcard { span, .. } => {
                    let tables: Vec<&crate::binder::ScopeTable> = match item {
                        SelectItem::QualifiedWildcard { table: t, .. } => {
                            scope.table(&t.value).into_iter().collect()
                        }
                        _ => scope.tables.iter().collect(),
                    };
                    // A changelog's `_op` is passed on by the plan, not by `*`.
                    for t in tables {
                        for (name, field) in t.columns.iter().filter(|(c, _)| c != OP_COLUMN) {
                            let col = Expr::Column(Column::new(Some(t.qualifier.clone()), field));
                            let (expr, field) = coerce(rewrite(col)?, output_schema, *span)?;
                            items.push((expr, field.with_name(unique(name, &mut used)), *span));
                        }
                    }
                }
                SelectItem::Expr { expr, alias } => {
                    let bound = rewrite(self.binder.bind(expr, scope, aggs)?)?;
                    let (bound, field) = coerce(bound, output_schema, expr.span)?;
                    let name = match (alias, &expr.kind) {
                        (Some(a), _) => a.value.clone(),
                        (None, ExprKind::Identifier(parts)) => parts[parts.len() - 1].value.clone(),
                        (None, ExprKind::Function(f)) => f.name.value.clone(),
                        (None, _) => format!("EXPR${i}"),
                    };
                    items.push((bound, field.with_name(unique(&name, &mut used)), expr.span));
                }
            }
        }
        Ok(items)
    }
}

/// Coerces a bound condition of `clause` (WHERE, ON...), which must be
/// boolean.
fn coerce_condition(
    bound: Expr,
    schema: &DFSchema,
    span: Span,
    clause: &str,
) -> Result<(Expr, Field)> {
    let (expr, field) = coerce(bound, schema, span)?;
    if !matches!(field.data_type(), DataType::Boolean | DataType::Null) {
        return Err(PlanError::user(
            format!(
                "{clause} must be a boolean condition, not {}",
                field.data_type()
            ),
            span,
        ));
    }
    Ok((expr, field))
}

/// The output name of the SELECT item that is input column `column`
/// unchanged, if any.
fn selected_as_is(items: &[(Expr, Field, Span)], column: Option<&str>) -> Option<String> {
    let column = column?;
    items.iter().find_map(|(e, f, _)| match e {
        Expr::Column(c) if c.name == column => Some(f.name().clone()),
        _ => None,
    })
}

/// Errors from `to_output` have no span; point them at the select item.
fn fix_span(e: PlanError, q: &ast::Select) -> PlanError {
    if e.span != Some(Span::default()) {
        return e;
    }
    let name = e.message.split('\'').nth(1).unwrap_or("").to_string();
    let span = q
        .projection
        .iter()
        .filter_map(|i| match i {
            SelectItem::Expr { expr, .. } => Some(expr),
            SelectItem::Wildcard { .. } | SelectItem::QualifiedWildcard { .. } => None,
        })
        .find_map(|e| find_identifier(e, &name))
        .or_else(|| {
            q.projection.first().map(|i| match i {
                SelectItem::Expr { expr, .. } => expr.span,
                SelectItem::Wildcard { span } | SelectItem::QualifiedWildcard { span, .. } => *span,
            })
        });
    PlanError { span, ..e }
}

fn find_identifier(e: &ast::Expr, name: &str) -> Option<Span> {
    match &e.kind {
        ExprKind::Identifier(parts) if parts.last().is_some_and(|p| p.value == name) => {
            Some(e.span)
        }
        _ => e
            .children()
            .into_iter()
            .find_map(|c| find_identifier(c, name)),
    }
}

/// `name`, or `name_1`, `name_2`... if already taken.
fn unique(name: &str, used: &mut HashSet<String>) -> String {
    let mut candidate = name.to_string();
    let mut n = 1;
    while used.contains(&candidate) {
        candidate = format!("{name}_{n}");
        n += 1;
    }
    used.insert(candidate.clone());
    candidate
}

/// The output schema of a planned graph's sink input.
pub fn sink_schema(graph: &PhysicalGraph) -> Option<SchemaRef> {
    // The main sink reads port 0; dead-letter sinks read side ports.
    graph
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Sink(_)))
        .find(|n| graph.edges.iter().any(|e| e.to == n.id && e.port == 0))
        .map(|n| Arc::new(n.schema.clone()))
}

/// After `node`: the watermark of a processing-time attribute `column`.
/// Processing time only moves forward: the watermark is the latest
/// PROCTIME() seen, with no delay, and it follows the wall clock.
fn proctime_watermark(
    builder: &mut GraphBuilder,
    node: usize,
    schema: &Schema,
    column: &str,
) -> Result<usize> {
    let index = schema
        .index_of(column)
        .map_err(|e| PlanError::internal(e.to_string()))?;
    let wm = WatermarkNode {
        column: column.to_string(),
        expr: ScalarExpr::column(column.to_string(), index),
        idle_timeout_ms: None,
        processing_time: true,
    };
    let p = builder.parallelism(node);
    Ok(builder.add(
        NodeKind::Watermark(wm),
        p,
        schema.clone(),
        Some((node, EdgeKind::Forward)),
    ))
}
