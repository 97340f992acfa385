//! # eddy-operators
//!
//! Eddy's runtime: the messages that flow on every edge, the operator,
//! source and sink traits, the task loop that drives them, and the
//! streaming operators themselves.
//!
//! ```text
//!  source task                         shuffle (hash of keys → key group → subtask)
//! ┌───────────────────────────┐        ┌──────────────────────────────┐
//! │ Source → Watermark → Proj │ ══╦══► │ WindowAggregate → Proj (0)   │ ══╗
//! └───────────────────────────┘   ╚══► │ WindowAggregate → Proj (1)   │ ══╬══► Sink
//!                                      └──────────────────────────────┘   ║
//!      bounded crossbeam channels: a slow sink slows the source  ◄════════╝
//! ```
//!
//! A guided tour:
//! - [`message`]: `Data / Watermark / Barrier / EndOfStream`, the only things
//!   that travel between tasks;
//! - [`operator`]: the [`Operator`] trait (one required method,
//!   `process_batch`), [`Source`] and [`Sink`];
//! - [`runtime`]: tasks on threads, watermark merging across inputs,
//!   barrier alignment, end-of-stream counting and error context: the
//!   runtime coordinates so operators only compute;
//! - [`source`] and [`sink`]: splits and readers; writers, committers and
//!   the two-phase commit;
//! - the operators, by kind: [`windows`] (tumbling, hopping, cumulating and
//!   session windows, late rows, early firing, spilling), [`joins`]
//!   (regular, interval and window joins, lookup and temporal joins),
//!   [`ranking`] (Top-N, deduplication, OVER), [`aggregate`] (the updating
//!   aggregate), [`project`] and [`watermark`] (stateless), over [`state`]
//!   (keyed state by key group, partitioning, time-to-live).

pub mod aggregate;
pub mod checkpoint;
pub mod joins;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod project;
pub mod ranking;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod state;
#[cfg(test)]
mod test_support;
pub mod union;
pub mod watermark;
pub mod windows;

// The operators by their own names, as the planner reaches them.
pub use aggregate::updating;
pub use joins::{join, lookup, temporal};
pub(crate) use ranking::partitions;
pub use ranking::{over, rank};
pub(crate) use state::keyed_state;
pub use state::{partition, ttl};
pub(crate) use windows::{emit, spill};
pub use windows::{late, session, window};

pub use message::Message;
pub use operator::{Collector, Operator, OperatorContext};
pub use sink::{Committer, DeliveryGuarantee, Sink, SinkProvider};
pub use source::{SourceProvider, SourceReader};

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Errors of the runtime and its operators.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error(transparent)]
    State(#[from] eddy_state::StateError),
    /// A source or sink failed; the message names the file, offset or
    /// endpoint involved.
    #[error("{0}")]
    Connector(String),
    /// Context added by the runtime: which task failed.
    #[error("{task}: {source}")]
    InTask {
        task: String,
        #[source]
        source: Box<OperatorError>,
    },
    /// The reader of the output went away (a closed pipe): a normal way for
    /// a terminal job to end, not a failure.
    #[error("the output was closed")]
    OutputClosed,
    /// A neighbouring task went away; the root cause is reported by that task.
    #[error("a connected task stopped unexpectedly")]
    Disconnected,
    /// Another task of the job failed, and this one was stopped for it.
    #[error("stopped: another task of the job failed")]
    Cancelled,
    /// The task panicked (a bug): the panic's message.
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl OperatorError {
    /// True if the job stopped because its output was closed.
    pub fn is_output_closed(&self) -> bool {
        match self {
            OperatorError::OutputClosed => true,
            OperatorError::InTask { source, .. } => source.is_output_closed(),
            _ => false,
        }
    }

    /// True if the job was cancelled (and nothing else failed).
    pub fn is_cancelled(&self) -> bool {
        match self {
            OperatorError::Cancelled => true,
            OperatorError::InTask { source, .. } => source.is_cancelled(),
            _ => false,
        }
    }

    /// True for errors that only echo another task's failure.
    pub fn is_secondary(&self) -> bool {
        match self {
            OperatorError::Disconnected | OperatorError::Cancelled => true,
            OperatorError::InTask { source, .. } => source.is_secondary(),
            _ => false,
        }
    }
}

pub type Result<T, E = OperatorError> = std::result::Result<T, E>;
