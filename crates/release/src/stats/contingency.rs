//! Tests on a 2×2 table of counts: Pearson's chi-square (with or without
//! Yates' correction) and Fisher's exact test.
//!
//! A table is `[[a, b], [c, d]]`: rows are the groups (control, treatment),
//! columns the outcomes (success, failure).

use statrs::function::erf::erfc;

use super::{StatsError, TestOutcome, ldexp};

/// Two tables are equally likely when their probabilities are within this
/// relative tolerance: scipy 1.17's `fisher_exact` uses `1 + 1e-14` (R's
/// `fisher.test` uses `1 + 1e-7`). The pmf is evaluated from ratios of
/// integers, each step a few ulps, and the ratios of mirror tables (the tables
/// of a symmetric design) are the same floating-point numbers, so exact ties
/// stay exact.
const RELATIVE_TIE: f64 = 1e-14;

/// A remaining tail this much smaller than the running sum no longer changes it.
const NEGLIGIBLE: f64 = 1e-17;

/// Below `2^-CUTOFF_EXPONENT` times the mode's probability a table is so
/// unlikely that the p-value it leads to (at most the number of tables,
/// `< 2^66`, times its probability) rounds to 0.
const CUTOFF_EXPONENT: i32 = 1200;

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
/// Given the margins (rows `n₁ = a + b`, `n₂ = c + d`, first column
/// `K = a + c`), `a` follows the hypergeometric distribution
/// `P(x) = C(n₁, x) · C(n₂, K - x) / C(n₁ + n₂, K)`. The p-value sums `P(x)`
/// over the observed table's own tail and the tables on the other side of the
/// mode that are less likely than it, with scipy's tie rule:
///
/// ```text
/// p = 1                                          if |P(a) - P(m)| ≤ 1e-14 · P(m)
/// p = Σ_{x ≤ a} P(x) + Σ_{x > m : P(x) < P(a) · (1 + 1e-14)} P(x)     if a < m
/// p = Σ_{x ≥ a} P(x) + Σ_{x < m : P(x) ≤ P(a) · (1 + 1e-14)} P(x)     if a > m
/// ```
///
/// with `m = ⌊(K + 1)(n₁ + 1) / (n₁ + n₂ + 2)⌋` the mode. The pmf is never
/// formed from factorials (log-factorials of 10⁸-sized counts lose more than
/// the tie tolerance and split mirror tables at random): it is evaluated
/// relative to the mode with the ratio recurrence
///
/// ```text
/// P(x + 1) / P(x) = (n₁ - x)(K - x) / ((x + 1)(n₂ - K + x + 1))
/// ```
///
/// walking outward from the mode, with a separate binary exponent so that
/// nothing underflows; each sum stops once the rest of its tail (bounded by
/// the last ratio, the pmf being log-concave) is below 1e-17 of it, and the
/// sums are normalized by the total mass summed the same way. A table below
/// `2^-1200` of the mode gives `p = 0` (the exact value rounds to 0). The
/// work is proportional to the distribution's standard deviation (about 50 of
/// them at most), not to the counts: a few million steps for margins of 10⁹,
/// but slow for margins beyond ~10¹³.
///
/// The statistic is scipy's sample odds ratio `a·d / (b·c)`, `+∞` when
/// `b·c = 0`.
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
    let p_value = Hypergeometric::new(rows[0], rows[1], columns[0])
        .two_sided_p_value(u128::from(table[0][0]));
    Ok(TestOutcome {
        statistic: odds_ratio,
        p_value: p_value.clamp(0.0, 1.0),
    })
}

/// The hypergeometric distribution of the first cell given the margins.
struct Hypergeometric {
    /// The first row's sum.
    n1: u128,
    /// The second row's sum.
    n2: u128,
    /// The first column's sum.
    k: u128,
    /// The support is `lo..=hi`.
    lo: u128,
    hi: u128,
    /// The mode, scipy's formula (the upper one of two equal modes).
    mode: u128,
}

/// Which way a walk away from the mode goes.
#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Down,
    Up,
}

impl Hypergeometric {
    fn new(n1: u128, n2: u128, k: u128) -> Self {
        let (lo, hi) = (k.saturating_sub(n2), k.min(n1));
        let mode = match (k + 1).checked_mul(n1 + 1) {
            Some(product) => product / (n1 + n2 + 2),
            // Only for margins near 2⁶⁴, where the f64 estimate is as good as any.
            None => ((k as f64 + 1.0) * (n1 as f64 + 1.0) / (n1 as f64 + n2 as f64 + 2.0)) as u128,
        };
        let mode = mode.clamp(lo, hi);
        Self {
            n1,
            n2,
            k,
            lo,
            hi,
            mode,
        }
    }

    /// The next table's value from `x` in `direction`, and `P(next) / P(x)`;
    /// `None` at the end of the support. Every factor is an integer (exact in
    /// f64 below 2⁵³), so a ratio costs three roundings, and a step and its
    /// mirror image multiply the same factors.
    fn step(&self, x: u128, direction: Direction) -> Option<(u128, f64)> {
        let f = |v: u128| v as f64;
        match direction {
            Direction::Up if x < self.hi => {
                let numerator = f(self.n1 - x) * f(self.k - x);
                let denominator = f(x + 1) * f(self.n2 + x + 1 - self.k);
                Some((x + 1, numerator / denominator))
            }
            Direction::Down if x > self.lo => {
                let numerator = f(x) * f(self.n2 + x - self.k);
                let denominator = f(self.n1 + 1 - x) * f(self.k + 1 - x);
                Some((x - 1, numerator / denominator))
            }
            _ => None,
        }
    }

    /// `Σ P(y) / P(x)` over `x` and the tables beyond it in `direction` (away
    /// from the mode, where the terms fall), until the rest is negligible.
    fn tail_relative(&self, x: u128, direction: Direction) -> f64 {
        let (mut y, mut term, mut sum) = (x, 1.0_f64, 1.0_f64);
        while let Some((next, ratio)) = self.step(y, direction) {
            y = next;
            term *= ratio;
            sum += term;
            // Log-concavity: every later ratio is at most this one, so the
            // rest is at most term · ratio / (1 - ratio).
            if ratio < 1.0 && term * ratio <= NEGLIGIBLE * sum * (1.0 - ratio) {
                break;
            }
        }
        sum
    }

    /// The two-sided p-value of the observed first cell `a` (scipy's rule).
    fn two_sided_p_value(&self, a: u128) -> f64 {
        let toward = if a < self.mode {
            Direction::Down
        } else {
            Direction::Up
        };
        // P(a) / P(mode).
        let mut observed = Scaled::ONE;
        let mut x = self.mode;
        while x != a {
            let (next, ratio) = self
                .step(x, toward)
                .expect("the observed cell lies in the support");
            x = next;
            observed = observed.times(ratio);
            if observed.exponent < -CUTOFF_EXPONENT {
                return 0.0;
            }
        }
        if observed.exponent == 0 && (1.0 - observed.mantissa).abs() <= RELATIVE_TIE {
            return 1.0;
        }
        let threshold = observed.times(1.0 + RELATIVE_TIE);
        let included = |w: Scaled| {
            if toward == Direction::Down {
                w.less_than(threshold)
            } else {
                !threshold.less_than(w)
            }
        };
        // The other side: the first table from the mode that is included.
        let away = match toward {
            Direction::Down => Direction::Up,
            Direction::Up => Direction::Down,
        };
        let (mut y, mut weight) = (self.mode, Scaled::ONE);
        let mut other = None;
        loop {
            if included(weight) {
                other = Some((y, weight));
                break;
            }
            let Some((next, ratio)) = self.step(y, away) else {
                break;
            };
            (y, weight) = (next, weight.times(ratio));
        }
        // Everything relative to P(a): its tail, the other included tail.
        let mut sum = self.tail_relative(a, toward);
        if let Some((first, weight)) = other {
            sum += weight.relative_to(observed) * self.tail_relative(first, away);
        }
        let total = self.tail_relative(self.mode, Direction::Down)
            + self.tail_relative(self.mode, Direction::Up)
            - 1.0;
        ldexp(
            observed.mantissa * sum / total,
            i64::from(observed.exponent),
        )
    }
}

/// `mantissa · 2^exponent` for the probability of a table relative to the
/// mode, which can be far below f64's range: the mantissa stays in
/// `[2^-512, 1]` (it only ever shrinks).
#[derive(Clone, Copy)]
struct Scaled {
    mantissa: f64,
    exponent: i32,
}

impl Scaled {
    const ONE: Self = Self {
        mantissa: 1.0,
        exponent: 0,
    };
    const STEP: i32 = 512;

    fn times(self, factor: f64) -> Self {
        let (mut mantissa, mut exponent) = (self.mantissa * factor, self.exponent);
        while mantissa != 0.0 && mantissa < 2f64.powi(-Self::STEP) {
            mantissa *= 2f64.powi(Self::STEP);
            exponent -= Self::STEP;
        }
        Self { mantissa, exponent }
    }

    /// `self / other` as an f64 (underflowing to 0 when negligible).
    fn relative_to(self, other: Self) -> f64 {
        ldexp(
            self.mantissa / other.mantissa,
            i64::from(self.exponent) - i64::from(other.exponent),
        )
    }

    fn less_than(self, other: Self) -> bool {
        self.relative_to(other) < 1.0
    }
}
