//! Background server management: `iris serve --background` and `iris stop`.
//!
//! Signals are sent with the `kill` utility through [`std::process::Command`],
//! which keeps the crate free of `unsafe` code and of libc bindings.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{FlagSpec, Flags};
use crate::client::{self, HttpClient};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::Model;
use crate::server::ServeOptions;

/// How long `serve --background` waits for the server to become healthy.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// Default `--grace` of `iris stop`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const LOG_TAIL_LINES: usize = 20;

/// Starts the server described by `options` as a detached process, waits
/// until `GET /health` answers 200, prints its URL and returns.
pub async fn start(options: &ServeOptions) -> Result<()> {
    let Some(pid_file) = options.pid_file.clone() else {
        return Err(Error::usage("iris serve: --background needs --pid-file"));
    };
    let port_file = options
        .port_file
        .clone()
        .unwrap_or_else(|| fsutil::sibling_with_extension(&pid_file, "port"));
    let log_file = options
        .log_file
        .clone()
        .unwrap_or_else(|| fsutil::sibling_with_extension(&pid_file, "log"));

    // Fail early, in the caller's terminal, rather than in the detached log.
    Model::load(&options.model)?;
    if let Some(pid) = read_pid_file(&pid_file)? {
        if is_alive(pid) && is_iris_server(pid) != Some(false) {
            return Err(Error::new(format!(
                "a server is already running with pid {pid} (pid file {}); stop it with 'iris stop --pid-file {}'",
                pid_file.display(),
                pid_file.display()
            )));
        }
        fsutil::remove_if_exists(&pid_file)?;
    }
    // A stale port file would make us probe the wrong port.
    fsutil::remove_if_exists(&port_file)?;

    fsutil::create_parent_dir(&log_file)?;
    let log_error = |err: std::io::Error| {
        Error::new(format!(
            "cannot open log file {}: {}",
            log_file.display(),
            fsutil::io_reason(&err)
        ))
    };
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .map_err(log_error)?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let log_err = log.try_clone().map_err(log_error)?;
    let exe = std::env::current_exe().map_err(|err| {
        Error::new(format!(
            "cannot find the iris executable: {}",
            fsutil::io_reason(&err)
        ))
    })?;

    let mut child = Command::new(&exe)
        .args(options.foreground_args(&port_file))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // A process group of its own: Ctrl-C in the caller's terminal and
        // the caller's exit leave the server alone.
        .process_group(0)
        .spawn()
        .map_err(|err| {
            Error::new(format!(
                "cannot start {}: {}",
                exe.display(),
                fsutil::io_reason(&err)
            ))
        })?;
    let pid = child.id();
    fsutil::write_atomic(&pid_file, format!("{pid}\n").as_bytes(), "pid file")?;

    let deadline = Instant::now() + STARTUP_DEADLINE;
    let mut health: Option<(u16, HttpClient)> = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let _ = fsutil::remove_if_exists(&pid_file);
            return Err(Error::new(format!(
                "server exited during startup ({status}); last lines of {}:\n{}",
                log_file.display(),
                log_tail(&log_file, log_start)
            )));
        }
        if health.is_none()
            && let Ok(port) = client::read_port_file(&port_file)
        {
            health = Some((port, HttpClient::with_timeout(port, Duration::from_secs(1))));
        }
        if let Some((port, client)) = &health
            && client.get("/health").await.is_ok_and(|r| r.status == 200)
        {
            println!(
                "serve: server pid {pid} is healthy at http://127.0.0.1:{port} (pid file {}, log {})",
                pid_file.display(),
                log_file.display()
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fsutil::remove_if_exists(&pid_file);
            let _ = fsutil::remove_if_exists(&port_file);
            return Err(Error::new(format!(
                "server did not become healthy within {}s and was killed; last lines of {}:\n{}",
                STARTUP_DEADLINE.as_secs(),
                log_file.display(),
                log_tail(&log_file, log_start)
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The last lines written to the log since offset `from`, indented.
fn log_tail(path: &Path, from: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    if tail.is_empty() {
        "  (log is empty)".to_owned()
    } else {
        tail.iter()
            .map(|line| format!("  {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Reads a pid file: `Ok(None)` if it does not exist, an error if it is not a pid.
pub fn read_pid_file(path: &Path) -> Result<Option<u32>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(Error::new(format!(
                "cannot read pid file {}: {}",
                path.display(),
                fsutil::io_reason(&err)
            )));
        }
    };
    match text.trim().parse::<u32>() {
        Ok(pid) if pid > 1 => Ok(Some(pid)),
        _ => Err(Error::new(format!(
            "pid file {} does not contain a process id: '{}'",
            path.display(),
            text.trim().chars().take(20).collect::<String>()
        ))),
    }
}

/// Sends `signal` (a name such as `TERM`) with the `kill` utility.
/// Returns whether `kill` reported success.
fn send_signal(pid: u32, signal: &str) -> Result<bool> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|err| Error::new(format!("cannot run 'kill': {}", fsutil::io_reason(&err))))?;
    Ok(status.success())
}

/// Whether `pid` is a live process (`kill -0` succeeds and it is not a zombie).
pub fn is_alive(pid: u32) -> bool {
    let exists = Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    exists && !is_zombie(pid)
}

/// A process that has exited but was not reaped yet still answers `kill -0`.
/// Linux exposes its state in /proc; elsewhere assume it is not a zombie.
fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: `pid (comm) state ...`; comm may contain spaces and parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

/// Whether `pid` looks like an `iris serve` process, guarding against a
/// recycled pid. `None` when this cannot be checked (no /proc).
fn is_iris_server(pid: u32) -> Option<bool> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(cmdline.split(|b| *b == 0).any(|arg| arg == b"serve"))
}

/// Options of `iris stop`.
#[derive(Debug, Clone)]
pub struct StopOptions {
    /// Pid file written by `serve --background`.
    pub pid_file: PathBuf,
    /// Port file to remove (default: the pid file with a `.port` extension).
    pub port_file: PathBuf,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
}

impl StopOptions {
    const FLAGS: &[FlagSpec] = &[
        FlagSpec::value("pid-file"),
        FlagSpec::value("port-file"),
        FlagSpec::value("grace"),
    ];

    /// Parses the flags of `iris stop`.
    pub fn from_args(args: &[String]) -> Result<Self> {
        let flags = Flags::parse("stop", Self::FLAGS, args)?;
        let pid_file = flags.required_path("pid-file")?;
        Ok(Self {
            port_file: flags
                .path("port-file")
                .unwrap_or_else(|| fsutil::sibling_with_extension(&pid_file, "port")),
            pid_file,
            grace: flags.duration_or("grace", DEFAULT_GRACE)?,
        })
    }
}

/// Runs `iris stop`: SIGTERM, wait up to the grace period, then SIGKILL.
pub fn run_stop(args: &[String]) -> Result<()> {
    let options = StopOptions::from_args(args)?;
    let cleanup = || -> Result<()> {
        fsutil::remove_if_exists(&options.pid_file)?;
        fsutil::remove_if_exists(&options.port_file)?;
        Ok(())
    };
    let Some(pid) = read_pid_file(&options.pid_file)? else {
        fsutil::remove_if_exists(&options.port_file)?;
        println!(
            "stop: server was not running (no pid file {})",
            options.pid_file.display()
        );
        return Ok(());
    };
    if !is_alive(pid) {
        cleanup()?;
        println!(
            "stop: server was not running (pid {pid} from {} is gone); removed stale files",
            options.pid_file.display()
        );
        return Ok(());
    }
    if is_iris_server(pid) == Some(false) {
        cleanup()?;
        println!(
            "stop: server was not running (pid {pid} now belongs to another program; not signalling it); removed stale files"
        );
        return Ok(());
    }

    let started = Instant::now();
    send_signal(pid, "TERM")?;
    if wait_until_gone(pid, options.grace) {
        cleanup()?;
        println!(
            "stop: server pid {pid} stopped after {:.2}s",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    eprintln!(
        "stop: server pid {pid} did not stop within {:?} of SIGTERM; sending SIGKILL",
        options.grace
    );
    send_signal(pid, "KILL")?;
    if wait_until_gone(pid, Duration::from_secs(5)) {
        cleanup()?;
        println!("stop: server pid {pid} killed");
        return Ok(());
    }
    Err(Error::new(format!(
        "server pid {pid} is still running after SIGKILL"
    )))
}

fn wait_until_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_bogus_pid_is_not() {
        assert!(is_alive(std::process::id()));
        // Linux pids never exceed 2^22.
        assert!(!is_alive(999_999_999));
    }

    #[test]
    fn missing_pid_file_is_none() {
        assert_eq!(read_pid_file(Path::new("no/such/iris.pid")).unwrap(), None);
    }
}
