//! The release in progress, as a file: what `mlops release status` reads
//! and what `promote`, `abort` and `rollback` act on.
//!
//! One JSON document per released service and environment,
//! `.mlops/release/<environment>/<service>.json`, written atomically
//! (temporary file, fsync, rename) at every transition of a release: the
//! candidate started, each step's weight, the verdict, a human's decision.
//! The gateway keeps its own config (weights, pools) in its state
//! directory beside it; this file says *why* the gateway is configured so.
//!
//! The file outlives the processes that write it: a step killed mid-canary
//! leaves `running` with the pid of the process that ran it, and
//! [`ReleaseState::effective_phase`] says `interrupted` once that process
//! is gone, so `status` never claims a release is being driven by nobody.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Where a release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// A step is starting the candidate or shifting traffic to it.
    Running,
    /// The analysis was inconclusive and the step left the candidate with
    /// its share of traffic for a human: `mlops release promote|abort`.
    Paused,
    /// The process that was running the release is gone mid-release
    /// (computed by [`ReleaseState::effective_phase`], never written).
    Interrupted,
    /// The candidate is production.
    Promoted,
    /// The candidate passed a step that does not promote (a `shadow`, an
    /// `ab` experiment that only reports): its instance is stopped and it
    /// stays in staging for the next step.
    Passed,
    /// The candidate was taken out by the analysis (or a rollback of
    /// production to an earlier version was done).
    RolledBack,
    /// A human took the candidate out (`mlops release abort`).
    Aborted,
    /// An operation failed half-way (the reason says which and what was
    /// restored).
    Failed,
}

impl Phase {
    /// Whether a candidate may still be running with a share of traffic.
    pub fn in_progress(self) -> bool {
        matches!(self, Phase::Running | Phase::Paused | Phase::Interrupted)
    }

    /// The name used in files, output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Interrupted => "interrupted",
            Phase::Promoted => "promoted",
            Phase::Passed => "passed",
            Phase::RolledBack => "rolled-back",
            Phase::Aborted => "aborted",
            Phase::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of the latest release of a service in an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReleaseState {
    /// The released service (`[release] service`).
    pub service: String,
    /// The model (`[release] model`).
    pub model: String,
    /// The release environment.
    pub environment: String,
    /// `canary`, `blue-green`, `ab` or `shadow`, or `rollback` for a
    /// rollback of production.
    pub strategy: String,
    /// The candidate's registry number.
    pub candidate: i64,
    /// Production's number when the release started (none: a first
    /// release).
    pub stable: Option<i64>,
    /// Where the release stands.
    pub phase: Phase,
    /// The candidate's share of traffic now, in percent.
    pub weight: u32,
    /// The step (round) reached, 1-based; 0 before the first.
    pub round: u32,
    /// The planned steps.
    pub rounds: u32,
    /// Why the release is where it is.
    pub reason: String,
    /// The instance the candidate runs as, while it runs.
    pub candidate_instance: Option<String>,
    /// The pipeline run and step driving it, if a step does.
    pub run: Option<i64>,
    /// See [`ReleaseState::run`].
    pub step: Option<String>,
    /// The process driving the release while it is `running`.
    pub pid: Option<u32>,
    /// A human asked for an abort (`mlops release abort` while a step
    /// drives the release): the step rolls back at its next check.
    #[serde(default)]
    pub abort_requested: Option<String>,
    /// When the release started (RFC 3339).
    pub started: String,
    /// When this state was written (RFC 3339).
    pub updated: String,
}

impl ReleaseState {
    /// The phase, with a `running` release whose process is gone reported
    /// as [`Phase::Interrupted`].
    pub fn effective_phase(&self) -> Phase {
        match (self.phase, self.pid) {
            (Phase::Running, Some(pid)) if !process_alive(pid) => Phase::Interrupted,
            (Phase::Running, None) => Phase::Interrupted,
            (phase, _) => phase,
        }
    }

    /// `model:N` of the candidate.
    pub fn candidate_id(&self) -> String {
        format!("{}:{}", self.model, self.candidate)
    }

    /// `model:N` of stable, if there was one.
    pub fn stable_id(&self) -> Option<String> {
        self.stable.map(|n| format!("{}:{n}", self.model))
    }
}

/// Whether process `pid` exists (Linux: `/proc/PID`). A pid reused by an
/// unrelated process reads as alive: the error is towards `running`.
fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Now, as RFC 3339 with seconds.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The state file of `service` in `environment`, under the project's
/// state directory (`.mlops/`).
pub fn state_path(state_dir: &Path, environment: &str, service: &str) -> PathBuf {
    state_dir
        .join("release")
        .join(environment)
        .join(format!("{service}.json"))
}

/// A state file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("release state {}: {detail}", path.display())]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub detail: String,
}

/// The state at `path`, if there is one.
pub fn read(path: &Path) -> Result<Option<ReleaseState>, StateError> {
    let error = |detail: String| StateError {
        path: path.to_owned(),
        detail,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            error(format!(
                "not a release state ({e}); remove it to start over"
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(error(e.to_string())),
    }
}

/// Writes `state` to `path` atomically, `updated` set to now.
pub fn write(path: &Path, state: &ReleaseState) -> Result<(), StateError> {
    let error = |detail: String| StateError {
        path: path.to_owned(),
        detail,
    };
    let mut state = state.clone();
    state.updated = now();
    let mut json = serde_json::to_vec_pretty(&state).map_err(|e| error(e.to_string()))?;
    json.push(b'\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
    }
    crate::service::write_atomic(path, &json).map_err(|e| error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(phase: Phase, pid: Option<u32>) -> ReleaseState {
        ReleaseState {
            service: "iris".into(),
            model: "iris".into(),
            environment: "production".into(),
            strategy: "canary".into(),
            candidate: 2,
            stable: Some(1),
            phase,
            weight: 20,
            round: 1,
            rounds: 3,
            reason: "step 1 of 3".into(),
            candidate_instance: Some("iris-x".into()),
            run: Some(4),
            step: Some("canary".into()),
            pid,
            abort_requested: None,
            started: now(),
            updated: now(),
        }
    }

    #[test]
    fn a_state_written_reads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path(), "production", "iris");
        assert_eq!(read(&path).unwrap(), None);
        let s = state(Phase::Paused, None);
        write(&path, &s).unwrap();
        let back = read(&path).unwrap().unwrap();
        assert_eq!(back.phase, Phase::Paused);
        assert_eq!(back.candidate_id(), "iris:2");
        assert_eq!(back.stable_id().as_deref(), Some("iris:1"));
    }

    #[test]
    fn a_corrupt_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path(), "production", "iris");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{ not json").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.contains("iris.json") && e.contains("not a release state"),
            "{e}"
        );
    }

    #[test]
    fn a_running_release_whose_process_is_gone_is_interrupted() {
        assert_eq!(
            state(Phase::Running, Some(std::process::id())).effective_phase(),
            Phase::Running
        );
        // A child that has exited and been reaped leaves no /proc entry.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(
            state(Phase::Running, Some(pid)).effective_phase(),
            Phase::Interrupted
        );
        assert_eq!(
            state(Phase::Running, None).effective_phase(),
            Phase::Interrupted
        );
        assert_eq!(
            state(Phase::Paused, Some(pid)).effective_phase(),
            Phase::Paused
        );
    }
}
