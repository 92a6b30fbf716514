//! Distances between two distributions and the homogeneity test of
//! category counts, for data and prediction drift: the Wasserstein-1
//! distance between two samples, the chi-square test of a 2×k table, and
//! the Jensen-Shannon distance between two category distributions.

use super::{StatsError, TestOutcome, check_sample, sorted};

/// The Wasserstein-1 (earth mover's) distance between the empirical
/// distributions of `a` and `b`, as scipy's `wasserstein_distance(a, b)`:
///
/// ```text
/// W₁ = ∫ |F_a(x) - F_b(x)| dx
///    = Σ_i |F_a(z_i) - F_b(z_i)| · (z_{i+1} - z_i)    over the sorted pooled values z
/// ```
///
/// in the units of the data. The samples are sorted here; use
/// [`wasserstein_sorted`] when they already are.
///
/// # Errors
///
/// An empty sample or a non-finite value.
pub fn wasserstein(a: &[f64], b: &[f64]) -> Result<f64, StatsError> {
    const TEST: &str = "wasserstein";
    check_sample(TEST, "a", a, 1)?;
    check_sample(TEST, "b", b, 1)?;
    Ok(wasserstein_sorted(&sorted(a), &sorted(b)))
}

/// [`wasserstein`] of two samples already sorted ascending and finite
/// (not checked), in one merge pass.
pub fn wasserstein_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let (mut i, mut j) = (0usize, 0usize);
    let mut total = 0.0;
    // The current pooled value: everything ≤ it has been counted.
    let mut x = a[0].min(b[0]);
    while i < a.len() || j < b.len() {
        // Count every value equal to x in both samples.
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let next = match (a.get(i), b.get(j)) {
            (Some(&u), Some(&v)) => u.min(v),
            (Some(&u), None) => u,
            (None, Some(&v)) => v,
            (None, None) => break,
        };
        let gap = (i as f64 / na - j as f64 / nb).abs();
        total += gap * (next - x);
        x = next;
    }
    total
}

/// The chi-square test of homogeneity of two samples of categories, given
/// their counts per category (`a[k]`, `b[k]`: the 2×k table), as scipy's
/// `chi2_contingency([a, b], correction=False)` (no Yates correction; scipy
/// applies none for k > 2 either):
///
/// ```text
/// E_rk = R_r · C_k / N,  X² = Σ (O_rk - E_rk)² / E_rk,  dof = k' - 1,
/// p = P(χ²_dof ≥ X²)
/// ```
///
/// where categories with no observation in either sample are dropped
/// (their expected counts would be 0) and `k'` is the number left. The
/// statistic is `X²`.
///
/// # Errors
///
/// Counts of different lengths, a sample with no observation, or fewer
/// than two categories observed (the test is undefined).
pub fn chi_square_homogeneity(a: &[u64], b: &[u64]) -> Result<TestOutcome, StatsError> {
    const TEST: &str = "chi-square homogeneity";
    if a.len() != b.len() {
        return Err(StatsError::ConstantInput {
            test: TEST,
            what: "the two samples count different categories",
        });
    }
    let (ra, rb): (u64, u64) = (a.iter().sum(), b.iter().sum());
    if ra == 0 {
        return Err(StatsError::EmptySample {
            test: TEST,
            sample: "a",
        });
    }
    if rb == 0 {
        return Err(StatsError::EmptySample {
            test: TEST,
            sample: "b",
        });
    }
    let total = (ra + rb) as f64;
    let mut statistic = 0.0;
    let mut categories = 0usize;
    for (&x, &y) in a.iter().zip(b) {
        let column = (x + y) as f64;
        if column == 0.0 {
            continue;
        }
        categories += 1;
        for (observed, row) in [(x as f64, ra as f64), (y as f64, rb as f64)] {
            let expected = row * column / total;
            statistic += (observed - expected).powi(2) / expected;
        }
    }
    if categories < 2 {
        return Err(StatsError::ConstantInput {
            test: TEST,
            what: "fewer than two categories are observed",
        });
    }
    let dof = (categories - 1) as f64;
    use statrs::distribution::{ChiSquared, ContinuousCDF};
    let dist = ChiSquared::new(dof).map_err(|_| StatsError::Numerical {
        test: TEST,
        what: "the chi-square distribution refused its degrees of freedom",
    })?;
    Ok(TestOutcome {
        statistic,
        p_value: dist.sf(statistic).clamp(0.0, 1.0),
    })
}

/// The Jensen-Shannon distance between two distributions over the same
/// categories, given as counts or weights (each normalized to sum to 1),
/// in base 2 (so it lies in `[0, 1]`), as scipy's
/// `jensenshannon(p, q, base=2)`:
///
/// ```text
/// m = (p + q) / 2,  JSD = (KL(p ‖ m) + KL(q ‖ m)) / 2,  distance = √JSD
/// KL(p ‖ m) = Σ p_k · log₂(p_k / m_k)   (0 · log 0 = 0)
/// ```
///
/// # Errors
///
/// Weights of different lengths, a negative or non-finite weight, or a
/// distribution that sums to 0.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> Result<f64, StatsError> {
    const TEST: &str = "jensen-shannon";
    if p.len() != q.len() {
        return Err(StatsError::ConstantInput {
            test: TEST,
            what: "the two distributions have different categories",
        });
    }
    check_sample(TEST, "p", p, 1)?;
    check_sample(TEST, "q", q, 1)?;
    let normalized = |w: &[f64], sample: &'static str| -> Result<Vec<f64>, StatsError> {
        if w.iter().any(|x| *x < 0.0) {
            return Err(StatsError::ConstantInput {
                test: TEST,
                what: if sample == "p" {
                    "p has a negative weight"
                } else {
                    "q has a negative weight"
                },
            });
        }
        let s: f64 = w.iter().sum();
        if s <= 0.0 {
            return Err(StatsError::EmptySample { test: TEST, sample });
        }
        Ok(w.iter().map(|x| x / s).collect())
    };
    let (p, q) = (normalized(p, "p")?, normalized(q, "q")?);
    let kl = |x: &[f64], m: &[f64]| -> f64 {
        x.iter()
            .zip(m)
            .filter(|(xi, _)| **xi > 0.0)
            .map(|(xi, mi)| xi * (xi / mi).log2())
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    let js = (kl(&p, &m) + kl(&q, &m)) / 2.0;
    Ok(js.max(0.0).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasserstein_of_shifted_samples_is_the_shift() {
        let a: Vec<f64> = (0..100).map(f64::from).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 2.5).collect();
        assert!((wasserstein(&a, &b).unwrap() - 2.5).abs() < 1e-12);
        assert_eq!(wasserstein(&a, &a).unwrap(), 0.0);
        // scipy: wasserstein_distance([0, 1, 3], [5, 6, 8]) = 5.0
        assert!((wasserstein(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]).unwrap() - 5.0).abs() < 1e-12);
        assert!(wasserstein(&[], &[1.0]).is_err());
        assert!(wasserstein(&[f64::NAN], &[1.0]).is_err());
    }

    #[test]
    fn chi_square_drops_unobserved_categories() {
        let with = chi_square_homogeneity(&[10, 20, 0, 30], &[15, 15, 0, 30]).unwrap();
        let without = chi_square_homogeneity(&[10, 20, 30], &[15, 15, 30]).unwrap();
        assert_eq!(with, without);
        assert!(chi_square_homogeneity(&[5, 0], &[7, 0]).is_err());
        assert!(chi_square_homogeneity(&[0, 0], &[7, 1]).is_err());
        assert!(chi_square_homogeneity(&[1], &[1, 2]).is_err());
    }

    #[test]
    fn jensen_shannon_is_bounded() {
        assert_eq!(jensen_shannon(&[1.0, 0.0], &[1.0, 0.0]).unwrap(), 0.0);
        assert!((jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!(jensen_shannon(&[0.0, 0.0], &[1.0, 1.0]).is_err());
        assert!(jensen_shannon(&[-1.0, 2.0], &[1.0, 1.0]).is_err());
    }
}
