//! The `blue-green` kind: the newest `staging` version starts beside
//! production as the **preview** colour; users keep 100 % on stable while
//! test traffic reaches the preview by a header route; the step sends its
//! sample traffic to both colours at once, analyzes the preview against
//! stable, and on a pass **switches** every request to the preview at
//! once. The old colour (stable's declared instance) stays running, warm
//! and out of traffic, for `keep-old`, while the sample traffic goes on
//! and the new colour's errors and latency are analyzed again
//! (`verify-after-switch`): a failing analysis or an abort in that window
//! sends every request back to the old colour at once (a failure also
//! archives the candidate). Then the declared instance is replaced by
//! one serving the candidate, the registry's `production` moves, and the
//! preview instance stops after `drain`.
//!
//! ```toml
//! [release.steps.switch]
//! kind = "blue-green"
//! with = { duration = "5s", keep-old = "30s", traffic = { csv = "data/iris.csv", exclude = ["species"], rate = 50 }, analysis = { min-sample-size = 50, max-error-rate = 0.01 } }
//! ```
//!
//! Why the old colour is the declared instance and not a copy: it is the
//! process users were served by, already warm (caches, connections), and
//! `mlops release abort` (or `promote`) works on it as on any release in
//! progress. The cost: the registry's `production` still names the old
//! version during `keep-old` (it moves when the old colour is retired,
//! as [`crate::rollout::ReleaseTarget::promote`] does it, so a failure
//! leaves production as it was).
//!
//! A failing preview never gets a user request: it stops and is archived
//! (evidence `release` and `rollback`). A first release (nothing in
//! production) has no old colour: the preview is judged by the SLOs alone
//! and promoted without `keep-old`.

use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::Diagnostic;
use mlops_core::registry::ModelVersion;
use mlops_core::{KindParams, Stage, StepAction as CoreAction, StepContext, StepFailure, StepKind};
use mlops_iac::StepInfra;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::analysis::{
    AnalysisConfig, InconclusiveAction, RoundDecision, RoundPolicy, RoundTracker,
    StepAction as RoundAction, StepVerdict, VariantMeasurements, analyze,
};
use crate::gateway::Route;
use crate::rollout::{Baseline, CANARY, RoundRecord, STABLE, Verdict, set_variants};
use crate::state::Phase;
use crate::strategy::{
    self, Common, Live, Release, Stopped, Stream, Traffic, TrafficWire, failure, log_round, why,
};

/// The header that sends a request to the preview, by default.
pub const PREVIEW_HEADER: &str = "x-mlops-preview: 1";
/// How long the old colour stays warm after the switch, by default (as
/// Argo Rollouts' `scaleDownDelaySeconds`).
pub const DEFAULT_KEEP_OLD: Duration = Duration::from_secs(30);

/// The `blue-green` kind.
pub struct BlueGreenKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct BlueGreenWire {
    duration: toml::Spanned<String>,
    traffic: TrafficWire,
    #[serde(default)]
    analysis: AnalysisConfig,
    preview_header: Option<toml::Spanned<String>>,
    keep_old: Option<toml::Spanned<String>>,
    #[serde(default = "default_true")]
    verify_after_switch: bool,
    #[serde(default)]
    inconclusive_limit: u32,
    #[serde(default = "default_on_inconclusive")]
    on_inconclusive: InconclusiveAction,
    drain: Option<toml::Spanned<String>>,
}

fn default_on_inconclusive() -> InconclusiveAction {
    InconclusiveAction::Rollback
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone)]
struct BlueGreen {
    common: Common,
    duration: Duration,
    traffic: Traffic,
    analysis: AnalysisConfig,
    /// `(name, value)` of the preview route's header.
    preview_header: (String, String),
    keep_old: Duration,
    verify_after_switch: bool,
    policy: RoundPolicy,
}

/// `NAME: VALUE`, a header name of token characters and a value.
pub(crate) fn header_pair(text: &str) -> Option<(String, String)> {
    let (name, value) = text.split_once(':')?;
    let (name, value) = (name.trim(), value.trim());
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    (!name.is_empty() && name.chars().all(token) && !value.is_empty())
        .then(|| (name.to_ascii_lowercase(), value.to_owned()))
}

impl StepKind for BlueGreenKind {
    fn name(&self) -> &'static str {
        "blue-green"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Release)
    }

    fn summary(&self) -> &'static str {
        "starts the staging version as a preview beside production, analyzes it on test traffic by header, then switches every request at once, the old colour kept warm for keep-old"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn CoreAction>, Vec<Diagnostic>> {
        let wire: BlueGreenWire = params.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        let span = params.span();
        let duration = strategy::duration("duration", &wire.duration, false, &mut errors);
        let keep_old = match &wire.keep_old {
            None => Some(DEFAULT_KEEP_OLD),
            Some(k) => strategy::duration("keep-old", k, true, &mut errors),
        };
        let preview_header = match &wire.preview_header {
            None => header_pair(PREVIEW_HEADER),
            Some(h) => {
                let pair = header_pair(h.get_ref());
                if pair.is_none() {
                    errors.push(Diagnostic::new(
                        "`preview-header` must be `NAME: VALUE` (`x-mlops-preview: 1`)",
                        Some(h.span()),
                    ));
                }
                pair
            }
        };
        let common = strategy::common(params, "blue-green", wire.drain.as_ref(), &mut errors);
        let model = common.as_ref().map_or("", |(c, _)| c.model.as_str());
        let traffic = wire.traffic.compile(model, &span, &mut errors);
        if let Err(e) = wire.analysis.validate() {
            errors.push(Diagnostic::new(
                format!("`analysis`: {e}"),
                Some(span.clone()),
            ));
        }
        let (
            Some((common, infra)),
            Some(duration),
            Some(keep_old),
            Some(preview_header),
            Some(traffic),
            true,
        ) = (
            common,
            duration,
            keep_old,
            preview_header,
            traffic,
            errors.is_empty(),
        )
        else {
            return Err(errors);
        };
        let rounds = std::num::NonZeroU32::new(wire.inconclusive_limit.saturating_add(1))
            .unwrap_or(std::num::NonZeroU32::MIN);
        let policy = RoundPolicy {
            rounds,
            failure_limit: 0,
            inconclusive_limit: wire.inconclusive_limit,
            on_inconclusive: wire.on_inconclusive,
            ..RoundPolicy::default()
        };
        let bg = BlueGreen {
            common,
            duration,
            traffic,
            analysis: wire.analysis,
            preview_header,
            keep_old,
            verify_after_switch: wire.verify_after_switch,
            policy,
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let bg = bg.clone();
            let infra = infra.clone();
            async move { run(&ctx, &infra, &bg).await }
        }))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn run(ctx: &StepContext, infra: &StepInfra, bg: &BlueGreen) -> Result<(), StepFailure> {
    let settings = serde_json::json!({
        "duration-ms": millis(bg.duration),
        "keep-old-ms": millis(bg.keep_old),
        "verify-after-switch": bg.verify_after_switch,
        "drain-ms": millis(bg.common.drain),
        "preview-header": format!("{}: {}", bg.preview_header.0, bg.preview_header.1),
        "rate": bg.traffic.rate,
        "path": bg.traffic.path,
        "analysis": bg.analysis,
        "policy": bg.policy,
    });
    let Some(mut release) = strategy::begin(ctx, infra, &bg.common, "blue-green", settings).await?
    else {
        return Ok(());
    };
    let samples = match strategy::load_samples(ctx, &bg.traffic.source).await {
        Ok(s) => s,
        Err(e) => return Err(release.end(Verdict::Error, e.message, None).await),
    };
    ctx.log(format!(
        "blue-green of {} (preview) against {} in `{}`, service `{}`: {:?} of test traffic at {} requests/s to each colour, old colour kept {:?}",
        release.candidate.id(),
        release.stable.as_ref().map_or_else(
            || "nothing (a first release: SLOs only)".to_owned(),
            ModelVersion::id
        ),
        bg.common.environment,
        bg.common.service,
        bg.duration,
        bg.traffic.rate,
        bg.keep_old
    ));
    release.state.rounds = bg.policy.rounds.get();
    let live = release.start(infra).await?;

    let (decision, baseline) = match preview(&mut release, &live, &samples, bg).await {
        Ok(d) => d,
        Err(e) => return Err(release.stopped(e, Some(&live)).await),
    };
    release.evidence.reason = decision.reason.clone();
    if let Some(who) = release.abort_requested().await {
        let why = format!("aborted by {who}");
        return Err(release.end(Verdict::Abort, why, Some(&live)).await);
    }
    match decision.action {
        RoundAction::Promote => match switch(&mut release, &live, &samples, bg, &baseline).await {
            Ok(None) => release.promote(&live, &decision.reason).await,
            Ok(Some(failed)) => {
                let why = why(&release.evidence, &failed);
                release.roll_back(Some(&live), &why, failed.round).await?;
                Err(failure(format!(
                    "blue-green of {} switched back to the old colour: {why}",
                    release.candidate.id()
                )))
            }
            Err(e) => Err(release.stopped(e, Some(&live)).await),
        },
        RoundAction::Rollback => {
            let why = why(&release.evidence, &decision);
            release.roll_back(Some(&live), &why, decision.round).await?;
            Err(failure(format!(
                "blue-green of {} rolled back: the preview was not switched to ({why})",
                release.candidate.id()
            )))
        }
        RoundAction::Pause | RoundAction::Continue => {
            let why = why(&release.evidence, &decision);
            release.evidence.verdict = Verdict::Pause;
            release.evidence.reason = decision.reason.clone();
            release.evidence.outcome = "paused with the preview running (test traffic only) for `mlops release promote` or `mlops release abort`".to_owned();
            release.record();
            release.state.phase = Phase::Paused;
            release.state.reason = why.clone();
            release.state.pid = None;
            release.save().await?;
            Err(failure(format!(
                "blue-green of {} paused: {why}; the preview keeps running until `mlops release promote` (the switch) or `mlops release abort`",
                release.candidate.id()
            )))
        }
    }
}

/// The preview: users stay on stable, the header routes test traffic to
/// the candidate; windows of `duration` with sample traffic to both
/// colours until the tracker decides.
async fn preview(
    release: &mut Release<'_>,
    live: &Live,
    samples: &crate::driver::Samples,
    bg: &BlueGreen,
) -> Result<(RoundDecision, VariantMeasurements), Stopped> {
    let ctx = release.ctx;
    let (name, value) = &bg.preview_header;
    let route = Route {
        header: Some(format!("{name}: {value}")),
        cookie: None,
        variant: CANARY.to_owned(),
    };
    let variants = match &live.stable {
        Some(stable) => vec![
            (STABLE, 100, stable.clone()),
            (CANARY, 0, live.canary.clone()),
        ],
        None => vec![(CANARY, 100, live.canary.clone())],
    };
    strategy::configure(&live.client, variants, vec![route], None, Vec::new())
        .await
        .map_err(|e| failure(format!("the gateway refused the preview route: {e}")))?;
    ctx.log(format!(
        "preview: users stay on stable; requests with `{name}: {value}` go to {}",
        release.candidate.id()
    ));
    let mut tracker = RoundTracker::new(bg.policy.clone());
    let mut round_no = 0u32;
    loop {
        round_no += 1;
        if let Some(who) = release.abort_requested().await {
            return Err(Stopped::Aborted(who));
        }
        release.state.weight = 0;
        release.state.round = round_no;
        release.state.reason = format!("preview window {round_no}: test traffic by header");
        release.save().await?;
        let mut to_preview =
            Stream::through(&live.client, &bg.traffic.path, bg.traffic.rate, bg.duration);
        to_preview.headers = vec![(name.clone(), value.clone())];
        let mut streams = vec![to_preview];
        if live.stable.is_some() {
            streams.push(Stream::through(
                &live.client,
                &bg.traffic.path,
                bg.traffic.rate,
                bg.duration,
            ));
        }
        let round = strategy::drive(ctx, samples, &streams).await?;
        let reference = live.stable.as_ref().map(|_| &round.stable);
        let analysis = analyze(reference, &round.canary, &bg.analysis)
            .map_err(|e| failure(format!("the analysis of the preview failed: {e}")))?;
        let stable_measured = round.stable.clone();
        let verdict = analysis.verdict;
        let mut decided = tracker.record(verdict);
        if verdict == StepVerdict::Pass {
            decided = RoundDecision {
                action: RoundAction::Promote,
                round: round_no,
                reason: format!("the preview passed its analysis (window {round_no})"),
            };
        }
        log_round(
            ctx,
            &format!("preview window {round_no}"),
            &round,
            &analysis,
            Some(&decided),
        );
        release.evidence.rounds.push(RoundRecord {
            weight: 0,
            sent: round.sent,
            unanswered: round.unanswered,
            gateway_unreachable: round.gateway_unreachable,
            unlabelled: round.unlabelled,
            dropped: round.dropped,
            stable_baseline: if live.stable.is_some() {
                Baseline::SameRound
            } else {
                Baseline::None
            },
            analysis,
            decision: decided.clone(),
        });
        if decided.action.is_final() {
            return Ok((decided, stable_measured));
        }
    }
}

/// The switch: every request to the preview at once; then the old colour
/// (stable's declared instance) stays warm for `keep-old`, an abort
/// sending everything back to it. With `verify-after-switch` the sample
/// traffic keeps coming during `keep-old` and the new colour's errors and
/// latency are analyzed against stable's of the last preview window: a
/// failing analysis returns its decision (the caller switches back); a
/// passing or inconclusive one (the preview passed already) goes on.
async fn switch(
    release: &mut Release<'_>,
    live: &Live,
    samples: &crate::driver::Samples,
    bg: &BlueGreen,
    baseline: &VariantMeasurements,
) -> Result<Option<RoundDecision>, Stopped> {
    let ctx = release.ctx;
    set_variants(&live.client, vec![(CANARY, 100, live.canary.clone())])
        .await
        .map_err(|e| failure(format!("the gateway refused the switch: {e}")))?;
    let switched = crate::state::now();
    release.state.weight = 100;
    let keep = if live.stable.is_some() {
        bg.keep_old
    } else {
        Duration::ZERO
    };
    release.state.reason = format!(
        "switched: every request to {}; the old colour stays warm for {keep:?}",
        release.candidate.id()
    );
    release.save().await?;
    ctx.log(format!(
        "switched: every request goes to {} ({}); the old colour {} stays warm for {keep:?}",
        release.candidate.id(),
        live.instance.id,
        release
            .stable
            .as_ref()
            .map_or_else(|| "(none)".to_owned(), ModelVersion::id),
    ));
    let verify = bg.verify_after_switch && !keep.is_zero();
    let round = if verify {
        let stop = CancellationToken::new();
        let streams = [Stream::through(
            &live.client,
            &bg.traffic.path,
            bg.traffic.rate,
            keep,
        )];
        let held = async {
            let held = strategy::hold(release, keep).await;
            if held.is_err() {
                stop.cancel();
            }
            held
        };
        let (round, held) = tokio::join!(
            strategy::drive_until(ctx, samples, &streams, stop.clone()),
            held
        );
        held?;
        Some(round?)
    } else {
        strategy::hold(release, keep).await?;
        None
    };
    let retired = crate::state::now();
    release.result = Some(serde_json::json!({
        "switched-at": switched,
        "old-colour-kept-ms": millis(keep),
        "old-colour-retired-at": retired,
    }));
    let Some(round) = round else {
        ctx.log(format!(
            "the old colour kept warm from {switched} to {retired}: retiring it"
        ));
        return Ok(None);
    };
    // Predictions are not compared again: the windows' inputs differ (the
    // samples are cycled from the start each window), and the preview
    // compared them with stable's on the same inputs. Errors and latency
    // are the new colour's to keep.
    let baseline = VariantMeasurements {
        predictions: None,
        ..baseline.clone()
    };
    let mut serving = round.canary.clone();
    serving.predictions = None;
    let analysis = analyze(Some(&baseline), &serving, &bg.analysis)
        .map_err(|e| failure(format!("the analysis after the switch failed: {e}")))?;
    let number = u32::try_from(release.evidence.rounds.len())
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let failed = analysis.verdict == StepVerdict::Fail;
    let decision = RoundDecision {
        action: if failed {
            RoundAction::Rollback
        } else {
            RoundAction::Promote
        },
        round: number,
        reason: match analysis.verdict {
            StepVerdict::Fail => "the new colour failed its analysis after the switch".to_owned(),
            StepVerdict::Pass => "the new colour passed its analysis after the switch".to_owned(),
            StepVerdict::Inconclusive => {
                "the analysis after the switch was inconclusive; the preview passed".to_owned()
            }
        },
    };
    log_round(
        ctx,
        &format!("after the switch ({keep:?}, the old colour warm)"),
        &round,
        &analysis,
        Some(&decision),
    );
    release.evidence.rounds.push(RoundRecord {
        weight: 100,
        sent: round.sent,
        unanswered: round.unanswered,
        gateway_unreachable: round.gateway_unreachable,
        unlabelled: round.unlabelled,
        dropped: round.dropped,
        stable_baseline: Baseline::EarlierRound,
        analysis,
        decision: decision.clone(),
    });
    if failed {
        return Ok(Some(decision));
    }
    ctx.log(format!(
        "the old colour kept warm from {switched} to {retired}: retiring it"
    ));
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::header_pair;

    #[test]
    fn header_pairs() {
        assert_eq!(
            header_pair("X-Mlops-Preview: 1"),
            Some(("x-mlops-preview".to_owned(), "1".to_owned()))
        );
        assert_eq!(header_pair("x-preview"), None);
        assert_eq!(header_pair("bad name: 1"), None);
        assert_eq!(header_pair("x-a:"), None);
    }
}
