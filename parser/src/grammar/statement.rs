//! Statements: DDL (`CREATE`, `DROP`), `INSERT`, queries, `EXPLAIN`,
//! `SHOW`, `DESCRIBE`, `SET`, and the file-level statement list.

use nom::branch::alt;
use nom::combinator::opt;
use nom::{Input as _, Parser};

use super::expr::{data_type, expr};
use super::query::{last_token_end, query};
use super::*;

/// The columns of a CREATE statement, with an optional watermark and
/// primary key.
fn column_list(i: Input<'_>) -> PResult<'_, (Vec<ColumnDef>, Option<Watermark>, Vec<Ident>)> {
    let (mut rest, _) = sym("(")(i)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    let mut primary_key = Vec::new();
    loop {
        if let Ok((r, start)) = (kw("PRIMARY"), kw("KEY"))
            .parse(rest)
            .map(|(r, (s, _))| (r, s))
        {
            let (r, _) = required(sym("(")(r))?;
            let (r, cols) = required(comma_list1(ident).parse(r))?;
            let (r, _) = required(sym(")")(r))?;
            let (r, _) = opt((kw("NOT"), kw("ENFORCED"))).parse(r)?;
            if !primary_key.is_empty() {
                return failure(start.start, "a table may declare only one PRIMARY KEY");
            }
            primary_key = cols;
            rest = r;
        } else if let Ok((r, start)) = kw("WATERMARK")(rest) {
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
            let (r, kind, span) = match kw("AS")(r) {
                Ok((r, _)) => {
                    let (r, e) = required(expr(r))?;
                    let span = name.span.union(e.span);
                    (r, ColumnKind::Computed(e), span)
                }
                Err(_) => {
                    let (r, data_type) = required(data_type(r))?;
                    match kw("METADATA")(r) {
                        // `name TYPE METADATA [FROM 'key'] [VIRTUAL]`.
                        Ok((r, at)) => {
                            let (r, key) = match kw("FROM")(r) {
                                Ok((r, _)) => {
                                    let (r, (key, _)) = required(string_lit(r))?;
                                    (r, Some(key))
                                }
                                Err(_) => (r, None),
                            };
                            let (r, is_virtual) = match kw("VIRTUAL")(r) {
                                Ok((r, _)) => (r, true),
                                Err(_) => (r, false),
                            };
                            let span = name.span.union(at);
                            let kind = ColumnKind::Metadata {
                                data_type,
                                key,
                                is_virtual,
                            };
                            (r, kind, span)
                        }
                        Err(_) => {
                            let span = name.span.union(data_type.span);
                            (r, ColumnKind::Physical(data_type), span)
                        }
                    }
                }
            };
            // Flink allows a description: `name TYPE COMMENT '...'`.
            let r = match kw("COMMENT")(r) {
                Ok((r, _)) => required(string_lit(r))?.0,
                Err(_) => r,
            };
            columns.push(ColumnDef { name, kind, span });
            rest = r;
        }
        match sym(",")(rest) {
            Ok((r, _)) => rest = r,
            Err(_) => break,
        }
    }
    let (rest, _) = required(sym(")")(rest))?;
    Ok((rest, (columns, watermark, primary_key)))
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
        let key_span = span_of(start, r);
        let (r, _) = required(sym("=")(r))?;
        let value_start = skip_ws(r);
        let (r, value) = required(option_value(r))?;
        Ok((
            r,
            SqlOption {
                key,
                value,
                span: span_of(start, r),
                key_span,
                value_span: span_of(value_start, r),
            },
        ))
    };
    let (rest, options) = required(comma_list1(option).parse(rest))?;
    let (rest, _) = required(sym(")")(rest))?;
    Ok((rest, options))
}

/// `IF NOT EXISTS`, if there.
fn if_not_exists(i: Input<'_>) -> PResult<'_, bool> {
    match (kw("IF"), kw("NOT"), kw("EXISTS")).parse(i) {
        Ok((r, _)) => Ok((r, true)),
        Err(_) => Ok((i, false)),
    }
}

/// `PARTITIONED BY (a, b)`, if there.
fn partitioned_by(i: Input<'_>) -> PResult<'_, Vec<Ident>> {
    match (kw("PARTITIONED"), kw("BY")).parse(i) {
        Ok((r, _)) => required(column_names(r)),
        Err(_) => Ok((i, Vec::new())),
    }
}

/// `SOURCE name (...) WITH (...)` or `TABLE name (...) [PARTITIONED BY
/// (...)] WITH (...)`, after `CREATE [TEMPORARY]`.
fn create_source(i: Input<'_>) -> PResult<'_, StatementKind> {
    let (rest, table) = alt((kw("SOURCE").map(|_| false), kw("TABLE").map(|_| true))).parse(i)?;
    let (rest, if_not_exists) = if_not_exists(rest)?;
    let (rest, name) = required(ident(rest))?;
    let (rest, (columns, watermark, primary_key)) = required(column_list(rest))?;
    let rest = match kw("COMMENT")(rest) {
        Ok((r, _)) => required(string_lit(r))?.0,
        Err(_) => rest,
    };
    let (rest, partitioned_by) = partitioned_by(rest)?;
    let (rest, options) = required(with_options(rest))?;
    let source = CreateSource {
        name,
        table,
        if_not_exists,
        columns,
        partitioned_by,
        watermark,
        primary_key,
        options,
    };
    Ok((rest, StatementKind::CreateSource(source)))
}

fn create(i: Input<'_>) -> PResult<'_, StatementKind> {
    let (rest, _) = kw("CREATE")(i)?;
    // Flink's TEMPORARY objects live as long as the session, as all of
    // Eddy's do.
    let rest = kw("TEMPORARY")(rest).map_or(rest, |(r, _)| r);
    match create_source(rest) {
        Err(nom::Err::Error(_)) => {}
        done => return done,
    }
    let rest = kw("SYSTEM")(rest).map_or(rest, |(r, _)| r);
    if let Ok((rest, _)) = kw("FUNCTION")(rest) {
        let (rest, _) = if_not_exists(rest)?;
        let (rest, name) = required(ident(rest))?;
        let (rest, _) = required(kw("AS")(rest))?;
        let start = skip_ws(rest);
        let (rest, (class, _)) = required(string_lit(rest))?;
        let class_span = span_of(start, rest);
        let rest = match kw("LANGUAGE")(rest) {
            Ok((r, _)) => required(ident(r))?.0,
            Err(_) => rest,
        };
        let f = CreateFunction {
            name,
            class,
            class_span,
        };
        return Ok((rest, StatementKind::CreateFunction(f)));
    }
    if let Ok((rest, _)) = kw("SINK")(rest) {
        let (rest, name) = required(ident(rest))?;
        let (rest, columns) = match column_list(rest) {
            Ok((r, (cols, None, _))) => (r, Some(cols)),
            Ok((_, (_, Some(w), _))) => {
                return failure(w.span.start, "a sink cannot declare a WATERMARK");
            }
            Err(nom::Err::Error(_)) => (rest, None),
            Err(e) => return Err(e),
        };
        let (rest, partitioned_by) = partitioned_by(rest)?;
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
                partitioned_by,
                options,
                query,
            }),
        ));
    }
    let (rest, materialized) = match kw("MATERIALIZED")(rest) {
        Ok((r, _)) => (r, true),
        Err(_) => (rest, false),
    };
    if let Ok((rest, _)) = kw("VIEW")(rest) {
        let (rest, if_not_exists) = if_not_exists(rest)?;
        let (rest, name) = required(ident(rest))?;
        let (rest, columns) = column_names(rest)?;
        let (rest, _) = required(kw("AS")(rest))?;
        let (rest, query) = required(query(rest))?;
        return Ok((
            rest,
            StatementKind::CreateView(CreateView {
                name,
                materialized,
                if_not_exists,
                columns,
                query,
            }),
        ));
    }
    let expected = if materialized {
        "VIEW"
    } else {
        "SOURCE, TABLE, SINK, VIEW or MATERIALIZED VIEW"
    };
    required(fail(skip_ws(rest), expected))
}

/// `INSERT INTO t [(cols)] query`.
fn insert_into(i: Input<'_>) -> PResult<'_, Insert> {
    let start = skip_ws(i);
    let (rest, _) = kw("INSERT")(i)?;
    let (rest, _) = required(kw("INTO")(rest))?;
    let (rest, target) = required(ident(rest))?;
    let (rest, columns) = column_names(rest)?;
    let (rest, query) = required(query(rest))?;
    let span = Span::new(start.location_offset(), last_token_end(start, rest));
    Ok((
        rest,
        Insert {
            target,
            columns,
            query,
            span,
        },
    ))
}

fn insert(i: Input<'_>) -> PResult<'_, StatementKind> {
    insert_into(i).map(|(r, ins)| (r, StatementKind::Insert(ins)))
}

/// `EXECUTE STATEMENT SET BEGIN insert; ... END` or `BEGIN STATEMENT SET;
/// insert; ... END`.
fn statement_set(i: Input<'_>) -> PResult<'_, StatementKind> {
    let rest = match (kw("EXECUTE"), kw("STATEMENT"), kw("SET")).parse(i) {
        Ok((r, _)) => required(kw("BEGIN")(r))?.0,
        Err(_) => {
            let (r, _) = (kw("BEGIN"), kw("STATEMENT"), kw("SET")).parse(i)?;
            required(sym(";")(r))?.0
        }
    };
    let mut inserts = Vec::new();
    let mut rest = rest;
    loop {
        if let Ok((r, _)) = kw("END")(rest) {
            return Ok((r, StatementKind::StatementSet(inserts)));
        }
        let (r, ins) = required(insert_into(rest))?;
        let (r, _) = required(sym(";")(r))?;
        inserts.push(ins);
        rest = r;
    }
}

fn explain(i: Input<'_>) -> PResult<'_, StatementKind> {
    let (rest, _) = kw("EXPLAIN")(i)?;
    let (rest, inner) = required(statement(rest))?;
    Ok((rest, StatementKind::Explain(Box::new(inner))))
}

fn object_kind(i: Input<'_>) -> PResult<'_, ObjectKind> {
    alt((
        kw("SOURCE").map(|_| ObjectKind::Source),
        kw("TABLE").map(|_| ObjectKind::Table),
        kw("SINK").map(|_| ObjectKind::Sink),
        kw("VIEW").map(|_| ObjectKind::View),
        (kw("MATERIALIZED"), kw("VIEW")).map(|_| ObjectKind::MaterializedView),
    ))
    .parse(i)
}

fn drop(i: Input<'_>) -> PResult<'_, StatementKind> {
    let (rest, _) = kw("DROP")(i)?;
    let rest = kw("TEMPORARY")(rest).map_or(rest, |(r, _)| r);
    let (rest, kind) = required(object_kind(rest))?;
    let (rest, if_exists) = opt((kw("IF"), kw("EXISTS"))).parse(rest)?;
    let (rest, name) = required(ident(rest))?;
    Ok((
        rest,
        StatementKind::Drop(Drop {
            kind,
            if_exists: if_exists.is_some(),
            name,
        }),
    ))
}

fn show(i: Input<'_>) -> PResult<'_, StatementKind> {
    let (rest, _) = kw("SHOW")(i)?;
    let (rest, what) = required(
        alt((
            kw("SOURCES").map(|_| ShowKind::Sources),
            kw("TABLES").map(|_| ShowKind::Tables),
            kw("SINKS").map(|_| ShowKind::Sinks),
            kw("VIEWS").map(|_| ShowKind::Views),
            kw("JOBS").map(|_| ShowKind::Jobs),
            kw("CONNECTORS").map(|_| ShowKind::Connectors),
        ))
        .parse(rest),
    )?;
    Ok((rest, StatementKind::Show(what)))
}

fn describe(i: Input<'_>) -> PResult<'_, StatementKind> {
    let (rest, _) = alt((kw("DESCRIBE"), kw("DESC"))).parse(i)?;
    if let Ok((after, _)) = kw("CONNECTOR")(rest) {
        let (rest, name) = required(ident(after))?;
        return Ok((rest, StatementKind::DescribeConnector(name)));
    }
    let (rest, name) = required(ident(rest))?;
    Ok((rest, StatementKind::Describe(name)))
}

fn set(i: Input<'_>) -> PResult<'_, StatementKind> {
    let (rest, _) = kw("SET")(i)?;
    let start = skip_ws(rest);
    let (rest, key) = required(option_key(rest))?;
    let key_span = span_of(start, rest);
    let (rest, _) = required(sym("=")(rest))?;
    let value_start = skip_ws(rest);
    let (rest, value) = required(option_value(rest))?;
    Ok((
        rest,
        StatementKind::Set(SqlOption {
            key,
            value,
            span: span_of(start, rest),
            key_span,
            value_span: span_of(value_start, rest),
        }),
    ))
}

pub(crate) fn statement(i: Input<'_>) -> PResult<'_, Statement> {
    let start = skip_ws(i);
    let (rest, kind) = alt((
        create,
        insert,
        statement_set,
        explain,
        drop,
        show,
        describe,
        set,
        |i| query(i).map(|(r, q)| (r, StatementKind::Query(q))),
    ))
    .parse(i)
    .map_err(|e| match e {
        nom::Err::Error(err) if err.offset == start.location_offset() => {
            nom::Err::Error(GrammarError::expected(
                err.offset,
                "a statement (CREATE, INSERT, EXECUTE STATEMENT SET, SELECT, WITH, EXPLAIN, DROP, SHOW, DESCRIBE or SET)",
            ))
        }
        other => other,
    })?;
    let span = Span::new(start.location_offset(), last_token_end(start, rest));
    Ok((rest, Statement { kind, span }))
}

/// A whole file: statements separated by `;`. Stops at the first error.
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

/// Where the statement after a syntax error at `offset` starts: just past
/// the next `;` outside string literals, quoted identifiers and comments.
pub(crate) fn recovery_point(sql: &str, offset: usize) -> usize {
    // Scan from the start of the statement so quotes are tracked correctly.
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'\'' | b'"' | b'`' => quote = Some(b),
                b'-' if bytes.get(i + 1) == Some(&b'-') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    i += 2;
                    while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                        i += 1;
                    }
                    i += 1;
                }
                b';' if i >= offset => return i + 1,
                _ => {}
            },
        }
        i += 1;
    }
    sql.len()
}

/// Like [`statements`], but on a syntax error records it and goes on at the
/// next statement, so a file's every error is reported at once.
pub(crate) fn statements_lenient(sql: &str) -> (Vec<Statement>, Vec<GrammarError>) {
    let input = Input::new(sql);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut pos = 0;
    while pos < sql.len() {
        reset_depth();
        let mut at = skip_ws(input.take_from(pos));
        while let Ok((r, _)) = sym(";")(at) {
            at = skip_ws(r);
        }
        if at.fragment().is_empty() {
            break;
        }
        let result = statement(at).and_then(|(r, stmt)| {
            let r = skip_ws(r);
            if r.fragment().is_empty() {
                return Ok((r, stmt));
            }
            required(sym(";")(r)).map(|(r, _)| (r, stmt))
        });
        match result {
            Ok((r, stmt)) => {
                out.push(stmt);
                pos = r.location_offset();
            }
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
                pos = recovery_point(sql, e.offset.max(at.location_offset()));
                errors.push(e);
            }
            Err(nom::Err::Incomplete(_)) => break,
        }
    }
    (out, errors)
}
