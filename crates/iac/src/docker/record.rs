//! The record of a Docker instance, `.mlops/infra/docker/<env>/<id>.json`:
//! what Docker cannot hold. A container's labels are fixed when it is
//! created, so after a `scale` the desired replica count lives here; and an
//! instance scaled to zero has no container left to describe it.
//!
//! The record never holds a secret value: the spec names the variables a
//! secret comes from, and the values stay in the containers' environment.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::provider::{ModelRef, ProviderError, Scope};
use crate::spec::{ProviderKind, ServiceSpec};

/// One instance's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct InstanceRecord {
    pub(super) id: String,
    pub(super) service: String,
    pub(super) revision: String,
    pub(super) spec: ServiceSpec,
    pub(super) model: Option<ModelRef>,
    /// The host directory mounted at `/model` (absolute).
    pub(super) model_source: Option<PathBuf>,
    /// The image reference containers are created from.
    pub(super) image: String,
    /// The image's id when the instance started.
    pub(super) image_id: String,
    pub(super) desired_replicas: u32,
    /// The controller that owns the instance, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) owner: Option<String>,
}

fn env_dir(scope: &Scope) -> PathBuf {
    scope
        .state_dir()
        .join("infra")
        .join("docker")
        .join(super::docker_name(&scope.environment))
}

fn path(scope: &Scope, id: &str) -> PathBuf {
    env_dir(scope).join(format!("{}.json", super::docker_name(id)))
}

fn io_error(what: String, path: &Path, e: &std::io::Error) -> ProviderError {
    ProviderError::Backend {
        provider: ProviderKind::Docker,
        what: format!("{what} {}", path.display()),
        detail: e.to_string(),
    }
}

/// Every record of the scope's environment; unreadable ones are skipped
/// (the containers still describe their instance).
pub(super) fn all(scope: &Scope) -> Vec<InstanceRecord> {
    let Ok(entries) = std::fs::read_dir(env_dir(scope)) else {
        return Vec::new();
    };
    let mut records: Vec<InstanceRecord> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    records.sort_by(|a, b| a.id.cmp(&b.id));
    records
}

/// The record of instance `id`, if there is one.
pub(super) fn read(scope: &Scope, id: &str) -> Option<InstanceRecord> {
    let bytes = std::fs::read(path(scope, id)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the record (atomically: readers see the old or the new one).
pub(super) fn write(scope: &Scope, record: &InstanceRecord) -> Result<(), ProviderError> {
    let path = path(scope, &record.id);
    let dir = env_dir(scope);
    std::fs::create_dir_all(&dir).map_err(|e| io_error("creating".into(), &dir, &e))?;
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| ProviderError::Backend {
        provider: ProviderKind::Docker,
        what: format!("writing {}", path.display()),
        detail: e.to_string(),
    })?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| io_error("writing".into(), &tmp, &e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_error("writing".into(), &path, &e))
}

/// Removes the record, if there is one.
pub(super) fn remove(scope: &Scope, id: &str) -> Result<(), ProviderError> {
    let path = path(scope, id);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("removing".into(), &path, &e)),
    }
}
