//! The `model-gate` kind: quality thresholds on a model's metrics, and no
//! regression against the baseline.
//!
//! The gate reads the metrics JSON a training or evaluation step wrote and
//! checks each threshold (`accuracy >= 0.9`, `rmse <= 3.2`). The operator
//! also says which way is better, so each thresholded metric is compared
//! with the baseline too: the metrics this gate recorded the last time it
//! passed, in the ledger, or (`baseline = "production"`) the metrics of the
//! model version in production in the registry. A drop beyond the tolerance
//! fails the gate even when the threshold still holds.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use mlops_core::manifest::Diagnostic;
use mlops_core::registry::{ModelStage, ModelVersion};
use mlops_core::{KindParams, Stage, StepAction, StepContext, StepFailure, StepKind};
use serde::{Deserialize, Serialize};

use crate::metrics::{Metrics, available, fmt_value, read_metrics};

/// A comparison operator of a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `<`
    #[serde(rename = "<")]
    Lt,
}

impl Op {
    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Op::Ge => value >= bound,
            Op::Gt => value > bound,
            Op::Le => value <= bound,
            Op::Lt => value < bound,
        }
    }

    /// Whether larger values are better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Op::Ge | Op::Gt)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
        })
    }
}

/// `metric OP bound`, e.g. `accuracy >= 0.9`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    /// The metric's (dotted) name.
    pub metric: String,
    /// The comparison.
    pub op: Op,
    /// The bound.
    pub bound: f64,
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ops = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)];
        let Some((at, text, op)) = ops
            .iter()
            .filter_map(|(text, op)| s.find(text).map(|at| (at, *text, *op)))
            .min_by_key(|(at, text, _)| (*at, std::cmp::Reverse(text.len())))
        else {
            return Err(format!(
                "threshold `{s}` has no comparison: write `metric >= value` (or >, <=, <)"
            ));
        };
        let metric = s[..at].trim();
        let bound = s[at + text.len()..].trim();
        if metric.is_empty() || metric.contains(char::is_whitespace) {
            return Err(format!("threshold `{s}`: `{metric}` is not a metric name"));
        }
        let bound: f64 = bound
            .parse()
            .ok()
            .filter(|b: &f64| b.is_finite())
            .ok_or_else(|| format!("threshold `{s}`: `{bound}` is not a finite number"))?;
        Ok(Threshold {
            metric: metric.to_owned(),
            op,
            bound,
        })
    }
}

/// How far a metric may fall behind its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tolerance {
    /// By at most this much.
    Absolute(f64),
    /// By at most this fraction of the baseline.
    Relative(f64),
}

impl Tolerance {
    fn allowed(self, baseline: f64) -> f64 {
        match self {
            Tolerance::Absolute(a) => a,
            Tolerance::Relative(r) => r * baseline.abs(),
        }
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tolerance::Absolute(a) => write!(f, "{}", fmt_value(*a)),
            Tolerance::Relative(r) => write!(f, "{}%", fmt_value(r * 100.0)),
        }
    }
}

/// The result of one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The metric.
    pub metric: String,
    /// The comparison.
    pub op: Op,
    /// The bound.
    pub bound: f64,
    /// The metric's value; `None` when the file lacks it.
    pub value: Option<f64>,
    /// The baseline's value, when there is a baseline with the metric.
    pub baseline: Option<f64>,
    /// The regression tolerance applied.
    pub tolerance: Tolerance,
    /// Threshold met.
    pub threshold_ok: bool,
    /// No regression beyond the tolerance (true without a baseline).
    pub regression_ok: bool,
    /// The check in words.
    pub message: String,
}

/// Where the baseline came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    /// The ledger run whose gate passed with these metrics, or that
    /// packaged the production model.
    pub run_id: Option<i64>,
    /// The production model version (`model:number`) whose metrics these
    /// are, for `baseline = "production"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Its commit.
    pub commit: Option<String>,
    /// Its metrics.
    pub metrics: Metrics,
}

impl Baseline {
    /// Where the baseline's metrics come from, in words: `run 3`,
    /// `production iris:2`.
    pub fn origin(&self) -> String {
        match (&self.model_version, self.run_id) {
            (Some(v), _) => format!("production {v}"),
            (None, Some(run)) => format!("run {run}"),
            (None, None) => "an unknown run".to_owned(),
        }
    }
}

/// What a gate found: the evidence it records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateReport {
    /// The metrics file, as given.
    pub metrics_file: String,
    /// Every numeric metric in it.
    pub metrics: Metrics,
    /// The baseline compared against, if any.
    pub baseline: Option<Baseline>,
    /// Why there is no baseline, when one was asked for (e.g. "no
    /// production model yet").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_note: Option<String>,
    /// One per threshold.
    pub checks: Vec<Check>,
    /// All checks passed.
    pub passed: bool,
}

/// Evaluates thresholds against metrics and an optional baseline.
pub fn evaluate(
    metrics_file: &str,
    metrics: Metrics,
    thresholds: &[Threshold],
    tolerance: &dyn Fn(&str) -> Tolerance,
    baseline: Option<Baseline>,
) -> GateReport {
    let mut checks = Vec::new();
    for t in thresholds {
        let value = metrics.get(&t.metric).copied();
        let base = baseline
            .as_ref()
            .and_then(|b| b.metrics.get(&t.metric).copied());
        let tol = tolerance(&t.metric);
        let threshold_ok = value.is_some_and(|v| t.op.holds(v, t.bound));
        let regression_ok = match (value, base) {
            (Some(v), Some(b)) => {
                let allowed = tol.allowed(b) + 1e-12;
                if t.op.higher_is_better() {
                    v >= b - allowed
                } else {
                    v <= b + allowed
                }
            }
            _ => true,
        };
        let base_text = match (&baseline, base) {
            (Some(b), Some(x)) => format!(
                "baseline {} from {}, tolerance {tol}",
                fmt_value(x),
                b.origin()
            ),
            (Some(b), None) => format!("no baseline: {} did not record it", b.origin()),
            (None, _) => "no baseline".to_owned(),
        };
        let message = match value {
            None => format!(
                "{}: missing from {metrics_file} ({})",
                t.metric,
                available(&metrics)
            ),
            Some(v) => {
                let verdict = match (threshold_ok, regression_ok) {
                    (true, true) => "ok",
                    (false, true) => "below the bound",
                    (true, false) => "regressed",
                    (false, false) => "below the bound and regressed",
                };
                let verdict = if !threshold_ok && !t.op.higher_is_better() {
                    verdict.replace("below", "above")
                } else {
                    verdict.to_owned()
                };
                format!(
                    "{} = {} (required {} {}; {base_text}): {verdict}",
                    t.metric,
                    fmt_value(v),
                    t.op,
                    fmt_value(t.bound)
                )
            }
        };
        checks.push(Check {
            metric: t.metric.clone(),
            op: t.op,
            bound: t.bound,
            value,
            baseline: base,
            tolerance: tol,
            threshold_ok,
            regression_ok,
            message,
        });
    }
    let passed = checks.iter().all(|c| c.threshold_ok && c.regression_ok);
    GateReport {
        metrics_file: metrics_file.to_owned(),
        metrics,
        baseline,
        baseline_note: None,
        checks,
        passed,
    }
}

/// The `model-gate` step kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelGateKind;

/// `with` of a `model-gate` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct GateWire {
    /// The metrics JSON file, relative to the step's directory.
    metrics: String,
    /// `metric OP value` strings.
    thresholds: Vec<toml::Spanned<String>>,
    /// How far each thresholded metric may fall behind the baseline: a
    /// number (absolute), `"N%"` (relative), or a table of either per
    /// metric. Default: no regression at all.
    regression: Option<toml::Spanned<ToleranceWire>>,
    /// `last-passing` (default): the metrics of this gate's last passing
    /// run; `production`: those of `model`'s version in production in the
    /// registry; `none`: thresholds only.
    baseline: Option<toml::Spanned<String>>,
    /// The registered model whose production version is the baseline
    /// (with `baseline = "production"` only).
    model: Option<toml::Spanned<String>>,
}

/// Where a gate takes its baseline from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BaselineSource {
    /// This gate's last passing run.
    LastPassing,
    /// The version of this model in production.
    Production(String),
    /// No baseline: thresholds only.
    None,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ToleranceWire {
    One(OneTolerance),
    PerMetric(BTreeMap<String, OneTolerance>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneTolerance {
    Number(f64),
    Text(String),
}

fn parse_tolerance(t: &OneTolerance) -> Result<Tolerance, String> {
    let tol = match t {
        OneTolerance::Number(n) => Tolerance::Absolute(*n),
        OneTolerance::Text(s) => {
            let Some(pct) = s.trim().strip_suffix('%') else {
                return Err(format!(
                    "tolerance `{s}` is neither a number nor a percentage like \"2%\""
                ));
            };
            let p: f64 = pct
                .trim()
                .parse()
                .map_err(|_| format!("tolerance `{s}` is not a percentage like \"2%\""))?;
            Tolerance::Relative(p / 100.0)
        }
    };
    match tol {
        Tolerance::Absolute(x) | Tolerance::Relative(x) if x.is_finite() && x >= 0.0 => Ok(tol),
        _ => Err("a tolerance must be a finite number, zero or more".to_owned()),
    }
}

struct GateStep {
    metrics: PathBuf,
    thresholds: Vec<Threshold>,
    default_tolerance: Tolerance,
    per_metric: BTreeMap<String, Tolerance>,
    baseline: BaselineSource,
}

impl StepKind for ModelGateKind {
    fn name(&self) -> &'static str {
        "model-gate"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Ci)
    }

    fn summary(&self) -> &'static str {
        "checks metric thresholds and no regression against the last passing run or the production model"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let wire: GateWire = params.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        let at = |span: Range<usize>| Some(span);
        if wire.thresholds.is_empty() {
            errors.push(Diagnostic::new(
                "`thresholds` is empty: name at least one, like \"accuracy >= 0.9\"",
                Some(params.span()),
            ));
        }
        let mut thresholds = Vec::new();
        for t in &wire.thresholds {
            match t.get_ref().parse::<Threshold>() {
                Ok(th) => thresholds.push(th),
                Err(e) => errors.push(Diagnostic::new(e, at(t.span()))),
            }
        }
        let mut default_tolerance = Tolerance::Absolute(0.0);
        let mut per_metric = BTreeMap::new();
        if let Some(reg) = &wire.regression {
            match reg.get_ref() {
                ToleranceWire::One(t) => match parse_tolerance(t) {
                    Ok(t) => default_tolerance = t,
                    Err(e) => errors.push(Diagnostic::new(e, at(reg.span()))),
                },
                ToleranceWire::PerMetric(map) => {
                    for (metric, t) in map {
                        if !thresholds.iter().any(|th| &th.metric == metric) {
                            errors.push(Diagnostic::new(
                                format!(
                                    "`regression.{metric}`: `{metric}` has no threshold, so which way is better is unknown"
                                ),
                                at(reg.span()),
                            ));
                        }
                        match parse_tolerance(t) {
                            Ok(t) => {
                                per_metric.insert(metric.clone(), t);
                            }
                            Err(e) => errors.push(Diagnostic::new(
                                format!("`regression.{metric}`: {e}"),
                                at(reg.span()),
                            )),
                        }
                    }
                }
            }
        }
        let baseline_span = wire
            .baseline
            .as_ref()
            .map_or_else(|| params.span(), |b| b.span());
        let baseline = match wire.baseline.as_ref().map(|b| b.get_ref().as_str()) {
            None | Some("last-passing") => BaselineSource::LastPassing,
            Some("none") => BaselineSource::None,
            Some("production") => match &wire.model {
                Some(model) => BaselineSource::Production(model.get_ref().clone()),
                None => {
                    errors.push(Diagnostic::new(
                        "`baseline = \"production\"` needs `model`: the registered model whose production version is the baseline",
                        at(baseline_span.clone()),
                    ));
                    BaselineSource::None
                }
            },
            Some(other) => {
                errors.push(Diagnostic::new(
                    format!(
                        "`baseline` is `{other}`; expected `last-passing`, `production` or `none`"
                    ),
                    at(baseline_span.clone()),
                ));
                BaselineSource::None
            }
        };
        if let Some(model) = &wire.model {
            if !matches!(baseline, BaselineSource::Production(_)) {
                errors.push(Diagnostic::new(
                    "`model` only applies with `baseline = \"production\"`",
                    at(model.span()),
                ));
            } else if model.get_ref().trim().is_empty() {
                errors.push(Diagnostic::new(
                    "`model` must not be empty",
                    at(model.span()),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let step = Arc::new(GateStep {
            metrics: PathBuf::from(wire.metrics),
            thresholds,
            default_tolerance,
            per_metric,
            baseline,
        });
        Ok(Arc::new(move |ctx: StepContext| {
            let step = step.clone();
            async move { step.run(ctx).await }
        }))
    }
}

impl GateStep {
    async fn run(&self, ctx: StepContext) -> Result<(), StepFailure> {
        let path = ctx.cwd.join(&self.metrics);
        let shown = self.metrics.display().to_string();
        let metrics = tokio::task::spawn_blocking(move || read_metrics(&path))
            .await
            .map_err(|e| StepFailure::new(format!("reading metrics stopped: {e}")))?
            .map_err(|e| StepFailure::new(e.to_string()))?;
        let baseline_failure =
            |e: &dyn std::fmt::Display| StepFailure::new(format!("baseline: {e}"));
        let baseline = match &self.baseline {
            BaselineSource::None => None,
            BaselineSource::LastPassing => {
                let (step, run_id) = (ctx.step.clone(), ctx.run_id);
                ctx.ledger()
                    .call(move |l| l.latest_evidence(&step, crate::evidence::MODEL_GATE, run_id))
                    .await
                    .map_err(|e| baseline_failure(&e))?
                    .and_then(|rec| {
                        let mut m = Metrics::new();
                        crate::metrics::flatten("", rec.body.get("metrics")?, &mut m);
                        Some(Baseline {
                            run_id: Some(rec.run_id),
                            model_version: None,
                            commit: rec.commit,
                            metrics: m,
                        })
                    })
            }
            BaselineSource::Production(model) => {
                let model = model.clone();
                let version = ctx
                    .ledger()
                    .call(move |l| l.model_in_stage(&model, ModelStage::Production))
                    .await
                    .map_err(|e| baseline_failure(&e))?;
                production_baseline(version).map_err(StepFailure::new)?
            }
        };

        let tolerance = |metric: &str| {
            self.per_metric
                .get(metric)
                .copied()
                .unwrap_or(self.default_tolerance)
        };
        let mut report = evaluate(&shown, metrics, &self.thresholds, &tolerance, baseline);
        match (&report.baseline, &self.baseline) {
            (Some(b), _) => ctx.log(format!(
                "baseline: {}{}",
                b.origin(),
                b.commit
                    .as_deref()
                    .map(|c| format!(" (commit {})", &c[..c.len().min(12)]))
                    .unwrap_or_default()
            )),
            (None, BaselineSource::LastPassing) => {
                ctx.log("baseline: none yet (no earlier passing run of this gate)")
            }
            (None, BaselineSource::Production(model)) => {
                let note = "no production model yet";
                ctx.log(format!(
                    "baseline: {note} (no version of `{model}` is in production); checking thresholds only"
                ));
                report.baseline_note = Some(note.to_owned());
            }
            (None, BaselineSource::None) => ctx.log("baseline: not used"),
        }
        for c in &report.checks {
            ctx.log(&c.message);
        }
        ctx.record(crate::evidence::MODEL_GATE, &report);
        if report.passed {
            return Ok(());
        }
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| !(c.threshold_ok && c.regression_ok))
            .map(|c| c.message.as_str())
            .collect();
        Err(StepFailure::new(format!(
            "model gate failed: {}",
            failed.join("; ")
        )))
    }
}

/// The baseline a model's version in production gives, or `None` when no
/// version is in production yet.
fn production_baseline(version: Option<ModelVersion>) -> Result<Option<Baseline>, String> {
    let Some(version) = version else {
        return Ok(None);
    };
    let mut metrics = Metrics::new();
    match &version.metrics {
        Some(m @ serde_json::Value::Object(_)) => crate::metrics::flatten("", m, &mut metrics),
        Some(_) => {
            return Err(format!(
                "baseline: the metrics registered with production model {} are not a JSON object",
                version.id()
            ));
        }
        None => {
            return Err(format!(
                "baseline: production model {} has no metrics in the registry (package it with `metrics = \"...\"`), so there is nothing to compare against",
                version.id()
            ));
        }
    }
    Ok(Some(Baseline {
        run_id: version.run_id,
        model_version: Some(version.id()),
        commit: version.commit,
        metrics,
    }))
}
