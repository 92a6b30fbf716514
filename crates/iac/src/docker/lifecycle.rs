//! Starting, scaling, stopping an instance, and reading its logs.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use bollard::models::ContainerSummary;

use super::image::ServiceImage;
use super::record::{self, InstanceRecord};
use super::replica::{ReplicaTemplate, ensure_port_free};
use super::{DockerProvider, LISTEN_HOST, MODEL_DIR, labels, new_instance_id};
use crate::provider::{
    Desired, Instance, ModelRef, ProviderError, Scope, check_state_dir, model_dir,
    named_model_files, replica_env,
};
use crate::spec::{EnvValue, ProviderKind, ServiceSpec};

/// The stop grace when an instance's spec cannot be read.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The replica index a container is labelled with.
pub(super) fn replica_index(container: &ContainerSummary) -> Option<u32> {
    container
        .labels
        .as_ref()?
        .get(labels::REPLICA)?
        .parse()
        .ok()
}

/// A label of a container.
pub(super) fn label<'a>(container: &'a ContainerSummary, key: &str) -> Option<&'a str> {
    container.labels.as_ref()?.get(key).map(String::as_str)
}

/// The spec a container carries in its labels.
pub(super) fn spec_label(container: &ContainerSummary) -> Option<ServiceSpec> {
    serde_json::from_str(label(container, labels::SPEC)?).ok()
}

/// The host directory mounted read-only at `/model`: the one `{model-dir}`
/// means on every provider ([`model_dir`]: the deployed version's files,
/// else the spec's `model-dir`, else the project). It must exist (Docker
/// would create a missing one, owned by root) and the container's user
/// must be able to read it, and the files the service names in it.
fn model_source(scope: &Scope, desired: &Desired) -> Result<PathBuf, ProviderError> {
    let spec = &desired.spec;
    let dir = model_dir(&scope.root, spec, desired.model.as_ref());
    let invalid = |detail: String| ProviderError::Invalid {
        service: spec.name.clone(),
        detail,
    };
    if !dir.is_dir() {
        return Err(invalid(format!(
            "the model directory {} does not exist",
            dir.display()
        )));
    }
    // The directory, then every directory and file on the way to a named
    // file (the container resolves those paths as its user).
    let mut paths = vec![dir.clone()];
    for file in named_model_files(spec) {
        let mut path = dir.clone();
        for part in &file {
            path.push(part);
            paths.push(path.clone());
        }
    }
    for path in paths {
        let Ok(meta) = std::fs::metadata(&path) else {
            // A named file that is not there is the service's to report.
            continue;
        };
        if readable_by(&meta, &spec.user) == Some(false) {
            let (what, bits) = if meta.is_dir() {
                ("directory", "o+rx")
            } else {
                ("file", "o+r")
            };
            return Err(invalid(format!(
                "the model {what} {path} (owner {uid}:{gid}, mode {mode:o}) is not readable by the \
                 container's user {user}, which sees it at {MODEL_DIR}{inner}: make it readable \
                 (chmod {bits} {path}), point `model-dir` at a directory that is, or set `user` \
                 to its owner",
                path = path.display(),
                uid = meta.uid(),
                gid = meta.gid(),
                mode = meta.mode() & 0o7777,
                user = spec.user,
                inner = path
                    .strip_prefix(&dir)
                    .ok()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(|p| format!("/{}", p.display()))
                    .unwrap_or_default(),
            )));
        }
    }
    Ok(dir)
}

/// Whether a container running as `user` (`uid[:gid]`) can read `meta`'s
/// file (and enter it, a directory) through a bind mount, by its owner,
/// group and mode on the host. `None` when that cannot be told here: a
/// user name (the image's `/etc/passwd` resolves it), or no group given
/// and only the group's bits would allow it.
fn readable_by(meta: &std::fs::Metadata, user: &str) -> Option<bool> {
    let (uid, gid) = match user.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid.parse::<u32>().ok()?)),
        None => (user, None),
    };
    let uid: u32 = uid.parse().ok()?;
    if uid == 0 {
        return Some(true);
    }
    let need = if meta.is_dir() { 0o5 } else { 0o4 };
    let allows = |shift: u32| (meta.mode() >> shift) & need == need;
    Some(if meta.uid() == uid {
        allows(6)
    } else if gid == Some(meta.gid()) {
        allows(3)
    } else if gid.is_none() && !allows(0) && allows(3) {
        return None;
    } else {
        allows(0)
    })
}

impl DockerProvider {
    pub(super) async fn start_instance(
        &self,
        scope: &Scope,
        desired: &Desired,
    ) -> Result<Instance, ProviderError> {
        let spec = &desired.spec;
        if spec.command.is_empty() {
            return Err(ProviderError::Invalid {
                service: spec.name.clone(),
                detail: "`command` is empty: it must name the program to run".to_owned(),
            });
        }
        if spec.host_port.is_some() && spec.replicas > 1 {
            return Err(ProviderError::Invalid {
                service: spec.name.clone(),
                detail: format!(
                    "`host-port` pins one port, but the service has {} replicas",
                    spec.replicas
                ),
            });
        }
        // A missing caller variable fails before anything is built.
        replica_env(desired, spec.port, LISTEN_HOST, MODEL_DIR, 0)?;
        let model_source = model_source(scope, desired)?;
        check_state_dir(spec)?;
        if let Some(port) = spec.host_port {
            ensure_port_free(&spec.name, port)?;
        }
        let image = self.ensure_image(scope, desired).await?;
        let id = new_instance_id(&desired.revision);
        let mut created = Vec::new();
        let started = self
            .start_new(
                scope,
                desired,
                &id,
                &image,
                Some(model_source.clone()),
                &mut created,
            )
            .await;
        let recorded = started.and_then(|()| {
            record::write(
                scope,
                &InstanceRecord {
                    id: id.clone(),
                    service: spec.name.clone(),
                    revision: desired.revision.clone(),
                    spec: spec.clone(),
                    model: desired.model.clone(),
                    model_source: Some(model_source),
                    image: image.reference.clone(),
                    image_id: image.id.clone(),
                    desired_replicas: spec.replicas,
                    owner: desired.owner.clone(),
                },
            )
        });
        if let Err(e) = recorded {
            // Leave nothing of the new instance behind; the first error is
            // the one worth reporting.
            let ids: Vec<String> = created.into_iter().map(|(_, id)| id).collect();
            let _ = self.remove_containers(&ids, Duration::ZERO).await;
            let _ = record::remove(scope, &id);
            let _ = self
                .remove_images_if_unused(scope, &BTreeSet::from([image.id.clone()]))
                .await;
            let _ = self.remove_network_if_unused(scope).await;
            return Err(e);
        }
        self.observe_instance(scope, &id).await
    }

    async fn start_new(
        &self,
        scope: &Scope,
        desired: &Desired,
        id: &str,
        image: &ServiceImage,
        model_source: Option<PathBuf>,
        created: &mut Vec<(u32, String)>,
    ) -> Result<(), ProviderError> {
        let network = self.network_for(scope, &desired.spec).await?;
        let template = ReplicaTemplate {
            desired: desired.clone(),
            instance: id.to_owned(),
            image_id: image.id.clone(),
            image: image.reference.clone(),
            network,
            model_source,
            desired_replicas: desired.spec.replicas,
            engine_socket: self.engine_socket(),
        };
        self.start_replicas(scope, &template, 0..desired.spec.replicas, created)
            .await
    }

    pub(super) async fn scale_instance(
        &self,
        scope: &Scope,
        id: &str,
        replicas: u32,
    ) -> Result<Instance, ProviderError> {
        let containers = self.containers(scope, &[(labels::INSTANCE, id)]).await?;
        let Some(mut blueprint) = self.blueprint(scope, id, &containers).await? else {
            return Err(ProviderError::Backend {
                provider: ProviderKind::Docker,
                what: format!("scaling instance {id}"),
                detail: "it no longer exists".to_owned(),
            });
        };
        let spec = blueprint.spec.clone();
        if spec.host_port.is_some() && replicas > 1 {
            return Err(ProviderError::Invalid {
                service: spec.name.clone(),
                detail: format!("`host-port` pins one port: it cannot have {replicas} replicas"),
            });
        }
        // Fewer: the highest indexes go (and anything without an index).
        let (keep, extra): (Vec<&ContainerSummary>, Vec<&ContainerSummary>) = containers
            .iter()
            .partition(|c| replica_index(c).is_some_and(|i| i < replicas));
        let extra_ids: Vec<String> = extra.iter().filter_map(|c| c.id.clone()).collect();
        self.remove_containers(&extra_ids, spec.stop_grace).await?;
        // More: every index below the count without a container.
        let present: BTreeSet<u32> = keep.iter().filter_map(|c| replica_index(c)).collect();
        let missing: Vec<u32> = (0..replicas).filter(|i| !present.contains(i)).collect();
        if !missing.is_empty() {
            let from_env = self.caller_values(&spec, &keep).await?;
            let template = ReplicaTemplate {
                desired: Desired {
                    spec: spec.clone(),
                    model: blueprint.model.clone(),
                    revision: blueprint.revision.clone(),
                    from_env,
                    env_digests: BTreeMap::new(),
                    owner: blueprint.owner.clone(),
                },
                instance: id.to_owned(),
                image_id: blueprint.image_id.clone(),
                image: blueprint.image.clone(),
                network: self.network_for(scope, &spec).await?,
                model_source: blueprint.model_source.clone(),
                desired_replicas: replicas,
                engine_socket: self.engine_socket(),
            };
            let mut created = Vec::new();
            if let Err(e) = self
                .start_replicas(scope, &template, missing, &mut created)
                .await
            {
                let ids: Vec<String> = created.into_iter().map(|(_, id)| id).collect();
                let _ = self.remove_containers(&ids, Duration::ZERO).await;
                return Err(e);
            }
        }
        blueprint.desired_replicas = replicas;
        record::write(scope, &blueprint)?;
        self.observe_instance(scope, id).await
    }

    /// What an instance runs: its record, or (when the record is gone) what
    /// its containers' labels say. `None` when neither exists.
    async fn blueprint(
        &self,
        scope: &Scope,
        id: &str,
        containers: &[ContainerSummary],
    ) -> Result<Option<InstanceRecord>, ProviderError> {
        if let Some(found) = record::read(scope, id) {
            return Ok(Some(found));
        }
        let mut sorted: Vec<&ContainerSummary> = containers.iter().collect();
        sorted.sort_by_key(|c| replica_index(c).unwrap_or(u32::MAX));
        let Some(container) = sorted.into_iter().find(|c| spec_label(c).is_some()) else {
            return Ok(None);
        };
        let spec = spec_label(container).expect("filtered on a readable spec");
        let container_id = container.id.clone().unwrap_or_default();
        let inspect = self
            .docker
            .inspect_container(&container_id, None)
            .await
            .map_err(self.engine_error(format!(
                "inspecting container {}",
                super::short_id(&container_id)
            )))?;
        let model_source = inspect
            .mounts
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.destination.as_deref() == Some(MODEL_DIR))
            .and_then(|m| m.source)
            .map(PathBuf::from);
        let model = label(container, labels::MODEL_VERSION).map(|version| ModelRef {
            version: version.to_owned(),
            dir: model_source.clone().unwrap_or_default(),
        });
        let desired_replicas = containers
            .iter()
            .filter_map(|c| label(c, labels::DESIRED_REPLICAS)?.parse().ok())
            .max()
            .unwrap_or(containers.len() as u32);
        Ok(Some(InstanceRecord {
            id: id.to_owned(),
            service: spec.name.clone(),
            revision: label(container, labels::REVISION)
                .unwrap_or_default()
                .to_owned(),
            model,
            model_source,
            image: label(container, labels::IMAGE)
                .map(str::to_owned)
                .unwrap_or_else(|| inspect.image.clone().unwrap_or_default()),
            image_id: inspect.image.unwrap_or_default(),
            desired_replicas,
            owner: label(container, labels::OWNER).map(str::to_owned),
            spec,
        }))
    }

    /// The caller's values a new replica needs (`from-env` variables,
    /// secrets among them), read back from a live replica's environment:
    /// they are kept nowhere else.
    async fn caller_values(
        &self,
        spec: &ServiceSpec,
        containers: &[&ContainerSummary],
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        let needed: Vec<(&String, &String)> = spec
            .env
            .iter()
            .filter_map(|(key, value)| match value {
                EnvValue::FromEnv { var, .. } => Some((key, var)),
                EnvValue::Literal { .. } => None,
            })
            .collect();
        let mut values = BTreeMap::new();
        if needed.is_empty() {
            return Ok(values);
        }
        for container in containers {
            let Some(id) = &container.id else { continue };
            let Ok(inspect) = self.docker.inspect_container(id, None).await else {
                continue;
            };
            let env: BTreeMap<&str, &str> = inspect
                .config
                .as_ref()
                .and_then(|c| c.env.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|kv| kv.split_once('='))
                .collect();
            if needed.iter().all(|(key, _)| env.contains_key(key.as_str())) {
                for (key, var) in &needed {
                    values.insert((*var).clone(), env[key.as_str()].to_owned());
                }
                return Ok(values);
            }
        }
        Err(ProviderError::Invalid {
            service: spec.name.clone(),
            detail: format!(
                "new replicas need the values of {}, which only the instance's containers held, and none is left: \
                 replace the instance instead (stop it and start it again)",
                needed
                    .iter()
                    .map(|(_, var)| format!("`{var}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    pub(super) async fn stop_instance(&self, scope: &Scope, id: &str) -> Result<(), ProviderError> {
        let containers = self.containers(scope, &[(labels::INSTANCE, id)]).await?;
        let found = record::read(scope, id);
        let grace = found
            .as_ref()
            .map(|r| r.spec.stop_grace)
            .or_else(|| containers.iter().find_map(spec_label).map(|s| s.stop_grace))
            .unwrap_or(DEFAULT_GRACE);
        // The images its containers run, and whatever its revision's tag
        // names now (it may have moved since).
        let mut images: BTreeSet<String> = containers
            .iter()
            .filter_map(|c| c.image_id.clone())
            .collect();
        let mut references: BTreeSet<String> = containers
            .iter()
            .filter_map(|c| label(c, labels::IMAGE).map(str::to_owned))
            .collect();
        if let Some(r) = found {
            images.insert(r.image_id);
            references.insert(r.image);
        }
        for reference in &references {
            if let Ok(image) = self.docker.inspect_image(reference).await {
                images.extend(image.id);
            }
        }
        let ids: Vec<String> = containers.iter().filter_map(|c| c.id.clone()).collect();
        self.remove_containers(&ids, grace).await?;
        record::remove(scope, id)?;
        self.remove_images_if_unused(scope, &images).await?;
        self.remove_network_if_unused(scope).await
    }

    pub(super) async fn instance_logs(
        &self,
        scope: &Scope,
        id: &str,
        lines: usize,
    ) -> Result<String, ProviderError> {
        let mut containers = self.containers(scope, &[(labels::INSTANCE, id)]).await?;
        containers.sort_by_key(|c| replica_index(c).unwrap_or(u32::MAX));
        let mut out = String::new();
        for container in &containers {
            let (Some(index), Some(container_id)) = (replica_index(container), &container.id)
            else {
                continue;
            };
            out.push_str(&self.container_logs(index, container_id, lines).await);
        }
        Ok(out)
    }
}
