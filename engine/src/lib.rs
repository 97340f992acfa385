//! # eddy-engine
//!
//! The job manager: the library that runs jobs, used by `eddy run` and,
//! next, by `eddy server`.
//!
//! - [`JobManager`] owns jobs: submit (recover from the job's state
//!   directory and start), list, status, stop with a final checkpoint,
//!   cancel, wait, and resume from a state directory;
//! - each job has its own metrics and stop request; a failing subtask
//!   fails its job (never a hang), with the subtask's name and message;
//! - [`recovery`](crate::recovery) is what a state directory holds and how
//!   a job comes back from it.

mod manager;
mod recovery;

pub use manager::{JobId, JobManager, JobState, JobStatus};

/// Errors of the job manager, each naming the job or file involved.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot build {job}: {source}")]
    Build {
        job: String,
        #[source]
        source: eddy_planner::PlanError,
    },
    #[error("{job}: {source}")]
    Runtime {
        job: String,
        #[source]
        source: eddy_operators::OperatorError,
    },
    #[error(transparent)]
    State(#[from] eddy_state::StateError),
    #[error("cannot commit the output of checkpoint {checkpoint}: {source}")]
    Commit {
        checkpoint: u64,
        #[source]
        source: eddy_operators::OperatorError,
    },
    #[error(
        "{job} is not the job that wrote checkpoint {checkpoint} in {dir}: its plan changed (see {plan}), so its state would be read wrong. Run it with the SQL it started with, or with a new --state-dir"
    )]
    PlanChanged {
        job: String,
        checkpoint: u64,
        dir: String,
        plan: String,
    },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("there is no job '{0}'")]
    UnknownJob(String),
    #[error("job '{0}' is running already")]
    AlreadyRunning(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
