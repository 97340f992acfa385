//! Planning OVER aggregates: SELECT items `agg(...) OVER (PARTITION BY ..
//! ORDER BY o ROWS|RANGE BETWEEN .. PRECEDING AND CURRENT ROW)`.
//!
//! ```text
//!  input ─► Project(WHERE; columns, keys, arguments)
//!        ══ shuffle by the partition key ══► OverAggregate ─► ...
//! ```
//!
//! Every OVER item of a query must use the same window. Ordered by the
//! input's event-time attribute ascending over an append-only input, rows
//! are emitted once the watermark passes them (append-only, as in Flink);
//! otherwise, e.g. over an updating input (Nexmark q6), the output is a
//! changelog kept equal to the query over the input's current rows (see
//! [`eddy_operators::over`]). Frames must be bounded and end at the current
//! row: `n PRECEDING` rows, or an `INTERVAL` before a timestamp.

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use eddy_parser::ast::{self, ExprKind, FrameBound, SelectItem, Span};

use super::keyed::{PreProjection, passed_on, select_list};
use super::{From, GraphBuilder, QueryPlan, QueryPlanner};
use crate::binder::{coerce, coerce_aggregate, interval_millis};
use crate::error::{PlanError, Result};
use crate::expr::ScalarExpr;
use crate::graph::{AggregateCall, NodeKind, OverAggregateNode, OverFrame, OverMode, OverSpec};

/// The OVER aggregate items of a SELECT list: index, call, output name.
fn over_items(q: &ast::Select) -> Vec<(usize, &ast::Expr, &ast::Function, String)> {
    q.projection
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let SelectItem::Expr { expr, alias } = item else {
                return None;
            };
            let ExprKind::Function(f) = &expr.kind else {
                return None;
            };
            f.over.as_ref()?;
            if eddy_operators::rank::RankFunction::from_name(&f.name.value).is_some() {
                return None;
            }
            let name = alias.as_ref().map_or(&f.name.value, |a| &a.value).clone();
            Some((i, expr, f, name))
        })
        .collect()
}

pub(super) fn has_over(q: &ast::Select) -> bool {
    !over_items(q).is_empty()
}

/// A window's frame, checked: ending at the current row.
fn frame_of(w: &ast::WindowSpec, span: Span) -> Result<OverFrame> {
    // No frame: SQL's (and Flink's) default, every row up to the current
    // one and its ties.
    let Some(frame) = &w.frame else {
        return Ok(OverFrame::Unbounded { rows: false });
    };
    if !matches!(frame.end, None | Some(FrameBound::CurrentRow)) {
        return Err(PlanError::not_supported(
            "an OVER frame that ends after the current row",
            span,
        ));
    }
    match (&frame.start, frame.rows) {
        (FrameBound::CurrentRow, true) => Ok(OverFrame::Rows(0)),
        (FrameBound::CurrentRow, false) => Ok(OverFrame::RangeMs(0)),
        (FrameBound::Preceding(Some(n)), true) => match &n.kind {
            ExprKind::Literal(ast::Literal::Number(v)) => {
                v.parse().map(OverFrame::Rows).map_err(|_| {
                    PlanError::user("ROWS n PRECEDING takes a whole number of rows", n.span)
                })
            }
            _ => Err(PlanError::user(
                "ROWS n PRECEDING takes a whole number of rows",
                n.span,
            )),
        },
        (FrameBound::Preceding(Some(d)), false) => {
            let ms = interval_millis(d)?;
            if ms < 0 {
                return Err(PlanError::user(
                    "a RANGE interval must not be negative",
                    d.span,
                ));
            }
            Ok(OverFrame::RangeMs(ms))
        }
        (FrameBound::Preceding(None), rows) => Ok(OverFrame::Unbounded { rows }),
        (FrameBound::Following(_), _) => Err(PlanError::not_supported(
            "an OVER frame that starts after the current row",
            span,
        )),
    }
}

impl QueryPlanner<'_> {
    /// Plans a SELECT with OVER aggregates (see the module docs).
    pub(super) fn plan_over(
        &self,
        q: &ast::Select,
        from: &From,
        mut builder: GraphBuilder,
        input: usize,
        filter: Option<(Expr, Field)>,
    ) -> Result<QueryPlan> {
        let calls = over_items(q);
        let scope = &from.scope;
        let indices: Vec<usize> = calls.iter().map(|c| c.0).collect();
        let items = self.items_without(q, from, &indices)?;
        let bind = |e: &ast::Expr, clause: &'static str| self.bind_key(e, from, clause);
        let mut pre = PreProjection::new(&items);
        // The window, the same for every call.
        let mut window: Option<(Vec<Expr>, Expr, bool, OverFrame)> = None;
        let mut spec = None;
        for (_, expr, call, _) in &calls {
            let w = call
                .over
                .as_ref()
                .ok_or_else(|| PlanError::internal("an OVER item without OVER"))?;
            let partition: Vec<(Expr, Expr, Field)> = w
                .partition_by
                .iter()
                .map(|p| bind(p, "PARTITION BY"))
                .collect::<Result<_>>()?;
            let [order] = w.order_by.as_slice() else {
                return Err(match w.order_by.get(1) {
                    Some(o) => PlanError::not_supported(
                        "an OVER window ordered by several columns",
                        o.expr.span,
                    ),
                    None => PlanError::user(
                        "an OVER aggregate needs ORDER BY (a time column)",
                        expr.span,
                    ),
                });
            };
            let (raw_order, order_expr, order_field) = bind(&order.expr, "ORDER BY")?;
            let descending = order.asc == Some(false);
            let frame = frame_of(w, expr.span)?;
            if matches!(
                frame,
                OverFrame::RangeMs(_) | OverFrame::Unbounded { rows: false }
            ) && (descending || !matches!(order_field.data_type(), DataType::Timestamp(..)))
            {
                return Err(PlanError::user(
                    "a RANGE frame needs ORDER BY a timestamp, ascending",
                    order.expr.span,
                ));
            }
            let this = (
                partition.iter().map(|p| p.1.clone()).collect(),
                order_expr.clone(),
                descending,
                frame,
            );
            match &window {
                Some(first) if *first != this => {
                    return Err(PlanError::not_supported(
                        "OVER aggregates over different windows in one SELECT",
                        expr.span,
                    ));
                }
                Some(_) => continue,
                None => window = Some(this),
            }
            let partition = partition
                .into_iter()
                .enumerate()
                .map(|(i, (_, e, f))| pre.column_of(e, f, &format!("partition{i}")))
                .collect::<Vec<_>>();
            let order_column = pre.column_of(order_expr, order_field, "order");
            let event_time = !descending
                && !from.changelog
                && matches!(&raw_order, Expr::Column(c)
                    if from.time_attribute.as_deref() == Some(c.name.as_str()));
            let mode = if event_time {
                OverMode::EventTime
            } else {
                OverMode::Updating
            };
            spec = Some(OverSpec {
                partition,
                order: (order_column, descending),
                frame,
                op_column: None,
                mode,
                state_ttl_ms: self.settings.state_ttl_ms,
                state_ttl_event_time: self.settings.state_ttl_event_time(),
            });
        }
        let mut spec = spec.ok_or_else(|| PlanError::internal("no OVER aggregate"))?;
        // The aggregates and their arguments.
        let mut aggregates = Vec::new();
        let mut own = Vec::new();
        for (_, expr, call, name) in &calls {
            if let Some(f) = &call.filter {
                return Err(PlanError::not_supported(
                    "FILTER (WHERE ...) in an OVER aggregate",
                    f.span,
                ));
            }
            if self.functions().aggregate(&call.name.value).is_none() {
                return Err(PlanError::user(
                    format!(
                        "{}(...) OVER (...): not an aggregate or ranking function",
                        call.name.value.to_uppercase()
                    ),
                    call.name.span,
                ));
            }
            let bound = self.binder.bind_aggregate(expr, scope)?;
            let bound = crate::binder::BoundAggregate {
                args: bound
                    .args
                    .into_iter()
                    .map(|a| self.window_columns(a, from))
                    .collect::<Result<_>>()?,
                ..bound
            };
            let (args, field) = coerce_aggregate(&bound, &scope.schema, expr.span)?;
            let mut arg_refs = Vec::new();
            for (i, arg) in args.into_iter().enumerate() {
                if let Expr::Literal(..) = arg {
                    arg_refs.push(ScalarExpr::from_df(&arg, &scope.schema)?);
                    continue;
                }
                let (_, f) = coerce(arg.clone(), &scope.schema, expr.span)?;
                let c = pre.column_of(arg, f, &format!("arg{i}"));
                arg_refs.push(ScalarExpr::column(pre.schema().field(c).name().clone(), c));
            }
            let output_name = pre.unique(name);
            own.push((
                Field::new(&output_name, field.data_type().clone(), true),
                expr.span,
            ));
            aggregates.push(AggregateCall {
                function: bound.udaf.name().to_string(),
                args: arg_refs,
                filter: None,
                distinct: bound.distinct,
                output_name,
                output_type: field.data_type().clone(),
            });
        }
        spec.op_column = pre.push_op(from)?;
        let agg_fields: Vec<Field> = own.iter().map(|(f, _)| f.clone()).collect();
        let out_schema = spec.output_schema(&pre.schema(), &agg_fields);
        let changelog = spec.emits_changelog();
        let time = (spec.mode == OverMode::EventTime).then_some(spec.order.0);
        let partition = spec.partition.clone();
        let node = NodeKind::OverAggregate(OverAggregateNode { spec, aggregates });
        let id = self.add_keyed(
            &mut builder,
            input,
            pre,
            filter,
            from,
            partition,
            node,
            out_schema.as_ref().clone(),
        )?;
        let out_df = DFSchema::try_from(out_schema.as_ref().clone())?;
        let items = select_list(items, own);
        Ok(QueryPlan {
            changelog,
            time_attribute: passed_on(&items, &out_df, time),
            proctime: false,
            window_end: None,
            builder,
            input: id,
            input_schema: out_df,
            filter: None,
            items,
        })
    }
}
