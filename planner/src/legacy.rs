//! Flink's legacy group windows, rewritten to the window TVF they mean:
//!
//! ```text
//!   SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND), COUNT(*)
//!   FROM t GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)
//! ≡ SELECT k, window_start, COUNT(*)
//!   FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))
//!   GROUP BY k, window_start, window_end
//! ```
//!
//! `HOP(ts, slide, size)` and `SESSION(ts, gap)` likewise (a session is
//! partitioned by the other keys); `X_START`, `X_END` and `X_ROWTIME` become
//! `window_start`, `window_end` and `window_time`.

use eddy_parser::ast::{self, ExprKind, SelectItem, TableRefKind, WindowKind};

use crate::error::{PlanError, Result};
use crate::plan::{WINDOW_END, WINDOW_START, WINDOW_TIME};

fn group_window(e: &ast::Expr) -> Option<(WindowKind, &ast::Function)> {
    let ExprKind::Function(f) = &e.kind else {
        return None;
    };
    let kind = match f.name.value.to_ascii_lowercase().as_str() {
        "tumble" => WindowKind::Tumble,
        "hop" => WindowKind::Hop,
        "session" => WindowKind::Session,
        _ => return None,
    };
    Some((kind, f))
}

fn column(name: &str, span: ast::Span) -> ast::Expr {
    ast::Expr {
        kind: ExprKind::Identifier(vec![ast::Ident {
            value: name.to_string(),
            quoted: false,
            span,
        }]),
        span,
    }
}

/// A legacy group window over a subquery reads it as this `WITH` query.
pub(crate) type Derived = (String, ast::Query, Vec<ast::Ident>);

/// The query with its legacy group window rewritten, or `None` if it has
/// none; over a subquery, also that subquery, which the rewritten query
/// reads by name.
pub(crate) fn rewrite_group_window(
    q: &ast::Select,
) -> Result<Option<(ast::Select, Option<Derived>)>> {
    let mut windows = q
        .group_by
        .iter()
        .filter_map(|g| group_window(g).map(|w| (g, w)));
    let Some((call, (kind, f))) = windows.next() else {
        return Ok(None);
    };
    if let Some((second, _)) = windows.next() {
        return Err(PlanError::user(
            "GROUP BY takes one group window function",
            second.span,
        ));
    }
    let (table, derived) = match q.from.as_slice() {
        [t] => match &t.kind {
            TableRefKind::Named(name) => (name.clone(), None),
            TableRefKind::Subquery(sub) => {
                let alias = t.alias.as_ref();
                let name = alias.map_or_else(
                    || ast::Ident {
                        value: "subquery".into(),
                        quoted: true,
                        span: t.span,
                    },
                    |a| a.name.clone(),
                );
                let columns = alias.map(|a| a.columns.clone()).unwrap_or_default();
                let derived = (name.value.clone(), sub.as_ref().clone(), columns);
                (name, Some(derived))
            }
            _ => {
                return Err(PlanError::not_supported(
                    format!(
                        "{}(...) in GROUP BY over a window table function (use one or the other)",
                        kind.as_str()
                    ),
                    call.span,
                ));
            }
        },
        _ => {
            return Err(PlanError::not_supported(
                format!(
                    "{}(...) in GROUP BY over a join (name the join in a view or a subquery that keeps a time attribute)",
                    kind.as_str()
                ),
                call.span,
            ));
        }
    };
    let time_column = match f.args.first().map(|a| &a.kind) {
        Some(ExprKind::Identifier(parts)) => parts[parts.len() - 1].clone(),
        _ => {
            return Err(PlanError::user(
                format!(
                    "{}(...) takes the time column first, then its intervals",
                    kind.as_str()
                ),
                call.span,
            ));
        }
    };
    let keys: Vec<&ast::Expr> = q.group_by.iter().filter(|g| *g != call).collect();
    // A legacy session window is one per group key. The session operator
    // keeps sessions per GROUP BY key, so naming the keys as partitions is
    // only needed (and only possible) when they are all columns.
    let mut partition_by = Vec::new();
    if kind == WindowKind::Session {
        for k in &keys {
            match &k.kind {
                ExprKind::Identifier(parts) => partition_by.push(parts[parts.len() - 1].clone()),
                _ => {
                    partition_by.clear();
                    break;
                }
            }
        }
    }
    let mut out = q.clone();
    if derived.is_some() {
        out.from[0].alias = Some(ast::TableAlias {
            name: table.clone(),
            columns: Vec::new(),
        });
    }
    out.from[0].kind = TableRefKind::Window(ast::WindowTvf {
        kind,
        table,
        partition_by,
        time_column,
        args: f.args[1..].to_vec(),
        flink_form: true,
    });
    out.group_by = keys.into_iter().cloned().collect();
    out.group_by.push(column(WINDOW_START, call.span));
    out.group_by.push(column(WINDOW_END, call.span));
    let prefix = kind.as_str().to_ascii_lowercase();
    let rewrite = |e: &mut ast::Expr| replace_auxiliary(e, &prefix);
    for item in &mut out.projection {
        if let SelectItem::Expr { expr, .. } = item {
            rewrite(expr);
        }
    }
    if let Some(h) = &mut out.having {
        rewrite(h);
    }
    Ok(Some((out, derived)))
}

/// `X_START(..)`, `X_END(..)`, `X_ROWTIME(..)` of the query's window kind
/// become the window columns.
fn replace_auxiliary(e: &mut ast::Expr, prefix: &str) {
    if let ExprKind::Function(f) = &e.kind {
        let name = f.name.value.to_ascii_lowercase();
        let column_name = match name.strip_prefix(prefix) {
            Some("_start") => Some(WINDOW_START),
            Some("_end") => Some(WINDOW_END),
            Some("_rowtime") => Some(WINDOW_TIME),
            _ => None,
        };
        if let Some(c) = column_name {
            *e = column(c, e.span);
            return;
        }
    }
    for child in e.children_mut() {
        replace_auxiliary(child, prefix);
    }
}
