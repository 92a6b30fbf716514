//! `mlops assess` as a user runs it, on fixture repositories made here (an
//! empty repository, a notebook-only one, one with a committed AWS key, a
//! well-run project with recorded runs) and on bad input. The example
//! projects are assessed in `cli.rs`, after their pipelines ran.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn mlops() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlops"))
}

fn run(args: &[&str], dir: &Path) -> Output {
    mlops().args(args).current_dir(dir).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
}

fn write(dir: &Path, path: &str, text: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn commit_all(dir: &Path, message: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
}

/// `mlops assess DIR --format json`, which must succeed.
fn assess_json(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["assess", ".", "--format", "json"];
    args.extend_from_slice(extra);
    let o = run(&args, dir);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn evidence_of<'a>(report: &'a Value, signal: &str) -> Vec<&'a Value> {
    report["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["signal"] == signal)
        .collect()
}

fn stage<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == name)
        .unwrap()
}

fn section_sums(report: &Value) -> Vec<f64> {
    report["ml_test_score"]["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sum"].as_f64().unwrap())
        .collect()
}

#[test]
fn an_empty_repository_scores_zero_everywhere_and_says_where_to_start() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    let r = assess_json(dir.path(), &[]);
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["stage_level"], 0);
    assert_eq!(r["microsoft_level"], 0);
    assert_eq!(r["ml_test_score"]["score"], 0.0);
    assert_eq!(section_sums(&r), [0.0; 4]);
    assert_eq!(r["repository"]["git"], true);
    assert_eq!(r["repository"]["commit"], Value::Null);
    assert_eq!(r["runs"], Value::Null);
    assert_eq!(r["evidence"].as_array().unwrap().len(), 0);
    let first = &r["findings"][0];
    assert_eq!(first["code"], "stage-missing");
    assert!(
        first["next_step"].as_str().unwrap().contains("lockfile"),
        "{first}"
    );

    // For CI: the report is written, and the exit code says it is short.
    let o = run(&["assess", ".", "--fail-under", "1"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("Stage"), "the report is still written");
    assert!(
        stderr(&o).contains("the maturity level is 0"),
        "{}",
        stderr(&o)
    );
    let o = run(&["assess", ".", "--fail-under", "0"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_notebook_only_repository_is_done_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"]);
    write(
        d,
        "analysis.ipynb",
        r#"{"cells": [{"cell_type": "code", "source": ["from sklearn.model_selection import GridSearchCV\n", "search = GridSearchCV(model, grid).fit(X, y)\n"]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}"#,
    );
    write(d, "data/train.csv", "a,b\n1,2\n");
    commit_all(d, "notebook");
    let r = assess_json(d, &[]);
    assert_eq!(r["stage_level"], 0);
    let notebooks = evidence_of(&r, "notebook");
    assert_eq!(notebooks.len(), 1, "{:#}", r["evidence"]);
    assert_eq!(notebooks[0]["source"]["path"], "analysis.ipynb");
    assert_eq!(notebooks[0]["automated"], false);
    // Hyperparameters are searched, by hand: half a point, not one.
    let model = &r["ml_test_score"]["sections"][1];
    let tuned = model["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "model-3")
        .unwrap();
    assert_eq!(tuned["score"], 0.5, "{tuned}");
    assert_eq!(tuned["basis"], "manual");
    assert_eq!(r["ml_test_score"]["score"], 0.0);
}

#[test]
fn a_committed_aws_key_is_critical_in_every_format_and_never_shown() {
    // Split, so that scanning this repository does not find it.
    let key = &["AKIA", "Q7XHZ2KD4LMNP3RT"].concat();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"]);
    write(
        d,
        "settings.py",
        &format!("REGION = 'eu'\nAWS_ACCESS_KEY_ID = '{key}'\n"),
    );
    commit_all(d, "settings");
    // Removed from the tree later: still in the history.
    write(d, "settings.py", "REGION = 'eu'\n");
    commit_all(d, "remove the key");

    let r = assess_json(d, &[]);
    let first = &r["findings"][0];
    assert_eq!(first["severity"], "critical", "{:#}", r["findings"]);
    assert_eq!(first["code"], "committed-secret");
    assert_eq!(first["location"]["path"], "settings.py");
    assert_eq!(first["location"]["line"], 2);
    assert!(
        first["title"].as_str().unwrap().contains("commit"),
        "{first}"
    );
    assert_eq!(r["secret_scan"]["history"], true);
    assert_eq!(r["secret_scan"]["findings"], 1);
    let data5 = &r["ml_test_score"]["sections"][0]["tests"][4];
    assert_eq!(
        (data5["id"].as_str(), data5["score"].as_f64()),
        (Some("data-5"), Some(0.0))
    );

    for format in ["json", "md", "html"] {
        let o = run(&["assess", ".", "--format", format], d);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let text = stdout(&o);
        assert!(!text.contains(key), "{format} shows the secret");
        assert!(text.contains("settings.py"), "{format} does not say where");
    }

    // Without the history, the working tree is clean.
    let r = assess_json(d, &["--no-history"]);
    assert_eq!(r["secret_scan"]["history"], false);
    assert!(evidence_of(&r, "committed-secret").is_empty());

    // A key on a line the report quotes (a CI command) is redacted there
    // too, in a repository with no commit yet (the tree is still scanned).
    let fresh = tempfile::tempdir().unwrap();
    let f = fresh.path();
    git(f, &["init", "-q"]);
    write(
        f,
        ".github/workflows/ci.yml",
        &format!(
            "on: [push]\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n      - run: AWS_ACCESS_KEY_ID={key} aws s3 cp model.pkl s3://models/\n      - run: pytest -q\n"
        ),
    );
    let r = assess_json(f, &[]);
    assert_eq!(
        r["findings"][0]["code"], "committed-secret",
        "{:#}",
        r["findings"]
    );
    assert!(
        r["notes"]
            .to_string()
            .contains("only the working tree was scanned"),
        "{:#}",
        r["notes"]
    );
    for format in ["json", "md", "html"] {
        let o = run(&["assess", ".", "--format", format], f);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let text = stdout(&o);
        assert!(!text.contains(key.as_str()), "{format} shows the secret");
        assert!(
            text.contains("redacted"),
            "{format}: the command is kept, redacted"
        );
    }
}

/// A manifest that points a smoke step at a FIFO or a device must not hang
/// or exhaust the scan.
#[test]
fn special_files_named_by_the_manifest_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = Command::new("mkfifo")
        .arg(d.join("req.json"))
        .status()
        .unwrap();
    assert!(fifo.success());
    write(
        d,
        "mlops.toml",
        "[project]\nname = \"x\"\n\n[iac.steps.a]\nrun = \"true\"\n\n[ci.steps.b]\nrun = \"true\"\n\n[cd.steps.smoke]\nkind = \"smoke\"\nwith = { service = \"s\", requests = \"req.json\" }\n\n[cd.steps.zero]\nkind = \"smoke\"\nwith = { service = \"s\", requests = \"/dev/zero\" }\n",
    );
    let r = assess_json(d, &["--no-history"]);
    assert_eq!(r["repository"]["manifest"], true);
}

const WELL_RUN_MANIFEST: &str = r#"
[project]
name = "churn"

[iac.steps.image]
run = "true"

[ci.steps.unit]
run = "true"

[cd.steps.ship]
run = "true"

[release.steps.canary]
run = "true"

[apm.steps.alerts]
run = "true"

[loadtest.steps.load]
run = "true"
"#;

/// A repository that does everything the report looks for, through a CI
/// system and Kubernetes, and records mlops runs: every stage proven.
fn well_run_project(d: &Path) {
    git(d, &["init", "-q"]);
    write(d, "mlops.toml", WELL_RUN_MANIFEST);
    write(d, ".gitignore", ".mlops/\n");
    write(
        d,
        "requirements.txt",
        "numpy==2.1.3 \\\n    --hash=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n\
         scikit-learn==1.5.2 --hash=sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n",
    );
    write(d, "Dockerfile", "FROM python:3.11-slim\nCOPY . /app\n");
    write(
        d,
        ".github/workflows/ci.yml",
        "name: ci\non:\n  push:\n  pull_request:\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - uses: gitleaks/gitleaks-action@v2\n      - run: pip install --require-hashes -r requirements.txt\n      - run: python -m pytest -q\n      - run: mlops pipeline run .\n  deploy:\n    needs: test\n    runs-on: ubuntu-latest\n    steps:\n      - run: kubectl apply -f k8s/\n      - run: locust -f load/locustfile.py --headless -u 20 -r 5 -t 1m\n",
    );
    write(
        d,
        ".github/workflows/retrain.yml",
        "name: retrain\non:\n  schedule:\n    - cron: '0 3 * * 1'\njobs:\n  retrain:\n    runs-on: ubuntu-latest\n    steps:\n      - run: python -m churn.train\n",
    );
    write(
        d,
        ".github/dependabot.yml",
        "version: 2\nupdates:\n  - package-ecosystem: pip\n    directory: /\n    schedule:\n      interval: weekly\n",
    );
    write(d, "CODEOWNERS", "* @data-team\n");
    write(
        d,
        "churn/train.py",
        "import numpy as np\nfrom sklearn.dummy import DummyClassifier\nfrom sklearn.linear_model import LogisticRegression\nfrom sklearn.model_selection import GridSearchCV\nfrom sklearn.inspection import permutation_importance\nimport mlflow\n\ndef train(X, y):\n    np.random.seed(0)\n    baseline = DummyClassifier().fit(X, y)\n    search = GridSearchCV(LogisticRegression(random_state=0), {'C': [0.1, 1]}).fit(X, y)\n    mlflow.log_metric('accuracy', search.best_score_)\n    return search, baseline\n",
    );
    write(
        d,
        "churn/serve.py",
        "from prometheus_client import Counter, make_asgi_app\nREQUESTS = Counter('requests_total', 'requests')\n",
    );
    write(
        d,
        "tests/test_model.py",
        "import numpy as np\nimport pandera as pa\n\nschema = pa.DataFrameSchema({'tenure': pa.Column(int)})\n\ndef test_schema():\n    schema.validate(load())\n\ndef test_quality():\n    accuracy = evaluate()\n    assert accuracy >= 0.8\n\ndef test_finite():\n    assert np.isfinite(predict()).all()\n",
    );
    write(
        d,
        "k8s/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: churn\n",
    );
    write(
        d,
        "k8s/rollout.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata:\n  name: churn\nspec:\n  strategy:\n    canary:\n      steps:\n        - setWeight: 10\n",
    );
    write(
        d,
        "k8s/hpa.yaml",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: churn\n",
    );
    write(
        d,
        "monitoring/prometheus.yml",
        "scrape_configs:\n  - job_name: churn\n    static_configs:\n      - targets: ['churn:8000']\n",
    );
    write(
        d,
        "monitoring/rules.yml",
        "groups:\n  - name: churn\n    rules:\n      - alert: HighLatency\n        expr: histogram_quantile(0.99, rate(latency_bucket[5m])) > 0.5\n",
    );
    write(
        d,
        "monitoring/drift.py",
        "from evidently.report import Report\nfrom evidently.metric_preset import DataDriftPreset\n",
    );
    write(
        d,
        "load/locustfile.py",
        "from locust import HttpUser, task\n\nclass Client(HttpUser):\n    @task\n    def predict(self):\n        self.client.post('/predict', json={})\n",
    );
    commit_all(d, "a well-run project");
}

#[test]
fn a_well_run_project_is_proven_at_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    well_run_project(d);

    // Before any run: everything is configured, nothing proven.
    let r = assess_json(d, &[]);
    assert_eq!(r["stage_level"], 6, "{:#}", r["stages"]);
    assert!(
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "configured"),
        "{:#}",
        r["stages"]
    );
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "no-runs"),
        "{:#}",
        r["findings"]
    );
    // pytest in CI makes the test file automated evidence.
    let tests = evidence_of(&r, "unit-tests");
    assert!(
        tests
            .iter()
            .any(|e| e["source"]["path"] == "tests/test_model.py" && e["automated"] == true),
        "{tests:#?}"
    );

    // Two runs: stages proven, with the run that proved them.
    for _ in 0..2 {
        let o = run(&["pipeline", "run", ".", "--force"], d);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    }
    let r = assess_json(d, &[]);
    assert_eq!(r["stage_level"], 6);
    for s in r["stages"].as_array().unwrap() {
        assert_eq!(s["status"], "proven", "{s:#}");
        assert_eq!(s["last_passed"]["run_id"], 2, "{s:#}");
    }
    assert_eq!(r["repository"]["ledger"], true);
    assert_eq!(r["runs"]["total"], 2);
    assert_eq!(r["runs"]["passed"], 2);
    let points = r["runs"]["runs"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert!(points.iter().all(|p| p["stage_level"] == 6));
    assert!(
        r["microsoft_level"].as_u64().unwrap() >= 2,
        "{:#}",
        r["microsoft"]
    );
    let sums = section_sums(&r);
    assert!(sums.iter().all(|s| *s > 0.0), "{sums:?}");
    assert_eq!(
        r["ml_test_score"]["score"].as_f64().unwrap(),
        sums.iter().copied().fold(f64::INFINITY, f64::min)
    );

    // Every evidence id a score names is in the evidence list.
    let ids: std::collections::HashSet<&str> = r["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let text = r.to_string();
    for cap in regex_ids(&text) {
        assert!(
            ids.contains(cap.as_str()),
            "{cap} is referred to but not listed"
        );
    }

    // A later failing run of a stage beats its files: CI fails, and the
    // level falls to 1.
    write(
        d,
        "mlops.toml",
        &WELL_RUN_MANIFEST.replace(
            "[ci.steps.unit]\nrun = \"true\"",
            "[ci.steps.unit]\nrun = \"exit 1\"",
        ),
    );
    let o = run(&["pipeline", "run", "."], d);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let r = assess_json(d, &[]);
    assert_eq!(stage(&r, "ci")["status"], "failing");
    assert_eq!(r["stage_level"], 1);
    assert_eq!(
        r["findings"][0]["code"], "stage-failing",
        "{:#}",
        r["findings"]
    );
    assert_eq!(r["runs"]["runs"][2]["stage_level"], 1);
}

/// `"E12"`-style ids inside JSON strings.
fn regex_ids(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 2 < bytes.len() {
        if bytes[i] == b'"' && bytes[i + 1] == b'E' && bytes[i + 2].is_ascii_digit() {
            let end = text[i + 1..].find('"').map(|e| i + 1 + e);
            if let Some(end) = end {
                let id = &text[i + 1..end];
                if id[1..].bytes().all(|b| b.is_ascii_digit()) {
                    out.push(id.to_owned());
                }
                i = end;
            }
        }
        i += 1;
    }
    out
}

#[test]
fn reports_are_written_in_the_format_the_output_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    well_run_project(d);
    for (file, starts) in [
        ("report.html", "<!DOCTYPE html>"),
        ("report.md", "#"),
        ("report.json", "{"),
    ] {
        let o = run(&["assess", ".", "--output", file], d);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let text = std::fs::read_to_string(d.join(file)).unwrap();
        assert!(
            text.starts_with(starts),
            "{file}: {}",
            &text[..40.min(text.len())]
        );
        assert!(
            stderr(&o).contains("stage level 6/6"),
            "a one-line summary: {}",
            stderr(&o)
        );
    }
    // The report files are not evidence of anything, and no temporary file
    // is left behind.
    let left: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let o = run(&["assess", "no/such/dir"], d);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no/such/dir"), "{}", stderr(&o));

    let o = run(&["assess", ".", "--format", "pdf"], d);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pdf"), "{}", stderr(&o));

    let o = run(&["assess", ".", "--output", "missing/report.html"], d);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));

    let o = run(&["assess", ".", "--fail-under", "7"], d);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // A malformed manifest and CI file are notes in the report, not errors.
    write(d, "mlops.toml", "[project\nname = ");
    write(d, ".github/workflows/ci.yml", "on: [push\njobs: {{{{\n");
    let r = assess_json(d, &["--no-history"]);
    let notes = r["notes"].to_string();
    assert!(notes.contains("mlops.toml"), "{notes}");

    // A ledger that is not a database: a clear error naming it, and the
    // file is left as it was.
    write(d, ".mlops/ledger.db", "this is not sqlite");
    let o = run(&["assess", ".", "--format", "json"], d);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("ledger"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(d.join(".mlops/ledger.db")).unwrap(),
        "this is not sqlite"
    );
}
