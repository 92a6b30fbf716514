//! The Docker provider against the real engine: the workspace's `iris`
//! model server built into a `FROM scratch` image, started, inspected,
//! scaled, drifted by hand and stopped. No mocks.
//!
//! Every test fails, saying how to get one, when no engine answers
//! (`scripts/test` checks that one does). Each test uses its own project
//! name, so they run in parallel, and ends by checking that nothing
//! labelled with its project is left (a guard removes leftovers when a
//! test panics).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use mlops_iac::apply::{self, ApplyContext};
use mlops_iac::docker::{DockerProvider, image_tag, labels};
use mlops_iac::provider::{
    Desired, Instance, ModelRef, Provider, ProviderError, ReplicaState, Scope,
};
use mlops_iac::spec::{BuildSpec, EnvValue, HealthSpec, Resources, RestartPolicy, ServiceSpec};
use mlops_iac::{Action, plan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INFER_BODY: &str =
    r#"{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;
const SECRET: &str = "s3cr3t-value-for-the-test";
const MEMORY: u64 = 128 * 1024 * 1024;

/// The connected engine. Panics, saying how to get one, when no engine
/// answers: a test that needs Docker must not pass without it.
async fn engine() -> Docker {
    let endpoint =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let unreachable = |e: bollard::errors::Error| -> ! {
        panic!(
            "the Docker engine is not reachable at {endpoint}: {e}: start dockerd \
             (apt-get install docker.io) or set DOCKER_HOST"
        )
    };
    let docker = Docker::connect_with_local_defaults().unwrap_or_else(|e| unreachable(e));
    let docker = docker
        .negotiate_version()
        .await
        .unwrap_or_else(|e| unreachable(e));
    if let Err(e) = docker.ping().await {
        unreachable(e);
    }
    docker
}

/// `target/debug/iris`, next to this test's directory.
fn iris_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("iris");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p iris` (`cargo nextest run --workspace` builds it)",
        binary.display()
    );
    binary
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A unique project name per test (tests run in parallel, also across
/// processes).
fn project_name(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "dt{}-{}-{test}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A project directory with `bin/iris` (a link to the built binary) and a
/// trained model in `model/`.
struct Project {
    _dir: tempfile::TempDir,
    scope: Scope,
    guard: Leftovers,
}

impl Project {
    fn new(docker: &Docker, test: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::os::unix::fs::symlink(iris_binary(), root.join("bin/iris")).unwrap();
        std::fs::create_dir_all(root.join("model")).unwrap();
        let trained = std::process::Command::new(iris_binary())
            .args(["train", "--data"])
            .arg(workspace().join("examples/iris/data/iris.csv"))
            .arg("--model")
            .arg(root.join("model/model.json"))
            .arg("--metrics")
            .arg(root.join("model/metrics.json"))
            .output()
            .unwrap();
        assert!(trained.status.success(), "iris train: {trained:?}");
        let project = project_name(test);
        Project {
            _dir: dir,
            scope: Scope {
                project: project.clone(),
                environment: "test".into(),
                root,
            },
            guard: Leftovers {
                docker: docker.clone(),
                project,
            },
        }
    }

    fn desired(&self, spec: ServiceSpec) -> Desired {
        Desired {
            spec,
            model: Some(ModelRef {
                version: "iris:1".into(),
                dir: self.scope.root.join("model"),
            }),
            revision: "rev1".into(),
            from_env: BTreeMap::from([("TEST_TOKEN".to_owned(), SECRET.to_owned())]),
            env_digests: BTreeMap::new(),
            owner: None,
        }
    }
}

/// The iris server as a service: `Binary` build, read-only, non-root,
/// limited, the model mounted, a secret in its environment.
fn iris_spec(replicas: u32) -> ServiceSpec {
    ServiceSpec {
        name: "iris".into(),
        command: [
            "bin/iris",
            "serve",
            "--model",
            "{model-dir}/model.json",
            "--host",
            "{host}",
            "--port",
            "{port}",
            "--max-lifetime",
            "10m",
        ]
        .map(String::from)
        .to_vec(),
        port: 8080,
        host_port: None,
        replicas,
        replica_range: None,
        restart: RestartPolicy::OnFailure,
        health: HealthSpec {
            path: "/v2/health/ready".into(),
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(30),
        },
        resources: Resources {
            cpus: Some(0.5),
            memory: Some(MEMORY),
        },
        env: BTreeMap::from([
            (
                "GREETING".to_owned(),
                EnvValue::Literal {
                    value: "replica-{replica}".into(),
                },
            ),
            (
                "API_TOKEN".to_owned(),
                EnvValue::FromEnv {
                    var: "TEST_TOKEN".into(),
                    secret: true,
                },
            ),
        ]),
        model_dir: None,
        build: Some(BuildSpec::Binary {
            binary: "bin/iris".into(),
            files: Vec::new(),
        }),
        read_only: true,
        user: "65534:65534".into(),
        stop_grace: Duration::from_secs(2),
        drain: Duration::ZERO,
        host_network: false,
        engine_socket: false,
        state_dir: None,
    }
}

/// What is left of a project in the engine; removes it all when dropped
/// (a panicking test leaves nothing behind either).
struct Leftovers {
    docker: Docker,
    project: String,
}

impl Leftovers {
    fn filter(&self) -> HashMap<&'static str, Vec<String>> {
        HashMap::from([(
            "label",
            vec![format!("{}={}", labels::PROJECT, self.project)],
        )])
    }

    /// Containers, networks and images labelled with the project.
    async fn list(&self) -> Vec<String> {
        let filters = self.filter();
        let mut left = Vec::new();
        let containers = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap();
        left.extend(
            containers
                .into_iter()
                .map(|c| format!("container {:?}", c.names)),
        );
        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap();
        left.extend(
            networks
                .into_iter()
                .map(|n| format!("network {:?}", n.name)),
        );
        let images = self
            .docker
            .list_images(Some(
                ListImagesOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap();
        left.extend(
            images
                .into_iter()
                .map(|i| format!("image {} {:?}", i.id, i.repo_tags)),
        );
        left
    }

    /// Asserts that nothing of the project is left.
    async fn assert_clean(&self) {
        let left = self.list().await;
        assert!(left.is_empty(), "left behind: {left:#?}");
    }

    async fn remove_all(docker: Docker, project: String) {
        let filters = HashMap::from([("label", vec![format!("{}={project}", labels::PROJECT)])]);
        if let Ok(containers) = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
        {
            for c in containers {
                let _ = docker
                    .remove_container(
                        c.id.as_deref().unwrap_or_default(),
                        Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                    )
                    .await;
            }
        }
        if let Ok(networks) = docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
        {
            for n in networks {
                let _ = docker
                    .remove_network(n.id.as_deref().unwrap_or_default())
                    .await;
            }
        }
        if let Ok(images) = docker
            .list_images(Some(
                ListImagesOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
        {
            for i in images {
                let _ = docker
                    .remove_image(
                        &i.id,
                        Some(RemoveImageOptionsBuilder::default().force(true).build()),
                        None,
                    )
                    .await;
            }
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let (docker, project) = (self.docker.clone(), self.project.clone());
        // Drop cannot await; clean up on a runtime of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(Leftovers::remove_all(docker, project));
        })
        .join();
    }
}

/// Sends one HTTP/1.1 request to a loopback endpoint; the status and body.
async fn http(endpoint: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The instance's containers, by replica index.
async fn containers(
    docker: &Docker,
    instance: &Instance,
) -> Vec<bollard::models::ContainerInspectResponse> {
    let filters = HashMap::from([(
        "label",
        vec![format!("{}={}", labels::INSTANCE, instance.id)],
    )]);
    let mut list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    list.sort_by_key(|c| {
        c.labels.as_ref().unwrap()[labels::REPLICA]
            .parse::<u32>()
            .unwrap()
    });
    let mut out = Vec::new();
    for c in list {
        out.push(
            docker
                .inspect_container(c.id.as_deref().unwrap(), None)
                .await
                .unwrap(),
        );
    }
    out
}

async fn observe_one(provider: &DockerProvider, scope: &Scope) -> Instance {
    let mut instances = provider.observe(scope).await.unwrap();
    assert_eq!(instances.len(), 1, "{instances:#?}");
    instances.pop().unwrap()
}

fn record_path(scope: &Scope, instance: &Instance) -> PathBuf {
    scope.state_dir().join(format!(
        "infra/docker/{}/{}.json",
        scope.environment, instance.id
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iris_starts_serves_scales_drifts_and_stops() {
    let docker = engine().await;
    let provider = DockerProvider::connect().await.unwrap();
    let project = Project::new(&docker, "life");
    let scope = &project.scope;
    let desired = project.desired(iris_spec(2));

    let started = provider.start(scope, &desired).await.unwrap();
    assert!(started.is_healthy(), "{started:#?}");
    assert_eq!(started.replicas.len(), 2);
    assert_eq!(started.model_version.as_deref(), Some("iris:1"));

    // What each replica uses, found by the port it answers on.
    let usage = provider.container_usage().await.unwrap();
    for replica in &started.replicas {
        let endpoint = replica.endpoint.as_deref().unwrap();
        let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        let u = usage
            .iter()
            .find(|u| u.port == Some(port))
            .unwrap_or_else(|| panic!("no usage for {endpoint} in {usage:#?}"));
        assert!(u.memory_bytes > 0 && u.cpu_seconds > 0.0, "{u:?}");
        assert!(u.container.contains(&started.id), "{u:?}");
    }

    // The containers run as declared.
    let inspected = containers(&docker, &started).await;
    assert_eq!(inspected.len(), 2);
    for (n, c) in inspected.iter().enumerate() {
        let host = c.host_config.as_ref().unwrap();
        let config = c.config.as_ref().unwrap();
        assert_eq!(host.readonly_rootfs, Some(true));
        assert!(host.tmpfs.as_ref().unwrap().contains_key("/tmp"));
        assert_eq!(config.user.as_deref(), Some("65534:65534"));
        assert_eq!(host.memory, Some(MEMORY as i64));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(
            host.restart_policy.as_ref().unwrap().name,
            Some(bollard::models::RestartPolicyNameEnum::ON_FAILURE)
        );
        let model = c
            .mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination.as_deref() == Some("/model"))
            .expect("the model is mounted");
        assert_eq!(model.rw, Some(false));
        let published = c.network_settings.as_ref().unwrap().ports.as_ref().unwrap()["8080/tcp"]
            .as_ref()
            .unwrap();
        assert!(!published.is_empty());
        for binding in published {
            assert_eq!(
                binding.host_ip.as_deref(),
                Some("127.0.0.1"),
                "{published:?}"
            );
        }
        assert_eq!(
            c.name.as_deref(),
            Some(format!("/mlops-{}-test-iris-{}-{n}", scope.project, started.id).as_str())
        );
        // The secret is in the environment, and nowhere else.
        let env = config.env.as_ref().unwrap();
        assert!(env.contains(&format!("API_TOKEN={SECRET}")), "{env:?}");
        assert!(env.contains(&format!("GREETING=replica-{n}")), "{env:?}");
        assert!(
            env.contains(&"MLOPS_MODEL_DIR=/model".to_owned()),
            "{env:?}"
        );
        let container_labels = config.labels.as_ref().unwrap();
        assert!(container_labels.values().all(|v| !v.contains(SECRET)));
        assert_eq!(container_labels[labels::MANAGED_BY], "mlops");
        assert_eq!(container_labels[labels::ENVIRONMENT], "test");
        assert_eq!(container_labels[labels::REVISION], "rev1");
        assert_eq!(container_labels[labels::MODEL_VERSION], "iris:1");
        assert_eq!(
            config.entrypoint.as_deref(),
            Some(&["/app/iris".to_owned()][..])
        );
    }
    let image = docker
        .inspect_image(&image_tag(&scope.project, "iris", "rev1"))
        .await
        .unwrap();
    assert!(!format!("{image:?}").contains(SECRET));
    assert_eq!(image.config.unwrap().user.as_deref(), Some("65534:65534"));
    let record = std::fs::read_to_string(record_path(scope, &started)).unwrap();
    assert!(!record.contains(SECRET));

    // Observed healthy, and both replicas answer an inference request.
    let observed = observe_one(&provider, scope).await;
    assert!(observed.is_healthy(), "{observed:#?}");
    assert_eq!(observed.id, started.id);
    assert_eq!(observed.endpoints().len(), 2);
    for endpoint in observed.endpoints() {
        assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
        let (status, body) = http(&endpoint, "POST", "/v2/models/iris/infer", INFER_BODY).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("outputs"), "{body}");
    }
    let logs = provider.logs(scope, &observed, 5).await.unwrap();
    assert!(logs.contains("[0] serve: model 'iris'"), "{logs}");
    assert!(logs.contains("[1] serve: model 'iris'"), "{logs}");

    // Scale down and up again.
    let one = provider.scale(scope, &observed, 1).await.unwrap();
    assert_eq!(one.desired_replicas, 1);
    assert!(one.is_healthy(), "{one:#?}");
    assert_eq!(observe_one(&provider, scope).await.desired_replicas, 1);
    assert_eq!(containers(&docker, &one).await.len(), 1);
    let two = provider.scale(scope, &one, 2).await.unwrap();
    assert!(two.is_healthy(), "{two:#?}");
    assert_eq!(two.desired_replicas, 2);
    let rescaled = containers(&docker, &two).await;
    let env = rescaled[1].config.as_ref().unwrap().env.as_ref().unwrap();
    assert!(
        env.contains(&format!("API_TOKEN={SECRET}")),
        "new replicas get the secret back"
    );
    assert!(env.contains(&"GREETING=replica-1".to_owned()), "{env:?}");

    // Killed behind our back: drift.
    let victim = rescaled[1].id.clone().unwrap();
    docker
        .kill_container(
            &victim,
            Some(
                KillContainerOptionsBuilder::default()
                    .signal("SIGKILL")
                    .build(),
            ),
        )
        .await
        .unwrap();
    let drifted = observe_one(&provider, scope).await;
    assert!(!drifted.is_healthy(), "{drifted:#?}");
    assert_eq!(
        drifted.replicas[1].state,
        ReplicaState::Exited,
        "{drifted:#?}"
    );
    assert!(
        drifted
            .drift()
            .iter()
            .any(|d| d.starts_with("replica 1 has exited")),
        "{:?}",
        drifted.drift()
    );

    // Removed behind our back: missing, and scale repairs it.
    docker
        .remove_container(
            &victim,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .unwrap();
    let missing = observe_one(&provider, scope).await;
    assert_eq!(missing.replicas.len(), 2, "{missing:#?}");
    assert_eq!(missing.replicas[1].state, ReplicaState::Missing);
    assert!(
        missing.drift().contains(&"replica 1 is gone".to_owned()),
        "{:?}",
        missing.drift()
    );
    let repaired = provider.scale(scope, &missing, 2).await.unwrap();
    assert!(repaired.is_healthy(), "{repaired:#?}");

    provider.stop(scope, &repaired).await.unwrap();
    assert!(provider.observe(scope).await.unwrap().is_empty());
    assert!(!record_path(scope, &repaired).exists());
    project.guard.assert_clean().await;
}

/// Builds a one-file image labelled with the project (for drift by hand).
async fn other_image(docker: &Docker, project: &str, tag: &str) {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, content) in [
        ("Dockerfile", "FROM scratch\nCOPY marker /marker\n"),
        ("marker", "x"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, content.as_bytes())
            .unwrap();
    }
    let image_labels = HashMap::from([(labels::PROJECT, project), (labels::MANAGED_BY, "mlops")]);
    let options = BuildImageOptionsBuilder::default()
        .t(tag)
        .labels(&image_labels)
        .build();
    let mut stream = docker.build_image(
        options,
        None,
        Some(bollard::body_full(tar.into_inner().unwrap().into())),
    );
    while let Some(item) = stream.next().await {
        item.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_and_images_changed_by_hand_are_drift() {
    let docker = engine().await;
    let provider = DockerProvider::connect().await.unwrap();
    let project = Project::new(&docker, "drift");
    let scope = &project.scope;
    let started = provider
        .start(scope, &project.desired(iris_spec(1)))
        .await
        .unwrap();
    assert!(observe_one(&provider, scope).await.is_healthy());

    // A container made by hand into the instance, with another revision.
    let original = &containers(&docker, &started).await[0];
    let mut config = original.config.clone().unwrap();
    let mut forged = config.labels.take().unwrap();
    forged.insert(labels::REVISION.to_owned(), "forged".to_owned());
    forged.insert(labels::REPLICA.to_owned(), "1".to_owned());
    let name = format!("mlops-{}-test-iris-{}-1", scope.project, started.id);
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            bollard::models::ContainerCreateBody {
                image: original.image.clone(),
                cmd: Some(vec!["/app/iris".to_owned(), "--help".to_owned()]),
                labels: Some(forged),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let drifted = observe_one(&provider, scope).await;
    assert!(
        drifted.problems.iter().any(|p| p.contains("replica 1")
            && p.contains("mlops.revision=forged")
            && p.contains("labels were changed")),
        "{drifted:#?}"
    );

    // The revision's tag moved to another image.
    let tag = image_tag(&scope.project, "iris", "rev1");
    let other = format!("{}-other:1", scope.project);
    other_image(&docker, &scope.project, &other).await;
    let (repo, version) = tag.split_once(':').unwrap();
    docker
        .tag_image(
            &other,
            Some(
                TagImageOptionsBuilder::default()
                    .repo(repo)
                    .tag(version)
                    .build(),
            ),
        )
        .await
        .unwrap();
    let drifted = observe_one(&provider, scope).await;
    assert!(
        drifted
            .problems
            .iter()
            .any(|p| p.starts_with("replica 0 runs image")
                && p.contains("but revision rev1 is image")),
        "{drifted:#?}"
    );
    assert!(!drifted.is_healthy());

    // Stop removes the hand-made container too; the images go with the
    // project's containers (the other tag is not the provider's to remove).
    provider.stop(scope, &drifted).await.unwrap();
    let _ = docker
        .remove_image(
            &other,
            Some(RemoveImageOptionsBuilder::default().build()),
            None,
        )
        .await;
    project.guard.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_failures_say_what_failed() {
    let docker = engine().await;
    let provider = DockerProvider::connect().await.unwrap();
    let project = Project::new(&docker, "build");
    let scope = &project.scope;

    // A RUN step cannot run in an empty image.
    std::fs::write(
        scope.root.join("Dockerfile"),
        "FROM scratch\nCOPY model /model\nRUN /bin/true\n",
    )
    .unwrap();
    let mut spec = iris_spec(1);
    spec.build = Some(BuildSpec::Dockerfile {
        dockerfile: "Dockerfile".into(),
        context: ".".into(),
    });
    let err = provider
        .start(scope, &project.desired(spec))
        .await
        .unwrap_err();
    let ProviderError::Build {
        service,
        detail,
        output,
    } = &err
    else {
        panic!("expected a build error, got {err:?}");
    };
    assert_eq!(service, "iris");
    assert!(output.contains("RUN /bin/true"), "{err}");
    assert!(!detail.is_empty(), "{err}");
    // The step images the failed build made are gone too.
    let steps: Vec<&str> = output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("---> "))
        .filter(|id| id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    for step in steps {
        assert!(
            docker.inspect_image(step).await.is_err(),
            "step image {step} is left"
        );
    }

    // A binary that is not there.
    let mut spec = iris_spec(1);
    spec.build = Some(BuildSpec::Binary {
        binary: "target/release/nowhere".into(),
        files: Vec::new(),
    });
    let err = provider
        .start(scope, &project.desired(spec))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Invalid { detail, .. } if detail.contains("target/release/nowhere") && detail.contains("does not exist")),
        "{err:?}"
    );

    // An image that is not in the engine (and is not pulled).
    let mut spec = iris_spec(1);
    spec.build = Some(BuildSpec::Image {
        image: format!("{}-absent:1", scope.project),
    });
    let err = provider
        .start(scope, &project.desired(spec))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Invalid { detail, .. } if detail.contains("is not in the Docker engine")),
        "{err:?}"
    );
    project.guard.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_gets_healthy_leaves_nothing() {
    let docker = engine().await;
    let provider = DockerProvider::connect().await.unwrap();
    let project = Project::new(&docker, "sick");
    let scope = &project.scope;
    let mut spec = iris_spec(1);
    spec.health.path = "/not-a-health-path".into();
    spec.health.deadline = Duration::from_secs(3);
    let err = provider
        .start(scope, &project.desired(spec))
        .await
        .unwrap_err();
    let ProviderError::Unhealthy {
        last_error,
        log_tail,
        ..
    } = &err
    else {
        panic!("expected unhealthy, got {err:?}");
    };
    assert!(
        last_error.as_deref().unwrap_or_default().contains("404"),
        "{err}"
    );
    assert!(log_tail.contains("[0] serve: model 'iris'"), "{err}");
    assert!(!err.to_string().contains(SECRET));
    assert!(provider.observe(scope).await.unwrap().is_empty());
    project.guard.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_host_port_is_refused_before_anything_is_made() {
    let docker = engine().await;
    let provider = DockerProvider::connect().await.unwrap();
    let project = Project::new(&docker, "port");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut spec = iris_spec(1);
    spec.host_port = Some(port);
    let err = provider
        .start(&project.scope, &project.desired(spec))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::PortTaken { port: p, .. } if p == port),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("port {port} on 127.0.0.1 is already in use"))
    );
    project.guard.assert_clean().await;
}

#[tokio::test]
async fn an_unreachable_engine_says_so() {
    let missing = std::env::temp_dir().join(format!("mlops-no-docker-{}.sock", std::process::id()));
    let err = DockerProvider::connect_unix(missing.to_str().unwrap())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
    assert!(
        text.contains(&format!(
            "cannot reach the Docker engine at unix://{}",
            missing.display()
        )),
        "{text}"
    );
    assert!(text.contains("start the engine"), "{text}");

    // A path that exists but where no engine listens.
    let not_a_socket = tempfile::NamedTempFile::new().unwrap();
    let err = DockerProvider::connect_unix(not_a_socket.path().to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
}

/// A controller's instance carries its owner: in the `mlops.owner` label of
/// every container (new ones from a scale too) and in its record; observe
/// reads it back, from the labels when the record is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_instance_is_labelled_with_its_owner() {
    let docker = engine().await;
    let provider = DockerProvider::connect().await.unwrap();
    let project = Project::new(&docker, "owned");
    let scope = &project.scope;
    let mut desired = project.desired(iris_spec(1));
    desired.owner = Some("release".into());

    let started = provider.start(scope, &desired).await.unwrap();
    assert_eq!(started.owner.as_deref(), Some("release"));
    let scaled = provider.scale(scope, &started, 2).await.unwrap();
    assert!(scaled.is_healthy(), "{scaled:#?}");
    for c in containers(&docker, &scaled).await {
        let container_labels = c.config.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(container_labels[labels::OWNER], "release");
    }
    std::fs::remove_file(record_path(scope, &scaled)).unwrap();
    let observed = observe_one(&provider, scope).await;
    assert_eq!(observed.owner.as_deref(), Some("release"));
    assert!(observed.problems.is_empty(), "{observed:#?}");

    provider.stop(scope, &observed).await.unwrap();
    assert!(provider.observe(scope).await.unwrap().is_empty());
    project.guard.assert_clean().await;
}

/// With no model version deployed, `{model-dir}` is the directory the local
/// provider uses too ([`mlops_iac::provider::model_dir`]): here the project
/// itself (no `model-dir`), mounted read-only at `/model`. A directory the
/// container's user cannot read is refused before anything is made, saying
/// what to do; new bytes in the file the command names there are a new
/// revision. Applied and destroyed as `mlops infra` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_version_the_model_dir_is_mounted() {
    use std::os::unix::fs::PermissionsExt;
    let docker = engine().await;
    let provider = DockerProvider::connect().await.unwrap();
    let project = Project::new(&docker, "nover");
    let scope = &project.scope;
    let root = &scope.root;
    let ledger = mlops_core::Ledger::open(root).unwrap();
    let ctx = ApplyContext::default();
    let mut spec = iris_spec(1);
    spec.command[3] = "{model-dir}/model/model.json".into();
    let desired = || {
        vec![
            plan::desired(&spec, None, root, |v| {
                (v == "TEST_TOKEN").then(|| SECRET.to_owned())
            })
            .unwrap(),
        ]
    };

    // The project directory is owner-only: user 65534 cannot enter it.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = apply::apply(&provider, scope, &ledger, &desired(), None, &ctx)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "the model directory {} (owner",
            root.canonicalize().unwrap().display()
        )) && text.contains("is not readable by the container's user 65534:65534")
            && text.contains(&format!(
                "chmod o+rx {}",
                root.canonicalize().unwrap().display()
            )),
        "{text}"
    );
    project.guard.assert_clean().await;

    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let report = apply::apply(&provider, scope, &ledger, &desired(), None, &ctx)
        .await
        .unwrap();
    let [instance] = &report.instances[..] else {
        panic!("{report:#?}")
    };
    assert!(instance.is_healthy(), "{instance:#?}");
    assert_eq!(instance.model_version, None);
    for c in containers(&docker, instance).await {
        let model = c
            .mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination.as_deref() == Some("/model"))
            .expect("the project is mounted");
        assert_eq!(model.rw, Some(false));
        assert_eq!(
            model.source.as_deref().map(PathBuf::from),
            Some(root.canonicalize().unwrap())
        );
    }
    let endpoint = instance.endpoints()[0].clone();
    let (status, body) = http(&endpoint, "POST", "/v2/models/iris/infer", INFER_BODY).await;
    assert_eq!(status, 200, "{body}");
    let (plan, _) = apply::plan_env(&provider, scope, &ledger, &desired(), None)
        .await
        .unwrap();
    assert!(plan.is_empty(), "{plan:?}");

    // The model file the command names changes: a new revision.
    let model = root.join("model/model.json");
    let mut bytes = std::fs::read(&model).unwrap();
    bytes.push(b'\n');
    std::fs::write(&model, bytes).unwrap();
    let (plan, _) = apply::plan_env(&provider, scope, &ledger, &desired(), None)
        .await
        .unwrap();
    assert!(
        matches!(&plan.actions[..], [Action::Replace { service, why, .. }]
            if service == "iris" && why.iter().any(|w| w.contains("a file the service names in it"))),
        "{plan:?}"
    );

    apply::destroy(&provider, scope, &ledger, None, &ctx)
        .await
        .unwrap();
    assert!(provider.observe(scope).await.unwrap().is_empty());
    project.guard.assert_clean().await;
}

/// A controller's spec may run in the host's network (`host_network`):
/// each replica listens on its own port of the host's 127.0.0.1 (as a
/// local process does), nothing is published, no environment network is
/// made, and it has no capabilities; its `state_dir` is bind-mounted
/// read-write at the same path. A state directory that is missing or
/// relative is refused before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_network_service_listens_on_the_host_loopback_with_its_state() {
    let docker = engine().await;
    let provider = DockerProvider::connect().await.unwrap();
    let project = Project::new(&docker, "hostnet");
    let scope = &project.scope;
    let state = scope.root.join("state");

    let mut spec = iris_spec(2);
    spec.host_network = true;
    for (dir, says) in [
        (state.clone(), "does not exist"),
        (PathBuf::from("state"), "is not an absolute path"),
    ] {
        spec.state_dir = Some(dir);
        let e = provider
            .start(scope, &project.desired(spec.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ProviderError::Invalid { .. }) && e.to_string().contains(says),
            "{e}"
        );
        project.guard.assert_clean().await;
    }
    std::fs::create_dir(&state).unwrap();
    spec.state_dir = Some(state.clone());

    let started = provider
        .start(scope, &project.desired(spec.clone()))
        .await
        .unwrap();
    assert!(started.is_healthy(), "{started:#?}");
    let endpoints = started.endpoints();
    assert_eq!(endpoints.len(), 2, "{started:#?}");
    assert_ne!(endpoints[0], endpoints[1]);
    for (endpoint, c) in endpoints.iter().zip(containers(&docker, &started).await) {
        assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
        let (status, body) = http(endpoint, "POST", "/v2/models/iris/infer", INFER_BODY).await;
        assert_eq!(status, 200, "{body}");
        let host = c.host_config.as_ref().unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert!(
            host.port_bindings.as_ref().is_none_or(|b| b.is_empty()),
            "{:?}",
            host.port_bindings
        );
        assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        let container_labels = c.config.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(
            format!("http://127.0.0.1:{}", container_labels[labels::HOST_PORT]),
            *endpoint
        );
        let mount = c
            .mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination.as_deref() == state.to_str())
            .unwrap_or_else(|| panic!("no state mount: {:?}", c.mounts));
        assert_eq!(mount.rw, Some(true));
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&project.guard.filter())
                .build(),
        ))
        .await
        .unwrap();
    assert!(networks.is_empty(), "no environment network: {networks:?}");

    // Scaled, a new replica is in the host's network too.
    let scaled = provider.scale(scope, &started, 3).await.unwrap();
    assert!(scaled.is_healthy(), "{scaled:#?}");
    let third = scaled.endpoints()[2].clone();
    assert_eq!(http(&third, "GET", "/v2/health/ready", "").await.0, 200);

    provider.stop(scope, &scaled).await.unwrap();
    assert!(provider.observe(scope).await.unwrap().is_empty());
    project.guard.assert_clean().await;
}
