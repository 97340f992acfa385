//! Planning joins: a FROM clause with several tables (comma joins) or
//! `JOIN ... ON`.
//!
//! ```text
//!  leaf:  Source ─► [Watermark] ─► Project(pushed-down filter; columns renamed apart)
//!  join:  left ══ shuffle by left keys ══►┐
//!                                          Join(type, residual) ─► ...
//!  right: ══ shuffle by right keys ═══════►┘
//! ```
//!
//! Several tables plan as a left-deep chain, in the order written. The
//! conjuncts of each join's condition (its `ON`, and for inner joins the
//! WHERE clause's) are placed where they cut the most work:
//! - a conjunct on one input only goes below the join, as a filter of that
//!   input, when the join does not preserve that input's unmatched rows
//!   (and the input is a table or an inner join);
//! - `left.col = right.col` of equal types becomes a key: both inputs are
//!   shuffled by their keys, and rows meet only their key's rows;
//! - everything else is the join's residual condition, evaluated on each
//!   pair of rows with the same key.
//!
//! WHERE is still applied after the join as well, which is harmless (a row
//! that passed a conjunct passes it again) and keeps outer joins exact.
//! Columns keep their SQL names for qualified references; where two tables
//! share a name, the later one's field is renamed (`id_1`) inside the plan.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Column, DFSchema, TableReference};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use eddy_parser::ast::{self, TableRefKind};

use super::{From, GraphBuilder, OP_COLUMN, QueryPlanner, unique};
use crate::binder::{AggMode, Scope, ScopeTable};
use crate::error::{PlanError, Result};
use crate::expr::ScalarExpr;
use crate::graph::{EdgeKind, Expiry, JoinNode, JoinType, NodeKind, ProjectNode};

/// The FROM clause as a tree of joins over its tables (leaves, by index).
pub(super) enum JoinTree<'a> {
    Leaf(usize),
    Join {
        join_type: JoinType,
        left: Box<JoinTree<'a>>,
        right: Box<JoinTree<'a>>,
        on: Option<&'a ast::Expr>,
    },
}

impl JoinTree<'_> {
    /// A filter can go below this input: it is a table or an inner join.
    pub(super) fn accepts_filters(&self) -> bool {
        matches!(
            self,
            JoinTree::Leaf(_)
                | JoinTree::Join {
                    join_type: JoinType::Inner,
                    ..
                }
        )
    }
}

/// One table of the join, resolved, waiting to be placed in the graph.
pub(super) struct Leaf {
    pub(super) from: From,
    builder: Option<GraphBuilder>,
    node: usize,
    /// Its columns' field names in the join (renamed apart).
    pub(super) fields: Vec<String>,
    /// A table read `FOR SYSTEM_TIME AS OF` (a lookup join's table): not
    /// in the graph, read by the join itself.
    pub(super) lookup: Option<super::lookup::LookupTarget>,
}

/// One conjunct of a join condition or WHERE clause.
#[derive(Clone)]
pub(super) struct Conjunct<'a> {
    pub(super) ast: &'a ast::Expr,
    /// Bound over all tables of the join, coerced.
    pub(super) expr: Expr,
    /// The qualifiers of the tables it reads.
    pub(super) tables: BTreeSet<String>,
}

/// A planned input of a join (a table or a join).
pub(super) struct Planned {
    pub(super) builder: GraphBuilder,
    pub(super) node: usize,
    /// Its row columns: qualifier and field (without `_op`).
    pub(super) fields: Vec<(String, Field)>,
    /// Rows come with `_op` after `fields`.
    pub(super) changelog: bool,
    /// The field that is a table's time attribute (watermarked).
    pub(super) time: Option<String>,
    /// `time` holds `PROCTIME()`.
    pub(super) proctime: bool,
    /// The field that is a window aggregate's `window_end`.
    pub(super) window_end: Option<String>,
}

impl Planned {
    pub(super) fn index_of(&self, c: &Column) -> Option<usize> {
        let q = c.relation.as_ref().map(|r| r.table().to_string());
        self.fields
            .iter()
            .position(|(fq, f)| Some(fq) == q.as_ref() && *f.name() == c.name)
    }
}

pub(super) fn split_conjuncts<'a>(e: &'a ast::Expr, out: &mut Vec<&'a ast::Expr>) {
    match &e.kind {
        ast::ExprKind::Binary {
            op: ast::BinaryOp::And,
            left,
            right,
        } => {
            split_conjuncts(left, out);
            split_conjuncts(right, out);
        }
        ast::ExprKind::Nested(inner) => split_conjuncts(inner, out),
        _ => out.push(e),
    }
}

pub(super) fn tables_of(e: &Expr) -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    let _ = e.apply(|x| {
        if let Expr::Column(c) = x
            && let Some(r) = &c.relation
        {
            tables.insert(r.table().to_string());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    tables
}

pub(super) fn and_all(exprs: Vec<Expr>) -> Option<Expr> {
    exprs
        .into_iter()
        .reduce(|a, b| Expr::BinaryExpr(BinaryExpr::new(Box::new(a), Operator::And, Box::new(b))))
}

pub(super) fn qualified_schema(fields: &[(String, Field)]) -> Result<DFSchema> {
    let fields = fields
        .iter()
        .map(|(q, f)| (Some(TableReference::bare(q.as_str())), Arc::new(f.clone())))
        .collect();
    Ok(DFSchema::new_with_metadata(fields, Default::default())?)
}

impl QueryPlanner<'_> {
    /// Plans the join of FROM's tables (see the module docs).
    pub(super) fn plan_joins(
        &self,
        items: &[ast::TableRef],
        selection: Option<&ast::Expr>,
    ) -> Result<(From, GraphBuilder, usize)> {
        // The tree, and its tables in the order written.
        let mut refs = Vec::new();
        let mut tree: Option<JoinTree> = None;
        for item in items {
            let t = flatten(item, &mut refs)?;
            tree = Some(match tree {
                None => t,
                Some(left) => JoinTree::Join {
                    join_type: JoinType::Inner,
                    left: Box::new(left),
                    right: Box::new(t),
                    on: None,
                },
            });
        }
        let tree = tree.ok_or_else(|| PlanError::internal("a join without tables"))?;

        let mut leaves = Vec::new();
        let mut used: HashSet<String> = HashSet::from([OP_COLUMN.to_string()]);
        let mut tables: Vec<ScopeTable> = Vec::new();
        let mut all_fields: Vec<(String, Field)> = Vec::new();
        for t in refs {
            let (from, builder, node, lookup) = match &t.for_system_time {
                Some(as_of) => {
                    let (from, builder, node, target) = self.lookup_target(t, as_of)?;
                    (from, Some(builder), node, Some(target))
                }
                None => {
                    let (from, builder, node) = self.resolve_table(t, None)?;
                    (from, Some(builder), node, None)
                }
            };
            if from.window.is_some() {
                return Err(PlanError::not_supported(
                    "a window TVF as a join input (join window aggregates instead)",
                    t.span,
                ));
            }
            let qualifier = from.scope.qualifier().to_string();
            if tables.iter().any(|x| x.qualifier == qualifier) {
                return Err(PlanError::user(
                    format!(
                        "table name '{qualifier}' appears more than once in FROM; give each an alias"
                    ),
                    t.span,
                ));
            }
            let fields: Vec<String> = from
                .columns
                .iter()
                .map(|f| unique(f.name(), &mut used))
                .collect();
            let table = from.scope.tables[0].table.clone();
            tables.push(ScopeTable {
                qualifier: qualifier.clone(),
                table,
                columns: from
                    .columns
                    .iter()
                    .map(|f| f.name().clone())
                    .zip(fields.iter().cloned())
                    .collect(),
            });
            for (f, name) in from.columns.iter().zip(&fields) {
                let field = f.clone().with_name(name).with_nullable(true);
                all_fields.push((qualifier.clone(), field));
            }
            leaves.push(Leaf {
                from,
                builder,
                node,
                fields,
                lookup,
            });
        }
        let rows_scope = Scope {
            tables: tables.clone(),
            schema: Arc::new(qualified_schema(&all_fields)?),
        };
        // WHERE conjuncts help an inner join (errors are reported when
        // WHERE itself is planned).
        let mut pushed = Vec::new();
        if let (Some(w), true) = (selection, tree.accepts_filters()) {
            let mut parts = Vec::new();
            split_conjuncts(w, &mut parts);
            for ast in parts {
                if let Ok(c) = self.conjunct(ast, &rows_scope, "WHERE") {
                    pushed.push(c);
                }
            }
        }
        let planned = self.plan_tree(&tree, pushed, &mut leaves, &rows_scope)?;
        let mut fields = all_fields;
        let columns: Vec<Field> = fields.iter().map(|(_, f)| f.clone()).collect();
        if planned.changelog {
            let q = tables[0].qualifier.clone();
            fields.push((q, Field::new(OP_COLUMN, DataType::Int8, false)));
        }
        let scope = Scope {
            tables,
            schema: Arc::new(qualified_schema(&fields)?),
        };
        // A temporal join keeps its left input's event-time attribute;
        // other joins have none.
        let from = From {
            columns,
            time_attribute: planned.time.clone().filter(|_| !planned.proctime),
            proctime: false,
            changelog: planned.changelog,
            window_end: None,
            scope,
            window: None,
        };
        Ok((from, planned.builder, planned.node))
    }

    pub(super) fn conjunct<'a>(
        &self,
        ast: &'a ast::Expr,
        scope: &Scope,
        clause: &'static str,
    ) -> Result<Conjunct<'a>> {
        let bound = self.binder.bind(ast, scope, AggMode::Forbidden(clause))?;
        let (expr, _) = super::coerce_condition(bound, &scope.schema, ast.span, clause)?;
        Ok(Conjunct {
            tables: tables_of(&expr),
            ast,
            expr,
        })
    }

    /// The conjuncts of a join's ON condition, each of which may read only
    /// the tables `in_join` accepts.
    pub(super) fn on_conjuncts<'a>(
        &self,
        on: Option<&'a ast::Expr>,
        scope: &Scope,
        in_join: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<Conjunct<'a>>> {
        let mut parts = Vec::new();
        if let Some(on) = on {
            split_conjuncts(on, &mut parts);
        }
        let mut conjuncts = Vec::new();
        for ast in parts {
            let c = self.conjunct(ast, scope, "ON")?;
            if let Some(t) = c.tables.iter().find(|t| !in_join(t)) {
                return Err(PlanError::user(
                    format!("this ON condition reads table '{t}', which is not part of its join"),
                    ast.span,
                ));
            }
            conjuncts.push(c);
        }
        Ok(conjuncts)
    }

    pub(super) fn plan_tree(
        &self,
        tree: &JoinTree,
        pushed: Vec<Conjunct>,
        leaves: &mut [Leaf],
        scope: &Scope,
    ) -> Result<Planned> {
        let (join_type, left, right, on) = match tree {
            JoinTree::Leaf(i) => return self.plan_leaf(&mut leaves[*i], pushed),
            JoinTree::Join {
                join_type,
                left,
                right,
                on,
            } => (*join_type, left, right, on),
        };
        if let JoinTree::Leaf(i) = right.as_ref()
            && leaves[*i].lookup.is_some()
        {
            return self.plan_lookup_join(join_type, left, *i, *on, pushed, leaves, scope);
        }
        let (left_tables, right_tables) = (leaf_tables(left, leaves), leaf_tables(right, leaves));
        let mut conjuncts = pushed;
        conjuncts.extend(self.on_conjuncts(*on, scope, &|t| {
            left_tables.contains(t) || right_tables.contains(t)
        })?);
        let push_left = join_type == JoinType::Inner || join_type == JoinType::Right;
        let push_right = join_type == JoinType::Inner || join_type == JoinType::Left;
        let (mut to_left, mut to_right, mut keys, mut residual) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for c in conjuncts {
            let on_left = !c.tables.is_empty() && c.tables.is_subset(&left_tables);
            let on_right = !c.tables.is_empty() && c.tables.is_subset(&right_tables);
            if on_left && push_left && left.accepts_filters() {
                to_left.push(c);
            } else if on_right && push_right && right.accepts_filters() {
                to_right.push(c);
            } else if let Some(pair) = equi_key(&c.expr, &left_tables, &right_tables) {
                keys.push(pair);
            } else {
                residual.push(c.expr);
            }
        }
        let left = self.plan_tree(left, to_left, leaves, scope)?;
        let right = self.plan_tree(right, to_right, leaves, scope)?;
        let mut left_keys = Vec::new();
        let mut right_keys = Vec::new();
        for (l, r) in keys {
            let (Some(li), Some(ri)) = (left.index_of(&l), right.index_of(&r)) else {
                return Err(PlanError::internal(
                    "a join key is not a column of its input",
                ));
            };
            left_keys.push(li);
            right_keys.push(ri);
        }
        let pair_fields: Vec<(String, Field)> =
            left.fields.iter().chain(&right.fields).cloned().collect();
        let (left_expiry, right_expiry) = if left.changelog || right.changelog {
            (None, None)
        } else {
            expiries(&left, &right, &left_keys, &right_keys, &residual)
        };
        let residual = and_all(residual)
            .map(|e| ScalarExpr::from_df(&e, &qualified_schema(&pair_fields)?))
            .transpose()?;
        let (time, watermark_delay_ms) = kept_time_attribute(&left, left_expiry, join_type);
        let node = JoinNode {
            join_type,
            left_keys: left_keys.clone(),
            right_keys: right_keys.clone(),
            left_op: left.changelog.then_some(left.fields.len()),
            right_op: right.changelog.then_some(right.fields.len()),
            residual,
            left_expiry,
            right_expiry,
            watermark_delay_ms,
            state_ttl_ms: self.settings.state_ttl_ms,
            state_ttl_event_time: self.settings.state_ttl_event_time(),
        };
        let changelog = node.emits_changelog();
        let mut schema_fields: Vec<Field> = pair_fields.iter().map(|(_, f)| f.clone()).collect();
        if changelog {
            schema_fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        }
        let (builder, id) = self.add_two_inputs(
            (left.builder, left.node, left_keys),
            (right.builder, right.node, right_keys),
            NodeKind::Join(node),
            Schema::new(schema_fields),
        );
        Ok(Planned {
            builder,
            node: id,
            fields: pair_fields,
            changelog,
            time: time.filter(|_| !changelog),
            proctime: false,
            window_end: None,
        })
    }

    /// Adds a node of two inputs (a join) over the graphs of `left` and
    /// `right`, each shuffled by its keys. Both sides have keys or neither
    /// has: both get the same parallelism.
    pub(super) fn add_two_inputs(
        &self,
        left: (GraphBuilder, usize, Vec<usize>),
        right: (GraphBuilder, usize, Vec<usize>),
        kind: NodeKind,
        schema: Schema,
    ) -> (GraphBuilder, usize) {
        let (mut builder, left_node, left_keys) = left;
        let offset = builder.merge(right.0);
        let right_node = right.1 + offset;
        let (p, left_edge) = self.keyed_edge(builder.parallelism(left_node), left_keys);
        let (_, right_edge) = self.keyed_edge(builder.parallelism(right_node), right.2);
        let id = builder.add(kind, p, schema, Some((left_node, left_edge)));
        builder.add_second_input(id, right_node, right_edge);
        (builder, id)
    }

    /// A table as a join input: its pushed-down filter, and its columns
    /// renamed to their field names in the join.
    pub(super) fn plan_leaf(&self, leaf: &mut Leaf, pushed: Vec<Conjunct>) -> Result<Planned> {
        if let Some(target) = &leaf.lookup {
            return Err(PlanError::user(
                "FOR SYSTEM_TIME AS OF is only valid on the right side of a JOIN",
                target.as_of.span,
            ));
        }
        let mut builder = leaf
            .builder
            .take()
            .ok_or_else(|| PlanError::internal("a join table planned twice"))?;
        let from = &leaf.from;
        let schema = &from.scope.schema;
        let mut filters = Vec::new();
        for c in pushed {
            filters.push(self.bind_predicate(c.ast, from, "WHERE")?.0);
        }
        let filter = and_all(filters)
            .map(|f| ScalarExpr::from_df(&f, schema))
            .transpose()?;
        let qualifier = from.scope.qualifier().to_string();
        let mut exprs = Vec::new();
        let mut fields = Vec::new();
        let mut out_fields = Vec::new();
        for (f, name) in from.columns.iter().zip(&leaf.fields) {
            let col = Expr::Column(Column::new(Some(qualifier.as_str()), f.name()));
            exprs.push(ScalarExpr::from_df(&col, schema)?);
            let field = f.clone().with_name(name).with_nullable(true);
            out_fields.push(field.clone());
            fields.push((qualifier.clone(), field));
        }
        if from.changelog {
            let op = Expr::Column(
                from.scope
                    .field_column(OP_COLUMN)
                    .ok_or_else(|| PlanError::internal("a changelog without _op"))?,
            );
            exprs.push(ScalarExpr::from_df(&op, schema)?);
            out_fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        }
        let p = builder.parallelism(leaf.node);
        let node = builder.add(
            NodeKind::Project(ProjectNode { filter, exprs }),
            p,
            Schema::new(out_fields),
            Some((leaf.node, EdgeKind::Forward)),
        );
        // The time attribute and window end, by their names in the join.
        let renamed = |column: &Option<String>| {
            column.as_ref().and_then(|c| {
                from.columns
                    .iter()
                    .zip(&leaf.fields)
                    .find(|(f, _)| f.name() == c)
                    .map(|(_, name)| name.clone())
            })
        };
        Ok(Planned {
            builder,
            node,
            fields,
            changelog: from.changelog,
            time: renamed(&from.time_attribute),
            proctime: from.proctime,
            window_end: renamed(&from.window_end),
        })
    }
}

/// The qualifiers of the tables of a join tree.
pub(super) fn leaf_tables(t: &JoinTree, leaves: &[Leaf]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect_leaves(t, &mut |i| {
        out.insert(leaves[i].from.scope.qualifier().to_string());
    });
    out
}

fn collect_leaves(t: &JoinTree, f: &mut impl FnMut(usize)) {
    match t {
        JoinTree::Leaf(i) => f(*i),
        JoinTree::Join { left, right, .. } => {
            collect_leaves(left, f);
            collect_leaves(right, f);
        }
    }
}

/// `l = r` with one column of each side (of the same type: coercion added
/// no cast): the (left, right) key columns.
fn equi_key(
    e: &Expr,
    left: &BTreeSet<String>,
    right: &BTreeSet<String>,
) -> Option<(Column, Column)> {
    let Expr::BinaryExpr(b) = e else { return None };
    if b.op != Operator::Eq {
        return None;
    }
    let (Expr::Column(a), Expr::Column(c)) = (b.left.as_ref(), b.right.as_ref()) else {
        return None;
    };
    let side = |col: &Column, set: &BTreeSet<String>| {
        col.relation
            .as_ref()
            .is_some_and(|r| set.contains(r.table()))
    };
    if side(a, left) && side(c, right) {
        Some((a.clone(), c.clone()))
    } else if side(a, right) && side(c, left) {
        Some((c.clone(), a.clone()))
    } else {
        None
    }
}

/// The join tree of one FROM item; its tables are appended to `refs`.
fn flatten<'a>(t: &'a ast::TableRef, refs: &mut Vec<&'a ast::TableRef>) -> Result<JoinTree<'a>> {
    let TableRefKind::Join(j) = &t.kind else {
        refs.push(t);
        return Ok(JoinTree::Leaf(refs.len() - 1));
    };
    if let Some(a) = &t.alias {
        return Err(PlanError::not_supported(
            "an alias on a parenthesised join (wrap it in a subquery)",
            a.name.span,
        ));
    }
    let join_type = match j.kind {
        ast::JoinKind::Inner | ast::JoinKind::Cross => JoinType::Inner,
        ast::JoinKind::Left => JoinType::Left,
        ast::JoinKind::Right => JoinType::Right,
        ast::JoinKind::Full => JoinType::Full,
    };
    let on = match &j.constraint {
        ast::JoinConstraint::On(e) => Some(e),
        ast::JoinConstraint::None => None,
        ast::JoinConstraint::Using(cols) => {
            let span = cols.first().map_or(t.span, |c| c.span);
            return Err(PlanError::internal(format!(
                "USING should have been rewritten (at {}..{})",
                span.start, span.end
            )));
        }
    };
    if on.is_none() && join_type != JoinType::Inner {
        return Err(PlanError::user(
            format!("{} needs an ON condition", j.kind.as_str()),
            t.span,
        ));
    }
    let left = flatten(&j.left, refs)?;
    let right = flatten(&j.right, refs)?;
    Ok(JoinTree::Join {
        join_type,
        left: Box::new(left),
        right: Box::new(right),
        on,
    })
}

/// The time attribute an interval join keeps, and how far its output
/// watermark lags: the left input's, when its rows expire a bounded time
/// after it (by their own time attribute). A stored left row can still be
/// emitted until then, and a left join pads one when it expires, so no
/// output row is older than the watermark less that bound (as Flink
/// delays an interval join's watermark).
fn kept_time_attribute(
    left: &Planned,
    left_expiry: Option<Expiry>,
    join_type: JoinType,
) -> (Option<String>, i64) {
    let (Some(time), Some(expiry)) = (&left.time, left_expiry) else {
        return (None, 0);
    };
    let index = left.fields.iter().position(|(_, f)| f.name() == time);
    let kept = matches!(join_type, JoinType::Inner | JoinType::Left);
    if left.proctime || index != Some(expiry.time_column) || !kept {
        return (None, 0);
    }
    (Some(time.clone()), expiry.after_ms.max(0) + 1)
}

/// When each input's rows stop matching, if the condition bounds it:
/// - a **window join**: the keys pair the two inputs' `window_end`s; a
///   window's rows are complete once the watermark reaches its end;
/// - an **interval join**: the residual holds `x <= y + k` (from
///   `BETWEEN`, `>=`, `<=`, `>`, `<`, with interval offsets) where `x` is
///   one input's time attribute and `y` a timestamp column of the other.
///   Rows that arrive later than the watermark have a later time, so the
///   other input's row expires once the watermark reaches its `y + k`:
///   `b.ts BETWEEN a.ts - 10 s AND a.ts` expires a's rows at `ts + 10 s` and
///   b's at `ts`; `b.ts <= a.expires` expires a's rows at `expires` (q4).
fn expiries(
    left: &Planned,
    right: &Planned,
    left_keys: &[usize],
    right_keys: &[usize],
    residual: &[Expr],
) -> (Option<Expiry>, Option<Expiry>) {
    let field = |p: &Planned, name: &Option<String>| {
        name.as_ref()
            .and_then(|n| p.fields.iter().position(|(_, f)| f.name() == n))
    };
    if let (Some(l), Some(r)) = (
        field(left, &left.window_end),
        field(right, &right.window_end),
    ) && left_keys
        .iter()
        .zip(right_keys)
        .any(|(&a, &b)| (a, b) == (l, r))
    {
        let at_end = |time_column| Expiry {
            time_column,
            after_ms: 0,
        };
        return (Some(at_end(l)), Some(at_end(r)));
    }
    // An append-only window aggregate's later rows have a later window_end
    // than the watermark, like an event-time attribute.
    let time = |p: &Planned| field(p, &p.time).or_else(|| field(p, &p.window_end));
    let column = |p: &Planned, i: usize| {
        let (q, f) = &p.fields[i];
        Column::new(Some(q.as_str()), f.name())
    };
    let index = |p: &Planned, c: &Column| {
        p.index_of(c)
            .filter(|&i| matches!(p.fields[i].1.data_type(), DataType::Timestamp(..)))
    };
    let (lt, rt) = (
        time(left).map(|i| column(left, i)),
        time(right).map(|i| column(right, i)),
    );
    let (mut left_expiry, mut right_expiry) = (None, None);
    // `x <= y + k`: when x is one input's time attribute and y a timestamp
    // column of the other, the other's row can only meet rows whose time is
    // at most its y + k: it expires then.
    let mut bound = |x: &Expr, op: Operator, y: &Expr| {
        let (Some((cx, ox)), Some((cy, oy))) = (time_offset(x), time_offset(y)) else {
            return;
        };
        let (x, y, k) = match op {
            Operator::LtEq | Operator::Lt => (cx, cy, oy - ox),
            Operator::GtEq | Operator::Gt => (cy, cx, ox - oy),
            _ => return,
        };
        if rt.as_ref() == Some(&x)
            && let Some(i) = index(left, &y)
        {
            left_expiry.get_or_insert(Expiry {
                time_column: i,
                after_ms: k,
            });
        } else if lt.as_ref() == Some(&x)
            && let Some(i) = index(right, &y)
        {
            right_expiry.get_or_insert(Expiry {
                time_column: i,
                after_ms: k,
            });
        }
    };
    let mut parts: Vec<&Expr> = residual.iter().collect();
    while let Some(e) = parts.pop() {
        match e {
            Expr::Between(b) if !b.negated => {
                bound(&b.expr, Operator::GtEq, &b.low);
                bound(&b.expr, Operator::LtEq, &b.high);
            }
            Expr::BinaryExpr(b) if b.op == Operator::And => parts.extend([&*b.left, &*b.right]),
            Expr::BinaryExpr(b) => bound(&b.left, b.op, &b.right),
            _ => {}
        }
    }
    (left_expiry, right_expiry)
}

/// `column`, `column ± INTERVAL ...` (through casts between timestamp
/// types): the column and the offset in milliseconds.
fn time_offset(e: &Expr) -> Option<(Column, i64)> {
    match e {
        Expr::Column(c) => Some((c.clone(), 0)),
        Expr::Cast(c) if matches!(c.field.data_type(), DataType::Timestamp(..)) => {
            time_offset(&c.expr)
        }
        Expr::BinaryExpr(b) if matches!(b.op, Operator::Plus | Operator::Minus) => {
            let (c, o) = time_offset(&b.left)?;
            let ms = interval_ms(&b.right)?;
            Some((
                c,
                if b.op == Operator::Plus {
                    o + ms
                } else {
                    o - ms
                },
            ))
        }
        _ => None,
    }
}

fn interval_ms(e: &Expr) -> Option<i64> {
    use datafusion::common::ScalarValue;
    match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(v.days as i64 * 86_400_000 + v.milliseconds as i64)
        }
        Expr::Cast(c) => interval_ms(&c.expr),
        _ => None,
    }
}

/// `a JOIN b USING (x, y)` is `a JOIN b ON a.x = b.x AND a.y = b.y` (the
/// tables named by their aliases); the FROM items with every USING so
/// rewritten. Both sides must be tables or subqueries, not joins.
pub(super) fn using_to_on(items: &[ast::TableRef]) -> Result<Vec<ast::TableRef>> {
    items.iter().map(rewrite_using).collect()
}

fn rewrite_using(t: &ast::TableRef) -> Result<ast::TableRef> {
    let TableRefKind::Join(j) = &t.kind else {
        return Ok(t.clone());
    };
    let mut j = j.as_ref().clone();
    j.left = rewrite_using(&j.left)?;
    j.right = rewrite_using(&j.right)?;
    if let ast::JoinConstraint::Using(cols) = &j.constraint {
        let (Some(l), Some(r)) = (qualifier(&j.left), qualifier(&j.right)) else {
            let span = cols.first().map_or(t.span, |c| c.span);
            return Err(PlanError::not_supported(
                "JOIN ... USING with a join on one side (write ON a.col = b.col)",
                span,
            ));
        };
        let column = |q: &ast::Ident, c: &ast::Ident| ast::Expr {
            kind: ast::ExprKind::Identifier(vec![q.clone(), c.clone()]),
            span: c.span,
        };
        let equal = |c: &ast::Ident| ast::Expr {
            kind: ast::ExprKind::Binary {
                op: ast::BinaryOp::Eq,
                left: Box::new(column(&l, c)),
                right: Box::new(column(&r, c)),
            },
            span: c.span,
        };
        let on = cols
            .iter()
            .map(equal)
            .reduce(|a, b| ast::Expr {
                span: a.span.union(b.span),
                kind: ast::ExprKind::Binary {
                    op: ast::BinaryOp::And,
                    left: Box::new(a),
                    right: Box::new(b),
                },
            })
            .ok_or_else(|| PlanError::user("USING needs at least one column", t.span))?;
        j.constraint = ast::JoinConstraint::On(on);
    }
    Ok(ast::TableRef {
        kind: TableRefKind::Join(Box::new(j)),
        ..t.clone()
    })
}

/// The name a FROM item's columns are qualified with, if it is one table.
fn qualifier(t: &ast::TableRef) -> Option<ast::Ident> {
    if let Some(a) = &t.alias {
        return Some(a.name.clone());
    }
    match &t.kind {
        TableRefKind::Named(name) => Some(name.clone()),
        TableRefKind::Window(w) => Some(w.table.clone()),
        TableRefKind::Subquery(_) | TableRefKind::Join(_) => None,
    }
}
