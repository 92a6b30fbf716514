//! Shadow mirroring: a share of the requests the primary routing serves is
//! copied to shadow variants, and their answers are compared with the
//! primary's, recorded, and never returned.
//!
//! The copy is sent once the primary's response head has arrived, from a
//! task of its own with its own deadline, so the client never waits for a
//! shadow; the primary's body is teed as it streams to the client (the
//! first [`COMPARE_LIMIT`] bytes, by reference: no copy on the client's
//! path). At most `max-in-flight` mirrors per shadow are outstanding; past
//! that a copy is skipped. A shadow's failures eject only its own replicas.
//!
//! It owns the per-shadow counters and the comparison (status, bytes,
//! then JSON: Open Inference Protocol v2 `outputs`, or any JSON, with
//! numbers within the tolerance); the primary's request path is the
//! proxy's.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri, Version};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::config::Tolerance;
use super::metrics::{Disagreement, ShadowSnapshot};
use super::proxy::{BoxError, Guard, ProxyBody};
use super::upstream::{UpstreamBody, UpstreamError};
use super::{Active, Shared, balance};

/// The most of each body compared: a longer primary body is not compared
/// (uncompared), a longer shadow body is a failed mirror.
pub(crate) const COMPARE_LIMIT: usize = 1024 * 1024;

/// Disagreements kept per shadow, the most recent.
pub(crate) const RECENT_DISAGREEMENTS: usize = 32;

/// One shadow variant's counters; they survive reconfiguration.
#[derive(Debug, Default)]
pub(crate) struct ShadowStats {
    mirrored: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    uncompared: AtomicU64,
    compared: AtomicU64,
    agreed: AtomicU64,
    disagreed_status: AtomicU64,
    disagreed_body: AtomicU64,
    disagreed_numeric: AtomicU64,
    extremes: Mutex<Extremes>,
}

#[derive(Debug, Default)]
struct Extremes {
    max_abs: f64,
    max_rel: f64,
    recent: VecDeque<Disagreement>,
}

impl ShadowStats {
    pub(crate) fn snapshot(&self, variant: &str, active: bool) -> ShadowSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let extremes = self.extremes.lock().unwrap_or_else(|e| e.into_inner());
        ShadowSnapshot {
            variant: variant.to_owned(),
            active,
            mirrored: load(&self.mirrored),
            skipped: load(&self.skipped),
            failed: load(&self.failed),
            uncompared: load(&self.uncompared),
            compared: load(&self.compared),
            agreed: load(&self.agreed),
            disagreed_status: load(&self.disagreed_status),
            disagreed_body: load(&self.disagreed_body),
            disagreed_numeric: load(&self.disagreed_numeric),
            max_abs_difference: extremes.max_abs,
            max_rel_difference: extremes.max_rel,
            recent_disagreements: extremes.recent.iter().cloned().collect(),
        }
    }

    fn record(&self, request_id: &str, comparison: Comparison) {
        // The extremes and the ring first, then the counters: a reader that
        // sees the count sees what it counted.
        {
            let mut extremes = self.extremes.lock().unwrap_or_else(|e| e.into_inner());
            extremes.max_abs = extremes.max_abs.max(comparison.max_abs);
            extremes.max_rel = extremes.max_rel.max(comparison.max_rel);
            if let Some((kind, reason)) = comparison.verdict.disagreement() {
                if extremes.recent.len() == RECENT_DISAGREEMENTS {
                    extremes.recent.pop_front();
                }
                extremes.recent.push_back(Disagreement {
                    request_id: request_id.to_owned(),
                    kind: kind.to_owned(),
                    reason: reason.to_owned(),
                });
            }
        }
        let counter = match comparison.verdict {
            Verdict::Agreed => &self.agreed,
            Verdict::Status(_) => &self.disagreed_status,
            Verdict::Body(_) => &self.disagreed_body,
            Verdict::Numeric(_) => &self.disagreed_numeric,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.compared.fetch_add(1, Ordering::Relaxed);
    }
}

/// A shadow of the current config: its counters and its bound on
/// outstanding mirrors.
#[derive(Debug)]
pub(crate) struct ActiveShadow {
    pub(crate) stats: Arc<ShadowStats>,
    pub(crate) slots: Arc<Semaphore>,
}

/// The shadows (indexes into the compiled config's) a request is drawn
/// for, each with its share. Empty, without allocating, when none.
pub(crate) fn draw(active: &Active, rng: &balance::Rng) -> Vec<usize> {
    let mut drawn = Vec::new();
    for (i, s) in active.compiled.shadows.iter().enumerate() {
        // A uniform draw in [0, 1) at 53 bits: share 1 always, 0 never.
        let u = rng.below(1 << 53) as f64 / (1u64 << 53) as f64;
        if u < s.share {
            drawn.push(i);
        }
    }
    drawn
}

/// A request drawn for mirroring, as sent to the primary.
pub(crate) struct Pending {
    pub(crate) shadows: Vec<usize>,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// The primary answered with `status`: send the copies (those there is
/// room for) and return the primary's body, teed for them.
pub(crate) fn start(
    shared: &Arc<Shared>,
    active: &Arc<Active>,
    pending: Pending,
    request_id: &HeaderValue,
    status: StatusCode,
    body: ProxyBody,
    also: Option<oneshot::Sender<Primary>>,
) -> ProxyBody {
    let mut senders: Vec<oneshot::Sender<Primary>> = also.into_iter().collect();
    let request_id = String::from_utf8_lossy(request_id.as_bytes()).into_owned();
    for &which in &pending.shadows {
        let shadow = &active.shadows[which];
        let Ok(permit) = shadow.slots.clone().try_acquire_owned() else {
            shadow.stats.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        shadow.stats.mirrored.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        senders.push(tx);
        let mut req = Request::new(Full::new(pending.body.clone()));
        *req.method_mut() = pending.method.clone();
        *req.uri_mut() = pending.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = pending.headers.clone();
        tokio::spawn(mirror(
            shared.clone(),
            active.clone(),
            which,
            req,
            request_id.clone(),
            status,
            rx,
            permit,
        ));
    }
    if senders.is_empty() {
        return body;
    }
    Tee::new(body, senders).boxed_unsync()
}

/// The primary's body as teed: its chunks, or `None` when it was not seen
/// whole.
pub(crate) type Primary = Option<Arc<Vec<Bytes>>>;

/// `body` on its way to the client, its first [`COMPARE_LIMIT`] bytes sent
/// to `senders` at its end (for the prediction log when nothing mirrors).
pub(crate) fn tee(body: ProxyBody, senders: Vec<oneshot::Sender<Primary>>) -> ProxyBody {
    if senders.is_empty() {
        body
    } else {
        Tee::new(body, senders).boxed_unsync()
    }
}

/// One mirror, in its own task: send the copy, read the answer, wait for
/// the primary's body, compare, record.
#[allow(clippy::too_many_arguments)]
async fn mirror(
    shared: Arc<Shared>,
    active: Arc<Active>,
    which: usize,
    req: Request<Full<Bytes>>,
    request_id: String,
    primary_status: StatusCode,
    primary: oneshot::Receiver<Primary>,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let config = &active.compiled.shadows[which];
    let stats = &active.shadows[which].stats;
    let deadline = tokio::time::Instant::now() + config.timeout;
    let answer = exchange(&shared, &active, config.variant, req, deadline).await;
    let Some((status, body)) = answer else {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let primary = match tokio::time::timeout_at(deadline, primary).await {
        Ok(Ok(Some(chunks))) => chunks,
        _ => {
            stats.uncompared.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let primary_body = concat(&primary);
    let comparison = compare(
        primary_status.as_u16(),
        &primary_body,
        status.as_u16(),
        &body,
        config.tolerance,
    );
    stats.record(&request_id, comparison);
}

/// Send `req` to a healthy replica of `variant` and read its whole answer
/// by `deadline`; `None` when there is no usable one (no healthy replica,
/// a transport error, a 5xx, a body over the limit, too late). Metered on
/// the shadow variant and its replica; failures count toward ejecting
/// that replica only.
async fn exchange(
    shared: &Shared,
    active: &Active,
    variant: usize,
    req: Request<Full<Bytes>>,
    deadline: tokio::time::Instant,
) -> Option<(StatusCode, Bytes)> {
    let replicas = &active.variants[variant].replicas;
    let (index, replica) = balance::least_outstanding(replicas, &[], &shared.rng)?;
    let mut req = req;
    if let Some(host) = &replica.host
        && !req.headers().contains_key(header::HOST)
    {
        req.headers_mut().insert(header::HOST, host.clone());
    }
    let sent_bytes = req.body().size_hint().exact().unwrap_or(0);
    let request_id = req.headers().get(super::proxy::REQUEST_ID).cloned();
    let started = Instant::now();
    let variant_meter = active.variants[variant].meter.clone();
    variant_meter.start();
    replica.meter.start();
    let mut guards = [
        Guard {
            meter: variant_meter,
            started,
            status: None,
            request_id: request_id.clone(),
        },
        Guard {
            meter: replica.meter.clone(),
            started,
            status: None,
            request_id,
        },
    ];
    let policy = active.eject_policy();
    let answered = tokio::time::timeout_at(deadline, async {
        let mut conn = replica.pool.checkout(&replica.uri).await?;
        let response = conn.send(req).await?;
        let (parts, body) = response.into_parts();
        let body = UpstreamBody::new(body, conn, replica.pool.clone()).await;
        Ok::<_, UpstreamError>((parts.status, body))
    })
    .await;
    let (status, body) = match answered {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            replica.upstream_failures.fetch_add(1, Ordering::Relaxed);
            replica.failure(
                policy,
                e.is_connect(),
                balance::others_in_rotation(replicas, index),
            );
            return None;
        }
        Err(_elapsed) => {
            replica.upstream_failures.fetch_add(1, Ordering::Relaxed);
            replica.failure(policy, false, balance::others_in_rotation(replicas, index));
            return None;
        }
    };
    for g in &guards {
        g.meter.add_bytes_in(sent_bytes);
    }
    if status.is_server_error() {
        replica.failure(policy, false, balance::others_in_rotation(replicas, index));
    } else {
        replica.success();
    }
    let read = tokio::time::timeout_at(deadline, Limited::new(body, COMPARE_LIMIT).collect()).await;
    let Ok(Ok(collected)) = read else {
        // Too long, broken or too late: the answer is not counted as one.
        return None;
    };
    let body = collected.to_bytes();
    for g in &mut guards {
        g.meter.add_bytes_out(body.len() as u64);
        g.status = Some(status.as_u16());
    }
    (!status.is_server_error()).then_some((status, body))
}

fn concat(chunks: &[Bytes]) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut all = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            for c in many {
                all.extend_from_slice(c);
            }
            all.freeze()
        }
    }
}

/// The primary's response body on its way to the client, its first
/// [`COMPARE_LIMIT`] bytes kept (by reference) for the mirrors, sent to
/// them at its end (or `None` when it is longer, fails or is dropped).
struct Tee {
    inner: ProxyBody,
    chunks: Vec<Bytes>,
    len: usize,
    over: bool,
    senders: Vec<oneshot::Sender<Primary>>,
}

impl Tee {
    fn new(inner: ProxyBody, senders: Vec<oneshot::Sender<Primary>>) -> Self {
        let mut tee = Self {
            inner,
            chunks: Vec::new(),
            len: 0,
            over: false,
            senders,
        };
        // A body already at its end may never be polled.
        if tee.inner.is_end_stream() {
            tee.finish(true);
        }
        tee
    }

    fn finish(&mut self, whole: bool) {
        if self.senders.is_empty() {
            return;
        }
        let primary = (whole && !self.over).then(|| Arc::new(std::mem::take(&mut self.chunks)));
        for tx in self.senders.drain(..) {
            let _ = tx.send(primary.clone());
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && !this.over
                    && !this.senders.is_empty()
                {
                    this.len += data.len();
                    if this.len > COMPARE_LIMIT {
                        this.over = true;
                        this.chunks = Vec::new();
                    } else {
                        this.chunks.push(data.clone());
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {}
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

impl Drop for Tee {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// How a shadow's answer compares with the primary's.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    Agreed,
    /// The statuses differ.
    Status(String),
    /// The bodies differ other than in numbers.
    Body(String),
    /// A number differs beyond the tolerance.
    Numeric(String),
}

impl Verdict {
    /// `(kind, reason)` of a disagreement.
    fn disagreement(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::Agreed => None,
            Self::Status(r) => Some(("status", r)),
            Self::Body(r) => Some(("body", r)),
            Self::Numeric(r) => Some(("numeric", r)),
        }
    }
}

/// A verdict and the largest differences of the numbers compared.
#[derive(Debug)]
pub(crate) struct Comparison {
    pub(crate) verdict: Verdict,
    pub(crate) max_abs: f64,
    pub(crate) max_rel: f64,
}

/// Compare a shadow's answer with the primary's: the status; then the
/// bytes; then, when both bodies are JSON, Open Inference Protocol v2
/// responses by their `outputs` only (the model's name, version and the
/// like may differ), other JSON whole, numbers within `tolerance`.
pub(crate) fn compare(
    primary_status: u16,
    primary: &[u8],
    shadow_status: u16,
    shadow: &[u8],
    tolerance: Tolerance,
) -> Comparison {
    let mut comparison = Comparison {
        verdict: Verdict::Agreed,
        max_abs: 0.0,
        max_rel: 0.0,
    };
    if primary_status != shadow_status {
        comparison.verdict = Verdict::Status(format!(
            "status {shadow_status} where the primary answered {primary_status}"
        ));
        return comparison;
    }
    if primary == shadow {
        return comparison;
    }
    let (Ok(p), Ok(s)) = (
        serde_json::from_slice::<Value>(primary),
        serde_json::from_slice::<Value>(shadow),
    ) else {
        comparison.verdict = Verdict::Body(format!(
            "the bodies differ ({} bytes, the primary's {})",
            shadow.len(),
            primary.len()
        ));
        return comparison;
    };
    let (p, s, root) = match (oip_outputs(&p), oip_outputs(&s)) {
        (Some(p), Some(s)) => (p, s, "$.outputs"),
        _ => (&p, &s, "$"),
    };
    let mut walk = Walk {
        tolerance,
        path: Vec::new(),
        max_abs: 0.0,
        max_rel: 0.0,
        body: None,
        numeric: None,
        root,
    };
    walk.value(s, p);
    comparison.max_abs = walk.max_abs;
    comparison.max_rel = walk.max_rel;
    comparison.verdict = match (walk.body, walk.numeric) {
        (Some(r), _) => Verdict::Body(r),
        (None, Some(r)) => Verdict::Numeric(r),
        (None, None) => Verdict::Agreed,
    };
    comparison
}

/// The `outputs` array of an Open Inference Protocol v2 response.
fn oip_outputs(v: &Value) -> Option<&Value> {
    v.as_object()?.get("outputs").filter(|o| o.is_array())
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// A walk over two JSON values side by side, keeping the first structural
/// and the first numeric difference and the largest differences.
struct Walk<'a> {
    tolerance: Tolerance,
    path: Vec<Step<'a>>,
    max_abs: f64,
    max_rel: f64,
    body: Option<String>,
    numeric: Option<String>,
    root: &'static str,
}

impl<'a> Walk<'a> {
    fn at(&self) -> String {
        let mut s = self.root.to_owned();
        for step in &self.path {
            match step {
                Step::Key(k) => {
                    s.push('.');
                    s.push_str(k);
                }
                Step::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }

    fn differs(&mut self, what: impl FnOnce(&str) -> String) {
        if self.body.is_none() {
            let at = self.at();
            self.body = Some(what(&at));
        }
    }

    /// `s` from the shadow, `p` from the primary.
    fn value(&mut self, s: &'a Value, p: &'a Value) {
        match (s, p) {
            (Value::Number(a), Value::Number(b)) => {
                let (a, b) = (
                    a.as_f64().unwrap_or(f64::NAN),
                    b.as_f64().unwrap_or(f64::NAN),
                );
                let diff = (a - b).abs();
                self.max_abs = self.max_abs.max(diff);
                if b != 0.0 {
                    self.max_rel = self.max_rel.max(diff / b.abs());
                }
                let allowed = self.tolerance.absolute + self.tolerance.relative * b.abs();
                // NaN (never from JSON) fails the comparison too.
                let within = diff <= allowed;
                if !within && self.numeric.is_none() {
                    let at = self.at();
                    self.numeric = Some(format!(
                        "{at}: {a} where the primary has {b} (difference {diff}, allowed {allowed})"
                    ));
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                if a.len() != b.len() {
                    let (n, m) = (a.len(), b.len());
                    self.differs(|at| format!("{at}: {n} elements where the primary has {m}"));
                }
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    self.path.push(Step::Index(i));
                    self.value(x, y);
                    self.path.pop();
                }
            }
            (Value::Object(a), Value::Object(b)) => {
                if let Some(k) = a.keys().find(|k| !b.contains_key(*k)) {
                    self.differs(|at| format!("{at}: key {k:?} the primary does not have"));
                }
                if let Some(k) = b.keys().find(|k| !a.contains_key(*k)) {
                    self.differs(|at| format!("{at}: no key {k:?} where the primary has one"));
                }
                for (k, x) in a {
                    if let Some(y) = b.get(k) {
                        self.path.push(Step::Key(k));
                        self.value(x, y);
                        self.path.pop();
                    }
                }
            }
            (a, b) if a == b => {}
            (a, b) => {
                let (a, b) = (short(a), short(b));
                self.differs(|at| format!("{at}: {a} where the primary has {b}"));
            }
        }
    }
}

/// A JSON value for a reason, at most 40 characters of it.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::{Tolerance, Verdict, compare};

    fn tol(absolute: f64, relative: f64) -> Tolerance {
        Tolerance { absolute, relative }
    }

    #[test]
    fn status_then_bytes_then_json() {
        let t = tol(0.0, 0.0);
        assert!(matches!(
            compare(200, b"a", 500, b"a", t).verdict,
            Verdict::Status(_)
        ));
        assert_eq!(
            compare(200, b"same", 200, b"same", t).verdict,
            Verdict::Agreed
        );
        assert!(matches!(
            compare(200, b"abc", 200, b"abd", t).verdict,
            Verdict::Body(_)
        ));
        // Same JSON, other spacing and key order.
        assert_eq!(
            compare(
                200,
                br#"{"a": 1, "b": [true]}"#,
                200,
                br#"{"b":[true],"a":1}"#,
                t
            )
            .verdict,
            Verdict::Agreed
        );
    }

    #[test]
    fn oip_outputs_within_the_tolerance_agree_and_the_rest_is_ignored() {
        let primary = br#"{"model_name":"m","model_version":"1","id":"x",
            "outputs":[{"name":"y","shape":[3],"datatype":"FP64","data":[1.0, 100.0, 0.0]}]}"#;
        let near = br#"{"model_name":"m","model_version":"2","id":"x",
            "outputs":[{"name":"y","shape":[3],"datatype":"FP64","data":[1.0005, 100.09, 0.0]}]}"#;
        let c = compare(200, primary, 200, near, tol(1e-3, 1e-3));
        assert_eq!(c.verdict, Verdict::Agreed);
        assert!((c.max_abs - 0.09).abs() < 1e-9, "{c:?}");
        assert!((c.max_rel - 0.0009).abs() < 1e-9, "{c:?}");
        let c = compare(200, primary, 200, near, tol(1e-4, 0.0));
        let Verdict::Numeric(reason) = &c.verdict else {
            panic!("{c:?}")
        };
        assert!(
            reason.starts_with("$.outputs[0].data[0]: 1.0005"),
            "{reason}"
        );
        // Structure outranks numbers.
        let shorter =
            br#"{"outputs":[{"name":"y","shape":[2],"datatype":"FP64","data":[9.0, 9.0]}]}"#;
        let c = compare(200, primary, 200, shorter, tol(0.0, 0.0));
        let Verdict::Body(reason) = &c.verdict else {
            panic!("{c:?}")
        };
        assert_eq!(
            reason,
            "$.outputs[0].data: 2 elements where the primary has 3"
        );
    }

    #[test]
    fn other_json_is_compared_structurally() {
        let t = tol(0.01, 0.0);
        assert_eq!(
            compare(
                200,
                br#"{"p":[0.5,{"q":2}]}"#,
                200,
                br#"{"p":[0.505,{"q":2}]}"#,
                t
            )
            .verdict,
            Verdict::Agreed
        );
        let c = compare(200, br#"{"p":1,"r":"a"}"#, 200, br#"{"p":1,"r":"b"}"#, t);
        assert_eq!(
            c.verdict,
            Verdict::Body(r#"$.r: "b" where the primary has "a""#.to_owned())
        );
        let c = compare(200, br#"{"p":1}"#, 200, br#"{"p":1,"extra":0}"#, t);
        assert!(matches!(c.verdict, Verdict::Body(_)), "{c:?}");
    }
}
