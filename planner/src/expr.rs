//! `ScalarExpr`: a bound, type-checked scalar expression as plain data.
//!
//! The physical graph must be serialisable (EXPLAIN prints it; a job
//! manager will store it), but DataFusion's `Expr` is not. The binder
//! produces a coerced DataFusion `Expr`; [`ScalarExpr::from_df`] records it
//! in this form, with columns by position in the node's input; `build`
//! turns it back into a DataFusion `PhysicalExpr`.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, SchemaRef};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::expr::{Case, Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::execution_props::ExecutionProps;
use serde::{Deserialize, Serialize};

use crate::error::{PlanError, Result};
use crate::functions::Functions;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ScalarExpr {
    Column {
        name: String,
        index: usize,
    },
    /// `value` is `None` for NULL; otherwise the value's text (for
    /// intervals, `months:days:nanoseconds`).
    Literal {
        value: Option<String>,
        data_type: DataType,
    },
    Binary {
        op: BinaryOp,
        left: Box<ScalarExpr>,
        right: Box<ScalarExpr>,
    },
    Not(Box<ScalarExpr>),
    Negative(Box<ScalarExpr>),
    IsNull(Box<ScalarExpr>),
    IsNotNull(Box<ScalarExpr>),
    /// `expr IS [NOT] TRUE|FALSE`.
    IsBool {
        expr: Box<ScalarExpr>,
        value: bool,
        negated: bool,
    },
    Like {
        expr: Box<ScalarExpr>,
        pattern: Box<ScalarExpr>,
        negated: bool,
        case_insensitive: bool,
    },
    Case {
        operand: Option<Box<ScalarExpr>>,
        when_then: Vec<(ScalarExpr, ScalarExpr)>,
        else_expr: Option<Box<ScalarExpr>>,
    },
    Cast {
        expr: Box<ScalarExpr>,
        data_type: DataType,
    },
    TryCast {
        expr: Box<ScalarExpr>,
        data_type: DataType,
    },
    Function {
        name: String,
        args: Vec<ScalarExpr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Plus,
    Minus,
    Multiply,
    Divide,
    Modulo,
    And,
    Or,
    Concat,
    IsDistinctFrom,
    IsNotDistinctFrom,
}

const OPS: &[(BinaryOp, Operator)] = &[
    (BinaryOp::Eq, Operator::Eq),
    (BinaryOp::NotEq, Operator::NotEq),
    (BinaryOp::Lt, Operator::Lt),
    (BinaryOp::LtEq, Operator::LtEq),
    (BinaryOp::Gt, Operator::Gt),
    (BinaryOp::GtEq, Operator::GtEq),
    (BinaryOp::Plus, Operator::Plus),
    (BinaryOp::Minus, Operator::Minus),
    (BinaryOp::Multiply, Operator::Multiply),
    (BinaryOp::Divide, Operator::Divide),
    (BinaryOp::Modulo, Operator::Modulo),
    (BinaryOp::And, Operator::And),
    (BinaryOp::Or, Operator::Or),
    (BinaryOp::Concat, Operator::StringConcat),
    (BinaryOp::IsDistinctFrom, Operator::IsDistinctFrom),
    (BinaryOp::IsNotDistinctFrom, Operator::IsNotDistinctFrom),
];

impl BinaryOp {
    /// How SQL spells it (`<=`).
    pub fn symbol(self) -> String {
        self.to_df().to_string()
    }

    /// The same comparison with its operands swapped (`a < b` is `b > a`),
    /// if it is a comparison.
    pub fn swapped(self) -> Option<Self> {
        Some(match self {
            BinaryOp::Eq => BinaryOp::Eq,
            BinaryOp::Lt => BinaryOp::Gt,
            BinaryOp::LtEq => BinaryOp::GtEq,
            BinaryOp::Gt => BinaryOp::Lt,
            BinaryOp::GtEq => BinaryOp::LtEq,
            _ => return None,
        })
    }

    fn to_df(self) -> Operator {
        OPS.iter()
            .find(|(o, _)| *o == self)
            .map(|(_, d)| *d)
            .unwrap_or(Operator::Eq)
    }

    fn from_df(op: Operator) -> Option<Self> {
        OPS.iter().find(|(_, d)| *d == op).map(|(o, _)| *o)
    }
}

fn encode_literal(v: &ScalarValue) -> Option<String> {
    if v.is_null() {
        return None;
    }
    Some(match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) => {
            format!("{}:{}:{}", i.months, i.days, i.nanoseconds)
        }
        other => other.to_string(),
    })
}

fn decode_literal(value: &Option<String>, data_type: &DataType) -> Result<ScalarValue> {
    let Some(text) = value else {
        return Ok(ScalarValue::try_from(data_type)?);
    };
    if let DataType::Interval(_) = data_type {
        let parts: Vec<&str> = text.split(':').collect();
        let parse = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| PlanError::internal(format!("bad interval literal {text}")))
        };
        if let [m, d, n] = parts.as_slice() {
            let v = IntervalMonthDayNano::new(parse(m)? as i32, parse(d)? as i32, parse(n)?);
            return Ok(ScalarValue::IntervalMonthDayNano(Some(v)));
        }
        return Err(PlanError::internal(format!("bad interval literal {text}")));
    }
    // Timestamps and dates print as their raw integer.
    if let Ok(raw) = text.parse::<i64>() {
        match data_type {
            DataType::Timestamp(unit, tz) => {
                use datafusion::arrow::datatypes::TimeUnit;
                let tz = tz.clone();
                return Ok(match unit {
                    TimeUnit::Second => ScalarValue::TimestampSecond(Some(raw), tz),
                    TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(Some(raw), tz),
                    TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(Some(raw), tz),
                    TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(Some(raw), tz),
                });
            }
            DataType::Date32 => return Ok(ScalarValue::Date32(Some(raw as i32))),
            DataType::Date64 => return Ok(ScalarValue::Date64(Some(raw))),
            _ => {}
        }
    }
    Ok(ScalarValue::try_from_string(text.clone(), data_type)?)
}

impl ScalarExpr {
    /// The value of a literal (`None` for anything else).
    pub fn literal_value(&self) -> Option<ScalarValue> {
        match self {
            ScalarExpr::Literal { value, data_type } => decode_literal(value, data_type).ok(),
            _ => None,
        }
    }

    pub fn column(name: impl Into<String>, index: usize) -> Self {
        ScalarExpr::Column {
            name: name.into(),
            index,
        }
    }

    /// Calls `f` with the index of every column the expression reads,
    /// which it may change (a narrower input).
    pub fn visit_columns(&mut self, f: &mut dyn FnMut(&mut usize)) {
        match self {
            ScalarExpr::Column { index, .. } => f(index),
            ScalarExpr::Literal { .. } => {}
            ScalarExpr::Binary { left, right, .. } => {
                left.visit_columns(f);
                right.visit_columns(f);
            }
            ScalarExpr::Not(e)
            | ScalarExpr::Negative(e)
            | ScalarExpr::IsNull(e)
            | ScalarExpr::IsNotNull(e)
            | ScalarExpr::IsBool { expr: e, .. }
            | ScalarExpr::Cast { expr: e, .. }
            | ScalarExpr::TryCast { expr: e, .. } => e.visit_columns(f),
            ScalarExpr::Like { expr, pattern, .. } => {
                expr.visit_columns(f);
                pattern.visit_columns(f);
            }
            ScalarExpr::Case {
                operand,
                when_then,
                else_expr,
            } => {
                let pairs = when_then.iter_mut().flat_map(|(w, t)| [w, t]);
                let all = operand.iter_mut().map(|e| &mut **e).chain(pairs);
                for e in all.chain(else_expr.iter_mut().map(|e| &mut **e)) {
                    e.visit_columns(f);
                }
            }
            ScalarExpr::Function { args, .. } => {
                for a in args {
                    a.visit_columns(f);
                }
            }
        }
    }

    /// Records a coerced DataFusion expression over `schema`.
    pub fn from_df(expr: &Expr, schema: &DFSchema) -> Result<Self> {
        let rec = |e: &Expr| Self::from_df(e, schema).map(Box::new);
        Ok(match expr {
            Expr::Alias(a) => Self::from_df(&a.expr, schema)?,
            Expr::Column(c) => {
                let index = schema.index_of_column(c)?;
                ScalarExpr::Column {
                    name: schema.field(index).name().clone(),
                    index,
                }
            }
            Expr::Literal(v, _) => ScalarExpr::Literal {
                value: encode_literal(v),
                data_type: v.data_type(),
            },
            Expr::BinaryExpr(b) => {
                let op = BinaryOp::from_df(b.op).ok_or_else(|| {
                    PlanError::internal(format!("operator {} is not supported yet", b.op))
                })?;
                ScalarExpr::Binary {
                    op,
                    left: rec(&b.left)?,
                    right: rec(&b.right)?,
                }
            }
            Expr::Not(e) => ScalarExpr::Not(rec(e)?),
            Expr::Negative(e) => ScalarExpr::Negative(rec(e)?),
            Expr::IsNull(e) => ScalarExpr::IsNull(rec(e)?),
            Expr::IsNotNull(e) => ScalarExpr::IsNotNull(rec(e)?),
            Expr::IsTrue(e) => ScalarExpr::IsBool {
                expr: rec(e)?,
                value: true,
                negated: false,
            },
            Expr::IsNotTrue(e) => ScalarExpr::IsBool {
                expr: rec(e)?,
                value: true,
                negated: true,
            },
            Expr::IsFalse(e) => ScalarExpr::IsBool {
                expr: rec(e)?,
                value: false,
                negated: false,
            },
            Expr::IsNotFalse(e) => ScalarExpr::IsBool {
                expr: rec(e)?,
                value: false,
                negated: true,
            },
            Expr::Like(l) if l.escape_char.is_none() => ScalarExpr::Like {
                expr: rec(&l.expr)?,
                pattern: rec(&l.pattern)?,
                negated: l.negated,
                case_insensitive: l.case_insensitive,
            },
            Expr::Case(c) => ScalarExpr::Case {
                operand: c.expr.as_deref().map(rec).transpose()?,
                when_then: c
                    .when_then_expr
                    .iter()
                    .map(|(w, t)| Ok((Self::from_df(w, schema)?, Self::from_df(t, schema)?)))
                    .collect::<Result<_>>()?,
                else_expr: c.else_expr.as_deref().map(rec).transpose()?,
            },
            Expr::Cast(c) => ScalarExpr::Cast {
                expr: rec(&c.expr)?,
                data_type: c.field.data_type().clone(),
            },
            Expr::TryCast(c) => ScalarExpr::TryCast {
                expr: rec(&c.expr)?,
                data_type: c.field.data_type().clone(),
            },
            Expr::ScalarFunction(f) => ScalarExpr::Function {
                name: f.func.name().to_string(),
                args: f
                    .args
                    .iter()
                    .map(|a| Self::from_df(a, schema))
                    .collect::<Result<_>>()?,
            },
            other => {
                return Err(PlanError::internal(format!(
                    "expression not supported yet: {other}"
                )));
            }
        })
    }

    /// Rebuilds the DataFusion expression (columns by name).
    pub fn to_df(&self, functions: &Functions) -> Result<Expr> {
        let rec = |e: &ScalarExpr| e.to_df(functions).map(Box::new);
        Ok(match self {
            ScalarExpr::Column { name, .. } => Expr::Column(Column::new_unqualified(name)),
            ScalarExpr::Literal { value, data_type } => {
                Expr::Literal(decode_literal(value, data_type)?, None)
            }
            ScalarExpr::Binary { op, left, right } => {
                Expr::BinaryExpr(BinaryExpr::new(rec(left)?, op.to_df(), rec(right)?))
            }
            ScalarExpr::Not(e) => Expr::Not(rec(e)?),
            ScalarExpr::Negative(e) => Expr::Negative(rec(e)?),
            ScalarExpr::IsNull(e) => Expr::IsNull(rec(e)?),
            ScalarExpr::IsNotNull(e) => Expr::IsNotNull(rec(e)?),
            ScalarExpr::IsBool {
                expr,
                value,
                negated,
            } => {
                let e = rec(expr)?;
                match (value, negated) {
                    (true, false) => Expr::IsTrue(e),
                    (true, true) => Expr::IsNotTrue(e),
                    (false, false) => Expr::IsFalse(e),
                    (false, true) => Expr::IsNotFalse(e),
                }
            }
            ScalarExpr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => Expr::Like(datafusion::logical_expr::expr::Like::new(
                *negated,
                rec(expr)?,
                rec(pattern)?,
                None,
                *case_insensitive,
            )),
            ScalarExpr::Case {
                operand,
                when_then,
                else_expr,
            } => Expr::Case(Case::new(
                operand.as_deref().map(rec).transpose()?,
                when_then
                    .iter()
                    .map(|(w, t)| Ok((rec(w)?, rec(t)?)))
                    .collect::<Result<_>>()?,
                else_expr.as_deref().map(rec).transpose()?,
            )),
            ScalarExpr::Cast { expr, data_type } => {
                Expr::Cast(Cast::new(rec(expr)?, data_type.clone()))
            }
            ScalarExpr::TryCast { expr, data_type } => {
                Expr::TryCast(TryCast::new(rec(expr)?, data_type.clone()))
            }
            ScalarExpr::Function { name, args } => {
                let udf = functions.scalar(name).ok_or_else(|| {
                    PlanError::internal(format!("function {name} vanished from the registry"))
                })?;
                Expr::ScalarFunction(ScalarFunction::new_udf(
                    udf,
                    args.iter()
                        .map(|a| a.to_df(functions))
                        .collect::<Result<_>>()?,
                ))
            }
        })
    }

    /// Compiles to a DataFusion physical expression over `input`.
    pub fn to_physical(
        &self,
        input: &SchemaRef,
        functions: &Functions,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let df_schema = DFSchema::try_from(input.as_ref().clone())?;
        let expr = self.to_df(functions)?;
        Ok(datafusion::physical_expr::create_physical_expr(
            &expr,
            &df_schema,
            &ExecutionProps::new(),
            &Default::default(),
        )?)
    }
}

impl fmt::Display for ScalarExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScalarExpr::Column { name, .. } => write!(f, "{name}"),
            ScalarExpr::Literal { value: None, .. } => write!(f, "NULL"),
            ScalarExpr::Literal {
                value: Some(v),
                data_type,
            } => match data_type {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    write!(f, "'{}'", v.replace('\'', "''"))
                }
                DataType::Interval(_) => {
                    let nanos: i64 = v
                        .rsplit(':')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    if nanos % 1_000_000_000 == 0 {
                        write!(f, "INTERVAL '{}' SECOND", nanos / 1_000_000_000)
                    } else {
                        write!(f, "INTERVAL '{}' MILLISECOND", nanos / 1_000_000)
                    }
                }
                DataType::Timestamp(unit, _) => {
                    use datafusion::arrow::datatypes::TimeUnit;
                    use datafusion::arrow::temporal_conversions as tc;
                    let raw: i64 = v.parse().unwrap_or_default();
                    let dt = match unit {
                        TimeUnit::Second => tc::timestamp_s_to_datetime(raw),
                        TimeUnit::Millisecond => tc::timestamp_ms_to_datetime(raw),
                        TimeUnit::Microsecond => tc::timestamp_us_to_datetime(raw),
                        TimeUnit::Nanosecond => {
                            Some(tc::timestamp_ns_to_datetime(raw).unwrap_or_default())
                        }
                    };
                    match dt {
                        Some(dt) => write!(f, "TIMESTAMP '{}'", dt.format("%Y-%m-%d %H:%M:%S%.f")),
                        None => write!(f, "TIMESTAMP '{v}'"),
                    }
                }
                _ => write!(f, "{v}"),
            },
            ScalarExpr::Binary { op, left, right } => write!(f, "({left} {} {right})", op.to_df()),
            ScalarExpr::Not(e) => write!(f, "NOT {e}"),
            ScalarExpr::Negative(e) => write!(f, "-{e}"),
            ScalarExpr::IsNull(e) => write!(f, "{e} IS NULL"),
            ScalarExpr::IsNotNull(e) => write!(f, "{e} IS NOT NULL"),
            ScalarExpr::IsBool {
                expr,
                value,
                negated,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(
                    f,
                    "{expr} IS {not}{}",
                    if *value { "TRUE" } else { "FALSE" }
                )
            }
            ScalarExpr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(
                    f,
                    "{expr} {not}{} {pattern}",
                    if *case_insensitive { "ILIKE" } else { "LIKE" }
                )
            }
            ScalarExpr::Case {
                operand,
                when_then,
                else_expr,
            } => {
                write!(f, "CASE")?;
                if let Some(o) = operand {
                    write!(f, " {o}")?;
                }
                for (w, t) in when_then {
                    write!(f, " WHEN {w} THEN {t}")?;
                }
                if let Some(e) = else_expr {
                    write!(f, " ELSE {e}")?;
                }
                write!(f, " END")
            }
            ScalarExpr::Cast { expr, data_type } => write!(f, "CAST({expr} AS {data_type})"),
            ScalarExpr::TryCast { expr, data_type } => write!(f, "TRY_CAST({expr} AS {data_type})"),
            ScalarExpr::Function { name, args } => {
                let args: Vec<String> = args.iter().map(ToString::to_string).collect();
                write!(f, "{name}({})", args.join(", "))
            }
        }
    }
}
