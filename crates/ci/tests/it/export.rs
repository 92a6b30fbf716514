//! Runs as JUnit XML, and CI workflow files that parse as YAML.

use std::path::Path;

use mlops_ci::export::{CiSystem, WorkflowSpec, error_junit, run_junit, workflow};
use mlops_ci::junit::{Outcome, TestReport, parse_cases};
use yaml_rust2::{Yaml, YamlLoader};

#[test]
fn a_run_becomes_junit_that_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = r#"[project]
name = "x & <y>"

[iac.steps.build]
run = "echo built"

[ci.steps.unit]
kind = "tests"
with = { command = "mkdir -p r && echo '<testsuite name=\"u\"><testcase classname=\"m\" name=\"a\"/><testcase classname=\"m\" name=\"b\"><failure message=\"b &lt; c\"/></testcase></testsuite>' > r/j.xml", junit = "r/j.xml" }

[ci.steps.lint]
run = '''printf 'bad \033[31mred\033[0m line\n'; exit 4'''

[cd.steps.deploy]
run = "echo never"
"#;
    let run = super::run_pipeline(dir.path(), manifest);
    let xml = run_junit(&run);
    let cases = parse_cases(xml.as_bytes(), Path::new("run.xml")).expect("well-formed JUnit");
    let report = TestReport::from_cases(vec![], cases);
    let outcome = |name: &str| {
        report
            .cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} in {xml}"))
            .clone()
    };
    assert_eq!(outcome("build").outcome, Outcome::Passed);
    assert_eq!(outcome("unit").outcome, Outcome::Failed);
    assert_eq!(outcome("lint").outcome, Outcome::Failed);
    assert_eq!(outcome("lint").message.as_deref(), Some("exit status 4"));
    assert_eq!(outcome("deploy").outcome, Outcome::Skipped);
    // The ingested test cases follow, in their own suite.
    assert_eq!(outcome("b").message.as_deref(), Some("b < c"));
    assert_eq!(outcome("b").suite, "ci/unit");
    assert!(
        xml.contains("name=\"mlops x &amp; &lt;y&gt; run 1\""),
        "{xml}"
    );
    assert!(!xml.contains('\u{1b}'), "control characters are dropped");
    assert!(
        xml.contains("bad [31mred[0m line"),
        "the log tail is included: {xml}"
    );
}

#[test]
fn an_error_report_is_valid_junit() {
    let xml = error_junit("p", "refusing to run stage `cd`: <reasons> & more");
    let cases = parse_cases(xml.as_bytes(), Path::new("e.xml")).unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].outcome, Outcome::Error);
    assert_eq!(
        cases[0].message.as_deref(),
        Some("refusing to run stage `cd`: <reasons> & more")
    );
}

fn parse_yaml(text: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

fn spec(dir: &str, python: bool) -> WorkflowSpec {
    WorkflowSpec {
        project: "iris: v2 #1\nkey: injected".to_owned(),
        project_dir: dir.to_owned(),
        install: "cargo install --locked --git https://example.invalid/mlops mlops-cli".to_owned(),
        python,
    }
}

#[test]
fn the_github_workflow_is_valid_yaml_that_runs_the_pipeline() {
    for (dir, python) in [(".", false), ("examples/my project: v2", true)] {
        let text = workflow(CiSystem::Github, &spec(dir, python));
        let y = parse_yaml(&text);
        assert!(!y["on"]["push"].is_badvalue(), "{text}");
        assert_eq!(y["name"].as_str(), Some("mlops iris: v2 #1\nkey: injected"));
        assert!(y["key"].is_badvalue(), "a project name cannot inject keys");
        let job = &y["jobs"]["pipeline"];
        assert_eq!(
            job["defaults"]["run"]["working-directory"].as_str(),
            Some(dir)
        );
        let steps = job["steps"].as_vec().unwrap();
        let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
        assert!(
            runs.contains(&"mlops pipeline run --junit mlops-junit.xml"),
            "{runs:?}"
        );
        assert!(
            runs.iter()
                .any(|r| r.starts_with("command -v mlops || cargo install"))
        );
        let cache = steps
            .iter()
            .find(|s| s["name"].as_str() == Some("Restore the mlops ledger"))
            .unwrap();
        let want = if dir == "." {
            ".mlops".to_owned()
        } else {
            format!("{dir}/.mlops")
        };
        assert_eq!(cache["with"]["path"].as_str(), Some(want.as_str()));
        let has_python = steps
            .iter()
            .any(|s| s["uses"].as_str() == Some("actions/setup-python@v5"));
        assert_eq!(has_python, python);
    }
}

#[test]
fn the_gitlab_pipeline_is_valid_yaml_that_keeps_the_ledger() {
    let text = workflow(CiSystem::Gitlab, &spec("examples/iris", false));
    let y = parse_yaml(&text);
    let job = &y["mlops"];
    let script: Vec<&str> = job["script"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        script,
        [
            "cd 'examples/iris'",
            "mlops pipeline run --junit mlops-junit.xml"
        ]
    );
    assert_eq!(
        job["cache"][0]["paths"][0].as_str(),
        Some("examples/iris/.mlops/")
    );
    assert_eq!(
        job["artifacts"]["reports"]["junit"].as_str(),
        Some("examples/iris/mlops-junit.xml")
    );
    assert_eq!(job["artifacts"]["when"].as_str(), Some("always"));
}

#[test]
fn workflow_spec_finds_the_project_directory_within_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("models/iris");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("requirements.txt"), "").unwrap();
    let s = WorkflowSpec::for_project("iris", &project, dir.path(), "x".to_owned());
    assert_eq!(s.project_dir, "models/iris");
    assert!(s.python);
    let s = WorkflowSpec::for_project("iris", dir.path(), dir.path(), "x".to_owned());
    assert_eq!(s.project_dir, ".");
    assert!(
        "bitbucket"
            .parse::<CiSystem>()
            .unwrap_err()
            .contains("expected `github` or `gitlab`")
    );
}
