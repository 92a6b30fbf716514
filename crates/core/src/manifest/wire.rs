//! The manifest as written: plain serde structs mirroring `mlops.toml`.
//!
//! These types only describe the file (and give `mlops schema` its JSON
//! Schema); the manifest compiler turns them into a validated [`crate::Pipeline`].
//! Spans ride along in [`toml::Spanned`] so every later error can point at
//! the exact key or value.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

/// The whole `mlops.toml`. Stage tables are optional, but an enabled stage
/// needs every earlier stage.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "mlops.toml", description = "An mlops project manifest")]
pub struct ManifestWire {
    /// The project.
    pub project: ProjectWire,
    /// Stage 1: Infrastructure as Code.
    pub iac: Option<StageWire>,
    /// Stage 2: Continuous Integration and automated testing.
    pub ci: Option<StageWire>,
    /// Stage 3: Continuous Delivery.
    pub cd: Option<StageWire>,
    /// Stage 4: Release Management.
    pub release: Option<StageWire>,
    /// Stage 5: Application Performance Monitoring.
    pub apm: Option<StageWire>,
    /// Stage 6: Load testing and auto-scale.
    pub loadtest: Option<StageWire>,
}

/// `[project]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProjectWire {
    /// The project's name.
    #[schemars(with = "String", length(min = 1))]
    pub name: Spanned<String>,
    /// One line about the project.
    pub description: Option<String>,
}

/// A stage table, e.g. `[ci]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StageWire {
    /// What the stage covers in this project.
    pub description: Option<String>,
    /// The stage's steps by name, e.g. `[ci.steps.test]`.
    pub steps: Option<BTreeMap<String, StepWire>>,
}

/// One step, e.g. `[ci.steps.test]`. Exactly one of `run` and `kind`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StepWire {
    /// A shell command, run with `/bin/sh -c` in its own process group.
    #[schemars(with = "Option<String>")]
    pub run: Option<Spanned<String>>,
    /// A built-in step kind contributed by a stage crate.
    #[schemars(with = "Option<String>")]
    pub kind: Option<Spanned<String>>,
    /// Parameters of the built-in kind.
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub with: Option<Spanned<toml::Table>>,
    /// Working directory relative to the project directory.
    #[schemars(with = "Option<String>")]
    pub cwd: Option<Spanned<String>>,
    /// Extra environment variables.
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub env: Option<BTreeMap<Spanned<String>, String>>,
    /// Longest one attempt may run, e.g. `"90s"`, `"10m"`.
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// How many times a failed attempt is retried (default 0).
    #[schemars(with = "Option<u32>")]
    pub retries: Option<Spanned<u32>>,
    /// Delay before the first retry (default `"1s"`); doubles each retry.
    #[schemars(with = "Option<String>")]
    pub retry_backoff: Option<Spanned<String>>,
    /// Steps in this or earlier stages that must pass first.
    #[schemars(with = "Option<Vec<String>>")]
    pub depends_on: Option<Vec<Spanned<String>>>,
    /// Globs of the files the step reads; a step with inputs is skipped
    /// (`cached`) when command, environment and inputs are unchanged.
    #[schemars(with = "Option<Vec<String>>")]
    pub inputs: Option<Vec<Spanned<String>>>,
    /// Paths the step must produce.
    #[schemars(with = "Option<Vec<String>>")]
    pub outputs: Option<Vec<Spanned<String>>>,
    /// Free text shown in plans.
    pub description: Option<String>,
}

/// The JSON Schema of `mlops.toml`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ManifestWire))
        .expect("a generated schema always serializes")
}

/// [`json_schema`] with the tables the registry's sections own (`[infra]`,
/// and a stage's own settings beside its `steps`): without them an editor
/// would reject those keys, since the manifest allows no unknown key.
pub fn json_schema_with(registry: &crate::KindRegistry) -> serde_json::Value {
    use serde_json::Value;
    let mut schema = json_schema();
    // Hoists a section's definitions to the root, where its `$ref`s point
    // once it is embedded.
    let embed = |schema: &mut Value, mut sub: Value| -> Value {
        if let Some(Value::Object(defs)) = sub.as_object_mut().and_then(|o| o.remove("$defs")) {
            let root = schema
                .as_object_mut()
                .map(|o| o.entry("$defs").or_insert_with(|| serde_json::json!({})));
            if let Some(Value::Object(root)) = root {
                for (k, v) in defs {
                    root.entry(k).or_insert(v);
                }
            }
        }
        if let Some(o) = sub.as_object_mut() {
            o.remove("$schema");
        }
        sub
    };
    for name in registry.section_names() {
        let Some(section) = registry.section(name) else {
            continue;
        };
        let sub = embed(&mut schema, section.json_schema());
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert(name.to_owned(), sub);
        }
    }
    for stage in crate::Stage::ALL {
        let Some(section) = registry.stage_settings(stage) else {
            continue;
        };
        let sub = embed(&mut schema, section.json_schema());
        // The stage's table: `description` and `steps`, plus the settings'
        // keys.
        let mut table = schema
            .pointer("/$defs/StageWire")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({ "type": "object", "properties": {} }));
        match sub.get("properties") {
            Some(Value::Object(extra)) => {
                if let Some(Value::Object(props)) = table.get_mut("properties") {
                    for (k, v) in extra {
                        props.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                if let Some(Value::Array(required)) = sub.get("required")
                    && let Some(o) = table.as_object_mut()
                {
                    o.insert("required".to_owned(), Value::Array(required.clone()));
                }
            }
            // Settings that describe no keys: any key is theirs.
            _ => {
                if let Some(o) = table.as_object_mut() {
                    o.remove("additionalProperties");
                }
            }
        }
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert(stage.name().to_owned(), table);
        }
    }
    schema
}
