//! Tests on a 2×2 table of counts: Pearson's chi-square (with or without
//! Yates' correction) and Fisher's exact test.
//!
//! A table is `[[a, b], [c, d]]`: rows are the groups (control, treatment),
//! columns the outcomes (success, failure).

use statrs::function::{erf::erfc, factorial::ln_binomial};

use super::{StatsError, TestOutcome};

/// Two tables are equally likely when their probabilities are within this
/// relative tolerance (R's `fisher.test` uses `1 + 1e-7`; scipy 1.17 uses
/// `1e-14`, which only holds with a pmf exact to 1e-14 — log-factorials of
/// 10⁴-sized counts are good to ~1e-11, so 1e-14 would split exact ties, for
/// example the mirror tables of a symmetric design, by rounding noise).
const RELATIVE_TIE: f64 = 1e-7;

/// Row and column sums, or the empty margin that leaves a test undefined.
fn margins(test: &'static str, table: [[u64; 2]; 2]) -> Result<([u128; 2], [u128; 2]), StatsError> {
    let cell = |r: usize, c: usize| u128::from(table[r][c]);
    let rows = [cell(0, 0) + cell(0, 1), cell(1, 0) + cell(1, 1)];
    let columns = [cell(0, 0) + cell(1, 0), cell(0, 1) + cell(1, 1)];
    let empty = [
        (rows[0], "row 1"),
        (rows[1], "row 2"),
        (columns[0], "column 1"),
        (columns[1], "column 2"),
    ];
    if let Some((_, margin)) = empty.iter().find(|(sum, _)| *sum == 0) {
        return Err(StatsError::EmptyMargin {
            test,
            margin,
            table,
        });
    }
    Ok((rows, columns))
}

/// Pearson's chi-square test of independence on a 2×2 table, as scipy's
/// `chi2_contingency(table, correction=yates)`.
///
/// With `N` the total, expected counts `E_ij = row_i · col_j / N` and
/// observed `O_ij`:
///
/// ```text
/// Yates (yates = true):  O'_ij = O_ij + sign(E_ij - O_ij) · min(0.5, |E_ij - O_ij|)
/// otherwise:             O'_ij = O_ij
/// X² = Σ (O'_ij - E_ij)² / E_ij,   p = P(χ²₁ ≥ X²) = erfc(sqrt(X² / 2))
/// ```
///
/// The statistic is `X²`.
///
/// # Errors
///
/// A row or column of zeros (an expected count would be 0).
pub fn chi_square_2x2(table: [[u64; 2]; 2], yates: bool) -> Result<TestOutcome, StatsError> {
    let test = if yates {
        "chi-square (yates)"
    } else {
        "chi-square"
    };
    let (rows, columns) = margins(test, table)?;
    let total = (rows[0] + rows[1]) as f64;
    let mut statistic = 0.0;
    for (r, row) in table.iter().enumerate() {
        for (c, &count) in row.iter().enumerate() {
            let expected = rows[r] as f64 * columns[c] as f64 / total;
            let mut observed = count as f64;
            if yates {
                let diff = expected - observed;
                observed += diff.signum() * diff.abs().min(0.5);
            }
            statistic += (observed - expected).powi(2) / expected;
        }
    }
    let p_value = erfc((statistic / 2.0).sqrt());
    Ok(TestOutcome {
        statistic,
        p_value: p_value.clamp(0.0, 1.0),
    })
}

/// Fisher's exact test on a 2×2 table `[[a, b], [c, d]]`, two-sided, as scipy's
/// `fisher_exact(table)`.
///
/// Given the margins, `a` follows the hypergeometric distribution
/// `P(x) = C(a + b, x) · C(c + d, (a + c) - x) / C(N, a + c)`. The p-value sums
/// `P(x)` over every table no more likely than the observed one:
///
/// ```text
/// p = Σ_{x : P(x) ≤ P(a) · (1 + 1e-7)} P(x)
/// ```
///
/// The pmf is evaluated from log-factorials; the distribution is unimodal
/// (mode `⌊(a + c + 1)(a + b + 1) / (N + 2)⌋`), so the included tables are two
/// tails, found by bisection and summed outward until the terms no longer
/// change the sum. The statistic is scipy's sample odds ratio `a·d / (b·c)`,
/// `+∞` when `b·c = 0`.
///
/// # Errors
///
/// A row or column of zeros.
pub fn fisher_exact_2x2(table: [[u64; 2]; 2]) -> Result<TestOutcome, StatsError> {
    let (rows, columns) = margins("fisher exact", table)?;
    let [[a, b], [c, d]] = table.map(|row| row.map(|v| v as f64));
    let odds_ratio = if b > 0.0 && c > 0.0 {
        a * d / (b * c)
    } else {
        f64::INFINITY
    };
    let (n1, n2, n) = (rows[0] as u64, rows[1] as u64, columns[0] as u64);
    let total = n1 + n2;
    let log_norm = ln_binomial(total, n);
    let log_pmf = |x: u64| ln_binomial(n1, x) + ln_binomial(n2, n - x) - log_norm;
    let lo = n.saturating_sub(n2);
    let hi = n.min(n1);
    let mode = ((u128::from(n) + 1) * (u128::from(n1) + 1) / (u128::from(total) + 2)) as u64;
    let threshold = log_pmf(table[0][0]) + RELATIVE_TIE.ln_1p();
    if log_pmf(mode) <= threshold {
        return Ok(TestOutcome {
            statistic: odds_ratio,
            p_value: 1.0,
        });
    }
    let included = |x: u64| log_pmf(x) <= threshold;
    let mut p_value = 0.0;
    // Left tail: P rises on [lo, mode]; the largest x < mode still included.
    if mode > lo && included(lo) {
        let (mut inside, mut outside) = (lo, mode);
        while outside - inside > 1 {
            let mid = inside + (outside - inside) / 2;
            if included(mid) {
                inside = mid
            } else {
                outside = mid
            }
        }
        p_value += sum_outward((lo..=inside).rev().map(&log_pmf));
    }
    // Right tail: P falls on [mode, hi]; the smallest x > mode included.
    if hi > mode && included(hi) {
        let (mut outside, mut inside) = (mode, hi);
        while inside - outside > 1 {
            let mid = outside + (inside - outside) / 2;
            if included(mid) {
                inside = mid
            } else {
                outside = mid
            }
        }
        p_value += sum_outward((inside..=hi).map(&log_pmf));
    }
    Ok(TestOutcome {
        statistic: odds_ratio,
        p_value: p_value.clamp(0.0, 1.0),
    })
}

/// Sums `exp` of decreasing log-probabilities until a term is negligible.
fn sum_outward(log_terms: impl Iterator<Item = f64>) -> f64 {
    let mut sum = 0.0;
    for log_term in log_terms {
        let term = log_term.exp();
        sum += term;
        if term <= sum * 1e-18 {
            break;
        }
    }
    sum
}
