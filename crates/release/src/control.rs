//! What a human does to a release, as a library: `mlops release status`,
//! `history`, `promote`, `abort` and `rollback [VERSION]` call these.
//!
//! - [`status`] reads the three sources of truth side by side — the
//!   release state file ([`crate::state`]), the registry, and the gateway's
//!   live config — and says where they disagree rather than trusting one.
//! - [`promote`] finishes a paused (or interrupted) release: the candidate
//!   becomes production as a step would promote it.
//! - [`abort`] takes a candidate's traffic away and stops it; it stays in
//!   staging. While a step drives the release, the step is asked to abort
//!   (it rolls back at its next round).
//! - [`rollback`] rolls a candidate in progress back (archived), or, with
//!   no release in progress, moves production back to an earlier version
//!   (the one before the current, or the one named).

use serde::Serialize;

use mlops_core::registry::{ModelStage, ModelVersion, RegistryError};

use crate::gateway::Config;
use crate::rollout::{ReleaseTarget, RolloutError, healthy_endpoints};
use crate::settings::ReleaseSettings;
use crate::state::{self, Phase, ReleaseState};

/// A version as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    /// `model:N`.
    pub id: String,
    /// Its registry number.
    pub number: i64,
    /// Its content digest.
    pub digest: String,
}

impl From<&ModelVersion> for VersionView {
    fn from(v: &ModelVersion) -> Self {
        VersionView {
            id: v.id(),
            number: v.number,
            digest: v.digest.clone(),
        }
    }
}

/// A variant of the gateway's live config.
#[derive(Debug, Clone, Serialize)]
pub struct VariantView {
    /// `stable`, `canary`…
    pub name: String,
    /// Its share, in percent of the weights' sum.
    pub weight: u32,
    /// Its replicas.
    pub endpoints: Vec<String>,
}

/// The gateway as status finds it.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayView {
    /// Whether its admin API answered.
    pub running: bool,
    /// Where clients send requests.
    pub proxy: Option<String>,
    /// Its instance.
    pub instance: Option<String>,
    /// Its live variants.
    pub variants: Vec<VariantView>,
    /// Why it could not be read, if it could not.
    pub error: Option<String>,
}

/// Where the release of a service stands.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseStatus {
    /// The released service.
    pub service: String,
    /// The released model.
    pub model: String,
    /// The release environment.
    pub environment: String,
    /// The registry's production version.
    pub production: Option<VersionView>,
    /// The registry's staging version (the next candidate).
    pub staging: Option<VersionView>,
    /// The latest release, from the state file.
    pub release: Option<ReleaseState>,
    /// Its phase now ([`ReleaseState::effective_phase`]).
    pub phase: Option<Phase>,
    /// The gateway.
    pub gateway: GatewayView,
    /// The candidate instances running (owned by `release`).
    pub candidates: Vec<String>,
    /// Where the sources disagree.
    pub warnings: Vec<String>,
}

/// Where the release stands, every source read and compared.
pub async fn status(target: &ReleaseTarget) -> Result<ReleaseStatus, RolloutError> {
    let (staging, production) = target.versions().await?;
    let release = target.read_state().await?;
    let phase = release.as_ref().map(ReleaseState::effective_phase);
    let candidates: Vec<String> = target
        .candidates()
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    let gateway = match target.gateway().client().await {
        Ok(client) => match client.config().await {
            Ok(config) => GatewayView {
                running: true,
                proxy: Some(client.proxy_url()),
                instance: Some(client.instance().to_owned()),
                variants: variants(&config),
                error: None,
            },
            Err(e) => GatewayView {
                running: false,
                proxy: Some(client.proxy_url()),
                instance: Some(client.instance().to_owned()),
                variants: Vec::new(),
                error: Some(e.to_string()),
            },
        },
        Err(e) => GatewayView {
            running: false,
            proxy: None,
            instance: None,
            variants: Vec::new(),
            error: Some(e.to_string()),
        },
    };
    let mut warnings = Vec::new();
    if let (Some(s), Some(phase)) = (&release, phase) {
        if phase == Phase::Interrupted {
            warnings.push(format!(
                "the process that was running the release (pid {}) is gone: `mlops release promote` or `mlops release abort` finishes it",
                s.pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
            ));
        }
        if phase.in_progress() {
            match &s.candidate_instance {
                Some(id) if !candidates.contains(id) => {
                    warnings.push(format!("the candidate's instance {id} is not running"))
                }
                _ => {}
            }
            if gateway.running {
                let live = gateway
                    .variants
                    .iter()
                    .find(|v| v.name == crate::rollout::CANARY)
                    .map_or(0, |v| v.weight);
                if live != s.weight {
                    warnings.push(format!(
                        "the release says {}% to the candidate, the gateway sends {live}%",
                        s.weight
                    ));
                }
            } else {
                warnings.push(
                    "the gateway does not answer: no traffic reaches the service through it"
                        .to_owned(),
                );
            }
        }
        if phase == Phase::Promoted && production.as_ref().map(|p| p.number) != Some(s.candidate) {
            warnings.push(format!(
                "the release promoted {}, but the registry's production is {}",
                s.candidate_id(),
                production
                    .as_ref()
                    .map_or_else(|| "nothing".to_owned(), ModelVersion::id)
            ));
        }
    }
    if release
        .as_ref()
        .is_none_or(|s| !s.effective_phase().in_progress())
        && !candidates.is_empty()
    {
        warnings.push(format!(
            "candidate instances run with no release in progress: {} (`mlops release abort` stops them)",
            candidates.join(", ")
        ));
    }
    Ok(ReleaseStatus {
        service: target.service.clone(),
        model: target.model.clone(),
        environment: target.environment().to_owned(),
        production: production.as_ref().map(VersionView::from),
        staging: staging.as_ref().map(VersionView::from),
        release,
        phase,
        gateway,
        candidates,
        warnings,
    })
}

/// The variants of a config, with weights in percent of their sum.
fn variants(config: &Config) -> Vec<VariantView> {
    let total: u64 = config.variants.iter().map(|v| u64::from(v.weight)).sum();
    config
        .variants
        .iter()
        .map(|v| VariantView {
            name: v.name.clone(),
            weight: (u64::from(v.weight) * 100)
                .checked_div(total)
                .and_then(|w| u32::try_from(w).ok())
                .unwrap_or(0),
            endpoints: v.replicas.clone(),
        })
        .collect()
}

/// One event of a model's release history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// When (RFC 3339).
    pub at: String,
    /// `promoted`, `rolled-back` (production moved back to an older
    /// version) or `withdrawn` (a candidate archived by a release).
    pub event: String,
    /// The version the event is about, `model:N`.
    pub version: String,
    /// The production version before, for production moves.
    pub previous: Option<String>,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
}

/// The model's release history, oldest first: every move into
/// production, and every candidate a release archived.
pub async fn history(target: &ReleaseTarget) -> Result<Vec<HistoryEntry>, RolloutError> {
    let model = target.model.clone();
    let entries = target
        .ledger
        .call(move |l| {
            let mut entries: Vec<HistoryEntry> = l
                .production_changes()?
                .into_iter()
                .filter(|c| c.model == model)
                .map(|c| HistoryEntry {
                    event: if c.is_rollback() {
                        "rolled-back"
                    } else {
                        "promoted"
                    }
                    .to_owned(),
                    version: format!("{model}:{}", c.number),
                    previous: c.previous.map(|p| format!("{model}:{p}")),
                    at: c.at,
                    actor: c.actor,
                    reason: c.reason,
                })
                .collect();
            for v in l.model_versions(Some(&model))? {
                for change in l.model_stage_history(&model, v.number)? {
                    if change.stage == ModelStage::Archived
                        && change.reason.starts_with("rolled back")
                    {
                        entries.push(HistoryEntry {
                            event: "withdrawn".to_owned(),
                            version: v.id(),
                            previous: None,
                            at: change.at,
                            actor: change.actor,
                            reason: change.reason,
                        });
                    }
                }
            }
            Ok::<_, RegistryError>(entries)
        })
        .await?;
    let mut entries = entries;
    entries.sort_by(|a, b| a.at.cmp(&b.at));
    Ok(entries)
}

/// The release in progress, or why there is none to act on.
async fn in_progress(target: &ReleaseTarget) -> Result<ReleaseState, RolloutError> {
    match target.read_state().await? {
        Some(s) if s.effective_phase().in_progress() => Ok(s),
        Some(s) => Err(RolloutError::Refused(format!(
            "no release of `{}` is in progress in `{}`: the latest, of {}, is {} ({})",
            target.service,
            target.environment(),
            s.candidate_id(),
            s.effective_phase(),
            s.reason
        ))),
        None => Err(RolloutError::Refused(format!(
            "no release of `{}` was ever made in `{}`",
            target.service,
            target.environment()
        ))),
    }
}

/// The running candidate's instance and stable's endpoints.
async fn parts(
    target: &ReleaseTarget,
    s: &ReleaseState,
) -> Result<(Option<mlops_iac::Instance>, Option<Vec<String>>), RolloutError> {
    let via = match &s.candidate_instance {
        Some(id) => target.candidates().await?.into_iter().find(|i| &i.id == id),
        None => None,
    };
    let stable = match s.stable {
        Some(_) => match target.declared().await? {
            Some(i) => healthy_endpoints(&i).ok(),
            None => None,
        },
        None => None,
    };
    Ok((via, stable))
}

/// Finishes a paused or interrupted release: the candidate becomes
/// production. Returns what was done.
///
/// The promotion is published as a step's would be: release version, git
/// tag and notes ([`crate::publish`]), under `settings`.
pub async fn promote(
    target: &ReleaseTarget,
    settings: &ReleaseSettings,
) -> Result<Vec<String>, RolloutError> {
    let mut s = in_progress(target).await?;
    if s.effective_phase() == Phase::Running {
        return Err(RolloutError::Refused(format!(
            "a step is running the release of {} (pid {}): wait for its verdict, or `mlops release abort`",
            s.candidate_id(),
            s.pid.unwrap_or_default()
        )));
    }
    let candidate = target.version(s.candidate).await?;
    if candidate.stage == ModelStage::Archived {
        return Err(RolloutError::Refused(format!(
            "{} is archived: it cannot be promoted",
            candidate.id()
        )));
    }
    let (via, stable) = parts(target, &s).await?;
    let Some(via) = via else {
        return Err(RolloutError::Refused(format!(
            "the candidate's instance ({}) is not running: run the release step again",
            s.candidate_instance.as_deref().unwrap_or("none")
        )));
    };
    if s.stable.is_some() && stable.is_none() {
        return Err(RolloutError::Refused(format!(
            "stable {} has no healthy replica to fall back on: `mlops infra apply --env {}` first",
            s.stable_id().unwrap_or_default(),
            target.environment()
        )));
    }
    let client = target
        .gateway()
        .ensure(&target.spec)
        .await
        .map_err(|e| RolloutError::Failed(format!("the gateway did not start: {e}")))?;
    let reason = format!(
        "promoted by {} with `mlops release promote` ({} at {}%: {})",
        target.actor,
        s.effective_phase(),
        s.weight,
        s.reason
    );
    let mut log = target
        .promote(&client, &candidate, &via, stable.as_deref(), &reason)
        .await?;
    let (_, published) =
        crate::publish::after_promotion(target, settings, &candidate, s.stable, None).await;
    log.extend(published);
    s.phase = Phase::Promoted;
    s.weight = 100;
    s.reason = reason;
    s.candidate_instance = None;
    s.pid = None;
    target.write_state(&s).await?;
    Ok(log)
}

/// Ends the release in progress without a verdict on the candidate: its
/// traffic back to stable, its instance stopped; it stays in staging.
/// While a step drives the release, the step is asked to do it.
pub async fn abort(target: &ReleaseTarget) -> Result<Vec<String>, RolloutError> {
    end(target, false).await
}

/// Rolls back: the release in progress, if any (the candidate archived);
/// otherwise production, to `version` or to the version before it.
pub async fn rollback(
    target: &ReleaseTarget,
    version: Option<i64>,
) -> Result<Vec<String>, RolloutError> {
    let current = target.read_state().await?;
    if version.is_none()
        && current
            .as_ref()
            .is_some_and(|s| s.effective_phase().in_progress())
    {
        return end(target, true).await;
    }
    let (_, production) = target.versions().await?;
    let Some(production) = production else {
        return Err(RolloutError::Refused(format!(
            "model `{}` has no production version to roll back",
            target.model
        )));
    };
    let number = match version {
        Some(n) => n,
        None => {
            let model = target.model.clone();
            let changes = target.ledger.call(move |l| l.production_changes()).await?;
            changes
                .into_iter()
                .rev()
                .find(|c| c.model == model && c.number == production.number)
                .and_then(|c| c.previous)
                .ok_or_else(|| {
                    RolloutError::Refused(format!(
                        "{} was the first production version: there is none before it to roll back to",
                        production.id()
                    ))
                })?
        }
    };
    if number == production.number {
        return Err(RolloutError::Refused(format!(
            "{} is already production",
            production.id()
        )));
    }
    if let Some(s) = &current
        && s.effective_phase().in_progress()
    {
        return Err(RolloutError::Refused(format!(
            "a release of {} is in progress: `mlops release abort` it first",
            s.candidate_id()
        )));
    }
    let version = target.version(number).await?;
    let reason = format!(
        "rolled back by {} with `mlops release rollback`: production from {} to {}",
        target.actor,
        production.id(),
        version.id()
    );
    let mut s = ReleaseState {
        service: target.service.clone(),
        model: target.model.clone(),
        environment: target.environment().to_owned(),
        strategy: "rollback".to_owned(),
        candidate: version.number,
        stable: Some(production.number),
        phase: Phase::Running,
        weight: 0,
        round: 0,
        rounds: 0,
        reason: reason.clone(),
        candidate_instance: None,
        run: None,
        step: None,
        pid: Some(std::process::id()),
        abort_requested: None,
        started: state::now(),
        updated: state::now(),
    };
    target.write_state(&s).await?;
    let done = target.restore(&version, &reason).await;
    s.pid = None;
    match &done {
        Ok(_) => {
            s.phase = Phase::RolledBack;
            s.weight = 100;
        }
        Err(e) => {
            s.phase = Phase::Failed;
            s.reason = e.to_string();
        }
    }
    target.write_state(&s).await?;
    done
}

/// Abort (`archive` false) or roll back (`archive` true) the release in
/// progress.
async fn end(target: &ReleaseTarget, archive: bool) -> Result<Vec<String>, RolloutError> {
    let mut s = in_progress(target).await?;
    let verb = if archive { "rolled back" } else { "aborted" };
    if s.effective_phase() == Phase::Running {
        s.abort_requested = Some(target.actor.clone());
        target.write_state(&s).await?;
        return Ok(vec![format!(
            "asked the step running the release of {} (pid {}) to stop: it takes the candidate out at its next round",
            s.candidate_id(),
            s.pid.unwrap_or_default()
        )]);
    }
    let candidate = target.version(s.candidate).await?;
    let (via, stable) = parts(target, &s).await?;
    let client = target.gateway().client().await.ok();
    let reason = format!(
        "{verb} by {} with `mlops release {}` ({} at {}%: {})",
        target.actor,
        if archive { "rollback" } else { "abort" },
        s.effective_phase(),
        s.weight,
        s.reason
    );
    let via_id = via.as_ref().map(|i| i.id.clone());
    let done = if archive {
        target
            .roll_back(
                client.as_ref(),
                &candidate,
                via_id.as_deref(),
                stable.as_deref(),
                &reason,
            )
            .await
    } else {
        target
            .withdraw(client.as_ref(), via_id.as_deref(), stable.as_deref())
            .await
    };
    s.pid = None;
    s.weight = 0;
    s.candidate_instance = None;
    match &done {
        Ok(_) => {
            s.phase = if archive {
                Phase::RolledBack
            } else {
                Phase::Aborted
            };
            s.reason = reason;
        }
        Err(e) => {
            s.phase = Phase::Failed;
            s.reason = format!("{reason}; it failed: {e}");
        }
    }
    target.write_state(&s).await?;
    done
}
