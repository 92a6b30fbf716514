//! The settings of a run, and their check: [`DriverSettings`] compiles into
//! a [`Driver`], listing every problem at once.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Uri};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::report::{ObservedResponse, TrafficRun};
use super::samples::Samples;
use super::{DriverError, engine};

/// The longest per-request timeout: it bounds how many seconds of the
/// schedule can be under way at once, and so the memory a run holds.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The most connections a run may open.
const MAX_CONNECTIONS: usize = 1024;

/// What a run sends, where and how fast, before it is checked.
///
/// [`DriverSettings::new`] fills in the defaults: `POST`, no extra headers,
/// a 10 s timeout, 8 connections, bodies captured up to 64 KiB.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverSettings {
    /// The target: an `http://` URL (no TLS).
    pub url: String,
    /// The HTTP method.
    pub method: String,
    /// Extra request headers. `content-type` defaults to
    /// `application/json`; `host` comes from the URL.
    pub headers: Vec<(String, String)>,
    /// The arrival rate, in requests per second (fractions allowed).
    pub rate: f64,
    /// No request is due this long after the start or later.
    pub duration: Duration,
    /// No more than this many requests are sent.
    pub max_requests: u64,
    /// A request without a complete response this long after it was due
    /// is a timeout (at most 60 s).
    pub timeout: Duration,
    /// The keep-alive connections (1 to 1024): requests beyond them wait
    /// for one, and their latency still runs from when they were due.
    pub connections: usize,
    /// The most response body bytes handed to an observer per response.
    pub capture_limit: usize,
}

/// One problem with [`DriverSettings`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingError {
    /// The rate is not a positive finite number.
    #[error("the rate must be a positive number of requests per second, not {0}")]
    Rate(f64),
    /// The URL does not parse.
    #[error("the target `{url}` is not a url: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL is not `http://host…`.
    #[error("the target `{0}` is not an http:// url with a host")]
    NotHttp(String),
    /// The method is not a valid token.
    #[error("`{0}` is not an http method")]
    Method(String),
    /// A header's name or value is not valid.
    #[error("the header `{0}` is not a valid http header")]
    Header(String),
    /// The duration is zero.
    #[error("the duration must be longer than zero")]
    Duration,
    /// `max_requests` is zero.
    #[error("max requests must be at least 1")]
    MaxRequests,
    /// The timeout is zero or longer than 60 s.
    #[error("the timeout must be longer than zero and at most 60 s, not {0:?}")]
    Timeout(Duration),
    /// The connection count is out of range.
    #[error("connections must be between 1 and {MAX_CONNECTIONS}, not {0}")]
    Connections(usize),
}

impl DriverSettings {
    /// Settings with the defaults, for `rate` requests per second to `url`,
    /// bounded by `duration` and `max_requests`.
    pub fn new(url: impl Into<String>, rate: f64, duration: Duration, max_requests: u64) -> Self {
        Self {
            url: url.into(),
            method: "POST".to_owned(),
            headers: Vec::new(),
            rate,
            duration,
            max_requests,
            timeout: Duration::from_secs(10),
            connections: 8,
            capture_limit: 64 * 1024,
        }
    }

    /// Checks the settings and pairs them with the samples to send.
    pub fn compile(&self, samples: Samples) -> Result<Driver, DriverError> {
        let mut problems = Vec::new();
        if !(self.rate.is_finite() && self.rate > 0.0) {
            problems.push(SettingError::Rate(self.rate));
        }
        let target = Target::parse(&self.url).map_err(|e| problems.push(e)).ok();
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| problems.push(SettingError::Method(self.method.clone())))
            .ok();
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => problems.push(SettingError::Header(name.clone())),
            }
        }
        if self.duration.is_zero() {
            problems.push(SettingError::Duration);
        }
        if self.max_requests == 0 {
            problems.push(SettingError::MaxRequests);
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            problems.push(SettingError::Timeout(self.timeout));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            problems.push(SettingError::Connections(self.connections));
        }
        let (Some(target), Some(method), true) = (target, method, problems.is_empty()) else {
            return Err(DriverError::Settings(problems));
        };
        headers.insert(HOST, target.host.clone());
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(Driver {
            plan: Arc::new(Plan {
                planned: planned_requests(self.rate, self.duration, self.max_requests),
                target,
                method,
                headers,
                rate: self.rate,
                timeout: self.timeout,
                connections: self.connections,
                capture_limit: self.capture_limit,
                samples,
            }),
        })
    }
}

/// How many requests are due within `duration` at `rate` (request `i` is
/// due at `i / rate`), capped at `max`.
fn planned_requests(rate: f64, duration: Duration, max: u64) -> u64 {
    let due = rate * duration.as_secs_f64();
    // `rate * duration` is often an integer computed with a rounding error
    // (100.0 * 0.3 = 30.000000000000004): do not plan a request for it.
    let rounded = due.round();
    let count = if (due - rounded).abs() <= 1e-9 * rounded.max(1.0) {
        rounded
    } else {
        due.ceil()
    };
    // Request 0 is due at 0, inside any duration.
    (count as u64).max(1).min(max)
}

/// A checked run, ready to send: run it as often as needed.
#[derive(Debug, Clone)]
pub struct Driver {
    plan: Arc<Plan>,
}

impl Driver {
    /// The requests a run plans: at most `max_requests`, all due within the
    /// duration.
    pub fn planned_requests(&self) -> u64 {
        self.plan.planned
    }

    /// The samples it sends.
    pub fn samples(&self) -> &Samples {
        &self.plan.samples
    }

    /// Sends the traffic and reports what came back. Stops when every
    /// planned request has an outcome or when `stop` is cancelled; dropping
    /// the future stops it too (its tasks are aborted, its connections
    /// closed).
    pub async fn run(&self, stop: &CancellationToken) -> TrafficRun {
        engine::drive(Arc::clone(&self.plan), stop.clone(), None).await
    }

    /// [`Driver::run`], handing every response (status, latency, body up
    /// to the capture limit) to `observer` as it arrives.
    ///
    /// The driver never waits for the observer: a response that finds the
    /// channel full (or closed) is counted in
    /// [`super::TrafficReport::observed_dropped`] and not sent. Size the
    /// channel for the planned requests to see them all.
    pub async fn run_observed(
        &self,
        stop: &CancellationToken,
        observer: mpsc::Sender<ObservedResponse>,
    ) -> TrafficRun {
        engine::drive(Arc::clone(&self.plan), stop.clone(), Some(observer)).await
    }
}

/// A checked run: what the engine reads.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) target: Target,
    pub(super) method: Method,
    /// Every request header, `host` included.
    pub(super) headers: HeaderMap,
    pub(super) rate: f64,
    pub(super) planned: u64,
    pub(super) timeout: Duration,
    pub(super) connections: usize,
    pub(super) capture_limit: usize,
    pub(super) samples: Samples,
}

/// Where requests go.
#[derive(Debug)]
pub(super) struct Target {
    /// The URL as given.
    pub(super) url: String,
    /// `host:port`, to connect to.
    pub(super) address: String,
    /// The `host` header.
    host: HeaderValue,
    /// The request target: path and query.
    pub(super) path: Uri,
}

impl Target {
    fn parse(url: &str) -> Result<Self, SettingError> {
        let uri: Uri =
            url.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| SettingError::Url {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        let not_http = || SettingError::NotHttp(url.to_owned());
        if uri.scheme_str() != Some("http") {
            return Err(not_http());
        }
        let authority = uri.authority().ok_or_else(not_http)?;
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(not_http());
        }
        let port = authority.port_u16().unwrap_or(80);
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .map_err(|e| SettingError::Url {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| not_http())?;
        Ok(Self {
            url: url.to_owned(),
            address: format!("{}:{port}", authority.host()),
            host,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_requests_counts_the_due_times_inside_the_duration() {
        let check = |rate, millis, max, expect| {
            assert_eq!(
                planned_requests(rate, Duration::from_millis(millis), max),
                expect,
                "rate {rate}, {millis} ms, max {max}"
            );
        };
        check(100.0, 300, 1000, 30);
        check(200.0, 250, 1000, 50);
        check(200.0, 250, 20, 20);
        check(3.0, 1000, 1000, 3);
        check(2.5, 1000, 1000, 3);
        check(0.5, 1000, 1000, 1);
        check(1e9, 1000, 7, 7);
        check(1e-12, 1000, 7, 1);
    }
}
