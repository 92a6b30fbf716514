//! Terminal output: the live view of a run, plain lines, JSON lines, and the
//! tables of `plan`, `status` and `history`.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use mlops_core::ledger::RunSummary;
use mlops_core::{Event, Manifest, StageStatus, StepStatus};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A live view on a terminal.
    Live,
    /// One line per finished step.
    Plain,
    /// One JSON object per event.
    Json,
}

impl Mode {
    /// Live on a terminal, plain otherwise.
    pub(crate) fn detect() -> Mode {
        if io::stderr().is_terminal() && io::stdout().is_terminal() {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

fn seconds(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

fn mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Passed => "✓",
        StepStatus::Cached => "≡",
        StepStatus::Failed | StepStatus::TimedOut => "✗",
        StepStatus::Gated => "⊘",
        StepStatus::Cancelled => "■",
        StepStatus::Pending => "…",
    }
}

fn stage_mark(status: StageStatus) -> &'static str {
    match status {
        StageStatus::Passed => "✓",
        StageStatus::Failed => "✗",
        StageStatus::Gated => "⊘",
        StageStatus::Cancelled => "■",
        StageStatus::Pending => "…",
    }
}

/// Renders a run's events as they come.
pub(crate) struct EventPrinter {
    mode: Mode,
    bar: Option<ProgressBar>,
    running: Vec<String>,
    counts: std::collections::BTreeMap<StepStatus, usize>,
}

impl EventPrinter {
    pub(crate) fn new(mode: Mode) -> EventPrinter {
        EventPrinter {
            mode,
            bar: None,
            running: Vec::new(),
            counts: Default::default(),
        }
    }

    /// Prints every event until the run's stream ends.
    pub(crate) async fn consume(mut self, mut events: UnboundedReceiver<Event>) -> io::Result<()> {
        while let Some(event) = events.recv().await {
            self.show(&event)?;
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        Ok(())
    }

    fn line(&self, text: &str) -> io::Result<()> {
        match &self.bar {
            Some(bar) => {
                bar.println(text);
                Ok(())
            }
            None => writeln!(io::stdout().lock(), "{text}"),
        }
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            let done: usize = self.counts.values().sum();
            bar.set_position(done as u64);
            bar.set_message(self.running.join(", "));
        }
    }

    fn show(&mut self, event: &Event) -> io::Result<()> {
        if self.mode == Mode::Json {
            let mut out = io::stdout().lock();
            serde_json::to_writer(&mut out, event)?;
            return writeln!(out);
        }
        match event {
            Event::RunStarted {
                run_id,
                project,
                commit,
                dirty,
                selection,
                steps,
                resumed,
            } => {
                let commit = match commit {
                    Some(c) => format!(
                        "commit {}{}",
                        &c[..c.len().min(12)],
                        if *dirty { " (dirty)" } else { "" }
                    ),
                    None => "no git commit".to_owned(),
                };
                let what = if *resumed { "resuming run" } else { "run" };
                let sel = if selection == "all" {
                    String::new()
                } else {
                    format!(" · {selection}")
                };
                if self.mode == Mode::Live {
                    let bar = ProgressBar::new(*steps as u64);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{pos}/{len}] {elapsed} {wide_msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    self.bar = Some(bar);
                }
                self.line(&format!(
                    "{what} {run_id} · {project} · {commit} · {steps} steps{sel}"
                ))?;
            }
            Event::ChangedSince {
                rev,
                files,
                affected,
                ..
            } => {
                let steps = if affected.is_empty() {
                    "no step reads them".to_owned()
                } else {
                    format!("affected: {}", affected.join(", "))
                };
                self.line(&format!(
                    "changed since {rev}: {files} files · {steps} · other steps reuse their last pass"
                ))?;
            }
            Event::StageStarted { stage, .. } => {
                self.line(&format!("▶ {} {}", stage.level(), stage.name()))?;
            }
            Event::StageFinished { stage, status, .. } => {
                if *status != StageStatus::Passed {
                    self.line(&format!("  {} stage {stage} {status}", stage_mark(*status)))?;
                }
            }
            Event::StepStarted { step, attempt, .. } => {
                if *attempt == 1 {
                    self.running.push(step.clone());
                }
                self.refresh();
            }
            Event::StepRetrying {
                step,
                attempt,
                delay_ms,
                reason,
                ..
            } => {
                self.line(&format!(
                    "  ↻ {step:<24} attempt {attempt} {reason}; retrying in {}",
                    seconds(*delay_ms)
                ))?;
            }
            Event::StepFinished {
                step,
                status,
                duration_ms,
                reason,
                log,
                log_tail,
                attempts,
                ..
            } => {
                self.running.retain(|s| s != step);
                *self.counts.entry(*status).or_default() += 1;
                let mut text = format!("  {} {step:<24} {:<9}", mark(*status), status.as_str());
                if matches!(
                    status,
                    StepStatus::Passed | StepStatus::Failed | StepStatus::TimedOut
                ) {
                    text.push_str(&format!(" {:>7}", seconds(*duration_ms)));
                }
                if *attempts > 1 {
                    text.push_str(&format!("  ({attempts} attempts)"));
                }
                if let Some(reason) = reason {
                    text.push_str(&format!("  {reason}"));
                }
                if matches!(status, StepStatus::Failed | StepStatus::TimedOut) {
                    if let Some(tail) = log_tail {
                        for l in tail.lines() {
                            text.push_str(&format!("\n      │ {l}"));
                        }
                    }
                    if let Some(log) = log {
                        text.push_str(&format!("\n      log: {log}"));
                    }
                }
                self.line(&text)?;
                self.refresh();
            }
            Event::RunFinished {
                run_id,
                status,
                duration_ms,
            } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let counts: Vec<String> = StepStatus::ALL
                    .iter()
                    .filter_map(|s| self.counts.get(s).map(|n| format!("{n} {}", s.as_str())))
                    .collect();
                writeln!(
                    io::stdout().lock(),
                    "run {run_id} {status} in {}: {}",
                    seconds(*duration_ms),
                    counts.join(", ")
                )?;
            }
        }
        Ok(())
    }
}

/// The text plan: stages in order, steps in run order.
pub(crate) fn write_plan(out: &mut impl Write, m: &Manifest) -> io::Result<()> {
    let p = &m.pipeline;
    writeln!(
        out,
        "{}: {} steps in {} stages",
        p.project(),
        p.steps().len(),
        p.stages().len()
    )?;
    let order = p.ordered_steps();
    for &stage in p.stages() {
        writeln!(
            out,
            "\n{} {} — {}",
            stage.level(),
            stage.name(),
            stage.title()
        )?;
        for &i in order.iter().filter(|&&i| p.steps()[i].stage == stage) {
            let s = &p.steps()[i];
            let mut extra = Vec::new();
            if !s.depends_on.is_empty() {
                extra.push(format!("after {}", s.depends_on.join(", ")));
            }
            if let Some(t) = s.timeout {
                extra.push(format!("timeout {}", humantime::format_duration(t)));
            }
            if s.retries > 0 {
                extra.push(format!("retries {}", s.retries));
            }
            if !s.inputs.is_empty() {
                extra.push("cacheable".to_owned());
            }
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!("  [{}]", extra.join("; "))
            };
            writeln!(out, "  {:<20} {}{extra}", s.name, s.describe_action())?;
        }
        let next = stage.next().filter(|n| p.stages().contains(n));
        match next {
            Some(n) => writeln!(
                out,
                "  ── gate: {n} starts only if every {stage} step passed"
            )?,
            None => writeln!(out, "  ── gate: end of pipeline")?,
        }
    }
    Ok(())
}

/// The plan as JSON.
pub(crate) fn plan_json(m: &Manifest) -> serde_json::Value {
    let p = &m.pipeline;
    let order = p.ordered_steps();
    let stages: Vec<serde_json::Value> = p
        .stages()
        .iter()
        .map(|&stage| {
            let steps: Vec<serde_json::Value> = order
                .iter()
                .filter(|&&i| p.steps()[i].stage == stage)
                .map(|&i| {
                    let s = &p.steps()[i];
                    json!({
                        "name": s.name,
                        "action": s.describe_action(),
                        "depends_on": s.depends_on,
                        "inputs": s.inputs,
                        "outputs": s.outputs,
                        "timeout_ms": s.timeout.map(|t| t.as_millis() as u64),
                        "retries": s.retries,
                        "reads": s.reads.iter().map(|r| r.section.as_str()).collect::<Vec<_>>(),
                        "fingerprint": s.fingerprint(),
                    })
                })
                .collect();
            json!({ "name": stage.name(), "level": stage.level(), "title": stage.title(), "steps": steps })
        })
        .collect();
    json!({ "project": p.project(), "stages": stages })
}

/// `pipeline status` as text.
pub(crate) fn write_status(
    out: &mut impl Write,
    r: &RunSummary,
    registry: &mlops_core::KindRegistry,
) -> io::Result<()> {
    let commit = r.commit.as_deref().map_or_else(
        || "no git commit".to_owned(),
        |c| format!("commit {}", &c[..c.len().min(12)]),
    );
    let dirty = if r.dirty { " (dirty)" } else { "" };
    let status = if r.interrupted {
        format!(
            "{} (interrupted; finish it with `mlops pipeline run --resume`)",
            r.status
        )
    } else {
        r.status.to_string()
    };
    writeln!(out, "run {} · {} · {status}", r.run_id, r.project)?;
    writeln!(
        out,
        "  {commit}{dirty} · started {} · selection {}",
        r.started_at, r.selection
    )?;
    if let Some(ms) = r.duration_ms {
        writeln!(out, "  took {}", seconds(ms.max(0) as u64))?;
    }
    if r.resumed > 0 {
        writeln!(out, "  resumed {} time(s)", r.resumed)?;
    }
    for stage in &r.stages {
        writeln!(
            out,
            "\n{} {} {} {}",
            stage_mark(stage.status),
            stage.name.level(),
            stage.name,
            stage.status
        )?;
        for s in r.steps.iter().filter(|s| s.stage == stage.name) {
            let duration = s
                .duration_ms
                .map(|d| seconds(d.max(0) as u64))
                .unwrap_or_default();
            let reason = s
                .reason
                .as_deref()
                .map(|r| format!("  {r}"))
                .unwrap_or_default();
            writeln!(
                out,
                "  {} {:<24} {:<9} {:>7}  attempts {}{reason}",
                mark(s.status),
                s.name,
                s.status.as_str(),
                duration,
                s.attempts
            )?;
            for e in &s.evidence {
                if let Some(line) = registry.summarize(e) {
                    let from = e
                        .from_run
                        .map(|r| format!(" (run {r})"))
                        .unwrap_or_default();
                    writeln!(out, "      {}: {line}{from}", e.kind)?;
                }
            }
        }
    }
    Ok(())
}

/// `pipeline history` as text.
pub(crate) fn write_history(out: &mut impl Write, runs: &[RunSummary]) -> io::Result<()> {
    if runs.is_empty() {
        return writeln!(out, "no runs recorded");
    }
    writeln!(
        out,
        "{:>5}  {:<10} {:<25} {:<13} {:>8}  stages",
        "run", "status", "started", "commit", "took"
    )?;
    for r in runs {
        let commit = r.commit.as_deref().map_or("-", |c| &c[..c.len().min(12)]);
        let status = if r.interrupted {
            "interrupted"
        } else {
            r.status.as_str()
        };
        let took = r
            .duration_ms
            .map(|d| seconds(d.max(0) as u64))
            .unwrap_or_else(|| "-".to_owned());
        let stages: Vec<String> = r
            .stages
            .iter()
            .map(|s| format!("{}{}", s.name, stage_mark(s.status)))
            .collect();
        writeln!(
            out,
            "{:>5}  {:<10} {:<25} {:<13} {:>8}  {}",
            r.run_id,
            status,
            r.started_at,
            commit,
            took,
            stages.join(" ")
        )?;
    }
    Ok(())
}
