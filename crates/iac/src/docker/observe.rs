//! Observing: the scope's labelled containers grouped by instance (plus
//! records of instances without containers), each replica's state, port
//! and live health, and the drift a plan must see: replicas stopped or
//! removed by hand, containers whose labels or names do not fit their
//! instance, containers that do not run their revision's image.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary};
use futures_util::future::join_all;

use super::lifecycle::{label, replica_index, spec_label};
use super::record::{self, InstanceRecord};
use super::replica::{exit_description, replica_port};
use super::{DockerProvider, container_name, image_tag, labels, short_id};
use crate::provider::{Instance, ProviderError, Replica, ReplicaState, Scope};
use crate::spec::{BuildSpec, ProviderKind, ServiceSpec};

/// The longest a health check in `observe` may take.
const OBSERVE_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// What an instance should be, against which its containers are checked.
struct Identity {
    service: String,
    revision: String,
    model_version: Option<String>,
    spec: Option<ServiceSpec>,
    desired_replicas: u32,
    owner: Option<String>,
}

impl DockerProvider {
    pub(super) async fn observe_all(&self, scope: &Scope) -> Result<Vec<Instance>, ProviderError> {
        let containers = self.containers(scope, &[]).await?;
        let mut groups: BTreeMap<String, Vec<ContainerSummary>> = BTreeMap::new();
        for container in containers {
            if let Some(id) = label(&container, labels::INSTANCE) {
                groups.entry(id.to_owned()).or_default().push(container);
            }
        }
        let mut records: BTreeMap<String, InstanceRecord> = record::all(scope)
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let ids: BTreeSet<String> = groups.keys().chain(records.keys()).cloned().collect();
        let mut image_ids = ImageIds::default();
        let mut instances = Vec::new();
        for id in ids {
            let containers = groups.remove(&id).unwrap_or_default();
            let found = records.remove(&id);
            instances.push(
                self.describe(scope, &id, containers, found, &mut image_ids)
                    .await?,
            );
        }
        Ok(instances)
    }

    /// One instance, as `observe` would show it.
    pub(super) async fn observe_instance(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<Instance, ProviderError> {
        let containers = self.containers(scope, &[(labels::INSTANCE, id)]).await?;
        let found = record::read(scope, id);
        if containers.is_empty() && found.is_none() {
            return Err(ProviderError::Backend {
                provider: ProviderKind::Docker,
                what: format!("observing instance {id}"),
                detail: "it no longer exists".to_owned(),
            });
        }
        self.describe(scope, id, containers, found, &mut ImageIds::default())
            .await
    }

    async fn describe(
        &self,
        scope: &Scope,
        id: &str,
        containers: Vec<ContainerSummary>,
        found: Option<InstanceRecord>,
        image_ids: &mut ImageIds,
    ) -> Result<Instance, ProviderError> {
        let inspections = join_all(containers.iter().map(|c| async move {
            let container_id = c.id.clone().unwrap_or_default();
            match self.docker.inspect_container(&container_id, None).await {
                Ok(inspect) => Ok(Some(inspect)),
                // Removed since it was listed.
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(None),
                Err(e) => Err(self.engine_error(format!(
                    "inspecting container {}",
                    short_id(&container_id)
                ))(e)),
            }
        }))
        .await;
        let mut members: Vec<(ContainerSummary, ContainerInspectResponse)> = Vec::new();
        for (container, inspect) in containers.into_iter().zip(inspections) {
            if let Some(inspect) = inspect? {
                members.push((container, inspect));
            }
        }
        members.sort_by_key(|(c, _)| replica_index(c).unwrap_or(u32::MAX));
        let identity = identity(found.as_ref(), &members);
        let mut problems = Vec::new();

        // The image the revision should run.
        let expected_image = match identity.spec.as_ref().and_then(|s| s.build.as_ref()) {
            Some(BuildSpec::Image { image }) => Some(image.clone()),
            Some(_) => Some(image_tag(
                &scope.project,
                &identity.service,
                &identity.revision,
            )),
            None => None,
        };
        let expected_image_id = match &expected_image {
            Some(reference) => {
                let resolved = image_ids.resolve(self, reference).await?;
                if resolved.is_none() && !members.is_empty() {
                    problems.push(format!(
                        "image {reference} of revision {} is no longer in the engine",
                        identity.revision
                    ));
                }
                resolved
            }
            None => None,
        };

        let mut replicas = Vec::new();
        let mut seen = BTreeSet::new();
        let mut checks = Vec::new();
        for (container, inspect) in &members {
            let name = inspect
                .name
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned();
            let Some(index) = replica_index(container) else {
                problems.push(format!(
                    "container {name} is labelled with instance {id} but has no replica index: it was not made by mlops as it is"
                ));
                continue;
            };
            if !seen.insert(index) {
                problems.push(format!(
                    "two containers claim replica {index} ({name} is one)"
                ));
            }
            for (key, expected) in [
                (labels::SERVICE, Some(identity.service.as_str())),
                (labels::REVISION, Some(identity.revision.as_str())),
                (labels::MODEL_VERSION, identity.model_version.as_deref()),
                (labels::OWNER, identity.owner.as_deref()),
            ] {
                let actual = label(container, key);
                if actual != expected {
                    problems.push(format!(
                        "replica {index} ({name}) has {key}={}, but instance {id} has {}: its labels were changed",
                        actual.unwrap_or("(none)"),
                        expected.unwrap_or("(none)")
                    ));
                }
            }
            let expected_name = container_name(scope, &identity.service, id, index);
            if name != expected_name {
                problems.push(format!(
                    "replica {index} is container {name}, expected {expected_name}: it was renamed or made by hand"
                ));
            }
            if let (Some(want), Some(have)) = (&expected_image_id, &inspect.image)
                && want != have
            {
                problems.push(format!(
                    "replica {index} runs image {}, but revision {} is image {} ({})",
                    short_id(have),
                    identity.revision,
                    short_id(want),
                    expected_image.as_deref().unwrap_or_default()
                ));
            }

            let status = inspect.state.as_ref().and_then(|s| s.status);
            let paused = inspect.state.as_ref().and_then(|s| s.paused) == Some(true);
            let state = match status {
                _ if paused => ReplicaState::Exited,
                Some(ContainerStateStatusEnum::RUNNING) => ReplicaState::Running,
                Some(ContainerStateStatusEnum::RESTARTING) => ReplicaState::Restarting,
                Some(ContainerStateStatusEnum::CREATED)
                | Some(ContainerStateStatusEnum::EMPTY)
                | None => ReplicaState::Starting,
                Some(_) => ReplicaState::Exited,
            };
            let restarts = inspect.restart_count.unwrap_or(0).max(0) as u32;
            let last_exit = if paused {
                Some("paused".to_owned())
            } else if matches!(state, ReplicaState::Exited | ReplicaState::Restarting)
                || restarts > 0
            {
                exit_description(inspect)
            } else {
                None
            };
            let port = identity
                .spec
                .as_ref()
                .and_then(|spec| replica_port(inspect, spec));
            if state == ReplicaState::Running {
                checks.push((replicas.len(), port));
            }
            replicas.push(Replica {
                index,
                state,
                healthy: false,
                health_error: None,
                endpoint: port.map(|p| format!("http://127.0.0.1:{p}")),
                handle: short_id(container.id.as_deref().unwrap_or_default()).to_owned(),
                restarts,
                last_exit,
            });
        }

        // Live health of the running replicas, all at once.
        let spec = identity.spec.as_ref();
        let results = join_all(checks.iter().map(|(_, port)| async move {
            match (spec, port) {
                (None, _) => Err("the instance's spec label cannot be read".to_owned()),
                (Some(_), None) => Err("its port is not published on 127.0.0.1".to_owned()),
                (Some(spec), Some(port)) => crate::health::check(
                    *port,
                    &spec.health.path,
                    spec.health.timeout.min(OBSERVE_HEALTH_TIMEOUT),
                )
                .await
                .map(|_| ()),
            }
        }))
        .await;
        for ((position, _), result) in checks.iter().zip(results) {
            match result {
                Ok(()) => replicas[*position].healthy = true,
                Err(e) => replicas[*position].health_error = Some(e),
            }
        }

        for index in 0..identity.desired_replicas {
            if !seen.contains(&index) {
                replicas.push(Replica {
                    index,
                    state: ReplicaState::Missing,
                    healthy: false,
                    health_error: None,
                    endpoint: None,
                    handle: String::new(),
                    restarts: 0,
                    last_exit: None,
                });
            }
        }
        replicas.sort_by_key(|r| r.index);
        Ok(Instance {
            id: id.to_owned(),
            provider: ProviderKind::Docker,
            service: identity.service,
            revision: identity.revision,
            model_version: identity.model_version,
            desired_replicas: identity.desired_replicas,
            replicas,
            problems,
            owner: identity.owner,
        })
    }
}

/// The instance's identity: its record, else the labels of its
/// lowest-index container.
fn identity(
    found: Option<&InstanceRecord>,
    members: &[(ContainerSummary, ContainerInspectResponse)],
) -> Identity {
    if let Some(r) = found {
        return Identity {
            service: r.service.clone(),
            revision: r.revision.clone(),
            model_version: r.model.as_ref().map(|m| m.version.clone()),
            spec: Some(r.spec.clone()),
            desired_replicas: r.desired_replicas,
            // A label is set when the container is created and never
            // changes: an owner it names stands even if the record lost it
            // (the disagreement is still reported as a problem), so apply
            // never removes a controller's instance over a damaged record.
            owner: r.owner.clone().or_else(|| {
                members
                    .iter()
                    .find_map(|(c, _)| label(c, labels::OWNER))
                    .map(str::to_owned)
            }),
        };
    }
    let first = members.first().map(|(c, _)| c);
    let text = |key| {
        first
            .and_then(|c| label(c, key))
            .unwrap_or_default()
            .to_owned()
    };
    Identity {
        service: text(labels::SERVICE),
        revision: text(labels::REVISION),
        model_version: first
            .and_then(|c| label(c, labels::MODEL_VERSION))
            .map(str::to_owned),
        spec: members.iter().find_map(|(c, _)| spec_label(c)),
        desired_replicas: members
            .iter()
            .filter_map(|(c, _)| label(c, labels::DESIRED_REPLICAS)?.parse().ok())
            .max()
            .unwrap_or(members.len() as u32),
        owner: first
            .and_then(|c| label(c, labels::OWNER))
            .map(str::to_owned),
    }
}

/// Image references resolved to ids, once per `observe`.
#[derive(Default)]
struct ImageIds(HashMap<String, Option<String>>);

impl ImageIds {
    async fn resolve(
        &mut self,
        provider: &DockerProvider,
        reference: &str,
    ) -> Result<Option<String>, ProviderError> {
        if let Some(id) = self.0.get(reference) {
            return Ok(id.clone());
        }
        let id = match provider.docker.inspect_image(reference).await {
            Ok(image) => image.id,
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(e) => {
                return Err(provider
                    .engine_error(format!("inspecting image {reference}"))(
                    e
                ));
            }
        };
        self.0.insert(reference.to_owned(), id.clone());
        Ok(id)
    }
}
