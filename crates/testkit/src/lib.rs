//! Test support shared by mlops' crates (a dev-dependency only): write a
//! manifest, compile it with a registry, run it through the real engine and
//! read the recorded run back from the ledger. It depends on `core` alone,
//! so every stage crate's tests can use it with their own registry.

use std::path::Path;

pub mod bench;
pub mod chromium;

use mlops_core::{
    ExecError, Executor, KindRegistry, Ledger, Manifest, RunOptions, RunSummary, Stage,
};

/// Writes `manifest` as `dir/mlops.toml`, runs the whole pipeline with the
/// default options and returns the recorded run. Panics, with the reason,
/// when the manifest is invalid or the engine fails (a test's setup).
pub fn run_manifest(dir: &Path, manifest: &str, registry: &KindRegistry) -> RunSummary {
    std::fs::write(dir.join("mlops.toml"), manifest).expect("write mlops.toml");
    run(dir, registry, RunOptions::default()).unwrap_or_else(|e| panic!("run: {e:#}"))
}

/// Loads `dir/mlops.toml` with `registry`, runs it with `options` on a
/// runtime of its own and returns the recorded run, or the engine's
/// refusal or failure. Panics when the manifest is invalid.
pub fn run(
    dir: &Path,
    registry: &KindRegistry,
    options: RunOptions,
) -> Result<RunSummary, ExecError> {
    let manifest = Manifest::load(dir, registry).unwrap_or_else(|e| panic!("manifest: {e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report =
        runtime.block_on(async { Executor::new(dir)?.run(&manifest.pipeline, options).await })?;
    Ok(Ledger::open(dir)
        .expect("ledger")
        .run(report.run_id)
        .expect("read run")
        .expect("run recorded"))
}

/// The first step of `stage` in a recorded run.
pub fn first_step(run: &RunSummary, stage: Stage) -> &mlops_core::ledger::StepSummary {
    run.steps
        .iter()
        .find(|s| s.stage == stage)
        .unwrap_or_else(|| panic!("no {stage} step in run {}", run.run_id))
}
