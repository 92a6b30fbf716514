//! What running containers use, from the engine's stats API: the
//! monitoring collector's CPU and memory per replica when replicas are
//! containers (a local process is read from `/proc` instead).

use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder};
use futures_util::StreamExt as _;

use super::{DockerProvider, labels};
use crate::provider::ProviderError;

/// One running container's use of the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    /// The container's name.
    pub container: String,
    /// The loopback port it answers on: the one published on 127.0.0.1,
    /// or, in the host's network, the one it listens on.
    pub port: Option<u16>,
    /// CPU time in user and kernel mode since it started, in seconds.
    pub cpu_seconds: f64,
    /// Memory in use as `docker stats` counts it: the cgroup's usage less
    /// its inactive file cache.
    pub memory_bytes: u64,
}

impl DockerProvider {
    /// Every running container mlops manages (whatever its project), with
    /// what it uses now. A container that ends between the listing and
    /// its stats is left out.
    pub async fn container_usage(&self) -> Result<Vec<ContainerUsage>, ProviderError> {
        let filters = std::collections::HashMap::from([(
            "label",
            vec![format!(
                "{}={}",
                labels::MANAGED_BY,
                labels::MANAGED_BY_VALUE
            )],
        )]);
        let running = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(self.engine_error("listing containers"))?;
        let stats = running.iter().filter_map(|c| {
            let id = c.id.clone()?;
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map_or_else(|| id.clone(), |n| n.trim_start_matches('/').to_owned());
            let port = c
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::HOST_PORT))
                .and_then(|p| p.parse().ok())
                .or_else(|| {
                    c.ports.as_ref()?.iter().find_map(|p| {
                        (p.ip.as_deref() == Some("127.0.0.1"))
                            .then_some(p.public_port)
                            .flatten()
                    })
                });
            Some(async move {
                let options = StatsOptionsBuilder::default()
                    .stream(false)
                    .one_shot(true)
                    .build();
                let s = self.docker.stats(&id, Some(options)).next().await?.ok()?;
                let cpu_ns = s.cpu_stats.as_ref()?.cpu_usage.as_ref()?.total_usage?;
                let memory = s.memory_stats.as_ref()?;
                let inactive = memory.stats.as_ref().and_then(|m| {
                    m.get("inactive_file")
                        .or_else(|| m.get("total_inactive_file"))
                        .copied()
                });
                let usage = memory.usage?;
                Some(ContainerUsage {
                    container: name,
                    port,
                    cpu_seconds: cpu_ns as f64 / 1e9,
                    memory_bytes: usage.saturating_sub(inactive.unwrap_or(0)),
                })
            })
        });
        Ok(futures_util::future::join_all(stats)
            .await
            .into_iter()
            .flatten()
            .collect())
    }
}
