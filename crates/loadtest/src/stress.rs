//! The `stress` step kind: find the breaking point of the released service
//! — the highest arrival rate it sustains within its SLO — by stepping the
//! rate up and then bisecting between the last rate that held and the
//! first that did not.
//!
//! ```toml
//! [loadtest.steps.stress]
//! kind = "stress"
//! with = { traffic = { csv = "data/iris.csv", exclude = ["species"], rate = 100 },
//!          slo = ["p99 < 250ms", "error_rate < 1%"], max-rate = 3200,
//!          step-duration = "2s", factor = 2, bisect = 3 }
//! ```
//!
//! Each level is an open workload through the gateway (as `performance`)
//! at one rate for `step-duration` (2 s); it holds when every `slo`
//! threshold holds. Latency runs from each request's intended send time,
//! so a service that falls behind the rate shows it in its percentiles
//! (give `connections`, 64 by default, more than rate × latency, or the
//! generator's own queue is what breaks). The first level is
//! `traffic.rate`; each next one is `factor` (2)
//! times the last, up to `max-rate` (required). At the first level that
//! does not hold, `bisect` (3) more levels halve the gap. The result is
//! the highest rate that held (`sustained_rps`), the lowest that did not
//! (`broke_at`, none when even `max-rate` held), and what failed first
//! there — the thresholds missed and the errors by kind. Every level's
//! result is saved under `.mlops/loadtest/STEP/`, and the summary recorded
//! as `breaking-point` evidence. The Universal Scalability Law fitted to
//! the levels (throughput against the requests in flight, by Little's law:
//! [`crate::capacity`]) is recorded as `capacity` evidence when at least
//! three levels have responses.
//!
//! The step fails when the first level does not hold (the service breaks
//! below the starting rate: no breaking point was bracketed), or when
//! `require` is given and the sustained rate is below it.

use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::{Diagnostic, parse_duration};
use mlops_core::{KindParams, Stage, StepAction, StepContext, StepFailure, StepKind};
use mlops_release::driver::{ErrorCounts, Workload};
use mlops_release::traffic::TrafficWire;
use serde::{Deserialize, Serialize};

use crate::capacity::{Observation, UslFit, fit_usl};
use crate::generator::{Threshold, Verdict, check_all};
use crate::performance::{Load, MAX_RATE, Target, failure, save, send};

/// The most levels a `stress` step runs.
const MAX_LEVELS: usize = 40;

/// The `stress` kind.
#[derive(Debug)]
pub struct StressKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Wire {
    traffic: TrafficWire,
    slo: Vec<toml::Spanned<String>>,
    max_rate: f64,
    step_duration: Option<toml::Spanned<String>>,
    factor: Option<f64>,
    bisect: Option<u32>,
    require: Option<f64>,
    connections: Option<usize>,
    timeout: Option<toml::Spanned<String>>,
    // `scalability` only.
    replicas: Option<Vec<u32>>,
    target_rate: Option<f64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Stress {
    pub(crate) target: Target,
    pub(crate) load: Load,
    pub(crate) start: f64,
    pub(crate) max_rate: f64,
    step: Duration,
    factor: f64,
    bisect: u32,
    require: Option<f64>,
    /// A `scalability` step's replica counts and target rate.
    pub(crate) scalability: Option<crate::scalability::Plan>,
}

impl StepKind for StressKind {
    fn name(&self) -> &'static str {
        "stress"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Loadtest)
    }

    fn summary(&self) -> &'static str {
        "the breaking point: the highest arrival rate the released service sustains within its SLO"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        compile(self.name(), params)
    }
}

/// The `stress` and `scalability` kinds' compile: the same search for a
/// breaking point, and for `scalability` the replica counts it runs at.
pub(crate) fn compile(
    kind: &'static str,
    params: &KindParams<'_>,
) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
    {
        let wire: Wire = params.deserialize().map_err(|d| vec![d])?;
        let span = params.span();
        let mut errors = Vec::new();
        let scalable = kind == "scalability";
        if !scalable && (wire.replicas.is_some() || wire.target_rate.is_some()) {
            errors.push(Diagnostic::new(
                "`replicas` and `target-rate` are keys of the `scalability` kind",
                Some(span.clone()),
            ));
        }
        let mut problem = |text: String| errors.push(Diagnostic::new(text, Some(span.clone())));
        if !(wire.max_rate.is_finite() && wire.max_rate > 0.0 && wire.max_rate <= MAX_RATE) {
            problem(format!(
                "`max-rate` must be above 0 and at most {MAX_RATE} requests per second"
            ));
        }
        let factor = wire.factor.unwrap_or(2.0);
        if !(factor.is_finite() && (1.1..=10.0).contains(&factor)) {
            problem(format!("`factor` must be from 1.1 to 10, not {factor}"));
        }
        let bisect = wire.bisect.unwrap_or(3);
        if bisect > 10 {
            problem(format!("`bisect` must be at most 10, not {bisect}"));
        }
        let connections = wire.connections.unwrap_or(64);
        if !(1..=1024).contains(&connections) {
            problem(format!(
                "`connections` must be 1 to 1024, not {connections}"
            ));
        }
        if let Some(r) = wire.require
            && !(r.is_finite() && r > 0.0)
        {
            problem(format!("`require` must be a positive rate, not {r}"));
        }
        if wire.slo.is_empty() {
            problem(
                "`slo` needs at least one threshold, like \"p99 < 250ms\": a level holds when they all do"
                    .to_owned(),
            );
        }
        let mut thresholds = Vec::new();
        for t in &wire.slo {
            match Threshold::parse(t.get_ref()) {
                Ok(threshold) => thresholds.push(threshold),
                Err(e) => errors.push(Diagnostic::new(e.to_string(), Some(t.span()))),
            }
        }
        let step = short_duration(
            "step-duration",
            wire.step_duration.as_ref(),
            2,
            600,
            &mut errors,
        );
        let timeout = short_duration("timeout", wire.timeout.as_ref(), 10, 60, &mut errors);
        let target = Target::compile(kind, params, &mut errors);
        let model = target.as_ref().map_or("model", |(_, m)| m.as_str());
        let traffic = wire
            .traffic
            .compile_up_to(model, &span, &mut errors, MAX_RATE);
        if let Some(t) = &traffic
            && t.rate >= wire.max_rate
        {
            errors.push(Diagnostic::new(
                "`traffic.rate` (the first level) must be below `max-rate`",
                Some(span.clone()),
            ));
        }
        let plan = match (scalable, &target) {
            (true, Some((t, _))) => crate::scalability::Plan::compile(
                &t.infra,
                &t.service,
                wire.replicas.as_deref(),
                wire.target_rate,
                &span,
                &mut errors,
            ),
            _ => None,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some((target, _)), Some(traffic), Some(step), Some(timeout)) =
            (target, traffic, step, timeout)
        else {
            return Err(vec![Diagnostic::new(
                format!("`{kind}` could not be compiled"),
                Some(span),
            )]);
        };
        if scalable && plan.is_none() {
            return Err(vec![Diagnostic::new(
                "`scalability` could not be compiled",
                Some(span),
            )]);
        }
        let stress = Stress {
            target,
            start: traffic.rate,
            load: Load {
                workload: Workload::constant(traffic.rate, step),
                traffic,
                connections,
                timeout,
                max_requests: u64::MAX,
                thresholds,
                batch: None,
            },
            max_rate: wire.max_rate,
            step,
            factor,
            bisect,
            require: wire.require,
            scalability: plan,
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let stress = stress.clone();
            async move {
                if stress.scalability.is_some() {
                    crate::scalability::run(&stress, &ctx).await
                } else {
                    stress.run(&ctx).await
                }
            }
        }))
    }
}

/// A duration from 1 ms to `max_s` seconds, `default_s` when absent.
fn short_duration(
    what: &str,
    value: Option<&toml::Spanned<String>>,
    default_s: u64,
    max_s: u64,
    errors: &mut Vec<Diagnostic>,
) -> Option<Duration> {
    let Some(value) = value else {
        return Some(Duration::from_secs(default_s));
    };
    match parse_duration(what, value) {
        Ok(d) if d <= Duration::from_secs(max_s) => Some(d),
        Ok(_) => {
            errors.push(Diagnostic::new(
                format!("`{what}` must be at most {max_s}s"),
                Some(value.span()),
            ));
            None
        }
        Err(d) => {
            errors.push(d);
            None
        }
    }
}

/// One level of a stress test.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    /// The arrival rate asked for.
    pub rate: f64,
    /// The rate achieved.
    pub rps: f64,
    /// Requests with an outcome.
    pub requests: u64,
    /// Failed requests, by kind.
    pub errors: ErrorCounts,
    /// The 99th percentile latency, in ms; `None` without a response.
    pub p99_ms: Option<f64>,
    /// The mean latency, in ms; `None` without a response.
    pub mean_ms: Option<f64>,
    /// Whether every SLO threshold held.
    pub held: bool,
    /// The thresholds missed, each saying by how much.
    pub failed: Vec<String>,
    /// The level's result file, relative to the project.
    pub result: String,
}

/// What a `stress` step records as `breaking-point` evidence.
#[derive(Debug, Clone, Serialize)]
pub struct BreakingPoint {
    /// `pass` or `fail`.
    pub verdict: String,
    /// The service stressed.
    pub service: String,
    /// Its environment.
    pub environment: String,
    /// The URL the load went to (the gateway's).
    pub target: String,
    /// The SLO thresholds a level must hold.
    pub slo: Vec<String>,
    /// The highest rate asked for that held; `None` when even the first
    /// level broke.
    pub sustained_rate: Option<f64>,
    /// The rate achieved at that level.
    pub sustained_rps: Option<f64>,
    /// The lowest rate asked for that did not hold; `None` when
    /// `max-rate` held.
    pub broke_at: Option<f64>,
    /// What failed first at `broke_at`.
    pub failed_first: Vec<String>,
    /// Every level, in the order run.
    pub levels: Vec<Level>,
    /// Why the step failed, when it did.
    pub reason: Option<String>,
}

impl Stress {
    async fn run(&self, ctx: &StepContext) -> Result<(), StepFailure> {
        let base = self.target.proxy_url(ctx).await?;
        let url = format!("{base}{}", self.load.traffic.path);
        let slo: Vec<String> = self
            .load
            .thresholds
            .iter()
            .map(|t| t.text.clone())
            .collect();
        ctx.log(format!(
            "stressing `{}` in `{}` through its gateway ({url}): from {}/s, ×{} up to {}/s, {} s a level, then {} bisections; a level holds when {}",
            self.target.service,
            self.target.environment,
            self.start,
            self.factor,
            self.max_rate,
            self.step.as_secs_f64(),
            self.bisect,
            slo.join(" and ")
        ));
        let Search {
            levels,
            held,
            broke,
        } = self.search(ctx, &url, self.start, "").await?;
        let sustained = held.map(|i| &levels[i]);
        let broken = broke.map(|i| &levels[i]);
        let reason = match (sustained, self.require) {
            (None, _) => Some(format!(
                "the first level, {}/s, already broke the SLO ({}): lower `traffic.rate` to bracket the breaking point",
                self.start,
                broken.map(|b| b.failed.join("; ")).unwrap_or_default()
            )),
            (Some(s), Some(required)) if s.rate < required => Some(format!(
                "the service sustains {}/s within the SLO, below the {required}/s required",
                s.rate
            )),
            _ => None,
        };
        match (sustained, broken) {
            (Some(s), Some(b)) => ctx.log(format!(
                "breaking point: {}/s held (achieved {:.1}/s); {}/s broke: {}",
                s.rate,
                s.rps,
                b.rate,
                b.failed.join("; ")
            )),
            (Some(s), None) => ctx.log(format!(
                "no breaking point up to max-rate: {}/s held (achieved {:.1}/s)",
                s.rate, s.rps
            )),
            _ => {}
        }
        let evidence = BreakingPoint {
            verdict: if reason.is_none() { "pass" } else { "fail" }.to_owned(),
            service: self.target.service.clone(),
            environment: self.target.environment.clone(),
            target: url,
            slo,
            sustained_rate: sustained.map(|s| s.rate),
            sustained_rps: sustained.map(|s| s.rps),
            broke_at: broken.map(|b| b.rate),
            failed_first: broken.map(|b| b.failed.clone()).unwrap_or_default(),
            levels: levels.clone(),
            reason: reason.clone(),
        };
        ctx.record(crate::evidence::BREAKING_POINT, &evidence);
        self.capacity(ctx, &levels);
        match reason {
            Some(reason) => Err(failure(reason)),
            None => Ok(()),
        }
    }

    /// Steps the rate up from `start` by the factor until a level breaks
    /// (or `max-rate` holds), then bisects; level files are named with
    /// `prefix`.
    pub(crate) async fn search(
        &self,
        ctx: &StepContext,
        url: &str,
        start: f64,
        prefix: &str,
    ) -> Result<Search, StepFailure> {
        let mut levels: Vec<Level> = Vec::new();
        let (mut held, mut broke): (Option<usize>, Option<usize>) = (None, None);
        let mut rate = start;
        // Step up.
        loop {
            let at = self.level(ctx, url, rate, prefix, levels.len()).await?;
            levels.push(at);
            let last = levels.len() - 1;
            if levels[last].held {
                held = Some(last);
                if rate >= self.max_rate || levels.len() >= MAX_LEVELS {
                    break;
                }
                rate = (rate * self.factor).min(self.max_rate);
            } else {
                broke = Some(last);
                break;
            }
        }
        // Bisect between the last level that held and the first that broke.
        if let (Some(_), Some(_)) = (held, broke) {
            for _ in 0..self.bisect {
                let (lo, hi) = (
                    levels[held.expect("bracketed")].rate,
                    levels[broke.expect("bracketed")].rate,
                );
                let mid = ((lo + hi) / 2.0).round();
                if mid <= lo || mid >= hi || levels.len() >= MAX_LEVELS {
                    break;
                }
                let at = self.level(ctx, url, mid, prefix, levels.len()).await?;
                levels.push(at);
                let last = levels.len() - 1;
                if levels[last].held {
                    held = Some(last);
                } else {
                    broke = Some(last);
                }
            }
        }
        Ok(Search {
            levels,
            held,
            broke,
        })
    }

    /// Fits the USL to the levels — throughput against the requests in
    /// flight (Little's law: rate × mean latency) — and records it as
    /// `capacity` evidence; says in the log why not when it cannot.
    fn capacity(&self, ctx: &StepContext, levels: &[Level]) {
        let points: Vec<Observation> = levels
            .iter()
            .filter_map(|l| {
                let mean = l.mean_ms?;
                (l.rps > 0.0 && mean > 0.0).then(|| Observation {
                    concurrency: l.rps * mean / 1000.0,
                    throughput: l.rps,
                })
            })
            .collect();
        match fit_usl(&points) {
            Ok(fit) => {
                ctx.log(format!(
                    "capacity (USL over {} levels, concurrency = requests in flight): λ = {:.1}/s, σ = {:.4}, κ = {:.6}, R² = {:.4}; {}",
                    fit.points,
                    fit.lambda,
                    fit.sigma,
                    fit.kappa,
                    fit.r_squared,
                    match fit.peak_concurrency {
                        Some(n) => format!("peak {:.1}/s at {n:.1} in flight", fit.peak_throughput),
                        None if fit.peak_throughput.is_finite() => {
                            format!("no peak, approaching {:.1}/s", fit.peak_throughput)
                        }
                        None => "no limit in sight".to_owned(),
                    }
                ));
                let evidence = Capacity {
                    model: "usl".to_owned(),
                    service: self.target.service.clone(),
                    environment: self.target.environment.clone(),
                    basis:
                        "throughput against requests in flight (Little's law) at each stress level"
                            .to_owned(),
                    fit,
                    points,
                    required_rate: self.require,
                    concurrency_for_required: self.require.and_then(|r| fit.concurrency_for(r)),
                };
                ctx.record(crate::evidence::CAPACITY, &evidence);
            }
            Err(e) => ctx.log(format!("no capacity model: {e}")),
        }
    }

    /// Runs one level at `rate`; the `n`th (from 0).
    async fn level(
        &self,
        ctx: &StepContext,
        url: &str,
        rate: f64,
        prefix: &str,
        n: usize,
    ) -> Result<Level, StepFailure> {
        let workload = Workload::constant(rate, self.step);
        let mut result = send(ctx, &self.load, url, workload).await?;
        let latency = result.latency().map_err(failure)?;
        result.thresholds = check_all(&self.load.thresholds, &result.report, &latency);
        let saved = save(ctx, &format!("{prefix}level-{:02}-{rate}", n + 1), &result)?;
        let r = &result.report;
        let failed: Vec<String> = result
            .thresholds
            .iter()
            .filter(|v| !v.passed)
            .map(|v: &Verdict| v.detail.clone())
            .collect();
        let level = Level {
            rate,
            rps: r.rps,
            requests: r.requests,
            errors: r.errors_by_kind,
            p99_ms: r.latency_ms.map(|l| l.p99),
            mean_ms: r.latency_ms.map(|l| l.mean),
            held: failed.is_empty(),
            failed,
            result: saved,
        };
        ctx.log(format!(
            "level {}: {rate}/s → {:.1}/s, {} requests, {} errors, p99 {} — {}",
            n + 1,
            level.rps,
            level.requests,
            level.errors.total(),
            level
                .p99_ms
                .map_or_else(|| "none".to_owned(), |p| format!("{p:.1} ms")),
            if level.held {
                "held".to_owned()
            } else {
                format!("broke: {}", level.failed.join("; "))
            }
        ));
        Ok(level)
    }
}

/// The levels of one search for a breaking point.
pub(crate) struct Search {
    /// Every level, in the order run.
    pub(crate) levels: Vec<Level>,
    /// The highest level that held.
    pub(crate) held: Option<usize>,
    /// The lowest level that broke.
    pub(crate) broke: Option<usize>,
}

/// What a `stress` step records as `capacity` evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    /// `usl`.
    pub model: String,
    /// The service.
    pub service: String,
    /// Its environment.
    pub environment: String,
    /// What the concurrency is.
    pub basis: String,
    /// The fit: `lambda`, `sigma`, `kappa`, `r_squared`, `rmse`,
    /// `peak_concurrency`, `peak_throughput`.
    pub fit: UslFit,
    /// The points fitted.
    pub points: Vec<Observation>,
    /// The `require` rate, when given.
    pub required_rate: Option<f64>,
    /// The concurrency the model needs for it; `None` when beyond the
    /// peak.
    pub concurrency_for_required: Option<f64>,
}

/// One line about `capacity` evidence, for `pipeline status`.
pub(crate) fn summarize_capacity(evidence: &mlops_core::Evidence) -> Option<String> {
    let b = &evidence.body;
    if b["basis"] == "replicas" {
        let rows: Vec<String> = b["rows"]
            .as_array()?
            .iter()
            .map(|r| {
                format!(
                    "{}: {}",
                    r["replicas"],
                    r["sustained_rate"]
                        .as_f64()
                        .map_or_else(|| "broke".to_owned(), |x| format!("{x}/s"))
                )
            })
            .collect();
        let needs = match (
            b["required_rate"].as_f64(),
            b["replicas_for_required"].as_u64(),
        ) {
            (Some(rate), Some(n)) => format!("; {rate}/s needs {n} replicas"),
            (Some(rate), None) => format!("; {rate}/s out of reach"),
            _ => String::new(),
        };
        return Some(format!(
            "scalability of {} {}: {}{needs}",
            b["service"].as_str()?,
            b["verdict"].as_str()?,
            rows.join(", ")
        ));
    }
    let fit = &b["fit"];
    let peak = match (
        fit["peak_concurrency"].as_f64(),
        fit["peak_throughput"].as_f64(),
    ) {
        (Some(n), Some(x)) => format!("peak {x:.0}/s at {n:.1}"),
        (None, Some(x)) => format!("approaching {x:.0}/s"),
        _ => "no limit in sight".to_owned(),
    };
    Some(format!(
        "capacity of {} (USL, {} points): σ {:.4}, κ {:.6}, R² {:.3}, {peak}",
        b["service"].as_str()?,
        fit["points"].as_u64()?,
        fit["sigma"].as_f64()?,
        fit["kappa"].as_f64()?,
        fit["r_squared"].as_f64()?,
    ))
}

/// One line about `breaking-point` evidence, for `pipeline status`.
pub(crate) fn summarize(evidence: &mlops_core::Evidence) -> Option<String> {
    let b = &evidence.body;
    let service = b["service"].as_str()?;
    let levels = b["levels"].as_array().map_or(0, Vec::len);
    Some(
        match (b["sustained_rate"].as_f64(), b["broke_at"].as_f64()) {
            (Some(s), Some(broke)) => format!(
                "breaking point of {service}: {s}/s held, {broke}/s broke ({}); {levels} levels",
                b["failed_first"]
                    .as_array()
                    .and_then(|f| f.first())
                    .and_then(|f| f.as_str())
                    .unwrap_or("?")
            ),
            (Some(s), None) => {
                format!("no breaking point of {service} up to {s}/s; {levels} levels")
            }
            _ => format!("{service} broke at the first level; {levels} levels"),
        },
    )
}
