//! The file source: JSON lines or CSV (any line format of the registry),
//! bounded, or a directory watched for new files and for lines appended
//! to its files (`'source.monitor-interval'`): what is there is read at
//! full speed, then the files are followed, a line once its line break is
//! written.
//!
//! Splits:
//! - a **directory**: each file (by name order; names starting with `.`
//!   or `_`, as `_SUCCESS`, skipped as Flink does) is a split, and the files are read side by side (spread over the subtasks,
//!   a batch from each in turn), each with its own watermark, as the
//!   partitions of a topic: a file that lags does not see its rows made
//!   late by the others;
//! - a **file**: cut into byte ranges of `'source.split-size'` at line
//!   boundaries, handed to whichever subtask is free and read one after
//!   another. A range that starts in the middle of a line leaves that line
//!   to the range before it; a CSV header is read once, by the first;
//! - a **compressed** file (`.gz`, `.zst`) is one split, decompressed as it
//!   is read (see [`super::input`]).
//!
//! A split's position is the byte offset of its next line. A malformed
//! record stops the job naming the file, the line and the reason (the line
//! is counted when needed, from the start of the file), or is dropped or
//! sent to the dead-letter sink with its line, as `'bad-data'` says.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::lookup::LookupTable;
use eddy_operators::source::{
    LagUnit, Poll, Rejected, SourceProvider, SourceReader, Split, SplitAssignment, SplitEnumerator,
};
use eddy_operators::{OperatorContext, OperatorError};
use serde::{Deserialize, Serialize};

use super::input::{Compression, Input};
use crate::bad_data::{BadData, BadDataPolicy, BadRecordAt};
use crate::format::{BadRecord, Decoder, Format, Records, decode_records};
use crate::options::Options;
use crate::{ConnectorError, Result};

/// A checked `connector = 'file'` source.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// A file, or a directory of files.
    pub path: PathBuf,
    directory: bool,
    schema: SchemaRef,
    format: Arc<dyn Format>,
    options: Options,
    batch_size: usize,
    split_size: u64,
    /// `'source.monitor-interval'`: list the directory again this often.
    monitor: Option<Duration>,
    /// Splits when the source was declared (for the planner's parallelism).
    splits_at_start: usize,
    /// The table's name (dead-letter rows).
    table: String,
}

/// Where a split is, as kept in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    file: PathBuf,
    /// The next byte to read.
    offset: u64,
    /// Lines starting at or after it belong to the next range (`None`: to
    /// the end of the file).
    end: Option<u64>,
    /// Lines still to skip before records (a CSV header).
    skip: u64,
    /// `offset` is the start of a line; if not, the partial line there
    /// belongs to the range before.
    aligned: bool,
}

impl Position {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> OperatorError {
    OperatorError::Connector(format!("error reading {}: {e}", path.display()))
}

/// The files of `path` (see [`super::list_files`]).
fn list_files(path: &Path) -> Result<Vec<PathBuf>> {
    super::list_files(path).map_err(|source| ConnectorError::Io {
        path: path.display().to_string(),
        source,
    })
}

impl FileSource {
    pub(crate) fn try_new(
        table: &str,
        options: &Options,
        schema: &SchemaRef,
        format: Arc<dyn Format>,
    ) -> Result<Self> {
        let (path, monitor) = super::source_path(options)?;
        let directory = path.is_dir();
        // Fails early if the format cannot be read.
        crate::format::decoder_of(format.as_ref(), schema, options)?;
        let mut source = Self {
            directory,
            schema: schema.clone(),
            format,
            options: options.clone(),
            batch_size: options.count("batch.size")?.unwrap_or(8192).max(1) as usize,
            split_size: options
                .memory_bytes(super::SPLIT_SIZE)?
                .unwrap_or(32 << 20)
                .max(1),
            monitor,
            splits_at_start: 0,
            path,
            table: table.to_string(),
        };
        let splits = FileEnumerator {
            source: source.clone(),
        }
        .list()
        .map_err(|e| ConnectorError::Config(e.to_string()))?;
        if splits.is_empty() && source.monitor.is_none() {
            return Err(ConnectorError::Option {
                option: "path".into(),
                message: format!("source directory {} has no files", source.path.display()),
            });
        }
        source.splits_at_start = splits.len();
        Ok(source)
    }

    fn decoder(&self) -> eddy_operators::Result<Box<dyn Decoder>> {
        self.format
            .decoder(&self.schema, &self.options)?
            .ok_or_else(|| OperatorError::Internal("the format cannot be read".into()))
    }
}

impl SourceProvider for FileSource {
    fn enumerator(&self) -> eddy_operators::Result<Box<dyn SplitEnumerator>> {
        Ok(Box::new(FileEnumerator {
            source: self.clone(),
        }))
    }

    fn reader(&self) -> eddy_operators::Result<Box<dyn SourceReader>> {
        let decoder = self.decoder()?;
        let policy = BadDataPolicy::of(&self.options, decoder.ignore_parse_errors());
        Ok(Box::new(FileReader {
            name: format!("file {}", self.path.display()),
            decoder,
            bad: BadData::new(policy, &self.table),
            rejected: None,
            batch_size: self.batch_size,
            splits: Vec::new(),
            turn: 0,
            done: 0,
            buffer: Vec::new(),
            follow: self.monitor.is_some(),
        }))
    }

    fn assignment(&self) -> SplitAssignment {
        super::assignment(self.directory)
    }

    fn max_parallelism(&self) -> Option<usize> {
        super::max_parallelism(self.monitor, self.splits_at_start)
    }

    fn lookup_table(&self) -> Option<Arc<dyn LookupTable>> {
        Some(Arc::new(super::FilesTable {
            name: format!("file {}", self.path.display()),
            path: self.path.clone(),
            source: Arc::new(self.clone()),
        }))
    }

    /// A format read by name decodes only the columns asked for (the
    /// others are skipped as unknown keys are).
    fn projected(&self, columns: &[usize]) -> Option<Arc<dyn SourceProvider>> {
        if !self.format.decodes_by_name() {
            return None;
        }
        let schema = Arc::new(self.schema.project(columns).ok()?);
        Some(Arc::new(Self {
            schema,
            ..self.clone()
        }))
    }
}

#[derive(Debug)]
struct FileEnumerator {
    source: FileSource,
}

impl FileEnumerator {
    /// A directory's file, whole.
    fn whole_file(&self, file: &Path, len: u64, header: u64) -> Split {
        let name = file
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        Split {
            id: name,
            position: Position {
                file: file.to_path_buf(),
                offset: 0,
                end: None,
                skip: header,
                aligned: true,
            }
            .encode(),
            size: Some(len),
        }
    }

    /// A file cut into byte ranges of about the split size.
    fn ranges(&self, file: &Path, len: u64, header: u64) -> Vec<Split> {
        let size = self.source.split_size;
        let name = file.display().to_string();
        let mut splits = Vec::new();
        let mut start = 0;
        while start < len || splits.is_empty() {
            let end = (start + size).min(len);
            splits.push(Split {
                id: format!("{name}@{start}"),
                position: Position {
                    file: file.to_path_buf(),
                    offset: start,
                    end: (end < len).then_some(end),
                    skip: if start == 0 { header } else { 0 },
                    aligned: start == 0,
                }
                .encode(),
                size: Some(end - start),
            });
            start = end;
        }
        splits
    }
}

impl SplitEnumerator for FileEnumerator {
    fn list(&mut self) -> eddy_operators::Result<Vec<Split>> {
        let source = &self.source;
        let header = source.decoder()?.header_lines() as u64;
        let files =
            list_files(&source.path).map_err(|e| OperatorError::Connector(e.to_string()))?;
        let mut splits = Vec::new();
        for file in files {
            let len = std::fs::metadata(&file)
                .map_err(|e| io_error(&file, e))?
                .len();
            // A compressed file cannot be cut: it is read whole.
            if source.directory || Compression::of(&file) != Compression::None {
                splits.push(self.whole_file(&file, len, header));
            } else {
                splits.extend(self.ranges(&file, len, header));
            }
        }
        Ok(splits)
    }

    fn discovery_interval(&self) -> Option<Duration> {
        self.source.monitor
    }
}

/// A split being read.
struct OpenSplit {
    index: usize,
    position: Position,
    reader: Input,
    /// The file is compressed (it cannot be followed; its progress is in
    /// compressed bytes).
    compressed: bool,
    /// Read past its end as lines are appended (`'source.monitor-interval'`,
    /// a file as it is).
    follow: bool,
    /// Its [`Self::progress_mark`] when last counted as progress.
    counted: u64,
    /// Followed to its end, where a line was still being written: the
    /// file is opened again at the position before reading more (the
    /// buffered reader would not look past the partial line).
    stalled: bool,
    /// A byte offset and the 1-based line that starts there, once a bad
    /// record needed one: later lines are counted on from it.
    line_mark: Option<(u64, u64)>,
}

impl OpenSplit {
    fn open(index: usize, position: Position, follow: bool) -> eddy_operators::Result<Self> {
        let path = position.file.clone();
        let compressed = Compression::of(&path) != Compression::None;
        let at = position.offset;
        // Not aligned: the line under `offset` belongs to the range before;
        // skip to the first line that starts at or after it.
        let from = if position.aligned {
            at
        } else {
            at.saturating_sub(1)
        };
        let reader = Input::open_at(&path, from).map_err(|e| io_error(&path, e))?;
        let counted = if compressed { 0 } else { from };
        let mut split = Self {
            index,
            position,
            reader,
            compressed,
            follow: follow && !compressed,
            counted,
            stalled: false,
            line_mark: None,
        };
        if !split.position.aligned {
            let mut partial = Vec::new();
            let n = split
                .reader
                .read_until(b'\n', &mut partial)
                .map_err(|e| io_error(&path, e))?;
            split.position.offset = at.saturating_sub(1) + n as u64;
            split.position.aligned = true;
        }
        Ok(split)
    }

    /// How far it has read, for progress: the offset in a file as it is,
    /// the bytes of a compressed file decompressed so far.
    fn progress_mark(&self) -> u64 {
        if self.compressed {
            self.reader.file_bytes_read()
        } else {
            self.position.offset
        }
    }

    /// Reads up to `max` lines into `buf`; returns the lines read and the
    /// length of each.
    ///
    /// Followed, a last line without its line break is being written: it
    /// is left where it is, for a later read.
    fn read_lines(&mut self, max: usize, buf: &mut Vec<u8>) -> eddy_operators::Result<Vec<usize>> {
        let mut lengths = Vec::new();
        if self.stalled {
            let (path, at) = (&self.position.file, self.position.offset);
            self.reader = Input::open_at(path, at).map_err(|e| io_error(path, e))?;
            self.stalled = false;
        }
        while lengths.len() < max {
            if self
                .position
                .end
                .is_some_and(|end| self.position.offset >= end)
            {
                break;
            }
            if self.position.skip == 0 && self.whole_lines(max, buf, &mut lengths)? {
                continue;
            }
            // One line alone: a header to skip, or a line longer than what
            // the reader holds.
            let start = buf.len();
            let n = self
                .reader
                .read_until(b'\n', buf)
                .map_err(|e| io_error(&self.position.file, e))?;
            if n == 0 {
                break;
            }
            if self.follow && buf.last() != Some(&b'\n') {
                buf.truncate(start);
                self.stalled = true;
                break;
            }
            self.position.offset += n as u64;
            if self.position.skip > 0 {
                self.position.skip -= 1;
                buf.truncate(start);
                continue;
            }
            lengths.push(n);
        }
        Ok(lengths)
    }

    /// Takes at once the whole lines the reader holds, up to `max` in
    /// `lengths` and the range's end; `false` if it holds none.
    fn whole_lines(
        &mut self,
        max: usize,
        buf: &mut Vec<u8>,
        lengths: &mut Vec<usize>,
    ) -> eddy_operators::Result<bool> {
        let held = self
            .reader
            .fill_buf()
            .map_err(|e| io_error(&self.position.file, e))?;
        let (mut used, mut offset) = (0, self.position.offset);
        for line_break in memchr::memchr_iter(b'\n', held) {
            if lengths.len() >= max || self.position.end.is_some_and(|end| offset >= end) {
                break;
            }
            let n = line_break + 1 - used;
            lengths.push(n);
            offset += n as u64;
            used = line_break + 1;
        }
        buf.extend_from_slice(&held[..used]);
        self.reader.consume(used);
        self.position.offset = offset;
        Ok(used > 0)
    }
}

/// Reads the splits it holds side by side, a batch from each in turn.
struct FileReader {
    name: String,
    decoder: Box<dyn Decoder>,
    bad: BadData,
    /// Bad records set aside by the last batch read, handed over with it.
    rejected: Option<Rejected>,
    batch_size: usize,
    splits: Vec<OpenSplit>,
    turn: usize,
    /// Bytes read (progress).
    done: u64,
    /// The lines of the batch being read, kept from one batch to the next.
    buffer: Vec<u8>,
    /// `'source.monitor-interval'` is set: a file's end is where lines
    /// will be appended, not the split's end.
    follow: bool,
}

/// The line breaks in `path` (decompressed) between byte `from` and byte
/// `to`.
fn count_lines(path: &Path, from: u64, to: u64) -> Option<u64> {
    let file = Input::open_at(path, from).ok()?;
    let mut file = file.take(to.saturating_sub(from));
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0;
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            return Some(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

impl OpenSplit {
    /// The 1-based line that starts at byte `offset`, counted on from the
    /// last one asked for (offsets only grow within a split).
    fn line_at(&mut self, offset: u64) -> Option<u64> {
        let (from, line) = self.line_mark.unwrap_or((0, 1));
        let line = line + count_lines(&self.position.file, from, offset)?;
        self.line_mark = Some((offset, line));
        Some(line)
    }
}

impl FileReader {
    /// Split `at` is followed past its end (see [`OpenSplit::follow`]).
    fn follows(&self, at: usize) -> bool {
        self.splits.get(at).is_some_and(|s| s.follow)
    }

    /// What reading split `at` gave, as the runtime takes it.
    fn hand_over(&mut self, at: usize, read: Option<Option<RecordBatch>>) -> Poll {
        let index = self.splits.get(at).map_or(0, |s| s.index);
        match (read, self.rejected.take()) {
            // Bad records go with the rows read with them.
            (Some(batch), Some(rejected)) => {
                self.turn = at + 1;
                Poll::Rejected(index, rejected, batch)
            }
            (Some(Some(batch)), None) => {
                self.turn = at + 1;
                Poll::Batch(index, batch)
            }
            (Some(None), None) => Poll::Pending,
            (None, _) => {
                let finished = self.splits.remove(at);
                self.turn = at;
                Poll::Finished(finished.index)
            }
        }
    }

    /// Hands the records set aside to the policy: counted or dead letters,
    /// each with its line.
    fn set_aside(
        &mut self,
        at: usize,
        first: u64,
        lengths: &[usize],
        records: &Records,
        bad: &[BadRecord],
    ) {
        let split = &mut self.splits[at];
        let path = split.position.file.display().to_string();
        let mut starts = Vec::with_capacity(bad.len());
        let mut offset = first;
        let mut next = 0;
        for (i, len) in lengths.iter().enumerate() {
            if bad.get(next).is_some_and(|b| b.record == i) {
                starts.push(split.line_at(offset).map(|l| l as i64));
                next += 1;
            }
            offset += *len as u64;
        }
        let rejected = bad.iter().zip(starts).map(|(b, line)| BadRecordAt {
            bytes: records.get(b.record),
            reason: &b.reason,
            partition: &path,
            offset: line,
            timestamp: None,
        });
        let rejected: Vec<_> = rejected.collect();
        self.rejected = self.bad.reject(rejected.into_iter());
    }

    /// Reads one batch from split `at`: `None` once it is at its end,
    /// `Some(None)` if every record read was set aside as bad.
    fn read_batch(&mut self, at: usize) -> eddy_operators::Result<Option<Option<RecordBatch>>> {
        loop {
            let split = &mut self.splits[at];
            // One buffer for every batch: a fresh one each time costs page
            // faults (its memory goes back to the kernel in between).
            let mut buf = std::mem::take(&mut self.buffer);
            buf.clear();
            let lengths = split.read_lines(self.batch_size, &mut buf)?;
            let mark = split.progress_mark();
            self.done += mark.saturating_sub(split.counted);
            split.counted = mark;
            if lengths.is_empty() {
                return Ok(None);
            }
            // Where the first line read starts: after a header skipped.
            let first = split.position.offset - lengths.iter().sum::<usize>() as u64;
            let records = Records::from_lines(buf, &lengths);
            let decoded = decode_records(self.decoder.as_mut(), &records, self.bad.on_bad(), false);
            if let Ok(d) = &decoded
                && !d.bad.is_empty()
            {
                self.set_aside(at, first, &lengths, &records, &d.bad);
            }
            self.buffer = records.into_buffer();
            match decoded {
                Ok(decoded) => {
                    if decoded.batch.is_some() || self.rejected.is_some() {
                        return Ok(Some(decoded.batch));
                    }
                }
                Err(bad) => {
                    let offset = first + lengths[..bad.record].iter().sum::<usize>() as u64;
                    let path = self.splits[at].position.file.clone();
                    let line = count_lines(&path, 0, offset)
                        .map_or(format!("byte {offset}"), |l| format!("line {}", l + 1));
                    return Err(OperatorError::Connector(format!(
                        "malformed record in {} at {line}: {}",
                        path.display(),
                        bad.reason
                    )));
                }
            }
        }
    }
}

impl SourceReader for FileReader {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn open(&mut self, _ctx: &OperatorContext) -> eddy_operators::Result<()> {
        Ok(())
    }

    fn add_split(&mut self, split: usize, assigned: Split) -> eddy_operators::Result<()> {
        let position: Position = serde_json::from_slice(&assigned.position).map_err(|e| {
            OperatorError::Connector(format!(
                "cannot resume reading split {} of {}: {e}",
                assigned.id, self.name
            ))
        })?;
        let open = OpenSplit::open(split, position, self.follow)?;
        self.splits.push(open);
        Ok(())
    }

    fn poll(&mut self) -> eddy_operators::Result<Poll> {
        // A followed split at its end has nothing now: the others are
        // tried, each once.
        for _ in 0..self.splits.len() {
            let at = self.turn % self.splits.len();
            let read = self.read_batch(at)?;
            if read.is_none() && self.follows(at) {
                self.turn = at + 1;
                continue;
            }
            return Ok(self.hand_over(at, read));
        }
        Ok(Poll::Pending)
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        self.splits
            .iter()
            .map(|s| (s.index, s.position.encode()))
            .collect()
    }

    fn progress(&self) -> u64 {
        self.done
    }

    fn bytes_read(&self) -> u64 {
        self.done
    }

    /// The bytes of each split's file (as it is, not compressed) not read
    /// yet: up to its range's end, or to the file's length now.
    fn lag(&self) -> Vec<(String, u64)> {
        let plain = self.splits.iter().filter(|s| !s.compressed);
        plain
            .filter_map(|s| {
                let len = std::fs::metadata(&s.position.file).ok()?.len();
                let name = s.position.file.display().to_string();
                let (name, end) = match s.position.end {
                    Some(end) => (format!("{name}..{end}"), end.min(len)),
                    None => (name, len),
                };
                Some((name, end.saturating_sub(s.position.offset)))
            })
            .collect()
    }

    fn lag_unit(&self) -> LagUnit {
        LagUnit::Bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{CsvFormat, JsonFormat};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use eddy_operators::source::read_all;

    fn schema() -> SchemaRef {
        crate::format::test_schema()
    }

    fn source(path: &Path, format: Arc<dyn Format>, extra: &[(&str, &str)]) -> Result<FileSource> {
        let mut pairs = vec![
            ("path".to_string(), path.display().to_string()),
            ("batch.size".to_string(), "2".to_string()),
        ];
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        FileSource::try_new("t", &Options::new(pairs), &schema(), format)
    }

    fn read(
        text: &str,
        format: Arc<dyn Format>,
        extra: &[(&str, &str)],
    ) -> eddy_operators::Result<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, text).unwrap();
        let batches = read_all(&source(&path, format, extra).unwrap())?;
        Ok(pretty_format_batches(&batches).unwrap().to_string())
    }

    #[test]
    fn malformed_json_names_file_and_line_in_any_range() {
        let text =
            "{\"k\": \"a\", \"v\": 1}\n{\"k\": \"b\", \"v\": 2}\n{\"k\": \"c\", \"v\": \"x\"}\n";
        for split in ["1 mb", "20", "7"] {
            let err = read(
                text,
                Arc::new(JsonFormat),
                &[(super::super::SPLIT_SIZE, split)],
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("/in at line 3:"), "split size {split}: {err}");
        }
        let err = read("{\"k\": \"a\"}\n{\"k\": \n", Arc::new(JsonFormat), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("at line 2:"), "{err}");
    }

    #[test]
    fn csv_with_a_header_read_once() {
        let text = "k,ts,v\na,2024-01-01T00:00:01,1\nb,2024-01-01 00:00:02,\n";
        let out = read(
            text,
            Arc::new(CsvFormat),
            &[("csv.header", "true"), (super::super::SPLIT_SIZE, "10")],
        )
        .unwrap();
        assert!(out.contains("| b | 2024-01-01T00:00:02 |   |"), "{out}");
        assert_eq!(out.lines().count(), 6, "{out}");
        let text =
            "k,ts,v\na,2024-01-01T00:00:01,1\nb,2024-01-01T00:00:01,2\nc,2024-01-01T00:00:01,z\n";
        let err = read(text, Arc::new(CsvFormat), &[("csv.header", "true")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/in at line 4: Error while parsing value 'z'"),
            "{err}"
        );
        // A bad line right after the header is counted past the header.
        let text = "k,ts,v\na,2024-01-01T00:00:01,z\n";
        let err = read(text, Arc::new(CsvFormat), &[("csv.header", "true")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/in at line 2:"), "{err}");
    }

    /// Every line is read exactly once, whatever the ranges.
    #[test]
    fn byte_ranges_cover_every_line_once() {
        let mut text = String::new();
        for i in 0..200 {
            let pad = "x".repeat(i % 13);
            text.push_str(&format!("{{\"k\": \"{pad}\", \"v\": {i}}}\n"));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, &text).unwrap();
        for size in ["1", "17", "64", "1000", "1 mb"] {
            let src = source(
                &path,
                Arc::new(JsonFormat),
                &[(super::super::SPLIT_SIZE, size)],
            )
            .unwrap();
            let mut values: Vec<i64> = read_all(&src)
                .unwrap()
                .iter()
                .flat_map(|b| {
                    let c = b
                        .column(2)
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::Int64Array>()
                        .unwrap();
                    c.values().to_vec()
                })
                .collect();
            values.sort_unstable();
            assert_eq!(values, (0..200).collect::<Vec<_>>(), "split size {size}");
        }
    }

    /// `.gz` and `.zst` files are read whole, decompressed: every line
    /// once, a bad line named by its line, and a position inside one
    /// resumed from.
    #[test]
    fn compressed_files_are_read_whole_and_resumed() {
        use std::io::Write;
        let mut text = String::new();
        for i in 0..300 {
            text.push_str(&format!(
                "{{\"k\": \"{}\", \"v\": {i}}}\n",
                "x".repeat(i % 7)
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("in.jsonl.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text.as_bytes()).unwrap();
        std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
        let zst = dir.path().join("in.jsonl.zst");
        std::fs::write(&zst, zstd::stream::encode_all(text.as_bytes(), 0).unwrap()).unwrap();
        let values = |batches: &[RecordBatch]| -> Vec<i64> {
            let mut v: Vec<i64> = batches
                .iter()
                .flat_map(|b| {
                    let c = b.column(2).as_any();
                    let c = c
                        .downcast_ref::<datafusion::arrow::array::Int64Array>()
                        .unwrap();
                    c.values().to_vec()
                })
                .collect();
            v.sort_unstable();
            v
        };
        for path in [&gz, &zst] {
            // A small split size cuts no compressed file.
            let src = source(
                path,
                Arc::new(JsonFormat),
                &[(super::super::SPLIT_SIZE, "10")],
            )
            .unwrap();
            let splits = src.enumerator().unwrap().list().unwrap();
            assert_eq!(splits.len(), 1, "{path:?}");
            assert_eq!(
                values(&read_all(&src).unwrap()),
                (0..300).collect::<Vec<_>>()
            );
            // Read a few batches, take the position, and resume from it in
            // a new reader: the two together read every line once.
            let mut reader = src.reader().unwrap();
            reader.add_split(0, splits[0].clone()).unwrap();
            let mut first = Vec::new();
            while first.len() < 5 {
                if let Poll::Batch(_, b) = reader.poll().unwrap() {
                    first.push(b);
                }
            }
            assert!(reader.bytes_read() > 0);
            let (_, position) = reader.positions().pop().unwrap();
            let mut resumed = src.reader().unwrap();
            let split = Split {
                position,
                ..splits[0].clone()
            };
            resumed.add_split(0, split).unwrap();
            let mut rest = Vec::new();
            loop {
                match resumed.poll().unwrap() {
                    Poll::Batch(_, b) => rest.push(b),
                    Poll::Finished(_) => break,
                    _ => {}
                }
            }
            first.extend(rest);
            assert_eq!(values(&first), (0..300).collect::<Vec<_>>(), "{path:?}");
        }
        // A bad line in a compressed file is named by its line.
        let bad = dir.path().join("bad.jsonl.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder
            .write_all(b"{\"k\": \"a\", \"v\": 1}\n{\"k\": \"b\", \"v\": \"x\"}\n")
            .unwrap();
        std::fs::write(&bad, encoder.finish().unwrap()).unwrap();
        let err = read_all(&source(&bad, Arc::new(JsonFormat), &[]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.jsonl.gz at line 2:"), "{err}");
    }

    /// A file's lag is its bytes not read yet, and grows as lines are
    /// appended.
    #[test]
    fn the_lag_is_the_bytes_not_read_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        let line = "{\"k\": \"a\", \"v\": 1}\n";
        std::fs::write(&path, line.repeat(10)).unwrap();
        let src = source(&path, Arc::new(JsonFormat), &[]).unwrap();
        let mut reader = src.reader().unwrap();
        assert_eq!(reader.lag_unit(), LagUnit::Bytes);
        let split = src.enumerator().unwrap().list().unwrap().remove(0);
        reader.add_split(0, split).unwrap();
        let name = path.display().to_string();
        assert_eq!(reader.lag(), [(name.clone(), 10 * line.len() as u64)]);
        // batch.size is 2: two lines read.
        assert!(matches!(reader.poll().unwrap(), Poll::Batch(..)));
        assert_eq!(reader.lag(), [(name.clone(), 8 * line.len() as u64)]);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, line.as_bytes()).unwrap();
        assert_eq!(reader.lag(), [(name, 9 * line.len() as u64)]);
    }
}
