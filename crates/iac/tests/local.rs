//! The local provider against real processes: Python's `http.server` as
//! the service, the crate's `mlops-supervise` as the supervisor.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use mlops_core::Ledger;
use mlops_iac::apply::{self, ApplyContext, InfraError};
use mlops_iac::{Action, InfraSpec, LocalProvider, ProviderError, Scope, SupervisorCommand};

fn provider() -> LocalProvider {
    LocalProvider::new(SupervisorCommand {
        program: env!("CARGO_BIN_EXE_mlops-supervise").into(),
        args: Vec::new(),
    })
}

fn project(services: &str) -> (tempfile::TempDir, Scope) {
    let dir = tempfile::tempdir().unwrap();
    write_manifest(dir.path(), services);
    let scope = Scope {
        project: "web".into(),
        environment: "dev".into(),
        root: dir.path().to_path_buf(),
    };
    (dir, scope)
}

fn write_manifest(root: &Path, services: &str) {
    std::fs::write(
        root.join("mlops.toml"),
        format!(
            "[project]\nname = \"web\"\n\n[iac.steps.noop]\nrun = \"true\"\n\n[infra]\nprovider = \"local\"\n\n{services}"
        ),
    )
    .unwrap();
}

const WEB: &str = r#"
[infra.services.web]
command = ["python3", "-m", "http.server", "{port}", "--bind", "{host}"]
replicas = 2
health = { path = "/", interval = "200ms", timeout = "1s", deadline = "20s" }
stop-grace = "2s"
"#;

async fn converge(scope: &Scope, ledger: &Ledger) -> Result<apply::ApplyReport, InfraError> {
    let spec = InfraSpec::load(&scope.root).unwrap();
    let p = provider();
    let desired = apply::desired_state(&spec, scope, ledger, &p, &BTreeMap::new()).await?;
    apply::apply(
        &p,
        scope,
        ledger,
        &desired,
        None,
        &ApplyContext {
            actor: "test".into(),
            step: None,
            on_ready: None,
        },
    )
    .await
}

async fn plan(scope: &Scope, ledger: &Ledger) -> mlops_iac::Plan {
    let spec = InfraSpec::load(&scope.root).unwrap();
    let p = provider();
    let desired = apply::desired_state(&spec, scope, ledger, &p, &BTreeMap::new())
        .await
        .unwrap();
    apply::plan_env(&p, scope, ledger, &desired, None)
        .await
        .unwrap()
        .0
}

async fn get(endpoint: &str) -> bool {
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    mlops_iac::health::check(port, "/", Duration::from_secs(1))
        .await
        .is_ok()
}

async fn destroy(scope: &Scope, ledger: &Ledger) {
    apply::destroy(&provider(), scope, ledger, None, &ApplyContext::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_converges_then_plan_is_empty_and_drift_is_repaired() {
    let (_dir, scope) = project(WEB);
    let ledger = Ledger::open(&scope.root).unwrap();

    let first = plan(&scope, &ledger).await;
    assert!(
        matches!(
            first.actions.as_slice(),
            [Action::Create { replicas: 2, .. }]
        ),
        "{first:?}"
    );

    let report = converge(&scope, &ledger).await.unwrap();
    assert_eq!(report.instances.len(), 1);
    let endpoints = report.instances[0].endpoints();
    assert_eq!(endpoints.len(), 2);
    for e in &endpoints {
        assert!(get(e).await, "{e} answers");
    }
    assert!(
        plan(&scope, &ledger).await.is_empty(),
        "a plan right after apply is empty"
    );

    // A replica killed behind our back is restarted by its supervisor.
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            scope
                .root
                .join(".mlops/infra/local/dev/web")
                .join(&report.instances[0].id)
                .join("status.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let pid = status["replicas"][0]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = provider();
        let instances = mlops_iac::Provider::observe(&p, &scope).await.unwrap();
        let replica = &instances[0].replicas[0];
        if replica.restarts == 1 && instances[0].is_healthy() {
            assert!(
                replica.last_exit.as_deref().unwrap().contains("signal 9"),
                "{replica:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica not restarted: {instances:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The supervisor killed behind our back is drift; apply repairs it.
    let pid: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            scope
                .root
                .join(".mlops/infra/local/dev/web")
                .join(&report.instances[0].id)
                .join("supervisor.pid"),
        )
        .unwrap(),
    )
    .unwrap();
    let sup = pid["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let drift = plan(&scope, &ledger).await;
    match drift.actions.as_slice() {
        [Action::Repair { drift, .. }] => {
            assert!(drift.iter().any(|d| d.contains("supervisor")), "{drift:?}")
        }
        other => panic!("expected a repair, got {other:?}"),
    }
    let repaired = converge(&scope, &ledger).await.unwrap();
    assert!(repaired.instances[0].is_healthy());
    assert!(plan(&scope, &ledger).await.is_empty());
    // The orphaned replicas of the dead supervisor were stopped.
    for e in &endpoints {
        if !repaired.instances[0].endpoints().contains(e) {
            assert!(!get(e).await, "old replica {e} still answers");
        }
    }

    // Scale through the manifest.
    write_manifest(&scope.root, &WEB.replace("replicas = 2", "replicas = 3"));
    let scale = plan(&scope, &ledger).await;
    assert!(
        matches!(
            scale.actions.as_slice(),
            [Action::Scale { from: 2, to: 3, .. }]
        ),
        "{scale:?}"
    );
    let scaled = converge(&scope, &ledger).await.unwrap();
    assert_eq!(scaled.instances[0].endpoints().len(), 3);
    write_manifest(&scope.root, WEB);
    let down = converge(&scope, &ledger).await.unwrap();
    assert_eq!(down.instances[0].endpoints().len(), 2);
    assert_eq!(
        down.instances[0].id, scaled.instances[0].id,
        "scaling keeps the instance"
    );

    // A changed definition replaces the instance, new before old.
    write_manifest(
        &scope.root,
        &WEB.replace("stop-grace = \"2s\"", "stop-grace = \"3s\""),
    );
    let replace = plan(&scope, &ledger).await;
    match replace.actions.as_slice() {
        [Action::Replace { why, .. }] => {
            assert!(why.iter().any(|w| w.contains("stop-grace")), "{why:?}")
        }
        other => panic!("expected a replace, got {other:?}"),
    }
    let replaced = converge(&scope, &ledger).await.unwrap();
    assert_ne!(replaced.instances[0].id, down.instances[0].id);
    assert_eq!(replaced.instances.len(), 1);

    destroy(&scope, &ledger).await;
    assert!(
        plan(&scope, &ledger).await.actions.len() == 1,
        "after destroy, a create is planned again"
    );
    assert!(ledger.infra_services("dev", "local").unwrap().is_empty());
    let applies = ledger.infra_applies(Some("dev"), 100).unwrap();
    assert!(applies.iter().all(|a| a.status == "applied"), "{applies:?}");
    assert!(!scope.root.join(".mlops/infra/local/dev/web").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_gets_healthy_fails_with_its_log_and_leaves_nothing() {
    let (_dir, scope) = project(
        &WEB.replace("path = \"/\"", "path = \"/no-such-page\"")
            .replace("deadline = \"20s\"", "deadline = \"2s\""),
    );
    let ledger = Ledger::open(&scope.root).unwrap();
    let err = converge(&scope, &ledger).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, InfraError::Provider(ProviderError::Unhealthy { .. })),
        "{text}"
    );
    assert!(text.contains("status 404"), "{text}");
    assert!(
        text.contains("GET /no-such-page"),
        "the log tail is shown: {text}"
    );
    assert!(
        mlops_iac::Provider::observe(&provider(), &scope)
            .await
            .unwrap()
            .is_empty()
    );
    let applies = ledger.infra_applies(Some("dev"), 10).unwrap();
    assert_eq!(applies[0].status, "failed");
    assert!(applies[0].error.as_deref().unwrap().contains("not healthy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_and_a_missing_program_are_clear_errors() {
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let (_dir, scope) =
        project(&WEB.replace("replicas = 2", &format!("replicas = 1\nhost-port = {port}")));
    let ledger = Ledger::open(&scope.root).unwrap();
    let err = converge(&scope, &ledger).await.unwrap_err();
    assert!(
        matches!(err, InfraError::Provider(ProviderError::PortTaken { port: p, .. }) if p == port),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("port {port} on 127.0.0.1 is already in use"))
    );

    write_manifest(
        &scope.root,
        &WEB.replace("\"python3\"", "\"bin/missing-server\""),
    );
    let err = converge(&scope, &ledger).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("bin/missing-server does not exist"),
        "{err}"
    );
    assert!(
        mlops_iac::Provider::observe(&provider(), &scope)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_service_and_nothing_else() {
    let secret = format!("s3cr3t-{}", std::process::id());
    // SAFETY-free: tests in this binary do not read this variable elsewhere.
    let var = format!("MLOPS_TEST_SECRET_{}", std::process::id());
    let services = format!(
        r#"
[infra.services.web]
command = ["python3", "-c", "import os, http.server, socketserver; open('seen.txt', 'w').write(os.environ['TOKEN']); http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=int(os.environ['PORT']), bind='127.0.0.1')"]
health = {{ path = "/", interval = "200ms", deadline = "20s" }}
env = {{ TOKEN = {{ from-env = "{var}", secret = true }} }}
stop-grace = "2s"
"#
    );
    let (_dir, scope) = project(&services);
    let ledger = Ledger::open(&scope.root).unwrap();
    // Without the variable: a clear error before anything starts.
    let err = converge(&scope, &ledger).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!("the secret `{var}`")),
        "{err}"
    );

    let spec = InfraSpec::load(&scope.root).unwrap();
    let p = provider();
    let desired_with = |value: &str| -> Vec<_> {
        let env = BTreeMap::from([(var.clone(), value.to_owned())]);
        spec.services
            .values()
            .map(|s| {
                mlops_iac::plan::desired(s, None, &scope.root, |v| env.get(v).cloned()).unwrap()
            })
            .collect()
    };
    let apply_with = |value: String| {
        let (p, scope, ledger) = (&p, &scope, &ledger);
        let desired = desired_with(&value);
        async move {
            apply::apply(p, scope, ledger, &desired, None, &ApplyContext::default())
                .await
                .unwrap()
        }
    };
    apply_with(secret.clone()).await;
    assert_eq!(
        std::fs::read_to_string(scope.root.join("seen.txt")).unwrap(),
        secret
    );
    let planned = |desired: Vec<mlops_iac::Desired>| {
        let (p, scope, ledger) = (&p, &scope, &ledger);
        async move {
            apply::plan_env(p, scope, ledger, &desired, None)
                .await
                .unwrap()
                .0
        }
    };
    assert!(planned(desired_with(&secret)).await.is_empty());

    // Rotating the secret is a new revision: the plan names the variable
    // (never the value) and the apply rolls the service onto the new one.
    let rotated = format!("{secret}-rotated");
    let plan = planned(desired_with(&rotated)).await;
    assert!(
        matches!(
            &plan.actions[..],
            [Action::Replace { why, .. }]
                if why == &[format!("the value of `{var}` in the environment changed")]
        ),
        "{:?}",
        plan.actions
    );
    apply_with(rotated.clone()).await;
    assert_eq!(
        std::fs::read_to_string(scope.root.join("seen.txt")).unwrap(),
        rotated
    );
    assert!(planned(desired_with(&rotated)).await.is_empty());
    // The values' digests are keyed by a random key only the owner reads.
    let key = scope.root.join(mlops_iac::plan::REVISION_KEY);
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.len(), 32);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );

    // Neither value is anywhere in the state directory (instance files,
    // logs, the ledger).
    for entry in walk(&scope.root.join(".mlops")) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&secret),
            "the secret leaked into {}",
            entry.display()
        );
    }
    apply::destroy(&p, &scope, &ledger, None, &ApplyContext::default())
        .await
        .unwrap();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Controllers own what they change: a canary the "release" controller
/// starts and a replica count the "autoscaler" moves within the declared
/// range survive `apply`, and the plan shows them as owned, not as changes;
/// a count outside the range is brought back into it; `destroy` removes
/// everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_controllers_own_survives_apply_and_destroy_removes_it() {
    use mlops_iac::{Controller, Owned};

    let ranged = WEB.replace("replicas = 2", "replicas = { min = 1, max = 3 }");
    let (_dir, scope) = project(&ranged);
    let ledger = Ledger::open(&scope.root).unwrap();
    let first = plan(&scope, &ledger).await;
    assert!(
        matches!(
            first.actions.as_slice(),
            [Action::Create { replicas: 1, .. }]
        ),
        "a range starts at its min: {first:?}"
    );
    let applied = converge(&scope, &ledger).await.unwrap();
    let stable = applied.instances[0].clone();
    assert_eq!(stable.desired_replicas, 1);
    assert_eq!(stable.owner, None);

    // The hand-made controllers.
    let p = provider();
    let spec = InfraSpec::load(&scope.root).unwrap();
    let autoscaler = Controller::new("autoscaler", &p, &scope, &ledger).unwrap();
    let release = Controller::new("release", &p, &scope, &ledger).unwrap();
    let scaled = autoscaler.scale(&spec, &stable.id, 2).await.unwrap();
    assert_eq!(scaled.endpoints().len(), 2);
    let canary = release.start(&spec, "web", None, 1).await.unwrap();
    assert_eq!(canary.owner.as_deref(), Some("release"));
    assert!(get(&canary.endpoints()[0]).await, "the canary answers");

    // What a controller may not do.
    for (result, expect) in [
        (
            autoscaler.scale(&spec, &stable.id, 4).await.map(|_| ()),
            "`web` declares 1 to 3 replicas, not 4",
        ),
        (
            release.scale(&spec, &stable.id, 3).await.map(|_| ()),
            "the replica count of `web` is owned by `autoscaler`",
        ),
        (autoscaler.stop(&canary.id).await, "is owned by `release`"),
        (
            release.stop(&stable.id).await,
            "is the one `infra apply` runs",
        ),
    ] {
        let err = result.unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
    }

    // The plan shows what the controllers own and changes nothing.
    let owned = plan(&scope, &ledger).await;
    assert!(owned.is_empty(), "{owned:?}");
    assert_eq!(owned.owned.len(), 2, "{owned:?}");
    assert!(owned.owned.iter().any(|o| matches!(
        o,
        Owned::Instance { instance, owner, .. } if instance == &canary.id && owner == "release"
    )));
    assert!(owned.owned.iter().any(|o| matches!(
        o,
        Owned::Replicas { instance, owner, replicas: 2, min: 1, max: 3, .. }
            if instance == &stable.id && owner == "autoscaler"
    )));
    let lines: Vec<String> = owned.owned.iter().map(ToString::to_string).collect();
    assert!(
        lines.contains(&format!(
            "= web/{} replicas owned by autoscaler (2, within 1..=3)",
            stable.id
        )),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("= web/{} owned by release (", canary.id))),
        "{lines:?}"
    );
    let again = converge(&scope, &ledger).await.unwrap();
    assert!(again.actions.is_empty(), "{:?}", again.actions);
    assert_eq!(again.instances.len(), 2);
    assert_eq!(
        again.instances[0].id, stable.id,
        "the managed instance comes first"
    );
    assert_eq!(again.instances[0].desired_replicas, 2);
    assert!(
        get(&canary.endpoints()[0]).await,
        "the canary still answers"
    );

    // Outside the range (the manifest moved it): back to the nearest bound,
    // in place; the canary stays.
    write_manifest(
        &scope.root,
        &WEB.replace("replicas = 2", "replicas = { min = 3, max = 4 }"),
    );
    let outside = plan(&scope, &ledger).await;
    assert!(
        matches!(
            outside.actions.as_slice(),
            [Action::Scale { from: 2, to: 3, .. }]
        ),
        "{outside:?}"
    );
    let back = converge(&scope, &ledger).await.unwrap();
    assert_eq!(back.instances[0].id, stable.id);
    assert_eq!(back.instances[0].endpoints().len(), 3);
    assert_eq!(release.owned().await.unwrap().len(), 1);

    // A fixed count is apply's again: the autoscaler may not move it.
    write_manifest(&scope.root, &WEB.replace("replicas = 2", "replicas = 3"));
    let spec = InfraSpec::load(&scope.root).unwrap();
    let err = autoscaler
        .scale(&spec, &stable.id, 2)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("fixed replica count (3)"), "{err}");
    assert!(plan(&scope, &ledger).await.is_empty());

    // Every controller change is in the ledger, under its name.
    let applies = ledger.infra_applies(Some("dev"), 100).unwrap();
    assert!(
        applies
            .iter()
            .any(|a| a.actor == "controller release" && a.status == "applied"),
        "{applies:?}"
    );
    assert_eq!(
        applies
            .iter()
            .filter(|a| a.actor.starts_with("controller "))
            .count(),
        2,
        "one scale, one start; a refusal changes nothing and is not an apply: {applies:?}"
    );

    destroy(&scope, &ledger).await;
    assert!(
        mlops_iac::Provider::observe(&p, &scope)
            .await
            .unwrap()
            .is_empty(),
        "destroy removes what controllers own too"
    );
    assert!(!get(&canary.endpoints()[0]).await);
}

/// `replicas` ranges are checked with the manifest, each error with its
/// place.
#[test]
fn replica_ranges_are_validated() {
    for (replicas, expect) in [
        (
            "{ min = 0, max = 2 }",
            "`infra.services.web.replicas.min` must be between 1 and 64, found 0",
        ),
        (
            "{ min = 3, max = 2 }",
            "`infra.services.web.replicas.max` (2) is less than `infra.services.web.replicas.min` (3)",
        ),
        (
            "{ min = 1, max = 65 }",
            "`infra.services.web.replicas.max` must be between 1 and 64, found 65",
        ),
        (
            "{ min = 1, max = 2, owner = \"Auto\" }",
            "invalid controller name `Auto`",
        ),
        ("{ min = 1, maximum = 2 }", "unknown field `maximum`"),
        (
            "{ min = 1, max = 2 }\nhost-port = 18080",
            "`infra.services.web.host-port` pins one port, but the service has up to 2 replicas",
        ),
    ] {
        let (_dir, scope) =
            project(&WEB.replace("replicas = 2", &format!("replicas = {replicas}")));
        let err = format!("{:#}", InfraSpec::load(&scope.root).unwrap_err());
        assert!(err.contains(expect), "{replicas}: {err}");
        assert!(err.contains("mlops.toml:"), "with its place: {err}");
    }
    let (_dir, scope) = project(&WEB.replace(
        "replicas = 2",
        "replicas = { min = 2, max = 2, owner = \"hpa\" }",
    ));
    let spec = InfraSpec::load(&scope.root).unwrap();
    let web = &spec.services["web"];
    assert_eq!(
        (web.replicas, web.replica_bounds(), web.replicas_owner()),
        (2, (2, 2), Some("hpa"))
    );
}
