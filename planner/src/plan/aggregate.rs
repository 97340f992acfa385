//! Planning `GROUP BY`: a window aggregate over a window TVF, or an
//! updating aggregate without a window.
//!
//! ```text
//!  input ─► Project(WHERE; keys, event time, aggregate arguments and FILTERs,
//!                   [dead-letter columns], [_op])
//!        ══ shuffle by the keys ══► WindowAggregate | UpdatingAggregate
//!        ─► (the caller's) Project(HAVING; SELECT over keys, window bounds, results)
//! ```
//!
//! One function per step: the group keys ([`QueryPlanner::group_keys`]),
//! the aggregate calls ([`QueryPlanner::aggregate_calls`]), the
//! pre-projection that computes what they read
//! ([`QueryPlanner::aggregate_inputs`]), the aggregate node
//! ([`QueryPlanner::aggregate_node`]) and what the query reads of it
//! ([`QueryPlanner::aggregate_output`]).

use std::collections::HashSet;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::Expr;
use eddy_parser::ast::{self, Span};

use super::{
    From, GraphBuilder, OP_COLUMN, QueryPlan, QueryPlanner, WINDOW_END, WINDOW_START, WINDOW_TIME,
    fix_span, ts_ms, unique, window_time_of,
};
use crate::binder::{AggMode, BoundAggregate, coerce, coerce_aggregate};
use crate::error::{PlanError, Result};
use crate::expr::ScalarExpr;
use crate::graph::{
    AggregateCall, EdgeKind, LateOutputSpec, NodeKind, ProjectNode, SinkNode,
    UpdatingAggregateNode, WindowAggregateNode,
};
use crate::session::LatePolicy;

/// The columns the aggregate's input projection computes, each once.
struct PreProjection<'a> {
    schema: &'a DFSchema,
    exprs: Vec<Expr>,
    fields: Vec<Field>,
    used: HashSet<String>,
}

impl<'a> PreProjection<'a> {
    fn new(schema: &'a DFSchema) -> Self {
        Self {
            schema,
            exprs: Vec::new(),
            fields: Vec::new(),
            used: HashSet::new(),
        }
    }

    /// Adds `expr` (coerced) as a column named after `name` (made unique).
    fn push(&mut self, expr: Expr, name: &str, span: Span) -> Result<usize> {
        let (e, f) = coerce(expr, self.schema, span)?;
        self.push_field(e, f, name);
        Ok(self.exprs.len() - 1)
    }

    fn push_field(&mut self, expr: Expr, field: Field, name: &str) {
        self.fields
            .push(field.with_name(unique(name, &mut self.used)));
        self.exprs.push(expr);
    }

    /// The column computing `expr` (coerced already), added (named
    /// `name`) if there is none.
    fn column(&mut self, expr: Expr, name: &str, span: Span) -> Result<usize> {
        if let Some(idx) = self.exprs.iter().position(|e| *e == expr) {
            return Ok(idx);
        }
        let (_, field) = coerce(expr.clone(), self.schema, span)?;
        self.push_field(expr, field, name);
        Ok(self.exprs.len() - 1)
    }

    fn reference(&self, idx: usize) -> ScalarExpr {
        ScalarExpr::column(self.fields[idx].name().clone(), idx)
    }
}

/// What the pre-projection gives the aggregate node.
struct AggregateInputs {
    calls: Vec<AggregateCall>,
    /// The aggregates' output fields.
    fields: Vec<Field>,
    /// The event-time column (a window's), after the keys.
    time_index: usize,
    late_output: Option<LateOutputSpec>,
    op_column: Option<usize>,
}

impl QueryPlanner<'_> {
    /// `SELECT keys, aggregates ... GROUP BY [window_start, window_end,]
    /// keys [HAVING ...]` over `input`: see the module docs.
    pub(super) fn plan_window_aggregate(
        &self,
        q: &ast::Select,
        from: &From,
        mut builder: GraphBuilder,
        input: usize,
        filter: Option<(Expr, Field)>,
        calls: &[&ast::Expr],
    ) -> Result<QueryPlan> {
        let keys = self.group_keys(q, from)?;
        let (aggs, spans) = self.aggregate_calls(calls, from)?;
        let mut pre = PreProjection::new(&from.scope.schema);
        let inputs = self.aggregate_inputs(q, from, &keys, &aggs, &spans, &mut pre)?;
        let project = ProjectNode {
            filter: filter
                .map(|(e, _)| ScalarExpr::from_df(&e, pre.schema))
                .transpose()?,
            exprs: pre
                .exprs
                .iter()
                .map(|e| ScalarExpr::from_df(e, pre.schema))
                .collect::<Result<_>>()?,
        };
        // With the parallelism of its input (a subquery's may be several).
        let pre_p = builder.parallelism(input);
        let pre_id = builder.add(
            NodeKind::Project(project),
            pre_p,
            Schema::new(pre.fields.clone()),
            Some((input, EdgeKind::Forward)),
        );
        let late_schema = inputs
            .late_output
            .as_ref()
            .map(|l| {
                eddy_operators::late::late_schema(
                    &Schema::new(pre.fields.clone()),
                    &l.columns,
                    &l.names,
                )
            })
            .transpose()?;
        let (kind, out_schema, changelog) =
            self.aggregate_node(from, &pre.fields[..keys.len()], inputs);
        let key_indices: Vec<usize> = (0..keys.len()).collect();
        let (p, edge) = self.keyed_edge(pre_p, key_indices);
        let agg_id = builder.add(kind, p, out_schema.clone(), Some((pre_id, edge)));
        if let (LatePolicy::DeadLetter(name), Some(schema)) =
            (&self.settings.late_policy, late_schema)
        {
            let def = self.catalog.sink(name).ok_or_else(|| {
                PlanError::user(format!("the dead-letter sink '{name}' was dropped"), q.span)
            })?;
            builder.side_sinks.push((
                agg_id,
                eddy_operators::operator::LATE_PORT,
                SinkNode::of(def),
                schema,
            ));
        }
        let key_names: Vec<(Expr, String)> = keys
            .iter()
            .zip(&pre.fields)
            .map(|((k, _), f)| (k.clone(), f.name().clone()))
            .collect();
        self.aggregate_output(q, from, &aggs, &key_names, out_schema, changelog)
            .map(|(items, filter, out_df, window_end)| QueryPlan {
                changelog,
                window_end,
                time_attribute: None,
                proctime: false,
                builder,
                input: agg_id,
                input_schema: out_df,
                filter,
                items,
            })
    }

    /// The `GROUP BY` keys, without the window bounds, which a window
    /// aggregation must group by; a SESSION window's `PARTITION BY` must be
    /// the keys.
    fn group_keys(&self, q: &ast::Select, from: &From) -> Result<Vec<(Expr, Span)>> {
        let group_span = q.group_by.first().map_or(q.span, |g| g.span);
        let mut keys: Vec<(Expr, Span)> = Vec::new();
        let (mut has_start, mut has_end) = (false, false);
        for g in &q.group_by {
            let bound = self
                .binder
                .bind(g, &from.scope, AggMode::Forbidden("GROUP BY"))?;
            match &bound {
                Expr::Column(c) if c.name == WINDOW_START => has_start = true,
                Expr::Column(c) if c.name == WINDOW_END => has_end = true,
                _ => keys.push((bound, g.span)),
            }
        }
        let Some(window) = from.window.as_ref() else {
            // GROUP BY without a window: an updating aggregate; without
            // keys, one updating row.
            return Ok(keys);
        };
        if !(has_start && has_end) {
            return Err(PlanError::user(
                "a window aggregation must GROUP BY both window_start and window_end",
                group_span,
            ));
        }
        if let Some(first) = window.partition_by.first() {
            let mut keyed: Vec<&str> = keys
                .iter()
                .filter_map(|(k, _)| match k {
                    Expr::Column(c) => Some(c.name.as_str()),
                    _ => None,
                })
                .collect();
            let mut partitioned: Vec<&str> = window
                .partition_by
                .iter()
                .map(|p| p.value.as_str())
                .collect();
            keyed.sort_unstable();
            partitioned.sort_unstable();
            if keyed != partitioned || keyed.len() != keys.len() {
                return Err(PlanError::not_supported(
                    "a SESSION window partitioned by columns other than the GROUP BY keys",
                    first.span,
                ));
            }
        }
        Ok(keys)
    }

    /// The aggregate calls, each once, with their spans.
    fn aggregate_calls(
        &self,
        calls: &[&ast::Expr],
        from: &From,
    ) -> Result<(Vec<BoundAggregate>, Vec<Span>)> {
        let mut aggs: Vec<BoundAggregate> = Vec::new();
        let mut spans = Vec::new();
        for call in calls {
            let mut bound = self.binder.bind_aggregate(call, &from.scope)?;
            bound.args = bound
                .args
                .into_iter()
                .map(|a| self.window_columns(a, from))
                .collect::<Result<_>>()?;
            if let Some((f, span)) = bound.filter.take() {
                bound.filter = Some((self.window_columns(f, from)?, span));
            }
            if aggs.iter().any(|a| a.same_call(&bound)) {
                continue;
            }
            spans.push(call.span);
            aggs.push(bound);
        }
        Ok((aggs, spans))
    }

    /// Fills the pre-projection: the keys, the window's event time, each
    /// aggregate's arguments and FILTER, the dead-letter rows' columns and
    /// an updating input's `_op`.
    fn aggregate_inputs(
        &self,
        q: &ast::Select,
        from: &From,
        keys: &[(Expr, Span)],
        aggs: &[BoundAggregate],
        spans: &[Span],
        pre: &mut PreProjection<'_>,
    ) -> Result<AggregateInputs> {
        let scope = &from.scope;
        for (i, (k, span)) in keys.iter().enumerate() {
            let name = match k {
                Expr::Column(c) => c.name.clone(),
                _ => format!("key{i}"),
            };
            pre.push(self.window_columns(k.clone(), from)?, &name, *span)?;
        }
        let time_index = pre.exprs.len();
        if let Some(window) = &from.window {
            let time = Expr::Column(Column::new(Some(scope.qualifier()), &window.time_column));
            pre.push(time, &window.time_column, q.span)?;
        }
        let mut calls = Vec::new();
        let mut fields = Vec::new();
        for (agg, span) in aggs.iter().zip(spans) {
            let (call, field) = aggregate_call(agg, *span, pre)?;
            calls.push(call);
            fields.push(field);
        }
        // Dead-letter rows carry the source's columns.
        let late_output = match (&self.settings.late_policy, &from.window) {
            (LatePolicy::DeadLetter(_), Some(_)) => {
                let mut late = LateOutputSpec {
                    columns: Vec::new(),
                    names: Vec::new(),
                };
                for field in &from.columns {
                    let e = Expr::Column(Column::new(Some(scope.qualifier()), field.name()));
                    late.columns.push(pre.column(e, field.name(), q.span)?);
                    late.names.push(field.name().clone());
                }
                Some(late)
            }
            _ => None,
        };
        // An updating input's changes: the aggregate retracts `-U`/`-D` rows.
        let op_column = if from.changelog {
            let op = Expr::Column(
                scope
                    .field_column(OP_COLUMN)
                    .ok_or_else(|| PlanError::internal("a changelog without _op"))?,
            );
            pre.push_field(op, Field::new(OP_COLUMN, DataType::Int8, false), OP_COLUMN);
            Some(pre.exprs.len() - 1)
        } else {
            None
        };
        Ok(AggregateInputs {
            calls,
            fields,
            time_index,
            late_output,
            op_column,
        })
    }

    /// The aggregate node over the pre-projection (whose first columns are
    /// `keys`), its output schema, and whether the output is a changelog.
    fn aggregate_node(
        &self,
        from: &From,
        keys: &[Field],
        inputs: AggregateInputs,
    ) -> (NodeKind, Schema, bool) {
        let key_indices: Vec<usize> = (0..keys.len()).collect();
        let mut out_fields: Vec<Field> = keys.to_vec();
        let Some(window) = &from.window else {
            out_fields.extend(inputs.fields);
            out_fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
            let node = UpdatingAggregateNode {
                keys: key_indices,
                aggregates: inputs.calls,
                op_column: inputs.op_column,
                state_ttl_ms: self.settings.state_ttl_ms,
                state_ttl_event_time: self.settings.state_ttl_event_time(),
            };
            return (
                NodeKind::UpdatingAggregate(node),
                Schema::new(out_fields),
                true,
            );
        };
        let early_fire_ms = self
            .settings
            .early_fire_enabled
            .then_some(self.settings.early_fire_delay_ms)
            .flatten();
        let allowed_lateness_ms = self.settings.allowed_lateness_ms;
        let changelog = allowed_lateness_ms > 0 || early_fire_ms.is_some();
        out_fields.push(Field::new(WINDOW_START, ts_ms(), false));
        out_fields.push(Field::new(WINDOW_END, ts_ms(), false));
        out_fields.extend(inputs.fields);
        if changelog {
            out_fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        }
        let node = WindowAggregateNode {
            window: window.spec,
            keys: key_indices,
            time_column: inputs.time_index,
            aggregates: inputs.calls,
            allowed_lateness_ms,
            late_output: inputs.late_output,
            early_fire_ms,
            cache_bytes: self.settings.state_cache_bytes,
        };
        (
            NodeKind::WindowAggregate(node),
            Schema::new(out_fields),
            changelog,
        )
    }

    /// What the query reads of the aggregate's output: its SELECT items,
    /// HAVING, the output's schema, and the column that is still an
    /// append-only window's `window_end`.
    fn aggregate_output(
        &self,
        q: &ast::Select,
        from: &From,
        aggs: &[BoundAggregate],
        key_names: &[(Expr, String)],
        out_schema: Schema,
        changelog: bool,
    ) -> Result<AggregateOutput> {
        let scope = &from.scope;
        let out_df = DFSchema::try_from(out_schema)?;
        let to_output = |e: Expr| to_output(e, key_names);
        let items = self
            .select_items_over(q, scope, AggMode::Output(aggs), &to_output, &out_df)
            .map_err(|e| fix_span(e, q))?;
        let having = match &q.having {
            Some(h) => {
                let bound = self.binder.bind(h, scope, AggMode::Output(aggs))?;
                let bound = to_output(bound).map_err(|e| {
                    if e.span == Some(Span::default()) {
                        PlanError {
                            span: Some(h.span),
                            ..e
                        }
                    } else {
                        e
                    }
                })?;
                let (expr, field) = coerce(bound, &out_df, h.span)?;
                if !matches!(field.data_type(), DataType::Boolean | DataType::Null) {
                    return Err(PlanError::user(
                        format!(
                            "HAVING must be a boolean condition, not {}",
                            field.data_type()
                        ),
                        h.span,
                    ));
                }
                Some(ScalarExpr::from_df(&expr, &out_df)?)
            }
            None => None,
        };
        // An append-only window aggregate's window_end, selected as it is.
        let window_end = items.iter().find_map(|(e, f, _)| match e {
            Expr::Column(c) if !changelog && c.relation.is_none() && c.name == WINDOW_END => {
                Some(f.name().clone())
            }
            _ => None,
        });
        Ok((items, having, out_df, window_end))
    }
}

/// See [`QueryPlanner::aggregate_output`].
type AggregateOutput = (
    Vec<(Expr, Field, Span)>,
    Option<ScalarExpr>,
    DFSchema,
    Option<String>,
);

/// One aggregate call over the pre-projection's columns (added as needed)
/// and its output field.
fn aggregate_call(
    agg: &BoundAggregate,
    span: Span,
    pre: &mut PreProjection<'_>,
) -> Result<(AggregateCall, Field)> {
    let (args, field) = coerce_aggregate(agg, pre.schema, span)?;
    let mut arg_refs = Vec::new();
    for arg in args {
        if let Expr::Literal(..) = arg {
            arg_refs.push(ScalarExpr::from_df(&arg, pre.schema)?);
            continue;
        }
        let name = format!("arg{}", pre.exprs.len());
        let idx = pre.column(arg, &name, span)?;
        arg_refs.push(pre.reference(idx));
    }
    // FILTER (WHERE ...): a boolean column of the pre-projection.
    let filter = match &agg.filter {
        None => None,
        Some((f, fspan)) => {
            let (f, ffield) = coerce(f.clone(), pre.schema, *fspan)?;
            if !matches!(ffield.data_type(), DataType::Boolean | DataType::Null) {
                return Err(PlanError::user(
                    format!(
                        "FILTER (WHERE ...) must be a boolean condition, not {}",
                        ffield.data_type()
                    ),
                    *fspan,
                ));
            }
            let idx = match pre.exprs.iter().position(|e| *e == f) {
                Some(idx) => idx,
                None => {
                    let name = format!("filter{}", pre.exprs.len());
                    pre.push_field(f, ffield, &name);
                    pre.exprs.len() - 1
                }
            };
            Some(pre.reference(idx))
        }
    };
    let output_name = unique(&agg.output_name, &mut pre.used);
    let call = AggregateCall {
        function: agg.udaf.name().to_string(),
        args: arg_refs,
        filter,
        distinct: agg.distinct,
        output_name: output_name.clone(),
        output_type: field.data_type().clone(),
    };
    Ok((call, field.with_name(output_name)))
}

/// An expression over the aggregate's input rewritten over its output:
/// keys and window bounds become output columns; anything still qualified
/// is an input column outside GROUP BY, an error.
fn to_output(e: Expr, key_names: &[(Expr, String)]) -> Result<Expr> {
    let e = e
        .transform_down(|x| {
            if let Some((_, name)) = key_names.iter().find(|(k, _)| *k == x) {
                return Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
                    name,
                ))));
            }
            Ok(match &x {
                Expr::Column(c)
                    if c.relation.is_some() && (c.name == WINDOW_START || c.name == WINDOW_END) =>
                {
                    Transformed::yes(Expr::Column(Column::new_unqualified(&c.name)))
                }
                Expr::Column(c) if c.relation.is_some() && c.name == WINDOW_TIME => {
                    Transformed::yes(window_time_of(Expr::Column(Column::new_unqualified(
                        WINDOW_END,
                    ))))
                }
                _ => Transformed::no(x),
            })
        })?
        .data;
    let mut stray = None;
    e.apply(|x| {
        if let Expr::Column(c) = x
            && c.relation.is_some()
        {
            stray.get_or_insert(c.name.clone());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    match stray {
        Some(name) => Err(PlanError::user(
            format!("column '{name}' must appear in GROUP BY or be used in an aggregate function"),
            Span::default(),
        )),
        None => Ok(e),
    }
}
