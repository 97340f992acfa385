//! The join through the real task loop: exact changelogs of outer joins,
//! and the net effect of random changelogs on both sides against a model
//! computed from the rows, with and without a restore in the middle.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int8Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Int8Type, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::Operator as BinOp;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::scalar::ScalarValue;
use eddy_state::{MemoryBackend, RocksDbBackend, StateBackend};

use super::{JoinInput, JoinOperator, JoinType, KeyRows};
use crate::checkpoint::CheckpointHandle;
use crate::message::Message;
use crate::runtime::run_operator_harness_with;
use crate::test_support::{Lcg, net};
use crate::updating::{OP_DELETE, OP_INSERT};

#[test]
fn key_rows_remove_and_round_trip() {
    let mut rows = KeyRows::default();
    rows.push(b"aa", 0, 7);
    rows.push(b"b", 2, 8);
    rows.push(b"ccc", 1, i64::MAX);
    assert!(rows.remove(b"b"));
    assert!(!rows.remove(b"zz"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.row(1), b"ccc");
    assert_eq!(rows.matches, vec![0, 1]);
    let mut expired = Vec::new();
    let mut after = rows.clone();
    after.expire(7, |row, m| expired.push((row.to_vec(), m)));
    assert_eq!(expired, vec![(b"aa".to_vec(), 0)]);
    assert_eq!(after.row(0), b"ccc");
    assert_eq!(KeyRows::decode(&rows.encode()).unwrap(), rows);
    assert!(KeyRows::decode(&[9, 0, 0, 0]).is_err());
}

/// `(k, value, _op)`: a side's changelog schema (`v` on the left, `w` on
/// the right).
fn schema(value: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new(value, DataType::Int64, false),
        Field::new("_op", DataType::Int8, false),
    ]))
}

type Row = (Option<i64>, i64, i8);

/// A live row of one side: `(k, value)`.
type Live = (Option<i64>, i64);

fn data(value: &str, rows: &[Row]) -> Message {
    let batch = RecordBatch::try_new(
        schema(value),
        vec![
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int8Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap();
    Message::Data(batch)
}

/// `v < w + 5` over left (k, v) ++ right (k, w).
fn residual() -> Arc<dyn PhysicalExpr> {
    let w_plus_5 = Arc::new(BinaryExpr::new(
        Arc::new(Column::new("w", 3)),
        BinOp::Plus,
        Arc::new(Literal::new(ScalarValue::Int64(Some(5)))),
    ));
    Arc::new(BinaryExpr::new(
        Arc::new(Column::new("v", 1)),
        BinOp::Lt,
        w_plus_5,
    ))
}

fn join(kind: JoinType, with_residual: bool) -> Box<JoinOperator> {
    let input = |v: &str| JoinInput {
        schema: schema(v),
        keys: vec![0],
        op_column: Some(2),
        expiry: None,
    };
    let residual = with_residual.then(residual);
    Box::new(JoinOperator::try_new(kind, input("v"), input("w"), residual).unwrap())
}

/// One output row: `(left k, v, right k, w)`.
type Joined = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// The output rows with their ops, up to the first barrier `until` (if
/// given: what a crash after it would have committed).
fn changes(out: &[Message], until: Option<u64>) -> Vec<(i8, Joined)> {
    let mut rows = Vec::new();
    for m in out {
        match m {
            Message::Barrier(id) if Some(*id) == until => break,
            Message::Data(b) => {
                let col = |i: usize| b.column(i).as_primitive::<Int64Type>();
                let ops = b.column(4).as_primitive::<Int8Type>();
                for r in 0..b.num_rows() {
                    let get = |i: usize| col(i).is_valid(r).then(|| col(i).value(r));
                    rows.push((ops.value(r), (get(0), get(1), get(2), get(3))));
                }
            }
            _ => {}
        }
    }
    rows
}

/// The join of the net rows of both sides, computed directly.
fn model(
    kind: JoinType,
    with_residual: bool,
    left: &[(Option<i64>, i64)],
    right: &[(Option<i64>, i64)],
) -> BTreeMap<Joined, i64> {
    let matches = |l: &(Option<i64>, i64), r: &(Option<i64>, i64)| {
        l.0.is_some() && l.0 == r.0 && (!with_residual || l.1 < r.1 + 5)
    };
    let mut out = BTreeMap::new();
    let mut add = |row: Joined| *out.entry(row).or_insert(0) += 1;
    for l in left {
        for r in right.iter().filter(|r| matches(l, r)) {
            add((l.0, Some(l.1), r.0, Some(r.1)));
        }
        if kind.preserves(0) && !right.iter().any(|r| matches(l, r)) {
            add((l.0, Some(l.1), None, None));
        }
    }
    for r in right {
        if kind.preserves(1) && !left.iter().any(|l| matches(l, r)) {
            add((None, None, r.0, Some(r.1)));
        }
    }
    out
}

fn run(
    op: Box<JoinOperator>,
    state: Arc<dyn StateBackend>,
    inputs: Vec<Vec<Message>>,
) -> Vec<Message> {
    run_operator_harness_with(op, state, inputs, CheckpointHandle::default()).unwrap()
}

#[test]
fn an_outer_join_retracts_its_padded_row_on_the_first_match_and_restores_it_after_the_last() {
    // Barriers order the two inputs: a channel waits at a barrier until
    // the other delivered it.
    let b = Message::Barrier;
    let left = vec![
        data("v", &[(Some(1), 10, OP_INSERT)]),
        b(1),
        b(2),
        b(3),
        b(4),
        Message::EndOfStream,
    ];
    let right = vec![
        b(1),
        data("w", &[(Some(1), 20, OP_INSERT)]),
        b(2),
        data("w", &[(Some(1), 30, OP_INSERT)]),
        b(3),
        data("w", &[(Some(1), 20, OP_DELETE), (Some(1), 30, OP_DELETE)]),
        b(4),
        data("w", &[(Some(2), 40, OP_INSERT)]),
        Message::EndOfStream,
    ];
    let out = run(
        join(JoinType::Full, false),
        Arc::new(MemoryBackend::default()),
        vec![left, right],
    );
    let (i, d) = (OP_INSERT, OP_DELETE);
    let l = (Some(1), Some(10));
    let full = |w: i64| (l.0, l.1, Some(1), Some(w));
    assert_eq!(
        changes(&out, None),
        vec![
            (i, (l.0, l.1, None, None)),
            (d, (l.0, l.1, None, None)),
            (i, full(20)),
            (i, full(30)),
            (d, full(20)),
            (d, full(30)),
            (i, (l.0, l.1, None, None)),
            (i, (None, None, Some(2), Some(40))),
        ]
    );
}

/// A random changelog of one side: inserts, and retractions of rows still
/// live; returns its batches and the rows live at the end.
fn changelog(rng: &mut Lcg, n: usize) -> (Vec<Vec<Row>>, Vec<Live>) {
    let mut live: Vec<Live> = Vec::new();
    let mut batches = vec![Vec::new()];
    for _ in 0..n {
        if !live.is_empty() && rng.next(3) == 0 {
            let (k, v) = live.swap_remove(rng.next(live.len() as u64) as usize);
            batches.last_mut().unwrap().push((k, v, OP_DELETE));
        } else {
            let k = match rng.next(12) {
                0 => None,
                k => Some(k as i64),
            };
            let v = rng.next(10) as i64;
            live.push((k, v));
            batches.last_mut().unwrap().push((k, v, OP_INSERT));
        }
        if rng.next(7) == 0 {
            batches.push(Vec::new());
        }
    }
    (batches, live)
}

#[test]
fn random_changelogs_join_like_the_model() {
    let kinds = [
        JoinType::Inner,
        JoinType::Left,
        JoinType::Right,
        JoinType::Full,
    ];
    for seed in 0..12u64 {
        let mut rng = Lcg(seed);
        let (lb, live_l) = changelog(&mut rng, 150);
        let (rb, live_r) = changelog(&mut rng, 150);
        for kind in kinds {
            for with_residual in [false, true] {
                let mut left: Vec<Message> = lb.iter().map(|b| data("v", b)).collect();
                let mut right: Vec<Message> = rb.iter().map(|b| data("w", b)).collect();
                left.push(Message::EndOfStream);
                right.push(Message::EndOfStream);
                let out = run(
                    join(kind, with_residual),
                    Arc::new(MemoryBackend::default()),
                    vec![left, right],
                );
                let got = net(&changes(&out, None));
                assert!(got.values().all(|&n| n > 0), "negative rows: {got:?}");
                assert_eq!(
                    got,
                    model(kind, with_residual, &live_l, &live_r),
                    "{kind:?}, residual {with_residual}, seed {seed}"
                );
            }
        }
    }
}

#[test]
fn a_restored_join_continues_from_its_checkpoint() {
    for kind in [JoinType::Left, JoinType::Full] {
        let mut rng = Lcg(99);
        let (lb, live_l) = changelog(&mut rng, 400);
        let (rb, live_r) = changelog(&mut rng, 400);
        let (l1, l2) = lb.split_at(lb.len() / 2);
        let (r1, r2) = rb.split_at(rb.len() / 2);
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn StateBackend> = Arc::new(RocksDbBackend::open(dir.path()).unwrap());
        // First run: half, a checkpoint, then part of the rest before a crash.
        let first = |a: &[Vec<Row>], b: &[Vec<Row>], v: &str| {
            let mut m: Vec<Message> = a.iter().map(|x| data(v, x)).collect();
            m.push(Message::Barrier(1));
            m.extend(b.iter().take(b.len() / 2).map(|x| data(v, x)));
            m.push(Message::EndOfStream);
            m
        };
        let out = run(
            join(kind, true),
            state.clone(),
            vec![first(l1, l2, "v"), first(r1, r2, "w")],
        );
        let committed = changes(&out, Some(1));
        // The second run replays everything after the checkpoint.
        let rest = |b: &[Vec<Row>], v: &str| {
            let mut m: Vec<Message> = b.iter().map(|x| data(v, x)).collect();
            m.push(Message::EndOfStream);
            m
        };
        let out = run_operator_harness_with(
            join(kind, true),
            state,
            vec![rest(l2, "v"), rest(r2, "w")],
            CheckpointHandle::resumed(1),
        )
        .unwrap();
        let mut all = committed;
        all.extend(changes(&out, None));
        assert_eq!(net(&all), model(kind, true, &live_l, &live_r), "{kind:?}");
    }
}

/// `(k, t)` rows of an interval join's input: the key and event time.
fn timed_schema(time: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new(
            time,
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

fn timed(time: &str, rows: &[(Option<i64>, i64)]) -> Message {
    let batch = RecordBatch::try_new(
        timed_schema(time),
        vec![
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
            Arc::new(
                datafusion::arrow::array::TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                ),
            ),
        ],
    )
    .unwrap();
    Message::Data(batch)
}

#[test]
fn an_interval_join_frees_expired_rows_and_pads_unmatched_ones_when_they_expire() {
    // r.t BETWEEN l.t - 30 AND l.t + 20: a left row can match until the
    // watermark passes l.t + 20, a right row until r.t + 30.
    let ts = |name: &str, i: usize| {
        Arc::new(datafusion::physical_expr::expressions::CastExpr::new(
            Arc::new(Column::new(name, i)),
            DataType::Int64,
            None,
        )) as Arc<dyn PhysicalExpr>
    };
    let bound = |e: Arc<dyn PhysicalExpr>, op, ms: i64| {
        Arc::new(BinaryExpr::new(
            e,
            op,
            Arc::new(Literal::new(ScalarValue::Int64(Some(ms)))),
        )) as Arc<dyn PhysicalExpr>
    };
    let low = Arc::new(BinaryExpr::new(
        ts("rt", 3),
        BinOp::GtEq,
        bound(ts("lt", 1), BinOp::Minus, 30),
    ));
    let high = Arc::new(BinaryExpr::new(
        ts("rt", 3),
        BinOp::LtEq,
        bound(ts("lt", 1), BinOp::Plus, 20),
    ));
    let residual = Arc::new(BinaryExpr::new(low, BinOp::And, high));
    let input = |time: &str, after_ms| JoinInput {
        schema: timed_schema(time),
        keys: vec![0],
        op_column: None,
        expiry: Some(super::Expiry {
            time_column: 1,
            after_ms,
        }),
    };
    let op = JoinOperator::try_new(
        JoinType::Left,
        input("lt", 20),
        input("rt", 30),
        Some(residual),
    )
    .unwrap();
    assert_eq!(op.output_schema().fields().len(), 4, "append-only: no _op");

    let mut rng = Lcg(7);
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let (mut lm, mut rm) = (Vec::new(), Vec::new());
    for i in 0..400i64 {
        let t = 1_000 + i * 5;
        let k = match rng.next(6) {
            0 => None,
            k => Some(k as i64),
        };
        let (rows, msgs) = if rng.next(2) == 0 {
            (&mut lm, &mut left)
        } else {
            (&mut rm, &mut right)
        };
        rows.push((k, t));
        msgs.push(timed("x", &[(k, t)]));
        // Watermarks lag by 50 ms; no row is late.
        msgs.push(Message::Watermark(t - 50));
    }
    // Fix the schemas' time column names (one per side).
    let rename = |msgs: Vec<Message>, time: &str| -> Vec<Message> {
        msgs.into_iter()
            .map(|m| match m {
                Message::Data(b) => Message::Data(
                    RecordBatch::try_new(timed_schema(time), b.columns().to_vec()).unwrap(),
                ),
                other => other,
            })
            .collect()
    };
    let mut left = rename(left, "lt");
    let mut right = rename(right, "rt");
    let last = 1_000 + 399 * 5 - 50;
    for side in [&mut left, &mut right] {
        side.push(Message::Watermark(last));
        side.push(Message::Barrier(1));
        // The end of the input expires (and pads) everything left.
        side.push(Message::Watermark(crate::message::MAX_WATERMARK));
        side.push(Message::EndOfStream);
    }
    let dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateBackend> = Arc::new(RocksDbBackend::open(dir.path()).unwrap());
    let out = run(Box::new(op), state.clone(), vec![left, right]);

    // What the state holds after the last barrier: only rows that can
    // still match (expiry past the last watermark).
    let table = state.open_table("harness-op").unwrap();
    let mut kept = 0;
    for (_, value) in table.scan_range(&[0, 0], &[0xff, 0xff]).unwrap() {
        let rows = KeyRows::decode(&value).unwrap();
        assert!(rows.expires.iter().all(|&e| e > last), "{:?}", rows.expires);
        kept += rows.len();
    }
    assert!(kept > 0 && kept < 40, "kept {kept} of 400 rows");

    // The output, before and after the end of the input, is the model's.
    let mut got = BTreeMap::new();
    for m in &out {
        if let Message::Data(b) = m {
            assert_eq!(b.num_columns(), 4);
            let t = |i: usize| {
                b.column(i)
                    .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>()
                    .clone()
            };
            let k = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
            let (lk, lt, rk, rt) = (k(0), t(1), k(2), t(3));
            for r in 0..b.num_rows() {
                let row = (
                    lk.is_valid(r).then(|| lk.value(r)),
                    lt.value(r),
                    rk.is_valid(r).then(|| rk.value(r)),
                    rt.is_valid(r).then(|| rt.value(r)),
                );
                *got.entry(row).or_insert(0) += 1;
            }
        }
    }
    let mut want = BTreeMap::new();
    for &(k, t) in &lm {
        let matches: Vec<_> = rm
            .iter()
            .filter(|(rk, rt)| k.is_some() && *rk == k && *rt >= t - 30 && *rt <= t + 20)
            .collect();
        for &&(rk, rt) in &matches {
            *want.entry((k, t, rk, Some(rt))).or_insert(0) += 1;
        }
        if matches.is_empty() {
            *want.entry((k, t, None, None)).or_insert(0) += 1;
        }
    }
    assert_eq!(got, want);
}
