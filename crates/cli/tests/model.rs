//! `mlops model` as a user runs it: versions packaged by a real pipeline
//! run, then listed, shown, compared and staged through the binary.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn mlops(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlops"))
        .args(args)
        .current_dir(dir)
        .env("USER", "bo")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `mlops` and expects exit 0; returns stdout.
fn ok(args: &[&str], dir: &Path) -> String {
    let o = mlops(args, dir);
    assert_eq!(
        o.status.code(),
        Some(0),
        "mlops {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs `mlops` and expects exit 2; returns stderr.
fn invalid(args: &[&str], dir: &Path) -> String {
    let o = mlops(args, dir);
    assert_eq!(o.status.code(), Some(2), "mlops {args:?}: {}", stdout(&o));
    stderr(&o)
}

fn json(args: &[&str], dir: &Path) -> Value {
    serde_json::from_str(&ok(args, dir)).unwrap()
}

const MANIFEST: &str = r#"
[project]
name = "m"

[iac.steps.ready]
run = "true"

[ci.steps.check]
run = "true"

[cd.steps.package]
kind = "package"
with = { model = "iris", files = ["model.json"], metrics = "metrics.json" }
"#;

/// Writes the model and its metrics, then runs the pipeline.
fn train_and_package(dir: &Path, weights: &str, accuracy: f64) {
    std::fs::write(dir.join("model.json"), format!("{{\"w\": {weights}}}")).unwrap();
    std::fs::write(
        dir.join("metrics.json"),
        format!("{{\"accuracy\": {accuracy}, \"eval\": {{\"loss\": 0.3}}}}"),
    )
    .unwrap();
    ok(&["pipeline", "run"], dir);
}

#[test]
fn model_commands_list_show_diff_and_stage_versions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("mlops.toml"), MANIFEST).unwrap();
    let err = invalid(&["model", "list"], d);
    assert!(err.contains("no model registry in"), "{err}");

    train_and_package(d, "[1, 2]", 0.9);
    train_and_package(d, "[1, 3]", 0.95);

    let versions = json(&["model", "list", "--json"], d);
    let ids: Vec<(String, i64)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["model"].as_str().unwrap().to_owned(),
                v["number"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids, [("iris".to_owned(), 2), ("iris".to_owned(), 1)]);
    let text = ok(&["model", "list", "."], d);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("version  stage  created") && lines[0].ends_with("digest"),
        "{text}"
    );
    assert!(lines[1].starts_with("iris:2   none "), "{text}");
    assert!(lines[1].contains("accuracy=0.95 eval.loss=0.3"), "{text}");
    let text = ok(&["model", "list", "--model", "wine"], d);
    assert_eq!(text, "no versions of model `wine` registered\n");

    let v1 = json(&["model", "show", "iris:1", "--json"], d);
    assert_eq!(v1["number"], 1);
    assert_eq!(v1["files"][0]["path"], "model.json");
    assert_eq!(v1["metrics"]["accuracy"], 0.9);
    assert_eq!(v1["stage"], "none");
    assert_eq!(v1["stage_history"], serde_json::json!([]));
    let text = ok(&["model", "show", "2"], d);
    for want in [
        "iris:2 (none)\n",
        "  parent     iris:1\n",
        "  run        2, step package\n",
        "files (1, 13 bytes)\n",
        "  accuracy   0.95\n",
        "stage history: none (never staged)",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    // A digest prefix names a version too.
    let prefix = &v1["digest"].as_str().unwrap()[..10];
    assert_eq!(json(&["model", "show", prefix, "--json"], d)["number"], 1);

    let diff = json(&["model", "diff", "iris:1", "2", "--json"], d);
    assert_eq!(diff["a"], "iris:1");
    assert_eq!(diff["b"], "iris:2");
    let accuracy = &diff["metrics"][0];
    assert_eq!(accuracy["name"], "accuracy");
    assert!((accuracy["delta"].as_f64().unwrap() - 0.05).abs() < 1e-9);
    assert_eq!(diff["metrics"][1]["delta"], 0.0);
    assert_eq!(diff["files"]["changed"][0]["path"], "model.json");
    assert_eq!(diff["files"]["unchanged"], 0);
    assert_eq!(diff["lineage"]["parent"], serde_json::json!([null, 1]));
    let text = ok(&["model", "diff", "1", "iris@latest"], d);
    assert!(text.starts_with("iris:1 → iris:2\n"), "{text}");
    let words = |prefix: &str| -> Vec<String> {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or("");
        line.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(
        words("  accuracy "),
        ["accuracy", "0.9", "0.95", "+0.05"],
        "{text}"
    );
    assert_eq!(
        words("  eval.loss "),
        ["eval.loss", "0.3", "0.3", "="],
        "{text}"
    );
    assert_eq!(words("  parent "), ["parent", "-", "1"], "{text}");
    assert_eq!(
        words("  step "),
        ["step", "package", "package", "(same)"],
        "{text}"
    );
    assert!(
        text.contains("files: 0 added, 0 removed, 1 changed, 0 unchanged\n  ~ model.json: sha256 "),
        "{text}"
    );

    let text = ok(
        &[
            "model",
            "stage",
            "iris:1",
            "production",
            "--reason",
            "first",
            "--actor",
            "ana",
        ],
        d,
    );
    assert_eq!(text, "iris:1: none → production\n");
    let text = ok(
        &["model", "stage", "2", "production", "--reason", "better"],
        d,
    );
    assert_eq!(
        text,
        "iris:2: none → production (archived iris:1, which was in production)\n"
    );
    let v1 = json(&["model", "show", "iris:1", "--json"], d);
    assert_eq!(v1["stage"], "archived");
    let history: Vec<(&str, &str, &str)> = v1["stage_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["stage"].as_str().unwrap(),
                c["actor"].as_str().unwrap(),
                c["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("production", "ana", "first"),
            ("archived", "bo", "replaced by iris:2")
        ]
    );
    assert_eq!(
        json(&["model", "show", "iris@production", "--json"], d)["number"],
        2
    );
    let text = ok(&["model", "show", "iris:1"], d);
    assert!(text.contains("production  by ana: first"), "{text}");

    let err = invalid(
        &[
            "model",
            "stage",
            "iris:2",
            "production",
            "--reason",
            "again",
        ],
        d,
    );
    assert_eq!(
        err,
        "error: iris:2 is already in production; nothing to change\n"
    );
    let err = invalid(&["model", "show", "iris:9"], d);
    assert_eq!(
        err,
        "error: no model version `iris:9` in the registry: model `iris` has versions 1 to 2\n"
    );
    let err = invalid(&["model", "stage", "iris:1", "prod", "--reason", "x"], d);
    assert!(err.contains("`prod` is not a model stage"), "{err}");
    let err = invalid(&["model", "stage", "iris:1", "staging"], d);
    assert!(err.contains("--reason"), "{err}");

    let status = ok(&["pipeline", "status"], d);
    assert!(
        status.contains("package: iris:2 (sha256 "),
        "the package evidence is summarized: {status}"
    );
    assert!(status.contains(", 1 file, new)"), "{status}");
}
