//! `count_char(s, c)`: the Nexmark benchmark's user-defined function (q14),
//! shipped as a DataFusion `ScalarUDF` and registered with
//! `Session::register_function`, the way an embedding program registers its
//! own. Semantics as the benchmark's Java UDF: the number of times the first
//! character of `c` occurs in `s`; a NULL `s` counts 0. A NULL or empty `c`
//! gives NULL (the Java UDF would throw).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Builder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::exec_err;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
struct CountChar {
    signature: Signature,
}

/// The function, ready to register.
pub fn count_char() -> ScalarUDF {
    ScalarUDF::new_from_impl(CountChar {
        signature: Signature::exact(vec![DataType::Utf8, DataType::Utf8], Volatility::Immutable),
    })
}

impl ScalarUDFImpl for CountChar {
    fn name(&self) -> &str {
        "count_char"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [texts, chars] = arrays.as_slice() else {
            return exec_err!("count_char takes two arguments");
        };
        let (Some(texts), Some(chars)) =
            (texts.as_string_opt::<i32>(), chars.as_string_opt::<i32>())
        else {
            return exec_err!("count_char takes (STRING, STRING)");
        };
        let mut out = Int64Builder::with_capacity(texts.len());
        for i in 0..texts.len() {
            let wanted = (!chars.is_null(i))
                .then(|| chars.value(i).chars().next())
                .flatten();
            match wanted {
                None => out.append_null(),
                Some(_) if texts.is_null(i) => out.append_value(0),
                Some(c) => {
                    let text = texts.value(i);
                    let n = if c.is_ascii() {
                        text.bytes().filter(|&b| b == c as u8).count()
                    } else {
                        text.chars().filter(|&x| x == c).count()
                    };
                    out.append_value(n as i64);
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Every user-defined function the Nexmark queries call.
pub fn functions() -> Vec<ScalarUDF> {
    vec![count_char()]
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::common::config::ConfigOptions;

    use super::*;

    #[test]
    fn counts_the_first_character_of_the_second_argument() {
        let texts: ArrayRef = Arc::new(StringArray::from(vec![
            Some("abcabcc"),
            Some("abc"),
            None,
            Some("zürich ü"),
            Some("abc"),
        ]));
        let chars: ArrayRef = Arc::new(StringArray::from(vec![
            Some("c"),
            Some("xc"),
            Some("c"),
            Some("ü"),
            None,
        ]));
        let out = count_char()
            .invoke_with_args(ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(texts), ColumnarValue::Array(chars)],
                arg_fields: vec![
                    Arc::new(Field::new("s", DataType::Utf8, true)),
                    Arc::new(Field::new("c", DataType::Utf8, true)),
                ],
                number_rows: 5,
                return_field: Arc::new(Field::new("n", DataType::Int64, true)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap()
            .into_array(5)
            .unwrap();
        let want = Int64Array::from(vec![Some(3), Some(0), Some(0), Some(2), None]);
        assert_eq!(
            out.as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
            &want
        );
    }
}
