//! State retention (`'table.exec.state.ttl'`) in a running job and across
//! a restart: an updating count forgets a key not written for the
//! time-to-live, so the key's next row starts its count again (`+I`, not
//! `-U`/`+U`); each key's last write time is in the checkpoint, so a key
//! that idled past the time-to-live before a restart is forgotten after
//! it, while one within it is remembered.
//!
//! The tests wait out the time-to-live on the wall clock (it is processing
//! time); what they assert does not depend on how long anything takes.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::channel::Channel;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int8Type, Int64Type};
use eddy_connectors::MemoryCollector;
use eddy_engine::{JobManager, JobState};
use eddy_planner::{Job, Outcome, Session};

const DEADLINE: Duration = Duration::from_secs(60);

/// A session over `channel` whose SELECT rows go to a collector.
fn session(channel: &Channel) -> (Session, MemoryCollector) {
    let mut session = Session::new(1);
    session.register_connector(channel.connector()).unwrap();
    let rows = common::select_into_memory(&mut session);
    (session, rows)
}

fn job(session: &mut Session, ttl: &str) -> Job {
    let sql = format!(
        "SET 'table.exec.state.ttl' = '{ttl}';
         SET 'execution.checkpointing.interval' = '50 ms';
         CREATE SOURCE s (k BIGINT, ts TIMESTAMP(3)) WITH (connector = 'channel');
         SELECT k, COUNT(*) AS n FROM s GROUP BY k;"
    );
    match session.execute(&sql).unwrap().into_iter().last() {
        Some(Outcome::Job(job)) => job,
        other => panic!("no job: {other:?}"),
    }
}

/// The changelog received: `(op, k, n)`, in order.
fn changes(rows: &MemoryCollector) -> Vec<(&'static str, i64, i64)> {
    let mut out = Vec::new();
    for b in rows.batches() {
        out.extend(changes_of(&b));
    }
    out
}

fn changes_of(b: &RecordBatch) -> Vec<(&'static str, i64, i64)> {
    let k = b.column_by_name("k").unwrap().as_primitive::<Int64Type>();
    let n = b.column_by_name("n").unwrap().as_primitive::<Int64Type>();
    let op = b.column_by_name("_op").unwrap().as_primitive::<Int8Type>();
    (0..b.num_rows())
        .map(|i| {
            let op = eddy_operators::updating::op_name(op.value(i));
            (op, k.value(i), n.value(i))
        })
        .collect()
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < DEADLINE, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_key_idle_for_the_time_to_live_starts_again_in_a_running_job() {
    let channel = Channel::new(1);
    let (mut session, rows) = session(&channel);
    let job = job(&mut session, "300 ms");
    let state = tempfile::tempdir().unwrap();
    let manager = JobManager::new(state.path(), session.build_env());
    let id = manager.submit(job).unwrap();
    channel.push(0, &[(1, 0), (3, 0)]);
    eventually("the first counts", || changes(&rows).len() >= 2);
    // Past the time-to-live, with no row for key 1 meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    channel.push(0, &[(1, 0)]);
    eventually("the second count", || changes(&rows).len() >= 3);
    channel.close(0);
    manager.wait(&id).unwrap();
    let mut got = changes(&rows);
    got[..2].sort();
    assert_eq!(
        got,
        [("+I", 1, 1), ("+I", 3, 1), ("+I", 1, 1)],
        "the idle key's count started again, with +I"
    );
}

/// Runs a job, stops it after key 2's first row, waits `idle`, resumes it
/// and sends key 2 again: the changelog after the restart.
fn after_a_restart(ttl: &str, idle: Duration) -> Vec<(&'static str, i64, i64)> {
    let channel = Channel::new(1);
    let (mut session, rows) = session(&channel);
    let job = job(&mut session, ttl);
    let state = tempfile::tempdir().unwrap();
    let manager = JobManager::new(state.path(), session.build_env());
    let id = manager.submit(job).unwrap();
    channel.push(0, &[(2, 0)]);
    eventually("the first row", || !changes(&rows).is_empty());
    manager.stop(&id).unwrap();
    let stopped = manager.wait(&id).unwrap();
    assert!(matches!(stopped.state, JobState::Stopped), "{stopped:?}");
    std::thread::sleep(idle);
    let before = changes(&rows).len();
    // A new job manager, as after a restart of the process.
    let manager = JobManager::new(state.path(), session.build_env());
    let id = manager.resume(&stopped.state_dir).unwrap();
    channel.push(0, &[(2, 0)]);
    eventually("the row after the restart", || {
        changes(&rows).len() > before
    });
    channel.close(0);
    let status = manager.wait(&id).unwrap();
    assert!(matches!(status.state, JobState::Finished), "{status:?}");
    changes(&rows)[before..].to_vec()
}

#[test]
fn the_time_to_live_goes_on_across_a_restart() {
    // Idle past the time-to-live while stopped: forgotten.
    assert_eq!(
        after_a_restart("300 ms", Duration::from_millis(500)),
        [("+I", 2, 1)]
    );
    // Within it: the restored state still counts the key.
    assert_eq!(
        after_a_restart("1 h", Duration::ZERO),
        [("-U", 2, 1), ("+U", 2, 2)]
    );
}
