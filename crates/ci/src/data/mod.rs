//! The `data-validation` step kind: checking a data file (CSV, TSV or JSON
//! lines) against a declared schema, and proposing a schema from a
//! reference file (`mlops data infer-schema`).
//!
//! The module owns the schema format ([`wire`] as written, [`Schema`] once
//! compiled), the streaming validator ([`validate_file`]), schema inference
//! ([`infer_schema`], [`to_toml`]) and the step kind
//! ([`DataValidationKind`]). It does not print: the CLI renders what it
//! returns.
//!
//! Conventions shared by every part:
//!
//! - **Line numbers.** Violations name the lines of the file where the
//!   offending records start, 1-based. In a CSV file the header is line 1,
//!   so without quoted line breaks data row *n* is line *n + 1*; in JSON
//!   lines, blank lines are skipped but still counted.
//! - **Bounded memory.** Files are read record by record; per column the
//!   validator keeps counters and the first few line numbers of each kind of
//!   violation, so memory does not grow with the file. The one exception is
//!   `unique = true`, which remembers a 64-bit hash of every distinct value
//!   of that column (16 to 24 bytes per value with the hash table's slack:
//!   about 450 MB for 20 million ids). A record must fit in memory; a JSON
//!   line longer than 16 MiB is reported as malformed.
//! - **Nulls.** An empty CSV field (or any of the schema's `null-values`), a
//!   JSON `null` and a missing JSON key are nulls. They count towards
//!   `max-null-share` and are exempt from every other check.

mod infer;
mod kind;
mod records;
mod schema;
mod validate;
pub mod wire;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use mlops_core::manifest::Diagnostics;
use serde::Serialize;

pub use infer::{InferOptions, infer_schema, infer_schema_from_reader};
pub use kind::DataValidationKind;
pub use schema::{Allowed, ColumnSchema, ColumnType, RowBounds, Schema, to_toml};
pub use validate::{
    Check, ColumnReport, DEFAULT_MAX_EXAMPLES, MAX_MALFORMED_ROWS, ValidateOptions,
    ValidationReport, Violation, validate_file, validate_reader,
};

/// The layout of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// One JSON object per line (also called NDJSON).
    Jsonl,
}

impl Format {
    /// Every format, as written in a schema.
    pub const ALL: [Format; 3] = [Format::Csv, Format::Tsv, Format::Jsonl];

    /// The name used in `format = "..."`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Jsonl => "jsonl",
        }
    }

    /// The format implied by a file's extension (`.csv`, `.tsv`/`.tab`,
    /// `.jsonl`/`.ndjson`, in any case), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "tsv" | "tab" => Some(Format::Tsv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown format name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format `{0}`; expected \"csv\", \"tsv\" or \"jsonl\"")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

/// A number in a schema bound or a report: integers stay exact.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Number {
    /// A whole number (bounds of `integer` columns).
    Integer(i64),
    /// A floating-point number (bounds of `float` columns).
    Float(f64),
}

impl Number {
    /// The value as a float (exact for integers up to 2^53).
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Integer(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

impl fmt::Display for Number {
    /// Written as TOML reads it back exactly: `1.0` stays a float, and very
    /// large or small floats use an exponent (`1e300`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Integer(i) => write!(f, "{i}"),
            // Debug is the shortest text that round-trips, with `.0` or an
            // exponent, which TOML accepts; TOML spells the others `inf`,
            // `-inf` and `nan`.
            Number::Float(x) if x.is_finite() => write!(f, "{x:?}"),
            Number::Float(x) => f.write_str(&toml::Value::Float(*x).to_string()),
        }
    }
}

/// Why a data file could not be validated or a schema not inferred (as
/// opposed to a file that was read and found wanting, which is a
/// [`ValidationReport`]).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A schema file does not parse or does not compile; every problem is
    /// listed, each with its line and column.
    #[error("{}", invalid_schema(.0))]
    InvalidSchema(Box<Diagnostics>),
    /// No format was given and the file's extension does not tell.
    #[error(
        "cannot tell the format of {} from its extension; set `format` to \"csv\", \"tsv\" or \"jsonl\"",
        path.display()
    )]
    UnknownFormat {
        /// The data file.
        path: PathBuf,
    },
    /// A reference file given to inference has a malformed record.
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        /// The data file.
        path: PathBuf,
        /// The 1-based line where the record starts.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// A reference file given to inference holds nothing to infer from.
    #[error("{} has no records to infer a schema from", path.display())]
    Empty {
        /// The data file.
        path: PathBuf,
    },
    /// Reading was cancelled (the step was cancelled or timed out).
    #[error("reading {} was cancelled", path.display())]
    Cancelled {
        /// The data file.
        path: PathBuf,
    },
}

/// `invalid schema file S: 3:9: unknown field `tpye`; 7:7: ...` — one line,
/// every problem; [`Diagnostics`]' own `Display` has the long form.
fn invalid_schema(diagnostics: &Diagnostics) -> String {
    let items: Vec<String> = diagnostics
        .items
        .iter()
        .map(|d| match diagnostics.location(d) {
            Some(loc) => format!("{}:{}: {}", loc.line, loc.column, d.message),
            None => d.message.clone(),
        })
        .collect();
    format!(
        "invalid schema file {}: {}",
        diagnostics.path.display(),
        items.join("; ")
    )
}

/// An error and its sources on one line, `outer: inner: innermost`.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
