//! Replicas as containers: what one is created with, waiting until the new
//! ones answer their health check from the host, and removing them.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings,
    HostConfig, HostConfigLogConfig, Mount, MountType, NetworkingConfig, PortBinding,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

use super::image::binary_name;
use super::{
    DockerProvider, LISTEN_HOST, MODEL_DIR, container_name, describe, labels, scope_labels,
};
use crate::provider::{Desired, ProviderError, Scope, fill, replica_env};
use crate::spec::{ProviderKind, RestartPolicy, ServiceSpec};

/// How many log lines per replica an `Unhealthy` error carries.
const LOG_TAIL: usize = 20;
/// The tmpfs a read-only container gets at `/tmp`.
const TMPFS_OPTIONS: &str = "rw,nosuid,nodev,size=64m,mode=1777";

/// Everything needed to create any replica of an instance.
#[derive(Debug)]
pub(super) struct ReplicaTemplate {
    /// The spec, model, revision, and the caller's values (secrets too).
    pub(super) desired: Desired,
    pub(super) instance: String,
    /// The image id containers are created from (fixed: a rebuilt tag does
    /// not change what new replicas of this instance run).
    pub(super) image_id: String,
    /// The image reference (label [`labels::IMAGE`]).
    pub(super) image: String,
    /// The network id.
    pub(super) network: String,
    /// The host directory mounted read-only at [`MODEL_DIR`].
    pub(super) model_source: Option<PathBuf>,
    /// The instance's replica count (label [`labels::DESIRED_REPLICAS`]).
    pub(super) desired_replicas: u32,
    /// The engine's unix socket on the host, for a spec that asks for it.
    pub(super) engine_socket: Option<PathBuf>,
}

/// Where a container that reads the engine finds its socket.
const ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// The published `port/tcp` key of a container port.
pub(super) fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// The host port a replica of `spec` answers on at 127.0.0.1: the one it
/// listens on in the host's network (its [`labels::HOST_PORT`]) for a
/// `host_network` spec, else the one its port is published on.
pub(super) fn replica_port(inspect: &ContainerInspectResponse, spec: &ServiceSpec) -> Option<u16> {
    if spec.host_network {
        inspect
            .config
            .as_ref()?
            .labels
            .as_ref()?
            .get(labels::HOST_PORT)?
            .parse()
            .ok()
    } else {
        published_port(inspect, spec.port)
    }
}

/// The host port a container publishes `port` on at 127.0.0.1, if any.
fn published_port(inspect: &ContainerInspectResponse, port: u16) -> Option<u16> {
    let ports = inspect.network_settings.as_ref()?.ports.as_ref()?;
    ports
        .get(&port_key(port))?
        .as_ref()?
        .iter()
        .filter(|b| b.host_ip.as_deref() == Some("127.0.0.1"))
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

/// How a container last exited, from its state.
pub(super) fn exit_description(inspect: &ContainerInspectResponse) -> Option<String> {
    let state = inspect.state.as_ref()?;
    let code = state.exit_code.unwrap_or(0);
    let mut text = format!("exit code {code}");
    if state.oom_killed == Some(true) {
        text.push_str(", killed: out of memory");
    }
    if let Some(error) = state.error.as_deref().filter(|e| !e.is_empty()) {
        text.push_str(&format!(", {error}"));
    }
    Some(text)
}

impl ReplicaTemplate {
    /// The container of replica `index`. Secret values go into its
    /// environment and nowhere else.
    fn body(&self, scope: &Scope, index: u32) -> Result<ContainerCreateBody, ProviderError> {
        let spec = &self.desired.spec;
        let version = self
            .desired
            .model
            .as_ref()
            .map_or("", |m| m.version.as_str());
        // In the host's network the replica listens on the host's loopback
        // (as a local process does), on a port of its own.
        let (host, port) = if spec.host_network {
            (Ipv4Addr::LOCALHOST.to_string(), host_port(spec)?)
        } else {
            (LISTEN_HOST.to_owned(), spec.port)
        };
        let mut command: Vec<String> = spec
            .command
            .iter()
            .map(|w| fill(w, port, &host, MODEL_DIR, index, version))
            .collect();
        if let Some(name) = binary_name(spec.build.as_ref())
            && std::path::Path::new(&command[0])
                .file_name()
                .is_some_and(|n| n.to_string_lossy() == name)
        {
            command[0] = format!("/app/{name}");
        }
        if command.is_empty() {
            return Err(ProviderError::Invalid {
                service: spec.name.clone(),
                detail: "`command` is empty: it must name the program to run".to_owned(),
            });
        }
        let mut env: Vec<String> = replica_env(&self.desired, port, &host, MODEL_DIR, index)?
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let engine = match (&self.engine_socket, spec.engine_socket) {
            (Some(path), true) => {
                use std::os::unix::fs::MetadataExt as _;
                let gid = std::fs::metadata(path)
                    .map_err(|e| ProviderError::Invalid {
                        service: spec.name.clone(),
                        detail: format!("the engine's socket {}: {e}", path.display()),
                    })?
                    .gid();
                env.push(format!("DOCKER_HOST=unix://{ENGINE_SOCKET}"));
                Some((path.display().to_string(), gid))
            }
            (None, true) => {
                return Err(ProviderError::Invalid {
                    service: spec.name.clone(),
                    detail:
                        "it reads the engine, which this provider does not reach by a unix socket"
                            .to_owned(),
                });
            }
            _ => None,
        };
        let spec_json = serde_json::to_string(spec).map_err(|e| ProviderError::Invalid {
            service: spec.name.clone(),
            detail: format!("cannot serialize the spec: {e}"),
        })?;
        let mut container_labels = scope_labels(scope);
        container_labels.extend([
            (labels::SERVICE.to_owned(), spec.name.clone()),
            (labels::REVISION.to_owned(), self.desired.revision.clone()),
            (labels::INSTANCE.to_owned(), self.instance.clone()),
            (labels::REPLICA.to_owned(), index.to_string()),
            (
                labels::DESIRED_REPLICAS.to_owned(),
                self.desired_replicas.to_string(),
            ),
            (labels::SPEC.to_owned(), spec_json),
            (labels::IMAGE.to_owned(), self.image.clone()),
        ]);
        if let Some(model) = &self.desired.model {
            container_labels.insert(labels::MODEL_VERSION.to_owned(), model.version.clone());
        }
        if let Some(owner) = &self.desired.owner {
            container_labels.insert(labels::OWNER.to_owned(), owner.clone());
        }
        if spec.host_network {
            container_labels.insert(labels::HOST_PORT.to_owned(), port.to_string());
        }
        let port = port_key(spec.port);
        let mut mounts = Vec::new();
        if let Some(source) = &self.model_source {
            mounts.push(Mount {
                target: Some(MODEL_DIR.to_owned()),
                source: Some(source.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        }
        if let Some((socket, _)) = &engine {
            mounts.push(Mount {
                target: Some(ENGINE_SOCKET.to_owned()),
                source: Some(socket.clone()),
                typ: Some(MountType::BIND),
                read_only: Some(false),
                ..Default::default()
            });
        }
        if let Some(dir) = &spec.state_dir {
            let dir = dir.display().to_string();
            mounts.push(Mount {
                target: Some(dir.clone()),
                source: Some(dir),
                typ: Some(MountType::BIND),
                read_only: Some(false),
                ..Default::default()
            });
        }
        let restart = match spec.restart {
            RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
            RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
            RestartPolicy::Never => RestartPolicyNameEnum::NO,
        };
        let host_config = HostConfig {
            nano_cpus: spec.resources.cpus.map(|c| (c * 1e9).round() as i64),
            memory: spec.resources.memory.map(|m| m.min(i64::MAX as u64) as i64),
            readonly_rootfs: Some(spec.read_only),
            tmpfs: spec
                .read_only
                .then(|| HashMap::from([("/tmp".to_owned(), TMPFS_OPTIONS.to_owned())])),
            mounts: (!mounts.is_empty()).then_some(mounts),
            // Nothing to publish from the host's network.
            port_bindings: (!spec.host_network).then(|| {
                HashMap::from([(
                    port.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_owned()),
                        host_port: Some(spec.host_port.map(|p| p.to_string()).unwrap_or_default()),
                    }]),
                )])
            }),
            restart_policy: Some(DockerRestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            network_mode: Some(self.network.clone()),
            // A service running as root asked for root: it keeps Docker's
            // default capabilities. Anyone else needs none, and neither
            // does anything in the host's network (NET_RAW there would
            // reach the host's own interfaces).
            cap_drop: (!runs_as_root(&spec.user) || spec.host_network)
                .then(|| vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            group_add: engine.as_ref().map(|(_, gid)| vec![gid.to_string()]),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), "10m".to_owned()),
                    ("max-file".to_owned(), "3".to_owned()),
                ])),
            }),
            ..Default::default()
        };
        Ok(ContainerCreateBody {
            image: Some(self.image_id.clone()),
            entrypoint: Some(vec![command[0].clone()]),
            cmd: Some(command[1..].to_vec()),
            env: Some(env),
            user: Some(spec.user.clone()),
            labels: Some(container_labels),
            exposed_ports: (!spec.host_network).then(|| vec![port]),
            // The host's network has the host's name (Docker refuses
            // another).
            hostname: Some(format!("{}-{index}", super::docker_name(&spec.name)))
                .filter(|h| h.len() <= 63 && !spec.host_network),
            stop_timeout: Some(spec.stop_grace.as_secs_f64().ceil() as i64),
            host_config: Some(host_config),
            // Aliases are for user-defined networks only.
            networking_config: (!spec.host_network).then(|| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![spec.name.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        })
    }
}

impl DockerProvider {
    /// Creates and starts the replicas `indexes`, pushing each created
    /// container onto `created` (so the caller can remove them on failure),
    /// then waits until all of them are healthy.
    pub(super) async fn start_replicas(
        &self,
        scope: &Scope,
        template: &ReplicaTemplate,
        indexes: impl IntoIterator<Item = u32>,
        created: &mut Vec<(u32, String)>,
    ) -> Result<(), ProviderError> {
        let spec = &template.desired.spec;
        let first = created.len();
        for index in indexes {
            let name = container_name(scope, &spec.name, &template.instance, index);
            let body = template.body(scope, index)?;
            let container = self
                .docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                    body,
                )
                .await
                .map_err(self.engine_error(format!("creating container {name}")))?;
            created.push((index, container.id.clone()));
            if let Err(e) = self.docker.start_container(&container.id, None).await {
                let text = describe(&e);
                if let Some(port) = spec.host_port
                    && (text.contains("already allocated")
                        || text.contains("address already in use"))
                {
                    return Err(ProviderError::PortTaken {
                        service: spec.name.clone(),
                        port,
                    });
                }
                return Err(self.engine_error(format!("starting container {name}"))(e));
            }
        }
        self.wait_healthy(template, &created[first..]).await
    }

    /// Polls the replicas until every one answers its health check with a
    /// 2xx, or the health deadline passes (`Unhealthy`, with the last
    /// error and the tail of the failing replicas' logs). A replica that
    /// exited and will not be restarted fails at once.
    async fn wait_healthy(
        &self,
        template: &ReplicaTemplate,
        replicas: &[(u32, String)],
    ) -> Result<(), ProviderError> {
        let spec = &template.desired.spec;
        let health = &spec.health;
        let started = Instant::now();
        let mut pending: Vec<(u32, String)> = replicas.to_vec();
        let mut last_error: Option<String> = None;
        let interval = health
            .interval
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let checks = pending.iter().map(|(index, id)| async move {
                let inspect = match self.docker.inspect_container(id, None).await {
                    Ok(inspect) => inspect,
                    Err(e) => {
                        return Check::Failed(format!("replica {index}: {}", describe(&e)), true);
                    }
                };
                let state = inspect.state.as_ref();
                let status = state.and_then(|s| s.status);
                match status {
                    Some(ContainerStateStatusEnum::RUNNING) => {
                        let Some(port) = replica_port(&inspect, spec) else {
                            let what = if spec.host_network {
                                format!("its {} label is missing", labels::HOST_PORT)
                            } else {
                                format!("port {} is not published yet", spec.port)
                            };
                            return Check::Failed(format!("replica {index}: {what}"), false);
                        };
                        match crate::health::check(port, &health.path, health.timeout).await {
                            Ok(_) => Check::Healthy,
                            Err(e) => Check::Failed(format!("replica {index}: {e}"), false),
                        }
                    }
                    Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                        let code = state.and_then(|s| s.exit_code).unwrap_or(0);
                        let restarts = match spec.restart {
                            RestartPolicy::Always => true,
                            RestartPolicy::OnFailure => code != 0,
                            RestartPolicy::Never => false,
                        };
                        let how = exit_description(&inspect).unwrap_or_default();
                        Check::Failed(
                            format!("replica {index}: the container exited ({how})"),
                            !restarts,
                        )
                    }
                    other => Check::Failed(
                        format!(
                            "replica {index}: the container is {}",
                            other.map_or_else(|| "in no state".to_owned(), |s| s.to_string())
                        ),
                        false,
                    ),
                }
            });
            let results = join_all(checks).await;
            let mut still = Vec::new();
            let mut fatal = false;
            for (replica, check) in pending.into_iter().zip(results) {
                match check {
                    Check::Healthy => {}
                    Check::Failed(e, is_fatal) => {
                        fatal |= is_fatal;
                        last_error = Some(e);
                        still.push(replica);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            let waited = started.elapsed();
            if fatal || waited >= health.deadline {
                let mut log_tail = String::new();
                for (index, id) in &pending {
                    log_tail.push_str(&self.container_logs(*index, id, LOG_TAIL).await);
                }
                return Err(ProviderError::Unhealthy {
                    service: spec.name.clone(),
                    waited_ms: waited.as_millis() as u64,
                    last_error,
                    log_tail: log_tail.trim_end().to_owned(),
                });
            }
            tokio::time::sleep(interval.min(health.deadline - waited)).await;
        }
    }

    /// Stops the containers (SIGTERM, then SIGKILL after `grace`), all at
    /// once, and removes them. Containers already gone are fine.
    pub(super) async fn remove_containers(
        &self,
        ids: &[String],
        grace: Duration,
    ) -> Result<(), ProviderError> {
        let seconds = grace.as_secs_f64().ceil().min(i32::MAX as f64) as i32;
        let removals = ids.iter().map(|id| async move {
            let stopped = self
                .docker
                .stop_container(
                    id,
                    Some(StopContainerOptionsBuilder::default().t(seconds).build()),
                )
                .await;
            match stopped {
                Ok(())
                | Err(DockerError::DockerResponseServerError {
                    status_code: 304 | 404,
                    ..
                }) => {}
                Err(e) => {
                    return Err(self.engine_error(format!(
                        "stopping container {}",
                        super::short_id(id)
                    ))(e));
                }
            }
            match self
                .docker
                .remove_container(
                    id,
                    Some(
                        RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await
            {
                Ok(())
                | Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(()),
                // Already being removed (by a concurrent stop).
                Err(DockerError::DockerResponseServerError {
                    status_code: 409, ..
                }) => Ok(()),
                Err(e) => Err(self
                    .engine_error(format!("removing container {}", super::short_id(id)))(
                    e,
                )),
            }
        });
        join_all(removals).await.into_iter().collect()
    }

    /// The last `lines` lines of a container's output (stdout and stderr),
    /// each prefixed with `[index] `.
    pub(super) async fn container_logs(&self, index: u32, id: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut bytes = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(output) => bytes.extend_from_slice(output.as_ref()),
                Err(e) => {
                    bytes.extend_from_slice(
                        format!("(cannot read the logs: {})\n", describe(&e)).as_bytes(),
                    );
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut out = String::new();
        for line in super::tail_lines(&text, lines).lines() {
            out.push_str(&format!("[{index}] {line}\n"));
        }
        out
    }
}

/// Whether `user` (`name`, `uid`, `uid:gid`) is root.
fn runs_as_root(user: &str) -> bool {
    matches!(user.split(':').next(), Some("0" | "root"))
}

/// One health poll of a replica.
enum Check {
    Healthy,
    /// What failed, and whether waiting longer cannot help.
    Failed(String, bool),
}

/// The host port a new replica in the host's network listens on: the
/// spec's `host_port`, else a free one of the host's loopback (as the
/// local provider allocates one).
fn host_port(spec: &ServiceSpec) -> Result<u16, ProviderError> {
    if let Some(port) = spec.host_port {
        return Ok(port);
    }
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ProviderError::Backend {
            provider: ProviderKind::Docker,
            what: "allocating a port on 127.0.0.1".to_owned(),
            detail: e.to_string(),
        })
}

/// Refuses a fixed host port something already listens on, before anything
/// is created.
pub(super) fn ensure_port_free(service: &str, port: u16) -> Result<(), ProviderError> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ProviderError::PortTaken {
            service: service.to_owned(),
            port,
        }),
        Err(e) => Err(ProviderError::Backend {
            provider: ProviderKind::Docker,
            what: format!("checking port {port} on 127.0.0.1"),
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_users() {
        assert!(runs_as_root("0"));
        assert!(runs_as_root("0:0"));
        assert!(runs_as_root("root"));
        assert!(!runs_as_root("65534:65534"));
        assert!(!runs_as_root("1000:0"));
    }
}
