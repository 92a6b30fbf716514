//! The `mlops` binary as a user runs it: real processes, signals, exit codes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

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

fn project(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mlops.toml"), manifest).unwrap();
    dir
}

fn status_json(dir: &Path) -> Value {
    let o = run(&["pipeline", "status", "--json"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

fn step<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

const GATED: &str = r#"
[project]
name = "gated"

[iac.steps.build]
run = "true"

[ci.steps.evaluate]
run = "echo 'accuracy 0.52 is below 0.9' >&2; exit 1"

[cd.steps.deploy]
run = "touch deployed"
"#;

#[test]
fn status_json_is_the_documented_contract() {
    let dir = project(GATED);
    let o = run(&["pipeline", "run", "."], dir.path());
    assert_eq!(o.status.code(), Some(1), "a failed run exits 1");
    assert!(
        stdout(&o).contains("accuracy 0.52 is below 0.9"),
        "the log tail is shown: {}",
        stdout(&o)
    );

    let s = status_json(dir.path());
    assert_eq!(s["run_id"], 1);
    assert_eq!(s["status"], "failed");
    assert!(
        s.get("commit").is_some(),
        "commit is present (null outside git)"
    );
    let stages: Vec<(String, String)> = s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            (
                st["name"].as_str().unwrap().to_owned(),
                st["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        [("iac", "passed"), ("ci", "failed"), ("cd", "gated")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    for st in s["steps"].as_array().unwrap() {
        for key in ["name", "stage", "status", "attempts", "duration_ms"] {
            assert!(st.get(key).is_some(), "step lacks {key}: {st}");
        }
    }
    assert_eq!(step(&s, "deploy")["status"], "gated");
    assert_eq!(step(&s, "evaluate")["attempts"], 1);
    assert!(!dir.path().join("deployed").exists());

    let h = run(&["pipeline", "history", "--json"], dir.path());
    let runs: Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1);
}

#[test]
fn json_lines_carry_every_event() {
    let dir = project(GATED);
    let o = run(&["pipeline", "run", "--json"], dir.path());
    let events: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["event"], "run-started");
    assert_eq!(events.last().unwrap()["event"], "run-finished");
    assert_eq!(events.last().unwrap()["status"], "failed");
    let gated = events
        .iter()
        .find(|e| e["event"] == "step-finished" && e["step"] == "deploy")
        .unwrap();
    assert_eq!(gated["status"], "gated");
    assert_eq!(
        gated["reason"],
        "stage `ci` did not pass: step `evaluate` failed (exit status 1)"
    );
}

#[test]
fn a_stage_alone_is_refused_without_evidence() {
    let dir = project(GATED);
    let o = run(&["pipeline", "run", "--stage", "cd"], dir.path());
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).starts_with(
            "error: refusing to run stage `cd`: the earlier stage `iac` has no passing record"
        ),
        "{}",
        stderr(&o)
    );
    let o = run(&["pipeline", "run", "--stage", "deploy"], dir.path());
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown stage is a usage error"
    );
}

/// Alive and not a zombie (this container's init may not reap orphans).
fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn spawn_run(dir: &Path, extra: &[&str]) -> std::process::Child {
    mlops()
        .args(["pipeline", "run"])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

const SLOW: &str = r#"
[project]
name = "slow"

[iac.steps.one]
run = "echo x >> one.log"

[ci.steps.slow]
run = "echo $$ > slow.pid; echo x >> slow.log; [ -f release ] || sleep 60"

[ci.steps.after]
run = "echo x >> after.log"
depends-on = ["slow"]
"#;

#[test]
fn kill_9_leaves_a_consistent_ledger_and_resume_finishes_it() {
    let dir = project(SLOW);
    let root = dir.path();
    let mut child = spawn_run(root, &[]);
    wait_for(&root.join("slow.pid"));
    // The ledger commits in groups at most a few milliseconds old: wait
    // until the group holding `one`'s result is in, so the assertions below
    // describe that moment (a loaded machine can be slower than the step).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while step(&status_json(root), "one")["status"] != "passed" {
        assert!(
            std::time::Instant::now() < deadline,
            "`one` never recorded as passed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    // The step's own process group outlives a SIGKILLed engine ...
    let pgid: i32 = std::fs::read_to_string(root.join("slow.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pgid), "the orphaned step is still running");

    let s = status_json(root);
    assert_eq!(s["status"], "running");
    assert_eq!(s["interrupted"], true);
    assert_eq!(step(&s, "one")["status"], "passed");
    assert_eq!(step(&s, "slow")["status"], "pending");
    assert_eq!(step(&s, "after")["status"], "pending");
    let text = stdout(&run(&["pipeline", "status"], root));
    assert!(
        text.contains("interrupted; finish it with `mlops pipeline run --resume`"),
        "{text}"
    );

    std::fs::write(root.join("release"), "").unwrap();
    let o = run(&["pipeline", "run", "--resume"], root);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // ... and --resume stops it before running the step again.
    assert!(
        !alive(pgid),
        "the orphaned step of the killed run was not stopped"
    );
    assert!(stdout(&o).starts_with("resuming run 1"), "{}", stdout(&o));
    let s = status_json(root);
    assert_eq!(s["run_id"], 1);
    assert_eq!(s["status"], "passed");
    assert_eq!(s["interrupted"], false);
    assert_eq!(
        lines(&root.join("one.log")),
        1,
        "a passed step is not rerun"
    );
    assert_eq!(lines(&root.join("slow.log")), 2);
    assert_eq!(lines(&root.join("after.log")), 1);

    let o = run(&["pipeline", "run", "--resume"], root);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        stderr(&o).trim(),
        "error: nothing to resume: the last run (1) passed"
    );
}

#[test]
fn ctrl_c_cancels_the_run_and_kills_its_steps() {
    let dir = project(
        r#"
[project]
name = "hang"

[iac.steps.hang]
run = "sleep 60 & echo $! > child.pid; wait"

[ci.steps.next]
run = "true"
"#,
    );
    let root = dir.path();
    let mut child = spawn_run(root, &[]);
    wait_for(&root.join("child.pid"));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let s = status_json(root);
    assert_eq!(s["status"], "cancelled");
    assert_eq!(step(&s, "hang")["status"], "cancelled");
    assert_eq!(step(&s, "next")["status"], "cancelled");
    let pid: i32 = std::fs::read_to_string(root.join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let start = Instant::now();
    while kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the step's child survived Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn normalize(text: &str, dir: &Path) -> String {
    text.replace(&dir.display().to_string(), "[DIR]")
}

#[test]
fn validate_reports_every_error_and_exits_2() {
    let dir = project(
        "[project]\nname = \"p\"\n\n[ci.steps.test]\nrun = \"pytest\"\ntimeout = \"soon\"\n",
    );
    let o = run(&["validate", "."], dir.path());
    assert_eq!(o.status.code(), Some(2));
    insta::assert_snapshot!("validate_invalid", normalize(&stderr(&o), dir.path()));

    let empty = tempfile::tempdir().unwrap();
    let o = run(&["validate", "."], empty.path());
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "error: no mlops.toml in .; create one with `mlops init .`"
    );
    let o = run(&["validate", "nowhere"], empty.path());
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "error: project directory nowhere does not exist"
    );

    std::fs::write(empty.path().join("mlops.toml"), [0xff, 0xfe, b'x']).unwrap();
    let o = run(&["validate", "."], empty.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read ./mlops.toml: stream did not contain valid UTF-8"),
        "{}",
        stderr(&o)
    );

    let ok = project(GATED);
    let o = run(&["validate", "."], ok.path());
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o).trim(),
        "./mlops.toml is valid: 3 steps in 3 stages (iac, ci, cd)"
    );
}

#[test]
fn plan_prints_stages_in_order_as_text_dot_and_json() {
    let dir = project(SLOW);
    let o = run(&["pipeline", "plan"], dir.path());
    assert!(o.status.success());
    insta::assert_snapshot!("plan_text", stdout(&o));
    let o = run(&["pipeline", "plan", "--format", "dot"], dir.path());
    insta::assert_snapshot!("plan_dot", stdout(&o));
    let o = run(&["pipeline", "plan", "--format", "json"], dir.path());
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["stages"][1]["steps"][1]["depends_on"][0], "slow");
}

/// The manifest parts each of the example's kinds reads, and so depends on
/// (they are part of its definition: an edit reruns it and voids its
/// evidence).
#[test]
fn the_plan_names_what_each_kind_of_the_example_reads() {
    let o = run(
        &["pipeline", "plan", ".", "--format", "json"],
        &example("iris"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    let reads = |name: &str| -> Vec<String> {
        let steps = plan["stages"].as_array().unwrap().iter();
        let step = steps
            .flat_map(|st| st["steps"].as_array().unwrap())
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name}"));
        serde_json::from_value(step["reads"].clone()).unwrap()
    };
    assert_eq!(reads("build"), ["[infra.environment]"]);
    for step in ["deploy", "smoke"] {
        assert_eq!(
            reads(step),
            [
                "[infra.services.iris]",
                "[project.name]",
                "the provider in effect"
            ],
            "{step}"
        );
    }
    assert_eq!(
        reads("canary"),
        [
            "[infra.services.iris]",
            "[project.name]",
            "[release]",
            "the provider in effect"
        ]
    );
    assert_eq!(
        reads("train"),
        Vec::<String>::new(),
        "a run step reads no section"
    );
    assert_eq!(
        reads("quality"),
        Vec::<String>::new(),
        "model-gate reads no section"
    );
}

#[test]
fn status_without_runs_says_how_to_make_one() {
    let dir = project(GATED);
    let o = run(&["pipeline", "status"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "error: no runs recorded in . (no .mlops/ledger.db); run `mlops pipeline run .` first"
    );
}

#[test]
fn init_writes_a_manifest_that_validates_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pyproject.toml"),
        "[project]\nname = \"demo\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let o = run(&["init"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("wrote ./mlops.toml"));
    let o = run(&["validate"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = std::fs::read_to_string(dir.path().join("mlops.toml")).unwrap();
    assert!(manifest.contains("kind = \"secret-scan\""), "{manifest}");
    let o = run(&["init"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "error: ./mlops.toml already exists; pass --force to overwrite it"
    );
}

#[test]
fn init_uses_the_tests_kind_for_pytest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("requirements.txt"), "numpy==2.0\n").unwrap();
    std::fs::write(dir.path().join("test_model.py"), "def test_x(): pass\n").unwrap();
    let o = run(&["init"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = std::fs::read_to_string(dir.path().join("mlops.toml")).unwrap();
    assert!(
        manifest.contains("kind = \"tests\"\nwith = { command = \".venv/bin/python -m pytest -q --junitxml=.mlops/reports/junit.xml\", junit = \".mlops/reports/junit.xml\" }"),
        "{manifest}"
    );
    let o = run(&["validate"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn schema_is_json_schema_of_the_manifest() {
    let o = run(&["schema"], &std::env::temp_dir());
    let schema: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(schema["title"], "mlops.toml");
    let step = &schema["$defs"]["StepWire"];
    assert_eq!(step["additionalProperties"], false);
    assert!(step["properties"].get("depends-on").is_some());
    // Sections the stage crates own are in it too, so editors accept them.
    let infra = &schema["properties"]["infra"];
    assert_eq!(infra["title"], "InfraWire", "{infra:#}");
    assert_eq!(
        infra["properties"]["services"]["additionalProperties"]["$ref"],
        "#/$defs/ServiceWire"
    );
    let service = &schema["$defs"]["ServiceWire"];
    assert_eq!(service["additionalProperties"], false);
    assert_eq!(service["required"], serde_json::json!(["command"]));
    assert!(
        service["properties"].get("host-port").is_some(),
        "{service:#}"
    );
}

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .canonicalize()
        .unwrap()
}

/// The example projects as the README runs them (they build the `iris`
/// binary with cargo, as a user's pipeline would).
#[test]
fn the_example_passes_every_stage_and_the_gated_fixture_stops_at_ci() {
    let iris = example("iris");
    let o = run(&["pipeline", "run", "."], &iris);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let s = status_json(&iris);
    assert_eq!(s["status"], "passed");
    let stages: Vec<&str> = s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["name"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["iac", "ci", "cd", "release", "apm", "loadtest"]);
    assert!(
        s["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|st| st["status"] == "passed"),
        "{s}"
    );

    // Stage 4 is a canary release to production: promoted (a first
    // release, on its SLOs), or, when an earlier run released this model,
    // nothing to release (production made sure to run, behind its gateway).
    let canary = step(&s, "canary");
    assert_eq!(canary["status"], "passed", "{canary:#}");
    let release = &canary["evidence"][0];
    assert_eq!(release["kind"], "release", "{canary:#}");
    assert_eq!(release["body"]["strategy"], "canary", "{release:#}");
    let verdict = release["body"]["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict == "promote"
            || (verdict == "pass"
                && release["body"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("nothing to release"))),
        "{release:#}"
    );
    // Stage 5 checked the SLOs over traffic through the gateway.
    let slo = step(&s, "slo");
    assert_eq!(slo["evidence"][0]["kind"], "slo", "{slo:#}");
    assert_eq!(slo["evidence"][0]["body"]["verdict"], "pass", "{slo:#}");

    // The maturity report from that run: stages 1-5 proven by it (the
    // SLO check is monitoring and alerting evidence); the load test passes
    // but shows no autoscaling, so the climb stops at 5.
    let o = run(&["assess", ".", "--format", "json", "--no-history"], &iris);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["stage_level"], 5, "{:#}", r["stages"]);
    let statuses: Vec<&str> = r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["proven", "proven", "proven", "proven", "proven", "missing"]
    );
    assert_eq!(r["microsoft_level"], 3, "{:#}", r["microsoft"]);
    let last = r["runs"]["runs"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["status"], "passed");
    assert_eq!(r["stages"][2]["last_passed"]["run_id"], last["run_id"]);
    assert_eq!(r["stages"][3]["last_passed"]["run_id"], last["run_id"]);

    // The pipeline deployed iris to staging and released it to production
    // (behind its gateway) through the local provider; take both down
    // again and check that nothing is left running.
    for env in ["staging", "production"] {
        let o = run(&["infra", "destroy", ".", "--env", env], &iris);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        let o = run(&["infra", "status", ".", "--env", env], &iris);
        assert!(stdout(&o).contains("nothing runs"), "{env}: {}", stdout(&o));
    }

    the_example_passes_with_the_docker_provider(&iris);

    let gated = example("iris-gated");
    let o = run(&["pipeline", "run", "."], &gated);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(
            "model gate failed: accuracy = 0.966667 (required >= 0.999; no baseline): below the bound"
        ),
        "{}",
        stdout(&o)
    );
    let s = status_json(&gated);
    assert_eq!(step(&s, "quality")["status"], "failed");
    assert_eq!(step(&s, "quality")["evidence"][0]["kind"], "model-gate");
    for later in ["package", "deploy", "smoke", "canary", "slo", "load-check"] {
        assert_eq!(step(&s, later)["status"], "gated", "{later}");
    }
    for env in ["staging", "production"] {
        let o = run(&["infra", "status", ".", "--env", env], &gated);
        assert!(
            stdout(&o).contains("nothing runs"),
            "a gated deploy or release never started a server: {env}: {}",
            stdout(&o)
        );
    }
}

/// The Docker engine's API over its unix socket: the body of a `GET`, or
/// why there is none.
fn docker_get(path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let socket = match host.strip_prefix("unix://") {
        Some(socket) => socket.to_owned(),
        None if host.is_empty() => "/var/run/docker.sock".to_owned(),
        None => return Err(format!("DOCKER_HOST={host} is not a unix socket")),
    };
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)
        .map_err(|e| format!("the Docker engine is not reachable at {socket}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("reading the engine's answer to {path}: {e}"))?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_owned())
}

/// What the engine holds with `label` (containers, images, networks), as
/// JSON arrays.
fn docker_labelled(label: &str) -> [Value; 3] {
    let filter: String = format!(r#"{{"label":["{label}"]}}"#)
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    ["/containers/json?all=1&", "/images/json?", "/networks?"].map(|what| {
        let body = docker_get(&format!("{what}filters={filter}")).unwrap();
        serde_json::from_str(&body).unwrap()
    })
}

/// `mlops infra destroy` of the Docker deployment to `env`.
fn docker_destroy(env: &str) -> [&str; 7] {
    [
        "infra",
        "destroy",
        ".",
        "--env",
        env,
        "--provider",
        "docker",
    ]
}

/// Takes the Docker deployment down when a failed assertion unwinds, so a
/// failing run leaves nothing in the engine.
struct DockerDown<'a>(&'a Path);

impl Drop for DockerDown<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for env in ["staging", "production"] {
                let _ = run(&docker_destroy(env), self.0);
            }
        }
    }
}

/// The iris pipeline from stage 3 on again with `--provider docker`: the
/// same environment and model, deployed as a `FROM scratch` image into the
/// engine and smoke-tested there, then released: the local run's canary
/// promoted this model, so nothing new is in staging and the canary
/// (rerun by the change of provider) makes production run on Docker
/// behind the gateway's own `FROM scratch` container, which answers. Then
/// both environments are destroyed, leaving nothing labelled with the
/// project. Fails, saying how to get one, when no engine answers.
fn the_example_passes_with_the_docker_provider(iris: &Path) {
    if let Err(why) = docker_get("/_ping") {
        panic!(
            "the iris pipeline with --provider docker: {why}: \
             start dockerd (apt-get install docker.io) or set DOCKER_HOST"
        );
    }
    let _down = DockerDown(iris);
    let o = run(
        &[
            "pipeline",
            "run",
            ".",
            "--from",
            "cd",
            "--provider",
            "docker",
        ],
        iris,
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let s = status_json(iris);
    assert_eq!(s["status"], "passed", "{s}");
    let deploy = &step(&s, "deploy")["evidence"][0]["body"];
    assert_eq!(deploy["provider"], "docker", "{deploy}");
    assert_eq!(deploy["noop"], false, "{deploy}");
    assert_eq!(deploy["endpoints"].as_array().unwrap().len(), 2, "{deploy}");
    let smoke = &step(&s, "smoke")["evidence"][0]["body"];
    assert_eq!(smoke["failed"], 0, "{smoke}");
    let canary = step(&s, "canary");
    assert_eq!(canary["status"], "passed", "{canary:#}");
    // Production on Docker: iris's two replicas and the gateway, which
    // answers an inference from its proxy on the host's loopback.
    let o = run(
        &[
            "release",
            "status",
            "--path",
            ".",
            "--provider",
            "docker",
            "--json",
        ],
        iris,
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let status: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(status["gateway"]["running"], true, "{status:#}");
    assert_eq!(status["production"]["id"], "iris:1", "{status:#}");
    let proxy = status["gateway"]["proxy"].as_str().unwrap().to_owned();
    let body = r#"{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}"#;
    use std::io::Write as _;
    let addr = proxy.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let [containers, images, _] = docker_labelled("mlops.project=iris");
    // staging: 2 replicas; production: 2 replicas, the gateway and the
    // metrics collector (which the SLO check ran there); the images of
    // iris, of the gateway and of the collector (the same program, built
    // per service)
    assert_eq!(containers.as_array().unwrap().len(), 6, "{containers:#}");
    assert_eq!(images.as_array().unwrap().len(), 3, "{images:#}");
    // The collector (a container itself) measured the replicas'
    // containers through the engine's stats API.
    let o = run(
        &[
            "monitor",
            "query",
            "mlops_replica_memory_bytes",
            "--since",
            "10m",
            "--provider",
            "docker",
            "--json",
        ],
        iris,
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let memory: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let production_ports: Vec<u64> = containers
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["Labels"]["mlops.environment"] == "production"
                && c["Labels"]["mlops.service"] == "iris"
        })
        .flat_map(|c| c["Ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["PublicPort"].as_u64())
        .collect();
    assert_eq!(production_ports.len(), 2, "{containers:#}");
    for port in production_ports {
        let series = memory
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["labels"]["replica"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(&format!(":{port}")))
            })
            .unwrap_or_else(|| panic!("no memory series for the container on {port}: {memory:#}"));
        let bytes = series["points"]
            .as_array()
            .and_then(|p| p.last())
            .and_then(|p| p["value"].as_f64())
            .unwrap_or_else(|| panic!("no memory point: {series:#}"));
        assert!(bytes > 100_000.0, "{series:#}");
    }

    for env in ["staging", "production"] {
        let o = run(&docker_destroy(env), iris);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    }

    for left in docker_labelled("mlops.project=iris") {
        assert_eq!(left, serde_json::json!([]), "left in the engine");
    }
}

/// The Python example as a data scientist runs it: a virtualenv built from
/// hash-pinned requirements (from PyPI), pytest, training, packaging, a
/// deploy to staging with the local provider, a smoke test and a canary
/// release to production.
#[test]
fn the_python_example_passes_with_the_local_provider() {
    let wine = example("wine");
    let o = run(&["pipeline", "run", "."], &wine);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let s = status_json(&wine);
    assert_eq!(s["status"], "passed", "{s}");
    assert_eq!(step(&s, "tests")["evidence"][0]["kind"], "tests");
    assert_eq!(step(&s, "smoke")["evidence"][0]["body"]["failed"], 0);
    // Stage 4: a shadow (nothing in production to compare with on a first
    // release), then a canary that promotes — or, when an earlier run of
    // this checkout already released this model, a canary that had
    // nothing to release (production is that model).
    let shadow = step(&s, "shadow");
    assert!(
        shadow["status"] == "passed" || shadow["status"] == "cached",
        "{shadow:#}"
    );
    let canary = step(&s, "canary");
    let release = &canary["evidence"][0];
    if release["body"]["verdict"] == "pass" {
        assert!(
            release["body"]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("nothing to release")),
            "{release:#}"
        );
        let o = run(&["release", "status", "--json"], &wine);
        let status: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            status["production"]["id"]
                .as_str()
                .is_some_and(|v| v.starts_with("wine:")),
            "{canary:#} {status:#}"
        );
    } else {
        assert_eq!(release["kind"], "release", "{release:#}");
        assert_eq!(release["body"]["verdict"], "promote", "{release:#}");
    }
    let o = run(&["assess", ".", "--format", "json", "--no-history"], &wine);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    // Stage 5: the SLOs held and no drift.
    for name in ["slo", "drift"] {
        let s5 = step(&s, name);
        assert_eq!(s5["status"], "passed", "{s5:#}");
    }
    assert_eq!(
        step(&s, "drift")["evidence"][0]["body"]["verdict"],
        "no-drift"
    );
    // Stage 6: load-tested, stressed and measured at 2 and 3 replicas (the
    // service back at 2), but nothing autoscales, so the climb stops at 5.
    for name in ["performance", "stress", "scalability"] {
        let s6 = step(&s, name);
        assert_eq!(s6["status"], "passed", "{s6:#}");
    }
    let scalability = &step(&s, "scalability")["evidence"][0];
    assert_eq!(scalability["kind"], "capacity", "{scalability:#}");
    assert_eq!(scalability["body"]["basis"], "replicas", "{scalability:#}");
    assert_eq!(r["stage_level"], 5, "{:#}", r["stages"]);
    assert_eq!(r["stages"][0]["status"], "proven");
    assert_eq!(r["stages"][3]["status"], "proven", "{:#}", r["stages"][3]);
    assert_eq!(r["stages"][4]["status"], "proven", "{:#}", r["stages"][4]);
    // pytest run by the pipeline: the test files are automated evidence.
    assert!(
        r["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["signal"] == "unit-tests"
                && e["source"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("tests/"))
                && e["automated"] == true),
        "{:#}",
        r["evidence"]
    );
    for env in ["staging", "production"] {
        let o = run(&["infra", "destroy", ".", "--env", env], &wine);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    }
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
}

#[test]
fn junit_reports_the_run_or_why_it_did_not_happen() {
    let dir = project(
        "[project]\nname = \"j\"\n\n[iac.steps.env]\nrun = \"true\"\n\n[ci.steps.check]\nrun = \"echo broken; exit 3\"\n\n[cd.steps.ship]\nrun = \"true\"\n",
    );
    let o = run(&["pipeline", "run", "--junit", "out/junit.xml"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let xml = std::fs::read_to_string(dir.path().join("out/junit.xml")).unwrap();
    assert!(xml.contains("<testsuites name=\"mlops j run 1\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""), "{xml}");
    assert!(
        xml.contains("<failure message=\"exit status 3\" type=\"failed\">broken</failure>"),
        "{xml}"
    );

    // A refused run still leaves a report that says why.
    let o = run(
        &["pipeline", "run", "--stage", "cd", "--junit", "refused.xml"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(3));
    let xml = std::fs::read_to_string(dir.path().join("refused.xml")).unwrap();
    assert!(
        xml.contains("<error message=\"refusing to run stage `cd`"),
        "{xml}"
    );

    // So does an invalid manifest.
    std::fs::write(dir.path().join("mlops.toml"), "[project]\nname = 3\n").unwrap();
    let o = run(&["pipeline", "run", "--junit", "invalid.xml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let xml = std::fs::read_to_string(dir.path().join("invalid.xml")).unwrap();
    assert!(xml.contains("errors=\"1\""), "{xml}");
}

#[test]
fn changed_since_runs_only_what_changed() {
    let dir = project(
        "[project]\nname = \"c\"\n\n[iac.steps.env]\nrun = \"true\"\n\n[ci.steps.data]\nrun = \"echo data >> ran\"\ninputs = [\"data/*.csv\"]\n\n[ci.steps.code]\nrun = \"echo code >> ran\"\ninputs = [\"src/*.py\"]\n",
    );
    let d = dir.path();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::write(d.join("data/a.csv"), "x\n1\n").unwrap();
    std::fs::write(d.join("src/m.py"), "pass\n").unwrap();
    std::fs::write(d.join(".gitignore"), ".mlops/\nran\n").unwrap();
    git(d, &["init", "-q"]);
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "init"]);
    assert!(run(&["pipeline", "run"], d).status.success());
    std::fs::write(d.join("src/m.py"), "print(2)\n").unwrap();
    let o = run(&["pipeline", "run", "--changed-since", "HEAD"], d);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("changed since HEAD: 1 files · affected: env, code"),
        "{}",
        stdout(&o)
    );
    let ran = std::fs::read_to_string(d.join("ran")).unwrap();
    let times = |what: &str| ran.lines().filter(|l| *l == what).count();
    assert_eq!((times("data"), times("code")), (1, 2), "{ran}");
    let s = status_json(d);
    assert_eq!(step(&s, "data")["status"], "cached");
    assert_eq!(
        step(&s, "env")["status"],
        "passed",
        "no inputs: it always runs"
    );

    let o = run(&["pipeline", "run", "--changed-since", "v9.9"], d);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`v9.9` is not a revision"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn ci_export_writes_parseable_workflows_and_keeps_existing_ones() {
    let dir = project("[project]\nname = \"w\"\n\n[iac.steps.env]\nrun = \"true\"\n");
    let d = dir.path();
    git(d, &["init", "-q"]);
    let o = run(&["ci", "export", "github"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(d.join(".github/workflows/mlops.yml")).unwrap();
    assert!(text.contains("mlops pipeline run --junit mlops-junit.xml"));
    let o = run(&["ci", "export", "github"], d);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("exists; pass --force"),
        "{}",
        stderr(&o)
    );
    assert!(
        run(&["ci", "export", "gitlab", "--force"], d)
            .status
            .success()
    );
    assert!(d.join(".gitlab-ci.yml").is_file());
    let o = run(&["ci", "export", "jenkins"], d);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn data_infer_schema_proposes_a_schema_the_file_passes() {
    let dir = project(
        "[project]\nname = \"d\"\n\n[iac.steps.env]\nrun = \"true\"\n\n[ci.steps.check]\nkind = \"data-validation\"\nwith = { file = \"d.csv\", schema-file = \"d.schema.toml\" }\n",
    );
    let d = dir.path();
    std::fs::write(
        d.join("d.csv"),
        "id,label,score\n1,a,0.5\n2,b,0.7\n3,a,0.9\n4,b,0.1\n",
    )
    .unwrap();
    let o = run(&["data", "infer-schema", "d.csv", "-o", "d.schema.toml"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["pipeline", "run"], d);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // New data outside the proposed bounds fails the step, with rows named.
    std::fs::write(d.join("d.csv"), "id,label,score\n1,a,0.5\n1,c,7.5\n").unwrap();
    let o = run(&["pipeline", "run"], d);
    assert_eq!(o.status.code(), Some(1));
    let s = status_json(d);
    assert_eq!(step(&s, "check")["status"], "failed");
    let o = run(&["data", "infer-schema", "missing.csv"], d);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read missing.csv"),
        "{}",
        stderr(&o)
    );
}

/// `mlops autoscale simulate`: the reference scenarios decide as upstream
/// (exit 0); a scenario whose expectation is not met exits 1 naming the
/// key; a file that is not a scenario exits 2 naming the file.
#[test]
fn autoscale_simulate_checks_scenarios_and_names_what_differs() {
    let reference =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/autoscale");
    let mut files: Vec<String> = std::fs::read_dir(&reference)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (shared/reference beside the repository)",
                reference.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    let tmp = tempfile::tempdir().unwrap();
    let mut args = vec!["autoscale", "simulate", "--json"];
    args.extend(files.iter().map(String::as_str));
    let o = run(&args, tmp.path());
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len());
    assert!(lines.iter().all(|l| l["passed"] == true), "{lines:#?}");

    let wrong = tmp.path().join("wrong.json");
    std::fs::write(
        &wrong,
        r#"{"id": "w", "policy": "hpa", "current_replicas": 10, "min_replicas": 1, "max_replicas": 100, "recommendation": 50, "behavior": null, "expect": {"desired": 50}}"#,
    )
    .unwrap();
    let o = run(&["autoscale", "simulate", "wrong.json"], tmp.path());
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("desired: expected 50, got 20"),
        "{}",
        stdout(&o)
    );

    std::fs::write(
        tmp.path().join("bad.json"),
        r#"{"policy": "hpa", "current_replica": 1}"#,
    )
    .unwrap();
    let o = run(
        &["autoscale", "simulate", "wrong.json", "bad.json"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("bad.json"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "nothing decided: {}", stdout(&o));
}
