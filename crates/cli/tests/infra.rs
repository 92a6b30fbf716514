//! `mlops infra plan|apply|destroy|status` as a user runs them: real
//! supervisors and services, exit codes, drift and repair.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn mlops() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlops"))
}

fn run(args: &[&str], dir: &Path) -> Output {
    mlops().args(args).current_dir(dir).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

/// Both streams, for assertion messages.
fn both(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

fn project(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mlops.toml"), manifest).unwrap();
    dir
}

/// A static file server: no model, health on `/`.
const WEB: &str = r#"[project]
name = "web"

[infra]
provider = "local"

[infra.services.web]
command = ["python3", "-m", "http.server", "{port}", "--bind", "{host}"]
replicas = 2
health = { path = "/", interval = "200ms", deadline = "20s" }
stop-grace = "2s"

[iac.steps.ready]
run = "true"
"#;

/// The instance directories of `web` in `dev`.
fn instance_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join(".mlops/infra/local/dev/web"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn supervisor_pid(instance: &Path) -> i32 {
    let text = std::fs::read_to_string(instance.join("supervisor.pid")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    i32::try_from(v["pid"].as_i64().expect("a pid")).unwrap()
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

fn wait_dead(pid: i32) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Runs `mlops infra destroy` when dropped during a panic, and kills any
/// supervisor it saw.
struct Cleanup {
    dir: PathBuf,
    pids: Vec<i32>,
}

impl Cleanup {
    fn note_pids(&mut self) {
        for d in instance_dirs(&self.dir) {
            if let Ok(text) = std::fs::read_to_string(d.join("supervisor.pid"))
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(pid) = v["pid"].as_i64()
                && !self.pids.contains(&(pid as i32))
            {
                self.pids.push(pid as i32);
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.note_pids();
        let _ = run(&["infra", "destroy"], &self.dir);
        for &pid in &self.pids {
            if alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
    }
}

#[test]
fn plan_apply_drift_repair_and_destroy() {
    let dir = project(WEB);
    let mut cleanup = Cleanup {
        dir: dir.path().to_owned(),
        pids: Vec::new(),
    };

    let o = run(&["infra", "plan", "--detailed-exitcode"], dir.path());
    assert_eq!(code(&o), 2, "{}", both(&o));
    assert!(stdout(&o).contains("1 change"), "{}", both(&o));
    assert!(instance_dirs(dir.path()).is_empty(), "plan starts nothing");

    let o = run(&["infra", "apply"], dir.path());
    cleanup.note_pids();
    assert_eq!(code(&o), 0, "{}", both(&o));
    assert!(stdout(&o).contains("the plan is now empty"), "{}", both(&o));

    let o = run(&["infra", "plan", "--detailed-exitcode"], dir.path());
    assert_eq!(code(&o), 0, "{}", both(&o));
    assert!(stdout(&o).contains("no changes"), "{}", both(&o));

    let o = run(&["infra", "status"], dir.path());
    assert_eq!(code(&o), 0, "{}", both(&o));
    let out = stdout(&o);
    assert!(out.contains("web (healthy)"), "{out}");
    let replicas: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with('['))
        .collect();
    assert_eq!(replicas.len(), 2, "{out}");
    assert!(
        replicas
            .iter()
            .all(|l| l.contains(" healthy http://127.0.0.1:")),
        "{out}"
    );

    // The same through --json.
    let o = run(&["infra", "status", "--json"], dir.path());
    assert_eq!(code(&o), 0, "{}", both(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["instances"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json["last_apply"]["status"], "applied", "{json}");

    // Drift: the supervisor dies.
    let instances = instance_dirs(dir.path());
    assert_eq!(instances.len(), 1, "{instances:?}");
    let first = instances[0].clone();
    let pid = supervisor_pid(&first);
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert!(wait_dead(pid), "the supervisor {pid} survived SIGKILL");

    let o = run(&["infra", "plan", "--detailed-exitcode"], dir.path());
    assert_eq!(code(&o), 2, "{}", both(&o));
    assert!(stdout(&o).contains("supervisor"), "{}", both(&o));

    let o = run(&["infra", "apply"], dir.path());
    cleanup.note_pids();
    assert_eq!(code(&o), 0, "{}", both(&o));
    let o = run(&["infra", "plan", "--detailed-exitcode"], dir.path());
    assert_eq!(code(&o), 0, "repaired: {}", both(&o));
    let o = run(&["infra", "status"], dir.path());
    assert!(stdout(&o).contains("web (healthy)"), "{}", both(&o));
    let now = instance_dirs(dir.path());
    assert_eq!(now.len(), 1, "{now:?}");
    let repaired_pid = supervisor_pid(&now[0]);
    assert!(alive(repaired_pid));

    let o = run(&["infra", "destroy"], dir.path());
    assert_eq!(code(&o), 0, "{}", both(&o));
    assert!(stdout(&o).contains("destroyed"), "{}", both(&o));
    let o = run(&["infra", "status"], dir.path());
    assert_eq!(code(&o), 0, "{}", both(&o));
    assert!(stdout(&o).contains("nothing runs"), "{}", both(&o));
    assert!(
        instance_dirs(dir.path()).is_empty(),
        "{:?}",
        instance_dirs(dir.path())
    );
    for &pid in &cleanup.pids {
        assert!(wait_dead(pid), "supervisor {pid} still runs");
    }
    // Destroying again finds nothing.
    let o = run(&["infra", "destroy"], dir.path());
    assert_eq!(code(&o), 0, "{}", both(&o));
    assert!(stdout(&o).contains("nothing runs"), "{}", both(&o));
}

#[test]
fn bad_input_exits_2_and_says_what_is_wrong() {
    let dir = project(WEB);

    let o = run(&["infra", "plan", "--provider", "nope"], dir.path());
    assert_eq!(code(&o), 2, "{}", both(&o));
    assert!(stderr(&o).contains("nope"), "{}", both(&o));

    let o = run(&["infra", "apply", "--service", "missing"], dir.path());
    assert_eq!(code(&o), 2, "{}", both(&o));
    assert!(stderr(&o).contains("missing"), "{}", both(&o));
    assert!(instance_dirs(dir.path()).is_empty());

    // An unknown key in [infra]: line 5, column 1.
    let bad = WEB.replace(
        "provider = \"local\"\n",
        "provider = \"local\"\nflavour = \"x\"\n",
    );
    assert_eq!(bad.lines().nth(5), Some("flavour = \"x\""));
    std::fs::write(dir.path().join("mlops.toml"), &bad).unwrap();
    let o = run(&["infra", "plan"], dir.path());
    assert_eq!(code(&o), 2, "{}", both(&o));
    let err = stderr(&o);
    assert!(err.contains("flavour"), "{err}");
    assert!(err.contains("mlops.toml:6:1"), "{err}");
    for args in [&["infra", "apply"][..], &["infra", "status"][..]] {
        let o = run(args, dir.path());
        assert_eq!(code(&o), 2, "{args:?}: {}", both(&o));
    }

    // With --detailed-exitcode, 2 means "changes": an error is 1.
    let o = run(&["infra", "plan", "--detailed-exitcode"], dir.path());
    assert_eq!(code(&o), 1, "{}", both(&o));
    assert!(stderr(&o).contains("flavour"), "{}", both(&o));
    assert!(instance_dirs(dir.path()).is_empty());
}

/// The `infra-apply` kind as a pipeline step: the first run creates the
/// services and records what it did; the plan after it is empty; a second
/// run changes nothing; an unknown service is refused with its name and
/// line when the manifest is compiled.
#[test]
fn infra_apply_step_converges_and_records_its_actions() {
    let manifest = WEB.replace(
        "[iac.steps.ready]\nrun = \"true\"",
        "[iac.steps.up]\nkind = \"infra-apply\"\nwith = { environment = \"dev\" }",
    );
    let dir = project(&manifest);
    let d = dir.path();
    let mut cleanup = Cleanup {
        dir: d.to_path_buf(),
        pids: Vec::new(),
    };

    let o = run(&["pipeline", "run", "."], d);
    cleanup.note_pids();
    assert_eq!(code(&o), 0, "{}", both(&o));
    let status = run(&["pipeline", "status", "--json"], d);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let evidence = &s["steps"][0]["evidence"][0];
    assert_eq!(evidence["kind"], "infra-apply", "{s:#}");
    assert_eq!(evidence["body"]["actions"][0]["action"], "create", "{s:#}");
    assert_eq!(
        evidence["body"]["instances"][0]["endpoints"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{s:#}"
    );
    let o = run(&["infra", "plan", "--detailed-exitcode"], d);
    assert_eq!(code(&o), 0, "nothing left to do: {}", both(&o));

    let o = run(&["pipeline", "run", ".", "--force"], d);
    assert_eq!(code(&o), 0, "{}", both(&o));
    let status = run(&["pipeline", "status", "--json"], d);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        s["steps"][0]["evidence"][0]["body"]["actions"],
        serde_json::json!([]),
        "a converged environment is left alone: {s:#}"
    );
    assert_eq!(instance_dirs(d).len(), 1);

    std::fs::write(
        d.join("mlops.toml"),
        manifest.replace(
            "with = { environment = \"dev\" }",
            "with = { environment = \"dev\", services = [\"nope\"] }",
        ),
    )
    .unwrap();
    // An unknown service is bad input, found when the manifest is
    // compiled (not when the step runs), with the line it is on.
    let o = run(&["pipeline", "run", "."], d);
    assert_eq!(code(&o), 2, "{}", both(&o));
    assert!(
        stderr(&o).contains("no service `nope` in [infra.services]")
            && stderr(&o).contains("mlops.toml:"),
        "{}",
        both(&o)
    );
    std::fs::write(d.join("mlops.toml"), &manifest).unwrap();
    drop(cleanup);
    assert!(instance_dirs(d).is_empty(), "destroyed");
}

/// The `environment` kind refuses what it cannot pin, saying which file and
/// line: a missing requirements file, an unpinned or unhashed requirement,
/// a Rust project without its lockfile.
#[test]
fn environment_step_names_what_is_not_pinned() {
    let python = r#"[project]
name = "env"

[infra]
environment = { python = { requirements = "requirements.txt" } }

[iac.steps.env]
kind = "environment"
"#;
    let dir = project(python);
    let d = dir.path();
    let o = run(&["pipeline", "run", "."], d);
    assert_eq!(code(&o), 1, "{}", both(&o));
    assert!(
        stdout(&o).contains("missing requirements file") && stdout(&o).contains("requirements.txt"),
        "{}",
        both(&o)
    );

    std::fs::write(
        d.join("requirements.txt"),
        "# comment\nnumpy==2.1.3 --hash=sha256:aaaa\npandas>=2\nscipy==1.14.1\n",
    )
    .unwrap();
    let o = run(&["pipeline", "run", "."], d);
    assert_eq!(code(&o), 1, "{}", both(&o));
    let out = stdout(&o);
    assert!(
        out.contains("requirements.txt:3: `pandas>=2` is not pinned with `==`"),
        "{out}"
    );
    assert!(
        out.contains("requirements.txt:4: `scipy==1.14.1` has no `--hash`"),
        "{out}"
    );
    assert!(!out.contains("requirements.txt:2"), "{out}");

    let rust = python.replace(
        "python = { requirements = \"requirements.txt\" }",
        "rust = { lockfile = \"Cargo.lock\" }",
    );
    std::fs::write(d.join("mlops.toml"), rust).unwrap();
    let o = run(&["pipeline", "run", "."], d);
    assert_eq!(code(&o), 1, "{}", both(&o));
    assert!(stdout(&o).contains("Cargo.lock"), "{}", both(&o));
}

/// What controllers own is shown by `plan` and left alone: a canary a
/// hand-made "release" controller starts and a replica count the
/// "autoscaler" moves within `replicas = { min, max }` are no changes
/// (`--detailed-exitcode` exits 0), `apply` keeps them, and `destroy`
/// removes them too.
#[test]
fn plan_shows_what_controllers_own_as_no_change() {
    let manifest = WEB.replace("replicas = 2", "replicas = { min = 1, max = 3 }");
    let dir = project(&manifest);
    let d = dir.path();
    let mut cleanup = Cleanup {
        dir: d.to_path_buf(),
        pids: Vec::new(),
    };
    let o = run(&["infra", "apply"], d);
    cleanup.note_pids();
    assert_eq!(code(&o), 0, "{}", both(&o));

    // The controllers, through the library, as the release stage will.
    let root = std::fs::canonicalize(d).unwrap();
    let (stable, canary) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use mlops_iac::{Controller, InfraSpec, LocalProvider, Provider, Scope, SupervisorCommand};
        let provider = LocalProvider::new(SupervisorCommand {
            program: env!("CARGO_BIN_EXE_mlops").into(),
            args: vec!["infra".into(), "supervise".into()],
        });
        let scope = Scope {
            project: "web".into(),
            environment: "dev".into(),
            root: root.clone(),
        };
        let ledger = mlops_core::Ledger::open(&root).unwrap();
        let spec = InfraSpec::load(&root).unwrap();
        let stable = provider.observe(&scope).await.unwrap().remove(0);
        Controller::new("autoscaler", &provider, &scope, &ledger)
            .unwrap()
            .scale(&spec, &stable.id, 2)
            .await
            .unwrap();
        let canary = Controller::new("release", &provider, &scope, &ledger)
            .unwrap()
            .start(&spec, "web", None, 1)
            .await
            .unwrap();
        (stable.id, canary.id)
    });
    cleanup.note_pids();

    let o = run(&["infra", "plan", "--detailed-exitcode"], d);
    assert_eq!(code(&o), 0, "owned is not a change: {}", both(&o));
    let out = stdout(&o);
    assert!(out.contains("no changes"), "{out}");
    assert!(
        out.contains(&format!("= web/{canary} owned by release (revision ")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "= web/{stable} replicas owned by autoscaler (2, within 1..=3)"
        )),
        "{out}"
    );

    let o = run(&["infra", "plan", "--json"], d);
    assert_eq!(code(&o), 0, "{}", both(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["actions"], serde_json::json!([]), "{json:#}");
    let owned = json["owned"].as_array().unwrap();
    assert!(
        owned.iter().any(|o| o["owns"] == "instance"
            && o["instance"] == canary.as_str()
            && o["owner"] == "release"),
        "{json:#}"
    );
    assert!(
        owned
            .iter()
            .any(|o| o["owns"] == "replicas" && o["owner"] == "autoscaler" && o["replicas"] == 2),
        "{json:#}"
    );

    let o = run(&["infra", "status"], d);
    assert!(
        stdout(&o).contains(&format!("instance {canary} owned by release")),
        "{}",
        both(&o)
    );
    let o = run(&["infra", "apply"], d);
    assert_eq!(code(&o), 0, "{}", both(&o));
    assert!(stdout(&o).contains("nothing to do"), "{}", both(&o));
    assert_eq!(instance_dirs(d).len(), 2, "the canary survives apply");

    let o = run(&["infra", "destroy"], d);
    assert_eq!(code(&o), 0, "{}", both(&o));
    assert!(
        instance_dirs(d).is_empty(),
        "destroy removes owned ones too"
    );
    for &pid in &cleanup.pids {
        assert!(wait_dead(pid), "supervisor {pid} still runs");
    }
}

/// A value a service reads from the environment is part of the definition
/// of the steps that apply it: a rotated secret reruns an `infra-apply`
/// step that would otherwise be cached, and neither value reaches the
/// state directory.
#[test]
fn a_rotated_secret_reruns_a_cached_infra_apply_step() {
    let manifest = WEB
        .replace(
            "stop-grace = \"2s\"\n",
            "stop-grace = \"2s\"\nenv = { TOKEN = { from-env = \"MLOPS_TEST_TOKEN\", secret = true } }\n",
        )
        .replace(
            "[iac.steps.ready]\nrun = \"true\"",
            "[iac.steps.up]\nkind = \"infra-apply\"\nwith = { environment = \"dev\" }\ninputs = [\"mlops.toml\"]",
        );
    let dir = project(&manifest);
    let d = dir.path();
    let mut cleanup = Cleanup {
        dir: d.to_path_buf(),
        pids: Vec::new(),
    };
    let run_with = |token: &str| -> serde_json::Value {
        let o = mlops()
            .args(["pipeline", "run", "."])
            .env("MLOPS_TEST_TOKEN", token)
            .current_dir(d)
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{}", both(&o));
        let status = run(&["pipeline", "status", "--json"], d);
        let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        s["steps"][0].clone()
    };
    let first = run_with("first-secret-value");
    cleanup.note_pids();
    assert_eq!(first["status"], "passed", "{first:#}");
    // Same value: the apply's result stands.
    assert_eq!(run_with("first-secret-value")["status"], "cached");
    // Rotated: the step runs again and rolls the service.
    let rotated = run_with("second-secret-value");
    cleanup.note_pids();
    assert_eq!(rotated["status"], "passed", "{rotated:#}");
    assert_eq!(
        rotated["evidence"][0]["body"]["actions"][0]["action"], "replace",
        "{rotated:#}"
    );
    assert_eq!(run_with("second-secret-value")["status"], "cached");
    let o = Command::new("grep")
        .args([
            "-r",
            "-l",
            "-a",
            "-e",
            "first-secret-value",
            "-e",
            "second-secret-value",
        ])
        .arg(d.join(".mlops"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "",
        "no secret value in the state directory"
    );
    drop(cleanup);
}
