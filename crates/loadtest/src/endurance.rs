//! The `endurance` step kind: a long steady load on the released service,
//! watching for what only time shows — latency that drifts up, memory
//! that grows.
//!
//! ```toml
//! [loadtest.steps.endurance]
//! kind = "endurance"
//! with = { traffic = { csv = "data/iris.csv", exclude = ["species"], rate = 100 },
//!          duration = "10m", thresholds = ["p99 < 250ms", "error_rate < 0.1%"],
//!          max-latency-drift = "25%", max-memory-growth = "64MiB" }
//! ```
//!
//! The load is `performance`'s (same keys; `duration` 60 s by default, at
//! most 24 h). Besides the thresholds:
//! - **Latency drift**: the p99 of the last fifth of the run against the
//!   p99 of the first fifth, each read from the per-second histograms
//!   merged exactly; `max-latency-drift` (a percentage) bounds the rise.
//! - **Memory growth**: every replica in the gateway's pool is sampled
//!   every `sample-every` (1 s) while the load runs — the resident memory
//!   of the process listening on its port, read from `/proc`, or for a
//!   container (its port published by Docker's proxy) the memory the
//!   engine's stats API reports, as the monitoring collector reads them —
//!   and its growth (last sample less first) and slope (least squares,
//!   bytes a second) reported; `max-memory-growth` bounds the largest
//!   growth. With `max-memory-growth` set, a run that measured no replica
//!   fails, since the check could not be made.
//!
//! Recorded as `load-test` evidence with `kind = "endurance"` and an
//! `endurance` object holding the drift and each replica's memory.

use std::sync::Arc;
use std::time::Duration;

use mlops_apm::collector::resources::{endpoint_port, listening_pid, process_name, process_usage};
use mlops_core::manifest::{Diagnostic, parse_duration};
use mlops_core::{KindParams, Stage, StepAction, StepKind};
use mlops_release::driver::{decode_histogram, latency_histogram};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::generator::LoadResult;

/// The longest endurance run.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The `endurance` kind.
#[derive(Debug)]
pub struct EnduranceKind;

impl StepKind for EnduranceKind {
    fn name(&self) -> &'static str {
        "endurance"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Loadtest)
    }

    fn summary(&self) -> &'static str {
        "a long steady load on the released service: thresholds, latency drift, memory growth"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        crate::performance::compile(self.name(), params)
    }
}

/// What an endurance run checks beyond the thresholds.
#[derive(Debug, Clone)]
pub(crate) struct Checks {
    /// The most the last fifth's p99 may exceed the first fifth's, as a
    /// fraction (0.25 for 25 %).
    max_drift: Option<f64>,
    /// The most a replica's resident memory may grow, in bytes.
    max_growth: Option<u64>,
    /// How often memory is sampled.
    pub(crate) sample_every: Duration,
}

impl Checks {
    pub(crate) fn compile(
        drift: Option<&toml::Spanned<String>>,
        growth: Option<&toml::Spanned<String>>,
        every: Option<&toml::Spanned<String>>,
        errors: &mut Vec<Diagnostic>,
    ) -> Option<Self> {
        let before = errors.len();
        let max_drift = drift.and_then(|d| {
            let parsed = d
                .get_ref()
                .trim()
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| p.is_finite() && *p >= 0.0);
            if parsed.is_none() {
                errors.push(Diagnostic::new(
                    format!(
                        "`max-latency-drift` must be a percentage like 25%, not `{}`",
                        d.get_ref()
                    ),
                    Some(d.span()),
                ));
            }
            parsed.map(|p| p / 100.0)
        });
        let max_growth = growth.and_then(|g| match mlops_iac::spec::parse_bytes(g.get_ref()) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                errors.push(Diagnostic::new(
                    format!("`max-memory-growth`: {e}"),
                    Some(g.span()),
                ));
                None
            }
        });
        let sample_every = match every {
            None => Some(Duration::from_secs(1)),
            Some(e) => match parse_duration("sample-every", e) {
                Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(600) => {
                    Some(d)
                }
                Ok(_) => {
                    errors.push(Diagnostic::new(
                        "`sample-every` must be from 100ms to 10m",
                        Some(e.span()),
                    ));
                    None
                }
                Err(d) => {
                    errors.push(d);
                    None
                }
            },
        };
        (errors.len() == before).then_some(Self {
            max_drift,
            max_growth,
            sample_every: sample_every?,
        })
    }
}

/// An endurance run's duration: 60 s by default, at most 24 h.
pub(crate) fn duration(
    value: Option<&toml::Spanned<String>>,
    errors: &mut Vec<Diagnostic>,
) -> Option<Duration> {
    let Some(value) = value else {
        return Some(Duration::from_secs(60));
    };
    match parse_duration("duration", value) {
        Ok(d) if d <= MAX_DURATION => Some(d),
        Ok(_) => {
            errors.push(Diagnostic::new(
                "`duration` must be at most 24h",
                Some(value.span()),
            ));
            None
        }
        Err(d) => {
            errors.push(d);
            None
        }
    }
}

/// One replica's memory over the run.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaMemory {
    /// Its endpoint, as the gateway's pool has it.
    pub replica: String,
    /// The process measured, when the replica is a local process.
    pub pid: Option<u32>,
    /// How it was read: `process` (`/proc`), `container` (the Docker
    /// engine's stats API) or `none`.
    pub source: String,
    /// Samples taken.
    pub samples: usize,
    /// The first sample's resident memory, in bytes.
    pub first_bytes: Option<u64>,
    /// The last sample's.
    pub last_bytes: Option<u64>,
    /// The highest.
    pub max_bytes: Option<u64>,
    /// `last − first` (negative when it shrank).
    pub growth_bytes: Option<i64>,
    /// The least-squares slope, in bytes a second.
    pub slope_bytes_per_s: Option<f64>,
    /// Why it was not measured, when it was not.
    pub note: Option<String>,
}

/// What an endurance run found beyond the thresholds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The seconds in each window compared (a fifth of the run).
    pub window_s: u64,
    /// The first window's p99, in ms.
    pub first_p99_ms: Option<f64>,
    /// The last window's p99, in ms.
    pub last_p99_ms: Option<f64>,
    /// `last / first − 1`.
    pub latency_drift: Option<f64>,
    /// The bound on it, when given.
    pub max_latency_drift: Option<f64>,
    /// Each replica's memory.
    pub memory: Vec<ReplicaMemory>,
    /// The bound on growth, in bytes, when given.
    pub max_memory_growth_bytes: Option<u64>,
    /// The checks that failed, each saying by how much.
    pub problems: Vec<String>,
}

impl Report {
    /// The report as lines for the step's log.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        match (self.first_p99_ms, self.last_p99_ms, self.latency_drift) {
            (Some(a), Some(b), Some(d)) => out.push(format!(
                "latency drift: p99 {a:.3} ms in the first {} s, {b:.3} ms in the last {} s ({:+.1}%)",
                self.window_s,
                self.window_s,
                d * 100.0
            )),
            _ => out.push("latency drift: not measured (too few seconds with responses)".to_owned()),
        }
        for m in &self.memory {
            match (m.first_bytes, m.last_bytes, m.slope_bytes_per_s) {
                (Some(a), Some(b), slope) => out.push(format!(
                    "memory of {} ({}): {} → {} ({:+.1} MiB, {} samples{})",
                    m.replica,
                    m.pid
                        .map_or_else(|| m.source.clone(), |p| format!("pid {p}")),
                    mib(a),
                    mib(b),
                    (b as f64 - a as f64) / MIB,
                    m.samples,
                    slope.map_or_else(String::new, |s| format!(", {:+.1} KiB/s", s / 1024.0))
                )),
                _ => out.push(format!(
                    "memory of {}: not measured ({})",
                    m.replica,
                    m.note.as_deref().unwrap_or("no sample")
                )),
            }
        }
        out
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

/// How a replica's memory is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A local process listening on its port: `/proc`.
    Process(u32),
    /// A container publishing its port: the engine's stats API.
    Container(u16),
    /// Neither could be found.
    Unknown,
}

/// Each replica, how it is read, and its `(seconds, bytes)` samples.
type Series = Vec<(String, Source, Vec<(f64, u64)>)>;

/// Samples the replicas' memory until [`Sampler::finish`].
pub(crate) struct Sampler {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(Series, Option<String>)>,
}

impl Sampler {
    pub(crate) fn start(replicas: Vec<String>, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut series: Series = replicas
                    .into_iter()
                    .map(|r| {
                        let port = endpoint_port(&r);
                        // Docker's userland proxy listens for a container.
                        let source = match port
                            .and_then(listening_pid)
                            .filter(|pid| process_name(*pid).is_none_or(|n| n != "docker-proxy"))
                        {
                            Some(pid) => Source::Process(pid),
                            None => port.map_or(Source::Unknown, Source::Container),
                        };
                        (r, source, Vec::new())
                    })
                    .collect();
                let mut engine = None;
                let mut engine_error = None;
                if series.iter().any(|s| matches!(s.1, Source::Container(_))) {
                    match mlops_iac::DockerProvider::connect().await {
                        Ok(e) => engine = Some(e),
                        Err(e) => engine_error = Some(e.to_string()),
                    }
                }
                loop {
                    sample(&mut series, engine.as_ref(), start).await;
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(every) => {}
                    }
                }
                // One last sample at the end.
                sample(&mut series, engine.as_ref(), start).await;
                (series, engine_error)
            })
        };
        Self { stop, task }
    }

    pub(crate) async fn finish(self) -> Vec<ReplicaMemory> {
        self.stop.cancel();
        let (series, engine_error) = self.task.await.unwrap_or_default();
        series
            .into_iter()
            .map(|(replica, source, samples)| {
                let mut m = memory(replica, source, &samples);
                if let (Source::Container(_), Some(e)) = (source, &engine_error) {
                    m.note = Some(format!("the Docker engine could not be asked: {e}"));
                }
                m
            })
            .collect()
    }
}

/// One sample of every replica.
async fn sample(series: &mut Series, engine: Option<&mlops_iac::DockerProvider>, start: Instant) {
    let at = start.elapsed().as_secs_f64();
    let containers = match engine {
        Some(e) if series.iter().any(|s| matches!(s.1, Source::Container(_))) => {
            e.container_usage().await.unwrap_or_default()
        }
        _ => Vec::new(),
    };
    for (_, source, samples) in series.iter_mut() {
        let bytes = match *source {
            Source::Process(pid) => process_usage(pid).ok().map(|u| u.rss_bytes),
            Source::Container(port) => containers
                .iter()
                .find(|c| c.port == Some(port))
                .map(|c| c.memory_bytes),
            Source::Unknown => None,
        };
        if let Some(bytes) = bytes {
            samples.push((at, bytes));
        }
    }
}

fn memory(replica: String, source: Source, samples: &[(f64, u64)]) -> ReplicaMemory {
    let first = samples.first().map(|s| s.1);
    let last = samples.last().map(|s| s.1);
    let note = match (source, samples.is_empty()) {
        (Source::Unknown, _) => Some("its endpoint has no port".to_owned()),
        (Source::Process(_), true) => Some("its process could not be read".to_owned()),
        (Source::Container(_), true) => {
            Some("no process or container answers on its port".to_owned())
        }
        _ => None,
    };
    ReplicaMemory {
        replica,
        pid: match source {
            Source::Process(pid) => Some(pid),
            _ => None,
        },
        source: match source {
            Source::Process(_) => "process",
            Source::Container(_) => "container",
            Source::Unknown => "none",
        }
        .to_owned(),
        samples: samples.len(),
        first_bytes: first,
        last_bytes: last,
        max_bytes: samples.iter().map(|s| s.1).max(),
        growth_bytes: first.zip(last).map(|(a, b)| b as i64 - a as i64),
        slope_bytes_per_s: slope(samples),
        note,
    }
}

/// The least-squares slope of `(t, bytes)`; `None` for fewer than two
/// distinct times.
fn slope(samples: &[(f64, u64)]) -> Option<f64> {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return None;
    }
    let mt = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mb = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, b) in samples {
        num += (t - mt) * (*b as f64 - mb);
        den += (t - mt) * (t - mt);
    }
    (den > 0.0).then(|| num / den)
}

/// The drift and memory checks on a finished run.
pub(crate) fn report(
    checks: &Checks,
    result: &LoadResult,
    memory: Vec<ReplicaMemory>,
) -> Result<Report, String> {
    let seconds = &result.report.per_second;
    let window = (seconds.len() / 5).max(1);
    let p99_of = |range: std::ops::Range<usize>| -> Result<Option<f64>, String> {
        let mut merged = latency_histogram();
        for text in &result.histograms.per_second[range] {
            let bytes = base64_decode(text)?;
            let h = decode_histogram(&bytes).map_err(|e| e.to_string())?;
            merged.add(&h).map_err(|e| e.to_string())?;
        }
        Ok((!merged.is_empty()).then(|| merged.value_at_quantile(0.99) as f64 / 1000.0))
    };
    let (first, last) = if seconds.len() >= 2 {
        (
            p99_of(0..window)?,
            p99_of(seconds.len() - window..seconds.len())?,
        )
    } else {
        (None, None)
    };
    let drift = match (first, last) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a - 1.0),
        _ => None,
    };
    let mut problems = Vec::new();
    if let Some(max) = checks.max_drift {
        match drift {
            Some(d) if d > max => problems.push(format!(
                "latency drifted: p99 rose {:.1}% from the first {window} s to the last, over the {:.1}% allowed",
                d * 100.0,
                max * 100.0
            )),
            Some(_) => {}
            None => problems.push(
                "latency drift could not be measured (a run needs two seconds with responses)"
                    .to_owned(),
            ),
        }
    }
    if let Some(max) = checks.max_growth {
        let measured: Vec<&ReplicaMemory> =
            memory.iter().filter(|m| m.growth_bytes.is_some()).collect();
        if measured.is_empty() {
            problems.push(
                "memory growth could not be measured: no replica's process or container could be read".to_owned(),
            );
        }
        for m in measured {
            let growth = m.growth_bytes.unwrap_or(0);
            if growth > i64::try_from(max).unwrap_or(i64::MAX) {
                problems.push(format!(
                    "memory of {} grew {:.1} MiB, over the {:.1} MiB allowed",
                    m.replica,
                    growth as f64 / MIB,
                    max as f64 / MIB
                ));
            }
        }
    }
    Ok(Report {
        window_s: window as u64,
        first_p99_ms: first,
        last_p99_ms: last,
        latency_drift: drift,
        max_latency_drift: checks.max_drift,
        memory,
        max_memory_growth_bytes: checks.max_growth,
        problems,
    })
}

fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_steady_growth_is_its_rate() {
        let samples: Vec<(f64, u64)> = (0..10)
            .map(|t| (f64::from(t), 1000 + 50 * t as u64))
            .collect();
        assert!((slope(&samples).unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(slope(&samples[..1]), None);
        let m = memory("http://127.0.0.1:1".into(), Source::Process(1), &samples);
        assert_eq!(m.growth_bytes, Some(450));
        assert_eq!(m.max_bytes, Some(1450));
        let unmeasured = memory("http://127.0.0.1:2".into(), Source::Container(2), &[]);
        assert!(unmeasured.note.unwrap().contains("no process or container"));
    }

    /// A result of `seconds` seconds whose second `s` answered ten requests
    /// in `latency_ms(s)`.
    fn result(seconds: u64, latency_ms: impl Fn(u64) -> u64) -> LoadResult {
        use base64::Engine as _;
        let encode = |h: &hdrhistogram::Histogram<u64>| {
            base64::engine::general_purpose::STANDARD
                .encode(mlops_release::driver::encode_histogram(h).unwrap())
        };
        let mut overall = latency_histogram();
        let mut per_second = Vec::new();
        let mut buckets = Vec::new();
        for s in 0..seconds {
            let mut h = latency_histogram();
            h.record_n(latency_ms(s) * 1000, 10).unwrap();
            overall.add(&h).unwrap();
            per_second.push(encode(&h));
            buckets.push(serde_json::json!({"second": s, "requests": 10,
                "errors": {"status_4xx": 0, "status_5xx": 0, "connect": 0, "timeout": 0, "transport": 0},
                "latency_ms": null}));
        }
        serde_json::from_value(serde_json::json!({
            "format": 1, "runs": 1,
            "target": "http://127.0.0.1:1/", "method": "POST", "target_rps": 10.0,
            "planned": seconds * 10, "requests": seconds * 10, "errors": 0,
            "errors_by_kind": {"status_4xx": 0, "status_5xx": 0, "connect": 0, "timeout": 0, "transport": 0},
            "status": {"1xx": 0, "2xx": seconds * 10, "3xx": 0, "4xx": 0, "5xx": 0},
            "bytes_sent": 0, "bytes_received": 0, "elapsed_s": seconds as f64, "rps": 10.0,
            "latency_ms": null, "per_second": buckets, "stopped": "completed",
            "abandoned": 0, "observed_dropped": 0,
            "histograms": {"overall": encode(&overall), "per_second": per_second},
        }))
        .unwrap()
    }

    fn checks(drift: Option<f64>, growth: Option<u64>) -> Checks {
        Checks {
            max_drift: drift,
            max_growth: growth,
            sample_every: Duration::from_secs(1),
        }
    }

    #[test]
    fn latency_that_doubles_over_the_run_is_drift() {
        // Ten seconds, 10 ms rising to 20 ms: the first fifth (2 s) is at
        // 10–11 ms, the last at 19–20 ms.
        let run = result(10, |s| 10 + s * 10 / 9);
        let report = report(&checks(Some(0.5), None), &run, Vec::new()).unwrap();
        assert_eq!(report.window_s, 2);
        let drift = report.latency_drift.unwrap();
        assert!((0.7..1.0).contains(&drift), "{report:?}");
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(
            report.problems[0].starts_with("latency drifted: p99 rose 8"),
            "{:?}",
            report.problems
        );
        let steady = result(10, |_| 10);
        let report = super::report(&checks(Some(0.05), None), &steady, Vec::new()).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        assert!(report.latency_drift.unwrap().abs() < 1e-9);
    }

    #[test]
    fn memory_growth_beyond_the_bound_fails_and_unmeasured_memory_cannot_pass() {
        let run = result(5, |_| 10);
        let grew = memory(
            "http://127.0.0.1:1".into(),
            Source::Process(1),
            &[(0.0, 100 << 20), (4.0, 180 << 20)],
        );
        let report = report(&checks(None, Some(64 << 20)), &run, vec![grew]).unwrap();
        assert_eq!(
            report.problems,
            ["memory of http://127.0.0.1:1 grew 80.0 MiB, over the 64.0 MiB allowed"]
        );
        let unmeasured = memory("http://127.0.0.1:2".into(), Source::Unknown, &[]);
        let report = super::report(&checks(None, Some(64 << 20)), &run, vec![unmeasured]).unwrap();
        assert_eq!(
            report.problems,
            [
                "memory growth could not be measured: no replica's process or container could be read"
            ]
        );
    }
}
