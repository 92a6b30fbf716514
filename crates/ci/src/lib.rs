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

use mlops_core::{EvidenceKind, KindRegistry, RegistryError, Stage};

pub mod data;
pub mod export;
pub mod gate;
pub mod junit;
pub mod metrics;
pub mod repro;
pub mod secret_scan;

/// The evidence kinds stage 2 records (each under its kind's name).
pub mod evidence {
    /// `tests`: a JUnit report ingested.
    pub const TESTS: &str = "tests";
    /// `data-validation`: a data file checked against its schema.
    pub const DATA_VALIDATION: &str = "data-validation";
    /// `model-gate`: metric thresholds and regressions checked.
    pub const MODEL_GATE: &str = "model-gate";
    /// `reproducibility`: training run twice and compared.
    pub const REPRODUCIBILITY: &str = "reproducibility";
    /// `secret-scan`: the tree and history scanned for credentials.
    pub const SECRET_SCAN: &str = "secret-scan";
}

/// Registers stage 2: the kinds `tests`, `data-validation`, `model-gate`,
/// `reproducibility` and `secret-scan`, and their evidence.
pub fn register(registry: &mut KindRegistry) -> Result<(), RegistryError> {
    registry.register(Arc::new(data::DataValidationKind))?;
    registry.register(Arc::new(secret_scan::SecretScanKind))?;
    registry.register(Arc::new(junit::TestsKind))?;
    registry.register(Arc::new(gate::ModelGateKind))?;
    registry.register(Arc::new(repro::ReproducibilityKind))?;
    for name in [
        evidence::TESTS,
        evidence::DATA_VALIDATION,
        evidence::MODEL_GATE,
        evidence::REPRODUCIBILITY,
        evidence::SECRET_SCAN,
    ] {
        registry.register_evidence(EvidenceKind {
            name,
            stage: Stage::Ci,
            summarize,
        })?;
    }
    Ok(())
}

/// One line saying what a piece of evidence this crate's kinds record
/// shows, for `pipeline status` and reports; `None` for other kinds.
fn summarize(evidence: &mlops_core::Evidence) -> Option<String> {
    let b = &evidence.body;
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let count = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
    Some(match evidence.kind.as_str() {
        evidence::TESTS => serde_json::from_value::<junit::TestReport>(b.clone())
            .ok()?
            .summary(),
        evidence::MODEL_GATE => {
            let checks = b["checks"].as_array()?;
            let failed = checks
                .iter()
                .filter(|c| !(c["threshold_ok"] == true && c["regression_ok"] == true))
                .count();
            let baseline = match b["baseline"]["run_id"].as_i64() {
                Some(run) => format!("against run {run}"),
                None => "no baseline yet".to_owned(),
            };
            if failed == 0 {
                format!("{} checks passed, {baseline}", checks.len())
            } else {
                format!("{failed} of {} checks failed, {baseline}", checks.len())
            }
        }
        evidence::REPRODUCIBILITY => {
            let diffs = count(&b["differences"]);
            let runs = count(&b["runs"]);
            if diffs == 0 {
                format!("{runs} runs agree")
            } else {
                format!("{diffs} differences between {runs} runs")
            }
        }
        evidence::SECRET_SCAN => {
            let history = if b["history_scanned"] == true {
                format!(", {} commits", n(&b["commits_scanned"]))
            } else {
                ", no git history".to_owned()
            };
            format!(
                "{} findings in {} files{history}",
                count(&b["findings"]) as u64 + n(&b["findings_omitted"]),
                n(&b["files_scanned"])
            )
        }
        evidence::DATA_VALIDATION => {
            let verdict = if b["passed"] == true {
                "passed".to_owned()
            } else {
                format!("{} violations", count(&b["violations"]))
            };
            format!(
                "{}: {} rows, {verdict}",
                b["file"].as_str().unwrap_or("?"),
                n(&b["rows"])
            )
        }
        _ => return None,
    })
}
