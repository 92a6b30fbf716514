//! The `hpa` policy: the decision of Kubernetes' HorizontalPodAutoscaler
//! (`pkg/controller/podautoscaler`), as a pure function of what the
//! controller sees in one sync.
//!
//! **Replica calculator**, per metric:
//!
//! - *Resource utilization* (CPU, percent of the request): pods being
//!   deleted or failed are ignored; pending pods, and for CPU pods that are
//!   not ready and never were, are *unready*; pods without a sample are
//!   *missing*. Over the pods left, `utilization = Σ usage · 100 / Σ
//!   request` (integer division) and `ratio = utilization / target`.
//!   Without unready pods on a scale-up and without missing pods, the
//!   answer is `current` when `|1 − ratio| ≤ tolerance`, else
//!   `⌈ratio · ready⌉`. Otherwise missing pods are taken at
//!   `max(100, target)` % of their request on a scale-down and at 0 on a
//!   scale-up, unready pods at 0 on a scale-up, and the ratio is computed
//!   again: within the tolerance, or having changed direction, the answer is
//!   `current`; else `⌈ratio' · pods⌉`, unless that moves against the ratio.
//! - *Pods average* (a per-pod metric): the same, with `average = Σ value /
//!   pods` (integer division), missing pods taken at the target on a
//!   scale-down; readiness does not matter (only CPU samples of pods
//!   starting up are unreliable).
//! - *Object / external value*: `ratio = value / target`; `current` within
//!   the tolerance, else `⌈ratio · ready pods⌉`.
//! - *Object / external average* (a per-pod target): `ratio = value /
//!   (target · status replicas)`; outside the tolerance `⌈value /
//!   target⌉`.
//!
//! **Controller**: the recommendation is the maximum over the metrics; when
//! every metric is invalid, or one is and the others would scale down, the
//! controller does not act. A target outside `[min, max]` is brought back
//! without reading metrics; a target at 0 replicas (with `min > 0`) is
//! left alone. Then, without `behavior` (the legacy controller), the
//! recommendation is the highest of those of the last 5 minutes
//! (down-scale stabilization) and is clamped to `[min, min(max, max(2 ·
//! current, 4))]`. With `behavior`, the recommendation is stabilized (the
//! lowest of the scale-up window's, the highest of the scale-down
//! window's, starting from `current`), then rate-limited by the policies of
//! its direction — each policy allows a change from the replica count at
//! the start of its period (`current` less what was added in it plus what
//! was removed), `pods` by a count, `percent` by a share (rounded up when
//! growing, down when shrinking); `select` takes the largest change, the
//! smallest, or none — and clamped to `[min, max]`. Missing `behavior`
//! fields take Kubernetes' defaults: scale-up no stabilization, `max` of
//! 4 pods or 100 % per 15 s; scale-down a 300 s window, 100 % per 15 s.

use std::time::Duration;

use serde::Serialize;

/// A pod's phase and readiness, as the calculator tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Running and ready.
    Ready,
    /// Running, not ready, and never ready yet (starting up).
    Unready,
    /// Not running yet.
    Pending,
    /// Failed: ignored.
    Failed,
    /// Being deleted: ignored.
    Deleting,
}

/// One pod of the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    /// Its state.
    pub state: PodState,
    /// Its CPU request in millicores (a resource metric needs it).
    pub cpu_request: Option<i64>,
    /// Its CPU usage in millicores; `None` is a missing sample.
    pub cpu: Option<i64>,
    /// Its per-pod metrics by name, in milli-units; a name not there is a
    /// missing sample.
    pub metrics: std::collections::BTreeMap<String, i64>,
}

/// One metric the autoscaler scales on (values in milli-units).
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// CPU utilization, percent of the pods' requests.
    ResourceUtilization {
        /// The target utilization in percent.
        target: i64,
    },
    /// A per-pod metric, averaged over the pods.
    PodsAverage {
        /// Its name in the pods' metrics.
        name: String,
        /// The target average.
        target: i64,
    },
    /// A metric of another object, against a target value.
    ObjectValue {
        /// The observed value.
        value: i64,
        /// The target value.
        target: i64,
    },
    /// A metric from outside the cluster, against a target value.
    ExternalValue {
        /// The observed value (the sum of its series).
        value: i64,
        /// The target value.
        target: i64,
    },
    /// A metric of another object, against a per-pod target.
    ObjectAverage {
        /// The observed value.
        value: i64,
        /// The target per pod.
        target: i64,
    },
    /// A metric from outside the cluster, against a per-pod target.
    ExternalAverage {
        /// The observed value.
        value: i64,
        /// The target per pod.
        target: i64,
    },
    /// A metric whose evaluation failed.
    Invalid,
}

/// How a scaling policy limits a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// By a number of pods per period.
    Pods,
    /// By a percentage of the replicas at the period's start.
    Percent,
}

/// One rate limit: at most `value` pods or percent per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Pods or percent.
    pub kind: PolicyKind,
    /// The amount.
    pub value: i32,
    /// The period it applies over.
    pub period: Duration,
}

/// Which policy's limit applies when there are several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The one allowing the largest change (Kubernetes' default).
    Max,
    /// The one allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// The rules of one direction, as configured: what is `None` takes
/// Kubernetes' default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    /// How far back recommendations are considered.
    pub stabilization_window: Option<Duration>,
    /// Which policy limits.
    pub select: Option<Select>,
    /// The rate limits.
    pub policies: Option<Vec<Policy>>,
}

/// `behavior`: scale-up and scale-down rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Behavior {
    /// Rules for growing.
    pub scale_up: Rules,
    /// Rules for shrinking.
    pub scale_down: Rules,
}

/// Rules with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    window: Duration,
    select: Select,
    policies: Vec<Policy>,
}

const fn per_15s(kind: PolicyKind, value: i32) -> Policy {
    Policy {
        kind,
        value,
        period: Duration::from_secs(15),
    }
}

impl Rules {
    fn resolve_up(&self) -> Resolved {
        Resolved {
            window: self.stabilization_window.unwrap_or(Duration::ZERO),
            select: self.select.unwrap_or(Select::Max),
            policies: self.policies.clone().unwrap_or_else(|| {
                vec![
                    per_15s(PolicyKind::Pods, 4),
                    per_15s(PolicyKind::Percent, 100),
                ]
            }),
        }
    }

    fn resolve_down(&self) -> Resolved {
        Resolved {
            window: self.stabilization_window.unwrap_or(DOWNSCALE_STABILIZATION),
            select: self.select.unwrap_or(Select::Max),
            policies: self
                .policies
                .clone()
                .unwrap_or_else(|| vec![per_15s(PolicyKind::Percent, 100)]),
        }
    }
}

/// The controller's default down-scale stabilization window
/// (`--horizontal-pod-autoscaler-downscale-stabilization`).
pub const DOWNSCALE_STABILIZATION: Duration = Duration::from_secs(300);

/// Kubernetes' default tolerance.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// The autoscaler's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Hpa {
    /// The fewest replicas.
    pub min_replicas: i32,
    /// The most replicas.
    pub max_replicas: i32,
    /// Ratios within `1 ± tolerance` change nothing.
    pub tolerance: f64,
    /// `None`: the legacy controller (no `behavior`).
    pub behavior: Option<Behavior>,
}

/// What the metrics are read from: pods and metric specs, or a replica
/// count already recommended.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The calculator runs on these.
    Metrics {
        /// The target's pods.
        pods: Vec<Pod>,
        /// The metrics scaled on.
        metrics: Vec<Metric>,
    },
    /// The calculator's answer, given.
    Recommendation(i32),
}

/// An earlier (unstabilized) recommendation, `age` ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastRecommendation {
    /// How long ago.
    pub age: Duration,
    /// The replicas recommended.
    pub replicas: i32,
}

/// An earlier scaling, `age` ago: `change` replicas added (> 0) or
/// removed (< 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    /// How long ago.
    pub age: Duration,
    /// Replicas added (> 0) or removed (< 0).
    pub change: i32,
}

/// What the controller sees in one sync.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The target's desired replicas (`spec.replicas`).
    pub current_replicas: i32,
    /// The replicas the target reports (`status.replicas`).
    pub status_replicas: i32,
    /// What the recommendation comes from.
    pub source: Source,
    /// Earlier recommendations.
    pub history: Vec<PastRecommendation>,
    /// Earlier scalings.
    pub events: Vec<ScaleEvent>,
}

/// The controller's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The replica calculator's answer (the maximum over the metrics,
    /// before stabilization, rate limits and bounds); `None` when the
    /// controller does not act on metrics.
    pub recommended: Option<i32>,
    /// The replica count the controller sets.
    pub desired: i32,
    /// Why, in the controller's words (`ScaleUpLimit`,
    /// `TooFewReplicas`…).
    pub reason: String,
}

/// The decision of one sync.
pub fn decide(hpa: &Hpa, seen: &Observation) -> Decision {
    let current = seen.current_replicas;
    let keep = |reason: &str| Decision {
        recommended: None,
        desired: current,
        reason: reason.to_owned(),
    };
    if current == 0 && hpa.min_replicas != 0 {
        return keep("ScalingDisabled: the target has 0 replicas");
    }
    if current > hpa.max_replicas {
        return Decision {
            recommended: None,
            desired: hpa.max_replicas,
            reason: "TooManyReplicas: the target is above max".to_owned(),
        };
    }
    if current < hpa.min_replicas {
        return Decision {
            recommended: None,
            desired: hpa.min_replicas,
            reason: "TooFewReplicas: the target is below min".to_owned(),
        };
    }
    let recommended = match &seen.source {
        Source::Recommendation(r) => *r,
        Source::Metrics { pods, metrics } => {
            match recommend(
                hpa.tolerance,
                seen.current_replicas,
                seen.status_replicas,
                pods,
                metrics,
            ) {
                Ok(r) => r,
                Err(why) => return keep(&format!("FailedGetMetrics: {why}")),
            }
        }
    };
    let (desired, reason) = match &hpa.behavior {
        None => legacy(hpa, current, recommended, &seen.history),
        Some(b) => with_behavior(hpa, b, current, recommended, seen),
    };
    Decision {
        recommended: Some(recommended),
        desired,
        reason,
    }
}

/// The maximum of the metrics' proposals, or why the controller does not
/// act on them.
fn recommend(
    tolerance: f64,
    current: i32,
    status: i32,
    pods: &[Pod],
    metrics: &[Metric],
) -> Result<i32, String> {
    if metrics.is_empty() {
        return Err("no metrics".to_owned());
    }
    let mut best: Option<i32> = None;
    let mut invalid: Option<String> = None;
    let mut invalid_count = 0;
    for m in metrics {
        match proposal(tolerance, current, status, pods, m) {
            Ok(r) => best = Some(best.map_or(r, |b| b.max(r))),
            Err(e) => {
                invalid_count += 1;
                invalid.get_or_insert(e);
            }
        }
    }
    let first_invalid = || invalid.clone().unwrap_or_default();
    match best {
        None => Err(first_invalid()),
        Some(r) if invalid_count > 0 && r < current => Err(format!(
            "{} (and the valid metrics would scale down: no scale-down while one is invalid)",
            first_invalid()
        )),
        Some(r) => Ok(r),
    }
}

fn proposal(
    tolerance: f64,
    current: i32,
    status: i32,
    pods: &[Pod],
    metric: &Metric,
) -> Result<i32, String> {
    match metric {
        Metric::Invalid => Err("the metric could not be evaluated".to_owned()),
        Metric::ResourceUtilization { target } => resource(tolerance, current, pods, *target),
        Metric::PodsAverage { name, target } => plain(tolerance, current, pods, name, *target),
        Metric::ObjectValue { value, target } | Metric::ExternalValue { value, target } => {
            if *target == 0 {
                return Err("a target of 0".to_owned());
            }
            let ratio = *value as f64 / *target as f64;
            by_ratio(tolerance, current, ratio, pods)
        }
        Metric::ObjectAverage { value, target } | Metric::ExternalAverage { value, target } => {
            if *target == 0 {
                return Err("a target of 0".to_owned());
            }
            let ratio = *value as f64 / (*target as f64 * f64::from(status));
            if (1.0 - ratio).abs() > tolerance {
                Ok(ceil(*value as f64 / *target as f64))
            } else {
                Ok(status)
            }
        }
    }
}

fn ceil(x: f64) -> i32 {
    let c = x.ceil();
    if c >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        c as i32
    }
}

/// `getUsageRatioReplicaCount`: the ratio applied to the ready pods.
fn by_ratio(tolerance: f64, current: i32, ratio: f64, pods: &[Pod]) -> Result<i32, String> {
    if current == 0 {
        return Ok(ceil(ratio));
    }
    if (1.0 - ratio).abs() <= tolerance {
        return Ok(current);
    }
    if pods.is_empty() {
        return Err("no pods returned by the selector".to_owned());
    }
    let ready = pods.iter().filter(|p| p.state == PodState::Ready).count();
    Ok(ceil(ratio * ready as f64))
}

/// Pods sorted as `groupPods` does: the samples of the pods counted, and
/// the indices of the unready and the missing ones.
struct Grouped {
    samples: Vec<(usize, i64)>,
    ready: usize,
    unready: Vec<usize>,
    missing: Vec<usize>,
}

fn group(pods: &[Pod], sample: impl Fn(&Pod) -> Option<i64>, cpu: bool) -> Grouped {
    let mut g = Grouped {
        samples: Vec::new(),
        ready: 0,
        unready: Vec::new(),
        missing: Vec::new(),
    };
    for (i, p) in pods.iter().enumerate() {
        match p.state {
            PodState::Failed | PodState::Deleting => continue,
            PodState::Pending => {
                g.unready.push(i);
                continue;
            }
            _ => {}
        }
        let Some(v) = sample(p) else {
            g.missing.push(i);
            continue;
        };
        if cpu && p.state == PodState::Unready {
            g.unready.push(i);
            continue;
        }
        g.samples.push((i, v));
        g.ready += 1;
    }
    g
}

/// `GetResourceReplicas` for CPU.
fn resource(tolerance: f64, current: i32, pods: &[Pod], target: i64) -> Result<i32, String> {
    if pods.is_empty() {
        return Err("no pods returned by the selector".to_owned());
    }
    if target <= 0 {
        return Err("a target utilization of 0".to_owned());
    }
    let g = group(pods, |p| p.cpu, true);
    if g.samples.is_empty() {
        return Err("no metrics for any ready pod".to_owned());
    }
    let request = |i: usize| {
        pods[i]
            .cpu_request
            .ok_or_else(|| format!("missing CPU request of pod {i}"))
    };
    let utilization = |samples: &[(usize, i64)]| -> Result<f64, String> {
        let (mut used, mut requested) = (0i64, 0i64);
        for &(i, v) in samples {
            used = used.saturating_add(v);
            requested = requested.saturating_add(request(i)?);
        }
        if requested == 0 {
            return Err("the pods request no CPU".to_owned());
        }
        Ok((used.saturating_mul(100) / requested) as f64 / target as f64)
    };
    // On a scale-down a missing pod is taken as busy: its request, or the
    // target when that is above 100 %.
    let fallback = target.max(100);
    calculate(
        tolerance,
        current,
        &g,
        utilization,
        |i| Ok(request(i)? * fallback / 100),
        false,
    )
}

/// The calculator from grouped pods: the ratio of the samples, and, when
/// unready or missing pods could change it, the ratio again with them
/// filled in (missing ones at `busy` on a scale-down, everything at 0 on a
/// scale-up). At a ratio of exactly 1, missing pods are left out for a
/// resource metric and taken at 0 for a per-pod one, as upstream has it.
fn calculate(
    tolerance: f64,
    current: i32,
    g: &Grouped,
    ratio_of: impl Fn(&[(usize, i64)]) -> Result<f64, String>,
    busy: impl Fn(usize) -> Result<i64, String>,
    idle_at_one: bool,
) -> Result<i32, String> {
    let ratio = ratio_of(&g.samples)?;
    let up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !up_with_unready && g.missing.is_empty() {
        if (1.0 - ratio).abs() <= tolerance {
            return Ok(current);
        }
        return Ok(ceil(ratio * g.ready as f64));
    }
    let mut samples = g.samples.clone();
    if ratio < 1.0 {
        for &i in &g.missing {
            samples.push((i, busy(i)?));
        }
    } else if ratio > 1.0 || idle_at_one {
        samples.extend(g.missing.iter().map(|&i| (i, 0)));
    }
    if up_with_unready {
        samples.extend(g.unready.iter().map(|&i| (i, 0)));
    }
    let new_ratio = ratio_of(&samples)?;
    settle(tolerance, current, ratio, new_ratio, samples.len())
}

/// The end of the calculator once missing and unready pods are filled in.
fn settle(tolerance: f64, current: i32, ratio: f64, new: f64, pods: usize) -> Result<i32, String> {
    if (1.0 - new).abs() <= tolerance || (ratio < 1.0 && new > 1.0) || (ratio > 1.0 && new < 1.0) {
        return Ok(current);
    }
    let replicas = ceil(new * pods as f64);
    if (new < 1.0 && replicas > current) || (new > 1.0 && replicas < current) {
        return Ok(current);
    }
    Ok(replicas)
}

/// `GetMetricReplicas`: a per-pod metric's average.
fn plain(
    tolerance: f64,
    current: i32,
    pods: &[Pod],
    name: &str,
    target: i64,
) -> Result<i32, String> {
    if pods.is_empty() {
        return Err("no pods returned by the selector".to_owned());
    }
    if target <= 0 {
        return Err("a target of 0".to_owned());
    }
    let g = group(pods, |p| p.metrics.get(name).copied(), false);
    if g.samples.is_empty() {
        return Err(format!("no samples of {name} for any ready pod"));
    }
    let average = |samples: &[(usize, i64)]| {
        let total: i64 = samples.iter().fold(0i64, |a, s| a.saturating_add(s.1));
        Ok((total / samples.len() as i64) as f64 / target as f64)
    };
    calculate(tolerance, current, &g, average, |_| Ok(target), true)
}

/// The legacy controller: down-scale stabilization over the default window,
/// then `[min, min(max, max(2 · current, 4))]`.
fn legacy(
    hpa: &Hpa,
    current: i32,
    recommended: i32,
    history: &[PastRecommendation],
) -> (i32, String) {
    let stabilized = history
        .iter()
        .filter(|r| r.age <= DOWNSCALE_STABILIZATION)
        .map(|r| r.replicas)
        .fold(recommended, i32::max);
    let up_limit = current.saturating_mul(2).max(4);
    let (maximum, max_reason) = if hpa.max_replicas > up_limit {
        (up_limit, "ScaleUpLimit")
    } else {
        (hpa.max_replicas, "TooManyReplicas")
    };
    if stabilized < hpa.min_replicas {
        (hpa.min_replicas, "TooFewReplicas".to_owned())
    } else if stabilized > maximum {
        (maximum, max_reason.to_owned())
    } else if stabilized != recommended {
        (stabilized, "ScaleDownStabilized".to_owned())
    } else {
        (stabilized, "DesiredWithinRange".to_owned())
    }
}

/// Replicas changed in the last `period` by the events of one direction:
/// (added, removed), both counted positive.
fn changed_within(events: &[ScaleEvent], period: Duration) -> (i32, i32) {
    events
        .iter()
        .filter(|e| e.age < period)
        .fold((0, 0), |(up, down), e| {
            if e.change > 0 {
                (up + e.change, down)
            } else {
                (up, down - e.change)
            }
        })
}

fn with_behavior(
    hpa: &Hpa,
    behavior: &Behavior,
    current: i32,
    recommended: i32,
    seen: &Observation,
) -> (i32, String) {
    let up = behavior.scale_up.resolve_up();
    let down = behavior.scale_down.resolve_down();
    // Stabilization: the lowest recommendation within the scale-up window,
    // the highest within the scale-down window, from `current`.
    let mut up_rec = recommended;
    let mut down_rec = recommended;
    for r in &seen.history {
        if r.age < up.window {
            up_rec = up_rec.min(r.replicas);
        }
        if r.age < down.window {
            down_rec = down_rec.max(r.replicas);
        }
    }
    let stabilized = current.max(up_rec).min(down_rec);
    let mut reason = if stabilized == recommended {
        "DesiredWithinRange".to_owned()
    } else {
        "ScaleStabilized".to_owned()
    };
    let start_of = |p: &Policy| {
        let (added, removed) = changed_within(&seen.events, p.period);
        current - added + removed
    };
    if stabilized > current {
        let limit = match up.select {
            Select::Disabled => current,
            select => {
                let proposals = up.policies.iter().map(|p| {
                    let start = start_of(p);
                    match p.kind {
                        PolicyKind::Pods => start.saturating_add(p.value),
                        PolicyKind::Percent => {
                            ceil(f64::from(start) * (1.0 + f64::from(p.value) / 100.0))
                        }
                    }
                });
                match select {
                    Select::Min => proposals.min().unwrap_or(current),
                    _ => proposals.max().unwrap_or(current),
                }
            }
        }
        .max(current);
        let (maximum, why) = if hpa.max_replicas > limit {
            (limit, "ScaleUpLimit")
        } else {
            (hpa.max_replicas, "TooManyReplicas")
        };
        if stabilized > maximum {
            return (maximum, why.to_owned());
        }
    } else if stabilized < current {
        let limit = match down.select {
            Select::Disabled => current,
            select => {
                let proposals = down.policies.iter().map(|p| {
                    let start = start_of(p);
                    match p.kind {
                        PolicyKind::Pods => start.saturating_sub(p.value),
                        // Truncated, as upstream's int32 conversion.
                        PolicyKind::Percent => {
                            (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
                        }
                    }
                });
                // The smallest change down is the highest count left.
                match select {
                    Select::Min => proposals.max().unwrap_or(current),
                    _ => proposals.min().unwrap_or(current),
                }
            }
        }
        .min(current);
        let (minimum, why) = if hpa.min_replicas < limit {
            (limit, "ScaleDownLimit")
        } else {
            (hpa.min_replicas, "TooFewReplicas")
        };
        if stabilized < minimum {
            return (minimum, why.to_owned());
        }
    } else if stabilized != recommended {
        reason = "ScaleStabilized".to_owned();
    }
    (stabilized, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(request: i64, cpu: i64) -> Pod {
        Pod {
            state: PodState::Ready,
            cpu_request: Some(request),
            cpu: Some(cpu),
            metrics: Default::default(),
        }
    }

    fn legacy_hpa() -> Hpa {
        Hpa {
            min_replicas: 1,
            max_replicas: 1000,
            tolerance: DEFAULT_TOLERANCE,
            behavior: None,
        }
    }

    fn seen(current: i32, source: Source) -> Observation {
        Observation {
            current_replicas: current,
            status_replicas: current,
            source,
            history: Vec::new(),
            events: Vec::new(),
        }
    }

    #[test]
    fn cpu_utilization_scales_by_the_ratio() {
        let pods = vec![ready(1000, 300), ready(1000, 500), ready(1000, 700)];
        let d = decide(
            &legacy_hpa(),
            &seen(
                3,
                Source::Metrics {
                    pods,
                    metrics: vec![Metric::ResourceUtilization { target: 30 }],
                },
            ),
        );
        assert_eq!(d.recommended, Some(5));
        assert_eq!(d.desired, 5);
    }

    #[test]
    fn a_target_outside_its_bounds_comes_back_without_metrics() {
        let hpa = Hpa {
            min_replicas: 2,
            max_replicas: 4,
            ..legacy_hpa()
        };
        let d = decide(&hpa, &seen(9, Source::Recommendation(1)));
        assert_eq!((d.recommended, d.desired), (None, 4));
        let d = decide(&hpa, &seen(1, Source::Recommendation(9)));
        assert_eq!((d.recommended, d.desired), (None, 2));
    }

    #[test]
    fn a_pod_without_a_cpu_request_invalidates_the_metric() {
        let mut p = ready(1000, 900);
        p.cpu_request = None;
        let d = decide(
            &legacy_hpa(),
            &seen(
                1,
                Source::Metrics {
                    pods: vec![p],
                    metrics: vec![Metric::ResourceUtilization { target: 50 }],
                },
            ),
        );
        assert_eq!((d.recommended, d.desired), (None, 1), "{d:?}");
        assert!(d.reason.contains("request"), "{}", d.reason);
    }

    fn cpu(current: i32, pods: Vec<Pod>, target: i64) -> Decision {
        decide(
            &legacy_hpa(),
            &seen(
                current,
                Source::Metrics {
                    pods,
                    metrics: vec![Metric::ResourceUtilization { target }],
                },
            ),
        )
    }

    #[test]
    fn missing_samples_on_a_scale_up_count_as_idle_and_can_cancel_it() {
        let mut missing = ready(1000, 0);
        missing.cpu = None;
        // 90 % against 50 % alone; with the missing pod at 0, 45 %: the
        // direction changed, so nothing moves.
        let d = cpu(2, vec![ready(1000, 900), missing], 50);
        assert_eq!(d.recommended, Some(2));
    }

    #[test]
    fn pending_pods_count_as_idle_on_a_scale_up() {
        let mut pending = ready(1000, 0);
        pending.state = PodState::Pending;
        pending.cpu = None;
        // 100 % against 50 %; with the pending pod at 0: 66 % -> 1.32 x 3.
        let d = cpu(3, vec![ready(1000, 1000), ready(1000, 1000), pending], 50);
        assert_eq!(d.recommended, Some(4));
    }

    fn with_down(select: Option<Select>) -> Hpa {
        Hpa {
            behavior: Some(Behavior {
                scale_down: Rules {
                    stabilization_window: Some(Duration::ZERO),
                    select,
                    policies: Some(vec![
                        Policy {
                            kind: PolicyKind::Pods,
                            value: 2,
                            period: Duration::from_secs(60),
                        },
                        Policy {
                            kind: PolicyKind::Percent,
                            value: 50,
                            period: Duration::from_secs(60),
                        },
                    ]),
                },
                ..Behavior::default()
            }),
            ..legacy_hpa()
        }
    }

    #[test]
    fn scale_down_policies_select_the_largest_or_the_smallest_change() {
        let s = seen(10, Source::Recommendation(1));
        assert_eq!(decide(&with_down(None), &s).desired, 5);
        assert_eq!(decide(&with_down(Some(Select::Min)), &s).desired, 8);
        assert_eq!(decide(&with_down(Some(Select::Disabled)), &s).desired, 10);
    }

    #[test]
    fn replicas_added_within_a_period_use_up_its_allowance() {
        let hpa = Hpa {
            behavior: Some(Behavior {
                scale_up: Rules {
                    policies: Some(vec![Policy {
                        kind: PolicyKind::Pods,
                        value: 4,
                        period: Duration::from_secs(60),
                    }]),
                    ..Rules::default()
                },
                ..Behavior::default()
            }),
            ..legacy_hpa()
        };
        let mut s = seen(10, Source::Recommendation(30));
        s.events = vec![ScaleEvent {
            age: Duration::from_secs(10),
            change: 4,
        }];
        assert_eq!(decide(&hpa, &s).desired, 10);
        // Once the event is older than the period, 4 more.
        s.events[0].age = Duration::from_secs(60);
        assert_eq!(decide(&hpa, &s).desired, 14);
    }

    #[test]
    fn the_legacy_controller_stabilizes_scale_down_over_five_minutes() {
        let mut s = seen(8, Source::Recommendation(2));
        s.history = vec![
            PastRecommendation {
                age: Duration::from_secs(300),
                replicas: 7,
            },
            PastRecommendation {
                age: Duration::from_secs(301),
                replicas: 9,
            },
        ];
        let d = decide(&legacy_hpa(), &s);
        assert_eq!((d.recommended, d.desired), (Some(2), 7));
    }

    #[test]
    fn disabled_scale_up_keeps_the_count() {
        let hpa = Hpa {
            behavior: Some(Behavior {
                scale_up: Rules {
                    select: Some(Select::Disabled),
                    ..Rules::default()
                },
                ..Behavior::default()
            }),
            ..legacy_hpa()
        };
        let d = decide(&hpa, &seen(3, Source::Recommendation(10)));
        assert_eq!(d.desired, 3);
    }
}
