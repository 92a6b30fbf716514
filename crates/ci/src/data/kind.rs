//! `kind = "data-validation"`: the step that validates a data file against
//! a schema and records the report as evidence.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlops_core::manifest::{Diagnostic, Diagnostics};
use mlops_core::{
    CancellationToken, KindParams, Stage, StepAction, StepContext, StepFailure, StepKind,
};
use toml::Spanned;

use super::validate::DEFAULT_MAX_EXAMPLES;
use super::wire::DataValidationWire;
use super::{
    DataError, Format, Schema, ValidateOptions, ValidationReport, error_chain, validate_reader,
};

/// The most line numbers a violation may list.
const MAX_EXAMPLES_LIMIT: i64 = 1000;

/// How many violations the step's failure message spells out; the step log
/// and the evidence have all of them.
const VIOLATIONS_IN_MESSAGE: usize = 3;

/// The `data-validation` step kind.
///
/// ```toml
/// [ci.steps.validate-data]
/// kind = "data-validation"
/// with = { file = "data/iris.csv", schema-file = "data/iris.schema.toml" }
/// ```
///
/// Parameters ([`super::wire::DataValidationWire`]): `file` (required), exactly one of
/// `schema` (an inline table) and `schema-file`, `format`, `max-examples`.
/// Paths are relative to the step's directory. The step fails when the
/// file has any violation; the whole [`ValidationReport`] is recorded as
/// `data-validation` evidence either way. The validation runs on a blocking
/// thread and stops when the step is cancelled.
///
/// The step is cached like any other: list the data and schema files in the
/// step's `inputs` so that a changed file runs it again.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataValidationKind;

/// Where the schema comes from.
enum SchemaSource {
    Inline(Schema),
    File(String),
}

/// A compiled step: what to check, against what.
struct Plan {
    file: String,
    schema: SchemaSource,
    format: Option<Format>,
    max_examples: usize,
}

/// How one attempt ended before it is turned into log lines and a verdict.
enum Outcome {
    Report(ValidationReport),
    InvalidSchema(Box<Diagnostics>, String),
    Error(String),
}

impl StepKind for DataValidationKind {
    fn name(&self) -> &'static str {
        "data-validation"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Ci)
    }

    fn summary(&self) -> &'static str {
        "checks a CSV or JSON-lines file against a schema: columns, types, ranges, allowed values, nulls, uniqueness, row count"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let wire: DataValidationWire = params.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        let file = match &wire.file {
            Some(file) => relative_path("file", file, &mut errors).then(|| file.get_ref().clone()),
            None => {
                errors.push(
                    Diagnostic::new(
                        "`data-validation` needs `file`, the data file to check",
                        Some(params.span()),
                    )
                    .with_help(
                        "for example `with = { file = \"data/train.csv\", schema-file = \"data/train.schema.toml\" }`",
                    ),
                );
                None
            }
        };
        let format = wire.format.as_ref().and_then(|f| {
            f.get_ref()
                .parse::<Format>()
                .map_err(|e| errors.push(Diagnostic::new(e.to_string(), Some(f.span()))))
                .ok()
        });
        let max_examples = match &wire.max_examples {
            None => Some(DEFAULT_MAX_EXAMPLES),
            Some(n) if (0..=MAX_EXAMPLES_LIMIT).contains(n.get_ref()) => {
                usize::try_from(*n.get_ref()).ok()
            }
            Some(n) => {
                errors.push(Diagnostic::new(
                    format!("`max-examples` must be within 0..={MAX_EXAMPLES_LIMIT}"),
                    Some(n.span()),
                ));
                None
            }
        };
        let schema = match (wire.schema, &wire.schema_file) {
            (Some(_), Some(schema_file)) => {
                errors.push(Diagnostic::new(
                    "set either `schema` or `schema-file`, not both",
                    Some(schema_file.span()),
                ));
                None
            }
            (None, None) => {
                errors.push(
                    Diagnostic::new(
                        "`data-validation` needs a schema: `schema` (a table) or `schema-file` (a path)",
                        Some(params.span()),
                    )
                    .with_help("`mlops data infer-schema FILE` proposes a schema file from a reference file"),
                );
                None
            }
            (Some(inline), None) => {
                let span = inline.span();
                match Schema::compile(inline.into_inner(), span) {
                    Ok(schema) => Some(SchemaSource::Inline(schema)),
                    Err(diagnostics) => {
                        errors.extend(diagnostics);
                        None
                    }
                }
            }
            (None, Some(schema_file)) => relative_path("schema-file", schema_file, &mut errors)
                .then(|| SchemaSource::File(schema_file.get_ref().clone())),
        };
        // With an inline schema everything is known now; a schema file may
        // still set the format.
        if let (Some(file), Some(SchemaSource::Inline(schema)), None, Some(span)) = (
            &file,
            &schema,
            format,
            wire.file.as_ref().map(Spanned::span),
        ) && schema.format.is_none()
            && Format::from_path(Path::new(file)).is_none()
        {
            errors.push(
                Diagnostic::new(
                    format!("cannot tell the format of `{file}` from its extension"),
                    Some(span),
                )
                .with_help("set `format` to \"csv\", \"tsv\" or \"jsonl\""),
            );
        }
        let (Some(file), Some(schema), Some(max_examples), true) =
            (file, schema, max_examples, errors.is_empty())
        else {
            return Err(errors);
        };
        let plan = Arc::new(Plan {
            file,
            schema,
            format,
            max_examples,
        });
        Ok(Arc::new(move |ctx: StepContext| {
            let plan = Arc::clone(&plan);
            async move { plan.run(ctx).await }
        }))
    }
}

/// A non-empty relative path, or a diagnostic.
fn relative_path(what: &str, value: &Spanned<String>, errors: &mut Vec<Diagnostic>) -> bool {
    match mlops_core::manifest::relative_path_problem(what, value, "the step's directory") {
        Some(d) => {
            errors.push(d);
            false
        }
        None => true,
    }
}

impl Plan {
    async fn run(self: Arc<Self>, ctx: StepContext) -> Result<(), StepFailure> {
        let cwd = ctx.cwd.clone();
        let cancel = ctx.cancel.clone();
        let outcome = tokio::task::spawn_blocking(move || self.check(&cwd, cancel))
            .await
            .unwrap_or_else(|e| Outcome::Error(format!("data validation stopped: {e}")));
        match outcome {
            Outcome::Error(message) => {
                ctx.log(&message);
                Err(StepFailure::new(message))
            }
            Outcome::InvalidSchema(diagnostics, message) => {
                ctx.log(diagnostics.to_string());
                Err(StepFailure::new(message))
            }
            Outcome::Report(report) => {
                ctx.log(report.to_string());
                ctx.record(crate::evidence::DATA_VALIDATION, &report);
                if report.passed {
                    Ok(())
                } else {
                    Err(StepFailure::new(failure_message(&report)))
                }
            }
        }
    }

    /// The blocking part: reads the schema file, then the data file.
    fn check(&self, cwd: &Path, cancel: CancellationToken) -> Outcome {
        let loaded;
        let schema = match &self.schema {
            SchemaSource::Inline(schema) => schema,
            SchemaSource::File(name) => {
                let text = match std::fs::read_to_string(cwd.join(name)) {
                    Ok(text) => text,
                    Err(e) => {
                        return Outcome::Error(format!("cannot read schema file {name}: {e}"));
                    }
                };
                match Schema::from_toml(&text, Path::new(name)) {
                    Ok(schema) => {
                        loaded = schema;
                        &loaded
                    }
                    Err(DataError::InvalidSchema(diagnostics)) => {
                        let message = DataError::InvalidSchema(diagnostics.clone()).to_string();
                        return Outcome::InvalidSchema(diagnostics, message);
                    }
                    Err(e) => return Outcome::Error(error_chain(&e)),
                }
            }
        };
        let path = PathBuf::from(&self.file);
        let Some(format) = self
            .format
            .or(schema.format)
            .or_else(|| Format::from_path(&path))
        else {
            return Outcome::Error(DataError::UnknownFormat { path }.to_string());
        };
        let data = match std::fs::File::open(cwd.join(&path)) {
            Ok(f) => f,
            Err(e) => return Outcome::Error(format!("cannot read {}: {e}", self.file)),
        };
        let options = ValidateOptions {
            format: Some(format),
            max_examples: self.max_examples,
            cancel: Some(cancel),
        };
        match validate_reader(&self.file, data, format, schema, &options) {
            Ok(report) => Outcome::Report(report),
            Err(e) => Outcome::Error(error_chain(&e)),
        }
    }
}

/// `data/iris.csv: 2 violations: column `a` max: …; rows: …`.
fn failure_message(report: &ValidationReport) -> String {
    let n = report.violations.len();
    let shown: Vec<String> = report
        .violations
        .iter()
        .take(VIOLATIONS_IN_MESSAGE)
        .map(ToString::to_string)
        .collect();
    let mut message = format!(
        "{}: {n} {}: {}",
        report.file,
        if n == 1 { "violation" } else { "violations" },
        shown.join("; ")
    );
    if n > VIOLATIONS_IN_MESSAGE {
        message.push_str(&format!(
            "; and {} more in the step log",
            n - VIOLATIONS_IN_MESSAGE
        ));
    }
    message
}
