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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::Diagnostic;
use mlops_core::registry::ModelVersion;
use mlops_core::{KindParams, Stage, StepAction as CoreAction, StepContext, StepFailure, StepKind};
use mlops_iac::{Instance, StepInfra};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::analysis::{
    AnalysisConfig, CheckVerdict, InconclusiveAction, RoundDecision, RoundPolicy, RoundTracker,
    StepAction as RoundAction, StepAnalysis, StepVerdict, VariantMeasurements, analyze,
};
use crate::driver::{CsvColumns, DriverSettings, ObservedResponse, Samples};
use crate::gateway::Config;
use crate::rollout::{
    Baseline, CANARY, ReleaseEvidence, ReleaseTarget, RollbackEvidence, RolloutError, RoundRecord,
    STABLE, Verdict, healthy_endpoints, set_variants, split,
};
use crate::service::{self, GatewayClient, GatewayProgram};
use crate::settings::ReleaseSettings;
use crate::state::{self, Phase, ReleaseState};

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
    /// How long a replaced instance keeps serving requests in flight.
    drain: Option<toml::Spanned<String>>,
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
    drain: Duration,
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
        let drain = match &wire.drain {
            None => Some(crate::rollout::DEFAULT_DRAIN),
            Some(d) => match mlops_core::manifest::parse_duration("drain", d) {
                Ok(d) if d <= MAX_HOLD => Some(d),
                Ok(_) => {
                    errors.push(Diagnostic::new(
                        "`drain` must be at most 1h",
                        Some(d.span()),
                    ));
                    None
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        let Some(drain) = drain else {
            return Err(errors);
        };
        // A weight is held until a round passes at it: the planned rounds
        // are the steps plus every failing and inconclusive round the
        // policy tolerates.
        let inconclusive_limit = wire
            .inconclusive_limit
            .unwrap_or(u32::try_from(steps.len()).unwrap_or(u32::MAX));
        let rounds = u32::try_from(steps.len())
            .unwrap_or(u32::MAX)
            .saturating_add(wire.failure_limit)
            .saturating_add(inconclusive_limit);
        let rounds = std::num::NonZeroU32::new(rounds).unwrap_or(std::num::NonZeroU32::MIN);
        let policy = RoundPolicy {
            rounds,
            failure_limit: wire.failure_limit,
            inconclusive_limit,
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
            drain,
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let canary = canary.clone();
            let infra = infra.clone();
            async move { run(&ctx, &infra, &canary).await }
        }))
    }
}

fn failure(e: impl std::fmt::Display) -> StepFailure {
    StepFailure::new(e.to_string())
}

async fn run(ctx: &StepContext, infra: &StepInfra, c: &Canary) -> Result<(), StepFailure> {
    let (_, provider, scope) = infra.target(ctx, &c.environment).await.map_err(failure)?;
    let target = ReleaseTarget {
        provider,
        scope,
        spec: Arc::clone(&infra.spec),
        ledger: ctx.ledger().clone(),
        service: c.service.clone(),
        model: c.model.clone(),
        program: c.program.clone(),
        actor: format!("step {}", ctx.step),
        step: Some((ctx.run_id, ctx.step.clone())),
        drain: c.drain,
    };
    let (candidate, stable) = target.versions().await.map_err(failure)?;
    let Some(candidate) = candidate else {
        return match stable {
            Some(production) => unchanged(ctx, &target, &production).await,
            None => Err(failure(format!(
                "no version of model `{}` is in staging: deploy one to staging (a `deploy` step) before the canary",
                c.model
            ))),
        };
    };
    let samples = load_samples(ctx, &c.source).await?;
    target.verified(&candidate).await.map_err(failure)?;
    if let Some(s) = &stable {
        target.verified(s).await.map_err(failure)?;
    }
    if let Some(previous) = target.read_state().await.map_err(failure)?
        && previous.effective_phase().in_progress()
    {
        ctx.log(format!(
            "the earlier release of {} was {} ({}): this step replaces it",
            previous.candidate_id(),
            previous.effective_phase(),
            previous.reason
        ));
    }
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
    let mut state = ReleaseState {
        service: c.service.clone(),
        model: c.model.clone(),
        environment: c.environment.clone(),
        strategy: "canary".to_owned(),
        candidate: candidate.number,
        stable: stable.as_ref().map(|s| s.number),
        phase: Phase::Running,
        weight: 0,
        round: 0,
        rounds: u32::try_from(c.steps.len()).unwrap_or(u32::MAX),
        reason: "starting the candidate".to_owned(),
        candidate_instance: None,
        run: Some(ctx.run_id),
        step: Some(ctx.step.clone()),
        pid: Some(std::process::id()),
        abort_requested: None,
        started: state::now(),
        updated: state::now(),
    };
    target.write_state(&state).await.map_err(failure)?;
    let mut evidence = ReleaseEvidence {
        strategy: "canary".to_owned(),
        verdict: Verdict::Error,
        reason: String::new(),
        outcome: String::new(),
        model: c.model.clone(),
        candidate: candidate.id(),
        candidate_digest: candidate.digest.clone(),
        stable: stable.as_ref().map(ModelVersion::id),
        service: c.service.clone(),
        environment: c.environment.clone(),
        gateway: String::new(),
        settings: serde_json::json!({
            "steps": c.steps,
            "hold-ms": u64::try_from(c.hold.as_millis()).unwrap_or(u64::MAX),
            "rate": c.rate,
            "path": c.path,
            "analysis": c.analysis,
            "policy": c.policy,
        }),
        rounds: Vec::new(),
    };

    // Stable: the declared instance, serving the production version, all
    // of its replicas healthy before any traffic moves.
    // A gateway already running (an earlier release) follows stable's
    // instance if the apply replaces it, and then sends stable everything:
    // a candidate an interrupted release left running loses its share
    // before it is stopped.
    let running = target.gateway().client().await.ok();
    let stable_endpoints =
        match &stable {
            Some(s) => {
                let checked = target.apply_declared(s, running.as_ref()).await.and_then(
                    |(instance, actions)| {
                        for action in actions {
                            ctx.log(action);
                        }
                        if !instance.is_healthy() {
                            return Err(RolloutError::Failed(format!(
                                "instance {} has unhealthy replicas",
                                instance.id
                            )));
                        }
                        healthy_endpoints(&instance)
                    },
                );
                match checked {
                    Ok(endpoints) => Some(endpoints),
                    Err(e) => {
                        let why = format!("stable {} is not serving in full: {e}", s.id());
                        return Err(end(
                            ctx,
                            &target,
                            &mut state,
                            &mut evidence,
                            Verdict::Error,
                            why,
                            None,
                        )
                        .await);
                    }
                }
            }
            None => None,
        };

    if let (Some(client), Some(endpoints)) = (&running, &stable_endpoints)
        && let Err(e) = set_variants(client, vec![(STABLE, 100, endpoints.clone())]).await
    {
        let why = format!("the gateway refused to send everything to stable: {e}");
        return Err(end(
            ctx,
            &target,
            &mut state,
            &mut evidence,
            Verdict::Error,
            why,
            None,
        )
        .await);
    }

    // The candidate: an instance the release controller owns.
    let instance = match target.start_candidate(&candidate).await {
        Ok(instance) => instance,
        Err(e) => {
            let why = format!(
                "the candidate did not start: {e}; no traffic moved and {} stays in staging",
                candidate.id()
            );
            return Err(end(
                ctx,
                &target,
                &mut state,
                &mut evidence,
                Verdict::Error,
                why,
                None,
            )
            .await);
        }
    };
    ctx.log(format!(
        "candidate {} runs as instance {} at {}",
        candidate.id(),
        instance.id,
        instance.endpoints().join(", ")
    ));
    state.candidate_instance = Some(instance.id.clone());
    let canary_endpoints = instance.endpoints();

    // The gateway in front of the service.
    let gateway = target.gateway();
    if stable_endpoints.is_none() {
        // A first release: nothing runs yet for the gateway's first config
        // to send traffic to, but the candidate does.
        let (dir, endpoints) = (gateway.state_dir(), canary_endpoints.clone());
        let written = tokio::task::spawn_blocking(move || {
            if service::read_config(&dir)?.is_none() {
                std::fs::create_dir_all(&dir).map_err(|e| service::ServiceError::State {
                    path: dir.clone(),
                    detail: e.to_string(),
                })?;
                service::write_config(&dir, &Config::single(endpoints))?;
            }
            Ok::<_, service::ServiceError>(())
        })
        .await
        .map_err(failure)
        .and_then(|r| r.map_err(failure));
        if let Err(e) = written {
            let why = format!("the gateway's first config: {e}");
            return Err(end(
                ctx,
                &target,
                &mut state,
                &mut evidence,
                Verdict::Error,
                why,
                None,
            )
            .await);
        }
    }
    let client = match gateway.ensure(&infra.spec).await {
        Ok(client) => client,
        Err(e) => {
            let why = format!("the gateway of `{}` did not start: {e}", c.service);
            return Err(end(
                ctx,
                &target,
                &mut state,
                &mut evidence,
                Verdict::Error,
                why,
                None,
            )
            .await);
        }
    };
    ctx.log(format!(
        "gateway {} at {}",
        client.instance(),
        client.proxy_url()
    ));
    evidence.gateway = client.proxy_url();
    let live = Live {
        client: &client,
        stable: stable_endpoints.as_deref(),
        canary: &canary_endpoints,
        instance: &instance,
    };

    let decision = match rounds(ctx, &target, &live, &samples, c, &mut state, &mut evidence).await {
        Ok(decision) => decision,
        Err(e) => {
            let (verdict, why) = match e {
                Stopped::Aborted(who) => (Verdict::Abort, format!("aborted by {who}")),
                Stopped::Failed(_) if ctx.cancel.is_cancelled() => {
                    (Verdict::Abort, "the run was cancelled".to_owned())
                }
                Stopped::Failed(e) => (Verdict::Error, e.message),
            };
            return Err(end(
                ctx,
                &target,
                &mut state,
                &mut evidence,
                verdict,
                why,
                Some(&live),
            )
            .await);
        }
    };
    evidence.reason = decision.reason.clone();
    // An abort asked for during the last round wins over its verdict.
    if let Some(who) = target
        .read_state()
        .await
        .ok()
        .flatten()
        .and_then(|s| s.abort_requested)
    {
        let why = format!("aborted by {who}");
        return Err(end(
            ctx,
            &target,
            &mut state,
            &mut evidence,
            Verdict::Abort,
            why,
            Some(&live),
        )
        .await);
    }
    match decision.action {
        RoundAction::Promote => {
            ctx.log(format!("promoting {}: {}", candidate.id(), decision.reason));
            state.reason = format!("promoting: {}", decision.reason);
            target.write_state(&state).await.map_err(failure)?;
            let reason = format!(
                "promoted by canary (run {}, step {}): {}",
                ctx.run_id, ctx.step, decision.reason
            );
            match target
                .promote(&client, &candidate, &instance, live.stable, &reason)
                .await
            {
                Ok(lines) => {
                    for line in lines {
                        ctx.log(line);
                    }
                    evidence.verdict = Verdict::Promote;
                    evidence.outcome = format!("{} is production", candidate.id());
                    ctx.record(crate::evidence::RELEASE, &evidence);
                    state.phase = Phase::Promoted;
                    state.weight = 100;
                    state.reason = decision.reason;
                    state.candidate_instance = None;
                    state.pid = None;
                    target.write_state(&state).await.map_err(failure)?;
                    Ok(())
                }
                Err(e) => {
                    let why = format!("the analysis said promote, but {e}");
                    Err(end(
                        ctx,
                        &target,
                        &mut state,
                        &mut evidence,
                        Verdict::Error,
                        why,
                        Some(&live),
                    )
                    .await)
                }
            }
        }
        RoundAction::Rollback => {
            let why = why(&evidence, &decision);
            ctx.log(format!("rolling back {}: {why}", candidate.id()));
            let reason = format!(
                "rolled back by canary (run {}, step {}): {why}",
                ctx.run_id, ctx.step
            );
            let done = target
                .roll_back(
                    Some(&client),
                    &candidate,
                    Some(&instance.id),
                    live.stable,
                    &reason,
                )
                .await;
            if let Ok(lines) = &done {
                for line in lines {
                    ctx.log(line.clone());
                }
            }
            evidence.verdict = Verdict::Rollback;
            evidence.outcome = match &done {
                Ok(_) => "the candidate is out, archived in the registry".to_owned(),
                Err(e) => format!("the rollback was incomplete: {e}"),
            };
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
            state.phase = if done.is_ok() {
                Phase::RolledBack
            } else {
                Phase::Failed
            };
            state.weight = 0;
            state.reason = why.clone();
            state.candidate_instance = None;
            state.pid = None;
            target.write_state(&state).await.map_err(failure)?;
            done.map_err(failure)?;
            Err(failure(format!(
                "canary of {} rolled back at round {} ({}% canary): {why}",
                candidate.id(),
                decision.round,
                state_weight(&evidence, decision.round)
            )))
        }
        RoundAction::Pause | RoundAction::Continue => {
            let why = why(&evidence, &decision);
            evidence.verdict = Verdict::Pause;
            evidence.outcome = format!(
                "paused with {}% of traffic on the candidate for `mlops release promote` or `mlops release abort`",
                state.weight
            );
            ctx.record(crate::evidence::RELEASE, &evidence);
            state.phase = Phase::Paused;
            state.reason = why.clone();
            state.pid = None;
            target.write_state(&state).await.map_err(failure)?;
            Err(failure(format!(
                "canary of {} paused at round {}: {why}; the candidate keeps {}% of traffic until `mlops release promote` or `mlops release abort`",
                candidate.id(),
                decision.round,
                state.weight
            )))
        }
    }
}

/// No candidate in staging, and a version in production. When that is the
/// model's newest version there is nothing to release (a rerun, another
/// provider, a destroyed environment): production is made to run behind
/// the gateway and the step passes. When a newer version exists, it was
/// taken out (rolled back or archived): the step fails saying so, rather
/// than passing a release that did not happen.
async fn unchanged(
    ctx: &StepContext,
    target: &ReleaseTarget,
    production: &ModelVersion,
) -> Result<(), StepFailure> {
    let model = target.model.clone();
    let newest = target
        .ledger
        .call(move |l| l.model_versions(Some(&model)))
        .await
        .map_err(failure)?
        .into_iter()
        .max_by_key(|v| v.number);
    if let Some(newest) = newest
        && newest.number > production.number
    {
        return Err(failure(format!(
            "nothing to release: the newest version {} is {} and production is {}; train and deploy a new version to release again",
            newest.id(),
            newest.stage.as_str(),
            production.id()
        )));
    }
    let running = target.gateway().client().await.ok();
    let (instance, actions) = target
        .apply_declared(production, running.as_ref())
        .await
        .map_err(failure)?;
    for action in actions {
        ctx.log(action);
    }
    let endpoints = healthy_endpoints(&instance).map_err(failure)?;
    let client = target.gateway().ensure(&target.spec).await.map_err(|e| {
        failure(format!(
            "the gateway of `{}` did not start: {e}",
            target.service
        ))
    })?;
    set_variants(&client, vec![(STABLE, 100, endpoints)])
        .await
        .map_err(|e| failure(format!("the gateway refused stable: {e}")))?;
    ctx.log(format!(
        "nothing to release: {} is the newest version of `{}` and already production; it serves in `{}` behind the gateway at {}",
        production.id(),
        target.model,
        target.environment(),
        client.proxy_url()
    ));
    Ok(())
}

/// What serves while the rounds run.
struct Live<'a> {
    client: &'a GatewayClient,
    stable: Option<&'a [String]>,
    canary: &'a [String],
    instance: &'a Instance,
}

/// The canary weight of round `round` (1-based), from the evidence.
fn state_weight(evidence: &ReleaseEvidence, round: u32) -> u32 {
    evidence
        .rounds
        .get(round.saturating_sub(1) as usize)
        .map_or(0, |r| r.weight)
}

/// Ends a release that cannot go on (an error, a cancelled run): traffic
/// back to stable, the candidate (if it runs) stopped, the candidate left in
/// staging; evidence and state say what happened. Returns the step's
/// failure.
async fn end(
    ctx: &StepContext,
    target: &ReleaseTarget,
    state: &mut ReleaseState,
    evidence: &mut ReleaseEvidence,
    verdict: Verdict,
    why: String,
    live: Option<&Live<'_>>,
) -> StepFailure {
    let mut outcome = Vec::new();
    if let Some(live) = live {
        match target
            .withdraw(Some(live.client), Some(&live.instance.id), live.stable)
            .await
        {
            Ok(lines) => outcome.extend(lines),
            Err(e) => outcome.push(format!("withdrawing the candidate failed: {e}")),
        }
    }
    outcome.push(format!("{} stays in staging", evidence.candidate));
    let outcome = outcome.join("; ");
    ctx.log(format!("{why}: {outcome}"));
    evidence.verdict = verdict;
    evidence.reason = why.clone();
    evidence.outcome = outcome.clone();
    ctx.record(crate::evidence::RELEASE, &*evidence);
    state.phase = if verdict == Verdict::Abort {
        Phase::Aborted
    } else {
        Phase::Failed
    };
    state.weight = 0;
    state.reason = why.clone();
    state.candidate_instance = None;
    state.pid = None;
    if let Err(e) = target.write_state(state).await {
        ctx.log(format!("the release state was not written: {e}"));
    }
    failure(format!(
        "canary of {}: {why} ({outcome})",
        evidence.candidate
    ))
}

/// Why the rounds stopped without a decision.
enum Stopped {
    /// `mlops release abort`, by this user.
    Aborted(String),
    /// Something failed (or the run was cancelled).
    Failed(StepFailure),
}

impl From<StepFailure> for Stopped {
    fn from(e: StepFailure) -> Self {
        Stopped::Failed(e)
    }
}

/// Runs the rounds until a final decision. A weight is held until a round
/// passes at it (a failing or inconclusive round repeats it, so a candidate
/// never gets more traffic on bad or missing evidence); the candidate is
/// promoted after a passing round at the last weight, or when the tracker
/// says so.
async fn rounds(
    ctx: &StepContext,
    target: &ReleaseTarget,
    live: &Live<'_>,
    samples: &Samples,
    c: &Canary,
    state: &mut ReleaseState,
    evidence: &mut ReleaseEvidence,
) -> Result<RoundDecision, Stopped> {
    // A first release has no stable to share traffic with: the candidate
    // takes everything whatever the weight, so one round at 100 % says all
    // the steps would.
    let steps: &[u32] = if live.stable.is_some() {
        &c.steps
    } else {
        ctx.log("a first release: one round with all the traffic, judged by the SLOs");
        &[100]
    };
    state.rounds = u32::try_from(steps.len()).unwrap_or(u32::MAX);
    let mut tracker = RoundTracker::new(c.policy.clone());
    let mut baseline: Option<VariantMeasurements> = None;
    let mut at = 0usize;
    let mut round_no = 0u32;
    loop {
        let Some(&weight) = steps.get(at) else {
            // Unreachable: a pass at the last weight promotes below.
            return Ok(RoundDecision {
                action: RoundAction::Pause,
                round: round_no,
                reason: "the steps ended without a decision".to_owned(),
            });
        };
        round_no += 1;
        if let Some(who) = target
            .read_state()
            .await
            .ok()
            .flatten()
            .and_then(|s| s.abort_requested)
        {
            return Err(Stopped::Aborted(who));
        }
        split(live.client, live.stable, live.canary, weight)
            .await
            .map_err(|e| failure(format!("the gateway refused the {weight}% split: {e}")))?;
        state.weight = weight;
        state.round = round_no;
        state.reason = format!("round {round_no}: {weight}% to the candidate");
        target.write_state(state).await.map_err(failure)?;
        let round = drive(ctx, live.client, samples, c).await?;
        // At 100 % stable serves nothing: the candidate is compared with
        // stable as the latest earlier round measured it.
        let compared_with = if round.stable.requests > 0 {
            baseline = Some(round.stable.clone());
            Baseline::SameRound
        } else if baseline.is_some() {
            ctx.log("  stable served nothing in this round: compared with its measurements of an earlier round");
            Baseline::EarlierRound
        } else {
            Baseline::None
        };
        // With a stable in production the candidate is always compared
        // with it: no measurement of stable yet is an empty sample, which
        // the sample-size gate makes inconclusive, never a pass on SLOs
        // alone.
        let unmeasured = VariantMeasurements {
            requests: 0,
            errors: 0,
            latencies_ms: Vec::new(),
            predictions: None,
        };
        let reference = match (live.stable, &baseline) {
            (None, _) => None,
            (Some(_), Some(b)) => Some(b),
            (Some(_), None) => Some(&unmeasured),
        };
        let analysis = analyze(reference, &round.canary, &c.analysis)
            .map_err(|e| failure(format!("the analysis of round {round_no} failed: {e}")))?;
        let verdict = analysis.verdict;
        let mut decided = tracker.record(verdict);
        if decided.action == RoundAction::Continue
            && verdict == StepVerdict::Pass
            && at + 1 == steps.len()
        {
            decided = RoundDecision {
                action: RoundAction::Promote,
                round: round_no,
                reason: format!("round {round_no} passed at the last step ({weight}%)"),
            };
        }
        log_round(ctx, round_no, weight, &round, &analysis, &decided);
        evidence.rounds.push(RoundRecord {
            weight,
            sent: round.sent,
            unanswered: round.unanswered,
            unlabelled: round.unlabelled,
            dropped: round.dropped,
            stable_baseline: if live.stable.is_some() {
                compared_with
            } else {
                Baseline::None
            },
            analysis,
            decision: decided.clone(),
        });
        if decided.action.is_final() {
            return Ok(decided);
        }
        if verdict == StepVerdict::Pass {
            at += 1;
        } else {
            ctx.log(format!(
                "  round {round_no} did not pass: the candidate stays at {weight}%"
            ));
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

/// What one round measured, per variant.
struct Round {
    sent: u64,
    unanswered: u64,
    unlabelled: u64,
    dropped: u64,
    stable: VariantMeasurements,
    canary: VariantMeasurements,
}

/// Drives `hold` of traffic through the gateway and sorts the responses
/// by the variant that served them, as they arrive (a response's body is
/// dropped once its predictions are read).
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
    // Room for every planned response: the driver never waits for the
    // tally, and the tally keeps up, so the queue stays short.
    let capacity = usize::try_from(driver.planned_requests())
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let (tx, mut rx) = mpsc::channel::<ObservedResponse>(capacity);
    let tally = tokio::spawn(async move {
        let mut round = Round {
            sent: 0,
            unanswered: 0,
            unlabelled: 0,
            dropped: 0,
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
        while let Some(r) = rx.recv().await {
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
            // Anything but a 2xx is a failed answer: a candidate that
            // refuses every request (4xx) must not look healthy.
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
        (round, answered)
    });
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
    let (mut round, answered) = tally.await.map_err(failure)?;
    if ctx.cancel.is_cancelled() {
        return Err(failure("cancelled"));
    }
    round.sent = run.report.requests;
    round.dropped = run.report.observed_dropped;
    // Requests with no response (or whose response was not observed)
    // cannot be told apart: they count against the candidate, the
    // conservative side.
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
    round_no: u32,
    weight: u32,
    round: &Round,
    analysis: &StepAnalysis,
    decision: &RoundDecision,
) {
    ctx.log(format!(
        "round {round_no}: canary {weight}%: {} sent, {} unanswered, {} without a variant",
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
