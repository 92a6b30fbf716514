//! The HTML report's SVG charts: the stage ladder, the ML Test Score by
//! section and the pass history over runs.
//!
//! This module computes the geometry; the templates (`templates/*.svg`)
//! write it out, escaping every label. Every coordinate goes through
//! [`Coord`], so no chart ever holds `NaN` or an infinity, whatever the
//! report's numbers (no runs, one run, all scores zero).

use std::fmt;

use askama::Template;
use mlops_core::Stage;

use super::{date, expect_render, number};
use crate::report::{MlTestScore, RunPoint, StageAssessment, StageStatus};

/// An SVG coordinate or length: at most two decimals, and 0 for anything
/// that is not a finite number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Coord(f64);

impl fmt::Display for Coord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = if self.0.is_finite() { self.0 } else { 0.0 };
        f.write_str(&number(x))
    }
}

/// The colour of a stage status; the page's legend and badges use the same.
fn status_fill(status: StageStatus) -> &'static str {
    match status {
        StageStatus::Proven => PROVEN,
        StageStatus::Configured => CONFIGURED,
        StageStatus::Failing => FAILING,
        StageStatus::Missing => MISSING,
    }
}

const PROVEN: &str = "#1a7f37";
const CONFIGURED: &str = "#0969da";
const FAILING: &str = "#cf222e";
const MISSING: &str = "#d0d7de";
const OTHER: &str = "#8c959f";
const INK: &str = "#1f2328";
const LOWEST: &str = "#bf8700";
const BAR: &str = "#0969da";

/// Two short lines under a step of the ladder: the stage titles are too long
/// for a step's width.
fn ladder_caption(stage: Stage) -> (&'static str, &'static str) {
    match stage {
        Stage::Iac => ("Infrastructure", "as Code"),
        Stage::Ci => ("Continuous", "Integration"),
        Stage::Cd => ("Continuous", "Delivery"),
        Stage::Release => ("Release", "Management"),
        Stage::Apm => ("Performance", "Monitoring"),
        Stage::Loadtest => ("Load test &", "auto-scale"),
    }
}

/// The stage ladder: one rising step per stage, coloured by status; steps
/// that do not count are faded and hatched, and a dashed line marks where
/// the gating rule stops the climb.
#[derive(Template)]
#[template(path = "ladder.svg")]
pub(super) struct Ladder {
    level: u8,
    steps: Vec<LadderStep>,
    /// Where the climb stops, unless every stage counts.
    gate: Option<Gate>,
    legend: Vec<LegendEntry>,
    baseline: Coord,
    right: Coord,
}

struct LadderStep {
    level: u8,
    name: &'static str,
    title: String,
    status: &'static str,
    counts: bool,
    met: bool,
    fill: &'static str,
    /// The colour of the labels on the step.
    ink: &'static str,
    x: Coord,
    y: Coord,
    width: Coord,
    height: Coord,
    /// The middle of the step, for centred labels.
    mid: Coord,
    /// Baselines of the labels on the step, of the mark above it and of
    /// the two caption lines under the ladder.
    number_y: Coord,
    status_y: Coord,
    mark_y: Coord,
    caption_y: (Coord, Coord),
    caption: (&'static str, &'static str),
}

struct Gate {
    x: Coord,
    top: Coord,
    label_x: Coord,
    label_y: Coord,
    anchor: &'static str,
}

struct LegendEntry {
    x: Coord,
    text_x: Coord,
    fill: &'static str,
    hatched: bool,
    label: &'static str,
}

const LADDER_LEFT: f64 = 20.0;
const LADDER_SLOT: f64 = 120.0;
const LADDER_BASELINE: f64 = 286.0;
const LADDER_FIRST_HEIGHT: f64 = 58.0;
const LADDER_RISE: f64 = 34.0;

impl Ladder {
    pub(super) fn new(level: u8, stages: &[StageAssessment]) -> Ladder {
        let steps: Vec<LadderStep> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let height = LADDER_FIRST_HEIGHT + LADDER_RISE * i as f64;
                let x = LADDER_LEFT + LADDER_SLOT * i as f64 + 3.0;
                let width = LADDER_SLOT - 6.0;
                let top = LADDER_BASELINE - height;
                let solid = s.counts && s.status != StageStatus::Missing;
                LadderStep {
                    level: s.level,
                    name: s.stage.name(),
                    title: s.title.clone(),
                    status: s.status.as_str(),
                    counts: s.counts,
                    met: s.met,
                    fill: status_fill(s.status),
                    ink: if solid { "#ffffff" } else { INK },
                    x: Coord(x),
                    y: Coord(top),
                    width: Coord(width),
                    height: Coord(height),
                    mid: Coord(x + width / 2.0),
                    number_y: Coord(top + 24.0),
                    status_y: Coord(top + 44.0),
                    mark_y: Coord(top - 8.0),
                    caption_y: (Coord(LADDER_BASELINE + 17.0), Coord(LADDER_BASELINE + 31.0)),
                    caption: ladder_caption(s.stage),
                }
            })
            .collect();
        let gate = stages.iter().position(|s| !s.counts).map(|i| {
            let x = LADDER_LEFT + LADDER_SLOT * i as f64;
            // The label sits beside the line, on the side with room.
            let (label_x, anchor) = if i >= 4 {
                (x - 6.0, "end")
            } else {
                (x + 6.0, "start")
            };
            Gate {
                x: Coord(x),
                top: Coord(34.0),
                label_x: Coord(label_x),
                label_y: Coord(44.0),
                anchor,
            }
        });
        let legend = [
            (PROVEN, false, "proven"),
            (CONFIGURED, false, "configured"),
            (FAILING, false, "failing"),
            (MISSING, false, "missing"),
            (OTHER, true, "does not count"),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (fill, hatched, label))| {
            let x = LADDER_LEFT + 104.0 * i as f64;
            LegendEntry {
                x: Coord(x),
                text_x: Coord(x + 20.0),
                fill,
                hatched,
                label,
            }
        })
        .collect();
        Ladder {
            level,
            steps,
            gate,
            legend,
            baseline: Coord(LADDER_BASELINE),
            right: Coord(LADDER_LEFT + LADDER_SLOT * 6.0),
        }
    }

    pub(super) fn to_svg(&self) -> String {
        expect_render(self)
    }
}

/// The ML Test Score by section: one bar per section on a 0–7 scale, the
/// lowest (which is the score) highlighted.
#[derive(Template)]
#[template(path = "ml-test-score.svg")]
pub(super) struct ScoreChart {
    score: String,
    bars: Vec<ScoreBar>,
    grid: Vec<GridLine>,
    /// The dashed line at the score, when it is a number.
    min_y: Option<Coord>,
    lowest: &'static str,
    left: Coord,
    right: Coord,
}

struct ScoreBar {
    name: String,
    title: String,
    value: String,
    min: bool,
    fill: &'static str,
    x: Coord,
    y: Coord,
    width: Coord,
    height: Coord,
    mid: Coord,
    /// Baselines of the value above the bar and of the name under the axis.
    value_y: Coord,
    name_y: Coord,
}

struct GridLine {
    y: Coord,
    /// The label's baseline, centred on the line.
    label_y: Coord,
    label: String,
}

const SCORE_LEFT: f64 = 36.0;
const SCORE_RIGHT: f64 = 392.0;
const SCORE_TOP: f64 = 30.0;
const SCORE_BOTTOM: f64 = 206.0;
const SECTION_MAX: f64 = 7.0;

impl ScoreChart {
    /// `None` when there are no sections to draw.
    pub(super) fn new(score: &MlTestScore) -> Option<ScoreChart> {
        if score.sections.is_empty() {
            return None;
        }
        let scale = |v: f64| {
            let v = if v.is_finite() {
                v.clamp(0.0, SECTION_MAX)
            } else {
                0.0
            };
            (SCORE_BOTTOM - SCORE_TOP) * v / SECTION_MAX
        };
        let slot = (SCORE_RIGHT - SCORE_LEFT) / score.sections.len() as f64;
        let width = (slot * 0.56).min(56.0);
        let min = score
            .sections
            .iter()
            .map(|s| s.sum)
            .filter(|v| v.is_finite())
            .fold(f64::INFINITY, f64::min);
        let bars = score
            .sections
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let height = scale(s.sum);
                let x = SCORE_LEFT + slot * i as f64 + (slot - width) / 2.0;
                let lowest = s.sum.is_finite() && (s.sum - min).abs() < 1e-9;
                ScoreBar {
                    name: s.name.clone(),
                    title: s.title.clone(),
                    value: number(s.sum),
                    min: lowest,
                    fill: if lowest { LOWEST } else { BAR },
                    x: Coord(x),
                    y: Coord(SCORE_BOTTOM - height),
                    width: Coord(width),
                    height: Coord(height),
                    mid: Coord(x + width / 2.0),
                    value_y: Coord(SCORE_BOTTOM - height - 6.0),
                    name_y: Coord(SCORE_BOTTOM + 17.0),
                }
            })
            .collect();
        let grid = (0..=7)
            .map(|v| {
                let y = SCORE_BOTTOM - scale(f64::from(v));
                GridLine {
                    y: Coord(y),
                    label_y: Coord(y + 4.0),
                    label: v.to_string(),
                }
            })
            .collect();
        Some(ScoreChart {
            score: number(score.score),
            bars,
            grid,
            min_y: min.is_finite().then(|| Coord(SCORE_BOTTOM - scale(min))),
            lowest: LOWEST,
            left: Coord(SCORE_LEFT),
            right: Coord(SCORE_RIGHT),
        })
    }

    pub(super) fn to_svg(&self) -> String {
        expect_render(self)
    }
}

/// The pass history: the stage level each run reached, one bar per run,
/// oldest first, coloured by the run's status; failed runs are marked.
#[derive(Template)]
#[template(path = "run-history.svg")]
pub(super) struct HistoryChart {
    bars: Vec<RunBar>,
    grid: Vec<GridLine>,
    ticks: Vec<Tick>,
    failed: usize,
    left: Coord,
    right: Coord,
}

struct RunBar {
    run_id: i64,
    at: String,
    commit: Option<String>,
    status: String,
    /// `passed`, `failed` or `other`.
    class: &'static str,
    fill: &'static str,
    level: u8,
    x: Coord,
    y: Coord,
    width: Coord,
    height: Coord,
    /// The failed-run marker above the bar: a small downward triangle.
    mark: Option<String>,
}

struct Tick {
    x: Coord,
    date_y: Coord,
    run_y: Coord,
    anchor: &'static str,
    date: String,
    run: String,
}

const HISTORY_LEFT: f64 = 44.0;
const HISTORY_RIGHT: f64 = 708.0;
const HISTORY_TOP: f64 = 40.0;
const HISTORY_BOTTOM: f64 = 206.0;
const STAGES: f64 = 6.0;

impl HistoryChart {
    /// `None` when there is no run to draw.
    pub(super) fn new(runs: &[RunPoint]) -> Option<HistoryChart> {
        if runs.is_empty() {
            return None;
        }
        let scale =
            |level: u8| (HISTORY_BOTTOM - HISTORY_TOP) * f64::from(level).min(STAGES) / STAGES;
        let slot = (HISTORY_RIGHT - HISTORY_LEFT) / runs.len() as f64;
        let width = (slot * 0.72).clamp(1.0, 28.0);
        let bars = runs
            .iter()
            .enumerate()
            .map(|(i, run)| {
                // A run that reached no stage still shows, as a stub.
                let height = scale(run.stage_level).max(3.0);
                let x = HISTORY_LEFT + slot * i as f64 + (slot - width) / 2.0;
                let top = HISTORY_BOTTOM - height;
                let (class, fill) = match run.status.as_str() {
                    "passed" => ("passed", PROVEN),
                    "failed" => ("failed", FAILING),
                    _ => ("other", OTHER),
                };
                let mark = (class == "failed").then(|| {
                    let half = (width / 2.0).clamp(2.5, 5.0);
                    let mid = x + width / 2.0;
                    let tip = top - 3.0;
                    format!(
                        "M{} {}L{} {}L{} {}Z",
                        Coord(mid - half),
                        Coord(tip - half * 1.6),
                        Coord(mid + half),
                        Coord(tip - half * 1.6),
                        Coord(mid),
                        Coord(tip)
                    )
                });
                RunBar {
                    run_id: run.run_id,
                    at: run.at.clone(),
                    commit: run.commit.clone(),
                    status: run.status.clone(),
                    class,
                    fill,
                    level: run.stage_level,
                    x: Coord(x),
                    y: Coord(top),
                    width: Coord(width),
                    height: Coord(height),
                    mark,
                }
            })
            .collect();
        let grid = (0..=6)
            .map(|level| {
                let y = HISTORY_BOTTOM - scale(level);
                GridLine {
                    y: Coord(y),
                    label_y: Coord(y + 4.0),
                    label: level.to_string(),
                }
            })
            .collect();
        let tick = |i: usize, anchor| {
            let run = &runs[i];
            let x = match anchor {
                "start" => HISTORY_LEFT,
                "end" => HISTORY_RIGHT,
                _ => HISTORY_LEFT + slot * (i as f64 + 0.5),
            };
            Tick {
                x: Coord(x),
                date_y: Coord(HISTORY_BOTTOM + 17.0),
                run_y: Coord(HISTORY_BOTTOM + 31.0),
                anchor,
                date: date(&run.at).to_owned(),
                run: format!("run {}", run.run_id),
            }
        };
        // A few runs: a label under each bar. Many: the first, the middle
        // and the last, at the edges of the axis.
        let last = runs.len() - 1;
        let ticks = if runs.len() <= 4 {
            (0..=last).map(|i| tick(i, "middle")).collect()
        } else {
            vec![
                tick(0, "start"),
                tick(last / 2, "middle"),
                tick(last, "end"),
            ]
        };
        Some(HistoryChart {
            failed: runs.iter().filter(|r| r.status == "failed").count(),
            bars,
            grid,
            ticks,
            left: Coord(HISTORY_LEFT),
            right: Coord(HISTORY_RIGHT),
        })
    }

    pub(super) fn to_svg(&self) -> String {
        expect_render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{MlTestSection, StageStatus};

    fn run(run_id: i64, status: &str, stage_level: u8) -> RunPoint {
        RunPoint {
            run_id,
            at: format!("2026-03-{:02}T10:00:00Z", run_id % 28 + 1),
            commit: Some("abc".to_owned()),
            status: status.to_owned(),
            stage_level,
        }
    }

    fn stage(stage: Stage, status: StageStatus, counts: bool) -> StageAssessment {
        StageAssessment {
            stage,
            level: stage.level(),
            title: stage.title().to_owned(),
            status,
            met: matches!(status, StageStatus::Proven | StageStatus::Configured),
            counts,
            criteria: Vec::new(),
            last_passed: None,
            next_steps: Vec::new(),
        }
    }

    /// Every coordinate and length is a finite number, and the chart has
    /// what a reader and a screen reader need.
    fn assert_finite(svg: &str) {
        for attr in ["x", "y", "width", "height", "x1", "y1", "x2", "y2", "dx"] {
            let needle = format!(" {attr}=\"");
            for (i, _) in svg.match_indices(&needle) {
                let rest = &svg[i + needle.len()..];
                let value = &rest[..rest.find('"').unwrap()];
                let number: f64 = value.parse().unwrap_or(f64::NAN);
                assert!(number.is_finite(), "{attr}=\"{value}\" in\n{svg}");
            }
        }
        assert!(!svg.contains("NaN"), "{svg}");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("viewBox=\"0 0 "), "{svg}");
        assert!(svg.contains("<title"), "{svg}");
    }

    #[test]
    fn coordinates_are_always_numbers() {
        assert_eq!(Coord(f64::NAN).to_string(), "0");
        assert_eq!(Coord(f64::INFINITY).to_string(), "0");
        assert_eq!(Coord(12.345_678).to_string(), "12.35");
    }

    #[test]
    fn one_run_and_many_runs_draw_one_bar_each() {
        for n in [1_i64, 2, 3, 200] {
            let runs: Vec<RunPoint> = (1..=n)
                .map(|i| {
                    run(
                        i,
                        if i % 5 == 0 { "failed" } else { "passed" },
                        (i % 7) as u8,
                    )
                })
                .collect();
            let svg = HistoryChart::new(&runs).unwrap().to_svg();
            assert_finite(&svg);
            assert_eq!(svg.matches("<rect class=\"run ").count(), n as usize);
            assert_eq!(svg.matches("class=\"fail-mark\"").count(), (n / 5) as usize);
            let labels = svg.matches("\">run ").count();
            assert_eq!(labels, if n <= 4 { n as usize } else { 3 }, "{svg}");
        }
        let one = HistoryChart::new(&[run(7, "passed", 2)]).unwrap().to_svg();
        assert!(
            one.contains("text-anchor=\"middle\">run 7</text>"),
            "a lone run is labelled under its bar: {one}"
        );
        assert!(HistoryChart::new(&[]).is_none());
    }

    #[test]
    fn all_zero_scores_draw_four_empty_bars_all_lowest() {
        let score = MlTestScore {
            score: 0.0,
            sections: ["data", "model", "infrastructure", "monitoring"]
                .into_iter()
                .map(|name| MlTestSection {
                    name: name.to_owned(),
                    title: name.to_owned(),
                    sum: 0.0,
                    tests: Vec::new(),
                })
                .collect(),
        };
        let svg = ScoreChart::new(&score).unwrap().to_svg();
        assert_finite(&svg);
        assert_eq!(svg.matches("<rect class=\"bar").count(), 4);
        assert_eq!(svg.matches("<rect class=\"bar min\"").count(), 4);
        let empty = MlTestScore {
            score: f64::INFINITY,
            sections: Vec::new(),
        };
        assert!(ScoreChart::new(&empty).is_none());
    }

    #[test]
    fn the_ladder_fades_every_step_above_the_gate() {
        let stages: Vec<StageAssessment> = Stage::ALL
            .into_iter()
            .zip([
                (StageStatus::Proven, true),
                (StageStatus::Configured, true),
                (StageStatus::Missing, false),
                (StageStatus::Configured, false),
                (StageStatus::Failing, false),
                (StageStatus::Missing, false),
            ])
            .map(|(s, (status, counts))| stage(s, status, counts))
            .collect();
        let svg = Ladder::new(2, &stages).to_svg();
        assert_finite(&svg);
        assert_eq!(svg.matches("<g class=\"step ").count(), 6);
        assert_eq!(svg.matches("<g class=\"step gated ").count(), 4);
        assert_eq!(svg.matches("class=\"gate\"").count(), 1);
        let all: Vec<StageAssessment> = Stage::ALL
            .into_iter()
            .map(|s| stage(s, StageStatus::Proven, true))
            .collect();
        let svg = Ladder::new(6, &all).to_svg();
        assert_eq!(svg.matches("<g class=\"step gated ").count(), 0);
        assert_eq!(svg.matches("class=\"gate\"").count(), 0);
    }
}
