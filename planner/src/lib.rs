//! # eddy-planner
//!
//! From SQL text to a runnable dataflow:
//!
//! ```text
//!  SQL ──parse──► AST ──bind (names, types: DataFusion)──► PhysicalGraph ──build──► Dataflow
//!        (eddy-parser)      binder, plan                     graph (serde,       (eddy-operators)
//!                                                            EXPLAIN)
//! ```
//!
//! - [`Session`] runs the statements of a file against a [`catalog`];
//!   each continuous query becomes a [`Job`] holding a [`PhysicalGraph`];
//! - the binder resolves names against the FROM clause and functions
//!   against DataFusion's registry, with "did you mean" suggestions;
//!   DataFusion's type coercion inserts casts;
//! - [`graph`] is plain serialisable data, printed by EXPLAIN;
//! - [`build`] is the one place that turns descriptors into operators.

mod binder;
pub mod build;
pub mod catalog;
pub mod error;
pub mod expr;
pub mod functions;
pub mod graph;
mod legacy;
mod plan;
mod prune;
pub mod restart;
mod session;
pub mod types;

pub use build::{BuildEnv, build};
pub use error::{PlanError, PlanErrorKind};
pub use graph::PhysicalGraph;
pub use plan::sink_schema;
pub use restart::RestartStrategy;
pub use session::{
    CatalogRelation, Job, LatePolicy, MATERIALIZED_VIEW, Outcome, RelationKind, Session,
    SessionError, Settings,
};

/// Connectors: the registry and the trait an embedding program implements.
pub use eddy_connectors::{Connector, ConnectorRegistry};

impl From<eddy_operators::OperatorError> for PlanError {
    fn from(e: eddy_operators::OperatorError) -> Self {
        PlanError::internal(e.to_string())
    }
}

#[cfg(test)]
mod tests;
