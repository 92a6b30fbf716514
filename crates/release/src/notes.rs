//! Release notes: a release's version, commits, metrics and analysis,
//! rendered as Markdown from a template.
//!
//! The caller gathers a [`NotesContext`] (usually with
//! [`NotesContext::new`] from the registry's versions, the commits since
//! the last release and the release's evidence) and [`render`]s it with
//! the built-in template ([`DEFAULT_TEMPLATE`], `notes/default.md.tera`)
//! or the project's own ([`NotesTemplate`]). Templates are
//! [tera](https://keats.github.io/tera/) 2: an undefined variable is an
//! error (named with the template's path, line and column), and nothing
//! is HTML-escaped — the output is Markdown.
//!
//! The variables a template sees are the fields of [`NotesContext`], with
//! their serde names:
//!
//! ```text
//! project, model, version, tag?, previous_version?, version_reason?,
//! candidate ("iris:7"), candidate_digest, previous_production? ("iris:6"),
//! date ("2026-12-05"),
//! commits[]: { id, short, summary, author }
//! metrics[]: { name, candidate, previous?, delta?,
//!              candidate_text, previous_text?, delta_text?, change_text? }
//! analysis?: { strategy, verdict, reason, outcome,
//!              rounds[]: { round, weight, sent, unanswered, verdict, reason,
//!                          candidate: { requests, errors, error_rate?, p50_ms?, p99_ms? },
//!                          stable?:   { … the same … },
//!                          checks[]: { name, verdict, reason } } }
//! ```
//!
//! `?` marks a value that may be null (test it with `{% if x %}`). The
//! `*_text` values are the numbers formatted for people (six decimals at
//! most, deltas signed, change in percent of the previous value).
//!
//! This module renders; it does not decide the version ([`crate::version`])
//! nor where the notes go (the caller prints or stores them).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mlops_core::registry::ModelVersion;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::analysis::{StepAnalysis, VariantSummary};
use crate::rollout::ReleaseEvidence;
use crate::version::git::CommitInfo;

/// The built-in template.
pub const DEFAULT_TEMPLATE: &str = include_str!("notes/default.md.tera");

/// How the built-in template is named in errors.
pub const DEFAULT_TEMPLATE_NAME: &str = "built-in notes/default.md.tera";

/// Everything a notes template sees (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotesContext {
    /// The project's name.
    pub project: String,
    /// The model released.
    pub model: String,
    /// The release version, build metadata included (`0.2.0+iris.7`).
    pub version: String,
    /// The release's git tag, when it has one.
    pub tag: Option<String>,
    /// The previous release's version.
    pub previous_version: Option<String>,
    /// Why the version is what it is ([`crate::version::Planned::reason`]).
    pub version_reason: Option<String>,
    /// The model version released, `model:N`.
    pub candidate: String,
    /// Its artifact's digest.
    pub candidate_digest: String,
    /// The version it replaces in production, `model:N`.
    pub previous_production: Option<String>,
    /// The release's date, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// The commits since the previous release, newest first.
    pub commits: Vec<NoteCommit>,
    /// The candidate's metrics against the previous production version's.
    pub metrics: Vec<MetricRow>,
    /// The release analysis, when the release had one.
    pub analysis: Option<AnalysisSummary>,
}

/// A commit in the notes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteCommit {
    /// The full id.
    pub id: String,
    /// The short id.
    pub short: String,
    /// The subject line.
    pub summary: String,
    /// The author's name.
    pub author: String,
}

impl From<&CommitInfo> for NoteCommit {
    fn from(c: &CommitInfo) -> Self {
        NoteCommit {
            id: c.id.clone(),
            short: c.short.clone(),
            summary: c.summary.clone(),
            author: c.author.clone(),
        }
    }
}

/// One metric of the candidate, against the previous production version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    /// Its name; nested metrics are joined with dots
    /// (`per_class.setosa.f1`).
    pub name: String,
    /// The candidate's value.
    pub candidate: f64,
    /// The previous production version's value, when it had this metric.
    pub previous: Option<f64>,
    /// `candidate - previous`.
    pub delta: Option<f64>,
    /// `candidate`, formatted.
    pub candidate_text: String,
    /// `previous`, formatted.
    pub previous_text: Option<String>,
    /// `delta`, formatted with its sign.
    pub delta_text: Option<String>,
    /// The delta in percent of `previous` (none when it is 0).
    pub change_text: Option<String>,
}

/// A release's analysis, for the notes: the verdict and every round's
/// numbers. [`AnalysisSummary::from_evidence`] makes one from a release
/// step's evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSummary {
    /// The strategy (`canary`, …).
    pub strategy: String,
    /// The verdict (`promote`, `rollback`, …).
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// What was done about it.
    pub outcome: String,
    /// Every round, in order.
    pub rounds: Vec<RoundSummary>,
}

/// One round of a release analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    /// Its number, from 1.
    pub round: u32,
    /// The candidate's share of traffic, in percent.
    pub weight: u32,
    /// Requests sent.
    pub sent: u64,
    /// Requests without a response (counted against the candidate).
    pub unanswered: u64,
    /// The round's verdict (`pass`, `fail`, `inconclusive`).
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// The candidate's numbers.
    pub candidate: VariantNumbers,
    /// Stable's numbers, when it was compared.
    pub stable: Option<VariantNumbers>,
    /// Every check.
    pub checks: Vec<CheckSummary>,
}

/// A variant's numbers in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantNumbers {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: Option<f64>,
    /// Median latency in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: Option<f64>,
}

/// One check of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// Which check (`error-rate`, `latency-p99`, …).
    pub name: String,
    /// Its verdict.
    pub verdict: String,
    /// Why, with its numbers.
    pub reason: String,
}

/// A serde name of a unit variant (`promote`, `pass`, …).
fn serde_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

impl From<&VariantSummary> for VariantNumbers {
    fn from(v: &VariantSummary) -> Self {
        VariantNumbers {
            requests: v.requests,
            errors: v.errors,
            error_rate: v.error_rate,
            p50_ms: v.latency_ms.map(|q| q.p50),
            p99_ms: v.latency_ms.map(|q| q.p99),
        }
    }
}

impl AnalysisSummary {
    /// The summary of a release step's `release` evidence.
    pub fn from_evidence(evidence: &ReleaseEvidence) -> Self {
        let rounds = evidence
            .rounds
            .iter()
            .zip(1u32..)
            .map(|(r, round)| {
                let a: &StepAnalysis = &r.analysis;
                RoundSummary {
                    round,
                    weight: r.weight,
                    sent: r.sent,
                    unanswered: r.unanswered,
                    verdict: a.verdict.to_string(),
                    reason: a.reason.clone(),
                    candidate: (&a.candidate).into(),
                    stable: a.stable.as_ref().map(Into::into),
                    checks: a
                        .checks
                        .iter()
                        .map(|c| CheckSummary {
                            name: c.name.to_string(),
                            verdict: serde_name(&c.verdict),
                            reason: c.reason.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        AnalysisSummary {
            strategy: evidence.strategy.clone(),
            verdict: serde_name(&evidence.verdict),
            reason: evidence.reason.clone(),
            outcome: evidence.outcome.clone(),
            rounds,
        }
    }
}

/// What [`NotesContext::new`] builds the context from.
#[derive(Debug, Clone, Copy)]
pub struct NotesInput<'a> {
    /// The project's name.
    pub project: &'a str,
    /// The release version.
    pub version: &'a Version,
    /// Why it is that version.
    pub version_reason: Option<&'a str>,
    /// The release's tag.
    pub tag: Option<&'a str>,
    /// The previous release's version.
    pub previous_version: Option<&'a Version>,
    /// The model version released.
    pub candidate: &'a ModelVersion,
    /// The version it replaces in production.
    pub previous: Option<&'a ModelVersion>,
    /// The commits since the previous release.
    pub commits: &'a [CommitInfo],
    /// The release analysis.
    pub analysis: Option<&'a AnalysisSummary>,
    /// When the release happened.
    pub date: SystemTime,
}

impl NotesContext {
    /// The context of a release.
    pub fn new(input: NotesInput<'_>) -> Self {
        let date = humantime::format_rfc3339_seconds(input.date).to_string();
        NotesContext {
            project: input.project.to_owned(),
            model: input.candidate.model.clone(),
            version: input.version.to_string(),
            tag: input.tag.map(str::to_owned),
            previous_version: input.previous_version.map(Version::to_string),
            version_reason: input.version_reason.map(str::to_owned),
            candidate: input.candidate.id(),
            candidate_digest: input.candidate.digest.clone(),
            previous_production: input.previous.map(ModelVersion::id),
            date: date.chars().take(10).collect(),
            commits: input.commits.iter().map(NoteCommit::from).collect(),
            metrics: metric_rows(
                input.candidate.metrics.as_ref(),
                input.previous.and_then(|p| p.metrics.as_ref()),
            ),
            analysis: input.analysis.cloned(),
        }
    }
}

/// The numeric leaves of a metrics document, nested objects joined with
/// dots; arrays (a confusion matrix) and non-numbers are left out.
fn numeric_leaves(value: &serde_json::Value, prefix: &str, out: &mut Vec<(String, f64)>) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.push((prefix.to_owned(), f));
            }
        }
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                numeric_leaves(v, &name, out);
            }
        }
        _ => {}
    }
}

/// The candidate's metrics (top-level ones first, then by name), each against the
/// previous version's value of the same name.
pub fn metric_rows(
    candidate: Option<&serde_json::Value>,
    previous: Option<&serde_json::Value>,
) -> Vec<MetricRow> {
    let mut current = Vec::new();
    if let Some(c) = candidate {
        numeric_leaves(c, "", &mut current);
    }
    let mut before = Vec::new();
    if let Some(p) = previous {
        numeric_leaves(p, "", &mut before);
    }
    // Top-level metrics (the headline numbers) before nested ones, by
    // name: the same order whatever serde_json's map keeps.
    current.sort_by(|(a, _), (b, _)| (a.contains('.'), a).cmp(&(b.contains('.'), b)));
    current
        .into_iter()
        .map(|(name, value)| {
            let previous = before.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
            let delta = previous.map(|p| value - p);
            MetricRow {
                candidate_text: format_number(value),
                previous_text: previous.map(format_number),
                delta_text: delta.map(format_delta),
                change_text: previous
                    .zip(delta)
                    .filter(|(p, _)| *p != 0.0)
                    .map(|(p, d)| format!("{:+.1}%", d / p.abs() * 100.0)),
                name,
                candidate: value,
                previous,
                delta,
            }
        })
        .collect()
}

/// At most six decimals, trailing zeros dropped.
fn format_number(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// Like [`format_number`], with a `+` on positive deltas.
fn format_delta(x: f64) -> String {
    let s = format_number(x);
    if s == "0" || s.starts_with('-') {
        s
    } else {
        format!("+{s}")
    }
}

/// A project's own notes template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotesTemplate {
    /// Where it was read from (named in errors).
    pub path: PathBuf,
    /// Its text.
    pub source: String,
}

impl NotesTemplate {
    /// Reads a template file.
    ///
    /// # Errors
    ///
    /// [`NotesError::Read`].
    pub fn read(path: &Path) -> Result<Self, NotesError> {
        let source = std::fs::read_to_string(path).map_err(|source| NotesError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(NotesTemplate {
            path: path.to_owned(),
            source,
        })
    }
}

/// A notes failure.
#[derive(Debug, thiserror::Error)]
pub enum NotesError {
    /// The template file could not be read.
    #[error("cannot read the notes template {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The template does not parse or does not render with the context.
    #[error("notes template {template}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Template {
        /// The template's path (or the built-in's name).
        template: String,
        /// Line and column (1-based), when tera gives them.
        location: Option<(usize, usize)>,
        /// tera's message.
        message: String,
    },
    /// The context could not be turned into template variables.
    #[error("the notes context cannot be serialized: {message}")]
    Context {
        /// tera's message.
        message: String,
    },
}

fn template_error(template: &str, error: &tera::Error) -> NotesError {
    let (location, message) = match error.kind() {
        tera::ErrorKind::SyntaxError(report) | tera::ErrorKind::RenderingError(report) => {
            let span = report.span();
            (
                Some((span.start_line, span.start_col + 1)),
                report.message().to_owned(),
            )
        }
        other => (None, other.to_string()),
    };
    NotesError::Template {
        template: template.to_owned(),
        location,
        message,
    }
}

/// Renders `context` with `template` (none: the built-in template).
///
/// # Errors
///
/// [`NotesError::Template`] naming the template, the line and column and
/// tera's message: a syntax error, an undefined variable, a filter given
/// the wrong type.
pub fn render(
    template: Option<&NotesTemplate>,
    context: &NotesContext,
) -> Result<String, NotesError> {
    let (name, source) = match template {
        Some(t) => (t.path.display().to_string(), t.source.as_str()),
        None => (DEFAULT_TEMPLATE_NAME.to_owned(), DEFAULT_TEMPLATE),
    };
    let mut tera = tera::Tera::new();
    // Markdown, not HTML: nothing is escaped, whatever the file's suffix.
    tera.autoescape_on(Vec::<&'static str>::new());
    tera.add_raw_template(&name, source)
        .map_err(|e| template_error(&name, &e))?;
    let context = tera::Context::from_serialize(context).map_err(|e| NotesError::Context {
        message: e.to_string(),
    })?;
    tera.render(&name, &context)
        .map_err(|e| template_error(&name, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(format_number(0.966667), "0.966667");
        assert_eq!(format_number(120.0), "120");
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(format_number(-0.0000001), "0");
        assert_eq!(format_delta(0.0133), "+0.0133");
        assert_eq!(format_delta(-0.5), "-0.5");
        assert_eq!(format_delta(0.0), "0");
    }

    #[test]
    fn metric_rows_flatten_and_compare() {
        let candidate = serde_json::json!({
            "per_class": {"setosa": {"f1": 1.0}},
            "accuracy": 0.98,
            "confusion_matrix": {"matrix": [[1, 0], [0, 1]]},
            "new": 3,
        });
        let previous = serde_json::json!({"accuracy": 0.96, "per_class": {"setosa": {"f1": 1.0}}});
        let rows = metric_rows(Some(&candidate), Some(&previous));
        let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["accuracy", "new", "per_class.setosa.f1"]);
        assert_eq!(rows[0].delta_text.as_deref(), Some("+0.02"));
        assert_eq!(rows[0].change_text.as_deref(), Some("+2.1%"));
        assert_eq!(rows[1].previous, None);
        assert_eq!(rows[1].delta_text, None);
        assert_eq!(rows[2].delta_text.as_deref(), Some("0"));
    }
}
