//! What the gateway measures, per variant and per replica: requests by
//! status class, latency (an HDR histogram in microseconds, and fixed
//! Prometheus buckets), requests in flight, bytes in and out.
//!
//! It owns the counters, the serializable [`MetricsSnapshot`] and the
//! Prometheus text exposition; it does not decide what is recorded when
//! (that is the proxy's).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Upper bounds of the Prometheus latency buckets, in seconds, unless the
/// config adds some ([`super::Config::latency_buckets_us`]).
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Largest latency the HDR histogram holds exactly (an hour, in µs);
/// larger ones saturate to it.
const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;

/// Exemplar slots per meter: one per power of two of microseconds (an hour
/// is under 2^32 µs).
const EXEMPLAR_SLOTS: usize = 34;

/// A request id in an exemplar is at most this long: OpenMetrics allows
/// 128 characters for an exemplar's labels.
const MAX_EXEMPLAR_ID: usize = 100;

/// One request that was measured, as an OpenMetrics exemplar: it links a
/// latency bucket to a request id that the logs (`mlops logs
/// --request-id`) find.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Exemplar {
    /// The request's `X-Request-Id`.
    pub request_id: String,
    /// Its latency in seconds.
    pub seconds: f64,
    /// When it ended, in milliseconds since the Unix epoch.
    pub unix_ms: i64,
}

/// The exact histogram and the latest request seen in each power of two
/// of microseconds, under one lock.
#[derive(Debug)]
struct Latency {
    histogram: Histogram<u64>,
    exemplars: [Option<Exemplar>; EXEMPLAR_SLOTS],
}

/// Counters for one variant or one replica. Lock-free but for the
/// histogram's mutex.
#[derive(Debug)]
pub(crate) struct Meter {
    by_class: [AtomicU64; 5],
    in_flight: AtomicI64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    sum_micros: AtomicU64,
    latency: Mutex<Latency>,
}

impl Meter {
    pub(crate) fn new() -> Self {
        Self {
            by_class: Default::default(),
            in_flight: AtomicI64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            latency: Mutex::new(Latency {
                histogram: Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)
                    .expect("static histogram bounds are valid"),
                exemplars: std::array::from_fn(|_| None),
            }),
        }
    }

    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// A request that [`start`](Self::start)ed ended: with `status`, or
    /// without a response (`None`: only the in-flight count changes). Its
    /// id, when given, becomes the exemplar of its latency's slot.
    pub(crate) fn finish(&self, status: Option<u16>, elapsed: Duration, request_id: Option<&[u8]>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let Some(status) = status else { return };
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        let micros = micros.max(1);
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        latency.histogram.saturating_record(micros);
        if let Some(id) = request_id.filter(|id| id.len() <= MAX_EXEMPLAR_ID) {
            let slot = (u64::BITS - micros.leading_zeros()) as usize;
            let e =
                latency.exemplars[slot.min(EXEMPLAR_SLOTS - 1)].get_or_insert_with(|| Exemplar {
                    request_id: String::new(),
                    seconds: 0.0,
                    unix_ms: 0,
                });
            // The id buffer is reused: no allocation once warm.
            e.request_id.clear();
            e.request_id.push_str(&String::from_utf8_lossy(id));
            e.seconds = micros as f64 / 1e6;
            e.unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
        }
    }

    /// The meter now, with cumulative latency counts at `bounds`
    /// (seconds, ascending) taken from the exact histogram: a request is
    /// within a bound when its latency is, to the histogram's precision
    /// (3 significant digits, 0.1 %).
    pub(crate) fn snapshot(&self, bounds: &[f64]) -> MeterSnapshot {
        let (latency, exemplars) = {
            let l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
            let exemplars: Vec<Exemplar> = l.exemplars.iter().flatten().cloned().collect();
            (l.histogram.clone(), exemplars)
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let [c1, c2, c3, c4, c5] = &self.by_class;
        let buckets = bounds
            .iter()
            .map(|&b| {
                let micros = (b * 1e6).round() as u64;
                if latency.is_empty() || micros == 0 {
                    0
                } else {
                    latency.count_between(0, micros.min(HISTOGRAM_MAX_MICROS))
                }
            })
            .collect();
        MeterSnapshot {
            requests: StatusClasses {
                informational: load(c1),
                success: load(c2),
                redirection: load(c3),
                client_error: load(c4),
                server_error: load(c5),
            },
            in_flight: self.in_flight(),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            latency: LatencySummary::of(&latency),
            latency_sum_seconds: load(&self.sum_micros) as f64 / 1e6,
            latency_bounds: bounds.to_vec(),
            latency_buckets: buckets,
            exemplars,
            latency_histogram: latency,
        }
    }
}

/// Responses counted by status class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusClasses {
    /// 1xx.
    pub informational: u64,
    /// 2xx.
    pub success: u64,
    /// 3xx.
    pub redirection: u64,
    /// 4xx.
    pub client_error: u64,
    /// 5xx (the gateway's own 502, 503 and 504 included).
    pub server_error: u64,
}

impl StatusClasses {
    /// Every response counted.
    pub fn total(&self) -> u64 {
        self.informational + self.success + self.redirection + self.client_error + self.server_error
    }

    fn labelled(&self) -> [(&'static str, u64); 5] {
        [
            ("1xx", self.informational),
            ("2xx", self.success),
            ("3xx", self.redirection),
            ("4xx", self.client_error),
            ("5xx", self.server_error),
        ]
    }
}

/// Latency quantiles in microseconds, from the HDR histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Requests measured.
    pub count: u64,
    /// Smallest.
    pub min_us: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min_us: h.min(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// One meter at one instant. Latency is measured from the request's
/// arrival to the end (or abandonment) of its response body.
#[derive(Clone, Debug, Serialize)]
pub struct MeterSnapshot {
    /// Responses by status class.
    pub requests: StatusClasses,
    /// Requests accepted and not yet finished.
    pub in_flight: i64,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Quantiles of `latency_histogram`.
    pub latency: LatencySummary,
    /// Sum of all latencies, in seconds.
    pub latency_sum_seconds: f64,
    /// The latency buckets' upper bounds, in seconds, ascending:
    /// [`LATENCY_BUCKETS_SECONDS`] and the config's additions.
    pub latency_bounds: Vec<f64>,
    /// Cumulative counts at each of `latency_bounds`.
    pub latency_buckets: Vec<u64>,
    /// The latest request seen in each power of two of microseconds, by
    /// latency: the exemplars of the OpenMetrics exposition.
    #[serde(default)]
    pub exemplars: Vec<Exemplar>,
    /// The full latency distribution in microseconds (mergeable with
    /// other histograms; not serialized).
    #[serde(skip)]
    pub latency_histogram: Histogram<u64>,
}

/// All the gateway's measurements at one instant. Variants and replicas
/// that were removed by a reconfiguration stay (their counters must not go
/// backwards); `active` says whether they are in the current config.
#[derive(Clone, Debug, Serialize)]
pub struct MetricsSnapshot {
    /// One entry per variant ever configured, in first-seen order.
    pub variants: Vec<VariantSnapshot>,
    /// One entry per variant ever configured as a shadow, in first-seen
    /// order. (A shadow variant's meters, in `variants`, count the
    /// mirrored requests.)
    #[serde(default)]
    pub shadows: Vec<ShadowSnapshot>,
    /// The prediction log, when the config has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<PredictionLogSnapshot>,
}

/// The prediction log's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PredictionLogSnapshot {
    /// The file.
    pub path: String,
    /// Whether it could be opened (else nothing is sampled).
    pub open: bool,
    /// Samples written.
    pub written: u64,
    /// Samples dropped (the writer's queue was full).
    pub dropped: u64,
}

impl MetricsSnapshot {
    /// The variant named `name`.
    pub fn variant(&self, name: &str) -> Option<&VariantSnapshot> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The mirroring to the shadow variant named `name`.
    pub fn shadow(&self, name: &str) -> Option<&ShadowSnapshot> {
        self.shadows.iter().find(|s| s.variant == name)
    }
}

/// What mirroring to one shadow variant found. Every mirrored request ends
/// as exactly one of failed, uncompared, agreed or disagreed (by status,
/// body or numbers); until then it is in flight.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShadowSnapshot {
    /// The shadow variant.
    pub variant: String,
    /// Whether the current config mirrors to it.
    pub active: bool,
    /// Requests copied to it.
    pub mirrored: u64,
    /// Requests drawn for a copy but not copied: `max-in-flight` mirrors
    /// were already outstanding.
    pub skipped: u64,
    /// Mirrors that got no usable answer: no healthy shadow replica, a
    /// transport error, a 5xx, a body over the comparison limit, or no
    /// answer within the shadow's `timeout-ms`.
    pub failed: u64,
    /// Mirrors answered but not compared: the primary's body was not seen
    /// whole (over the comparison limit, the client went away, or it took
    /// past the shadow's timeout).
    pub uncompared: u64,
    /// Answers compared with the primary's.
    pub compared: u64,
    /// Compared and in agreement.
    pub agreed: u64,
    /// Compared, and the statuses differ.
    pub disagreed_status: u64,
    /// Compared, same status, and the bodies differ other than in numbers
    /// (bytes, JSON structure, strings).
    pub disagreed_body: u64,
    /// Compared, same status and structure, a number beyond the tolerance.
    pub disagreed_numeric: u64,
    /// The largest `|shadow - primary|` over every number compared.
    pub max_abs_difference: f64,
    /// The largest `|shadow - primary| / |primary|` over every number
    /// compared whose primary value is not 0.
    pub max_rel_difference: f64,
    /// The last disagreements, oldest first.
    pub recent_disagreements: Vec<Disagreement>,
}

impl ShadowSnapshot {
    /// Every disagreement: by status, body and numbers.
    pub fn disagreed(&self) -> u64 {
        self.disagreed_status + self.disagreed_body + self.disagreed_numeric
    }

    /// Mirrors that have ended one way or another.
    pub fn finished(&self) -> u64 {
        self.failed + self.uncompared + self.compared
    }
}

/// One answer of a shadow that disagreed with the primary's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    /// The request's `X-Request-Id`.
    pub request_id: String,
    /// `status`, `body` or `numeric`.
    pub kind: String,
    /// What differed, first difference only.
    pub reason: String,
}

/// One variant's measurements.
#[derive(Clone, Debug, Serialize)]
pub struct VariantSnapshot {
    /// Its name.
    pub name: String,
    /// Whether the current config has it.
    pub active: bool,
    /// The model version it serves now, when the config says (a label of
    /// its series on `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Requests assigned to it, whatever happened to them.
    pub meter: MeterSnapshot,
    /// Its replicas.
    pub replicas: Vec<ReplicaSnapshot>,
}

impl VariantSnapshot {
    /// The replica with base URL `url`.
    pub fn replica(&self, url: &str) -> Option<&ReplicaSnapshot> {
        self.replicas.iter().find(|r| r.url == url)
    }
}

/// One replica's measurements and health.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaSnapshot {
    /// Its base URL.
    pub url: String,
    /// Whether the current config has it.
    pub active: bool,
    /// Responses it returned (transport failures are not responses).
    pub meter: MeterSnapshot,
    /// Refused connections, transport errors and timeouts.
    pub upstream_failures: u64,
    /// Times it was ejected.
    pub ejections: u64,
    /// Whether it is ejected now (passively: by requests' failures).
    pub ejected: bool,
    /// What the active health checks found.
    pub health: ReplicaHealth,
    /// Health probes that passed.
    pub health_checks_passed: u64,
    /// Health probes that failed.
    pub health_checks_failed: u64,
    /// Whether requests may go to it now: neither ejected nor out of
    /// rotation for failing health checks. (An unhealthy replica stays in
    /// rotation when it is the last one there and can be reached.)
    pub in_rotation: bool,
}

/// A replica's active health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaHealth {
    /// No verdict: health checks are off, or none has concluded yet.
    #[default]
    Unchecked,
    /// Its probes pass.
    Healthy,
    /// Its probes fail.
    Unhealthy,
}

impl ReplicaHealth {
    /// `unchecked`, `healthy` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchecked => "unchecked",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// The content type of [`prometheus_text`].
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of [`openmetrics_text`].
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Render `snapshot` as Prometheus text exposition (format 0.0.4).
pub fn prometheus_text(snapshot: &MetricsSnapshot) -> String {
    render(snapshot, false)
}

/// Render `snapshot` as OpenMetrics 1.0 text: the same families, with
/// exemplars on the latency buckets (a request id and its latency) and
/// `# EOF`. Served to a scraper that asks for it (`Accept:
/// application/openmetrics-text`), as Prometheus does.
pub fn openmetrics_text(snapshot: &MetricsSnapshot) -> String {
    let mut out = render(snapshot, true);
    out.push_str("# EOF\n");
    out
}

fn render(snapshot: &MetricsSnapshot, openmetrics: bool) -> String {
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        // OpenMetrics names a counter's family without its `_total`.
        let name = match (openmetrics, kind) {
            (true, "counter") => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        family(out, name, kind, help);
    };
    let histogram = |out: &mut String, name: &str, labels: &str, m: &MeterSnapshot| {
        histogram(out, name, labels, m, openmetrics);
    };
    let variants = &snapshot.variants;
    // A variant's series carry the version it serves now: a promotion
    // starts new series (a scraper takes their first values as a
    // baseline), so rates are per version.
    let v_labels = |v: &VariantSnapshot| match &v.version {
        Some(version) => format!(
            "variant=\"{}\",version=\"{}\"",
            escape(&v.name),
            escape(version)
        ),
        None => format!("variant=\"{}\"", escape(&v.name)),
    };
    let r_labels = |v: &VariantSnapshot, r: &ReplicaSnapshot| {
        format!("{},replica=\"{}\"", v_labels(v), escape(&r.url))
    };
    let replicas = || {
        variants
            .iter()
            .flat_map(|v| v.replicas.iter().map(move |r| (v, r)))
    };

    family(
        &mut out,
        "mlops_gateway_requests_total",
        "counter",
        "Requests answered, by variant and status class.",
    );
    for v in variants {
        for (class, n) in v.meter.requests.labelled() {
            let _ = writeln!(
                out,
                "mlops_gateway_requests_total{{{},code=\"{class}\"}} {n}",
                v_labels(v)
            );
        }
    }
    family(
        &mut out,
        "mlops_gateway_requests_in_flight",
        "gauge",
        "Requests accepted and not yet finished, by variant.",
    );
    for v in variants {
        let _ = writeln!(
            out,
            "mlops_gateway_requests_in_flight{{{}}} {}",
            v_labels(v),
            v.meter.in_flight
        );
    }
    family(
        &mut out,
        "mlops_gateway_request_bytes_total",
        "counter",
        "Request body bytes received, by variant.",
    );
    for v in variants {
        let _ = writeln!(
            out,
            "mlops_gateway_request_bytes_total{{{}}} {}",
            v_labels(v),
            v.meter.bytes_in
        );
    }
    family(
        &mut out,
        "mlops_gateway_response_bytes_total",
        "counter",
        "Response body bytes sent, by variant.",
    );
    for v in variants {
        let _ = writeln!(
            out,
            "mlops_gateway_response_bytes_total{{{}}} {}",
            v_labels(v),
            v.meter.bytes_out
        );
    }
    family(
        &mut out,
        "mlops_gateway_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to the end of its response, by variant.",
    );
    for v in variants {
        histogram(
            &mut out,
            "mlops_gateway_request_duration_seconds",
            &v_labels(v),
            &v.meter,
        );
    }

    family(
        &mut out,
        "mlops_gateway_replica_requests_total",
        "counter",
        "Responses returned by a replica, by status class.",
    );
    for (v, r) in replicas() {
        for (class, n) in r.meter.requests.labelled() {
            let _ = writeln!(
                out,
                "mlops_gateway_replica_requests_total{{{},code=\"{class}\"}} {n}",
                r_labels(v, r)
            );
        }
    }
    family(
        &mut out,
        "mlops_gateway_replica_in_flight",
        "gauge",
        "Requests outstanding at a replica.",
    );
    for (v, r) in replicas() {
        let _ = writeln!(
            out,
            "mlops_gateway_replica_in_flight{{{}}} {}",
            r_labels(v, r),
            r.meter.in_flight
        );
    }
    family(
        &mut out,
        "mlops_gateway_replica_request_bytes_total",
        "counter",
        "Request body bytes sent to a replica.",
    );
    for (v, r) in replicas() {
        let _ = writeln!(
            out,
            "mlops_gateway_replica_request_bytes_total{{{}}} {}",
            r_labels(v, r),
            r.meter.bytes_in
        );
    }
    family(
        &mut out,
        "mlops_gateway_replica_response_bytes_total",
        "counter",
        "Response body bytes received from a replica.",
    );
    for (v, r) in replicas() {
        let _ = writeln!(
            out,
            "mlops_gateway_replica_response_bytes_total{{{}}} {}",
            r_labels(v, r),
            r.meter.bytes_out
        );
    }
    family(
        &mut out,
        "mlops_gateway_replica_upstream_failures_total",
        "counter",
        "Refused connections, transport errors and timeouts at a replica.",
    );
    for (v, r) in replicas() {
        let _ = writeln!(
            out,
            "mlops_gateway_replica_upstream_failures_total{{{}}} {}",
            r_labels(v, r),
            r.upstream_failures
        );
    }
    family(
        &mut out,
        "mlops_gateway_replica_ejections_total",
        "counter",
        "Times a replica was ejected.",
    );
    for (v, r) in replicas() {
        let _ = writeln!(
            out,
            "mlops_gateway_replica_ejections_total{{{}}} {}",
            r_labels(v, r),
            r.ejections
        );
    }
    family(
        &mut out,
        "mlops_gateway_replica_ejected",
        "gauge",
        "1 while a replica is ejected, else 0.",
    );
    for (v, r) in replicas() {
        let _ = writeln!(
            out,
            "mlops_gateway_replica_ejected{{{}}} {}",
            r_labels(v, r),
            u8::from(r.ejected)
        );
    }
    family(
        &mut out,
        "mlops_gateway_replica_health",
        "gauge",
        "1 for a replica's active health state (unchecked, healthy, unhealthy), 0 for the others.",
    );
    for (v, r) in replicas() {
        for state in [
            ReplicaHealth::Unchecked,
            ReplicaHealth::Healthy,
            ReplicaHealth::Unhealthy,
        ] {
            let _ = writeln!(
                out,
                "mlops_gateway_replica_health{{{},state=\"{}\"}} {}",
                r_labels(v, r),
                state.as_str(),
                u8::from(r.health == state)
            );
        }
    }
    family(
        &mut out,
        "mlops_gateway_replica_health_checks_total",
        "counter",
        "Active health probes of a replica, by result.",
    );
    for (v, r) in replicas() {
        for (result, n) in [
            ("pass", r.health_checks_passed),
            ("fail", r.health_checks_failed),
        ] {
            let _ = writeln!(
                out,
                "mlops_gateway_replica_health_checks_total{{{},result=\"{result}\"}} {n}",
                r_labels(v, r)
            );
        }
    }
    family(
        &mut out,
        "mlops_gateway_replica_in_rotation",
        "gauge",
        "1 while requests may go to a replica (neither ejected nor failing health checks), else 0.",
    );
    for (v, r) in replicas() {
        let _ = writeln!(
            out,
            "mlops_gateway_replica_in_rotation{{{}}} {}",
            r_labels(v, r),
            u8::from(r.in_rotation)
        );
    }
    shadow_families(&mut out, &snapshot.shadows, &family);
    family(
        &mut out,
        "mlops_gateway_replica_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to the end of a replica's response.",
    );
    for (v, r) in replicas() {
        histogram(
            &mut out,
            "mlops_gateway_replica_request_duration_seconds",
            &r_labels(v, r),
            &r.meter,
        );
    }
    out
}

/// A metric family of shadow values: name, help, and the value.
type ShadowFamily<T> = (&'static str, &'static str, fn(&ShadowSnapshot) -> T);

/// The shadow mirroring counters, one family each.
fn shadow_families(
    out: &mut String,
    shadows: &[ShadowSnapshot],
    family: &dyn Fn(&mut String, &str, &str, &str),
) {
    let label = |s: &ShadowSnapshot| format!("variant=\"{}\"", escape(&s.variant));
    let counters: [ShadowFamily<u64>; 5] = [
        (
            "mlops_gateway_shadow_mirrored_total",
            "Requests copied to a shadow variant.",
            |s| s.mirrored,
        ),
        (
            "mlops_gateway_shadow_skipped_total",
            "Requests drawn for a copy but not copied: too many mirrors outstanding.",
            |s| s.skipped,
        ),
        (
            "mlops_gateway_shadow_failed_total",
            "Mirrors without a usable answer: transport error, timeout, 5xx, no healthy replica.",
            |s| s.failed,
        ),
        (
            "mlops_gateway_shadow_uncompared_total",
            "Mirrors answered but not compared: the primary's body was not seen whole.",
            |s| s.uncompared,
        ),
        (
            "mlops_gateway_shadow_compared_total",
            "Shadow answers compared with the primary's.",
            |s| s.compared,
        ),
    ];
    for (name, help, value) in counters {
        family(out, name, "counter", help);
        for s in shadows {
            let _ = writeln!(out, "{name}{{{}}} {}", label(s), value(s));
        }
    }
    family(
        out,
        "mlops_gateway_shadow_comparisons_total",
        "counter",
        "Shadow answers compared, by result: agreed, or what disagreed.",
    );
    for s in shadows {
        for (result, n) in [
            ("agreed", s.agreed),
            ("status", s.disagreed_status),
            ("body", s.disagreed_body),
            ("numeric", s.disagreed_numeric),
        ] {
            let _ = writeln!(
                out,
                "mlops_gateway_shadow_comparisons_total{{{},result=\"{result}\"}} {n}",
                label(s)
            );
        }
    }
    let gauges: [ShadowFamily<f64>; 2] = [
        (
            "mlops_gateway_shadow_max_abs_difference",
            "Largest absolute difference of a number in a shadow's answer from the primary's.",
            |s| s.max_abs_difference,
        ),
        (
            "mlops_gateway_shadow_max_rel_difference",
            "Largest relative difference of a number in a shadow's answer from the primary's.",
            |s| s.max_rel_difference,
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        for s in shadows {
            let _ = writeln!(out, "{name}{{{}}} {}", label(s), value(s));
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, m: &MeterSnapshot, exemplars: bool) {
    // The latest exemplar within (lower, upper], when asked for.
    let exemplar = |lower: f64, upper: f64| -> String {
        if !exemplars {
            return String::new();
        }
        m.exemplars
            .iter()
            .filter(|e| e.seconds > lower && e.seconds <= upper)
            .max_by_key(|e| e.unix_ms)
            .map(|e| {
                format!(
                    " # {{request_id=\"{}\"}} {} {}.{:03}",
                    escape(&e.request_id),
                    e.seconds,
                    e.unix_ms.div_euclid(1000),
                    e.unix_ms.rem_euclid(1000)
                )
            })
            .unwrap_or_default()
    };
    let mut lower = f64::NEG_INFINITY;
    for (bound, n) in m.latency_bounds.iter().zip(&m.latency_buckets) {
        let e = exemplar(lower, *bound);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}{e}");
        lower = *bound;
    }
    // The counters are read one by one while requests finish: keep the
    // histogram consistent (+Inf at least the last finite bucket).
    let count = m
        .requests
        .total()
        .max(m.latency_buckets.last().copied().unwrap_or(0));
    let e = exemplar(lower, f64::INFINITY);
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}{e}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", m.latency_sum_seconds);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// Escape a label value: backslash, double quote and newline.
pub(crate) fn escape(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
