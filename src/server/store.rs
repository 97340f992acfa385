//! What a server keeps in its state directory, so that a restart (kill -9
//! included) brings back the catalog and every job that was running.
//!
//! ```text
//! <state-dir>/catalog.jsonl   each statement that changed the catalog, in order
//! <state-dir>/jobs.json       each job: its SQL, whether it should run
//! <state-dir>/jobs/<id>/      the job manager's state directory of each job
//! <state-dir>/views/<v>/      each materialized view's logs (see views.rs)
//! ```
//!
//! Both files are rewritten through a temporary file and a rename, so a
//! crash leaves the old or the new one, never half of one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Whether a job should be running when the server starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
    Cancelled,
}

/// A job the server started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// The statement that started it.
    pub sql: String,
    /// Its plan, as EXPLAIN shows it.
    #[serde(default)]
    pub plan: String,
    /// The materialized view it keeps, if it keeps one.
    #[serde(default)]
    pub view: Option<String>,
    pub desired: Desired,
    /// When it was submitted (ms since the Unix epoch).
    pub created_unix_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct JobsFile {
    /// The number the next job's id takes.
    next: u64,
    jobs: BTreeMap<String, JobRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CatalogLine {
    sql: String,
}

/// The state directory's files (see the module docs).
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    jobs: JobsFile,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("jobs"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("jobs.json");
        let jobs = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("cannot read {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => JobsFile::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        repair_catalog(&dir.join("catalog.jsonl"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            jobs,
        })
    }

    /// Where materialized views keep their logs.
    pub fn views_root(&self) -> PathBuf {
        self.dir.join("views")
    }

    /// Where the job manager keeps jobs' state.
    pub fn jobs_root(&self) -> PathBuf {
        self.dir.join("jobs")
    }

    /// The catalog's statements, in the order they ran.
    pub fn catalog(&self) -> anyhow::Result<Vec<String>> {
        let path = self.dir.join("catalog.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line: CatalogLine = serde_json::from_str(line)
                .with_context(|| format!("{}:{}", path.display(), i + 1))?;
            out.push(line.sql);
        }
        Ok(out)
    }

    /// Appends a statement that changed the catalog, durably.
    pub fn append_catalog(&self, sql: &str) -> anyhow::Result<()> {
        let path = self.dir.join("catalog.jsonl");
        let mut line = serde_json::to_string(&CatalogLine {
            sql: sql.to_string(),
        })?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        Ok(())
    }

    pub fn jobs(&self) -> &BTreeMap<String, JobRecord> {
        &self.jobs.jobs
    }

    /// A fresh job number: ids are never reused, so a new job never
    /// finds an old one's state.
    pub fn next_number(&mut self) -> u64 {
        self.jobs.next += 1;
        self.jobs.next
    }

    pub fn put_job(&mut self, id: &str, record: JobRecord) -> anyhow::Result<()> {
        self.jobs.jobs.insert(id.to_string(), record);
        self.save()
    }

    pub fn set_desired(&mut self, id: &str, desired: Desired) -> anyhow::Result<()> {
        if let Some(job) = self.jobs.jobs.get_mut(id) {
            job.desired = desired;
        }
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        let path = self.dir.join("jobs.json");
        let tmp = self.dir.join("jobs.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.jobs)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// A crash in the middle of an append leaves a partial last line: that
/// statement never got its answer, so it is cut off before the next
/// append.
fn repair_catalog(path: &Path) -> anyhow::Result<()> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if text.is_empty() || text.ends_with(b"\n") {
        return Ok(());
    }
    let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    tracing::warn!(path = %path.display(), "dropping a partly written last statement");
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(keep as u64)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_and_jobs_survive_a_reopen_and_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        store
            .append_catalog("CREATE TABLE a (x INT)")
            .expect("append");
        store
            .append_catalog("CREATE VIEW v AS\nSELECT x FROM a")
            .expect("append");
        let n = store.next_number();
        let record = JobRecord {
            sql: "INSERT INTO b SELECT * FROM a".into(),
            plan: String::new(),
            view: None,
            desired: Desired::Running,
            created_unix_ms: 1,
        };
        store.put_job("1-b", record).expect("put");
        store.set_desired("1-b", Desired::Stopped).expect("set");
        // A crash in the middle of the next append.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("catalog.jsonl"))
            .expect("open");
        f.write_all(b"{\"sql\": \"CREATE TAB").expect("write");

        let mut store = Store::open(dir.path()).expect("reopen");
        store.append_catalog("DROP VIEW v").expect("append");
        assert_eq!(
            store.catalog().expect("catalog"),
            vec![
                "CREATE TABLE a (x INT)",
                "CREATE VIEW v AS\nSELECT x FROM a",
                "DROP VIEW v"
            ]
        );
        assert_eq!(store.jobs()["1-b"].desired, Desired::Stopped);
        assert_eq!(store.next_number(), n + 1);
    }
}
