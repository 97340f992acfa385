//! SQL names of Arrow types, as Flink spells them (DESCRIBE, messages).

use datafusion::arrow::datatypes::{DataType, TimeUnit};

/// Flink's name for the SQL type of `t`: `BIGINT`, `STRING`,
/// `TIMESTAMP(3)`, `ROW<a INT, b STRING>`...
pub fn sql_name(t: &DataType) -> String {
    match t {
        DataType::Null => "NULL".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            format!("{t} (unsigned)")
        }
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Timestamp(unit, zone) => {
            let p = match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                TimeUnit::Microsecond => 6,
                TimeUnit::Nanosecond => 9,
            };
            match zone {
                None => format!("TIMESTAMP({p})"),
                Some(_) => format!("TIMESTAMP_LTZ({p})"),
            }
        }
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL".into(),
        DataType::Struct(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", f.name(), sql_name(f.data_type())))
                .collect();
            format!("ROW<{}>", fields.join(", "))
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("ARRAY<{}>", sql_name(f.data_type()))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP<{}, {}>",
                sql_name(kv[0].data_type()),
                sql_name(kv[1].data_type())
            ),
            other => format!("MAP<{other}>"),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::Field;

    use super::*;

    #[test]
    fn flink_spellings() {
        let row = DataType::Struct(
            vec![
                Field::new("id", DataType::Int64, true),
                Field::new("tags", DataType::new_list(DataType::Utf8, true), true),
            ]
            .into(),
        );
        assert_eq!(sql_name(&row), "ROW<id BIGINT, tags ARRAY<STRING>>");
        assert_eq!(
            sql_name(&DataType::Timestamp(TimeUnit::Millisecond, None)),
            "TIMESTAMP(3)"
        );
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")));
        assert_eq!(sql_name(&ts), "TIMESTAMP_LTZ(6)");
    }
}
