//! The gateway's prediction log over loopback: a bounded sample of
//! answered requests, each with its request id, variant, status, latency,
//! inputs and outputs, as JSON lines; invalid settings refused.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mlops_release::gateway::{Config, Gateway, PredictionLogConfig};
use tokio::net::TcpListener;

/// An upstream answering `{"outputs": <the request's length>}`.
async fn upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                        "{{\"outputs\":[{}]}}",
                        body.len()
                    )))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_sample_of_answers_is_logged_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("predictions.jsonl");
    let up = upstream().await;
    let mut config = Config::single([format!("http://{up}")]);
    config.prediction_log = Some(PredictionLogConfig {
        per_second: 5,
        ..PredictionLogConfig::at(&path)
    });
    let gateway = Gateway::new(config).unwrap();
    let proxy = gateway.serve(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let started = std::time::Instant::now();
    for i in 0..40 {
        let req = Request::post(format!("http://{}/predict", proxy.local_addr()))
            .header("x-request-id", format!("req-{i}"))
            .body(Full::new(Bytes::from(format!("{{\"inputs\":[{i}]}}"))))
            .unwrap();
        let r = client.request(req).await.unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.into_body().collect().await;
    }
    let seconds = started.elapsed().as_secs() + 1;
    // The writer is a thread of its own: wait for it.
    let mut lines = Vec::new();
    for _ in 0..50 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        lines = text.lines().map(str::to_owned).collect();
        if gateway
            .snapshot()
            .predictions
            .is_some_and(|p| p.written as usize == lines.len())
            && !lines.is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At most 5 a second, at least the first 5.
    assert!(
        lines.len() >= 5 && lines.len() as u64 <= 5 * (seconds + 1),
        "{} lines in {seconds} s",
        lines.len()
    );
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["request_id"].as_str().unwrap();
        let i: usize = id.strip_prefix("req-").unwrap().parse().unwrap();
        assert_eq!(v["variant"], "stable");
        assert_eq!(v["status"], 200);
        assert!(v["latency_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(v["inputs"]["inputs"][0], i);
        let len = format!("{{\"inputs\":[{i}]}}").len();
        assert_eq!(v["outputs"]["outputs"][0], len);
    }
    let snapshot = gateway.snapshot().predictions.unwrap();
    assert!(snapshot.open);
    assert_eq!(snapshot.dropped, 0);

    // A relative path or a zero rate is refused.
    let mut bad = Config::single([format!("http://{up}")]);
    bad.prediction_log = Some(PredictionLogConfig {
        per_second: 0,
        ..PredictionLogConfig::at("relative.jsonl")
    });
    let e = Gateway::new(bad).unwrap_err().to_string();
    assert!(
        e.contains("must be absolute") && e.contains("per-second"),
        "{e}"
    );
}
