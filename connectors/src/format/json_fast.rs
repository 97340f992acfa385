//! The fast path of JSON lines: flat objects of numbers, booleans,
//! strings and timestamps decoded straight into Arrow builders, one pass
//! over the bytes, without arrow-json's tape.
//!
//! It reads only the columns asked for: the value of any other key is
//! stepped over (a string by `memchr` to its closing quote, an object or
//! array by its brackets), checked for JSON's structure but not decoded.
//! That is where its speed comes from when a query reads a few columns of
//! wide records.
//!
//! It gives exactly what arrow-json gives, or nothing: anything it does
//! not decode the common way (a number where a string is declared, `1e3`
//! for an integer, an escaped key, a key twice, two objects on a line, a
//! syntax error) makes it return `None`, and the caller decodes the same
//! records with arrow-json, which also words the error. Tests check it
//! against arrow-json on generated records.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::Records;

/// A decoder of flat JSON objects into rows of a schema whose every
/// column it can decode.
#[derive(Debug)]
pub(crate) struct FastJson {
    schema: SchemaRef,
    /// Each column's name as bytes, to match keys against.
    names: Vec<Vec<u8>>,
    kinds: Vec<Kind>,
}

/// How a column's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Any integer type: read as i64, then cast (an overflow falls back).
    Int,
    Float64,
    Float32,
    Bool,
    Utf8,
    /// A timestamp without a zone, in milliseconds (what the JSON decoder
    /// reads timestamps as): an integer, or a string arrow parses.
    TimestampMs,
}

impl Kind {
    fn of(t: &DataType) -> Option<Self> {
        use DataType::*;
        Some(match t {
            Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => Kind::Int,
            Float64 => Kind::Float64,
            Float32 => Kind::Float32,
            Boolean => Kind::Bool,
            Utf8 => Kind::Utf8,
            Timestamp(TimeUnit::Millisecond, None) => Kind::TimestampMs,
            _ => return None,
        })
    }
}

/// One column being built.
enum Column {
    Int(Int64Builder),
    Float64(Float64Builder),
    Float32(Float32Builder),
    Bool(BooleanBuilder),
    Utf8(StringBuilder),
    TimestampMs(TimestampMillisecondBuilder, LastDay),
}

/// The last date a timestamp column read, and its days since the epoch:
/// the rows of a batch mostly share a few dates.
type LastDay = Option<([u8; 10], i64)>;

impl Column {
    fn new(kind: Kind, rows: usize) -> Self {
        match kind {
            Kind::Int => Column::Int(Int64Builder::with_capacity(rows)),
            Kind::Float64 => Column::Float64(Float64Builder::with_capacity(rows)),
            Kind::Float32 => Column::Float32(Float32Builder::with_capacity(rows)),
            Kind::Bool => Column::Bool(BooleanBuilder::with_capacity(rows)),
            Kind::Utf8 => Column::Utf8(StringBuilder::with_capacity(rows, rows * 16)),
            Kind::TimestampMs => {
                Column::TimestampMs(TimestampMillisecondBuilder::with_capacity(rows), None)
            }
        }
    }

    fn append_null(&mut self) {
        match self {
            Column::Int(b) => b.append_null(),
            Column::Float64(b) => b.append_null(),
            Column::Float32(b) => b.append_null(),
            Column::Bool(b) => b.append_null(),
            Column::Utf8(b) => b.append_null(),
            Column::TimestampMs(b, _) => b.append_null(),
        }
    }

    /// Appends the value at the cursor; `None` if it is not one this
    /// column reads the common way.
    fn append(&mut self, at: &mut Cursor<'_>) -> Option<()> {
        if at.literal(b"null") {
            self.append_null();
            return Some(());
        }
        match self {
            Column::Int(b) => b.append_value(at.integer()?),
            Column::Float64(b) => b.append_value(at.number_text()?.parse().ok()?),
            Column::Float32(b) => b.append_value(at.number_text()?.parse().ok()?),
            Column::Bool(b) => {
                if at.literal(b"true") {
                    b.append_value(true);
                } else if at.literal(b"false") {
                    b.append_value(false);
                } else {
                    return None;
                }
            }
            Column::Utf8(b) => match at.peek()? {
                b'"' => b.append_value(at.string()?),
                _ => return None,
            },
            Column::TimestampMs(b, day) => match at.peek()? {
                b'"' => {
                    let start = at.i;
                    let ms = match rfc3339_ms(at.raw_string()?, day) {
                        Some(ms) => ms,
                        None => {
                            at.i = start;
                            let text = at.string()?;
                            string_to_datetime(&chrono::Utc, &text)
                                .ok()?
                                .timestamp_millis()
                        }
                    };
                    b.append_value(ms);
                }
                _ => b.append_value(at.integer()?),
            },
        }
        Some(())
    }

    fn finish(self, data_type: &DataType) -> Option<ArrayRef> {
        let array: ArrayRef = match self {
            Column::Int(mut b) => Arc::new(b.finish()),
            Column::Float64(mut b) => Arc::new(b.finish()),
            Column::Float32(mut b) => Arc::new(b.finish()),
            Column::Bool(mut b) => Arc::new(b.finish()),
            Column::Utf8(mut b) => Arc::new(b.finish()),
            Column::TimestampMs(mut b, _) => Arc::new(b.finish()),
        };
        if array.data_type() == data_type {
            return Some(array);
        }
        // A narrower integer: an overflow is an error here, and arrow-json
        // words it.
        let strict = CastOptions {
            safe: false,
            ..Default::default()
        };
        cast_with_options(&array, data_type, &strict).ok()
    }
}

/// The digits of an integer token (`-?[0-9]+`) as an i64, if in range.
fn parse_i64(token: &[u8]) -> Option<i64> {
    let (negative, digits) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    // Summed below zero, so that i64::MIN fits.
    let mut v: i64 = 0;
    for &d in digits {
        v = v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative { Some(v) } else { v.checked_neg() }
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z]` as milliseconds since the epoch
/// in UTC, the spelling nearly every timestamp has; `None` for any other
/// (an offset, a leap second, a date that does not exist), which arrow's
/// parser then reads. `last` remembers the last date read.
fn rfc3339_ms(text: &[u8], last: &mut LastDay) -> Option<i64> {
    let text = text.strip_suffix(b"Z").unwrap_or(text);
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits.iter().try_fold(0i64, |v, &d| {
            d.is_ascii_digit().then(|| v * 10 + i64::from(d - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| text.get(i) != Some(&c))
        || !matches!(text.get(10), Some(b'T' | b' '))
    {
        return None;
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let millis = match text.get(19..) {
        Some([]) => 0,
        Some([b'.', fraction @ ..]) if (1..=9).contains(&fraction.len()) => {
            let ms = &fraction[..fraction.len().min(3)];
            let value = num(20..20 + ms.len())?;
            num(20..20 + fraction.len())?;
            value * 10i64.pow(3 - ms.len() as u32)
        }
        _ => return None,
    };
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let date: [u8; 10] = text.get(..10)?.try_into().ok()?;
    let days = match *last {
        Some((seen, days)) if seen == date => days,
        _ => {
            let days = days_since_epoch(num(0..4)?, num(5..7)?, num(8..10)?)?;
            *last = Some((date, days));
            days
        }
    };
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1000 + millis)
}

/// The days from 1970-01-01 to a date, if it exists.
fn days_since_epoch(year: i64, month: i64, day: i64) -> Option<i64> {
    if !(1..=12).contains(&month) {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let february = if leap { 29 } else { 28 };
    let days_in_month = [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if day < 1 || day > days_in_month[month as usize - 1] {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn utf8(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

impl FastJson {
    /// `None` if some column of `schema` is not of a type it decodes.
    pub(crate) fn new(schema: &SchemaRef) -> Option<Self> {
        let kinds = schema
            .fields()
            .iter()
            .map(|f| Kind::of(f.data_type()))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            schema: schema.clone(),
            names: schema
                .fields()
                .iter()
                .map(|f| f.name().as_bytes().to_vec())
                .collect(),
            kinds,
        })
    }

    /// Decodes `records` (a blank one holds no row), or `None` to leave
    /// them to arrow-json.
    pub(crate) fn decode(&self, records: &Records) -> Option<RecordBatch> {
        let rows = records.len();
        let mut columns: Vec<Column> = self.kinds.iter().map(|&k| Column::new(k, rows)).collect();
        let mut seen = vec![false; columns.len()];
        let mut count = 0;
        for line in records.iter() {
            let mut at = Cursor { bytes: line, i: 0 };
            at.skip_ws();
            if at.done() {
                continue;
            }
            seen.iter_mut().for_each(|s| *s = false);
            self.object(&mut at, &mut columns, &mut seen)?;
            at.skip_ws();
            if !at.done() {
                return None;
            }
            for (c, _) in columns.iter_mut().zip(&seen).filter(|(_, s)| !**s) {
                c.append_null();
            }
            count += 1;
        }
        let arrays = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| c.finish(f.data_type()))
            .collect::<Option<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(count));
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options).ok()
    }

    /// One object's keys: the columns' values appended, others stepped
    /// over.
    fn object(&self, at: &mut Cursor<'_>, columns: &mut [Column], seen: &mut [bool]) -> Option<()> {
        at.expect(b'{')?;
        at.skip_ws();
        if at.eat(b'}') {
            return Some(());
        }
        loop {
            let key = at.plain_key()?;
            at.skip_ws();
            at.expect(b':')?;
            at.skip_ws();
            // The length and first byte turn most other keys away before
            // a comparison.
            let matches =
                |n: &Vec<u8>| n.len() == key.len() && n.first() == key.first() && *n == key;
            match self.names.iter().position(matches) {
                Some(c) if seen[c] => return None,
                Some(c) => {
                    seen[c] = true;
                    columns[c].append(at)?;
                }
                None => at.skip_value(0)?,
            }
            at.skip_ws();
            if at.eat(b'}') {
                return Some(());
            }
            at.expect(b',')?;
            at.skip_ws();
        }
    }
}

/// A position in one line.
struct Cursor<'a> {
    bytes: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn done(&self) -> bool {
        self.i >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.i += usize::from(hit);
        hit
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    /// Consumes `word` if it is there, whole.
    fn literal(&mut self, word: &[u8]) -> bool {
        let rest = &self.bytes[self.i.min(self.bytes.len())..];
        let whole = rest.starts_with(word)
            && !rest
                .get(word.len())
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if whole {
            self.i += word.len();
        }
        whole
    }

    /// The raw bytes of a string at the cursor, between its quotes
    /// (escapes as they are). A quote is the closing one unless an odd
    /// number of backslashes comes before it: long values full of escapes
    /// are stepped over a quote at a time.
    fn raw_string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        let mut from = start;
        loop {
            // Keys and short values end within a few bytes, where a plain
            // loop beats memchr's set-up.
            let near = &self.bytes[from..self.bytes.len().min(from + 16)];
            let quote = match near.iter().position(|&b| b == b'"') {
                Some(at) => from + at,
                None => from + near.len() + memchr::memchr(b'"', &self.bytes[from + near.len()..])?,
            };
            let before = &self.bytes[start..quote];
            let backslashes = before.iter().rev().take_while(|&&b| b == b'\\').count();
            if backslashes % 2 == 0 {
                self.i = quote + 1;
                return Some(before);
            }
            from = quote + 1;
        }
    }

    /// A key without escapes.
    fn plain_key(&mut self) -> Option<&'a [u8]> {
        let key = self.raw_string()?;
        (!key.contains(&b'\\')).then_some(key)
    }

    /// A string value, unescaped as JSON says.
    fn string(&mut self) -> Option<std::borrow::Cow<'a, str>> {
        let start = self.i;
        let raw = self.raw_string()?;
        if memchr::memchr(b'\\', raw).is_none() {
            return utf8(raw).map(std::borrow::Cow::Borrowed);
        }
        serde_json::from_slice::<String>(&self.bytes[start..self.i])
            .ok()
            .map(std::borrow::Cow::Owned)
    }

    /// A number's token, checked against JSON's grammar, and whether it
    /// is an integer (no fraction, no exponent).
    fn number(&mut self) -> Option<(&'a [u8], bool)> {
        let start = self.i;
        self.eat(b'-');
        if !self.eat(b'0') && self.digits() == 0 {
            return None;
        }
        let mut integer = true;
        if self.eat(b'.') {
            integer = false;
            if self.digits() == 0 {
                return None;
            }
        }
        if self.eat(b'e') || self.eat(b'E') {
            integer = false;
            let _ = self.eat(b'+') || self.eat(b'-');
            if self.digits() == 0 {
                return None;
            }
        }
        Some((&self.bytes[start..self.i], integer))
    }

    /// A number's token, as text.
    fn number_text(&mut self) -> Option<&'a str> {
        utf8(self.number()?.0)
    }

    /// An integer token, as arrow-json reads it; `None` for any other
    /// number, or one out of range.
    fn integer(&mut self) -> Option<i64> {
        match self.number()? {
            (token, true) => parse_i64(token),
            _ => None,
        }
    }

    fn digits(&mut self) -> usize {
        let rest = self.bytes.get(self.i..).unwrap_or_default();
        let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        self.i += n;
        n
    }

    /// Steps over any value, nested `depth` deep.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        const MAX_DEPTH: usize = 64;
        match self.peek()? {
            b'"' => self.raw_string().map(|_| ()),
            open @ (b'{' | b'[') if depth < MAX_DEPTH => {
                self.i += 1;
                let close = if open == b'{' { b'}' } else { b']' };
                self.skip_ws();
                if self.eat(close) {
                    return Some(());
                }
                loop {
                    if open == b'{' {
                        self.raw_string()?;
                        self.skip_ws();
                        self.expect(b':')?;
                        self.skip_ws();
                    }
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    if self.eat(close) {
                        return Some(());
                    }
                    self.expect(b',')?;
                    self.skip_ws();
                }
            }
            b't' if self.literal(b"true") => Some(()),
            b'f' if self.literal(b"false") => Some(()),
            b'n' if self.literal(b"null") => Some(()),
            _ => self.number().map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::json::decode_json;
    use datafusion::arrow::datatypes::{Field, Schema};
    use proptest::prelude::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("n", DataType::Int32, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    /// JSON text for a value of key `key`: mostly of its type, sometimes
    /// of another, or null.
    fn value(key: &'static str) -> BoxedStrategy<String> {
        let int = prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            (-3000i64..3000).prop_map(|v| v.to_string()),
            Just("9223372036854775808".to_string()),
            Just("1e3".to_string()),
            Just("2.5".to_string()),
            Just("-0".to_string()),
        ];
        let text = prop_oneof![
            Just("\"plain\"".to_string()),
            Just("\"\"".to_string()),
            Just(r#""q\"uote\\d \u00e9 \n""#.to_string()),
            Just("\"é ✓ 日本\"".to_string()),
            "[a-z ]{0,12}".prop_map(|s| format!("\"{s}\"")),
        ];
        let stamp = (
            1..3000i32,
            0..14u32,
            0..33u32,
            0..25u32,
            0..61u32,
            prop_oneof![Just(String::new()), "\\.[0-9]{1,10}"],
            prop_oneof![Just("T"), Just(" ")],
            prop_oneof![Just(""), Just("Z"), Just("+01:30")],
        )
            .prop_map(|(y, mo, d, h, mi, frac, t, z)| {
                format!("\"{y:04}-{mo:02}-{d:02}{t}{h:02}:{mi:02}:{mi:02}{frac}{z}\"")
            });
        let time = prop_oneof![
            4 => stamp,
            1 => Just("\"2024-01-01T00:00:01Z\"".to_string()),
            1 => Just("\"2024-01-01 00:00:02.5\"".to_string()),
            1 => Just("\"2024-01-01T02:00:04+02:00\"".to_string()),
            1 => Just("\"not a time\"".to_string()),
            1 => (0i64..2_000_000_000_000).prop_map(|v| v.to_string()),
        ];
        let float = prop_oneof![
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:?}")),
            (-1000i64..1000).prop_map(|v| v.to_string()),
            Just("1.5e-7".to_string()),
            Just("-0.0".to_string()),
        ];
        let nested = prop_oneof![
            Just(r#"{"a": [1, {"b": "}]"}], "c": null}"#.to_string()),
            Just("[]".to_string()),
            Just("[true, false, null, -1.5E+3]".to_string()),
            Just(r#""x\\\"y""#.to_string()),
        ];
        let own = match key {
            "i" => int.boxed(),
            "n" => prop_oneof![(-40000i64..40000).prop_map(|v| v.to_string()), int].boxed(),
            "f" => float.boxed(),
            "b" => prop_oneof![Just("true".to_string()), Just("false".to_string())].boxed(),
            "s" => text.clone().boxed(),
            "t" => time.boxed(),
            _ => nested.clone().boxed(),
        };
        prop_oneof![
            8 => own,
            1 => Just("null".to_string()),
            1 => prop_oneof![text, nested, Just("7".to_string())],
        ]
        .boxed()
    }

    /// One line: some of the keys (a few repeated, some unknown), spaced
    /// at random; sometimes blank or broken.
    fn line() -> impl Strategy<Value = String> {
        const KEYS: [&str; 8] = ["i", "n", "f", "b", "s", "t", "x", "extra"];
        let pair = proptest::sample::select(&KEYS[..])
            .prop_flat_map(|k| (Just(k), value(k), "[ \t]{0,2}"))
            .prop_map(|(k, v, ws)| format!("\"{k}\"{ws}:{ws}{v}"));
        prop_oneof![
            20 => proptest::collection::vec(pair, 0..8)
                .prop_map(|pairs| format!("{{{}}}", pairs.join(", "))),
            1 => Just(String::new()),
            1 => Just("{\"i\": 1} {\"i\": 2}".to_string()),
            1 => Just("{\"i\": 1,}".to_string()),
            1 => Just("{\"i\": tru}".to_string()),
            1 => Just("[1, 2]".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Whenever the fast path decodes, arrow-json decodes the same.
        #[test]
        fn the_fast_path_agrees_with_arrow_json(lines in proptest::collection::vec(line(), 1..6)) {
            let text = format!("{}\n", lines.join("\n"));
            let fast = FastJson::new(&schema()).unwrap();
            if let Some(batch) = fast.decode(&Records::split_lines(text.as_bytes())) {
                let arrow = decode_json(&schema(), text.as_bytes(), lines.len());
                prop_assert_eq!(Ok(batch), arrow, "{}", text);
            }
        }
    }

    /// Well-formed records take the fast path (so the test above is not
    /// vacuous), nulls and missing keys included.
    #[test]
    fn common_records_take_the_fast_path() {
        let text = concat!(
            r#"{"i": 1, "n": -2, "f": 0.5, "b": true, "s": "a\"b", "t": "2024-01-01T00:00:01Z"}"#,
            "\n",
            r#"{"x": {"y": [1, "}"]}, "t": 1704067203000, "s": null}"#,
            "\n\n",
            r#"{}"#,
            "\n"
        );
        let batch = FastJson::new(&schema())
            .unwrap()
            .decode(&Records::split_lines(text.as_bytes()))
            .expect("the fast path decodes these");
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(Ok(batch), decode_json(&schema(), text.as_bytes(), 4));
    }
}
