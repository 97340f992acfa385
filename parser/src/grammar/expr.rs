//! Expressions, by precedence level (lowest first): OR, AND, NOT,
//! comparison (`= <> < <= > >=`, `IS`, `IN`, `BETWEEN`, `LIKE`), `||`,
//! `+ -`, `* / %`, unary `- +`, postfix `::type`, then primaries.

use nom::branch::alt;
use nom::combinator::opt;
use nom::{Input as _, Parser};

use super::query::order_by_list;
use super::*;

pub(super) fn expr_at(kind: ExprKind, span: Span) -> Expr {
    Expr { kind, span }
}

fn binary(op: BinaryOp, left: Expr, right: Expr) -> Expr {
    let span = left.span.union(right.span);
    expr_at(
        ExprKind::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
        },
        span,
    )
}

/// Any expression.
pub(crate) fn expr(i: Input<'_>) -> PResult<'_, Expr> {
    nested(i, or_expr)
}

/// One left-associative precedence level: `next (op next)*`.
fn left_assoc<'a>(
    i: Input<'a>,
    next: fn(Input<'a>) -> PResult<'a, Expr>,
    mut op: impl Parser<Input<'a>, Output = BinaryOp, Error = GrammarError>,
) -> PResult<'a, Expr> {
    let (mut i, mut left) = next(i)?;
    while let Ok((rest, op)) = op.parse(i) {
        let (rest, right) = required(next(rest))?;
        left = binary(op, left, right);
        i = rest;
    }
    Ok((i, left))
}

fn or_expr(i: Input<'_>) -> PResult<'_, Expr> {
    left_assoc(i, and_expr, kw("OR").map(|_| BinaryOp::Or))
}

fn and_expr(i: Input<'_>) -> PResult<'_, Expr> {
    left_assoc(i, not_expr, kw("AND").map(|_| BinaryOp::And))
}

fn not_expr(i: Input<'_>) -> PResult<'_, Expr> {
    if let Ok((rest, span)) = kw("NOT")(i) {
        let (rest, inner) = required(nested(rest, not_expr))?;
        let span = span.union(inner.span);
        return Ok((
            rest,
            expr_at(
                ExprKind::Unary {
                    op: UnaryOp::Not,
                    expr: Box::new(inner),
                },
                span,
            ),
        ));
    }
    comparison(i)
}

fn comparison_op(i: Input<'_>) -> PResult<'_, BinaryOp> {
    alt((
        sym("<=").map(|_| BinaryOp::LtEq),
        sym(">=").map(|_| BinaryOp::GtEq),
        sym("<>").map(|_| BinaryOp::NotEq),
        sym("!=").map(|_| BinaryOp::NotEq),
        sym("=").map(|_| BinaryOp::Eq),
        sym("<").map(|_| BinaryOp::Lt),
        sym(">").map(|_| BinaryOp::Gt),
    ))
    .parse(i)
}

fn comparison(i: Input<'_>) -> PResult<'_, Expr> {
    let (i, left) = concat_expr(i)?;
    if let Ok((rest, op)) = comparison_op(i) {
        let (rest, right) = required(concat_expr(rest))?;
        return Ok((rest, binary(op, left, right)));
    }
    if let Ok((rest, _)) = kw("IS")(i) {
        let (rest, not) = opt(kw("NOT")).parse(rest)?;
        let negated = not.is_some();
        let (rest, (what, end)) = required(
            alt((
                kw("NULL").map(|s| (None, s)),
                kw("TRUE").map(|s| (Some(true), s)),
                kw("FALSE").map(|s| (Some(false), s)),
            ))
            .parse(rest),
        )?;
        let span = left.span.union(end);
        let expr = Box::new(left);
        let kind = match what {
            None => ExprKind::IsNull { expr, negated },
            Some(value) => ExprKind::IsBool {
                expr,
                value,
                negated,
            },
        };
        return Ok((rest, expr_at(kind, span)));
    }
    // `[NOT] IN | BETWEEN | LIKE | ILIKE`
    let (rest, not) = match kw("NOT")(i) {
        Ok((r, _)) => (r, true),
        Err(_) => (i, false),
    };
    if let Ok((r, _)) = kw("IN")(rest) {
        let (r, _) = required(sym("(")(r))?;
        let (r, list) = required(comma_list1(expr).parse(r))?;
        let (r, end) = required(sym(")")(r))?;
        let span = left.span.union(end);
        let kind = ExprKind::InList {
            expr: Box::new(left),
            list,
            negated: not,
        };
        return Ok((r, expr_at(kind, span)));
    }
    if let Ok((r, _)) = kw("BETWEEN")(rest) {
        let (r, low) = required(concat_expr(r))?;
        let (r, _) = required(kw("AND")(r))?;
        let (r, high) = required(concat_expr(r))?;
        let span = left.span.union(high.span);
        let kind = ExprKind::Between {
            expr: Box::new(left),
            low: Box::new(low),
            high: Box::new(high),
            negated: not,
        };
        return Ok((r, expr_at(kind, span)));
    }
    let like = alt((kw("LIKE").map(|_| false), kw("ILIKE").map(|_| true))).parse(rest);
    if let Ok((r, case_insensitive)) = like {
        let (r, pattern) = required(concat_expr(r))?;
        let span = left.span.union(pattern.span);
        let kind = ExprKind::Like {
            expr: Box::new(left),
            pattern: Box::new(pattern),
            negated: not,
            case_insensitive,
        };
        return Ok((r, expr_at(kind, span)));
    }
    if not {
        return required(fail(skip_ws(rest), "IN, BETWEEN, LIKE or ILIKE"));
    }
    Ok((i, left))
}

fn concat_expr(i: Input<'_>) -> PResult<'_, Expr> {
    left_assoc(i, additive, sym("||").map(|_| BinaryOp::Concat))
}

fn additive(i: Input<'_>) -> PResult<'_, Expr> {
    // `--` starts a comment, which skip_ws has already consumed.
    let op = alt((
        sym("+").map(|_| BinaryOp::Plus),
        sym("-").map(|_| BinaryOp::Minus),
    ));
    left_assoc(i, multiplicative, op)
}

fn multiplicative(i: Input<'_>) -> PResult<'_, Expr> {
    let op = alt((
        sym("*").map(|_| BinaryOp::Multiply),
        sym("/").map(|_| BinaryOp::Divide),
        sym("%").map(|_| BinaryOp::Modulo),
    ));
    left_assoc(i, unary, op)
}

fn unary(i: Input<'_>) -> PResult<'_, Expr> {
    let op = alt((
        sym("-").map(|s| (UnaryOp::Minus, s)),
        sym("+").map(|s| (UnaryOp::Plus, s)),
    ))
    .parse(i);
    if let Ok((rest, (op, span))) = op {
        let (rest, inner) = required(nested(rest, unary))?;
        let span = span.union(inner.span);
        return Ok((
            rest,
            expr_at(
                ExprKind::Unary {
                    op,
                    expr: Box::new(inner),
                },
                span,
            ),
        ));
    }
    postfix(i)
}

/// `primary (:: type)*`
fn postfix(i: Input<'_>) -> PResult<'_, Expr> {
    let (mut i, mut e) = primary(i)?;
    while let Ok((rest, _)) = sym("::")(i) {
        let (rest, data_type) = required(data_type(rest))?;
        let span = e.span.union(data_type.span);
        e = expr_at(
            ExprKind::Cast {
                expr: Box::new(e),
                data_type,
                shorthand: true,
            },
            span,
        );
        i = rest;
    }
    Ok((i, e))
}

fn primary(i: Input<'_>) -> PResult<'_, Expr> {
    let start = skip_ws(i);
    let result = alt((
        literal,
        case_expr,
        cast_expr,
        extract_expr,
        |i| nested(i, parenthesized),
        function_or_identifier,
    ))
    .parse(i);
    result.map_err(|e| match e {
        // Nothing matched here: say what an expression may start with.
        nom::Err::Error(err) if err.offset == start.location_offset() => {
            nom::Err::Error(GrammarError::expected(err.offset, "expression"))
        }
        other => other,
    })
}

fn parenthesized(i: Input<'_>) -> PResult<'_, Expr> {
    let (rest, open) = sym("(")(i)?;
    let (rest, inner) = required(expr(rest))?;
    let (rest, close) = required(sym(")")(rest))?;
    Ok((
        rest,
        expr_at(ExprKind::Nested(Box::new(inner)), open.union(close)),
    ))
}

fn literal(i: Input<'_>) -> PResult<'_, Expr> {
    if let Ok((rest, (text, span))) = number_lit(i) {
        return Ok((
            rest,
            expr_at(ExprKind::Literal(Literal::Number(text)), span),
        ));
    }
    match string_lit(i) {
        Ok((rest, (text, span))) => {
            return Ok((
                rest,
                expr_at(ExprKind::Literal(Literal::String(text)), span),
            ));
        }
        Err(e @ nom::Err::Failure(_)) => return Err(e),
        Err(_) => {}
    }
    for (word, lit) in [
        ("TRUE", Literal::Boolean(true)),
        ("FALSE", Literal::Boolean(false)),
        ("NULL", Literal::Null),
    ] {
        if let Ok((rest, span)) = kw(word)(i) {
            return Ok((rest, expr_at(ExprKind::Literal(lit), span)));
        }
    }
    if let Ok((rest, span)) = kw("INTERVAL")(i) {
        return interval_body(rest, span);
    }
    // `TIMESTAMP '...'` and `DATE '...'` are typed literals only when a
    // string follows; otherwise the word is an ordinary identifier.
    for word in ["TIMESTAMP", "DATE"] {
        if let Ok((rest, span)) = kw(word)(i)
            && let Ok((rest, (text, s))) = string_lit(rest)
        {
            let lit = if word == "DATE" {
                Literal::Date(text)
            } else {
                Literal::Timestamp(text)
            };
            return Ok((rest, expr_at(ExprKind::Literal(lit), span.union(s))));
        }
    }
    fail(skip_ws(i), "literal")
}

/// The rest of `INTERVAL '10' SECOND` or `INTERVAL '10 seconds'`.
fn interval_body(i: Input<'_>, start: Span) -> PResult<'_, Expr> {
    let (rest, (value, value_span)) = required(string_lit(i))?;
    let unit_word = skip_ws(rest);
    let word_len = unit_word
        .fragment()
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(unit_word.fragment().len());
    let word = &unit_word.fragment()[..word_len];
    if let Some(unit) = IntervalUnit::parse(word).filter(|_| word_len > 0) {
        let rest = unit_word.take_from(word_len);
        let span = start.union(span_of(unit_word, rest));
        let lit = Literal::Interval {
            value,
            unit: Some(unit),
        };
        return Ok((rest, expr_at(ExprKind::Literal(lit), span)));
    }
    // No unit keyword: the string must carry one (`'10 seconds'`).
    let mut parts = value.split_whitespace();
    let (Some(_), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return failure(
            unit_word.location_offset(),
            "expected an interval unit (MILLISECOND, SECOND, MINUTE, HOUR or DAY)",
        );
    };
    if IntervalUnit::parse(unit).is_none() {
        return failure(value_span.start, format!("unknown interval unit '{unit}'"));
    }
    let lit = Literal::Interval { value, unit: None };
    Ok((
        rest,
        expr_at(ExprKind::Literal(lit), start.union(value_span)),
    ))
}

fn case_expr(i: Input<'_>) -> PResult<'_, Expr> {
    let (mut rest, start) = kw("CASE")(i)?;
    let mut operand = None;
    if !peek_kw(rest, "WHEN") {
        let (r, e) = required(expr(rest))?;
        operand = Some(Box::new(e));
        rest = r;
    }
    let mut branches = Vec::new();
    while let Ok((r, _)) = kw("WHEN")(rest) {
        let (r, cond) = required(expr(r))?;
        let (r, _) = required(kw("THEN")(r))?;
        let (r, then) = required(expr(r))?;
        branches.push((cond, then));
        rest = r;
    }
    if branches.is_empty() {
        return required(fail(skip_ws(rest), "WHEN"));
    }
    let mut else_result = None;
    if let Ok((r, _)) = kw("ELSE")(rest) {
        let (r, e) = required(expr(r))?;
        else_result = Some(Box::new(e));
        rest = r;
    }
    let (rest, end) = required(alt((kw("END"), kw("WHEN"), kw("ELSE"))).parse(rest))?;
    let kind = ExprKind::Case {
        operand,
        branches,
        else_result,
    };
    Ok((rest, expr_at(kind, start.union(end))))
}

fn cast_expr(i: Input<'_>) -> PResult<'_, Expr> {
    let (rest, start) = kw("CAST")(i)?;
    let (rest, _) = required(sym("(")(rest))?;
    let (rest, inner) = required(expr(rest))?;
    let (rest, _) = required(kw("AS")(rest))?;
    let (rest, data_type) = required(data_type(rest))?;
    let (rest, end) = required(sym(")")(rest))?;
    let kind = ExprKind::Cast {
        expr: Box::new(inner),
        data_type,
        shorthand: false,
    };
    Ok((rest, expr_at(kind, start.union(end))))
}

fn function_or_identifier(i: Input<'_>) -> PResult<'_, Expr> {
    let (rest, first) = ident(i)?;
    if let Ok((rest, _)) = sym("(")(rest) {
        return nested(rest, |rest| function_args(rest, first));
    }
    let mut parts = vec![first];
    let mut rest = rest;
    while let Ok((r, _)) = sym(".")(rest) {
        let (r, part) = required(ident(r))?;
        parts.push(part);
        rest = r;
    }
    let span = parts[0].span.union(parts[parts.len() - 1].span);
    Ok((rest, expr_at(ExprKind::Identifier(parts), span)))
}

/// `EXTRACT(field FROM expr)`.
fn extract_expr(i: Input<'_>) -> PResult<'_, Expr> {
    let (rest, start) = kw("EXTRACT")(i)?;
    let Ok((rest, _)) = sym("(")(rest) else {
        return fail(skip_ws(i), "EXTRACT(");
    };
    let (rest, field) = required(ident(rest))?;
    let (rest, _) = required(kw("FROM")(rest))?;
    let (rest, e) = required(expr(rest))?;
    let (rest, end) = required(sym(")")(rest))?;
    let kind = ExprKind::Extract {
        field,
        expr: Box::new(e),
    };
    Ok((rest, expr_at(kind, start.union(end))))
}

/// The argument list of a call, after `name(`, and what may follow it:
/// `FILTER (WHERE ..)` and `OVER (..)`.
fn function_args(i: Input<'_>, name: Ident) -> PResult<'_, Expr> {
    let (mut rest, distinct) = opt(kw("DISTINCT")).parse(i)?;
    let mut args = Vec::new();
    let mut star = false;
    if distinct.is_none()
        && let Ok((r, _)) = sym("*")(rest)
    {
        star = true;
        rest = r;
    } else if sym(")")(rest).is_err() {
        let (r, list) = required(comma_list1(expr).parse(rest))?;
        args = list;
        rest = r;
    }
    let (mut rest, mut end) = required(sym(")")(rest))?;
    let mut filter = None;
    if let Ok((r, _)) = (kw("FILTER"), sym("(")).parse(rest) {
        let (r, _) = required(kw("WHERE")(r))?;
        let (r, cond) = required(expr(r))?;
        let (r, close) = required(sym(")")(r))?;
        filter = Some(Box::new(cond));
        (rest, end) = (r, close);
    }
    let mut over = None;
    if let Ok((r, _)) = kw("OVER")(rest) {
        let (r, _) = required(sym("(")(r))?;
        let (r, spec) = required(window_spec(r))?;
        let (r, close) = required(sym(")")(r))?;
        over = Some(spec);
        (rest, end) = (r, close);
    }
    let span = name.span.union(end);
    let f = Function {
        name,
        args,
        star,
        distinct: distinct.is_some(),
        filter,
        over,
    };
    Ok((rest, expr_at(ExprKind::Function(f), span)))
}

/// The inside of `OVER (...)`.
fn window_spec(i: Input<'_>) -> PResult<'_, WindowSpec> {
    let mut rest = i;
    let mut partition_by = Vec::new();
    if let Ok((r, _)) = (kw("PARTITION"), kw("BY")).parse(rest) {
        let (r, list) = required(comma_list1(expr).parse(r))?;
        partition_by = list;
        rest = r;
    }
    let mut order_by = Vec::new();
    if let Ok((r, _)) = (kw("ORDER"), kw("BY")).parse(rest) {
        let (r, list) = required(order_by_list(r))?;
        order_by = list;
        rest = r;
    }
    let mut frame = None;
    if let Ok((r, rows)) = alt((kw("ROWS").map(|_| true), kw("RANGE").map(|_| false))).parse(rest) {
        let (r, (start, end)) = if let Ok((r, _)) = kw("BETWEEN")(r) {
            let (r, start) = required(frame_bound(r))?;
            let (r, _) = required(kw("AND")(r))?;
            let (r, end) = required(frame_bound(r))?;
            (r, (start, Some(end)))
        } else {
            let (r, start) = required(frame_bound(r))?;
            (r, (start, None))
        };
        frame = Some(WindowFrame { rows, start, end });
        rest = r;
    }
    Ok((
        rest,
        WindowSpec {
            partition_by,
            order_by,
            frame,
        },
    ))
}

fn frame_bound(i: Input<'_>) -> PResult<'_, FrameBound> {
    if let Ok((r, _)) = (kw("CURRENT"), kw("ROW")).parse(i) {
        return Ok((r, FrameBound::CurrentRow));
    }
    let (r, amount) = match kw("UNBOUNDED")(i) {
        Ok((r, _)) => (r, None),
        Err(_) => {
            let (r, e) = additive(i)?;
            (r, Some(Box::new(e)))
        }
    };
    let (r, preceding) = required(
        alt((
            kw("PRECEDING").map(|_| true),
            kw("FOLLOWING").map(|_| false),
        ))
        .parse(r),
    )?;
    Ok((
        r,
        if preceding {
            FrameBound::Preceding(amount)
        } else {
            FrameBound::Following(amount)
        },
    ))
}

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

fn type_precision(i: Input<'_>) -> PResult<'_, Option<Vec<u64>>> {
    let Ok((rest, _)) = sym("(")(i) else {
        return Ok((i, None));
    };
    let (rest, values) = required(comma_list1(integer).parse(rest))?;
    let (rest, _) = required(sym(")")(rest))?;
    Ok((rest, Some(values.into_iter().map(|(v, _)| v).collect())))
}

pub(crate) fn data_type(i: Input<'_>) -> PResult<'_, DataType> {
    let start = skip_ws(i);
    let (rest, name) = match ident(i) {
        Ok(ok) => ok,
        Err(nom::Err::Error(_)) => return fail(start, "data type"),
        Err(e) => return Err(e),
    };
    if let Some(nested) = nested_type(&name.value, rest) {
        let (rest, kind) = nested?;
        let span = span_of(start, rest);
        return Ok((rest, DataType { kind, span }));
    }
    let (mut rest, params) = type_precision(rest)?;
    let p = |n: usize| params.as_ref().and_then(|v| v.get(n).copied());
    let kind = match name.value.as_str() {
        "boolean" | "bool" => DataTypeKind::Boolean,
        "tinyint" => DataTypeKind::TinyInt,
        "smallint" => DataTypeKind::SmallInt,
        "int" | "integer" => DataTypeKind::Int,
        "bigint" => DataTypeKind::BigInt,
        "float" | "real" => DataTypeKind::Float,
        "double" => {
            if let Ok((r, _)) = kw("PRECISION")(rest) {
                rest = r;
            }
            DataTypeKind::Double
        }
        "decimal" | "numeric" | "dec" => {
            let precision = p(0).unwrap_or(10).min(38) as u8;
            let scale = p(1).unwrap_or(0).min(precision as u64) as i8;
            DataTypeKind::Decimal { precision, scale }
        }
        "varchar" | "string" | "text" | "char" | "character" => DataTypeKind::Varchar,
        "bytes" | "varbinary" | "binary" | "bytea" => DataTypeKind::Bytes,
        "date" => DataTypeKind::Date,
        "timestamp" | "timestamp_ltz" => {
            let precision = p(0).map(|v| v.min(9) as u8);
            if let Ok((r, _)) = (kw("WITHOUT"), kw("TIME"), kw("ZONE")).parse(rest) {
                rest = r;
            }
            DataTypeKind::Timestamp { precision }
        }
        _ => {
            return failure(
                name.span.start,
                format!(
                    "unknown data type '{}' (expected BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, \
                     DOUBLE, DECIMAL(p, s), VARCHAR, BYTES, DATE, TIMESTAMP(p), ROW<...>, \
                     ARRAY<t> or MAP<k, v>)",
                    name.value
                ),
            );
        }
    };
    if let Ok((r, _)) = (kw("NOT"), kw("NULL")).parse(rest) {
        rest = r;
    } else if let Ok((r, _)) = kw("NULL")(rest) {
        rest = r;
    }
    Ok((
        rest,
        DataType {
            kind,
            span: span_of(start, rest),
        },
    ))
}

/// `ROW<name TYPE, ...>` (or with parentheses), `ARRAY<TYPE>` and
/// `MAP<KEY, VALUE>`, if `name` is one of them.
fn nested_type<'a>(name: &str, i: Input<'a>) -> Option<PResult<'a, DataTypeKind>> {
    let open_close = |i: Input<'a>| -> PResult<'a, &'static str> {
        match sym("<")(i) {
            Ok((r, _)) => Ok((r, ">")),
            Err(_) => sym("(")(i).map(|(r, _)| (r, ")")),
        }
    };
    let parse = move |i: Input<'a>| -> PResult<'a, DataTypeKind> {
        let (rest, close) = required(open_close(i))?;
        let (rest, kind) = match name {
            "row" => {
                let field = |i| {
                    let (r, name) = ident(i)?;
                    let (r, data_type) = required(data_type(r))?;
                    // Flink allows a description: `name TYPE 'comment'`.
                    let r = string_lit(r).map_or(r, |(r, _)| r);
                    Ok((r, RowField { name, data_type }))
                };
                let (r, fields) = required(comma_list1(field).parse(rest))?;
                (r, DataTypeKind::Row(fields))
            }
            "array" => {
                let (r, t) = required(data_type(rest))?;
                (r, DataTypeKind::Array(Box::new(t)))
            }
            _ => {
                let (r, k) = required(data_type(rest))?;
                let (r, _) = required(sym(",")(r))?;
                let (r, v) = required(data_type(r))?;
                (r, DataTypeKind::Map(Box::new(k), Box::new(v)))
            }
        };
        let (rest, _) = match close {
            ">" => required(sym(">")(rest))?,
            _ => required(sym(")")(rest))?,
        };
        Ok((rest, kind))
    };
    matches!(name, "row" | "array" | "map").then(|| parse(i))
}

// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------
