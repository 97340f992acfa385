//! Flink SQL as a Flink user writes it: Flink's Nexmark scripts (written
//! here from NEXMARK.md in the shapes of Flink's own: one `nexmark` table
//! with ROW columns and a computed time attribute, a view per kind of
//! event, result tables written by INSERT INTO), tables as sources and
//! sinks, views, global aggregates, UNION, and group windows over any
//! input. Answers come from DataFusion in batch mode over the same input,
//! from hand, or (for the Nexmark scripts) from Eddy's own spelling of the
//! same query over the same generated events.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use eddy_connectors::{MemoryCollector, MemoryConnector};
use eddy_planner::graph::NodeKind;
use eddy_planner::{Job, Outcome, Session};

const EVENTS: u64 = 20_000;

fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .into()
}

/// Flink's DDL (`tests/flink`), its placeholders filled.
fn flink_ddl() -> String {
    let dir = manifest_dir().join("tests/flink");
    let text = ["ddl_gen.sql", "ddl_views.sql"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    text.replace("${NEXMARK_TABLE}", "datagen")
        .replace("${TPS}", "1000")
        .replace("${EVENTS_NUM}", &EVENTS.to_string())
        .replace("${PERSON_PROPORTION}", "1")
        .replace("${AUCTION_PROPORTION}", "3")
        .replace("${BID_PROPORTION}", "46")
}

/// Eddy's spelling of the Nexmark DDL: a source per kind of event.
fn eddy_ddl() -> String {
    std::fs::read_to_string(manifest_dir().join("tests/nexmark/ddl.sql"))
        .unwrap()
        .replace(
            "'events.num' = '100000'",
            &format!("'events.num' = '{EVENTS}', 'first-event.rate' = '1000'"),
        )
}

fn query(n: usize) -> String {
    std::fs::read_to_string(manifest_dir().join(format!("tests/nexmark/q{n}.sql"))).unwrap()
}

fn session(parallelism: usize) -> (Session, MemoryCollector) {
    let mut session = Session::new(parallelism);
    for f in eddy_connectors::nexmark::functions() {
        session.register_function(f).unwrap();
    }
    let collector = common::select_into_memory(&mut session);
    (session, collector)
}

/// Plans `sql` in `session` and runs its jobs as one, as `eddy run` does.
fn run_script(session: &mut Session, sql: &str) -> Job {
    let outcomes = session
        .execute(sql)
        .unwrap_or_else(|e| panic!("{}", e.render(sql, "script")));
    let jobs: Vec<Job> = outcomes
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Job(j) => Some(j),
            _ => None,
        })
        .collect();
    let job = Job::merge(jobs).expect("no job");
    common::run_job(session, &job);
    job
}

/// The columns of query `n`'s result table, in Flink's SQL types, as
/// Eddy's spelling of it produces them.
fn result_columns(n: usize) -> String {
    let (mut eddy, _) = session(1);
    let sql = format!("{}\n{};", eddy_ddl(), query(n));
    let outcomes = eddy.execute(&sql).unwrap();
    let Some(Outcome::Job(job)) = outcomes.last() else {
        panic!("q{n}: no job")
    };
    let sink = job
        .graph
        .nodes
        .iter()
        .find(|n| matches!(n.kind, NodeKind::Sink(_)))
        .unwrap();
    sink.schema
        .fields()
        .iter()
        .filter(|f| f.name() != "_op")
        .map(|f| {
            format!(
                "`{}` {}",
                f.name(),
                eddy_planner::types::sql_name(f.data_type())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Nexmark queries whose answer does not depend on processing time
/// or ties (see tests/nexmark.rs), whose tables are all generated.
const QUERIES: &[usize] = &[
    0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
];

#[test]
fn flink_nexmark_scripts_give_the_answers_of_eddys_own_spelling() {
    for &n in QUERIES {
        let (mut eddy, eddy_rows) = session(1);
        run_script(&mut eddy, &format!("{}\n{};", eddy_ddl(), query(n)));
        let want = eddy_rows.batches();
        assert!(!want.is_empty(), "q{n}: Eddy's spelling gave no rows");
        // The result table, as a Flink script declares it, written by
        // INSERT INTO (into memory here, to compare).
        let script = format!(
            "{}\nCREATE TABLE nexmark_q{n} ({}) WITH ('connector' = 'memory');\nINSERT INTO nexmark_q{n}\n{};",
            flink_ddl(),
            result_columns(n),
            query(n)
        );
        let mut flink = Session::new(2);
        for f in eddy_connectors::nexmark::functions() {
            flink.register_function(f).unwrap();
        }
        let got = MemoryCollector::default();
        flink
            .register_connector(Arc::new(MemoryConnector {
                collector: got.clone(),
            }))
            .unwrap();
        run_script(&mut flink, &script);
        let (want, got) = (common::render(&want), common::render(&got.batches()));
        assert_eq!(want.len(), got.len(), "q{n}: row counts differ");
        assert!(want == got, "q{n}: the Flink script's answer differs");
    }
}

/// Every script at once, into `blackhole` tables as Flink's are: one job
/// (a statement set) that reads the one source once.
#[test]
fn flink_nexmark_scripts_run_unchanged_as_one_statement_set() {
    let mut script = flink_ddl();
    let mut inserts = String::new();
    // q12's windows follow the wall clock (PROCTIME()): it runs here, and
    // is compared nowhere.
    for &n in QUERIES.iter().chain(&[12]) {
        script.push_str(&format!(
            "\nCREATE TABLE nexmark_q{n} ({}) WITH ('connector' = 'blackhole');",
            result_columns(n)
        ));
        inserts.push_str(&format!("INSERT INTO nexmark_q{n}\n{};\n", query(n)));
    }
    let (mut flink, _) = session(2);
    let set = format!("{script}\nEXECUTE STATEMENT SET\nBEGIN\n{inserts}END;");
    let job = run_script(&mut flink, &set);
    let sources = job
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Source(_)))
        .count();
    assert_eq!(sources, 1, "the statement set reads the nexmark table once");
    let sinks = job
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Sink(_)))
        .count();
    assert_eq!(sinks, QUERIES.len() + 1);
}

// ---------------------------------------------------------------------------
// A bounded file of clicks, and DataFusion's answers over the same rows.
// ---------------------------------------------------------------------------

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

/// 100 clicks: user, time (ms; irregular gaps, some of 20 s and more,
/// in time order) and a value. Deterministic.
fn clicks() -> Vec<(i64, i64, i64)> {
    let mut t = 1_700_000_000_000i64;
    (0..100i64)
        .map(|i| {
            let gap =
                [700, 3_000, 25_000, 1_200, 40_000, 9_000, 19_999, 20_000][(i * 7 % 8) as usize];
            t += gap;
            (i * 37 % 13, t, (i * 53) % 97)
        })
        .collect()
}

/// The clicks as a CSV file in `dir`, and the DDL of a table over it
/// named `name`.
fn clicks_table(dir: &std::path::Path, name: &str, rows: &[(i64, i64, i64)]) -> String {
    let path = dir.join(format!("{name}.csv"));
    let text: String = rows
        .iter()
        .map(|(u, t, v)| {
            let ts = chrono::DateTime::from_timestamp_millis(*t).unwrap();
            format!("{u},{},{v}\n", ts.format("%Y-%m-%d %H:%M:%S%.3f"))
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    format!(
        "CREATE TABLE {name} (user_id BIGINT, ts TIMESTAMP(3), v BIGINT,
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');\n",
        path.display()
    )
}

fn clicks_batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("v", DataType::Int64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

/// DataFusion's answer, in batch mode, to `sql` over these tables.
fn datafusion_answer(tables: &[(&str, RecordBatch)], sql: &str) -> Vec<String> {
    let ctx = datafusion::prelude::SessionContext::new();
    for (name, batch) in tables {
        let table =
            datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch.clone()]])
                .unwrap();
        ctx.register_table(*name, Arc::new(table)).unwrap();
    }
    common::datafusion_answer(&ctx, sql)
}

/// Eddy's answer: the net rows of the script's last statement, a SELECT.
fn eddy_answer(sql: &str, parallelism: usize) -> Vec<String> {
    let (mut session, rows) = session(parallelism);
    run_script(&mut session, sql);
    common::render(&rows.batches())
}

/// Sessions of `gap` ms per key, as Flink defines them: a row opens
/// `[t, t + gap)`, and windows that overlap merge. Rows as
/// `key | start | end | count`, with times as Eddy prints them.
fn sessions_model(
    rows: &[(i64, i64, i64)],
    key: impl Fn(i64) -> Option<i64>,
    gap: i64,
) -> Vec<String> {
    let mut by_key: std::collections::BTreeMap<Option<i64>, Vec<i64>> = Default::default();
    for (u, t, _) in rows {
        by_key.entry(key(*u)).or_default().push(*t);
    }
    let show = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S%.3f")
            .to_string()
    };
    let mut out = Vec::new();
    for (k, mut times) in by_key {
        times.sort_unstable();
        let mut start = times[0];
        let mut last = times[0];
        let mut n = 0;
        let mut emit = |start: i64, last: i64, n: usize| {
            let key = k.map_or(String::new(), |k| format!("{k} | "));
            out.push(format!("{key}{} | {} | {n}", show(start), show(last + gap)));
        };
        for t in times {
            if t >= last + gap {
                emit(start, last, n);
                start = t;
                n = 0;
            }
            last = t;
            n += 1;
        }
        emit(start, last, n);
    }
    out.sort();
    out
}

#[test]
fn a_session_window_without_a_key_ends_with_its_bounded_input() {
    let dir = tempfile::tempdir().unwrap();
    let rows = clicks();
    let ddl = clicks_table(dir.path(), "clicks", &rows);
    let want = sessions_model(&rows, |_| None, 20_000);
    assert!(want.len() > 3, "{want:?}");
    let legacy = format!(
        "{ddl}SELECT SESSION_START(ts, INTERVAL '20' SECOND), SESSION_END(ts, INTERVAL '20' SECOND), COUNT(*)
         FROM clicks GROUP BY SESSION(ts, INTERVAL '20' SECOND);"
    );
    assert_eq!(eddy_answer(&legacy, 2), want);
    let tvf = format!(
        "{ddl}SELECT window_start, window_end, COUNT(*)
         FROM TABLE(SESSION(TABLE clicks, DESCRIPTOR(ts), INTERVAL '20' SECOND))
         GROUP BY window_start, window_end;"
    );
    assert_eq!(eddy_answer(&tvf, 2), want);
}

#[test]
fn a_session_window_keyed_by_an_expression() {
    let dir = tempfile::tempdir().unwrap();
    let rows = clicks();
    let ddl = clicks_table(dir.path(), "clicks", &rows);
    let want = sessions_model(&rows, |u| Some(u % 4), 20_000);
    let sql = format!(
        "{ddl}SELECT user_id % 4, SESSION_START(ts, INTERVAL '20' SECOND), SESSION_END(ts, INTERVAL '20' SECOND), COUNT(*)
         FROM clicks GROUP BY SESSION(ts, INTERVAL '20' SECOND), user_id % 4;"
    );
    assert_eq!(eddy_answer(&sql, 2), want);
}

#[test]
fn a_legacy_tumble_over_a_subquery_and_a_tvf_over_a_view() {
    let dir = tempfile::tempdir().unwrap();
    let rows = clicks();
    let ddl = clicks_table(dir.path(), "clicks", &rows);
    let want = datafusion_answer(
        &[("clicks", clicks_batch(&rows))],
        "SELECT user_id % 3, date_bin(INTERVAL '10 seconds', ts), COUNT(*), SUM(v)
         FROM clicks WHERE v > 10 GROUP BY user_id % 3, date_bin(INTERVAL '10 seconds', ts)",
    );
    let legacy = format!(
        "{ddl}SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND), COUNT(*), SUM(v)
         FROM (SELECT user_id % 3 AS k, ts, v FROM clicks WHERE v > 10) AS c
         GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND);"
    );
    assert_eq!(eddy_answer(&legacy, 2), want);
    let view = format!(
        "{ddl}CREATE TEMPORARY VIEW hot (k, ts, v) AS
           SELECT user_id % 3, ts, v FROM clicks WHERE v > 10;
         SELECT k, window_start, COUNT(*), SUM(v)
         FROM TABLE(TUMBLE(TABLE hot, DESCRIPTOR(ts), INTERVAL '10' SECOND))
         GROUP BY k, window_start, window_end;"
    );
    assert_eq!(eddy_answer(&view, 2), want);
}

#[test]
fn a_global_aggregate_is_one_updating_row() {
    let dir = tempfile::tempdir().unwrap();
    let rows = clicks();
    let ddl = clicks_table(dir.path(), "clicks", &rows);
    let batch = clicks_batch(&rows);
    let want = datafusion_answer(
        &[("clicks", batch.clone())],
        "SELECT COUNT(*), SUM(v), MAX(v) FROM clicks",
    );
    let sql = format!("{ddl}SELECT COUNT(*), SUM(v), MAX(v) FROM clicks;");
    assert_eq!(eddy_answer(&sql, 2), want);
    // HAVING over the one row: its final value passes, so it is there.
    let want = datafusion_answer(
        &[("clicks", batch)],
        "SELECT COUNT(*) FROM clicks HAVING SUM(v) > 100",
    );
    assert_eq!(want.len(), 1);
    let sql = format!("{ddl}SELECT COUNT(*) FROM clicks HAVING SUM(v) > 100;");
    assert_eq!(eddy_answer(&sql, 1), want);
    // Over many small batches the row is updated: -U then +U.
    let (mut session, out) = session(1);
    run_script(
        &mut session,
        "CREATE TABLE bid (price BIGINT) WITH ('connector' = 'nexmark', 'events.num' = '1000', 'batch.size' = '100');
         SELECT COUNT(*) AS n FROM bid;",
    );
    let batches = out.batches();
    let ops: Vec<i8> = batches
        .iter()
        .flat_map(|b| {
            let op = b.column_by_name("_op").unwrap();
            op.as_any()
                .downcast_ref::<datafusion::arrow::array::Int8Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert!(ops.contains(&1) && ops.contains(&2), "-U and +U: {ops:?}");
    // 1000 events hold 920 bids (46 of every 50).
    assert_eq!(common::render(&batches), vec!["920".to_string()]);
}

#[test]
fn union_all_casts_keeps_the_time_attribute_and_union_removes_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let rows = clicks();
    let (a, b): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.2 % 2 == 0);
    let ddl = clicks_table(dir.path(), "evens", &a) + &clicks_table(dir.path(), "odds", &b);
    // Different column types: INT and DOUBLE widen to DOUBLE, as in Flink.
    let ddl = ddl.replacen("v BIGINT", "v INT", 1);
    let tables = [("evens", clicks_batch(&a)), ("odds", clicks_batch(&b))];
    let want = datafusion_answer(
        &tables,
        "SELECT date_bin(INTERVAL '10 seconds', ts), COUNT(*), SUM(v)
         FROM (SELECT ts, v FROM evens UNION ALL SELECT ts, CAST(v AS DOUBLE) FROM odds) u
         GROUP BY date_bin(INTERVAL '10 seconds', ts)",
    );
    let sql = format!(
        "{ddl}CREATE VIEW everything AS
           SELECT ts, v FROM evens UNION ALL SELECT ts, CAST(v AS DOUBLE) FROM odds;
         SELECT window_start, COUNT(*), SUM(v)
         FROM TABLE(TUMBLE(TABLE everything, DESCRIPTOR(ts), INTERVAL '10' SECOND))
         GROUP BY window_start, window_end;"
    );
    assert_eq!(eddy_answer(&sql, 2), want);
    let want = datafusion_answer(
        &tables,
        "SELECT user_id FROM evens UNION SELECT user_id FROM odds",
    );
    let sql = format!("{ddl}SELECT user_id FROM evens UNION SELECT user_id FROM odds;");
    assert_eq!(eddy_answer(&sql, 2), want);
}

#[test]
fn tables_are_written_by_insert_into_and_read_where_their_connector_allows() {
    // `memory` is the connector the bare SELECTs of `session` write to.
    let (mut session, out) = session(1);
    let sql = "CREATE TABLE t (a BIGINT, b STRING, c DOUBLE) WITH ('connector' = 'memory');
        INSERT INTO t VALUES (1, 'one', 1.5), (2, 'two', NULL);
        INSERT INTO t (c, b) VALUES (3, 'three');";
    run_script(&mut session, sql);
    assert_eq!(
        common::render(&out.batches()),
        ["1 | one | 1.5", "2 | two | NULL", "NULL | three | 3.0"]
    );
}

/// The message and the `line:column` of the error `sql` gets.
fn error_of(sql: &str) -> (String, String) {
    let (mut session, _) = session(1);
    let err = session.execute(sql).expect_err("an error");
    let text = err.render(sql, "t.sql");
    let at = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("--> t.sql:"))
        .unwrap_or("")
        .to_string();
    (text, at)
}

#[test]
fn reading_a_write_only_table_or_writing_a_read_only_one_is_a_located_error() {
    let ddl = "CREATE TABLE sink (price BIGINT) WITH ('connector' = 'blackhole');
CREATE TABLE bid (price BIGINT) WITH ('connector' = 'nexmark');\n";
    let (text, at) = error_of(&format!("{ddl}SELECT price FROM sink;"));
    assert!(
        text.contains("table 'sink' cannot be read: its connector 'blackhole' only writes"),
        "{text}"
    );
    assert_eq!(at, "3:19", "{text}");
    let (text, at) = error_of(&format!("{ddl}INSERT INTO bid SELECT price FROM bid;"));
    assert!(
        text.contains("table 'bid' cannot be written: its connector 'nexmark' only reads"),
        "{text}"
    );
    assert_eq!(at, "3:13", "{text}");
}

#[test]
fn metadata_columns_are_checked_against_the_connector() {
    let (text, at) = error_of(
        "CREATE TABLE bid (price BIGINT,\n  part INT METADATA FROM 'partition' VIRTUAL) WITH ('connector' = 'nexmark');",
    );
    assert!(
        text.contains("unknown metadata key 'partition' (the 'nexmark' connector has no metadata)"),
        "{text}"
    );
    assert_eq!(at, "2:3", "{text}");
    let kafka = "WITH ('connector' = 'kafka', 'topic' = 't', 'properties.bootstrap.servers' = 'x:1', 'format' = 'json')";
    let (text, at) = error_of(&format!(
        "CREATE TABLE t (v BIGINT, o BIGINT METADATA FROM 'ofset') {kafka};"
    ));
    assert!(
        text.contains("unknown metadata key 'ofset' (its metadata: topic, partition, offset, timestamp, timestamp-type, headers)"),
        "{text}"
    );
    assert_eq!(at, "1:27", "{text}");
    // A table is also written: what cannot be written must be VIRTUAL.
    let (text, _) = error_of(&format!(
        "CREATE TABLE t (v BIGINT, o BIGINT METADATA FROM 'offset') {kafka};"
    ));
    assert!(
        text.contains("metadata 'offset' can only be read: declare the column VIRTUAL"),
        "{text}"
    );
}

/// Flink's keep-first deduplication on processing time (`ORDER BY` a
/// `PROCTIME()` column, `= 1`): each key's first row as it arrives,
/// append-only (a plain Kafka sink takes it), repeats dropped. The file is
/// one split read in order, and its times grow, so "first to arrive" is
/// "first by time", which DataFusion computes.
#[test]
fn keep_first_deduplication_on_processing_time() {
    let dir = tempfile::tempdir().unwrap();
    let rows = clicks();
    let path = dir.path().join("clicks.csv");
    let ddl = clicks_table(dir.path(), "clicks", &rows);
    let ddl = ddl.replace(
        "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND",
        "pt AS PROCTIME()",
    );
    assert!(path.exists());
    let want = datafusion_answer(
        &[("clicks", clicks_batch(&rows))],
        "SELECT user_id, ts, v FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts) AS rn FROM clicks)
         WHERE rn = 1",
    );
    for order in ["pt", "PROCTIME()"] {
        let sql = format!(
            "{ddl}SELECT user_id, ts, v FROM (
               SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY {order}) AS rn
               FROM clicks)
             WHERE rn = 1;"
        );
        let (mut session, collector) = session(2);
        run_script(&mut session, &sql);
        let batches = collector.batches();
        assert!(
            batches.iter().all(|b| b.schema().index_of("_op").is_err()),
            "ORDER BY {order}: the output is append-only"
        );
        assert_eq!(common::render(&batches), want, "ORDER BY {order}");
    }
}

#[test]
fn views_over_views_used_twice_and_join_using() {
    let dir = tempfile::tempdir().unwrap();
    let rows = clicks();
    let ddl = clicks_table(dir.path(), "clicks", &rows);
    let batch = clicks_batch(&rows);
    // A view over a view, read twice in one query (a self-join), by USING.
    let want = datafusion_answer(
        &[("clicks", batch)],
        "WITH big AS (SELECT user_id, ts, v FROM clicks WHERE v > 50),
              per_user AS (SELECT user_id, COUNT(*) AS n FROM big GROUP BY user_id)
         SELECT a.user_id, a.n, b.n FROM per_user a JOIN per_user b ON a.user_id = b.user_id",
    );
    let sql = format!(
        "{ddl}CREATE VIEW big AS SELECT user_id, ts, v FROM clicks WHERE v > 50;
         CREATE VIEW per_user (user_id, n) AS SELECT user_id, COUNT(*) FROM big GROUP BY user_id;
         SELECT a.user_id, a.n, b.n FROM per_user a JOIN per_user b USING (user_id);"
    );
    assert_eq!(eddy_answer(&sql, 2), want);
}

#[test]
fn a_computed_column_is_the_time_attribute() {
    let dir = tempfile::tempdir().unwrap();
    let rows = clicks();
    let ddl = clicks_table(dir.path(), "clicks", &rows).replace(
        "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND",
        "later AS ts + INTERVAL '5' SECOND, doubled AS v * 2,
             WATERMARK FOR later AS later - INTERVAL '1' SECOND",
    );
    let want = datafusion_answer(
        &[("clicks", clicks_batch(&rows))],
        "SELECT date_bin(INTERVAL '10 seconds', ts + INTERVAL '5 seconds'), SUM(v * 2)
         FROM clicks GROUP BY date_bin(INTERVAL '10 seconds', ts + INTERVAL '5 seconds')",
    );
    let sql = format!(
        "{ddl}SELECT window_start, SUM(doubled)
         FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(later), INTERVAL '10' SECOND))
         GROUP BY window_start, window_end;"
    );
    assert_eq!(eddy_answer(&sql, 2), want);
}

#[test]
fn the_catalog_statements_of_flink() {
    let (mut session, _) = session(1);
    let info = |session: &mut Session, sql: &str| -> String {
        match session.execute(sql).unwrap().pop() {
            Some(Outcome::Info(text)) => text,
            other => panic!("{sql}: {other:?}"),
        }
    };
    session
        .execute(
            "CREATE TABLE bid (price BIGINT, dateTime TIMESTAMP(3), euros AS price * 2,
               WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND)
             WITH ('connector' = 'nexmark');
             CREATE TABLE out_table (a BIGINT) WITH ('connector' = 'blackhole');
             CREATE VIEW v AS SELECT dateTime, euros FROM bid;",
        )
        .unwrap();
    assert_eq!(info(&mut session, "SHOW TABLES"), "bid\nout_table\n");
    assert_eq!(info(&mut session, "SHOW VIEWS"), "v\n");
    let described = info(&mut session, "DESCRIBE bid");
    let lines: Vec<&str> = described.lines().collect();
    assert!(lines[0].starts_with("name"), "{described}");
    assert!(lines[0].contains("watermark"), "{described}");
    let datetime = lines.iter().find(|l| l.starts_with("datetime")).unwrap();
    assert!(datetime.contains("TIMESTAMP(3) *ROWTIME*"), "{described}");
    assert!(
        datetime.ends_with("(datetime - INTERVAL '4' SECOND)"),
        "{described}"
    );
    let euros = lines.iter().find(|l| l.starts_with("euros")).unwrap();
    assert!(
        euros.contains("BIGINT") && euros.contains("AS "),
        "{described}"
    );
    let view = info(&mut session, "DESCRIBE v");
    assert!(
        view.contains("*ROWTIME*"),
        "the view keeps the time attribute: {view}"
    );
    info(&mut session, "DROP VIEW v");
    info(&mut session, "DROP TABLE out_table");
    assert_eq!(info(&mut session, "SHOW TABLES"), "bid\n");
    assert_eq!(info(&mut session, "SHOW VIEWS"), "");
}

#[test]
fn datagen_generates_the_declared_rows() {
    let (mut session, out) = session(1);
    run_script(
        &mut session,
        "CREATE TABLE g (id BIGINT, score INT, name STRING) WITH (
           'connector' = 'datagen', 'rows-per-second' = '100000', 'seed' = '7',
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '500',
           'fields.score.min' = '1', 'fields.score.max' = '6', 'fields.name.length' = '4');
         SELECT COUNT(*), SUM(id), MIN(score) >= 1 AND MAX(score) <= 6, MIN(CHAR_LENGTH(name)) FROM g;",
    );
    // 1 + ... + 500 = 125250.
    assert_eq!(common::render(&out.batches()), ["500 | 125250 | true | 4"]);
}

#[test]
fn insert_column_lists_are_checked() {
    let ddl = "CREATE TABLE t (a BIGINT, b STRING) WITH ('connector' = 'blackhole');
CREATE SINK s WITH ('connector' = 'blackhole');\n";
    let (text, at) = error_of(&format!("{ddl}INSERT INTO t (a, c) VALUES (1, 'x');"));
    assert!(text.contains("'t' has no column 'c'"), "{text}");
    assert_eq!(at, "3:19", "{text}");
    let (text, _) = error_of(&format!("{ddl}INSERT INTO t (a) VALUES (1, 'x');"));
    assert!(
        text.contains("names 1 columns of 't' but the query produces 2"),
        "{text}"
    );
    let (text, at) = error_of(&format!("{ddl}INSERT INTO s (a) VALUES (1);"));
    assert!(text.contains("'s' declares no columns"), "{text}");
    assert_eq!(at, "3:16", "{text}");
}

#[test]
fn a_window_over_an_interval_join_keeps_its_time_attribute() {
    let dir = tempfile::tempdir().unwrap();
    let rows = clicks();
    let others: Vec<(i64, i64, i64)> = rows
        .iter()
        .map(|(u, t, v)| (*u, t + 7_000, v + 1))
        .collect();
    // One row per batch: the watermark moves with every row, so a joined
    // row would be late if the join did not hold its watermark back.
    let ddl = (clicks_table(dir.path(), "clicks", &rows)
        + &clicks_table(dir.path(), "later", &others))
        .replace("'format' = 'csv'", "'format' = 'csv', 'batch.size' = '1'");
    let want = datafusion_answer(
        &[
            ("clicks", clicks_batch(&rows)),
            ("later", clicks_batch(&others)),
        ],
        "SELECT date_bin(INTERVAL '10 seconds', a.ts), COUNT(*), SUM(b.v)
         FROM clicks a JOIN later b ON a.user_id = b.user_id
           AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '30 seconds'
         GROUP BY date_bin(INTERVAL '10 seconds', a.ts)",
    );
    assert!(want.len() > 3, "{want:?}");
    let sql = format!(
        "{ddl}CREATE VIEW j AS SELECT a.ts, b.v FROM clicks a JOIN later b ON a.user_id = b.user_id
           AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '30' SECOND;
         SELECT window_start, COUNT(*), SUM(v)
         FROM TABLE(TUMBLE(TABLE j, DESCRIPTOR(ts), INTERVAL '10' SECOND))
         GROUP BY window_start, window_end;"
    );
    for parallelism in [1, 3] {
        assert_eq!(
            eddy_answer(&sql, parallelism),
            want,
            "parallelism {parallelism}"
        );
    }
}

#[test]
fn nexmark_proportions_share_out_the_events() {
    let ddl = flink_ddl()
        .replace(
            &format!("'events.num' = '{EVENTS}'"),
            "'events.num' = '1000'",
        )
        .replace("'person.proportion' = '1'", "'person.proportion' = '2'")
        .replace("'bid.proportion' = '46'", "'bid.proportion' = '5'");
    // Rounds of 2 persons, 3 auctions and 5 bids: 100 rounds in 1000 events.
    let sql = format!("{ddl}\nSELECT event_type, COUNT(*) FROM datagen GROUP BY event_type;");
    assert_eq!(eddy_answer(&sql, 1), ["0 | 200", "1 | 300", "2 | 500"]);
    let (text, _) = error_of(&format!(
        "{}\nSELECT * FROM bid;",
        ddl.replace("'auction.proportion' = '3'", "'auction.proportion' = '0'")
    ));
    assert!(
        text.contains("'auction.proportion' must be at least 1"),
        "{text}"
    );
}

/// `upsert-kafka` needs a PRIMARY KEY; a table with one reads as a
/// changelog, normalized by key (EXPLAIN shows it), which an updating
/// aggregate takes and a window refuses.
#[test]
fn upsert_kafka_tables_are_keyed_changelogs() {
    let with = "WITH ('connector' = 'upsert-kafka', 'topic' = 't', 'properties.bootstrap.servers' = 'x:1', 'key.format' = 'json', 'value.format' = 'json')";
    let (text, at) = error_of(&format!("CREATE TABLE t (k BIGINT, v BIGINT) {with};"));
    assert!(
        text.contains("the 'upsert-kafka' connector reads upserts by key: declare the key with PRIMARY KEY (...) NOT ENFORCED"),
        "{text}"
    );
    assert_eq!(at, "1:14", "{text}");
    let (text, _) = error_of(&format!(
        "CREATE TABLE t (k BIGINT, v BIGINT, PRIMARY KEY (k) NOT ENFORCED) {}",
        with.replace(", 'key.format' = 'json'", "")
    ));
    assert!(text.contains("'key.format'"), "{text}");
    let (mut session, _) = session(2);
    session
        .execute(&format!(
            "CREATE TABLE t (k BIGINT, v BIGINT, ts TIMESTAMP(3), PRIMARY KEY (k) NOT ENFORCED) {with};"
        ))
        .unwrap();
    let plan = match session
        .execute("EXPLAIN SELECT COUNT(*), SUM(v) FROM t")
        .unwrap()
        .pop()
    {
        Some(eddy_planner::Outcome::Explain(text)) => text,
        other => panic!("{other:?}"),
    };
    assert!(plan.contains("ChangelogNormalize by (k)"), "{plan}");
    let err = session
        .execute(
            "SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end",
        )
        .expect_err("a window over a changelog");
    assert!(err.to_string().contains("changelog"), "{err}");
}

/// Avro's records are binary, not lines: the file connector refuses them
/// at the format, and `avro-confluent` names its missing registry.
#[test]
fn avro_formats_are_checked_where_they_are_used() {
    let (text, _) = error_of(
        "CREATE SOURCE f (a BIGINT) WITH ('connector' = 'file', 'path' = '/tmp', 'format' = 'avro');",
    );
    assert!(
        text.contains("the 'avro' format's records are not lines"),
        "{text}"
    );
    let (text, _) = error_of(
        "CREATE SOURCE k (a BIGINT) WITH ('connector' = 'kafka', 'topic' = 't', 'properties.bootstrap.servers' = 'x:1', 'scan.startup.mode' = 'earliest-offset', 'format' = 'avro-confluent');",
    );
    assert!(text.contains("needs 'avro-confluent.url'"), "{text}");
}
