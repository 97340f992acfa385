//! What Top-N and OVER aggregates plan alike: a projection of the SELECT
//! items plus the columns the operator needs, a shuffle by the partition
//! key, the operator, and the SELECT list read back from its output with the
//! operator's own columns (a rank, aggregates) in their places.

use std::collections::HashSet;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::Expr;
use eddy_parser::ast::{self, Span};

use super::{From, GraphBuilder, OP_COLUMN, QueryPlanner, unique};
use crate::binder::{AggMode, coerce};
use crate::error::{PlanError, Result};
use crate::expr::ScalarExpr;
use crate::graph::{EdgeKind, NodeKind, ProjectNode};

/// The projection before a keyed operator: the SELECT items first, then
/// the keys and arguments they do not hold, then `_op`.
pub(super) struct PreProjection {
    exprs: Vec<Expr>,
    fields: Vec<Field>,
    used: HashSet<String>,
}

impl PreProjection {
    pub fn new(items: &[(Expr, Field, Span)]) -> Self {
        let mut used: HashSet<String> = items.iter().map(|(_, f, _)| f.name().clone()).collect();
        used.insert(OP_COLUMN.to_string());
        Self {
            exprs: items.iter().map(|(e, _, _)| e.clone()).collect(),
            fields: items.iter().map(|(_, f, _)| f.clone()).collect(),
            used,
        }
    }

    /// The column holding `e`, added (named after its column, else
    /// `hidden`) if no item holds it.
    pub fn column_of(&mut self, e: Expr, f: Field, hidden: &str) -> usize {
        if let Some(i) = self.exprs.iter().position(|x| *x == e) {
            return i;
        }
        let name = match &e {
            Expr::Column(c) => c.name.clone(),
            _ => hidden.to_string(),
        };
        self.fields.push(f.with_name(unique(&name, &mut self.used)));
        self.exprs.push(e);
        self.exprs.len() - 1
    }

    /// A name no column has yet (and that none will get).
    pub fn unique(&mut self, name: &str) -> String {
        unique(name, &mut self.used)
    }

    /// Passes an updating input's `_op` on, last; its index.
    pub fn push_op(&mut self, from: &From) -> Result<Option<usize>> {
        if !from.changelog {
            return Ok(None);
        }
        let op = Expr::Column(
            from.scope
                .field_column(OP_COLUMN)
                .ok_or_else(|| PlanError::internal("a changelog without _op"))?,
        );
        self.exprs.push(op);
        self.fields
            .push(Field::new(OP_COLUMN, DataType::Int8, false));
        Ok(Some(self.exprs.len() - 1))
    }

    pub fn schema(&self) -> Schema {
        Schema::new(self.fields.clone())
    }
}

impl QueryPlanner<'_> {
    /// The SELECT items of `q` but those at `skip` (the operator's own),
    /// bound over the FROM clause.
    pub(super) fn items_without(
        &self,
        q: &ast::Select,
        from: &From,
        skip: &[usize],
    ) -> Result<Vec<(Expr, Field, Span)>> {
        let mut rest = q.clone();
        rest.projection = q
            .projection
            .iter()
            .enumerate()
            .filter(|(i, _)| !skip.contains(i))
            .map(|(_, item)| item.clone())
            .collect();
        self.select_items(&rest, &from.scope, AggMode::Forbidden("this query"), &|e| {
            self.window_columns(e, from)
        })
    }

    /// A PARTITION BY or ORDER BY expression bound over the FROM clause: as
    /// written (to recognise time columns), and ready to compute, with its
    /// field.
    pub(super) fn bind_key(
        &self,
        e: &ast::Expr,
        from: &From,
        clause: &'static str,
    ) -> Result<(Expr, Expr, Field)> {
        let raw = self
            .binder
            .bind(e, &from.scope, AggMode::Forbidden(clause))?;
        let (bound, field) = coerce(
            self.window_columns(raw.clone(), from)?,
            &from.scope.schema,
            e.span,
        )?;
        Ok((raw, bound, field))
    }

    /// Adds `pre` (with WHERE) after `input`, then `kind` shuffled by the
    /// `partition` columns (gathered to one subtask without); returns the
    /// id of `kind`'s node.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_keyed(
        &self,
        builder: &mut GraphBuilder,
        input: usize,
        pre: PreProjection,
        filter: Option<(Expr, Field)>,
        from: &From,
        partition: Vec<usize>,
        kind: NodeKind,
        out_schema: Schema,
    ) -> Result<usize> {
        let schema = &from.scope.schema;
        let project = ProjectNode {
            filter: filter
                .map(|(e, _)| ScalarExpr::from_df(&e, schema))
                .transpose()?,
            exprs: pre
                .exprs
                .iter()
                .map(|e| ScalarExpr::from_df(e, schema))
                .collect::<Result<_>>()?,
        };
        let pre_p = builder.parallelism(input);
        let pre_id = builder.add(
            NodeKind::Project(project),
            pre_p,
            pre.schema(),
            Some((input, EdgeKind::Forward)),
        );
        let (p, edge) = self.keyed_edge(pre_p, partition);
        Ok(builder.add(kind, p, out_schema, Some((pre_id, edge))))
    }

    /// The parallelism of a keyed operator and the edge into it from an
    /// input of parallelism `input_p`: a shuffle by `keys`, or without keys
    /// everything to one subtask.
    pub(super) fn keyed_edge(&self, input_p: usize, keys: Vec<usize>) -> (usize, EdgeKind) {
        if !keys.is_empty() {
            return (self.parallelism, EdgeKind::Shuffle { keys });
        }
        let edge = if input_p == 1 {
            EdgeKind::Forward
        } else {
            EdgeKind::Gather
        };
        (1, edge)
    }
}

/// The SELECT list over a keyed node's output: each item by its name, and
/// the node's `own` columns at the places (spans) where the query wrote
/// them.
pub(super) fn select_list(
    items: Vec<(Expr, Field, Span)>,
    own: Vec<(Field, Span)>,
) -> Vec<(Expr, Field, Span)> {
    let mut out: Vec<(Expr, Field, Span)> = items
        .into_iter()
        .map(|(_, f, span)| (Expr::Column(Column::new_unqualified(f.name())), f, span))
        .collect();
    out.extend(
        own.into_iter()
            .map(|(f, span)| (Expr::Column(Column::new_unqualified(f.name())), f, span)),
    );
    // Stable: the columns of one `*` keep their order.
    out.sort_by_key(|(_, _, span)| span.start);
    out
}

/// The name of output column `column` if the SELECT list passes it on
/// unchanged (so it stays a time attribute).
pub(super) fn passed_on(
    items: &[(Expr, Field, Span)],
    out: &DFSchema,
    column: Option<usize>,
) -> Option<String> {
    let name = out.field(column?).name();
    items
        .iter()
        .any(|(_, f, _)| f.name() == name)
        .then(|| name.clone())
}
