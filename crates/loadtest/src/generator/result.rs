//! The result of a load run, as a file, and the exact merge of several.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use mlops_release::driver::{
    Driver, DriverError, ErrorCounts, LatencySummary, SecondBucket, StatusCounts, StopReason,
    TrafficReport, decode_histogram, encode_histogram, latency_histogram,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::threshold::Verdict;

/// The version of [`LoadResult`]'s format: a reader refuses other ones.
pub const RESULT_FORMAT: u32 = 1;

/// A finished load run, or several merged: the driver's report (its fields
/// at the top level: `requests`, `errors`, `rps`, `latency_ms`, …), the
/// latency histograms it was summarized from, and the thresholds checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    /// [`RESULT_FORMAT`].
    pub format: u32,
    /// How many generator runs this result holds (1 unless merged).
    pub runs: u32,
    /// What was sent and what came back.
    #[serde(flatten)]
    pub report: TrafficReport,
    /// The latency histograms, serialized: base64 of hdrhistogram's V2
    /// encoding, microseconds from 1 to an hour at 3 significant digits.
    pub histograms: Histograms,
    /// The thresholds checked, in the order given; empty if none were.
    #[serde(default)]
    pub thresholds: Vec<Verdict>,
}

/// The serialized histograms of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histograms {
    /// Every response's latency.
    pub overall: String,
    /// One per entry of `per_second`, in order.
    pub per_second: Vec<String>,
}

/// Why results cannot be merged or read.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Nothing to merge.
    #[error("no results to merge")]
    Empty,
    /// A result of another format version.
    #[error("result {index} is of format {found}; this mlops reads format {RESULT_FORMAT}")]
    Format {
        /// Its position among the inputs, from 1.
        index: usize,
        /// Its `format`.
        found: u32,
    },
    /// A histogram that is not base64 of a driver histogram.
    #[error("result {index}: the {which} histogram is unreadable: {reason}")]
    Histogram {
        /// Its position among the inputs, from 1.
        index: usize,
        /// `overall` or `second N`.
        which: String,
        /// Why.
        reason: String,
    },
    /// Per-second histograms that do not match the per-second buckets.
    #[error(
        "result {index} has {buckets} seconds but {histograms} per-second histograms: it was edited or cut"
    )]
    Seconds {
        /// Its position among the inputs, from 1.
        index: usize,
        /// Entries of `per_second`.
        buckets: usize,
        /// Entries of `histograms.per_second`.
        histograms: usize,
    },
    /// A second out of order, or after the run's end.
    #[error(
        "result {index}: second {second} is out of order or after the run's end ({elapsed_s} s): the file was edited or cut"
    )]
    BadSecond {
        /// Its position among the inputs, from 1.
        index: usize,
        /// The second.
        second: u64,
        /// The run's elapsed seconds.
        elapsed_s: f64,
    },
    /// A count that overflows when added.
    #[error("the merged counts overflow")]
    Overflow,
}

/// Runs `driver` (which must keep per-second histograms) to its end or
/// until `stop`, sending each second to `seconds` as it closes.
pub async fn run(
    driver: &Driver,
    stop: &CancellationToken,
    seconds: Option<mpsc::UnboundedSender<SecondBucket>>,
) -> Result<LoadResult, DriverError> {
    let run = match seconds {
        Some(tx) => driver.run_watched(stop, tx).await,
        None => driver.run(stop).await,
    };
    let overall = encode(&run.latency)?;
    let per_second = run
        .second_histograms
        .iter()
        .map(|bytes| BASE64.encode(bytes))
        .collect();
    Ok(LoadResult {
        format: RESULT_FORMAT,
        runs: 1,
        report: run.report,
        histograms: Histograms {
            overall,
            per_second,
        },
        thresholds: Vec::new(),
    })
}

fn encode(histogram: &Histogram<u64>) -> Result<String, DriverError> {
    Ok(BASE64.encode(encode_histogram(histogram)?))
}

impl LoadResult {
    /// The overall latency histogram, decoded.
    pub fn latency(&self) -> Result<Histogram<u64>, MergeError> {
        decode(&self.histograms.overall, 1, "overall")
    }

    /// Checks that the result reads: its format, its histograms, and that
    /// there is one per-second histogram per second.
    pub fn check(&self, index: usize) -> Result<(), MergeError> {
        self.decoded(index).map(|_| ())
    }

    fn decoded(&self, index: usize) -> Result<(Histogram<u64>, Vec<Histogram<u64>>), MergeError> {
        if self.format != RESULT_FORMAT {
            return Err(MergeError::Format {
                index,
                found: self.format,
            });
        }
        // Seconds strictly increasing, none after the run's end: a file
        // edited by hand (or a bad worker) cannot make a merge allocate
        // or count past what a run can hold.
        let elapsed = self.report.elapsed_s;
        let last_possible = if elapsed.is_finite() && elapsed >= 0.0 {
            elapsed + 1.0
        } else {
            -1.0
        };
        let mut previous: Option<u64> = None;
        for bucket in &self.report.per_second {
            if previous.is_some_and(|p| bucket.second <= p) || bucket.second as f64 > last_possible
            {
                return Err(MergeError::BadSecond {
                    index,
                    second: bucket.second,
                    elapsed_s: elapsed,
                });
            }
            previous = Some(bucket.second);
        }
        if self.histograms.per_second.len() != self.report.per_second.len() {
            return Err(MergeError::Seconds {
                index,
                buckets: self.report.per_second.len(),
                histograms: self.histograms.per_second.len(),
            });
        }
        let overall = decode(&self.histograms.overall, index, "overall")?;
        let seconds = self
            .histograms
            .per_second
            .iter()
            .zip(&self.report.per_second)
            .map(|(text, bucket)| decode(text, index, &format!("second {}", bucket.second)))
            .collect::<Result<_, _>>()?;
        Ok((overall, seconds))
    }
}

fn decode(text: &str, index: usize, which: &str) -> Result<Histogram<u64>, MergeError> {
    let bad = |reason: String| MergeError::Histogram {
        index,
        which: which.to_owned(),
        reason,
    };
    let bytes = BASE64.decode(text).map_err(|e| bad(e.to_string()))?;
    decode_histogram(&bytes).map_err(|e| bad(e.to_string()))
}

/// Merges the results of generators that ran at the same time (say, one
/// per host, started together): counts add, histograms add without loss,
/// second `s` of each run goes into second `s` of the merge, the elapsed
/// time is the longest, and the rate is the merged requests over it.
/// `target_rps` adds up over the open runs and `users` over the closed
/// ones. Thresholds are not carried over: check them again on the merge.
pub fn merge(results: &[LoadResult]) -> Result<LoadResult, MergeError> {
    if results.is_empty() {
        return Err(MergeError::Empty);
    }
    let mut latency = latency_histogram();
    let mut seconds: Vec<(SecondBucket, Histogram<u64>)> = Vec::new();
    let mut report = TrafficReport {
        target: String::new(),
        method: String::new(),
        target_rps: None,
        users: None,
        planned: 0,
        requests: 0,
        errors: 0,
        errors_by_kind: ErrorCounts::default(),
        status: StatusCounts::default(),
        bytes_sent: 0,
        bytes_received: 0,
        elapsed_s: 0.0,
        rps: 0.0,
        latency_ms: None,
        per_second: Vec::new(),
        stopped: StopReason::Completed,
        abandoned: 0,
        observed_dropped: 0,
    };
    let mut runs = 0u32;
    let mut targets: Vec<&str> = Vec::new();
    let mut methods: Vec<&str> = Vec::new();
    for (i, result) in results.iter().enumerate() {
        let index = i + 1;
        let (overall, per_second) = result.decoded(index)?;
        let r = &result.report;
        latency.add(&overall).map_err(|_| MergeError::Overflow)?;
        runs = runs.checked_add(result.runs).ok_or(MergeError::Overflow)?;
        for (list, value) in [(&mut targets, &r.target), (&mut methods, &r.method)] {
            if !list.contains(&value.as_str()) {
                list.push(value);
            }
        }
        // The open runs' rates add up, and so do the closed runs' users.
        report.target_rps = match (report.target_rps, r.target_rps) {
            (None, x) | (x, None) => x,
            (Some(a), Some(b)) => Some(a + b),
        };
        report.users = match (report.users, r.users) {
            (None, u) | (u, None) => u,
            (Some(a), Some(b)) => Some(a + b),
        };
        add(&mut report.planned, r.planned)?;
        add(&mut report.requests, r.requests)?;
        add(&mut report.errors, r.errors)?;
        add_errors(&mut report.errors_by_kind, &r.errors_by_kind)?;
        add_status(&mut report.status, &r.status)?;
        add(&mut report.bytes_sent, r.bytes_sent)?;
        add(&mut report.bytes_received, r.bytes_received)?;
        add(&mut report.abandoned, r.abandoned)?;
        add(&mut report.observed_dropped, r.observed_dropped)?;
        report.elapsed_s = report.elapsed_s.max(r.elapsed_s);
        if r.stopped == StopReason::Cancelled {
            report.stopped = StopReason::Cancelled;
        }
        for (bucket, histogram) in r.per_second.iter().zip(per_second) {
            let at = match seconds.binary_search_by_key(&bucket.second, |(b, _)| b.second) {
                Ok(at) => at,
                Err(at) => {
                    let empty = SecondBucket {
                        second: bucket.second,
                        requests: 0,
                        errors: ErrorCounts::default(),
                        latency_ms: None,
                    };
                    seconds.insert(at, (empty, latency_histogram()));
                    at
                }
            };
            let (merged, merged_histogram) = &mut seconds[at];
            add(&mut merged.requests, bucket.requests)?;
            add_errors(&mut merged.errors, &bucket.errors)?;
            merged_histogram
                .add(&histogram)
                .map_err(|_| MergeError::Overflow)?;
        }
    }
    // Seconds no run had (a gap) stay absent only if every run lacked
    // them; fill them so the series stays one bucket per second.
    let last = seconds.last().map_or(0, |(b, _)| b.second + 1);
    let mut filled = Vec::with_capacity(last as usize);
    let mut histograms = Vec::with_capacity(last as usize);
    let mut it = seconds.into_iter().peekable();
    for s in 0..last {
        let (mut bucket, histogram) = match it.peek() {
            Some((b, _)) if b.second == s => it.next().expect("peeked"),
            _ => (
                SecondBucket {
                    second: s,
                    requests: 0,
                    errors: ErrorCounts::default(),
                    latency_ms: None,
                },
                latency_histogram(),
            ),
        };
        bucket.latency_ms = LatencySummary::of(&histogram);
        histograms.push(encode(&histogram).map_err(|_| MergeError::Overflow)?);
        filled.push(bucket);
    }
    report.target = targets.join(" ");
    report.method = methods.join(" ");
    report.latency_ms = LatencySummary::of(&latency);
    report.rps = if report.elapsed_s > 0.0 {
        report.requests as f64 / report.elapsed_s
    } else {
        0.0
    };
    report.per_second = filled;
    Ok(LoadResult {
        format: RESULT_FORMAT,
        runs,
        report,
        histograms: Histograms {
            overall: encode(&latency).map_err(|_| MergeError::Overflow)?,
            per_second: histograms,
        },
        thresholds: Vec::new(),
    })
}

fn add(total: &mut u64, more: u64) -> Result<(), MergeError> {
    *total = total.checked_add(more).ok_or(MergeError::Overflow)?;
    Ok(())
}

fn add_errors(total: &mut ErrorCounts, more: &ErrorCounts) -> Result<(), MergeError> {
    add(&mut total.status_4xx, more.status_4xx)?;
    add(&mut total.status_5xx, more.status_5xx)?;
    add(&mut total.connect, more.connect)?;
    add(&mut total.timeout, more.timeout)?;
    add(&mut total.transport, more.transport)
}

fn add_status(total: &mut StatusCounts, more: &StatusCounts) -> Result<(), MergeError> {
    add(&mut total.informational, more.informational)?;
    add(&mut total.success, more.success)?;
    add(&mut total.redirection, more.redirection)?;
    add(&mut total.client_error, more.client_error)?;
    add(&mut total.server_error, more.server_error)
}
