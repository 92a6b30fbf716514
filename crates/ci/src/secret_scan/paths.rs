//! Paths as the scanner sees them: relative to the scan root, `/`-separated,
//! matched by gitignore-like globs, with the directories it never enters.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Directories skipped in the tree and in the history: version control,
/// the engine's own state, build output, dependencies and caches.
pub(super) const SKIPPED_DIRS: &[&str] = &[
    ".git",
    ".mlops",
    "target",
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
];

/// Whether any directory of a relative path is one the scanner skips.
pub(super) fn in_skipped_dir(path: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    parts.iter().any(|p| SKIPPED_DIRS.contains(p))
}

/// A relative path as a `/`-separated string.
pub(super) fn slash_path(path: &Path) -> String {
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

/// Glob patterns over relative paths, in the spirit of `.gitignore`: `*`
/// and `?` stay within one path component and `**` crosses them; a pattern
/// without `/` matches a name at any depth, and one with `/` is anchored at
/// the scan root (a leading `/` only anchors); a pattern also matches
/// everything under a directory it names.
#[derive(Debug, Clone)]
pub(crate) struct PathGlobs {
    set: GlobSet,
}

impl PathGlobs {
    /// Compiles patterns; on error, the offending pattern and why.
    pub(crate) fn new<'p>(
        patterns: impl IntoIterator<Item = &'p str>,
    ) -> Result<PathGlobs, (String, globset::Error)> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let trimmed = pattern.trim_end_matches('/');
            let (anchored, body) = match trimmed.strip_prefix('/') {
                Some(rest) => (true, rest),
                None => (trimmed.contains('/'), trimmed),
            };
            let base = if anchored {
                body.to_owned()
            } else {
                format!("**/{body}")
            };
            for glob in [base.clone(), format!("{base}/**")] {
                let compiled = GlobBuilder::new(&glob)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| (pattern.to_owned(), e))?;
                builder.add(compiled);
            }
        }
        let set = builder.build().map_err(|e| (String::from("(set)"), e))?;
        Ok(PathGlobs { set })
    }

    /// Whether a relative, `/`-separated path matches.
    pub(crate) fn is_match(&self, path: &str) -> bool {
        self.set.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        PathGlobs::new([pattern]).unwrap().is_match(path)
    }

    #[test]
    fn globs_follow_gitignore_conventions() {
        assert!(matches("*.pem", "a/b/key.pem"));
        assert!(matches("fixtures", "tests/fixtures/x.env"));
        assert!(matches("tests/fixtures/**", "tests/fixtures/a/x.env"));
        assert!(matches("tests/*", "tests/x.env"));
        // As in `.gitignore`, a matched directory takes its contents along.
        assert!(matches("tests/*", "tests/a/x.env"));
        assert!(!matches("tests/*.env", "src/tests/x.env"));
        assert!(matches("/notes.txt", "notes.txt"));
        assert!(!matches("/notes.txt", "docs/notes.txt"));
        assert!(matches("docs/", "docs/a/b.md"));
    }

    #[test]
    fn skipped_dirs() {
        assert!(in_skipped_dir("node_modules/x/y.js"));
        assert!(in_skipped_dir("a/.venv/lib/x.py"));
        assert!(!in_skipped_dir("target"));
        assert!(!in_skipped_dir("src/target.rs"));
    }
}
