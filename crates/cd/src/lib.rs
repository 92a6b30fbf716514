//! Stage 3 of the maturity model: continuous delivery.
//!
//! This crate contributes the built-in step kinds that answer "how do I
//! ship the model I tested, and know exactly what I shipped?":
//!
//! - `package` ([`package`]): stores the model's files as a
//!   content-addressed artifact under `.mlops/artifacts/` and registers a
//!   version of the model with its lineage (commit, data hash, metrics, run,
//!   parent version) in the ledger's model registry
//!   ([`mlops_core::registry`]).
//!
//! - `deploy` ([`deploy`]): verifies a registered version's files against
//!   their recorded hashes and deploys it to an environment (`staging`)
//!   through a provider of `mlops-iac`, waiting until it is healthy.
//! - `smoke` ([`smoke`]): sends sample requests to every replica of the
//!   deployed service and checks status codes and OIP v2 response shapes.
//!
//! [`package::verify_artifact`] checks a stored artifact against the
//! registry before anything deploys it. The registry's records and stage
//! changes live in `mlops-core`; this crate owns the files on disk and the
//! step kinds. Every kind records what it did as evidence
//! ([`mlops_core::StepContext::record`]); [`register`] adds each evidence
//! kind with its one-line summary.

use std::sync::Arc;

use mlops_core::{EvidenceKind, KindRegistry, RegistryError, Stage};

pub mod deploy;
pub mod package;
pub mod smoke;

/// The evidence kinds stage 3 records.
pub mod evidence {
    /// `package`: a model version stored and registered with its lineage.
    pub const PACKAGE: &str = "package";
    /// `deploy`: a version running healthy in an environment.
    pub const DEPLOY: &str = "deploy";
    /// `smoke`: sample requests answered by every replica.
    pub const SMOKE: &str = "smoke";
}

/// Registers stage 3: the kinds `package`, `deploy` and `smoke` and their
/// evidence. `deploy` and `smoke` read `[infra]` (stage 1 registers it) and
/// reach providers as the registry's [`mlops_iac::IacOptions`] say.
pub fn register(registry: &mut KindRegistry) -> Result<(), RegistryError> {
    registry.register(Arc::new(package::PackageKind))?;
    registry.register(Arc::new(deploy::DeployKind))?;
    registry.register(Arc::new(smoke::SmokeKind))?;
    for name in [evidence::PACKAGE, evidence::DEPLOY, evidence::SMOKE] {
        registry.register_evidence(EvidenceKind {
            name,
            stage: Stage::Cd,
            summarize,
        })?;
    }
    Ok(())
}

/// One line saying what a piece of evidence this crate's kinds record
/// shows, for `pipeline status` and reports; `None` for other kinds.
fn summarize(evidence: &mlops_core::Evidence) -> Option<String> {
    let b = &evidence.body;
    Some(match evidence.kind.as_str() {
        evidence::PACKAGE => {
            let digest = b["digest"].as_str()?;
            let files = b["files"].as_u64().unwrap_or(0);
            format!(
                "{}:{} (sha256 {}…, {files} file{}, {})",
                b["model"].as_str()?,
                b["version"].as_i64()?,
                &digest[..digest.len().min(8)],
                if files == 1 { "" } else { "s" },
                if b["created"] == true {
                    "new"
                } else {
                    "existing"
                }
            )
        }
        evidence::DEPLOY => format!(
            "{} in {} `{}`{}",
            b["version"].as_str()?,
            b["provider"].as_str()?,
            b["environment"].as_str()?,
            if b["noop"] == true {
                " (already running)".to_owned()
            } else {
                format!(
                    " at {}",
                    b["endpoints"]
                        .as_array()?
                        .iter()
                        .filter_map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
        evidence::SMOKE => format!(
            "{} of {} smoke checks passed on {} replica{}",
            b["cases"].as_u64()?.saturating_sub(b["failed"].as_u64()?),
            b["cases"].as_u64()?,
            b["endpoints"].as_array()?.len(),
            if b["endpoints"].as_array()?.len() == 1 {
                ""
            } else {
                "s"
            }
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_evidence_is_one_line() {
        let e = mlops_core::Evidence {
            kind: "package".to_owned(),
            body: serde_json::json!({
                "model": "iris", "version": 3, "digest": "1a2b3c4d5e6f", "created": true,
                "files": 2, "bytes": 10
            }),
            from_run: None,
        };
        assert_eq!(
            summarize(&e).as_deref(),
            Some("iris:3 (sha256 1a2b3c4d…, 2 files, new)")
        );
        let other = mlops_core::Evidence {
            kind: "tests".to_owned(),
            ..e
        };
        assert_eq!(summarize(&other), None);
    }
}
