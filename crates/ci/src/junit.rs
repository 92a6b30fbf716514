//! The `tests` kind: run a test command and ingest the JUnit XML it writes.
//!
//! JUnit XML is the lingua franca of test runners: pytest `--junitxml`,
//! cargo-nextest's `[profile.x.junit]`, Maven Surefire, Jest reporters. This
//! module reads any of them into a [`TestReport`] (counts, every failure with
//! its name and message, durations, flaky tests) that the step records as
//! evidence. It streams the XML, so a large report costs little memory, and
//! tolerates the dialects' differences: nested `<testsuite>`s, a bare
//! `<testsuite>` root, Surefire/nextest `<flakyFailure>` and `<rerunFailure>`
//! retries, and the same test listed twice (a rerun).

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use mlops_core::manifest::Diagnostic;
use mlops_core::{CommandEnd, KindParams, Stage, StepAction, StepContext, StepFailure, StepKind};
use quick_xml::events::{BytesStart, Event};
use serde::{Deserialize, Serialize};

/// How a test case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It passed (possibly after failing: see [`TestCase::flaky`]).
    Passed,
    /// An assertion failed (`<failure>`).
    Failed,
    /// It could not run to an assertion (`<error>`).
    Error,
    /// It was skipped (`<skipped>`).
    Skipped,
}

/// One test case of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    /// The suite it was listed in.
    pub suite: String,
    /// Its class or module (`classname`), possibly empty.
    pub classname: String,
    /// Its name.
    pub name: String,
    /// Seconds it took, when the report says.
    pub time_s: Option<f64>,
    /// How it ended.
    pub outcome: Outcome,
    /// The failure, error or skip message (first line of the text when the
    /// `message` attribute is missing), at most 2000 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// It failed, then passed on a retry.
    pub flaky: bool,
    /// Failed attempts recorded before the final one.
    pub retries: u32,
}

impl TestCase {
    /// `classname::name`, or `name` when there is no class.
    pub fn id(&self) -> String {
        if self.classname.is_empty() {
            self.name.clone()
        } else {
            format!("{}::{}", self.classname, self.name)
        }
    }
}

/// Everything read from one or more JUnit files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    /// The files read, as given.
    pub files: Vec<String>,
    /// Test cases.
    pub tests: u64,
    /// Passed, flaky ones included.
    pub passed: u64,
    /// Failed.
    pub failed: u64,
    /// Errored.
    pub errors: u64,
    /// Skipped.
    pub skipped: u64,
    /// Passed only after failing.
    pub flaky: u64,
    /// Sum of the cases' durations, in seconds.
    pub time_s: f64,
    /// The cases; failures, errors and flaky ones first. Capped at
    /// [`MAX_CASES`]; the counts above always cover every case.
    pub cases: Vec<TestCase>,
    /// Whether `cases` was cut at [`MAX_CASES`].
    pub truncated: bool,
}

/// Most cases kept in a report's `cases`.
pub const MAX_CASES: usize = 5000;
const MAX_MESSAGE: usize = 2000;

/// Why a JUnit file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    /// The file could not be opened or read.
    #[error("cannot read JUnit report {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It is not well-formed XML.
    #[error("JUnit report {path} is not well-formed XML at byte {position}: {message}")]
    Xml {
        /// The file.
        path: PathBuf,
        /// Byte offset of the problem.
        position: u64,
        /// What the parser said.
        message: String,
    },
    /// It is XML, but not JUnit.
    #[error("{path} is not a JUnit report: {message}")]
    NotJunit {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl TestReport {
    /// The failed and errored cases.
    pub fn failures(&self) -> impl Iterator<Item = &TestCase> {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed | Outcome::Error))
    }

    /// A report of several files: the cases of each file are merged as
    /// [`TestReport::from_cases`] does, but a test in two files (two runs of
    /// it, in two configurations) counts twice, so a failure in one file is
    /// never hidden by a pass in another.
    pub fn from_files(files: Vec<(String, Vec<TestCase>)>) -> TestReport {
        let mut names = Vec::new();
        let mut cases = Vec::new();
        for (name, file_cases) in files {
            names.push(name);
            cases.extend(merge_reruns(file_cases));
        }
        let mut report = TestReport::tally(cases);
        report.files = names;
        report
    }

    /// Merges the cases of one test run into a report. The same test listed
    /// more than once (a runner's rerun) counts once: as passed and flaky if
    /// it passed after failing, otherwise as its last listing.
    pub fn from_cases(files: Vec<String>, cases: Vec<TestCase>) -> TestReport {
        let mut report = TestReport::tally(merge_reruns(cases));
        report.files = files;
        report
    }

    /// Counts cases, and orders them failures first (then flaky ones).
    fn tally(mut cases: Vec<TestCase>) -> TestReport {
        let mut report = TestReport::default();
        for c in &cases {
            report.tests += 1;
            report.time_s += c.time_s.unwrap_or(0.0);
            match c.outcome {
                Outcome::Passed => report.passed += 1,
                Outcome::Failed => report.failed += 1,
                Outcome::Error => report.errors += 1,
                Outcome::Skipped => report.skipped += 1,
            }
            report.flaky += u64::from(c.flaky);
        }
        // Stable: within a rank, report order.
        cases.sort_by_key(|c| match (c.outcome, c.flaky) {
            (Outcome::Failed | Outcome::Error, _) => 0,
            (_, true) => 1,
            _ => 2,
        });
        report.truncated = cases.len() > MAX_CASES;
        cases.truncate(MAX_CASES);
        report.cases = cases;
        report
    }

    /// One line: `12 tests: 10 passed (1 flaky), 1 failed, 0 errors, 1 skipped`.
    pub fn summary(&self) -> String {
        let flaky = if self.flaky > 0 {
            format!(" ({} flaky)", self.flaky)
        } else {
            String::new()
        };
        format!(
            "{} tests: {} passed{flaky}, {} failed, {} errors, {} skipped in {:.2}s",
            self.tests, self.passed, self.failed, self.errors, self.skipped, self.time_s
        )
    }
}

/// One listing per test: a test listed more than once in a run counts as
/// passed and flaky if it passed after failing, otherwise as its last
/// listing.
fn merge_reruns(cases: Vec<TestCase>) -> Vec<TestCase> {
    let mut merged: BTreeMap<(String, String, String), TestCase> = BTreeMap::new();
    let mut order = Vec::new();
    for case in cases {
        let key = (
            case.suite.clone(),
            case.classname.clone(),
            case.name.clone(),
        );
        match merged.get_mut(&key) {
            None => {
                order.push(key.clone());
                merged.insert(key, case);
            }
            Some(prev) => {
                let failed_before = matches!(prev.outcome, Outcome::Failed | Outcome::Error);
                let retries = prev.retries + u32::from(failed_before) + case.retries;
                if case.outcome == Outcome::Passed && (failed_before || prev.flaky) {
                    *prev = TestCase {
                        flaky: true,
                        retries,
                        ..case
                    };
                } else if case.outcome != Outcome::Skipped || prev.outcome == Outcome::Skipped {
                    let flaky = prev.flaky && case.outcome == Outcome::Passed;
                    *prev = TestCase {
                        flaky: flaky || case.flaky,
                        retries,
                        ..case
                    };
                }
            }
        }
    }
    order
        .into_iter()
        .filter_map(|k| merged.remove(&k))
        .collect()
}

/// Reads the test cases of one JUnit XML file.
pub fn read_cases(path: &Path) -> Result<Vec<TestCase>, JunitError> {
    let file = std::fs::File::open(path).map_err(|source| JunitError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_cases(std::io::BufReader::new(file), path)
}

/// Reads the test cases of JUnit XML from `input`; `path` names it in
/// errors.
pub fn parse_cases(input: impl BufRead, path: &Path) -> Result<Vec<TestCase>, JunitError> {
    let mut reader = quick_xml::Reader::from_reader(input);
    reader.config_mut().check_end_names = true;
    let mut buf = Vec::new();
    let mut suites: Vec<String> = Vec::new();
    let mut cases = Vec::new();
    let mut current: Option<TestCase> = None;
    // Inside a <failure>/<error>/<skipped>/flaky element: which, and its text.
    let mut detail: Option<(Detail, Option<String>, String)> = None;
    let mut saw_root = false;
    // Open elements, to notice a report cut off mid-way (a killed runner).
    let mut open: Vec<String> = Vec::new();
    let xml_err = |reader: &quick_xml::Reader<_>, e: &dyn std::fmt::Display| JunitError::Xml {
        path: path.to_path_buf(),
        position: reader.error_position(),
        message: e.to_string(),
    };
    loop {
        let event = match reader.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(e) => return Err(xml_err(&reader, &e)),
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let name = local(e);
                if !empty {
                    open.push(name.clone());
                }
                match name.as_str() {
                    "testsuites" => saw_root = true,
                    "testsuite" => {
                        saw_root = true;
                        if !empty {
                            suites.push(attr(e, "name").unwrap_or_default());
                        }
                    }
                    "testcase" => {
                        if !saw_root {
                            // A bare <testcase> root is unusual but harmless.
                            saw_root = true;
                        }
                        let case = TestCase {
                            suite: suites.last().cloned().unwrap_or_default(),
                            classname: attr(e, "classname").unwrap_or_default(),
                            name: attr(e, "name").unwrap_or_default(),
                            time_s: attr(e, "time")
                                .and_then(|t| t.trim().parse().ok())
                                .filter(|t: &f64| t.is_finite()),
                            outcome: Outcome::Passed,
                            message: None,
                            flaky: false,
                            retries: 0,
                        };
                        if empty {
                            cases.push(case);
                        } else {
                            current = Some(case);
                        }
                    }
                    other => {
                        if let (Some(kind), Some(_)) = (Detail::of(other), current.as_ref()) {
                            let message = attr(e, "message");
                            if empty {
                                apply_detail(current.as_mut(), kind, message, "");
                            } else {
                                detail = Some((kind, message, String::new()));
                            }
                        } else if !saw_root {
                            return Err(JunitError::NotJunit {
                                path: path.to_path_buf(),
                                message: format!(
                                    "the root element is <{other}>, not <testsuites> or <testsuite>"
                                ),
                            });
                        }
                    }
                }
            }
            Event::Text(t) => {
                if let Some((_, _, text)) = detail.as_mut()
                    && text.len() < MAX_MESSAGE
                {
                    text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some((_, _, text)) = detail.as_mut()
                    && text.len() < MAX_MESSAGE
                {
                    text.push_str(&String::from_utf8_lossy(t.as_ref().as_bytes()));
                }
            }
            Event::GeneralRef(r) => {
                if let Some((_, _, text)) = detail.as_mut() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => text.push(c),
                        _ => {
                            let name = r.into_inner();
                            match quick_xml::escape::resolve_predefined_entity(&name) {
                                Some(s) => text.push_str(s),
                                None => {
                                    text.push('&');
                                    text.push_str(&name);
                                    text.push(';');
                                }
                            }
                        }
                    }
                }
            }
            Event::End(ref e) => match {
                open.pop();
                local_end(e)
            }
            .as_str()
            {
                "testsuite" => {
                    suites.pop();
                }
                "testcase" => {
                    if let Some(case) = current.take() {
                        cases.push(case);
                    }
                }
                other => {
                    if let Some((kind, message, text)) = detail.take() {
                        if Detail::of(other) == Some(kind) {
                            apply_detail(current.as_mut(), kind, message, &text);
                        } else {
                            detail = Some((kind, message, text));
                        }
                    }
                }
            },
            Event::Eof => {
                if let Some(unclosed) = open.last() {
                    return Err(JunitError::Xml {
                        path: path.to_path_buf(),
                        position: reader.buffer_position(),
                        message: format!(
                            "the report ends inside <{unclosed}> (was the test runner killed?)"
                        ),
                    });
                }
                break;
            }
            _ => {}
        }
        buf.clear();
    }
    if !saw_root {
        return Err(JunitError::NotJunit {
            path: path.to_path_buf(),
            message: "it has no <testsuites>, <testsuite> or <testcase> element".to_owned(),
        });
    }
    Ok(cases)
}

/// The child elements of a `<testcase>` that change its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    Failure,
    Error,
    Skipped,
    /// A failed attempt before a pass (`flakyFailure`, `flakyError`).
    Flaky,
    /// A failed attempt before the final failure (`rerunFailure`, `rerunError`).
    Rerun,
}

impl Detail {
    fn of(element: &str) -> Option<Detail> {
        Some(match element {
            "failure" => Detail::Failure,
            "error" => Detail::Error,
            "skipped" => Detail::Skipped,
            "flakyFailure" | "flakyError" => Detail::Flaky,
            "rerunFailure" | "rerunError" => Detail::Rerun,
            _ => return None,
        })
    }
}

fn apply_detail(case: Option<&mut TestCase>, kind: Detail, message: Option<String>, text: &str) {
    let Some(case) = case else { return };
    let message = message
        .filter(|m| !m.trim().is_empty())
        .or_else(|| {
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_owned)
        })
        .map(|m| truncate(&m, MAX_MESSAGE));
    match kind {
        Detail::Failure | Detail::Error => {
            // A failure outranks an error outranks a skip, whatever the order.
            let outcome = if kind == Detail::Failure {
                Outcome::Failed
            } else {
                Outcome::Error
            };
            if case.outcome != Outcome::Failed {
                case.outcome = outcome;
                case.message = message;
            }
            case.flaky = false;
        }
        Detail::Skipped => {
            if case.outcome == Outcome::Passed {
                case.outcome = Outcome::Skipped;
                case.message = message;
            }
        }
        Detail::Flaky => {
            case.retries += 1;
            if case.outcome == Outcome::Passed {
                case.flaky = true;
                case.message = message;
            }
        }
        Detail::Rerun => case.retries += 1,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn local(e: &BytesStart<'_>) -> String {
    e.local_name().as_ref().to_owned()
}

fn local_end(e: &quick_xml::events::BytesEnd<'_>) -> String {
    e.local_name().as_ref().to_owned()
}

fn attr(e: &BytesStart<'_>, key: &str) -> Option<String> {
    e.attributes().flatten().find_map(|a| {
        (a.key.local_name().as_ref() == key).then(|| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_or_else(|_| a.value.to_string(), |v| v.into_owned())
        })
    })
}

/// The `tests` step kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestsKind;

/// `with` of a `tests` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TestsWire {
    /// The test command, run by `/bin/sh -c` in the step's directory.
    command: String,
    /// One pattern or several: the JUnit files the command writes, relative
    /// to the step's directory.
    junit: OneOrMany,
    /// Fewer test cases than this fails the step (default 1: a test
    /// command that found no tests is not a pass).
    min_tests: Option<u64>,
    /// Whether flaky tests fail the step (default false: they pass, flagged).
    fail_on_flaky: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

struct TestsStep {
    command: String,
    junit: globset::GlobSet,
    patterns: Vec<String>,
    min_tests: u64,
    fail_on_flaky: bool,
}

impl StepKind for TestsKind {
    fn name(&self) -> &'static str {
        "tests"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Ci)
    }

    fn summary(&self) -> &'static str {
        "runs a test command and ingests its JUnit XML: counts, failures, durations, flaky tests"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let wire: TestsWire = params.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        if wire.command.trim().is_empty() {
            errors.push(Diagnostic::new("`command` is empty", Some(params.span())));
        }
        let patterns = match wire.junit {
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(p) => p,
        };
        if patterns.is_empty() {
            errors.push(Diagnostic::new(
                "`junit` names no report file",
                Some(params.span()),
            ));
        }
        let mut set = globset::GlobSetBuilder::new();
        for p in &patterns {
            if Path::new(p).is_absolute() {
                errors.push(Diagnostic::new(
                    format!("`junit` pattern `{p}` must be relative to the step's directory"),
                    Some(params.span()),
                ));
                continue;
            }
            match globset::GlobBuilder::new(p.trim_start_matches("./"))
                .literal_separator(true)
                .build()
            {
                Ok(g) => {
                    set.add(g);
                }
                Err(e) => errors.push(Diagnostic::new(
                    format!("invalid `junit` pattern `{p}`: {}", e.kind()),
                    Some(params.span()),
                )),
            }
        }
        let junit = set.build().map_err(|e| {
            vec![Diagnostic::new(
                format!("invalid `junit` patterns: {e}"),
                Some(params.span()),
            )]
        })?;
        if !errors.is_empty() {
            return Err(errors);
        }
        let step = Arc::new(TestsStep {
            command: wire.command,
            junit,
            patterns,
            min_tests: wire.min_tests.unwrap_or(1),
            fail_on_flaky: wire.fail_on_flaky.unwrap_or(false),
        });
        Ok(Arc::new(move |ctx: StepContext| {
            let step = step.clone();
            async move { step.run(ctx).await }
        }))
    }
}

impl TestsStep {
    async fn run(&self, ctx: StepContext) -> Result<(), StepFailure> {
        // Reports older than this are leftovers from an earlier run.
        let started = SystemTime::now() - std::time::Duration::from_secs(1);
        ctx.log(format!("--- mlops tests: {} ---", self.command));
        let end = ctx.run_command(&self.command).await;
        if end == CommandEnd::Cancelled {
            return Err(StepFailure::new("cancelled"));
        }
        let cwd = ctx.cwd.clone();
        let (junit, patterns) = (self.junit.clone(), self.patterns.clone());
        let found = tokio::task::spawn_blocking(move || find_reports(&cwd, &patterns, &junit))
            .await
            .map_err(|e| StepFailure::new(format!("looking for JUnit reports stopped: {e}")))?;
        let (fresh, stale): (Vec<_>, Vec<_>) = found
            .into_iter()
            .partition(|(_, modified)| modified.is_some_and(|m| m >= started));
        let command_said = match &end {
            CommandEnd::Failure { reason, .. } => {
                format!("the test command failed ({reason}) and ")
            }
            _ => String::new(),
        };
        if fresh.is_empty() {
            let stale_note = if stale.is_empty() {
                String::new()
            } else {
                format!(
                    " (only a stale {} from before this run)",
                    stale[0].0.display()
                )
            };
            return Err(StepFailure::new(format!(
                "{command_said}wrote no JUnit report matching {}{stale_note}",
                self.patterns.join(", ")
            )));
        }
        let files: Vec<PathBuf> = fresh.into_iter().map(|(p, _)| p).collect();
        let cwd = ctx.cwd.clone();
        let per_file = tokio::task::spawn_blocking(move || {
            let mut per_file = Vec::new();
            for f in &files {
                let cases = read_cases(&cwd.join(f))?;
                per_file.push((f.to_string_lossy().into_owned(), cases));
            }
            Ok::<_, JunitError>(per_file)
        })
        .await
        .map_err(|e| StepFailure::new(format!("reading JUnit reports stopped: {e}")))?
        .map_err(|e| StepFailure::new(format!("{command_said}{e}")))?;

        let mut report = TestReport::from_files(per_file);
        // A test that failed in an earlier attempt of this step and passes
        // now is flaky too.
        if let Some(previous) = ctx
            .recorded(crate::evidence::TESTS)
            .and_then(|v| serde_json::from_value::<TestReport>(v).ok())
        {
            let failed_before: BTreeSet<String> = previous.failures().map(TestCase::id).collect();
            let mut newly = 0;
            for case in &mut report.cases {
                if case.outcome == Outcome::Passed && failed_before.contains(&case.id()) {
                    newly += u64::from(!case.flaky);
                    case.flaky = true;
                    case.retries += 1;
                }
            }
            report.flaky += newly;
        }
        ctx.log(report.summary());
        for case in report.failures() {
            ctx.log(format!(
                "FAIL {}: {}",
                case.id(),
                case.message.as_deref().unwrap_or("(no message)")
            ));
        }
        for case in report.cases.iter().filter(|c| c.flaky) {
            ctx.log(format!(
                "FLAKY {}: passed after {} failed attempt(s)",
                case.id(),
                case.retries.max(1)
            ));
        }
        ctx.record(crate::evidence::TESTS, &report);

        let bad = report.failed + report.errors;
        if bad > 0 {
            let names: Vec<String> = report
                .failures()
                .take(3)
                .map(|c| match &c.message {
                    Some(m) => format!("{} ({})", c.id(), first_line(m, 120)),
                    None => c.id(),
                })
                .collect();
            let more = if bad > 3 {
                format!(" and {} more", bad - 3)
            } else {
                String::new()
            };
            return Err(StepFailure::new(format!(
                "{bad} of {} tests failed: {}{more}",
                report.tests,
                names.join(", ")
            )));
        }
        if let CommandEnd::Failure { reason, .. } = &end {
            return Err(StepFailure::new(format!(
                "the test command failed ({reason}) but its report shows no failing test ({})",
                report.summary()
            )));
        }
        if report.tests - report.skipped < self.min_tests {
            return Err(StepFailure::new(format!(
                "only {} tests ran (at least {} required by `min-tests`): {}",
                report.tests - report.skipped,
                self.min_tests,
                report.summary()
            )));
        }
        if self.fail_on_flaky && report.flaky > 0 {
            let names: Vec<String> = report
                .cases
                .iter()
                .filter(|c| c.flaky)
                .take(3)
                .map(TestCase::id)
                .collect();
            return Err(StepFailure::new(format!(
                "{} flaky tests (`fail-on-flaky`): {}",
                report.flaky,
                names.join(", ")
            )));
        }
        Ok(())
    }
}

fn first_line(s: &str, max: usize) -> String {
    truncate(s.lines().next().unwrap_or(""), max)
}

/// Files below `cwd` matching the patterns, relative, with their
/// modification times. A pattern without glob characters is one file; a
/// glob is searched for only below its literal leading directories, so a
/// pattern such as `target/nextest/*/junit.xml` does not walk all of
/// `target/`.
fn find_reports(
    cwd: &Path,
    patterns: &[String],
    set: &globset::GlobSet,
) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut found = BTreeMap::new();
    let modified = |p: &Path| std::fs::metadata(p).ok().and_then(|m| m.modified().ok());
    for pattern in patterns {
        let pattern = pattern.trim_start_matches("./");
        if !pattern.contains(['*', '?', '[', '{']) {
            let path = cwd.join(pattern);
            if path.is_file() {
                found.insert(PathBuf::from(pattern), modified(&path));
            }
            continue;
        }
        let base: PathBuf = pattern
            .split('/')
            .take_while(|part| !part.contains(['*', '?', '[', '{']))
            .collect();
        let walker = walkdir::WalkDir::new(cwd.join(&base))
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                let name = e.file_name();
                name != ".git" && name != mlops_core::ledger::STATE_DIR
            });
        let walk_root = cwd.join(&base);
        for entry in walker.flatten() {
            if !entry.file_type().is_file() {
                continue;
            }
            // Relative to the step's directory as the pattern is, `..`
            // included.
            let Ok(below) = entry.path().strip_prefix(&walk_root) else {
                continue;
            };
            let rel = base.join(below);
            if set.is_match(&rel) {
                found.insert(rel, modified(entry.path()));
            }
        }
    }
    found.into_iter().collect()
}
