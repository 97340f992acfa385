//! The Top-N operator through the real task loop: an exact changelog, the
//! net effect of random changelogs against a model that ranks the live rows
//! directly, window Top-N and first rows at the watermark, and restores.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int8Array, Int64Array, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{
    DataType, Field, Int8Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_state::{MemoryBackend, RocksDbBackend, StateBackend};

use super::{Entry, RankFunction, RankMode, RankOperator, RankSpec};
use crate::checkpoint::CheckpointHandle;
use crate::message::Message;
use crate::partitions::Partition;
use crate::runtime::run_operator_harness_with;
use crate::test_support::{Lcg, net};
use crate::updating::{OP_DELETE, OP_INSERT, OP_UPDATE_AFTER, OP_UPDATE_BEFORE};

/// `(p, o, v)`: partition, order key, payload.
type Row = (Option<i64>, Option<i64>, i64);

fn schema(changelog: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("p", DataType::Int64, true),
        Field::new("o", DataType::Int64, true),
        Field::new("v", DataType::Int64, false),
    ];
    if changelog {
        fields.push(Field::new("_op", DataType::Int8, false));
    }
    Arc::new(Schema::new(fields))
}

fn data(rows: &[(Row, i8)], changelog: bool) -> Message {
    let mut columns: Vec<Arc<dyn Array>> = vec![
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0.0))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0.1))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0.2))),
    ];
    if changelog {
        columns.push(Arc::new(Int8Array::from_iter_values(
            rows.iter().map(|r| r.1),
        )));
    }
    Message::Data(RecordBatch::try_new(schema(changelog), columns).unwrap())
}

fn spec(function: RankFunction, limit: u64, with_rank: bool, changelog: bool) -> RankSpec {
    RankSpec {
        function,
        partition: vec![0],
        order: vec![(1, true)],
        limit,
        rank_column: with_rank.then(|| "rn".to_string()),
        op_column: changelog.then_some(3),
        mode: RankMode::Updating,
        state_ttl_ms: None,
        state_ttl_event_time: false,
    }
}

/// One output row: `(p, o, v, rank or 0)` and its op.
type Ranked = (Option<i64>, Option<i64>, i64, i64);

fn changes(out: &[Message], with_rank: bool, until: Option<u64>) -> Vec<(i8, Ranked)> {
    let mut rows = Vec::new();
    for m in out {
        match m {
            Message::Barrier(id) if Some(*id) == until => break,
            Message::Data(b) => {
                let col = |i: usize| b.column(i).as_primitive::<Int64Type>();
                let opt = |i: usize, r: usize| col(i).is_valid(r).then(|| col(i).value(r));
                let op_col = b.num_columns() - 1;
                let ops = b.column(op_col).as_primitive_opt::<Int8Type>();
                for r in 0..b.num_rows() {
                    let rank = if with_rank { col(3).value(r) } else { 0 };
                    let op = ops.map_or(OP_INSERT, |o| o.value(r));
                    rows.push((op, (opt(0, r), opt(1, r), col(2).value(r), rank)));
                }
            }
            _ => {}
        }
    }
    rows
}

/// Ranks the live rows (in arrival order) directly: per partition, a
/// stable sort by `o` descending with NULLs last, then the function.
fn model(
    function: RankFunction,
    limit: u64,
    with_rank: bool,
    live: &[Row],
) -> BTreeMap<Ranked, i64> {
    let mut parts: BTreeMap<Option<i64>, Vec<Row>> = BTreeMap::new();
    for r in live {
        parts.entry(r.0).or_default().push(*r);
    }
    let mut out = BTreeMap::new();
    for rows in parts.values_mut() {
        // Descending, NULLs last: larger first, None after every value.
        rows.sort_by_key(|r| std::cmp::Reverse(r.1.map(|o| o + 1).unwrap_or(0)));
        let mut rank = 0u64;
        for (i, r) in rows.iter().enumerate() {
            let tie = i > 0 && rows[i - 1].1 == r.1;
            rank = match function {
                RankFunction::RowNumber => i as u64 + 1,
                RankFunction::Rank if tie => rank,
                RankFunction::Rank => i as u64 + 1,
                RankFunction::DenseRank if tie => rank,
                RankFunction::DenseRank => rank + 1,
            };
            if rank > limit {
                break;
            }
            let shown = if with_rank { rank as i64 } else { 0 };
            *out.entry((r.0, r.1, r.2, shown)).or_insert(0) += 1;
        }
    }
    out
}

fn run(
    spec: RankSpec,
    state: Arc<dyn StateBackend>,
    input: Vec<Message>,
    checkpoints: CheckpointHandle,
) -> Vec<Message> {
    let changelog = spec.op_column.is_some();
    let op = RankOperator::try_new(&schema(changelog), spec).unwrap();
    run_operator_harness_with(Box::new(op), state, vec![input], checkpoints).unwrap()
}

fn memory() -> Arc<dyn StateBackend> {
    Arc::new(MemoryBackend::default())
}

#[test]
fn partition_state_round_trips() {
    let part = Partition {
        entries: vec![
            Entry {
                key: b"k1".to_vec().into(),
                row: b"row one".to_vec().into(),
                time: 7,
            },
            Entry {
                key: b"k2".to_vec().into(),
                row: b"".to_vec().into(),
                time: -3,
            },
        ],
        emitted: 2,
        fires_at: 999,
        written: 1_700_000_000_000,
        acc: b"accumulators".to_vec(),
    };
    assert_eq!(Partition::decode(&part.encode()).unwrap(), part);
    assert!(Partition::decode(&part.encode()[..30]).is_err());
}

#[test]
fn a_top_two_with_its_rank_updates_every_row_whose_rank_moves() {
    let row = |o: i64| ((Some(1), Some(o), o * 10), OP_INSERT);
    let input = vec![
        data(&[row(10)], false),
        data(&[row(20)], false),
        data(&[row(5)], false),
        data(&[row(15)], false),
        Message::EndOfStream,
    ];
    let (i, ub, ua) = (OP_INSERT, OP_UPDATE_BEFORE, OP_UPDATE_AFTER);
    let r = |o: i64, rank: i64| (Some(1), Some(o), o * 10, rank);
    let out = run(
        spec(RankFunction::RowNumber, 2, true, false),
        memory(),
        input.clone(),
        CheckpointHandle::default(),
    );
    assert_eq!(
        changes(&out, true, None),
        vec![
            (i, r(10, 1)),
            // 20 takes rank 1; 10 moves to rank 2.
            (ub, r(10, 1)),
            (ua, r(20, 1)),
            (i, r(10, 2)),
            // 5 is third: nothing. 15 pushes 10 out of rank 2.
            (ub, r(10, 2)),
            (ua, r(15, 2)),
        ]
    );
    // Without the rank only membership changes.
    let out = run(
        spec(RankFunction::RowNumber, 2, false, false),
        memory(),
        input,
        CheckpointHandle::default(),
    );
    assert_eq!(
        changes(&out, false, None),
        vec![(i, r(10, 0)), (i, r(20, 0)), (ub, r(10, 0)), (ua, r(15, 0)),]
    );
}

/// Random rows, with retractions of live rows when `changelog`; returns
/// the batches and the rows live at the end, in arrival order.
fn input(rng: &mut Lcg, n: usize, changelog: bool) -> (Vec<Vec<(Row, i8)>>, Vec<Row>) {
    let mut live: Vec<Row> = Vec::new();
    let mut batches = vec![Vec::new()];
    for _ in 0..n {
        if changelog && !live.is_empty() && rng.next(3) == 0 {
            let at = rng.next(live.len() as u64) as usize;
            let r = live[at];
            // The operator retracts the earliest of equal rows; equal rows
            // are interchangeable, so the model drops the first too.
            let first = live.iter().position(|x| *x == r).unwrap();
            live.remove(first);
            batches.last_mut().unwrap().push((r, OP_DELETE));
        } else {
            let p = match rng.next(5) {
                0 => None,
                p => Some(p as i64),
            };
            // Few distinct order keys: many ties.
            let o = match rng.next(8) {
                0 => None,
                o => Some(o as i64),
            };
            let r = (p, o, rng.next(4) as i64);
            live.push(r);
            batches.last_mut().unwrap().push((r, OP_INSERT));
        }
        if rng.next(6) == 0 {
            batches.push(Vec::new());
        }
    }
    (batches, live)
}

#[test]
fn random_inputs_rank_like_the_model() {
    let functions = [
        RankFunction::RowNumber,
        RankFunction::Rank,
        RankFunction::DenseRank,
    ];
    for seed in 0..10u64 {
        for changelog in [false, true] {
            let mut rng = Lcg(seed);
            let (batches, live) = input(&mut rng, 200, changelog);
            for function in functions {
                for limit in [1, 3] {
                    for with_rank in [false, true] {
                        let mut messages: Vec<Message> =
                            batches.iter().map(|b| data(b, changelog)).collect();
                        messages.push(Message::EndOfStream);
                        let out = run(
                            spec(function, limit, with_rank, changelog),
                            memory(),
                            messages,
                            CheckpointHandle::default(),
                        );
                        let got = net(&changes(&out, with_rank, None));
                        let what = format!(
                            "{function:?} <= {limit}, rank {with_rank}, changelog {changelog}, seed {seed}"
                        );
                        assert!(got.values().all(|&n| n > 0), "negative rows, {what}");
                        assert_eq!(got, model(function, limit, with_rank, &live), "{what}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_restored_top_n_continues_from_its_checkpoint() {
    let mut rng = Lcg(7);
    let (batches, live) = input(&mut rng, 600, true);
    let (first, rest) = batches.split_at(batches.len() / 2);
    let dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateBackend> = Arc::new(RocksDbBackend::open(dir.path()).unwrap());
    let spec = spec(RankFunction::Rank, 3, true, true);
    // First run: half, a checkpoint, then part of the rest before a crash.
    let mut messages: Vec<Message> = first.iter().map(|b| data(b, true)).collect();
    messages.push(Message::Barrier(1));
    messages.extend(rest.iter().take(rest.len() / 2).map(|b| data(b, true)));
    messages.push(Message::EndOfStream);
    let out = run(
        spec.clone(),
        state.clone(),
        messages,
        CheckpointHandle::default(),
    );
    let mut all = changes(&out, true, Some(1));
    // The second run replays everything after the checkpoint.
    let mut messages: Vec<Message> = rest.iter().map(|b| data(b, true)).collect();
    messages.push(Message::EndOfStream);
    let out = run(spec, state, messages, CheckpointHandle::resumed(1));
    all.extend(changes(&out, true, None));
    assert_eq!(net(&all), model(RankFunction::Rank, 3, true, &live));
}

/// `(p, o, v, t)`: `t` is a window_end or an event time.
fn timed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("p", DataType::Int64, true),
        Field::new("o", DataType::Int64, true),
        Field::new("v", DataType::Int64, false),
        Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]))
}

fn timed(rows: &[(i64, i64, i64, i64)]) -> Message {
    let batch = RecordBatch::try_new(
        timed_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.3),
            )),
        ],
    )
    .unwrap();
    Message::Data(batch)
}

/// Output rows `(p, o, v, t, rank)` of an append-only mode, in order.
fn timed_rows(out: &[Message]) -> Vec<(i64, i64, i64, i64, i64)> {
    let mut rows = Vec::new();
    for m in out {
        if let Message::Data(b) = m {
            assert_eq!(b.num_columns(), 5, "append-only: no _op");
            let col = |i: usize| b.column(i).as_primitive::<Int64Type>();
            let t = b.column(3).as_primitive::<TimestampMillisecondType>();
            for r in 0..b.num_rows() {
                rows.push((
                    col(0).value(r),
                    col(1).value(r),
                    col(2).value(r),
                    t.value(r),
                    col(4).value(r),
                ));
            }
        }
    }
    rows
}

fn run_timed(
    mode: RankMode,
    limit: u64,
    state: Arc<dyn StateBackend>,
    input: Vec<Message>,
    checkpoints: CheckpointHandle,
) -> Vec<Message> {
    let partition = match mode {
        RankMode::WindowClose { .. } => vec![0, 3],
        _ => vec![0],
    };
    let spec = RankSpec {
        function: RankFunction::RowNumber,
        partition,
        order: match mode {
            RankMode::FirstByTime { .. } => vec![(3, false)],
            _ => vec![(1, true)],
        },
        limit,
        rank_column: Some("rn".into()),
        op_column: None,
        mode,
        state_ttl_ms: None,
        state_ttl_event_time: false,
    };
    let op = RankOperator::try_new(&timed_schema(), spec).unwrap();
    run_operator_harness_with(Box::new(op), state, vec![input], checkpoints).unwrap()
}

#[test]
fn a_window_top_n_emits_once_when_the_window_closes_and_drops_late_rows() {
    let w = RankMode::WindowClose { window_end: 3 };
    let input = vec![
        // Window [.., 1000) of partition 1 and 2, and window [.., 2000).
        timed(&[(1, 5, 50, 1000), (1, 9, 90, 1000), (2, 1, 10, 1000)]),
        timed(&[(1, 7, 70, 1000), (1, 8, 80, 2000)]),
        Message::Watermark(998),
        timed(&[(1, 6, 60, 1000)]),
        // 999 = window_end - 1: the window [.., 1000) fires.
        Message::Watermark(999),
        // Late for the fired window; on time for the next.
        timed(&[(1, 100, 0, 1000), (1, 3, 30, 2000)]),
        Message::Watermark(i64::MAX),
        Message::EndOfStream,
    ];
    let out = run_timed(w, 2, memory(), input, CheckpointHandle::default());
    let got = timed_rows(&out);
    // Windows come out in the order they close.
    assert!(got.windows(2).all(|p| p[0].3 <= p[1].3), "{got:?}");
    assert_eq!(
        sorted(got),
        sorted(vec![
            (1, 9, 90, 1000, 1),
            (1, 7, 70, 1000, 2),
            (2, 1, 10, 1000, 1),
            (1, 8, 80, 2000, 1),
            (1, 3, 30, 2000, 2),
        ])
    );
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn first_rows_by_event_time_are_emitted_once_the_watermark_passes_them() {
    let first = RankMode::FirstByTime { time: 3 };
    let input = vec![
        timed(&[(1, 0, 1, 50), (1, 0, 2, 30), (2, 0, 3, 70)]),
        // Partition 1: 30 then 50 are its first two; 45 arrives in time.
        timed(&[(1, 0, 4, 45)]),
        Message::Watermark(40),
        // Late: behind the watermark.
        timed(&[(3, 0, 5, 20), (1, 0, 6, 35)]),
        Message::Watermark(60),
        // Partition 1 is complete: 55 is its third row.
        timed(&[(1, 0, 7, 55), (2, 0, 8, 65)]),
        Message::Watermark(i64::MAX),
        Message::EndOfStream,
    ];
    let out = run_timed(first, 2, memory(), input, CheckpointHandle::default());
    assert_eq!(
        timed_rows(&out),
        vec![
            (1, 0, 2, 30, 1),
            (1, 0, 4, 45, 2),
            (2, 0, 8, 65, 1),
            (2, 0, 3, 70, 2),
        ]
    );
}

#[test]
fn a_restored_window_top_n_fires_its_windows_once() {
    let w = RankMode::WindowClose { window_end: 3 };
    let dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateBackend> = Arc::new(RocksDbBackend::open(dir.path()).unwrap());
    // First run: a window's rows, a checkpoint, the watermark that fires
    // it, and a crash before the next checkpoint.
    let input = vec![
        timed(&[(1, 5, 50, 1000), (1, 9, 90, 1000)]),
        Message::Watermark(500),
        Message::Barrier(1),
        timed(&[(1, 7, 70, 1000)]),
        Message::Watermark(999),
        Message::EndOfStream,
    ];
    let out = run_timed(w, 2, state.clone(), input, CheckpointHandle::default());
    let before_crash = timed_rows(&out);
    assert_eq!(before_crash, vec![(1, 9, 90, 1000, 1), (1, 7, 70, 1000, 2)]);
    // Nothing fired before the checkpoint: the replay fires it again, with
    // the stored rows and the replayed one; a row behind the restored
    // watermark is late.
    let input = vec![
        timed(&[(1, 7, 70, 1000)]),
        timed(&[(1, 1, 10, 400)]),
        Message::Watermark(999),
        Message::Watermark(i64::MAX),
        Message::EndOfStream,
    ];
    let out = run_timed(w, 2, state, input, CheckpointHandle::resumed(1));
    assert_eq!(timed_rows(&out), before_crash);
}
