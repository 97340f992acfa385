//! Queries: `WITH`, `SELECT`, `FROM` with joins, subqueries and window
//! table functions, `UNION ALL`, `ORDER BY`, `LIMIT`.

use nom::Parser;
use nom::branch::alt;
use nom::combinator::opt;

use super::expr::expr;
use super::*;

/// Words that end a FROM item or a select item, so they are never taken as
/// an implicit alias (`FROM a LEFT JOIN b`, not `FROM a AS left`).
const NOT_AN_ALIAS: &[&str] = &[
    "inner",
    "left",
    "right",
    "full",
    "outer",
    "cross",
    "natural",
    "using",
    "window",
    "partition",
    "filter",
    "over",
];

fn select_item(i: Input<'_>) -> PResult<'_, SelectItem> {
    if let Ok((rest, span)) = sym("*")(i) {
        return Ok((rest, SelectItem::Wildcard { span }));
    }
    if let Ok((rest, (table, _, star))) = (ident, sym("."), sym("*")).parse(i) {
        let span = table.span.union(star);
        return Ok((rest, SelectItem::QualifiedWildcard { table, span }));
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
        Ok((_, name)) if !name.quoted && NOT_AN_ALIAS.contains(&name.value.as_str()) => {
            Ok((i, None))
        }
        Ok((rest, name)) => Ok((rest, Some(name))),
        Err(nom::Err::Error(_)) => Ok((i, None)),
        Err(e) => Err(e),
    }
}

/// `[AS] name [(col, ...)]` after a FROM item.
fn table_alias(i: Input<'_>) -> PResult<'_, Option<TableAlias>> {
    let (rest, name) = alias(i)?;
    let Some(name) = name else {
        return Ok((i, None));
    };
    let (rest, columns) = column_names(rest)?;
    Ok((rest, Some(TableAlias { name, columns })))
}

/// `expr [ASC|DESC] (, ...)*`
pub(super) fn order_by_list(i: Input<'_>) -> PResult<'_, Vec<OrderByExpr>> {
    comma_list1(|i| {
        let (r, e) = expr(i)?;
        let (r, asc) = opt(alt((kw("ASC").map(|_| true), kw("DESC").map(|_| false)))).parse(r)?;
        Ok((r, OrderByExpr { expr: e, asc }))
    })
    .parse(i)
}

/// A whole query: `[WITH ...] body [ORDER BY ...] [LIMIT n]`.
pub(crate) fn query(i: Input<'_>) -> PResult<'_, Query> {
    let start = skip_ws(i);
    let (rest, with) = match kw("WITH")(i) {
        Ok((r, _)) => required(comma_list1(cte).parse(r))?,
        Err(_) => (i, vec![]),
    };
    let (rest, body) = if with.is_empty() {
        set_expr(rest)?
    } else {
        required(set_expr(rest))?
    };
    let (rest, order_by) = match (kw("ORDER"), kw("BY")).parse(rest) {
        Ok((r, _)) => required(order_by_list(r))?,
        Err(_) => (rest, vec![]),
    };
    let (rest, limit) = match kw("LIMIT")(rest) {
        Ok((r, _)) => required(expr(r)).map(|(r, e)| (r, Some(e)))?,
        Err(_) => (rest, None),
    };
    let span = Span::new(start.location_offset(), last_token_end(start, rest));
    Ok((
        rest,
        Query {
            with,
            body,
            order_by,
            limit,
            span,
        },
    ))
}

/// `name [(cols)] AS (query)`.
fn cte(i: Input<'_>) -> PResult<'_, Cte> {
    let (rest, name) = ident(i)?;
    let (rest, columns) = column_names(rest)?;
    let (rest, _) = required(kw("AS")(rest))?;
    let (rest, _) = required(sym("(")(rest))?;
    let (rest, q) = required(nested(rest, query))?;
    let (rest, _) = required(sym(")")(rest))?;
    Ok((
        rest,
        Cte {
            alias: TableAlias { name, columns },
            query: q,
        },
    ))
}

/// `operand (UNION [ALL | DISTINCT] operand)*`.
fn set_expr(i: Input<'_>) -> PResult<'_, SetExpr> {
    let (mut rest, mut left) = set_operand(i)?;
    while let Ok((r, _)) = kw("UNION")(rest) {
        let (r, all) = match kw("ALL")(r) {
            Ok((r, _)) => (r, true),
            Err(_) => (kw("DISTINCT")(r).map_or(r, |(r, _)| r), false),
        };
        let (r, right) = required(set_operand(r))?;
        left = SetExpr::Union {
            left: Box::new(left),
            right: Box::new(right),
            all,
        };
        rest = r;
    }
    Ok((rest, left))
}

fn set_operand(i: Input<'_>) -> PResult<'_, SetExpr> {
    if let Ok((r, _)) = sym("(")(i) {
        let (r, q) = required(nested(r, query))?;
        let (r, _) = required(sym(")")(r))?;
        return Ok((r, SetExpr::Query(Box::new(q))));
    }
    if let Ok((r, v)) = values(i) {
        return Ok((r, SetExpr::Values(v)));
    }
    let (r, s) = select(i)?;
    Ok((r, SetExpr::Select(Box::new(s))))
}

/// `VALUES (a, b), (c, d)`.
fn values(i: Input<'_>) -> PResult<'_, Values> {
    let (rest, start) = kw("VALUES")(i)?;
    let row = |i| {
        let (r, _) = sym("(")(i)?;
        let (r, row) = required(comma_list1(expr).parse(r))?;
        let (r, _) = required(sym(")")(r))?;
        Ok((r, row))
    };
    let (rest, rows) = required(comma_list1(row).parse(rest))?;
    let end = last_token_end(skip_ws(i), rest);
    Ok((
        rest,
        Values {
            rows,
            span: Span::new(start.start, end),
        },
    ))
}

pub(crate) fn select(i: Input<'_>) -> PResult<'_, Select> {
    let (rest, start) = kw("SELECT")(i)?;
    let (rest, distinct) = match kw("DISTINCT")(rest) {
        Ok((r, _)) => (r, true),
        Err(_) => (kw("ALL")(rest).map_or(rest, |(r, _)| r), false),
    };
    let (rest, projection) = required(comma_list1(select_item).parse(rest))?;
    let (rest, _) = required(kw("FROM")(rest))?;
    let (rest, from) = required(comma_list1(table_with_joins).parse(rest))?;
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
        Select {
            distinct,
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
pub(super) fn last_token_end(start: Input<'_>, rest: Input<'_>) -> usize {
    let consumed = &start.fragment()[..rest.location_offset() - start.location_offset()];
    start.location_offset() + consumed.trim_end().len()
}

fn window_kind(name: &Ident) -> Option<WindowKind> {
    match name.value.as_str() {
        "tumble" => Some(WindowKind::Tumble),
        "hop" => Some(WindowKind::Hop),
        "session" => Some(WindowKind::Session),
        "cumulate" => Some(WindowKind::Cumulate),
        _ => None,
    }
}

/// The join operator before a FROM item: `[INNER] JOIN`, `LEFT [OUTER] JOIN`...
fn join_kind(i: Input<'_>) -> PResult<'_, JoinKind> {
    let outer = |kind: JoinKind| move |r| opt(kw("OUTER")).parse(r).map(|(r, _)| (r, kind));
    let (r, kind) = alt((
        kw("INNER").map(|_| JoinKind::Inner),
        (kw("LEFT"), |r| outer(JoinKind::Left)(r)).map(|(_, k)| k),
        (kw("RIGHT"), |r| outer(JoinKind::Right)(r)).map(|(_, k)| k),
        (kw("FULL"), |r| outer(JoinKind::Full)(r)).map(|(_, k)| k),
        kw("CROSS").map(|_| JoinKind::Cross),
    ))
    .parse(i)
    .unwrap_or((i, JoinKind::Inner));
    let (r, _) = kw("JOIN")(r)?;
    Ok((r, kind))
}

/// A FROM item followed by any joins.
fn table_with_joins(i: Input<'_>) -> PResult<'_, TableRef> {
    let start = skip_ws(i);
    let (mut rest, mut left) = table_factor(i)?;
    while let Ok((r, kind)) = join_kind(rest) {
        let (r, right) = required(table_factor(r))?;
        let (r, constraint) = if kind == JoinKind::Cross {
            (r, JoinConstraint::None)
        } else if let Ok((r, _)) = kw("ON")(r) {
            let (r, e) = required(expr(r))?;
            (r, JoinConstraint::On(e))
        } else if let Ok((r, _)) = kw("USING")(r) {
            let (r, _) = required(sym("(")(r))?;
            let (r, cols) = required(comma_list1(ident).parse(r))?;
            let (r, _) = required(sym(")")(r))?;
            (r, JoinConstraint::Using(cols))
        } else {
            return required(fail(skip_ws(r), "ON or USING"));
        };
        let span = Span::new(start.location_offset(), last_token_end(start, r));
        let join = Join {
            left,
            right,
            kind,
            constraint,
        };
        left = TableRef {
            kind: TableRefKind::Join(Box::new(join)),
            alias: None,
            for_system_time: None,
            span,
        };
        rest = r;
    }
    Ok((rest, left))
}

fn table_factor(i: Input<'_>) -> PResult<'_, TableRef> {
    let start = skip_ws(i);
    let (rest, kind) = if let Ok((rest, _)) = kw("TABLE")(i) {
        let (rest, tvf) = flink_window(rest)?;
        (rest, TableRefKind::Window(tvf))
    } else if let Ok((rest, _)) = sym("(")(i) {
        let (rest, q) = required(nested(rest, query))?;
        let (rest, _) = required(sym(")")(rest))?;
        (rest, TableRefKind::Subquery(Box::new(q)))
    } else {
        let (rest, name) = ident(i).map_err(|e| match e {
            nom::Err::Error(e) => {
                let at = start.location_offset();
                nom::Err::Error(
                    e.or(GrammarError::expected(at, "TABLE"))
                        .or(GrammarError::expected(at, "'('")),
                )
            }
            other => other,
        })?;
        if let Ok((rest, _)) = sym("(")(rest) {
            // The short form: TUMBLE(t, ts, size)
            let Some(kind) = window_kind(&name) else {
                return failure(
                    name.span.start,
                    format!("unknown table function '{}'", name.value),
                );
            };
            let (rest, table) = required(ident(rest))?;
            let (rest, _) = required(sym(",")(rest))?;
            let (rest, time_column) = required(ident(rest))?;
            let (rest, args) = window_args(rest)?;
            let tvf = WindowTvf {
                kind,
                table,
                partition_by: vec![],
                time_column,
                args,
                flink_form: false,
            };
            (rest, TableRefKind::Window(tvf))
        } else {
            (rest, TableRefKind::Named(name))
        }
    };
    // `FOR SYSTEM_TIME AS OF expr` (temporal joins).
    let (rest, for_system_time) =
        match (kw("FOR"), kw("SYSTEM_TIME"), kw("AS"), kw("OF")).parse(rest) {
            Ok((r, _)) => {
                let (r, e) = required(expr(r))?;
                (r, Some(e))
            }
            Err(_) => (rest, None),
        };
    let (rest, alias) = table_alias(rest)?;
    let span = Span::new(start.location_offset(), last_token_end(start, rest));
    Ok((
        rest,
        TableRef {
            kind,
            alias,
            for_system_time,
            span,
        },
    ))
}

/// After `TABLE`: `(F(TABLE t [PARTITION BY k, ...], DESCRIPTOR(ts), args))`.
fn flink_window(i: Input<'_>) -> PResult<'_, WindowTvf> {
    let (rest, _) = required(sym("(")(i))?;
    let (rest, name) = required(ident(rest))?;
    let Some(kind) = window_kind(&name) else {
        let msg = format!(
            "unknown window function '{}' (expected TUMBLE, HOP, SESSION or CUMULATE)",
            name.value
        );
        return failure(name.span.start, msg);
    };
    let (rest, _) = required(sym("(")(rest))?;
    let (rest, _) = required(kw("TABLE")(rest))?;
    let (rest, table) = required(ident(rest))?;
    let (mut rest, mut partition_by) = (rest, vec![]);
    if let Ok((r, _)) = (kw("PARTITION"), kw("BY")).parse(rest) {
        // Keys up to the `, DESCRIPTOR(...)` that follows them.
        let (r, first) = required(ident(r))?;
        partition_by.push(first);
        rest = r;
        while let Ok((r, _)) = sym(",")(rest) {
            if peek_kw(r, "DESCRIPTOR") {
                break;
            }
            let (r, key) = required(ident(r))?;
            partition_by.push(key);
            rest = r;
        }
    }
    let (rest, _) = required(sym(",")(rest))?;
    let (rest, _) = required(kw("DESCRIPTOR")(rest))?;
    let (rest, _) = required(sym("(")(rest))?;
    let (rest, time_column) = required(ident(rest))?;
    let (rest, _) = required(sym(")")(rest))?;
    let (rest, args) = window_args(rest)?;
    let (rest, _) = required(sym(")")(rest))?;
    Ok((
        rest,
        WindowTvf {
            kind,
            table,
            partition_by,
            time_column,
            args,
            flink_form: true,
        },
    ))
}

/// `, arg [, arg]* )` — the interval arguments of a window function.
fn window_args(i: Input<'_>) -> PResult<'_, Vec<Expr>> {
    let (rest, _) = required(sym(",")(i))?;
    let (rest, args) = required(comma_list1(expr).parse(rest))?;
    let (rest, _) = required(sym(")")(rest))?;
    Ok((rest, args))
}
