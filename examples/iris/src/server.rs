//! The model server: hyper 1 HTTP/1.1 on loopback (or on every interface of
//! a container), Open Inference Protocol v2 endpoints, Prometheus metrics,
//! graceful shutdown and a lifetime limit.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::cli::{self, FlagSpec, Flags};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::prom::{self, ServerMetrics};
use crate::{fsutil, hash, oip};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default `--max-lifetime`.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(600);
/// Time allowed to receive request headers or a request body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time open connections get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of `iris serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// Model file to serve.
    pub model: PathBuf,
    /// Address to bind: 127.0.0.1, or 0.0.0.0 inside a container (see
    /// [`parse_host`]).
    pub host: IpAddr,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Where to write the bound port once listening.
    pub port_file: Option<PathBuf>,
    /// The server stops by itself after this long.
    pub max_lifetime: Duration,
    /// Start detached and return once healthy.
    pub background: bool,
    /// Pid file (background mode).
    pub pid_file: Option<PathBuf>,
    /// Log file of the detached server (background mode).
    pub log_file: Option<PathBuf>,
}

impl ServeOptions {
    const FLAGS: &[FlagSpec] = &[
        FlagSpec::value("model"),
        FlagSpec::value("host"),
        FlagSpec::value("port"),
        FlagSpec::value("port-file"),
        FlagSpec::value("max-lifetime"),
        FlagSpec::switch("background"),
        FlagSpec::value("pid-file"),
        FlagSpec::value("log-file"),
    ];

    /// Parses the flags of `iris serve`.
    pub fn from_args(args: &[String]) -> Result<Self> {
        let flags = Flags::parse("serve", Self::FLAGS, args)?;
        let host =
            parse_host(flags.get("host").unwrap_or("127.0.0.1")).map_err(|err| flags.error(err))?;
        let max_lifetime = flags.duration_or("max-lifetime", DEFAULT_MAX_LIFETIME)?;
        if max_lifetime.is_zero() {
            return Err(flags.error("--max-lifetime must be greater than zero"));
        }
        let options = Self {
            model: flags.required_path("model")?,
            host,
            port: flags.parse_or("port", 0u16)?,
            port_file: flags.path("port-file"),
            max_lifetime,
            background: flags.switch("background"),
            pid_file: flags.path("pid-file"),
            log_file: flags.path("log-file"),
        };
        if options.background && options.pid_file.is_none() {
            return Err(flags.error("--background needs --pid-file"));
        }
        if !options.background && (options.pid_file.is_some() || options.log_file.is_some()) {
            return Err(flags.error("--pid-file and --log-file are only used with --background"));
        }
        Ok(options)
    }

    /// The flags that start the same server in the foreground (used by `--background`).
    pub fn foreground_args(&self, port_file: &Path) -> Vec<String> {
        vec![
            "serve".to_owned(),
            "--model".to_owned(),
            self.model.display().to_string(),
            "--host".to_owned(),
            self.host.to_string(),
            "--port".to_owned(),
            self.port.to_string(),
            "--port-file".to_owned(),
            port_file.display().to_string(),
            "--max-lifetime".to_owned(),
            cli::format_duration(self.max_lifetime),
        ]
    }
}

/// Accepts `127.0.0.1`, `localhost` or `0.0.0.0`; rejects everything else
/// with a reason.
///
/// `0.0.0.0` (every interface) is for running inside a container: there the
/// interfaces are the container's own, and whoever starts it publishes the
/// port on the host's 127.0.0.1 only (as the mlops Docker provider does), so
/// nothing is reachable from the network. Any other address is refused: a
/// non-loopback one would expose the server to the network, and clients
/// would not find it on another loopback address (`::1`, `127.0.0.2`), since
/// they learn only the port from the port file.
pub fn parse_host(text: &str) -> std::result::Result<IpAddr, String> {
    if text == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let ip: IpAddr = text
        .parse()
        .map_err(|_| format!("--host must be an ip address such as 127.0.0.1, got '{text}'"))?;
    if ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
        return Ok(ip);
    }
    if !ip.is_loopback() {
        return Err(format!(
            "refusing to listen on non-loopback address {ip}: this example server binds to 127.0.0.1 (or to 0.0.0.0 inside a container whose port is published on 127.0.0.1)"
        ));
    }
    if ip != IpAddr::V4(Ipv4Addr::LOCALHOST) {
        return Err(format!(
            "--host must be 127.0.0.1 (got {ip}): clients find the server through a port file that records only the port"
        ));
    }
    Ok(ip)
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct ServerState {
    model: Model,
    version: String,
    metrics: Mutex<ServerMetrics>,
}

impl ServerState {
    /// State for serving `model`, whose file content hashes to `version`.
    pub fn new(model: Model, version: String) -> Self {
        let metrics = Mutex::new(ServerMetrics::new(&version, &model.classes));
        Self {
            model,
            version,
            metrics,
        }
    }

    /// The served model version.
    pub fn version(&self) -> &str {
        &self.version
    }

    fn metrics(&self) -> std::sync::MutexGuard<'_, ServerMetrics> {
        self.metrics.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `iris serve` in the foreground until SIGTERM, SIGINT or `--max-lifetime`.
pub async fn serve(options: &ServeOptions) -> Result<()> {
    let (model, bytes) = Model::load(&options.model)?;
    let version = hash::model_version(&bytes);
    let state = Arc::new(ServerState::new(model, version));

    // Install signal handlers before announcing the port, so that a stop
    // request arriving right after startup is handled gracefully.
    let mut sigterm = signal(SignalKind::terminate()).map_err(|err| {
        Error::new(format!(
            "cannot install the SIGTERM handler: {}",
            fsutil::io_reason(&err)
        ))
    })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|err| {
        Error::new(format!(
            "cannot install the SIGINT handler: {}",
            fsutil::io_reason(&err)
        ))
    })?;
    let max_lifetime = options.max_lifetime;
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => "received SIGTERM".to_owned(),
            _ = sigint.recv() => "received SIGINT".to_owned(),
            () = tokio::time::sleep(max_lifetime) => {
                format!("max lifetime of {} reached", cli::format_duration(max_lifetime))
            }
        }
    };

    let addr = SocketAddr::new(options.host, options.port);
    let listener = TcpListener::bind(addr).await.map_err(|err| {
        Error::new(format!(
            "cannot listen on {addr}: {}",
            fsutil::io_reason(&err)
        ))
    })?;
    let bound = listener.local_addr().map_err(|err| {
        Error::new(format!(
            "cannot read the bound address: {}",
            fsutil::io_reason(&err)
        ))
    })?;
    if let Some(port_file) = &options.port_file {
        fsutil::write_atomic(
            port_file,
            format!("{}\n", bound.port()).as_bytes(),
            "port file",
        )?;
    }
    eprintln!(
        "serve: model '{}' version {} listening on http://{bound} (pid {}, max lifetime {})",
        oip::MODEL_NAME,
        state.version,
        std::process::id(),
        cli::format_duration(options.max_lifetime)
    );

    run(listener, Arc::clone(&state), shutdown).await;

    if let Some(port_file) = &options.port_file {
        // Only remove the port file if it still names this server.
        let ours = std::fs::read_to_string(port_file)
            .is_ok_and(|text| text.trim() == bound.port().to_string());
        if ours {
            let _ = fsutil::remove_if_exists(port_file);
        }
    }
    eprintln!(
        "serve: stopped after {} requests",
        state.metrics().total_requests()
    );
    Ok(())
}

/// Serves connections from `listener` until `shutdown` resolves (with a
/// reason to log), then stops accepting and gives open connections
/// a few seconds to finish their current request.
pub async fn run(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = String>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone of `done_tx`; `done_rx.recv()`
    // returns `None` once all of them have finished.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .keep_alive(true);

    tokio::pin!(shutdown);
    let reason = loop {
        tokio::select! {
            reason = &mut shutdown => break reason,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(err) => {
                        // Typically out of file descriptors: back off briefly.
                        eprintln!("serve: accept failed: {}", fsutil::io_reason(&err));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                let service = service_fn(move |request| handle(Arc::clone(&state), request));
                let connection = http.serve_connection(TokioIo::new(stream), service);
                let mut stop = stop_rx.clone();
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let _done = done;
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        () = async {
                            // Drop the watch guard before awaiting anything else.
                            let _ = stop.wait_for(|stopping| *stopping).await;
                        } => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
        }
    };
    eprintln!("serve: {reason}, shutting down");
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    if tokio::time::timeout(DRAIN_TIMEOUT, done_rx.recv())
        .await
        .is_err()
    {
        eprintln!("serve: some connections did not finish within {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// The routes the server knows; their paths double as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Live,
    Ready,
    ServerMetadata,
    ModelMetadata,
    ModelReady,
    Infer,
    Metrics,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Health => "/health",
            Route::Live => "/v2/health/live",
            Route::Ready => "/v2/health/ready",
            Route::ServerMetadata => "/v2",
            Route::ModelMetadata => "/v2/models/iris",
            Route::ModelReady => "/v2/models/iris/ready",
            Route::Infer => "/v2/models/iris/infer",
            Route::Metrics => "/metrics",
        }
    }

    fn allow_header(self) -> &'static str {
        if self == Route::Infer {
            "POST"
        } else {
            "GET, HEAD"
        }
    }

    fn method(self) -> Method {
        if self == Route::Infer {
            Method::POST
        } else {
            Method::GET
        }
    }
}

/// Maps a path to a route, or a 404 message.
fn route(path: &str, version: &str) -> std::result::Result<Route, String> {
    let trimmed = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    match segments.as_slice() {
        ["health"] => Ok(Route::Health),
        ["metrics"] => Ok(Route::Metrics),
        ["v2"] => Ok(Route::ServerMetadata),
        ["v2", "health", "live"] => Ok(Route::Live),
        ["v2", "health", "ready"] => Ok(Route::Ready),
        ["v2", "models", name, rest @ ..] => {
            if *name != oip::MODEL_NAME {
                return Err(format!(
                    "model '{name}' not found; this server serves '{}'",
                    oip::MODEL_NAME
                ));
            }
            let rest = match rest {
                ["versions", v, rest @ ..] if *v == version => rest,
                ["versions", v, ..] => {
                    return Err(format!(
                        "model '{}' has no version '{v}'; the served version is '{version}'",
                        oip::MODEL_NAME
                    ));
                }
                rest => rest,
            };
            match rest {
                [] => Ok(Route::ModelMetadata),
                ["ready"] => Ok(Route::ModelReady),
                ["infer"] => Ok(Route::Infer),
                _ => Err(format!("no such endpoint: {path}")),
            }
        }
        _ => Err(format!("no such endpoint: {path}")),
    }
}

type HttpResponse = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    respond(
        status,
        "application/json",
        serde_json::to_vec(body).unwrap_or_default(),
    )
}

fn error_response(status: StatusCode, message: &str) -> HttpResponse {
    json_response(status, &oip::error_body(message))
}

async fn handle(
    state: Arc<ServerState>,
    request: Request<Incoming>,
) -> std::result::Result<HttpResponse, Infallible> {
    let started = Instant::now();
    // The gateway's request id, carried into this server's log.
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (label, response) = dispatch(&state, request).await;
    let elapsed = started.elapsed().as_secs_f64();
    state
        .metrics()
        .record_request(label, response.status().as_u16(), elapsed);
    // One JSON line per inference (health and metrics checks are not
    // logged: they come every second).
    if label == Route::Infer.label() {
        eprintln!(
            "{}",
            json!({
                "event": "request",
                "request_id": request_id,
                "path": label,
                "status": response.status().as_u16(),
                "latency_ms": elapsed * 1000.0,
                "model_version": state.version,
            })
        );
    }
    Ok(response)
}

/// Handles one request; returns the metric label of the route and the response.
async fn dispatch(state: &ServerState, request: Request<Incoming>) -> (&'static str, HttpResponse) {
    let route = match route(request.uri().path(), &state.version) {
        Ok(route) => route,
        Err(message) => return ("other", error_response(StatusCode::NOT_FOUND, &message)),
    };
    let method = request.method();
    let allowed = route.method();
    let method_ok = *method == allowed || (allowed == Method::GET && *method == Method::HEAD);
    if !method_ok {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "method {method} is not allowed on {} (use {allowed})",
                route.label()
            ),
        );
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static(route.allow_header()),
        );
        return (route.label(), response);
    }
    let response = match route {
        Route::Health => json_response(StatusCode::OK, &json!({"status": "ok"})),
        Route::Live => json_response(StatusCode::OK, &json!({"live": true})),
        Route::Ready => json_response(StatusCode::OK, &json!({"ready": true})),
        Route::ServerMetadata => json_response(
            StatusCode::OK,
            &json!({"name": "iris-server", "version": env!("CARGO_PKG_VERSION"), "extensions": []}),
        ),
        Route::ModelMetadata => json_response(
            StatusCode::OK,
            &oip::model_metadata(&state.model, &state.version),
        ),
        Route::ModelReady => json_response(
            StatusCode::OK,
            &json!({"name": oip::MODEL_NAME, "ready": true}),
        ),
        Route::Metrics => respond(StatusCode::OK, prom::CONTENT_TYPE, state.metrics().render()),
        Route::Infer => infer(state, request).await,
    };
    (route.label(), response)
}

async fn infer(state: &ServerState, request: Request<Incoming>) -> HttpResponse {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body exceeds the 1 MiB limit",
        );
    }
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(READ_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body exceeds the 1 MiB limit",
            );
        }
        Ok(Err(err)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("cannot read request body: {err}"),
            );
        }
        Err(_) => {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                "timed out reading the request body",
            );
        }
    };
    let parsed = match oip::parse_infer_request(&bytes, state.model.n_features()) {
        Ok(parsed) => parsed,
        Err(err) => return error_response(StatusCode::BAD_REQUEST, err.message()),
    };
    let (body, labels) = oip::infer(&state.model, &state.version, &parsed);
    state.metrics().record_predictions(&labels);
    json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/health", "v1"), Ok(Route::Health));
        assert_eq!(route("/health/", "v1"), Ok(Route::Health));
        assert_eq!(route("/v2/models/iris", "v1"), Ok(Route::ModelMetadata));
        assert_eq!(route("/v2/models/iris/infer", "v1"), Ok(Route::Infer));
        assert_eq!(
            route("/v2/models/iris/versions/v1/infer", "v1"),
            Ok(Route::Infer)
        );
        assert!(
            route("/v2/models/iris/versions/v0/infer", "v1")
                .unwrap_err()
                .contains("no version 'v0'")
        );
        assert!(
            route("/v2/models/cats/infer", "v1")
                .unwrap_err()
                .contains("model 'cats' not found")
        );
        assert!(route("/", "v1").is_err());
        assert!(route("/v2/models/iris/explain", "v1").is_err());
    }

    #[test]
    fn host_must_be_loopback_or_unspecified() {
        assert_eq!(parse_host("127.0.0.1"), Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(parse_host("localhost"), Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(parse_host("0.0.0.0"), Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        assert!(parse_host("::").unwrap_err().contains("non-loopback"));
        assert!(parse_host("10.0.0.1").unwrap_err().contains("non-loopback"));
        assert!(
            parse_host("192.168.1.5")
                .unwrap_err()
                .contains("non-loopback")
        );
        assert!(parse_host("::1").unwrap_err().contains("must be 127.0.0.1"));
        assert!(
            parse_host("example.com")
                .unwrap_err()
                .contains("must be an ip address")
        );
    }

    #[test]
    fn serve_flags() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let options =
            ServeOptions::from_args(&args(&["--model", "m.json", "--max-lifetime", "90s"]))
                .unwrap();
        assert_eq!(options.max_lifetime, Duration::from_secs(90));
        assert_eq!(options.port, 0);
        let err =
            ServeOptions::from_args(&args(&["--model", "m.json", "--background"])).unwrap_err();
        assert!(err.message().contains("--background needs --pid-file"));
        let options =
            ServeOptions::from_args(&args(&["--model", "m.json", "--host", "0.0.0.0"])).unwrap();
        assert_eq!(options.host, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let err = ServeOptions::from_args(&args(&["--model", "m.json", "--host", "192.168.1.5"]))
            .unwrap_err();
        assert!(err.message().contains("non-loopback"));
        let err =
            ServeOptions::from_args(&args(&["--model", "m.json", "--port", "70000"])).unwrap_err();
        assert!(err.message().contains("invalid value '70000' for --port"));
    }
}
