//! A job's state directory: finding its newest usable checkpoint,
//! committing what that checkpoint holds, refusing state another plan
//! wrote, and recording the job so it can be resumed without its SQL.
//!
//! ```text
//!  STATE_ROOT/<job>/
//!    job.json        the job as submitted (its plan): `resume` reads it
//!    plan.json       the plan's shape, to refuse state another plan wrote
//!    db/, checkpoints/   (eddy-state)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use eddy_operators::checkpoint::{Checkpointing, Committers, recover_all};
use eddy_planner::Job;
use eddy_state::RocksDbOptions;
use eddy_state::checkpoint::CheckpointStore;

use crate::{EngineError, Result};

/// Where a job's state directory records its plan's shape.
const PLAN_FILE: &str = "plan.json";
/// Where it records the whole job, for `resume`.
pub(crate) const JOB_FILE: &str = "job.json";

/// A job ready to start from its state directory.
pub(crate) struct Prepared {
    pub checkpointing: Checkpointing,
    /// The checkpoint it resumes from, if any.
    pub restored: Option<u64>,
    /// Damaged checkpoints skipped on the way, each with its reason.
    pub warnings: Vec<String>,
}

/// What a state directory says about a job.
pub(crate) enum Recovery {
    Ready(Box<Prepared>),
    /// Its newest checkpoint recorded the job as finished.
    AlreadyFinished {
        checkpoint: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Prepares `job`'s state from `dir`: the newest complete checkpoint there
/// (falling back past damaged ones), its committables committed again, the
/// live database rebuilt from it.
pub(crate) fn prepare(
    job: &Job,
    dir: &Path,
    committers: &Committers,
    stop: Arc<AtomicBool>,
) -> Result<Recovery> {
    let store = CheckpointStore::new(dir, job.checkpoints_retained)?;
    let recovered = store.latest()?;
    check_plan(job, dir, recovered.as_ref().map(|r| r.manifest.id))?;
    let mut warnings = Vec::new();
    if let Some(r) = &recovered {
        for damage in &r.skipped {
            warnings.push(format!(
                "{damage}; {} falls back to checkpoint {}",
                job.name, r.manifest.id
            ));
        }
    }
    let db = store.restore(recovered.as_ref(), RocksDbOptions::default())?;
    if let Some(r) = &recovered {
        // Phase two again: committing is idempotent, and whatever was
        // begun after this checkpoint is aborted by the sinks on open.
        // Committers read what the writers kept in the checkpoint.
        recover_all(committers, &r.manifest.commits, &db).map_err(|source| {
            EngineError::Commit {
                checkpoint: r.manifest.id,
                source,
            }
        })?;
        if r.manifest.finished {
            return Ok(Recovery::AlreadyFinished {
                checkpoint: r.manifest.id,
            });
        }
        tracing::info!(job = %job.name, checkpoint = r.manifest.id, "resuming from checkpoint");
    }
    let interval = u64::try_from(job.checkpoint_interval_ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    let restored = recovered.map(|r| r.manifest.id);
    Ok(Recovery::Ready(Box::new(Prepared {
        checkpointing: Checkpointing {
            store: Arc::new(store),
            db,
            interval,
            restored,
            stop,
        },
        restored,
        warnings,
    })))
}

/// Refuses to resume a job from state another plan wrote (its SQL changed:
/// other operators, columns or windows would read that state wrong), and
/// records the plan of a job that starts afresh. Parallelism, cache size
/// and state time-to-live may change between runs.
fn check_plan(job: &Job, dir: &Path, checkpoint: Option<u64>) -> Result<()> {
    let shape = plan_shape(job)?;
    let path = dir.join(PLAN_FILE);
    if let (Some(id), Ok(text)) = (checkpoint, std::fs::read_to_string(&path)) {
        let stored: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| EngineError::Unreadable {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        if stored != shape {
            return Err(EngineError::PlanChanged {
                job: job.name.clone(),
                checkpoint: id,
                dir: dir.display().to_string(),
                plan: path.display().to_string(),
            });
        }
        return Ok(());
    }
    write_json(&path, &shape)?;
    write_json(&dir.join(JOB_FILE), job)
}

/// The plan with what may change between runs left out.
fn plan_shape(job: &Job) -> Result<serde_json::Value> {
    let mut shape = serde_json::to_value(&job.graph).map_err(|e| EngineError::Unreadable {
        path: job.name.clone(),
        reason: e.to_string(),
    })?;
    strip_keys(&mut shape, &["parallelism", "cache_bytes", "state_ttl_ms"]);
    // Between subtasks of different counts a forward edge becomes a
    // gather; what flows along it is the same.
    if let Some(edges) = shape.get_mut("edges").and_then(|e| e.as_array_mut()) {
        for edge in edges {
            if edge.get("kind").and_then(|k| k.as_str()) == Some("Gather") {
                edge["kind"] = serde_json::Value::from("Forward");
            }
        }
    }
    Ok(shape)
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| EngineError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The job a state directory records (see [`JOB_FILE`]).
pub(crate) fn read_job(dir: &Path) -> Result<Job> {
    let path: PathBuf = dir.join(JOB_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| EngineError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Removes every member named in `keys`, at any depth.
fn strip_keys(value: &mut serde_json::Value, keys: &[&str]) {
    match value {
        serde_json::Value::Object(map) => {
            for k in keys {
                map.remove(*k);
            }
            map.values_mut().for_each(|v| strip_keys(v, keys));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip_keys(v, keys)),
        _ => {}
    }
}
