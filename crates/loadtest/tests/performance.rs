//! The `performance` kind as a user runs it: `mlops pipeline run` on a
//! project that packages, deploys and releases iris (real processes on the
//! local provider), then load-tests it through the release environment's
//! gateway, and stresses it to a breaking point. A threshold that cannot
//! hold fails the stage, saying by how much; the evidence and the result
//! files say what was measured.

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn mlops(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(built("mlops"))
        .args(args)
        .arg(dir)
        .output()
        .expect("run mlops");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stops every service the pipeline started when dropped.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for env in ["production", "staging"] {
            let _ = mlops(&["infra", "destroy", "--env", env], &self.0);
        }
    }
}

/// The project's data (iris's rows as `requests.csv`) and a model trained
/// on it, in `dir`.
fn prepare(dir: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(
        repo.join("examples/iris/data/iris.csv"),
        dir.join("requests.csv"),
    )
    .unwrap();
    let out = Command::new(built("iris"))
        .args(["train", "--data"])
        .arg(dir.join("requests.csv"))
        .arg("--model")
        .arg(dir.join("model.json"))
        .arg("--metrics")
        .arg(dir.join("metrics.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn manifest(thresholds: &str) -> String {
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

[apm.steps.noop]
run = "true"

[loadtest.steps.perf]
kind = "performance"
with = {{ traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 100 }}, duration = "2s", connections = 8, thresholds = [{thresholds}] }}

# A threshold on the count breaks at a known rate: 1 s levels of 100, 200,
# 400 (broke), then 300 (broke) and 250 (held).
[loadtest.steps.stress]
kind = "stress"
with = {{ traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 100 }}, slo = ["p99 < 2s", "requests < 300"], max-rate = 800, step-duration = "1s", bisect = 2 }}
depends-on = ["perf"]

# A short endurance run: the replica's memory sampled while it runs.
[loadtest.steps.endurance]
kind = "endurance"
with = {{ traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 50 }}, duration = "3s", thresholds = ["error_rate < 1%"], max-memory-growth = "512MiB", max-latency-drift = "10000%", sample-every = "500ms" }}
depends-on = ["stress"]

# Large payloads: 500 rows in each request.
[loadtest.steps.volume]
kind = "volume"
with = {{ traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 20 }}, batch = 500, duration = "1s", thresholds = ["error_rate < 1%"] }}
depends-on = ["endurance"]
"#,
        iris = built("iris").display()
    )
}

#[test]
fn a_performance_step_load_tests_the_release_through_its_gateway() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _cleanup = Cleanup(dir.to_owned());
    prepare(dir);

    std::fs::write(
        dir.join("mlops.toml"),
        manifest(r#""p99 < 2s", "error_rate < 1%", "requests >= 200""#),
    )
    .unwrap();
    let (code, stdout, stderr) = mlops(&["pipeline", "run"], dir);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // The result the step saved: 2 s at 100/s, every request answered
    // through the gateway, histograms included.
    let result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(".mlops/loadtest/perf/result.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(result["requests"], 200, "{result:#}");
    assert_eq!(result["status"]["2xx"], 200, "{result:#}");
    assert!(
        result["target"]
            .as_str()
            .unwrap()
            .ends_with("/v2/models/iris/infer"),
        "{result:#}"
    );
    assert_eq!(
        result["histograms"]["per_second"].as_array().unwrap().len(),
        2
    );
    let thresholds = result["thresholds"].as_array().unwrap();
    assert!(
        thresholds.iter().all(|t| t["passed"] == true),
        "{thresholds:#?}"
    );
    let csv = std::fs::read_to_string(dir.join(".mlops/loadtest/perf/result.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // The gateway counted them: the load went through the release
    // environment, where monitoring sees it.
    let (code, status, _) = mlops(&["pipeline", "status", "--json"], dir);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let perf = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "perf")
        .unwrap();
    let evidence = &perf["evidence"][0];
    assert_eq!(evidence["kind"], "load-test", "{perf:#}");
    let body = &evidence["body"];
    assert_eq!(body["verdict"], "pass", "{body:#}");
    assert_eq!(body["requests"], 200, "{body:#}");
    assert_eq!(
        body["result"], ".mlops/loadtest/perf/result.json",
        "{body:#}"
    );
    let (_, text, _) = mlops(&["pipeline", "status"], dir);
    assert!(
        text.contains("performance load test pass on iris in production: 200 requests at"),
        "{text}"
    );
    // The stress step bracketed the breaking point and bisected it.
    let stress = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "stress")
        .unwrap();
    let point = &stress["evidence"][0];
    assert_eq!(point["kind"], "breaking-point", "{stress:#}");
    let body = &point["body"];
    let rates: Vec<f64> = body["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["rate"].as_f64().unwrap())
        .collect();
    assert_eq!(rates, [100.0, 200.0, 400.0, 300.0, 250.0], "{body:#}");
    assert_eq!(body["sustained_rate"], 250.0, "{body:#}");
    assert_eq!(body["broke_at"], 300.0, "{body:#}");
    assert!(
        body["failed_first"][0]
            .as_str()
            .unwrap()
            .starts_with("requests < 300: FAILED, requests = 300"),
        "{body:#}"
    );
    assert!(
        dir.join(".mlops/loadtest/stress/level-05-250.json")
            .is_file(),
        "every level's result is kept"
    );
    assert!(
        text.contains("breaking point of iris: 250/s held, 300/s broke (requests < 300: FAILED"),
        "{text}"
    );
    // The capacity model fitted to the five levels.
    let capacity = &stress["evidence"][1];
    assert_eq!(capacity["kind"], "capacity", "{stress:#}");
    let fit = &capacity["body"]["fit"];
    assert_eq!(fit["points"], 5, "{capacity:#}");
    assert!(fit["lambda"].as_f64().unwrap() > 0.0, "{capacity:#}");
    assert!(
        fit["r_squared"].as_f64().unwrap().is_finite(),
        "{capacity:#}"
    );
    // The endurance step measured the replica (a local process) as it ran.
    let endurance = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "endurance")
        .unwrap();
    let body = &endurance["evidence"][0]["body"];
    assert_eq!(body["kind"], "endurance", "{endurance:#}");
    assert_eq!(body["requests"], 150, "{body:#}");
    let memory = &body["endurance"]["memory"];
    assert_eq!(memory.as_array().unwrap().len(), 1, "one replica: {body:#}");
    assert_eq!(memory[0]["source"], "process", "{body:#}");
    assert!(memory[0]["pid"].as_u64().is_some(), "{body:#}");
    assert!(memory[0]["samples"].as_u64().unwrap() >= 4, "{body:#}");
    assert!(memory[0]["first_bytes"].as_u64().unwrap() > 0, "{body:#}");
    assert!(
        body["endurance"]["latency_drift"].as_f64().is_some(),
        "{body:#}"
    );
    assert_eq!(
        body["endurance"]["problems"],
        serde_json::json!([]),
        "{body:#}"
    );
    // The volume step sent batches of 500 rows.
    let volume = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "volume")
        .unwrap();
    let body = &volume["evidence"][0]["body"];
    assert_eq!(body["kind"], "volume", "{volume:#}");
    assert_eq!(body["batch"], 500, "{body:#}");
    assert_eq!(body["requests"], 20, "{body:#}");
    assert_eq!(body["errors"], 0, "{body:#}");
    assert!(
        body["request_bytes"].as_f64().unwrap() > 500.0 * 4.0 * 3.0,
        "{body:#}"
    );
    assert!(
        text.contains("volume load test pass on iris in production: 20 requests"),
        "{text}"
    );

    // A threshold that cannot hold fails the stage, saying by how much.
    std::fs::write(dir.join("mlops.toml"), manifest(r#""p50 < 1us""#)).unwrap();
    let (code, stdout, stderr) = mlops(&["pipeline", "run", "--stage", "loadtest"], dir);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let all = format!("{stdout}\n{stderr}");
    assert!(
        all.contains("thresholds failed: p50 < 1us: FAILED, p50 = "),
        "{all}"
    );
    assert!(all.contains("over the limit of 0.001 ms"), "{all}");

    // Bad settings are refused before anything runs, by name.
    std::fs::write(
        dir.join("mlops.toml"),
        manifest(r#""p99 < soon""#).replace("rate = 100", "rate = 1000000"),
    )
    .unwrap();
    let (code, stdout, stderr) = mlops(&["pipeline", "run", "--stage", "loadtest"], dir);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("threshold `p99 < soon`"), "{stderr}");
    assert!(
        stderr.contains("at most 100000 requests per second"),
        "{stderr}"
    );
    let refused = |edit: &dyn Fn(String) -> String, says: &str| {
        std::fs::write(dir.join("mlops.toml"), edit(manifest(r#""p99 < 1s""#))).unwrap();
        let (code, stdout, stderr) = mlops(&["pipeline", "run", "--stage", "loadtest"], dir);
        assert_eq!(code, 2, "{says}: {stdout}\n{stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
    };
    refused(
        &|m| m.replace("max-rate = 800", "max-rate = 50"),
        "`traffic.rate` (the first level) must be below `max-rate`",
    );
    refused(
        &|m| m.replace("batch = 500, ", ""),
        "the `volume` kind needs `batch`",
    );
    refused(
        &|m| {
            m.replace(
                "duration = \"2s\", connections = 8",
                "duration = \"2s\", batch = 3, connections = 8",
            )
        },
        "`batch` is a key of the `volume` kind",
    );
    refused(
        &|m| {
            m.replace(
                "duration = \"2s\", connections = 8",
                "stages = [{ duration = \"1s\", from = 0, to = 0 }], connections = 8",
            )
        },
        "every stage's rate is 0",
    );
    refused(
        &|m| {
            m.replace(
                "max-latency-drift = \"10000%\"",
                "max-latency-drift = \"lots\"",
            )
        },
        "`max-latency-drift` must be a percentage",
    );
}

#[test]
fn a_scalability_step_measures_each_replica_count_and_restores_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _cleanup = Cleanup(dir.to_owned());
    prepare(dir);
    // The replica count handed to a controller; stage 6 only measures.
    let base = manifest(r#""p99 < 2s""#);
    let loadtest = base.find("[loadtest.steps.perf]").unwrap();
    let manifest = format!(
        "{}{}",
        &base[..loadtest],
        r#"[loadtest.steps.scale]
kind = "scalability"
with = { traffic = { csv = "requests.csv", exclude = ["species"], rate = 200 }, slo = ["p99 < 2s", "error_rate < 1%"], max-rate = 400, step-duration = "1s", bisect = 0, replicas = [1, 2], target-rate = 300 }
"#
    )
    .replace("replicas = 1\n", "replicas = { min = 1, max = 2 }\n");
    std::fs::write(dir.join("mlops.toml"), &manifest).unwrap();
    let (code, stdout, stderr) = mlops(&["pipeline", "run"], dir);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let (_, status, _) = mlops(&["pipeline", "status", "--json"], dir);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let scale = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "scale")
        .unwrap();
    let body = &scale["evidence"][0]["body"];
    assert_eq!(scale["evidence"][0]["kind"], "capacity", "{scale:#}");
    assert_eq!(body["basis"], "replicas", "{body:#}");
    let rows = body["rows"].as_array().unwrap();
    let counts: Vec<u64> = rows
        .iter()
        .map(|r| r["replicas"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2], "{body:#}");
    for row in rows {
        assert_eq!(row["sustained_rate"], 400.0, "{body:#}");
    }
    assert_eq!(body["replicas_for_required"], 1, "{body:#}");
    assert_eq!(body["verdict"], "pass", "{body:#}");
    // Back at one replica, the gateway's pool as it was.
    let (_, infra, _) = mlops(&["infra", "status", "--env", "production", "--json"], dir);
    let infra: serde_json::Value = serde_json::from_str(&infra).unwrap();
    let declared = infra["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("{infra:#}"))
        .iter()
        .find(|i| i["service"] == "iris" && i["owner"].is_null())
        .unwrap_or_else(|| panic!("{infra:#}"));
    assert_eq!(declared["desired_replicas"], 1, "{declared:#}");
    let log = std::fs::read_to_string(scale["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("`iris` at 2 replicas: "), "{log}");
    assert!(log.contains("`iris` is back at 1 replicas"), "{log}");

    // A service with a fixed replica count cannot be scaled: refused.
    std::fs::write(
        dir.join("mlops.toml"),
        manifest.replace("replicas = { min = 1, max = 2 }\n", "replicas = 1\n"),
    )
    .unwrap();
    let (code, _, stderr) = mlops(&["pipeline", "run", "--stage", "loadtest"], dir);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("declares a fixed replica count"),
        "{stderr}"
    );
}
