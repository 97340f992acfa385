//! The temporal join driven hook by hook, so that versions, probe rows and
//! watermarks arrive in an exact order. Expected rows are worked out by
//! hand: each probe row `(k, ts, v)` with the rate of key `k` valid at
//! `ts` (the version with the latest time at or before `ts`).

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::Operator as BinOp;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use eddy_state::{MemoryBackend, StateBackend};

use super::{TemporalJoinOperator, TemporalSide};
use crate::lookup::LookupJoinType;
use crate::operator::{Collector, Operator};
use crate::test_support::Driven;

/// `(k, ts, <value>)`: a key, an event time (ms), a value.
fn schema(value: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new(value, DataType::Int64, true),
    ]))
}

fn rows(value: &str, rows: &[(Option<i64>, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(value),
        vec![
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

fn orders(r: &[(i64, i64, i64)]) -> RecordBatch {
    let r: Vec<_> = r.iter().map(|&(k, t, v)| (Some(k), t, v)).collect();
    rows("v", &r)
}

fn rates(r: &[(i64, i64, i64)]) -> RecordBatch {
    let r: Vec<_> = r.iter().map(|&(k, t, v)| (Some(k), t, v)).collect();
    rows("rate", &r)
}

/// `v < rate` over probe (k, ts, v) ++ version (k, ts, rate).
fn v_below_rate() -> Arc<dyn PhysicalExpr> {
    Arc::new(BinaryExpr::new(
        Arc::new(Column::new("v", 2)),
        BinOp::Lt,
        Arc::new(Column::new("rate", 5)),
    ))
}

fn join(
    kind: LookupJoinType,
    residual: Option<Arc<dyn PhysicalExpr>>,
) -> Box<TemporalJoinOperator> {
    let side = || TemporalSide {
        keys: vec![0],
        time: 1,
    };
    Box::new(
        TemporalJoinOperator::try_new(
            kind,
            (&schema("v"), side()),
            (&schema("rate"), side()),
            residual,
        )
        .unwrap(),
    )
}

fn memory() -> Arc<dyn StateBackend> {
    Arc::new(MemoryBackend::default())
}

/// How a time under a second is printed.
fn ts(ms: i64) -> String {
    match ms {
        0 => "1970-01-01T00:00:00".into(),
        _ => format!("1970-01-01T00:00:00.{ms:03}"),
    }
}

fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows.sort();
    rows
}

/// A probe row `(k, t, v)` with its version `(time, rate)`, or padded.
fn joined(k: i64, t: i64, v: i64, rate: Option<(i64, i64)>) -> String {
    match rate {
        Some((vt, r)) => format!("{k},{},{v},{k},{},{r}", ts(t), ts(vt)),
        None => format!("{k},{},{v},,,", ts(t)),
    }
}

#[test]
fn each_row_joins_the_version_valid_at_its_time_once_the_watermark_passes_it() {
    let mut j = Driven::open(join(LookupJoinType::Inner, None), &memory());
    assert!(
        j.input(1, rates(&[(1, 0, 10), (1, 100, 11), (2, 50, 20)]))
            .is_empty()
    );
    let probes = orders(&[
        (1, 50, 1),
        (1, 100, 2),
        (1, 150, 3),
        (2, 40, 4),
        (2, 60, 5),
        (3, 70, 6),
    ]);
    assert!(j.input(0, probes).is_empty());
    // A version that arrives after the rows, before the watermark: 1's
    // rate from 120 on is 12.
    assert!(j.input(1, rates(&[(1, 120, 12)])).is_empty());
    // The watermark passes 100: the rows at 50, 100 (the version of 100 is
    // valid at 100) and 60; key 2's row at 40 has no version yet at its
    // time, key 3 none at all. (Keys come out in no particular order.)
    assert_eq!(
        sorted(j.watermark(100)),
        [
            joined(1, 50, 1, Some((0, 10))),
            joined(1, 100, 2, Some((100, 11))),
            joined(2, 60, 5, Some((50, 20))),
        ]
    );
    assert_eq!(j.watermark(200), [joined(1, 150, 3, Some((120, 12)))]);
    // Behind the watermark: late, dropped and counted.
    assert!(j.input(0, orders(&[(1, 150, 7)])).is_empty());
    assert_eq!(j.late_rows(), 1);
    // A late version still counts for the rows to come.
    assert!(j.input(1, rates(&[(1, 180, 13)])).is_empty());
    assert!(j.input(0, orders(&[(1, 250, 8)])).is_empty());
    assert_eq!(j.watermark(300), [joined(1, 250, 8, Some((180, 13)))]);
}

#[test]
fn a_left_join_pads_rows_without_a_version_or_failing_the_condition() {
    let mut j = Driven::open(join(LookupJoinType::Left, Some(v_below_rate())), &memory());
    j.input(1, rates(&[(1, 10, 5)]));
    // The NULL key is padded on arrival.
    assert_eq!(
        j.input(
            0,
            rows(
                "v",
                &[
                    (Some(1), 5, 1),
                    (Some(1), 20, 3),
                    (Some(1), 30, 9),
                    (None, 40, 2)
                ]
            ),
        ),
        [format!(",{},2,,,", ts(40))]
    );
    // The others when the watermark passes: 5 precedes every version, and
    // 9 < 5 fails.
    assert_eq!(
        j.watermark(50),
        [
            joined(1, 5, 1, None),
            joined(1, 20, 3, Some((10, 5))),
            joined(1, 30, 9, None),
        ]
    );
    let mut inner = Driven::open(join(LookupJoinType::Inner, Some(v_below_rate())), &memory());
    inner.input(1, rates(&[(1, 10, 5)]));
    inner.input(0, orders(&[(1, 5, 1), (1, 20, 3), (1, 30, 9)]));
    assert_eq!(inner.watermark(50), [joined(1, 20, 3, Some((10, 5)))]);
}

#[test]
fn rows_and_versions_waiting_in_a_checkpoint_are_joined_after_a_restore() {
    let state = memory();
    let mut before = Driven::open(join(LookupJoinType::Inner, None), &state);
    before.input(1, rates(&[(1, 0, 10), (1, 100, 11)]));
    before.input(0, orders(&[(1, 50, 1), (1, 150, 2)]));
    assert_eq!(before.watermark(60), [joined(1, 50, 1, Some((0, 10)))]);
    before.checkpoint();
    // What happens after the checkpoint is lost with the crash.
    before.input(1, rates(&[(1, 120, 99)]));

    let mut after = Driven::open(join(LookupJoinType::Inner, None), &state);
    // The watermark came back with the state: 40 is late.
    assert!(after.input(0, orders(&[(1, 40, 3)])).is_empty());
    assert_eq!(after.late_rows(), 1);
    after.input(1, rates(&[(1, 120, 12)]));
    assert_eq!(after.watermark(200), [joined(1, 150, 2, Some((120, 12)))]);
}

#[test]
fn versions_older_than_the_one_valid_at_the_watermark_are_dropped() {
    let mut op = join(LookupJoinType::Inner, None);
    let versions = rates(&[(1, 0, 10), (1, 100, 11), (1, 200, 12), (1, 300, 13)]);
    op.process_input_batch(1, versions, &mut Collector::default())
        .unwrap();
    op.handle_watermark(250, &mut Collector::default()).unwrap();
    // Only 200 (valid at 250) and 300 (still to come) can be chosen.
    let kept: Vec<i64> = op
        .store
        .partitions
        .values()
        .flat_map(|p| p.entries.iter().map(|e| e.time))
        .collect();
    assert_eq!(kept, [200, 300]);
    let mut out = Collector::default();
    op.process_input_batch(0, orders(&[(1, 260, 1)]), &mut out)
        .unwrap();
    op.handle_watermark(299, &mut out).unwrap();
    assert_eq!(
        crate::test_support::render(out.take()),
        [joined(1, 260, 1, Some((200, 12)))]
    );
}
