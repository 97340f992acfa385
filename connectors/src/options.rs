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

/// A duration as Flink writes them: a number and a unit (`5 s`, `500ms`,
/// `1 min`, `2 hours`); a bare number is milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let (n, unit) = number_and_unit(text)?;
    let millis = match unit.as_str() {
        "" | "ms" | "milli" | "millis" => 1,
        "s" => 1_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "m" => 60_000,
        other => unit_millis(other)?,
    };
    (n >= 0.0).then(|| (n * millis as f64).round() as i64)
}

/// A memory size as Flink writes them: a number and a unit (`64 mb`,
/// `512k`, `1 gb`, binary multiples); a bare number is bytes.
pub fn parse_memory_bytes(text: &str) -> Option<u64> {
    let (n, unit) = number_and_unit(text)?;
    let shift = match unit.as_str() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kib" | "kibibytes" => 10,
        "m" | "mb" | "mib" | "mebibytes" => 20,
        "g" | "gb" | "gib" | "gibibytes" => 30,
        "t" | "tb" | "tib" | "tebibytes" => 40,
        _ => return None,
    };
    (n >= 0.0).then(|| (n * (1u64 << shift) as f64).round() as u64)
}

/// `5 s` → (5.0, "s"): the leading number and the unit after it, in
/// lower case.
fn number_and_unit(text: &str) -> Option<(f64, String)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim().to_ascii_lowercase()))
}

/// Milliseconds in a unit spelled out, singular or plural.
fn unit_millis(unit: &str) -> Option<i64> {
    let unit = unit.strip_suffix('s').unwrap_or(unit);
    Some(match unit {
        "millisecond" | "milli" => 1,
        "second" | "sec" => 1_000,
        "minute" | "min" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_duration_ms, parse_memory_bytes};

    #[test]
    fn memory_sizes_in_flink_spelling() {
        assert_eq!(parse_memory_bytes("64 mb"), Some(64 << 20));
        assert_eq!(parse_memory_bytes("512k"), Some(512 << 10));
        assert_eq!(parse_memory_bytes("1.5GB"), Some(3 << 29));
        assert_eq!(parse_memory_bytes("4096"), Some(4096));
        assert_eq!(parse_memory_bytes("lots"), None);
        assert_eq!(parse_memory_bytes("5 parsecs"), None);
    }

    #[test]
    fn durations_in_flink_spelling() {
        assert_eq!(parse_duration_ms("5 s"), Some(5_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("1 min"), Some(60_000));
        assert_eq!(parse_duration_ms("2 hours"), Some(7_200_000));
        assert_eq!(parse_duration_ms("1.5 seconds"), Some(1_500));
        assert_eq!(parse_duration_ms("250"), Some(250));
        assert_eq!(parse_duration_ms("five s"), None);
        assert_eq!(parse_duration_ms("5 fortnights"), None);
    }
}
