//! A sequential test of the error-rate difference that may be read after
//! every round: the mixture sequential probability ratio test (mSPRT) of
//! Johari, Koomen, Pekelis and Walsh ("Peeking at A/B tests", KDD 2017),
//! with its always-valid p-value.
//!
//! A fixed-sample test read every round and stopped at the first `p < alpha`
//! rejects a true null far more often than `alpha` (twenty looks at 0.05
//! reject a null about a fifth of the time with an unadjusted z-test). The
//! mSPRT's p-value stays valid at any stopping time: under the null,
//! `P(∃ n: p_n ≤ alpha) ≤ alpha`.
//!
//! With cumulative counts (requests `n`, errors `e`) of both variants after
//! round `n`, rates `r = e / n`, and a normal mixing distribution `N(0, τ²)`
//! over the difference under the alternative:
//!
//! ```text
//! θ̂   = r_c - r_s                                   (the observed difference)
//! V   = r_c (1 - r_c) / n_c + r_s (1 - r_s) / n_s     (its variance)
//! Λ_n = sqrt(V / (V + τ²)) · exp(τ² θ̂² / (2 V (V + τ²)))
//! p_n = min(p_{n-1}, 1 / Λ_n),   p_0 = 1
//! ```
//!
//! `Λ_n` is the likelihood ratio of the normal approximation, averaged over
//! the mixture; it is a nonnegative martingale under the null, so Ville's
//! inequality gives the bound. `V = 0` (no errors, or only errors, in both)
//! carries no evidence: `Λ = 1`. `τ` is the size of difference the test is
//! tuned to detect fastest; the default 0.01 (one percentage point) matches
//! the analysis' default `max-error-rate-increase-pp`. The guarantee rests on
//! the normal approximation of the rates, so it holds once each variant has a
//! few errors — the analysis' sample-size gate is the place to require that.
//!
//! The test says whether the rates differ; the controller still applies the
//! effect threshold (`θ̂` in percentage points against
//! `max-error-rate-increase-pp`) before failing a candidate.

use serde::{Deserialize, Serialize};

/// Settings of the error-rate mSPRT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ErrorRateMsprt {
    /// Standard deviation `τ` of the mixing distribution, a rate difference
    /// (fraction), greater than 0.
    pub tau: f64,
    /// The false-positive rate kept over every round, in `(0, 1)`.
    pub alpha: f64,
}

impl Default for ErrorRateMsprt {
    fn default() -> Self {
        Self {
            tau: 0.01,
            alpha: 0.05,
        }
    }
}

/// Cumulative counts of one variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CumulativeCounts {
    /// Requests since the step began.
    pub requests: u64,
    /// Errors among them.
    pub errors: u64,
}

/// One round of the mSPRT, for the record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MsprtRound {
    /// `θ̂ = r_c - r_s`, a fraction.
    pub difference: f64,
    /// `V`, its estimated variance.
    pub variance: f64,
    /// `ln Λ_n`.
    pub log_likelihood_ratio: f64,
    /// The always-valid p-value `p_n` (carry it into the next round).
    pub p_value: f64,
    /// `p_n ≤ alpha`.
    pub significant: bool,
}

/// Why the mSPRT cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SequentialError {
    /// The settings are out of range.
    #[error(
        "error-rate msprt: tau is {tau} and alpha {alpha}, tau must be > 0 and alpha in (0, 1)"
    )]
    InvalidSettings {
        /// `τ` given.
        tau: f64,
        /// `alpha` given.
        alpha: f64,
    },
    /// A variant's counts are not a proportion.
    #[error(
        "error-rate msprt: {requests} requests with {errors} errors, it needs at least one request and no more errors than requests"
    )]
    InvalidCounts {
        /// Requests given.
        requests: u64,
        /// Errors given.
        errors: u64,
    },
    /// The previous round's p-value is not a probability (a lost or
    /// corrupted state would otherwise reset the test silently).
    #[error(
        "error-rate msprt: the previous p-value is {0}, it must be a number in [0, 1] (1 before the first round)"
    )]
    InvalidPreviousP(f64),
}

impl ErrorRateMsprt {
    /// The round's test from the cumulative counts and the previous round's
    /// always-valid p-value (1 before the first round).
    ///
    /// # Errors
    ///
    /// Settings out of range, a previous p-value outside `[0, 1]` (NaN
    /// included), or a variant without requests or with more errors than
    /// requests.
    pub fn round(
        &self,
        previous_p_value: f64,
        stable: CumulativeCounts,
        candidate: CumulativeCounts,
    ) -> Result<MsprtRound, SequentialError> {
        if !(self.tau > 0.0 && self.tau.is_finite() && self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(SequentialError::InvalidSettings {
                tau: self.tau,
                alpha: self.alpha,
            });
        }
        let rate = |c: CumulativeCounts| {
            if c.requests == 0 || c.errors > c.requests {
                Err(SequentialError::InvalidCounts {
                    requests: c.requests,
                    errors: c.errors,
                })
            } else {
                Ok(c.errors as f64 / c.requests as f64)
            }
        };
        if !(0.0..=1.0).contains(&previous_p_value) {
            return Err(SequentialError::InvalidPreviousP(previous_p_value));
        }
        let (r_s, r_c) = (rate(stable)?, rate(candidate)?);
        let difference = r_c - r_s;
        let variance = r_c * (1.0 - r_c) / candidate.requests as f64
            + r_s * (1.0 - r_s) / stable.requests as f64;
        let tau2 = self.tau * self.tau;
        let log_likelihood_ratio = if variance > 0.0 {
            0.5 * (variance / (variance + tau2)).ln()
                + tau2 * difference * difference / (2.0 * variance * (variance + tau2))
        } else {
            0.0
        };
        let p_value = previous_p_value.min((-log_likelihood_ratio).exp());
        Ok(MsprtRound {
            difference,
            variance,
            log_likelihood_ratio,
            p_value,
            significant: p_value <= self.alpha,
        })
    }
}
