//! The collector as a long-lived service of the release environment, as
//! the gateway is one (`mlops_release::service`): a process the provider
//! runs and restarts, owned by the `apm` controller, shown by `mlops infra
//! status`, that keeps collecting after `mlops pipeline run` exits.
//!
//! - **The process** ([`serve_main`]; the `mlops` binary's hidden
//!   `collector-serve --state DIR --admin-port PORT`). It reads
//!   `DIR/collector.json` ([`CollectorConfig`]) — again whenever the file
//!   changes, so the controller reconfigures it by writing the file — and
//!   keeps its series, alerts and scrape log in `DIR/metrics.db`. On
//!   127.0.0.1:PORT (the provider's port, health-checked at `/health`) it
//!   answers `GET /health` and `GET /metrics` (its own counters, the SLOs'
//!   burn rates and the alerts' states, in the text format). It changes
//!   nothing through that API, so it takes no token. It logs one JSON
//!   object per line (scrape failures, alert transitions, deliveries; never
//!   a webhook's token) to stderr, the provider's log. After `kill -9` the
//!   database is whole (SQLite's WAL: a tick's points are one transaction)
//!   and the alerts keep their states.
//! - **The controller's side** ([`CollectorService`]): `ensure` writes the
//!   configuration and starts the process when it does not run (or runs
//!   an older program), as the undeclared service `<service>-collector`.
//!
//! On Docker it runs as the gateway does: a `FROM scratch` image of the
//! program, in the host's network (it scrapes the gateway's admin API and
//! the replicas' ports published on the host's loopback), as the owner of
//! its state directory, which is bind-mounted at its own path. There it
//! does not see the replicas' processes, so it samples no CPU or memory
//! (a container's own use needs the engine's stats API, which this
//! version does not reach from inside a container).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use mlops_core::LedgerHandle;
use mlops_iac::spec::{BuildSpec, HealthSpec, Resources, RestartPolicy};
use mlops_iac::{Controller, InfraError, InfraSpec, Instance, Provider, ProviderError, Scope};
use mlops_iac::{ReplicaState, ServiceSpec};
use mlops_release::service::EventLog;
use tokio::net::TcpListener;

use super::{Collector, CollectorConfig, SelfMetrics};
use crate::tsdb::{Retention, Store, TsdbError};

/// The controller that owns the collector's instance.
pub const OWNER: &str = "apm";

/// The hidden `mlops` subcommand that runs the collector process.
pub const SERVE_SUBCOMMAND: &str = "collector-serve";

/// The collector's configuration in its state directory.
pub const CONFIG_FILE: &str = "collector.json";

/// What can go wrong running or starting the collector.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// Starting, observing or stopping its instance failed.
    #[error(transparent)]
    Infra(#[from] InfraError),
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] TsdbError),
    /// A state file could not be read or written.
    #[error("collector state {path}: {detail}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The admin listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn state_error(path: &Path, detail: impl std::fmt::Display) -> CollectorError {
    CollectorError::State {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

/// The configuration in `dir`, if there is one.
pub fn read_config(dir: &Path) -> Result<Option<CollectorConfig>, CollectorError> {
    let path = dir.join(CONFIG_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| state_error(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_error(&path, e)),
    }
}

/// Writes `config` to `dir` atomically; whether it changed.
pub fn write_config(dir: &Path, config: &CollectorConfig) -> Result<bool, CollectorError> {
    if read_config(dir).ok().flatten().as_ref() == Some(config) {
        return Ok(false);
    }
    let path = dir.join(CONFIG_FILE);
    let mut json = serde_json::to_vec_pretty(config).map_err(|e| state_error(&path, e))?;
    json.push(b'\n');
    mlops_release::service::write_atomic(&path, &json).map_err(|e| state_error(&path, e))?;
    Ok(true)
}

// ---- the process --------------------------------------------------------------

/// Where the collector process finds its state and answers.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The state directory: `collector.json`, `metrics.db`.
    pub state: PathBuf,
    /// The admin API's port on 127.0.0.1.
    pub admin_port: u16,
}

/// The collector process's main: runs [`serve`] until SIGTERM or SIGINT.
pub fn serve_main(options: &ServeOptions, log: EventLog) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log.event("failed", serde_json::json!({ "error": e.to_string() }));
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let stop_log = log.clone();
        let stop = async move {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            stop_log.event("stopping", serde_json::json!({ "signal": which }));
        };
        serve(options, log.clone(), stop)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log.event("failed", serde_json::json!({ "error": e }));
            std::process::ExitCode::FAILURE
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Runs the collector from `options.state` until `stop` completes.
pub async fn serve(
    options: &ServeOptions,
    log: EventLog,
    stop: impl Future<Output = ()>,
) -> Result<(), CollectorError> {
    let dir = &options.state;
    let config_path = dir.join(CONFIG_FILE);
    let config = read_config(dir)?.ok_or_else(|| {
        state_error(
            &config_path,
            "missing: the collector has nothing to collect",
        )
    })?;
    let mut seen = modified(&config_path);
    let store = Store::open(dir, Retention::default())?;
    let event_log = log.clone();
    let mut collector = Collector::new(store, config, move |event, fields| {
        event_log.event(event, fields)
    })?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, options.admin_port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| CollectorError::Bind { addr, source })?;
    let exposition = Arc::new(Mutex::new(String::new()));
    let admin = tokio::spawn(admin_loop(listener, exposition.clone()));
    log.event(
        "started",
        serde_json::json!({
            "pid": std::process::id(),
            "admin": addr.to_string(),
            "state": dir.display().to_string(),
            "interval_ms": collector.config().interval_ms,
            "slos": collector.config().slos.len(),
        }),
    );
    let run = async {
        loop {
            let interval = collector.config().interval();
            let next = tokio::time::Instant::now() + interval;
            if let Err(e) = collector.tick().await {
                log.event("tick-failed", serde_json::json!({ "error": e.to_string() }));
            }
            *exposition.lock().unwrap_or_else(|e| e.into_inner()) =
                render_self_metrics(collector.self_metrics());
            let now_seen = modified(&config_path);
            if now_seen != seen {
                seen = now_seen;
                match read_config(dir) {
                    Ok(Some(c)) => {
                        log.event("reconfigured", serde_json::json!({ "slos": c.slos.len() }));
                        collector.set_config(c);
                    }
                    Ok(None) => {}
                    Err(e) => log.event(
                        "config-invalid",
                        serde_json::json!({ "error": e.to_string() }),
                    ),
                }
            }
            tokio::time::sleep_until(next).await;
        }
    };
    tokio::select! {
        () = run => {}
        () = stop => {}
    }
    admin.abort();
    log.event("stopped", serde_json::json!({}));
    Ok(())
}

async fn admin_loop(listener: TcpListener, exposition: Arc<Mutex<String>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let exposition = exposition.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let exposition = exposition.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &exposition)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(req: &Request<Incoming>, exposition: &Mutex<String>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, content_type: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => text(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            exposition.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        ),
        (_, "/health" | "/metrics") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The collector's own exposition: scrapes, ticks, deliveries, and each
/// SLO rule's burn rates and alert state.
pub fn render_self_metrics(m: &SelfMetrics) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        "mlops_collector_scrapes_total",
        "counter",
        "Scrapes made by the collector, by target and result.",
    );
    let mut body = String::new();
    for ((target, result), n) in &m.scrapes {
        let _ = writeln!(
            body,
            "mlops_collector_scrapes_total{{target=\"{}\",result=\"{result}\"}} {n}",
            escape(target)
        );
    }
    out.push_str(&body);
    let simple = |out: &mut String, name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    simple(
        &mut out,
        "mlops_collector_ticks_total",
        "counter",
        "Collection rounds run.",
        m.ticks.to_string(),
    );
    simple(
        &mut out,
        "mlops_collector_last_tick_seconds",
        "gauge",
        "How long the last collection round took.",
        m.last_tick_seconds.to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP mlops_alert_deliveries_total Webhook deliveries of alerts, by outcome.\n# TYPE mlops_alert_deliveries_total counter"
    );
    for outcome in ["delivered", "failed"] {
        let n = m.deliveries.get(outcome).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "mlops_alert_deliveries_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP mlops_slo_burn_rate An SLO's error budget burn rate over an alert rule's window.\n# TYPE mlops_slo_burn_rate gauge"
    );
    for ((slo, rule), (long, short, _)) in &m.alerts {
        for (window, v) in [("long", long), ("short", short)] {
            let _ = writeln!(
                out,
                "mlops_slo_burn_rate{{slo=\"{}\",rule=\"{}\",window=\"{window}\"}} {v}",
                escape(slo),
                escape(rule)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP mlops_slo_alert_firing Whether an SLO's alert rule is firing (1) or not (0).\n# TYPE mlops_slo_alert_firing gauge"
    );
    for ((slo, rule), (_, _, state)) in &m.alerts {
        let _ = writeln!(
            out,
            "mlops_slo_alert_firing{{slo=\"{}\",rule=\"{}\"}} {}",
            escape(slo),
            escape(rule),
            u8::from(*state == crate::slo::AlertState::Firing)
        );
    }
    out
}

// ---- the controller's side ------------------------------------------------------

/// How to run the collector process: a program that, given `--state DIR
/// --admin-port PORT` after `args`, runs [`serve_main`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorProgram {
    /// The program (absolute).
    pub program: PathBuf,
    /// Arguments before the options.
    pub args: Vec<String>,
}

impl CollectorProgram {
    /// The `mlops` executable at `program`, with its hidden
    /// [`SERVE_SUBCOMMAND`].
    pub fn mlops(program: impl Into<PathBuf>) -> Self {
        CollectorProgram {
            program: program.into(),
            args: vec![SERVE_SUBCOMMAND.to_owned()],
        }
    }
}

/// The collector of one released service's environment. See the [module
/// docs](self).
pub struct CollectorService<'a> {
    scope: &'a Scope,
    provider: &'a dyn Provider,
    ledger: LedgerHandle,
    service: String,
    program: CollectorProgram,
}

impl std::fmt::Debug for CollectorService<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorService")
            .field("service", &self.service)
            .field("environment", &self.scope.environment)
            .finish()
    }
}

impl<'a> CollectorService<'a> {
    /// The collector of `service` in the scope's environment, run by
    /// `provider` with `program`; changes are recorded in `ledger` as the
    /// `apm` controller's.
    pub fn new(
        scope: &'a Scope,
        provider: &'a dyn Provider,
        ledger: impl Into<LedgerHandle>,
        service: &str,
        program: CollectorProgram,
    ) -> Self {
        CollectorService {
            scope,
            provider,
            ledger: ledger.into(),
            service: service.to_owned(),
            program,
        }
    }

    /// The name of its (undeclared) service: `<service>-collector`.
    pub fn name(&self) -> String {
        format!("{}-collector", self.service)
    }

    /// Its state directory: `.mlops/apm/<environment>/<service>-collector/`.
    pub fn state_dir(&self) -> PathBuf {
        state_dir(self.scope, &self.service)
    }

    /// The collector's service definition for `config`: a webhook's token
    /// variable is passed through from the caller's environment as a
    /// secret (its value never in a file, a log or the ledger).
    pub fn spec_for(&self, config: &CollectorConfig) -> ServiceSpec {
        let mut spec = self.spec();
        if let Some(var) = config.webhook.as_ref().and_then(|w| w.token_env.clone()) {
            spec.env.insert(
                var.clone(),
                mlops_iac::spec::EnvValue::FromEnv { var, secret: true },
            );
        }
        spec
    }

    /// The collector's service definition.
    pub fn spec(&self) -> ServiceSpec {
        let dir = self.state_dir();
        let mut command = vec![self.program.program.to_string_lossy().into_owned()];
        command.extend(self.program.args.iter().cloned());
        command.extend([
            "--state".to_owned(),
            dir.to_string_lossy().into_owned(),
            "--admin-port".to_owned(),
            "{port}".to_owned(),
        ]);
        ServiceSpec {
            name: self.name(),
            command,
            port: 8080,
            host_port: None,
            replicas: 1,
            replica_range: None,
            restart: RestartPolicy::Always,
            health: HealthSpec {
                path: "/health".to_owned(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                deadline: Duration::from_secs(20),
            },
            resources: Resources::default(),
            env: Default::default(),
            model_dir: None,
            build: Some(BuildSpec::Binary {
                binary: self.program.program.clone(),
                files: Vec::new(),
            }),
            read_only: true,
            user: owner_of(&dir),
            stop_grace: Duration::from_secs(10),
            drain: Duration::ZERO,
            host_network: true,
            // Container stats of Docker replicas (the local provider's
            // process reaches the engine as its user does).
            engine_socket: true,
            state_dir: Some(dir),
        }
    }

    fn controller(&self) -> Result<Controller<'_>, CollectorError> {
        Ok(Controller::new(
            OWNER,
            self.provider,
            self.scope,
            &self.ledger,
        )?)
    }

    async fn instances(&self) -> Result<Vec<Instance>, CollectorError> {
        let name = self.name();
        let mut found = self.provider.observe(self.scope).await?;
        found.retain(|i| i.service == name && i.owner.as_deref() == Some(OWNER));
        Ok(found)
    }

    /// Writes `config` and makes sure the collector runs, healthy, as the
    /// current program's revision (a running one re-reads the file).
    /// Returns its instance.
    pub async fn ensure(
        &self,
        infra: &InfraSpec,
        config: &CollectorConfig,
    ) -> Result<Instance, CollectorError> {
        let dir = self.state_dir();
        std::fs::create_dir_all(&dir).map_err(|e| state_error(&dir, e))?;
        write_config(&dir, config)?;
        let spec = self.spec_for(config);
        let revision = {
            let (spec, root) = (spec.clone(), self.scope.root.clone());
            tokio::task::spawn_blocking(move || {
                mlops_iac::plan::desired(&spec, None, &root, |_| None).map(|d| d.revision)
            })
            .await
            .map_err(|e| state_error(&dir, e))??
        };
        let running = self.instances().await?;
        if let Some(current) = running
            .iter()
            .find(|i| i.revision == revision && i.is_healthy())
        {
            return Ok(current.clone());
        }
        // One that is restarting after a crash is waited for a moment.
        if let Some(current) = running.iter().find(|i| i.revision == revision)
            && !current
                .replicas
                .iter()
                .any(|r| matches!(r.state, ReplicaState::Exited))
        {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(i) = self
                    .instances()
                    .await?
                    .into_iter()
                    .find(|i| i.id == current.id && i.is_healthy())
                {
                    return Ok(i);
                }
            }
        }
        let controller = self.controller()?;
        for stale in &running {
            controller.stop(&stale.id).await?;
        }
        Ok(controller.start_undeclared(infra, &spec, 1).await?)
    }

    /// Stops the collector (its state directory, with the database,
    /// stays); whether one ran.
    pub async fn stop(&self) -> Result<bool, CollectorError> {
        let running = self.instances().await?;
        let controller = self.controller()?;
        for instance in &running {
            controller.stop(&instance.id).await?;
        }
        Ok(!running.is_empty())
    }

    /// The running instance, if any.
    pub async fn instance(&self) -> Result<Option<Instance>, CollectorError> {
        Ok(self.instances().await?.into_iter().next())
    }
}

/// The collector's state directory for `service` in the scope's
/// environment: `.mlops/apm/<environment>/<service>-collector/`.
pub fn state_dir(scope: &Scope, service: &str) -> PathBuf {
    scope
        .state_dir()
        .join("apm")
        .join(&scope.environment)
        .join(format!("{service}-collector"))
}

/// `uid:gid` of `dir`'s owner (`65534:65534`, nobody, when it cannot be
/// read).
fn owner_of(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(dir).map_or_else(
        |_| "65534:65534".to_owned(),
        |m| format!("{}:{}", m.uid(), m.gid()),
    )
}
