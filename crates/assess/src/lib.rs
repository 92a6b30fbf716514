//! `mlops assess`: a maturity assessment of any repository, backed by
//! evidence.
//!
//! The assessment reads two kinds of evidence:
//! - **static** ([`scan`]): what the repository's files show — pinned
//!   environments, containers and infrastructure code, CI configuration and
//!   the commands it runs, tests, data and model validation, deployment,
//!   release, monitoring and load-test configuration, and committed secrets
//!   (the CI stage's secret scan over the tree and the git history);
//! - **run** ([`runs`]): what the ledger recorded — which stages passed,
//!   when, on which commit, how often, and what the steps found.
//!
//! From that evidence alone, [`score`] computes the six-stage maturity level
//! (with the gating rule), Microsoft's MLOps maturity level and the ML Test
//! Score, each pointing at its evidence, and lists every gap with its next
//! step. [`render`] writes the [`Report`] as HTML, Markdown or JSON.
//!
//! ```no_run
//! use std::path::Path;
//!
//! let report = mlops_assess::assess(Path::new("."), &mlops_assess::Options::default())?;
//! println!("stage level {}/6", report.stage_level);
//! print!("{}", mlops_assess::render::markdown(&report));
//! # Ok::<(), mlops_assess::AssessError>(())
//! ```
//!
//! This crate sits beside the stage crates, not among them: it reads what
//! every stage records, so it depends on `core` (ledger, stages) and on `ci`
//! (the secret scan), and no stage crate depends on it.

mod assess;
pub mod evidence;
pub mod render;
pub mod report;
pub mod runs;
pub mod scan;
pub mod score;

pub use assess::{AssessError, Options, assess};
pub use evidence::{AutomatedCommand, Evidence, Signal, Source};
pub use report::{Report, Severity, StageStatus, report_schema};
