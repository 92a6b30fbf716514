//! The `docker` provider: every replica is a container on the local Docker
//! engine, reached through bollard.
//!
//! What it creates, all labelled `mlops.managed-by=mlops` and with the
//! project (see [`labels`]):
//!
//! - an image per service revision, `mlops-<project>-<service>:<revision>`,
//!   built `FROM scratch` from a binary and the shared libraries `ldd` lists,
//!   or from the service's Dockerfile (`docker/image.rs`); an
//!   `image = "…"` service runs that image as it is;
//! - one user-defined bridge network per project and environment,
//!   `mlops-<project>-<environment>`, created on demand and removed with the
//!   last container of the environment;
//! - one container per replica, `mlops-<project>-<env>-<service>-<id>-<n>`,
//!   with its port published on 127.0.0.1 only (or, for a spec with
//!   `host_network`, in the host's network namespace listening on a
//!   loopback port of the host, labelled [`labels::HOST_PORT`]: what a
//!   controller's service that must reach other replicas at their host
//!   addresses needs), its `state_dir` bind-mounted read-write at the same
//!   path, the spec's user, limits and
//!   read-only root (a tmpfs at `/tmp`), the model directory mounted
//!   read-only at `/model` (the directory `{model-dir}` means on the local
//!   provider too: [`crate::provider::model_dir`]; without a deployed
//!   version, the spec's `model-dir` or the project), no new privileges
//!   and, unless it runs as root,
//!   no capabilities (`docker/replica.rs`);
//! - a record per instance, `.mlops/infra/docker/<env>/<id>.json`
//!   (`docker/record.rs`): Docker cannot change a container's labels, so
//!   the desired replica count after a `scale` lives there (containers also
//!   carry the count they were created with, the fallback when the record
//!   is gone), and an instance scaled to zero is still known.
//!
//! A controller's instance carries its owner in the `mlops.owner` label of
//! every container and in its record.
//!
//! Health is checked from the host (`GET` on the published port), never by a
//! Docker `HEALTHCHECK`: `FROM scratch` images have no shell to run one.
//! Secret values go into the containers' environment and nowhere else: not
//! into labels, images, records, logs or errors.
//!
//! It does not touch anything that lacks the `mlops.managed-by=mlops` label
//! and the project's label, and it does not pull images (nothing can be
//! pulled on the machines this runs on; images must be built or present).

mod image;
mod lifecycle;
mod observe;
mod record;
mod replica;
mod stats;

pub use stats::ContainerUsage;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveImageOptionsBuilder,
};
use tokio::sync::Mutex;

use crate::provider::{Desired, Instance, Provider, ProviderError, ProviderFuture, Scope};
use crate::spec::{ProviderKind, ServiceSpec};

/// Label keys and the values the provider filters on.
pub mod labels {
    /// Marks everything the provider created; value [`MANAGED_BY_VALUE`].
    pub const MANAGED_BY: &str = "mlops.managed-by";
    /// The value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "mlops";
    /// The project's name.
    pub const PROJECT: &str = "mlops.project";
    /// The environment (containers and networks).
    pub const ENVIRONMENT: &str = "mlops.environment";
    /// The service.
    pub const SERVICE: &str = "mlops.service";
    /// The service revision.
    pub const REVISION: &str = "mlops.revision";
    /// The instance id (containers).
    pub const INSTANCE: &str = "mlops.instance";
    /// The model version, when one is deployed.
    pub const MODEL_VERSION: &str = "mlops.model-version";
    /// The replica index (containers).
    pub const REPLICA: &str = "mlops.replica";
    /// The instance's replica count when the container was created.
    pub const DESIRED_REPLICAS: &str = "mlops.desired-replicas";
    /// The service's spec as JSON (never a secret value: secrets are named,
    /// not stored), so that `scale` can make more replicas of it.
    pub const SPEC: &str = "mlops.spec";
    /// The image reference the container was created from.
    pub const IMAGE: &str = "mlops.image";
    /// The controller that owns the instance (containers of a controller's
    /// instance only).
    pub const OWNER: &str = "mlops.owner";
    /// The host loopback port a replica in the host's network listens on
    /// (containers of a `host_network` spec only: they publish nothing).
    pub const HOST_PORT: &str = "mlops.host-port";
}

/// Where the model directory is mounted (read-only) in every container:
/// what `{model-dir}` means there.
pub const MODEL_DIR: &str = "/model";
/// The address services listen on inside their container; the provider
/// publishes the port on the host's 127.0.0.1 only.
pub const LISTEN_HOST: &str = "0.0.0.0";

/// The host's network (Docker's predefined `host` network mode).
const HOST_NETWORK: &str = "host";

/// How long connecting to the engine may take before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one engine request may take (builds are one request).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The Docker provider: containers on the local engine.
#[derive(Debug)]
pub struct DockerProvider {
    docker: Docker,
    /// Where the engine is, for messages: `unix:///var/run/docker.sock`.
    endpoint: String,
    /// Serializes creating networks: API 1.41 engines accept two networks
    /// with one name when two creations race.
    network_lock: Mutex<()>,
}

impl DockerProvider {
    /// The engine's unix socket on this host.
    fn engine_socket(&self) -> Option<std::path::PathBuf> {
        self.endpoint
            .strip_prefix("unix://")
            .map(std::path::PathBuf::from)
    }

    /// Connects to the local engine: the unix socket in `DOCKER_HOST`
    /// (`unix://…`), else `/var/run/docker.sock`. An engine that does not
    /// answer is [`ProviderError::Unreachable`].
    pub async fn connect() -> Result<Self, ProviderError> {
        let endpoint = match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => {
                if !host.starts_with("unix://") {
                    return Err(ProviderError::Unreachable {
                        provider: ProviderKind::Docker,
                        what: format!("the Docker engine at {host}"),
                        detail: "DOCKER_HOST does not name a unix socket, and the docker provider \
                                 needs the engine on this machine (it publishes ports on 127.0.0.1): \
                                 unset DOCKER_HOST or set it to unix:///path/to/docker.sock"
                            .to_owned(),
                    });
                }
                host
            }
            _ => "unix:///var/run/docker.sock".to_owned(),
        };
        Self::connect_unix(&endpoint).await
    }

    /// Connects to the engine listening on the unix socket `path`
    /// (`/run/docker.sock` or `unix:///run/docker.sock`).
    pub async fn connect_unix(path: &str) -> Result<Self, ProviderError> {
        let endpoint = if path.starts_with("unix://") {
            path.to_owned()
        } else {
            format!("unix://{path}")
        };
        let unreachable = |detail: String| ProviderError::Unreachable {
            provider: ProviderKind::Docker,
            what: format!("the Docker engine at {endpoint}"),
            detail: format!(
                "{detail}; start the engine (e.g. `systemctl start docker`) or point DOCKER_HOST at its socket"
            ),
        };
        let docker = Docker::connect_with_unix(
            &endpoint,
            REQUEST_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| unreachable(describe(&e)))?;
        // bollard speaks API 1.53 by default; older engines (20.10 speaks
        // 1.41) refuse newer versions, so agree on the engine's.
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(unreachable(describe(&e))),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        Ok(Self::with_client(docker, endpoint))
    }

    /// Wraps a connected bollard client (its API version already agreed);
    /// `endpoint` names the engine in messages.
    pub fn with_client(docker: Docker, endpoint: impl Into<String>) -> Self {
        DockerProvider {
            docker,
            endpoint: endpoint.into(),
            network_lock: Mutex::new(()),
        }
    }

    /// Maps an engine error: lost connections are `Unreachable`, anything
    /// the engine answered is `Backend` with `what` was being done.
    fn engine_error(
        &self,
        what: impl Into<String>,
    ) -> impl FnOnce(DockerError) -> ProviderError + '_ {
        let what = what.into();
        move |e| match e {
            DockerError::DockerResponseServerError { .. }
            | DockerError::DockerStreamError { .. }
            | DockerError::JsonDataError { .. }
            | DockerError::JsonSerdeError { .. } => ProviderError::Backend {
                provider: ProviderKind::Docker,
                what,
                detail: describe(&e),
            },
            _ => ProviderError::Unreachable {
                provider: ProviderKind::Docker,
                what: format!("the Docker engine at {}", self.endpoint),
                detail: format!("{what}: {}", describe(&e)),
            },
        }
    }

    /// The id of the project's network for the scope's environment,
    /// created when missing.
    async fn ensure_network(&self, scope: &Scope) -> Result<String, ProviderError> {
        let _serial = self.network_lock.lock().await;
        let name = network_name(scope);
        if let Some(id) = self.find_networks(scope).await?.into_iter().next() {
            return Ok(id);
        }
        let created = self
            .docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".to_owned()),
                labels: Some(scope_labels(scope)),
                ..Default::default()
            })
            .await
            .map_err(self.engine_error(format!("creating network {name}")))?;
        Ok(created.id)
    }

    /// The network a replica of `spec` joins: the host's for a
    /// `host_network` spec, else the environment's (created when missing).
    async fn network_for(
        &self,
        scope: &Scope,
        spec: &ServiceSpec,
    ) -> Result<String, ProviderError> {
        if spec.host_network {
            Ok(HOST_NETWORK.to_owned())
        } else {
            self.ensure_network(scope).await
        }
    }

    /// The ids of the project's networks for the scope's environment (one,
    /// unless two creations raced).
    async fn find_networks(&self, scope: &Scope) -> Result<Vec<String>, ProviderError> {
        let name = network_name(scope);
        let filters = label_filters(scope, &[]);
        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(self.engine_error(format!("listing networks named {name}")))?;
        let mut ids: Vec<String> = networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name.as_str()))
            .filter_map(|n| n.id)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes the environment's network once no container of the
    /// environment is left. A network something else still uses (a
    /// container attached by hand) stays.
    async fn remove_network_if_unused(&self, scope: &Scope) -> Result<(), ProviderError> {
        let _serial = self.network_lock.lock().await;
        if !self.containers(scope, &[]).await?.is_empty() {
            return Ok(());
        }
        for id in self.find_networks(scope).await? {
            match self.docker.remove_network(&id).await {
                Ok(()) => {}
                Err(DockerError::DockerResponseServerError {
                    status_code: 404 | 403 | 409,
                    ..
                }) => {}
                Err(e) => {
                    return Err(self
                        .engine_error(format!("removing network {}", network_name(scope)))(
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// The scope's containers (all states), narrowed by more `key=value`
    /// label filters.
    async fn containers(
        &self,
        scope: &Scope,
        extra: &[(&str, &str)],
    ) -> Result<Vec<bollard::models::ContainerSummary>, ProviderError> {
        let filters = label_filters(scope, extra);
        self.docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(self.engine_error("listing containers"))
    }

    /// Removes the images in `images` (ids) that carry the project's labels
    /// and that no container uses any more: their mlops tags first (an
    /// image with several tags cannot be removed by id), then the id when
    /// nothing else is left of it.
    async fn remove_images_if_unused(
        &self,
        scope: &Scope,
        images: &BTreeSet<String>,
    ) -> Result<(), ProviderError> {
        for id in images {
            let image = match self.docker.inspect_image(id).await {
                Ok(image) => image,
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => continue,
                Err(e) => {
                    return Err(self
                        .engine_error(format!("inspecting image {}", short_id(id)))(
                        e
                    ));
                }
            };
            let labels = image
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            if labels.get(labels::MANAGED_BY).map(String::as_str) != Some(labels::MANAGED_BY_VALUE)
                || labels.get(labels::PROJECT) != Some(&scope.project)
            {
                continue;
            }
            let mut filters = HashMap::new();
            filters.insert("ancestor", vec![id.as_str()]);
            let users = self
                .docker
                .list_containers(Some(
                    ListContainersOptionsBuilder::default()
                        .all(true)
                        .filters(&filters)
                        .build(),
                ))
                .await
                .map_err(
                    self.engine_error(format!("listing the containers of image {}", short_id(id))),
                )?;
            if !users.is_empty() {
                continue;
            }
            let prefix = format!("mlops-{}-", docker_name(&scope.project));
            let mut references: Vec<String> = image
                .repo_tags
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.starts_with(&prefix))
                .collect();
            if references.is_empty() {
                references.push(id.clone());
            }
            for reference in references {
                match self
                    .docker
                    .remove_image(
                        &reference,
                        Some(RemoveImageOptionsBuilder::default().build()),
                        None,
                    )
                    .await
                {
                    Ok(_) => {}
                    // Gone already, or still tagged for something else.
                    Err(DockerError::DockerResponseServerError {
                        status_code: 404 | 409,
                        ..
                    }) => {}
                    Err(e) => {
                        return Err(self.engine_error(format!("removing image {reference}"))(e));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Provider for DockerProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Docker
    }

    fn observe<'a>(&'a self, scope: &'a Scope) -> ProviderFuture<'a, Vec<Instance>> {
        Box::pin(self.observe_all(scope))
    }

    fn start<'a>(&'a self, scope: &'a Scope, desired: &'a Desired) -> ProviderFuture<'a, Instance> {
        Box::pin(self.start_instance(scope, desired))
    }

    fn scale<'a>(
        &'a self,
        scope: &'a Scope,
        instance: &'a Instance,
        replicas: u32,
    ) -> ProviderFuture<'a, Instance> {
        Box::pin(self.scale_instance(scope, &instance.id, replicas))
    }

    fn stop<'a>(&'a self, scope: &'a Scope, instance: &'a Instance) -> ProviderFuture<'a, ()> {
        Box::pin(self.stop_instance(scope, &instance.id))
    }

    fn logs<'a>(
        &'a self,
        scope: &'a Scope,
        instance: &'a Instance,
        lines: usize,
    ) -> ProviderFuture<'a, String> {
        Box::pin(self.instance_logs(scope, &instance.id, lines))
    }
}

/// The labels every object of the scope carries.
fn scope_labels(scope: &Scope) -> HashMap<String, String> {
    HashMap::from([
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (labels::PROJECT.to_owned(), scope.project.clone()),
        (labels::ENVIRONMENT.to_owned(), scope.environment.clone()),
    ])
}

/// A `label` filter for the scope's objects, narrowed by `extra` labels.
fn label_filters(scope: &Scope, extra: &[(&str, &str)]) -> HashMap<&'static str, Vec<String>> {
    let mut wanted = vec![
        format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
        format!("{}={}", labels::PROJECT, scope.project),
        format!("{}={}", labels::ENVIRONMENT, scope.environment),
    ];
    wanted.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    HashMap::from([("label", wanted)])
}

/// A name Docker accepts for images, containers and networks: lowercase
/// letters, digits, `_`, `.` and `-`.
pub fn docker_name(text: &str) -> String {
    let name: String = text
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches(['_', '.', '-']);
    if name.is_empty() {
        "x".to_owned()
    } else {
        name.to_owned()
    }
}

/// The image of a service revision: `mlops-<project>-<service>:<revision>`.
pub fn image_tag(project: &str, service: &str, revision: &str) -> String {
    let mut tag: String = revision
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if tag.is_empty() || tag.starts_with(['.', '-']) {
        tag.insert(0, 'r');
        tag.truncate(128);
    }
    format!(
        "mlops-{}-{}:{tag}",
        docker_name(project),
        docker_name(service)
    )
}

/// The network of a project's environment: `mlops-<project>-<env>`.
pub fn network_name(scope: &Scope) -> String {
    format!(
        "mlops-{}-{}",
        docker_name(&scope.project),
        docker_name(&scope.environment)
    )
}

/// The container of one replica: `mlops-<project>-<env>-<service>-<id>-<n>`.
pub fn container_name(scope: &Scope, service: &str, instance: &str, index: u32) -> String {
    format!(
        "{}-{}-{}-{index}",
        network_name(scope),
        docker_name(service),
        docker_name(instance)
    )
}

/// A fresh instance id: the revision's first 8 characters and 6 random hex
/// digits (the local provider's shape).
fn new_instance_id(revision: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let short: String = docker_name(revision).chars().take(8).collect();
    let tag = blake3::hash(format!("{nanos}-{}-{n}", std::process::id()).as_bytes()).to_hex();
    format!("{short}-{}", &tag[..6])
}

/// The first 12 hex digits of an id (`sha256:` dropped).
fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// An engine error in one line: the engine's own message when it sent one.
fn describe(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{} (HTTP {status_code})", message.trim()),
        DockerError::DockerStreamError { error } => error.trim().to_owned(),
        DockerError::SocketNotFoundError(path) => format!("no socket at {path}"),
        other => {
            // Transport errors say little at the top ("client error
            // (Connect)"); the cause is further down.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text.push_str(": ");
                    text.push_str(&cause_text);
                }
                source = cause.source();
            }
            text
        }
    }
}

/// The last `lines` lines of `text`.
fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_docker_names() {
        let scope = Scope {
            project: "My Project".into(),
            environment: "dev".into(),
            root: "/p".into(),
        };
        assert_eq!(network_name(&scope), "mlops-my-project-dev");
        assert_eq!(
            container_name(&scope, "api", "abcd1234-ef0123", 1),
            "mlops-my-project-dev-api-abcd1234-ef0123-1"
        );
        assert_eq!(image_tag("P", "api", "0123abcd"), "mlops-p-api:0123abcd");
        assert_eq!(image_tag("p", "api", "-x/y"), "mlops-p-api:r-x-y");
        assert_eq!(docker_name("..."), "x");
        let id = new_instance_id("0123456789abcdef");
        assert!(id.starts_with("01234567-") && id.len() == 15, "{id}");
        assert_ne!(id, new_instance_id("0123456789abcdef"));
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }
}
