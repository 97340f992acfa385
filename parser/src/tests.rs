//! Parser tests: one-line cases through `#[track_caller]` helpers.

use crate::ast::*;
use crate::{parse_expr, parse_statements};

/// Renders an expression as an s-expression, so shapes read at a glance.
fn sexp(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Identifier(parts) => parts
            .iter()
            .map(|p| p.value.as_str())
            .collect::<Vec<_>>()
            .join("."),
        ExprKind::Literal(Literal::Number(n)) => n.clone(),
        ExprKind::Literal(Literal::String(s)) => format!("'{s}'"),
        ExprKind::Literal(Literal::Boolean(b)) => b.to_string(),
        ExprKind::Literal(Literal::Null) => "null".into(),
        ExprKind::Literal(Literal::Interval { value, unit }) => {
            format!("(interval '{value}' {unit:?})")
        }
        ExprKind::Literal(Literal::Timestamp(s)) => format!("(timestamp '{s}')"),
        ExprKind::Literal(Literal::Date(s)) => format!("(date '{s}')"),
        ExprKind::Binary { op, left, right } => {
            format!("({} {} {})", op.as_str(), sexp(left), sexp(right))
        }
        ExprKind::Unary { op, expr } => format!("({op:?} {})", sexp(expr)),
        ExprKind::IsNull { expr, negated } => {
            format!(
                "({} {})",
                if *negated { "is-not-null" } else { "is-null" },
                sexp(expr)
            )
        }
        ExprKind::Function {
            name,
            args,
            star,
            distinct,
        } => {
            let mut parts = vec![name.value.clone()];
            if *distinct {
                parts.push("distinct".into());
            }
            if *star {
                parts.push("*".into());
            }
            parts.extend(args.iter().map(sexp));
            format!("(call {})", parts.join(" "))
        }
        ExprKind::Case {
            operand,
            branches,
            else_result,
        } => {
            let mut s = "(case".to_string();
            if let Some(o) = operand {
                s += &format!(" {}", sexp(o));
            }
            for (w, t) in branches {
                s += &format!(" (when {} {})", sexp(w), sexp(t));
            }
            if let Some(e) = else_result {
                s += &format!(" (else {})", sexp(e));
            }
            s + ")"
        }
        ExprKind::Cast { expr, data_type } => format!("(cast {} {:?})", sexp(expr), data_type.kind),
        ExprKind::Nested(inner) => sexp(inner),
    }
}

#[track_caller]
fn assert_expr(sql: &str, expected: &str) {
    let e = parse_expr(sql).unwrap_or_else(|e| panic!("{sql:?} failed: {e}"));
    assert_eq!(sexp(&e), expected, "parsing {sql:?}");
}

#[track_caller]
fn assert_error(sql: &str, message: &str, at: usize) {
    let err = parse_statements(sql).expect_err("expected a syntax error");
    assert_eq!(err.message, message, "for {sql:?}");
    assert_eq!(err.span.start, at, "error offset for {sql:?}");
}

#[test]
fn precedence() {
    assert_expr("a + b * c", "(+ a (* b c))");
    assert_expr("a - b - c", "(- (- a b) c)");
    assert_expr(
        "a = 1 OR b = 2 AND NOT c",
        "(OR (= a 1) (AND (= b 2) (Not c)))",
    );
    assert_expr("-a % 3 <> 0", "(<> (% (Minus a) 3) 0)");
    assert_expr("(a + b) * c", "(* (+ a b) c)");
    assert_expr(
        "x IS NOT NULL AND y IS NULL",
        "(AND (is-not-null x) (is-null y))",
    );
    assert_expr("'a' || b || 'c'", "(|| (|| 'a' b) 'c')");
    assert_expr("a <= b", "(<= a b)");
    assert_expr("t.price * 0.908", "(* t.price 0.908)");
}

#[test]
fn literals_and_calls() {
    assert_expr("INTERVAL '10' SECOND", "(interval '10' Some(Second))");
    assert_expr("interval '10 seconds'", "(interval '10 seconds' None)");
    assert_expr(
        "TIMESTAMP '2024-01-01 00:00:00'",
        "(timestamp '2024-01-01 00:00:00')",
    );
    assert_expr("'it''s'", "'it's'");
    assert_expr("COUNT(*)", "(call count *)");
    assert_expr("count(DISTINCT bidder)", "(call count distinct bidder)");
    assert_expr("now()", "(call now)");
    assert_expr("1e3 + .5", "(+ 1e3 .5)");
    assert_expr(
        "CASE WHEN a > 1 THEN 'x' ELSE 'y' END",
        "(case (when (> a 1) 'x') (else 'y'))",
    );
    assert_expr("CASE k WHEN 1 THEN 2 END", "(case k (when 1 2))");
    assert_expr("CAST(price AS DOUBLE)", "(cast price Double)");
    assert_expr(
        "CAST(ts AS TIMESTAMP(3))",
        "(cast ts Timestamp { precision: Some(3) })",
    );
    assert_expr("\"Mixed Case\" + `b`", "(+ Mixed Case b)");
    assert_expr("Upper_Name", "upper_name");
}

#[test]
fn comments_are_whitespace() {
    assert_expr("a -- the a column\n + /* block */ b", "(+ a b)");
}

#[test]
fn create_source_with_watermark() {
    let sql = "CREATE SOURCE bids (
        auction BIGINT, price BIGINT, date_time TIMESTAMP(3),
        WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
    ) WITH (connector = 'kafka', 'scan.startup.mode' = 'earliest', events.num = 1000, table = 'bid');";
    let stmts = parse_statements(sql).unwrap();
    let StatementKind::CreateSource(src) = &stmts[0].kind else {
        panic!("{stmts:?}")
    };
    assert_eq!(src.name.value, "bids");
    let cols: Vec<_> = src
        .columns
        .iter()
        .map(|c| (c.name.value.as_str(), c.data_type.kind.clone()))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("auction", DataTypeKind::BigInt),
            ("price", DataTypeKind::BigInt),
            ("date_time", DataTypeKind::Timestamp { precision: Some(3) }),
        ]
    );
    let wm = src.watermark.as_ref().unwrap();
    assert_eq!(wm.column.value, "date_time");
    assert_eq!(sexp(&wm.expr), "(- date_time (interval '4' Some(Second)))");
    let opts: Vec<_> = src
        .options
        .iter()
        .map(|o| (o.key.as_str(), o.value.as_str()))
        .collect();
    assert_eq!(
        opts,
        vec![
            ("connector", "kafka"),
            ("scan.startup.mode", "earliest"),
            ("events.num", "1000"),
            ("table", "bid")
        ]
    );
    assert_eq!(
        &sql[stmts[0].span.start..stmts[0].span.end],
        sql.trim_end_matches(';')
    );
}

#[test]
fn sink_as_select_with_tumble() {
    let sql = "CREATE SINK hot WITH (connector = 'file', path = 'out/', format = 'json') AS
        SELECT auction, window_start, window_end, COUNT(*) AS bids
        FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
        GROUP BY auction, window_start, window_end HAVING COUNT(*) > 1";
    let stmts = parse_statements(sql).unwrap();
    let StatementKind::CreateSink(sink) = &stmts[0].kind else {
        panic!()
    };
    let q = sink.query.as_ref().unwrap();
    assert_eq!(q.projection.len(), 4);
    let TableRefKind::Window(w) = &q.from.kind else {
        panic!()
    };
    assert_eq!(
        (w.kind, w.table.value.as_str(), w.time_column.value.as_str()),
        (WindowKind::Tumble, "bids", "date_time")
    );
    assert_eq!(q.group_by.len(), 3);
    assert_eq!(sexp(q.having.as_ref().unwrap()), "(> (call count *) 1)");
    assert_eq!(
        &sql[q.from.span.start..q.from.span.end],
        "TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))"
    );
}

#[test]
fn short_tumble_insert_and_explain() {
    let sql = "CREATE SINK s (a BIGINT) WITH (connector = 'stdout');
               INSERT INTO s SELECT a FROM TUMBLE(t, ts, INTERVAL '1' MINUTE) AS w;
               EXPLAIN SELECT * FROM t WHERE a > 1;;";
    let stmts = parse_statements(sql).unwrap();
    assert_eq!(stmts.len(), 3);
    let StatementKind::Insert(ins) = &stmts[1].kind else {
        panic!()
    };
    assert_eq!(ins.target.value, "s");
    assert_eq!(ins.query.from.alias.as_ref().unwrap().value, "w");
    let StatementKind::Explain(inner) = &stmts[2].kind else {
        panic!()
    };
    assert!(matches!(inner.kind, StatementKind::Query(_)));
}

#[test]
fn syntax_errors_point_at_the_mistake() {
    assert_error(
        "SELECT a FROM t WHERE",
        "expected expression, found end of input",
        21,
    );
    assert_error(
        "SELECT a FROM",
        "expected identifier or TABLE, found end of input",
        13,
    );
    assert_error(
        "SELEC a FROM t",
        "expected a statement (CREATE, INSERT, SELECT or EXPLAIN), found 'SELEC'",
        0,
    );
    assert_error("SELECT a, FROM t", "expected expression, found 'FROM'", 10);
    assert_error(
        "SELECT a FROM t WHERE a = 'x",
        "unterminated string literal",
        26,
    );
    assert_error("SELECT (a + 1 FROM t", "expected ')', found 'FROM'", 14);
    assert_error(
        "CREATE SOURCE s (a BIGINTT) WITH (x = 'y')",
        "unknown data type 'bigintt' (expected BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p, s), VARCHAR, BYTES, DATE or TIMESTAMP(p))",
        19,
    );
    assert_error(
        "SELECT a FROM t; SELECT b FROM u v w",
        "expected ';', found 'w'",
        35,
    );
    assert_error(
        "SELECT a FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND))",
        "not supported yet: HOP windows",
        20,
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let sql = format!(
        "SELECT {}1{} FROM t",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    let err = parse_statements(&sql).unwrap_err();
    assert!(err.message.contains("nested too deeply"), "{}", err.message);
    let sql = format!("SELECT {}1 FROM t", "- ".repeat(10_000));
    assert!(
        parse_statements(&sql)
            .unwrap_err()
            .message
            .contains("nested too deeply")
    );
}

#[test]
fn reserved_words_need_quotes() {
    assert!(parse_statements("SELECT from FROM t").is_err());
    assert!(parse_statements("SELECT \"from\" FROM t").is_ok());
}
