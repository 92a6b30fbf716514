//! The admin API, on a loopback listener: `GET /health`, `GET /metrics`
//! (Prometheus text), `GET /snapshot` (the measurements as JSON),
//! `GET /config`, and `PUT /config`, which needs
//! `Authorization: Bearer <token>`; [`AdminHooks`] let the caller persist
//! an accepted config before it applies and log what happens.
//!
//! It owns the admin token: made from /dev/urandom, kept in a file only
//! its owner reads, compared in constant time, never printed (its `Debug`
//! is redacted).

use std::convert::Infallible;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::balance::read_urandom;
use super::proxy::ProxyBody;
use super::{Config, Gateway, GatewayError};

/// The token file's name in the directory the caller gives
/// (e.g. `.mlops/release/admin.token`).
pub const TOKEN_FILE: &str = "admin.token";

/// Largest `PUT /config` body.
const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// The bearer token that authorizes changes through the admin API. (No
/// `PartialEq`: compare with [`matches`](Self::matches), in constant time.)
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A fresh token: 32 random bytes from /dev/urandom, hex.
    pub fn generate() -> io::Result<Self> {
        let mut bytes = [0u8; 32];
        read_urandom(&mut bytes)?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The token's text, for a client to send. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this token, in time independent of where
    /// they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

/// The token in `dir`/[`TOKEN_FILE`], created (with `dir`) when missing:
/// 32 random bytes as 64 hex digits, mode 0600 from the start, never
/// logged. An existing file is used only if it holds such a token and
/// only its owner can read it. Two processes racing get the same token.
pub fn ensure_token_file(dir: &Path) -> Result<AdminToken, GatewayError> {
    let path = token_path(dir);
    let err = |source| GatewayError::Token {
        path: path.clone(),
        source,
    };
    match read_token_file(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        read => return read.map_err(err),
    }
    fs::create_dir_all(dir).map_err(|source| GatewayError::Token {
        path: dir.to_owned(),
        source,
    })?;
    // Written whole under a private name, then linked into place: the link
    // fails if another process got there first, and a reader never sees a
    // half-written token.
    let token = AdminToken::generate().map_err(err)?;
    let mut nonce = [0u8; 8];
    read_urandom(&mut nonce).map_err(err)?;
    let staging = dir.join(format!(".{TOKEN_FILE}.{:016x}", u64::from_le_bytes(nonce)));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staging)
        .and_then(|mut file| {
            file.write_all(format!("{}\n", token.0).as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| fs::hard_link(&staging, &path));
    let _ = fs::remove_file(&staging);
    match written {
        Ok(()) => Ok(token),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_token_file(&path).map_err(err),
        Err(e) => Err(err(e)),
    }
}

fn read_token_file(path: &Path) -> io::Result<AdminToken> {
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("readable by others (mode {:o}); chmod 600 it", mode & 0o777),
        ));
    }
    let text = fs::read_to_string(path)?;
    let token = text.trim();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a 64-hex-digit token",
        ));
    }
    Ok(AdminToken(token.to_owned()))
}

/// The token file's path in `dir`.
pub fn token_path(dir: &Path) -> PathBuf {
    dir.join(TOKEN_FILE)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // The length is not secret (every token has 64 digits); the contents
    // are compared in full whatever the first difference.
    if a.len() != b.len() {
        return false;
    }
    // black_box keeps the optimizer from turning the fold into an early
    // exit at the first difference.
    a.iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y))
        == 0
}

/// Called with a `PUT /config`'s config once it is valid, before it is
/// applied or answered (from a blocking thread: it may write files). An
/// `Err` is answered 500 with its text, and the config in force stays.
pub type ConfigHook = Box<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

/// Given each admin event: its name and its fields, as a JSON object.
/// Never given the token.
pub type EventSink = Box<dyn Fn(&str, serde_json::Value) + Send + Sync>;

/// What a caller of [`Gateway::serve_admin_with`] adds to the admin API.
///
/// Events: `admin-unauthorized` (`method`, `path`) when a change lacks the
/// token; `config-rejected` (`reason`: `invalid-json`, `invalid-config` or
/// `not-persisted`, and `detail`); `config-applied` (`variants`: name,
/// weight and replica count of each).
#[derive(Default)]
pub struct AdminHooks {
    /// Persists (or otherwise accepts) a new config before it takes effect.
    pub on_config: Option<ConfigHook>,
    /// Where events go.
    pub on_event: Option<EventSink>,
}

impl std::fmt::Debug for AdminHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHooks")
            .field("on_config", &self.on_config.is_some())
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

/// What an event says about a config: variants, weights and replica
/// counts.
pub(crate) fn config_summary(config: &Config) -> serde_json::Value {
    serde_json::json!(
        config
            .variants
            .iter()
            .map(|v| serde_json::json!({
                "name": v.name,
                "weight": v.weight,
                "replicas": v.replicas.len(),
            }))
            .collect::<Vec<_>>()
    )
}

/// The admin API of one gateway.
pub(crate) struct Admin {
    gateway: Gateway,
    token: AdminToken,
    hooks: AdminHooks,
    /// One `PUT /config` at a time, so that what `on_config` was given
    /// last is the config in force.
    put: tokio::sync::Mutex<()>,
}

impl Admin {
    pub(crate) fn new(gateway: Gateway, token: AdminToken, hooks: AdminHooks) -> Self {
        Admin {
            gateway,
            token,
            hooks,
            put: tokio::sync::Mutex::new(()),
        }
    }

    fn event(&self, event: &str, fields: serde_json::Value) {
        if let Some(sink) = &self.hooks.on_event {
            sink(event, fields);
        }
    }

    fn reject(&self, reason: &str, detail: &str) {
        self.event(
            "config-rejected",
            serde_json::json!({ "reason": reason, "detail": detail }),
        );
    }
}

/// Whether the scraper accepts OpenMetrics (Prometheus asks for it first;
/// `q=0` refuses it).
fn wants_openmetrics(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            parts.next() == Some("application/openmetrics-text")
                && !parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
}

pub(crate) async fn handle(
    admin: Arc<Admin>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let gateway = &admin.gateway;
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") if wants_openmetrics(&req) => respond(
            StatusCode::OK,
            super::metrics::OPENMETRICS_TEXT,
            super::metrics::openmetrics_text(&gateway.snapshot()),
        ),
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            super::metrics::PROMETHEUS_TEXT,
            gateway.prometheus_text(),
        ),
        (&Method::GET, "/snapshot") => json(StatusCode::OK, &gateway.snapshot()),
        (&Method::GET, "/config") => json(StatusCode::OK, &*gateway.config()),
        (&Method::PUT, "/config") => put_config(&admin, req).await,
        (_, "/health" | "/metrics" | "/snapshot" | "/config") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /health, /metrics, /snapshot or /config\n",
        ),
    };
    Ok(response)
}

async fn put_config(admin: &Arc<Admin>, req: Request<Incoming>) -> Response<ProxyBody> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()));
    if !presented.is_some_and(|p| admin.token.matches(p)) {
        admin.event(
            "admin-unauthorized",
            serde_json::json!({ "method": "PUT", "path": "/config" }),
        );
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "a valid `Authorization: Bearer <token>` is required\n",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let body = match Limited::new(req.into_body(), MAX_CONFIG_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "config body unreadable or over 1 MiB\n",
            );
        }
    };
    let config: Config = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            admin.reject("invalid-json", &e.to_string());
            return plain(
                StatusCode::BAD_REQUEST,
                format!("invalid config JSON: {e}\n"),
            );
        }
    };
    let _one = admin.put.lock().await;
    let config = admin.gateway.with_known_versions(config);
    let compiled = match Gateway::validate(&config) {
        Ok(c) => c,
        Err(e) => {
            admin.reject("invalid-config", &e.to_string());
            return plain(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n"));
        }
    };
    // Before it applies and before the answer: a config the hook refuses
    // (one that could not be persisted) is not accepted.
    if admin.hooks.on_config.is_some() {
        let accepted = tokio::task::spawn_blocking({
            let (admin, config) = (admin.clone(), config.clone());
            move || {
                admin
                    .hooks
                    .on_config
                    .as_ref()
                    .map_or(Ok(()), |f| f(&config))
            }
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = accepted {
            admin.reject("not-persisted", &e);
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the config was not applied: {e}\n"),
            );
        }
    }
    let summary = config_summary(&config);
    admin.gateway.apply(config, compiled);
    admin.event("config-applied", serde_json::json!({ "variants": summary }));
    json(StatusCode::OK, &*admin.gateway.config())
}

/// The credentials of `Bearer <token>` (the scheme is case-insensitive,
/// RFC 9110 §11.1).
fn bearer(authorization: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = authorization.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<ProxyBody> {
    match serde_json::to_string_pretty(value) {
        Ok(s) => respond(status, "application/json", s + "\n"),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    plain(status, body.to_owned())
}

fn plain(status: StatusCode, body: String) -> Response<ProxyBody> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
