//! The renderers, from hand-built reports: escaping of repository strings,
//! in-page evidence links, the charts, the JSON form, the Markdown size
//! limit, and the HTML page as headless Chromium loads it.
//!
//! The Chromium tests need `/usr/bin/chromium` (Debian's `chromium`
//! package); they fail, saying so, when it is missing. CI installs it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mlops_assess::render::{self, Format, MARKDOWN_LIMIT};
use mlops_assess::report::{
    Criterion, Finding, LevelAssessment, MlTest, MlTestScore, MlTestSection, RecordedEvidence,
    Report, Repository, RunHistory, RunPoint, RunRef, SecretScanSummary, Severity, StageAssessment,
    StageRuns, StageStatus, TestBasis,
};
use mlops_assess::{AutomatedCommand, Evidence, Signal, Source};
use mlops_core::Stage;
use mlops_testkit::chromium::{self, png_size};

const XSS: &str = "<script>alert(1)</script>";

// -- reports -----------------------------------------------------------------

fn evidence(id: usize, signal: Signal, summary: &str, source: Source, automated: bool) -> Evidence {
    let mut e = Evidence::file(signal, "", None, summary);
    e.id = format!("E{id}");
    e.source = source;
    e.automated = automated;
    e
}

fn criterion(description: &str, met: bool, evidence: &[&str], next: &str) -> Criterion {
    Criterion {
        description: description.to_owned(),
        met,
        evidence: evidence.iter().map(|s| (*s).to_owned()).collect(),
        next_step: (!met).then(|| next.to_owned()),
    }
}

fn run_ref(run_id: i64) -> RunRef {
    RunRef {
        run_id,
        commit: Some(format!("{run_id:040x}")),
        at: at(run_id),
    }
}

fn at(run_id: i64) -> String {
    format!(
        "2026-{:02}-{:02}T09:30:00Z",
        1 + run_id / 28,
        1 + run_id % 28
    )
}

/// The 28 tests: `scores[section]` gives the seven scores of a section.
fn ml_test_score(scores: [[f64; 7]; 4], evidence: &[&str]) -> MlTestScore {
    let names = [
        ("data", "Tests for features and data"),
        ("model", "Tests for model development"),
        ("infrastructure", "Tests for ML infrastructure"),
        ("monitoring", "Monitoring tests for ML"),
    ];
    let sections: Vec<MlTestSection> = names
        .iter()
        .zip(scores)
        .map(|(&(name, title), scores)| {
            let tests: Vec<MlTest> = scores
                .iter()
                .enumerate()
                .map(|(i, &score)| MlTest {
                    id: format!("{name}-{}", i + 1),
                    title: format!("The {name} rubric's test number {}", i + 1),
                    score,
                    basis: if score >= 1.0 {
                        TestBasis::Automated
                    } else if score > 0.0 {
                        TestBasis::Manual
                    } else {
                        TestBasis::None
                    },
                    evidence: if score > 0.0 {
                        evidence.iter().map(|s| (*s).to_owned()).collect()
                    } else {
                        Vec::new()
                    },
                    next_step: (score < 1.0).then(|| {
                        format!("automate {name} test {} with a ci step of kind `x`", i + 1)
                    }),
                })
                .collect();
            MlTestSection {
                name: name.to_owned(),
                title: title.to_owned(),
                sum: tests.iter().map(|t| t.score).sum(),
                tests,
            }
        })
        .collect();
    let score = sections.iter().map(|s| s.sum).fold(f64::INFINITY, f64::min);
    MlTestScore { score, sections }
}

fn microsoft(reached: u8) -> Vec<LevelAssessment> {
    [
        "No MLOps",
        "DevOps but no MLOps",
        "Automated training",
        "Automated model deployment",
        "Full MLOps automated operations",
    ]
    .into_iter()
    .enumerate()
    .map(|(level, name)| {
        let level = level as u8;
        let met = level <= reached;
        LevelAssessment {
            level,
            name: name.to_owned(),
            met,
            reached: met,
            criteria: if level == 0 {
                Vec::new()
            } else {
                vec![criterion(
                    &format!("Level {level} asks for `mlops` things"),
                    met,
                    if met { &["E1", "E2"] } else { &[] },
                    "do the next `thing`",
                )]
            },
        }
    })
    .collect()
}

/// A directory with nothing in it: every score zero, no ledger, no runs.
fn empty_report() -> Report {
    let stages = Stage::ALL
        .into_iter()
        .map(|stage| StageAssessment {
            stage,
            level: stage.level(),
            title: stage.title().to_owned(),
            status: StageStatus::Missing,
            met: false,
            counts: false,
            criteria: vec![criterion(
                "The environment is pinned",
                false,
                &[],
                "add a lockfile",
            )],
            last_passed: None,
            next_steps: vec!["add a lockfile".to_owned()],
        })
        .collect();
    Report {
        schema_version: 1,
        mlops_version: "0.1.0".to_owned(),
        generated_at: "2026-03-01T12:00:00Z".to_owned(),
        repository: Repository {
            path: "/tmp/empty".to_owned(),
            name: "empty".to_owned(),
            files: 0,
            git: false,
            commit: None,
            branch: None,
            commits: None,
            manifest: false,
            ledger: false,
        },
        stage_level: 0,
        stages,
        microsoft_level: 0,
        microsoft: microsoft(0),
        ml_test_score: ml_test_score([[0.0; 7]; 4], &[]),
        runs: None,
        findings: vec![Finding {
            severity: Severity::Warning,
            code: "stage-missing".to_owned(),
            title: "Stage 1 (Infrastructure as Code) is not met: the maturity level stops at 0"
                .to_owned(),
            location: None,
            evidence: Vec::new(),
            next_step: "add a lockfile".to_owned(),
        }],
        evidence: Vec::new(),
        automation: Vec::new(),
        secret_scan: SecretScanSummary::default(),
        notes: Vec::new(),
    }
}

/// A mature repository at stage level 4 with 30 runs, a committed secret,
/// and hostile strings wherever the repository supplies one.
fn full_report() -> Report {
    let evil_path = format!("src/{XSS}|train.py");
    let mut evidence = vec![
        evidence(
            1,
            Signal::LockedEnvironment,
            "uv.lock pins 143 packages",
            Source::file("uv.lock", None),
            true,
        ),
        evidence(
            2,
            Signal::Container,
            "Dockerfile builds the service",
            Source::file("Dockerfile", Some(1)),
            true,
        ),
        evidence(
            3,
            Signal::CiConfig,
            "GitHub Actions workflow ci.yml",
            Source::file(".github/workflows/ci.yml", None),
            true,
        ),
        evidence(
            4,
            Signal::UnitTests,
            &format!("pytest tests in {XSS}"),
            Source::file(&evil_path, Some(7)),
            true,
        ),
        evidence(
            5,
            Signal::CommittedSecret,
            &format!("AWS access key committed in config|{XSS}.env"),
            Source::file(format!("config|{XSS}.env"), Some(3)),
            false,
        ),
        evidence(
            6,
            Signal::Deployment,
            "deploy step passed",
            Source::Run {
                run_id: 29,
                step: Some(format!("deploy {XSS}")),
                commit: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
                at: at(29),
            },
            true,
        ),
        evidence(
            7,
            Signal::ModelRegistry,
            "iris:3 registered",
            Source::Registry {
                model: "iris:3".to_owned(),
                at: at(20),
            },
            true,
        ),
        evidence(
            8,
            Signal::ProgressiveDelivery,
            "canary step",
            Source::file("mlops.toml", Some(40)),
            true,
        ),
        evidence(
            9,
            Signal::Notebook,
            "notebooks/explore.ipynb",
            Source::file("notebooks/explore.ipynb", None),
            false,
        ),
        evidence(
            10,
            Signal::LoadTest,
            "locustfile.py",
            Source::file("load/locustfile.py", None),
            true,
        ),
    ];
    for i in 11..=24 {
        evidence.push(evidence_n(i));
    }
    let stage = |stage: Stage, status, counts, ids: &[&str]| StageAssessment {
        stage,
        level: stage.level(),
        title: stage.title().to_owned(),
        status,
        met: matches!(status, StageStatus::Proven | StageStatus::Configured),
        counts,
        criteria: vec![
            criterion(
                &format!("The {stage} stage's first criterion"),
                matches!(status, StageStatus::Proven | StageStatus::Configured),
                ids,
                &format!("set up the {stage} stage (`mlops init {stage}`)"),
            ),
            criterion(
                "A criterion with a | pipe and <b>markup</b>",
                status == StageStatus::Proven,
                &["E11"],
                "keep the `a | b` pipe",
            ),
        ],
        last_passed: (status == StageStatus::Proven).then(|| run_ref(28)),
        next_steps: if matches!(status, StageStatus::Proven | StageStatus::Configured) {
            Vec::new()
        } else {
            vec![
                format!("set up the {stage} stage (`mlops init {stage}`)"),
                format!("run `{XSS}` in CI"),
            ]
        },
    };
    let stages = vec![
        stage(Stage::Iac, StageStatus::Proven, true, &["E1", "E2"]),
        stage(Stage::Ci, StageStatus::Proven, true, &["E3", "E4"]),
        stage(Stage::Cd, StageStatus::Proven, true, &["E6", "E7"]),
        stage(Stage::Release, StageStatus::Configured, true, &["E8"]),
        stage(Stage::Apm, StageStatus::Missing, false, &[]),
        stage(Stage::Loadtest, StageStatus::Configured, false, &["E10"]),
    ];
    let runs: Vec<RunPoint> = (1..=30)
        .map(|i| RunPoint {
            run_id: i,
            at: at(i),
            commit: Some(format!("{i:040x}")),
            status: match i {
                7 | 15 | 16 | 27 => "failed",
                22 => "cancelled",
                _ => "passed",
            }
            .to_owned(),
            stage_level: match i {
                1..=4 => 1,
                5..=9 => 2,
                10..=17 => 3,
                27 => 2,
                _ => 4,
            },
        })
        .collect();
    let stage_runs = Stage::ALL
        .into_iter()
        .map(|stage| StageRuns {
            stage,
            passed: 20,
            failed: 2,
            last_passed: (stage <= Stage::Release).then(|| run_ref(30)),
            last: Some(run_ref(30)),
            last_status: Some(
                if stage <= Stage::Release {
                    "passed"
                } else {
                    "failed"
                }
                .to_owned(),
            ),
        })
        .collect();
    let recorded = |step: &str, body: serde_json::Value| RecordedEvidence {
        source: Source::Run {
            run_id: 30,
            step: Some(step.to_owned()),
            commit: Some(format!("{:040x}", 30)),
            at: at(30),
        },
        body,
    };
    Report {
        schema_version: 1,
        mlops_version: "0.1.0".to_owned(),
        generated_at: "2026-03-02T08:00:00Z".to_owned(),
        repository: Repository {
            path: format!("/home/ds/{XSS}|iris"),
            name: format!("iris {XSS}"),
            files: 412,
            git: true,
            commit: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
            branch: Some(format!("feature/{XSS}")),
            commits: Some(318),
            manifest: true,
            ledger: true,
        },
        stage_level: 4,
        stages,
        microsoft_level: 2,
        microsoft: microsoft(2),
        ml_test_score: ml_test_score(
            [
                [1.0, 1.0, 0.5, 1.0, 0.0, 1.0, 0.0],
                [1.0, 0.0, 0.5, 0.0, 0.5, 0.0, 0.0],
                [1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 0.0],
                [1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0],
            ],
            &["E3", "E4"],
        ),
        runs: Some(RunHistory {
            total: 30,
            passed: 25,
            failed: 4,
            other: 1,
            first_at: Some(at(1)),
            last_at: Some(at(30)),
            runs_per_week: Some(7.0 / 3.0),
            commits: 30,
            runs,
            stages: stage_runs,
            promotions: 6,
            rollbacks: 1,
            release_verdicts: vec![
                recorded(
                    "canary",
                    serde_json::json!({"verdict": "promote", "error_rate": 0.001, "note": format!("</pre>{XSS}")}),
                ),
                recorded(
                    "shadow",
                    serde_json::json!({"verdict": "rollback", "p99_ms": 412.5}),
                ),
            ],
            slo: Some(recorded(
                "slo",
                serde_json::json!({"availability": 0.999, "met": true}),
            )),
            breaking_point: Some(recorded(
                "load",
                serde_json::json!({"rps": 850, "p99_ms": 980}),
            )),
            capacity: None,
        }),
        findings: vec![
            Finding {
                severity: Severity::Critical,
                code: "committed-secret".to_owned(),
                title: format!("AWS access key committed in config|{XSS}.env"),
                location: Some(Source::file(format!("config|{XSS}.env"), Some(3))),
                evidence: vec!["E5".to_owned()],
                next_step:
                    "remove it, rotate the credential, and scan every change with a ci step \
                            of kind `secret-scan`"
                        .to_owned(),
            },
            Finding {
                severity: Severity::Warning,
                code: "stage-missing".to_owned(),
                title: "Stage 5 (Application Performance Monitoring) is not met: the maturity \
                        level stops at 4"
                    .to_owned(),
                location: None,
                evidence: vec!["E12".to_owned(), "E13".to_owned()],
                next_step: "export metrics from the service; add alert rules".to_owned(),
            },
            Finding {
                severity: Severity::Info,
                code: "stage-gated".to_owned(),
                title: "Stage 6 (Load testing and auto-scale) is configured but does not count \
                        until every earlier stage does"
                    .to_owned(),
                location: None,
                evidence: Vec::new(),
                next_step: "climb the earlier stages first".to_owned(),
            },
            Finding {
                severity: Severity::Info,
                code: "ml-test-score".to_owned(),
                title: "The ML Test Score (2) is held down by the monitoring section".to_owned(),
                location: Some(Source::file(&evil_path, None)),
                evidence: vec!["E9".to_owned()],
                next_step: format!("run `pytest -q | tee {XSS}` on every change"),
            },
        ],
        evidence,
        automation: vec![
            AutomatedCommand {
                system: "github-actions".to_owned(),
                command: format!("pytest -q | tee out.txt && echo '{XSS}'"),
                source: Source::file(".github/workflows/ci.yml", Some(31)),
                scheduled: false,
            },
            AutomatedCommand {
                system: "github-actions".to_owned(),
                command: "python train.py --retrain\npython evaluate.py".to_owned(),
                source: Source::file(".github/workflows/nightly.yml", Some(12)),
                scheduled: true,
            },
            AutomatedCommand {
                system: "mlops".to_owned(),
                command: "mlops pipeline run".to_owned(),
                source: Source::file("mlops.toml", Some(3)),
                scheduled: false,
            },
        ],
        secret_scan: SecretScanSummary {
            ran: true,
            files: 412,
            history: true,
            commits: 318,
            findings: 1,
            suppressed: 2,
        },
        notes: vec![format!("could not parse `.gitlab-ci.yml`: {XSS} at line 3")],
    }
}

fn evidence_n(i: usize) -> Evidence {
    let signals = [
        Signal::Metrics,
        Signal::Alerting,
        Signal::DataTests,
        Signal::ModelValidation,
    ];
    evidence(
        i,
        signals[i % signals.len()],
        &format!("evidence number {i} with a `code` span and a | pipe"),
        Source::file(format!("src/module_{i}.py"), Some(i)),
        !i.is_multiple_of(3),
    )
}

/// A report far beyond what a comment can hold.
fn huge_report() -> Report {
    let mut r = full_report();
    let long = "x".repeat(1_000);
    r.evidence = (1..=3_000)
        .map(|i| {
            let mut e = evidence_n(i);
            e.summary = format!("{i} {long}");
            e
        })
        .collect();
    r.automation = (0..1_000)
        .map(|i| AutomatedCommand {
            system: "github-actions".to_owned(),
            command: format!("step {i} | {long}"),
            source: Source::file(format!("{long}.yml"), Some(i)),
            scheduled: false,
        })
        .collect();
    r.findings = (0..500)
        .map(|i| Finding {
            severity: [Severity::Critical, Severity::Warning, Severity::Info][i % 3],
            code: "committed-secret".to_owned(),
            title: format!("finding {i} {long}"),
            location: Some(Source::file(&long, Some(i))),
            evidence: (1..=50).map(|n| format!("E{n}")).collect(),
            next_step: format!("step {i} `{long}`"),
        })
        .collect();
    r.notes = (0..1_000).map(|i| format!("note {i} {long}")).collect();
    r
}

// -- helpers -----------------------------------------------------------------

/// Every `attr="value"` value in `html` whose attribute is `attr`.
fn attribute_values<'h>(html: &'h str, attr: &str) -> Vec<&'h str> {
    let needle = format!(" {attr}=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            &rest[..rest.find('"').expect("attribute values are quoted")]
        })
        .collect()
}

/// The `<svg …>…</svg>` element whose class list starts with `class`.
fn svg<'h>(html: &'h str, class: &str) -> Option<&'h str> {
    let start = html.find(&format!("<svg class=\"chart {class}\""))?;
    let end = start + html[start..].find("</svg>")? + "</svg>".len();
    Some(&html[start..end])
}

/// The cells of a Markdown table row: split at every `|` that no backslash
/// escapes.
fn cells(row: &str) -> usize {
    let mut n: usize = 0;
    let mut escaped = false;
    for c in row.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '|' if !escaped => n += 1,
            _ => escaped = false,
        }
    }
    n.saturating_sub(1)
}

// -- tests -------------------------------------------------------------------

#[test]
fn html_escapes_every_repository_string() {
    let html = render::html(&full_report());
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "the page must hold no script, least of all one from the repository"
    );
    assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    assert!(!html.contains("<b>markup</b>"));
    assert!(
        html.contains("&#60;/pre&#62;"),
        "recorded JSON is escaped too"
    );
    for resource in [
        " src=", "<link", "@import", "url(http", "<iframe", "<object",
    ] {
        assert!(
            !html.contains(resource),
            "{resource}: the page loads nothing"
        );
    }
    for href in attribute_values(&html, "href") {
        assert!(href.starts_with('#'), "only in-page links: {href}");
    }
}

#[test]
fn markdown_escapes_every_repository_string() {
    let md = render::markdown(&full_report());
    assert!(!md.to_ascii_lowercase().contains("<script"), "{md}");
    assert!(!md.contains("<b>markup</b>"));
    assert!(md.contains("&lt;script&gt;"));
    assert!(md.contains("<code>config&#124;&lt;script&gt;"), "{md}");
    assert!(md.contains("<code>pytest -q &#124; tee"), "{md}");
    // The only HTML is ours: code, details, summary, sub, br.
    let mut tags = BTreeSet::new();
    for (i, _) in md.match_indices('<') {
        let name: String = md[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
            .collect();
        tags.insert(name.trim_start_matches('/').to_owned());
    }
    let ours: BTreeSet<String> = ["br", "code", "details", "sub", "summary"]
        .into_iter()
        .map(String::from)
        .collect();
    assert!(tags.is_subset(&ours), "{tags:?}");
}

#[test]
fn markdown_tables_keep_their_columns() {
    let md = render::markdown(&full_report());
    let mut header_cells = None;
    let mut rows = 0;
    for line in md.lines() {
        if !line.starts_with('|') {
            header_cells = None;
            continue;
        }
        let n = cells(line);
        match header_cells {
            None => header_cells = Some(n),
            Some(h) => {
                assert_eq!(n, h, "a cell leaked a `|` or a line break: {line}");
                rows += 1;
            }
        }
    }
    // ladder: separator + 6; tests: separator + 4 section rows + 28;
    // evidence: separator + 24.
    assert_eq!(rows, 7 + 33 + 25, "{md}");
}

#[test]
fn every_evidence_reference_is_an_in_page_link() {
    let report = full_report();
    let html = render::html(&report);
    let anchors: BTreeSet<&str> = attribute_values(&html, "id").into_iter().collect();
    let links: BTreeSet<&str> = attribute_values(&html, "href")
        .into_iter()
        .map(|h| h.trim_start_matches('#'))
        .collect();
    for link in &links {
        assert!(anchors.contains(link), "#{link} has no anchor");
    }
    let mut referenced: BTreeSet<&str> = BTreeSet::new();
    let stage_criteria = report.stages.iter().flat_map(|s| &s.criteria);
    let level_criteria = report.microsoft.iter().flat_map(|l| &l.criteria);
    for c in stage_criteria.chain(level_criteria) {
        referenced.extend(c.evidence.iter().map(String::as_str));
    }
    for t in report.ml_test_score.sections.iter().flat_map(|s| &s.tests) {
        referenced.extend(t.evidence.iter().map(String::as_str));
    }
    for f in &report.findings {
        referenced.extend(f.evidence.iter().map(String::as_str));
    }
    assert!(referenced.len() > 5);
    for id in referenced {
        assert!(links.contains(id), "{id} is not linked");
        assert!(anchors.contains(id), "{id} has no anchor");
    }
    for e in &report.evidence {
        assert!(html.contains(&format!("<tr id=\"{}\">", e.id)));
    }
}

#[test]
fn a_reference_to_missing_evidence_is_marked_not_linked() {
    let mut report = full_report();
    report.findings[0].evidence.push("E999".to_owned());
    let html = render::html(&report);
    assert!(!html.contains("href=\"#E999\""));
    assert!(
        html.contains("<span class=\"ev dangling\" title=\"not in the evidence list\">E999</span>")
    );
}

#[test]
fn charts_draw_one_mark_per_stage_section_and_run() {
    let report = full_report();
    let html = render::html(&report);

    let ladder = svg(&html, "ladder").expect("the ladder");
    assert_eq!(ladder.matches("<g class=\"step ").count(), 6);
    assert_eq!(
        ladder.matches("<g class=\"step gated ").count(),
        2,
        "apm and loadtest"
    );
    assert!(ladder.contains("level 4/6: the climb stops here"));
    assert!(ladder.contains("<title id=\"ladder-title\">Stage ladder: level 4 of 6</title>"));

    let scores = svg(&html, "scores").expect("the score chart");
    assert_eq!(scores.matches("<rect class=\"bar").count(), 4);
    assert_eq!(
        scores.matches("<rect class=\"bar min\"").count(),
        2,
        "model and monitoring tie at 2"
    );
    assert!(scores.contains(">2 · min</text>"), "{scores}");

    let history = svg(&html, "history").expect("the history chart");
    assert_eq!(history.matches("<rect class=\"run ").count(), 30);
    assert_eq!(history.matches("<rect class=\"run failed\"").count(), 4);
    assert_eq!(history.matches("class=\"fail-mark\"").count(), 4);
    assert_eq!(history.matches("<rect class=\"run other\"").count(), 1);

    for chart in [ladder, scores, history] {
        assert!(chart.contains(" viewBox=\"0 0 "), "{chart}");
        assert!(chart.contains("<title"), "{chart}");
        assert!(chart.contains("<text"), "{chart}");
        assert!(
            !chart.contains("NaN") && !chart.contains("inf\""),
            "{chart}"
        );
    }
}

#[test]
fn an_empty_repository_renders_without_runs() {
    let report = empty_report();
    let html = render::html(&report);
    assert!(svg(&html, "history").is_none());
    assert!(html.contains("No runs recorded: there is no run ledger"));
    let ladder = svg(&html, "ladder").unwrap();
    assert_eq!(ladder.matches("<g class=\"step gated ").count(), 6);
    let scores = svg(&html, "scores").unwrap();
    assert_eq!(scores.matches("<rect class=\"bar min\"").count(), 4);
    assert!(!html.contains("NaN"));
    assert!(html.contains("<div class=\"value\">0<small>/7</small></div>"));

    let mut ledger_without_runs = report.clone();
    ledger_without_runs.runs = Some(RunHistory {
        total: 0,
        passed: 0,
        failed: 0,
        other: 0,
        first_at: None,
        last_at: None,
        runs_per_week: None,
        commits: 0,
        runs: Vec::new(),
        stages: Vec::new(),
        promotions: 0,
        rollbacks: 0,
        release_verdicts: Vec::new(),
        slo: None,
        breaking_point: None,
        capacity: None,
    });
    let html = render::html(&ledger_without_runs);
    assert!(svg(&html, "history").is_none());
    assert!(html.contains("No runs recorded: the run ledger is empty."));

    let md = render::markdown(&report);
    assert!(md.contains("**Stage level 0/6**"), "{md}");
    assert!(md.contains("**ML Test Score 0/7**"), "{md}");
    assert!(!md.contains("Evidence ("), "no empty evidence list");
}

#[test]
fn one_run_draws_one_bar() {
    let mut report = full_report();
    let history = report.runs.as_mut().unwrap();
    history.runs.truncate(1);
    let html = render::html(&report);
    let chart = svg(&html, "history").unwrap();
    assert_eq!(chart.matches("<rect class=\"run ").count(), 1);
    assert!(!chart.contains("NaN"));
}

#[test]
fn json_round_trips_the_headline_numbers() {
    let report = full_report();
    let json = render::json(&report);
    assert!(json.ends_with("}\n"));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["stage_level"], 4);
    assert_eq!(value["microsoft_level"], 2);
    let sums: Vec<f64> = value["ml_test_score"]["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sum"].as_f64().unwrap())
        .collect();
    assert_eq!(sums, [4.5, 2.0, 5.5, 2.0]);
    assert_eq!(value["ml_test_score"]["score"], 2.0);
    let findings = value["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 4);
    assert_eq!(findings[0]["severity"], "critical");
    assert_eq!(findings[0]["code"], "committed-secret");
    assert_eq!(value["runs"]["runs"].as_array().unwrap().len(), 30);
    assert_eq!(value["evidence"][4]["source"]["type"], "file");
}

#[test]
fn markdown_shows_the_headline_and_what_to_do_next() {
    let md = render::markdown(&full_report());
    assert!(
        md.starts_with("## MLOps maturity: iris &lt;script&gt;"),
        "{md}"
    );
    assert!(md.contains("**Stage level 4/6** · **Microsoft level 2/4** (Automated training) · **ML Test Score 2/7** (lowest of data 4.5 · model 2 · infrastructure 5.5 · monitoring 2)"), "{md}");
    assert!(
        md.contains("| 1 | Infrastructure as Code (<code>iac</code>) | ✅ proven | counts |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| 6 | Load testing and auto-scale (<code>loadtest</code>) | ☑️ configured | gated |"
        ),
        "{md}"
    );
    assert!(md.contains("1 critical · 1 warning · 2 info"), "{md}");
    let critical = md.find("🔴 **critical**").unwrap();
    let warning = md.find("🟠 **warning**").unwrap();
    let info = md.find("informational findings").unwrap();
    assert!(critical < warning && warning < info);
    assert!(
        md.contains("### Next steps\n\n1. remove it, rotate the credential"),
        "{md}"
    );
    assert!(
        md.contains("2. set up the apm stage (<code>mlops init apm</code>)"),
        "{md}"
    );
    assert!(md.contains("<details><summary>ML Test Score: 2"), "{md}");
    assert!(
        md.contains("<details><summary>Evidence (24)</summary>"),
        "{md}"
    );
}

#[test]
fn markdown_fits_a_comment_whatever_the_report_size() {
    let report = huge_report();
    let md = render::markdown(&report);
    assert!(md.len() <= MARKDOWN_LIMIT, "{} bytes", md.len());
    assert!(md.contains("more"), "the cut lists say so");
    assert!(
        md.contains("</details>"),
        "the comment is whole, not cut mid-element"
    );
    assert!(md.trim_end().ends_with("</sub>"), "the footer survives");
    // And the HTML holds all of it.
    let html = render::html(&report);
    assert!(html.contains("<tr id=\"E3000\">"));
}

#[test]
fn render_dispatches_on_format() {
    let report = full_report();
    assert_eq!(render::render(&report, Format::Html), render::html(&report));
    assert_eq!(
        render::render(&report, Format::Markdown),
        render::markdown(&report)
    );
    assert_eq!(render::render(&report, Format::Json), render::json(&report));
    assert_eq!("markdown".parse::<Format>(), Ok(Format::Markdown));
    assert!(
        "yaml"
            .parse::<Format>()
            .unwrap_err()
            .to_string()
            .contains("html, md")
    );
}

#[test]
fn chromium_loads_the_report_without_errors() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let page = out.join("assess-report.html");
    std::fs::write(&page, render::html(&full_report())).unwrap();
    for (png, size) in [
        ("assess-report.png", (1280, 2000)),
        ("assess-report-phone.png", (390, 2400)),
    ] {
        let png = out.join(png);
        let _ = std::fs::remove_file(&png);
        let load = chromium::load(&page, &png, size);
        assert!(load.problems().is_empty(), "{:#?}", load.problems());
        assert!(
            load.png.len() > 10_000,
            "an empty screenshot: {} bytes",
            load.png.len()
        );
        assert_eq!(png_size(&load.png), size);
        println!("screenshot: {}", png.display());
    }
    println!("page: {}", page.display());
}

/// The negative control: without it, the check above could be one that
/// cannot fail.
#[test]
fn chromium_check_flags_console_errors_and_missing_resources() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><title>broken</title></head><body><p>broken</p>\
         <script>console.error(\"boom\")</script><img src=\"missing.png\" alt=\"\"></body></html>",
    )
    .unwrap();
    let load = chromium::load(&page, &dir.path().join("broken.png"), (640, 480));
    assert!(
        load.console.iter().any(|c| c.contains("\"boom\"")),
        "console.error was not seen: {load:#?}"
    );
    let missing = format!("file://{}", dir.path().join("missing.png").display());
    assert_eq!(load.failed, std::slice::from_ref(&missing), "{load:#?}");
    assert_eq!(load.requests, [missing], "{load:#?}");
    assert_eq!(load.problems().len(), 3);
    assert!(!load.png.is_empty());
}

/// A real assessment, not a hand-built one: the iris example (its files,
/// and its ledger when a pipeline ran), rendered and loaded the same way.
#[test]
fn chromium_loads_a_real_assessment_without_errors() {
    let iris = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/iris");
    let options = mlops_assess::Options {
        history: false,
        ..mlops_assess::Options::default()
    };
    let report = mlops_assess::assess(&iris, &options).unwrap();
    assert!(report.evidence.len() > 20, "{:#?}", report.evidence);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let page = out.join("assess-iris.html");
    std::fs::write(&page, render::html(&report)).unwrap();
    let png = out.join("assess-iris.png");
    let _ = std::fs::remove_file(&png);
    let load = chromium::load(&page, &png, (1280, 2000));
    assert!(load.problems().is_empty(), "{:#?}", load.problems());
    assert_eq!(png_size(&load.png), (1280, 2000));
    println!("screenshot: {}", png.display());
}
