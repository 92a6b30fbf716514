//! The Markdown report: a pull-request comment (`templates/report.md`).
//!
//! GitHub renders raw HTML and Markdown in a comment and cuts it at 65,536
//! characters, so this module (a) writes every string from the report
//! through a filter that neutralises both and keeps it on one line (a table
//! row must not break), and (b) caps the long lists, rendering again with
//! tighter caps until the comment fits in [`super::MARKDOWN_LIMIT`].

use askama::Template;

use super::{MARKDOWN_LIMIT, ReportView, blocker, expect_render, findings_of, prose, truncate};
use crate::evidence::{AutomatedCommand, Evidence};
use crate::report::{Finding, Report, Severity, StageAssessment, StageStatus, TestBasis};

/// How many items of each long list one rendering shows.
#[derive(Debug, Clone, Copy)]
struct Caps {
    findings: usize,
    evidence: usize,
    automation: usize,
    notes: usize,
    /// Evidence ids shown per test or finding.
    ids: usize,
}

/// From generous to bare. Strings are capped by the filters, so the last
/// level fits any report; the loop in [`render`] is the guarantee anyway.
const CAPS: [Caps; 4] = [
    Caps {
        findings: 40,
        evidence: 120,
        automation: 40,
        notes: 20,
        ids: 8,
    },
    Caps {
        findings: 20,
        evidence: 40,
        automation: 15,
        notes: 10,
        ids: 5,
    },
    Caps {
        findings: 10,
        evidence: 10,
        automation: 5,
        notes: 5,
        ids: 3,
    },
    Caps {
        findings: 5,
        evidence: 0,
        automation: 0,
        notes: 0,
        ids: 1,
    },
];

/// How many next steps the "Next steps" list shows.
const TOP_NEXT_STEPS: usize = 5;

#[derive(Template)]
#[template(path = "report.md", escape = "none")]
struct MarkdownReport<'a> {
    r: &'a Report,
    caps: Caps,
    /// Critical and warning findings, capped.
    urgent: Vec<&'a Finding>,
    /// Info findings, capped.
    infos: Vec<&'a Finding>,
    /// Findings left out by the cap.
    findings_more: usize,
    critical: usize,
    warnings: usize,
    info_total: usize,
    next_steps: Vec<&'a str>,
    blocker: Option<&'a StageAssessment>,
    evidence: &'a [Evidence],
    automation: &'a [AutomatedCommand],
    notes: &'a [String],
}

/// Renders the comment, within [`MARKDOWN_LIMIT`] bytes.
pub(super) fn render(report: &Report) -> String {
    for caps in CAPS {
        let out = expect_render(&MarkdownReport::new(report, caps));
        if out.len() <= MARKDOWN_LIMIT {
            return out;
        }
    }
    // Not reachable with the filters' caps on string length; kept so the
    // limit holds whatever changes elsewhere.
    let out = expect_render(&MarkdownReport::new(report, CAPS[CAPS.len() - 1]));
    let note = "\n\n… (cut to fit a comment; see the HTML or JSON report)\n";
    let mut end = MARKDOWN_LIMIT - note.len();
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &out[..end])
}

impl<'a> MarkdownReport<'a> {
    fn new(r: &'a Report, caps: Caps) -> MarkdownReport<'a> {
        let mut sorted: Vec<&Finding> = r.findings.iter().collect();
        sorted.sort_by_key(|f| f.severity);
        let shown: Vec<&Finding> = sorted.iter().copied().take(caps.findings).collect();
        let (urgent, infos): (Vec<&Finding>, Vec<&Finding>) = shown
            .into_iter()
            .partition(|f| f.severity != Severity::Info);
        MarkdownReport {
            r,
            caps,
            findings_more: r.findings.len() - urgent.len() - infos.len(),
            urgent,
            infos,
            critical: findings_of(r, Severity::Critical),
            warnings: findings_of(r, Severity::Warning),
            info_total: findings_of(r, Severity::Info),
            next_steps: next_steps(r, &sorted),
            blocker: blocker(r),
            evidence: &r.evidence[..r.evidence.len().min(caps.evidence)],
            automation: &r.automation[..r.automation.len().min(caps.automation)],
            notes: &r.notes[..r.notes.len().min(caps.notes)],
        }
    }
}

/// The steps that matter most: critical findings', then those of the stage
/// where the climb stops, then warnings'; without repeats.
fn next_steps<'a>(r: &'a Report, findings: &[&'a Finding]) -> Vec<&'a str> {
    let critical = findings
        .iter()
        .filter(|f| f.severity == Severity::Critical)
        .map(|f| f.next_step.as_str());
    let blocker = blocker(r)
        .into_iter()
        .flat_map(|s| s.next_steps.iter().map(String::as_str));
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .flat_map(|f| f.next_step.split("; "));
    let mut out: Vec<&str> = Vec::new();
    for step in critical.chain(blocker).chain(warnings) {
        let step = step.trim();
        if !step.is_empty() && !out.contains(&step) {
            out.push(step);
        }
        if out.len() == TOP_NEXT_STEPS {
            break;
        }
    }
    out
}

impl<'a> ReportView<'a> for MarkdownReport<'a> {
    fn report(&self) -> &'a Report {
        self.r
    }
}

// Helpers the template calls beyond [`ReportView`]. askama hands arguments
// over by reference.
#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "askama passes template arguments by reference"
)]
impl MarkdownReport<'_> {
    fn status(&self, status: &StageStatus) -> &'static str {
        match status {
            StageStatus::Proven => "✅ proven",
            StageStatus::Configured => "☑️ configured",
            StageStatus::Failing => "❌ failing",
            StageStatus::Missing => "⬜ missing",
        }
    }

    fn counts(&self, s: &StageAssessment) -> &'static str {
        match (s.counts, s.met) {
            (true, _) => "counts",
            (false, true) => "gated",
            (false, false) => "no",
        }
    }

    fn severity(&self, severity: &Severity) -> &'static str {
        match severity {
            Severity::Critical => "🔴 **critical**",
            Severity::Warning => "🟠 **warning**",
            Severity::Info => "🔵 info",
        }
    }

    fn basis(&self, basis: &TestBasis) -> &'static str {
        match basis {
            TestBasis::Automated => "automated",
            TestBasis::Manual => "by hand",
            TestBasis::None => "none",
        }
    }

    /// Evidence ids, capped: `E1, E2 +3`.
    fn ids(&self, ids: &[String]) -> String {
        let mut out = ids
            .iter()
            .take(self.caps.ids)
            .map(|id| md_text(id))
            .collect::<Vec<_>>()
            .join(", ");
        if ids.len() > self.caps.ids {
            out.push_str(&format!(" +{}", ids.len() - self.caps.ids));
        }
        out
    }

    fn more(&self, total: usize, shown: usize) -> usize {
        total.saturating_sub(shown)
    }
}

/// The most characters of one string from the report that the comment
/// shows: paths and commands can be anything.
const TEXT_MAX: usize = 300;
const CODE_MAX: usize = 160;

/// Plain text, safe anywhere in a line and in a table cell: Markdown
/// punctuation is backslash-escaped, HTML's `<`, `>` and `&` become
/// entities, and line breaks become spaces.
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    md_escape(&truncate(s, TEXT_MAX), &mut out, |c, out| {
        out.push('\\');
        out.push(c);
    });
    out
}

/// Code: an inline `<code>` element whose every special character is an
/// entity, so it reads the same in a table cell and in a line, a backtick
/// or a `|` in it cannot end it, and GitHub links no mention in it.
fn md_code(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 13);
    out.push_str("<code>");
    md_escape(&truncate(s, CODE_MAX), &mut out, |c, out| {
        out.push_str(&format!("&#{};", u32::from(c)));
    });
    out.push_str("</code>");
    out
}

/// Writes `s` to `out` on one line: HTML's `<`, `>` and `&` as entities,
/// line breaks and tabs as spaces, no other control characters, and each
/// Markdown punctuation character as `punctuation` writes it.
fn md_escape(s: &str, out: &mut String, punctuation: fn(char, &mut String)) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '$' | '#' | '!' => punctuation(c, out),
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

/// Prose with `code` spans between backticks, as the scores write next
/// steps: text through [`md_text`], code through [`md_code`].
/// The length is capped after the split, so a cut never leaves a lone
/// backtick behind.
fn md_prose(s: &str) -> String {
    let mut budget = TEXT_MAX;
    let mut out = String::new();
    for seg in prose(s) {
        if budget == 0 {
            out.push('…');
            break;
        }
        let text = truncate(seg.text, budget);
        budget = budget.saturating_sub(text.chars().count());
        if seg.code {
            out.push_str(&md_code(&text));
        } else {
            out.push_str(&md_text(&text));
        }
    }
    out
}

/// The filters `report.md` uses on every string that comes from the report.
#[expect(
    unreachable_pub,
    reason = "askama's filter_fn expands to `pub` items inside the function's scope"
)]
mod filters {
    use std::fmt::Display;

    /// Plain text: [`super::md_text`].
    #[askama::filter_fn]
    pub(super) fn md(value: impl Display, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(super::md_text(&value.to_string()))
    }

    /// Code: [`super::md_code`].
    #[askama::filter_fn]
    pub(super) fn code(value: impl Display, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(super::md_code(&value.to_string()))
    }

    /// Prose with backtick code spans: [`super::md_prose`].
    #[askama::filter_fn]
    pub(super) fn prose(value: impl Display, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(super::md_prose(&value.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_inert_markdown_and_html() {
        assert_eq!(
            md_text("<script>alert(1)</script> a|b *x* [l](u) `c`\nnext"),
            "&lt;script&gt;alert(1)&lt;/script&gt; a\\|b \\*x\\* \\[l\\](u) \\`c\\` next"
        );
        assert_eq!(
            md_text("$HOME & #1 ~x~ _y_ !"),
            "\\$HOME &amp; \\#1 \\~x\\~ \\_y\\_ \\!"
        );
    }

    #[test]
    fn code_is_one_element_whatever_it_holds() {
        assert_eq!(md_code("a | b"), "<code>a &#124; b</code>");
        assert_eq!(
            md_code("</code><script>`x`"),
            "<code>&lt;/code&gt;&lt;script&gt;&#96;x&#96;</code>"
        );
        assert_eq!(md_code("line1\nline2"), "<code>line1 line2</code>");
    }

    #[test]
    fn prose_keeps_code_spans_as_code() {
        assert_eq!(
            md_prose("run `mlops pipeline run` | now"),
            "run <code>mlops pipeline run</code> \\| now"
        );
    }

    #[test]
    fn long_strings_are_cut() {
        let long = "x".repeat(10_000);
        assert_eq!(md_text(&long).chars().count(), TEXT_MAX);
        assert!(md_code(&long).len() < CODE_MAX + 20);
        let prose = md_prose(&format!("run `{long}` and `{long}` now"));
        assert!(prose.starts_with("run <code>xxx"), "{prose}");
        assert!(prose.ends_with("…</code>…"), "{prose}");
        assert!(!prose.contains('`'), "{prose}");
    }
}
