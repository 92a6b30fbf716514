//! The release analysis: the pure decision function at the heart of the
//! release controller — a verdict on a candidate (canary) from measurements of
//! it and of the stable (baseline) variant over the same window — and the
//! step-level state machine that turns a sequence of verdicts into
//! continue / promote / roll back / pause.
//!
//! It owns the rules, not the data: no clock, no network, no ledger. The
//! controller gathers [`VariantMeasurements`] (from the gateway's per-variant
//! metrics or the request driver), calls [`analyze`], records the
//! serializable [`StepAnalysis`], and feeds its verdict to a
//! [`RoundTracker`]. The arithmetic of each test lives in [`crate::stats`].
//!
//! # Inputs
//!
//! Per variant: requests, errors (5xx), a bounded sample of latencies (ms)
//! and, optionally, a sample of numeric predictions (one `f64` per response
//! or per output element). Without a stable variant (a first release) the
//! candidate is judged by the SLOs alone.
//!
//! # Checks, in order
//!
//! Quantiles `p50`, `p90`, `p99` are numpy's default (linear) quantile of a
//! sample: with the sorted sample `x` and `h = (n - 1)·q`,
//! `Q(q) = x[⌊h⌋] + (h - ⌊h⌋)·(x[⌊h⌋ + 1] - x[⌊h⌋])`. An error rate is
//! `errors / requests`.
//!
//! 1. **`sample-size`** (the gate): every variant has at least
//!    `min-sample-size` requests and latency samples, and — when both report
//!    predictions — prediction samples. If not, the step is `Inconclusive`
//!    and no other check runs: too few samples never pass, and never fail.
//! 2. **`error-rate-slo`**: fails when the candidate's observed error rate is
//!    above `max-error-rate`. An absolute SLO needs no significance.
//! 3. **`latency-p99-slo`**: fails when the candidate's sample p99 is above
//!    `max-p99-latency-ms`.
//! 4. **`error-rate`** (needs stable): the 2×2 table
//!    `[[stable ok, stable errors], [candidate ok, candidate errors]]`. With
//!    expected counts `E_ij = row_i · col_j / N`, Fisher's exact test when
//!    `min E_ij < 5`, else Pearson's chi-square with Yates' correction.
//!    Effect: `Δ = 100 · (rate_candidate - rate_stable)` percentage points.
//!    Fails when `p < alpha` and `Δ > max-error-rate-increase-pp`.
//! 5. **`latency-median`** (needs stable): Mann-Whitney U on the latency
//!    samples (candidate first, `U1` its statistic). Harmful direction:
//!    `U1 > n_c · n_s / 2` (candidate latencies tend to be larger). Effect:
//!    `Δ = p50_c - p50_s` ms and `100 · Δ / p50_s` %. Fails when `p < alpha`,
//!    the direction is harmful, `Δ > ms` and `Δ% > percent` of
//!    `latency-median-increase`.
//! 6. **`latency-p99`** (needs stable): a tail test (Mood's median test
//!    moved to the 99th percentile). The cutoff `c` is the p99 of the pooled
//!    samples; the 2×2 table `[[stable ≤ c, stable > c], [candidate ≤ c,
//!    candidate > c]]` is tested as in `error-rate` (Fisher or Yates). Under
//!    the null hypothesis the pooled values are exchangeable, so the
//!    exceedances are hypergeometric given the margins and the test is exact
//!    (Fisher) or its approximation. Harmful direction: the candidate's share
//!    above `c` is larger. Effect: `Δ = p99_c - p99_s` ms and
//!    `100 · Δ / p99_s` %. Fails when `p < alpha`, the direction is harmful,
//!    `Δ > ms` and `Δ% > percent` of `latency-p99-increase`.
//! 7. **`predictions`** (needs stable and both prediction samples): PSI of
//!    the candidate against the stable sample over `psi-bins` quantile bins
//!    ([`stats::psi`]) and the two-sample Kolmogorov-Smirnov test (`D`,
//!    `p`). Fails when `p < alpha` and (`PSI > max-psi` or
//!    `D > max-ks-statistic`).
//!
//! A comparison fails only when it is both **significant** and **relevant**:
//! a 1 ms shift on 100 000 samples has a tiny p-value and an effect below any
//! sensible threshold, so it passes. A percent effect is undefined when the
//! stable quantile is 0; it then counts as exceeding any percent threshold.
//! A test that is undefined on the data (no errors in either variant, every
//! latency equal) records no p-value and is not significant. P-values are
//! two-sided; requiring the harmful direction as well makes each comparison a
//! one-sided test at `alpha / 2`. `alpha` is per check, not corrected for the
//! four comparisons: the effect thresholds, not the p-values, keep false
//! failures rare; set `alpha` to `0.05 / 4` for Bonferroni's family-wise bound.
//!
//! # The verdict
//!
//! A check's verdict follows from its [`Evidence`] alone
//! ([`Evidence::verdict`]); the step's from the checks
//! ([`StepVerdict::combine`]): `Inconclusive` when the gate is not passed;
//! else `Fail` when any check fails; else `Inconclusive` when any is
//! inconclusive or none was evaluated (no stable and no SLO: nothing to judge
//! by); else `Pass`. A user can recompute every verdict from the serialized
//! record.
//!
//! # Rounds
//!
//! [`RoundTracker`] documents the state machine over successive verdicts
//! (`failure-limit` as Argo Rollouts' `failureLimit`, early promotion,
//! `inconclusive-limit` with pause or roll back). [`sequential`] holds an
//! always-valid test (mSPRT) for the error-rate difference, which keeps its
//! false-positive rate when the controller peeks at cumulative counts every
//! round.

mod rounds;
pub mod sequential;

pub use rounds::{
    FailureCount, InconclusiveAction, RoundDecision, RoundPolicy, RoundState, RoundTracker,
    StepAction,
};

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stats::{self, TestOutcome};

/// What was measured of one variant over the analysis window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VariantMeasurements {
    /// Requests answered (or failed) in the window.
    pub requests: u64,
    /// Requests among them that failed (5xx, connection errors).
    pub errors: u64,
    /// A bounded sample of request latencies, in milliseconds.
    pub latencies_ms: Vec<f64>,
    /// A sample of numeric predictions, when the responses carry them.
    #[serde(default)]
    pub predictions: Option<Vec<f64>>,
}

/// The most PSI bins a config may ask for (each bin needs samples of its
/// own to mean anything; the bound also keeps a config from allocating
/// without limit).
pub const MAX_PSI_BINS: usize = 1000;

/// The thresholds and test settings of an analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnalysisConfig {
    /// Significance level of each comparison, in `(0, 1)`.
    pub alpha: f64,
    /// Requests, latency samples and (when compared) prediction samples each
    /// variant needs before anything is decided; at least 1.
    pub min_sample_size: u64,
    /// SLO: the candidate's highest acceptable error rate, a fraction in
    /// `[0, 1]`; `None` leaves it unchecked.
    pub max_error_rate: Option<f64>,
    /// SLO: the candidate's highest acceptable p99 latency, in ms.
    pub max_p99_latency_ms: Option<f64>,
    /// How many percentage points the candidate's error rate may exceed the
    /// stable one's.
    pub max_error_rate_increase_pp: f64,
    /// How much worse the candidate's median latency may be.
    pub latency_median_increase: LatencyThreshold,
    /// How much worse the candidate's p99 latency may be.
    pub latency_p99_increase: LatencyThreshold,
    /// The highest acceptable PSI of the candidate's predictions.
    pub max_psi: f64,
    /// Quantile bins of the PSI, at least 2.
    pub psi_bins: usize,
    /// The highest acceptable Kolmogorov-Smirnov distance between the
    /// variants' predictions, in `[0, 1]`.
    pub max_ks_statistic: f64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            min_sample_size: 100,
            max_error_rate: None,
            max_p99_latency_ms: None,
            max_error_rate_increase_pp: 1.0,
            latency_median_increase: LatencyThreshold {
                ms: 5.0,
                percent: 10.0,
            },
            latency_p99_increase: LatencyThreshold {
                ms: 20.0,
                percent: 20.0,
            },
            max_psi: 0.2,
            psi_bins: 10,
            max_ks_statistic: 0.1,
        }
    }
}

/// A latency regression is relevant when it exceeds both bounds: `ms`
/// guards fast services (+2 ms on 5 ms is 40 %), `percent` slow ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LatencyThreshold {
    /// Milliseconds the candidate may be slower by.
    pub ms: f64,
    /// Percent of the stable value the candidate may be slower by.
    pub percent: f64,
}

impl LatencyThreshold {
    /// Whether an increase of `ms` (and `percent`, `None` when undefined)
    /// exceeds both bounds.
    #[must_use]
    pub fn exceeded_by(&self, ms: f64, percent: Option<f64>) -> bool {
        ms > self.ms && percent.is_none_or(|p| p > self.percent)
    }
}

impl AnalysisConfig {
    /// Every problem with the configuration, or none.
    ///
    /// # Errors
    ///
    /// One message per field out of range, all at once.
    pub fn validate(&self) -> Result<(), AnalysisError> {
        let mut problems = Vec::new();
        let mut need = |ok: bool, message: String| {
            if !ok {
                problems.push(message);
            }
        };
        need(
            self.alpha > 0.0 && self.alpha < 1.0,
            format!("alpha is {}, it must be in (0, 1)", self.alpha),
        );
        need(
            self.min_sample_size >= 1,
            "min-sample-size is 0, it must be at least 1".to_owned(),
        );
        if let Some(rate) = self.max_error_rate {
            need(
                (0.0..=1.0).contains(&rate),
                format!("max-error-rate is {rate}, it must be a fraction in [0, 1]"),
            );
        }
        let non_negative = [
            ("max-p99-latency-ms", self.max_p99_latency_ms.unwrap_or(0.0)),
            (
                "max-error-rate-increase-pp",
                self.max_error_rate_increase_pp,
            ),
            (
                "latency-median-increase.ms",
                self.latency_median_increase.ms,
            ),
            (
                "latency-median-increase.percent",
                self.latency_median_increase.percent,
            ),
            ("latency-p99-increase.ms", self.latency_p99_increase.ms),
            (
                "latency-p99-increase.percent",
                self.latency_p99_increase.percent,
            ),
            ("max-psi", self.max_psi),
        ];
        for (name, value) in non_negative {
            need(
                value.is_finite() && value >= 0.0,
                format!("{name} is {value}, it must be a finite number at least 0"),
            );
        }
        need(
            (0.0..=1.0).contains(&self.max_ks_statistic),
            format!(
                "max-ks-statistic is {}, it must be in [0, 1]",
                self.max_ks_statistic
            ),
        );
        need(
            (2..=MAX_PSI_BINS).contains(&self.psi_bins),
            format!(
                "psi-bins is {}, it must be from 2 to {MAX_PSI_BINS}",
                self.psi_bins
            ),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(AnalysisError::InvalidConfig { problems })
        }
    }
}

/// Which variant a number belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// The baseline, serving production.
    Stable,
    /// The canary under analysis.
    Candidate,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stable => "stable",
            Self::Candidate => "candidate",
        })
    }
}

/// Why an analysis could not run: invalid configuration or measurements.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    /// The configuration is out of range.
    #[error("analysis config: {}", problems.join("; "))]
    InvalidConfig {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// A variant counts more errors than requests.
    #[error("{variant}: {errors} errors out of {requests} requests, errors cannot exceed requests")]
    ErrorsExceedRequests {
        /// The variant.
        variant: Variant,
        /// Its error count.
        errors: u64,
        /// Its request count.
        requests: u64,
    },
    /// A sample holds NaN, an infinity or (for latencies) a negative value.
    #[error("{variant}: {sample} sample holds {value} at index {index}, {expected}")]
    InvalidSample {
        /// The variant.
        variant: Variant,
        /// `latency` or `prediction`.
        sample: &'static str,
        /// Where.
        index: usize,
        /// The value.
        value: f64,
        /// What a value must be.
        expected: &'static str,
    },
}

/// The verdict of one analysis step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepVerdict {
    /// Enough evidence, and nothing wrong with the candidate.
    Pass,
    /// The candidate breaches an SLO or is relevantly and significantly worse.
    Fail,
    /// Not enough evidence either way.
    Inconclusive,
}

impl StepVerdict {
    /// The step's verdict from its checks (the rule in the module docs).
    #[must_use]
    pub fn combine(checks: &[Check]) -> Self {
        let gate_passed = checks
            .iter()
            .any(|c| c.name == CheckName::SampleSize && c.verdict == CheckVerdict::Pass);
        if !gate_passed {
            return Self::Inconclusive;
        }
        let judged = checks.iter().filter(|c| c.name != CheckName::SampleSize);
        let verdicts: Vec<CheckVerdict> = judged.map(|c| c.verdict).collect();
        if verdicts.contains(&CheckVerdict::Fail) {
            Self::Fail
        } else if verdicts.contains(&CheckVerdict::Inconclusive)
            || !verdicts.contains(&CheckVerdict::Pass)
        {
            Self::Inconclusive
        } else {
            Self::Pass
        }
    }
}

impl fmt::Display for StepVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Inconclusive => "inconclusive",
        })
    }
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckVerdict {
    /// The check holds.
    Pass,
    /// The check is violated.
    Fail,
    /// The check cannot be decided yet.
    Inconclusive,
    /// The check does not apply (no stable variant, no SLO configured, no
    /// predictions to compare).
    Skipped,
}

/// The checks an analysis runs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckName {
    /// Enough samples in every variant (the gate).
    SampleSize,
    /// The candidate's error rate against the SLO.
    ErrorRateSlo,
    /// The candidate's p99 latency against the SLO.
    LatencyP99Slo,
    /// Error rates compared.
    ErrorRate,
    /// Latency location (median) compared.
    LatencyMedian,
    /// Latency tail (p99) compared.
    LatencyP99,
    /// Prediction distributions compared.
    Predictions,
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SampleSize => "sample-size",
            Self::ErrorRateSlo => "error-rate-slo",
            Self::LatencyP99Slo => "latency-p99-slo",
            Self::ErrorRate => "error-rate",
            Self::LatencyMedian => "latency-median",
            Self::LatencyP99 => "latency-p99",
            Self::Predictions => "predictions",
        })
    }
}

/// One check: its numbers, its verdict and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Check {
    /// Which check.
    pub name: CheckName,
    /// Its verdict, [`Evidence::verdict`] of `evidence`.
    pub verdict: CheckVerdict,
    /// A sentence for humans.
    pub reason: String,
    /// The numbers the verdict follows from.
    pub evidence: Evidence,
}

/// The numbers behind a check, enough to recompute its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Evidence {
    /// Sample sizes against the minimum.
    SampleSize(SampleSizeEvidence),
    /// An observed value against an absolute SLO.
    Slo(SloEvidence),
    /// Two proportions compared (error rates).
    Proportions(ProportionEvidence),
    /// Latency medians compared with Mann-Whitney U.
    Location(LocationEvidence),
    /// Latency tails compared with the pooled-p99 exceedance test.
    Tail(TailEvidence),
    /// Prediction distributions compared with PSI and Kolmogorov-Smirnov.
    Distribution(DistributionEvidence),
    /// The check did not apply.
    NotApplicable,
}

/// How many samples each variant has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SampleSizeEvidence {
    /// The minimum each count must reach.
    pub min_sample_size: u64,
    /// The stable variant's counts, when there is one.
    pub stable: Option<SampleCounts>,
    /// The candidate's counts.
    pub candidate: SampleCounts,
}

/// One variant's sample sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SampleCounts {
    /// Requests.
    pub requests: u64,
    /// Latency samples.
    pub latency_samples: u64,
    /// Prediction samples, when predictions are compared.
    pub prediction_samples: Option<u64>,
}

impl SampleCounts {
    fn meets(&self, min: u64) -> bool {
        self.requests >= min
            && self.latency_samples >= min
            && self.prediction_samples.is_none_or(|n| n >= min)
    }
}

/// An observed value against an SLO: fails when `observed > max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SloEvidence {
    /// The candidate's value (error rate as a fraction, or p99 in ms).
    pub observed: f64,
    /// The SLO's bound.
    pub max: f64,
}

/// Which test a 2×2 table was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableTest {
    /// Pearson's chi-square with Yates' correction (every expected count ≥ 5).
    ChiSquareYates,
    /// Fisher's exact test (some expected count < 5).
    FisherExact,
}

/// A 2×2 table, the test it was given and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TableOutcome {
    /// `[[stable, stable], [candidate, candidate]]`, columns as each check
    /// documents.
    pub table: [[u64; 2]; 2],
    /// The smallest expected count `row_i · col_j / N` (0 with an empty
    /// margin).
    pub min_expected: f64,
    /// The test chosen by `min_expected`.
    pub test: TableTest,
    /// Its statistic (chi-square `X²`, Fisher's odds ratio); `None` when
    /// undefined or infinite.
    pub statistic: Option<f64>,
    /// Its two-sided p-value; `None` when the test is undefined (an empty
    /// margin).
    pub p_value: Option<f64>,
}

/// Error rates compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProportionEvidence {
    /// The table (columns: ok, errors) and its test.
    pub outcome: TableOutcome,
    /// Significance level.
    pub alpha: f64,
    /// Stable error rate, a fraction.
    pub stable_rate: f64,
    /// Candidate error rate, a fraction.
    pub candidate_rate: f64,
    /// `100 · (candidate_rate - stable_rate)`, percentage points.
    pub increase_pp: f64,
    /// The threshold on `increase_pp`.
    pub max_increase_pp: f64,
}

/// Two quantiles compared: the effect of a latency check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuantileShift {
    /// The stable variant's quantile, ms.
    pub stable_ms: f64,
    /// The candidate's quantile, ms.
    pub candidate_ms: f64,
    /// `candidate_ms - stable_ms`.
    pub increase_ms: f64,
    /// `100 · increase_ms / stable_ms`; `None` when `stable_ms` is 0.
    pub increase_percent: Option<f64>,
    /// The bounds the increase must exceed to be relevant.
    pub threshold: LatencyThreshold,
}

impl QuantileShift {
    fn new(stable_ms: f64, candidate_ms: f64, threshold: LatencyThreshold) -> Self {
        let increase_ms = candidate_ms - stable_ms;
        Self {
            stable_ms,
            candidate_ms,
            increase_ms,
            increase_percent: (stable_ms != 0.0).then(|| 100.0 * increase_ms / stable_ms),
            threshold,
        }
    }

    /// Whether the shift is relevant (exceeds both bounds).
    #[must_use]
    pub fn relevant(&self) -> bool {
        self.threshold
            .exceeded_by(self.increase_ms, self.increase_percent)
    }
}

/// Latency medians compared with Mann-Whitney U.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LocationEvidence {
    /// Stable latency samples.
    pub stable_samples: u64,
    /// Candidate latency samples.
    pub candidate_samples: u64,
    /// `U1` of the candidate; `None` when every latency is equal.
    pub u_statistic: Option<f64>,
    /// Two-sided p-value; `None` when the test is undefined.
    pub p_value: Option<f64>,
    /// Significance level.
    pub alpha: f64,
    /// The medians.
    pub median: QuantileShift,
}

/// Latency tails compared: exceedances of the pooled p99.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TailEvidence {
    /// The pooled samples' p99, ms.
    pub cutoff_ms: f64,
    /// The table (columns: at most the cutoff, above it) and its test.
    pub outcome: TableOutcome,
    /// Significance level.
    pub alpha: f64,
    /// The p99s.
    pub p99: QuantileShift,
}

/// Prediction distributions compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DistributionEvidence {
    /// Stable prediction samples.
    pub stable_samples: u64,
    /// Candidate prediction samples.
    pub candidate_samples: u64,
    /// PSI of the candidate against the stable sample.
    pub psi: f64,
    /// Its quantile bins.
    pub psi_bins: usize,
    /// The PSI threshold.
    pub max_psi: f64,
    /// Kolmogorov-Smirnov `D`.
    pub ks_statistic: f64,
    /// Its two-sided p-value.
    pub ks_p_value: f64,
    /// The `D` threshold.
    pub max_ks_statistic: f64,
    /// Significance level.
    pub alpha: f64,
}

fn significant(p_value: Option<f64>, alpha: f64) -> bool {
    p_value.is_some_and(|p| p < alpha)
}

fn pass_or_fail(fail: bool) -> CheckVerdict {
    if fail {
        CheckVerdict::Fail
    } else {
        CheckVerdict::Pass
    }
}

impl Evidence {
    /// The verdict these numbers give, by the rules of the module docs.
    #[must_use]
    pub fn verdict(&self) -> CheckVerdict {
        match self {
            Self::SampleSize(e) => {
                let all = std::iter::once(&e.candidate).chain(&e.stable);
                if all.clone().all(|c| c.meets(e.min_sample_size)) {
                    CheckVerdict::Pass
                } else {
                    CheckVerdict::Inconclusive
                }
            }
            Self::Slo(e) => pass_or_fail(e.observed > e.max),
            Self::Proportions(e) => pass_or_fail(
                significant(e.outcome.p_value, e.alpha) && e.increase_pp > e.max_increase_pp,
            ),
            Self::Location(e) => pass_or_fail(
                significant(e.p_value, e.alpha) && e.candidate_larger() && e.median.relevant(),
            ),
            Self::Tail(e) => pass_or_fail(
                significant(e.outcome.p_value, e.alpha)
                    && e.candidate_heavier()
                    && e.p99.relevant(),
            ),
            Self::Distribution(e) => pass_or_fail(
                e.ks_p_value < e.alpha
                    && (e.psi > e.max_psi || e.ks_statistic > e.max_ks_statistic),
            ),
            Self::NotApplicable => CheckVerdict::Skipped,
        }
    }
}

impl LocationEvidence {
    /// Whether the candidate's latencies tend to be larger:
    /// `U1 > n_c · n_s / 2`.
    #[must_use]
    pub fn candidate_larger(&self) -> bool {
        let half = self.candidate_samples as f64 * self.stable_samples as f64 / 2.0;
        self.u_statistic.is_some_and(|u| u > half)
    }
}

impl TailEvidence {
    /// Whether the candidate's share of samples above the cutoff is larger
    /// than the stable one's.
    #[must_use]
    pub fn candidate_heavier(&self) -> bool {
        let [[s_below, s_above], [c_below, c_above]] = self.outcome.table;
        // c_above / (c_below + c_above) > s_above / (s_below + s_above), cross-multiplied.
        u128::from(c_above) * (u128::from(s_below) + u128::from(s_above))
            > u128::from(s_above) * (u128::from(c_below) + u128::from(c_above))
    }
}

/// The numbers of one variant, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VariantSummary {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// `errors / requests`; `None` without requests.
    pub error_rate: Option<f64>,
    /// Latency samples.
    pub latency_samples: u64,
    /// Latency quantiles; `None` without samples.
    pub latency_ms: Option<Quantiles>,
    /// Prediction samples; `None` when the variant reports none.
    pub prediction_samples: Option<u64>,
}

/// Quantiles of a sample (numpy's linear definition).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantiles {
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
}

/// The record of one analysis step: the verdict, why, and every number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StepAnalysis {
    /// The step's verdict, [`StepVerdict::combine`] of `checks`.
    pub verdict: StepVerdict,
    /// A sentence for humans: what decided the verdict.
    pub reason: String,
    /// The stable variant, when there is one.
    pub stable: Option<VariantSummary>,
    /// The candidate.
    pub candidate: VariantSummary,
    /// Every check run, in order.
    pub checks: Vec<Check>,
}

/// Judges a candidate against the stable variant (or, without one, against
/// the SLOs alone) by the rules of the module docs.
///
/// # Errors
///
/// An invalid configuration, more errors than requests, or a sample value
/// that is not finite (or a negative latency).
pub fn analyze(
    stable: Option<&VariantMeasurements>,
    candidate: &VariantMeasurements,
    config: &AnalysisConfig,
) -> Result<StepAnalysis, AnalysisError> {
    config.validate()?;
    let candidate = Prepared::new(Variant::Candidate, candidate)?;
    let stable = stable
        .map(|s| Prepared::new(Variant::Stable, s))
        .transpose()?;
    let compare_predictions = stable
        .as_ref()
        .is_some_and(|s| s.predictions.is_some() && candidate.predictions.is_some());

    let mut checks = vec![sample_size_check(
        stable.as_ref(),
        &candidate,
        compare_predictions,
        config,
    )];
    if checks[0].verdict == CheckVerdict::Pass {
        checks.push(error_rate_slo(&candidate, config));
        checks.push(latency_p99_slo(&candidate, config));
        match &stable {
            Some(stable) => {
                checks.push(error_rate_comparison(stable, &candidate, config));
                checks.push(latency_median_comparison(stable, &candidate, config));
                checks.push(latency_p99_comparison(stable, &candidate, config));
                checks.push(predictions_comparison(stable, &candidate, config));
            }
            None => {
                let why = "no stable variant: the candidate is judged by the SLOs alone";
                for name in [
                    CheckName::ErrorRate,
                    CheckName::LatencyMedian,
                    CheckName::LatencyP99,
                    CheckName::Predictions,
                ] {
                    checks.push(skipped(name, why));
                }
            }
        }
    }

    let verdict = StepVerdict::combine(&checks);
    let reason = step_reason(verdict, &checks);
    Ok(StepAnalysis {
        verdict,
        reason,
        stable: stable.as_ref().map(Prepared::summary),
        candidate: candidate.summary(),
        checks,
    })
}

/// A variant's measurements, checked, with sorted samples.
struct Prepared {
    requests: u64,
    errors: u64,
    latencies: Vec<f64>,
    predictions: Option<Vec<f64>>,
}

impl Prepared {
    fn new(variant: Variant, m: &VariantMeasurements) -> Result<Self, AnalysisError> {
        if m.errors > m.requests {
            return Err(AnalysisError::ErrorsExceedRequests {
                variant,
                errors: m.errors,
                requests: m.requests,
            });
        }
        let invalid = |sample, index, value, expected| AnalysisError::InvalidSample {
            variant,
            sample,
            index,
            value,
            expected,
        };
        if let Some((i, &v)) = m
            .latencies_ms
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(invalid(
                "latency",
                i,
                v,
                "a latency must be finite and at least 0",
            ));
        }
        if let Some(predictions) = &m.predictions
            && let Some((i, &v)) = predictions.iter().enumerate().find(|(_, v)| !v.is_finite())
        {
            return Err(invalid("prediction", i, v, "a prediction must be finite"));
        }
        Ok(Self {
            requests: m.requests,
            errors: m.errors,
            latencies: sorted(&m.latencies_ms),
            predictions: m.predictions.as_deref().map(sorted),
        })
    }

    fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    fn counts(&self, compare_predictions: bool) -> SampleCounts {
        SampleCounts {
            requests: self.requests,
            latency_samples: self.latencies.len() as u64,
            prediction_samples: self
                .predictions
                .as_ref()
                .filter(|_| compare_predictions)
                .map(|p| p.len() as u64),
        }
    }

    fn summary(&self) -> VariantSummary {
        VariantSummary {
            requests: self.requests,
            errors: self.errors,
            error_rate: self.error_rate(),
            latency_samples: self.latencies.len() as u64,
            latency_ms: (!self.latencies.is_empty()).then(|| Quantiles {
                p50: quantile(&self.latencies, 0.50),
                p90: quantile(&self.latencies, 0.90),
                p99: quantile(&self.latencies, 0.99),
            }),
            prediction_samples: self.predictions.as_ref().map(|p| p.len() as u64),
        }
    }
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// numpy's default (linear) quantile of a sorted, non-empty sample.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let frac = h - lo as f64;
    match sorted.get(lo + 1) {
        Some(&next) if frac > 0.0 => sorted[lo] + frac * (next - sorted[lo]),
        _ => sorted[lo],
    }
}

fn check(name: CheckName, evidence: Evidence, reason: String) -> Check {
    Check {
        name,
        verdict: evidence.verdict(),
        reason,
        evidence,
    }
}

fn skipped(name: CheckName, why: &str) -> Check {
    check(name, Evidence::NotApplicable, why.to_owned())
}

fn sample_size_check(
    stable: Option<&Prepared>,
    candidate: &Prepared,
    compare_predictions: bool,
    config: &AnalysisConfig,
) -> Check {
    let min = config.min_sample_size;
    let evidence = SampleSizeEvidence {
        min_sample_size: min,
        stable: stable.map(|s| s.counts(compare_predictions)),
        candidate: candidate.counts(compare_predictions),
    };
    let mut short = Vec::new();
    for (variant, counts) in [
        (Variant::Candidate, Some(&evidence.candidate)),
        (Variant::Stable, evidence.stable.as_ref()),
    ] {
        let Some(counts) = counts else { continue };
        let named = [
            ("requests", Some(counts.requests)),
            ("latency samples", Some(counts.latency_samples)),
            ("prediction samples", counts.prediction_samples),
        ];
        for (what, n) in named {
            if let Some(n) = n.filter(|&n| n < min) {
                short.push(format!("{variant} has {n} {what}"));
            }
        }
    }
    let reason = if short.is_empty() {
        format!("every variant has at least {min} samples")
    } else {
        format!(
            "too few samples: {}, fewer than the minimum {min}",
            short.join(", ")
        )
    };
    check(
        CheckName::SampleSize,
        Evidence::SampleSize(evidence),
        reason,
    )
}

fn error_rate_slo(candidate: &Prepared, config: &AnalysisConfig) -> Check {
    let Some(max) = config.max_error_rate else {
        return skipped(CheckName::ErrorRateSlo, "no error-rate SLO configured");
    };
    // The gate guarantees requests >= 1.
    let observed = candidate.error_rate().unwrap_or(0.0);
    let evidence = SloEvidence { observed, max };
    let reason = format!(
        "candidate error rate {} ({} of {}) {} the SLO {}",
        percent(observed),
        candidate.errors,
        candidate.requests,
        if observed > max {
            "breaches"
        } else {
            "is within"
        },
        percent(max)
    );
    check(CheckName::ErrorRateSlo, Evidence::Slo(evidence), reason)
}

fn latency_p99_slo(candidate: &Prepared, config: &AnalysisConfig) -> Check {
    let Some(max) = config.max_p99_latency_ms else {
        return skipped(CheckName::LatencyP99Slo, "no p99 latency SLO configured");
    };
    let observed = quantile(&candidate.latencies, 0.99);
    let reason = format!(
        "candidate p99 latency {observed:.2} ms {} the SLO {max} ms",
        if observed > max {
            "breaches"
        } else {
            "is within"
        }
    );
    check(
        CheckName::LatencyP99Slo,
        Evidence::Slo(SloEvidence { observed, max }),
        reason,
    )
}

/// Tests a 2×2 table: Fisher's exact when an expected count is below 5,
/// chi-square with Yates' correction otherwise.
fn table_outcome(table: [[u64; 2]; 2]) -> TableOutcome {
    // Saturating: counts come from deserialized records and must not
    // overflow (a saturated margin only makes the expected counts larger,
    // which chooses the chi-square test, as such counts would).
    let rows = [
        table[0][0].saturating_add(table[0][1]),
        table[1][0].saturating_add(table[1][1]),
    ];
    let columns = [
        table[0][0].saturating_add(table[1][0]),
        table[0][1].saturating_add(table[1][1]),
    ];
    let total = rows[0].saturating_add(rows[1]);
    let min_expected = if total == 0 {
        0.0
    } else {
        rows[0].min(rows[1]) as f64 * columns[0].min(columns[1]) as f64 / total as f64
    };
    let (test, outcome) = if min_expected < 5.0 {
        (TableTest::FisherExact, stats::fisher_exact_2x2(table))
    } else {
        (
            TableTest::ChiSquareYates,
            stats::chi_square_2x2(table, true),
        )
    };
    let outcome: Option<TestOutcome> = outcome.ok();
    TableOutcome {
        table,
        min_expected,
        test,
        statistic: outcome.map(|o| o.statistic).filter(|s| s.is_finite()),
        p_value: outcome.map(|o| o.p_value),
    }
}

fn error_rate_comparison(
    stable: &Prepared,
    candidate: &Prepared,
    config: &AnalysisConfig,
) -> Check {
    let table = [
        [stable.requests - stable.errors, stable.errors],
        [candidate.requests - candidate.errors, candidate.errors],
    ];
    let stable_rate = stable.error_rate().unwrap_or(0.0);
    let candidate_rate = candidate.error_rate().unwrap_or(0.0);
    let evidence = ProportionEvidence {
        outcome: table_outcome(table),
        alpha: config.alpha,
        stable_rate,
        candidate_rate,
        increase_pp: 100.0 * (candidate_rate - stable_rate),
        max_increase_pp: config.max_error_rate_increase_pp,
    };
    let reason = format!(
        "error rate {} vs stable {} ({:+.3} pp, threshold {} pp), {}",
        percent(candidate_rate),
        percent(stable_rate),
        evidence.increase_pp,
        evidence.max_increase_pp,
        table_phrase(&evidence.outcome, config.alpha),
    );
    check(
        CheckName::ErrorRate,
        Evidence::Proportions(evidence),
        reason,
    )
}

fn latency_median_comparison(
    stable: &Prepared,
    candidate: &Prepared,
    config: &AnalysisConfig,
) -> Check {
    let outcome = stats::mann_whitney_u(&candidate.latencies, &stable.latencies).ok();
    let evidence = LocationEvidence {
        stable_samples: stable.latencies.len() as u64,
        candidate_samples: candidate.latencies.len() as u64,
        u_statistic: outcome.map(|o| o.statistic),
        p_value: outcome.map(|o| o.p_value),
        alpha: config.alpha,
        median: QuantileShift::new(
            quantile(&stable.latencies, 0.5),
            quantile(&candidate.latencies, 0.5),
            config.latency_median_increase,
        ),
    };
    let reason = format!(
        "median latency {}, mann-whitney u {}",
        shift_phrase(&evidence.median),
        p_phrase(evidence.p_value, config.alpha),
    );
    check(
        CheckName::LatencyMedian,
        Evidence::Location(evidence),
        reason,
    )
}

fn latency_p99_comparison(
    stable: &Prepared,
    candidate: &Prepared,
    config: &AnalysisConfig,
) -> Check {
    let pooled = sorted(&[stable.latencies.as_slice(), &candidate.latencies].concat());
    let cutoff_ms = quantile(&pooled, 0.99);
    let above = |s: &[f64]| s.len() - s.partition_point(|&v| v <= cutoff_ms);
    let row = |s: &[f64]| {
        let a = above(s) as u64;
        [s.len() as u64 - a, a]
    };
    let evidence = TailEvidence {
        cutoff_ms,
        outcome: table_outcome([row(&stable.latencies), row(&candidate.latencies)]),
        alpha: config.alpha,
        p99: QuantileShift::new(
            quantile(&stable.latencies, 0.99),
            quantile(&candidate.latencies, 0.99),
            config.latency_p99_increase,
        ),
    };
    let [[_, s_above], [_, c_above]] = evidence.outcome.table;
    let reason = format!(
        "p99 latency {}; above the pooled p99 {cutoff_ms:.2} ms: candidate {c_above}, stable {s_above}, {}",
        shift_phrase(&evidence.p99),
        table_phrase(&evidence.outcome, config.alpha),
    );
    check(CheckName::LatencyP99, Evidence::Tail(evidence), reason)
}

fn predictions_comparison(
    stable: &Prepared,
    candidate: &Prepared,
    config: &AnalysisConfig,
) -> Check {
    let (Some(s), Some(c)) = (&stable.predictions, &candidate.predictions) else {
        return skipped(
            CheckName::Predictions,
            "predictions are compared only when both variants report them",
        );
    };
    // The gate guarantees both samples are non-empty and finite, and
    // `psi-bins >= 2`; these tests fail on nothing else.
    let (Ok(psi), Ok(ks)) = (
        stats::psi(s, c, config.psi_bins),
        stats::ks_two_sample(c, s),
    ) else {
        return skipped(CheckName::Predictions, "the prediction samples are empty");
    };
    let evidence = DistributionEvidence {
        stable_samples: s.len() as u64,
        candidate_samples: c.len() as u64,
        psi,
        psi_bins: config.psi_bins,
        max_psi: config.max_psi,
        ks_statistic: ks.statistic,
        ks_p_value: ks.p_value,
        max_ks_statistic: config.max_ks_statistic,
        alpha: config.alpha,
    };
    let reason = format!(
        "psi {psi:.4} (threshold {}), kolmogorov-smirnov d {:.4} (threshold {}) {}",
        config.max_psi,
        ks.statistic,
        config.max_ks_statistic,
        p_phrase(Some(ks.p_value), config.alpha),
    );
    check(
        CheckName::Predictions,
        Evidence::Distribution(evidence),
        reason,
    )
}

fn percent(fraction: f64) -> String {
    format!("{:.3}%", 100.0 * fraction)
}

fn p_phrase(p_value: Option<f64>, alpha: f64) -> String {
    match p_value {
        Some(p) if p < alpha => format!("p = {p:.3e} < {alpha} (significant)"),
        Some(p) => format!("p = {p:.3e} ≥ {alpha} (not significant)"),
        None => "undefined on these data (not significant)".to_owned(),
    }
}

fn table_phrase(outcome: &TableOutcome, alpha: f64) -> String {
    let test = match outcome.test {
        TableTest::ChiSquareYates => "chi-square (yates)",
        TableTest::FisherExact => "fisher's exact",
    };
    format!("{test} {}", p_phrase(outcome.p_value, alpha))
}

fn shift_phrase(shift: &QuantileShift) -> String {
    let pct = shift
        .increase_percent
        .map_or_else(|| "undefined %".to_owned(), |p| format!("{p:+.1}%"));
    format!(
        "{:.2} ms vs stable {:.2} ms ({:+.2} ms, {pct}; relevant above {} ms and {}%)",
        shift.candidate_ms,
        shift.stable_ms,
        shift.increase_ms,
        shift.threshold.ms,
        shift.threshold.percent
    )
}

fn step_reason(verdict: StepVerdict, checks: &[Check]) -> String {
    let with = |v: CheckVerdict| -> Vec<String> {
        checks
            .iter()
            .filter(|c| c.verdict == v)
            .map(|c| format!("{}: {}", c.name, c.reason))
            .collect()
    };
    match verdict {
        StepVerdict::Fail => format!("failed {}", with(CheckVerdict::Fail).join("; ")),
        StepVerdict::Inconclusive => {
            let open = with(CheckVerdict::Inconclusive);
            if open.is_empty() {
                "inconclusive: no check applies (no stable variant and no SLO configured)"
                    .to_owned()
            } else {
                format!("inconclusive {}", open.join("; "))
            }
        }
        StepVerdict::Pass => {
            let passed = checks
                .iter()
                .filter(|c| c.verdict == CheckVerdict::Pass && c.name != CheckName::SampleSize)
                .map(|c| c.name.to_string())
                .collect::<Vec<_>>();
            format!("passed {}", passed.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_are_numpys_linear_ones() {
        // numpy.quantile([1, 2, 3, 4, 10], [0, 0.5, 0.9, 0.99, 1]) = [1, 3, 7.6, 9.76, 10]
        let sample = [1.0, 2.0, 3.0, 4.0, 10.0];
        for (q, want) in [
            (0.0, 1.0),
            (0.5, 3.0),
            (0.9, 7.6),
            (0.99, 9.76),
            (1.0, 10.0),
        ] {
            let got = quantile(&sample, q);
            assert!((got - want).abs() < 1e-12, "q {q}: {got} vs {want}");
        }
        assert_eq!(quantile(&[4.0], 0.99), 4.0);
    }
}
