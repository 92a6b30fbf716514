//! A human's side of a release, as a user runs it: `mlops release status`,
//! `promote`, `abort`, `rollback` and `history` (the `mlops` binary) on a
//! release that a canary step paused, with the gateway killed (`kill -9`)
//! while the release waits.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use mlops_core::registry::ModelStage;
use mlops_core::{Ledger, StepStatus};

/// `mlops release ARGS --path DIR --json`: exit code and the JSON printed
/// (null when nothing parses).
fn mlops(dir: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(built("mlops"))
        .arg("release")
        .args(args)
        .arg("--path")
        .arg(dir)
        .arg("--json")
        .env("USER", "tester")
        .output()
        .expect("run mlops");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
        format!("{stdout}{stderr}"),
    )
}

/// A canary that pauses at its first step: no round reaches the sample
/// size, and one inconclusive round is one too many.
fn pausing() -> String {
    manifest_with(
        "min-sample-size = 1000000, max-error-rate = 0.01",
        ", inconclusive-limit = 0, on-inconclusive = \"pause\"",
    )
}

/// Commits everything in `dir` (a repository made on first use).
fn commit(dir: &Path, message: &str) {
    let repo = git2::Repository::open(dir)
        .or_else(|_| git2::Repository::init(dir))
        .unwrap();
    let mut index = repo.index().unwrap();
    index
        .add_all(["mlops.toml"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let who = git2::Signature::now("tester", "tester@localhost").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &who, &who, message, &tree, &parents)
        .unwrap();
}

fn production(dir: &Path) -> Option<i64> {
    Ledger::open(dir)
        .unwrap()
        .model_in_stage("iris", ModelStage::Production)
        .unwrap()
        .map(|v| v.number)
}

#[test]
fn a_paused_canary_is_promoted_by_hand_rolled_back_and_a_second_aborted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cleanup = Cleanup(dir.to_owned());
    let iris_csv = repo().join("examples/iris/data/iris.csv");
    std::fs::copy(&iris_csv, dir.join("requests.csv")).unwrap();
    let registry = registry();

    // A git repository, so that promotions are tagged.
    std::fs::write(dir.join("mlops.toml"), pausing()).unwrap();
    commit(dir, "feat: the iris release pipeline");

    // Before any release: status says so; the human commands refuse (3).
    let (code, status, out) = mlops(dir, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(status["release"].is_null(), "{status:#}");
    assert!(status["production"].is_null(), "{status:#}");
    for cmd in ["promote", "abort", "rollback"] {
        let (code, _, out) = mlops(dir, &[cmd]);
        assert_eq!(
            code, 3,
            "`mlops release {cmd}` with nothing released: {out}"
        );
    }

    // iris:1 released (a first release).
    train(dir, &iris_csv);
    let run = mlops_testkit::run_manifest(dir, &manifest(""), &registry);
    assert_passed(dir, &run);
    assert_eq!(production(dir), Some(1));
    let first = evidence(step(&run, "canary"), mlops_release::evidence::RELEASE);
    // What iris says it serves (its model's hash) under iris:1.
    let (_, _, served_1) = infer(first["gateway"].as_str().unwrap());

    // iris:2 paused at 50 %.
    train(dir, &reordered_csv(dir, true));
    let run = mlops_testkit::run_manifest(dir, &pausing(), &registry);
    let canary = step(&run, "canary");
    assert_eq!(canary.status, StepStatus::Failed, "{}", log(dir, canary));
    let reason = canary.reason.clone().unwrap_or_default();
    assert!(reason.contains("paused"), "{reason}");
    let release = evidence(canary, mlops_release::evidence::RELEASE);
    assert_eq!(release["verdict"], "pause", "{release:#}");
    assert_eq!(release["settings"]["policy"]["inconclusive-limit"], 0);
    let (code, status, out) = mlops(dir, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(status["phase"], "paused", "{status:#}");
    assert_eq!(status["release"]["candidate"], 2);
    assert_eq!(status["release"]["weight"], 50);
    assert_eq!(status["production"]["id"], "iris:1");
    assert_eq!(status["staging"]["id"], "iris:2");
    assert_eq!(status["candidates"].as_array().map(Vec::len), Some(1));
    assert!(
        status["gateway"]["running"].as_bool().unwrap(),
        "{status:#}"
    );
    assert_eq!(status["warnings"], serde_json::json!([]), "{status:#}");
    let proxy = status["gateway"]["proxy"].as_str().unwrap().to_owned();

    // The gateway killed with kill -9 while the release waits: its
    // supervisor restarts it with its config, and status tells the truth.
    let gateway = instances(dir, "production", "iris-gateway");
    let pid: i32 = gateway[0].replicas[0]
        .handle
        .trim_start_matches("pid ")
        .parse()
        .expect("the local provider's handle is `pid N`");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (_, status, _) = mlops(dir, &["status"]);
        if status["gateway"]["running"].as_bool() == Some(true)
            && status["warnings"] == serde_json::json!([])
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not come back after kill -9: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let weights: Vec<(String, u64)> = status["gateway"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weights,
        [("stable".to_owned(), 50), ("canary".to_owned(), 50)],
        "{status:#}"
    );
    let (code, _, _) = infer(&proxy);
    assert_eq!(code, 200, "the restarted gateway serves");

    // A human promotes it.
    let (code, done, out) = mlops(dir, &["promote"]);
    assert_eq!(code, 0, "{out}");
    assert!(!done["done"].as_array().unwrap().is_empty(), "{done:#}");
    assert_eq!(production(dir), Some(2));
    let (_, status, _) = mlops(dir, &["status"]);
    assert_eq!(status["phase"], "promoted", "{status:#}");
    assert_eq!(status["candidates"], serde_json::json!([]), "{status:#}");
    assert_eq!(status["warnings"], serde_json::json!([]), "{status:#}");
    let (code, variant, served_2) = infer(&proxy);
    assert_eq!((code, variant.as_str()), (200, "stable"));
    assert_ne!(served_2, served_1, "iris:2 serves another model");
    // Nothing left to promote.
    let (code, _, out) = mlops(dir, &["promote"]);
    assert_eq!(code, 3, "{out}");
    // The promotion has a release version, an annotated tag and notes.
    let (code, notes, out) = mlops(dir, &["notes"]);
    assert_eq!(code, 0, "{out}");
    let version = notes["release"]["version"].as_str().unwrap().to_owned();
    assert!(version.ends_with("+iris.2"), "{notes:#}");
    assert_eq!(notes["release"]["tag-status"], "created", "{notes:#}");
    let tag = notes["release"]["tag"].as_str().unwrap().to_owned();
    let repo = git2::Repository::open(dir).unwrap();
    let tagged = repo
        .revparse_single(&format!("refs/tags/{tag}"))
        .unwrap()
        .into_tag()
        .expect("an annotated tag");
    assert!(
        tagged
            .message()
            .ok()
            .flatten()
            .unwrap_or_default()
            .contains("iris:2"),
        "{:?}",
        tagged.message()
    );
    let text = notes["notes"].as_str().unwrap();
    assert!(text.contains(version.split('+').next().unwrap()), "{text}");
    assert!(text.contains("iris:2"), "{text}");
    let (code, _, out) = mlops(dir, &["notes", "9.9.9"]);
    assert_eq!(code, 3, "{out}");

    // Production rolled back to the version before it.
    let (code, _, out) = mlops(dir, &["rollback"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(production(dir), Some(1));
    let (code, _, served) = infer(&proxy);
    assert_eq!((code, &served), (200, &served_1));
    let declared: Vec<_> = instances(dir, "production", "iris")
        .into_iter()
        .filter(|i| i.owner.is_none())
        .collect();
    assert_eq!(declared.len(), 1, "{declared:?}");
    assert_eq!(declared[0].model_version.as_deref(), Some("iris:1"));
    let (code, history, out) = mlops(dir, &["history"]);
    assert_eq!(code, 0, "{out}");
    let events: Vec<(String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("promoted".to_owned(), "iris:1".to_owned()),
            ("promoted".to_owned(), "iris:2".to_owned()),
            ("rolled-back".to_owned(), "iris:1".to_owned()),
        ],
        "{history:#}"
    );
    // Rolling back to what is production is refused, as is an unknown
    // version.
    let (code, _, out) = mlops(dir, &["rollback", "1"]);
    assert_eq!(code, 3, "{out}");
    let (code, _, out) = mlops(dir, &["rollback", "99"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("no version 99"), "{out}");

    // iris:3 paused, then aborted: out of traffic, stopped, still staged.
    train(dir, &reordered_csv(dir, false));
    let run = mlops_testkit::run_manifest(dir, &pausing(), &registry);
    assert_eq!(step(&run, "canary").status, StepStatus::Failed);
    let (_, status, _) = mlops(dir, &["status"]);
    assert_eq!(status["phase"], "paused", "{status:#}");
    assert_eq!(status["release"]["candidate"], 3);
    let (code, _, out) = mlops(dir, &["abort"]);
    assert_eq!(code, 0, "{out}");
    let (_, status, _) = mlops(dir, &["status"]);
    assert_eq!(status["phase"], "aborted", "{status:#}");
    assert_eq!(status["candidates"], serde_json::json!([]), "{status:#}");
    assert_eq!(status["staging"]["id"], "iris:3", "{status:#}");
    assert_eq!(status["production"]["id"], "iris:1", "{status:#}");
    let weights: Vec<&str> = status["gateway"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(weights, ["stable"], "{status:#}");
    for _ in 0..5 {
        let (code, variant, served) = infer(&proxy);
        assert_eq!(
            (code, variant.as_str(), &served),
            (200, "stable", &served_1)
        );
    }
    drop(cleanup);
}
