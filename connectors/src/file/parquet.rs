//! The file source in `'format' = 'parquet'`: a Parquet file, or a
//! directory of them, read by row group.
//!
//! - **Splits**, as for JSON lines (see `source.rs`):
//!   - a **file**: each row group is a split, handed to whichever subtask
//!     is free, so one file of many row groups is read on every core, its
//!     row groups in order;
//!   - a **directory** (names starting with `.` or `_`, as `_SUCCESS`,
//!     skipped): each file is a split, its row groups read in order, and
//!     the files are read side by side (spread over the subtasks), each
//!     with its own watermark. Files written side by side (the parts of
//!     several writers) cover the same times; read one after another,
//!     the later ones' rows would be late.
//! - **Columns**: only the columns the query uses are decoded (the
//!   planner's projection, [`SourceProvider::projected`]); a file's column
//!   is found by the declared column's name (an exact match first, then
//!   one that differs only in case) and cast to the declared type
//!   (`TIMESTAMP(3)` over a file's microseconds in UTC, `DOUBLE` over
//!   integers). A declared column the file lacks is NULL, or an error if
//!   it is NOT NULL; a column the file has that cannot become the
//!   declared type fails the job naming the file, the column and both
//!   types.
//! - **Filters**: where the query keeps only rows with `column op
//!   literal` ([`SourceProvider::bounded`]), a row group whose statistics
//!   (its column's min and max) show that no row meets it is not read at
//!   all. This is done only where the file's type is the declared one or
//!   becomes it by an order-keeping cast (numbers, timestamps): a string
//!   read as a number is never skipped by its statistics.
//! - **Position**: the file, the row group, and the rows of it read, kept
//!   in checkpoints; a restore skips the rows read.
//! - With `'source.monitor-interval'` the directory is listed again for
//!   new files (a Parquet file is written whole, so files are not
//!   followed); a new file that cannot be read yet (its footer not
//!   written) is tried again at the next listing.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::ScalarValue;
use eddy_operators::lookup::LookupTable;
use eddy_operators::source::{
    ColumnBound, LagUnit, Poll, SourceProvider, SourceReader, Split, SplitAssignment,
    SplitEnumerator,
};
use eddy_operators::{OperatorContext, OperatorError};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::{Deserialize, Serialize};

use crate::options::Options;
use crate::{ConnectorError, Result};

/// A checked Parquet file source.
#[derive(Debug, Clone)]
pub struct ParquetSource {
    path: PathBuf,
    /// The declared columns read (all, or the planner's projection).
    schema: SchemaRef,
    batch_size: usize,
    monitor: Option<Duration>,
    /// A directory: its files are splits, read side by side.
    directory: bool,
    /// Splits when the source was declared (the planner's parallelism).
    splits_at_start: usize,
    /// Row groups none of whose rows can meet these are skipped.
    bounds: Vec<ColumnBound>,
}

/// Where a split is, as kept in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    file: PathBuf,
    /// The row groups of the split, in order.
    row_groups: Vec<usize>,
    /// Rows of them already read.
    rows: u64,
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> OperatorError {
    OperatorError::Connector(format!("error reading {}: {e}", path.display()))
}

/// A file's reader builder: its footer read.
fn open(path: &Path) -> eddy_operators::Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|e| read_error(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| read_error(path, e))
}

impl ParquetSource {
    pub(crate) fn try_new(options: &Options, schema: &SchemaRef) -> Result<Self> {
        let (path, monitor) = super::source_path(options)?;
        let mut source = Self {
            directory: path.is_dir(),
            path,
            schema: schema.clone(),
            batch_size: options.count("batch.size")?.unwrap_or(8192).max(1) as usize,
            monitor,
            splits_at_start: 0,
            bounds: Vec::new(),
        };
        // Reads every footer now: a file that is not Parquet, or whose
        // columns cannot be the declared ones, fails the statement.
        let splits = ParquetEnumerator {
            source: source.clone(),
        }
        .list()
        .map_err(|e| ConnectorError::Config(e.to_string()))?;
        source.splits_at_start = splits.len();
        Ok(source)
    }
}

impl SourceProvider for ParquetSource {
    fn enumerator(&self) -> eddy_operators::Result<Box<dyn SplitEnumerator>> {
        Ok(Box::new(ParquetEnumerator {
            source: self.clone(),
        }))
    }

    fn reader(&self) -> eddy_operators::Result<Box<dyn SourceReader>> {
        Ok(Box::new(ParquetReader {
            name: format!("parquet {}", self.path.display()),
            schema: self.schema.clone(),
            batch_size: self.batch_size,
            splits: Vec::new(),
            turn: 0,
            done: 0,
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
            name: format!("parquet {}", self.path.display()),
            path: self.path.clone(),
            source: Arc::new(self.clone()),
        }))
    }

    /// Row groups whose statistics exclude `bounds` are skipped (those
    /// whose value is of the declared column's type; no others).
    fn bounded(&self, bounds: &[ColumnBound]) -> Option<Arc<dyn SourceProvider>> {
        let of_column_type = |b: &&ColumnBound| {
            self.schema
                .field_with_name(&b.column)
                .is_ok_and(|f| f.data_type() == &b.value.data_type())
        };
        let bounds: Vec<ColumnBound> = bounds.iter().filter(of_column_type).cloned().collect();
        (!bounds.is_empty()).then(|| {
            Arc::new(Self {
                bounds,
                ..self.clone()
            }) as Arc<dyn SourceProvider>
        })
    }

    /// Only the columns asked for are decoded: the others' column chunks
    /// are never read.
    fn projected(&self, columns: &[usize]) -> Option<Arc<dyn SourceProvider>> {
        let schema = Arc::new(self.schema.project(columns).ok()?);
        Some(Arc::new(Self {
            schema,
            ..self.clone()
        }))
    }
}

#[derive(Debug)]
struct ParquetEnumerator {
    source: ParquetSource,
}

impl SplitEnumerator for ParquetEnumerator {
    fn list(&mut self) -> eddy_operators::Result<Vec<Split>> {
        let path = &self.source.path;
        let files = super::list_files(path).map_err(|e| read_error(path, e))?;
        let mut splits = Vec::new();
        for file in files {
            let builder = match open(&file) {
                Ok(builder) => builder,
                // A watched directory's new file may still be being
                // written (no footer yet): it is listed again later.
                Err(e) if self.source.monitor.is_some() => {
                    tracing::debug!(file = %file.display(), error = %e, "not readable yet");
                    continue;
                }
                Err(e) => return Err(e),
            };
            Columns::of(&file, builder.schema(), &self.source.schema)?;
            let name = file.display().to_string();
            let kept = kept_row_groups(&builder, &self.source.bounds);
            let groups = builder.metadata().row_groups();
            let skipped = kept.iter().filter(|k| !**k).count();
            if skipped > 0 && self.discovery_interval().is_none() {
                tracing::info!(file = %name, skipped, of = groups.len(), "row groups skipped by their statistics");
            }
            let kept: Vec<usize> = (0..groups.len()).filter(|i| kept[*i]).collect();
            let size = |of: &[usize]| {
                let bytes = of
                    .iter()
                    .map(|i| groups[*i].compressed_size().max(0) as u64);
                Some(bytes.sum())
            };
            let split = |id: String, row_groups: Vec<usize>| Split {
                id,
                size: size(&row_groups),
                position: serde_json::to_vec(&Position {
                    file: file.clone(),
                    row_groups,
                    rows: 0,
                })
                .unwrap_or_default(),
            };
            if self.source.directory {
                let id = file
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned());
                if !kept.is_empty() {
                    splits.push(split(id, kept));
                }
            } else {
                splits.extend(
                    kept.into_iter()
                        .map(|i| split(format!("{name}#{i}"), vec![i])),
                );
            }
        }
        Ok(splits)
    }

    fn discovery_interval(&self) -> Option<Duration> {
        self.source.monitor
    }
}

/// Per row group of a file: whether its statistics allow a row that
/// meets every bound.
fn kept_row_groups(
    builder: &ParquetRecordBatchReaderBuilder<File>,
    bounds: &[ColumnBound],
) -> Vec<bool> {
    let groups = builder.metadata().row_groups();
    let mut kept = vec![true; groups.len()];
    for bound in bounds {
        let found = builder.schema();
        let Some(field) = found
            .fields()
            .iter()
            .find(|f| f.name() == &bound.column)
            .or_else(|| {
                found
                    .fields()
                    .iter()
                    .find(|f| f.name().eq_ignore_ascii_case(&bound.column))
            })
        else {
            continue;
        };
        let declared = bound.value.data_type();
        if !keeps_order(field.data_type(), &declared) {
            continue;
        }
        let Ok(converter) =
            StatisticsConverter::try_new(field.name(), found, builder.parquet_schema())
        else {
            continue;
        };
        let (Ok(mins), Ok(maxes)) = (
            converter.row_group_mins(groups),
            converter.row_group_maxes(groups),
        ) else {
            continue;
        };
        for (i, keep) in kept.iter_mut().enumerate() {
            let as_declared =
                |a: &ArrayRef| ScalarValue::try_from_array(a, i).and_then(|v| v.cast_to(&declared));
            if let (Ok(min), Ok(max)) = (as_declared(&mins), as_declared(&maxes)) {
                *keep &= bound.may_hold(&min, &max);
            }
        }
    }
    kept
}

/// Whether casting `from` to `to` keeps values in order (`a <= b` stays
/// so), so that a row group's min and max, cast, bound its rows cast.
fn keeps_order(from: &DataType, to: &DataType) -> bool {
    let number = |t: &DataType| t.is_integer() || t.is_floating();
    from == to
        || (number(from) && number(to))
        || (matches!(from, DataType::Timestamp(..)) && matches!(to, DataType::Timestamp(..)))
        || (matches!(from, DataType::Date32 | DataType::Date64)
            && matches!(to, DataType::Date32 | DataType::Date64))
}

/// Where each declared column comes from in the batches a file's reader
/// gives, and the file's root columns to decode.
#[derive(Debug)]
struct Columns {
    /// Per declared column: its index among the decoded columns, or
    /// `None` if the file lacks it (NULL).
    sources: Vec<Option<usize>>,
    /// The file's root columns to decode, ascending.
    roots: Vec<usize>,
}

impl Columns {
    /// Matches the declared columns to `file`'s (`found`), checking that
    /// each can become its declared type.
    fn of(file: &Path, found: &Schema, declared: &Schema) -> eddy_operators::Result<Self> {
        let mut picked: Vec<Option<usize>> = Vec::with_capacity(declared.fields().len());
        for field in declared.fields() {
            let at = found.index_of(field.name()).ok().or_else(|| {
                found
                    .fields()
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(field.name()))
            });
            match at {
                Some(i) => {
                    let from = found.field(i).data_type();
                    if !can_cast_types(from, field.data_type()) {
                        return Err(read_error(
                            file,
                            format!(
                                "column '{}' is {from} in the file and cannot be read as the declared {}",
                                found.field(i).name(),
                                field.data_type()
                            ),
                        ));
                    }
                }
                None if !field.is_nullable() => {
                    return Err(read_error(
                        file,
                        format!(
                            "the file has no column '{}', declared NOT NULL",
                            field.name()
                        ),
                    ));
                }
                None => {}
            }
            picked.push(at);
        }
        let mut roots: Vec<usize> = picked.iter().flatten().copied().collect();
        roots.sort_unstable();
        roots.dedup();
        let sources = picked
            .iter()
            .map(|p| p.and_then(|i| roots.binary_search(&i).ok()))
            .collect();
        Ok(Self { sources, roots })
    }

    /// A decoded batch as the declared columns.
    fn conform(&self, batch: &RecordBatch, declared: &SchemaRef) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let columns = self
            .sources
            .iter()
            .zip(declared.fields())
            .map(|(source, field)| match source {
                Some(i) if batch.column(*i).data_type() == field.data_type() => {
                    Ok(batch.column(*i).clone())
                }
                Some(i) => cast(batch.column(*i), field.data_type()),
                None => Ok(new_null_array(field.data_type(), rows)),
            })
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            declared.clone(),
            columns,
            &options,
        )?)
    }
}

/// A split being read: a file's row groups, in order.
struct OpenSplit {
    index: usize,
    position: Position,
    reader: ParquetRecordBatchReader,
    columns: Columns,
    /// Its rows and compressed bytes, for progress.
    rows: u64,
    bytes: u64,
    /// Its bytes counted as read so far.
    counted: u64,
}

impl OpenSplit {
    fn open(
        index: usize,
        position: Position,
        declared: &SchemaRef,
        batch_size: usize,
    ) -> eddy_operators::Result<Self> {
        let path = &position.file;
        let builder = open(path)?;
        let columns = Columns::of(path, builder.schema(), declared)?;
        let all = builder.metadata().row_groups();
        let (mut rows, mut bytes) = (0, 0);
        for i in &position.row_groups {
            let Some(group) = all.get(*i) else {
                return Err(read_error(path, format!("it has no row group {i}")));
            };
            rows += group.num_rows().max(0) as u64;
            bytes += group.compressed_size().max(0) as u64;
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), columns.roots.iter().copied());
        // The offset counts the rows of the row groups selected, in order.
        let reader = builder
            .with_row_groups(position.row_groups.clone())
            .with_projection(mask)
            .with_batch_size(batch_size)
            .with_offset(position.rows as usize)
            .build()
            .map_err(|e| read_error(path, e))?;
        let counted = bytes * position.rows.min(rows) / rows.max(1);
        Ok(Self {
            index,
            position,
            reader,
            columns,
            rows,
            bytes,
            counted,
        })
    }

    /// Bytes read so far: the split's share of the rows read.
    fn bytes_read(&self) -> u64 {
        self.bytes * self.position.rows.min(self.rows) / self.rows.max(1)
    }

    fn error(&self, e: impl std::fmt::Display) -> OperatorError {
        read_error(&self.position.file, e)
    }

    /// The next batch as the declared columns; `None` at its end.
    fn next(&mut self, declared: &SchemaRef) -> eddy_operators::Result<Option<RecordBatch>> {
        let Some(batch) = self.reader.next() else {
            return Ok(None);
        };
        let batch = batch.map_err(|e| self.error(e))?;
        self.position.rows += batch.num_rows() as u64;
        let batch = self.columns.conform(&batch, declared);
        Ok(Some(batch.map_err(|e| self.error(e))?))
    }
}

/// Reads the splits assigned to one subtask side by side, a batch from
/// each in turn.
struct ParquetReader {
    name: String,
    schema: SchemaRef,
    batch_size: usize,
    splits: Vec<OpenSplit>,
    turn: usize,
    /// Compressed bytes read (progress).
    done: u64,
}

impl SourceReader for ParquetReader {
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
        let open = OpenSplit::open(split, position, &self.schema, self.batch_size)?;
        self.splits.push(open);
        Ok(())
    }

    fn poll(&mut self) -> eddy_operators::Result<Poll> {
        if self.splits.is_empty() {
            return Ok(Poll::Pending);
        }
        let at = self.turn % self.splits.len();
        let split = &mut self.splits[at];
        let read = split.next(&self.schema)?;
        let now = split.bytes_read();
        self.done += now.saturating_sub(split.counted);
        split.counted = now;
        match read {
            Some(batch) => {
                self.turn = at + 1;
                Ok(Poll::Batch(split.index, batch))
            }
            None => {
                self.done += split.bytes.saturating_sub(split.counted);
                let finished = self.splits.remove(at);
                self.turn = at;
                Ok(Poll::Finished(finished.index))
            }
        }
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        self.splits
            .iter()
            .map(|s| {
                let position = serde_json::to_vec(&s.position).unwrap_or_default();
                (s.index, position)
            })
            .collect()
    }

    fn progress(&self) -> u64 {
        self.done
    }

    fn bytes_read(&self) -> u64 {
        self.done
    }

    fn lag_unit(&self) -> LagUnit {
        LagUnit::Bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int32Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{
        DataType, Field, Int64Type, TimeUnit, TimestampMillisecondType,
    };
    use eddy_operators::source::read_all;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// A file of `n` rows in row groups of 100: `v` (INT32) = i, `ts`
    /// (microseconds, UTC) = i seconds, `name` = "n<i>", in that order.
    fn write_file(path: &Path, n: i32) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int32, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("name", DataType::Utf8, true),
        ]));
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        let file = File::create(path).unwrap();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(properties)).unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(70) {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int32Array::from(chunk.to_vec())),
                    Arc::new(
                        TimestampMicrosecondArray::from_iter_values(
                            chunk.iter().map(|i| i64::from(*i) * 1_000_000),
                        )
                        .with_timezone("UTC"),
                    ),
                    Arc::new(StringArray::from_iter_values(
                        chunk.iter().map(|i| format!("n{i}")),
                    )),
                ],
            )
            .unwrap();
            writer.write(&batch).unwrap();
        }
        writer.close().unwrap();
    }

    /// Declared in another order, `v` wider, `ts` in milliseconds without
    /// a zone, and a column the file lacks.
    fn declared() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("TS", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("missing", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn source(path: &Path, schema: &SchemaRef) -> Result<ParquetSource> {
        let options = Options::new([
            ("path".to_string(), path.display().to_string()),
            ("batch.size".to_string(), "32".to_string()),
        ]);
        ParquetSource::try_new(&options, schema)
    }

    /// Every row read: (ts in ms, missing is null, v).
    fn rows(batches: &[RecordBatch]) -> Vec<(i64, bool, i64)> {
        let mut out: Vec<_> = batches
            .iter()
            .flat_map(|b| {
                let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
                let v = b.column(2).as_primitive::<Int64Type>();
                (0..b.num_rows())
                    .map(|i| (ts.value(i), b.column(1).is_null(i), v.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_unstable();
        out
    }

    fn expected(n: i64) -> Vec<(i64, bool, i64)> {
        (0..n).map(|i| (i * 1000, true, i)).collect()
    }

    #[test]
    fn row_groups_are_splits_read_by_name_and_cast_to_the_declared_types() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("a.parquet"), 250);
        write_file(&dir.path().join("b.parquet"), 100);
        std::fs::write(dir.path().join("_SUCCESS"), b"").unwrap();
        // A file: its row groups are the splits, handed out on demand.
        let one = source(&dir.path().join("a.parquet"), &declared()).unwrap();
        assert_eq!(one.enumerator().unwrap().list().unwrap().len(), 3);
        assert_eq!(one.assignment(), SplitAssignment::OnDemand);
        assert_eq!(rows(&read_all(&one).unwrap()), expected(250));
        // A directory: its files, read side by side.
        let src = source(dir.path(), &declared()).unwrap();
        let splits = src.enumerator().unwrap().list().unwrap();
        assert_eq!(splits.len(), 2, "{splits:?}");
        assert_eq!(src.assignment(), SplitAssignment::Spread);
        assert_eq!(src.max_parallelism(), Some(2));
        let mut want = expected(250);
        want.extend(expected(100));
        want.sort_unstable();
        assert_eq!(rows(&read_all(&src).unwrap()), want);
    }

    #[test]
    fn only_the_columns_asked_for_are_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.parquet");
        write_file(&path, 10);
        let src = source(&path, &declared()).unwrap();
        // `v` alone: the file's first root column, nothing else.
        let projected = src.projected(&[2]).unwrap();
        let batches = read_all(projected.as_ref()).unwrap();
        assert_eq!(batches[0].num_columns(), 1);
        let builder = open(&path).unwrap();
        let columns = Columns::of(&path, builder.schema(), &declared().project(&[2]).unwrap());
        assert_eq!(columns.unwrap().roots, vec![0]);
        let sum: i64 = batches
            .iter()
            .map(|b| {
                b.column(0)
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .sum::<i64>()
            })
            .sum();
        assert_eq!(sum, 45);
    }

    #[test]
    fn a_row_group_resumes_after_the_rows_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.parquet");
        write_file(&path, 100);
        let src = source(&path, &declared()).unwrap();
        let split = src.enumerator().unwrap().list().unwrap().remove(0);
        let mut reader = src.reader().unwrap();
        reader.add_split(0, split.clone()).unwrap();
        let Poll::Batch(0, first) = reader.poll().unwrap() else {
            panic!("a batch first");
        };
        assert_eq!(first.num_rows(), 32);
        assert!(reader.bytes_read() > 0);
        let (_, position) = reader.positions().pop().unwrap();
        let mut resumed = src.reader().unwrap();
        resumed.add_split(0, Split { position, ..split }).unwrap();
        let mut batches = vec![first];
        loop {
            match resumed.poll().unwrap() {
                Poll::Batch(_, b) => batches.push(b),
                Poll::Finished(_) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(rows(&batches), expected(100));
        assert_eq!(
            resumed.bytes_read(),
            split.size.unwrap() - reader.bytes_read()
        );

        // A directory's file: 250 rows in 3 row groups, resumed in the
        // second after 5 batches of 32.
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("a.parquet"), 250);
        let src = source(dir.path(), &declared()).unwrap();
        let split = src.enumerator().unwrap().list().unwrap().remove(0);
        let mut reader = src.reader().unwrap();
        reader.add_split(0, split.clone()).unwrap();
        let mut batches = Vec::new();
        while batches.len() < 5 {
            if let Poll::Batch(_, b) = reader.poll().unwrap() {
                batches.push(b);
            }
        }
        let (_, position) = reader.positions().pop().unwrap();
        let mut resumed = src.reader().unwrap();
        resumed.add_split(0, Split { position, ..split }).unwrap();
        while let Poll::Batch(_, b) = resumed.poll().unwrap() {
            batches.push(b);
        }
        assert_eq!(rows(&batches), expected(250));
    }

    /// Row groups hold v = 0..99, 100..199, 200..249.
    #[test]
    fn row_groups_whose_statistics_exclude_a_bound_are_not_read() {
        use eddy_operators::source::BoundOp;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.parquet");
        write_file(&path, 250);
        let src = source(&path, &declared()).unwrap();
        let bound = |op, v: i64| ColumnBound {
            column: "v".into(),
            op,
            value: ScalarValue::Int64(Some(v)),
        };
        let cases = [
            (vec![bound(BoundOp::GtEq, 150)], 2),
            (vec![bound(BoundOp::Gt, 199)], 1),
            (vec![bound(BoundOp::Gt, 198)], 2),
            (vec![bound(BoundOp::Eq, 100)], 1),
            (vec![bound(BoundOp::Lt, 100)], 1),
            (vec![bound(BoundOp::LtEq, 100)], 2),
            (vec![bound(BoundOp::Gt, 50), bound(BoundOp::Lt, 120)], 2),
            (vec![bound(BoundOp::Gt, 1000)], 0),
        ];
        for (bounds, groups) in cases {
            let bounded = src.bounded(&bounds).unwrap();
            let splits = bounded.enumerator().unwrap().list().unwrap();
            assert_eq!(splits.len(), groups, "{bounds:?}");
            // What is read still holds every row that meets the bounds.
            let read = rows(&read_all(bounded.as_ref()).unwrap());
            let meets = |v: i64| {
                bounds.iter().all(|b| {
                    let ScalarValue::Int64(Some(x)) = b.value else {
                        unreachable!()
                    };
                    match b.op {
                        BoundOp::Eq => v == x,
                        BoundOp::Lt => v < x,
                        BoundOp::LtEq => v <= x,
                        BoundOp::Gt => v > x,
                        BoundOp::GtEq => v >= x,
                    }
                })
            };
            let want: Vec<_> = expected(250).into_iter().filter(|r| meets(r.2)).collect();
            let got: Vec<_> = read.into_iter().filter(|r| meets(r.2)).collect();
            assert_eq!(got, want, "{bounds:?}");
        }
        // A bound of another type than the column's is not used.
        let other = ColumnBound {
            column: "v".into(),
            op: BoundOp::Gt,
            value: ScalarValue::Utf8(Some("5".into())),
        };
        assert!(src.bounded(&[other]).is_none());
    }

    /// A watched directory lists a file again until it can be read.
    #[test]
    fn a_watched_directorys_unfinished_file_waits_for_a_later_listing() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("a.parquet"), 10);
        let options = Options::new([
            ("path".to_string(), dir.path().display().to_string()),
            ("source.monitor-interval".to_string(), "1 s".to_string()),
        ]);
        let src = ParquetSource::try_new(&options, &declared()).unwrap();
        std::fs::write(dir.path().join("b.parquet"), b"PAR1 still being written").unwrap();
        let mut enumerator = src.enumerator().unwrap();
        assert_eq!(enumerator.list().unwrap().len(), 1);
        write_file(&dir.path().join("b.parquet"), 10);
        assert_eq!(enumerator.list().unwrap().len(), 2);
        assert_eq!(src.max_parallelism(), None);
    }

    #[test]
    fn a_column_of_another_type_or_a_missing_not_null_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.parquet");
        write_file(&path, 10);
        let binary = Arc::new(Schema::new(vec![Field::new("ts", DataType::Boolean, true)]));
        let err = source(&path, &binary).unwrap_err().to_string();
        assert!(
            err.contains("a.parquet") && err.contains("column 'ts'") && err.contains("Boolean"),
            "{err}"
        );
        let required = Arc::new(Schema::new(vec![Field::new(
            "gone",
            DataType::Int64,
            false,
        )]));
        let err = source(&path, &required).unwrap_err().to_string();
        assert!(err.contains("no column 'gone'"), "{err}");
        std::fs::write(dir.path().join("b.parquet"), b"not parquet").unwrap();
        let err = source(&dir.path().join("b.parquet"), &declared())
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.parquet"), "{err}");
    }
}
