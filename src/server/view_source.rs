//! A materialized view read by another job: its changes, as a changelog
//! source, exactly once.
//!
//! ```text
//!  view job ─► <views>/<v>/<subtask>.log  (one split each; committed up to View::published)
//!                        └► ViewReader: records from the split's byte offset up to the
//!                           committed end ─► rows + `_op` (+I/-U/+U/-D) ─► the reading job
//! ```
//!
//! A split's position is a byte offset into its log, kept in the reading
//! job's checkpoints. A reader never reads past what the view's job has
//! committed, so it never sees a change that a restore of that job would
//! take back. Reading starts at the beginning of the log: the whole
//! history, which folds into the view's current rows.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Int8Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use eddy_operators::source::{
    Poll, SourceProvider, SourceReader, Split, SplitAssignment, SplitEnumerator,
};
use eddy_operators::updating::{OP_COLUMN, OP_INSERT};
use eddy_operators::{OperatorError, Result};

use super::views::{RECORD_HEADER, Views, decode_record, record_header};

/// How often the reading job looks for the logs of new view subtasks.
const DISCOVERY: Duration = Duration::from_secs(1);

/// The source of view `name`, whose rows are read as `schema`.
#[derive(Debug)]
pub struct ViewSource {
    pub views: Arc<Views>,
    pub name: String,
    pub schema: SchemaRef,
}

impl SourceProvider for ViewSource {
    fn enumerator(&self) -> Result<Box<dyn SplitEnumerator>> {
        Ok(Box::new(ViewLogs {
            dir: self.views.dir(&self.name),
            name: self.name.clone(),
        }))
    }

    fn reader(&self) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(ViewReader {
            views: self.views.clone(),
            name: self.name.clone(),
            schema: self.schema.clone(),
            splits: Vec::new(),
            next: 0,
        }))
    }

    /// Every split is read side by side: none of them ends.
    fn assignment(&self) -> SplitAssignment {
        SplitAssignment::Spread
    }
}

/// Lists a view's logs, one split per subtask of its job.
struct ViewLogs {
    dir: PathBuf,
    name: String,
}

impl SplitEnumerator for ViewLogs {
    fn list(&mut self) -> Result<Vec<Split>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            // The view's job has not written yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(OperatorError::Internal(format!(
                    "{}: {e}",
                    self.dir.display()
                )));
            }
        };
        let mut subtasks: Vec<usize> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        subtasks.sort_unstable();
        Ok(subtasks
            .into_iter()
            .map(|s| Split {
                id: format!("{}/{s}", self.name),
                position: 0u64.to_le_bytes().to_vec(),
                size: None,
            })
            .collect())
    }

    fn discovery_interval(&self) -> Option<Duration> {
        Some(DISCOVERY)
    }
}

/// One split being read: a subtask's log from `offset`.
struct LogSplit {
    split: usize,
    subtask: usize,
    offset: u64,
    file: Option<File>,
}

/// Reads view logs up to what their job committed.
struct ViewReader {
    views: Arc<Views>,
    name: String,
    schema: SchemaRef,
    splits: Vec<LogSplit>,
    /// The split to try first at the next poll, so that all are read.
    next: usize,
}

impl SourceReader for ViewReader {
    fn name(&self) -> String {
        format!("materialized view {}", self.name)
    }

    fn add_split(&mut self, split: usize, assigned: Split) -> Result<()> {
        let bad = || OperatorError::Internal(format!("a bad view split: {}", assigned.id));
        let subtask = assigned
            .id
            .rsplit_once('/')
            .and_then(|(_, s)| s.parse().ok())
            .ok_or_else(bad)?;
        let offset =
            u64::from_le_bytes(assigned.position.as_slice().try_into().map_err(|_| bad())?);
        self.splits.push(LogSplit {
            split,
            subtask,
            offset,
            file: None,
        });
        Ok(())
    }

    fn poll(&mut self) -> Result<Poll> {
        // Until the view's job restores or commits in this server run, its
        // committed ends are unknown: nothing can be read yet.
        let Some(view) = self.views.get(&self.name) else {
            // Logs this job read from, now gone: the view was dropped.
            if !self.splits.is_empty() && !self.views.dir(&self.name).exists() {
                return Err(OperatorError::Internal(format!(
                    "materialized view '{}' was dropped: this job reads it",
                    self.name
                )));
            }
            return Ok(Poll::Pending);
        };
        for i in 0..self.splits.len() {
            let at = (self.next + i) % self.splits.len();
            let Some(end) = view.published(self.splits[at].subtask) else {
                continue;
            };
            if let Some(batch) =
                self.read_record(at, &view.log_path(self.splits[at].subtask), end)?
            {
                self.next = at + 1;
                return Ok(Poll::Batch(self.splits[at].split, batch));
            }
        }
        Ok(Poll::Pending)
    }

    fn wait(&mut self, timeout: Duration) {
        std::thread::sleep(timeout.min(Duration::from_millis(50)));
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        self.splits
            .iter()
            .map(|s| (s.split, s.offset.to_le_bytes().to_vec()))
            .collect()
    }
}

impl ViewReader {
    /// The next committed record of split `at` (its log at `path`,
    /// committed up to `end`) as rows with `_op`, if there is one.
    fn read_record(&mut self, at: usize, path: &PathBuf, end: u64) -> Result<Option<RecordBatch>> {
        let s = &mut self.splits[at];
        if s.offset > end {
            return Err(OperatorError::Internal(format!(
                "the log of materialized view '{}' (subtask {}) is shorter than this job's \
                 position ({} < {} bytes): was the view dropped and made again?",
                self.name, s.subtask, end, s.offset
            )));
        }
        if s.offset + RECORD_HEADER as u64 > end {
            return Ok(None);
        }
        let io = |e: std::io::Error| OperatorError::Internal(format!("{}: {e}", path.display()));
        if s.file.is_none() {
            s.file = Some(File::open(path).map_err(io)?);
        }
        let file = s.file.as_mut().expect("opened above");
        file.seek(SeekFrom::Start(s.offset)).map_err(io)?;
        let mut header = [0u8; RECORD_HEADER];
        file.read_exact(&mut header).map_err(io)?;
        let (_, len) = record_header(&header).expect("a whole header");
        let mut body = vec![0u8; len];
        file.read_exact(&mut body).map_err(io)?;
        s.offset += (RECORD_HEADER + len) as u64;
        let batches = decode_record(&body)?;
        let mut out = Vec::with_capacity(batches.len());
        for b in &batches {
            out.push(self.as_changes(b)?);
        }
        Ok(match out.len() {
            0 => None,
            1 => out.pop(),
            _ => Some(datafusion::arrow::compute::concat_batches(
                &self.schema,
                &out,
            )?),
        })
    }

    /// A logged batch as this source's rows: the view's columns, and `_op`
    /// (`+I` where the view's job emitted no changelog).
    fn as_changes(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .map(|f| match batch.column_by_name(f.name()) {
                Some(c) => Ok(c.clone()),
                None if f.name() == OP_COLUMN => {
                    Ok(Arc::new(Int8Array::from(vec![OP_INSERT; batch.num_rows()])) as ArrayRef)
                }
                None => Err(OperatorError::Internal(format!(
                    "materialized view '{}' no longer has column '{}'",
                    self.name,
                    f.name()
                ))),
            })
            .collect::<Result<_>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
