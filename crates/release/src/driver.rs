//! The request driver: the one HTTP traffic engine of mlops. A release step
//! uses it to send a model server canary traffic when no users do (CI,
//! examples); stage 6's load generator grows from it.
//!
//! It owns one thing: sending sample requests to one `http://` target as an
//! *open workload* — request `i` is due at `start + i / rate`, whether or not
//! earlier requests have been answered — over a bounded pool of keep-alive
//! HTTP/1.1 connections, and recording what came back. Latency is measured from each
//! request's intended send time, not from when a connection was free to send
//! it, so a server that stalls cannot hide the stall (coordinated omission):
//! every request that queued behind the stall carries the wait in its latency.
//! Latencies go into HDR histograms (microseconds, 3 significant digits,
//! fixed bounds), overall and per second of the schedule, beside counts by
//! status class and by kind of error.
//!
//! A run always stops by itself: it plans at most `max_requests` requests,
//! all due within `duration`, and each request gives up `timeout` after it
//! was due, so a run ends by `duration + timeout`. A
//! [`CancellationToken`](tokio_util::sync::CancellationToken) or dropping the
//! run's future stops it earlier.
//!
//! It does not own what the traffic means: the release analysis reads the
//! responses through [`Driver::run_observed`] and decides with
//! [`crate::stats`]; the settings a manifest gives (`[release]`) are compiled
//! by the step kind that calls [`DriverSettings::compile`].
//!
//! - [`Samples`]: the request bodies, from JSON lines or a CSV turned into
//!   Open Inference Protocol v2 requests, cycled through in order;
//! - [`DriverSettings`] → [`Driver`]: the target, rate and bounds, checked;
//! - [`TrafficRun`]: the [`TrafficReport`] (serializable) and the raw latency
//!   histogram, which [`encode_histogram`] and [`decode_histogram`] carry
//!   across processes for exact merging.

mod engine;
mod histogram;
mod report;
mod samples;
mod schedule;
mod settings;
mod tally;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use histogram::{decode_histogram, encode_histogram, latency_histogram};
pub use report::{
    ErrorCounts, LatencySummary, ObservedResponse, SecondBucket, StatusCounts, StopReason,
    TrafficReport, TrafficRun,
};
pub use samples::{CsvColumns, Samples, oip_batch_body, oip_request_body};
pub use schedule::{RateStage, Workload};
pub use settings::{Driver, DriverSettings, SettingError};

/// What can go wrong before a run starts, or while carrying a histogram.
///
/// Failures of the target (refused connections, timeouts, 5xx) are not
/// errors: they are counted in the [`TrafficReport`].
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A sample file could not be read.
    #[error("cannot read samples from {path}")]
    ReadSamples {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of a JSON-lines sample file is not a JSON value.
    #[error("line {line} of {path} is not a json value")]
    SampleJson {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A CSV sample file is malformed.
    #[error("cannot parse the csv {path} at line {line}")]
    SampleCsv {
        /// The file.
        path: PathBuf,
        /// The line, from 1 (0 if the reader could not tell).
        line: u64,
        /// What the reader said.
        #[source]
        source: csv::Error,
    },
    /// A chosen CSV cell is not a finite number.
    #[error("column `{column}` at line {line} of {path} is not a finite number: `{value}`")]
    SampleNotNumber {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// The column's name.
        column: String,
        /// The cell as written.
        value: String,
    },
    /// A column named in [`CsvColumns`] is not in the CSV's header.
    #[error("column `{column}` is not in the header of {path}")]
    UnknownColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
    },
    /// [`CsvColumns`] leaves no column to send.
    #[error("no column of {path} is left to send")]
    NoColumns {
        /// The file.
        path: PathBuf,
    },
    /// There is no sample to send.
    #[error("no samples in {origin}")]
    EmptySamples {
        /// The file, or a description of where the samples came from.
        origin: String,
    },
    /// The settings do not describe a run; every problem found is listed.
    #[error("invalid request driver settings: {}", list(.0))]
    Settings(Vec<SettingError>),
    /// A histogram could not be serialized.
    #[error("cannot serialize a latency histogram")]
    EncodeHistogram(#[source] hdrhistogram::serialization::V2SerializeError),
    /// Bytes are not a serialized histogram.
    #[error("cannot deserialize a latency histogram")]
    DecodeHistogram(#[source] hdrhistogram::serialization::DeserializeError),
    /// A serialized histogram's length does not match its header.
    #[error(
        "a serialized latency histogram holds {actual} bytes of counts, its header says {declared}"
    )]
    HistogramLength {
        /// The length its header declares.
        declared: u64,
        /// The length given.
        actual: u64,
    },
    /// A serialized histogram of another shape than the driver's (its
    /// header is checked before anything is allocated from it).
    #[error(
        "a serialized latency histogram tracks {low}..={high} at {digits} significant digits; the driver's histograms track 1..={expected_high} at {expected_digits}"
    )]
    HistogramShape {
        /// Its lowest discernible value.
        low: u64,
        /// Its highest trackable value.
        high: u64,
        /// Its significant digits.
        digits: u32,
        /// The driver's highest trackable value.
        expected_high: u64,
        /// The driver's significant digits.
        expected_digits: u32,
    },
}

fn list(errors: &[SettingError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
