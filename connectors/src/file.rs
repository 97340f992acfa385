//! Files: a bounded source of JSON lines or CSV (with a header), and a sink
//! that writes JSON lines.
//!
//! A source `path` may be a directory: each file in it (by name order,
//! hidden files skipped) is a *partition* with its own watermark, and the
//! files are read in turn, a batch from each, as a source reads the
//! partitions of a topic.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::csv;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::{OperatorError, Source};

use crate::{ConnectorError, Options, Result, conform};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Csv,
}

/// A validated `connector = 'file'` source.
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// A file, or a directory of files.
    pub path: PathBuf,
    /// The files to read: `path` itself, or the files of the directory.
    pub files: Vec<PathBuf>,
    pub format: FileFormat,
    pub schema: SchemaRef,
    pub batch_size: usize,
}

impl FileSourceConfig {
    pub fn parse(options: &Options, schema: &SchemaRef) -> Result<Self> {
        let path = PathBuf::from(options.require("path")?);
        let format = match options.require("format")?.as_str() {
            "json" => FileFormat::Json,
            "csv" => FileFormat::Csv,
            other => {
                return Err(ConnectorError::Config(format!(
                    "unknown file format '{other}' (expected 'json' or 'csv')"
                )));
            }
        };
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|source| ConnectorError::Io {
                    path: path.display().to_string(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(ConnectorError::Config(format!(
                    "source directory {} has no files",
                    path.display()
                )));
            }
            files
        } else if path.is_file() {
            vec![path.clone()]
        } else {
            return Err(ConnectorError::Config(format!(
                "source file {} does not exist",
                path.display()
            )));
        };
        let batch_size = options.parse(&["batch.size"], 8192usize)?.max(1);
        Ok(Self {
            path,
            files,
            format,
            schema: schema.clone(),
            batch_size,
        })
    }
}

/// Reads a whole file once (bounded). A malformed record stops the job with
/// an error naming the file, the line and the reason.
#[derive(Debug)]
pub struct FileSource {
    config: FileSourceConfig,
    reader: Reader,
    /// File size and bytes consumed so far (JSON; CSV reports at the end).
    size: u64,
    consumed: u64,
    /// Rows returned so far (a CSV file's position).
    rows: u64,
    /// Rows read past a CSV position sought to, returned first.
    pending: Option<RecordBatch>,
}

enum Reader {
    Json {
        lines: BufReader<File>,
        line: u64,
        builder_schema: SchemaRef,
    },
    Csv(Box<csv::Reader<File>>),
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reader::Json { line, .. } => write!(f, "Json(line {line})"),
            Reader::Csv(_) => write!(f, "Csv"),
        }
    }
}

/// JSON timestamps may be RFC 3339 strings or integer epoch milliseconds:
/// decode timestamp columns as milliseconds, then cast to the declared type.
fn json_decode_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(_, tz) => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Timestamp(TimeUnit::Millisecond, tz.clone())),
            _ => f.as_ref().clone(),
        })
        .map(|f| f.with_nullable(true))
        .collect();
    Arc::new(Schema::new(fields))
}

impl FileSource {
    pub fn open(config: FileSourceConfig) -> Result<Self> {
        let file = File::open(&config.path).map_err(|source| ConnectorError::Io {
            path: config.path.display().to_string(),
            source,
        })?;
        let reader = match config.format {
            FileFormat::Json => Reader::Json {
                lines: BufReader::with_capacity(1 << 20, file),
                line: 0,
                builder_schema: json_decode_schema(&config.schema),
            },
            FileFormat::Csv => {
                let schema = Arc::new(Schema::new(
                    config
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.as_ref().clone().with_nullable(true))
                        .collect::<Vec<_>>(),
                ));
                Reader::Csv(Box::new(
                    csv::ReaderBuilder::new(schema)
                        .with_header(true)
                        .with_batch_size(config.batch_size)
                        .build(file)?,
                ))
            }
        };
        let size = std::fs::metadata(&config.path).map_or(0, |m| m.len());
        Ok(Self {
            config,
            reader,
            size,
            consumed: 0,
            rows: 0,
            pending: None,
        })
    }

    /// Where the next row starts: a byte offset and line for JSON lines, a
    /// row count for CSV (whose quoted fields may span lines).
    fn position_value(&self) -> serde_json::Value {
        match &self.reader {
            Reader::Json { line, .. } => serde_json::json!({"bytes": self.consumed, "line": line}),
            Reader::Csv(_) => serde_json::json!({"rows": self.rows}),
        }
    }

    fn seek_value(&mut self, position: &serde_json::Value) -> eddy_operators::Result<()> {
        let bad = self.error(None, "the checkpointed position does not fit this file");
        let csv = match &mut self.reader {
            Reader::Json { lines, line, .. } => {
                let bytes = position["bytes"].as_u64().filter(|&b| b <= self.size);
                let (Some(bytes), Some(at)) = (bytes, position["line"].as_u64()) else {
                    return Err(bad);
                };
                if let Err(e) = lines.seek(SeekFrom::Start(bytes)) {
                    return Err(OperatorError::Connector(format!(
                        "error reading {}: {e}",
                        self.config.path.display()
                    )));
                }
                *line = at;
                self.consumed = bytes;
                false
            }
            Reader::Csv(_) => true,
        };
        if csv {
            let target = position["rows"].as_u64().ok_or(bad)?;
            while self.rows < target {
                let Some(batch) = self.next_batch()? else {
                    return Err(self.error(None, "the file is shorter than at the checkpoint"));
                };
                let n = batch.num_rows();
                if self.rows > target {
                    let keep = (self.rows - target) as usize;
                    self.pending = Some(batch.slice(n - keep, keep));
                    self.rows = target;
                }
            }
        }
        Ok(())
    }

    fn error(&self, line: Option<u64>, reason: impl std::fmt::Display) -> OperatorError {
        let path = self.config.path.display();
        match line {
            Some(line) => OperatorError::Connector(format!(
                "malformed record in {path} at line {line}: {reason}"
            )),
            None => OperatorError::Connector(format!("error reading {path}: {reason}")),
        }
    }

    fn next_json(&mut self) -> eddy_operators::Result<Option<RecordBatch>> {
        let Reader::Json {
            lines,
            line,
            builder_schema,
        } = &mut self.reader
        else {
            return Ok(None);
        };
        let builder_schema = builder_schema.clone();
        let first_line = *line + 1;
        let mut buf = Vec::with_capacity(self.config.batch_size * 128);
        let mut n = 0;
        while n < self.config.batch_size {
            let read = lines.read_until(b'\n', &mut buf).map_err(|e| {
                OperatorError::Connector(format!(
                    "error reading {}: {e}",
                    self.config.path.display()
                ))
            })?;
            if read == 0 {
                break;
            }
            self.consumed += read as u64;
            *line += 1;
            n += 1;
        }
        if n == 0 {
            return Ok(None);
        }
        match decode_json(&builder_schema, &buf, n) {
            Ok(Some(batch)) => Ok(Some(conform(batch, &self.config.schema)?)),
            Ok(None) => Ok(Some(RecordBatch::new_empty(self.config.schema.clone()))),
            Err(e) => {
                // Find the first line that fails on its own, for the message.
                for (i, text) in buf.split(|&b| b == b'\n').enumerate() {
                    if let Err(line_err) = decode_json(&builder_schema, text, 1) {
                        return Err(
                            self.error(Some(first_line + i as u64), clean_json_error(&line_err))
                        );
                    }
                }
                Err(self.error(Some(first_line), clean_json_error(&e)))
            }
        }
    }
}

fn decode_json(
    schema: &SchemaRef,
    buf: &[u8],
    rows: usize,
) -> Result<Option<RecordBatch>, ConnectorError> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows + 1)
        .build_decoder()?;
    let consumed = decoder.decode(buf)?;
    if consumed < buf.len() {
        decoder.decode(&buf[consumed..])?;
    }
    Ok(decoder.flush()?)
}

fn clean_json_error(e: &ConnectorError) -> String {
    let s = e.to_string();
    s.strip_prefix("Json error: ").unwrap_or(&s).to_string()
}

impl Source for FileSource {
    fn name(&self) -> String {
        format!("file {}", self.config.path.display())
    }

    fn progress(&self) -> Option<(u64, u64)> {
        Some((self.consumed, self.size))
    }

    fn position(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(&self.position_value()).ok()
    }

    fn seek(&mut self, position: &[u8]) -> eddy_operators::Result<()> {
        let value = serde_json::from_slice(position)
            .map_err(|e| self.error(None, format!("bad checkpointed position: {e}")))?;
        self.seek_value(&value)
    }

    fn next_batch(&mut self) -> eddy_operators::Result<Option<RecordBatch>> {
        if let Some(batch) = self.pending.take() {
            return Ok(Some(batch));
        }
        let batch = self.read_batch()?;
        if let Some(b) = &batch {
            self.rows += b.num_rows() as u64;
        }
        Ok(batch)
    }
}

impl FileSource {
    fn read_batch(&mut self) -> eddy_operators::Result<Option<RecordBatch>> {
        match &mut self.reader {
            Reader::Json { .. } => loop {
                match self.next_json()? {
                    Some(b) if b.num_rows() == 0 => continue,
                    other => return Ok(other),
                }
            },
            Reader::Csv(reader) => match reader.next() {
                None => {
                    self.consumed = self.size;
                    Ok(None)
                }
                Some(Ok(batch)) => Ok(Some(conform(batch, &self.config.schema)?)),
                Some(Err(e)) => {
                    // arrow-csv counts data rows ("at line N" is the N-th
                    // row after the header); report the line of the file.
                    let text = e.to_string();
                    let text = text.strip_prefix("Parser error: ").unwrap_or(&text);
                    match text.split_once(" at line ") {
                        Some((reason, rest)) => {
                            let digits: String =
                                rest.chars().take_while(char::is_ascii_digit).collect();
                            let after = rest[digits.len()..].trim_start_matches('.').trim();
                            let line = digits.parse::<u64>().ok().map(|n| n + 1);
                            let reason = if after.is_empty() {
                                reason.to_string()
                            } else {
                                format!("{reason} ({after})")
                            };
                            Err(self.error(line, reason))
                        }
                        None => Err(self.error(None, text)),
                    }
                }
            },
        }
    }
}

/// The files of a directory as the partitions of one source, read in
/// turn, one batch from each.
#[derive(Debug)]
pub struct PartitionedFileSource {
    dir: PathBuf,
    parts: Vec<FileSource>,
    /// Partitions not yet read to the end, in reading order.
    live: Vec<usize>,
    turn: usize,
    last: usize,
    ended: Vec<usize>,
}

impl PartitionedFileSource {
    pub fn open(config: &FileSourceConfig) -> Result<Self> {
        let parts = config
            .files
            .iter()
            .map(|f| {
                FileSource::open(FileSourceConfig {
                    path: f.clone(),
                    files: vec![f.clone()],
                    ..config.clone()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            dir: config.path.clone(),
            live: (0..parts.len()).collect(),
            parts,
            turn: 0,
            last: 0,
            ended: Vec::new(),
        })
    }
}

impl Source for PartitionedFileSource {
    fn name(&self) -> String {
        format!("files in {}", self.dir.display())
    }

    fn progress(&self) -> Option<(u64, u64)> {
        let (mut done, mut total) = (0, 0);
        for p in &self.parts {
            let (d, t) = p.progress().unwrap_or_default();
            done += d;
            total += t;
        }
        Some((done, total))
    }

    fn next_batch(&mut self) -> eddy_operators::Result<Option<RecordBatch>> {
        while !self.live.is_empty() {
            let at = self.turn % self.live.len();
            let idx = self.live[at];
            match self.parts[idx].next_batch()? {
                Some(batch) => {
                    self.last = idx;
                    self.turn = at + 1;
                    return Ok(Some(batch));
                }
                None => {
                    self.live.remove(at);
                    self.ended.push(idx);
                    self.turn = at;
                }
            }
        }
        Ok(None)
    }

    fn partition(&self) -> usize {
        self.last
    }

    fn position(&self) -> Option<Vec<u8>> {
        let parts: Vec<serde_json::Value> =
            self.parts.iter().map(FileSource::position_value).collect();
        let value = serde_json::json!({
            "parts": parts,
            "live": self.live,
            "turn": self.turn,
        });
        serde_json::to_vec(&value).ok()
    }

    fn seek(&mut self, position: &[u8]) -> eddy_operators::Result<()> {
        let bad = |reason: String| {
            OperatorError::Connector(format!(
                "cannot resume reading {}: {reason}",
                self.dir.display()
            ))
        };
        let value: serde_json::Value =
            serde_json::from_slice(position).map_err(|e| bad(e.to_string()))?;
        let parts = value["parts"].as_array().cloned().unwrap_or_default();
        if parts.len() != self.parts.len() {
            return Err(bad(format!(
                "it held {} files at the checkpoint and holds {} now",
                parts.len(),
                self.parts.len()
            )));
        }
        for (part, p) in self.parts.iter_mut().zip(&parts) {
            part.seek_value(p)?;
        }
        self.live = value["live"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|v| v.as_u64())
                    .map(|v| v as usize)
                    .collect()
            })
            .unwrap_or_default();
        self.turn = value["turn"].as_u64().unwrap_or(0) as usize;
        Ok(())
    }

    fn take_ended_partitions(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use eddy_operators::Sink;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn read_all(format: FileFormat, text: &str) -> eddy_operators::Result<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, text).unwrap();
        let config = FileSourceConfig {
            files: vec![],
            path,
            format,
            schema: schema(),
            batch_size: 2,
        };
        let mut src = FileSource::open(config).unwrap();
        let mut batches = vec![];
        while let Some(b) = src.next_batch()? {
            batches.push(b);
        }
        Ok(pretty_format_batches(&batches).unwrap().to_string())
    }

    #[test]
    fn json_timestamps_in_every_accepted_spelling() {
        let out = read_all(
            FileFormat::Json,
            r#"{"k": "a", "ts": "2024-01-01T00:00:01Z", "v": 1}
{"k": "b", "ts": "2024-01-01 00:00:02", "v": null}

{"k": "c", "ts": 1704067203000, "extra": true}
{"k": "d", "ts": "2024-01-01T02:00:04+02:00", "v": 4}
"#,
        )
        .unwrap();
        let expected = "\
+---+---------------------+---+
| k | ts                  | v |
+---+---------------------+---+
| a | 2024-01-01T00:00:01 | 1 |
| b | 2024-01-01T00:00:02 |   |
| c | 2024-01-01T00:00:03 |   |
| d | 2024-01-01T00:00:04 | 4 |
+---+---------------------+---+";
        assert_eq!(out, expected);
    }

    #[test]
    fn malformed_json_names_file_and_line() {
        let err = read_all(
            FileFormat::Json,
            "{\"k\": \"a\", \"v\": 1}\n{\"k\": \"b\", \"v\": 2}\n{\"k\": \"c\", \"v\": \"x\"}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/in at line 3:"), "{err}");
        let err = read_all(FileFormat::Json, "{\"k\": \"a\"}\n{\"k\": \n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at line 2:"), "{err}");
    }

    #[test]
    fn csv_with_header() {
        let out = read_all(
            FileFormat::Csv,
            "k,ts,v\na,2024-01-01T00:00:01,1\nb,2024-01-01 00:00:02,\n",
        )
        .unwrap();
        assert!(out.contains("| b | 2024-01-01T00:00:02 |   |"), "{out}");
        // The third line of the file is the second data row; batches of 2.
        let text = "k,ts,v\na,2024-01-01T00:00:01,1\nb,2024-01-01T00:00:01,x\n";
        let err = read_all(FileFormat::Csv, text).unwrap_err().to_string();
        assert!(
            err.contains("/in at line 3: Error while parsing value 'x'"),
            "{err}"
        );
        let text =
            "k,ts,v\na,2024-01-01T00:00:01,1\nb,2024-01-01T00:00:01,2\nc,2024-01-01T00:00:01,z\n";
        let err = read_all(FileFormat::Csv, text).unwrap_err().to_string();
        assert!(
            err.contains("/in at line 4: Error while parsing value 'z'"),
            "{err}"
        );
    }

    #[test]
    fn json_sink_writes_utc_timestamps_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.json");
        std::fs::write(&src, "{\"k\": \"a\", \"ts\": 1704067200500, \"v\": 1}\n{\"k\": null, \"ts\": 1704067201000}\n").unwrap();
        let config = FileSourceConfig {
            files: vec![],
            path: src,
            format: FileFormat::Json,
            schema: schema(),
            batch_size: 10,
        };
        let batch = FileSource::open(config)
            .unwrap()
            .next_batch()
            .unwrap()
            .unwrap();
        let out = dir.path().join("out.jsonl");
        let mut sink = crate::FileSink::create(&out, schema(), &[]).unwrap();
        sink.recover(0, None).unwrap();
        sink.write_batch(&batch).unwrap();
        for c in sink.pre_commit(1, true).unwrap().commits {
            c.apply().unwrap();
        }
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            "{\"k\":\"a\",\"ts\":\"2024-01-01T00:00:00.500Z\",\"v\":1}\n{\"k\":null,\"ts\":\"2024-01-01T00:00:01Z\",\"v\":null}\n"
        );
    }
}
