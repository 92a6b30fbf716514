//! `secret-scan`: committed credentials in the working tree and the git
//! history.
//!
//! [`scan`] walks the files under a directory and, when that directory is
//! in a git repository, the lines every commit reachable from `HEAD` added,
//! and matches them against [`rules`]: cloud and service keys, private
//! keys, tokens, password literals in configuration files and high-entropy
//! strings. A secret still in the tree is reported once, at its place in
//! the tree; one that only lives in history is reported with the commit
//! that added it. Reviewed findings are accepted through an allowlist file
//! (format below) or an inline [`ALLOW_MARKER`] comment.
//!
//! A [`Finding`] names the rule, file, line and commit, never the secret:
//! neither the report, its fingerprints nor the step log contain any part
//! of it, so the report can be stored as evidence in the ledger.
//!
//! [`SecretScanKind`] is the `kind = "secret-scan"` step that runs the scan
//! in the step's directory and fails when anything is found. The scan is
//! a library call and usable without the engine.
//!
//! What is scanned: files on disk (not following symbolic links), except
//! dependency, build and cache directories (`.git`, `.mlops`, `target`,
//! `node_modules`, `.venv`, …), files git ignores and does not track (they
//! are not committed), binaries, oversized files and configured
//! exclusions; and the commits reachable from `HEAD`, not other branches.
//! The scan only reads: it never rewrites files or history.
//!
//! # Allowlist
//!
//! One entry per line; blank lines and `#` comments are ignored. An entry
//! is one or more terms that must all hold: `rule:<id>`, `path:<glob>`,
//! `commit:<hex prefix>`, or `finding:<fingerprint>` alone on its line.
//!
//! ```text
//! path:tests/fixtures/**
//! rule:jwt path:docs/**
//! commit:4f2a9c1e
//! finding:config/app.env:generic-password:3
//! ```
//!
//! Globs are matched against paths relative to the scan root, as in
//! `.gitignore`: a pattern without `/` matches at any depth, `*` stays
//! within a directory, `**` crosses directories.

mod allowlist;
mod history;
mod kind;
mod paths;
mod rules;
mod tree;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use kind::SecretScanKind;
pub use rules::{ALLOW_MARKER, Rule, rules};

use allowlist::Allowlist;
use paths::PathGlobs;

/// The allowlist read from the scan root when none is configured.
pub const DEFAULT_ALLOWLIST: &str = ".mlops-secrets-allow";

/// Files larger than this are skipped by default (and counted).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024;

/// How many commits, newest first, the history scan reads by default.
pub const DEFAULT_MAX_COMMITS: usize = 10_000;

/// At most this many findings are listed in a report; the rest are
/// counted in [`ScanReport::findings_omitted`].
pub const MAX_REPORTED_FINDINGS: usize = 1_000;

/// What to scan and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanConfig {
    /// Also scan the lines added by every commit reachable from `HEAD`.
    pub history: bool,
    /// The allowlist file, relative to the scan root unless absolute. When
    /// `None`, [`DEFAULT_ALLOWLIST`] is used if it exists. A configured
    /// file that does not exist is an error.
    pub allowlist: Option<PathBuf>,
    /// Glob patterns of files to leave out, relative to the scan root.
    pub exclude: Vec<String>,
    /// Larger files (and, in history, larger blobs) are skipped.
    pub max_file_bytes: u64,
    /// The newest commits to read at most; older ones are left out and
    /// the report says so.
    pub max_commits: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            history: true,
            allowlist: None,
            exclude: Vec::new(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_commits: DEFAULT_MAX_COMMITS,
        }
    }
}

/// A credential found: where, and by which rule. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule's id, e.g. `aws-access-key-id`.
    pub rule: String,
    /// What the rule looks for.
    pub description: String,
    /// The file, relative to the scan root, `/`-separated.
    pub file: String,
    /// 1-based line in the file (in that commit, for a history finding).
    pub line: usize,
    /// The commit that added it (full hex id), for a secret that is no
    /// longer in the working tree; `None` for one in the tree.
    pub commit: Option<String>,
    /// Identifies the finding in an allowlist (`finding:<fingerprint>`):
    /// `file:rule:line`, preceded by `<commit id>:` for a history finding.
    /// It is built from the location only (a hash of the secret would let
    /// a weak password be guessed back), so it reveals nothing of it.
    pub fingerprint: String,
}

impl Finding {
    /// `file:line`, and ` in commit abcdef12` for a history finding.
    pub fn location(&self) -> String {
        match &self.commit {
            Some(commit) => format!(
                "{}:{} in commit {}",
                self.file,
                self.line,
                commit.get(..8).unwrap_or(commit)
            ),
            None => format!("{}:{}", self.file, self.line),
        }
    }
}

/// Files the tree scan did not read, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SkippedFiles {
    /// Files with a NUL byte in their first 8 KiB.
    pub binary: usize,
    /// Files over [`ScanConfig::max_file_bytes`].
    pub too_large: usize,
    /// Files matching [`ScanConfig::exclude`].
    pub excluded: usize,
    /// Untracked files that git ignores: not committed, so not leaked.
    pub ignored: usize,
}

/// What a scan looked at and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    /// Findings: the tree's by file and line, then history-only ones,
    /// oldest commit first. At most [`MAX_REPORTED_FINDINGS`].
    pub findings: Vec<Finding>,
    /// Findings beyond [`MAX_REPORTED_FINDINGS`], counted only.
    pub findings_omitted: usize,
    /// Findings accepted by the allowlist or an inline marker.
    pub suppressed: usize,
    /// Text files read in the working tree.
    pub files_scanned: usize,
    /// Files of the working tree not read.
    pub files_skipped: SkippedFiles,
    /// Whether the git history was scanned.
    pub history_scanned: bool,
    /// Commits whose added lines were scanned.
    pub commits_scanned: usize,
    /// File changes (one file in one commit) scanned in the history.
    pub changes_scanned: usize,
    /// True when the history had more than [`ScanConfig::max_commits`]
    /// commits and the older ones were not read.
    pub history_truncated: bool,
    /// The allowlist file used, if any.
    pub allowlist: Option<String>,
    /// Why something was not scanned, in words.
    pub notes: Vec<String>,
}

/// Why a scan could not run.
#[derive(Debug, thiserror::Error)]
pub enum SecretScanError {
    /// The root is not a readable directory.
    #[error("cannot scan {path}")]
    Root {
        /// The scan root.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The root exists but is a file.
    #[error("cannot scan {path}: not a directory")]
    NotADirectory {
        /// The scan root.
        path: PathBuf,
    },
    /// A file or directory of the tree could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The allowlist file could not be read.
    #[error("cannot read the allowlist {path}")]
    ReadAllowlist {
        /// The allowlist file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the allowlist is malformed.
    #[error("invalid allowlist entry at {path}:{line}: {message}")]
    Allowlist {
        /// The allowlist file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// An exclude pattern is not a valid glob.
    #[error("invalid exclude pattern `{pattern}`")]
    Exclude {
        /// The pattern.
        pattern: String,
        /// Why it is invalid.
        #[source]
        source: globset::Error,
    },
    /// The repository the root is in could not be read.
    #[error("cannot read the git history of {path}")]
    Git {
        /// The scan root.
        path: PathBuf,
        /// The git error.
        #[source]
        source: git2::Error,
    },
    /// The caller cancelled the scan.
    #[error("the secret scan of {path} was cancelled")]
    Cancelled {
        /// The scan root.
        path: PathBuf,
    },
}

/// `text` with every secret any rule finds in it replaced by `[redacted]`,
/// for text that quotes a repository (a command, a source line) on its way
/// into a report.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let hits = rules::scan_text(text, rules::FileClass::ANY);
    if hits.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for hit in hits {
        out = out.replace(&hit.secret, "[redacted]");
    }
    std::borrow::Cow::Owned(out)
}

/// Scans `root` (a directory) and, if configured and available, its git
/// history.
pub fn scan(root: &Path, config: &ScanConfig) -> Result<ScanReport, SecretScanError> {
    scan_cancellable(root, config, &|| false)
}

/// A found secret before the allowlist, with the secret itself kept in
/// memory to tell secrets apart; it never leaves this module.
struct RawFinding {
    rule: &'static Rule,
    file: String,
    line: usize,
    commit: Option<String>,
    secret: String,
    /// Its line carries [`ALLOW_MARKER`].
    marked: bool,
}

impl RawFinding {
    fn finding(&self) -> Finding {
        let fingerprint = match &self.commit {
            Some(commit) => format!("{commit}:{}:{}:{}", self.file, self.rule.id, self.line),
            None => format!("{}:{}:{}", self.file, self.rule.id, self.line),
        };
        Finding {
            rule: self.rule.id.to_owned(),
            description: self.rule.description.to_owned(),
            file: self.file.clone(),
            line: self.line,
            commit: self.commit.clone(),
            fingerprint,
        }
    }

    /// The same secret under the same rule in the same file.
    fn key(&self) -> (&'static str, &str, &str) {
        (self.rule.id, &self.file, &self.secret)
    }
}

/// [`scan`], checking `cancelled` between files and commits.
pub(crate) fn scan_cancellable(
    root: &Path,
    config: &ScanConfig,
    cancelled: &dyn Fn() -> bool,
) -> Result<ScanReport, SecretScanError> {
    let meta = std::fs::metadata(root).map_err(|source| SecretScanError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(SecretScanError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let exclude = PathGlobs::new(config.exclude.iter().map(String::as_str))
        .map_err(|(pattern, source)| SecretScanError::Exclude { pattern, source })?;
    let mut report = ScanReport::default();
    let allowlist = match &config.allowlist {
        Some(path) => {
            let path = root.join(path);
            report.allowlist = Some(path.display().to_string());
            Allowlist::load(&path)?
        }
        None => {
            let path = root.join(DEFAULT_ALLOWLIST);
            if path.is_file() {
                report.allowlist = Some(path.display().to_string());
                Allowlist::load(&path)?
            } else {
                Allowlist::default()
            }
        }
    };

    let repo = history::RepoView::discover(root)?;
    if repo.is_none() {
        report
            .notes
            .push("not in a git repository: history not scanned".to_owned());
    }

    let tree = tree::scan_tree(root, repo.as_ref(), &exclude, config, cancelled)?;
    report.files_scanned = tree.files_scanned;
    report.files_skipped = tree.skipped;

    let mut history_raw = Vec::new();
    match &repo {
        Some(repo) if config.history => {
            let history = repo.scan_history(root, &exclude, config, cancelled)?;
            report.history_scanned = history.scanned;
            report.commits_scanned = history.commits;
            report.changes_scanned = history.changes;
            report.history_truncated = history.truncated;
            report.notes.extend(history.notes);
            history_raw = history.findings;
        }
        Some(_) => report
            .notes
            .push("history scan turned off: only the working tree was scanned".to_owned()),
        None => {}
    }

    // A secret still in the tree is reported there; the history keeps the
    // first commit that added each remaining secret.
    let mut seen: HashSet<(&'static str, String, String)> = tree
        .findings
        .iter()
        .map(|f| {
            let (rule, file, secret) = f.key();
            (rule, file.to_owned(), secret.to_owned())
        })
        .collect();
    let mut raw = tree.findings;
    for f in history_raw {
        let (rule, file, secret) = f.key();
        if seen.insert((rule, file.to_owned(), secret.to_owned())) {
            raw.push(f);
        }
    }
    drop(seen);

    let mut findings = Vec::new();
    let mut suppressed = 0;
    for f in raw {
        let finding = f.finding();
        if f.marked || allowlist.allows(&finding) {
            suppressed += 1;
        } else {
            findings.push(finding);
        }
    }
    report.suppressed = suppressed;
    report.findings_omitted = findings.len().saturating_sub(MAX_REPORTED_FINDINGS);
    findings.truncate(MAX_REPORTED_FINDINGS);
    report.findings = findings;
    Ok(report)
}

/// A message with its chain of causes, for a step failure.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn redact_hides_every_secret_and_keeps_the_rest() {
        let key = ["AKIA", "Q7XHZ2KD4LMNP3RT"].concat();
        let line = format!("AWS_ACCESS_KEY_ID={key} aws s3 cp model.pkl s3://bucket/");
        let out = redact(&line);
        assert!(!out.contains(&key), "{out}");
        assert_eq!(
            out,
            "AWS_ACCESS_KEY_ID=[redacted] aws s3 cp model.pkl s3://bucket/"
        );
        assert!(matches!(redact("pytest -q"), std::borrow::Cow::Borrowed(_)));
    }
}
