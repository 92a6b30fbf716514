//! One attempt of one step: a shell command in its own process group, or an
//! in-process action, bounded by a timeout and a cancellation token.

use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::logfile::{NAME_AFTER, ShellLog};
use crate::kind::{StepAction, StepContext};

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
pub(crate) struct ShellAttempt<'a, 'b> {
    pub(crate) command: &'a str,
    pub(crate) cwd: &'a Path,
    pub(crate) env: Vec<(String, String)>,
    /// The step's log, for stdout and stderr.
    pub(crate) log: Option<std::fs::File>,
    /// A shell step's log that has no name yet: named if the attempt runs
    /// for [`NAME_AFTER`], and told whether the attempt left processes
    /// behind.
    pub(crate) unnamed: Option<&'a mut ShellLog<'b>>,
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
async fn deadline(timeout: Option<Duration>) {
    match timeout {
        Some(t) => tokio::time::sleep(t).await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn run_shell(a: ShellAttempt<'_, '_>) -> AttemptEnd {
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
    let name_after = tokio::time::sleep(NAME_AFTER);
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

pub(crate) async fn run_task(
    action: Arc<dyn StepAction>,
    ctx: StepContext,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
    kill_grace: Duration,
) -> AttemptEnd {
    let attempt_token = ctx.cancel.clone();
    // Polled in place (no extra task: one less thread hand-off per step),
    // with panics caught as failures.
    let mut work = CatchUnwind(action.run(ctx));
    let end = tokio::select! {
        outcome = &mut work => match outcome {
            Ok(Ok(())) => AttemptEnd::Passed,
            Ok(Err(failure)) => AttemptEnd::Failed { exit_code: None, reason: failure.message },
            Err(payload) => AttemptEnd::Failed {
                exit_code: None,
                reason: format!("step panicked: {}", panic_message(payload.as_ref())),
            },
        },
        () = deadline(timeout) => AttemptEnd::TimedOut,
        () = cancel.cancelled() => AttemptEnd::Cancelled,
    };
    if matches!(end, AttemptEnd::TimedOut | AttemptEnd::Cancelled) {
        // Tell the step, then give it the grace period (and a little more)
        // to stop what it started — a command it runs gets SIGTERM, then
        // SIGKILL — before its future is dropped.
        attempt_token.cancel();
        let _ = tokio::time::timeout(kill_grace + Duration::from_millis(500), &mut work).await;
    }
    end
}

/// Turns a panic while polling the inner future into an `Err`.
struct CatchUnwind<F: ?Sized>(Pin<Box<F>>);

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Kills what an interrupted run left behind: the process groups of every
/// process whose environment says it belongs to `project_dir`, run `run_id`
/// and one of `steps` (the executor sets `MLOPS_PROJECT_DIR`, `MLOPS_RUN_ID`
/// and `MLOPS_STEP` for every shell step, and children inherit them).
/// Returns how many groups were signalled. Linux only (`/proc`); elsewhere
/// nothing is found.
pub(crate) async fn kill_leftovers(
    project_dir: &Path,
    run_id: i64,
    steps: &std::collections::HashSet<String>,
    grace: Duration,
) -> usize {
    let own_group = nix::unistd::getpgrp();
    let want_dir = format!("MLOPS_PROJECT_DIR={}", project_dir.display());
    let want_run = format!("MLOPS_RUN_ID={run_id}");
    let mut groups = std::collections::BTreeSet::new();
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
            .find_map(|v| v.strip_prefix(b"MLOPS_STEP="))
            .and_then(|v| std::str::from_utf8(v).ok());
        if !(has(&want_dir) && has(&want_run) && step.is_some_and(|s| steps.contains(s))) {
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
