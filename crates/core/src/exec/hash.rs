//! Content hashes of a step's inputs and outputs, for caching and evidence.
//!
//! Inputs are glob patterns relative to the project root; outputs are paths
//! (files or directories). A hash covers each file's path and content, so a
//! rename changes it as much as an edit does.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobSetBuilder};

use crate::ledger::STATE_DIR;

/// The input hash of a step that declares no inputs.
pub(crate) const NO_INPUTS: &str = "none";

/// Why a hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
    #[error("input pattern `{0}` matches no file")]
    NoMatch(String),
    #[error("invalid input pattern `{pattern}`: {message}")]
    BadPattern { pattern: String, message: String },
    #[error("declared output `{0}` was not produced")]
    MissingOutput(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn has_glob_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// The directory below which a pattern can match: its leading components
/// without glob metacharacters.
fn literal_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    let parts: Vec<&str> = pattern.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if has_glob_meta(part) {
            break;
        }
        base.push(part);
    }
    base
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HashError + '_ {
    move |source| HashError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn hash_file(path: &Path) -> Result<blake3::Hash, HashError> {
    let mut hasher = blake3::Hasher::new();
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    hasher.update_reader(file).map_err(io_err(path))?;
    Ok(hasher.finalize())
}

fn is_state_or_vcs(name: &std::ffi::OsStr) -> bool {
    name == STATE_DIR || name == ".git"
}

/// Adds every file below `dir` (as `rel`) to `files`.
fn collect_dir(
    root: &Path,
    rel: &Path,
    filter: Option<&globset::GlobSet>,
    files: &mut BTreeMap<String, PathBuf>,
) -> Result<(), HashError> {
    let abs = root.join(rel);
    let walker = walkdir::WalkDir::new(&abs)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !is_state_or_vcs(e.file_name()));
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e.path().map_or_else(|| abs.clone(), Path::to_path_buf);
            HashError::Io {
                path,
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("filesystem loop")),
            }
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let below = entry.path().strip_prefix(&abs).unwrap_or(entry.path());
        let key = slash_path(&rel.join(below));
        if filter.is_none_or(|set| set.is_match(&key)) {
            files.insert(key, entry.path().to_path_buf());
        }
    }
    Ok(())
}

fn slash_path(p: &Path) -> String {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn digest(files: &BTreeMap<String, PathBuf>) -> Result<String, HashError> {
    let mut total = blake3::Hasher::new();
    for (key, path) in files {
        let h = hash_file(path)?;
        total.update(&(key.len() as u64).to_le_bytes());
        total.update(key.as_bytes());
        total.update(h.as_bytes());
    }
    Ok(total.finalize().to_hex().to_string())
}

/// Hashes the files the patterns match. Every pattern must match at least
/// one file: a pattern that matches nothing is almost always a typo, and
/// silently hashing nothing would make the step look unchanged forever.
pub(crate) fn hash_inputs(root: &Path, patterns: &[String]) -> Result<String, HashError> {
    if patterns.is_empty() {
        return Ok(NO_INPUTS.to_owned());
    }
    let mut files = BTreeMap::new();
    for pattern in patterns {
        let before = files.len();
        let trimmed = normalize_pattern(pattern);
        if !has_glob_meta(trimmed) {
            // A literal path: a file, or a directory taken whole.
            let rel = Path::new(trimmed);
            let abs = root.join(rel);
            match std::fs::metadata(&abs) {
                Ok(m) if m.is_dir() => collect_dir(root, rel, None, &mut files)?,
                Ok(_) => {
                    files.insert(slash_path(rel), abs);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&abs)(e)),
            }
        } else {
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .build()
                .map_err(|e| HashError::BadPattern {
                    pattern: pattern.clone(),
                    message: e.kind().to_string(),
                })?;
            let mut set = GlobSetBuilder::new();
            set.add(glob);
            let set = set.build().map_err(|e| HashError::BadPattern {
                pattern: pattern.clone(),
                message: e.kind().to_string(),
            })?;
            let base = literal_base(trimmed);
            if root.join(&base).is_dir() {
                collect_dir(root, &base, Some(&set), &mut files)?;
            }
        }
        if files.len() == before && !files.keys().any(|k| pattern_matches(pattern, k)) {
            return Err(HashError::NoMatch(pattern.clone()));
        }
    }
    digest(&files)
}

/// `./data/*.csv` and `data/*.csv/` mean `data/*.csv`: file keys carry no
/// `./` and no trailing slash.
fn normalize_pattern(pattern: &str) -> &str {
    let mut p = pattern.trim_end_matches('/');
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    p
}

/// Whether an already collected file also matches `pattern` (two patterns
/// may match the same files; the second then adds nothing new).
fn pattern_matches(pattern: &str, key: &str) -> bool {
    let trimmed = normalize_pattern(pattern);
    if !has_glob_meta(trimmed) {
        let lit = slash_path(Path::new(trimmed));
        return key == lit || key.starts_with(&format!("{lit}/"));
    }
    GlobBuilder::new(trimmed)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher().is_match(key))
        .unwrap_or(false)
}

/// Hashes the declared outputs; each must exist.
pub(crate) fn hash_outputs(root: &Path, outputs: &[String]) -> Result<Option<String>, HashError> {
    if outputs.is_empty() {
        return Ok(None);
    }
    let mut files = BTreeMap::new();
    for output in outputs {
        let rel = Path::new(output.trim_end_matches('/'));
        let abs = root.join(rel);
        match std::fs::metadata(&abs) {
            Ok(m) if m.is_dir() => collect_dir(root, rel, None, &mut files)?,
            Ok(_) => {
                files.insert(slash_path(rel), abs);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(HashError::MissingOutput(output.clone()));
            }
            Err(e) => return Err(io_err(&abs)(e)),
        }
    }
    digest(&files).map(Some)
}

/// `file` relative to `root` (both absolute), with `..` where it lies
/// outside, as `/`-separated text.
fn relative_to(root: &Path, file: &Path) -> String {
    let root: Vec<Component> = root.components().collect();
    let file: Vec<Component> = file.components().collect();
    let common = root.iter().zip(&file).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_owned(); root.len() - common];
    parts.extend(
        file[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// A pattern relative to the project root with `.` and inner `..` folded
/// away lexically (`src/../data/*.csv` is `data/*.csv`).
fn lexical(pattern: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." if out.last().is_some_and(|p| *p != "..") => {
                out.pop();
            }
            _ => out.push(part),
        }
    }
    out.join("/")
}

/// A step's input patterns, compiled once, answering whether they cover
/// given files.
pub(crate) struct InputMatcher {
    /// Literal paths (files or whole directories), lexically normalized.
    literals: Vec<String>,
    globs: Vec<globset::GlobMatcher>,
    /// An invalid pattern: it fails the step when it hashes its inputs, so
    /// it counts as covering everything and the step runs and says so.
    invalid: bool,
}

impl InputMatcher {
    pub(crate) fn new(patterns: &[String]) -> Self {
        let mut m = InputMatcher {
            literals: Vec::new(),
            globs: Vec::new(),
            invalid: false,
        };
        for pattern in patterns {
            let p = lexical(normalize_pattern(pattern));
            if !has_glob_meta(&p) {
                m.literals.push(p);
                continue;
            }
            match GlobBuilder::new(&p).literal_separator(true).build() {
                Ok(glob) => m.globs.push(glob.compile_matcher()),
                Err(_) => m.invalid = true,
            }
        }
        m
    }

    /// Whether the patterns cover any of `files` (as given by
    /// [`relative_paths`]): a literal covers that file or everything below
    /// that directory; a glob covers what it matches.
    pub(crate) fn touches(&self, files: &[String]) -> bool {
        if files.is_empty() {
            return false;
        }
        self.invalid
            || files.iter().any(|f| {
                self.literals.iter().any(|l| {
                    l.is_empty()
                        || f == l
                        || (f.starts_with(l.as_str()) && f.as_bytes().get(l.len()) == Some(&b'/'))
                }) || self.globs.iter().any(|g| g.is_match(f))
            })
    }
}

/// Absolute `files` relative to `root`, as input patterns are written.
pub(crate) fn relative_paths(root: &Path, files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| relative_to(root, f)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn inputs_hash_changes_with_content_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "src/a.rs", "a");
        write(root, "src/sub/b.rs", "b");
        write(root, "data/x.csv", "1,2");
        let pats = vec!["src/**/*.rs".to_owned(), "data/x.csv".to_owned()];
        let h1 = hash_inputs(root, &pats).unwrap();
        assert_eq!(h1, hash_inputs(root, &pats).unwrap());
        write(root, "src/sub/b.rs", "changed");
        let h2 = hash_inputs(root, &pats).unwrap();
        assert_ne!(h1, h2);
        std::fs::rename(root.join("src/a.rs"), root.join("src/c.rs")).unwrap();
        assert_ne!(h2, hash_inputs(root, &pats).unwrap());
        // a file the globs do not match does not count
        let h3 = hash_inputs(root, &pats).unwrap();
        write(root, "src/readme.md", "x");
        assert_eq!(h3, hash_inputs(root, &pats).unwrap());
    }

    #[test]
    fn single_star_does_not_cross_directories() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "src/sub/b.rs", "b");
        let err = hash_inputs(dir.path(), &["src/*.rs".to_owned()]).unwrap_err();
        assert_eq!(err.to_string(), "input pattern `src/*.rs` matches no file");
    }

    #[test]
    fn overlapping_patterns_are_fine_and_directories_count_whole() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "data/a.csv", "1");
        write(dir.path(), "data/deep/b.csv", "2");
        let pats = vec!["data".to_owned(), "data/*.csv".to_owned()];
        hash_inputs(dir.path(), &pats).unwrap();
        assert_eq!(literal_base("data/**/x.csv"), PathBuf::from("data"));
        assert_eq!(literal_base("*.csv"), PathBuf::new());
    }

    #[test]
    fn leading_dot_slash_is_the_same_pattern() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "data/a.csv", "1");
        let plain = hash_inputs(dir.path(), &["data/*.csv".to_owned()]).unwrap();
        assert_eq!(
            hash_inputs(dir.path(), &["./data/*.csv".to_owned()]).unwrap(),
            plain
        );
        assert_eq!(
            hash_inputs(dir.path(), &["./data/a.csv".to_owned()]).unwrap(),
            plain
        );
    }

    #[test]
    fn outputs_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "model.json", "{}");
        assert!(
            hash_outputs(dir.path(), &["model.json".to_owned()])
                .unwrap()
                .is_some()
        );
        let err = hash_outputs(dir.path(), &["metrics.json".to_owned()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "declared output `metrics.json` was not produced"
        );
        assert_eq!(hash_outputs(dir.path(), &[]).unwrap(), None);
    }

    #[test]
    fn input_matcher_literals_globs_and_paths_outside_the_project() {
        let root = Path::new("/repo/examples/iris");
        let changed = |p: &str| vec![PathBuf::from(p)];
        let touches = |patterns: &[&str], file: &str| {
            let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
            InputMatcher::new(&patterns).touches(&relative_paths(root, &changed(file)))
        };
        assert!(touches(
            &["data/iris.csv"],
            "/repo/examples/iris/data/iris.csv"
        ));
        assert!(touches(&["./data/"], "/repo/examples/iris/data/new/x.csv"));
        assert!(touches(&["src/**/*.rs"], "/repo/examples/iris/src/a/b.rs"));
        assert!(touches(&["../../Cargo.lock"], "/repo/Cargo.lock"));
        assert!(touches(
            &["src/../data/*.csv"],
            "/repo/examples/iris/data/a.csv"
        ));
        assert!(!touches(&["src/*.rs"], "/repo/examples/iris/src/a/b.rs"));
        assert!(!touches(
            &["data/iris.csv"],
            "/repo/examples/iris/data/iris.csv.bak"
        ));
        assert!(!touches(&["Cargo.lock"], "/repo/Cargo.lock"));
        assert!(!touches(&[], "/repo/examples/iris/x"));
    }
}
