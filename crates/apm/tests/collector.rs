//! The collector against real parts on loopback: a gateway (the
//! library's, in this process) in front of a model server that can be
//! told to fail, a webhook receiver, and targets that misbehave.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mlops_apm::collector::alerts::{self, RetryPolicy};
use mlops_apm::collector::{Collector, CollectorConfig, Target, targets};
use mlops_apm::settings::{Objective, Slo, Webhook};
use mlops_apm::slo::AlertState;
use mlops_apm::tsdb::{Retention, Selector, Store, now_ms};
use mlops_release::gateway::{AdminToken, Config, Gateway};
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

/// Serve `handler` on a loopback port until the test ends.
async fn serve<F>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Response<Body> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A model server: `/metrics` counts its predictions; anything else
/// answers 200, or 500 while `failing`.
async fn model(failing: Arc<AtomicBool>) -> SocketAddr {
    let predictions = Arc::new(AtomicU64::new(0));
    serve(move |req| {
        if req.uri().path() == "/metrics" {
            let n = predictions.load(Ordering::Relaxed);
            return Response::new(full(format!(
                "# HELP model_predictions_total Predictions made.\n# TYPE model_predictions_total counter\nmodel_predictions_total{{class=\"setosa\"}} {n}\n"
            )));
        }
        predictions.fetch_add(1, Ordering::Relaxed);
        let mut r = Response::new(full("{\"outputs\":[1]}"));
        if failing.load(Ordering::Relaxed) {
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        r
    })
    .await
}

struct Received {
    bodies: Vec<serde_json::Value>,
    authorization: Vec<String>,
}

async fn webhook_receiver() -> (SocketAddr, Arc<Mutex<Received>>) {
    let got = Arc::new(Mutex::new(Received {
        bodies: Vec::new(),
        authorization: Vec::new(),
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let sink = sink.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut s = sink.lock().unwrap();
                        s.authorization.push(auth);
                        s.bodies
                            .push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
                        Ok::<_, Infallible>(Response::new(full("ok")))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

struct Running {
    _gateway: Gateway,
    _handles: Vec<mlops_release::gateway::ServerHandle>,
    proxy: SocketAddr,
    admin: SocketAddr,
}

async fn gateway(upstream: SocketAddr) -> Running {
    let gateway = Gateway::new(Config::single([format!("http://{upstream}")])).unwrap();
    let proxy = gateway.serve(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let admin = gateway
        .serve_admin(
            "127.0.0.1:0".parse().unwrap(),
            AdminToken::generate().unwrap(),
        )
        .await
        .unwrap();
    Running {
        proxy: proxy.local_addr(),
        admin: admin.local_addr(),
        _handles: vec![proxy, admin],
        _gateway: gateway,
    }
}

fn config(admin: Option<SocketAddr>) -> CollectorConfig {
    CollectorConfig {
        environment: "production".into(),
        service: Some("model".into()),
        interval_ms: 100,
        gateway: admin.map(|a| format!("http://{a}")),
        replica_metrics: Some("/metrics".into()),
        targets: Vec::new(),
        slos: vec![Slo {
            name: "availability".into(),
            objective: Objective::Availability,
            target: 0.99,
            variant: None,
        }],
        // 30 days / 1200: page-fast is 3 s over 250 ms.
        period_ms: 30 * 86_400 * 1000 / 1200,
        min_requests: 10,
        hold_ms: 0,
        webhook: None,
        max_body_bytes: 1 << 20,
    }
}

async fn send(client: &Client<HttpConnector, Full<Bytes>>, proxy: SocketAddr, n: usize) {
    for _ in 0..n {
        let req = Request::post(format!("http://{proxy}/predict"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let r = client.request(req).await.expect("the gateway answers");
        let _ = r.into_body().collect().await;
    }
}

/// A baseline tick, then failing traffic and ticks until an alert fires
/// (3 s at most): how many fired.
async fn until_fired(
    collector: &mut Collector,
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
) -> usize {
    collector.tick().await.unwrap();
    for _ in 0..30 {
        send(client, proxy, 10).await;
        let r = collector.tick().await.unwrap();
        let fired = r
            .transitions
            .iter()
            .filter(|t| t.2 == AlertState::Firing)
            .count();
        if fired > 0 {
            return fired;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    0
}

type Lines = Arc<Mutex<Vec<String>>>;

fn log_sink() -> (Lines, impl Fn(&str, serde_json::Value) + Send + 'static) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    (lines, move |event: &str, fields: serde_json::Value| {
        sink.lock().unwrap().push(format!("{event} {fields}"));
    })
}

/// Errors through the gateway fire the fast page, delivered to the
/// webhook with its token; clean traffic resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_slo_breach_fires_and_resolves_through_the_webhook() {
    let failing = Arc::new(AtomicBool::new(false));
    let upstream = model(failing.clone()).await;
    let gw = gateway(upstream).await;
    let (hook, received) = webhook_receiver().await;
    let mut cfg = config(Some(gw.admin));
    cfg.webhook = Some(Webhook {
        url: format!("http://{hook}/alerts"),
        // Cargo and nextest set it for every test process.
        token_env: Some("CARGO_PKG_NAME".into()),
    });
    let (log, sink) = log_sink();
    let mut collector =
        Collector::new(Store::in_memory(Retention::default()).unwrap(), cfg, sink).unwrap();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();

    // Healthy traffic first: no alert.
    for _ in 0..5 {
        send(&client, gw.proxy, 10).await;
        let r = collector.tick().await.unwrap();
        assert!(r.transitions.is_empty(), "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every request fails: page-fast fires within its short window.
    failing.store(true, Ordering::Relaxed);
    let mut fired = false;
    for _ in 0..30 {
        send(&client, gw.proxy, 10).await;
        let r = collector.tick().await.unwrap();
        if r.transitions
            .iter()
            .any(|(_, rule, s)| rule == "page-fast" && *s == AlertState::Firing)
        {
            fired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fired,
        "page-fast never fired; log: {:#?}",
        log.lock().unwrap()
    );
    // Healthy again: resolved once the short window is clean.
    failing.store(false, Ordering::Relaxed);
    let mut resolved = false;
    for _ in 0..40 {
        send(&client, gw.proxy, 10).await;
        let r = collector.tick().await.unwrap();
        if r.transitions
            .iter()
            .any(|(_, rule, s)| rule == "page-fast" && *s == AlertState::Resolved)
        {
            resolved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        resolved,
        "page-fast never resolved; log: {:#?}",
        log.lock().unwrap()
    );

    // Every firing and resolved transition is delivered (page-slow and
    // the ticket fire too: their windows are all errors).
    let events = alerts::events(collector.store(), 0).unwrap();
    let delivered: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.state, AlertState::Firing | AlertState::Resolved))
        .collect();
    collector.settle_deliveries(Duration::from_secs(20)).await;
    let deliveries = alerts::deliveries(collector.store()).unwrap();
    assert_eq!(deliveries.len(), delivered.len());
    assert!(
        deliveries.iter().all(|d| d.outcome == "delivered"),
        "{deliveries:?}"
    );
    let got = received.lock().unwrap();
    assert!(
        got.bodies
            .iter()
            .any(|b| b["rule"] == "page-fast" && b["state"] == "firing")
    );
    assert!(
        got.bodies
            .iter()
            .any(|b| b["rule"] == "page-fast" && b["state"] == "resolved")
    );
    assert!(
        got.authorization.iter().all(|a| a == "Bearer mlops-apm"),
        "{:?}",
        got.authorization
    );
    // The token is never logged.
    assert!(log.lock().unwrap().iter().all(|l| !l.contains("mlops-apm")));

    // The series are there: the gateway's requests by status class, the
    // replica's own counter, its resource use (this process serves it).
    let store = collector.store();
    let now = now_ms() + 1;
    let five = Selector::name("mlops_gateway_requests_total").with("code", "5xx");
    assert!(store.increase(&five, 0, now).unwrap() >= 10.0);
    let own = Selector::name("model_predictions_total").with("job", "replica");
    assert!(store.increase(&own, 0, now).unwrap() > 0.0);
    assert!(
        !store
            .select(&Selector::name("mlops_replica_memory_bytes"))
            .is_empty()
    );
    assert!(
        targets(store).unwrap().iter().all(|t| t.up),
        "{:?}",
        targets(store)
    );
}

/// A target that is down, answers garbage, sends an endless body or never
/// answers is a failed scrape with its reason; the collector goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_targets_are_recorded_failures() {
    let garbage = serve(|_| Response::new(full("this is { not metrics\n\u{0}\u{1}"))).await;
    let huge = serve(|_| {
        // 1 MiB chunks, forever: only the limit stops it.
        let chunks = futures_util::stream::repeat_with(|| {
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'#'; 1 << 20])))
        });
        Response::new(StreamBody::new(chunks).boxed())
    })
    .await;
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = config(None);
    cfg.slos.clear();
    for (name, addr) in [
        ("garbage", garbage),
        ("huge", huge),
        ("silent", silent_addr),
        ("down", down),
    ] {
        cfg.targets.push(Target {
            name: name.into(),
            url: format!("http://{addr}/metrics"),
            labels: Default::default(),
        });
    }
    let (_, sink) = log_sink();
    let mut collector =
        Collector::new(Store::in_memory(Retention::default()).unwrap(), cfg, sink).unwrap();
    let r = collector.tick().await.unwrap();
    assert_eq!((r.scrapes, r.failed), (4, 4), "{r:?}");
    let t = targets(collector.store()).unwrap();
    let reason = |n: &str| {
        t.iter()
            .find(|t| t.name == n)
            .and_then(|t| t.last_error.clone())
            .unwrap_or_default()
    };
    assert!(
        reason("down").contains("cannot connect"),
        "{}",
        reason("down")
    );
    assert!(reason("huge").contains("limit"), "{}", reason("huge"));
    assert!(
        reason("silent").contains("no answer"),
        "{}",
        reason("silent")
    );
    assert!(reason("garbage").contains("line"), "{}", reason("garbage"));
    // Each is a series the dashboard shows as down.
    let up = collector
        .store()
        .range(
            &Selector::name("mlops_scrape_up"),
            0,
            now_ms() + 1,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(up.len(), 4);
    assert!(up.iter().all(|s| s.points[0].value == 0.0));
    drop(silent);
}

/// A webhook that is down is retried, then recorded as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_is_retried_then_recorded() {
    let failing = Arc::new(AtomicBool::new(true));
    let upstream = model(failing).await;
    let gw = gateway(upstream).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = config(Some(gw.admin));
    cfg.webhook = Some(Webhook {
        url: format!("http://{dead}/alerts"),
        token_env: None,
    });
    let (log, sink) = log_sink();
    let mut collector =
        Collector::new(Store::in_memory(Retention::default()).unwrap(), cfg, sink).unwrap();
    collector.set_retry_policy(RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(1),
    });
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let fired = until_fired(&mut collector, &client, gw.proxy).await;
    assert!(fired > 0, "no alert fired: {:#?}", log.lock().unwrap());
    collector.settle_deliveries(Duration::from_secs(20)).await;
    let d = alerts::deliveries(collector.store()).unwrap();
    assert_eq!(d.len(), fired);
    assert!(
        d.iter().all(|d| d.outcome == "failed" && d.attempts == 3),
        "{d:?}"
    );
    assert!(d[0].detail.contains("cannot connect"), "{}", d[0].detail);
}

/// A delivery cut short by the collector's death (the webhook had not
/// answered yet) is made by the next collector on the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_cut_short_by_a_dead_collector_is_made_at_the_next_start() {
    let failing = Arc::new(AtomicBool::new(true));
    let upstream = model(failing).await;
    let gw = gateway(upstream).await;
    // A webhook that accepts connections and never answers.
    let stuck = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stuck.accept().await {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(Some(gw.admin));
    cfg.webhook = Some(Webhook {
        url: format!("http://{stuck_addr}/alerts"),
        token_env: None,
    });
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let fired = {
        let (_, sink) = log_sink();
        let store = Store::open(dir.path(), Retention::default()).unwrap();
        let mut first = Collector::new(store, cfg.clone(), sink).unwrap();
        first.set_retry_policy(RetryPolicy {
            attempts: 1,
            first_backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(60),
        });
        let fired = until_fired(&mut first, &client, gw.proxy).await;
        assert!(fired > 0, "no alert fired");
        assert!(alerts::deliveries(first.store()).unwrap().is_empty());
        fired
        // The first collector dies here with its deliveries under way.
    };
    let (hook, received) = webhook_receiver().await;
    cfg.webhook = Some(Webhook {
        url: format!("http://{hook}/alerts"),
        token_env: None,
    });
    let (log, sink) = log_sink();
    let store = Store::open(dir.path(), Retention::default()).unwrap();
    let mut second = Collector::new(store, cfg.clone(), sink).unwrap();
    let r = second.tick().await.unwrap();
    // Still firing: no new transition, only the delivery made again.
    assert!(
        !r.transitions.iter().any(|t| t.2 == AlertState::Firing),
        "{r:?}"
    );
    second.settle_deliveries(Duration::from_secs(20)).await;
    let got = received.lock().unwrap().bodies.clone();
    assert_eq!(got.len(), fired, "{got:#?}\n{:#?}", log.lock().unwrap());
    assert!(got.iter().all(|b| b["state"] == "firing"), "{got:#?}");
    let d = alerts::deliveries(second.store()).unwrap();
    assert_eq!(d.len(), fired);
    assert!(d.iter().all(|d| d.outcome == "delivered"), "{d:?}");
    // A third start has nothing left to deliver.
    drop(second);
    let (_, sink) = log_sink();
    let store = Store::open(dir.path(), Retention::default()).unwrap();
    let mut third = Collector::new(store, cfg, sink).unwrap();
    third.tick().await.unwrap();
    third.settle_deliveries(Duration::from_secs(5)).await;
    assert_eq!(alerts::deliveries(third.store()).unwrap().len(), fired);
    assert_eq!(received.lock().unwrap().bodies.len(), fired);
}
