//! The `train` and `evaluate` commands.

use std::path::{Path, PathBuf};

use crate::cli::{FlagSpec, Flags};
use crate::data::{Dataset, stratified_split};
use crate::error::{Error, Result};
use crate::model::{Hyperparameters, MODEL_FORMAT, Model, Scaler, TrainingInfo, fit_softmax};
use crate::scoring::{self, ConfusionMatrix, Metrics};
use crate::{fsutil, hash};

/// Default seed of the train/test split.
pub const DEFAULT_SEED: u64 = 42;
/// Default fraction of each class held out for testing.
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

/// Options of `iris train`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Input CSV.
    pub data: PathBuf,
    /// Output model file.
    pub model: PathBuf,
    /// Output metrics file.
    pub metrics: PathBuf,
    /// Split seed.
    pub seed: u64,
    /// Held-out fraction per class.
    pub test_fraction: f64,
    /// Gradient-descent settings.
    pub hyperparameters: Hyperparameters,
}

impl TrainOptions {
    const FLAGS: &[FlagSpec] = &[
        FlagSpec::value("data"),
        FlagSpec::value("model"),
        FlagSpec::value("metrics"),
        FlagSpec::value("seed"),
        FlagSpec::value("epochs"),
        FlagSpec::value("learning-rate"),
        FlagSpec::value("l2"),
        FlagSpec::value("test-fraction"),
    ];

    /// Parses the flags of `iris train`.
    pub fn from_args(args: &[String]) -> Result<Self> {
        let flags = Flags::parse("train", Self::FLAGS, args)?;
        let defaults = Hyperparameters::default();
        let options = Self {
            data: flags.required_path("data")?,
            model: flags.required_path("model")?,
            metrics: flags.required_path("metrics")?,
            seed: flags.parse_or("seed", DEFAULT_SEED)?,
            test_fraction: flags.parse_or("test-fraction", DEFAULT_TEST_FRACTION)?,
            hyperparameters: Hyperparameters {
                epochs: flags.parse_or("epochs", defaults.epochs)?,
                learning_rate: flags.parse_or("learning-rate", defaults.learning_rate)?,
                l2: flags.parse_or("l2", defaults.l2)?,
            },
        };
        options
            .hyperparameters
            .validate()
            .map_err(|err| flags.error(err))?;
        if !(options.test_fraction > 0.0 && options.test_fraction < 1.0) {
            return Err(flags.error(format!(
                "--test-fraction must be between 0 and 1 (exclusive), got {}",
                options.test_fraction
            )));
        }
        Ok(options)
    }
}

/// Class indices of `labels` in `classes`, or an error naming the unknown label.
fn class_indices(labels: &[&String], classes: &[String], source: &Path) -> Result<Vec<usize>> {
    labels
        .iter()
        .map(|label| {
            classes.iter().position(|c| c == *label).ok_or_else(|| {
                Error::new(format!(
                    "{}: label '{label}' is not one of the model's classes ({})",
                    source.display(),
                    classes.join(", ")
                ))
            })
        })
        .collect()
}

/// Trains a model on `data` (read from `data_file`, whose bytes are `data_bytes`).
pub fn train_model(
    data: &Dataset,
    data_file: &Path,
    data_bytes: &[u8],
    options: &TrainOptions,
) -> Result<(Model, Metrics)> {
    let classes = data.classes();
    if classes.len() < 2 {
        return Err(Error::new(format!(
            "{}: need at least 2 classes to train, found {}",
            data_file.display(),
            classes.len()
        )));
    }
    let split = stratified_split(&data.labels, options.test_fraction, options.seed)
        .map_err(|err| err.context(data_file.display()))?;

    let train_rows: Vec<&[f64]> = split
        .train
        .iter()
        .map(|&i| data.features[i].as_slice())
        .collect();
    let scaler = Scaler::fit(&train_rows);
    let x: Vec<Vec<f64>> = train_rows.iter().map(|row| scaler.transform(row)).collect();
    let train_labels: Vec<&String> = split.train.iter().map(|&i| &data.labels[i]).collect();
    let y = class_indices(&train_labels, &classes, data_file)?;
    let fitted = fit_softmax(&x, &y, classes.len(), &options.hyperparameters);

    let hp = options.hyperparameters;
    let model = Model {
        format: MODEL_FORMAT.to_owned(),
        feature_names: data.feature_names.clone(),
        classes,
        scaler,
        weights: fitted.weights,
        bias: fitted.bias,
        training: TrainingInfo {
            algorithm: "softmax-regression/full-batch-gd".to_owned(),
            seed: options.seed,
            test_fraction: options.test_fraction,
            epochs: hp.epochs,
            learning_rate: hp.learning_rate,
            l2: hp.l2,
            final_loss: fitted.final_loss,
            n_train: split.train.len(),
            n_test: split.test.len(),
            data_file: data_file.display().to_string(),
            data_fnv1a64: hash::fnv1a64_hex(data_bytes),
        },
    };

    let (test_truth, test_probs) = score_rows(&model, data, &split.test, data_file)?;
    let (train_truth, train_probs) = score_rows(&model, data, &split.train, data_file)?;
    let test_pred: Vec<usize> = test_probs.iter().map(|p| crate::model::argmax(p)).collect();
    let train_pred: Vec<usize> = train_probs
        .iter()
        .map(|p| crate::model::argmax(p))
        .collect();
    let matrix = scoring::confusion(&test_truth, &test_pred, model.classes.len());
    let (per_class, f1_macro) = scoring::per_class(&matrix, &model.classes);
    let metrics = Metrics {
        accuracy: scoring::round6(scoring::accuracy(&test_truth, &test_pred)),
        train_accuracy: scoring::round6(scoring::accuracy(&train_truth, &train_pred)),
        log_loss: scoring::round6(scoring::log_loss(&test_truth, &test_probs)),
        f1_macro,
        per_class,
        n_train: split.train.len(),
        n_test: split.test.len(),
        confusion_matrix: ConfusionMatrix {
            labels: model.classes.clone(),
            matrix,
        },
    };
    Ok((model, metrics))
}

/// True class indices and predicted probabilities for the given rows.
fn score_rows(
    model: &Model,
    data: &Dataset,
    rows: &[usize],
    source: &Path,
) -> Result<(Vec<usize>, Vec<Vec<f64>>)> {
    let labels: Vec<&String> = rows.iter().map(|&i| &data.labels[i]).collect();
    let truth = class_indices(&labels, &model.classes, source)?;
    let probs = rows
        .iter()
        .map(|&i| model.predict_proba(&data.features[i]))
        .collect();
    Ok((truth, probs))
}

/// Runs `iris train`.
pub fn run_train(args: &[String]) -> Result<()> {
    let options = TrainOptions::from_args(args)?;
    let (data, bytes) = Dataset::load(&options.data)?;
    let (model, metrics) = train_model(&data, &options.data, &bytes, &options)?;

    let model_json = model.to_json();
    fsutil::write_atomic(&options.model, model_json.as_bytes(), "model file")?;
    let mut metrics_json = serde_json::to_string_pretty(&metrics).unwrap_or_default();
    metrics_json.push('\n');
    fsutil::write_atomic(&options.metrics, metrics_json.as_bytes(), "metrics file")?;

    println!(
        "train: {} rows ({} train / {} test), {} epochs, final loss {:.4}",
        data.len(),
        metrics.n_train,
        metrics.n_test,
        model.training.epochs,
        model.training.final_loss
    );
    println!(
        "train: test accuracy {:.4}, train accuracy {:.4}, log loss {:.4}, f1 macro {:.4}",
        metrics.accuracy, metrics.train_accuracy, metrics.log_loss, metrics.f1_macro
    );
    println!(
        "train: wrote {} (version {}) and {}",
        options.model.display(),
        hash::model_version(model_json.as_bytes()),
        options.metrics.display()
    );
    Ok(())
}

/// Options of `iris evaluate`.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// Model to evaluate.
    pub model: PathBuf,
    /// CSV the model was trained on.
    pub data: PathBuf,
    /// Accuracy gate.
    pub min_accuracy: f64,
    /// Optional metrics.json whose recorded accuracy must match.
    pub metrics: Option<PathBuf>,
}

impl EvaluateOptions {
    const FLAGS: &[FlagSpec] = &[
        FlagSpec::value("model"),
        FlagSpec::value("data"),
        FlagSpec::value("min-accuracy"),
        FlagSpec::value("metrics"),
    ];

    /// Parses the flags of `iris evaluate`.
    pub fn from_args(args: &[String]) -> Result<Self> {
        let flags = Flags::parse("evaluate", Self::FLAGS, args)?;
        let min_accuracy: f64 = flags
            .parse_opt("min-accuracy")?
            .ok_or_else(|| flags.error("--min-accuracy is required"))?;
        if !(0.0..=1.0).contains(&min_accuracy) {
            return Err(flags.error(format!(
                "--min-accuracy must be between 0 and 1, got {min_accuracy}"
            )));
        }
        Ok(Self {
            model: flags.required_path("model")?,
            data: flags.required_path("data")?,
            min_accuracy,
            metrics: flags.path("metrics"),
        })
    }
}

/// Runs `iris evaluate`.
pub fn run_evaluate(args: &[String]) -> Result<()> {
    let options = EvaluateOptions::from_args(args)?;
    let (model, _) = Model::load(&options.model)?;
    let (data, bytes) = Dataset::load(&options.data)?;
    if data.feature_names != model.feature_names {
        return Err(Error::new(format!(
            "{}: columns ({}) do not match the model's features ({})",
            options.data.display(),
            data.feature_names.join(", "),
            model.feature_names.join(", ")
        )));
    }
    if hash::fnv1a64_hex(&bytes) != model.training.data_fnv1a64 {
        eprintln!(
            "evaluate: warning: {} differs from the data the model was trained on ({}); the held-out rows may overlap the training rows",
            options.data.display(),
            model.training.data_file
        );
    }

    let split = stratified_split(
        &data.labels,
        model.training.test_fraction,
        model.training.seed,
    )
    .map_err(|err| err.context(options.data.display()))?;
    let (truth, probs) = score_rows(&model, &data, &split.test, &options.data)?;
    let predicted: Vec<usize> = probs.iter().map(|p| crate::model::argmax(p)).collect();
    let accuracy = scoring::accuracy(&truth, &predicted);

    if let Some(path) = &options.metrics {
        let recorded: Metrics = serde_json::from_slice(&fsutil::read_bytes(path, "metrics file")?)
            .map_err(|err| {
                Error::new(format!(
                    "cannot parse metrics file {}: {err}",
                    path.display()
                ))
            })?;
        // metrics.json stores accuracy rounded to 6 decimals.
        if (recorded.accuracy - accuracy).abs() > 1e-6 {
            return Err(Error::new(format!(
                "{} records accuracy {:.4} but the model scores {accuracy:.4}; the metrics are stale, retrain",
                path.display(),
                recorded.accuracy
            )));
        }
    }

    let hits = truth.iter().zip(&predicted).filter(|(t, p)| t == p).count();
    if accuracy < options.min_accuracy {
        return Err(Error::new(format!(
            "evaluate: accuracy {accuracy:.4} ({hits}/{} held-out rows) is below --min-accuracy {}",
            truth.len(),
            options.min_accuracy
        )));
    }
    println!(
        "evaluate: accuracy {accuracy:.4} ({hits}/{} held-out rows, seed {}) >= {}: ok",
        truth.len(),
        model.training.seed,
        options.min_accuracy
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IRIS: &str = include_str!("../data/iris.csv");

    fn options() -> TrainOptions {
        TrainOptions {
            data: PathBuf::from("data/iris.csv"),
            model: PathBuf::from("model.json"),
            metrics: PathBuf::from("metrics.json"),
            seed: DEFAULT_SEED,
            test_fraction: DEFAULT_TEST_FRACTION,
            hyperparameters: Hyperparameters::default(),
        }
    }

    fn train(options: &TrainOptions) -> (Model, Metrics) {
        let data = Dataset::parse_csv(IRIS, "iris.csv").unwrap();
        train_model(&data, &options.data, IRIS.as_bytes(), options).unwrap()
    }

    #[test]
    fn training_is_accurate() {
        let (model, metrics) = train(&options());
        assert!(
            metrics.accuracy >= 0.9,
            "test accuracy {}",
            metrics.accuracy
        );
        assert!(
            metrics.train_accuracy >= 0.9,
            "train accuracy {}",
            metrics.train_accuracy
        );
        assert_eq!((metrics.n_train, metrics.n_test), (120, 30));
        assert_eq!(model.classes, ["setosa", "versicolor", "virginica"]);
        let total: u64 = metrics.confusion_matrix.matrix.iter().flatten().sum();
        assert_eq!(total, 30);
        // A textbook setosa and virginica are classified correctly.
        assert_eq!(model.predict(&[5.1, 3.5, 1.4, 0.2]), 0);
        assert_eq!(model.predict(&[6.3, 3.3, 6.0, 2.5]), 2);
    }

    #[test]
    fn training_is_deterministic() {
        let (model_a, metrics_a) = train(&options());
        let (model_b, metrics_b) = train(&options());
        assert_eq!(model_a.to_json(), model_b.to_json());
        assert_eq!(
            serde_json::to_string(&metrics_a).unwrap(),
            serde_json::to_string(&metrics_b).unwrap()
        );
        let other = train(&TrainOptions {
            seed: 7,
            ..options()
        })
        .0;
        assert_ne!(model_a.to_json(), other.to_json());
    }

    #[test]
    fn model_json_round_trips() {
        let (model, _) = train(&options());
        let json = model.to_json();
        let back = Model::from_json(json.as_bytes(), "model.json").unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn train_flags_are_validated() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let base = [
            "--data",
            "d.csv",
            "--model",
            "m.json",
            "--metrics",
            "x.json",
        ];
        let ok = TrainOptions::from_args(&args(&base)).unwrap();
        assert_eq!(ok.seed, DEFAULT_SEED);
        let mut bad = base.to_vec();
        bad.extend(["--epochs", "0"]);
        let err = TrainOptions::from_args(&args(&bad)).unwrap_err();
        assert!(
            err.message().contains("--epochs must be between"),
            "{}",
            err.message()
        );
        let err = TrainOptions::from_args(&args(&base[..4])).unwrap_err();
        assert!(err.message().contains("--metrics is required"));
    }
}
