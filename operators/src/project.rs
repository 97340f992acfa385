//! Project/filter: evaluates DataFusion physical expressions batch at a time.

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::PhysicalExpr;

use crate::operator::{Collector, Operator};
use crate::{OperatorError, Result};

/// `SELECT exprs FROM input WHERE filter`, one batch at a time.
#[derive(Debug)]
pub struct ProjectOperator {
    filter: Option<Arc<dyn PhysicalExpr>>,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectOperator {
    /// `schema` is the output schema, one field per expression.
    pub fn try_new(
        filter: Option<Arc<dyn PhysicalExpr>>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<Self> {
        if exprs.len() != schema.fields().len() {
            return Err(OperatorError::Internal(format!(
                "projection of {} expressions into {} fields",
                exprs.len(),
                schema.fields().len()
            )));
        }
        Ok(Self {
            filter,
            exprs,
            schema,
        })
    }
}

impl Operator for ProjectOperator {
    fn name(&self) -> String {
        if self.filter.is_some() {
            "Filter+Project".into()
        } else {
            "Project".into()
        }
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let batch = match &self.filter {
            Some(filter) => {
                let mask = filter.evaluate(&batch)?.into_array(batch.num_rows())?;
                let mask = mask.as_boolean_opt().ok_or_else(|| {
                    OperatorError::Internal(format!(
                        "filter produced {} instead of BOOLEAN",
                        mask.data_type()
                    ))
                })?;
                // Rows whose predicate is NULL are dropped, as in SQL.
                filter_record_batch(&batch, mask)?
            }
            None => batch,
        };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let columns = self
            .exprs
            .iter()
            .map(|e| {
                e.evaluate(&batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        // No columns (what `COUNT(*)` reads): the batch keeps its row count.
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        out.collect(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?);
        Ok(())
    }
}
