//! Parse errors and the caret renderer shared by every layer that reports a
//! position in SQL text.

use crate::ast::Span;

/// A syntax error: where it happened and what the grammar expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
    pub span: Span,
}

/// A 1-based line and column (in characters) of a byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

/// Converts a byte offset of `source` to a 1-based line and column.
pub fn line_col(source: &str, offset: usize) -> LineCol {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    LineCol { line, column }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Renders `message` pointing at `span` of `source`:
///
/// ```text
/// error: expected expression, found end of input
///  --> query.sql:3:22
///   |
/// 3 | SELECT a FROM t WHERE
///   |                      ^
/// ```
pub fn render_diagnostic(source: &str, origin: &str, span: Span, message: &str) -> String {
    let LineCol { line, column } = line_col(source, span.start);
    let line_text = source.lines().nth(line - 1).unwrap_or("");
    let gutter = line.to_string().len();
    let pad = " ".repeat(gutter);
    // Underline the span within this line (at least one caret).
    let line_start = source[..floor_char_boundary(source, span.start.min(source.len()))]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line_end = line_start + line_text.len();
    let end = span.end.clamp(span.start, line_end.max(span.start));
    let width = source
        .get(span.start.min(source.len())..end.min(source.len()))
        .map_or(1, |s| s.chars().count().max(1));
    let indent: String = line_text
        .chars()
        .take(column - 1)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!(
        "error: {message}\n{pad}--> {origin}:{line}:{column}\n{pad} |\n{line} | {line_text}\n{pad} | {indent}{carets}\n",
        carets = "^".repeat(width)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "SELECT a\nFROM t\nWHERE";
        assert_eq!(line_col(src, 0), LineCol { line: 1, column: 1 });
        assert_eq!(line_col(src, 9), LineCol { line: 2, column: 1 });
        assert_eq!(line_col(src, src.len()), LineCol { line: 3, column: 6 });
    }

    #[test]
    fn caret_points_at_span() {
        let src = "SELECT a\nFROM tt WHERE";
        let out = render_diagnostic(src, "q.sql", Span::new(14, 16), "unknown table");
        assert_eq!(
            out,
            "error: unknown table\n --> q.sql:2:6\n  |\n2 | FROM tt WHERE\n  |      ^^\n"
        );
    }
}
