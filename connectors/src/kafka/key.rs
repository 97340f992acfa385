//! Record keys, as Flink's Kafka connector declares them: `key.fields`
//! (the columns that form the key, `;`-separated), `key.format` (how they
//! are encoded) and `value.fields-include` (`ALL`: the value holds every
//! column, key columns too; `EXCEPT_KEY`: only the others, and a source
//! reads the key columns from the key).

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::option_error;
use crate::Result;
use crate::format::{Format, FormatRegistry};
use crate::options::Options;

pub(crate) const KEY_FORMAT: &str = "key.format";
pub(crate) const KEY_FIELDS: &str = "key.fields";
pub(crate) const VALUE_FIELDS_INCLUDE: &str = "value.fields-include";

/// How a table's rows map to record keys and values.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The key's columns, in key order (empty: records have no key).
    pub key: Vec<usize>,
    pub key_format: Option<Arc<dyn Format>>,
    /// The value's columns, in table order.
    pub value: Vec<usize>,
}

impl Layout {
    pub(crate) fn from_options(
        options: &Options,
        schema: &SchemaRef,
        formats: &FormatRegistry,
    ) -> Result<Self> {
        // Metadata columns are in neither the key nor the value.
        let all: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| crate::registry::metadata_key(schema.field(i)).is_none())
            .collect();
        let except_key = options
            .get(VALUE_FIELDS_INCLUDE)
            .is_some_and(|v| v.eq_ignore_ascii_case("EXCEPT_KEY"));
        let Some(fields) = options.get(KEY_FIELDS) else {
            if options.is_set(KEY_FORMAT) {
                return Err(option_error(KEY_FORMAT, "'key.format' needs 'key.fields'"));
            }
            if except_key {
                return Err(option_error(
                    VALUE_FIELDS_INCLUDE,
                    "'EXCEPT_KEY' needs 'key.fields'",
                ));
            }
            return Ok(Self {
                key: Vec::new(),
                key_format: None,
                value: all,
            });
        };
        let key = fields
            .split(';')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|name| {
                schema
                    .fields()
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        let columns: Vec<&str> =
                            schema.fields().iter().map(|f| f.name().as_str()).collect();
                        option_error(
                            KEY_FIELDS,
                            format!("'{name}' is not a column (columns: {})", columns.join(", ")),
                        )
                    })
            })
            .collect::<Result<Vec<usize>>>()?;
        let name = options
            .get(KEY_FORMAT)
            .ok_or_else(|| option_error(KEY_FIELDS, "'key.fields' needs 'key.format'"))?;
        let key_format = formats
            .get(name)
            .cloned()
            .ok_or_else(|| option_error(KEY_FORMAT, format!("unknown format '{name}'")))?;
        let value = match except_key {
            true => all.into_iter().filter(|i| !key.contains(i)).collect(),
            false => all,
        };
        Ok(Self {
            key,
            key_format: Some(key_format),
            value,
        })
    }

    /// A source reads the keys: some key column is not in the value.
    pub(crate) fn reads_keys(&self) -> bool {
        self.key.iter().any(|k| !self.value.contains(k))
    }
}

/// `schema` cut to `columns`, in that order.
pub(crate) fn project_schema(schema: &SchemaRef, columns: &[usize]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|&i| schema.field(i).clone())
            .collect::<Vec<_>>(),
    ))
}

/// `batch` cut to `columns`.
pub(crate) fn project(batch: &RecordBatch, columns: &[usize]) -> Result<RecordBatch> {
    Ok(batch.project(columns)?)
}
