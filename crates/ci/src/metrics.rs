//! Reading the metrics a training or evaluation step wrote: a JSON object
//! whose numbers, at any depth, are metrics named by their dotted path
//! (`{"eval": {"accuracy": 0.95}}` has `eval.accuracy`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Metric name → value.
pub type Metrics = BTreeMap<String, f64>;

/// Why a metrics file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The file is missing or unreadable.
    #[error("cannot read the metrics file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It is not JSON.
    #[error("the metrics file {path} is not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// It is JSON, but not an object.
    #[error("the metrics file {path} holds a JSON {found}, not an object of metrics")]
    NotAnObject {
        /// The file.
        path: PathBuf,
        /// What it holds.
        found: &'static str,
    },
}

/// Reads and flattens a metrics file.
pub fn read_metrics(path: &Path) -> Result<Metrics, MetricsError> {
    let value = read_metrics_json(path)?;
    let mut metrics = Metrics::new();
    flatten("", &value, &mut metrics);
    Ok(metrics)
}

/// Reads a metrics file as it is, a JSON object, without flattening it:
/// what a registered model version keeps (`package`).
pub fn read_metrics_json(path: &Path) -> Result<serde_json::Value, MetricsError> {
    let text = std::fs::read_to_string(path).map_err(|source| MetricsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| MetricsError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    if !value.is_object() {
        return Err(MetricsError::NotAnObject {
            path: path.to_path_buf(),
            found: json_type(&value),
        });
    }
    Ok(value)
}

/// The numbers of a JSON value, by dotted path.
pub fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Metrics) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.insert(prefix.to_owned(), f);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {}
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Formats a metric value compactly (six decimals at most, scientific
/// notation for very small or large magnitudes).
pub fn fmt_value(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-4 || v.abs() >= 1e9) {
        return format!("{v:e}");
    }
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_owned()
    }
}

/// The metric names a file has, for messages about one it lacks.
pub fn available(metrics: &Metrics) -> String {
    let names: Vec<&str> = metrics.keys().map(String::as_str).take(20).collect();
    if names.is_empty() {
        "it holds no numeric metrics".to_owned()
    } else {
        format!("it has: {}", names.join(", "))
    }
}
