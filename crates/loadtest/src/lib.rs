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
//! - [`performance`]: the first load-test step kind, recording `load-test`
//!   evidence; [`register`] adds it to a registry.
//!
//! The other kinds of load test, the capacity model and the autoscaler
//! service come with the rest of this stage (see `docs/loadtest.md`).

use std::sync::Arc;

use mlops_core::{EvidenceKind, KindRegistry, RegistryError, Stage};

pub mod autoscale;
pub mod generator;
pub mod performance;

/// The evidence kinds stage 6 records.
pub mod evidence {
    /// `load-test`: a load test's result — the load, what came back, the
    /// latency, the thresholds checked.
    pub const LOAD_TEST: &str = "load-test";
}

/// Registers stage 6: the `performance` kind and the `load-test` evidence
/// kind. The steps reach the release environment's gateway as the release
/// kinds do (the [`mlops_release::service::GatewayProgram`] option, else
/// `mlops` from beside the running program or from `PATH`).
pub fn register(registry: &mut KindRegistry) -> Result<(), RegistryError> {
    registry.register(Arc::new(performance::PerformanceKind))?;
    registry.register_evidence(EvidenceKind {
        name: evidence::LOAD_TEST,
        stage: Stage::Loadtest,
        summarize: performance::summarize,
    })?;
    Ok(())
}
