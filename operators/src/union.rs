//! `UNION ALL`: the rows of every input, as they come.
//!
//! The planner casts each input to the union's column types first, so a
//! batch only takes the output schema's names. The task merges the inputs'
//! watermarks (the minimum of those not idle or ended) and aligns their
//! barriers, as for any operator with several inputs.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::Result;
use crate::operator::{Collector, Operator};

/// Passes on the batches of all its inputs under one schema.
#[derive(Debug)]
pub struct UnionOperator {
    schema: SchemaRef,
}

impl UnionOperator {
    pub fn new(schema: SchemaRef) -> Self {
        Self { schema }
    }
}

impl Operator for UnionOperator {
    fn name(&self) -> String {
        "Union".into()
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        if batch.num_rows() > 0 {
            out.collect(RecordBatch::try_new(
                self.schema.clone(),
                batch.columns().to_vec(),
            )?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use eddy_state::MemoryBackend;

    use super::*;
    use crate::message::Message;
    use crate::runtime::run_operator_harness;

    fn batch(name: &str, values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    #[test]
    fn every_input_row_comes_out_once_under_the_union_names() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let op = UnionOperator::new(schema.clone());
        let out = run_operator_harness(
            Box::new(op),
            Arc::new(MemoryBackend::default()),
            vec![
                vec![
                    Message::Data(batch("a", &[1, 2])),
                    Message::Watermark(10),
                    Message::Data(batch("a", &[3])),
                    Message::EndOfStream,
                ],
                vec![
                    Message::Data(batch("b", &[4])),
                    Message::Watermark(5),
                    Message::EndOfStream,
                ],
            ],
        )
        .unwrap();
        let mut values = Vec::new();
        for m in &out {
            if let Message::Data(b) = m {
                assert_eq!(b.schema(), schema);
                let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                values.extend(col.values().iter().copied());
            }
        }
        values.sort_unstable();
        assert_eq!(values, [1, 2, 3, 4]);
    }
}
