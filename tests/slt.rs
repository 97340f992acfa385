//! Golden SQL tests: every `tests/slt/**/*.slt` file runs through the
//! `sqllogictest` crate against Eddy, once at parallelism 1 and once at 4
//! (the results must not depend on it). Queries read bounded sources, run to
//! the end of their input, and the rows their sink received are compared.
//!
//! Regenerate the expected results after a deliberate change with
//!
//! ```text
//! cargo test --test slt -- --complete
//! ```
//!
//! (then read the diff: the expectations must stay independently checked).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_connectors::{MemoryCollector, MemoryConnector};
use eddy_operators::metrics::JobMetrics;
use eddy_planner::{Outcome, Session, build};
use eddy_state::RocksDbBackend;
use libtest_mimic::{Arguments, Failed, Trial};
use sqllogictest::{DBOutput, DefaultColumnType};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

struct EddyDb {
    session: Session,
    state: tempfile::TempDir,
    /// Rows of the `memory` select sink.
    collector: MemoryCollector,
}

impl EddyDb {
    fn new(parallelism: usize) -> Self {
        let mut session = Session::new(parallelism);
        for f in eddy_connectors::nexmark::functions() {
            session.register_function(f).unwrap();
        }
        let collector = MemoryCollector::default();
        session
            .register_connector(Arc::new(MemoryConnector {
                collector: collector.clone(),
            }))
            .unwrap();
        session.select_sink = [("connector".to_string(), "memory".to_string())]
            .into_iter()
            .collect();
        Self {
            session,
            state: tempfile::tempdir().expect("temp dir"),
            collector,
        }
    }

    fn run_job(&self, job: &eddy_planner::Job) -> Result<Vec<RecordBatch>, SltError> {
        self.collector.take();
        let env = self.session.build_env();
        let dataflow = build(&job.graph, &env).map_err(|e| SltError(e.to_string()))?;
        let state = RocksDbBackend::open(&self.state.path().join(&job.name))
            .map_err(|e| SltError(e.to_string()))?;
        let running = dataflow
            .start(Arc::new(state), JobMetrics::default())
            .map_err(|e| SltError(e.to_string()))?;
        running.join().map_err(|e| SltError(e.to_string()))?;
        Ok(self.collector.take())
    }
}

impl sqllogictest::DB for EddyDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let outcomes = self
            .session
            .execute(sql)
            .map_err(|e| SltError(e.render(sql, "query")))?;
        let mut output = DBOutput::StatementComplete(0);
        for outcome in outcomes {
            output = match outcome {
                Outcome::Created(_) => DBOutput::StatementComplete(0),
                Outcome::Explain(text) | Outcome::Info(text) => DBOutput::Rows {
                    types: vec![DefaultColumnType::Text],
                    rows: text.lines().map(|l| vec![l.to_string()]).collect(),
                },
                Outcome::Job(job) => {
                    let is_select = job.is_select;
                    let batches = self.run_job(&job)?;
                    if is_select {
                        rows(&job, batches)?
                    } else {
                        DBOutput::StatementComplete(0)
                    }
                }
            };
        }
        Ok(output)
    }

    fn engine_name(&self) -> &str {
        "eddy"
    }
}

fn rows(
    job: &eddy_planner::Job,
    batches: Vec<RecordBatch>,
) -> Result<DBOutput<DefaultColumnType>, SltError> {
    // What the sink received (a table-mode result has no `_op`), else what
    // the plan promised.
    let schema = match batches.first() {
        Some(b) => b.schema().as_ref().clone(),
        None => eddy_planner::sink_schema(&job.graph)
            .map(|s| s.as_ref().clone())
            .ok_or_else(|| SltError("a graph without a sink".into()))?,
    };
    let types = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
            t if t.is_integer() => DefaultColumnType::Integer,
            t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
                DefaultColumnType::FloatingPoint
            }
            _ => DefaultColumnType::Any,
        })
        .collect();
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let batch =
            eddy_connectors::readable_changelog(&batch).map_err(|e| SltError(e.to_string()))?;
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SltError(e.to_string()))?;
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| {
                        let s = f.value(row).to_string();
                        if s.is_empty() {
                            "(empty)".to_string()
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(DBOutput::Rows { types, rows: out })
}

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            slt_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
}

fn run_file(path: &Path, parallelism: usize, complete: bool) -> Result<(), Failed> {
    let mut runner = sqllogictest::Runner::new(move || async move { Ok(EddyDb::new(parallelism)) });
    if complete {
        futures::executor::block_on(runner.update_test_file(
            path,
            " ",
            sqllogictest::default_validator,
            sqllogictest::default_normalizer,
            sqllogictest::default_column_validator,
        ))
        .map_err(|e| Failed::from(e.to_string()))
    } else {
        runner
            .run_file(path)
            .map_err(|e| Failed::from(e.display(true).to_string()))
    }
}

fn main() {
    let complete = std::env::args().any(|a| a == "--complete");
    let args = Arguments::from_iter(std::env::args().filter(|a| a != "--complete"));
    let root = std::path::PathBuf::from(
        // At run time first: a target dir reused from another checkout holds
        // test binaries built there.
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    );
    let mut files = Vec::new();
    slt_files(&root.join("tests/slt"), &mut files);
    let mut trials = Vec::new();
    for path in files {
        let name = path
            .strip_prefix(root.join("tests/slt"))
            .unwrap_or(&path)
            .display()
            .to_string();
        for parallelism in [1, 4] {
            // Regenerating writes the file once, from the parallelism-1 run.
            if complete && parallelism != 1 {
                continue;
            }
            let path = path.clone();
            trials.push(Trial::test(format!("{name}::p{parallelism}"), move || {
                // Paths inside the .slt files are relative to the crate root.
                run_file(&path, parallelism, complete)
            }));
        }
    }
    std::env::set_current_dir(root).expect("crate root");
    libtest_mimic::run(&args, trials).exit();
}
