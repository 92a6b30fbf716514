//! The `secret-scan` step kind: the `with` table, its validation, and the
//! action that runs [`scan`](super::scan) in the step's directory. The
//! scanning itself lives in the sibling modules.

use std::path::PathBuf;
use std::sync::Arc;

use mlops_core::manifest::Diagnostic;
use mlops_core::{KindParams, Stage, StepAction, StepContext, StepFailure, StepKind};
use serde::Deserialize;
use toml::Spanned;

use super::paths::PathGlobs;
use super::{
    DEFAULT_MAX_COMMITS, DEFAULT_MAX_FILE_BYTES, ScanConfig, ScanReport, error_chain,
    scan_cancellable,
};

/// The evidence kind the step records its [`ScanReport`] under.
const EVIDENCE_KIND: &str = crate::evidence::SECRET_SCAN;

/// `kind = "secret-scan"`: fails when committed credentials are found in
/// the step's directory or in its git history.
///
/// ```toml
/// [ci.steps.secrets]
/// kind = "secret-scan"
/// with = { exclude = ["tests/fixtures/**"] }
/// ```
///
/// Every `with` key is optional:
///
/// - `history` (default `true`): also scan the lines added by the commits
///   reachable from `HEAD`;
/// - `allowlist`: the allowlist file, relative to the step's directory
///   (default: `.mlops-secrets-allow` there, if it exists); a configured
///   file that is missing fails the step;
/// - `exclude`: glob patterns of files to leave out;
/// - `max-file-bytes` (default 1 MiB): larger files are skipped, and
///   counted in the report;
/// - `max-commits` (default 10 000): how many of the newest commits are
///   read at most.
///
/// The step logs one line per finding (rule, file, line and commit, never
/// the secret), records the [`ScanReport`] as `secret-scan` evidence, and
/// fails naming the first finding when there is any.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretScanKind;

/// The `with` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SecretScanWire {
    /// Scan the git history too (default true).
    history: Option<bool>,
    /// Allowlist file, relative to the step's directory.
    allowlist: Option<Spanned<String>>,
    /// Glob patterns of files to leave out.
    exclude: Option<Vec<Spanned<String>>>,
    /// Larger files are skipped.
    max_file_bytes: Option<Spanned<u64>>,
    /// How many commits, newest first, to read at most.
    max_commits: Option<Spanned<usize>>,
}

impl SecretScanWire {
    /// Validates the table into a [`ScanConfig`], reporting every problem.
    fn compile(self) -> Result<ScanConfig, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        let allowlist = self.allowlist.and_then(|path| {
            if path.get_ref().trim().is_empty() {
                errors.push(Diagnostic::new(
                    "`allowlist` must name a file",
                    Some(path.span()),
                ));
                None
            } else {
                Some(PathBuf::from(path.into_inner()))
            }
        });
        let mut exclude = Vec::new();
        for pattern in self.exclude.unwrap_or_default() {
            if let Err((_, e)) = PathGlobs::new([pattern.get_ref().as_str()]) {
                errors.push(Diagnostic::new(
                    format!(
                        "invalid exclude pattern `{}`: {}",
                        pattern.get_ref(),
                        e.kind()
                    ),
                    Some(pattern.span()),
                ));
            } else {
                exclude.push(pattern.into_inner());
            }
        }
        let max_file_bytes = match self.max_file_bytes {
            Some(n) if *n.get_ref() == 0 => {
                errors.push(Diagnostic::new(
                    "`max-file-bytes` must be at least 1",
                    Some(n.span()),
                ));
                DEFAULT_MAX_FILE_BYTES
            }
            Some(n) => n.into_inner(),
            None => DEFAULT_MAX_FILE_BYTES,
        };
        let max_commits = match self.max_commits {
            Some(n) if *n.get_ref() == 0 => {
                errors.push(
                    Diagnostic::new("`max-commits` must be at least 1", Some(n.span()))
                        .with_help("to scan only the working tree, set `history = false`"),
                );
                DEFAULT_MAX_COMMITS
            }
            Some(n) => n.into_inner(),
            None => DEFAULT_MAX_COMMITS,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ScanConfig {
            history: self.history.unwrap_or(true),
            allowlist,
            exclude,
            max_file_bytes,
            max_commits,
        })
    }
}

impl StepKind for SecretScanKind {
    fn name(&self) -> &'static str {
        "secret-scan"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Ci)
    }

    fn summary(&self) -> &'static str {
        "fails when committed credentials are found in the working tree or the git history"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let wire: SecretScanWire = params.deserialize().map_err(|d| vec![d])?;
        let config = Arc::new(wire.compile()?);
        Ok(Arc::new(move |ctx: StepContext| {
            let config = Arc::clone(&config);
            async move { run(ctx, config).await }
        }))
    }
}

/// One attempt: scan off the async threads, log, record, judge.
async fn run(ctx: StepContext, config: Arc<ScanConfig>) -> Result<(), StepFailure> {
    let root = ctx.cwd.clone();
    let cancel = ctx.cancel.clone();
    let scanned = tokio::task::spawn_blocking(move || {
        scan_cancellable(&root, &config, &|| cancel.is_cancelled())
    })
    .await;
    let report = match scanned {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => return Err(StepFailure::new(error_chain(&e))),
        Err(e) => {
            return Err(StepFailure::new(format!(
                "the secret scan of {} stopped unexpectedly: {e}",
                ctx.cwd.display()
            )));
        }
    };
    log_report(&ctx, &report);
    ctx.record(EVIDENCE_KIND, &report);
    verdict(&report)
}

fn log_report(ctx: &StepContext, report: &ScanReport) {
    for finding in &report.findings {
        ctx.log(format!(
            "secret-scan: {} ({}) at {}",
            finding.rule,
            finding.description,
            finding.location()
        ));
    }
    if report.findings_omitted > 0 {
        ctx.log(format!(
            "secret-scan: {} more finding(s) not listed",
            report.findings_omitted
        ));
    }
    for note in &report.notes {
        ctx.log(format!("secret-scan: note: {note}"));
    }
    let history = if report.history_scanned {
        format!(", {} commit(s)", report.commits_scanned)
    } else {
        String::new()
    };
    ctx.log(format!(
        "secret-scan: scanned {} file(s){history}; {} finding(s), {} accepted by the allowlist",
        report.files_scanned,
        report.findings.len() + report.findings_omitted,
        report.suppressed
    ));
}

/// Passes a clean report; fails one with findings, naming the first.
fn verdict(report: &ScanReport) -> Result<(), StepFailure> {
    let total = report.findings.len() + report.findings_omitted;
    match report.findings.first() {
        None => Ok(()),
        Some(first) if total == 1 => Err(StepFailure::new(format!(
            "1 secret found: {} in {}",
            first.rule,
            first.location()
        ))),
        Some(first) => Err(StepFailure::new(format!(
            "{total} secrets found; first: {} in {}",
            first.rule,
            first.location()
        ))),
    }
}
