//! The load generator's results against a real HTTP server on loopback:
//! runs of two generators merge exactly, a merge merges again, and damaged
//! results are refused.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mlops_loadtest::generator::{self, LoadResult, MergeError, Threshold, check_all, merge};
use mlops_release::driver::{DriverSettings, Samples, Workload, latency_histogram};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An HTTP server answering 200 after `delay`; it stops with the runtime.
async fn server(delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_: Request<hyper::body::Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/")
}

async fn run(url: &str, workload: Workload) -> LoadResult {
    let mut settings = DriverSettings::with_workload(url, workload, 100_000);
    settings.method = "GET".into();
    settings.keep_second_histograms = true;
    let samples = Samples::from_bodies([Bytes::new()]).unwrap();
    let driver = settings.compile(samples).unwrap();
    generator::run(&driver, &CancellationToken::new(), None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_two_generators_merge_exactly() {
    let url = server(Duration::from_millis(2)).await;
    let (a, b) = tokio::join!(
        run(&url, Workload::constant(200.0, Duration::from_millis(1500))),
        run(
            &url,
            Workload::Closed {
                users: 2,
                think: Duration::from_millis(5),
                duration: Duration::from_millis(2500),
            }
        ),
    );
    assert_eq!(a.report.requests, 300);
    let merged = merge(&[a.clone(), b.clone()]).unwrap();
    let r = &merged.report;
    assert_eq!(merged.runs, 2);
    assert_eq!(r.requests, a.report.requests + b.report.requests);
    assert_eq!(r.status.success, r.requests);
    // The open run's rate and the closed run's users.
    assert_eq!(r.users, Some(2));
    assert_eq!(r.target_rps, Some(200.0));
    assert_eq!(r.target, url);
    assert_eq!(r.elapsed_s, a.report.elapsed_s.max(b.report.elapsed_s));
    // The merged histogram is exactly the sum of both.
    let mut sum = latency_histogram();
    sum.add(a.latency().unwrap()).unwrap();
    sum.add(b.latency().unwrap()).unwrap();
    assert_eq!(merged.latency().unwrap(), sum);
    assert_eq!(
        r.latency_ms,
        mlops_release::driver::LatencySummary::of(&sum)
    );
    // Seconds align by offset; the closed run lasted longer.
    assert_eq!(
        r.per_second.len(),
        b.report.per_second.len().max(a.report.per_second.len())
    );
    for bucket in &r.per_second {
        let of = |x: &LoadResult| {
            x.report
                .per_second
                .iter()
                .find(|s| s.second == bucket.second)
                .map_or(0, |s| s.requests)
        };
        assert_eq!(bucket.requests, of(&a) + of(&b), "second {}", bucket.second);
        assert_eq!(bucket.latency_ms.map_or(0, |l| l.count), bucket.requests);
    }
    // Through a file and back, and merged again with a third: the same as
    // merging the three at once.
    let text = serde_json::to_string(&merged).unwrap();
    let back: LoadResult = serde_json::from_str(&text).unwrap();
    assert_eq!(back, merged);
    let c = run(&url, Workload::constant(50.0, Duration::from_millis(500))).await;
    let twice = merge(&[back, c.clone()]).unwrap();
    let once = merge(&[a, b, c]).unwrap();
    assert_eq!(twice, once);
    assert_eq!(twice.runs, 3);
    // The summary object has what `--json` promises.
    let value = serde_json::to_value(&once).unwrap();
    for key in ["requests", "errors", "rps"] {
        assert!(value[key].is_number(), "{key}");
    }
    for key in ["p50", "p90", "p99", "max"] {
        assert!(value["latency_ms"][key].is_number(), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_are_checked_on_the_histogram() {
    let url = server(Duration::from_millis(30)).await;
    let result = run(&url, Workload::constant(50.0, Duration::from_millis(400))).await;
    let thresholds: Vec<Threshold> = [
        "p50 < 10ms",
        "p50 > 25ms",
        "error_rate < 1%",
        "requests >= 20",
    ]
    .iter()
    .map(|t| Threshold::parse(t).unwrap())
    .collect();
    let verdicts = check_all(&thresholds, &result.report, &result.latency().unwrap());
    let passed: Vec<bool> = verdicts.iter().map(|v| v.passed).collect();
    assert_eq!(passed, [false, true, true, true], "{verdicts:#?}");
    assert!(
        verdicts[0].detail.contains("over the limit of 10 ms"),
        "{}",
        verdicts[0].detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_results_are_refused() {
    let url = server(Duration::ZERO).await;
    let good = run(&url, Workload::constant(20.0, Duration::from_millis(200))).await;
    assert!(matches!(merge(&[]), Err(MergeError::Empty)));
    let mut other = good.clone();
    other.format = 2;
    let e = merge(&[good.clone(), other]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "result 2 is of format 2; this mlops reads format 1"
    );
    let mut cut = good.clone();
    cut.histograms.per_second.clear();
    assert!(matches!(
        merge(&[cut]),
        Err(MergeError::Seconds { index: 1, .. })
    ));
    for second in [u64::MAX, 100_000_000_000, 0] {
        let mut edited = good.clone();
        // The last bucket moved far past the end, or back onto the first.
        edited.report.per_second.last_mut().unwrap().second = second;
        if edited.report.per_second.len() < 2 && second == 0 {
            continue;
        }
        let e = merge(&[good.clone(), edited]).unwrap_err();
        assert!(
            matches!(e, MergeError::BadSecond { index: 2, .. }),
            "{second}: {e}"
        );
    }
    let mut garbled = good.clone();
    garbled.histograms.overall = "bm90IGEgaGlzdG9ncmFt".into();
    let e = merge(&[good, garbled]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("result 2: the overall histogram is unreadable"),
        "{e}"
    );
}
