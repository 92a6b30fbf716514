//! The moves every release makes, whatever its strategy, and whoever makes
//! them (a step or `mlops release promote|abort|rollback`):
//!
//! - [`ReleaseTarget`]: the released service in its environment — the
//!   provider, the ledger (registry), the gateway in front of it;
//! - [`ReleaseTarget::start_candidate`]: a version as an instance the
//!   `release` controller owns, beside the declared (stable) one;
//! - [`ReleaseTarget::promote`]: the candidate becomes production with no
//!   request lost — every request to the candidate's instance while the
//!   declared instance is replaced by one serving it (new before old), then
//!   every request to the new declared instance, *then* the registry moves,
//!   then the candidate's instance stops after the drain delay;
//! - [`ReleaseTarget::roll_back`]: every request back to stable at once (a
//!   first release has none: the gateway stops), the candidate's instance
//!   stopped, the candidate archived with the reason;
//! - [`ReleaseTarget::restore`]: production back to an earlier version, the
//!   same way as a promotion.
//!
//! Each returns what it did as lines for the caller's log, and on failure
//! says what it restored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mlops_core::LedgerHandle;
use mlops_core::registry::{ModelStage, ModelVersion, RegistryError};
use mlops_iac::apply::{self, ApplyContext};
use mlops_iac::provider::Provider;
use mlops_iac::{Controller, InfraSpec, Instance, ModelRef, Scope};

use crate::analysis::{RoundDecision, StepAnalysis};
use crate::gateway::Config;
use crate::service::{GatewayClient, GatewayProgram, GatewayService, OWNER, ServiceError};
use crate::state::{self, ReleaseState};

/// The variant serving production in the gateway.
pub const STABLE: &str = "stable";
/// The variant a candidate is tried as.
pub const CANARY: &str = "canary";

/// How long a replaced instance keeps running after the gateway stopped
/// sending it requests, so requests in flight finish.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(2);

/// What a release step ended in, as its `release` evidence says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The candidate is production.
    Promote,
    /// The analysis took the candidate out; it is archived.
    Rollback,
    /// The analysis was inconclusive: the candidate keeps its share for a
    /// human.
    Pause,
    /// A human or a cancelled run ended the release; the candidate stays in
    /// staging.
    Abort,
    /// Something other than the candidate failed (the gateway, the stable
    /// instance, starting the candidate); the candidate stays in staging.
    Error,
    /// The candidate passed a step that does not promote (a `shadow`, an
    /// `ab` experiment that reports): it stays in staging for the next
    /// step.
    Pass,
    /// Too little evidence to judge a step that does not hold traffic for
    /// a human (a `shadow`, an `ab` experiment): the candidate stays in
    /// staging and the step fails.
    Inconclusive,
}

/// Which measurements of stable a round compared the candidate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// Stable's, in the same round (same window, same load).
    SameRound,
    /// Stable's from an earlier round (it served nothing in this one, as
    /// at 100 %).
    EarlierRound,
    /// None: a first release (SLOs only), or no measurement of stable yet
    /// (an empty sample: inconclusive).
    None,
}

/// What one round measured and decided.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RoundRecord {
    /// The candidate's share of traffic, in percent.
    pub weight: u32,
    /// Requests the driver sent.
    pub sent: u64,
    /// Requests that got no response (connection, timeout, transport),
    /// counted against the candidate but for `gateway_unreachable`.
    pub unanswered: u64,
    /// Of `unanswered`, requests that could not connect to the gateway at
    /// all (it was down or restarting): the shared front door's outage,
    /// not the candidate's failure, so counted for neither variant.
    #[serde(default)]
    pub gateway_unreachable: u64,
    /// Responses without the gateway's variant header (not counted for
    /// either variant).
    #[serde(default)]
    pub unlabelled: u64,
    /// Responses the driver could not hand over (counted as unanswered).
    #[serde(default)]
    pub dropped: u64,
    /// Which measurements of stable the candidate was compared with.
    #[serde(default = "no_baseline")]
    pub stable_baseline: Baseline,
    /// The analysis of the round.
    pub analysis: StepAnalysis,
    /// What the round tracker decided after it.
    pub decision: RoundDecision,
}

fn no_baseline() -> Baseline {
    Baseline::None
}

/// The `release` evidence of a release step: every number behind its
/// verdict, and the settings that turned them into it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReleaseEvidence {
    /// `canary`, `blue-green`, `ab` or `shadow`.
    pub strategy: String,
    /// How the release ended.
    pub verdict: Verdict,
    /// Why.
    pub reason: String,
    /// What was done about it (traffic, instances, registry).
    #[serde(default)]
    pub outcome: String,
    /// The model.
    pub model: String,
    /// The candidate, `model:N`.
    pub candidate: String,
    /// Its digest.
    pub candidate_digest: String,
    /// The version in production before the step (none: a first release).
    pub stable: Option<String>,
    /// The service released.
    pub service: String,
    /// The release environment.
    pub environment: String,
    /// The gateway's proxy URL.
    pub gateway: String,
    /// The step's settings: weights, hold, rate, the analysis thresholds
    /// and the round policy, so the verdict can be recomputed.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Every round, in order.
    pub rounds: Vec<RoundRecord>,
    /// What the promotion published (release version, tag, notes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<crate::publish::Publication>,
}

/// The `rollback` evidence of a release step.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RollbackEvidence {
    /// The model.
    pub model: String,
    /// The candidate taken out.
    pub candidate: String,
    /// What serves users now (none: nothing, a first release).
    pub stable: Option<String>,
    /// Why.
    pub reason: String,
    /// The round that decided it (1-based).
    pub round: u32,
}

/// A release operation that failed; the message says what was restored.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The operation does not apply (nothing to promote, no such version):
    /// nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The operation failed part-way; the message says what state it left.
    #[error("{0}")]
    Failed(String),
}

impl From<state::StateError> for RolloutError {
    fn from(e: state::StateError) -> Self {
        RolloutError::Failed(e.to_string())
    }
}

impl From<RegistryError> for RolloutError {
    fn from(e: RegistryError) -> Self {
        RolloutError::Failed(e.to_string())
    }
}

fn failed(e: impl std::fmt::Display) -> RolloutError {
    RolloutError::Failed(e.to_string())
}

/// The released service in its environment, and who acts on it.
pub struct ReleaseTarget {
    /// The provider the environment runs on.
    pub provider: Box<dyn Provider>,
    /// The project and environment.
    pub scope: Scope,
    /// `[infra]`, compiled.
    pub spec: Arc<InfraSpec>,
    /// The ledger (registry, infra records).
    pub ledger: LedgerHandle,
    /// The released service (`[release] service`).
    pub service: String,
    /// The released model (`[release] model`).
    pub model: String,
    /// How the gateway process is started.
    pub program: GatewayProgram,
    /// Who acts: `step NAME` or the user.
    pub actor: String,
    /// The run and step acting, if a step is.
    pub step: Option<(i64, String)>,
    /// See [`DEFAULT_DRAIN`].
    pub drain: Duration,
}

impl std::fmt::Debug for ReleaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseTarget")
            .field("service", &self.service)
            .field("model", &self.model)
            .field("environment", &self.scope.environment)
            .field("provider", &self.provider.kind())
            .finish_non_exhaustive()
    }
}

impl ReleaseTarget {
    /// The release environment's name.
    pub fn environment(&self) -> &str {
        &self.scope.environment
    }

    /// The release state file of the service in the environment.
    pub fn state_path(&self) -> PathBuf {
        state::state_path(
            &self.scope.state_dir(),
            &self.scope.environment,
            &self.service,
        )
    }

    /// The release state, if a release was ever made here.
    pub async fn read_state(&self) -> Result<Option<ReleaseState>, RolloutError> {
        let path = self.state_path();
        tokio::task::spawn_blocking(move || state::read(&path))
            .await
            .map_err(failed)?
            .map_err(RolloutError::from)
    }

    /// Writes the release state (atomically).
    pub async fn write_state(&self, s: &ReleaseState) -> Result<(), RolloutError> {
        let (path, s) = (self.state_path(), s.clone());
        tokio::task::spawn_blocking(move || state::write(&path, &s))
            .await
            .map_err(failed)?
            .map_err(RolloutError::from)
    }

    /// The model's versions in `staging` and `production`.
    pub async fn versions(
        &self,
    ) -> Result<(Option<ModelVersion>, Option<ModelVersion>), RolloutError> {
        let model = self.model.clone();
        Ok(self
            .ledger
            .call(move |l| {
                Ok::<_, RegistryError>((
                    l.model_in_stage(&model, ModelStage::Staging)?,
                    l.model_in_stage(&model, ModelStage::Production)?,
                ))
            })
            .await?)
    }

    /// Version `number` of the model.
    pub async fn version(&self, number: i64) -> Result<ModelVersion, RolloutError> {
        let model = self.model.clone();
        self.ledger
            .call(move |l| l.model_version(&model, number))
            .await?
            .ok_or_else(|| {
                RolloutError::Refused(format!(
                    "model `{}` has no version {number} in the registry",
                    self.model
                ))
            })
    }

    /// The version's files, checked against their recorded hashes.
    pub async fn verified(&self, version: &ModelVersion) -> Result<PathBuf, RolloutError> {
        let (root, checked) = (self.scope.root.clone(), version.clone());
        tokio::task::spawn_blocking(move || mlops_cd::package::verify_artifact(&root, &checked))
            .await
            .map_err(failed)?
            .map_err(|e| failed(format!("refusing to release {}: {e}", version.id())))
    }

    /// The `release` controller of the environment.
    pub fn controller(&self) -> Result<Controller<'_>, RolloutError> {
        Controller::new(
            OWNER,
            self.provider.as_ref(),
            &self.scope,
            self.ledger.clone(),
        )
        .map_err(failed)
    }

    /// The gateway in front of the service.
    pub fn gateway(&self) -> GatewayService<'_> {
        GatewayService::new(
            &self.scope,
            self.provider.as_ref(),
            self.ledger.clone(),
            &self.service,
            self.program.clone(),
        )
    }

    /// The instance the manifest declares for the service, if it runs.
    pub async fn declared(&self) -> Result<Option<Instance>, RolloutError> {
        let instances = self.provider.observe(&self.scope).await.map_err(failed)?;
        Ok(instances
            .into_iter()
            .find(|i| i.service == self.service && i.owner.is_none()))
    }

    /// The candidates running: instances of the service the `release`
    /// controller owns.
    pub async fn candidates(&self) -> Result<Vec<Instance>, RolloutError> {
        let mut owned = self.controller()?.owned().await.map_err(failed)?;
        owned.retain(|i| i.service == self.service);
        Ok(owned)
    }

    /// Applies the environment with `version` as the service's declared
    /// instance (new before old); returns that instance and the apply's
    /// actions.
    ///
    /// With `publish`, the gateway is sent to the new instance (every
    /// request to it, as `stable`) once it is healthy and *before* the
    /// instance it replaces stops, so no request finds a stopped replica.
    pub async fn apply_declared(
        &self,
        version: &ModelVersion,
        publish: Option<&GatewayClient>,
    ) -> Result<(Instance, Vec<String>), RolloutError> {
        let dir = self.verified(version).await?;
        let mut models = BTreeMap::new();
        models.insert(
            self.service.clone(),
            ModelRef {
                version: version.id(),
                dir,
            },
        );
        let desired = apply::desired_state(
            self.spec.as_ref(),
            &self.scope,
            &self.ledger,
            self.provider.as_ref(),
            &models,
        )
        .await
        .map_err(failed)?;
        let only = [self.service.clone()];
        let published = Arc::new(std::sync::Mutex::new(Vec::new()));
        let report = apply::apply(
            self.provider.as_ref(),
            &self.scope,
            &self.ledger,
            &desired,
            Some(&only),
            &ApplyContext {
                actor: self.actor.clone(),
                step: self.step.clone(),
                on_ready: publish.map(|client| self.publisher(client, &published)),
            },
        )
        .await
        .map_err(|e| {
            failed(format!(
                "running {} as `{}` in `{}` failed: {e}",
                version.id(),
                self.service,
                self.scope.environment
            ))
        })?;
        let mut actions: Vec<String> = report.actions.iter().map(ToString::to_string).collect();
        actions.extend(
            published
                .lock()
                .map(|mut p| std::mem::take(&mut *p))
                .unwrap_or_default(),
        );
        let instance = report
            .instances
            .into_iter()
            .find(|i| i.service == self.service && i.owner.is_none())
            .ok_or_else(|| {
                failed(format!(
                    "no instance of `{}` runs after the apply",
                    self.service
                ))
            })?;
        Ok((instance, actions))
    }

    /// The apply hook that sends the gateway to a new declared instance of
    /// the service. The hook is synchronous and runs on the apply's task:
    /// the admin call is made from a thread of its own, with a runtime and
    /// a client of its own, and waited for (milliseconds on loopback).
    fn publisher(
        &self,
        client: &GatewayClient,
        published: &Arc<std::sync::Mutex<Vec<String>>>,
    ) -> apply::OnReady {
        let (client, service, published) = (
            client.detached(),
            self.service.clone(),
            Arc::clone(published),
        );
        apply::OnReady(Arc::new(move |instance: &Instance| {
            if instance.service != service || instance.owner.is_some() {
                return;
            }
            let Ok(endpoints) = healthy_endpoints(instance) else {
                return;
            };
            let client = client.detached();
            if let Some(version) = &instance.model_version {
                client.knows(&endpoints, version);
            }
            let line = std::thread::scope(|scope| {
                scope
                    .spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| e.to_string())?;
                        runtime
                            .block_on(set_variants(&client, vec![(STABLE, 100, endpoints)]))
                            .map_err(|e| e.to_string())
                    })
                    .join()
            });
            let line = match line {
                Ok(Ok(_)) => format!(
                    "the gateway sends every request to {} before the instance it replaces stops",
                    instance.id
                ),
                Ok(Err(e)) => format!("the gateway was not re-pointed to {}: {e}", instance.id),
                Err(_) => format!("the gateway was not re-pointed to {}", instance.id),
            };
            if let Ok(mut p) = published.lock() {
                p.push(line);
            }
        }))
    }

    /// Runs `version` as an instance the `release` controller owns, with as
    /// many replicas as stable runs now (else as the service declares), so
    /// that at a large share — 100 % at a canary's last step — the
    /// candidate is measured under stable's load per replica, not several
    /// times it; after stopping candidates an earlier, interrupted release
    /// left running. Its replicas are healthy when it returns.
    pub async fn start_candidate(&self, version: &ModelVersion) -> Result<Instance, RolloutError> {
        let dir = self.verified(version).await?;
        let declared = self
            .spec
            .services
            .get(&self.service)
            .map_or(1, |s| s.replicas.max(1));
        let replicas = self
            .declared()
            .await?
            .and_then(|i| u32::try_from(i.replicas.len()).ok())
            .filter(|n| *n > 0)
            .unwrap_or(declared);
        let controller = self.controller()?;
        for stale in self.candidates().await? {
            controller.stop(&stale.id).await.map_err(failed)?;
        }
        let instance = controller
            .start(
                &self.spec,
                &self.service,
                Some(ModelRef {
                    version: version.id(),
                    dir,
                }),
                replicas,
            )
            .await
            .map_err(|e| failed(format!("starting {} failed: {e}", version.id())))?;
        if let Err(e) = healthy_endpoints(&instance) {
            let _ = controller.stop(&instance.id).await;
            return Err(e);
        }
        Ok(instance)
    }

    /// Stops a candidate's instance.
    pub async fn stop_candidate(&self, instance: &str) -> Result<(), RolloutError> {
        self.controller()?.stop(instance).await.map_err(failed)
    }

    /// The candidate becomes production, no request lost: every request to
    /// `via` (the candidate's running instance) while the declared instance
    /// is replaced by one serving `candidate`, then every request to it;
    /// then the registry's `production` moves (`reason` recorded); then
    /// `via` stops after the drain delay. Returns the lines to log.
    ///
    /// On a failure before the registry moved, traffic goes back to
    /// `stable` (the declared instance as it was, when there was one) and
    /// production is unchanged; `via` is left running for the caller to
    /// roll back or retry.
    pub async fn promote(
        &self,
        client: &GatewayClient,
        candidate: &ModelVersion,
        via: &Instance,
        stable: Option<&[String]>,
        reason: &str,
    ) -> Result<Vec<String>, RolloutError> {
        let mut log = Vec::new();
        let via_endpoints = healthy_endpoints(via)?;
        client.knows(&via_endpoints, &candidate.id());
        set_variants(client, vec![(CANARY, 100, via_endpoints)])
            .await
            .map_err(|e| {
                failed(format!(
                    "the gateway refused to send everything to the candidate: {e}"
                ))
            })?;
        log.push(format!("every request to {} ({})", candidate.id(), via.id));
        let undo = |e: RolloutError| async move {
            let restored = match stable {
                Some(s) => set_variants(client, vec![(STABLE, 100, s.to_vec())])
                    .await
                    .map(|_| "traffic is back on stable".to_owned())
                    .unwrap_or_else(|r| format!("traffic could not go back to stable: {r}")),
                None => "the candidate keeps serving through the gateway".to_owned(),
            };
            failed(format!(
                "promoting {} failed: {e}; {restored}; production is unchanged",
                candidate.id()
            ))
        };
        let (declared, actions) = match self.apply_declared(candidate, Some(client)).await {
            Ok(d) => d,
            Err(e) => return Err(undo(e).await),
        };
        log.extend(actions);
        let endpoints = match healthy_endpoints(&declared) {
            Ok(e) => e,
            Err(e) => return Err(undo(e).await),
        };
        client.knows(&endpoints, &candidate.id());
        if let Err(e) = set_variants(client, vec![(STABLE, 100, endpoints)]).await {
            return Err(undo(failed(format!("the gateway refused the new stable: {e}"))).await);
        }
        let (m, n, a, r) = (
            candidate.model.clone(),
            candidate.number,
            self.actor.clone(),
            reason.to_owned(),
        );
        self.ledger
            .call(move |l| l.set_model_stage(&m, n, ModelStage::Production, &a, &r))
            .await?;
        log.push(format!(
            "{} is production in `{}` ({})",
            candidate.id(),
            self.scope.environment,
            declared.id
        ));
        tokio::time::sleep(self.drain).await;
        self.stop_candidate(&via.id).await?;
        log.push(format!(
            "the candidate's instance {} stopped after a {:?} drain",
            via.id, self.drain
        ));
        Ok(log)
    }

    /// Takes the candidate's traffic away: every request back to `stable`
    /// at once (no stable: the gateway stops, nothing is left for it to
    /// serve), then `via` stopped after the drain delay, so requests it
    /// took before the switch finish. Both are tried; the first failure is
    /// returned after both were. The registry is not touched.
    pub async fn withdraw(
        &self,
        client: Option<&GatewayClient>,
        via: Option<&str>,
        stable: Option<&[String]>,
    ) -> Result<Vec<String>, RolloutError> {
        let mut log = Vec::new();
        let mut first_error = None;
        let traffic = match (stable, client) {
            (Some(s), Some(client)) => set_variants(client, vec![(STABLE, 100, s.to_vec())])
                .await
                .map(|_| "every request back to stable".to_owned()),
            (Some(_), None) => Ok("the gateway does not run: no traffic to move".to_owned()),
            (None, _) => self
                .gateway()
                .stop()
                .await
                .map(|_| "no stable to go back to: the gateway stopped".to_owned()),
        };
        let moved = traffic.is_ok() && stable.is_some() && client.is_some();
        match traffic {
            Ok(line) => log.push(line),
            Err(e) => {
                first_error.get_or_insert(failed(format!("traffic back to stable failed: {e}")));
            }
        }
        if let Some(via) = via {
            // Requests the candidate took before the switch finish on it:
            // the gateway sends it nothing new, and it stops after the
            // drain (as a promotion's replaced instance does).
            if moved {
                tokio::time::sleep(self.drain).await;
            }
            match self.stop_candidate(via).await {
                Ok(()) if moved => log.push(format!(
                    "the candidate's instance {via} stopped after a {:?} drain",
                    self.drain
                )),
                Ok(()) => log.push(format!("the candidate's instance {via} stopped")),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(log),
        }
    }

    /// Rolls the candidate back: [`ReleaseTarget::withdraw`], then the
    /// candidate archived in the registry with `reason` (even when the
    /// withdrawal failed part-way: it must not be released again).
    pub async fn roll_back(
        &self,
        client: Option<&GatewayClient>,
        candidate: &ModelVersion,
        via: Option<&str>,
        stable: Option<&[String]>,
        reason: &str,
    ) -> Result<Vec<String>, RolloutError> {
        let withdrawn = self.withdraw(client, via, stable).await;
        let (m, n, a, r) = (
            candidate.model.clone(),
            candidate.number,
            self.actor.clone(),
            reason.to_owned(),
        );
        let archived = if candidate.stage == ModelStage::Archived {
            Ok(None)
        } else {
            self.ledger
                .call(move |l| l.set_model_stage(&m, n, ModelStage::Archived, &a, &r))
                .await
                .map(Some)
                .map_err(RolloutError::from)
        };
        let mut log = withdrawn?;
        if archived?.is_some() {
            log.push(format!("{} archived in the registry", candidate.id()));
        }
        Ok(log)
    }

    /// Production back to `version`, which served before: it starts as a
    /// controller-owned instance, takes every request, replaces the
    /// declared instance, and the registry records the move (a rollback
    /// when `version` is older than what it replaces).
    pub async fn restore(
        &self,
        version: &ModelVersion,
        reason: &str,
    ) -> Result<Vec<String>, RolloutError> {
        let mut log = Vec::new();
        let client = self.gateway().ensure(&self.spec).await.map_err(|e| {
            failed(format!(
                "the gateway of `{}` did not start: {e}",
                self.service
            ))
        })?;
        let stable = match self.declared().await? {
            Some(i) => healthy_endpoints(&i).ok(),
            None => None,
        };
        let via = self.start_candidate(version).await?;
        log.push(format!("{} runs as instance {}", version.id(), via.id));
        match self
            .promote(&client, version, &via, stable.as_deref(), reason)
            .await
        {
            Ok(lines) => {
                log.extend(lines);
                Ok(log)
            }
            Err(e) => {
                let _ = self.stop_candidate(&via.id).await;
                Err(e)
            }
        }
    }
}

/// The endpoints of an instance's healthy replicas; none is an error.
pub fn healthy_endpoints(instance: &Instance) -> Result<Vec<String>, RolloutError> {
    let endpoints: Vec<String> = instance
        .replicas
        .iter()
        .filter(|r| r.healthy)
        .filter_map(|r| r.endpoint.clone())
        .collect();
    if endpoints.is_empty() {
        return Err(failed(format!(
            "instance {} of `{}` has no healthy replica",
            instance.id, instance.service
        )));
    }
    Ok(endpoints)
}

/// Sets the gateway's variants, keeping its current timeouts and limits
/// (routes, stickiness and shadows dropped: a weighted split has none).
pub async fn set_variants(
    client: &GatewayClient,
    variants: Vec<(&str, u32, Vec<String>)>,
) -> Result<Config, ServiceError> {
    let fresh = Config::weighted(variants);
    let config = match client.config().await {
        Ok(current) => Config {
            variants: fresh.variants,
            routes: Vec::new(),
            sticky: None,
            shadows: Vec::new(),
            ..current
        },
        Err(_) => fresh,
    };
    client.set_config(&config).await
}

/// `weight` % to the canary, the rest to stable (everything to the canary
/// without a stable).
pub async fn split(
    client: &GatewayClient,
    stable: Option<&[String]>,
    canary: &[String],
    weight: u32,
) -> Result<Config, ServiceError> {
    let variants = match stable {
        Some(stable) => vec![
            (STABLE, 100 - weight.min(100), stable.to_vec()),
            (CANARY, weight.min(100), canary.to_vec()),
        ],
        None => vec![(CANARY, 100, canary.to_vec())],
    };
    set_variants(client, variants).await
}
