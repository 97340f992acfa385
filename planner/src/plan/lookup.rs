//! Planning lookup joins: `JOIN t FOR SYSTEM_TIME AS OF s.proc_time ON ...`,
//! Flink's processing-time temporal join, against a table a file holds.
//!
//! ```text
//!  left ─► LookupJoin(t's source, keys, residual) ─► left columns ++ t's columns
//! ```
//!
//! The table is not a stream in the graph: the join reads it whole when it
//! starts, and again when its file changes. Each left row is joined with
//! the rows the table holds when the row is processed, so the output is
//! append-only for an append-only left input.
//!
//! - `AS OF` must name the left input's processing-time attribute (a
//!   column holding `PROCTIME()`).
//! - Keys: `expr = t.col`, with `expr` over the left input only (q13's
//!   `MOD(B.auction, 10000) = S.key`). At least one is needed.
//! - Other conditions are the residual, evaluated on each pair; for a LEFT
//!   join, a row whose pairs all fail it is padded.

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, Operator};
use eddy_parser::ast::{self, TableRefKind};
use std::collections::BTreeSet;

use super::join::{Conjunct, JoinTree, Leaf, Planned, and_all, leaf_tables, qualified_schema};
use super::{From, GraphBuilder, OP_COLUMN, QueryPlanner};
use crate::binder::{AggMode, Scope};
use crate::catalog::SourceDef;
use crate::error::{PlanError, Result};
use crate::expr::ScalarExpr;
use crate::graph::{EdgeKind, JoinType, LookupJoinNode, NodeKind, SourceNode};
use eddy_operators::lookup::LookupJoinType;

/// A table read `FOR SYSTEM_TIME AS OF`, waiting for its join.
pub(crate) struct LookupTarget {
    pub(super) source: SourceDef,
    pub(super) as_of: ast::Expr,
}

impl QueryPlanner<'_> {
    /// Resolves a FROM item read `FOR SYSTEM_TIME AS OF`: a source table,
    /// whose columns join the scope, and its read as a stream (which only
    /// an event-time temporal join puts in the graph).
    pub(super) fn lookup_target(
        &self,
        t: &ast::TableRef,
        as_of: &ast::Expr,
    ) -> Result<(From, GraphBuilder, usize, LookupTarget)> {
        let TableRefKind::Named(name) = &t.kind else {
            return Err(PlanError::not_supported(
                "FOR SYSTEM_TIME AS OF a subquery or window (name a table)",
                t.span,
            ));
        };
        let source = self
            .catalog
            .source(&name.value)
            .filter(|_| !self.ctes.iter().any(|(n, _, _)| *n == name.value))
            .cloned();
        let plain = ast::TableRef {
            for_system_time: None,
            ..t.clone()
        };
        let (from, builder, node) = self.resolve_table(&plain, None)?;
        let Some(source) = source else {
            return Err(PlanError::not_supported(
                "FOR SYSTEM_TIME AS OF a WITH query (name a source table)",
                name.span,
            ));
        };
        Ok((
            from,
            builder,
            node,
            LookupTarget {
                source,
                as_of: as_of.clone(),
            },
        ))
    }

    /// Plans `left JOIN t FOR SYSTEM_TIME AS OF ... ON on`, `t` being
    /// `leaves[table]` (see the module docs).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan_lookup_join(
        &self,
        join_type: JoinType,
        left: &JoinTree,
        table: usize,
        on: Option<&ast::Expr>,
        pushed: Vec<Conjunct>,
        leaves: &mut [Leaf],
        scope: &Scope,
    ) -> Result<Planned> {
        let qualifier = leaves[table].from.scope.qualifier().to_string();
        let Some(target) = leaves[table].lookup.as_ref() else {
            return Err(PlanError::internal("a lookup join without its table"));
        };
        let as_of_span = target.as_of.span;
        let join_type = match join_type {
            JoinType::Inner => LookupJoinType::Inner,
            JoinType::Left => LookupJoinType::Left,
            other => {
                return Err(PlanError::not_supported(
                    format!(
                        "{} JOIN with a FOR SYSTEM_TIME AS OF table (use INNER or LEFT)",
                        other.as_sql()
                    ),
                    as_of_span,
                ));
            }
        };
        let left_tables = leaf_tables(left, leaves);
        let mut conjuncts = pushed;
        conjuncts
            .extend(self.on_conjuncts(on, scope, &|t| left_tables.contains(t) || t == qualifier)?);
        let push_left = join_type == LookupJoinType::Inner && left.accepts_filters();
        let (mut to_left, mut keys, mut residual) = (Vec::new(), Vec::new(), Vec::new());
        for c in conjuncts {
            let on_left = !c.tables.is_empty() && c.tables.is_subset(&left_tables);
            if on_left && push_left {
                to_left.push(c);
            } else if let Some(pair) = lookup_key(&c.expr, &left_tables, &qualifier) {
                keys.push(pair);
            } else {
                residual.push(c.expr);
            }
        }
        let left = self.plan_tree(left, to_left, leaves, scope)?;
        let Some(target) = leaves[table].lookup.as_ref() else {
            return Err(PlanError::internal("a lookup join without its table"));
        };
        if self.as_of_event_time(&target.as_of, &left, scope)? {
            return self.plan_temporal_join(join_type, left, &mut leaves[table], keys, residual);
        }
        let leaf = &leaves[table];
        let Some(target) = leaf.lookup.as_ref() else {
            return Err(PlanError::internal("a lookup join without its table"));
        };
        if target.source.provider.lookup_table().is_none() {
            return Err(PlanError::not_supported(
                format!(
                    "FOR SYSTEM_TIME AS OF a '{}' table (a lookup join reads a bounded table whole, such as files)",
                    target.source.connector
                ),
                as_of_span,
            ));
        }
        if keys.is_empty() {
            return Err(PlanError::user(
                format!(
                    "a join with a FOR SYSTEM_TIME AS OF table needs an equality between the other input and a column of '{qualifier}' (e.g. ON s.k = {qualifier}.k)"
                ),
                on.map_or(as_of_span, |o| o.span),
            ));
        }
        let left_schema = qualified_schema(&left.fields)?;
        let table_fields: Vec<(String, Field)> = leaf
            .from
            .columns
            .iter()
            .zip(&leaf.fields)
            .map(|(f, name)| {
                let field = f.clone().with_name(name).with_nullable(true);
                (qualifier.clone(), field)
            })
            .collect();
        let mut probe_keys = Vec::new();
        let mut table_keys = Vec::new();
        for (expr, column) in keys {
            probe_keys.push(ScalarExpr::from_df(&expr, &left_schema)?);
            let index = table_fields
                .iter()
                .position(|(_, f)| *f.name() == column.name)
                .ok_or_else(|| PlanError::internal("a lookup key is not a table column"))?;
            table_keys.push(index);
        }
        let pair_fields: Vec<(String, Field)> =
            left.fields.iter().chain(&table_fields).cloned().collect();
        let residual = and_all(residual)
            .map(|e| ScalarExpr::from_df(&e, &qualified_schema(&pair_fields)?))
            .transpose()?;
        let source = &target.source;
        let node = LookupJoinNode {
            join_type,
            table: SourceNode {
                name: source.name.clone(),
                options: source.options.clone(),
                event_time: None,
                primary_key: Vec::new(),
                read: None,
                bounds: Vec::new(),
            },
            table_schema: source.schema.as_ref().clone(),
            probe_keys,
            table_keys,
            residual,
            op_column: left.changelog.then_some(left.fields.len()),
        };
        let mut schema_fields: Vec<Field> = pair_fields.iter().map(|(_, f)| f.clone()).collect();
        if left.changelog {
            schema_fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        }
        let mut builder = left.builder;
        let p = builder.parallelism(left.node);
        let id = builder.add(
            NodeKind::LookupJoin(node),
            p,
            Schema::new(schema_fields),
            Some((left.node, EdgeKind::Forward)),
        );
        Ok(Planned {
            builder,
            node: id,
            fields: pair_fields,
            changelog: left.changelog,
            time: None,
            proctime: false,
            window_end: None,
        })
    }

    /// `AS OF` must be the left input's processing-time attribute (a
    /// lookup join: false) or its event-time attribute (a temporal join:
    /// true).
    fn as_of_event_time(&self, as_of: &ast::Expr, left: &Planned, scope: &Scope) -> Result<bool> {
        let bound = self
            .binder
            .bind(as_of, scope, AggMode::Forbidden("FOR SYSTEM_TIME AS OF"))?;
        let is_time = match &bound {
            Expr::Column(c) => left
                .index_of(c)
                .is_some_and(|i| left.time.as_deref() == Some(left.fields[i].1.name().as_str())),
            _ => false,
        };
        if is_time {
            return Ok(!left.proctime);
        }
        Err(PlanError::user(
            "FOR SYSTEM_TIME AS OF needs a time attribute of the other input: its event-time attribute (a temporal join against a versioned table) or a PROCTIME() column (a lookup join: select PROCTIME() AS p_time in it, and write AS OF p_time)",
            as_of.span,
        ))
    }
}

/// `expr = t.col` (either way round) with `expr` over the left tables only:
/// the key (left expression, table column).
fn lookup_key(e: &Expr, left: &BTreeSet<String>, table: &str) -> Option<(Expr, Column)> {
    let Expr::BinaryExpr(b) = e else { return None };
    if b.op != Operator::Eq {
        return None;
    }
    let is_table_column = |x: &Expr| match x {
        Expr::Column(c) if c.relation.as_ref().is_some_and(|r| r.table() == table) => {
            Some(c.clone())
        }
        _ => None,
    };
    let reads_left = |x: &Expr| {
        let tables = super::join::tables_of(x);
        !tables.is_empty() && tables.is_subset(left)
    };
    if let (Some(c), true) = (is_table_column(&b.right), reads_left(&b.left)) {
        return Some((b.left.as_ref().clone(), c));
    }
    if let (Some(c), true) = (is_table_column(&b.left), reads_left(&b.right)) {
        return Some((b.right.as_ref().clone(), c));
    }
    None
}
