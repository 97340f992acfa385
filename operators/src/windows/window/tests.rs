//! The window aggregate through the real task loop: exact output sequences,
//! including when windows fire, late rows, and snapshot/restore.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Int64Array, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::datatypes::{Int64Type, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::min_max::max_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::{col, lit};
use eddy_state::{MemoryBackend, RocksDbBackend, StateBackend};

use super::{WindowAggregateOperator, WindowAssigner};
use crate::message::{MAX_WATERMARK, Message};
use crate::runtime::run_operator_harness;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("v", DataType::Int64, true),
    ]))
}

/// Rows of `(key, event time in ms, value)`.
fn data(rows: &[(i64, i64, Option<i64>)]) -> Message {
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap();
    Message::Data(batch)
}

/// COUNT(*), SUM(v), MAX(v) per k over 10-second tumbling windows.
fn operator() -> Box<WindowAggregateOperator> {
    operator_with(WindowAssigner::Tumble { size: 10_000 })
}

fn operator_with(assigner: WindowAssigner) -> Box<WindowAggregateOperator> {
    let s = schema();
    let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
        .schema(s.clone())
        .alias("n")
        .build()
        .unwrap();
    let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("v", &s).unwrap()])
        .schema(s.clone())
        .alias("total")
        .build()
        .unwrap();
    let max = AggregateExprBuilder::new(max_udaf(), vec![col("v", &s).unwrap()])
        .schema(s.clone())
        .alias("top")
        .build()
        .unwrap();
    let aggs = vec![Arc::new(count), Arc::new(sum), Arc::new(max)];
    Box::new(WindowAggregateOperator::try_new(&s, vec![0], 1, assigner, aggs).unwrap())
}

/// Renders the output: tables for data, `WM t` for watermarks.
fn render(out: &[Message]) -> Vec<String> {
    out.iter()
        .map(|m| match m {
            Message::Data(b) => pretty_format_batches(std::slice::from_ref(b))
                .unwrap()
                .to_string(),
            Message::Watermark(w) if *w == MAX_WATERMARK => "WM max".into(),
            Message::Watermark(w) => format!("WM {w}"),
            Message::Barrier(b) => format!("BARRIER {b}"),
            Message::Idle => "IDLE".into(),
            Message::EndOfStream => "END".into(),
        })
        .collect()
}

#[track_caller]
fn assert_output(state: Arc<dyn StateBackend>, input: Vec<Message>, expected: &[&str]) {
    let out = run_operator_harness(operator(), state, vec![input]).unwrap();
    let rendered = render(&out);
    let expected: Vec<String> = expected.iter().map(|s| s.trim().to_string()).collect();
    assert_eq!(rendered, expected, "\nactual:\n{}", rendered.join("\n"));
}

#[test]
fn fires_when_the_watermark_passes_the_window_end() {
    assert_output(
        Arc::new(MemoryBackend::default()),
        vec![
            data(&[
                (1, 1_000, Some(5)),
                (2, 3_000, Some(1)),
                (1, 12_000, Some(7)),
            ]),
            data(&[(1, 9_999, None)]),
            // 9_998 does not close [0, 10_000): its last millisecond is 9_999.
            Message::Watermark(9_998),
            Message::Watermark(9_999),
            Message::Watermark(MAX_WATERMARK),
            Message::EndOfStream,
        ],
        &[
            "WM 9998",
            "
+---+---------------------+---------------------+---+-------+-----+
| k | window_start        | window_end          | n | total | top |
+---+---------------------+---------------------+---+-------+-----+
| 1 | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 2 | 5     | 5   |
| 2 | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 1 | 1     | 1   |
+---+---------------------+---------------------+---+-------+-----+",
            "WM 9999",
            "
+---+---------------------+---------------------+---+-------+-----+
| k | window_start        | window_end          | n | total | top |
+---+---------------------+---------------------+---+-------+-----+
| 1 | 1970-01-01T00:00:10 | 1970-01-01T00:00:20 | 1 | 7     | 7   |
+---+---------------------+---------------------+---+-------+-----+",
            "WM max",
            "END",
        ],
    );
}

#[test]
fn late_only_once_the_window_fired() {
    assert_output(
        Arc::new(MemoryBackend::default()),
        vec![
            data(&[(1, 15_000, Some(1))]),
            // Behind the watermark but its window [10s, 20s) is still open: counts.
            Message::Watermark(12_000),
            data(&[(1, 11_000, Some(2))]),
            Message::Watermark(19_999),
            // [10s, 20s) has fired: this row is late and dropped.
            data(&[(1, 19_000, Some(100)), (1, 25_000, Some(3))]),
            Message::Watermark(MAX_WATERMARK),
            Message::EndOfStream,
        ],
        &[
            "WM 12000",
            "
+---+---------------------+---------------------+---+-------+-----+
| k | window_start        | window_end          | n | total | top |
+---+---------------------+---------------------+---+-------+-----+
| 1 | 1970-01-01T00:00:10 | 1970-01-01T00:00:20 | 2 | 3     | 2   |
+---+---------------------+---------------------+---+-------+-----+",
            "WM 19999",
            "
+---+---------------------+---------------------+---+-------+-----+
| k | window_start        | window_end          | n | total | top |
+---+---------------------+---------------------+---+-------+-----+
| 1 | 1970-01-01T00:00:20 | 1970-01-01T00:00:30 | 1 | 3     | 3   |
+---+---------------------+---------------------+---+-------+-----+",
            "WM max",
            "END",
        ],
    );
}

#[test]
fn watermarks_merge_to_the_minimum_over_inputs() {
    let out = run_operator_harness(
        operator(),
        Arc::new(MemoryBackend::default()),
        vec![
            vec![
                data(&[(1, 1_000, Some(1))]),
                Message::Watermark(30_000),
                Message::Watermark(MAX_WATERMARK),
                Message::EndOfStream,
            ],
            vec![
                Message::Watermark(5_000),
                Message::Watermark(10_500),
                Message::Watermark(MAX_WATERMARK),
                Message::EndOfStream,
            ],
        ],
    )
    .unwrap();
    let wms: Vec<i64> = out
        .iter()
        .filter_map(|m| {
            if let Message::Watermark(w) = m {
                Some(*w)
            } else {
                None
            }
        })
        .collect();
    // Whatever order the inputs are read in, the merged watermark only
    // rises, never passes the slower input, and ends at MAX.
    assert!(wms.windows(2).all(|w| w[0] < w[1]), "{wms:?}");
    assert!(
        wms.iter()
            .all(|w| [5_000, 10_500, 30_000, MAX_WATERMARK].contains(w)),
        "{wms:?}"
    );
    assert_eq!(wms.last(), Some(&MAX_WATERMARK));
    let fired = out.iter().filter(|m| matches!(m, Message::Data(_))).count();
    assert_eq!(fired, 1);
}

/// Checkpoint mid-stream, "crash", restore into a new operator from the
/// same store, finish: the output equals the uninterrupted run's.
fn snapshot_then_restore(state: Arc<dyn StateBackend>) {
    let first = vec![data(&[
        (1, 1_000, Some(5)),
        (2, 2_000, Some(6)),
        (1, 14_000, None),
    ])];
    let second = vec![data(&[(1, 3_000, Some(7)), (3, 15_000, Some(1))])];
    let mut uninterrupted = first.clone();
    uninterrupted.extend(second.clone());
    uninterrupted.extend([Message::Watermark(MAX_WATERMARK), Message::EndOfStream]);
    let expected = render(
        &run_operator_harness(
            operator(),
            Arc::new(MemoryBackend::default()),
            vec![uninterrupted],
        )
        .unwrap(),
    );

    let mut before = first;
    before.extend([Message::Barrier(1), Message::EndOfStream]);
    let out = run_operator_harness(operator(), state.clone(), vec![before]).unwrap();
    assert_eq!(
        render(&out),
        vec!["BARRIER 1", "END"],
        "nothing fires before the crash"
    );

    let mut after = second;
    after.extend([Message::Watermark(MAX_WATERMARK), Message::EndOfStream]);
    let restored = render(&run_operator_harness(operator(), state, vec![after]).unwrap());
    // A restored window's groups come back in key-group order: compare
    // each firing's rows as a set.
    let rows = |firings: Vec<String>| -> Vec<Vec<String>> {
        firings
            .iter()
            .map(|f| {
                let mut lines: Vec<String> = f.lines().map(str::to_string).collect();
                lines.sort();
                lines
            })
            .collect()
    };
    assert_eq!(rows(restored), rows(expected));
}

#[test]
fn restores_open_windows_from_memory_state() {
    snapshot_then_restore(Arc::new(MemoryBackend::default()));
}

#[test]
fn restores_open_windows_from_rocksdb_state() {
    let dir = tempfile::tempdir().unwrap();
    snapshot_then_restore(Arc::new(RocksDbBackend::open(dir.path()).unwrap()));
}

#[test]
fn rows_are_assigned_to_every_window_that_holds_them() {
    let assign = |a: WindowAssigner, ts: i64| {
        let mut out = vec![];
        a.assign(ts, &mut out);
        out.sort();
        out
    };
    assert_eq!(
        assign(WindowAssigner::Tumble { size: 10 }, 13),
        vec![(20, 10)]
    );
    assert_eq!(
        assign(WindowAssigner::Tumble { size: 10 }, -3),
        vec![(0, -10)]
    );
    // HOP slide 2, size 10: starts 4, 6, 8, 10, 12 hold 13.
    assert_eq!(
        assign(WindowAssigner::Hop { slide: 2, size: 10 }, 13),
        vec![(14, 4), (16, 6), (18, 8), (20, 10), (22, 12)]
    );
    // A slide larger than the size leaves gaps: 13 is in no window of size 2 every 5.
    assert_eq!(
        assign(WindowAssigner::Hop { slide: 5, size: 2 }, 13),
        vec![]
    );
    // CUMULATE step 2, size 10: [10, 14), [10, 16), [10, 18), [10, 20) hold 13.
    assert_eq!(
        assign(WindowAssigner::Cumulate { step: 2, size: 10 }, 13),
        vec![(14, 10), (16, 10), (18, 10), (20, 10)]
    );
    assert_eq!(
        assign(WindowAssigner::Cumulate { step: 2, size: 10 }, 10),
        vec![(12, 10), (14, 10), (16, 10), (18, 10), (20, 10)]
    );
}

#[test]
fn hopping_windows_fire_in_end_order_and_late_means_every_window_fired() {
    // Slide 5 s, size 10 s. Worked out by hand:
    //   1 s  -> [-5, 5), [0, 10)      7 s -> [0, 10), [5, 15)
    //   12 s -> [5, 15), [10, 20)
    let out = run_operator_harness(
        operator_with(WindowAssigner::Hop {
            slide: 5_000,
            size: 10_000,
        }),
        Arc::new(MemoryBackend::default()),
        vec![vec![
            data(&[
                (1, 1_000, Some(1)),
                (1, 7_000, Some(2)),
                (1, 12_000, Some(4)),
            ]),
            Message::Watermark(9_999),
            // [5, 15) is still open: 6 s counts there (its [0, 10) has fired).
            data(&[(1, 6_000, Some(8))]),
            Message::Watermark(14_999),
            // Both windows of 9 s ([0,10) and [5,15)) have fired: late.
            data(&[(1, 9_000, Some(100))]),
            Message::Watermark(MAX_WATERMARK),
            Message::EndOfStream,
        ]],
    )
    .unwrap();
    let rows: Vec<String> = out
        .iter()
        .filter_map(|m| match m {
            Message::Data(b) => Some(
                pretty_format_batches(std::slice::from_ref(b))
                    .unwrap()
                    .to_string(),
            ),
            _ => None,
        })
        .flat_map(|t| {
            t.lines()
                .filter(|l| l.starts_with("| 1"))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            "| 1 | 1969-12-31T23:59:55 | 1970-01-01T00:00:05 | 1 | 1     | 1   |",
            "| 1 | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 2 | 3     | 2   |",
            "| 1 | 1970-01-01T00:00:05 | 1970-01-01T00:00:15 | 3 | 14    | 8   |",
            "| 1 | 1970-01-01T00:00:10 | 1970-01-01T00:00:20 | 1 | 4     | 4   |",
        ]
    );
}

/// A clock that moves 3 s forward each time it is read.
fn stepping_clock() -> crate::watermark::Clock {
    let start = std::time::Instant::now();
    let reads = std::sync::atomic::AtomicU32::new(0);
    Box::new(move || {
        let n = reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        start + std::time::Duration::from_secs(3 * u64::from(n))
    })
}

#[test]
fn early_firing_emits_running_results_then_only_changes() {
    // The clock is read once per batch: at 0, 3, 6, 9 s. With a 5 s delay
    // the first early firing is after the third batch (6 s since the
    // first). The window then fires only the group that changed since.
    let op = operator()
        .with_early_fire(Some(std::time::Duration::from_secs(5)))
        .with_clock(stepping_clock());
    let out = run_operator_harness(
        Box::new(op),
        Arc::new(MemoryBackend::default()),
        vec![vec![
            data(&[(1, 1_000, Some(5))]),
            data(&[(2, 2_000, Some(1))]),
            data(&[(1, 3_000, Some(2))]),
            data(&[(2, 4_000, Some(4))]),
            Message::Watermark(MAX_WATERMARK),
            Message::EndOfStream,
        ]],
    )
    .unwrap();
    let expected = [
        "
+---+---------------------+---------------------+---+-------+-----+-----+
| k | window_start        | window_end          | n | total | top | _op |
+---+---------------------+---------------------+---+-------+-----+-----+
| 1 | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 2 | 7     | 5   | 0   |
| 2 | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 1 | 1     | 1   | 0   |
+---+---------------------+---------------------+---+-------+-----+-----+",
        "
+---+---------------------+---------------------+---+-------+-----+-----+
| k | window_start        | window_end          | n | total | top | _op |
+---+---------------------+---------------------+---+-------+-----+-----+
| 2 | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 1 | 1     | 1   | 1   |
+---+---------------------+---------------------+---+-------+-----+-----+",
        "
+---+---------------------+---------------------+---+-------+-----+-----+
| k | window_start        | window_end          | n | total | top | _op |
+---+---------------------+---------------------+---+-------+-----+-----+
| 2 | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 2 | 5     | 4   | 2   |
+---+---------------------+---------------------+---+-------+-----+-----+",
        "WM max",
        "END",
    ];
    let expected: Vec<String> = expected.iter().map(|s| s.trim().to_string()).collect();
    assert_eq!(
        render(&out),
        expected,
        "\nactual:\n{}",
        render(&out).join("\n")
    );
}

#[test]
fn an_early_fired_window_survives_a_restore() {
    // Early results are part of the checkpoint: after a restore, the final
    // firing still emits only what changed (-U/+U), not a second +I.
    let dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateBackend> = Arc::new(RocksDbBackend::open(dir.path()).unwrap());
    let early = || {
        operator()
            .with_early_fire(Some(std::time::Duration::ZERO))
            .with_clock(stepping_clock())
    };
    let first = run_operator_harness(
        Box::new(early()),
        state.clone(),
        vec![vec![
            data(&[(1, 1_000, Some(5))]),
            Message::Barrier(1),
            Message::EndOfStream,
        ]],
    )
    .unwrap();
    // The early +I, the barrier, the end; nothing fires.
    assert_eq!(first.len(), 3, "{:?}", render(&first));
    assert!(render(&first)[0].contains("| 1 | 5     | 5   | 0   |"));
    let second = run_operator_harness(
        Box::new(early()),
        state,
        vec![vec![
            data(&[(1, 2_000, Some(7))]),
            Message::Watermark(MAX_WATERMARK),
            Message::EndOfStream,
        ]],
    )
    .unwrap();
    let rendered = render(&second);
    assert!(
        rendered[0].contains("| 1 | 5     | 5   | 1   |"),
        "{rendered:?}"
    );
    assert!(
        rendered[1].contains("| 2 | 12    | 7   | 2   |"),
        "{rendered:?}"
    );
    assert_eq!(rendered.len(), 4, "{rendered:?}");
}

/// `(window start, key) → (count, sum, max)`.
type Totals = BTreeMap<(i64, i64), (i64, i64, i64)>;

/// Rows over `keys` distinct keys, spread over two 10 s windows.
fn many_keys(keys: i64, rows: i64) -> Vec<(i64, i64, Option<i64>)> {
    (0..rows)
        .map(|i| {
            (
                (i * 7_919) % keys,
                (i / 7 % 2) * 10_000 + i % 9_000,
                Some(i % 1_000),
            )
        })
        .collect()
}

/// What the windows must hold, computed from the rows themselves.
fn model(rows: &[(i64, i64, Option<i64>)]) -> Totals {
    let mut totals = Totals::new();
    for &(k, ts, v) in rows {
        let v = v.unwrap_or(0);
        let e = totals
            .entry((ts - ts % 10_000, k))
            .or_insert((0, 0, i64::MIN));
        e.0 += 1;
        e.1 += v;
        e.2 = e.2.max(v);
    }
    totals
}

/// The windows' results in the harness output, each once.
fn fired_totals(out: &[Message]) -> Totals {
    let mut totals = Totals::new();
    for m in out {
        let Message::Data(b) = m else { continue };
        let int = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let start = b.column(1).as_primitive::<TimestampMillisecondType>();
        let (k, n, sum, max) = (int(0), int(3), int(4), int(5));
        for r in 0..b.num_rows() {
            let key = (start.value(r), k.value(r));
            let value = (n.value(r), sum.value(r), max.value(r));
            assert!(totals.insert(key, value).is_none(), "{key:?} fired twice");
        }
    }
    totals
}

fn batches(rows: &[(i64, i64, Option<i64>)]) -> Vec<Message> {
    rows.chunks(2_000).map(data).collect()
}

/// Run epochs of the spill table's keys (after scope and key group).
fn spilled_epochs(state: &Arc<dyn StateBackend>) -> BTreeSet<u64> {
    let table = state.open_table("harness-op-spill").unwrap();
    table
        .scan_range(b"", &[0xff; 31])
        .unwrap()
        .iter()
        .map(|(k, _)| u64::from_be_bytes(k[18..26].try_into().unwrap()))
        .collect()
}

#[test]
fn windows_larger_than_the_cache_spill_and_fire_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateBackend> = Arc::new(RocksDbBackend::open(dir.path()).unwrap());
    let rows = many_keys(30_000, 80_000);
    let mut input = batches(&rows);
    input.extend([Message::Watermark(MAX_WATERMARK), Message::EndOfStream]);
    let op = operator().with_cache_bytes(128 << 10);
    let out = run_operator_harness(Box::new(op), state.clone(), vec![input]).unwrap();
    assert!(
        !spilled_epochs(&state).is_empty(),
        "the windows should have spilled"
    );
    let expected = model(&rows);
    assert!(expected.len() > 40_000, "{}", expected.len());
    assert_eq!(fired_totals(&out), expected);
}

#[test]
fn spilled_windows_survive_a_restore() {
    // Runs spilled after barrier 1 hold rows that are replayed after the
    // restore: they must not count twice.
    let dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateBackend> = Arc::new(RocksDbBackend::open(dir.path()).unwrap());
    let rows = many_keys(30_000, 80_000);
    let (before, after) = rows.split_at(40_000);
    let mut first = batches(before);
    first.push(Message::Barrier(1));
    first.extend(batches(&after[..20_000]));
    first.push(Message::EndOfStream);
    let op = || Box::new(operator().with_cache_bytes(128 << 10));
    let out = run_operator_harness(op(), state.clone(), vec![first]).unwrap();
    assert!(
        fired_totals(&out).is_empty(),
        "nothing fires before the crash"
    );
    let epochs = spilled_epochs(&state);
    assert!(
        epochs.contains(&1) && epochs.contains(&2),
        "runs before and after the barrier: {epochs:?}"
    );

    let mut second = batches(after);
    second.extend([Message::Watermark(MAX_WATERMARK), Message::EndOfStream]);
    let out = crate::runtime::run_operator_harness_with(
        op(),
        state,
        vec![second],
        crate::checkpoint::CheckpointHandle::resumed(1),
    )
    .unwrap();
    assert_eq!(fired_totals(&out), model(&rows));
}
