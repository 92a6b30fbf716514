//! Run evidence from later stages: an embedding tool's steps record the
//! kinds the release, APM and load-test stages will record (`release`,
//! `slo`, `breaking-point`, `capacity`, `autoscale`); the report lists
//! them and proves those stages from them.

use mlops_core::{Executor, Pipeline, RunOptions, Stage, Step, StepFailure};

fn recording(name: &str, stage: Stage, kind: &'static str, body: serde_json::Value) -> Step {
    Step::task(name, stage, format!("{name}-v1"), move |ctx| {
        let body = body.clone();
        async move {
            ctx.record(kind, &body);
            Ok::<(), StepFailure>(())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_stages_evidence_is_read_and_proves_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let steps = vec![
        Step::shell("env", Stage::Iac, "true"),
        Step::shell("tests", Stage::Ci, "true"),
        Step::shell("deploy", Stage::Cd, "true"),
        recording(
            "canary",
            Stage::Release,
            "release",
            serde_json::json!({"strategy": "canary", "verdict": "promote"}),
        ),
        recording(
            "slo",
            Stage::Apm,
            "slo",
            serde_json::json!({"objective": "p99 < 250ms", "compliance": 0.998}),
        ),
        recording(
            "breaking",
            Stage::Loadtest,
            "breaking-point",
            serde_json::json!({"rps": 1840.0}),
        ),
        recording(
            "capacity",
            Stage::Loadtest,
            "capacity",
            serde_json::json!({"model": "usl", "sigma": 0.02, "kappa": 0.0004}),
        ),
        recording(
            "scale",
            Stage::Loadtest,
            "autoscale",
            serde_json::json!({"min": 1, "max": 4}),
        ),
    ];
    let pipeline = Pipeline::new("later", steps, None).unwrap();
    let executor = Executor::new(d).unwrap();
    let report = executor
        .run(&pipeline, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.status, mlops_core::RunStatus::Passed);

    let options = mlops_assess::Options {
        history: false,
        ..mlops_assess::Options::default()
    };
    let r = mlops_assess::assess(d, &options).unwrap();
    let runs = r.runs.as_ref().unwrap();
    assert_eq!(runs.release_verdicts.len(), 1);
    assert_eq!(runs.release_verdicts[0].body["verdict"], "promote");
    assert_eq!(runs.slo.as_ref().unwrap().body["compliance"], 0.998);
    assert_eq!(runs.breaking_point.as_ref().unwrap().body["rps"], 1840.0);
    assert_eq!(runs.capacity.as_ref().unwrap().body["model"], "usl");
    let signals: Vec<&str> = r.evidence.iter().map(|e| e.signal.name()).collect();
    for s in [
        "progressive-delivery",
        "metrics",
        "alerting",
        "load-test",
        "autoscaling",
    ] {
        assert!(signals.contains(&s), "{s} missing from {signals:?}");
    }
    // Stages 4-6 are proven by these runs; 1-3 ran only `true`, which
    // shows nothing, so the climb still stops at stage 1.
    let status: Vec<&str> = r.stages.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(status[3..], ["missing", "proven", "proven"], "{status:?}");
    assert_eq!(r.stage_level, 0);
}
