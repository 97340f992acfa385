//! `connector = 'file'` (also `filesystem`, Flink's name): files as a
//! source ([`source`]) and as an exactly-once sink ([`sink`]), in any
//! format of the registry.

mod input;
mod parquet;
mod policy;
mod sink;
mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::lookup::LookupTable;
use eddy_operators::source::{SplitAssignment, read_all};
use eddy_operators::{DeliveryGuarantee, SinkProvider, SourceProvider};

use self::parquet::ParquetSource;
pub use self::sink::{
    DEFAULT_PARTITION, FileCommitter, FileSink, FileSinkProvider, Rename, SUCCESS_FILE,
};
pub use self::source::FileSource;
use crate::format::PARQUET;
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
    /// The format, which must be one of lines (files are cut at line
    /// breaks; Avro container files are not read yet) or Parquet.
    fn format(ctx: &ConnectorContext<'_>) -> Result<Arc<dyn crate::format::Format>> {
        let format = ctx.formats.chosen(ctx.options)?.clone();
        if !format.line_based() && format.name() != PARQUET {
            return Err(ConnectorError::Option {
                option: "format".into(),
                message: format!(
                    "the '{}' format's records are not lines: files take json, csv, raw, debezium-json or parquet",
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
        "files: a bounded source (a file cut into byte ranges, or a directory's files side by side, optionally watched for new files and appended lines; .gz and .zst files are decompressed; Parquet files by row group) and an exactly-once sink"
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
        let format = Self::format(ctx)?;
        if format.name() == PARQUET {
            return Ok(Arc::new(ParquetSource::try_new(ctx.options, ctx.schema)?));
        }
        Ok(Arc::new(FileSource::try_new(
            ctx.name,
            ctx.options,
            ctx.schema,
            format,
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

/// A source's `path`, which must exist, and its
/// `'source.monitor-interval'`, which only a directory takes.
pub(crate) fn source_path(options: &Options) -> Result<(PathBuf, Option<Duration>)> {
    let path = local_path(options)?;
    if !path.is_dir() && !path.is_file() {
        return Err(ConnectorError::Option {
            option: "path".into(),
            message: format!("source file {} does not exist", path.display()),
        });
    }
    let monitor = options.duration_ms(MONITOR_INTERVAL)?;
    if monitor.is_some() && !path.is_dir() {
        return Err(ConnectorError::Option {
            option: MONITOR_INTERVAL.into(),
            message: format!(
                "'{MONITOR_INTERVAL}' watches a directory for new files, and {} is a file",
                path.display()
            ),
        });
    }
    Ok((
        path,
        monitor.map(|ms| Duration::from_millis(ms.max(1) as u64)),
    ))
}

/// The files of `path`: itself, or a directory's files by name, without
/// those whose names start with `.` or `_` (hidden, in progress,
/// `_SUCCESS`), as Flink's file source skips them.
pub(crate) fn list_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with('.') || n.starts_with('_')
                })
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The most subtasks a file source gives work: as many as its splits when
/// it was planned, or any number when it watches its directory (splits
/// come later).
pub(crate) fn max_parallelism(monitor: Option<Duration>, splits: usize) -> Option<usize> {
    monitor.is_none().then_some(splits.max(1))
}

/// How a file source's splits are handed out: a directory's files side by
/// side (each file its own watermark), one file's pieces (byte ranges, row
/// groups) to whichever subtask is free.
pub(crate) fn assignment(directory: bool) -> SplitAssignment {
    if directory {
        SplitAssignment::Spread
    } else {
        SplitAssignment::OnDemand
    }
}

/// A file source (a file or a directory's files) read whole for a lookup
/// join, again whenever a file changes length or modification time, or
/// one is added or removed.
#[derive(Debug)]
pub(crate) struct FilesTable {
    pub name: String,
    pub path: PathBuf,
    pub source: Arc<dyn SourceProvider>,
}

impl LookupTable for FilesTable {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn load(&self) -> eddy_operators::Result<Vec<RecordBatch>> {
        read_all(self.source.as_ref())
    }

    fn version(&self) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for f in list_files(&self.path).ok()? {
            let meta = std::fs::metadata(&f).ok()?;
            (f, meta.len(), meta.modified().ok()?).hash(&mut hasher);
        }
        Some(hasher.finish())
    }
}
