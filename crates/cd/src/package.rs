//! The `package` kind: a model's files as a content-addressed artifact,
//! registered with its lineage.
//!
//! The step hashes every file it is given (sha256, streamed), names the
//! artifact by a digest over those hashes, copies the files to
//! `.mlops/artifacts/<digest>/files/` (through a temporary directory and a
//! rename, so a half-written artifact never carries a digest's name) and
//! registers a version in the ledger's model registry with the commit, the
//! training data's hash, the metrics, the run and the step it came from.
//! Packaging the same files again finds the same version.
//!
//! [`verify_artifact`] re-hashes a stored artifact against the registry, for
//! anything that is about to deploy it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use mlops_ci::metrics::read_metrics_json;
use mlops_core::git::git_state;
use mlops_core::ledger::STATE_DIR;
use mlops_core::manifest::{Diagnostic, relative_path_problem};
use mlops_core::registry::{ArtifactFile, ModelVersion, NewModelVersion};
use mlops_core::{
    CancellationToken, KindParams, Stage, StepAction, StepContext, StepFailure, StepKind,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use toml::Spanned;

/// Where artifacts live inside the state directory.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// The subdirectory of an artifact that holds the model's files.
const FILES_DIR: &str = "files";

/// The artifact's own description of itself.
const MANIFEST_FILE: &str = "manifest.json";

/// The `package` step kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct PackageKind;

/// `with` of a `package` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PackageWire {
    /// The model's name in the registry.
    model: Spanned<String>,
    /// The model's files or directories, relative to the step's directory.
    files: Spanned<Vec<Spanned<String>>>,
    /// A metrics JSON file, recorded with the version as it is.
    metrics: Option<Spanned<String>>,
    /// The training data's files or directories, hashed together for the
    /// lineage.
    data: Option<Vec<Spanned<String>>>,
}

/// A path inside the step's directory, as given and as normalized
/// (`/`-separated, no `.` or `..`; empty for the directory itself).
#[derive(Debug, Clone)]
struct InsidePath {
    given: String,
    normal: String,
}

struct PackageStep {
    model: String,
    files: Vec<InsidePath>,
    metrics: Option<InsidePath>,
    data: Vec<InsidePath>,
}

/// What a `package` step records as evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageReport {
    /// The model.
    pub model: String,
    /// The version's number.
    pub version: i64,
    /// The artifact's digest.
    pub digest: String,
    /// Whether this step registered the version (false: the same files were
    /// already registered).
    pub created: bool,
    /// How many files.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// The version before it.
    pub parent: Option<i64>,
    /// Where the artifact is stored, relative to the project directory.
    pub path: String,
}

/// A name usable as a model name: a letter, then letters, digits, `-`, `_`
/// or `.` (no `:` or `@`, which name versions).
pub fn valid_model_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a path parameter and normalizes it; `None` after pushing the
/// diagnostics.
fn inside_path(
    what: &str,
    value: &Spanned<String>,
    errors: &mut Vec<Diagnostic>,
) -> Option<InsidePath> {
    if let Some(d) = relative_path_problem(what, value, "the step's directory") {
        errors.push(d);
        return None;
    }
    let given = value.get_ref();
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(given).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if parts.pop().is_some() => {}
            Component::Normal(p) => match p.to_str() {
                Some(p) => parts.push(p.to_owned()),
                None => {
                    errors.push(Diagnostic::new(
                        format!("`{what}` entry `{given}` is not valid UTF-8"),
                        Some(value.span()),
                    ));
                    return None;
                }
            },
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                errors.push(Diagnostic::new(
                    format!("`{what}` entry `{given}` leaves the step's directory"),
                    Some(value.span()),
                ));
                return None;
            }
        }
    }
    if parts.first().is_some_and(|p| p == STATE_DIR) {
        errors.push(Diagnostic::new(
            format!("`{what}` entry `{given}` is inside mlops's own state directory {STATE_DIR}"),
            Some(value.span()),
        ));
        return None;
    }
    Some(InsidePath {
        given: given.clone(),
        normal: parts.join("/"),
    })
}

impl StepKind for PackageKind {
    fn name(&self) -> &'static str {
        "package"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Cd)
    }

    fn summary(&self) -> &'static str {
        "Package the model's files as a content-addressed artifact and register it with its lineage"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let wire: PackageWire = params.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        let model = wire.model.get_ref();
        if !valid_model_name(model) {
            errors.push(Diagnostic::new(
                format!(
                    "`model` is `{model}`: a model name is a letter followed by letters, digits, `-`, `_` or `.` (at most 64)"
                ),
                Some(wire.model.span()),
            ));
        }
        let span = |s: Range<usize>| Some(s);
        if wire.files.get_ref().is_empty() {
            errors.push(Diagnostic::new(
                "`files` is empty: name the model's files or directories, like [\"model.json\"]",
                span(wire.files.span()),
            ));
        }
        let files: Vec<InsidePath> = wire
            .files
            .get_ref()
            .iter()
            .filter_map(|f| inside_path("files", f, &mut errors))
            .collect();
        let metrics = wire
            .metrics
            .as_ref()
            .and_then(|m| inside_path("metrics", m, &mut errors));
        if let Some(m) = &metrics
            && m.normal.is_empty()
        {
            errors.push(Diagnostic::new(
                "`metrics` names the step's directory, not a JSON file",
                wire.metrics.as_ref().map(Spanned::span),
            ));
        }
        let data: Vec<InsidePath> = wire
            .data
            .iter()
            .flatten()
            .filter_map(|d| inside_path("data", d, &mut errors))
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        let step = Arc::new(PackageStep {
            model: model.clone(),
            files,
            metrics,
            data,
        });
        Ok(Arc::new(move |ctx: StepContext| {
            let step = step.clone();
            async move { step.run(ctx).await }
        }))
    }
}

/// How the artifact's directory was arrived at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stored {
    /// Written now.
    Written,
    /// Already there, and intact.
    Kept,
    /// Already there but damaged (why), and rewritten.
    Repaired(String),
}

/// A stored artifact, ready to be registered.
struct Packaged {
    version: NewModelVersion,
    stored: Stored,
}

impl PackageStep {
    async fn run(self: Arc<Self>, ctx: StepContext) -> Result<(), StepFailure> {
        let step = self.clone();
        let (cwd, root, run_id, name, cancel) = (
            ctx.cwd.clone(),
            ctx.project_root.clone(),
            ctx.run_id,
            ctx.step.clone(),
            ctx.cancel.clone(),
        );
        let Packaged { version, stored } =
            tokio::task::spawn_blocking(move || step.package(&cwd, &root, run_id, &name, &cancel))
                .await
                .map_err(|e| StepFailure::new(format!("packaging stopped: {e}")))?
                .map_err(StepFailure::new)?;
        let (version, created) = ctx
            .ledger()
            .call(move |l| l.register_model_version(&version))
            .await
            .map_err(|e| StepFailure::new(format!("cannot register the model: {e}")))?;
        if let Stored::Repaired(why) = &stored {
            ctx.log(format!(
                "the stored artifact was damaged ({why}); rewrote it"
            ));
        }
        let short = &version.digest[..12];
        if created {
            ctx.log(format!(
                "registered {} (sha256 {short}…, {} files, {} bytes){}",
                version.id(),
                version.files.len(),
                version.bytes(),
                version
                    .parent
                    .map(|p| format!(", parent {}:{p}", version.model))
                    .unwrap_or_default()
            ));
        } else {
            ctx.log(format!(
                "unchanged: {} already holds these files (sha256 {short}…)",
                version.id()
            ));
        }
        ctx.log(format!("stored in {}", version.path));
        ctx.record(
            crate::evidence::PACKAGE,
            &PackageReport {
                model: version.model.clone(),
                version: version.number,
                digest: version.digest.clone(),
                created,
                files: version.files.len(),
                bytes: version.bytes(),
                parent: version.parent,
                path: version.path.clone(),
            },
        );
        Ok(())
    }

    /// Everything that blocks but the ledger: hashing, copying, git.
    fn package(
        &self,
        cwd: &Path,
        root: &Path,
        run_id: i64,
        step: &str,
        cancel: &CancellationToken,
    ) -> Result<Packaged, String> {
        let sources = collect(cwd, &self.files, "model file")?;
        let files = hash_all(&sources, "model file", cancel)?;
        let digest = artifact_digest(&files);
        let metrics = match &self.metrics {
            None => None,
            Some(m) => Some(read_metrics_json(&cwd.join(&m.normal)).map_err(|e| e.to_string())?),
        };
        let data_hash = if self.data.is_empty() {
            None
        } else {
            let data = collect(cwd, &self.data, "data file")?;
            Some(artifact_digest(&hash_all(&data, "data file", cancel)?))
        };
        let stored = store(root, &self.model, &digest, &files, &sources, cancel)?;
        Ok(Packaged {
            version: NewModelVersion {
                model: self.model.clone(),
                path: artifact_path(&digest),
                digest,
                files,
                metrics,
                data_hash,
                git: git_state(root),
                run_id: Some(run_id),
                step: Some(step.to_owned()),
            },
            stored,
        })
    }
}

/// An artifact's directory, relative to the project directory.
fn artifact_path(digest: &str) -> String {
    format!("{STATE_DIR}/{ARTIFACTS_DIR}/{digest}")
}

/// The files the entries name, by artifact path: a directory stands for
/// every file under it (mlops's state directory and `.git` excepted).
fn collect(
    cwd: &Path,
    entries: &[InsidePath],
    what: &str,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut found = BTreeMap::new();
    for entry in entries {
        let abs = cwd.join(&entry.normal);
        let meta = std::fs::metadata(&abs).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "missing {what} `{}` (no such file or directory in {})",
                    entry.given,
                    cwd.display()
                )
            } else {
                format!("cannot read {what} `{}`: {e}", entry.given)
            }
        })?;
        if meta.is_file() {
            found.insert(entry.normal.clone(), abs);
            continue;
        }
        if !meta.is_dir() {
            return Err(format!(
                "{what} `{}` is neither a regular file nor a directory",
                entry.given
            ));
        }
        let before = found.len();
        let walk = walkdir::WalkDir::new(&abs)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0 || (e.file_name() != STATE_DIR && e.file_name() != ".git")
            });
        for item in walk {
            let item =
                item.map_err(|e| format!("cannot list {what}s under `{}`: {e}", entry.given))?;
            if !item.file_type().is_file() {
                continue;
            }
            let rel = item
                .path()
                .strip_prefix(cwd)
                .ok()
                .and_then(|r| {
                    r.components()
                        .map(|c| c.as_os_str().to_str())
                        .collect::<Option<Vec<&str>>>()
                })
                .ok_or_else(|| {
                    format!(
                        "{what} {} has a name that is not UTF-8",
                        item.path().display()
                    )
                })?
                .join("/");
            found.insert(rel, item.into_path());
        }
        if found.len() == before && !found.keys().any(|k| is_under(k, &entry.normal)) {
            return Err(format!(
                "{what}s `{}`: the directory holds no files",
                entry.given
            ));
        }
    }
    Ok(found)
}

fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty() || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Streams `reader` through sha256, copying it to `copy` if given.
fn sha256_stream(
    mut reader: impl Read,
    mut copy: Option<&mut dyn Write>,
) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        if let Some(w) = copy.as_mut() {
            w.write_all(&buf[..n])?;
        }
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

/// sha256 (hex) and size of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    sha256_stream(File::open(path)?, None)
}

fn hash_all(
    files: &BTreeMap<String, PathBuf>,
    what: &str,
    cancel: &CancellationToken,
) -> Result<Vec<ArtifactFile>, String> {
    files
        .iter()
        .map(|(rel, abs)| {
            if cancel.is_cancelled() {
                return Err("cancelled".to_owned());
            }
            let (sha256, size) =
                sha256_file(abs).map_err(|e| format!("cannot read {what} `{rel}`: {e}"))?;
            Ok(ArtifactFile {
                path: rel.clone(),
                sha256,
                size,
            })
        })
        .collect()
}

/// The digest of an artifact: sha256 over `"{path}\0{sha256}\n"` for each
/// file, sorted by path.
pub fn artifact_digest(files: &[ArtifactFile]) -> String {
    let mut sorted: Vec<&ArtifactFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hasher = Sha256::new();
    for f in sorted {
        hasher.update(f.path.as_bytes());
        hasher.update(b"\0");
        hasher.update(f.sha256.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

/// `manifest.json` of an artifact.
#[derive(Debug, Serialize, Deserialize)]
struct ArtifactManifest {
    model: String,
    digest: String,
    files: Vec<ArtifactFile>,
}

/// Stores the files under `.mlops/artifacts/<digest>/`, unless an intact
/// copy is there already.
fn store(
    root: &Path,
    model: &str,
    digest: &str,
    files: &[ArtifactFile],
    sources: &BTreeMap<String, PathBuf>,
    cancel: &CancellationToken,
) -> Result<Stored, String> {
    let artifacts = root.join(STATE_DIR).join(ARTIFACTS_DIR);
    std::fs::create_dir_all(&artifacts)
        .map_err(|e| format!("cannot create {}: {e}", artifacts.display()))?;
    let target = artifacts.join(digest);
    let damage = if target.exists() {
        match check_stored(&target, digest, files) {
            Ok(()) => return Ok(Stored::Kept),
            Err(why) => Some(why),
        }
    } else {
        None
    };
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(&artifacts)
        .map_err(|e| {
            format!(
                "cannot create a temporary directory in {}: {e}",
                artifacts.display()
            )
        })?;
    for f in files {
        if cancel.is_cancelled() {
            return Err("cancelled".to_owned());
        }
        let src = &sources[&f.path];
        let dest = tmp.path().join(FILES_DIR).join(&f.path);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let input =
            File::open(src).map_err(|e| format!("cannot read model file `{}`: {e}", f.path))?;
        let mut out =
            File::create(&dest).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
        let (sha, _) = sha256_stream(input, Some(&mut out))
            .map_err(|e| format!("cannot copy model file `{}` into the artifact: {e}", f.path))?;
        if sha != f.sha256 {
            return Err(format!(
                "model file `{}` changed while it was being packaged; package it again",
                f.path
            ));
        }
        out.sync_all()
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    let manifest = ArtifactManifest {
        model: model.to_owned(),
        digest: digest.to_owned(),
        files: files.to_vec(),
    };
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    std::fs::write(tmp.path().join(MANIFEST_FILE), text + "\n")
        .map_err(|e| format!("cannot write the artifact's {MANIFEST_FILE}: {e}"))?;
    // A damaged copy moves aside first; it is removed once the new one is in
    // place.
    let aside = match &damage {
        Some(_) => {
            let aside = tempfile::Builder::new()
                .prefix(".damaged-")
                .tempdir_in(&artifacts)
                .map_err(|e| {
                    format!(
                        "cannot create a temporary directory in {}: {e}",
                        artifacts.display()
                    )
                })?;
            let old = aside.path().join(digest);
            std::fs::rename(&target, &old).map_err(|e| {
                format!(
                    "cannot move the damaged artifact {} aside: {e}",
                    target.display()
                )
            })?;
            Some(aside)
        }
        None => None,
    };
    match std::fs::rename(tmp.path(), &target) {
        Ok(()) => {
            // Now under its final name: nothing left for the guard to clean.
            let _ = tmp.keep();
        }
        // Another process stored the same digest meanwhile.
        Err(_) if check_stored(&target, digest, files).is_ok() => return Ok(Stored::Kept),
        Err(e) => {
            return Err(format!(
                "cannot move the artifact into {}: {e}",
                target.display()
            ));
        }
    }
    drop(aside);
    Ok(match damage {
        Some(why) => Stored::Repaired(why),
        None => Stored::Written,
    })
}

/// Whether a stored artifact holds exactly `files` and its manifest.
fn check_stored(dir: &Path, digest: &str, files: &[ArtifactFile]) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join(MANIFEST_FILE))
        .map_err(|e| format!("cannot read its {MANIFEST_FILE}: {e}"))?;
    let manifest: ArtifactManifest = serde_json::from_str(&text)
        .map_err(|e| format!("its {MANIFEST_FILE} is not valid: {e}"))?;
    if manifest.digest != digest {
        return Err(format!(
            "its {MANIFEST_FILE} names digest {}",
            manifest.digest
        ));
    }
    verify_files(dir, files).map_err(|e| e.to_string())
}

/// Why a stored artifact does not match the registry.
#[derive(Debug, thiserror::Error)]
pub enum TamperError {
    /// The artifact's directory is gone.
    #[error("tampered artifact: {} is missing", dir.display())]
    MissingArtifact {
        /// The artifact's directory.
        dir: PathBuf,
    },
    /// The registry's own record does not add up.
    #[error(
        "tampered registry record: the files of {version} hash to digest {found}, the registry says {expected}"
    )]
    Record {
        /// `model:number`.
        version: String,
        /// The digest of the recorded file list.
        found: String,
        /// The recorded digest.
        expected: String,
    },
    /// A file the registry lists is not there.
    #[error("tampered artifact: files/{path} is missing (in {})", dir.display())]
    MissingFile {
        /// The artifact's directory.
        dir: PathBuf,
        /// The file, relative to `files/`.
        path: String,
    },
    /// A file is there that the registry does not list.
    #[error("tampered artifact: files/{path} is not one of the registered files (in {})", dir.display())]
    ExtraFile {
        /// The artifact's directory.
        dir: PathBuf,
        /// The file, relative to `files/`.
        path: String,
    },
    /// A file's content differs.
    #[error("tampered artifact: files/{path} has sha256 {found}, the registry says {expected} (in {})", dir.display())]
    Changed {
        /// The artifact's directory.
        dir: PathBuf,
        /// The file, relative to `files/`.
        path: String,
        /// Its hash now.
        found: String,
        /// The registered hash.
        expected: String,
    },
    /// The artifact could not be read.
    #[error("cannot read the artifact file {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Re-hashes a registered version's stored files and checks them against
/// the registry: every listed file present with its recorded sha256, and
/// nothing else. `project_root` is the project directory (the one holding
/// `.mlops/`). Returns the directory holding the files, ready to deploy.
/// This blocks: call it from `spawn_blocking` in async code.
pub fn verify_artifact(
    project_root: &Path,
    version: &ModelVersion,
) -> Result<PathBuf, TamperError> {
    let digest = artifact_digest(&version.files);
    if digest != version.digest {
        return Err(TamperError::Record {
            version: version.id(),
            found: digest,
            expected: version.digest.clone(),
        });
    }
    let dir = project_root.join(&version.path);
    if !dir.is_dir() {
        return Err(TamperError::MissingArtifact { dir });
    }
    verify_files(&dir, &version.files)?;
    Ok(dir.join(FILES_DIR))
}

fn verify_files(dir: &Path, expected: &[ArtifactFile]) -> Result<(), TamperError> {
    let files_dir = dir.join(FILES_DIR);
    let mut present = BTreeMap::new();
    if files_dir.is_dir() {
        for item in walkdir::WalkDir::new(&files_dir).sort_by_file_name() {
            let item = item.map_err(|e| {
                let path = e.path().unwrap_or(&files_dir).to_path_buf();
                TamperError::Io {
                    path,
                    source: e.into(),
                }
            })?;
            if item.file_type().is_dir() {
                continue;
            }
            let rel = item
                .path()
                .strip_prefix(&files_dir)
                .unwrap_or(item.path())
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            present.insert(rel, item.into_path());
        }
    }
    let mut sorted: Vec<&ArtifactFile> = expected.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(missing) = sorted.iter().find(|f| !present.contains_key(&f.path)) {
        return Err(TamperError::MissingFile {
            dir: dir.to_path_buf(),
            path: missing.path.clone(),
        });
    }
    if let Some(extra) = present
        .keys()
        .find(|p| !sorted.iter().any(|f| &f.path == *p))
    {
        return Err(TamperError::ExtraFile {
            dir: dir.to_path_buf(),
            path: extra.clone(),
        });
    }
    for f in sorted {
        let path = &present[&f.path];
        let (found, _) = sha256_file(path).map_err(|source| TamperError::Io {
            path: path.clone(),
            source,
        })?;
        if found != f.sha256 {
            return Err(TamperError::Changed {
                dir: dir.to_path_buf(),
                path: f.path.clone(),
                found,
                expected: f.sha256.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_a_known_vector() {
        let (h, n) = sha256_stream(&b"abc"[..], None).unwrap();
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(n, 3);
    }

    #[test]
    fn the_digest_does_not_depend_on_order() {
        let f = |p: &str, h: &str| ArtifactFile {
            path: p.to_owned(),
            sha256: h.to_owned(),
            size: 1,
        };
        let a = artifact_digest(&[f("a", "11"), f("b", "22")]);
        assert_eq!(a, artifact_digest(&[f("b", "22"), f("a", "11")]));
        assert_ne!(a, artifact_digest(&[f("a", "22"), f("b", "11")]));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn model_names() {
        for ok in ["iris", "iris-v2", "a.b_c", "X1"] {
            assert!(valid_model_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1iris",
            "iris:2",
            "iris@latest",
            "a b",
            "-x",
            &"a".repeat(65),
        ] {
            assert!(!valid_model_name(bad), "{bad}");
        }
    }
}
