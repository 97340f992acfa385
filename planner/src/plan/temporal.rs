//! Planning event-time temporal joins: `JOIN r FOR SYSTEM_TIME AS OF
//! o.ts ON o.k = r.k`, where `o.ts` is the left input's event-time
//! attribute and `r` a versioned table, a source declared with `PRIMARY
//! KEY (...) NOT ENFORCED` and a WATERMARK (see
//! [`eddy_operators::temporal`]).
//!
//! ```text
//!  left ──── shuffle by keys ──►┐
//!                               ├─ TemporalJoin ─► left columns ++ r's columns
//!  r ─ Watermark ─ shuffle ────►┘
//! ```
//!
//! - The condition must hold an equality between a left column and each
//!   primary-key column of `r`: the keys. Other conditions are the
//!   residual, checked on each row and its version.
//! - The left input must be append-only; its time attribute stays the
//!   output's.

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::Column;
use datafusion::logical_expr::Expr;

use super::QueryPlanner;
use super::join::{Leaf, Planned, and_all, qualified_schema};
use crate::error::{PlanError, Result};
use crate::expr::ScalarExpr;
use crate::graph::{NodeKind, TemporalJoinNode, TemporalSide};
use eddy_operators::lookup::LookupJoinType;

impl QueryPlanner<'_> {
    /// Plans `left JOIN leaf FOR SYSTEM_TIME AS OF <left's event time>`,
    /// with the equalities `keys` (left expression, table column) and the
    /// `residual` conjuncts of its condition.
    pub(super) fn plan_temporal_join(
        &self,
        join_type: LookupJoinType,
        left: Planned,
        leaf: &mut Leaf,
        keys: Vec<(Expr, Column)>,
        mut residual: Vec<Expr>,
    ) -> Result<Planned> {
        let target = leaf
            .lookup
            .take()
            .ok_or_else(|| PlanError::internal("a temporal join without its table"))?;
        let source = &target.source;
        let span = target.as_of.span;
        let name = &source.name;
        if source.primary_key.is_empty() {
            return Err(PlanError::user(
                format!(
                    "FOR SYSTEM_TIME AS OF an event-time attribute joins a versioned table: declare PRIMARY KEY (...) NOT ENFORCED on '{name}'"
                ),
                span,
            ));
        }
        if source.watermark.is_none() {
            return Err(PlanError::user(
                format!(
                    "the versioned table '{name}' needs a WATERMARK: a row waits until no version valid at its time can still arrive"
                ),
                span,
            ));
        }
        if left.changelog {
            return Err(PlanError::not_supported(
                "an updating input to an event-time temporal join",
                span,
            ));
        }
        let right = self.plan_leaf(leaf, Vec::new())?;
        let primary_key: Vec<String> = source
            .primary_key
            .iter()
            .map(|k| {
                leaf.from
                    .columns
                    .iter()
                    .zip(&leaf.fields)
                    .find(|(f, _)| f.name() == k)
                    .map(|(_, renamed)| renamed.clone())
                    .ok_or_else(|| PlanError::internal("a primary key column vanished"))
            })
            .collect::<Result<_>>()?;
        // One key per primary-key column, in its order.
        let mut pairs: Vec<Option<(usize, usize)>> = vec![None; primary_key.len()];
        for (expr, column) in keys {
            let at = primary_key.iter().position(|k| *k == column.name);
            let left_column = match &expr {
                Expr::Column(c) => left.index_of(c),
                _ => None,
            };
            match (at, left_column) {
                (Some(at), Some(l)) if pairs[at].is_none() => {
                    let r = right.index_of(&column).ok_or_else(|| {
                        PlanError::internal("a temporal join key is not a table column")
                    })?;
                    let (lt, rt) = (left.fields[l].1.data_type(), right.fields[r].1.data_type());
                    if lt != rt {
                        return Err(PlanError::not_supported(
                            format!(
                                "a temporal join key of types {lt} and {rt} (CAST one side in a subquery)"
                            ),
                            span,
                        ));
                    }
                    pairs[at] = Some((l, r));
                }
                (Some(_), None) => {
                    return Err(PlanError::not_supported(
                        format!(
                            "a computed key in an event-time temporal join ({expr} = {}; compute it in a subquery)",
                            column.name
                        ),
                        span,
                    ));
                }
                _ => residual.push(expr.eq(Expr::Column(column))),
            }
        }
        let missing: Vec<&str> = source
            .primary_key
            .iter()
            .zip(&pairs)
            .filter(|(_, p)| p.is_none())
            .map(|(k, _)| k.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(PlanError::user(
                format!(
                    "a temporal join needs an equality on every primary-key column of '{name}'; missing: {}",
                    missing.join(", ")
                ),
                span,
            ));
        }
        let time_of = |p: &Planned, what: &str| {
            p.time
                .as_ref()
                .and_then(|t| p.fields.iter().position(|(_, f)| f.name() == t))
                .ok_or_else(|| PlanError::internal(format!("{what} has no time attribute")))
        };
        let (left_keys, right_keys): (Vec<usize>, Vec<usize>) = pairs.into_iter().flatten().unzip();
        let pair_fields: Vec<(String, Field)> =
            left.fields.iter().chain(&right.fields).cloned().collect();
        let residual = and_all(residual)
            .map(|e| ScalarExpr::from_df(&e, &qualified_schema(&pair_fields)?))
            .transpose()?;
        let node = TemporalJoinNode {
            join_type,
            probe: TemporalSide {
                keys: left_keys.clone(),
                time: time_of(&left, "the probe input")?,
            },
            versions: TemporalSide {
                keys: right_keys.clone(),
                time: time_of(&right, "the versioned table")?,
            },
            residual,
        };
        let schema_fields: Vec<Field> = pair_fields.iter().map(|(_, f)| f.clone()).collect();
        let (builder, id) = self.add_two_inputs(
            (left.builder, left.node, left_keys),
            (right.builder, right.node, right_keys),
            NodeKind::TemporalJoin(node),
            Schema::new(schema_fields),
        );
        Ok(Planned {
            builder,
            node: id,
            fields: pair_fields,
            changelog: false,
            time: left.time,
            proctime: false,
            window_end: None,
        })
    }
}
