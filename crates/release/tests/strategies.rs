//! The `blue-green`, `ab` and `shadow` kinds end to end with real
//! processes on the local provider (iris model servers, the `mlops`
//! binary as the gateway), as `tests/canary.rs` does for the canary; and
//! their manifest validation.

mod common;

use common::*;
use mlops_core::StepStatus;
use mlops_core::registry::ModelStage;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn owned(dir: &Path) -> usize {
    instances(dir, "production", "iris")
        .into_iter()
        .filter(|i| i.owner.is_some())
        .count()
}

fn declared_version(dir: &Path) -> Vec<String> {
    instances(dir, "production", "iris")
        .into_iter()
        .filter(|i| i.owner.is_none())
        .filter_map(|i| i.model_version)
        .collect()
}

/// A blue-green step; the latency regressions allowed are wide, so a
/// loaded machine's noise between the preview and the switch does not
/// switch back.
fn blue_green(analysis: &str, keep_old: &str) -> String {
    manifest_release(
        &["model.json"],
        &format!(
            r#"
[release.steps.switch]
kind = "blue-green"
with = {{ duration = "1s", keep-old = "{keep_old}", drain = "200ms", traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 40 }}, analysis = {{ min-sample-size = 8, max-error-rate = 0.01, alpha = 0.01, latency-median-increase = {{ ms = 50, percent = 50 }}, latency-p99-increase = {{ ms = 200, percent = 100 }}{analysis} }} }}
"#
        ),
    )
}

#[test]
fn blue_green_switches_a_good_preview_keeps_the_old_colour_warm_and_archives_a_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cleanup = Cleanup(dir.to_owned());
    let iris_csv = repo().join("examples/iris/data/iris.csv");
    std::fs::copy(&iris_csv, dir.join("requests.csv")).unwrap();
    let registry = registry();

    // 1. A first release: no old colour, the preview judged by its SLOs.
    train(dir, &iris_csv);
    let run = mlops_testkit::run_manifest(dir, &blue_green("", "3s"), &registry);
    assert_passed(dir, &run);
    let release = evidence(step(&run, "switch"), mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "promote", "{release:#}");
    assert_eq!(release["strategy"], "blue-green");
    assert_eq!(production(dir), Some(1));

    // 2. A second version: preview by header, then the switch, the old
    // colour (iris:1's declared instance) warm for keep-old while the
    // preview serves every request.
    train(dir, &reordered_csv(dir, true));
    let seen_warm = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (dir, seen_warm, stop) = (dir.to_owned(), seen_warm.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let switched = release_state(&dir).is_some_and(|s| {
                    s["strategy"] == "blue-green" && s["phase"] == "running" && s["weight"] == 100
                });
                if switched
                    && declared_version(&dir) == ["iris:1"]
                    && owned(&dir) == 1
                    && production(&dir) == Some(1)
                {
                    seen_warm.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(150));
            }
        })
    };
    let run = mlops_testkit::run_manifest(dir, &blue_green("", "3s"), &registry);
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_passed(dir, &run);
    let switch = step(&run, "switch");
    let log2 = log(dir, switch);
    eprintln!("switch:\n{log2}");
    let release = evidence(switch, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "promote", "{release:#}");
    assert_eq!(release["candidate"], "iris:2");
    assert_eq!(release["stable"], "iris:1");
    assert_eq!(release["settings"]["keep-old-ms"], 3000, "{release:#}");
    assert_eq!(release["settings"]["preview-header"], "x-mlops-preview: 1");
    assert_eq!(release["result"]["old-colour-kept-ms"], 3000, "{release:#}");
    let preview = &release["rounds"][0];
    assert_eq!(preview["weight"], 0);
    // The new colour analyzed again while the old one was warm, against
    // stable's measurements of the preview window.
    let after = &release["rounds"][1];
    assert_eq!(after["weight"], 100, "{release:#}");
    assert_eq!(after["stable_baseline"], "earlier-round", "{release:#}");
    assert_eq!(release["settings"]["verify-after-switch"], true);
    assert!(
        preview["analysis"]["stable"]["requests"]
            .as_u64()
            .unwrap_or(0)
            > 0
            && preview["analysis"]["candidate"]["requests"]
                .as_u64()
                .unwrap_or(0)
                > 0,
        "{release:#}"
    );
    assert!(
        log2.contains("switched: every request goes to iris:2"),
        "{log2}"
    );
    assert!(
        seen_warm.load(Ordering::Relaxed),
        "the old colour was seen running beside the switched preview"
    );
    assert_eq!(production(dir), Some(2));
    assert_eq!(declared_version(dir), ["iris:2"]);
    assert_eq!(owned(dir), 0, "the preview instance is gone");
    let proxy = release["gateway"].as_str().unwrap().to_owned();
    let (status, variant, _) = infer(&proxy);
    assert_eq!((status, variant.as_str()), (200, "stable"));

    // 3. A preview that misses the p99 SLO: never switched to, archived.
    train(dir, &reordered_csv(dir, false));
    let run = mlops_testkit::run_manifest(
        dir,
        &blue_green(", max-p99-latency-ms = 0.001", "3s"),
        &registry,
    );
    let switch = step(&run, "switch");
    assert_eq!(switch.status, StepStatus::Failed, "{}", log(dir, switch));
    let reason = switch.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("not switched") && reason.contains("latency-p99-slo"),
        "{reason}"
    );
    let release = evidence(switch, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "rollback", "{release:#}");
    let rollback = evidence(switch, mlops_release::evidence::ROLLBACK);
    assert_eq!(rollback["candidate"], "iris:3");
    assert_eq!(stage_of(dir, 3), Some(ModelStage::Archived));
    assert_eq!(production(dir), Some(2));
    assert_eq!(owned(dir), 0);
    assert_eq!(declared_version(dir), ["iris:2"]);
    let (status, variant, _) = infer(&proxy);
    assert_eq!((status, variant.as_str()), (200, "stable"));
    assert_eq!(release_state(dir).unwrap()["phase"], "rolled-back");

    // 4. `mlops release abort` while the old colour is warm: every request
    // back to it at once, the candidate out and still in staging.
    // (iris:2's training order, one epoch fewer: another version, the
    // same predictions to the eye of the preview's analysis.)
    train_with(dir, &reordered_csv(dir, true), &["--epochs", "1999"]);
    let aborted = std::thread::spawn({
        let dir = dir.to_owned();
        move || {
            for _ in 0..400 {
                let switched = release_state(&dir).is_some_and(|s| {
                    s["phase"] == "running" && s["weight"] == 100 && s["candidate"] == 4
                });
                if switched {
                    let (_, _, status) = mlops_release_cli(&dir, &["status"]);
                    let (code, out, _) = mlops_release_cli(&dir, &["abort"]);
                    return Some((status, code, out));
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            None
        }
    });
    let run = mlops_testkit::run_manifest(dir, &blue_green("", "6s"), &registry);
    let (status, code, out) = aborted.join().unwrap().expect("the switch was seen");
    assert!(
        status["warnings"].as_array().is_some_and(Vec::is_empty),
        "{status:#}"
    );
    assert_eq!(status["release"]["strategy"], "blue-green", "{status:#}");
    assert_eq!(code, 0, "{out}");
    let switch = step(&run, "switch");
    eprintln!("aborted after the switch:\n{}", log(dir, switch));
    assert_eq!(switch.status, StepStatus::Failed);
    let release = evidence(switch, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "abort", "{release:#}");
    assert_eq!(stage_of(dir, 4), Some(ModelStage::Staging));
    assert_eq!(production(dir), Some(2));
    assert_eq!(declared_version(dir), ["iris:2"]);
    assert_eq!(owned(dir), 0);
    let (status, variant, _) = infer(&proxy);
    assert_eq!((status, variant.as_str()), (200, "stable"));

    drop(cleanup);
}

/// `mlops release ARGS --path DIR --json`: the JSON printed (null when
/// nothing parses) and the exit code with the output, for the second.
fn mlops_release_cli(dir: &Path, args: &[&str]) -> (i32, String, serde_json::Value) {
    let out = std::process::Command::new(built("mlops"))
        .arg("release")
        .args(args)
        .arg("--path")
        .arg(dir)
        .arg("--json")
        .env("USER", "tester")
        .output()
        .expect("run mlops");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.code().unwrap_or(-1),
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
    )
}

fn ab(with: &str) -> String {
    manifest_release(
        &["model.json"],
        &format!(
            r#"
[release.steps.experiment]
kind = "ab"
with = {{ duration = "2s", min-sample-size = 20, alpha = 0.01, sticky = {{ cookie = "user" }}, drain = "200ms", traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 50 }}{with} }}
"#
        ),
    )
}

#[test]
fn ab_names_the_arm_without_errors_and_promotes_a_candidate_that_is_not_worse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cleanup = Cleanup(dir.to_owned());
    let iris_csv = repo().join("examples/iris/data/iris.csv");
    std::fs::copy(&iris_csv, dir.join("requests.csv")).unwrap();
    let registry = registry();

    // With nothing in production there is no arm A: the step passes and
    // the candidate stays in staging.
    train(dir, &iris_csv);
    let run = mlops_testkit::run_manifest(dir, &ab(""), &registry);
    assert_passed(dir, &run);
    let release = evidence(step(&run, "experiment"), mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "pass", "{release:#}");
    assert_eq!(stage_of(dir, 1), Some(ModelStage::Staging));
    // A first release by a canary.
    let run = mlops_testkit::run_manifest(dir, &manifest(""), &registry);
    assert_passed(dir, &run);
    assert_eq!(production(dir), Some(1));

    // B is a model over three features: every request (four) is refused.
    let text = std::fs::read_to_string(&iris_csv).unwrap();
    let three: String = text
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            format!("{},{},{},{}\n", cols[0], cols[1], cols[2], cols[4])
        })
        .collect();
    std::fs::write(dir.join("three.csv"), three).unwrap();
    train(dir, &dir.join("three.csv"));
    let run = mlops_testkit::run_manifest(dir, &ab(", promote = \"winner\""), &registry);
    let experiment = step(&run, "experiment");
    eprintln!("B loses:\n{}", log(dir, experiment));
    assert_eq!(experiment.status, StepStatus::Failed);
    let release = evidence(experiment, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "rollback", "{release:#}");
    let outcome = &release["result"]["outcome"];
    assert_eq!(outcome["winner"], "a", "{release:#}");
    assert!(outcome["p-value"].as_f64().unwrap() < 0.01, "{release:#}");
    assert!(outcome["effect"].as_f64().unwrap() > 50.0, "{release:#}");
    assert_eq!(release["result"]["b"]["error-rate"], 1.0, "{release:#}");
    assert_eq!(release["settings"]["experiment"]["metric"], "error-rate");
    assert_eq!(stage_of(dir, 2), Some(ModelStage::Archived));
    assert_eq!(production(dir), Some(1));
    assert_eq!(owned(dir), 0);

    // An equally good B with promote = "not-worse": no significant
    // difference, promoted.
    train(dir, &reordered_csv(dir, true));
    let guarded = ", promote = \"not-worse\", analysis = { min-sample-size = 8, max-error-rate = 0.01, alpha = 0.01, latency-median-increase = { ms = 50, percent = 50 }, latency-p99-increase = { ms = 200, percent = 100 } }";
    let run = mlops_testkit::run_manifest(dir, &ab(guarded), &registry);
    assert_passed(dir, &run);
    let release = evidence(step(&run, "experiment"), mlops_release::evidence::RELEASE);
    eprintln!("B not worse:\n{}", log(dir, step(&run, "experiment")));
    assert_eq!(release["verdict"], "promote", "{release:#}");
    assert!(
        release["result"]["outcome"]["winner"].is_null(),
        "{release:#}"
    );
    let (a, b) = (
        release["result"]["a"]["requests"].as_u64().unwrap(),
        release["result"]["b"]["requests"].as_u64().unwrap(),
    );
    assert!(a >= 20 && b >= 20, "both arms served: {a} and {b}");
    // The guardrails: B analyzed against A as a canary round, passed.
    assert_eq!(
        release["rounds"][0]["analysis"]["verdict"], "pass",
        "{release:#}"
    );
    assert_eq!(release["rounds"][0]["weight"], 50);
    assert_eq!(production(dir), Some(3));
    assert_eq!(owned(dir), 0);
    // The gateway's variant is labelled with the version it now serves.
    let gateway_config = dir.join(".mlops/release/production/iris-gateway/config.json");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&gateway_config).unwrap()).unwrap();
    assert_eq!(config["variants"][0]["name"], "stable", "{config:#}");
    assert_eq!(config["variants"][0]["version"], "iris:3", "{config:#}");

    drop(cleanup);
}

fn shadow_then_canary(shadow: &str) -> String {
    manifest_release(
        &["model.json", "note.txt"],
        &format!(
            r#"
[release.steps.shadow]
kind = "shadow"
with = {{ duration = "1s", min-sample-size = 20, max-psi = 0.2, drain = "200ms", traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 40 }}{shadow} }}

[release.steps.canary]
kind = "canary"
with = {{ steps = [50, 100], hold = "1s", drain = "200ms", traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 40 }}, analysis = {{ min-sample-size = 8, max-error-rate = 0.01, alpha = 0.01 }} }}
depends-on = ["shadow"]
"#
        ),
    )
}

#[test]
fn shadow_passes_an_identical_candidate_to_the_canary_and_catches_a_different_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cleanup = Cleanup(dir.to_owned());
    let iris_csv = repo().join("examples/iris/data/iris.csv");
    std::fs::copy(&iris_csv, dir.join("requests.csv")).unwrap();
    let registry = registry();

    // 1. Nothing in production: nothing to shadow, the canary releases.
    train(dir, &iris_csv);
    std::fs::write(dir.join("note.txt"), "one").unwrap();
    let run = mlops_testkit::run_manifest(dir, &shadow_then_canary(""), &registry);
    assert_passed(dir, &run);
    let release = evidence(step(&run, "shadow"), mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "pass", "{release:#}");
    assert_eq!(production(dir), Some(1));

    // 2. The same model in a new version (training is deterministic; only
    // the note differs): every mirror agrees, the canary promotes it.
    train(dir, &iris_csv);
    std::fs::write(dir.join("note.txt"), "two").unwrap();
    let run = mlops_testkit::run_manifest(dir, &shadow_then_canary(""), &registry);
    assert_passed(dir, &run);
    let shadow = step(&run, "shadow");
    eprintln!("identical:\n{}", log(dir, shadow));
    let release = evidence(shadow, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "pass", "{release:#}");
    assert_eq!(release["candidate"], "iris:2");
    let m = &release["result"]["mirroring"];
    assert!(m["compared"].as_u64().unwrap() >= 20, "{release:#}");
    assert_eq!(m["agreed"], m["compared"], "{release:#}");
    assert_eq!(release["result"]["judgement"]["agreement"], 1.0);
    assert_eq!(
        release["result"]["drift"]["ks-statistic"], 0.0,
        "{release:#}"
    );
    // Clients only ever got stable's answers.
    assert_eq!(release["result"]["clients"]["candidate"], 0, "{release:#}");
    assert_eq!(release["settings"]["policy"]["min-agreement"], 0.99);
    let canary = evidence(step(&run, "canary"), mlops_release::evidence::RELEASE);
    assert_eq!(canary["verdict"], "promote", "{canary:#}");
    assert_eq!(production(dir), Some(2));

    // 3. A barely trained model: its answers disagree and its predictions
    // drift; archived, the canary never runs.
    train_with(dir, &iris_csv, &["--epochs", "2"]);
    std::fs::write(dir.join("note.txt"), "three").unwrap();
    let run = mlops_testkit::run_manifest(dir, &shadow_then_canary(""), &registry);
    let shadow = step(&run, "shadow");
    eprintln!("different:\n{}", log(dir, shadow));
    assert_eq!(shadow.status, StepStatus::Failed);
    let release = evidence(shadow, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "rollback", "{release:#}");
    let m = &release["result"]["mirroring"];
    assert!(
        m["disagreed_numeric"].as_u64().unwrap_or(0) + m["disagreed-numeric"].as_u64().unwrap_or(0)
            > 0,
        "{release:#}"
    );
    let drift = &release["result"]["drift"];
    assert!(drift["psi"].as_f64().unwrap() > 0.2, "{release:#}");
    assert!(drift["ks-statistic"].as_f64().unwrap() > 0.1, "{release:#}");
    assert_eq!(stage_of(dir, 3), Some(ModelStage::Archived));
    assert_ne!(step(&run, "canary").status, StepStatus::Passed);
    assert_eq!(production(dir), Some(2));
    assert_eq!(owned(dir), 0);

    drop(cleanup);
}

/// Compiles `release` (`[release.steps.*]`) and returns every diagnostic.
fn diagnostics(release: &str) -> String {
    let manifest = manifest_release(&["model.json"], release);
    let registry = registry();
    let tmp = tempfile::tempdir().unwrap();
    match mlops_core::manifest::Manifest::parse(tmp.path().join("mlops.toml"), manifest, &registry)
    {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_release_steps_get_clear_diagnostics() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"
[release.steps.bg]
kind = "blue-green"
with = { duration = "0s", keep-old = "2h", preview-header = "nope", traffic = { csv = "r.csv", rate = 0 } }
"#,
            &[
                "`duration` must be longer than zero",
                "`keep-old` must be at most 1h",
                "`preview-header` must be `NAME: VALUE`",
                "`traffic.rate` must be above 0",
            ],
        ),
        (
            r#"
[release.steps.ab]
kind = "ab"
with = { duration = "1s", share = 100, alpha = 1.5, sticky = { cookie = "a", header = "b" }, output = "label", traffic = { requests = "r.jsonl" } }
"#,
            &[
                "`share` must be B's share of users in percent",
                "`alpha` must be above 0 and below 1",
                "`sticky` needs exactly one of",
                "`output` is read only with `metric = \"output-mean\"`",
            ],
        ),
        (
            r#"
[release.steps.ab]
kind = "ab"
with = { duration = "1s", metric = "revenue", traffic = { requests = "r.jsonl" } }
"#,
            &["revenue"],
        ),
        (
            r#"
[release.steps.sh]
kind = "shadow"
with = { duration = "1s", share = 0, min-agreement = 2, psi-bins = 1, tolerance = { absolute = -1 }, traffic = { csv = "a", requests = "b" } }
"#,
            &[
                "`share` must be the fraction of requests mirrored",
                "`min-agreement` must be a fraction",
                "`psi-bins` must be 2 to 1000",
                "`tolerance.absolute` and `tolerance.relative`",
                "`traffic` needs one of",
            ],
        ),
        (
            r#"
[release.steps.sh]
kind = "shadow"
with = { duration = "1s", drift = false, max-psi = 0.2, traffic = { requests = "r.jsonl" } }
"#,
            &["`max-psi` and `max-ks-statistic` need the drift measured"],
        ),
    ];
    // Where a key's value is wrong, the diagnostic points at it.
    let at = |got: &str, message: &str, line_col: &str| {
        let from = got
            .find(message)
            .unwrap_or_else(|| panic!("{message:?} in {got}"));
        let arrow = got[from..].lines().nth(1).unwrap_or_default();
        assert!(
            arrow.ends_with(line_col),
            "{message:?} at {arrow:?}, not {line_col}"
        );
    };
    at(
        &diagnostics(cases[0].0),
        "`keep-old` must be at most 1h",
        ":35:38",
    );
    at(
        &diagnostics(cases[1].0),
        "`share` must be B's share",
        ":35:35",
    );
    at(
        &diagnostics(cases[3].0),
        "`psi-bins` must be 2 to 1000",
        ":35:68",
    );
    for (release, expected) in cases {
        let got = diagnostics(release);
        eprintln!("{got}");
        // Each problem is reported where it is, `mlops.toml:LINE:COLUMN`.
        assert!(got.contains("mlops.toml:"), "{got}");
        for e in *expected {
            assert!(got.contains(e), "expected {e:?} in:\n{got}\nfor {release}");
        }
    }
}
