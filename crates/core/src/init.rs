//! `mlops init`: a starter `mlops.toml` written from what a directory holds.
//!
//! It recognises Rust projects (Cargo.toml, Cargo.lock, tests) and Python
//! projects (requirements files — hash-pinned or not —, pyproject.toml,
//! uv.lock, poetry.lock, pytest tests) and writes the first two stages: the
//! environment (iac) and the tests (ci). Later stages need decisions only the
//! team can make, so the file says where to add them instead of guessing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::ledger::STATE_DIR;
use crate::manifest::MANIFEST_FILE;

/// Why no starter manifest was written.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The directory does not exist.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// A manifest is already there.
    #[error("{0} already exists; pass --force to overwrite it")]
    Exists(PathBuf),
    /// Nothing recognisable.
    #[error(
        "cannot tell how to build {0}: found no Cargo.toml, requirements*.txt, pyproject.toml, uv.lock or poetry.lock; write mlops.toml by hand (see docs/manifest.md)"
    )]
    Unrecognised(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A starter manifest and what it was based on.
#[derive(Debug, Clone)]
pub struct Scaffold {
    /// The manifest text.
    pub manifest: String,
    /// What was found, one line each (for the user).
    pub findings: Vec<String>,
    /// Lines to add to `.gitignore`.
    pub gitignore: Vec<String>,
}

fn exists(dir: &Path, rel: &str) -> bool {
    dir.join(rel).exists()
}

fn project_name(dir: &Path) -> String {
    let raw = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "project".to_owned());
    raw.replace('"', "")
}

fn has_python_tests(dir: &Path) -> bool {
    let mut found = false;
    for entry in walkdir::WalkDir::new(dir)
        .max_depth(4)
        .into_iter()
        .filter_entry(|e| {
            let n = e.file_name().to_string_lossy();
            e.depth() == 0
                || !(n.starts_with('.') || n == "node_modules" || n == "target" || n == "venv")
        })
        .flatten()
    {
        let n = entry.file_name().to_string_lossy();
        if entry.file_type().is_file()
            && n.ends_with(".py")
            && (n.starts_with("test_") || n.ends_with("_test.py"))
        {
            found = true;
            break;
        }
    }
    found
}

/// The requirements file to install from: hash-pinned lock files first.
fn requirements_file(dir: &Path) -> Option<&'static str> {
    [
        "requirements.lock",
        "requirements.txt",
        "requirements-dev.txt",
    ]
    .into_iter()
    .find(|f| exists(dir, f))
}

fn is_hash_pinned(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains("--hash="))
}

/// Looks at `dir` and proposes a manifest that uses only `run` steps.
pub fn scaffold(dir: &Path) -> Result<Scaffold, InitError> {
    scaffold_with(dir, &crate::KindRegistry::new())
}

/// Looks at `dir` and proposes a manifest, using the built-in kinds of
/// `kinds` where they fit: pytest through `tests` (JUnit ingestion), and a
/// `secret-scan` of every project.
pub fn scaffold_with(dir: &Path, kinds: &crate::KindRegistry) -> Result<Scaffold, InitError> {
    if !dir.is_dir() {
        return Err(InitError::NotADirectory(dir.to_path_buf()));
    }
    let mut findings = Vec::new();
    let mut iac = String::new();
    let mut ci = String::new();
    let mut gitignore = vec![format!("{STATE_DIR}/")];

    if exists(dir, "Cargo.toml") {
        findings.push("Rust project (Cargo.toml)".to_owned());
        let locked = if exists(dir, "Cargo.lock") {
            findings.push("dependencies pinned by Cargo.lock".to_owned());
            " --locked"
        } else {
            findings.push("no Cargo.lock: builds are not reproducible; commit one".to_owned());
            ""
        };
        writeln!(
            iac,
            "[iac.steps.build]\nrun = \"cargo build{locked}\"\ntimeout = \"30m\"\n"
        )
        .ok();
        writeln!(
            ci,
            "[ci.steps.test]\nrun = \"cargo test{locked}\"\ntimeout = \"30m\"\n"
        )
        .ok();
        gitignore.push("/target".to_owned());
    } else {
        let requirements = requirements_file(dir);
        let python = requirements.is_some()
            || ["pyproject.toml", "uv.lock", "poetry.lock", "setup.py"]
                .iter()
                .any(|f| exists(dir, f));
        if !python {
            return Err(InitError::Unrecognised(dir.to_path_buf()));
        }
        findings.push("Python project".to_owned());
        let (install, inputs) = if exists(dir, "uv.lock") {
            findings.push("dependencies pinned by uv.lock".to_owned());
            (
                "uv sync --locked".to_owned(),
                "\"pyproject.toml\", \"uv.lock\"".to_owned(),
            )
        } else if exists(dir, "poetry.lock") {
            findings.push("dependencies pinned by poetry.lock".to_owned());
            (
                "poetry install --no-root --sync".to_owned(),
                "\"pyproject.toml\", \"poetry.lock\"".to_owned(),
            )
        } else if let Some(req) = requirements {
            let hashes = is_hash_pinned(&dir.join(req));
            findings.push(if hashes {
                format!("dependencies pinned with hashes in {req}")
            } else {
                format!("{req} without hashes: pin it (e.g. `pip-compile --generate-hashes`)")
            });
            let flag = if hashes { " --require-hashes" } else { "" };
            (
                format!("python3 -m venv .venv && .venv/bin/pip install --quiet{flag} -r {req}"),
                format!("\"{req}\""),
            )
        } else {
            findings.push(
                "pyproject.toml without a lock file: pin dependencies for reproducible builds"
                    .to_owned(),
            );
            (
                "python3 -m venv .venv && .venv/bin/pip install --quiet -e .".to_owned(),
                "\"pyproject.toml\"".to_owned(),
            )
        };
        let venv_python = if install.starts_with("uv ") || install.starts_with("poetry ") {
            if install.starts_with("uv ") {
                "uv run python"
            } else {
                "poetry run python"
            }
        } else {
            ".venv/bin/python"
        };
        writeln!(
            iac,
            "[iac.steps.environment]\nrun = \"{install}\"\ninputs = [{inputs}]\noutputs = [\".venv\"]\ntimeout = \"30m\"\n"
        )
        .ok();
        if has_python_tests(dir) {
            findings.push("pytest tests".to_owned());
            if kinds.get("tests").is_some() {
                writeln!(
                    ci,
                    "# pytest's JUnit report becomes evidence: counts, failures, durations, flaky tests.\n[ci.steps.test]\nkind = \"tests\"\nwith = {{ command = \"{venv_python} -m pytest -q --junitxml={STATE_DIR}/reports/junit.xml\", junit = \"{STATE_DIR}/reports/junit.xml\" }}\ntimeout = \"30m\"\n"
                )
                .ok();
            } else {
                writeln!(
                    ci,
                    "[ci.steps.test]\nrun = \"{venv_python} -m pytest -q\"\ntimeout = \"30m\"\n"
                )
                .ok();
            }
        } else {
            findings.push(
                "no tests found (test_*.py): the ci stage only byte-compiles the code; add tests"
                    .to_owned(),
            );
            writeln!(
                ci,
                "# No tests were found; this step only checks that the code compiles.\n[ci.steps.compile]\nrun = \"{venv_python} -m compileall -q -x '/\\\\.venv/' .\"\n"
            )
            .ok();
        }
        gitignore.push(".venv/".to_owned());
    }

    if kinds.get("secret-scan").is_some() {
        writeln!(
            ci,
            "# No credentials in the files or the git history.\n[ci.steps.secrets]\nkind = \"secret-scan\"\n"
        )
        .ok();
    }
    let name = project_name(dir);
    let manifest = format!(
        "# mlops.toml: the project's pipeline, climbed stage by stage.\n\
         # Reference: docs/manifest.md; editor schema: `mlops schema`.\n\
         \n[project]\nname = \"{name}\"\n\
         \n# Stage 1: Infrastructure as Code. The environment, rebuilt from pinned inputs.\n{iac}\
         # Stage 2: Continuous Integration and automated testing.\n{ci}\
         # Next: stage 3 (`[cd.steps.NAME]`) packages the model and deploys it to staging;\n\
         # a stage runs only after every earlier stage has passed.\n"
    );
    Ok(Scaffold {
        manifest,
        findings,
        gitignore,
    })
}

impl Scaffold {
    /// Writes the manifest (refusing to overwrite unless `force`) and adds
    /// missing lines to `.gitignore`. Returns the manifest path.
    pub fn write(&self, dir: &Path, force: bool) -> Result<PathBuf, InitError> {
        let path = dir.join(MANIFEST_FILE);
        if path.exists() && !force {
            return Err(InitError::Exists(path));
        }
        std::fs::write(&path, &self.manifest).map_err(|source| InitError::Write {
            path: path.clone(),
            source,
        })?;
        let ignore_path = dir.join(".gitignore");
        let current = std::fs::read_to_string(&ignore_path).unwrap_or_default();
        let missing: Vec<&String> = self
            .gitignore
            .iter()
            .filter(|line| !current.lines().any(|l| l.trim() == line.as_str()))
            .collect();
        if !missing.is_empty() {
            let mut text = current.clone();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            for line in missing {
                text.push_str(line);
                text.push('\n');
            }
            std::fs::write(&ignore_path, text).map_err(|source| InitError::Write {
                path: ignore_path,
                source,
            })?;
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::KindRegistry;
    use crate::manifest::Manifest;

    fn check_valid(dir: &Path) -> Scaffold {
        let s = scaffold(dir).unwrap();
        Manifest::parse(
            dir.join(MANIFEST_FILE),
            s.manifest.clone(),
            &KindRegistry::new(),
        )
        .unwrap_or_else(|d| panic!("{d}\n---\n{}", s.manifest));
        s
    }

    #[test]
    fn rust_project() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\nname='x'").unwrap();
        std::fs::write(dir.path().join("Cargo.lock"), "").unwrap();
        let s = check_valid(dir.path());
        assert!(s.manifest.contains("cargo test --locked"));
    }

    #[test]
    fn python_project_with_hashes_and_tests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("requirements.txt"),
            "numpy==2.0 --hash=sha256:ab\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(
            dir.path().join("tests/test_model.py"),
            "def test_x(): pass\n",
        )
        .unwrap();
        let s = check_valid(dir.path());
        assert!(
            s.manifest.contains("--require-hashes -r requirements.txt"),
            "{}",
            s.manifest
        );
        assert!(s.manifest.contains("pytest -q"));
    }

    #[test]
    fn python_project_without_tests_and_writing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pyproject.toml"), "[project]\nname='x'\n").unwrap();
        let s = check_valid(dir.path());
        assert!(s.manifest.contains("compileall"));
        s.write(dir.path(), false).unwrap();
        assert!(matches!(
            s.write(dir.path(), false),
            Err(InitError::Exists(_))
        ));
        let ignore = std::fs::read_to_string(dir.path().join(".gitignore")).unwrap();
        assert_eq!(ignore, ".mlops/\n.venv/\n");
        s.write(dir.path(), true).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".gitignore")).unwrap(),
            ignore
        );
    }

    #[test]
    fn unrecognised_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            scaffold(dir.path()),
            Err(InitError::Unrecognised(_))
        ));
    }
}
