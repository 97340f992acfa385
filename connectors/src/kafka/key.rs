//! Record keys, as Flink's Kafka connector declares them: `key.fields`
//! (the columns that form the key, `;`-separated), `key.format` (how they
//! are encoded) and `value.fields-include` (`ALL`: the value holds every
//! column, key columns too; `EXCEPT_KEY`: only the others, and a source
//! reads the key columns from the key).

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use eddy_operators::updating::OP_COLUMN;

use super::option_error;
use crate::format::{Format, FormatRegistry};
use crate::options::Options;
use crate::{ConnectorError, Result};

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
    /// A `kafka` table's: the key is `key.fields`, if given.
    pub(crate) fn from_options(
        options: &Options,
        schema: &SchemaRef,
        formats: &FormatRegistry,
    ) -> Result<Self> {
        let Some(fields) = options.get(KEY_FIELDS) else {
            if options.is_set(KEY_FORMAT) {
                return Err(option_error(KEY_FORMAT, "'key.format' needs 'key.fields'"));
            }
            if except_key(options) {
                return Err(option_error(
                    VALUE_FIELDS_INCLUDE,
                    "'EXCEPT_KEY' needs 'key.fields'",
                ));
            }
            return Ok(Self {
                key: Vec::new(),
                key_format: None,
                value: data_columns(schema),
            });
        };
        let names: Vec<&str> = fields
            .split(';')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        let key = names
            .iter()
            .map(|name| column(schema, name))
            .collect::<Result<Vec<usize>>>()?;
        Self::keyed(options, schema, formats, key, KEY_FIELDS)
    }

    /// An `upsert-kafka` table's: the key is the primary key.
    pub(crate) fn upsert(
        options: &Options,
        schema: &SchemaRef,
        formats: &FormatRegistry,
        primary_key: &[String],
    ) -> Result<Self> {
        if primary_key.is_empty() {
            return Err(ConnectorError::Config(
                "'upsert-kafka' keys its records by the table's PRIMARY KEY (...) NOT ENFORCED; declare one".into(),
            ));
        }
        let key = primary_key
            .iter()
            .map(|name| column(schema, name))
            .collect::<Result<Vec<usize>>>()?;
        let mut layout = Self::keyed(options, schema, formats, key, KEY_FORMAT)?;
        // Its changes are the records themselves (a tombstone deletes).
        layout
            .value
            .retain(|&i| schema.field(i).name() != OP_COLUMN);
        Ok(layout)
    }

    /// A layout with `key` as the key's columns, in `key.format`.
    fn keyed(
        options: &Options,
        schema: &SchemaRef,
        formats: &FormatRegistry,
        key: Vec<usize>,
        asked_by: &str,
    ) -> Result<Self> {
        let name = options
            .get(KEY_FORMAT)
            .ok_or_else(|| option_error(asked_by, format!("'{asked_by}' needs 'key.format'")))?;
        let key_format = formats
            .get(name)
            .cloned()
            .ok_or_else(|| option_error(KEY_FORMAT, format!("unknown format '{name}'")))?;
        let all = data_columns(schema);
        let value = match except_key(options) {
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

fn except_key(options: &Options) -> bool {
    options
        .get(VALUE_FIELDS_INCLUDE)
        .is_some_and(|v| v.eq_ignore_ascii_case("EXCEPT_KEY"))
}

/// The columns the records carry: not metadata. A changelog's `_op` is
/// the value format's (Debezium's `op`), unless the table is an upsert
/// one (see [`Layout::upsert`]).
fn data_columns(schema: &SchemaRef) -> Vec<usize> {
    (0..schema.fields().len())
        .filter(|&i| crate::registry::metadata_key(schema.field(i)).is_none())
        .collect()
}

/// The index of column `name` (any case), or an error listing them.
fn column(schema: &SchemaRef, name: &str) -> Result<usize> {
    schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            option_error(
                KEY_FIELDS,
                format!("'{name}' is not a column (columns: {})", columns.join(", ")),
            )
        })
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
