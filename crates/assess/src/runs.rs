//! Run evidence: what the ledger recorded. Which stages passed, when and on
//! which commit, how often the pipeline runs, what the built-in steps found
//! (tests, data validation, model gates, deploys, smoke tests, …) and the
//! release history of the model registry.
//!
//! A project without a ledger has no run evidence: the ledger is opened
//! only if it exists (opening migrates an older schema forward, as every
//! mlops command does).

use mlops_cd::evidence as cd;
use mlops_ci::evidence as ci;
use mlops_iac::kinds::evidence as iac;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use mlops_core::ledger::StepEvidence;
use mlops_core::registry::RegistryError;
use mlops_core::{Ledger, LedgerError, RunStatus, Stage, StageStatus, StepStatus};

use crate::evidence::{Evidence, Signal, Source};
use crate::report::{RecordedEvidence, RunHistory, RunPoint, RunRef, StageRuns};

/// At most this many runs are drawn on the history chart.
pub const MAX_RUN_POINTS: usize = 200;

/// At most this many release verdicts are listed.
const MAX_RELEASE_VERDICTS: usize = 20;

/// What the ledger shows.
#[derive(Debug, Clone)]
pub struct RunEvidence {
    /// Totals, the chart's points, per-stage results, releases.
    pub history: RunHistory,
    /// Evidence (ids empty), one per signal a recorded step proves: the
    /// newest passing record of each kind.
    pub evidence: Vec<Evidence>,
}

impl RunEvidence {
    /// The per-stage results for `stage`.
    pub fn stage(&self, stage: Stage) -> Option<&StageRuns> {
        self.history.stages.iter().find(|s| s.stage == stage)
    }
}

/// Why the ledger could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    /// The ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The model registry's tables.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Reads the ledger of the project at `root` (a read-only snapshot: see
/// [`Ledger::open_snapshot`]); `None` when there is none.
pub fn read(root: &Path) -> Result<Option<RunEvidence>, RunsError> {
    let Some(ledger) = Ledger::open_snapshot(root)? else {
        return Ok(None);
    };
    let mut runs = ledger.history(i64::MAX as usize)?;
    runs.reverse(); // oldest first
    let records = ledger.step_evidence(MAX_RELEASE_VERDICTS)?;
    let production = ledger.production_changes()?;

    let mut stage_runs: BTreeMap<Stage, StageRuns> = Stage::ALL
        .iter()
        .map(|&stage| {
            (
                stage,
                StageRuns {
                    stage,
                    passed: 0,
                    failed: 0,
                    last_passed: None,
                    last: None,
                    last_status: None,
                },
            )
        })
        .collect();
    // Each stage's standing as of the run being folded: stages a run did
    // not select keep the standing an earlier run gave them.
    let mut standing: BTreeMap<Stage, bool> = BTreeMap::new();
    let mut points = Vec::with_capacity(runs.len());
    let (mut passed, mut failed, mut other) = (0, 0, 0);
    let mut commits = HashSet::new();
    for run in &runs {
        match run.status {
            RunStatus::Passed => passed += 1,
            RunStatus::Failed => failed += 1,
            RunStatus::Cancelled | RunStatus::Running => other += 1,
        }
        if let Some(commit) = &run.commit {
            commits.insert(commit.clone());
        }
        let here = RunRef {
            run_id: run.run_id,
            commit: run.commit.clone(),
            at: run.started_at.clone(),
        };
        for s in &run.stages {
            let entry = stage_runs
                .get_mut(&s.name)
                .expect("every stage has an entry");
            match s.status {
                StageStatus::Passed => {
                    entry.passed += 1;
                    entry.last_passed = Some(here.clone());
                    entry.last = Some(here.clone());
                    entry.last_status = Some("passed".to_owned());
                    standing.insert(s.name, true);
                }
                StageStatus::Failed => {
                    entry.failed += 1;
                    entry.last = Some(here.clone());
                    entry.last_status = Some("failed".to_owned());
                    standing.insert(s.name, false);
                }
                // Gated, cancelled or unfinished: the run did not decide
                // the stage.
                StageStatus::Gated | StageStatus::Cancelled | StageStatus::Pending => {}
            }
        }
        let level = Stage::ALL
            .iter()
            .take_while(|s| standing.get(s).copied().unwrap_or(false))
            .count();
        points.push(RunPoint {
            run_id: run.run_id,
            at: run.started_at.clone(),
            commit: run.commit.clone(),
            status: if run.interrupted {
                "interrupted".to_owned()
            } else {
                run.status.as_str().to_owned()
            },
            stage_level: level as u8,
        });
    }
    let runs_per_week = match (runs.first(), runs.last()) {
        (Some(first), Some(last)) if runs.len() > 1 => {
            let span = span_ms(&first.started_at, &last.started_at);
            span.filter(|ms| *ms > 0)
                .map(|ms| (runs.len() - 1) as f64 / (ms as f64 / WEEK_MS))
        }
        _ => None,
    };
    if points.len() > MAX_RUN_POINTS {
        points.drain(..points.len() - MAX_RUN_POINTS);
    }

    let release_verdicts: Vec<RecordedEvidence> = records
        .iter()
        .filter(|r| r.kind == mlops_release::evidence::RELEASE)
        .take(MAX_RELEASE_VERDICTS)
        .map(recorded)
        .collect();
    let newest = |kind: &str| records.iter().find(|r| r.kind == kind).map(recorded);

    let history = RunHistory {
        total: runs.len(),
        passed,
        failed,
        other,
        first_at: runs.first().map(|r| r.started_at.clone()),
        last_at: runs.last().map(|r| r.started_at.clone()),
        runs_per_week,
        commits: commits.len(),
        runs: points,
        stages: stage_runs.into_values().collect(),
        promotions: production.len(),
        rollbacks: production.iter().filter(|c| c.is_rollback()).count(),
        release_verdicts,
        slo: newest(later::SLO),
        breaking_point: newest(later::BREAKING_POINT),
        capacity: newest(later::CAPACITY),
    };

    let mut evidence = step_signals(&records);
    evidence.extend(registry_signals(&production));
    Ok(Some(RunEvidence { history, evidence }))
}

const WEEK_MS: f64 = 7.0 * 24.0 * 3600.0 * 1000.0;

/// Milliseconds from `a` to `b`, two timestamps the ledger wrote.
fn span_ms(a: &str, b: &str) -> Option<i64> {
    Some(parse_ms(b)? - parse_ms(a)?)
}

/// Parses the ledger's RFC 3339 timestamps into Unix milliseconds.
fn parse_ms(t: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339(t).ok()?;
    let ms = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

fn recorded(r: &StepEvidence) -> RecordedEvidence {
    RecordedEvidence {
        source: source(r),
        body: r.body.clone(),
    }
}

fn source(r: &StepEvidence) -> Source {
    Source::Run {
        run_id: r.run_id,
        step: Some(r.step.clone()),
        commit: r.commit.clone(),
        at: r.run_started_at.clone(),
    }
}

/// The signals a recorded evidence kind proves, when its step passed; see
/// `docs/assess.md`.
pub fn signals_of_kind(kind: &str) -> &'static [Signal] {
    match kind {
        iac::ENVIRONMENT => &[Signal::LockedEnvironment],
        iac::INFRA_APPLY => &[Signal::InfrastructureCode, Signal::Deployment],
        ci::TESTS => &[Signal::UnitTests],
        ci::DATA_VALIDATION => &[Signal::DataTests],
        ci::MODEL_GATE => &[Signal::ModelValidation],
        ci::REPRODUCIBILITY => &[Signal::Reproducibility],
        ci::SECRET_SCAN => &[Signal::SecretScanning],
        cd::PACKAGE => &[Signal::Packaging, Signal::ModelRegistry],
        cd::DEPLOY => &[Signal::Deployment],
        cd::SMOKE => &[Signal::SmokeTests, Signal::IntegrationTests],
        mlops_release::evidence::RELEASE => &[Signal::ProgressiveDelivery],
        mlops_release::evidence::ROLLBACK => &[Signal::Rollback],
        later::SLO => &[Signal::Metrics, Signal::Alerting],
        later::DRIFT => &[Signal::DriftMonitoring],
        later::LOAD_TEST | later::BREAKING_POINT | later::CAPACITY => &[Signal::LoadTest],
        later::AUTOSCALE => &[Signal::Autoscaling],
        _ => &[],
    }
}

/// One evidence per (kind, signal): the newest record whose step passed.
fn step_signals(records: &[StepEvidence]) -> Vec<Evidence> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in records {
        if !matches!(r.status, StepStatus::Passed | StepStatus::Cached) {
            continue;
        }
        if !seen.insert(r.kind.clone()) {
            continue;
        }
        let mut signals = signals_of_kind(&r.kind).to_vec();
        if r.kind == ci::MODEL_GATE && r.body.get("baseline").is_some_and(|b| !b.is_null()) {
            signals.push(Signal::BaselineComparison);
        }
        for signal in signals {
            out.push(Evidence {
                id: String::new(),
                signal,
                summary: format!(
                    "run {}: step `{}` passed and recorded `{}` evidence{}",
                    r.run_id,
                    r.step,
                    r.kind,
                    detail(&r.kind, &r.body).map_or(String::new(), |d| format!(" ({d})"))
                ),
                source: source(r),
                automated: true,
                run_by: Vec::new(),
            });
        }
    }
    out
}

/// A few words from a recorded document, for the kinds whose layout is
/// known.
fn detail(kind: &str, body: &serde_json::Value) -> Option<String> {
    let num = |path: &[&str]| {
        let mut v = body;
        for p in path {
            v = v.get(p)?;
        }
        v.as_u64()
    };
    match kind {
        ci::TESTS => {
            let total = num(&["tests"])?;
            let failed = num(&["failed"]).unwrap_or(0) + num(&["errors"]).unwrap_or(0);
            Some(format!("{total} tests, {failed} failed"))
        }
        ci::DATA_VALIDATION => {
            let rows = num(&["rows"])?;
            let file = body.get("file")?.as_str()?;
            Some(format!("{file}: {rows} rows"))
        }
        cd::DEPLOY => {
            let version = body.get("version")?.as_str()?;
            let env = body.get("environment")?.as_str()?;
            Some(format!("{version} to {env}"))
        }
        cd::SMOKE => {
            let cases = num(&["cases"])?;
            let endpoints = body.get("endpoints")?.as_array()?.len();
            Some(format!("{cases} cases against {endpoints} replicas"))
        }
        iac::ENVIRONMENT => {
            let packages = num(&["packages"])?;
            Some(format!("{packages} packages pinned"))
        }
        cd::PACKAGE => {
            let model = body.get("model")?.as_str()?;
            let version = num(&["version"])?;
            Some(format!("{model}:{version}"))
        }
        ci::MODEL_GATE => {
            let checks = body.get("checks")?.as_array()?.len();
            let baseline = body.get("baseline").is_some_and(|b| !b.is_null());
            Some(format!(
                "{checks} thresholds{}",
                if baseline {
                    ", compared with a baseline"
                } else {
                    ""
                }
            ))
        }
        ci::SECRET_SCAN => {
            let files = num(&["files_scanned"])?;
            let commits = num(&["commits_scanned"]).unwrap_or(0);
            Some(format!("{files} files, {commits} commits"))
        }
        _ => None,
    }
}

/// Promotions to production prove a release process; a promotion of an
/// older version proves a rollback was done.
fn registry_signals(changes: &[mlops_core::registry::ProductionChange]) -> Vec<Evidence> {
    let mut out = Vec::new();
    if let Some(last) = changes.last() {
        out.push(Evidence {
            id: String::new(),
            signal: Signal::ReleaseVersioning,
            summary: format!(
                "{} promotion(s) to production in the model registry; the last: {}:{} by {}",
                changes.len(),
                last.model,
                last.number,
                last.actor
            ),
            source: Source::Registry {
                model: format!("{}:{}", last.model, last.number),
                at: last.at.clone(),
            },
            automated: true,
            run_by: Vec::new(),
        });
    }
    if let Some(rb) = changes.iter().rev().find(|c| c.is_rollback()) {
        out.push(Evidence {
            id: String::new(),
            signal: Signal::Rollback,
            summary: format!(
                "{}:{} was put back into production, replacing {}:{} ({})",
                rb.model,
                rb.number,
                rb.model,
                rb.previous.unwrap_or_default(),
                rb.reason
            ),
            source: Source::Registry {
                model: format!("{}:{}", rb.model, rb.number),
                at: rb.at.clone(),
            },
            automated: false,
            run_by: Vec::new(),
        });
    }
    out
}

/// The evidence kinds stages 5–6 record. Their stage crates do not exist
/// yet; each constant moves to its crate's `evidence` module when the
/// crate lands, as stages 1–4's did (stage 4's are in
/// [`mlops_release::evidence`]).
pub mod later {
    /// Stage 5: SLOs held over a window.
    pub const SLO: &str = "slo";
    /// Stage 5: no feature drifted past its threshold.
    pub const DRIFT: &str = "drift";
    /// Stage 6: a load test's result.
    pub const LOAD_TEST: &str = "load-test";
    /// Stage 6: the highest rate sustained within the SLO.
    pub const BREAKING_POINT: &str = "breaking-point";
    /// Stage 6: a fitted capacity model.
    pub const CAPACITY: &str = "capacity";
    /// Stage 6: autoscaler decisions.
    pub const AUTOSCALE: &str = "autoscale";
}

#[cfg(test)]
mod tests {
    use super::parse_ms;

    #[test]
    fn parses_ledger_timestamps() {
        assert_eq!(parse_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_ms("1970-01-02T00:00:01.5Z"), Some(86_401_500));
        assert_eq!(parse_ms("2000-03-01T00:00:00Z"), Some(951_868_800_000));
        assert_eq!(parse_ms("garbage"), None);
    }
}
