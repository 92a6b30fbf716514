//! The compiled schema: what a data file must look like, checked for
//! consistency, plus reading schema files and writing schemas back as TOML.

use std::fmt;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

use mlops_core::manifest::{Diagnostic, Diagnostics};
use regex::Regex;
use serde::Serialize;
use toml::Spanned;

use super::wire::{ColumnWire, SchemaWire};
use super::{DataError, Format, Number};

/// A checked schema.
///
/// Build one with [`Schema::parse`], [`Schema::load`], [`Schema::compile`]
/// or [`crate::data::infer_schema`]; those guarantee that bounds are ordered
/// and typed like their column, `allowed` lists are typed like their column
/// and shares lie within `0..=1`.
#[derive(Debug, Clone)]
pub struct Schema {
    /// The data file's format, if the schema fixes it.
    pub format: Option<Format>,
    /// Bounds on the number of data records.
    pub rows: RowBounds,
    /// Whether columns not declared are accepted.
    pub allow_extra_columns: bool,
    /// CSV/TSV field values that mean "no value".
    pub null_values: Vec<String>,
    /// The declared columns, in order.
    pub columns: Vec<ColumnSchema>,
}

/// Bounds on the number of data records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowBounds {
    /// Fewest records.
    pub min: Option<u64>,
    /// Most records.
    pub max: Option<u64>,
}

/// The type of a column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColumnType {
    /// A 64-bit signed integer: `42`, `-7` (not `4.0`).
    Integer,
    /// A 64-bit float: `4.2`, `1e-3`, `7`, `NaN`, `inf`.
    Float,
    /// Any text. In JSON lines a number or boolean is read as its JSON text.
    String,
    /// `true`/`false` (also `True`/`TRUE`, `False`/`FALSE` in CSV).
    Boolean,
}

impl ColumnType {
    /// Every type, as written in a schema.
    pub const ALL: [ColumnType; 4] = [
        ColumnType::Integer,
        ColumnType::Float,
        ColumnType::String,
        ColumnType::Boolean,
    ];

    /// The name used in `type = "..."`.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::String => "string",
            ColumnType::Boolean => "boolean",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The only values a column accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// For `integer` columns.
    Integers(Vec<i64>),
    /// For `string` columns.
    Strings(Vec<String>),
}

/// One declared column.
#[derive(Debug, Clone)]
pub struct ColumnSchema {
    /// The column's name (CSV header or JSON key).
    pub name: String,
    /// The type of its values.
    pub column_type: ColumnType,
    /// Smallest value, [`Number::Integer`] for integer columns and
    /// [`Number::Float`] for float columns. NaN fails both bounds.
    pub min: Option<Number>,
    /// Largest value, typed like `min`.
    pub max: Option<Number>,
    /// The only values accepted.
    pub allowed: Option<Allowed>,
    /// Largest share of null values, `0.0..=1.0`.
    pub max_null_share: f64,
    /// Whether every non-null value must be distinct.
    pub unique: bool,
    /// A regular expression every value must match somewhere in it.
    pub pattern: Option<Regex>,
    /// Fewest characters of a string value.
    pub min_length: Option<u64>,
    /// Most characters of a string value.
    pub max_length: Option<u64>,
}

impl ColumnSchema {
    /// A column of `column_type` with no constraints but "no nulls".
    pub fn new(name: impl Into<String>, column_type: ColumnType) -> Self {
        ColumnSchema {
            name: name.into(),
            column_type,
            min: None,
            max: None,
            allowed: None,
            max_null_share: 0.0,
            unique: false,
            pattern: None,
            min_length: None,
            max_length: None,
        }
    }
}

/// The CSV null values when a schema does not say: only the empty field.
pub(crate) fn default_null_values() -> Vec<String> {
    vec![String::new()]
}

impl Schema {
    /// Parses and compiles schema text. Diagnostic spans are byte ranges
    /// of `text`.
    pub fn parse(text: &str) -> Result<Schema, Vec<Diagnostic>> {
        match toml::from_str::<SchemaWire>(text) {
            Ok(wire) => Schema::compile(wire, 0..0),
            Err(e) => Err(vec![de_error(&e)]),
        }
    }

    /// Parses schema text read from `origin`; errors name `origin` with a
    /// line and column.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Schema, DataError> {
        Schema::parse(text).map_err(|items| {
            DataError::InvalidSchema(Box::new(Diagnostics {
                path: origin.to_path_buf(),
                source: text.to_owned(),
                items,
            }))
        })
    }

    /// Reads and compiles a schema file.
    pub fn load(path: &Path) -> Result<Schema, DataError> {
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Schema::from_toml(&text, path)
    }

    /// Checks a schema as written and compiles it, reporting every problem.
    /// `span` is where problems that concern the whole schema point (the
    /// inline table in `mlops.toml`, or `0..0` for a file).
    pub fn compile(wire: SchemaWire, span: Range<usize>) -> Result<Schema, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        let format = wire.format.as_ref().and_then(|f| {
            f.get_ref()
                .parse::<Format>()
                .map_err(|e| errors.push(Diagnostic::new(e.to_string(), Some(f.span()))))
                .ok()
        });
        let mut rows = RowBounds::default();
        if let Some(bounds) = &wire.rows {
            let bounds = bounds.get_ref();
            rows.min = bounds
                .min
                .as_ref()
                .and_then(|v| non_negative("rows.min", v, &mut errors));
            rows.max = bounds
                .max
                .as_ref()
                .and_then(|v| non_negative("rows.max", v, &mut errors));
            if let (Some(min), Some(max), Some(max_span)) =
                (rows.min, rows.max, bounds.max.as_ref().map(Spanned::span))
                && min > max
            {
                errors.push(Diagnostic::new(
                    format!("`rows.max` ({max}) is less than `rows.min` ({min})"),
                    Some(max_span),
                ));
            }
        }
        let allow_extra_columns = wire.allow_extra_columns.unwrap_or(false);
        let mut columns = Vec::new();
        match wire.columns {
            Some(table) => {
                let table_span = table.span();
                let table = table.into_inner();
                if table.0.is_empty() && !allow_extra_columns {
                    errors.push(no_columns(table_span));
                }
                for (name, column) in table.0 {
                    if let Some(c) = compile_column(name, column, &mut errors) {
                        columns.push(c);
                    }
                }
            }
            None if !allow_extra_columns => errors.push(no_columns(span)),
            None => {}
        }
        if errors.is_empty() {
            Ok(Schema {
                format,
                rows,
                allow_extra_columns,
                null_values: wire.null_values.unwrap_or_else(default_null_values),
                columns,
            })
        } else {
            errors.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
            Err(errors)
        }
    }

    /// Writes the schema as a schema file; see [`to_toml`].
    pub fn to_toml(&self) -> String {
        to_toml(self)
    }
}

fn no_columns(span: Range<usize>) -> Diagnostic {
    Diagnostic::new("the schema declares no columns", Some(span)).with_help(
        "declare each column as `[columns.NAME]` with a `type`, or set `allow-extra-columns = true`",
    )
}

/// A toml error as a diagnostic: its first line, without a trailing period.
fn de_error(e: &toml::de::Error) -> Diagnostic {
    let message = e.message().lines().next().unwrap_or_default();
    Diagnostic::new(
        message.trim_end_matches('.').to_owned(),
        Some(e.span().unwrap_or(0..0)),
    )
}

fn non_negative(what: &str, value: &Spanned<i64>, errors: &mut Vec<Diagnostic>) -> Option<u64> {
    match u64::try_from(*value.get_ref()) {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(Diagnostic::new(
                format!("`{what}` must not be negative"),
                Some(value.span()),
            ));
            None
        }
    }
}

fn suggest_type(word: &str) -> Option<&'static str> {
    let lower = word.to_ascii_lowercase();
    let alias = match lower.as_str() {
        "int" | "i64" | "int64" | "long" => Some("integer"),
        "double" | "f64" | "float64" | "number" | "real" => Some("float"),
        "str" | "text" | "object" | "category" | "categorical" => Some("string"),
        "bool" => Some("boolean"),
        _ => None,
    };
    alias.or_else(|| {
        ColumnType::ALL
            .iter()
            .map(|t| t.name())
            .find(|name| *name == lower)
    })
}

fn compile_column(
    name: Spanned<String>,
    wire: ColumnWire,
    errors: &mut Vec<Diagnostic>,
) -> Option<ColumnSchema> {
    let name_span = name.span();
    let name = name.into_inner();
    let before = errors.len();
    if name.is_empty() {
        errors.push(Diagnostic::new(
            "a column name must not be empty",
            Some(name_span),
        ));
    }
    let type_text = wire.column_type.get_ref();
    let column_type = match ColumnType::ALL.iter().find(|t| t.name() == type_text) {
        Some(t) => *t,
        None => {
            let mut d = Diagnostic::new(
                format!("unknown type `{type_text}` for column `{name}`"),
                Some(wire.column_type.span()),
            );
            d = match suggest_type(type_text) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => d.with_help("the types are `integer`, `float`, `string` and `boolean`"),
            };
            errors.push(d);
            return None;
        }
    };
    let mut column = ColumnSchema::new(name.clone(), column_type);
    let numeric = matches!(column_type, ColumnType::Integer | ColumnType::Float);

    let mut bound = |what: &str, value: &Option<Spanned<toml::Value>>| -> Option<Number> {
        let value = value.as_ref()?;
        if !numeric {
            let help = if column_type == ColumnType::String {
                "for strings use `min-length`, `max-length`, `allowed` or `pattern`"
            } else {
                "bounds apply to integer and float columns"
            };
            errors.push(
                Diagnostic::new(
                    format!("`{what}` does not apply to {column_type} column `{name}`"),
                    Some(value.span()),
                )
                .with_help(help),
            );
            return None;
        }
        match (column_type, value.get_ref()) {
            (ColumnType::Integer, toml::Value::Integer(i)) => Some(Number::Integer(*i)),
            (ColumnType::Float, toml::Value::Integer(i)) => Some(Number::Float(*i as f64)),
            (ColumnType::Float, toml::Value::Float(f)) if f.is_nan() => {
                errors.push(Diagnostic::new(
                    format!("`{what}` of column `{name}` must not be nan"),
                    Some(value.span()),
                ));
                None
            }
            (ColumnType::Float, toml::Value::Float(f)) => Some(Number::Float(*f)),
            (_, other) => {
                errors.push(Diagnostic::new(
                    format!(
                        "`{what}` of {column_type} column `{name}` must be {}, found {}",
                        if column_type == ColumnType::Integer {
                            "an integer"
                        } else {
                            "a number"
                        },
                        other.type_str()
                    ),
                    Some(value.span()),
                ));
                None
            }
        }
    };
    column.min = bound("min", &wire.min);
    column.max = bound("max", &wire.max);
    if let (Some(min), Some(max), Some(max_span)) =
        (column.min, column.max, wire.max.as_ref().map(Spanned::span))
    {
        let reversed = match (min, max) {
            (Number::Integer(a), Number::Integer(b)) => a > b,
            (a, b) => a.as_f64() > b.as_f64(),
        };
        if reversed {
            errors.push(Diagnostic::new(
                format!("`max` ({max}) of column `{name}` is less than its `min` ({min})"),
                Some(max_span),
            ));
        }
    }

    if let Some(allowed) = &wire.allowed {
        column.allowed = compile_allowed(&name, column_type, allowed, errors);
    }

    if let Some(share) = &wire.max_null_share {
        let v = *share.get_ref();
        if (0.0..=1.0).contains(&v) {
            column.max_null_share = v;
        } else {
            errors.push(Diagnostic::new(
                format!("`max-null-share` of column `{name}` must be within 0..=1, found {v}"),
                Some(share.span()),
            ));
        }
    }
    column.unique = wire.unique.unwrap_or(false);

    let string_only = |what: &str, span: Range<usize>, errors: &mut Vec<Diagnostic>| {
        if column_type == ColumnType::String {
            true
        } else {
            errors.push(Diagnostic::new(
                format!("`{what}` applies to string columns; `{name}` is {column_type}"),
                Some(span),
            ));
            false
        }
    };
    if let Some(pattern) = &wire.pattern
        && string_only("pattern", pattern.span(), errors)
    {
        match Regex::new(pattern.get_ref()) {
            Ok(re) => column.pattern = Some(re),
            Err(e) => errors.push(Diagnostic::new(
                format!(
                    "invalid `pattern` for column `{name}`: {}",
                    regex_error_summary(&e)
                ),
                Some(pattern.span()),
            )),
        }
    }
    for (what, value, slot) in [
        ("min-length", &wire.min_length, &mut column.min_length),
        ("max-length", &wire.max_length, &mut column.max_length),
    ] {
        if let Some(value) = value
            && string_only(what, value.span(), errors)
        {
            *slot = non_negative(what, value, errors);
        }
    }
    if let (Some(min), Some(max), Some(max_span)) = (
        column.min_length,
        column.max_length,
        wire.max_length.as_ref().map(Spanned::span),
    ) && min > max
    {
        errors.push(Diagnostic::new(
            format!(
                "`max-length` ({max}) of column `{name}` is less than its `min-length` ({min})"
            ),
            Some(max_span),
        ));
    }
    (errors.len() == before).then_some(column)
}

fn compile_allowed(
    name: &str,
    column_type: ColumnType,
    allowed: &Spanned<Vec<Spanned<toml::Value>>>,
    errors: &mut Vec<Diagnostic>,
) -> Option<Allowed> {
    if !matches!(column_type, ColumnType::String | ColumnType::Integer) {
        errors.push(
            Diagnostic::new(
                format!("`allowed` does not apply to {column_type} column `{name}`"),
                Some(allowed.span()),
            )
            .with_help(
                "`allowed` applies to string and integer columns; use `min` and `max` for floats",
            ),
        );
        return None;
    }
    if allowed.get_ref().is_empty() {
        errors.push(Diagnostic::new(
            format!("`allowed` of column `{name}` is empty; no value would pass"),
            Some(allowed.span()),
        ));
        return None;
    }
    let before = errors.len();
    let mut integers = Vec::new();
    let mut strings = Vec::new();
    for value in allowed.get_ref() {
        match (column_type, value.get_ref()) {
            (ColumnType::Integer, toml::Value::Integer(i)) => integers.push(*i),
            (ColumnType::String, toml::Value::String(s)) => strings.push(s.clone()),
            (_, other) => errors.push(Diagnostic::new(
                format!(
                    "`allowed` of {column_type} column `{name}` holds {} {}",
                    if other.type_str() == "integer" {
                        "an"
                    } else {
                        "a"
                    },
                    other.type_str()
                ),
                Some(value.span()),
            )),
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(match column_type {
        ColumnType::Integer => Allowed::Integers(integers),
        _ => Allowed::Strings(strings),
    })
}

/// The last line of a regex error ("unclosed group"), which is the one that
/// names the problem; the others repeat the pattern with a caret.
fn regex_error_summary(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    last.unwrap_or(&text)
        .trim()
        .trim_start_matches("error: ")
        .to_owned()
}

/// Writes a schema as a schema file that [`Schema::parse`] reads back to an
/// equivalent schema. Columns keep their order; keys that say nothing beyond
/// the defaults (`unique = false`, `max-null-share = 0`) are left out.
pub fn to_toml(schema: &Schema) -> String {
    let mut out = String::new();
    if let Some(format) = schema.format {
        let _ = writeln!(out, "format = {}", toml_str(format.name()));
    }
    let bounds: Vec<String> = [("min", schema.rows.min), ("max", schema.rows.max)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k} = {v}")))
        .collect();
    if !bounds.is_empty() {
        let _ = writeln!(out, "rows = {{ {} }}", bounds.join(", "));
    }
    let _ = writeln!(out, "allow-extra-columns = {}", schema.allow_extra_columns);
    if schema.null_values != default_null_values() {
        let _ = writeln!(out, "null-values = {}", toml_list(&schema.null_values));
    }
    for column in &schema.columns {
        let _ = writeln!(out, "\n[columns.{}]", toml_key(&column.name));
        let _ = writeln!(out, "type = {}", toml_str(column.column_type.name()));
        if let Some(min) = column.min {
            let _ = writeln!(out, "min = {min}");
        }
        if let Some(max) = column.max {
            let _ = writeln!(out, "max = {max}");
        }
        match &column.allowed {
            Some(Allowed::Integers(values)) => {
                let values: Vec<String> = values.iter().map(i64::to_string).collect();
                let _ = writeln!(out, "allowed = [{}]", values.join(", "));
            }
            Some(Allowed::Strings(values)) => {
                let _ = writeln!(out, "allowed = {}", toml_list(values));
            }
            None => {}
        }
        if column.max_null_share > 0.0 {
            let share = Number::Float(column.max_null_share);
            let _ = writeln!(out, "max-null-share = {share}");
        }
        if column.unique {
            let _ = writeln!(out, "unique = true");
        }
        if let Some(pattern) = &column.pattern {
            let _ = writeln!(out, "pattern = {}", toml_str(pattern.as_str()));
        }
        if let Some(n) = column.min_length {
            let _ = writeln!(out, "min-length = {n}");
        }
        if let Some(n) = column.max_length {
            let _ = writeln!(out, "max-length = {n}");
        }
    }
    out
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn toml_list(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| toml_str(v)).collect();
    format!("[{}]", items.join(", "))
}

/// A bare key when TOML allows one, else a quoted key.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { key.to_owned() } else { toml_str(key) }
}
