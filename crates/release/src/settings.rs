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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlops_core::manifest::Diagnostic;
use mlops_core::{CompiledSection, KindParams, ManifestSection, Stage};
use serde::{Deserialize, Serialize};

use crate::version::VersionPolicy;

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
    /// How release versions and tags are made (`[release.versioning]`).
    pub versioning: VersionPolicy,
    /// Whether a promotion makes an annotated git tag (`tag`, default
    /// true; nothing is tagged outside a git repository).
    pub tag: bool,
    /// The project's release-notes template (`notes-template`, relative
    /// to the project), else the built-in one.
    pub notes_template: Option<PathBuf>,
}

impl Default for ReleaseSettings {
    fn default() -> Self {
        ReleaseSettings {
            service: None,
            model: None,
            environment: DEFAULT_ENVIRONMENT.to_owned(),
            versioning: VersionPolicy::default(),
            tag: true,
            notes_template: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ReleaseWire {
    service: Option<toml::Spanned<String>>,
    model: Option<toml::Spanned<String>>,
    environment: Option<toml::Spanned<String>>,
    versioning: Option<toml::Spanned<VersionPolicy>>,
    tag: Option<bool>,
    notes_template: Option<toml::Spanned<String>>,
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
        if let Some(v) = &wire.versioning {
            for e in v.get_ref().check() {
                errors.push(Diagnostic::new(
                    format!("`versioning`: {e}"),
                    Some(v.span()),
                ));
            }
        }
        if let Some(t) = &wire.notes_template
            && (t.get_ref().is_empty() || Path::new(t.get_ref()).is_absolute())
        {
            errors.push(Diagnostic::new(
                "`notes-template` must be a path relative to the project",
                Some(t.span()),
            ));
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
            versioning: wire
                .versioning
                .map(toml::Spanned::into_inner)
                .unwrap_or_default(),
            tag: wire.tag.unwrap_or(true),
            notes_template: wire.notes_template.map(|t| PathBuf::from(t.into_inner())),
        }))
    }

    fn json_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "service": { "type": "string", "description": "the declared [infra.services] entry released" },
                "model": { "type": "string", "description": "the registered model whose versions are released" },
                "environment": { "type": "string", "default": DEFAULT_ENVIRONMENT, "description": "the environment users are served from" },
                "tag": { "type": "boolean", "default": true, "description": "tag each promotion in git (annotated)" },
                "notes-template": { "type": "string", "description": "the project's tera template for release notes, relative to the project" },
                "versioning": {
                    "type": "object",
                    "description": "how release versions (semver) and tags are made",
                    "properties": {
                        "initial": { "type": "string", "default": "0.1.0" },
                        "tag": { "type": "string", "default": "{model}-v{version}" },
                        "default-bump": { "enum": ["major", "minor", "patch"], "default": "minor" },
                        "conventional-commits": { "type": "boolean", "default": true },
                        "major-paths": { "type": "array", "items": { "type": "string" } },
                        "minor-paths": { "type": "array", "items": { "type": "string" } }
                    },
                    "additionalProperties": false
                }
            }
        })
    }
}

/// The `[release]` section, for [`mlops_core::KindRegistry::register_stage_settings`].
pub fn section() -> Arc<dyn ManifestSection> {
    Arc::new(ReleaseSection)
}
