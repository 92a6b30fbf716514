//! The `reproducibility` kind: train twice, get the same model.
//!
//! The step runs a training command several times (each in a fresh output
//! directory when the command uses the `{out}` placeholder) and checks that
//! the metrics agree within a tolerance and that the declared artifacts
//! hash the same. With `runs = 1` it compares one run with the metrics and
//! hashes this step recorded the last time it passed on the same commit, and
//! runs a second time when there is no such record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlops_core::manifest::Diagnostic;
use mlops_core::{CommandEnd, KindParams, Stage, StepAction, StepContext, StepFailure, StepKind};
use serde::{Deserialize, Serialize};

use crate::metrics::{Metrics, fmt_value, read_metrics};

/// The `reproducibility` step kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReproducibilityKind;

/// `with` of a `reproducibility` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ReproWire {
    /// The training command; `{out}` becomes a fresh directory per run.
    command: String,
    /// The metrics file it writes (may use `{out}`).
    metrics: String,
    /// Files or directories that must hash the same (may use `{out}`).
    artifacts: Option<Vec<String>>,
    /// Largest absolute difference allowed per metric: a number for all, or
    /// a table per metric. Default 1e-9.
    tolerance: Option<TolWire>,
    /// How many runs (default 2; 1 compares with the recorded run).
    runs: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TolWire {
    All(f64),
    PerMetric(BTreeMap<String, f64>),
}

struct ReproStep {
    command: String,
    metrics: String,
    artifacts: Vec<String>,
    default_tolerance: f64,
    per_metric: BTreeMap<String, f64>,
    runs: u32,
}

/// One training run: what it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRun {
    /// Where it came from: `run 1`, `run 2`, or `recorded run 7`.
    pub label: String,
    /// Its metrics.
    pub metrics: Metrics,
    /// blake3 of each declared artifact (as declared, before `{out}`).
    pub artifacts: BTreeMap<String, String>,
}

/// A disagreement between two runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// `metric` or `artifact`.
    pub what: String,
    /// Its name.
    pub name: String,
    /// The first run's value or hash.
    pub first: String,
    /// The other run's.
    pub other: String,
    /// The other run's label.
    pub other_label: String,
    /// In words.
    pub message: String,
}

/// The evidence a `reproducibility` step records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReproReport {
    /// The commit the runs were made on.
    pub commit: Option<String>,
    /// Whether the tree had uncommitted changes.
    pub dirty: bool,
    /// The runs compared; the first is the reference.
    pub runs: Vec<TrainingRun>,
    /// Every disagreement.
    pub differences: Vec<Difference>,
    /// No disagreement.
    pub reproducible: bool,
}

/// Compares `other` with `first`.
pub fn compare(
    first: &TrainingRun,
    other: &TrainingRun,
    tolerance: &dyn Fn(&str) -> f64,
) -> Vec<Difference> {
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        first.metrics.keys().chain(other.metrics.keys()).collect();
    for name in names {
        let (a, b) = (first.metrics.get(name), other.metrics.get(name));
        let tol = tolerance(name);
        let differs = match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() > tol || a.is_nan() != b.is_nan(),
            _ => true,
        };
        if differs {
            let show = |v: Option<&f64>| v.map_or_else(|| "missing".to_owned(), |v| fmt_value(*v));
            out.push(Difference {
                what: "metric".to_owned(),
                name: name.clone(),
                first: show(a),
                other: show(b),
                other_label: other.label.clone(),
                message: format!(
                    "metric {name}: {} in {} but {} in {} (tolerance {})",
                    show(a),
                    first.label,
                    show(b),
                    other.label,
                    fmt_value(tol)
                ),
            });
        }
    }
    for (name, hash) in &first.artifacts {
        let theirs = other.artifacts.get(name);
        if theirs != Some(hash) {
            let short = |h: &str| h.chars().take(12).collect::<String>();
            out.push(Difference {
                what: "artifact".to_owned(),
                name: name.clone(),
                first: hash.clone(),
                other: theirs.cloned().unwrap_or_default(),
                other_label: other.label.clone(),
                message: format!(
                    "artifact {name}: {} in {} but {} in {}",
                    short(hash),
                    first.label,
                    theirs.map_or_else(|| "missing".to_owned(), |h| short(h)),
                    other.label
                ),
            });
        }
    }
    out
}

/// Runs file-system work off the coordinator's thread.
async fn blocking(f: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> std::io::Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// `text` as one `/bin/sh` word.
fn shell_quote(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:@,%".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// blake3 of a file, or of a directory's files (paths and contents).
fn hash_path(path: &Path) -> Result<String, String> {
    let mut hasher = blake3::Hasher::new();
    if path.is_dir() {
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(path)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect();
        files.sort();
        for f in files {
            let rel = f.strip_prefix(path).unwrap_or(&f);
            hasher.update(rel.to_string_lossy().as_bytes());
            hasher.update(&[0]);
            let file = std::fs::File::open(&f)
                .map_err(|e| format!("cannot read artifact {}: {e}", f.display()))?;
            hasher
                .update_reader(file)
                .map_err(|e| format!("cannot read artifact {}: {e}", f.display()))?;
        }
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot read artifact {}: {e}", path.display()))?;
        hasher
            .update_reader(file)
            .map_err(|e| format!("cannot read artifact {}: {e}", path.display()))?;
    }
    Ok(hasher.finalize().to_hex().to_string())
}

impl StepKind for ReproducibilityKind {
    fn name(&self) -> &'static str {
        "reproducibility"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Ci)
    }

    fn summary(&self) -> &'static str {
        "trains twice (or against the recorded run) and checks metrics and artifacts agree"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let wire: ReproWire = params.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        let span = Some(params.span());
        if wire.command.trim().is_empty() {
            errors.push(Diagnostic::new("`command` is empty", span.clone()));
        }
        let runs = wire.runs.unwrap_or(2);
        if !(1..=10).contains(&runs) {
            errors.push(Diagnostic::new(
                format!("`runs` is {runs}; it must be from 1 to 10"),
                span.clone(),
            ));
        }
        let (default_tolerance, per_metric) = match wire.tolerance {
            None => (1e-9, BTreeMap::new()),
            Some(TolWire::All(t)) => (t, BTreeMap::new()),
            Some(TolWire::PerMetric(m)) => (1e-9, m),
        };
        if !(default_tolerance.is_finite() && default_tolerance >= 0.0)
            || per_metric.values().any(|t| !(t.is_finite() && *t >= 0.0))
        {
            errors.push(Diagnostic::new(
                "a `tolerance` must be a finite number, zero or more",
                span.clone(),
            ));
        }
        let artifacts = wire.artifacts.unwrap_or_default();
        for a in std::iter::once(&wire.metrics).chain(&artifacts) {
            if Path::new(a).is_absolute() {
                errors.push(Diagnostic::new(
                    format!("`{a}` must be relative to the step's directory (or use {{out}})"),
                    span.clone(),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let step = Arc::new(ReproStep {
            command: wire.command,
            metrics: wire.metrics,
            artifacts,
            default_tolerance,
            per_metric,
            runs,
        });
        Ok(Arc::new(move |ctx: StepContext| {
            let step = step.clone();
            async move { step.run(ctx).await }
        }))
    }
}

impl ReproStep {
    fn tolerance(&self, metric: &str) -> f64 {
        self.per_metric
            .get(metric)
            .copied()
            .unwrap_or(self.default_tolerance)
    }

    /// Runs the command once, with `{out}` in `out`, and collects what it
    /// produced.
    async fn train(
        &self,
        ctx: &StepContext,
        label: String,
        out: &Path,
    ) -> Result<TrainingRun, StepFailure> {
        let out_text = out.to_string_lossy().into_owned();
        let fill = |s: &str| s.replace("{out}", &out_text);
        let dir = out.to_path_buf();
        blocking(move || std::fs::create_dir_all(&dir))
            .await
            .map_err(|e| StepFailure::new(format!("cannot create {}: {e}", out.display())))?;
        // In the command, the directory is one shell word whatever it holds.
        let command = self.command.replace("{out}", &shell_quote(&out_text));
        ctx.log(format!("--- mlops reproducibility, {label}: {command} ---"));
        match ctx.run_command(&command).await {
            CommandEnd::Success => {}
            CommandEnd::Failure { reason, .. } => {
                return Err(StepFailure::new(format!(
                    "{label}: the training command failed ({reason})"
                )));
            }
            CommandEnd::Cancelled => return Err(StepFailure::new("cancelled")),
        }
        let cwd = ctx.cwd.clone();
        let metrics_path = cwd.join(fill(&self.metrics));
        let artifacts: Vec<(String, PathBuf)> = self
            .artifacts
            .iter()
            .map(|a| (a.clone(), cwd.join(fill(a))))
            .collect();
        let label2 = label.clone();
        tokio::task::spawn_blocking(move || {
            let metrics = read_metrics(&metrics_path).map_err(|e| format!("{label2}: {e}"))?;
            let mut hashes = BTreeMap::new();
            for (name, path) in artifacts {
                hashes.insert(
                    name,
                    hash_path(&path).map_err(|e| format!("{label2}: {e}"))?,
                );
            }
            Ok::<_, String>(TrainingRun {
                label: label2,
                metrics,
                artifacts: hashes,
            })
        })
        .await
        .map_err(|e| StepFailure::new(format!("{label}: collecting results stopped: {e}")))?
        .map_err(StepFailure::new)
    }

    async fn run(&self, ctx: StepContext) -> Result<(), StepFailure> {
        let root = ctx.project_root.clone();
        let git = tokio::task::spawn_blocking(move || mlops_core::git::git_state(&root))
            .await
            .unwrap_or_default();
        let work = ctx
            .project_root
            .join(mlops_core::ledger::STATE_DIR)
            .join("repro")
            .join(format!("{}-{}", ctx.run_id, ctx.step));
        let stale = work.clone();
        let _ = blocking(move || std::fs::remove_dir_all(&stale)).await;

        let mut runs = Vec::new();
        if self.runs == 1 {
            if let Some(recorded) = self.recorded(&ctx, &git).await? {
                ctx.log(format!("comparing with {}", recorded.label));
                runs.push(recorded);
            } else {
                ctx.log("no passing record of this step on this commit: running twice");
            }
        }
        let wanted = if runs.is_empty() { self.runs.max(2) } else { 1 };
        for i in 1..=wanted {
            let run = self
                .train(&ctx, format!("run {i}"), &work.join(i.to_string()))
                .await?;
            runs.push(run);
        }
        let tolerance = |m: &str| self.tolerance(m);
        let differences: Vec<Difference> = runs[1..]
            .iter()
            .flat_map(|other| compare(&runs[0], other, &tolerance))
            .collect();
        for d in &differences {
            ctx.log(&d.message);
        }
        let report = ReproReport {
            commit: git.commit.clone(),
            dirty: git.dirty,
            runs,
            reproducible: differences.is_empty(),
            differences,
        };
        ctx.record(crate::evidence::REPRODUCIBILITY, &report);
        if report.reproducible {
            ctx.log(format!(
                "reproducible: {} runs agree on {} metrics and {} artifacts",
                report.runs.len(),
                report.runs[0].metrics.len(),
                report.runs[0].artifacts.len()
            ));
            let done = work.clone();
            let _ = blocking(move || std::fs::remove_dir_all(&done)).await;
            return Ok(());
        }
        let first: Vec<&str> = report
            .differences
            .iter()
            .take(3)
            .map(|d| d.message.as_str())
            .collect();
        let more = report.differences.len().saturating_sub(3);
        Err(StepFailure::new(format!(
            "not reproducible: {}{}; the runs' outputs are kept in {}",
            first.join("; "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            work.display()
        )))
    }

    /// The first run this step recorded when it last passed on this commit
    /// with a clean tree.
    async fn recorded(
        &self,
        ctx: &StepContext,
        git: &mlops_core::ledger::GitState,
    ) -> Result<Option<TrainingRun>, StepFailure> {
        let Some(commit) = git.commit.clone().filter(|_| !git.dirty) else {
            return Ok(None);
        };
        let (step, run_id) = (ctx.step.clone(), ctx.run_id);
        let record = ctx
            .ledger()
            .call(move |l| l.latest_evidence(&step, crate::evidence::REPRODUCIBILITY, run_id))
            .await
            .map_err(|e| StepFailure::new(e.to_string()))?;
        let Some(record) = record else {
            return Ok(None);
        };
        let Ok(report) = serde_json::from_value::<ReproReport>(record.body) else {
            return Ok(None);
        };
        if report.commit.as_deref() != Some(commit.as_str()) || report.dirty {
            return Ok(None);
        }
        Ok(report.runs.into_iter().next().map(|mut r| {
            r.label = format!("recorded run {}", record.run_id);
            r
        }))
    }
}
