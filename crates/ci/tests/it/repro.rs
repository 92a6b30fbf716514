//! Reproducibility: deterministic and non-deterministic "training" commands
//! run for real, twice, or against the recorded run.

use mlops_core::StepStatus;

fn manifest(command: &str, extra: &str) -> String {
    let command = serde_json::to_string(command).unwrap();
    format!(
        "[project]\nname = \"r\"\n\n[ci.steps.repro]\nkind = \"reproducibility\"\nwith = {{ command = {command}, metrics = \"{{out}}/metrics.json\", artifacts = [\"{{out}}/model.bin\"]{extra} }}\n"
    )
}

const DETERMINISTIC: &str = r#"printf '{"accuracy": 0.9, "loss": 0.25}' > {out}/metrics.json && printf 'weights 1 2 3' > {out}/model.bin"#;

#[test]
fn a_deterministic_command_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let run = super::run_pipeline(dir.path(), &manifest(DETERMINISTIC, ""));
    let step = super::ci_step(&run);
    assert_eq!(step.status, StepStatus::Passed, "{:?}", step.reason);
    let ev = &step.evidence[0];
    assert_eq!(ev.kind, "reproducibility");
    assert_eq!(ev.body["runs"].as_array().unwrap().len(), 2);
    assert_eq!(ev.body["reproducible"], true);
    // The scratch directories are removed after a pass.
    assert!(
        !dir.path()
            .join(".mlops/repro")
            .join(format!("{}-repro", run.run_id))
            .exists()
    );
}

#[test]
fn differing_metrics_and_artifacts_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let noisy = r#"n=$(od -An -N2 -tu2 /dev/urandom | tr -d ' '); printf '{"accuracy": 0.9%s, "loss": 0.25}' "$n" > {out}/metrics.json && printf 'weights %s' "$n" > {out}/model.bin"#;
    let run = super::run_pipeline(dir.path(), &manifest(noisy, ""));
    let step = super::ci_step(&run);
    assert_eq!(step.status, StepStatus::Failed);
    let reason = step.reason.as_deref().unwrap();
    assert!(
        reason.starts_with("not reproducible: metric accuracy: 0.9"),
        "{reason}"
    );
    assert!(reason.contains("in run 1 but"), "{reason}");
    assert!(reason.contains("artifact {out}/model.bin:"), "{reason}");
    assert!(reason.contains("the runs' outputs are kept in"), "{reason}");
    let diffs = step.evidence[0].body["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 2, "{diffs:?}");
}

#[test]
fn a_tolerance_absorbs_small_differences() {
    let dir = tempfile::tempdir().unwrap();
    let noisy = r#"n=$(od -An -N1 -tu1 /dev/urandom | tr -d ' '); printf '{"accuracy": 0.9000%03d}' "$n" > {out}/metrics.json && printf 'w' > {out}/model.bin"#;
    let run = super::run_pipeline(dir.path(), &manifest(noisy, ", tolerance = 0.001"));
    assert_eq!(
        super::ci_step(&run).status,
        StepStatus::Passed,
        "{:?}",
        super::ci_step(&run).reason
    );
}

#[test]
fn a_failing_or_silent_training_command_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = super::run_pipeline(dir.path(), &manifest("exit 3", ""));
    assert_eq!(
        super::ci_step(&run).reason.as_deref(),
        Some("run 1: the training command failed (exit status 3)")
    );
    let run = super::run_pipeline(dir.path(), &manifest("true", ""));
    let reason = super::ci_step(&run).reason.clone().unwrap();
    assert!(
        reason.starts_with("run 1: cannot read the metrics file"),
        "{reason}"
    );
}

#[test]
fn one_run_compares_with_the_recorded_run_on_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    // A clean git repository, so that the runs share a commit.
    let repo = git2::Repository::init(dir.path()).unwrap();
    std::fs::write(
        dir.path().join(".gitignore"),
        ".mlops/\nmodel.bin\nmetrics.json\n",
    )
    .unwrap();
    let text = manifest(DETERMINISTIC, ", runs = 1") + "\n[iac.steps.ready]\nrun = \"true\"\n";
    std::fs::write(dir.path().join("mlops.toml"), &text).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(std::path::Path::new(".gitignore")).unwrap();
    index.add_path(std::path::Path::new("mlops.toml")).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
        .unwrap();

    // No record yet: it runs twice.
    let first = super::run_pipeline(dir.path(), &text);
    assert_eq!(
        super::ci_step(&first).status,
        StepStatus::Passed,
        "{:?}",
        super::ci_step(&first).reason
    );
    assert_eq!(
        super::ci_step(&first).evidence[0].body["runs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let ev = &super::ci_step(&first).evidence[0].body;
    assert_eq!(
        (ev["commit"].is_string(), &ev["dirty"]),
        (true, &serde_json::json!(false)),
        "{ev}"
    );
    // Then once, against the recorded first run.
    let second = super::run_pipeline(dir.path(), &text);
    let runs = super::ci_step(&second).evidence[0].body["runs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["label"], format!("recorded run {}", first.run_id));
    assert_eq!(runs[1]["label"], "run 1");
}
