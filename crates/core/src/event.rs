//! The typed events a run emits. Subscribers (the CLI's live view, JSON
//! lines, an embedding tool) receive every event in order. Events are a
//! boundary: they serialize as JSON objects tagged by `event`.

use serde::Serialize;
use tokio::sync::mpsc;

use crate::stage::Stage;
use crate::status::{RunStatus, StageStatus, StepStatus};

/// Something that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A run began (or a resumed run began again).
    RunStarted {
        /// Ledger id.
        run_id: i64,
        /// Project name.
        project: String,
        /// Commit, when in a git repository.
        commit: Option<String>,
        /// Whether the working tree differs from the commit.
        dirty: bool,
        /// `all`, `stage:NAME` or `from:NAME`.
        selection: String,
        /// Steps in the run.
        steps: usize,
        /// True for `--resume`.
        resumed: bool,
    },
    /// `--changed-since`: what changed and which steps it affects (the
    /// others are reused from the ledger when they can be).
    ChangedSince {
        /// Ledger id.
        run_id: i64,
        /// The revision compared with.
        rev: String,
        /// How many files differ from it.
        files: usize,
        /// The steps that will run because of the changes.
        affected: Vec<String>,
    },
    /// A stage's first step became ready.
    StageStarted {
        /// Ledger id.
        run_id: i64,
        /// The stage.
        stage: Stage,
    },
    /// A stage's gate was decided.
    StageFinished {
        /// Ledger id.
        run_id: i64,
        /// The stage.
        stage: Stage,
        /// How it ended.
        status: StageStatus,
        /// Time from its start to the gate decision.
        duration_ms: u64,
    },
    /// An attempt of a step started.
    StepStarted {
        /// Ledger id.
        run_id: i64,
        /// The step.
        step: String,
        /// Its stage.
        stage: Stage,
        /// 1-based attempt.
        attempt: u32,
        /// Its log file.
        log: Option<String>,
    },
    /// An attempt failed and the step will be retried after a delay.
    StepRetrying {
        /// Ledger id.
        run_id: i64,
        /// The step.
        step: String,
        /// Its stage.
        stage: Stage,
        /// The attempt that failed.
        attempt: u32,
        /// Delay before the next attempt.
        delay_ms: u64,
        /// Why the attempt failed.
        reason: String,
    },
    /// A step reached its final status.
    StepFinished {
        /// Ledger id.
        run_id: i64,
        /// The step.
        step: String,
        /// Its stage.
        stage: Stage,
        /// Final status.
        status: StepStatus,
        /// Attempts made.
        attempts: u32,
        /// Wall time of all attempts.
        duration_ms: u64,
        /// Exit code of the last attempt (shell steps).
        exit_code: Option<i32>,
        /// Why it did not pass, or what it reused.
        reason: Option<String>,
        /// Its log file.
        log: Option<String>,
        /// The last lines of its log, for failures.
        log_tail: Option<String>,
        /// The run whose result a cached step reused.
        cached_from: Option<i64>,
        /// True when `--resume` kept a result of the interrupted run.
        resumed: bool,
    },
    /// The run ended.
    RunFinished {
        /// Ledger id.
        run_id: i64,
        /// How it ended.
        status: RunStatus,
        /// Wall time.
        duration_ms: u64,
    },
}

/// The senders of every subscriber.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventBus {
    subscribers: Vec<mpsc::UnboundedSender<Event>>,
}

impl EventBus {
    pub(crate) fn subscribe(&mut self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.push(tx);
        rx
    }

    pub(crate) fn emit(&self, event: Event) {
        // A subscriber that went away does not stop the run.
        if let Some((last, rest)) = self.subscribers.split_last() {
            for s in rest {
                let _ = s.send(event.clone());
            }
            let _ = last.send(event);
        }
    }
}
