//! Built-in step kinds and in-process step actions.
//!
//! A step either runs a shell command or runs an in-process [`StepAction`].
//! Stage crates contribute named [`StepKind`]s (`kind = "canary"` in
//! `mlops.toml`) to a [`KindRegistry`]; the manifest compiler looks kinds up
//! there and lets each kind validate its own `with` parameters. This module
//! owns the contracts; it ships no kinds itself.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize as _;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::diagnostic::Diagnostic;
use crate::ledger::LedgerHandle;
use crate::process::{AttemptEnd, ShellAttempt, run_shell, step_env};
use crate::section::{CompiledSection, RegistryError, SectionRead, Sections};
use crate::stage::Stage;

/// A boxed, sendable future: the return type of [`StepAction::run`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why an in-process step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// What went wrong, lowercase, saying what and where.
    pub message: String,
}

impl StepFailure {
    /// A failure with a message.
    pub fn new(message: impl Into<String>) -> Self {
        StepFailure {
            message: message.into(),
        }
    }
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StepFailure {}

/// Everything an in-process step may know about the attempt it runs in.
#[derive(Clone)]
pub struct StepContext {
    /// The ledger id of the run.
    pub run_id: i64,
    /// The step's name.
    pub step: String,
    /// The step's stage.
    pub stage: Stage,
    /// 1-based attempt number (retries count up).
    pub attempt: u32,
    /// The project directory (where `mlops.toml` lives).
    pub project_root: PathBuf,
    /// The step's working directory, absolute.
    pub cwd: PathBuf,
    /// The step's declared environment (not the whole process environment).
    pub env: BTreeMap<String, String>,
    /// Cancelled when the run is cancelled or the step times out; long steps
    /// should watch it. The executor also drops the future at that point.
    pub cancel: CancellationToken,
    pub(crate) log: StepLog,
    pub(crate) evidence: EvidenceSink,
    pub(crate) kill_grace: Duration,
    pub(crate) ledger: LedgerHandle,
}

/// How a command run by [`StepContext::run_command`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEnd {
    /// Exit status 0.
    Success,
    /// It ran and failed, or could not start.
    Failure {
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// `exit status 3`, `killed by signal 9`, `cannot start …`.
        reason: String,
    },
    /// The step was cancelled or timed out; the command's process group was
    /// stopped.
    Cancelled,
}

impl StepContext {
    /// Appends a line to the step's log file.
    pub fn log(&self, line: impl AsRef<str>) {
        self.log.line(line.as_ref());
    }

    /// Records structured evidence of what the step checked and found under
    /// `kind` (one body per kind; a later call replaces an earlier one). It
    /// is written to the ledger with the step's final status, in the same
    /// transaction, whether the step passes or fails.
    pub fn record(&self, kind: &str, body: &impl serde::Serialize) {
        let value = serde_json::to_value(body)
            .unwrap_or_else(|e| serde_json::json!({ "unserializable": e.to_string() }));
        self.evidence.put(kind, value);
    }

    /// What an earlier attempt of this step in this run recorded under
    /// `kind` (or this attempt, if it already did).
    pub fn recorded(&self, kind: &str) -> Option<serde_json::Value> {
        self.evidence.get(kind)
    }

    /// The project's ledger, for reading (evidence of earlier runs, the
    /// model registry) and for the records a stage keeps through its narrow
    /// APIs (registering a model, an infrastructure apply). Every call runs
    /// on tokio's blocking pool: a step never touches SQLite on the thread
    /// that polls it.
    pub fn ledger(&self) -> &LedgerHandle {
        &self.ledger
    }

    /// Runs a shell command as a shell step would: `/bin/sh -c` in the
    /// step's directory, with its environment and the `MLOPS_*` variables,
    /// stdout and stderr appended to the step's log, in its own process
    /// group that is stopped (SIGTERM, then SIGKILL) when the step is
    /// cancelled or times out.
    pub async fn run_command(&self, command: &str) -> CommandEnd {
        let end = run_shell(ShellAttempt {
            command,
            cwd: &self.cwd,
            env: step_env(
                self.run_id,
                &self.step,
                self.stage,
                &self.project_root,
                &self.env,
            ),
            log: self.log.file(),
            unnamed: None,
            timeout: None,
            cancel: &self.cancel,
            kill_grace: self.kill_grace,
        })
        .await;
        match end {
            AttemptEnd::Passed => CommandEnd::Success,
            AttemptEnd::Failed { exit_code, reason } => CommandEnd::Failure { exit_code, reason },
            AttemptEnd::TimedOut | AttemptEnd::Cancelled => CommandEnd::Cancelled,
        }
    }
}

/// Evidence recorded by the attempts of one step, shared between them.
#[derive(Clone, Default, Debug)]
pub(crate) struct EvidenceSink {
    inner: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
}

impl EvidenceSink {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, serde_json::Value>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, kind: &str, value: serde_json::Value) {
        self.lock().insert(kind.to_owned(), value);
    }

    fn get(&self, kind: &str) -> Option<serde_json::Value> {
        self.lock().get(kind).cloned()
    }

    /// Everything recorded, as (kind, JSON text) pairs.
    pub(crate) fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.lock())
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect()
    }
}

/// The step's log file, shared by the attempt and its context. For
/// in-process steps it is created on the first line, so a quiet step costs
/// no file.
#[derive(Clone)]
pub(crate) struct StepLog {
    inner: Arc<LogInner>,
}

struct LogInner {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl StepLog {
    /// A log at `path`, made on its first line.
    pub(crate) fn new(path: PathBuf) -> Self {
        StepLog {
            inner: Arc::new(LogInner {
                path,
                file: Mutex::new(None),
            }),
        }
    }

    /// The log's path, if anything was written to it.
    pub(crate) fn written_path(&self) -> Option<&std::path::Path> {
        let opened = self.inner.file.lock().map_or(true, |f| f.is_some());
        opened.then_some(self.inner.path.as_path())
    }

    /// The open log file (opening it), for a child process to write to.
    pub(crate) fn file(&self) -> Option<std::fs::File> {
        let guard = self.open();
        guard.as_ref().and_then(|f| f.try_clone().ok())
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Option<std::fs::File>> {
        // A poisoned lock only means another writer panicked mid-line; the
        // file itself is still usable.
        let mut guard = self.inner.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.inner.path)
                .ok();
        }
        guard
    }

    pub(crate) fn line(&self, line: &str) {
        let mut guard = self.open();
        if let Some(file) = guard.as_mut() {
            // Logging is best effort: a full disk must not fail the step.
            let _ = writeln!(file, "{line}");
        }
    }
}

/// Work a step does inside the engine's process.
///
/// Any `Fn(StepContext) -> impl Future<Output = Result<(), StepFailure>>`
/// closure is a `StepAction`. The executor polls the future on its own
/// coordinator, so it must not block the thread: the ledger is reached
/// through [`StepContext::ledger`] (its calls run on the blocking pool), and
/// other CPU-heavy or blocking I/O work goes in
/// `tokio::task::spawn_blocking`. A panic fails the step, not the run.
pub trait StepAction: Send + Sync + 'static {
    /// Runs one attempt.
    fn run(&self, ctx: StepContext) -> BoxFuture<Result<(), StepFailure>>;
}

impl<F, Fut> StepAction for F
where
    F: Fn(StepContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), StepFailure>> + Send + 'static,
{
    fn run(&self, ctx: StepContext) -> BoxFuture<Result<(), StepFailure>> {
        Box::pin(self(ctx))
    }
}

/// What a kind's or a section's `compile` sees: its table with source
/// spans and, for step kinds, what the manifest compiled before the steps
/// (the `[project]` table, the registered sections) and the registry's
/// options. Every section part a kind reads is recorded and becomes part of
/// the step's fingerprint.
pub struct KindParams<'a> {
    value: Option<toml::Spanned<toml::de::DeValue<'a>>>,
    step_span: Range<usize>,
    scope: Option<&'a CompileScope>,
    reads: RefCell<BTreeSet<SectionRead>>,
}

/// What steps are compiled against: built once per manifest, before any
/// step.
#[derive(Default)]
pub(crate) struct CompileScope {
    /// The name in `[project]`, when it is valid.
    pub(crate) project_name: Option<String>,
    pub(crate) sections: Sections,
    pub(crate) options: Options,
    /// The project directory (the manifest's parent).
    pub(crate) root: Option<PathBuf>,
}

impl<'a> KindParams<'a> {
    pub(crate) fn new(
        value: Option<toml::Spanned<toml::de::DeValue<'a>>>,
        step_span: Range<usize>,
    ) -> Self {
        KindParams {
            value,
            step_span,
            scope: None,
            reads: RefCell::new(BTreeSet::new()),
        }
    }

    pub(crate) fn with_scope(mut self, scope: &'a CompileScope) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Deserializes the parameters into the kind's own wire struct (use
    /// `deny_unknown_fields`). A missing `with` table deserializes from an
    /// empty table, so a struct of optional fields accepts it.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        let result = match &self.value {
            Some(value) => T::deserialize(toml::de::ValueDeserializer::from(value.clone())),
            None => T::deserialize(toml::de::ValueDeserializer::from(toml::Spanned::new(
                self.step_span.clone(),
                toml::de::DeValue::Table(Default::default()),
            ))),
        };
        result.map_err(|e| {
            Diagnostic::new(
                e.message().to_owned(),
                e.span().or_else(|| Some(self.step_span.clone())),
            )
        })
    }

    /// The span of the `with` table, or of the step when there is none.
    pub fn span(&self) -> Range<usize> {
        self.value
            .as_ref()
            .map_or_else(|| self.step_span.clone(), |v| v.span())
    }

    /// A canonical text of the parameters, for the step fingerprint.
    /// Tables are written with sorted keys, so the order of keys in the file
    /// does not matter, and no `with` is the empty table.
    pub fn canonical(&self) -> String {
        match &self.value {
            None => "{}".to_owned(),
            Some(v) => toml::Value::deserialize(toml::de::ValueDeserializer::from(v.clone()))
                .ok()
                // Through `serde_json::Value`, whose maps are sorted
                // (`toml`'s keep the file's order).
                .and_then(|v| serde_json::to_value(v).ok())
                .map(|v| v.to_string())
                .unwrap_or_default(),
        }
    }

    /// The compiled section `name` (`"infra"`, or a stage's name for its
    /// settings), as the section's crate compiled it; `path` names the part
    /// the step depends on (`&["services", "iris"]`; empty for all of it).
    /// The part's canonical form joins the step's fingerprint, whatever the
    /// result. `None` when no such section is registered, it failed to
    /// compile (its errors are reported already), or it is not a `T`.
    pub fn section<T: Send + Sync + 'static>(&self, name: &str, path: &[&str]) -> Option<Arc<T>> {
        let compiled = self.scope?.sections.compiled.get(name);
        let digest = compiled.map_or_else(String::new, |c| c.digest(path));
        self.reads
            .borrow_mut()
            .insert(SectionRead::new(name, path, digest));
        compiled?.get::<T>()
    }

    /// Whether section `name` is registered but failed to compile: its
    /// errors are reported, so a kind that needs it should add none of its
    /// own about what it could not find there.
    pub fn section_failed(&self, name: &str) -> bool {
        self.scope.is_some_and(|s| s.sections.failed.contains(name))
    }

    /// The project directory (the manifest's parent, as the manifest was
    /// loaded), for kinds whose definition depends on project state such
    /// as a key file; `None` for a section's own table.
    pub fn project_root(&self) -> Option<&std::path::Path> {
        self.scope?.root.as_deref()
    }

    /// Declares that the step depends on a value that is not part of a
    /// section but decides what it does (such as the provider a run's
    /// option selects): `label` names it in refusals, and a digest of
    /// `value` joins the step's fingerprint.
    pub fn depends_on_value(&self, label: &str, value: &str) {
        self.reads.borrow_mut().insert(SectionRead {
            section: label.to_owned(),
            digest: blake3::hash(value.as_bytes()).to_hex().to_string(),
        });
    }

    /// The project's name from `[project]`; it joins the step's
    /// fingerprint (a renamed project is another deployment). `None` when
    /// `[project]` is missing or invalid (that is reported already) or the
    /// parameters belong to a section.
    pub fn project_name(&self) -> Option<String> {
        let name = self.scope?.project_name.clone()?;
        self.reads.borrow_mut().insert(SectionRead::new(
            "project",
            &["name"],
            blake3::hash(name.as_bytes()).to_hex().to_string(),
        ));
        Some(name)
    }

    /// An option the embedding program set on the registry
    /// ([`KindRegistry::set_option`]), such as the CLI's `--provider`.
    /// Options are how a run is configured, not what a step is: they are not
    /// part of fingerprints.
    pub fn option<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.scope?.options.get::<T>()
    }

    /// What the kind read, for the step's definition.
    pub(crate) fn take_reads(&self) -> Vec<SectionRead> {
        std::mem::take(&mut *self.reads.borrow_mut())
            .into_iter()
            .collect()
    }
}

/// Typed values an embedding program hands to the kinds through the
/// registry.
#[derive(Clone, Default)]
pub(crate) struct Options {
    values: BTreeMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Options {
    fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.clone().downcast::<T>().ok())
    }
}

/// A kind of evidence a stage records (`StepContext::record(kind, …)`):
/// its name, the stage that owns it and how `pipeline status` says it in
/// one line.
#[derive(Debug, Clone, Copy)]
pub struct EvidenceKind {
    /// The name evidence is recorded under.
    pub name: &'static str,
    /// The stage whose kinds record it.
    pub stage: Stage,
    /// One line about a recorded piece of evidence of this kind, for
    /// `pipeline status`; `None` when its body is not the expected shape.
    pub summarize: fn(&crate::Evidence) -> Option<String>,
}

/// A built-in step kind contributed by a stage crate.
pub trait StepKind: Send + Sync + 'static {
    /// The name used in `kind = "..."`.
    fn name(&self) -> &'static str;
    /// The stage whose table the kind may appear in; `None` for any stage.
    fn stage(&self) -> Option<Stage>;
    /// One line describing what the kind checks or does.
    fn summary(&self) -> &'static str;
    /// Validates the `with` parameters and builds the action. Reports every
    /// problem it finds.
    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>>;
}

/// A table of `mlops.toml` owned by a stage crate.
pub trait ManifestSection: Send + Sync + 'static {
    /// The table's name: `infra` for `[infra]`; for a stage's settings, the
    /// stage's name.
    fn name(&self) -> &'static str;

    /// Validates and compiles the table; `None` when the manifest has none
    /// (the section decides what that means, usually its defaults). Reports
    /// every problem it finds, each with its span.
    fn compile(&self, table: Option<&KindParams<'_>>) -> Result<CompiledSection, Vec<Diagnostic>>;

    /// The table's JSON Schema, for `mlops schema` (editors): an object
    /// schema whose `properties` are the table's keys. By default any table.
    fn json_schema(&self) -> serde_json::Value {
        serde_json::json!({ "type": "object" })
    }
}

/// What the manifest compiler and the CLI know of the stage crates: their
/// step kinds, their manifest sections, their evidence kinds, and options
/// set by the embedding program. Each stage crate has one entry point,
/// `register(&mut KindRegistry)`, that adds all of its parts.
#[derive(Default, Clone)]
pub struct KindRegistry {
    kinds: BTreeMap<&'static str, Arc<dyn StepKind>>,
    sections: BTreeMap<&'static str, Arc<dyn ManifestSection>>,
    stage_settings: BTreeMap<Stage, Arc<dyn ManifestSection>>,
    evidence: BTreeMap<&'static str, EvidenceKind>,
    options: Options,
}

impl KindRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind; a second kind of the same name is refused.
    pub fn register(&mut self, kind: Arc<dyn StepKind>) -> Result<&mut Self, RegistryError> {
        if self.kinds.contains_key(kind.name()) {
            return Err(RegistryError::Duplicate {
                what: "kind",
                name: kind.name().to_owned(),
            });
        }
        self.kinds.insert(kind.name(), kind);
        Ok(self)
    }

    /// Looks a kind up by name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn StepKind>> {
        self.kinds.get(name)
    }

    /// Every registered kind, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn StepKind>> {
        self.kinds.values()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    /// Adds a top-level section (`[infra]`). Refused when the name is
    /// `project` or a stage's (the table would hide that stage's steps: a
    /// stage's own settings go through [`KindRegistry::register_stage_settings`]),
    /// or already taken.
    pub fn register_section(
        &mut self,
        section: Arc<dyn ManifestSection>,
    ) -> Result<&mut Self, RegistryError> {
        let name = section.name();
        if name == "project" || name.parse::<Stage>().is_ok() {
            return Err(RegistryError::Reserved {
                name: name.to_owned(),
                why: format!(
                    "`[{name}]` is {}; a stage's own settings are registered with `register_stage_settings`",
                    if name == "project" {
                        "the project table".to_owned()
                    } else {
                        format!("the table of stage `{name}`")
                    }
                ),
            });
        }
        if self.sections.contains_key(name) {
            return Err(RegistryError::Duplicate {
                what: "section",
                name: name.to_owned(),
            });
        }
        self.sections.insert(name, section);
        Ok(self)
    }

    /// Adds the settings of `stage`: the keys of the stage's table other
    /// than `description` and `steps` (`[release] service = "iris"` beside
    /// `[release.steps.canary]`). The section must be named after the
    /// stage; one per stage.
    pub fn register_stage_settings(
        &mut self,
        stage: Stage,
        section: Arc<dyn ManifestSection>,
    ) -> Result<&mut Self, RegistryError> {
        if section.name() != stage.name() {
            return Err(RegistryError::Reserved {
                name: section.name().to_owned(),
                why: format!("the settings of stage `{stage}` are named `{stage}`"),
            });
        }
        if self.stage_settings.contains_key(&stage) {
            return Err(RegistryError::Duplicate {
                what: "stage settings",
                name: stage.name().to_owned(),
            });
        }
        self.stage_settings.insert(stage, section);
        Ok(self)
    }

    /// Looks a top-level section up by its table name.
    pub fn section(&self, name: &str) -> Option<&Arc<dyn ManifestSection>> {
        self.sections.get(name)
    }

    /// The registered top-level section names, sorted.
    pub fn section_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sections.keys().copied()
    }

    /// The settings section of `stage`, if a stage crate registered one.
    pub fn stage_settings(&self, stage: Stage) -> Option<&Arc<dyn ManifestSection>> {
        self.stage_settings.get(&stage)
    }

    /// Adds an evidence kind; a second one of the same name is refused.
    pub fn register_evidence(&mut self, kind: EvidenceKind) -> Result<&mut Self, RegistryError> {
        if self.evidence.contains_key(kind.name) {
            return Err(RegistryError::Duplicate {
                what: "evidence kind",
                name: kind.name.to_owned(),
            });
        }
        self.evidence.insert(kind.name, kind);
        Ok(self)
    }

    /// The registered evidence kind `name`.
    pub fn evidence_kind(&self, name: &str) -> Option<&EvidenceKind> {
        self.evidence.get(name)
    }

    /// One line about recorded evidence, from the stage that owns its
    /// kind; `None` for an unknown kind or an unexpected body.
    pub fn summarize(&self, evidence: &crate::Evidence) -> Option<String> {
        (self.evidence.get(evidence.kind.as_str())?.summarize)(evidence)
    }

    /// Sets an option the kinds can read when they compile
    /// ([`KindParams::option`]): one value per type, replacing an earlier
    /// one.
    pub fn set_option<T: Send + Sync + 'static>(&mut self, value: T) -> &mut Self {
        self.options
            .values
            .insert(TypeId::of::<T>(), Arc::new(value));
        self
    }

    /// An option set with [`KindRegistry::set_option`].
    pub fn option<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.options.get::<T>()
    }

    pub(crate) fn options(&self) -> &Options {
        &self.options
    }
}

impl fmt::Debug for KindRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.kinds.keys())
            .entries(self.sections.keys().map(|s| format!("[{s}]")))
            .entries(
                self.stage_settings
                    .keys()
                    .map(|s| format!("[{s}] settings")),
            )
            .finish()
    }
}
