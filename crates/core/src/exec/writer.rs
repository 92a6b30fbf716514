//! The ledger writer: commits a run's groups of state changes on a thread of
//! its own, so the coordinator never waits for SQLite (a commit, and now and
//! then a WAL checkpoint with its `fsync`) while steps are ready to start or
//! have ended.
//!
//! Groups are committed in the order they were handed over, each as one
//! transaction; groups that queued up while a commit was under way are
//! committed together, still in order. A killed run therefore leaves a
//! ledger that describes a real moment of it, as before. This module does not
//! decide what a group holds or when one is handed over: the coordinator
//! does.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;

use super::ExecError;
use crate::ledger::{Ledger, LedgerError, LedgerWrite};

/// A thread that commits the state changes of one run.
pub(crate) struct LedgerWriter {
    groups: Option<mpsc::Sender<Vec<LedgerWrite>>>,
    thread: Option<JoinHandle<()>>,
    failed: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<ExecError>>>,
}

impl LedgerWriter {
    /// Starts the writer of run `run_id`. The first failed commit cancels
    /// `cancel` (the run's token): a ledger that cannot record evidence ends
    /// the run, whether or not the coordinator is awake to notice.
    pub(crate) fn start(
        ledger: Ledger,
        run_id: i64,
        cancel: CancellationToken,
    ) -> std::io::Result<LedgerWriter> {
        let (groups, received) = mpsc::channel::<Vec<LedgerWrite>>();
        let failed = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let (thread_failed, thread_failure) = (failed.clone(), failure.clone());
        let thread = std::thread::Builder::new()
            .name("mlops-ledger".to_owned())
            .spawn(move || {
                while let Ok(mut group) = received.recv() {
                    while let Ok(more) = received.try_recv() {
                        group.extend(more);
                    }
                    if let Err(e) = commit(&ledger, run_id, &group) {
                        record(&thread_failed, &thread_failure, ExecError::Ledger(e));
                        cancel.cancel();
                    }
                }
            })?;
        Ok(LedgerWriter {
            groups: Some(groups),
            thread: Some(thread),
            failed,
            failure,
        })
    }

    /// Hands a group of changes over to be committed as one transaction.
    pub(crate) fn submit(&self, group: Vec<LedgerWrite>) {
        if group.is_empty() {
            return;
        }
        if let Some(groups) = &self.groups {
            // The thread ends only when this sender is dropped or it
            // panicked; a lost group then shows as a missing write below.
            if groups.send(group).is_err() {
                record(&self.failed, &self.failure, ExecError::LedgerWriterStopped);
            }
        }
    }

    /// Why the first commit failed, once.
    pub(crate) fn take_failure(&self) -> Option<ExecError> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Waits until every group handed over is committed (or failed).
    pub(crate) fn finish(&mut self) {
        drop(self.groups.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            record(&self.failed, &self.failure, ExecError::LedgerWriterStopped);
        }
    }
}

/// Keeps the first failure; later ones add nothing the first does not say.
fn record(failed: &AtomicBool, failure: &Mutex<Option<ExecError>>, e: ExecError) {
    if failed.swap(true, Ordering::AcqRel) {
        return;
    }
    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
}

impl Drop for LedgerWriter {
    fn drop(&mut self) {
        // Whatever was handed over still reaches the ledger, even when the
        // run's future is dropped half-way.
        self.finish();
    }
}

/// Commits one group. A step that started and ended within the group needs
/// only its final update: that carries the start time, attempts and log too.
fn commit(ledger: &Ledger, run_id: i64, group: &[LedgerWrite]) -> Result<(), LedgerError> {
    let finished: HashSet<usize> = group
        .iter()
        .filter_map(|w| match w {
            LedgerWrite::StepFinished { position, .. } => Some(*position),
            _ => None,
        })
        .collect();
    ledger.apply(
        run_id,
        group.iter().filter(|w| {
            !matches!(w, LedgerWrite::StepStarted { position, .. } if finished.contains(position))
        }),
    )
}
