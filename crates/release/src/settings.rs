//! The settings of stage 4, `[release]` beside `[release.steps.*]`:
//! which declared service is released, which registered model it serves,
//! and in which environment.
//!
//! ```toml
//! [release]
//! service = "iris"           # an [infra.services] entry
//! model = "iris"             # a model of the registry
//! environment = "production" # the default
//! ```
//!
//! Every key is optional here, so that a stage of `run` steps needs no
//! settings; the release kinds (`canary`) refuse to compile without
//! `service` and `model`, and check the service against `[infra]`.

use std::sync::Arc;

use mlops_core::manifest::Diagnostic;
use mlops_core::{CompiledSection, KindParams, ManifestSection, Stage};
use serde::{Deserialize, Serialize};

/// The default release environment.
pub const DEFAULT_ENVIRONMENT: &str = "production";

/// `[release]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseSettings {
    /// The declared service released (`[infra.services.NAME]`).
    pub service: Option<String>,
    /// The registered model whose versions are released.
    pub model: Option<String>,
    /// The environment users are served from (`production`).
    pub environment: String,
}

impl Default for ReleaseSettings {
    fn default() -> Self {
        ReleaseSettings {
            service: None,
            model: None,
            environment: DEFAULT_ENVIRONMENT.to_owned(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ReleaseWire {
    service: Option<toml::Spanned<String>>,
    model: Option<toml::Spanned<String>>,
    environment: Option<toml::Spanned<String>>,
}

struct ReleaseSection;

/// A name of a service, model or environment: lowercase letters, digits,
/// `-`, `_` and `.`, starting with a letter or digit.
fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ManifestSection for ReleaseSection {
    fn name(&self) -> &'static str {
        Stage::Release.name()
    }

    fn compile(&self, table: Option<&KindParams<'_>>) -> Result<CompiledSection, Vec<Diagnostic>> {
        let Some(table) = table else {
            return Ok(CompiledSection::new(ReleaseSettings::default()));
        };
        let wire: ReleaseWire = table.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        for (key, value) in [
            ("service", &wire.service),
            ("model", &wire.model),
            ("environment", &wire.environment),
        ] {
            if let Some(v) = value
                && !valid_name(v.get_ref())
            {
                errors.push(Diagnostic::new(
                    format!(
                        "`{key}` must be letters, digits, `-`, `_` and `.`, not `{}`",
                        v.get_ref()
                    ),
                    Some(v.span()),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CompiledSection::new(ReleaseSettings {
            service: wire.service.map(toml::Spanned::into_inner),
            model: wire.model.map(toml::Spanned::into_inner),
            environment: wire
                .environment
                .map_or_else(|| DEFAULT_ENVIRONMENT.to_owned(), toml::Spanned::into_inner),
        }))
    }

    fn json_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "service": { "type": "string", "description": "the declared [infra.services] entry released" },
                "model": { "type": "string", "description": "the registered model whose versions are released" },
                "environment": { "type": "string", "default": DEFAULT_ENVIRONMENT, "description": "the environment users are served from" }
            }
        })
    }
}

/// The `[release]` section, for [`mlops_core::KindRegistry::register_stage_settings`].
pub fn section() -> Arc<dyn ManifestSection> {
    Arc::new(ReleaseSection)
}
