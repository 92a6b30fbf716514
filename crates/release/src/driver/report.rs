//! What a run returns: the serializable [`TrafficReport`], the raw latency
//! histogram beside it, and the per-response record a release analysis
//! reads.

use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A finished run: its report, and the histogram its latency summary was
/// read from (microseconds, [`super::latency_histogram`]'s shape), for
/// merging with other runs exactly ([`Histogram::add`]).
#[derive(Debug, Clone)]
pub struct TrafficRun {
    /// What happened.
    pub report: TrafficReport,
    /// The latency of every response, from its request's intended send time.
    pub latency: Histogram<u64>,
    /// Each second's latency histogram in [`super::encode_histogram`]'s
    /// form, one per entry of [`TrafficReport::per_second`], when the
    /// settings asked to keep them; empty otherwise.
    pub second_histograms: Vec<Vec<u8>>,
}

/// What a run sent and what came back.
///
/// A request counts once it has an outcome: a response (any status), a
/// connect error, a timeout or a transport error. Latency quantiles are of
/// responses only, each measured from the request's intended send time to
/// the end of its response body; timeouts are counted, not recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    /// The target URL.
    pub target: String,
    /// The HTTP method.
    pub method: String,
    /// The arrival rate asked for, in requests per second (its mean over
    /// the stages); `None` for a closed workload.
    pub target_rps: Option<f64>,
    /// The users of a closed workload; `None` for an open one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
    /// The requests the schedule held: at most `max_requests`, all due
    /// within the duration (in a closed workload, the requests handed to
    /// users).
    pub planned: u64,
    /// The requests that got an outcome.
    pub requests: u64,
    /// The requests that failed: 4xx, 5xx, connect errors, timeouts and
    /// transport errors ([`ErrorCounts::total`] of `errors_by_kind`).
    pub errors: u64,
    /// The failures, by kind.
    pub errors_by_kind: ErrorCounts,
    /// The responses, by status class.
    pub status: StatusCounts,
    /// Request body bytes handed to a connection (those of a request cut
    /// off by its timeout included).
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Seconds from the first request's intended send time to the last
    /// outcome.
    pub elapsed_s: f64,
    /// The achieved rate: `requests / elapsed_s`.
    pub rps: f64,
    /// The latency of responses; `None` if there was none.
    pub latency_ms: Option<LatencySummary>,
    /// One bucket per second of the schedule, in order, holding the
    /// requests due in that second.
    pub per_second: Vec<SecondBucket>,
    /// Why the run ended.
    pub stopped: StopReason,
    /// Requests under way when the run was cancelled: sent or due, without
    /// an outcome, and counted nowhere else.
    pub abandoned: u64,
    /// Responses the observer's channel had no room for (see
    /// [`super::Driver::run_observed`]).
    pub observed_dropped: u64,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// Every planned request got an outcome.
    Completed,
    /// The cancellation token fired first.
    Cancelled,
}

/// Failed requests, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Responses with a 4xx status.
    pub status_4xx: u64,
    /// Responses with a 5xx status.
    pub status_5xx: u64,
    /// Requests for which no connection could be opened.
    pub connect: u64,
    /// Requests without a complete response `timeout` after they were due
    /// (waiting for a free connection counts, and so does a connection
    /// attempt that outlasts the timeout).
    pub timeout: u64,
    /// Requests that failed on an open connection (reset, malformed or cut
    /// response).
    pub transport: u64,
}

impl ErrorCounts {
    /// All failures.
    pub fn total(&self) -> u64 {
        self.status_4xx + self.status_5xx + self.connect + self.timeout + self.transport
    }
}

/// Responses by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// 1xx.
    #[serde(rename = "1xx")]
    pub informational: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub redirection: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

/// Latency quantiles, in milliseconds (read from a histogram of
/// microseconds, so exact to within 0.1 %).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Responses recorded.
    pub count: u64,
    /// The mean.
    pub mean: f64,
    /// The lowest.
    pub min: f64,
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The highest.
    pub max: f64,
}

impl LatencySummary {
    /// The summary of a histogram of microseconds (say, several runs merged
    /// with [`Histogram::add`]); `None` if it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Self {
            count: histogram.len(),
            mean: histogram.mean() / 1000.0,
            min: ms(histogram.min()),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        })
    }
}

/// The requests due in one second of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondBucket {
    /// Seconds since the start: this bucket holds the requests due in
    /// `[second, second + 1)` (in a closed workload, sent in it).
    pub second: u64,
    /// Requests due in this second that got an outcome.
    pub requests: u64,
    /// Their failures, by kind.
    pub errors: ErrorCounts,
    /// Their responses' latency; `None` if there was none.
    pub latency_ms: Option<LatencySummary>,
}

/// One response, as a release analysis sees it (the OIP outputs are in the
/// body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedResponse {
    /// The request's position in the schedule, from 0.
    pub index: u64,
    /// The sample it carried (its position in [`super::Samples::bodies`]).
    pub sample: usize,
    /// The response status.
    pub status: u16,
    /// From the intended send time to the end of the body.
    pub latency: Duration,
    /// The body, cut at the driver's capture limit.
    pub body: Bytes,
    /// Whether the body was longer than the capture limit.
    pub truncated: bool,
    /// The variant that served it, when the target is the mlops gateway
    /// (its `x-mlops-variant` response header); `None` otherwise.
    pub variant: Option<String>,
}
