//! The OVER aggregate through the real task loop: exact event-time output
//! for ROWS and RANGE frames, and the net effect of random changelogs
//! against a model that aggregates each row's frame directly.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int8Array, Int64Array, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{
    DataType, Field, Int8Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_expr::expressions::{col, lit};
use eddy_state::{MemoryBackend, RocksDbBackend, StateBackend};

use super::{OverAggregateOperator, OverFrame, OverMode, OverSpec};
use crate::checkpoint::CheckpointHandle;
use crate::message::Message;
use crate::runtime::run_operator_harness_with;
use crate::test_support::{Lcg, net};
use crate::updating::{OP_DELETE, OP_INSERT};

/// `(p, t, v)`: partition, ORDER BY time (ms), value.
type Row = (i64, i64, i64);

fn schema(changelog: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("p", DataType::Int64, false),
        Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("v", DataType::Int64, false),
    ];
    if changelog {
        fields.push(Field::new("_op", DataType::Int8, false));
    }
    Arc::new(Schema::new(fields))
}

fn data(rows: &[(Row, i8)], changelog: bool) -> Message {
    let mut columns: Vec<Arc<dyn Array>> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0.0))),
        Arc::new(TimestampMillisecondArray::from_iter_values(
            rows.iter().map(|r| r.0.1),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0.2))),
    ];
    if changelog {
        columns.push(Arc::new(Int8Array::from_iter_values(
            rows.iter().map(|r| r.1),
        )));
    }
    Message::Data(RecordBatch::try_new(schema(changelog), columns).unwrap())
}

fn rows(rows: &[Row]) -> Message {
    let with_ops: Vec<(Row, i8)> = rows.iter().map(|r| (*r, OP_INSERT)).collect();
    data(&with_ops, false)
}

/// SUM(v), and COUNT(*) when `count`.
fn aggregates(changelog: bool, count: bool) -> Vec<Arc<AggregateFunctionExpr>> {
    let s = schema(changelog);
    let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("v", &s).unwrap()])
        .schema(s.clone())
        .alias("total")
        .build()
        .unwrap();
    let mut aggs = vec![Arc::new(sum)];
    if count {
        let n = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
            .schema(s)
            .alias("n")
            .build()
            .unwrap();
        aggs.push(Arc::new(n));
    }
    aggs
}

fn run(
    frame: OverFrame,
    mode: OverMode,
    count: bool,
    state: Arc<dyn StateBackend>,
    input: Vec<Message>,
    checkpoints: CheckpointHandle,
) -> Vec<Message> {
    let changelog = mode == OverMode::Updating;
    let spec = OverSpec {
        partition: vec![0],
        order: (1, false),
        frame,
        op_column: changelog.then_some(3),
        mode,
        state_ttl_ms: None,
        state_ttl_event_time: false,
    };
    let op = OverAggregateOperator::try_new(&schema(changelog), spec, aggregates(changelog, count))
        .unwrap();
    run_operator_harness_with(Box::new(op), state, vec![input], checkpoints).unwrap()
}

fn memory() -> Arc<dyn StateBackend> {
    Arc::new(MemoryBackend::default())
}

/// Output rows `(op, (p, t, v, aggregates...))`, up to barrier `until`.
fn output(out: &[Message], until: Option<u64>) -> Vec<(i8, Vec<i64>)> {
    let mut rows = Vec::new();
    for m in out {
        match m {
            Message::Barrier(id) if Some(*id) == until => break,
            Message::Data(b) => {
                let ops = b.column(b.num_columns() - 1).as_primitive_opt::<Int8Type>();
                let values = if ops.is_some() {
                    b.num_columns() - 1
                } else {
                    b.num_columns()
                };
                for r in 0..b.num_rows() {
                    let mut row = vec![
                        b.column(0).as_primitive::<Int64Type>().value(r),
                        b.column(1)
                            .as_primitive::<TimestampMillisecondType>()
                            .value(r),
                    ];
                    for c in 2..values {
                        row.push(b.column(c).as_primitive::<Int64Type>().value(r));
                    }
                    rows.push((ops.map_or(OP_INSERT, |o| o.value(r)), row));
                }
            }
            _ => {}
        }
    }
    rows
}

#[test]
fn event_time_rows_frames_wait_for_the_watermark_and_drop_late_rows() {
    let input = vec![
        rows(&[(1, 10, 1), (1, 30, 3)]),
        rows(&[(1, 20, 2)]),
        Message::Watermark(25),
        // Late: behind the watermark.
        rows(&[(1, 22, 100), (2, 26, 5)]),
        Message::Watermark(i64::MAX),
        Message::EndOfStream,
    ];
    let out = run(
        OverFrame::Rows(1),
        OverMode::EventTime,
        true,
        memory(),
        input,
        CheckpointHandle::default(),
    );
    // SUM and COUNT over the row and the one before it, in time order.
    let i = OP_INSERT;
    assert_eq!(
        output(&out, None),
        vec![
            (i, vec![1, 10, 1, 1, 1]),
            (i, vec![1, 20, 2, 3, 2]),
            (i, vec![2, 26, 5, 5, 1]),
            (i, vec![1, 30, 3, 5, 2]),
        ]
    );
}

#[test]
fn event_time_range_frames_include_rows_tied_with_the_current_one() {
    let input = vec![
        rows(&[(1, 15, 2), (1, 10, 1), (1, 26, 8), (1, 15, 4)]),
        Message::Watermark(i64::MAX),
        Message::EndOfStream,
    ];
    let out = run(
        OverFrame::RangeMs(10),
        OverMode::EventTime,
        false,
        memory(),
        input,
        CheckpointHandle::default(),
    );
    let i = OP_INSERT;
    assert_eq!(
        output(&out, None),
        vec![
            (i, vec![1, 10, 1, 1]),
            (i, vec![1, 15, 2, 7]),
            (i, vec![1, 15, 4, 7]),
            (i, vec![1, 26, 8, 8]),
        ]
    );
}

#[test]
fn a_restored_event_time_over_emits_its_pending_rows_once() {
    let dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateBackend> = Arc::new(RocksDbBackend::open(dir.path()).unwrap());
    let first = vec![
        rows(&[(1, 10, 1), (1, 20, 2)]),
        Message::Watermark(15),
        Message::Barrier(1),
        rows(&[(1, 30, 4)]),
        Message::EndOfStream,
    ];
    let out = run(
        OverFrame::Rows(1),
        OverMode::EventTime,
        false,
        state.clone(),
        first,
        CheckpointHandle::default(),
    );
    let mut all = output(&out, Some(1));
    // The replay after checkpoint 1, and a row behind its watermark.
    let rest = vec![
        rows(&[(1, 30, 4), (1, 12, 50)]),
        Message::Watermark(i64::MAX),
        Message::EndOfStream,
    ];
    let out = run(
        OverFrame::Rows(1),
        OverMode::EventTime,
        false,
        state,
        rest,
        CheckpointHandle::resumed(1),
    );
    all.extend(output(&out, None));
    let i = OP_INSERT;
    assert_eq!(
        all,
        vec![
            (i, vec![1, 10, 1, 1]),
            (i, vec![1, 20, 2, 3]),
            (i, vec![1, 30, 4, 6]),
        ]
    );
}

#[test]
fn unbounded_event_time_frames_run_on_and_resume_from_a_checkpoint() {
    // Partition 1: t 10, 15, 15, 30; partition 2: t 12. RANGE includes
    // the rows tied with the current one, ROWS only those before it.
    let batches = [
        rows(&[(1, 15, 2), (1, 10, 1), (2, 12, 7)]),
        rows(&[(1, 15, 4), (1, 30, 8)]),
    ];
    let i = OP_INSERT;
    for (rows_frame, want) in [
        (
            true,
            vec![
                (i, vec![1, 10, 1, 1, 1]),
                (i, vec![2, 12, 7, 7, 1]),
                (i, vec![1, 15, 2, 3, 2]),
                (i, vec![1, 15, 4, 7, 3]),
                (i, vec![1, 30, 8, 15, 4]),
            ],
        ),
        (
            false,
            vec![
                (i, vec![1, 10, 1, 1, 1]),
                (i, vec![2, 12, 7, 7, 1]),
                (i, vec![1, 15, 2, 7, 3]),
                (i, vec![1, 15, 4, 7, 3]),
                (i, vec![1, 30, 8, 15, 4]),
            ],
        ),
    ] {
        let frame = OverFrame::Unbounded { rows: rows_frame };
        // In one run.
        let mut input: Vec<Message> = batches.to_vec();
        input.extend([Message::Watermark(i64::MAX), Message::EndOfStream]);
        let out = run(
            frame,
            OverMode::EventTime,
            true,
            memory(),
            input,
            CheckpointHandle::default(),
        );
        let mut sorted = output(&out, None);
        sorted.sort_by_key(|(_, r)| (r[1], r[0]));
        assert_eq!(sorted, want, "{frame:?}");
        // Checkpoint 1 is taken once the rows up to 15 were emitted: it
        // holds the running sums, not those rows. The run after it replays
        // what came after the barrier.
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn StateBackend> = Arc::new(RocksDbBackend::open(dir.path()).unwrap());
        let first = vec![
            batches[0].clone(),
            rows(&[(1, 15, 4)]),
            Message::Watermark(20),
            Message::Barrier(1),
            rows(&[(1, 30, 8)]),
            Message::EndOfStream,
        ];
        let out = run(
            frame,
            OverMode::EventTime,
            true,
            state.clone(),
            first,
            CheckpointHandle::default(),
        );
        let mut all = output(&out, Some(1));
        let rest = vec![
            rows(&[(1, 30, 8)]),
            Message::Watermark(i64::MAX),
            Message::EndOfStream,
        ];
        let out = run(
            frame,
            OverMode::EventTime,
            true,
            state,
            rest,
            CheckpointHandle::resumed(1),
        );
        all.extend(output(&out, None));
        all.sort_by_key(|(_, r)| (r[1], r[0]));
        assert_eq!(all, want, "{frame:?}, resumed");
    }
}

/// Random rows and retractions of live rows; returns the batches and the
/// rows live at the end, in arrival order.
fn changelog(rng: &mut Lcg, n: usize) -> (Vec<Vec<(Row, i8)>>, Vec<Row>) {
    let mut live: Vec<Row> = Vec::new();
    let mut batches = vec![Vec::new()];
    for _ in 0..n {
        if !live.is_empty() && rng.next(3) == 0 {
            let r = live[rng.next(live.len() as u64) as usize];
            // The earliest of equal rows goes (they are interchangeable).
            let first = live.iter().position(|x| *x == r).unwrap();
            live.remove(first);
            batches.last_mut().unwrap().push((r, OP_DELETE));
        } else {
            let r = (rng.next(3) as i64, rng.next(8) as i64, rng.next(5) as i64);
            live.push(r);
            batches.last_mut().unwrap().push((r, OP_INSERT));
        }
        if rng.next(5) == 0 {
            batches.push(Vec::new());
        }
    }
    (batches, live)
}

/// Each live row with the SUM of v over its frame, computed directly: per
/// partition, rows stably sorted by t (ties in arrival order).
fn model(frame: OverFrame, live: &[Row]) -> BTreeMap<Vec<i64>, i64> {
    let mut parts: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
    for r in live {
        parts.entry(r.0).or_default().push(*r);
    }
    let mut out = BTreeMap::new();
    for rows in parts.values_mut() {
        rows.sort_by_key(|r| r.1);
        for (i, r) in rows.iter().enumerate() {
            let sum: i64 = match frame {
                OverFrame::Rows(n) => rows[i.saturating_sub(n as usize)..=i]
                    .iter()
                    .map(|x| x.2)
                    .sum(),
                OverFrame::RangeMs(d) => rows
                    .iter()
                    .filter(|x| x.1 >= r.1 - d && x.1 <= r.1)
                    .map(|x| x.2)
                    .sum(),
                OverFrame::Unbounded { rows: true } => rows[..=i].iter().map(|x| x.2).sum(),
                OverFrame::Unbounded { rows: false } => {
                    rows.iter().filter(|x| x.1 <= r.1).map(|x| x.2).sum()
                }
            };
            *out.entry(vec![r.0, r.1, r.2, sum]).or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn random_changelogs_aggregate_like_the_model() {
    for seed in 0..12u64 {
        let mut rng = Lcg(seed);
        let (batches, live) = changelog(&mut rng, 150);
        for frame in [
            OverFrame::Rows(0),
            OverFrame::Rows(2),
            OverFrame::RangeMs(3),
            OverFrame::Unbounded { rows: true },
            OverFrame::Unbounded { rows: false },
        ] {
            let mut input: Vec<Message> = batches.iter().map(|b| data(b, true)).collect();
            input.push(Message::EndOfStream);
            let out = run(
                frame,
                OverMode::Updating,
                false,
                memory(),
                input,
                CheckpointHandle::default(),
            );
            let got = net(&output(&out, None));
            assert!(got.values().all(|&n| n > 0), "negative rows, {frame:?}");
            assert_eq!(got, model(frame, &live), "{frame:?}, seed {seed}");
        }
    }
}
