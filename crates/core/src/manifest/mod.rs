//! `mlops.toml`: reading, validating and compiling the project manifest.
//!
//! The file is parsed into a spanned TOML tree, each table is deserialized
//! into its wire struct ([`wire`]) on its own so that one bad step does not
//! hide the errors of the others, and the result is compiled into a
//! [`Pipeline`]. Every problem is collected as a [`Diagnostic`] with its span;
//! the caller gets them all at once. This module never runs anything.

pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use crate::diagnostic::{Diagnostic, Diagnostics, Location, locate};

use crate::kind::ManifestSection;
use crate::kind::{CompileScope, KindParams, KindRegistry};
use crate::pipeline::{Action, Pipeline, PipelineError, Step};
use crate::section::Sections;
use crate::stage::Stage;

/// The manifest's file name inside a project directory.
pub const MANIFEST_FILE: &str = "mlops.toml";

/// A loaded, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Path of the manifest file.
    pub path: PathBuf,
    /// The project directory (the manifest's parent).
    pub root: PathBuf,
    /// `[project]`.
    pub project: Project,
    /// The compiled pipeline.
    pub pipeline: Pipeline,
    /// The sections stage crates own, compiled once with the steps.
    sections: Sections,
    /// The manifest's text, for diagnostics found after compilation.
    source: String,
}

/// `[project]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The project's name.
    pub name: String,
    /// One line about the project.
    pub description: Option<String>,
}

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// No manifest where one was expected.
    #[error("no {MANIFEST_FILE} in {dir}; create one with `mlops init {dir}`")]
    NotFound {
        /// The project directory searched.
        dir: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is invalid; every problem is listed.
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl Manifest {
    /// Loads `mlops.toml` from a project directory.
    pub fn load(project_dir: &Path, kinds: &KindRegistry) -> Result<Manifest, ManifestError> {
        let path = project_dir.join(MANIFEST_FILE);
        let source = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ManifestError::NotFound {
                    dir: project_dir.to_path_buf(),
                });
            }
            Err(source) => return Err(ManifestError::Read { path, source }),
        };
        Manifest::parse(path, source, kinds).map_err(ManifestError::Invalid)
    }

    /// Validates manifest text. `path` is used for messages and to find the
    /// project directory.
    pub fn parse(
        path: PathBuf,
        source: String,
        kinds: &KindRegistry,
    ) -> Result<Manifest, Diagnostics> {
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        match compile(&source, &root, kinds) {
            Ok((project, pipeline, sections)) => Ok(Manifest {
                path,
                root,
                project,
                pipeline,
                sections,
                source,
            }),
            Err(mut items) => {
                items.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
                Err(Diagnostics {
                    path,
                    source,
                    items,
                })
            }
        }
    }
}

impl Manifest {
    /// The compiled section `name` (`[infra]`, or a stage's settings by the
    /// stage's name), as the kinds saw it when the pipeline was compiled.
    /// `None` when no registered section has that name or it is not a `T`.
    pub fn section<T: Send + Sync + 'static>(&self, name: &str) -> Option<std::sync::Arc<T>> {
        self.sections.compiled.get(name)?.get::<T>()
    }

    /// Problems found in this manifest's text after it compiled, ready to
    /// render with file, line and column.
    pub fn diagnostics(&self, mut items: Vec<Diagnostic>) -> Diagnostics {
        items.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        Diagnostics {
            path: self.path.clone(),
            source: self.source.clone(),
            items,
        }
    }
}

/// Where things are in the source, for mapping pipeline errors back.
#[derive(Default)]
struct Spans {
    stage_keys: BTreeMap<Stage, Range<usize>>,
    step_keys: HashMap<(Stage, String), Range<usize>>,
    first_step_key: HashMap<String, Range<usize>>,
    dependencies: HashMap<(String, String), Range<usize>>,
}

const TOP_LEVEL_KEYS: [&str; 7] = ["project", "iac", "ci", "cd", "release", "apm", "loadtest"];

fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2 && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn de_error(e: toml::de::Error, fallback: Range<usize>) -> Diagnostic {
    let message = e
        .message()
        .trim_end_matches('\n')
        .trim_end_matches('.')
        .to_owned();
    Diagnostic::new(message, e.span().or(Some(fallback)))
}

fn compile(
    source: &str,
    root: &Path,
    kinds: &KindRegistry,
) -> Result<(Project, Pipeline, Sections), Vec<Diagnostic>> {
    let (document, syntax_errors) = DeTable::parse_recoverable(source);
    if !syntax_errors.is_empty() {
        return Err(syntax_errors
            .into_iter()
            .map(|e| de_error(e, 0..0))
            .collect());
    }
    let document = document.into_inner();
    let mut errors = Vec::new();
    let mut spans = Spans::default();
    let mut project = None;
    let mut declared = Vec::new();
    let mut steps = Vec::new();
    let mut stages_with_errors = Vec::new();
    let mut stage_tables = Vec::new();
    let mut scope = CompileScope {
        options: kinds.options().clone(),
        root: Some(root.to_path_buf()),
        ..CompileScope::default()
    };
    let mut compile_section = |section: &dyn ManifestSection,
                               table: Option<Spanned<DeValue<'_>>>,
                               errors: &mut Vec<Diagnostic>| {
        let params = table.map(|t| {
            let span = t.span();
            KindParams::new(Some(t), span)
        });
        match section.compile(params.as_ref()) {
            Ok(compiled) => {
                scope
                    .sections
                    .compiled
                    .insert(section.name().to_owned(), compiled);
            }
            Err(items) => {
                scope.sections.failed.insert(section.name().to_owned());
                errors.extend(items);
            }
        }
    };

    // Phase 1: `[project]` and the sections, so that every step compiles
    // against their compiled values, wherever they stand in the file.
    let mut seen_sections = Vec::new();
    for (key, value) in document {
        let key_span = key.span();
        let name = key.into_inner();
        if name == "project" {
            let span = value.span();
            match wire::ProjectWire::deserialize(ValueDeserializer::from(value)) {
                Ok(p) => {
                    if p.name.get_ref().trim().is_empty() {
                        errors.push(Diagnostic::new(
                            "`project.name` must not be empty",
                            Some(p.name.span()),
                        ));
                    }
                    project = Some(Project {
                        name: p.name.into_inner(),
                        description: p.description,
                    });
                }
                Err(e) => {
                    errors.push(de_error(e, span));
                    project = Some(Project {
                        name: String::new(),
                        description: None,
                    });
                }
            }
            continue;
        }
        if let Some(section) = kinds.section(&name) {
            seen_sections.push(section.name());
            compile_section(section.as_ref(), Some(value), &mut errors);
            continue;
        }
        let Ok(stage) = name.parse::<Stage>() else {
            let mut d = Diagnostic::new(format!("unknown table `{name}`"), Some(key_span));
            let known = TOP_LEVEL_KEYS.into_iter().chain(kinds.section_names());
            d = match suggest(&name, known) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => {
                    let sections: Vec<String> =
                        kinds.section_names().map(|s| format!("`{s}`")).collect();
                    let stages = "the stages `iac`, `ci`, `cd`, `release`, `apm`, `loadtest`";
                    d.with_help(if sections.is_empty() {
                        format!("the top-level tables are `project` and {stages}")
                    } else {
                        format!(
                            "the top-level tables are `project`, {stages}, and {}",
                            sections.join(", ")
                        )
                    })
                }
            };
            errors.push(d);
            continue;
        };
        spans.stage_keys.insert(stage, key_span.clone());
        declared.push(stage);
        let (value, settings) = match kinds.stage_settings(stage) {
            Some(_) => split_stage_settings(value),
            None => (value, None),
        };
        if let Some(section) = kinds.stage_settings(stage) {
            seen_sections.push(section.name());
            compile_section(section.as_ref(), settings, &mut errors);
        }
        stage_tables.push((stage, value));
    }
    // Sections the manifest does not write still compile (to their
    // defaults), so a kind reads the same thing whether or not the table
    // is there.
    for section in kinds
        .section_names()
        .filter_map(|n| kinds.section(n))
        .chain(Stage::ALL.iter().filter_map(|s| kinds.stage_settings(*s)))
    {
        if !seen_sections.contains(&section.name()) {
            compile_section(section.as_ref(), None, &mut errors);
        }
    }
    scope.project_name = project
        .as_ref()
        .map(|p| p.name.clone())
        .filter(|n| !n.trim().is_empty());

    // Phase 2: the stages' steps.
    for (stage, value) in stage_tables {
        let before = errors.len();
        compile_stage(
            stage,
            value,
            kinds,
            &scope,
            &mut spans,
            &mut steps,
            &mut errors,
        );
        if errors.len() > before {
            stages_with_errors.push(stage);
        }
    }

    let project = match project {
        Some(p) => p,
        None => {
            errors.push(
                Diagnostic::new("missing `[project]` table", Some(0..0))
                    .with_help("start the file with `[project]` and `name = \"...\"`"),
            );
            Project {
                name: String::new(),
                description: None,
            }
        }
    };

    match Pipeline::new(project.name.clone(), steps, Some(&declared)) {
        Ok(pipeline) if errors.is_empty() => Ok((project, pipeline, scope.sections)),
        Ok(_) => Err(errors),
        Err(pipeline_errors) => {
            for e in pipeline_errors {
                // A stage whose step tables were malformed looks empty; the
                // malformed table is the error worth reading.
                if let PipelineError::EmptyStage { stage } = &e
                    && stages_with_errors.contains(stage)
                {
                    continue;
                }
                let span = span_of(&e, &spans);
                errors.push(Diagnostic::new(e.to_string(), span));
            }
            Err(errors)
        }
    }
}

fn span_of(error: &PipelineError, spans: &Spans) -> Option<Range<usize>> {
    let dep = |step: &str, dep: &str| {
        spans
            .dependencies
            .get(&(step.to_owned(), dep.to_owned()))
            .cloned()
    };
    match error {
        PipelineError::Empty => Some(0..0),
        PipelineError::InvalidName { step } => spans.first_step_key.get(step).cloned(),
        PipelineError::DuplicateStep { step, second, .. } => {
            spans.step_keys.get(&(*second, step.clone())).cloned()
        }
        PipelineError::UnknownDependency {
            step, dependency, ..
        }
        | PipelineError::LaterStageDependency {
            step, dependency, ..
        } => dep(step, dependency),
        PipelineError::SelfDependency { step } => dep(step, step),
        PipelineError::Cycle { path } => match path.as_slice() {
            // The edge "first depends on last-before-first": point at the
            // `depends-on` entry that closes the cycle.
            [.., before, last] => {
                dep(last, before).or_else(|| spans.first_step_key.get(last).cloned())
            }
            _ => None,
        },
        PipelineError::UndeclaredStage { step, .. } => spans.first_step_key.get(step).cloned(),
        PipelineError::MissingStage { stage, .. } | PipelineError::EmptyStage { stage } => {
            spans.stage_keys.get(stage).cloned()
        }
    }
}

/// Splits a stage's table into its own keys (`description`, `steps`) and
/// the stage's settings (everything else), for a stage whose crate
/// registered settings. Settings keep their spans; `None` when there are
/// none.
fn split_stage_settings<'a>(
    value: Spanned<DeValue<'a>>,
) -> (Spanned<DeValue<'a>>, Option<Spanned<DeValue<'a>>>) {
    if !value.get_ref().is_table() {
        // `compile_stage` reports it.
        return (value, None);
    }
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        return (Spanned::new(span, DeValue::Table(DeTable::new())), None);
    };
    let mut own = DeTable::new();
    let mut settings = DeTable::new();
    for (key, value) in table {
        if matches!(key.get_ref().as_ref(), "description" | "steps") {
            own.insert(key, value);
        } else {
            settings.insert(key, value);
        }
    }
    let settings =
        (!settings.is_empty()).then(|| Spanned::new(span.clone(), DeValue::Table(settings)));
    (Spanned::new(span, DeValue::Table(own)), settings)
}

fn compile_stage(
    stage: Stage,
    value: Spanned<DeValue<'_>>,
    kinds: &KindRegistry,
    scope: &CompileScope,
    spans: &mut Spans,
    steps: &mut Vec<Step>,
    errors: &mut Vec<Diagnostic>,
) {
    let stage_span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        errors.push(
            Diagnostic::new(format!("`{stage}` must be a table"), Some(stage_span))
                .with_help(format!("declare steps as `[{stage}.steps.NAME]` tables")),
        );
        return;
    };
    for (key, value) in table {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "description" => {
                if !value.get_ref().is_str() {
                    errors.push(Diagnostic::new(
                        format!(
                            "`{stage}.description` must be a string, found {}",
                            value.get_ref().type_str()
                        ),
                        Some(value.span()),
                    ));
                }
            }
            "steps" => {
                let steps_span = value.span();
                let DeValue::Table(step_tables) = value.into_inner() else {
                    errors.push(
                        Diagnostic::new(
                            format!("`{stage}.steps` must be a table of steps"),
                            Some(steps_span),
                        )
                        .with_help(format!("write each step as `[{stage}.steps.NAME]`")),
                    );
                    continue;
                };
                for (name, value) in step_tables {
                    let name_span = name.span();
                    let name = name.into_inner().into_owned();
                    spans
                        .step_keys
                        .insert((stage, name.clone()), name_span.clone());
                    spans
                        .first_step_key
                        .entry(name.clone())
                        .or_insert(name_span.clone());
                    steps.push(compile_step(
                        stage, &name, name_span, value, kinds, scope, spans, errors,
                    ));
                }
            }
            other => {
                let mut d = Diagnostic::new(
                    format!("unknown key `{other}` in stage `{stage}`"),
                    Some(key_span),
                );
                d = if value.get_ref().is_table() {
                    d.with_help(format!(
                        "steps go under `steps`: write `[{stage}.steps.{other}]`"
                    ))
                } else {
                    d.with_help("a stage table holds `description` and `steps`")
                };
                errors.push(d);
            }
        }
    }
}

/// Reads a duration the manifest gives for `what` (`"90s"`, `"1h 30m"`):
/// longer than zero, or a diagnostic at its span saying how to write one.
/// For stage crates' sections and kinds too, so every duration in
/// `mlops.toml` is read and reported the same way.
pub fn parse_duration(what: &str, value: &Spanned<String>) -> Result<Duration, Diagnostic> {
    match humantime::parse_duration(value.get_ref()) {
        Ok(d) if d.is_zero() => Err(Diagnostic::new(
            format!("`{what}` must be longer than zero"),
            Some(value.span()),
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(Diagnostic::new(
            format!("invalid duration `{}` for `{what}`: {e}", value.get_ref()),
            Some(value.span()),
        )
        .with_help("write a number and a unit, like \"90s\", \"10m\" or \"1h 30m\"")),
    }
}

fn relative_path(what: &str, value: &Spanned<String>, errors: &mut Vec<Diagnostic>) -> bool {
    match relative_path_problem(what, value, "the project directory") {
        Some(d) => {
            errors.push(d);
            false
        }
        None => true,
    }
}

/// What is wrong with a path a manifest gives for `what`, which must be a
/// non-empty path relative to `base` (e.g. "the step's directory"); `None`
/// when nothing is. For stage crates checking their kinds' parameters.
pub fn relative_path_problem(
    what: &str,
    value: &Spanned<String>,
    base: &str,
) -> Option<Diagnostic> {
    let text = value.get_ref();
    if text.trim().is_empty() {
        return Some(Diagnostic::new(
            format!("`{what}` must not be empty"),
            Some(value.span()),
        ));
    }
    if Path::new(text).is_absolute() {
        return Some(
            Diagnostic::new(
                format!("`{what}` must be relative to {base}, found `{text}`"),
                Some(value.span()),
            )
            .with_help("absolute paths make the manifest depend on one machine"),
        );
    }
    None
}

/// Serde stops at a step's first bad key. Every field of a step is
/// optional, so deserializing the step one key at a time with the same wire
/// struct finds every unknown key and every bad value.
fn step_key_errors(
    step: Spanned<DeValue<'_>>,
    first: toml::de::Error,
    span: Range<usize>,
) -> Vec<Diagnostic> {
    let with_help = |e: toml::de::Error| {
        let d = de_error(e, span.clone());
        if d.message.starts_with("unknown field") {
            d.with_help("see `mlops schema` or docs/manifest.md for the keys of a step")
        } else {
            d
        }
    };
    let Some(table) = step.get_ref().as_table() else {
        return vec![with_help(first)];
    };
    let mut found = Vec::new();
    for (key, value) in table.iter() {
        let mut single = DeTable::new();
        single.insert(key.clone(), value.clone());
        let probe = Spanned::new(step.span(), DeValue::Table(single));
        if let Err(e) = wire::StepWire::deserialize(ValueDeserializer::from(probe)) {
            found.push(with_help(e));
        }
    }
    if found.is_empty() {
        // Not a per-key problem; report what serde said.
        found.push(with_help(first));
    }
    found
}

#[allow(clippy::too_many_arguments)]
fn compile_step(
    stage: Stage,
    name: &str,
    name_span: Range<usize>,
    value: Spanned<DeValue<'_>>,
    kinds: &KindRegistry,
    scope: &CompileScope,
    spans: &mut Spans,
    errors: &mut Vec<Diagnostic>,
) -> Step {
    // On error the step is still returned (with what could be read), so that
    // the structural checks of the pipeline run and do not report spurious
    // "unknown dependency" errors for it. The caller discards the pipeline
    // whenever any diagnostic was recorded.
    let placeholder = || Step::shell(name, stage, "");
    let span = value.span();
    if !value.get_ref().is_table() {
        errors.push(
            Diagnostic::new(
                format!(
                    "step `{name}` must be a table, found {}",
                    value.get_ref().type_str()
                ),
                Some(span),
            )
            .with_help(format!(
                "write `[{stage}.steps.{name}]` followed by `run = \"...\"`"
            )),
        );
        return placeholder();
    }
    // Keep the raw `with` value: a kind deserializes it with exact spans.
    let raw_with = value.get_ref().as_table().and_then(|t| {
        t.iter()
            .find(|(k, _)| k.get_ref() == "with")
            .map(|(_, v)| v.clone())
    });
    let whole = value.clone();
    let wire = match wire::StepWire::deserialize(ValueDeserializer::from(value)) {
        Ok(w) => w,
        Err(e) => {
            errors.extend(step_key_errors(whole, e, span.clone()));
            return placeholder();
        }
    };

    let mut reads = Vec::new();
    let action = match (&wire.run, &wire.kind) {
        (Some(_), Some(kind)) => {
            errors.push(Diagnostic::new(
                format!("step `{name}` has both `run` and `kind`; use one"),
                Some(kind.span()),
            ));
            None
        }
        (None, None) => {
            errors.push(
                Diagnostic::new(
                    format!(
                        "step `{name}` needs `run` (a shell command) or `kind` (a built-in step)"
                    ),
                    Some(name_span.clone()),
                )
                .with_help("for example `run = \"pytest -q\"`"),
            );
            None
        }
        (Some(run), None) => {
            if run.get_ref().trim().is_empty() {
                errors.push(Diagnostic::new(
                    format!("`run` of step `{name}` is empty"),
                    Some(run.span()),
                ));
            }
            if let Some(with) = &wire.with {
                errors.push(Diagnostic::new(
                    format!("`with` configures a built-in `kind`; step `{name}` has `run`"),
                    Some(with.span()),
                ));
            }
            Some(Action::Shell {
                command: run.get_ref().clone(),
            })
        }
        (None, Some(kind_name)) => match kinds.get(kind_name.get_ref()) {
            None => {
                let known = kinds.names();
                let mut d = Diagnostic::new(
                    format!("unknown step kind `{}`", kind_name.get_ref()),
                    Some(kind_name.span()),
                );
                d = match suggest(kind_name.get_ref(), known.iter().copied()) {
                    Some(s) => d.with_help(format!("did you mean `{s}`?")),
                    None if known.is_empty() => {
                        d.with_help("no built-in kinds are registered; use `run`")
                    }
                    None => d.with_help(format!(
                        "the known kinds are {}",
                        known
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                errors.push(d);
                None
            }
            Some(kind) => {
                if let Some(kind_stage) = kind.stage().filter(|s| *s != stage) {
                    errors.push(Diagnostic::new(
                        format!(
                            "kind `{}` belongs to stage `{kind_stage}`, not `{stage}`",
                            kind.name()
                        ),
                        Some(kind_name.span()),
                    ));
                }
                let params = KindParams::new(raw_with.clone(), span.clone()).with_scope(scope);
                let compiled = kind.compile(&params);
                reads = params.take_reads();
                match compiled {
                    Ok(action) => Some(Action::Task {
                        kind: kind.name().to_owned(),
                        params: params.canonical(),
                        action,
                    }),
                    Err(diagnostics) => {
                        errors.extend(diagnostics);
                        None
                    }
                }
            }
        },
    };

    let timeout = wire.timeout.as_ref().and_then(|t| {
        parse_duration("timeout", t)
            .map_err(|d| errors.push(d))
            .ok()
    });
    let retry_backoff = wire.retry_backoff.as_ref().and_then(|t| {
        parse_duration("retry-backoff", t)
            .map_err(|d| errors.push(d))
            .ok()
    });
    if let Some(retries) = &wire.retries
        && *retries.get_ref() > 100
    {
        errors.push(Diagnostic::new(
            "`retries` must be at most 100",
            Some(retries.span()),
        ));
    }
    if let Some(cwd) = &wire.cwd {
        relative_path("cwd", cwd, errors);
    }
    let mut env = BTreeMap::new();
    for (key, value) in wire.env.iter().flatten() {
        let k = key.get_ref();
        if k.is_empty() || k.contains('=') || k.contains('\0') || value.contains('\0') {
            errors.push(Diagnostic::new(
                format!("invalid environment variable name `{k}`"),
                Some(key.span()),
            ));
        } else if crate::process::RESERVED_VARS.contains(&k.as_str()) {
            errors.push(
                Diagnostic::new(
                    format!("`{k}` is set by mlops for every step; a step cannot declare it"),
                    Some(key.span()),
                )
                .with_help(format!(
                    "mlops sets {} for every step; pick another name",
                    crate::process::RESERVED_VARS.join(", ")
                )),
            );
        } else {
            env.insert(k.clone(), value.clone());
        }
    }
    for input in wire.inputs.iter().flatten() {
        if relative_path("inputs", input, errors)
            && let Err(e) = globset::Glob::new(input.get_ref())
        {
            errors.push(Diagnostic::new(
                format!(
                    "invalid glob `{}` in `inputs`: {}",
                    input.get_ref(),
                    e.kind()
                ),
                Some(input.span()),
            ));
        }
    }
    for output in wire.outputs.iter().flatten() {
        relative_path("outputs", output, errors);
    }
    let mut depends_on = Vec::new();
    for dep in wire.depends_on.iter().flatten() {
        spans
            .dependencies
            .entry((name.to_owned(), dep.get_ref().clone()))
            .or_insert(dep.span());
        depends_on.push(dep.get_ref().clone());
    }

    let mut step = placeholder();
    if let Some(action) = action {
        step.action = action;
    }
    step.cwd = wire.cwd.map(|c| PathBuf::from(c.into_inner()));
    step.env = env;
    step.timeout = timeout;
    step.retries = wire.retries.map_or(0, Spanned::into_inner);
    if let Some(b) = retry_backoff {
        step.retry_backoff = b;
    }
    step.depends_on = depends_on;
    step.inputs = wire
        .inputs
        .into_iter()
        .flatten()
        .map(Spanned::into_inner)
        .collect();
    step.outputs = wire
        .outputs
        .into_iter()
        .flatten()
        .map(Spanned::into_inner)
        .collect();
    step.description = wire.description;
    step.reads(reads)
}
