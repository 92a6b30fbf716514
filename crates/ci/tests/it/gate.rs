//! The model gate: thresholds, the baseline from the last passing run, and
//! bad metrics files.

use mlops_core::StepStatus;

fn manifest(with: &str) -> String {
    format!("[project]\nname = \"g\"\n\n[ci.steps.quality]\nkind = \"model-gate\"\nwith = {with}\n")
}

fn write_metrics(dir: &std::path::Path, json: &str) {
    std::fs::write(dir.join("metrics.json"), json).unwrap();
}

/// Runs the gate on `metrics` and returns (status, reason).
fn gate(dir: &std::path::Path, with: &str, metrics: &str) -> (StepStatus, String) {
    write_metrics(dir, metrics);
    let run = super::run_pipeline(dir, &manifest(with));
    let step = super::ci_step(&run);
    assert!(
        step.evidence.iter().any(|e| e.kind == "model-gate") || step.status == StepStatus::Failed,
        "a gate that ran records evidence"
    );
    (step.status, step.reason.clone().unwrap_or_default())
}

const WITH: &str =
    r#"{ metrics = "metrics.json", thresholds = ["accuracy >= 0.9", "eval.rmse <= 3.2"] }"#;

#[test]
fn thresholds_pass_and_fail_with_value_bound_and_baseline_named() {
    let dir = tempfile::tempdir().unwrap();
    let (status, reason) = gate(
        dir.path(),
        WITH,
        r#"{"accuracy": 0.95, "eval": {"rmse": 2.0}}"#,
    );
    assert_eq!(status, StepStatus::Passed, "{reason}");
    let (status, reason) = gate(
        dir.path(),
        WITH,
        r#"{"accuracy": 0.85, "eval": {"rmse": 2.0}}"#,
    );
    assert_eq!(status, StepStatus::Failed);
    assert_eq!(
        reason,
        "model gate failed: accuracy = 0.85 (required >= 0.9; baseline 0.95 from run 1, tolerance 0.0): below the bound and regressed"
    );
}

#[test]
fn a_regression_beyond_the_tolerance_fails_even_above_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let with = r#"{ metrics = "metrics.json", thresholds = ["accuracy >= 0.9", "eval.rmse <= 3.2"], regression = { accuracy = 0.01, "eval.rmse" = "10%" } }"#;
    assert_eq!(
        gate(
            dir.path(),
            with,
            r#"{"accuracy": 0.97, "eval": {"rmse": 2.0}}"#
        )
        .0,
        StepStatus::Passed
    );
    // Within tolerance: 0.965 >= 0.97 - 0.01; rmse 2.1 <= 2.0 * 1.1.
    let (status, reason) = gate(
        dir.path(),
        with,
        r#"{"accuracy": 0.965, "eval": {"rmse": 2.1}}"#,
    );
    assert_eq!(status, StepStatus::Passed, "{reason}");
    // The baseline is now run 2 (the last passing one): 0.95 < 0.965 - 0.01.
    let (status, reason) = gate(
        dir.path(),
        with,
        r#"{"accuracy": 0.95, "eval": {"rmse": 2.5}}"#,
    );
    assert_eq!(status, StepStatus::Failed);
    assert_eq!(
        reason,
        "model gate failed: accuracy = 0.95 (required >= 0.9; baseline 0.965 from run 2, tolerance 0.01): regressed; eval.rmse = 2.5 (required <= 3.2; baseline 2.1 from run 2, tolerance 10.0%): regressed"
    );
    // A failed gate does not become the baseline: run 2 still is.
    let (status, reason) = gate(
        dir.path(),
        with,
        r#"{"accuracy": 0.96, "eval": {"rmse": 2.2}}"#,
    );
    assert_eq!(status, StepStatus::Passed, "{reason}");
}

#[test]
fn baseline_none_checks_thresholds_only() {
    let dir = tempfile::tempdir().unwrap();
    let with =
        r#"{ metrics = "metrics.json", thresholds = ["accuracy >= 0.9"], baseline = "none" }"#;
    assert_eq!(
        gate(dir.path(), with, r#"{"accuracy": 0.99}"#).0,
        StepStatus::Passed
    );
    assert_eq!(
        gate(dir.path(), with, r#"{"accuracy": 0.91}"#).0,
        StepStatus::Passed
    );
}

#[test]
fn bad_metrics_files_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"acc": 0.95, "loss": 0.1}"#,
            "model gate failed: accuracy: missing from metrics.json (it has: acc, loss)",
        ),
        ("{not json", "the metrics file"),
        ("[0.9]", "holds a JSON array, not an object of metrics"),
    ];
    let with = r#"{ metrics = "metrics.json", thresholds = ["accuracy >= 0.9"] }"#;
    for (metrics, want) in cases {
        let (status, reason) = gate(dir.path(), with, metrics);
        assert_eq!(status, StepStatus::Failed);
        assert!(reason.contains(want), "{metrics}: {reason}");
    }
    std::fs::remove_file(dir.path().join("metrics.json")).unwrap();
    let run = super::run_pipeline(dir.path(), &manifest(with));
    let reason = super::ci_step(&run).reason.clone().unwrap();
    assert!(
        reason.starts_with("cannot read the metrics file"),
        "{reason}"
    );
    assert!(reason.contains("metrics.json"), "{reason}");
}

#[test]
fn bad_thresholds_are_diagnostics_with_their_spans() {
    let dir = tempfile::tempdir().unwrap();
    let text = manifest(
        r#"{ metrics = "m.json", thresholds = ["accuracy => 0.9", "rmse <= lots", "f1 >= 0.5"], regression = { loss = 0.1 }, baseline = "best" }"#,
    );
    std::fs::write(
        dir.path().join("mlops.toml"),
        format!("{text}\n[iac.steps.ready]\nrun = \"true\"\n"),
    )
    .unwrap();
    let Err(err) = mlops_core::Manifest::load(dir.path(), &super::registry()) else {
        panic!("the manifest is invalid")
    };
    let err = err
        .to_string()
        .replace(&dir.path().display().to_string(), "PROJECT");
    insta::assert_snapshot!(err);
}

/// Registers a version of `model` with `metrics` and puts it in production.
fn promote(dir: &std::path::Path, model: &str, digest: &str, metrics: Option<serde_json::Value>) {
    use mlops_core::registry::{ModelStage, NewModelVersion};
    let ledger = mlops_core::Ledger::open(dir).unwrap();
    let (v, _) = ledger
        .register_model_version(&NewModelVersion {
            model: model.to_owned(),
            digest: digest.to_owned(),
            path: format!(".mlops/artifacts/{digest}"),
            files: Vec::new(),
            metrics,
            data_hash: None,
            git: Default::default(),
            run_id: Some(1),
            step: Some("package".to_owned()),
        })
        .unwrap();
    ledger
        .set_model_stage(model, v.number, ModelStage::Production, "test", "release")
        .unwrap();
}

fn gate_evidence(
    dir: &std::path::Path,
    with: &str,
    metrics: &str,
) -> (StepStatus, String, serde_json::Value) {
    write_metrics(dir, metrics);
    let run = super::run_pipeline(dir, &manifest(with));
    let step = super::ci_step(&run);
    let body = step
        .evidence
        .iter()
        .find(|e| e.kind == "model-gate")
        .map(|e| e.body.clone())
        .unwrap_or_default();
    (step.status, step.reason.clone().unwrap_or_default(), body)
}

const PRODUCTION: &str = r#"{ metrics = "metrics.json", thresholds = ["accuracy >= 0.9", "eval.rmse <= 3.2"], regression = { accuracy = 0.01 }, baseline = "production", model = "iris" }"#;

#[test]
fn baseline_production_without_a_production_model_checks_thresholds_only() {
    let dir = tempfile::tempdir().unwrap();
    let (status, reason, body) = gate_evidence(
        dir.path(),
        PRODUCTION,
        r#"{"accuracy": 0.99, "eval": {"rmse": 2.0}}"#,
    );
    assert_eq!(status, StepStatus::Passed, "{reason}");
    assert_eq!(body["baseline"], serde_json::Value::Null);
    assert_eq!(body["baseline_note"], "no production model yet");
    // The last passing run is not the baseline: a big drop still passes.
    let (status, reason, body) = gate_evidence(
        dir.path(),
        PRODUCTION,
        r#"{"accuracy": 0.91, "eval": {"rmse": 3.0}}"#,
    );
    assert_eq!(status, StepStatus::Passed, "{reason}");
    assert_eq!(body["baseline_note"], "no production model yet");
    let e = mlops_core::Evidence {
        kind: "model-gate".to_owned(),
        body,
        from_run: None,
    };
    assert_eq!(
        super::registry().summarize(&e).as_deref(),
        Some("2 checks passed, no baseline yet")
    );
}

#[test]
fn baseline_production_compares_with_the_production_version_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // Another model in production is not this gate's baseline.
    promote(
        dir.path(),
        "wine",
        "00000000aa",
        Some(serde_json::json!({"accuracy": 1.0})),
    );
    promote(
        dir.path(),
        "iris",
        "11111111aa",
        Some(serde_json::json!({"accuracy": 0.97, "eval": {"rmse": 2.0}, "notes": "v1"})),
    );
    let (status, reason, body) = gate_evidence(
        dir.path(),
        PRODUCTION,
        r#"{"accuracy": 0.95, "eval": {"rmse": 1.9}}"#,
    );
    assert_eq!(status, StepStatus::Failed);
    assert_eq!(
        reason,
        "model gate failed: accuracy = 0.95 (required >= 0.9; baseline 0.97 from production iris:1, tolerance 0.01): regressed"
    );
    assert_eq!(body["baseline"]["model_version"], "iris:1");
    assert_eq!(body["baseline"]["metrics"]["eval.rmse"], 2.0);
    assert!(body.get("baseline_note").is_none());

    let (status, reason, _) = gate_evidence(
        dir.path(),
        PRODUCTION,
        r#"{"accuracy": 0.965, "eval": {"rmse": 2.0}}"#,
    );
    assert_eq!(status, StepStatus::Passed, "{reason}");

    // A newer production version becomes the baseline.
    promote(
        dir.path(),
        "iris",
        "22222222aa",
        Some(serde_json::json!({"accuracy": 0.99, "eval": {"rmse": 1.0}})),
    );
    let (status, reason, _) = gate_evidence(
        dir.path(),
        PRODUCTION,
        r#"{"accuracy": 0.965, "eval": {"rmse": 2.0}}"#,
    );
    assert_eq!(status, StepStatus::Failed);
    assert!(
        reason.contains("baseline 0.99 from production iris:2"),
        "{reason}"
    );
    assert!(
        reason.contains("baseline 1.0 from production iris:2"),
        "{reason}"
    );
}

#[test]
fn baseline_production_without_registered_metrics_fails() {
    let dir = tempfile::tempdir().unwrap();
    promote(dir.path(), "iris", "11111111aa", None);
    let (status, reason, _) = gate_evidence(
        dir.path(),
        PRODUCTION,
        r#"{"accuracy": 0.99, "eval": {"rmse": 2.0}}"#,
    );
    assert_eq!(status, StepStatus::Failed);
    assert_eq!(
        reason,
        "baseline: production model iris:1 has no metrics in the registry (package it with `metrics = \"...\"`), so there is nothing to compare against"
    );
}

#[test]
fn baseline_production_needs_a_model_and_a_model_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    for (with, want) in [
        (
            r#"{ metrics = "m.json", thresholds = ["accuracy >= 0.9"], baseline = "production" }"#,
            "`baseline = \"production\"` needs `model`",
        ),
        (
            r#"{ metrics = "m.json", thresholds = ["accuracy >= 0.9"], model = "iris" }"#,
            "`model` only applies with `baseline = \"production\"`",
        ),
        (
            r#"{ metrics = "m.json", thresholds = ["accuracy >= 0.9"], baseline = "none", model = "iris" }"#,
            "`model` only applies with `baseline = \"production\"`",
        ),
    ] {
        std::fs::write(
            dir.path().join("mlops.toml"),
            format!("{}\n[iac.steps.ready]\nrun = \"true\"\n", manifest(with)),
        )
        .unwrap();
        let Err(err) = mlops_core::Manifest::load(dir.path(), &super::registry()) else {
            panic!("{with} is invalid")
        };
        assert!(err.to_string().contains(want), "{with}: {err}");
    }
}
