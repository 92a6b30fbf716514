//! The engine: one task per connection, each taking the next due request
//! when it is free, so at most `connections` requests are in flight and a
//! request that finds every connection busy waits, its latency running from
//! when it was due.
//!
//! A worker holds one keep-alive HTTP/1 connection (hyper's low-level
//! client, so the bound on connections is exact), opens it on first use and
//! again after any failure, and drops it when a request times out. (Driving
//! the connection from the worker's own task, as the gateway's upstream
//! connections are, with per-worker timers re-armed, was tried: no faster
//! beyond the noise, and the release fault tests became flaky, for reasons
//! not yet understood; taken back, see docs/benchmarks.md.)

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::report::{ObservedResponse, SecondBucket, StopReason, TrafficRun};
use super::schedule::Schedule;
use super::settings::Plan;
use super::tally::{Outcome, Tally};

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
    let closed = matches!(plan.schedule, Schedule::Closed { .. });
    let mut connection = None;
    let mut first = true;
    loop {
        if let (Some(think), false) = (think, first) {
            tokio::select! {
                biased;
                () = stop.cancelled() => return Finished::Cancelled,
                () = tokio::time::sleep_until((Instant::now() + think).min(end)) => {}
            }
        }
        first = false;
        let Some(ticket) = shared.tally().next_ticket() else {
            return Finished::Completed;
        };
        let due = shared.start + ticket.due;
        let (sample, body) = plan.samples.for_request(ticket.index);
        let deadline = due + plan.timeout;
        let attempt = async {
            // A closed workload's request is due when handed out: it goes
            // at once (a timer for a past instant would fire at the next
            // tick of the runtime's clock, a millisecond later). An open
            // workload's waits for its time as it always has: sending
            // requests that are behind schedule without that tick made the
            // release fault tests flaky, for reasons not yet understood.
            if !(closed && Instant::now() >= due) {
                tokio::time::sleep_until(due).await;
            }
            if Instant::now() >= deadline {
                // Due so long ago that it timed out waiting for this worker:
                // leave the connection alone rather than start a request
                // only to cut it off.
                return (Outcome::Timeout { sent: 0 }, None);
            }
            match tokio::time::timeout_at(deadline, exchange(plan, &mut connection, body, capture))
                .await
            {
                Ok(exchanged) => exchanged,
                Err(_elapsed) => {
                    // A request cut off in flight closes its connection.
                    let sent = if connection.take().is_some() {
                        body.len() as u64
                    } else {
                        0
                    };
                    (Outcome::Timeout { sent }, None)
                }
            }
        };
        let exchanged = tokio::select! {
            biased;
            () = stop.cancelled() => None,
            exchanged = attempt => Some(exchanged),
        };
        let Some((outcome, captured)) = exchanged else {
            shared.tally().abandon(&ticket);
            return Finished::Cancelled;
        };
        let latency = Instant::now().saturating_duration_since(due);
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
    }
}

/// A captured body, whether it was cut, and the variant the gateway said
/// served it ([`crate::gateway::VARIANT_HEADER`]).
type Captured = Option<(Bytes, bool, Option<String>)>;

/// Sends one request on the worker's connection, opening one if needed.
///
/// A kept-alive connection the server closed meanwhile is noticed before
/// the request is written (hyper hands the request back): the request then
/// goes once more on a new connection. A request already written is never
/// sent again.
async fn exchange(
    plan: &Plan,
    connection: &mut Option<SendRequest<Full<Bytes>>>,
    body: &Bytes,
    capture: Option<usize>,
) -> (Outcome, Captured) {
    let sent = body.len() as u64;
    let mut request = request(plan, body);
    loop {
        let mut reused = false;
        if let Some(sender) = connection.as_mut() {
            if sender.ready().await.is_ok() {
                reused = true;
            } else {
                *connection = None;
            }
        }
        let sender = match connection {
            Some(sender) => sender,
            None => match connect(plan).await {
                Some(sender) => connection.insert(sender),
                None => return (Outcome::Connect, None),
            },
        };
        match sender.try_send_request(request).await {
            Ok(response) => return read_response(response, connection, sent, capture).await,
            Err(mut error) => {
                *connection = None;
                match error.take_message() {
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

/// Opens a connection to the target; `None` if it cannot be opened.
async fn connect(plan: &Plan) -> Option<SendRequest<Full<Bytes>>> {
    let host = plan.target.connect_host.as_str();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let stream = TcpStream::connect((host, plan.target.port)).await.ok()?;
    // Small requests go out at once rather than waiting for an ACK.
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    // Ends when the worker drops `sender` and nothing is in flight; its
    // error, if any, reaches the worker through `sender`.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(sender)
}

/// Reads the whole body (the latency ends with it), keeping at most
/// `capture` bytes of it.
async fn read_response(
    response: hyper::Response<Incoming>,
    connection: &mut Option<SendRequest<Full<Bytes>>>,
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
    while let Some(frame) = body.frame().await {
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
