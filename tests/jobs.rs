//! The job manager: a failing subtask fails its job (promptly, naming the
//! subtask and the message, never a hang), a stopped job resumes from its
//! state directory without its SQL, a cancelled job ends at once, and each
//! job has its own metrics.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{AsArray, Int64Builder};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use eddy_engine::{JobManager, JobState};
use eddy_planner::{Job, Outcome, Session};

/// `boom(n)`: `n`, or a panic once `n` reaches 3: an operator with a bug.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Boom {
    signature: Signature,
}

impl ScalarUDFImpl for Boom {
    fn name(&self) -> &str {
        "boom"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let n = arrays[0].as_primitive::<Int64Type>();
        let mut out = Int64Builder::with_capacity(n.len());
        for i in 0..n.len() {
            let v = n.value(i);
            assert!(v < 3, "boom: the count reached {v}");
            out.append_value(v);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

fn session() -> Session {
    let mut session = Session::new(2);
    session
        .register_function(ScalarUDF::new_from_impl(Boom {
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
        }))
        .unwrap();
    session
}

/// The job `sql`'s last statement starts.
fn job(session: &mut Session, sql: &str) -> Job {
    let outcomes = session
        .execute(sql)
        .unwrap_or_else(|e| panic!("{}", e.render(sql, "test")));
    match outcomes.into_iter().last() {
        Some(Outcome::Job(job)) => job,
        other => panic!("no job: {other:?}"),
    }
}

/// Bids from an endless generator.
const ENDLESS: &str = "SET 'execution.checkpointing.interval' = '20 ms';
    CREATE SOURCE bid (auction BIGINT, date_time TIMESTAMP(3),
      WATERMARK FOR date_time AS date_time)
    WITH (connector = 'nexmark', 'events.num' = '0', 'batch.size' = '100');";

#[test]
fn a_panic_in_a_subtask_fails_the_job_with_its_name_and_message() {
    let mut session = session();
    let sql = format!(
        "{ENDLESS} CREATE SINK out WITH (connector = 'blackhole') AS
         SELECT auction, boom(COUNT(*)) AS n FROM bid GROUP BY auction;"
    );
    let job = job(&mut session, &sql);
    let state = tempfile::tempdir().unwrap();
    let manager = JobManager::new(state.path(), session.build_env());
    let started = Instant::now();
    let id = manager.submit(job).unwrap();
    let status = manager.wait(&id).unwrap();
    let JobState::Failed(error) = &status.state else {
        panic!("the job did not fail: {status:?}");
    };
    let message = error.to_string();
    assert!(
        message.starts_with("aggregate[") && message.contains("panicked: boom: the count reached "),
        "{message}"
    );
    // The endless source was stopped with it (the wait returned at all);
    // say how long it took, for the log.
    eprintln!("failed after {:?}: {message}", started.elapsed());
}

#[test]
fn a_cancelled_job_ends_without_a_checkpoint() {
    let mut session = session();
    let sql = format!(
        "{ENDLESS} CREATE SINK out WITH (connector = 'blackhole') AS SELECT auction FROM bid;"
    );
    let job = job(&mut session, &sql);
    let state = tempfile::tempdir().unwrap();
    let manager = JobManager::new(state.path(), session.build_env());
    let id = manager.submit(job).unwrap();
    let metrics = manager.status(&id).unwrap().metrics;
    while metrics.rows_in() == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    manager.cancel(&id).unwrap();
    let status = manager.wait(&id).unwrap();
    assert!(matches!(status.state, JobState::Cancelled), "{status:?}");
    assert_eq!(manager.list().len(), 1);
}

/// The committed rows of a file sink's directory: each window's count.
fn window_counts(dir: &Path) -> Vec<(String, i64)> {
    let mut rows = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return rows;
    };
    for e in entries {
        let path = e.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("part-")
        {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            rows.push((
                v["window_start"].as_str().unwrap().to_string(),
                v["n"].as_i64().unwrap(),
            ));
        }
    }
    rows.sort();
    rows
}

#[test]
fn a_stopped_job_resumes_from_its_state_directory_without_its_sql() {
    let out = tempfile::tempdir().unwrap();
    let sql = format!(
        "SET 'execution.checkpointing.interval' = '50 ms';
         CREATE SOURCE bid (auction BIGINT, date_time TIMESTAMP(3),
           WATERMARK FOR date_time AS date_time)
         WITH (connector = 'nexmark', 'events.num' = '3000', 'first-event.rate' = '2000',
               'max-emit-speed' = 'false', 'batch.size' = '50');
         CREATE SINK windows WITH (connector = 'file', path = '{}/') AS
         SELECT window_start, COUNT(*) AS n
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '100' MILLISECOND))
         GROUP BY window_start, window_end;",
        out.path().display()
    );
    let mut session = session();
    let job = job(&mut session, &sql);
    let state = tempfile::tempdir().unwrap();
    let manager = JobManager::new(state.path(), session.build_env());
    let id = manager.submit(job).unwrap();
    // Paced by event time, the input takes 1.5 s: stop it midway.
    let metrics = manager.status(&id).unwrap().metrics;
    while metrics.rows_in() < 500 {
        std::thread::sleep(Duration::from_millis(5));
    }
    manager.stop(&id).unwrap();
    let stopped = manager.wait(&id).unwrap();
    assert!(matches!(stopped.state, JobState::Stopped), "{stopped:?}");
    let partial: i64 = window_counts(out.path()).iter().map(|r| r.1).sum();
    // A new manager, as after a restart: the job comes back from its
    // state directory alone.
    let manager = JobManager::new(state.path(), session.build_env());
    let id = manager.resume(&stopped.state_dir).unwrap();
    let resumed = manager.wait(&id).unwrap();
    assert!(matches!(resumed.state, JobState::Finished), "{resumed:?}");
    assert!(resumed.resumed_from.is_some());
    let rows = window_counts(out.path());
    let bids = (0..3000u64)
        .filter(|&i| {
            let config = eddy_connectors::nexmark::generator::GeneratorConfig {
                first_event_rate: 2000.0,
                ..Default::default()
            };
            eddy_connectors::nexmark::generator::event_type(config.event_id(i).1)
                == eddy_connectors::nexmark::generator::EventType::Bid
        })
        .count() as i64;
    let total: i64 = rows.iter().map(|r| r.1).sum();
    assert_eq!(total, bids, "every bid counted once across the stop");
    assert!(partial < total, "the stop came before the end");
    let mut windows: Vec<&String> = rows.iter().map(|r| &r.0).collect();
    windows.dedup();
    assert_eq!(windows.len(), rows.len(), "each window committed once");
}

#[test]
fn each_job_counts_rows_per_operator_and_subtask() {
    let mut session = session();
    let sql = "CREATE SOURCE bid (auction BIGINT, date_time TIMESTAMP(3),
                 WATERMARK FOR date_time AS date_time)
               WITH (connector = 'nexmark', 'events.num' = '1000');
               CREATE SINK a WITH (connector = 'blackhole') AS
               SELECT auction, window_start, COUNT(*) AS n
               FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' MILLISECOND))
               GROUP BY auction, window_start, window_end;
               CREATE SINK b WITH (connector = 'blackhole') AS SELECT auction FROM bid;";
    let outcomes = session.execute(sql).unwrap();
    let jobs: Vec<Job> = outcomes
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Job(j) => Some(j),
            _ => None,
        })
        .collect();
    let state = tempfile::tempdir().unwrap();
    let manager = JobManager::new(state.path(), session.build_env());
    let ids: Vec<_> = jobs
        .into_iter()
        .map(|j| manager.submit(j).unwrap())
        .collect();
    let statuses: Vec<_> = ids.iter().map(|id| manager.wait(id).unwrap()).collect();
    // 1000 events hold 920 bids: each job read them itself.
    for s in &statuses {
        assert!(matches!(s.state, JobState::Finished), "{s:?}");
        assert_eq!(s.metrics.rows_in(), 920, "{}", s.id);
    }
    let ops = statuses[0].metrics.operators();
    let window: Vec<_> = ops
        .iter()
        .filter(|o| o.operator.contains("WindowAggregate"))
        .collect();
    assert_eq!(window.len(), 2, "one per subtask: {ops:?}");
    assert_eq!(window.iter().map(|o| o.rows_in).sum::<u64>(), 920);
    assert!(
        window
            .iter()
            .all(|o| o.batches_in > 0 && o.rows_out > 0 && o.watermark.is_some())
    );
    let source = ops.iter().find(|o| o.operator.ends_with("Source")).unwrap();
    assert_eq!(source.rows_out, 920);
    // The other job's operators are its own.
    assert!(
        statuses[1]
            .metrics
            .operators()
            .iter()
            .all(|o| !o.operator.contains("WindowAggregate"))
    );
}
