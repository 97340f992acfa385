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

mod expr;
mod query;
mod statement;

use std::cell::Cell;

use nom::error::ParseError as _;
use nom::{IResult, Input as _};
use nom_locate::LocatedSpan;

use crate::ast::*;

pub(crate) use expr::expr;
pub(crate) use statement::{statements, statements_lenient};

pub(crate) type Input<'a> = LocatedSpan<&'a str>;
pub(super) type PResult<'a, T> = IResult<Input<'a>, T, GrammarError>;

/// Deepest nesting of expressions the parser accepts; deeper input is
/// rejected with an error instead of overflowing the stack.
pub const MAX_NESTING: usize = 128;

/// Words that cannot be used as bare identifiers (quote them to do so).
const RESERVED: &[&str] = &[
    "all", "and", "as", "between", "by", "case", "cast", "create", "distinct", "else", "end",
    "explain", "false", "for", "from", "group", "having", "ilike", "in", "insert", "interval",
    "into", "is", "join", "like", "limit", "not", "null", "on", "or", "order", "select", "table",
    "then", "true", "union", "when", "where", "with",
];

/// One thing the grammar would have accepted. Static, so that failing an
/// alternative (which happens at nearly every token) allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expected {
    /// A keyword or a description (`SELECT`, `expression`).
    Word(&'static str),
    /// Punctuation, shown quoted (`')'`).
    Symbol(&'static str),
}

impl Expected {
    pub(crate) fn describe(self) -> String {
        match self {
            Expected::Word(w) => w.to_string(),
            Expected::Symbol(s) => format!("'{s}'"),
        }
    }
}

impl From<&'static str> for Expected {
    fn from(w: &'static str) -> Self {
        Expected::Word(w)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrammarError {
    pub offset: usize,
    /// The first expectation inline; more only when alternatives merge.
    pub first: Option<Expected>,
    pub more: Vec<Expected>,
    /// A complete message that replaces "expected ...".
    pub message: Option<String>,
}

impl GrammarError {
    pub(crate) fn expected(offset: usize, what: impl Into<Expected>) -> Self {
        GrammarError {
            offset,
            first: Some(what.into()),
            more: Vec::new(),
            message: None,
        }
    }

    fn message(offset: usize, message: impl Into<String>) -> Self {
        GrammarError {
            offset,
            first: None,
            more: Vec::new(),
            message: Some(message.into()),
        }
    }

    /// Every expectation, in the order the alternatives were tried.
    pub(crate) fn expectations(&self) -> impl Iterator<Item = Expected> + '_ {
        self.first.into_iter().chain(self.more.iter().copied())
    }
}

impl<'a> nom::error::ParseError<Input<'a>> for GrammarError {
    fn from_error_kind(input: Input<'a>, _kind: nom::error::ErrorKind) -> Self {
        GrammarError {
            offset: input.location_offset(),
            first: None,
            more: Vec::new(),
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
                let mut merged = self;
                for e in other.expectations() {
                    if !merged.expectations().any(|x| x == e) {
                        if merged.first.is_none() {
                            merged.first = Some(e);
                        } else {
                            merged.more.push(e);
                        }
                    }
                }
                merged
            }
        }
    }
}

pub(super) fn fail<'a, T>(i: Input<'a>, what: impl Into<Expected>) -> PResult<'a, T> {
    Err(nom::Err::Error(GrammarError::expected(
        i.location_offset(),
        what,
    )))
}

pub(super) fn failure<'a, T>(offset: usize, message: impl Into<String>) -> PResult<'a, T> {
    Err(nom::Err::Failure(GrammarError::message(offset, message)))
}

/// Commits to the result: a recoverable error becomes a failure.
pub(super) fn required<T>(result: PResult<'_, T>) -> PResult<'_, T> {
    result.map_err(|e| match e {
        nom::Err::Error(e) => nom::Err::Failure(e),
        other => other,
    })
}

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` one nesting level deeper, failing past [`MAX_NESTING`].
pub(super) fn nested<'a, T>(
    i: Input<'a>,
    f: impl FnOnce(Input<'a>) -> PResult<'a, T>,
) -> PResult<'a, T> {
    let depth = DEPTH.with(|d| d.get());
    if depth >= MAX_NESTING {
        return failure(
            i.location_offset(),
            format!("expression nested too deeply (the limit is {MAX_NESTING} levels)"),
        );
    }
    DEPTH.with(|d| d.set(depth + 1));
    // Deep (but allowed) nesting must not overflow a small thread stack:
    // grow it on the heap when less than 64 KiB is left.
    let result = stacker::maybe_grow(64 * 1024, 1024 * 1024, || f(i));
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

pub(super) fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

pub(super) fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub(super) fn span_of(start: Input<'_>, end: Input<'_>) -> Span {
    Span::new(start.location_offset(), end.location_offset())
}

/// A keyword, case-insensitive, not followed by an identifier character.
pub(super) fn kw<'a>(word: &'static str) -> impl Fn(Input<'a>) -> PResult<'a, Span> {
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
pub(super) fn peek_kw(i: Input<'_>, word: &'static str) -> bool {
    kw(word)(i).is_ok()
}

/// A punctuation symbol.
pub(super) fn sym<'a>(s: &'static str) -> impl Fn(Input<'a>) -> PResult<'a, Span> {
    move |i: Input<'a>| {
        let i = skip_ws(i);
        if i.fragment().starts_with(s) {
            let rest = i.take_from(s.len());
            Ok((rest, span_of(i, rest)))
        } else {
            fail(i, Expected::Symbol(s))
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
pub(super) fn string_lit(i: Input<'_>) -> PResult<'_, (String, Span)> {
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
pub(super) fn number_lit(i: Input<'_>) -> PResult<'_, (String, Span)> {
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

pub(super) fn integer(i: Input<'_>) -> PResult<'_, (u64, Span)> {
    let (rest, (text, span)) = number_lit(i)?;
    match text.parse::<u64>() {
        Ok(v) => Ok((rest, (v, span))),
        Err(_) => fail(skip_ws(i), "integer"),
    }
}

/// `item (, item)*`: after a comma another item is required, so an error
/// inside it is reported where it happened.
pub(super) fn comma_list1<'a, T>(
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

/// An optional `(name, ...)` list: a view's or an alias's column names.
pub(super) fn column_names(i: Input<'_>) -> PResult<'_, Vec<Ident>> {
    match sym("(")(i) {
        Ok((r, _)) => {
            let (r, cols) = required(comma_list1(ident)(r))?;
            let (r, _) = required(sym(")")(r))?;
            Ok((r, cols))
        }
        Err(_) => Ok((i, vec![])),
    }
}
