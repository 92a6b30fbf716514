//! Stage 5 of mlops, application performance monitoring.
//!
//! - [`prom`]: the Prometheus text exposition format, parsed (scrapes of
//!   model replicas and of the gateway) and written;
//! - [`tsdb`]: time series in SQLite, with downsampling and retention;
//! - [`drift`]: data and prediction drift between a reference and live
//!   inputs, per feature;
//! - [`settings`]: `[apm]`, the SLOs and where alerts go;
//! - [`slo`]: SLOs as multiwindow multi-burn-rate alerts, and the alerts'
//!   states;
//! - [`collector`]: the metrics collector, a long-lived service of the
//!   release environment that scrapes, stores, evaluates the SLOs and
//!   delivers alerts.
//!
//! - [`slo_check`] and [`drift_check`]: the `slo-check` and `drift-check`
//!   step kinds;
//! - [`dashboard`]: the monitoring dashboard, self-contained HTML with
//!   SVG charts;
//! - [`logs`]: searching the release environment's logs and prediction
//!   log;
//! - [`export`]: the SLOs as Prometheus rules, a scrape configuration and
//!   a Grafana dashboard.
//!
//! [`register`] adds the settings, the kinds and the evidence kinds to a
//! [`KindRegistry`].
//!
//! It depends on `core` and the crates of earlier stages only.

use std::sync::Arc;

use mlops_core::{EvidenceKind, KindRegistry, RegistryError, Stage};

pub mod collector;
pub mod dashboard;
pub mod drift;
pub mod drift_check;
mod drive;
pub mod export;
pub mod logs;
pub mod prom;
pub mod settings;
pub mod slo;
pub mod slo_check;
pub mod tsdb;

/// The evidence kinds stage 5 records.
pub mod evidence {
    /// `slo`: the SLOs held (or not) over a window of the release
    /// environment's traffic, with the numbers behind the verdict.
    pub const SLO: &str = "slo";
    /// `drift`: each feature of the live inputs, and the predictions,
    /// against the reference data, with the tests behind the verdict.
    pub const DRIFT: &str = "drift";
}

/// Registers stage 5: the `[apm]` settings, the `slo-check` and
/// `drift-check` kinds and the `slo` and `drift` evidence kinds. The collector runs with the
/// [`collector::service::CollectorProgram`] option when the registry has
/// one (the CLI sets its own executable), else with `mlops` from beside
/// the running program or from `PATH`.
pub fn register(registry: &mut KindRegistry) -> Result<(), RegistryError> {
    registry.register_stage_settings(Stage::Apm, settings::section())?;
    registry.register(Arc::new(slo_check::SloCheckKind))?;
    registry.register(Arc::new(drift_check::DriftCheckKind))?;
    registry.register_evidence(EvidenceKind {
        name: evidence::SLO,
        stage: Stage::Apm,
        summarize: slo_check::summarize,
    })?;
    registry.register_evidence(EvidenceKind {
        name: evidence::DRIFT,
        stage: Stage::Apm,
        summarize: drift_check::summarize,
    })?;
    Ok(())
}
