//! Stage 2 of the maturity model: continuous integration and automated
//! testing for data science.
//!
//! This crate contributes the built-in step kinds that answer "how do I
//! unit-test, functionally test and security-test a model?":
//!
//! - `tests` ([`junit`]): runs a test command and ingests its JUnit XML;
//! - `data-validation` ([`data`]): checks a CSV or JSON-lines file against a
//!   declared schema, streaming;
//! - `model-gate` ([`gate`]): checks metric thresholds and regressions
//!   against the last passing run;
//! - `reproducibility` ([`repro`]): trains twice and compares;
//! - `secret-scan` ([`secret_scan`]): looks for committed credentials in
//!   the tree and the git history.
//!
//! It also writes runs as JUnit XML and CI workflow files ([`export`]).
//! Every kind records what it checked as evidence in the ledger
//! ([`mlops_core::StepContext::record`]).

use std::sync::Arc;

use mlops_core::KindRegistry;

#[cfg(not(feature = "solo"))]
pub mod data;
#[cfg(feature = "wip")]
pub mod export;
#[cfg(feature = "wip")]
pub mod gate;
#[cfg(feature = "wip")]
pub mod junit;
#[cfg(feature = "wip")]
pub mod metrics;
#[cfg(feature = "wip")]
pub mod repro;
#[cfg(not(feature = "solo"))]
pub mod secret_scan;

/// Registers every kind this crate contributes.
pub fn register(registry: &mut KindRegistry) {
    #[cfg(not(feature = "solo"))]
    registry.register(Arc::new(data::DataValidationKind));
    #[cfg(not(feature = "solo"))]
    registry.register(Arc::new(secret_scan::SecretScanKind));
    #[cfg(feature = "wip")]
    registry.register(Arc::new(junit::TestsKind));
    #[cfg(feature = "wip")]
    registry.register(Arc::new(gate::ModelGateKind));
    #[cfg(feature = "wip")]
    registry.register(Arc::new(repro::ReproducibilityKind));
}
