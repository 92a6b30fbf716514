//! Integration tests of the `cd` stage kinds, one module per kind, in one
//! test binary.

mod deploy;
mod package;

use std::path::Path;

use mlops_core::ledger::StepSummary;
use mlops_core::{KindRegistry, RunSummary, Stage};

/// The first `cd` step of a run.
pub(crate) fn cd_step(run: &RunSummary) -> &StepSummary {
    mlops_testkit::first_step(run, Stage::Cd)
}

/// Every kind the CLI registers up to this stage (the local provider's
/// supervisor is `mlops-supervise`, built beside the test binary).
pub(crate) fn registry() -> KindRegistry {
    let mut r = KindRegistry::new();
    mlops_iac::register(&mut r).expect("stage 1 registers");
    mlops_ci::register(&mut r).expect("stage 2 registers");
    mlops_cd::register(&mut r).expect("stage 3 registers");
    r
}

/// Writes `mlops.toml` into `dir` (with trivial `iac` and `ci` steps before
/// the given `cd` steps, since stages are climbed in order), runs the whole
/// pipeline there and returns the recorded run.
pub(crate) fn run_pipeline(dir: &Path, cd_steps: &str) -> RunSummary {
    let manifest = format!(
        "[project]\nname = \"p\"\n\n[iac.steps.ready]\nrun = \"true\"\n\n[ci.steps.check]\nrun = \"true\"\n\n{cd_steps}\n"
    );
    mlops_testkit::run_manifest(dir, &manifest, &registry())
}
