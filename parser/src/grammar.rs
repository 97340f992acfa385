//! The nom grammar: small named rules, one per construct.
//!
//! Conventions:
//! - every token rule skips leading whitespace and comments itself
//!   ([`skip_ws`]), so rules compose without explicit whitespace handling;
//! - a rule that fails without consuming input returns `Err::Error` naming
//!   what it expected; once a construct is committed (its keyword matched),
//!   later failures are `Err::Failure` ([`required`]) so the error points at
//!   the real mistake instead of an outer alternative;
//! - [`GrammarError::or`] keeps the error that got furthest, merging the
//!   expectations of alternatives that failed at the same place.

use std::cell::Cell;

use nom::branch::alt;
use nom::combinator::opt;
use nom::error::ParseError as _;
use nom::{IResult, Input as _, Parser};
use nom_locate::LocatedSpan;

use crate::ast::*;

pub(crate) type Input<'a> = LocatedSpan<&'a str>;
type PResult<'a, T> = IResult<Input<'a>, T, GrammarError>;

/// Deepest nesting of expressions the parser accepts; deeper input is
/// rejected with an error instead of overflowing the stack.
pub const MAX_NESTING: usize = 128;

/// Words that cannot be used as bare identifiers (quote them to do so).
const RESERVED: &[&str] = &[
    "all", "and", "as", "between", "by", "case", "cast", "create", "distinct", "else", "end",
    "explain", "false", "for", "from", "group", "having", "in", "insert", "interval", "into", "is",
    "join", "like", "limit", "not", "null", "on", "or", "order", "select", "table", "then", "true",
    "union", "when", "where", "with",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrammarError {
    pub offset: usize,
    pub expected: Vec<String>,
    /// A complete message that replaces "expected ...".
    pub message: Option<String>,
}

impl GrammarError {
    fn expected(offset: usize, what: &str) -> Self {
        GrammarError {
            offset,
            expected: vec![what.to_string()],
            message: None,
        }
    }

    fn message(offset: usize, message: impl Into<String>) -> Self {
        GrammarError {
            offset,
            expected: vec![],
            message: Some(message.into()),
        }
    }
}

impl<'a> nom::error::ParseError<Input<'a>> for GrammarError {
    fn from_error_kind(input: Input<'a>, _kind: nom::error::ErrorKind) -> Self {
        GrammarError {
            offset: input.location_offset(),
            expected: vec![],
            message: None,
        }
    }

    fn append(_input: Input<'a>, _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }

    fn or(self, other: Self) -> Self {
        match self.offset.cmp(&other.offset) {
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Less => other,
            std::cmp::Ordering::Equal => {
                if self.message.is_some() {
                    return self;
                }
                if other.message.is_some() {
                    return other;
                }
                let mut expected = self.expected;
                for e in other.expected {
                    if !expected.contains(&e) {
                        expected.push(e);
                    }
                }
                GrammarError {
                    offset: self.offset,
                    expected,
                    message: None,
                }
            }
        }
    }
}

fn fail<'a, T>(i: Input<'a>, what: &str) -> PResult<'a, T> {
    Err(nom::Err::Error(GrammarError::expected(
        i.location_offset(),
        what,
    )))
}

fn failure<'a, T>(offset: usize, message: impl Into<String>) -> PResult<'a, T> {
    Err(nom::Err::Failure(GrammarError::message(offset, message)))
}

/// Commits to the result: a recoverable error becomes a failure.
fn required<T>(result: PResult<'_, T>) -> PResult<'_, T> {
    result.map_err(|e| match e {
        nom::Err::Error(e) => nom::Err::Failure(e),
        other => other,
    })
}

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` one nesting level deeper, failing past [`MAX_NESTING`].
fn nested<'a, T>(i: Input<'a>, f: impl FnOnce(Input<'a>) -> PResult<'a, T>) -> PResult<'a, T> {
    let depth = DEPTH.with(|d| d.get());
    if depth >= MAX_NESTING {
        return failure(
            i.location_offset(),
            format!("expression nested too deeply (the limit is {MAX_NESTING} levels)"),
        );
    }
    DEPTH.with(|d| d.set(depth + 1));
    let result = f(i);
    DEPTH.with(|d| d.set(depth));
    result
}

pub(crate) fn reset_depth() {
    DEPTH.with(|d| d.set(0));
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

/// Skips whitespace, `-- line` comments and `/* block */` comments.
pub(crate) fn skip_ws(mut i: Input<'_>) -> Input<'_> {
    loop {
        let frag = *i.fragment();
        let trimmed = frag.trim_start();
        let mut skip = frag.len() - trimmed.len();
        if trimmed.starts_with("--") {
            skip += trimmed.find('\n').unwrap_or(trimmed.len());
        } else if let Some(rest) = trimmed.strip_prefix("/*") {
            skip += 2 + rest.find("*/").map_or(rest.len(), |p| p + 2);
        } else {
            return i.take_from(skip);
        }
        i = i.take_from(skip);
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn span_of(start: Input<'_>, end: Input<'_>) -> Span {
    Span::new(start.location_offset(), end.location_offset())
}

/// A keyword, case-insensitive, not followed by an identifier character.
fn kw<'a>(word: &'static str) -> impl Fn(Input<'a>) -> PResult<'a, Span> {
    move |i: Input<'a>| {
        let i = skip_ws(i);
        let frag = *i.fragment();
        let matches = frag
            .get(..word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
            && !frag[word.len()..].starts_with(is_ident_char);
        if matches {
            let rest = i.take_from(word.len());
            Ok((rest, span_of(i, rest)))
        } else {
            fail(i, word)
        }
    }
}

/// True if the next token is the keyword `word`.
fn peek_kw(i: Input<'_>, word: &'static str) -> bool {
    kw(word)(i).is_ok()
}

/// A punctuation symbol.
fn sym<'a>(s: &'static str) -> impl Fn(Input<'a>) -> PResult<'a, Span> {
    move |i: Input<'a>| {
        let i = skip_ws(i);
        if i.fragment().starts_with(s) {
            let rest = i.take_from(s.len());
            Ok((rest, span_of(i, rest)))
        } else {
            fail(i, &format!("'{s}'"))
        }
    }
}

/// An identifier: bare (folded to lower case, not reserved) or quoted with
/// double quotes or backticks (case kept).
pub(crate) fn ident(i: Input<'_>) -> PResult<'_, Ident> {
    let i = skip_ws(i);
    let frag = *i.fragment();
    let start = i.location_offset();
    match frag.chars().next() {
        Some(q @ ('"' | '`')) => {
            let mut value = String::new();
            let mut chars = frag.char_indices().skip(1).peekable();
            while let Some((pos, c)) = chars.next() {
                if c == q {
                    if chars.peek().is_some_and(|&(_, n)| n == q) {
                        value.push(q);
                        chars.next();
                        continue;
                    }
                    let rest = i.take_from(pos + 1);
                    return Ok((
                        rest,
                        Ident {
                            value,
                            quoted: true,
                            span: span_of(i, rest),
                        },
                    ));
                }
                value.push(c);
            }
            failure(start, "unterminated quoted identifier")
        }
        Some(c) if is_ident_start(c) => {
            let len = frag.find(|c: char| !is_ident_char(c)).unwrap_or(frag.len());
            let word = frag[..len].to_ascii_lowercase();
            if RESERVED.contains(&word.as_str()) {
                return fail(i, "identifier");
            }
            let rest = i.take_from(len);
            Ok((
                rest,
                Ident {
                    value: word,
                    quoted: false,
                    span: span_of(i, rest),
                },
            ))
        }
        _ => fail(i, "identifier"),
    }
}

/// A string literal `'...'` with `''` as an escaped quote.
fn string_lit(i: Input<'_>) -> PResult<'_, (String, Span)> {
    let i = skip_ws(i);
    let frag = *i.fragment();
    if !frag.starts_with('\'') {
        return fail(i, "string literal");
    }
    let mut value = String::new();
    let mut chars = frag.char_indices().skip(1).peekable();
    while let Some((pos, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().is_some_and(|&(_, n)| n == '\'') {
                value.push('\'');
                chars.next();
                continue;
            }
            let rest = i.take_from(pos + 1);
            return Ok((rest, (value, span_of(i, rest))));
        }
        value.push(c);
    }
    failure(i.location_offset(), "unterminated string literal")
}

/// A numeric literal: `42`, `4.2`, `.5`, `1e-3`.
fn number_lit(i: Input<'_>) -> PResult<'_, (String, Span)> {
    let i = skip_ws(i);
    let b = i.fragment().as_bytes();
    let mut n = 0;
    while n < b.len() && b[n].is_ascii_digit() {
        n += 1;
    }
    let int_digits = n;
    if n < b.len() && b[n] == b'.' && b.get(n + 1).is_some_and(u8::is_ascii_digit) {
        n += 1;
        while n < b.len() && b[n].is_ascii_digit() {
            n += 1;
        }
    } else if int_digits == 0 {
        return fail(i, "number");
    }
    if n < b.len() && (b[n] == b'e' || b[n] == b'E') {
        let mut m = n + 1;
        if m < b.len() && (b[m] == b'+' || b[m] == b'-') {
            m += 1;
        }
        if b.get(m).is_some_and(u8::is_ascii_digit) {
            while m < b.len() && b[m].is_ascii_digit() {
                m += 1;
            }
            n = m;
        }
    }
    if b.get(n).is_some_and(|&c| is_ident_char(c as char)) {
        return fail(i, "number");
    }
    let rest = i.take_from(n);
    Ok((rest, (i.fragment()[..n].to_string(), span_of(i, rest))))
}

fn integer(i: Input<'_>) -> PResult<'_, (u64, Span)> {
    let (rest, (text, span)) = number_lit(i)?;
    match text.parse::<u64>() {
        Ok(v) => Ok((rest, (v, span))),
        Err(_) => fail(skip_ws(i), "integer"),
    }
}

/// `item (, item)*`: after a comma another item is required, so an error
/// inside it is reported where it happened.
fn comma_list1<'a, T>(
    mut item: impl FnMut(Input<'a>) -> PResult<'a, T>,
) -> impl FnMut(Input<'a>) -> PResult<'a, Vec<T>> {
    move |i| {
        let (mut rest, first) = item(i)?;
        let mut out = vec![first];
        while let Ok((r, _)) = sym(",")(rest) {
            let (r, next) = required(item(r))?;
            out.push(next);
            rest = r;
        }
        Ok((rest, out))
    }
}

// ---------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------

fn expr_at(kind: ExprKind, span: Span) -> Expr {
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
        let (rest, null) = required(kw("NULL")(rest))?;
        let span = left.span.union(null);
        let kind = ExprKind::IsNull {
            expr: Box::new(left),
            negated: not.is_some(),
        };
        return Ok((rest, expr_at(kind, span)));
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
    primary(i)
}

fn primary(i: Input<'_>) -> PResult<'_, Expr> {
    let start = skip_ws(i);
    let result = alt((
        literal,
        case_expr,
        cast_expr,
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

/// The argument list of a call, after `name(`.
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
    let (rest, end) = required(sym(")")(rest))?;
    let span = name.span.union(end);
    let kind = ExprKind::Function {
        name,
        args,
        star,
        distinct: distinct.is_some(),
    };
    Ok((rest, expr_at(kind, span)))
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
        "timestamp" => {
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
                     DOUBLE, DECIMAL(p, s), VARCHAR, BYTES, DATE or TIMESTAMP(p))",
                    name.value
                ),
            );
        }
    };
    Ok((
        rest,
        DataType {
            kind,
            span: span_of(start, rest),
        },
    ))
}

// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------

fn select_item(i: Input<'_>) -> PResult<'_, SelectItem> {
    if let Ok((rest, span)) = sym("*")(i) {
        return Ok((rest, SelectItem::Wildcard(span)));
    }
    let (rest, e) = expr(i)?;
    let (rest, alias) = alias(rest)?;
    Ok((rest, SelectItem::Expr { expr: e, alias }))
}

/// `[AS] name`.
fn alias(i: Input<'_>) -> PResult<'_, Option<Ident>> {
    if let Ok((rest, _)) = kw("AS")(i) {
        let (rest, name) = required(ident(rest))?;
        return Ok((rest, Some(name)));
    }
    match ident(i) {
        Ok((rest, name)) => Ok((rest, Some(name))),
        Err(nom::Err::Error(_)) => Ok((i, None)),
        Err(e) => Err(e),
    }
}

pub(crate) fn query(i: Input<'_>) -> PResult<'_, Query> {
    let (rest, start) = kw("SELECT")(i)?;
    let (rest, projection) = required(comma_list1(select_item).parse(rest))?;
    let (rest, _) = required(kw("FROM")(rest))?;
    let (rest, from) = required(table_ref(rest))?;
    let (rest, selection) = match kw("WHERE")(rest) {
        Ok((r, _)) => required(expr(r)).map(|(r, e)| (r, Some(e)))?,
        Err(_) => (rest, None),
    };
    let (rest, group_by) = match kw("GROUP")(rest) {
        Ok((r, _)) => {
            let (r, _) = required(kw("BY")(r))?;
            required(comma_list1(expr).parse(r))?
        }
        Err(_) => (rest, vec![]),
    };
    let (rest, having) = match kw("HAVING")(rest) {
        Ok((r, _)) => required(expr(r)).map(|(r, e)| (r, Some(e)))?,
        Err(_) => (rest, None),
    };
    let span = Span::new(start.start, last_token_end(i, rest));
    Ok((
        rest,
        Query {
            projection,
            from,
            selection,
            group_by,
            having,
            span,
        },
    ))
}

/// The end offset of the last token consumed between `start` and `rest`
/// (`rest` may sit after trailing whitespace that belongs to no token).
fn last_token_end(start: Input<'_>, rest: Input<'_>) -> usize {
    let consumed = &start.fragment()[..rest.location_offset() - start.location_offset()];
    start.location_offset() + consumed.trim_end().len()
}

fn window_kind(name: &Ident) -> Option<WindowKind> {
    match name.value.as_str() {
        "tumble" => Some(WindowKind::Tumble),
        _ => None,
    }
}

fn unsupported_window(name: &Ident) -> Option<String> {
    matches!(name.value.as_str(), "hop" | "session" | "cumulate")
        .then(|| format!("not supported yet: {} windows", name.value.to_uppercase()))
}

fn table_ref(i: Input<'_>) -> PResult<'_, TableRef> {
    let start = skip_ws(i);
    let (rest, kind) = if let Ok((rest, _)) = kw("TABLE")(i) {
        // Flink's form: TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))
        let (rest, _) = required(sym("(")(rest))?;
        let (rest, name) = required(ident(rest))?;
        let Some(kind) = window_kind(&name) else {
            let msg = unsupported_window(&name).unwrap_or_else(|| {
                format!("unknown window function '{}' (expected TUMBLE)", name.value)
            });
            return failure(name.span.start, msg);
        };
        let (rest, _) = required(sym("(")(rest))?;
        let (rest, _) = required(kw("TABLE")(rest))?;
        let (rest, table) = required(ident(rest))?;
        let (rest, _) = required(sym(",")(rest))?;
        let (rest, _) = required(kw("DESCRIPTOR")(rest))?;
        let (rest, _) = required(sym("(")(rest))?;
        let (rest, time_column) = required(ident(rest))?;
        let (rest, _) = required(sym(")")(rest))?;
        let (rest, args) = window_args(rest)?;
        let (rest, _) = required(sym(")")(rest))?;
        (
            rest,
            TableRefKind::Window(WindowTvf {
                kind,
                table,
                time_column,
                args,
            }),
        )
    } else {
        let (rest, name) = ident(i).map_err(|e| match e {
            nom::Err::Error(e) => {
                nom::Err::Error(e.or(GrammarError::expected(start.location_offset(), "TABLE")))
            }
            other => other,
        })?;
        if let Ok((rest, _)) = sym("(")(rest) {
            // The short form: TUMBLE(t, ts, size)
            let Some(kind) = window_kind(&name) else {
                let msg = unsupported_window(&name)
                    .unwrap_or_else(|| format!("unknown table function '{}'", name.value));
                return failure(name.span.start, msg);
            };
            let (rest, table) = required(ident(rest))?;
            let (rest, _) = required(sym(",")(rest))?;
            let (rest, time_column) = required(ident(rest))?;
            let (rest, args) = window_args(rest)?;
            (
                rest,
                TableRefKind::Window(WindowTvf {
                    kind,
                    table,
                    time_column,
                    args,
                }),
            )
        } else {
            (rest, TableRefKind::Named(name))
        }
    };
    let (rest, alias) = alias(rest)?;
    let span = Span::new(start.location_offset(), last_token_end(start, rest));
    Ok((rest, TableRef { kind, alias, span }))
}

/// `, arg [, arg]* )` — the interval arguments of a window function.
fn window_args(i: Input<'_>) -> PResult<'_, Vec<Expr>> {
    let (rest, _) = required(sym(",")(i))?;
    let (rest, args) = required(comma_list1(expr).parse(rest))?;
    let (rest, _) = required(sym(")")(rest))?;
    Ok((rest, args))
}

// ---------------------------------------------------------------------------
// Statements
// ---------------------------------------------------------------------------

fn column_list(i: Input<'_>) -> PResult<'_, (Vec<ColumnDef>, Option<Watermark>)> {
    let (mut rest, _) = sym("(")(i)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    loop {
        if let Ok((r, start)) = kw("WATERMARK")(rest) {
            let (r, _) = required(kw("FOR")(r))?;
            let (r, column) = required(ident(r))?;
            let (r, _) = required(kw("AS")(r))?;
            let (r, e) = required(expr(r))?;
            let span = start.union(e.span);
            if watermark.is_some() {
                return failure(start.start, "a source may declare only one WATERMARK");
            }
            watermark = Some(Watermark {
                column,
                expr: e,
                span,
            });
            rest = r;
        } else {
            let (r, name) = required(ident(rest))?;
            let (r, data_type) = required(data_type(r))?;
            let (r, _) = opt((kw("NOT"), kw("NULL"))).parse(r)?;
            let span = name.span.union(data_type.span);
            columns.push(ColumnDef {
                name,
                data_type,
                span,
            });
            rest = r;
        }
        match sym(",")(rest) {
            Ok((r, _)) => rest = r,
            Err(_) => break,
        }
    }
    let (rest, _) = required(sym(")")(rest))?;
    Ok((rest, (columns, watermark)))
}

/// A bare word, reserved or not (option keys such as `table` or `format`).
fn word(i: Input<'_>) -> PResult<'_, String> {
    let i = skip_ws(i);
    let frag = *i.fragment();
    if !frag.starts_with(is_ident_start) {
        return fail(i, "option name");
    }
    let len = frag.find(|c: char| !is_ident_char(c)).unwrap_or(frag.len());
    Ok((i.take_from(len), frag[..len].to_ascii_lowercase()))
}

fn option_key(i: Input<'_>) -> PResult<'_, String> {
    if let Ok((rest, (s, _))) = string_lit(i) {
        return Ok((rest, s));
    }
    let (mut rest, mut key) = word(i).map_err(|_| {
        nom::Err::Failure(GrammarError::expected(
            skip_ws(i).location_offset(),
            "option name",
        ))
    })?;
    while let Ok((r, _)) = sym(".")(rest) {
        let (r, part) = required(word(r))?;
        key.push('.');
        key.push_str(&part);
        rest = r;
    }
    Ok((rest, key))
}

fn option_value(i: Input<'_>) -> PResult<'_, String> {
    if let Ok((rest, (s, _))) = string_lit(i) {
        return Ok((rest, s));
    }
    if let Ok((rest, (n, _))) = number_lit(i) {
        return Ok((rest, n));
    }
    for word in ["TRUE", "FALSE"] {
        if let Ok((rest, _)) = kw(word)(i) {
            return Ok((rest, word.to_ascii_lowercase()));
        }
    }
    match ident(i) {
        Ok((rest, id)) => Ok((rest, id.value)),
        Err(_) => fail(skip_ws(i), "option value (a string, number or identifier)"),
    }
}

fn with_options(i: Input<'_>) -> PResult<'_, Vec<SqlOption>> {
    let (rest, _) = kw("WITH")(i)?;
    let (rest, _) = required(sym("(")(rest))?;
    let option = |i| {
        let start = skip_ws(i);
        let (r, key) = option_key(i)?;
        let (r, _) = required(sym("=")(r))?;
        let (r, value) = required(option_value(r))?;
        Ok((
            r,
            SqlOption {
                key,
                value,
                span: span_of(start, r),
            },
        ))
    };
    let (rest, options) = required(comma_list1(option).parse(rest))?;
    let (rest, _) = required(sym(")")(rest))?;
    Ok((rest, options))
}

fn create(i: Input<'_>) -> PResult<'_, StatementKind> {
    let (rest, _) = kw("CREATE")(i)?;
    if let Ok((rest, _)) = alt((kw("SOURCE"), kw("TABLE"))).parse(rest) {
        let (rest, name) = required(ident(rest))?;
        let (rest, (columns, watermark)) = required(column_list(rest))?;
        let (rest, options) = required(with_options(rest))?;
        return Ok((
            rest,
            StatementKind::CreateSource(CreateSource {
                name,
                columns,
                watermark,
                options,
            }),
        ));
    }
    if let Ok((rest, _)) = kw("SINK")(rest) {
        let (rest, name) = required(ident(rest))?;
        let (rest, columns) = match column_list(rest) {
            Ok((r, (cols, None))) => (r, Some(cols)),
            Ok((_, (_, Some(w)))) => {
                return failure(w.span.start, "a sink cannot declare a WATERMARK");
            }
            Err(nom::Err::Error(_)) => (rest, None),
            Err(e) => return Err(e),
        };
        let (rest, options) = required(with_options(rest))?;
        let (rest, query) = match kw("AS")(rest) {
            Ok((r, _)) => required(query(r)).map(|(r, q)| (r, Some(q)))?,
            Err(_) => (rest, None),
        };
        return Ok((
            rest,
            StatementKind::CreateSink(CreateSink {
                name,
                columns,
                options,
                query,
            }),
        ));
    }
    required(fail(skip_ws(rest), "SOURCE, TABLE or SINK"))
}

fn insert(i: Input<'_>) -> PResult<'_, StatementKind> {
    let (rest, _) = kw("INSERT")(i)?;
    let (rest, _) = required(kw("INTO")(rest))?;
    let (rest, target) = required(ident(rest))?;
    let (rest, query) = required(query(rest))?;
    Ok((rest, StatementKind::Insert(Insert { target, query })))
}

fn explain(i: Input<'_>) -> PResult<'_, StatementKind> {
    let (rest, _) = kw("EXPLAIN")(i)?;
    let (rest, inner) = required(statement(rest))?;
    Ok((rest, StatementKind::Explain(Box::new(inner))))
}

pub(crate) fn statement(i: Input<'_>) -> PResult<'_, Statement> {
    let start = skip_ws(i);
    let (rest, kind) = alt((create, insert, explain, |i| {
        query(i).map(|(r, q)| (r, StatementKind::Query(q)))
    }))
    .parse(i)
    .map_err(|e| match e {
        nom::Err::Error(err) if err.offset == start.location_offset() => {
            nom::Err::Error(GrammarError::expected(
                err.offset,
                "a statement (CREATE, INSERT, SELECT or EXPLAIN)",
            ))
        }
        other => other,
    })?;
    let span = Span::new(start.location_offset(), last_token_end(start, rest));
    Ok((rest, Statement { kind, span }))
}

/// A whole file: statements separated by `;`.
pub(crate) fn statements(i: Input<'_>) -> PResult<'_, Vec<Statement>> {
    let mut out = Vec::new();
    let mut rest = i;
    loop {
        while let Ok((r, _)) = sym(";")(rest) {
            rest = r;
        }
        let at = skip_ws(rest);
        if at.fragment().is_empty() {
            return Ok((at, out));
        }
        let (r, stmt) = required(statement(at))?;
        out.push(stmt);
        let at = skip_ws(r);
        if at.fragment().is_empty() {
            return Ok((at, out));
        }
        let (r, _) = required(sym(";")(at))?;
        rest = r;
    }
}
