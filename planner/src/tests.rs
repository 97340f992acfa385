//! Planner tests: graph shapes, serialisation, and errors with spans.

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, TimeUnit};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::Expr;

use crate::expr::ScalarExpr;
use crate::graph::{EdgeKind, NodeKind, PhysicalGraph};
use crate::{BuildEnv, Outcome, PlanErrorKind, Session, SessionError, build};

const BIDS: &str =
    "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3),
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
  WITH (connector = 'nexmark', table = 'bid', 'events.num' = '1000');\n";

fn plan(sql: &str, parallelism: usize) -> PhysicalGraph {
    let mut session = Session::new(parallelism);
    let full = format!("{BIDS}{sql}");
    let outcomes = session
        .execute(&full)
        .unwrap_or_else(|e| panic!("{}", e.render(&full, "test")));
    match outcomes.into_iter().last() {
        Some(Outcome::Job(job)) => job.graph,
        other => panic!("expected a job, got {other:?}"),
    }
}

#[track_caller]
fn plan_error(sql: &str) -> (SessionError, String) {
    let full = format!("{BIDS}{sql}");
    let err = Session::new(2)
        .execute(&full)
        .expect_err("expected an error");
    let at = match &err {
        SessionError::Parse(e) => full[e.span.start..e.span.end].to_string(),
        SessionError::Plan(e) => e
            .span
            .map(|s| full[s.start..s.end].to_string())
            .unwrap_or_default(),
    };
    (err, at)
}

fn kinds(g: &PhysicalGraph) -> Vec<&'static str> {
    g.nodes
        .iter()
        .map(|n| PhysicalGraph::kind_name(&n.kind))
        .collect()
}

#[test]
fn a_plain_query_is_one_fused_chain() {
    let g = plan(
        "SELECT auction, price * 0.908 AS euros FROM bid WHERE auction % 123 = 0",
        4,
    );
    assert_eq!(kinds(&g), ["Source", "Watermark", "Project", "Sink"]);
    assert!(g.edges.iter().all(|e| e.kind == EdgeKind::Forward));
    assert!(g.nodes.iter().all(|n| n.parallelism == 1));
    let out = &g.nodes[2].schema;
    assert_eq!(out.field(1).name(), "euros");
    assert_eq!(out.field(1).data_type(), &DataType::Float64);
}

#[test]
fn a_window_aggregate_shuffles_by_key_and_gathers_into_the_sink() {
    let g = plan(
        "SELECT auction, window_start, window_end, COUNT(*) AS bids, MAX(price) AS top
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
         GROUP BY auction, window_start, window_end HAVING COUNT(*) > 2",
        3,
    );
    assert_eq!(
        kinds(&g),
        [
            "Source",
            "Watermark",
            "Project",
            "WindowAggregate",
            "Project",
            "Sink"
        ]
    );
    let edges: Vec<_> = g.edges.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        edges,
        [
            EdgeKind::Forward,
            EdgeKind::Forward,
            EdgeKind::Shuffle { keys: vec![0] },
            EdgeKind::Forward,
            EdgeKind::Gather
        ]
    );
    assert_eq!(g.nodes[3].parallelism, 3);
    let NodeKind::WindowAggregate(w) = &g.nodes[3].kind else {
        panic!()
    };
    // COUNT(*) in SELECT and HAVING is computed once.
    assert_eq!(w.aggregates.len(), 2);
    let names: Vec<_> = g.nodes[4]
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        ["auction", "window_start", "window_end", "bids", "top"]
    );
    let text = g.explain();
    assert!(text.contains("shuffle by hash(auction)"), "{text}");
    assert!(text.contains("TumblingWindowAggregate size=10s"), "{text}");
}

#[test]
fn the_graph_is_plain_data_that_round_trips_and_builds() {
    let g = plan(
        "SELECT auction, window_start, SUM(price) FROM TUMBLE(bid, date_time, INTERVAL '2' SECOND)
         GROUP BY auction, window_start, window_end",
        2,
    );
    let json = serde_json::to_string(&g).unwrap();
    let back: PhysicalGraph = serde_json::from_str(&json).unwrap();
    assert_eq!(back, g);
    let dataflow = build(&back, &BuildEnv::default()).unwrap();
    // source+watermark+pre-projection | window+projection | sink
    assert_eq!(dataflow.stages.len(), 3);
}

#[test]
fn literals_survive_the_expression_ir() {
    let schema = DFSchema::empty();
    for v in [
        ScalarValue::Int64(Some(-42)),
        ScalarValue::Float64(Some(0.908)),
        ScalarValue::Utf8(Some("it's".into())),
        ScalarValue::Boolean(Some(true)),
        ScalarValue::Int64(None),
        ScalarValue::Decimal128(Some(12345), 10, 2),
        ScalarValue::TimestampMillisecond(Some(1_704_067_200_123), None),
        ScalarValue::TimestampMicrosecond(Some(1_704_067_200_123_456), None),
        ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(1, 2, 3_000_000_000))),
        ScalarValue::Date32(Some(19_723)),
    ] {
        let ir = ScalarExpr::from_df(&Expr::Literal(v.clone(), None), &schema).unwrap();
        let json = serde_json::to_string(&ir).unwrap();
        let back: ScalarExpr = serde_json::from_str(&json).unwrap();
        let Expr::Literal(got, _) = back.to_df(&Default::default()).unwrap() else {
            panic!()
        };
        assert_eq!(got, v, "via {json}");
    }
}

#[test]
fn timestamp_precision_follows_flink() {
    let g = plan(
        "SELECT date_time, CAST(date_time AS TIMESTAMP) AS micros FROM bid",
        1,
    );
    let out = &g.nodes[2].schema;
    assert_eq!(
        out.field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, None)
    );
    assert_eq!(
        out.field(1).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, None)
    );
}

#[test]
fn errors_point_at_the_offending_text() {
    let (e, at) = plan_error("SELECT auctoin FROM bid");
    assert_eq!(at, "auctoin");
    assert!(e.to_string().contains("did you mean 'auction'"), "{e}");

    let (e, at) = plan_error("SELECT price FROM bids");
    assert_eq!(at, "bids");
    assert!(e.to_string().contains("did you mean 'bid'"), "{e}");

    let (e, at) = plan_error("SELECT x.price FROM bid");
    assert_eq!(at, "x");
    assert!(e.to_string().contains("unknown table 'x'"), "{e}");

    let (e, at) = plan_error("SELECT price FROM bid WHERE date_time > 5");
    assert_eq!(at, "date_time > 5");
    assert!(
        e.to_string().contains("Timestamp") && e.to_string().contains("Int64"),
        "names both types: {e}"
    );

    let (e, at) = plan_error(
        "WITH t AS (SELECT auction, MAX(date_time) AS date_time FROM bid GROUP BY auction)
         SELECT COUNT(*) FROM TUMBLE(t, date_time, INTERVAL '10' SECOND) GROUP BY window_start, window_end",
    );
    assert!(e.is_not_supported(), "{e}");
    assert_eq!(at, "TUMBLE(t, date_time, INTERVAL '10' SECOND)");

    let (e, at) =
        plan_error("CREATE SINK s WITH (connector = 'fille', path = 'x') AS SELECT price FROM bid");
    assert_eq!(
        e.to_string(),
        "unknown sink connector 'fille' (did you mean 'file'?)"
    );
    assert_eq!(at, "'fille'");

    let (e, at) =
        plan_error("CREATE SOURCE t (price BIGINT) WITH (connector = 'nexmark', evnts.num = '5')");
    assert_eq!(
        e.to_string(),
        "unknown option 'evnts.num' for connector 'nexmark' (did you mean 'events.num'?)"
    );
    assert_eq!(at, "evnts.num");

    let (e, at) = plan_error(
        "CREATE SOURCE t (price BIGINT) WITH (connector = 'nexmark', 'events.num' = 'many')",
    );
    assert_eq!(
        e.to_string(),
        "option 'events.num' has an invalid value 'many': expected a whole number"
    );
    assert_eq!(at, "'many'");

    let (e, _) = plan_error("CREATE SOURCE t (price BIGINT) WITH (connector = 'file')");
    assert!(
        e.to_string()
            .starts_with("missing option 'path' for connector 'file'"),
        "{e}"
    );

    let (e, at) = plan_error("CREATE SOURCE t (price BIGINT) WITH (connector = 'blackhole')");
    assert!(
        e.to_string()
            .starts_with("the 'blackhole' connector cannot be used as a source"),
        "{e}"
    );
    assert_eq!(at, "'blackhole'");

    let (e, at) = plan_error(
        "CREATE SINK s (a BIGINT, b BIGINT) WITH (connector = 'blackhole'); INSERT INTO s SELECT price FROM bid",
    );
    assert!(
        e.to_string()
            .contains("has 2 columns but the query produces 1"),
        "{e}"
    );
    assert_eq!(at, "price");

    let SessionError::Plan(p) = plan_error("SELECT price FROM bid WHERE date_time > 5").0 else {
        panic!()
    };
    assert_eq!(p.kind, PlanErrorKind::User);
}

#[test]
fn insert_into_a_declared_sink_casts_to_its_types() {
    let g = plan(
        "CREATE SINK s (a DOUBLE, b VARCHAR) WITH (connector = 'blackhole');
         INSERT INTO s SELECT auction, price FROM bid",
        1,
    );
    let out = &g.nodes.last().unwrap().schema;
    assert_eq!(out.field(0).name(), "a");
    assert_eq!(out.field(0).data_type(), &DataType::Float64);
    assert_eq!(out.field(1).data_type(), &DataType::Utf8);
}

const PEOPLE: &str = "CREATE SOURCE person (id BIGINT, name VARCHAR, date_time TIMESTAMP(3))
  WITH (connector = 'nexmark', table = 'person', 'events.num' = '1000');\n";

#[test]
fn join_names_are_checked() {
    let err = |sql: &str| {
        let full = format!("{BIDS}{PEOPLE}{sql}");
        let e = Session::new(1).execute(&full).expect_err("an error");
        let SessionError::Plan(p) = &e else {
            panic!("{e}")
        };
        let at = p
            .span
            .map(|s| full[s.start..s.end].to_string())
            .unwrap_or_default();
        (p.kind, p.message.clone(), at)
    };
    let (kind, msg, at) = err("SELECT date_time FROM bid JOIN person ON bidder = id");
    assert_eq!(kind, PlanErrorKind::User);
    assert_eq!(
        msg,
        "column 'date_time' is ambiguous: it could be bid.date_time or person.date_time"
    );
    assert_eq!(at, "date_time");
    let (kind, msg, at) = err("SELECT p.nam FROM bid b, person p");
    assert_eq!(kind, PlanErrorKind::UnknownColumn);
    assert!(
        msg.starts_with("unknown column 'nam' (did you mean 'name'?)"),
        "{msg}"
    );
    assert_eq!(at, "nam");
    let (_, msg, _) = err("SELECT x.name FROM bid b JOIN person p ON b.bidder = p.id");
    assert!(
        msg.contains("unknown table 'x'") && msg.contains("the query reads b, p"),
        "{msg}"
    );
    let (kind, msg, at) = err("SELECT * FROM bid b LEFT JOIN person p ON b.bidder = x.id");
    assert_eq!(kind, PlanErrorKind::UnknownTable);
    assert!(msg.contains("unknown table 'x'"), "{msg}");
    assert_eq!(at, "x");
    // USING names a column of both sides.
    let (kind, msg, at) = err("SELECT * FROM bid b JOIN person p USING (auction)");
    assert_eq!(kind, PlanErrorKind::UnknownColumn);
    assert!(msg.starts_with("unknown column 'auction'"), "{msg}");
    assert_eq!(at, "auction");
    let (_, msg, _) = err("SELECT * FROM bid, bid");
    assert!(msg.contains("give each an alias"), "{msg}");
}

#[test]
fn a_join_shuffles_both_inputs_by_its_keys_and_pushes_filters_down() {
    let mut session = Session::new(4);
    let full = format!(
        "{BIDS}{PEOPLE}SELECT b.price, p.name, p.date_time FROM bid b, person p \
         WHERE b.bidder = p.id AND p.name = 'x' AND b.price > p.id;"
    );
    let outcomes = session.execute(&full).unwrap();
    let Some(Outcome::Job(job)) = outcomes.into_iter().last() else {
        panic!("no job")
    };
    let g = job.graph;
    assert_eq!(
        kinds(&g),
        [
            "Source",
            "Watermark",
            "Project",
            "Source",
            "Project",
            "Join",
            "Project",
            "Sink"
        ]
    );
    let join = g
        .nodes
        .iter()
        .find(|n| matches!(n.kind, NodeKind::Join(_)))
        .unwrap();
    let NodeKind::Join(j) = &join.kind else {
        unreachable!()
    };
    assert_eq!(
        (j.left_keys.as_slice(), j.right_keys.as_slice()),
        (&[1][..], &[0][..])
    );
    assert_eq!(j.residual.as_ref().unwrap().to_string(), "(price > id)");
    assert!(!j.emits_changelog());
    assert_eq!(join.parallelism, 4);
    let inputs = g.input_edges(join.id);
    assert_eq!(inputs.len(), 2);
    assert_eq!(inputs[0].kind, EdgeKind::Shuffle { keys: vec![1] });
    assert_eq!(inputs[1].kind, EdgeKind::Shuffle { keys: vec![0] });
    // `p.name = 'x'` runs below the join, on person's rows.
    let NodeKind::Project(person) = &g.nodes[4].kind else {
        panic!()
    };
    assert_eq!(person.filter.as_ref().unwrap().to_string(), "(name = 'x')");
    // The second date_time is renamed apart inside the plan.
    let names: Vec<&str> = join
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "auction",
            "bidder",
            "price",
            "date_time",
            "id",
            "name",
            "date_time_1"
        ]
    );
    let explain = g.explain();
    assert!(
        explain.contains("Join INNER ON bidder = id AND (price > id)"),
        "{explain}"
    );
    assert!(explain.contains("UNBOUNDED"), "{explain}");
}

/// The retention EXPLAIN states for each stateful operator of `query`.
fn retention_lines(settings: &str, query: &str) -> Vec<String> {
    let mut session = Session::new(1);
    let full = format!("{BIDS}{PEOPLE}{settings}EXPLAIN {query};");
    let outcomes = session
        .execute(&full)
        .unwrap_or_else(|e| panic!("{}", e.render(&full, "test")));
    let Some(Outcome::Explain(text)) = outcomes.into_iter().last() else {
        panic!("no EXPLAIN")
    };
    text.lines()
        .filter_map(|l| {
            let (_, state) = l.split_once("; state: ")?;
            let (state, _) = state.rsplit_once("  (parallelism")?;
            Some(state.to_string())
        })
        .collect()
}

#[test]
fn state_ttl_bounds_joins_top_n_over_and_updating_aggregates_and_explain_says_so() {
    let join = "SELECT b.price, p.name FROM bid b JOIN person p ON b.bidder = p.id";
    let count = "SELECT auction, COUNT(*) AS n FROM bid GROUP BY auction";
    let top = "SELECT * FROM (SELECT auction, price, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid) WHERE rn <= 3";
    let over = "SELECT auction, SUM(price) OVER (PARTITION BY auction ORDER BY date_time ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s FROM bid";
    let window = "SELECT auction, window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end";
    let forever = "UNBOUNDED (for ever)";
    let idle = "until idle for 3600s (table.exec.state.ttl)";
    for (query, without, with) in [
        (
            join,
            vec![format!("left rows {forever}, right rows {forever}")],
            vec![format!("left rows {idle}, right rows {idle}")],
        ),
        (
            count,
            vec![format!("a group per key, {forever}")],
            vec![format!("a group per key, {idle}")],
        ),
        (
            top,
            vec![format!("the top 3 rows of each partition, {forever}")],
            vec![format!("the top 3 rows of each partition, {idle}")],
        ),
        (
            over,
            vec![format!("the last 2 rows of each partition, {forever}")],
            vec![format!("the last 2 rows of each partition, {idle}")],
        ),
        (
            // A window's state ends with the window: the setting changes
            // nothing.
            window,
            vec!["each open window until the watermark passes its end".to_string()],
            vec!["each open window until the watermark passes its end".to_string()],
        ),
    ] {
        assert_eq!(retention_lines("", query), without, "{query}");
        for set in [
            "SET 'table.exec.state.ttl' = '1 h';",
            "SET 'state.ttl' = '60 min';",
        ] {
            assert_eq!(retention_lines(set, query), with, "{set} {query}");
        }
        // 0 turns it off again, as in Flink.
        assert_eq!(
            retention_lines("SET 'state.ttl' = '1 h'; SET 'state.ttl' = '0';", query),
            without,
            "{query}"
        );
    }
    // The rows of an interval join's side leave by the watermark, not the
    // setting. Here only person's do: bids (with a watermark) can join
    // persons of any later time, as person has no watermark.
    let interval = "SELECT b.price, p.name FROM bid b JOIN person p ON b.bidder = p.id \
        AND p.date_time BETWEEN b.date_time - INTERVAL '1' SECOND AND b.date_time";
    assert_eq!(
        retention_lines("SET 'table.exec.state.ttl' = '1 h';", interval),
        [format!(
            "left rows {idle}, right rows until the watermark passes date_time_1 + 1s"
        )]
    );
}

/// `'table.exec.state.ttl.time-domain' = 'event-time'` measures the
/// time-to-live on the watermark: EXPLAIN says so and has no note that a
/// replay differs; a node that no watermark reaches on every input would
/// keep its state for ever, which is an error.
#[test]
fn an_event_time_state_ttl_runs_on_the_watermark_and_needs_one() {
    let count = "SELECT auction, COUNT(*) AS n FROM bid GROUP BY auction";
    let by_watermark = [
        "a group per key, until idle for 3600s of event time, by the watermark (table.exec.state.ttl)",
    ];
    for set in [
        "SET 'table.exec.state.ttl' = '1 h'; SET 'table.exec.state.ttl.time-domain' = 'event-time';",
        "SET 'state.ttl.time-domain' = 'EVENT-TIME'; SET 'state.ttl' = '1 h';",
    ] {
        assert_eq!(retention_lines(set, count), by_watermark, "{set}");
        let g = plan(&format!("{set}\n{count}"), 1);
        assert!(g.processing_time_uses().is_empty(), "{set}");
        assert!(!g.explain().contains("note:"), "{set}");
    }
    // Back to the wall clock.
    assert_eq!(
        retention_lines(
            "SET 'state.ttl' = '1 h'; SET 'state.ttl.time-domain' = 'event-time'; SET 'state.ttl.time-domain' = 'processing-time';",
            count
        ),
        ["a group per key, until idle for 3600s (table.exec.state.ttl)"]
    );
    // person has no watermark: the join's would never advance.
    let (err, at) = plan_error(&format!(
        "{PEOPLE}SET 'state.ttl' = '1 h'; SET 'state.ttl.time-domain' = 'event-time';\n\
         SELECT b.price, p.name FROM bid b JOIN person p ON b.bidder = p.id"
    ));
    assert!(
        err.to_string().contains(
            "'table.exec.state.ttl.time-domain' is 'event-time' but no watermark reaches the join on every input"
        ),
        "{err}"
    );
    assert!(at.starts_with("SELECT b.price"), "{at}");
    let (err, at) = plan_error("SET 'table.exec.state.ttl.time-domain' = 'event';");
    assert!(
        err.to_string().contains(
            "is 'processing-time' (the wall clock) or 'event-time' (the watermark), not 'event'"
        ),
        "{err}"
    );
    assert_eq!(at, "'event'");
}

#[test]
fn a_state_ttl_that_is_not_a_duration_is_an_error_at_its_value() {
    let (err, at) = plan_error("SET 'table.exec.state.ttl' = 'forever';");
    assert!(
        err.to_string()
            .contains("cannot read the duration 'forever'"),
        "{err}"
    );
    assert!(at.ends_with("'forever'"), "{at}");
}

/// A source reads only the columns its query uses (with its event time);
/// the projection after it reads them at their new places, and a source
/// whose every column is used, or whose rows go elsewhere than into a
/// projection, is left whole.
#[test]
fn a_source_reads_only_the_columns_its_query_uses() {
    let g = plan(
        "SELECT price * 2 AS twice FROM bid WHERE auction % 7 = 0",
        1,
    )
    .pruned();
    let NodeKind::Source(s) = &g.nodes[0].kind else {
        panic!("{g:?}")
    };
    let read = s.read.as_ref().expect("the source is pruned");
    // bid: auction 0, bidder 1, price 2, date_time 3.
    assert_eq!(read.columns, [0, 2, 3]);
    let names: Vec<&str> = g.nodes[0]
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["auction", "price", "date_time"]);
    assert_eq!(g.nodes[1].schema, g.nodes[0].schema);
    let NodeKind::Project(p) = &g.nodes[2].kind else {
        panic!("{g:?}")
    };
    let mut read_at = Vec::new();
    for e in p.exprs.iter().chain(&p.filter) {
        e.clone().visit_columns(&mut |i| read_at.push(*i));
    }
    read_at.sort_unstable();
    // price is now column 1, auction column 0.
    assert_eq!(read_at, [0, 1]);
    assert!(
        g.explain().contains("reads 3 of its 4 columns"),
        "{}",
        g.explain()
    );
    // The pruned plan still builds (names and indices agree).
    build(&g, &BuildEnv::default()).expect("the pruned plan builds");
    // Pruning twice changes nothing.
    assert_eq!(g.clone().pruned(), g);

    let whole = plan("SELECT * FROM bid", 1).pruned();
    let NodeKind::Source(s) = &whole.nodes[0].kind else {
        panic!("{whole:?}")
    };
    assert!(s.read.is_none());
}

/// The comparisons of a column with a literal in the filter right after a
/// source are handed to its connector (either way round), and EXPLAIN
/// says so; a comparison of two columns, or an OR, is not.
#[test]
fn a_filters_column_bounds_are_pushed_to_the_source() {
    let g = plan(
        "SELECT auction FROM bid WHERE price >= 100 AND 5 > auction AND bidder <> 3 \
         AND (price < 7 OR auction = 1) AND price < bidder",
        1,
    )
    .pruned();
    let NodeKind::Source(s) = &g.nodes[0].kind else {
        panic!("{g:?}")
    };
    let bounds: Vec<String> = s
        .bounds
        .iter()
        .map(|b| format!("{} {} {}", b.column, b.op.symbol(), b.value))
        .collect();
    assert_eq!(bounds, ["price >= 100", "auction < 5"]);
    assert!(
        g.explain()
            .contains("filter pushed to the connector: price >= 100 AND auction < 5"),
        "{}",
        g.explain()
    );
    build(&g, &BuildEnv::default()).expect("the plan with bounds builds");
    let none = plan("SELECT auction FROM bid WHERE price > bidder", 1).pruned();
    let NodeKind::Source(s) = &none.nodes[0].kind else {
        panic!("{none:?}")
    };
    assert!(s.bounds.is_empty());
}

/// EXPLAIN (and the job's log) says when a query depends on the wall
/// clock, so that a replay will not give live's answer; an event-time
/// query has no such note.
#[test]
fn explain_warns_when_a_replay_will_not_reproduce_the_query() {
    let notes = |sql: &str| plan(sql, 1).processing_time_uses();
    let window = "SELECT auction, window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end";
    assert!(notes(window).is_empty());
    assert!(!plan(window, 1).explain().contains("note:"));
    let proctime = "CREATE VIEW timed AS SELECT *, PROCTIME() AS pt FROM bid;\n\
        SELECT window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE timed, DESCRIPTOR(pt), INTERVAL '10' SECOND)) GROUP BY window_start, window_end";
    assert_eq!(
        notes(proctime),
        ["its time column pt is PROCTIME(), the wall clock"]
    );
    let ttl = "SET 'table.exec.state.ttl' = '1 h';\nSELECT auction, COUNT(*) AS n FROM bid GROUP BY auction";
    let g = plan(ttl, 1);
    assert_eq!(
        g.processing_time_uses(),
        [
            "its state expires after 3600s idle by the wall clock (table.exec.state.ttl; 'table.exec.state.ttl.time-domain' = 'event-time' measures it on the watermark)"
        ]
    );
    assert!(
        g.explain().contains(
            "note: a replay of this query will not give live's answer: its state expires"
        ),
        "{}",
        g.explain()
    );
}

/// EXPLAIN shows a sink's options, but not its secrets: a password
/// option's value, and the password in a URL.
#[test]
fn explain_hides_passwords() {
    let mut session = Session::new(1);
    let sql = format!(
        "{BIDS}CREATE TABLE out (auction BIGINT) WITH ('connector' = 'postgres',
           'url' = 'postgres://app:s3cret@db:5432/shop', 'table-name' = 'out', 'password' = 'hunter2');
         EXPLAIN INSERT INTO out SELECT auction FROM bid;"
    );
    let outcomes = session
        .execute(&sql)
        .unwrap_or_else(|e| panic!("{}", e.render(&sql, "test")));
    let Some(Outcome::Explain(text)) = outcomes.into_iter().last() else {
        panic!("no EXPLAIN")
    };
    assert!(
        text.contains("url='postgres://app:***@db:5432/shop'") && text.contains("password='***'"),
        "{text}"
    );
    assert!(
        !text.contains("s3cret") && !text.contains("hunter2"),
        "{text}"
    );
}

/// A sink that cannot take an updating query says so when the query is
/// planned, at the query: an appending Postgres table (no PRIMARY KEY).
#[test]
fn a_sink_that_cannot_take_a_changelog_is_an_error_at_the_query() {
    let (err, at) = plan_error(
        "CREATE TABLE out (auction BIGINT, n BIGINT) WITH ('connector' = 'postgres',
           'url' = 'postgres://app@db/shop', 'table-name' = 'counts');
         INSERT INTO out SELECT auction, COUNT(*) FROM bid GROUP BY auction;",
    );
    assert!(
        err.to_string().contains(
            "'out' cannot take this query's rows: this query updates rows it wrote, and 'counts' has no key"
        ),
        "{err}"
    );
    assert!(at.starts_with("SELECT auction, COUNT(*)"), "{at}");
}

/// A statement set whose INSERTs read one source reads it once, and
/// writes its dead letters once: the dead-letter sink of a shared read is
/// shared too (two would write the same files).
#[test]
fn a_shared_source_writes_its_dead_letters_once() {
    let sql = "CREATE SINK dlq WITH ('connector' = 'blackhole');
        CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '5',
          'bad-data' = 'dead-letter', 'bad-data.dead-letter-sink' = 'dlq');
        CREATE TABLE a (id BIGINT) WITH ('connector' = 'blackhole');
        EXECUTE STATEMENT SET BEGIN
        INSERT INTO a SELECT id FROM src;
        INSERT INTO a SELECT id + 1 FROM src;
        END;";
    let g = plan(sql, 1);
    let sinks: Vec<&str> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Sink(s) => Some(s.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(sinks, ["a", "dlq", "a"]);
}
