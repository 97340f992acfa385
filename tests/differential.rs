//! The differential oracle: random bounded inputs (random keys, values with
//! NULLs, event times out of order, some rows late) run through the
//! streaming engine must give exactly what DataFusion in batch mode gives
//! for the same rows, minus the late ones, for every window kind.
//!
//! Which rows count where is decided here by a model of the rules (Flink's),
//! not by the engine: the source's watermark advances after each batch to
//! `max(ts) - delay`; a window whose last millisecond is at or before the
//! watermark in force when a row's batch arrives has fired, and the row does
//! not count in it; a row is late (dropped) when all its windows have.
//!
//! With an allowed lateness `L` (`'table.exec.emit.allow-lateness'`), a
//! fired window takes rows until the watermark reaches `end - 1 + L`; the
//! engine then emits a changelog, whose net effect (`+I`/`+U` add a row,
//! `-U`/`-D` take one away) must equal the batch answer. With the
//! dead-letter policy, the dead-letter file must hold exactly the rows the
//! model calls late. With early firing after every batch, the changelog of
//! running results must also net out to the batch answer.
//!
//! A second oracle runs an aggregate over an updating aggregate (Nexmark
//! q4's shape) with random batching and parallelism: the net effect of its
//! changelog must equal DataFusion's answer for the same plan over all rows,
//! and every retraction must take back a row emitted before.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{render, run_select};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::functions_aggregate::expr_fn::{
    avg, bool_or, count, count_distinct, max, median, min, sum,
};
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
use proptest::prelude::*;

const BASE: i64 = 1_704_067_200_000;
const DELAY: i64 = 2_000;

#[derive(Debug, Clone, Copy)]
enum Window {
    Tumble { size: i64 },
    Hop { slide: i64, size: i64 },
    Cumulate { step: i64, size: i64 },
    Session { gap: i64 },
}

impl Window {
    fn sql(self) -> String {
        let ms = |v: i64| format!("INTERVAL '{v}' MILLISECOND");
        match self {
            Window::Tumble { size } => format!("TUMBLE(TABLE ev, DESCRIPTOR(ts), {})", ms(size)),
            Window::Hop { slide, size } => {
                format!("HOP(TABLE ev, DESCRIPTOR(ts), {}, {})", ms(slide), ms(size))
            }
            Window::Cumulate { step, size } => format!(
                "CUMULATE(TABLE ev, DESCRIPTOR(ts), {}, {})",
                ms(step),
                ms(size)
            ),
            Window::Session { gap } => {
                format!(
                    "SESSION(TABLE ev PARTITION BY k, DESCRIPTOR(ts), {})",
                    ms(gap)
                )
            }
        }
    }

    /// The `(start, end)` of every window holding `ts`, from the definitions.
    fn windows(self, ts: i64) -> Vec<(i64, i64)> {
        let floor = |t: i64, m: i64| t - t.rem_euclid(m);
        match self {
            Window::Tumble { size } => vec![(floor(ts, size), floor(ts, size) + size)],
            Window::Hop { slide, size } => (0..)
                .map(|j| floor(ts, slide) - j * slide)
                .take_while(|s| s + size > ts)
                .map(|s| (s, s + size))
                .collect(),
            Window::Cumulate { step, size } => {
                let start = floor(ts, size);
                (1..=size / step)
                    .map(|j| (start, start + j * step))
                    .filter(|&(_, e)| e > ts)
                    .collect()
            }
            // Sessions depend on the other rows: see `sessions`.
            Window::Session { .. } => vec![],
        }
    }
}

/// `(key index, event time in ms, value)`.
type Row = (usize, i64, Option<i64>);
/// A late row as the dead-letter file has it: `(key, event time, value)`.
type LateRow = (String, i64, Option<i64>);

#[derive(Debug, Clone)]
struct Case {
    rows: Vec<Row>,
    window: Window,
    batch_size: usize,
    parallelism: usize,
    /// Allowed lateness in ms (0: none).
    lateness: i64,
    /// Late rows go to a dead-letter file as well as being counted.
    dead_letter: bool,
    /// Open windows emit running results after every batch (early fire
    /// with a delay of 0).
    early_fire: bool,
}

fn arb_case() -> impl Strategy<Value = Case> {
    let row = (
        0usize..4,
        -3_000i64..3_000,
        prop::bool::weighted(0.1),
        prop::option::weighted(0.85, -50i64..100),
    );
    let window = prop_oneof![
        prop::sample::select(vec![1_000i64, 5_000]).prop_map(|size| Window::Tumble { size }),
        prop::sample::select(vec![(1_000i64, 3_000i64), (2_000, 5_000), (3_000, 2_000)])
            .prop_map(|(slide, size)| Window::Hop { slide, size }),
        prop::sample::select(vec![(1_000i64, 4_000i64), (500, 1_500)])
            .prop_map(|(step, size)| Window::Cumulate { step, size }),
        prop::sample::select(vec![300i64, 1_000]).prop_map(|gap| Window::Session { gap }),
    ];
    (
        prop::collection::vec(row, 1..60),
        window,
        1usize..5,
        1usize..=4,
        prop::sample::select(vec![0i64, 0, 1_500, 4_000]),
        prop::bool::ANY,
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(raw, window, batch_size, parallelism, lateness, dead_letter, early_fire)| {
                let rows = raw
                    .into_iter()
                    .enumerate()
                    .map(|(i, (k, jitter, very_late, v))| {
                        let late = if very_late { -20_000 } else { 0 };
                        (k, BASE + i as i64 * 200 + jitter + late, v)
                    })
                    .collect();
                Case {
                    rows,
                    window,
                    batch_size,
                    parallelism,
                    lateness,
                    dead_letter,
                    early_fire,
                }
            },
        )
}

/// Each row with the windows it still counts in, by the rules (see the
/// module docs). Rows left with none are late.
fn assignments(case: &Case) -> Vec<(Row, Vec<(i64, i64)>)> {
    if let Window::Session { gap } = case.window {
        return sessions(case, gap);
    }
    let mut watermark = i64::MIN;
    let mut max_ts = i64::MIN;
    let mut out = Vec::new();
    for batch in case.rows.chunks(case.batch_size) {
        for &(k, ts, v) in batch {
            let open: Vec<(i64, i64)> = case
                .window
                .windows(ts)
                .into_iter()
                .filter(|&(_, end)| end - 1 + case.lateness > watermark)
                .collect();
            out.push(((k, ts, v), open));
            max_ts = max_ts.max(ts);
        }
        watermark = watermark.max(max_ts - DELAY);
    }
    out
}

/// Sessions by the rules: per key, a row opens `[ts, ts + gap)`, merged
/// with every overlapping session still kept (not yet past `end - 1 +
/// lateness` by the watermark); if the merged session is past that too,
/// the row is late. Returns each row with the (final) session it ended up
/// in.
fn sessions(case: &Case, gap: i64) -> Vec<(Row, Vec<(i64, i64)>)> {
    struct Open {
        key: usize,
        start: i64,
        end: i64,
        rows: Vec<Row>,
        expired: bool,
    }
    let mut all: Vec<Open> = Vec::new();
    let mut late = Vec::new();
    let mut watermark = i64::MIN;
    let mut max_ts = i64::MIN;
    for batch in case.rows.chunks(case.batch_size) {
        for &row in batch {
            let (k, ts, _) = row;
            let (mut start, mut end, mut rows) = (ts, ts + gap, vec![row]);
            let mut kept = Vec::new();
            for s in all.drain(..) {
                if s.key == k && !s.expired && s.start < end && s.end > start {
                    start = start.min(s.start);
                    end = end.max(s.end);
                    rows.extend(s.rows);
                } else {
                    kept.push(s);
                }
            }
            all = kept;
            if end - 1 + case.lateness <= watermark {
                // Kept sessions all expire after the watermark, so a row
                // that merged with one cannot be late: this one merged with
                // none, and is lost alone.
                late.push(row);
                continue;
            }
            all.push(Open {
                key: k,
                start,
                end,
                rows,
                expired: false,
            });
        }
        max_ts = max_ts.max(batch.iter().map(|r| r.1).max().unwrap_or(i64::MIN));
        watermark = watermark.max(max_ts - DELAY);
        for s in &mut all {
            s.expired |= s.end - 1 + case.lateness <= watermark;
        }
    }
    let mut out: Vec<(Row, Vec<(i64, i64)>)> = late.into_iter().map(|r| (r, vec![])).collect();
    for s in all {
        out.extend(s.rows.into_iter().map(|r| (r, vec![(s.start, s.end)])));
    }
    out
}

/// The rows the model calls late, as `(key, ts, value)`, sorted: those
/// left in no window, less those that never had one (in a gap between
/// hopping windows).
fn late_rows(case: &Case) -> Vec<LateRow> {
    let mut late: Vec<_> = assignments(case)
        .into_iter()
        .filter(|((_, ts, _), w)| {
            w.is_empty()
                && (matches!(case.window, Window::Session { .. })
                    || !case.window.windows(*ts).is_empty())
        })
        .map(|((k, ts, v), _)| (format!("k{k}"), ts, v))
        .collect();
    late.sort();
    late
}

/// The rows of a dead-letter file: `(k, ts, v)`, sorted; every line must
/// carry a reason and the watermark.
fn dead_letters(path: &std::path::Path) -> Vec<LateRow> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut rows: Vec<_> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(
                v["_reason"].as_str().is_some_and(|r| r.starts_with("late")),
                "{line}"
            );
            assert!(v["_watermark"].is_string(), "{line}");
            let ts = string_to_timestamp_nanos(v["ts"].as_str().unwrap()).unwrap() / 1_000_000;
            (v["k"].as_str().unwrap().to_string(), ts, v["v"].as_i64())
        })
        .collect();
    rows.sort();
    rows
}

/// DataFusion, batch mode: expand each on-time row into its windows, then
/// GROUP BY key and window.
fn batch_answer(case: &Case) -> Vec<String> {
    let (mut ks, mut starts, mut ends, mut vs) = (vec![], vec![], vec![], vec![]);
    for ((k, _, v), windows) in assignments(case) {
        for (s, e) in windows {
            ks.push(format!("k{k}"));
            starts.push(s);
            ends.push(e);
            vs.push(v);
        }
    }
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
        Field::new("v", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ks)),
            Arc::new(TimestampMillisecondArray::from(starts)),
            Arc::new(TimestampMillisecondArray::from(ends)),
            Arc::new(Int64Array::from(vs)),
        ],
    )
    .unwrap();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let df = ctx
        .read_batch(batch)
        .unwrap()
        .aggregate(
            vec![col("k"), col("window_start"), col("window_end")],
            vec![
                count(lit(1)),
                sum(col("v")),
                min(col("v")),
                max(col("v")),
                avg(col("v")),
                sum(col("v"))
                    .filter(col("v").gt(lit(10i64)))
                    .build()
                    .unwrap()
                    .alias("big_sum"),
            ],
        )
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let out = runtime.block_on(df.collect()).unwrap();
    render(&out)
}

/// The streaming engine, through SQL, over the same rows as a JSON file:
/// its answer, and its dead-letter rows if the case has them.
fn stream_run(case: &Case) -> (Vec<String>, Vec<LateRow>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ev.json");
    let mut text = String::new();
    for (k, ts, v) in &case.rows {
        let v = v.map_or("null".to_string(), |v| v.to_string());
        text += &format!("{{\"k\": \"k{k}\", \"ts\": {ts}, \"v\": {v}}}\n");
    }
    std::fs::write(&path, text).unwrap();
    let dead_letter_path = dir.path().join("late.jsonl");
    let mut settings = String::new();
    if case.lateness > 0 {
        settings += &format!(
            "SET 'table.exec.emit.allow-lateness' = '{} ms';\n",
            case.lateness
        );
    }
    if case.early_fire {
        settings += "SET 'table.exec.emit.early-fire.enabled' = 'true';
                     SET 'table.exec.emit.early-fire.delay' = '0 ms';\n";
    }
    if case.dead_letter {
        settings += &format!(
            "CREATE SINK late_rows WITH (connector = 'file', path = '{}', format = 'json');
             SET 'late.policy' = 'dead-letter';
             SET 'late.dead-letter-sink' = 'late_rows';\n",
            dead_letter_path.display()
        );
    }
    let sql = format!(
        "{settings}CREATE SOURCE ev (k VARCHAR, ts TIMESTAMP(3), v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '{DELAY}' MILLISECOND)
           WITH (connector = 'file', path = '{}', format = 'json', 'batch.size' = '{}');
         SELECT k, window_start, window_end, COUNT(*), SUM(v), MIN(v), MAX(v), AVG(v), SUM(v) FILTER (WHERE v > 10)
         FROM TABLE({}) GROUP BY k, window_start, window_end;",
        path.display(),
        case.batch_size,
        case.window.sql()
    );
    let batches = run_select(&sql, case.parallelism);
    let late = if case.dead_letter {
        dead_letters(&dead_letter_path)
    } else {
        vec![]
    };
    (render(&batches), late)
}

/// An aggregate over an updating aggregate (Nexmark q4's shape): random
/// keys and values (with NULLs), random batching and parallelism.
#[derive(Debug, Clone)]
struct UpdatingCase {
    rows: Vec<(i64, Option<i64>)>,
    batch_size: usize,
    parallelism: usize,
    /// `HAVING COUNT(*) > n`, or no HAVING.
    having: Option<i64>,
}

fn arb_updating_case() -> impl Strategy<Value = UpdatingCase> {
    (
        prop::collection::vec((0i64..8, prop::option::weighted(0.85, -20i64..60)), 1..80),
        1usize..6,
        1usize..=4,
        prop::option::of(0i64..3),
    )
        .prop_map(|(rows, batch_size, parallelism, having)| UpdatingCase {
            rows,
            batch_size,
            parallelism,
            having,
        })
}

/// Inner: each key's current maximum and row count, updated per batch.
/// Outer: groups by the count mod 3, so keys move between groups (their
/// old group retracts them, and is deleted when it empties). One aggregate
/// of each retraction strategy: order-free accumulators (COUNT, SUM, AVG,
/// MEDIAN, COUNT(DISTINCT)), ordered values (MIN, MAX), recompute (BOOL_OR).
fn updating_sql(having: Option<i64>) -> String {
    let having = having.map_or(String::new(), |n| format!("HAVING COUNT(*) > {n}"));
    format!(
        "SELECT n % 3 AS g, COUNT(*) AS c, SUM(m) AS s, MIN(m) AS lo, MAX(m) AS hi, AVG(m) AS a,
                COUNT(DISTINCT m) AS d, SUM(k) FILTER (WHERE m > 10) AS f, BOOL_OR(m > 20) AS b,
                MEDIAN(m) AS med
         FROM (SELECT k, MAX(v) AS m, COUNT(*) AS n FROM ev GROUP BY k) t
         GROUP BY n % 3 {having}"
    )
}

fn updating_stream(case: &UpdatingCase) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ev.json");
    let mut text = String::new();
    for (k, v) in &case.rows {
        let v = v.map_or("null".to_string(), |v| v.to_string());
        text += &format!("{{\"k\": {k}, \"v\": {v}}}\n");
    }
    std::fs::write(&path, text).unwrap();
    let sql = format!(
        "CREATE SOURCE ev (k BIGINT, v BIGINT)
           WITH (connector = 'file', path = '{}', format = 'json', 'batch.size' = '{}');
         {};",
        path.display(),
        case.batch_size,
        updating_sql(case.having)
    );
    render(&run_select(&sql, case.parallelism))
}

/// The same SQL in DataFusion, batch mode, over all the rows at once.
fn updating_batch(case: &UpdatingCase) -> Vec<String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(case.rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter(case.rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap();
    // The plan of `updating_sql`, built with DataFusion's DataFrame API.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let m = || col("m");
    let df = ctx
        .read_batch(batch)
        .unwrap()
        .aggregate(
            vec![col("k")],
            vec![max(col("v")).alias("m"), count(lit(1)).alias("n")],
        )
        .unwrap()
        .aggregate(
            vec![(col("n") % lit(3i64)).alias("g")],
            vec![
                count(lit(1)).alias("c"),
                sum(m()),
                min(m()),
                max(m()),
                avg(m()),
                count_distinct(m()),
                sum(col("k")).filter(m().gt(lit(10i64))).build().unwrap(),
                bool_or(m().gt(lit(20i64))),
                median(m()),
            ],
        )
        .unwrap();
    let df = match case.having {
        Some(n) => df.filter(col("c").gt(lit(n))).unwrap(),
        None => df,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    render(&runtime.block_on(df.collect()).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn streaming_windows_equal_datafusion_batch(case in arb_case()) {
        let (rows, late) = stream_run(&case);
        prop_assert_eq!(rows, batch_answer(&case), "{:?}", case);
        if case.dead_letter {
            prop_assert_eq!(late, late_rows(&case), "dead letters of {:?}", case);
        }
    }

    #[test]
    fn aggregates_over_updating_aggregates_equal_datafusion_batch(case in arb_updating_case()) {
        prop_assert_eq!(updating_stream(&case), updating_batch(&case), "{:?}", case);
    }
}

#[test]
fn the_model_marks_late_rows() {
    // Watermark 2 s behind; the third row comes after the watermark passed
    // the end of its only tumbling window.
    let case = Case {
        rows: vec![
            (0, BASE + 500, Some(1)),
            (0, BASE + 5_000, Some(2)),
            (0, BASE + 900, Some(3)),
        ],
        window: Window::Tumble { size: 1_000 },
        batch_size: 1,
        parallelism: 1,
        lateness: 0,
        dead_letter: true,
        early_fire: false,
    };
    let late = assignments(&case)
        .iter()
        .filter(|(_, w)| w.is_empty())
        .count();
    assert_eq!(late, 1);
    let (rows, dead) = stream_run(&case);
    assert_eq!(rows, batch_answer(&case));
    assert_eq!(dead, vec![("k0".to_string(), BASE + 900, Some(3))]);
}

#[test]
fn with_allowed_lateness_a_late_row_corrects_its_window() {
    // Same rows, but windows take rows for 4 s after they fire: the third
    // row updates the window [BASE, BASE + 1 s) after it fired.
    let case = Case {
        rows: vec![
            (0, BASE + 500, Some(1)),
            (0, BASE + 5_000, Some(2)),
            (0, BASE + 900, Some(3)),
        ],
        window: Window::Tumble { size: 1_000 },
        batch_size: 1,
        parallelism: 1,
        lateness: 4_000,
        dead_letter: true,
        early_fire: false,
    };
    assert!(late_rows(&case).is_empty());
    let (rows, dead) = stream_run(&case);
    assert_eq!(rows, batch_answer(&case));
    assert!(dead.is_empty());
    // By hand: the first window's result is count 2, sum 4, min 1, max 3.
    assert!(
        rows.iter().any(
            |r| r.starts_with("k0 | 2024-01-01T00:00:00 | 2024-01-01T00:00:01 | 2 | 4 | 1 | 3")
        ),
        "{rows:?}"
    );
}
