//! The gateway as a long-lived service of the release environment: a
//! process the provider runs and restarts, not a thread of a pipeline
//! step. It keeps serving after `mlops pipeline run` exits, comes back
//! with its last config after any restart (`kill -9` included), shows in
//! `mlops infra status`, and is driven only through its authenticated
//! admin API.
//!
//! Two halves:
//!
//! - **The process** ([`serve`], [`serve_main`]; the `mlops` binary's hidden
//!   `gateway-serve`). It reads its state directory: `config.json` (the
//!   gateway [`Config`]) and `admin.token` ([`ensure_token_file`]). It
//!   proxies on `--listen` and answers the admin API on 127.0.0.1
//!   `--admin-port`: `GET /health`, `/metrics`, `/snapshot`, `/config`
//!   (open to local clients, as the library's admin API) and
//!   `PUT /config` (bearer token), which validates, applies and writes
//!   `config.json` atomically (temporary file, fsync, rename) before it
//!   answers, so an accepted config is one a restarted gateway loads. It
//!   logs one JSON object per line per event (never the token) to the
//!   sink it is given (stderr: the provider's log). SIGTERM or SIGINT:
//!   stop accepting, let requests in flight finish (5 s at most), exit.
//! - **The controller's side** ([`GatewayService`]). The release controller
//!   runs the gateway in front of a declared service `S` as an instance of
//!   the service `S-gateway`, which the manifest does not declare, owned
//!   by `release` ([`Controller::start_undeclared`]): `plan` lists it as
//!   owned and `apply` leaves it alone, `status` shows it, `destroy`
//!   removes it. [`GatewayService::ensure`] starts it when it does not run
//!   (or runs another revision: a new `mlops` binary) and returns a
//!   [`GatewayClient`] that speaks the admin API over HTTP: release steps
//!   and the CLI never touch the process's memory.
//!
//! The instance's command is the `mlops` executable with `gateway-serve
//! --state DIR --listen 127.0.0.1:P --admin-port {port}`: the provider's
//! port (`{port}`, the one it health-checks at `/health`) is the admin
//! API's, so the health check never crosses the proxy to an upstream and
//! never counts in the release's measurements; the data plane's port `P`
//! is chosen once and kept in `DIR/gateway.json`, so clients keep one
//! address across restarts. The state directory is
//! `.mlops/release/<environment>/<S>-gateway/`; it outlives the instance
//! (`destroy` stops the process, the next `ensure` finds its config).
//!
//! One spec serves both providers ([`GatewayService::spec`]). On Docker the
//! instance is a container of a `FROM scratch` image of the program and
//! the libraries `ldd` lists (as iac builds a `binary` service), with a
//! read-only root and no capabilities, restarted by Docker's `always`
//! policy, running as the owner of the state directory (so `admin.token`
//! stays 0600 on the host and the gateway can write `config.json` beside
//! it), the state directory bind-mounted read-write at its own path
//! (`ServiceSpec::state_dir`).
//!
//! The network: the container runs in the host's network namespace
//! (`ServiceSpec::host_network`) and, exactly as the local process does,
//! listens on 127.0.0.1 only: the data plane on `P`, the admin API on a
//! loopback port the provider picks (health-checked from the host). The
//! reason is the upstreams: the release steps put the `endpoint`s of
//! [`Instance`] replicas in its config, and on Docker those are ports
//! published on the host's 127.0.0.1, which from a container on a bridge
//! network (the environment's `mlops-<project>-<env>`) is the container
//! itself. Joining that network instead and routing to `container:port`
//! would need every endpoint a step writes translated, and translated
//! back when read, by a mapping only the provider knows; in the host's
//! network there is no mapping: a replica's `endpoint` is the gateway's
//! upstream on both providers, and an upstream outside Docker on the
//! host's loopback works too. The price: the gateway's container has no
//! network isolation of its own (it reaches every loopback port of the
//! host, as the local process does), `docker ps` shows no published ports
//! (it binds 127.0.0.1 itself, never 0.0.0.0), and it needs a Linux engine
//! on this machine, which the Docker provider requires anyway. A container
//! stopped by `docker kill` is not restarted by Docker (a kill suspends
//! the restart policy): `ensure` sees it exited and replaces it, with the
//! same config and data plane port.

use std::future::Future;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mlops_core::LedgerHandle;
use mlops_iac::spec::{BuildSpec, HealthSpec, Resources, RestartPolicy};
use mlops_iac::{
    Controller, InfraError, InfraSpec, Instance, Provider, ProviderKind, ReplicaState, Scope,
};
use mlops_iac::{ProviderError, ServiceSpec};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::gateway::{
    AdminHooks, AdminToken, Config, Gateway, GatewayError, config_summary, ensure_token_file,
};

/// The controller that owns the gateway's instance.
pub const OWNER: &str = "release";

/// The hidden `mlops` subcommand that runs the gateway process.
pub const SERVE_SUBCOMMAND: &str = "gateway-serve";

/// The gateway's config in its state directory.
pub const CONFIG_FILE: &str = "config.json";

/// Where the data plane listens, in the state directory (chosen once).
pub const ADDRESS_FILE: &str = "gateway.json";

/// How long a stopping gateway waits for requests in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// How long a client waits for one admin call.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong running, starting or talking to the gateway service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Starting, observing or stopping its instance failed.
    #[error(transparent)]
    Infra(#[from] InfraError),
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The gateway refused its config or could not listen.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// A state file could not be read or written.
    #[error("gateway state {path}: {detail}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The service it fronts has no healthy instance to route to.
    #[error(
        "no healthy instance of `{service}` runs in `{environment}` for its gateway to route to; run `mlops infra apply` first"
    )]
    NothingToRoute {
        /// The service.
        service: String,
        /// The environment.
        environment: String,
    },
    /// The service it fronts is not declared.
    #[error("no service `{0}` in [infra.services]")]
    UnknownService(String),
    /// No gateway instance runs (or it has no admin endpoint).
    #[error("no gateway for `{0}` runs; `GatewayService::ensure` starts one")]
    NotRunning(String),
    /// An admin call failed on the way.
    #[error("{method} {url}: {detail}")]
    Http {
        /// The method.
        method: &'static str,
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// The admin API answered with an error status.
    #[error("{method} {url}: {status}: {}", body.trim())]
    Status {
        /// The method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// What it said.
        body: String,
    },
}

// ---- state files ------------------------------------------------------------

/// `gateway.json`: where the data plane listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AddressFile {
    listen: SocketAddr,
}

/// Writes `path` whole or not at all: a temporary sibling, synced, renamed
/// over it, and the directory synced, so a reader (or a gateway restarted
/// after `kill -9`) sees the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn state_error(path: &Path, detail: impl std::fmt::Display) -> ServiceError {
    ServiceError::State {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

/// The config in `dir`/[`CONFIG_FILE`], if there is one.
pub fn read_config(dir: &Path) -> Result<Option<Config>, ServiceError> {
    let path = dir.join(CONFIG_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| state_error(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_error(&path, e)),
    }
}

/// Writes `config` to `dir`/[`CONFIG_FILE`] atomically.
pub fn write_config(dir: &Path, config: &Config) -> Result<(), ServiceError> {
    let path = dir.join(CONFIG_FILE);
    let mut json = serde_json::to_vec_pretty(config).map_err(|e| state_error(&path, e))?;
    json.push(b'\n');
    write_atomic(&path, &json).map_err(|e| state_error(&path, e))
}

// ---- the process --------------------------------------------------------------

/// Where the gateway process finds its state and listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The state directory: `config.json`, `admin.token`.
    pub state: PathBuf,
    /// The data plane's address.
    pub listen: SocketAddr,
    /// The admin API's port on 127.0.0.1.
    pub admin_port: u16,
}

/// One JSON object per line per event, to a sink the caller owns (the
/// process's stderr, which the provider keeps as its log). Never given a
/// secret.
#[derive(Clone)]
pub struct EventLog(Arc<Mutex<Box<dyn Write + Send>>>);

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventLog(..)")
    }
}

impl EventLog {
    /// A log writing to `sink`.
    pub fn new(sink: impl Write + Send + 'static) -> Self {
        EventLog(Arc::new(Mutex::new(Box::new(sink))))
    }

    /// Writes `{"time", "event", ...fields}` as one line.
    pub fn event(&self, event: &str, fields: serde_json::Value) {
        let now = mlops_core::ledger::now_ms();
        let mut line = serde_json::json!({
            "time": mlops_core::ledger::format_ms(now),
            "ts_ms": now,
            "event": event,
        });
        if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        let mut sink = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(sink, "{line}");
        let _ = sink.flush();
    }
}

/// The gateway process's main: runs [`serve`] on a runtime of its own until
/// SIGTERM or SIGINT, and turns its outcome into an exit code.
pub fn serve_main(options: &ServeOptions, log: EventLog) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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

/// Runs the gateway from `options.state` until `stop` completes, then
/// stops gracefully. Fails when the state is missing or invalid or a
/// listener cannot be bound (the provider restarts it).
pub async fn serve(
    options: &ServeOptions,
    log: EventLog,
    stop: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let dir = &options.state;
    let token = ensure_token_file(dir)?;
    let config = read_config(dir)?.ok_or_else(|| {
        state_error(
            &dir.join(CONFIG_FILE),
            "missing: the gateway has nothing to route to",
        )
    })?;
    let summary = config_summary(&config);
    let gateway = Gateway::new(config)?;
    let admin_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, options.admin_port));
    let admin_listener =
        TcpListener::bind(admin_addr)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: admin_addr,
                source,
            })?;
    let proxy = gateway.bind(options.listen).await?;
    let hooks = AdminHooks {
        // Written before the answer: an accepted config survives any
        // restart. A config that cannot be written is not accepted.
        on_config: Some(Box::new({
            let dir = dir.clone();
            move |config| write_config(&dir, config).map_err(|e| e.to_string())
        })),
        on_event: Some(Box::new({
            let log = log.clone();
            move |event, fields| log.event(event, fields)
        })),
    };
    let admin = gateway.serve_admin_with(admin_listener, token, hooks)?;
    log.event(
        "started",
        serde_json::json!({
            "pid": std::process::id(),
            "listen": proxy.local_addr().to_string(),
            "admin": admin_addr.to_string(),
            "state": dir.display().to_string(),
            "variants": summary,
        }),
    );
    stop.await;
    // Both stop accepting at once (the admin API first); a `PUT /config`
    // under way finishes (and is written) before exit.
    let (_, ()) = tokio::join!(admin.drain(DRAIN_LIMIT), proxy.shutdown());
    let started = Instant::now();
    let in_flight = || -> i64 {
        gateway
            .snapshot()
            .variants
            .iter()
            .map(|v| v.meter.in_flight)
            .sum()
    };
    while in_flight() > 0 && started.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log.event(
        "stopped",
        serde_json::json!({ "in_flight_left": in_flight() }),
    );
    Ok(())
}

// ---- the controller's side ------------------------------------------------------

/// How to run the gateway process: a program that, given
/// `--state DIR --listen ADDR --admin-port PORT` after `args`, runs
/// [`serve_main`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayProgram {
    /// The program (absolute).
    pub program: PathBuf,
    /// Arguments before the options.
    pub args: Vec<String>,
}

impl GatewayProgram {
    /// The `mlops` executable at `program`, with its hidden
    /// [`SERVE_SUBCOMMAND`].
    pub fn mlops(program: impl Into<PathBuf>) -> Self {
        GatewayProgram {
            program: program.into(),
            args: vec![SERVE_SUBCOMMAND.to_owned()],
        }
    }
}

/// The `mlops` program beside the running one (or in the directory above
/// it, where cargo puts test binaries' siblings), else `mlops` from `PATH`:
/// the program that runs the long-lived services (gateway, collector).
pub fn mlops_program() -> PathBuf {
    let exe = std::env::current_exe().ok();
    exe.iter()
        .flat_map(|e| e.ancestors().skip(1).take(2))
        .map(|dir| dir.join("mlops"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| "mlops".into())
}

/// The gateway in front of one declared service, as a service of the
/// release environment. See the [module docs](self).
pub struct GatewayService<'a> {
    scope: &'a Scope,
    provider: &'a dyn Provider,
    ledger: LedgerHandle,
    service: String,
    program: GatewayProgram,
}

impl std::fmt::Debug for GatewayService<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayService")
            .field("service", &self.service)
            .field("environment", &self.scope.environment)
            .field("provider", &self.provider.kind())
            .field("program", &self.program)
            .finish()
    }
}

impl<'a> GatewayService<'a> {
    /// The gateway of the declared `service` in the scope's environment,
    /// run by `provider` with `program`; changes are recorded in the
    /// project's `ledger` as the `release` controller's.
    pub fn new(
        scope: &'a Scope,
        provider: &'a dyn Provider,
        ledger: impl Into<LedgerHandle>,
        service: &str,
        program: GatewayProgram,
    ) -> Self {
        GatewayService {
            scope,
            provider,
            ledger: ledger.into(),
            service: service.to_owned(),
            program,
        }
    }

    /// The name of the gateway's own (undeclared) service: `<service>-gateway`.
    pub fn name(&self) -> String {
        format!("{}-gateway", self.service)
    }

    /// Its state directory: `.mlops/release/<environment>/<service>-gateway/`.
    pub fn state_dir(&self) -> PathBuf {
        self.scope
            .state_dir()
            .join("release")
            .join(&self.scope.environment)
            .join(self.name())
    }

    /// The gateway's service: the program serving from the state directory,
    /// the data plane on `listen`, the admin API on the provider's port
    /// (health-checked at `/health`), restarted whatever its exit. One
    /// spec for both providers: on Docker it is the program in a `FROM
    /// scratch` image, in the host's network (see the [module
    /// docs](self)), running as the owner of the state directory, which is
    /// bind-mounted read-write at its own path.
    pub fn spec(&self, listen: SocketAddr) -> ServiceSpec {
        let dir = self.state_dir();
        let mut command = vec![self.program.program.to_string_lossy().into_owned()];
        command.extend(self.program.args.iter().cloned());
        command.extend([
            "--state".to_owned(),
            dir.to_string_lossy().into_owned(),
            "--listen".to_owned(),
            listen.to_string(),
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
            // The token file is the owner's alone (0600), and the gateway
            // writes its config beside it: it runs as that owner.
            user: owner_of(&dir),
            stop_grace: Duration::from_secs(10),
            drain: Duration::ZERO,
            // Docker: the replicas it routes to are published on the
            // host's loopback, which only the host's network reaches.
            host_network: true,
            engine_socket: false,
            state_dir: Some(dir),
        }
    }

    fn controller(&self) -> Result<Controller<'_>, ServiceError> {
        Ok(Controller::new(
            OWNER,
            self.provider,
            self.scope,
            &self.ledger,
        )?)
    }

    async fn instances(&self) -> Result<Vec<Instance>, ServiceError> {
        let name = self.name();
        let mut found = self.provider.observe(self.scope).await?;
        found.retain(|i| i.service == name && i.owner.as_deref() == Some(OWNER));
        Ok(found)
    }

    /// Makes sure the gateway runs, healthy, as the current program's
    /// revision, and returns its client. Starts it when it does not run
    /// (stopping a broken or older one first); its first config sends
    /// everything to the healthy instance `apply` runs for the service, and
    /// a config already in the state directory is kept. `infra` is the
    /// project's `[infra]`: the service must be declared there, and the
    /// gateway's name must not be.
    pub async fn ensure(&self, infra: &InfraSpec) -> Result<GatewayClient, ServiceError> {
        if !infra.services.contains_key(&self.service) {
            return Err(ServiceError::UnknownService(self.service.clone()));
        }
        if infra.services.contains_key(&self.name()) {
            return Err(InfraError::Refused {
                controller: OWNER.to_owned(),
                detail: format!(
                    "`{}` is a service declared in [infra.services]; the gateway of `{}` needs that name",
                    self.name(),
                    self.service
                ),
            }
            .into());
        }
        let dir = self.state_dir();
        std::fs::create_dir_all(&dir).map_err(|e| state_error(&dir, e))?;
        let token = ensure_token_file(&dir)?;
        let listen = self.listen_address(&dir)?;
        let spec = self.spec(listen);
        let revision = {
            let (spec, root) = (spec.clone(), self.scope.root.clone());
            // Hashes the program's bytes: off the async threads.
            tokio::task::spawn_blocking(move || {
                mlops_iac::plan::desired(&spec, None, &root, |_| None).map(|d| d.revision)
            })
            .await
            .map_err(|e| state_error(&dir, e))??
        };
        if let Some(current) = self.settled(&revision).await? {
            return GatewayClient::of(&current, token, listen, &self.name());
        }
        let running = self.instances().await?;
        let controller = self.controller()?;
        for stale in &running {
            controller.stop(&stale.id).await?;
        }
        // Another program (or a released port) may hold the address now.
        let listen = if port_free(listen) {
            listen
        } else {
            self.new_listen_address(&dir)?
        };
        if read_config(&dir)?.is_none() {
            write_config(&dir, &self.first_config().await?)?;
        }
        let instance = controller
            .start_undeclared(infra, &self.spec(listen), 1)
            .await?;
        GatewayClient::of(&instance, token, listen, &self.name())
    }

    /// The instance of `revision` once it is healthy, if one runs: one
    /// whose supervisor is alive but whose process is restarting (after a
    /// crash) is waited for, up to its health deadline.
    async fn settled(&self, revision: &str) -> Result<Option<Instance>, ServiceError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let running = self.instances().await?;
            let Some(current) = running.into_iter().find(|i| i.revision == revision) else {
                return Ok(None);
            };
            if current.is_healthy() {
                return Ok(Some(current));
            }
            // Exited for good (`docker kill` suspends a container's restart
            // policy) or, on Docker, removed: replaced, not waited for. A
            // local process is `Missing` for a moment before its supervisor
            // restarts it.
            let dead = current.replicas.iter().any(|r| match r.state {
                ReplicaState::Exited => true,
                ReplicaState::Missing => self.provider.kind() == ProviderKind::Docker,
                _ => false,
            });
            if dead || !current.problems.is_empty() || Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The client of the gateway that runs, without starting one.
    pub async fn client(&self) -> Result<GatewayClient, ServiceError> {
        let dir = self.state_dir();
        let running = self.instances().await?;
        let instance = running
            .iter()
            .find(|i| i.is_healthy())
            .or(running.first())
            .ok_or_else(|| ServiceError::NotRunning(self.service.clone()))?;
        let token = ensure_token_file(&dir)?;
        let address =
            read_address(&dir)?.ok_or_else(|| ServiceError::NotRunning(self.service.clone()))?;
        GatewayClient::of(instance, token, address, &self.name())
    }

    /// Stops the gateway's instances (its state directory stays); whether
    /// one ran.
    pub async fn stop(&self) -> Result<bool, ServiceError> {
        let running = self.instances().await?;
        let controller = self.controller()?;
        for instance in &running {
            controller.stop(&instance.id).await?;
        }
        Ok(!running.is_empty())
    }

    /// Everything to the healthy replicas of the instance `apply` runs.
    async fn first_config(&self) -> Result<Config, ServiceError> {
        let observed = self.provider.observe(self.scope).await?;
        let declared: Vec<&Instance> = observed
            .iter()
            .filter(|i| i.service == self.service && i.owner.is_none())
            .collect();
        let endpoints: Vec<String> = declared
            .iter()
            .flat_map(|i| &i.replicas)
            .filter(|r| r.healthy)
            .filter_map(|r| r.endpoint.clone())
            .collect();
        if endpoints.is_empty() {
            return Err(ServiceError::NothingToRoute {
                service: self.service.clone(),
                environment: self.scope.environment.clone(),
            });
        }
        let mut config = Config::single(endpoints);
        // The version they serve, when they agree on one.
        let mut versions = declared.iter().map(|i| i.model_version.as_ref());
        if let Some(Some(first)) = versions.next()
            && versions.all(|v| v == Some(first))
        {
            config.variants[0].version = Some(first.clone());
        }
        Ok(config)
    }

    /// The data plane's address from [`ADDRESS_FILE`], chosen on first use.
    fn listen_address(&self, dir: &Path) -> Result<SocketAddr, ServiceError> {
        match read_address(dir)? {
            Some(a) => Ok(a),
            None => self.new_listen_address(dir),
        }
    }

    fn new_listen_address(&self, dir: &Path) -> Result<SocketAddr, ServiceError> {
        let path = dir.join(ADDRESS_FILE);
        let listen = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| state_error(&path, format!("cannot find a free port: {e}")))?;
        let json = serde_json::to_vec_pretty(&AddressFile { listen })
            .map_err(|e| state_error(&path, e))?;
        write_atomic(&path, &json).map_err(|e| state_error(&path, e))?;
        Ok(listen)
    }
}

fn read_address(dir: &Path) -> Result<Option<SocketAddr>, ServiceError> {
    let path = dir.join(ADDRESS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<AddressFile>(&bytes)
            .map(|a| Some(a.listen))
            .map_err(|e| state_error(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_error(&path, e)),
    }
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

fn port_free(addr: SocketAddr) -> bool {
    std::net::TcpListener::bind(addr).is_ok()
}

/// The admin API of a running gateway, over HTTP with its bearer token.
/// Cheap to clone.
#[derive(Clone)]
pub struct GatewayClient {
    instance: String,
    admin: String,
    proxy: SocketAddr,
    token: AdminToken,
    http: Client<HttpConnector, Full<Bytes>>,
    /// The model version each replica URL serves, as far as this client
    /// was told ([`knows`](Self::knows)); shared with its detached copies.
    versions: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("instance", &self.instance)
            .field("admin", &self.admin)
            .field("proxy", &self.proxy)
            .field("token", &self.token)
            .finish()
    }
}

impl GatewayClient {
    fn of(
        instance: &Instance,
        token: AdminToken,
        proxy: SocketAddr,
        service: &str,
    ) -> Result<Self, ServiceError> {
        let admin = instance
            .endpoints()
            .into_iter()
            .next()
            .ok_or_else(|| ServiceError::NotRunning(service.to_owned()))?;
        Ok(Self::new(&admin, token, proxy, &instance.id))
    }

    /// The same gateway's client with connections of its own, for use from
    /// another async runtime (a client's pooled connections belong to the
    /// runtime that opened them).
    pub fn detached(&self) -> Self {
        let mut c = Self::new(&self.admin, self.token.clone(), self.proxy, &self.instance);
        c.versions = Arc::clone(&self.versions);
        c
    }

    /// Remember that `replicas` serve model `version`: a config this
    /// client sends names it on every variant made of them that names no
    /// version (the gateway labels the variant's measurements with it and
    /// keeps it for those replicas).
    pub fn knows(&self, replicas: &[String], version: &str) {
        let mut known = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        for r in replicas {
            known.insert(r.clone(), version.to_owned());
        }
    }

    /// A client of the admin API at `admin` (`http://127.0.0.1:PORT`) of
    /// the gateway proxying on `proxy`, the instance `instance`.
    pub fn new(admin: &str, token: AdminToken, proxy: SocketAddr, instance: &str) -> Self {
        let http = Client::builder(TokioExecutor::new())
            // Admin calls are rare and the gateway may have restarted
            // since the last one: a fresh connection each time.
            .pool_max_idle_per_host(0)
            .build(HttpConnector::new());
        GatewayClient {
            instance: instance.to_owned(),
            admin: admin.trim_end_matches('/').to_owned(),
            proxy,
            token,
            http,
            versions: Arc::default(),
        }
    }

    /// The provider's id of the gateway's instance.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The admin API's base URL.
    pub fn admin_url(&self) -> &str {
        &self.admin
    }

    /// Where the gateway proxies: clients send their requests here.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }

    /// The data plane's base URL.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// The current config.
    pub async fn config(&self) -> Result<Config, ServiceError> {
        let body = self.call(Method::GET, "/config", None).await?;
        serde_json::from_slice(&body).map_err(|e| self.http_error("GET", "/config", e))
    }

    /// Validates, applies and persists `config`; returns it as applied.
    /// Requests in flight finish under the config they started with.
    pub async fn set_config(&self, config: &Config) -> Result<Config, ServiceError> {
        let mut config = config.clone();
        {
            let known = self.versions.lock().unwrap_or_else(|e| e.into_inner());
            for v in config.variants.iter_mut().filter(|v| v.version.is_none()) {
                let mut versions = v.replicas.iter().map(|r| known.get(r));
                if let Some(Some(first)) = versions.next()
                    && versions.all(|k| k == Some(first))
                {
                    v.version = Some(first.clone());
                }
            }
        }
        let body = serde_json::to_vec(&config).map_err(|e| self.http_error("PUT", "/config", e))?;
        let body = match self.call(Method::PUT, "/config", Some(body)).await {
            // A gateway started by an older mlops does not know version
            // labels: the config goes without them (they label metrics
            // only) until it is restarted with this one.
            Err(ServiceError::Status {
                status: 400, body, ..
            }) if body.contains("unknown field `version`") => {
                for v in &mut config.variants {
                    v.version = None;
                }
                let body = serde_json::to_vec(&config)
                    .map_err(|e| self.http_error("PUT", "/config", e))?;
                self.call(Method::PUT, "/config", Some(body)).await?
            }
            other => other?,
        };
        serde_json::from_slice(&body).map_err(|e| self.http_error("PUT", "/config", e))
    }

    /// Every measurement, per variant and replica: the gateway's
    /// [`crate::gateway::MetricsSnapshot`] as JSON.
    pub async fn snapshot(&self) -> Result<serde_json::Value, ServiceError> {
        let body = self.call(Method::GET, "/snapshot", None).await?;
        serde_json::from_slice(&body).map_err(|e| self.http_error("GET", "/snapshot", e))
    }

    /// The measurements in Prometheus text.
    pub async fn metrics(&self) -> Result<String, ServiceError> {
        let body = self.call(Method::GET, "/metrics", None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn http_error(
        &self,
        method: &'static str,
        path: &str,
        e: impl std::fmt::Display,
    ) -> ServiceError {
        ServiceError::Http {
            method,
            url: format!("{}{path}", self.admin),
            detail: e.to_string(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ServiceError> {
        let name: &'static str = if method == Method::PUT { "PUT" } else { "GET" };
        let url = format!("{}{path}", self.admin);
        let has_body = body.is_some();
        let body = Bytes::from(body.unwrap_or_default());
        let request = || {
            let mut request = Request::builder().method(method.clone()).uri(&url).header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose()),
            );
            if has_body {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            request
                .body(Full::new(body.clone()))
                .map_err(|e| self.http_error(name, path, e))
        };
        let exchange = async {
            // A refused connection never reached the gateway: it is down
            // or restarting (its supervisor brings it back within a
            // second or two), so the call is made again, for a while.
            let mut wait = Duration::from_millis(100);
            let response = loop {
                match self.http.request(request()?).await {
                    Ok(r) => break r,
                    Err(e) if e.is_connect() && wait < Duration::from_secs(3) => {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    Err(e) => return Err(self.http_error(name, path, e)),
                }
            };
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| self.http_error(name, path, e))?
                .to_bytes();
            Ok::<_, ServiceError>((status, body))
        };
        let (status, body) = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
            .await
            .map_err(|_| self.http_error(name, path, "no answer within 10s"))??;
        if !status.is_success() {
            return Err(ServiceError::Status {
                method: name,
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(body)
    }
}
