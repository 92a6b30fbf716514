//! Converging an environment: plan, apply each action through the provider,
//! record every apply and the resulting service state in the ledger, and
//! check that a fresh plan is empty afterwards.

use std::collections::BTreeMap;

use mlops_core::{Ledger, LedgerError};
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
pub fn desired_state(
    spec: &InfraSpec,
    scope: &Scope,
    ledger: &Ledger,
    provider: &dyn Provider,
    models: &BTreeMap<String, ModelRef>,
) -> Result<Vec<Desired>, InfraError> {
    let recorded = ledger.infra_services(&scope.environment, provider.kind().name())?;
    let mut out = Vec::new();
    for (name, service) in &spec.services {
        let model = models.get(name).cloned().or_else(|| {
            recorded.iter().find(|r| &r.service == name).and_then(|r| {
                serde_json::from_value::<ModelRef>(r.state.get("model")?.clone()).ok()
            })
        });
        out.push(desired_of(service, model, &scope.root, |v| {
            std::env::var(v).ok()
        })?);
    }
    Ok(out)
}

fn recorded(
    ledger: &Ledger,
    scope: &Scope,
    provider: &dyn Provider,
) -> Result<BTreeMap<String, Recorded>, InfraError> {
    Ok(ledger
        .infra_services(&scope.environment, provider.kind().name())?
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
    ledger: &Ledger,
    desired: &[Desired],
    only: Option<&[String]>,
) -> Result<(Plan, Vec<Instance>), InfraError> {
    let mut observed = provider.observe(scope).await?;
    let mut desired: Vec<Desired> = desired.to_vec();
    if let Some(only) = only {
        observed.retain(|i| only.contains(&i.service));
        desired.retain(|d| only.contains(&d.spec.name));
    }
    let plan = plan(&desired, &observed, &recorded(ledger, scope, provider)?);
    Ok((plan, observed))
}

/// Takes the project's infrastructure lock (waiting for another apply or
/// controller to finish) off the async threads.
pub(crate) async fn lock_infra(
    ledger: &Ledger,
    provider: &dyn Provider,
) -> Result<mlops_core::ledger::RunLock, InfraError> {
    let lock_ledger = ledger.clone();
    Ok(
        tokio::task::spawn_blocking(move || lock_ledger.lock_infra())
            .await
            .map_err(|e| ProviderError::Backend {
                provider: provider.kind(),
                what: "wait for the infrastructure lock".into(),
                detail: e.to_string(),
            })??,
    )
}

/// Applies `plan` and checks that a fresh plan is empty. Every apply is
/// recorded in the ledger, failed ones with their error.
pub async fn apply(
    provider: &dyn Provider,
    scope: &Scope,
    ledger: &Ledger,
    desired: &[Desired],
    only: Option<&[String]>,
    ctx: &ApplyContext,
) -> Result<ApplyReport, InfraError> {
    let _lock = lock_infra(ledger, provider).await?;
    let (plan, observed) = plan_env(provider, scope, ledger, desired, only).await?;
    if plan.is_empty() {
        return Ok(ApplyReport {
            apply_id: None,
            actions: Vec::new(),
            instances: managed_first(observed),
        });
    }
    let actions_json = serde_json::to_value(&plan.actions).unwrap_or_default();
    let apply_id = ledger.begin_infra_apply(
        &scope.environment,
        provider.kind().name(),
        &actions_json,
        &ctx.actor,
        ctx.step.as_ref().map(|(run, step)| (*run, step.as_str())),
    )?;
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
    ledger.finish_infra_apply(
        apply_id,
        result.as_ref().err().map(|e| e.to_string()).as_deref(),
    )?;
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

/// Where an apply's results go: its ledger record and the caller's hook.
struct Recording<'a> {
    ledger: &'a Ledger,
    apply_id: i64,
    ctx: &'a ApplyContext,
}

async fn run_actions(
    provider: &dyn Provider,
    scope: &Scope,
    desired: &[Desired],
    plan: &Plan,
    observed: &[Instance],
    recording: Recording<'_>,
) -> Result<(), InfraError> {
    let Recording {
        ledger,
        apply_id,
        ctx,
    } = recording;
    let find_desired = |service: &str| desired.iter().find(|d| d.spec.name == service);
    let find_instance = |id: &str| observed.iter().find(|i| i.id == id);
    let env = scope.environment.as_str();
    let kind = provider.kind().name();
    let record = |d: &Desired, instance: &Instance| {
        let state = serde_json::json!({
            "instance": instance.id,
            "endpoints": instance.endpoints(),
            "spec": d.spec,
            "model": d.model,
            "env": d.env_digests,
        });
        ledger.record_infra_service(
            env,
            kind,
            &d.spec.name,
            &d.revision,
            instance.desired_replicas,
            d.model.as_ref().map(|m| m.version.as_str()),
            &state,
            apply_id,
        )?;
        if let Some(hook) = &ctx.on_ready {
            (hook.0)(instance);
        }
        Ok::<(), LedgerError>(())
    };
    for action in &plan.actions {
        match action {
            Action::Create { service, .. } => {
                let d = find_desired(service).expect("planned from the desired state");
                let instance = provider.start(scope, d).await?;
                record(d, &instance)?;
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
                    record(d, &new)?;
                } else {
                    let new = provider.start(scope, d).await?;
                    record(d, &new)?;
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
                record(d, &scaled)?;
            }
            Action::Remove {
                service, instance, ..
            } => {
                let old = find_instance(instance).expect("planned from the observed state");
                provider.stop(scope, old).await?;
                if find_desired(service).is_none() {
                    ledger.remove_infra_service(env, kind, service)?;
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
    ledger: &Ledger,
    only: Option<&[String]>,
    ctx: &ApplyContext,
) -> Result<ApplyReport, InfraError> {
    let _lock = lock_infra(ledger, provider).await?;
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
    let mut services: Vec<String> = ledger
        .infra_services(&scope.environment, kind)?
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
    let apply_id = ledger.begin_infra_apply(
        &scope.environment,
        kind,
        &serde_json::to_value(&actions).unwrap_or_default(),
        &ctx.actor,
        ctx.step.as_ref().map(|(run, step)| (*run, step.as_str())),
    )?;
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
            ledger.remove_infra_service(&scope.environment, kind, service)?;
        }
    }
    ledger.finish_infra_apply(apply_id, error.as_ref().map(|e| e.to_string()).as_deref())?;
    if let Some(e) = error {
        return Err(e.into());
    }
    Ok(ApplyReport {
        apply_id: Some(apply_id),
        actions,
        instances: Vec::new(),
    })
}
