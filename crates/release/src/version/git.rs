//! A release's git side: the last release of a model (its tag), the
//! commits since, and the annotated tag of a new release.
//!
//! Everything here is blocking: [`git2::Repository`] is not `Sync`, so an
//! async caller runs these functions in `tokio::task::spawn_blocking`.
//! The repository is found from `repo_dir` upward (a project may be a
//! directory of a larger repository); paths of commits are from the
//! repository's root.
//!
//! The tagger of a release tag is the repository's configured
//! `user.name` and `user.email`, or `mlops <mlops@localhost>` when they
//! are unset (a CI machine often has neither).

use std::path::{Path, PathBuf};

use git2::{DiffOptions, ErrorCode, ObjectType, Oid, Repository, Signature, Sort};
use semver::Version;
use serde::Serialize;

use super::TagPattern;

/// The tagger when the repository's configuration names none.
pub const FALLBACK_TAGGER: (&str, &str) = ("mlops", "mlops@localhost");

/// One commit, as versions and notes read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    /// The full id, hex.
    pub id: String,
    /// The first 7 hex digits of the id.
    pub short: String,
    /// The subject line.
    pub summary: String,
    /// The message after the subject, trimmed; empty without one.
    pub body: String,
    /// The author's name.
    pub author: String,
    /// The author's time, seconds since the Unix epoch.
    pub time: i64,
    /// The files it added, changed or deleted (against its first parent),
    /// from the repository's root, `/`-separated.
    pub paths: Vec<String>,
}

/// The commits since a model's last release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct History {
    /// The last release's tag and version: the highest version among the
    /// model's release tags on HEAD's history (none: no release yet).
    pub last_tag: Option<(String, Version)>,
    /// The commits on HEAD's history and not on the last release's,
    /// newest first (every commit when there is no release yet).
    pub commits: Vec<CommitInfo>,
}

/// What [`create_tag`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum TagOutcome {
    /// The tag was created on HEAD.
    Created {
        /// The tag's name.
        name: String,
        /// The commit it names.
        commit: String,
    },
    /// A tag of that name already named HEAD (a rerun): left as it was.
    Existed {
        /// The tag's name.
        name: String,
        /// The commit it names.
        commit: String,
    },
}

/// A git failure.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// No repository at or above the directory.
    #[error("not a git repository: {}", path.display())]
    NotARepository {
        /// The directory searched from.
        path: PathBuf,
    },
    /// The repository has no commit to tag or read.
    #[error("the git repository at {} has no commits", path.display())]
    NoCommits {
        /// The repository's directory.
        path: PathBuf,
    },
    /// A tag name git refuses.
    #[error("`{name}` is not a valid git tag name")]
    InvalidTagName {
        /// The name.
        name: String,
    },
    /// The tag exists on another commit.
    #[error("tag `{name}` already names commit {existing}, not HEAD ({head})")]
    TagConflict {
        /// The tag's name.
        name: String,
        /// The commit it names.
        existing: String,
        /// HEAD's commit.
        head: String,
    },
    /// Any other failure of git.
    #[error("git failed to {action} in {}", path.display())]
    Git {
        /// What was being done.
        action: &'static str,
        /// The repository's directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: git2::Error,
    },
}

fn open(repo_dir: &Path) -> Result<Repository, GitError> {
    Repository::discover(repo_dir).map_err(|source| match source.code() {
        ErrorCode::NotFound => GitError::NotARepository {
            path: repo_dir.to_owned(),
        },
        _ => GitError::Git {
            action: "open the repository",
            path: repo_dir.to_owned(),
            source,
        },
    })
}

fn repo_path(repo: &Repository) -> PathBuf {
    repo.workdir().unwrap_or_else(|| repo.path()).to_owned()
}

fn git_err(repo: &Repository, action: &'static str) -> impl FnOnce(git2::Error) -> GitError {
    let path = repo_path(repo);
    move |source| GitError::Git {
        action,
        path,
        source,
    }
}

/// HEAD's commit id; a typed error for an unborn HEAD.
fn head_commit(repo: &Repository) -> Result<Oid, GitError> {
    match repo.head() {
        Ok(head) => head
            .peel_to_commit()
            .map(|c| c.id())
            .map_err(git_err(repo, "read HEAD's commit")),
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
            Err(GitError::NoCommits {
                path: repo_path(repo),
            })
        }
        Err(e) => Err(git_err(repo, "read HEAD")(e)),
    }
}

/// The commit a tag reference names (through an annotated tag).
fn tag_commit(repo: &Repository, name: &str) -> Result<Option<Oid>, GitError> {
    match repo.find_reference(&format!("refs/tags/{name}")) {
        Ok(reference) => reference
            .peel_to_commit()
            .map(|c| Some(c.id()))
            .map_err(git_err(repo, "read a tag's commit")),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(git_err(repo, "look up a tag")(e)),
    }
}

fn commit_info(repo: &Repository, oid: Oid) -> Result<CommitInfo, GitError> {
    let commit = repo
        .find_commit(oid)
        .map_err(git_err(repo, "read a commit"))?;
    let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
    let (summary, body) = match message.split_once('\n') {
        Some((s, b)) => (s.trim().to_owned(), b.trim().to_owned()),
        None => (message.trim().to_owned(), String::new()),
    };
    let author = String::from_utf8_lossy(commit.author().name_bytes()).into_owned();
    let tree = commit
        .tree()
        .map_err(git_err(repo, "read a commit's tree"))?;
    let parent_tree = match commit.parent(0) {
        Ok(parent) => Some(
            parent
                .tree()
                .map_err(git_err(repo, "read a parent's tree"))?,
        ),
        Err(_) => None,
    };
    let diff = repo
        .diff_tree_to_tree(
            parent_tree.as_ref(),
            Some(&tree),
            Some(DiffOptions::new().ignore_submodules(true)),
        )
        .map_err(git_err(repo, "diff a commit"))?;
    let mut paths: Vec<String> = diff
        .deltas()
        .flat_map(|d| [d.old_file().path(), d.new_file().path()])
        .flatten()
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .collect();
    paths.sort();
    paths.dedup();
    let id = oid.to_string();
    Ok(CommitInfo {
        short: id.chars().take(7).collect(),
        id,
        summary,
        body,
        author,
        time: commit.time().seconds(),
        paths,
    })
}

/// The commits on HEAD's history since the last release tag of `pattern`
/// (see [`History`]). Tags that do not parse as a release of the model
/// are ignored, as are release tags not on HEAD's history (another
/// branch's).
///
/// # Errors
///
/// [`GitError::NotARepository`], [`GitError::NoCommits`], or git failing
/// to read.
pub fn commits_since_last_release(
    repo_dir: &Path,
    pattern: &TagPattern,
) -> Result<History, GitError> {
    let repo = open(repo_dir)?;
    let head = head_commit(&repo)?;
    let names = repo
        .tag_names(None)
        .map_err(git_err(&repo, "list the tags"))?;
    let mut last: Option<(String, Version, Oid)> = None;
    for name in names.iter().flatten().flatten() {
        let Some(version) = pattern.parse(name) else {
            continue;
        };
        if last
            .as_ref()
            .is_some_and(|(_, v, _)| v.cmp_precedence(&version).is_ge())
        {
            continue;
        }
        let Some(commit) = tag_commit(&repo, name)? else {
            continue;
        };
        let on_history = commit == head
            || repo
                .graph_descendant_of(head, commit)
                .map_err(git_err(&repo, "compare commits"))?;
        if on_history {
            last = Some((name.to_owned(), version, commit));
        }
    }
    let mut walk = repo.revwalk().map_err(git_err(&repo, "walk the history"))?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
        .map_err(git_err(&repo, "walk the history"))?;
    walk.push(head)
        .map_err(git_err(&repo, "walk the history"))?;
    if let Some((_, _, commit)) = &last {
        walk.hide(*commit)
            .map_err(git_err(&repo, "walk the history"))?;
    }
    let mut commits = Vec::new();
    for oid in walk {
        let oid = oid.map_err(git_err(&repo, "walk the history"))?;
        commits.push(commit_info(&repo, oid)?);
    }
    Ok(History {
        last_tag: last.map(|(name, version, _)| (name, version)),
        commits,
    })
}

/// Creates the annotated tag `name` with `message` on HEAD. A tag of that
/// name already on HEAD is success ([`TagOutcome::Existed`], so a rerun
/// passes); on another commit it is [`GitError::TagConflict`]. The
/// tagger: see the module docs.
///
/// # Errors
///
/// [`GitError::NotARepository`], [`GitError::NoCommits`],
/// [`GitError::InvalidTagName`], [`GitError::TagConflict`], or git failing
/// to write.
pub fn create_tag(repo_dir: &Path, name: &str, message: &str) -> Result<TagOutcome, GitError> {
    if !git2::Tag::is_valid_name(name) {
        return Err(GitError::InvalidTagName {
            name: name.to_owned(),
        });
    }
    let repo = open(repo_dir)?;
    let head = head_commit(&repo)?;
    let existing = |repo: &Repository| -> Result<Option<TagOutcome>, GitError> {
        match tag_commit(repo, name)? {
            None => Ok(None),
            Some(commit) if commit == head => Ok(Some(TagOutcome::Existed {
                name: name.to_owned(),
                commit: commit.to_string(),
            })),
            Some(commit) => Err(GitError::TagConflict {
                name: name.to_owned(),
                existing: commit.to_string(),
                head: head.to_string(),
            }),
        }
    };
    if let Some(outcome) = existing(&repo)? {
        return Ok(outcome);
    }
    let tagger = match repo.signature() {
        Ok(signature) => signature,
        Err(_) => Signature::now(FALLBACK_TAGGER.0, FALLBACK_TAGGER.1)
            .map_err(git_err(&repo, "make the tagger's signature"))?,
    };
    let target = repo
        .find_object(head, Some(ObjectType::Commit))
        .map_err(git_err(&repo, "read HEAD's commit"))?;
    let mut message = message.to_owned();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    match repo.tag(name, &target, &tagger, &message, false) {
        Ok(_) => Ok(TagOutcome::Created {
            name: name.to_owned(),
            commit: head.to_string(),
        }),
        // Another process tagged between the look-up and now.
        Err(e) if e.code() == ErrorCode::Exists => match existing(&repo)? {
            Some(outcome) => Ok(outcome),
            None => Err(git_err(&repo, "create a tag")(e)),
        },
        Err(e) => Err(git_err(&repo, "create a tag")(e)),
    }
}
