//! The `package` kind: content addressing, versions and lineage, failures,
//! tamper detection and stage changes of what it registers.

use std::path::Path;

use mlops_cd::package::{TamperError, verify_artifact};
use mlops_core::registry::{ModelStage, ModelVersion};
use mlops_core::{Ledger, StepStatus};

const PACKAGE: &str = r#"
[cd.steps.package]
kind = "package"
with = { model = "iris", files = ["model.json", "extra"], metrics = "metrics.json", data = ["data.csv"] }
"#;

fn write(dir: &Path, path: &str, text: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A project with a model file, a directory of extra files, metrics and
/// data.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "model.json", r#"{"weights": [1, 2, 3]}"#);
    write(dir.path(), "extra/vocab.txt", "a\nb\n");
    write(dir.path(), "extra/nested/labels.txt", "setosa\n");
    write(
        dir.path(),
        "metrics.json",
        r#"{"accuracy": 0.95, "eval": {"f1": 0.9}}"#,
    );
    write(dir.path(), "data.csv", "x,y\n1,2\n");
    dir
}

/// Runs the manifest's `package` step and returns (status, reason, evidence).
fn package(dir: &Path, manifest: &str) -> (StepStatus, String, Option<serde_json::Value>) {
    let run = super::run_pipeline(dir, manifest);
    let step = super::cd_step(&run);
    let evidence = step
        .evidence
        .iter()
        .find(|e| e.kind == "package")
        .map(|e| e.body.clone());
    (
        step.status,
        step.reason.clone().unwrap_or_default(),
        evidence,
    )
}

fn ledger(dir: &Path) -> Ledger {
    Ledger::open(dir).unwrap()
}

fn version(dir: &Path, number: i64) -> ModelVersion {
    ledger(dir).model_version("iris", number).unwrap().unwrap()
}

#[test]
fn packaging_the_same_files_twice_finds_the_same_version() {
    let dir = project();
    let (status, reason, first) = package(dir.path(), PACKAGE);
    assert_eq!(status, StepStatus::Passed, "{reason}");
    let first = first.expect("package evidence");
    assert_eq!(first["model"], "iris");
    assert_eq!(first["version"], 1);
    assert_eq!(first["created"], true);
    assert_eq!(first["files"], 3);
    assert_eq!(first["bytes"], 22 + 4 + 7);

    let v = version(dir.path(), 1);
    let paths: Vec<&str> = v.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["extra/nested/labels.txt", "extra/vocab.txt", "model.json"]
    );
    assert_eq!(v.digest, first["digest"]);
    assert_eq!(v.path, format!(".mlops/artifacts/{}", v.digest));
    assert_eq!(
        v.metrics,
        Some(serde_json::json!({"accuracy": 0.95, "eval": {"f1": 0.9}}))
    );
    assert_eq!(v.data_hash.as_ref().map(String::len), Some(64));
    assert_eq!(v.run_id, Some(1));
    assert_eq!(v.step.as_deref(), Some("package"));
    assert_eq!(v.parent, None);
    assert_eq!(v.commit, None, "not a git repository");
    let stored = dir.path().join(&v.path);
    assert_eq!(
        std::fs::read_to_string(stored.join("files/extra/nested/labels.txt")).unwrap(),
        "setosa\n"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stored.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["digest"], v.digest);
    assert_eq!(manifest["files"].as_array().unwrap().len(), 3);

    // The metrics changing alone does not make a new version: the files
    // are the same.
    write(dir.path(), "metrics.json", r#"{"accuracy": 0.5}"#);
    let (status, reason, second) = package(dir.path(), PACKAGE);
    assert_eq!(status, StepStatus::Passed, "{reason}");
    let second = second.unwrap();
    assert_eq!(second["version"], 1);
    assert_eq!(second["created"], false);
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(version(dir.path(), 1), v, "the version is unchanged");
    assert_eq!(ledger(dir.path()).model_versions(None).unwrap().len(), 1);
    // No temporary directories are left behind.
    let leftovers: Vec<String> = std::fs::read_dir(dir.path().join(".mlops/artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, std::slice::from_ref(&v.digest));
}

#[test]
fn a_changed_file_is_a_new_version_whose_parent_is_the_last() {
    let dir = project();
    assert_eq!(package(dir.path(), PACKAGE).0, StepStatus::Passed);
    write(dir.path(), "model.json", r#"{"weights": [1, 2, 4]}"#);
    let (status, reason, evidence) = package(dir.path(), PACKAGE);
    assert_eq!(status, StepStatus::Passed, "{reason}");
    let evidence = evidence.unwrap();
    assert_eq!(
        (evidence["version"].as_i64(), evidence["created"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(evidence["parent"], 1);
    let (v1, v2) = (version(dir.path(), 1), version(dir.path(), 2));
    assert_eq!(v2.parent, Some(1));
    assert_eq!(v2.run_id, Some(2));
    assert_ne!(v1.digest, v2.digest);
    let changed: Vec<&str> = v1
        .files
        .iter()
        .zip(&v2.files)
        .filter(|(a, b)| a.sha256 != b.sha256)
        .map(|(a, _)| a.path.as_str())
        .collect();
    assert_eq!(changed, ["model.json"]);
    // Going back to the first files finds version 1 again.
    write(dir.path(), "model.json", r#"{"weights": [1, 2, 3]}"#);
    let evidence = package(dir.path(), PACKAGE).2.unwrap();
    assert_eq!(evidence["version"], 1);
    assert_eq!(evidence["created"], false);
}

#[test]
fn the_data_hash_follows_the_training_data() {
    let dir = project();
    package(dir.path(), PACKAGE);
    write(dir.path(), "data.csv", "x,y\n1,3\n");
    write(dir.path(), "model.json", r#"{"weights": [0]}"#);
    package(dir.path(), PACKAGE);
    let (v1, v2) = (version(dir.path(), 1), version(dir.path(), 2));
    assert_ne!(v1.data_hash, v2.data_hash);
}

#[test]
fn missing_and_bad_inputs_fail_the_step_with_their_names() {
    let dir = project();
    std::fs::remove_file(dir.path().join("model.json")).unwrap();
    let (status, reason, evidence) = package(dir.path(), PACKAGE);
    assert_eq!(status, StepStatus::Failed);
    assert!(
        reason.starts_with("missing model file `model.json` (no such file or directory in "),
        "{reason}"
    );
    assert_eq!(evidence, None);
    write(dir.path(), "model.json", "{}");

    write(dir.path(), "metrics.json", "{not json");
    let (status, reason, _) = package(dir.path(), PACKAGE);
    assert_eq!(status, StepStatus::Failed);
    assert!(
        reason.starts_with("the metrics file ")
            && reason.contains("metrics.json is not valid JSON: "),
        "{reason}"
    );
    write(dir.path(), "metrics.json", "[0.9]");
    let (status, reason, _) = package(dir.path(), PACKAGE);
    assert_eq!(status, StepStatus::Failed);
    assert!(
        reason.ends_with("metrics.json holds a JSON array, not an object of metrics"),
        "{reason}"
    );
    write(dir.path(), "metrics.json", "{}");

    std::fs::remove_file(dir.path().join("data.csv")).unwrap();
    let (status, reason, _) = package(dir.path(), PACKAGE);
    assert_eq!(status, StepStatus::Failed);
    assert!(
        reason.starts_with("missing data file `data.csv`"),
        "{reason}"
    );
    write(dir.path(), "data.csv", "x\n");

    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let (status, reason, _) = package(
        dir.path(),
        r#"
[cd.steps.package]
kind = "package"
with = { model = "iris", files = ["empty"] }
"#,
    );
    assert_eq!(status, StepStatus::Failed);
    assert_eq!(reason, "model files `empty`: the directory holds no files");
    assert!(ledger(dir.path()).model_versions(None).unwrap().is_empty());
}

#[test]
fn bad_parameters_are_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[project]
name = "p"

[iac.steps.ready]
run = "true"

[ci.steps.check]
run = "true"

[cd.steps.package]
kind = "package"
with = { model = "iris:2", files = ["../model.json", "/abs", "a/../../b", ".mlops/ledger.db"], metrics = ".", data = [""], extra = 1 }
"#;
    std::fs::write(dir.path().join("mlops.toml"), text).unwrap();
    let err = mlops_core::Manifest::load(dir.path(), &super::registry())
        .unwrap_err()
        .to_string();
    // The unknown key stops deserialization first.
    assert!(err.contains("unknown field `extra`"), "{err}");

    std::fs::write(
        dir.path().join("mlops.toml"),
        text.replace(", extra = 1", ""),
    )
    .unwrap();
    let err = mlops_core::Manifest::load(dir.path(), &super::registry())
        .unwrap_err()
        .to_string();
    for want in [
        "`model` is `iris:2`: a model name is a letter followed by letters, digits",
        "`files` entry `../model.json` leaves the step's directory",
        "`files` must be relative to the step's directory, found `/abs`",
        "`files` entry `a/../../b` leaves the step's directory",
        "`files` entry `.mlops/ledger.db` is inside mlops's own state directory",
        "`metrics` names the step's directory, not a JSON file",
        "`data` must not be empty",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }

    std::fs::write(
        dir.path().join("mlops.toml"),
        text.replace(
            r#"with = { model = "iris:2", files"#,
            r#"with = { model = "iris", other-files"#,
        ),
    )
    .unwrap();
    let err = mlops_core::Manifest::load(dir.path(), &super::registry())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `other-files`"), "{err}");

    std::fs::write(
        dir.path().join("mlops.toml"),
        text.replace(
            r#"with = { model = "iris:2", files = ["../model.json", "/abs", "a/../../b", ".mlops/ledger.db"], metrics = ".", data = [""], extra = 1 }"#,
            r#"with = { model = "iris", files = [] }"#,
        ),
    )
    .unwrap();
    let err = mlops_core::Manifest::load(dir.path(), &super::registry())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`files` is empty"), "{err}");
}

#[test]
fn a_tampered_artifact_names_the_file() {
    let dir = project();
    package(dir.path(), PACKAGE);
    let v = version(dir.path(), 1);
    let files = verify_artifact(dir.path(), &v).unwrap();
    assert_eq!(files, dir.path().join(&v.path).join("files"));

    let model = files.join("model.json");
    std::fs::write(&model, r#"{"weights": [6, 6, 6]}"#).unwrap();
    let err = verify_artifact(dir.path(), &v).unwrap_err();
    let expected = &v
        .files
        .iter()
        .find(|f| f.path == "model.json")
        .unwrap()
        .sha256;
    let TamperError::Changed { path, found, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(path, "model.json");
    assert!(
        err.to_string().starts_with(&format!(
            "tampered artifact: files/model.json has sha256 {found}, the registry says {expected}"
        )),
        "{err}"
    );

    std::fs::remove_file(&model).unwrap();
    let err = verify_artifact(dir.path(), &v).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("tampered artifact: files/model.json is missing"),
        "{err}"
    );

    // Packaging again repairs the stored copy.
    let (status, reason, evidence) = package(dir.path(), PACKAGE);
    assert_eq!(status, StepStatus::Passed, "{reason}");
    assert_eq!(evidence.unwrap()["created"], false);
    verify_artifact(dir.path(), &v).unwrap();

    std::fs::write(files.join("extra/backdoor.py"), "import os").unwrap();
    let err = verify_artifact(dir.path(), &v).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "tampered artifact: files/extra/backdoor.py is not one of the registered files"
        ),
        "{err}"
    );

    std::fs::remove_dir_all(dir.path().join(&v.path)).unwrap();
    assert!(matches!(
        verify_artifact(dir.path(), &v),
        Err(TamperError::MissingArtifact { .. })
    ));

    let mut forged = v.clone();
    forged.files[0].sha256 = "0".repeat(64);
    assert!(matches!(
        verify_artifact(dir.path(), &forged),
        Err(TamperError::Record { .. })
    ));
}

#[test]
fn promoting_a_packaged_version_archives_the_one_it_replaces() {
    let dir = project();
    package(dir.path(), PACKAGE);
    write(dir.path(), "model.json", r#"{"weights": [9]}"#);
    package(dir.path(), PACKAGE);
    let l = ledger(dir.path());
    l.set_model_stage("iris", 1, ModelStage::Production, "ci", "first")
        .unwrap();
    l.set_model_stage("iris", 2, ModelStage::Staging, "ci", "candidate")
        .unwrap();
    let t = l
        .set_model_stage("iris", 2, ModelStage::Production, "ana", "better")
        .unwrap();
    assert_eq!(t.archived, Some(1));
    assert_eq!(version(dir.path(), 1).stage, ModelStage::Archived);
    assert_eq!(version(dir.path(), 2).stage, ModelStage::Production);
    let last = l.model_stage_history("iris", 1).unwrap().pop().unwrap();
    assert_eq!(
        (last.stage, last.actor.as_str(), last.reason.as_str()),
        (ModelStage::Archived, "ana", "replaced by iris:2")
    );
    // A version packaged again keeps its stage.
    let evidence = package(dir.path(), PACKAGE).2.unwrap();
    assert_eq!(evidence["version"], 2);
    assert_eq!(version(dir.path(), 2).stage, ModelStage::Production);
}

#[test]
fn the_summary_line_names_the_version() {
    let dir = project();
    let run = super::run_pipeline(dir.path(), PACKAGE);
    let e = &super::cd_step(&run).evidence[0];
    let line = super::registry().summarize(e).unwrap();
    let digest = version(dir.path(), 1).digest;
    assert_eq!(
        line,
        format!("iris:1 (sha256 {}…, 3 files, new)", &digest[..8])
    );
}
