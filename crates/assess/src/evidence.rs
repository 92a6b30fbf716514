//! Evidence: one observed fact about a repository, with where it was seen.
//!
//! Every score of the report is computed from [`Evidence`] only, and points
//! back at the evidence it used. Evidence comes from two places: the files of
//! the repository ([`crate::scan`]) and the runs the ledger recorded
//! ([`crate::runs`]).

use schemars::JsonSchema;
use serde::Serialize;

/// What a piece of evidence shows. The scores are defined over signals; the
/// mapping is documented in `docs/assess.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    // -- environments and infrastructure (stage 1)
    /// The environment is pinned: a lockfile (Cargo.lock, poetry.lock,
    /// uv.lock, Pipfile.lock, conda-lock, renv.lock) or requirements pinned
    /// with `==` and `--hash`.
    LockedEnvironment,
    /// A requirements file with lines that are not pinned or not hashed.
    /// Negative: it keeps stage 1 from counting.
    UnpinnedRequirements,
    /// A container definition: Dockerfile, Containerfile, compose file.
    Container,
    /// Infrastructure as code: Terraform, Kubernetes manifests, Helm charts,
    /// Pulumi, `[infra]` in `mlops.toml`.
    InfrastructureCode,

    // -- integration and testing (stage 2)
    /// A CI system's configuration (GitHub Actions, GitLab CI, …).
    CiConfig,
    /// Unit tests (pytest, cargo, testthat, unittest).
    UnitTests,
    /// Data validation: schemas, pandera, Great Expectations,
    /// `data-validation` steps.
    DataTests,
    /// Model-quality validation before serving: thresholds, `model-gate`
    /// steps.
    ModelValidation,
    /// The pipeline is tested end to end (integration tests, the pipeline
    /// run in CI).
    IntegrationTests,
    /// Training is reproducible: a `reproducibility` step, `dvc.lock`.
    Reproducibility,
    /// Secrets are scanned for automatically (`secret-scan`, gitleaks,
    /// trufflehog, detect-secrets).
    SecretScanning,
    /// A credential committed to the repository or its history. Negative.
    CommittedSecret,
    /// Dependency updates are proposed automatically (Dependabot, Renovate).
    DependencyUpdates,
    /// Changes are reviewed: CODEOWNERS, CI on pull or merge requests.
    CodeReview,

    // -- model development
    /// Training code (a script or module that fits a model).
    TrainingCode,
    /// Jupyter notebooks.
    Notebook,
    /// A training pipeline: DVC stages, a pipeline step that trains.
    TrainingPipeline,
    /// Hyperparameter search (Optuna, GridSearchCV, Ray Tune, hyperopt).
    HyperparameterTuning,
    /// Feature importance or ablation (permutation importance, SHAP).
    FeatureImportance,
    /// Data-policy checks: PII detection, allowed-feature lists.
    DataPolicy,
    /// The model is compared with a simpler baseline or with the model in
    /// production.
    BaselineComparison,
    /// Quality is measured per data slice.
    SliceEvaluation,
    /// Fairness or inclusion tests (fairlearn, AIF360).
    FairnessTests,
    /// Experiments are tracked (MLflow, Weights & Biases, DVC params).
    ExperimentTracking,
    /// Retraining on a schedule (a CI cron that trains).
    ScheduledRetraining,
    /// Numerical stability checks (NaN and infinity assertions).
    NumericalChecks,

    // -- delivery (stage 3)
    /// The model is packaged as a versioned artifact.
    Packaging,
    /// A model registry with versions (mlops registry, MLflow registry).
    ModelRegistry,
    /// Deployment is automated (a `deploy` step, a CI deploy job,
    /// Kubernetes Deployments, Helm releases).
    Deployment,
    /// Smoke tests against the deployed service, or single-example
    /// predictions to debug with.
    SmokeTests,

    // -- release management (stage 4)
    /// Canary, shadow, A/B or blue-green releases (Argo Rollouts, Flagger,
    /// mlops release steps).
    ProgressiveDelivery,
    /// Releases can be, or were, rolled back.
    Rollback,
    /// Releases are versioned: tags, changelog, release notes.
    ReleaseVersioning,

    // -- monitoring (stage 5)
    /// The service exports metrics (Prometheus client, `/metrics`).
    Metrics,
    /// Monitoring is configured (Prometheus scrape configuration).
    MonitoringConfig,
    /// Alert rules.
    Alerting,
    /// Dashboards (Grafana).
    Dashboards,
    /// Input or prediction drift is monitored (Evidently, whylogs, PSI/KS).
    DriftMonitoring,

    // -- load and scale (stage 6)
    /// Load tests (Locust, k6, wrk, JMeter, mlops load-test steps).
    LoadTest,
    /// Autoscaling (HorizontalPodAutoscaler, KEDA, mlops autoscale steps).
    Autoscaling,
}

impl Signal {
    /// The kebab-case name used in JSON and in `docs/assess.md`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::LockedEnvironment => "locked-environment",
            Signal::UnpinnedRequirements => "unpinned-requirements",
            Signal::Container => "container",
            Signal::InfrastructureCode => "infrastructure-code",
            Signal::CiConfig => "ci-config",
            Signal::UnitTests => "unit-tests",
            Signal::DataTests => "data-tests",
            Signal::ModelValidation => "model-validation",
            Signal::IntegrationTests => "integration-tests",
            Signal::Reproducibility => "reproducibility",
            Signal::SecretScanning => "secret-scanning",
            Signal::CommittedSecret => "committed-secret",
            Signal::DependencyUpdates => "dependency-updates",
            Signal::CodeReview => "code-review",
            Signal::TrainingCode => "training-code",
            Signal::Notebook => "notebook",
            Signal::TrainingPipeline => "training-pipeline",
            Signal::HyperparameterTuning => "hyperparameter-tuning",
            Signal::FeatureImportance => "feature-importance",
            Signal::DataPolicy => "data-policy",
            Signal::BaselineComparison => "baseline-comparison",
            Signal::SliceEvaluation => "slice-evaluation",
            Signal::FairnessTests => "fairness-tests",
            Signal::ExperimentTracking => "experiment-tracking",
            Signal::ScheduledRetraining => "scheduled-retraining",
            Signal::NumericalChecks => "numerical-checks",
            Signal::Packaging => "packaging",
            Signal::ModelRegistry => "model-registry",
            Signal::Deployment => "deployment",
            Signal::SmokeTests => "smoke-tests",
            Signal::ProgressiveDelivery => "progressive-delivery",
            Signal::Rollback => "rollback",
            Signal::ReleaseVersioning => "release-versioning",
            Signal::Metrics => "metrics",
            Signal::MonitoringConfig => "monitoring-config",
            Signal::Alerting => "alerting",
            Signal::Dashboards => "dashboards",
            Signal::DriftMonitoring => "drift-monitoring",
            Signal::LoadTest => "load-test",
            Signal::Autoscaling => "autoscaling",
        }
    }

    /// Signals that count against the repository.
    pub fn is_negative(self) -> bool {
        matches!(self, Signal::UnpinnedRequirements | Signal::CommittedSecret)
    }
}

/// Where a piece of evidence was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Source {
    /// A file of the repository.
    File {
        /// Relative to the assessed directory, `/`-separated.
        path: String,
        /// 1-based line, when the evidence is one line.
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<usize>,
    },
    /// A run recorded in the ledger.
    Run {
        /// The run's ledger id.
        run_id: i64,
        /// The step that recorded it, if one did.
        #[serde(skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        /// The commit the run was made on.
        #[serde(skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        /// When the run started (RFC 3339, UTC).
        at: String,
    },
    /// The model registry in the ledger.
    Registry {
        /// `name:number` of the model version.
        model: String,
        /// When (RFC 3339, UTC).
        at: String,
    },
}

impl Source {
    /// A file source.
    pub fn file(path: impl Into<String>, line: Option<usize>) -> Source {
        Source::File {
            path: path.into(),
            line,
        }
    }

    /// `path:line`, `run 12 (step tests)`, `model iris:3`.
    pub fn describe(&self) -> String {
        match self {
            Source::File {
                path,
                line: Some(line),
            } => format!("{path}:{line}"),
            Source::File { path, line: None } => path.clone(),
            Source::Run {
                run_id,
                step: Some(step),
                ..
            } => format!("run {run_id}, step {step}"),
            Source::Run { run_id, .. } => format!("run {run_id}"),
            Source::Registry { model, .. } => format!("model {model}"),
        }
    }
}

/// One observed fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Evidence {
    /// Stable within one report: `E1`, `E2`, … in report order.
    pub id: String,
    /// What it shows.
    pub signal: Signal,
    /// One line, for people: "Cargo.lock pins 143 packages".
    pub summary: String,
    /// Where.
    pub source: Source,
    /// True when it happens without a person: a CI job or a pipeline step
    /// runs it, or (for configuration such as a Dockerfile or alert rules)
    /// a tool applies it as written. False for evidence that something is
    /// done by hand (a test file no automation runs, a notebook).
    pub automated: bool,
    /// For evidence that becomes automated when some automation runs a
    /// tool (a pytest file is automated when CI runs `pytest`): the words
    /// one of which an automated command must contain. Not serialised.
    #[serde(skip)]
    #[schemars(skip)]
    pub run_by: Vec<String>,
}

impl Evidence {
    /// Evidence from a file, not yet automated, with no id (ids are given
    /// when the report is assembled).
    pub fn file(
        signal: Signal,
        path: impl Into<String>,
        line: Option<usize>,
        summary: impl Into<String>,
    ) -> Evidence {
        Evidence {
            id: String::new(),
            signal,
            summary: summary.into(),
            source: Source::file(path, line),
            automated: false,
            run_by: Vec::new(),
        }
    }

    /// Marks it automated (configuration a tool applies as written, or a
    /// command of a CI job or pipeline step).
    #[must_use]
    pub fn automated(mut self) -> Evidence {
        self.automated = true;
        self
    }

    /// Marks it automated when an automated command contains one of
    /// `words` (a tool name such as `pytest`, a script path, a module).
    #[must_use]
    pub fn run_by<I, S>(mut self, words: I) -> Evidence
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.run_by.extend(words.into_iter().map(Into::into));
        self
    }
}

/// A command that runs without a person: a step of a CI job or of the
/// mlops pipeline. Evidence whose [`Evidence::run_by`] words appear in one
/// of these becomes automated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AutomatedCommand {
    /// The CI system (`github-actions`, `gitlab-ci`, …) or `mlops`.
    pub system: String,
    /// The command line as written.
    pub command: String,
    /// Where it is written.
    pub source: Source,
    /// True when it only runs on a schedule (a cron trigger).
    pub scheduled: bool,
}
