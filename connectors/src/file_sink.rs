//! The file sink: JSON lines, exactly once by two-phase commit.
//!
//! One object per row, keys are the output column names, timestamps as
//! ISO-8601 strings in UTC, NULL as `null`; a changelog's `_op` becomes an
//! `op` field (`+I`, `-U`, `+U`, `-D`).
//!
//! **A directory** (`path` is one, or ends with `/`): rows written between
//! two checkpoints go to a hidden in-progress file. At the barrier of
//! checkpoint `n` it is closed and fsynced (phase one); once `n` is
//! complete it is renamed to `part-<n>-<subtask>.jsonl` (phase two), and
//! the end of input publishes the last part the same way. A reader of the
//! directory sees whole parts, each row exactly once, in name order.
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

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::{self, writer::LineDelimited};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::operator::SinkCommit;
use eddy_operators::{OperatorContext, OperatorError, Sink};
use eddy_state::checkpoint::{Commit, sync_parent};

use crate::Result;

/// ISO-8601 in UTC, with as many fraction digits as the value needs.
pub(crate) const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.fZ";

pub(crate) fn json_writer<W: Write>(w: W) -> json::Writer<W, LineDelimited> {
    json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
        .build::<_, LineDelimited>(w)
}

#[derive(Debug, Clone)]
enum Target {
    Dir(PathBuf),
    File(PathBuf),
}

type Writer = json::Writer<BufWriter<File>, LineDelimited>;

pub struct FileSink {
    target: Target,
    subtask: usize,
    /// Tells this run's in-progress files from those a crashed run left.
    attempt: String,
    /// Parts started by this run (for unique in-progress names).
    parts: u64,
    writer: Option<(PathBuf, Writer)>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A committed part's name: `part-<checkpoint>-<subtask>.jsonl`.
fn part_name(checkpoint: u64, subtask: usize) -> String {
    format!("part-{checkpoint:010}-{subtask}.jsonl")
}

/// The checkpoint in a committed part's name.
fn part_checkpoint(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".jsonl")?;
    rest.split('-').next()?.parse().ok()
}

impl FileSink {
    /// A sink writing to `path`; nothing is touched before the job starts.
    pub fn create(path: &Path, _schema: SchemaRef) -> Result<Self> {
        let is_dir = path.is_dir() || path.to_string_lossy().ends_with('/');
        let target = if is_dir {
            Target::Dir(path.to_path_buf())
        } else {
            Target::File(path.to_path_buf())
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(Self {
            target,
            subtask: 0,
            attempt: format!("{}-{nanos:09}", std::process::id()),
            parts: 0,
            writer: None,
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

    /// The writer of the current part, started if there is none.
    fn writer(&mut self) -> eddy_operators::Result<&mut Writer> {
        if self.writer.is_none() {
            let path = match &self.target {
                Target::Dir(dir) => dir.join(format!(
                    ".part-{}-{}-{}.inprogress",
                    self.subtask, self.attempt, self.parts
                )),
                Target::File(file) => Self::in_progress_file(file),
            };
            self.parts += 1;
            let file = File::create(&path).map_err(|e| self.err(&path, e))?;
            self.writer = Some((path, json_writer(BufWriter::with_capacity(1 << 20, file))));
        }
        match &mut self.writer {
            Some((_, w)) => Ok(w),
            None => Err(OperatorError::Internal("no part file".into())),
        }
    }

    /// Flushes and fsyncs the current part; returns its path and length.
    fn sync(&mut self) -> eddy_operators::Result<Option<(PathBuf, u64)>> {
        let Some((path, writer)) = &mut self.writer else {
            return Ok(None);
        };
        let err = |e: &dyn std::fmt::Display| {
            OperatorError::Connector(format!("writing {}: {e}", path.display()))
        };
        writer.finish().map_err(|e| err(&e))?;
        let buffered = writer.get_mut();
        buffered.flush().map_err(|e| err(&e))?;
        let file = buffered.get_mut();
        file.sync_data().map_err(|e| err(&e))?;
        let len = file.stream_position().map_err(|e| err(&e))?;
        Ok(Some((path.clone(), len)))
    }

    /// Deletes in-progress parts and parts of checkpoints after `checkpoint`.
    fn clean_dir(&self, dir: &Path, checkpoint: u64) -> eddy_operators::Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| self.err(dir, e))?;
        let entries = std::fs::read_dir(dir).map_err(|e| self.err(dir, e))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| self.err(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = (name.starts_with(".part-") && name.ends_with(".inprogress"))
                || part_checkpoint(&name).is_some_and(|c| c > checkpoint);
            if stale {
                std::fs::remove_file(entry.path()).map_err(|e| self.err(&entry.path(), e))?;
                removed += 1;
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
                        self.writer =
                            Some((path, json_writer(BufWriter::with_capacity(1 << 20, f))));
                    }
                    _ => {
                        self.writer()?;
                    }
                }
                Ok(())
            }
        }
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> eddy_operators::Result<()> {
        let batch = &crate::readable_changelog(batch)?;
        let path = self.path().to_path_buf();
        self.writer()?
            .write(batch)
            .map_err(|e| OperatorError::Connector(format!("writing {}: {e}", path.display())))
    }

    fn flush(&mut self) -> eddy_operators::Result<()> {
        self.sync().map(|_| ())
    }

    fn pre_commit(&mut self, checkpoint: u64, last: bool) -> eddy_operators::Result<SinkCommit> {
        let synced = self.sync()?;
        match &self.target {
            Target::Dir(dir) => {
                let dir = dir.clone();
                self.writer = None;
                let Some((from, _)) = synced else {
                    return Ok(SinkCommit::default());
                };
                sync_parent(&from).map_err(|e| self.err(&from, e))?;
                Ok(SinkCommit {
                    position: None,
                    commits: vec![Commit {
                        from,
                        to: dir.join(part_name(checkpoint, self.subtask)),
                    }],
                })
            }
            Target::File(file) => {
                let Some((from, len)) = synced else {
                    return Ok(SinkCommit::default());
                };
                sync_parent(&from).map_err(|e| self.err(&from, e))?;
                let commits = if last {
                    self.writer = None;
                    vec![Commit {
                        from,
                        to: file.clone(),
                    }]
                } else {
                    vec![]
                };
                Ok(SinkCommit {
                    position: Some(len.to_le_bytes().to_vec()),
                    commits,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_sort_by_checkpoint() {
        assert_eq!(part_name(7, 0), "part-0000000007-0.jsonl");
        assert_eq!(part_checkpoint("part-0000000007-0.jsonl"), Some(7));
        assert_eq!(part_checkpoint(".part-0-1-2.inprogress"), None);
        assert!(part_name(9, 0) < part_name(10, 0));
    }
}
