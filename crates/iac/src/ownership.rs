//! Controllers own what they change: the library API through which a
//! long-lived loop (the release controller, the autoscaler) starts, scales
//! and stops instances without `infra apply` undoing it.
//!
//! Ownership is recorded on the instance itself, as Kubernetes records
//! `ownerReferences` on the object: [`Instance::owner`] names the
//! controller that started it (the local provider keeps it in
//! `instance.json`, the Docker provider in the `mlops.owner` label). A
//! declared `replicas = { min, max }` hands the replica count of the
//! service's own instance to the range's owner (default
//! [`crate::spec::AUTOSCALER`]), as Argo CD leaves `replicas` to an HPA.
//! `plan` lists both in [`crate::plan::Plan::owned`] and changes neither;
//! `destroy` still removes everything.
//!
//! The rules are pure functions ([`check_start`], [`check_scale`],
//! [`check_stop`]) so that they can be tested without a provider; a
//! [`Controller`] applies them, under the same lock as `apply`, and records
//! each change in the ledger with the controller as the actor. It never
//! records a service's state: what `apply` reads back (the model a service
//! serves) stays the stable instance's.

use mlops_core::LedgerHandle;

use crate::apply::{InfraError, lock_infra};
use crate::plan::desired as desired_of;
use crate::provider::{Instance, ModelRef, Provider, Scope};
use crate::spec::{InfraSpec, ServiceSpec};

/// Whether a controller may start an instance of `spec` with `replicas`
/// replicas next to the one `apply` runs: between 1 and the service's most
/// replicas, and not for a service with a pinned `host-port` (the port
/// cannot be held twice). Says why not.
pub fn check_start(spec: &ServiceSpec, replicas: u32) -> Result<(), String> {
    let (_, max) = spec.replica_bounds();
    if spec.host_port.is_some() {
        return Err(format!(
            "service `{}` pins host port {}, which its running instance holds: a second instance cannot run next to it",
            spec.name,
            spec.host_port.unwrap_or_default()
        ));
    }
    if !(1..=max.max(1)).contains(&replicas) {
        return Err(format!(
            "an instance of `{}` may have 1 to {} replicas, not {replicas}",
            spec.name,
            max.max(1)
        ));
    }
    Ok(())
}

/// Whether `controller` may set `instance` (of `spec`) to `replicas`:
///
/// - an instance it owns: 1 to the service's most replicas;
/// - an instance another controller owns: never;
/// - the instance `apply` runs: only when the service declares a range,
///   the range is this controller's, and `replicas` is within it.
pub fn check_scale(
    controller: &str,
    spec: &ServiceSpec,
    instance: &Instance,
    replicas: u32,
) -> Result<(), String> {
    let (min, max) = spec.replica_bounds();
    match instance.owner.as_deref() {
        Some(owner) if owner != controller => Err(format!(
            "instance {} of `{}` is owned by `{owner}`",
            instance.id, spec.name
        )),
        Some(_) if !(1..=max.max(1)).contains(&replicas) => Err(format!(
            "an instance of `{}` may have 1 to {} replicas, not {replicas}",
            spec.name,
            max.max(1)
        )),
        Some(_) => Ok(()),
        None => match spec.replicas_owner() {
            None => Err(format!(
                "`{}` declares a fixed replica count ({}); declare `replicas = {{ min = .., max = .. }}` to hand it to a controller",
                spec.name, spec.replicas
            )),
            Some(owner) if owner != controller => Err(format!(
                "the replica count of `{}` is owned by `{owner}`",
                spec.name
            )),
            Some(_) if !(min..=max).contains(&replicas) => Err(format!(
                "`{}` declares {min} to {max} replicas, not {replicas}",
                spec.name
            )),
            Some(_) => Ok(()),
        },
    }
}

/// Whether `controller` may stop `instance`: only one it owns (`apply` and
/// `destroy` stop the others).
pub fn check_stop(controller: &str, instance: &Instance) -> Result<(), String> {
    match instance.owner.as_deref() {
        Some(owner) if owner == controller => Ok(()),
        Some(owner) => Err(format!(
            "instance {} of `{}` is owned by `{owner}`",
            instance.id, instance.service
        )),
        None => Err(format!(
            "instance {} of `{}` is the one `infra apply` runs; a controller stops only its own",
            instance.id, instance.service
        )),
    }
}

/// A controller's hands on an environment: everything it starts is
/// recorded as its own.
pub struct Controller<'a> {
    name: String,
    provider: &'a dyn Provider,
    scope: &'a Scope,
    ledger: LedgerHandle,
}

impl std::fmt::Debug for Controller<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.name)
            .field("provider", &self.provider.kind())
            .field("environment", &self.scope.environment)
            .finish()
    }
}

impl<'a> Controller<'a> {
    /// The controller `name` (lowercase letters, digits and `-`: `release`,
    /// `autoscaler`) acting on the scope's environment through `provider`.
    pub fn new(
        name: &str,
        provider: &'a dyn Provider,
        scope: &'a Scope,
        ledger: impl Into<LedgerHandle>,
    ) -> Result<Self, InfraError> {
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.len() <= 40
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(InfraError::Refused {
                controller: name.to_owned(),
                detail: "a controller's name is lowercase letters, digits and `-`, starting with a letter (at most 40)".to_owned(),
            });
        }
        Ok(Controller {
            name: name.to_owned(),
            provider,
            scope,
            ledger: ledger.into(),
        })
    }

    /// Its name, as recorded on what it owns.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn refused(&self, detail: String) -> InfraError {
        InfraError::Refused {
            controller: self.name.clone(),
            detail,
        }
    }

    /// Runs `change` under the infrastructure lock, recorded in the ledger
    /// as an apply by this controller with `action`.
    async fn recorded<T>(
        &self,
        action: serde_json::Value,
        change: impl Future<Output = Result<T, InfraError>>,
    ) -> Result<T, InfraError> {
        let (environment, kind) = (self.scope.environment.clone(), self.provider.kind().name());
        let actor = format!("controller {}", self.name);
        let id = self
            .ledger
            .call(move |l| {
                let actions = serde_json::Value::Array(vec![action]);
                l.begin_infra_apply(&environment, kind, &actions, &actor, None)
            })
            .await?;
        let result = change.await;
        let error = result.as_ref().err().map(|e| e.to_string());
        self.ledger
            .call(move |l| l.finish_infra_apply(id, error.as_deref()))
            .await?;
        result
    }

    async fn find(&self, instance: &str) -> Result<Instance, InfraError> {
        self.provider
            .observe(self.scope)
            .await?
            .into_iter()
            .find(|i| i.id == instance)
            .ok_or_else(|| self.refused(format!("no instance {instance} runs")))
    }

    /// Starts an instance of the declared `service`, owned by this
    /// controller, next to the one `apply` runs, serving `model` (a
    /// candidate version; `None`: the spec's `model-dir`), with `replicas`
    /// replicas. Values the service reads `from-env` come from this
    /// process's environment. Returns once it is healthy.
    pub async fn start(
        &self,
        infra: &InfraSpec,
        service: &str,
        model: Option<ModelRef>,
        replicas: u32,
    ) -> Result<Instance, InfraError> {
        let spec = infra
            .services
            .get(service)
            .ok_or_else(|| InfraError::UnknownService(service.to_owned()))?;
        self.start_spec(spec, model, replicas, true).await
    }

    /// Starts an instance of a service this controller defines itself
    /// instead of the manifest (the release gateway in front of a declared
    /// service): `spec` is its whole definition. Its name must not be a
    /// declared service's, whose instances `apply` manages. Otherwise as
    /// [`start`](Self::start): the instance is owned, recorded in the
    /// ledger, left alone by `plan` and `apply`, shown by `status` and
    /// removed by `destroy`.
    pub async fn start_undeclared(
        &self,
        infra: &InfraSpec,
        spec: &ServiceSpec,
        replicas: u32,
    ) -> Result<Instance, InfraError> {
        if infra.services.contains_key(&spec.name) {
            return Err(self.refused(format!(
                "`{}` is a service declared in [infra.services]; a controller's own service needs another name",
                spec.name
            )));
        }
        self.start_spec(spec, None, replicas, false).await
    }

    async fn start_spec(
        &self,
        spec: &ServiceSpec,
        model: Option<ModelRef>,
        replicas: u32,
        declared: bool,
    ) -> Result<Instance, InfraError> {
        check_start(spec, replicas).map_err(|e| self.refused(e))?;
        let _lock = lock_infra(&self.ledger).await?;
        let mut desired = desired_of(spec, model, &self.scope.root, |v| std::env::var(v).ok())?;
        desired.spec.replicas = replicas;
        desired.owner = Some(self.name.clone());
        let mut action = serde_json::json!({
            "action": "start-owned",
            "service": spec.name,
            "owner": self.name,
            "revision": desired.revision,
            "replicas": replicas,
            "model_version": desired.model.as_ref().map(|m| m.version.clone()),
        });
        if !declared {
            action["declared"] = serde_json::Value::Bool(false);
        }
        self.recorded(action, async {
            Ok(self.provider.start(self.scope, &desired).await?)
        })
        .await
    }

    /// Sets the replica count of `instance`: one this controller owns, or
    /// the service's own instance when the declared range is this
    /// controller's and `replicas` is within it ([`check_scale`]).
    pub async fn scale(
        &self,
        infra: &InfraSpec,
        instance: &str,
        replicas: u32,
    ) -> Result<Instance, InfraError> {
        let _lock = lock_infra(&self.ledger).await?;
        let found = self.find(instance).await?;
        let spec = infra
            .services
            .get(&found.service)
            .ok_or_else(|| InfraError::UnknownService(found.service.clone()))?;
        check_scale(&self.name, spec, &found, replicas).map_err(|e| self.refused(e))?;
        if found.desired_replicas == replicas {
            return Ok(found);
        }
        let action = serde_json::json!({
            "action": "scale",
            "service": found.service,
            "instance": found.id,
            "from": found.desired_replicas,
            "to": replicas,
            "owner": self.name,
        });
        self.recorded(action, async {
            Ok(self.provider.scale(self.scope, &found, replicas).await?)
        })
        .await
    }

    /// Stops an instance this controller owns.
    pub async fn stop(&self, instance: &str) -> Result<(), InfraError> {
        let _lock = lock_infra(&self.ledger).await?;
        let found = self.find(instance).await?;
        check_stop(&self.name, &found).map_err(|e| self.refused(e))?;
        let action = serde_json::json!({
            "action": "stop-owned",
            "service": found.service,
            "instance": found.id,
            "owner": self.name,
        });
        self.recorded(action, async {
            Ok(self.provider.stop(self.scope, &found).await?)
        })
        .await
    }

    /// The instances this controller owns in the environment.
    pub async fn owned(&self) -> Result<Vec<Instance>, InfraError> {
        let mut instances = self.provider.observe(self.scope).await?;
        instances.retain(|i| i.owner.as_deref() == Some(self.name.as_str()));
        Ok(instances)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ReplicaRange;

    fn spec(replicas: u32, range: Option<(u32, u32, &str)>) -> ServiceSpec {
        let toml = format!(
            "[project]\nname = \"p\"\n\n[iac.steps.noop]\nrun = \"true\"\n\n[infra.services.web]\ncommand = [\"srv\"]\nreplicas = {replicas}\nhealth = {{ path = \"/\" }}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mlops.toml"), toml).unwrap();
        let mut spec = InfraSpec::load(dir.path()).unwrap().services["web"].clone();
        spec.replica_range = range.map(|(min, max, owner)| ReplicaRange {
            min,
            max,
            owner: owner.to_owned(),
        });
        spec
    }

    fn instance(owner: Option<&str>, replicas: u32) -> Instance {
        Instance {
            id: "i1".into(),
            provider: crate::ProviderKind::Local,
            service: "web".into(),
            revision: "r".into(),
            model_version: None,
            desired_replicas: replicas,
            replicas: Vec::new(),
            problems: Vec::new(),
            owner: owner.map(str::to_owned),
        }
    }

    /// A declared range: (min, max, owner).
    type Range = Option<(u32, u32, &'static str)>;

    /// One rule per line: (controller, fixed count, range, instance owner,
    /// replicas asked) -> Ok or the start of the refusal.
    #[test]
    // A table of tuples reads as the rules do; a struct per row would not.
    #[allow(clippy::type_complexity)]
    fn who_may_scale_what() {
        let cases: &[(&str, u32, Range, Option<&str>, u32, &str)] = &[
            ("autoscaler", 1, Some((1, 4, "autoscaler")), None, 3, "ok"),
            ("autoscaler", 1, Some((1, 4, "autoscaler")), None, 4, "ok"),
            (
                "autoscaler",
                1,
                Some((1, 4, "autoscaler")),
                None,
                5,
                "`web` declares 1 to 4",
            ),
            (
                "autoscaler",
                2,
                Some((2, 4, "autoscaler")),
                None,
                1,
                "`web` declares 2 to 4",
            ),
            (
                "release",
                1,
                Some((1, 4, "autoscaler")),
                None,
                2,
                "the replica count of `web` is owned by `autoscaler`",
            ),
            (
                "autoscaler",
                2,
                None,
                None,
                3,
                "`web` declares a fixed replica count (2)",
            ),
            ("release", 2, None, Some("release"), 1, "ok"),
            ("release", 2, None, Some("release"), 2, "ok"),
            (
                "release",
                2,
                None,
                Some("release"),
                3,
                "an instance of `web` may have 1 to 2",
            ),
            (
                "release",
                2,
                None,
                Some("release"),
                0,
                "an instance of `web` may have 1 to 2",
            ),
            (
                "autoscaler",
                1,
                Some((1, 4, "autoscaler")),
                Some("release"),
                2,
                "instance i1 of `web` is owned by `release`",
            ),
        ];
        for &(controller, fixed, range, owner, replicas, expect) in cases {
            let got = check_scale(
                controller,
                &spec(fixed, range),
                &instance(owner, 1),
                replicas,
            );
            match (got, expect) {
                (Ok(()), "ok") => {}
                (Err(e), expect) if expect != "ok" && e.starts_with(expect) => {}
                (got, expect) => panic!(
                    "{controller} scaling ({fixed}, {range:?}, owner {owner:?}) to {replicas}: got {got:?}, expected {expect}"
                ),
            }
        }
    }

    #[test]
    fn starting_and_stopping() {
        assert!(check_start(&spec(2, None), 1).is_ok());
        assert!(check_start(&spec(2, None), 3).is_err());
        let mut pinned = spec(1, None);
        pinned.host_port = Some(18080);
        assert!(
            check_start(&pinned, 1)
                .unwrap_err()
                .contains("pins host port 18080")
        );
        assert!(check_stop("release", &instance(Some("release"), 1)).is_ok());
        assert!(
            check_stop("release", &instance(Some("autoscaler"), 1))
                .unwrap_err()
                .contains("owned by `autoscaler`")
        );
        assert!(
            check_stop("release", &instance(None, 1))
                .unwrap_err()
                .contains("`infra apply` runs")
        );
    }
}
