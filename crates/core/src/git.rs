//! The git state of a project: the commit, branch and dirty flag that every
//! run records. Read through git2 (libgit2, vendored); no `git` binary needed.

use std::path::{Path, PathBuf};

use crate::ledger::{GitState, STATE_DIR};

/// Reads the state of the repository containing `project_root`. A directory
/// outside any repository, or a repository without commits, has no commit;
/// that is not an error.
pub fn git_state(project_root: &Path) -> GitState {
    let Ok(repo) = git2::Repository::discover(project_root) else {
        return GitState::default();
    };
    let Ok(head) = repo.head() else {
        return GitState::default();
    };
    let commit = head.peel_to_commit().ok().map(|c| c.id().to_string());
    let branch = if head.is_branch() {
        head.shorthand().ok().map(str::to_owned)
    } else {
        None
    };
    GitState {
        commit,
        branch,
        dirty: is_dirty(&repo),
    }
}

fn is_dirty(repo: &git2::Repository) -> bool {
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(false)
        .include_ignored(false)
        .exclude_submodules(true);
    let Ok(statuses) = repo.statuses(Some(&mut opts)) else {
        // If status cannot be read, do not claim the tree is clean.
        return true;
    };
    statuses.iter().any(|entry| {
        // Our own state directory never makes a tree dirty.
        let path = entry.path_bytes();
        let own = path
            .split(|b| *b == b'/')
            .any(|part| part == STATE_DIR.as_bytes());
        !own && entry.status() != git2::Status::CURRENT
    })
}

/// Why the files changed since a revision could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ChangedError {
    /// The project is not inside a git repository.
    #[error("{path} is not inside a git repository, so there is nothing to compare `{rev}` with")]
    NotARepository {
        /// The project directory.
        path: PathBuf,
        /// The revision asked for.
        rev: String,
    },
    /// The revision does not name a commit.
    #[error("`{rev}` is not a revision of the repository at {repo}: {message}")]
    UnknownRevision {
        /// The revision asked for.
        rev: String,
        /// The repository.
        repo: PathBuf,
        /// What git said.
        message: String,
    },
    /// The diff failed.
    #[error("cannot compare the working tree with `{rev}`: {message}")]
    Diff {
        /// The revision.
        rev: String,
        /// What git said.
        message: String,
    },
}

/// The files that differ between revision `rev` and the working tree
/// (committed since, staged, modified or untracked, old and new names of
/// renames), as absolute paths. The state directory never counts.
pub fn changed_files(project_root: &Path, rev: &str) -> Result<Vec<PathBuf>, ChangedError> {
    let repo =
        git2::Repository::discover(project_root).map_err(|_| ChangedError::NotARepository {
            path: project_root.to_path_buf(),
            rev: rev.to_owned(),
        })?;
    let Some(workdir) = repo.workdir().map(Path::to_path_buf) else {
        return Err(ChangedError::NotARepository {
            path: project_root.to_path_buf(),
            rev: rev.to_owned(),
        });
    };
    let workdir = std::fs::canonicalize(&workdir).unwrap_or(workdir);
    let tree = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_tree())
        .map_err(|e| ChangedError::UnknownRevision {
            rev: rev.to_owned(),
            repo: workdir.clone(),
            message: e.message().to_owned(),
        })?;
    let mut opts = git2::DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_typechange(true);
    let diff = repo
        .diff_tree_to_workdir_with_index(Some(&tree), Some(&mut opts))
        .map_err(|e| ChangedError::Diff {
            rev: rev.to_owned(),
            message: e.message().to_owned(),
        })?;
    let mut files = std::collections::BTreeSet::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(p) = file.path() {
                let own = p.components().any(|c| c.as_os_str() == STATE_DIR);
                if !own {
                    files.insert(workdir.join(p));
                }
            }
        }
    }
    Ok(files.into_iter().collect())
}
