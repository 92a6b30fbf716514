//! A benchmark, not a test: what monitoring costs the gateway. The same
//! upstream behind two gateways in this process, driven by `wrk` in
//! alternating rounds: one with monitoring off (no prediction log, nothing
//! scraping it), one with it on (the prediction log sampling, and a
//! collector scraping its `/metrics` and `/config` every second, storing
//! and evaluating two SLOs, as the release environment runs it).
//!
//! ```sh
//! apt-get install -y wrk
//! cargo run --release -p mlops-apm --example bench_monitoring -- --rounds 5 --duration 10s --connections 32
//! ```
//!
//! The upstream is a small hyper server on a thread of its own answering
//! 64 bytes; each gateway runs as `mlops gateway` does (its worker per
//! core). Prints the medians and the ratio on/off; the goal is at least
//! 0.95.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mlops_apm::collector::{Collector, CollectorConfig};
use mlops_apm::settings::{Objective, Slo};
use mlops_apm::tsdb::{Retention, Store};
use mlops_release::gateway::{AdminToken, Config, Gateway, PredictionLogConfig};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn wrk(url: &str, connections: u32, seconds: u64) -> (f64, f64) {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("wrk is missing: apt-get install -y wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rps = f64::NAN;
    let mut p99 = f64::NAN;
    for line in text.lines().map(str::trim) {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("Requests/sec:"), Some(n)) => rps = n.parse().unwrap_or(f64::NAN),
            (Some("99%"), Some(t)) => {
                let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
                let (n, unit) = t.split_at(split);
                let n: f64 = n.parse().unwrap_or(f64::NAN);
                p99 = match unit {
                    "us" => n / 1000.0,
                    "ms" => n,
                    "s" => n * 1000.0,
                    _ => f64::NAN,
                };
            }
            _ => {}
        }
        assert!(
            !line.starts_with("Non-2xx") && !line.starts_with("Socket errors"),
            "errors in a round: {text}"
        );
    }
    (rps, p99)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = arg("--rounds", "5").parse().expect("--rounds N");
    let seconds: u64 = arg("--duration", "10s")
        .trim_end_matches('s')
        .parse()
        .expect("--duration Ns");
    let connections: u32 = arg("--connections", "32").parse().expect("--connections N");
    let dir = tempfile::tempdir().unwrap();

    // The upstream: its own thread and runtime.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    upstream.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(upstream).unwrap();
            loop {
                let (s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"{\"outputs\":[{\"name\":\"label\",\"data\":[\"setosa\"]}]}     \n",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let upstream_url = format!("http://{up_addr}");
    let (off, on, on_admin, _keep) = rt.block_on(async {
        let off = Gateway::new(Config::single([upstream_url.clone()])).unwrap();
        let mut config = Config::single([upstream_url.clone()]);
        config.prediction_log = Some(PredictionLogConfig::at(
            dir.path().join("predictions.jsonl"),
        ));
        let on = Gateway::new(config).unwrap();
        let off_h = off.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        let on_h = on.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        let admin = on
            .serve_admin(
                "127.0.0.1:0".parse().unwrap(),
                AdminToken::generate().unwrap(),
            )
            .await
            .unwrap();
        let (o, n, a) = (off_h.local_addr(), on_h.local_addr(), admin.local_addr());
        (o, n, a, (off, on, off_h, on_h, admin))
    });

    let collector_config = CollectorConfig {
        environment: "bench".into(),
        service: Some("bench".into()),
        interval_ms: 1000,
        gateway: Some(format!("http://{on_admin}")),
        replica_metrics: None,
        targets: Vec::new(),
        slos: vec![
            Slo {
                name: "availability".into(),
                objective: Objective::Availability,
                target: 0.999,
                variant: None,
            },
            Slo {
                name: "latency".into(),
                objective: Objective::Latency {
                    threshold: Duration::from_millis(25),
                },
                target: 0.99,
                variant: None,
            },
        ],
        period_ms: 30 * 86_400_000,
        min_requests: 20,
        hold_ms: 60_000,
        webhook: None,
        max_body_bytes: 10 << 20,
    };
    let db: PathBuf = dir.path().join("db");
    eprintln!(
        "wrk -t2 -c{connections} -d{seconds}s, {rounds} rounds alternating off/on; upstream {up_addr}"
    );
    let _ = wrk(&format!("http://{off}/"), connections, 2);
    let _ = wrk(&format!("http://{on}/"), connections, 2);
    let (mut off_rps, mut on_rps, mut off_p99, mut on_p99) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let (r, p) = wrk(&format!("http://{off}/"), connections, seconds);
        off_rps.push(r);
        off_p99.push(p);
        // The collector runs only during the monitored round.
        let stop = Arc::new(AtomicBool::new(false));
        let collector = {
            let (stop, config, db) = (stop.clone(), collector_config.clone(), db.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let store = Store::open(&db, Retention::default()).unwrap();
                    let mut c = Collector::new(store, config, |_, _| {}).unwrap();
                    let mut ticks = 0;
                    while !stop.load(Ordering::Relaxed) {
                        c.tick().await.unwrap();
                        ticks += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    ticks
                })
            })
        };
        let (r, p) = wrk(&format!("http://{on}/"), connections, seconds);
        stop.store(true, Ordering::Relaxed);
        let ticks = collector.join().unwrap();
        on_rps.push(r);
        on_p99.push(p);
        eprintln!(
            "round {round}: off {:.0} req/s (p99 {:.2} ms), on {:.0} req/s (p99 {:.2} ms), {ticks} collector ticks",
            off_rps[round - 1],
            off_p99[round - 1],
            r,
            p
        );
    }
    let sampled = std::fs::read_to_string(dir.path().join("predictions.jsonl"))
        .map_or(0, |t| t.lines().count());
    let (a, b) = (median(off_rps), median(on_rps));
    println!("| gateway | req/s (median) | p99 ms (median) |");
    println!("|---|--:|--:|");
    println!("| monitoring off | {a:.0} | {:.2} |", median(off_p99));
    println!("| monitoring on | {b:.0} | {:.2} |", median(on_p99));
    println!();
    println!(
        "on / off: throughput {:.3}x; {sampled} requests sampled into the prediction log",
        b / a
    );
}
