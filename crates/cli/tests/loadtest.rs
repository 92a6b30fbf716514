//! `mlops loadtest` as a user runs it: the binary against a small HTTP
//! server started here (threads, HTTP/1.1 keep-alive, every request
//! recorded), its exports, thresholds and exit codes, merges of its
//! result files, Ctrl-C, and the input it refuses. Every run is bounded in
//! time and count.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// What the server received: method, path and body of each request.
type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Answers `200 ok` (`/500`: a 500; `/slow`: after 200 ms). Its threads live
/// as long as the test process.
struct Server {
    addr: SocketAddr,
    seen: Seen,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let record = Arc::clone(&seen);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = Arc::clone(&record);
                thread::spawn(move || serve(stream, &record));
            }
        });
        Self { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn serve(stream: TcpStream, seen: &Seen) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        seen.lock().unwrap().push((method, path.clone(), body));
        let status = match path.as_str() {
            "/500" => "500 Internal Server Error",
            "/slow" => {
                thread::sleep(Duration::from_millis(200));
                "200 OK"
            }
            _ => "200 OK",
        };
        let response = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn mlops(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlops"))
        .args(args)
        .output()
        .expect("run mlops")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not json ({e}): {}\n{}", stdout(o), stderr(o)))
}

#[test]
fn a_closed_run_prints_one_json_summary() {
    let server = Server::start();
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/"),
        "-c",
        "3",
        "-d",
        "500ms",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json(&o);
    for key in ["requests", "errors", "rps"] {
        assert!(v[key].is_number(), "{key} in {v}");
    }
    for key in ["p50", "p90", "p99", "max"] {
        assert!(v["latency_ms"][key].is_number(), "{key} in {v}");
    }
    assert_eq!(v["users"], 3);
    assert_eq!(v["errors"], 0);
    assert_eq!(v["method"], "GET");
    let requests = v["requests"].as_u64().unwrap();
    assert!(requests > 0);
    assert_eq!(requests as usize, server.hits());
}

#[test]
fn an_open_run_posts_the_body_and_writes_its_exports() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, r#"{"inputs": [1, 2]}"#).unwrap();
    let out = dir.path().join("result.json");
    let csv = dir.path().join("seconds.csv");
    let html = dir.path().join("report.html");
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/predict"),
        "--rate",
        "40",
        "-d",
        "2s",
        "--body-file",
        body.to_str().unwrap(),
        "-H",
        "x-test: yes",
        "--out",
        out.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "-t",
        "p99 < 5s",
        "-t",
        "error_rate < 1%",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(table.contains("requests   80 ("), "{table}");
    assert!(table.contains("open, 40.0/s asked"), "{table}");
    assert!(table.contains("threshold  p99 < 5s: passed"), "{table}");
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 80);
    assert!(seen.iter().all(|(method, path, b)| method == "POST"
        && path == "/predict"
        && b == br#"{"inputs": [1, 2]}"#));
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(result["requests"], 80);
    assert_eq!(result["thresholds"][1]["passed"], true);
    assert_eq!(
        result["histograms"]["per_second"].as_array().unwrap().len(),
        2
    );
    let rows: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(rows[0].starts_with("second,requests,errors,"), "{rows:?}");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[1].starts_with("0,40,0,"), "{rows:?}");
    assert!(rows[2].starts_with("1,40,0,"), "{rows:?}");
    // The report: self-contained, charts of the two seconds, thresholds;
    // Chromium loads it without a console message or a request.
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 3, "rate, latency, errors");
    assert!(page.contains("<polyline"), "the series are drawn");
    assert!(page.contains("error_rate &lt; 1%"), "thresholds escaped");
    assert!(!page.contains("<script"));
    let png = dir.path().join("report.png");
    let load = mlops_testkit::chromium::load(&html, &png, (1200, 1600));
    assert!(load.problems().is_empty(), "{:?}", load.problems());
    let (width, height) = mlops_testkit::chromium::png_size(&load.png);
    assert_eq!((width, height), (1200, 1600));
}

#[test]
fn a_failed_threshold_exits_1_and_says_by_how_much() {
    let server = Server::start();
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/500"),
        "--rate",
        "20",
        "-d",
        "500ms",
        "-t",
        "error_rate < 1%",
        "-t",
        "p99 < 10s",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains(
            "error_rate < 1%: FAILED, error_rate = 100%, 99% (9900%) over the limit of 1%"
        ),
        "{table}"
    );
    assert!(table.contains("5xx 10"), "{table}");
    assert!(table.contains("p99 < 10s: passed"), "{table}");
    // With --json the object says it, and stderr names the failure.
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/slow"),
        "--rate",
        "10",
        "-d",
        "300ms",
        "-t",
        "p50 < 50ms",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["thresholds"][0]["passed"], false);
    assert!(
        v["thresholds"][0]["actual"].as_f64().unwrap() >= 200.0,
        "{v}"
    );
    assert!(
        stderr(&o).contains("threshold failed: p50 < 50ms: FAILED"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_dead_target_exits_1_saying_nothing_answered() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let o = mlops(&["loadtest", "run", &url, "--rate", "20", "-d", "300ms"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("no response from {url} (6 connection errors")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_input_exits_2_before_anything_is_sent() {
    let server = Server::start();
    let url = server.url("/");
    for (args, says) in [
        (vec!["ftp://host/"], "is not an http:// url"),
        (
            vec![url.as_str(), "--rate=-5"],
            "the rate must be a positive number",
        ),
        (
            vec![url.as_str(), "-t", "p99 < soon"],
            "threshold `p99 < soon`",
        ),
        (vec![url.as_str(), "--stage", "10s"], "is not DURATION:RATE"),
        (
            vec![url.as_str(), "--body-file", "/no/such/file"],
            "cannot read the body file /no/such/file",
        ),
        (
            vec![url.as_str(), "--samples", "/no/such.jsonl"],
            "cannot read samples from /no/such.jsonl",
        ),
        (vec![url.as_str(), "-H", "no colon"], "is not `Name: value`"),
        (vec![url.as_str(), "-d", "48h"], "at most 24h"),
        (
            vec![url.as_str(), "--out", "/no/such/dir/r.json"],
            "/no/such/dir is not a directory",
        ),
        (
            vec![url.as_str(), "-c", "0"],
            "users must be between 1 and 1024",
        ),
    ] {
        let mut full = vec!["loadtest", "run"];
        full.extend(args);
        let o = mlops(&full);
        assert_eq!(o.status.code(), Some(2), "{full:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{full:?}: {}", stderr(&o));
    }
    assert_eq!(server.hits(), 0);
}

#[test]
fn result_files_merge_and_other_files_are_refused() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    let run = |out: &Path, rate: &str| {
        mlops(&[
            "loadtest",
            "run",
            &server.url("/"),
            "--rate",
            rate,
            "-d",
            "1s",
            "-q",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let (ra, rb) = thread::scope(|s| {
        let ra = s.spawn(|| run(&a, "30"));
        let rb = s.spawn(|| run(&b, "20"));
        (ra.join().unwrap(), rb.join().unwrap())
    });
    assert_eq!((ra.status.code(), rb.status.code()), (Some(0), Some(0)));
    let merged = dir.path().join("merged.json");
    let o = mlops(&[
        "loadtest",
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
        "--out",
        merged.to_str().unwrap(),
        "-t",
        "requests >= 50",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["requests"], 50);
    assert_eq!(v["runs"], 2);
    assert_eq!(v["target_rps"], 50.0);
    assert_eq!(v["latency_ms"]["count"], 50);
    assert_eq!(v["per_second"][0]["requests"], 50);
    assert!(merged.is_file());
    let o = mlops(&[
        "loadtest",
        "merge",
        a.to_str().unwrap(),
        "-t",
        "requests > 100",
    ]);
    assert_eq!(o.status.code(), Some(1));
    // Not a result, a damaged one, a missing file: exit 2, named.
    let text = dir.path().join("text.json");
    std::fs::write(&text, "{\"hello\": 1}").unwrap();
    let mut damaged: Value = serde_json::from_str(&std::fs::read_to_string(&a).unwrap()).unwrap();
    damaged["histograms"]["overall"] = "AAAA".into();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, damaged.to_string()).unwrap();
    for (file, says) in [
        (&text, "is not a load result"),
        (&bad, "the overall histogram is unreadable"),
        (&dir.path().join("missing.json"), "cannot read"),
    ] {
        let o = mlops(&[
            "loadtest",
            "merge",
            a.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(file.file_name().unwrap().to_str().unwrap()),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn ctrl_c_stops_a_run_and_still_reports_it() {
    let server = Server::start();
    let child = Command::new(env!("CARGO_BIN_EXE_mlops"))
        .args([
            "loadtest",
            "run",
            &server.url("/"),
            "--rate",
            "50",
            "-d",
            "60s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.hits() < 10 {
        assert!(Instant::now() < deadline, "no traffic within 20 s");
        thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["stopped"], "cancelled");
    let requests = v["requests"].as_u64().unwrap();
    assert!((10..3000).contains(&requests), "{v}");
}

/// A worker started on a free loopback port; its URL (from its first line
/// on stderr). Killed (SIGTERM) when dropped.
struct Worker {
    child: std::process::Child,
    url: String,
}

impl Worker {
    fn start(token_file: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mlops"))
            .args([
                "loadtest",
                "worker",
                "--listen",
                "127.0.0.1:0",
                "--token-file",
            ])
            .arg(token_file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no url in {line:?}"))
            .to_owned();
        Self { child, url }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

#[test]
fn workers_share_a_run_and_the_coordinator_merges_it() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("worker.token");
    let (a, b) = (Worker::start(&token), Worker::start(&token));
    let token_arg = token.to_str().unwrap();
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/"),
        "--rate",
        "40",
        "-d",
        "1s",
        "--worker",
        &a.url,
        "--worker",
        &b.url,
        "--worker-token-file",
        token_arg,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["runs"], 2, "{v}");
    assert_eq!(v["requests"], 40, "{v}");
    assert_eq!(v["target_rps"], 40.0, "{v}");
    assert_eq!(v["per_second"][0]["requests"], 40, "{v}");
    assert_eq!(server.hits(), 40);
    // The token file is the owner's alone.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");

    // The split is exact: 5 requests over two workers are 5, not 3 + 3.
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/"),
        "--rate",
        "5",
        "-d",
        "1s",
        "--worker",
        &a.url,
        "--worker",
        &b.url,
        "--worker-token-file",
        token_arg,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["requests"], 5);
    assert_eq!(server.hits(), 45);

    // Another worker's token: 401, nothing runs.
    let other = dir.path().join("other.token");
    let _c = Worker::start(&other);
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/"),
        "--rate",
        "40",
        "-d",
        "1s",
        "--worker",
        &a.url,
        "--worker-token-file",
        other.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("answered 401"), "{}", stderr(&o));
    assert_eq!(server.hits(), 45);
    // No token file: refused before anything is sent, and not made up.
    let missing = dir.path().join("missing.token");
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/"),
        "--worker",
        &a.url,
        "--worker-token-file",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no worker token at"), "{}", stderr(&o));
    assert!(!missing.exists());
    // A dead worker, a bad worker url.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/"),
        "--rate",
        "40",
        "-d",
        "1s",
        "--worker",
        &dead,
        "--worker-token-file",
        token_arg,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("worker {dead}: cannot connect")),
        "{}",
        stderr(&o)
    );
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/"),
        "--worker",
        "ftp://x",
        "--worker-token-file",
        token_arg,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not an http://host:port url"),
        "{}",
        stderr(&o)
    );
    // A worker that never answers is given up on: 1 s of load, 1 s of
    // timeout and ten seconds of grace.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/"),
        "--rate",
        "5",
        "-d",
        "1s",
        "--timeout",
        "1s",
        "--worker",
        &silent_url,
        "--worker-token-file",
        token_arg,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no answer within 12 s"),
        "{}",
        stderr(&o)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(silent);

    // A coordinator killed mid-run: the worker abandons its share and is
    // free again for the next run.
    // A long run on worker `a`, once it has sent `more` requests.
    let long_run = |more: usize| {
        let child = Command::new(env!("CARGO_BIN_EXE_mlops"))
            .args([
                "loadtest",
                "run",
                &server.url("/"),
                "--rate",
                "20",
                "-d",
                "60s",
                "--worker",
                &a.url,
            ])
            .args(["--worker-token-file", token_arg, "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let target = server.hits() + more;
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.hits() < target {
            assert!(Instant::now() < deadline, "no traffic from the worker");
            thread::sleep(Duration::from_millis(20));
        }
        child
    };
    let mut coordinator = long_run(5);
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    thread::sleep(Duration::from_millis(300));
    let stopped_at = server.hits();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(server.hits(), stopped_at, "the worker stopped sending");
    let o = mlops(&[
        "loadtest",
        "run",
        &server.url("/"),
        "--rate",
        "10",
        "-d",
        "1s",
        "--worker",
        &a.url,
        "--worker-token-file",
        token_arg,
        "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "the worker is free: {}",
        stderr(&o)
    );
    assert_eq!(json(&o)["requests"], 10);

    // Ctrl-C at the coordinator: exit 130, saying the shares were
    // abandoned.
    let coordinator = long_run(5);
    kill(Pid::from_raw(coordinator.id() as i32), Signal::SIGINT).unwrap();
    let o = coordinator.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the workers' runs were abandoned"),
        "{}",
        stderr(&o)
    );

    // A request without the token changes nothing on the worker.
    let before = server.hits();
    let mut raw = TcpStream::connect(a.url.trim_start_matches("http://")).unwrap();
    write!(
        raw,
        "POST /run HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(server.hits(), before);
}

/// Stage 6 records its evidence under the names `mlops assess` reads
/// (assess depends on no stage crate, so it spells them itself).
#[test]
fn stage_6_evidence_is_what_assess_reads() {
    use mlops_assess::runs::later;
    use mlops_loadtest::evidence;
    assert_eq!(evidence::LOAD_TEST, later::LOAD_TEST);
    assert_eq!(evidence::BREAKING_POINT, later::BREAKING_POINT);
    assert_eq!(evidence::CAPACITY, later::CAPACITY);
}
