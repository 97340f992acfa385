//! Planner errors: a message and, where it came from the SQL, a span.

use eddy_parser::ast::Span;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    pub kind: PlanErrorKind,
    pub message: String,
    pub span: Option<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanErrorKind {
    /// The SQL is wrong: a type mismatch, a bad option, a misuse.
    User,
    /// The SQL names a table, view or alias that does not exist.
    UnknownTable,
    /// The SQL names a column that does not exist.
    UnknownColumn,
    /// Valid SQL that Eddy does not run yet.
    NotSupported,
    /// A bug: the planner produced something inconsistent.
    Internal,
}

impl PlanError {
    pub fn user(message: impl Into<String>, span: Span) -> Self {
        Self {
            kind: PlanErrorKind::User,
            message: message.into(),
            span: Some(span),
        }
    }

    /// A name that is not a table, view or alias in scope.
    pub fn unknown_table(message: impl Into<String>, span: Span) -> Self {
        Self {
            kind: PlanErrorKind::UnknownTable,
            ..Self::user(message, span)
        }
    }

    /// A name that is not a column in scope.
    pub fn unknown_column(message: impl Into<String>, span: Span) -> Self {
        Self {
            kind: PlanErrorKind::UnknownColumn,
            ..Self::user(message, span)
        }
    }

    pub fn not_supported(feature: impl std::fmt::Display, span: Span) -> Self {
        Self {
            kind: PlanErrorKind::NotSupported,
            message: format!("not supported yet: {feature}"),
            span: Some(span),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: PlanErrorKind::Internal,
            message: message.into(),
            span: None,
        }
    }

    /// Attaches a span if the error has none.
    pub fn at(mut self, span: Span) -> Self {
        self.span.get_or_insert(span);
        self
    }
}

impl From<datafusion::error::DataFusionError> for PlanError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        // DataFusion's planning errors (type mismatches above all) are
        // about the user's SQL; keep the message, drop the backtrace noise.
        let text = e.strip_backtrace();
        let text = text
            .strip_prefix("Error during planning: ")
            .or_else(|| text.strip_prefix("Schema error: "))
            .unwrap_or(&text)
            .to_string();
        Self {
            kind: PlanErrorKind::User,
            message: text,
            span: None,
        }
    }
}

impl From<eddy_connectors::ConnectorError> for PlanError {
    fn from(e: eddy_connectors::ConnectorError) -> Self {
        Self {
            kind: PlanErrorKind::User,
            message: e.to_string(),
            span: None,
        }
    }
}

pub type Result<T, E = PlanError> = std::result::Result<T, E>;

/// Names within edit distance 2 of `name`, closest first ("did you mean").
pub fn suggestions<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .map(|c| {
            (
                strsim::levenshtein(&name.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| {
            let near = *d <= 2.max(name.len() / 4) && *d < c.len().max(name.len());
            // `user` for `user_id`: a prefix of three or more letters.
            let prefix = name.len() >= 3 && c.to_lowercase().starts_with(&name.to_lowercase());
            near || prefix
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(3)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// ` (did you mean 'a' or 'b'?)`, or nothing.
pub fn did_you_mean(options: &[String]) -> String {
    match options {
        [] => String::new(),
        [one] => format!(" (did you mean '{one}'?)"),
        [init @ .., last] => format!(
            " (did you mean {} or '{last}'?)",
            init.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
