//! What a promotion publishes, once the candidate is production: its
//! release version (semver, [`crate::version`]), an annotated git tag, and
//! release notes ([`crate::notes`]) — and the record that
//! `mlops release notes [VERSION]` reads them back from.
//!
//! - The previous release is the higher of the model's newest release tag
//!   on HEAD's history and the last version recorded here (a project that
//!   is not a git repository still gets versions).
//! - The commits are those since that tag which touch the project's
//!   directory (a project in a subdirectory of a larger repository lists
//!   its own commits, not the repository's).
//! - Tagging is skipped outside a git repository or with `[release] tag =
//!   false`; a tag that cannot be made is reported, never fatal: the
//!   promotion happened.
//! - The record is `.mlops/release/<model>/releases.json` (every
//!   publication, oldest first) with the notes beside it in
//!   `.mlops/release/<model>/notes/<version>.md`.
//!
//! Promoting a version that was already published (a second promotion of
//! the same registry version) publishes nothing new and returns the first
//! publication.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mlops_core::registry::ModelVersion;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::notes::{self, AnalysisSummary, NotesContext, NotesInput, NotesTemplate};
use crate::rollout::ReleaseEvidence;
use crate::settings::ReleaseSettings;
use crate::version::git::{self, CommitInfo, GitError, TagOutcome};
use crate::version::{self, VersionPolicy};

/// The most commits release notes list (the rest are counted).
const MAX_COMMITS: usize = 200;

/// One published release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Publication {
    /// The model.
    pub model: String,
    /// The registry version released.
    pub number: i64,
    /// The release version (semver, with `model.number` as build
    /// metadata).
    pub version: String,
    /// Why that version (the bump and the commit that asked for it).
    pub version_reason: String,
    /// The git tag, when one was made (or already there).
    pub tag: Option<String>,
    /// What happened to the tag: `created`, `existed`, or why there is
    /// none.
    pub tag_status: String,
    /// The notes, relative to the project.
    pub notes: PathBuf,
    /// The commits the notes list.
    pub commits: usize,
    /// When (RFC 3339).
    pub at: String,
}

/// A publication that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The versioning policy or a version computation.
    #[error("release version: {0}")]
    Version(#[from] version::VersionError),
    /// Reading the repository's history.
    #[error("release history: {0}")]
    Git(#[from] GitError),
    /// The notes template or its rendering.
    #[error("{0}")]
    Notes(#[from] notes::NotesError),
    /// The record or the notes file.
    #[error("{path}: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

fn io(path: &Path, e: impl std::fmt::Display) -> PublishError {
    PublishError::Io {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

/// Where a model's publications are recorded.
pub fn record_path(state_dir: &Path, model: &str) -> PathBuf {
    state_dir.join("release").join(model).join("releases.json")
}

/// Every publication of `model`, oldest first.
pub fn publications(state_dir: &Path, model: &str) -> Result<Vec<Publication>, PublishError> {
    let path = record_path(state_dir, model);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(&path, e)),
    }
}

/// The publication `which` names (a release version, with or without its
/// build metadata, or a registry number), else the latest.
pub fn find<'a>(all: &'a [Publication], which: Option<&str>) -> Option<&'a Publication> {
    match which {
        None => all.last(),
        Some(w) => {
            let w = w.trim_start_matches('v');
            all.iter().rev().find(|p| {
                p.version == w
                    || p.version.split('+').next() == Some(w)
                    || w.parse::<i64>().is_ok_and(|n| n == p.number)
            })
        }
    }
}

/// What [`publish`] needs.
#[derive(Debug, Clone)]
pub struct PublishInput<'a> {
    /// The project's root.
    pub root: &'a Path,
    /// Its state directory (`.mlops`).
    pub state_dir: &'a Path,
    /// The project's name.
    pub project: &'a str,
    /// `[release]`.
    pub settings: &'a ReleaseSettings,
    /// The version promoted.
    pub candidate: &'a ModelVersion,
    /// The version it replaced in production.
    pub previous: Option<&'a ModelVersion>,
    /// The release step's evidence, when a step promoted.
    pub evidence: Option<&'a ReleaseEvidence>,
    /// Who promoted (in the tag's message).
    pub actor: &'a str,
}

/// Publishes a promotion: version, tag, notes, record. Blocking (git, files):
/// async callers use `spawn_blocking`.
pub fn publish(input: &PublishInput<'_>) -> Result<Publication, PublishError> {
    let model = &input.candidate.model;
    let recorded = publications(input.state_dir, model)?;
    if let Some(done) = recorded.iter().find(|p| p.number == input.candidate.number) {
        return Ok(done.clone());
    }
    let policy: &VersionPolicy = &input.settings.versioning;
    let pattern = policy.tag_pattern(model)?;
    let (last_tag, commits, in_git) = match git::commits_since_last_release(input.root, &pattern) {
        Ok(h) => (h.last_tag.map(|(_, v)| v), h.commits, true),
        Err(GitError::NotARepository { .. } | GitError::NoCommits { .. }) => {
            (None, Vec::new(), false)
        }
        Err(e) => return Err(e.into()),
    };
    let commits = own_commits(input.root, commits);
    let last_recorded = recorded
        .iter()
        .filter_map(|p| p.version.parse::<Version>().ok())
        .max();
    let previous_version = match (last_tag, last_recorded) {
        (Some(a), Some(b)) => Some(if a > b { a } else { b }),
        (a, b) => a.or(b),
    };
    let planned = version::next_version(
        previous_version.as_ref(),
        &commits,
        model,
        input.candidate.number,
        policy,
    )?;
    let tag_name = pattern.name(&planned.version);
    let (tag, tag_status) = if !input.settings.tag {
        (None, "not tagged: `[release] tag = false`".to_owned())
    } else if !in_git {
        (
            None,
            "not tagged: the project is not in a git repository with commits".to_owned(),
        )
    } else {
        let message = format!(
            "{model} {}: {} ({}), promoted by {}",
            planned.version,
            input.candidate.id(),
            input.candidate.digest,
            input.actor
        );
        match git::create_tag(input.root, &tag_name, &message) {
            Ok(TagOutcome::Created { .. }) => (Some(tag_name.clone()), "created".to_owned()),
            Ok(TagOutcome::Existed { .. }) => (Some(tag_name.clone()), "existed".to_owned()),
            Err(e) => (None, format!("not tagged: {e}")),
        }
    };
    let template = input
        .settings
        .notes_template
        .as_ref()
        .map(|p| NotesTemplate::read(&input.root.join(p)))
        .transpose()?;
    let summary = input.evidence.map(AnalysisSummary::from_evidence);
    let listed = &commits[..commits.len().min(MAX_COMMITS)];
    let context = NotesContext::new(NotesInput {
        project: input.project,
        version: &planned.version,
        version_reason: Some(&planned.reason),
        tag: tag.as_deref(),
        previous_version: previous_version.as_ref(),
        candidate: input.candidate,
        previous: input.previous,
        commits: listed,
        analysis: summary.as_ref(),
        date: SystemTime::now(),
    });
    let mut text = notes::render(template.as_ref(), &context)?;
    if commits.len() > listed.len() {
        text.push_str(&format!(
            "\n({} more commits are not listed.)\n",
            commits.len() - listed.len()
        ));
    }
    let dir = input.state_dir.join("release").join(model).join("notes");
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let notes_file = dir.join(format!("{}.md", planned.version));
    crate::service::write_atomic(&notes_file, text.as_bytes()).map_err(|e| io(&notes_file, e))?;
    let publication = Publication {
        model: model.clone(),
        number: input.candidate.number,
        version: planned.version.to_string(),
        version_reason: planned.reason,
        tag,
        tag_status,
        notes: notes_file
            .strip_prefix(input.root)
            .map_or_else(|_| notes_file.clone(), Path::to_path_buf),
        commits: commits.len(),
        at: crate::state::now(),
    };
    let mut all = recorded;
    all.push(publication.clone());
    let path = record_path(input.state_dir, model);
    let mut json = serde_json::to_vec_pretty(&all).map_err(|e| io(&path, e))?;
    json.push(b'\n');
    crate::service::write_atomic(&path, &json).map_err(|e| io(&path, e))?;
    Ok(publication)
}

/// The commits that touch the project's directory, when the project is a
/// subdirectory of its repository (all of them otherwise).
fn own_commits(root: &Path, commits: Vec<CommitInfo>) -> Vec<CommitInfo> {
    let prefix = git2::Repository::discover(root).ok().and_then(|repo| {
        let workdir = std::fs::canonicalize(repo.workdir()?).ok()?;
        let root = std::fs::canonicalize(root).ok()?;
        let rel = root
            .strip_prefix(&workdir)
            .ok()?
            .to_string_lossy()
            .into_owned();
        (!rel.is_empty()).then(|| format!("{}/", rel.trim_end_matches('/')))
    });
    match prefix {
        None => commits,
        Some(prefix) => commits
            .into_iter()
            .filter(|c| c.paths.iter().any(|p| p.starts_with(&prefix)))
            .collect(),
    }
}

/// [`publish`] after a promotion, from async code: never fails the
/// promotion (which happened). Returns the publication, if one was made,
/// and the lines to log.
pub async fn after_promotion(
    target: &crate::rollout::ReleaseTarget,
    settings: &ReleaseSettings,
    candidate: &ModelVersion,
    previous: Option<i64>,
    evidence: Option<&ReleaseEvidence>,
) -> (Option<Publication>, Vec<String>) {
    let previous = match previous {
        Some(n) => target.version(n).await.ok(),
        None => None,
    };
    let (root, state_dir, project, settings, candidate, evidence, actor) = (
        target.scope.root.clone(),
        target.scope.state_dir(),
        target.scope.project.clone(),
        settings.clone(),
        candidate.clone(),
        evidence.cloned(),
        target.actor.clone(),
    );
    let published = tokio::task::spawn_blocking(move || {
        publish(&PublishInput {
            root: &root,
            state_dir: &state_dir,
            project: &project,
            settings: &settings,
            candidate: &candidate,
            previous: previous.as_ref(),
            evidence: evidence.as_ref(),
            actor: &actor,
        })
    })
    .await;
    match published {
        Ok(Ok(p)) => {
            let lines = vec![
                format!("release {} ({})", p.version, p.version_reason),
                match &p.tag {
                    Some(tag) => format!("git tag {tag}: {}", p.tag_status),
                    None => p.tag_status.clone(),
                },
                format!(
                    "release notes: {} ({} commits); `mlops release notes` prints them",
                    p.notes.display(),
                    p.commits
                ),
            ];
            (Some(p), lines)
        }
        Ok(Err(e)) => (None, vec![format!("no release version, tag or notes: {e}")]),
        Err(e) => (None, vec![format!("no release version, tag or notes: {e}")]),
    }
}
