//! `iris load`: a closed-loop load test bounded by time and request count.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::cli::{FlagSpec, Flags};
use crate::client::{self, HttpClient};
use crate::error::{Error, Result};
use crate::{fsutil, oip};

const INFER_PATH: &str = "/v2/models/iris/infer";
/// Per-request timeout during the load test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of `iris load`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Port file written by `iris serve`.
    pub port_file: PathBuf,
    /// Stop issuing requests after this long.
    pub duration: Duration,
    /// Stop after this many requests.
    pub max_requests: u64,
    /// Number of concurrent keep-alive clients.
    pub concurrency: usize,
    /// Fail if throughput is lower.
    pub min_rps: Option<f64>,
    /// Fail if the 99th percentile latency (ms) is higher.
    pub max_p99_ms: Option<f64>,
    /// Where to write the JSON report.
    pub out: Option<PathBuf>,
}

impl LoadOptions {
    const FLAGS: &[FlagSpec] = &[
        FlagSpec::value("port-file"),
        FlagSpec::value("duration"),
        FlagSpec::value("max-requests"),
        FlagSpec::value("concurrency"),
        FlagSpec::value("min-rps"),
        FlagSpec::value("max-p99-ms"),
        FlagSpec::value("out"),
    ];

    /// Parses the flags of `iris load`.
    pub fn from_args(args: &[String]) -> Result<Self> {
        let flags = Flags::parse("load", Self::FLAGS, args)?;
        let options = Self {
            port_file: flags.required_path("port-file")?,
            duration: flags.duration_or("duration", Duration::from_secs(3))?,
            max_requests: flags.parse_or("max-requests", 5000)?,
            concurrency: flags.parse_or("concurrency", 4)?,
            min_rps: flags.parse_opt("min-rps")?,
            max_p99_ms: flags.parse_opt("max-p99-ms")?,
            out: flags.path("out"),
        };
        if options.duration.is_zero() || options.duration > Duration::from_secs(600) {
            return Err(flags.error("--duration must be between 1ms and 10m"));
        }
        if options.max_requests == 0 {
            return Err(flags.error("--max-requests must be at least 1"));
        }
        if !(1..=256).contains(&options.concurrency) {
            return Err(flags.error(format!(
                "--concurrency must be between 1 and 256, got {}",
                options.concurrency
            )));
        }
        for (name, value) in [
            ("min-rps", options.min_rps),
            ("max-p99-ms", options.max_p99_ms),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(flags.error(format!("--{name} must be a non-negative number")));
            }
        }
        Ok(options)
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest request.
    pub max: f64,
}

/// Nearest-rank percentile of an ascending slice (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Percentiles of unsorted latencies (ms), rounded to microseconds.
pub fn summarize(mut latencies_ms: Vec<f64>) -> Latency {
    latencies_ms.sort_by(f64::total_cmp);
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    Latency {
        p50: round(percentile(&latencies_ms, 50.0)),
        p90: round(percentile(&latencies_ms, 90.0)),
        p99: round(percentile(&latencies_ms, 99.0)),
        max: round(latencies_ms.last().copied().unwrap_or(0.0)),
    }
}

/// The JSON report written by `--out`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Target URL.
    pub url: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Time bound in seconds.
    pub duration_limit_s: f64,
    /// Request-count bound.
    pub max_requests: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed (transport error or non-200 status).
    pub errors: u64,
    /// Wall-clock time of the run in seconds.
    pub elapsed_s: f64,
    /// Requests per second.
    pub rps: f64,
    /// Latency of successful requests.
    pub latency_ms: Latency,
    /// Threshold on throughput, if any.
    pub min_rps: Option<f64>,
    /// Threshold on p99 latency, if any.
    pub max_p99_ms: Option<f64>,
    /// Whether every check passed.
    pub passed: bool,
    /// What failed.
    pub failures: Vec<String>,
}

#[derive(Debug, Default)]
struct WorkerResult {
    latencies_ms: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
}

async fn worker(
    client: HttpClient,
    bodies: Arc<Vec<String>>,
    issued: Arc<AtomicU64>,
    max: u64,
    deadline: Instant,
) -> WorkerResult {
    let mut result = WorkerResult::default();
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if n >= max {
            break;
        }
        let body = bodies[(n % bodies.len() as u64) as usize].clone();
        let started = Instant::now();
        let failure = match client.post_json(INFER_PATH, body).await {
            Ok(response) if response.status == 200 => {
                result
                    .latencies_ms
                    .push(started.elapsed().as_secs_f64() * 1000.0);
                None
            }
            Ok(response) => Some(format!(
                "status {}: {}",
                response.status,
                response.text().chars().take(120).collect::<String>()
            )),
            Err(err) => Some(err.to_string()),
        };
        if let Some(message) = failure {
            result.errors += 1;
            result.first_error.get_or_insert(message);
        }
    }
    result
}

fn request_bodies() -> Vec<String> {
    [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]
        .iter()
        .map(|row| {
            json!({"inputs": [{"name": oip::INPUT_NAME, "shape": [1, 4], "datatype": "FP32", "data": row}]})
                .to_string()
        })
        .collect()
}

/// Runs `iris load`.
pub async fn run(args: &[String]) -> Result<()> {
    let options = LoadOptions::from_args(args)?;
    let port = client::read_port_file(&options.port_file)?;
    let client = HttpClient::with_timeout(port, REQUEST_TIMEOUT);
    let preflight = client
        .get("/health")
        .await
        .map_err(|err| err.context("load"))?;
    if preflight.status != 200 {
        return Err(Error::new(format!(
            "load: {} answered {}; is the server healthy?",
            client.url("/health"),
            preflight.status
        )));
    }
    println!(
        "load: {} for up to {:?} or {} requests with {} concurrent clients",
        client.url(INFER_PATH),
        options.duration,
        options.max_requests,
        options.concurrency
    );

    let bodies = Arc::new(request_bodies());
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + options.duration;
    let handles: Vec<_> = (0..options.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                client.clone(),
                Arc::clone(&bodies),
                Arc::clone(&issued),
                options.max_requests,
                deadline,
            ))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for handle in handles {
        let result = handle
            .await
            .map_err(|err| Error::new(format!("load: a client task failed: {err}")))?;
        latencies.extend(result.latencies_ms);
        errors += result.errors;
        if first_error.is_none() {
            first_error = result.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = latencies.len() as u64 + errors;
    let rps = if elapsed > 0.0 {
        requests as f64 / elapsed
    } else {
        0.0
    };
    let latency = summarize(latencies);

    let mut failures = Vec::new();
    if errors > 0 {
        failures.push(format!(
            "{errors} of {requests} requests failed (first: {})",
            first_error.unwrap_or_default()
        ));
    }
    if let Some(min) = options.min_rps
        && rps < min
    {
        failures.push(format!("throughput {rps:.1} rps is below --min-rps {min}"));
    }
    if let Some(max) = options.max_p99_ms
        && latency.p99 > max
    {
        failures.push(format!(
            "p99 latency {:.3} ms is above --max-p99-ms {max}",
            latency.p99
        ));
    }
    let report = LoadReport {
        url: client.url(INFER_PATH),
        concurrency: options.concurrency,
        duration_limit_s: options.duration.as_secs_f64(),
        max_requests: options.max_requests,
        requests,
        errors,
        elapsed_s: (elapsed * 1000.0).round() / 1000.0,
        rps: (rps * 10.0).round() / 10.0,
        latency_ms: latency,
        min_rps: options.min_rps,
        max_p99_ms: options.max_p99_ms,
        passed: failures.is_empty(),
        failures: failures.clone(),
    };
    println!(
        "load: {requests} requests in {elapsed:.2}s ({rps:.1} rps), {errors} errors; latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
        latency.p50, latency.p90, latency.p99, latency.max
    );
    if let Some(out) = &options.out {
        let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
        text.push('\n');
        fsutil::write_atomic(out, text.as_bytes(), "load report")?;
        println!("load: wrote {}", out.display());
    }
    if failures.is_empty() {
        println!("load: ok");
        Ok(())
    } else {
        Err(Error::new(format!("load: {}", failures.join("; "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 1.0), 7.0);
        let summary = summarize(vec![3.0, 1.0, 2.0]);
        assert_eq!((summary.p50, summary.max), (2.0, 3.0));
    }

    #[test]
    fn load_flags_are_validated() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let options = LoadOptions::from_args(&args(&[
            "--port-file",
            "p",
            "--duration",
            "1s",
            "--min-rps",
            "50",
        ]))
        .unwrap();
        assert_eq!(options.duration, Duration::from_secs(1));
        assert_eq!(options.min_rps, Some(50.0));
        let err =
            LoadOptions::from_args(&args(&["--port-file", "p", "--concurrency", "0"])).unwrap_err();
        assert!(
            err.message()
                .contains("--concurrency must be between 1 and 256")
        );
        let err =
            LoadOptions::from_args(&args(&["--port-file", "p", "--duration", "0s"])).unwrap_err();
        assert!(err.message().contains("--duration"));
    }
}
