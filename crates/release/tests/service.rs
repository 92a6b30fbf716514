//! The gateway as a service of the release environment, with real
//! processes: the `mlops` binary (`target/debug/mlops`, beside this test's
//! directory) is the local provider's supervisor and the gateway process;
//! Python's `http.server` is the declared service it fronts; a canary
//! upstream runs in the test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mlops_core::LedgerHandle;
use mlops_iac::{
    InfraError, InfraSpec, Instance, LocalProvider, Provider, Scope, SupervisorCommand,
};
use mlops_release::gateway::Config;
use mlops_release::service::{GatewayProgram, GatewayService, ServiceError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `target/debug/mlops`: this test runs it, so it must be built (and
/// current).
fn mlops() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory")
        .join("mlops");
    assert!(
        path.is_file(),
        "{} is missing: this test runs the `mlops` binary; build it first with `cargo build -p mlops-cli`",
        path.display()
    );
    path
}

fn provider() -> LocalProvider {
    LocalProvider::new(SupervisorCommand {
        program: mlops(),
        args: vec!["infra".into(), "supervise".into()],
    })
}

const WEB: &str = r#"
[infra.services.web]
command = ["python3", "-m", "http.server", "{port}", "--bind", "{host}"]
replicas = 2
health = { path = "/", interval = "200ms", timeout = "1s", deadline = "20s" }
stop-grace = "2s"
"#;

fn project(services: &str) -> (tempfile::TempDir, Scope) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mlops.toml"),
        format!(
            "[project]\nname = \"shop\"\n\n[iac.steps.noop]\nrun = \"true\"\n\n[infra]\nprovider = \"local\"\n{services}"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("who.txt"), "stable\n").unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let scope = Scope {
        project: "shop".into(),
        environment: "dev".into(),
        root,
    };
    (dir, scope)
}

/// Runs `mlops ARGS...` and returns its stdout; fails on a non-zero exit.
fn cli(args: &[&str]) -> String {
    let out = Command::new(mlops()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "mlops {args:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// An upstream answering every request with `name`.
async fn upstream(name: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                        "{name}\n"
                    )))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

async fn gateway_instance(scope: &Scope) -> Option<Instance> {
    provider()
        .observe(scope)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.service == "web-gateway")
}

fn pid(instance: &Instance) -> i32 {
    instance.replicas[0]
        .handle
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {instance:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_a_supervised_owned_service_that_keeps_its_config() {
    let (_dir, scope) = project(WEB);
    let root = scope.root.to_str().unwrap().to_owned();
    cli(&["infra", "apply", &root]);
    let infra = InfraSpec::load(&scope.root).unwrap();
    let p = provider();
    let ledger = LedgerHandle::for_project(&scope.root);
    let service = GatewayService::new(&scope, &p, &ledger, "web", GatewayProgram::mlops(mlops()));

    // ensure starts it, in front of the stable instance.
    let client = service.ensure(&infra).await.unwrap();
    let (status, body) = http(client.proxy_addr(), "GET", "/who.txt", "", "").await;
    assert_eq!((status, body.as_str()), (200, "stable\n"));
    let first = client.config().await.unwrap();
    assert_eq!(first.variants.len(), 1);
    assert_eq!(first.variants[0].replicas.len(), 2, "{first:?}");

    // ensure again: the same instance, not a second one.
    let again = service.ensure(&infra).await.unwrap();
    assert_eq!(again.instance(), client.instance());
    assert_eq!(again.proxy_addr(), client.proxy_addr());

    // The client changes the weights: everything to a canary.
    let canary = upstream("canary").await;
    let mut config = first.clone();
    config.variants[0].weight = 0;
    config.variants.push(mlops_release::gateway::Variant {
        name: "canary".into(),
        weight: 100,
        replicas: vec![canary.clone()],
        version: None,
    });
    let applied = client.set_config(&config).await.unwrap();
    assert_eq!(applied, config);
    for _ in 0..20 {
        let (status, body) = http(client.proxy_addr(), "GET", "/who.txt", "", "").await;
        assert_eq!((status, body.as_str()), (200, "canary\n"));
    }
    let snapshot = client.snapshot().await.unwrap();
    let canary_ok = snapshot["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "canary")
        .map(|v| v["meter"]["requests"]["success"].as_u64().unwrap());
    assert_eq!(canary_ok, Some(20), "{snapshot:#}");
    let on_disk: Config =
        serde_json::from_slice(&std::fs::read(service.state_dir().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk, config, "PUT /config persists before it answers");

    // kill -9: the supervisor restarts it and it comes back with that config.
    let before = gateway_instance(&scope).await.unwrap();
    let old_pid = pid(&before);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        if let Some(i) = gateway_instance(&scope).await
            && i.is_healthy()
            && pid(&i) != old_pid
        {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not come back after kill -9"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after.id, before.id, "the same instance, restarted");
    assert!(after.replicas[0].restarts >= 1);
    assert_eq!(
        client.config().await.unwrap(),
        config,
        "the persisted config"
    );
    let (status, body) = http(client.proxy_addr(), "GET", "/who.txt", "", "").await;
    assert_eq!((status, body.as_str()), (200, "canary\n"));

    // `infra status` shows it, owned by the release controller.
    let status_json: serde_json::Value =
        serde_json::from_str(&cli(&["infra", "status", &root, "--json"])).unwrap();
    let shown = status_json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["service"] == "web-gateway")
        .unwrap_or_else(|| panic!("no gateway in {status_json:#}"));
    assert_eq!(shown["owner"], "release");
    assert!(cli(&["infra", "status", &root]).contains("web-gateway (healthy): instance"));

    // `infra plan` lists it as owned, `infra apply` leaves it alone.
    let plan = cli(&["infra", "plan", &root]);
    assert!(plan.contains("no changes"), "{plan}");
    assert!(plan.contains("owned by release"), "{plan}");
    cli(&["infra", "apply", &root]);
    let untouched = gateway_instance(&scope).await.unwrap();
    assert_eq!(
        (untouched.id.as_str(), pid(&untouched)),
        (after.id.as_str(), pid(&after))
    );

    // Without the token, nothing changes.
    let admin: SocketAddr = client
        .admin_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let body = serde_json::to_string(&first).unwrap();
    let (status, _) = http(admin, "PUT", "/config", "", &body).await;
    assert_eq!(status, 401);
    let wrong = format!("Authorization: Bearer {}\r\n", "0".repeat(64));
    let (status, _) = http(admin, "PUT", "/config", &wrong, &body).await;
    assert_eq!(status, 401);
    assert_eq!(client.config().await.unwrap(), config);
    let (status, _) = http(admin, "GET", "/health", "", "").await;
    assert_eq!(status, 200);

    // Its log: one JSON object per line, never the token.
    let token = std::fs::read_to_string(service.state_dir().join("admin.token")).unwrap();
    let log_path = scope
        .root
        .join(".mlops/infra/local/dev/web-gateway")
        .join(&after.id)
        .join("replica-0.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let events: Vec<String> = log
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in {log}"));
            v["event"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        events.iter().filter(|e| *e == "started").count(),
        2,
        "{log}"
    );
    assert!(events.contains(&"config-applied".to_owned()), "{log}");
    assert_eq!(
        events.iter().filter(|e| *e == "admin-unauthorized").count(),
        2,
        "{log}"
    );
    assert!(!log.contains(token.trim()), "the token is never logged");

    // `infra destroy` removes it; nothing listens on its address any more.
    cli(&["infra", "destroy", &root]);
    assert!(gateway_instance(&scope).await.is_none());
    assert!(
        tokio::net::TcpStream::connect(client.proxy_addr())
            .await
            .is_err()
    );
    assert!(
        !Path::new(&format!("/proc/{}", pid(&after))).exists() || {
            // A zombie until its parent (the gone supervisor's init) reaps it.
            std::fs::read_to_string(format!("/proc/{}/stat", pid(&after)))
                .is_ok_and(|s| s.contains(") Z"))
        }
    );
}

#[tokio::test]
async fn ensure_refuses_what_it_cannot_front() {
    let (_dir, scope) = project(&format!(
        "{WEB}\n[infra.services.web-gateway]\ncommand = [\"true\"]\nhealth = {{ path = \"/\" }}\n"
    ));
    let infra = InfraSpec::load(&scope.root).unwrap();
    let p = provider();
    let ledger = LedgerHandle::for_project(&scope.root);
    let program = GatewayProgram::mlops(mlops());

    let unknown = GatewayService::new(&scope, &p, &ledger, "api", program.clone());
    let e = unknown.ensure(&infra).await.unwrap_err();
    assert!(
        matches!(e, ServiceError::UnknownService(ref s) if s == "api"),
        "{e}"
    );

    let clash = GatewayService::new(&scope, &p, &ledger, "web", program.clone());
    let e = clash.ensure(&infra).await.unwrap_err();
    assert!(
        matches!(e, ServiceError::Infra(InfraError::Refused { .. }))
            && e.to_string()
                .contains("`web-gateway` is a service declared"),
        "{e}"
    );

    // Nothing runs to route to: said, and nothing started.
    let (_dir, scope) = project(WEB);
    let infra = InfraSpec::load(&scope.root).unwrap();
    let ledger = LedgerHandle::for_project(&scope.root);
    let e = GatewayService::new(&scope, &p, &ledger, "web", program)
        .ensure(&infra)
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::NothingToRoute { .. }), "{e}");
    assert!(p.observe(&scope).await.unwrap().is_empty());
}

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stopping (SIGTERM in the process) lets a request in flight finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_finishes_what_is_in_flight() {
    use mlops_release::service::{EventLog, ServeOptions, serve, write_config};
    // An upstream that takes 400 ms.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("slow\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let state = tempfile::tempdir().unwrap();
    write_config(state.path(), &Config::single([format!("http://{slow}")])).unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let options = ServeOptions {
        state: state.path().to_owned(),
        listen: free(),
        admin_port: free().port(),
    };
    let sink = Sink::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn({
        let options = options.clone();
        let log = EventLog::new(sink.clone());
        async move {
            serve(&options, log, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(options.listen)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the gateway did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let request = tokio::spawn(http(options.listen, "GET", "/", "", ""));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    gateway.await.unwrap().unwrap();
    assert_eq!(request.await.unwrap(), (200, "slow\n".to_owned()));
    let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "stopped", "{log}");
    assert_eq!(last["in_flight_left"], 0, "{log}");
    assert!(
        tokio::net::TcpStream::connect(options.listen)
            .await
            .is_err()
    );
}

// ---- the Docker provider ------------------------------------------------------

/// `target/debug/iris`, beside `mlops`: the replicas the Docker gateway
/// fronts.
fn iris() -> PathBuf {
    let path = mlops().with_file_name("iris");
    assert!(
        path.is_file(),
        "{} is missing: this test runs the `iris` model server in containers; build it first with `cargo build -p iris`",
        path.display()
    );
    path
}

/// The local engine. Panics, saying how to get one, when none answers: a
/// test that needs Docker must not pass without it.
async fn docker() -> mlops_iac::DockerProvider {
    mlops_iac::DockerProvider::connect().await.unwrap_or_else(|e| {
        panic!(
            "{e}\nthis test needs the Docker engine: install it (apt-get install docker.io) and start \
             dockerd (`scripts/test` starts it when it can), or point DOCKER_HOST at its socket"
        )
    })
}

/// `docker ARGS...`: its stdout, trimmed; fails on a non-zero exit.
fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `docker` ({e}): install it (apt-get install docker.io)")
        });
    assert!(
        out.status.success(),
        "docker {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes whatever a failed test left in the engine: `infra destroy`
/// first, then anything still labelled with the project.
struct Leftovers {
    root: String,
    project: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let _ = Command::new(mlops())
            .args(["infra", "destroy", &self.root])
            .output();
        let label = format!("label=mlops.project={}", self.project);
        for (list, remove) in [
            (vec!["ps", "-aq", "--filter", &label], vec!["rm", "-f"]),
            (vec!["images", "-q", "--filter", &label], vec!["rmi", "-f"]),
            (
                vec!["network", "ls", "-q", "--filter", &label],
                vec!["network", "rm"],
            ),
        ] {
            let Ok(out) = Command::new("docker").args(&list).output() else {
                return;
            };
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(&remove).arg(id).output();
            }
        }
    }
}

/// Two `iris` replicas in containers (`target/debug/iris` in a `FROM
/// scratch` image) on the Docker provider, with a trained model.
fn docker_project() -> (tempfile::TempDir, Scope, Leftovers) {
    let project = format!("gw{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::os::unix::fs::symlink(iris(), root.join("bin/iris")).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/iris/data/iris.csv");
    let trained = Command::new(iris())
        .arg("train")
        .arg("--data")
        .arg(data)
        .arg("--model")
        .arg(root.join("model/model.json"))
        .arg("--metrics")
        .arg(root.join("model/metrics.json"))
        .output()
        .unwrap();
    assert!(trained.status.success(), "iris train: {trained:?}");
    std::fs::write(
        root.join("mlops.toml"),
        format!(
            r#"[project]
name = "{project}"

[iac.steps.noop]
run = "true"

[infra]
provider = "docker"

[infra.services.iris]
command = ["bin/iris", "serve", "--model", "{{model-dir}}/model.json", "--host", "{{host}}", "--port", "{{port}}"]
replicas = 2
restart = "always"
model-dir = "model"
build = {{ binary = "bin/iris" }}
health = {{ path = "/v2/health/ready", interval = "200ms", timeout = "2s", deadline = "30s" }}
stop-grace = "2s"
"#
        ),
    )
    .unwrap();
    let scope = Scope {
        project: project.clone(),
        environment: "dev".into(),
        root: root.clone(),
    };
    let guard = Leftovers {
        root: root.to_string_lossy().into_owned(),
        project,
    };
    (dir, scope, guard)
}

async fn docker_gateway(provider: &mlops_iac::DockerProvider, scope: &Scope) -> Option<Instance> {
    provider
        .observe(scope)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.service == "iris-gateway")
}

/// The container of the gateway's one replica.
fn container_of(scope: &Scope, instance: &Instance) -> String {
    docker_cli(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=mlops.project={}", scope.project),
        "--filter",
        &format!("label=mlops.instance={}", instance.id),
    ])
}

const INFER: &str =
    r#"{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_on_docker_in_front_of_containers() {
    use std::os::unix::fs::PermissionsExt as _;
    let p = docker().await;
    let (_dir, scope, _guard) = docker_project();
    let root = scope.root.to_str().unwrap().to_owned();
    cli(&["infra", "apply", &root]);
    let infra = InfraSpec::load(&scope.root).unwrap();
    let ledger = LedgerHandle::for_project(&scope.root);
    let service = GatewayService::new(&scope, &p, &ledger, "iris", GatewayProgram::mlops(mlops()));

    // ensure starts it in a container, in front of both iris containers.
    let client = service.ensure(&infra).await.unwrap();
    assert!(client.proxy_addr().ip().is_loopback());
    assert!(client.admin_url().starts_with("http://127.0.0.1:"));
    let first = client.config().await.unwrap();
    assert_eq!(first.variants.len(), 1);
    assert_eq!(first.variants[0].replicas.len(), 2, "{first:?}");
    for _ in 0..10 {
        let (status, body) = http(
            client.proxy_addr(),
            "POST",
            "/v2/models/iris/infer",
            "",
            INFER,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"outputs\""), "{body}");
    }
    let snapshot = client.snapshot().await.unwrap();
    let answered: Vec<u64> = snapshot["variants"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["meter"]["requests"]["success"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        answered.len() == 2 && answered.iter().all(|n| *n > 0),
        "both replicas answer: {snapshot:#}"
    );

    // What runs: a container in the host's network, as the state
    // directory's owner, the state bind-mounted read-write; the token stays
    // the owner's alone.
    let gateway = docker_gateway(&p, &scope).await.unwrap();
    assert_eq!(gateway.owner.as_deref(), Some("release"));
    assert_eq!(gateway.id, client.instance());
    let container = container_of(&scope, &gateway);
    let dir = service.state_dir();
    let inspected: serde_json::Value =
        serde_json::from_str(&docker_cli(&["inspect", &container])).unwrap();
    let inspected = &inspected[0];
    assert_eq!(inspected["HostConfig"]["NetworkMode"], "host");
    assert_eq!(inspected["HostConfig"]["RestartPolicy"]["Name"], "always");
    assert_eq!(
        inspected["HostConfig"]["CapDrop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(inspected["HostConfig"]["ReadonlyRootfs"], true);
    let state_mount = inspected["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == dir.to_str().unwrap())
        .unwrap_or_else(|| panic!("no state mount in {inspected:#}"));
    assert_eq!(state_mount["RW"], true);
    {
        use std::os::unix::fs::MetadataExt as _;
        let owner = std::fs::metadata(&dir).unwrap();
        assert_eq!(
            inspected["Config"]["User"],
            format!("{}:{}", owner.uid(), owner.gid())
        );
    }
    let token_mode = std::fs::metadata(dir.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(token_mode & 0o777, 0o600);

    // ensure again: the same instance.
    let again = service.ensure(&infra).await.unwrap();
    assert_eq!(again.instance(), client.instance());
    assert_eq!(again.proxy_addr(), client.proxy_addr());

    // Without the token, nothing changes.
    let admin: SocketAddr = client
        .admin_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let body = serde_json::to_string(&first).unwrap();
    let (status, _) = http(admin, "PUT", "/config", "", &body).await;
    assert_eq!(status, 401);
    let wrong = format!("Authorization: Bearer {}\r\n", "0".repeat(64));
    let (status, _) = http(admin, "PUT", "/config", &wrong, &body).await;
    assert_eq!(status, 401);
    assert_eq!(client.config().await.unwrap(), first);

    // A config change: everything to an upstream on the host's loopback.
    let canary = upstream("canary").await;
    let mut config = first.clone();
    config.variants[0].weight = 0;
    config.variants.push(mlops_release::gateway::Variant {
        name: "canary".into(),
        weight: 100,
        replicas: vec![canary.clone()],
        version: None,
    });
    assert_eq!(client.set_config(&config).await.unwrap(), config);
    for _ in 0..10 {
        let (status, body) = http(client.proxy_addr(), "GET", "/", "", "").await;
        assert_eq!((status, body.as_str()), (200, "canary\n"));
    }
    let on_disk: Config =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(on_disk, config, "PUT /config persists before it answers");

    // kill -9 of the container's process: Docker's restart policy brings
    // the same container back, with that config.
    let pid: i32 = docker_cli(&["inspect", "-f", "{{.State.Pid}}", &container])
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let restarted = loop {
        if let Some(i) = docker_gateway(&p, &scope).await
            && i.is_healthy()
            && i.replicas[0].restarts >= 1
        {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not come back after kill -9"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(restarted.id, gateway.id, "the same instance, restarted");
    assert_eq!(client.config().await.unwrap(), config);
    let (status, body) = http(client.proxy_addr(), "GET", "/", "", "").await;
    assert_eq!((status, body.as_str()), (200, "canary\n"));

    // `docker kill` stops it for good (Docker does not restart a container
    // it was told to kill): the next ensure replaces it, with the same
    // config on the same data port.
    docker_cli(&["kill", &container]);
    let dead = docker_gateway(&p, &scope).await.unwrap();
    assert!(!dead.is_healthy(), "{dead:?}");
    assert!(
        tokio::net::TcpStream::connect(client.proxy_addr())
            .await
            .is_err()
    );
    let repaired = service.ensure(&infra).await.unwrap();
    assert_ne!(repaired.instance(), client.instance(), "a new instance");
    assert_eq!(
        repaired.proxy_addr(),
        client.proxy_addr(),
        "the same data port"
    );
    assert_eq!(repaired.config().await.unwrap(), config, "the same config");
    let (status, body) = http(repaired.proxy_addr(), "GET", "/", "", "").await;
    assert_eq!((status, body.as_str()), (200, "canary\n"));
    assert_eq!(
        p.observe(&scope)
            .await
            .unwrap()
            .iter()
            .filter(|i| i.service == "iris-gateway")
            .count(),
        1,
        "the killed instance is gone"
    );

    // `infra status` shows it, owned by the release controller; `plan`
    // lists it as owned and `apply` leaves it alone.
    let status_json: serde_json::Value =
        serde_json::from_str(&cli(&["infra", "status", &root, "--json"])).unwrap();
    let shown = status_json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["service"] == "iris-gateway")
        .unwrap_or_else(|| panic!("no gateway in {status_json:#}"));
    assert_eq!(shown["owner"], "release");
    let plan = cli(&["infra", "plan", &root]);
    assert!(plan.contains("no changes"), "{plan}");
    assert!(plan.contains("owned by release"), "{plan}");
    let before = docker_gateway(&p, &scope).await.unwrap();
    cli(&["infra", "apply", &root]);
    let untouched = docker_gateway(&p, &scope).await.unwrap();
    assert_eq!(
        (untouched.id.as_str(), untouched.replicas[0].handle.as_str()),
        (before.id.as_str(), before.replicas[0].handle.as_str())
    );

    // Its log: JSON lines, never the token.
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    // The gateway logs to stderr, which `docker logs` gives back on its own.
    let logs = Command::new("docker")
        .args(["logs", &container_of(&scope, &untouched)])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&logs.stderr);
    assert!(log.contains("\"event\":\"started\""), "{log}");
    assert!(!log.contains(token.trim()), "the token is never logged");

    // `infra destroy` removes it and everything else of the project.
    cli(&["infra", "destroy", &root]);
    assert!(docker_gateway(&p, &scope).await.is_none());
    assert!(
        tokio::net::TcpStream::connect(client.proxy_addr())
            .await
            .is_err()
    );
    let label = format!("label=mlops.project={}", scope.project);
    assert_eq!(docker_cli(&["ps", "-aq", "--filter", &label]), "");
    assert_eq!(docker_cli(&["images", "-q", "--filter", &label]), "");
    // The state directory outlives it: the next ensure finds its config.
    assert_eq!(
        mlops_release::service::read_config(&dir).unwrap(),
        Some(config)
    );
}

/// Stage 4 on Docker as a user runs it: `mlops pipeline run` deploys iris
/// to staging in a container and the `canary` step releases it to
/// production through the gateway's container, routing to the replicas'
/// endpoints as the provider reports them; a second model is compared
/// with the first there and promoted. Destroying both environments leaves
/// nothing in the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_releases_through_the_gateway_on_docker() {
    let _engine = docker().await;
    let (_dir, scope, _guard) = docker_project();
    let root = scope.root.clone();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/iris/data/iris.csv"),
        root.join("requests.csv"),
    )
    .unwrap();
    // A version's files are where `package` found them, at the top.
    for file in ["model.json", "metrics.json"] {
        std::fs::copy(root.join("model").join(file), root.join(file)).unwrap();
    }
    let manifest = std::fs::read_to_string(root.join("mlops.toml"))
        .unwrap()
        .replace("replicas = 2", "replicas = 1");
    std::fs::write(
        root.join("mlops.toml"),
        format!(
            r#"{manifest}
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

[release.steps.canary]
kind = "canary"
with = {{ steps = [50, 100], hold = "1s", traffic = {{ csv = "requests.csv", exclude = ["species"], rate = 40 }}, analysis = {{ min-sample-size = 8, max-error-rate = 0.01, alpha = 0.01 }} }}
"#
        ),
    )
    .unwrap();
    let at = root.to_str().unwrap();
    // Runs the pipeline; the canary's evidence: promoted, against `stable`.
    let release = |stable: serde_json::Value| {
        cli(&["pipeline", "run", at]);
        let status: serde_json::Value =
            serde_json::from_str(&cli(&["pipeline", "status", at, "--json"])).unwrap();
        let canary = status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "canary")
            .unwrap_or_else(|| panic!("no canary step in {status:#}"));
        let body = &canary["evidence"][0]["body"];
        assert_eq!(body["verdict"], "promote", "{canary:#}");
        assert_eq!(body["stable"], stable, "{canary:#}");
        body["gateway"].as_str().unwrap().to_owned()
    };
    let gateway_url = release(serde_json::Value::Null);

    // The gateway runs in production, in a container, in front of iris.
    let production = Scope {
        environment: "production".into(),
        ..scope.clone()
    };
    let p = docker().await;
    let gateway = docker_gateway(&p, &production)
        .await
        .expect("the gateway runs in production");
    assert_eq!(gateway.owner.as_deref(), Some("release"));
    let proxy: SocketAddr = gateway_url.trim_start_matches("http://").parse().unwrap();
    let (status, body) = http(proxy, "POST", "/v2/models/iris/infer", "", INFER).await;
    assert_eq!(status, 200, "{body}");

    // A second model: compared with the first, promoted.
    let trained = Command::new(iris())
        .args(["train", "--epochs", "1500", "--data"])
        .arg(root.join("requests.csv"))
        .arg("--model")
        .arg(root.join("model.json"))
        .arg("--metrics")
        .arg(root.join("metrics.json"))
        .output()
        .unwrap();
    assert!(trained.status.success(), "iris train: {trained:?}");
    assert_eq!(release(serde_json::json!("iris:1")), gateway_url);
    let (status, body) = http(proxy, "POST", "/v2/models/iris/infer", "", INFER).await;
    assert_eq!(status, 200, "{body}");

    for env in ["production", "staging"] {
        cli(&["infra", "destroy", at, "--env", env]);
    }
    let label = format!("label=mlops.project={}", scope.project);
    assert_eq!(docker_cli(&["ps", "-aq", "--filter", &label]), "");
    assert_eq!(docker_cli(&["images", "-q", "--filter", &label]), "");
}

/// A gateway started by an older mlops refuses a config with version
/// labels (an unknown field): the client sends it again without them, so
/// a release is not stopped by a label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_gateway_gets_its_config_without_version_labels() {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let text = String::from_utf8_lossy(&body).into_owned();
                        log.lock().unwrap().push(text.clone());
                        let response = if text.contains("\"version\"") {
                            hyper::Response::builder().status(400).body(Full::new(Bytes::from(
                                "invalid config JSON: unknown field `version`, expected one of `name`, `weight`, `replicas`\n",
                            )))
                        } else {
                            hyper::Response::builder().status(200).body(Full::new(body))
                        };
                        Ok::<_, Infallible>(response.unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let client = mlops_release::service::GatewayClient::new(
        &format!("http://{admin}"),
        mlops_release::gateway::AdminToken::generate().unwrap(),
        "127.0.0.1:9".parse().unwrap(),
        "old",
    );
    let mut config = Config::single(["http://127.0.0.1:1"]);
    config.variants[0].version = Some("m:2".into());
    let applied = client
        .set_config(&config)
        .await
        .expect("applied without the label");
    assert_eq!(applied.variants[0].version, None);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].contains("m:2") && !seen[1].contains("version"),
        "{seen:?}"
    );
}
