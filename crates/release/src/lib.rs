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
//! - [`settings`]: the `[release]` settings (service, model, environment);
//! - [`canary`]: the `canary` step kind, which runs the staging version
//!   beside production behind the gateway, shifts traffic to it step by
//!   step, analyzes every step and promotes or rolls back;
//! - [`blue_green`]: the `blue-green` kind, which runs the staging
//!   version as a preview reached by a header, analyzes it against stable,
//!   switches every request at once and keeps the old colour warm for
//!   `keep-old`;
//! - [`ab`]: the `ab` kind, an experiment between production (A) and the
//!   staging version (B) assigned per user by the gateway, one metric
//!   compared with a hypothesis test, the winner reported (and promoted
//!   when asked);
//! - [`shadow`]: the `shadow` kind, a pre-check that mirrors traffic to
//!   the staging version, compares its answers and prediction
//!   distributions with stable's, and leaves it in staging for the next
//!   step or archives it.
//!
//! The strategies share one module (`strategy`: the common `with` keys,
//! starting and ending a release, driving and tallying sample traffic)
//! over the rollout core ([`rollout`]).
//!
//! - [`version`]: release versions (semver from the last release's tag and
//!   the commits since, by the versioning policy) and their annotated git
//!   tags;
//! - [`traffic`]: the sample traffic a step drives when no users do (the
//!   `traffic` table of `with`), shared with the later stages' steps;
//! - [`notes`]: release notes (commits, metrics against production, the
//!   analysis) rendered from a tera template the project may override.
//!
//! [`register`] adds the settings, the kinds and the evidence kinds to a
//! [`KindRegistry`]. It depends on `core` and the crates of earlier stages
//! only.

use std::sync::Arc;

use mlops_core::{EvidenceKind, KindRegistry, RegistryError, Stage};

pub mod ab;
pub mod analysis;
pub mod blue_green;
pub mod canary;
pub mod control;
pub mod driver;
pub mod gateway;
pub mod notes;
pub mod publish;
pub mod rollout;
pub mod service;
pub mod settings;
pub mod shadow;
pub mod state;
pub mod stats;
mod strategy;
pub mod traffic;
pub mod version;

/// The evidence kinds stage 4 records.
pub mod evidence {
    /// `release`: a release step's verdict (promote, rollback or pause),
    /// the versions and every round's analysis.
    pub const RELEASE: &str = "release";
    /// `rollback`: a candidate taken out, and why.
    pub const ROLLBACK: &str = "rollback";
}

/// Registers stage 4: the `[release]` settings, the kinds `canary`,
/// `blue-green`, `ab` and `shadow`, and the evidence kinds `release` and
/// `rollback`. The release kinds run the
/// gateway with the [`service::GatewayProgram`] option when the registry
/// has one (the CLI sets its own executable), else with `mlops` from beside
/// the running program or from `PATH`.
pub fn register(registry: &mut KindRegistry) -> Result<(), RegistryError> {
    registry.register_stage_settings(Stage::Release, settings::section())?;
    registry.register(Arc::new(canary::CanaryKind))?;
    registry.register(Arc::new(blue_green::BlueGreenKind))?;
    registry.register(Arc::new(ab::AbKind))?;
    registry.register(Arc::new(shadow::ShadowKind))?;
    for name in [evidence::RELEASE, evidence::ROLLBACK] {
        registry.register_evidence(EvidenceKind {
            name,
            stage: Stage::Release,
            summarize: canary::summarize,
        })?;
    }
    Ok(())
}
