//! The differential oracle for the keyed operators beyond windows: regular
//! and interval joins, OVER aggregates, Top-N and deduplication. Random
//! bounded inputs (random keys, values with NULLs, event times out of
//! order, some rows far behind) at random batching and parallelism 1 to 4
//! must give what DataFusion in batch mode gives for the same rows, less
//! the rows a model of the rules calls late.
//!
//! - A **regular join** keeps every row: lateness does not exist for it,
//!   and the answer is the batch join of all rows, whatever their order.
//! - An **interval join** reads two sources whose relative progress is up
//!   to the machine, so which far-behind row would be late is not
//!   determined; its inputs here are out of order only within the
//!   watermark's bound, and the answer is the batch interval join.
//! - An **OVER** aggregate in event time and a keep-first
//!   **deduplication** emit a row once the watermark passes it, and drop a
//!   row already behind the watermark when it arrives (late). The source is
//!   one file (one split, read in order), so the model knows the watermark
//!   at each row: `max(ts) - delay` over the batches before it.
//! - An updating **Top-N** (ordered by value, not time) has no lateness.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{render, run_select};
use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::prelude::{SessionConfig, SessionContext};
use proptest::prelude::*;

const BASE: i64 = 1_704_067_200_000;
const DELAY: i64 = 2_000;

/// `(key, event time in ms, value)`.
type Row = (i64, i64, Option<i64>);

#[derive(Debug, Clone)]
struct Case {
    rows: Vec<Row>,
    /// A second input (the right side of a join).
    right: Vec<Row>,
    batch_size: usize,
    parallelism: usize,
}

/// Rows 200 ms apart, moved by up to `steps` of 200 ms either way (out of
/// order), some (with `far`) 20 s behind. Event times are distinct (ties
/// would make a ROWS frame's order a matter of arrival).
fn arb_rows(steps: i64, far: bool) -> impl Strategy<Value = Vec<Row>> {
    let far = if far { 0.1 } else { 0.0 };
    prop::collection::vec(
        (
            0i64..4,
            -steps..=steps,
            prop::bool::weighted(far),
            prop::option::weighted(0.85, -50i64..100),
        ),
        1..50,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (k, j, behind, v))| {
                let behind = if behind { -20_000 } else { 0 };
                // `+ i` keeps times distinct (fewer than 200 rows).
                let i = i as i64;
                (k, BASE + 200 * (i + j) + i + behind, v)
            })
            .collect()
    })
}

/// Cases whose rows are out of order by up to `steps` × 200 ms (the
/// watermark allows 2 s: 10 steps), with rows 20 s behind if `far`.
fn arb_case(steps: i64, far: bool) -> impl Strategy<Value = Case> {
    (
        arb_rows(steps, far),
        arb_rows(steps, far),
        1usize..5,
        1usize..=4,
    )
        .prop_map(|(rows, right, batch_size, parallelism)| Case {
            rows,
            right,
            batch_size,
            parallelism,
        })
}

fn write_rows(path: &Path, rows: &[Row]) {
    let text: String = rows
        .iter()
        .map(|(k, ts, v)| {
            let v = v.map_or("null".to_string(), |v| v.to_string());
            format!("{{\"k\": {k}, \"ts\": {ts}, \"v\": {v}}}\n")
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// The engine: `query` over sources `l` and `r` (files of the case's rows).
fn stream(case: &Case, query: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (l, r) = (dir.path().join("l.json"), dir.path().join("r.json"));
    write_rows(&l, &case.rows);
    write_rows(&r, &case.right);
    let source = |name: &str, path: &Path| {
        format!(
            "CREATE SOURCE {name} (k BIGINT, ts TIMESTAMP(3), v BIGINT,
               WATERMARK FOR ts AS ts - INTERVAL '{DELAY}' MILLISECOND)
             WITH (connector = 'file', path = '{}', 'batch.size' = '{}');",
            path.display(),
            case.batch_size
        )
    };
    let sql = format!("{}{}{query};", source("l", &l), source("r", &r));
    render(&run_select(&sql, case.parallelism))
}

/// DataFusion, batch mode: `query` over tables `l` and `r` of these rows.
fn batch(l: &[Row], r: &[Row], query: &str) -> Vec<String> {
    let table = |rows: &[Row]| {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
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
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    };
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    ctx.register_batch("l", table(l)).unwrap();
    ctx.register_batch("r", table(r)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let out = runtime
        .block_on(async { ctx.sql(query).await.unwrap().collect().await })
        .unwrap();
    render(&out)
}

/// The rows that are on time by the rules: a row whose time is at or
/// behind the watermark when its batch arrives is late. The watermark
/// advances after each batch to `max(ts) - delay`.
fn on_time(rows: &[Row], batch_size: usize) -> Vec<Row> {
    let mut watermark = i64::MIN;
    let mut max_ts = i64::MIN;
    let mut kept = Vec::new();
    for batch in rows.chunks(batch_size) {
        for &row in batch {
            if row.1 > watermark {
                kept.push(row);
            }
            max_ts = max_ts.max(row.1);
        }
        watermark = watermark.max(max_ts - DELAY);
    }
    kept
}

const REGULAR_JOIN: &str = "SELECT l.k, l.v, r.v FROM l JOIN r ON l.k = r.k AND l.v < r.v";
const INTERVAL_JOIN: &str = "SELECT l.k, l.ts, r.ts FROM l JOIN r ON l.k = r.k
     AND r.ts BETWEEN l.ts - INTERVAL '1' SECOND AND l.ts + INTERVAL '500' MILLISECOND";
const OVER: &str = "SELECT k, ts, v,
       SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s,
       COUNT(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS c
     FROM l";
/// The same with every earlier row (a running accumulator, no rows kept).
const OVER_UNBOUNDED: &str = "SELECT k, ts, v,
       SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS s,
       MIN(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS m
     FROM l";
const TOP_N: &str = "SELECT k, v FROM (
       SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM l)
     WHERE rn <= 2";
const FIRST_ROWS: &str = "SELECT k, ts, v FROM (
       SELECT k, ts, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts ASC) AS rn FROM l)
     WHERE rn = 1";

/// Top-N by value: NULLs sort last descending (as in Flink); rows with
/// equal values are interchangeable in `(k, v)`.
fn top_two(rows: &[Row]) -> Vec<String> {
    let mut by_key: BTreeMap<i64, Vec<Option<i64>>> = BTreeMap::new();
    for &(k, _, v) in rows {
        by_key.entry(k).or_default().push(v);
    }
    let mut out = Vec::new();
    for (k, mut vs) in by_key {
        vs.sort_by(|a, b| match (a, b) {
            (Some(x), Some(y)) => y.cmp(x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        for v in vs.into_iter().take(2) {
            out.push(format!(
                "{k} | {}",
                v.map_or("NULL".to_string(), |v| v.to_string())
            ));
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn a_regular_join_equals_the_batch_join_whatever_the_order(case in arb_case(15, true)) {
        let want = batch(&case.rows, &case.right, REGULAR_JOIN);
        prop_assert_eq!(stream(&case, REGULAR_JOIN), want, "{:?}", case);
    }

    #[test]
    fn an_interval_join_equals_the_batch_interval_join(case in arb_case(4, false)) {
        let want = batch(&case.rows, &case.right, INTERVAL_JOIN);
        prop_assert_eq!(stream(&case, INTERVAL_JOIN), want, "{:?}", case);
    }

    #[test]
    fn an_event_time_over_equals_the_batch_over_of_the_rows_on_time(case in arb_case(15, true)) {
        let kept = on_time(&case.rows, case.batch_size);
        prop_assert_eq!(stream(&case, OVER), batch(&kept, &[], OVER), "{:?}", case);
        prop_assert_eq!(
            stream(&case, OVER_UNBOUNDED),
            batch(&kept, &[], OVER_UNBOUNDED),
            "{:?}",
            case
        );
    }

    #[test]
    fn keep_first_deduplication_keeps_the_first_row_on_time(case in arb_case(15, true)) {
        let kept = on_time(&case.rows, case.batch_size);
        prop_assert_eq!(stream(&case, FIRST_ROWS), batch(&kept, &[], FIRST_ROWS), "{:?}", case);
    }

    #[test]
    fn an_updating_top_n_nets_out_to_the_top_rows(case in arb_case(15, true)) {
        prop_assert_eq!(stream(&case, TOP_N), top_two(&case.rows), "{:?}", case);
    }
}
