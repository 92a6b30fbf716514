//! Load from several generator processes: a worker serves runs over HTTP,
//! a coordinator splits one run among workers and merges their results
//! exactly ([`super::merge`]).
//!
//! A worker listens for `POST /run` with `Authorization: Bearer TOKEN` and
//! a [`RunSpec`] as JSON; it runs the load and answers with the
//! [`LoadResult`] (histograms included). One run at a time (409 while
//! busy), 401 without the token (nothing runs), 400 for a spec that does
//! not compile, `GET /health` open. The token travels in clear over plain
//! HTTP: on another host, reach the worker through a tunnel or a private
//! network.
//!
//! The coordinator ([`run_on_workers`]) gives each of `n` workers `1/n` of
//! the load — the open workload's rates divided, the closed workload's
//! users and the request bound shared out — sends every spec at once and
//! waits for all.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use mlops_release::driver::{DriverSettings, RateStage, Samples, Workload};
use mlops_release::gateway::AdminToken;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::result::{LoadResult, run};

/// The largest spec a worker reads (bodies included).
const MAX_SPEC_BYTES: usize = 64 * 1024 * 1024;

/// A run for a worker: everything [`DriverSettings`] holds, the bodies
/// included, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The target URL.
    pub url: String,
    /// The HTTP method.
    pub method: String,
    /// Extra headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// An open workload's stages; `None` for a closed one.
    pub stages: Option<Vec<RateStage>>,
    /// A closed workload's users.
    pub users: Option<usize>,
    /// A closed workload's think time, in ms.
    #[serde(default)]
    pub think_ms: u64,
    /// A closed workload's duration, in ms.
    #[serde(default)]
    pub duration_ms: u64,
    /// Keep-alive connections of an open workload.
    pub connections: usize,
    /// Per-request timeout, in ms.
    pub timeout_ms: u64,
    /// The most requests.
    pub max_requests: u64,
    /// The request bodies, base64, cycled in order.
    pub bodies: Vec<String>,
}

/// Why a remote run failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A worker URL that is not `http://host:port`.
    #[error("worker `{0}` is not an http://host:port url")]
    WorkerUrl(String),
    /// The worker could not be reached or broke the connection.
    #[error("worker {worker}: {reason}")]
    Unreachable {
        /// The worker.
        worker: String,
        /// What happened.
        reason: String,
    },
    /// The worker refused the run.
    #[error("worker {worker} answered {status}: {body}")]
    Refused {
        /// The worker.
        worker: String,
        /// Its status.
        status: u16,
        /// What it said.
        body: String,
    },
    /// The run does not compile.
    #[error("the run: {0}")]
    Spec(String),
    /// The worker's answer is not a result.
    #[error("worker {worker} answered something that is not a load result: {reason}")]
    Answer {
        /// The worker.
        worker: String,
        /// Why.
        reason: String,
    },
}

impl RunSpec {
    /// The spec of `settings` with `samples`.
    pub fn new(settings: &DriverSettings, samples: &Samples) -> Self {
        let (stages, users, think_ms, duration_ms) = match &settings.workload {
            Workload::Open { stages } => (Some(stages.clone()), None, 0, 0),
            Workload::Closed {
                users,
                think,
                duration,
            } => (None, Some(*users), millis(*think), millis(*duration)),
        };
        Self {
            url: settings.url.clone(),
            method: settings.method.clone(),
            headers: settings.headers.clone(),
            stages,
            users,
            think_ms,
            duration_ms,
            connections: settings.connections,
            timeout_ms: millis(settings.timeout),
            max_requests: settings.max_requests,
            bodies: samples.bodies().iter().map(|b| BASE64.encode(b)).collect(),
        }
    }

    /// The settings and samples it describes (checked when compiled).
    pub fn settings(&self) -> Result<(DriverSettings, Samples), String> {
        let workload = match (&self.stages, self.users) {
            (Some(stages), None) => Workload::Open {
                stages: stages.clone(),
            },
            (None, Some(users)) => Workload::Closed {
                users,
                think: Duration::from_millis(self.think_ms),
                duration: Duration::from_millis(self.duration_ms),
            },
            _ => return Err("a spec has either `stages` (open) or `users` (closed)".to_owned()),
        };
        let mut settings = DriverSettings::with_workload(&self.url, workload, self.max_requests);
        settings.method.clone_from(&self.method);
        settings.headers.clone_from(&self.headers);
        settings.connections = self.connections;
        settings.timeout = Duration::from_millis(self.timeout_ms);
        settings.keep_second_histograms = true;
        let bodies = self
            .bodies
            .iter()
            .map(|b| BASE64.decode(b).map(Bytes::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("a body is not base64: {e}"))?;
        let samples = Samples::from_bodies(bodies).map_err(|e| e.to_string())?;
        Ok((settings, samples))
    }

    /// The whole run's planned requests, and how long a worker may take to
    /// answer it: its duration, its per-request timeout and ten seconds.
    pub fn bounds(&self) -> Result<(u64, Duration), RemoteError> {
        let (settings, samples) = self.settings().map_err(RemoteError::Spec)?;
        let driver = settings
            .compile(samples)
            .map_err(|e| RemoteError::Spec(e.to_string()))?;
        let deadline = settings.workload.duration() + settings.timeout + Duration::from_secs(10);
        Ok((driver.planned_requests(), deadline))
    }

    /// The `index`th of `n` equal shares (`index` from 0): rates divided
    /// by `n`; users and the request bound shared out, the first shares
    /// taking the remainder (a share may get no users: it is `None` then).
    ///
    /// `planned` is the whole run's planned requests (the driver's
    /// [`mlops_release::driver::Driver::planned_requests`]): the shares'
    /// bounds add up to it, so rounding each share's schedule up sends no
    /// request more than one generator would.
    pub fn share(&self, index: usize, n: usize, planned: u64) -> Option<Self> {
        let part = |total: u64| -> u64 {
            let (n, i) = (n as u64, index as u64);
            total / n + u64::from(i < total % n)
        };
        let mut spec = self.clone();
        spec.max_requests = part(self.max_requests.min(planned));
        if let Some(stages) = &mut spec.stages {
            for stage in stages {
                stage.from /= n as f64;
                stage.to /= n as f64;
            }
        }
        if let Some(users) = self.users {
            let mine = part(users as u64) as usize;
            if mine == 0 {
                return None;
            }
            spec.users = Some(mine);
        }
        (spec.max_requests > 0).then_some(spec)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Serves runs on `listener` until `stop`, each needing `token`.
pub async fn serve_worker(listener: TcpListener, token: AdminToken, stop: CancellationToken) {
    let token = Arc::new(token);
    let busy = Arc::new(AtomicBool::new(false));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let (token, busy, stop) = (Arc::clone(&token), Arc::clone(&busy), stop.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (token, busy, stop) = (Arc::clone(&token), Arc::clone(&busy), stop.clone());
                async move { Ok::<_, Infallible>(answer(request, &token, &busy, &stop).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    connections.abort_all();
}

/// Marks the worker free when dropped.
struct Free<'a>(&'a AtomicBool);

impl Drop for Free<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response
}

async fn answer(
    request: Request<Incoming>,
    token: &AdminToken,
    busy: &AtomicBool,
    stop: &CancellationToken,
) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/health") => return text(StatusCode::OK, "ok\n"),
        (&Method::POST, "/run") => {}
        (_, "/run") => return text(StatusCode::METHOD_NOT_ALLOWED, "POST /run\n"),
        _ => return text(StatusCode::NOT_FOUND, "GET /health, POST /run\n"),
    }
    let authorized = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|t| token.matches(t));
    if !authorized {
        return text(
            StatusCode::UNAUTHORIZED,
            "POST /run needs `Authorization: Bearer TOKEN` (the worker's token file)\n",
        );
    }
    let body = match Limited::new(request.into_body(), MAX_SPEC_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")),
    };
    let spec: RunSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("not a run spec: {e}\n")),
    };
    let driver = match spec
        .settings()
        .and_then(|(settings, samples)| settings.compile(samples).map_err(|e| e.to_string()))
    {
        Ok(driver) => driver,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    if busy.swap(true, Ordering::AcqRel) {
        return text(StatusCode::CONFLICT, "a run is under way\n");
    }
    // Free again however the run ends: a coordinator that goes away drops
    // this future, which abandons the run.
    let _free = Free(busy);
    let result = run(&driver, stop, None).await;
    match result.map(|r| serde_json::to_vec(&r)) {
        Ok(Ok(json)) => {
            let mut response = text(StatusCode::OK, String::new());
            *response.body_mut() = Full::new(Bytes::from(json));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, "application/json".parse().expect("valid"));
            response
        }
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// Splits `spec` among `workers` (`http://host:port`), runs every share at
/// once and returns their results, in the workers' order.
pub async fn run_on_workers(
    workers: &[String],
    token: &AdminToken,
    spec: &RunSpec,
) -> Result<Vec<LoadResult>, RemoteError> {
    let mut targets = Vec::new();
    for worker in workers {
        let uri: Uri = worker
            .parse()
            .map_err(|_| RemoteError::WorkerUrl(worker.clone()))?;
        let authority = match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(a)) if a.port_u16().is_some() => a.clone(),
            _ => return Err(RemoteError::WorkerUrl(worker.clone())),
        };
        targets.push((worker.clone(), authority));
    }
    let n = targets.len();
    let (planned, deadline) = spec.bounds()?;
    let mut calls = tokio::task::JoinSet::new();
    for (i, (worker, authority)) in targets.into_iter().enumerate() {
        let Some(share) = spec.share(i, n, planned) else {
            continue;
        };
        let body = serde_json::to_vec(&share).expect("a spec serializes");
        let bearer = format!("Bearer {}", token.expose());
        calls.spawn(async move {
            // A worker that never answers is given up on: a run always
            // ends by itself.
            let result = match tokio::time::timeout(
                deadline,
                call(&worker, &authority, &bearer, body),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(RemoteError::Unreachable {
                    worker: worker.clone(),
                    reason: format!(
                        "no answer within {} s (the run's duration, its timeout and ten seconds)",
                        deadline.as_secs()
                    ),
                }),
            };
            (i, result)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (i, result) = joined.expect("a worker call does not panic");
        results.push((i, result?));
    }
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

async fn call(
    worker: &str,
    authority: &hyper::http::uri::Authority,
    bearer: &str,
    body: Vec<u8>,
) -> Result<LoadResult, RemoteError> {
    let unreachable = |reason: String| RemoteError::Unreachable {
        worker: worker.to_owned(),
        reason,
    };
    let stream = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| unreachable(format!("cannot connect: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::builder()
        .method(Method::POST)
        .uri("/run")
        .header(HOST, authority.as_str())
        .header(AUTHORIZATION, bearer)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(format!("the run broke off: {e}")))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(format!("the answer broke off: {e}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(RemoteError::Refused {
            worker: worker.to_owned(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).trim().to_owned(),
        });
    }
    let result: LoadResult = serde_json::from_slice(&bytes).map_err(|e| RemoteError::Answer {
        worker: worker.to_owned(),
        reason: e.to_string(),
    })?;
    result.check(1).map_err(|e| RemoteError::Answer {
        worker: worker.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(result)
}
