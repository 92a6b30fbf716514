//! Resource use of a replica running as a local process: CPU time and
//! resident memory from `/proc`, and which process listens on a
//! replica's loopback port (`/proc/net/tcp` and `/proc/*/fd`, as `ss -p`
//! finds it), so a replica known only by its endpoint is measured. A
//! replica that is a container (its port is published by Docker's proxy,
//! or no process of this PID namespace listens on it) is measured through
//! the engine's stats API instead
//! ([`mlops_iac::DockerProvider::container_usage`]).

use std::io;
use std::path::Path;

/// What a process uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// CPU time in user and kernel mode, in seconds, since it started.
    pub cpu_seconds: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
}

/// The CPU clock's ticks per second (`USER_HZ`).
fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map_or(100.0, |t| t as f64)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map_or(4096, |t| t as u64)
}

/// Process `pid`'s command name (`/proc/<pid>/comm`).
pub fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// What process `pid` uses, from `/proc/<pid>/stat` and `statm`.
pub fn process_usage(pid: u32) -> io::Result<ProcessUsage> {
    process_usage_in(Path::new("/proc"), pid)
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn process_usage_in(proc: &Path, pid: u32) -> io::Result<ProcessUsage> {
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces
    // or parentheses: the fields after it start after the last `)`.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| invalid(format!("/proc/{pid}/stat has no command name")))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15.
    let tick = |n: usize| -> io::Result<f64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|v| v as f64)
            .ok_or_else(|| invalid(format!("/proc/{pid}/stat: field {n} is not a number")))
    };
    let cpu_seconds = (tick(14)? + tick(15)?) / ticks_per_second();
    let statm = std::fs::read_to_string(proc.join(pid.to_string()).join("statm"))?;
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| invalid(format!("/proc/{pid}/statm: no resident size")))?;
    Ok(ProcessUsage {
        cpu_seconds,
        rss_bytes: resident * page_size(),
    })
}

/// The process listening on TCP `port` of a loopback or wildcard
/// address, if one of this user's processes does.
pub fn listening_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && targets.iter().any(|t| link.as_os_str() == t.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// The inodes of sockets listening on `port` in a `/proc/net/tcp{,6}`
/// table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = f.get(1)?;
            let state = f.get(3)?;
            let inode = f.get(9)?.parse::<u64>().ok()?;
            let port_hex = local.rsplit(':').next()?;
            let p = u16::from_str_radix(port_hex, 16).ok()?;
            (p == port && *state == LISTEN && inode != 0).then_some(inode)
        })
        .collect()
}

/// The port of an `http://HOST:PORT[/…]` endpoint.
pub fn endpoint_port(endpoint: &str) -> Option<u16> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    authority.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_measured() {
        let u = process_usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0);
        assert!(u.cpu_seconds >= 0.0);
        assert!(process_usage(u32::MAX).is_err());
    }

    #[test]
    fn a_command_name_with_parentheses_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("7");
        std::fs::create_dir(&p).unwrap();
        // utime 250, stime 50 ticks.
        std::fs::write(
            p.join("stat"),
            "7 (a (b) c) S 1 7 7 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 10",
        )
        .unwrap();
        std::fs::write(p.join("statm"), "1000 25 10 1 0 50 0").unwrap();
        let u = process_usage_in(dir.path(), 7).unwrap();
        assert!((u.cpu_seconds - 300.0 / ticks_per_second()).abs() < 1e-9);
        assert_eq!(u.rss_bytes, 25 * page_size());
        std::fs::write(p.join("stat"), "7 (x) S 1").unwrap();
        assert!(process_usage_in(dir.path(), 7).is_err());
    }

    #[test]
    fn the_listener_of_a_port_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(listening_pid(port), Some(std::process::id()));
        drop(l);
        assert_eq!(listening_pid(port), None);
    }

    #[test]
    fn endpoints_give_ports() {
        assert_eq!(endpoint_port("http://127.0.0.1:8080"), Some(8080));
        assert_eq!(endpoint_port("http://127.0.0.1:9/x"), Some(9));
        assert_eq!(endpoint_port("ftp://h:1"), None);
    }
}
