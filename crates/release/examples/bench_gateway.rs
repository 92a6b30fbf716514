//! Benchmark: the release gateway against nginx's `proxy_pass`, in front of
//! the same upstream (nginx serving a 1 KiB static file on loopback), with
//! the same number of keep-alive connections, driven by `wrk`.
//!
//! ```sh
//! apt-get update && apt-get install -y nginx wrk     # the anchor and the load
//! cargo run --release -p mlops-release --example bench_gateway -- \
//!     --rounds 5 --duration 10s --connections 32
//! ```
//!
//! Two nginx instances, run as foreground children from configs written to
//! temporary directories, each with its own workers (`worker_processes
//! auto`): the upstream, and the anchor proxy (`proxy_pass` to an
//! `upstream` block with keep-alive connections). Separate, so that the
//! anchor, like the gateway, hands every request to another process; with
//! `--shared-nginx` one instance has both server blocks (the layout of
//! earlier results), and a worker may then serve the upstream connection
//! it proxies to itself, without a wake-up of another process. The
//! gateway runs in this process, through the library
//! (`Gateway::bind`) from a multi-thread tokio runtime of its own, as
//! `mlops gateway` runs it (the gateway serves its connections on worker
//! threads of its own, one per core). Each round runs `wrk`
//! against the upstream directly (the baseline), through nginx and through
//! the gateway, in an order that rotates from round to round; every target
//! is warmed up first. The report gives medians over rounds of requests per
//! second and of the latency each proxy adds to the direct p50 and p99
//! (each round's proxied percentile minus that round's direct one), and
//! their ratios, gateway / nginx.
//!
//! Options: `--rounds N` (5), `--duration 10s`, `--connections N` (32),
//! `--threads N` (wrk's threads: 2), `--shared-nginx`. Everything it starts is stopped when
//! it exits; Ctrl-C reaches nginx and wrk through the terminal too.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mlops_release::gateway::{Config, Gateway};

const INSTALL: &str = "apt-get update && apt-get install -y nginx wrk";

struct Args {
    rounds: usize,
    duration: Duration,
    connections: usize,
    threads: usize,
    /// One nginx for the upstream and the anchor.
    shared_nginx: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rounds: 5,
        duration: Duration::from_secs(10),
        connections: 32,
        threads: 2,
        shared_nginx: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => args.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--duration" => args.duration = parse_duration(&value()?)?,
            "--connections" => {
                args.connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?;
            }
            "--threads" => {
                args.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?;
            }
            "--shared-nginx" => args.shared_nginx = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.rounds == 0 || args.connections < args.threads || args.threads == 0 {
        return Err("need --rounds >= 1 and --connections >= --threads >= 1".to_owned());
    }
    Ok(args)
}

/// `10s`, `1m` or a number of seconds, whole seconds (wrk's resolution).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.strip_suffix('m') {
        Some(n) => (n, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n * unit)),
        _ => Err(format!(
            "--duration: {text:?} is not a whole number of seconds (10s, 1m)"
        )),
    }
}

/// The path of `tool`, looked up on PATH and in the sbin directories
/// (nginx lives in /usr/sbin, which a user's PATH may lack).
fn find_tool(tool: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{tool} not found; install it with `{INSTALL}`"))
}

/// A port free on loopback now (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// nginx in the foreground; stopped (SIGTERM to the master, which stops
/// its workers) when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// An nginx in `dir` serving the file on `upstream` when given, and
    /// proxying to port `to` on `proxy` when given.
    fn start(
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
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Non-2xx/3xx responses and socket errors.
    errors: u64,
}

fn wrk(wrk: &Path, url: &str, args: &Args, duration: Duration) -> Result<Run, String> {
    let output = Command::new(wrk)
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
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
fn parse_wrk(text: &str) -> Option<Run> {
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
fn millis(text: &str) -> Option<f64> {
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

fn median(mut xs: Vec<f64>) -> f64 {
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
fn probe(addr: SocketAddr, path: &str) -> Result<(String, usize), String> {
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

fn version(tool: &Path, flag: &str) -> String {
    Command::new(tool)
        .arg(flag)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout) + String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}

fn main() {
    let result = parse_args().and_then(|args| bench(&args));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn bench(args: &Args) -> Result<(), String> {
    let nginx_bin = find_tool("nginx")?;
    let wrk_bin = find_tool("wrk")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let (upstream_port, nginx_port) = (free_port(), free_port());
    let nginx = if args.shared_nginx {
        vec![Nginx::start(
            &nginx_bin,
            dir.path(),
            Some(upstream_port),
            Some((nginx_port, upstream_port)),
        )?]
    } else {
        let (origin, anchor) = (dir.path().join("origin"), dir.path().join("anchor"));
        for d in [&origin, &anchor] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        vec![
            Nginx::start(&nginx_bin, &origin, Some(upstream_port), None)?,
            Nginx::start(&nginx_bin, &anchor, None, Some((nginx_port, upstream_port)))?,
        ]
    };

    // The gateway on a runtime of its own, as `mlops gateway` runs it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .map_err(|e| format!("a tokio runtime: {e}"))?;
    let gateway = Gateway::new(Config::single([format!(
        "http://127.0.0.1:{upstream_port}"
    )]))
    .map_err(|e| e.to_string())?;
    let handle = runtime
        .block_on(gateway.bind(SocketAddr::from(([127, 0, 0, 1], 0))))
        .map_err(|e| e.to_string())?;

    let path = "/predict.json";
    let targets = [
        ("direct", SocketAddr::from(([127, 0, 0, 1], upstream_port))),
        ("nginx", SocketAddr::from(([127, 0, 0, 1], nginx_port))),
        ("gateway", handle.local_addr()),
    ];
    let expected = probe(targets[0].1, path)?;
    for (name, addr) in &targets {
        let got = probe(*addr, path)?;
        if !got.0.contains(" 200 ") || got.1 != expected.1 {
            return Err(format!("{name} answers {got:?}, the upstream {expected:?}"));
        }
    }
    println!(
        "{}; {}; {cores} cores shared by wrk ({} threads), nginx ({}) and the \
         gateway ({cores} worker threads); {} connections, {} rounds of {}s per target",
        version(&nginx_bin, "-v"),
        version(&wrk_bin, "-v"),
        args.threads,
        if args.shared_nginx {
            format!("one instance, {cores} workers, upstream and anchor")
        } else {
            format!("{cores} workers for the upstream, {cores} for the anchor")
        },
        args.connections,
        args.rounds,
        args.duration.as_secs()
    );

    let url = |addr: &SocketAddr| format!("http://{addr}{path}");
    for (name, addr) in &targets {
        let warm = wrk(&wrk_bin, &url(addr), args, Duration::from_secs(2))?;
        println!("warm-up {name:8} {:>9.0} req/s", warm.rps);
    }
    // runs[round][target], targets in `targets` order.
    let mut runs: Vec<[Run; 3]> = Vec::new();
    for round in 0..args.rounds {
        let mut row = [None; 3];
        for k in 0..targets.len() {
            let t = (round + k) % targets.len();
            let (name, addr) = targets[t];
            let run = wrk(&wrk_bin, &url(&addr), args, args.duration)?;
            println!(
                "round {} {name:8} {:>9.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  errors {}",
                round + 1,
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.errors
            );
            row[t] = Some(run);
        }
        runs.push(row.map(|r| r.expect("every target ran")));
    }
    runtime.block_on(handle.shutdown());
    drop(runtime);
    drop(nginx);

    println!("\n{}", report(&runs));
    Ok(())
}

/// The table of medians and the ratios, as Markdown.
fn report(runs: &[[Run; 3]]) -> String {
    let of = |t: usize, f: fn(&Run) -> f64| median(runs.iter().map(|r| f(&r[t])).collect());
    let added =
        |t: usize, f: fn(&Run) -> f64| median(runs.iter().map(|r| f(&r[t]) - f(&r[0])).collect());
    let errors = |t: usize| runs.iter().map(|r| r[t].errors).sum::<u64>();
    let mut out = String::from(
        "| target | req/s | p50 (ms) | p99 (ms) | added p50 (ms) | added p99 (ms) | errors |\n\
         |---|--:|--:|--:|--:|--:|--:|\n",
    );
    let names = [
        "upstream direct (baseline)",
        "nginx `proxy_pass`",
        "mlops gateway",
    ];
    for (t, name) in names.iter().enumerate() {
        let (a50, a99) = if t == 0 {
            ("—".to_owned(), "—".to_owned())
        } else {
            (
                format!("{:.3}", added(t, |r| r.p50_ms)),
                format!("{:.3}", added(t, |r| r.p99_ms)),
            )
        };
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.3} | {:.3} | {a50} | {a99} | {} |",
            of(t, |r| r.rps),
            of(t, |r| r.p50_ms),
            of(t, |r| r.p99_ms),
            errors(t)
        );
    }
    // A ratio of added latencies means nothing when nginx adds none (at
    // saturation a proxy can lower the tail: it paces the upstream).
    let ratio = |gateway: f64, nginx: f64| {
        if nginx > 0.0 {
            format!("{:.2}x", gateway / nginx)
        } else {
            format!("n/a (gateway {gateway:+.3} ms, nginx {nginx:+.3} ms)")
        }
    };
    let _ = writeln!(
        out,
        "\ngateway / nginx: throughput {:.2}x, added p50 {}, added p99 {}",
        of(2, |r| r.rps) / of(1, |r| r.rps),
        ratio(added(2, |r| r.p50_ms), added(1, |r| r.p50_ms)),
        ratio(added(2, |r| r.p99_ms), added(1, |r| r.p99_ms)),
    );
    out
}
