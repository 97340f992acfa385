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
        ExprKind::Function(Function {
            name,
            args,
            star,
            distinct,
            filter,
            over,
        }) => {
            let mut parts = vec![name.value.clone()];
            if *distinct {
                parts.push("distinct".into());
            }
            if *star {
                parts.push("*".into());
            }
            parts.extend(args.iter().map(sexp));
            if let Some(f) = filter {
                parts.push(format!("(filter {})", sexp(f)));
            }
            if let Some(w) = over {
                let p: Vec<String> = w.partition_by.iter().map(sexp).collect();
                let o: Vec<String> = w
                    .order_by
                    .iter()
                    .map(|o| {
                        format!(
                            "{}{}",
                            sexp(&o.expr),
                            match o.asc {
                                Some(true) => " asc",
                                Some(false) => " desc",
                                None => "",
                            }
                        )
                    })
                    .collect();
                parts.push(format!(
                    "(over [{}] [{}] {:?})",
                    p.join(" "),
                    o.join(" "),
                    w.frame
                ));
            }
            format!("(call {})", parts.join(" "))
        }
        ExprKind::IsBool {
            expr,
            value,
            negated,
        } => {
            format!(
                "(is{} {value} {})",
                if *negated { "-not" } else { "" },
                sexp(expr)
            )
        }
        ExprKind::InList {
            expr,
            list,
            negated,
        } => {
            let items: Vec<String> = list.iter().map(sexp).collect();
            format!(
                "({}in {} [{}])",
                if *negated { "not-" } else { "" },
                sexp(expr),
                items.join(" ")
            )
        }
        ExprKind::Between {
            expr,
            low,
            high,
            negated,
        } => {
            format!(
                "({}between {} {} {})",
                if *negated { "not-" } else { "" },
                sexp(expr),
                sexp(low),
                sexp(high)
            )
        }
        ExprKind::Like {
            expr,
            pattern,
            negated,
            case_insensitive,
        } => format!(
            "({}{} {} {})",
            if *negated { "not-" } else { "" },
            if *case_insensitive { "ilike" } else { "like" },
            sexp(expr),
            sexp(pattern)
        ),
        ExprKind::Extract { field, expr } => format!("(extract {} {})", field.value, sexp(expr)),
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
        ExprKind::Cast {
            expr, data_type, ..
        } => format!("(cast {} {:?})", sexp(expr), data_type.kind),
        ExprKind::Nested(inner) => sexp(inner),
    }
}

/// The SELECT of a plain query.
#[track_caller]
fn select(q: &Query) -> &Select {
    match &q.body {
        SetExpr::Select(s) => s,
        other => panic!("not a plain SELECT: {other:?}"),
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
        .map(|c| (c.name.value.as_str(), c.data_type().unwrap().kind.clone()))
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
    let q = select(sink.query.as_ref().unwrap());
    assert_eq!(q.projection.len(), 4);
    let TableRefKind::Window(w) = &q.from[0].kind else {
        panic!()
    };
    assert_eq!(
        (w.kind, w.table.value.as_str(), w.time_column.value.as_str()),
        (WindowKind::Tumble, "bids", "date_time")
    );
    assert_eq!(q.group_by.len(), 3);
    assert_eq!(sexp(q.having.as_ref().unwrap()), "(> (call count *) 1)");
    assert_eq!(
        &sql[q.from[0].span.start..q.from[0].span.end],
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
    assert_eq!(
        select(&ins.query).from[0]
            .alias
            .as_ref()
            .unwrap()
            .name
            .value,
        "w"
    );
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
        "expected identifier, TABLE or '(', found end of input",
        13,
    );
    assert_error(
        "SELEC a FROM t",
        "expected a statement (CREATE, INSERT, EXECUTE STATEMENT SET, SELECT, WITH, EXPLAIN, DROP, SHOW, DESCRIBE or SET), found 'SELEC'",
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
        "unknown data type 'bigintt' (expected BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p, s), VARCHAR, BYTES, DATE, TIMESTAMP(p), ROW<...>, ARRAY<t> or MAP<k, v>)",
        19,
    );
    assert_error(
        "SELECT a FROM t; SELECT b FROM u v w",
        "expected ';', found 'w'",
        35,
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

#[test]
fn predicates_and_postfix_casts() {
    assert_expr(
        "a IN (1, 2) AND b NOT IN ('x')",
        "(AND (in a [1 2]) (not-in b ['x']))",
    );
    assert_expr("price BETWEEN 1 AND 10 OR x", "(OR (between price 1 10) x)");
    assert_expr("a NOT BETWEEN b + 1 AND c", "(not-between a (+ b 1) c)");
    assert_expr(
        "url LIKE '%google%' AND c NOT ILIKE 'A%'",
        "(AND (like url '%google%') (not-ilike c 'A%'))",
    );
    assert_expr(
        "flag IS TRUE OR flag IS NOT FALSE",
        "(OR (is true flag) (is-not false flag))",
    );
    assert_expr("price::DOUBLE * 2", "(* (cast price Double) 2)");
    assert_expr(
        "EXTRACT(HOUR FROM date_time) >= 8",
        "(>= (extract hour date_time) 8)",
    );
}

#[test]
fn aggregate_filters_and_over_windows() {
    assert_expr(
        "count(DISTINCT bidder) FILTER (WHERE price < 10000)",
        "(call count distinct bidder (filter (< price 10000)))",
    );
    assert_expr(
        "ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, date_time)",
        "(call row_number (over [auction] [price desc date_time] None))",
    );
    let e = parse_expr("AVG(price) OVER (PARTITION BY seller ORDER BY ts ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)")
        .unwrap();
    let ExprKind::Function(f) = e.kind else {
        panic!()
    };
    let frame = f.over.unwrap().frame.unwrap();
    assert!(frame.rows);
    assert!(matches!(frame.start, FrameBound::Preceding(Some(_))));
    assert_eq!(frame.end, Some(FrameBound::CurrentRow));
}

#[test]
fn joins_subqueries_ctes_and_unions() {
    let sql = "WITH hot AS (SELECT auction FROM bid WHERE price > 10)
        SELECT DISTINCT p.name, a.id FROM person AS p
        JOIN auction a ON p.id = a.seller
        LEFT OUTER JOIN (SELECT * FROM hot) h (auction) USING (auction), bid b
        UNION ALL (SELECT name, id FROM person)
        ORDER BY name DESC LIMIT 10";
    let stmts = parse_statements(sql).unwrap();
    let StatementKind::Query(q) = &stmts[0].kind else {
        panic!()
    };
    assert_eq!(q.with.len(), 1);
    assert_eq!(q.with[0].alias.name.value, "hot");
    assert_eq!(q.order_by[0].asc, Some(false));
    assert!(q.limit.is_some());
    let SetExpr::Union {
        left, all: true, ..
    } = &q.body
    else {
        panic!("{:?}", q.body)
    };
    let SetExpr::Select(s) = left.as_ref() else {
        panic!()
    };
    assert!(s.distinct);
    assert_eq!(s.from.len(), 2, "a comma join");
    let TableRefKind::Join(outer) = &s.from[0].kind else {
        panic!()
    };
    assert_eq!(outer.kind, JoinKind::Left);
    let alias = outer.right.alias.as_ref().unwrap();
    assert_eq!((alias.name.value.as_str(), alias.columns.len()), ("h", 1));
    assert!(matches!(outer.constraint, JoinConstraint::Using(_)));
    let TableRefKind::Join(inner) = &outer.left.kind else {
        panic!()
    };
    assert_eq!(inner.kind, JoinKind::Inner);
}

#[test]
fn window_functions_in_every_form() {
    let sql = "SELECT * FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND));
        SELECT * FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '10' SECOND));
        SELECT * FROM CUMULATE(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND);
        SELECT * FROM bid b JOIN side FOR SYSTEM_TIME AS OF b.p_time AS s ON b.auction = s.key";
    let stmts = parse_statements(sql).unwrap();
    let kinds: Vec<_> = stmts[..3]
        .iter()
        .map(|s| {
            let StatementKind::Query(q) = &s.kind else {
                panic!()
            };
            let TableRefKind::Window(w) = &select(q).from[0].kind else {
                panic!()
            };
            (w.kind, w.partition_by.len(), w.args.len())
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (WindowKind::Hop, 0, 2),
            (WindowKind::Session, 1, 1),
            (WindowKind::Cumulate, 0, 2)
        ]
    );
    let StatementKind::Query(q) = &stmts[3].kind else {
        panic!()
    };
    let TableRefKind::Join(j) = &select(q).from[0].kind else {
        panic!()
    };
    assert!(j.right.for_system_time.is_some());
}

#[test]
fn catalog_statements() {
    let sql = "CREATE VIEW v (a) AS SELECT x FROM t; CREATE MATERIALIZED VIEW mv AS SELECT x FROM t;
        DROP MATERIALIZED VIEW IF EXISTS mv; DROP SOURCE t; SHOW JOBS; DESCRIBE t;
        SET 'checkpoint.interval' = '5s'; SET parallelism = 4;
        CREATE TABLE s (k BIGINT, v VARCHAR, PRIMARY KEY (k) NOT ENFORCED) WITH (connector = 'file')";
    let stmts = parse_statements(sql).unwrap();
    assert!(
        matches!(&stmts[0].kind, StatementKind::CreateView(v) if !v.materialized && v.columns.len() == 1)
    );
    assert!(matches!(&stmts[1].kind, StatementKind::CreateView(v) if v.materialized));
    assert!(
        matches!(&stmts[2].kind, StatementKind::Drop(d) if d.if_exists && d.kind == ObjectKind::MaterializedView)
    );
    assert!(
        matches!(&stmts[3].kind, StatementKind::Drop(d) if !d.if_exists && d.kind == ObjectKind::Source)
    );
    assert!(matches!(
        &stmts[4].kind,
        StatementKind::Show(ShowKind::Jobs)
    ));
    assert!(matches!(&stmts[5].kind, StatementKind::Describe(n) if n.value == "t"));
    assert!(
        matches!(&stmts[6].kind, StatementKind::Set(o) if o.key == "checkpoint.interval" && o.value == "5s")
    );
    assert!(
        matches!(&stmts[7].kind, StatementKind::Set(o) if o.key == "parallelism" && o.value == "4")
    );
    assert!(matches!(&stmts[8].kind, StatementKind::CreateSource(c) if c.primary_key.len() == 1));
}

#[test]
fn every_error_of_a_file_is_reported() {
    let sql =
        "SELECT a FROM;\nSELECT b FROM t;\nSELECT 'x;' FROM WHERE;\nCREATE SOURCE; SELECT c FROM u";
    let (stmts, errors) = crate::parse_statements_lenient(sql);
    assert_eq!(stmts.len(), 2, "the good statements survive");
    let messages: Vec<_> = errors
        .iter()
        .map(|e| (e.message.as_str(), crate::line_col(sql, e.span.start).line))
        .collect();
    assert_eq!(
        messages,
        vec![
            ("expected identifier, TABLE or '(', found ';'", 1),
            ("expected identifier, TABLE or '(', found 'WHERE'", 3),
            ("expected identifier, found ';'", 4),
        ]
    );
}

#[test]
fn sink_partitioned_by_columns() {
    let sql = "CREATE SINK logs PARTITIONED BY (dt, hm) WITH (connector = 'file', path = 'out/') AS SELECT dt, hm FROM bid";
    let stmts = parse_statements(sql).unwrap();
    let StatementKind::CreateSink(sink) = &stmts[0].kind else {
        panic!()
    };
    let names: Vec<&str> = sink
        .partitioned_by
        .iter()
        .map(|c| c.value.as_str())
        .collect();
    assert_eq!(names, ["dt", "hm"]);
    assert_eq!(
        &sql[sink.partitioned_by[1].span.start..sink.partitioned_by[1].span.end],
        "hm"
    );
    // Printed back the same way.
    let printed = stmts[0].to_string();
    assert!(
        printed.starts_with("CREATE SINK logs PARTITIONED BY (dt, hm) WITH ("),
        "{printed}"
    );
    let again = parse_statements(&printed).unwrap();
    let StatementKind::CreateSink(again) = &again[0].kind else {
        panic!()
    };
    assert_eq!(again.partitioned_by.len(), 2);
}

#[test]
fn flink_table_with_rows_and_a_computed_time_attribute() {
    let sql = "CREATE TEMPORARY TABLE IF NOT EXISTS nexmark (
        event_type INT,
        person ROW<id BIGINT, name VARCHAR, dateTime TIMESTAMP(3)>,
        tags ARRAY<STRING>, attrs MAP<STRING, BIGINT NOT NULL>,
        dateTime AS CASE WHEN event_type = 0 THEN person.dateTime END,
        WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
    ) PARTITIONED BY (event_type) WITH ('connector' = 'nexmark')";
    let stmts = parse_statements(sql).unwrap();
    let StatementKind::CreateSource(t) = &stmts[0].kind else {
        panic!("{stmts:?}")
    };
    assert!(t.table && t.if_not_exists);
    assert_eq!(t.partitioned_by[0].value, "event_type");
    let DataTypeKind::Row(fields) = &t.columns[1].data_type().unwrap().kind else {
        panic!("{:?}", t.columns[1])
    };
    let names: Vec<&str> = fields.iter().map(|f| f.name.value.as_str()).collect();
    assert_eq!(names, ["id", "name", "datetime"]);
    assert!(matches!(
        t.columns[2].data_type().unwrap().kind,
        DataTypeKind::Array(_)
    ));
    assert!(matches!(
        t.columns[3].data_type().unwrap().kind,
        DataTypeKind::Map(..)
    ));
    let ColumnKind::Computed(e) = &t.columns[4].kind else {
        panic!("{:?}", t.columns[4])
    };
    assert!(matches!(e.kind, ExprKind::Case { .. }));
    assert_eq!(t.watermark.as_ref().unwrap().column.value, "datetime");
    // Printing round-trips.
    let again = parse_statements(&stmts[0].to_string()).unwrap();
    assert_eq!(again[0].to_string(), stmts[0].to_string());
}

#[test]
fn statement_sets_inserts_with_columns_values_and_union() {
    let sql = "EXECUTE STATEMENT SET BEGIN
          INSERT INTO a SELECT x FROM t;
          INSERT INTO b (y, z) VALUES (1, 'one'), (2, 'two');
        END;
        BEGIN STATEMENT SET;
          INSERT INTO a SELECT x FROM t UNION SELECT x FROM u;
        END";
    let stmts = parse_statements(sql).unwrap();
    let StatementKind::StatementSet(set) = &stmts[0].kind else {
        panic!("{stmts:?}")
    };
    assert_eq!(set.len(), 2);
    assert_eq!(set[1].columns.len(), 2);
    let SetExpr::Values(v) = &set[1].query.body else {
        panic!("{:?}", set[1].query.body)
    };
    assert_eq!((v.rows.len(), v.rows[0].len()), (2, 2));
    let StatementKind::StatementSet(set) = &stmts[1].kind else {
        panic!("{stmts:?}")
    };
    assert!(matches!(
        set[0].query.body,
        SetExpr::Union { all: false, .. }
    ));
    // Printing round-trips.
    for s in &stmts {
        let printed = s.to_string();
        let again = parse_statements(&printed).unwrap();
        assert_eq!(again[0].to_string(), printed);
    }
}
