//! The `canary` kind end to end with real processes on the local provider:
//! the `iris` example model server packaged and deployed to staging, then
//! released to `production` behind the gateway (the `mlops` binary's
//! `gateway-serve`), a first release judged by its SLOs, a second compared
//! with stable, both promoted; a candidate that answers errors is rolled
//! back.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlops_core::ledger::StepSummary;
use mlops_core::registry::ModelStage;
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
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Trains iris on `data` into `dir/model.json` and `dir/metrics.json`.
fn train(dir: &Path, data: &Path) {
    let out = std::process::Command::new(built("iris"))
        .arg("train")
        .arg("--data")
        .arg(data)
        .arg("--model")
        .arg(dir.join("model.json"))
        .arg("--metrics")
        .arg(dir.join("metrics.json"))
        .output()
        .expect("run iris train");
    assert!(
        out.status.success(),
        "iris train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn registry() -> KindRegistry {
    let mut r = KindRegistry::new();
    mlops_iac::register(&mut r).expect("stage 1 registers");
    mlops_ci::register(&mut r).expect("stage 2 registers");
    mlops_cd::register(&mut r).expect("stage 3 registers");
    mlops_release::register(&mut r).expect("stage 4 registers");
    r.set_option(mlops_release::service::GatewayProgram::mlops(built(
        "mlops",
    )));
    r
}

/// The pipeline; `slo` is more of the canary's `analysis` keys.
fn manifest(slo: &str) -> String {
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

[release.steps.canary]
kind = "canary"
with = {{ steps = [50, 100], hold = "1s", traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 40 }}, analysis = {{ min-sample-size = 8, max-error-rate = 0.01, alpha = 0.01{slo} }} }}
"#,
        iris = built("iris").display()
    )
}

fn step<'a>(run: &'a RunSummary, name: &str) -> &'a StepSummary {
    run.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step `{name}` in {:?}", run.steps))
}

fn evidence(step: &StepSummary, kind: &str) -> serde_json::Value {
    step.evidence
        .iter()
        .find(|e| e.kind == kind)
        .map(|e| e.body.clone())
        .unwrap_or_else(|| panic!("no `{kind}` evidence on step {}", step.name))
}

fn log(dir: &Path, step: &StepSummary) -> String {
    step.log
        .as_ref()
        .and_then(|p| std::fs::read_to_string(dir.join(p)).ok())
        .unwrap_or_default()
}

fn assert_passed(dir: &Path, run: &RunSummary) {
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
}

/// The instances of `service` running in `env`, as the provider sees them.
fn instances(dir: &Path, env: &str, service: &str) -> Vec<mlops_iac::Instance> {
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
            environment: env.to_owned(),
            root: dir.to_owned(),
        };
        let mut found = provider.observe(&scope).await.unwrap();
        found.retain(|i| i.service == service);
        found
    })
}

/// One inference through the gateway's proxy: status, the variant that
/// served it, the model version iris reports.
fn infer(proxy: &str) -> (u16, String, String) {
    let addr = proxy.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = r#"{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}"#;
    write!(
        s,
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let variant = response
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-mlops-variant")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let version = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["model_version"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, variant, version)
}

/// Destroys every environment of the project when dropped.
struct Cleanup(PathBuf);

impl Cleanup {
    fn destroy(&self) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let options = mlops_iac::IacOptions::default();
            let provider = mlops_iac::kinds::provider_for(ProviderKind::Local, &options.supervisor)
                .await
                .map_err(|e| e.to_string())?;
            let ledger = Ledger::open(&self.0).map_err(|e| e.to_string())?;
            for environment in ["staging", "production"] {
                let scope = Scope {
                    project: "p".to_owned(),
                    environment: environment.to_owned(),
                    root: self.0.clone(),
                };
                mlops_iac::apply::destroy(
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
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = self.destroy() {
            eprintln!("cleanup: destroy failed: {e}");
        }
    }
}

/// `iris.csv` with its rows reordered (reversed, or odd rows first):
/// another training order, another model.
fn reordered_csv(dir: &Path, reversed: bool) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("examples/iris/data/iris.csv")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    if reversed {
        lines[1..].reverse();
    } else {
        let rows = lines.split_off(1);
        let (odd, even): (Vec<_>, Vec<_>) = rows.iter().enumerate().partition(|(i, _)| i % 2 == 1);
        lines.extend(odd.into_iter().chain(even).map(|(_, l)| *l));
    }
    let path = dir.join("reordered.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn a_first_release_and_a_second_are_promoted_and_a_failing_candidate_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cleanup = Cleanup(dir.to_owned());
    let iris_csv = repo().join("examples/iris/data/iris.csv");
    std::fs::copy(&iris_csv, dir.join("requests.csv")).unwrap();
    train(dir, &iris_csv);
    let registry = registry();

    // 1. A first release: nothing in production, judged by the SLOs.
    let run = mlops_testkit::run_manifest(dir, &manifest(""), &registry);
    assert_passed(dir, &run);
    let canary = step(&run, "canary");
    let release = evidence(canary, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "promote", "{release:#}");
    assert_eq!(release["candidate"], "iris:1");
    assert!(release["stable"].is_null());
    assert_eq!(release["rounds"].as_array().map(Vec::len), Some(2));
    assert!(release["rounds"][0]["analysis"]["stable"].is_null());
    let ledger = Ledger::open(dir).unwrap();
    let production = |ledger: &Ledger| {
        ledger
            .model_in_stage("iris", ModelStage::Production)
            .unwrap()
            .map(|v| v.number)
    };
    assert_eq!(production(&ledger), Some(1));
    let proxy = release["gateway"].as_str().unwrap().to_owned();
    let (status, variant, _) = infer(&proxy);
    assert_eq!((status, variant.as_str()), (200, "stable"));
    let owned = |dir: &Path| {
        instances(dir, "production", "iris")
            .into_iter()
            .filter(|i| i.owner.is_some())
            .count()
    };
    assert_eq!(owned(dir), 0, "the canary instance is gone");
    let log1 = log(dir, canary);
    assert!(log1.contains("round 1: canary 50%"), "{log1}");
    eprintln!("first release:\n{log1}");

    // 2. A new version (another training order): compared with stable.
    train(dir, &reordered_csv(dir, true));
    let run = mlops_testkit::run_manifest(dir, &manifest(""), &registry);
    assert_passed(dir, &run);
    let canary = step(&run, "canary");
    let release = evidence(canary, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "promote", "{release:#}");
    assert_eq!(release["candidate"], "iris:2");
    assert_eq!(release["stable"], "iris:1");
    eprintln!("second release:\n{}", log(dir, canary));
    let stable = &release["rounds"][0]["analysis"]["stable"];
    assert!(stable["requests"].as_u64().unwrap_or(0) > 0, "{release:#}");
    assert_eq!(production(&ledger), Some(2));
    assert_eq!(
        ledger.model_version("iris", 1).unwrap().map(|v| v.stage),
        Some(ModelStage::Archived)
    );
    assert_eq!(owned(dir), 0, "the canary instance is gone");
    let declared: Vec<_> = instances(dir, "production", "iris")
        .into_iter()
        .filter(|i| i.owner.is_none())
        .collect();
    assert_eq!(declared.len(), 1, "{declared:?}");
    assert_eq!(
        declared[0].model_version.as_deref(),
        Some("iris:2"),
        "{declared:?}"
    );
    let (status, variant, _) = infer(&proxy);
    assert_eq!((status, variant.as_str()), (200, "stable"));

    // 3. A candidate that misses the p99 latency SLO (a bound no server
    // meets): rolled back at the first step, stable keeps serving.
    train(dir, &reordered_csv(dir, false));
    let run =
        mlops_testkit::run_manifest(dir, &manifest(", max-p99-latency-ms = 0.001"), &registry);
    let canary = step(&run, "canary");
    assert_eq!(canary.status, StepStatus::Failed, "{}", log(dir, canary));
    let reason = canary.reason.clone().unwrap_or_default();
    eprintln!("rollback:\n{}", log(dir, canary));
    assert!(
        reason.contains("rolled back") && reason.contains("latency-p99-slo"),
        "{reason}"
    );
    let release = evidence(canary, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "rollback", "{release:#}");
    assert_eq!(release["candidate"], "iris:3");
    assert_eq!(release["stable"], "iris:2");
    let rollback = evidence(canary, mlops_release::evidence::ROLLBACK);
    assert_eq!(rollback["candidate"], "iris:3", "{rollback:#}");
    assert_eq!(production(&ledger), Some(2));
    let rolled_back = ledger.model_version("iris", 3).unwrap().unwrap();
    assert_eq!(rolled_back.stage, ModelStage::Archived);
    let history = ledger.model_stage_history("iris", 3).unwrap();
    assert!(
        history
            .last()
            .is_some_and(|c| c.reason.contains("rolled back")),
        "{history:?}"
    );
    assert_eq!(owned(dir), 0, "the candidate's instance is gone");
    let (status, variant, _) = infer(&proxy);
    assert_eq!((status, variant.as_str()), (200, "stable"));
    let declared: Vec<_> = instances(dir, "production", "iris");
    assert_eq!(declared.len(), 1, "{declared:?}");
    assert_eq!(declared[0].model_version.as_deref(), Some("iris:2"));

    drop(cleanup);
    assert!(
        instances(dir, "production", "iris").is_empty()
            && instances(dir, "production", "iris-gateway").is_empty(),
        "destroy removed everything"
    );
}
