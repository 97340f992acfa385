//! The file sink: rows in a format of the registry (JSON lines by default),
//! exactly once by two-phase commit.
//!
//! In JSON: one object per row, keys are the output column names,
//! timestamps as ISO-8601 strings in UTC, NULL as `null`; a changelog's
//! `_op` becomes an `op` field (`+I`, `-U`, `+U`, `-D`).
//!
//! **A directory** (`path` is one, or ends with `/`): rows written between
//! two checkpoints go to a hidden in-progress file. At the barrier of
//! checkpoint `n` it is closed and fsynced (phase one); once `n` is
//! complete it is renamed to `part-<n>-<subtask>.<ext>` (phase two; `ext`
//! is the format's: `jsonl`, `csv`), and
//! the end of input publishes the last part the same way. A reader of the
//! directory sees whole parts, each row exactly once, in name order.
//!
//! **Partitions** (`PARTITIONED BY (a, b)`): a directory sink writes each
//! row under `a=<value>/b=<value>/` (Hive's layout: values escaped as
//! `%XX` where a path needs it, NULL as `__DEFAULT_PARTITION__`), without
//! the partition columns, each partition with its own parts, committed
//! the same way. When the input ends, each partition written gets an empty
//! `_SUCCESS` file with its last part. (A continuous job's partitions get
//! none: committing a partition by the watermark is not built.)
//!
//! **A file**: all rows go to `<path>.inprogress`, whose length is part of
//! every checkpoint; it is renamed to `<path>` when the input ends.
//!
//! On recovery from checkpoint `n` the sink discards what no complete
//! checkpoint covers: in-progress directory parts are deleted (their rows
//! will be written again), a file's in-progress copy is truncated to the
//! length checkpoint `n` recorded, and parts named after checkpoints later
//! than `n` (published by a checkpoint that was later found damaged, so
//! that the job fell back to `n`) are deleted too. A fresh start (no
//! checkpoint) therefore replaces earlier output, as a batch job would.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, UInt32Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_operators::sink::{Committer, DeliveryGuarantee, SinkCommit, SinkProvider};
use eddy_operators::{OperatorContext, OperatorError, Sink};
use eddy_state::checkpoint::sync_parent;
use serde::{Deserialize, Serialize};

use crate::format::TIMESTAMP_FORMAT;
use crate::format::{Encoder, Format};
use crate::options::Options;
use crate::{ConnectorError, Result};

#[derive(Debug, Clone)]
enum Target {
    Dir(PathBuf),
    File(PathBuf),
}

type Writer = BufWriter<File>;

/// Publishes a finished part: `from` (in progress) becomes `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rename {
    pub from: PathBuf,
    pub to: PathBuf,
}

impl Rename {
    /// Renames `from` to `to`, unless that was done already.
    pub fn apply(&self) -> eddy_operators::Result<()> {
        match std::fs::rename(&self.from, &self.to) {
            Ok(()) => Ok(sync_parent(&self.to)?),
            Err(_) if self.to.exists() && !self.from.exists() => Ok(()),
            Err(e) => Err(OperatorError::Connector(format!(
                "publishing {}: {e}",
                self.from.display()
            ))),
        }
    }
}

/// A file sink's committable: the parts one barrier closed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Renames {
    renames: Vec<Rename>,
}

/// Publishes parts by renaming them into place (idempotent).
#[derive(Debug)]
pub struct FileCommitter;

impl Committer for FileCommitter {
    fn commit(&self, committables: &[serde_json::Value]) -> eddy_operators::Result<()> {
        for c in committables {
            let parts: Renames = serde_json::from_value(c.clone()).map_err(|e| {
                OperatorError::Internal(format!("a file sink committable that does not read: {e}"))
            })?;
            for r in &parts.renames {
                r.apply()?;
            }
        }
        Ok(())
    }
}

/// A checked file sink: makes the writer of each subtask.
#[derive(Debug)]
pub struct FileSinkProvider {
    path: PathBuf,
    schema: SchemaRef,
    partition_by: Vec<String>,
    format: Arc<dyn Format>,
    options: Options,
}

impl FileSinkProvider {
    pub(crate) fn try_new(
        options: &Options,
        schema: &SchemaRef,
        format: Arc<dyn Format>,
    ) -> Result<Self> {
        let partition_by = options
            .get(super::PARTITIONED_BY)
            .map(|v| v.split(',').map(|c| c.trim().to_string()).collect())
            .unwrap_or_default();
        let provider = Self {
            path: PathBuf::from(options.require("path")?),
            schema: schema.clone(),
            partition_by,
            format,
            options: options.clone(),
        };
        // Checks the columns and the path now, not in the first subtask.
        provider.create()?;
        Ok(provider)
    }

    fn create(&self) -> Result<FileSink> {
        let encoder = self
            .format
            .encoder(&self.schema, &self.options)?
            .ok_or_else(|| {
                ConnectorError::Config(format!(
                    "the format '{}' cannot be written",
                    self.format.name()
                ))
            })?;
        FileSink::create(
            &self.path,
            self.schema.clone(),
            &self.partition_by,
            encoder,
            self.format.extension(),
        )
    }
}

impl SinkProvider for FileSinkProvider {
    fn writer(&self) -> eddy_operators::Result<Box<dyn Sink>> {
        Ok(Box::new(self.create()?))
    }

    fn committer(&self) -> Option<Arc<dyn Committer>> {
        Some(Arc::new(FileCommitter))
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        DeliveryGuarantee::ExactlyOnce
    }
}

/// The name Hive, Flink and Spark give the directory of a NULL partition
/// value.
pub const DEFAULT_PARTITION: &str = "__DEFAULT_PARTITION__";

/// The file a partition's directory gets when its last part is committed
/// at the end of the input.
pub const SUCCESS_FILE: &str = "_SUCCESS";

pub struct FileSink {
    target: Target,
    encoder: Box<dyn Encoder>,
    /// The extension of part files (`jsonl`).
    extension: &'static str,
    subtask: usize,
    /// Tells this run's in-progress files from those a crashed run left.
    attempt: String,
    /// Parts started by this run (for unique in-progress names).
    parts: u64,
    /// The open part of each partition directory (`""`: not partitioned).
    writers: BTreeMap<String, (PathBuf, Writer)>,
    /// `PARTITIONED BY` columns (index, escaped name), and the columns
    /// written to the files.
    partition_by: Vec<(usize, String)>,
    data_columns: Vec<usize>,
    /// Partition directories this run wrote to (for their success files).
    written: BTreeSet<String>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A committed part's name: `part-<checkpoint>-<subtask>.<extension>`.
fn part_name(checkpoint: u64, subtask: usize, extension: &str) -> String {
    format!("part-{checkpoint:010}-{subtask}.{extension}")
}

/// The checkpoint in a committed part's name.
fn part_checkpoint(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("part-")?;
    let (rest, _) = rest.rsplit_once('.')?;
    rest.split('-').next()?.parse().ok()
}

/// A partition value as a directory name: the characters Hive escapes
/// (path separators, `=`, `:`, quotes, wildcards, controls...) as `%XX`.
fn escape_partition_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() || "\"#%'*/:=?\\{[]^".contains(c) || c == '\u{7f}' {
            for b in c.to_string().bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl FileSink {
    /// A sink writing to `path`; nothing is touched before the job starts.
    /// With `partition_by`, rows go to `path/<col>=<value>/...` directories
    /// by those columns' values, which are left out of the files.
    pub fn create(
        path: &Path,
        schema: SchemaRef,
        partition_by: &[String],
        encoder: Box<dyn Encoder>,
        extension: &'static str,
    ) -> Result<Self> {
        let is_dir = path.is_dir() || path.to_string_lossy().ends_with('/');
        let target = if is_dir {
            Target::Dir(path.to_path_buf())
        } else {
            Target::File(path.to_path_buf())
        };
        if !partition_by.is_empty() && !is_dir {
            return Err(ConnectorError::Config(format!(
                "a partitioned file sink writes to a directory: end the path '{}' with /",
                path.display()
            )));
        }
        let mut partitions = Vec::new();
        for name in partition_by {
            let index = schema.index_of(name).map_err(|_| {
                ConnectorError::Config(format!(
                    "PARTITIONED BY column '{name}' is not an output column"
                ))
            })?;
            partitions.push((index, escape_partition_value(name)));
        }
        let data_columns = (0..schema.fields().len())
            .filter(|i| !partitions.iter().any(|(p, _)| p == i))
            .collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(Self {
            target,
            encoder,
            extension,
            subtask: 0,
            attempt: format!("{}-{nanos:09}", std::process::id()),
            parts: 0,
            writers: BTreeMap::new(),
            partition_by: partitions,
            data_columns,
            written: BTreeSet::new(),
        })
    }

    fn path(&self) -> &Path {
        match &self.target {
            Target::Dir(p) | Target::File(p) => p,
        }
    }

    fn err(&self, path: &Path, e: impl std::fmt::Display) -> OperatorError {
        OperatorError::Connector(format!("writing {}: {e}", path.display()))
    }

    fn in_progress_file(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".inprogress");
        PathBuf::from(name)
    }

    /// The writer of a partition's current part, started if there is none.
    fn writer(&mut self, partition: &str) -> eddy_operators::Result<&mut Writer> {
        if !self.writers.contains_key(partition) {
            let path = match &self.target {
                Target::Dir(dir) => {
                    let dir = dir.join(partition);
                    std::fs::create_dir_all(&dir).map_err(|e| self.err(&dir, e))?;
                    dir.join(format!(
                        ".part-{}-{}-{}.inprogress",
                        self.subtask, self.attempt, self.parts
                    ))
                }
                Target::File(file) => Self::in_progress_file(file),
            };
            self.parts += 1;
            let file = File::create(&path).map_err(|e| self.err(&path, e))?;
            let mut writer = BufWriter::with_capacity(1 << 20, file);
            if let Some(header) = self.encoder.header() {
                writer.write_all(&header).map_err(|e| self.err(&path, e))?;
            }
            self.writers.insert(partition.to_string(), (path, writer));
            self.written.insert(partition.to_string());
        }
        match self.writers.get_mut(partition) {
            Some((_, w)) => Ok(w),
            None => Err(OperatorError::Internal("no part file".into())),
        }
    }

    /// Flushes and fsyncs every open part; returns each one's partition,
    /// path and length.
    fn sync(&mut self) -> eddy_operators::Result<Vec<(String, PathBuf, u64)>> {
        let mut synced = Vec::new();
        for (partition, (path, writer)) in &mut self.writers {
            let err = |e: &dyn std::fmt::Display| {
                OperatorError::Connector(format!("writing {}: {e}", path.display()))
            };
            writer.flush().map_err(|e| err(&e))?;
            let file = writer.get_mut();
            file.sync_data().map_err(|e| err(&e))?;
            let len = file.stream_position().map_err(|e| err(&e))?;
            synced.push((partition.clone(), path.clone(), len));
        }
        Ok(synced)
    }

    /// Deletes in-progress parts and parts of checkpoints after
    /// `checkpoint`, in `dir` and its partition directories.
    fn clean_dir(&self, dir: &Path, checkpoint: u64) -> eddy_operators::Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| self.err(dir, e))?;
        let mut removed = 0;
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            let entries = std::fs::read_dir(&d).map_err(|e| self.err(&d, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| self.err(&d, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if !self.partition_by.is_empty() && path.is_dir() && name.contains('=') {
                    dirs.push(path);
                    continue;
                }
                let stale = (name.starts_with('.') && name.ends_with(".inprogress"))
                    || part_checkpoint(&name).is_some_and(|c| c > checkpoint);
                if stale {
                    std::fs::remove_file(&path).map_err(|e| self.err(&path, e))?;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                dir = %dir.display(),
                removed,
                "removed output no complete checkpoint covers"
            );
        }
        Ok(())
    }

    /// Encodes `batch` into the current part of `partition`.
    fn write_part(&mut self, partition: &str, batch: &RecordBatch) -> eddy_operators::Result<()> {
        let mut bytes = Vec::with_capacity(batch.num_rows() * 64);
        self.encoder.encode(batch, &mut bytes)?;
        let path = self.path().to_path_buf();
        self.writer(partition)?
            .write_all(&bytes)
            .map_err(|e| OperatorError::Connector(format!("writing {}: {e}", path.display())))
    }

    /// Each row's partition directory, `col=value/col=value`.
    fn partitions_of(&self, batch: &RecordBatch) -> eddy_operators::Result<Vec<String>> {
        let options = FormatOptions::default().with_timestamp_format(Some(TIMESTAMP_FORMAT));
        let formatters = self
            .partition_by
            .iter()
            .map(|(i, _)| ArrayFormatter::try_new(batch.column(*i).as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let mut dir = String::new();
            for ((i, name), f) in self.partition_by.iter().zip(&formatters) {
                if !dir.is_empty() {
                    dir.push('/');
                }
                let value = if batch.column(*i).is_null(row) {
                    DEFAULT_PARTITION.to_string()
                } else {
                    escape_partition_value(&f.value(row).to_string())
                };
                dir.push_str(name);
                dir.push('=');
                dir.push_str(&value);
            }
            out.push(dir);
        }
        Ok(out)
    }
}

impl Sink for FileSink {
    fn name(&self) -> String {
        format!("file {}", self.path().display())
    }

    fn open(&mut self, ctx: &OperatorContext) -> eddy_operators::Result<()> {
        self.subtask = ctx.subtask;
        Ok(())
    }

    fn recover(&mut self, checkpoint: u64, position: Option<&[u8]>) -> eddy_operators::Result<()> {
        match self.target.clone() {
            Target::Dir(dir) => self.clean_dir(&dir, checkpoint),
            Target::File(file) => {
                if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| self.err(parent, e))?;
                }
                let path = Self::in_progress_file(&file);
                let len = position
                    .and_then(|p| p.try_into().ok())
                    .map(u64::from_le_bytes);
                match len {
                    Some(len) if path.exists() => {
                        let mut f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| self.err(&path, e))?;
                        f.set_len(len).map_err(|e| self.err(&path, e))?;
                        f.seek(SeekFrom::End(0)).map_err(|e| self.err(&path, e))?;
                        let writer = BufWriter::with_capacity(1 << 20, f);
                        self.writers.insert(String::new(), (path, writer));
                    }
                    _ => {
                        self.writer("")?;
                    }
                }
                Ok(())
            }
        }
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> eddy_operators::Result<()> {
        if self.partition_by.is_empty() {
            return self.write_part("", batch);
        }
        let partitions = self.partitions_of(batch)?;
        let mut rows: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (row, p) in partitions.iter().enumerate() {
            rows.entry(p.as_str()).or_default().push(row as u32);
        }
        let data = batch.project(&self.data_columns)?;
        for (partition, indices) in rows {
            let indices = UInt32Array::from(indices);
            let part = datafusion::arrow::compute::take_record_batch(&data, &indices)?;
            self.write_part(partition, &part)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> eddy_operators::Result<()> {
        self.sync().map(|_| ())
    }

    fn pre_commit(&mut self, checkpoint: u64, last: bool) -> eddy_operators::Result<SinkCommit> {
        let synced = self.sync()?;
        match &self.target {
            Target::Dir(dir) => {
                let dir = dir.clone();
                self.writers.clear();
                let mut commits = Vec::new();
                for (partition, from, _) in synced {
                    sync_parent(&from).map_err(|e| self.err(&from, e))?;
                    commits.push(Rename {
                        from,
                        to: dir.join(&partition).join(part_name(
                            checkpoint,
                            self.subtask,
                            self.extension,
                        )),
                    });
                }
                if last && !self.partition_by.is_empty() {
                    // A partition is complete when the input ends: its
                    // success file is published with its last part.
                    for partition in std::mem::take(&mut self.written) {
                        let from = dir.join(&partition).join(format!(
                            ".success-{}-{}.inprogress",
                            self.subtask, self.attempt
                        ));
                        File::create(&from).map_err(|e| self.err(&from, e))?;
                        sync_parent(&from).map_err(|e| self.err(&from, e))?;
                        commits.push(Rename {
                            from,
                            to: dir.join(&partition).join(SUCCESS_FILE),
                        });
                    }
                }
                Ok(SinkCommit {
                    position: None,
                    committable: committable(commits),
                })
            }
            Target::File(file) => {
                let Some((_, from, len)) = synced.into_iter().next() else {
                    return Ok(SinkCommit::default());
                };
                sync_parent(&from).map_err(|e| self.err(&from, e))?;
                let commits = if last {
                    self.writers.clear();
                    vec![Rename {
                        from,
                        to: file.clone(),
                    }]
                } else {
                    vec![]
                };
                Ok(SinkCommit {
                    position: Some(len.to_le_bytes().to_vec()),
                    committable: committable(commits),
                })
            }
        }
    }
}

/// The committable of `renames`, if there are any.
fn committable(renames: Vec<Rename>) -> Option<serde_json::Value> {
    if renames.is_empty() {
        return None;
    }
    serde_json::to_value(Renames { renames }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_sort_by_checkpoint() {
        assert_eq!(part_name(7, 0, "jsonl"), "part-0000000007-0.jsonl");
        assert_eq!(part_checkpoint("part-0000000007-0.jsonl"), Some(7));
        assert_eq!(part_checkpoint("part-0000000007-3.csv"), Some(7));
        assert_eq!(part_checkpoint(".part-0-1-2.inprogress"), None);
        assert!(part_name(9, 0, "csv") < part_name(10, 0, "csv"));
    }

    #[test]
    fn renames_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let r = Rename {
            from: dir.path().join(".part.inprogress"),
            to: dir.path().join("part"),
        };
        std::fs::write(&r.from, b"rows").unwrap();
        let c = committable(vec![r.clone()]).unwrap();
        FileCommitter.commit(std::slice::from_ref(&c)).unwrap();
        FileCommitter.commit(&[c]).unwrap();
        assert_eq!(std::fs::read(&r.to).unwrap(), b"rows");
    }
}
