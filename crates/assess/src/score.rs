//! Scores from evidence: the six-stage ladder with its gating rule,
//! Microsoft's MLOps maturity levels and the ML Test Score. Every score is
//! a pure function of the evidence (and, for the ladder, of what the ledger
//! decided), and names the evidence it used; `docs/assess.md` documents the
//! same mapping for people.

use mlops_core::Stage;

use crate::evidence::{Evidence, Signal};
use crate::report::{
    Criterion, Finding, LevelAssessment, MlTest, MlTestScore, MlTestSection, Severity,
    StageAssessment, StageStatus, TestBasis,
};
use crate::runs::RunEvidence;

/// The evidence, looked up by signal.
pub struct Facts<'a> {
    evidence: &'a [Evidence],
}

impl<'a> Facts<'a> {
    /// Facts over `evidence` (ids already given).
    pub fn new(evidence: &'a [Evidence]) -> Facts<'a> {
        Facts { evidence }
    }

    fn of(&self, signal: Signal) -> impl Iterator<Item = &'a Evidence> + 'a {
        self.evidence.iter().filter(move |e| e.signal == signal)
    }

    /// Ids of all evidence of `signal`.
    pub fn ids(&self, signal: Signal) -> Vec<String> {
        self.of(signal).map(|e| e.id.clone()).collect()
    }

    /// Ids of the automated evidence of `signal`.
    pub fn automated_ids(&self, signal: Signal) -> Vec<String> {
        self.of(signal)
            .filter(|e| e.automated)
            .map(|e| e.id.clone())
            .collect()
    }

    /// Whether there is any evidence of `signal`.
    pub fn any(&self, signal: Signal) -> bool {
        self.of(signal).next().is_some()
    }

    /// Whether there is automated evidence of `signal`.
    pub fn automated(&self, signal: Signal) -> bool {
        self.of(signal).any(|e| e.automated)
    }

    /// The first tool word of the first non-automated evidence of
    /// `signal` (e.g. `pytest`), to name the command in a next step.
    fn runner(&self, signal: Signal) -> Option<&'a str> {
        self.of(signal)
            .filter(|e| !e.automated)
            .find_map(|e| e.run_by.first())
            .map(String::as_str)
    }

    /// Paths of the evidence of `signal`, for next steps.
    fn paths(&self, signal: Signal) -> Vec<String> {
        let mut paths: Vec<String> = self
            .of(signal)
            .filter_map(|e| match &e.source {
                crate::Source::File { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        paths.dedup();
        paths
    }
}

fn criterion(
    description: &str,
    met: bool,
    evidence: Vec<String>,
    next_step: impl Into<String>,
) -> Criterion {
    Criterion {
        description: description.to_owned(),
        met,
        evidence,
        next_step: (!met).then(|| next_step.into()),
    }
}

/// Met when some automated evidence of any of `signals` exists.
fn automated_criterion(
    facts: &Facts<'_>,
    description: &str,
    signals: &[Signal],
    next_step: impl Into<String>,
) -> Criterion {
    let ids: Vec<String> = signals
        .iter()
        .flat_map(|&s| facts.automated_ids(s))
        .collect();
    criterion(description, !ids.is_empty(), ids, next_step)
}

/// Met when any evidence of any of `signals` exists.
fn present_criterion(
    facts: &Facts<'_>,
    description: &str,
    signals: &[Signal],
    next_step: impl Into<String>,
) -> Criterion {
    let ids: Vec<String> = signals.iter().flat_map(|&s| facts.ids(s)).collect();
    criterion(description, !ids.is_empty(), ids, next_step)
}

/// The criteria of one stage, from the evidence.
pub fn stage_criteria(stage: Stage, facts: &Facts<'_>) -> Vec<Criterion> {
    match stage {
        Stage::Iac => {
            let unpinned = facts.ids(Signal::UnpinnedRequirements);
            let pinned = if unpinned.is_empty() {
                present_criterion(
                    facts,
                    "The environment is pinned: a lockfile, or requirements pinned with == and --hash",
                    &[Signal::LockedEnvironment],
                    "commit a lockfile (Cargo.lock, uv.lock, poetry.lock) or pin requirements.txt \
                     with hashes (`pip-compile --generate-hashes`), and add an iac step of kind \
                     `environment`",
                )
            } else {
                let files = facts.paths(Signal::UnpinnedRequirements).join(", ");
                criterion(
                    "The environment is pinned: a lockfile, or requirements pinned with == and --hash",
                    false,
                    unpinned,
                    format!("pin {files} with == and --hash (`pip-compile --generate-hashes`)"),
                )
            };
            vec![
                pinned,
                present_criterion(
                    facts,
                    "The infrastructure is code: a Dockerfile, Kubernetes or Terraform files, \
                     or [infra] in mlops.toml",
                    &[Signal::Container, Signal::InfrastructureCode],
                    "declare the service in mlops.toml's [infra] table (docs/infra.md) or add a \
                     Dockerfile",
                ),
            ]
        }
        Stage::Ci => {
            let next = match facts.runner(Signal::UnitTests) {
                Some(tool) => format!("add a ci step that runs `{tool}` (or a CI job that does)"),
                None => "write tests (pytest, cargo test, testthat) and add a ci step of kind \
                         `tests` that runs them"
                    .to_owned(),
            };
            vec![automated_criterion(
                facts,
                "Tests run automatically: a CI job or a pipeline step runs them",
                &[Signal::UnitTests],
                next,
            )]
        }
        Stage::Cd => vec![automated_criterion(
            facts,
            "Deployment is automated: a deploy step, a CI deploy job or deployment manifests",
            &[Signal::Deployment],
            "add a cd step of kind `deploy` that deploys the packaged model to staging \
             (docs/infra.md)",
        )],
        Stage::Release => vec![
            automated_criterion(
                facts,
                "Releases are progressive: canary, shadow, A/B or blue-green",
                &[Signal::ProgressiveDelivery],
                "release through a canary or shadow step in the release stage (or Argo \
                 Rollouts / Flagger) instead of replacing the model at once",
            ),
            {
                let mut ids = facts.ids(Signal::Rollback);
                ids.extend(facts.automated_ids(Signal::ModelRegistry));
                criterion(
                    "A release can be rolled back: earlier versions are kept and can be put \
                     back",
                    !ids.is_empty(),
                    ids,
                    "keep every released model version in a registry (a cd step of kind \
                     `package`) so `mlops model stage NAME:N production --reason …` can put \
                     one back",
                )
            },
        ],
        Stage::Apm => vec![
            {
                let mut ids = facts.ids(Signal::Metrics);
                ids.extend(facts.automated_ids(Signal::MonitoringConfig));
                criterion(
                    "The service exports metrics, or monitoring collects them",
                    !ids.is_empty(),
                    ids,
                    "export request counts and latencies on /metrics (Prometheus format) and \
                     scrape them",
                )
            },
            present_criterion(
                facts,
                "Alerts or SLOs are defined",
                &[Signal::Alerting],
                "define SLOs (latency, error rate) and alert rules on them",
            ),
        ],
        Stage::Loadtest => vec![
            automated_criterion(
                facts,
                "Load tests run automatically, bounded in time and count",
                &[Signal::LoadTest],
                "add a loadtest step that drives the staging service at a fixed rate and \
                 records its latency percentiles",
            ),
            present_criterion(
                facts,
                "Autoscaling is configured",
                &[Signal::Autoscaling],
                "scale replicas on load (a HorizontalPodAutoscaler, KEDA, or an mlops autoscale \
                 step)",
            ),
        ],
    }
}

/// The six-stage ladder: each stage's criteria, what the ledger decided,
/// and the gating rule (a stage counts only if every earlier one counts).
pub fn stages(facts: &Facts<'_>, runs: Option<&RunEvidence>) -> Vec<StageAssessment> {
    let mut out = Vec::new();
    let mut all_earlier_count = true;
    for stage in Stage::ALL {
        let criteria = stage_criteria(stage, facts);
        let criteria_met = criteria.iter().all(|c| c.met);
        let recorded = runs.and_then(|r| r.stage(stage));
        let last_failed = recorded.is_some_and(|r| r.last_status.as_deref() == Some("failed"));
        let last_passed = recorded.is_some_and(|r| r.last_status.as_deref() == Some("passed"));
        let status = if last_failed {
            StageStatus::Failing
        } else if !criteria_met {
            StageStatus::Missing
        } else if last_passed {
            StageStatus::Proven
        } else {
            StageStatus::Configured
        };
        let met = matches!(status, StageStatus::Proven | StageStatus::Configured);
        let counts = met && all_earlier_count;
        all_earlier_count = counts;
        let mut next_steps: Vec<String> = criteria
            .iter()
            .filter_map(|c| c.next_step.clone())
            .collect();
        if status == StageStatus::Failing
            && let Some(last) = recorded.and_then(|r| r.last.as_ref())
        {
            next_steps.insert(
                0,
                format!(
                    "make the {stage} stage pass again: it failed in run {} (`mlops pipeline \
                     status --run {}` shows why)",
                    last.run_id, last.run_id
                ),
            );
        }
        out.push(StageAssessment {
            stage,
            level: stage.level(),
            title: stage.title().to_owned(),
            status,
            met,
            counts,
            criteria,
            last_passed: recorded.and_then(|r| r.last_passed.clone()),
            next_steps,
        });
    }
    out
}

/// The stage level: how many stages count.
pub fn stage_level(stages: &[StageAssessment]) -> u8 {
    stages.iter().take_while(|s| s.counts).count() as u8
}

/// Microsoft's MLOps maturity levels, 0–4, each reached only if every lower
/// one is.
pub fn microsoft(facts: &Facts<'_>) -> Vec<LevelAssessment> {
    let pinned = {
        let ids = facts.ids(Signal::LockedEnvironment);
        let unpinned = facts.any(Signal::UnpinnedRequirements);
        criterion(
            "The training environment is managed: pinned dependencies",
            !ids.is_empty() && !unpinned,
            if unpinned {
                facts.ids(Signal::UnpinnedRequirements)
            } else {
                ids
            },
            "pin every dependency (a lockfile, or requirements with --hash)",
        )
    };
    let levels: Vec<(u8, &str, Vec<Criterion>)> = vec![
        (0, "No MLOps", Vec::new()),
        (
            1,
            "DevOps but no MLOps",
            vec![automated_criterion(
                facts,
                "Builds and tests of the code run automatically",
                &[Signal::UnitTests],
                "run the tests on every change, in CI or a ci pipeline step",
            )],
        ),
        (
            2,
            "Automated training",
            vec![
                automated_criterion(
                    facts,
                    "Training runs in a pipeline, not by hand",
                    &[Signal::TrainingPipeline, Signal::TrainingCode],
                    "run the training script from a pipeline step (mlops.toml) or CI job",
                ),
                pinned,
                present_criterion(
                    facts,
                    "Models and experiments are tracked: a registry or experiment tracking",
                    &[Signal::ModelRegistry, Signal::ExperimentTracking],
                    "register every trained model with its metrics and data hash (a cd step of \
                     kind `package`, or MLflow)",
                ),
            ],
        ),
        (
            3,
            "Automated model deployment",
            vec![
                automated_criterion(
                    facts,
                    "Deployment is automated",
                    &[Signal::Deployment],
                    "deploy from the pipeline (a cd step of kind `deploy`)",
                ),
                automated_criterion(
                    facts,
                    "Model quality is validated before release",
                    &[Signal::ModelValidation],
                    "add a ci step of kind `model-gate` with quality thresholds",
                ),
                automated_criterion(
                    facts,
                    "Deployments trace back to the model version, code and data",
                    &[Signal::ModelRegistry],
                    "package models with their lineage (a cd step of kind `package`)",
                ),
                automated_criterion(
                    facts,
                    "New models are compared with the current one in production (A/B, canary, \
                     shadow)",
                    &[Signal::ProgressiveDelivery],
                    "release through a canary or shadow step that compares the new model with \
                     production",
                ),
            ],
        ),
        (
            4,
            "Full MLOps automated operations",
            vec![
                {
                    let mut ids = facts.ids(Signal::Metrics);
                    ids.extend(facts.automated_ids(Signal::MonitoringConfig));
                    criterion(
                        "The deployed model is monitored with centralised metrics",
                        !ids.is_empty(),
                        ids,
                        "export and scrape the service's metrics",
                    )
                },
                present_criterion(
                    facts,
                    "Drift and quality in production are detected",
                    &[Signal::DriftMonitoring],
                    "monitor input and prediction drift (PSI or KS against the training data)",
                ),
                automated_criterion(
                    facts,
                    "Retraining is triggered automatically",
                    &[Signal::ScheduledRetraining],
                    "retrain on a schedule or on a drift alert (a scheduled CI job that runs \
                     the pipeline)",
                ),
            ],
        ),
    ];
    let mut reached_so_far = true;
    levels
        .into_iter()
        .map(|(level, name, criteria)| {
            let met = criteria.iter().all(|c| c.met);
            let reached = met && reached_so_far;
            reached_so_far = reached;
            LevelAssessment {
                level,
                name: name.to_owned(),
                met,
                reached,
                criteria,
            }
        })
        .collect()
}

/// The Microsoft level: the highest reached.
pub fn microsoft_level(levels: &[LevelAssessment]) -> u8 {
    levels
        .iter()
        .filter(|l| l.reached)
        .map(|l| l.level)
        .max()
        .unwrap_or(0)
}

/// One test of the ML Test Score rubric and the evidence that scores it.
struct Rubric {
    id: &'static str,
    title: &'static str,
    /// Automated evidence of these scores 1; any evidence of these 0.5.
    signals: &'static [Signal],
    /// Evidence of these scores 0.5 at most.
    manual: &'static [Signal],
    /// The most the evidence we can see can justify.
    cap: f64,
    next_step: &'static str,
}

const SECTIONS: [(&str, &str); 4] = [
    ("data", "Tests for features and data"),
    ("model", "Tests for model development"),
    ("infrastructure", "Tests for ML infrastructure"),
    ("monitoring", "Monitoring tests for ML"),
];

/// The 28 tests of Breck et al., "The ML Test Score: A Rubric for ML
/// Production Readiness and Technical Debt Reduction" (2017), seven per
/// section, in the paper's order.
const RUBRIC: [Rubric; 28] = {
    use Signal::*;
    const fn t(
        id: &'static str,
        title: &'static str,
        signals: &'static [Signal],
        manual: &'static [Signal],
        cap: f64,
        next_step: &'static str,
    ) -> Rubric {
        Rubric {
            id,
            title,
            signals,
            manual,
            cap,
            next_step,
        }
    }
    [
        t(
            "data-1",
            "Feature expectations are captured in a schema",
            &[DataTests],
            &[],
            1.0,
            "declare the data's schema and validate every dataset against it in a ci step of kind `data-validation`",
        ),
        t(
            "data-2",
            "All features are beneficial",
            &[FeatureImportance],
            &[],
            1.0,
            "measure each feature's contribution (permutation importance or ablation) in the training pipeline",
        ),
        t(
            "data-3",
            "No feature's cost is too much",
            &[FeatureImportance],
            &[],
            0.5,
            "record what each feature costs (latency, memory, upstream dependencies) beside its importance",
        ),
        t(
            "data-4",
            "Features adhere to meta-level requirements",
            &[DataPolicy],
            &[],
            1.0,
            "check the features against the data policy (no PII, only approved sources) in the pipeline",
        ),
        t(
            "data-5",
            "The data pipeline has appropriate privacy controls",
            &[SecretScanning, DataPolicy],
            &[],
            1.0,
            "scan for committed credentials on every change (a ci step of kind `secret-scan`) and keep personal data out of the repository",
        ),
        t(
            "data-6",
            "New features can be added quickly",
            &[TrainingPipeline],
            &[TrainingCode],
            1.0,
            "make training one pipeline step, so a new feature is a code change and a pipeline run",
        ),
        t(
            "data-7",
            "All input feature code is tested",
            &[UnitTests],
            &[],
            1.0,
            "unit-test the feature code and run the tests automatically",
        ),
        t(
            "model-1",
            "Model specs are reviewed and submitted",
            &[CodeReview],
            &[TrainingCode, Notebook],
            1.0,
            "keep the training code in version control and review changes (CODEOWNERS, CI on pull requests)",
        ),
        t(
            "model-2",
            "Offline and online metrics correlate",
            &[ProgressiveDelivery],
            &[DriftMonitoring],
            1.0,
            "compare the new model's online metrics with its offline ones in a shadow or canary release",
        ),
        t(
            "model-3",
            "All hyperparameters have been tuned",
            &[HyperparameterTuning],
            &[],
            1.0,
            "search the hyperparameters (GridSearchCV, Optuna) in the training pipeline",
        ),
        t(
            "model-4",
            "The impact of model staleness is known",
            &[ScheduledRetraining],
            &[],
            1.0,
            "retrain on a schedule and measure how quality decays with the model's age",
        ),
        t(
            "model-5",
            "A simpler model is not better",
            &[BaselineComparison],
            &[],
            1.0,
            "compare the model with a simple baseline (a dummy or linear model) or with production in the model gate",
        ),
        t(
            "model-6",
            "Model quality is sufficient on all important data slices",
            &[SliceEvaluation],
            &[],
            1.0,
            "measure quality per data slice and gate on the worst slice",
        ),
        t(
            "model-7",
            "The model has been tested for considerations of inclusion",
            &[FairnessTests],
            &[],
            1.0,
            "test fairness across groups (fairlearn MetricFrame, demographic parity)",
        ),
        t(
            "infrastructure-1",
            "Training is reproducible",
            &[Reproducibility],
            &[],
            1.0,
            "train twice from the same inputs and compare (a ci step of kind `reproducibility`)",
        ),
        t(
            "infrastructure-2",
            "Model specs are unit tested",
            &[UnitTests, ModelValidation],
            &[],
            1.0,
            "unit-test the model code (shapes, training on a tiny dataset) and run the tests automatically",
        ),
        t(
            "infrastructure-3",
            "The ML pipeline is integration tested",
            &[IntegrationTests, SmokeTests],
            &[],
            1.0,
            "run the whole pipeline end to end on every change and smoke-test the deployed service",
        ),
        t(
            "infrastructure-4",
            "Model quality is validated before attempting to serve it",
            &[ModelValidation],
            &[],
            1.0,
            "add a ci step of kind `model-gate` with thresholds the model must meet before packaging",
        ),
        t(
            "infrastructure-5",
            "The model allows debugging by observing the step-by-step computation of training or inference on a single example",
            &[SmokeTests],
            &[Notebook],
            1.0,
            "keep single-example requests with expected outputs (a cd step of kind `smoke`) to replay and debug",
        ),
        t(
            "infrastructure-6",
            "Models are canaried before serving",
            &[ProgressiveDelivery],
            &[],
            1.0,
            "release new models to a small share of traffic first (a canary step)",
        ),
        t(
            "infrastructure-7",
            "Serving models can be rolled back",
            &[Rollback, ModelRegistry],
            &[],
            1.0,
            "keep released versions in the registry and practise putting one back",
        ),
        t(
            "monitoring-1",
            "Dependency changes result in notification",
            &[DependencyUpdates],
            &[],
            1.0,
            "let Dependabot or Renovate propose dependency updates",
        ),
        t(
            "monitoring-2",
            "Data invariants hold in training and serving inputs",
            &[DriftMonitoring],
            &[DataTests],
            1.0,
            "validate serving inputs against the training schema and alert on violations",
        ),
        t(
            "monitoring-3",
            "Training and serving features compute the same values",
            &[DriftMonitoring],
            &[],
            1.0,
            "compare the distributions of served features with the training data (PSI, KS)",
        ),
        t(
            "monitoring-4",
            "Models are not too stale",
            &[ScheduledRetraining],
            &[],
            1.0,
            "alert on the production model's age and retrain on a schedule",
        ),
        t(
            "monitoring-5",
            "The model is numerically stable",
            &[NumericalChecks],
            &[],
            1.0,
            "assert predictions and training losses are finite (no NaN or infinity) in tests and smoke checks",
        ),
        t(
            "monitoring-6",
            "The model has not experienced a regression in training speed, serving latency, throughput, or RAM usage",
            &[LoadTest],
            &[Metrics],
            1.0,
            "load-test every release and compare latency and throughput with the last one",
        ),
        t(
            "monitoring-7",
            "The model has not experienced a regression in prediction quality on served data",
            &[DriftMonitoring],
            &[ModelValidation],
            1.0,
            "monitor prediction quality on served data (delayed labels or prediction drift)",
        ),
    ]
};

/// The ML Test Score: each test 1 if automated evidence shows the pipeline
/// runs it, 0.5 if evidence shows it is done by hand, else 0; the score is
/// the minimum of the four section sums.
pub fn ml_test_score(facts: &Facts<'_>) -> MlTestScore {
    let secrets = facts.ids(Signal::CommittedSecret);
    let sections: Vec<MlTestSection> = SECTIONS
        .iter()
        .map(|&(name, title)| {
            let tests: Vec<MlTest> = RUBRIC
                .iter()
                .filter(|r| r.id.split_once('-').is_some_and(|(s, _)| s == name))
                .map(|r| score_test(r, facts, &secrets))
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

fn score_test(r: &Rubric, facts: &Facts<'_>, secrets: &[String]) -> MlTest {
    // A committed credential breaks the privacy test, whatever else is there.
    if r.id == "data-5" && !secrets.is_empty() {
        return MlTest {
            id: r.id.to_owned(),
            title: r.title.to_owned(),
            score: 0.0,
            basis: TestBasis::None,
            evidence: secrets.to_vec(),
            next_step: Some(format!(
                "remove the committed credential(s) and rotate them; then {}",
                r.next_step
            )),
        };
    }
    let automated: Vec<String> = r
        .signals
        .iter()
        .flat_map(|&s| facts.automated_ids(s))
        .collect();
    let any: Vec<String> = r
        .signals
        .iter()
        .chain(r.manual)
        .flat_map(|&s| facts.ids(s))
        .collect();
    let (basis, evidence) = if !automated.is_empty() && r.cap >= 1.0 {
        (TestBasis::Automated, automated)
    } else if !any.is_empty() {
        (TestBasis::Manual, any)
    } else {
        (TestBasis::None, Vec::new())
    };
    let score = match basis {
        TestBasis::Automated => 1.0,
        TestBasis::Manual => 0.5,
        TestBasis::None => 0.0,
    };
    MlTest {
        id: r.id.to_owned(),
        title: r.title.to_owned(),
        score,
        basis,
        evidence,
        next_step: (score < 1.0).then(|| r.next_step.to_owned()),
    }
}

/// Problems and gaps, most severe first.
pub fn findings(
    facts: &Facts<'_>,
    stages: &[StageAssessment],
    score: &MlTestScore,
    runs: Option<&RunEvidence>,
    manifest: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in facts.of(Signal::CommittedSecret) {
        out.push(Finding {
            severity: Severity::Critical,
            code: "committed-secret".to_owned(),
            title: e.summary.clone(),
            location: Some(e.source.clone()),
            evidence: vec![e.id.clone()],
            next_step: "remove it, rotate the credential (it is public to everyone with the \
                        repository, history included), and scan every change with a ci step of \
                        kind `secret-scan`"
                .to_owned(),
        });
    }
    for s in stages {
        if s.status == StageStatus::Failing {
            out.push(Finding {
                severity: Severity::Critical,
                code: "stage-failing".to_owned(),
                title: format!("Stage {} ({}) failed in its latest run", s.level, s.title),
                location: None,
                evidence: Vec::new(),
                next_step: s.next_steps.first().cloned().unwrap_or_default(),
            });
        }
    }
    // The next rung: the first stage that does not count.
    if let Some(s) = stages
        .iter()
        .find(|s| !s.counts && s.status != StageStatus::Failing)
    {
        let blocker = !s.met;
        if blocker {
            out.push(Finding {
                severity: Severity::Warning,
                code: "stage-missing".to_owned(),
                title: format!(
                    "Stage {} ({}) is not met: the maturity level stops at {}",
                    s.level,
                    s.title,
                    stage_level(stages)
                ),
                location: None,
                evidence: s
                    .criteria
                    .iter()
                    .filter(|c| !c.met)
                    .flat_map(|c| c.evidence.iter().cloned())
                    .collect(),
                next_step: s.next_steps.join("; "),
            });
        }
    }
    for s in stages.iter().filter(|s| s.met && !s.counts) {
        out.push(Finding {
            severity: Severity::Info,
            code: "stage-gated".to_owned(),
            title: format!(
                "Stage {} ({}) is {} but does not count until every earlier stage does",
                s.level,
                s.title,
                s.status.as_str()
            ),
            location: None,
            evidence: Vec::new(),
            next_step: "climb the earlier stages first".to_owned(),
        });
    }
    if let Some(runs) = runs {
        for s in stages.iter().filter(|s| s.status == StageStatus::Missing) {
            if let Some(passed) = runs.stage(s.stage).and_then(|r| r.last_passed.as_ref()) {
                out.push(Finding {
                    severity: Severity::Info,
                    code: "stage-passed-without-evidence".to_owned(),
                    title: format!(
                        "The {} stage's steps passed in run {}, but nothing shows: {}",
                        s.stage,
                        passed.run_id,
                        s.criteria
                            .iter()
                            .filter(|c| !c.met)
                            .map(|c| lower_first(&c.description))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    location: None,
                    evidence: Vec::new(),
                    next_step: s.next_steps.join("; "),
                });
            }
        }
    } else if manifest {
        out.push(Finding {
            severity: Severity::Info,
            code: "no-runs".to_owned(),
            title: "mlops.toml is here but no run is recorded: nothing is proven yet".to_owned(),
            location: Some(crate::Source::file("mlops.toml", None)),
            evidence: Vec::new(),
            next_step: "run `mlops pipeline run` to record evidence".to_owned(),
        });
    }
    if !facts.any(Signal::SecretScanning) {
        out.push(Finding {
            severity: Severity::Info,
            code: "no-secret-scanning".to_owned(),
            title: "Nothing scans for committed credentials on every change".to_owned(),
            location: None,
            evidence: Vec::new(),
            next_step: "add a ci step of kind `secret-scan` (or gitleaks in CI)".to_owned(),
        });
    }
    if let Some(weakest) = score.sections.iter().min_by(|a, b| a.sum.total_cmp(&b.sum))
        && weakest.sum < 7.0
    {
        let steps: Vec<&str> = weakest
            .tests
            .iter()
            .filter(|t| t.score < 1.0)
            .take(3)
            .filter_map(|t| t.next_step.as_deref())
            .collect();
        out.push(Finding {
            severity: Severity::Info,
            code: "ml-test-score".to_owned(),
            title: format!(
                "The ML Test Score ({}) is held down by the {} section",
                fmt_score(score.score),
                weakest.name
            ),
            location: None,
            evidence: Vec::new(),
            next_step: steps.join("; "),
        });
    }
    out.sort_by_key(|f| f.severity);
    out
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

/// 3, 3.5: a score without trailing zeros.
pub fn fmt_score(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, signal: Signal, automated: bool) -> Evidence {
        let mut e = Evidence::file(signal, "f", Some(1), "x");
        e.id = id.to_owned();
        e.automated = automated;
        e
    }

    #[test]
    fn the_rubric_has_seven_tests_per_section() {
        for (name, _) in SECTIONS {
            let n = RUBRIC
                .iter()
                .filter(|r| r.id.starts_with(&format!("{name}-")))
                .count();
            assert_eq!(n, 7, "{name}");
        }
    }

    #[test]
    fn nothing_scores_zero_everywhere() {
        let facts = Facts::new(&[]);
        let s = stages(&facts, None);
        assert_eq!(stage_level(&s), 0);
        assert!(s.iter().all(|s| s.status == StageStatus::Missing));
        assert_eq!(microsoft_level(&microsoft(&facts)), 0);
        let score = ml_test_score(&facts);
        assert_eq!(score.score, 0.0);
        assert!(score.sections.iter().all(|s| s.sum == 0.0));
    }

    #[test]
    fn gating_stops_at_the_first_missing_stage() {
        // Stages 1, 2 and 4 met; 3 missing: the level is 2 and stage 4
        // does not count.
        let evidence = vec![
            ev("E1", Signal::LockedEnvironment, true),
            ev("E2", Signal::Container, true),
            ev("E3", Signal::UnitTests, true),
            ev("E4", Signal::ProgressiveDelivery, true),
            ev("E5", Signal::Rollback, false),
        ];
        let facts = Facts::new(&evidence);
        let s = stages(&facts, None);
        assert_eq!(stage_level(&s), 2);
        assert!(s[3].met && !s[3].counts);
        assert_eq!(s[0].criteria[0].evidence, vec!["E1"]);
        let f = findings(&facts, &s, &ml_test_score(&facts), None, false);
        assert!(
            f.iter()
                .any(|f| f.code == "stage-missing" && f.title.contains("Stage 3"))
        );
        assert!(
            f.iter()
                .any(|f| f.code == "stage-gated" && f.title.contains("Stage 4"))
        );
    }

    #[test]
    fn unpinned_requirements_break_stage_one() {
        let evidence = vec![
            ev("E1", Signal::LockedEnvironment, true),
            ev("E2", Signal::UnpinnedRequirements, false),
            ev("E3", Signal::Container, true),
        ];
        let facts = Facts::new(&evidence);
        let s = stages(&facts, None);
        assert_eq!(s[0].status, StageStatus::Missing);
        assert_eq!(s[0].criteria[0].evidence, vec!["E2"]);
        assert!(s[0].next_steps[0].contains("pin f with == and --hash"));
    }

    #[test]
    fn manual_evidence_scores_half_and_automated_one() {
        let evidence = vec![
            ev("E1", Signal::UnitTests, false),
            ev("E2", Signal::DataTests, true),
            ev("E3", Signal::FeatureImportance, true),
        ];
        let facts = Facts::new(&evidence);
        let score = ml_test_score(&facts);
        let data = &score.sections[0];
        let by_id = |id: &str| data.tests.iter().find(|t| t.id == id).unwrap();
        assert_eq!(by_id("data-1").score, 1.0);
        assert_eq!(by_id("data-7").score, 0.5);
        assert_eq!(by_id("data-7").basis, TestBasis::Manual);
        // Capped: importance alone cannot show a feature's cost.
        assert_eq!(by_id("data-3").score, 0.5);
        assert_eq!(data.sum, 1.0 + 1.0 + 0.5 + 0.5);
        // The score is the weakest section's sum.
        assert_eq!(score.score, 0.0);
    }

    #[test]
    fn a_committed_secret_zeroes_the_privacy_test() {
        let evidence = vec![
            ev("E1", Signal::SecretScanning, true),
            ev("E2", Signal::CommittedSecret, false),
        ];
        let facts = Facts::new(&evidence);
        let score = ml_test_score(&facts);
        let t = &score.sections[0].tests[4];
        assert_eq!((t.id.as_str(), t.score), ("data-5", 0.0));
        assert_eq!(t.evidence, vec!["E2"]);
        let f = findings(&facts, &stages(&facts, None), &score, None, false);
        assert_eq!(f[0].code, "committed-secret");
        assert_eq!(f[0].severity, Severity::Critical);
    }

    #[test]
    fn microsoft_levels_are_gated() {
        // Level 3's criteria without level 2's: level 1 only.
        let evidence = vec![
            ev("E1", Signal::UnitTests, true),
            ev("E2", Signal::Deployment, true),
            ev("E3", Signal::ModelValidation, true),
            ev("E4", Signal::ModelRegistry, true),
            ev("E5", Signal::ProgressiveDelivery, true),
        ];
        let facts = Facts::new(&evidence);
        let levels = microsoft(&facts);
        assert!(levels[3].met && !levels[3].reached);
        assert_eq!(microsoft_level(&levels), 1);
    }

    #[test]
    fn scores_print_without_noise() {
        assert_eq!(fmt_score(3.0), "3");
        assert_eq!(fmt_score(3.5), "3.5");
        assert_eq!(fmt_score(0.0), "0");
    }
}
