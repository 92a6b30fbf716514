//! The `volume` step kind: large payloads — batches of rows in each
//! request — on the released service, through its gateway.
//!
//! ```toml
//! [loadtest.steps.volume]
//! kind = "volume"
//! with = { traffic = { csv = "data/iris.csv", exclude = ["species"], rate = 20 },
//!          batch = 1000, duration = "5s", thresholds = ["p99 < 1s", "error_rate < 1%"] }
//! ```
//!
//! The load is `performance`'s (same keys), but each request is an Open
//! Inference Protocol request of `batch` rows of `traffic.csv` (shape
//! `[batch, columns]`; the rows cycled so every request holds exactly
//! `batch`). A service or gateway that refuses the size (413) or slows
//! with it fails the thresholds. The `load-test` evidence has `kind =
//! "volume"`, the `batch`, the mean `request_bytes` and the
//! `rows_per_second` served.

use std::sync::Arc;

use mlops_core::manifest::Diagnostic;
use mlops_core::{KindParams, Stage, StepAction, StepKind};

/// The `volume` kind.
#[derive(Debug)]
pub struct VolumeKind;

impl StepKind for VolumeKind {
    fn name(&self) -> &'static str {
        "volume"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Loadtest)
    }

    fn summary(&self) -> &'static str {
        "large payloads on the released service: batches of rows in each request, judged by thresholds"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        crate::performance::compile(self.name(), params)
    }
}
