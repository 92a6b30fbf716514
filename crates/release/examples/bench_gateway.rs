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
use std::net::SocketAddr;
use std::time::Duration;

use mlops_release::gateway::{Config, Gateway};
use mlops_testkit::bench::{Nginx, Run, find_tool, free_port, median, probe, version, wrk};

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
        let warm = wrk(
            &wrk_bin,
            &url(addr),
            args.threads,
            args.connections,
            Duration::from_secs(2),
        )?;
        println!("warm-up {name:8} {:>9.0} req/s", warm.rps);
    }
    // runs[round][target], targets in `targets` order.
    let mut runs: Vec<[Run; 3]> = Vec::new();
    for round in 0..args.rounds {
        let mut row = [None; 3];
        for k in 0..targets.len() {
            let t = (round + k) % targets.len();
            let (name, addr) = targets[t];
            let run = wrk(
                &wrk_bin,
                &url(&addr),
                args.threads,
                args.connections,
                args.duration,
            )?;
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
