//! The population stability index: how far a current sample's distribution
//! has drifted from a reference sample's.

use super::{StatsError, check_sample, sorted};

/// Proportions of zero are replaced by this before taking logarithms.
const EMPTY_BIN_PROPORTION: f64 = 1e-4;

/// The population stability index of `current` against `reference`, over
/// `bins` quantile bins of the reference (the formula of
/// `shared/reference/stats_scipy.json`, `psi.formula`, with `bins` for 10).
///
/// ```text
/// e_k = Q(reference, k / bins), k = 1 … bins-1      (numpy's default linear quantile:
///       with the sorted reference r and v = (n - 1)·q, e = lerp(r[⌊v⌋], r[⌊v⌋+1], v - ⌊v⌋))
/// bin(x) = #{k : e_k ≤ x}                           (bins [e_k, e_{k+1}), outer edges ±∞)
/// p_i = #{x : bin(x) = i} / n for each sample, a zero p_i replaced by 1e-4
/// PSI = Σ_i (p_cur,i - p_ref,i) · ln(p_cur,i / p_ref,i)
/// ```
///
/// PSI is 0 for identical binned distributions; below 0.1 is commonly read as
/// no significant shift, 0.1–0.2 as moderate, above 0.2 as significant.
///
/// # Errors
///
/// An empty sample, a non-finite value, or fewer than 2 bins.
pub fn psi(reference: &[f64], current: &[f64], bins: usize) -> Result<f64, StatsError> {
    const TEST: &str = "psi";
    check_sample(TEST, "reference", reference, 1)?;
    check_sample(TEST, "current", current, 1)?;
    if bins < 2 {
        return Err(StatsError::TooFewBins { bins });
    }
    psi_sorted_reference(&sorted(reference), current, bins)
}

/// [`psi`] with the reference already sorted ascending (the drift check
/// sorts each feature once for all its tests).
///
/// # Errors
///
/// An empty sample, a non-finite value, a reference not sorted, or fewer
/// than 2 bins.
pub fn psi_sorted_reference(
    sorted_reference: &[f64],
    current: &[f64],
    bins: usize,
) -> Result<f64, StatsError> {
    const TEST: &str = "psi";
    check_sample(TEST, "reference", sorted_reference, 1)?;
    check_sample(TEST, "current", current, 1)?;
    if bins < 2 {
        return Err(StatsError::TooFewBins { bins });
    }
    if sorted_reference.windows(2).any(|w| w[0] > w[1]) {
        return Err(StatsError::ConstantInput {
            test: TEST,
            what: "the reference given as sorted is not sorted",
        });
    }
    let reference = sorted_reference;
    let edges: Vec<f64> = (1..bins)
        .map(|k| linear_quantile(sorted_reference, k as f64 / bins as f64))
        .collect();
    let proportions = |sample: &[f64]| {
        let mut counts = vec![0_usize; bins];
        for &x in sample {
            counts[edges.partition_point(|&e| e <= x)] += 1;
        }
        counts
            .into_iter()
            .map(|c| match c {
                0 => EMPTY_BIN_PROPORTION,
                c => c as f64 / sample.len() as f64,
            })
            .collect::<Vec<f64>>()
    };
    let (p_ref, p_cur) = (proportions(reference), proportions(current));
    Ok(p_ref
        .iter()
        .zip(&p_cur)
        .map(|(r, c)| (c - r) * (c / r).ln())
        .sum())
}

/// numpy's default (`linear`, type 7) quantile of a sorted sample, with
/// numpy's two-sided interpolation so that edges match it to the last bit
/// (an edge equal to a data value decides which bin the value lands in).
fn linear_quantile(sorted: &[f64], q: f64) -> f64 {
    let virtual_index = (sorted.len() - 1) as f64 * q;
    let below = virtual_index.floor();
    let i = below as usize;
    if i + 1 >= sorted.len() {
        return sorted[sorted.len() - 1];
    }
    let (a, b) = (sorted[i], sorted[i + 1]);
    let t = virtual_index - below;
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}
