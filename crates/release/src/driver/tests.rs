//! The driver against real HTTP servers on loopback, started in each test.
//!
//! Assertions are on counts and orderings, and on lower bounds a slower
//! machine can only make larger (a stall shows in latency at least as long
//! as the stall), never on how fast anything ran. Every test is bounded by
//! [`bounded`] and by its requests' `max_requests`.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::schedule::{Arrivals, Schedule};
use super::tally::{Outcome, Tally};
use super::*;

/// Runs a test body, failing it if it takes longer than 30 s.
async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("the test ends within 30 s")
}

/// How the test server answers.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// 200, echoing the request body.
    Echo,
    /// This status, empty body.
    Status(u16),
    /// Echo, but the request that arrives `index`th (from 0) waits `stall`
    /// first.
    StallAt { index: usize, stall: Duration },
    /// Every request waits this long before its echo.
    Sleep(Duration),
    /// 200 with a body of this many bytes.
    Large(usize),
    /// Echo, but the whole server freezes for the last `pause` of every
    /// `every` since it started: a request arriving then is answered when
    /// the freeze ends.
    Freeze { every: Duration, pause: Duration },
}

/// A server on 127.0.0.1 that records what it received; stopped on drop.
struct TestServer {
    addr: SocketAddr,
    /// Arrival time and body of every request, in arrival order.
    seen: Arc<Mutex<Vec<(Instant, Bytes)>>>,
    /// The client address of every connection accepted.
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TestServer {
    async fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let peers = Arc::new(Mutex::new(HashSet::new()));
        let accepted = Arc::clone(&peers);
        let started = Instant::now();
        let accept = tokio::spawn(async move {
            // Dropped with the accept task: aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                accepted.lock().unwrap().insert(peer);
                let recorded = Arc::clone(&recorded);
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let recorded = Arc::clone(&recorded);
                    async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let index = {
                            let mut seen = recorded.lock().unwrap();
                            seen.push((Instant::now(), body.clone()));
                            seen.len() - 1
                        };
                        Ok::<_, hyper::Error>(answer(reply, index, body, started).await)
                    }
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            peers,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v2/models/m/infer", self.addr)
    }

    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn bodies(&self) -> Vec<Bytes> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

async fn answer(
    reply: Reply,
    index: usize,
    body: Bytes,
    started: Instant,
) -> Response<Full<Bytes>> {
    let echo = |body| Response::new(Full::new(body));
    match reply {
        Reply::Echo => echo(body),
        Reply::Status(status) => {
            let mut response = echo(Bytes::new());
            *response.status_mut() = status.try_into().unwrap();
            response
        }
        Reply::StallAt { index: at, stall } => {
            if index == at {
                tokio::time::sleep(stall).await;
            }
            echo(body)
        }
        Reply::Sleep(wait) => {
            tokio::time::sleep(wait).await;
            echo(body)
        }
        Reply::Large(len) => echo(Bytes::from(vec![b'x'; len])),
        Reply::Freeze { every, pause } => {
            let into = started.elapsed().as_nanos() % every.as_nanos();
            let thaw = every.as_nanos() - into;
            if thaw <= pause.as_nanos() {
                tokio::time::sleep(Duration::from_nanos(thaw as u64)).await;
            }
            echo(body)
        }
    }
}

/// `n` distinct JSON bodies.
fn samples(n: usize) -> Samples {
    Samples::from_bodies((0..n).map(|i| Bytes::from(format!("{{\"sample\":{i}}}")))).unwrap()
}

fn settings(url: String, rate: f64, millis: u64, max_requests: u64) -> DriverSettings {
    DriverSettings::new(url, rate, Duration::from_millis(millis), max_requests)
}

/// Checks what holds for every report: outcomes add up, buckets cover
/// consecutive seconds and add up to the totals.
fn check_consistent(run: &TrafficRun) {
    let r = &run.report;
    let status = &r.status;
    let responses = status.informational
        + status.success
        + status.redirection
        + status.client_error
        + status.server_error;
    let e = &r.errors_by_kind;
    assert_eq!(r.requests, responses + e.connect + e.timeout + e.transport);
    assert_eq!(r.errors, e.total());
    assert_eq!(run.latency.len(), responses);
    assert_eq!(r.latency_ms.map_or(0, |l| l.count), responses);
    for (i, bucket) in r.per_second.iter().enumerate() {
        assert_eq!(bucket.second, i as u64, "buckets are consecutive seconds");
    }
    let bucketed: u64 = r.per_second.iter().map(|b| b.requests).sum();
    assert_eq!(bucketed, r.requests);
    let bucketed_errors: u64 = r.per_second.iter().map(|b| b.errors.total()).sum();
    assert_eq!(bucketed_errors, r.errors);
    let bucketed_latencies: u64 = r
        .per_second
        .iter()
        .filter_map(|b| b.latency_ms.map(|l| l.count))
        .sum();
    assert_eq!(bucketed_latencies, responses);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_exactly_the_planned_requests_never_ahead_of_schedule() {
    bounded(async {
        // (rate, duration in ms, max requests, planned)
        for (rate, millis, max, planned) in [(200.0, 250, 1000, 50), (200.0, 250, 20, 20)] {
            let server = TestServer::start(Reply::Echo).await;
            let driver = settings(server.url(), rate, millis, max)
                .compile(samples(3))
                .unwrap();
            assert_eq!(driver.planned_requests(), planned);
            let before = Instant::now();
            let run = driver.run(&CancellationToken::new()).await;
            check_consistent(&run);
            let r = &run.report;
            assert_eq!(r.stopped, StopReason::Completed);
            assert_eq!(r.requests, planned);
            assert_eq!(r.status.success, planned);
            assert_eq!(r.errors, 0);
            assert_eq!(r.abandoned, 0);
            assert_eq!(server.hits() as u64, planned);
            let sent: u64 = server.bodies().iter().map(|b| b.len() as u64).sum();
            assert_eq!(r.bytes_sent, sent);
            assert_eq!(r.bytes_received, sent, "the server echoes");
            // Never faster than the rate: the k-th arrival comes after the
            // k-th due time.
            let mut arrivals: Vec<Instant> = server
                .seen
                .lock()
                .unwrap()
                .iter()
                .map(|(t, _)| *t)
                .collect();
            arrivals.sort();
            for (k, arrival) in arrivals.iter().enumerate() {
                let due = Duration::from_secs_f64(k as f64 / rate);
                assert!(
                    *arrival >= before + due,
                    "request {k} arrived {:?} after the start, before it was due ({due:?})",
                    arrival.duration_since(before)
                );
            }
            assert!(r.elapsed_s < 20.0, "sanity: {} s", r.elapsed_s);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_through_the_samples_in_order() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.jsonl");
        std::fs::write(&path, "{\"a\": 1}\n\n  [1, 2]\n\"three\"\n").unwrap();
        let samples = Samples::from_json_lines(&path).unwrap();
        assert_eq!(samples.len(), 3);
        let server = TestServer::start(Reply::Echo).await;
        let mut settings = settings(server.url(), 500.0, 1000, 7);
        // One connection: arrivals are in schedule order.
        settings.connections = 1;
        let run = settings
            .compile(samples)
            .unwrap()
            .run(&CancellationToken::new())
            .await;
        assert_eq!(run.report.requests, 7);
        let expected = ["{\"a\": 1}", "[1, 2]", "\"three\""];
        let received = server.bodies();
        let received: Vec<&str> = received
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect();
        let cycled: Vec<&str> = (0..7).map(|i| expected[i % 3]).collect();
        assert_eq!(received, cycled);
    })
    .await;
}

#[test]
fn csv_rows_become_oip_requests_of_the_chosen_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.csv");
    std::fs::write(&path, "a,b,label\n1,2.5,0\n-3, 4e2 ,1\n").unwrap();
    let bodies = |columns| -> Vec<serde_json::Value> {
        Samples::from_csv(&path, &columns)
            .unwrap()
            .bodies()
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect()
    };
    let oip = |data: serde_json::Value, n: usize| json!({"inputs": [{"name": "input-0", "shape": [1, n], "datatype": "FP64", "data": data}]});
    assert_eq!(
        bodies(CsvColumns::Exclude(vec!["label".into()])),
        [oip(json!([1.0, 2.5]), 2), oip(json!([-3.0, 400.0]), 2)]
    );
    assert_eq!(
        bodies(CsvColumns::Only(vec!["b".into(), "a".into()])),
        [oip(json!([2.5, 1.0]), 2), oip(json!([400.0, -3.0]), 2)]
    );
    assert_eq!(
        bodies(CsvColumns::All),
        [
            oip(json!([1.0, 2.5, 0.0]), 3),
            oip(json!([-3.0, 400.0, 1.0]), 3)
        ]
    );
    assert_eq!(
        Samples::from_csv(&path, &CsvColumns::All).unwrap().bodies()[0],
        Bytes::from(oip_request_body(&[1.0, 2.5, 0.0]))
    );
}

#[test]
fn batches_hold_exactly_their_rows_cycling_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.csv");
    std::fs::write(&path, "x,label\n1,0\n2,0\n3,1\n4,1\n5,1\n").unwrap();
    let columns = CsvColumns::Exclude(vec!["label".into()]);
    let bodies: Vec<serde_json::Value> = Samples::from_csv_batched(&path, &columns, 2)
        .unwrap()
        .bodies()
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    let batch = |data: serde_json::Value| json!({"inputs": [{"name": "input-0", "shape": [2, 1], "datatype": "FP64", "data": data}]});
    assert_eq!(
        bodies,
        [
            batch(json!([1.0, 2.0])),
            batch(json!([3.0, 4.0])),
            batch(json!([5.0, 1.0]))
        ]
    );
    // A batch larger than the file repeats its rows.
    let big = Samples::from_csv_batched(&path, &columns, 12).unwrap();
    assert_eq!(big.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&big.bodies()[0]).unwrap();
    assert_eq!(body["inputs"][0]["shape"], json!([12, 1]));
    assert_eq!(body["inputs"][0]["data"][11], 2.0);
    assert!(Samples::from_csv_batched(&path, &columns, 0).is_err());
}

#[test]
fn bad_samples_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let message = |e: DriverError| e.to_string();

    let path = write("bad.jsonl", "{\"a\": 1}\n\n{\"a\": \n");
    let e = Samples::from_json_lines(&path).unwrap_err();
    assert!(
        matches!(e, DriverError::SampleJson { line: 3, .. }),
        "{e:?}"
    );
    assert_eq!(
        message(e),
        format!("line 3 of {} is not a json value", path.display())
    );

    let path = write("blank.jsonl", "\n  \n");
    let e = Samples::from_json_lines(&path).unwrap_err();
    assert_eq!(message(e), format!("no samples in {}", path.display()));

    let missing = dir.path().join("missing.csv");
    let e = Samples::from_csv(&missing, &CsvColumns::All).unwrap_err();
    assert!(matches!(e, DriverError::ReadSamples { .. }), "{e:?}");
    let e = Samples::from_json_lines(&missing).unwrap_err();
    assert!(matches!(e, DriverError::ReadSamples { .. }), "{e:?}");

    let path = write("words.csv", "a,b\n1,2\n3,x\n");
    let e = Samples::from_csv(&path, &CsvColumns::All).unwrap_err();
    assert_eq!(
        message(e),
        format!(
            "column `b` at line 3 of {} is not a finite number: `x`",
            path.display()
        )
    );
    // The column holding words can be left out.
    let only_a = Samples::from_csv(&path, &CsvColumns::Only(vec!["a".into()])).unwrap();
    assert_eq!(only_a.len(), 2);

    let path = write("nan.csv", "a\nNaN\n");
    let e = Samples::from_csv(&path, &CsvColumns::All).unwrap_err();
    assert!(
        matches!(e, DriverError::SampleNotNumber { line: 2, .. }),
        "{e:?}"
    );

    let path = write("empty.csv", "a,label\n");
    let e = Samples::from_csv(&path, &CsvColumns::All).unwrap_err();
    assert!(matches!(e, DriverError::EmptySamples { .. }), "{e:?}");

    let path = write("ragged.csv", "a,b\n1,2\n3\n");
    let e = Samples::from_csv(&path, &CsvColumns::All).unwrap_err();
    assert!(matches!(e, DriverError::SampleCsv { line: 3, .. }), "{e:?}");

    let path = write("two.csv", "a,label\n1,0\n");
    let e = Samples::from_csv(&path, &CsvColumns::Exclude(vec!["lable".into()])).unwrap_err();
    assert_eq!(
        message(e),
        format!("column `lable` is not in the header of {}", path.display())
    );
    let e = Samples::from_csv(
        &path,
        &CsvColumns::Exclude(vec!["a".into(), "label".into()]),
    )
    .unwrap_err();
    assert!(matches!(e, DriverError::NoColumns { .. }), "{e:?}");

    let e = Samples::from_bodies([]).unwrap_err();
    assert_eq!(message(e), "no samples in the given bodies");
}

#[test]
fn settings_list_every_problem() {
    let mut bad = DriverSettings::new("https://example.com/", 0.0, Duration::ZERO, 0);
    bad.timeout = Duration::ZERO;
    bad.connections = 0;
    bad.method = "NOT A METHOD".into();
    bad.headers = vec![("bad header".into(), "v".into())];
    let Err(DriverError::Settings(problems)) = bad.compile(samples(1)) else {
        panic!("invalid settings compiled");
    };
    assert_eq!(
        problems,
        [
            SettingError::Rate(0.0),
            SettingError::Https("https://example.com/".into()),
            SettingError::Method("NOT A METHOD".into()),
            SettingError::Header("bad header".into()),
            SettingError::Duration,
            SettingError::MaxRequests,
            SettingError::Timeout(Duration::ZERO),
            SettingError::Connections(0),
        ]
    );
    let url = "http://127.0.0.1:1/".to_owned();
    for rate in [-1.0, f64::NAN, f64::INFINITY] {
        let e = settings(url.clone(), rate, 100, 1)
            .compile(samples(1))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid request driver settings: the rate must be a positive"),
            "{e}"
        );
    }
    for url in [
        "ftp://host/",
        "127.0.0.1:80",
        "http:///path",
        "not a url",
        "http://u@h/",
    ] {
        let e = settings(url.into(), 1.0, 100, 1)
            .compile(samples(1))
            .unwrap_err();
        let DriverError::Settings(problems) = e else {
            panic!("{url}: {e}");
        };
        assert!(
            matches!(
                problems[..],
                [SettingError::NotHttp(_)] | [SettingError::Url { .. }]
            ),
            "{url}: {problems:?}"
        );
    }
    let mut long = settings(url, 1.0, 100, 1);
    long.timeout = Duration::from_secs(61);
    assert!(long.compile(samples(1)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_latency_of_every_request_queued_behind_it() {
    bounded(async {
        let stall = Duration::from_millis(500);
        let server = TestServer::start(Reply::StallAt { index: 4, stall }).await;
        // 50/s for 30 requests: request i is due at 20 ms × i.
        let mut settings = settings(server.url(), 50.0, 600, 30);
        settings.connections = 1;
        let run = settings
            .compile(samples(2))
            .unwrap()
            .run(&CancellationToken::new())
            .await;
        check_consistent(&run);
        let r = &run.report;
        assert_eq!(r.requests, 30);
        assert_eq!(r.status.success, 30);
        let latency = r.latency_ms.unwrap();
        assert!(latency.max >= 500.0, "{latency:?}");
        assert!(latency.p99 >= 500.0, "{latency:?}");
        // Request 4 (due at 80 ms) is answered 500 ms after it arrived, so
        // no earlier than 580 ms; requests 5 to 16 (due at 100 to 320 ms)
        // wait for the one connection until then, so each has a latency of
        // at least 260 ms. A driver timing from the actual send would see
        // one slow request.
        let at_least_250_ms = run.latency.count_between(250_000, run.latency.high());
        assert!(at_least_250_ms >= 13, "{at_least_250_ms} slow responses");
        let first_second = r.per_second[0].latency_ms.unwrap();
        assert!(first_second.p99 >= 500.0, "{first_second:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_pool_wait_and_their_wait_counts() {
    bounded(async {
        let server = TestServer::start(Reply::Sleep(Duration::from_millis(20))).await;
        // 40 requests due within 78 ms, two connections, 20 ms each.
        let mut settings = settings(server.url(), 500.0, 1000, 40);
        settings.connections = 2;
        let run = settings
            .compile(samples(1))
            .unwrap()
            .run(&CancellationToken::new())
            .await;
        check_consistent(&run);
        assert_eq!(run.report.requests, 40);
        assert_eq!(run.report.status.success, 40);
        assert!(server.peers.lock().unwrap().len() <= 2);
        // Two connections serve 40 requests of 20 ms in no less than
        // 400 ms; the last is due at 78 ms, so it waited at least 322 ms.
        let latency = run.report.latency_ms.unwrap();
        assert!(latency.max >= 300.0, "{latency:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_are_counted_by_class() {
    bounded(async {
        for (status, planned) in [(500, 10), (404, 6)] {
            let server = TestServer::start(Reply::Status(status)).await;
            let run = settings(server.url(), 200.0, 1000, planned)
                .compile(samples(1))
                .unwrap()
                .run(&CancellationToken::new())
                .await;
            check_consistent(&run);
            let r = &run.report;
            assert_eq!(r.requests, planned);
            assert_eq!(r.errors, planned);
            let (by_kind, by_class) = if status == 500 {
                (r.errors_by_kind.status_5xx, r.status.server_error)
            } else {
                (r.errors_by_kind.status_4xx, r.status.client_error)
            };
            assert_eq!((by_kind, by_class), (planned, planned));
            assert_eq!(r.latency_ms.unwrap().count, planned);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_gives_connect_errors() {
    bounded(async {
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let run = settings(format!("http://{closed}/"), 200.0, 1000, 10)
            .compile(samples(1))
            .unwrap()
            .run(&CancellationToken::new())
            .await;
        check_consistent(&run);
        let r = &run.report;
        assert_eq!(r.stopped, StopReason::Completed);
        assert_eq!(r.requests, 10);
        assert_eq!(r.errors_by_kind.connect, 10);
        assert_eq!(r.errors, 10);
        assert_eq!(r.latency_ms, None);
        assert_eq!(r.bytes_sent, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_gives_timeouts_and_the_run_still_ends() {
    bounded(async {
        let server = TestServer::start(Reply::Sleep(Duration::from_secs(20))).await;
        let mut settings = settings(server.url(), 50.0, 1000, 6);
        settings.timeout = Duration::from_millis(100);
        settings.connections = 2;
        let run = settings
            .compile(samples(1))
            .unwrap()
            .run(&CancellationToken::new())
            .await;
        check_consistent(&run);
        let r = &run.report;
        assert_eq!(r.requests, 6);
        assert_eq!(r.errors_by_kind.timeout, 6);
        assert_eq!(r.latency_ms, None);
        // Sanity only: the server would have answered after 20 s.
        assert!(r.elapsed_s < 15.0, "{} s", r.elapsed_s);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_a_long_run() {
    bounded(async {
        let server = TestServer::start(Reply::Echo).await;
        let driver = settings(server.url(), 100.0, 600_000, 1_000_000)
            .compile(samples(1))
            .unwrap();
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        });
        let run = driver.run(&stop).await;
        check_consistent(&run);
        let r = &run.report;
        assert_eq!(r.stopped, StopReason::Cancelled);
        assert!(r.requests + r.abandoned < r.planned);
        assert_eq!(r.errors, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_stops_the_traffic() {
    bounded(async {
        let server = TestServer::start(Reply::Echo).await;
        let driver = settings(server.url(), 100.0, 600_000, 1_000_000)
            .compile(samples(1))
            .unwrap();
        let stop = CancellationToken::new();
        let dropped = tokio::time::timeout(Duration::from_millis(300), driver.run(&stop)).await;
        assert!(dropped.is_err(), "a ten-minute run ended in 300 ms");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after_drop = server.hits();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // At 100/s a live run would have sent about 50 more.
        assert_eq!(server.hits(), after_drop);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_sees_every_response_with_its_body() {
    bounded(async {
        let server = TestServer::start(Reply::Echo).await;
        let driver = settings(server.url(), 200.0, 1000, 12)
            .compile(samples(5))
            .unwrap();
        let (tx, mut rx) = mpsc::channel(12);
        let run = driver.run_observed(&CancellationToken::new(), tx).await;
        assert_eq!(run.report.observed_dropped, 0);
        let mut seen = Vec::new();
        while let Some(observed) = rx.recv().await {
            seen.push(observed);
        }
        seen.sort_by_key(|o| o.index);
        assert_eq!(seen.len(), 12);
        for (i, observed) in seen.iter().enumerate() {
            assert_eq!(observed.index, i as u64);
            assert_eq!(observed.sample, i % 5);
            assert_eq!(observed.status, 200);
            assert_eq!(observed.body, driver.samples().bodies()[i % 5]);
            assert!(!observed.truncated);
        }

        // Bodies are cut at the capture limit; the bytes are all counted.
        let server = TestServer::start(Reply::Large(100_000)).await;
        let mut settings = settings(server.url(), 200.0, 1000, 3);
        settings.capture_limit = 1024;
        let (tx, mut rx) = mpsc::channel(1);
        let run = settings
            .compile(samples(1))
            .unwrap()
            .run_observed(&CancellationToken::new(), tx)
            .await;
        assert_eq!(run.report.bytes_received, 300_000);
        let mut received = 0;
        while let Some(observed) = rx.recv().await {
            assert_eq!(observed.body.len(), 1024);
            assert!(observed.truncated);
            received += 1;
        }
        // A channel of one, never read during the run: the rest dropped.
        assert_eq!(received, 1);
        assert_eq!(run.report.observed_dropped, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_of_runs_merge_exactly_across_processes() {
    bounded(async {
        let server = TestServer::start(Reply::Echo).await;
        let driver = settings(server.url(), 200.0, 1000, 15)
            .compile(samples(1))
            .unwrap();
        let first = driver.run(&CancellationToken::new()).await;
        let second = driver.run(&CancellationToken::new()).await;

        let mut merged = latency_histogram();
        merged.add(&first.latency).unwrap();
        merged.add(&second.latency).unwrap();
        let mut carried = latency_histogram();
        for run in [&first, &second] {
            let bytes = encode_histogram(&run.latency).unwrap();
            let decoded = decode_histogram(&bytes).unwrap();
            assert_eq!(decoded, run.latency);
            carried.add(decoded).unwrap();
        }
        assert_eq!(carried, merged);
        assert_eq!(LatencySummary::of(&merged).unwrap().count, 30);
    })
    .await;
}

#[test]
fn histograms_round_trip_and_reject_other_bytes() {
    let values = [1, 7, 999, 1_000, 1_001, 123_456, 3_600_000_000, u64::MAX];
    let mut all = latency_histogram();
    let mut halves = [latency_histogram(), latency_histogram()];
    for (i, &v) in values.iter().enumerate() {
        all.saturating_record(v);
        halves[i % 2].saturating_record(v);
    }
    let bytes = encode_histogram(&all).unwrap();
    let decoded = decode_histogram(&bytes).unwrap();
    assert_eq!(decoded, all);
    assert_eq!(decoded.len(), values.len() as u64);
    let mut merged = latency_histogram();
    for half in &halves {
        merged
            .add(decode_histogram(&encode_histogram(half).unwrap()).unwrap())
            .unwrap();
    }
    assert_eq!(merged, all);
    assert_eq!(
        LatencySummary::of(&merged),
        LatencySummary::of(&all),
        "the same counts give the same quantiles"
    );

    assert!(matches!(
        decode_histogram(b"not a histogram"),
        Err(DriverError::DecodeHistogram(_))
    ));
    assert!(matches!(
        decode_histogram(&bytes[..bytes.len() - 1]),
        Err(DriverError::HistogramLength { .. })
    ));
    assert!(matches!(
        decode_histogram(&[]),
        Err(DriverError::DecodeHistogram(_))
    ));
    // A header of another shape is refused before anything is allocated
    // from it: here one declaring u64::MAX as its highest value and 5
    // significant digits, which would allocate tens of megabytes.
    let mut huge = bytes[..40].to_vec();
    huge[4..8].copy_from_slice(&0u32.to_be_bytes());
    huge[12..16].copy_from_slice(&5u32.to_be_bytes());
    huge[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(matches!(
        decode_histogram(&huge),
        Err(DriverError::HistogramShape {
            high: u64::MAX,
            digits: 5,
            ..
        })
    ));
    // A header cut short is an error, not a panic.
    let mut short = bytes[..20].to_vec();
    short[4..8].copy_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        decode_histogram(&short),
        Err(DriverError::HistogramLength { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_serializes_with_its_documented_fields() {
    bounded(async {
        let server = TestServer::start(Reply::Echo).await;
        let run = settings(server.url(), 100.0, 1000, 4)
            .compile(samples(1))
            .unwrap()
            .run(&CancellationToken::new())
            .await;
        let value = serde_json::to_value(&run.report).unwrap();
        for key in [
            "requests",
            "errors",
            "rps",
            "latency_ms",
            "per_second",
            "status",
        ] {
            assert!(value.get(key).is_some(), "{key} missing from {value}");
        }
        for key in ["p50", "p90", "p99", "max", "mean"] {
            assert!(value["latency_ms"][key].is_number(), "{key} in {value}");
        }
        assert_eq!(value["status"]["2xx"], 4);
        assert_eq!(value["stopped"], "completed");
        assert_eq!(value["per_second"][0]["requests"], 4);
        let back: TrafficReport = serde_json::from_value(value).unwrap();
        assert_eq!(back, run.report);
    })
    .await;
}

#[test]
fn seconds_close_when_every_request_due_in_them_has_an_outcome() {
    // Half a request per second: requests due at 0, 2 and 4 s; seconds 1
    // and 3 are empty.
    let schedule = Schedule::Open(Arrivals::new(
        &[RateStage::constant(0.5, Duration::from_secs(6))],
        1000,
    ));
    let mut tally = Tally::new(schedule, 1000, tokio::time::Instant::now(), false);
    let tickets: Vec<_> = std::iter::from_fn(|| tally.next_ticket()).collect();
    assert_eq!(tickets.len(), 3);
    let ok = Outcome::Response {
        status: 200,
        sent: 1,
        received: 2,
    };
    // Outcomes out of order; the last request times out.
    tally.record(&tickets[1], &ok, Duration::from_millis(3));
    tally.record(&tickets[2], &Outcome::Timeout { sent: 1 }, Duration::ZERO);
    tally.record(&tickets[0], &ok, Duration::from_millis(5));
    let run = tally.finish(
        "http://x/".into(),
        "POST".into(),
        Duration::from_secs(5),
        StopReason::Completed,
    );
    check_consistent(&run);
    let seconds: Vec<(u64, u64)> = run
        .report
        .per_second
        .iter()
        .map(|b| (b.second, b.requests))
        .collect();
    assert_eq!(seconds, [(0, 1), (1, 0), (2, 1), (3, 0), (4, 1)]);
    assert_eq!(run.report.per_second[4].errors.timeout, 1);
    assert_eq!(run.report.per_second[4].latency_ms, None);
    assert_eq!(run.report.bytes_sent, 3);
    assert_eq!(run.report.bytes_received, 4);
    let max = run.report.latency_ms.unwrap().max;
    assert!((5.0..5.01).contains(&max), "{max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_frozen_one_second_in_five_shows_in_p99_at_a_constant_rate() {
    bounded(async {
        let server = TestServer::start(Reply::Freeze {
            every: Duration::from_secs(5),
            pause: Duration::from_secs(1),
        })
        .await;
        // 100/s for 5 s: the 100 requests due in the last second find the
        // server frozen; their latency runs from when they were due, so a
        // fifth of the run waits between 0 and 1 s: p99 is near a second.
        let run = settings(server.url(), 100.0, 5000, 10_000)
            .compile(samples(2))
            .unwrap()
            .run(&CancellationToken::new())
            .await;
        check_consistent(&run);
        let r = &run.report;
        assert_eq!((r.requests, r.status.success), (500, 500));
        let latency = r.latency_ms.unwrap();
        assert!(latency.p99 >= 800.0, "{latency:?}");
        let slow = run.latency.count_between(200_000, run.latency.high());
        assert!(slow >= 60, "{slow} responses took 200 ms or more");
        // The frozen second is the last: its own p50 is half a second or
        // so, while the first second's is that of a quick echo.
        let last = r.per_second[4].latency_ms.unwrap();
        assert!(last.p50 >= 300.0, "{last:?}");
        let first = r.per_second[0].latency_ms.unwrap();
        assert!(first.p50 < last.p50 / 2.0, "{first:?} vs {last:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_workload_keeps_one_request_per_user_in_flight() {
    bounded(async {
        let server = TestServer::start(Reply::Sleep(Duration::from_millis(10))).await;
        let workload = Workload::Closed {
            users: 3,
            think: Duration::ZERO,
            duration: Duration::from_millis(400),
        };
        let mut settings = DriverSettings::with_workload(server.url(), workload, 100_000);
        settings.connections = 1; // a closed workload opens one per user
        let run = settings
            .compile(samples(2))
            .unwrap()
            .run(&CancellationToken::new())
            .await;
        check_consistent(&run);
        let r = &run.report;
        assert_eq!(r.users, Some(3));
        assert_eq!(r.target_rps, None);
        assert_eq!(r.planned, r.requests);
        assert_eq!(r.errors, 0);
        assert_eq!(r.requests as usize, server.hits());
        // Three users of 10 ms requests for 400 ms: at most 3 × 40 + 3
        // (one each may start just before the end).
        assert!((6..=123).contains(&r.requests), "{}", r.requests);
        assert_eq!(server.peers.lock().unwrap().len(), 3);
        // One request per user at a time: no two requests of the same
        // user overlap, so at most 3 arrive within any 10 ms.
        let arrivals: Vec<Instant> = server
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| *t)
            .collect();
        for window in arrivals.windows(4) {
            assert!(
                window[3] - window[0] >= Duration::from_millis(9),
                "four requests within {:?}",
                window[3] - window[0]
            );
        }
        assert_eq!(serde_json::to_value(r).unwrap()["users"], 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn think_time_paces_each_user_and_max_requests_bounds_a_closed_run() {
    bounded(async {
        let server = TestServer::start(Reply::Echo).await;
        let workload = Workload::Closed {
            users: 2,
            think: Duration::from_millis(100),
            duration: Duration::from_millis(350),
        };
        let run = DriverSettings::with_workload(server.url(), workload.clone(), 100_000)
            .compile(samples(1))
            .unwrap()
            .run(&CancellationToken::new())
            .await;
        check_consistent(&run);
        // Each user sends at 0, ≥100, ≥200, ≥300 ms: at most 4 each.
        assert!(
            (2..=8).contains(&run.report.requests),
            "{}",
            run.report.requests
        );
        // A pause longer than the run ends with the run: a think time of
        // an hour in a 300 ms run.
        let long = Workload::Closed {
            users: 2,
            think: Duration::from_secs(3600),
            duration: Duration::from_millis(300),
        };
        let run = DriverSettings::with_workload(server.url(), long, 100)
            .compile(samples(1))
            .unwrap()
            .run(&CancellationToken::new())
            .await;
        assert_eq!(
            run.report.requests, 2,
            "one request each, then the run is over"
        );
        assert!(run.report.elapsed_s < 5.0, "{}", run.report.elapsed_s);
        let bounded_run = DriverSettings::with_workload(server.url(), workload, 3)
            .compile(samples(1))
            .unwrap()
            .run(&CancellationToken::new())
            .await;
        assert_eq!(bounded_run.report.requests, 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_ramp_the_arrival_rate_and_seconds_are_watched_as_they_close() {
    bounded(async {
        let server = TestServer::start(Reply::Echo).await;
        // 0 → 100/s over 1 s (50 requests), then 20/s for 1 s.
        let workload = Workload::Open {
            stages: vec![
                RateStage {
                    duration: Duration::from_secs(1),
                    from: 0.0,
                    to: 100.0,
                },
                RateStage::constant(20.0, Duration::from_secs(1)),
            ],
        };
        let mut settings = DriverSettings::with_workload(server.url(), workload, 1000);
        settings.keep_second_histograms = true;
        let driver = settings.compile(samples(1)).unwrap();
        assert_eq!(driver.planned_requests(), 70);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        let run = driver.run_watched(&CancellationToken::new(), tx).await;
        check_consistent(&run);
        let r = &run.report;
        assert_eq!(r.requests, 70);
        assert!((r.target_rps.unwrap() - 35.0).abs() < 1e-9);
        let per_second: Vec<u64> = r.per_second.iter().map(|b| b.requests).collect();
        assert_eq!(per_second, [50, 20]);
        // The ramp's first half holds a quarter of its requests.
        let arrivals: Vec<Duration> = server
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| *t - start)
            .collect();
        let early = arrivals
            .iter()
            .filter(|t| **t < Duration::from_millis(500))
            .count();
        assert!(
            (10..=14).contains(&early),
            "{early} of the first 50 in 500 ms"
        );
        let mut watched = Vec::new();
        while let Ok(bucket) = rx.try_recv() {
            watched.push(bucket);
        }
        assert_eq!(watched, r.per_second);
        // One serialized histogram per second, adding up to the whole.
        assert_eq!(run.second_histograms.len(), 2);
        let mut merged = latency_histogram();
        for bytes in &run.second_histograms {
            merged.add(decode_histogram(bytes).unwrap()).unwrap();
        }
        assert_eq!(merged, run.latency);
    })
    .await;
}

#[test]
fn workloads_are_checked() {
    let url = "http://127.0.0.1:1/";
    let problems = |workload: Workload| match DriverSettings::with_workload(url, workload, 10)
        .compile(samples(1))
    {
        Err(DriverError::Settings(problems)) => problems,
        other => panic!("compiled: {other:?}"),
    };
    assert_eq!(
        problems(Workload::Open { stages: vec![] }),
        [SettingError::NoStages, SettingError::Duration]
    );
    let pause = RateStage::constant(0.0, Duration::from_secs(1));
    assert_eq!(
        problems(Workload::Open {
            stages: vec![pause, pause]
        }),
        [SettingError::NoArrivals]
    );
    assert_eq!(
        problems(Workload::Open {
            stages: vec![RateStage {
                duration: Duration::from_secs(1),
                from: -1.0,
                to: f64::INFINITY
            }]
        }),
        [SettingError::Rate(-1.0), SettingError::Rate(f64::INFINITY)]
    );
    assert_eq!(
        problems(Workload::Closed {
            users: 0,
            think: Duration::from_secs(7200),
            duration: Duration::ZERO
        }),
        [
            SettingError::Users(0),
            SettingError::Think(Duration::from_secs(7200)),
            SettingError::Duration
        ]
    );
}
