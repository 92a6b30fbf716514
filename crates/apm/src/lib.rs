//! Stage 5 of mlops, application performance monitoring.
//!
//! - [`prom`]: the Prometheus text exposition format, parsed (scrapes of
//!   model replicas and of the gateway) and written;
//! - [`tsdb`]: time series in SQLite, with downsampling and retention;
//! - [`drift`]: data and prediction drift between a reference and live
//!   inputs, per feature;
//! - [`settings`]: `[apm]`, the SLOs and where alerts go;
//! - [`slo`]: SLOs as multiwindow multi-burn-rate alerts, and the alerts'
//!   states.
//!
//! [`register`] adds the settings to a [`KindRegistry`].
//!
//! It depends on `core` and the crates of earlier stages only.

use mlops_core::{KindRegistry, RegistryError, Stage};

pub mod drift;
pub mod prom;
pub mod settings;
pub mod slo;
pub mod tsdb;

/// Registers stage 5: the `[apm]` settings.
pub fn register(registry: &mut KindRegistry) -> Result<(), RegistryError> {
    registry.register_stage_settings(Stage::Apm, settings::section())?;
    Ok(())
}
