//! Putting an assessment together: static scan, secret scan, ledger, git,
//! then the scores.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mlops_ci::secret_scan::{self, ScanConfig, SecretScanError};

use crate::evidence::{Evidence, Signal};
use crate::report::{Report, Repository, SCHEMA_VERSION, SecretScanSummary};
use crate::runs::{self, RunsError};
use crate::scan::{self, ScanError};
use crate::score::{self, Facts};

/// How to assess.
#[derive(Debug, Clone)]
pub struct Options {
    /// Also scan the git history for committed secrets (the default).
    pub history: bool,
    /// At most this many commits of history are scanned for secrets.
    pub max_commits: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            history: true,
            max_commits: secret_scan::DEFAULT_MAX_COMMITS,
        }
    }
}

/// Why a repository could not be assessed. Anything short of these (a
/// malformed manifest or CI file, an unreadable file) is a note in the
/// report, not an error.
#[derive(Debug, thiserror::Error)]
pub enum AssessError {
    /// The directory to assess is missing or unreadable.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The ledger exists but cannot be read.
    #[error("cannot read the run ledger of {path}")]
    Runs {
        /// The project directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<RunsError>,
    },
}

/// Assesses the repository (or directory inside one) at `root`.
pub fn assess(root: &Path, options: &Options) -> Result<Report, AssessError> {
    let scanned = scan::scan(root)?;
    let mut notes = scanned.notes.clone();

    let runs = runs::read(root).map_err(|source| AssessError::Runs {
        path: root.to_path_buf(),
        source: Box::new(source),
    })?;

    let config = ScanConfig {
        history: options.history,
        max_commits: options.max_commits,
        ..ScanConfig::default()
    };
    // A repository without commits (or an unreadable history) still gets
    // its working tree scanned.
    let secrets = match secret_scan::scan(root, &config) {
        Err(e) if config.history => {
            notes.push(format!(
                "secret scan: the git history could not be read ({}); only the working tree \
                 was scanned",
                error_chain(&e)
            ));
            secret_scan::scan(
                root,
                &ScanConfig {
                    history: false,
                    ..config.clone()
                },
            )
        }
        other => other,
    };
    let (secret_evidence, secret_summary) = match secrets {
        Ok(report) => {
            notes.extend(report.notes.iter().map(|n| format!("secret scan: {n}")));
            if report.findings_omitted > 0 {
                notes.push(format!(
                    "secret scan: {} more findings not listed",
                    report.findings_omitted
                ));
            }
            let evidence: Vec<Evidence> = report
                .findings
                .iter()
                .map(|f| {
                    let mut e = Evidence::file(
                        Signal::CommittedSecret,
                        f.file.clone(),
                        Some(f.line),
                        match &f.commit {
                            Some(c) => format!(
                                "{} committed in {} at line {} by commit {} (no longer in the \
                                 working tree)",
                                f.description,
                                f.file,
                                f.line,
                                c.get(..12).unwrap_or(c)
                            ),
                            None => format!(
                                "{} in the working tree at {}:{}",
                                f.description, f.file, f.line
                            ),
                        },
                    );
                    e.automated = false;
                    e
                })
                .collect();
            let summary = SecretScanSummary {
                ran: true,
                files: report.files_scanned,
                history: report.history_scanned,
                commits: report.commits_scanned,
                findings: report.findings.len() + report.findings_omitted,
                suppressed: report.suppressed,
            };
            (evidence, summary)
        }
        Err(e) => {
            notes.push(format!("secret scan did not run: {}", error_chain(&e)));
            (Vec::new(), SecretScanSummary::default())
        }
    };

    // Ids in report order: files, then runs, then secrets.
    let mut evidence = scanned.evidence;
    if let Some(r) = &runs {
        evidence.extend(r.evidence.iter().cloned());
    }
    evidence.extend(secret_evidence);
    for (i, e) in evidence.iter_mut().enumerate() {
        e.id = format!("E{}", i + 1);
    }

    let facts = Facts::new(&evidence);
    let stages = score::stages(&facts, runs.as_ref());
    let stage_level = score::stage_level(&stages);
    let microsoft = score::microsoft(&facts);
    let microsoft_level = score::microsoft_level(&microsoft);
    let ml_test_score = score::ml_test_score(&facts);
    let findings = score::findings(
        &facts,
        &stages,
        &ml_test_score,
        runs.as_ref(),
        scanned.manifest,
    );

    // Summaries and commands quote the repository: a secret on a quoted
    // line must not reach the report (the finding says where it is).
    let redact = |s: &mut String| {
        if let std::borrow::Cow::Owned(clean) = secret_scan::redact(s) {
            *s = clean;
        }
    };
    for e in &mut evidence {
        redact(&mut e.summary);
    }
    let mut automation = scanned.automation;
    for c in &mut automation {
        redact(&mut c.command);
    }
    let mut findings = findings;
    for f in &mut findings {
        redact(&mut f.title);
    }
    for n in &mut notes {
        redact(n);
    }

    let git = git_state(root);
    if options.history && git.as_ref().is_some_and(|g| g.shallow) {
        notes.push(
            "the repository is a shallow clone: commits older than its depth were not scanned \
             for secrets (fetch the full history, e.g. `fetch-depth: 0` in GitHub Actions)"
                .to_owned(),
        );
    }
    let name = scanned.project_name.clone().unwrap_or_else(|| {
        root.canonicalize()
            .ok()
            .as_deref()
            .unwrap_or(root)
            .file_name()
            .map_or_else(
                || root.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
    });
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        mlops_version: env!("CARGO_PKG_VERSION").to_owned(),
        generated_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        repository: Repository {
            path: root.display().to_string(),
            name,
            files: scanned.files,
            git: git.is_some(),
            commit: git.as_ref().and_then(|g| g.commit.clone()),
            branch: git.as_ref().and_then(|g| g.branch.clone()),
            commits: git.as_ref().and_then(|g| g.commits),
            manifest: scanned.manifest,
            ledger: runs.is_some(),
        },
        stage_level,
        stages,
        microsoft_level,
        microsoft,
        ml_test_score,
        runs: runs.map(|r| r.history),
        findings,
        evidence,
        automation,
        secret_scan: secret_summary,
        notes,
    })
}

fn error_chain(e: &SecretScanError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

struct GitInfo {
    shallow: bool,
    commit: Option<String>,
    branch: Option<String>,
    commits: Option<usize>,
}

/// The checked-out commit and branch, and how many commits `HEAD` reaches;
/// `None` outside a git work tree. An unborn `HEAD` has no commit.
fn git_state(root: &Path) -> Option<GitInfo> {
    let repo = git2::Repository::discover(root).ok()?;
    let head = repo.head().ok();
    let commit = head
        .as_ref()
        .and_then(|h| h.peel_to_commit().ok())
        .map(|c| c.id().to_string());
    let branch = head
        .as_ref()
        .filter(|h| h.is_branch())
        .and_then(|h| h.shorthand().ok().map(str::to_owned));
    let commits = commit.as_ref().and_then(|_| {
        let mut walk = repo.revwalk().ok()?;
        walk.push_head().ok()?;
        Some(walk.count())
    });
    Some(GitInfo {
        shallow: repo.is_shallow(),
        commit,
        branch,
        commits,
    })
}
