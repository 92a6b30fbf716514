//! The walk: which files of the tree the scan sees.
//!
//! It leaves out version-control, build, cache and dependency directories
//! by name, virtual environments (any directory holding a `pyvenv.cfg`),
//! and the directories git ignores when the tree is in a git work tree. It
//! never follows symbolic links. It reads no file; classifying and reading
//! are [`super::scan`]'s.

use std::io;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::ScanError;

/// Directories never walked, by name.
const SKIPPED_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    ".mlops",
    "target",
    "node_modules",
    "__pycache__",
    ".tox",
    ".nox",
    ".venv",
    "venv",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".ipynb_checkpoints",
    "site-packages",
    "dist",
    "build",
];

/// A regular file of the tree.
pub(super) struct WalkedFile {
    /// Relative to the root, `/`-separated.
    pub(super) rel: String,
    /// As opened.
    pub(super) path: PathBuf,
    /// Size in bytes.
    pub(super) len: u64,
}

/// What the walk found.
#[derive(Default)]
pub(super) struct Walk {
    /// Regular files, sorted by path.
    pub(super) files: Vec<WalkedFile>,
    /// Directories that could not be read.
    pub(super) notes: Vec<String>,
}

/// Git's ignore rules for the tree, when it is in a work tree.
struct GitIgnore {
    repo: git2::Repository,
    /// The root, relative to the work tree.
    prefix: PathBuf,
}

impl GitIgnore {
    fn open(root: &Path) -> Option<GitIgnore> {
        let repo = git2::Repository::discover(root).ok()?;
        let workdir = repo.workdir()?.canonicalize().ok()?;
        let root = root.canonicalize().ok()?;
        let prefix = root.strip_prefix(&workdir).ok()?.to_path_buf();
        Some(GitIgnore { repo, prefix })
    }

    /// Whether git ignores the directory `rel` (relative to the root). A
    /// git error counts as "not ignored": the walk then reads too much, not
    /// too little.
    fn ignores_dir(&self, rel: &str) -> bool {
        let path = self.prefix.join(rel);
        let mut repo_path = path.to_string_lossy().replace('\\', "/");
        repo_path.push('/');
        self.repo
            .status_should_ignore(Path::new(&repo_path))
            .unwrap_or(false)
    }
}

/// Walks `root`, which must be a readable directory.
pub(super) fn walk(root: &Path) -> Result<Walk, ScanError> {
    let git = GitIgnore::open(root);
    let mut walk = Walk::default();
    let mut entries = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = entries.next() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) if err.depth() == 0 => {
                return Err(ScanError::Unreadable {
                    path: root.to_path_buf(),
                    source: err
                        .into_io_error()
                        .unwrap_or_else(|| io::Error::other("walk failed")),
                });
            }
            Err(err) => {
                let path = err.path().map(|p| relative(root, p)).unwrap_or_default();
                walk.notes.push(format!("{path}: not read: {err}"));
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let file_type = entry.file_type();
        let rel = relative(root, entry.path());
        if file_type.is_dir() {
            if skips_dir(
                entry.path(),
                &entry.file_name().to_string_lossy(),
                &rel,
                git.as_ref(),
            ) {
                entries.skip_current_dir();
            }
            continue;
        }
        if !file_type.is_file() {
            continue;
        }
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        walk.files.push(WalkedFile {
            rel,
            path: entry.into_path(),
            len,
        });
    }
    Ok(walk)
}

fn skips_dir(path: &Path, name: &str, rel: &str, git: Option<&GitIgnore>) -> bool {
    SKIPPED_DIRS.contains(&name)
        || path.join("pyvenv.cfg").is_file()
        || git.is_some_and(|git| git.ignores_dir(rel))
}

/// `path` relative to `root`, `/`-separated.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut out = String::new();
    for component in rel.components() {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(&component.as_os_str().to_string_lossy());
    }
    out
}
