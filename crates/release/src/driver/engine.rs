//! The engine: one task per connection, each taking the next due request
//! when it is free, so at most `connections` requests are in flight and a
//! request that finds every connection busy waits, its latency running from
//! when it was due.
//!
//! A worker holds one keep-alive HTTP/1 connection (hyper's low-level
//! client, so the bound on connections is exact), opens it on first use and
//! again after any failure, and drops it when a request times out. The
//! worker's own task drives the connection's I/O (the gateway's upstream
//! [`Conn`]): no task per connection, so no wake-up between tasks, often
//! between threads, per request.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::Request;
use hyper::body::{Body as _, Incoming};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::report::{ObservedResponse, SecondBucket, StopReason, TrafficRun};
use super::schedule::Schedule;
use super::settings::Plan;
use super::tally::{Outcome, Tally};
use crate::gateway::upstream::{Conn, connect_to};

/// What the workers of one run share.
struct Shared {
    plan: Arc<Plan>,
    start: Instant,
    observer: Option<mpsc::Sender<ObservedResponse>>,
    tally: Mutex<Tally>,
}

impl Shared {
    fn tally(&self) -> MutexGuard<'_, Tally> {
        // A worker panicking while it holds the lock leaves counts that are
        // still counts; the panic itself is re-raised by `drive`.
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Who hears of a run as it goes.
#[derive(Default)]
pub(super) struct Hooks {
    /// Every response, with its body.
    pub(super) observer: Option<mpsc::Sender<ObservedResponse>>,
    /// Every second of the schedule, as it closes.
    pub(super) seconds: Option<mpsc::UnboundedSender<SecondBucket>>,
}

/// Runs `plan` to its end or until `stop`.
pub(super) async fn drive(plan: Arc<Plan>, stop: CancellationToken, hooks: Hooks) -> TrafficRun {
    let start = Instant::now();
    let most = match &plan.schedule {
        Schedule::Open(arrivals) => arrivals.planned,
        Schedule::Closed { .. } => plan.max_requests,
    };
    let workers = plan
        .connections
        .min(usize::try_from(most).unwrap_or(usize::MAX));
    let mut tally = Tally::new(
        plan.schedule.clone(),
        plan.max_requests,
        start,
        plan.keep_second_histograms,
    );
    if let Some(seconds) = hooks.seconds {
        tally.watch(seconds);
    }
    let observer = hooks.observer;
    let shared = Arc::new(Shared {
        tally: Mutex::new(tally),
        plan,
        start,
        observer,
    });
    // Dropping the set (when the caller drops this future) aborts the
    // workers, which drops their connections.
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        tasks.spawn(work(Arc::clone(&shared), stop.clone()));
    }
    let mut cancelled = false;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Finished::Completed) => {}
            Ok(Finished::Cancelled) => cancelled = true,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => cancelled = true,
        }
    }
    let elapsed = start.elapsed();
    let shared = Arc::into_inner(shared).expect("every worker has ended");
    let tally = shared
        .tally
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let stopped = if cancelled {
        StopReason::Cancelled
    } else {
        StopReason::Completed
    };
    tally.finish(
        shared.plan.target.url.clone(),
        shared.plan.method.to_string(),
        elapsed,
        stopped,
    )
}

/// How a worker ended.
enum Finished {
    Completed,
    Cancelled,
}

/// One connection's worth of the run.
///
/// The worker's timers and its wait for cancellation are made once and
/// reused: a deadline that only moves later is re-armed without touching
/// the runtime's timer wheel, so a request costs no timer registration.
async fn work(shared: Arc<Shared>, stop: CancellationToken) -> Finished {
    let plan = &*shared.plan;
    let capture = shared.observer.is_some().then_some(plan.capture_limit);
    // A closed workload's pause, and when its users stop: a pause never
    // runs past the end of the run.
    let (think, end) = match plan.schedule {
        Schedule::Closed {
            think, duration, ..
        } if !think.is_zero() => (Some(think), shared.start + duration),
        _ => (None, shared.start),
    };
    let mut cancelled = std::pin::pin!(stop.cancelled());
    // When the next request is due, and when the one in flight times out.
    let mut wake = std::pin::pin!(tokio::time::sleep_until(shared.start));
    let mut expiry = std::pin::pin!(tokio::time::sleep_until(shared.start));
    let mut connection = None;
    let mut next = shared.tally().next_ticket();
    loop {
        let Some(ticket) = next.take() else {
            return Finished::Completed;
        };
        let due = shared.start + ticket.due;
        let (sample, body) = plan.samples.for_request(ticket.index);
        let deadline = due + plan.timeout;
        if Instant::now() < due {
            wake.as_mut().reset(due);
            tokio::select! {
                biased;
                () = &mut cancelled => {
                    shared.tally().abandon(&ticket);
                    return Finished::Cancelled;
                }
                () = &mut wake => {}
            }
        }
        let (outcome, captured) = if Instant::now() >= deadline {
            // Due so long ago that it timed out waiting for this worker:
            // leave the connection alone rather than start a request only
            // to cut it off.
            (Outcome::Timeout { sent: 0 }, None)
        } else {
            expiry.as_mut().reset(deadline);
            tokio::select! {
                biased;
                () = &mut cancelled => {
                    shared.tally().abandon(&ticket);
                    return Finished::Cancelled;
                }
                () = &mut expiry => {
                    // A request cut off in flight closes its connection.
                    let sent = if connection.take().is_some() {
                        body.len() as u64
                    } else {
                        0
                    };
                    (Outcome::Timeout { sent }, None)
                }
                exchanged = exchange(plan, &mut connection, body, capture) => exchanged,
            }
        };
        let latency = Instant::now().saturating_duration_since(due);
        let following = {
            let mut tally = shared.tally();
            tally.record(&ticket, &outcome, latency);
            if let (
                Some(observer),
                Outcome::Response { status, .. },
                Some((body, truncated, variant)),
            ) = (&shared.observer, &outcome, captured)
            {
                let observed = ObservedResponse {
                    index: ticket.index,
                    sample,
                    status: *status,
                    latency,
                    body,
                    truncated,
                    variant,
                };
                if observer.try_send(observed).is_err() {
                    tally.observed_dropped();
                }
            }
            // Without a think time, the next request in the same hold of
            // the lock.
            think.is_none().then(|| tally.next_ticket())
        };
        next = match (following, think) {
            (Some(following), _) => following,
            (None, Some(think)) => {
                tokio::select! {
                    biased;
                    () = &mut cancelled => return Finished::Cancelled,
                    () = tokio::time::sleep_until((Instant::now() + think).min(end)) => {}
                }
                shared.tally().next_ticket()
            }
            (None, None) => None,
        };
    }
}

/// A captured body, whether it was cut, and the variant the gateway said
/// served it ([`crate::gateway::VARIANT_HEADER`]).
type Captured = Option<(Bytes, bool, Option<String>)>;

/// Sends one request on the worker's connection, opening one if needed.
///
/// A kept-alive connection the server closed meanwhile is noticed before
/// the request is written (the connection is found closed, or hyper hands
/// the request back): the request then goes once more on a new
/// connection. A request already written is never sent again.
async fn exchange(
    plan: &Plan,
    connection: &mut Option<Conn>,
    body: &Bytes,
    capture: Option<usize>,
) -> (Outcome, Captured) {
    let sent = body.len() as u64;
    let mut request = request(plan, body);
    loop {
        let mut reused = false;
        if let Some(conn) = connection.as_mut() {
            let open = poll_fn(|cx| Poll::Ready(conn.poll_open(cx))).await;
            if open && conn.is_ready() {
                reused = true;
            } else {
                *connection = None;
            }
        }
        let conn = match connection {
            Some(conn) => conn,
            None => match connect_to(&plan.target.connect_host, plan.target.port).await {
                Ok(conn) => connection.insert(conn),
                Err(_) => return (Outcome::Connect, None),
            },
        };
        match conn.try_send(request).await {
            Ok(response) => return read_response(response, connection, sent, capture).await,
            Err((_, unsent)) => {
                *connection = None;
                match unsent {
                    Some(unsent) if reused => request = unsent,
                    _ => return (Outcome::Transport { sent }, None),
                }
            }
        }
    }
}

fn request(plan: &Plan, body: &Bytes) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body.clone()));
    *request.method_mut() = plan.method.clone();
    *request.uri_mut() = plan.target.path.clone();
    *request.headers_mut() = plan.headers.clone();
    request
}

/// Reads the whole body (the latency ends with it), driving the
/// connection it arrives on, keeping at most `capture` bytes of it.
async fn read_response(
    response: hyper::Response<Incoming>,
    connection: &mut Option<Conn>,
    sent: u64,
    capture: Option<usize>,
) -> (Outcome, Captured) {
    let status = response.status().as_u16();
    let variant = capture.and_then(|_| {
        response
            .headers()
            .get(crate::gateway::VARIANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let mut body = response.into_body();
    let mut received = 0u64;
    let mut kept = capture.map(|_| BytesMut::new());
    let mut truncated = false;
    loop {
        let frame = poll_fn(|cx| {
            if let Some(conn) = connection.as_mut()
                && !conn.poll_open(cx)
            {
                // Closed: what it read is still in the body.
                *connection = None;
            }
            Pin::new(&mut body).poll_frame(cx)
        })
        .await;
        let Some(frame) = frame else { break };
        let Ok(frame) = frame else {
            *connection = None;
            return (Outcome::Transport { sent }, None);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if let (Some(kept), Some(limit)) = (kept.as_mut(), capture) {
            let room = limit - kept.len();
            truncated |= data.len() > room;
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    let outcome = Outcome::Response {
        status,
        sent,
        received,
    };
    (
        outcome,
        kept.map(|kept| (kept.freeze(), truncated, variant)),
    )
}
