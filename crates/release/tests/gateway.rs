//! The gateway over real HTTP on loopback: small hyper upstreams started
//! here (each names itself in `x-upstream`), a gateway in front of them,
//! and a keep-alive client. Every test is bounded in time (`bounded`) and
//! in request count.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mlops_release::gateway::metrics::{
    Disagreement, LATENCY_BUCKETS_SECONDS, MeterSnapshot, MetricsSnapshot, ReplicaHealth,
    ReplicaSnapshot, ShadowSnapshot, VariantSnapshot, prometheus_text,
};
use mlops_release::gateway::{
    Config, Gateway, GatewayError, HealthCheck, Route, ServerHandle, Shadow, Sticky, TOKEN_FILE,
    Tolerance, ensure_token_file,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Run a test body, failing it if it takes longer than 60 s.
fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(60), body)
                .await
                .expect("the test finished within 60 s");
        });
}

/// A replica: answers every request with `x-upstream: NAME` and what it
/// saw of the request in `x-seen-*` headers. `/echo` returns the request
/// body, `/slow/MS` waits MS milliseconds first, `/status/N` answers N,
/// `/v2/health/ready` 200 (503 when `unready`).
struct Upstream {
    name: String,
    addr: SocketAddr,
    /// When set, every answer is 500.
    failing: Arc<AtomicBool>,
    /// When set, its readiness endpoint answers 503 (and nothing else
    /// changes).
    unready: Arc<AtomicBool>,
    /// Added before every answer, in milliseconds.
    delay_ms: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Upstream {
    async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::on(name, listener)
    }

    /// A replica on `addr` again, after [`kill`](Self::kill).
    async fn restart(name: &str, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind again");
        Self::on(name, listener)
    }

    fn on(name: &str, listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let failing = Arc::new(AtomicBool::new(false));
        let unready = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (n, f, u, d) = (
            name.to_owned(),
            failing.clone(),
            unready.clone(),
            delay_ms.clone(),
        );
        let task = tokio::spawn(async move {
            // Dropped with this task: killing it closes every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, f, u, d) = (n.clone(), f.clone(), u.clone(), d.clone());
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        answer(n.clone(), f.clone(), u.clone(), d.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            name: name.to_owned(),
            addr,
            failing,
            unready,
            delay_ms,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop listening and close every connection: afterwards connections
    /// to its port are refused.
    async fn kill(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

async fn answer(
    name: String,
    failing: Arc<AtomicBool>,
    unready: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/v2/health/ready" {
        let mut response = Response::new(Full::new(Bytes::new()));
        if unready.load(Ordering::Relaxed) {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        return Ok(response);
    }
    let seen = |h: &str| {
        req.headers()
            .get(h)
            .map_or_else(|| "-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned())
    };
    let seen_id = seen("x-request-id");
    let seen_forwarded = seen("x-forwarded-for");
    let seen_secret = seen("x-secret");
    let seen_keep_alive = seen("keep-alive");
    let mut wait = delay_ms.load(Ordering::Relaxed);
    if let Some(ms) = path.strip_prefix("/slow/") {
        wait += ms.parse::<u64>().unwrap_or(0);
    }
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let status = if failing.load(Ordering::Relaxed) {
        500
    } else if let Some(code) = path.strip_prefix("/status/") {
        code.parse().unwrap_or(200)
    } else {
        200
    };
    let body = if path == "/echo" {
        body
    } else {
        Bytes::from(name.clone())
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).expect("a status");
    let h = response.headers_mut();
    h.insert("x-upstream", name.parse().expect("a name"));
    h.insert("x-seen-request-id", seen_id.parse().expect("printable"));
    h.insert(
        "x-seen-forwarded-for",
        seen_forwarded.parse().expect("printable"),
    );
    h.insert("x-seen-secret", seen_secret.parse().expect("printable"));
    h.insert(
        "x-seen-keep-alive",
        seen_keep_alive.parse().expect("printable"),
    );
    // A hop-by-hop header of this connection only: the gateway drops it.
    h.insert("x-hop", "1".parse().expect("printable"));
    h.insert("connection", "x-hop".parse().expect("printable"));
    Ok(response)
}

/// A gateway serving `config` on a loopback port, with a keep-alive client.
struct Harness {
    gateway: Gateway,
    server: ServerHandle,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What the client got back.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    /// The replica that answered, or "-" (the gateway answered itself).
    fn upstream(&self) -> &str {
        self.header("x-upstream")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("-", |v| v.to_str().expect("printable"))
    }
}

impl Harness {
    async fn start(config: Config) -> Self {
        let gateway = Gateway::new(config).expect("a valid config");
        let server = gateway
            .bind("127.0.0.1:0".parse().expect("an address"))
            .await
            .expect("bind the gateway");
        Self {
            gateway,
            server,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers, Bytes::new()).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let url = format!("http://{}{path}", self.server.local_addr());
        call(&self.client, method, &url, headers, body).await
    }

    /// `n` GETs of `path`, `concurrency` at a time: the count of answers by
    /// (status, upstream).
    async fn tally(
        &self,
        path: &str,
        n: usize,
        concurrency: usize,
    ) -> BTreeMap<(u16, String), usize> {
        let mut tasks = JoinSet::new();
        for worker in 0..concurrency {
            let client = self.client.clone();
            let url = format!("http://{}{path}", self.server.local_addr());
            let count = n / concurrency + usize::from(worker < n % concurrency);
            tasks.spawn(async move {
                let mut seen = Vec::with_capacity(count);
                for _ in 0..count {
                    let req = Request::get(&url)
                        .body(Full::new(Bytes::new()))
                        .expect("a request");
                    let response = client.request(req).await.expect("the gateway answers");
                    let status = response.status().as_u16();
                    let upstream = response
                        .headers()
                        .get("x-upstream")
                        .map_or("-", |v| v.to_str().expect("printable"))
                        .to_owned();
                    response.into_body().collect().await.expect("a whole body");
                    seen.push((status, upstream));
                }
                seen
            });
        }
        let mut tally = BTreeMap::new();
        while let Some(seen) = tasks.join_next().await {
            for key in seen.expect("a worker finished") {
                *tally.entry(key).or_default() += 1;
            }
        }
        tally
    }
}

/// One request to `url`, its whole answer.
async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = client
        .request(req.body(Full::new(body)).expect("a request"))
        .await
        .expect("an answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a whole body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn ok_from(tally: &BTreeMap<(u16, String), usize>, upstream: &str) -> usize {
    tally.get(&(200, upstream.to_owned())).copied().unwrap_or(0)
}

/// Send raw bytes on a fresh connection; everything the gateway sent back
/// until it closed the connection (or 5 s passed).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn weights_split_traffic_within_statistical_tolerance() {
    bounded(async {
        let (s1, s2, c1) = (
            Upstream::start("stable-1").await,
            Upstream::start("stable-2").await,
            Upstream::start("canary-1").await,
        );
        let h = Harness::start(Config::weighted([
            ("stable", 3, vec![s1.url(), s2.url()]),
            ("canary", 1, vec![c1.url()]),
        ]))
        .await;
        let n = 1200;
        let tally = h.tally("/", n, 4).await;
        let stable = ok_from(&tally, "stable-1") + ok_from(&tally, "stable-2");
        let canary = ok_from(&tally, "canary-1");
        assert_eq!(stable + canary, n, "every request answered 200: {tally:?}");
        // Binomial(1200, 1/4): mean 300, sd 15; ±5 sd fails once in ~2M runs.
        assert!((225..=375).contains(&canary), "canary got {canary} of {n}");
        assert!(
            ok_from(&tally, "stable-1") > 0 && ok_from(&tally, "stable-2") > 0,
            "both stable replicas served: {tally:?}"
        );
    });
}

#[test]
fn header_and_cookie_routes_win_and_sticky_users_keep_their_arm() {
    bounded(async {
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let mut config = Config::weighted([
            ("blue", 1, vec![blue.url()]),
            ("green", 1, vec![green.url()]),
        ]);
        config.routes = vec![
            Route {
                header: Some("x-variant: green".to_owned()),
                cookie: None,
                variant: "green".to_owned(),
            },
            Route {
                header: None,
                cookie: Some("arm=blue".to_owned()),
                variant: "blue".to_owned(),
            },
        ];
        config.sticky = Some(Sticky::Cookie("user".to_owned()));
        let h = Harness::start(config).await;

        for _ in 0..20 {
            assert_eq!(
                h.get("/", &[("x-variant", "green")]).await.upstream(),
                "green"
            );
            assert_eq!(
                h.get("/", &[("cookie", "theme=dark; arm=blue")])
                    .await
                    .upstream(),
                "blue"
            );
        }
        // The first matching route wins.
        let both = h
            .get("/", &[("x-variant", "green"), ("cookie", "arm=blue")])
            .await;
        assert_eq!(both.upstream(), "green");

        // One user, one arm; over 40 users, both arms (all on one: 2^-39).
        let mut arms = BTreeMap::new();
        for user in 0..40 {
            let cookie = format!("user=u{user}");
            let first = h
                .get("/", &[("cookie", &cookie)])
                .await
                .upstream()
                .to_owned();
            for _ in 0..5 {
                let again = h.get("/", &[("cookie", &cookie)]).await;
                assert_eq!(again.upstream(), first, "user u{user} changed arm");
            }
            *arms.entry(first).or_insert(0) += 1;
        }
        assert_eq!(arms.len(), 2, "users spread over both arms: {arms:?}");
    });
}

#[test]
fn sticky_by_header_hashes_the_key() {
    bounded(async {
        let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
        let mut config = Config::weighted([("a", 1, vec![a.url()]), ("b", 1, vec![b.url()])]);
        config.sticky = Some(Sticky::Header("x-user-id".to_owned()));
        let h = Harness::start(config).await;
        let mut arms = BTreeMap::new();
        for user in 0..40 {
            let id = format!("user-{user}");
            let first = h
                .get("/", &[("x-user-id", &id)])
                .await
                .upstream()
                .to_owned();
            for _ in 0..3 {
                assert_eq!(h.get("/", &[("x-user-id", &id)]).await.upstream(), first);
            }
            *arms.entry(first).or_insert(0) += 1;
        }
        assert_eq!(arms.len(), 2, "users spread over both arms: {arms:?}");
    });
}

#[test]
fn least_outstanding_requests_steers_away_from_a_slow_replica() {
    bounded(async {
        let (slow, fast) = (Upstream::start("slow").await, Upstream::start("fast").await);
        slow.delay_ms.store(300, Ordering::Relaxed);
        let h = Harness::start(Config::single([slow.url(), fast.url()])).await;
        let n = 120;
        let tally = h.tally("/", n, 4).await;
        let (to_slow, to_fast) = (ok_from(&tally, "slow"), ok_from(&tally, "fast"));
        assert_eq!(to_slow + to_fast, n, "{tally:?}");
        // Round robin would send it half (60). Least outstanding sends it a
        // request only when it has no more outstanding than the fast one.
        assert!(to_slow < n / 4, "the slow replica got {to_slow} of {n}");
    });
}

#[test]
fn request_id_forwarded_for_and_hop_by_hop_headers() {
    bounded(async {
        let up = Upstream::start("only").await;
        let h = Harness::start(Config::single([up.url()])).await;

        let kept = h.get("/", &[("x-request-id", "req-42")]).await;
        assert_eq!(kept.header("x-request-id"), "req-42");
        assert_eq!(kept.header("x-seen-request-id"), "req-42");

        let made = h.get("/", &[]).await;
        let id = made.header("x-request-id");
        assert_eq!(id.len(), 32, "a generated id: {id:?}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            made.header("x-seen-request-id"),
            id,
            "the replica saw the same id"
        );
        let other = h.get("/", &[]).await;
        assert_ne!(other.header("x-request-id"), id, "ids are fresh");

        assert_eq!(made.header("x-seen-forwarded-for"), "127.0.0.1");
        let chained = h.get("/", &[("x-forwarded-for", "203.0.113.7")]).await;
        assert_eq!(
            chained.header("x-seen-forwarded-for"),
            "203.0.113.7, 127.0.0.1"
        );

        // Request side: a header the client's Connection names, and
        // Keep-Alive, stay on the client's hop.
        let hop = h
            .get(
                "/",
                &[
                    ("connection", "x-secret, keep-alive"),
                    ("x-secret", "s"),
                    ("keep-alive", "timeout=5"),
                ],
            )
            .await;
        assert_eq!(hop.status, 200);
        assert_eq!(hop.header("x-seen-secret"), "-");
        assert_eq!(hop.header("x-seen-keep-alive"), "-");
        // Response side: the replica's `Connection: x-hop` and x-hop.
        assert_eq!(hop.header("x-hop"), "-");
        assert_eq!(hop.header("connection"), "-");
        assert_eq!(hop.upstream(), up.name);

        let echoed = h
            .send(
                Method::POST,
                "/echo",
                &[],
                Bytes::from_static(b"features=1,2,3"),
            )
            .await;
        assert_eq!(
            (echoed.status, echoed.body.as_str()),
            (200, "features=1,2,3")
        );
    });
}

/// Whether the gateway has `url` of variant `variant` ejected now.
fn ejected(h: &Harness, variant: &str, url: &str) -> bool {
    h.gateway
        .snapshot()
        .variant(variant)
        .and_then(|v| v.replica(url))
        .expect("the replica is in the snapshot")
        .ejected
}

#[test]
fn a_killed_replica_is_ejected_and_idempotent_requests_retry_unseen() {
    bounded(async {
        let (r1, r2, r3) = (
            Upstream::start("r1").await,
            Upstream::start("r2").await,
            Upstream::start("r3").await,
        );
        let r1_url = r1.url();
        let mut config = Config::single([r1.url(), r2.url(), r3.url()]);
        config.eject_base_ms = 100;
        config.eject_max_ms = 400;
        let h = Harness::start(config).await;
        // Warm: the gateway holds keep-alive connections to every replica.
        let warm = h.tally("/", 60, 3).await;
        assert!(ok_from(&warm, "r1") > 0, "{warm:?}");

        let killed_addr = r1.kill().await;
        let killed_at = tokio::time::Instant::now();
        let mut after_kill = Vec::new();
        while !ejected(&h, "stable", &r1_url) {
            assert!(
                killed_at.elapsed() < Duration::from_secs(1),
                "r1 not ejected within 1 s of its death ({} requests)",
                after_kill.len()
            );
            after_kill.push(h.get("/", &[]).await);
        }
        // Through several back-offs (the killed replica is tried again
        // each time, refused, and the request goes elsewhere): no client
        // sees a failure, GET or POST.
        for i in 0..300 {
            let reply = if i % 2 == 0 {
                h.get("/", &[]).await
            } else {
                h.send(Method::POST, "/echo", &[], Bytes::from_static(b"x"))
                    .await
            };
            after_kill.push(reply);
            if i % 30 == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        for reply in &after_kill {
            assert_eq!(reply.status, 200, "a client saw a failure: {reply:?}");
            assert_ne!(reply.upstream(), "r1");
        }
        let snapshot = h.gateway.snapshot();
        let r1_stats = snapshot
            .variant("stable")
            .and_then(|v| v.replica(&r1_url))
            .expect("r1 in the snapshot");
        assert!(
            r1_stats.ejections >= 2,
            "ejected again after back-off: {r1_stats:?}"
        );
        assert!(r1_stats.upstream_failures >= 2);

        // Back from the dead: retried after its back-off, it serves again.
        let _r1 = Upstream::restart("r1", killed_addr).await;
        let mut served = false;
        for _ in 0..200 {
            let reply = h.get("/", &[]).await;
            assert_eq!(reply.status, 200);
            if reply.upstream() == "r1" {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(served, "the revived replica never got traffic back");
    });
}

#[test]
fn a_replica_answering_5xx_is_ejected_but_never_the_last_and_an_empty_variant_answers_503() {
    bounded(async {
        let (bad, good) = (Upstream::start("bad").await, Upstream::start("good").await);
        bad.failing.store(true, Ordering::Relaxed);
        let mut config = Config::single([bad.url(), good.url()]);
        config.eject_after = 3;
        config.eject_base_ms = 60_000;
        config.eject_max_ms = 60_000;
        let h = Harness::start(config).await;
        let mut errors = 0;
        let mut sent = 0;
        while !ejected(&h, "stable", &bad.url()) {
            sent += 1;
            assert!(sent <= 200, "not ejected after 200 requests");
            let reply = h.get("/", &[]).await;
            if reply.status == 500 {
                assert_eq!(reply.upstream(), "bad");
                errors += 1;
            }
        }
        // Sequential requests: exactly the threshold reached clients.
        assert_eq!(errors, 3);
        let tally = h.tally("/", 50, 2).await;
        assert_eq!(ok_from(&tally, "good"), 50, "{tally:?}");

        // The last replica in rotation is never ejected for answers a
        // client can provoke (5xx, timeouts): its 500s pass through, and
        // the variant stays up for everyone else.
        let lonely = Upstream::start("lonely").await;
        lonely.failing.store(true, Ordering::Relaxed);
        let mut config = Config::single([lonely.url()]);
        config.eject_base_ms = 60_000;
        config.eject_max_ms = 60_000;
        let h = Harness::start(config).await;
        for _ in 0..10 {
            assert_eq!(h.get("/", &[]).await.status, 500);
        }
        assert!(!ejected(&h, "stable", &lonely.url()));

        // A replica nothing listens on is ejected at once, last or not:
        // then the variant answers 503, saying why.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let mut config = Config::single([dead.clone()]);
        config.eject_base_ms = 60_000;
        config.eject_max_ms = 60_000;
        let h = Harness::start(config).await;
        assert_eq!(h.get("/", &[]).await.status, 502);
        assert!(ejected(&h, "stable", &dead));
        let reply = h.get("/", &[]).await;
        assert_eq!(reply.status, 503);
        assert!(
            reply
                .body
                .contains("no healthy replica in variant \"stable\""),
            "{reply:?}"
        );
        assert_eq!(reply.header("x-request-id").len(), 32);
    });
}

/// `url`'s entry in variant `stable` of the gateway's snapshot.
fn stable_replica(h: &Harness, url: &str) -> ReplicaSnapshot {
    h.gateway
        .snapshot()
        .variant("stable")
        .and_then(|v| v.replica(url))
        .expect("the replica is in the snapshot")
        .clone()
}

/// Poll the snapshot until `done` holds for `url`, failing after `limit`:
/// how long it took.
async fn until(
    h: &Harness,
    url: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&ReplicaSnapshot) -> bool,
) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let r = stable_replica(h, url);
        if done(&r) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{url}: not {what} within {limit:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_replica_failing_health_checks_leaves_rotation_and_comes_back() {
    bounded(async {
        let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
        let (a_url, b_url) = (a.url(), b.url());
        let mut config = Config::single([a.url(), b.url()]);
        let check = HealthCheck {
            interval_ms: 200,
            timeout_ms: 200,
            unhealthy_after: 2,
            healthy_after: 1,
            ..HealthCheck::default()
        };
        let interval = Duration::from_millis(check.interval_ms);
        config.health = Some(check.clone());
        let h = Harness::start(config.clone()).await;
        let healthy = |r: &ReplicaSnapshot| r.health == ReplicaHealth::Healthy && r.in_rotation;
        until(&h, &a_url, 3 * interval, "healthy", healthy).await;
        until(&h, &b_url, 3 * interval, "healthy", healthy).await;
        let tally = h.tally("/", 40, 4).await;
        assert!(
            ok_from(&tally, "a") > 0 && ok_from(&tally, "b") > 0,
            "{tally:?}"
        );

        // Its readiness fails (its answers to requests would not): out of
        // rotation within interval × unhealthy-after (and a round already
        // under way), with nothing passive about it.
        a.unready.store(true, Ordering::Relaxed);
        let took = until(&h, &a_url, 10 * interval, "out of rotation", |r| {
            !r.in_rotation
        })
        .await;
        // Scheduling slack on a shared machine on top of the bound.
        let bound = interval * check.unhealthy_after + interval + Duration::from_millis(300);
        assert!(took <= bound, "took {took:?}, bound {bound:?}");
        let out = stable_replica(&h, &a_url);
        assert_eq!(out.health, ReplicaHealth::Unhealthy);
        assert!(!out.ejected && out.health_checks_failed >= 2, "{out:?}");
        let tally = h.tally("/", 40, 4).await;
        assert_eq!(ok_from(&tally, "b"), 40, "{tally:?}");
        let text = h.gateway.prometheus_text();
        for line in [
            format!(
                "mlops_gateway_replica_health{{variant=\"stable\",replica=\"{a_url}\",state=\"unhealthy\"}} 1"
            ),
            format!(
                "mlops_gateway_replica_health{{variant=\"stable\",replica=\"{a_url}\",state=\"healthy\"}} 0"
            ),
            format!(
                "mlops_gateway_replica_in_rotation{{variant=\"stable\",replica=\"{a_url}\"}} 0"
            ),
            format!(
                "mlops_gateway_replica_in_rotation{{variant=\"stable\",replica=\"{b_url}\"}} 1"
            ),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        promtool_check(&text);
        let json = serde_json::to_value(h.gateway.snapshot()).expect("serializable");
        assert_eq!(json["variants"][0]["replicas"][0]["health"], "unhealthy");

        // The other fails too: the last replica in rotation stays (it can
        // be reached), marked unhealthy, and keeps serving.
        b.unready.store(true, Ordering::Relaxed);
        until(&h, &b_url, 10 * interval, "unhealthy", |r| {
            r.health == ReplicaHealth::Unhealthy
        })
        .await;
        tokio::time::sleep(interval).await;
        assert!(stable_replica(&h, &b_url).in_rotation);
        assert_eq!(ok_from(&h.tally("/", 10, 2).await, "b"), 10);

        // The first one recovers: back in rotation after healthy-after
        // passes, and the one kept only as the last leaves.
        a.unready.store(false, Ordering::Relaxed);
        until(&h, &a_url, 10 * interval, "back", healthy).await;
        until(&h, &b_url, 10 * interval, "out of rotation", |r| {
            !r.in_rotation
        })
        .await;
        assert_eq!(ok_from(&h.tally("/", 10, 2).await, "a"), 10);

        // A new config keeps the probing (and what it found) for replicas
        // that stay, and probes new ones; without health checks nothing
        // is out of rotation for them.
        let c = Upstream::start("c").await;
        let mut grown = Config::single([a.url(), b.url(), c.url()]);
        grown.health = Some(check.clone());
        h.gateway.set_config(grown).expect("valid");
        assert!(!stable_replica(&h, &b_url).in_rotation);
        until(&h, &c.url(), 10 * interval, "healthy", healthy).await;
        let mut unchecked = config.clone();
        unchecked.health = None;
        h.gateway.set_config(unchecked).expect("valid");
        let b_now = stable_replica(&h, &b_url);
        assert!(
            b_now.in_rotation && b_now.health == ReplicaHealth::Unchecked,
            "{b_now:?}"
        );
        let checks = b_now.health_checks_failed + b_now.health_checks_passed;
        tokio::time::sleep(2 * interval).await;
        let after = stable_replica(&h, &b_url);
        assert_eq!(
            after.health_checks_failed + after.health_checks_passed,
            0,
            "counters reset, no probes without a config: {checks} then {after:?}"
        );
        let tally = h.tally("/", 40, 4).await;
        assert!(ok_from(&tally, "b") > 0, "{tally:?}");
    });
}

#[test]
fn the_last_replica_refusing_probes_leaves_and_returns_when_it_listens_again() {
    bounded(async {
        let lonely = Upstream::start("lonely").await;
        let url = lonely.url();
        let mut config = Config::single([lonely.url()]);
        config.health = Some(HealthCheck {
            interval_ms: 100,
            timeout_ms: 100,
            unhealthy_after: 2,
            healthy_after: 2,
            ..HealthCheck::default()
        });
        let h = Harness::start(config).await;
        until(&h, &url, Duration::from_secs(2), "healthy", |r| {
            r.health == ReplicaHealth::Healthy
        })
        .await;
        // Nothing listens there: out even as the last one, and the
        // variant answers 503 without trying it.
        let addr = lonely.kill().await;
        until(&h, &url, Duration::from_secs(2), "out of rotation", |r| {
            !r.in_rotation
        })
        .await;
        let reply = h.get("/", &[]).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(reply.body.contains("no healthy replica"), "{reply:?}");
        assert_eq!(stable_replica(&h, &url).meter.requests.total(), 0);
        // Listening again: back after two passes in a row.
        let _back = Upstream::restart("lonely", addr).await;
        until(&h, &url, Duration::from_secs(2), "back", |r| r.in_rotation).await;
        let reply = h.get("/", &[]).await;
        assert_eq!((reply.status, reply.upstream()), (200, "lonely"));
    });
}

#[test]
fn bodies_over_the_limit_get_413_without_being_read() {
    bounded(async {
        let up = Upstream::start("only").await;
        let mut config = Config::single([up.url()]);
        config.max_body_bytes = 1024;
        let h = Harness::start(config).await;
        let addr = h.server.local_addr();

        // Declared too long: refused before the body is sent at all.
        let declared = raw(
            addr,
            b"POST /echo HTTP/1.1\r\nhost: gw\r\ncontent-length: 100000000\r\n\r\n",
        )
        .await;
        assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");

        // Chunked, no length: cut off once past the limit.
        let chunk = "a".repeat(600);
        let chunked = format!(
            "POST /echo HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n\
             258\r\n{chunk}\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
        );
        let chunked = raw(addr, chunked.as_bytes()).await;
        assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");

        let replica = h.gateway.snapshot();
        let replica = replica
            .variant("stable")
            .and_then(|v| v.replica(&up.url()))
            .expect("the replica");
        assert_eq!(
            replica.meter.requests.total(),
            0,
            "nothing reached the replica"
        );

        // At the limit: forwarded whole.
        let body = Bytes::from("b".repeat(1024));
        let fits = h.send(Method::POST, "/echo", &[], body.clone()).await;
        assert_eq!((fits.status, fits.body.len()), (200, 1024));
    });
}

#[test]
fn a_body_sent_too_slowly_gets_408_and_reaches_no_replica() {
    bounded(async {
        let up = Upstream::start("only").await;
        let mut config = Config::single([up.url()]);
        config.body_timeout_ms = 200;
        let h = Harness::start(config).await;
        // Ten bytes promised, one sent, then nothing: the connection would
        // otherwise be held for as long as the client likes.
        let reply = raw(
            h.server.local_addr(),
            b"POST /echo HTTP/1.1\r\nhost: gw\r\ncontent-length: 10\r\n\r\na",
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("did not arrive within 200 ms"), "{reply}");
        let snapshot = h.gateway.snapshot();
        let replica = snapshot
            .variant("stable")
            .and_then(|v| v.replica(&up.url()))
            .expect("the replica");
        assert_eq!(replica.meter.requests.total(), 0);
        // The gateway still serves.
        assert_eq!(h.get("/", &[]).await.status, 200);
    });
}

#[test]
fn a_slow_replica_gets_504_at_the_upstream_timeout() {
    bounded(async {
        let up = Upstream::start("only").await;
        let mut config = Config::single([up.url()]);
        config.upstream_timeout_ms = 200;
        let h = Harness::start(config).await;
        let slow = h.get("/slow/5000", &[]).await;
        assert_eq!(slow.status, 504);
        assert!(
            slow.body.contains("did not answer within 200 ms"),
            "{slow:?}"
        );
        assert_eq!(h.get("/", &[]).await.status, 200);
    });
}

#[test]
fn malformed_requests_get_400_and_the_gateway_keeps_serving() {
    bounded(async {
        let up = Upstream::start("only").await;
        let h = Harness::start(Config::single([up.url()])).await;
        let addr = h.server.local_addr();
        for garbage in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nhost: gw\r\nno colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: gw\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
            b"GET / HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let reply = raw(addr, garbage).await;
            assert!(
                reply.starts_with("HTTP/1.1 400"),
                "{:?} got {reply:?}",
                String::from_utf8_lossy(garbage)
            );
        }
        // Half a request, then the client goes away.
        drop(
            raw(
                addr,
                b"POST /echo HTTP/1.1\r\nhost: gw\r\ncontent-length: 10\r\n\r\nhal",
            )
            .await,
        );
        let reply = h.get("/", &[]).await;
        assert_eq!((reply.status, reply.upstream()), (200, "only"));
    });
}

#[test]
fn reconfiguration_mid_traffic_fails_no_request() {
    bounded(async {
        let (a1, a2, b1, b2) = (
            Upstream::start("a1").await,
            Upstream::start("a2").await,
            Upstream::start("b1").await,
            Upstream::start("b2").await,
        );
        for up in [&a1, &a2, &b1, &b2] {
            up.delay_ms.store(5, Ordering::Relaxed);
        }
        let h = Harness::start(Config::single([a1.url(), a2.url()])).await;

        // A request in flight on a replica that the next config drops.
        let long = {
            let client = h.client.clone();
            let url = format!("http://{}/slow/400", h.server.local_addr());
            tokio::spawn(async move {
                let req = Request::get(url).body(Full::new(Bytes::new()));
                let response = client
                    .request(req.expect("a request"))
                    .await
                    .expect("answered");
                let upstream = response.headers()["x-upstream"]
                    .to_str()
                    .expect("printable")
                    .to_owned();
                (response.status().as_u16(), upstream)
            })
        };
        while h.gateway.snapshot().variants[0].meter.in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let configs = [
            Config::weighted([("stable", 1, vec![b1.url()])]),
            Config::weighted([
                ("stable", 1, vec![a1.url()]),
                ("canary", 1, vec![b1.url(), b2.url()]),
            ]),
            Config::weighted([("blue", 1, vec![a2.url()]), ("green", 0, vec![b2.url()])]),
            Config::weighted([
                ("blue", 0, vec![a2.url()]),
                ("green", 1, vec![b1.url(), b2.url()]),
            ]),
            Config::weighted([
                ("stable", 9, vec![a1.url(), a2.url()]),
                ("canary", 1, vec![b2.url()]),
            ]),
        ];
        let traffic = h.tally("/", 400, 4);
        let swaps = async {
            for round in 0..30 {
                h.gateway
                    .set_config(configs[round % configs.len()].clone())
                    .expect("a valid config");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // An invalid config changes nothing.
            let before = h.gateway.config();
            let invalid = Config::weighted([("x", 1, vec!["ftp://nowhere".to_owned()])]);
            let err = h.gateway.set_config(invalid).expect_err("ftp is refused");
            assert!(err.to_string().contains("only http://"), "{err}");
            assert_eq!(h.gateway.config(), before);
        };
        let (tally, ()) = tokio::join!(traffic, swaps);
        let failed: usize = tally
            .iter()
            .filter(|((s, _), _)| *s != 200)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(failed, 0, "{tally:?}");
        assert_eq!(tally.values().sum::<usize>(), 400);
        assert!(tally.len() >= 3, "traffic followed the configs: {tally:?}");

        // It finished on the replica the config it started with chose.
        let (status, upstream) = long.await.expect("the long request");
        assert_eq!(status, 200);
        assert!(upstream == "a1" || upstream == "a2", "{upstream}");

        h.gateway
            .set_config(Config::weighted([("green", 1, vec![b2.url()])]))
            .expect("valid");
        let tally = h.tally("/", 20, 2).await;
        assert_eq!(ok_from(&tally, "b2"), 20, "{tally:?}");
        let snapshot = h.gateway.snapshot();
        assert!(!snapshot.variant("stable").expect("kept").active);
        assert!(snapshot.variant("green").expect("kept").active);
    });
}

/// Run `promtool check metrics` on `text`; panics with its findings.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    // From PATH, as scripts/test-deps (the README's test command) finds
    // it and installs it when missing.
    let promtool = "promtool";
    assert!(
        Command::new(promtool).arg("--version").output().is_ok(),
        "promtool is missing: run scripts/test-deps, or apt-get install prometheus"
    );
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool finished");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics: {findings}\n--- exposition ---\n{text}"
    );
}

#[test]
fn measurements_per_variant_and_replica_in_snapshot_and_prometheus_text() {
    bounded(async {
        let (s1, c1) = (Upstream::start("s1").await, Upstream::start("c1").await);
        let mut config =
            Config::weighted([("stable", 1, vec![s1.url()]), ("canary", 0, vec![c1.url()])]);
        config.routes = vec![Route {
            header: Some("x-variant: canary".to_owned()),
            cookie: None,
            variant: "canary".to_owned(),
        }];
        let h = Harness::start(config).await;
        for _ in 0..20 {
            assert_eq!(h.get("/", &[]).await.status, 200);
        }
        for _ in 0..5 {
            assert_eq!(h.get("/status/404", &[]).await.status, 404);
        }
        for _ in 0..2 {
            assert_eq!(h.get("/status/500", &[]).await.status, 500);
        }
        let canary = [("x-variant", "canary")];
        for _ in 0..10 {
            assert_eq!(h.get("/", &canary).await.status, 200);
        }
        let body = Bytes::from("p".repeat(100));
        assert_eq!(
            h.send(Method::POST, "/echo", &canary, body).await.status,
            200
        );

        // A response is recorded when its body has been sent: wait for the
        // last one (bounded by the test's timeout).
        let snapshot = loop {
            let s = h.gateway.snapshot();
            if s.variants.iter().all(|v| v.meter.in_flight == 0) {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let stable = snapshot.variant("stable").expect("stable");
        let r = &stable.meter.requests;
        assert_eq!(
            (r.success, r.client_error, r.server_error, r.total()),
            (20, 5, 2, 27)
        );
        assert_eq!((stable.meter.bytes_in, stable.meter.bytes_out), (0, 27 * 2));
        assert_eq!(stable.meter.latency.count, 27);
        assert_eq!(stable.meter.latency_histogram.len(), 27);
        assert!(stable.meter.latency.min_us > 0);
        assert!(stable.meter.latency.min_us <= stable.meter.latency.p50_us);
        assert!(stable.meter.latency.p99_us <= stable.meter.latency.max_us);
        assert_eq!(
            stable.meter.latency_buckets.len(),
            LATENCY_BUCKETS_SECONDS.len()
        );
        let replica = stable.replica(&s1.url()).expect("s1");
        assert_eq!(replica.meter.requests.total(), 27);
        assert!(!replica.ejected && replica.active);

        let canary = snapshot.variant("canary").expect("canary");
        assert_eq!(canary.meter.requests.success, 11);
        assert_eq!(
            (canary.meter.bytes_in, canary.meter.bytes_out),
            (100, 10 * 2 + 100)
        );
        let c1_meter = &canary.replica(&c1.url()).expect("c1").meter;
        assert_eq!((c1_meter.bytes_in, c1_meter.bytes_out), (100, 120));

        let json = serde_json::to_value(&snapshot).expect("serializable");
        assert_eq!(json["variants"][0]["name"], "stable");
        assert_eq!(json["variants"][0]["meter"]["requests"]["client_error"], 5);
        assert_eq!(json["variants"][1]["replicas"][0]["meter"]["bytes_in"], 100);

        let text = h.gateway.prometheus_text();
        for line in [
            "# TYPE mlops_gateway_requests_total counter",
            "mlops_gateway_requests_total{variant=\"stable\",code=\"2xx\"} 20",
            "mlops_gateway_requests_total{variant=\"stable\",code=\"4xx\"} 5",
            "mlops_gateway_requests_total{variant=\"canary\",code=\"2xx\"} 11",
            "mlops_gateway_request_bytes_total{variant=\"canary\"} 100",
            "# TYPE mlops_gateway_request_duration_seconds histogram",
            "mlops_gateway_request_duration_seconds_bucket{variant=\"stable\",le=\"+Inf\"} 27",
            "mlops_gateway_request_duration_seconds_count{variant=\"stable\"} 27",
            "mlops_gateway_requests_in_flight{variant=\"stable\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        let replica_line = format!(
            "mlops_gateway_replica_requests_total{{variant=\"stable\",replica=\"{}\",code=\"5xx\"}} 2",
            s1.url()
        );
        assert!(text.lines().any(|l| l == replica_line), "{text}");
        promtool_check(&text);
    });
}

/// An SLO threshold added as a bucket bound (live, after requests were
/// served) counts every request since the start, from the exact histogram.
#[test]
fn an_added_latency_bucket_counts_from_the_exact_histogram() {
    bounded(async {
        let s1 = Upstream::start("s1").await;
        let h = Harness::start(Config::single([s1.url()])).await;
        for _ in 0..6 {
            assert_eq!(h.get("/", &[]).await.status, 200);
        }
        s1.delay_ms.store(150, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(h.get("/", &[]).await.status, 200);
        }
        let line = "mlops_gateway_request_duration_seconds_bucket{variant=\"stable\",le=\"0.12\"}";
        let text = h.gateway.prometheus_text();
        assert!(!text.contains(line), "{text}");
        let mut config = (*h.gateway.config()).clone();
        config.latency_buckets_us = vec![120_000];
        h.gateway.set_config(config).expect("valid");
        // Settled: every response has been recorded.
        while h.gateway.snapshot().variants[0].meter.in_flight > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let text = h.gateway.prometheus_text();
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"));
        assert_eq!(count.trim(), "6", "{text}");
        assert!(text.contains("le=\"0.25\"} 10"), "{text}");
        promtool_check(&text);
        // Bounds the exact histogram cannot hold are refused.
        let mut bad = (*h.gateway.config()).clone();
        bad.latency_buckets_us = vec![0];
        assert!(h.gateway.set_config(bad).is_err());
    });
}

/// The OpenMetrics form names each latency bucket's latest request: the
/// slow request's id is on the bucket it fell in, and the text ends with
/// `# EOF` (the 0.0.4 form has no exemplars).
#[test]
fn openmetrics_exemplars_name_the_requests_in_each_bucket() {
    bounded(async {
        let s1 = Upstream::start("s1").await;
        let h = Harness::start(Config::single([s1.url()])).await;
        assert_eq!(h.get("/", &[]).await.status, 200);
        s1.delay_ms.store(300, Ordering::Relaxed);
        let slow = h.get("/", &[("x-request-id", "slow-one")]).await;
        assert_eq!(slow.status, 200);
        while h.gateway.snapshot().variants[0].meter.in_flight > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let text = mlops_release::gateway::metrics::openmetrics_text(&h.gateway.snapshot());
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE mlops_gateway_requests counter\n"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(
                    "mlops_gateway_request_duration_seconds_bucket{variant=\"stable\",le=\"0.5\"}",
                )
            })
            .unwrap_or_else(|| panic!("no 0.5 bucket in\n{text}"));
        let exemplar = line.split_once(" # ").map(|x| x.1).unwrap_or_default();
        assert!(
            exemplar.starts_with("{request_id=\"slow-one\"} 0.3"),
            "{line}"
        );
        // The fast request is in a lower bucket, with its generated id.
        let fast_id = text
            .lines()
            .filter(|l| l.contains("duration_seconds_bucket{variant=\"stable\",le=\"0.0"))
            .find_map(|l| l.split_once("{request_id=\"").map(|x| x.1.to_owned()))
            .unwrap_or_else(|| panic!("no exemplar for the fast request in\n{text}"));
        assert_eq!(
            fast_id.split('"').next().map(str::len),
            Some(32),
            "{fast_id}"
        );
        assert!(!h.gateway.prometheus_text().contains(" # {"));
    });
}

/// A variant's version labels its series and is kept when a later config
/// moves the same replicas without naming it (a promotion's last step).
#[test]
fn versions_label_the_series_and_follow_their_replicas() {
    bounded(async {
        let (s1, c1) = (Upstream::start("s1").await, Upstream::start("c1").await);
        let mut config =
            Config::weighted([("stable", 1, vec![s1.url()]), ("canary", 1, vec![c1.url()])]);
        config.variants[0].version = Some("iris@1".to_owned());
        config.variants[1].version = Some("iris@2".to_owned());
        let h = Harness::start(config).await;
        for _ in 0..4 {
            assert_eq!(h.get("/", &[]).await.status, 200);
        }
        let text = h.gateway.prometheus_text();
        assert!(
            text.contains(
                "mlops_gateway_requests_total{variant=\"canary\",version=\"iris@2\",code=\"2xx\"}"
            ),
            "{text}"
        );
        promtool_check(&text);
        // Everything to the candidate's replicas, now as stable, unnamed.
        h.gateway
            .set_config(Config::single([c1.url()]))
            .expect("valid");
        let config = h.gateway.config();
        assert_eq!(config.variants[0].version.as_deref(), Some("iris@2"));
        let snapshot = h.gateway.snapshot();
        assert_eq!(
            snapshot
                .variant("stable")
                .and_then(|v| v.version.as_deref()),
            Some("iris@2")
        );
        // Replicas of two versions in one variant: no version is claimed.
        h.gateway
            .set_config(Config::single([s1.url(), c1.url()]))
            .expect("valid");
        assert_eq!(h.gateway.config().variants[0].version, None);
        let mut bad = Config::single([s1.url()]);
        bad.variants[0].version = Some("a\nb".to_owned());
        assert!(h.gateway.set_config(bad).is_err());
    });
}

/// A client that opens with HTTP/2's preface (h2c, prior knowledge) is
/// served over HTTP/2 — requests multiplexed on one connection, each
/// proxied to a replica over HTTP/1.1 with its `Host` from `:authority`
/// — and HTTP/1.1 clients on the same listener are unaffected.
#[test]
fn http2_clients_are_served_multiplexed_next_to_http1() {
    bounded(async {
        let (s1, s2) = (Upstream::start("s1").await, Upstream::start("s2").await);
        let h = Harness::start(Config::single([s1.url(), s2.url()])).await;
        let addr = h.server.local_addr();
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("an HTTP/2 handshake");
        tokio::spawn(conn);
        let mut calls = JoinSet::new();
        for i in 0..20 {
            let mut sender = sender.clone();
            calls.spawn(async move {
                let (method, path, body) = if i % 2 == 0 {
                    (Method::GET, "/slow/20", Bytes::new())
                } else {
                    (Method::POST, "/echo", Bytes::from(format!("payload {i}")))
                };
                let req = Request::builder()
                    .method(method)
                    .uri(format!("http://{addr}{path}"))
                    .body(Full::new(body.clone()))
                    .expect("a request");
                let r = sender.send_request(req).await.expect("an answer");
                assert_eq!(r.version(), hyper::Version::HTTP_2);
                let (parts, got) = r.into_parts();
                let got = got.collect().await.expect("a body").to_bytes();
                (i, parts.status, parts.headers, got, body)
            });
        }
        let mut upstreams = BTreeMap::new();
        while let Some(done) = calls.join_next().await {
            let (i, status, headers, got, sent) = done.expect("joined");
            assert_eq!(status, StatusCode::OK, "request {i}");
            assert!(headers.contains_key("x-request-id"), "{headers:?}");
            assert!(!headers.contains_key("connection"), "{headers:?}");
            assert!(!headers.contains_key("x-hop"), "{headers:?}");
            if i % 2 == 1 {
                assert_eq!(got, sent, "request {i}");
            }
            let upstream = headers["x-upstream"].to_str().unwrap().to_owned();
            *upstreams.entry(upstream).or_insert(0) += 1;
        }
        assert_eq!(upstreams.values().sum::<u32>(), 20, "{upstreams:?}");
        assert_eq!(upstreams.len(), 2, "both replicas served: {upstreams:?}");
        // The gateway's own answers are valid HTTP/2 too (its 413 closes
        // an HTTP/1.1 connection; HTTP/2 has no `Connection` header).
        let mut small = (*h.gateway.config()).clone();
        small.max_body_bytes = 16;
        h.gateway.set_config(small).expect("valid");
        let mut sender2 = sender.clone();
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/echo"))
            .body(Full::new(Bytes::from("x".repeat(100))))
            .expect("a request");
        let r = sender2.send_request(req).await.expect("an answer");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!r.headers().contains_key("connection"), "{:?}", r.headers());
        let mut config = (*h.gateway.config()).clone();
        config.max_body_bytes = 1 << 20;
        h.gateway.set_config(config).expect("valid");
        // HTTP/1.1 on the same listener, as before.
        let r = h.get("/", &[]).await;
        assert_eq!(r.status, 200);
        while h.gateway.snapshot().variants[0].meter.in_flight > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let snapshot = h.gateway.snapshot();
        assert_eq!(snapshot.variants[0].meter.requests.success, 21);
    });
}

#[test]
fn prometheus_label_values_are_escaped() {
    let meter = || MeterSnapshot {
        requests: Default::default(),
        in_flight: 0,
        bytes_in: 0,
        bytes_out: 0,
        latency: Default::default(),
        latency_sum_seconds: 0.0,
        latency_bounds: LATENCY_BUCKETS_SECONDS.to_vec(),
        latency_buckets: vec![0; LATENCY_BUCKETS_SECONDS.len()],
        exemplars: Vec::new(),
        latency_histogram: hdrhistogram::Histogram::new(3).expect("a histogram"),
    };
    let snapshot = MetricsSnapshot {
        variants: vec![VariantSnapshot {
            name: "odd \"name\" with \\ and\nnewline".to_owned(),
            active: true,
            version: Some("iris@\"3\"".to_owned()),
            meter: meter(),
            replicas: vec![ReplicaSnapshot {
                url: "http://[::1]:8080".to_owned(),
                active: true,
                meter: meter(),
                upstream_failures: 0,
                ejections: 0,
                ejected: false,
                health: ReplicaHealth::Unhealthy,
                health_checks_passed: 1,
                health_checks_failed: 2,
                in_rotation: false,
            }],
        }],
        shadows: vec![ShadowSnapshot {
            variant: "odd \"shadow\"".to_owned(),
            active: true,
            mirrored: 3,
            disagreed_numeric: 1,
            max_abs_difference: 0.25,
            recent_disagreements: vec![Disagreement {
                request_id: "r".to_owned(),
                kind: "numeric".to_owned(),
                reason: "$[0]: 1.25 where the primary has 1".to_owned(),
            }],
            ..ShadowSnapshot::default()
        }],
        predictions: None,
    };
    let text = prometheus_text(&snapshot);
    assert!(
        text.lines()
            .any(|l| l == r#"mlops_gateway_shadow_comparisons_total{variant="odd \"shadow\"",result="numeric"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"variant="odd \"name\" with \\ and\nnewline",version="iris@\"3\"""#),
        "{text}"
    );
    promtool_check(&text);
}

/// One request to the admin listener at `at`.
async fn admin_call(
    h: &Harness,
    at: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let url = format!("http://{at}{path}");
    call(
        &h.client,
        method,
        &url,
        headers,
        Bytes::from(body.to_owned()),
    )
    .await
}

#[test]
fn admin_api_reads_openly_and_changes_config_only_with_the_token() {
    bounded(async {
        let (old, new) = (Upstream::start("old").await, Upstream::start("new").await);
        let h = Harness::start(Config::single([old.url()])).await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let token = ensure_token_file(dir.path()).expect("a token");
        let outside = h
            .gateway
            .serve_admin("0.0.0.0:0".parse().expect("an address"), token.clone())
            .await
            .expect_err("a non-loopback admin listener is refused");
        assert!(
            matches!(outside, GatewayError::AdminNotLoopback(_)),
            "{outside}"
        );
        let admin = h
            .gateway
            .serve_admin("127.0.0.1:0".parse().expect("an address"), token.clone())
            .await
            .expect("the admin listener");
        let at = admin.local_addr();
        assert_eq!(h.get("/", &[]).await.upstream(), "old");

        let metrics = admin_call(&h, at, Method::GET, "/metrics", &[], "").await;
        assert_eq!(metrics.status, 200);
        assert!(
            metrics
                .header("content-type")
                .starts_with("text/plain; version=0.0.4")
        );
        assert!(
            metrics
                .body
                .contains("mlops_gateway_requests_total{variant=\"stable\",code=\"2xx\"} 1")
        );
        promtool_check(&metrics.body);

        let shown = admin_call(&h, at, Method::GET, "/config", &[], "").await;
        assert_eq!(shown.status, 200);
        let shown: Config = serde_json::from_str(&shown.body).expect("the config as JSON");
        assert_eq!(shown, *h.gateway.config());
        let snapshot = admin_call(&h, at, Method::GET, "/snapshot", &[], "").await;
        let snapshot: serde_json::Value = serde_json::from_str(&snapshot.body).expect("JSON");
        assert_eq!(snapshot["variants"][0]["meter"]["requests"]["success"], 1);

        let wanted = serde_json::to_string(&Config::weighted([("green", 1, vec![new.url()])]))
            .expect("JSON");
        let good = format!("Bearer {}", token.expose());
        let wrong = format!("Bearer {}", "0".repeat(64));
        let short = format!("Bearer {}", &token.expose()[..63]);
        let basic = format!("Basic {}", token.expose());
        for auth in [
            None,
            Some(wrong.as_str()),
            Some(short.as_str()),
            Some(basic.as_str()),
            Some("Bearer"),
        ] {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
            let refused = admin_call(&h, at, Method::PUT, "/config", &headers, &wanted).await;
            assert_eq!(refused.status, 401, "{auth:?}: {refused:?}");
            assert_eq!(refused.header("www-authenticate"), "Bearer");
            assert_eq!(*h.gateway.config(), shown, "{auth:?} changed nothing");
        }
        assert_eq!(h.get("/", &[]).await.upstream(), "old");

        let auth = [("authorization", good.as_str())];
        let garbled = admin_call(&h, at, Method::PUT, "/config", &auth, "{not json").await;
        assert_eq!(garbled.status, 400, "{garbled:?}");
        let invalid =
            r#"{"variants": [{"name": "x", "weight": 0, "replicas": ["http://127.0.0.1:1"]}]}"#;
        let invalid = admin_call(&h, at, Method::PUT, "/config", &auth, invalid).await;
        assert_eq!(invalid.status, 422, "{invalid:?}");
        assert!(
            invalid.body.contains("every variant has weight 0"),
            "{invalid:?}"
        );
        assert_eq!(*h.gateway.config(), shown);

        // The scheme is case-insensitive.
        let lower = format!("bearer {}", token.expose());
        let changed = admin_call(
            &h,
            at,
            Method::PUT,
            "/config",
            &[("authorization", lower.as_str())],
            &wanted,
        )
        .await;
        assert_eq!(changed.status, 200, "{changed:?}");
        assert_eq!(h.gateway.config().variants[0].name, "green");
        assert_eq!(h.get("/", &[]).await.upstream(), "new");

        assert_eq!(
            admin_call(&h, at, Method::DELETE, "/config", &auth, "")
                .await
                .status,
            405
        );
        assert_eq!(
            admin_call(&h, at, Method::GET, "/nothing", &[], "")
                .await
                .status,
            404
        );
        admin.shutdown().await;
    });
}

#[test]
fn the_token_file_is_made_once_private_and_checked() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nested = dir.path().join("release");
    let token = ensure_token_file(&nested).expect("a token");
    let path = nested.join(TOKEN_FILE);
    let meta = std::fs::metadata(&path).expect("the token file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).expect("readable");
    assert_eq!(text, format!("{}\n", token.expose()));
    assert_eq!(token.expose().len(), 64);
    assert!(token.expose().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    let again = ensure_token_file(&nested).expect("the same token");
    assert_eq!(again.expose(), token.expose());
    assert_eq!(
        std::fs::read_dir(&nested).expect("the directory").count(),
        1,
        "no staging file left behind"
    );
    let other = ensure_token_file(dir.path().join("other").as_path()).expect("another");
    assert_ne!(other.expose(), token.expose());

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let open = ensure_token_file(&nested).expect_err("a world-readable token is refused");
    assert!(
        format!("{:#}", ErrorChain(&open)).contains("chmod 600"),
        "{open:?}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&path, "short\n").expect("overwrite");
    ensure_token_file(&nested).expect_err("a malformed token is refused");
}

/// An error with its sources, `: `-separated.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// A replica with a fixed answer: `status` and `body` after `delay_ms`,
/// `x-upstream: NAME`. It keeps the request id and body of every request
/// it got, and counts the answers it has finished sending.
struct Fixed {
    addr: SocketAddr,
    /// `(x-request-id, body)` of each request, in arrival order.
    seen: Arc<Mutex<Vec<(String, String)>>>,
    answered: Arc<AtomicU64>,
    _task: JoinHandle<()>,
}

impl Fixed {
    async fn start(name: &str, status: u16, body: &str, delay_ms: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(AtomicU64::new(0));
        let (name, body) = (name.to_owned(), Bytes::from(body.to_owned()));
        let (s, a) = (seen.clone(), answered.clone());
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (name, body, s, a) = (name.clone(), body.clone(), s.clone(), a.clone());
                connections.spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (name, body, s, a) = (name.clone(), body.clone(), s.clone(), a.clone());
                        async move {
                            let id = req
                                .headers()
                                .get("x-request-id")
                                .map_or("-", |v| v.to_str().unwrap_or("?"))
                                .to_owned();
                            let got = req.into_body().collect().await.map(|b| b.to_bytes());
                            let got =
                                String::from_utf8_lossy(&got.unwrap_or_default()).into_owned();
                            s.lock().expect("not poisoned").push((id, got));
                            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                            let mut response = Response::new(Full::new(body));
                            *response.status_mut() =
                                StatusCode::from_u16(status).expect("a status");
                            response
                                .headers_mut()
                                .insert("x-upstream", name.parse().expect("a name"));
                            a.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            answered,
            _task: task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

/// `primary` (weight 1) and shadow variants of weight 0, `(name, url,
/// shadow)`.
fn shadowed(primary: Vec<String>, shadows: Vec<(&str, String, Shadow)>) -> Config {
    let mut variants = vec![("stable", 1, primary)];
    variants.extend(
        shadows
            .iter()
            .map(|(name, url, _)| (*name, 0, vec![url.clone()])),
    );
    let mut config = Config::weighted(variants);
    config.shadows = shadows.into_iter().map(|(_, _, s)| s).collect();
    config
}

/// The shadow `name`'s counters once every mirror it started has ended
/// (bounded by the test's timeout).
async fn settled(h: &Harness, name: &str) -> ShadowSnapshot {
    loop {
        let s = h.gateway.snapshot();
        let shadow = s.shadow(name).expect("a shadow").clone();
        if shadow.finished() == shadow.mirrored {
            return shadow;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn share_one_mirrors_every_request_and_the_shadows_answer_never_reaches_the_client() {
    bounded(async {
        let s1 = Upstream::start("s1").await;
        let shadow = Fixed::start("shadow", 200, "the shadow's answer", 0).await;
        let mut config = shadowed(
            vec![s1.url()],
            vec![("shadow", shadow.url(), Shadow::new("shadow", 1.0))],
        );
        config.max_body_bytes = 1000;
        let h = Harness::start(config).await;
        let mut sent = Vec::new();
        for i in 0..20 {
            let id = format!("req-{i}");
            let body = format!("payload {i}");
            let reply = h
                .send(
                    Method::POST,
                    "/echo",
                    &[("x-request-id", &id)],
                    Bytes::from(body.clone()),
                )
                .await;
            assert_eq!(
                (reply.status, reply.upstream(), reply.body.as_str()),
                (200, "s1", body.as_str())
            );
            assert_eq!(reply.header("x-request-id"), id);
            sent.push((id, body));
        }
        // Over the body limit: refused, never mirrored.
        let big = h
            .send(Method::POST, "/echo", &[], Bytes::from("x".repeat(2000)))
            .await;
        assert_eq!(big.status, 413);

        let stats = settled(&h, "shadow").await;
        assert_eq!((stats.mirrored, stats.skipped, stats.failed), (20, 0, 0));
        assert_eq!((stats.compared, stats.uncompared), (20, 0));
        assert_eq!(
            (stats.agreed, stats.disagreed_body, stats.disagreed()),
            (0, 20, 20)
        );
        assert!(stats.active);
        // Every request reached the shadow once, with its id and body.
        let mut seen = shadow.seen();
        seen.sort();
        sent.sort();
        assert_eq!(seen, sent);
        let ids: Vec<&str> = stats
            .recent_disagreements
            .iter()
            .map(|d| d.request_id.as_str())
            .collect();
        assert_eq!(ids.len(), 20);
        assert!(ids.contains(&"req-0") && ids.contains(&"req-19"), "{ids:?}");
        assert!(stats.recent_disagreements.iter().all(|d| d.kind == "body"));

        let snapshot = h.gateway.snapshot();
        let meter = &snapshot.variant("shadow").expect("shadow").meter;
        assert_eq!(meter.requests.success, 20);
        let json = serde_json::to_value(&snapshot).expect("serializable");
        assert_eq!(json["shadows"][0]["variant"], "shadow");
        assert_eq!(json["shadows"][0]["disagreed_body"], 20);
        let text = h.gateway.prometheus_text();
        for line in [
            "mlops_gateway_shadow_mirrored_total{variant=\"shadow\"} 20",
            "mlops_gateway_shadow_compared_total{variant=\"shadow\"} 20",
            "mlops_gateway_shadow_comparisons_total{variant=\"shadow\",result=\"body\"} 20",
            "mlops_gateway_shadow_skipped_total{variant=\"shadow\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        promtool_check(&text);
    });
}

#[test]
fn share_zero_mirrors_nothing() {
    bounded(async {
        let s1 = Upstream::start("s1").await;
        let shadow = Fixed::start("shadow", 200, "s1", 0).await;
        let config = shadowed(
            vec![s1.url()],
            vec![("shadow", shadow.url(), Shadow::new("shadow", 0.0))],
        );
        let h = Harness::start(config).await;
        let tally = h.tally("/", 50, 2).await;
        assert_eq!(ok_from(&tally, "s1"), 50, "{tally:?}");
        // A mirror is counted before the client has its answer.
        let stats = h
            .gateway
            .snapshot()
            .shadow("shadow")
            .expect("a shadow")
            .clone();
        assert_eq!((stats.mirrored, stats.skipped), (0, 0));
        assert!(shadow.seen().is_empty());
    });
}

#[test]
fn a_slow_shadow_never_delays_the_client_and_a_full_one_is_skipped() {
    bounded(async {
        let s1 = Upstream::start("s1").await;
        // Answers what the primary answers, 2 s late.
        let shadow = Fixed::start("shadow", 200, "s1", 2_000).await;
        let mut mirror = Shadow::new("shadow", 1.0);
        mirror.max_in_flight = 1;
        let config = shadowed(vec![s1.url()], vec![("shadow", shadow.url(), mirror)]);
        let h = Harness::start(config).await;
        for i in 0..3 {
            let reply = h.get("/", &[]).await;
            assert_eq!((reply.status, reply.upstream()), (200, "s1"));
            // The client has its whole answer and the shadow has not
            // answered yet: nobody waited for it.
            assert_eq!(shadow.answered.load(Ordering::SeqCst), 0, "request {i}");
            let stats = h
                .gateway
                .snapshot()
                .shadow("shadow")
                .expect("a shadow")
                .clone();
            assert_eq!(stats.finished(), 0, "request {i}: {stats:?}");
            // One mirror outstanding at most: the later copies are skipped.
            assert_eq!((stats.mirrored, stats.skipped), (1, i), "{stats:?}");
        }
        let stats = settled(&h, "shadow").await;
        assert_eq!((stats.compared, stats.agreed), (1, 1), "{stats:?}");
        assert_eq!(shadow.answered.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_failing_shadow_never_affects_the_client_or_the_primary() {
    bounded(async {
        let s1 = Upstream::start("s1").await;
        let broken = Fixed::start("broken", 500, "oops", 0).await;
        let gone = Upstream::start("gone").await;
        let gone_url = gone.url();
        gone.kill().await;
        let mut late = Shadow::new("late", 1.0);
        late.timeout_ms = 100;
        let never = Fixed::start("late", 200, "s1", 5_000).await;
        let config = shadowed(
            vec![s1.url()],
            vec![
                ("broken", broken.url(), Shadow::new("broken", 1.0)),
                ("gone", gone_url.clone(), Shadow::new("gone", 1.0)),
                ("late", never.url(), late),
            ],
        );
        let h = Harness::start(config).await;
        let tally = h.tally("/", 10, 1).await;
        assert_eq!(ok_from(&tally, "s1"), 10, "{tally:?}");
        for name in ["broken", "gone", "late"] {
            let stats = settled(&h, name).await;
            assert_eq!(
                (stats.mirrored, stats.failed, stats.compared),
                (10, 10, 0),
                "{name}: {stats:?}"
            );
        }
        let snapshot = h.gateway.snapshot();
        let primary = snapshot
            .variant("stable")
            .expect("stable")
            .replica(&s1.url())
            .expect("s1");
        assert_eq!((primary.upstream_failures, primary.ejected), (0, false));
        assert_eq!(primary.meter.requests.success, 10);
        // The shadow's own replica is ejected: nothing listens there.
        let gone = snapshot.variant("gone").expect("gone");
        assert!(gone.replica(&gone_url).expect("gone's replica").ejections >= 1);
    });
}

#[test]
fn numeric_outputs_within_the_tolerance_agree_and_beyond_it_disagree() {
    bounded(async {
        let oip = |version: &str, data: &str| {
            format!(
                r#"{{"model_name":"m","model_version":"{version}","outputs":[{{"name":"y","shape":[3],"datatype":"FP64","data":{data}}}]}}"#
            )
        };
        let primary = Fixed::start("p", 200, &oip("1", "[0.25, 10.0, -3.0]"), 0).await;
        let near = Fixed::start("near", 200, &oip("2", "[0.2505, 10.0, -3.0]"), 0).await;
        let far = Fixed::start("far", 200, &oip("2", "[0.25, 10.5, -3.0]"), 0).await;
        let missing = Fixed::start("missing", 404, "no such model", 0).await;
        let tolerant = |name: &str| {
            let mut s = Shadow::new(name, 1.0);
            s.tolerance = Tolerance {
                absolute: 1e-3,
                relative: 1e-3,
            };
            s
        };
        let config = shadowed(
            vec![primary.url()],
            vec![
                ("near", near.url(), tolerant("near")),
                ("far", far.url(), tolerant("far")),
                ("missing", missing.url(), tolerant("missing")),
            ],
        );
        let h = Harness::start(config).await;
        for i in 0..5 {
            let id = format!("n-{i}");
            let reply = h.get("/v2/models/m/infer", &[("x-request-id", &id)]).await;
            assert_eq!((reply.status, reply.upstream()), (200, "p"));
            assert!(
                reply.body.contains(r#""model_version":"1""#),
                "{}",
                reply.body
            );
        }
        let near = settled(&h, "near").await;
        assert_eq!((near.compared, near.agreed, near.disagreed()), (5, 5, 0));
        assert!((near.max_abs_difference - 5e-4).abs() < 1e-12, "{near:?}");
        assert!((near.max_rel_difference - 2e-3).abs() < 1e-12, "{near:?}");
        assert!(near.recent_disagreements.is_empty());

        let far = settled(&h, "far").await;
        assert_eq!((far.compared, far.agreed, far.disagreed_numeric), (5, 0, 5));
        assert!((far.max_abs_difference - 0.5).abs() < 1e-12, "{far:?}");
        assert!((far.max_rel_difference - 0.05).abs() < 1e-12, "{far:?}");
        let last = far.recent_disagreements.last().expect("recorded");
        assert_eq!(
            (last.request_id.as_str(), last.kind.as_str()),
            ("n-4", "numeric")
        );
        assert!(
            last.reason
                .starts_with("$.outputs[0].data[1]: 10.5 where the primary has 10"),
            "{last:?}"
        );

        let missing = settled(&h, "missing").await;
        assert_eq!((missing.compared, missing.disagreed_status), (5, 5));
        promtool_check(&h.gateway.prometheus_text());
    });
}

#[test]
fn shadow_config_errors_are_all_reported() {
    let mut config = Config::weighted([
        ("stable", 1, vec!["http://127.0.0.1:1".to_owned()]),
        ("weighted", 2, vec!["http://127.0.0.1:2".to_owned()]),
        ("routed", 0, vec!["http://127.0.0.1:3".to_owned()]),
    ]);
    config.routes = vec![Route {
        header: Some("x-variant: routed".to_owned()),
        cookie: None,
        variant: "routed".to_owned(),
    }];
    let mut bad = Shadow::new("routed", 1.5);
    bad.tolerance.absolute = -1.0;
    bad.timeout_ms = 0;
    bad.max_in_flight = 0;
    config.shadows = vec![
        Shadow::new("weighted", 0.5),
        bad,
        Shadow::new("nope", 0.1),
        Shadow::new("weighted", 0.1),
    ];
    let Err(GatewayError::InvalidConfig(errors)) = Gateway::new(config) else {
        panic!("an invalid config")
    };
    assert_eq!(
        errors,
        [
            r#"shadows[0]: shadow variant "weighted" must have weight 0, not 2"#,
            r#"shadows[1]: shadow variant "routed" is the target of a route"#,
            "shadows[1]: share 1.5 is not in [0, 1]",
            "shadows[1]: tolerance absolute -1 and relative 0 must be finite and at least 0",
            "shadows[1]: timeout-ms must be above 0",
            "shadows[1]: max-in-flight must be above 0",
            r#"shadows[2]: unknown variant "nope""#,
            r#"shadows[3]: shadow variant "weighted" must have weight 0, not 2"#,
            r#"shadows[3]: variant "weighted" is shadowed twice"#,
        ]
    );
    // The only variant cannot be a shadow; keys are kebab-case.
    let config: Config = serde_json::from_str(
        r#"{"variants": [{"name": "s", "weight": 0, "replicas": ["http://127.0.0.1:1"]}],
            "shadows": [{"variant": "s", "share": 1, "tolerance": {"absolute": 1e-6},
                         "timeout-ms": 100, "max-in-flight": 2}]}"#,
    )
    .expect("a config's JSON");
    let Err(GatewayError::InvalidConfig(errors)) = Gateway::new(config) else {
        panic!("an invalid config")
    };
    assert_eq!(
        errors,
        [
            "every variant has weight 0: unrouted requests would have nowhere to go",
            r#"shadows[0]: "s" is the only variant: a shadow needs a primary to copy"#,
        ]
    );
}
