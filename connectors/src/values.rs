//! `connector = 'values'` (as Flink's test connector): a bounded table of
//! rows written into the options as JSON lines (`'rows'`). The planner
//! makes one for `VALUES (...), (...)`, as in `INSERT INTO t VALUES ...`.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::source::{Poll, Split, SplitEnumerator};
use eddy_operators::{SourceProvider, SourceReader};

use crate::format::{Format, JsonFormat, OnBad, Records, decode_records};
use crate::options::{OptionDecl, OptionType, Options};
use crate::registry::{Connector, ConnectorContext};
use crate::{ConnectorError, Result};

/// The option holding the rows, one JSON object per line.
pub const ROWS: &str = "rows";

#[derive(Debug)]
pub struct ValuesConnector;

impl Connector for ValuesConnector {
    fn name(&self) -> &'static str {
        "values"
    }

    fn help(&self) -> &'static str {
        "a bounded table of the rows given in 'rows' (what VALUES (...) reads)"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::required(
                ROWS,
                OptionType::String,
                "the rows, one JSON object per line (keys are column names)",
            )
            .source_only(),
        ]
    }

    fn is_source(&self) -> bool {
        true
    }

    fn source(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SourceProvider>> {
        let text = ctx.options.get(ROWS).unwrap_or_default();
        let mut decoder = JsonFormat
            .decoder(ctx.schema, &Options::default())?
            .ok_or_else(|| ConnectorError::Config("json cannot be read".into()))?;
        let records = Records::split_lines(text.as_bytes());
        let decoded =
            decode_records(decoder.as_mut(), &records, OnBad::Fail, false).map_err(|bad| {
                ConnectorError::Option {
                    option: ROWS.into(),
                    message: format!("row {}: {}", bad.record + 1, bad.reason),
                }
            })?;
        Ok(Arc::new(ValuesProvider {
            batch: decoded.batch,
        }))
    }
}

/// The rows of a batch as the `'rows'` option's text.
pub fn encode_rows(batch: &RecordBatch) -> Result<String> {
    let mut encoder = JsonFormat
        .encoder(&batch.schema(), &Options::default())?
        .ok_or_else(|| ConnectorError::Config("json cannot be written".into()))?;
    let mut out = Vec::new();
    encoder.encode(batch, &mut out)?;
    String::from_utf8(out).map_err(|e| ConnectorError::Config(e.to_string()))
}

#[derive(Debug)]
struct ValuesProvider {
    batch: Option<RecordBatch>,
}

const SPLIT: &str = "values";

impl SourceProvider for ValuesProvider {
    fn enumerator(&self) -> eddy_operators::Result<Box<dyn SplitEnumerator>> {
        Ok(Box::new(OneSplit))
    }

    fn reader(&self) -> eddy_operators::Result<Box<dyn SourceReader>> {
        Ok(Box::new(ValuesReader {
            batch: self.batch.clone(),
            split: None,
        }))
    }

    fn max_parallelism(&self) -> Option<usize> {
        Some(1)
    }
}

struct OneSplit;

impl SplitEnumerator for OneSplit {
    fn list(&mut self) -> eddy_operators::Result<Vec<Split>> {
        Ok(vec![Split {
            id: SPLIT.into(),
            position: Vec::new(),
            size: None,
        }])
    }
}

/// Emits the rows once; its position says whether it has (`[1]`), so a
/// restored job does not emit them again.
struct ValuesReader {
    batch: Option<RecordBatch>,
    split: Option<usize>,
}

impl SourceReader for ValuesReader {
    fn name(&self) -> String {
        "values".into()
    }

    fn add_split(&mut self, split: usize, assigned: Split) -> eddy_operators::Result<()> {
        if assigned.position == [1] {
            self.batch = None;
        }
        self.split = Some(split);
        Ok(())
    }

    fn poll(&mut self) -> eddy_operators::Result<Poll> {
        let Some(split) = self.split else {
            return Ok(Poll::Pending);
        };
        Ok(match self.batch.take() {
            Some(batch) => Poll::Batch(split, batch),
            None => {
                self.split = None;
                Poll::Finished(split)
            }
        })
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        let done = u8::from(self.batch.is_none());
        self.split.map(|s| (s, vec![done])).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use eddy_operators::source::read_all;

    use super::*;

    #[test]
    fn rows_written_into_the_options_are_read_back() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec!["x", "y"])),
            ],
        )
        .unwrap();
        let text = encode_rows(&batch).unwrap();
        let options = Options::new([(ROWS.to_string(), text)]);
        let formats = crate::format::FormatRegistry::default();
        let ctx = ConnectorContext {
            options: &options,
            name: "t",
            schema: &schema,
            primary_key: &[],
            formats: &formats,
        };
        let provider = ValuesConnector.source(&ctx).unwrap();
        let read = read_all(provider.as_ref()).unwrap();
        assert_eq!(read, vec![batch]);
    }
}
