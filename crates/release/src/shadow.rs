//! The `shadow` kind: a pre-check that never serves a user. The newest
//! `staging` version runs beside production as a **shadow variant** of
//! the gateway: for `duration` the step sends its sample traffic to the
//! gateway, which answers every request from stable and mirrors a `share`
//! of them to the candidate, comparing the answers (status, body, numbers
//! within `tolerance`). The step then reads the gateway's shadow counters
//! (mirrored, compared, agreed, disagreed by status, body and numbers, the
//! largest differences) and, for prediction drift between the versions,
//! replays the samples once straight to both instances and compares the
//! distributions of their numeric outputs (PSI and Kolmogorov-Smirnov).
//!
//! ```toml
//! [release.steps.shadow]
//! kind = "shadow"
//! with = { duration = "5s", share = 1.0, min-agreement = 0.99, traffic = { csv = "data/wine.csv", exclude = ["quality"], rate = 50 } }
//! ```
//!
//! Verdict: the mirrors judged are the compared ones plus the failed ones
//! (a shadow that errors or times out disagrees); the agreement rate is
//! `agreed / judged`. Fewer than `min-sample-size` judged: inconclusive
//! (the candidate stays in staging, the step fails). An agreement rate
//! below `min-agreement`, or a PSI or KS statistic over `max-psi` or
//! `max-ks-statistic` when they are set: the candidate is archived
//! (evidence `rollback`), the step fails. Otherwise the step passes and
//! the candidate **stays in staging** for the next step (a `canary` that
//! `depends-on` the shadow step): a shadow never promotes. With nothing
//! in production there is nothing to compare with: the step passes.

use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::Diagnostic;
use mlops_core::registry::ModelVersion;
use mlops_core::{KindParams, Stage, StepAction as CoreAction, StepContext, StepFailure, StepKind};
use mlops_iac::StepInfra;
use serde::{Deserialize, Serialize};

use crate::gateway::{Shadow, Tolerance};
use crate::rollout::{CANARY, STABLE, Verdict};
use crate::service::GatewayClient;
use crate::state::Phase;
use crate::stats;
use crate::strategy::{
    self, Common, Live, MAX_RATE, Release, Stopped, Stream, Traffic, TrafficWire, failure,
};

/// The most samples replayed to each instance for the drift comparison.
const MAX_REPLAY: usize = 1000;

/// The `shadow` kind.
pub struct ShadowKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ShadowWire {
    duration: toml::Spanned<String>,
    traffic: TrafficWire,
    share: Option<toml::Spanned<f64>>,
    tolerance: Option<toml::Spanned<Tolerance>>,
    min_agreement: Option<toml::Spanned<f64>>,
    min_sample_size: Option<toml::Spanned<u64>>,
    max_psi: Option<toml::Spanned<f64>>,
    max_ks_statistic: Option<toml::Spanned<f64>>,
    psi_bins: Option<toml::Spanned<usize>>,
    output: Option<String>,
    drift: Option<toml::Spanned<bool>>,
    timeout: Option<toml::Spanned<String>>,
    drain: Option<toml::Spanned<String>>,
}

/// A key's value (or `default`) and where to point a diagnostic about it
/// (the key's value, or the step's `with` when it took its default).
fn key<T: Copy>(
    value: Option<&toml::Spanned<T>>,
    default: T,
    with: &std::ops::Range<usize>,
) -> (T, std::ops::Range<usize>) {
    value.map_or((default, with.clone()), |v| (*v.get_ref(), v.span()))
}

/// The shadow's thresholds, as the evidence records them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ShadowPolicy {
    /// Fraction of requests mirrored.
    pub share: f64,
    /// When numbers agree.
    pub tolerance: Tolerance,
    /// The lowest agreement rate that passes.
    pub min_agreement: f64,
    /// Mirrors judged before anything is decided.
    pub min_sample_size: u64,
    /// Relevant prediction shift (unset: reported only).
    pub max_psi: Option<f64>,
    /// Relevant KS distance (unset: reported only).
    pub max_ks_statistic: Option<f64>,
    /// Quantile bins of the PSI.
    pub psi_bins: usize,
    /// The output compared for drift (none: every number).
    pub output: Option<String>,
    /// Whether the samples are replayed to both instances for the drift
    /// (off: no request of the step reaches stable but through the
    /// gateway, and no drift is measured).
    pub drift: bool,
    /// A mirror's whole answer, ms.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone)]
struct ShadowStep {
    common: Common,
    duration: Duration,
    traffic: Traffic,
    policy: ShadowPolicy,
}

impl StepKind for ShadowKind {
    fn name(&self) -> &'static str {
        "shadow"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Release)
    }

    fn summary(&self) -> &'static str {
        "mirrors a share of production's traffic to the staging version through the gateway, compares their answers and prediction distributions, and passes it on in staging or archives it"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn CoreAction>, Vec<Diagnostic>> {
        let wire: ShadowWire = params.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        let span = params.span();
        let mut bad = |what: &str, at: std::ops::Range<usize>| {
            errors.push(Diagnostic::new(what.to_owned(), Some(at)));
        };
        let (share, at) = key(wire.share.as_ref(), 1.0, &span);
        if !(share > 0.0 && share <= 1.0) {
            bad(
                "`share` must be the fraction of requests mirrored, above 0 and at most 1",
                at,
            );
        }
        let (min_agreement, at) = key(wire.min_agreement.as_ref(), 0.99, &span);
        if !(0.0..=1.0).contains(&min_agreement) {
            bad("`min-agreement` must be a fraction, 0 to 1", at);
        }
        let (tolerance, at) = key(wire.tolerance.as_ref(), Tolerance::default(), &span);
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        if !(finite(tolerance.absolute) && finite(tolerance.relative)) {
            bad(
                "`tolerance.absolute` and `tolerance.relative` must be finite and at least 0",
                at,
            );
        }
        let (min_sample_size, at) = key(wire.min_sample_size.as_ref(), 100, &span);
        if min_sample_size == 0 {
            bad("`min-sample-size` must be at least 1", at);
        }
        let max_psi = wire.max_psi.as_ref().map(|p| (*p.get_ref(), p.span()));
        if let Some((p, at)) = &max_psi
            && !finite(*p)
        {
            bad("`max-psi` must be finite and at least 0", at.clone());
        }
        let max_ks = wire
            .max_ks_statistic
            .as_ref()
            .map(|k| (*k.get_ref(), k.span()));
        if let Some((k, at)) = &max_ks
            && !(0.0..=1.0).contains(k)
        {
            bad("`max-ks-statistic` must be 0 to 1", at.clone());
        }
        let (drift, at) = key(wire.drift.as_ref(), true, &span);
        if !drift && (max_psi.is_some() || max_ks.is_some()) {
            bad(
                "`max-psi` and `max-ks-statistic` need the drift measured: remove them or `drift = false`",
                at,
            );
        }
        let (psi_bins, at) = key(wire.psi_bins.as_ref(), 10, &span);
        if !(2..=crate::analysis::MAX_PSI_BINS).contains(&psi_bins) {
            bad("`psi-bins` must be 2 to 1000", at);
        }
        let duration = strategy::duration("duration", &wire.duration, false, &mut errors);
        let timeout = match &wire.timeout {
            None => Some(Duration::from_secs(5)),
            Some(t) => strategy::duration("timeout", t, false, &mut errors),
        };
        let common = strategy::common(params, "shadow", wire.drain.as_ref(), &mut errors);
        let model = common.as_ref().map_or("", |(c, _)| c.model.as_str());
        let traffic = wire.traffic.compile(model, &span, &mut errors);
        let (Some((common, infra)), Some(duration), Some(timeout), Some(traffic), true) =
            (common, duration, timeout, traffic, errors.is_empty())
        else {
            return Err(errors);
        };
        let step = ShadowStep {
            common,
            duration,
            traffic,
            policy: ShadowPolicy {
                share,
                tolerance,
                min_agreement,
                min_sample_size,
                max_psi: max_psi.map(|(p, _)| p),
                max_ks_statistic: max_ks.map(|(k, _)| k),
                psi_bins,
                output: wire.output,
                drift,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            },
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let step = step.clone();
            let infra = infra.clone();
            async move { run(&ctx, &infra, &step).await }
        }))
    }
}

/// The gateway's mirroring counters for the candidate's variant (zeros
/// when it never mirrored to it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Mirroring {
    /// Requests copied.
    pub mirrored: u64,
    /// Copies skipped (too many in flight).
    pub skipped: u64,
    /// Copies with no usable answer from the candidate.
    pub failed: u64,
    /// Answered but not compared (the primary's body not seen whole).
    pub uncompared: u64,
    /// Compared.
    pub compared: u64,
    /// Compared and in agreement.
    pub agreed: u64,
    /// By status.
    pub disagreed_status: u64,
    /// By body (bytes, structure, strings).
    pub disagreed_body: u64,
    /// By a number beyond the tolerance.
    pub disagreed_numeric: u64,
    /// The largest absolute difference of any number compared (over the
    /// gateway's lifetime of this shadow variant).
    pub max_abs_difference: f64,
    /// The largest relative difference.
    pub max_rel_difference: f64,
}

impl Mirroring {
    fn read(snapshot: &serde_json::Value) -> Self {
        let Some(s) = snapshot["shadows"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["variant"] == CANARY))
        else {
            return Self::default();
        };
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        Mirroring {
            mirrored: n("mirrored"),
            skipped: n("skipped"),
            failed: n("failed"),
            uncompared: n("uncompared"),
            compared: n("compared"),
            agreed: n("agreed"),
            disagreed_status: n("disagreed_status"),
            disagreed_body: n("disagreed_body"),
            disagreed_numeric: n("disagreed_numeric"),
            max_abs_difference: s["max_abs_difference"].as_f64().unwrap_or(0.0),
            max_rel_difference: s["max_rel_difference"].as_f64().unwrap_or(0.0),
        }
    }

    /// The counts since `before` (the extremes are the gateway's).
    fn since(&self, before: &Mirroring) -> Self {
        Mirroring {
            mirrored: self.mirrored.saturating_sub(before.mirrored),
            skipped: self.skipped.saturating_sub(before.skipped),
            failed: self.failed.saturating_sub(before.failed),
            uncompared: self.uncompared.saturating_sub(before.uncompared),
            compared: self.compared.saturating_sub(before.compared),
            agreed: self.agreed.saturating_sub(before.agreed),
            disagreed_status: self
                .disagreed_status
                .saturating_sub(before.disagreed_status),
            disagreed_body: self.disagreed_body.saturating_sub(before.disagreed_body),
            disagreed_numeric: self
                .disagreed_numeric
                .saturating_sub(before.disagreed_numeric),
            max_abs_difference: self.max_abs_difference,
            max_rel_difference: self.max_rel_difference,
        }
    }

    fn finished(&self) -> u64 {
        self.failed + self.uncompared + self.compared
    }
}

/// Prediction drift between the versions on the same inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Drift {
    /// Stable's numbers.
    pub stable_outputs: usize,
    /// The candidate's numbers.
    pub candidate_outputs: usize,
    /// PSI of the candidate's against stable's (none: undefined).
    pub psi: Option<f64>,
    /// KS distance.
    pub ks_statistic: Option<f64>,
    /// KS p-value.
    pub ks_p_value: Option<f64>,
}

/// The shadow's verdict, a pure function of what was measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ShadowJudgement {
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    /// Compared plus failed mirrors.
    pub judged: u64,
    /// `agreed / judged` (none: nothing judged).
    pub agreement: Option<f64>,
    /// Each check's finding, failing ones first.
    pub findings: Vec<String>,
}

/// Judges the mirroring and the drift against the policy.
pub fn judge(m: &Mirroring, drift: &Drift, p: &ShadowPolicy) -> ShadowJudgement {
    let judged = m.compared + m.failed;
    let agreement = (judged > 0).then(|| m.agreed as f64 / judged as f64);
    if judged < p.min_sample_size {
        return ShadowJudgement {
            verdict: "inconclusive".to_owned(),
            judged,
            agreement,
            findings: vec![format!(
                "sample-size: {judged} mirrors judged ({} compared, {} failed), fewer than min-sample-size {}",
                m.compared, m.failed, p.min_sample_size
            )],
        };
    }
    let (mut failing, mut passing) = (Vec::new(), Vec::new());
    let rate = agreement.unwrap_or(0.0);
    let line = format!(
        "agreement: {} of {judged} ({:.2}%; {} by status, {} by body, {} by numbers, {} failed), min-agreement {:.2}%",
        m.agreed,
        100.0 * rate,
        m.disagreed_status,
        m.disagreed_body,
        m.disagreed_numeric,
        m.failed,
        100.0 * p.min_agreement
    );
    if rate < p.min_agreement {
        failing.push(line);
    } else {
        passing.push(line);
    }
    for (name, value, max) in [
        ("psi", drift.psi, p.max_psi),
        ("ks-statistic", drift.ks_statistic, p.max_ks_statistic),
    ] {
        match (value, max) {
            (Some(v), Some(max)) if v > max => failing.push(format!("{name}: {v:.4} > max {max}")),
            (Some(v), Some(max)) => passing.push(format!("{name}: {v:.4} <= max {max}")),
            (Some(v), None) => passing.push(format!("{name}: {v:.4} (reported only)")),
            (None, _) => passing.push(format!("{name}: not computed")),
        }
    }
    let verdict = if failing.is_empty() { "pass" } else { "fail" };
    failing.extend(passing);
    ShadowJudgement {
        verdict: verdict.to_owned(),
        judged,
        agreement,
        findings: failing,
    }
}

async fn run(ctx: &StepContext, infra: &StepInfra, s: &ShadowStep) -> Result<(), StepFailure> {
    let settings = serde_json::json!({
        "duration-ms": u64::try_from(s.duration.as_millis()).unwrap_or(u64::MAX),
        "rate": s.traffic.rate,
        "path": s.traffic.path,
        "policy": s.policy,
    });
    let Some(mut release) = strategy::begin(ctx, infra, &s.common, "shadow", settings).await?
    else {
        return Ok(());
    };
    if release.stable.is_none() {
        let why = format!(
            "no version of `{}` is in production: nothing to shadow; {} stays in staging for the next step",
            s.common.model,
            release.candidate.id()
        );
        ctx.log(&why);
        release.evidence.verdict = Verdict::Pass;
        release.evidence.reason = why.clone();
        release.evidence.outcome = format!("{} stays in staging", release.candidate.id());
        release.record();
        release.state.phase = Phase::Passed;
        release.state.reason = why;
        release.state.pid = None;
        return release.save().await;
    }
    let samples = match strategy::load_samples(ctx, &s.traffic.source).await {
        Ok(x) => x,
        Err(e) => return Err(release.end(Verdict::Error, e.message, None).await),
    };
    ctx.log(format!(
        "shadow of {} behind {} in `{}`: {:.0}% mirrored for {:?} at {} requests/s",
        release.candidate.id(),
        release
            .stable
            .as_ref()
            .map_or_else(String::new, ModelVersion::id),
        s.common.environment,
        100.0 * s.policy.share,
        s.duration,
        s.traffic.rate
    ));
    let live = release.start(infra).await?;
    let (mirroring, drift, answered) = match mirror(&mut release, &live, &samples, s).await {
        Ok(x) => x,
        Err(e) => return Err(release.stopped(e, Some(&live)).await),
    };
    let judgement = judge(&mirroring, &drift, &s.policy);
    ctx.log(format!(
        "mirroring: {} mirrored, {} skipped, {} failed, {} uncompared, {} compared, {} agreed; largest differences {:.3e} absolute, {:.3e} relative",
        mirroring.mirrored,
        mirroring.skipped,
        mirroring.failed,
        mirroring.uncompared,
        mirroring.compared,
        mirroring.agreed,
        mirroring.max_abs_difference,
        mirroring.max_rel_difference
    ));
    ctx.log(format!(
        "drift: {} outputs of stable, {} of the candidate, psi {:?}, ks {:?} (p {:?})",
        drift.stable_outputs,
        drift.candidate_outputs,
        drift.psi,
        drift.ks_statistic,
        drift.ks_p_value
    ));
    for f in &judgement.findings {
        ctx.log(format!("  {f}"));
    }
    let recent = live
        .client
        .snapshot()
        .await
        .ok()
        .and_then(|snap| {
            snap["shadows"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["variant"] == CANARY))
                .map(|x| x["recent_disagreements"].clone())
        })
        .unwrap_or(serde_json::Value::Null);
    release.result = Some(serde_json::json!({
        "clients": answered,
        "mirroring": mirroring,
        "recent-disagreements": recent,
        "drift": drift,
        "judgement": judgement,
    }));
    if let Some(who) = release.abort_requested().await {
        let why = format!("aborted by {who}");
        return Err(release.end(Verdict::Abort, why, Some(&live)).await);
    }
    let why = judgement.findings.first().cloned().unwrap_or_default();
    match judgement.verdict.as_str() {
        "pass" => {
            let why = format!("the shadow agrees with stable ({why})");
            release.keep_in_staging(&live, Verdict::Pass, &why).await
        }
        "inconclusive" => {
            release
                .keep_in_staging(
                    &live,
                    Verdict::Inconclusive,
                    &format!("inconclusive: {why}"),
                )
                .await
        }
        _ => {
            let why = format!(
                "the shadow disagrees with stable: {}",
                judgement.findings.join("; ")
            );
            release.roll_back(Some(&live), &why, 1).await?;
            Err(failure(format!(
                "shadow of {} rolled back: {why}",
                release.candidate.id()
            )))
        }
    }
}

/// Mirrors for `duration`, waits for the mirrors in flight, and replays
/// the samples to both instances for the drift. Returns the mirroring
/// counts of this step, the drift, and the answers clients got by
/// variant.
async fn mirror(
    release: &mut Release<'_>,
    live: &Live,
    samples: &crate::driver::Samples,
    s: &ShadowStep,
) -> Result<(Mirroring, Drift, serde_json::Value), Stopped> {
    let ctx = release.ctx;
    let before = snapshot(&live.client).await?;
    let stable = live.stable.clone().unwrap_or_default();
    let shadow = Shadow {
        tolerance: s.policy.tolerance,
        timeout_ms: s.policy.timeout_ms,
        ..Shadow::new(CANARY, s.policy.share)
    };
    strategy::configure(
        &live.client,
        vec![
            (STABLE, 100, stable.clone()),
            (CANARY, 0, live.canary.clone()),
        ],
        Vec::new(),
        None,
        vec![shadow],
    )
    .await
    .map_err(|e| failure(format!("the gateway refused the shadow: {e}")))?;
    if let Some(who) = release.abort_requested().await {
        return Err(Stopped::Aborted(who));
    }
    release.state.round = 1;
    release.state.reason = format!(
        "mirroring {:.0}% of the requests to the candidate",
        100.0 * s.policy.share
    );
    release.save().await?;
    let stream = Stream::through(&live.client, &s.traffic.path, s.traffic.rate, s.duration);
    let round = strategy::drive(ctx, samples, &[stream]).await?;
    let answered = serde_json::json!({
        "sent": round.sent,
        "stable": round.stable.requests,
        "stable-errors": round.stable.errors,
        // Requests without an answer count against the candidate in a
        // tally; here they are their own number.
        "candidate": round.canary.requests.saturating_sub(round.unanswered),
        "unanswered": round.unanswered,
        "unlabelled": round.unlabelled,
    });
    // The mirrors still in flight end within the shadow's timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(s.policy.timeout_ms + 1000);
    let mut after = snapshot(&live.client).await?.since(&before);
    while after.finished() + after.skipped < after.mirrored + after.skipped
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = snapshot(&live.client).await?.since(&before);
    }
    if !s.policy.drift {
        return Ok((after, Drift::default(), answered));
    }
    // Drift: the same inputs once to each instance, straight.
    let n = samples.len().clamp(1, MAX_REPLAY);
    let rate = s.traffic.rate.clamp(200.0, MAX_RATE);
    let duration = Duration::from_secs_f64(n as f64 / rate);
    let replay = |url: &str, variant: &'static str| Stream {
        url: format!("{}{}", url.trim_end_matches('/'), s.traffic.path),
        headers: Vec::new(),
        rate,
        duration,
        variant: Some(variant),
        outputs: s.policy.output.clone(),
    };
    let (Some(stable_url), Some(candidate_url)) = (stable.first(), live.canary.first()) else {
        return Err(Stopped::Failed(failure(
            "no endpoint to replay the samples to",
        )));
    };
    let replayed = strategy::drive(
        ctx,
        samples,
        &[replay(stable_url, STABLE), replay(candidate_url, CANARY)],
    )
    .await?;
    let (a, b) = (
        replayed.stable.predictions.unwrap_or_default(),
        replayed.canary.predictions.unwrap_or_default(),
    );
    let ks = stats::ks_two_sample(&a, &b).ok();
    let drift = Drift {
        stable_outputs: a.len(),
        candidate_outputs: b.len(),
        psi: stats::psi(&a, &b, s.policy.psi_bins)
            .ok()
            .filter(|p| p.is_finite()),
        ks_statistic: ks.map(|k| k.statistic),
        ks_p_value: ks.map(|k| k.p_value),
    };
    Ok((after, drift, answered))
}

async fn snapshot(client: &GatewayClient) -> Result<Mirroring, Stopped> {
    client
        .snapshot()
        .await
        .map(|s| Mirroring::read(&s))
        .map_err(|e| Stopped::Failed(failure(format!("the gateway's snapshot: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ShadowPolicy {
        ShadowPolicy {
            share: 1.0,
            tolerance: Tolerance::default(),
            min_agreement: 0.99,
            min_sample_size: 50,
            max_psi: Some(0.2),
            max_ks_statistic: None,
            psi_bins: 10,
            output: None,
            drift: true,
            timeout_ms: 5000,
        }
    }

    fn mirrored(compared: u64, agreed: u64, failed: u64) -> Mirroring {
        Mirroring {
            mirrored: compared + failed,
            compared,
            agreed,
            failed,
            disagreed_numeric: compared - agreed,
            ..Mirroring::default()
        }
    }

    #[test]
    fn agreement_decides_and_failures_count_against_the_shadow() {
        let d = Drift::default();
        assert_eq!(judge(&mirrored(100, 100, 0), &d, &policy()).verdict, "pass");
        let j = judge(&mirrored(100, 90, 0), &d, &policy());
        assert_eq!(j.verdict, "fail", "{j:?}");
        assert!(j.findings[0].starts_with("agreement: 90 of 100"), "{j:?}");
        let j = judge(&mirrored(60, 60, 40), &d, &policy());
        assert_eq!(
            (j.verdict.as_str(), j.agreement),
            ("fail", Some(0.6)),
            "{j:?}"
        );
        let j = judge(&mirrored(10, 10, 0), &d, &policy());
        assert_eq!(j.verdict, "inconclusive", "{j:?}");
    }

    #[test]
    fn a_prediction_shift_over_max_psi_fails() {
        let drift = Drift {
            psi: Some(0.5),
            ..Drift::default()
        };
        let j = judge(&mirrored(100, 100, 0), &drift, &policy());
        assert_eq!(j.verdict, "fail", "{j:?}");
        assert!(j.findings[0].starts_with("psi: 0.5000 > max 0.2"), "{j:?}");
    }
}
