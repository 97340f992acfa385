//! Rows as SQL text. Every value is a quoted literal (`'42'`, `'a''b'`,
//! `'\x00ff'`), which PostgreSQL reads in the type of the column it goes
//! into, so an Eddy `BIGINT` fills an `integer`, `numeric` or `text`
//! column alike, and the server's own conversion checks the value. The
//! session runs with `standard_conforming_strings` (a backslash is itself)
//! and in UTC (a `TIMESTAMP` is UTC, as everywhere in Eddy).

use std::fmt::Write as _;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// Whether a column of this type can be written, as a literal.
pub(crate) fn writable(field: &Field) -> bool {
    use DataType::*;
    matches!(
        field.data_type(),
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float16
            | Float32
            | Float64
            | Decimal128(..)
            | Decimal256(..)
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
            | Date32
            | Date64
            | Timestamp(..)
            | Time32(_)
            | Time64(_)
    )
}

/// `"name"`: an identifier, quoted as SQL quotes it.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The literals of some columns of a batch.
pub(crate) struct Literals<'a> {
    columns: Vec<(&'a ArrayRef, ArrayFormatter<'a>, bool)>,
}

impl<'a> Literals<'a> {
    pub fn new(columns: impl IntoIterator<Item = &'a ArrayRef>) -> Result<Self, String> {
        let options = FormatOptions::default();
        let columns = columns
            .into_iter()
            .map(|c| {
                let binary = matches!(
                    c.data_type(),
                    DataType::Binary | DataType::LargeBinary | DataType::BinaryView
                );
                ArrayFormatter::try_new(c.as_ref(), &options)
                    .map(|f| (c, f, binary))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { columns })
    }

    /// Appends `('v1', 'v2', ...)` for `row` of the columns at `which`.
    pub fn tuple(&self, row: usize, which: &[usize], out: &mut String) {
        out.push('(');
        for (n, &i) in which.iter().enumerate() {
            if n > 0 {
                out.push_str(", ");
            }
            self.literal(i, row, out);
        }
        out.push(')');
    }

    fn literal(&self, column: usize, row: usize, out: &mut String) {
        let (array, formatter, binary) = &self.columns[column];
        if array.is_null(row) {
            out.push_str("NULL");
            return;
        }
        let mut text = String::new();
        // Writing to a String does not fail; a value the formatter
        // cannot show is left empty and the server refuses it.
        let _ = write!(text, "{}", formatter.value(row));
        out.push('\'');
        if *binary {
            out.push_str("\\x");
        }
        out.push_str(&text.replace('\'', "''"));
        out.push('\'');
    }
}

/// `INSERT INTO table (cols) VALUES rows` with, for an upsert, `ON
/// CONFLICT (key) DO UPDATE SET` every other column (or `DO NOTHING` when
/// every column is the key).
pub(crate) fn insert(
    table: &str,
    columns: &[String],
    key: &[usize],
    rows: &[&str],
    upsert: bool,
) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    sql.push_str(&rows.join(", "));
    if upsert {
        let keys: Vec<&str> = key.iter().map(|&k| columns[k].as_str()).collect();
        let others: Vec<String> = (0..columns.len())
            .filter(|i| !key.contains(i))
            .map(|i| format!("{c} = EXCLUDED.{c}", c = columns[i]))
            .collect();
        let _ = write!(sql, " ON CONFLICT ({}) DO ", keys.join(", "));
        match others.is_empty() {
            true => sql.push_str("NOTHING"),
            false => sql.push_str(&format!("UPDATE SET {}", others.join(", "))),
        }
    }
    sql
}

/// `DELETE FROM table WHERE (key) IN (keys)`.
pub(crate) fn delete(table: &str, columns: &[String], key: &[usize], keys: &[&str]) -> String {
    let names: Vec<&str> = key.iter().map(|&k| columns[k].as_str()).collect();
    format!(
        "DELETE FROM {table} WHERE ({}) IN ({})",
        names.join(", "),
        keys.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{BinaryArray, Int64Array, StringArray};

    use super::*;

    #[test]
    fn values_are_quoted_literals_and_quotes_are_doubled() {
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None]));
        let names: ArrayRef = Arc::new(StringArray::from(vec![Some("o'clock \\n"), Some("")]));
        let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![Some(&[0u8, 255][..]), None]));
        let literals = Literals::new([&ids, &names, &bytes]).unwrap();
        let mut out = String::new();
        literals.tuple(0, &[0, 1, 2], &mut out);
        assert_eq!(out, "('7', 'o''clock \\n', '\\x00ff')");
        out.clear();
        literals.tuple(1, &[2, 0], &mut out);
        assert_eq!(out, "(NULL, NULL)");
    }

    #[test]
    fn an_upsert_updates_the_other_columns_and_a_key_only_table_does_nothing() {
        let cols = ["\"k\"".to_string(), "\"n\"".to_string()];
        assert_eq!(
            insert("t", &cols, &[0], &["('1', '2')"], true),
            "INSERT INTO t (\"k\", \"n\") VALUES ('1', '2') ON CONFLICT (\"k\") DO UPDATE SET \"n\" = EXCLUDED.\"n\""
        );
        assert_eq!(
            insert("t", &cols, &[0, 1], &["('1', '2')", "('3', '4')"], true),
            "INSERT INTO t (\"k\", \"n\") VALUES ('1', '2'), ('3', '4') ON CONFLICT (\"k\", \"n\") DO NOTHING"
        );
        assert_eq!(
            delete("t", &cols, &[0], &["('1')", "('2')"]),
            "DELETE FROM t WHERE (\"k\") IN (('1'), ('2'))"
        );
    }
}
