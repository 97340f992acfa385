//! Property test: for generated ASTs, parsing the printed text gives the
//! same AST (spans aside).

use proptest::prelude::*;

use crate::ast::*;
use crate::{parse_expr, parse_statements};

fn ident(value: &str, quoted: bool) -> Ident {
    Ident {
        value: value.to_string(),
        quoted,
        span: Span::default(),
    }
}

fn e(kind: ExprKind) -> Expr {
    Expr {
        kind,
        span: Span::default(),
    }
}

fn arb_ident() -> impl Strategy<Value = Ident> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "price", "auction", "x1", "date_time", "k_2"]).prop_map(|v| ident(v, false)),
        1 => prop::sample::select(vec!["Mixed Case", "from", "a\"b", "select"]).prop_map(|v| ident(v, true)),
    ]
}

fn arb_type() -> impl Strategy<Value = DataType> {
    prop_oneof![
        Just(DataTypeKind::Boolean),
        Just(DataTypeKind::BigInt),
        Just(DataTypeKind::Int),
        Just(DataTypeKind::Double),
        Just(DataTypeKind::Varchar),
        Just(DataTypeKind::Date),
        (1u8..38)
            .prop_flat_map(|p| (Just(p), 0i8..=(p as i8)))
            .prop_map(|(precision, scale)| DataTypeKind::Decimal { precision, scale }),
        prop::option::of(0u8..=9).prop_map(|precision| DataTypeKind::Timestamp { precision }),
    ]
    .prop_map(|kind| DataType {
        kind,
        span: Span::default(),
    })
}

fn arb_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        "[0-9]{1,6}".prop_map(Literal::Number),
        "[0-9]{1,3}\\.[0-9]{1,3}".prop_map(Literal::Number),
        "[a-z' %_]{0,6}".prop_map(Literal::String),
        any::<bool>().prop_map(Literal::Boolean),
        Just(Literal::Null),
        (
            "[0-9]{1,3}",
            prop::sample::select(vec![
                IntervalUnit::Second,
                IntervalUnit::Minute,
                IntervalUnit::Millisecond
            ])
        )
            .prop_map(|(value, u)| Literal::Interval {
                value,
                unit: Some(u)
            }),
        Just(Literal::Interval {
            value: "10 seconds".into(),
            unit: None
        }),
        Just(Literal::Timestamp("2024-01-01 00:00:00".into())),
    ]
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        prop::collection::vec(arb_ident(), 1..=2).prop_map(|p| e(ExprKind::Identifier(p))),
        arb_literal().prop_map(|l| e(ExprKind::Literal(l))),
    ];
    leaf.prop_recursive(4, 48, 4, |inner| {
        let boxed = inner.clone().prop_map(Box::new);
        let ops = prop::sample::select(vec![
            BinaryOp::Or,
            BinaryOp::And,
            BinaryOp::Eq,
            BinaryOp::NotEq,
            BinaryOp::Lt,
            BinaryOp::GtEq,
            BinaryOp::Plus,
            BinaryOp::Minus,
            BinaryOp::Multiply,
            BinaryOp::Divide,
            BinaryOp::Modulo,
            BinaryOp::Concat,
        ]);
        prop_oneof![
            (ops, boxed.clone(), boxed.clone()).prop_map(|(op, left, right)| e(ExprKind::Binary {
                op,
                left,
                right
            })),
            (
                prop::sample::select(vec![UnaryOp::Not, UnaryOp::Minus]),
                boxed.clone()
            )
                .prop_map(|(op, expr)| e(ExprKind::Unary { op, expr })),
            (boxed.clone(), any::<bool>())
                .prop_map(|(expr, negated)| e(ExprKind::IsNull { expr, negated })),
            (boxed.clone(), any::<bool>(), any::<bool>()).prop_map(|(expr, value, negated)| e(
                ExprKind::IsBool {
                    expr,
                    value,
                    negated
                }
            )),
            (
                boxed.clone(),
                prop::collection::vec(inner.clone(), 1..3),
                any::<bool>()
            )
                .prop_map(|(expr, list, negated)| e(ExprKind::InList {
                    expr,
                    list,
                    negated
                })),
            (boxed.clone(), boxed.clone(), boxed.clone(), any::<bool>()).prop_map(
                |(expr, low, high, negated)| e(ExprKind::Between {
                    expr,
                    low,
                    high,
                    negated
                })
            ),
            (boxed.clone(), boxed.clone(), any::<bool>(), any::<bool>()).prop_map(
                |(expr, pattern, negated, ci)| {
                    e(ExprKind::Like {
                        expr,
                        pattern,
                        negated,
                        case_insensitive: ci,
                    })
                }
            ),
            (
                prop::sample::select(vec!["f", "upper", "coalesce", "count", "sum"]),
                prop::collection::vec(inner.clone(), 0..3),
                any::<bool>(),
                prop::option::of(boxed.clone()),
                prop::option::of((
                    prop::collection::vec(inner.clone(), 0..2),
                    prop::collection::vec((inner.clone(), prop::option::of(any::<bool>())), 0..2)
                )),
            )
                .prop_map(|(name, args, distinct, filter, over)| {
                    let star = args.is_empty() && !distinct;
                    let over = over.map(|(partition_by, order)| WindowSpec {
                        partition_by,
                        order_by: order
                            .into_iter()
                            .map(|(expr, asc)| OrderByExpr { expr, asc })
                            .collect(),
                        frame: None,
                    });
                    let distinct = distinct && !args.is_empty();
                    e(ExprKind::Function(Function {
                        name: ident(name, false),
                        args,
                        star,
                        distinct,
                        filter,
                        over,
                    }))
                }),
            (
                prop::option::of(boxed.clone()),
                prop::collection::vec((inner.clone(), inner.clone()), 1..3),
                prop::option::of(boxed.clone())
            )
                .prop_map(|(operand, branches, else_result)| e(ExprKind::Case {
                    operand,
                    branches,
                    else_result
                })),
            (boxed.clone(), arb_type(), any::<bool>()).prop_map(|(expr, data_type, shorthand)| e(
                ExprKind::Cast {
                    expr,
                    data_type,
                    shorthand
                }
            )),
            (prop::sample::select(vec!["hour", "year"]), boxed.clone()).prop_map(|(f, expr)| e(
                ExprKind::Extract {
                    field: ident(f, false),
                    expr
                }
            )),
            boxed.prop_map(|inner| e(ExprKind::Nested(inner))),
        ]
    })
}

/// Binding strength, as the grammar parses it (higher binds tighter).
fn level(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary { op, .. } => match op {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Concat => 5,
            BinaryOp::Plus | BinaryOp::Minus => 6,
            BinaryOp::Multiply | BinaryOp::Divide | BinaryOp::Modulo => 7,
            _ => 4,
        },
        ExprKind::Unary {
            op: UnaryOp::Not, ..
        } => 3,
        ExprKind::Unary { .. } => 8,
        ExprKind::IsNull { .. } | ExprKind::IsBool { .. } | ExprKind::InList { .. } => 4,
        ExprKind::Between { .. } | ExprKind::Like { .. } => 4,
        ExprKind::Cast {
            shorthand: true, ..
        } => 9,
        _ => 10,
    }
}

/// Wraps `child` in parentheses unless it binds at least `min`.
#[allow(clippy::boxed_local)] // takes the AST's own boxes
fn at_least(child: Box<Expr>, min: u8) -> Box<Expr> {
    let child = Box::new(canonical(*child));
    if level(&child) >= min {
        child
    } else {
        Box::new(e(ExprKind::Nested(child)))
    }
}

/// Inserts the parentheses a printed tree needs to parse back the same.
fn canonical(x: Expr) -> Expr {
    let any = |c: Box<Expr>| at_least(c, 0);
    let kind = match x.kind {
        ExprKind::Binary { op, left, right } => {
            let l = level(&e(ExprKind::Binary {
                op,
                left: left.clone(),
                right: right.clone(),
            }));
            let (lmin, rmin) = if l == 4 { (5, 5) } else { (l, l + 1) };
            ExprKind::Binary {
                op,
                left: at_least(left, lmin),
                right: at_least(right, rmin),
            }
        }
        ExprKind::Unary {
            op: UnaryOp::Not,
            expr,
        } => ExprKind::Unary {
            op: UnaryOp::Not,
            expr: at_least(expr, 3),
        },
        ExprKind::Unary { op, expr } => ExprKind::Unary {
            op,
            expr: at_least(expr, 8),
        },
        ExprKind::IsNull { expr, negated } => ExprKind::IsNull {
            expr: at_least(expr, 5),
            negated,
        },
        ExprKind::IsBool {
            expr,
            value,
            negated,
        } => ExprKind::IsBool {
            expr: at_least(expr, 5),
            value,
            negated,
        },
        ExprKind::InList {
            expr,
            list,
            negated,
        } => ExprKind::InList {
            expr: at_least(expr, 5),
            list: list.into_iter().map(canonical).collect(),
            negated,
        },
        ExprKind::Between {
            expr,
            low,
            high,
            negated,
        } => ExprKind::Between {
            expr: at_least(expr, 5),
            low: at_least(low, 5),
            high: at_least(high, 5),
            negated,
        },
        ExprKind::Like {
            expr,
            pattern,
            negated,
            case_insensitive,
        } => ExprKind::Like {
            expr: at_least(expr, 5),
            pattern: at_least(pattern, 5),
            negated,
            case_insensitive,
        },
        ExprKind::Cast {
            expr,
            data_type,
            shorthand: true,
        } => ExprKind::Cast {
            expr: at_least(expr, 9),
            data_type,
            shorthand: true,
        },
        ExprKind::Cast {
            expr,
            data_type,
            shorthand,
        } => ExprKind::Cast {
            expr: any(expr),
            data_type,
            shorthand,
        },
        ExprKind::Function(f) => ExprKind::Function(Function {
            args: f.args.into_iter().map(canonical).collect(),
            filter: f.filter.map(any),
            over: f.over.map(|w| WindowSpec {
                partition_by: w.partition_by.into_iter().map(canonical).collect(),
                order_by: w
                    .order_by
                    .into_iter()
                    .map(|o| OrderByExpr {
                        expr: canonical(o.expr),
                        ..o
                    })
                    .collect(),
                frame: w.frame,
            }),
            ..f
        }),
        ExprKind::Case {
            operand,
            branches,
            else_result,
        } => ExprKind::Case {
            operand: operand.map(any),
            branches: branches
                .into_iter()
                .map(|(w, t)| (canonical(w), canonical(t)))
                .collect(),
            else_result: else_result.map(any),
        },
        ExprKind::Extract { field, expr } => ExprKind::Extract {
            field,
            expr: any(expr),
        },
        ExprKind::Nested(inner) => ExprKind::Nested(any(inner)),
        other => other,
    };
    e(kind)
}

/// The tree as JSON with every span removed.
fn without_spans<T: serde::Serialize>(t: &T) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|k, _| k != "span" && !k.ends_with("_span"));
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(t).expect("the AST serialises");
    strip(&mut v);
    v
}

fn arb_query() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((arb_expr(), prop::option::of(arb_ident())), 1..3),
        arb_ident(),
        prop::option::of(arb_expr()),
        prop::collection::vec(arb_expr(), 0..2),
    )
        .prop_map(|(items, table, selection, group_by)| {
            let projection = items
                .into_iter()
                .map(|(x, alias)| SelectItem::Expr {
                    expr: canonical(x),
                    alias,
                })
                .collect();
            let from = vec![TableRef {
                kind: TableRefKind::Named(table),
                alias: None,
                for_system_time: None,
                span: Span::default(),
            }];
            let select = Select {
                distinct: false,
                projection,
                from,
                selection: selection.map(canonical),
                group_by: group_by.into_iter().map(canonical).collect(),
                having: None,
                span: Span::default(),
            };
            let q = Query {
                with: vec![],
                body: SetExpr::Select(Box::new(select)),
                order_by: vec![],
                limit: None,
                span: Span::default(),
            };
            Statement {
                kind: StatementKind::Query(q),
                span: Span::default(),
            }
            .to_string()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn printed_expressions_parse_back_to_the_same_tree(x in arb_expr()) {
        let x = canonical(x);
        let text = x.to_string();
        let parsed = parse_expr(&text).map_err(|err| TestCaseError::fail(format!("{text:?}: {err}")))?;
        prop_assert_eq!(without_spans(&parsed), without_spans(&x), "printed as {}", text);
    }

    #[test]
    fn printed_queries_parse_back_to_the_same_tree(text in arb_query()) {
        let first = parse_statements(&text).map_err(|err| TestCaseError::fail(format!("{text:?}: {err}")))?;
        let again = first[0].to_string();
        prop_assert_eq!(&again, &text);
        let second = parse_statements(&again).map_err(|err| TestCaseError::fail(format!("{again:?}: {err}")))?;
        prop_assert_eq!(without_spans(&first), without_spans(&second));
    }
}

#[test]
fn the_nexmark_queries_print_and_parse_back() {
    let dir = std::path::PathBuf::from(
        // At run time first: a target dir reused from another checkout holds
        // test binaries built there.
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../tests/nexmark");
    for entry in std::fs::read_dir(dir).expect("tests/nexmark") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|x| x != "sql") {
            continue;
        }
        let sql = std::fs::read_to_string(&path).expect("readable");
        let stmts =
            parse_statements(&sql).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        for s in &stmts {
            let printed = s.to_string();
            let back = parse_statements(&printed).unwrap_or_else(|err| panic!("{printed}: {err}"));
            assert_eq!(
                without_spans(&back[0]),
                without_spans(s),
                "{}: {printed}",
                path.display()
            );
        }
    }
}
