//! The prediction log: a bounded sample of the requests the gateway
//! answered, with their answers, as JSON lines — what the monitoring
//! stage's drift check reads.
//!
//! When a config has `prediction-log`, at most `per-second` answered
//! requests a second (the first ones of each second) are written as
//!
//! ```json
//! {"request_id": "…", "time": "2026-12-05T04:30:00.123Z", "ts_ms": 1796445000123,
//!  "variant": "stable", "version": "iris@3", "status": 200, "latency_ms": 3.2,
//!  "inputs": {…the request body, as JSON when it is JSON…},
//!  "outputs": {…the response body, likewise…}}
//! ```
//!
//! A body over `max-body-bytes` is left out (`null`, and
//! `"truncated": true`). Lines are written by a thread of their own
//! through a bounded queue: the request path only copies references to
//! the bodies it already holds, and a full queue drops the sample (counted
//! in the gateway's snapshot), never the request. The file is rotated to
//! `<path>.1` when it passes `max-bytes`, so it holds at most twice that.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// `prediction-log` of a gateway config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PredictionLogConfig {
    /// The file (absolute).
    pub path: PathBuf,
    /// At most this many samples a second.
    #[serde(default = "default_per_second")]
    pub per_second: u32,
    /// The file is rotated past this size.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Bodies longer than this are left out of a sample.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
}

fn default_per_second() -> u32 {
    20
}
fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_body_bytes() -> u64 {
    64 * 1024
}

impl PredictionLogConfig {
    /// A log at `path` with the defaults (20 a second, 64 MiB, bodies up
    /// to 64 KiB).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        PredictionLogConfig {
            path: path.into(),
            per_second: default_per_second(),
            max_bytes: default_max_bytes(),
            max_body_bytes: default_max_body_bytes(),
        }
    }

    pub(crate) fn check(&self, errors: &mut Vec<String>) {
        if !self.path.is_absolute() {
            errors.push(format!(
                "prediction-log: path {} must be absolute",
                self.path.display()
            ));
        }
        if !(1..=10_000).contains(&self.per_second) {
            errors.push("prediction-log: per-second must be 1 to 10000".to_owned());
        }
        if self.max_bytes < 4096 {
            errors.push("prediction-log: max-bytes must be at least 4096".to_owned());
        }
    }
}

/// The queue between the request path and the writer.
const QUEUE: usize = 1024;

/// An open prediction log: its sampler and its writer thread.
#[derive(Debug)]
pub(crate) struct PredictionLog {
    pub(crate) config: PredictionLogConfig,
    epoch: Instant,
    /// The second the count is of, and how many were taken in it.
    second: AtomicU64,
    taken: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) written: Arc<AtomicU64>,
    tx: std::sync::mpsc::SyncSender<String>,
}

impl PredictionLog {
    /// Opens (creating it) the log and starts its writer.
    pub(crate) fn open(config: PredictionLogConfig) -> std::io::Result<Arc<Self>> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let (path, max, count) = (config.path.clone(), config.max_bytes, written.clone());
        std::thread::Builder::new()
            .name("prediction-log".to_owned())
            .spawn(move || {
                let mut file = file;
                let mut size = file.metadata().map_or(0, |m| m.len());
                // Ends when the log is dropped (its sender with it).
                while let Ok(line) = rx.recv() {
                    if size + line.len() as u64 > max && size > 0 {
                        let mut old = path.clone().into_os_string();
                        old.push(".1");
                        let reopened = std::fs::rename(&path, &old).and_then(|()| {
                            std::fs::OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(&path)
                        });
                        match reopened {
                            Ok(f) => {
                                file = f;
                                size = 0;
                            }
                            Err(_) => continue,
                        }
                    }
                    if file.write_all(line.as_bytes()).is_ok() {
                        size += line.len() as u64;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })?;
        Ok(Arc::new(PredictionLog {
            config,
            epoch: Instant::now(),
            second: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            written,
            tx,
        }))
    }

    /// Whether this request is sampled: the first `per-second` of each
    /// second are.
    pub(crate) fn sample(&self) -> bool {
        let now = self.epoch.elapsed().as_secs() + 1;
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.taken.store(0, Ordering::Relaxed);
        }
        self.taken.fetch_add(1, Ordering::Relaxed) < u64::from(self.config.per_second)
    }
}

/// What the request path knows of a sampled request.
pub(crate) struct Sampled {
    pub(crate) log: Arc<PredictionLog>,
    pub(crate) request_id: String,
    pub(crate) variant: String,
    /// The model version the variant serves, when the config says.
    pub(crate) version: Option<String>,
    pub(crate) status: u16,
    pub(crate) started: Instant,
    pub(crate) request: Bytes,
}

fn as_json(body: &[u8], max: u64) -> (serde_json::Value, bool) {
    if body.len() as u64 > max {
        return (serde_json::Value::Null, true);
    }
    match serde_json::from_slice(body) {
        Ok(v) => (v, false),
        Err(_) => (
            serde_json::Value::String(String::from_utf8_lossy(body).into_owned()),
            false,
        ),
    }
}

/// Waits for the response body (from the tee) and queues the line.
pub(crate) async fn record(s: Sampled, response: oneshot::Receiver<Option<Arc<Vec<Bytes>>>>) {
    let Ok(Some(chunks)) = response.await else {
        // The response failed or was too long to keep: no sample.
        return;
    };
    let latency_ms = s.started.elapsed().as_secs_f64() * 1000.0;
    let body: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let max = s.log.config.max_body_bytes;
    let (inputs, cut_in) = as_json(&s.request, max);
    let (outputs, cut_out) = as_json(&body, max);
    let ts = mlops_core::ledger::now_ms();
    let mut line = serde_json::json!({
        "request_id": s.request_id,
        "time": mlops_core::ledger::format_ms(ts),
        "ts_ms": ts,
        "variant": s.variant,
        "version": s.version,
        "status": s.status,
        "latency_ms": latency_ms,
        "inputs": inputs,
        "outputs": outputs,
    })
    .to_string();
    if cut_in || cut_out {
        line.pop();
        line.push_str(",\"truncated\":true}");
    }
    line.push('\n');
    if s.log.tx.try_send(line).is_err() {
        s.log.dropped.fetch_add(1, Ordering::Relaxed);
    }
}
