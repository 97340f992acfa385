//! The connector registry: connector names to connectors, each declaring
//! its options once.
//!
//! ```text
//!  WITH ('connector' = 'file', ...) ──► ConnectorRegistry::validate(role)
//!        ├─ the connector (by name or alias), else "unknown connector 'fiel' (did you mean 'file'?)"
//!        ├─ its options + every source's options + 'format' and the format's options
//!        └─ Validated { connector, options } ──► connector.source(..) / .sink(..) ──► providers
//! ```
//!
//! Adding a connector is one module implementing [`Connector`] and one
//! line in [`ConnectorRegistry::default`]; an embedding program registers
//! its own with [`ConnectorRegistry::register`] (through the planner's
//! `Session::register_connector`). The planner names no connector: it
//! validates, stores `{connector, options}` in the plan, and asks the
//! registry for providers when the job is built.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use eddy_operators::{DeliveryGuarantee, SinkProvider, SourceProvider};

use crate::format::FormatRegistry;
use crate::options::{Declarations, OptionDecl, OptionError, OptionType, Options, Role};
use crate::{ConnectorError, Result};

/// The option that names the connector.
pub const CONNECTOR: &str = "connector";
/// The option that names the format of a connector that carries bytes.
pub const FORMAT: &str = "format";
/// Flink 1.10's spelling of [`CONNECTOR`] (Nexmark's q13 still uses it).
pub const LEGACY_CONNECTOR: &str = "connector.type";
/// Flink 1.10's spelling of [`FORMAT`].
pub const LEGACY_FORMAT: &str = "format.type";
/// Every source takes it: a split without rows for this long stops holding
/// the watermark back.
pub const IDLE_TIMEOUT: &str = "watermark.idle-timeout";
/// Every source takes it: how many subtasks read the source's splits.
pub const SCAN_PARALLELISM: &str = "scan.parallelism";

/// Options every source takes, whatever its connector.
fn source_options() -> Vec<OptionDecl> {
    let mut options = vec![
        OptionDecl::unset(
            IDLE_TIMEOUT,
            OptionType::Duration,
            "a split without rows for this long no longer holds the watermark back",
        )
        .source_only(),
        OptionDecl::unset(
            SCAN_PARALLELISM,
            OptionType::Count,
            "subtasks that read the source's splits (default: the job's parallelism)",
        )
        .source_only(),
    ];
    options.extend(crate::bad_data::options());
    options
}

/// Whether a connector takes a `'format'` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatSupport {
    None,
    /// It takes one, with this default.
    Optional(&'static str),
    Required,
}

/// What a source's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceChangelog {
    /// Appended rows (most sources).
    AppendOnly,
    /// A changelog with its `_op` column last: `-U` before `+U`, and `-D`
    /// with the whole row (a Debezium topic).
    Retracting,
    /// Upserts by the table's primary key, `_op` last: `+I` is a key's new
    /// row, `-D` deletes a key (only its key columns are set): an
    /// `upsert-kafka` topic. The planner normalizes it into a retracting
    /// changelog, keeping each key's last row.
    Upsert,
}

/// A metadata key a connector reads (and maybe writes): Flink's
/// `SupportsReadingMetadata`. A table declares it as
/// `name TYPE METADATA [FROM 'key'] [VIRTUAL]`.
#[derive(Debug, Clone, Copy)]
pub struct MetadataKey {
    pub name: &'static str,
    /// The SQL type it has, for messages and the README.
    pub sql_type: &'static str,
    /// A table that is written sets it (a record's timestamp).
    pub writable: bool,
    pub help: &'static str,
}

/// The Arrow field metadata entry that marks a metadata column: its key.
pub const METADATA_FIELD: &str = "eddy.metadata";

/// The metadata key of a column declared `METADATA`, if it is one.
pub fn metadata_key(field: &datafusion::arrow::datatypes::Field) -> Option<&str> {
    field.metadata().get(METADATA_FIELD).map(String::as_str)
}

/// The table a connector reads or writes.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    /// Its name in the catalog (messages, dead-letter rows).
    pub name: &'a str,
    /// The rows read or written.
    pub schema: &'a SchemaRef,
    /// `PRIMARY KEY (...) NOT ENFORCED`'s columns; empty without one.
    pub primary_key: &'a [String],
}

impl<'a> Table<'a> {
    /// A table without a primary key.
    pub fn new(name: &'a str, schema: &'a SchemaRef) -> Self {
        Self {
            name,
            schema,
            primary_key: &[],
        }
    }
}

/// What a connector's factories get.
#[derive(Debug)]
pub struct ConnectorContext<'a> {
    pub options: &'a Options,
    /// The table's name.
    pub name: &'a str,
    /// The rows read or written.
    pub schema: &'a SchemaRef,
    /// `PRIMARY KEY (...) NOT ENFORCED`'s columns; empty without one.
    pub primary_key: &'a [String],
    pub formats: &'a FormatRegistry,
}

/// A connector: a name, its options, and factories for a source and/or a
/// sink. One required thing per role: a connector that reads implements
/// [`Connector::source`], one that writes [`Connector::sink`].
pub trait Connector: Send + Sync + Debug {
    fn name(&self) -> &'static str;

    /// Other names it answers to (`filesystem` for `file`).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// One line for `SHOW CONNECTORS` and the README.
    fn help(&self) -> &'static str;

    /// Its options (besides `connector`, `format` and those of every
    /// source), each for sources, sinks or both.
    fn options(&self) -> Vec<OptionDecl>;

    fn format(&self) -> FormatSupport {
        FormatSupport::None
    }

    /// Other spellings of `'format'` it takes (Kafka's `'value.format'`).
    fn format_aliases(&self) -> &'static [&'static str] {
        &[LEGACY_FORMAT]
    }

    /// True if it can be read; then [`Self::source`] makes sources.
    fn is_source(&self) -> bool {
        false
    }

    /// True if it can be written; then [`Self::sink`] makes sinks.
    fn is_sink(&self) -> bool {
        false
    }

    /// A source reading rows of `ctx.schema`. Called when the source is
    /// declared (to check what options cannot: a missing file) and when a
    /// job is built.
    fn source(&self, _ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SourceProvider>> {
        Err(ConnectorError::Config(format!(
            "the '{}' connector cannot be read",
            self.name()
        )))
    }

    /// A sink writing rows of `ctx.schema`.
    fn sink(&self, _ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SinkProvider>> {
        Err(ConnectorError::Config(format!(
            "the '{}' connector cannot be written",
            self.name()
        )))
    }

    /// The metadata keys its tables may declare as columns. A source's
    /// `schema` then holds them, marked by [`metadata_key`]; it fills
    /// them, not its format.
    fn metadata_keys(&self) -> &'static [MetadataKey] {
        &[]
    }

    /// What its sources' rows are, when its format does not decide.
    fn changelog(&self, _options: &Options) -> SourceChangelog {
        SourceChangelog::AppendOnly
    }

    /// What a sink with these options promises (shown by EXPLAIN).
    fn guarantee(&self, _options: &Options) -> DeliveryGuarantee {
        DeliveryGuarantee::None
    }
}

/// A `WITH (...)` list that passed validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub connector: Arc<dyn Connector>,
    pub options: Options,
}

/// Connectors and formats by name.
#[derive(Debug, Clone)]
pub struct ConnectorRegistry {
    connectors: BTreeMap<String, Arc<dyn Connector>>,
    formats: FormatRegistry,
}

impl Default for ConnectorRegistry {
    /// The built-in connectors and formats.
    fn default() -> Self {
        let mut registry = Self {
            connectors: BTreeMap::new(),
            formats: FormatRegistry::default(),
        };
        for c in crate::builtin_connectors() {
            registry.connectors.insert(c.name().to_string(), c);
        }
        registry
    }
}

impl ConnectorRegistry {
    /// Adds a connector; its name and aliases must be new.
    pub fn register(&mut self, connector: Arc<dyn Connector>) -> Result<()> {
        for name in std::iter::once(connector.name()).chain(connector.aliases().iter().copied()) {
            if self.get(name).is_some() {
                return Err(ConnectorError::Config(format!(
                    "a connector named '{name}' is registered already"
                )));
            }
        }
        self.connectors
            .insert(connector.name().to_string(), connector);
        Ok(())
    }

    pub fn formats(&self) -> &FormatRegistry {
        &self.formats
    }

    pub fn formats_mut(&mut self) -> &mut FormatRegistry {
        &mut self.formats
    }

    /// The connector of this name or alias.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Connector>> {
        let name = name.to_ascii_lowercase();
        self.connectors.get(&name).or_else(|| {
            self.connectors
                .values()
                .find(|c| c.aliases().contains(&name.as_str()))
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Connector>> {
        self.connectors.values()
    }

    /// Everything `connector` accepts as `role` with `format` chosen.
    pub fn declarations(
        &self,
        connector: &dyn Connector,
        role: Role,
        format: Option<&str>,
    ) -> Declarations {
        // Flink 1.10's legacy keys ('connector.type', 'format.type') still
        // name the connector and the format.
        let mut decls = vec![
            OptionDecl::required(CONNECTOR, OptionType::String, "the connector")
                .with_aliases(&[LEGACY_CONNECTOR]),
        ];
        decls.extend(connector.options());
        if role != Role::Sink && connector.is_source() {
            decls.extend(source_options());
        }
        match connector.format() {
            FormatSupport::None => {}
            support => {
                decls.push(
                    match support {
                        FormatSupport::Optional(default) => OptionDecl::optional(
                            FORMAT,
                            OptionType::Format,
                            default,
                            "the format of the bytes",
                        ),
                        _ => OptionDecl::required(
                            FORMAT,
                            OptionType::Format,
                            "the format of the bytes",
                        ),
                    }
                    .with_aliases(connector.format_aliases()),
                );
                let chosen = format.or(match support {
                    FormatSupport::Optional(default) => Some(default),
                    _ => None,
                });
                if let Some(f) = chosen.and_then(|f| self.formats.get(f)) {
                    decls.extend(f.options());
                }
            }
        }
        Declarations {
            owner: format!("connector '{}'", connector.name()),
            decls,
        }
    }

    /// Checks a `WITH (...)` list (keys in lower case) for use as `role`.
    pub fn validate(
        &self,
        given: &[(String, String)],
        role: Role,
    ) -> std::result::Result<Validated, OptionError> {
        let find = |key: &str| {
            given
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let Some(name) = find(CONNECTOR).or_else(|| find(LEGACY_CONNECTOR)) else {
            return Err(OptionError::Missing {
                name: CONNECTOR.into(),
                owner: format!("a {}", role.as_str()),
                help: format!("one of {}", self.names(role)),
            });
        };
        let connector = self
            .get(name)
            .ok_or_else(|| OptionError::UnknownConnector {
                name: name.to_string(),
                role: role.as_str(),
                hint: self.suggest(name, role).map_or_else(
                    || format!(" (connectors: {})", self.names(role)),
                    |s| format!(" (did you mean '{s}'?)"),
                ),
            })?;
        let usable = match role {
            Role::Source => connector.is_source(),
            Role::Sink => connector.is_sink(),
            Role::Both => connector.is_source() || connector.is_sink(),
        };
        if !usable {
            return Err(OptionError::WrongConnectorRole {
                name: connector.name().to_string(),
                role: role.as_str(),
                is: if connector.is_source() {
                    "source"
                } else {
                    "sink"
                },
                known: self.names(role),
            });
        }
        let format = find(FORMAT).or_else(|| {
            connector
                .format_aliases()
                .iter()
                .find_map(|alias| find(alias))
        });
        if let Some(format) = format
            && connector.format() != FormatSupport::None
            && self.formats.get(format).is_none()
        {
            let names: Vec<&str> = self.formats.names().collect();
            return Err(OptionError::Invalid {
                key: FORMAT.into(),
                value: format.to_string(),
                expected: format!("no format has this name (formats: {})", names.join(", ")),
            });
        }
        let decls = self.declarations(connector.as_ref(), role, format);
        let options = decls.validate(given, role)?;
        Ok(Validated {
            connector: connector.clone(),
            options,
        })
    }

    /// A source from validated options.
    pub fn source(
        &self,
        validated: &Validated,
        table: Table<'_>,
    ) -> Result<Arc<dyn SourceProvider>> {
        validated.connector.source(&self.context(validated, table))
    }

    /// A sink from validated options.
    pub fn sink(&self, validated: &Validated, table: Table<'_>) -> Result<Arc<dyn SinkProvider>> {
        validated.connector.sink(&self.context(validated, table))
    }

    fn context<'a>(&'a self, validated: &'a Validated, table: Table<'a>) -> ConnectorContext<'a> {
        ConnectorContext {
            options: &validated.options,
            name: table.name,
            schema: table.schema,
            primary_key: table.primary_key,
            formats: &self.formats,
        }
    }

    /// What a source of these options reads: the connector says (an
    /// upsert topic), else its format (a Debezium changelog).
    pub fn source_changelog(&self, validated: &Validated) -> SourceChangelog {
        let options = &validated.options;
        match validated.connector.changelog(options) {
            SourceChangelog::AppendOnly => {}
            other => return other,
        }
        let changelog = validated.connector.format() != FormatSupport::None
            && self
                .formats
                .chosen(options)
                .is_ok_and(|format| format.changelog());
        if changelog {
            SourceChangelog::Retracting
        } else {
            SourceChangelog::AppendOnly
        }
    }

    /// The connectors usable as `role`, for messages.
    pub fn names(&self, role: Role) -> String {
        let names: Vec<String> = self
            .iter()
            .filter(|c| match role {
                Role::Source => c.is_source(),
                Role::Sink => c.is_sink(),
                Role::Both => true,
            })
            .map(|c| format!("'{}'", c.name()))
            .collect();
        names.join(", ")
    }

    fn suggest(&self, name: &str, role: Role) -> Option<&'static str> {
        self.iter()
            .filter(|c| match role {
                Role::Source => c.is_source(),
                Role::Sink => c.is_sink(),
                Role::Both => true,
            })
            .map(|c| (strsim::jaro_winkler(name, c.name()), c.name()))
            .filter(|(score, _)| *score >= 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, n)| n)
    }

    /// `SHOW CONNECTORS`: one line per connector.
    pub fn show(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .iter()
            .map(|c| {
                let roles = match (c.is_source(), c.is_sink()) {
                    (true, true) => "source, sink",
                    (true, false) => "source",
                    (false, true) => "sink",
                    (false, false) => "",
                };
                let formats = match c.format() {
                    FormatSupport::None => String::new(),
                    _ => self.formats.names().collect::<Vec<_>>().join(", "),
                };
                vec![
                    c.name().to_string(),
                    roles.to_string(),
                    formats,
                    c.help().to_string(),
                ]
            })
            .collect();
        table(&["connector", "as", "formats", "description"], &rows)
    }

    /// `DESCRIBE CONNECTOR name`: its options, then those of its formats.
    pub fn describe(&self, name: &str) -> Option<String> {
        let connector = self.get(name)?;
        let mut out = format!("{}: {}\n", connector.name(), connector.help());
        if !connector.aliases().is_empty() {
            let _ = writeln!(out, "also called: {}", connector.aliases().join(", "));
        }
        let role = roles(connector.as_ref());
        if connector.is_sink() {
            let guarantee = connector.guarantee(&Options::default());
            let _ = writeln!(out, "as a sink: {}", guarantee.as_str());
        }
        let decls = self.declarations(connector.as_ref(), role, Some(""));
        out.push_str(&options_table(&decls.decls, role));
        if connector.format() != FormatSupport::None {
            for format in self.formats.iter() {
                let _ = writeln!(out, "\nformat '{}': {}", format.name(), format.help());
                out.push_str(&options_table(&format.options(), role));
            }
        }
        Some(out)
    }

    /// Other names this registry's connectors answer to, for a
    /// "did you mean" on `DESCRIBE CONNECTOR`.
    pub fn suggest_name(&self, name: &str) -> Option<&'static str> {
        self.suggest(name, Role::Both)
    }
}

/// Where an option applies, as tables show it: a connector that is only
/// a source (or only a sink) shows that for the options of both.
fn role_of(d: &OptionDecl, connector: Role) -> &'static str {
    match (d.role, connector) {
        (Role::Both, Role::Source | Role::Sink) => connector.as_str(),
        (role, _) => role.as_str(),
    }
}

/// The role a connector can play.
fn roles(c: &dyn Connector) -> Role {
    match (c.is_source(), c.is_sink()) {
        (true, false) => Role::Source,
        (false, true) => Role::Sink,
        _ => Role::Both,
    }
}

/// `help`, capitalised, as a sentence.
fn sentence(help: &str) -> String {
    let mut chars = help.chars();
    chars.next().map_or(String::new(), |c| {
        format!("{}{}.", c.to_uppercase(), chars.as_str())
    })
}

/// The rows of an options table: name, type, default, required, role, help.
pub fn options_table(decls: &[OptionDecl], connector: Role) -> String {
    let rows: Vec<Vec<String>> = decls
        .iter()
        .map(|d| {
            let mut name = d.name.to_string();
            for alias in d.aliases {
                let _ = write!(name, " (or {alias})");
            }
            vec![
                name,
                d.ty.describe(),
                d.default.map_or(String::new(), |v| format!("'{v}'")),
                if d.required { "yes" } else { "" }.to_string(),
                role_of(d, connector).to_string(),
                d.help.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "option",
            "type",
            "default",
            "required",
            "for",
            "description",
        ],
        &rows,
    )
}

/// A plain text table with a header line.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The README's section on connectors, generated from the declarations
/// (a test keeps the README equal to it).
pub fn markdown(registry: &ConnectorRegistry) -> String {
    let mut out = String::new();
    let cell = |s: &str| s.replace('|', "\\|");
    for c in registry.iter() {
        let role = roles(c.as_ref());
        let what = match role {
            Role::Both => "source and sink",
            r => r.as_str(),
        };
        let _ = writeln!(
            out,
            "#### `{}` ({what})\n\n{}\n",
            c.name(),
            sentence(c.help())
        );
        if !c.aliases().is_empty() {
            let aliases: Vec<String> = c.aliases().iter().map(|a| format!("`{a}`")).collect();
            let _ = writeln!(out, "Also called {}.\n", aliases.join(", "));
        }
        if c.is_sink() {
            let _ = writeln!(
                out,
                "As a sink: **{}**.\n",
                c.guarantee(&Options::default()).as_str()
            );
        }
        let decls = registry.declarations(c.as_ref(), role, Some(""));
        let decls: Vec<&OptionDecl> = decls.decls.iter().filter(|d| d.name != CONNECTOR).collect();
        if decls.is_empty() {
            out.push_str("No options.\n\n");
            continue;
        }
        out.push_str("| option | type | default | required | for | description |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for d in decls {
            let mut name = format!("`{}`", d.name);
            for alias in d.aliases {
                let _ = write!(name, " (or `{alias}`)");
            }
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} |",
                cell(&d.ty.describe()),
                d.default
                    .map_or(String::new(), |v| format!("`{}`", cell(v))),
                if d.required { "yes" } else { "" },
                role_of(d, role),
                cell(d.help)
            );
        }
        out.push('\n');
    }
    out.push_str("#### Formats\n\n");
    for f in registry.formats().iter() {
        let _ = writeln!(out, "`{}`: {}\n", f.name(), sentence(f.help()));
        let options = f.options();
        if options.is_empty() {
            continue;
        }
        out.push_str("| option | type | default | description |\n|---|---|---|---|\n");
        for d in options {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                d.name,
                cell(&d.ty.describe()),
                d.default
                    .map_or(String::new(), |v| format!("`{}`", cell(v))),
                cell(d.help)
            );
        }
        out.push('\n');
    }
    out
}
