//! The schema and the step parameters as written: plain serde structs.
//!
//! The same [`SchemaWire`] is read from a schema file and from the inline
//! `with.schema` table of a step in `mlops.toml`; [`crate::data::Schema::compile`]
//! turns it into a checked [`crate::data::Schema`], reporting every problem
//! with its span. Spans ride along in [`toml::Spanned`].

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use toml::Spanned;

/// A schema: the whole schema file, or `with.schema` of a step.
///
/// ```toml
/// format = "csv"
/// rows = { min = 100 }
/// allow-extra-columns = false
///
/// [columns.species]
/// type = "string"
/// allowed = ["setosa", "versicolor", "virginica"]
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SchemaWire {
    /// `"csv"`, `"tsv"` or `"jsonl"`; by default from the file's extension.
    pub format: Option<Spanned<String>>,
    /// Bounds on the number of data records.
    pub rows: Option<Spanned<RowsWire>>,
    /// Whether columns not declared here are accepted (default `false`).
    pub allow_extra_columns: Option<bool>,
    /// CSV/TSV field values that mean "no value" (default `[""]`).
    pub null_values: Option<Vec<String>>,
    /// The columns, in order, e.g. `[columns.age]`.
    pub columns: Option<Spanned<ColumnsWire>>,
}

/// `rows = { min = 1, max = 1000000 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RowsWire {
    /// Fewest data records.
    pub min: Option<Spanned<i64>>,
    /// Most data records.
    pub max: Option<Spanned<i64>>,
}

/// The `columns` table, keeping the order in which columns are written.
#[derive(Debug, Default)]
pub struct ColumnsWire(pub Vec<(Spanned<String>, ColumnWire)>);

impl<'de> Deserialize<'de> for ColumnsWire {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ColumnsVisitor;

        impl<'de> Visitor<'de> for ColumnsVisitor {
            type Value = ColumnsWire;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of columns, like `[columns.age]`")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ColumnsWire, A::Error> {
                let mut columns = Vec::new();
                while let Some(name) = map.next_key::<Spanned<String>>()? {
                    let column = map.next_value::<ColumnWire>()?;
                    columns.push((name, column));
                }
                Ok(ColumnsWire(columns))
            }
        }

        deserializer.deserialize_map(ColumnsVisitor)
    }
}

/// One column, e.g. `[columns.age]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ColumnWire {
    /// `"integer"`, `"float"`, `"string"` or `"boolean"`.
    #[serde(rename = "type")]
    pub column_type: Spanned<String>,
    /// Smallest value (integer and float columns).
    pub min: Option<Spanned<toml::Value>>,
    /// Largest value (integer and float columns).
    pub max: Option<Spanned<toml::Value>>,
    /// The only values accepted (string and integer columns).
    pub allowed: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    /// Largest share of nulls, `0` to `1` (default `0`: no nulls).
    pub max_null_share: Option<Spanned<f64>>,
    /// Whether every non-null value must be distinct (default `false`).
    pub unique: Option<bool>,
    /// A regular expression every value must match somewhere; anchor it
    /// with `^…$` to match whole values (string columns).
    pub pattern: Option<Spanned<String>>,
    /// Fewest characters (string columns).
    pub min_length: Option<Spanned<i64>>,
    /// Most characters (string columns).
    pub max_length: Option<Spanned<i64>>,
}

/// The `with` table of a `data-validation` step.
///
/// ```toml
/// [ci.steps.validate-data]
/// kind = "data-validation"
/// with = { file = "data/iris.csv", schema-file = "data/iris.schema.toml" }
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DataValidationWire {
    /// The data file, relative to the step's directory.
    pub file: Option<Spanned<String>>,
    /// The schema, inline.
    pub schema: Option<Spanned<SchemaWire>>,
    /// The schema file, relative to the step's directory.
    pub schema_file: Option<Spanned<String>>,
    /// The data file's format; overrides the schema's and the extension.
    pub format: Option<Spanned<String>>,
    /// How many line numbers each violation lists (default 5, at most 1000).
    pub max_examples: Option<Spanned<i64>>,
}
