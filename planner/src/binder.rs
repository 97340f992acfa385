//! The binder: AST expressions to DataFusion logical expressions, resolving
//! names against a scope and functions against the registry. Errors carry
//! the span of the offending token and suggest near names.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, TimeUnit};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Column, DFSchema, DFSchemaRef, ScalarValue};
use datafusion::logical_expr::expr::{AggregateFunction, Case, Cast, Like, ScalarFunction};
use datafusion::logical_expr::{AggregateUDF, BinaryExpr, Expr, ExprSchemable, Operator};
use datafusion::optimizer::analyzer::type_coercion::TypeCoercionRewriter;
use eddy_parser::ast::{self, BinaryOp, DataTypeKind, ExprKind, Literal, Span, UnaryOp};

use crate::error::{PlanError, Result, did_you_mean, suggestions};
use crate::functions::Functions;

/// The names visible to an expression: one table (possibly a window TVF),
/// or the tables of a join.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub tables: Vec<ScopeTable>,
    /// Every column, qualified by its table's qualifier and named by its
    /// field name.
    pub schema: DFSchemaRef,
}

/// One table of a scope.
#[derive(Debug, Clone)]
pub(crate) struct ScopeTable {
    /// The name columns may be qualified with (alias, or the table name).
    pub qualifier: String,
    pub table: String,
    /// Each column as `(name in SQL, field name in the schema)`: the two
    /// differ where the tables of a join share a column name.
    pub columns: Vec<(String, String)>,
}

impl Scope {
    /// The scope of one table, whose fields are its columns.
    pub fn single(qualifier: &str, table: &str, schema: DFSchemaRef) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.name().clone()))
            .collect();
        Self {
            tables: vec![ScopeTable {
                qualifier: qualifier.to_string(),
                table: table.to_string(),
                columns,
            }],
            schema,
        }
    }

    /// The qualifier of the (first) table.
    pub fn qualifier(&self) -> &str {
        self.tables.first().map_or("", |t| t.qualifier.as_str())
    }

    /// The table a qualifier (alias or table name) names.
    pub fn table(&self, name: &str) -> Option<&ScopeTable> {
        self.tables
            .iter()
            .find(|t| t.qualifier == name)
            .or_else(|| self.tables.iter().find(|t| t.table == name))
    }

    /// The column of the schema's field named `name`, qualified.
    pub fn field_column(&self, name: &str) -> Option<Column> {
        self.schema
            .iter()
            .find(|(_, f)| f.name() == name)
            .map(|(q, f)| Column::new(q.cloned(), f.name()))
    }
}

/// How aggregate calls are treated while binding.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AggMode<'a> {
    /// Not allowed here; the string names the clause for the message.
    Forbidden(&'static str),
    /// Replaced by a column of the aggregate's output.
    Output(&'a [BoundAggregate]),
}

/// An aggregate call found in SELECT or HAVING.
#[derive(Debug, Clone)]
pub(crate) struct BoundAggregate {
    pub udaf: Arc<AggregateUDF>,
    /// Arguments bound over the input scope (not yet coerced).
    pub args: Vec<Expr>,
    pub distinct: bool,
    /// `FILTER (WHERE ...)`, bound over the input scope, and its span.
    pub filter: Option<(Expr, Span)>,
    pub output_name: String,
}

impl BoundAggregate {
    /// The same computation (written twice, it is computed once).
    pub fn same_call(&self, other: &BoundAggregate) -> bool {
        self.udaf.name() == other.udaf.name()
            && self.args == other.args
            && self.distinct == other.distinct
            && self.filter.as_ref().map(|f| &f.0) == other.filter.as_ref().map(|f| &f.0)
    }
}

pub(crate) struct Binder<'a> {
    pub functions: &'a Functions,
    pub sql: &'a str,
}

pub(crate) fn sql_type(t: &ast::DataType) -> DataType {
    match &t.kind {
        DataTypeKind::Boolean => DataType::Boolean,
        DataTypeKind::TinyInt => DataType::Int8,
        DataTypeKind::SmallInt => DataType::Int16,
        DataTypeKind::Int => DataType::Int32,
        DataTypeKind::BigInt => DataType::Int64,
        DataTypeKind::Float => DataType::Float32,
        DataTypeKind::Double => DataType::Float64,
        DataTypeKind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
        DataTypeKind::Varchar => DataType::Utf8,
        DataTypeKind::Bytes => DataType::Binary,
        DataTypeKind::Date => DataType::Date32,
        DataTypeKind::Timestamp { precision } => {
            let unit = match precision.unwrap_or(6) {
                0..=3 => TimeUnit::Millisecond,
                4..=6 => TimeUnit::Microsecond,
                _ => TimeUnit::Nanosecond,
            };
            DataType::Timestamp(unit, None)
        }
        DataTypeKind::Row(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| Field::new(&f.name.value, sql_type(&f.data_type), true))
                .collect(),
        ),
        DataTypeKind::Array(t) => DataType::new_list(sql_type(t), true),
        DataTypeKind::Map(k, v) => DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(
                    vec![
                        Field::new("key", sql_type(k), false),
                        Field::new("value", sql_type(v), true),
                    ]
                    .into(),
                ),
                false,
            )),
            false,
        ),
    }
}

/// The length of an interval literal in milliseconds.
pub(crate) fn interval_millis(e: &ast::Expr) -> Result<i64> {
    let ExprKind::Literal(Literal::Interval { value, unit }) = &e.kind else {
        return Err(PlanError::user(
            "expected an interval literal such as INTERVAL '10' SECOND",
            e.span,
        ));
    };
    let (number, unit) = match unit {
        Some(u) => (value.trim(), *u),
        None => {
            let mut parts = value.split_whitespace();
            let n = parts.next().unwrap_or("");
            let u = parts.next().and_then(ast::IntervalUnit::parse);
            match u {
                Some(u) => (n, u),
                None => {
                    return Err(PlanError::user(
                        format!("cannot read interval '{value}'"),
                        e.span,
                    ));
                }
            }
        }
    };
    let n: f64 = number.parse().map_err(|_| {
        PlanError::user(format!("interval value '{number}' is not a number"), e.span)
    })?;
    Ok((n * unit.millis() as f64).round() as i64)
}

pub(crate) fn interval_literal(millis: i64) -> Expr {
    let v = IntervalMonthDayNano::new(0, 0, millis * 1_000_000);
    Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), None)
}

impl Binder<'_> {
    fn text(&self, span: Span) -> &str {
        self.sql.get(span.start..span.end).unwrap_or("?")
    }

    pub fn is_aggregate_call(&self, e: &ast::Expr) -> bool {
        matches!(&e.kind, ExprKind::Function(f)
            if f.over.is_none()
                && self.functions.aggregate(&f.name.value).is_some()
                && self.functions.scalar(&f.name.value).is_none())
    }

    /// Calls `f` on every aggregate call in `e` (not descending into them).
    pub fn visit_aggregates<'e>(&self, e: &'e ast::Expr, f: &mut impl FnMut(&'e ast::Expr)) {
        if self.is_aggregate_call(e) {
            f(e);
            return;
        }
        for child in e.children() {
            self.visit_aggregates(child, f);
        }
    }

    /// Binds an aggregate call's function and arguments.
    pub fn bind_aggregate(&self, e: &ast::Expr, scope: &Scope) -> Result<BoundAggregate> {
        let ExprKind::Function(ast::Function {
            name,
            args,
            star,
            distinct,
            filter,
            ..
        }) = &e.kind
        else {
            return Err(PlanError::internal("not an aggregate call"));
        };
        let udaf = self
            .functions
            .aggregate(&name.value)
            .ok_or_else(|| PlanError::internal(format!("aggregate {} vanished", name.value)))?;
        let args = if *star {
            if udaf.name() != "count" {
                return Err(PlanError::user(
                    format!(
                        "{}(*) is not valid; only COUNT(*) is",
                        name.value.to_uppercase()
                    ),
                    e.span,
                ));
            }
            vec![Expr::Literal(ScalarValue::Int64(Some(1)), None)]
        } else {
            let mut bound: Vec<Expr> = args
                .iter()
                .map(|a| self.bind(a, scope, AggMode::Forbidden("aggregate arguments")))
                .collect::<Result<_>>()?;
            // Flink's LISTAGG(x) separates with a comma.
            if name.value == "listagg" && bound.len() == 1 {
                bound.push(Expr::Literal(ScalarValue::Utf8(Some(",".into())), None));
            }
            bound
        };
        let filter = match filter {
            Some(f) => Some((
                self.bind(f, scope, AggMode::Forbidden("FILTER (WHERE ...)"))?,
                f.span,
            )),
            None => None,
        };
        Ok(BoundAggregate {
            udaf,
            args,
            distinct: *distinct,
            filter,
            output_name: self.text(e.span).to_string(),
        })
    }

    /// Binds `e` over `scope` (not yet type-coerced).
    pub fn bind(&self, e: &ast::Expr, scope: &Scope, aggs: AggMode<'_>) -> Result<Expr> {
        let bind = |x: &ast::Expr| self.bind(x, scope, aggs);
        let boxed = |x: &ast::Expr| bind(x).map(Box::new);
        Ok(match &e.kind {
            ExprKind::Identifier(parts) => self.identifier(parts, scope, e.span)?,
            ExprKind::Literal(lit) => self.literal(lit, e)?,
            ExprKind::Nested(inner) => bind(inner)?,
            ExprKind::Binary { op, left, right } => {
                binary(bind(left)?, binary_op(*op), bind(right)?)
            }
            ExprKind::Unary { op, expr } => match op {
                UnaryOp::Not => Expr::Not(boxed(expr)?),
                UnaryOp::Minus => Expr::Negative(boxed(expr)?),
                UnaryOp::Plus => bind(expr)?,
            },
            ExprKind::IsNull {
                expr,
                negated: false,
            } => Expr::IsNull(boxed(expr)?),
            ExprKind::IsNull {
                expr,
                negated: true,
            } => Expr::IsNotNull(boxed(expr)?),
            ExprKind::Case {
                operand,
                branches,
                else_result,
            } => Expr::Case(Case::new(
                operand.as_deref().map(boxed).transpose()?,
                branches
                    .iter()
                    .map(|(w, t)| Ok((boxed(w)?, boxed(t)?)))
                    .collect::<Result<_>>()?,
                else_result.as_deref().map(boxed).transpose()?,
            )),
            ExprKind::Cast {
                expr, data_type, ..
            } => Expr::Cast(Cast::new(boxed(expr)?, sql_type(data_type))),
            ExprKind::IsBool {
                expr,
                value,
                negated,
            } => {
                let inner = boxed(expr)?;
                match (value, negated) {
                    (true, false) => Expr::IsTrue(inner),
                    (true, true) => Expr::IsNotTrue(inner),
                    (false, false) => Expr::IsFalse(inner),
                    (false, true) => Expr::IsNotFalse(inner),
                }
            }
            ExprKind::InList {
                expr,
                list,
                negated,
            } => {
                let x = bind(expr)?;
                let list = list.iter().map(bind).collect::<Result<Vec<_>>>()?;
                let any = in_list(x, list)
                    .ok_or_else(|| PlanError::user("IN needs at least one value", e.span))?;
                negate_if(*negated, any)
            }
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let x = bind(expr)?;
                let ge = binary(x.clone(), Operator::GtEq, bind(low)?);
                let le = binary(x, Operator::LtEq, bind(high)?);
                negate_if(*negated, binary(ge, Operator::And, le))
            }
            ExprKind::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => Expr::Like(Like::new(
                *negated,
                boxed(expr)?,
                boxed(pattern)?,
                None,
                *case_insensitive,
            )),
            ExprKind::Extract { field, expr } => self.date_part(&field.value, bind(expr)?)?,
            ExprKind::Function(f) => self.bind_function(e, f, scope, aggs)?,
        })
    }

    /// `date_part(part, x)`, DataFusion's function for EXTRACT and Flink's
    /// YEAR(...), DAYOFMONTH(...) and the like.
    fn date_part(&self, part: &str, x: Expr) -> Result<Expr> {
        let udf = self
            .functions
            .scalar("date_part")
            .ok_or_else(|| PlanError::internal("date_part is missing"))?;
        let part = Expr::Literal(ScalarValue::Utf8(Some(part.to_string())), None);
        Ok(Expr::ScalarFunction(ScalarFunction::new_udf(
            udf,
            vec![part, x],
        )))
    }

    /// A function call: an aggregate (by `aggs`), one of Flink's spelled
    /// differently in DataFusion, or a scalar function.
    fn bind_function(
        &self,
        e: &ast::Expr,
        f: &ast::Function,
        scope: &Scope,
        aggs: AggMode<'_>,
    ) -> Result<Expr> {
        let bind = |x: &ast::Expr| self.bind(x, scope, aggs);
        let name = &f.name;
        if let Some(w) = &f.over {
            let span = w.partition_by.first().map_or(e.span, |p| p.span);
            return Err(PlanError::not_supported(
                format!("{}(...) OVER (...) windows", name.value.to_uppercase()),
                span.union(e.span),
            ));
        }
        if let Some(filter) = f.filter.as_ref().filter(|_| !self.is_aggregate_call(e)) {
            return Err(PlanError::user(
                "FILTER (WHERE ...) is only valid on aggregate functions",
                filter.span,
            ));
        }
        legacy_window_function(name)?;
        if let Some(flink) = self.flink_function(name, &f.args, &bind)? {
            return Ok(flink);
        }
        if self.is_aggregate_call(e) {
            return self.aggregate_output(e, scope, aggs);
        }
        let Some(udf) = self.functions.scalar(&name.value) else {
            if crate::functions::flink::NOT_SUPPORTED.contains(&name.value.as_str()) {
                return Err(PlanError {
                    kind: crate::error::PlanErrorKind::NotSupported,
                    message: format!(
                        "function '{}' is not supported yet",
                        name.value.to_uppercase()
                    ),
                    span: Some(name.span),
                });
            }
            let hint = did_you_mean(&suggestions(&name.value, self.functions.names()));
            return Err(PlanError::user(
                format!("unknown function '{}'{hint}", name.value),
                name.span,
            ));
        };
        if f.star || f.distinct {
            let what = if f.star { "*" } else { "DISTINCT" };
            return Err(PlanError::user(
                format!("{what} is only valid in aggregate functions"),
                e.span,
            ));
        }
        let bound = f.args.iter().map(bind).collect::<Result<Vec<_>>>()?;
        check_constant_pattern(&name.value, &f.args, &bound)?;
        Ok(Expr::ScalarFunction(ScalarFunction::new_udf(udf, bound)))
    }

    /// Flink's functions that DataFusion spells differently, if `name` is
    /// one: `MOD(a, b)`, `YEAR(ts)` ... `SECOND(ts)`, `DAYOFMONTH`,
    /// `DAYOFYEAR`, `DAYOFWEEK` (counted from 1, Sunday, as in Flink).
    fn flink_function(
        &self,
        name: &ast::Ident,
        args: &[ast::Expr],
        bind: &dyn Fn(&ast::Expr) -> Result<Expr>,
    ) -> Result<Option<Expr>> {
        Ok(Some(match (name.value.as_str(), args) {
            ("mod", [a, b]) => binary(bind(a)?, Operator::Modulo, bind(b)?),
            ("year" | "quarter" | "month" | "week" | "day" | "hour" | "minute" | "second", [a]) => {
                self.date_part(&name.value, bind(a)?)?
            }
            ("dayofmonth", [a]) => self.date_part("day", bind(a)?)?,
            ("dayofyear", [a]) => self.date_part("doy", bind(a)?)?,
            ("dayofweek", [a]) => binary(
                self.date_part("dow", bind(a)?)?,
                Operator::Plus,
                Expr::Literal(ScalarValue::Int32(Some(1)), None),
            ),
            // `ROW(a, b)`: a record with Flink's field names.
            ("row", args) if !args.is_empty() => {
                let udf = self
                    .functions
                    .scalar("named_struct")
                    .ok_or_else(|| PlanError::internal("named_struct is missing"))?;
                let mut fields = Vec::new();
                for (i, a) in args.iter().enumerate() {
                    fields.push(Expr::Literal(
                        ScalarValue::Utf8(Some(format!("EXPR${i}"))),
                        None,
                    ));
                    fields.push(bind(a)?);
                }
                Expr::ScalarFunction(ScalarFunction::new_udf(udf, fields))
            }
            // Flink's time conversions, with its default pattern
            // `yyyy-MM-dd HH:mm:ss` and Java patterns given as literals.
            ("to_timestamp", [s]) => self.call("to_timestamp_millis", vec![bind(s)?])?,
            ("to_timestamp", [s, f]) => {
                let f = java_pattern_literal(f)?;
                self.call("to_timestamp_millis", vec![bind(s)?, f])?
            }
            // Epoch seconds (precision 0) or milliseconds (3, the
            // default) as a timestamp, read as UTC like every Eddy
            // TIMESTAMP_LTZ.
            ("to_timestamp_ltz", [n, rest @ ..]) if rest.len() <= 1 => {
                let seconds = match rest.first() {
                    None => false,
                    Some(p) => match &p.kind {
                        ExprKind::Literal(Literal::Number(v)) if v == "3" => false,
                        ExprKind::Literal(Literal::Number(v)) if v == "0" => true,
                        _ => {
                            return Err(PlanError::user(
                                "TO_TIMESTAMP_LTZ's precision is 0 (epoch seconds) or 3 (epoch milliseconds)",
                                p.span,
                            ));
                        }
                    },
                };
                let mut millis = bind(n)?;
                if seconds {
                    millis = Expr::BinaryExpr(BinaryExpr::new(
                        Box::new(millis),
                        Operator::Multiply,
                        Box::new(Expr::Literal(ScalarValue::Int64(Some(1000)), None)),
                    ));
                }
                self.call("to_timestamp_millis", vec![millis])?
            }
            ("unix_timestamp", []) => {
                let now = self.call("now", vec![])?;
                self.call("to_unixtime", vec![now])?
            }
            ("unix_timestamp", [s]) => self.call(
                "to_unixtime",
                vec![bind(s)?, string_literal("%Y-%m-%d %H:%M:%S")],
            )?,
            ("unix_timestamp", [s, f]) => {
                let f = java_pattern_literal(f)?;
                self.call("to_unixtime", vec![bind(s)?, f])?
            }
            ("from_unixtime", [n, rest @ ..]) if rest.len() <= 1 => {
                let time = self.call("to_timestamp_seconds", vec![bind(n)?])?;
                let pattern = match rest {
                    [f] => bind(f)?,
                    _ => string_literal("yyyy-MM-dd HH:mm:ss"),
                };
                self.call("date_format", vec![time, pattern])?
            }
            // DataFusion leaves COALESCE to its optimizer, which rewrites
            // it to this CASE; Eddy plans without that optimizer.
            ("coalesce" | "ifnull", [first, ..]) => {
                let bound = args.iter().map(bind).collect::<Result<Vec<_>>>()?;
                let Some((last, rest)) = bound.split_last() else {
                    return Err(PlanError::internal("COALESCE without arguments"));
                };
                if rest.is_empty() {
                    return Ok(Some(bind(first)?));
                }
                Expr::Case(Case::new(
                    None,
                    rest.iter()
                        .map(|a| {
                            (
                                Box::new(Expr::IsNotNull(Box::new(a.clone()))),
                                Box::new(a.clone()),
                            )
                        })
                        .collect(),
                    Some(Box::new(last.clone())),
                ))
            }
            // `IF(condition, then, else)`.
            ("if", [c, t, f]) => Expr::Case(Case::new(
                None,
                vec![(Box::new(bind(c)?), Box::new(bind(t)?))],
                Some(Box::new(bind(f)?)),
            )),
            _ => return Ok(None),
        }))
    }

    /// A call of the scalar function `name`.
    fn call(&self, name: &str, args: Vec<Expr>) -> Result<Expr> {
        let udf = self
            .functions
            .scalar(name)
            .ok_or_else(|| PlanError::internal(format!("{name} is missing")))?;
        Ok(Expr::ScalarFunction(ScalarFunction::new_udf(udf, args)))
    }

    /// An aggregate call where `aggs` allows one: the output column of the
    /// aggregate it is.
    fn aggregate_output(&self, e: &ast::Expr, scope: &Scope, aggs: AggMode<'_>) -> Result<Expr> {
        match aggs {
            AggMode::Forbidden(clause) => {
                let name = match &e.kind {
                    ExprKind::Function(f) => f.name.value.to_uppercase(),
                    _ => String::new(),
                };
                Err(PlanError::user(
                    format!("aggregate function {name} is not allowed in {clause}"),
                    e.span,
                ))
            }
            AggMode::Output(list) => {
                let bound = self.bind_aggregate(e, scope)?;
                match list.iter().find(|a| a.same_call(&bound)) {
                    Some(a) => Ok(Expr::Column(Column::new_unqualified(&a.output_name))),
                    None => Err(PlanError::internal("aggregate call was not collected")),
                }
            }
        }
    }

    /// A column, or a field of a `ROW` column: `person.id`, `t.person.id`
    /// (a table's name comes first when it is one).
    fn identifier(&self, parts: &[ast::Ident], scope: &Scope, span: Span) -> Result<Expr> {
        let is_column = |name: &ast::Ident| {
            let columns = scope.tables.iter().flat_map(|t| &t.columns);
            columns.clone().any(|(c, _)| *c == name.value)
                || folded_match(name, columns, |(c, _)| c).is_some()
        };
        let column_parts = match parts {
            [q, ..] if scope.table(&q.value).is_some() => 2,
            [c, ..] if is_column(c) => 1,
            // Neither: the error of a `table.column` name.
            _ => parts.len(),
        };
        if parts.len() <= column_parts {
            return Ok(Expr::Column(self.resolve(parts, scope, span)?));
        }
        let mut expr = Expr::Column(self.resolve(&parts[..column_parts], scope, span)?);
        let get_field = self
            .functions
            .scalar("get_field")
            .ok_or_else(|| PlanError::internal("get_field is missing"))?;
        for field in &parts[column_parts..] {
            let (_, f) = expr
                .to_field(&scope.schema)
                .map_err(|e| PlanError::from(e).at(span))?;
            let DataType::Struct(fields) = f.data_type() else {
                return Err(PlanError::user(
                    format!(
                        "'{}' is not a table or a ROW column (it is {})",
                        f.name(),
                        f.data_type()
                    ),
                    field.span,
                ));
            };
            let name = match fields.find(&field.value) {
                Some(_) => Some(field.value.clone()),
                None => folded_match(field, fields.iter(), |f| f.name()).map(|f| f.name().clone()),
            };
            let Some(name) = name else {
                let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                let hint = did_you_mean(&suggestions(&field.value, names.iter().copied()));
                return Err(PlanError::user(
                    format!(
                        "unknown field '{}'{hint}; the ROW has fields: {}",
                        field.value,
                        names.join(", ")
                    ),
                    field.span,
                ));
            };
            let name = Expr::Literal(ScalarValue::Utf8(Some(name)), None);
            expr =
                Expr::ScalarFunction(ScalarFunction::new_udf(get_field.clone(), vec![expr, name]));
        }
        Ok(expr)
    }

    fn resolve(&self, parts: &[ast::Ident], scope: &Scope, span: Span) -> Result<Column> {
        let tables: Vec<(String, String, Vec<String>)> = scope
            .tables
            .iter()
            .map(|t| {
                let columns = t.columns.iter().map(|(c, _)| c.clone()).collect();
                (t.qualifier.clone(), t.table.clone(), columns)
            })
            .collect();
        let (qualifier, name) = resolve_name(&tables, parts, span)?;
        let field = scope
            .tables
            .iter()
            .find(|t| t.qualifier == qualifier)
            .and_then(|t| t.columns.iter().find(|(c, _)| *c == name))
            .map_or(name, |(_, f)| f.clone());
        Ok(Column::new(Some(qualifier), field))
    }

    fn literal(&self, lit: &Literal, e: &ast::Expr) -> Result<Expr> {
        let value = match lit {
            Literal::Number(text) => {
                if let Ok(i) = text.parse::<i64>() {
                    ScalarValue::Int64(Some(i))
                } else {
                    let f: f64 = text
                        .parse()
                        .map_err(|_| PlanError::user(format!("invalid number '{text}'"), e.span))?;
                    ScalarValue::Float64(Some(f))
                }
            }
            Literal::String(s) => ScalarValue::Utf8(Some(s.clone())),
            Literal::Boolean(b) => ScalarValue::Boolean(Some(*b)),
            Literal::Null => ScalarValue::Null,
            Literal::Interval { .. } => return Ok(interval_literal(interval_millis(e)?)),
            Literal::Timestamp(s) => ScalarValue::try_from_string(
                s.clone(),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )
            .map_err(|_| PlanError::user(format!("invalid timestamp '{s}'"), e.span))?,
            Literal::Date(s) => ScalarValue::try_from_string(s.clone(), &DataType::Date32)
                .map_err(|_| PlanError::user(format!("invalid date '{s}'"), e.span))?,
        };
        Ok(Expr::Literal(value, None))
    }
}

/// A constant date pattern or regex is checked when the query is planned,
/// so that a typo is an error at its position rather than a failed job.
fn string_literal(s: &str) -> Expr {
    Expr::Literal(ScalarValue::Utf8(Some(s.to_string())), None)
}

/// A Java date pattern written as a string literal, as chrono's.
fn java_pattern_literal(e: &ast::Expr) -> Result<Expr> {
    let ExprKind::Literal(Literal::String(p)) = &e.kind else {
        return Err(PlanError::not_supported(
            "a date pattern that is not a string literal",
            e.span,
        ));
    };
    let chrono =
        crate::functions::flink::java_date_pattern(p).map_err(|m| PlanError::user(m, e.span))?;
    Ok(string_literal(&chrono))
}

fn check_constant_pattern(name: &str, args: &[ast::Expr], bound: &[Expr]) -> Result<()> {
    let check: fn(&str) -> std::result::Result<(), String> = match name {
        "date_format" => |p| crate::functions::flink::java_date_pattern(p).map(drop),
        "regexp_extract" => |p| crate::functions::flink::compile_regex(p).map(drop),
        _ => return Ok(()),
    };
    if let (Some(Expr::Literal(ScalarValue::Utf8(Some(p)), _)), Some(arg)) =
        (bound.get(1), args.get(1))
    {
        check(p).map_err(|m| PlanError::user(m, arg.span))?;
    }
    Ok(())
}

/// The DataFusion operator of a SQL binary operator.
fn binary_op(op: BinaryOp) -> Operator {
    match op {
        BinaryOp::Or => Operator::Or,
        BinaryOp::And => Operator::And,
        BinaryOp::Eq => Operator::Eq,
        BinaryOp::NotEq => Operator::NotEq,
        BinaryOp::Lt => Operator::Lt,
        BinaryOp::LtEq => Operator::LtEq,
        BinaryOp::Gt => Operator::Gt,
        BinaryOp::GtEq => Operator::GtEq,
        BinaryOp::Plus => Operator::Plus,
        BinaryOp::Minus => Operator::Minus,
        BinaryOp::Multiply => Operator::Multiply,
        BinaryOp::Divide => Operator::Divide,
        BinaryOp::Modulo => Operator::Modulo,
        BinaryOp::Concat => Operator::StringConcat,
    }
}

fn binary(left: Expr, op: Operator, right: Expr) -> Expr {
    Expr::BinaryExpr(BinaryExpr::new(Box::new(left), op, Box::new(right)))
}

fn negate_if(negated: bool, e: Expr) -> Expr {
    if negated { Expr::Not(Box::new(e)) } else { e }
}

/// `x IN (a, b)` as `x = a OR x = b` (NULLs included); `None` for an empty
/// list.
fn in_list(x: Expr, list: Vec<Expr>) -> Option<Expr> {
    list.into_iter()
        .map(|item| binary(x.clone(), Operator::Eq, item))
        .reduce(|any, eq| binary(any, Operator::Or, eq))
}

/// Flink's legacy group window functions are only valid in `GROUP BY`
/// (rewritten before binding): anywhere else, say what to write instead.
fn legacy_window_function(name: &ast::Ident) -> Result<()> {
    const LEGACY: [&str; 13] = [
        "tumble",
        "hop",
        "session",
        "cumulate",
        "tumble_start",
        "tumble_end",
        "hop_start",
        "hop_end",
        "session_start",
        "session_end",
        "tumble_rowtime",
        "hop_rowtime",
        "session_rowtime",
    ];
    if !LEGACY.contains(&name.value.as_str()) {
        return Ok(());
    }
    let window = name
        .value
        .split('_')
        .next()
        .unwrap_or("tumble")
        .to_uppercase();
    Err(PlanError::not_supported(
        format!(
            "the group window function {}(...); use the window table function FROM TABLE({window}(TABLE t, DESCRIPTOR(ts), ...)) with window_start and window_end",
            name.value.to_uppercase(),
        ),
        name.span,
    ))
}

/// Inserts the casts DataFusion's kernels need (e.g. `BIGINT * DOUBLE`), and
/// returns the expression with its output field.
pub(crate) fn coerce(expr: Expr, schema: &DFSchema, span: Span) -> Result<(Expr, Field)> {
    let mut rewriter = TypeCoercionRewriter::new(schema);
    let expr = expr
        .rewrite(&mut rewriter)
        .map_err(|e| PlanError::from(e).at(span))?
        .data;
    let (_, field) = expr
        .to_field(schema)
        .map_err(|e| PlanError::from(e).at(span))?;
    Ok((expr, field.as_ref().clone().with_nullable(true)))
}

/// Coerces an aggregate call's arguments for its function.
pub(crate) fn coerce_aggregate(
    agg: &BoundAggregate,
    schema: &DFSchema,
    span: Span,
) -> Result<(Vec<Expr>, Field)> {
    let call = Expr::AggregateFunction(AggregateFunction::new_udf(
        agg.udaf.clone(),
        agg.args.clone(),
        agg.distinct,
        None,
        vec![],
        None,
    ));
    let (coerced, field) = coerce(call, schema, span)?;
    let Expr::AggregateFunction(f) = coerced else {
        return Err(PlanError::internal("coercion changed an aggregate call"));
    };
    Ok((f.params.args, field.with_name(agg.output_name.clone())))
}

/// The one item named `name` in another case, when `name` is unquoted and
/// exactly one is. Unquoted names are folded to lower case; this finds a
/// column or field declared quoted (`dateTime`) from the Flink scripts that
/// quote it only sometimes.
pub(crate) fn folded_match<T>(
    name: &ast::Ident,
    items: impl IntoIterator<Item = T>,
    name_of: impl Fn(&T) -> &str,
) -> Option<T> {
    if name.quoted {
        return None;
    }
    let mut found = items
        .into_iter()
        .filter(|i| name_of(i).eq_ignore_ascii_case(&name.value));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Resolves a column name against the tables of a FROM clause, each as
/// `(qualifier, table, columns)`; returns the qualifier and column. Unknown
/// tables and columns get suggestions; a name that several tables have is
/// ambiguous, and the error names the candidates.
pub(crate) fn resolve_name(
    tables: &[(String, String, Vec<String>)],
    parts: &[ast::Ident],
    span: Span,
) -> Result<(String, String)> {
    let (qualifier, name) = match parts {
        [name] => (None, name),
        [q, name] => (Some(q), name),
        _ => {
            return Err(PlanError::user(
                "compound names have at most two parts (table.column)",
                span,
            ));
        }
    };
    let candidates: Vec<&(String, String, Vec<String>)> = match qualifier {
        Some(q) => {
            let Some(t) = tables
                .iter()
                .find(|(qual, table, _)| *qual == q.value || *table == q.value)
            else {
                let names: Vec<&str> = tables.iter().map(|(q, _, _)| q.as_str()).collect();
                let hint = did_you_mean(&suggestions(&q.value, names.iter().copied()));
                return Err(PlanError::unknown_table(
                    format!(
                        "unknown table '{}' in column reference{hint}; the query reads {}",
                        q.value,
                        names.join(", ")
                    ),
                    q.span,
                ));
            };
            vec![t]
        }
        None => tables.iter().collect(),
    };
    let owners: Vec<&str> = candidates
        .iter()
        .filter(|(_, _, cols)| cols.contains(&name.value))
        .map(|(q, _, _)| q.as_str())
        .collect();
    // Unquoted names are folded to lower case; a column declared quoted
    // (`dateTime`) is still found by them when only one column is spelled
    // so in any case, as Flink scripts that quote a name only sometimes
    // expect.
    if owners.is_empty() {
        let columns = candidates
            .iter()
            .flat_map(|(q, _, cols)| cols.iter().map(move |c| (q.as_str(), c.as_str())));
        if let Some((owner, column)) = folded_match(name, columns, |(_, c)| c) {
            return Ok((owner.to_string(), column.to_string()));
        }
    }
    match owners.as_slice() {
        [owner] => Ok((owner.to_string(), name.value.clone())),
        [] => {
            let bare: Vec<&str> = candidates
                .iter()
                .flat_map(|(_, _, cols)| cols.iter().map(String::as_str))
                .collect();
            let hint = did_you_mean(&suggestions(&name.value, bare.iter().copied()));
            let known = match candidates.as_slice() {
                [(q, _, cols)] => format!("'{q}' has columns: {}", cols.join(", ")),
                many => {
                    let all: Vec<String> = many
                        .iter()
                        .flat_map(|(q, _, cols)| cols.iter().map(move |c| format!("{q}.{c}")))
                        .collect();
                    format!("the tables have: {}", all.join(", "))
                }
            };
            Err(PlanError::unknown_column(
                format!("unknown column '{}'{hint}; {known}", name.value),
                name.span,
            ))
        }
        many => {
            let list: Vec<String> = many.iter().map(|q| format!("{q}.{}", name.value)).collect();
            Err(PlanError::user(
                format!(
                    "column '{}' is ambiguous: it could be {}",
                    name.value,
                    list.join(" or ")
                ),
                name.span,
            ))
        }
    }
}
