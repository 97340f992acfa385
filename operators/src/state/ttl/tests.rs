//! Idle keys expire after the time-to-live, measured on a clock the tests
//! move by hand, in every operator that keeps state per key for ever
//! otherwise. Each operator is driven hook by hook (not through the task
//! loop), so that time passes between two batches. Expected outputs are
//! worked out by hand; each test also shows what the operator emits
//! without a time-to-live, so the expiry is what makes the difference.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::{col, lit};
use eddy_state::{MemoryBackend, StateBackend};

use super::*;
use crate::join::{JoinInput, JoinOperator, JoinType};
use crate::operator::Operator;
use crate::over::{OverAggregateOperator, OverFrame, OverMode, OverSpec};
use crate::rank::{RankFunction, RankMode, RankOperator, RankSpec};
use crate::test_support::Driven;
use crate::updating::UpdatingAggregateOperator;

/// A clock at `start` ms that the test moves, and a 100 ms time-to-live
/// measured on it.
fn manual_at(start: i64) -> (StateTtl, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(start));
    let clock = now.clone();
    (
        StateTtl::with_clock(100, Arc::new(move || clock.load(Ordering::SeqCst))),
        now,
    )
}

fn manual() -> (StateTtl, Arc<AtomicI64>) {
    manual_at(1_000)
}

#[test]
fn a_key_expires_once_idle_for_the_ttl_and_a_write_pushes_it_back() {
    let (ttl, now) = manual();
    let mut idle = IdleKeys::<u32>::new(Some(ttl));
    let mut written = [NEVER_WRITTEN; 2];
    idle.tick();
    idle.written(&mut written[0], 0, || 0);
    idle.written(&mut written[1], 0, || 1);
    now.store(1_050, Ordering::SeqCst);
    idle.tick();
    idle.written(&mut written[1], 0, || 1);
    // 99 ms after the first writes: nothing is due.
    now.store(1_099, Ordering::SeqCst);
    idle.tick();
    assert!(idle.expired(|k| Some(written[*k as usize])).is_empty());
    // 100 ms: key 0 is idle; key 1 was written again at 1050.
    now.store(1_100, Ordering::SeqCst);
    idle.tick();
    assert_eq!(idle.expired(|k| Some(written[*k as usize])), vec![(0, 0)]);
    now.store(1_149, Ordering::SeqCst);
    idle.tick();
    assert!(idle.expired(|k| Some(written[*k as usize])).is_empty());
    now.store(1_150, Ordering::SeqCst);
    idle.tick();
    assert_eq!(idle.expired(|k| Some(written[*k as usize])), vec![(0, 1)]);
}

#[test]
fn an_event_time_ttl_runs_on_the_watermark_from_the_first_one() {
    let mut idle = IdleKeys::<u32>::new(Some(StateTtl::event_time(100)));
    let mut written = [NEVER_WRITTEN; 2];
    idle.tick();
    // Before any watermark: counts as written at the first one, 500.
    idle.written(&mut written[0], 0, || 0);
    idle.advance(500);
    idle.tick();
    assert!(idle.expired(|k| Some(written[*k as usize])).is_empty());
    idle.written(&mut written[1], 0, || 1);
    // A watermark never goes back.
    idle.advance(450);
    idle.advance(599);
    idle.tick();
    assert!(idle.expired(|k| Some(written[*k as usize])).is_empty());
    idle.advance(600);
    idle.tick();
    assert_eq!(
        idle.expired(|k| Some(written[*k as usize])),
        vec![(0, 0), (0, 1)]
    );
}

#[test]
fn gone_keys_and_duplicate_timers_are_skipped() {
    let (ttl, now) = manual();
    let mut idle = IdleKeys::<u32>::new(Some(ttl));
    idle.tick();
    // Key 7 created, dropped, created again: two timers.
    let mut first = NEVER_WRITTEN;
    idle.written(&mut first, 3, || 7);
    let mut second = NEVER_WRITTEN;
    idle.written(&mut second, 3, || 7);
    idle.written(&mut NEVER_WRITTEN.clone(), 3, || 8);
    now.store(2_000, Ordering::SeqCst);
    idle.tick();
    // Key 8 is gone: no expiry for it. Key 7 expires once.
    let out = idle.expired(|k| (*k == 7).then_some(second));
    assert_eq!(out, vec![(3, 7)]);
}

#[test]
fn without_a_ttl_nothing_is_tracked() {
    let mut idle = IdleKeys::<u32>::new(None);
    let mut written = NEVER_WRITTEN;
    idle.tick();
    idle.written(&mut written, 0, || 0);
    assert_eq!(written, NEVER_WRITTEN);
    assert!(idle.expired(|_| Some(i64::MIN)).is_empty());
}

fn memory() -> Arc<dyn StateBackend> {
    Arc::new(MemoryBackend::default())
}

/// `(k, <value>)` rows, both Int64.
fn kv_schema(value: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new(value, DataType::Int64, true),
    ]))
}

fn kv(value: &str, rows: &[(i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        kv_schema(value),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap()
}

/// `(k, ts, v)` rows: a key, an event time (ms), a value.
fn timed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn timed(rows: &[(i64, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        timed_schema(),
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

fn inner_join(ttl: Option<StateTtl>) -> Box<dyn Operator> {
    let input = |v: &str| JoinInput {
        schema: kv_schema(v),
        keys: vec![0],
        op_column: None,
        expiry: None,
    };
    Box::new(
        JoinOperator::try_new(JoinType::Inner, input("v"), input("w"), None)
            .unwrap()
            .with_state_ttl(ttl),
    )
}

#[test]
fn a_join_key_idle_for_the_ttl_matches_nothing_even_after_a_restore() {
    let (ttl, now) = manual_at(0);
    let state = memory();
    let mut join = Driven::open(inner_join(Some(ttl.clone())), &state);
    assert!(join.input(0, kv("v", &[(1, 10), (2, 20)])).is_empty());
    now.store(50, Ordering::SeqCst);
    assert!(join.input(0, kv("v", &[(2, 21)])).is_empty());
    // At 120 ms key 1 (written at 0) is idle for 120 ms; key 2 for 70.
    now.store(120, Ordering::SeqCst);
    assert_eq!(
        join.input(1, kv("w", &[(1, 100), (2, 200)])),
        ["2,20,2,200", "2,21,2,200"]
    );
    assert_eq!(join.expired_keys(), 1);
    join.checkpoint();

    // Restored at 200 ms: the left rows of key 2 (last written at 50) are
    // idle for 150 ms, the right ones (at 120) for 80.
    now.store(200, Ordering::SeqCst);
    let mut restored = Driven::open(inner_join(Some(ttl)), &state);
    assert_eq!(restored.input(0, kv("v", &[(2, 22)])), ["2,22,2,200"]);
    now.store(210, Ordering::SeqCst);
    assert_eq!(restored.input(1, kv("w", &[(2, 201)])), ["2,22,2,201"]);

    // Without a time-to-live every row is kept and matches.
    let mut forever = Driven::open(inner_join(None), &memory());
    forever.input(0, kv("v", &[(1, 10), (2, 20)]));
    assert_eq!(forever.input(1, kv("w", &[(1, 100)])), ["1,10,1,100"]);
}

/// An event-time time-to-live runs on the watermark alone (no clock is
/// given): rows written before the first watermark count as written at it,
/// and restored keys keep their times, so a replay at any speed expires
/// what live did.
#[test]
fn an_event_time_ttl_expires_join_keys_by_the_watermark_even_after_a_restore() {
    let ttl = StateTtl::event_time(100);
    let state = memory();
    let mut join = Driven::open(inner_join(Some(ttl.clone())), &state);
    assert!(join.input(0, kv("v", &[(1, 10), (2, 20)])).is_empty());
    join.watermark(1_000);
    join.watermark(1_050);
    assert!(join.input(0, kv("v", &[(2, 21)])).is_empty());
    // Left key 1 (from 1000) has been idle for 99 ms of event time.
    join.watermark(1_099);
    assert_eq!(join.input(1, kv("w", &[(1, 100)])), ["1,10,1,100"]);
    // At 1120 left key 1 is idle for 120 ms; left key 2 (1050) for 70.
    join.watermark(1_120);
    assert_eq!(
        join.input(1, kv("w", &[(1, 101), (2, 200)])),
        ["2,20,2,200", "2,21,2,200"]
    );
    assert_eq!(join.expired_keys(), 1);
    join.checkpoint();

    // Restored: no watermark yet, so nothing expires; left key 2 is
    // written again before the first one (1200), so counts from it.
    let mut restored = Driven::open(inner_join(Some(ttl)), &state);
    assert_eq!(restored.input(0, kv("v", &[(2, 22)])), ["2,22,2,200"]);
    restored.watermark(1_200);
    // The right keys, last written at 1120, expire at 1220.
    restored.watermark(1_230);
    assert_eq!(restored.expired_keys(), 2);
    assert!(restored.input(0, kv("v", &[(1, 11)])).is_empty());
    assert_eq!(
        restored.input(1, kv("w", &[(2, 201)])),
        ["2,20,2,201", "2,21,2,201", "2,22,2,201"]
    );
}

fn count_by_k(ttl: Option<StateTtl>) -> Box<dyn Operator> {
    let s = kv_schema("v");
    let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
        .schema(s.clone())
        .alias("n")
        .build()
        .unwrap();
    Box::new(
        UpdatingAggregateOperator::try_new(&s, vec![0], vec![Arc::new(count)], vec![None], None)
            .unwrap()
            .with_state_ttl(ttl),
    )
}

#[test]
fn an_idle_group_starts_again_with_an_insert() {
    let (ttl, now) = manual_at(0);
    let state = memory();
    let mut agg = Driven::open(count_by_k(Some(ttl.clone())), &state);
    assert_eq!(agg.input(0, kv("v", &[(1, 0)])), ["+I 1,1"]);
    now.store(60, Ordering::SeqCst);
    assert_eq!(agg.input(0, kv("v", &[(1, 0)])), ["-U 1,1", "+U 1,2"]);
    // Idle for 90 ms: still there.
    now.store(150, Ordering::SeqCst);
    assert_eq!(agg.input(0, kv("v", &[(1, 0)])), ["-U 1,2", "+U 1,3"]);
    // Idle for 150 ms: gone, and counted again from nothing.
    now.store(300, Ordering::SeqCst);
    assert_eq!(agg.input(0, kv("v", &[(1, 0)])), ["+I 1,1"]);
    assert_eq!(agg.expired_keys(), 1);
    agg.checkpoint();

    // The time of the last update is kept in the checkpoint.
    now.store(350, Ordering::SeqCst);
    let mut soon = Driven::open(count_by_k(Some(ttl.clone())), &state);
    assert_eq!(soon.input(0, kv("v", &[(1, 0)])), ["-U 1,1", "+U 1,2"]);
    now.store(1_000, Ordering::SeqCst);
    let mut late = Driven::open(count_by_k(Some(ttl)), &state);
    assert_eq!(late.input(0, kv("v", &[(1, 0)])), ["+I 1,1"]);

    // Without a time-to-live the count goes on.
    let mut forever = Driven::open(count_by_k(None), &memory());
    forever.input(0, kv("v", &[(1, 0)]));
    assert_eq!(forever.input(0, kv("v", &[(1, 0)])), ["-U 1,1", "+U 1,2"]);
}

#[test]
fn an_idle_group_by_event_time_starts_again_once_the_watermark_passes_its_ttl() {
    let mut agg = Driven::open(count_by_k(Some(StateTtl::event_time(100))), &memory());
    assert_eq!(agg.input(0, kv("v", &[(1, 0)])), ["+I 1,1"]);
    agg.watermark(1_000);
    agg.watermark(1_099);
    assert_eq!(agg.input(0, kv("v", &[(1, 0)])), ["-U 1,1", "+U 1,2"]);
    agg.watermark(1_198);
    assert_eq!(agg.input(0, kv("v", &[(1, 0)])), ["-U 1,2", "+U 1,3"]);
    // Idle from 1198 to 1300: gone, and counted again from nothing.
    agg.watermark(1_300);
    assert_eq!(agg.input(0, kv("v", &[(1, 0)])), ["+I 1,1"]);
    assert_eq!(agg.expired_keys(), 1);
}

fn top_1(mode: RankMode, ttl: Option<StateTtl>) -> Box<dyn Operator> {
    let (schema, order) = match mode {
        RankMode::Updating => (kv_schema("v"), vec![(1, true)]),
        _ => (timed_schema(), vec![(1, false)]),
    };
    let spec = RankSpec {
        function: RankFunction::RowNumber,
        partition: vec![0],
        order,
        limit: 1,
        rank_column: Some("rn".into()),
        op_column: None,
        mode,
        state_ttl_ms: None,
        state_ttl_event_time: false,
    };
    Box::new(
        RankOperator::try_new(&schema, spec)
            .unwrap()
            .with_state_ttl(ttl),
    )
}

#[test]
fn an_idle_top_n_partition_ranks_from_nothing() {
    let (ttl, now) = manual();
    let mut top = Driven::open(top_1(RankMode::Updating, Some(ttl)), &memory());
    assert_eq!(top.input(0, kv("v", &[(1, 5)])), ["+I 1,5,1"]);
    now.store(1_050, Ordering::SeqCst);
    assert!(top.input(0, kv("v", &[(1, 3)])).is_empty());
    // Idle for 150 ms: 4 is the top of a partition that starts again.
    now.store(1_200, Ordering::SeqCst);
    assert_eq!(top.input(0, kv("v", &[(1, 4)])), ["+I 1,4,1"]);

    let mut forever = Driven::open(top_1(RankMode::Updating, None), &memory());
    forever.input(0, kv("v", &[(1, 5)]));
    assert!(forever.input(0, kv("v", &[(1, 4)])).is_empty());
}

#[test]
fn deduplication_forgets_an_idle_key_but_not_rows_waiting_for_the_watermark() {
    let (ttl, now) = manual();
    let first = RankMode::FirstByTime { time: 1 };
    let mut dedup = Driven::open(top_1(first, Some(ttl)), &memory());
    assert!(dedup.input(0, timed(&[(1, 10, 1)])).is_empty());
    assert_eq!(dedup.watermark(20), ["1,1970-01-01T00:00:00.010,1,1"]);
    // A second row of key 1 is a duplicate...
    now.store(1_050, Ordering::SeqCst);
    assert!(dedup.input(0, timed(&[(1, 30, 2)])).is_empty());
    assert!(dedup.watermark(35).is_empty());
    // ...until key 1 has been idle for the time-to-live (since 1000: a
    // dropped duplicate writes nothing).
    now.store(1_150, Ordering::SeqCst);
    assert!(dedup.input(0, timed(&[(1, 40, 3), (2, 45, 9)])).is_empty());
    // Key 2's row waits for the watermark longer than the time-to-live:
    // it is kept, and emitted once.
    now.store(1_400, Ordering::SeqCst);
    assert_eq!(
        dedup.watermark(50),
        [
            "1,1970-01-01T00:00:00.040,3,1",
            "2,1970-01-01T00:00:00.045,9,1"
        ]
    );

    let mut forever = Driven::open(top_1(first, None), &memory());
    forever.input(0, timed(&[(1, 10, 1)]));
    forever.watermark(20);
    forever.input(0, timed(&[(1, 40, 3)]));
    assert!(forever.watermark(50).is_empty());
}

fn sum_of_two_rows(ttl: Option<StateTtl>) -> Box<dyn Operator> {
    let s = timed_schema();
    let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("v", &s).unwrap()])
        .schema(s.clone())
        .alias("total")
        .build()
        .unwrap();
    let spec = OverSpec {
        partition: vec![0],
        order: (1, false),
        frame: OverFrame::Rows(1),
        op_column: None,
        mode: OverMode::EventTime,
        state_ttl_ms: None,
        state_ttl_event_time: false,
    };
    Box::new(
        OverAggregateOperator::try_new(&s, spec, vec![Arc::new(sum)])
            .unwrap()
            .with_state_ttl(ttl),
    )
}

#[test]
fn an_idle_over_partition_forgets_its_preceding_rows() {
    let (ttl, now) = manual();
    let mut over = Driven::open(sum_of_two_rows(Some(ttl)), &memory());
    over.input(0, timed(&[(1, 10, 1)]));
    assert_eq!(over.watermark(10), ["1,1970-01-01T00:00:00.010,1,1"]);
    now.store(1_150, Ordering::SeqCst);
    over.input(0, timed(&[(1, 20, 2)]));
    // The row before it was dropped with its idle partition.
    assert_eq!(over.watermark(20), ["1,1970-01-01T00:00:00.020,2,2"]);

    let mut forever = Driven::open(sum_of_two_rows(None), &memory());
    forever.input(0, timed(&[(1, 10, 1)]));
    forever.watermark(10);
    forever.input(0, timed(&[(1, 20, 2)]));
    assert_eq!(forever.watermark(20), ["1,1970-01-01T00:00:00.020,2,3"]);
}
