//! `WITH (key = 'value', ...)` options, with checks for unknown keys.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use crate::{ConnectorError, Result};

/// Connector options. Keys are case-insensitive; every key must be read by
/// the connector, or [`Options::check_all_used`] reports it as unknown.
#[derive(Debug, Clone, Default)]
pub struct Options {
    values: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl Options {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            used: RefCell::default(),
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.used.borrow_mut().insert(key.to_string());
        self.values.get(key).cloned()
    }

    /// The first of several spellings that is present.
    pub fn get_any(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| self.get(k))
    }

    pub fn require(&self, key: &str) -> Result<String> {
        self.get(key)
            .ok_or_else(|| ConnectorError::Config(format!("missing option '{key}'")))
    }

    /// Parses an option, with a default when absent.
    pub fn parse<T: FromStr>(&self, keys: &[&str], default: T) -> Result<T> {
        match self.get_any(keys) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| {
                ConnectorError::Config(format!("option '{}' has an invalid value '{v}'", keys[0]))
            }),
        }
    }

    /// Fails on a key no connector code asked for (most likely a typo).
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let unknown: Vec<_> = self
            .values
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let known: Vec<_> = used.iter().cloned().collect();
        Err(ConnectorError::Config(format!(
            "unknown option{} {} (this connector accepts: {})",
            if unknown.len() > 1 { "s" } else { "" },
            unknown
                .iter()
                .map(|k| format!("'{k}'"))
                .collect::<Vec<_>>()
                .join(", "),
            known.join(", ")
        )))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.values.iter()
    }
}
