//! Connector and format options: each connector declares its options once
//! ([`OptionDecl`]: name, type, default, required, one line of help), and
//! validation, error messages, `DESCRIBE CONNECTOR` and the README's
//! tables all come from that declaration.
//!
//! ```text
//!  WITH ('connector' = 'file', 'path' = 'in.json', 'format' = 'json', 'json.ignore-parse-errors' = 'true')
//!          │                        └─ declared by the file connector   └─ declared by the json format
//!          └─ picks the connector in the registry
//!  validate(declarations, given) ─► Options (canonical names, typed getters) or OptionError
//! ```

use std::collections::BTreeMap;

use crate::{ConnectorError, Result};

/// The type of an option's value, checked before anything runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    String,
    /// `true` or `false`.
    Bool,
    /// A whole number, at least 0.
    Count,
    /// A number (a rate).
    Number,
    /// Flink's spelling: `'10 s'`, `'500 ms'`, `'1 min'`.
    Duration,
    /// Flink's spelling: `'64 mb'`, `'512 kb'`.
    MemorySize,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// The name of a registered format (checked by the registry).
    Format,
}

impl OptionType {
    /// How the type reads in a table and in messages.
    pub fn describe(&self) -> String {
        match self {
            OptionType::String => "string".into(),
            OptionType::Bool => "boolean".into(),
            OptionType::Count => "integer".into(),
            OptionType::Number => "number".into(),
            OptionType::Duration => "duration".into(),
            OptionType::MemorySize => "memory size".into(),
            OptionType::OneOf(words) => words.join(" | "),
            OptionType::Format => "format name".into(),
        }
    }

    /// Why `value` is not of this type, if it is not.
    fn check(&self, value: &str) -> Option<String> {
        let v = value.trim();
        let ok = match self {
            OptionType::String | OptionType::Format => true,
            OptionType::Bool => parse_bool(v).is_some(),
            OptionType::Count => v.parse::<u64>().is_ok(),
            OptionType::Number => v.parse::<f64>().is_ok_and(f64::is_finite),
            OptionType::Duration => parse_duration_ms(v).is_some(),
            OptionType::MemorySize => parse_memory_bytes(v).is_some(),
            OptionType::OneOf(words) => words.iter().any(|w| w.eq_ignore_ascii_case(v)),
        };
        if ok {
            return None;
        }
        Some(match self {
            OptionType::Bool => "expected 'true' or 'false'".into(),
            OptionType::Count => "expected a whole number".into(),
            OptionType::Number => "expected a number".into(),
            OptionType::Duration => {
                "expected a duration such as '10 s', '500 ms' or '1 min'".into()
            }
            OptionType::MemorySize => "expected a size such as '64 mb' or '512 kb'".into(),
            OptionType::OneOf(words) => format!(
                "expected {}",
                words
                    .iter()
                    .map(|w| format!("'{w}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            OptionType::String | OptionType::Format => String::new(),
        })
    }
}

/// Where an option applies: a connector may take some options only as a
/// source or only as a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Sink,
    Both,
}

impl Role {
    fn admits(self, other: Role) -> bool {
        self == Role::Both || other == Role::Both || self == other
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Sink => "sink",
            Role::Both => "source, sink",
        }
    }
}

/// One declared option.
#[derive(Debug, Clone)]
pub struct OptionDecl {
    pub name: &'static str,
    pub ty: OptionType,
    /// The value when the option is not given (as the user would write it).
    pub default: Option<&'static str>,
    pub required: bool,
    pub help: &'static str,
    pub role: Role,
    /// Other spellings accepted for the same option.
    pub aliases: &'static [&'static str],
}

impl OptionDecl {
    /// An option that must be given.
    pub const fn required(name: &'static str, ty: OptionType, help: &'static str) -> Self {
        Self {
            name,
            ty,
            default: None,
            required: true,
            help,
            role: Role::Both,
            aliases: &[],
        }
    }

    /// An option with a default.
    pub const fn optional(
        name: &'static str,
        ty: OptionType,
        default: &'static str,
        help: &'static str,
    ) -> Self {
        Self {
            name,
            ty,
            default: Some(default),
            required: false,
            help,
            role: Role::Both,
            aliases: &[],
        }
    }

    /// An option that may be left out, without a default value.
    pub const fn unset(name: &'static str, ty: OptionType, help: &'static str) -> Self {
        Self {
            name,
            ty,
            default: None,
            required: false,
            help,
            role: Role::Both,
            aliases: &[],
        }
    }

    /// Only for sources.
    pub const fn source_only(mut self) -> Self {
        self.role = Role::Source;
        self
    }

    /// Only for sinks.
    pub const fn sink_only(mut self) -> Self {
        self.role = Role::Sink;
        self
    }

    pub const fn with_aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    /// Whether `key` is this option: its name or an alias, where a `#`
    /// segment of the name stands for any one segment of the key
    /// (`fields.#.kind` is `fields.price.kind`), and a last `*` segment for
    /// one or more (`properties.*` is `properties.bootstrap.servers`).
    fn answers_to(&self, key: &str) -> bool {
        self.name == key || self.aliases.contains(&key) || self.pattern_matches(key)
    }

    fn pattern_matches(&self, key: &str) -> bool {
        if !self.is_pattern() {
            return false;
        }
        let (mut want, mut got) = (self.name.split('.'), key.split('.'));
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some("*"), Some(g)) => return !g.is_empty(),
                (Some("#"), Some(g)) if !g.is_empty() => {}
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    }

    /// A name with `#` or `*` segments stands for many keys.
    pub fn is_pattern(&self) -> bool {
        self.name.split('.').any(|s| s == "#" || s == "*")
    }

    /// The name an option given as `key` is stored under: its canonical
    /// name, or the key itself for a patterned option.
    fn stored_name(&self, key: &str) -> String {
        if self.is_pattern() {
            key.to_string()
        } else {
            self.name.to_string()
        }
    }
}

/// Why a `WITH (...)` list was refused. The planner points at the option
/// named here (its key, or its value for a bad value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("unknown option '{key}' for {owner}{hint}")]
    Unknown {
        key: String,
        owner: String,
        /// `" (did you mean 'topic'?)"`, or a list of the known options.
        hint: String,
    },
    #[error("missing option '{name}' for {owner}: {help}")]
    Missing {
        name: String,
        owner: String,
        help: String,
    },
    #[error("option '{key}' has an invalid value '{value}': {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    #[error("option '{key}' is given twice")]
    Duplicate { key: String },
    #[error("unknown {role} connector '{name}'{hint}")]
    UnknownConnector {
        name: String,
        role: &'static str,
        /// `" (did you mean 'file'?)"`, or the connectors there are.
        hint: String,
    },
    #[error(
        "the '{name}' connector cannot be used as a {role} (it is a {is}); {role} connectors: {known}"
    )]
    WrongConnectorRole {
        name: String,
        role: &'static str,
        is: &'static str,
        known: String,
    },
    #[error("option '{key}' is for a {allowed}, and {owner} is used as a {used} here")]
    WrongRole {
        key: String,
        owner: String,
        allowed: &'static str,
        used: &'static str,
    },
}

impl OptionError {
    /// The option the error is about, as the user spelled its key.
    pub fn key(&self) -> Option<&str> {
        match self {
            OptionError::Unknown { key, .. }
            | OptionError::Invalid { key, .. }
            | OptionError::Duplicate { key }
            | OptionError::WrongRole { key, .. } => Some(key),
            OptionError::UnknownConnector { .. } | OptionError::WrongConnectorRole { .. } => {
                Some("connector")
            }
            OptionError::Missing { .. } => None,
        }
    }

    /// True when the error is about the option's value, not its key.
    pub fn is_about_value(&self) -> bool {
        matches!(
            self,
            OptionError::Invalid { .. }
                | OptionError::UnknownConnector { .. }
                | OptionError::WrongConnectorRole { .. }
        )
    }
}

/// The declarations a `WITH (...)` list is checked against: those of the
/// connector, of every source or sink, and of the chosen format.
#[derive(Debug, Clone, Default)]
pub struct Declarations {
    /// `connector 'kafka'`, `format 'json'`: for messages.
    pub owner: String,
    pub decls: Vec<OptionDecl>,
}

impl Declarations {
    pub fn find(&self, key: &str) -> Option<&OptionDecl> {
        self.decls.iter().find(|d| d.answers_to(key))
    }

    /// Checks `given` (keys as written, in lower case) for use as `role`:
    /// every key declared, every value of its type, every required option
    /// there. Returns the options under their canonical names.
    pub fn validate(
        &self,
        given: &[(String, String)],
        role: Role,
    ) -> std::result::Result<Options, OptionError> {
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        for (key, value) in given {
            let Some(decl) = self.find(key) else {
                return Err(OptionError::Unknown {
                    key: key.clone(),
                    owner: self.owner.clone(),
                    hint: self.hint(key),
                });
            };
            if !decl.role.admits(role) {
                return Err(OptionError::WrongRole {
                    key: key.clone(),
                    owner: self.owner.clone(),
                    allowed: decl.role.as_str(),
                    used: role.as_str(),
                });
            }
            if let Some(expected) = decl.ty.check(value) {
                return Err(OptionError::Invalid {
                    key: key.clone(),
                    value: value.clone(),
                    expected,
                });
            }
            if values
                .insert(decl.stored_name(key), value.trim().to_string())
                .is_some()
            {
                return Err(OptionError::Duplicate { key: key.clone() });
            }
        }
        for decl in &self.decls {
            if decl.required && decl.role.admits(role) && !values.contains_key(decl.name as &str) {
                return Err(OptionError::Missing {
                    name: decl.name.to_string(),
                    owner: self.owner.clone(),
                    help: decl.help.to_string(),
                });
            }
        }
        Ok(Options {
            values,
            defaults: self
                .decls
                .iter()
                .filter(|d| !d.is_pattern())
                .filter_map(|d| d.default.map(|v| (d.name.to_string(), v.to_string())))
                .collect(),
        })
    }

    /// `" (did you mean 'topic'?)"`, or the options there are.
    fn hint(&self, key: &str) -> String {
        let names = self.decls.iter().map(|d| d.name);
        let best = names
            .clone()
            .map(|n| (strsim::jaro_winkler(key, n), n))
            .filter(|(score, _)| *score >= 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((_, name)) => format!(" (did you mean '{name}'?)"),
            None => {
                let all: Vec<&str> = names.collect();
                format!(" (it takes: {})", all.join(", "))
            }
        }
    }
}

/// Options that passed validation, under their canonical names. Getters
/// fall back to the declared default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    values: BTreeMap<String, String>,
    defaults: BTreeMap<String, String>,
}

impl Options {
    /// Options taken as they are, without declarations (tests, and
    /// connectors built outside SQL).
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            defaults: BTreeMap::new(),
        }
    }

    /// These options with `key` set to `value`.
    pub fn with(&self, key: &str, value: &str) -> Self {
        let mut options = self.clone();
        options
            .values
            .insert(key.to_ascii_lowercase(), value.to_string());
        options
    }

    /// The value given, or the default.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .or_else(|| self.defaults.get(key))
            .map(String::as_str)
    }

    /// True if the user gave the option (not its default).
    pub fn is_set(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| ConnectorError::Config(format!("missing option '{key}'")))
    }

    /// The value of `key`, trimmed, which must be there and not empty:
    /// else "`needed_by` needs '`key`'".
    pub fn require_text(&self, key: &str, needed_by: &str) -> Result<String> {
        self.get(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ConnectorError::Config(format!("{needed_by} needs '{key}'")))
    }

    fn typed<T>(&self, key: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse(v.trim())
                .map(Some)
                .ok_or_else(|| ConnectorError::Option {
                    option: key.to_string(),
                    message: format!("option '{key}' has an invalid value '{v}'"),
                }),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, parse_bool)
    }

    pub fn count(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, |v| v.parse().ok())
    }

    pub fn number(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, |v| v.parse().ok())
    }

    pub fn duration_ms(&self, key: &str) -> Result<Option<i64>> {
        self.typed(key, parse_duration_ms)
    }

    pub fn memory_bytes(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, parse_memory_bytes)
    }

    /// Every option given (not the defaults), in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.values.iter()
    }
}

/// `true`/`false` in any case.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
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
    use super::*;

    const DECLS: &[OptionDecl] = &[
        OptionDecl::required("topic", OptionType::String, "the topic"),
        OptionDecl::optional(
            "scan.mode",
            OptionType::OneOf(&["earliest", "latest"]),
            "earliest",
            "where to start",
        ),
        OptionDecl::optional("batch.size", OptionType::Count, "8192", "rows per batch")
            .with_aliases(&["batch"]),
        OptionDecl::unset("path", OptionType::String, "where").sink_only(),
    ];

    fn decls() -> Declarations {
        Declarations {
            owner: "connector 'kafka'".into(),
            decls: DECLS.to_vec(),
        }
    }

    fn given(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_typo_suggests_the_declared_name() {
        let err = decls()
            .validate(&given(&[("topc", "t")]), Role::Source)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown option 'topc' for connector 'kafka' (did you mean 'topic'?)"
        );
        assert_eq!(err.key(), Some("topc"));
        let err = decls()
            .validate(&given(&[("zzz", "t")]), Role::Source)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown option 'zzz' for connector 'kafka' (it takes: topic, scan.mode, batch.size, path)"
        );
    }

    #[test]
    fn missing_wrong_type_wrong_role_and_aliases() {
        let err = decls().validate(&given(&[]), Role::Source).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing option 'topic' for connector 'kafka': the topic"
        );
        let err = decls()
            .validate(&given(&[("topic", "t"), ("batch", "ten")]), Role::Source)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "option 'batch' has an invalid value 'ten': expected a whole number"
        );
        assert!(err.is_about_value());
        let err = decls()
            .validate(
                &given(&[("topic", "t"), ("scan.mode", "first")]),
                Role::Source,
            )
            .unwrap_err();
        assert!(
            err.to_string().ends_with("expected 'earliest', 'latest'"),
            "{err}"
        );
        let err = decls()
            .validate(&given(&[("topic", "t"), ("path", "p")]), Role::Source)
            .unwrap_err();
        assert!(err.to_string().contains("is for a sink"), "{err}");
        let opts = decls()
            .validate(&given(&[("topic", "t"), ("batch", "10")]), Role::Source)
            .unwrap();
        assert_eq!(opts.count("batch.size").unwrap(), Some(10));
        assert_eq!(opts.get("scan.mode"), Some("earliest"));
        assert!(!opts.is_set("scan.mode"));
        assert_eq!(opts.get("path"), None);
    }

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
