//! The assessment report: what [`crate::assess`] returns and every format
//! renders. Its JSON form is the documented interface (`docs/assess.md`,
//! schema from [`report_schema`]); bump [`SCHEMA_VERSION`] on any change that
//! removes or renames a field.

use mlops_core::Stage;
use schemars::JsonSchema;
use serde::Serialize;

use crate::evidence::{AutomatedCommand, Evidence, Source};

/// The version of the report's JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

/// A maturity assessment of one repository.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The mlops version that wrote it.
    pub mlops_version: String,
    /// When it was written (RFC 3339, UTC).
    pub generated_at: String,
    /// What was assessed.
    pub repository: Repository,
    /// The six-stage maturity level, 0–6: the number of stages that count,
    /// climbing from stage 1 (a stage counts only if every earlier one does).
    pub stage_level: u8,
    /// The six stages, in order.
    pub stages: Vec<StageAssessment>,
    /// Microsoft's MLOps maturity level, 0–4.
    pub microsoft_level: u8,
    /// How each Microsoft level was judged.
    pub microsoft: Vec<LevelAssessment>,
    /// The ML Test Score (Breck et al., 2017).
    pub ml_test_score: MlTestScore,
    /// What the ledger recorded, if there is one.
    pub runs: Option<RunHistory>,
    /// Problems and gaps, most severe first; each with its next step.
    pub findings: Vec<Finding>,
    /// Every piece of evidence, referred to by id from the rest.
    pub evidence: Vec<Evidence>,
    /// The commands found to run without a person (CI jobs, pipeline steps).
    pub automation: Vec<AutomatedCommand>,
    /// What the secret scan read.
    pub secret_scan: SecretScanSummary,
    /// What could not be read, and other caveats.
    pub notes: Vec<String>,
}

/// The assessed repository.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Repository {
    /// Its directory, as given.
    pub path: String,
    /// The project name from `mlops.toml`, else the directory's name.
    pub name: String,
    /// Files read by the static scan (ignored and vendored directories
    /// left out).
    pub files: usize,
    /// Whether it is in a git work tree.
    pub git: bool,
    /// The commit checked out.
    pub commit: Option<String>,
    /// The branch checked out.
    pub branch: Option<String>,
    /// Commits reachable from `HEAD`.
    pub commits: Option<usize>,
    /// Whether `mlops.toml` is present.
    pub manifest: bool,
    /// Whether a run ledger (`.mlops/ledger.db`) is present.
    pub ledger: bool,
}

/// How a stage was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StageStatus {
    /// The ledger holds a run in which the stage passed, and no later run in
    /// which it failed.
    Proven,
    /// The repository's files meet the stage's criteria; no run proves it.
    Configured,
    /// The latest run that decided the stage failed it.
    Failing,
    /// Neither files nor runs meet the criteria.
    Missing,
}

impl StageStatus {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Proven => "proven",
            StageStatus::Configured => "configured",
            StageStatus::Failing => "failing",
            StageStatus::Missing => "missing",
        }
    }
}

/// One rung of the six-stage ladder.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StageAssessment {
    /// The stage.
    #[schemars(with = "String")]
    pub stage: Stage,
    /// 1–6.
    pub level: u8,
    /// Its title.
    pub title: String,
    /// How it was judged.
    pub status: StageStatus,
    /// Whether its own criteria are met (proven or configured).
    pub met: bool,
    /// Whether it counts towards [`Report::stage_level`]: met, and every
    /// earlier stage counts.
    pub counts: bool,
    /// The criteria, each with its evidence.
    pub criteria: Vec<Criterion>,
    /// The last run in which the stage passed.
    pub last_passed: Option<RunRef>,
    /// The concrete next steps, when it is not met.
    pub next_steps: Vec<String>,
}

/// One criterion of a stage or level.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Criterion {
    /// What it asks for.
    pub description: String,
    /// Whether the evidence meets it.
    pub met: bool,
    /// Ids of the evidence that meets it (or, for a negative criterion,
    /// that breaks it).
    pub evidence: Vec<String>,
    /// What to do when it is not met.
    pub next_step: Option<String>,
}

/// A run of the ledger, referred to from a score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RunRef {
    /// Ledger id.
    pub run_id: i64,
    /// Its commit.
    pub commit: Option<String>,
    /// When it started (RFC 3339, UTC).
    pub at: String,
}

/// One of Microsoft's MLOps maturity levels.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LevelAssessment {
    /// 0–4.
    pub level: u8,
    /// Microsoft's name for it.
    pub name: String,
    /// Whether its criteria are met (level 0 always is).
    pub met: bool,
    /// Whether it is reached: met, and every lower level reached.
    pub reached: bool,
    /// The criteria.
    pub criteria: Vec<Criterion>,
}

/// The ML Test Score: 28 tests in four sections.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MlTestScore {
    /// The minimum of the four section sums.
    pub score: f64,
    /// Data, model, infrastructure, monitoring.
    pub sections: Vec<MlTestSection>,
}

/// One section of the ML Test Score.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MlTestSection {
    /// `data`, `model`, `infrastructure` or `monitoring`.
    pub name: String,
    /// Its title.
    pub title: String,
    /// The sum of its seven tests' scores, 0–7.
    pub sum: f64,
    /// Its tests.
    pub tests: Vec<MlTest>,
}

/// How an ML test was scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TestBasis {
    /// The pipeline or CI runs it: scores 1.
    Automated,
    /// There is evidence it is done by hand: scores 0.5.
    Manual,
    /// No evidence: scores 0.
    None,
}

/// One test of the ML Test Score.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MlTest {
    /// `data-1` … `monitoring-7`.
    pub id: String,
    /// The rubric's wording.
    pub title: String,
    /// 0, 0.5 or 1.
    pub score: f64,
    /// Why.
    pub basis: TestBasis,
    /// Ids of the evidence used.
    pub evidence: Vec<String>,
    /// What to do to raise it, unless it scores 1.
    pub next_step: Option<String>,
}

/// What the ledger recorded.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunHistory {
    /// Runs recorded.
    pub total: usize,
    /// Runs that passed.
    pub passed: usize,
    /// Runs that failed.
    pub failed: usize,
    /// Runs cancelled or interrupted.
    pub other: usize,
    /// The first run's start (RFC 3339, UTC).
    pub first_at: Option<String>,
    /// The last run's start.
    pub last_at: Option<String>,
    /// Runs per week between the first and the last (null with fewer than
    /// two runs).
    pub runs_per_week: Option<f64>,
    /// Distinct commits runs were made on.
    pub commits: usize,
    /// The runs, oldest first (at most the newest 200).
    pub runs: Vec<RunPoint>,
    /// Per stage: the last run that passed it.
    pub stages: Vec<StageRuns>,
    /// Model versions promoted to production.
    pub promotions: usize,
    /// Promotions to production of a version older than the one it
    /// replaced: rollbacks.
    pub rollbacks: usize,
    /// Release verdicts recorded by release steps (evidence kind
    /// `release`), newest first.
    pub release_verdicts: Vec<RecordedEvidence>,
    /// The newest SLO evaluation recorded (evidence kind `slo`).
    pub slo: Option<RecordedEvidence>,
    /// The newest breaking point recorded (evidence kind `breaking-point`).
    pub breaking_point: Option<RecordedEvidence>,
    /// The newest capacity model recorded (evidence kind `capacity`).
    pub capacity: Option<RecordedEvidence>,
}

/// One run on the history chart.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunPoint {
    /// Ledger id.
    pub run_id: i64,
    /// Start (RFC 3339, UTC).
    pub at: String,
    /// Its commit.
    pub commit: Option<String>,
    /// `passed`, `failed`, `cancelled` or `running`.
    pub status: String,
    /// The highest stage N such that stages 1..=N all passed in this run
    /// (stages it did not select count as they stood before it). This is
    /// what the runs' steps did, not the report's stage level: a stage
    /// whose steps pass without showing what the stage asks for counts
    /// here but not on the ladder.
    pub stage_level: u8,
}

/// The runs of one stage.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StageRuns {
    /// The stage.
    #[schemars(with = "String")]
    pub stage: Stage,
    /// Runs that passed it.
    pub passed: usize,
    /// Runs that failed it.
    pub failed: usize,
    /// The last run that passed it.
    pub last_passed: Option<RunRef>,
    /// The last run that decided it.
    pub last: Option<RunRef>,
    /// Whether that last run passed it.
    pub last_status: Option<String>,
}

/// A step's recorded evidence document, as found in the ledger.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RecordedEvidence {
    /// Where.
    pub source: Source,
    /// The step's JSON document, as recorded.
    pub body: serde_json::Value,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Fix now: a committed secret, a failing stage.
    Critical,
    /// A gap that holds the maturity level down.
    Warning,
    /// Worth knowing.
    Info,
}

/// A problem or gap.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// A stable identifier of the kind of finding (`committed-secret`,
    /// `stage-missing`, …).
    pub code: String,
    /// One line.
    pub title: String,
    /// Where, when it is one place.
    pub location: Option<Source>,
    /// Evidence ids behind it.
    pub evidence: Vec<String>,
    /// The concrete next step.
    pub next_step: String,
}

/// What the secret scan read.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct SecretScanSummary {
    /// Whether it ran.
    pub ran: bool,
    /// Files of the tree read.
    pub files: usize,
    /// Whether the git history was read.
    pub history: bool,
    /// Commits read.
    pub commits: usize,
    /// Findings (also listed in [`Report::findings`]).
    pub findings: usize,
    /// Findings an allowlist accepted.
    pub suppressed: usize,
}

/// The JSON Schema of [`Report`], as documented in `docs/assess.md`.
pub fn report_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Report))
        .expect("a JSON Schema is always serialisable")
}
