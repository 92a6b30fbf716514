//! The `drift-check` step kind: no feature of the live inputs (and not the
//! predictions) drifted from the reference data.
//!
//! ```toml
//! [apm.steps.drift]
//! kind = "drift-check"
//! with = { reference = "data/iris.csv", exclude = ["species"], target = "species", output = "label",
//!          window = "4s", traffic = { csv = "data/iris.csv", exclude = ["species"], rate = 50 } }
//! ```
//!
//! The step makes sure the released service's gateway keeps a prediction
//! log (`prediction-log` in its config, in the gateway's state directory:
//! a bounded sample of answered requests with their answers), watches
//! `window` while sending `traffic` through the gateway when given, and
//! reads the log's samples of the window. Each sampled request's inputs
//! become rows of features: an Open Inference Protocol request's first
//! input tensor (`shape [n, k]`) gives `n` rows of the reference's
//! columns (but `exclude`) in their order, a JSON object is a row as it is.
//! The predictions are the response's output tensor named `output`. The
//! rows are compared with `reference` (a CSV or JSON lines file) feature by
//! feature, and the predictions with the reference's `target` column as
//! the feature `prediction`, by `mlops_apm::drift` with the `thresholds`.
//! Drift fails the step; too few samples is no evidence and fails it too.
//! The report is recorded as `drift` evidence.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::{Diagnostic, parse_duration};
use mlops_core::{KindParams, Stage, StepAction, StepContext, StepFailure, StepKind};
use mlops_iac::StepInfra;
use mlops_release::gateway::PredictionLogConfig;
use mlops_release::service::{GatewayProgram, GatewayService};
use mlops_release::settings::ReleaseSettings;
use mlops_release::traffic::{Traffic, TrafficWire};
use serde::Deserialize;

use crate::drift::{Dataset, Thresholds, Verdict, compare};

/// The longest `window`.
const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// The prediction log's file in the gateway's state directory.
pub const LOG_FILE: &str = "predictions.jsonl";

/// The `drift-check` kind.
#[derive(Debug)]
pub struct DriftCheckKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Wire {
    reference: toml::Spanned<String>,
    #[serde(default)]
    exclude: Vec<String>,
    target: Option<String>,
    output: Option<String>,
    window: Option<toml::Spanned<String>>,
    traffic: Option<TrafficWire>,
    min_samples: Option<u64>,
    psi: Option<f64>,
    wasserstein: Option<f64>,
    ks: Option<f64>,
    js: Option<f64>,
    alpha: Option<f64>,
    per_second: Option<u32>,
}

#[derive(Debug, Clone)]
struct DriftCheck {
    service: String,
    environment: String,
    reference: PathBuf,
    exclude: Vec<String>,
    target: Option<String>,
    output: String,
    window: Duration,
    traffic: Option<Traffic>,
    thresholds: Thresholds,
    per_second: u32,
    infra: StepInfra,
    gateway: GatewayProgram,
}

impl StepKind for DriftCheckKind {
    fn name(&self) -> &'static str {
        "drift-check"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Apm)
    }

    fn summary(&self) -> &'static str {
        "no feature of the live inputs, nor the predictions, drifted from the reference data"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let wire: Wire = params.deserialize().map_err(|d| vec![d])?;
        let span = params.span();
        let mut errors = Vec::new();
        let release = params
            .section::<ReleaseSettings>(Stage::Release.name(), &[])
            .unwrap_or_default();
        let (service, model) = match (&release.service, &release.model) {
            (Some(s), Some(m)) => (s.clone(), m.clone()),
            _ => {
                if !params.section_failed(Stage::Release.name()) {
                    errors.push(Diagnostic::new(
                        "the `drift-check` kind needs `[release] service` and `model`: it reads the released service's prediction log",
                        Some(span.clone()),
                    ));
                }
                (String::new(), String::new())
            }
        };
        if wire.reference.get_ref().is_empty() {
            errors.push(Diagnostic::new(
                "`reference` must name the reference data (the training CSV)",
                Some(wire.reference.span()),
            ));
        }
        let window = match &wire.window {
            None => Some(Duration::from_secs(30)),
            Some(w) => match parse_duration("window", w) {
                Ok(d) if d <= MAX_WINDOW => Some(d),
                Ok(_) => {
                    errors.push(Diagnostic::new(
                        "`window` must be at most 1h",
                        Some(w.span()),
                    ));
                    None
                }
                Err(d) => {
                    errors.push(d);
                    None
                }
            },
        };
        let defaults = Thresholds::default();
        let mut positive = |name: &str, v: Option<f64>, default: f64| -> f64 {
            match v {
                Some(x) if x.is_finite() && x > 0.0 => x,
                Some(x) => {
                    errors.push(Diagnostic::new(
                        format!("`{name}` must be a positive number, not {x}"),
                        Some(span.clone()),
                    ));
                    default
                }
                None => default,
            }
        };
        let thresholds = Thresholds {
            psi: positive("psi", wire.psi, defaults.psi),
            wasserstein: positive("wasserstein", wire.wasserstein, defaults.wasserstein),
            ks: positive("ks", wire.ks, defaults.ks),
            js: positive("js", wire.js, defaults.js),
            alpha: positive("alpha", wire.alpha, defaults.alpha).min(0.5),
            min_samples: wire.min_samples.unwrap_or(defaults.min_samples).max(1),
        };
        let per_second = wire.per_second.unwrap_or(50);
        if !(1..=10_000).contains(&per_second) {
            errors.push(Diagnostic::new(
                "`per-second` (the prediction log's samples a second) must be 1 to 10000",
                Some(span.clone()),
            ));
        }
        let traffic = wire
            .traffic
            .as_ref()
            .map(|t| t.compile(&model, &span, &mut errors));
        let infra = if service.is_empty() {
            None
        } else {
            StepInfra::read_service(
                params,
                &toml::Spanned::new(span.clone(), service.clone()),
                None,
                &mut errors,
            )
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(window), Some(infra)) = (window, infra) else {
            return Err(vec![Diagnostic::new(
                "`drift-check` could not be compiled",
                Some(span),
            )]);
        };
        let program = mlops_release::service::mlops_program();
        let check = DriftCheck {
            service,
            environment: release.environment.clone(),
            reference: PathBuf::from(wire.reference.into_inner()),
            exclude: wire.exclude,
            target: wire.target,
            output: wire.output.unwrap_or_else(|| "label".to_owned()),
            window,
            traffic: traffic.flatten(),
            thresholds,
            per_second,
            infra,
            gateway: params
                .option::<GatewayProgram>()
                .map_or_else(|| GatewayProgram::mlops(program), |p| (*p).clone()),
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let check = check.clone();
            async move { check.run(&ctx).await }
        }))
    }
}

fn failure(e: impl std::fmt::Display) -> StepFailure {
    StepFailure::new(e.to_string())
}

/// The scalars of a (possibly nested) JSON array, in order.
fn flatten(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        x => out.push(x.clone()),
    }
}

/// The rows of features and the predictions in one sampled request.
fn rows_of(
    line: &serde_json::Value,
    features: &[String],
    output: &str,
) -> (
    Vec<serde_json::Map<String, serde_json::Value>>,
    Vec<serde_json::Value>,
) {
    let mut rows = Vec::new();
    let inputs = &line["inputs"];
    if let Some(tensor) = inputs["inputs"].as_array().and_then(|t| t.first()) {
        // Open Inference Protocol: data flat (row-major) or nested.
        let mut flat = Vec::new();
        flatten(&tensor["data"], &mut flat);
        let k = tensor["shape"]
            .as_array()
            .and_then(|s| s.get(1))
            .and_then(serde_json::Value::as_u64)
            .map_or(features.len(), |k| k as usize);
        if k == features.len() && k > 0 {
            for chunk in flat.chunks(k) {
                if chunk.len() == k {
                    rows.push(
                        features
                            .iter()
                            .cloned()
                            .zip(chunk.iter().cloned())
                            .collect(),
                    );
                }
            }
        }
    } else if let Some(object) = inputs.as_object() {
        rows.push(object.clone());
    }
    let mut predictions = Vec::new();
    if let Some(outputs) = line["outputs"]["outputs"].as_array()
        && let Some(tensor) = outputs.iter().find(|o| o["name"] == output)
    {
        let mut flat = Vec::new();
        flatten(&tensor["data"], &mut flat);
        predictions = flat;
    }
    (rows, predictions)
}

impl DriftCheck {
    async fn run(&self, ctx: &StepContext) -> Result<(), StepFailure> {
        let (_, provider, scope) = self
            .infra
            .target(ctx, &self.environment)
            .await
            .map_err(failure)?;
        let gateway = GatewayService::new(
            &scope,
            provider.as_ref(),
            ctx.ledger().clone(),
            &self.service,
            self.gateway.clone(),
        );
        let client = gateway.client().await.map_err(|e| {
            failure(format!(
                "{e}: the release stage runs the gateway of `{}` in `{}`; run it first",
                self.service, self.environment
            ))
        })?;
        // The gateway keeps a prediction log in its state directory.
        let log_path = gateway.state_dir().join(LOG_FILE);
        let mut config = client.config().await.map_err(failure)?;
        let want = PredictionLogConfig {
            per_second: self.per_second,
            ..PredictionLogConfig::at(&log_path)
        };
        if config.prediction_log.as_ref() != Some(&want) {
            config.prediction_log = Some(want);
            client.set_config(&config).await.map_err(failure)?;
            ctx.log(format!(
                "the gateway of `{}` now samples up to {} answered requests a second into {}",
                self.service,
                self.per_second,
                log_path.display()
            ));
        }
        let reference_path = ctx.cwd.join(&self.reference);
        let reference = {
            let p = reference_path.clone();
            tokio::task::spawn_blocking(move || Dataset::read(&p))
                .await
                .map_err(failure)?
                .map_err(failure)?
        };
        let mut dropped = self.exclude.clone();
        let features: Vec<String> = reference
            .column_names()
            .into_iter()
            .filter(|c| !self.exclude.contains(c) && Some(c) != self.target.as_ref())
            .collect();
        if let Some(t) = &self.target {
            dropped.retain(|c| c != t);
        }
        let from = mlops_core::ledger::now_ms();
        let sent = match &self.traffic {
            Some(t) => Some(crate::drive::drive(ctx, t, &client.proxy_url(), self.window).await?),
            None => {
                tokio::select! {
                    () = tokio::time::sleep(self.window) => {}
                    () = ctx.cancel.cancelled() => return Err(failure("cancelled")),
                }
                None
            }
        };
        let to = mlops_core::ledger::now_ms();
        // The log's writer is a thread of the gateway: a moment for it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut lines = Vec::new();
        for path in [
            {
                let mut p = log_path.clone().into_os_string();
                p.push(".1");
                PathBuf::from(p)
            },
            log_path.clone(),
        ] {
            if let Ok(text) = std::fs::read_to_string(&path) {
                lines.extend(text.lines().map(str::to_owned));
            }
        }
        let mut rows = Vec::new();
        let mut predictions = Vec::new();
        let mut sampled = 0;
        let mut malformed = 0;
        for line in &lines {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                malformed += 1;
                continue;
            };
            let ts = v["ts_ms"].as_i64().unwrap_or(0);
            if ts < from || ts > to + 1000 || v["status"] != 200 {
                continue;
            }
            sampled += 1;
            let (r, p) = rows_of(&v, &features, &self.output);
            rows.extend(r);
            predictions.extend(p);
        }
        ctx.log(format!(
            "{sampled} sampled requests in the window ({} rows, {} predictions; {malformed} malformed log lines skipped)",
            rows.len(),
            predictions.len()
        ));
        let mut current = Dataset::from_objects("the prediction log", rows);
        let mut reference = reference.without(&dropped);
        if let Some(t) = &self.target {
            reference = reference.renamed(t, "prediction");
            let preds = Dataset::from_objects(
                "predictions",
                predictions.into_iter().map(|p| {
                    let mut m = serde_json::Map::new();
                    m.insert("prediction".to_owned(), p);
                    m
                }),
            );
            current = current.with_columns_of(preds);
        }
        let report = compare(&reference, &current, &self.thresholds);
        for f in &report.features {
            ctx.log(format!(
                "{} ({}): {} — {}",
                f.feature,
                f.kind,
                f.verdict.as_str(),
                f.reason
            ));
        }
        let mut evidence = serde_json::to_value(&report).map_err(failure)?;
        if let Some(o) = evidence.as_object_mut() {
            o.insert("service".into(), self.service.clone().into());
            o.insert("environment".into(), self.environment.clone().into());
            o.insert("window_ms".into(), (self.window.as_millis() as u64).into());
            o.insert("sampled_requests".into(), sampled.into());
            o.insert("sent".into(), sent.into());
        }
        ctx.record(crate::evidence::DRIFT, &evidence);
        match report.verdict {
            Verdict::NoDrift => Ok(()),
            Verdict::Drift => Err(failure(format!(
                "drift in {}",
                report
                    .features
                    .iter()
                    .filter(|f| f.verdict == Verdict::Drift)
                    .map(|f| format!("{} ({})", f.feature, f.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
            Verdict::InsufficientData => Err(failure(format!(
                "no evidence: too few samples in the window ({sampled} sampled requests; at least {} values per feature are needed)",
                self.thresholds.min_samples
            ))),
        }
    }
}

/// One line about `drift` evidence, for `pipeline status`.
pub(crate) fn summarize(evidence: &mlops_core::Evidence) -> Option<String> {
    let b = &evidence.body;
    let features = b["features"].as_array()?.len();
    Some(format!(
        "{} over {} features of {} sampled requests{}",
        b["verdict"].as_str()?.replace('-', " "),
        features,
        b["sampled_requests"].as_u64().unwrap_or(0),
        match b["drifted"].as_array() {
            Some(d) if !d.is_empty() => format!(
                ": {}",
                d.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        }
    ))
}
