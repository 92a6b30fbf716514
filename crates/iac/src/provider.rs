//! The contract every provider implements: start, inspect, scale and stop
//! the instances of declared services.
//!
//! An *instance* is one revision of one service in one environment, with
//! its replicas. Planning ([`crate::plan`]) compares the desired instances
//! with what [`Provider::observe`] finds; applying calls the other methods.
//! A provider only ever observes or touches what it created itself (the
//! local provider: instance directories under `.mlops/infra/local/`; the
//! Docker provider: objects labelled with the project).
//!
//! An instance may be *owned* by a controller ([`Instance::owner`], set from
//! [`Desired::owner`] when it starts): the provider records the owner on the
//! instance (the local provider in `instance.json`, the Docker provider in
//! the `mlops.owner` label and its record) so that every later `observe`
//! sees it.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::spec::{ProviderKind, ServiceSpec};

/// The future a provider method returns.
pub type ProviderFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// Where instances live: a project's environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// The project's name (labels, container names).
    pub project: String,
    /// The environment: `dev`, `staging`, …
    pub environment: String,
    /// The project directory.
    pub root: PathBuf,
}

impl Scope {
    /// The state directory of the project (`.mlops/`).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(mlops_core::ledger::STATE_DIR)
    }
}

/// The model version an instance serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// `name:N`.
    pub version: String,
    /// The directory holding its files (absolute).
    pub dir: PathBuf,
}

/// What should run: a service's spec, the model it serves, and the secret
/// values it needs (resolved from the caller's environment, never stored).
#[derive(Clone, Serialize, Deserialize)]
pub struct Desired {
    /// The declared service.
    pub spec: ServiceSpec,
    /// The model version, if one is deployed.
    pub model: Option<ModelRef>,
    /// A digest of everything that shapes the instance (spec, program,
    /// model); instances with the same revision are interchangeable.
    pub revision: String,
    /// Values read from the caller's environment, by variable name. Secret
    /// ones are passed to the workload and nowhere else.
    #[serde(skip)]
    pub from_env: BTreeMap<String, String>,
    /// Keyed digests of those values, by variable name
    /// ([`crate::plan::env_digests`]); they are part of the revision.
    pub env_digests: BTreeMap<String, String>,
    /// The controller the instance will belong to ([`crate::ownership`]);
    /// `None` for what `apply` starts. Recorded on the instance, not part
    /// of the revision.
    #[serde(default)]
    pub owner: Option<String>,
}

impl std::fmt::Debug for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desired")
            .field("service", &self.spec.name)
            .field("model", &self.model)
            .field("revision", &self.revision)
            .field("from_env", &self.from_env.keys().collect::<Vec<_>>())
            .field("owner", &self.owner)
            .finish()
    }
}

/// How a replica is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaState {
    /// Being started or restarted.
    Starting,
    /// Running.
    Running,
    /// Exited and waiting for a restart.
    Restarting,
    /// Exited and not restarting.
    Exited,
    /// Gone: its process or container no longer exists.
    Missing,
}

/// One replica of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// 0-based index.
    pub index: u32,
    /// State.
    pub state: ReplicaState,
    /// Whether the last health check passed.
    pub healthy: bool,
    /// What the last failed health check said.
    pub health_error: Option<String>,
    /// `http://127.0.0.1:PORT`, when it has a port.
    pub endpoint: Option<String>,
    /// Process id or container id.
    pub handle: String,
    /// How often it was restarted.
    pub restarts: u32,
    /// How it last exited, if it did.
    pub last_exit: Option<String>,
}

/// One running (or crashed) instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The provider's id for the instance.
    pub id: String,
    /// Which provider runs it.
    pub provider: ProviderKind,
    /// The service.
    pub service: String,
    /// The revision it was started with.
    pub revision: String,
    /// The model version it serves.
    pub model_version: Option<String>,
    /// How many replicas it should have.
    pub desired_replicas: u32,
    /// Its replicas.
    pub replicas: Vec<Replica>,
    /// Problems the provider sees: the supervisor died, a container was
    /// changed by hand, …
    pub problems: Vec<String>,
    /// The controller that started it and owns it (`release` for a
    /// canary), recorded on the instance itself; `None` when `apply` owns
    /// it. `plan` never removes, repairs, replaces or scales an owned
    /// instance; only its controller and `destroy` stop it.
    #[serde(default)]
    pub owner: Option<String>,
}

impl Instance {
    /// Whether every desired replica runs and is healthy and nothing is
    /// wrong.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
            && self.replicas.len() == self.desired_replicas as usize
            && self
                .replicas
                .iter()
                .all(|r| r.state == ReplicaState::Running && r.healthy)
    }

    /// Reasons it is not healthy, one per line.
    pub fn drift(&self) -> Vec<String> {
        let mut out = self.problems.clone();
        let running = self.replicas.len();
        if running != self.desired_replicas as usize {
            out.push(format!(
                "{running} of {} replicas exist",
                self.desired_replicas
            ));
        }
        for r in &self.replicas {
            match r.state {
                ReplicaState::Running if r.healthy => {}
                ReplicaState::Running | ReplicaState::Starting => out.push(format!(
                    "replica {} is unhealthy{}",
                    r.index,
                    r.health_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )),
                ReplicaState::Restarting => out.push(format!(
                    "replica {} is restarting after {} restarts{}",
                    r.index,
                    r.restarts,
                    r.last_exit
                        .as_deref()
                        .map(|e| format!(" (last: {e})"))
                        .unwrap_or_default()
                )),
                ReplicaState::Exited => out.push(format!(
                    "replica {} has exited{}",
                    r.index,
                    r.last_exit
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )),
                ReplicaState::Missing => out.push(format!("replica {} is gone", r.index)),
            }
        }
        out
    }

    /// The endpoints of its replicas.
    pub fn endpoints(&self) -> Vec<String> {
        self.replicas
            .iter()
            .filter_map(|r| r.endpoint.clone())
            .collect()
    }
}

/// A provider failure, saying what and where.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider's backend cannot be reached (the Docker engine is down).
    #[error("{provider} provider: cannot reach {what}: {detail}")]
    Unreachable {
        /// Which provider.
        provider: ProviderKind,
        /// What it tried to reach.
        what: String,
        /// The error.
        detail: String,
    },
    /// Building the service's image or program failed.
    #[error("service `{service}`: build failed: {detail}\n{output}")]
    Build {
        /// The service.
        service: String,
        /// Why.
        detail: String,
        /// The tail of the build's output.
        output: String,
    },
    /// The requested host port is taken by something else.
    #[error("service `{service}`: port {port} on 127.0.0.1 is already in use")]
    PortTaken {
        /// The service.
        service: String,
        /// The port.
        port: u16,
    },
    /// The service did not become healthy in time.
    #[error(
        "service `{service}`: not healthy after {waited_ms} ms{}\n--- last {} lines of its log ---\n{log_tail}",
        last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
        log_tail.lines().count()
    )]
    Unhealthy {
        /// The service.
        service: String,
        /// How long it waited.
        waited_ms: u64,
        /// The last health check's error.
        last_error: Option<String>,
        /// The tail of its log.
        log_tail: String,
    },
    /// A required input is missing (a from-env variable, the program).
    #[error("service `{service}`: {detail}")]
    Invalid {
        /// The service.
        service: String,
        /// What is wrong.
        detail: String,
    },
    /// Anything else the backend reported.
    #[error("{provider} provider: {what}: {detail}")]
    Backend {
        /// Which provider.
        provider: ProviderKind,
        /// What was being done.
        what: String,
        /// The error.
        detail: String,
    },
}

/// Runs instances of services.
pub trait Provider: Send + Sync {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// Every instance of the scope's environment this provider runs, healthy
    /// or not (read-only).
    fn observe<'a>(&'a self, scope: &'a Scope) -> ProviderFuture<'a, Vec<Instance>>;

    /// Starts a new instance and returns once every replica is healthy. On
    /// failure nothing of the new instance is left running, and the error
    /// carries the last health error and the log tail.
    fn start<'a>(&'a self, scope: &'a Scope, desired: &'a Desired) -> ProviderFuture<'a, Instance>;

    /// Changes an instance's replica count and waits until the new replicas
    /// are healthy.
    fn scale<'a>(
        &'a self,
        scope: &'a Scope,
        instance: &'a Instance,
        replicas: u32,
    ) -> ProviderFuture<'a, Instance>;

    /// Stops an instance (SIGTERM, then SIGKILL after the grace period) and
    /// removes what it created for it.
    fn stop<'a>(&'a self, scope: &'a Scope, instance: &'a Instance) -> ProviderFuture<'a, ()>;

    /// The last `lines` lines of an instance's logs (all replicas).
    fn logs<'a>(
        &'a self,
        scope: &'a Scope,
        instance: &'a Instance,
        lines: usize,
    ) -> ProviderFuture<'a, String>;
}

/// What `{model-dir}` means on the host, the same directory for every
/// provider (the Docker provider mounts it read-only at `/model`): the
/// deployed version's files, else the spec's `model-dir` (relative to the
/// project), else the project itself. Absolute; without a version, with
/// symlinks resolved when it exists (what a bind mount would see).
pub fn model_dir(root: &Path, spec: &ServiceSpec, model: Option<&ModelRef>) -> PathBuf {
    let dir = match (model, &spec.model_dir) {
        (Some(m), _) => return std::path::absolute(&m.dir).unwrap_or_else(|_| m.dir.clone()),
        (None, Some(dir)) => root.join(dir),
        (None, None) => root.to_path_buf(),
    };
    std::fs::canonicalize(&dir).unwrap_or_else(|_| std::path::absolute(&dir).unwrap_or(dir))
}

/// The files a service names inside `{model-dir}`, relative to it: what
/// follows `{model-dir}/` in a command word or a literal `env` value, up to
/// a space, quote, `,`, `;`, `:` or `=` (`--model={model-dir}/model.json`
/// names `model.json`). Names with another placeholder in them
/// (`shard-{replica}.bin`) and paths climbing out with `..` are left out.
pub fn named_model_files(spec: &ServiceSpec) -> Vec<PathBuf> {
    use crate::spec::EnvValue;
    const MARK: &str = "{model-dir}/";
    let literals = spec
        .env
        .values()
        .filter_map(|v| match v {
            EnvValue::Literal { value } => Some(value.as_str()),
            EnvValue::FromEnv { .. } => None,
        })
        .chain(spec.command.iter().map(String::as_str));
    let mut files = Vec::new();
    for text in literals {
        let mut rest = text;
        while let Some(at) = rest.find(MARK) {
            rest = &rest[at + MARK.len()..];
            let end = rest
                .find(|c: char| c.is_whitespace() || "\"',;:={".contains(c))
                .unwrap_or(rest.len());
            let file = Path::new(&rest[..end]);
            // A name with another placeholder in it is no one file.
            if !rest[end..].starts_with('{')
                && !file.as_os_str().is_empty()
                && file
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
            {
                files.push(file.to_path_buf());
            }
        }
    }
    files.sort();
    files.dedup();
    files
}

/// Fills a command word or environment value's placeholders.
pub fn fill(
    text: &str,
    port: u16,
    host: &str,
    model_dir: &str,
    replica: u32,
    version: &str,
) -> String {
    text.replace("{port}", &port.to_string())
        .replace("{host}", host)
        .replace("{model-dir}", model_dir)
        .replace("{replica}", &replica.to_string())
        .replace("{model-version}", version)
}

/// Refuses a `state_dir` that is not an existing absolute directory, on
/// every provider alike: Docker would create a missing one (owned by
/// root), and a relative path would name another directory inside a
/// container than outside.
pub fn check_state_dir(spec: &ServiceSpec) -> Result<(), ProviderError> {
    let Some(dir) = &spec.state_dir else {
        return Ok(());
    };
    let detail = if !dir.is_absolute() {
        format!(
            "the state directory {} is not an absolute path",
            dir.display()
        )
    } else if !dir.is_dir() {
        format!("the state directory {} does not exist", dir.display())
    } else {
        return Ok(());
    };
    Err(ProviderError::Invalid {
        service: spec.name.clone(),
        detail,
    })
}

/// The environment of one replica: the declared variables with their
/// placeholders filled, plus `PORT`, `HOST`, `MLOPS_SERVICE`,
/// `MLOPS_REPLICA`, `MLOPS_MODEL_DIR` and `MLOPS_MODEL_VERSION` unless
/// declared.
pub fn replica_env(
    desired: &Desired,
    port: u16,
    host: &str,
    model_dir: &str,
    replica: u32,
) -> Result<Vec<(String, String)>, ProviderError> {
    use crate::spec::EnvValue;
    let version = desired.model.as_ref().map_or("", |m| m.version.as_str());
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PORT".into(), port.to_string());
    env.insert("HOST".into(), host.to_owned());
    env.insert("MLOPS_SERVICE".into(), desired.spec.name.clone());
    env.insert("MLOPS_REPLICA".into(), replica.to_string());
    env.insert("MLOPS_MODEL_DIR".into(), model_dir.to_owned());
    if !version.is_empty() {
        env.insert("MLOPS_MODEL_VERSION".into(), version.to_owned());
    }
    for (key, value) in &desired.spec.env {
        let value = match value {
            EnvValue::Literal { value } => fill(value, port, host, model_dir, replica, version),
            EnvValue::FromEnv { var, .. } => match desired.from_env.get(var) {
                Some(v) => v.clone(),
                None => {
                    return Err(ProviderError::Invalid {
                        service: desired.spec.name.clone(),
                        detail: format!(
                            "environment variable `{key}` reads `{var}` from the caller's environment, which does not set it"
                        ),
                    });
                }
            },
        };
        env.insert(key.clone(), value);
    }
    Ok(env.into_iter().collect())
}
