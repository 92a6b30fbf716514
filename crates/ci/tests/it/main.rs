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
use mlops_core::{Executor, KindRegistry, Ledger, Manifest, RunOptions, RunSummary, Stage};

/// The first `ci` step of a run.
#[allow(dead_code)]
pub(crate) fn ci_step(run: &RunSummary) -> &StepSummary {
    run.steps
        .iter()
        .find(|s| s.stage == Stage::Ci)
        .expect("a ci step")
}

/// Every kind the crate contributes.
pub(crate) fn registry() -> KindRegistry {
    let mut r = KindRegistry::new();
    mlops_ci::register(&mut r);
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
    std::fs::write(dir.join("mlops.toml"), manifest).expect("write mlops.toml");
    let m = Manifest::load(dir, &registry()).unwrap_or_else(|e| panic!("manifest: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(async {
        Executor::new(dir)
            .expect("executor")
            .run(&m.pipeline, RunOptions::default())
            .await
            .expect("run")
    });
    Ledger::open(dir)
        .expect("ledger")
        .run(report.run_id)
        .expect("read run")
        .expect("run recorded")
}
