//! Stage 6 of mlops, load testing and autoscaling.
//!
//! So far:
//! - [`generator`]: the load generator's results around the release
//!   stage's request driver (the one HTTP engine of mlops) — result files
//!   with lossless histograms, exact merges of several generators,
//!   thresholds, CSV and text exports; `mlops loadtest run` and
//!   `mlops loadtest merge` drive it;
//! - [`autoscale`]: the autoscaling policies — Kubernetes'
//!   HorizontalPodAutoscaler (`hpa`) and Knative's autoscaler (`kpa`) as
//!   pure functions of what their controllers see, and the scenario format
//!   that `mlops autoscale simulate` runs.
//!
//! The five kinds of load test as step kinds, the capacity model and the
//! autoscaler service come with the rest of this stage (see
//! `docs/loadtest.md`).

pub mod autoscale;
pub mod generator;
