//! Scenario files: one autoscaler decision (HPA) or a sequence of them
//! (KPA) as JSON, with the decision expected — the format of the reference
//! cases taken from Kubernetes' and Knative's test suites
//! (`shared/reference/autoscale/FORMAT.md`). [`simulate`] runs one and
//! [`check`] compares the result with its `expect`.
//!
//! Unknown keys are refused (a misspelt key would otherwise take a default
//! silently); every problem names the key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{hpa, kpa};

/// A scenario that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not JSON, or not the format.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(what: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid(what.into())
}

#[derive(Deserialize)]
struct Common {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    skip: Option<String>,
    policy: String,
    #[serde(default)]
    expect: Option<Value>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

/// A scenario read from its JSON.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its `id`.
    pub id: Option<String>,
    /// Why it is not run, when it is not.
    pub skip: Option<String>,
    /// What the decision must say: every key of it must equal the output's.
    pub expect: Option<Value>,
    /// The policy and its input.
    pub case: Case,
}

/// The policy and what it decides on.
#[derive(Debug, Clone)]
pub enum Case {
    /// One HPA sync.
    Hpa(hpa::Hpa, hpa::Observation),
    /// A KPA autoscaler and its observations, in time order.
    Kpa(kpa::Kpa, Vec<kpa::Observation>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HpaWire {
    current_replicas: i32,
    #[serde(default)]
    status_replicas: Option<i32>,
    min_replicas: i32,
    max_replicas: i32,
    #[serde(default = "default_tolerance")]
    tolerance: f64,
    #[serde(default)]
    pods: Option<Vec<PodWire>>,
    #[serde(default)]
    metrics: Option<Vec<MetricWire>>,
    #[serde(default)]
    recommendation: Option<i32>,
    #[serde(default)]
    behavior: Option<BehaviorWire>,
    #[serde(default)]
    recommendation_history: Vec<HistoryWire>,
    #[serde(default)]
    scale_events: Vec<EventWire>,
}

fn default_tolerance() -> f64 {
    hpa::DEFAULT_TOLERANCE
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PodWire {
    state: String,
    #[serde(default)]
    cpu_request: Option<i64>,
    #[serde(default)]
    cpu: Option<i64>,
    #[serde(default)]
    metrics: BTreeMap<String, i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricWire {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<i64>,
    #[serde(default)]
    target: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BehaviorWire {
    #[serde(default)]
    scale_up: Option<RulesWire>,
    #[serde(default)]
    scale_down: Option<RulesWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesWire {
    #[serde(default)]
    stabilization_window_s: Option<u64>,
    #[serde(default)]
    select_policy: Option<String>,
    #[serde(default)]
    policies: Option<Vec<PolicyWire>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyWire {
    #[serde(rename = "type")]
    kind: String,
    value: i32,
    period_s: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryWire {
    age_s: u64,
    replicas: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventWire {
    age_s: u64,
    change: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KpaWire {
    target: f64,
    panic_threshold: f64,
    max_scale_up_rate: f64,
    max_scale_down_rate: f64,
    stable_window_s: u64,
    #[serde(default = "yes")]
    reachable: bool,
    #[serde(default = "one")]
    activation_scale: i32,
    #[serde(default)]
    scale_down_delay_s: u64,
    observations: Vec<KpaObservationWire>,
}

fn yes() -> bool {
    true
}

fn one() -> i32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KpaObservationWire {
    t_s: u64,
    ready_pods: i32,
    stable: f64,
    panic: f64,
}

/// Read a scenario from its JSON text.
pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    let common: Common =
        serde_json::from_str(text).map_err(|e| invalid(format!("not a scenario: {e}")))?;
    let _ = (&common.source, &common.note);
    let rest = Value::Object(common.rest.into_iter().collect());
    let case = match common.policy.as_str() {
        "hpa" => {
            let w: HpaWire =
                serde_json::from_value(rest).map_err(|e| invalid(format!("hpa scenario: {e}")))?;
            hpa_case(w)?
        }
        "kpa" => {
            let w: KpaWire =
                serde_json::from_value(rest).map_err(|e| invalid(format!("kpa scenario: {e}")))?;
            kpa_case(w)?
        }
        other => {
            return Err(invalid(format!("unknown policy `{other}`: `hpa` or `kpa`")));
        }
    };
    Ok(Scenario {
        id: common.id,
        skip: common.skip,
        expect: common.expect,
        case,
    })
}

fn hpa_case(w: HpaWire) -> Result<Case, ScenarioError> {
    if w.min_replicas < 0 || w.max_replicas < w.min_replicas.max(1) {
        return Err(invalid(format!(
            "min_replicas {} and max_replicas {}: need 0 <= min <= max and max >= 1",
            w.min_replicas, w.max_replicas
        )));
    }
    if !(w.tolerance.is_finite() && w.tolerance >= 0.0) {
        return Err(invalid("tolerance must be a number >= 0"));
    }
    let source = match (w.recommendation, w.pods, w.metrics) {
        (Some(r), None, None) => hpa::Source::Recommendation(r),
        (None, pods, Some(metrics)) => hpa::Source::Metrics {
            pods: pods
                .unwrap_or_default()
                .into_iter()
                .map(pod)
                .collect::<Result<_, _>>()?,
            metrics: metrics.into_iter().map(metric).collect::<Result<_, _>>()?,
        },
        _ => {
            return Err(invalid(
                "give either `recommendation`, or `metrics` (with `pods`)",
            ));
        }
    };
    let behavior = w.behavior.map(|b| -> Result<hpa::Behavior, ScenarioError> {
        Ok(hpa::Behavior {
            scale_up: rules(b.scale_up, "scale_up")?,
            scale_down: rules(b.scale_down, "scale_down")?,
        })
    });
    Ok(Case::Hpa(
        hpa::Hpa {
            min_replicas: w.min_replicas,
            max_replicas: w.max_replicas,
            tolerance: w.tolerance,
            behavior: behavior.transpose()?,
        },
        hpa::Observation {
            current_replicas: w.current_replicas,
            status_replicas: w.status_replicas.unwrap_or(w.current_replicas),
            source,
            history: w
                .recommendation_history
                .into_iter()
                .map(|h| hpa::PastRecommendation {
                    age: Duration::from_secs(h.age_s),
                    replicas: h.replicas,
                })
                .collect(),
            events: w
                .scale_events
                .into_iter()
                .map(|e| hpa::ScaleEvent {
                    age: Duration::from_secs(e.age_s),
                    change: e.change,
                })
                .collect(),
        },
    ))
}

fn pod(w: PodWire) -> Result<hpa::Pod, ScenarioError> {
    let state = match w.state.as_str() {
        "ready" => hpa::PodState::Ready,
        "unready" => hpa::PodState::Unready,
        "pending" => hpa::PodState::Pending,
        "failed" => hpa::PodState::Failed,
        "deleting" => hpa::PodState::Deleting,
        other => {
            return Err(invalid(format!(
                "pod state `{other}`: ready, unready, pending, failed or deleting"
            )));
        }
    };
    Ok(hpa::Pod {
        state,
        cpu_request: w.cpu_request,
        cpu: w.cpu,
        metrics: w.metrics,
    })
}

fn metric(w: MetricWire) -> Result<hpa::Metric, ScenarioError> {
    let need = |v: Option<i64>, key: &str| {
        v.ok_or_else(|| invalid(format!("metric `{}` needs `{key}`", w.kind)))
    };
    Ok(match w.kind.as_str() {
        "resource-utilization" => hpa::Metric::ResourceUtilization {
            target: need(w.target, "target")?,
        },
        "pods-average" => hpa::Metric::PodsAverage {
            name: w
                .name
                .clone()
                .ok_or_else(|| invalid("metric `pods-average` needs `name`"))?,
            target: need(w.target, "target")?,
        },
        "object-value" => hpa::Metric::ObjectValue {
            value: need(w.value, "value")?,
            target: need(w.target, "target")?,
        },
        "external-value" => hpa::Metric::ExternalValue {
            value: need(w.value, "value")?,
            target: need(w.target, "target")?,
        },
        "object-average" => hpa::Metric::ObjectAverage {
            value: need(w.value, "value")?,
            target: need(w.target, "target")?,
        },
        "external-average" => hpa::Metric::ExternalAverage {
            value: need(w.value, "value")?,
            target: need(w.target, "target")?,
        },
        "invalid" => hpa::Metric::Invalid,
        other => return Err(invalid(format!("unknown metric type `{other}`"))),
    })
}

fn rules(w: Option<RulesWire>, which: &str) -> Result<hpa::Rules, ScenarioError> {
    let Some(w) = w else {
        return Ok(hpa::Rules::default());
    };
    let select = match w.select_policy.as_deref() {
        None => None,
        Some("max") => Some(hpa::Select::Max),
        Some("min") => Some(hpa::Select::Min),
        Some("disabled") => Some(hpa::Select::Disabled),
        Some(other) => {
            return Err(invalid(format!(
                "{which}.select_policy `{other}`: max, min or disabled"
            )));
        }
    };
    let policies = w
        .policies
        .map(|ps| {
            ps.into_iter()
                .map(|p| {
                    let kind = match p.kind.as_str() {
                        "pods" => hpa::PolicyKind::Pods,
                        "percent" => hpa::PolicyKind::Percent,
                        other => {
                            return Err(invalid(format!(
                                "{which} policy type `{other}`: pods or percent"
                            )));
                        }
                    };
                    if p.value <= 0 || p.period_s == 0 {
                        return Err(invalid(format!(
                            "{which} policy: value and period_s must be above 0"
                        )));
                    }
                    Ok(hpa::Policy {
                        kind,
                        value: p.value,
                        period: Duration::from_secs(p.period_s),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(hpa::Rules {
        stabilization_window: w.stabilization_window_s.map(Duration::from_secs),
        select,
        policies,
    })
}

fn kpa_case(w: KpaWire) -> Result<Case, ScenarioError> {
    for (key, v) in [
        ("target", w.target),
        ("panic_threshold", w.panic_threshold),
        ("max_scale_up_rate", w.max_scale_up_rate),
        ("max_scale_down_rate", w.max_scale_down_rate),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(invalid(format!("`{key}` must be a number above 0")));
        }
    }
    let mut last = 0;
    for o in &w.observations {
        if o.t_s < last {
            return Err(invalid("observations must be in time order"));
        }
        last = o.t_s;
        if !(o.stable.is_finite() && o.panic.is_finite() && o.stable >= 0.0 && o.panic >= 0.0) {
            return Err(invalid("observed values must be numbers >= 0"));
        }
    }
    Ok(Case::Kpa(
        kpa::Kpa {
            target: w.target,
            panic_threshold: w.panic_threshold,
            max_scale_up_rate: w.max_scale_up_rate,
            max_scale_down_rate: w.max_scale_down_rate,
            stable_window: Duration::from_secs(w.stable_window_s),
            reachable: w.reachable,
            activation_scale: w.activation_scale,
            scale_down_delay: Duration::from_secs(w.scale_down_delay_s),
        },
        w.observations
            .into_iter()
            .map(|o| kpa::Observation {
                at: Duration::from_secs(o.t_s),
                ready_pods: o.ready_pods,
                stable: o.stable,
                panic: o.panic,
            })
            .collect(),
    ))
}

/// The decision(s), as `FORMAT.md` gives them: HPA `{"recommended",
/// "desired", "reason"}`, KPA `{"desired": [...], "reason"}`.
pub fn simulate(case: &Case) -> Value {
    match case {
        Case::Hpa(h, seen) => {
            let d = hpa::decide(h, seen);
            json!({ "recommended": d.recommended, "desired": d.desired, "reason": d.reason })
        }
        Case::Kpa(k, observations) => {
            let mut a = kpa::Autoscaler::new(k.clone());
            let desired: Vec<i32> = observations.iter().map(|o| a.decide(o)).collect();
            json!({
                "desired": desired,
                "reason": if a.panicking() { "panic mode at the end" } else { "stable mode at the end" },
            })
        }
    }
}

/// The keys of `expect` whose value `got` does not have, as `key: expected
/// X, got Y`.
pub fn check(expect: &Value, got: &Value) -> Vec<String> {
    let Some(expect) = expect.as_object() else {
        return vec!["`expect` is not an object".to_owned()];
    };
    expect
        .iter()
        .filter(|(k, v)| got.get(k.as_str()) != Some(v))
        .map(|(k, v)| {
            format!(
                "{k}: expected {v}, got {}",
                got.get(k.as_str()).unwrap_or(&Value::Null)
            )
        })
        .collect()
}
