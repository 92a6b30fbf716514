//! The `ab` kind: an experiment between two arms, **A** (stable, the
//! version in `production`) and **B** (the candidate, the newest in
//! `staging`), each user assigned to one arm by the gateway (a weighted
//! choice, sticky by a cookie or header when `sticky` names one; the
//! headers `x-mlops-arm: a|b` force an arm). The step sends its sample
//! traffic for `duration`, tallies the answers by arm, and compares one
//! `metric` between the arms with a hypothesis test:
//!
//! - `error-rate`: the 2×2 table of ok/error answers, Fisher's exact when
//!   an expected count is below 5, else chi-square with Yates; effect in
//!   percentage points; lower is better;
//! - `latency`: Mann-Whitney U on the latencies; effect the difference of
//!   medians in ms; lower is better;
//! - `output-mean`: Welch's t on the numbers of the responses' `outputs`
//!   (the one named `output`, or all); effect the difference of means;
//!   `higher-is-better` says which way wins.
//!
//! The winner is the better arm when `p < alpha`; otherwise there is no
//! significant difference. Then `promote`:
//!
//! - `never` (the default: an experiment, not a release): B's traffic and
//!   instance are taken away and it stays in staging; the step passes;
//! - `winner`: B is promoted when it wins, else as `never`;
//! - `not-worse`: B is promoted unless A wins.
//!
//! Whatever the policy, a B that loses (A wins) is rolled back: archived,
//! evidence `rollback`, the step fails. With `analysis` (guardrails), B is
//! also analyzed against A as a canary round is (SLOs, regressions,
//! predictions): a failure rolls B back whatever the metric said, an
//! inconclusive analysis keeps it from being promoted. Too few answers in an arm
//! (`min-sample-size`) is inconclusive: B stays in staging and the step
//! fails. With nothing in production there is no arm A: the step passes
//! without an experiment, B left in staging for the next step.

use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::Diagnostic;
use mlops_core::registry::ModelVersion;
use mlops_core::{KindParams, Stage, StepAction as CoreAction, StepContext, StepFailure, StepKind};
use mlops_iac::StepInfra;
use serde::{Deserialize, Serialize};

use crate::analysis::{
    AnalysisConfig, RoundDecision, StepAction as RoundAction, StepVerdict, VariantMeasurements,
    analyze,
};
use crate::gateway::{Route, Sticky};
use crate::rollout::{Baseline, CANARY, RoundRecord, STABLE, Verdict};
use crate::state::Phase;
use crate::stats;
use crate::strategy::{
    self, Common, Live, Release, Stopped, Stream, Traffic, TrafficWire, failure,
};

/// The header that forces an arm (`a` or `b`).
pub const ARM_HEADER: &str = "x-mlops-arm";

/// The `ab` kind.
pub struct AbKind;

/// What is compared between the arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Non-2xx answers (and requests without one) per request.
    ErrorRate,
    /// Latency, by ranks.
    Latency,
    /// The mean of a numeric output.
    OutputMean,
}

/// When the candidate (B) becomes production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromotePolicy {
    /// An experiment: report, never promote.
    Never,
    /// When B wins.
    Winner,
    /// Unless A wins.
    NotWorse,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StickyWire {
    cookie: Option<String>,
    header: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AbWire {
    duration: toml::Spanned<String>,
    traffic: TrafficWire,
    #[serde(default = "default_share")]
    share: toml::Spanned<u32>,
    sticky: Option<toml::Spanned<StickyWire>>,
    #[serde(default = "default_metric")]
    metric: Metric,
    output: Option<toml::Spanned<String>>,
    #[serde(default = "default_true")]
    higher_is_better: bool,
    #[serde(default = "default_alpha")]
    alpha: toml::Spanned<f64>,
    #[serde(default = "default_min_sample_size")]
    min_sample_size: toml::Spanned<u64>,
    #[serde(default = "default_promote")]
    promote: PromotePolicy,
    /// Guardrails: B analyzed against A as a canary round is.
    analysis: Option<AnalysisConfig>,
    drain: Option<toml::Spanned<String>>,
}

fn default_share() -> toml::Spanned<u32> {
    toml::Spanned::new(0..0, 50)
}
fn default_metric() -> Metric {
    Metric::ErrorRate
}
fn default_true() -> bool {
    true
}
fn default_alpha() -> toml::Spanned<f64> {
    toml::Spanned::new(0..0, 0.05)
}
fn default_min_sample_size() -> toml::Spanned<u64> {
    toml::Spanned::new(0..0, 100)
}
fn default_promote() -> PromotePolicy {
    PromotePolicy::Never
}

/// The experiment's settings, as the evidence records them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Experiment {
    /// B's share of the users, in percent.
    pub share: u32,
    /// The metric compared.
    pub metric: Metric,
    /// For `output-mean`: the output read (none: every number).
    pub output: Option<String>,
    /// For `output-mean`: whether a higher mean wins.
    pub higher_is_better: bool,
    /// Significance.
    pub alpha: f64,
    /// Answers each arm needs before anything is decided.
    pub min_sample_size: u64,
    /// When B is promoted.
    pub promote: PromotePolicy,
}

#[derive(Debug, Clone)]
struct Ab {
    common: Common,
    guardrails: Option<AnalysisConfig>,
    duration: Duration,
    traffic: Traffic,
    sticky: Option<Sticky>,
    experiment: Experiment,
}

impl StepKind for AbKind {
    fn name(&self) -> &'static str {
        "ab"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Release)
    }

    fn summary(&self) -> &'static str {
        "runs production (A) and the staging version (B) as two arms behind the gateway, compares a metric between them with a hypothesis test and reports the winner (promotes it with promote = \"winner\")"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn CoreAction>, Vec<Diagnostic>> {
        let wire: AbWire = params.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        let span = params.span();
        let duration = strategy::duration("duration", &wire.duration, false, &mut errors);
        let share = *wire.share.get_ref();
        if !(1..=99).contains(&share) {
            errors.push(Diagnostic::new(
                "`share` must be B's share of users in percent, 1 to 99",
                Some(non_empty(wire.share.span(), &span)),
            ));
        }
        let alpha = *wire.alpha.get_ref();
        if !(alpha > 0.0 && alpha < 1.0) {
            errors.push(Diagnostic::new(
                "`alpha` must be above 0 and below 1",
                Some(non_empty(wire.alpha.span(), &span)),
            ));
        }
        if *wire.min_sample_size.get_ref() == 0 {
            errors.push(Diagnostic::new(
                "`min-sample-size` must be at least 1",
                Some(non_empty(wire.min_sample_size.span(), &span)),
            ));
        }
        if let Some(output) = &wire.output
            && wire.metric != Metric::OutputMean
        {
            errors.push(Diagnostic::new(
                "`output` is read only with `metric = \"output-mean\"`",
                Some(output.span()),
            ));
        }
        let sticky = match &wire.sticky {
            None => Some(None),
            Some(s) => match (&s.get_ref().cookie, &s.get_ref().header) {
                (Some(c), None) if !c.is_empty() => Some(Some(Sticky::Cookie(c.clone()))),
                (None, Some(h)) if !h.is_empty() => Some(Some(Sticky::Header(h.clone()))),
                _ => {
                    errors.push(Diagnostic::new(
                        "`sticky` needs exactly one of `cookie = \"NAME\"` and `header = \"NAME\"`",
                        Some(s.span()),
                    ));
                    None
                }
            },
        };
        if let Some(Err(e)) = wire.analysis.as_ref().map(AnalysisConfig::validate) {
            errors.push(Diagnostic::new(
                format!("`analysis`: {e}"),
                Some(span.clone()),
            ));
        }
        let common = strategy::common(params, "ab", wire.drain.as_ref(), &mut errors);
        let model = common.as_ref().map_or("", |(c, _)| c.model.as_str());
        let traffic = wire.traffic.compile(model, &span, &mut errors);
        let (Some((common, infra)), Some(duration), Some(sticky), Some(traffic), true) =
            (common, duration, sticky, traffic, errors.is_empty())
        else {
            return Err(errors);
        };
        let ab = Ab {
            common,
            guardrails: wire.analysis,
            duration,
            traffic,
            sticky,
            experiment: Experiment {
                share,
                metric: wire.metric,
                output: wire.output.map(toml::Spanned::into_inner),
                higher_is_better: wire.higher_is_better,
                alpha,
                min_sample_size: *wire.min_sample_size.get_ref(),
                promote: wire.promote,
            },
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let ab = ab.clone();
            let infra = infra.clone();
            async move { run(&ctx, &infra, &ab).await }
        }))
    }
}

/// A key's own span, or the table's when the key took its default.
fn non_empty(
    span: std::ops::Range<usize>,
    table: &std::ops::Range<usize>,
) -> std::ops::Range<usize> {
    if span.is_empty() { table.clone() } else { span }
}

/// One arm's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Arm {
    /// `model:N`.
    pub version: String,
    /// Answers (and requests without one, for B).
    pub requests: u64,
    /// Non-2xx answers and requests without one.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// The numbers compared for `output-mean`.
    pub outputs: usize,
    /// Their mean (none without any).
    pub output_mean: Option<f64>,
}

/// The test and its conclusion.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Outcome {
    /// `fisher-exact`, `chi-square-yates`, `mann-whitney-u` or
    /// `welch-t` (none: not run).
    pub test: Option<String>,
    /// The test statistic.
    pub statistic: Option<f64>,
    /// Two-sided p-value.
    pub p_value: Option<f64>,
    /// B minus A: percentage points, ms, or output units.
    pub effect: Option<f64>,
    /// `a`, `b`, or none (no significant difference, or inconclusive).
    pub winner: Option<String>,
    /// Whether the arms had the samples to decide.
    pub conclusive: bool,
    /// In words.
    pub conclusion: String,
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * 0.5;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (h - lo as f64)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// An arm's numbers from its measurements.
pub fn arm(version: String, m: &VariantMeasurements) -> Arm {
    let outputs = m.predictions.as_deref().unwrap_or_default();
    Arm {
        version,
        requests: m.requests,
        errors: m.errors,
        error_rate: if m.requests == 0 {
            0.0
        } else {
            m.errors as f64 / m.requests as f64
        },
        p50_ms: median(&m.latencies_ms),
        outputs: outputs.len(),
        output_mean: mean(outputs),
    }
}

/// Compares the arms on the experiment's metric: a pure function of the
/// measurements (A's, B's) and the settings.
pub fn compare(a: &VariantMeasurements, b: &VariantMeasurements, e: &Experiment) -> Outcome {
    let empty: &[f64] = &[];
    let (a_out, b_out) = (
        a.predictions.as_deref().unwrap_or(empty),
        b.predictions.as_deref().unwrap_or(empty),
    );
    let (a_n, b_n) = match e.metric {
        Metric::ErrorRate => (a.requests, b.requests),
        Metric::Latency => (a.latencies_ms.len() as u64, b.latencies_ms.len() as u64),
        Metric::OutputMean => (a_out.len() as u64, b_out.len() as u64),
    };
    if a_n < e.min_sample_size || b_n < e.min_sample_size {
        return Outcome {
            test: None,
            statistic: None,
            p_value: None,
            effect: None,
            winner: None,
            conclusive: false,
            conclusion: format!(
                "inconclusive: {a_n} samples in A and {b_n} in B, fewer than min-sample-size {}",
                e.min_sample_size
            ),
        };
    }
    // (test, outcome, effect B − A, whether B is better when it differs)
    let (test, outcome, effect, b_better) = match e.metric {
        Metric::ErrorRate => {
            let table = [
                [a.requests - a.errors.min(a.requests), a.errors],
                [b.requests - b.errors.min(b.requests), b.errors],
            ];
            let total = (a.requests + b.requests) as f64;
            let errors = (a.errors + b.errors) as f64;
            let oks = total - errors;
            let min_expected = a.requests.min(b.requests) as f64 * errors.min(oks) / total;
            let (test, outcome) = if min_expected < 5.0 {
                ("fisher-exact", stats::fisher_exact_2x2(table))
            } else {
                ("chi-square-yates", stats::chi_square_2x2(table, true))
            };
            let rate = |m: &VariantMeasurements| m.errors as f64 / m.requests.max(1) as f64;
            let effect = 100.0 * (rate(b) - rate(a));
            (test, outcome, effect, effect < 0.0)
        }
        Metric::Latency => {
            let effect = median(&b.latencies_ms) - median(&a.latencies_ms);
            (
                "mann-whitney-u",
                stats::mann_whitney_u(&a.latencies_ms, &b.latencies_ms),
                effect,
                effect < 0.0,
            )
        }
        Metric::OutputMean => {
            let effect = mean(b_out).unwrap_or(0.0) - mean(a_out).unwrap_or(0.0);
            (
                "welch-t",
                stats::welch_t_test(a_out, b_out),
                effect,
                (effect > 0.0) == e.higher_is_better,
            )
        }
    };
    // A test undefined on the data (no errors in either arm, constant
    // outputs alike) found no difference.
    let (statistic, p_value, note) = match outcome {
        Ok(o) => (
            Some(o.statistic).filter(|s| s.is_finite()),
            Some(o.p_value),
            String::new(),
        ),
        Err(err) => (None, None, format!(" (the test does not apply: {err})")),
    };
    let significant = p_value.is_some_and(|p| p < e.alpha) && effect != 0.0;
    let winner = significant.then(|| if b_better { "b" } else { "a" }.to_owned());
    let conclusion = match &winner {
        Some(w) => format!(
            "{} wins on {}: effect {effect:+.4} (B − A), p = {:.3e} < alpha {}",
            w.to_uppercase(),
            metric_name(e.metric),
            p_value.unwrap_or(f64::NAN),
            e.alpha
        ),
        None => format!(
            "no significant difference in {}: effect {effect:+.4} (B − A), p = {}{note}",
            metric_name(e.metric),
            p_value.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.3e}"))
        ),
    };
    Outcome {
        test: Some(test.to_owned()),
        statistic,
        p_value,
        effect: Some(effect),
        winner,
        conclusive: true,
        conclusion,
    }
}

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::ErrorRate => "error-rate",
        Metric::Latency => "latency",
        Metric::OutputMean => "output-mean",
    }
}

async fn run(ctx: &StepContext, infra: &StepInfra, ab: &Ab) -> Result<(), StepFailure> {
    let settings = serde_json::json!({
        "duration-ms": u64::try_from(ab.duration.as_millis()).unwrap_or(u64::MAX),
        "rate": ab.traffic.rate,
        "path": ab.traffic.path,
        "sticky": ab.sticky,
        "arm-header": ARM_HEADER,
        "experiment": ab.experiment,
        "analysis": ab.guardrails,
    });
    let Some(mut release) = strategy::begin(ctx, infra, &ab.common, "ab", settings).await? else {
        return Ok(());
    };
    if release.stable.is_none() {
        let why = format!(
            "no version of `{}` is in production: there is no arm A to experiment against; {} stays in staging for the next step",
            ab.common.model,
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
    let samples = match strategy::load_samples(ctx, &ab.traffic.source).await {
        Ok(s) => s,
        Err(e) => return Err(release.end(Verdict::Error, e.message, None).await),
    };
    ctx.log(format!(
        "A/B of {} (B, {}% of users) against {} (A) in `{}`: {} for {:?} at {} requests/s",
        release.candidate.id(),
        ab.experiment.share,
        release
            .stable
            .as_ref()
            .map_or_else(String::new, ModelVersion::id),
        ab.common.environment,
        metric_name(ab.experiment.metric),
        ab.duration,
        ab.traffic.rate
    ));
    let live = release.start(infra).await?;
    let round = match experiment(&mut release, &live, &samples, ab).await {
        Ok(r) => r,
        Err(e) => return Err(release.stopped(e, Some(&live)).await),
    };
    // The arms' outputs, only the one named when `output` is set.
    let outcome = compare(&round.stable, &round.canary, &ab.experiment);
    let a = arm(
        release
            .stable
            .as_ref()
            .map(ModelVersion::id)
            .unwrap_or_default(),
        &round.stable,
    );
    let b = arm(release.candidate.id(), &round.canary);
    ctx.log(format!(
        "A {}: {} requests, {} errors, p50 {:.1} ms, output mean {:?}",
        a.version, a.requests, a.errors, a.p50_ms, a.output_mean
    ));
    ctx.log(format!(
        "B {}: {} requests, {} errors, p50 {:.1} ms, output mean {:?}",
        b.version, b.requests, b.errors, b.p50_ms, b.output_mean
    ));
    ctx.log(outcome.conclusion.clone());
    release.result = Some(serde_json::json!({
        "sent": round.sent,
        "unanswered": round.unanswered,
        "unlabelled": round.unlabelled,
        "a": a,
        "b": b,
        "outcome": outcome,
    }));
    if let Some(who) = release.abort_requested().await {
        let why = format!("aborted by {who}");
        return Err(release.end(Verdict::Abort, why, Some(&live)).await);
    }
    let mut why = outcome.conclusion.clone();
    // Guardrails: B against A as a canary round (SLOs, regressions,
    // predictions). A failure rolls B back whatever the metric said; an
    // inconclusive analysis keeps B from being promoted.
    let mut guarded = true;
    if let Some(config) = &ab.guardrails {
        let analysis = match analyze(Some(&round.stable), &round.canary, config) {
            Ok(a) => a,
            Err(e) => {
                let why = format!("the guardrail analysis failed: {e}");
                return Err(release.end(Verdict::Error, why, Some(&live)).await);
            }
        };
        let verdict = analysis.verdict;
        let decision = RoundDecision {
            action: match verdict {
                StepVerdict::Fail => RoundAction::Rollback,
                StepVerdict::Pass => RoundAction::Promote,
                StepVerdict::Inconclusive => RoundAction::Pause,
            },
            round: 1,
            reason: format!("guardrails: {}", analysis.reason),
        };
        strategy::log_round(
            ctx,
            &format!("guardrails: B ({}%) against A", ab.experiment.share),
            &round,
            &analysis,
            Some(&decision),
        );
        release.evidence.rounds.push(RoundRecord {
            weight: ab.experiment.share,
            sent: round.sent,
            unanswered: round.unanswered,
            gateway_unreachable: round.gateway_unreachable,
            unlabelled: round.unlabelled,
            dropped: round.dropped,
            stable_baseline: Baseline::SameRound,
            analysis,
            decision: decision.clone(),
        });
        match verdict {
            StepVerdict::Fail => {
                let why = format!("{}; {why}", strategy::why(&release.evidence, &decision));
                release.roll_back(Some(&live), &why, 1).await?;
                return Err(failure(format!(
                    "A/B of {}: B failed its guardrails and is rolled back: {why}",
                    release.candidate.id()
                )));
            }
            StepVerdict::Inconclusive => {
                guarded = false;
                why = format!("{why}; {}", strategy::why(&release.evidence, &decision));
            }
            StepVerdict::Pass => {}
        }
    }
    let promotes = matches!(
        (outcome.winner.as_deref(), ab.experiment.promote),
        (Some("b"), PromotePolicy::Winner | PromotePolicy::NotWorse)
            | (None, PromotePolicy::NotWorse)
    );
    match outcome.winner.as_deref() {
        _ if !outcome.conclusive => {
            release
                .keep_in_staging(&live, Verdict::Inconclusive, &why)
                .await
        }
        Some("a") => {
            release.roll_back(Some(&live), &why, 1).await?;
            Err(failure(format!(
                "A/B of {}: B lost and is rolled back: {why}",
                release.candidate.id()
            )))
        }
        _ if promotes && guarded => release.promote(&live, &why).await,
        _ if promotes => {
            let why = format!("{why}: B is not promoted without its guardrails' evidence");
            release
                .keep_in_staging(&live, Verdict::Inconclusive, &why)
                .await
        }
        _ => {
            let why = format!(
                "{why}; promote = \"{}\": B is not promoted",
                match ab.experiment.promote {
                    PromotePolicy::Never => "never",
                    PromotePolicy::Winner => "winner",
                    PromotePolicy::NotWorse => "not-worse",
                }
            );
            release.keep_in_staging(&live, Verdict::Pass, &why).await
        }
    }
}

/// The arms live for `duration` of sample traffic, tallied by arm
/// (outputs filtered to `output`).
async fn experiment(
    release: &mut Release<'_>,
    live: &Live,
    samples: &crate::driver::Samples,
    ab: &Ab,
) -> Result<strategy::Round, Stopped> {
    let ctx = release.ctx;
    let share = ab.experiment.share;
    let stable = live.stable.clone().unwrap_or_default();
    let routes = vec![
        Route {
            header: Some(format!("{ARM_HEADER}: a")),
            cookie: None,
            variant: STABLE.to_owned(),
        },
        Route {
            header: Some(format!("{ARM_HEADER}: b")),
            cookie: None,
            variant: CANARY.to_owned(),
        },
    ];
    strategy::configure(
        &live.client,
        vec![
            (STABLE, 100 - share, stable),
            (CANARY, share, live.canary.clone()),
        ],
        routes,
        ab.sticky.clone(),
        Vec::new(),
    )
    .await
    .map_err(|e| failure(format!("the gateway refused the arms: {e}")))?;
    if let Some(who) = release.abort_requested().await {
        return Err(Stopped::Aborted(who));
    }
    release.state.weight = share;
    release.state.round = 1;
    release.state.reason = format!("experiment: {share}% of users on B");
    release.save().await?;
    let mut stream = Stream::through(&live.client, &ab.traffic.path, ab.traffic.rate, ab.duration);
    stream.outputs = ab.experiment.output.clone();
    let round = strategy::drive(ctx, samples, &[stream]).await?;
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(requests: u64, errors: u64, latency: f64, outputs: &[f64]) -> VariantMeasurements {
        VariantMeasurements {
            requests,
            errors,
            latencies_ms: (0..requests).map(|i| latency + (i % 7) as f64).collect(),
            predictions: Some(outputs.to_vec()),
        }
    }

    fn experiment(metric: Metric) -> Experiment {
        Experiment {
            share: 50,
            metric,
            output: None,
            higher_is_better: true,
            alpha: 0.05,
            min_sample_size: 50,
            promote: PromotePolicy::Never,
        }
    }

    #[test]
    fn error_rates_name_the_arm_with_fewer_errors() {
        let e = experiment(Metric::ErrorRate);
        let o = compare(
            &measured(200, 0, 5.0, &[]),
            &measured(200, 200, 5.0, &[]),
            &e,
        );
        assert_eq!(o.winner.as_deref(), Some("a"), "{o:?}");
        assert_eq!(o.test.as_deref(), Some("chi-square-yates"));
        assert!((o.effect.unwrap() - 100.0).abs() < 1e-9);
        let o = compare(&measured(200, 3, 5.0, &[]), &measured(200, 0, 5.0, &[]), &e);
        assert_eq!(o.test.as_deref(), Some("fisher-exact"), "{o:?}");
        assert_eq!(o.winner, None, "{o:?}");
        // No errors in either arm: the test does not apply, no difference.
        let o = compare(&measured(200, 0, 5.0, &[]), &measured(200, 0, 5.0, &[]), &e);
        assert!(o.conclusive && o.winner.is_none(), "{o:?}");
    }

    #[test]
    fn latency_and_output_means_pick_the_better_direction() {
        let e = experiment(Metric::Latency);
        let o = compare(
            &measured(100, 0, 50.0, &[]),
            &measured(100, 0, 5.0, &[]),
            &e,
        );
        assert_eq!(o.winner.as_deref(), Some("b"), "{o:?}");
        let mut e = experiment(Metric::OutputMean);
        let low: Vec<f64> = (0..100).map(|i| (i % 3) as f64 * 0.1).collect();
        let high: Vec<f64> = (0..100).map(|i| 1.0 + (i % 3) as f64 * 0.1).collect();
        let o = compare(
            &measured(100, 0, 5.0, &low),
            &measured(100, 0, 5.0, &high),
            &e,
        );
        assert_eq!(o.winner.as_deref(), Some("b"), "{o:?}");
        e.higher_is_better = false;
        let o = compare(
            &measured(100, 0, 5.0, &low),
            &measured(100, 0, 5.0, &high),
            &e,
        );
        assert_eq!(o.winner.as_deref(), Some("a"), "{o:?}");
    }

    #[test]
    fn too_few_samples_is_inconclusive() {
        let o = compare(
            &measured(10, 0, 5.0, &[]),
            &measured(200, 0, 5.0, &[]),
            &experiment(Metric::ErrorRate),
        );
        assert!(!o.conclusive && o.winner.is_none(), "{o:?}");
        assert!(o.conclusion.contains("inconclusive"), "{o:?}");
    }
}
