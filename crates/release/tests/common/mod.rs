//! What the release crate's end-to-end tests share: the iris model server
//! and the `mlops` binary built beside the test binaries, a pipeline that
//! packages, deploys and releases iris on the local provider, and ways to
//! look at what runs.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlops_core::ledger::StepSummary;
use mlops_core::{KindRegistry, Ledger, RunSummary, StepStatus};
use mlops_iac::apply::ApplyContext;
use mlops_iac::{ProviderKind, Scope};

pub(crate) fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target directory")
        .to_owned()
}

/// A binary of the workspace built beside the test binary.
pub(crate) fn built(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Trains iris on `data` into `dir/model.json` and `dir/metrics.json`.
pub(crate) fn train(dir: &Path, data: &Path) {
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

pub(crate) fn registry() -> KindRegistry {
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
pub(crate) fn manifest(slo: &str) -> String {
    manifest_with(
        &format!("min-sample-size = 8, max-error-rate = 0.01, alpha = 0.01{slo}"),
        "",
    )
}

/// The pipeline with the canary's `analysis` keys and more of its `with`
/// keys (`extra`).
pub(crate) fn manifest_with(analysis: &str, extra: &str) -> String {
    manifest_release(
        &["model.json"],
        &format!(
            r#"
[release.steps.canary]
kind = "canary"
with = {{ steps = [50, 100], hold = "1s", traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 40 }}, analysis = {{ {analysis} }}{extra} }}
"#
        ),
    )
}

/// The pipeline packaging `files` (beside `metrics.json`), deploying to
/// staging, and releasing with `release_steps` (`[release.steps.*]`
/// tables).
pub(crate) fn manifest_release(files: &[&str], release_steps: &str) -> String {
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
with = {{ model = "iris", files = {files:?}, metrics = "metrics.json" }}

[cd.steps.deploy]
kind = "deploy"
with = {{ service = "iris", model = "iris", version = "latest", environment = "staging" }}
depends-on = ["package"]

[release]
service = "iris"
model = "iris"
{release_steps}"#,
        iris = built("iris").display()
    )
}

/// Trains iris on `data` with more `iris train` flags (`--epochs 3`).
pub(crate) fn train_with(dir: &Path, data: &Path, flags: &[&str]) {
    let out = std::process::Command::new(built("iris"))
        .arg("train")
        .arg("--data")
        .arg(data)
        .arg("--model")
        .arg(dir.join("model.json"))
        .arg("--metrics")
        .arg(dir.join("metrics.json"))
        .args(flags)
        .output()
        .expect("run iris train");
    assert!(
        out.status.success(),
        "iris train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The release state file of iris in production, if written.
pub(crate) fn release_state(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(".mlops/release/production/iris.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// A model version's stage in the registry.
pub(crate) fn stage_of(dir: &Path, number: i64) -> Option<mlops_core::registry::ModelStage> {
    Ledger::open(dir)
        .ok()?
        .model_version("iris", number)
        .ok()?
        .map(|v| v.stage)
}

/// The production version's number.
pub(crate) fn production(dir: &Path) -> Option<i64> {
    Ledger::open(dir)
        .ok()?
        .model_in_stage("iris", mlops_core::registry::ModelStage::Production)
        .ok()?
        .map(|v| v.number)
}

pub(crate) fn step<'a>(run: &'a RunSummary, name: &str) -> &'a StepSummary {
    run.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step `{name}` in {:?}", run.steps))
}

pub(crate) fn evidence(step: &StepSummary, kind: &str) -> serde_json::Value {
    step.evidence
        .iter()
        .find(|e| e.kind == kind)
        .map(|e| e.body.clone())
        .unwrap_or_else(|| panic!("no `{kind}` evidence on step {}", step.name))
}

pub(crate) fn log(dir: &Path, step: &StepSummary) -> String {
    step.log
        .as_ref()
        .and_then(|p| std::fs::read_to_string(dir.join(p)).ok())
        .unwrap_or_default()
}

pub(crate) fn assert_passed(dir: &Path, run: &RunSummary) {
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
pub(crate) fn instances(dir: &Path, env: &str, service: &str) -> Vec<mlops_iac::Instance> {
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
pub(crate) fn infer(proxy: &str) -> (u16, String, String) {
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
pub(crate) struct Cleanup(pub(crate) PathBuf);

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
pub(crate) fn reordered_csv(dir: &Path, reversed: bool) -> PathBuf {
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
