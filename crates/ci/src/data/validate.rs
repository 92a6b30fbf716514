//! The streaming validator: one pass over the file, counters per column,
//! the first few line numbers per violation, and a [`ValidationReport`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::Path;

use mlops_core::CancellationToken;
use serde::Serialize;
use serde_json::{Map, Value};

use super::records::{self, Cell, Event, Fields, HashSet64, Typed, value_hash};
use super::{Allowed, ColumnSchema, ColumnType, DataError, Format, Number, Schema};

/// How many line numbers a violation lists unless told otherwise.
pub const DEFAULT_MAX_EXAMPLES: usize = 5;

/// After this many malformed records the validator stops reading: the file
/// is probably not in the format the schema says.
pub const MAX_MALFORMED_ROWS: u64 = 100;

/// How often (in records) a long validation looks at its cancel token.
const CANCEL_CHECK_EVERY: u64 = 1 << 16;

/// How many distinct undeclared JSON keys are reported by name.
const MAX_EXTRA_KEYS: usize = 100;

/// How a validation runs.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// The format; by default the schema's, else the file's extension.
    pub format: Option<Format>,
    /// How many line numbers each violation lists.
    pub max_examples: usize,
    /// Stops the validation (with [`DataError::Cancelled`]) when cancelled;
    /// it is checked every 65,536 records.
    pub cancel: Option<CancellationToken>,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            format: None,
            max_examples: DEFAULT_MAX_EXAMPLES,
            cancel: None,
        }
    }
}

/// What a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// The column set: missing, undeclared or repeated columns.
    Columns,
    /// Records that are not well-formed CSV or JSON objects.
    Parse,
    /// The number of records.
    Rows,
    /// Values not of the column's type.
    Type,
    /// CSV fields that are not UTF-8.
    Encoding,
    /// The share of nulls.
    NullShare,
    /// Values below `min`.
    Min,
    /// Values above `max`.
    Max,
    /// Values outside `allowed`.
    Allowed,
    /// Values not matching `pattern`.
    Pattern,
    /// Values shorter than `min-length`.
    MinLength,
    /// Values longer than `max-length`.
    MaxLength,
    /// Repeated values in a `unique` column.
    Unique,
}

impl Check {
    /// The check's name as it appears in reports.
    pub fn name(self) -> &'static str {
        match self {
            Check::Columns => "columns",
            Check::Parse => "parse",
            Check::Rows => "rows",
            Check::Type => "type",
            Check::Encoding => "encoding",
            Check::NullShare => "null-share",
            Check::Min => "min",
            Check::Max => "max",
            Check::Allowed => "allowed",
            Check::Pattern => "pattern",
            Check::MinLength => "min-length",
            Check::MaxLength => "max-length",
            Check::Unique => "unique",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One kind of problem found, with how often and where.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// The column, or `None` for file-level checks (`parse`, `rows`).
    pub column: Option<String>,
    /// The check that failed.
    pub check: Check,
    /// What was found, lowercase, with an example value where there is one.
    pub message: String,
    /// How many values or records failed.
    pub count: u64,
    /// The first lines where it happened (1-based file lines).
    pub lines: Vec<u64>,
}

impl fmt::Display for Violation {
    /// `column `age` max: 2 values above the maximum 120, e.g. `130` (lines 5, 9)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.column, self.check) {
            (Some(column), Check::Columns) => write!(f, "column `{column}`: {}", self.message)?,
            (Some(column), check) => write!(f, "column `{column}` {check}: {}", self.message)?,
            (None, check) => write!(f, "{check}: {}", self.message)?,
        }
        if !self.lines.is_empty() {
            let lines: Vec<String> = self.lines.iter().map(u64::to_string).collect();
            let more = if self.count > self.lines.len() as u64 {
                ", …"
            } else {
                ""
            };
            let word = if self.lines.len() == 1 && more.is_empty() {
                "line"
            } else {
                "lines"
            };
            write!(f, " ({word} {}{more})", lines.join(", "))?;
        }
        Ok(())
    }
}

/// What was seen in one declared column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnReport {
    /// The column's name.
    pub name: String,
    /// Its declared type.
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// Whether the file has it.
    pub present: bool,
    /// Non-null values of the right type.
    pub values: u64,
    /// Null values.
    pub nulls: u64,
    /// Smallest value seen (integer and float columns; NaN is ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<Number>,
    /// Largest value seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<Number>,
}

/// The result of validating one file. Serialized as the step's
/// `data-validation` evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationReport {
    /// The file, as named by the caller.
    pub file: String,
    /// The format it was read as.
    pub format: Format,
    /// Data records read (malformed ones included).
    pub rows: u64,
    /// Whether the whole file was read (`false` after too many malformed
    /// records).
    pub complete: bool,
    /// Whether there are no violations.
    pub passed: bool,
    /// Per declared column, in schema order.
    pub columns: Vec<ColumnReport>,
    /// Every violation: file-level ones first, then by column in schema order.
    pub violations: Vec<Violation>,
}

impl fmt::Display for ValidationReport {
    /// A first line with the verdict, then one line per violation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}, {} {}, ",
            self.file,
            self.format,
            plural(self.rows, "row", "rows"),
            self.columns.len(),
            if self.columns.len() == 1 {
                "declared column"
            } else {
                "declared columns"
            },
        )?;
        if self.passed {
            f.write_str("passed")?;
        } else {
            f.write_str(&plural(
                self.violations.len() as u64,
                "violation",
                "violations",
            ))?;
        }
        if !self.complete {
            f.write_str(" (stopped early)")?;
        }
        for v in &self.violations {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

/// Validates a file against a schema, streaming. The format is the
/// option's, else the schema's, else the extension's.
pub fn validate_file(
    path: &Path,
    schema: &Schema,
    options: &ValidateOptions,
) -> Result<ValidationReport, DataError> {
    let format = options
        .format
        .or(schema.format)
        .or_else(|| Format::from_path(path))
        .ok_or_else(|| DataError::UnknownFormat {
            path: path.to_path_buf(),
        })?;
    let file = File::open(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    validate_reader(&path.display().to_string(), file, format, schema, options)
}

/// Validates data read from `reader` (`name` names it in the report and in
/// errors). `options.format` is ignored: `format` is the format.
pub fn validate_reader<R: Read>(
    name: &str,
    reader: R,
    format: Format,
    schema: &Schema,
    options: &ValidateOptions,
) -> Result<ValidationReport, DataError> {
    let mut validator = Validator::new(schema, format, options.max_examples);
    let mut cancelled = false;
    records::read(reader, format, |event| {
        match event {
            Event::Header(names) => validator.header(names),
            Event::Record { line, fields } => {
                validator.rows += 1;
                if validator.rows.is_multiple_of(CANCEL_CHECK_EVERY)
                    && options.cancel.as_ref().is_some_and(|c| c.is_cancelled())
                {
                    cancelled = true;
                    return ControlFlow::Break(());
                }
                match fields {
                    Fields::Csv(record) => validator.csv_record(line, record),
                    Fields::Json(map, _) => validator.json_record(line, map),
                }
            }
            Event::Malformed { line, message } => {
                validator.rows += 1;
                let max = validator.max_examples;
                validator
                    .malformed
                    .hit(line, max, || format!("line {line}: {message}"));
                if validator.malformed.count >= MAX_MALFORMED_ROWS {
                    validator.complete = false;
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    })
    .map_err(|source| DataError::Read {
        path: name.into(),
        source,
    })?;
    if cancelled {
        return Err(DataError::Cancelled { path: name.into() });
    }
    Ok(validator.finish(name))
}

/// Occurrences of one kind of violation.
#[derive(Default)]
struct Tally {
    count: u64,
    lines: Vec<u64>,
    example: Option<String>,
}

impl Tally {
    fn hit(&mut self, line: u64, max_examples: usize, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.lines.len() < max_examples {
            self.lines.push(line);
        }
        if self.example.is_none() {
            self.example = Some(example());
        }
    }

    fn example(&self) -> &str {
        self.example.as_deref().unwrap_or_default()
    }

    fn violation(&self, column: Option<&str>, check: Check, message: String) -> Violation {
        Violation {
            column: column.map(str::to_owned),
            check,
            message,
            count: self.count,
            lines: self.lines.clone(),
        }
    }
}

/// `1 value`, `3 values`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn percent(share: f64) -> String {
    let text = format!("{:.2}", share * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "0" && share > 0.0 {
        "<0.01%".to_owned()
    } else {
        format!("{text}%")
    }
}

/// Where a declared column's values come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Not (yet) found in the file.
    Missing,
    /// This CSV field.
    Field(usize),
    /// Its JSON key, in every record.
    Key,
}

struct ColumnState<'s> {
    schema: &'s ColumnSchema,
    source: Source,
    /// A JSON record had the key (even with `null`).
    seen: bool,
    values: u64,
    nulls: Tally,
    wrong_type: Tally,
    encoding: Tally,
    below: Tally,
    above: Tally,
    not_allowed: Tally,
    no_match: Tally,
    too_short: Tally,
    too_long: Tally,
    duplicates: Tally,
    allowed_strings: Option<HashSet<&'s str>>,
    allowed_integers: Option<HashSet<i64>>,
    distinct: Option<HashSet64>,
    min_int: Option<i64>,
    max_int: Option<i64>,
    min_float: Option<f64>,
    max_float: Option<f64>,
}

impl<'s> ColumnState<'s> {
    fn new(schema: &'s ColumnSchema) -> Self {
        let (allowed_strings, allowed_integers) = match &schema.allowed {
            Some(Allowed::Strings(v)) => (Some(v.iter().map(String::as_str).collect()), None),
            Some(Allowed::Integers(v)) => (None, Some(v.iter().copied().collect())),
            None => (None, None),
        };
        ColumnState {
            schema,
            source: Source::Missing,
            seen: false,
            values: 0,
            nulls: Tally::default(),
            wrong_type: Tally::default(),
            encoding: Tally::default(),
            below: Tally::default(),
            above: Tally::default(),
            not_allowed: Tally::default(),
            no_match: Tally::default(),
            too_short: Tally::default(),
            too_long: Tally::default(),
            duplicates: Tally::default(),
            allowed_strings,
            allowed_integers,
            distinct: schema.unique.then(HashSet64::default),
            min_int: None,
            max_int: None,
            min_float: None,
            max_float: None,
        }
    }

    fn check(&mut self, line: u64, cell: Cell<'_>, max: usize) {
        let typed = match cell {
            Cell::Null => {
                self.nulls.hit(line, max, String::new);
                return;
            }
            Cell::BadUtf8 => {
                self.encoding.hit(line, max, String::new);
                return;
            }
            Cell::Text(_) | Cell::Json(_) => cell.typed(self.schema.column_type),
        };
        let Some(typed) = typed else {
            self.wrong_type.hit(line, max, || cell.example());
            return;
        };
        self.values += 1;
        let schema = self.schema;
        match &typed {
            Typed::Int(v) => {
                let v = *v;
                self.min_int = Some(self.min_int.map_or(v, |m| m.min(v)));
                self.max_int = Some(self.max_int.map_or(v, |m| m.max(v)));
                if let Some(Number::Integer(min)) = schema.min
                    && v < min
                {
                    self.below.hit(line, max, || cell.example());
                }
                if let Some(Number::Integer(bound)) = schema.max
                    && v > bound
                {
                    self.above.hit(line, max, || cell.example());
                }
                if let Some(allowed) = &self.allowed_integers
                    && !allowed.contains(&v)
                {
                    self.not_allowed.hit(line, max, || cell.example());
                }
            }
            Typed::Float(v) => {
                let v = *v;
                if !v.is_nan() {
                    self.min_float = Some(self.min_float.map_or(v, |m| m.min(v)));
                    self.max_float = Some(self.max_float.map_or(v, |m| m.max(v)));
                }
                // NaN fails both bounds.
                if let Some(min) = schema.min
                    && (v.is_nan() || v < min.as_f64())
                {
                    self.below.hit(line, max, || cell.example());
                }
                if let Some(bound) = schema.max
                    && (v.is_nan() || v > bound.as_f64())
                {
                    self.above.hit(line, max, || cell.example());
                }
            }
            Typed::Bool(_) => {}
            Typed::Str(s) => {
                if let Some(allowed) = &self.allowed_strings
                    && !allowed.contains(s.as_ref())
                {
                    self.not_allowed.hit(line, max, || cell.example());
                }
                if let Some(re) = &schema.pattern
                    && !re.is_match(s)
                {
                    self.no_match.hit(line, max, || cell.example());
                }
                if schema.min_length.is_some() || schema.max_length.is_some() {
                    let chars = s.chars().count() as u64;
                    if schema.min_length.is_some_and(|min| chars < min) {
                        self.too_short.hit(line, max, || cell.example());
                    }
                    if schema.max_length.is_some_and(|bound| chars > bound) {
                        self.too_long.hit(line, max, || cell.example());
                    }
                }
            }
        }
        if let Some(distinct) = &mut self.distinct
            && !distinct.insert(value_hash(&typed))
        {
            self.duplicates.hit(line, max, || cell.example());
        }
    }

    fn present(&self) -> bool {
        match self.source {
            Source::Missing => false,
            Source::Field(_) => true,
            Source::Key => self.seen,
        }
    }

    fn report(&self) -> ColumnReport {
        let (min, max) = match self.schema.column_type {
            ColumnType::Integer => (
                self.min_int.map(Number::Integer),
                self.max_int.map(Number::Integer),
            ),
            ColumnType::Float => (
                self.min_float.map(Number::Float),
                self.max_float.map(Number::Float),
            ),
            ColumnType::String | ColumnType::Boolean => (None, None),
        };
        ColumnReport {
            name: self.schema.name.clone(),
            column_type: self.schema.column_type,
            present: self.present(),
            values: self.values,
            nulls: self.nulls.count,
            min,
            max,
        }
    }

    /// This column's violations, in [`Check`] order.
    fn violations(&self, checked_rows: u64, out: &mut Vec<Violation>) {
        let schema = self.schema;
        let name = Some(schema.name.as_str());
        let mut push = |tally: &Tally, check: Check, message: String| {
            if tally.count > 0 {
                out.push(tally.violation(name, check, message));
            }
        };
        let values = |t: &Tally| plural(t.count, "value", "values");
        let t = &self.wrong_type;
        push(
            t,
            Check::Type,
            format!(
                "{} of the wrong type (expected {}), e.g. `{}`",
                values(t),
                schema.column_type,
                t.example()
            ),
        );
        let t = &self.encoding;
        push(t, Check::Encoding, format!("{} not valid UTF-8", values(t)));
        if self.present() && checked_rows > 0 {
            let share = self.nulls.count as f64 / checked_rows as f64;
            if share > schema.max_null_share {
                push(
                    &self.nulls,
                    Check::NullShare,
                    format!(
                        "{} of {checked_rows} values are null ({}), more than the allowed {}",
                        self.nulls.count,
                        percent(share),
                        percent(schema.max_null_share)
                    ),
                );
            }
        }
        if let Some(min) = schema.min {
            let t = &self.below;
            push(
                t,
                Check::Min,
                format!(
                    "{} below the minimum {min}, e.g. `{}`",
                    values(t),
                    t.example()
                ),
            );
        }
        if let Some(bound) = schema.max {
            let t = &self.above;
            push(
                t,
                Check::Max,
                format!(
                    "{} above the maximum {bound}, e.g. `{}`",
                    values(t),
                    t.example()
                ),
            );
        }
        let t = &self.not_allowed;
        push(
            t,
            Check::Allowed,
            format!("{} not in `allowed`, e.g. `{}`", values(t), t.example()),
        );
        if let Some(re) = &schema.pattern {
            let t = &self.no_match;
            push(
                t,
                Check::Pattern,
                format!(
                    "{} not matching `{}`, e.g. `{}`",
                    values(t),
                    re.as_str(),
                    t.example()
                ),
            );
        }
        if let Some(min) = schema.min_length {
            let t = &self.too_short;
            push(
                t,
                Check::MinLength,
                format!(
                    "{} shorter than {}, e.g. `{}`",
                    values(t),
                    plural(min, "character", "characters"),
                    t.example()
                ),
            );
        }
        if let Some(bound) = schema.max_length {
            let t = &self.too_long;
            push(
                t,
                Check::MaxLength,
                format!(
                    "{} longer than {}, e.g. `{}`",
                    values(t),
                    plural(bound, "character", "characters"),
                    t.example()
                ),
            );
        }
        let t = &self.duplicates;
        push(
            t,
            Check::Unique,
            format!(
                "{} {}, e.g. `{}`",
                t.count,
                if t.count == 1 {
                    "repeated value"
                } else {
                    "repeated values"
                },
                t.example()
            ),
        );
    }
}

struct Validator<'s> {
    schema: &'s Schema,
    format: Format,
    max_examples: usize,
    columns: Vec<ColumnState<'s>>,
    by_name: HashMap<&'s str, usize>,
    /// Column-set violations found in the CSV header.
    header_violations: Vec<Violation>,
    /// Undeclared JSON keys, in the order first seen.
    extra_keys: Vec<(String, Tally)>,
    extra_key_index: HashMap<String, usize>,
    /// Records with undeclared keys beyond the first [`MAX_EXTRA_KEYS`] names.
    other_extra_keys: Tally,
    malformed: Tally,
    rows: u64,
    complete: bool,
}

impl<'s> Validator<'s> {
    fn new(schema: &'s Schema, format: Format, max_examples: usize) -> Self {
        let mut columns: Vec<ColumnState<'s>> =
            schema.columns.iter().map(ColumnState::new).collect();
        if format == Format::Jsonl {
            for c in &mut columns {
                c.source = Source::Key;
            }
        }
        let by_name = schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        Validator {
            schema,
            format,
            max_examples,
            columns,
            by_name,
            header_violations: Vec::new(),
            extra_keys: Vec::new(),
            extra_key_index: HashMap::new(),
            other_extra_keys: Tally::default(),
            malformed: Tally::default(),
            rows: 0,
            complete: true,
        }
    }

    fn header(&mut self, names: &[String]) {
        let mut occurrences: HashMap<&str, u64> = HashMap::new();
        for (index, name) in names.iter().enumerate() {
            let n = occurrences.entry(name.as_str()).or_default();
            *n += 1;
            if *n == 1
                && let Some(&column) = self.by_name.get(name.as_str())
            {
                self.columns[column].source = Source::Field(index);
            }
        }
        let column_violation = |name: &str, message: String| Violation {
            column: Some(name.to_owned()),
            check: Check::Columns,
            message,
            count: 1,
            lines: vec![1],
        };
        for c in &self.columns {
            if c.source == Source::Missing {
                self.header_violations.push(column_violation(
                    &c.schema.name,
                    "missing from the file".into(),
                ));
            }
        }
        if !self.schema.allow_extra_columns {
            let mut reported = HashSet::new();
            for name in names {
                if !self.by_name.contains_key(name.as_str()) && reported.insert(name.as_str()) {
                    self.header_violations
                        .push(column_violation(name, "not declared in the schema".into()));
                }
            }
        }
        let mut reported = HashSet::new();
        for name in names {
            let n = occurrences[name.as_str()];
            if n > 1 && reported.insert(name.as_str()) {
                let mut v = column_violation(name, format!("appears {n} times in the header"));
                if self.by_name.contains_key(name.as_str()) {
                    v.message.push_str("; only the first is checked");
                }
                self.header_violations.push(v);
            }
        }
    }

    fn csv_record(&mut self, line: u64, record: &csv::ByteRecord) {
        let nulls = &self.schema.null_values;
        for column in &mut self.columns {
            if let Source::Field(index) = column.source {
                column.check(line, Cell::csv(record, index, nulls), self.max_examples);
            }
        }
    }

    fn json_record(&mut self, line: u64, map: &Map<String, Value>) {
        for column in &mut self.columns {
            let cell = match map.get(&column.schema.name) {
                None => Cell::Null,
                Some(value) => {
                    column.seen = true;
                    if value.is_null() {
                        Cell::Null
                    } else {
                        Cell::Json(value)
                    }
                }
            };
            column.check(line, cell, self.max_examples);
        }
        if !self.schema.allow_extra_columns && !map.is_empty() {
            for key in map.keys() {
                if self.by_name.contains_key(key.as_str()) {
                    continue;
                }
                let max = self.max_examples;
                match self.extra_key_index.get(key) {
                    Some(&i) => self.extra_keys[i].1.hit(line, max, String::new),
                    None if self.extra_keys.len() < MAX_EXTRA_KEYS => {
                        self.extra_key_index
                            .insert(key.clone(), self.extra_keys.len());
                        let mut tally = Tally::default();
                        tally.hit(line, max, String::new);
                        self.extra_keys.push((key.clone(), tally));
                    }
                    None => self.other_extra_keys.hit(line, max, || key.clone()),
                }
            }
        }
    }

    fn finish(self, name: &str) -> ValidationReport {
        let mut violations = self.header_violations;
        let checked_rows = self.rows - self.malformed.count;
        if self.format == Format::Jsonl && checked_rows > 0 {
            for c in &self.columns {
                if !c.seen {
                    violations.push(Violation {
                        column: Some(c.schema.name.clone()),
                        check: Check::Columns,
                        message: "missing from the file: no record has this key".into(),
                        count: 1,
                        lines: Vec::new(),
                    });
                }
            }
            for (key, tally) in &self.extra_keys {
                violations.push(tally.violation(
                    Some(key),
                    Check::Columns,
                    format!(
                        "not declared in the schema; {} {} it",
                        plural(tally.count, "record", "records"),
                        if tally.count == 1 { "has" } else { "have" }
                    ),
                ));
            }
            let t = &self.other_extra_keys;
            if t.count > 0 {
                violations.push(t.violation(
                    None,
                    Check::Columns,
                    format!(
                        "{} undeclared keys beyond the first {MAX_EXTRA_KEYS} named, e.g. `{}`",
                        t.count,
                        t.example()
                    ),
                ));
            }
        }
        let t = &self.malformed;
        if t.count > 0 {
            let mut message = format!(
                "{}; first: {}",
                plural(t.count, "malformed record", "malformed records"),
                t.example()
            );
            if !self.complete {
                message.push_str(&format!(
                    "; stopped reading after {MAX_MALFORMED_ROWS} malformed records"
                ));
            }
            violations.push(t.violation(None, Check::Parse, message));
        }
        if self.complete {
            let rows = plural(self.rows, "row", "rows");
            let bounds = self.schema.rows;
            if let Some(min) = bounds.min
                && self.rows < min
            {
                violations.push(Violation {
                    column: None,
                    check: Check::Rows,
                    message: format!("{rows}, fewer than the minimum {min}"),
                    count: 1,
                    lines: Vec::new(),
                });
            }
            if let Some(max) = bounds.max
                && self.rows > max
            {
                violations.push(Violation {
                    column: None,
                    check: Check::Rows,
                    message: format!("{rows}, more than the maximum {max}"),
                    count: 1,
                    lines: Vec::new(),
                });
            }
        }
        for c in &self.columns {
            c.violations(checked_rows, &mut violations);
        }
        ValidationReport {
            file: name.to_owned(),
            format: self.format,
            rows: self.rows,
            complete: self.complete,
            passed: violations.is_empty(),
            columns: self.columns.iter().map(ColumnState::report).collect(),
            violations,
        }
    }
}
