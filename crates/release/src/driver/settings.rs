//! The settings of a run, and their check: [`DriverSettings`] compiles into
//! a [`Driver`], listing every problem at once.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Uri};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::engine::Hooks;
use super::report::{ObservedResponse, SecondBucket, TrafficRun};
use super::samples::Samples;
use super::schedule::{Arrivals, Schedule, Workload};
use super::{DriverError, engine};

/// The longest per-request timeout: it bounds how many seconds of the
/// schedule can be under way at once, and so the memory a run holds.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The most connections a run may open.
const MAX_CONNECTIONS: usize = 1024;

/// The longest think time of a closed workload.
const MAX_THINK: Duration = Duration::from_secs(3600);

/// What a run sends, where and how fast, before it is checked.
///
/// [`DriverSettings::new`] fills in the defaults: an open workload at a
/// constant rate, `POST`, no extra headers, a 10 s timeout, 8 connections,
/// bodies captured up to 64 KiB, no per-second histograms kept.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverSettings {
    /// The target: an `http://` URL (no TLS).
    pub url: String,
    /// The HTTP method.
    pub method: String,
    /// Extra request headers. `content-type` defaults to
    /// `application/json`; `host` comes from the URL.
    pub headers: Vec<(String, String)>,
    /// How the load is offered: arrivals on a schedule (open) or users
    /// waiting for their responses (closed). No request is due, or sent,
    /// after its duration.
    pub workload: Workload,
    /// No more than this many requests are sent.
    pub max_requests: u64,
    /// A request without a complete response this long after it was due
    /// is a timeout (at most 60 s).
    pub timeout: Duration,
    /// The keep-alive connections of an open workload (1 to 1024):
    /// requests beyond them wait for one, and their latency still runs from
    /// when they were due. A closed workload opens one per user.
    pub connections: usize,
    /// The most response body bytes handed to an observer per response.
    pub capture_limit: usize,
    /// Keep each second's latency histogram, serialized, in
    /// [`TrafficRun::second_histograms`] (a few hundred bytes a second), so
    /// runs of several processes merge second by second without loss.
    pub keep_second_histograms: bool,
}

/// One problem with [`DriverSettings`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingError {
    /// The rate is not a positive finite number.
    #[error("the rate must be a positive number of requests per second, not {0}")]
    Rate(f64),
    /// An open workload without stages.
    #[error("an open workload needs at least one stage")]
    NoStages,
    /// Stages whose rates are all zero.
    #[error("the stages' rates are all zero: no request would be sent")]
    NoArrivals,
    /// The user count of a closed workload is out of range.
    #[error("users must be between 1 and {MAX_CONNECTIONS}, not {0}")]
    Users(usize),
    /// A think time longer than an hour.
    #[error("the think time must be at most an hour, not {0:?}")]
    Think(Duration),
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
    /// An `https://` URL: the driver speaks plain HTTP only.
    #[error(
        "the target `{0}` is https: the driver sends plain HTTP only (to loopback or a private network, or to a local TLS terminator); give an http:// url"
    )]
    Https(String),
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
        Self::with_workload(url, Workload::constant(rate, duration), max_requests)
    }

    /// Settings with the defaults, for `workload` to `url`, bounded by its
    /// duration and `max_requests`.
    pub fn with_workload(url: impl Into<String>, workload: Workload, max_requests: u64) -> Self {
        Self {
            url: url.into(),
            method: "POST".to_owned(),
            headers: Vec::new(),
            workload,
            max_requests,
            timeout: Duration::from_secs(10),
            connections: 8,
            capture_limit: 64 * 1024,
            keep_second_histograms: false,
        }
    }

    /// Checks the settings and pairs them with the samples to send.
    pub fn compile(&self, samples: Samples) -> Result<Driver, DriverError> {
        let mut problems = Vec::new();
        let schedule = self.schedule(&mut problems);
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
        if self.workload.duration().is_zero()
            || matches!(&self.workload, Workload::Open { stages } if stages.iter().any(|s| s.duration.is_zero()))
        {
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
        let (Some(target), Some(method), Some(schedule), true) =
            (target, method, schedule, problems.is_empty())
        else {
            return Err(DriverError::Settings(problems));
        };
        headers.insert(HOST, target.host.clone());
        // A body needs a type; a bodiless GET does not.
        if !headers.contains_key(CONTENT_TYPE) && samples.bodies().iter().any(|b| !b.is_empty()) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let connections = match &schedule {
            Schedule::Open(_) => self.connections,
            Schedule::Closed { users, .. } => *users,
        };
        Ok(Driver {
            plan: Arc::new(Plan {
                target,
                method,
                headers,
                schedule,
                max_requests: self.max_requests,
                timeout: self.timeout,
                connections,
                capture_limit: self.capture_limit,
                keep_second_histograms: self.keep_second_histograms,
                samples,
            }),
        })
    }

    /// The workload, checked; `None` with the problems pushed.
    fn schedule(&self, problems: &mut Vec<SettingError>) -> Option<Schedule> {
        let before = problems.len();
        match &self.workload {
            Workload::Open { stages } => {
                if stages.is_empty() {
                    problems.push(SettingError::NoStages);
                }
                for stage in stages {
                    let constant = stage.from.to_bits() == stage.to.to_bits();
                    let rates = if constant {
                        &[stage.from][..]
                    } else {
                        &[stage.from, stage.to][..]
                    };
                    for &rate in rates {
                        if !(rate.is_finite() && rate >= 0.0) {
                            problems.push(SettingError::Rate(rate));
                        }
                    }
                }
                let valid = problems.len() == before;
                if valid && !stages.is_empty() {
                    let arrivals: f64 = stages
                        .iter()
                        .map(|s| (s.from + s.to) * s.duration.as_secs_f64())
                        .sum();
                    let all_zero = stages.iter().all(|s| s.from == 0.0 && s.to == 0.0);
                    if all_zero && stages.len() == 1 {
                        problems.push(SettingError::Rate(stages[0].from));
                    } else if all_zero {
                        problems.push(SettingError::NoArrivals);
                    } else if arrivals <= 0.0 {
                        // Rates above zero for no time: the duration check
                        // says why.
                        return None;
                    }
                }
                (problems.len() == before)
                    .then(|| Schedule::Open(Arrivals::new(stages, self.max_requests.max(1))))
            }
            Workload::Closed {
                users,
                think,
                duration,
            } => {
                if !(1..=MAX_CONNECTIONS).contains(users) {
                    problems.push(SettingError::Users(*users));
                }
                if *think > MAX_THINK {
                    problems.push(SettingError::Think(*think));
                }
                (problems.len() == before).then_some(Schedule::Closed {
                    users: *users,
                    think: *think,
                    duration: *duration,
                })
            }
        }
    }
}

/// A checked run, ready to send: run it as often as needed.
#[derive(Debug, Clone)]
pub struct Driver {
    plan: Arc<Plan>,
}

impl Driver {
    /// The requests a run plans: at most `max_requests`, all due within the
    /// duration.
    ///
    /// A closed workload plans none ahead: this is its `max_requests`.
    pub fn planned_requests(&self) -> u64 {
        match &self.plan.schedule {
            Schedule::Open(arrivals) => arrivals.planned,
            Schedule::Closed { .. } => self.plan.max_requests,
        }
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
        engine::drive(Arc::clone(&self.plan), stop.clone(), Hooks::default()).await
    }

    /// [`Driver::run`], sending every second of the schedule to `seconds`
    /// as it closes (once every request due in it has an outcome): a live
    /// view for a progress line.
    pub async fn run_watched(
        &self,
        stop: &CancellationToken,
        seconds: mpsc::UnboundedSender<SecondBucket>,
    ) -> TrafficRun {
        let hooks = Hooks {
            seconds: Some(seconds),
            ..Hooks::default()
        };
        engine::drive(Arc::clone(&self.plan), stop.clone(), hooks).await
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
        let hooks = Hooks {
            observer: Some(observer),
            ..Hooks::default()
        };
        engine::drive(Arc::clone(&self.plan), stop.clone(), hooks).await
    }
}

/// A checked run: what the engine reads.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) target: Target,
    pub(super) method: Method,
    /// Every request header, `host` included.
    pub(super) headers: HeaderMap,
    pub(super) schedule: Schedule,
    pub(super) max_requests: u64,
    pub(super) timeout: Duration,
    /// The workers: one connection each.
    pub(super) connections: usize,
    pub(super) capture_limit: usize,
    pub(super) keep_second_histograms: bool,
    pub(super) samples: Samples,
}

/// Where requests go.
#[derive(Debug)]
pub(super) struct Target {
    /// The URL as given.
    pub(super) url: String,
    /// The host to connect to (an IPv6 address in brackets).
    pub(super) connect_host: String,
    /// The port to connect to.
    pub(super) port: u16,
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
        if uri.scheme_str() == Some("https") {
            return Err(SettingError::Https(url.to_owned()));
        }
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
            connect_host: authority.host().to_owned(),
            port,
            host,
            path,
        })
    }
}
