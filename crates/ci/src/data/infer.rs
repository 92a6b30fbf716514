//! Schema inference: one streaming pass over a reference file proposes a
//! schema that the file itself passes.
//!
//! The proposal is deliberately tight (observed bounds, observed null
//! share) so that a person loosens it on purpose rather than discovering
//! later that nothing was checked.

use std::fs::File;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::records::{
    self, Cell, Event, Fields, HashSet64, Typed, json_key_order, parse_bool, value_hash,
};
use super::schema::default_null_values;
use super::{Allowed, ColumnSchema, ColumnType, DataError, Format, Number, RowBounds, Schema};

/// How [`infer_schema`] proposes a schema.
#[derive(Debug, Clone)]
pub struct InferOptions {
    /// The format; by default from the file's extension.
    pub format: Option<Format>,
    /// CSV/TSV field values read as null (default `[""]`); written to the
    /// schema when not the default.
    pub null_values: Vec<String>,
    /// A string column gets `allowed` when it has at most this many
    /// distinct values and each appears twice on average (default 20;
    /// 0 never proposes `allowed`).
    pub max_allowed_values: usize,
    /// Integer and string columns whose values are all distinct get
    /// `unique = true`, as long as they have at most this many values
    /// (default 10,000,000; tracking costs 16 to 24 bytes per value; 0
    /// never proposes `unique`).
    pub max_unique_values: u64,
}

impl Default for InferOptions {
    fn default() -> Self {
        InferOptions {
            format: None,
            null_values: default_null_values(),
            max_allowed_values: 20,
            max_unique_values: 10_000_000,
        }
    }
}

/// The most columns a JSON-lines reference file may have.
const MAX_COLUMNS: usize = 10_000;

/// Proposes a schema for the data in `path` (streaming; memory grows only
/// with the distinct values of columns that may be unique).
///
/// What it proposes, per column in file order (CSV header order, or the
/// order in which JSON keys first appear, as written on their line):
///
/// - `type`: `boolean` if every non-null value is a boolean, else `integer`
///   if every one is an integer, else `float` if every one is a number,
///   else `string`. A column with no non-null value is a `string`.
/// - `min`/`max`: the smallest and largest values seen (integer and float
///   columns; none for a float column holding NaN).
/// - `allowed`: the distinct values of a string column, in first-seen
///   order, when there are few ([`InferOptions::max_allowed_values`]).
/// - `unique = true`: for integer and string columns with at least two
///   values, all distinct.
/// - `max-null-share`: the observed share of nulls rounded up to four
///   decimals; left out when there are none.
///
/// And for the file: its `format`, `rows = { min = 1 }` (the reference
/// file's size says little about the next file's), and
/// `allow-extra-columns = false`. JSON keys holding arrays or objects are
/// left out and `allow-extra-columns` is then `true`.
///
/// The reference file passes the schema proposed for it.
pub fn infer_schema(path: &Path, options: &InferOptions) -> Result<Schema, DataError> {
    let format = options
        .format
        .or_else(|| Format::from_path(path))
        .ok_or_else(|| DataError::UnknownFormat {
            path: path.to_path_buf(),
        })?;
    let file = File::open(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    infer_schema_from_reader(path, file, format, options)
}

/// [`infer_schema`] for data read from `reader`; `name` names it in errors.
pub fn infer_schema_from_reader<R: Read>(
    name: &Path,
    reader: R,
    format: Format,
    options: &InferOptions,
) -> Result<Schema, DataError> {
    let mut inference = Inference {
        options,
        columns: Vec::new(),
        index: std::collections::HashMap::new(),
        rows: 0,
        failure: None,
    };
    let path = || PathBuf::from(name);
    records::read(reader, format, |event| {
        let outcome = match event {
            Event::Header(names) => inference.header(names),
            Event::Record { line, fields } => {
                inference.rows += 1;
                match fields {
                    Fields::Csv(record) => inference.csv_record(line, record),
                    Fields::Json(map, raw) => inference.json_record(line, map, raw),
                }
            }
            Event::Malformed { line, message } => Err((line, message)),
        };
        match outcome {
            Ok(()) => ControlFlow::Continue(()),
            Err(failure) => {
                inference.failure = Some(failure);
                ControlFlow::Break(())
            }
        }
    })
    .map_err(|source| DataError::Read {
        path: path(),
        source,
    })?;
    if let Some((line, message)) = inference.failure.take() {
        return Err(DataError::Malformed {
            path: path(),
            line,
            message,
        });
    }
    if inference.columns.is_empty() {
        return Err(DataError::Empty { path: path() });
    }
    Ok(inference.finish(format))
}

/// A malformed record: its line and what is wrong.
type Failure = (u64, String);

struct Inference<'o> {
    options: &'o InferOptions,
    columns: Vec<ColumnStats>,
    index: std::collections::HashMap<String, usize>,
    rows: u64,
    failure: Option<Failure>,
}

impl Inference<'_> {
    fn header(&mut self, names: &[String]) -> Result<(), Failure> {
        if names.is_empty() {
            return Err((1, "the file has no header row".into()));
        }
        for name in names {
            if name.is_empty() {
                return Err((1, "the header has an empty column name".into()));
            }
            if self.index.contains_key(name) {
                return Err((1, format!("column `{name}` appears twice in the header")));
            }
            self.add(name.clone(), 0);
        }
        Ok(())
    }

    fn add(&mut self, name: String, nulls: u64) -> usize {
        let i = self.columns.len();
        self.index.insert(name.clone(), i);
        self.columns
            .push(ColumnStats::new(name, nulls, self.options));
        i
    }

    fn csv_record(&mut self, line: u64, record: &csv::ByteRecord) -> Result<(), Failure> {
        let nulls = &self.options.null_values;
        for (i, column) in self.columns.iter_mut().enumerate() {
            match Cell::csv(record, i, nulls) {
                Cell::BadUtf8 => {
                    return Err((line, format!("column `{}` is not valid UTF-8", column.name)));
                }
                cell => column.observe(cell, self.options),
            }
        }
        Ok(())
    }

    fn json_record(
        &mut self,
        line: u64,
        map: &serde_json::Map<String, Value>,
        raw: &[u8],
    ) -> Result<(), Failure> {
        for column in &mut self.columns {
            column.observe(Cell::json(map, &column.name), self.options);
        }
        if map.keys().all(|k| self.index.contains_key(k)) {
            return Ok(());
        }
        // New columns, in the order the line writes them.
        for key in json_key_order(raw) {
            let Some(value) = map.get(&key) else { continue };
            if self.index.contains_key(&key) {
                continue;
            }
            if self.columns.len() >= MAX_COLUMNS {
                return Err((line, format!("more than {MAX_COLUMNS} distinct keys")));
            }
            // Earlier records lacked the key: those were nulls.
            let i = self.add(key, self.rows - 1);
            let cell = if value.is_null() {
                Cell::Null
            } else {
                Cell::Json(value)
            };
            self.columns[i].observe(cell, self.options);
        }
        Ok(())
    }

    fn finish(self, format: Format) -> Schema {
        let mut allow_extra_columns = false;
        let mut columns = Vec::new();
        for stats in self.columns {
            match stats.propose(self.rows, self.options) {
                Some(column) => columns.push(column),
                None => allow_extra_columns = true,
            }
        }
        Schema {
            format: Some(format),
            rows: RowBounds {
                min: (self.rows > 0).then_some(1),
                max: None,
            },
            allow_extra_columns,
            null_values: self.options.null_values.clone(),
            columns,
        }
    }
}

/// What one pass learns about a column.
struct ColumnStats {
    name: String,
    nulls: u64,
    values: u64,
    /// Every value so far could be read as this type.
    integer: bool,
    float: bool,
    boolean: bool,
    /// A JSON array or object was seen.
    nested: bool,
    min_int: Option<i64>,
    max_int: Option<i64>,
    min_float: Option<f64>,
    max_float: Option<f64>,
    nan: bool,
    /// Distinct texts in first-seen order, until there are too many.
    distinct: Option<Vec<String>>,
    /// Hashes of every value, until a repeat or the limit.
    hashes: Option<HashSet64>,
}

impl ColumnStats {
    fn new(name: String, nulls: u64, options: &InferOptions) -> Self {
        ColumnStats {
            name,
            nulls,
            values: 0,
            integer: true,
            float: true,
            boolean: true,
            nested: false,
            min_int: None,
            max_int: None,
            min_float: None,
            max_float: None,
            nan: false,
            distinct: (options.max_allowed_values > 0).then(Vec::new),
            hashes: (options.max_unique_values > 0).then(HashSet64::default),
        }
    }

    fn observe(&mut self, cell: Cell<'_>, options: &InferOptions) {
        let (integer, float, boolean) = match cell {
            Cell::Null | Cell::BadUtf8 => {
                self.nulls += 1;
                return;
            }
            Cell::Text(s) => (
                s.parse::<i64>().ok(),
                s.parse::<f64>().ok(),
                parse_bool(s).is_some(),
            ),
            Cell::Json(Value::Number(n)) => (n.as_i64(), n.as_f64(), false),
            Cell::Json(Value::Bool(_)) => (None, None, true),
            Cell::Json(Value::String(_)) => (None, None, false),
            Cell::Json(_) => {
                self.nested = true;
                return;
            }
        };
        self.values += 1;
        self.integer &= integer.is_some();
        self.float &= float.is_some();
        self.boolean &= boolean;
        if let Some(v) = integer {
            self.min_int = Some(self.min_int.map_or(v, |m| m.min(v)));
            self.max_int = Some(self.max_int.map_or(v, |m| m.max(v)));
        }
        if let Some(v) = float {
            if v.is_nan() {
                self.nan = true;
            } else {
                self.min_float = Some(self.min_float.map_or(v, |m| m.min(v)));
                self.max_float = Some(self.max_float.map_or(v, |m| m.max(v)));
            }
        }
        // As a string column would read it (the JSON text of a scalar).
        let Some(text) = cell.typed(ColumnType::String) else {
            return;
        };
        let Typed::Str(text) = text else { return };
        if let Some(distinct) = &mut self.distinct
            && !distinct.iter().any(|d| *d == *text)
        {
            if distinct.len() < options.max_allowed_values {
                distinct.push(text.clone().into_owned());
            } else {
                self.distinct = None;
            }
        }
        if let Some(hashes) = &mut self.hashes {
            // Text that reads as an integer hashes as the integer, so that
            // `1` and `01` (or JSON `7` and `"7"`) count as a repeat: the
            // proposal holds whether the column ends up integer or string.
            let key = match text.parse::<i64>() {
                Ok(i) => value_hash(&Typed::Int(i)),
                Err(_) => value_hash(&Typed::Str(text)),
            };
            if !hashes.insert(key) || hashes.len() as u64 > options.max_unique_values {
                self.hashes = None;
            }
        }
    }

    /// The proposed column, or `None` to leave it out.
    fn propose(self, rows: u64, options: &InferOptions) -> Option<ColumnSchema> {
        if self.nested {
            return None;
        }
        let has_values = self.values > 0;
        let column_type = if !has_values {
            ColumnType::String
        } else if self.boolean {
            ColumnType::Boolean
        } else if self.integer {
            ColumnType::Integer
        } else if self.float {
            ColumnType::Float
        } else {
            ColumnType::String
        };
        let mut column = ColumnSchema::new(self.name, column_type);
        match column_type {
            ColumnType::Integer => {
                column.min = self.min_int.map(Number::Integer);
                column.max = self.max_int.map(Number::Integer);
            }
            ColumnType::Float if !self.nan => {
                column.min = self.min_float.map(Number::Float);
                column.max = self.max_float.map(Number::Float);
            }
            _ => {}
        }
        if column_type == ColumnType::String
            && has_values
            && let Some(distinct) = self.distinct
            && distinct.len() <= options.max_allowed_values
            && distinct.len() as u64 * 2 <= self.values
        {
            column.allowed = Some(Allowed::Strings(distinct));
        }
        column.unique = matches!(column_type, ColumnType::Integer | ColumnType::String)
            && column.allowed.is_none()
            && self.values >= 2
            && self.hashes.is_some();
        if self.nulls > 0 && rows > 0 {
            column.max_null_share = null_share_bound(self.nulls, rows);
        }
        Some(column)
    }
}

/// The share `nulls / rows`, rounded up to four decimals, never below the
/// share itself as the validator computes it.
fn null_share_bound(nulls: u64, rows: u64) -> f64 {
    let share = nulls as f64 / rows as f64;
    let rounded = ((share * 1e4).ceil() / 1e4).min(1.0);
    if rounded >= share { rounded } else { share }
}
