//! What other CI systems read: a run as JUnit XML, and workflow files that
//! run the pipeline on every push.
//!
//! JUnit is what every CI system displays, so [`run_junit`] writes a run
//! with one `<testsuite>` per stage and one `<testcase>` per step (failed
//! and timed-out steps are failures, cancelled ones errors, gated and
//! unrun ones skipped), followed by the individual test cases that `tests`
//! steps ingested. [`workflow`] writes a GitHub Actions or GitLab CI file
//! that installs mlops, restores `.mlops/` (the ledger that makes caching
//! and gating work across CI runs), runs the pipeline and publishes the
//! JUnit report.

use std::fmt::Write as _;
use std::path::Path;

use mlops_core::ledger::StepSummary;
use mlops_core::{RunSummary, StepStatus};
use quick_xml::escape::escape;

use crate::junit::{Outcome, TestReport};

/// Lines of a failed step's log put into its `<failure>` text.
const LOG_TAIL_LINES: usize = 40;

fn secs(ms: Option<i64>) -> String {
    format!("{:.3}", ms.unwrap_or(0) as f64 / 1000.0)
}

/// XML-escapes text for an attribute or element, dropping the control
/// characters XML 1.0 forbids (test output is full of ANSI escapes).
fn xml(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t' | '\r'))
        .collect();
    escape(clean.as_str()).into_owned()
}

/// The last lines of a log file, if it can be read.
fn log_tail(path: &str, lines: usize) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)))
        .ok()?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let all: Vec<&str> = text.lines().collect();
    Some(all[all.len().saturating_sub(lines)..].join("\n"))
}

/// Writes a recorded run as JUnit XML.
pub fn run_junit(run: &RunSummary) -> String {
    let mut suites = String::new();
    let (mut total, mut failures, mut errors, mut skipped) = (0u64, 0u64, 0u64, 0u64);
    let mut time_ms = 0i64;
    for stage in &run.stages {
        let steps: Vec<&StepSummary> = run.steps.iter().filter(|s| s.stage == stage.name).collect();
        let mut cases = String::new();
        let (mut f, mut e, mut s) = (0u64, 0u64, 0u64);
        let mut t = 0i64;
        for step in &steps {
            t += step.duration_ms.unwrap_or(0);
            let _ = write!(
                cases,
                "    <testcase classname=\"mlops.{}\" name=\"{}\" time=\"{}\"",
                stage.name,
                xml(&step.name),
                secs(step.duration_ms)
            );
            let reason = step.reason.as_deref().unwrap_or("");
            let body = match step.status {
                StepStatus::Passed => None,
                StepStatus::Cached => Some(format!(
                    "      <system-out>{}</system-out>\n",
                    xml(&format!("cached: {reason}"))
                )),
                StepStatus::Failed | StepStatus::TimedOut => {
                    f += 1;
                    let tail = step
                        .log
                        .as_deref()
                        .and_then(|l| log_tail(l, LOG_TAIL_LINES))
                        .unwrap_or_default();
                    Some(format!(
                        "      <failure message=\"{}\" type=\"{}\">{}</failure>\n",
                        xml(reason),
                        step.status,
                        xml(&tail)
                    ))
                }
                StepStatus::Cancelled => {
                    e += 1;
                    Some(format!(
                        "      <error message=\"{}\" type=\"cancelled\"/>\n",
                        xml(reason)
                    ))
                }
                StepStatus::Gated | StepStatus::Pending => {
                    s += 1;
                    let why = if step.status == StepStatus::Pending {
                        "not run (the run did not finish)"
                    } else {
                        reason
                    };
                    Some(format!("      <skipped message=\"{}\"/>\n", xml(why)))
                }
            };
            match body {
                None => cases.push_str("/>\n"),
                Some(b) => {
                    cases.push_str(">\n");
                    cases.push_str(&b);
                    cases.push_str("    </testcase>\n");
                }
            }
        }
        let _ = write!(
            suites,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"{e}\" skipped=\"{s}\" time=\"{}\">\n{cases}  </testsuite>\n",
            stage.name,
            steps.len(),
            secs(Some(t))
        );
        total += steps.len() as u64;
        failures += f;
        errors += e;
        skipped += s;
        time_ms += t;
    }
    // The test cases that `tests` steps ingested, one suite per step.
    for step in &run.steps {
        for ev in step.evidence.iter().filter(|e| e.kind == "tests") {
            let Ok(report) = serde_json::from_value::<TestReport>(ev.body.clone()) else {
                continue;
            };
            let mut cases = String::new();
            for c in &report.cases {
                let _ = write!(
                    cases,
                    "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                    xml(&c.classname),
                    xml(&c.name),
                    c.time_s.unwrap_or(0.0)
                );
                let msg = xml(c.message.as_deref().unwrap_or(""));
                match (c.outcome, c.flaky) {
                    (Outcome::Passed, false) => cases.push_str("/>\n"),
                    (Outcome::Passed, true) => {
                        let _ = write!(
                            cases,
                            ">\n      <flakyFailure message=\"{msg}\"/>\n    </testcase>\n"
                        );
                    }
                    (Outcome::Failed, _) => {
                        let _ = write!(
                            cases,
                            ">\n      <failure message=\"{msg}\"/>\n    </testcase>\n"
                        );
                    }
                    (Outcome::Error, _) => {
                        let _ = write!(
                            cases,
                            ">\n      <error message=\"{msg}\"/>\n    </testcase>\n"
                        );
                    }
                    (Outcome::Skipped, _) => {
                        let _ = write!(
                            cases,
                            ">\n      <skipped message=\"{msg}\"/>\n    </testcase>\n"
                        );
                    }
                }
            }
            let _ = write!(
                suites,
                "  <testsuite name=\"{}/{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n{cases}  </testsuite>\n",
                step.stage,
                xml(&step.name),
                report.cases.len(),
                report.failed,
                report.errors,
                report.skipped,
                report.time_s
            );
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"mlops {} run {}\" tests=\"{total}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{}\" timestamp=\"{}\">\n{suites}</testsuites>\n",
        xml(&run.project),
        run.run_id,
        secs(Some(time_ms)),
        xml(&run.started_at)
    )
}

/// JUnit XML for a run that could not happen (an invalid manifest, a
/// refused stage): one errored test case that says why, so the CI system
/// shows the reason instead of an empty report.
pub fn error_junit(project: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"mlops {p}\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"0\">\n  <testsuite name=\"mlops\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"0\">\n    <testcase classname=\"mlops\" name=\"pipeline\" time=\"0\">\n      <error message=\"{m}\" type=\"not-run\"/>\n    </testcase>\n  </testsuite>\n</testsuites>\n",
        p = xml(project),
        m = xml(message)
    )
}

/// A CI system a workflow can be written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiSystem {
    /// GitHub Actions.
    Github,
    /// GitLab CI/CD.
    Gitlab,
}

impl std::str::FromStr for CiSystem {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "github" => Ok(CiSystem::Github),
            "gitlab" => Ok(CiSystem::Gitlab),
            other => Err(format!(
                "unknown CI system `{other}`; expected `github` or `gitlab`"
            )),
        }
    }
}

impl CiSystem {
    /// Where the workflow file goes, relative to the repository root.
    pub fn default_path(self) -> &'static str {
        match self {
            CiSystem::Github => ".github/workflows/mlops.yml",
            CiSystem::Gitlab => ".gitlab-ci.yml",
        }
    }
}

/// What a workflow needs to know about the project.
#[derive(Debug, Clone)]
pub struct WorkflowSpec {
    /// The project's name.
    pub project: String,
    /// The project directory relative to the repository root (`.` when it
    /// is the root), with `/` separators.
    pub project_dir: String,
    /// The shell command that installs the `mlops` binary.
    pub install: String,
    /// Whether the project needs Python (a `requirements.txt` or
    /// `pyproject.toml` beside `mlops.toml`).
    pub python: bool,
}

impl WorkflowSpec {
    /// Describes the project at `project_dir` inside the repository at
    /// `repo_root` (the project itself when it is in no repository).
    pub fn for_project(
        project: &str,
        project_dir: &Path,
        repo_root: &Path,
        install: String,
    ) -> Self {
        let rel = project_dir
            .strip_prefix(repo_root)
            .map(|p| {
                p.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default();
        WorkflowSpec {
            project: project.to_owned(),
            project_dir: if rel.is_empty() { ".".to_owned() } else { rel },
            install,
            python: project_dir.join("requirements.txt").is_file()
                || project_dir.join("pyproject.toml").is_file(),
        }
    }

    fn in_dir(&self, file: &str) -> String {
        if self.project_dir == "." {
            file.to_owned()
        } else {
            format!("{}/{file}", self.project_dir)
        }
    }
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The workflow file's text.
pub fn workflow(system: CiSystem, spec: &WorkflowSpec) -> String {
    match system {
        CiSystem::Github => github(spec),
        CiSystem::Gitlab => gitlab(spec),
    }
}

fn github(spec: &WorkflowSpec) -> String {
    let state = spec.in_dir(".mlops");
    let junit = spec.in_dir("mlops-junit.xml");
    let python = if spec.python {
        "      - name: Set up Python\n        uses: actions/setup-python@v5\n        with:\n          python-version: \"3.11\"\n"
    } else {
        ""
    };
    format!(
        r#"# Written by `mlops ci export github`. Runs the {project} pipeline on every
# push and pull request, keeping the ledger (.mlops/) between runs so that
# unchanged steps are cached and stage gates see earlier evidence.
name: {name}

on:
  push:
  pull_request:
  workflow_dispatch:

concurrency:
  group: mlops-${{{{ github.ref }}}}
  cancel-in-progress: false

jobs:
  pipeline:
    runs-on: ubuntu-latest
    timeout-minutes: 60
    defaults:
      run:
        working-directory: {dir}
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - name: Set up Rust
        run: rustup toolchain install stable --profile minimal
{python}      - name: Cache cargo
        uses: actions/cache@v4
        with:
          path: |
            ~/.cargo/bin
            ~/.cargo/registry
            ~/.cargo/git
          key: cargo-${{{{ runner.os }}}}-${{{{ hashFiles('**/Cargo.lock') }}}}
      - name: Install mlops
        run: {install}
      - name: Restore the mlops ledger
        uses: actions/cache@v4
        with:
          path: {state}
          key: mlops-ledger-${{{{ runner.os }}}}-${{{{ github.ref_name }}}}-${{{{ github.sha }}}}
          restore-keys: |
            mlops-ledger-${{{{ runner.os }}}}-${{{{ github.ref_name }}}}-
            mlops-ledger-${{{{ runner.os }}}}-
      - name: Run the pipeline
        run: mlops pipeline run --junit mlops-junit.xml
      - name: Upload the JUnit report
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: mlops-junit
          path: {junit}
          if-no-files-found: warn
"#,
        project = one_line(&spec.project),
        name = q(&format!("mlops {}", spec.project)),
        dir = q(&spec.project_dir),
        install = q(&format!("command -v mlops || {}", spec.install)),
        state = q(&state),
        junit = q(&junit),
    )
}

/// Text safe inside a YAML comment: one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` as one `/bin/sh` word.
fn shell_word(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn gitlab(spec: &WorkflowSpec) -> String {
    let state = spec.in_dir(".mlops/");
    let junit = spec.in_dir("mlops-junit.xml");
    let python = if spec.python {
        "    - apt-get update && apt-get install -y --no-install-recommends python3 python3-venv\n"
    } else {
        ""
    };
    format!(
        r#"# Written by `mlops ci export gitlab`. Runs the {project} pipeline on every
# push, keeping the ledger (.mlops/) in the cache between pipelines so that
# unchanged steps are cached and stage gates see earlier evidence.
stages:
  - pipeline

mlops:
  stage: pipeline
  image: rust:1
  variables:
    GIT_DEPTH: "0"
    CARGO_HOME: "$CI_PROJECT_DIR/.cargo-home"
  cache:
    - key: mlops-ledger-$CI_COMMIT_REF_SLUG
      paths:
        - {state}
    - key: cargo
      paths:
        - .cargo-home/
  before_script:
{python}    - export PATH="$CARGO_HOME/bin:$PATH"
    - {install}
  script:
    - {cd}
    - mlops pipeline run --junit mlops-junit.xml
  artifacts:
    when: always
    paths:
      - {junit}
    reports:
      junit: {junit}
"#,
        project = one_line(&spec.project),
        cd = q(&format!("cd {}", shell_word(&spec.project_dir))),
        install = q(&format!("command -v mlops || {}", spec.install)),
        state = q(&state),
        junit = q(&junit),
    )
}
