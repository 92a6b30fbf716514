//! What every release strategy shares (`canary`, `blue-green`, `ab`,
//! `shadow`): the `[release]` names and the `with` keys common to them
//! (`traffic`, `drain`, bounded durations) with their validation; the
//! start of a release (the candidate in staging, stable as the declared
//! instance, the candidate as an owned instance, the gateway in front)
//! and its ends (promote, roll back, withdraw, keep in staging), each
//! writing the release state and recording `release` evidence; and the
//! sample traffic, driven through the gateway (or straight at one
//! instance) and tallied by the variant that answered.
//!
//! It does not own any strategy's traffic plan or verdict: those are the
//! kinds' modules. The moves themselves are [`crate::rollout`]'s.

use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::Diagnostic;
use mlops_core::registry::ModelVersion;
use mlops_core::{KindParams, Stage, StepContext, StepFailure};
use mlops_iac::{Instance, StepInfra};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::analysis::{CheckVerdict, RoundDecision, StepAnalysis, VariantMeasurements};
use crate::driver::{DriverSettings, ObservedResponse, Samples};
use crate::gateway::Config;
use crate::rollout::{
    CANARY, ReleaseEvidence, ReleaseTarget, RollbackEvidence, RolloutError, STABLE, Verdict,
    healthy_endpoints, set_variants,
};
use crate::service::{self, GatewayClient, GatewayProgram};
use crate::settings::ReleaseSettings;
use crate::state::{self, Phase, ReleaseState};
pub(crate) use crate::traffic::{Traffic, TrafficWire, load_samples};

pub(crate) use crate::traffic::MAX_RATE;
/// The longest duration key (`hold`, `duration`, `drain`, `keep-old`).
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3600);

/// A duration key of `with`: longer than zero unless `zero` allows it, at
/// most [`MAX_DURATION`].
pub(crate) fn duration(
    key: &str,
    value: &toml::Spanned<String>,
    zero: bool,
    errors: &mut Vec<Diagnostic>,
) -> Option<Duration> {
    match mlops_core::manifest::parse_duration(key, value) {
        Ok(d) if (zero || !d.is_zero()) && d <= MAX_DURATION => Some(d),
        Ok(_) => {
            errors.push(Diagnostic::new(
                if zero {
                    format!("`{key}` must be at most 1h")
                } else {
                    format!("`{key}` must be longer than zero and at most 1h")
                },
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

/// What every release step reads from `[release]` and `with` alike.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub(crate) service: String,
    pub(crate) model: String,
    pub(crate) environment: String,
    pub(crate) program: GatewayProgram,
    pub(crate) drain: Duration,
    /// `[release]` whole: versioning, tagging and notes of a promotion.
    pub(crate) settings: ReleaseSettings,
}

/// `[release] service` and `model` (a diagnostic naming `kind` when
/// either is missing), `drain`, the gateway program, and the service's
/// infrastructure. `None` when anything was wrong (in `errors`).
pub(crate) fn common(
    params: &KindParams<'_>,
    kind: &str,
    drain: Option<&toml::Spanned<String>>,
    errors: &mut Vec<Diagnostic>,
) -> Option<(Common, StepInfra)> {
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
                        format!("the `{kind}` kind needs `[release] service` and `[release] model`"),
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
    let drain = match drain {
        None => Some(crate::rollout::DEFAULT_DRAIN),
        Some(d) => duration("drain", d, true, errors),
    };
    let service_name = toml::Spanned::new(span.clone(), service.clone());
    let infra = if service.is_empty() {
        None
    } else {
        StepInfra::read_service(params, &service_name, None, errors)
    };
    let program = params
        .option::<GatewayProgram>()
        .map_or_else(default_program, |p| (*p).clone());
    Some((
        Common {
            service,
            model,
            environment: settings.environment.clone(),
            program,
            drain: drain?,
            settings: ReleaseSettings::clone(&settings),
        },
        infra?,
    ))
}

/// The `mlops` program beside the running one (or the directory above it,
/// where cargo puts test binaries' siblings), else from `PATH`.
fn default_program() -> GatewayProgram {
    GatewayProgram::mlops(crate::service::mlops_program())
}

pub(crate) fn failure(e: impl std::fmt::Display) -> StepFailure {
    StepFailure::new(e.to_string())
}

/// What serves while a release runs.
pub(crate) struct Live {
    pub(crate) client: GatewayClient,
    /// Stable's endpoints (none: a first release).
    pub(crate) stable: Option<Vec<String>>,
    /// The candidate's endpoints.
    pub(crate) canary: Vec<String>,
    /// The candidate's instance.
    pub(crate) instance: Instance,
}

/// A release in progress: the target, the versions, the state file and
/// the evidence being built.
pub(crate) struct Release<'a> {
    pub(crate) ctx: &'a StepContext,
    pub(crate) target: ReleaseTarget,
    pub(crate) strategy: &'static str,
    pub(crate) candidate: ModelVersion,
    pub(crate) stable: Option<ModelVersion>,
    pub(crate) state: ReleaseState,
    pub(crate) evidence: ReleaseEvidence,
    /// The strategy's own result (an A/B test's arms, a shadow's
    /// agreement), recorded beside the common fields of `release`.
    pub(crate) result: Option<serde_json::Value>,
    /// `[release]`, for what a promotion publishes.
    pub(crate) settings: ReleaseSettings,
}

/// The `release` evidence with a strategy's own result beside it.
#[derive(serde::Serialize)]
struct Recorded<'a> {
    #[serde(flatten)]
    evidence: &'a ReleaseEvidence,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a serde_json::Value>,
}

/// Why the work of a release stopped without a decision.
pub(crate) enum Stopped {
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

/// The start of a release step: the versions, and nothing to release when
/// staging is empty. `Ok(None)`: the step is done (passed).
pub(crate) async fn begin<'a>(
    ctx: &'a StepContext,
    infra: &StepInfra,
    common: &Common,
    strategy: &'static str,
    settings: serde_json::Value,
) -> Result<Option<Release<'a>>, StepFailure> {
    let (_, provider, scope) = infra
        .target(ctx, &common.environment)
        .await
        .map_err(failure)?;
    let target = ReleaseTarget {
        provider,
        scope,
        spec: Arc::clone(&infra.spec),
        ledger: ctx.ledger().clone(),
        service: common.service.clone(),
        model: common.model.clone(),
        program: common.program.clone(),
        actor: format!("step {}", ctx.step),
        step: Some((ctx.run_id, ctx.step.clone())),
        drain: common.drain,
    };
    let (candidate, stable) = target.versions().await.map_err(failure)?;
    let Some(candidate) = candidate else {
        return match stable {
            Some(production) => unchanged(ctx, &target, &production, strategy, settings)
                .await
                .map(|()| None),
            None => Err(failure(format!(
                "no version of model `{}` is in staging: deploy one to staging (a `deploy` step) before the {strategy}",
                common.model
            ))),
        };
    };
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
    let state = ReleaseState {
        service: common.service.clone(),
        model: common.model.clone(),
        environment: common.environment.clone(),
        strategy: strategy.to_owned(),
        candidate: candidate.number,
        stable: stable.as_ref().map(|s| s.number),
        phase: Phase::Running,
        weight: 0,
        round: 0,
        rounds: 1,
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
    let evidence = ReleaseEvidence {
        strategy: strategy.to_owned(),
        verdict: Verdict::Error,
        reason: String::new(),
        outcome: String::new(),
        model: common.model.clone(),
        candidate: candidate.id(),
        candidate_digest: candidate.digest.clone(),
        stable: stable.as_ref().map(ModelVersion::id),
        service: common.service.clone(),
        environment: common.environment.clone(),
        gateway: String::new(),
        settings,
        rounds: Vec::new(),
        publication: None,
    };
    Ok(Some(Release {
        ctx,
        target,
        strategy,
        candidate,
        stable,
        state,
        evidence,
        result: None,
        settings: common.settings.clone(),
    }))
}

impl Release<'_> {
    /// Stable as the declared instance (every replica healthy), the
    /// gateway sending it everything, the candidate as an owned instance,
    /// the gateway running. Any failure ends the release (verdict
    /// `error`, the candidate left in staging).
    pub(crate) async fn start(&mut self, infra: &StepInfra) -> Result<Live, StepFailure> {
        let ctx = self.ctx;
        // A gateway already running (an earlier release) follows stable's
        // instance if the apply replaces it, and then sends stable
        // everything: a candidate an interrupted release left running loses
        // its share before it is stopped.
        let running = self.target.gateway().client().await.ok();
        let stable_endpoints = match &self.stable {
            Some(s) => {
                let checked = self
                    .target
                    .apply_declared(s, running.as_ref())
                    .await
                    .and_then(|(instance, actions)| {
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
                    });
                match checked {
                    Ok(endpoints) => Some(endpoints),
                    Err(e) => {
                        let why = format!("stable {} is not serving in full: {e}", s.id());
                        return Err(self.end(Verdict::Error, why, None).await);
                    }
                }
            }
            None => None,
        };
        if let (Some(client), Some(endpoints)) = (&running, &stable_endpoints)
            && let Err(e) = set_variants(client, vec![(STABLE, 100, endpoints.clone())]).await
        {
            let why = format!("the gateway refused to send everything to stable: {e}");
            return Err(self.end(Verdict::Error, why, None).await);
        }

        // The candidate: an instance the release controller owns.
        let instance = match self.target.start_candidate(&self.candidate).await {
            Ok(instance) => instance,
            Err(e) => {
                let why = format!(
                    "the candidate did not start: {e}; no traffic moved and {} stays in staging",
                    self.candidate.id()
                );
                return Err(self.end(Verdict::Error, why, None).await);
            }
        };
        ctx.log(format!(
            "candidate {} runs as instance {} at {}",
            self.candidate.id(),
            instance.id,
            instance.endpoints().join(", ")
        ));
        self.state.candidate_instance = Some(instance.id.clone());
        let canary_endpoints = instance.endpoints();

        // The gateway in front of the service.
        let gateway = self.target.gateway();
        if stable_endpoints.is_none() {
            // A first release: nothing runs yet for the gateway's first
            // config to send traffic to, but the candidate does.
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
                let live_less = Some(instance.id.clone());
                return Err(self.end_stopping(why, live_less).await);
            }
        }
        let client = match gateway.ensure(&infra.spec).await {
            Ok(client) => client,
            Err(e) => {
                let why = format!(
                    "the gateway of `{}` did not start: {e}",
                    self.target.service
                );
                return Err(self.end_stopping(why, Some(instance.id.clone())).await);
            }
        };
        ctx.log(format!(
            "gateway {} at {}",
            client.instance(),
            client.proxy_url()
        ));
        self.evidence.gateway = client.proxy_url();
        client.knows(&canary_endpoints, &self.candidate.id());
        if let (Some(stable), Some(endpoints)) = (&self.stable, &stable_endpoints) {
            client.knows(endpoints, &stable.id());
        }
        Ok(Live {
            client,
            stable: stable_endpoints,
            canary: canary_endpoints,
            instance,
        })
    }

    /// An error after the candidate started but before the gateway runs:
    /// its instance is stopped.
    async fn end_stopping(&mut self, why: String, instance: Option<String>) -> StepFailure {
        if let Some(id) = instance
            && let Err(e) = self.target.stop_candidate(&id).await
        {
            self.ctx.log(format!(
                "stopping the candidate's instance {id} failed: {e}"
            ));
        }
        self.end(Verdict::Error, why, None).await
    }

    /// A human's abort request, if one was made.
    pub(crate) async fn abort_requested(&self) -> Option<String> {
        self.target
            .read_state()
            .await
            .ok()
            .flatten()
            .and_then(|s| s.abort_requested)
    }

    /// Writes the release state; a failure is the step's.
    pub(crate) async fn save(&mut self) -> Result<(), StepFailure> {
        self.target.write_state(&self.state).await.map_err(failure)
    }

    /// Records the `release` evidence as it stands.
    pub(crate) fn record(&self) {
        self.ctx.record(
            crate::evidence::RELEASE,
            &Recorded {
                evidence: &self.evidence,
                result: self.result.as_ref(),
            },
        );
    }

    /// The step failure for work stopped without a decision: verdict
    /// `abort` (a human, a cancelled run) or `error`.
    pub(crate) async fn stopped(&mut self, e: Stopped, live: Option<&Live>) -> StepFailure {
        let (verdict, why) = match e {
            Stopped::Aborted(who) => (Verdict::Abort, format!("aborted by {who}")),
            Stopped::Failed(_) if self.ctx.cancel.is_cancelled() => {
                (Verdict::Abort, "the run was cancelled".to_owned())
            }
            Stopped::Failed(e) => (Verdict::Error, e.message),
        };
        self.end(verdict, why, live).await
    }

    /// Ends a release that cannot go on (an error, a cancelled run, an
    /// abort): traffic back to stable, the candidate (if it runs) stopped,
    /// the candidate left in staging; evidence and state say what
    /// happened. Returns the step's failure.
    pub(crate) async fn end(
        &mut self,
        verdict: Verdict,
        why: String,
        live: Option<&Live>,
    ) -> StepFailure {
        let mut outcome = Vec::new();
        if let Some(live) = live {
            match self
                .target
                .withdraw(
                    Some(&live.client),
                    Some(&live.instance.id),
                    live.stable.as_deref(),
                )
                .await
            {
                Ok(lines) => outcome.extend(lines),
                Err(e) => outcome.push(format!("withdrawing the candidate failed: {e}")),
            }
        }
        outcome.push(format!("{} stays in staging", self.evidence.candidate));
        let outcome = outcome.join("; ");
        self.ctx.log(format!("{why}: {outcome}"));
        self.evidence.verdict = verdict;
        self.evidence.reason = why.clone();
        self.evidence.outcome = outcome.clone();
        self.record();
        self.state.phase = if verdict == Verdict::Abort {
            Phase::Aborted
        } else {
            Phase::Failed
        };
        self.state.weight = 0;
        self.state.reason = why.clone();
        self.state.candidate_instance = None;
        self.state.pid = None;
        if let Err(e) = self.target.write_state(&self.state).await {
            self.ctx
                .log(format!("the release state was not written: {e}"));
        }
        failure(format!(
            "{} of {}: {why} ({outcome})",
            self.strategy, self.evidence.candidate
        ))
    }

    /// The candidate becomes production ([`ReleaseTarget::promote`]);
    /// evidence `release` with verdict `promote`. A failed promotion ends
    /// the release with verdict `error`.
    pub(crate) async fn promote(&mut self, live: &Live, why: &str) -> Result<(), StepFailure> {
        let ctx = self.ctx;
        ctx.log(format!("promoting {}: {why}", self.candidate.id()));
        self.state.reason = format!("promoting: {why}");
        self.save().await?;
        let reason = format!(
            "promoted by {} (run {}, step {}): {why}",
            self.strategy, ctx.run_id, ctx.step
        );
        match self
            .target
            .promote(
                &live.client,
                &self.candidate,
                &live.instance,
                live.stable.as_deref(),
                &reason,
            )
            .await
        {
            Ok(lines) => {
                for line in lines {
                    ctx.log(line);
                }
                self.evidence.verdict = Verdict::Promote;
                self.evidence.reason = why.to_owned();
                self.evidence.outcome = format!("{} is production", self.candidate.id());
                let (publication, lines) = crate::publish::after_promotion(
                    &self.target,
                    &self.settings,
                    &self.candidate,
                    self.stable.as_ref().map(|s| s.number),
                    Some(&self.evidence),
                )
                .await;
                for line in lines {
                    ctx.log(line);
                }
                self.evidence.publication = publication;
                self.record();
                self.state.phase = Phase::Promoted;
                self.state.weight = 100;
                self.state.reason = why.to_owned();
                self.state.candidate_instance = None;
                self.state.pid = None;
                self.save().await
            }
            Err(e) => {
                let why = format!("the analysis said promote, but {e}");
                Err(self.end(Verdict::Error, why, Some(live)).await)
            }
        }
    }

    /// The candidate is taken out and archived ([`ReleaseTarget::roll_back`]);
    /// evidence `release` (verdict `rollback`) and `rollback`. Returns
    /// whether it all happened (an incomplete rollback is an error of the
    /// step, with the state `failed`).
    pub(crate) async fn roll_back(
        &mut self,
        live: Option<&Live>,
        why: &str,
        round: u32,
    ) -> Result<(), StepFailure> {
        let ctx = self.ctx;
        ctx.log(format!("rolling back {}: {why}", self.candidate.id()));
        let reason = format!(
            "rolled back by {} (run {}, step {}): {why}",
            self.strategy, ctx.run_id, ctx.step
        );
        let done = self
            .target
            .roll_back(
                live.map(|l| &l.client),
                &self.candidate,
                live.map(|l| l.instance.id.as_str()),
                live.and_then(|l| l.stable.as_deref()),
                &reason,
            )
            .await;
        if let Ok(lines) = &done {
            for line in lines {
                ctx.log(line.clone());
            }
        }
        self.evidence.verdict = Verdict::Rollback;
        self.evidence.reason = why.to_owned();
        self.evidence.outcome = match &done {
            Ok(_) => "the candidate is out, archived in the registry".to_owned(),
            Err(e) => format!("the rollback was incomplete: {e}"),
        };
        self.record();
        ctx.record(
            crate::evidence::ROLLBACK,
            &RollbackEvidence {
                model: self.target.model.clone(),
                candidate: self.candidate.id(),
                stable: self.stable.as_ref().map(ModelVersion::id),
                reason: why.to_owned(),
                round,
            },
        );
        self.state.phase = if done.is_ok() {
            Phase::RolledBack
        } else {
            Phase::Failed
        };
        self.state.weight = 0;
        self.state.reason = why.to_owned();
        self.state.candidate_instance = None;
        self.state.pid = None;
        self.save().await?;
        done.map(|_| ()).map_err(failure)
    }

    /// The candidate's traffic and instance taken away, the candidate left
    /// in staging for the next step, with `verdict` (`pass`: the step
    /// passes; `inconclusive`: it fails). Returns the lines of what was
    /// done.
    pub(crate) async fn keep_in_staging(
        &mut self,
        live: &Live,
        verdict: Verdict,
        why: &str,
    ) -> Result<(), StepFailure> {
        let done = self
            .target
            .withdraw(
                Some(&live.client),
                Some(&live.instance.id),
                live.stable.as_deref(),
            )
            .await;
        let mut outcome = match &done {
            Ok(lines) => lines.clone(),
            Err(e) => vec![format!("withdrawing the candidate failed: {e}")],
        };
        outcome.push(format!("{} stays in staging", self.candidate.id()));
        let outcome = outcome.join("; ");
        self.ctx.log(format!("{why}: {outcome}"));
        self.evidence.verdict = verdict;
        self.evidence.reason = why.to_owned();
        self.evidence.outcome = outcome.clone();
        self.record();
        self.state.phase = match (&done, verdict) {
            (Err(_), _) => Phase::Failed,
            (Ok(_), Verdict::Pass) => Phase::Passed,
            (Ok(_), _) => Phase::Failed,
        };
        self.state.weight = 0;
        self.state.reason = why.to_owned();
        self.state.candidate_instance = None;
        self.state.pid = None;
        self.save().await?;
        done.map_err(failure)?;
        if verdict == Verdict::Pass {
            Ok(())
        } else {
            Err(failure(format!(
                "{} of {}: {why} ({outcome})",
                self.strategy, self.evidence.candidate
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
    strategy: &'static str,
    settings: serde_json::Value,
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
    let reason = format!(
        "nothing to release: {} is the newest version of `{}` and already production",
        production.id(),
        target.model
    );
    ctx.log(format!(
        "{reason}; it serves in `{}` behind the gateway at {}",
        target.environment(),
        client.proxy_url()
    ));
    // The evidence of a release that had nothing to do: production as it
    // is, serving behind the gateway (a verdict of `pass`, no rounds).
    ctx.record(
        crate::evidence::RELEASE,
        &ReleaseEvidence {
            strategy: strategy.to_owned(),
            verdict: Verdict::Pass,
            reason,
            outcome: format!("{} is production", production.id()),
            model: target.model.clone(),
            candidate: production.id(),
            candidate_digest: production.digest.clone(),
            stable: Some(production.id()),
            service: target.service.clone(),
            environment: target.environment().to_owned(),
            gateway: client.proxy_url(),
            settings,
            rounds: Vec::new(),
            publication: None,
        },
    );
    Ok(())
}

/// The deciding round's failing (or inconclusive) checks, with their
/// reasons and numbers.
pub(crate) fn why(evidence: &ReleaseEvidence, decision: &RoundDecision) -> String {
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
        .map(|c| format!("{}: {}", check_name(c.name), c.reason))
        .collect();
    if checks.is_empty() {
        decision.reason.clone()
    } else {
        format!("{} ({})", decision.reason, checks.join("; "))
    }
}

fn check_name(name: crate::analysis::CheckName) -> String {
    serde_json::to_value(name)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What one window of traffic measured, per variant.
#[derive(Debug, Clone)]
pub(crate) struct Round {
    pub(crate) sent: u64,
    pub(crate) unanswered: u64,
    /// Of `unanswered`, connections the gateway refused (it was down).
    pub(crate) gateway_unreachable: u64,
    pub(crate) unlabelled: u64,
    pub(crate) dropped: u64,
    pub(crate) stable: VariantMeasurements,
    pub(crate) canary: VariantMeasurements,
}

impl Round {
    fn empty() -> Self {
        Round {
            sent: 0,
            unanswered: 0,
            gateway_unreachable: 0,
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
        }
    }

    fn absorb(&mut self, other: Round) {
        self.sent += other.sent;
        self.unanswered += other.unanswered;
        self.gateway_unreachable += other.gateway_unreachable;
        self.unlabelled += other.unlabelled;
        self.dropped += other.dropped;
        for (into, from) in [
            (&mut self.stable, other.stable),
            (&mut self.canary, other.canary),
        ] {
            into.requests += from.requests;
            into.errors += from.errors;
            into.latencies_ms.extend(from.latencies_ms);
            if let (Some(a), Some(b)) = (into.predictions.as_mut(), from.predictions) {
                a.extend(b);
            }
        }
    }
}

/// One stream of sample traffic.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    /// Where the requests go (a full URL).
    pub(crate) url: String,
    /// Headers every request carries.
    pub(crate) headers: Vec<(String, String)>,
    /// Requests per second.
    pub(crate) rate: f64,
    /// How long.
    pub(crate) duration: Duration,
    /// The variant every response counts for (a stream sent straight at an
    /// instance, whose answers carry no gateway header); `None`: the
    /// variant the gateway's `x-mlops-variant` names.
    pub(crate) variant: Option<&'static str>,
    /// The output whose numbers are read as predictions (none: every
    /// output's).
    pub(crate) outputs: Option<String>,
}

impl Stream {
    /// `rate` requests per second for `duration` through the gateway's
    /// proxy at `path`, counted by the variant the gateway names.
    pub(crate) fn through(
        client: &GatewayClient,
        path: &str,
        rate: f64,
        duration: Duration,
    ) -> Self {
        Stream {
            url: format!("{}{path}", client.proxy_url()),
            headers: Vec::new(),
            rate,
            duration,
            variant: None,
            outputs: None,
        }
    }
}

/// Drives the streams at once and sorts the responses by the variant that
/// served them, as they arrive (a response's body is dropped once its
/// predictions are read). Requests without a response count against the
/// candidate, the conservative side.
pub(crate) async fn drive(
    ctx: &StepContext,
    samples: &Samples,
    streams: &[Stream],
) -> Result<Round, StepFailure> {
    drive_until(ctx, samples, streams, CancellationToken::new()).await
}

/// [`drive`], ending early when `stop` is cancelled (what was measured
/// until then is returned).
pub(crate) async fn drive_until(
    ctx: &StepContext,
    samples: &Samples,
    streams: &[Stream],
    stop: CancellationToken,
) -> Result<Round, StepFailure> {
    let cancel = ctx.cancel.clone();
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.cancel();
        })
    };
    let tasks: Vec<_> = streams
        .iter()
        .map(|s| {
            let (samples, stream, stop) = (samples.clone(), s.clone(), stop.clone());
            tokio::spawn(async move { drive_one(&samples, &stream, &stop).await })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.map_err(failure).and_then(|r| r));
    }
    watcher.abort();
    if ctx.cancel.is_cancelled() {
        return Err(failure("cancelled"));
    }
    let mut round = Round::empty();
    for r in results {
        round.absorb(r?);
    }
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

async fn drive_one(
    samples: &Samples,
    stream: &Stream,
    stop: &CancellationToken,
) -> Result<Round, StepFailure> {
    let planned_max = (stream.rate * stream.duration.as_secs_f64())
        .ceil()
        .max(1.0) as u64;
    let mut settings = DriverSettings::new(
        stream.url.clone(),
        stream.rate,
        stream.duration,
        planned_max,
    );
    settings.timeout = Duration::from_secs(10);
    settings.headers = stream.headers.clone();
    let driver = settings.compile(samples.clone()).map_err(failure)?;
    // Room for every planned response: the driver never waits for the
    // tally, and the tally keeps up, so the queue stays short.
    let capacity = usize::try_from(driver.planned_requests())
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let (tx, mut rx) = mpsc::channel::<ObservedResponse>(capacity);
    let forced = stream.variant;
    let only = stream.outputs.clone();
    let tally = tokio::spawn(async move {
        let mut round = Round::empty();
        let mut answered = 0u64;
        while let Some(r) = rx.recv().await {
            answered += 1;
            let m = match forced.or(r.variant.as_deref()) {
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
                p.extend(predictions(&r.body, only.as_deref()));
            }
        }
        (round, answered)
    });
    let run = driver.run_observed(stop, tx).await;
    let (mut round, answered) = tally.await.map_err(failure)?;
    round.sent = run.report.requests;
    round.dropped = run.report.observed_dropped;
    round.unanswered = run.report.requests.saturating_sub(answered);
    // A connection the gateway refused never reached a variant: the
    // gateway was down (killed, restarting), which is no evidence against
    // the candidate — a good release must not roll back for it. Timeouts
    // and cut responses may be the candidate's and count against it.
    round.gateway_unreachable = run.report.errors_by_kind.connect.min(round.unanswered);
    let charged = round.unanswered - round.gateway_unreachable;
    let against = match forced {
        Some(STABLE) => &mut round.stable,
        _ => &mut round.canary,
    };
    against.requests += charged;
    against.errors += run.report.errors_by_kind.total().min(charged);
    Ok(round)
}

/// The numbers of an Open Inference Protocol v2 response's
/// `outputs[].data` (of the output named `only`, when given).
pub(crate) fn predictions(body: &[u8], only: Option<&str>) -> Vec<f64> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for output in v["outputs"].as_array().into_iter().flatten() {
        if only.is_some_and(|name| output["name"].as_str() != Some(name)) {
            continue;
        }
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

/// One line about a variant's measurements.
pub(crate) fn summary(name: &str, m: &VariantMeasurements) -> String {
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

/// Logs a round: `title` (what it was), its counts, both variants, every
/// check and the decision.
pub(crate) fn log_round(
    ctx: &StepContext,
    title: &str,
    round: &Round,
    analysis: &StepAnalysis,
    decision: Option<&RoundDecision>,
) {
    let gateway = match round.gateway_unreachable {
        0 => String::new(),
        n => format!(" ({n} could not reach the gateway: counted for neither variant)"),
    };
    ctx.log(format!(
        "{title}: {} sent, {} unanswered{gateway}, {} without a variant",
        round.sent, round.unanswered, round.unlabelled
    ));
    ctx.log(format!("  {}", summary(STABLE, &round.stable)));
    ctx.log(format!("  {}", summary(CANARY, &round.canary)));
    for check in &analysis.checks {
        ctx.log(format!(
            "  check {}: {:?}: {}",
            check_name(check.name),
            check.verdict,
            check.reason
        ));
    }
    match decision {
        Some(decision) => ctx.log(format!(
            "  verdict {:?}: {}; decision {:?}: {}",
            analysis.verdict, analysis.reason, decision.action, decision.reason
        )),
        None => ctx.log(format!(
            "  verdict {:?}: {}",
            analysis.verdict, analysis.reason
        )),
    }
}

/// Sets the gateway's variants with `routes`, `sticky` and `shadows`,
/// keeping its current timeouts and limits.
pub(crate) async fn configure(
    client: &GatewayClient,
    variants: Vec<(&str, u32, Vec<String>)>,
    routes: Vec<crate::gateway::Route>,
    sticky: Option<crate::gateway::Sticky>,
    shadows: Vec<crate::gateway::Shadow>,
) -> Result<Config, service::ServiceError> {
    let fresh = Config::weighted(variants);
    let base = client.config().await.unwrap_or_else(|_| fresh.clone());
    client
        .set_config(&Config {
            variants: fresh.variants,
            routes,
            sticky,
            shadows,
            ..base
        })
        .await
}

/// Waits `wait`, returning early with the reason when a human asks for an
/// abort or the run is cancelled (checked every 200 ms).
pub(crate) async fn hold(release: &Release<'_>, wait: Duration) -> Result<(), Stopped> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        if let Some(who) = release.abort_requested().await {
            return Err(Stopped::Aborted(who));
        }
        if release.ctx.cancel.is_cancelled() {
            return Err(Stopped::Failed(failure("cancelled")));
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            return Ok(());
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(200))).await;
    }
}

/// One line about a piece of stage-4 evidence, for `pipeline status`.
pub(crate) fn summarize(evidence: &mlops_core::Evidence) -> Option<String> {
    let b = &evidence.body;
    Some(match evidence.kind.as_str() {
        crate::evidence::RELEASE => {
            let rounds = b["rounds"].as_array().map_or(0, Vec::len);
            let mut line = format!(
                "{} {} of {} against {}: {}",
                b["strategy"].as_str()?,
                b["verdict"].as_str()?,
                b["candidate"].as_str()?,
                b["stable"].as_str().unwrap_or("nothing"),
                b["reason"].as_str().unwrap_or(""),
            );
            if rounds > 0 || b["strategy"] == "canary" {
                line.push_str(&format!(" after {rounds} steps"));
            }
            line
        }
        crate::evidence::ROLLBACK => format!(
            "rolled back {}: {}",
            b["candidate"].as_str()?,
            b["reason"].as_str().unwrap_or("")
        ),
        _ => return None,
    })
}
