//! Converging an environment: plan, apply each action through the provider,
//! record every apply and the resulting service state in the ledger, and
//! check that a fresh plan is empty afterwards.
//!
//! The ledger is reached through a [`LedgerHandle`] (every call on tokio's
//! blocking pool), so an apply never blocks the thread that polls it, be it
//! a pipeline step's or the CLI's. Callers with a `Ledger` pass `&ledger`.

use std::collections::BTreeMap;

use mlops_core::{LedgerError, LedgerHandle};
use serde::Serialize;

use crate::plan::{Action, Plan, Recorded, desired as desired_of, plan, wanted_replicas};
use crate::provider::{Desired, Instance, ModelRef, Provider, ProviderError, Scope};
use crate::spec::InfraSpec;

/// Why an infrastructure operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The apply ran but the environment still differs.
    #[error("the apply did not converge; a new plan still has:\n{}", .0.actions.iter().map(|a| format!("  {a}")).collect::<Vec<_>>().join("\n"))]
    NotConverged(Plan),
    /// A service named on the command line is not declared.
    #[error("no service `{0}` in [infra.services]")]
    UnknownService(String),
    /// A controller asked for what it does not own or what the manifest
    /// does not allow ([`crate::ownership`]).
    #[error("controller `{controller}`: {detail}")]
    Refused {
        /// The controller.
        controller: String,
        /// What it asked and why not.
        detail: String,
    },
}

/// Who applies, and for which step.
#[derive(Debug, Clone, Default)]
pub struct ApplyContext {
    /// The user or step applying (recorded with the apply).
    pub actor: String,
    /// The pipeline run and step, when a step applies.
    pub step: Option<(i64, String)>,
    /// Called with every instance the apply starts or scales, once it is
    /// healthy and recorded, and before any instance it replaces stops.
    pub on_ready: Option<OnReady>,
}

/// A hook that publishes a new instance (its endpoints) to clients before
/// its predecessor drains and stops: a client that follows the
/// publication always finds a healthy instance.
#[derive(Clone)]
pub struct OnReady(pub std::sync::Arc<dyn Fn(&Instance) + Send + Sync>);

impl std::fmt::Debug for OnReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnReady(..)")
    }
}

/// What an apply did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// The apply's ledger id (none when there was nothing to do).
    pub apply_id: Option<i64>,
    /// The actions taken.
    pub actions: Vec<Action>,
    /// The instances running afterwards, per service: the one `apply`
    /// manages first, then those controllers own.
    pub instances: Vec<Instance>,
}

/// Puts each service's managed instance before the ones controllers own, so
/// that a caller looking for "the" instance of a service finds the stable
/// one, not a canary.
fn managed_first(mut instances: Vec<Instance>) -> Vec<Instance> {
    instances.sort_by(|a, b| (&a.service, a.owner.is_some()).cmp(&(&b.service, b.owner.is_some())));
    instances
}

/// The desired state of every declared service (or only `only`): the model
/// each serves is `models[service]` if given, else the one the last apply
/// recorded for it in this environment.
pub async fn desired_state(
    spec: &InfraSpec,
    scope: &Scope,
    ledger: impl Into<LedgerHandle>,
    provider: &dyn Provider,
    models: &BTreeMap<String, ModelRef>,
) -> Result<Vec<Desired>, InfraError> {
    let recorded = services(&ledger.into(), scope, provider).await?;
    let mut wanted = Vec::new();
    for (name, service) in &spec.services {
        let model = models.get(name).cloned().or_else(|| {
            recorded.iter().find(|r| &r.service == name).and_then(|r| {
                serde_json::from_value::<ModelRef>(r.state.get("model")?.clone()).ok()
            })
        });
        wanted.push((service.clone(), model));
    }
    // Revisions hash the program, model files and the key file: blocking
    // file I/O, kept off the async thread (a step's coordinator).
    let root = scope.root.clone();
    tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|(service, model)| desired_of(&service, model, &root, |v| std::env::var(v).ok()))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .unwrap_or_else(|e| match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(e) => Err(ProviderError::Invalid {
            service: String::new(),
            detail: format!("computing revisions stopped: {e}"),
        }),
    })
    .map_err(InfraError::from)
}

/// The services the ledger records for the scope's environment and the
/// provider.
async fn services(
    ledger: &LedgerHandle,
    scope: &Scope,
    provider: &dyn Provider,
) -> Result<Vec<mlops_core::infra::InfraServiceRecord>, LedgerError> {
    let (environment, kind) = (scope.environment.clone(), provider.kind().name());
    ledger
        .call(move |l| l.infra_services(&environment, kind))
        .await
}

async fn recorded(
    ledger: &LedgerHandle,
    scope: &Scope,
    provider: &dyn Provider,
) -> Result<BTreeMap<String, Recorded>, InfraError> {
    Ok(services(ledger, scope, provider)
        .await?
        .into_iter()
        .map(|r| {
            let spec = r
                .state
                .get("spec")
                .and_then(|s| serde_json::from_value(s.clone()).ok());
            (
                r.service,
                Recorded {
                    spec,
                    model_version: r.model_version,
                    env_digests: r
                        .state
                        .get("env")
                        .and_then(|s| serde_json::from_value(s.clone()).ok())
                        .unwrap_or_default(),
                },
            )
        })
        .collect())
}

/// Plans the environment against what the provider observes. With `only`,
/// other services are left out (neither planned nor removed).
pub async fn plan_env(
    provider: &dyn Provider,
    scope: &Scope,
    ledger: impl Into<LedgerHandle>,
    desired: &[Desired],
    only: Option<&[String]>,
) -> Result<(Plan, Vec<Instance>), InfraError> {
    let ledger = ledger.into();
    let mut observed = provider.observe(scope).await?;
    let mut desired: Vec<Desired> = desired.to_vec();
    if let Some(only) = only {
        observed.retain(|i| only.contains(&i.service));
        desired.retain(|d| only.contains(&d.spec.name));
    }
    let plan = plan(
        &desired,
        &observed,
        &recorded(&ledger, scope, provider).await?,
    );
    Ok((plan, observed))
}

/// Takes the project's infrastructure lock (waiting for another apply or
/// controller to finish) off the async threads.
pub(crate) async fn lock_infra(
    ledger: &LedgerHandle,
) -> Result<mlops_core::ledger::RunLock, InfraError> {
    Ok(ledger.call(|l| l.lock_infra()).await?)
}

/// Applies `plan` and checks that a fresh plan is empty. Every apply is
/// recorded in the ledger, failed ones with their error.
pub async fn apply(
    provider: &dyn Provider,
    scope: &Scope,
    ledger: impl Into<LedgerHandle>,
    desired: &[Desired],
    only: Option<&[String]>,
    ctx: &ApplyContext,
) -> Result<ApplyReport, InfraError> {
    let ledger = &ledger.into();
    let _lock = lock_infra(ledger).await?;
    let (plan, observed) = plan_env(provider, scope, ledger, desired, only).await?;
    if plan.is_empty() {
        return Ok(ApplyReport {
            apply_id: None,
            actions: Vec::new(),
            instances: managed_first(observed),
        });
    }
    let actions_json = serde_json::to_value(&plan.actions).unwrap_or_default();
    let apply_id = begin(ledger, scope, provider.kind().name(), actions_json, ctx).await?;
    let recording = Recording {
        ledger,
        apply_id,
        ctx,
    };
    let result = run_actions(provider, scope, desired, &plan, &observed, recording).await;
    let result = match result {
        Ok(()) => match plan_env(provider, scope, ledger, desired, only).await {
            Ok((after, _)) if after.is_empty() => Ok(()),
            Ok((after, _)) => Err(InfraError::NotConverged(after)),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    finish(ledger, apply_id, result.as_ref().err()).await?;
    result?;
    let mut instances = provider.observe(scope).await?;
    if let Some(only) = only {
        instances.retain(|i| only.contains(&i.service));
    }
    Ok(ApplyReport {
        apply_id: Some(apply_id),
        actions: plan.actions,
        instances: managed_first(instances),
    })
}

/// Records the start of an apply; returns its id.
async fn begin(
    ledger: &LedgerHandle,
    scope: &Scope,
    kind: &'static str,
    actions: serde_json::Value,
    ctx: &ApplyContext,
) -> Result<i64, LedgerError> {
    let (environment, actor, step) = (
        scope.environment.clone(),
        ctx.actor.clone(),
        ctx.step.clone(),
    );
    ledger
        .call(move |l| {
            let step = step.as_ref().map(|(run, step)| (*run, step.as_str()));
            l.begin_infra_apply(&environment, kind, &actions, &actor, step)
        })
        .await
}

/// Records how an apply ended.
async fn finish(
    ledger: &LedgerHandle,
    apply_id: i64,
    error: Option<&InfraError>,
) -> Result<(), LedgerError> {
    let error = error.map(|e| e.to_string());
    ledger
        .call(move |l| l.finish_infra_apply(apply_id, error.as_deref()))
        .await
}

/// Forgets a service an apply removed.
async fn forget(
    ledger: &LedgerHandle,
    environment: &str,
    kind: &'static str,
    service: &str,
) -> Result<(), LedgerError> {
    let (environment, service) = (environment.to_owned(), service.to_owned());
    ledger
        .call(move |l| l.remove_infra_service(&environment, kind, &service))
        .await
}

/// Where an apply's results go: its ledger record and the caller's hook.
struct Recording<'a> {
    ledger: &'a LedgerHandle,
    apply_id: i64,
    ctx: &'a ApplyContext,
}

impl Recording<'_> {
    /// Records what runs for a service now, then publishes the instance.
    async fn record(
        &self,
        environment: &str,
        kind: &'static str,
        d: &Desired,
        instance: &Instance,
    ) -> Result<(), LedgerError> {
        let state = serde_json::json!({
            "instance": instance.id,
            "endpoints": instance.endpoints(),
            "spec": d.spec,
            "model": d.model,
            "env": d.env_digests,
        });
        let environment = environment.to_owned();
        let (service, revision) = (d.spec.name.clone(), d.revision.clone());
        let (replicas, apply_id) = (instance.desired_replicas, self.apply_id);
        let model_version = d.model.as_ref().map(|m| m.version.clone());
        self.ledger
            .call(move |l| {
                l.record_infra_service(
                    &environment,
                    kind,
                    &service,
                    &revision,
                    replicas,
                    model_version.as_deref(),
                    &state,
                    apply_id,
                )
            })
            .await?;
        if let Some(hook) = &self.ctx.on_ready {
            (hook.0)(instance);
        }
        Ok(())
    }
}

async fn run_actions(
    provider: &dyn Provider,
    scope: &Scope,
    desired: &[Desired],
    plan: &Plan,
    observed: &[Instance],
    recording: Recording<'_>,
) -> Result<(), InfraError> {
    let find_desired = |service: &str| desired.iter().find(|d| d.spec.name == service);
    let find_instance = |id: &str| observed.iter().find(|i| i.id == id);
    let env = scope.environment.as_str();
    let kind = provider.kind().name();
    for action in &plan.actions {
        match action {
            Action::Create { service, .. } => {
                let d = find_desired(service).expect("planned from the desired state");
                let instance = provider.start(scope, d).await?;
                recording.record(env, kind, d, &instance).await?;
            }
            Action::Replace {
                service, instance, ..
            }
            | Action::Repair {
                service, instance, ..
            } => {
                let declared = find_desired(service).expect("planned from the desired state");
                let old = find_instance(instance).expect("planned from the observed state");
                // The successor keeps the count a controller chose within
                // the declared range.
                let mut successor = declared.clone();
                successor.spec.replicas = wanted_replicas(&declared.spec, old.desired_replicas);
                let d = &successor;
                let repairing = matches!(action, Action::Repair { .. });
                // A pinned port cannot be held twice, and a broken instance
                // serves nothing: stop first. Otherwise start the new one,
                // publish it once healthy, let the old one drain, and only
                // then stop it.
                if d.spec.host_port.is_some() || repairing {
                    provider.stop(scope, old).await?;
                    let new = provider.start(scope, d).await?;
                    recording.record(env, kind, d, &new).await?;
                } else {
                    let new = provider.start(scope, d).await?;
                    recording.record(env, kind, d, &new).await?;
                    tokio::time::sleep(d.spec.drain).await;
                    provider.stop(scope, old).await?;
                }
            }
            Action::Scale {
                service,
                instance,
                to,
                ..
            } => {
                let d = find_desired(service).expect("planned from the desired state");
                let old = find_instance(instance).expect("planned from the observed state");
                let scaled = provider.scale(scope, old, *to).await?;
                recording.record(env, kind, d, &scaled).await?;
            }
            Action::Remove {
                service, instance, ..
            } => {
                let old = find_instance(instance).expect("planned from the observed state");
                provider.stop(scope, old).await?;
                if find_desired(service).is_none() {
                    forget(recording.ledger, env, kind, service).await?;
                }
            }
        }
    }
    Ok(())
}

/// Stops every instance of the environment this provider runs (or only
/// those of `only`) and forgets them in the ledger.
pub async fn destroy(
    provider: &dyn Provider,
    scope: &Scope,
    ledger: impl Into<LedgerHandle>,
    only: Option<&[String]>,
    ctx: &ApplyContext,
) -> Result<ApplyReport, InfraError> {
    let ledger = &ledger.into();
    let _lock = lock_infra(ledger).await?;
    let mut observed = provider.observe(scope).await?;
    if let Some(only) = only {
        observed.retain(|i| only.contains(&i.service));
    }
    let actions: Vec<Action> = observed
        .iter()
        .map(|i| Action::Remove {
            service: i.service.clone(),
            instance: i.id.clone(),
            why: "destroy".to_owned(),
        })
        .collect();
    let kind = provider.kind().name();
    let mut services: Vec<String> = services(ledger, scope, provider)
        .await?
        .into_iter()
        .map(|r| r.service)
        .filter(|s| only.is_none_or(|o| o.contains(s)))
        .collect();
    if actions.is_empty() && services.is_empty() {
        return Ok(ApplyReport {
            apply_id: None,
            actions,
            instances: Vec::new(),
        });
    }
    let actions_json = serde_json::to_value(&actions).unwrap_or_default();
    let apply_id = begin(ledger, scope, kind, actions_json, ctx).await?;
    let mut error = None;
    for instance in &observed {
        if let Err(e) = provider.stop(scope, instance).await {
            error = Some(e);
            break;
        }
    }
    if error.is_none() {
        services.dedup();
        for service in &services {
            forget(ledger, &scope.environment, kind, service).await?;
        }
    }
    let error = error.map(InfraError::from);
    finish(ledger, apply_id, error.as_ref()).await?;
    if let Some(e) = error {
        return Err(e);
    }
    Ok(ApplyReport {
        apply_id: Some(apply_id),
        actions,
        instances: Vec::new(),
    })
}
