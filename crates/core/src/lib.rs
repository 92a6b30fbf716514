//! The mlops engine: the manifest, the six-stage model, the gated DAG, the
//! executor and the run ledger.
//!
//! `mlops-core` owns what every stage shares. A project is described by
//! `mlops.toml` ([`manifest`]), compiled into a [`Pipeline`] whose graph has a
//! gate node per [`Stage`], and run by an [`Executor`] that records every run,
//! step and gate in an SQLite [`Ledger`] under `.mlops/`. The stage crates
//! (`iac`, `ci`, …) add built-in step kinds through a [`KindRegistry`]; this
//! crate depends on none of them, and never prints.
//!
//! Embedding the engine:
//!
//! ```no_run
//! use mlops_core::{Executor, Pipeline, RunOptions, Stage, Step, StepFailure};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = Pipeline::new(
//!     "demo",
//!     vec![
//!         Step::shell("build", Stage::Iac, "cargo build --locked"),
//!         Step::task("check", Stage::Ci, "check-v1", |ctx| async move {
//!             ctx.log("checking");
//!             Ok::<(), StepFailure>(())
//!         }),
//!     ],
//!     None,
//! )
//! .map_err(|errors| format!("{errors:?}"))?;
//! let mut executor = Executor::new(".")?;
//! let mut events = executor.subscribe();
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         println!("{event:?}");
//!     }
//! });
//! let report = executor.run(&pipeline, RunOptions::default()).await?;
//! println!("run {} {:?}", report.run_id, report.status);
//! # Ok(()) }
//! ```

mod diagnostic;
pub mod event;
pub mod exec;
pub mod git;
pub mod infra;
pub mod init;
pub mod kind;
pub mod ledger;
pub mod manifest;
pub mod pipeline;
mod process;
pub mod registry;
pub mod section;
pub mod stage;
pub mod status;

pub use event::Event;
pub use exec::{ExecError, Executor, RunOptions, RunReport, Selection, StepReport};
pub use kind::{
    CommandEnd, EvidenceKind, KindParams, KindRegistry, ManifestSection, StepAction, StepContext,
    StepFailure, StepKind,
};
pub use ledger::{
    Evidence, EvidenceRecord, Ledger, LedgerError, LedgerHandle, RunSummary, StepEvidence,
};
pub use manifest::{Manifest, ManifestError};
pub use pipeline::{Action, Pipeline, PipelineError, Step};
pub use section::{CompiledSection, RegistryError, SectionRead};
pub use stage::Stage;
pub use status::{RunStatus, StageStatus, StepStatus};
pub use tokio_util::sync::CancellationToken;
