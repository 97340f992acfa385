//! Sources never block the dataflow: while a source has nothing to read,
//! checkpoints complete, processing-time windows close, early firings
//! happen and idle splits stop holding the watermark back, on the
//! runtime's clock. Each test runs a job in a job manager over a `channel`
//! source (rows the test pushes; a quiet queue is a quiet broker
//! partition), registered as an embedding program registers a connector.
//!
//! Each test waits for something that must happen without any further
//! input, with a deadline so that a regression fails instead of hanging.
//! The deadline is not a speed requirement.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::channel::Channel;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use eddy_connectors::MemoryCollector;
use eddy_engine::{JobId, JobManager, JobState};
use eddy_planner::{Outcome, Session};

/// A generous bound on "soon", so a stall fails rather than hangs.
const DEADLINE: Duration = Duration::from_secs(60);

struct Running {
    manager: JobManager,
    id: JobId,
    rows: MemoryCollector,
    _state: tempfile::TempDir,
}

/// Starts the last statement of `sql` (a SELECT into memory) over
/// `channel`'s source, at `parallelism`.
fn start(channel: &Channel, sql: &str, parallelism: usize) -> Running {
    let mut session = Session::new(parallelism);
    session.register_connector(channel.connector()).unwrap();
    let rows = common::select_into_memory(&mut session);
    let outcomes = session
        .execute(sql)
        .unwrap_or_else(|e| panic!("{}", e.render(sql, "test")));
    let Some(Outcome::Job(job)) = outcomes.into_iter().last() else {
        panic!("no job")
    };
    let state = tempfile::tempdir().unwrap();
    let manager = JobManager::new(state.path(), session.build_env());
    let id = manager.submit(job).unwrap();
    Running {
        manager,
        id,
        rows,
        _state: state,
    }
}

/// Waits until `what` holds, or fails naming it.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < DEADLINE, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sum of column `col` (a BIGINT) over every row received.
fn sum(rows: &MemoryCollector, col: &str) -> i64 {
    rows.batches()
        .iter()
        .map(|b| {
            let c = b.column_by_name(col).unwrap().as_primitive::<Int64Type>();
            (0..c.len()).map(|i| c.value(i)).sum::<i64>()
        })
        .sum()
}

const SOURCE: &str = "CREATE SOURCE s (k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) \
                      WITH (connector = 'channel');";

#[test]
fn checkpoints_complete_while_the_source_waits_for_data() {
    let channel = Channel::new(1);
    let sql = format!(
        "SET 'execution.checkpointing.interval' = '50 ms'; {SOURCE} SELECT k FROM s WHERE k > 0;"
    );
    let job = start(&channel, &sql, 1);
    channel.push(0, &[(1, 1_000)]);
    eventually("the row arrives", || sum(&job.rows, "k") == 1);
    let metrics = job.manager.status(&job.id).unwrap().metrics;
    let before = metrics.checkpoints().completed;
    // Nothing more is pushed: the source has nothing, and checkpoints go on.
    eventually("three more checkpoints with no input", || {
        metrics.checkpoints().completed >= before + 3
    });
    channel.close(0);
    let status = job.manager.wait(&job.id).unwrap();
    assert!(matches!(status.state, JobState::Finished), "{status:?}");
}

#[test]
fn a_processing_time_window_closes_when_its_end_passes_without_later_rows() {
    let channel = Channel::new(1);
    let sql = format!(
        "{SOURCE}
         WITH b AS (SELECT k, PROCTIME() AS p FROM s)
         SELECT COUNT(*) AS n FROM TABLE(TUMBLE(TABLE b, DESCRIPTOR(p), INTERVAL '1' SECOND))
         GROUP BY window_start, window_end;"
    );
    let job = start(&channel, &sql, 1);
    channel.push(0, &[(1, 0), (2, 0), (3, 0)]);
    // No row comes after these: only the wall clock can close the window.
    eventually("the processing-time window fires", || {
        sum(&job.rows, "n") == 3
    });
    channel.close(0);
    job.manager.wait(&job.id).unwrap();
}

#[test]
fn early_firing_is_on_time_without_input() {
    let channel = Channel::new(1);
    let sql = format!(
        "SET 'table.exec.emit.early-fire.enabled' = 'true';
         SET 'table.exec.emit.early-fire.delay' = '100 ms';
         {SOURCE}
         SELECT COUNT(*) AS n FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '1' HOUR))
         GROUP BY window_start, window_end;"
    );
    let job = start(&channel, &sql, 1);
    channel.push(0, &[(1, 1_000), (2, 2_000)]);
    // The hour is far from over: only an early firing emits the count.
    eventually("an early result", || {
        common::render(&job.rows.batches()) == ["2"]
    });
    channel.close(0);
    job.manager.wait(&job.id).unwrap();
}

/// Split 1 never has a row. Once it has been idle for the timeout, split
/// 0 alone moves the watermark and the first window fires, though no row
/// arrives anywhere after that; at parallelism 2 split 1 is another
/// subtask's, which marks its output idle.
fn an_idle_split_stops_holding_the_watermark(parallelism: usize) {
    let channel = Channel::new(2);
    let sql = "CREATE SOURCE s (k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) \
               WITH (connector = 'channel', 'watermark.idle-timeout' = '300 ms');
               SELECT window_start, COUNT(*) AS n
               FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND))
               GROUP BY window_start, window_end;";
    let job = start(&channel, sql, parallelism);
    let plan = job.manager.status(&job.id).unwrap();
    assert!(plan.state.is_running());
    channel.push(0, &[(1, 1_000), (1, 2_000), (1, 12_000)]);
    eventually("the first window fires once split 1 is idle", || {
        common::render(&job.rows.batches()) == ["1970-01-01T00:00:00 | 2"]
    });
    channel.close(0);
    channel.close(1);
    job.manager.wait(&job.id).unwrap();
    assert_eq!(
        common::render(&job.rows.batches()),
        ["1970-01-01T00:00:00 | 2", "1970-01-01T00:00:10 | 1"]
    );
}

#[test]
fn an_idle_split_stops_holding_the_watermark_in_one_subtask() {
    an_idle_split_stops_holding_the_watermark(1);
}

#[test]
fn an_idle_subtask_stops_holding_the_watermark_downstream() {
    an_idle_split_stops_holding_the_watermark(2);
}
