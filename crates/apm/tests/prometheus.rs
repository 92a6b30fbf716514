//! The exported rules and scrape configuration against the real
//! Prometheus: `promtool check rules` and `check config` accept them, and a
//! Prometheus server (Debian's `prometheus` package) started on loopback
//! with them scrapes a gateway and computes the recording rules.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mlops_apm::export::{self, ScrapeTarget};
use mlops_apm::settings::{ApmSettings, Objective, Slo};
use mlops_release::gateway::metrics::LATENCY_BUCKETS_SECONDS;
use mlops_release::gateway::{AdminToken, Config, Gateway};
use tokio::net::TcpListener;

fn need(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{tool}` is missing: install Debian's prometheus package (`apt-get update && apt-get install -y prometheus`, or `scripts/test-deps`)"
    );
}

fn settings() -> ApmSettings {
    let mut s = ApmSettings {
        period: Duration::from_secs(3600),
        scrape_interval: Duration::from_secs(1),
        min_requests: 5,
        hold: Duration::from_secs(1),
        ..ApmSettings::default()
    };
    for slo in [
        Slo {
            name: "availability".into(),
            objective: Objective::Availability,
            target: 0.99,
            variant: None,
        },
        Slo {
            name: "fast \"stable\"".into(),
            objective: Objective::Latency {
                threshold: Duration::from_millis(250),
            },
            target: 0.95,
            variant: Some("stable".into()),
        },
    ] {
        s.slos.insert(slo.name.clone(), slo);
    }
    s
}

fn write(dir: &Path, files: &[(String, String)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_accepts_the_rules_and_the_config_and_refuses_a_broken_one() {
    need("promtool");
    let dir = tempfile::tempdir().unwrap();
    let e = export::prometheus(
        &settings(),
        &[ScrapeTarget {
            job: "mlops-gateway".into(),
            address: "127.0.0.1:9".into(),
        }],
        &[
            ("service", "iris".to_owned()),
            ("environment", "production".to_owned()),
        ],
        &LATENCY_BUCKETS_SECONDS,
    );
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    write(dir.path(), &e.files);
    let (ok, out) = promtool(&["check", "rules", export::RULES_FILE], dir.path());
    assert!(ok, "{out}");
    // 2 SLOs × 5 distinct windows recorded (page-slow's long window is
    // the ticket's short one), 2 × 3 alerts.
    assert!(out.contains("SUCCESS: 16 rules found"), "{out}");
    let (ok, out) = promtool(&["check", "config", export::CONFIG_FILE], dir.path());
    assert!(ok, "{out}");
    // The check can fail: a misspelled key.
    let broken = e.files[1].1.replace("expr:", "exprs:");
    std::fs::write(dir.path().join("broken.yml"), broken).unwrap();
    let (ok, out) = promtool(&["check", "rules", "broken.yml"], dir.path());
    assert!(!ok, "{out}");
    // A threshold that is not a bucket is said.
    let mut s = settings();
    s.slos.get_mut("availability").unwrap().objective = Objective::Latency {
        threshold: Duration::from_millis(300),
    };
    let e = export::prometheus(&s, &[], &[], &LATENCY_BUCKETS_SECONDS);
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert!(
        e.warnings[0].contains("no latency bucket at 0.3"),
        "{:?}",
        e.warnings
    );
    // The dashboard is JSON with a panel per SLO.
    let d: serde_json::Value =
        serde_json::from_str(&export::grafana_dashboard(&settings(), "iris")).unwrap();
    assert_eq!(d["panels"].as_array().map(Vec::len), Some(6));
}

/// A model server answering 200, or 500 while `failing`.
async fn model(failing: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let failing = failing.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let failing = failing.clone();
                    async move {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
                        if failing.load(Ordering::Relaxed) {
                            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get_json(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
) -> Option<serde_json::Value> {
    let r = client
        .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
        .await
        .ok()?;
    let body = r.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_gateway_and_records_the_slo_ratios() {
    need("prometheus");
    let failing = Arc::new(AtomicBool::new(true));
    let upstream = model(failing.clone()).await;
    let gateway = Gateway::new(Config::single([format!("http://{upstream}")])).unwrap();
    let proxy = gateway.serve(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let admin = gateway
        .serve_admin(
            "127.0.0.1:0".parse().unwrap(),
            AdminToken::generate().unwrap(),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = export::prometheus(
        &settings(),
        &[ScrapeTarget {
            job: "mlops-gateway".into(),
            address: admin.local_addr().to_string(),
        }],
        &[("service", "iris".to_owned())],
        &LATENCY_BUCKETS_SECONDS,
    );
    write(dir.path(), &e.files);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join(export::CONFIG_FILE).display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus"),
    );
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    // Half the requests fail: the availability ratio is about 0.5.
    let deadline = Instant::now() + Duration::from_secs(60);
    let api = format!("http://127.0.0.1:{port}/api/v1/query?query=");
    let mut seen_requests = false;
    let mut ratio = None;
    while Instant::now() < deadline && ratio.is_none() {
        for i in 0..20 {
            failing.store(i % 2 == 0, Ordering::Relaxed);
            let req = Request::post(format!("http://{}/predict", proxy.local_addr()))
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
            if let Ok(r) = client.request(req).await {
                let _ = r.into_body().collect().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(v) = get_json(&client, &format!("{api}mlops_gateway_requests_total")).await
            && v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        {
            let r = &v["data"]["result"][0]["metric"];
            assert_eq!(r["job"], "mlops-gateway", "{v}");
            assert_eq!(r["service"], "iris", "{v}");
            seen_requests = true;
        }
        let record = export::ratio_record(Duration::from_secs(5));
        if let Some(v) = get_json(
            &client,
            &format!("{api}{record}%7Bslo%3D%22availability%22%7D"),
        )
        .await
            && let Some(value) = v["data"]["result"][0]["value"][1].as_str()
            && let Ok(x) = value.parse::<f64>()
            && x.is_finite()
        {
            ratio = Some(x);
        }
    }
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        seen_requests,
        "Prometheus never scraped the gateway:\n{log}"
    );
    let ratio = ratio.unwrap_or_else(|| panic!("no recording rule result:\n{log}"));
    assert!(
        (0.3..=0.7).contains(&ratio),
        "availability error ratio {ratio}"
    );
    // Prometheus asked for OpenMetrics and kept the gateway's exemplars:
    // a latency bucket names a request by its id.
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query_exemplars?query=mlops_gateway_request_duration_seconds_bucket&start={}&end={end}",
        end - 300
    );
    let v = get_json(&client, &url).await.expect("an answer");
    let id = v["data"][0]["exemplars"][0]["labels"]["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no exemplar with a request id: {v}\n{log}"));
    assert_eq!(id.len(), 32, "{v}");
}
