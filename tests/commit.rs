//! The two-phase commit protocol with a sink that is not a file: a
//! "ledger" that publishes rows into a table file under a log of committed
//! transactions, as a database sink would. The job (a paced Nexmark replay
//! of about a second, checkpointing every 30 ms) is killed (as `kill -9`)
//! after checkpoint 1's manifest is durable and before its committables are
//! committed; the restarted job commits them on recovery and finishes. The
//! table then holds exactly the rows an uninterrupted run's does: each bid
//! once.
//!
//! The job runs in a child process (this test binary, started again with
//! `EDDY_COMMIT_CHILD` set), so that the kill is a real one.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use eddy_connectors::options::{OptionDecl, OptionType};
use eddy_connectors::{Connector, ConnectorContext, Options};
use eddy_engine::{JobManager, JobState};
use eddy_operators::sink::{Committer, DeliveryGuarantee, Sink, SinkCommit, SinkProvider};
use eddy_planner::{Outcome, Session};
use libtest_mimic::{Arguments, Failed, Trial};

const EVENTS: u64 = 4_000;
const CHILD: &str = "EDDY_COMMIT_CHILD";

/// `connector = 'ledger'`: rows as JSON lines, published to
/// `path/table.txt` one transaction per checkpoint and subtask.
#[derive(Debug)]
struct LedgerConnector;

impl Connector for LedgerConnector {
    fn name(&self) -> &'static str {
        "ledger"
    }

    fn help(&self) -> &'static str {
        "a transactional table for a test"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![OptionDecl::required(
            "path",
            OptionType::String,
            "the ledger's directory",
        )]
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn sink(&self, ctx: &ConnectorContext<'_>) -> eddy_connectors::Result<Arc<dyn SinkProvider>> {
        let dir = PathBuf::from(ctx.options.require("path")?);
        std::fs::create_dir_all(&dir).unwrap();
        Ok(Arc::new(Ledger {
            dir,
            schema: ctx.schema.clone(),
        }))
    }

    fn guarantee(&self, _options: &Options) -> DeliveryGuarantee {
        DeliveryGuarantee::ExactlyOnce
    }
}

#[derive(Debug, Clone)]
struct Ledger {
    dir: PathBuf,
    schema: datafusion::arrow::datatypes::SchemaRef,
}

impl SinkProvider for Ledger {
    fn writer(&self) -> eddy_operators::Result<Box<dyn Sink>> {
        use eddy_connectors::format::Format as _;
        let json = eddy_connectors::format::JsonFormat
            .encoder(&self.schema, &Options::default())?
            .unwrap();
        Ok(Box::new(LedgerWriter {
            ledger: self.clone(),
            subtask: 0,
            json,
            rows: Vec::new(),
        }))
    }

    fn committer(&self) -> Option<Arc<dyn Committer>> {
        Some(Arc::new(self.clone()))
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        DeliveryGuarantee::ExactlyOnce
    }
}

impl Ledger {
    fn committed(&self) -> BTreeSet<String> {
        std::fs::read_to_string(self.dir.join("committed.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Phase two: a transaction's staged rows join the table, once.
impl Committer for Ledger {
    fn commit(&self, committables: &[serde_json::Value]) -> eddy_operators::Result<()> {
        for c in committables {
            let id = c["id"].as_str().unwrap().to_string();
            if self.committed().contains(&id) {
                continue;
            }
            let staged = PathBuf::from(c["staged"].as_str().unwrap());
            let rows = std::fs::read_to_string(&staged).unwrap();
            let mut table = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("table.txt"))
                .unwrap();
            table.write_all(rows.as_bytes()).unwrap();
            table.sync_all().unwrap();
            let mut log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("committed.log"))
                .unwrap();
            writeln!(log, "{id}").unwrap();
            log.sync_all().unwrap();
            std::fs::remove_file(&staged).unwrap();
        }
        Ok(())
    }
}

struct LedgerWriter {
    ledger: Ledger,
    subtask: usize,
    json: Box<dyn eddy_connectors::format::Encoder>,
    /// JSON lines written since the last barrier.
    rows: Vec<u8>,
}

impl Sink for LedgerWriter {
    fn name(&self) -> String {
        "ledger".into()
    }

    fn open(&mut self, ctx: &eddy_operators::OperatorContext) -> eddy_operators::Result<()> {
        self.subtask = ctx.subtask;
        Ok(())
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> eddy_operators::Result<()> {
        self.json.encode(batch, &mut self.rows)?;
        Ok(())
    }

    /// Phase one: the rows since the last barrier are staged, durably.
    fn pre_commit(&mut self, checkpoint: u64, _last: bool) -> eddy_operators::Result<SinkCommit> {
        if self.rows.is_empty() {
            return Ok(SinkCommit::default());
        }
        let id = format!("{}-{checkpoint}", self.subtask);
        let staged = self.ledger.dir.join(format!("staged-{id}.txt"));
        let mut f = std::fs::File::create(&staged).unwrap();
        f.write_all(&std::mem::take(&mut self.rows)).unwrap();
        f.sync_all().unwrap();
        Ok(SinkCommit {
            position: None,
            committable: Some(serde_json::json!({"id": id, "staged": staged})),
        })
    }

    /// Transactions staged after the restored checkpoint are aborted.
    fn recover(&mut self, checkpoint: u64, _position: Option<&[u8]>) -> eddy_operators::Result<()> {
        for e in std::fs::read_dir(&self.ledger.dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix("staged-")
                .and_then(|n| n.strip_suffix(".txt"))
            else {
                continue;
            };
            let n: u64 = id.rsplit('-').next().unwrap().parse().unwrap();
            if n > checkpoint {
                std::fs::remove_file(self.ledger.dir.join(&name)).unwrap();
            }
        }
        Ok(())
    }
}

/// The child: runs the job to its end (or to its crash point).
fn child(dir: &Path) {
    let mut session = Session::new(2);
    session
        .register_connector(Arc::new(LedgerConnector))
        .unwrap();
    let sql = format!(
        "SET 'execution.checkpointing.interval' = '30 ms';
         CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3))
         WITH (connector = 'nexmark', 'events.num' = '{EVENTS}', 'first-event.rate' = '{EVENTS}',
               'max-emit-speed' = 'false', 'batch.size' = '40');
         CREATE SINK t WITH (connector = 'ledger', path = '{ledger}') AS SELECT * FROM bid;",
        ledger = dir.join("ledger").display(),
    );
    let outcomes = session.execute(&sql).unwrap();
    let Some(Outcome::Job(job)) = outcomes.into_iter().last() else {
        panic!("no job")
    };
    let manager = JobManager::new(dir.join("state"), session.build_env());
    let id = manager.submit(job).unwrap();
    let status = manager.wait(&id).unwrap();
    assert!(matches!(status.state, JobState::Finished), "{status:?}");
}

fn run_child(dir: &Path, crash_at: Option<&str>) -> std::process::ExitStatus {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD, dir).env_remove("EDDY_CRASH_AT");
    if let Some(point) = crash_at {
        cmd.env("EDDY_CRASH_AT", point);
    }
    cmd.status().unwrap()
}

/// The committables of the newest complete checkpoint in the job's state.
fn newest_manifest_commits(dir: &Path) -> Vec<serde_json::Value> {
    let checkpoints = dir.join("state/job1-t/checkpoints");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .map(|e| e.unwrap().path().join("_eddy_checkpoint.json"))
        .filter(|p| p.exists())
        .collect();
    manifests.sort();
    let text = std::fs::read_to_string(manifests.last().unwrap()).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["payload"].clone())
        .collect()
}

/// The ledger's table: its lines, sorted.
fn table(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("ledger/table.txt")).unwrap_or_default();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn a_crash_between_pre_commit_and_commit_commits_exactly_once() -> Result<(), Failed> {
    // The reference: an uninterrupted run.
    let reference = tempfile::tempdir().unwrap();
    assert!(run_child(reference.path(), None).success());
    let want = table(reference.path());
    let bids = (0..EVENTS)
        .filter(|&i| {
            use eddy_connectors::nexmark::generator::{EventType, GeneratorConfig, event_type};
            event_type(GeneratorConfig::default().event_id(i).1) == EventType::Bid
        })
        .count();
    assert_eq!(want.len(), bids, "the reference holds every bid");
    let dir = tempfile::tempdir().unwrap();
    // Killed once checkpoint 1's manifest is durable, before its commit.
    let status = run_child(dir.path(), Some("manifest-written"));
    use std::os::unix::process::ExitStatusExt;
    assert!(
        matches!(status.signal(), Some(9 | 6)),
        "the child was not killed: {status}"
    );
    let pending = newest_manifest_commits(dir.path());
    assert!(
        !pending.is_empty(),
        "checkpoint 1 holds the ledger's committables"
    );
    let ledger = Ledger {
        dir: dir.path().join("ledger"),
        schema: std::sync::Arc::new(datafusion::arrow::datatypes::Schema::empty()),
    };
    for c in &pending {
        assert!(
            !ledger.committed().contains(c["id"].as_str().unwrap()),
            "{c} was committed before the crash"
        );
    }
    // The restart commits them on recovery, then runs to the end.
    let status = run_child(dir.path(), None);
    assert!(status.success(), "the restarted job failed: {status}");
    for c in &pending {
        assert!(ledger.committed().contains(c["id"].as_str().unwrap()));
    }
    let got = table(dir.path());
    if got != want {
        let distinct: BTreeSet<&String> = got.iter().collect();
        return Err(format!(
            "{} rows in the table, {} distinct, {} expected",
            got.len(),
            distinct.len(),
            want.len()
        )
        .into());
    }
    Ok(())
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD) {
        child(Path::new(&dir));
        return;
    }
    let args = Arguments::from_args();
    let trials = vec![Trial::test(
        "a_crash_between_pre_commit_and_commit_commits_exactly_once",
        a_crash_between_pre_commit_and_commit_commits_exactly_once,
    )];
    libtest_mimic::run(&args, trials).exit();
}
