//! The metrics collector: a long-lived part of the release environment
//! that scrapes the gateway, the model replicas and their resource use
//! every `scrape-interval`, stores the series ([`crate::tsdb`]), evaluates
//! the SLOs' burn-rate alerts ([`crate::slo`]) and delivers them.
//!
//! [`Collector`] is the engine, driven one [`Collector::tick`] at a time
//! (tests drive it directly); [`service`] runs it as a process the
//! provider supervises and keeps it configured.
//!
//! Each tick:
//!
//! 1. the gateway's `/metrics` is scraped (its series carry `variant`,
//!    `code`, `replica`), and its `/config` read: the replicas it routes to
//!    now are the targets, so a release or a scaling step is followed
//!    without telling the collector;
//! 2. each replica's own metrics path (`/metrics`) is scraped, its series
//!    labelled `job="replica"`, `variant` and `replica` (a label the
//!    replica sets itself is kept as `exported_<name>`, as Prometheus does);
//! 3. each replica that is a local process (found by the process listening
//!    on its port) has its CPU time and resident memory sampled;
//! 4. every scrape's outcome becomes `mlops_scrape_up` and
//!    `mlops_scrape_duration_seconds`; a failure is recorded with its
//!    reason (`mlops monitor targets`);
//! 5. everything is appended in one transaction; every minute the store
//!    is compacted;
//! 6. every SLO is evaluated against every rule; an alert that changes
//!    state is recorded, logged, and (firing or resolved) POSTed to the
//!    webhook in the background, the outcome recorded when it ends.
//!
//! A scrape reads at most `max-body-bytes` (10 MiB by default) and waits
//! at most the interval (5 s at most): a target that sends 100 MB or
//! never answers is a failed scrape, never memory or a stuck collector.

pub mod alerts;
mod convert;
pub mod resources;
pub mod service;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusqlite::params;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::settings::{ApmSettings, Slo, Webhook};
use crate::slo::{self, Alert, AlertState, BurnRule};
use crate::tsdb::{ExemplarPoint, Millis, Sample, SeriesKey, SeriesKind, Store, TsdbError};

pub use convert::{samples_from_text, scrape_from_text};

/// One scrape's samples and exemplars.
type Scraped = (Vec<Sample>, Vec<ExemplarPoint>);

/// The default cap on a scrape's body.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;

/// What the collector collects and evaluates: written by the controller
/// (`collector.json` in its state directory), re-read by the process
/// whenever it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CollectorConfig {
    /// The release environment.
    pub environment: String,
    /// The released service, when there is one.
    #[serde(default)]
    pub service: Option<String>,
    /// Milliseconds between scrapes.
    pub interval_ms: u64,
    /// The gateway's admin API (`http://127.0.0.1:PORT`): its `/metrics`
    /// is scraped and its `/config` names the replicas.
    #[serde(default)]
    pub gateway: Option<String>,
    /// The path of each replica's own metrics, when they have them.
    #[serde(default)]
    pub replica_metrics: Option<String>,
    /// More targets: scraped as they are.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// The SLOs evaluated.
    #[serde(default)]
    pub slos: Vec<Slo>,
    /// The SLO period in milliseconds (the alert windows scale with it).
    pub period_ms: u64,
    /// The minimum of requests in a long window for an alert.
    pub min_requests: u64,
    /// How long a condition holds before its alert fires, in ms.
    pub hold_ms: u64,
    /// Where firing and resolved alerts are POSTed.
    #[serde(default)]
    pub webhook: Option<Webhook>,
    /// The cap on a scrape's body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
}

fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

impl CollectorConfig {
    /// The configuration `[apm]` gives for `environment`, scraping the
    /// gateway at `gateway` (its admin API) when there is one.
    pub fn from_settings(
        settings: &ApmSettings,
        environment: &str,
        service: Option<&str>,
        gateway: Option<String>,
    ) -> Self {
        CollectorConfig {
            environment: environment.to_owned(),
            service: service.map(str::to_owned),
            interval_ms: settings.scrape_interval.as_millis() as u64,
            gateway,
            replica_metrics: Some("/metrics".to_owned()),
            targets: Vec::new(),
            slos: settings.slos.values().cloned().collect(),
            period_ms: settings.period.as_millis() as u64,
            min_requests: settings.min_requests,
            hold_ms: settings.hold.as_millis() as u64,
            webhook: settings.webhook.clone(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// The alert rules, scaled to the period.
    pub fn rules(&self) -> Vec<BurnRule> {
        slo::workbook_rules(Duration::from_millis(self.period_ms))
    }

    /// The interval, at least 100 ms.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(100))
    }

    /// How long a counter's last value stays the base of the next
    /// increase: five intervals, at least 5 s. After a longer gap (the
    /// collector stopped, a target unreachable) the next value starts
    /// afresh, so the gap's traffic never lands as one burst that pages.
    pub fn stale_after(&self) -> Duration {
        (self.interval() * 5).max(Duration::from_secs(5))
    }
}

/// A static scrape target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Target {
    /// Its name (the `target` label of its health series).
    pub name: String,
    /// The URL scraped.
    pub url: String,
    /// Labels added to its series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A scrape target's last outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetHealth {
    /// Its name: `gateway`, `replica <url>`, or a static target's name.
    pub name: String,
    /// The URL scraped.
    pub url: String,
    /// When it was last scraped.
    pub last_ts: Millis,
    /// Whether that scrape succeeded.
    pub up: bool,
    /// Why it failed.
    pub last_error: Option<String>,
    /// Failed scrapes since the first.
    pub failures: u64,
}

/// Every target's last outcome.
pub fn targets(store: &Store) -> Result<Vec<TargetHealth>, TsdbError> {
    let path = store.path().to_owned();
    let sql = |source| TsdbError::Sql {
        path: path.clone(),
        what: "read targets",
        source,
    };
    let mut stmt = store
        .conn()
        .prepare("SELECT name, url, last_ts, up, last_error, failures FROM targets ORDER BY name")
        .map_err(sql)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(TargetHealth {
                name: r.get(0)?,
                url: r.get(1)?,
                last_ts: r.get(2)?,
                up: r.get::<_, i64>(3)? != 0,
                last_error: r.get(4)?,
                failures: r.get::<_, i64>(5)? as u64,
            })
        })
        .map_err(sql)?;
    rows.collect::<Result<_, _>>().map_err(sql)
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TickReport {
    /// Points written.
    pub written: usize,
    /// Scrapes made and how many failed.
    pub scrapes: usize,
    /// Failed scrapes.
    pub failed: usize,
    /// Alerts that changed state: (SLO, rule, new state).
    pub transitions: Vec<(String, String, AlertState)>,
}

/// The collector's own counters, for its `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct SelfMetrics {
    /// Scrapes by target and result (`ok`/`failed`).
    pub scrapes: BTreeMap<(String, &'static str), u64>,
    /// Ticks run.
    pub ticks: u64,
    /// The last tick's duration in seconds.
    pub last_tick_seconds: f64,
    /// The last evaluation of every (SLO, rule): burn rates, state.
    pub alerts: BTreeMap<(String, String), (f64, f64, AlertState)>,
    /// Deliveries by outcome.
    pub deliveries: BTreeMap<&'static str, u64>,
}

/// A delivery that ended: its event's id and how.
type Delivered = (i64, alerts::Delivery);

/// Where the collector's events go.
type LogFn = Box<dyn Fn(&str, serde_json::Value) + Send>;

/// The engine: a store, a configuration and the alerts' states.
pub struct Collector {
    store: Store,
    config: CollectorConfig,
    client: Client<HttpConnector, Empty<Bytes>>,
    alerts: HashMap<(String, String), Alert>,
    last_compact: Option<Instant>,
    deliveries: (
        mpsc::UnboundedSender<Delivered>,
        mpsc::UnboundedReceiver<Delivered>,
    ),
    metrics: SelfMetrics,
    log: LogFn,
    retry: alerts::RetryPolicy,
    /// Deliveries spawned and not yet recorded.
    in_flight: usize,
    resumed: bool,
    /// The Docker engine, once reached, for replicas that are containers;
    /// when it could not be, the time of the last attempt.
    engine: Option<mlops_iac::DockerProvider>,
    engine_tried: Option<Instant>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish()
    }
}

impl Collector {
    /// A collector writing to `store`, configured by `config`; events
    /// (alert transitions, scrape failures) go to `log`.
    pub fn new(
        mut store: Store,
        config: CollectorConfig,
        log: impl Fn(&str, serde_json::Value) + Send + 'static,
    ) -> Result<Self, TsdbError> {
        let alerts = alerts::load(&store)?;
        store.set_stale_after(config.stale_after());
        Ok(Collector {
            store,
            config,
            client: Client::builder(TokioExecutor::new()).build_http(),
            alerts,
            last_compact: None,
            deliveries: mpsc::unbounded_channel(),
            metrics: SelfMetrics::default(),
            log: Box::new(log),
            retry: alerts::RetryPolicy::default(),
            in_flight: 0,
            resumed: false,
            engine: None,
            engine_tried: None,
        })
    }

    /// How webhook deliveries are retried.
    pub fn set_retry_policy(&mut self, retry: alerts::RetryPolicy) {
        self.retry = retry;
    }

    /// The store, for reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration in force.
    pub fn config(&self) -> &CollectorConfig {
        &self.config
    }

    /// Replace the configuration (targets, SLOs); the store and the
    /// alerts' states are kept.
    pub fn set_config(&mut self, config: CollectorConfig) {
        self.store.set_stale_after(config.stale_after());
        self.config = config;
    }

    /// The collector's own counters.
    pub fn self_metrics(&self) -> &SelfMetrics {
        &self.metrics
    }

    /// Wait until the webhook deliveries under way have ended and are
    /// recorded, or `limit` passes. Returns how many were recorded.
    pub async fn settle_deliveries(&mut self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        let mut n = 0;
        while self.in_flight > 0 {
            match tokio::time::timeout_at(deadline, self.deliveries.1.recv()).await {
                Ok(Some((event, d))) => {
                    self.record_delivery(event, &d);
                    n += 1;
                }
                _ => break,
            }
        }
        n
    }

    fn record_delivery(&mut self, event: i64, d: &alerts::Delivery) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let outcome = if d.delivered { "delivered" } else { "failed" };
        *self.metrics.deliveries.entry(outcome).or_default() += 1;
        (self.log)(
            "alert-delivery",
            serde_json::json!({
                "event": event, "target": d.target, "attempts": d.attempts,
                "outcome": outcome, "detail": d.detail,
            }),
        );
        if let Err(e) = alerts::record_delivery(&self.store, event, d) {
            (self.log)("error", serde_json::json!({ "error": e.to_string() }));
        }
    }

    async fn get(&self, url: &str) -> Result<Bytes, String> {
        let request = Request::get(url)
            // OpenMetrics first, for its exemplars; as Prometheus asks.
            .header(
                hyper::header::ACCEPT,
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            )
            .header(hyper::header::USER_AGENT, "mlops-collector")
            .body(Empty::new())
            .map_err(|e| format!("invalid URL: {e}"))?;
        let limit = self.config.max_body_bytes;
        let timeout = self.config.interval().min(Duration::from_secs(5));
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("cannot connect: {}", chain(&e)))?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("HTTP {}", status.as_u16()));
            }
            if let Some(len) = response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                && len > limit
            {
                return Err(format!(
                    "body of {len} bytes is over the limit of {limit} bytes"
                ));
            }
            Limited::new(response.into_body(), limit as usize)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        format!("body over the limit of {limit} bytes")
                    } else {
                        format!("cannot read the body: {e}")
                    }
                })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }

    /// Scrape `url`: its samples with `labels` added, or why not.
    async fn scrape(&self, url: &str, labels: &[(&str, &str)]) -> Result<Scraped, String> {
        let body = self.get(url).await?;
        let text = std::str::from_utf8(&body).map_err(|e| format!("body is not UTF-8: {e}"))?;
        scrape_from_text(text, labels, crate::tsdb::now_ms())
    }

    /// What the engine's running containers use, when there is an engine
    /// to ask (tried again a minute after it could not be reached).
    async fn container_usage(&mut self) -> Vec<mlops_iac::docker::ContainerUsage> {
        if self.engine.is_none()
            && self
                .engine_tried
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            let first = self.engine_tried.replace(Instant::now()).is_none();
            match mlops_iac::DockerProvider::connect().await {
                Ok(engine) => self.engine = Some(engine),
                // Said once: on a machine without Docker it is no news.
                Err(e) if first => (self.log)(
                    "container-stats",
                    serde_json::json!({ "error": chain(&e), "retry_every_s": 60 }),
                ),
                Err(_) => {}
            }
        }
        let Some(engine) = &self.engine else {
            return Vec::new();
        };
        match engine.container_usage().await {
            Ok(usage) => usage,
            Err(e) => {
                (self.log)("container-stats", serde_json::json!({ "error": chain(&e) }));
                Vec::new()
            }
        }
    }

    /// The replicas the gateway routes to now, by variant.
    async fn gateway_replicas(&self, admin: &str) -> Result<Vec<(String, String)>, String> {
        let body = self.get(&format!("{admin}/config")).await?;
        let config: mlops_release::gateway::Config = serde_json::from_slice(&body)
            .map_err(|e| format!("the gateway's /config is not a config: {e}"))?;
        let mut out = Vec::new();
        for v in &config.variants {
            for r in &v.replicas {
                out.push((v.name.clone(), r.clone()));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// One round: scrape, store, compact when due, evaluate the alerts.
    pub async fn tick(&mut self) -> Result<TickReport, TsdbError> {
        let started = Instant::now();
        let now = crate::tsdb::now_ms();
        let mut report = TickReport::default();
        let mut samples: Vec<Sample> = Vec::new();
        let mut exemplars: Vec<ExemplarPoint> = Vec::new();
        let mut outcomes: Vec<(String, String, Result<usize, String>, f64)> = Vec::new();

        let mut replicas = Vec::new();
        if let Some(admin) = self.config.gateway.clone() {
            let admin = admin.trim_end_matches('/').to_owned();
            let t = Instant::now();
            let url = format!("{admin}/metrics");
            let r = self.scrape(&url, &[("job", "gateway")]).await;
            let took = t.elapsed().as_secs_f64();
            match r {
                Ok((s, e)) => {
                    outcomes.push(("gateway".into(), url, Ok(s.len()), took));
                    samples.extend(s);
                    exemplars.extend(e);
                }
                Err(e) => outcomes.push(("gateway".into(), url, Err(e), took)),
            }
            match self.gateway_replicas(&admin).await {
                Ok(r) => replicas = r,
                Err(e) => outcomes.push((
                    "gateway config".into(),
                    format!("{admin}/config"),
                    Err(e),
                    0.0,
                )),
            }
        }

        if let Some(path) = self.config.replica_metrics.clone() {
            let this = &*self;
            let scrapes = replicas.iter().map(|(variant, replica)| {
                let url = format!("{}{}", replica.trim_end_matches('/'), path);
                async move {
                    let t = Instant::now();
                    let labels = [
                        ("job", "replica"),
                        ("variant", variant),
                        ("replica", replica),
                    ];
                    let r = this.scrape(&url, &labels).await;
                    (
                        format!("replica {replica}"),
                        url,
                        r,
                        t.elapsed().as_secs_f64(),
                    )
                }
            });
            for (name, url, r, took) in futures_util::future::join_all(scrapes).await {
                match r {
                    Ok((s, e)) => {
                        outcomes.push((name, url, Ok(s.len()), took));
                        samples.extend(s);
                        exemplars.extend(e);
                    }
                    Err(e) => outcomes.push((name, url, Err(e), took)),
                }
            }
        }

        let mut per_variant: BTreeMap<&str, usize> = BTreeMap::new();
        for (variant, _) in &replicas {
            *per_variant.entry(variant.as_str()).or_default() += 1;
        }
        for (variant, n) in per_variant {
            samples.push(Sample {
                key: SeriesKey::new("mlops_gateway_variant_replicas", [("variant", variant)]),
                kind: SeriesKind::Gauge,
                value: n as f64,
            });
        }
        let mut containers = Vec::new();
        for (variant, replica) in &replicas {
            let port = resources::endpoint_port(replica);
            let local = port
                .and_then(resources::listening_pid)
                // Docker's userland proxy listens for a container.
                .filter(|pid| resources::process_name(*pid).is_none_or(|n| n != "docker-proxy"))
                .and_then(|pid| resources::process_usage(pid).ok());
            let usage = match local {
                Some(u) => Some((u.cpu_seconds, u.rss_bytes as f64)),
                None => {
                    if containers.is_empty() {
                        containers = self.container_usage().await;
                    }
                    containers
                        .iter()
                        .find(|c| port.is_some() && c.port == port)
                        .map(|c| (c.cpu_seconds, c.memory_bytes as f64))
                }
            };
            if let Some((cpu, memory)) = usage {
                let key = |name: &str| {
                    SeriesKey::new(name, [("variant", variant.as_str()), ("replica", replica)])
                };
                samples.push(Sample {
                    key: key("mlops_replica_cpu_seconds_total"),
                    kind: SeriesKind::Counter,
                    value: cpu,
                });
                samples.push(Sample {
                    key: key("mlops_replica_memory_bytes"),
                    kind: SeriesKind::Gauge,
                    value: memory,
                });
            }
        }

        for target in self.config.targets.clone() {
            let labels: Vec<(&str, &str)> = target
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let t = Instant::now();
            let r = self.scrape(&target.url, &labels).await;
            let took = t.elapsed().as_secs_f64();
            match r {
                Ok((s, e)) => {
                    outcomes.push((target.name.clone(), target.url.clone(), Ok(s.len()), took));
                    samples.extend(s);
                    exemplars.extend(e);
                }
                Err(e) => outcomes.push((target.name.clone(), target.url.clone(), Err(e), took)),
            }
        }

        for (name, url, result, took) in &outcomes {
            report.scrapes += 1;
            let ok = result.is_ok();
            if !ok {
                report.failed += 1;
            }
            *self
                .metrics
                .scrapes
                .entry((name.clone(), if ok { "ok" } else { "failed" }))
                .or_default() += 1;
            let key = |metric: &str| SeriesKey::new(metric, [("target", name.as_str())]);
            samples.push(Sample {
                key: key("mlops_scrape_up"),
                kind: SeriesKind::Gauge,
                value: if ok { 1.0 } else { 0.0 },
            });
            samples.push(Sample {
                key: key("mlops_scrape_duration_seconds"),
                kind: SeriesKind::Gauge,
                value: *took,
            });
            self.record_target(name, url, result.as_ref().err(), now)?;
        }

        // Targets not scraped this tick (replicas the gateway no longer
        // routes to) are gone, not down.
        self.store
            .conn()
            .execute("DELETE FROM targets WHERE last_ts < ?1", [now])
            .map_err(|source| TsdbError::Sql {
                path: self.store.path().to_owned(),
                what: "forget old targets",
                source,
            })?;
        report.written = self.store.append(now, &samples, false)?.written;
        self.store.append_exemplars(&exemplars)?;

        let due = self
            .last_compact
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if due {
            self.store.compact(now)?;
            self.last_compact = Some(Instant::now());
        }

        while let Ok((event, d)) = self.deliveries.1.try_recv() {
            self.record_delivery(event, &d);
        }
        self.resume_deliveries(now)?;
        report.transitions = self.evaluate(now)?;
        self.metrics.ticks += 1;
        self.metrics.last_tick_seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    fn record_target(
        &mut self,
        name: &str,
        url: &str,
        error: Option<&String>,
        now: Millis,
    ) -> Result<(), TsdbError> {
        let path = self.store.path().to_owned();
        let sql = |source| TsdbError::Sql {
            path: path.clone(),
            what: "record a scrape",
            source,
        };
        let conn = self.store.conn();
        conn.execute(
            "INSERT INTO targets (name, url, last_ts, up, last_error, failures)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (name) DO UPDATE SET url = excluded.url, last_ts = excluded.last_ts,
               up = excluded.up,
               last_error = COALESCE(excluded.last_error, targets.last_error),
               failures = targets.failures + excluded.failures",
            params![
                name,
                url,
                now,
                error.is_none() as i64,
                error,
                error.is_some() as i64
            ],
        )
        .map_err(sql)?;
        if let Some(e) = error {
            // A target down for an hour is one line a minute in the log,
            // but every failure is in the table.
            conn.execute(
                "INSERT INTO scrape_errors (ts, target, error) VALUES (?1, ?2, ?3)",
                params![now, name, e],
            )
            .map_err(sql)?;
            (self.log)(
                "scrape-failed",
                serde_json::json!({ "target": name, "url": url, "error": e }),
            );
        }
        Ok(())
    }

    /// Deliver event `event` to the webhook, if there is one, in the
    /// background; its outcome is recorded by a later tick.
    fn send(&mut self, event: i64, payload: serde_json::Value) {
        let Some(webhook) = self.config.webhook.clone() else {
            return;
        };
        let tx = self.deliveries.0.clone();
        let retry = self.retry;
        self.in_flight += 1;
        tokio::spawn(async move {
            let d = alerts::deliver(&webhook, &payload, retry).await;
            let _ = tx.send((event, d));
        });
    }

    /// Once per collector: deliver again the transitions of the last hour
    /// whose delivery never ended (the previous collector died during it).
    /// A webhook may so get one twice; it never misses one.
    fn resume_deliveries(&mut self, now: Millis) -> Result<(), TsdbError> {
        if std::mem::replace(&mut self.resumed, true) || self.config.webhook.is_none() {
            return Ok(());
        }
        for (event, payload) in alerts::undelivered(&self.store, now - 3_600_000)? {
            (self.log)(
                "alert-redelivery",
                serde_json::json!({ "event": event, "payload": payload }),
            );
            self.send(event, payload);
        }
        Ok(())
    }

    fn evaluate(&mut self, now: Millis) -> Result<Vec<(String, String, AlertState)>, TsdbError> {
        let mut transitions = Vec::new();
        let hold = Duration::from_millis(self.config.hold_ms);
        for slo_spec in self.config.slos.clone() {
            for rule in self.config.rules() {
                let window = |d: Duration| now + 1 - d.as_millis() as Millis;
                let long = slo::counts(&self.store, &slo_spec, window(rule.long), now + 1)?;
                let short = slo::counts(&self.store, &slo_spec, window(rule.short), now + 1)?;
                let evaluation =
                    slo::evaluate(&slo_spec, &rule, long, short, self.config.min_requests);
                let key = (slo_spec.name.clone(), rule.name.clone());
                let alert = self
                    .alerts
                    .entry(key.clone())
                    .or_insert_with(|| Alert::new(&slo_spec.name, &rule.name, now));
                let changed = alert.step(evaluation.breached, now, hold);
                let alert = alert.clone();
                self.metrics.alerts.insert(
                    key,
                    (evaluation.burn_long, evaluation.burn_short, alert.state),
                );
                let Some(state) = changed else {
                    alerts::save(&self.store, &alert, &evaluation, None, now)?;
                    continue;
                };
                transitions.push((alert.slo.clone(), alert.rule.clone(), state));
                let payload = serde_json::json!({
                    "environment": self.config.environment,
                    "service": self.config.service,
                    "slo": alert.slo,
                    "rule": alert.rule,
                    "severity": rule.severity.as_str(),
                    "state": state.as_str(),
                    "since": mlops_core::ledger::format_ms(now),
                    "target": slo_spec.target,
                    "burn_rate": { "long": evaluation.burn_long, "short": evaluation.burn_short, "threshold": rule.burn_rate },
                    "windows": { "long_ms": rule.long.as_millis() as u64, "short_ms": rule.short.as_millis() as u64 },
                    "requests": { "long": evaluation.long, "short": evaluation.short },
                });
                let event = alerts::save(&self.store, &alert, &evaluation, Some(&payload), now)?;
                (self.log)("alert", payload.clone());
                if let (Some(event), AlertState::Firing | AlertState::Resolved) = (event, state) {
                    self.send(event, payload);
                }
            }
        }
        Ok(transitions)
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
