//! The sample traffic a step sends when no users do: the `traffic` table
//! of a release step's `with` (and of the later stages' steps that drive
//! the release environment, `slo-check` among them), validated, and its
//! request bodies loaded from the step's directory.
//!
//! ```toml
//! traffic = { csv = "data/iris.csv", exclude = ["species"], rate = 50 }
//! traffic = { requests = "requests.jsonl", rate = 20, path = "/predict" }
//! ```

use std::path::PathBuf;

use mlops_core::manifest::Diagnostic;
use mlops_core::{StepContext, StepFailure};
use serde::Deserialize;

use crate::driver::{CsvColumns, Samples};

/// The highest `rate` a step may drive.
pub const MAX_RATE: f64 = 1000.0;

fn failure(e: impl std::fmt::Display) -> StepFailure {
    StepFailure::new(e.to_string())
}

/// The `traffic` table of a release step's `with`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrafficWire {
    requests: Option<String>,
    csv: Option<String>,
    columns: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    #[serde(default = "default_rate")]
    rate: f64,
    /// The path requests go to; `/v2/models/MODEL/infer` by default.
    path: Option<String>,
}

fn default_rate() -> f64 {
    50.0
}

/// Where the traffic's request bodies come from.
#[derive(Debug, Clone)]
pub enum RequestSource {
    /// One JSON request body per line.
    JsonLines(PathBuf),
    /// CSV rows, the columns chosen, as Open Inference Protocol requests.
    Csv(PathBuf, CsvColumns),
}

/// The sample traffic a step sends, validated.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Where the request bodies come from.
    pub source: RequestSource,
    /// Requests per second.
    pub rate: f64,
    /// The path requests go to.
    pub path: String,
}

impl TrafficWire {
    /// Validates the table (errors into `errors`, at `span`, the step's
    /// `with`); `model` names the default path.
    pub fn compile(
        &self,
        model: &str,
        span: &std::ops::Range<usize>,
        errors: &mut Vec<Diagnostic>,
    ) -> Option<Traffic> {
        self.compile_up_to(model, span, errors, MAX_RATE)
    }

    /// [`TrafficWire::compile`] with another highest rate (a load test's).
    pub fn compile_up_to(
        &self,
        model: &str,
        span: &std::ops::Range<usize>,
        errors: &mut Vec<Diagnostic>,
        max_rate: f64,
    ) -> Option<Traffic> {
        let t = self;
        let source = match (&t.requests, &t.csv) {
            (Some(r), None) if t.columns.is_none() && t.exclude.is_none() => {
                Some(RequestSource::JsonLines(r.into()))
            }
            (None, Some(c)) => match (&t.columns, &t.exclude) {
                (Some(_), Some(_)) => None,
                (Some(cols), None) => {
                    Some(RequestSource::Csv(c.into(), CsvColumns::Only(cols.clone())))
                }
                (None, Some(ex)) => Some(RequestSource::Csv(
                    c.into(),
                    CsvColumns::Exclude(ex.clone()),
                )),
                (None, None) => Some(RequestSource::Csv(c.into(), CsvColumns::All)),
            },
            _ => None,
        };
        if source.is_none() {
            errors.push(Diagnostic::new(
                "`traffic` needs one of `requests = \"FILE.jsonl\"` or `csv = \"FILE.csv\"` (with at most one of `columns` and `exclude`, for a csv only)",
                Some(span.clone()),
            ));
        }
        let mut ok = source.is_some();
        if !(t.rate.is_finite() && t.rate > 0.0 && t.rate <= max_rate) {
            errors.push(Diagnostic::new(
                format!(
                    "`traffic.rate` must be above 0 and at most {max_rate} requests per second"
                ),
                Some(span.clone()),
            ));
            ok = false;
        }
        if t.path.as_ref().is_some_and(|p| !p.starts_with('/')) {
            errors.push(Diagnostic::new(
                "`traffic.path` must start with `/`",
                Some(span.clone()),
            ));
            ok = false;
        }
        let path = t
            .path
            .clone()
            .unwrap_or_else(|| format!("/v2/models/{model}/infer"));
        Some(Traffic {
            source: source?,
            rate: t.rate,
            path,
        })
        .filter(|_| ok)
    }
}

/// The sample traffic's request bodies, read from the step's directory.
pub async fn load_samples(
    ctx: &StepContext,
    source: &RequestSource,
) -> Result<Samples, StepFailure> {
    let source = source.clone();
    let cwd = ctx.cwd.clone();
    tokio::task::spawn_blocking(move || match source {
        RequestSource::JsonLines(p) => Samples::from_json_lines(&cwd.join(p)),
        RequestSource::Csv(p, cols) => Samples::from_csv(&cwd.join(p), &cols),
    })
    .await
    .map_err(failure)?
    .map_err(|e| failure(format!("the release's traffic: {e}")))
}
