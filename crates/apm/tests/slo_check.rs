//! The `slo-check` kind end to end with real processes on the local
//! provider: iris packaged, deployed and released (a first canary), then
//! stage 5 checks the SLOs over a window of traffic through the gateway.
//! The collector it starts is a service of the environment: it runs after
//! the pipeline, comes back after `kill -9` with its database whole, and
//! `mlops monitor` reads what it stored.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mlops_apm::tsdb::{Retention, Selector, Store, now_ms};
use mlops_core::{KindRegistry, Ledger, RunSummary, StepStatus};
use mlops_iac::apply::ApplyContext;
use mlops_iac::{ProviderKind, Scope};

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target directory")
        .to_owned()
}

/// A binary of the workspace built beside the test binary.
fn built(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build -p mlops-cli -p iris -p mlops-iac --bins`)",
        path.display()
    );
    path
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn registry() -> KindRegistry {
    let mut r = KindRegistry::new();
    mlops_iac::register(&mut r).expect("stage 1 registers");
    mlops_ci::register(&mut r).expect("stage 2 registers");
    mlops_cd::register(&mut r).expect("stage 3 registers");
    mlops_release::register(&mut r).expect("stage 4 registers");
    mlops_apm::register(&mut r).expect("stage 5 registers");
    let mlops = built("mlops");
    r.set_option(mlops_release::service::GatewayProgram::mlops(&mlops));
    r.set_option(mlops_apm::collector::service::CollectorProgram::mlops(
        mlops,
    ));
    r
}

fn train(dir: &Path) {
    let out = Command::new(built("iris"))
        .args(["train", "--data"])
        .arg(repo().join("examples/iris/data/iris.csv"))
        .arg("--model")
        .arg(dir.join("model.json"))
        .arg("--metrics")
        .arg(dir.join("metrics.json"))
        .output()
        .expect("run iris train");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pipeline up to a first canary, then `[apm]` and its steps.
fn manifest(apm: &str) -> String {
    format!(
        r#"
[project]
name = "p"

[infra]
provider = "local"

[infra.services.iris]
command = ["{iris}", "serve", "--model", "{{model-dir}}/model.json", "--host", "{{host}}", "--port", "{{port}}"]
replicas = 1
health = {{ path = "/v2/health/ready", interval = "200ms", deadline = "20s" }}
stop-grace = "2s"

[iac.steps.ready]
run = "true"

[ci.steps.check]
run = "true"

[cd.steps.package]
kind = "package"
with = {{ model = "iris", files = ["model.json"], metrics = "metrics.json" }}

[cd.steps.deploy]
kind = "deploy"
with = {{ service = "iris", model = "iris", version = "latest", environment = "staging" }}
depends-on = ["package"]

[release]
service = "iris"
model = "iris"
tag = false

[release.steps.canary]
kind = "canary"
with = {{ steps = [100], hold = "1s", traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 40 }}, analysis = {{ min-sample-size = 8, max-error-rate = 0.05 }} }}

{apm}"#,
        iris = built("iris").display()
    )
}

const APM: &str = r#"
[apm]
scrape-interval = "250ms"
period = "1h"
min-requests = 20

[apm.slo.availability]
objective = "availability"
target = 0.99

[apm.slo.fast]
objective = "latency"
threshold = "120ms"
target = 0.9

[apm.steps.slo]
kind = "slo-check"
with = { window = "3s", traffic = { csv = "requests.csv", exclude = ["species"], rate = 40 } }
"#;

fn step<'a>(run: &'a RunSummary, name: &str) -> &'a mlops_core::ledger::StepSummary {
    run.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step `{name}` in {:?}", run.steps))
}

fn log(dir: &Path, step: &mlops_core::ledger::StepSummary) -> String {
    step.log
        .as_ref()
        .and_then(|p| std::fs::read_to_string(dir.join(p)).ok())
        .unwrap_or_default()
}

fn evidence(step: &mlops_core::ledger::StepSummary, kind: &str) -> serde_json::Value {
    step.evidence
        .iter()
        .find(|e| e.kind == kind)
        .map(|e| e.body.clone())
        .unwrap_or_else(|| panic!("no `{kind}` evidence on step {}", step.name))
}

fn instances(dir: &Path, service: &str) -> Vec<mlops_iac::Instance> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = mlops_iac::IacOptions::default();
        let provider = mlops_iac::kinds::provider_for(ProviderKind::Local, &options.supervisor)
            .await
            .unwrap();
        let scope = Scope {
            project: "p".to_owned(),
            environment: "production".to_owned(),
            root: dir.to_owned(),
        };
        let mut found = provider.observe(&scope).await.unwrap();
        found.retain(|i| i.service == service);
        found
    })
}

/// Destroys every environment of the project when dropped.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let options = mlops_iac::IacOptions::default();
            let provider = mlops_iac::kinds::provider_for(ProviderKind::Local, &options.supervisor)
                .await
                .unwrap();
            let Ok(ledger) = Ledger::open(&self.0) else {
                return;
            };
            for environment in ["staging", "production"] {
                let scope = Scope {
                    project: "p".to_owned(),
                    environment: environment.to_owned(),
                    root: self.0.clone(),
                };
                if let Err(e) = mlops_iac::apply::destroy(
                    provider.as_ref(),
                    &scope,
                    &ledger,
                    None,
                    &ApplyContext {
                        actor: "test cleanup".to_owned(),
                        step: None,
                        on_ready: None,
                    },
                )
                .await
                {
                    eprintln!("cleanup: destroy failed: {e}");
                }
            }
        });
    }
}

fn mlops(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(built("mlops"))
        .args(args)
        .arg("--path")
        .arg(dir)
        .output()
        .expect("run mlops");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn slos_are_checked_over_traffic_and_the_collector_outlives_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _cleanup = Cleanup(dir.to_owned());
    std::fs::copy(
        repo().join("examples/iris/data/iris.csv"),
        dir.join("requests.csv"),
    )
    .unwrap();
    train(dir);
    let run = mlops_testkit::run_manifest(dir, &manifest(APM), &registry());
    for s in &run.steps {
        assert_eq!(
            s.status,
            StepStatus::Passed,
            "step {}: {:?}\n{}",
            s.name,
            s.reason,
            log(dir, s)
        );
    }
    let slo = step(&run, "slo");
    let e = evidence(slo, mlops_apm::evidence::SLO);
    eprintln!("{}\n{e:#}", log(dir, slo));
    assert_eq!(e["verdict"], "pass");
    let results = e["slos"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["held"], true, "{r:#}");
        // 3 s at 40/s: the gateway counted them (the collector scraped).
        let total = r["counts"]["total"].as_f64().unwrap();
        assert!((80.0..=200.0).contains(&total), "{r:#}");
    }

    // The collector is a service of the environment, owned by `apm`, and
    // runs after the pipeline.
    let collector = instances(dir, "iris-collector");
    assert_eq!(collector.len(), 1, "{collector:?}");
    assert_eq!(collector[0].owner.as_deref(), Some("apm"));
    assert!(collector[0].is_healthy());
    let db_dir = dir.join(".mlops/apm/production/iris-collector");
    let requests = |from: i64| {
        let store = Store::open(&db_dir, Retention::default()).unwrap();
        store
            .increase(
                &Selector::name("mlops_gateway_requests_total"),
                from,
                now_ms() + 1,
            )
            .unwrap()
    };
    let before = requests(0);
    assert!(before >= 80.0, "{before}");
    // The step gave the gateway a bucket at the latency SLO's threshold
    // (120 ms is no default bound), and the collector stores it.
    let store = Store::open_read(&db_dir).unwrap();
    let at_threshold = store.select(
        &Selector::name("mlops_gateway_request_duration_seconds_bucket").with("le", "0.12"),
    );
    assert!(!at_threshold.is_empty(), "{:?}", store.names());
    drop(store);

    // kill -9: the supervisor restarts it; the database is whole and it
    // goes on collecting (the replica's own /metrics too).
    let handle = collector[0].replicas[0].handle.clone();
    let pid: i32 = handle
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in the handle {handle:?}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = instances(dir, "iris-collector");
        if now.len() == 1 && now[0].is_healthy() && now[0].replicas[0].handle != handle {
            break;
        }
        assert!(Instant::now() < deadline, "not restarted: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let conn = rusqlite::Connection::open(db_dir.join("metrics.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let restarted = now_ms();
    std::thread::sleep(Duration::from_secs(2));
    let store = Store::open(&db_dir, Retention::default()).unwrap();
    let up = store
        .range(
            &Selector::name("mlops_scrape_up").with("target", "gateway"),
            restarted,
            now_ms() + 1,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(up.len(), 1, "the restarted collector scrapes the gateway");
    assert_eq!(up[0].points[0].value, 1.0);
    assert!(
        !store
            .select(&Selector::name("iris_requests_total"))
            .is_empty(),
        "{:?}",
        store.names()
    );

    // `mlops monitor` reads it.
    let (code, out, err) = mlops(
        dir,
        &[
            "monitor",
            "query",
            "mlops_gateway_requests_total{code=\"2xx\"}",
            "--since",
            "5m",
            "--step",
            "1s",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let series: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(series.as_array().is_some_and(|s| !s.is_empty()), "{out}");
    let (code, out, err) = mlops(
        dir,
        &[
            "monitor",
            "query",
            "mlops_gateway_request_duration_seconds",
            "--quantile",
            "0.99",
            "--since",
            "5m",
            "--csv",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("time,ts_ms,name,quantile,value\n"), "{out}");
    // Exemplars: the gateway named requests in its latency buckets, the
    // collector kept them, and the replica's log has the slowest one of
    // the SLO check's window. (Older ones may name requests of the canary
    // step's candidate instance, stopped since, whose log went with it.)
    let (code, out, err) = mlops(dir, &["monitor", "exemplars", "--json"]);
    assert_eq!(code, 0, "{err}");
    let exemplars: serde_json::Value = serde_json::from_str(&out).unwrap();
    let window_start = step(&run, "slo")
        .started_at
        .clone()
        .expect("the SLO step started");
    let slowest = exemplars
        .as_array()
        .unwrap()
        .iter()
        .find(|e| mlops_core::ledger::format_ms(e["ts"].as_i64().unwrap_or(0)) >= window_start)
        .unwrap_or_else(|| panic!("no exemplar since {window_start}: {out}"));
    let id = slowest["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no exemplar: {out}"));
    assert!(slowest["key"]["labels"]["le"].is_string(), "{out}");
    let (code, out, err) = mlops(dir, &["logs", "--request-id", id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(id),
        "`mlops logs --request-id {id}` found nothing:\n{out}\n{err}"
    );
    let (code, out, _) = mlops(dir, &["monitor", "exemplars", "--min", "1h"]);
    assert_eq!(code, 0);
    assert!(out.contains("no exemplars"), "{out}");
    let (code, out, _) = mlops(dir, &["monitor", "targets"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("gateway"), "{out}");
    let (code, out, err) = mlops(dir, &["monitor", "alerts", "--json"]);
    assert_eq!(code, 0, "{err}");
    let alerts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(alerts["alerts"].as_array().map(Vec::len), Some(6), "{out}");
    let (code, _, err) = mlops(dir, &["monitor", "query", "no_such_series"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("series held"), "{err}");
    let (code, _, err) = mlops(dir, &["monitor", "query", "bad{series", "--since", "soon"]);
    assert_eq!(code, 2, "{err}");
    // Bad input is refused as such (2), not reported as "no data" (3).
    for series in [
        "mlops_gateway_requests_total{code!=\"2xx\"}",
        "{code=\"2xx\"}",
        "9lives",
        "x{1a=\"b\"}",
    ] {
        let (code, _, err) = mlops(dir, &["monitor", "query", series]);
        assert_eq!(code, 2, "{series}: {err}");
        assert!(err.contains("invalid series"), "{series}: {err}");
    }
    // Steps that would never end, or a --since beyond the epoch: refused
    // or bounded, never a hang or an overflow.
    let args = ["--quantile", "0.5", "--since", "1h", "--step", "1ms"];
    let (code, _, err) = mlops(
        dir,
        &[
            &["monitor", "query", "mlops_gateway_request_duration_seconds"][..],
            &args[..],
        ]
        .concat(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("raise --step"), "{err}");
    let (code, _, err) = mlops(
        dir,
        &[
            "monitor",
            "query",
            "mlops_gateway_requests_total",
            "--since",
            "200000000y",
            "--step",
            "100000y",
        ],
    );
    assert_eq!(code, 0, "{err}");
}

/// An SLO the service cannot meet fails the step, with the numbers.
#[test]
fn a_missed_slo_fails_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _cleanup = Cleanup(dir.to_owned());
    std::fs::copy(
        repo().join("examples/iris/data/iris.csv"),
        dir.join("requests.csv"),
    )
    .unwrap();
    train(dir);
    // Nothing answers within half a millisecond through the gateway.
    let apm = APM
        .replace("threshold = \"120ms\"", "threshold = \"500us\"")
        .replace("target = 0.9\n", "target = 0.999\n");
    let run = mlops_testkit::run_manifest(dir, &manifest(&apm), &registry());
    let slo = step(&run, "slo");
    assert_eq!(slo.status, StepStatus::Failed, "{}", log(dir, slo));
    let reason = slo.reason.clone().unwrap_or_default();
    assert!(reason.contains("fast: missed"), "{reason}");
    let e = evidence(slo, mlops_apm::evidence::SLO);
    assert_eq!(e["verdict"], "fail");
    let fast = e["slos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slo"]["name"] == "fast")
        .unwrap();
    assert_eq!(fast["held"], false);
    assert!(fast["counts"]["bad"].as_f64().unwrap() > 0.0, "{fast:#}");
}

/// The drift check: traffic drawn from the training data passes; traffic
/// with one feature scaled fails, naming it, with the numbers recorded.
#[test]
fn drift_in_the_live_inputs_fails_the_drift_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _cleanup = Cleanup(dir.to_owned());
    let iris = std::fs::read_to_string(repo().join("examples/iris/data/iris.csv")).unwrap();
    std::fs::write(dir.join("requests.csv"), &iris).unwrap();
    let mut scaled = String::new();
    for (i, line) in iris.lines().enumerate() {
        if i > 0 {
            let mut f: Vec<String> = line.split(',').map(str::to_owned).collect();
            f[2] = (f[2].parse::<f64>().unwrap() * 1.5).to_string();
            scaled.push_str(&f.join(","));
        } else {
            scaled.push_str(line);
        }
        scaled.push('\n');
    }
    std::fs::write(dir.join("scaled.csv"), scaled).unwrap();
    train(dir);
    let drift = |traffic: &str| {
        format!(
            r#"
[apm.steps.drift]
kind = "drift-check"
with = {{ reference = "requests.csv", exclude = ["species"], target = "species", output = "label", window = "3s", min-samples = 50, traffic = {{ csv = "{traffic}", exclude = ["species"], rate = 50 }} }}
"#
        )
    };
    let run = mlops_testkit::run_manifest(dir, &manifest(&drift("requests.csv")), &registry());
    let step_ = step(&run, "drift");
    assert_eq!(
        step_.status,
        StepStatus::Passed,
        "{:?}\n{}",
        step_.reason,
        log(dir, step_)
    );
    let e = evidence(step_, mlops_apm::evidence::DRIFT);
    assert_eq!(e["verdict"], "no-drift", "{e:#}");
    let features: Vec<&str> = e["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["feature"].as_str().unwrap())
        .collect();
    assert_eq!(
        features,
        [
            "petal_length",
            "petal_width",
            "prediction",
            "sepal_length",
            "sepal_width"
        ]
    );
    assert!(e["sampled_requests"].as_u64().unwrap() >= 100, "{e:#}");

    // One request followed end to end by its id: the gateway's prediction
    // log and the model server's line for it.
    let predictions = std::fs::read_to_string(
        dir.join(".mlops/release/production/iris-gateway/predictions.jsonl"),
    )
    .unwrap();
    let sample: serde_json::Value =
        serde_json::from_str(predictions.lines().last().unwrap()).unwrap();
    let id = sample["request_id"].as_str().unwrap().to_owned();
    let (code, out, err) = mlops(dir, &["logs", "--request-id", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("iris-gateway predictions")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("iris ") && l.contains("\"event\":\"request\"")),
        "the model server logged the gateway's request id: {out}"
    );
    let (code, out, _) = mlops(dir, &["logs", "--status", "5xx", "--since", "10m"]);
    assert_eq!(code, 1, "no failed request: {out}");
    let (code, _, err) = mlops(dir, &["logs", "--status", "7xx"]);
    assert_eq!(code, 2, "{err}");

    let run = mlops_testkit::run_manifest(dir, &manifest(&drift("scaled.csv")), &registry());
    let step_ = step(&run, "drift");
    assert_eq!(step_.status, StepStatus::Failed, "{}", log(dir, step_));
    let reason = step_.reason.clone().unwrap_or_default();
    assert!(reason.contains("petal_length"), "{reason}");
    assert!(!reason.contains("sepal_length"), "{reason}");
    let e = evidence(step_, mlops_apm::evidence::DRIFT);
    assert!(
        e["drifted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "petal_length"),
        "{e:#}"
    );
}
