//! Planning Top-N and deduplication: a subquery that numbers its rows with
//! `ROW_NUMBER()`, `RANK()` or `DENSE_RANK() OVER (PARTITION BY .. ORDER BY ..)`,
//! read by a query that keeps the rows ranked at most N:
//!
//! ```sql
//! SELECT * FROM (
//!   SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn
//!   FROM bid)
//! WHERE rn <= 10
//! ```
//!
//! ```text
//!  input ─► Project(WHERE; columns, partition and order keys)
//!        ══ shuffle by the partition key ══► Rank(limit N) ─► ...
//! ```
//!
//! The outer query's bound (`rn <= N`, `rn < N`, `rn = 1`, or `N >= rn`) is
//! taken by the subquery's Rank node. When the outer query reads the rank
//! nowhere else, the rank is not emitted at all: a row moving from rank 2 to
//! rank 3 of a top 10 then changes nothing downstream. The mode:
//! - partitioned by a window's `window_end` (of a window TVF or an
//!   append-only window aggregate): a window Top-N, emitted once when the
//!   window closes;
//! - `ROW_NUMBER()` ordered by processing time ascending (`PROCTIME()`, or
//!   a processing-time attribute), over an append-only input: the first
//!   rows of each key as they arrive, emitted at once, later ones dropped
//!   (Flink's keep-first deduplication when N = 1; append-only);
//! - `ROW_NUMBER()` ordered by the input's event-time attribute ascending,
//!   over an append-only input: the first rows, emitted once the watermark
//!   passes them (keep-first deduplication when N = 1);
//! - anything else: an updating Top-N with a changelog output (keep-last
//!   deduplication is `ORDER BY time DESC` with N = 1).

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use eddy_parser::ast::{self, ExprKind, SelectItem, SetExpr, Span, TableRefKind};

use super::join::split_conjuncts;
use super::keyed::{PreProjection, passed_on, select_list};
use super::{From, GraphBuilder, QueryPlan, QueryPlanner, WINDOW_END};
use crate::error::{PlanError, Result};
use crate::graph::{NodeKind, RankFunction, RankMode, RankSpec};

/// The bound an outer query puts on a subquery's rank.
#[derive(Debug, Clone, Copy)]
pub(super) struct TopN {
    pub limit: u64,
    /// The outer query reads the rank column beyond the bound.
    pub emit_rank: bool,
}

/// The rank item of a SELECT list: its index, call and output name.
fn rank_item(q: &ast::Select) -> Option<(usize, &ast::Function, String, Span)> {
    q.projection.iter().enumerate().find_map(|(i, item)| {
        let SelectItem::Expr { expr, alias } = item else {
            return None;
        };
        let ExprKind::Function(f) = &expr.kind else {
            return None;
        };
        RankFunction::from_name(&f.name.value).filter(|_| f.over.is_some())?;
        let name = alias.as_ref().map_or(&f.name.value, |a| &a.value).clone();
        Some((i, f, name, expr.span))
    })
}

/// Whether the SELECT list ranks its rows.
pub(super) fn has_rank(q: &ast::Select) -> bool {
    rank_item(q).is_some()
}

/// Whether `e` refers to a column named `name` anywhere.
fn mentions(e: &ast::Expr, name: &str) -> bool {
    if let ExprKind::Identifier(parts) = &e.kind
        && parts
            .last()
            .is_some_and(|p| p.value.eq_ignore_ascii_case(name))
    {
        return true;
    }
    e.children().into_iter().any(|c| mentions(c, name))
}

/// The row limit a conjunct such as `rn <= 10` puts on column `name` (of
/// the table `qualifier`): `Ok(None)` if it is no such bound.
fn bound_of(e: &ast::Expr, name: &str, qualifier: Option<&str>) -> Result<Option<u64>> {
    let ExprKind::Binary { op, left, right } = &e.kind else {
        return Ok(None);
    };
    let is_rank = |x: &ast::Expr| match &x.kind {
        ExprKind::Identifier(parts) => match parts.as_slice() {
            [c] => c.value.eq_ignore_ascii_case(name),
            [t, c] => c.value.eq_ignore_ascii_case(name) && qualifier.is_none_or(|q| t.value == q),
            _ => false,
        },
        _ => false,
    };
    let number = |x: &ast::Expr| match &x.kind {
        ExprKind::Literal(ast::Literal::Number(n)) => n.parse::<u64>().ok(),
        _ => None,
    };
    use ast::BinaryOp::{Eq, Gt, GtEq, Lt, LtEq};
    // `rn op n`, or `n op rn` turned around.
    let (op, n) = match (is_rank(left), number(right), number(left), is_rank(right)) {
        (true, Some(n), _, _) => (*op, n),
        (_, _, Some(n), true) => match op {
            GtEq => (LtEq, n),
            Gt => (Lt, n),
            Eq => (Eq, n),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let limit = match op {
        LtEq => n,
        Lt => n.saturating_sub(1),
        Eq if n == 1 => 1,
        _ => return Ok(None),
    };
    if limit == 0 {
        return Err(PlanError::user(
            format!(
                "`{name} {} {n}` keeps no rows: a Top-N needs a bound of at least 1",
                op.as_str()
            ),
            e.span,
        ));
    }
    Ok(Some(limit))
}

impl QueryPlanner<'_> {
    /// Recognises a Top-N: `q` reads one subquery that ranks its rows, and
    /// bounds the rank in WHERE. Returns `q` without the bound (when the
    /// rank is not needed otherwise) and the bound for the subquery.
    pub(super) fn top_n_filter(&self, q: &ast::Select) -> Result<Option<(ast::Select, TopN)>> {
        let [t] = q.from.as_slice() else {
            return Ok(None);
        };
        let TableRefKind::Subquery(sub) = &t.kind else {
            return Ok(None);
        };
        let SetExpr::Select(inner) = &sub.body else {
            return Ok(None);
        };
        let Some((_, _, name, _)) = rank_item(inner) else {
            return Ok(None);
        };
        let Some(selection) = &q.selection else {
            return Ok(None);
        };
        let qualifier = t.alias.as_ref().map(|a| a.name.value.as_str());
        let mut conjuncts = Vec::new();
        split_conjuncts(selection, &mut conjuncts);
        let mut found = None;
        for (i, c) in conjuncts.iter().enumerate() {
            if let Some(limit) = bound_of(c, &name, qualifier)? {
                found = Some((i, limit));
                break;
            }
        }
        let Some((at, limit)) = found else {
            return Ok(None);
        };
        let rest: Vec<&ast::Expr> = conjuncts
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != at)
            .map(|(_, c)| *c)
            .collect();
        let reads_rank = |e: &ast::Expr| mentions(e, &name);
        let emit_rank = q.projection.iter().any(|item| match item {
            SelectItem::Wildcard { .. } | SelectItem::QualifiedWildcard { .. } => true,
            SelectItem::Expr { expr, .. } => reads_rank(expr),
        }) || rest.iter().any(|c| reads_rank(c))
            || q.group_by.iter().any(reads_rank)
            || q.having.as_ref().is_some_and(reads_rank);
        let mut rewritten = q.clone();
        if !emit_rank {
            rewritten.selection = rest.into_iter().cloned().reduce(|l, r| ast::Expr {
                span: l.span.union(r.span),
                kind: ExprKind::Binary {
                    op: ast::BinaryOp::And,
                    left: Box::new(l),
                    right: Box::new(r),
                },
            });
        }
        Ok(Some((rewritten, TopN { limit, emit_rank })))
    }

    /// Plans a SELECT with a rank item (see the module docs); `top_n` is the
    /// bound its reader put on it.
    pub(super) fn plan_rank(
        &self,
        q: &ast::Select,
        from: &From,
        mut builder: GraphBuilder,
        input: usize,
        filter: Option<(Expr, Field)>,
        top_n: Option<TopN>,
    ) -> Result<QueryPlan> {
        let (index, call, rank_name, rank_span) =
            rank_item(q).ok_or_else(|| PlanError::internal("a Top-N without a rank"))?;
        let function = RankFunction::from_name(&call.name.value)
            .ok_or_else(|| PlanError::internal("not a rank function"))?;
        let sql = function.as_sql();
        let Some(top_n) = top_n else {
            return Err(PlanError::not_supported(
                format!(
                    "{sql}() without a bound on it: read it from a subquery and keep `WHERE {rank_name} <= N` (a Top-N)"
                ),
                rank_span,
            ));
        };
        if let Some((_, _, _, span)) = rank_item(&ast::Select {
            projection: q.projection[index + 1..].to_vec(),
            ..q.clone()
        }) {
            return Err(PlanError::not_supported(
                "two rank functions in one SELECT",
                span,
            ));
        }
        if let Some(a) = call.args.first() {
            return Err(PlanError::user(
                format!("{sql}() takes no arguments"),
                a.span,
            ));
        }
        let over = call
            .over
            .as_ref()
            .ok_or_else(|| PlanError::internal("a rank without OVER"))?;
        if over.frame.is_some() {
            return Err(PlanError::user(
                format!("{sql}() takes no window frame (ROWS or RANGE)"),
                rank_span,
            ));
        }
        if over.order_by.is_empty() {
            return Err(PlanError::user(
                format!("{sql}() OVER (...) needs an ORDER BY"),
                rank_span,
            ));
        }
        let items = self.items_without(q, from, &[index])?;
        let bind = |e: &ast::Expr, clause: &'static str| self.bind_key(e, from, clause);
        let mut pre = PreProjection::new(&items);
        let mut partition = Vec::new();
        let mut window_end = None;
        for (i, p) in over.partition_by.iter().enumerate() {
            let (raw, bound, field) = bind(p, "PARTITION BY")?;
            let c = pre.column_of(bound, field, &format!("partition{i}"));
            let is_window_end = matches!(&raw, Expr::Column(col)
                if (from.window.is_some() && col.name == WINDOW_END)
                    || from.window_end.as_deref() == Some(col.name.as_str()));
            if is_window_end {
                window_end = Some(c);
            }
            partition.push(c);
        }
        let mut order = Vec::new();
        let mut first_is_time = false;
        let mut first_is_proctime = false;
        for (i, o) in over.order_by.iter().enumerate() {
            let (raw, bound, field) = bind(&o.expr, "ORDER BY")?;
            let descending = o.asc == Some(false);
            if i == 0 {
                first_is_time = !descending
                    && matches!(&raw, Expr::Column(col)
                        if from.time_attribute.as_deref() == Some(col.name.as_str()));
                first_is_proctime = !descending
                    && ((first_is_time && from.proctime)
                        || matches!(&raw, Expr::ScalarFunction(f)
                            if f.name() == crate::functions::PROCTIME));
            }
            order.push((
                pre.column_of(bound, field, &format!("order{i}")),
                descending,
            ));
        }
        let op_column = pre.push_op(from)?;
        let mode = match (window_end, first_is_time) {
            (Some(end), _) if !from.changelog => RankMode::WindowClose { window_end: end },
            (None, _)
                if first_is_proctime && function == RankFunction::RowNumber && !from.changelog =>
            {
                RankMode::FirstSeen
            }
            (None, true) if function == RankFunction::RowNumber && !from.changelog => {
                RankMode::FirstByTime { time: order[0].0 }
            }
            _ => RankMode::Updating,
        };
        let rank_column = top_n.emit_rank.then(|| pre.unique(&rank_name));
        let spec = RankSpec {
            function,
            partition: partition.clone(),
            order,
            limit: top_n.limit,
            rank_column: rank_column.clone(),
            op_column,
            mode,
            // A window's partition ends with the window.
            state_ttl_ms: match mode {
                RankMode::WindowClose { .. } => None,
                _ => self.settings.state_ttl_ms,
            },
            state_ttl_event_time: self.settings.state_ttl_event_time(),
        };
        let out_schema = spec.output_schema(&pre.schema());
        let changelog = spec.emits_changelog();
        let rank_id = self.add_keyed(
            &mut builder,
            input,
            pre,
            filter,
            from,
            partition,
            NodeKind::Rank(spec),
            out_schema.as_ref().clone(),
        )?;

        // The SELECT list over the Rank node's output, the rank in its place.
        let out_df = DFSchema::try_from(out_schema.as_ref().clone())?;
        let own = rank_column
            .map(|c| (Field::new(c, DataType::Int64, false), rank_span))
            .into_iter()
            .collect();
        let items = select_list(items, own);
        // A window_end or event time passed on unchanged stays a time
        // attribute: rows come out before the watermark passes them.
        let (window_end, time) = match mode {
            RankMode::WindowClose { window_end } => (Some(window_end), None),
            RankMode::FirstByTime { time } => (None, Some(time)),
            RankMode::Updating | RankMode::FirstSeen => (None, None),
        };
        Ok(QueryPlan {
            changelog,
            time_attribute: passed_on(&items, &out_df, time),
            proctime: false,
            window_end: passed_on(&items, &out_df, window_end),
            builder,
            input: rank_id,
            input_schema: out_df,
            filter: None,
            items,
        })
    }
}
