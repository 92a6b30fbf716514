//! Classification metrics: accuracy, log loss, per-class precision/recall/F1
//! and the confusion matrix, as written to metrics.json.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Precision, recall and F1 of one class (one-vs-rest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Correct predictions of this class / all predictions of this class.
    pub precision: f64,
    /// Correct predictions of this class / all rows of this class.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Rows of this class in the test set.
    pub support: u64,
}

/// Counts of (actual, predicted) pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// Class names; they index both the rows and the columns.
    pub labels: Vec<String>,
    /// `matrix[actual][predicted]` counts.
    pub matrix: Vec<Vec<u64>>,
}

/// Everything `iris train` writes to metrics.json. Test-set metrics unless
/// the name says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Accuracy on the held-out rows.
    pub accuracy: f64,
    /// Accuracy on the training rows.
    pub train_accuracy: f64,
    /// Mean cross-entropy on the held-out rows.
    pub log_loss: f64,
    /// Unweighted mean of the per-class F1 scores.
    pub f1_macro: f64,
    /// Per-class scores keyed by class name.
    pub per_class: BTreeMap<String, ClassMetrics>,
    /// Training rows.
    pub n_train: usize,
    /// Held-out rows.
    pub n_test: usize,
    /// Held-out confusion matrix (rows: actual, columns: predicted).
    pub confusion_matrix: ConfusionMatrix,
}

/// Rounds to 6 decimal places. metrics.json stores rounded values: they are
/// easier to read, and short decimals survive a JSON round trip exactly.
pub fn round6(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

/// Fraction of positions where `truth` and `predicted` agree (0 for empty input).
pub fn accuracy(truth: &[usize], predicted: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    let hits = truth.iter().zip(predicted).filter(|(t, p)| t == p).count();
    hits as f64 / truth.len() as f64
}

/// Mean negative log-probability of the true class, with probabilities clipped at 1e-15.
pub fn log_loss(truth: &[usize], probabilities: &[Vec<f64>]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    let total: f64 = truth
        .iter()
        .zip(probabilities)
        .map(|(&t, p)| -p.get(t).copied().unwrap_or(0.0).clamp(1e-15, 1.0).ln())
        .sum();
    total / truth.len() as f64
}

/// The `n_classes x n_classes` confusion matrix.
pub fn confusion(truth: &[usize], predicted: &[usize], n_classes: usize) -> Vec<Vec<u64>> {
    let mut matrix = vec![vec![0u64; n_classes]; n_classes];
    for (&t, &p) in truth.iter().zip(predicted) {
        if t < n_classes && p < n_classes {
            matrix[t][p] += 1;
        }
    }
    matrix
}

/// Per-class scores from a confusion matrix, plus their macro-averaged F1.
pub fn per_class(matrix: &[Vec<u64>], classes: &[String]) -> (BTreeMap<String, ClassMetrics>, f64) {
    let ratio = |num: u64, den: u64| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let mut scores = BTreeMap::new();
    let mut f1_total = 0.0;
    for (k, class) in classes.iter().enumerate() {
        let tp = matrix[k][k];
        let actual: u64 = matrix[k].iter().sum();
        let predicted: u64 = matrix.iter().map(|row| row[k]).sum();
        let precision = ratio(tp, predicted);
        let recall = ratio(tp, actual);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        f1_total += f1;
        scores.insert(
            class.clone(),
            ClassMetrics {
                precision: round6(precision),
                recall: round6(recall),
                f1: round6(f1),
                support: actual,
            },
        );
    }
    let macro_f1 = if classes.is_empty() {
        0.0
    } else {
        f1_total / classes.len() as f64
    };
    (scores, round6(macro_f1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_a_small_example() {
        let truth = [0, 0, 1, 1, 2, 2];
        let pred = [0, 1, 1, 1, 2, 0];
        assert!((accuracy(&truth, &pred) - 4.0 / 6.0).abs() < 1e-12);
        let matrix = confusion(&truth, &pred, 3);
        assert_eq!(matrix, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]);
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        let (scores, f1_macro) = per_class(&matrix, &classes);
        assert_eq!(scores["b"].precision, 0.666667);
        assert_eq!(scores["b"].recall, 1.0);
        assert_eq!(scores["a"].support, 2);
        assert_eq!(f1_macro, 0.655556);
    }

    #[test]
    fn log_loss_clips() {
        let loss = log_loss(&[0, 1], &[vec![1.0, 0.0], vec![1.0, 0.0]]);
        assert!((loss - (-(1e-15f64).ln()) / 2.0).abs() < 1e-9);
    }
}
