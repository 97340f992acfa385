//! The terminal sink: rows as a table that grows as results arrive, or as
//! JSON lines. At-least-once: what was printed stays printed.

use std::io::Write;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_operators::{DeliveryGuarantee, OperatorError, Sink, SinkProvider};

use crate::format::{Encoder, Format, JsonFormat};
use crate::options::{OptionDecl, OptionType, Options};
use crate::registry::{Connector, ConnectorContext};
use crate::{ConnectorError, Result};

/// `connector = 'stdout'`: rows on the terminal (Flink's `print` is
/// [`crate::print`]).
#[derive(Debug)]
pub struct StdoutConnector;

impl Connector for StdoutConnector {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn help(&self) -> &'static str {
        "the terminal: rows as a table that grows as results arrive, or as JSON lines; at-least-once"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![OptionDecl::optional(
            "format",
            OptionType::OneOf(&["table", "json"]),
            "table",
            "a table, or one JSON object per line",
        )]
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn sink(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SinkProvider>> {
        Ok(Arc::new(StdoutProvider {
            format: StdoutFormat::parse(ctx.options.get("format"))?,
            schema: ctx.schema.clone(),
        }))
    }

    fn guarantee(&self, _options: &Options) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

#[derive(Debug)]
struct StdoutProvider {
    format: StdoutFormat,
    schema: SchemaRef,
}

impl SinkProvider for StdoutProvider {
    fn writer(&self) -> eddy_operators::Result<Box<dyn Sink>> {
        Ok(Box::new(StdoutSink::new(self.format, self.schema.clone())))
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdoutFormat {
    Table,
    Json,
}

impl StdoutFormat {
    pub fn parse(value: Option<&str>) -> Result<Self> {
        match value.unwrap_or("table") {
            "table" => Ok(StdoutFormat::Table),
            "json" => Ok(StdoutFormat::Json),
            other => Err(ConnectorError::Config(format!(
                "unknown stdout format '{other}' (expected 'table' or 'json')"
            ))),
        }
    }
}

#[derive(Debug)]
pub struct StdoutSink {
    format: StdoutFormat,
    schema: SchemaRef,
    widths: Option<Vec<usize>>,
    rows: usize,
    json: Option<Box<dyn Encoder>>,
}

const MAX_WIDTH: usize = 60;

impl StdoutSink {
    pub fn new(format: StdoutFormat, schema: SchemaRef) -> Self {
        Self {
            format,
            // What is printed: a changelog shows `op`, not `_op`.
            schema: crate::readable_schema(&schema),
            widths: None,
            rows: 0,
            json: JsonFormat
                .encoder(&schema, &Options::default())
                .ok()
                .flatten(),
        }
    }

    fn border(widths: &[usize]) -> String {
        let parts: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
        format!("+{}+", parts.join("+"))
    }

    fn line(cells: &[String], widths: &[usize]) -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!(" {c:<w$} "))
            .collect();
        format!("|{}|", parts.join("|"))
    }

    /// The table's header, the first time only; column widths come from
    /// the header and the first rows.
    fn header_once(&mut self, cells: &[Vec<String>]) -> String {
        if self.widths.is_some() {
            return String::new();
        }
        let headers: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                if f.name() == "_op" {
                    "op".to_string()
                } else {
                    f.name().clone()
                }
            })
            .collect();
        let widths: Vec<usize> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([h.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let text = format!(
            "{}\n{}\n{}\n",
            Self::border(&widths),
            Self::line(&headers, &widths),
            Self::border(&widths)
        );
        self.widths = Some(widths);
        text
    }

    fn render_table(
        &mut self,
        batch: &RecordBatch,
    ) -> Result<String, datafusion::arrow::error::ArrowError> {
        let options = FormatOptions::default().with_null("NULL");
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let mut cells = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let mut line = Vec::with_capacity(formatters.len());
            for f in &formatters {
                let mut s = f.value(row).to_string();
                if s.chars().count() > MAX_WIDTH {
                    s = s.chars().take(MAX_WIDTH - 1).collect::<String>() + "…";
                }
                line.push(s);
            }
            cells.push(line);
        }
        let mut out = self.header_once(&cells);
        let widths = self.widths.as_deref().unwrap_or_default();
        for row in &cells {
            out += &Self::line(row, widths);
            out.push('\n');
        }
        Ok(out)
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> String {
        "stdout".into()
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> eddy_operators::Result<()> {
        self.rows += batch.num_rows();
        let mut stdout = std::io::stdout().lock();
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::BrokenPipe => OperatorError::OutputClosed,
            _ => OperatorError::Connector(format!("writing to stdout: {e}")),
        };
        match self.format {
            StdoutFormat::Table => {
                let batch = &crate::readable_changelog(batch)?;
                let text = self.render_table(batch)?;
                stdout.write_all(text.as_bytes()).map_err(io)?;
            }
            StdoutFormat::Json => {
                let mut bytes = Vec::new();
                if let Some(json) = self.json.as_mut() {
                    json.encode(batch, &mut bytes)?;
                }
                stdout.write_all(&bytes).map_err(io)?;
            }
        }
        stdout.flush().map_err(io)
    }

    fn finish(&mut self) -> eddy_operators::Result<()> {
        if self.format == StdoutFormat::Table {
            let header = self.header_once(&[]);
            let widths = self.widths.clone().unwrap_or_default();
            let plural = if self.rows == 1 { "" } else { "s" };
            let mut stdout = std::io::stdout().lock();
            let _ = write!(
                stdout,
                "{header}{}\n({} row{plural})\n",
                Self::border(&widths),
                self.rows
            );
            let _ = stdout.flush();
        }
        Ok(())
    }
}
