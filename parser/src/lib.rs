//! # eddy-parser
//!
//! Eddy's SQL dialect, parsed with [nom] into a spanned AST ([`ast`]).
//!
//! ```
//! let stmts = eddy_parser::parse_statements(
//!     "CREATE SOURCE s (a BIGINT) WITH (connector = 'nexmark'); SELECT a + 1 FROM s",
//! ).unwrap();
//! assert_eq!(stmts.len(), 2);
//! ```
//!
//! A syntax error is a [`ParseError`] with the span it refers to and a
//! message saying what was expected and what was found; render it for a
//! person with [`render_diagnostic`]:
//!
//! ```text
//! error: expected expression, found end of input
//!  --> q.sql:1:22
//!   |
//! 1 | SELECT a FROM t WHERE
//!   |                      ^
//! ```
//!
//! The crate depends on nothing else in the workspace.

pub mod ast;
mod display;
mod error;
mod grammar;

pub use error::{LineCol, ParseError, line_col, render_diagnostic};
pub use grammar::MAX_NESTING;

use ast::{Expr, Span, Statement};
use grammar::{GrammarError, Input};

/// Parses a file: statements separated by `;`. Stops at the first error.
pub fn parse_statements(sql: &str) -> Result<Vec<Statement>, ParseError> {
    run(sql, grammar::statements)
}

/// Parses a file, recovering after each syntax error at the next
/// statement: every statement that parses, and every error, in order.
pub fn parse_statements_lenient(sql: &str) -> (Vec<Statement>, Vec<ParseError>) {
    let (statements, errors) = grammar::statements_lenient(sql);
    (
        statements,
        errors.into_iter().map(|e| to_parse_error(sql, e)).collect(),
    )
}

/// Parses a single expression (the whole input).
pub fn parse_expr(sql: &str) -> Result<Expr, ParseError> {
    run(sql, grammar::expr)
}

fn run<'a, T>(
    sql: &'a str,
    rule: impl FnOnce(Input<'a>) -> nom::IResult<Input<'a>, T, GrammarError>,
) -> Result<T, ParseError> {
    grammar::reset_depth();
    let input = Input::new(sql);
    match rule(input) {
        Ok((rest, value)) => {
            let rest = grammar::skip_ws(rest);
            if rest.fragment().is_empty() {
                Ok(value)
            } else {
                let offset = rest.location_offset();
                Err(to_parse_error(
                    sql,
                    GrammarError::expected(offset, "end of input"),
                ))
            }
        }
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(to_parse_error(sql, e)),
        Err(nom::Err::Incomplete(_)) => Err(ParseError {
            message: "unexpected end of input".into(),
            span: Span::new(sql.len(), sql.len()),
        }),
    }
}

/// Turns the grammar's furthest failure into a message:
/// `expected X, Y or Z, found 'tok'`.
fn to_parse_error(sql: &str, e: GrammarError) -> ParseError {
    let (found, len) = token_at(sql, e.offset);
    let message = match e.message.clone() {
        Some(m) => m,
        None => {
            let expected: Vec<String> = e.expectations().map(|x| x.describe()).collect();
            let expected = match expected.as_slice() {
                [] => "something else".to_string(),
                [one] => one.clone(),
                [init @ .., last] => format!("{} or {last}", init.join(", ")),
            };
            format!("expected {expected}, found {found}")
        }
    };
    ParseError {
        message,
        span: Span::new(e.offset, e.offset + len),
    }
}

/// Describes the token at `offset` for an error message, and its length.
fn token_at(sql: &str, offset: usize) -> (String, usize) {
    let rest = sql.get(offset..).unwrap_or("");
    let Some(first) = rest.chars().next() else {
        return ("end of input".into(), 0);
    };
    let len = if first.is_ascii_alphanumeric() || first == '_' {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    (format!("'{}'", &rest[..len]), len)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
