//! Integration tests of the `cd` stage kinds, one module per kind, in one
//! test binary.

mod deploy;
mod package;

use std::path::Path;

use mlops_core::ledger::StepSummary;
use mlops_core::{Executor, KindRegistry, Ledger, Manifest, RunOptions, RunSummary, Stage};

/// The first `cd` step of a run.
pub(crate) fn cd_step(run: &RunSummary) -> &StepSummary {
    run.steps
        .iter()
        .find(|s| s.stage == Stage::Cd)
        .expect("a cd step")
}

/// The local provider's supervisor: `mlops-supervise`, built beside the
/// test binary by the workspace build.
pub(crate) fn iac_config() -> mlops_iac::IacConfig {
    let exe = std::env::current_exe().expect("test executable");
    let program = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory")
        .join("mlops-supervise");
    mlops_iac::IacConfig {
        supervisor: mlops_iac::SupervisorCommand {
            program,
            args: Vec::new(),
        },
        provider: None,
    }
}

/// Every kind the CLI registers up to this stage.
pub(crate) fn registry() -> KindRegistry {
    let mut r = KindRegistry::new();
    mlops_iac::register(&mut r, iac_config());
    mlops_ci::register(&mut r);
    mlops_cd::register(&mut r, iac_config());
    r
}

/// Writes `mlops.toml` into `dir` (with trivial `iac` and `ci` steps before
/// the given `cd` steps, since stages are climbed in order), runs the whole
/// pipeline there and returns the recorded run.
pub(crate) fn run_pipeline(dir: &Path, cd_steps: &str) -> RunSummary {
    let manifest = format!(
        "[project]\nname = \"p\"\n\n[iac.steps.ready]\nrun = \"true\"\n\n[ci.steps.check]\nrun = \"true\"\n\n{cd_steps}\n"
    );
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
