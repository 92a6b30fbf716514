//! JUnit ingestion: the dialects real runners write, bad reports, and the
//! `tests` kind end to end through the engine with real processes.

use std::path::{Path, PathBuf};

use mlops_ci::junit::{Outcome, TestReport, parse_cases, read_cases};
use mlops_core::StepStatus;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/junit")
        .join(name)
}

/// Reads fixture files into one report and renders what matters.
fn check(files: &[&str]) -> String {
    let mut cases = Vec::new();
    for f in files {
        cases.extend(read_cases(&fixture(f)).unwrap_or_else(|e| panic!("{f}: {e}")));
    }
    let report = TestReport::from_cases(files.iter().map(|f| f.to_string()).collect(), cases);
    let mut out = format!("{}\n", report.summary());
    for c in &report.cases {
        out.push_str(&format!(
            "{:?}{} {} [{}] retries={} time={:?} {}\n",
            c.outcome,
            if c.flaky { " flaky" } else { "" },
            c.id(),
            c.suite,
            c.retries,
            c.time_s,
            c.message.as_deref().unwrap_or("-")
        ));
    }
    out
}

#[test]
fn pytest_report() {
    insta::assert_snapshot!(check(&["pytest.xml"]));
}

#[test]
fn nextest_report_with_flaky_and_retried_failures() {
    insta::assert_snapshot!(check(&["nextest.xml"]));
}

#[test]
fn nested_surefire_suites() {
    insta::assert_snapshot!(check(&["surefire-nested.xml"]));
}

fn parse(xml: &str) -> Result<Vec<mlops_ci::junit::TestCase>, String> {
    parse_cases(xml.as_bytes(), Path::new("report.xml")).map_err(|e| e.to_string())
}

#[test]
fn a_test_listed_twice_that_failed_then_passed_is_flaky() {
    let first = parse(r#"<testsuite name="s"><testcase classname="m" name="t"><failure message="boom"/></testcase><testcase classname="m" name="u"/></testsuite>"#).unwrap();
    let second =
        parse(r#"<testsuite name="s"><testcase classname="m" name="t"/></testsuite>"#).unwrap();
    let report = TestReport::from_cases(vec![], first.into_iter().chain(second).collect());
    assert_eq!(
        (report.tests, report.passed, report.failed, report.flaky),
        (2, 2, 0, 1)
    );
    let t = report.cases.iter().find(|c| c.name == "t").unwrap();
    assert!(t.flaky && t.outcome == Outcome::Passed && t.retries == 1);
}

#[test]
fn malformed_reports_are_errors_that_say_where() {
    let cases = [
        (
            "<testsuites><testsuite name=\"a\"><testcase name=\"x\"></testsuite>",
            "not well-formed",
        ),
        (
            "<html><body>502 Bad Gateway</body></html>",
            "not a JUnit report: the root element is <html>",
        ),
        ("", "no <testsuites>, <testsuite> or <testcase> element"),
        ("just text", "no <testsuites>"),
        (
            "<testsuites><testsuite name=\"a\"><testcase name=\"x\" time=\"1\"/></testsuites>",
            "not well-formed",
        ),
    ];
    for (xml, want) in cases {
        let err = parse(xml).expect_err(xml);
        assert!(err.contains(want), "{xml:?}: {err}");
        assert!(err.contains("report.xml"), "{err}");
    }
}

#[test]
fn entities_cdata_and_control_characters_survive() {
    let cases = parse(
        "<testsuite name=\"s\"><testcase name=\"t &amp; u\"><failure>a &lt; b &#233; <![CDATA[<raw>]]></failure></testcase></testsuite>",
    )
    .unwrap();
    assert_eq!(cases[0].name, "t & u");
    assert_eq!(cases[0].message.as_deref(), Some("a < b é <raw>"));
}

const WRITE_PASSING: &str = r#"mkdir -p reports && cat > reports/junit.xml <<'X'
<testsuites><testsuite name="unit"><testcase classname="m" name="a" time="0.1"/><testcase classname="m" name="b" time="0.2"/></testsuite></testsuites>
X"#;

fn manifest(command: &str, extra: &str) -> String {
    let command = serde_json::to_string(command).unwrap();
    format!(
        "[project]\nname = \"t\"\n\n[ci.steps.unit]\nkind = \"tests\"\n{extra}with = {{ command = {command}, junit = \"reports/*.xml\" }}\n"
    )
}

fn tests_evidence(run: &mlops_core::RunSummary) -> TestReport {
    let ev = super::ci_step(run)
        .evidence
        .iter()
        .find(|e| e.kind == "tests")
        .expect("tests evidence recorded");
    serde_json::from_value(ev.body.clone()).expect("evidence is a TestReport")
}

#[test]
fn passing_tests_pass_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let run = super::run_pipeline(dir.path(), &manifest(WRITE_PASSING, ""));
    assert_eq!(
        super::ci_step(&run).status,
        StepStatus::Passed,
        "{:?}",
        super::ci_step(&run).reason
    );
    let report = tests_evidence(&run);
    assert_eq!((report.tests, report.passed), (2, 2));
    assert!((report.time_s - 0.3).abs() < 1e-9);
}

#[test]
fn failing_tests_fail_the_step_with_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = r#"mkdir -p reports && printf '%s' '<testsuite name="u"><testcase classname="m" name="ok"/><testcase classname="m" name="bad"><failure message="expected 3, got 4"/></testcase></testsuite>' > reports/r.xml; exit 1"#;
    let run = super::run_pipeline(dir.path(), &manifest(cmd, ""));
    let step = super::ci_step(&run);
    assert_eq!(step.status, StepStatus::Failed);
    let reason = step.reason.as_deref().unwrap();
    assert_eq!(reason, "1 of 2 tests failed: m::bad (expected 3, got 4)");
    assert_eq!(tests_evidence(&run).failed, 1);
}

#[test]
fn a_command_that_writes_no_report_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = super::run_pipeline(dir.path(), &manifest("echo no tests here; exit 2", ""));
    let reason = super::ci_step(&run).reason.as_deref().unwrap();
    assert_eq!(
        reason,
        "the test command failed (exit status 2) and wrote no JUnit report matching reports/*.xml"
    );
    assert!(super::ci_step(&run).evidence.is_empty());
}

#[test]
fn a_stale_report_from_an_earlier_run_does_not_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("reports")).unwrap();
    let old = dir.path().join("reports/old.xml");
    std::fs::write(
        &old,
        "<testsuite name=\"u\"><testcase name=\"a\"/></testsuite>",
    )
    .unwrap();
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(past)
        .unwrap();
    let run = super::run_pipeline(dir.path(), &manifest("true", ""));
    let reason = super::ci_step(&run).reason.as_deref().unwrap();
    assert!(reason.contains("only a stale reports/old.xml"), "{reason}");
}

#[test]
fn a_malformed_report_fails_the_step_and_the_ledger_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = "mkdir -p reports && echo '<testsuite><testcase name=\"a\">' > reports/r.xml";
    let run = super::run_pipeline(dir.path(), &manifest(cmd, ""));
    let step = super::ci_step(&run);
    assert_eq!(step.status, StepStatus::Failed);
    assert!(
        step.reason
            .as_deref()
            .unwrap()
            .contains("reports/r.xml is not well-formed XML"),
        "{:?}",
        step.reason
    );
    assert_eq!(run.status, mlops_core::RunStatus::Failed);
}

#[test]
fn no_tests_at_all_is_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = "mkdir -p reports && echo '<testsuites/>' > reports/r.xml";
    let run = super::run_pipeline(dir.path(), &manifest(cmd, ""));
    assert_eq!(
        super::ci_step(&run).reason.as_deref(),
        Some(
            "only 0 tests ran (at least 1 required by `min-tests`): 0 tests: 0 passed, 0 failed, 0 errors, 0 skipped in 0.00s"
        )
    );
}

#[test]
fn a_test_that_fails_then_passes_on_a_step_retry_is_flagged_flaky() {
    let dir = tempfile::tempdir().unwrap();
    // First attempt: `b` fails; second attempt: all pass.
    let cmd = r#"mkdir -p reports
if [ -e attempt1 ]; then
  echo '<testsuite name="u"><testcase classname="m" name="a"/><testcase classname="m" name="b"/></testsuite>' > reports/r.xml
else
  touch attempt1
  echo '<testsuite name="u"><testcase classname="m" name="a"/><testcase classname="m" name="b"><failure message="timing"/></testcase></testsuite>' > reports/r.xml
  exit 1
fi"#;
    let run = super::run_pipeline(dir.path(), &manifest(cmd, "retries = 1\n"));
    let step = super::ci_step(&run);
    assert_eq!(step.status, StepStatus::Passed, "{:?}", step.reason);
    assert_eq!(step.attempts, 2);
    let report = tests_evidence(&run);
    assert_eq!((report.passed, report.flaky), (2, 1));
    assert!(report.cases.iter().any(|c| c.name == "b" && c.flaky));
}

#[test]
fn bad_parameters_are_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mlops.toml"),
        "[project]\nname = \"t\"\n\n[ci.steps.unit]\nkind = \"tests\"\nwith = { command = \"true\", junit = \"/abs/*.xml\", min-test = 3 }\n",
    )
    .unwrap();
    let Err(err) = mlops_core::Manifest::load(dir.path(), &super::registry()) else {
        panic!("the manifest is invalid")
    };
    let err = err.to_string();
    assert!(err.contains("unknown field `min-test`"), "{err}");
}

#[test]
fn the_same_test_in_two_files_counts_twice_so_a_failure_is_never_hidden() {
    let failing = parse(r#"<testsuite name="pytest"><testcase classname="m" name="t"><failure message="gpu"/></testcase></testsuite>"#).unwrap();
    let passing =
        parse(r#"<testsuite name="pytest"><testcase classname="m" name="t"/></testsuite>"#)
            .unwrap();
    for files in [
        vec![
            ("a-gpu.xml".to_owned(), failing.clone()),
            ("b-cpu.xml".to_owned(), passing.clone()),
        ],
        vec![
            ("a-cpu.xml".to_owned(), passing),
            ("b-gpu.xml".to_owned(), failing),
        ],
    ] {
        let report = TestReport::from_files(files);
        assert_eq!(
            (report.tests, report.passed, report.failed, report.flaky),
            (2, 1, 1, 0)
        );
    }
}

#[test]
fn non_finite_durations_are_dropped() {
    let cases = parse(r#"<testsuite name="s"><testcase name="a" time="NaN"/><testcase name="b" time="inf"/></testsuite>"#).unwrap();
    assert!(cases.iter().all(|c| c.time_s.is_none()));
}
