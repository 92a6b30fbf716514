//! `iris version`: content-addressed model version and release record.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::{FlagSpec, Flags};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::{fsutil, hash};

/// Options of `iris version`.
#[derive(Debug, Clone)]
pub struct VersionOptions {
    /// Model file to version.
    pub model: PathBuf,
    /// Metrics written by `iris train`.
    pub metrics: PathBuf,
    /// Where to write the release record.
    pub out: PathBuf,
}

impl VersionOptions {
    const FLAGS: &[FlagSpec] = &[
        FlagSpec::value("model"),
        FlagSpec::value("metrics"),
        FlagSpec::value("out"),
    ];

    /// Parses the flags of `iris version`.
    pub fn from_args(args: &[String]) -> Result<Self> {
        let flags = Flags::parse("version", Self::FLAGS, args)?;
        Ok(Self {
            model: flags.required_path("model")?,
            metrics: flags.required_path("metrics")?,
            out: flags.required_path("out")?,
        })
    }
}

/// Input files of a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedFrom {
    /// Model file name.
    pub model: String,
    /// Metrics file name.
    pub metrics: String,
}

/// The release record written to `--out`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// Model version (prefix of the content hash, as served by `iris serve`).
    pub version: String,
    /// Full content hash of model.json, `fnv1a64:<hex>`.
    pub model_hash: String,
    /// Test accuracy from the metrics file.
    pub accuracy: f64,
    /// Where the release came from.
    pub created_from: CreatedFrom,
}

/// Builds the release record from the model bytes and the metrics file contents.
pub fn release(
    model_path: &Path,
    model_bytes: &[u8],
    metrics_path: &Path,
    metrics_bytes: &[u8],
) -> Result<Release> {
    Model::from_json(model_bytes, &model_path.display().to_string())?;
    let metrics: serde_json::Value = serde_json::from_slice(metrics_bytes).map_err(|err| {
        Error::new(format!(
            "cannot parse metrics file {}: {err}",
            metrics_path.display()
        ))
    })?;
    let accuracy = metrics
        .get("accuracy")
        .and_then(serde_json::Value::as_f64)
        .filter(|a| (0.0..=1.0).contains(a))
        .ok_or_else(|| {
            Error::new(format!(
                "metrics file {} has no \"accuracy\" between 0 and 1",
                metrics_path.display()
            ))
        })?;
    Ok(Release {
        version: hash::model_version(model_bytes),
        model_hash: format!("fnv1a64:{}", hash::fnv1a64_hex(model_bytes)),
        accuracy,
        created_from: CreatedFrom {
            model: model_path.display().to_string(),
            metrics: metrics_path.display().to_string(),
        },
    })
}

/// Runs `iris version`.
pub fn run(args: &[String]) -> Result<()> {
    let options = VersionOptions::from_args(args)?;
    let model_bytes = fsutil::read_bytes(&options.model, "model file")?;
    let metrics_bytes = fsutil::read_bytes(&options.metrics, "metrics file")?;
    let record = release(
        &options.model,
        &model_bytes,
        &options.metrics,
        &metrics_bytes,
    )?;
    let mut text = serde_json::to_string_pretty(&record).unwrap_or_default();
    text.push('\n');
    fsutil::write_atomic(&options.out, text.as_bytes(), "release record")?;
    println!(
        "version: model {} is version {} (accuracy {:.4}); wrote {}",
        options.model.display(),
        record.version,
        record.accuracy,
        options.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::model::Hyperparameters;
    use crate::train::{self, TrainOptions};

    fn trained_model_json() -> String {
        let text = include_str!("../data/iris.csv");
        let data = Dataset::parse_csv(text, "iris.csv").unwrap();
        let options = TrainOptions {
            data: PathBuf::from("data/iris.csv"),
            model: PathBuf::from("model.json"),
            metrics: PathBuf::from("metrics.json"),
            seed: train::DEFAULT_SEED,
            test_fraction: train::DEFAULT_TEST_FRACTION,
            hyperparameters: Hyperparameters {
                epochs: 50,
                ..Hyperparameters::default()
            },
        };
        let (model, _) =
            train::train_model(&data, &options.data, text.as_bytes(), &options).unwrap();
        model.to_json()
    }

    #[test]
    fn release_record_names_version_and_accuracy() {
        let model = trained_model_json();
        let record = release(
            Path::new("model.json"),
            model.as_bytes(),
            Path::new("metrics.json"),
            br#"{"accuracy": 0.966667}"#,
        )
        .unwrap();
        assert_eq!(record.version, hash::model_version(model.as_bytes()));
        assert_eq!(record.version.len(), hash::VERSION_LEN);
        assert!(
            record
                .model_hash
                .starts_with(&format!("fnv1a64:{}", record.version))
        );
        assert_eq!(record.accuracy, 0.966667);
        assert_eq!(record.created_from.metrics, "metrics.json");
    }

    #[test]
    fn release_rejects_bad_inputs() {
        let model = trained_model_json();
        let err = release(Path::new("m.json"), b"{}", Path::new("x.json"), b"{}").unwrap_err();
        assert!(err.message().starts_with("cannot parse model file m.json"));
        let err = release(
            Path::new("m.json"),
            model.as_bytes(),
            Path::new("x.json"),
            b"{}",
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "metrics file x.json has no \"accuracy\" between 0 and 1"
        );
        let err = release(
            Path::new("m.json"),
            model.as_bytes(),
            Path::new("x.json"),
            b"{",
        )
        .unwrap_err();
        assert!(
            err.message()
                .starts_with("cannot parse metrics file x.json")
        );
    }
}
