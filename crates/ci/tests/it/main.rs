//! Integration tests of the `ci` stage kinds, one module per kind, in one
//! test binary.

mod data;
mod export;
mod gate;
mod junit;
mod repro;
mod secret_scan;

use std::path::Path;

use mlops_core::ledger::StepSummary;
use mlops_core::{KindRegistry, RunSummary, Stage};

/// The first `ci` step of a run.
#[allow(dead_code)]
pub(crate) fn ci_step(run: &RunSummary) -> &StepSummary {
    mlops_testkit::first_step(run, Stage::Ci)
}

/// Every kind the crate contributes.
pub(crate) fn registry() -> KindRegistry {
    let mut r = KindRegistry::new();
    mlops_ci::register(&mut r).expect("stage 2 registers");
    r
}

/// Writes `mlops.toml` into `dir`, runs the whole pipeline there and
/// returns the recorded run (steps with their evidence). A manifest without
/// an `iac` stage gets a trivial one, since stages are climbed in order.
#[allow(dead_code)]
pub(crate) fn run_pipeline(dir: &Path, manifest: &str) -> RunSummary {
    let manifest = if manifest.contains("[iac.") {
        manifest.to_owned()
    } else {
        format!("{manifest}\n[iac.steps.ready]\nrun = \"true\"\n")
    };
    mlops_testkit::run_manifest(dir, &manifest, &registry())
}
