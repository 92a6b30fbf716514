//! Reading a data file record by record, for validation and inference
//! alike: CSV/TSV through the `csv` crate (one reused `ByteRecord`), JSON
//! lines one line at a time. Nothing here holds more than one record.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::ControlFlow;

use serde_json::{Map, Value};

use super::{ColumnType, Format};

/// The longest JSON line read; a longer one is reported as malformed.
pub(crate) const MAX_LINE_BYTES: usize = 16 << 20;

/// The fields of one well-formed record.
pub(crate) enum Fields<'a> {
    /// A CSV record with as many fields as the header.
    Csv(&'a csv::ByteRecord),
    /// A JSON object, and the line it was read from.
    Json(&'a Map<String, Value>, &'a [u8]),
}

/// What the reader found next.
pub(crate) enum Event<'a> {
    /// The CSV header's column names (CSV and TSV only, first).
    Header(&'a [String]),
    /// A record, with the line it starts on.
    Record { line: u64, fields: Fields<'a> },
    /// A record that could not be read as one; reading goes on.
    Malformed { line: u64, message: String },
}

/// Reads `reader` and hands every event to `on` until the end or until
/// `on` breaks. Only I/O errors are errors; bad records are events.
pub(crate) fn read<R: Read>(
    reader: R,
    format: Format,
    on: impl FnMut(Event<'_>) -> ControlFlow<()>,
) -> io::Result<()> {
    match format {
        Format::Csv => read_csv(reader, b',', on),
        Format::Tsv => read_csv(reader, b'\t', on),
        Format::Jsonl => read_jsonl(reader, on),
    }
}

fn csv_error(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

fn read_csv<R: Read>(
    reader: R,
    delimiter: u8,
    mut on: impl FnMut(Event<'_>) -> ControlFlow<()>,
) -> io::Result<()> {
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .buffer_capacity(64 << 10)
        .from_reader(reader);
    let header: Vec<String> = csv
        .byte_headers()
        .map_err(csv_error)?
        .iter()
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    if on(Event::Header(&header)).is_break() {
        return Ok(());
    }
    let width = header.len();
    let mut record = csv::ByteRecord::new();
    while csv.read_byte_record(&mut record).map_err(csv_error)? {
        let line = record.position().map_or(0, csv::Position::line);
        let event = if record.len() == width {
            Event::Record {
                line,
                fields: Fields::Csv(&record),
            }
        } else {
            Event::Malformed {
                line,
                message: format!(
                    "{} {} where the header has {width}",
                    record.len(),
                    if record.len() == 1 { "field" } else { "fields" }
                ),
            }
        };
        if on(event).is_break() {
            break;
        }
    }
    Ok(())
}

fn read_jsonl<R: Read>(
    reader: R,
    mut on: impl FnMut(Event<'_>) -> ControlFlow<()>,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 << 10, reader);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if read == 0 {
            return Ok(());
        }
        line += 1;
        let event = if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            reader.skip_until(b'\n')?;
            Event::Malformed {
                line,
                message: format!("line longer than {} MiB", MAX_LINE_BYTES >> 20),
            }
        } else {
            let mut text = buf.trim_ascii();
            if line == 1 {
                text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
            }
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Value>(text) {
                Ok(Value::Object(map)) => {
                    if on(Event::Record {
                        line,
                        fields: Fields::Json(&map, text),
                    })
                    .is_break()
                    {
                        return Ok(());
                    }
                    continue;
                }
                Ok(other) => Event::Malformed {
                    line,
                    message: format!("expected a JSON object, found {}", json_type(&other)),
                },
                Err(e) => Event::Malformed {
                    line,
                    message: json_error(&e),
                },
            }
        };
        if on(event).is_break() {
            return Ok(());
        }
    }
}

/// serde_json's message without its "at line 1 column 7" (every line is
/// line 1 to it), with the column kept.
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let message = text.split(" at line ").next().unwrap_or(&text);
    format!("invalid JSON at column {}: {message}", e.column())
}

/// The keys of the JSON object in `raw`, in the order they are written
/// (`serde_json::Map` sorts them); empty if `raw` is not an object.
pub(crate) fn json_key_order(raw: &[u8]) -> Vec<String> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

    struct Keys;

    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            Ok(keys)
        }
    }

    serde_json::Deserializer::from_slice(raw)
        .deserialize_map(Keys)
        .unwrap_or_default()
}

/// "a string", "an array", … for messages.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One field of a record.
#[derive(Clone, Copy)]
pub(crate) enum Cell<'a> {
    /// No value: a null value in CSV, `null` or a missing key in JSON.
    Null,
    /// A CSV field.
    Text(&'a str),
    /// A non-null JSON value.
    Json(&'a Value),
    /// A CSV field that is not UTF-8.
    BadUtf8,
}

impl<'a> Cell<'a> {
    /// The CSV field at `index`.
    pub(crate) fn csv(record: &'a csv::ByteRecord, index: usize, nulls: &[String]) -> Self {
        match record.get(index).map(std::str::from_utf8) {
            None => Cell::Null,
            Some(Err(_)) => Cell::BadUtf8,
            Some(Ok(s)) if nulls.iter().any(|n| n == s) => Cell::Null,
            Some(Ok(s)) => Cell::Text(s),
        }
    }

    /// The JSON value under `key`.
    pub(crate) fn json(map: &'a Map<String, Value>, key: &str) -> Self {
        match map.get(key) {
            None | Some(Value::Null) => Cell::Null,
            Some(v) => Cell::Json(v),
        }
    }

    /// The value as text for a message, at most 40 characters.
    pub(crate) fn example(&self) -> String {
        let text: Cow<'_, str> = match self {
            Cell::Null => "null".into(),
            Cell::Text(s) => (*s).into(),
            Cell::Json(v) => v.to_string().into(),
            Cell::BadUtf8 => "(invalid UTF-8)".into(),
        };
        shorten(&text, 40)
    }

    /// The value read as `column_type`, or `None` when it is not one.
    pub(crate) fn typed(&self, column_type: ColumnType) -> Option<Typed<'a>> {
        match (*self, column_type) {
            (Cell::Text(s), ColumnType::Integer) => s.parse().ok().map(Typed::Int),
            (Cell::Text(s), ColumnType::Float) => s.parse().ok().map(Typed::Float),
            (Cell::Text(s), ColumnType::Boolean) => parse_bool(s).map(Typed::Bool),
            (Cell::Text(s), ColumnType::String) => Some(Typed::Str(Cow::Borrowed(s))),
            (Cell::Json(Value::Number(n)), ColumnType::Integer) => n.as_i64().map(Typed::Int),
            (Cell::Json(Value::Number(n)), ColumnType::Float) => n.as_f64().map(Typed::Float),
            (Cell::Json(Value::Bool(b)), ColumnType::Boolean) => Some(Typed::Bool(*b)),
            (Cell::Json(v), ColumnType::String) => json_text(v).map(Typed::Str),
            _ => None,
        }
    }
}

/// A JSON scalar as text: a string as itself, a number or boolean as its
/// JSON text; arrays and objects have none.
pub(crate) fn json_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A value read as its column's type.
pub(crate) enum Typed<'a> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Cow<'a, str>),
}

/// `true`/`True`/`TRUE` and `false`/`False`/`FALSE`: what CSV writers
/// (pandas, R, spreadsheets) emit. `0`/`1` are integers.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// At most `max` characters of `text`, with `…` when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A hash of a value for uniqueness checks. Values of one column all have
/// the same type, so the type needs no tag; `-0.0` and `0.0` are one value,
/// as are all NaNs.
pub(crate) fn value_hash(value: &Typed<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same value always hashes the same within
    // a run, and hashes are spread well enough to be used as set keys as-is.
    let mut hasher = std::hash::DefaultHasher::new();
    match value {
        Typed::Int(i) => i.hash(&mut hasher),
        Typed::Float(f) => {
            let canonical = if f.is_nan() {
                f64::NAN
            } else if *f == 0.0 {
                0.0
            } else {
                *f
            };
            canonical.to_bits().hash(&mut hasher);
        }
        Typed::Bool(b) => b.hash(&mut hasher),
        Typed::Str(s) => s.hash(&mut hasher),
    }
    hasher.finish()
}

/// A set of 64-bit value hashes, used without hashing them again.
///
/// Two distinct values collide with probability 2^-64; among *n* distinct
/// values the chance that any two collide is about n² / 2^65 (one in 3.6
/// million for ten million values). A collision makes a unique column look
/// like it has one duplicate; it never hides one.
pub(crate) type HashSet64 =
    std::collections::HashSet<u64, std::hash::BuildHasherDefault<PreHashed>>;

/// A hasher for keys that are already hashes.
#[derive(Default)]
pub(crate) struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
