//! Rendering a [`crate::Report`] as HTML, Markdown or JSON.
//!
//! This module owns the presentation only: it reads a finished [`Report`]
//! and never scores, scans or reads files. HTML ([`html`]) is one
//! self-contained page with inline CSS and SVG charts, no JavaScript and no
//! external resources; Markdown ([`markdown`]) is a pull-request comment kept
//! under GitHub's comment limit; JSON ([`json`]) is the report's documented
//! serde form.
//!
//! Every string of the report that comes from the repository (paths,
//! commands, names, summaries) is escaped for the format: askama escapes
//! HTML, and the Markdown filters in `markdown` neutralise Markdown and HTML.

mod chart;
mod html;
mod markdown;

use std::fmt;
use std::str::FromStr;

use crate::report::{Report, Severity, StageAssessment};

/// A format a report can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One self-contained HTML page.
    Html,
    /// GitHub-flavoured Markdown for a pull-request comment.
    Markdown,
    /// The report's JSON form (`docs/assess.md`).
    Json,
}

impl Format {
    /// Every format, in the order help texts list them.
    pub const ALL: [Format; 3] = [Format::Html, Format::Markdown, Format::Json];

    /// The name `FromStr` accepts first: `html`, `md`, `json`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Markdown => "md",
            Format::Json => "json",
        }
    }

    /// The file extension of a report in this format, without the dot.
    pub fn extension(self) -> &'static str {
        self.name()
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a report format name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown report format `{0}`; the formats are html, md (or markdown), json")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "html" => Ok(Format::Html),
            "md" | "markdown" => Ok(Format::Markdown),
            "json" => Ok(Format::Json),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// Writes `report` in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Html => html(report),
        Format::Markdown => markdown(report),
        Format::Json => json(report),
    }
}

/// One self-contained HTML page: inline CSS and SVG, no JavaScript, no
/// external resources.
pub fn html(report: &Report) -> String {
    html::render(report)
}

/// A GitHub-flavoured Markdown summary for a pull-request comment, at most
/// [`MARKDOWN_LIMIT`] bytes whatever the size of the report.
pub fn markdown(report: &Report) -> String {
    let mut out = markdown::render(report);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The most bytes [`markdown`] writes: under GitHub's 65,536-character limit
/// for a comment, with room for a caller's own heading.
pub const MARKDOWN_LIMIT: usize = 60_000;

/// The report as pretty-printed JSON with a trailing newline.
pub fn json(report: &Report) -> String {
    let mut out = serde_json::to_string_pretty(report).expect("a report always serialises to JSON");
    out.push('\n');
    out
}

/// What both templates show the same way, as methods they call
/// (`self.num(x)`): a report struct gives its [`Report`] and gets the rest.
/// askama hands arguments over by reference, so they take `&T` even where
/// `T` is `Copy`.
trait ReportView<'a> {
    /// The report the template shows.
    fn report(&self) -> &'a Report;

    /// A score or count: [`number`].
    #[expect(
        clippy::trivially_copy_pass_by_ref,
        reason = "askama passes template arguments by reference"
    )]
    fn num(&self, x: &f64) -> String {
        number(*x)
    }

    /// A commit as people read it: [`short_commit`].
    fn short<'s>(&self, commit: &'s str) -> &'s str {
        short_commit(commit)
    }

    /// A time as people read it: [`when`].
    fn when(&self, at: &str) -> String {
        when(at)
    }

    /// The name of the Microsoft level the report reached.
    fn microsoft_name(&self) -> &'a str {
        let r = self.report();
        r.microsoft
            .iter()
            .find(|l| l.level == r.microsoft_level)
            .map_or("", |l| l.name.as_str())
    }

    /// The ML Test Score's sections and their sums: `Data 2 · Model 1.5`.
    fn sections_summary(&self) -> String {
        self.report()
            .ml_test_score
            .sections
            .iter()
            .map(|s| format!("{} {}", s.name, number(s.sum)))
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// The first stage that does not count: where the climb stops.
fn blocker(report: &Report) -> Option<&StageAssessment> {
    report.stages.iter().find(|s| !s.counts)
}

/// How many findings of `severity` the report has.
fn findings_of(report: &Report, severity: Severity) -> usize {
    report
        .findings
        .iter()
        .filter(|f| f.severity == severity)
        .count()
}

/// Renders an askama template into a string. Our templates write only to a
/// `String` and use no fallible filters, so rendering cannot fail.
fn expect_render(template: &impl askama::Template) -> String {
    template
        .render()
        .expect("report templates write to a String and have no fallible filters")
}

/// A score or count for people: at most two decimals, no trailing zeros, no
/// `-0`; `n/a` when it is not a number (a report with no ML test sections
/// has an infinite minimum).
fn number(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_owned();
    }
    let rounded = (x * 100.0).round() / 100.0;
    let mut s = format!("{rounded:.2}");
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    if s == "-0" { "0".to_owned() } else { s }
}

/// Text cut to at most `max` characters, with `…` when it was cut.
fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((end, _)) => {
            let keep = s[..end]
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(end, |(i, _)| i);
            format!("{}…", &s[..keep]).into()
        }
    }
}

/// A run of prose: plain text, or a `code` span written between backticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment<'a> {
    code: bool,
    text: &'a str,
}

/// Splits prose such as a next step ("run `mlops pipeline run`") into text
/// and code. A backtick without a partner is text.
fn prose(s: &str) -> Vec<Segment<'_>> {
    let ticks: Vec<usize> = s.match_indices('`').map(|(i, _)| i).collect();
    let mut out = Vec::new();
    let mut at = 0;
    for pair in ticks.chunks_exact(2) {
        let (open, close) = (pair[0], pair[1]);
        if open > at {
            out.push(Segment {
                code: false,
                text: &s[at..open],
            });
        }
        if close > open + 1 {
            out.push(Segment {
                code: true,
                text: &s[open + 1..close],
            });
        }
        at = close + 1;
    }
    if at < s.len() {
        out.push(Segment {
            code: false,
            text: &s[at..],
        });
    }
    out
}

/// The first 12 characters of a commit id, which people read; the full id
/// stays in the JSON.
fn short_commit(commit: &str) -> &str {
    match commit.char_indices().nth(12) {
        Some((end, _)) => &commit[..end],
        None => commit,
    }
}

/// An RFC 3339 UTC time for people: `2026-03-01 10:00 UTC`; anything else
/// as it is.
fn when(at: &str) -> String {
    match (at.get(..10), at.get(10..11), at.get(11..16)) {
        (Some(day), Some("T"), Some(time)) if at.ends_with('Z') => format!("{day} {time} UTC"),
        _ => at.to_owned(),
    }
}

/// The date part of an RFC 3339 time, for axis labels.
fn date(at: &str) -> &str {
    at.get(..10).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_the_error_lists_them() {
        for format in Format::ALL {
            assert_eq!(format.name().parse::<Format>(), Ok(format));
        }
        assert_eq!("markdown".parse::<Format>(), Ok(Format::Markdown));
        let err = "pdf".parse::<Format>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown report format `pdf`; the formats are html, md (or markdown), json"
        );
    }

    #[test]
    fn numbers_print_without_noise() {
        for (x, want) in [
            (3.5000001, "3.5"),
            (7.0, "7"),
            (0.0, "0"),
            (-0.0, "0"),
            (-0.001, "0"),
            (2.25, "2.25"),
            (1.0 / 3.0, "0.33"),
            (f64::INFINITY, "n/a"),
            (f64::NAN, "n/a"),
        ] {
            assert_eq!(number(x), want, "{x}");
        }
    }

    #[test]
    fn truncation_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("äöüß", 2), "ä…");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn prose_splits_code_spans() {
        let seg = |code, text| Segment { code, text };
        assert_eq!(
            prose("run `mlops pipeline run` to record"),
            vec![
                seg(false, "run "),
                seg(true, "mlops pipeline run"),
                seg(false, " to record")
            ]
        );
        assert_eq!(
            prose("a ` alone"),
            vec![seg(false, "a ` alone")],
            "an unpaired backtick is text"
        );
        assert_eq!(
            prose("`x` and `y` then `z"),
            vec![
                seg(true, "x"),
                seg(false, " and "),
                seg(true, "y"),
                seg(false, " then `z")
            ]
        );
        assert_eq!(prose("``"), vec![]);
        assert_eq!(prose(""), vec![]);
    }

    #[test]
    fn commits_and_dates_shorten_safely() {
        assert_eq!(short_commit("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short_commit("abc"), "abc");
        assert_eq!(date("2026-03-01T10:00:00Z"), "2026-03-01");
        assert_eq!(when("2026-03-01T10:00:00Z"), "2026-03-01 10:00 UTC");
        assert_eq!(when("2026-03-01T10:00:00.123456Z"), "2026-03-01 10:00 UTC");
        assert_eq!(
            when("2026-03-01T10:00:00+02:00"),
            "2026-03-01T10:00:00+02:00"
        );
        assert_eq!(when("yesterday"), "yesterday");
        assert_eq!(when("2026-03-01Té"), "2026-03-01Té");
        assert_eq!(date("soon"), "soon");
        assert_eq!(date("2026-03-0é"), "2026-03-0é", "not a char boundary");
    }
}
