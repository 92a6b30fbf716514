//! The git half of the scan: the lines each commit reachable from `HEAD`
//! added, compared with its first parent (or with nothing, for a root
//! commit), oldest commit first so that a secret is attributed to the
//! commit that introduced it. Also answers whether git ignores a file of
//! the tree. `git2::Repository` is not `Sync`: all of this runs on the
//! scanning thread.

use std::collections::HashSet;
use std::path::Path;

use git2::{DiffOptions, ErrorCode, Patch, Repository, Sort};

use super::paths::{PathGlobs, in_skipped_dir, slash_path};
use super::rules::{self, FileClass};
use super::{RawFinding, ScanConfig, SecretScanError};

/// The repository the scan root is in.
pub(super) struct RepoView {
    repo: Repository,
    /// The scan root relative to the work tree, `/`-separated, ending in
    /// `/` unless empty.
    prefix: String,
    /// Paths in the index, relative to the work tree: tracked files are
    /// scanned even when an ignore rule matches them.
    tracked: HashSet<String>,
}

/// What the history scan found.
#[derive(Default)]
pub(super) struct HistoryScan {
    pub(super) scanned: bool,
    pub(super) commits: usize,
    pub(super) changes: usize,
    pub(super) truncated: bool,
    pub(super) notes: Vec<String>,
    pub(super) findings: Vec<RawFinding>,
}

impl RepoView {
    /// The work tree `root` is in, or `None` when it is in none.
    pub(super) fn discover(root: &Path) -> Result<Option<RepoView>, SecretScanError> {
        let git_error = |source| SecretScanError::Git {
            path: root.to_path_buf(),
            source,
        };
        let repo = match Repository::discover(root) {
            Ok(repo) => repo,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(git_error(e)),
        };
        let Some(workdir) = repo.workdir() else {
            return Ok(None);
        };
        let canonical = |p: &Path| {
            p.canonicalize().map_err(|source| SecretScanError::Root {
                path: p.to_path_buf(),
                source,
            })
        };
        let workdir = canonical(workdir)?;
        let root = canonical(root)?;
        let Ok(relative) = root.strip_prefix(&workdir) else {
            return Ok(None);
        };
        let mut prefix = slash_path(relative);
        if !prefix.is_empty() {
            prefix.push('/');
        }
        let index = repo.index().map_err(git_error)?;
        let tracked = index
            .iter()
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect();
        Ok(Some(RepoView {
            repo,
            prefix,
            tracked,
        }))
    }

    /// Whether git ignores an untracked file (path relative to the root).
    pub(super) fn is_ignored_file(&self, rel: &str) -> bool {
        let path = format!("{}{rel}", self.prefix);
        !self.tracked.contains(&path) && self.repo.is_path_ignored(&path).unwrap_or(false)
    }

    /// Whether git ignores a directory holding no tracked file.
    pub(super) fn is_ignored_dir(&self, rel: &str) -> bool {
        let path = format!("{}{rel}", self.prefix);
        if !self.repo.is_path_ignored(&path).unwrap_or(false) {
            return false;
        }
        let inside = format!("{path}/");
        !self.tracked.iter().any(|t| t.starts_with(&inside))
    }

    /// Scans the lines added by the newest `config.max_commits` commits.
    pub(super) fn scan_history(
        &self,
        root: &Path,
        exclude: &PathGlobs,
        config: &ScanConfig,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<HistoryScan, SecretScanError> {
        let git_error = |source| SecretScanError::Git {
            path: root.to_path_buf(),
            source,
        };
        let repo = &self.repo;
        let mut out = HistoryScan::default();
        // `git init` and nothing committed: libgit2 reports the unborn
        // branch in more than one way (`UnbornBranch`, `NotFound`, or a
        // reference error naming `refs/heads/master`), so ask directly.
        if repo.is_empty().unwrap_or(false) {
            out.notes
                .push("the repository has no commits yet: no history to scan".to_owned());
            return Ok(out);
        }
        let mut walk = repo.revwalk().map_err(git_error)?;
        if let Err(e) = walk.push_head() {
            if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) {
                out.notes
                    .push("the repository has no commits yet: no history to scan".to_owned());
                return Ok(out);
            }
            return Err(git_error(e));
        }
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
            .map_err(git_error)?;
        let mut commits = Vec::new();
        for oid in walk {
            let oid = oid.map_err(git_error)?;
            if commits.len() >= config.max_commits {
                out.truncated = true;
                out.notes.push(format!(
                    "the history has more than {} commits: only the newest {} were scanned",
                    config.max_commits, config.max_commits
                ));
                break;
            }
            commits.push(oid);
        }
        commits.reverse();

        let mut options = DiffOptions::new();
        options
            .context_lines(0)
            .ignore_submodules(true)
            .max_size(i64::try_from(config.max_file_bytes).unwrap_or(i64::MAX));
        for oid in commits {
            if cancelled() {
                return Err(SecretScanError::Cancelled {
                    path: root.to_path_buf(),
                });
            }
            let commit = repo.find_commit(oid).map_err(git_error)?;
            let tree = commit.tree().map_err(git_error)?;
            let parent = match commit.parent_count() {
                0 => None,
                _ => Some(commit.parent(0).and_then(|p| p.tree()).map_err(git_error)?),
            };
            let diff = repo
                .diff_tree_to_tree(parent.as_ref(), Some(&tree), Some(&mut options))
                .map_err(git_error)?;
            let commit_id = oid.to_string();
            for index in 0..diff.deltas().len() {
                let Some(path) = diff
                    .get_delta(index)
                    .and_then(|d| d.new_file().path().map(slash_path))
                else {
                    continue;
                };
                let Some(rel) = path.strip_prefix(self.prefix.as_str()) else {
                    continue;
                };
                if in_skipped_dir(rel) || exclude.is_match(rel) {
                    continue;
                }
                let Some(patch) = Patch::from_diff(&diff, index).map_err(git_error)? else {
                    continue;
                };
                if patch.delta().new_file().is_binary() || patch.delta().flags().is_binary() {
                    continue;
                }
                let mut text = String::new();
                let mut numbers = Vec::new();
                for hunk in 0..patch.num_hunks() {
                    let lines = patch.num_lines_in_hunk(hunk).map_err(git_error)?;
                    for line in 0..lines {
                        let line = patch.line_in_hunk(hunk, line).map_err(git_error)?;
                        if line.origin() != '+' {
                            continue;
                        }
                        let Some(number) = line.new_lineno() else {
                            continue;
                        };
                        let content = String::from_utf8_lossy(line.content());
                        text.push_str(content.trim_end_matches('\n'));
                        text.push('\n');
                        numbers.push(number as usize);
                    }
                }
                if numbers.is_empty() {
                    continue;
                }
                out.changes += 1;
                for hit in rules::scan_text(&text, FileClass::of(rel)) {
                    let Some(&line) = numbers.get(hit.line) else {
                        continue;
                    };
                    out.findings.push(RawFinding {
                        rule: hit.rule,
                        file: rel.to_owned(),
                        line,
                        commit: Some(commit_id.clone()),
                        secret: hit.secret,
                        marked: hit.marked,
                    });
                }
            }
            out.commits += 1;
        }
        out.scanned = true;
        Ok(out)
    }
}
