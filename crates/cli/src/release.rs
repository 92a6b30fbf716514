//! `mlops release`: where a release stands and what a human decides about
//! it. The work is `mlops_release::control`'s; this module finds the
//! project's release target, calls it and prints.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mlops_core::{LedgerHandle, Stage};
use mlops_iac::{InfraSpec, ProviderKind, Scope};
use mlops_release::rollout::{DEFAULT_DRAIN, ReleaseTarget, RolloutError};
use mlops_release::service::GatewayProgram;
use mlops_release::settings::ReleaseSettings;
use mlops_release::{control, publish};

use crate::{Failure, exit, fail};

#[derive(Subcommand)]
pub(crate) enum ReleaseCommand {
    /// Where the release stands: production and staging versions, the
    /// release in progress, the gateway's live weights, and any disagreement
    Status(Target),
    /// Every promotion, rollback and withdrawn candidate, oldest first
    History(Target),
    /// Promote the paused (or interrupted) candidate to production
    Promote(Target),
    /// Take the candidate in progress out (it stays in staging); a running
    /// step is asked to stop at its next round
    Abort(Target),
    /// Print the release notes of VERSION (a release version or a registry
    /// number; default: the latest release)
    Notes {
        /// The release
        version: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Roll back the release in progress (the candidate is archived), or
    /// move production back to VERSION (default: the version before it)
    Rollback {
        /// A version number of the released model
        version: Option<i64>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args)]
pub(crate) struct Target {
    /// Project directory
    #[arg(long, default_value = ".")]
    path: PathBuf,
    /// The release environment (default: `[release] environment`)
    #[arg(long = "env")]
    environment: Option<String>,
    /// The provider (default: `[infra] provider`)
    #[arg(long, value_parser = ["local", "docker"])]
    provider: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(command: ReleaseCommand) -> Result<u8, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match command {
            ReleaseCommand::Status(t) => status(&t).await,
            ReleaseCommand::History(t) => history(&t).await,
            ReleaseCommand::Promote(t) => {
                let (target, settings) = target_and_settings(&t).await?;
                done(&t, control::promote(&target, &settings).await)
            }
            ReleaseCommand::Notes { version, target: t } => notes(&t, version.as_deref()),
            ReleaseCommand::Abort(t) => {
                let target = target(&t).await?;
                done(&t, control::abort(&target).await)
            }
            ReleaseCommand::Rollback { version, target: t } => {
                let target = target(&t).await?;
                done(&t, control::rollback(&target, version).await)
            }
        }
    })
}

async fn target(t: &Target) -> Result<ReleaseTarget, Failure> {
    Ok(target_and_settings(t).await?.0)
}

async fn target_and_settings(t: &Target) -> Result<(ReleaseTarget, ReleaseSettings), Failure> {
    let manifest = crate::load(&t.path)?;
    let settings = manifest
        .section::<ReleaseSettings>(Stage::Release.name())
        .map(|s| (*s).clone())
        .unwrap_or_default();
    let (Some(service), Some(model)) = (settings.service.clone(), settings.model.clone()) else {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!(
                "{} has no `[release]` with `service` and `model`: there is nothing released to act on",
                manifest.path.display()
            ),
        ));
    };
    let spec = InfraSpec::from_manifest(&manifest);
    let kind: ProviderKind = match &t.provider {
        Some(p) => p
            .parse()
            .map_err(|e: String| fail(exit::INVALID, anyhow::anyhow!(e)))?,
        None => spec.provider,
    };
    let provider = mlops_iac::kinds::provider_for(kind, &crate::infra::supervisor())
        .await
        .map_err(|e| fail(exit::RUN_FAILED, e))?;
    let root = std::fs::canonicalize(&manifest.root).unwrap_or(manifest.root.clone());
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mlops"));
    let target = ReleaseTarget {
        provider,
        scope: Scope {
            project: manifest.project.name.clone(),
            environment: t
                .environment
                .clone()
                .unwrap_or_else(|| settings.environment.clone()),
            root: root.clone(),
        },
        spec: Arc::clone(&spec),
        ledger: LedgerHandle::for_project(root),
        service,
        model,
        program: GatewayProgram::mlops(program),
        actor: crate::infra::actor(),
        step: None,
        drain: DEFAULT_DRAIN,
    };
    Ok((target, settings))
}

/// `mlops release notes [VERSION]`: the notes a promotion wrote.
fn notes(t: &Target, which: Option<&str>) -> Result<u8, Failure> {
    let manifest = crate::load(&t.path)?;
    let settings = manifest
        .section::<ReleaseSettings>(Stage::Release.name())
        .map(|s| (*s).clone())
        .unwrap_or_default();
    let Some(model) = settings.model else {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!(
                "{} has no `[release] model`: there are no releases to show",
                manifest.path.display()
            ),
        ));
    };
    let root = std::fs::canonicalize(&manifest.root).unwrap_or(manifest.root.clone());
    let state_dir = root.join(mlops_core::ledger::STATE_DIR);
    let all = publish::publications(&state_dir, &model).map_err(|e| fail(exit::ENGINE, e))?;
    let Some(p) = publish::find(&all, which) else {
        return Err(fail(
            exit::REFUSED,
            anyhow::anyhow!(match which {
                Some(w) => format!(
                    "model `{model}` has no release {w} (releases: {})",
                    if all.is_empty() {
                        "none".to_owned()
                    } else {
                        all.iter()
                            .map(|p| p.version.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                None => format!("model `{model}` has no release yet"),
            }),
        ));
    };
    let path = root.join(&p.notes);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the release notes {}", path.display()))?;
    let mut out = io::stdout().lock();
    if t.json {
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({ "release": p, "notes": text }),
        )?;
        writeln!(out)?;
    } else {
        write!(out, "{text}")?;
    }
    Ok(exit::OK)
}

fn rollout_failure(e: RolloutError) -> Failure {
    match e {
        RolloutError::Refused(_) => fail(exit::REFUSED, e),
        RolloutError::Failed(_) => fail(exit::RUN_FAILED, e),
    }
}

fn done(t: &Target, result: Result<Vec<String>, RolloutError>) -> Result<u8, Failure> {
    let lines = result.map_err(rollout_failure)?;
    let mut out = io::stdout().lock();
    if t.json {
        serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "done": lines }))?;
        writeln!(out)?;
    } else {
        for line in lines {
            writeln!(out, "{line}")?;
        }
    }
    Ok(exit::OK)
}

async fn status(t: &Target) -> Result<u8, Failure> {
    let target = target(t).await?;
    let s = control::status(&target).await.map_err(rollout_failure)?;
    let mut out = io::stdout().lock();
    if t.json {
        serde_json::to_writer_pretty(&mut out, &s)?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    let id = |v: &Option<control::VersionView>| {
        v.as_ref()
            .map_or_else(|| "none".to_owned(), |v| v.id.clone())
    };
    writeln!(
        out,
        "service `{}` in `{}`: production {}, staging {}",
        s.service,
        s.environment,
        id(&s.production),
        id(&s.staging)
    )?;
    match (&s.release, s.phase) {
        (Some(r), Some(phase)) => {
            writeln!(
                out,
                "release: {} of {} against {}: {phase}, {}% to the candidate, round {}/{}",
                r.strategy,
                r.candidate_id(),
                r.stable_id().unwrap_or_else(|| "nothing".to_owned()),
                r.weight,
                r.round,
                r.rounds
            )?;
            writeln!(out, "  {}", r.reason)?;
            writeln!(out, "  started {}, updated {}", r.started, r.updated)?;
        }
        _ => writeln!(out, "release: none yet")?,
    }
    if s.gateway.running {
        writeln!(
            out,
            "gateway: {} at {}",
            s.gateway.instance.as_deref().unwrap_or("?"),
            s.gateway.proxy.as_deref().unwrap_or("?")
        )?;
        for v in &s.gateway.variants {
            writeln!(
                out,
                "  {} {}% -> {}",
                v.name,
                v.weight,
                v.endpoints.join(", ")
            )?;
        }
    } else {
        writeln!(
            out,
            "gateway: not running ({})",
            s.gateway.error.as_deref().unwrap_or("no instance")
        )?;
    }
    if !s.candidates.is_empty() {
        writeln!(out, "candidate instances: {}", s.candidates.join(", "))?;
    }
    for w in &s.warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(exit::OK)
}

async fn history(t: &Target) -> Result<u8, Failure> {
    let target = target(t).await?;
    let entries = control::history(&target).await.map_err(rollout_failure)?;
    let mut out = io::stdout().lock();
    if t.json {
        serde_json::to_writer_pretty(&mut out, &entries)?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    if entries.is_empty() {
        writeln!(out, "no release of model `{}` yet", target.model)?;
    }
    for e in &entries {
        let from = e
            .previous
            .as_ref()
            .map(|p| format!(" (was {p})"))
            .unwrap_or_default();
        writeln!(
            out,
            "{}  {:<11} {}{from}  by {}: {}",
            e.at, e.event, e.version, e.actor, e.reason
        )?;
    }
    Ok(exit::OK)
}
