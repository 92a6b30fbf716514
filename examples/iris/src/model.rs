//! The model: feature standardization plus multinomial logistic regression
//! (softmax), trained by full-batch gradient descent with L2 regularization.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;

/// Identifies the JSON layout of [`Model`]; bumped on incompatible changes.
pub const MODEL_FORMAT: &str = "iris-softmax/v1";

/// Per-feature standardization: `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    /// Mean of each feature over the training rows.
    pub mean: Vec<f64>,
    /// Population standard deviation of each feature (1.0 for constant features).
    pub std: Vec<f64>,
}

impl Scaler {
    /// Fits the scaler on `rows`, which must be non-empty and of equal width.
    pub fn fit(rows: &[&[f64]]) -> Self {
        let width = rows.first().map_or(0, |row| row.len());
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0.0; width];
        for row in rows {
            for (m, x) in mean.iter_mut().zip(row.iter()) {
                *m += x;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; width];
        for row in rows {
            for ((v, x), m) in var.iter_mut().zip(row.iter()).zip(&mean) {
                *v += (x - m) * (x - m);
            }
        }
        let std = var
            .iter()
            .map(|v| {
                let s = (v / n).sqrt();
                round_parameter(if s > 1e-12 { s } else { 1.0 })
            })
            .collect();
        let mean = mean.into_iter().map(round_parameter).collect();
        Self { mean, std }
    }

    /// Standardizes one row.
    pub fn transform(&self, row: &[f64]) -> Vec<f64> {
        row.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(x, (m, s))| (x - m) / s)
            .collect()
    }
}

/// Rounds to 15 significant digits.
///
/// serde_json's default float parser can be off by one unit in the last place
/// for 17-digit numbers, but parses numbers with at most 15 significant digits
/// exactly. Model parameters are rounded with this function, so a model read
/// back from model.json is bit-for-bit the model that was trained and scored.
pub fn round_parameter(value: f64) -> f64 {
    format!("{value:.14e}").parse().unwrap_or(value)
}

/// Gradient-descent settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyperparameters {
    /// Number of full-batch gradient steps.
    pub epochs: u32,
    /// Step size.
    pub learning_rate: f64,
    /// L2 penalty on the weights (not the bias).
    pub l2: f64,
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Self {
            epochs: 2000,
            learning_rate: 0.5,
            l2: 1e-3,
        }
    }
}

impl Hyperparameters {
    /// Checks that the settings make sense, naming the offending flag.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.epochs > 1_000_000 {
            return Err(Error::usage(format!(
                "--epochs must be between 1 and 1000000, got {}",
                self.epochs
            )));
        }
        if !(self.learning_rate.is_finite()
            && self.learning_rate > 0.0
            && self.learning_rate <= 10.0)
        {
            return Err(Error::usage(format!(
                "--learning-rate must be a number in (0, 10], got {}",
                self.learning_rate
            )));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(Error::usage(format!(
                "--l2 must be a non-negative number, got {}",
                self.l2
            )));
        }
        Ok(())
    }
}

/// How the model was trained; stored so that evaluation can rebuild the split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// Always `"softmax-regression/full-batch-gd"`.
    pub algorithm: String,
    /// Seed of the stratified split.
    pub seed: u64,
    /// Fraction of each class held out for testing.
    pub test_fraction: f64,
    /// Gradient steps.
    pub epochs: u32,
    /// Step size.
    pub learning_rate: f64,
    /// L2 penalty.
    pub l2: f64,
    /// Regularized cross-entropy on the training rows after the last step.
    pub final_loss: f64,
    /// Training rows.
    pub n_train: usize,
    /// Held-out rows.
    pub n_test: usize,
    /// File name of the training data (as given on the command line).
    pub data_file: String,
    /// FNV-1a 64 hash of the training data file, to detect a changed file.
    pub data_fnv1a64: String,
}

/// A trained softmax classifier, serialized as model.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Layout identifier, [`MODEL_FORMAT`].
    pub format: String,
    /// Input feature names, in the order the model expects them.
    pub feature_names: Vec<String>,
    /// Output class names; index `k` matches row `k` of `weights`.
    pub classes: Vec<String>,
    /// Standardization applied before the linear layer.
    pub scaler: Scaler,
    /// `classes x features` weights on standardized features.
    pub weights: Vec<Vec<f64>>,
    /// One bias per class.
    pub bias: Vec<f64>,
    /// Provenance and training settings.
    pub training: TrainingInfo,
}

/// Result of [`fit_softmax`].
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// `classes x features` weights.
    pub weights: Vec<Vec<f64>>,
    /// One bias per class.
    pub bias: Vec<f64>,
    /// Regularized training loss after the last step.
    pub final_loss: f64,
}

/// Numerically stable softmax of `logits` (in place).
pub fn softmax(logits: &mut [f64]) {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for z in logits.iter_mut() {
        *z = (*z - max).exp();
        total += *z;
    }
    for z in logits.iter_mut() {
        *z /= total;
    }
}

fn logits(weights: &[Vec<f64>], bias: &[f64], x: &[f64]) -> Vec<f64> {
    weights
        .iter()
        .zip(bias)
        .map(|(w, b)| b + w.iter().zip(x).map(|(wi, xi)| wi * xi).sum::<f64>())
        .collect()
}

/// Trains softmax regression on already standardized rows `x` with class
/// indices `y` in `0..n_classes`. Weights start at zero, so the result only
/// depends on the inputs: training is fully deterministic.
pub fn fit_softmax(x: &[Vec<f64>], y: &[usize], n_classes: usize, hp: &Hyperparameters) -> Fitted {
    let n_features = x.first().map_or(0, Vec::len);
    let n = x.len().max(1) as f64;
    let mut weights = vec![vec![0.0; n_features]; n_classes];
    let mut bias = vec![0.0; n_classes];
    let mut final_loss = 0.0;

    for _ in 0..hp.epochs {
        let mut grad_w = vec![vec![0.0; n_features]; n_classes];
        let mut grad_b = vec![0.0; n_classes];
        let mut loss = 0.0;
        for (row, &label) in x.iter().zip(y) {
            let mut p = logits(&weights, &bias, row);
            softmax(&mut p);
            loss -= p[label].max(1e-15).ln();
            for (k, pk) in p.iter().enumerate() {
                let err = pk - if k == label { 1.0 } else { 0.0 };
                grad_b[k] += err;
                for (g, xi) in grad_w[k].iter_mut().zip(row) {
                    *g += err * xi;
                }
            }
        }
        let penalty: f64 = weights.iter().flatten().map(|w| w * w).sum();
        final_loss = loss / n + 0.5 * hp.l2 * penalty;
        for k in 0..n_classes {
            for (w, g) in weights[k].iter_mut().zip(&grad_w[k]) {
                *w -= hp.learning_rate * (g / n + hp.l2 * *w);
            }
            bias[k] -= hp.learning_rate * grad_b[k] / n;
        }
    }
    let round_all =
        |values: &mut Vec<f64>| values.iter_mut().for_each(|v| *v = round_parameter(*v));
    weights.iter_mut().for_each(round_all);
    round_all(&mut bias);
    Fitted {
        weights,
        bias,
        final_loss: round_parameter(final_loss),
    }
}

impl Model {
    /// Class probabilities for one raw (unstandardized) feature row.
    pub fn predict_proba(&self, row: &[f64]) -> Vec<f64> {
        let x = self.scaler.transform(row);
        let mut p = logits(&self.weights, &self.bias, &x);
        softmax(&mut p);
        p
    }

    /// Index of the most likely class (ties go to the lower index).
    pub fn predict(&self, row: &[f64]) -> usize {
        argmax(&self.predict_proba(row))
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Pretty JSON with a trailing newline; byte-identical for identical models.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parses and validates model JSON; `source` names it in error messages.
    pub fn from_json(bytes: &[u8], source: &str) -> Result<Self> {
        let model: Self = serde_json::from_slice(bytes)
            .map_err(|err| Error::new(format!("cannot parse model file {source}: {err}")))?;
        model
            .validate()
            .map_err(|err| err.context(format!("invalid model file {source}")))?;
        Ok(model)
    }

    /// Reads a model file, returning the model and the raw bytes (for hashing).
    pub fn load(path: &Path) -> Result<(Self, Vec<u8>)> {
        let bytes = fsutil::read_bytes(path, "model file")?;
        let model = Self::from_json(&bytes, &path.display().to_string())?;
        Ok((model, bytes))
    }

    fn validate(&self) -> Result<()> {
        let k = self.classes.len();
        let f = self.feature_names.len();
        let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(Error::new(what)) };
        check(
            self.format == MODEL_FORMAT,
            format!("format is '{}', expected '{MODEL_FORMAT}'", self.format),
        )?;
        check(k >= 2, format!("needs at least 2 classes, found {k}"))?;
        check(f >= 1, "needs at least 1 feature".to_owned())?;
        check(
            self.weights.len() == k,
            format!("weights has {} rows for {k} classes", self.weights.len()),
        )?;
        for (i, row) in self.weights.iter().enumerate() {
            check(
                row.len() == f,
                format!("weights row {i} has {} values for {f} features", row.len()),
            )?;
        }
        check(
            self.bias.len() == k,
            format!("bias has {} values for {k} classes", self.bias.len()),
        )?;
        check(
            self.scaler.mean.len() == f,
            format!(
                "scaler.mean has {} values for {f} features",
                self.scaler.mean.len()
            ),
        )?;
        check(
            self.scaler.std.len() == f,
            format!(
                "scaler.std has {} values for {f} features",
                self.scaler.std.len()
            ),
        )?;
        check(
            self.scaler.std.iter().all(|s| *s > 0.0),
            "scaler.std values must be positive".to_owned(),
        )?;
        let all_finite = self
            .weights
            .iter()
            .flatten()
            .chain(&self.bias)
            .chain(&self.scaler.mean)
            .chain(&self.scaler.std)
            .all(|v| v.is_finite());
        check(all_finite, "parameters must be finite numbers".to_owned())
    }
}

/// Index of the largest value (first one on ties; 0 for an empty slice).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_is_stable() {
        let mut p = vec![1000.0, 1001.0, 999.0];
        softmax(&mut p);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(argmax(&p), 1);
    }

    #[test]
    fn rounded_parameters_survive_json() {
        for value in [
            0.1 + 0.2,
            -1.5975266665360923,
            1.0 / 3.0,
            4.402809322938585e-7,
            12345.678901234567,
        ] {
            let rounded = round_parameter(value);
            assert!((rounded - value).abs() <= value.abs() * 1e-14);
            let json = serde_json::to_string(&rounded).unwrap();
            assert_eq!(
                serde_json::from_str::<f64>(&json).unwrap().to_bits(),
                rounded.to_bits(),
                "{json}"
            );
        }
    }

    #[test]
    fn scaler_standardizes() {
        let rows: Vec<&[f64]> = vec![&[1.0, 5.0], &[3.0, 5.0]];
        let scaler = Scaler::fit(&rows);
        assert_eq!(scaler.mean, [2.0, 5.0]);
        assert_eq!(scaler.std, [1.0, 1.0]); // constant column falls back to 1
        assert_eq!(scaler.transform(&[3.0, 5.0]), [1.0, 0.0]);
    }

    #[test]
    fn hyperparameters_are_validated() {
        let bad = Hyperparameters {
            epochs: 0,
            ..Hyperparameters::default()
        };
        assert!(bad.validate().unwrap_err().message().contains("--epochs"));
        let bad = Hyperparameters {
            learning_rate: f64::NAN,
            ..Hyperparameters::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .message()
                .contains("--learning-rate")
        );
        let bad = Hyperparameters {
            l2: -1.0,
            ..Hyperparameters::default()
        };
        assert!(bad.validate().unwrap_err().message().contains("--l2"));
        assert!(Hyperparameters::default().validate().is_ok());
    }

    #[test]
    fn rejects_inconsistent_model_json() {
        let err = Model::from_json(b"{", "m.json").unwrap_err();
        assert!(
            err.message()
                .starts_with("cannot parse model file m.json: "),
            "{}",
            err.message()
        );
        let err = Model::from_json(b"{\"format\": 1}", "m.json").unwrap_err();
        assert!(
            err.message()
                .starts_with("cannot parse model file m.json: ")
        );
    }
}
