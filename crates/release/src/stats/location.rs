//! Location tests on two independent samples: Welch's t-test and the
//! Mann-Whitney U test.

use statrs::function::{beta::beta_reg, erf::erfc};

use super::{StatsError, TestOutcome, check_sample};

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
/// # Errors
///
/// A sample with fewer than 2 values or a non-finite value, or both samples
/// constant (zero variance in both: `t` is 0/0 or ±∞).
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Result<TestOutcome, StatsError> {
    const TEST: &str = "welch t-test";
    check_sample(TEST, "a", a, 2)?;
    check_sample(TEST, "b", b, 2)?;
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mean_a, var_a) = mean_and_variance(a);
    let (mean_b, var_b) = mean_and_variance(b);
    if var_a == 0.0 && var_b == 0.0 {
        return Err(StatsError::ConstantInput {
            test: TEST,
            what: "both samples are constant (zero variance in both)",
        });
    }
    let (va, vb) = (var_a / na, var_b / nb);
    let t = (mean_a - mean_b) / (va + vb).sqrt();
    let df = (va + vb).powi(2) / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    let p_value = beta_reg(df / 2.0, 0.5, df / (df + t * t));
    Ok(TestOutcome {
        statistic: t,
        p_value: p_value.clamp(0.0, 1.0),
    })
}

/// Mean (compensated sum) and sample variance (divisor `n - 1`, two passes).
fn mean_and_variance(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = neumaier_sum(x.iter().copied()) / n;
    let ss = neumaier_sum(x.iter().map(|v| (v - mean) * (v - mean)));
    (mean, ss / (n - 1.0))
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
