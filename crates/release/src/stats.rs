//! Statistics for release analysis and drift: the two-sample tests and the
//! drift scores a release verdict is decided with, and the distances the
//! monitoring stage's drift checks use (Wasserstein-1, the chi-square test
//! of a 2×k table, Jensen-Shannon).
//!
//! This module owns the arithmetic only — each function takes plain samples or a
//! 2×2 table of counts and returns a [`TestOutcome`] (statistic and two-sided
//! p-value) or, for [`psi`], a score. It does not decide what a p-value means for
//! a release, gather samples, or correct for multiple comparisons; callers do.
//!
//! Every function agrees with scipy's default method (scipy 1.17) to 1e-6
//! relative; `tests/stats.rs` checks them against `shared/reference/stats_scipy.json`
//! and against the cases `tests/data/gen_scipy_cases.py` generates. The
//! documented exceptions are where scipy's own arithmetic fails: Welch's
//! t-test on magnitudes whose squared variances underflow or overflow
//! (scale-free here), Fisher's test on near-mirror tables with margins of
//! ~10⁸ and more (scipy's pmf noise decides the near tie), and the
//! two-sample Kolmogorov-Smirnov test for samples above ~2·10⁶ values. Distribution
//! functions (regularized incomplete beta, erfc, log-factorials) come from
//! `statrs`; the exact null distributions (Mann-Whitney, two-sample
//! Kolmogorov-Smirnov, Kolmogorov's `D_n`, hypergeometric tails) are written
//! here, because statrs' versions differ from scipy's.
//!
//! Inputs are validated instead of producing NaN: an empty sample, a NaN or an
//! infinity, a test undefined on constant data, or a table with an empty row or
//! column is a [`StatsError`].

mod contingency;
mod distance;
mod kolmogorov;
mod location;
mod psi;

pub use contingency::{chi_square_2x2, fisher_exact_2x2};
pub use distance::{chi_square_homogeneity, jensen_shannon, wasserstein, wasserstein_sorted};
pub use kolmogorov::{ks_two_sample, ks_two_sample_sorted};
pub use location::{mann_whitney_u, welch_t_test};
pub use psi::{psi, psi_sorted_reference};

use serde::{Deserialize, Serialize};

/// The result of a hypothesis test: its statistic and its two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TestOutcome {
    /// The test statistic (its meaning is documented on each test).
    pub statistic: f64,
    /// The two-sided p-value, in `[0, 1]`.
    pub p_value: f64,
}

/// Why a statistic could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// A sample has no values.
    #[error("{test}: sample {sample} is empty")]
    EmptySample {
        /// The test that was asked for.
        test: &'static str,
        /// Which sample (`a`, `b`, `reference`, `current`).
        sample: &'static str,
    },
    /// A sample has fewer values than the test needs.
    #[error("{test}: sample {sample} has {len} value(s), the test needs at least {min}")]
    TooFewValues {
        /// The test that was asked for.
        test: &'static str,
        /// Which sample.
        sample: &'static str,
        /// How many values it has.
        len: usize,
        /// How many the test needs.
        min: usize,
    },
    /// A sample holds NaN or an infinity.
    #[error(
        "{test}: sample {sample} holds a non-finite value ({}) at index {index}",
        non_finite_name(*.value)
    )]
    NonFinite {
        /// The test that was asked for.
        test: &'static str,
        /// Which sample.
        sample: &'static str,
        /// The position of the first non-finite value.
        index: usize,
        /// The value itself.
        value: f64,
    },
    /// The data are constant in a way that leaves the test undefined.
    #[error("{test}: {what}, the test is undefined")]
    ConstantInput {
        /// The test that was asked for.
        test: &'static str,
        /// What is constant.
        what: &'static str,
    },
    /// A 2×2 table has a row or column of zeros.
    #[error("{test}: {margin} of the table {table:?} is all zeros, the test is undefined")]
    EmptyMargin {
        /// The test that was asked for.
        test: &'static str,
        /// `row 1`, `row 2`, `column 1` or `column 2`.
        margin: &'static str,
        /// The table as given.
        table: [[u64; 2]; 2],
    },
    /// A probability could not be evaluated (a distribution function refused
    /// its arguments); not expected for valid input, reported instead of a
    /// panic or a NaN.
    #[error("{test}: {what}")]
    Numerical {
        /// The test that was asked for.
        test: &'static str,
        /// What failed.
        what: &'static str,
    },
    /// PSI was asked for with fewer than two bins.
    #[error("psi: {bins} bin(s) asked for, psi needs at least 2")]
    TooFewBins {
        /// The number of bins asked for.
        bins: usize,
    },
}

/// `nan`, `+inf` or `-inf`, lowercase like every message.
fn non_finite_name(value: f64) -> &'static str {
    if value.is_nan() {
        "nan"
    } else if value > 0.0 {
        "+inf"
    } else {
        "-inf"
    }
}

/// Checks a sample is non-empty, long enough and finite.
fn check_sample(
    test: &'static str,
    sample: &'static str,
    values: &[f64],
    min: usize,
) -> Result<(), StatsError> {
    if values.is_empty() {
        return Err(StatsError::EmptySample { test, sample });
    }
    if values.len() < min {
        return Err(StatsError::TooFewValues {
            test,
            sample,
            len: values.len(),
            min,
        });
    }
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(StatsError::NonFinite {
            test,
            sample,
            index,
            value,
        });
    }
    Ok(())
}

/// A sorted copy of a sample known to be finite.
fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// `x · 2^e`, in steps that neither overflow nor underflow early.
fn ldexp(mut x: f64, mut e: i64) -> f64 {
    while e != 0 && x != 0.0 && x.is_finite() {
        let step = e.clamp(-1000, 1000);
        x *= 2f64.powi(step as i32);
        e -= step;
    }
    x
}
