//! Location tests on two independent samples: Welch's t-test and the
//! Mann-Whitney U test.

use statrs::function::{beta::checked_beta_reg, erf::erfc};

use super::{StatsError, TestOutcome, check_sample, ldexp};

/// Welch's unequal-variances t-test, two-sided, as scipy's
/// `ttest_ind(a, b, equal_var=False)`.
///
/// With means `m_a`, `m_b`, sample variances `s²_a`, `s²_b` (divisor `n - 1`)
/// and `v_a = s²_a / n_a`, `v_b = s²_b / n_b`:
///
/// ```text
/// t  = (m_a - m_b) / sqrt(v_a + v_b)
/// df = (v_a + v_b)² / (v_a² / (n_a - 1) + v_b² / (n_b - 1))     (Welch–Satterthwaite)
/// p  = 2 · P(T_df ≥ |t|) = I_{df / (df + t²)}(df / 2, 1 / 2)
/// ```
///
/// where `I_x(a, b)` is the regularized incomplete beta function. The
/// statistic is `t` (positive when `a`'s mean is larger).
///
/// Nothing is squared at the data's own scale: each sample's deviations are
/// scaled by a power of two (exactly) before they are squared, `v_a` and `v_b`
/// are kept relative to the larger of the two scales, and `df` is evaluated
/// with both divided by their maximum. So `t`, `df` and `p` do not change
/// when both samples are multiplied by a power of two, anywhere in f64's
/// range. scipy squares `v_a` and `v_b` as they are: where those squares
/// underflow or overflow (values below ~1e-75 or above ~1e75 in magnitude)
/// its `df` is `0/0` or `∞/∞`, which it replaces by 1, and its variances lose
/// precision in subnormals. There the two differ: for `a = [0, 1e-160]`,
/// `b = [0, 3e-160]` scipy gives `t = -0.6324591`, `df = 1`, `p = 0.64098`,
/// this function the values of `[0, 1]`, `[0, 3]`: `t = -0.6324555`,
/// `df = 1.2195`, `p = 0.62483`. A `df` that still is not a positive number
/// is replaced by 1 as scipy does.
///
/// # Errors
///
/// A sample with fewer than 2 values or a non-finite value, both samples
/// constant (zero variance in both: `t` is 0/0 or ±∞), or a tail probability
/// the incomplete beta function refuses (never expected; an error rather
/// than a panic).
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Result<TestOutcome, StatsError> {
    const TEST: &str = "welch t-test";
    check_sample(TEST, "a", a, 2)?;
    check_sample(TEST, "b", b, 2)?;
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (sa, sb) = (Moments::of(a), Moments::of(b));
    // The common scale: 2^scale is about the larger sample's spread.
    let scale = match (sa.spread, sb.spread) {
        (Some((ea, _)), Some((eb, _))) => ea.max(eb),
        (Some((e, _)), None) | (None, Some((e, _))) => e,
        (None, None) => {
            return Err(StatsError::ConstantInput {
                test: TEST,
                what: "both samples are constant (zero variance in both)",
            });
        }
    };
    // v / 2^(2·scale): the larger one is about 1/n, the other at most that.
    let relative = |m: &Moments, n: f64| match m.spread {
        Some((e, variance)) => {
            let r = ldexp(1.0, i64::from(e) - i64::from(scale));
            variance * r * r / n
        }
        None => 0.0,
    };
    let (va, vb) = (relative(&sa, na), relative(&sb, nb));
    // (m_a - m_b) / 2^scale: a non-constant sample's mean is at most ~2^54
    // there, a constant sample's may overflow to ±∞ (then so does t, rightly).
    let difference = sa.mean_over(scale) - sb.mean_over(scale);
    let t = difference / (va + vb).sqrt();
    let largest = va.max(vb);
    let (ra, rb) = (va / largest, vb / largest);
    let df = (ra + rb).powi(2) / (ra * ra / (na - 1.0) + rb * rb / (nb - 1.0));
    let df = if df.is_nan() || df <= 0.0 { 1.0 } else { df };
    let p_value = if t.is_nan() {
        f64::NAN
    } else {
        // t = ±∞ gives x = 0 and p = 0; t = 0 gives x = 1 and p = 1.
        checked_beta_reg(df / 2.0, 0.5, df / (df + t * t)).unwrap_or(f64::NAN)
    };
    if !p_value.is_finite() {
        return Err(StatsError::Numerical {
            test: TEST,
            what: "the student t tail probability could not be evaluated",
        });
    }
    Ok(TestOutcome {
        statistic: t,
        p_value: p_value.clamp(0.0, 1.0),
    })
}

/// A sample's mean as `mean · 2^exponent` and, unless the sample is constant,
/// its sample variance (divisor `n - 1`) as `(e, v)` with `variance = v · 4^e`.
/// The values are divided by `2^exponent`, about their largest magnitude,
/// before they are summed, and the deviations from the mean by `2^e`, about
/// their largest magnitude, before they are squared (both exact), so nothing
/// overflows or underflows and the result only shifts those exponents when
/// the sample is multiplied by a power of two.
struct Moments {
    mean: f64,
    exponent: i32,
    spread: Option<(i32, f64)>,
}

impl Moments {
    fn of(x: &[f64]) -> Self {
        let n = x.len() as f64;
        let exponent = binary_exponent(x.iter().fold(0.0_f64, |m, v| m.max(v.abs())));
        let down = |v: f64| ldexp(v, -i64::from(exponent));
        let mean = neumaier_sum(x.iter().map(|&v| down(v))) / n;
        let deviations: Vec<f64> = x.iter().map(|&v| down(v) - mean).collect();
        let largest = deviations.iter().fold(0.0_f64, |m, d| m.max(d.abs()));
        let spread = (largest > 0.0).then(|| {
            let e = binary_exponent(largest);
            let ss = neumaier_sum(deviations.iter().map(|&d| {
                let d = ldexp(d, -i64::from(e));
                d * d
            }));
            (exponent + e, ss / (n - 1.0))
        });
        Self {
            mean,
            exponent,
            spread,
        }
    }

    /// The mean divided by `2^scale`.
    fn mean_over(&self, scale: i32) -> f64 {
        ldexp(self.mean, i64::from(self.exponent) - i64::from(scale))
    }
}

/// The `e` with `2^e ≤ |x| < 2^(e + 1)` for a finite non-zero `x` (0 for 0).
fn binary_exponent(x: f64) -> i32 {
    if x == 0.0 {
        return 0;
    }
    let bits = x.abs().to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: 2^-1074 times the integer mantissa.
        -1074 + (63 - bits.leading_zeros() as i32)
    } else {
        biased - 1023
    }
}

/// Sum with Neumaier's compensation, so that means do not depend on order.
fn neumaier_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut compensation) = (0.0_f64, 0.0_f64);
    for v in values {
        let t = sum + v;
        if sum.abs() >= v.abs() {
            compensation += (sum - t) + v;
        } else {
            compensation += (v - t) + sum;
        }
        sum = t;
    }
    sum + compensation
}

/// The Mann-Whitney U test, two-sided, as scipy's `mannwhitneyu(a, b)` with
/// its default `method='auto'`.
///
/// Pool both samples and rank them (ties get their average rank). With `R_a`
/// the sum of `a`'s ranks:
///
/// ```text
/// U1 = R_a - n_a (n_a + 1) / 2        (the statistic returned)
/// U2 = n_a n_b - U1,   U = max(U1, U2)
/// ```
///
/// - **Exact** when `min(n_a, n_b) ≤ 8` and there are no ties:
///   `p = 2 · P(U' ≥ U)` where `U'` follows the null distribution of the
///   statistic, whose counts are the coefficients of the Gaussian binomial
///   `∏_{i=1..m} (1 - q^{n+i}) / (1 - q^i)` (`m = min(n_a, n_b)`,
///   `n = max(n_a, n_b)`) divided by `C(n_a + n_b, n_a)`; by symmetry
///   `P(U' ≥ U) = P(U' ≤ n_a n_b - U)`.
/// - **Normal approximation** otherwise, with tie and continuity corrections:
///   `σ = sqrt(n_a n_b / 12 · ((N + 1) - Σ(t³ - t) / (N (N - 1))))` over the
///   sizes `t` of the groups of tied values (`N = n_a + n_b`),
///   `z = (U - n_a n_b / 2 - 0.5) / σ`, `p = 2 · (1 - Φ(z)) = erfc(z / √2)`.
///
/// The p-value is clipped to `[0, 1]`.
///
/// # Errors
///
/// An empty sample, a non-finite value, or every pooled value equal (the
/// ranks carry no information and `σ = 0`).
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Result<TestOutcome, StatsError> {
    const TEST: &str = "mann-whitney u";
    check_sample(TEST, "a", a, 1)?;
    check_sample(TEST, "b", b, 1)?;
    let (n1, n2) = (a.len(), b.len());
    let mut pooled: Vec<(f64, bool)> = a
        .iter()
        .map(|&v| (v, true))
        .chain(b.iter().map(|&v| (v, false)))
        .collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    if pooled[0].0 == pooled[pooled.len() - 1].0 {
        return Err(StatsError::ConstantInput {
            test: TEST,
            what: "every value of both samples is the same",
        });
    }
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut has_ties = false;
    let mut start = 0;
    while start < pooled.len() {
        let mut end = start + 1;
        while end < pooled.len() && pooled[end].0 == pooled[start].0 {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; they share the average.
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let in_a = pooled[start..end]
            .iter()
            .filter(|(_, from_a)| *from_a)
            .count();
        rank_sum_a += average_rank * in_a as f64;
        if end - start > 1 {
            let t = (end - start) as f64;
            has_ties = true;
            tie_term += t * t * t - t;
        }
        start = end;
    }
    let (f1, f2) = (n1 as f64, n2 as f64);
    let u1 = rank_sum_a - f1 * (f1 + 1.0) / 2.0;
    let u = u1.max(f1 * f2 - u1);
    let p_value = if n1.min(n2) <= 8 && !has_ties {
        // No ties: U is an integer; count arrangements with U' <= n1 n2 - U.
        let lower = (f1 * f2 - u).round() as usize;
        2.0 * mwu_exact_cdf(n1.min(n2), n1.max(n2), lower)
    } else {
        let n = f1 + f2;
        let sigma = (f1 * f2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
        let z = (u - f1 * f2 / 2.0 - 0.5) / sigma;
        erfc(z / std::f64::consts::SQRT_2)
    };
    Ok(TestOutcome {
        statistic: u1,
        p_value: p_value.clamp(0.0, 1.0),
    })
}

/// `P(U ≤ k)` under the null for sample sizes `m ≤ n`, from the coefficients
/// of the Gaussian binomial `[m + n choose m]_q` truncated at degree `k`
/// (truncation is exact: each step only reads lower coefficients).
fn mwu_exact_cdf(m: usize, n: usize, k: usize) -> f64 {
    let mut counts = vec![0.0_f64; k + 1];
    counts[0] = 1.0;
    let mut total = 1.0_f64;
    for i in 1..=m {
        // Multiply by (1 - q^(n+i)), then divide by (1 - q^i).
        for d in (n + i..=k).rev() {
            counts[d] -= counts[d - n - i];
        }
        for d in i..=k {
            counts[d] += counts[d - i];
        }
        total *= (n + i) as f64 / i as f64;
    }
    counts.iter().sum::<f64>() / total
}
