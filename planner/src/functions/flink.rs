//! Flink's string and time functions that DataFusion lacks, or spells with
//! other semantics: `DATE_FORMAT` with Java date patterns, `REGEXP_EXTRACT`
//! and `SPLIT_INDEX`. Each follows Flink's documented behaviour, NULLs
//! included (see each type).

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::DateTime;
use chrono::format::{Item, StrftimeItems};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{DataFusionError, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;

type DfResult<T> = datafusion::error::Result<T>;

/// Flink's aggregate functions that DataFusion has under another name.
pub const AGGREGATE_ALIASES: &[(&str, &str)] = &[("listagg", "string_agg")];

/// Flink's built-in functions (from its documentation's list) that Eddy
/// does not have: calling one is `function 'X' is not supported yet`, not
/// an unknown function.
pub const NOT_SUPPORTED: &[&str] = &[
    "bin",
    "collect",
    "convert_tz",
    "current_database",
    "current_watermark",
    "decode",
    "element",
    "encode",
    "from_base64",
    "hash_code",
    "is_alpha",
    "is_decimal",
    "is_digit",
    "json_array",
    "json_arrayagg",
    "json_exists",
    "json_object",
    "json_objectagg",
    "json_query",
    "json_string",
    "json_value",
    "map_entries",
    "map_from_arrays",
    "parse_url",
    "print",
    "regexp",
    "str_to_map",
    "timestampadd",
    "timestampdiff",
    "to_base64",
    "truncate",
];

/// The Flink functions, to register by their names. Each coerces its own
/// arguments (`coerce_types`).
pub fn all() -> Vec<Arc<ScalarUDF>> {
    let signature = || Signature::user_defined(Volatility::Immutable);
    vec![
        Arc::new(ScalarUDF::new_from_impl(DateFormat {
            signature: signature(),
        })),
        Arc::new(ScalarUDF::new_from_impl(RegexpExtract {
            signature: signature(),
        })),
        Arc::new(ScalarUDF::new_from_impl(SplitIndex {
            signature: signature(),
        })),
    ]
}

fn is_string(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer() || *t == DataType::Null
}

/// The arguments as plain `Utf8` / `Int64` / timestamp arrays of the batch's
/// length (a constant argument is repeated; the compiled pattern caches
/// below make that cheap).
fn arrays(args: &ScalarFunctionArgs) -> DfResult<Vec<ArrayRef>> {
    ColumnarValue::values_to_arrays(&args.args)
}

fn strings(a: &ArrayRef) -> DfResult<&StringArray> {
    a.as_string_opt::<i32>()
        .ok_or_else(|| DataFusionError::Internal(format!("expected Utf8, got {}", a.data_type())))
}

fn integers(a: &ArrayRef) -> DfResult<&Int64Array> {
    a.as_primitive_opt()
        .ok_or_else(|| DataFusionError::Internal(format!("expected Int64, got {}", a.data_type())))
}

/// A one-entry cache: the arguments of these functions are almost always
/// constants, so the last compiled pattern is nearly always the next one.
struct LastCompiled<T> {
    last: Option<(String, T)>,
}

impl<T> LastCompiled<T> {
    fn new() -> Self {
        Self { last: None }
    }

    fn get(&mut self, text: &str, compile: impl Fn(&str) -> DfResult<T>) -> DfResult<&T> {
        if self.last.as_ref().is_none_or(|(t, _)| t != text) {
            self.last = Some((text.to_string(), compile(text)?));
        }
        match &self.last {
            Some((_, value)) => Ok(value),
            None => unreachable!("set above"),
        }
    }
}

// ---------------------------------------------------------------------------
// DATE_FORMAT

/// `DATE_FORMAT(timestamp, pattern)`: the timestamp as text, in a Java
/// date pattern (`yyyy-MM-dd HH:mm:ss`), as Flink writes it. A string
/// argument is read as a timestamp first. NULL in, NULL out.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DateFormat {
    signature: Signature,
}

/// The timestamp type DATE_FORMAT computes on: microseconds cover every
/// pattern's precision and ±290,000 years.
const MICROS: DataType = DataType::Timestamp(TimeUnit::Microsecond, None);

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn coerce_types(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        match args {
            [t, p]
                if (matches!(
                    t,
                    DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
                ) || is_string(t))
                    && is_string(p) =>
            {
                Ok(vec![MICROS, DataType::Utf8])
            }
            _ => plan_err!(
                "DATE_FORMAT takes (TIMESTAMP, STRING), got ({})",
                type_list(args)
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = arrays(&args)?;
        let [times, patterns] = arrays.as_slice() else {
            return exec_err!("DATE_FORMAT takes two arguments");
        };
        let times = cast(times, &MICROS)?;
        let times: &TimestampMicrosecondArray = times.as_primitive();
        let patterns = strings(patterns)?;
        let mut cache = LastCompiled::new();
        let mut out = StringBuilder::with_capacity(times.len(), times.len() * 16);
        for i in 0..times.len() {
            if times.is_null(i) || patterns.is_null(i) {
                out.append_null();
                continue;
            }
            let items = cache.get(patterns.value(i), |p| {
                let strftime = java_date_pattern(p).map_err(DataFusionError::Execution)?;
                StrftimeItems::new(&strftime)
                    .parse_to_owned()
                    .map_err(|e| DataFusionError::Execution(e.to_string()))
            })?;
            let Some(at) = DateTime::from_timestamp_micros(times.value(i)) else {
                return exec_err!("DATE_FORMAT: timestamp {} is out of range", times.value(i));
            };
            write!(out, "{}", at.naive_utc().format_with_items(items.iter()))
                .map_err(|e| DataFusionError::Execution(e.to_string()))?;
            out.append_value("");
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Translates a Java date pattern (`SimpleDateFormat` / `DateTimeFormatter`
/// letters, as Flink's DATE_FORMAT takes) to a chrono strftime string.
/// Letters with no strftime counterpart are an error, never a silent
/// misprint.
pub fn java_date_pattern(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        if c == '\'' {
            // '' is a quote; 'text' is literal text ('' inside is a quote).
            if run >= 2 && run % 2 == 0 {
                out.push_str(&"'".repeat(run / 2));
                i += run;
                continue;
            }
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return Err(format!("unterminated quote in date pattern '{pattern}'")),
                    Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                        out.push('\'');
                        j += 2;
                    }
                    Some('\'') => break,
                    Some('%') => {
                        out.push_str("%%");
                        j += 1;
                    }
                    Some(&x) => {
                        out.push(x);
                        j += 1;
                    }
                }
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            if c == '%' {
                out.push_str("%%");
            } else {
                out.push(c);
            }
            i += 1;
            continue;
        }
        let spec = match (c, run) {
            ('y' | 'u', 2) => "%y",
            ('y' | 'u', _) => "%Y",
            ('M' | 'L', 1) => "%-m",
            ('M' | 'L', 2) => "%m",
            ('M' | 'L', 3) => "%b",
            ('M' | 'L', _) => "%B",
            ('d', 1) => "%-d",
            ('d', 2) => "%d",
            ('D', 1 | 2) => "%-j",
            ('D', 3) => "%j",
            ('H', 1) => "%-H",
            ('H', 2) => "%H",
            ('h', 1) => "%-I",
            ('h', 2) => "%I",
            ('m', 1) => "%-M",
            ('m', 2) => "%M",
            ('s', 1) => "%-S",
            ('s', 2) => "%S",
            ('S', 3) => "%3f",
            ('S', 6) => "%6f",
            ('S', 9) => "%9f",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('a', 1) => "%p",
            ('Z', 1..=3) => "%z",
            _ => {
                return Err(format!(
                    "the date pattern {} '{}' in '{pattern}' {} not supported (use y, M, d, D, H, h, m, s, SSS, E, a, Z; quote literal text as 'text')",
                    if run > 1 { "letters" } else { "letter" },
                    c.to_string().repeat(run),
                    if run > 1 { "are" } else { "is" },
                ));
            }
        };
        out.push_str(spec);
        i += run;
    }
    // chrono accepts what we produce; check anyway, so that a pattern that
    // passes here can never fail per row.
    if StrftimeItems::new(&out).any(|item| matches!(item, Item::Error)) {
        return Err(format!("cannot translate the date pattern '{pattern}'"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// REGEXP_EXTRACT

/// `REGEXP_EXTRACT(string, regex [, index])`: group `index` (0, the
/// default, is the whole match) of the regex's first match in the string;
/// NULL when nothing matches, the group did not take part in the match,
/// the index is negative or beyond the regex's groups, or any argument is
/// NULL. The regex syntax is Rust's `regex` crate (no look-around or
/// back-references, unlike Java's).
#[derive(Debug, PartialEq, Eq, Hash)]
struct RegexpExtract {
    signature: Signature,
}

/// Compiles a regex, with the message users see for a bad one.
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("invalid regular expression '{pattern}': {e}"))
}

impl ScalarUDFImpl for RegexpExtract {
    fn name(&self) -> &str {
        "regexp_extract"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn coerce_types(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        match args {
            [s, r] if is_string(s) && is_string(r) => Ok(vec![DataType::Utf8, DataType::Utf8]),
            [s, r, i] if is_string(s) && is_string(r) && is_integer(i) => {
                Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64])
            }
            _ => plan_err!(
                "REGEXP_EXTRACT takes (STRING, STRING [, INT]), got ({})",
                type_list(args)
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = arrays(&args)?;
        let (texts, regexes) = match arrays.as_slice() {
            [s, r] | [s, r, _] => (strings(s)?, strings(r)?),
            _ => return exec_err!("REGEXP_EXTRACT takes two or three arguments"),
        };
        let indexes = arrays.get(2).map(integers).transpose()?;
        let mut cache = LastCompiled::new();
        let mut out = StringBuilder::with_capacity(texts.len(), texts.len() * 8);
        for i in 0..texts.len() {
            let index = match indexes {
                Some(ix) if ix.is_null(i) => None,
                Some(ix) => usize::try_from(ix.value(i)).ok(),
                None => Some(0),
            };
            let (Some(index), false, false) = (index, texts.is_null(i), regexes.is_null(i)) else {
                out.append_null();
                continue;
            };
            let regex = cache.get(regexes.value(i), |p| {
                compile_regex(p).map_err(DataFusionError::Execution)
            })?;
            let group = regex
                .captures(texts.value(i))
                .and_then(|c| c.get(index))
                .map(|m| m.as_str());
            out.append_option(group);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

// ---------------------------------------------------------------------------
// SPLIT_INDEX

/// `SPLIT_INDEX(string, separator, index)`: the `index`-th (from 0) piece
/// of the string split at every occurrence of the separator (empty pieces
/// kept; an empty separator splits at whitespace). NULL when the index is
/// negative or beyond the pieces, the string is empty, or any argument is
/// NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SplitIndex {
    signature: Signature,
}

fn split_index<'a>(text: &'a str, separator: &str, index: usize) -> Option<&'a str> {
    if text.is_empty() {
        return None;
    }
    if separator.is_empty() {
        text.split(char::is_whitespace).nth(index)
    } else {
        text.split(separator).nth(index)
    }
}

impl ScalarUDFImpl for SplitIndex {
    fn name(&self) -> &str {
        "split_index"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn coerce_types(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        match args {
            [s, d, i] if is_string(s) && is_string(d) && is_integer(i) => {
                Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64])
            }
            _ => plan_err!(
                "SPLIT_INDEX takes (STRING, STRING, INT), got ({})",
                type_list(args)
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = arrays(&args)?;
        let [texts, separators, indexes] = arrays.as_slice() else {
            return exec_err!("SPLIT_INDEX takes three arguments");
        };
        let (texts, separators, indexes) =
            (strings(texts)?, strings(separators)?, integers(indexes)?);
        let mut out = StringBuilder::with_capacity(texts.len(), texts.len() * 8);
        for i in 0..texts.len() {
            if texts.is_null(i) || separators.is_null(i) || indexes.is_null(i) {
                out.append_null();
                continue;
            }
            let piece = usize::try_from(indexes.value(i))
                .ok()
                .and_then(|ix| split_index(texts.value(i), separators.value(i), ix));
            out.append_option(piece);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

fn type_list(args: &[DataType]) -> String {
    args.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
