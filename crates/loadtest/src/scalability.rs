//! The `scalability` step kind: the throughput the released service
//! sustains within its SLO at each of several replica counts, the scaling
//! efficiency, and the capacity model against replicas.
//!
//! ```toml
//! [infra.services.iris]
//! replicas = { min = 1, max = 3 }      # the replica count is a controller's
//!
//! [loadtest.steps.scalability]
//! kind = "scalability"
//! with = { traffic = { csv = "data/iris.csv", exclude = ["species"], rate = 200 },
//!          slo = ["p99 < 250ms", "error_rate < 1%"], max-rate = 12800,
//!          replicas = [1, 2, 3], target-rate = 4000, step-duration = "1s", bisect = 2 }
//! ```
//!
//! For each count in `replicas` (ascending, within the service's declared
//! range), the service's declared instance in the release environment is
//! scaled to it — as the owner of its replica count (`replicas = { min,
//! max, owner }`, `autoscaler` by default), recorded in the ledger — and the
//! gateway's pool follows: new replicas join once healthy, replicas to be
//! removed leave the pool and drain before they stop. Then `stress`'s
//! search runs (the same keys: levels from `traffic.rate`, or from the last
//! count's sustained rate scaled, stepped by `factor`, bisected). At the
//! end the instance and the pool go back to how they were, whatever
//! happened.
//!
//! It records `capacity` evidence with `basis = "replicas"`: each count's
//! sustained rate, the scaling efficiency `X(N) / (N · X(1))`, the
//! Universal Scalability Law fitted to (replicas, sustained throughput)
//! when there are three counts or more, and for `target-rate` the replicas
//! the model says it needs. The step fails when a count breaks at its first
//! level, or when `target-rate` is given and no count sustains it and the
//! model cannot reach it.

use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::Diagnostic;
use mlops_core::{KindParams, Stage, StepAction, StepContext, StepFailure, StepKind};
use mlops_iac::provider::Provider;
use mlops_iac::{Controller, Instance, Scope, StepInfra};
use mlops_release::rollout::healthy_endpoints;
use mlops_release::service::GatewayClient;
use serde::Serialize;

use crate::capacity::{Observation, UslFit, fit_usl};
use crate::performance::failure;
use crate::stress::{Search, Stress};

/// The `scalability` kind.
#[derive(Debug)]
pub struct ScalabilityKind;

impl StepKind for ScalabilityKind {
    fn name(&self) -> &'static str {
        "scalability"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Loadtest)
    }

    fn summary(&self) -> &'static str {
        "the throughput the released service sustains within its SLO at 1..N replicas, and the capacity model against replicas"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        crate::stress::compile(self.name(), params)
    }
}

/// How long a replica leaving the pool keeps serving what it has.
const DRAIN: Duration = Duration::from_secs(2);

/// The replica counts a `scalability` step runs at.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    replicas: Vec<u32>,
    target_rate: Option<f64>,
    /// The controller that owns the service's replica count.
    owner: String,
}

impl Plan {
    pub(crate) fn compile(
        infra: &StepInfra,
        service: &str,
        replicas: Option<&[u32]>,
        target_rate: Option<f64>,
        span: &std::ops::Range<usize>,
        errors: &mut Vec<Diagnostic>,
    ) -> Option<Self> {
        let mut problem = |text: String| errors.push(Diagnostic::new(text, Some(span.clone())));
        let spec = infra.spec.services.get(service)?;
        let Some(owner) = spec.replicas_owner() else {
            problem(format!(
                "the `scalability` kind scales `{service}`, which declares a fixed replica count: declare `replicas = {{ min = 1, max = N }}` in [infra.services.{service}]"
            ));
            return None;
        };
        let (min, max) = spec.replica_bounds();
        let Some(counts) = replicas else {
            problem(
                "the `scalability` kind needs `replicas`, the counts to measure (like [1, 2, 3])"
                    .to_owned(),
            );
            return None;
        };
        if counts.len() < 2 || counts.windows(2).any(|w| w[0] >= w[1]) {
            problem(format!(
                "`replicas` must be at least two counts in ascending order, not {counts:?}"
            ));
            return None;
        }
        if counts.iter().any(|n| !(min..=max).contains(n)) {
            problem(format!(
                "`replicas` {counts:?} must be within the {min} to {max} that `{service}` declares"
            ));
            return None;
        }
        if let Some(r) = target_rate
            && !(r.is_finite() && r > 0.0)
        {
            problem(format!("`target-rate` must be a positive rate, not {r}"));
            return None;
        }
        Some(Self {
            replicas: counts.to_vec(),
            target_rate,
            owner: owner.to_owned(),
        })
    }
}

/// One replica count's result.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The replicas.
    pub replicas: u32,
    /// The highest rate asked for that held the SLO; `None` when the
    /// first level broke.
    pub sustained_rate: Option<f64>,
    /// The rate achieved there.
    pub sustained_rps: Option<f64>,
    /// The lowest rate that broke it; `None` when `max-rate` held.
    pub broke_at: Option<f64>,
    /// `X(N) / (N · X(first count)) · first count`: 1 is linear scaling.
    pub efficiency: Option<f64>,
    /// The levels run.
    pub levels: usize,
}

/// What a `scalability` step records as `capacity` evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Scalability {
    /// `usl` when fitted, else `table`.
    pub model: String,
    /// The service.
    pub service: String,
    /// Its environment.
    pub environment: String,
    /// `replicas`.
    pub basis: String,
    /// The SLO thresholds a level must hold.
    pub slo: Vec<String>,
    /// Each count.
    pub rows: Vec<Row>,
    /// The USL against replicas, with three counts or more.
    pub fit: Option<UslFit>,
    /// `target-rate`, when given.
    pub required_rate: Option<f64>,
    /// The replicas it needs: the smallest measured count with a level at
    /// that rate or above that held the SLO, else the model's (rounded
    /// up); `None` when neither reaches it.
    pub replicas_for_required: Option<u32>,
    /// `pass` or `fail`.
    pub verdict: String,
    /// Why it failed, when it did.
    pub reason: Option<String>,
}

/// Runs a `scalability` step: `stress`'s search at each replica count.
pub(crate) async fn run(stress: &Stress, ctx: &StepContext) -> Result<(), StepFailure> {
    let plan = stress
        .scalability
        .as_ref()
        .expect("a scalability step has its plan");
    let target = &stress.target;
    let (_, provider, scope) = target
        .infra
        .target(ctx, &target.environment)
        .await
        .map_err(failure)?;
    let client = target.client(ctx).await?;
    let url = format!(
        "{}{}",
        client.proxy_url().trim_end_matches('/'),
        stress.load.traffic.path
    );
    let controller = Controller::new(&plan.owner, provider.as_ref(), &scope, ctx.ledger().clone())
        .map_err(failure)?;
    let declared = declared(provider.as_ref(), &scope, &target.service).await?;
    let original_replicas = declared.desired_replicas;
    let original_config = client.config().await.map_err(failure)?;
    ctx.log(format!(
        "measuring `{}` in `{}` at {:?} replicas (now {original_replicas}), through its gateway ({url})",
        target.service, target.environment, plan.replicas
    ));
    let hands = Hands {
        controller,
        provider: provider.as_ref(),
        scope: &scope,
        client: &client,
        instance: declared.id.clone(),
    };
    let measured = measure(stress, plan, ctx, &hands, &url).await;
    // Back to how it was, whatever happened.
    let restored = async {
        let now = scale_to(ctx, &hands, stress, original_replicas).await;
        let config = client.set_config(&original_config).await.map_err(failure);
        now.and(config.map(|_| ()))
    }
    .await;
    match &restored {
        Ok(()) => ctx.log(format!(
            "`{}` is back at {original_replicas} replicas, the gateway's pool as it was",
            target.service
        )),
        Err(e) => ctx.log(format!(
            "restoring `{}` failed: {}",
            target.service, e.message
        )),
    }
    let rows = measured?;
    restored?;
    conclude(stress, plan, ctx, rows)
}

/// The declared (controller-less) instance of `service`.
async fn declared(
    provider: &dyn Provider,
    scope: &Scope,
    service: &str,
) -> Result<Instance, StepFailure> {
    provider
        .observe(scope)
        .await
        .map_err(failure)?
        .into_iter()
        .find(|i| i.service == service && i.owner.is_none())
        .ok_or_else(|| {
            failure(format!(
                "`{service}` does not run in `{}`: the release stage runs it",
                scope.environment
            ))
        })
}

/// What a scalability step acts on.
struct Hands<'a> {
    controller: Controller<'a>,
    provider: &'a dyn Provider,
    scope: &'a Scope,
    client: &'a GatewayClient,
    /// The declared instance's id.
    instance: String,
}

async fn measure(
    stress: &Stress,
    plan: &Plan,
    ctx: &StepContext,
    hands: &Hands<'_>,
    url: &str,
) -> Result<Vec<(u32, Search)>, StepFailure> {
    let mut rows = Vec::new();
    let mut start = stress.start;
    for &n in &plan.replicas {
        scale_to(ctx, hands, stress, n).await?;
        let search = stress.search(ctx, url, start, &format!("r{n}-")).await?;
        if let Some(held) = search.held {
            // The next count starts where this one held, scaled.
            let next = plan.replicas.iter().find(|m| **m > n).copied().unwrap_or(n);
            start = (search.levels[held].rate * f64::from(next) / f64::from(n) / 2.0)
                .max(stress.start)
                .min(stress.max_rate)
                .round();
        }
        rows.push((n, search));
    }
    Ok(rows)
}

/// Scales the declared instance to `n` replicas and points the gateway's
/// pool at them: new replicas join once healthy; replicas that go leave
/// the pool and drain first.
async fn scale_to(
    ctx: &StepContext,
    hands: &Hands<'_>,
    stress: &Stress,
    n: u32,
) -> Result<(), StepFailure> {
    let spec = &stress.target.infra.spec;
    let client = hands.client;
    let current = declared(hands.provider, hands.scope, &stress.target.service).await?;
    let before: Vec<String> = current
        .replicas
        .iter()
        .filter_map(|r| r.endpoint.clone())
        .collect();
    if current.desired_replicas > n {
        let kept: Vec<String> = current
            .replicas
            .iter()
            .filter(|r| r.index < n)
            .filter_map(|r| r.endpoint.clone())
            .collect();
        repoint(client, &before, &kept).await?;
        tokio::time::sleep(DRAIN).await;
    }
    let scaled = hands
        .controller
        .scale(spec, &hands.instance, n)
        .await
        .map_err(|e| {
            failure(format!(
                "scaling `{}` to {n} failed: {e}",
                stress.target.service
            ))
        })?;
    let endpoints = healthy_endpoints(&scaled).map_err(failure)?;
    repoint(client, &before, &endpoints).await?;
    ctx.log(format!(
        "`{}` at {n} replicas: {}",
        stress.target.service,
        endpoints.join(", ")
    ));
    Ok(())
}

/// Replaces the replicas of every gateway variant that serves from the
/// declared instance (`before`) with `now`.
async fn repoint(
    client: &GatewayClient,
    before: &[String],
    now: &[String],
) -> Result<(), StepFailure> {
    let mut config = client.config().await.map_err(failure)?;
    let mut found = false;
    for variant in &mut config.variants {
        if !variant.replicas.is_empty()
            && variant
                .replicas
                .iter()
                .all(|r| before.contains(r) || now.contains(r))
        {
            variant.replicas = now.to_vec();
            found = true;
        }
    }
    if !found {
        return Err(failure(
            "the gateway routes to no variant of the declared instance: a release is under way?",
        ));
    }
    client.set_config(&config).await.map_err(failure)?;
    Ok(())
}

fn conclude(
    stress: &Stress,
    plan: &Plan,
    ctx: &StepContext,
    measured: Vec<(u32, Search)>,
) -> Result<(), StepFailure> {
    let first = measured
        .first()
        .and_then(|(n, s)| s.held.map(|h| (f64::from(*n), s.levels[h].rps)));
    let rows: Vec<Row> = measured
        .iter()
        .map(|(n, s)| {
            let held = s.held.map(|h| &s.levels[h]);
            Row {
                replicas: *n,
                sustained_rate: held.map(|l| l.rate),
                sustained_rps: held.map(|l| l.rps),
                broke_at: s.broke.map(|b| s.levels[b].rate),
                efficiency: match (held, first) {
                    (Some(l), Some((n1, x1))) if x1 > 0.0 => {
                        Some(l.rps / (f64::from(*n) / n1 * x1))
                    }
                    _ => None,
                },
                levels: s.levels.len(),
            }
        })
        .collect();
    for row in &rows {
        ctx.log(format!(
            "{} replicas: {} (efficiency {})",
            row.replicas,
            match (row.sustained_rate, row.sustained_rps) {
                (Some(r), Some(x)) => format!("{r}/s held, {x:.1}/s achieved"),
                _ => "broke at the first level".to_owned(),
            },
            row.efficiency
                .map_or_else(|| "—".to_owned(), |e| format!("{:.0}%", e * 100.0))
        ));
    }
    let points: Vec<Observation> = rows
        .iter()
        .filter_map(|r| {
            r.sustained_rps.map(|x| Observation {
                concurrency: f64::from(r.replicas),
                throughput: x,
            })
        })
        .collect();
    let fit = fit_usl(&points).ok();
    if let Some(f) = &fit {
        ctx.log(format!(
            "USL against replicas: λ = {:.1}/s, σ = {:.4}, κ = {:.6}, R² = {:.4}",
            f.lambda, f.sigma, f.kappa, f.r_squared
        ));
    }
    // A count sustains a rate when a level asking at least that much held
    // the SLO (the rate achieved is a little lower: it counts the last
    // responses' time).
    let measured_for = |rate: f64| {
        rows.iter()
            .find(|r| r.sustained_rate.is_some_and(|x| x >= rate))
            .map(|r| r.replicas)
    };
    let replicas_for = plan.target_rate.and_then(|rate| {
        measured_for(rate).or_else(|| {
            fit.as_ref()
                .and_then(|f| f.concurrency_for(rate))
                .map(|n| n.ceil() as u32)
        })
    });
    let reason = if let Some(row) = rows.iter().find(|r| r.sustained_rate.is_none()) {
        Some(format!(
            "at {} replicas the first level ({}/s) already broke the SLO: lower `traffic.rate`",
            row.replicas, stress.start
        ))
    } else if let (Some(rate), None) = (plan.target_rate, replicas_for) {
        Some(format!(
            "no measured count sustains {rate}/s within the SLO, and the model does not reach it"
        ))
    } else {
        None
    };
    if let (Some(rate), Some(n)) = (plan.target_rate, replicas_for) {
        ctx.log(format!("{rate}/s within the SLO needs {n} replicas"));
    }
    let evidence = Scalability {
        model: if fit.is_some() { "usl" } else { "table" }.to_owned(),
        service: stress.target.service.clone(),
        environment: stress.target.environment.clone(),
        basis: "replicas".to_owned(),
        slo: stress
            .load
            .thresholds
            .iter()
            .map(|t| t.text.clone())
            .collect(),
        rows,
        fit,
        required_rate: plan.target_rate,
        replicas_for_required: replicas_for,
        verdict: if reason.is_none() { "pass" } else { "fail" }.to_owned(),
        reason: reason.clone(),
    };
    ctx.record(crate::evidence::CAPACITY, &evidence);
    match reason {
        Some(reason) => Err(failure(reason)),
        None => Ok(()),
    }
}
