//! Benchmark: mlops' load generator against `wrk` (the anchor), `oha` and
//! Locust, each driving the same nginx static target on loopback with the
//! same number of keep-alive connections (users), in alternating order
//! within one invocation.
//!
//! ```sh
//! apt-get update && apt-get install -y nginx wrk          # target, anchor
//! cargo install oha --locked                             # crates.io
//! python3 -m venv /tmp/locust-venv && /tmp/locust-venv/bin/pip install locust
//! cargo run --release -p mlops-loadtest --example bench_loadgen -- \
//!     --rounds 5 --duration 10s --connections 32
//! ```
//!
//! Every generator runs a closed workload as fast as the target answers:
//! wrk with `--threads` threads (2), oha with its defaults, Locust headless
//! with `FastHttpUser` (its fastest client) and no wait time, one process
//! per core (`--processes`), and mlops through the library
//! ([`mlops_loadtest::generator::run`]) on a tokio runtime with one worker
//! per core, as `mlops loadtest run URL -c N -d D` runs it. nginx serves a
//! 1 KiB JSON file with one worker per core. Each round runs every
//! generator once, the order rotating from round to round, after a warm-up
//! of each. The report gives medians over rounds of requests per second,
//! p50 and p99, and the median over rounds of mlops' rate divided by each
//! generator's (goals in issue 16: ≥ 1.0× wrk, ≥ 1.5× oha, ≥ 10× Locust).
//!
//! Options: `--rounds N` (5), `--duration 10s`, `--connections N` (32),
//! `--threads N` (wrk's: 2), `--oha PATH`, `--locust PATH` (found on PATH,
//! in ~/.cargo/bin or in /tmp/locust-venv/bin when not given), `--without
//! oha|locust` to leave one out, `--locust-user fast|http` (Locust's
//! `FastHttpUser`, the default, or its classic `HttpUser` on
//! python-requests).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use mlops_loadtest::generator;
use mlops_release::driver::{DriverSettings, Samples, Workload};
use mlops_testkit::bench::{Nginx, Run, find_tool, free_port, median, probe, version, wrk};
use tokio_util::sync::CancellationToken;

struct Args {
    rounds: usize,
    duration: Duration,
    connections: usize,
    threads: usize,
    oha: Option<PathBuf>,
    locust: Option<PathBuf>,
    without: Vec<String>,
    /// Locust's user class: `FastHttpUser` or `HttpUser`.
    locust_user: &'static str,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rounds: 5,
        duration: Duration::from_secs(10),
        connections: 32,
        threads: 2,
        oha: None,
        locust: None,
        without: Vec::new(),
        locust_user: "FastHttpUser",
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => args.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--duration" => {
                let text = value()?;
                args.duration = humantime::parse_duration(&text)
                    .ok()
                    .filter(|d| d.as_secs() >= 1 && d.subsec_nanos() == 0)
                    .ok_or_else(|| format!("--duration {text}: whole seconds, like 10s"))?;
            }
            "--connections" => {
                args.connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?;
            }
            "--threads" => {
                args.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?
            }
            "--oha" => args.oha = Some(value()?.into()),
            "--locust" => args.locust = Some(value()?.into()),
            "--locust-user" => {
                args.locust_user = match value()?.as_str() {
                    "fast" => "FastHttpUser",
                    "http" => "HttpUser",
                    other => return Err(format!("--locust-user {other}: fast or http")),
                };
            }
            "--without" => {
                let tool = value()?;
                if tool != "oha" && tool != "locust" {
                    return Err(format!("--without {tool}: oha or locust"));
                }
                args.without.push(tool);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.rounds == 0 || args.connections < args.threads || args.threads == 0 {
        return Err("need --rounds >= 1 and --connections >= --threads >= 1".to_owned());
    }
    Ok(args)
}

/// `tool` as given, or on PATH, or in one of `places`.
fn locate(
    given: Option<&Path>,
    tool: &str,
    places: &[PathBuf],
    install: &str,
) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return path
            .is_file()
            .then(|| path.to_owned())
            .ok_or_else(|| format!("{} is not a file", path.display()));
    }
    find_tool(tool)
        .ok()
        .or_else(|| places.iter().map(|d| d.join(tool)).find(|p| p.is_file()))
        .ok_or_else(|| {
            format!("{tool} not found; install it with `{install}` (or pass --without {tool})")
        })
}

/// mlops' generator: a closed workload, one user per connection.
fn mlops(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    connections: usize,
    duration: Duration,
) -> Result<Run, String> {
    let workload = Workload::Closed {
        users: connections,
        think: Duration::ZERO,
        duration,
    };
    let mut settings = DriverSettings::with_workload(url, workload, u64::MAX);
    settings.method = "GET".into();
    settings.keep_second_histograms = true;
    let samples = Samples::from_bodies([Bytes::new()]).map_err(|e| e.to_string())?;
    let driver = settings.compile(samples).map_err(|e| e.to_string())?;
    let result = runtime
        .block_on(generator::run(&driver, &CancellationToken::new(), None))
        .map_err(|e| e.to_string())?;
    let r = &result.report;
    let latency = r.latency_ms.ok_or("mlops: no response")?;
    Ok(Run {
        rps: r.rps,
        p50_ms: latency.p50,
        p99_ms: latency.p99,
        errors: r.errors,
    })
}

fn oha(oha: &Path, url: &str, connections: usize, duration: Duration) -> Result<Run, String> {
    let help = Command::new(oha)
        .arg("--help")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", oha.display()))?;
    let json_flag: &[&str] = if String::from_utf8_lossy(&help.stdout).contains("--output-format") {
        &["--output-format", "json"]
    } else {
        &["--json"]
    };
    let output = Command::new(oha)
        .args(["-z", &format!("{}s", duration.as_secs())])
        .args(["-c", &connections.to_string(), "--no-tui"])
        .args(json_flag)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", oha.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "oha's output is not json ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let millis = |v: &serde_json::Value| v.as_f64().map(|s| s * 1000.0);
    let sum = |v: &serde_json::Value| -> u64 {
        v.as_object()
            .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
            .unwrap_or(0)
    };
    let answered = sum(&value["statusCodeDistribution"]);
    let ok = value["statusCodeDistribution"]["200"].as_u64().unwrap_or(0);
    Ok(Run {
        rps: value["summary"]["requestsPerSec"]
            .as_f64()
            .ok_or("oha: no summary.requestsPerSec")?,
        p50_ms: millis(&value["latencyPercentiles"]["p50"]).ok_or("oha: no p50")?,
        p99_ms: millis(&value["latencyPercentiles"]["p99"]).ok_or("oha: no p99")?,
        errors: sum(&value["errorDistribution"]) + (answered - ok),
    })
}

fn locust(
    locust: &Path,
    user: &str,
    dir: &Path,
    host: &str,
    connections: usize,
    duration: Duration,
    cores: usize,
) -> Result<Run, String> {
    let file = dir.join("locustfile.py");
    std::fs::write(
        &file,
        format!(
            "from locust import {user}, constant, task\n\n\n\
             class Client({user}):\n    wait_time = constant(0)\n\n    \
             @task\n    def get(self):\n        self.client.get(\"/predict.json\")\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    // Locust adds `.json` to the name it is given.
    let out = dir.join("locust.json");
    let _ = std::fs::remove_file(&out);
    let users = connections.to_string();
    let status = Command::new(locust)
        .arg("-f")
        .arg(&file)
        .args(["--headless", "--skip-log", "-u", &users, "-r", &users])
        .args(["-t", &format!("{}s", duration.as_secs()), "-H", host])
        .args(["--processes", &cores.to_string(), "--json-file"])
        .arg(dir.join("locust"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", locust.display()))?;
    let text = std::fs::read_to_string(&out)
        .map_err(|e| format!("locust ({status}) wrote no {}: {e}", out.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("locust's json: {e}"))?;
    let stats = &value[0];
    let requests = stats["num_requests"]
        .as_u64()
        .ok_or("locust: no num_requests")?;
    let span = stats["last_request_timestamp"].as_f64().unwrap_or(0.0)
        - stats["start_time"].as_f64().unwrap_or(0.0);
    // response_times: milliseconds (rounded as Locust rounds them) → count.
    let mut times: Vec<(f64, u64)> = stats["response_times"]
        .as_object()
        .ok_or("locust: no response_times")?
        .iter()
        .filter_map(|(ms, n)| Some((ms.parse().ok()?, n.as_u64()?)))
        .collect();
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: u64 = times.iter().map(|t| t.1).sum();
    let quantile = |q: f64| {
        let rank = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        times
            .iter()
            .find(|t| {
                seen += t.1;
                seen >= rank
            })
            .map_or(f64::NAN, |t| t.0)
    };
    Ok(Run {
        rps: if span > 0.0 {
            requests as f64 / span
        } else {
            0.0
        },
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        errors: stats["num_failures"].as_u64().unwrap_or(0),
    })
}

fn main() {
    let result = parse_args().and_then(|args| bench(&args));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

/// One generator: its name and how to run it for a duration.
type Generator<'a> = (&'a str, Box<dyn Fn(Duration) -> Result<Run, String> + 'a>);

fn bench(args: &Args) -> Result<(), String> {
    let nginx_bin = find_tool("nginx")?;
    let wrk_bin = find_tool("wrk")?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let without = |tool: &str| args.without.iter().any(|t| t == tool);
    let oha_bin = if without("oha") {
        None
    } else {
        Some(locate(
            args.oha.as_deref(),
            "oha",
            &[home.join(".cargo/bin")],
            "cargo install oha --locked",
        )?)
    };
    let locust_bin = if without("locust") {
        None
    } else {
        Some(locate(
            args.locust.as_deref(),
            "locust",
            &[PathBuf::from("/tmp/locust-venv/bin")],
            "python3 -m venv /tmp/locust-venv && /tmp/locust-venv/bin/pip install locust",
        )?)
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let port = free_port();
    let nginx = Nginx::start(&nginx_bin, dir.path(), Some(port), None)?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, length) = probe(addr, "/predict.json")?;
    if !status.contains(" 200 ") {
        return Err(format!("nginx answers {status}"));
    }
    let host = format!("http://{addr}");
    let url = format!("{host}/predict.json");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .map_err(|e| format!("a tokio runtime: {e}"))?;

    let c = args.connections;
    let mut generators: Vec<Generator<'_>> = vec![
        ("wrk", Box::new(|d| wrk(&wrk_bin, &url, args.threads, c, d))),
        ("mlops", Box::new(|d| mlops(&runtime, &url, c, d))),
    ];
    if let Some(bin) = &oha_bin {
        generators.push(("oha", Box::new(|d| oha(bin, &url, c, d))));
    }
    if let Some(bin) = &locust_bin {
        let (dir, host) = (dir.path(), host.as_str());
        generators.push((
            "locust",
            Box::new(move |d| locust(bin, args.locust_user, dir, host, c, d, cores)),
        ));
    }
    let versions: Vec<String> = [
        Some(version(&nginx_bin, "-v")),
        Some(version(&wrk_bin, "-v")),
        oha_bin.as_deref().map(|b| version(b, "--version")),
        locust_bin.as_deref().map(|b| version(b, "--version")),
    ]
    .into_iter()
    .flatten()
    .collect();
    println!(
        "{}; {cores} cores shared by nginx ({cores} workers, a {length} B file) and the \
         generator; {c} connections, {} rounds of {}s per generator; Locust with {}",
        versions.join("; "),
        args.rounds,
        args.duration.as_secs(),
        args.locust_user
    );
    for (name, run) in &generators {
        let warm = run(Duration::from_secs(2))?;
        println!("warm-up {name:7} {:>9.0} req/s", warm.rps);
    }
    let mut runs: Vec<Vec<Run>> = Vec::new();
    for round in 0..args.rounds {
        let mut row = vec![None; generators.len()];
        for k in 0..generators.len() {
            let g = (round + k) % generators.len();
            let (name, run) = &generators[g];
            let r = run(args.duration)?;
            println!(
                "round {} {name:7} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
                round + 1,
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.errors
            );
            row[g] = Some(r);
        }
        runs.push(
            row.into_iter()
                .map(|r| r.expect("every generator ran"))
                .collect(),
        );
    }
    drop(nginx);
    let names: Vec<&str> = generators.iter().map(|g| g.0).collect();
    println!("\n{}", report(&names, &runs));
    Ok(())
}

/// Medians per generator, and mlops' ratios to each, as Markdown.
fn report(names: &[&str], runs: &[Vec<Run>]) -> String {
    let of = |g: usize, f: fn(&Run) -> f64| median(runs.iter().map(|r| f(&r[g])).collect());
    let mut out = String::from(
        "| generator | req/s | p50 (ms) | p99 (ms) | errors | mlops ÷ this, req/s (median of rounds) |\n\
         |---|--:|--:|--:|--:|--:|\n",
    );
    let mlops = names
        .iter()
        .position(|n| *n == "mlops")
        .expect("mlops runs");
    for (g, name) in names.iter().enumerate() {
        let ratio = if g == mlops {
            "—".to_owned()
        } else {
            let ratios = runs.iter().map(|r| r[mlops].rps / r[g].rps).collect();
            format!("{:.2}×", median(ratios))
        };
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.3} | {:.3} | {} | {ratio} |",
            of(g, |r| r.rps),
            of(g, |r| r.p50_ms),
            of(g, |r| r.p99_ms),
            runs.iter().map(|r| r[g].errors).sum::<u64>(),
        );
    }
    out
}
