//! Tests of the whole scan: fixture trees in temporary directories, and the
//! example projects of the repository.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;

/// A tree of `(path, content)` files.
fn tree(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        write(dir.path(), path, content.as_bytes());
    }
    dir
}

fn write(root: &Path, path: &str, content: &[u8]) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn scan_ok(root: &Path) -> StaticScan {
    scan(root).unwrap_or_else(|err| panic!("scan of {} failed: {err}", root.display()))
}

/// The evidence of `signal` at `path` (and `line`, unless `None` is
/// asked for with `Some(None)`); fails listing everything when absent.
#[track_caller]
fn evidence<'a>(
    scan: &'a StaticScan,
    signal: Signal,
    path: &str,
    line: Option<Option<usize>>,
) -> &'a Evidence {
    scan.evidence
        .iter()
        .find(|e| {
            e.signal == signal
                && matches!(&e.source, Source::File { path: p, line: l } if p == path && line.is_none_or(|want| *l == want))
        })
        .unwrap_or_else(|| panic!("no {signal:?} at {path}:{line:?} in\n{}", describe(scan)))
}

fn has(scan: &StaticScan, signal: Signal) -> bool {
    scan.evidence.iter().any(|e| e.signal == signal)
}

fn describe(scan: &StaticScan) -> String {
    let mut out = String::new();
    for e in &scan.evidence {
        out.push_str(&format!(
            "{:?} {} {}{}\n",
            e.signal,
            e.source.describe(),
            if e.automated { "[auto] " } else { "" },
            e.summary
        ));
    }
    for c in &scan.automation {
        out.push_str(&format!(
            "cmd {} {} {}\n",
            c.system,
            c.source.describe(),
            c.command
        ));
    }
    for n in &scan.notes {
        out.push_str(&format!("note {n}\n"));
    }
    out
}

const HASHED: &str = "\
# pinned
--only-binary :all:

numpy==2.1.0 \\
    --hash=sha256:aaaa \\
    --hash=sha256:bbbb
    # via scikit-learn
scikit-learn==1.5.0 \\
    --hash=sha256:cccc
";

#[test]
fn requirements_pinned_with_hashes_lock_the_environment() {
    let dir = tree(&[("requirements.txt", HASHED)]);
    let scan = scan_ok(dir.path());
    let e = evidence(
        &scan,
        Signal::LockedEnvironment,
        "requirements.txt",
        Some(None),
    );
    assert!(e.automated);
    assert_eq!(e.summary, "requirements.txt: 2 packages pinned with hashes");
    assert!(!has(&scan, Signal::UnpinnedRequirements));
}

#[test]
fn unpinned_requirements_point_at_the_first_offending_line() {
    let text = "numpy==2.1.0 --hash=sha256:aaaa\n# comment\npandas>=2\nscipy==1.14\n-r dev.txt\n";
    let dir = tree(&[("requirements-dev.txt", text)]);
    let scan = scan_ok(dir.path());
    let e = evidence(
        &scan,
        Signal::UnpinnedRequirements,
        "requirements-dev.txt",
        Some(Some(3)),
    );
    assert_eq!(
        e.summary,
        "requirements-dev.txt: 2 of 3 requirements not pinned with == and --hash (first: line 3, `pandas>=2`)"
    );
    assert!(!has(&scan, Signal::LockedEnvironment));
}

const TEST_FILE: &str = "\
import numpy as np

from model.train import train


def test_accuracy():
    m = train()
    assert m[\"accuracy\"] >= 0.9


def test_no_nan():
    assert np.isfinite(train()[\"loss\"])
";

const TRAIN: &str = "\
from sklearn.linear_model import LogisticRegression


def train(seed=42):
    model = LogisticRegression(random_state=seed)
    model.fit([[0], [1]], [0, 1])
    return {\"accuracy\": 1.0, \"loss\": 0.1}
";

const WORKFLOW: &str = "\
name: CI
on:
  pull_request:
  push:
    branches: [main]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: pip install pytest
      - name: Test
        run: |
          uv run pytest -q
";

#[test]
fn a_workflow_running_pytest_automates_the_test_files() {
    let dir = tree(&[
        (".github/workflows/ci.yml", WORKFLOW),
        ("tests/test_model.py", TEST_FILE),
        ("model/train.py", TRAIN),
        ("model/__init__.py", ""),
    ]);
    let scan = scan_ok(dir.path());
    let tests = evidence(
        &scan,
        Signal::UnitTests,
        "tests/test_model.py",
        Some(Some(6)),
    );
    assert!(tests.automated, "{tests:?}");
    assert_eq!(
        tests.summary,
        "tests/test_model.py: 2 test functions; run by .github/workflows/ci.yml:14"
    );
    assert!(
        evidence(
            &scan,
            Signal::ModelValidation,
            "tests/test_model.py",
            Some(Some(8))
        )
        .automated
    );
    assert!(
        evidence(
            &scan,
            Signal::NumericalChecks,
            "tests/test_model.py",
            Some(Some(12))
        )
        .automated
    );
    assert!(
        evidence(
            &scan,
            Signal::CiConfig,
            ".github/workflows/ci.yml",
            Some(None)
        )
        .automated
    );
    assert!(
        evidence(
            &scan,
            Signal::CodeReview,
            ".github/workflows/ci.yml",
            Some(Some(3))
        )
        .automated
    );
    // Nothing runs the training script: it stays manual.
    let training = evidence(&scan, Signal::TrainingCode, "model/train.py", Some(Some(4)));
    assert!(!training.automated);
    assert_eq!(training.run_by, ["model/train.py", "model.train"]);
    assert!(
        !evidence(
            &scan,
            Signal::Reproducibility,
            "model/train.py",
            Some(Some(5))
        )
        .automated
    );

    let commands: Vec<(&str, &str)> = scan
        .automation
        .iter()
        .map(|c| (c.command.as_str(), c.system.as_str()))
        .collect();
    assert_eq!(
        commands,
        [
            ("uses: actions/checkout@v4", "github-actions"),
            ("pip install pytest", "github-actions"),
            ("uv run pytest -q", "github-actions"),
        ]
    );
    assert_eq!(
        scan.automation[2].source,
        Source::file(".github/workflows/ci.yml", Some(14))
    );
    assert!(!scan.automation[2].scheduled);
}

#[test]
fn test_files_nothing_runs_stay_manual() {
    let dir = tree(&[
        (
            ".github/workflows/lint.yml",
            "on: push\njobs:\n  lint:\n    steps:\n      - run: pip install pytest\n      - run: ruff check .\n",
        ),
        ("tests/test_model.py", TEST_FILE),
    ]);
    let scan = scan_ok(dir.path());
    let tests = evidence(
        &scan,
        Signal::UnitTests,
        "tests/test_model.py",
        Some(Some(6)),
    );
    assert!(!tests.automated);
    assert!(tests.run_by.iter().any(|w| w == "pytest"));
}

#[test]
fn a_make_target_ci_runs_links_what_its_recipe_runs() {
    let dir = tree(&[
        (".gitlab-ci.yml", "test:\n  script:\n    - make check\n"),
        (
            "Makefile",
            ".PHONY: check test\ncheck: lint test\n\ntest:\n\t@python -m pytest -q\n\ntrain:\n\tpython -m model.train\n",
        ),
        ("tests/test_model.py", TEST_FILE),
        ("model/train.py", TRAIN),
    ]);
    let scan = scan_ok(dir.path());
    let tests = evidence(&scan, Signal::UnitTests, "tests/test_model.py", None);
    assert!(tests.automated, "{}", describe(&scan));
    assert!(
        tests
            .summary
            .ends_with("run by Makefile:5 via .gitlab-ci.yml:3"),
        "{}",
        tests.summary
    );
    let target = evidence(&scan, Signal::TrainingPipeline, "Makefile", Some(Some(7)));
    assert!(!target.automated);
    assert!(!evidence(&scan, Signal::TrainingCode, "model/train.py", None).automated);
}

#[test]
fn a_scheduled_workflow_that_trains_is_scheduled_retraining() {
    let workflow = "\
name: retrain
on:
  schedule:
    - cron: '0 4 * * 1'
  workflow_dispatch:
jobs:
  retrain:
    runs-on: ubuntu-latest
    steps:
      - run: python -m model.train --data data.csv
      - run: kubectl apply -f k8s/
";
    let dir = tree(&[
        (".github/workflows/retrain.yml", workflow),
        ("model/train.py", TRAIN),
    ]);
    let scan = scan_ok(dir.path());
    let retrain = evidence(
        &scan,
        Signal::ScheduledRetraining,
        ".github/workflows/retrain.yml",
        Some(Some(10)),
    );
    assert!(retrain.automated);
    assert!(scan.automation.iter().all(|c| c.scheduled));
    let training = evidence(&scan, Signal::TrainingCode, "model/train.py", None);
    assert!(training.automated);
    assert!(
        evidence(
            &scan,
            Signal::TrainingPipeline,
            ".github/workflows/retrain.yml",
            Some(Some(10))
        )
        .automated
    );
    assert!(
        evidence(
            &scan,
            Signal::Deployment,
            ".github/workflows/retrain.yml",
            Some(Some(11))
        )
        .automated
    );
    assert!(!has(&scan, Signal::CodeReview));
}

#[test]
fn kubernetes_autoscaler_and_rollout() {
    let manifests = "\
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: model
spec:
  minReplicas: 2
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: model
spec:
  strategy:
    canary:
      steps:
        - setWeight: 20
";
    let dir = tree(&[
        ("deploy/k8s.yaml", manifests),
        ("deploy/values.yaml", "replicas: 2\n"),
    ]);
    let scan = scan_ok(dir.path());
    assert!(evidence(&scan, Signal::Autoscaling, "deploy/k8s.yaml", Some(Some(2))).automated);
    assert!(
        evidence(
            &scan,
            Signal::ProgressiveDelivery,
            "deploy/k8s.yaml",
            Some(Some(9))
        )
        .automated
    );
    assert!(evidence(&scan, Signal::Rollback, "deploy/k8s.yaml", Some(Some(9))).automated);
    let infra = evidence(
        &scan,
        Signal::InfrastructureCode,
        "deploy/k8s.yaml",
        Some(Some(2)),
    );
    assert_eq!(
        infra.summary,
        "deploy/k8s.yaml: Kubernetes manifest (HorizontalPodAutoscaler, Rollout)"
    );
    assert!(
        scan.evidence.iter().all(
            |e| !matches!(&e.source, Source::File { path, .. } if path == "deploy/values.yaml")
        )
    );
}

#[test]
fn malformed_manifest_and_workflow_are_notes() {
    let dir = tree(&[
        (
            "mlops.toml",
            "[project]\nname = \"x\"\n[ci.steps.test\nrun = \"pytest\"\n",
        ),
        (
            ".github/workflows/ci.yml",
            "on: push\njobs:\n  test:\n\tsteps: []\n",
        ),
        (".github/workflows/half.yml", "on: [push\n"),
        ("tests/test_a.py", "def test_a():\n    pass\n"),
    ]);
    let scan = scan_ok(dir.path());
    assert!(scan.manifest);
    assert_eq!(scan.project_name, None);
    assert!(scan.automation.is_empty(), "{}", describe(&scan));
    assert!(!has(&scan, Signal::CiConfig));
    assert_eq!(scan.notes.len(), 3, "{:?}", scan.notes);
    assert_eq!(
        scan.notes[0],
        ".github/workflows/ci.yml:4: tab character in indentation"
    );
    assert_eq!(scan.notes[1], ".github/workflows/half.yml:1: unclosed `[`");
    assert!(
        scan.notes[2].starts_with("mlops.toml:3: "),
        "{:?}",
        scan.notes
    );
    assert!(!evidence(&scan, Signal::UnitTests, "tests/test_a.py", None).automated);
}

#[test]
fn vendored_virtualenv_and_ignored_directories_are_not_walked() {
    let dir = tree(&[
        ("env/pyvenv.cfg", "home = /usr/bin\n"),
        ("env/lib/test_vendored.py", "def test_x():\n    pass\n"),
        ("node_modules/k6/index.js", "import http from 'k6/http';\n"),
        ("scratch/test_scratch.py", "def test_x():\n    pass\n"),
        ("tests/test_kept.py", "def test_x():\n    pass\n"),
        (".gitignore", "scratch/\n"),
    ]);
    git2::Repository::init(dir.path()).unwrap();
    let scan = scan_ok(dir.path());
    let tests: Vec<String> = scan
        .evidence
        .iter()
        .filter(|e| e.signal == Signal::UnitTests)
        .map(|e| e.source.describe())
        .collect();
    assert_eq!(tests, ["tests/test_kept.py:1"]);
    assert!(!has(&scan, Signal::LoadTest));
    assert_eq!(scan.files, 2, "{}", describe(&scan)); // .gitignore, tests/test_kept.py
}

#[test]
fn binary_and_invalid_utf8_files_are_no_problem() {
    let dir = tree(&[]);
    write(
        dir.path(),
        "tests/test_bin.py",
        b"\x00\x01\x02def test_x():\n",
    );
    write(
        dir.path(),
        "tests/test_latin.py",
        b"# caf\xe9\ndef test_x():\n    assert 1\n",
    );
    write(
        dir.path(),
        ".github/workflows/ci.yml",
        b"on: push\njobs:\n  a:\n    steps:\n      - run: pytest # \xff\n",
    );
    write(dir.path(), "mlops.toml", b"[project]\nname = \"\xff\"\n");
    let scan = scan_ok(dir.path());
    let tests = evidence(
        &scan,
        Signal::UnitTests,
        "tests/test_latin.py",
        Some(Some(2)),
    );
    assert!(tests.automated);
    assert!(
        scan.evidence
            .iter()
            .all(|e| e.source.describe() != "tests/test_bin.py")
    );
    assert_eq!(scan.automation[0].command, "pytest");
    assert_eq!(scan.project_name, None);
    assert!(scan.manifest);
    assert_eq!(scan.notes, ["mlops.toml: not valid UTF-8"]);
}

/// Whatever the bytes, reading CI files and manifests never panics.
#[test]
fn mangled_ci_files_and_manifests_do_not_panic() {
    let samples = [
        WORKFLOW,
        HASHED,
        "test:\n  script:\n  - |\n    pytest\n  - 'a: b'\non: {push: [x, \"y\"]}\n",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % 1_000_003).unwrap()
    };
    let noise = b" \t\n-:|>[]{}\"'#&*!\\\xff\xc3";
    for sample in samples {
        for cut in 0..sample.len() {
            let prefix = &sample.as_bytes()[..cut];
            let mut mangled = sample.as_bytes().to_vec();
            for _ in 0..3 {
                let at = next() % mangled.len();
                mangled[at] = noise[next() % noise.len()];
            }
            for bytes in [prefix, &mangled[..]] {
                let text = String::from_utf8_lossy(bytes);
                let _ = yaml::outline(&text);
                let mut out = Collector::default();
                for system in [
                    files::CiSystem::GithubActions,
                    files::CiSystem::GitlabCi,
                    files::CiSystem::Circleci,
                    files::CiSystem::Jenkins,
                ] {
                    let ctx = FileCtx {
                        rel: "ci.yml",
                        name: "ci.yml",
                    };
                    ci::scan(&ctx, system, &text, &mut out);
                }
                let _ = manifest::scan(&text, &mut out);
                let ctx = FileCtx {
                    rel: "requirements.txt",
                    name: "requirements.txt",
                };
                config::read(&ctx, files::Kind::Requirements, &text, &mut out);
                config::read(&ctx, files::Kind::Yaml, &text, &mut out);
                config::read(&ctx, files::Kind::Makefile, &text, &mut out);
                code::python(&ctx, &text, &mut out);
                let _ = out.into_scan(1, true, None);
            }
        }
    }
}

#[test]
fn a_missing_root_or_a_file_is_an_error() {
    let dir = tree(&[("file.txt", "x")]);
    assert!(matches!(
        scan(&dir.path().join("nope")),
        Err(ScanError::Missing { .. })
    ));
    assert!(matches!(
        scan(&dir.path().join("file.txt")),
        Err(ScanError::NotADirectory { .. })
    ));
}

#[test]
fn a_manifest_without_ci_automates_by_its_steps() {
    let manifest = "\
[project]
name = \"demo\"

[iac.steps.env]
run = \"uv sync --locked\"

[ci.steps.test]
run = \"uv run pytest\"

[ci.steps.gate]
kind = \"model-gate\"
with = { metrics = \"m.json\", thresholds = [\"accuracy >= 0.9\"], baseline = \"none\" }

[release.steps.canary]
run = \"./release.sh canary 10%\"

[apm.steps.drift]
run = \"python -m monitor.drift\"

[loadtest.steps.autoscale]
run = \"./scale.sh\"

[loadtest.steps.load]
run = \"k6 run load.js\"
";
    let dir = tree(&[
        ("mlops.toml", manifest),
        ("tests/test_model.py", TEST_FILE),
        (
            "load.js",
            "import http from 'k6/http';\nexport default function () {}\n",
        ),
    ]);
    let scan = scan_ok(dir.path());
    assert_eq!(scan.project_name.as_deref(), Some("demo"));
    assert!(
        evidence(
            &scan,
            Signal::LockedEnvironment,
            "mlops.toml",
            Some(Some(4))
        )
        .automated
    );
    assert!(evidence(&scan, Signal::UnitTests, "tests/test_model.py", None).automated);
    assert!(evidence(&scan, Signal::ModelValidation, "mlops.toml", Some(Some(10))).automated);
    assert!(!has(&scan, Signal::BaselineComparison));
    assert!(
        evidence(
            &scan,
            Signal::ProgressiveDelivery,
            "mlops.toml",
            Some(Some(14))
        )
        .automated
    );
    assert!(evidence(&scan, Signal::DriftMonitoring, "mlops.toml", Some(Some(17))).automated);
    assert!(evidence(&scan, Signal::Autoscaling, "mlops.toml", Some(Some(20))).automated);
    assert!(evidence(&scan, Signal::LoadTest, "mlops.toml", Some(Some(23))).automated);
    let k6 = evidence(&scan, Signal::LoadTest, "load.js", Some(Some(1)));
    assert!(k6.automated);
    assert_eq!(scan.automation.len(), 6);
    assert!(scan.automation.iter().all(|c| c.system == "mlops"));
}

#[test]
fn evidence_is_ordered_by_path_then_line() {
    let dir = tree(&[
        ("b/test_b.py", "def test_b():\n    assert 1\n"),
        ("a/Dockerfile", "FROM python:3.12-slim\n"),
        ("a/test_a.py", "\n\ndef test_a():\n    assert 1\n"),
        (
            "Cargo.lock",
            "[[package]]\nname = \"a\"\n\n[[package]]\nname = \"b\"\n",
        ),
    ]);
    let scan = scan_ok(dir.path());
    let order: Vec<String> = scan.evidence.iter().map(|e| e.source.describe()).collect();
    assert_eq!(
        order,
        [
            "Cargo.lock",
            "a/Dockerfile:1",
            "a/test_a.py:3",
            "b/test_b.py:1"
        ]
    );
    assert_eq!(scan.evidence[0].summary, "Cargo.lock pins 2 packages");
    assert_eq!(
        scan.evidence[1].summary,
        "a/Dockerfile: container image from python:3.12-slim"
    );
}

#[test]
fn scripts_automation_runs_show_and_link_evidence() {
    let dir = tree(&[
        (
            ".github/workflows/deploy.yml",
            "on:\n  push:\n    tags: ['v*']\njobs:\n  deploy:\n    steps:\n      - run: ./scripts/deploy.sh\n",
        ),
        (
            "scripts/deploy.sh",
            "#!/bin/sh\nset -e\n./scripts/test.sh\nkubectl apply -f k8s/ \\\n  --wait\ncurl -f http://svc/v2/health/ready\n",
        ),
        ("scripts/test.sh", "python -m pytest -q\n"),
        ("tests/test_model.py", TEST_FILE),
    ]);
    let scan = scan_ok(dir.path());
    let deploy = evidence(
        &scan,
        Signal::Deployment,
        "scripts/deploy.sh",
        Some(Some(4)),
    );
    assert!(deploy.automated);
    assert_eq!(
        deploy.summary,
        "GitHub Actions runs `kubectl apply -f k8s/ --wait` (through .github/workflows/deploy.yml:7)"
    );
    assert!(
        evidence(
            &scan,
            Signal::SmokeTests,
            "scripts/deploy.sh",
            Some(Some(6))
        )
        .automated
    );
    assert!(
        evidence(
            &scan,
            Signal::ReleaseVersioning,
            ".github/workflows/deploy.yml",
            Some(Some(3))
        )
        .automated
    );
    let tests = evidence(&scan, Signal::UnitTests, "tests/test_model.py", None);
    assert!(
        tests
            .summary
            .ends_with("run by scripts/test.sh:1 via .github/workflows/deploy.yml:7"),
        "{}",
        tests.summary
    );
    // Script lines are not CI job steps.
    assert_eq!(scan.automation.len(), 1);
}

#[test]
fn azure_pipelines_outside_the_usual_names() {
    let pipeline = "\
trigger: none
schedules:
- cron: '0 2 * * *'
  branches:
    include: [main]
pool:
  vmImage: ubuntu-latest
steps:
- script: |
    python -m pytest tests
  displayName: Test
- bash: python -m model.train
- task: HelmDeploy@0
  inputs:
    command: upgrade
";
    let dir = tree(&[
        ("ops/nightly.yml", pipeline),
        ("tests/test_model.py", TEST_FILE),
    ]);
    let scan = scan_ok(dir.path());
    assert!(evidence(&scan, Signal::CiConfig, "ops/nightly.yml", Some(None)).automated);
    let commands: Vec<(usize, &str, bool)> = scan
        .automation
        .iter()
        .map(|c| match &c.source {
            Source::File { line, .. } => (line.unwrap_or(0), c.command.as_str(), c.scheduled),
            _ => (0, "", false),
        })
        .collect();
    assert_eq!(
        commands,
        [
            (10, "python -m pytest tests", true),
            (12, "python -m model.train", true),
            (13, "task: HelmDeploy@0", true),
        ]
    );
    assert!(
        evidence(
            &scan,
            Signal::ScheduledRetraining,
            "ops/nightly.yml",
            Some(Some(12))
        )
        .automated
    );
    assert!(evidence(&scan, Signal::Deployment, "ops/nightly.yml", Some(Some(13))).automated);
    assert!(evidence(&scan, Signal::UnitTests, "tests/test_model.py", None).automated);
}

#[test]
fn monitoring_alerting_dashboards_and_load_tests() {
    let dir = tree(&[
        (
            "monitoring/prometheus.yml",
            "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: model\n",
        ),
        (
            "monitoring/rules.yml",
            "groups:\n  - name: model\n    rules:\n      - alert: HighLatency\n        expr: x > 1\n      - alert: Down\n",
        ),
        (
            "grafana/dashboards/model.json",
            "{\"title\": \"Model\", \"panels\": [{\"gridPos\": {}}]}",
        ),
        ("load/locustfile.py", "from locust import HttpUser, task\n"),
        ("service/app.py", "from prometheus_client import Counter\n"),
        ("monitor/drift.py", "from scipy.stats import ks_2samp\n"),
        ("Dockerfile", "FROM python:3.12\n"),
        ("docker-compose.yml", "services: {}\n"),
        (".github/CODEOWNERS", "# owners\n* @team\n"),
        (".github/dependabot.yml", "version: 2\n"),
        ("CHANGELOG.md", "# Changelog\n## [1.2.0]\n## [1.1.0]\n"),
        (
            "infra/main.tf",
            "resource \"aws_appautoscaling_policy\" \"p\" {}\n",
        ),
        ("infra/vars.tf", ""),
        (
            "dvc.yaml",
            "stages:\n  prepare:\n    cmd: python prepare.py\n  train:\n    cmd: python train.py\n",
        ),
        ("params.yaml", "seed: 1\n"),
        (
            "notebooks/eda.ipynb",
            "{\"cells\": [{\"cell_type\": \"code\", \"source\": [\"import shap\\n\"]}]}",
        ),
    ]);
    let scan = scan_ok(dir.path());
    assert!(
        evidence(
            &scan,
            Signal::MonitoringConfig,
            "monitoring/prometheus.yml",
            Some(Some(3))
        )
        .automated
    );
    let rules = evidence(
        &scan,
        Signal::Alerting,
        "monitoring/rules.yml",
        Some(Some(4)),
    );
    assert_eq!(
        rules.summary,
        "monitoring/rules.yml: 2 Prometheus alert rules"
    );
    assert!(
        evidence(
            &scan,
            Signal::Dashboards,
            "grafana/dashboards/model.json",
            Some(None)
        )
        .automated
    );
    let locust = evidence(&scan, Signal::LoadTest, "load/locustfile.py", Some(Some(1)));
    assert!(!locust.automated);
    assert_eq!(locust.run_by, ["locust", "load/locustfile.py"]);
    assert!(evidence(&scan, Signal::Metrics, "service/app.py", Some(Some(1))).automated);
    assert!(
        !evidence(
            &scan,
            Signal::DriftMonitoring,
            "monitor/drift.py",
            Some(Some(1))
        )
        .automated
    );
    assert!(evidence(&scan, Signal::Container, "Dockerfile", Some(Some(1))).automated);
    assert!(evidence(&scan, Signal::Container, "docker-compose.yml", Some(None)).automated);
    assert!(evidence(&scan, Signal::CodeReview, ".github/CODEOWNERS", Some(None)).automated);
    assert!(
        evidence(
            &scan,
            Signal::DependencyUpdates,
            ".github/dependabot.yml",
            Some(None)
        )
        .automated
    );
    let changelog = evidence(&scan, Signal::ReleaseVersioning, "CHANGELOG.md", Some(None));
    assert_eq!(
        changelog.summary,
        "CHANGELOG.md: 2 released versions (latest 1.2.0)"
    );
    assert!(evidence(&scan, Signal::Autoscaling, "infra/main.tf", Some(Some(1))).automated);
    let terraform = evidence(
        &scan,
        Signal::InfrastructureCode,
        "infra/main.tf",
        Some(None),
    );
    assert_eq!(
        terraform.summary,
        "infra/main.tf: Terraform in infra (2 .tf files)"
    );
    let dvc = evidence(&scan, Signal::TrainingPipeline, "dvc.yaml", Some(None));
    assert_eq!(
        dvc.summary,
        "dvc.yaml: DVC pipeline with 2 stages (prepare, train)"
    );
    assert!(!evidence(&scan, Signal::ExperimentTracking, "dvc.yaml", Some(None)).automated);
    assert!(
        evidence(&scan, Signal::Notebook, "notebooks/eda.ipynb", Some(None))
            .summary
            .ends_with("(1 cells)")
    );
    assert!(has(&scan, Signal::FeatureImportance));
}

// -- the example projects

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

#[test]
fn the_wine_example() {
    let scan = scan_ok(&example("wine"));
    assert!(scan.manifest);
    assert_eq!(scan.project_name.as_deref(), Some("wine"));
    let locked = evidence(
        &scan,
        Signal::LockedEnvironment,
        "requirements.txt",
        Some(None),
    );
    assert!(locked.automated);
    assert!(
        locked.summary.starts_with("requirements.txt: "),
        "{}",
        locked.summary
    );
    assert!(locked.summary.ends_with(" packages pinned with hashes"));
    assert!(!has(&scan, Signal::UnpinnedRequirements));

    // The `tests` step runs pytest: every test file is automated.
    for file in [
        "tests/test_train.py",
        "tests/test_data.py",
        "tests/test_server.py",
    ] {
        let tests = evidence(&scan, Signal::UnitTests, file, None);
        assert!(tests.automated, "{tests:?}");
    }
    let tests = evidence(&scan, Signal::UnitTests, "tests/test_train.py", None);
    assert!(
        tests.summary.ends_with("; run by mlops.toml:28"),
        "{}",
        tests.summary
    );
    // `python -m wine_model.train` runs the training code.
    let training = evidence(&scan, Signal::TrainingCode, "wine_model/train.py", None);
    assert!(training.automated, "{training:?}");
    assert!(evidence(&scan, Signal::Reproducibility, "wine_model/train.py", None).automated);
    assert!(
        evidence(
            &scan,
            Signal::TrainingPipeline,
            "mlops.toml",
            Some(Some(38))
        )
        .automated
    );
    // Quality thresholds in the tests and in the gate.
    assert!(evidence(&scan, Signal::ModelValidation, "tests/test_train.py", None).automated);
    assert!(evidence(&scan, Signal::ModelValidation, "mlops.toml", Some(Some(44))).automated);
    assert!(
        evidence(
            &scan,
            Signal::BaselineComparison,
            "mlops.toml",
            Some(Some(44))
        )
        .automated
    );
    // The data: the validation step, the schema it reads, the data tests.
    assert!(evidence(&scan, Signal::DataTests, "mlops.toml", Some(Some(33))).automated);
    let schema = evidence(
        &scan,
        Signal::DataTests,
        "data/wine.schema.toml",
        Some(None),
    );
    assert!(schema.automated, "{schema:?}");
    assert!(evidence(&scan, Signal::DataTests, "tests/test_data.py", None).automated);
    assert!(evidence(&scan, Signal::NumericalChecks, "tests/test_data.py", None).automated);
    for (signal, line) in [
        (Signal::InfrastructureCode, 7),
        (Signal::LockedEnvironment, 22),
        (Signal::SecretScanning, 49),
        (Signal::Packaging, 54),
        (Signal::ModelRegistry, 54),
        (Signal::Deployment, 59),
        (Signal::SmokeTests, 64),
    ] {
        assert!(evidence(&scan, signal, "mlops.toml", Some(Some(line))).automated);
    }
    assert!(
        evidence(
            &scan,
            Signal::NumericalChecks,
            "data/smoke.json",
            Some(None)
        )
        .automated
    );
    // No CI: only the pipeline's steps run without a person.
    assert!(!has(&scan, Signal::CiConfig));
    let commands: Vec<&str> = scan.automation.iter().map(|c| c.command.as_str()).collect();
    assert_eq!(
        commands,
        [
            ".venv/bin/python -m pytest -q --junitxml=.mlops/reports/junit.xml",
            ".venv/bin/python -m wine_model.train --data data/wine.csv --model-dir model --metrics metrics.json",
        ]
    );
    assert!(scan.notes.is_empty(), "{:?}", scan.notes);
}

#[test]
fn the_iris_example() {
    let scan = scan_ok(&example("iris"));
    assert_eq!(scan.project_name.as_deref(), Some("iris"));
    // Cargo.lock sits at the workspace root, outside the example: the
    // environment step is the locked-environment evidence.
    assert!(
        scan.evidence
            .iter()
            .all(|e| e.source.describe() != "Cargo.lock")
    );
    let env = evidence(
        &scan,
        Signal::LockedEnvironment,
        "mlops.toml",
        Some(Some(26)),
    );
    assert!(env.automated);
    // cargo nextest runs the Rust tests.
    let tests = evidence(&scan, Signal::UnitTests, "src/model.rs", None);
    assert!(tests.automated, "{tests:?}");
    assert!(
        tests
            .summary
            .starts_with("src/model.rs: 5 tests; run by mlops.toml:33"),
        "{}",
        tests.summary
    );
    assert!(evidence(&scan, Signal::UnitTests, "tests/server.rs", None).automated);
    // `cargo run --bin iris -- train` runs the training code.
    let training = evidence(&scan, Signal::TrainingCode, "src/train.rs", None);
    assert!(training.automated, "{training:?}");
    assert!(evidence(&scan, Signal::Metrics, "src/prom.rs", None).automated);
    let schema = evidence(
        &scan,
        Signal::DataTests,
        "data/iris.schema.toml",
        Some(None),
    );
    assert!(schema.automated);
    assert!(evidence(&scan, Signal::ModelValidation, "mlops.toml", Some(Some(52))).automated);
    assert!(evidence(&scan, Signal::Reproducibility, "mlops.toml", Some(Some(63))).automated);
    assert!(
        evidence(
            &scan,
            Signal::ReleaseVersioning,
            "mlops.toml",
            Some(Some(109))
        )
        .automated
    );
    assert!(
        evidence(
            &scan,
            Signal::MonitoringConfig,
            "mlops.toml",
            Some(Some(133))
        )
        .automated
    );
    assert!(evidence(&scan, Signal::Alerting, "mlops.toml", Some(Some(133))).automated);
    assert!(evidence(&scan, Signal::LoadTest, "mlops.toml", Some(Some(153))).automated);
    assert!(evidence(&scan, Signal::ModelValidation, "mlops.toml", Some(Some(58))).automated);
    assert!(scan.notes.is_empty(), "{:?}", scan.notes);
}

#[test]
fn the_iris_gated_example() {
    let scan = scan_ok(&example("iris-gated"));
    assert_eq!(scan.project_name.as_deref(), Some("iris-gated"));
    assert_eq!(scan.files, 1);
    assert!(
        evidence(
            &scan,
            Signal::LockedEnvironment,
            "mlops.toml",
            Some(Some(19))
        )
        .automated
    );
    assert!(
        evidence(
            &scan,
            Signal::TrainingPipeline,
            "mlops.toml",
            Some(Some(23))
        )
        .automated
    );
    assert!(evidence(&scan, Signal::ModelValidation, "mlops.toml", Some(Some(27))).automated);
    // `baseline = "none"`: thresholds only.
    assert!(!has(&scan, Signal::BaselineComparison));
    assert!(evidence(&scan, Signal::SmokeTests, "mlops.toml", Some(Some(45))).automated);
    assert!(evidence(&scan, Signal::LoadTest, "mlops.toml", Some(Some(70))).automated);
    // The load-check step is the one load test (the smoke test is not).
    assert_eq!(
        scan.evidence
            .iter()
            .filter(|e| e.signal == Signal::LoadTest)
            .count(),
        1
    );
    // The steps that run commands (`run`); the load check is a built-in kind.
    assert_eq!(scan.automation.len(), 2);
}

/// A large tree is walked whole, and every test file in it is linked to
/// the workflow that runs pytest. (Its speed is measured by the
/// `bench_assess` example, not here: no timing in tests.)
#[test]
fn a_large_tree_is_walked_whole_and_linked() {
    let built = synthetic_tree(2_000);
    let scan = scan_ok(built.path());
    assert_eq!(scan.files, 2_000);
    let tests: Vec<&Evidence> = scan
        .evidence
        .iter()
        .filter(|e| e.signal == Signal::UnitTests)
        .collect();
    // 200 pytest files and 200 Rust files with a #[test].
    assert_eq!(tests.len(), 400, "{:#?}", &tests[..3.min(tests.len())]);
    let python: Vec<&&Evidence> = tests
        .iter()
        .filter(|e| e.source.describe().ends_with(".py") || e.source.describe().contains(".py:"))
        .collect();
    assert_eq!(python.len(), 200);
    assert!(python.iter().all(|e| e.automated), "pytest in CI runs them");
}

fn synthetic_tree(files: usize) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A git work tree: every directory is checked against .gitignore.
    git2::Repository::init(root).unwrap();
    write(root, ".gitignore", b"*.log\nscratch/\n");
    write(root, ".github/workflows/ci.yml", WORKFLOW.as_bytes());
    write(root, "requirements.txt", HASHED.as_bytes());
    let body = format!(
        "{TRAIN}\n{}",
        "x = 1  # padding line of ordinary code\n".repeat(150)
    );
    for i in 0..files.saturating_sub(3) {
        let package = i / 100;
        let path = match i % 10 {
            0 => format!("pkg{package}/tests/test_{i}.py"),
            1 => format!("pkg{package}/data/{i}.csv"),
            2 => format!("pkg{package}/src/m{i}.rs"),
            3 => format!("pkg{package}/k8s/{i}.yaml"),
            4 => format!("pkg{package}/docs/{i}.md"),
            _ => format!("pkg{package}/mod{i}.py"),
        };
        let content = match i % 10 {
            0 => TEST_FILE.to_owned(),
            2 => "fn f() {}\n#[test]\nfn t() { assert!(f() == ()); }\n".to_owned(),
            3 => "apiVersion: apps/v1\nkind: Deployment\n".to_owned(),
            _ => body.clone(),
        };
        write(root, &path, content.as_bytes());
    }
    dir
}
