//! The gateway's configuration: the serializable [`Config`] that callers
//! build, `GET /config` returns and `PUT /config` accepts, and its compile
//! step into the validated [`Compiled`] form the proxy routes with.
//!
//! It owns validation (every error collected, not only the first); it does
//! not own the live state of replicas (`balance`) or their counters
//! (`metrics`).

use std::collections::BTreeSet;
use std::time::Duration;

use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// What the gateway serves: named variants, each a weighted pool of
/// replicas, the routes that pin requests to a variant, and the limits.
///
/// Routing order: the first [`Route`] that matches wins; otherwise the
/// request is assigned by [`Variant::weight`], by a hash of its [`Sticky`]
/// key when it carries one (one user, one arm), at random otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The variants (`stable`, `canary`, or `blue`, `green`…), in order.
    pub variants: Vec<Variant>,
    /// Header and cookie matches that send a request to a named variant.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Where the key for sticky weighted assignment comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Time allowed from sending a request upstream to its response
    /// headers; past it the client gets 504.
    #[serde(default = "defaults::upstream_timeout_ms")]
    pub upstream_timeout_ms: u64,
    /// Time a client may take to send a request body; past it, 408.
    #[serde(default = "defaults::body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Largest request body accepted; a larger one gets 413.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    /// Consecutive failures (transport error, timeout, 5xx) after which a
    /// replica is ejected. A refused connection ejects it at once: nothing
    /// listens there.
    #[serde(default = "defaults::eject_after")]
    pub eject_after: u32,
    /// First ejection time; each further ejection in a row doubles it.
    #[serde(default = "defaults::eject_base_ms")]
    pub eject_base_ms: u64,
    /// Longest ejection time.
    #[serde(default = "defaults::eject_max_ms")]
    pub eject_max_ms: u64,
    /// Variants that get a copy of a share of the traffic, their answers
    /// compared with the primary's and never returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<Shadow>,
    /// Active health checks of every replica; none when absent (passive
    /// ejection only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// A bounded sample of the requests answered, with their answers, as
    /// JSON lines; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_log: Option<super::predictions::PredictionLogConfig>,
    /// Latency bucket bounds in microseconds exposed on `/metrics` besides
    /// the defaults ([`super::metrics::LATENCY_BUCKETS_SECONDS`]): an SLO's
    /// threshold, so that "requests within it" is a bucket, not an
    /// interpolation. Counted from the exact histogram, so a bound added
    /// later counts every request since the gateway started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_buckets_us: Vec<u64>,
}

/// At most this many extra latency buckets.
pub(crate) const MAX_EXTRA_LATENCY_BUCKETS: usize = 32;

/// Active health checks: every `interval-ms`, one task per gateway sends
/// `GET path` to each replica of every variant over a fresh connection. A
/// replica whose probes fail `unhealthy-after` times in a row (no 2xx
/// within `timeout-ms`, or no connection) leaves rotation, under the same
/// never-the-last rule as passive ejection; `healthy-after` passes in a
/// row bring it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthCheck {
    /// The path probed (the Open Inference Protocol's readiness by
    /// default).
    #[serde(default = "defaults::health_path")]
    pub path: String,
    /// Time from the start of one round of probes to the next.
    #[serde(default = "defaults::health_interval_ms")]
    pub interval_ms: u64,
    /// Time a probe may take, connecting included; at most the interval.
    #[serde(default = "defaults::health_timeout_ms")]
    pub timeout_ms: u64,
    /// Failed probes in a row that make a replica unhealthy.
    #[serde(default = "defaults::unhealthy_after")]
    pub unhealthy_after: u32,
    /// Passed probes in a row that make an unhealthy replica healthy.
    #[serde(default = "defaults::healthy_after")]
    pub healthy_after: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: defaults::health_path(),
            interval_ms: defaults::health_interval_ms(),
            timeout_ms: defaults::health_timeout_ms(),
            unhealthy_after: defaults::unhealthy_after(),
            healthy_after: defaults::healthy_after(),
        }
    }
}

/// Mirroring to a shadow variant: a share of the requests the primary
/// routing serves is copied to it, and its answer compared with the
/// primary's (status, body, numbers within the tolerance), recorded, and
/// never returned. A shadow variant has weight 0 and no route targets it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Shadow {
    /// The shadow variant's name.
    pub variant: String,
    /// The fraction of requests copied, in `[0, 1]`.
    pub share: f64,
    /// How far numbers in the two answers may differ and still agree.
    #[serde(default)]
    pub tolerance: Tolerance,
    /// Time allowed for the shadow's whole answer (and for the primary's
    /// body to be seen for the comparison); past it the mirror failed.
    #[serde(default = "defaults::shadow_timeout_ms")]
    pub timeout_ms: u64,
    /// Mirrored requests outstanding at once; past it a request that would
    /// be copied is not (and is counted as skipped).
    #[serde(default = "defaults::shadow_max_in_flight")]
    pub max_in_flight: u32,
}

// The floats are validated finite (and JSON has no NaN): equality is total.
impl Eq for Shadow {}

/// Numbers `a` (shadow) and `b` (primary) agree when
/// `|a - b| <= absolute + relative * |b|`. Both default to 0: exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Tolerance {
    /// The absolute part.
    #[serde(default)]
    pub absolute: f64,
    /// The part relative to the primary's value.
    #[serde(default)]
    pub relative: f64,
}

impl Eq for Tolerance {}

mod defaults {
    pub(super) fn body_timeout_ms() -> u64 {
        30_000
    }
    pub(super) fn upstream_timeout_ms() -> u64 {
        30_000
    }
    pub(super) fn max_body_bytes() -> u64 {
        10 * 1024 * 1024
    }
    pub(super) fn eject_after() -> u32 {
        3
    }
    pub(super) fn eject_base_ms() -> u64 {
        1_000
    }
    pub(super) fn eject_max_ms() -> u64 {
        30_000
    }
    pub(super) fn shadow_timeout_ms() -> u64 {
        5_000
    }
    pub(super) fn shadow_max_in_flight() -> u32 {
        64
    }
    pub(super) fn health_path() -> String {
        "/v2/health/ready".to_owned()
    }
    pub(super) fn health_interval_ms() -> u64 {
        1_000
    }
    pub(super) fn health_timeout_ms() -> u64 {
        500
    }
    pub(super) fn unhealthy_after() -> u32 {
        2
    }
    pub(super) fn healthy_after() -> u32 {
        1
    }
}

/// One arm of a release: a weighted pool of replica upstreams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Variant {
    /// Its name, unique in the config.
    pub name: String,
    /// Its share of unrouted traffic, relative to the other weights.
    #[serde(default)]
    pub weight: u32,
    /// Replica base URLs, `http://HOST:PORT`.
    pub replicas: Vec<String>,
    /// The model version its replicas serve (`iris@3`), a label of its
    /// measurements and prediction log lines. When absent, the version
    /// its replicas were last given in a config is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A match that pins a request to a variant. Exactly one of `header`
/// (`"x-variant: canary"`) and `cookie` (`"arm=b"`) is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Route {
    /// `NAME: VALUE`: the request carries header NAME with exactly VALUE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `NAME=VALUE`: the request carries cookie NAME with exactly VALUE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The variant matching requests go to.
    pub variant: String,
}

/// The request part whose value keys sticky assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Sticky {
    /// The value of this cookie.
    Cookie(String),
    /// The value of this header.
    Header(String),
}

impl Config {
    /// One variant, `stable`, balanced over `replicas`, defaults elsewhere.
    pub fn single(replicas: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self::weighted([("stable", 1, replicas.into_iter().map(Into::into).collect())])
    }

    /// Variants from `(name, weight, replicas)`, defaults elsewhere.
    pub fn weighted<'a>(variants: impl IntoIterator<Item = (&'a str, u32, Vec<String>)>) -> Self {
        Self {
            variants: variants
                .into_iter()
                .map(|(name, weight, replicas)| Variant {
                    name: name.to_owned(),
                    weight,
                    replicas,
                    version: None,
                })
                .collect(),
            routes: Vec::new(),
            sticky: None,
            upstream_timeout_ms: defaults::upstream_timeout_ms(),
            body_timeout_ms: defaults::body_timeout_ms(),
            max_body_bytes: defaults::max_body_bytes(),
            eject_after: defaults::eject_after(),
            eject_base_ms: defaults::eject_base_ms(),
            eject_max_ms: defaults::eject_max_ms(),
            shadows: Vec::new(),
            health: None,
            prediction_log: None,
            latency_buckets_us: Vec::new(),
        }
    }
}

impl Shadow {
    /// Copy `share` of the requests to `variant`, defaults elsewhere.
    pub fn new(variant: impl Into<String>, share: f64) -> Self {
        Self {
            variant: variant.into(),
            share,
            tolerance: Tolerance::default(),
            timeout_ms: defaults::shadow_timeout_ms(),
            max_in_flight: defaults::shadow_max_in_flight(),
        }
    }
}

/// A [`Config`] that passed validation, in the form routing uses.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) variants: Vec<CompiledVariant>,
    pub(crate) routes: Vec<CompiledRoute>,
    pub(crate) sticky: Option<CompiledSticky>,
    pub(crate) total_weight: u64,
    pub(crate) upstream_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) max_body_bytes: u64,
    pub(crate) eject_after: u32,
    pub(crate) eject_base: Duration,
    pub(crate) eject_max: Duration,
    pub(crate) shadows: Vec<CompiledShadow>,
    pub(crate) health: Option<CompiledHealth>,
    /// Every latency bucket bound exposed, in seconds, ascending.
    pub(crate) latency_bounds: std::sync::Arc<[f64]>,
}

/// [`HealthCheck`], validated.
#[derive(Clone, Debug)]
pub(crate) struct CompiledHealth {
    /// Origin form: the path and query probed.
    pub(crate) path: Uri,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) unhealthy_after: u32,
    pub(crate) healthy_after: u32,
}

#[derive(Debug)]
pub(crate) struct CompiledShadow {
    /// The shadow variant's index in `variants`.
    pub(crate) variant: usize,
    pub(crate) share: f64,
    pub(crate) tolerance: Tolerance,
    pub(crate) timeout: Duration,
    pub(crate) max_in_flight: u32,
}

#[derive(Debug)]
pub(crate) struct CompiledVariant {
    pub(crate) name: String,
    /// The name as the value of [`super::VARIANT_HEADER`], made once.
    pub(crate) header: Option<HeaderValue>,
    pub(crate) weight: u32,
    /// The replicas' base URLs, as given, and parsed.
    pub(crate) replicas: Vec<(String, Uri)>,
    /// The model version it serves, when known.
    pub(crate) version: Option<String>,
}

#[derive(Debug)]
pub(crate) enum CompiledRoute {
    Header {
        name: HeaderName,
        value: String,
        variant: usize,
    },
    Cookie {
        name: String,
        value: String,
        variant: usize,
    },
}

#[derive(Debug)]
pub(crate) enum CompiledSticky {
    Cookie(String),
    Header(HeaderName),
}

/// Validate `config`; on failure, every problem found, one per entry.
pub(crate) fn compile(config: &Config) -> Result<Compiled, Vec<String>> {
    let mut errors = Vec::new();
    if config.variants.is_empty() {
        errors.push("no variants: the gateway needs at least one".to_owned());
    }
    let mut names = BTreeSet::new();
    let mut variants = Vec::new();
    for (i, v) in config.variants.iter().enumerate() {
        if v.name.is_empty()
            || !v
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            errors.push(format!(
                "variants[{i}]: name {:?} must be non-empty ASCII letters, digits, '-', '_' or '.'",
                v.name
            ));
        }
        if !names.insert(v.name.as_str()) {
            errors.push(format!(
                "variants[{i}]: duplicate variant name {:?}",
                v.name
            ));
        }
        if v.replicas.is_empty() {
            errors.push(format!("variant {:?}: no replicas", v.name));
        }
        if let Some(version) = &v.version
            && (version.is_empty()
                || version.len() > 128
                || version.chars().any(|c| c.is_control()))
        {
            errors.push(format!(
                "variant {:?}: version {version:?} must be 1 to 128 printable characters",
                v.name
            ));
        }
        let mut seen = BTreeSet::new();
        let mut replicas = Vec::new();
        for url in &v.replicas {
            if !seen.insert(url.as_str()) {
                errors.push(format!(
                    "variant {:?}: replica {url:?} listed twice",
                    v.name
                ));
            }
            match parse_replica(url) {
                Ok(uri) => replicas.push((url.clone(), uri)),
                Err(e) => errors.push(format!("variant {:?}: replica {url:?}: {e}", v.name)),
            }
        }
        variants.push(CompiledVariant {
            name: v.name.clone(),
            header: HeaderValue::from_str(&v.name).ok(),
            weight: v.weight,
            replicas,
            version: v.version.clone(),
        });
    }
    let total_weight: u64 = config.variants.iter().map(|v| u64::from(v.weight)).sum();
    if !config.variants.is_empty() && total_weight == 0 {
        errors.push(
            "every variant has weight 0: unrouted requests would have nowhere to go".to_owned(),
        );
    }
    let index_of = |name: &str| config.variants.iter().position(|v| v.name == name);
    let mut routes = Vec::new();
    for (i, r) in config.routes.iter().enumerate() {
        let Some(variant) = index_of(&r.variant) else {
            errors.push(format!("routes[{i}]: unknown variant {:?}", r.variant));
            continue;
        };
        match (&r.header, &r.cookie) {
            (Some(h), None) => match h.split_once(':') {
                Some((name, value)) => match HeaderName::from_bytes(name.trim().as_bytes()) {
                    Ok(name) => routes.push(CompiledRoute::Header {
                        name,
                        value: value.trim().to_owned(),
                        variant,
                    }),
                    Err(_) => errors.push(format!(
                        "routes[{i}]: {:?} is not a header name",
                        name.trim()
                    )),
                },
                None => errors.push(format!(
                    "routes[{i}]: header match {h:?} is not `NAME: VALUE`"
                )),
            },
            (None, Some(c)) => match c.split_once('=') {
                Some((name, value)) if !name.trim().is_empty() => {
                    routes.push(CompiledRoute::Cookie {
                        name: name.trim().to_owned(),
                        value: value.trim().to_owned(),
                        variant,
                    })
                }
                _ => errors.push(format!(
                    "routes[{i}]: cookie match {c:?} is not `NAME=VALUE`"
                )),
            },
            _ => errors.push(format!(
                "routes[{i}]: set exactly one of `header` and `cookie`"
            )),
        }
    }
    let sticky = match &config.sticky {
        None => None,
        Some(Sticky::Cookie(name)) if !name.is_empty() => {
            Some(CompiledSticky::Cookie(name.clone()))
        }
        Some(Sticky::Cookie(_)) => {
            errors.push("sticky: empty cookie name".to_owned());
            None
        }
        Some(Sticky::Header(name)) => match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Some(CompiledSticky::Header(h)),
            Err(_) => {
                errors.push(format!("sticky: {name:?} is not a header name"));
                None
            }
        },
    };
    if config.upstream_timeout_ms == 0 {
        errors.push("upstream-timeout-ms must be above 0".to_owned());
    }
    if config.body_timeout_ms == 0 {
        errors.push("body-timeout-ms must be above 0".to_owned());
    }
    if config.eject_after == 0 {
        errors.push("eject-after must be above 0".to_owned());
    }
    if config.eject_base_ms == 0 || config.eject_max_ms < config.eject_base_ms {
        errors.push("eject-base-ms must be above 0 and at most eject-max-ms".to_owned());
    }
    let shadows = compile_shadows(config, &mut errors);
    let health = config
        .health
        .as_ref()
        .and_then(|h| compile_health(h, &mut errors));
    if let Some(log) = &config.prediction_log {
        log.check(&mut errors);
    }
    let latency_bounds = compile_latency_bounds(&config.latency_buckets_us, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Compiled {
        variants,
        routes,
        sticky,
        total_weight,
        upstream_timeout: Duration::from_millis(config.upstream_timeout_ms),
        body_timeout: Duration::from_millis(config.body_timeout_ms),
        max_body_bytes: config.max_body_bytes,
        eject_after: config.eject_after,
        eject_base: Duration::from_millis(config.eject_base_ms),
        eject_max: Duration::from_millis(config.eject_max_ms),
        shadows,
        health,
        latency_bounds,
    })
}

/// The default bounds with `extra` (µs) added, in seconds, ascending.
fn compile_latency_bounds(extra: &[u64], errors: &mut Vec<String>) -> std::sync::Arc<[f64]> {
    if extra.len() > MAX_EXTRA_LATENCY_BUCKETS {
        errors.push(format!(
            "latency-buckets-us: {} bounds, at most {MAX_EXTRA_LATENCY_BUCKETS}",
            extra.len()
        ));
    }
    // The exact histogram holds up to an hour.
    if let Some(b) = extra.iter().find(|&&b| b == 0 || b > 3_600_000_000) {
        errors.push(format!(
            "latency-buckets-us: {b} is not between 1 µs and an hour"
        ));
    }
    let mut bounds: Vec<f64> = super::metrics::LATENCY_BUCKETS_SECONDS.to_vec();
    bounds.extend(extra.iter().map(|&us| us as f64 / 1e6));
    bounds.sort_by(f64::total_cmp);
    bounds.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    bounds.into()
}

/// Validate `health`, pushing every problem onto `errors`.
fn compile_health(health: &HealthCheck, errors: &mut Vec<String>) -> Option<CompiledHealth> {
    let before = errors.len();
    let path = match health.path.parse::<Uri>() {
        Ok(uri) if health.path.starts_with('/') && uri.authority().is_none() => Some(uri),
        _ => {
            errors.push(format!(
                "health: path {:?} is not an absolute path (`/v2/health/ready`)",
                health.path
            ));
            None
        }
    };
    if health.interval_ms < 10 || health.interval_ms > 3_600_000 {
        errors.push(format!(
            "health: interval-ms {} is not between 10 and 3600000",
            health.interval_ms
        ));
    }
    if health.timeout_ms == 0 || health.timeout_ms > health.interval_ms {
        errors.push(format!(
            "health: timeout-ms {} must be above 0 and at most interval-ms ({})",
            health.timeout_ms, health.interval_ms
        ));
    }
    if health.unhealthy_after == 0 {
        errors.push("health: unhealthy-after must be above 0".to_owned());
    }
    if health.healthy_after == 0 {
        errors.push("health: healthy-after must be above 0".to_owned());
    }
    (errors.len() == before).then(|| CompiledHealth {
        path: path.expect("valid when no error was pushed"),
        interval: Duration::from_millis(health.interval_ms),
        timeout: Duration::from_millis(health.timeout_ms),
        unhealthy_after: health.unhealthy_after,
        healthy_after: health.healthy_after,
    })
}

/// Validate `config.shadows`, pushing every problem onto `errors`.
fn compile_shadows(config: &Config, errors: &mut Vec<String>) -> Vec<CompiledShadow> {
    let mut shadows = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, s) in config.shadows.iter().enumerate() {
        let at = format!("shadows[{i}]");
        let variant = config.variants.iter().position(|v| v.name == s.variant);
        match variant {
            None => errors.push(format!("{at}: unknown variant {:?}", s.variant)),
            Some(v) => {
                if config.variants.len() == 1 {
                    errors.push(format!(
                        "{at}: {:?} is the only variant: a shadow needs a primary to copy",
                        s.variant
                    ));
                }
                if config.variants[v].weight != 0 {
                    errors.push(format!(
                        "{at}: shadow variant {:?} must have weight 0, not {}",
                        s.variant, config.variants[v].weight
                    ));
                }
                if config.routes.iter().any(|r| r.variant == s.variant) {
                    errors.push(format!(
                        "{at}: shadow variant {:?} is the target of a route",
                        s.variant
                    ));
                }
            }
        }
        if !seen.insert(s.variant.as_str()) {
            errors.push(format!("{at}: variant {:?} is shadowed twice", s.variant));
        }
        if !(0.0..=1.0).contains(&s.share) {
            errors.push(format!("{at}: share {} is not in [0, 1]", s.share));
        }
        let t = s.tolerance;
        if !(t.absolute.is_finite()
            && t.absolute >= 0.0
            && t.relative.is_finite()
            && t.relative >= 0.0)
        {
            errors.push(format!(
                "{at}: tolerance absolute {} and relative {} must be finite and at least 0",
                t.absolute, t.relative
            ));
        }
        if s.timeout_ms == 0 {
            errors.push(format!("{at}: timeout-ms must be above 0"));
        }
        if s.max_in_flight == 0 {
            errors.push(format!("{at}: max-in-flight must be above 0"));
        }
        if let Some(variant) = variant {
            shadows.push(CompiledShadow {
                variant,
                share: s.share,
                tolerance: t,
                timeout: Duration::from_millis(s.timeout_ms),
                max_in_flight: s.max_in_flight,
            });
        }
    }
    shadows
}

/// A replica base URL: `http`, an authority, no path beyond `/`, no query.
fn parse_replica(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// upstreams are supported".to_owned());
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err("no host".to_owned());
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err("a replica URL takes no path or query".to_owned());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::{Config, compile};

    /// Compile the JSON config `json`; `expected` is every error, in order
    /// (empty: valid).
    fn check(json: &str, expected: &[&str]) {
        let config: Config = serde_json::from_str(json).expect("a config's JSON");
        let errors = match compile(&config) {
            Ok(_) => Vec::new(),
            Err(errors) => errors,
        };
        assert_eq!(errors, expected, "for {json}");
    }

    #[test]
    fn valid_configs_compile() {
        check(
            r#"{"variants": [{"name": "stable", "weight": 1, "replicas": ["http://127.0.0.1:8001"]}]}"#,
            &[],
        );
        check(
            r#"{"variants": [
                  {"name": "blue", "weight": 0, "replicas": ["http://127.0.0.1:8001/"]},
                  {"name": "green", "weight": 1, "replicas": ["http://localhost:8002"]}],
                "routes": [{"header": "x-colour: blue", "variant": "blue"},
                           {"cookie": "arm=blue", "variant": "blue"}],
                "sticky": {"cookie": "user"},
                "upstream-timeout-ms": 500, "max-body-bytes": 0}"#,
            &[],
        );
    }

    #[test]
    fn every_error_is_reported() {
        check(
            r#"{"variants": []}"#,
            &["no variants: the gateway needs at least one"],
        );
        check(
            r#"{"variants": [
                  {"name": "a b", "weight": 0, "replicas": []},
                  {"name": "a b", "weight": 0, "replicas": ["https://x:1", "http://x:1/p", "http://x:1/p"]}],
                "routes": [{"header": "no-colon", "variant": "a b"},
                           {"cookie": "k=v", "header": "h: v", "variant": "a b"},
                           {"cookie": "k=v", "variant": "nope"}],
                "sticky": {"header": "bad header"},
                "upstream-timeout-ms": 0, "eject-after": 0, "eject-base-ms": 10, "eject-max-ms": 5}"#,
            &[
                r#"variants[0]: name "a b" must be non-empty ASCII letters, digits, '-', '_' or '.'"#,
                r#"variant "a b": no replicas"#,
                r#"variants[1]: name "a b" must be non-empty ASCII letters, digits, '-', '_' or '.'"#,
                r#"variants[1]: duplicate variant name "a b""#,
                r#"variant "a b": replica "https://x:1": only http:// upstreams are supported"#,
                r#"variant "a b": replica "http://x:1/p": a replica URL takes no path or query"#,
                r#"variant "a b": replica "http://x:1/p" listed twice"#,
                r#"variant "a b": replica "http://x:1/p": a replica URL takes no path or query"#,
                "every variant has weight 0: unrouted requests would have nowhere to go",
                r#"routes[0]: header match "no-colon" is not `NAME: VALUE`"#,
                "routes[1]: set exactly one of `header` and `cookie`",
                r#"routes[2]: unknown variant "nope""#,
                r#"sticky: "bad header" is not a header name"#,
                "upstream-timeout-ms must be above 0",
                "eject-after must be above 0",
                "eject-base-ms must be above 0 and at most eject-max-ms",
            ],
        );
    }

    #[test]
    fn shadows_compile_with_defaults() {
        check(
            r#"{"variants": [
                  {"name": "stable", "weight": 1, "replicas": ["http://127.0.0.1:8001"]},
                  {"name": "shadow", "replicas": ["http://127.0.0.1:8002"]}],
                "shadows": [{"variant": "shadow", "share": 0.1,
                             "tolerance": {"absolute": 1e-6, "relative": 1e-3}}]}"#,
            &[],
        );
        let config: Config =
            serde_json::from_str(r#"{"variants": [], "shadows": [{"variant": "s", "share": 1}]}"#)
                .expect("a config's JSON");
        assert_eq!(config.shadows[0].timeout_ms, 5_000);
        assert_eq!(config.shadows[0].max_in_flight, 64);
        assert_eq!(config.shadows[0].tolerance.absolute, 0.0);
        let err = serde_json::from_str::<Config>(
            r#"{"variants": [], "shadows": [{"variant": "s", "share": 1, "weight": 0}]}"#,
        )
        .expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `weight`"), "{err}");
    }

    #[test]
    fn health_checks_compile_with_defaults_and_report_every_error() {
        let replicas =
            r#""variants": [{"name": "s", "weight": 1, "replicas": ["http://127.0.0.1:8001"]}]"#;
        check(&format!(r#"{{{replicas}, "health": {{}}}}"#), &[]);
        let config: Config = serde_json::from_str(&format!(
            r#"{{{replicas}, "health": {{"interval-ms": 200}}}}"#
        ))
        .expect("a config's JSON");
        let health = config.health.expect("health is set");
        assert_eq!(health.path, "/v2/health/ready");
        assert_eq!(
            (health.interval_ms, health.timeout_ms),
            (200, 500),
            "the timeout is not capped silently: it is an error"
        );
        check(
            &format!(
                r#"{{{replicas}, "health": {{"path": "http://x/ready", "interval-ms": 5,
                    "timeout-ms": 0, "unhealthy-after": 0, "healthy-after": 0}}}}"#
            ),
            &[
                r#"health: path "http://x/ready" is not an absolute path (`/v2/health/ready`)"#,
                "health: interval-ms 5 is not between 10 and 3600000",
                "health: timeout-ms 0 must be above 0 and at most interval-ms (5)",
                "health: unhealthy-after must be above 0",
                "health: healthy-after must be above 0",
            ],
        );
        check(
            &format!(r#"{{{replicas}, "health": {{"interval-ms": 100, "timeout-ms": 200}}}}"#),
            &["health: timeout-ms 200 must be above 0 and at most interval-ms (100)"],
        );
        let err = serde_json::from_str::<Config>(&format!(
            r#"{{{replicas}, "health": {{"interval": "1s"}}}}"#
        ))
        .expect_err("unknown key");
        assert!(
            err.to_string().contains("unknown field `interval`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<Config>(r#"{"variants": [], "retry-post": true}"#)
            .expect_err("unknown key");
        assert!(
            err.to_string().contains("unknown field `retry-post`"),
            "{err}"
        );
    }
}
