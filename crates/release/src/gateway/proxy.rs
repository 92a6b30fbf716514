//! One proxied request: pick a variant and a replica, forward, retry or
//! fail cleanly, and meter it all.
//!
//! It owns the request path only; configuration, health and counters live
//! in the sibling modules.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};

use super::balance;
use super::config::{CompiledRoute, CompiledSticky};
use super::metrics::Meter;
use super::upstream::UpstreamBody;
use super::{Active, Shared};
use super::{predictions, shadow};

/// The error a response body may fail with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response the gateway sends.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The request id header, kept when the client sends one.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The response header naming the variant that served a request
/// ([`super::VARIANT_HEADER`]).
const VARIANT: HeaderName = HeaderName::from_static(super::VARIANT_HEADER);
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Headers that belong to one connection, never forwarded (RFC 9110
/// §7.6.1); and `Transfer-Encoding`, whose framing is the connection's
/// (hyper sets it from the body it sends).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
];

/// The client end of a connection, as forwarded: made once per connection.
#[derive(Clone)]
pub(crate) struct Peer {
    /// Its IP address, text.
    ip: HeaderValue,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            ip: HeaderValue::from_str(&addr.ip().to_string())
                .expect("an IP address is a valid header value"),
        }
    }
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: Peer,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let active = shared.active();
    let request_id = match req.headers().get(REQUEST_ID) {
        Some(v) if valid_request_id(v) => v.clone(),
        _ => new_request_id(&shared.rng),
    };
    let variant = choose_variant(&active, &shared, req.headers());
    let meter = active.variants[variant].meter.clone();
    meter.start();
    let mut guards = Guards {
        variant: Guard {
            meter,
            started,
            status: None,
            request_id: Some(request_id.clone()),
        },
        replica: None,
    };
    let response = forward(
        &shared,
        &active,
        variant,
        peer,
        req,
        &request_id,
        &mut guards,
    )
    .await;
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(REQUEST_ID, request_id);
    // Which variant served it, so that a client measuring the release (the
    // request driver of a canary step) can tell the variants apart.
    if let Some(name) = &active.compiled.variants[variant].header {
        parts.headers.insert(VARIANT, name.clone());
    }
    guards.variant.status = Some(parts.status.as_u16());
    let metered = Metered {
        inner: body,
        replica: guards.replica,
        guard: guards.variant,
    };
    Ok(Response::from_parts(parts, metered.boxed_unsync()))
}

/// Send the request to a replica of `variant`, retrying where that is
/// safe; every failure becomes a response.
async fn forward(
    shared: &Arc<Shared>,
    active: &Arc<Active>,
    variant: usize,
    peer: Peer,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    guards: &mut Guards,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let limit = active.compiled.max_body_bytes;
    let (parts, body) = req.into_parts();
    if parts.method == Method::CONNECT {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported: this is a reverse proxy\n".to_owned(),
        );
    }
    // A declared length over the limit is refused before a byte of the
    // body is read.
    if body.size_hint().lower() > limit {
        return too_large(limit);
    }
    // Buffered (never past the limit) so that a retry can send it again;
    // none (a GET, a `Content-Length: 0`) is not read at all.
    let body = if body.is_end_stream() {
        Bytes::new()
    } else {
        // A client that sends its body slowly holds a connection and a
        // buffer: it gets the body-read time and no more (408).
        let read = tokio::time::timeout(
            active.compiled.body_timeout,
            Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).collect(),
        )
        .await;
        match read {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(limit),
            Ok(Err(_)) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "could not read the request body\n".to_owned(),
                );
            }
            Err(_elapsed) => {
                return plain(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} ms\n",
                        active.compiled.body_timeout.as_millis()
                    ),
                );
            }
        }
    };
    guards.variant.meter.add_bytes_in(body.len() as u64);

    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    // An HTTP/2 client names the host in `:authority`; the replica speaks
    // HTTP/1.1 and reads `Host`.
    if !headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    // The body is already read (the client got its 100 Continue, if it
    // asked, from our server): the replica is not asked again.
    headers.remove(header::EXPECT);
    headers.insert(REQUEST_ID, request_id.clone());
    let forwarded_for = match headers.get(FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => HeaderValue::from_str(&format!(
            "{prior}, {}",
            peer.ip.to_str().unwrap_or_default()
        ))
        .ok(),
        None => Some(peer.ip),
    };
    if let Some(v) = forwarded_for {
        headers.insert(FORWARDED_FOR, v);
    }
    // Origin form, the client's path and query.
    let uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()));
    // Drawn for mirroring: a copy of the request as the primary gets it.
    let drawn = shadow::draw(active, &shared.rng);
    let mut mirror = (!drawn.is_empty()).then(|| shadow::Pending {
        shadows: drawn,
        method: parts.method.clone(),
        uri: uri.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let mut headers = Some(headers);
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    let policy = active.eject_policy();
    let replicas = &active.variants[variant].replicas;
    let name = &active.compiled.variants[variant].name;
    // Replicas that failed this request; allocated only for a retry.
    let mut tried = Vec::new();
    loop {
        let Some((index, replica)) = balance::least_outstanding(replicas, &tried, &shared.rng)
        else {
            return if tried.is_empty() {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "no healthy replica in variant {name:?}: all {} out of rotation \
                         (ejected or failing health checks)\n",
                        replicas.len()
                    ),
                )
            } else {
                plain(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "no replica of variant {name:?} could be reached ({} tried)\n",
                        tried.len()
                    ),
                )
            };
        };
        let last_chance = tried.len() + 1 == replicas.len();
        let mut upstream = Request::new(Full::new(body.clone()));
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri.clone();
        *upstream.version_mut() = Version::HTTP_11;
        // The last replica there is to try gets the headers themselves.
        let Some(request_headers) = (if last_chance {
            headers.take()
        } else {
            headers.clone()
        }) else {
            unreachable!("no replica is tried twice, so the headers are taken last")
        };
        *upstream.headers_mut() = request_headers;
        if let Some(host) = &replica.host
            && !upstream.headers().contains_key(header::HOST)
        {
            upstream.headers_mut().insert(header::HOST, host.clone());
        }
        replica.meter.start();
        let mut replica_guard = Guard {
            meter: replica.meter.clone(),
            started: Instant::now(),
            status: None,
            request_id: Some(request_id.clone()),
        };
        let sent = tokio::time::timeout(active.compiled.upstream_timeout, async {
            let mut conn = replica.pool.checkout(&replica.uri).await?;
            let response = conn.send(upstream).await?;
            let (parts, body) = response.into_parts();
            let body = UpstreamBody::new(body, conn, replica.pool.clone()).await;
            Ok::<_, super::upstream::UpstreamError>(Response::from_parts(parts, body))
        })
        .await;
        match sent {
            Ok(Ok(response)) => {
                replica.meter.add_bytes_in(body.len() as u64);
                let status = response.status();
                if status.is_server_error() {
                    replica.failure(policy, false, balance::others_in_rotation(replicas, index));
                } else {
                    replica.success();
                }
                replica_guard.status = Some(status.as_u16());
                let (mut parts, response_body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let mut response_body = response_body.boxed_unsync();
                // A sampled request goes to the prediction log with its
                // answer, once the answer has been sent whole.
                let sample = active
                    .predictions
                    .as_ref()
                    .filter(|l| l.sample())
                    .map(|log| {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        tokio::spawn(predictions::record(
                            predictions::Sampled {
                                log: log.clone(),
                                request_id: String::from_utf8_lossy(request_id.as_bytes())
                                    .into_owned(),
                                variant: name.clone(),
                                version: active.compiled.variants[variant].version.clone(),
                                status: status.as_u16(),
                                started,
                                request: body.clone(),
                            },
                            rx,
                        ));
                        tx
                    });
                if let Some(pending) = mirror.take() {
                    response_body = shadow::start(
                        shared,
                        active,
                        pending,
                        request_id,
                        status,
                        response_body,
                        sample,
                    );
                } else if let Some(tx) = sample {
                    response_body = shadow::tee(response_body, vec![tx]);
                }
                let body = response_body;
                guards.replica = Some(replica_guard);
                return Response::from_parts(parts, body);
            }
            Ok(Err(e)) => {
                replica
                    .upstream_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                replica.failure(
                    policy,
                    e.is_connect(),
                    balance::others_in_rotation(replicas, index),
                );
                drop(replica_guard);
                tried.push(index);
                // A failed connect never sent the request, so any method
                // may go again; any other transport failure may have sent
                // it, so only idempotent methods do (RFC 9110 §9.2.2).
                if idempotent || e.is_connect() {
                    continue;
                }
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!("upstream {} failed: {}\n", replica.url, error_chain(&e)),
                );
            }
            Err(_elapsed) => {
                // Sent, most likely, but never answered.
                replica.meter.add_bytes_in(body.len() as u64);
                replica
                    .upstream_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                replica.failure(policy, false, balance::others_in_rotation(replicas, index));
                return plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "upstream {} did not answer within {} ms\n",
                        replica.url,
                        active.compiled.upstream_timeout.as_millis()
                    ),
                );
            }
        }
    }
}

/// The variant for a request: the first matching route, else by weight.
fn choose_variant(active: &Active, shared: &Shared, headers: &HeaderMap) -> usize {
    let compiled = &active.compiled;
    // One variant: nothing to choose (a route can only name it).
    if compiled.variants.len() == 1 {
        return 0;
    }
    for route in &compiled.routes {
        match route {
            CompiledRoute::Header {
                name,
                value,
                variant,
            } => {
                if headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| v.trim() == value))
                {
                    return *variant;
                }
            }
            CompiledRoute::Cookie {
                name,
                value,
                variant,
            } => {
                if cookie(headers, name).is_some_and(|v| v == value) {
                    return *variant;
                }
            }
        }
    }
    let key = match &compiled.sticky {
        Some(CompiledSticky::Cookie(name)) => cookie(headers, name).map(str::as_bytes),
        Some(CompiledSticky::Header(name)) => headers.get(name).map(HeaderValue::as_bytes),
        None => None,
    };
    let total = compiled.total_weight;
    let mut point = match key {
        Some(key) => ((u128::from(balance::stable_hash(key)) * u128::from(total)) >> 64) as u64,
        None => shared.rng.below(total),
    };
    for (i, v) in compiled.variants.iter().enumerate() {
        let w = u64::from(v.weight);
        if point < w {
            return i;
        }
        point -= w;
    }
    unreachable!("a point below the total weight falls in some variant")
}

/// The value of cookie `name`, from any `Cookie` header.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one pass over the few names there are
    // (comparing known names is cheap), rather than a lookup for each.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// 32 random hex digits.
fn new_request_id(rng: &balance::Rng) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (half, word) in id
        .chunks_exact_mut(16)
        .zip([rng.next_u64(), rng.next_u64()])
    {
        for (i, digit) in half.iter_mut().enumerate() {
            *digit = HEX[((word >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
    HeaderValue::from_bytes(&id).expect("hex is a valid header value")
}

/// Kept from the client when short and printable; else replaced.
fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// 413, closing the connection: the rest of the body is never read.
fn too_large(limit: u64) -> Response<ProxyBody> {
    let mut r = plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over the {limit}-byte limit\n"),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A response the gateway makes itself.
fn plain(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// One started request on one meter; recorded when dropped (the end of the
/// response body, or the client going away).
pub(crate) struct Guard {
    pub(crate) meter: Arc<Meter>,
    pub(crate) started: Instant,
    pub(crate) status: Option<u16>,
    /// The request's id, for the meter's exemplars.
    pub(crate) request_id: Option<HeaderValue>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.meter.finish(
            self.status,
            self.started.elapsed(),
            self.request_id.as_ref().map(HeaderValue::as_bytes),
        );
    }
}

/// A request's guards: its variant's, and the replica's that answered.
struct Guards {
    variant: Guard,
    replica: Option<Guard>,
}

/// A response body that counts its bytes into its guards' meters and
/// records it when it ends.
struct Metered {
    inner: ProxyBody,
    /// The replica's, when one answered (recorded first).
    replica: Option<Guard>,
    /// The variant's.
    guard: Guard,
}

impl Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            if let Some(replica) = &self.replica {
                replica.meter.add_bytes_out(n);
            }
            self.guard.meter.add_bytes_out(n);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
