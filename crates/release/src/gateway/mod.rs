//! The release gateway's data plane: an HTTP/1.1 reverse proxy in front of
//! a model's variants (`stable` and `canary`, `blue` and `green`…), each a
//! pool of replicas.
//!
//! A [`Gateway`] holds the current [`Config`] and the live state (replica
//! health, [`metrics`]). [`Gateway::serve`] runs the proxy on a listener,
//! [`Gateway::serve_admin`] the loopback admin API (`/health`, `/metrics`,
//! `/config`; [`Gateway::serve_admin_with`] with [`AdminHooks`]).
//! [`Gateway::set_config`] swaps the config atomically: a request keeps the
//! config it started with, so reconfiguration drops nothing in flight.
//!
//! Routing: the first matching header or cookie [`Route`], else a weighted
//! choice among variants (sticky by a hashed cookie or header value when
//! configured), then the replica in rotation with the fewest outstanding
//! requests. Failures: 413 over the body limit, 504 past the upstream
//! timeout, retries of idempotent requests on another replica after a
//! transport failure, passive ejection with back-off, active health
//! checks when configured ([`HealthCheck`]), 503 when a variant has no
//! replica in rotation. Every response the proxy returns (the
//! upstream's or one the gateway made, 503 and 504 included) carries
//! [`VARIANT_HEADER`] naming the variant chosen for the request, so that a
//! client measuring a release can tell the variants apart.
//!
//! Running it as a service of the release environment (supervised by the
//! provider, its config persisted across restarts) is [`crate::service`]'s.
//! Shadow mirroring ([`Shadow`]): a share of the requests is copied to
//! weight-0 shadow variants from a task of its own once the primary's
//! response head arrives; the answers are compared with the primary's
//! (status, body, numbers within a tolerance) and recorded in the
//! snapshot, never returned, and never delay or fail the client.
//!
//! Not here: HTTP/2, upgrades (WebSocket), TLS. Request
//! bodies are buffered up to the limit (so that a retry can resend them);
//! response bodies stream.

mod admin;
mod balance;
mod config;
mod health;
pub mod metrics;
mod predictions;
mod proxy;
mod shadow;
mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) use admin::config_summary;
pub use admin::{
    AdminHooks, AdminToken, ConfigHook, EventSink, TOKEN_FILE, ensure_token_file, token_path,
};
/// The response header naming the variant that served a request
/// (`x-mlops-variant: canary`): set on every proxied response, replacing an
/// upstream's header of that name.
pub const VARIANT_HEADER: &str = "x-mlops-variant";

pub use config::{Config, HealthCheck, Route, Shadow, Sticky, Tolerance, Variant};
pub use metrics::{
    Disagreement, LatencySummary, MeterSnapshot, MetricsSnapshot, PredictionLogSnapshot,
    ReplicaHealth, ReplicaSnapshot, ShadowSnapshot, StatusClasses, VariantSnapshot,
};
pub use predictions::PredictionLogConfig;

use balance::{EjectPolicy, Replica, Rng};
use config::Compiled;
use metrics::Meter;
use shadow::{ActiveShadow, ShadowStats};

/// The most client connections the proxy serves at once.
const MAX_CONNECTIONS: usize = 10_000;

/// Requests in flight on one HTTP/2 connection at most.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// What can go wrong configuring or starting the gateway. (Failures of
/// single requests are HTTP responses, never errors here.)
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The config is invalid; every problem, one per entry.
    #[error("invalid gateway config: {}", .0.join("; "))]
    InvalidConfig(Vec<String>),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The admin API must listen on a loopback address.
    #[error("the admin listener must be on a loopback address, not {0}")]
    AdminNotLoopback(SocketAddr),
    /// The admin token file could not be read or written.
    #[error("admin token file {path}")]
    Token {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running gateway: the current config and the live state behind it.
/// Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    active: RwLock<Arc<Active>>,
    /// Live state by variant name, kept across reconfigurations.
    state: Mutex<State>,
    rng: Rng,
    epoch: Instant,
    /// The active health checks' task, once something serves.
    prober: Mutex<Option<JoinHandle<()>>>,
    /// Told of every new config, so that probing follows it at once.
    health_changed: Arc<tokio::sync::Notify>,
}

/// The probe task holds the gateway weakly and sleeps on
/// `health_changed` (without health checks, until a new config): wake it
/// when the gateway goes, so it ends instead of keeping the runtime busy
/// (`mlops gateway` waits for its tasks before it exits).
impl Drop for Shared {
    fn drop(&mut self) {
        self.health_changed.notify_one();
    }
}

#[derive(Debug, Default)]
struct State {
    /// In first-seen order.
    variants: Vec<VariantState>,
    /// Mirroring counters by shadow variant name, in first-seen order.
    shadows: Vec<(String, Arc<ShadowStats>)>,
    /// The open prediction log, kept across configs with the same one.
    predictions: Option<Arc<predictions::PredictionLog>>,
    /// The model version each replica URL was last given with.
    versions: std::collections::HashMap<String, String>,
}

#[derive(Debug)]
struct VariantState {
    name: String,
    meter: Arc<Meter>,
    /// In first-seen order.
    replicas: Vec<Arc<Replica>>,
}

/// One config with the live state it routes to; requests hold an `Arc`.
#[derive(Debug)]
struct Active {
    config: Arc<Config>,
    compiled: Compiled,
    variants: Vec<ActiveVariant>,
    /// One per `compiled.shadows`, in its order.
    shadows: Vec<ActiveShadow>,
    /// The prediction log, when the config has one (and it could be
    /// opened).
    predictions: Option<Arc<predictions::PredictionLog>>,
}

#[derive(Debug)]
struct ActiveVariant {
    meter: Arc<Meter>,
    replicas: Vec<Arc<Replica>>,
}

impl Active {
    fn eject_policy(&self) -> EjectPolicy {
        EjectPolicy {
            after: self.compiled.eject_after,
            base: self.compiled.eject_base,
            max: self.compiled.eject_max,
        }
    }
}

impl Gateway {
    /// A gateway serving `config` (nothing listens until [`serve`](Self::serve)).
    pub fn new(config: Config) -> Result<Self, GatewayError> {
        let epoch = Instant::now();
        let mut state = State::default();
        let compiled = config::compile(&config).map_err(GatewayError::InvalidConfig)?;
        let active = state.activate(config, compiled, epoch);
        Ok(Self {
            shared: Arc::new(Shared {
                active: RwLock::new(Arc::new(active)),
                state: Mutex::new(state),
                rng: Rng::new(balance::os_seed()),
                epoch,
                prober: Mutex::new(None),
                health_changed: Arc::new(tokio::sync::Notify::new()),
            }),
        })
    }

    /// Validate `config` and make it current. Requests already routed
    /// finish under the config they started with; replicas that stay keep
    /// their health and counters. An invalid config changes nothing.
    pub fn set_config(&self, config: Config) -> Result<(), GatewayError> {
        let config = self.with_known_versions(config);
        let compiled = Self::validate(&config)?;
        self.apply(config, compiled);
        Ok(())
    }

    /// `config` with each variant that names no version given the one its
    /// replicas were last given with, when they all agree: a release step
    /// that moves known replicas between variants keeps their version.
    pub fn with_known_versions(&self, mut config: Config) -> Config {
        let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        for v in config.variants.iter_mut().filter(|v| v.version.is_none()) {
            let mut known = v.replicas.iter().map(|r| state.versions.get(r));
            if let Some(Some(first)) = known.next()
                && known.all(|k| k == Some(first))
            {
                v.version = Some(first.clone());
            }
        }
        config
    }

    /// `config` checked and compiled, not yet applied.
    fn validate(config: &Config) -> Result<Compiled, GatewayError> {
        config::compile(config).map_err(GatewayError::InvalidConfig)
    }

    /// Makes `config`, compiled by [`validate`](Self::validate), current.
    fn apply(&self, config: Config, compiled: Compiled) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let active = Arc::new(state.activate(config, compiled, self.shared.epoch));
        *self
            .shared
            .active
            .write()
            .unwrap_or_else(|e| e.into_inner()) = active;
        drop(state);
        self.shared.health_changed.notify_one();
    }

    /// The current config.
    pub fn config(&self) -> Arc<Config> {
        self.shared.active().config.clone()
    }

    /// Every measurement, per variant and per replica.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let active = self.shared.active();
        let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let is_active_variant = |name: &str| active.config.variants.iter().find(|v| v.name == name);
        MetricsSnapshot {
            variants: state
                .variants
                .iter()
                .map(|v| {
                    let current = is_active_variant(&v.name);
                    VariantSnapshot {
                        name: v.name.clone(),
                        active: current.is_some(),
                        version: current.and_then(|c| c.version.clone()),
                        meter: v.meter.snapshot(&active.compiled.latency_bounds),
                        replicas: v
                            .replicas
                            .iter()
                            .map(|r| {
                                let probe = *r.probe.lock().unwrap_or_else(|e| e.into_inner());
                                ReplicaSnapshot {
                                    url: r.url.clone(),
                                    active: current.is_some_and(|c| c.replicas.contains(&r.url)),
                                    meter: r.meter.snapshot(&active.compiled.latency_bounds),
                                    upstream_failures: r
                                        .upstream_failures
                                        .load(std::sync::atomic::Ordering::Relaxed),
                                    ejections: r
                                        .ejections
                                        .load(std::sync::atomic::Ordering::Relaxed),
                                    ejected: r.is_ejected(),
                                    health: probe.health,
                                    health_checks_passed: probe.passed,
                                    health_checks_failed: probe.failed,
                                    in_rotation: r.in_rotation(),
                                }
                            })
                            .collect(),
                    }
                })
                .collect(),
            shadows: state
                .shadows
                .iter()
                .map(|(name, stats)| {
                    let active = active.config.shadows.iter().any(|s| &s.variant == name);
                    stats.snapshot(name, active)
                })
                .collect(),
            predictions: active.config.prediction_log.as_ref().map(|want| {
                let open = active.predictions.as_ref();
                PredictionLogSnapshot {
                    path: want.path.display().to_string(),
                    open: open.is_some(),
                    written: open
                        .map_or(0, |l| l.written.load(std::sync::atomic::Ordering::Relaxed)),
                    dropped: open
                        .map_or(0, |l| l.dropped.load(std::sync::atomic::Ordering::Relaxed)),
                }
            }),
        }
    }

    /// The measurements as Prometheus text exposition.
    pub fn prometheus_text(&self) -> String {
        metrics::prometheus_text(&self.snapshot())
    }

    /// Bind `addr` and proxy on it.
    pub async fn bind(&self, addr: SocketAddr) -> Result<ServerHandle, GatewayError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })?;
        Ok(self.serve(listener))
    }

    /// Proxy on `listener` until the handle is shut down. The first call
    /// also starts the active health checks' task (idle while the config
    /// has none), which runs until the gateway is dropped.
    ///
    /// Connections are accepted on the caller's runtime and served by
    /// worker threads of the gateway's own, one per core, each a
    /// single-threaded runtime (as nginx runs a worker process per core):
    /// a connection, its requests and their upstream connections stay on
    /// one thread, so that no wake-up crosses threads on the request path.
    /// Connections go to the workers in turn. The workers end when the
    /// handle is shut down (or dropped) and their connections have closed.
    pub fn serve(&self, listener: TcpListener) -> ServerHandle {
        health::ensure_running(&self.shared);
        let shared = self.shared.clone();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        spawn_server(listener, workers, move |peer| {
            let shared = shared.clone();
            // Per connection, not per request.
            let peer = proxy::Peer::new(peer);
            service_fn(move |req| proxy::handle(shared.clone(), peer.clone(), req))
        })
    }

    /// Bind the admin API on `addr`, which must be loopback. Reading
    /// (`GET /health`, `/metrics`, `/snapshot`, `/config`) is open to local
    /// clients; `PUT /config` needs `Authorization: Bearer <token>`.
    pub async fn serve_admin(
        &self,
        addr: SocketAddr,
        token: AdminToken,
    ) -> Result<ServerHandle, GatewayError> {
        if !addr.ip().is_loopback() {
            return Err(GatewayError::AdminNotLoopback(addr));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })?;
        self.serve_admin_with(listener, token, AdminHooks::default())
    }

    /// The admin API, as [`serve_admin`](Self::serve_admin), on `listener`
    /// (which must be bound to a loopback address), with `hooks`: a config
    /// `PUT` is given to `on_config` once valid and applies only if it
    /// returns `Ok`; events go to `on_event`. Changes are serialized.
    pub fn serve_admin_with(
        &self,
        listener: TcpListener,
        token: AdminToken,
        hooks: AdminHooks,
    ) -> Result<ServerHandle, GatewayError> {
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        if !addr.ip().is_loopback() {
            return Err(GatewayError::AdminNotLoopback(addr));
        }
        let admin = Arc::new(admin::Admin::new(self.clone(), token, hooks));
        Ok(spawn_server(listener, 0, move |_peer| {
            let admin = admin.clone();
            service_fn(move |req| admin::handle(admin.clone(), req))
        }))
    }
}

impl Shared {
    fn active(&self) -> Arc<Active> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl State {
    /// The live state for `config`, reusing what its variants and replicas
    /// already have.
    fn activate(&mut self, config: Config, compiled: Compiled, epoch: Instant) -> Active {
        for v in &config.variants {
            if let Some(version) = &v.version {
                for r in &v.replicas {
                    self.versions.insert(r.clone(), version.clone());
                }
            }
        }
        let variants = compiled
            .variants
            .iter()
            .map(|cv| {
                let pos = match self.variants.iter().position(|v| v.name == cv.name) {
                    Some(p) => p,
                    None => {
                        self.variants.push(VariantState {
                            name: cv.name.clone(),
                            meter: Arc::new(Meter::new()),
                            replicas: Vec::new(),
                        });
                        self.variants.len() - 1
                    }
                };
                let vs = &mut self.variants[pos];
                let replicas = cv
                    .replicas
                    .iter()
                    .map(
                        |(url, uri)| match vs.replicas.iter().find(|r| &r.url == url) {
                            Some(r) => r.clone(),
                            None => {
                                let r = Arc::new(Replica::new(url.clone(), uri.clone(), epoch));
                                vs.replicas.push(r.clone());
                                r
                            }
                        },
                    )
                    .collect();
                ActiveVariant {
                    meter: vs.meter.clone(),
                    replicas,
                }
            })
            .collect::<Vec<ActiveVariant>>();
        // Replicas that left the config keep their counters, not their
        // idle connections. Without health checks nothing is out of
        // rotation by its probes.
        for vs in &self.variants {
            for r in &vs.replicas {
                if compiled.health.is_none() {
                    health::reset(r);
                }
                let kept = variants
                    .iter()
                    .any(|v| v.replicas.iter().any(|a| Arc::ptr_eq(a, r)));
                if !kept {
                    r.pool.clear();
                }
            }
        }
        let shadows = compiled
            .shadows
            .iter()
            .map(|cs| {
                let name = &compiled.variants[cs.variant].name;
                let stats = match self.shadows.iter().find(|(n, _)| n == name) {
                    Some((_, stats)) => stats.clone(),
                    None => {
                        let stats = Arc::new(ShadowStats::default());
                        self.shadows.push((name.clone(), stats.clone()));
                        stats
                    }
                };
                ActiveShadow {
                    stats,
                    slots: Arc::new(tokio::sync::Semaphore::new(cs.max_in_flight as usize)),
                }
            })
            .collect();
        // The log stays open while the config keeps it; one that cannot
        // be opened samples nothing (the snapshot says so).
        let predictions = match &config.prediction_log {
            None => None,
            Some(want) => match &self.predictions {
                Some(open) if open.config == *want => Some(open.clone()),
                _ => predictions::PredictionLog::open(want.clone()).ok(),
            },
        };
        self.predictions = predictions.clone();
        Active {
            config: Arc::new(config),
            compiled,
            variants,
            shadows,
            predictions,
        }
    }
}

/// A listener's accept loop, running until [`shutdown`](Self::shutdown)
/// or until the handle is dropped (which stops it the same way, without
/// waiting).
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// A permit per connection it may serve; those missing are held by
    /// open connections.
    slots: Arc<tokio::sync::Semaphore>,
}

impl ServerHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting, let requests in flight finish (connections close
    /// after their current response), and wait for the accept loop.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// As [`shutdown`](Self::shutdown), then wait up to `limit` for the
    /// open connections to finish their requests (an admin `PUT /config`
    /// under way is answered, its hook run, before this returns). Whether
    /// every connection closed in time.
    pub async fn drain(self, limit: Duration) -> bool {
        let slots = self.slots.clone();
        self.shutdown().await;
        let all = u32::try_from(MAX_CONNECTIONS).expect("MAX_CONNECTIONS fits in u32");
        matches!(
            tokio::time::timeout(limit, slots.acquire_many(all)).await,
            Ok(Ok(_))
        )
    }
}

/// Accept connections on `listener`, serving each over HTTP/1.1 with the
/// service `make` builds for its peer: on `workers` threads of its own
/// (taking turns), or on the caller's runtime when 0 (or when the threads
/// cannot be started).
fn spawn_server<F, S>(listener: TcpListener, workers: usize, make: F) -> ServerHandle
where
    F: Fn(SocketAddr) -> S + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<proxy::ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let local_addr = listener
        .local_addr()
        .expect("a bound listener has a local address");
    let (stop, mut stopped) = watch::channel(false);
    // At most this many client connections at once: past it the gateway
    // stops accepting (clients wait in the kernel's backlog) instead of
    // spending memory and descriptors without bound.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let held = slots.clone();
    let mut threads = start_workers::<S>(workers);
    let task = tokio::spawn(async move {
        let mut turn = 0usize;
        loop {
            let slot = tokio::select! {
                _ = stopped.changed() => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    // Out of file descriptors and the like: back off, go on.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let job = Job {
                service: make(peer),
                stopped: stopped.clone(),
                slot,
            };
            if threads.is_empty() {
                tokio::spawn(job.serve(stream));
                continue;
            }
            // Handed over unregistered: the worker registers it with its
            // own reactor.
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            turn = (turn + 1) % threads.len();
            if let Err(returned) = threads[turn].send((stream, job)) {
                // That worker is gone (its runtime failed): serve here.
                threads.swap_remove(turn);
                let (stream, job) = returned.0;
                if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                    tokio::spawn(job.serve(stream));
                }
            }
        }
        // Dropping the senders lets the workers finish their connections
        // and end.
        drop(threads);
    });
    ServerHandle {
        local_addr,
        stop,
        task,
        slots: held,
    }
}

/// A connection to serve, with what it needs besides its socket.
struct Job<S> {
    service: S,
    stopped: watch::Receiver<bool>,
    /// Its place among [`MAX_CONNECTIONS`], given back when it closes.
    slot: tokio::sync::OwnedSemaphorePermit,
}

impl<S> Job<S>
where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<proxy::ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    /// Serve HTTP/1.1 on `stream`, or HTTP/2 when the client opens with
    /// its preface (h2c with prior knowledge: TLS is not the gateway's to
    /// end), until it closes, or gracefully (the requests in flight
    /// answered) once the server stops.
    async fn serve(self, stream: tokio::net::TcpStream) {
        let Self {
            service,
            mut stopped,
            slot,
        } = self;
        let _slot = slot;
        if opens_with_h2_preface(&stream).await {
            let conn =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
                    .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopped.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            return;
        }
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = stopped.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

/// Whether the client opened with HTTP/2's connection preface (without
/// consuming it). HTTP/1 is known from its first byte; a client that sends
/// nothing for 30 s is served as HTTP/1, whose header timeout then closes
/// it.
async fn opens_with_h2_preface(stream: &tokio::net::TcpStream) -> bool {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 24];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 || buf[..n] != PREFACE[..n] {
            return false;
        }
        if n == PREFACE.len() {
            return true;
        }
        // Part of the preface so far: wait for the rest.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

type WorkerQueue<S> = tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, Job<S>)>;

/// `n` worker threads, each serving the connections sent to it on a
/// single-threaded runtime of its own until its sender is dropped and its
/// connections have closed. Fewer (none) if threads cannot be started.
fn start_workers<S>(n: usize) -> Vec<WorkerQueue<S>>
where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<proxy::ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut queues = Vec::with_capacity(n);
    for index in 0..n {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            break;
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, Job<S>)>();
        let started = std::thread::Builder::new()
            .name(format!("mlops-gateway-{index}"))
            .spawn(move || {
                upstream::set_worker(index);
                runtime.block_on(async move {
                    let mut connections = tokio::task::JoinSet::new();
                    loop {
                        tokio::select! {
                            job = rx.recv() => match job {
                                Some((stream, job)) => {
                                    if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                                        connections.spawn(job.serve(stream));
                                    }
                                }
                                None => break,
                            },
                            Some(_) = connections.join_next(), if !connections.is_empty() => {}
                        }
                    }
                    while connections.join_next().await.is_some() {}
                });
            });
        if started.is_err() {
            break;
        }
        queues.push(tx);
    }
    queues
}
