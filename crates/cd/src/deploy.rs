//! The `deploy` kind: a registered model version, checked against its
//! recorded hashes, goes to an environment (`staging` by default) through
//! the chosen provider, and the step waits until it is healthy.
//!
//! The service comes from `[infra.services]`; the model version's files are
//! what `{model-dir}` points at. Deploying the version that already runs
//! healthy is a no-op; a new version starts beside the old one and the old
//! one stops only once the new one is healthy, has been published (the
//! `port-file`, written atomically) and the old one has drained for the
//! service's `drain` time (with a pinned `host-port`, which cannot be held
//! twice, the old one stops first). On failure the message carries the
//! last health error and the tail of the service log.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mlops_core::manifest::Diagnostic;
use mlops_core::registry::ModelStage;
use mlops_core::{KindParams, Stage, StepAction, StepContext, StepFailure, StepKind};
use mlops_iac::apply::{self, ApplyContext, OnReady};
use mlops_iac::{Instance, ModelRef, ProviderKind, StepInfra};
use serde::{Deserialize, Serialize};

/// The `deploy` kind.
pub struct DeployKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DeployWire {
    service: toml::Spanned<String>,
    model: toml::Spanned<String>,
    version: Option<String>,
    environment: Option<String>,
    provider: Option<toml::Spanned<String>>,
    port_file: Option<toml::Spanned<String>>,
}

#[derive(Clone)]
struct Deploy {
    service: String,
    model: String,
    version: String,
    environment: String,
    /// Where to write the first replica's port, for later shell steps.
    port_file: Option<std::path::PathBuf>,
}

/// What a deploy recorded.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeployEvidence {
    /// `model:N`.
    pub version: String,
    /// The artifact digest.
    pub digest: String,
    /// The service.
    pub service: String,
    /// The environment.
    pub environment: String,
    /// The provider.
    pub provider: ProviderKind,
    /// Whether it was already running (nothing changed).
    pub noop: bool,
    /// What the apply did.
    pub actions: Vec<mlops_iac::Action>,
    /// The endpoints serving it.
    pub endpoints: Vec<String>,
    /// The instance.
    pub instance: Option<String>,
}

impl StepKind for DeployKind {
    fn name(&self) -> &'static str {
        "deploy"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Cd)
    }

    fn summary(&self) -> &'static str {
        "deploys a registered model version to an environment (staging) and waits until it is healthy"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let wire: DeployWire = params.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        if !crate::package::valid_model_name(wire.model.get_ref()) {
            errors.push(Diagnostic::new(
                format!("invalid model name `{}`", wire.model.get_ref()),
                Some(wire.model.span()),
            ));
        }
        if wire.service.get_ref().trim().is_empty() {
            errors.push(Diagnostic::new(
                "`service` must name a service of [infra.services]",
                Some(wire.service.span()),
            ));
        }
        let provider =
            mlops_iac::kinds::provider_param(wire.provider.as_ref()).unwrap_or_else(|d| {
                errors.push(d);
                None
            });
        if let Some(p) = &wire.port_file
            && let Some(d) =
                mlops_core::manifest::relative_path_problem("port-file", p, "the step's directory")
        {
            errors.push(d);
        }
        let infra = StepInfra::read_service(params, &wire.service, provider, &mut errors);
        let infra = match infra {
            Some(infra) if errors.is_empty() => infra,
            _ => return Err(errors),
        };
        let deploy = Deploy {
            port_file: wire.port_file.map(|p| p.into_inner().into()),
            service: wire.service.into_inner(),
            model: wire.model.into_inner(),
            version: wire.version.unwrap_or_else(|| "latest".to_owned()),
            environment: wire.environment.unwrap_or_else(|| "staging".to_owned()),
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let deploy = deploy.clone();
            let infra = infra.clone();
            async move { run(&ctx, &infra, &deploy).await }
        }))
    }
}

fn failure(e: impl std::fmt::Display) -> StepFailure {
    StepFailure::new(e.to_string())
}

async fn run(ctx: &StepContext, infra: &StepInfra, d: &Deploy) -> Result<(), StepFailure> {
    let spec = infra.spec.as_ref();
    let ledger = ctx.ledger();
    let (model, wanted) = (d.model.clone(), d.version.clone());
    let version = ledger
        .call(move |l| l.find_model_version(Some(&model), &wanted))
        .await
        .map_err(failure)?;
    let root = ctx.project_root.clone();
    let checked = version.clone();
    let files =
        tokio::task::spawn_blocking(move || crate::package::verify_artifact(&root, &checked))
            .await
            .map_err(failure)?
            .map_err(|e| failure(format!("refusing to deploy {}: {e}", version.id())))?;
    let (kind, provider, scope) = infra.target(ctx, &d.environment).await.map_err(failure)?;
    let mut models = BTreeMap::new();
    models.insert(
        d.service.clone(),
        ModelRef {
            version: version.id(),
            dir: files,
        },
    );
    let desired = apply::desired_state(spec, &scope, ledger, provider.as_ref(), &models)
        .await
        .map_err(failure)?;
    let only = [d.service.clone()];
    let port_file = d.port_file.as_ref().map(|file| ctx.cwd.join(file));
    ctx.log(format!(
        "deploying {} to {kind} `{}` as service `{}`",
        version.id(),
        d.environment,
        d.service
    ));
    let report = apply::apply(
        provider.as_ref(),
        &scope,
        ledger,
        &desired,
        Some(&only),
        &ApplyContext {
            actor: format!("step {}", ctx.step),
            step: Some((ctx.run_id, ctx.step.clone())),
            on_ready: port_file.clone().map(|path| {
                // A new instance is published before the one it replaces
                // drains and stops, so a client that reads the port file
                // always finds a healthy replica. A failed write here is
                // reported by the write after the apply.
                let service = d.service.clone();
                OnReady(Arc::new(move |instance: &Instance| {
                    if instance.service == service {
                        let _ = write_port_file(&path, &instance.endpoints());
                    }
                }))
            }),
        },
    )
    .await
    .map_err(|e| {
        failure(format!(
            "deploying {} to `{}` failed: {e}",
            version.id(),
            d.environment
        ))
    })?;
    for action in &report.actions {
        ctx.log(action.to_string());
    }
    let noop = report.actions.is_empty();
    let instance = report.instances.iter().find(|i| i.service == d.service);
    let endpoints = instance.map(|i| i.endpoints()).unwrap_or_default();
    ctx.log(if noop {
        format!(
            "{} already runs healthy in `{}`: nothing to do",
            version.id(),
            d.environment
        )
    } else {
        format!(
            "{} is healthy in `{}` at {}",
            version.id(),
            d.environment,
            endpoints.join(", ")
        )
    });
    if let Some(path) = &port_file {
        write_port_file(path, &endpoints).map_err(failure)?;
    }
    if d.environment == "staging"
        && version.stage != ModelStage::Staging
        && version.stage != ModelStage::Production
    {
        let (model, number) = (version.model.clone(), version.number);
        let actor = format!("step {}", ctx.step);
        let reason = format!("deployed to staging by run {}", ctx.run_id);
        ledger
            .call(move |l| l.set_model_stage(&model, number, ModelStage::Staging, &actor, &reason))
            .await
            .map_err(failure)?;
    }
    ctx.record(
        crate::evidence::DEPLOY,
        &DeployEvidence {
            version: version.id(),
            digest: version.digest.clone(),
            service: d.service.clone(),
            environment: d.environment.clone(),
            provider: kind,
            noop,
            actions: report.actions.clone(),
            endpoints,
            instance: instance.map(|i| i.id.clone()),
        },
    );
    Ok(())
}

/// Writes the first endpoint's port to `path` (made whole under another
/// name and renamed into place: a reader never sees a partial file).
fn write_port_file(path: &Path, endpoints: &[String]) -> Result<(), String> {
    let port = endpoints
        .first()
        .and_then(|e| e.rsplit(':').next())
        .ok_or("the deployed service has no endpoint to write to `port-file`")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, format!("{port}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display())
        })
}
