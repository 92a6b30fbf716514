//! Helpers of the benchmark programs (examples, never tests): find a tool,
//! run nginx serving a static file (and, if asked, proxying), run `wrk`
//! and read its numbers, probe a target, take medians.
//!
//! Every benchmark compares mlops with a named anchor side by side in one
//! run; these are the anchors' harness, shared so each benchmark measures
//! them the same way.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to install the anchors of the HTTP benchmarks.
pub const INSTALL: &str = "apt-get update && apt-get install -y nginx wrk";

/// The path of `tool`, looked up on PATH and in the sbin directories
/// (nginx lives in /usr/sbin, which a user's PATH may lack).
pub fn find_tool(tool: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{tool} not found; install it with `{INSTALL}`"))
}

/// A port free on loopback now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// nginx in the foreground; stopped (SIGTERM to the master, which stops
/// its workers) when dropped.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// An nginx in `dir` serving `/predict.json` (1 KiB of JSON) on port
    /// `upstream` when given, and proxying port `proxy` to port `to` when
    /// given.
    pub fn start(
        nginx: &Path,
        dir: &Path,
        upstream: Option<u16>,
        proxy: Option<(u16, u16)>,
    ) -> Result<Self, String> {
        let www = dir.join("www");
        std::fs::create_dir_all(&www).map_err(|e| format!("{}: {e}", www.display()))?;
        std::fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
        // A 1 KiB JSON document: about a prediction's size.
        let mut body = String::from("{\"predictions\": [");
        while body.len() < 1000 {
            body.push_str("0.123456789, ");
        }
        body.push_str("0.5]}\n");
        std::fs::write(www.join("predict.json"), &body).map_err(|e| e.to_string())?;
        // nginx's workers drop root for another user, who must read the file.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let d = dir.display();
        let upstream_block = upstream.map_or_else(String::new, |upstream| {
            format!(
                r#"
    # The upstream: a static file.
    server {{
        listen 127.0.0.1:{upstream};
        location / {{ root {d}/www; }}
    }}
"#
            )
        });
        let proxy_block = proxy.map_or_else(String::new, |(proxy, to)| {
            format!(
                r#"
    upstream origin {{
        server 127.0.0.1:{to};
        keepalive 64;
        keepalive_requests 1000000000;
    }}

    # The anchor: nginx as a reverse proxy in front of it.
    server {{
        listen 127.0.0.1:{proxy};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"#
            )
        });
        let conf = format!(
            r#"worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/json;
    keepalive_requests 1000000000;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
{upstream_block}{proxy_block}}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", nginx.display()))?;
        let mut nginx = Self {
            child,
            dir: dir.to_owned(),
        };
        for port in upstream.into_iter().chain(proxy.map(|(p, _)| p)) {
            nginx.wait_listening(port)?;
        }
        Ok(nginx)
    }

    fn wait_listening(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = self.child.try_wait().map_err(|e| e.to_string())?;
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                return Err(format!("nginx is not listening on {port}:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master stops its workers; killed, it
        // would leave them running.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one wrk run measured.
#[derive(Clone, Copy)]
pub struct Run {
    /// Requests per second.
    pub rps: f64,
    /// The median latency.
    pub p50_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// Non-2xx/3xx responses and socket errors.
    pub errors: u64,
}

/// `wrk -tTHREADS -cCONNECTIONS -dDURATION --latency URL` (whole seconds).
pub fn wrk(
    wrk: &Path,
    url: &str,
    threads: usize,
    connections: usize,
    duration: Duration,
) -> Result<Run, String> {
    let output = Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs()))
        .arg("--latency")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", wrk.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk {url} failed ({}):\n{text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("unexpected wrk output:\n{text}"))
}

/// Requests per second, p50, p99 and errors from `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Option<Run> {
    let mut run = Run {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
    };
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(n)) => run.rps = n.parse().ok()?,
            (Some("50%"), Some(t)) => run.p50_ms = millis(t)?,
            (Some("99%"), Some(t)) => run.p99_ms = millis(t)?,
            _ => {}
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.errors += n.trim().parse::<u64>().ok()?;
        }
        if let Some(counts) = line.strip_prefix("Socket errors:") {
            for part in counts.split(',') {
                run.errors += part.split_whitespace().last()?.parse::<u64>().ok()?;
            }
        }
    }
    (!run.rps.is_nan() && !run.p50_ms.is_nan() && !run.p99_ms.is_nan()).then_some(run)
}

/// wrk's time (`812.00us`, `1.23ms`, `1.50s`, `2.00m`) in milliseconds.
pub fn millis(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// The median (the mean of the middle two of an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// A GET on a fresh connection: the status line and the body's length,
/// to check every target serves the same file.
pub fn probe(addr: SocketAddr, path: &str) -> Result<(String, usize), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .map_err(|e| format!("{addr}: {e}"))?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no response head")?;
    Ok((
        head.lines().next().unwrap_or_default().to_owned(),
        body.len(),
    ))
}

/// The first line `tool FLAG` prints (its version).
pub fn version(tool: &Path, flag: &str) -> String {
    Command::new(tool)
        .arg(flag)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout) + String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}
