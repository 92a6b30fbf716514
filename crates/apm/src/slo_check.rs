//! The `slo-check` step kind: the SLOs of `[apm]` held over a window of
//! the release environment's traffic.
//!
//! ```toml
//! [apm.steps.slo]
//! kind = "slo-check"
//! with = { window = "20s", traffic = { csv = "data/iris.csv", exclude = ["species"], rate = 20 } }
//! ```
//!
//! The step makes sure the environment's collector runs (starting it, as
//! a service of the environment, when it does not: it keeps collecting
//! after the pipeline), with the configuration `[apm]` gives and the
//! released service's gateway as its source. It then watches `window`,
//! sending `traffic` through the gateway when given (in CI no users do),
//! waits until the collector has scraped the window's end, and reads each
//! SLO's requests over the window from the collector's database. An SLO
//! holds when its share of bad requests is within its error budget; fewer
//! than `[apm] min-requests` requests is not evidence, and fails the step
//! with that reason. The verdict, the numbers behind it and the alerts
//! the collector has firing are recorded as `slo` evidence.

use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::{Diagnostic, parse_duration};
use mlops_core::{KindParams, Stage, StepAction, StepContext, StepFailure, StepKind};
use mlops_iac::StepInfra;
use mlops_release::service::{GatewayProgram, GatewayService};
use mlops_release::settings::ReleaseSettings;
use mlops_release::traffic::{Traffic, TrafficWire};
use serde::{Deserialize, Serialize};

use crate::collector::alerts;
use crate::collector::service::{CollectorProgram, CollectorService};
use crate::collector::{CollectorConfig, targets};
use crate::settings::{ApmSettings, Objective, Slo};
use crate::slo::{self, Counts};
use crate::tsdb::{Store, now_ms};

/// The longest `window`.
const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// The `slo-check` kind.
#[derive(Debug)]
pub struct SloCheckKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Wire {
    window: Option<toml::Spanned<String>>,
    traffic: Option<TrafficWire>,
    slos: Option<Vec<toml::Spanned<String>>>,
}

/// A compiled `slo-check` step.
#[derive(Debug, Clone)]
struct SloCheck {
    service: String,
    environment: String,
    window: Duration,
    traffic: Option<Traffic>,
    slos: Vec<Slo>,
    settings: ApmSettings,
    infra: StepInfra,
    gateway: GatewayProgram,
    collector: CollectorProgram,
}

impl StepKind for SloCheckKind {
    fn name(&self) -> &'static str {
        "slo-check"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Apm)
    }

    fn summary(&self) -> &'static str {
        "the SLOs of [apm] held over a window of the release environment's traffic"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let wire: Wire = params.deserialize().map_err(|d| vec![d])?;
        let span = params.span();
        let mut errors = Vec::new();
        let release = params
            .section::<ReleaseSettings>(Stage::Release.name(), &[])
            .unwrap_or_default();
        let settings = params
            .section::<ApmSettings>(Stage::Apm.name(), &[])
            .unwrap_or_default();
        let (service, model) = match (&release.service, &release.model) {
            (Some(s), Some(m)) => (s.clone(), m.clone()),
            _ => {
                if !params.section_failed(Stage::Release.name()) {
                    errors.push(
                        Diagnostic::new(
                            "the `slo-check` kind needs `[release] service` and `model`: it checks the released service's traffic",
                            Some(span.clone()),
                        )
                        .with_help("declare `[release] service = \"NAME\"` and `model = \"NAME\"`"),
                    );
                }
                (String::new(), String::new())
            }
        };
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
        let traffic = wire
            .traffic
            .as_ref()
            .map(|t| t.compile(&model, &span, &mut errors));
        let slos: Vec<Slo> = match &wire.slos {
            None => settings.slos.values().cloned().collect(),
            Some(names) => names
                .iter()
                .filter_map(|n| match settings.slos.get(n.get_ref()) {
                    Some(s) => Some(s.clone()),
                    None => {
                        errors.push(Diagnostic::new(
                            format!("no SLO `{}` in [apm.slo]", n.get_ref()),
                            Some(n.span()),
                        ));
                        None
                    }
                })
                .collect(),
        };
        if slos.is_empty() && !params.section_failed(Stage::Apm.name()) {
            errors.push(
                Diagnostic::new(
                    "`slo-check` has no SLO to check",
                    Some(span.clone()),
                )
                .with_help(
                    "declare one, like `[apm.slo.availability]` with `objective = \"availability\"` and `target = 0.99`",
                ),
            );
        }
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
                "`slo-check` could not be compiled",
                Some(span),
            )]);
        };
        let exe = programs();
        let check = SloCheck {
            service,
            environment: release.environment.clone(),
            window,
            traffic: traffic.flatten(),
            slos,
            settings: ApmSettings::clone(&settings),
            infra,
            gateway: params
                .option::<GatewayProgram>()
                .map_or_else(|| exe.0.clone(), |p| (*p).clone()),
            collector: params
                .option::<CollectorProgram>()
                .map_or_else(|| exe.1.clone(), |p| (*p).clone()),
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let check = check.clone();
            async move { check.run(&ctx).await }
        }))
    }
}

/// The `mlops` program beside the running one (or the directory above it,
/// where cargo puts test binaries' siblings), else from `PATH`.
fn programs() -> (GatewayProgram, CollectorProgram) {
    let program = mlops_release::service::mlops_program();
    (
        GatewayProgram::mlops(&program),
        CollectorProgram::mlops(program),
    )
}

fn failure(e: impl std::fmt::Display) -> StepFailure {
    StepFailure::new(e.to_string())
}

/// One SLO over the window.
#[derive(Debug, Clone, Serialize)]
pub struct SloResult {
    /// The SLO.
    pub slo: Slo,
    /// Its requests over the window.
    pub counts: Counts,
    /// The share of good requests.
    pub good_ratio: Option<f64>,
    /// The share of the error budget the window spent (1 = all of it, at
    /// the window's rate).
    pub burn_rate: f64,
    /// Whether it held.
    pub held: bool,
    /// Why not, or why it is no evidence.
    pub reason: String,
}

/// What an `slo-check` records as `slo` evidence.
#[derive(Debug, Clone, Serialize)]
pub struct SloEvidence {
    /// `pass` or `fail`.
    pub verdict: String,
    /// The service and environment.
    pub service: String,
    /// The environment.
    pub environment: String,
    /// The window, in ms, and its bounds.
    pub window_ms: u64,
    /// Its start (ms since the epoch).
    pub from: i64,
    /// Its end.
    pub to: i64,
    /// The requests the step sent (none: only users' traffic counted).
    pub sent: Option<u64>,
    /// Each SLO.
    pub slos: Vec<SloResult>,
    /// The collector's alerts that were firing at the end.
    pub firing: Vec<String>,
    /// Scrape targets that were down at the end.
    pub targets_down: Vec<String>,
}

impl SloCheck {
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
        if ensure_slo_buckets(&client, &self.settings)
            .await
            .map_err(failure)?
        {
            ctx.log(format!(
                "the gateway's latency histogram now has buckets at the SLO thresholds ({:?} µs)",
                self.settings.latency_thresholds_us()
            ));
        }
        let collector = CollectorService::new(
            &scope,
            provider.as_ref(),
            ctx.ledger().clone(),
            &self.service,
            self.collector.clone(),
        );
        let config = CollectorConfig::from_settings(
            &self.settings,
            &self.environment,
            Some(&self.service),
            Some(client.admin_url().to_owned()),
        );
        let instance = collector
            .ensure(&self.infra.spec, &config)
            .await
            .map_err(failure)?;
        ctx.log(format!(
            "collector {} runs for `{}` in `{}` (every {:?}, {} SLOs)",
            instance.id,
            self.service,
            self.environment,
            config.interval(),
            config.slos.len()
        ));
        // The window starts once the collector has a baseline: a counter's
        // first scrape is no increase.
        let interval = config.interval();
        tokio::time::sleep(interval * 2).await;
        let from = now_ms();
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
        let to = now_ms();
        // The collector scrapes what happened up to `to` at its next tick.
        tokio::time::sleep(interval * 2 + Duration::from_millis(200)).await;
        let store = {
            let dir = collector.state_dir();
            tokio::task::spawn_blocking(move || Store::open_read(&dir))
                .await
                .map_err(failure)?
                .map_err(failure)?
        };
        let mut results = Vec::new();
        for s in &self.slos {
            // Counts over the window, plus the scrape that saw its end.
            let counts = slo::counts(&store, s, from, to + (interval * 2).as_millis() as i64)
                .map_err(failure)?;
            results.push(judge(s, counts, self.settings.min_requests));
        }
        let firing: Vec<String> = alerts::alerts(&store)
            .map_err(failure)?
            .into_iter()
            .filter(|a| a.state == slo::AlertState::Firing)
            .map(|a| format!("{}/{} ({})", a.slo, a.rule, a.severity))
            .collect();
        let targets_down: Vec<String> = targets(&store)
            .map_err(failure)?
            .into_iter()
            .filter(|t| !t.up)
            .map(|t| format!("{}: {}", t.name, t.last_error.unwrap_or_default()))
            .collect();
        let held = results.iter().all(|r| r.held);
        for r in &results {
            ctx.log(format!(
                "SLO {}: {} of {} requests bad ({}), {}",
                r.slo.name,
                r.counts.bad,
                r.counts.total,
                describe(&r.slo),
                r.reason
            ));
        }
        for a in &firing {
            ctx.log(format!("alert firing: {a}"));
        }
        for t in &targets_down {
            ctx.log(format!("scrape target down: {t}"));
        }
        let evidence = SloEvidence {
            verdict: if held { "pass" } else { "fail" }.to_owned(),
            service: self.service.clone(),
            environment: self.environment.clone(),
            window_ms: self.window.as_millis() as u64,
            from,
            to,
            sent,
            slos: results.clone(),
            firing,
            targets_down,
        };
        ctx.record(crate::evidence::SLO, &evidence);
        if held {
            Ok(())
        } else {
            let failed: Vec<String> = results
                .iter()
                .filter(|r| !r.held)
                .map(|r| format!("{}: {}", r.slo.name, r.reason))
                .collect();
            Err(failure(format!("SLOs not held: {}", failed.join("; "))))
        }
    }
}

fn describe(s: &Slo) -> String {
    match s.objective {
        Objective::Availability => format!("availability, target {}", s.target),
        Objective::Latency { threshold } => {
            format!("latency within {threshold:?}, target {}", s.target)
        }
    }
}

/// Whether `slo` held with `counts` over a window.
pub fn judge(slo: &Slo, counts: Counts, min_requests: u64) -> SloResult {
    let budget = slo.budget();
    let ratio = counts.error_ratio();
    let burn_rate = ratio / budget;
    let (held, reason) = if counts.total < min_requests as f64 {
        (
            false,
            format!(
                "no evidence: {} requests in the window, fewer than min-requests = {min_requests}",
                counts.total
            ),
        )
    } else if ratio <= budget {
        (
            true,
            format!(
                "held: {:.4} good, target {} (burn rate {:.2})",
                1.0 - ratio,
                slo.target,
                burn_rate
            ),
        )
    } else {
        (
            false,
            format!(
                "missed: {:.4} good, under the target {} (burn rate {:.2})",
                1.0 - ratio,
                slo.target,
                burn_rate
            ),
        )
    };
    SloResult {
        slo: slo.clone(),
        counts,
        good_ratio: (counts.total > 0.0).then_some(1.0 - ratio),
        burn_rate,
        held,
        reason,
    }
}

/// One line about `slo` evidence, for `pipeline status`.
pub(crate) fn summarize(evidence: &mlops_core::Evidence) -> Option<String> {
    let b = &evidence.body;
    let slos = b["slos"].as_array()?;
    let parts: Vec<String> = slos
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["slo"]["name"].as_str().unwrap_or("?"),
                if s["held"].as_bool() == Some(true) {
                    "held"
                } else {
                    "missed"
                }
            )
        })
        .collect();
    Some(format!(
        "SLOs {} over {} s of {} in {}: {}",
        b["verdict"].as_str()?,
        b["window_ms"].as_u64()? / 1000,
        b["service"].as_str()?,
        b["environment"].as_str()?,
        parts.join(", ")
    ))
}

/// Make sure the gateway's latency histogram has a bucket at each latency
/// SLO's threshold (so "within the threshold" is counted, not
/// interpolated); `true` when the config had to change. Release steps keep
/// the buckets when they change the variants.
pub async fn ensure_slo_buckets(
    client: &mlops_release::service::GatewayClient,
    settings: &ApmSettings,
) -> Result<bool, mlops_release::service::ServiceError> {
    let want = settings.latency_thresholds_us();
    let mut config = client.config().await?;
    let missing: Vec<u64> = want
        .into_iter()
        .filter(|us| !config.latency_buckets_us.contains(us))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    config.latency_buckets_us.extend(missing);
    config.latency_buckets_us.sort_unstable();
    client.set_config(&config).await?;
    Ok(true)
}
