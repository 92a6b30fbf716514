//! The supervisor of one local instance: a detached process that runs the
//! replicas, restarts them by policy, checks their health and writes what
//! it sees to `status.json`.
//!
//! It is started by the local provider's `start` as
//! `PROGRAM ARGS... INSTANCE_DIR` (the `mlops` binary's hidden
//! `infra supervise` command, or this crate's `mlops-supervise`) and runs
//! until SIGTERM or SIGINT, when it stops every replica (SIGTERM to the
//! replica's process group, SIGKILL after the grace period) and exits.
//! SIGHUP makes it re-read the `replicas` file and scale to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{InstanceFile, REPLICAS_FILE, STATUS_FILE, proc_start_time, write_atomic};
use crate::provider::{Desired, ReplicaState, fill, replica_env};
use crate::spec::RestartPolicy;

/// What the supervisor reports about a replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReplicaStatus {
    pub(crate) index: u32,
    pub(crate) pid: Option<u32>,
    pub(crate) pid_start: Option<u64>,
    pub(crate) port: u16,
    pub(crate) state: ReplicaState,
    pub(crate) restarts: u32,
    pub(crate) last_exit: Option<String>,
    pub(crate) healthy: bool,
    pub(crate) health_error: Option<String>,
}

/// `status.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Status {
    pub(crate) supervisor_pid: u32,
    pub(crate) updated_ms: i64,
    pub(crate) stopping: bool,
    pub(crate) replicas: Vec<ReplicaStatus>,
}

struct Running {
    status: ReplicaStatus,
    /// The live process, if any.
    child_pid: Option<u32>,
    /// When it started (to reset the backoff after a good run).
    started: Instant,
    /// When to start it again, when it is waiting to restart.
    restart_at: Option<Instant>,
    /// Consecutive quick failures, for the backoff.
    failures: u32,
    /// Set when it is being removed by a scale-down.
    retiring: bool,
    /// Whether it answered a health check since it last started; until it
    /// does it is checked every tick, not every interval.
    proven: bool,
}

enum Note {
    Exited {
        index: u32,
        pid: u32,
        how: String,
        success: bool,
    },
}

/// The supervisor process's main: runs [`supervise`] on a current-thread
/// runtime and turns its outcome into an exit code.
pub fn main(dir: &Path) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mlops supervisor: cannot start a runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(supervise(dir)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mlops supervisor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the supervisor for the instance in `dir` until it is told to stop.
/// Returns an error (for the supervisor's own log) if it cannot start.
pub async fn supervise(dir: &Path) -> Result<(), String> {
    let instance: InstanceFile =
        serde_json::from_slice(&std::fs::read(dir.join(super::INSTANCE_FILE)).map_err(|e| {
            format!(
                "cannot read {}: {e}",
                dir.join(super::INSTANCE_FILE).display()
            )
        })?)
        .map_err(|e| format!("invalid {}: {e}", super::INSTANCE_FILE))?;
    let mut desired = Desired {
        spec: instance.spec.clone(),
        model: instance.model.clone(),
        revision: instance.revision.clone(),
        from_env: BTreeMap::new(),
        env_digests: BTreeMap::new(),
        owner: instance.owner.clone(),
    };
    // Values read from the caller's environment arrive in ours.
    for value in desired.spec.env.values() {
        if let crate::spec::EnvValue::FromEnv { var, .. } = value
            && let Ok(v) = std::env::var(var)
        {
            desired.from_env.insert(var.clone(), v);
        }
    }
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Note>();
    let mut sup = Supervisor {
        dir: dir.to_path_buf(),
        instance,
        desired,
        replicas: BTreeMap::new(),
        tx,
        stopping: false,
    };
    let target = sup.read_replicas();
    sup.scale_to(target);
    sup.write_status();
    let mut health_tick = tokio::time::interval(sup.desired.spec.health.interval);
    health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut restart_tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                let target = sup.read_replicas();
                sup.scale_to(target);
                sup.write_status();
            }
            Some(note) = rx.recv() => {
                sup.on_note(note);
                sup.write_status();
            }
            _ = restart_tick.tick() => {
                // The instance was removed (its project deleted): nothing
                // owns these processes any more.
                if !sup.dir.join(super::INSTANCE_FILE).exists() {
                    sup.log("the instance directory is gone; stopping");
                    break;
                }
                let restarted = sup.restart_due();
                let checked = sup.check_health(true).await;
                if restarted || checked {
                    sup.write_status();
                }
            }
            _ = health_tick.tick() => {
                sup.check_health(false).await;
                sup.write_status();
            }
        }
    }
    sup.stop_all(&mut rx).await;
    Ok(())
}

struct Supervisor {
    dir: PathBuf,
    instance: InstanceFile,
    desired: Desired,
    replicas: BTreeMap<u32, Running>,
    tx: mpsc::UnboundedSender<Note>,
    stopping: bool,
}

impl Supervisor {
    fn read_replicas(&self) -> u32 {
        std::fs::read_to_string(self.dir.join(REPLICAS_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(self.instance.replicas)
    }

    fn log(&self, line: &str) {
        eprintln!(
            "[{}] {line}",
            mlops_core::ledger::format_ms(mlops_core::ledger::now_ms())
        );
    }

    fn scale_to(&mut self, target: u32) {
        for index in 0..target {
            if !self.replicas.contains_key(&index) {
                let port = match self.allocate_port() {
                    Ok(p) => p,
                    Err(e) => {
                        self.log(&format!("replica {index}: {e}"));
                        0
                    }
                };
                let mut running = Running {
                    status: ReplicaStatus {
                        index,
                        pid: None,
                        pid_start: None,
                        port,
                        state: ReplicaState::Starting,
                        restarts: 0,
                        last_exit: None,
                        healthy: false,
                        health_error: None,
                    },
                    child_pid: None,
                    started: Instant::now(),
                    restart_at: None,
                    failures: 0,
                    retiring: false,
                    proven: false,
                };
                self.spawn(&mut running);
                self.replicas.insert(index, running);
            }
        }
        let extra: Vec<u32> = self.replicas.range(target..).map(|(i, _)| *i).collect();
        for index in extra {
            if let Some(r) = self.replicas.get_mut(&index) {
                r.retiring = true;
                match r.child_pid {
                    Some(pid) => {
                        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
                    }
                    None => {
                        self.replicas.remove(&index);
                    }
                }
            }
        }
    }

    fn allocate_port(&self) -> Result<u16, String> {
        if let Some(p) = self.desired.spec.host_port {
            return Ok(p);
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| format!("cannot allocate a port on 127.0.0.1: {e}"))?;
        listener
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| format!("cannot allocate a port on 127.0.0.1: {e}"))
    }

    fn spawn(&self, r: &mut Running) {
        let index = r.status.index;
        let spec = &self.desired.spec;
        let model_dir = self.instance.model_dir.to_string_lossy().into_owned();
        let version = self
            .desired
            .model
            .as_ref()
            .map_or(String::new(), |m| m.version.clone());
        let port = r.status.port;
        let words: Vec<String> = spec
            .command
            .iter()
            .map(|w| fill(w, port, "127.0.0.1", &model_dir, index, &version))
            .collect();
        let env = match replica_env(&self.desired, port, "127.0.0.1", &model_dir, index) {
            Ok(env) => env,
            Err(e) => {
                self.fail_spawn(r, e.to_string());
                return;
            }
        };
        let program = super::resolve_program(&self.instance.root, &words[0]);
        let log = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(super::replica_log(index)))
        {
            Ok(f) => f,
            Err(e) => {
                self.fail_spawn(r, format!("cannot open its log: {e}"));
                return;
            }
        };
        let (out, err) = match log.try_clone() {
            Ok(copy) => (log, copy),
            Err(e) => {
                self.fail_spawn(r, format!("cannot open its log: {e}"));
                return;
            }
        };
        let mut command = Command::new(&program);
        command
            .args(&words[1..])
            .current_dir(&self.instance.root)
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false);
        match command.spawn() {
            Ok(child) => {
                let pid = child.id().unwrap_or(0);
                r.child_pid = Some(pid);
                r.status.pid = Some(pid);
                r.status.pid_start = proc_start_time(pid);
                r.status.state = ReplicaState::Running;
                r.status.healthy = false;
                r.status.health_error = Some("not checked yet".into());
                r.started = Instant::now();
                r.restart_at = None;
                r.proven = false;
                self.log(&format!(
                    "replica {index}: started pid {pid} on port {port}"
                ));
                let tx = self.tx.clone();
                tokio::spawn(wait(child, index, pid, tx));
            }
            Err(e) => self.fail_spawn(r, format!("cannot start `{}`: {e}", program.display())),
        }
    }

    fn fail_spawn(&self, r: &mut Running, why: String) {
        self.log(&format!("replica {}: {why}", r.status.index));
        r.child_pid = None;
        r.status.pid = None;
        r.status.last_exit = Some(why);
        r.failures += 1;
        self.schedule_restart(r, false);
    }

    fn schedule_restart(&self, r: &mut Running, success: bool) {
        let restart = match self.desired.spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        };
        r.status.healthy = false;
        if restart && !self.stopping && !r.retiring {
            // 100 ms doubling to 10 s; a replica that ran 30 s starts over.
            let backoff =
                Duration::from_millis(100u64 << r.failures.min(7)).min(Duration::from_secs(10));
            r.restart_at = Some(Instant::now() + backoff);
            r.status.state = ReplicaState::Restarting;
        } else {
            r.restart_at = None;
            r.status.state = ReplicaState::Exited;
        }
    }

    fn on_note(&mut self, note: Note) {
        let Note::Exited {
            index,
            pid,
            how,
            success,
        } = note;
        let Some(mut r) = self.replicas.remove(&index) else {
            return;
        };
        if r.child_pid != Some(pid) {
            self.replicas.insert(index, r);
            return;
        }
        self.log(&format!("replica {index}: pid {pid} {how}"));
        r.child_pid = None;
        r.status.pid = None;
        r.status.pid_start = None;
        r.status.last_exit = Some(how);
        if r.retiring {
            return;
        }
        if r.started.elapsed() >= Duration::from_secs(30) {
            r.failures = 0;
        } else {
            r.failures += 1;
        }
        self.schedule_restart(&mut r, success);
        self.replicas.insert(index, r);
    }

    fn restart_due(&mut self) -> bool {
        let now = Instant::now();
        let due: Vec<u32> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.restart_at.is_some_and(|t| t <= now))
            .map(|(i, _)| *i)
            .collect();
        for index in &due {
            if let Some(mut r) = self.replicas.remove(index) {
                r.status.restarts += 1;
                self.spawn(&mut r);
                self.replicas.insert(*index, r);
            }
        }
        !due.is_empty()
    }

    /// Checks the replicas' health (only those not yet proven healthy, with
    /// `unproven`); whether it checked any.
    async fn check_health(&mut self, unproven: bool) -> bool {
        let health = &self.desired.spec.health;
        let checks: Vec<_> = self
            .replicas
            .values()
            .filter(|r| r.child_pid.is_some() && !(unproven && r.proven))
            .map(|r| {
                let (index, port) = (r.status.index, r.status.port);
                let (path, timeout) = (health.path.clone(), health.timeout);
                async move { (index, crate::health::check(port, &path, timeout).await) }
            })
            .collect();
        if checks.is_empty() {
            return false;
        }
        for (index, result) in futures_util::future::join_all(checks).await {
            if let Some(r) = self.replicas.get_mut(&index) {
                match result {
                    Ok(_) => {
                        r.status.healthy = true;
                        r.status.health_error = None;
                        r.proven = true;
                    }
                    Err(e) => {
                        r.status.healthy = false;
                        r.status.health_error = Some(e);
                    }
                }
            }
        }
        true
    }

    fn write_status(&self) {
        let status = Status {
            supervisor_pid: std::process::id(),
            updated_ms: mlops_core::ledger::now_ms(),
            stopping: self.stopping,
            replicas: self.replicas.values().map(|r| r.status.clone()).collect(),
        };
        if let Ok(bytes) = serde_json::to_vec_pretty(&status)
            && let Err(e) = write_atomic(&self.dir.join(STATUS_FILE), &bytes)
        {
            self.log(&format!("cannot write {STATUS_FILE}: {e}"));
        }
    }

    async fn stop_all(&mut self, rx: &mut mpsc::UnboundedReceiver<Note>) {
        self.stopping = true;
        self.write_status();
        let grace = self.desired.spec.stop_grace;
        for r in self.replicas.values_mut() {
            r.restart_at = None;
            if let Some(pid) = r.child_pid {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.replicas.values().any(|r| r.child_pid.is_some()) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Note::Exited {
                    index, pid, how, ..
                })) => {
                    if let Some(r) = self.replicas.get_mut(&index)
                        && r.child_pid == Some(pid)
                    {
                        r.child_pid = None;
                        self.log(&format!("replica {index}: pid {pid} {how}"));
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    for r in self.replicas.values() {
                        if let Some(pid) = r.child_pid {
                            self.log(&format!(
                                "replica {}: pid {pid} still running after {}; killing it",
                                r.status.index,
                                humantime::format_duration(grace)
                            ));
                            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                        }
                    }
                    // Reap what was killed.
                    let reap = tokio::time::Instant::now() + Duration::from_secs(2);
                    while let Ok(Some(Note::Exited { index, .. })) =
                        tokio::time::timeout_at(reap, rx.recv()).await
                    {
                        if let Some(r) = self.replicas.get_mut(&index) {
                            r.child_pid = None;
                        }
                        if self.replicas.values().all(|r| r.child_pid.is_none()) {
                            break;
                        }
                    }
                    break;
                }
            }
        }
        self.log("stopped");
    }
}

async fn wait(mut child: Child, index: u32, pid: u32, tx: mpsc::UnboundedSender<Note>) {
    let (how, success) = match child.wait().await {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => (format!("exited with status {code}"), code == 0),
                (None, Some(sig)) => (format!("was killed by signal {sig}"), false),
                _ => ("ended".to_owned(), false),
            }
        }
        Err(e) => (format!("could not be waited for: {e}"), false),
    };
    let _ = tx.send(Note::Exited {
        index,
        pid,
        how,
        success,
    });
}
