//! The `performance` step kind: steady (or staged) load on the released
//! service, through its gateway, judged by thresholds.
//!
//! ```toml
//! [loadtest.steps.performance]
//! kind = "performance"
//! with = { traffic = { csv = "data/iris.csv", exclude = ["species"], rate = 100 },
//!          duration = "5s", thresholds = ["p99 < 250ms", "error_rate < 1%"] }
//! ```
//!
//! The load goes to the gateway of `[release] service` in the release
//! environment (`[release] environment`), so monitoring sees it as any
//! other traffic. `traffic` is the table the release and monitoring steps
//! use (its `rate` up to 100,000 a second here), sent as an open workload
//! for `duration` (10 s by default, at most an hour); `stages` (a list of
//! `{ duration, from, to }`) replaces the constant rate with steps and
//! ramps. `connections` (32) bounds the keep-alive connections, `timeout`
//! (10 s) each request, `max-requests` the count. Every threshold must hold
//! (`mlops_loadtest::generator::Threshold`); a run in which not one
//! request got a response fails whatever the thresholds. The result (with
//! its histograms), the per-second CSV and an HTML report are written
//! under `.mlops/loadtest/STEP/`, and a summary is recorded as `load-test`
//! evidence.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::{Diagnostic, parse_duration};
use mlops_core::{KindParams, Stage, StepAction, StepContext, StepFailure, StepKind};
use mlops_iac::StepInfra;
use mlops_release::driver::{DriverSettings, LatencySummary, RateStage, Samples, Workload};
use mlops_release::service::{GatewayClient, GatewayProgram, GatewayService};
use mlops_release::settings::ReleaseSettings;
use mlops_release::traffic::{RequestSource, Traffic, TrafficWire, load_samples};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::generator::{self, LoadResult, Threshold, Verdict, check_all, per_second_csv};

/// The highest arrival rate a load-test step may ask for.
pub const MAX_RATE: f64 = 100_000.0;
/// The longest load-test step.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3600);

/// The `performance` kind.
#[derive(Debug)]
pub struct PerformanceKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Wire {
    traffic: TrafficWire,
    duration: Option<toml::Spanned<String>>,
    stages: Option<Vec<StageWire>>,
    connections: Option<usize>,
    timeout: Option<toml::Spanned<String>>,
    max_requests: Option<u64>,
    #[serde(default)]
    thresholds: Vec<toml::Spanned<String>>,
    // `volume` only.
    batch: Option<usize>,
    // `endurance` only.
    max_latency_drift: Option<toml::Spanned<String>>,
    max_memory_growth: Option<toml::Spanned<String>>,
    sample_every: Option<toml::Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageWire {
    duration: toml::Spanned<String>,
    from: f64,
    to: f64,
}

/// Where a load-test step sends its load: the released service's gateway.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) service: String,
    pub(crate) environment: String,
    pub(crate) infra: StepInfra,
    pub(crate) gateway: GatewayProgram,
}

impl Target {
    /// Reads `[release] service`, `model` and `environment` and the
    /// service's infrastructure; the model names the default path.
    pub(crate) fn compile(
        kind: &str,
        params: &KindParams<'_>,
        errors: &mut Vec<Diagnostic>,
    ) -> Option<(Self, String)> {
        let span = params.span();
        let release = params
            .section::<ReleaseSettings>(Stage::Release.name(), &[])
            .unwrap_or_default();
        let (Some(service), Some(model)) = (&release.service, &release.model) else {
            if !params.section_failed(Stage::Release.name()) {
                errors.push(Diagnostic::new(
                    format!(
                        "the `{kind}` kind needs `[release] service` and `model`: it load-tests the released service through its gateway"
                    ),
                    Some(span),
                ));
            }
            return None;
        };
        let infra = StepInfra::read_service(
            params,
            &toml::Spanned::new(span, service.clone()),
            None,
            errors,
        )?;
        let gateway = params.option::<GatewayProgram>().map_or_else(
            || GatewayProgram::mlops(mlops_release::service::mlops_program()),
            |p| (*p).clone(),
        );
        Some((
            Self {
                service: service.clone(),
                environment: release.environment.clone(),
                infra,
                gateway,
            },
            model.clone(),
        ))
    }

    /// The gateway's data-plane URL.
    pub(crate) async fn proxy_url(&self, ctx: &StepContext) -> Result<String, StepFailure> {
        let client = self.client(ctx).await?;
        Ok(client.proxy_url().trim_end_matches('/').to_owned())
    }

    /// A client of the gateway's admin API.
    pub(crate) async fn client(&self, ctx: &StepContext) -> Result<GatewayClient, StepFailure> {
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
        gateway.client().await.map_err(|e| {
            failure(format!(
                "{e}: the release stage runs the gateway of `{}` in `{}`; run it first",
                self.service, self.environment
            ))
        })
    }
}

/// How much load, how sent, and the checks on the result.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) traffic: Traffic,
    pub(crate) workload: Workload,
    pub(crate) connections: usize,
    pub(crate) timeout: Duration,
    pub(crate) max_requests: u64,
    pub(crate) thresholds: Vec<Threshold>,
    /// Rows of the CSV in each request (`volume`).
    pub(crate) batch: Option<usize>,
}

#[derive(Debug, Clone)]
struct Performance {
    target: Target,
    load: Load,
    /// What an `endurance` step checks beyond the thresholds.
    endurance: Option<crate::endurance::Checks>,
    /// `performance`, `endurance` or `volume`.
    kind: &'static str,
}

impl StepKind for PerformanceKind {
    fn name(&self) -> &'static str {
        "performance"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Loadtest)
    }

    fn summary(&self) -> &'static str {
        "steady or staged load on the released service, through its gateway, judged by thresholds"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        compile(self.name(), params)
    }
}

/// The `performance` and `endurance` kinds' compile: the same load, and
/// for `endurance` its drift and memory checks.
pub(crate) fn compile(
    kind: &'static str,
    params: &KindParams<'_>,
) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
    let endurance = kind == "endurance";
    let volume = kind == "volume";
    {
        let wire: Wire = params.deserialize().map_err(|d| vec![d])?;
        let span = params.span();
        let mut errors = Vec::new();
        if !endurance {
            for (key, given) in [
                ("max-latency-drift", wire.max_latency_drift.is_some()),
                ("max-memory-growth", wire.max_memory_growth.is_some()),
                ("sample-every", wire.sample_every.is_some()),
            ] {
                if given {
                    errors.push(Diagnostic::new(
                        format!("`{key}` is a key of the `endurance` kind"),
                        Some(span.clone()),
                    ));
                }
            }
        }
        let batch = match (volume, wire.batch) {
            (true, Some(b)) if (1..=100_000).contains(&b) => Some(b),
            (true, Some(b)) => {
                errors.push(Diagnostic::new(
                    format!("`batch` must be 1 to 100000 rows a request, not {b}"),
                    Some(span.clone()),
                ));
                None
            }
            (true, None) => {
                errors.push(Diagnostic::new(
                    "the `volume` kind needs `batch`: the rows of `traffic.csv` in each request",
                    Some(span.clone()),
                ));
                None
            }
            (false, Some(_)) => {
                errors.push(Diagnostic::new(
                    "`batch` is a key of the `volume` kind",
                    Some(span.clone()),
                ));
                None
            }
            (false, None) => None,
        };
        let checks = endurance
            .then(|| {
                crate::endurance::Checks::compile(
                    wire.max_latency_drift.as_ref(),
                    wire.max_memory_growth.as_ref(),
                    wire.sample_every.as_ref(),
                    &mut errors,
                )
            })
            .flatten();
        let target = Target::compile(kind, params, &mut errors);
        let model = target.as_ref().map_or("model", |(_, m)| m.as_str());
        let traffic = wire
            .traffic
            .compile_up_to(model, &span, &mut errors, MAX_RATE);
        let duration = if endurance {
            crate::endurance::duration(wire.duration.as_ref(), &mut errors)
        } else {
            bounded_duration("duration", wire.duration.as_ref(), 10, &mut errors)
        };
        let mut stages = Vec::new();
        for (i, stage) in wire.stages.iter().flatten().enumerate() {
            let d = bounded_duration("duration", Some(&stage.duration), 1, &mut errors);
            for rate in [stage.from, stage.to] {
                if !(rate.is_finite() && (0.0..=MAX_RATE).contains(&rate)) {
                    errors.push(Diagnostic::new(
                        format!(
                            "stage {}: a rate must be from 0 to {MAX_RATE} requests per second, not {rate}",
                            i + 1
                        ),
                        Some(stage.duration.span()),
                    ));
                }
            }
            stages.push(RateStage {
                duration: d.unwrap_or_default(),
                from: stage.from,
                to: stage.to,
            });
        }
        if wire.stages.as_ref().is_some_and(Vec::is_empty) {
            errors.push(Diagnostic::new(
                "`stages` needs at least one `{ duration, from, to }`",
                Some(span.clone()),
            ));
        }
        if stages.iter().map(|s| s.duration).sum::<Duration>() > MAX_DURATION {
            errors.push(Diagnostic::new(
                "the stages last longer than 1h",
                Some(span.clone()),
            ));
        }
        if !stages.is_empty() && stages.iter().all(|s| s.from == 0.0 && s.to == 0.0) {
            errors.push(Diagnostic::new(
                "every stage's rate is 0: the stages would send no request",
                Some(span.clone()),
            ));
        }
        let connections = wire.connections.unwrap_or(32);
        if !(1..=1024).contains(&connections) {
            errors.push(Diagnostic::new(
                format!("`connections` must be 1 to 1024, not {connections}"),
                Some(span.clone()),
            ));
        }
        let timeout = match &wire.timeout {
            None => Some(Duration::from_secs(10)),
            Some(t) => match parse_duration("timeout", t) {
                Ok(d) if d <= Duration::from_secs(60) => Some(d),
                Ok(_) => {
                    errors.push(Diagnostic::new(
                        "`timeout` must be at most 60s",
                        Some(t.span()),
                    ));
                    None
                }
                Err(d) => {
                    errors.push(d);
                    None
                }
            },
        };
        let mut thresholds = Vec::new();
        for t in &wire.thresholds {
            match Threshold::parse(t.get_ref()) {
                Ok(threshold) => thresholds.push(threshold),
                Err(e) => errors.push(Diagnostic::new(e.to_string(), Some(t.span()))),
            }
        }
        let max_requests = wire.max_requests.unwrap_or(10_000_000);
        if max_requests == 0 {
            errors.push(Diagnostic::new(
                "`max-requests` must be at least 1",
                Some(span.clone()),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some((target, _)), Some(traffic), Some(duration), Some(timeout)) =
            (target, traffic, duration, timeout)
        else {
            return Err(vec![Diagnostic::new(
                format!("`{kind}` could not be compiled"),
                Some(span),
            )]);
        };
        if batch.is_some() && !matches!(traffic.source, RequestSource::Csv(..)) {
            return Err(vec![Diagnostic::new(
                "`batch` needs `traffic.csv`: its rows are batched into requests",
                Some(span),
            )]);
        }
        if (endurance && checks.is_none()) || (volume && batch.is_none()) {
            return Err(vec![Diagnostic::new(
                "`endurance` could not be compiled",
                Some(span),
            )]);
        }
        let workload = if stages.is_empty() {
            Workload::constant(traffic.rate, duration)
        } else {
            Workload::Open { stages }
        };
        let step = Performance {
            target,
            load: Load {
                traffic,
                workload,
                connections,
                timeout,
                max_requests,
                thresholds,
                batch,
            },
            endurance: checks,
            kind,
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let step = step.clone();
            async move { step.run(&ctx).await }
        }))
    }
}

/// A duration of at most an hour, `default_s` seconds when absent.
pub(crate) fn bounded_duration(
    what: &str,
    value: Option<&toml::Spanned<String>>,
    default_s: u64,
    errors: &mut Vec<Diagnostic>,
) -> Option<Duration> {
    let Some(value) = value else {
        return Some(Duration::from_secs(default_s));
    };
    match parse_duration(what, value) {
        Ok(d) if d <= MAX_DURATION => Some(d),
        Ok(_) => {
            errors.push(Diagnostic::new(
                format!("`{what}` must be at most 1h"),
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

pub(crate) fn failure(e: impl std::fmt::Display) -> StepFailure {
    StepFailure::new(e.to_string())
}

/// What a load-test step records as `load-test` evidence.
#[derive(Debug, Clone, Serialize)]
pub struct LoadTestEvidence {
    /// The step kind: `performance`, `endurance` or `volume`.
    pub kind: String,
    /// The rows in each request (`volume`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// The mean request body, in bytes.
    pub request_bytes: f64,
    /// Rows a second (`volume`: the rate times the batch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<f64>,
    /// `pass` or `fail`.
    pub verdict: String,
    /// The service load-tested.
    pub service: String,
    /// The environment it runs in.
    pub environment: String,
    /// The URL the load went to (the gateway's).
    pub target: String,
    /// The mean arrival rate asked for.
    pub target_rps: Option<f64>,
    /// Requests with an outcome.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// The achieved rate.
    pub rps: f64,
    /// Seconds from the first due request to the last outcome.
    pub elapsed_s: f64,
    /// Latency of the responses.
    pub latency_ms: Option<LatencySummary>,
    /// The thresholds, checked.
    pub thresholds: Vec<Verdict>,
    /// The result file (histograms included), relative to the project.
    pub result: String,
    /// An `endurance` step's latency drift and memory growth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endurance: Option<crate::endurance::Report>,
}

/// Sends `load` to `url` until it ends or the step is cancelled.
pub(crate) async fn send(
    ctx: &StepContext,
    load: &Load,
    url: &str,
    workload: Workload,
) -> Result<LoadResult, StepFailure> {
    let samples = match (load.batch, &load.traffic.source) {
        (Some(batch), RequestSource::Csv(path, columns)) => {
            let (path, columns) = (ctx.cwd.join(path), columns.clone());
            tokio::task::spawn_blocking(move || Samples::from_csv_batched(&path, &columns, batch))
                .await
                .map_err(failure)?
                .map_err(|e| failure(format!("the load's samples: {e}")))?
        }
        _ => load_samples(ctx, &load.traffic.source).await?,
    };
    let mut settings = DriverSettings::with_workload(url, workload, load.max_requests);
    settings.connections = load.connections;
    settings.timeout = load.timeout;
    settings.keep_second_histograms = true;
    let driver = settings.compile(samples).map_err(failure)?;
    let stop = CancellationToken::new();
    let watch = {
        let (cancel, stop) = (ctx.cancel.clone(), stop.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.cancel();
        })
    };
    let result = generator::run(&driver, &stop, None).await;
    watch.abort();
    if ctx.cancel.is_cancelled() {
        return Err(failure("cancelled"));
    }
    result.map_err(failure)
}

/// Writes the result, its per-second CSV and its HTML report under
/// `.mlops/loadtest/STEP/NAME.{json,csv,html}`; the JSON's path, relative
/// to the project.
pub(crate) fn save(
    ctx: &StepContext,
    name: &str,
    result: &LoadResult,
) -> Result<String, StepFailure> {
    let relative = PathBuf::from(".mlops").join("loadtest").join(&ctx.step);
    let dir = ctx.project_root.join(&relative);
    std::fs::create_dir_all(&dir)
        .map_err(|e| failure(format!("cannot create {}: {e}", dir.display())))?;
    let json = serde_json::to_string_pretty(result).map_err(failure)?;
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, json)
        .map_err(|e| failure(format!("cannot write {}: {e}", file.display())))?;
    let csv = dir.join(format!("{name}.csv"));
    std::fs::write(&csv, per_second_csv(result))
        .map_err(|e| failure(format!("cannot write {}: {e}", csv.display())))?;
    let html = dir.join(format!("{name}.html"));
    let title = format!("{} · {name}", ctx.step);
    std::fs::write(&html, generator::html_report(result, &title))
        .map_err(|e| failure(format!("cannot write {}: {e}", html.display())))?;
    Ok(relative.join(format!("{name}.json")).display().to_string())
}

impl Performance {
    async fn run(&self, ctx: &StepContext) -> Result<(), StepFailure> {
        let client = self.target.client(ctx).await?;
        let base = client.proxy_url().trim_end_matches('/').to_owned();
        let url = format!("{base}{}", self.load.traffic.path);
        ctx.log(format!(
            "load on `{}` in `{}` through its gateway: {url}, {}",
            self.target.service,
            self.target.environment,
            describe(&self.load.workload)
        ));
        // An endurance run samples the replicas' memory while it runs.
        let sampler = match &self.endurance {
            Some(checks) => {
                let config = client.config().await.map_err(failure)?;
                let replicas: Vec<String> = config
                    .variants
                    .iter()
                    .flat_map(|v| v.replicas.iter().cloned())
                    .collect();
                Some(crate::endurance::Sampler::start(
                    replicas,
                    checks.sample_every,
                ))
            }
            None => None,
        };
        let mut result = send(ctx, &self.load, &url, self.load.workload.clone()).await?;
        let endurance = match (&self.endurance, sampler) {
            (Some(checks), Some(sampler)) => {
                let memory = sampler.finish().await;
                Some(crate::endurance::report(checks, &result, memory).map_err(failure)?)
            }
            _ => None,
        };
        let latency = result.latency().map_err(failure)?;
        result.thresholds = check_all(&self.load.thresholds, &result.report, &latency);
        let saved = save(ctx, "result", &result)?;
        for line in generator::summary_table(&result).lines() {
            ctx.log(line);
        }
        ctx.log(format!(
            "result in {saved}, per-second series and report beside it (.csv, .html)"
        ));
        let r = &result.report;
        let answered = r.status.informational
            + r.status.success
            + r.status.redirection
            + r.status.client_error
            + r.status.server_error;
        let failed: Vec<&Verdict> = result.thresholds.iter().filter(|v| !v.passed).collect();
        let mut problems: Vec<String> = failed.iter().map(|v| v.detail.clone()).collect();
        if let Some(e) = &endurance {
            for line in e.lines() {
                ctx.log(line);
            }
            problems.extend(e.problems.iter().cloned());
        }
        let passed = problems.is_empty() && answered > 0;
        let evidence = LoadTestEvidence {
            kind: self.kind.to_owned(),
            batch: self.load.batch,
            request_bytes: if r.requests > 0 {
                r.bytes_sent as f64 / r.requests as f64
            } else {
                0.0
            },
            rows_per_second: self.load.batch.map(|b| r.rps * b as f64),
            verdict: if passed { "pass" } else { "fail" }.to_owned(),
            service: self.target.service.clone(),
            environment: self.target.environment.clone(),
            target: url.clone(),
            target_rps: r.target_rps,
            requests: r.requests,
            errors: r.errors,
            error_rate: if r.requests > 0 {
                r.errors as f64 / r.requests as f64
            } else {
                0.0
            },
            rps: r.rps,
            elapsed_s: r.elapsed_s,
            latency_ms: r.latency_ms,
            thresholds: result.thresholds.clone(),
            result: saved,
            endurance,
        };
        ctx.record(crate::evidence::LOAD_TEST, &evidence);
        if answered == 0 {
            return Err(failure(format!(
                "no response from {url} ({} connection errors, {} timeouts, {} transport errors)",
                r.errors_by_kind.connect, r.errors_by_kind.timeout, r.errors_by_kind.transport
            )));
        }
        if !failed.is_empty() {
            let details: Vec<&str> = failed.iter().map(|v| v.detail.as_str()).collect();
            return Err(failure(format!(
                "thresholds failed: {}",
                details.join("; ")
            )));
        }
        if !problems.is_empty() {
            return Err(failure(problems.join("; ")));
        }
        Ok(())
    }
}

/// The workload in a few words, for the log.
pub(crate) fn describe(workload: &Workload) -> String {
    match workload {
        Workload::Open { stages } if stages.len() == 1 && stages[0].from == stages[0].to => {
            format!(
                "{}/s for {}",
                stages[0].from,
                humantime::format_duration(stages[0].duration)
            )
        }
        Workload::Open { stages } => {
            let parts: Vec<String> = stages
                .iter()
                .map(|s| {
                    if s.from == s.to {
                        format!(
                            "{}/s for {}",
                            s.from,
                            humantime::format_duration(s.duration)
                        )
                    } else {
                        format!(
                            "{}→{}/s over {}",
                            s.from,
                            s.to,
                            humantime::format_duration(s.duration)
                        )
                    }
                })
                .collect();
            parts.join(", then ")
        }
        Workload::Closed {
            users, duration, ..
        } => format!(
            "{users} users for {}",
            humantime::format_duration(*duration)
        ),
    }
}

/// One line about `load-test` evidence, for `pipeline status`.
pub(crate) fn summarize(evidence: &mlops_core::Evidence) -> Option<String> {
    let b = &evidence.body;
    let p99 = b["latency_ms"]["p99"]
        .as_f64()
        .map_or_else(|| "no response".to_owned(), |p| format!("p99 {p:.1} ms"));
    let thresholds = b["thresholds"].as_array().map_or(0, Vec::len);
    let mut extra = String::new();
    if let Some(batch) = b["batch"].as_u64() {
        extra.push_str(&format!(
            "; batches of {batch} rows, {:.0} rows/s",
            b["rows_per_second"].as_f64().unwrap_or(0.0)
        ));
    }
    if let Some(drift) = b["endurance"]["latency_drift"].as_f64() {
        extra.push_str(&format!("; p99 drift {:+.1}%", drift * 100.0));
    }
    if let Some(growth) = b["endurance"]["memory"]
        .as_array()
        .and_then(|m| m.iter().filter_map(|r| r["growth_bytes"].as_i64()).max())
    {
        extra.push_str(&format!(
            "; memory {:+.1} MiB at most",
            growth as f64 / (1024.0 * 1024.0)
        ));
    }
    Some(format!(
        "{} load test {} on {} in {}: {} requests at {:.1}/s, {p99}, {} errors; {thresholds} thresholds{extra}",
        b["kind"].as_str()?,
        b["verdict"].as_str()?,
        b["service"].as_str()?,
        b["environment"].as_str()?,
        b["requests"].as_u64()?,
        b["rps"].as_f64()?,
        b["errors"].as_u64()?,
    ))
}
