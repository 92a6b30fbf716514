//! Running a step's processes: `/bin/sh -c` in a process group of its own,
//! bounded by a timeout and a cancellation token (SIGTERM, grace, SIGKILL to
//! the whole group), the `MLOPS_*` variables that mark every process of a
//! step, and, for `--resume`, finding and stopping the process groups an
//! interrupted run left behind by those variables.
//!
//! A leaf module: it depends on nothing in the crate but `stage`, so the
//! executor (`exec`) and in-process steps (`kind`'s
//! `StepContext::run_command`) both use it without depending on each other.
//! It does not decide what a step is or how its log is named; the caller
//! hands it a [`PendingLog`] when the log has no name yet.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use crate::stage::Stage;

/// The run a process belongs to (the ledger id).
pub(crate) const RUN_ID_VAR: &str = "MLOPS_RUN_ID";
/// The step a process belongs to.
pub(crate) const STEP_VAR: &str = "MLOPS_STEP";
/// The step's stage.
pub(crate) const STAGE_VAR: &str = "MLOPS_STAGE";
/// The project directory a process's run belongs to.
pub(crate) const PROJECT_DIR_VAR: &str = "MLOPS_PROJECT_DIR";
/// Every variable mlops sets for a step; a manifest cannot declare them.
pub(crate) const RESERVED_VARS: [&str; 4] = [RUN_ID_VAR, STEP_VAR, STAGE_VAR, PROJECT_DIR_VAR];

/// The variables that tie a process to a run of a project: what
/// [`kill_leftovers`] looks for, in the form [`step_env`] sets them.
fn run_vars(run_id: i64, project_dir: &Path) -> [(String, String); 2] {
    [
        (RUN_ID_VAR.to_owned(), run_id.to_string()),
        (
            PROJECT_DIR_VAR.to_owned(),
            project_dir.to_string_lossy().into_owned(),
        ),
    ]
}

/// The environment a step's processes get on top of the inherited one: the
/// step's declared `env`, then the `MLOPS_*` variables (run, step, stage,
/// project directory), last so that nothing declared can hide a step's
/// processes from [`kill_leftovers`] (the manifest also refuses to
/// declare them). Shell steps and `StepContext::run_command` both use it.
pub(crate) fn step_env(
    run_id: i64,
    step: &str,
    stage: Stage,
    project_dir: &Path,
    declared: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env = Vec::with_capacity(4 + declared.len());
    env.extend(declared.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(run_vars(run_id, project_dir));
    env.push((STEP_VAR.to_owned(), step.to_owned()));
    env.push((STAGE_VAR.to_owned(), stage.name().to_owned()));
    env
}

/// A step's log file that has no name yet (`exec::logfile`): named once the
/// attempt has run for [`PendingLog::name_after`], and told when the
/// attempt left processes behind that may still write to it.
pub(crate) trait PendingLog: Send {
    /// How long an attempt runs before its log is named anyway.
    fn name_after(&self) -> Duration;
    /// Whether it has its name already.
    fn is_named(&self) -> bool;
    /// Gives it its name now.
    fn name(&mut self);
    /// Something the attempt started is still running.
    fn left_running(&mut self);
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttemptEnd {
    Passed,
    Failed {
        exit_code: Option<i32>,
        reason: String,
    },
    TimedOut,
    Cancelled,
}

/// What a shell attempt needs.
pub(crate) struct ShellAttempt<'a> {
    pub(crate) command: &'a str,
    pub(crate) cwd: &'a Path,
    pub(crate) env: Vec<(String, String)>,
    /// The step's log, for stdout and stderr.
    pub(crate) log: Option<std::fs::File>,
    /// A shell step's log that has no name yet.
    pub(crate) unnamed: Option<&'a mut dyn PendingLog>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) kill_grace: Duration,
}

/// Stdout and stderr of a shell: both the log, or nothing.
fn stdio_for(log: Option<std::fs::File>) -> (Stdio, Stdio) {
    match log.and_then(|f| Some((f.try_clone().ok()?, f))) {
        Some((out, err)) => (Stdio::from(out), Stdio::from(err)),
        None => (Stdio::null(), Stdio::null()),
    }
}

/// Waits for `timeout`, or forever.
pub(crate) async fn deadline(timeout: Option<Duration>) {
    match timeout {
        Some(t) => tokio::time::sleep(t).await,
        None => std::future::pending().await,
    }
}

/// Runs one attempt of a shell command.
pub(crate) async fn run_shell(a: ShellAttempt<'_>) -> AttemptEnd {
    let mut log = a.unnamed;
    let (stdout, stderr) = stdio_for(a.log);
    let spawned = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(a.command)
        .current_dir(a.cwd)
        .envs(a.env)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Own process group: a timeout or Ctrl-C kills the whole tree, and
        // the terminal's Ctrl-C reaches only us, not the steps.
        .process_group(0)
        .kill_on_drop(true)
        // The command (and with it this process's copy of the log's
        // descriptors) is dropped here, so the step's processes are the
        // only holders of their output.
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        // Checked only now, not before every step: the common case pays
        // nothing for the clearer message.
        Err(_) if !a.cwd.is_dir() => {
            return AttemptEnd::Failed {
                exit_code: None,
                reason: format!("working directory {} does not exist", a.cwd.display()),
            };
        }
        Err(e) => {
            return AttemptEnd::Failed {
                exit_code: None,
                reason: format!("cannot start /bin/sh: {e}"),
            };
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    // If this future is dropped mid-way, the whole group goes, not only the
    // shell (which is all `kill_on_drop` reaches).
    // Disarmed once the attempt ends: a server a step starts in the
    // background may stay in the group and must outlive the step.
    let mut guard = GroupGuard(pgid);
    let deadline = deadline(a.timeout);
    tokio::pin!(deadline);
    // Only armed while the log has no name (below).
    let name_after = tokio::time::sleep(log.as_ref().map_or(Duration::ZERO, |l| l.name_after()));
    tokio::pin!(name_after);
    let end = loop {
        tokio::select! {
            status = child.wait() => break match status {
                Ok(s) if s.success() => AttemptEnd::Passed,
                Ok(s) => AttemptEnd::Failed {
                    exit_code: s.code(),
                    reason: match (s.code(), s.signal()) {
                        (Some(code), _) => format!("exit status {code}"),
                        (None, Some(sig)) => format!("killed by signal {sig}"),
                        (None, None) => "ended abnormally".to_owned(),
                    },
                },
                Err(e) => AttemptEnd::Failed { exit_code: None, reason: format!("cannot wait for the step: {e}") },
            },
            () = &mut deadline => {
                kill_group(&mut child, pgid, a.kill_grace).await;
                break AttemptEnd::TimedOut;
            }
            () = a.cancel.cancelled() => {
                kill_group(&mut child, pgid, a.kill_grace).await;
                break AttemptEnd::Cancelled;
            }
            // A step that runs for a while gets its log's name now: it can
            // be followed, and it outlives a killed mlops.
            () = &mut name_after, if log.as_ref().is_some_and(|l| !l.is_named()) => {
                if let Some(l) = log.as_mut() {
                    l.name();
                }
            }
        }
    };
    guard.0 = None;
    // A server the step started in the background may still write to the
    // log.
    if let (Some(l), Some(pgid)) = (log, pgid)
        && killpg(pgid, None).is_ok()
    {
        l.left_running();
    }
    end
}

/// SIGKILLs a process group on drop, if any of it is left.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0
            && killpg(pgid, None).is_ok()
        {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// SIGTERM to the group, up to `grace` for the shell to exit, then SIGKILL
/// to whatever of the group is left.
async fn kill_group(child: &mut tokio::process::Child, pgid: Option<Pid>, grace: Duration) {
    if let Some(pgid) = pgid {
        // ESRCH (group already gone) is fine.
        let _ = killpg(pgid, Signal::SIGTERM);
        let _ = tokio::time::timeout(grace, child.wait()).await;
        // Only if members remain: an empty group's id could in principle
        // be reused once its leader is reaped.
        if killpg(pgid, None).is_ok() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

/// Kills what an interrupted run left behind: the process groups of every
/// process whose environment says it belongs to `project_dir`, run `run_id`
/// and one of `steps` ([`step_env`] sets those variables for every process
/// of a step, and children inherit them).
/// Returns how many groups were signalled. Linux only (`/proc`); elsewhere
/// nothing is found.
pub(crate) async fn kill_leftovers(
    project_dir: &Path,
    run_id: i64,
    steps: &HashSet<String>,
    grace: Duration,
) -> usize {
    let own_group = nix::unistd::getpgrp();
    let wanted: Vec<String> = run_vars(run_id, project_dir)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let step_prefix = format!("{STEP_VAR}=");
    let mut groups = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let has = |want: &str| vars.contains(&want.as_bytes());
        let step = vars
            .iter()
            .find_map(|v| v.strip_prefix(step_prefix.as_bytes()))
            .and_then(|v| std::str::from_utf8(v).ok());
        if !(wanted.iter().all(|w| has(w.as_str())) && step.is_some_and(|s| steps.contains(s))) {
            continue;
        }
        if let Some(pgid) = process_group(pid)
            && pgid != own_group
        {
            groups.insert(pgid);
        }
    }
    for &g in &groups {
        let _ = killpg(g, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while groups.iter().any(|&g| killpg(g, None).is_ok()) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for &g in &groups {
        if killpg(g, None).is_ok() {
            let _ = killpg(g, Signal::SIGKILL);
        }
    }
    groups.len()
}

/// The process group of `pid`, from `/proc/PID/stat` (the field after the
/// state, after the parenthesised command name).
fn process_group(pid: i32) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let _state = fields.next()?;
    let _ppid = fields.next()?;
    fields.next()?.parse().ok().map(Pid::from_raw)
}
