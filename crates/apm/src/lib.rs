//! Stage 5 of mlops, application performance monitoring.
//!
//! - [`prom`]: the Prometheus text exposition format, parsed (scrapes of
//!   model replicas and of the gateway) and written;
//! - [`tsdb`]: time series in SQLite, with downsampling and retention;
//! - [`drift`]: data and prediction drift between a reference and live
//!   inputs, per feature.
//!
//! It depends on `core` and the crates of earlier stages only.

pub mod drift;
pub mod prom;
pub mod tsdb;
