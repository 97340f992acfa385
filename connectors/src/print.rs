//! `connector = 'print'` (Flink's): each row on standard output (or
//! error) as Flink prints it, `+I[1, Alice, 2024-01-01T00:00:01]`, its
//! change kind first (`+I`, `-U`, `+U`, `-D`), after `'print-identifier'>`
//! when one is given. At-least-once: what was printed stays printed.

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Int8Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_operators::updating::{OP_COLUMN, op_name};
use eddy_operators::{DeliveryGuarantee, OperatorError, Sink, SinkProvider};

use crate::Result;
use crate::options::{OptionDecl, OptionType, Options};
use crate::registry::{Connector, ConnectorContext};

const IDENTIFIER: &str = "print-identifier";
const STANDARD_ERROR: &str = "standard-error";

#[derive(Debug)]
pub struct PrintConnector;

impl Connector for PrintConnector {
    fn name(&self) -> &'static str {
        "print"
    }

    fn help(&self) -> &'static str {
        "each row on standard output as Flink prints it (+I[...], -U[...]); at-least-once"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::unset(
                IDENTIFIER,
                OptionType::String,
                "a prefix for each line: `<identifier>> +I[...]`",
            ),
            OptionDecl::optional(
                STANDARD_ERROR,
                OptionType::Bool,
                "false",
                "print to standard error instead of standard output",
            ),
        ]
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn sink(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SinkProvider>> {
        Ok(Arc::new(PrintSink {
            prefix: ctx
                .options
                .get(IDENTIFIER)
                .map_or(String::new(), |id| format!("{id}> ")),
            stderr: ctx.options.bool(STANDARD_ERROR)?.unwrap_or(false),
            schema: ctx.schema.clone(),
        }))
    }

    fn guarantee(&self, _options: &Options) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

#[derive(Debug, Clone)]
pub struct PrintSink {
    prefix: String,
    stderr: bool,
    schema: SchemaRef,
}

impl SinkProvider for PrintSink {
    fn writer(&self) -> eddy_operators::Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

impl PrintSink {
    /// The lines of `batch`, each ending in `\n`.
    pub fn render(&self, batch: &RecordBatch) -> eddy_operators::Result<String> {
        let options = FormatOptions::default().with_null("null");
        let op = self.schema.index_of(OP_COLUMN).ok();
        let ops = op.and_then(|i| batch.column(i).as_primitive_opt::<Int8Type>().cloned());
        let formatters = batch
            .columns()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != op)
            .map(|(_, c)| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut out = String::new();
        for row in 0..batch.num_rows() {
            let kind = ops.as_ref().map_or("+I", |o| {
                if o.is_valid(row) {
                    op_name(o.value(row))
                } else {
                    "+I"
                }
            });
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            out.push_str(&format!("{}{kind}[{}]\n", self.prefix, cells.join(", ")));
        }
        Ok(out)
    }
}

impl Sink for PrintSink {
    fn name(&self) -> String {
        "print".into()
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> eddy_operators::Result<()> {
        let text = self.render(batch)?;
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::BrokenPipe => OperatorError::OutputClosed,
            _ => OperatorError::Connector(format!("print: {e}")),
        };
        if self.stderr {
            std::io::stderr()
                .lock()
                .write_all(text.as_bytes())
                .map_err(io)
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).map_err(io)?;
            out.flush().map_err(io)
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int8Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn rows_print_as_flink_prints_them() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new(OP_COLUMN, DataType::Int8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int8Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let sink = PrintSink {
            prefix: "q> ".into(),
            stderr: false,
            schema,
        };
        assert_eq!(
            sink.render(&batch).unwrap(),
            "q> -U[1, a]\nq> +U[null, b]\n"
        );
    }
}
