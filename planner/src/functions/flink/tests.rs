//! Expected values are worked out by hand from Flink's documentation (and,
//! for SPLIT_INDEX, from commons-lang's `splitByWholeSeparatorPreserveAllTokens`,
//! which Flink calls).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};

use super::*;

fn udf(name: &str) -> Arc<ScalarUDF> {
    all()
        .into_iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

/// Calls the function as DataFusion would after coercion: arrays of the
/// coerced types.
fn call(name: &str, args: Vec<ArrayRef>) -> Vec<Option<String>> {
    let f = udf(name);
    let types: Vec<DataType> = args.iter().map(|a| a.data_type().clone()).collect();
    let coerced = f.coerce_types(&types).unwrap();
    let args: Vec<ArrayRef> = args
        .iter()
        .zip(&coerced)
        .map(|(a, t)| cast(a, t).unwrap())
        .collect();
    let rows = args[0].len();
    let arg_fields = args
        .iter()
        .map(|a| Arc::new(Field::new("a", a.data_type().clone(), true)))
        .collect();
    let out = f
        .invoke_with_args(ScalarFunctionArgs {
            args: args.into_iter().map(ColumnarValue::Array).collect(),
            arg_fields,
            number_rows: rows,
            return_field: Arc::new(Field::new("out", DataType::Utf8, true)),
            config_options: Arc::new(ConfigOptions::default()),
        })
        .unwrap()
        .into_array(rows)
        .unwrap();
    let out: &StringArray = out.as_string();
    (0..out.len())
        .map(|i| (!out.is_null(i)).then(|| out.value(i).to_string()))
        .collect()
}

fn texts(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn repeat(value: &str, n: usize) -> ArrayRef {
    texts(&vec![Some(value); n])
}

fn ints(values: &[Option<i64>]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

#[test]
fn java_date_patterns_translate_to_strftime() {
    let cases = [
        ("yyyy-MM-dd", "%Y-%m-%d"),
        ("HH:mm", "%H:%M"),
        ("yyyy-MM-dd'T'HH:mm:ss.SSS", "%Y-%m-%dT%H:%M:%S.%3f"),
        ("yy/M/d H:m:s", "%y/%-m/%-d %-H:%-M:%-S"),
        ("EEE, MMM d", "%a, %b %-d"),
        ("EEEE MMMM", "%A %B"),
        ("hh a", "%I %p"),
        ("DDD", "%j"),
        ("''", "'"),
        ("h 'o''clock'", "%-I o'clock"),
        ("100%", "100%%"),
    ];
    for (java, strftime) in cases {
        assert_eq!(java_date_pattern(java).as_deref(), Ok(strftime), "{java}");
    }
    for bad in ["QQ", "yyyy-ww", "'open", "SS", "G"] {
        let err = java_date_pattern(bad).unwrap_err();
        assert!(err.contains(bad.trim_start_matches('\'')), "{bad}: {err}");
    }
}

#[test]
fn date_format_formats_timestamps_with_java_patterns() {
    // 10^9 s after the epoch is 2001-09-09 01:46:40 UTC, a Sunday, the
    // 252nd day of the year (243 days in January to August, plus 9).
    let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
        Some(0),
        Some(1_000_000_000_123),
        None,
    ]));
    let cases = [
        (
            "yyyy-MM-dd HH:mm:ss.SSS",
            vec![
                Some("1970-01-01 00:00:00.000".to_string()),
                Some("2001-09-09 01:46:40.123".to_string()),
                None,
            ],
        ),
        (
            "yyyy-M-d",
            vec![Some("1970-1-1".into()), Some("2001-9-9".into()), None],
        ),
        (
            "EEE D hh a",
            vec![
                Some("Thu 1 12 AM".into()),
                Some("Sun 252 01 AM".into()),
                None,
            ],
        ),
    ];
    for (pattern, want) in cases {
        assert_eq!(
            call("date_format", vec![times.clone(), repeat(pattern, 3)]),
            want,
            "{pattern}"
        );
    }
    // A string is read as a timestamp first; a NULL pattern gives NULL.
    let got = call(
        "date_format",
        vec![
            texts(&[Some("2001-09-09 01:46:40"), Some("2001-09-09 01:46:40")]),
            texts(&[Some("HH:mm"), None]),
        ],
    );
    assert_eq!(got, vec![Some("01:46".to_string()), None]);
}

#[test]
fn regexp_extract_returns_the_group_of_the_first_match_or_null() {
    let url = "https://www.nexmark.com/abc/de_f/gh/item.htm?query=1&channel_id=1234";
    let q21 = "(&|^)channel_id=([^&]*)";
    let s = texts(&[
        Some("foothebar"),
        Some("foothebar"),
        Some("foothebar"),
        Some("foothebar"),
        Some("nothing here"),
        Some("a=1"),
        Some(url),
        None,
    ]);
    let r = texts(&[
        Some("foo(.*?)(bar)"),
        Some("foo(.*?)(bar)"),
        Some("foo(.*?)(bar)"),
        Some("foo(.*?)(bar)"),
        Some("foo(.*?)(bar)"),
        Some("(x)?a=(\\d)"),
        Some(q21),
        Some(q21),
    ]);
    let i = ints(&[
        Some(2),
        Some(0),
        Some(3),
        Some(-1),
        Some(1),
        Some(1),
        Some(2),
        Some(2),
    ]);
    assert_eq!(
        call("regexp_extract", vec![s.clone(), r.clone(), i]),
        vec![
            Some("bar".to_string()),
            Some("foothebar".to_string()),
            // Beyond the groups, a negative index, no match, a group that
            // took no part in the match, a NULL string: NULL.
            None,
            None,
            None,
            None,
            Some("1234".to_string()),
            None,
        ]
    );
    // Without an index, the whole match.
    assert_eq!(
        call(
            "regexp_extract",
            vec![texts(&[Some("x12y")]), texts(&[Some("[0-9]+")])]
        ),
        some(&["12"])
    );
}

#[test]
fn split_index_keeps_empty_pieces_and_counts_from_zero() {
    let url = "https://www.nexmark.com/abc/de_f/gh/item.htm?query=1";
    // The pieces: "https:", "", "www.nexmark.com", "abc", "de_f", "gh",
    // "item.htm?query=1".
    let got = call(
        "split_index",
        vec![
            repeat(url, 6),
            repeat("/", 6),
            ints(&[Some(0), Some(1), Some(3), Some(6), Some(7), Some(-1)]),
        ],
    );
    assert_eq!(
        got,
        vec![
            Some("https:".to_string()),
            Some(String::new()),
            Some("abc".to_string()),
            Some("item.htm?query=1".to_string()),
            None,
            None,
        ]
    );
    let got = call(
        "split_index",
        vec![
            texts(&[Some("a<>b<>c"), Some(""), Some("a b"), Some("a/"), None]),
            texts(&[Some("<>"), Some("/"), Some(""), Some("/"), Some("/")]),
            ints(&[Some(2), Some(0), Some(1), Some(1), Some(0)]),
        ],
    );
    // An empty string has no pieces; an empty separator splits at
    // whitespace; a trailing separator ends with an empty piece.
    assert_eq!(
        got,
        vec![
            Some("c".to_string()),
            None,
            Some("b".to_string()),
            Some(String::new()),
            None
        ]
    );
}

#[test]
fn wrong_argument_types_are_plan_errors() {
    let err = udf("split_index")
        .coerce_types(&[DataType::Utf8, DataType::Utf8])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("SPLIT_INDEX takes (STRING, STRING, INT)"),
        "{err}"
    );
    let err = udf("date_format")
        .coerce_types(&[DataType::Int64, DataType::Utf8])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("DATE_FORMAT takes (TIMESTAMP, STRING), got (Int64, Utf8)"),
        "{err}"
    );
}
