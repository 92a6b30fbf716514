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
//! - the load-test step kinds [`performance`], [`endurance`] and
//!   [`volume`] (`load-test` evidence), [`stress`] (`breaking-point` and
//!   `capacity` evidence) and [`scalability`] (`capacity` evidence against
//!   replicas); [`register`] adds them to a
//!   registry.
//!
//! The other kinds of load test, the capacity model and the autoscaler
//! service come with the rest of this stage (see `docs/loadtest.md`).

use std::sync::Arc;

use mlops_core::{EvidenceKind, KindRegistry, RegistryError, Stage};

pub mod autoscale;
pub mod capacity;
pub mod endurance;
pub mod generator;
pub mod performance;
pub mod scalability;
pub mod stress;
pub mod volume;

/// The evidence kinds stage 6 records.
pub mod evidence {
    /// `load-test`: a load test's result — the load, what came back, the
    /// latency, the thresholds checked.
    pub const LOAD_TEST: &str = "load-test";
    /// `breaking-point`: the highest arrival rate sustained within the
    /// SLO, the lowest that broke it and what failed first, every level.
    pub const BREAKING_POINT: &str = "breaking-point";
    /// `capacity`: a fitted capacity model (the Universal Scalability
    /// Law), its goodness of fit, its peak.
    pub const CAPACITY: &str = "capacity";
}

/// Registers stage 6: the `performance`, `stress`, `endurance`, `volume`
/// and `scalability` kinds and the
/// `load-test`, `breaking-point` and `capacity` evidence kinds. The steps reach the release environment's gateway as the release
/// kinds do (the [`mlops_release::service::GatewayProgram`] option, else
/// `mlops` from beside the running program or from `PATH`).
pub fn register(registry: &mut KindRegistry) -> Result<(), RegistryError> {
    registry.register(Arc::new(performance::PerformanceKind))?;
    registry.register(Arc::new(stress::StressKind))?;
    registry.register(Arc::new(endurance::EnduranceKind))?;
    registry.register(Arc::new(volume::VolumeKind))?;
    registry.register(Arc::new(scalability::ScalabilityKind))?;
    registry.register_evidence(EvidenceKind {
        name: evidence::LOAD_TEST,
        stage: Stage::Loadtest,
        summarize: performance::summarize,
    })?;
    registry.register_evidence(EvidenceKind {
        name: evidence::BREAKING_POINT,
        stage: Stage::Loadtest,
        summarize: stress::summarize,
    })?;
    registry.register_evidence(EvidenceKind {
        name: evidence::CAPACITY,
        stage: Stage::Loadtest,
        summarize: stress::summarize_capacity,
    })?;
    Ok(())
}
