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

use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::Diagnostic;
use mlops_core::registry::ModelVersion;
use mlops_core::{KindParams, Stage, StepAction as CoreAction, StepContext, StepFailure, StepKind};
use mlops_iac::StepInfra;
use serde::Deserialize;

use crate::analysis::{
    AnalysisConfig, InconclusiveAction, RoundDecision, RoundPolicy, RoundTracker,
    StepAction as RoundAction, StepVerdict, VariantMeasurements, analyze,
};
use crate::rollout::{Baseline, ReleaseEvidence, RoundRecord, Verdict, split};
use crate::state::Phase;
use crate::strategy::{
    self, Common, Live, Release, Stopped, Stream, Traffic, TrafficWire, drive, failure, log_round,
    why,
};

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
    /// A rollback in steps instead of at once.
    rollback: Option<toml::Spanned<RollbackWire>>,
}

/// `rollback = { steps = [25, 10], interval = "1s" }`: after a failing
/// analysis the candidate's share steps down through `steps` (those below
/// its share at the time), each held for `interval`, then to 0.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RollbackWire {
    steps: Vec<u32>,
    interval: toml::Spanned<String>,
}

fn default_on_inconclusive() -> InconclusiveAction {
    InconclusiveAction::Rollback
}

#[derive(Debug, Clone)]
struct Canary {
    common: Common,
    steps: Vec<u32>,
    hold: Duration,
    traffic: Traffic,
    analysis: AnalysisConfig,
    policy: RoundPolicy,
    /// The weights a rollback steps down through, and how long each holds
    /// (empty: at once).
    rollback_steps: Vec<u32>,
    rollback_interval: Duration,
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
        let hold = strategy::duration("hold", &wire.hold, false, &mut errors);
        let common = strategy::common(params, "canary", wire.drain.as_ref(), &mut errors);
        let model = common.as_ref().map_or("", |(c, _)| c.model.as_str());
        let traffic = wire.traffic.compile(model, &span, &mut errors);
        let (rollback_steps, rollback_interval) = match &wire.rollback {
            None => (Vec::new(), Some(Duration::ZERO)),
            Some(r) => {
                let steps = r.get_ref().steps.clone();
                if steps.iter().any(|w| !(1..=99).contains(w))
                    || steps.windows(2).any(|p| p[0] <= p[1])
                {
                    errors.push(Diagnostic::new(
                        "`rollback.steps` must be the candidate's shares on the way down, decreasing, each 1 to 99 (`[25, 10]`)",
                        Some(r.span()),
                    ));
                }
                let interval = strategy::duration(
                    "rollback.interval",
                    &r.get_ref().interval,
                    false,
                    &mut errors,
                );
                (steps, interval)
            }
        };
        if let Err(e) = wire.analysis.validate() {
            errors.push(Diagnostic::new(
                format!("`analysis`: {e}"),
                Some(span.clone()),
            ));
        }
        let (Some((common, infra)), Some(hold), Some(traffic), Some(rollback_interval), true) =
            (common, hold, traffic, rollback_interval, errors.is_empty())
        else {
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
        let canary = Canary {
            common,
            steps,
            hold,
            traffic,
            analysis: wire.analysis,
            policy,
            rollback_steps,
            rollback_interval,
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let canary = canary.clone();
            let infra = infra.clone();
            async move { run(&ctx, &infra, &canary).await }
        }))
    }
}

/// A rollback in steps (`rollback.steps`): the candidate's share down
/// through the configured weights below its share now, each held for
/// `rollback.interval`; stable takes the rest. Stable was checked healthy
/// in full before any traffic moved; a gateway that refuses a step ends
/// the stepping (the rollback then moves everything at once).
async fn step_down(release: &mut Release<'_>, live: &Live, c: &Canary) {
    let Some(stable) = live.stable.as_deref() else {
        return;
    };
    let from = release.state.weight;
    for &weight in c.rollback_steps.iter().filter(|&&w| w < from) {
        if let Err(e) =
            crate::rollout::split(&live.client, Some(stable), &live.canary, weight).await
        {
            release.ctx.log(format!(
                "rolling back in steps: the gateway refused {weight}% ({e}); everything goes back at once"
            ));
            return;
        }
        release.state.weight = weight;
        release.state.reason = format!("rolling back: {weight}% to the candidate");
        let _ = release.save().await;
        release.ctx.log(format!(
            "rolling back in steps: {weight}% to the candidate for {:?}",
            c.rollback_interval
        ));
        tokio::time::sleep(c.rollback_interval).await;
    }
}

async fn run(ctx: &StepContext, infra: &StepInfra, c: &Canary) -> Result<(), StepFailure> {
    let settings = serde_json::json!({
        "steps": c.steps,
        "hold-ms": u64::try_from(c.hold.as_millis()).unwrap_or(u64::MAX),
        "rate": c.traffic.rate,
        "path": c.traffic.path,
        "analysis": c.analysis,
        "policy": c.policy,
        "rollback-steps": c.rollback_steps,
        "rollback-interval-ms": u64::try_from(c.rollback_interval.as_millis()).unwrap_or(u64::MAX),
    });
    let Some(mut release) = strategy::begin(ctx, infra, &c.common, "canary", settings).await?
    else {
        return Ok(());
    };
    let samples = match strategy::load_samples(ctx, &c.traffic.source).await {
        Ok(s) => s,
        Err(e) => return Err(release.end(Verdict::Error, e.message, None).await),
    };
    ctx.log(format!(
        "canary of {} against {} in `{}`, service `{}`: steps {:?}, hold {:?} at {} requests/s",
        release.candidate.id(),
        release.stable.as_ref().map_or_else(
            || "nothing (a first release: SLOs only)".to_owned(),
            ModelVersion::id
        ),
        c.common.environment,
        c.common.service,
        c.steps,
        c.hold,
        c.traffic.rate
    ));
    release.state.rounds = u32::try_from(c.steps.len()).unwrap_or(u32::MAX);
    let live = release.start(infra).await?;

    let decision = match rounds(&mut release, &live, &samples, c).await {
        Ok(decision) => decision,
        Err(e) => return Err(release.stopped(e, Some(&live)).await),
    };
    release.evidence.reason = decision.reason.clone();
    // An abort asked for during the last round wins over its verdict.
    if let Some(who) = release.abort_requested().await {
        let why = format!("aborted by {who}");
        return Err(release.end(Verdict::Abort, why, Some(&live)).await);
    }
    match decision.action {
        RoundAction::Promote => release.promote(&live, &decision.reason).await,
        RoundAction::Rollback => {
            let why = why(&release.evidence, &decision);
            step_down(&mut release, &live, c).await;
            release.roll_back(Some(&live), &why, decision.round).await?;
            Err(failure(format!(
                "canary of {} rolled back at round {} ({}% canary): {why}",
                release.candidate.id(),
                decision.round,
                state_weight(&release.evidence, decision.round)
            )))
        }
        RoundAction::Pause | RoundAction::Continue => {
            let why = why(&release.evidence, &decision);
            release.evidence.verdict = Verdict::Pause;
            release.evidence.reason = decision.reason.clone();
            release.evidence.outcome = format!(
                "paused with {}% of traffic on the candidate for `mlops release promote` or `mlops release abort`",
                release.state.weight
            );
            release.record();
            release.state.phase = Phase::Paused;
            release.state.reason = why.clone();
            release.state.pid = None;
            release.save().await?;
            Err(failure(format!(
                "canary of {} paused at round {}: {why}; the candidate keeps {}% of traffic until `mlops release promote` or `mlops release abort`",
                release.candidate.id(),
                decision.round,
                release.state.weight
            )))
        }
    }
}

/// The canary weight of round `round` (1-based), from the evidence.
fn state_weight(evidence: &ReleaseEvidence, round: u32) -> u32 {
    evidence
        .rounds
        .get(round.saturating_sub(1) as usize)
        .map_or(0, |r| r.weight)
}

/// Runs the rounds until a final decision. A weight is held until a round
/// passes at it (a failing or inconclusive round repeats it, so a candidate
/// never gets more traffic on bad or missing evidence); the candidate is
/// promoted after a passing round at the last weight, or when the tracker
/// says so.
async fn rounds(
    release: &mut Release<'_>,
    live: &Live,
    samples: &crate::driver::Samples,
    c: &Canary,
) -> Result<RoundDecision, Stopped> {
    let ctx = release.ctx;
    // A first release has no stable to share traffic with: the candidate
    // takes everything whatever the weight, so one round at 100 % says all
    // the steps would.
    let steps: &[u32] = if live.stable.is_some() {
        &c.steps
    } else {
        ctx.log("a first release: one round with all the traffic, judged by the SLOs");
        &[100]
    };
    release.state.rounds = u32::try_from(steps.len()).unwrap_or(u32::MAX);
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
        if let Some(who) = release.abort_requested().await {
            return Err(Stopped::Aborted(who));
        }
        split(&live.client, live.stable.as_deref(), &live.canary, weight)
            .await
            .map_err(|e| failure(format!("the gateway refused the {weight}% split: {e}")))?;
        release.state.weight = weight;
        release.state.round = round_no;
        release.state.reason = format!("round {round_no}: {weight}% to the candidate");
        release.save().await?;
        let stream = Stream::through(&live.client, &c.traffic.path, c.traffic.rate, c.hold);
        let round = drive(ctx, samples, &[stream]).await?;
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
        let reference = match (&live.stable, &baseline) {
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
        log_round(
            ctx,
            &format!("round {round_no}: canary {weight}%"),
            &round,
            &analysis,
            Some(&decided),
        );
        release.evidence.rounds.push(RoundRecord {
            weight,
            sent: round.sent,
            unanswered: round.unanswered,
            gateway_unreachable: round.gateway_unreachable,
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

/// One line about a piece of stage-4 evidence, for `pipeline status`.
pub(crate) fn summarize(evidence: &mlops_core::Evidence) -> Option<String> {
    strategy::summarize(evidence)
}
