//! The `canary` kind: the newest `staging` version of `[release] model`
//! runs beside the `production` one in the release environment, the
//! gateway shifts a growing share of traffic to it, the request driver
//! sends that traffic through the gateway, and each step's measurements
//! are analyzed ([`crate::analysis::analyze`], rounds by
//! [`RoundTracker`]) until the candidate is promoted or rolled back.
//!
//! ```toml
//! [release]
//! service = "iris"
//! model = "iris"
//!
//! [release.steps.canary]
//! kind = "canary"
//! with = { steps = [20, 50, 100], hold = "2s", traffic = { requests = "data/requests.jsonl", rate = 50 }, analysis = { min-sample-size = 50, max-error-rate = 0.01 } }
//! ```
//!
//! At run time, in the release environment (`[release] environment`):
//!
//! 1. the candidate is the version of `model` in `staging` (refused when
//!    there is none); stable is the one in `production` (none: a first
//!    release, judged by the SLOs alone);
//! 2. stable runs as the service's declared instance (an `apply`, as
//!    `deploy` does); the candidate runs as an instance owned by the
//!    `release` controller, serving its verified artifact; the gateway runs
//!    in front of the service;
//! 3. for each weight `w` of `steps`: the gateway sends `w` % to `canary`
//!    and the rest to `stable`; the driver sends `rate` requests per
//!    second for `hold` through the gateway; the responses, told apart by
//!    the gateway's `x-mlops-variant` header, are analyzed per variant and
//!    the round recorded (every number goes to the step log);
//! 4. **promote**: the registry's `production` moves to the candidate, the
//!    declared instance is replaced by one serving it (new before old, the
//!    gateway sending everything to the candidate meanwhile), the gateway
//!    sends everything to the new stable and the canary instance stops;
//!    evidence `release`; the step passes;
//! 5. **rollback**: the gateway sends everything back to stable at once (a
//!    first release: the gateway stops), the candidate stops and is
//!    archived in the registry with the reason; evidence `release` and
//!    `rollback`; the step fails saying which check failed, with its
//!    numbers;
//! 6. **pause** (an inconclusive analysis with `on-inconclusive =
//!    "pause"`): everything is left as it is for a human; the step fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::Diagnostic;
use mlops_core::registry::{ModelStage, ModelVersion};
use mlops_core::{KindParams, Stage, StepAction as CoreAction, StepContext, StepFailure, StepKind};
use mlops_iac::apply::{self, ApplyContext};
use mlops_iac::provider::Provider;
use mlops_iac::{Controller, Instance, ModelRef, Scope, StepInfra};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::analysis::{
    AnalysisConfig, CheckVerdict, InconclusiveAction, RoundDecision, RoundPolicy, RoundTracker,
    StepAction as RoundAction, StepAnalysis, VariantMeasurements, analyze,
};
use crate::driver::{CsvColumns, DriverSettings, ObservedResponse, Samples};
use crate::gateway::Config;
use crate::service::{self, GatewayClient, GatewayProgram, GatewayService, OWNER};
use crate::settings::ReleaseSettings;

/// The variant names the canary step gives the gateway.
const STABLE: &str = "stable";
/// See [`STABLE`].
const CANARY: &str = "canary";

/// The highest `rate` a canary step may drive.
const MAX_RATE: f64 = 1000.0;
/// The longest `hold`.
const MAX_HOLD: Duration = Duration::from_secs(3600);

/// The `canary` kind.
pub struct CanaryKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CanaryWire {
    steps: toml::Spanned<Vec<u32>>,
    hold: toml::Spanned<String>,
    traffic: TrafficWire,
    #[serde(default)]
    analysis: AnalysisConfig,
    #[serde(default)]
    failure_limit: u32,
    inconclusive_limit: Option<u32>,
    #[serde(default = "default_on_inconclusive")]
    on_inconclusive: InconclusiveAction,
}

fn default_on_inconclusive() -> InconclusiveAction {
    InconclusiveAction::Rollback
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TrafficWire {
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
enum RequestSource {
    JsonLines(PathBuf),
    Csv(PathBuf, CsvColumns),
}

#[derive(Debug, Clone)]
struct Canary {
    service: String,
    model: String,
    environment: String,
    steps: Vec<u32>,
    hold: Duration,
    source: RequestSource,
    rate: f64,
    path: String,
    analysis: AnalysisConfig,
    policy: RoundPolicy,
    program: GatewayProgram,
}

/// The `mlops` program beside the running one (or the directory above it,
/// where cargo puts test binaries' siblings), else from `PATH`.
fn default_program() -> GatewayProgram {
    let exe = std::env::current_exe().ok();
    let program = exe
        .iter()
        .flat_map(|e| e.ancestors().skip(1).take(2))
        .map(|dir| dir.join("mlops"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| "mlops".into());
    GatewayProgram::mlops(program)
}

impl StepKind for CanaryKind {
    fn name(&self) -> &'static str {
        "canary"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Release)
    }

    fn summary(&self) -> &'static str {
        "runs the staging version beside production behind the gateway, shifts traffic in steps, analyzes each step and promotes or rolls back"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn CoreAction>, Vec<Diagnostic>> {
        let wire: CanaryWire = params.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        let span = params.span();
        let settings = params
            .section::<ReleaseSettings>(Stage::Release.name(), &[])
            .unwrap_or_default();
        let (service, model) = match (&settings.service, &settings.model) {
            (Some(s), Some(m)) => (s.clone(), m.clone()),
            _ => {
                if !params.section_failed(Stage::Release.name()) {
                    errors.push(
                        Diagnostic::new(
                            "the `canary` kind needs `[release] service` and `[release] model`",
                            Some(span.clone()),
                        )
                        .with_help(
                            "declare `[release] service = \"NAME\"` (an [infra.services] entry) and `model = \"NAME\"` (a registered model)",
                        ),
                    );
                }
                (String::new(), String::new())
            }
        };
        let steps = wire.steps.get_ref().clone();
        if steps.is_empty()
            || steps.iter().any(|w| !(1..=100).contains(w))
            || steps.windows(2).any(|p| p[0] >= p[1])
        {
            errors.push(Diagnostic::new(
                "`steps` must be canary weights in percent, increasing, each 1 to 100 (`[20, 50, 100]`)",
                Some(wire.steps.span()),
            ));
        }
        let hold = match mlops_core::manifest::parse_duration("hold", &wire.hold) {
            Ok(d) if !d.is_zero() && d <= MAX_HOLD => Some(d),
            Ok(_) => {
                errors.push(Diagnostic::new(
                    "`hold` must be longer than zero and at most 1h",
                    Some(wire.hold.span()),
                ));
                None
            }
            Err(d) => {
                errors.push(d);
                None
            }
        };
        let t = &wire.traffic;
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
        if !(t.rate.is_finite() && t.rate > 0.0 && t.rate <= MAX_RATE) {
            errors.push(Diagnostic::new(
                format!(
                    "`traffic.rate` must be above 0 and at most {MAX_RATE} requests per second"
                ),
                Some(span.clone()),
            ));
        }
        if let Err(e) = wire.analysis.validate() {
            errors.push(Diagnostic::new(
                format!("`analysis`: {e}"),
                Some(span.clone()),
            ));
        }
        if t.path.as_ref().is_some_and(|p| !p.starts_with('/')) {
            errors.push(Diagnostic::new(
                "`traffic.path` must start with `/`",
                Some(span.clone()),
            ));
        }
        let service_name = toml::Spanned::new(span.clone(), service.clone());
        let infra = if service.is_empty() {
            None
        } else {
            StepInfra::read_service(params, &service_name, None, &mut errors)
        };
        let (Some(infra), Some(hold), Some(source), true) =
            (infra, hold, source, errors.is_empty())
        else {
            return Err(errors);
        };
        let rounds = u32::try_from(steps.len())
            .ok()
            .and_then(std::num::NonZeroU32::new)
            .unwrap_or(std::num::NonZeroU32::MIN);
        let policy = RoundPolicy {
            rounds,
            failure_limit: wire.failure_limit,
            inconclusive_limit: wire.inconclusive_limit.unwrap_or(rounds.get()),
            on_inconclusive: wire.on_inconclusive,
            ..RoundPolicy::default()
        };
        let program = params
            .option::<GatewayProgram>()
            .map_or_else(default_program, |p| (*p).clone());
        let path = t
            .path
            .clone()
            .unwrap_or_else(|| format!("/v2/models/{model}/infer"));
        let canary = Canary {
            service,
            model,
            environment: settings.environment.clone(),
            steps,
            hold,
            source,
            rate: t.rate,
            path,
            analysis: wire.analysis,
            policy,
            program,
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let canary = canary.clone();
            let infra = infra.clone();
            async move { run(&ctx, &infra, &canary).await }
        }))
    }
}

/// What one round measured and decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundRecord {
    /// The canary's share of traffic, in percent.
    pub weight: u32,
    /// Requests the driver sent.
    pub sent: u64,
    /// Requests that got no response (connection, timeout, transport), all
    /// counted against the candidate.
    pub unanswered: u64,
    /// The analysis of the round.
    pub analysis: StepAnalysis,
    /// What the round tracker decided after it.
    pub decision: RoundDecision,
}

/// The `release` evidence of a canary step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseEvidence {
    /// `canary`.
    pub strategy: String,
    /// `promote`, `rollback` or `pause`.
    pub verdict: RoundAction,
    /// Why.
    pub reason: String,
    /// The model.
    pub model: String,
    /// The candidate, `model:N`.
    pub candidate: String,
    /// Its digest.
    pub candidate_digest: String,
    /// The version in production before the step (none: a first release).
    pub stable: Option<String>,
    /// The service released.
    pub service: String,
    /// The release environment.
    pub environment: String,
    /// The gateway's proxy URL.
    pub gateway: String,
    /// Every round, in order.
    pub rounds: Vec<RoundRecord>,
}

/// The `rollback` evidence of a canary step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackEvidence {
    /// The model.
    pub model: String,
    /// The candidate taken out.
    pub candidate: String,
    /// What serves users now (none: nothing, a first release).
    pub stable: Option<String>,
    /// Why.
    pub reason: String,
    /// The round that decided it (1-based).
    pub round: u32,
}

fn failure(e: impl std::fmt::Display) -> StepFailure {
    StepFailure::new(e.to_string())
}

/// Where the step acts: provider, scope and the controller's hands.
struct Env {
    provider: Box<dyn Provider>,
    scope: Scope,
}

async fn run(ctx: &StepContext, infra: &StepInfra, c: &Canary) -> Result<(), StepFailure> {
    let ledger = ctx.ledger();
    let model = c.model.clone();
    let (candidate, stable) = ledger
        .call(move |l| {
            Ok::<_, mlops_core::registry::RegistryError>((
                l.model_in_stage(&model, ModelStage::Staging)?,
                l.model_in_stage(&model, ModelStage::Production)?,
            ))
        })
        .await
        .map_err(failure)?;
    let Some(candidate) = candidate else {
        return Err(failure(format!(
            "no version of model `{}` is in staging: deploy one to staging (a `deploy` step) before the canary",
            c.model
        )));
    };
    let samples = load_samples(ctx, &c.source).await?;
    let candidate_dir = verified(ctx, &candidate).await?;
    let stable_dir = match &stable {
        Some(s) => Some(verified(ctx, s).await?),
        None => None,
    };
    let (_, provider, scope) = infra.target(ctx, &c.environment).await.map_err(failure)?;
    let env = Env { provider, scope };
    ctx.log(format!(
        "canary of {} against {} in `{}`, service `{}`: steps {:?}, hold {:?} at {} requests/s",
        candidate.id(),
        stable.as_ref().map_or_else(
            || "nothing (a first release: SLOs only)".to_owned(),
            ModelVersion::id
        ),
        c.environment,
        c.service,
        c.steps,
        c.hold,
        c.rate
    ));

    // Stable: the declared instance, serving the production version.
    let stable_endpoints = match (&stable, stable_dir) {
        (Some(s), Some(dir)) => {
            let instance = apply_declared(ctx, infra, &env, &c.service, s, dir).await?;
            Some(healthy_endpoints(&instance, &c.service)?)
        }
        _ => None,
    };

    // The candidate: an instance the release controller owns.
    let controller = Controller::new(OWNER, env.provider.as_ref(), &env.scope, ledger.clone())
        .map_err(failure)?;
    stop_canaries(&controller, &c.service).await?;
    let instance = controller
        .start(
            &infra.spec,
            &c.service,
            Some(ModelRef {
                version: candidate.id(),
                dir: candidate_dir,
            }),
            1,
        )
        .await
        .map_err(|e| {
            failure(format!(
                "starting the candidate {} failed: {e}",
                candidate.id()
            ))
        })?;
    ctx.log(format!(
        "candidate {} runs as instance {} at {}",
        candidate.id(),
        instance.id,
        instance.endpoints().join(", ")
    ));
    let canary_endpoints = match healthy_endpoints(&instance, &c.service) {
        Ok(e) => e,
        Err(e) => {
            let _ = controller.stop(&instance.id).await;
            return Err(e);
        }
    };

    // The gateway in front of the service.
    let gateway = GatewayService::new(
        &env.scope,
        env.provider.as_ref(),
        ledger.clone(),
        &c.service,
        c.program.clone(),
    );
    if stable_endpoints.is_none()
        && service::read_config(&gateway.state_dir())
            .map_err(failure)?
            .is_none()
    {
        // A first release: nothing runs yet for the gateway's first config
        // to send traffic to, but the candidate does.
        std::fs::create_dir_all(gateway.state_dir()).map_err(failure)?;
        service::write_config(
            &gateway.state_dir(),
            &Config::single(canary_endpoints.clone()),
        )
        .map_err(failure)?;
    }
    let client = match gateway.ensure(&infra.spec).await {
        Ok(client) => client,
        Err(e) => {
            let _ = controller.stop(&instance.id).await;
            return Err(failure(format!(
                "the gateway of `{}` did not start: {e}",
                c.service
            )));
        }
    };
    ctx.log(format!(
        "gateway {} at {}",
        client.instance(),
        client.proxy_url()
    ));

    let mut tracker = RoundTracker::new(c.policy.clone());
    let mut rounds = Vec::new();
    let mut decision = None;
    let mut baseline: Option<VariantMeasurements> = None;
    for (i, &weight) in c.steps.iter().enumerate() {
        let config = split(
            &client,
            stable_endpoints.as_deref(),
            &canary_endpoints,
            weight,
        )
        .await;
        if let Err(e) = config {
            let _ = rollback_traffic(&client, &gateway, stable_endpoints.as_deref()).await;
            let _ = controller.stop(&instance.id).await;
            return Err(failure(format!(
                "the gateway refused the {weight}% split: {e}"
            )));
        }
        let round = drive(ctx, &client, &samples, c).await?;
        // At 100 % stable serves nothing: the candidate is compared with
        // stable as the latest earlier step measured it.
        if round.stable.requests > 0 {
            baseline = Some(round.stable.clone());
        } else if baseline.is_some() {
            ctx.log("  stable served nothing in this step: compared with its measurements of the step before");
        }
        // With a stable in production the candidate is always compared
        // with it: no measurement of stable yet (a first step at 100 %,
        // or stable served nothing) is an empty sample, which the
        // sample-size gate makes inconclusive, never a pass on SLOs alone.
        let unmeasured = VariantMeasurements {
            requests: 0,
            errors: 0,
            latencies_ms: Vec::new(),
            predictions: None,
        };
        let compared_with = match (&stable_endpoints, &baseline) {
            (None, _) => None,
            (Some(_), Some(b)) => Some(b),
            (Some(_), None) => Some(&unmeasured),
        };
        let analysis = analyze(compared_with, &round.canary, &c.analysis)
            .map_err(|e| failure(format!("the analysis of step {} failed: {e}", i + 1)))?;
        let decided = tracker.record(analysis.verdict);
        log_round(
            ctx,
            i + 1,
            c.steps.len(),
            weight,
            &round,
            &analysis,
            &decided,
        );
        rounds.push(RoundRecord {
            weight,
            sent: round.sent,
            unanswered: round.unanswered,
            analysis,
            decision: decided.clone(),
        });
        if decided.action.is_final() {
            decision = Some(decided);
            break;
        }
    }
    // No final decision after the last step cannot happen with one round
    // per step; if it ever does, nothing is promoted on it.
    let decision = decision.unwrap_or_else(|| RoundDecision {
        action: RoundAction::Pause,
        round: u32::try_from(rounds.len()).unwrap_or(u32::MAX),
        reason: "the rounds ended without a decision".to_owned(),
    });
    let mut evidence = ReleaseEvidence {
        strategy: "canary".to_owned(),
        verdict: decision.action,
        reason: decision.reason.clone(),
        model: c.model.clone(),
        candidate: candidate.id(),
        candidate_digest: candidate.digest.clone(),
        stable: stable.as_ref().map(ModelVersion::id),
        service: c.service.clone(),
        environment: c.environment.clone(),
        gateway: client.proxy_url(),
        rounds,
    };
    let actor = format!("step {}", ctx.step);
    match decision.action {
        RoundAction::Promote => {
            ctx.log(format!("promoting {}: {}", candidate.id(), decision.reason));
            // Everything to the candidate while the declared instance is
            // replaced by one serving it.
            split(&client, None, &canary_endpoints, 100)
                .await
                .map_err(|e| {
                    failure(format!(
                        "the gateway refused to send everything to the candidate: {e}"
                    ))
                })?;
            let (m, n, a) = (candidate.model.clone(), candidate.number, actor.clone());
            let reason = format!(
                "promoted by canary (run {}, step {}): {}",
                ctx.run_id, ctx.step, decision.reason
            );
            ledger
                .call(move |l| l.set_model_stage(&m, n, ModelStage::Production, &a, &reason))
                .await
                .map_err(failure)?;
            let dir = verified(ctx, &candidate).await?;
            let new_stable = apply_declared(ctx, infra, &env, &c.service, &candidate, dir).await?;
            let endpoints = healthy_endpoints(&new_stable, &c.service)?;
            client
                .set_config(&with_variants(&client, vec![(STABLE, 100, endpoints)]).await)
                .await
                .map_err(|e| failure(format!("the gateway refused the new stable: {e}")))?;
            controller.stop(&instance.id).await.map_err(failure)?;
            ctx.log(format!(
                "{} is production in `{}`; the canary instance {} stopped",
                candidate.id(),
                c.environment,
                instance.id
            ));
            evidence.verdict = RoundAction::Promote;
            ctx.record(crate::evidence::RELEASE, &evidence);
            Ok(())
        }
        RoundAction::Rollback => {
            let why = why(&evidence, &decision);
            ctx.log(format!("rolling back {}: {why}", candidate.id()));
            let traffic = rollback_traffic(&client, &gateway, stable_endpoints.as_deref()).await;
            let stopped = controller.stop(&instance.id).await;
            let (m, n, a) = (candidate.model.clone(), candidate.number, actor.clone());
            let reason = format!(
                "rolled back by canary (run {}, step {}): {why}",
                ctx.run_id, ctx.step
            );
            let archived = ledger
                .call(move |l| l.set_model_stage(&m, n, ModelStage::Archived, &a, &reason))
                .await;
            ctx.record(crate::evidence::RELEASE, &evidence);
            ctx.record(
                crate::evidence::ROLLBACK,
                &RollbackEvidence {
                    model: c.model.clone(),
                    candidate: candidate.id(),
                    stable: stable.as_ref().map(ModelVersion::id),
                    reason: why.clone(),
                    round: decision.round,
                },
            );
            traffic.map_err(failure)?;
            stopped.map_err(failure)?;
            archived.map_err(failure)?;
            Err(failure(format!(
                "canary of {} rolled back at step {} ({}% canary): {why}",
                candidate.id(),
                decision.round,
                c.steps
                    .get(decision.round as usize - 1)
                    .copied()
                    .unwrap_or(0)
            )))
        }
        RoundAction::Pause | RoundAction::Continue => {
            ctx.record(crate::evidence::RELEASE, &evidence);
            Err(failure(format!(
                "canary of {} paused at step {}: {}; the candidate keeps its share of traffic until a human decides",
                candidate.id(),
                decision.round,
                why(&evidence, &decision)
            )))
        }
    }
}

/// The deciding round's failing (or inconclusive) checks, with their
/// reasons and numbers.
fn why(evidence: &ReleaseEvidence, decision: &RoundDecision) -> String {
    let Some(round) = evidence
        .rounds
        .get(decision.round.saturating_sub(1) as usize)
    else {
        return decision.reason.clone();
    };
    let checks: Vec<String> = round
        .analysis
        .checks
        .iter()
        .filter(|c| c.verdict != CheckVerdict::Pass)
        .map(|c| {
            format!(
                "{}: {}",
                serde_json::to_value(c.name)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                c.reason
            )
        })
        .collect();
    if checks.is_empty() {
        decision.reason.clone()
    } else {
        format!("{} ({})", decision.reason, checks.join("; "))
    }
}

async fn load_samples(ctx: &StepContext, source: &RequestSource) -> Result<Samples, StepFailure> {
    let source = source.clone();
    let cwd = ctx.cwd.clone();
    tokio::task::spawn_blocking(move || match source {
        RequestSource::JsonLines(p) => Samples::from_json_lines(&cwd.join(p)),
        RequestSource::Csv(p, cols) => Samples::from_csv(&cwd.join(p), &cols),
    })
    .await
    .map_err(failure)?
    .map_err(|e| failure(format!("the canary's traffic: {e}")))
}

/// The version's files, checked against their recorded hashes.
async fn verified(ctx: &StepContext, version: &ModelVersion) -> Result<PathBuf, StepFailure> {
    let (root, checked) = (ctx.project_root.clone(), version.clone());
    tokio::task::spawn_blocking(move || mlops_cd::package::verify_artifact(&root, &checked))
        .await
        .map_err(failure)?
        .map_err(|e| failure(format!("refusing to release {}: {e}", version.id())))
}

/// Applies the release environment with `version` as the service's
/// declared instance (new before old); returns that instance.
async fn apply_declared(
    ctx: &StepContext,
    infra: &StepInfra,
    env: &Env,
    service: &str,
    version: &ModelVersion,
    dir: PathBuf,
) -> Result<Instance, StepFailure> {
    let mut models = BTreeMap::new();
    models.insert(
        service.to_owned(),
        ModelRef {
            version: version.id(),
            dir,
        },
    );
    let ledger = ctx.ledger();
    let desired = apply::desired_state(
        infra.spec.as_ref(),
        &env.scope,
        ledger,
        env.provider.as_ref(),
        &models,
    )
    .await
    .map_err(failure)?;
    let only = [service.to_owned()];
    let report = apply::apply(
        env.provider.as_ref(),
        &env.scope,
        ledger,
        &desired,
        Some(&only),
        &ApplyContext {
            actor: format!("step {}", ctx.step),
            step: Some((ctx.run_id, ctx.step.clone())),
            on_ready: None,
        },
    )
    .await
    .map_err(|e| {
        failure(format!(
            "running {} as `{service}` in `{}` failed: {e}",
            version.id(),
            env.scope.environment
        ))
    })?;
    for action in &report.actions {
        ctx.log(action.to_string());
    }
    report
        .instances
        .into_iter()
        .find(|i| i.service == service && i.owner.is_none())
        .ok_or_else(|| failure(format!("no instance of `{service}` runs after the apply")))
}

fn healthy_endpoints(instance: &Instance, service: &str) -> Result<Vec<String>, StepFailure> {
    let endpoints: Vec<String> = instance
        .replicas
        .iter()
        .filter(|r| r.healthy)
        .filter_map(|r| r.endpoint.clone())
        .collect();
    if endpoints.is_empty() {
        return Err(failure(format!(
            "instance {} of `{service}` has no healthy replica",
            instance.id
        )));
    }
    Ok(endpoints)
}

/// Stops candidates an earlier, interrupted canary step left running.
async fn stop_canaries(controller: &Controller<'_>, service: &str) -> Result<(), StepFailure> {
    for stale in controller.owned().await.map_err(failure)? {
        if stale.service == service {
            controller.stop(&stale.id).await.map_err(failure)?;
        }
    }
    Ok(())
}

/// The gateway's current config with other variants (its timeouts and
/// limits kept; routes, stickiness and shadows dropped).
async fn with_variants(client: &GatewayClient, variants: Vec<(&str, u32, Vec<String>)>) -> Config {
    let fresh = Config::weighted(variants);
    match client.config().await {
        Ok(current) => Config {
            variants: fresh.variants,
            routes: Vec::new(),
            sticky: None,
            shadows: Vec::new(),
            ..current
        },
        Err(_) => fresh,
    }
}

/// `weight` % to the canary, the rest to stable (all to the canary
/// without one).
async fn split(
    client: &GatewayClient,
    stable: Option<&[String]>,
    canary: &[String],
    weight: u32,
) -> Result<Config, service::ServiceError> {
    let variants = match stable {
        Some(stable) => vec![
            (STABLE, 100 - weight, stable.to_vec()),
            (CANARY, weight, canary.to_vec()),
        ],
        None => vec![(CANARY, 100, canary.to_vec())],
    };
    client
        .set_config(&with_variants(client, variants).await)
        .await
}

/// Everything back to stable; without one, the gateway stops (nothing is
/// left for it to serve).
async fn rollback_traffic(
    client: &GatewayClient,
    gateway: &GatewayService<'_>,
    stable: Option<&[String]>,
) -> Result<(), service::ServiceError> {
    match stable {
        Some(stable) => client
            .set_config(&with_variants(client, vec![(STABLE, 100, stable.to_vec())]).await)
            .await
            .map(|_| ()),
        None => gateway.stop().await.map(|_| ()),
    }
}

/// What one round measured, per variant.
struct Round {
    sent: u64,
    unanswered: u64,
    unlabelled: u64,
    stable: VariantMeasurements,
    canary: VariantMeasurements,
}

/// Drives `hold` of traffic through the gateway and sorts the responses
/// by the variant that served them.
async fn drive(
    ctx: &StepContext,
    client: &GatewayClient,
    samples: &Samples,
    c: &Canary,
) -> Result<Round, StepFailure> {
    let planned_max = (c.rate * c.hold.as_secs_f64()).ceil().max(1.0) as u64;
    let mut settings = DriverSettings::new(
        format!("{}{}", client.proxy_url(), c.path),
        c.rate,
        c.hold,
        planned_max,
    );
    settings.timeout = Duration::from_secs(10);
    let driver = settings.compile(samples.clone()).map_err(failure)?;
    let capacity = usize::try_from(driver.planned_requests())
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let (tx, mut rx) = mpsc::channel::<ObservedResponse>(capacity);
    let stop = CancellationToken::new();
    let cancel = ctx.cancel.clone();
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.cancel();
        })
    };
    let run = driver.run_observed(&stop, tx).await;
    watcher.abort();
    if ctx.cancel.is_cancelled() {
        return Err(failure("cancelled"));
    }
    let mut round = Round {
        sent: run.report.requests,
        unanswered: 0,
        unlabelled: 0,
        stable: VariantMeasurements {
            predictions: Some(Vec::new()),
            ..VariantMeasurements::default()
        },
        canary: VariantMeasurements {
            predictions: Some(Vec::new()),
            ..VariantMeasurements::default()
        },
    };
    let mut answered = 0u64;
    while let Ok(r) = rx.try_recv() {
        answered += 1;
        let m = match r.variant.as_deref() {
            Some(STABLE) => &mut round.stable,
            Some(CANARY) => &mut round.canary,
            _ => {
                round.unlabelled += 1;
                continue;
            }
        };
        m.requests += 1;
        // Anything but a 2xx is a failed answer: a candidate that refuses
        // every request (4xx) must not look healthy.
        if !(200..300).contains(&r.status) {
            m.errors += 1;
        }
        m.latencies_ms.push(r.latency.as_secs_f64() * 1000.0);
        if r.status < 300
            && !r.truncated
            && let Some(p) = m.predictions.as_mut()
        {
            p.extend(predictions(&r.body));
        }
    }
    // Requests with no response (or whose response the channel missed)
    // cannot be told apart: they count against the candidate.
    round.unanswered = run.report.requests.saturating_sub(answered);
    round.canary.requests += round.unanswered;
    round.canary.errors += run.report.errors_by_kind.total().min(round.unanswered);
    // A candidate with no predictions where stable has some is not
    // skipped: its empty sample fails the analysis's sample-size gate
    // (inconclusive), so an unreadable output never passes unseen.
    let stable_predicts = round
        .stable
        .predictions
        .as_ref()
        .is_some_and(|p| !p.is_empty());
    if round.stable.predictions.as_ref().is_some_and(Vec::is_empty) {
        round.stable.predictions = None;
    }
    if !stable_predicts && round.canary.predictions.as_ref().is_some_and(Vec::is_empty) {
        round.canary.predictions = None;
    }
    Ok(round)
}

/// The numbers of an Open Inference Protocol v2 response's
/// `outputs[].data`.
fn predictions(body: &[u8]) -> Vec<f64> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for output in v["outputs"].as_array().into_iter().flatten() {
        let mut stack = vec![&output["data"]];
        while let Some(d) = stack.pop() {
            match d {
                serde_json::Value::Number(n) => out.extend(n.as_f64().filter(|f| f.is_finite())),
                serde_json::Value::Array(a) => stack.extend(a.iter().rev()),
                _ => {}
            }
        }
    }
    out
}

fn summary(name: &str, m: &VariantMeasurements) -> String {
    let mut l = m.latencies_ms.clone();
    l.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if l.is_empty() {
            f64::NAN
        } else {
            l[((l.len() - 1) as f64 * p).round() as usize]
        }
    };
    format!(
        "{name}: {} requests, {} errors, p50 {:.1} ms, p99 {:.1} ms, {} predictions",
        m.requests,
        m.errors,
        q(0.5),
        q(0.99),
        m.predictions.as_ref().map_or(0, Vec::len)
    )
}

fn log_round(
    ctx: &StepContext,
    index: usize,
    of: usize,
    weight: u32,
    round: &Round,
    analysis: &StepAnalysis,
    decision: &RoundDecision,
) {
    ctx.log(format!(
        "step {index}/{of}: canary {weight}%: {} sent, {} unanswered, {} without a variant",
        round.sent, round.unanswered, round.unlabelled
    ));
    ctx.log(format!("  {}", summary(STABLE, &round.stable)));
    ctx.log(format!("  {}", summary(CANARY, &round.canary)));
    for check in &analysis.checks {
        ctx.log(format!(
            "  check {}: {:?}: {}",
            serde_json::to_value(check.name)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            check.verdict,
            check.reason
        ));
    }
    ctx.log(format!(
        "  verdict {:?}: {}; decision {:?}: {}",
        analysis.verdict, analysis.reason, decision.action, decision.reason
    ));
}

/// One line about a piece of stage-4 evidence, for `pipeline status`.
pub(crate) fn summarize(evidence: &mlops_core::Evidence) -> Option<String> {
    let b = &evidence.body;
    Some(match evidence.kind.as_str() {
        crate::evidence::RELEASE => format!(
            "{} {} of {} against {}: {} after {} steps",
            b["strategy"].as_str()?,
            b["verdict"].as_str()?,
            b["candidate"].as_str()?,
            b["stable"].as_str().unwrap_or("nothing"),
            b["reason"].as_str().unwrap_or(""),
            b["rounds"].as_array().map_or(0, Vec::len)
        ),
        crate::evidence::ROLLBACK => format!(
            "rolled back {}: {}",
            b["candidate"].as_str()?,
            b["reason"].as_str().unwrap_or("")
        ),
        _ => return None,
    })
}
