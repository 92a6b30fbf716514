//! The `canary` kind end to end with real processes on the local provider:
//! the `iris` example model server packaged and deployed to staging, then
//! released to `production` behind the gateway (the `mlops` binary's
//! `gateway-serve`), a first release judged by its SLOs, a second compared
//! with stable, both promoted; a candidate that answers errors is rolled
//! back.

mod common;

use common::*;
use mlops_core::Ledger;
use mlops_core::StepStatus;
use mlops_core::registry::ModelStage;
use std::path::Path;

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
    // No stable to share with: one round with all the traffic.
    assert_eq!(release["rounds"].as_array().map(Vec::len), Some(1));
    assert_eq!(release["rounds"][0]["weight"], 100);
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
    assert!(log1.contains("round 1: canary 100%"), "{log1}");
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

    // A forced rerun with nothing new in staging: production is the
    // newest version, so there is nothing to release and the step passes,
    // production still serving behind the gateway.
    let forced = mlops_testkit::run(
        dir,
        &registry,
        mlops_core::RunOptions {
            force: true,
            ..mlops_core::RunOptions::default()
        },
    )
    .unwrap();
    let canary = step(&forced, "canary");
    assert_eq!(canary.status, StepStatus::Passed, "{}", log(dir, canary));
    assert!(
        log(dir, canary).contains("nothing to release"),
        "{}",
        log(dir, canary)
    );
    // Its evidence says so: a pass with no rounds, production unchanged.
    let nothing = evidence(canary, mlops_release::evidence::RELEASE);
    assert_eq!(nothing["verdict"], "pass", "{nothing:#}");
    assert_eq!(nothing["candidate"], "iris:2", "{nothing:#}");
    assert_eq!(nothing["rounds"].as_array().map(Vec::len), Some(0));
    assert_eq!(production(&ledger), Some(2));
    let (status, variant, _) = infer(&proxy);
    assert_eq!((status, variant.as_str()), (200, "stable"));

    // 3. A candidate that misses the p99 latency SLO (a bound no server
    // meets): rolled back at the first step — in steps, as configured —
    // and stable keeps serving.
    train(dir, &reordered_csv(dir, false));
    let stepped = manifest_with(
        "min-sample-size = 8, max-error-rate = 0.01, alpha = 0.01, max-p99-latency-ms = 0.001",
        r#", rollback = { steps = [25, 10, 80], interval = "200ms" }"#,
    );
    std::fs::write(dir.join("mlops.toml"), &stepped).unwrap();
    let refused = mlops_core::Manifest::load(dir, &registry)
        .err()
        .map(|e| format!("{e} {e:?}"))
        .unwrap_or_default();
    assert!(
        refused.contains("rollback.steps"),
        "an increasing rollback is refused: {refused}"
    );
    let stepped = manifest_with(
        "min-sample-size = 8, max-error-rate = 0.01, alpha = 0.01, max-p99-latency-ms = 0.001",
        r#", rollback = { steps = [25, 10], interval = "200ms" }"#,
    );
    let run = mlops_testkit::run_manifest(dir, &stepped, &registry);
    let canary = step(&run, "canary");
    assert_eq!(canary.status, StepStatus::Failed, "{}", log(dir, canary));
    let reason = canary.reason.clone().unwrap_or_default();
    eprintln!("rollback:\n{}", log(dir, canary));
    assert!(
        reason.contains("rolled back") && reason.contains("latency-p99-slo"),
        "{reason}"
    );
    let stepped_log = log(dir, canary);
    let (at25, at10, back) = (
        stepped_log.find("rolling back in steps: 25%"),
        stepped_log.find("rolling back in steps: 10%"),
        stepped_log.find("every request back to stable"),
    );
    assert!(
        at25.is_some() && at25 < at10 && at10 < back,
        "{stepped_log}"
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

    // Run again: the rolled-back iris:3 is still the newest version. The
    // release does not pass (deploy stages iris:3 again and the canary
    // rolls it back again, or, with nothing staged, the canary says there
    // is nothing to release); production stays iris:2.
    let run =
        mlops_testkit::run_manifest(dir, &manifest(", max-p99-latency-ms = 0.001"), &registry);
    let canary = step(&run, "canary");
    assert_eq!(canary.status, StepStatus::Failed, "{}", log(dir, canary));
    assert_eq!(production(&ledger), Some(2));

    drop(cleanup);
    assert!(
        instances(dir, "production", "iris").is_empty()
            && instances(dir, "production", "iris-gateway").is_empty(),
        "destroy removed everything"
    );
}
