//! `connector = 'file'` (also `filesystem`, Flink's name): files as a
//! source ([`source`]) and as an exactly-once sink ([`sink`]), in any
//! format of the registry.

mod input;
mod policy;
mod sink;
mod source;

use std::sync::Arc;

use eddy_operators::{DeliveryGuarantee, SinkProvider, SourceProvider};

pub use self::sink::{
    DEFAULT_PARTITION, FileCommitter, FileSink, FileSinkProvider, Rename, SUCCESS_FILE,
};
pub use self::source::FileSource;
use crate::options::{OptionDecl, OptionType, Options};
use crate::registry::{Connector, ConnectorContext, FormatSupport};
use crate::{ConnectorError, Result};

/// The sink option that carries `CREATE SINK ... PARTITIONED BY (a, b)`:
/// `'partitioned-by' = 'a,b'`.
pub const PARTITIONED_BY: &str = "partitioned-by";
/// Flink's option: list a source directory again this often, for new
/// files (the source no longer ends).
pub const MONITOR_INTERVAL: &str = "source.monitor-interval";
/// A source file larger than this is cut into byte ranges.
pub const SPLIT_SIZE: &str = "source.split-size";

#[derive(Debug)]
pub struct FileConnector;

impl FileConnector {
    /// The format, which must be one of lines: files are cut at line
    /// breaks (Avro container files are not read yet).
    fn format(ctx: &ConnectorContext<'_>) -> Result<Arc<dyn crate::format::Format>> {
        let format = ctx.formats.chosen(ctx.options)?.clone();
        if !format.line_based() {
            return Err(ConnectorError::Option {
                option: "format".into(),
                message: format!(
                    "the '{}' format's records are not lines: files take json, csv, raw or debezium-json",
                    format.name()
                ),
            });
        }
        Ok(format)
    }
}

impl Connector for FileConnector {
    fn name(&self) -> &'static str {
        "file"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["filesystem"]
    }

    fn help(&self) -> &'static str {
        "files: a bounded source (a file cut into byte ranges, or a directory's files side by side, optionally watched for new files and appended lines; .gz and .zst files are decompressed) and an exactly-once sink"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::required(
                "path",
                OptionType::String,
                "a file or a directory (`file://` URIs too); a sink writes part files into a directory (a path ending in /), or one file when the input ends",
            )
            .with_aliases(&["connector.path"]),
            OptionDecl::optional("batch.size", OptionType::Count, "8192", "rows per batch read")
                .source_only(),
            OptionDecl::optional(
                SPLIT_SIZE,
                OptionType::MemorySize,
                "32 mb",
                "a file larger than this is cut into byte ranges at line boundaries, read in parallel",
            )
            .source_only(),
            OptionDecl::unset(
                MONITOR_INTERVAL,
                OptionType::Duration,
                "list the directory again this often and read new files, and follow lines appended to its files (a line is read once its line break is written); the source then never ends",
            )
            .source_only(),
            OptionDecl::unset(
                PARTITIONED_BY,
                OptionType::String,
                "comma-separated columns to write under col=value/ directories (what PARTITIONED BY sets)",
            )
            .sink_only(),
        ]
        .into_iter()
        .chain(policy::options())
        .collect()
    }

    fn format(&self) -> FormatSupport {
        FormatSupport::Optional("json")
    }

    fn is_source(&self) -> bool {
        true
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn source(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SourceProvider>> {
        Ok(Arc::new(FileSource::try_new(
            ctx.name,
            ctx.options,
            ctx.schema,
            Self::format(ctx)?,
        )?))
    }

    fn sink(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SinkProvider>> {
        Ok(Arc::new(FileSinkProvider::try_new(
            ctx.options,
            ctx.schema,
            Self::format(ctx)?,
        )?))
    }

    fn guarantee(&self, _options: &Options) -> DeliveryGuarantee {
        DeliveryGuarantee::ExactlyOnce
    }
}

/// The local path of the `path` option: a plain path or a `file://` URI,
/// as Flink takes.
pub(crate) fn local_path(options: &crate::Options) -> Result<std::path::PathBuf> {
    let path = options.require("path")?;
    Ok(std::path::PathBuf::from(
        path.strip_prefix("file://").unwrap_or(path),
    ))
}
