//! The git state of a project: the commit, branch and dirty flag that every
//! run records. Read through git2 (libgit2, vendored); no `git` binary needed.

use std::path::Path;

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
