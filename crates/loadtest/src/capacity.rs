//! The capacity model: Gunther's Universal Scalability Law fitted to
//! throughput against concurrency.
//!
//! ```text
//! X(N) = λ·N / (1 + σ·(N − 1) + κ·N·(N − 1))
//! ```
//!
//! `λ` is the throughput of one unit of concurrency, `σ` the contention
//! (the serial share: queueing for a shared resource) and `κ` the coherency
//! delay (crosstalk: every unit waiting on every other), both at least 0.
//! With `κ > 0` throughput peaks at `N* = √((1 − σ)/κ)` and falls beyond;
//! with `κ = 0` it only flattens towards `λ/σ`.
//!
//! [`fit_usl`] finds `λ, σ, κ` by nonlinear least squares on the
//! throughput (Levenberg–Marquardt, from the linearized estimate
//! `λN/X − 1 = σ(N − 1) + κN(N − 1)`), keeping `σ` and `κ` non-negative,
//! and reports the goodness of fit (R²), the peak and, for a target rate,
//! the concurrency that reaches it ([`UslFit::concurrency_for`]).
//!
//! Concurrency is whatever scales: replicas in a scalability run, or the
//! requests in flight (Little's law: rate × mean latency) at each level of
//! a stress run.

use serde::Serialize;

/// One measurement: at this concurrency, this throughput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Observation {
    /// Replicas, users or requests in flight (above 0).
    pub concurrency: f64,
    /// Requests per second (at least 0).
    pub throughput: f64,
}

/// A fitted Universal Scalability Law.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UslFit {
    /// Throughput at a concurrency of 1.
    pub lambda: f64,
    /// Contention.
    pub sigma: f64,
    /// Coherency.
    pub kappa: f64,
    /// The coefficient of determination of the throughput: 1 − SSres/SStot
    /// (1 is a perfect fit; 0 no better than the mean).
    pub r_squared: f64,
    /// The root mean square error, in throughput's unit.
    pub rmse: f64,
    /// The points fitted.
    pub points: usize,
    /// The concurrency of the highest throughput; `None` without
    /// coherency (`κ = 0`): throughput never falls.
    pub peak_concurrency: Option<f64>,
    /// The highest throughput the model predicts (at `peak_concurrency`,
    /// or the asymptote `λ/σ`; infinite when both `σ` and `κ` are 0).
    pub peak_throughput: f64,
}

/// Why there is no fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapacityError {
    /// Fewer than three distinct concurrencies.
    #[error("the USL needs at least 3 distinct concurrencies, not {0}")]
    TooFewPoints(usize),
    /// A point that is not positive and finite.
    #[error(
        "point {index}: concurrency {concurrency} and throughput {throughput} must be finite, the concurrency above 0 and the throughput at least 0"
    )]
    BadPoint {
        /// Its position, from 1.
        index: usize,
        /// Its concurrency.
        concurrency: f64,
        /// Its throughput.
        throughput: f64,
    },
    /// Every throughput is 0.
    #[error("every throughput is 0: nothing scaled")]
    NoThroughput,
}

impl UslFit {
    /// The throughput the model predicts at concurrency `n`.
    pub fn throughput(&self, n: f64) -> f64 {
        usl(self.lambda, self.sigma, self.kappa, n)
    }

    /// The smallest concurrency (not below 1) at which the model reaches
    /// `rate`; `None` when it never does. Rounded up, it is the replica
    /// count a target rate needs when the concurrency is replicas.
    pub fn concurrency_for(&self, rate: f64) -> Option<f64> {
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        if self.throughput(1.0) >= rate {
            return Some(1.0);
        }
        // Throughput rises up to the peak (or forever without coherency).
        let mut hi = self.peak_concurrency.unwrap_or(f64::INFINITY);
        if hi.is_infinite() {
            hi = 2.0;
            while self.throughput(hi) < rate {
                hi *= 2.0;
                if hi > 1e12 {
                    return None;
                }
            }
        } else if self.throughput(hi) < rate {
            return None;
        }
        let mut lo = 1.0;
        for _ in 0..200 {
            let mid = (lo + hi) / 2.0;
            if self.throughput(mid) >= rate {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }
}

fn usl(lambda: f64, sigma: f64, kappa: f64, n: f64) -> f64 {
    lambda * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))
}

/// Fits the USL to `points` (at least three distinct concurrencies).
pub fn fit_usl(points: &[Observation]) -> Result<UslFit, CapacityError> {
    for (i, p) in points.iter().enumerate() {
        if !(p.concurrency.is_finite()
            && p.concurrency > 0.0
            && p.throughput.is_finite()
            && p.throughput >= 0.0)
        {
            return Err(CapacityError::BadPoint {
                index: i + 1,
                concurrency: p.concurrency,
                throughput: p.throughput,
            });
        }
    }
    let mut distinct: Vec<f64> = points.iter().map(|p| p.concurrency).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < 3 {
        return Err(CapacityError::TooFewPoints(distinct.len()));
    }
    if points.iter().all(|p| p.throughput == 0.0) {
        return Err(CapacityError::NoThroughput);
    }
    let mut params = initial(points);
    let mut cost = sse(points, params);
    let mut damping = 1e-3;
    for _ in 0..500 {
        let (jtj, jtr) = normal_equations(points, params);
        // A parameter at its bound that the descent pushes further out
        // stays there: the step is solved for the others (an active set).
        let held: Vec<usize> = (1..3)
            .filter(|&k| params[k] == 0.0 && jtr[k] <= 0.0)
            .collect();
        let mut improved = false;
        // Raise the damping until a step lowers the cost.
        for _ in 0..30 {
            let mut a = jtj;
            let mut b = jtr;
            for (k, row) in a.iter_mut().enumerate() {
                row[k] += damping * jtj[k][k].max(1e-300);
            }
            for &k in &held {
                a[k] = [0.0; 3];
                for row in &mut a {
                    row[k] = 0.0;
                }
                a[k][k] = 1.0;
                b[k] = 0.0;
            }
            let jtr = b;
            let Some(step) = solve3(a, jtr) else {
                damping *= 10.0;
                continue;
            };
            let candidate = project([
                params[0] + step[0],
                params[1] + step[1],
                params[2] + step[2],
            ]);
            let next = sse(points, candidate);
            if next.is_finite() && next <= cost {
                let change = (cost - next) / cost.max(f64::MIN_POSITIVE);
                params = candidate;
                cost = next;
                damping = (damping / 10.0).max(1e-15);
                improved = change > 1e-15;
                break;
            }
            damping *= 10.0;
        }
        if !improved {
            break;
        }
    }
    let [lambda, sigma, kappa] = params;
    let mean = points.iter().map(|p| p.throughput).sum::<f64>() / points.len() as f64;
    let total: f64 = points.iter().map(|p| (p.throughput - mean).powi(2)).sum();
    let r_squared = if total > 0.0 { 1.0 - cost / total } else { 1.0 };
    let (peak_concurrency, peak_throughput) = if kappa > 0.0 {
        let n = ((1.0 - sigma).max(0.0) / kappa).sqrt().max(1.0);
        (Some(n), usl(lambda, sigma, kappa, n))
    } else if sigma > 0.0 {
        (None, lambda / sigma)
    } else {
        (None, f64::INFINITY)
    };
    Ok(UslFit {
        lambda,
        sigma,
        kappa,
        r_squared,
        rmse: (cost / points.len() as f64).sqrt(),
        points: points.len(),
        peak_concurrency,
        peak_throughput,
    })
}

/// `λ` from the lowest concurrency's throughput per unit, then `σ, κ` by
/// least squares on the linearized law `λN/X − 1 = σ(N − 1) + κN(N − 1)`.
fn initial(points: &[Observation]) -> [f64; 3] {
    let lowest = points
        .iter()
        .filter(|p| p.throughput > 0.0)
        .min_by(|a, b| a.concurrency.total_cmp(&b.concurrency))
        .expect("some throughput is above 0");
    let lambda = lowest.throughput / lowest.concurrency;
    let (mut sxx, mut sxz, mut szz, mut sxy, mut szy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in points.iter().filter(|p| p.throughput > 0.0) {
        let n = p.concurrency;
        let (x, z) = (n - 1.0, n * (n - 1.0));
        let y = lambda * n / p.throughput - 1.0;
        sxx += x * x;
        sxz += x * z;
        szz += z * z;
        sxy += x * y;
        szy += z * y;
    }
    let det = sxx * szz - sxz * sxz;
    let (sigma, kappa) = if det.abs() > 1e-300 {
        ((sxy * szz - szy * sxz) / det, (szy * sxx - sxy * sxz) / det)
    } else {
        (0.0, 0.0)
    };
    project([lambda, sigma, kappa])
}

/// Keeps `λ` positive and `σ, κ` non-negative.
fn project([lambda, sigma, kappa]: [f64; 3]) -> [f64; 3] {
    [
        lambda.max(f64::MIN_POSITIVE),
        sigma.max(0.0),
        kappa.max(0.0),
    ]
}

fn sse(points: &[Observation], [lambda, sigma, kappa]: [f64; 3]) -> f64 {
    points
        .iter()
        .map(|p| (p.throughput - usl(lambda, sigma, kappa, p.concurrency)).powi(2))
        .sum()
}

/// `JᵀJ` and `Jᵀr` of the residuals `X − f(N)` at `params`.
fn normal_equations(
    points: &[Observation],
    [lambda, sigma, kappa]: [f64; 3],
) -> ([[f64; 3]; 3], [f64; 3]) {
    let mut jtj = [[0.0; 3]; 3];
    let mut jtr = [0.0; 3];
    for p in points {
        let n = p.concurrency;
        let d = 1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0);
        let f = lambda * n / d;
        let j = [
            n / d,
            -lambda * n * (n - 1.0) / (d * d),
            -lambda * n * n * (n - 1.0) / (d * d),
        ];
        let r = p.throughput - f;
        for a in 0..3 {
            jtr[a] += j[a] * r;
            for b in 0..3 {
                jtj[a][b] += j[a] * j[b];
            }
        }
    }
    (jtj, jtr)
}

/// Solves a 3×3 system by Gaussian elimination with partial pivoting.
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..3 {
            let factor = a[row][col] / pivot_row[col];
            for (cell, above) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *cell -= factor * above;
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let mut sum = b[row];
        for k in row + 1..3 {
            sum -= a[row][k] * x[k];
        }
        x[row] = sum / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(lambda: f64, sigma: f64, kappa: f64, ns: &[f64], noise: &[f64]) -> Vec<Observation> {
        ns.iter()
            .zip(noise.iter().cycle())
            .map(|(&n, e)| Observation {
                concurrency: n,
                throughput: usl(lambda, sigma, kappa, n) * (1.0 + e),
            })
            .collect()
    }

    #[test]
    fn exact_points_give_back_their_parameters() {
        let ns: Vec<f64> = (1..=32).map(f64::from).collect();
        let fit = fit_usl(&points(1000.0, 0.05, 0.002, &ns, &[0.0])).unwrap();
        assert!((fit.lambda - 1000.0).abs() < 1e-6, "{fit:?}");
        assert!((fit.sigma - 0.05).abs() < 1e-9, "{fit:?}");
        assert!((fit.kappa - 0.002).abs() < 1e-10, "{fit:?}");
        assert!(fit.r_squared > 1.0 - 1e-12, "{fit:?}");
        // N* = √((1 − σ)/κ) = √475 ≈ 21.79.
        let peak = fit.peak_concurrency.unwrap();
        assert!((peak - 475f64.sqrt()).abs() < 1e-6, "{fit:?}");
        assert!((fit.peak_throughput - usl(1000.0, 0.05, 0.002, peak)).abs() < 1e-6);
    }

    #[test]
    fn linear_scaling_has_no_peak() {
        let ns = [1.0, 2.0, 4.0, 8.0];
        let fit = fit_usl(&points(50.0, 0.0, 0.0, &ns, &[0.0])).unwrap();
        assert!((fit.lambda - 50.0).abs() < 1e-9, "{fit:?}");
        assert_eq!((fit.sigma, fit.kappa), (0.0, 0.0));
        assert_eq!(fit.peak_concurrency, None);
        assert!(fit.peak_throughput.is_infinite());
        assert_eq!(fit.concurrency_for(120.0).map(f64::ceil), Some(3.0));
        // Amdahl only (κ = 0): throughput approaches λ/σ.
        let fit = fit_usl(&points(
            100.0,
            0.1,
            0.0,
            &[1.0, 2.0, 4.0, 8.0, 16.0],
            &[0.0],
        ))
        .unwrap();
        assert_eq!(fit.peak_concurrency, None);
        assert!((fit.peak_throughput - 1000.0).abs() < 1e-6, "{fit:?}");
        assert_eq!(
            fit.concurrency_for(1000.0),
            None,
            "an asymptote is never reached"
        );
    }

    #[test]
    fn noisy_points_fit_closely_and_a_rate_beyond_the_peak_is_unreachable() {
        let ns: Vec<f64> = [1, 2, 4, 8, 12, 16, 24, 32, 48].map(f64::from).to_vec();
        let noise = [0.02, -0.015, 0.01, -0.02, 0.005, 0.015, -0.01, 0.0, -0.005];
        let fit = fit_usl(&points(200.0, 0.03, 0.0005, &ns, &noise)).unwrap();
        assert!(fit.r_squared > 0.99, "{fit:?}");
        assert!((fit.lambda - 200.0).abs() < 10.0, "{fit:?}");
        assert!((fit.sigma - 0.03).abs() < 0.01, "{fit:?}");
        assert!((fit.kappa - 0.0005).abs() < 0.0002, "{fit:?}");
        let n = fit.concurrency_for(2000.0).unwrap();
        assert!(fit.throughput(n) >= 2000.0 - 1e-6 && fit.throughput(n - 0.01) < 2000.0);
        assert_eq!(fit.concurrency_for(fit.peak_throughput * 1.01), None);
    }

    /// The same least squares as scipy 1.17.1's `curve_fit` (trust region
    /// reflective, bounds at 0, tolerances 1e-15) on two data sets: the
    /// noisy one above, and one whose best contention is at its bound, 0.
    /// (`curve_fit(usl, n, x, bounds=([0, 0, 0], [inf] * 3))`.)
    #[test]
    fn fits_agree_with_scipy() {
        let ns: Vec<f64> = [1, 2, 4, 8, 12, 16, 24, 32, 48].map(f64::from).to_vec();
        let noise = [0.02, -0.015, 0.01, -0.02, 0.005, 0.015, -0.01, 0.0, -0.005];
        let fit = fit_usl(&points(200.0, 0.03, 0.0005, &ns, &noise)).unwrap();
        let close = |got: f64, want: f64, what: &str| {
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1e-12),
                "{what}: {got} vs scipy's {want}"
            );
        };
        close(fit.lambda, 199.23325542976085, "lambda");
        close(fit.sigma, 0.029178541819312776, "sigma");
        close(fit.kappa, 0.0005202003373163262, "kappa");
        close(fit.r_squared, 0.9996938975665184, "r squared");
        let p = |n: f64, x: f64| Observation {
            concurrency: n,
            throughput: x,
        };
        let fit = fit_usl(&[
            p(1.0, 100.0),
            p(2.0, 199.0),
            p(3.0, 290.0),
            p(4.0, 370.0),
            p(6.0, 480.0),
            p(8.0, 530.0),
        ])
        .unwrap();
        close(fit.lambda, 102.71536849501481, "lambda");
        assert!(fit.sigma < 1e-9, "sigma {}", fit.sigma);
        close(fit.kappa, 0.00972708485068673, "kappa");
    }

    #[test]
    fn too_little_or_bad_data_is_refused() {
        let p = |n, x| Observation {
            concurrency: n,
            throughput: x,
        };
        assert_eq!(
            fit_usl(&[p(1.0, 10.0), p(2.0, 19.0), p(2.0, 18.0)]),
            Err(CapacityError::TooFewPoints(2))
        );
        assert!(matches!(
            fit_usl(&[p(1.0, 10.0), p(0.0, 19.0), p(3.0, 18.0)]),
            Err(CapacityError::BadPoint { index: 2, .. })
        ));
        assert!(matches!(
            fit_usl(&[p(1.0, f64::NAN), p(2.0, 19.0), p(3.0, 18.0)]),
            Err(CapacityError::BadPoint { index: 1, .. })
        ));
        assert_eq!(
            fit_usl(&[p(1.0, 0.0), p(2.0, 0.0), p(3.0, 0.0)]),
            Err(CapacityError::NoThroughput)
        );
    }
}
