//! The HTML report: one self-contained page (`templates/report.html`) with
//! inline CSS and the SVG charts of [`super::chart`]; no JavaScript, no
//! external resources. askama escapes every value; the charts are inserted
//! as already-escaped markup.

use std::collections::HashMap;

use askama::Template;

use super::chart::{HistoryChart, Ladder, ScoreChart};
use super::{
    ReportView, Segment, blocker, expect_render, findings_of, number, prose, truncate, when,
};
use crate::evidence::{Evidence, Source};
use crate::report::{Report, RunRef, Severity, StageAssessment, StageStatus, TestBasis};

/// The most characters of a recorded JSON document the page shows; a
/// document that long is for the JSON report, not for people.
const JSON_BODY_MAX: usize = 20_000;

#[derive(Template)]
#[template(path = "report.html")]
struct HtmlReport<'a> {
    r: &'a Report,
    evidence: HashMap<&'a str, &'a Evidence>,
    ladder: String,
    scores: Option<String>,
    history: Option<String>,
    /// The first stage that does not count: where the climb stops.
    blocker: Option<&'a StageAssessment>,
    critical: usize,
    warnings: usize,
    infos: usize,
}

/// Renders the page.
pub(super) fn render(report: &Report) -> String {
    let page = HtmlReport {
        r: report,
        evidence: report.evidence.iter().map(|e| (e.id.as_str(), e)).collect(),
        ladder: Ladder::new(report.stage_level, &report.stages).to_svg(),
        scores: ScoreChart::new(&report.ml_test_score).map(|c| c.to_svg()),
        history: report
            .runs
            .as_ref()
            .and_then(|h| HistoryChart::new(&h.runs))
            .map(|c| c.to_svg()),
        blocker: blocker(report),
        critical: findings_of(report, Severity::Critical),
        warnings: findings_of(report, Severity::Warning),
        infos: findings_of(report, Severity::Info),
    };
    expect_render(&page)
}

impl<'a> ReportView<'a> for HtmlReport<'a> {
    fn report(&self) -> &'a Report {
        self.r
    }
}

// Helpers the template calls beyond [`ReportView`]. askama hands arguments
// over by reference, so they take `&T` even where `T` is `Copy`.
#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "askama passes template arguments by reference"
)]
impl<'a> HtmlReport<'a> {
    fn ev(&self, id: &str) -> Option<&'a Evidence> {
        self.evidence.get(id).copied()
    }

    fn prose<'s>(&self, text: &'s str) -> Vec<Segment<'s>> {
        prose(text)
    }

    fn status_note(&self, s: &StageAssessment) -> &'static str {
        match (s.counts, s.met) {
            (true, _) => "counts",
            (false, true) => "met, gated by an earlier stage",
            (false, false) => "does not count",
        }
    }

    fn status(&self, status: &StageStatus) -> &'static str {
        status.as_str()
    }

    fn severity(&self, severity: &Severity) -> &'static str {
        match severity {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    fn basis(&self, basis: &TestBasis) -> &'static str {
        match basis {
            TestBasis::Automated => "automated",
            TestBasis::Manual => "by hand",
            TestBasis::None => "no evidence",
        }
    }

    /// `full`, `half` or `none`: the colour of a test's score.
    fn score_class(&self, score: &f64) -> &'static str {
        if *score >= 1.0 {
            "full"
        } else if *score > 0.0 {
            "half"
        } else {
            "none"
        }
    }

    /// `run 12, 2026-03-01 10:00 UTC`; the commit is in the title.
    fn run_ref(&self, run: &RunRef) -> String {
        format!("run {}, {}", run.run_id, when(&run.at))
    }

    /// A recorded step document on one line, capped.
    fn json(&self, body: &serde_json::Value) -> String {
        let text = serde_json::to_string(body).unwrap_or_default();
        truncate(&text, JSON_BODY_MAX).into_owned()
    }

    fn runs_per_week(&self, value: &Option<f64>) -> String {
        value.map_or_else(|| "–".to_owned(), number)
    }
}
