//! The monitoring dashboard from a store of a quarter hour of traffic:
//! every chart drawn, served live over loopback, and loaded in headless
//! Chromium with no console message and no resource asked for. The
//! screenshot is kept in the target directory
//! (`target/tmp/monitor-dashboard.png`).

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::BodyExt as _;
use mlops_apm::dashboard::{self, DriftRow, Event, Page};
use mlops_apm::tsdb::{Retention, Sample, SeriesKey, SeriesKind, Store, now_ms};
use mlops_testkit::chromium::{self, png_size};

/// 15 minutes of scrapes every 5 s: stable and canary traffic, a burst of
/// errors on the canary, latency buckets, replicas, CPU and memory.
fn store(dir: &std::path::Path) -> (Store, i64, i64) {
    let mut store = Store::open(dir, Retention::default()).unwrap();
    let end = now_ms();
    let start = end - 15 * 60 * 1000;
    let mut totals = [0.0f64; 8];
    let mut t = start;
    let mut i = 0;
    while t <= end {
        let canary = i > 60;
        let errors = (100..120).contains(&i);
        let mut s = Vec::new();
        let mut counter = |name: &str, labels: &[(&str, &str)], slot: usize, inc: f64| {
            totals[slot] += inc;
            s.push(Sample {
                key: SeriesKey::new(name, labels.iter().copied()),
                kind: SeriesKind::Counter,
                value: totals[slot],
            });
        };
        counter(
            "mlops_gateway_requests_total",
            &[("variant", "stable"), ("code", "2xx")],
            0,
            400.0,
        );
        let le = |b: &'static str| [("variant", "stable"), ("le", b)];
        counter(
            "mlops_gateway_request_duration_seconds_bucket",
            &le("0.005"),
            1,
            300.0,
        );
        counter(
            "mlops_gateway_request_duration_seconds_bucket",
            &le("0.025"),
            2,
            390.0,
        );
        counter(
            "mlops_gateway_request_duration_seconds_bucket",
            &le("+Inf"),
            3,
            400.0,
        );
        if canary {
            counter(
                "mlops_gateway_requests_total",
                &[("variant", "canary"), ("code", "2xx")],
                4,
                100.0,
            );
            counter(
                "mlops_gateway_requests_total",
                &[("variant", "canary"), ("code", "5xx")],
                5,
                if errors { 30.0 } else { 0.0 },
            );
            counter(
                "mlops_gateway_request_duration_seconds_bucket",
                &[("variant", "canary"), ("le", "0.025")],
                6,
                90.0,
            );
            counter(
                "mlops_gateway_request_duration_seconds_bucket",
                &[("variant", "canary"), ("le", "+Inf")],
                7,
                130.0,
            );
        }
        for (variant, n) in [("stable", 2.0), ("canary", if canary { 2.0 } else { 0.0 })] {
            s.push(Sample {
                key: SeriesKey::new("mlops_gateway_variant_replicas", [("variant", variant)]),
                kind: SeriesKind::Gauge,
                value: n,
            });
        }
        for r in ["http://127.0.0.1:1001", "http://127.0.0.1:1002"] {
            s.push(Sample {
                key: SeriesKey::new(
                    "mlops_replica_cpu_seconds_total",
                    [("variant", "stable"), ("replica", r)],
                ),
                kind: SeriesKind::Counter,
                value: i as f64 * 0.4,
            });
            s.push(Sample {
                key: SeriesKey::new(
                    "mlops_replica_memory_bytes",
                    [("variant", "stable"), ("replica", r)],
                ),
                kind: SeriesKind::Gauge,
                value: 40.0 * 1_048_576.0 + i as f64 * 10_000.0,
            });
        }
        store.append(t, &s, false).unwrap();
        t += 5000;
        i += 1;
    }
    store.compact(end).unwrap();
    (store, start, end)
}

fn page(start: i64, end: i64, refresh: Option<u32>) -> Page {
    Page {
        title: "iris in production <test>".into(),
        from: start,
        to: end + 1,
        step: Duration::from_secs(10),
        events: vec![
            Event {
                ts: start + 5 * 60 * 1000,
                label: "iris:2 promoted".into(),
            },
            Event {
                ts: start + 10 * 60 * 1000,
                label: "iris:1 rolled back to".into(),
            },
        ],
        drift: Some((
            "run 7".into(),
            vec![DriftRow {
                feature: "petal_length".into(),
                tests: "PSI 0.31, KS 0.22".into(),
                verdict: "drift".into(),
            }],
        )),
        refresh,
    }
}

#[test]
fn the_dashboard_draws_every_chart_and_loads_cleanly_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (store, start, end) = store(dir.path());
    let html = dashboard::render(&store, &page(start, end, None)).unwrap();
    assert_eq!(
        html.matches("<figure class=\"chart\">").count(),
        6,
        "{html}"
    );
    assert!(!html.contains("no data in this range"), "{html}");
    assert!(html.contains("iris in production &lt;test&gt;"));
    // Both variants' request rates, the three quantiles per variant, the
    // events on the axes.
    for legend in ["canary", "stable", "p50 stable", "p99 canary"] {
        assert!(
            html.contains(&format!("<title>{legend}</title>")),
            "{legend}"
        );
    }
    assert!(html.matches("iris:2 promoted").count() >= 6);
    assert!(html.contains("petal_length"));
    assert!(
        !html.contains("http-equiv=\"refresh\""),
        "a snapshot does not reload"
    );

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = out.join("monitor-dashboard.html");
    std::fs::write(&file, &html).unwrap();
    let png = out.join("monitor-dashboard.png");
    let _ = std::fs::remove_file(&png);
    let load = chromium::load(&file, &png, (1400, 1800));
    assert!(load.problems().is_empty(), "{:#?}", load.problems());
    assert_eq!(png_size(&load.png), (1400, 1800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_dashboard_is_served_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (store, start, end) = store(dir.path());
    drop(store);
    let path = dir.path().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(dashboard::serve(listener, move || {
        let store = Store::open_read(&path).map_err(|e| e.to_string())?;
        dashboard::render(&store, &page(start, end, Some(5))).map_err(|e| e.to_string())
    }));
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://{addr}{path}").parse().unwrap())
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, body) = get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert_eq!(body.matches("<figure class=\"chart\">").count(), 6);
    assert_eq!(get("/other").await.0, 404);
    server.abort();
}
