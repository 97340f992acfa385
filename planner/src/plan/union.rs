//! `UNION ALL`, `UNION` and `VALUES`.
//!
//! ```text
//!  a UNION ALL b:  plan(a) ─► Project(cast) ─┐
//!                  plan(b) ─► Project(cast) ─┴─► Union
//!  a UNION b:      SELECT DISTINCT * FROM (a UNION ALL b)
//!  VALUES (...):   Source(values: the rows, evaluated when planned)
//! ```
//!
//! A union's columns take the first input's names and the types every
//! input's values fit (DataFusion's union coercion, as Flink widens). Its
//! watermark is the minimum of its inputs' (the task merges them). It keeps
//! a time attribute when every input has one at the same place, so a window
//! can follow it; if any input is updating, so is the union.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatchOptions;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::type_coercion::binary::type_union_resolution;
use eddy_parser::ast::{self, SelectItem, SetExpr, Span, TableRefKind};

use super::{GraphBuilder, OP_COLUMN, QueryPlan, QueryPlanner};
use crate::binder::{AggMode, Scope, coerce};
use crate::error::{PlanError, Result};
use crate::expr::ScalarExpr;
use crate::graph::{EdgeKind, NodeKind, PlanEdge, SourceNode};

/// The `UNION ALL` operands of `e`, left to right (a `UNION` inside is
/// one operand).
fn union_all_operands<'a>(e: &'a SetExpr, out: &mut Vec<&'a SetExpr>) {
    match e {
        SetExpr::Union {
            left,
            right,
            all: true,
        } => {
            union_all_operands(left, out);
            union_all_operands(right, out);
        }
        other => out.push(other),
    }
}

/// The span of a plan's first column, for errors about the whole input.
fn first_span(plan: &QueryPlan, fallback: Span) -> Span {
    plan.items.first().map_or(fallback, |i| i.2)
}

/// The index of output column `name`, if any.
fn position(plan: &QueryPlan, name: Option<&String>) -> Option<usize> {
    let name = name?;
    plan.items.iter().position(|(_, f, _)| f.name() == name)
}

impl QueryPlanner<'_> {
    /// A set operation or `VALUES` of a query body.
    pub(super) fn plan_set_expr(&self, e: &SetExpr, span: Span) -> Result<QueryPlan> {
        match e {
            SetExpr::Select(s) => self.plan_select(s, None),
            SetExpr::Query(q) => self.plan_query(q, None),
            SetExpr::Values(v) => self.plan_values(v),
            SetExpr::Union { all: true, .. } => self.plan_union_all(e, span),
            SetExpr::Union { left, right, .. } => self.plan_union_distinct(left, right, span),
        }
    }

    /// `a UNION ALL b [UNION ALL c ...]`.
    fn plan_union_all(&self, e: &SetExpr, span: Span) -> Result<QueryPlan> {
        let mut operands = Vec::new();
        union_all_operands(e, &mut operands);
        let plans = operands
            .into_iter()
            .map(|o| self.plan_set_expr(o, span))
            .collect::<Result<Vec<_>>>()?;
        let target = union_schema(&plans, span)?;
        let changelog = plans.iter().any(|p| p.changelog);
        let time_at = position(&plans[0], plans[0].time_attribute.as_ref());
        let keeps_time = time_at.is_some()
            && plans.iter().all(|p| {
                position(p, p.time_attribute.as_ref()) == time_at && p.proctime == plans[0].proctime
            });
        let end_at = position(&plans[0], plans[0].window_end.as_ref());
        let keeps_end = end_at.is_some()
            && plans
                .iter()
                .all(|p| position(p, p.window_end.as_ref()) == end_at);
        let proctime = plans[0].proctime;

        let mut builder = GraphBuilder::default();
        let mut inputs = Vec::new();
        for mut plan in plans {
            let mut want = target.clone();
            if changelog && !plan.changelog {
                // An append-only input of an updating union: its rows are
                // inserts.
                let op = Field::new(OP_COLUMN, DataType::Int8, false);
                plan.items.push((
                    Expr::Literal(ScalarValue::Int8(Some(0)), None),
                    op.clone(),
                    Span::default(),
                ));
                let mut fields: Vec<Field> =
                    want.fields().iter().map(|f| f.as_ref().clone()).collect();
                fields.push(op);
                want = Schema::new(fields);
            }
            let (b, id, _) = plan.into_node(Some(("UNION ALL", &want)))?;
            let offset = builder.merge(b);
            inputs.push(id + offset);
        }
        let p = builder.parallelism(inputs[0]);
        let (p, edge) = if inputs.iter().all(|&i| builder.parallelism(i) == p) {
            (p, EdgeKind::Forward)
        } else {
            (1, EdgeKind::Gather)
        };
        let mut fields: Vec<Field> = target.fields().iter().map(|f| f.as_ref().clone()).collect();
        if changelog {
            fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        }
        let schema = Schema::new(fields);
        let union = builder.add(NodeKind::Union, p, schema.clone(), None);
        for (input, &from) in inputs.iter().enumerate() {
            let kind = if builder.parallelism(from) == 1 && p == 1 {
                EdgeKind::Forward
            } else {
                edge.clone()
            };
            builder.graph.edges.push(PlanEdge {
                from,
                to: union,
                kind,
                port: 0,
                input,
            });
        }
        let items = target
            .fields()
            .iter()
            .map(|f| {
                let column = Expr::Column(Column::new_unqualified(f.name()));
                (column, f.as_ref().clone(), span)
            })
            .collect();
        let name = |at: Option<usize>| at.map(|i| target.field(i).name().clone());
        Ok(QueryPlan {
            builder,
            input: union,
            input_schema: DFSchema::try_from(schema)?,
            filter: None,
            items,
            changelog,
            time_attribute: if keeps_time { name(time_at) } else { None },
            proctime: keeps_time && proctime,
            window_end: if keeps_end { name(end_at) } else { None },
        })
    }

    /// `a UNION b`: `SELECT DISTINCT * FROM (a UNION ALL b)`, an updating
    /// distinct (as Flink plans it).
    fn plan_union_distinct(
        &self,
        left: &SetExpr,
        right: &SetExpr,
        span: Span,
    ) -> Result<QueryPlan> {
        let all = ast::Query {
            with: Vec::new(),
            body: SetExpr::Union {
                left: Box::new(left.clone()),
                right: Box::new(right.clone()),
                all: true,
            },
            order_by: Vec::new(),
            limit: None,
            span,
        };
        let names: Vec<String> = self
            .plan_query(&all, None)?
            .output_fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let ident = |value: &str| ast::Ident {
            value: value.to_string(),
            quoted: true,
            span,
        };
        let projection = names
            .iter()
            .map(|n| SelectItem::Expr {
                expr: ast::Expr {
                    kind: ast::ExprKind::Identifier(vec![ident(n)]),
                    span,
                },
                alias: None,
            })
            .collect();
        let from = ast::TableRef {
            kind: TableRefKind::Subquery(Box::new(all)),
            alias: Some(ast::TableAlias {
                name: ident("union"),
                columns: Vec::new(),
            }),
            for_system_time: None,
            span,
        };
        let select = ast::Select {
            distinct: true,
            projection,
            from: vec![from],
            selection: None,
            group_by: Vec::new(),
            having: None,
            span,
        };
        self.plan_select(&select, None)
    }

    /// `VALUES (...), (...)`: the rows, evaluated now, read by a `values`
    /// source. Columns are named `EXPR$0`, `EXPR$1`... as in Flink.
    fn plan_values(&self, v: &ast::Values) -> Result<QueryPlan> {
        let width = v.rows.first().map_or(0, Vec::len);
        let scope = Scope {
            tables: Vec::new(),
            schema: Arc::new(DFSchema::empty()),
        };
        let empty = Arc::new(Schema::empty());
        let one_row = RecordBatch::try_new_with_options(
            empty.clone(),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )
        .map_err(arrow_error)?;
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::new(); width];
        for row in &v.rows {
            if row.len() != width {
                let span = row.first().map_or(v.span, |e| e.span);
                return Err(PlanError::user(
                    format!("this row has {} values; the first has {width}", row.len()),
                    span,
                ));
            }
            for (e, column) in row.iter().zip(&mut columns) {
                let bound = self.binder.bind(e, &scope, AggMode::Forbidden("VALUES"))?;
                let (bound, _) = coerce(bound, &scope.schema, e.span)?;
                let physical = ScalarExpr::from_df(&bound, &scope.schema)?
                    .to_physical(&empty, self.functions())
                    .map_err(|err| err.at(e.span))?;
                let value = physical
                    .evaluate(&one_row)
                    .and_then(|c| c.into_array(1))
                    .and_then(|a| ScalarValue::try_from_array(&a, 0))
                    .map_err(|err| PlanError::from(err).at(e.span))?;
                column.push(value);
            }
        }
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for (i, values) in columns.into_iter().enumerate() {
            let types: Vec<DataType> = values.iter().map(ScalarValue::data_type).collect();
            let ty = type_union_resolution(&types).ok_or_else(|| {
                PlanError::user(
                    format!("the values of column {} have no common type", i + 1),
                    v.span,
                )
            })?;
            let values = values
                .into_iter()
                .map(|s| s.cast_to(&ty))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            arrays.push(ScalarValue::iter_to_array(values)?);
            fields.push(Field::new(format!("EXPR${i}"), ty, true));
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(arrow_error)?;
        let rows = eddy_connectors::values::encode_rows(&batch)
            .map_err(|e| PlanError::user(e.to_string(), v.span))?;
        let options = [
            (eddy_connectors::registry::CONNECTOR, "values"),
            (eddy_connectors::values::ROWS, rows.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let node = SourceNode {
            name: "values".into(),
            options,
            event_time: None,
            primary_key: Vec::new(),
            read: None,
            bounds: Vec::new(),
        };
        let mut builder = GraphBuilder::default();
        let id = builder.add(NodeKind::Source(node), 1, schema.as_ref().clone(), None);
        let items = schema
            .fields()
            .iter()
            .map(|f| {
                let column = Expr::Column(Column::new_unqualified(f.name()));
                (column, f.as_ref().clone(), v.span)
            })
            .collect();
        Ok(QueryPlan {
            builder,
            input: id,
            input_schema: DFSchema::try_from(schema.as_ref().clone())?,
            filter: None,
            items,
            changelog: false,
            time_attribute: None,
            proctime: false,
            window_end: None,
        })
    }
}

fn arrow_error(e: datafusion::arrow::error::ArrowError) -> PlanError {
    PlanError::internal(e.to_string())
}

/// The union's columns: the first input's names, and for each column the
/// type all inputs' values fit.
fn union_schema(plans: &[QueryPlan], span: Span) -> Result<Schema> {
    let width = plans[0].items.len();
    if let Some(p) = plans.iter().find(|p| p.items.len() != width) {
        return Err(PlanError::user(
            format!(
                "each input of UNION ALL must have the same number of columns: the first has {width}, this one {}",
                p.items.len()
            ),
            first_span(p, span),
        ));
    }
    let mut fields = Vec::new();
    for i in 0..width {
        let types: Vec<DataType> = plans
            .iter()
            .map(|p| p.items[i].1.data_type().clone())
            .collect();
        let ty = type_union_resolution(&types).ok_or_else(|| {
            let list: Vec<String> = types.iter().map(ToString::to_string).collect();
            PlanError::user(
                format!(
                    "column {} of UNION ALL has types that do not combine: {}",
                    i + 1,
                    list.join(", ")
                ),
                plans[1].items[i].2,
            )
        })?;
        fields.push(Field::new(plans[0].items[i].1.name(), ty, true));
    }
    Ok(Schema::new(fields))
}
