//! The executor: runs a [`Pipeline`] on tokio, stage gate by stage gate.
//!
//! A single coordinator, a tokio task of its own, owns the schedule and
//! decides every ledger write; each step is a future it polls (hash inputs,
//! consult the cache, attempt with timeout and retries, hash outputs) that
//! reports back. The writes are committed in groups by the ledger writer
//! (`writer`), a thread of its own, so the coordinator never waits for
//! SQLite. A step of a later stage starts only after the gate of the stage
//! before it passed; when a gate fails, every later step ends `gated`, with
//! the reason naming the stage and the step that failed. Runs that select a
//! later stage (`--stage`, `--from`) are refused unless the ledger proves
//! every earlier stage for the current commit, definitions and inputs.

pub(crate) mod attempt;
mod hash;
mod logfile;
mod writer;

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use petgraph::graph::NodeIndex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, EventBus};
use crate::git::{changed_files, git_state};
use crate::kind::{EvidenceSink, StepContext, StepLog};
use crate::ledger::{
    GitState, Ledger, LedgerError, LedgerHandle, LedgerWrite, PlannedStep, StepOutcomeRecord,
    now_ms,
};
use crate::pipeline::{Action, Node, Pipeline, Step};
use crate::process::{AttemptEnd, ShellAttempt, kill_leftovers, run_shell, step_env};
use crate::stage::Stage;
use crate::status::{RunStatus, StageStatus, StepStatus};
use hash::{hash_inputs, hash_outputs};
use logfile::{LogFiles, ShellLog};
use writer::LedgerWriter;

/// Which stages a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// Every stage.
    #[default]
    All,
    /// Only this stage; earlier stages must be proven by the ledger.
    Stage(Stage),
    /// This stage and every later one; earlier stages must be proven.
    From(Stage),
}

impl Selection {
    /// Whether the selection runs a stage.
    pub fn includes(self, stage: Stage) -> bool {
        match self {
            Selection::All => true,
            Selection::Stage(s) => stage == s,
            Selection::From(s) => stage >= s,
        }
    }

    /// The first stage the selection runs, if it skips earlier ones.
    pub fn first(self) -> Option<Stage> {
        match self {
            Selection::All => None,
            Selection::Stage(s) | Selection::From(s) => Some(s),
        }
    }

    /// The label stored in the ledger: `all`, `stage:NAME`, `from:NAME`.
    pub fn label(self) -> String {
        match self {
            Selection::All => "all".to_owned(),
            Selection::Stage(s) => format!("stage:{s}"),
            Selection::From(s) => format!("from:{s}"),
        }
    }

    /// Parses a ledger label.
    pub fn parse_label(label: &str) -> Option<Selection> {
        match label.split_once(':') {
            None if label == "all" => Some(Selection::All),
            Some(("stage", s)) => s.parse().ok().map(Selection::Stage),
            Some(("from", s)) => s.parse().ok().map(Selection::From),
            _ => None,
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Steps running at once (at least 1).
    pub jobs: usize,
    /// Run steps even when their cached result is valid.
    pub force: bool,
    /// Which stages to run.
    pub selection: Selection,
    /// Finish the last unfinished run instead of starting a new one.
    pub resume: bool,
    /// Cancel to stop the run: running process groups are killed.
    pub cancel: CancellationToken,
    /// How long a killed step's shell gets after SIGTERM before SIGKILL.
    pub kill_grace: Duration,
    /// Run only the steps whose inputs cover files changed since this git
    /// revision, the steps that declare no inputs (nothing says what they
    /// read), and the steps that depend on those (by `depends-on`, or by
    /// reading their outputs). Every other step is reused from its last
    /// passing record with the same definition and inputs, or run when it
    /// has none, so stage gates still see evidence for every step.
    /// `force` wins: with it, everything runs.
    pub changed_since: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            force: false,
            selection: Selection::All,
            resume: false,
            cancel: CancellationToken::new(),
            kill_grace: Duration::from_secs(3),
            changed_since: None,
        }
    }
}

/// Why a run could not be carried out (as opposed to a run that failed).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A later stage was selected without evidence for an earlier one.
    #[error(
        "refusing to run stage `{stage}`: the earlier stage `{missing}` has no passing record for {commit}: step `{step}` {why}; run `mlops pipeline run --from {missing}` (or the whole pipeline) first"
    )]
    Refused {
        /// The selected stage.
        stage: Stage,
        /// The earlier stage lacking evidence.
        missing: Stage,
        /// The step lacking evidence.
        step: String,
        /// Why its evidence does not count.
        why: String,
        /// The commit evidence was looked up for.
        commit: String,
    },
    /// The selected stage is not in the pipeline.
    #[error("stage `{0}` is not enabled in this project")]
    StageNotEnabled(Stage),
    /// `--resume` with nothing to resume.
    #[error("nothing to resume: {0}")]
    NothingToResume(String),
    /// `--resume` after the commit changed.
    #[error(
        "cannot resume run {run_id}: it ran on commit {was}, but HEAD is now {now}; start a new run"
    )]
    ResumeCommitChanged {
        /// The run.
        run_id: i64,
        /// Its commit.
        was: String,
        /// The current commit.
        now: String,
    },
    /// `changed_since` could not be evaluated.
    #[error(transparent)]
    ChangedSince(#[from] crate::git::ChangedError),
    /// The thread committing the run's state changes stopped (it panicked),
    /// so some of them may not be recorded.
    #[error("the ledger writer stopped before recording every change of the run")]
    LedgerWriterStopped,
    /// The thread committing the run's state changes could not be started.
    #[error("cannot start the ledger writer thread")]
    LedgerWriterStart(#[source] std::io::Error),
    /// The runtime shut down while the run's task was still going.
    #[error("the run stopped before it ended: the async runtime shut down")]
    RuntimeShutdown,
    /// The run's log directory could not be created.
    #[error("cannot create the log directory {path}")]
    LogDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The result of one step in a finished run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// Name.
    pub name: String,
    /// Stage.
    pub stage: Stage,
    /// Final status.
    pub status: StepStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Why it did not pass.
    pub reason: Option<String>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Ledger id.
    pub run_id: i64,
    /// Final status.
    pub status: RunStatus,
    /// Wall time.
    pub duration: Duration,
    /// Every step of the run, in plan order.
    pub steps: Vec<StepReport>,
}

impl RunReport {
    /// The report of one step.
    pub fn step(&self, name: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Runs pipelines of one project directory and records them in its ledger.
#[derive(Debug)]
pub struct Executor {
    root: PathBuf,
    ledger: Ledger,
    bus: EventBus,
}

/// The longest a state change waits before it is committed to the ledger.
const FLUSH_EVERY: Duration = Duration::from_millis(5);

/// Why a prerequisite did not pass.
#[derive(Debug, Clone)]
enum Blocker {
    /// A step failed; the text is "`name` failed (exit status 1)".
    StepFailed(String),
    /// Already a complete gating reason, passed along unchanged.
    Gated(String),
    /// The run was cancelled.
    Cancelled,
}

/// Sent by step tasks to the coordinator, which owns the ledger writes.
enum TaskMessage {
    Started {
        index: usize,
        attempt: u32,
        at_ms: i64,
        log: Option<String>,
    },
    Retrying {
        index: usize,
        attempt: u32,
        delay: Duration,
        reason: String,
    },
}

/// What a step task hands back.
#[derive(Debug, Default)]
struct StepResult {
    status: Option<StepStatus>,
    attempts: u32,
    exit_code: Option<i32>,
    started_ms: Option<i64>,
    duration: Duration,
    input_hash: Option<String>,
    output_hash: Option<String>,
    log_path: Option<String>,
    reason: Option<String>,
    log_tail: Option<String>,
    cached_from: Option<i64>,
    evidence: Vec<(String, String)>,
}

impl Executor {
    /// An executor for the project at `project_root`, opening (and creating)
    /// its ledger under `.mlops/`.
    pub fn new(project_root: impl AsRef<Path>) -> Result<Executor, ExecError> {
        let given = project_root.as_ref();
        let root = std::fs::canonicalize(given).unwrap_or_else(|_| given.to_path_buf());
        let ledger = Ledger::open(&root)?;
        Ok(Executor {
            root,
            ledger,
            bus: EventBus::default(),
        })
    }

    /// The project's ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// A stream of every event of the following runs.
    pub fn subscribe(&mut self) -> mpsc::UnboundedReceiver<Event> {
        self.bus.subscribe()
    }

    /// Runs the pipeline. `Ok` carries the report of a run that happened,
    /// whatever its status; `Err` means it could not be carried out at all.
    ///
    /// The run is a task of its own on the current tokio runtime, so that
    /// the coordinator is woken on the worker thread that saw a step's
    /// process exit, like ninja's single event loop, instead of on the
    /// thread awaiting this future (a `block_on` thread never polls the
    /// runtime's I/O driver). Dropping the returned future aborts that
    /// task: running steps are stopped as if this future itself were
    /// dropped.
    pub async fn run(&self, pipeline: &Pipeline, opts: RunOptions) -> Result<RunReport, ExecError> {
        let executor = Executor {
            root: self.root.clone(),
            ledger: self.ledger.clone(),
            bus: self.bus.clone(),
        };
        let pipeline = pipeline.clone();
        let task = tokio::spawn(async move { executor.run_here(&pipeline, opts).await });
        AbortOnDrop(task).await
    }

    /// [`Executor::run`], on the task it is called in.
    async fn run_here(
        &self,
        pipeline: &Pipeline,
        opts: RunOptions,
    ) -> Result<RunReport, ExecError> {
        let started = Instant::now();
        let _lock = self.lock().await?;
        let root = self.root.clone();
        let git = tokio::task::spawn_blocking(move || git_state(&root))
            .await
            .unwrap_or_default();

        let mut selection = opts.selection;
        let mut kept: BTreeMap<usize, (StepStatus, Option<i64>)> = BTreeMap::new();
        let resumed_run = if opts.resume {
            let (run_id, sel, keep) = self.prepare_resume(pipeline, &git).await?;
            selection = sel;
            kept = keep;
            Some(run_id)
        } else {
            None
        };
        if let Some(first) = selection.first() {
            if !pipeline.stages().contains(&first) {
                return Err(ExecError::StageNotEnabled(first));
            }
            // Also on resume: the earlier stages' definitions or inputs may
            // have changed since the interrupted run started.
            self.check_evidence(pipeline, first, &git).await?;
        }

        let included: Vec<bool> = pipeline
            .steps()
            .iter()
            .map(|s| selection.includes(s.stage))
            .collect();
        let affected = match &opts.changed_since {
            None => None,
            Some(rev) => {
                let (root, rev2) = (self.root.clone(), rev.clone());
                let changed = tokio::task::spawn_blocking(move || changed_files(&root, &rev2))
                    .await
                    .map_err(|e| {
                        ExecError::ChangedSince(crate::git::ChangedError::Diff {
                            rev: rev.clone(),
                            message: e.to_string(),
                        })
                    })??;
                Some((
                    rev.clone(),
                    affected_steps(pipeline, &self.root, &changed),
                    changed.len(),
                ))
            }
        };
        let order = pipeline.ordered_steps();
        // The ledger names a step by its position in this plan; fingerprints
        // are computed here, once per run.
        let mut positions = vec![None; pipeline.steps().len()];
        let planned: Vec<PlannedStep> = order
            .iter()
            .copied()
            .filter(|&i| included[i])
            .enumerate()
            .map(|(position, i)| {
                positions[i] = Some(position);
                let s = &pipeline.steps()[i];
                PlannedStep {
                    name: s.name.clone(),
                    stage: s.stage,
                    fingerprint: s.fingerprint(),
                    reads: s.reads.clone(),
                }
            })
            .collect();
        let run_id = match resumed_run {
            Some(run_id) => {
                // Steps that ran when the run was killed may still be
                // running (their process groups outlive the engine); stop
                // them before running those steps again.
                let rerun: std::collections::HashSet<String> = planned
                    .iter()
                    .filter(|p| !kept.keys().any(|&i| pipeline.steps()[i].name == p.name))
                    .map(|p| p.name.clone())
                    .collect();
                kill_leftovers(&self.root, run_id, &rerun, opts.kill_grace).await;
                let keep: Vec<String> = kept
                    .keys()
                    .map(|&i| pipeline.steps()[i].name.clone())
                    .collect();
                self.ledger.reopen_run(run_id, &planned, &keep)?;
                run_id
            }
            None => {
                self.ledger
                    .begin_run(pipeline.project(), &git, &selection.label(), &planned)?
            }
        };
        let log_dir = self
            .ledger
            .state_dir()
            .join("runs")
            .join(run_id.to_string());
        if let Err(source) = std::fs::create_dir_all(&log_dir) {
            // The run is recorded already: end it rather than leave it
            // looking interrupted.
            let _ = self.ledger.finish_run(run_id, RunStatus::Failed);
            return Err(ExecError::LogDir {
                path: log_dir,
                source,
            });
        }
        self.bus.emit(Event::RunStarted {
            run_id,
            project: pipeline.project().to_owned(),
            commit: git.commit.clone(),
            dirty: git.dirty,
            selection: selection.label(),
            steps: planned.len(),
            resumed: resumed_run.is_some(),
        });
        if let Some((rev, affected, files)) = &affected {
            self.bus.emit(Event::ChangedSince {
                run_id,
                rev: rev.clone(),
                files: *files,
                affected: affected
                    .iter()
                    .enumerate()
                    .filter(|(i, a)| **a && included[*i])
                    .map(|(i, _)| pipeline.steps()[i].name.clone())
                    .collect(),
            });
        }

        let writer = match LedgerWriter::start(self.ledger.clone(), run_id, opts.cancel.clone()) {
            Ok(w) => w,
            Err(e) => {
                let _ = self.ledger.finish_run(run_id, RunStatus::Failed);
                return Err(ExecError::LedgerWriterStart(e));
            }
        };
        let log_files = LogFiles::new(&log_dir);
        let step_ledger = LedgerHandle::for_project(self.root.clone());
        let mut coordinator = Coordinator {
            exec: self,
            log_files: &log_files,
            pipeline,
            run_id,
            opts: &opts,
            selection,
            included,
            log_dir,
            pending_preds: Vec::new(),
            blocker: vec![None; pipeline.graph().node_count()],
            done: vec![false; pipeline.graph().node_count()],
            ready: VecDeque::new(),
            results: vec![None; pipeline.steps().len()],
            stage_started: BTreeMap::new(),
            writes: Vec::new(),
            writer,
            step_ledger: &step_ledger,
            positions,
            planned: &planned,
            fatal: None,
            affected: affected.map(|(rev, a, _)| (rev, a)),
        };
        let status = coordinator.drive(kept).await;
        if let Some(err) = coordinator.fatal.take() {
            // The evidence could not be recorded: mark the run as ended if the
            // ledger still answers, and report why it failed.
            let _ = self.ledger.finish_run(run_id, RunStatus::Failed);
            return Err(err);
        }
        self.ledger.finish_run(run_id, status)?;
        let duration = started.elapsed();
        self.bus.emit(Event::RunFinished {
            run_id,
            status,
            duration_ms: duration.as_millis() as u64,
        });
        let steps = order
            .into_iter()
            .filter_map(|i| {
                let (status, attempts, reason) = coordinator.results[i].clone()?;
                let s = &pipeline.steps()[i];
                Some(StepReport {
                    name: s.name.clone(),
                    stage: s.stage,
                    status,
                    attempts,
                    reason,
                })
            })
            .collect();
        Ok(RunReport {
            run_id,
            status,
            duration,
            steps,
        })
    }

    /// Takes the project lock. `status` probes the lock for a moment to tell
    /// a live run from an interrupted one, so a short retry keeps that probe
    /// from refusing a run that starts at the same instant.
    async fn lock(&self) -> Result<crate::ledger::RunLock, ExecError> {
        let mut tries = 0;
        loop {
            match self.ledger.lock() {
                Err(LedgerError::Busy { .. }) if tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other.map_err(ExecError::from),
            }
        }
    }

    /// Checks that every stage before `first` has a passing record of each of
    /// its steps for this commit, definition and inputs.
    async fn check_evidence(
        &self,
        pipeline: &Pipeline,
        first: Stage,
        git: &GitState,
    ) -> Result<(), ExecError> {
        let commit_text = git.commit.as_deref().map_or_else(
            || "this working tree (no git commit)".to_owned(),
            |c| format!("commit {}", short(c)),
        );
        for &stage in pipeline.stages().iter().filter(|s| **s < first) {
            for (_, step) in pipeline.stage_steps(stage) {
                let refuse = |why: String| ExecError::Refused {
                    stage: first,
                    missing: stage,
                    step: step.name.clone(),
                    why,
                    commit: commit_text.clone(),
                };
                let root = self.root.clone();
                let inputs = step.inputs.clone();
                let input_hash = tokio::task::spawn_blocking(move || hash_inputs(&root, &inputs))
                    .await
                    .map_err(|e| refuse(format!("could not be checked ({e})")))?
                    .map_err(|e| refuse(format!("cannot be checked: {e}")))?;
                let record = self.ledger.find_passing(
                    &step.name,
                    &step.fingerprint(),
                    &input_hash,
                    Some(git.commit.as_deref()),
                )?;
                if record.is_none() {
                    let why = if self
                        .ledger
                        .find_passing(&step.name, &step.fingerprint(), &input_hash, None)?
                        .is_some()
                    {
                        "passed only on another commit".to_owned()
                    } else {
                        self.why_not_current(step)?
                    };
                    return Err(refuse(why));
                }
            }
        }
        Ok(())
    }

    /// Why a step has no current evidence: the manifest parts its kind
    /// read that changed since its last passing record, if any did.
    fn why_not_current(&self, step: &crate::Step) -> Result<String, ExecError> {
        let generic = "has not passed with its current definition and inputs".to_owned();
        let Some(crate::ledger::PassingDefinition {
            run_id: run,
            fingerprint,
            reads: then,
        }) = self.ledger.last_passing_reads(&step.name)?
        else {
            return Ok(generic);
        };
        if fingerprint == step.fingerprint() {
            return Ok(format!(
                "has not passed with its current inputs (its last pass, in run {run}, read other files)"
            ));
        }
        let Some(then) = then else {
            return Ok(format!(
                "has not passed with its current definition (its evidence, from run {run}, was recorded by an older mlops that did not keep what the step read; run the pipeline again)"
            ));
        };
        let then: BTreeMap<&str, &str> = then
            .iter()
            .map(|r| (r.section.as_str(), r.digest.as_str()))
            .collect();
        let changed: Vec<String> = step
            .reads
            .iter()
            .filter(|r| then.get(r.section.as_str()) != Some(&r.digest.as_str()))
            .map(|r| format!("`{}`", r.section))
            .collect();
        Ok(if changed.is_empty() {
            format!(
                "has not passed with its current definition (it changed since its evidence in run {run})"
            )
        } else {
            format!(
                "has not passed with its current definition: {} changed since its evidence in run {run}",
                changed.join(", ")
            )
        })
    }

    /// Finds the run to resume and the steps whose passing result still
    /// holds.
    async fn prepare_resume(
        &self,
        pipeline: &Pipeline,
        git: &GitState,
    ) -> Result<(i64, Selection, BTreeMap<usize, (StepStatus, Option<i64>)>), ExecError> {
        let run_id = self
            .ledger
            .last_run_id()?
            .ok_or_else(|| ExecError::NothingToResume("no run is recorded".to_owned()))?;
        let run = self
            .ledger
            .run(run_id)?
            .ok_or_else(|| ExecError::NothingToResume(format!("run {run_id} is gone")))?;
        if run.status == RunStatus::Passed {
            return Err(ExecError::NothingToResume(format!(
                "the last run ({run_id}) passed"
            )));
        }
        if run.commit != git.commit {
            return Err(ExecError::ResumeCommitChanged {
                run_id,
                was: run
                    .commit
                    .as_deref()
                    .map_or_else(|| "(none)".to_owned(), short),
                now: git
                    .commit
                    .as_deref()
                    .map_or_else(|| "(none)".to_owned(), short),
            });
        }
        let selection = Selection::parse_label(&run.selection).unwrap_or_default();
        // A step is kept only if its own record still holds and everything
        // before it in the graph is kept too: a rerun prerequisite may change
        // what the step would produce. Plan order visits prerequisites first.
        let recorded: std::collections::HashMap<&str, &crate::ledger::StepSummary> =
            run.steps.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut keep = BTreeMap::new();
        for index in pipeline.ordered_steps() {
            let step = &pipeline.steps()[index];
            if !selection.includes(step.stage) {
                continue;
            }
            let Some(record) = recorded
                .get(step.name.as_str())
                .filter(|r| r.status.is_success())
            else {
                continue;
            };
            let prerequisites_kept = self
                .predecessors(pipeline, index, selection)
                .all(|p| keep.contains_key(&p));
            if !prerequisites_kept || step.fingerprint() != record.fingerprint {
                continue;
            }
            let root = self.root.clone();
            let (inputs, outputs) = (step.inputs.clone(), step.outputs.clone());
            let still = tokio::task::spawn_blocking(move || {
                Some((
                    hash_inputs(&root, &inputs).ok()?,
                    hash_outputs(&root, &outputs).ok()?,
                ))
            })
            .await
            .ok()
            .flatten();
            if let Some((input_hash, output_hash)) = still
                && record.input_hash.as_deref() == Some(input_hash.as_str())
                && record.output_hash == output_hash
            {
                keep.insert(index, (record.status, record.cached_from));
            }
        }
        Ok((run_id, selection, keep))
    }

    /// The steps a step waits for within a selection: its dependencies and,
    /// through the gate, every step of the previous selected stage.
    fn predecessors<'p>(
        &self,
        pipeline: &'p Pipeline,
        index: usize,
        selection: Selection,
    ) -> impl Iterator<Item = usize> + 'p {
        let step = &pipeline.steps()[index];
        let deps = step
            .depends_on
            .iter()
            .filter_map(|d| pipeline.step_index(d))
            .filter(move |&d| selection.includes(pipeline.steps()[d].stage));
        let gate = step
            .stage
            .previous()
            .filter(|p| selection.includes(*p))
            .into_iter()
            .flat_map(move |p| pipeline.stage_steps(p).map(|(i, _)| i));
        deps.chain(gate)
    }
}

/// Awaits a spawned run and aborts it when dropped first.
struct AbortOnDrop(tokio::task::JoinHandle<Result<RunReport, ExecError>>);

impl std::future::Future for AbortOnDrop {
    type Output = Result<RunReport, ExecError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| match joined {
                Ok(result) => result,
                // A panic in the run is the caller's panic, as it was before
                // the run had a task of its own.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Err(ExecError::RuntimeShutdown),
            })
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

struct Coordinator<'a> {
    exec: &'a Executor,
    pipeline: &'a Pipeline,
    run_id: i64,
    opts: &'a RunOptions,
    /// The effective selection (a resumed run keeps its own).
    selection: Selection,
    included: Vec<bool>,
    log_dir: PathBuf,
    /// Where shell steps write their output.
    log_files: &'a LogFiles,
    pending_preds: Vec<usize>,
    blocker: Vec<Option<Blocker>>,
    done: Vec<bool>,
    ready: VecDeque<NodeIndex>,
    /// Final (status, attempts, reason) per step index.
    results: Vec<Option<(StepStatus, u32, Option<String>)>>,
    stage_started: BTreeMap<Stage, Instant>,
    /// State changes not yet handed to the writer; handed over as one group
    /// (one transaction) at most [`FLUSH_EVERY`] after the first of them.
    writes: Vec<LedgerWrite>,
    /// Commits the groups, off the coordinator's thread.
    writer: LedgerWriter,
    /// The ledger in-process steps reach through `StepContext::ledger`: a
    /// connection of their own, opened on the first call.
    step_ledger: &'a LedgerHandle,
    /// Each step's position in the plan (`None`: not in this run), which is
    /// how ledger writes name it.
    positions: Vec<Option<usize>>,
    /// The plan, with the fingerprints computed once per run.
    planned: &'a [PlannedStep],
    fatal: Option<ExecError>,
    /// With `changed_since`: the revision and which steps it affects.
    affected: Option<(String, Vec<bool>)>,
}

impl<'a> Coordinator<'a> {
    async fn drive(&mut self, kept: BTreeMap<usize, (StepStatus, Option<i64>)>) -> RunStatus {
        let graph = self.pipeline.graph();
        self.pending_preds = graph
            .node_indices()
            .map(|n| {
                graph
                    .neighbors_directed(n, petgraph::Direction::Incoming)
                    .count()
            })
            .collect();

        // Steps of earlier stages (proven by evidence) and steps kept by a
        // resume count as passed without running.
        let mut precompleted = Vec::new();
        for (i, step) in self.pipeline.steps().iter().enumerate() {
            let earlier = self.selection.first().is_some_and(|f| step.stage < f);
            if earlier || kept.contains_key(&i) {
                let node = self.pipeline.step_node(i);
                self.done[node.index()] = true;
                precompleted.push(node);
            }
        }
        for n in graph.node_indices() {
            if self.pending_preds[n.index()] == 0 && !self.done[n.index()] {
                self.ready.push_back(n);
            }
        }
        for (&i, &(status, cached_from)) in &kept {
            let step = &self.pipeline.steps()[i];
            self.stage_started
                .entry(step.stage)
                .or_insert_with(Instant::now);
            self.results[i] = Some((status, 0, None));
            self.exec.bus.emit(Event::StepFinished {
                run_id: self.run_id,
                step: step.name.clone(),
                stage: step.stage,
                status,
                attempts: 0,
                duration_ms: 0,
                exit_code: None,
                reason: Some("kept from the interrupted run".to_owned()),
                log: None,
                log_tail: None,
                cached_from,
                resumed: true,
            });
        }
        for node in precompleted {
            self.complete(node, Ok(()));
        }

        let (tx, mut rx) = mpsc::unbounded_channel::<TaskMessage>();
        // Step futures are polled here, by the coordinator, like ninja's
        // single event loop: no thread hand-off per step. Blocking work
        // (hashing) goes to the blocking pool; processes run on their own.
        let mut running: FuturesUnordered<StepFuture<'a>> = FuturesUnordered::new();
        let mut last_flush = Instant::now();
        let jobs = self.opts.jobs.max(1);
        let cancel = self.opts.cancel.clone();
        loop {
            self.check_writer();
            while let Some(node) = self.ready.pop_front() {
                match graph[node] {
                    Node::Gate(stage) => self.decide_gate(node, stage),
                    Node::Step(i) => {
                        if !self.included[i] {
                            continue;
                        }
                        if cancel.is_cancelled() || self.fatal.is_some() {
                            self.finish_unrun(
                                i,
                                StepStatus::Cancelled,
                                "the run was cancelled".to_owned(),
                            );
                            continue;
                        }
                        if let Some(blocker) = self.blocker[node.index()].clone() {
                            let (status, reason) = match blocker {
                                Blocker::StepFailed(what) => {
                                    (StepStatus::Gated, format!("dependency {what}"))
                                }
                                Blocker::Gated(reason) => (StepStatus::Gated, reason),
                                Blocker::Cancelled => {
                                    (StepStatus::Cancelled, "the run was cancelled".to_owned())
                                }
                            };
                            self.finish_unrun(i, status, reason);
                            continue;
                        }
                        if running.len() >= jobs {
                            self.ready.push_front(node);
                            break;
                        }
                        // Included steps are the planned ones.
                        let Some(position) = self.positions[i] else {
                            continue;
                        };
                        self.start_stage(self.pipeline.steps()[i].stage);
                        running.push(Box::pin(self.step_job(i, position, tx.clone()).run()));
                    }
                }
            }
            // Group commit: state changes go to the ledger writer at most
            // FLUSH_EVERY after they happen, and it commits them right away,
            // many per transaction when steps are short; a killed run loses
            // at most what was not committed yet (those steps rerun on
            // --resume).
            if !self.writes.is_empty() && last_flush.elapsed() >= FLUSH_EVERY {
                self.flush();
                last_flush = Instant::now();
            }
            if running.is_empty() {
                break;
            }
            let flush_at = tokio::time::Instant::from_std(last_flush + FLUSH_EVERY);
            tokio::select! {
                biased;
                Some(message) = rx.recv() => self.on_message(message),
                Some((i, result)) = running.next() => {
                    // Drain start notices first so the ledger sees a step
                    // start before its end.
                    while let Ok(message) = rx.try_recv() {
                        self.on_message(message);
                    }
                    self.on_result(i, result);
                }
                () = tokio::time::sleep_until(flush_at), if !self.writes.is_empty() => {
                    self.flush();
                    last_flush = Instant::now();
                }
            }
        }
        while let Ok(message) = rx.try_recv() {
            self.on_message(message);
        }
        self.flush();
        // Everything is recorded before the run's end is.
        self.writer.finish();
        self.check_writer();

        // Every included step must have ended; one that did not would be a
        // scheduling bug, and it must never let a run pass.
        let all_passed = self
            .results
            .iter()
            .zip(&self.included)
            .filter(|(_, inc)| **inc)
            .all(|(r, _)| r.as_ref().is_some_and(|r| r.0.is_success()));
        if cancel.is_cancelled() {
            RunStatus::Cancelled
        } else if all_passed {
            RunStatus::Passed
        } else {
            RunStatus::Failed
        }
    }

    fn start_stage(&mut self, stage: Stage) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.stage_started.entry(stage) {
            e.insert(Instant::now());
            self.exec.bus.emit(Event::StageStarted {
                run_id: self.run_id,
                stage,
            });
        }
    }

    /// Hands the pending state changes to the writer as one group.
    fn flush(&mut self) {
        self.writer.submit(std::mem::take(&mut self.writes));
    }

    /// A ledger that cannot record evidence ends the run: the writer has
    /// cancelled the running steps; the run reports why.
    fn check_writer(&mut self) {
        if let Some(e) = self.writer.take_failure() {
            self.opts.cancel.cancel();
            self.fatal.get_or_insert(e);
        }
    }

    fn on_message(&mut self, message: TaskMessage) {
        match message {
            TaskMessage::Started {
                index,
                attempt,
                at_ms,
                log,
            } => {
                let step = &self.pipeline.steps()[index];
                // Only planned steps run, so the position is always there.
                if let Some(position) = self.positions[index] {
                    self.writes.push(LedgerWrite::StepStarted {
                        position,
                        attempt,
                        at_ms,
                        log_path: log.clone(),
                    });
                }
                self.exec.bus.emit(Event::StepStarted {
                    run_id: self.run_id,
                    step: step.name.clone(),
                    stage: step.stage,
                    attempt,
                    log,
                });
            }
            TaskMessage::Retrying {
                index,
                attempt,
                delay,
                reason,
            } => {
                let step = &self.pipeline.steps()[index];
                self.exec.bus.emit(Event::StepRetrying {
                    run_id: self.run_id,
                    step: step.name.clone(),
                    stage: step.stage,
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                    reason,
                });
            }
        }
    }

    /// Records a step that never ran (gated or cancelled) and releases what
    /// waits on it.
    fn finish_unrun(&mut self, i: usize, status: StepStatus, reason: String) {
        let result = StepResult {
            status: Some(status),
            reason: Some(reason),
            ..StepResult::default()
        };
        self.on_result(i, result);
    }

    fn on_result(&mut self, i: usize, result: StepResult) {
        let step = &self.pipeline.steps()[i];
        let status = result.status.unwrap_or(StepStatus::Failed);
        let record = StepOutcomeRecord {
            status: Some(status),
            started_at_ms: result.started_ms,
            finished_at_ms: now_ms(),
            duration_ms: result
                .started_ms
                .map(|_| result.duration.as_millis() as i64),
            attempts: result.attempts,
            exit_code: result.exit_code,
            input_hash: result.input_hash.clone(),
            output_hash: result.output_hash.clone(),
            log_path: result.log_path.clone(),
            reason: result.reason.clone(),
            cached_from: result.cached_from,
            evidence: result.evidence,
        };
        // Only planned steps end here (kept ones are not rewritten).
        if let Some(position) = self.positions[i] {
            self.writes
                .push(LedgerWrite::StepFinished { position, record });
        }
        self.exec.bus.emit(Event::StepFinished {
            run_id: self.run_id,
            step: step.name.clone(),
            stage: step.stage,
            status,
            attempts: result.attempts,
            duration_ms: result.duration.as_millis() as u64,
            exit_code: result.exit_code,
            reason: result.reason.clone(),
            log: result.log_path.clone(),
            log_tail: result.log_tail.clone(),
            cached_from: result.cached_from,
            resumed: false,
        });
        self.results[i] = Some((status, result.attempts, result.reason.clone()));
        let node = self.pipeline.step_node(i);
        self.done[node.index()] = true;
        let outcome = match status {
            StepStatus::Passed | StepStatus::Cached => Ok(()),
            StepStatus::Gated => Err(Blocker::Gated(result.reason.unwrap_or_default())),
            StepStatus::Cancelled => Err(Blocker::Cancelled),
            StepStatus::Failed | StepStatus::TimedOut | StepStatus::Pending => {
                Err(Blocker::StepFailed(format!(
                    "`{}` {}",
                    step.name,
                    match status {
                        StepStatus::TimedOut => "timed out".to_owned(),
                        _ => format!(
                            "failed ({})",
                            result.reason.as_deref().unwrap_or("no reason recorded")
                        ),
                    }
                )))
            }
        };
        self.complete(node, outcome);
    }

    fn decide_gate(&mut self, node: NodeIndex, stage: Stage) {
        self.done[node.index()] = true;
        let selected = self.selection.includes(stage);
        if !selected {
            // An earlier stage proven by the ledger before the run started.
            self.complete(node, Ok(()));
            return;
        }
        let status = StageStatus::of_steps(
            self.pipeline
                .stage_steps(stage)
                .filter_map(|(i, _)| self.results[i].as_ref().map(|r| r.0)),
        );
        let blocker = self.blocker[node.index()].clone();
        let (outcome, reason) = match (status, blocker) {
            (StageStatus::Passed, _) => (Ok(()), None),
            (_, Some(Blocker::StepFailed(what))) => {
                let reason = format!("stage `{stage}` did not pass: step {what}");
                (Err(Blocker::Gated(reason.clone())), Some(reason))
            }
            (_, Some(Blocker::Gated(reason))) => {
                (Err(Blocker::Gated(reason.clone())), Some(reason))
            }
            (_, Some(Blocker::Cancelled)) | (_, None) => (
                Err(Blocker::Cancelled),
                Some("the run was cancelled".to_owned()),
            ),
        };
        self.writes.push(LedgerWrite::GateDecided {
            stage,
            passed: outcome.is_ok(),
            reason,
        });
        let since = self
            .stage_started
            .get(&stage)
            .copied()
            .unwrap_or_else(Instant::now);
        self.exec.bus.emit(Event::StageFinished {
            run_id: self.run_id,
            stage,
            status,
            duration_ms: since.elapsed().as_millis() as u64,
        });
        self.complete(node, outcome);
    }

    fn complete(&mut self, node: NodeIndex, outcome: Result<(), Blocker>) {
        let graph = self.pipeline.graph();
        for succ in graph.neighbors(node) {
            let k = succ.index();
            // A stage's gate reason wins over a dependency's: it names the
            // stage that did not pass.
            if let Err(b) = &outcome
                && (self.blocker[k].is_none()
                    || (matches!(b, Blocker::Gated(_))
                        && matches!(self.blocker[k], Some(Blocker::StepFailed(_)))))
            {
                self.blocker[k] = Some(b.clone());
            }
            self.pending_preds[k] -= 1;
            if self.pending_preds[k] == 0 && !self.done[k] {
                self.ready.push_back(succ);
            }
        }
    }

    /// The job of a planned step. It borrows the pipeline, the plan and the
    /// options rather than copying them: step futures live only as long as
    /// the coordinator's loop that polls them.
    fn step_job(
        &self,
        index: usize,
        position: usize,
        tx: mpsc::UnboundedSender<TaskMessage>,
    ) -> StepJob<'a> {
        let step = &self.pipeline.steps()[index];
        let mut log_name = String::with_capacity(step.name.len() + 4);
        log_name.push_str(&step.name);
        log_name.push_str(".log");
        StepJob {
            index,
            run_id: self.run_id,
            root: &self.exec.root,
            ledger: &self.exec.ledger,
            step_ledger: self.step_ledger,
            log_files: self.log_files,
            log_path: self.log_dir.join(log_name),
            step,
            fingerprint: &self.planned[position].fingerprint,
            reuse: match &self.affected {
                _ if self.opts.force => Reuse::Never,
                None => Reuse::IfInputsDeclared,
                Some((_, affected)) if affected[index] => Reuse::Never,
                Some((rev, _)) => Reuse::Unchanged(rev.clone()),
            },
            cancel: &self.opts.cancel,
            kill_grace: self.opts.kill_grace,
            tx,
        }
    }
}

/// Whether a step may stand on an earlier passing record instead of running.
#[derive(Debug, Clone)]
enum Reuse {
    /// `--force`, or `changed_since` says it is affected.
    Never,
    /// The default: when it declares inputs and they are unchanged.
    IfInputsDeclared,
    /// `changed_since` says nothing it reads changed (it declares inputs and
    /// none of them changed): whenever a record with the same definition and
    /// inputs exists.
    Unchanged(String),
}

/// Which steps `changed` files affect: those without inputs (nothing says
/// what they read, so they always run), those whose inputs cover a changed
/// file, then, until nothing changes, those that depend on an affected step
/// or read what one writes.
fn affected_steps(pipeline: &Pipeline, root: &Path, changed: &[PathBuf]) -> Vec<bool> {
    let steps = pipeline.steps();
    let changed = hash::relative_paths(root, changed);
    let matchers: Vec<hash::InputMatcher> = steps
        .iter()
        .map(|s| hash::InputMatcher::new(&s.inputs))
        .collect();
    let outputs: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let abs: Vec<PathBuf> = s.outputs.iter().map(|o| root.join(o)).collect();
            hash::relative_paths(root, &abs)
        })
        .collect();
    let mut affected: Vec<bool> = steps
        .iter()
        .zip(&matchers)
        .map(|(s, m)| s.inputs.is_empty() || m.touches(&changed))
        .collect();
    loop {
        let mut grew = false;
        for (i, step) in steps.iter().enumerate() {
            if affected[i] {
                continue;
            }
            let by_dep = step
                .depends_on
                .iter()
                .any(|d| pipeline.step_index(d).is_some_and(|j| affected[j]));
            let by_data =
                (0..steps.len()).any(|j| j != i && affected[j] && matchers[i].touches(&outputs[j]));
            if by_dep || by_data {
                affected[i] = true;
                grew = true;
            }
        }
        if !grew {
            return affected;
        }
    }
}

/// A running step, polled by the coordinator; yields its index and result.
type StepFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (usize, StepResult)> + Send + 'a>>;

/// Everything a step's future needs; borrowed from the run.
struct StepJob<'a> {
    index: usize,
    run_id: i64,
    root: &'a Path,
    ledger: &'a Ledger,
    step_ledger: &'a LedgerHandle,
    log_files: &'a LogFiles,
    log_path: PathBuf,
    step: &'a Step,
    fingerprint: &'a str,
    reuse: Reuse,
    /// The run's token: cancelling the run stops the step.
    cancel: &'a CancellationToken,
    kill_grace: Duration,
    tx: mpsc::UnboundedSender<TaskMessage>,
}

impl StepJob<'_> {
    async fn run(self) -> (usize, StepResult) {
        let index = self.index;
        (index, self.execute().await)
    }

    async fn execute(self) -> StepResult {
        let mut result = StepResult::default();
        let fail = |mut result: StepResult, reason: String| {
            result.status = Some(StepStatus::Failed);
            result.reason = Some(reason);
            result
        };

        // Inputs: hashed off the runtime threads.
        let input_hash = if self.step.inputs.is_empty() {
            hash::NO_INPUTS.to_owned()
        } else {
            let (root, inputs) = (self.root.to_path_buf(), self.step.inputs.clone());
            match tokio::task::spawn_blocking(move || hash_inputs(&root, &inputs)).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => return fail(result, format!("inputs: {e}")),
                Err(e) => return fail(result, format!("inputs: hashing stopped: {e}")),
            }
        };
        result.input_hash = Some(input_hash.clone());
        let fingerprint = self.fingerprint;

        let reuse = match &self.reuse {
            Reuse::Never => false,
            Reuse::IfInputsDeclared => !self.step.inputs.is_empty(),
            Reuse::Unchanged(_) => true,
        };
        if reuse {
            match self.cached(fingerprint, &input_hash).await {
                Ok(Some((run_id, output_hash))) => {
                    result.status = Some(StepStatus::Cached);
                    result.cached_from = Some(run_id);
                    result.output_hash = output_hash;
                    result.reason = Some(match &self.reuse {
                        Reuse::Unchanged(rev) => {
                            format!("nothing it reads changed since {rev}; passed in run {run_id}")
                        }
                        _ => format!("unchanged since run {run_id}"),
                    });
                    return result;
                }
                Ok(None) => {}
                Err(e) => return fail(result, format!("ledger: {e}")),
            }
        }

        // Shell steps write stdout and stderr straight into their log file
        // (`logfile`); in-process steps open it on their first line.
        let mut log = match self.step.action {
            Action::Shell { .. } => Log::Shell(self.log_files.open(self.log_path.clone())),
            Action::Task { .. } => Log::Task(StepLog::new(self.log_path.clone())),
        };
        // Where the log will be: a shell step's file gets its name soon
        // after the step starts, unless the step ends first having written
        // nothing.
        result.log_path = match &log {
            Log::Shell(shell) => shell.as_ref().map(|_| self.log_path.as_path()),
            Log::Task(task) => task.written_path(),
        }
        .map(|p| p.to_string_lossy().into_owned());
        let cwd = match &self.step.cwd {
            Some(c) => self.root.join(c),
            None => self.root.to_path_buf(),
        };

        let started = Instant::now();
        result.started_ms = Some(now_ms());
        let max_attempts = self.step.retries.saturating_add(1);
        let evidence = EvidenceSink::default();
        let mut end = AttemptEnd::Cancelled;
        for attempt in 1..=max_attempts {
            result.attempts = attempt;
            if attempt > 1 {
                log.line(&format!(
                    "--- mlops: attempt {attempt} of {max_attempts} ---"
                ));
            }
            let _ = self.tx.send(TaskMessage::Started {
                index: self.index,
                attempt,
                at_ms: now_ms(),
                log: result.log_path.clone(),
            });
            end = match &self.step.action {
                Action::Shell { command } => {
                    run_shell(ShellAttempt {
                        command,
                        cwd: &cwd,
                        env: self.shell_env(),
                        log: match &mut log {
                            Log::Shell(Some(shell)) => shell.for_child(),
                            _ => None,
                        },
                        unnamed: match &mut log {
                            Log::Shell(shell) => shell
                                .as_mut()
                                .map(|l| l as &mut dyn crate::process::PendingLog),
                            Log::Task(_) => None,
                        },
                        timeout: self.step.timeout,
                        cancel: self.cancel,
                        kill_grace: self.kill_grace,
                    })
                    .await
                }
                Action::Task { action, .. } => {
                    let ctx = StepContext {
                        run_id: self.run_id,
                        step: self.step.name.clone(),
                        stage: self.step.stage,
                        attempt,
                        project_root: self.root.to_path_buf(),
                        cwd: cwd.clone(),
                        env: self.step.env.clone(),
                        cancel: self.cancel.child_token(),
                        log: match &log {
                            Log::Task(task) => task.clone(),
                            Log::Shell(_) => StepLog::new(self.log_path.clone()),
                        },
                        evidence: evidence.clone(),
                        kill_grace: self.kill_grace,
                        ledger: self.step_ledger.clone(),
                    };
                    attempt::run_task(
                        action.clone(),
                        ctx,
                        self.step.timeout,
                        self.cancel,
                        self.kill_grace,
                    )
                    .await
                }
            };
            let retry_reason = match &end {
                AttemptEnd::Passed | AttemptEnd::Cancelled => break,
                AttemptEnd::Failed { reason, .. } => reason.clone(),
                AttemptEnd::TimedOut => "timed out".to_owned(),
            };
            if attempt == max_attempts {
                break;
            }
            let delay = self.step.backoff_before(attempt);
            log.line(&format!(
                "--- mlops: attempt {attempt} {retry_reason}; retrying in {delay:?} ---"
            ));
            let _ = self.tx.send(TaskMessage::Retrying {
                index: self.index,
                attempt,
                delay,
                reason: retry_reason,
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => { end = AttemptEnd::Cancelled; break; }
            }
        }
        result.duration = started.elapsed();
        result.evidence = evidence.take();

        match end {
            AttemptEnd::Passed if self.step.outputs.is_empty() => {
                result.status = Some(StepStatus::Passed);
            }
            AttemptEnd::Passed => {
                let (root, outputs) = (self.root.to_path_buf(), self.step.outputs.clone());
                match tokio::task::spawn_blocking(move || hash_outputs(&root, &outputs)).await {
                    Ok(Ok(h)) => {
                        result.output_hash = h;
                        result.status = Some(StepStatus::Passed);
                    }
                    Ok(Err(e)) => {
                        result.status = Some(StepStatus::Failed);
                        result.reason = Some(e.to_string());
                    }
                    Err(e) => {
                        result.status = Some(StepStatus::Failed);
                        result.reason = Some(format!("outputs: hashing stopped: {e}"));
                    }
                }
            }
            AttemptEnd::Failed { exit_code, reason } => {
                result.status = Some(StepStatus::Failed);
                result.exit_code = exit_code;
                result.reason = Some(reason);
            }
            AttemptEnd::TimedOut => {
                result.status = Some(StepStatus::TimedOut);
                result.reason = Some(format!(
                    "timed out after {}",
                    humantime::format_duration(self.step.timeout.unwrap_or_default())
                ));
            }
            AttemptEnd::Cancelled => {
                result.status = Some(StepStatus::Cancelled);
                result.reason = Some("the run was cancelled".to_owned());
            }
        }
        result.log_path = match log {
            Log::Shell(shell) => shell.and_then(ShellLog::finish),
            Log::Task(task) => task.written_path().map(Path::to_path_buf),
        }
        .map(|p| p.to_string_lossy().into_owned());
        if result.status != Some(StepStatus::Passed) {
            result.log_tail = result
                .log_path
                .as_ref()
                .and_then(|_| tail(&self.log_path, 20));
        }
        result
    }

    /// The environment a shell step adds to the inherited one.
    fn shell_env(&self) -> Vec<(String, String)> {
        step_env(
            self.run_id,
            &self.step.name,
            self.step.stage,
            self.root,
            &self.step.env,
        )
    }

    /// A passing record with the same definition and inputs whose outputs
    /// are still what that run produced.
    async fn cached(
        &self,
        fingerprint: &str,
        input_hash: &str,
    ) -> Result<Option<(i64, Option<String>)>, LedgerError> {
        let Some(record) =
            self.ledger
                .find_passing(&self.step.name, fingerprint, input_hash, None)?
        else {
            return Ok(None);
        };
        let (root, outputs) = (self.root.to_path_buf(), self.step.outputs.clone());
        let current = tokio::task::spawn_blocking(move || hash_outputs(&root, &outputs).ok())
            .await
            .ok()
            .flatten();
        Ok(match current {
            Some(h) if h == record.output_hash => Some((record.run_id, h)),
            _ => None,
        })
    }
}

/// A step's log: a shell step's file (if one could be made), or the lines
/// of an in-process step.
enum Log<'a> {
    Shell(Option<ShellLog<'a>>),
    Task(StepLog),
}

impl Log<'_> {
    /// A line of mlops's own.
    fn line(&mut self, line: &str) {
        match self {
            Log::Shell(Some(shell)) => shell.line(line),
            Log::Shell(None) => {}
            Log::Task(task) => task.line(line),
        }
    }
}

/// The last `lines` lines of a file (reading at most its last 8 KiB).
fn tail(path: &Path, lines: usize) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(8192);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    let out = all[from..].join("\n");
    (!out.trim().is_empty()).then_some(out)
}
