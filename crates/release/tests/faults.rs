//! Releases under steady load from a client on loopback, with faults that
//! come from the candidate's own model file (a small Python model server,
//! `tests/data/fault_server.py`): a good version is promoted, one that
//! answers errors and one that answers slowly are rolled back by the
//! analysis, and the client counts every answer it gets. Across a
//! promotion and across each rollback no request fails that stable
//! served, no connection fails, and the only failures the client sees are
//! the bad candidate's own, before its rollback.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mlops_core::registry::ModelStage;
use mlops_core::{Ledger, StepStatus};

fn manifest() -> String {
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fault_server.py");
    format!(
        r#"
[project]
name = "p"

[infra]
provider = "local"

[infra.services.m]
command = ["python3", "{server}", "--model", "{{model-dir}}/model.json", "--host", "{{host}}", "--port", "{{port}}"]
replicas = 2
health = {{ path = "/v2/health/ready", interval = "200ms", deadline = "20s" }}
stop-grace = "2s"

[iac.steps.ready]
run = "true"

[ci.steps.check]
run = "true"

[cd.steps.package]
kind = "package"
with = {{ model = "m", files = ["model.json"], metrics = "metrics.json" }}

[cd.steps.deploy]
kind = "deploy"
with = {{ service = "m", model = "m", version = "latest", environment = "staging" }}
depends-on = ["package"]

[release]
service = "m"
model = "m"

[release.steps.canary]
kind = "canary"
with = {{ steps = [30, 100], hold = "1s", traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 40 }}, analysis = {{ min-sample-size = 8, max-error-rate = 0.01, alpha = 0.01, max-p99-latency-ms = 150 }} }}
"#,
        server = server.display()
    )
}

/// Writes the next model: its faults, and a version tag so each is new.
fn model(dir: &Path, version: u32, faults: &str) {
    std::fs::write(
        dir.join("model.json"),
        format!(r#"{{"version": {version}{faults}}}"#),
    )
    .unwrap();
    std::fs::write(dir.join("metrics.json"), r#"{"accuracy": 1.0}"#).unwrap();
}

/// What the outside client saw: answers by status class and variant, and
/// requests that got no answer.
#[derive(Debug, Default, Clone)]
struct Seen {
    ok: u64,
    failed_stable: u64,
    failed_canary: u64,
    failed_other: u64,
    no_answer: u64,
    canary: u64,
}

impl Seen {
    fn failed(&self) -> u64 {
        self.failed_stable + self.failed_canary + self.failed_other + self.no_answer
    }
}

/// Sends ~25 requests a second to the gateway until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &str) -> Load {
        let addr = proxy.trim_start_matches("http://").to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (s, n) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answer = one(&addr);
                let mut n = n.lock().unwrap();
                match answer {
                    None => n.no_answer += 1,
                    Some((status, variant)) => {
                        if variant == "canary" {
                            n.canary += 1;
                        }
                        match (status, variant.as_str()) {
                            (200..=299, _) => n.ok += 1,
                            (_, "stable") => n.failed_stable += 1,
                            (_, "canary") => n.failed_canary += 1,
                            _ => n.failed_other += 1,
                        }
                    }
                }
                drop(n);
                std::thread::sleep(Duration::from_millis(40).saturating_sub(started.elapsed()));
            }
        });
        Load {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// One inference: status and the variant that served it.
fn one(addr: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body =
        r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}"#;
    write!(
        s,
        "POST /v2/models/m/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let variant = response
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-mlops-variant")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Some((status, variant))
}

fn production(dir: &Path) -> Option<i64> {
    Ledger::open(dir)
        .unwrap()
        .model_in_stage("m", ModelStage::Production)
        .unwrap()
        .map(|v| v.number)
}

/// A project directory with the sample requests, and what tears down its
/// services at the end. The model server is Python.
fn project() -> (tempfile::TempDir, Cleanup) {
    assert!(
        std::process::Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "python3 is needed for the test's model server (apt-get install python3; scripts/test-deps installs it)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cleanup = Cleanup(tmp.path().to_owned());
    std::fs::copy(
        repo().join("examples/iris/data/iris.csv"),
        tmp.path().join("requests.csv"),
    )
    .unwrap();
    (tmp, cleanup)
}

#[test]
fn under_steady_load_a_good_version_is_promoted_and_faulty_ones_roll_back_unseen_by_stable_clients()
{
    let (tmp, cleanup) = project();
    let dir = tmp.path();
    let registry = registry();

    // v1: a first release, no load yet (there is no gateway before it).
    model(dir, 1, "");
    let run = mlops_testkit::run_manifest(dir, &manifest(), &registry);
    assert_passed(dir, &run);
    let first = evidence(step(&run, "canary"), mlops_release::evidence::RELEASE);
    let proxy = first["gateway"].as_str().unwrap().to_owned();
    assert_eq!(production(dir), Some(1));

    // v2, good: promoted while the client keeps sending; nothing fails.
    model(dir, 2, "");
    let load = Load::start(&proxy);
    let run = mlops_testkit::run_manifest(dir, &manifest(), &registry);
    std::thread::sleep(Duration::from_secs(1));
    let seen = load.finish();
    assert_passed(dir, &run);
    assert_eq!(production(dir), Some(2));
    eprintln!("good v2: {seen:?}");
    assert!(seen.ok > 20 && seen.canary > 0, "{seen:?}");
    assert_eq!(seen.failed(), 0, "a promotion fails no request: {seen:?}");

    // v3 answers every third request with a 500: rolled back; the client's
    // failures are the candidate's own, none stable's, no lost request.
    model(dir, 3, r#", "error_every": 3"#);
    let load = Load::start(&proxy);
    let run = mlops_testkit::run_manifest(dir, &manifest(), &registry);
    std::thread::sleep(Duration::from_secs(1));
    let seen = load.finish();
    let canary = step(&run, "canary");
    assert_eq!(canary.status, StepStatus::Failed, "{}", log(dir, canary));
    let release = evidence(canary, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "rollback", "{release:#}");
    let deciding = release["rounds"].as_array().unwrap().last().unwrap();
    let checks = deciding["analysis"]["checks"].to_string();
    assert!(checks.contains("error-rate-slo"), "{checks}");
    assert_eq!(production(dir), Some(2));
    eprintln!("erroring v3: {seen:?}");
    assert_eq!(
        (seen.failed_stable, seen.failed_other, seen.no_answer),
        (0, 0, 0),
        "{seen:?}"
    );
    // The candidate's server fails every third request it gets, the
    // step's and the client's alike: the client sees at most that many
    // failures, all from the candidate while it had its share.
    let driven: u64 = release["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["analysis"]["candidate"]["requests"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        driven > 0,
        "no candidate requests in the rounds: {release:#}"
    );
    assert!(
        seen.failed_canary <= (driven + seen.canary) / 3 + 1,
        "more failures than the candidate's own rate ({driven} requests from the step): {seen:?}\n{release:#}"
    );
    let after = Load::start(&proxy);
    std::thread::sleep(Duration::from_secs(1));
    let after = after.finish();
    assert_eq!((after.failed(), after.canary), (0, 0), "{after:?}");

    // v4 answers 300 ms late: rolled back on its p99 latency, with no
    // failed request at all.
    model(dir, 4, r#", "latency_ms": 300"#);
    let load = Load::start(&proxy);
    let run = mlops_testkit::run_manifest(dir, &manifest(), &registry);
    std::thread::sleep(Duration::from_secs(1));
    let seen = load.finish();
    let canary = step(&run, "canary");
    assert_eq!(canary.status, StepStatus::Failed, "{}", log(dir, canary));
    let release = evidence(canary, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "rollback", "{release:#}");
    let reason = canary.reason.clone().unwrap_or_default();
    assert!(reason.contains("latency-p99-slo"), "{reason}");
    assert_eq!(production(dir), Some(2));
    eprintln!("slow v4: {seen:?}");
    assert_eq!(
        seen.failed(),
        0,
        "a slow candidate fails no request: {seen:?}"
    );
    assert!(seen.canary > 0, "{seen:?}");
    drop(cleanup);
}

/// The gateway killed with SIGKILL in the middle of a canary round: its
/// supervisor restarts it with its state (the round's weights), the
/// release step's calls wait for it, the requests it refused while down
/// count against neither variant, and the good candidate is promoted.
#[test]
fn a_gateway_killed_mid_canary_comes_back_with_its_state_and_the_release_completes() {
    let (tmp, cleanup) = project();
    let dir = tmp.path();
    let registry = registry();
    model(dir, 1, "");
    let run = mlops_testkit::run_manifest(dir, &manifest(), &registry);
    assert_passed(dir, &run);
    let gateway_dir = dir.join(".mlops/release/production/m-gateway");

    // v2, good: once the round has shifted traffic to it, kill -9 the
    // gateway.
    model(dir, 2, "");
    let killed = Arc::new(Mutex::new(None));
    let killer = {
        let (dir, gateway_dir, killed) = (dir.to_owned(), gateway_dir.clone(), killed.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let config = std::fs::read_to_string(gateway_dir.join("config.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
                let canary_weight = config.as_ref().and_then(|c| {
                    c["variants"]
                        .as_array()?
                        .iter()
                        .find(|v| v["name"] == "canary")?["weight"]
                        .as_u64()
                });
                if canary_weight.is_some_and(|w| w > 0) {
                    // Half a second into the round.
                    std::thread::sleep(Duration::from_millis(500));
                    let gateway = instances(&dir, "production", "m-gateway");
                    let handle = &gateway[0].replicas[0].handle;
                    let pid: i32 = handle
                        .strip_prefix("pid ")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or_else(|| panic!("no pid in {handle:?}"));
                    nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    )
                    .unwrap();
                    *killed.lock().unwrap() = Some((pid, config));
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let run = mlops_testkit::run_manifest(dir, &manifest(), &registry);
    killer.join().unwrap();
    let (pid, _) = killed
        .lock()
        .unwrap()
        .clone()
        .expect("the canary never shifted traffic: nothing was killed");
    let canary = step(&run, "canary");
    let text = log(dir, canary);
    eprintln!("{text}");
    assert_passed(dir, &run);
    let release = evidence(canary, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "promote", "{release:#}");
    assert_eq!(production(dir), Some(2));
    // It was restarted (another process), and serves the promoted version.
    let gateway = instances(dir, "production", "m-gateway");
    assert_ne!(gateway[0].replicas[0].handle, format!("pid {pid}"));
    let proxy = release["gateway"].as_str().unwrap().to_owned();
    let seen = {
        let load = Load::start(&proxy);
        std::thread::sleep(Duration::from_secs(1));
        load.finish()
    };
    assert!(seen.ok > 5 && seen.failed() == 0, "{seen:?}");
    // `mlops release status` tells the truth: the restarted gateway runs
    // and serves the promoted version, nothing is in progress.
    let out = std::process::Command::new(built("mlops"))
        .args(["release", "status", "--json", "--path"])
        .arg(dir)
        .output()
        .expect("run mlops");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(status["gateway"]["running"], true, "{status:#}");
    assert_eq!(status["production"]["id"], "m:2", "{status:#}");
    assert_eq!(status["gateway"]["proxy"], proxy.as_str(), "{status:#}");
    drop(cleanup);
}
