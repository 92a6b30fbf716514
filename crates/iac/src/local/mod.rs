//! The `local` provider: every instance is a detached supervisor process
//! (see [`supervisor`]) that runs the replicas as child processes on
//! 127.0.0.1, each on its own port, restarts them by policy and checks
//! their health. Needs nothing installed.
//!
//! An instance lives in `.mlops/infra/local/<environment>/<service>/<id>/`:
//! `instance.json` (what to run and, for a controller's instance, its
//! owner; never a secret value), `replicas` (the desired count),
//! `status.json` (written by the supervisor), `supervisor.pid`,
//! `supervisor.log` and `replica-<n>.log`. The provider owns exactly what
//! is under that directory.

pub mod supervisor;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::provider::{
    Desired, Instance, ModelRef, Provider, ProviderError, ProviderFuture, Replica, ReplicaState,
    Scope,
};
use crate::spec::{ProviderKind, ServiceSpec};

use supervisor::Status;

pub(crate) const INSTANCE_FILE: &str = "instance.json";
pub(crate) const STATUS_FILE: &str = "status.json";
pub(crate) const REPLICAS_FILE: &str = "replicas";
const PID_FILE: &str = "supervisor.pid";
const SUPERVISOR_LOG: &str = "supervisor.log";

pub(crate) fn replica_log(index: u32) -> String {
    format!("replica-{index}.log")
}

/// `instance.json`: what the supervisor runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InstanceFile {
    pub(crate) id: String,
    pub(crate) service: String,
    pub(crate) revision: String,
    pub(crate) spec: ServiceSpec,
    pub(crate) model: Option<ModelRef>,
    /// What `{model-dir}` means (absolute).
    pub(crate) model_dir: PathBuf,
    /// The project directory: the replicas' working directory.
    pub(crate) root: PathBuf,
    pub(crate) replicas: u32,
    pub(crate) created_ms: i64,
    /// The controller that owns the instance, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<String>,
}

/// How to start a supervisor: a program that, given an instance directory
/// as its last argument, calls [`supervisor::supervise`] on it.
#[derive(Debug, Clone)]
pub struct SupervisorCommand {
    /// The program.
    pub program: PathBuf,
    /// Arguments before the instance directory.
    pub args: Vec<String>,
}

/// The local provider.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    supervisor: SupervisorCommand,
}

impl LocalProvider {
    /// A provider that starts supervisors with `supervisor`.
    pub fn new(supervisor: SupervisorCommand) -> Self {
        LocalProvider { supervisor }
    }

    fn env_dir(scope: &Scope) -> PathBuf {
        scope
            .state_dir()
            .join("infra")
            .join("local")
            .join(&scope.environment)
    }
}

/// Writes a file by renaming a sibling temporary into place, so readers see
/// the old or the new content, never half of one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A program named with a `/` is relative to the project; a bare name is
/// looked up on `PATH` when it starts.
pub(crate) fn resolve_program(root: &Path, program: &str) -> PathBuf {
    if program.contains('/') {
        root.join(program)
    } else {
        PathBuf::from(program)
    }
}

/// The start time (clock ticks after boot) of a live, non-zombie process;
/// with the pid it identifies the process even after pid reuse.
pub(crate) fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // fields[0] is the state (field 3); starttime is field 22.
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn alive(pid: u32, start: Option<u64>) -> bool {
    match (proc_start_time(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct PidFile {
    pid: u32,
    start: Option<u64>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Found {
    dir: PathBuf,
    file: InstanceFile,
}

fn instances(scope: &Scope) -> Vec<Found> {
    let mut out = Vec::new();
    let Ok(services) = std::fs::read_dir(LocalProvider::env_dir(scope)) else {
        return out;
    };
    for service in services.flatten() {
        let Ok(ids) = std::fs::read_dir(service.path()) else {
            continue;
        };
        for id in ids.flatten() {
            let dir = id.path();
            if let Some(file) = read_json::<InstanceFile>(&dir.join(INSTANCE_FILE)) {
                out.push(Found { dir, file });
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.file.service, a.file.created_ms).cmp(&(&b.file.service, b.file.created_ms))
    });
    out
}

async fn inspect(found: &Found) -> Instance {
    let pid_file: Option<PidFile> = read_json(&found.dir.join(PID_FILE));
    let status: Option<Status> = read_json(&found.dir.join(STATUS_FILE));
    let desired_replicas = std::fs::read_to_string(found.dir.join(REPLICAS_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(found.file.replicas);
    let mut problems = Vec::new();
    let supervisor_alive = pid_file.as_ref().is_some_and(|p| alive(p.pid, p.start));
    if !supervisor_alive {
        problems.push(match &pid_file {
            Some(p) => format!("its supervisor (pid {}) is gone", p.pid),
            None => "it has no supervisor".to_owned(),
        });
    }
    let health = &found.file.spec.health;
    let mut replicas = Vec::new();
    for r in status.map(|s| s.replicas).unwrap_or_default() {
        let live = r.pid.is_some_and(|pid| alive(pid, r.pid_start));
        let mut state = r.state;
        if matches!(state, ReplicaState::Running | ReplicaState::Starting) && !live {
            state = ReplicaState::Missing;
        }
        if !supervisor_alive && state == ReplicaState::Restarting {
            state = ReplicaState::Exited;
        }
        let (healthy, health_error) = if live && r.port > 0 {
            match crate::health::check(r.port, &health.path, health.timeout).await {
                Ok(_) => (true, None),
                Err(e) => (false, Some(e)),
            }
        } else {
            (false, r.health_error.clone())
        };
        replicas.push(Replica {
            index: r.index,
            state,
            healthy,
            health_error,
            endpoint: (r.port > 0).then(|| format!("http://127.0.0.1:{}", r.port)),
            handle: r.pid.map_or_else(|| "-".to_owned(), |p| format!("pid {p}")),
            restarts: r.restarts,
            last_exit: r.last_exit,
        });
    }
    Instance {
        id: found.file.id.clone(),
        provider: ProviderKind::Local,
        service: found.file.service.clone(),
        revision: found.file.revision.clone(),
        model_version: found.file.model.as_ref().map(|m| m.version.clone()),
        desired_replicas,
        replicas,
        problems,
        owner: found.file.owner.clone(),
    }
}

fn find(scope: &Scope, id: &str) -> Option<Found> {
    instances(scope).into_iter().find(|f| f.file.id == id)
}

fn instance_id(revision: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let short = &revision[..revision.len().min(8)];
    let tag = blake3::hash(format!("{nanos}-{}", std::process::id()).as_bytes()).to_hex();
    format!("{short}-{}", &tag[..6])
}

impl LocalProvider {
    async fn start_instance(
        &self,
        scope: &Scope,
        desired: &Desired,
    ) -> Result<Instance, ProviderError> {
        let spec = &desired.spec;
        let invalid = |detail: String| ProviderError::Invalid {
            service: spec.name.clone(),
            detail,
        };
        // Everything that can be checked before anything starts.
        let model_dir = crate::provider::model_dir(&scope.root, spec, desired.model.as_ref());
        if !model_dir.is_dir() {
            return Err(invalid(format!(
                "the model directory {} does not exist",
                model_dir.display()
            )));
        }
        let program = resolve_program(&scope.root, &spec.command[0]);
        if spec.command[0].contains('/') && !program.is_file() {
            return Err(invalid(format!(
                "the program {} does not exist (build it first)",
                program.display()
            )));
        }
        crate::provider::replica_env(desired, 1, "127.0.0.1", "", 0)?;
        crate::provider::check_state_dir(spec)?;
        if let Some(port) = spec.host_port
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
        {
            return Err(ProviderError::PortTaken {
                service: spec.name.clone(),
                port,
            });
        }
        let id = instance_id(&desired.revision);
        let dir = Self::env_dir(scope).join(&spec.name).join(&id);
        let backend = |what: &str, e: std::io::Error| ProviderError::Backend {
            provider: ProviderKind::Local,
            what: format!("{what} {}", dir.display()),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(|e| backend("cannot create", e))?;
        let file = InstanceFile {
            id: id.clone(),
            service: spec.name.clone(),
            revision: desired.revision.clone(),
            spec: spec.clone(),
            model: desired.model.clone(),
            model_dir,
            root: scope.root.clone(),
            replicas: spec.replicas,
            created_ms: mlops_core::ledger::now_ms(),
            owner: desired.owner.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| invalid(e.to_string()))?;
        write_atomic(&dir.join(INSTANCE_FILE), &json).map_err(|e| backend("cannot write to", e))?;
        write_atomic(
            &dir.join(REPLICAS_FILE),
            spec.replicas.to_string().as_bytes(),
        )
        .map_err(|e| backend("cannot write to", e))?;
        let log = std::fs::File::create(dir.join(SUPERVISOR_LOG))
            .map_err(|e| backend("cannot write to", e))?;
        let log2 = log.try_clone().map_err(|e| backend("cannot write to", e))?;
        let mut command = std::process::Command::new(&self.supervisor.program);
        command
            .args(&self.supervisor.args)
            .arg(&dir)
            .current_dir(&scope.root)
            .envs(desired.from_env.iter())
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        let mut child = command.spawn().map_err(|e| ProviderError::Backend {
            provider: ProviderKind::Local,
            what: format!(
                "cannot start the supervisor {}",
                self.supervisor.program.display()
            ),
            detail: e.to_string(),
        })?;
        let pid = child.id();
        let pid_json = serde_json::to_vec(&PidFile {
            pid,
            start: proc_start_time(pid),
        })
        .unwrap_or_default();
        write_atomic(&dir.join(PID_FILE), &pid_json).map_err(|e| backend("cannot write to", e))?;
        // Reap it if it ends while this process still runs.
        std::thread::spawn(move || child.wait());
        let found = Found { dir, file };
        match self
            .wait_healthy(&found, spec.replicas, spec.health.deadline)
            .await
        {
            Ok(instance) => Ok(instance),
            Err(e) => {
                let _ = self.stop_found(&found).await;
                Err(e)
            }
        }
    }

    async fn wait_healthy(
        &self,
        found: &Found,
        replicas: u32,
        deadline: Duration,
    ) -> Result<Instance, ProviderError> {
        let started = Instant::now();
        loop {
            let instance = inspect(found).await;
            let ready = instance
                .replicas
                .iter()
                .filter(|r| r.index < replicas && r.state == ReplicaState::Running && r.healthy)
                .count();
            let gone = !instance.problems.is_empty();
            if ready == replicas as usize && !gone {
                return Ok(instance);
            }
            if gone || started.elapsed() >= deadline {
                let last_error = instance
                    .replicas
                    .iter()
                    .find_map(|r| {
                        r.health_error.clone().map(|e| match &r.last_exit {
                            Some(x) => format!("replica {}: {e} (it {x})", r.index),
                            None => format!("replica {}: {e}", r.index),
                        })
                    })
                    .or_else(|| instance.problems.first().cloned());
                return Err(ProviderError::Unhealthy {
                    service: found.file.service.clone(),
                    waited_ms: started.elapsed().as_millis() as u64,
                    last_error,
                    log_tail: self.tail_found(found, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn tail_found(&self, found: &Found, lines: usize) -> String {
        let mut out = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&found.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        names.sort();
        for path in names {
            let text = tail(&path, lines);
            if text.trim().is_empty() {
                continue;
            }
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for line in text.lines() {
                out.push(format!("[{name}] {line}"));
            }
        }
        out.join("\n")
    }

    async fn stop_found(&self, found: &Found) -> Result<(), ProviderError> {
        let grace = found.file.spec.stop_grace;
        let pid_file: Option<PidFile> = read_json(&found.dir.join(PID_FILE));
        if let Some(p) = &pid_file
            && alive(p.pid, p.start)
        {
            let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGTERM);
            let deadline = Instant::now() + grace + Duration::from_secs(5);
            while alive(p.pid, p.start) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if alive(p.pid, p.start) {
                let _ = killpg(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
            }
        }
        // Replicas the supervisor could not stop (or orphaned by its death).
        let status: Option<Status> = read_json(&found.dir.join(STATUS_FILE));
        for r in status.map(|s| s.replicas).unwrap_or_default() {
            if let Some(pid) = r.pid
                && alive(pid, r.pid_start)
            {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
                let deadline = Instant::now() + grace;
                while alive(pid, r.pid_start) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if alive(pid, r.pid_start) {
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
        std::fs::remove_dir_all(&found.dir).map_err(|e| ProviderError::Backend {
            provider: ProviderKind::Local,
            what: format!("cannot remove {}", found.dir.display()),
            detail: e.to_string(),
        })?;
        if let Some(parent) = found.dir.parent() {
            // Only succeeds when empty.
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }
}

impl Provider for LocalProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn observe<'a>(&'a self, scope: &'a Scope) -> ProviderFuture<'a, Vec<Instance>> {
        Box::pin(async move {
            let found = instances(scope);
            Ok(futures_util::future::join_all(found.iter().map(inspect)).await)
        })
    }

    fn start<'a>(&'a self, scope: &'a Scope, desired: &'a Desired) -> ProviderFuture<'a, Instance> {
        Box::pin(self.start_instance(scope, desired))
    }

    fn scale<'a>(
        &'a self,
        scope: &'a Scope,
        instance: &'a Instance,
        replicas: u32,
    ) -> ProviderFuture<'a, Instance> {
        Box::pin(async move {
            let found = find(scope, &instance.id).ok_or_else(|| ProviderError::Backend {
                provider: ProviderKind::Local,
                what: format!("scale instance {}", instance.id),
                detail: "it no longer exists".into(),
            })?;
            let pid_file: Option<PidFile> = read_json(&found.dir.join(PID_FILE));
            let Some(p) = pid_file.filter(|p| alive(p.pid, p.start)) else {
                return Err(ProviderError::Backend {
                    provider: ProviderKind::Local,
                    what: format!("scale instance {}", instance.id),
                    detail: "its supervisor is gone".into(),
                });
            };
            write_atomic(
                &found.dir.join(REPLICAS_FILE),
                replicas.to_string().as_bytes(),
            )
            .map_err(|e| ProviderError::Backend {
                provider: ProviderKind::Local,
                what: format!("scale instance {}", instance.id),
                detail: e.to_string(),
            })?;
            let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGHUP);
            // Wait for the new count: extra replicas gone, new ones healthy.
            let deadline = found.file.spec.health.deadline + found.file.spec.stop_grace;
            let started = Instant::now();
            loop {
                let now = self
                    .wait_healthy(&found, replicas, deadline.saturating_sub(started.elapsed()))
                    .await?;
                if now.replicas.len() == replicas as usize {
                    return Ok(now);
                }
                if started.elapsed() >= deadline {
                    return Err(ProviderError::Unhealthy {
                        service: found.file.service.clone(),
                        waited_ms: started.elapsed().as_millis() as u64,
                        last_error: Some(format!(
                            "{} replicas still exist, {replicas} wanted",
                            now.replicas.len()
                        )),
                        log_tail: self.tail_found(&found, 20),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    fn stop<'a>(&'a self, scope: &'a Scope, instance: &'a Instance) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            match find(scope, &instance.id) {
                Some(found) => self.stop_found(&found).await,
                None => Ok(()),
            }
        })
    }

    fn logs<'a>(
        &'a self,
        scope: &'a Scope,
        instance: &'a Instance,
        lines: usize,
    ) -> ProviderFuture<'a, String> {
        Box::pin(async move {
            Ok(find(scope, &instance.id)
                .map(|f| self.tail_found(&f, lines))
                .unwrap_or_default())
        })
    }
}
