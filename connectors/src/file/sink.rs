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
//! `_SUCCESS` file with its last part; while the job runs, a partition
//! gets one when it is due by Flink's partition-commit options (see
//! [`super::policy`]).
//!
//! **Rolling**: a part that reaches `'sink.rolling-policy.file-size'` or
//! has been open `'sink.rolling-policy.rollover-interval'` is closed and
//! published with the next checkpoint as `part-<n>-<subtask>-<k>.<ext>`,
//! which sorts before that checkpoint's last part.
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
use std::time::Instant;

use datafusion::arrow::array::{Array, UInt32Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_operators::sink::{Committer, DeliveryGuarantee, SinkCommit, SinkProvider};
use eddy_operators::{OperatorContext, OperatorError, Sink};
use eddy_state::checkpoint::sync_parent;
use serde::{Deserialize, Serialize};

use parquet::arrow::ArrowWriter;

use super::policy::Policy;
use crate::format::TIMESTAMP_FORMAT;
use crate::format::{Encoder, Format, PARQUET, ParquetWriting};
use crate::options::Options;
use crate::{ConnectorError, Result};

#[derive(Debug, Clone)]
enum Target {
    Dir(PathBuf),
    File(PathBuf),
}

/// How rows become a part's bytes.
pub(crate) enum Encoding {
    /// Lines, by the format's encoder, appended to the part.
    Lines(Box<dyn Encoder>),
    /// Parquet: row groups, and the footer when the part is closed.
    Parquet(Box<ParquetWriting>),
}

/// What writes an open part.
enum PartWriter {
    Lines(BufWriter<File>),
    /// `None` once its footer is written (the part is closed).
    Parquet(Option<Box<ArrowWriter<File>>>),
}

/// An open part file.
struct Part {
    path: PathBuf,
    writer: PartWriter,
    /// Bytes written to it.
    bytes: u64,
    opened: Instant,
}

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
            path: super::local_path(options)?,
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
        let encoding = if self.format.name() == PARQUET {
            Encoding::Parquet(Box::new(ParquetWriting::of(&self.options)?))
        } else {
            Encoding::Lines(
                self.format
                    .encoder(&self.schema, &self.options)?
                    .ok_or_else(|| {
                        ConnectorError::Config(format!(
                            "the format '{}' cannot be written",
                            self.format.name()
                        ))
                    })?,
            )
        };
        FileSink::create(
            &self.path,
            self.schema.clone(),
            &self.partition_by,
            encoding,
            self.format.extension(),
            Policy::parse(&self.options)?,
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

/// The default name of a partition's success file.
pub const SUCCESS_FILE: &str = "_SUCCESS";

pub struct FileSink {
    target: Target,
    encoding: Encoding,
    /// The columns written to a part: the data columns, a changelog's
    /// `_op` as text (Parquet's schema).
    written_schema: SchemaRef,
    /// The extension of part files (`jsonl`).
    extension: &'static str,
    subtask: usize,
    /// Tells this run's in-progress files from those a crashed run left.
    attempt: String,
    /// Parts started by this run (for unique in-progress names).
    parts: u64,
    /// The open part of each partition directory (`""`: not partitioned).
    writers: BTreeMap<String, Part>,
    /// Parts rolled since the last barrier: (partition, in-progress path),
    /// closed and synced, published with the next checkpoint.
    rolled: Vec<(String, PathBuf)>,
    policy: Policy,
    /// When open parts were last checked against the rollover interval.
    checked: Instant,
    /// Partitions written and not yet committed while running, with when
    /// each was first written.
    uncommitted: BTreeMap<String, Instant>,
    watermark: i64,
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

/// The name of the `k`-th part rolled before checkpoint `checkpoint`'s
/// barrier: `part-<checkpoint>-<subtask>-<k>.<extension>`, which sorts
/// before that checkpoint's last part.
fn rolled_part_name(checkpoint: u64, subtask: usize, k: usize, extension: &str) -> String {
    format!("part-{checkpoint:010}-{subtask}-{k:05}.{extension}")
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
    pub(crate) fn create(
        path: &Path,
        schema: SchemaRef,
        partition_by: &[String],
        encoding: Encoding,
        extension: &'static str,
        policy: Policy,
    ) -> Result<Self> {
        let is_dir = path.is_dir() || path.to_string_lossy().ends_with('/');
        if matches!(encoding, Encoding::Parquet(_)) && !is_dir {
            return Err(ConnectorError::Config(format!(
                "a parquet file sink writes a part file per checkpoint into a directory: end the path '{}' with /",
                path.display()
            )));
        }
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
        let data_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !partitions.iter().any(|(p, _)| p == i))
            .collect();
        let written_schema = crate::readable_schema(&Arc::new(schema.project(&data_columns)?));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(Self {
            target,
            encoding,
            written_schema,
            extension,
            subtask: 0,
            attempt: format!("{}-{nanos:09}", std::process::id()),
            parts: 0,
            writers: BTreeMap::new(),
            rolled: Vec::new(),
            policy,
            checked: Instant::now(),
            uncommitted: BTreeMap::new(),
            watermark: i64::MIN,
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

    /// The current part of a partition, started if there is none.
    fn writer(&mut self, partition: &str) -> eddy_operators::Result<&mut Part> {
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
            let writer = self.part_writer(file).map_err(|e| self.err(&path, e))?;
            let part = Part {
                path,
                writer,
                bytes: 0,
                opened: Instant::now(),
            };
            self.writers.insert(partition.to_string(), part);
            if self.written.insert(partition.to_string()) {
                self.uncommitted
                    .insert(partition.to_string(), Instant::now());
            }
        }
        self.writers
            .get_mut(partition)
            .ok_or_else(|| OperatorError::Internal("no part file".into()))
    }

    /// Flushes and fsyncs every open part; returns each one's partition,
    /// path and length.
    fn sync(&mut self) -> eddy_operators::Result<Vec<(String, PathBuf, u64)>> {
        let mut synced = Vec::new();
        for (partition, part) in &mut self.writers {
            let len = sync_part(part)?;
            synced.push((partition.clone(), part.path.clone(), len));
        }
        Ok(synced)
    }

    /// Closes the parts of `partitions` (synced), to be published with the
    /// next checkpoint.
    fn roll(&mut self, partitions: &[String]) -> eddy_operators::Result<()> {
        for partition in partitions {
            if let Some(mut part) = self.writers.remove(partition) {
                sync_part(&mut part)?;
                sync_parent(&part.path).map_err(|e| self.err(&part.path, e))?;
                self.rolled.push((partition.clone(), part.path));
            }
        }
        Ok(())
    }

    /// Rolls parts past the file size, and, every check interval, those
    /// open longer than the rollover interval.
    fn roll_due(&mut self) -> eddy_operators::Result<()> {
        let check = self.checked.elapsed() >= self.policy.check_interval;
        if check {
            self.checked = Instant::now();
        }
        let due: Vec<String> = self
            .writers
            .iter()
            .filter(|(_, p)| {
                p.bytes >= self.policy.file_size
                    || (check && p.opened.elapsed() >= self.policy.rollover)
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.roll(&due)
    }

    /// The success files of the partitions due now (all written ones when
    /// the input ends), as renames published with checkpoint's parts.
    fn success_files(&mut self, dir: &Path, last: bool) -> eddy_operators::Result<Vec<Rename>> {
        if self.partition_by.is_empty() {
            return Ok(Vec::new());
        }
        let due: Vec<String> = if last {
            self.uncommitted.clear();
            std::mem::take(&mut self.written).into_iter().collect()
        } else {
            let Some(commit) = &self.policy.commit else {
                return Ok(Vec::new());
            };
            let due: Vec<String> = self
                .uncommitted
                .iter()
                .filter(|(p, first)| commit.due(p, **first, self.watermark))
                .map(|(p, _)| p.clone())
                .collect();
            for p in &due {
                self.uncommitted.remove(p);
            }
            due
        };
        let mut renames = Vec::new();
        for partition in due {
            let from = dir.join(&partition).join(format!(
                ".success-{}-{}-{}.inprogress",
                self.subtask, self.attempt, self.parts
            ));
            self.parts += 1;
            File::create(&from).map_err(|e| self.err(&from, e))?;
            sync_parent(&from).map_err(|e| self.err(&from, e))?;
            renames.push(Rename {
                from,
                to: dir.join(&partition).join(&self.policy.success_file),
            });
        }
        Ok(renames)
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

    /// The writer of a new part in `file`: a CSV header written, a
    /// Parquet writer started.
    fn part_writer(&self, file: File) -> std::result::Result<PartWriter, String> {
        match &self.encoding {
            Encoding::Lines(encoder) => {
                let mut writer = BufWriter::with_capacity(1 << 20, file);
                if let Some(header) = encoder.header() {
                    writer.write_all(&header).map_err(|e| e.to_string())?;
                }
                Ok(PartWriter::Lines(writer))
            }
            Encoding::Parquet(parquet) => {
                let properties = Some(parquet.properties.clone());
                let writer = ArrowWriter::try_new(file, self.written_schema.clone(), properties)
                    .map_err(|e| e.to_string())?;
                Ok(PartWriter::Parquet(Some(Box::new(writer))))
            }
        }
    }

    /// Encodes `batch` into the current part of `partition`.
    fn write_part(&mut self, partition: &str, batch: &RecordBatch) -> eddy_operators::Result<()> {
        let mut bytes = Vec::new();
        if let Encoding::Lines(encoder) = &mut self.encoding {
            bytes.reserve(batch.num_rows() * 64);
            encoder.encode(batch, &mut bytes)?;
        }
        let path = self.path().to_path_buf();
        let err = |e: &dyn std::fmt::Display| {
            OperatorError::Connector(format!("writing {}: {e}", path.display()))
        };
        let part = self.writer(partition)?;
        match &mut part.writer {
            PartWriter::Lines(writer) => {
                part.bytes += bytes.len() as u64;
                writer.write_all(&bytes).map_err(|e| err(&e))
            }
            PartWriter::Parquet(Some(writer)) => {
                writer
                    .write(&crate::readable_changelog(batch)?)
                    .map_err(|e| err(&e))?;
                part.bytes = (writer.bytes_written() + writer.in_progress_size()) as u64;
                Ok(())
            }
            PartWriter::Parquet(None) => Err(err(&"the part was closed")),
        }
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
                        let writer = PartWriter::Lines(BufWriter::with_capacity(1 << 20, f));
                        let part = Part {
                            path,
                            writer,
                            bytes: len,
                            opened: Instant::now(),
                        };
                        self.writers.insert(String::new(), part);
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
        self.write_rows(batch)?;
        if matches!(self.target, Target::Dir(_)) {
            self.roll_due()?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64) -> eddy_operators::Result<()> {
        self.watermark = self.watermark.max(watermark);
        Ok(())
    }

    fn flush(&mut self) -> eddy_operators::Result<()> {
        self.sync().map(|_| ())
    }

    fn pre_commit(&mut self, checkpoint: u64, last: bool) -> eddy_operators::Result<SinkCommit> {
        let synced = self.sync()?;
        match self.target.clone() {
            Target::Dir(dir) => self.pre_commit_dir(&dir, synced, checkpoint, last),
            Target::File(file) => pre_commit_file(&file, synced, last, &mut self.writers),
        }
    }
}

impl FileSink {
    /// Writes `batch`'s rows to their partitions' parts.
    fn write_rows(&mut self, batch: &RecordBatch) -> eddy_operators::Result<()> {
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

    /// Phase one for a directory: the parts rolled since the last barrier,
    /// then the open ones, and the success files of partitions now due.
    fn pre_commit_dir(
        &mut self,
        dir: &Path,
        synced: Vec<(String, PathBuf, u64)>,
        checkpoint: u64,
        last: bool,
    ) -> eddy_operators::Result<SinkCommit> {
        self.writers.clear();
        let mut commits = Vec::new();
        let mut rolled: BTreeMap<String, usize> = BTreeMap::new();
        for (partition, from) in std::mem::take(&mut self.rolled) {
            let k = rolled.entry(partition.clone()).or_default();
            let name = rolled_part_name(checkpoint, self.subtask, *k, self.extension);
            *k += 1;
            commits.push(Rename {
                from,
                to: dir.join(&partition).join(name),
            });
        }
        for (partition, from, _) in synced {
            sync_parent(&from).map_err(|e| self.err(&from, e))?;
            let name = part_name(checkpoint, self.subtask, self.extension);
            commits.push(Rename {
                from,
                to: dir.join(&partition).join(name),
            });
        }
        commits.extend(self.success_files(dir, last)?);
        Ok(SinkCommit {
            position: None,
            committable: committable(commits),
        })
    }
}

/// Phase one for one file: its length is the position; it is published
/// when the input ends.
fn pre_commit_file(
    file: &Path,
    synced: Vec<(String, PathBuf, u64)>,
    last: bool,
    writers: &mut BTreeMap<String, Part>,
) -> eddy_operators::Result<SinkCommit> {
    let Some((_, from, len)) = synced.into_iter().next() else {
        return Ok(SinkCommit::default());
    };
    sync_parent(&from)
        .map_err(|e| OperatorError::Connector(format!("writing {}: {e}", from.display())))?;
    let commits = if last {
        writers.clear();
        vec![Rename {
            from,
            to: file.to_path_buf(),
        }]
    } else {
        vec![]
    };
    Ok(SinkCommit {
        position: Some(len.to_le_bytes().to_vec()),
        committable: committable(commits),
    })
}

/// Flushes and fsyncs a part; its length. A Parquet part is closed: its
/// footer is written (parts are synced when they are published).
fn sync_part(part: &mut Part) -> eddy_operators::Result<u64> {
    let path = part.path.clone();
    let err = |e: &dyn std::fmt::Display| {
        OperatorError::Connector(format!("writing {}: {e}", path.display()))
    };
    let file = match &mut part.writer {
        PartWriter::Lines(writer) => {
            writer.flush().map_err(|e| err(&e))?;
            writer.get_mut()
        }
        PartWriter::Parquet(open) => {
            let Some(mut writer) = open.take() else {
                return std::fs::metadata(&path)
                    .map(|m| m.len())
                    .map_err(|e| err(&e));
            };
            writer.finish().map_err(|e| err(&e))?;
            let file = writer.inner_mut();
            file.sync_data().map_err(|e| err(&e))?;
            return file.stream_position().map_err(|e| err(&e));
        }
    };
    file.sync_data().map_err(|e| err(&e))?;
    file.stream_position().map_err(|e| err(&e))
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

    /// A sink into `dir` partitioned by `p`, JSON, with these options.
    fn partitioned(dir: &Path, options: &[(&str, &str)]) -> (FileSink, SchemaRef) {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("p", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let options = Options::new(options.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let encoder = Encoding::Lines(
            crate::format::JsonFormat
                .encoder(&schema, &options)
                .unwrap()
                .unwrap(),
        );
        let mut sink = FileSink::create(
            &dir.join("out/"),
            schema.clone(),
            &["p".to_string()],
            encoder,
            "jsonl",
            Policy::parse(&options).unwrap(),
        )
        .unwrap();
        sink.recover(0, None).unwrap();
        (sink, schema)
    }

    fn rows(schema: &SchemaRef, p: &str, values: std::ops::Range<i64>) -> RecordBatch {
        use datafusion::arrow::array::{Int64Array, StringArray};
        let n = values.end - values.start;
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![p; n as usize])),
                Arc::new(Int64Array::from_iter_values(values)),
            ],
        )
        .unwrap()
    }

    fn publish(sink: &mut FileSink, checkpoint: u64) -> Vec<String> {
        let commit = sink.pre_commit(checkpoint, false).unwrap();
        let Some(c) = commit.committable else {
            return Vec::new();
        };
        FileCommitter.commit(std::slice::from_ref(&c)).unwrap();
        let renames: Renames = serde_json::from_value(c).unwrap();
        renames
            .renames
            .iter()
            .map(|r| r.to.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn parts_roll_at_their_size_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sink, schema) =
            partitioned(dir.path(), &[("sink.rolling-policy.file-size", "200 b")]);
        for i in 0..10 {
            sink.write_batch(&rows(&schema, "a", i * 10..i * 10 + 10))
                .unwrap();
        }
        let names = publish(&mut sink, 1);
        assert!(names.len() > 2, "rolled: {names:?}");
        assert!(
            names[0].starts_with("part-0000000001-0-00000."),
            "{names:?}"
        );
        // In name order, the parts hold the rows in the order written.
        let part_dir = dir.path().join("out/p=a");
        let mut names: Vec<String> = std::fs::read_dir(&part_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("part-"))
            .collect();
        names.sort();
        let text: String = names
            .iter()
            .map(|n| std::fs::read_to_string(part_dir.join(n)).unwrap())
            .collect();
        let values: Vec<i64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["v"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(values, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_partition_past_the_watermark_gets_its_success_file_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sink, schema) = partitioned(
            dir.path(),
            &[
                ("sink.partition-commit.trigger", "partition-time"),
                ("sink.partition-commit.delay", "1 min"),
                ("sink.partition-commit.policy.kind", "success-file"),
            ],
        );
        sink.write_batch(&rows(&schema, "2024-01-01 10:00:00", 0..3))
            .unwrap();
        sink.write_batch(&rows(&schema, "2024-01-01 11:00:00", 3..5))
            .unwrap();
        // 2024-01-01 10:01:00 UTC: the first partition's time plus the delay.
        let ten_past = 1_704_103_260_000;
        sink.on_watermark(ten_past - 1).unwrap();
        assert!(!publish(&mut sink, 1).contains(&SUCCESS_FILE.to_string()));
        sink.on_watermark(ten_past).unwrap();
        assert!(publish(&mut sink, 2).contains(&SUCCESS_FILE.to_string()));
        let first = dir.path().join("out/p=2024-01-01 10%3A00%3A00");
        let second = dir.path().join("out/p=2024-01-01 11%3A00%3A00");
        assert!(first.join(SUCCESS_FILE).exists());
        assert!(!second.join(SUCCESS_FILE).exists());
        // Not again for the first: once is its commit.
        sink.write_batch(&rows(&schema, "2024-01-01 11:00:00", 5..6))
            .unwrap();
        assert!(!publish(&mut sink, 3).contains(&SUCCESS_FILE.to_string()));
    }

    /// Parquet parts: rolled at their size, partitioned, each a whole
    /// file (footer written at the barrier) holding its rows in order.
    #[test]
    fn parquet_parts_roll_partition_and_read_back() {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let dir = tempfile::tempdir().unwrap();
        let options = Options::new([
            (
                "sink.rolling-policy.file-size".to_string(),
                "2 kb".to_string(),
            ),
            ("parquet.compression".to_string(), "zstd".to_string()),
        ]);
        let (_, schema) = partitioned(dir.path(), &[]);
        let mut sink = FileSink::create(
            &dir.path().join("pq/"),
            schema.clone(),
            &["p".to_string()],
            Encoding::Parquet(Box::new(ParquetWriting::of(&options).unwrap())),
            "parquet",
            Policy::parse(&options).unwrap(),
        )
        .unwrap();
        sink.recover(0, None).unwrap();
        for i in 0..20 {
            let p = if i % 2 == 0 { "even" } else { "odd" };
            sink.write_batch(&rows(&schema, p, i * 100..i * 100 + 100))
                .unwrap();
        }
        let first = publish(&mut sink, 1);
        sink.write_batch(&rows(&schema, "even", 5000..5010))
            .unwrap();
        let second = publish(&mut sink, 2);
        assert!(first.len() > 2, "rolled: {first:?}");
        assert!(
            !second.is_empty() && second.iter().all(|n| n.starts_with("part-0000000002-0")),
            "{second:?}"
        );
        for (p, parity) in [("even", 0), ("odd", 1)] {
            let part_dir = dir.path().join(format!("pq/p={p}"));
            let mut names: Vec<String> = std::fs::read_dir(&part_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert!(names.iter().all(|n| n.ends_with(".parquet")), "{names:?}");
            let mut values: Vec<i64> = Vec::new();
            for name in &names {
                let file = File::open(part_dir.join(name)).unwrap();
                let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
                // Only the data column: the partition is in the path.
                assert_eq!(reader.schema().fields().len(), 1);
                for batch in reader.build().unwrap() {
                    let batch = batch.unwrap();
                    values.extend(batch.column(0).as_primitive::<Int64Type>().values());
                }
            }
            let mut want: Vec<i64> = (0..20)
                .filter(|i| i % 2 == parity)
                .flat_map(|i| i * 100..i * 100 + 100)
                .collect();
            if parity == 0 {
                want.extend(5000..5010);
            }
            assert_eq!(values, want, "{p}");
        }
    }

    #[test]
    fn a_parquet_sink_wants_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (_, schema) = partitioned(dir.path(), &[]);
        let options = Options::new(Vec::<(String, String)>::new());
        let err = FileSink::create(
            &dir.path().join("out.parquet"),
            schema,
            &[],
            Encoding::Parquet(Box::new(ParquetWriting::of(&options).unwrap())),
            "parquet",
            Policy::parse(&options).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("end the path"), "{err}");
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
