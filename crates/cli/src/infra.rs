//! `mlops infra plan | apply | destroy | status`, and the hidden
//! `infra supervise` the local provider starts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mlops_core::Ledger;
use mlops_iac::apply::{self, ApplyContext, InfraError};
use mlops_iac::{InfraSpec, ProviderError, ProviderKind, Scope, SupervisorCommand};

use crate::{Failure, exit, fail};

#[derive(Subcommand)]
pub(crate) enum InfraCommand {
    /// Show what `apply` would change (drift included)
    Plan {
        #[command(flatten)]
        target: Target,
        /// Exit 0 when nothing would change, 2 when something would, 1 on
        /// error (as Terraform does)
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Converge the environment: create, replace, scale, repair, remove
    Apply {
        #[command(flatten)]
        target: Target,
    },
    /// Stop and remove every service of the environment
    Destroy {
        #[command(flatten)]
        target: Target,
    },
    /// Show the running services, their replicas, health and endpoints
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Run the local provider's supervisor for an instance (internal)
    #[command(hide = true)]
    Supervise {
        /// The instance directory
        dir: PathBuf,
    },
}

#[derive(Args)]
pub(crate) struct Target {
    /// Project directory
    #[arg(default_value = ".")]
    path: PathBuf,
    /// The provider (default: `[infra] provider`, else local)
    #[arg(long, value_parser = ["local", "docker"])]
    provider: Option<String>,
    /// The environment
    #[arg(long = "env", default_value = "dev")]
    environment: String,
    /// Only these services
    #[arg(long = "service", value_name = "NAME")]
    services: Vec<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// How the `mlops` binary starts local supervisors: itself, hidden command.
pub(crate) fn supervisor() -> SupervisorCommand {
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mlops"));
    SupervisorCommand {
        program,
        args: vec!["infra".into(), "supervise".into()],
    }
}

struct Loaded {
    spec: std::sync::Arc<InfraSpec>,
    scope: Scope,
    ledger: Ledger,
    kind: ProviderKind,
    only: Option<Vec<String>>,
}

fn load(target: &Target) -> Result<Loaded, Failure> {
    let manifest = crate::load(&target.path)?;
    let spec = InfraSpec::from_manifest(&manifest);
    if spec.services.is_empty() && target.services.is_empty() {
        // Still useful for destroy/status of leftovers; say it.
        eprintln!(
            "note: {} declares no [infra.services]",
            manifest.path.display()
        );
    }
    for s in &target.services {
        if !spec.services.contains_key(s) {
            return Err(fail(exit::INVALID, InfraError::UnknownService(s.clone())));
        }
    }
    let kind = match &target.provider {
        Some(p) => p
            .parse()
            .map_err(|e: String| fail(exit::INVALID, anyhow::anyhow!(e)))?,
        None => spec.provider,
    };
    let root = std::fs::canonicalize(&manifest.root).unwrap_or(manifest.root.clone());
    let ledger = Ledger::open(&root).map_err(|e| fail(exit::ENGINE, e))?;
    Ok(Loaded {
        spec,
        scope: Scope {
            project: manifest.project.name.clone(),
            environment: target.environment.clone(),
            root,
        },
        ledger,
        kind,
        only: (!target.services.is_empty()).then(|| target.services.clone()),
    })
}

fn infra_failure(e: InfraError) -> Failure {
    let code = match &e {
        InfraError::Provider(ProviderError::Invalid { .. } | ProviderError::PortTaken { .. })
        | InfraError::UnknownService(_) => exit::INVALID,
        InfraError::Ledger(_) => exit::ENGINE,
        _ => exit::RUN_FAILED,
    };
    fail(code, e)
}

pub(crate) fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

pub(crate) fn run(command: InfraCommand) -> Result<u8, Failure> {
    if let InfraCommand::Supervise { dir } = &command {
        return Ok(match mlops_iac::local::supervisor::main(dir) {
            c if c == std::process::ExitCode::SUCCESS => exit::OK,
            _ => exit::ENGINE,
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match command {
            InfraCommand::Plan {
                target,
                detailed_exitcode,
            } => plan(&target, detailed_exitcode).await,
            InfraCommand::Apply { target } => apply_cmd(&target).await,
            InfraCommand::Destroy { target } => destroy(&target).await,
            InfraCommand::Status { target } => status(&target).await,
            InfraCommand::Supervise { .. } => Ok(exit::OK),
        }
    })
}

async fn provider(kind: ProviderKind) -> Result<Box<dyn mlops_iac::Provider>, Failure> {
    mlops_iac::kinds::provider_for(kind, &supervisor())
        .await
        .map_err(|e| fail(exit::RUN_FAILED, e))
}

async fn plan(target: &Target, detailed: bool) -> Result<u8, Failure> {
    // With --detailed-exitcode every error is 1, as Terraform's.
    let error_code = |f: Failure| {
        if detailed {
            fail(exit::RUN_FAILED, f.error)
        } else {
            f
        }
    };
    let l = load(target).map_err(error_code)?;
    let p = provider(l.kind).await.map_err(error_code)?;
    let desired = apply::desired_state(&l.spec, &l.scope, &l.ledger, p.as_ref(), &BTreeMap::new())
        .await
        .map_err(|e| error_code(infra_failure(e)))?;
    let (plan, _) = apply::plan_env(p.as_ref(), &l.scope, &l.ledger, &desired, l.only.as_deref())
        .await
        .map_err(|e| error_code(infra_failure(e)))?;
    let mut out = std::io::stdout().lock();
    if target.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&plan)?)?;
    } else if plan.is_empty() {
        writeln!(
            out,
            "{} `{}`: no changes; {} service{} match the manifest",
            l.kind,
            l.scope.environment,
            plan.unchanged.len(),
            if plan.unchanged.len() == 1 { "" } else { "s" }
        )?;
    } else {
        writeln!(
            out,
            "{} `{}`: {} change{}",
            l.kind,
            l.scope.environment,
            plan.actions.len(),
            if plan.actions.len() == 1 { "" } else { "s" }
        )?;
        for a in &plan.actions {
            writeln!(out, "  {a}")?;
        }
        for s in &plan.unchanged {
            writeln!(out, "  = {s} (unchanged)")?;
        }
    }
    if !target.json {
        // What controllers own is neither a change nor the manifest's.
        for o in &plan.owned {
            writeln!(out, "  {o}")?;
        }
    }
    Ok(if detailed && !plan.is_empty() {
        2
    } else {
        exit::OK
    })
}

async fn apply_cmd(target: &Target) -> Result<u8, Failure> {
    let l = load(target)?;
    let p = provider(l.kind).await?;
    let desired = apply::desired_state(&l.spec, &l.scope, &l.ledger, p.as_ref(), &BTreeMap::new())
        .await
        .map_err(infra_failure)?;
    let report = apply::apply(
        p.as_ref(),
        &l.scope,
        &l.ledger,
        &desired,
        l.only.as_deref(),
        &ApplyContext {
            actor: actor(),
            step: None,
            on_ready: None,
        },
    )
    .await
    .map_err(infra_failure)?;
    let mut out = std::io::stdout().lock();
    if target.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(exit::OK);
    }
    if report.actions.is_empty() {
        writeln!(out, "{} `{}`: nothing to do", l.kind, l.scope.environment)?;
    } else {
        for a in &report.actions {
            writeln!(out, "  {a}")?;
        }
        writeln!(
            out,
            "{} `{}`: applied {} change{} (apply {}); the plan is now empty",
            l.kind,
            l.scope.environment,
            report.actions.len(),
            if report.actions.len() == 1 { "" } else { "s" },
            report.apply_id.unwrap_or_default()
        )?;
    }
    print_instances(&mut out, &report.instances)?;
    Ok(exit::OK)
}

async fn destroy(target: &Target) -> Result<u8, Failure> {
    let l = load(target)?;
    let p = provider(l.kind).await?;
    let report = apply::destroy(
        p.as_ref(),
        &l.scope,
        &l.ledger,
        l.only.as_deref(),
        &ApplyContext {
            actor: actor(),
            step: None,
            on_ready: None,
        },
    )
    .await
    .map_err(infra_failure)?;
    let mut out = std::io::stdout().lock();
    if target.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else if report.actions.is_empty() {
        writeln!(out, "{} `{}`: nothing runs", l.kind, l.scope.environment)?;
    } else {
        for a in &report.actions {
            writeln!(out, "  {a}")?;
        }
        writeln!(out, "{} `{}`: destroyed", l.kind, l.scope.environment)?;
    }
    Ok(exit::OK)
}

async fn status(target: &Target) -> Result<u8, Failure> {
    let l = load(target)?;
    let p = provider(l.kind).await?;
    let mut instances = p
        .observe(&l.scope)
        .await
        .map_err(|e| fail(exit::RUN_FAILED, e))?;
    if let Some(only) = &l.only {
        instances.retain(|i| only.contains(&i.service));
    }
    let recorded = l
        .ledger
        .infra_services(&l.scope.environment, l.kind.name())
        .map_err(|e| fail(exit::ENGINE, e))?;
    let applies = l
        .ledger
        .infra_applies(Some(&l.scope.environment), 1)
        .map_err(|e| fail(exit::ENGINE, e))?;
    let mut out = std::io::stdout().lock();
    if target.json {
        let json = serde_json::json!({
            "provider": l.kind,
            "environment": l.scope.environment,
            "instances": instances,
            "recorded": recorded,
            "last_apply": applies.first(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(exit::OK);
    }
    writeln!(out, "{} `{}`", l.kind, l.scope.environment)?;
    if let Some(a) = applies.first() {
        writeln!(
            out,
            "last apply: {} by {} at {}: {}{}",
            a.id,
            a.actor,
            a.started_at,
            a.status,
            a.error
                .as_deref()
                .map(|e| format!(" ({})", e.lines().next().unwrap_or("")))
                .unwrap_or_default()
        )?;
    }
    if instances.is_empty() {
        writeln!(out, "nothing runs")?;
    }
    print_instances(&mut out, &instances)?;
    Ok(exit::OK)
}

fn print_instances(out: &mut impl Write, instances: &[mlops_iac::Instance]) -> std::io::Result<()> {
    for i in instances {
        let verdict = if i.is_healthy() { "healthy" } else { "DRIFT" };
        writeln!(
            out,
            "{} ({verdict}): instance {}{}, revision {}{}, {} replica{}",
            i.service,
            i.id,
            i.owner
                .as_deref()
                .map(|o| format!(" owned by {o}"))
                .unwrap_or_default(),
            &i.revision[..i.revision.len().min(12)],
            i.model_version
                .as_deref()
                .map(|v| format!(", model {v}"))
                .unwrap_or_default(),
            i.desired_replicas,
            if i.desired_replicas == 1 { "" } else { "s" }
        )?;
        for r in &i.replicas {
            writeln!(
                out,
                "  [{}] {:?} {} {}{}{}",
                r.index,
                r.state,
                if r.healthy { "healthy" } else { "unhealthy" },
                r.endpoint.as_deref().unwrap_or("-"),
                if r.restarts > 0 {
                    format!(", {} restarts", r.restarts)
                } else {
                    String::new()
                },
                r.health_error
                    .as_deref()
                    .filter(|_| !r.healthy)
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )?;
        }
        for d in i.drift() {
            writeln!(out, "  ! {d}")?;
        }
    }
    Ok(())
}
