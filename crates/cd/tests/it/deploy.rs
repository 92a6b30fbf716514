//! The `deploy` and `smoke` kinds with real processes: the `iris` example
//! served by the local provider's supervisor, two replicas, in `staging`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mlops_core::ledger::StepSummary;
use mlops_core::registry::ModelStage;
use mlops_core::{Ledger, RunSummary, StepStatus};
use mlops_iac::apply::ApplyContext;
use mlops_iac::{ProviderKind, Scope};

const ENV: &str = "staging";

use super::run_pipeline;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `iris` example binary, built beside the test binary.
fn iris() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory")
        .join("iris");
    assert!(
        path.is_file(),
        "{} is missing: run cargo build -p iris",
        path.display()
    );
    path
}

/// Trains the iris model on `data` into `dir/model.json`.
fn train(dir: &Path, data: &Path) {
    let out = std::process::Command::new(iris())
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

fn iris_csv() -> PathBuf {
    repo().join("examples/iris/data/iris.csv")
}

/// `[infra]` with the iris service, then package, deploy and (optionally)
/// smoke steps.
fn manifest(health: &str, deadline: &str, smoke: Option<&str>) -> String {
    let iris = iris();
    let mut m = format!(
        r#"
[infra]
provider = "local"

[infra.services.iris]
command = ["{iris}", "serve", "--model", "{{model-dir}}/model.json", "--host", "{{host}}", "--port", "{{port}}"]
replicas = 2
health = {{ path = "{health}", interval = "200ms", deadline = "{deadline}" }}
stop-grace = "2s"

[cd.steps.package]
kind = "package"
with = {{ model = "iris", files = ["model.json"], metrics = "metrics.json" }}

[cd.steps.deploy]
kind = "deploy"
with = {{ service = "iris", model = "iris", version = "latest", environment = "{ENV}" }}
depends-on = ["package"]
"#,
        iris = iris.display()
    );
    if let Some(requests) = smoke {
        m.push_str(&format!(
            r#"
[cd.steps.smoke]
kind = "smoke"
with = {{ service = "iris", environment = "{ENV}", requests = "{requests}" }}
depends-on = ["deploy"]
"#
        ));
    }
    m
}

fn healthy_manifest(smoke: Option<&str>) -> String {
    manifest("/v2/health/ready", "20s", smoke)
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

fn assert_passed(step: &StepSummary) {
    assert_eq!(
        step.status,
        StepStatus::Passed,
        "step {}: {:?}\n{:?}",
        step.name,
        step.reason,
        step.log
    );
}

/// `.mlops/infra/local/`: one directory per environment.
fn local_dir(dir: &Path) -> PathBuf {
    dir.join(".mlops/infra/local")
}

/// The environments the local provider has state for.
fn environments(dir: &Path) -> Vec<String> {
    let mut envs: Vec<String> = std::fs::read_dir(local_dir(dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    envs.sort();
    envs
}

/// Every instance directory under `.mlops/infra/local/<env>/<service>/`,
/// in every environment.
fn instance_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for env in environments(dir) {
        let Ok(services) = std::fs::read_dir(local_dir(dir).join(env)) else {
            continue;
        };
        for service in services.flatten() {
            if let Ok(instances) = std::fs::read_dir(service.path()) {
                for i in instances.flatten() {
                    if i.path().is_dir() {
                        found.push(i.path());
                    }
                }
            }
        }
    }
    found.sort();
    found
}

/// The supervisor pids recorded under the environment.
fn supervisor_pids(dir: &Path) -> Vec<i32> {
    instance_dirs(dir)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("supervisor.pid")).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter_map(|v| v["pid"].as_i64())
        .map(|p| p as i32)
        .collect()
}

/// Whether a process runs (a zombie counts as dead).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Destroys whatever the project runs (every environment) when dropped, then
/// checks that nothing is left (only when not already panicking).
struct Cleanup {
    dir: PathBuf,
    pids: Vec<i32>,
}

impl Cleanup {
    fn new(dir: &Path) -> Self {
        Cleanup {
            dir: dir.to_owned(),
            pids: Vec::new(),
        }
    }

    /// Remembers the supervisors running now, to check they are gone.
    fn note_pids(&mut self) {
        for p in supervisor_pids(&self.dir) {
            if !self.pids.contains(&p) {
                self.pids.push(p);
            }
        }
    }

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
            let ledger = Ledger::open(&self.dir).map_err(|e| e.to_string())?;
            let mut envs = environments(&self.dir);
            if !envs.iter().any(|e| e == ENV) {
                envs.push(ENV.to_owned());
            }
            for environment in envs {
                let scope = Scope {
                    project: "p".to_owned(),
                    environment,
                    root: self.dir.clone(),
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

    /// Destroys and asserts nothing is left.
    fn finish(mut self) {
        self.note_pids();
        self.destroy().expect("destroy");
        self.assert_gone();
    }

    fn assert_gone(&self) {
        let left = instance_dirs(&self.dir);
        assert!(left.is_empty(), "instance directories left: {left:?}");
        // The supervisor may need a moment to exit after stop returned.
        let start = std::time::Instant::now();
        while self.pids.iter().any(|p| alive(*p))
            && start.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let running: Vec<i32> = self.pids.iter().copied().filter(|p| alive(*p)).collect();
        assert!(running.is_empty(), "supervisors still alive: {running:?}");
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.note_pids();
            if let Err(e) = self.destroy() {
                eprintln!("cleanup: destroy failed: {e}");
            }
            for p in &self.pids {
                if alive(*p) {
                    let _ = std::process::Command::new("kill")
                        .arg(p.to_string())
                        .status();
                }
            }
        }
    }
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    train(dir.path(), &iris_csv());
    dir
}

#[test]
fn package_deploy_and_smoke_pass_and_a_second_run_is_a_noop() {
    let dir = project();
    std::fs::copy(
        repo().join("examples/iris/data/smoke.json"),
        dir.path().join("smoke.json"),
    )
    .unwrap();
    let mut cleanup = Cleanup::new(dir.path());

    let run = run_pipeline(dir.path(), &healthy_manifest(Some("smoke.json")));
    cleanup.note_pids();
    for name in ["package", "deploy", "smoke"] {
        assert_passed(step(&run, name));
    }
    let deploy = evidence(step(&run, "deploy"), "deploy");
    assert_eq!(deploy["version"], "iris:1");
    assert_eq!(deploy["environment"], ENV);
    assert_eq!(deploy["provider"], "local");
    assert_eq!(deploy["noop"], false);
    assert_eq!(deploy["endpoints"].as_array().unwrap().len(), 2, "{deploy}");
    assert_eq!(deploy["actions"][0]["action"], "create", "{deploy}");
    let instance = deploy["instance"].as_str().expect("an instance").to_owned();
    let smoke = evidence(step(&run, "smoke"), "smoke");
    assert_eq!(smoke["failed"], 0, "{smoke}");
    assert_eq!(smoke["endpoints"].as_array().unwrap().len(), 2);
    // 4 cases on each of the 2 replicas.
    assert_eq!(smoke["cases"], 8, "{smoke}");

    let ledger = Ledger::open(dir.path()).unwrap();
    let v = ledger.find_model_version(Some("iris"), "1").unwrap();
    assert_eq!(v.stage, ModelStage::Staging);
    let services = ledger.infra_services(ENV, "local").unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].model_version.as_deref(), Some("iris:1"));
    assert_eq!(instance_dirs(dir.path()).len(), 1);

    // The same again: nothing changes.
    let again = run_pipeline(dir.path(), &healthy_manifest(Some("smoke.json")));
    for name in ["package", "deploy", "smoke"] {
        assert_passed(step(&again, name));
    }
    let deploy = evidence(step(&again, "deploy"), "deploy");
    assert_eq!(deploy["noop"], true, "{deploy}");
    assert_eq!(deploy["actions"].as_array().unwrap().len(), 0);
    assert_eq!(deploy["instance"], instance.as_str());
    assert_eq!(deploy["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(instance_dirs(dir.path()).len(), 1);
    cleanup.finish();
}

/// A client that finds the service through the deploy's port file: it
/// reads the file and asks for readiness, again and again, until stopped.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Probes>,
}

#[derive(Debug, Default)]
struct Probes {
    answered: usize,
    failures: Vec<String>,
    ports: BTreeSet<u16>,
}

impl Prober {
    fn start(port_file: PathBuf) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut probes = Probes::default();
            while !flag.load(Ordering::Relaxed) {
                match Self::probe(&port_file) {
                    Ok(port) => {
                        probes.answered += 1;
                        probes.ports.insert(port);
                    }
                    Err(e) => probes.failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            probes
        });
        Prober { stop, thread }
    }

    fn probe(port_file: &Path) -> Result<u16, String> {
        let text = std::fs::read_to_string(port_file)
            .map_err(|e| format!("{}: {e}", port_file.display()))?;
        let port: u16 = text
            .trim()
            .parse()
            .map_err(|e| format!("the port file holds {text:?}: {e}"))?;
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect to port {port}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(
                b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            .map_err(|e| format!("send to port {port}: {e}"))?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| format!("read from port {port}: {e}"))?;
        match answer.lines().next() {
            Some(status) if status.starts_with("HTTP/1.1 200") => Ok(port),
            status => Err(format!("port {port} answered {status:?}")),
        }
    }

    fn finish(self) -> Probes {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the prober does not panic")
    }
}

/// A new version replaces the running one without a gap in readiness: a
/// client following the port file is answered "ready" by every probe while
/// the replace happens (new instance healthy, published, old one drained,
/// then stopped).
#[test]
fn a_new_version_replaces_the_running_one() {
    let dir = project();
    let mut cleanup = Cleanup::new(dir.path());
    let with_port_file = healthy_manifest(None).replace(
        &format!("environment = \"{ENV}\" }}"),
        &format!("environment = \"{ENV}\", port-file = \"iris.port\" }}"),
    );
    assert!(with_port_file.contains("port-file"));
    let run = run_pipeline(dir.path(), &with_port_file);
    cleanup.note_pids();
    assert_passed(step(&run, "deploy"));
    let first = evidence(step(&run, "deploy"), "deploy");
    let old = first["instance"].as_str().unwrap().to_owned();
    let old_dirs = instance_dirs(dir.path());
    assert_eq!(old_dirs.len(), 1);
    assert!(old_dirs[0].ends_with(&old), "{old_dirs:?} vs {old}");

    // Retrain on every row but each fifth one: another model.
    let csv = std::fs::read_to_string(iris_csv()).unwrap();
    let mut lines = csv.lines();
    let mut fewer = format!("{}\n", lines.next().unwrap());
    for (i, l) in lines.enumerate() {
        if i % 5 != 4 {
            fewer.push_str(l);
            fewer.push('\n');
        }
    }
    let data = dir.path().join("fewer.csv");
    std::fs::write(&data, fewer).unwrap();
    let before = std::fs::read(dir.path().join("model.json")).unwrap();
    train(dir.path(), &data);
    assert_ne!(
        before,
        std::fs::read(dir.path().join("model.json")).unwrap(),
        "other data trains another model"
    );

    let prober = Prober::start(dir.path().join("iris.port"));
    let run = run_pipeline(dir.path(), &with_port_file);
    let probes = prober.finish();
    cleanup.note_pids();
    assert_passed(step(&run, "package"));
    assert_eq!(evidence(step(&run, "package"), "package")["version"], 2);
    assert_passed(step(&run, "deploy"));
    let second = evidence(step(&run, "deploy"), "deploy");
    assert_eq!(second["version"], "iris:2");
    assert_eq!(second["noop"], false);
    let actions = second["actions"].as_array().unwrap();
    assert!(
        actions
            .iter()
            .any(|a| a["action"] == "replace" && a["instance"] == old.as_str()),
        "{second}"
    );
    let new = second["instance"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(!old_dirs[0].exists(), "the old instance directory is gone");
    let dirs = instance_dirs(dir.path());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert!(dirs[0].ends_with(new));
    // The old supervisor is gone once the new one is healthy.
    let old_pid = cleanup.pids[0];
    assert!(!alive(old_pid), "the old supervisor {old_pid} still runs");

    // Every probe during the replace was answered, first by the old
    // instance and then by the new one.
    assert!(probes.failures.is_empty(), "{probes:?}");
    let new_port: u16 = second["endpoints"][0]
        .as_str()
        .and_then(|e| e.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("an endpoint");
    assert!(probes.ports.contains(&new_port), "{probes:?} vs {new_port}");
    assert!(probes.ports.len() >= 2, "{probes:?}");
    assert!(probes.answered >= 20, "{probes:?}");

    let ledger = Ledger::open(dir.path()).unwrap();
    let services = ledger.infra_services(ENV, "local").unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].model_version.as_deref(), Some("iris:2"));
    cleanup.finish();
}

#[test]
fn a_tampered_artifact_is_not_deployed() {
    let dir = project();
    let cleanup = Cleanup::new(dir.path());
    // Package only, then tamper, then deploy.
    let package_only = healthy_manifest(None);
    let run = run_pipeline(
        dir.path(),
        &package_only[..package_only.find("[cd.steps.deploy]").unwrap()],
    );
    assert_passed(step(&run, "package"));
    let ledger = Ledger::open(dir.path()).unwrap();
    let v = ledger.find_model_version(Some("iris"), "latest").unwrap();
    let stored = dir.path().join(&v.path).join("files/model.json");
    assert!(stored.is_file(), "{}", stored.display());
    let mut perms = std::fs::metadata(&stored).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&stored, perms).unwrap();
    std::fs::write(&stored, r#"{"weights": "evil"}"#).unwrap();

    // Deploy alone: a `package` step would find the damage and repair the
    // stored copy from the working tree.
    let full = healthy_manifest(None);
    let deploy_only = format!(
        "{}{}",
        &full[..full.find("[cd.steps.package]").unwrap()],
        full[full.find("[cd.steps.deploy]").unwrap()..].replace("depends-on = [\"package\"]", "")
    );
    let run = run_pipeline(dir.path(), &deploy_only);
    let deploy = step(&run, "deploy");
    assert_eq!(deploy.status, StepStatus::Failed, "{deploy:?}");
    let reason = deploy.reason.clone().unwrap_or_default();
    assert!(reason.contains("tampered artifact"), "{reason}");
    assert!(reason.contains("model.json"), "{reason}");
    assert!(instance_dirs(dir.path()).is_empty(), "nothing was started");
    assert!(ledger.infra_services(ENV, "local").unwrap().is_empty());
    assert!(ledger.infra_applies(Some(ENV), 10).unwrap().is_empty());
    cleanup.finish();
}

#[test]
fn a_service_that_never_becomes_healthy_fails_and_leaves_nothing() {
    let dir = project();
    let mut cleanup = Cleanup::new(dir.path());
    let run = run_pipeline(dir.path(), &manifest("/nope", "2s", None));
    cleanup.note_pids();
    assert_passed(step(&run, "package"));
    let deploy = step(&run, "deploy");
    assert_eq!(deploy.status, StepStatus::Failed, "{deploy:?}");
    let reason = deploy.reason.clone().unwrap_or_default();
    assert!(reason.contains("not healthy"), "{reason}");
    assert!(reason.contains("--- last"), "a log tail: {reason}");
    let tail = reason
        .split_once("lines of its log ---\n")
        .map(|(_, t)| t)
        .unwrap_or("");
    assert!(
        tail.lines().any(|l| !l.trim().is_empty()),
        "the log tail has a line: {reason}"
    );
    let ledger = Ledger::open(dir.path()).unwrap();
    let applies = ledger.infra_applies(Some(ENV), 1).unwrap();
    assert_eq!(applies.len(), 1);
    assert_eq!(applies[0].status, "failed", "{:?}", applies[0]);
    // Nothing left running, before any cleanup.
    assert!(
        instance_dirs(dir.path()).is_empty(),
        "{:?}",
        instance_dirs(dir.path())
    );
    cleanup.assert_gone();
    let v = ledger.find_model_version(Some("iris"), "1").unwrap();
    assert_ne!(
        v.stage,
        ModelStage::Staging,
        "a failed deploy promotes nothing"
    );
    cleanup.finish();
}

#[test]
fn smoke_names_the_case_whose_answer_is_wrong() {
    let dir = project();
    std::fs::write(
        dir.path().join("smoke.json"),
        r#"[
  {"name": "ready", "path": "/v2/health/ready"},
  {"name": "setosa called virginica", "method": "POST", "path": "/v2/models/iris/infer",
   "body": {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [4.4, 2.9, 1.4, 0.2]}]},
   "expect": {"status": 200, "oip": true, "outputs": {"label": ["virginica"]}}}
]"#,
    )
    .unwrap();
    let mut cleanup = Cleanup::new(dir.path());
    let run = run_pipeline(dir.path(), &healthy_manifest(Some("smoke.json")));
    cleanup.note_pids();
    assert_passed(step(&run, "deploy"));
    let smoke = step(&run, "smoke");
    assert_eq!(smoke.status, StepStatus::Failed, "{smoke:?}");
    let reason = smoke.reason.clone().unwrap_or_default();
    assert!(reason.contains("`setosa called virginica`"), "{reason}");
    assert!(!reason.contains("`ready`"), "{reason}");
    assert!(reason.contains("2 of 4 smoke checks failed"), "{reason}");
    let evidence = evidence(smoke, "smoke");
    assert_eq!(evidence["failed"], 2);
    cleanup.finish();
}

/// A pipeline whose stage-1 and stage-3 kinds all read `[infra]`, every
/// step with inputs so that it can be cached: the Rust `environment` (as
/// iris builds it: `cargo build --locked` from a lockfile), `infra-apply`
/// of the iris service in `dev`, and package, deploy and smoke in staging.
fn definitions_manifest(iris: &Path) -> String {
    format!(
        r#"
[project]
name = "p"

[infra]
provider = "local"

[infra.environment]
rust = {{ lockfile = "Cargo.lock", build-args = ["--quiet"] }}

[infra.services.iris]
command = ["{iris}", "serve", "--model", "{{model-dir}}/model.json", "--host", "{{host}}", "--port", "{{port}}"]
replicas = 1
health = {{ path = "/v2/health/ready", interval = "200ms", deadline = "20s" }}
stop-grace = "2s"

[iac.steps.env]
kind = "environment"
inputs = ["Cargo.lock", "src/*.rs"]

[iac.steps.up]
kind = "infra-apply"
with = {{ environment = "dev" }}
inputs = ["model.json"]

[ci.steps.check]
run = "true"

[cd.steps.package]
kind = "package"
with = {{ model = "iris", files = ["model.json"], metrics = "metrics.json" }}
inputs = ["model.json", "metrics.json"]

[cd.steps.deploy]
kind = "deploy"
with = {{ service = "iris", model = "iris", version = "latest", environment = "{ENV}" }}
depends-on = ["package"]
inputs = ["model.json"]

[cd.steps.smoke]
kind = "smoke"
with = {{ service = "iris", environment = "{ENV}", requests = "smoke.json" }}
depends-on = ["deploy"]
inputs = ["smoke.json"]
"#,
        iris = iris.display()
    )
}

/// The status of every step of a run, by name.
fn statuses(run: &RunSummary) -> Vec<(String, StepStatus)> {
    run.steps
        .iter()
        .map(|s| (s.name.clone(), s.status))
        .collect()
}

fn expect(run: &RunSummary, want: &[(&str, StepStatus)]) {
    let got = statuses(run);
    let want: Vec<(String, StepStatus)> = want.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect();
    assert_eq!(got, want, "{:#?}", run.steps);
}

#[test]
fn an_edit_of_what_a_kind_reads_reruns_it_and_an_edit_that_does_not_matter_does_not() {
    use StepStatus::{Cached, Passed};
    let dir = project();
    let root = dir.path();
    std::fs::copy(
        repo().join("examples/iris/data/smoke.json"),
        root.join("smoke.json"),
    )
    .unwrap();
    // A Rust project of its own for the environment step.
    std::fs::write(
        root.join("Cargo.toml"),
        "[package]\nname = \"env-check\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::create_dir(root.join("src")).unwrap();
    std::fs::write(root.join("src/main.rs"), "fn main() {}\n").unwrap();
    let lock = std::process::Command::new("cargo")
        .args(["generate-lockfile", "--offline"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        lock.status.success(),
        "{}",
        String::from_utf8_lossy(&lock.stderr)
    );
    let mut cleanup = Cleanup::new(root);
    let manifest = definitions_manifest(&iris());
    let registry = super::registry();
    let run = |text: &str| mlops_testkit::run_manifest(root, text, &registry);

    let first = run(&manifest);
    cleanup.note_pids();
    for s in &first.steps {
        assert_passed(s);
    }
    let all_cached = [
        ("env", Cached),
        ("up", Cached),
        ("check", Passed),
        ("package", Cached),
        ("deploy", Cached),
        ("smoke", Cached),
    ];
    expect(&run(&manifest), &all_cached);

    // Comments and another key order: the same compiled sections.
    let same = manifest
        .replace(
            "replicas = 1\nhealth = {",
            "# one is enough here\nstop-grace = \"2s\"\nhealth = {",
        )
        .replacen("stop-grace = \"2s\"\n\n[iac", "replicas = 1\n\n[iac", 1)
        .replace(
            "rust = { lockfile = \"Cargo.lock\", build-args = [\"--quiet\"] }",
            "rust = { build-args = [\"--quiet\"], lockfile = \"Cargo.lock\" } # pinned",
        );
    assert_ne!(same, manifest);
    expect(&run(&same), &all_cached);
    // Another spelling of the same value.
    let spelled = manifest.replace("stop-grace = \"2s\"", "stop-grace = \"2000ms\"");
    assert_ne!(spelled, manifest);
    expect(&run(&spelled), &all_cached);

    // The service changed: the steps that read it run again; `--stage cd`
    // was refused first, naming the step and the part.
    // Writes `text` and runs only `selection`, which must be refused
    // naming `step` and `part`.
    let assert_refused = |text: &str, selection, step: &str, part: &str| {
        std::fs::write(root.join("mlops.toml"), text).unwrap();
        let refused = mlops_testkit::run(
            root,
            &registry,
            mlops_core::RunOptions {
                selection,
                ..mlops_core::RunOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains(&format!("`{step}`"))
                && refused.contains(&format!("`{part}` changed since its evidence")),
            "{refused}"
        );
    };
    let service = manifest.replace("stop-grace = \"2s\"", "stop-grace = \"3s\"");
    assert_refused(
        &service,
        mlops_core::Selection::Stage(mlops_core::Stage::Cd),
        "up",
        "[infra.services]",
    );
    let rerun = run(&service);
    cleanup.note_pids();
    expect(
        &rerun,
        &[
            ("env", Cached),
            ("up", Passed),
            ("check", Passed),
            ("package", Cached),
            ("deploy", Passed),
            ("smoke", Passed),
        ],
    );

    // The environment changed: a later stage alone is refused (with
    // `--stage` and `--from`), naming the environment step and the part;
    // a plain run reruns only the environment step.
    let environment = service.replace(
        "build-args = [\"--quiet\"]",
        "build-args = [\"--quiet\", \"--offline\"]",
    );
    for selection in [
        mlops_core::Selection::Stage(mlops_core::Stage::Ci),
        mlops_core::Selection::From(mlops_core::Stage::Cd),
    ] {
        assert_refused(&environment, selection, "env", "[infra.environment]");
    }
    expect(
        &run(&environment),
        &[
            ("env", Passed),
            ("up", Cached),
            ("check", Passed),
            ("package", Cached),
            ("deploy", Cached),
            ("smoke", Cached),
        ],
    );
    cleanup.finish();
}
