//! Stage 4 of mlops, release management.
//!
//! This crate grows with the release issue. Today it holds:
//!
//! - [`stats`]: the tests a release analysis decides with (Welch's t,
//!   Mann-Whitney U, two-sample Kolmogorov-Smirnov, chi-square and Fisher's
//!   exact on 2×2 tables, PSI), each checked against scipy;
//! - [`driver`]: the request driver that sends a release its traffic when
//!   no users do (an open workload at a fixed arrival rate, latency measured
//!   from each request's intended send time, HDR histograms), bounded in
//!   time and count;
//! - [`gateway`]: the traffic-splitting data plane, an HTTP/1.1 reverse
//!   proxy in front of a release's variants (weights, header and cookie
//!   routes, least-outstanding balancing, passive ejection, live
//!   reconfiguration, per-variant metrics, a loopback admin API);
//! - [`service`]: the gateway as a long-lived service of the release
//!   environment, a process the provider supervises, owned by the
//!   `release` controller, with its config persisted across restarts and
//!   a client of its authenticated admin API.
//!
//! It depends on `core` and the crates of earlier stages only.

pub mod analysis;
pub mod driver;
pub mod gateway;
pub mod service;
pub mod stats;
