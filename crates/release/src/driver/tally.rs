//! The live state of a run: which request is due next, and what came back.
//!
//! One `Tally` per run, behind a mutex the workers hold for a few
//! arithmetic operations at a time (never across an await). Handing out
//! requests and recording their outcomes in one place lets it close a
//! second's bucket exactly when every request due in it has an outcome, so
//! per-second histograms live only while their second has requests under
//! way: at most `timeout + 2` of them, reused, whatever the duration.

use std::collections::VecDeque;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::histogram::{encode_histogram, latency_histogram};
use super::report::{
    ErrorCounts, LatencySummary, SecondBucket, StatusCounts, StopReason, TrafficReport, TrafficRun,
};
use super::schedule::Schedule;

/// A request handed to a worker: its place in the schedule.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    /// Its position, from 0.
    pub(super) index: u64,
    /// When it is due, after the start (in a closed workload, when it was
    /// handed out).
    pub(super) due: Duration,
    /// `due` in whole seconds: its bucket.
    second: u64,
}

/// How one request ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// A complete response.
    Response {
        status: u16,
        sent: u64,
        received: u64,
    },
    /// No connection could be opened.
    Connect,
    /// No complete response by the deadline.
    Timeout { sent: u64 },
    /// The connection failed under the request.
    Transport { sent: u64 },
}

/// A kind of failed request.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Status4xx,
    Status5xx,
    Connect,
    Timeout,
    Transport,
}

impl Failure {
    fn count(self, errors: &mut ErrorCounts) {
        let counter = match self {
            Self::Status4xx => &mut errors.status_4xx,
            Self::Status5xx => &mut errors.status_5xx,
            Self::Connect => &mut errors.connect,
            Self::Timeout => &mut errors.timeout,
            Self::Transport => &mut errors.transport,
        };
        *counter += 1;
    }
}

/// The live state of one run.
pub(super) struct Tally {
    schedule: Schedule,
    max_requests: u64,
    /// The run's start: a closed workload's tickets are due when handed out.
    start: Instant,
    /// The next request to hand out.
    next: u64,
    /// Keep each closed second's histogram, serialized.
    keep_histograms: bool,
    second_histograms: Vec<Vec<u8>>,
    /// Told of every second as it closes.
    watcher: Option<mpsc::UnboundedSender<SecondBucket>>,
    latency: Histogram<u64>,
    requests: u64,
    errors: ErrorCounts,
    status: StatusCounts,
    bytes_sent: u64,
    bytes_received: u64,
    abandoned: u64,
    observed_dropped: u64,
    /// Seconds with requests handed out but not all recorded, contiguous,
    /// oldest first.
    open: VecDeque<OpenSecond>,
    closed: Vec<SecondBucket>,
    /// Emptied histograms of closed seconds, for reuse.
    spare: Vec<Histogram<u64>>,
}

struct OpenSecond {
    second: u64,
    handed_out: u64,
    requests: u64,
    errors: ErrorCounts,
    latency: Option<Histogram<u64>>,
}

impl Tally {
    pub(super) fn new(
        schedule: Schedule,
        max_requests: u64,
        start: Instant,
        keep_histograms: bool,
    ) -> Self {
        Self {
            schedule,
            max_requests,
            start,
            next: 0,
            keep_histograms,
            second_histograms: Vec::new(),
            watcher: None,
            latency: latency_histogram(),
            requests: 0,
            errors: ErrorCounts::default(),
            status: StatusCounts::default(),
            bytes_sent: 0,
            bytes_received: 0,
            abandoned: 0,
            observed_dropped: 0,
            open: VecDeque::new(),
            closed: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Sends every second to `watcher` as it closes (a closed channel is
    /// ignored).
    pub(super) fn watch(&mut self, watcher: mpsc::UnboundedSender<SecondBucket>) {
        self.watcher = Some(watcher);
    }

    /// The next request of the schedule, or `None` when all were handed out.
    pub(super) fn next_ticket(&mut self) -> Option<Ticket> {
        let due = self.due(self.next)?;
        let index = self.next;
        self.next += 1;
        let second = due.as_secs();
        let first_unopened = self
            .open
            .back()
            .map(|b| b.second + 1)
            .or_else(|| self.closed.last().map(|b| b.second + 1))
            .unwrap_or(0);
        for s in first_unopened..=second {
            self.open.push_back(OpenSecond {
                second: s,
                handed_out: 0,
                requests: 0,
                errors: ErrorCounts::default(),
                latency: None,
            });
        }
        self.bucket(second).handed_out += 1;
        self.close_finished();
        Some(Ticket { index, due, second })
    }

    /// Records a request's outcome; `latency` runs from when it was due.
    pub(super) fn record(&mut self, ticket: &Ticket, outcome: &Outcome, latency: Duration) {
        self.requests += 1;
        let first = self.open.front().map_or(0, |b| b.second);
        let bucket = &mut self.open[(ticket.second - first) as usize];
        bucket.requests += 1;
        let failure = match *outcome {
            Outcome::Response {
                status,
                sent,
                received,
            } => {
                self.bytes_sent += sent;
                self.bytes_received += received;
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency.saturating_record(micros);
                let spare = &mut self.spare;
                bucket
                    .latency
                    .get_or_insert_with(|| spare.pop().unwrap_or_else(latency_histogram))
                    .saturating_record(micros);
                match status {
                    ..200 => self.status.informational += 1,
                    200..300 => self.status.success += 1,
                    300..400 => self.status.redirection += 1,
                    400..500 => self.status.client_error += 1,
                    500.. => self.status.server_error += 1,
                }
                match status {
                    400..500 => Some(Failure::Status4xx),
                    500.. => Some(Failure::Status5xx),
                    _ => None,
                }
            }
            Outcome::Connect => Some(Failure::Connect),
            Outcome::Timeout { sent } => {
                self.bytes_sent += sent;
                Some(Failure::Timeout)
            }
            Outcome::Transport { sent } => {
                self.bytes_sent += sent;
                Some(Failure::Transport)
            }
        };
        if let Some(failure) = failure {
            failure.count(&mut self.errors);
            failure.count(&mut bucket.errors);
        }
        self.close_finished();
    }

    /// Forgets a request the run was cancelled under.
    pub(super) fn abandon(&mut self, ticket: &Ticket) {
        self.abandoned += 1;
        self.bucket(ticket.second).handed_out -= 1;
        self.close_finished();
    }

    /// Counts a response the observer had no room for.
    pub(super) fn observed_dropped(&mut self) {
        self.observed_dropped += 1;
    }

    /// The report, once every worker has stopped.
    pub(super) fn finish(
        mut self,
        target: String,
        method: String,
        elapsed: Duration,
        stopped: StopReason,
    ) -> TrafficRun {
        while let Some(bucket) = self.open.pop_front() {
            self.close(bucket);
        }
        let elapsed_s = elapsed.as_secs_f64();
        let (target_rps, users, planned) = match &self.schedule {
            Schedule::Open(arrivals) => (Some(arrivals.mean_rate), None, arrivals.planned),
            Schedule::Closed { users, .. } => (None, Some(*users as u64), self.next),
        };
        let report = TrafficReport {
            target,
            method,
            target_rps,
            users,
            planned,
            requests: self.requests,
            errors: self.errors.total(),
            errors_by_kind: self.errors,
            status: self.status,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            elapsed_s,
            rps: if elapsed_s > 0.0 {
                self.requests as f64 / elapsed_s
            } else {
                0.0
            },
            latency_ms: LatencySummary::of(&self.latency),
            per_second: self.closed,
            stopped,
            abandoned: self.abandoned,
            observed_dropped: self.observed_dropped,
        };
        TrafficRun {
            report,
            latency: self.latency,
            second_histograms: self.second_histograms,
        }
    }

    fn bucket(&mut self, second: u64) -> &mut OpenSecond {
        let first = self.open.front().map_or(0, |b| b.second);
        &mut self.open[(second - first) as usize]
    }

    /// When request `index` is due, or `None` if the run holds no more.
    fn due(&self, index: u64) -> Option<Duration> {
        match &self.schedule {
            Schedule::Open(arrivals) => (index < arrivals.planned).then(|| arrivals.due(index)),
            Schedule::Closed { duration, .. } => {
                let now = self.start.elapsed();
                (index < self.max_requests && now < *duration).then_some(now)
            }
        }
    }

    /// Closes the oldest seconds whose requests all have an outcome and
    /// that can get no more requests.
    fn close_finished(&mut self) {
        let next_second = self.due(self.next).map(|due| due.as_secs());
        while let Some(front) = self.open.front() {
            let done =
                front.requests == front.handed_out && next_second.is_none_or(|s| s > front.second);
            if !done {
                break;
            }
            let bucket = self.open.pop_front().expect("front exists");
            self.close(bucket);
        }
    }

    fn close(&mut self, bucket: OpenSecond) {
        let latency_ms = bucket.latency.as_ref().and_then(LatencySummary::of);
        if self.keep_histograms {
            let empty;
            let histogram = match &bucket.latency {
                Some(h) => h,
                None => {
                    empty = latency_histogram();
                    &empty
                }
            };
            self.second_histograms.push(
                encode_histogram(histogram)
                    .expect("a histogram of the driver's shape serializes into memory"),
            );
        }
        if let Some(mut histogram) = bucket.latency {
            histogram.reset();
            self.spare.push(histogram);
        }
        let closed = SecondBucket {
            second: bucket.second,
            requests: bucket.requests,
            errors: bucket.errors,
            latency_ms,
        };
        if let Some(watcher) = &self.watcher {
            let _ = watcher.send(closed.clone());
        }
        self.closed.push(closed);
    }
}
