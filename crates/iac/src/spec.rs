//! `[infra]` in `mlops.toml`: the services a project runs and the
//! environment they run in, validated with spans.
//!
//! ```toml
//! [infra]
//! provider = "local"
//!
//! [infra.environment]
//! python = { requirements = "requirements.txt", venv = ".venv" }
//!
//! [infra.services.api]
//! command = [".venv/bin/python", "-m", "app.serve"]
//! port = 8080
//! replicas = 2
//! health = { path = "/v2/health/ready", interval = "1s", timeout = "2s" }
//! resources = { cpus = 1.0, memory = "256MiB" }
//! env = { PORT = "{port}", TOKEN = { from-env = "API_TOKEN", secret = true } }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::{Diagnostic, relative_path_problem};
use mlops_core::{CompiledSection, KindParams, Manifest, ManifestSection};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The name of the manifest section.
pub const SECTION: &str = "infra";

/// Which provider runs the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Supervised child processes on 127.0.0.1 (the default).
    #[default]
    Local,
    /// Containers on the Docker engine.
    Docker,
}

impl ProviderKind {
    /// The name used in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Docker => "docker",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(ProviderKind::Local),
            "docker" => Ok(ProviderKind::Docker),
            other => Err(format!(
                "unknown provider `{other}`: expected `local` or `docker`"
            )),
        }
    }
}

/// When a replica that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Always, whatever the exit status.
    Always,
    /// Only after a non-zero exit or a signal (the default).
    #[default]
    OnFailure,
    /// Never.
    Never,
}

/// How a replica's health is checked: `GET path` answering 2xx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// The path, starting with `/`.
    pub path: String,
    /// Time between checks.
    #[serde(with = "millis")]
    pub interval: Duration,
    /// How long one check may take.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// How long a new replica may take to become healthy.
    #[serde(with = "millis")]
    pub deadline: Duration,
}

/// CPU and memory limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Resources {
    /// CPUs (fractions allowed).
    pub cpus: Option<f64>,
    /// Memory in bytes.
    pub memory: Option<u64>,
}

/// A value of a service's environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum EnvValue {
    /// Written in the manifest; may use placeholders (`{port}`).
    Literal {
        /// The text.
        value: String,
    },
    /// Read from the caller's environment at apply time. A secret one is
    /// never written to logs, the ledger, state files or reports.
    FromEnv {
        /// The caller's variable.
        var: String,
        /// Whether the value is a secret.
        secret: bool,
    },
}

/// How the Docker provider gets the service's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum BuildSpec {
    /// `FROM scratch` with this binary (at `/app/NAME`) and the shared
    /// libraries it links; the command's first word names it.
    Binary {
        /// The binary, relative to the project.
        binary: PathBuf,
        /// Extra files or directories copied to `/app/…`, relative to the
        /// project.
        files: Vec<PathBuf>,
    },
    /// A Dockerfile and its context directory (nothing can be pulled, so
    /// its base must be local or `scratch`).
    Dockerfile {
        /// The Dockerfile, relative to the project.
        dockerfile: PathBuf,
        /// The context directory, relative to the project.
        context: PathBuf,
    },
    /// An image already present in the engine.
    Image {
        /// Its reference.
        image: String,
    },
}

/// One declared service, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// The service's name.
    pub name: String,
    /// The program and its arguments; placeholders `{port}`, `{host}`,
    /// `{model-dir}`, `{replica}` are filled per replica.
    pub command: Vec<String>,
    /// The port the service listens on inside a container (Docker); the
    /// local provider allocates one per replica and passes it as `{port}`.
    pub port: u16,
    /// A fixed loopback port to publish on (one replica only).
    pub host_port: Option<u16>,
    /// How many replicas: the fixed count, or, with a
    /// [`Self::replica_range`], its minimum (what a new instance starts
    /// with).
    pub replicas: u32,
    /// `replicas = { min, max }`: the count belongs to a controller (the
    /// autoscaler), which moves it within the range; `plan` leaves it alone
    /// there and brings it back only from outside. Not part of the
    /// revision. Absent for a fixed count (and then not serialized, so a
    /// fixed spec's revision is what it always was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_range: Option<ReplicaRange>,
    /// When exited replicas restart.
    pub restart: RestartPolicy,
    /// The health check.
    pub health: HealthSpec,
    /// Limits.
    pub resources: Resources,
    /// Environment variables.
    pub env: BTreeMap<String, EnvValue>,
    /// The directory `{model-dir}` means when no model version is deployed,
    /// relative to the project.
    pub model_dir: Option<PathBuf>,
    /// How the Docker provider gets the image.
    pub build: Option<BuildSpec>,
    /// Docker: run with a read-only root filesystem.
    pub read_only: bool,
    /// Docker: the user to run as (`uid:gid`).
    pub user: String,
    /// Time between SIGTERM and SIGKILL when stopping.
    #[serde(with = "millis")]
    pub stop_grace: Duration,
    /// How long a replaced instance keeps serving after its successor is
    /// healthy and published, so that clients holding its address finish.
    /// Not part of the revision: changing it replaces nothing.
    #[serde(with = "millis", default = "default_drain")]
    pub drain: Duration,
    /// Docker: run in the host's network namespace instead of the
    /// environment's network, as the local provider runs every process:
    /// `{host}` is 127.0.0.1 and `{port}` a port on the host's loopback
    /// (`host_port`, else one chosen when the replica is created), nothing
    /// is published, and the container has no capabilities. For a
    /// controller's service that must reach replicas at the addresses the
    /// host sees them at (the release gateway); not a manifest key. Absent
    /// when false, so other specs' revisions are what they were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// Docker: the engine's API socket bind-mounted at
    /// `/var/run/docker.sock` with the socket's group added (and
    /// `DOCKER_HOST` set), for a controller's service that reads the
    /// engine: the monitoring collector's container stats. Access to the
    /// socket is access to the engine: only mlops' own services ask for
    /// it; not a manifest key. The local provider's processes reach the
    /// engine as their user does. Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub engine_socket: bool,
    /// A directory (absolute) the service keeps its state in across
    /// restarts: the local provider's processes use it where it is, Docker
    /// bind-mounts it read-write at the same path, so the command names it
    /// the same way on both. It must exist. Not a manifest key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
}

fn default_drain() -> Duration {
    DEFAULT_DRAIN
}

/// The controller that owns a declared range's replica count unless the
/// range names another.
pub const AUTOSCALER: &str = "autoscaler";

/// A replica count a controller owns: `replicas = { min = 1, max = 4 }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRange {
    /// The fewest replicas (at least 1).
    pub min: u32,
    /// The most replicas.
    pub max: u32,
    /// The controller that moves the count within the range (`owner`,
    /// default [`AUTOSCALER`]).
    pub owner: String,
}

impl ServiceSpec {
    /// The replica counts `plan` accepts: `(min, max)`, equal for a fixed
    /// count.
    pub fn replica_bounds(&self) -> (u32, u32) {
        match &self.replica_range {
            Some(r) => (r.min, r.max),
            None => (self.replicas, self.replicas),
        }
    }

    /// The controller that owns the replica count, when a range hands it
    /// to one.
    pub fn replicas_owner(&self) -> Option<&str> {
        self.replica_range.as_ref().map(|r| r.owner.as_str())
    }
}

/// The environment the project's code runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum EnvironmentSpec {
    /// A virtualenv built from a requirements file pinned with hashes.
    Python {
        /// The requirements file, relative to the project.
        requirements: PathBuf,
        /// Where the virtualenv lives, relative to the project.
        venv: PathBuf,
        /// The interpreter that creates it.
        python: String,
    },
    /// A Rust build from `Cargo.lock` with `--locked`.
    Rust {
        /// The lockfile, relative to the project.
        lockfile: PathBuf,
        /// Extra arguments to `cargo build --locked`.
        build_args: Vec<String>,
    },
}

/// `[infra]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InfraSpec {
    /// The default provider.
    pub provider: ProviderKind,
    /// The environment, if declared.
    pub environment: Option<EnvironmentSpec>,
    /// The services, by name.
    pub services: BTreeMap<String, ServiceSpec>,
}

impl InfraSpec {
    /// `[infra]` as the manifest compiled it; an empty spec when there is
    /// none.
    pub fn from_manifest(manifest: &Manifest) -> Arc<InfraSpec> {
        manifest.section::<InfraSpec>(SECTION).unwrap_or_default()
    }

    /// Loads a project's manifest, with the kinds and sections of stage 1
    /// only, and returns its `[infra]`: for programs that use stage 1 alone
    /// (a manifest naming later stages' kinds does not load this way; load
    /// it with their registry and use [`InfraSpec::from_manifest`]).
    pub fn load(project_root: &Path) -> Result<Arc<InfraSpec>, mlops_core::ManifestError> {
        let mut registry = mlops_core::KindRegistry::new();
        crate::register(&mut registry).expect("stage 1 registers into an empty registry");
        Ok(Self::from_manifest(&Manifest::load(
            project_root,
            &registry,
        )?))
    }
}

/// The `[infra]` section for the manifest compiler.
#[derive(Debug, Default)]
pub struct InfraSection;

impl ManifestSection for InfraSection {
    fn name(&self) -> &'static str {
        SECTION
    }

    fn compile(&self, table: Option<&KindParams<'_>>) -> Result<CompiledSection, Vec<Diagnostic>> {
        match table {
            None => Ok(CompiledSection::new(InfraSpec::default())),
            Some(table) => compile(table).map(CompiledSection::new),
        }
    }

    fn json_schema(&self) -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(InfraWire))
            .expect("a generated schema always serializes")
    }
}

/// Registers the section.
pub fn section() -> Arc<dyn ManifestSection> {
    Arc::new(InfraSection)
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

// ---- wire -----------------------------------------------------------------

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct InfraWire {
    #[schemars(with = "Option<String>")]
    provider: Option<Spanned<String>>,
    environment: Option<EnvironmentWire>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, ServiceWire>")]
    services: BTreeMap<Spanned<String>, Spanned<ServiceWire>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EnvironmentWire {
    #[schemars(with = "Option<PythonWire>")]
    python: Option<Spanned<PythonWire>>,
    #[schemars(with = "Option<RustWire>")]
    rust: Option<Spanned<RustWire>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PythonWire {
    #[schemars(with = "String")]
    requirements: Spanned<String>,
    #[schemars(with = "Option<String>")]
    venv: Option<Spanned<String>>,
    python: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RustWire {
    #[schemars(with = "Option<String>")]
    lockfile: Option<Spanned<String>>,
    #[serde(default)]
    build_args: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ServiceWire {
    #[schemars(with = "Vec<String>")]
    command: Spanned<Vec<String>>,
    #[schemars(with = "Option<i64>")]
    port: Option<Spanned<i64>>,
    #[schemars(with = "Option<i64>")]
    host_port: Option<Spanned<i64>>,
    #[schemars(with = "Option<ReplicasWire>")]
    replicas: Option<Spanned<ReplicasWire>>,
    restart: Option<RestartPolicy>,
    #[schemars(with = "Option<HealthWire>")]
    health: Option<Spanned<HealthWire>>,
    resources: Option<ResourcesWire>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, EnvWire>")]
    env: BTreeMap<Spanned<String>, Spanned<EnvWire>>,
    #[schemars(with = "Option<String>")]
    model_dir: Option<Spanned<String>>,
    #[schemars(with = "Option<BuildWire>")]
    build: Option<Spanned<BuildWire>>,
    read_only: Option<bool>,
    #[schemars(with = "Option<String>")]
    user: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    stop_grace: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    drain: Option<Spanned<String>>,
}

/// `replicas = 2` or `replicas = { min = 1, max = 4, owner = "autoscaler" }`.
#[derive(JsonSchema)]
#[serde(untagged)]
enum ReplicasWire {
    Count(i64),
    Range(RangeWire),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RangeWire {
    min: i64,
    max: i64,
    owner: Option<String>,
}

// By hand rather than `untagged`, so that a wrong key or type in a range
// says which instead of "did not match any variant".
impl<'de> Deserialize<'de> for ReplicasWire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ReplicasWire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a replica count or a range `{ min = 1, max = 4 }`")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ReplicasWire, E> {
                Ok(ReplicasWire::Count(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ReplicasWire, E> {
                Ok(ReplicasWire::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ReplicasWire, A::Error> {
                RangeWire::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ReplicasWire::Range)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HealthWire {
    #[schemars(with = "String")]
    path: Spanned<String>,
    #[schemars(with = "Option<String>")]
    interval: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    timeout: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    deadline: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ResourcesWire {
    #[schemars(with = "Option<f64>")]
    cpus: Option<Spanned<f64>>,
    #[schemars(with = "Option<String>")]
    memory: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
enum EnvWire {
    Literal(String),
    FromEnv(FromEnvWire),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FromEnvWire {
    from_env: String,
    #[serde(default)]
    secret: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct BuildWire {
    #[schemars(with = "Option<String>")]
    binary: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    files: Vec<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    dockerfile: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    context: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    image: Option<Spanned<String>>,
}

// ---- compile ----------------------------------------------------------------

const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_DRAIN: Duration = Duration::from_secs(1);
const MAX_REPLICAS: i64 = 64;
/// `nobody:nogroup` — no service runs as root unless it says so.
const DEFAULT_USER: &str = "65534:65534";

fn duration(
    what: &str,
    value: Option<&Spanned<String>>,
    default: Duration,
    errors: &mut Vec<Diagnostic>,
) -> Duration {
    let Some(value) = value else {
        return default;
    };
    mlops_core::manifest::parse_duration(what, value).unwrap_or_else(|d| {
        errors.push(d);
        default
    })
}

fn path(what: &str, value: &Spanned<String>, errors: &mut Vec<Diagnostic>) -> Option<PathBuf> {
    match relative_path_problem(what, value, "the project directory") {
        Some(d) => {
            errors.push(d);
            None
        }
        None => Some(PathBuf::from(value.get_ref())),
    }
}

/// Parses a byte size: `512MiB`, `1GiB`, `256M`, `1048576`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size `{text}`: expected a number and a unit like 256MiB"))?;
    let factor: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KB" => 1e3,
        "KiB" | "k" => 1024.0,
        "M" | "MB" => 1e6,
        "MiB" | "m" => 1024.0 * 1024.0,
        "G" | "GB" => 1e9,
        "GiB" | "g" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use B, KiB, MiB, GiB (or KB, MB, GB)"
            ));
        }
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("size `{text}` is out of range"));
    }
    Ok(bytes as u64)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The placeholders a command or an environment value may use.
pub const PLACEHOLDERS: [&str; 5] = [
    "{port}",
    "{host}",
    "{model-dir}",
    "{replica}",
    "{model-version}",
];

fn check_placeholders(text: &str, span: std::ops::Range<usize>, errors: &mut Vec<Diagnostic>) {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open..];
        let Some(close) = after.find('}') else {
            break;
        };
        let token = &after[..=close];
        if !PLACEHOLDERS.contains(&token) {
            errors.push(
                Diagnostic::new(format!("unknown placeholder `{token}`"), Some(span.clone()))
                    .with_help(format!("the placeholders are {}", PLACEHOLDERS.join(", "))),
            );
        }
        rest = &after[close + 1..];
    }
}

fn compile(table: &KindParams<'_>) -> Result<InfraSpec, Vec<Diagnostic>> {
    let wire: InfraWire = table.deserialize().map_err(|d| vec![d])?;
    let mut errors = Vec::new();
    let provider = match &wire.provider {
        None => ProviderKind::Local,
        Some(p) => p.get_ref().parse().unwrap_or_else(|e: String| {
            errors.push(Diagnostic::new(e, Some(p.span())));
            ProviderKind::Local
        }),
    };
    let environment = wire
        .environment
        .and_then(|e| compile_environment(e, table.span(), &mut errors));
    let mut services = BTreeMap::new();
    for (name, service) in wire.services {
        let name_span = name.span();
        let name = name.into_inner();
        if !is_name(&name) {
            errors.push(
                Diagnostic::new(format!("invalid service name `{name}`"), Some(name_span))
                    .with_help("use lowercase letters, digits and `-`, starting with a letter (at most 40)"),
            );
            continue;
        }
        if let Some(spec) = compile_service(&name, service, &mut errors) {
            services.insert(name, spec);
        }
    }
    if errors.is_empty() {
        Ok(InfraSpec {
            provider,
            environment,
            services,
        })
    } else {
        Err(errors)
    }
}

fn compile_environment(
    wire: EnvironmentWire,
    span: std::ops::Range<usize>,
    errors: &mut Vec<Diagnostic>,
) -> Option<EnvironmentSpec> {
    match (wire.python, wire.rust) {
        (Some(_), Some(rust)) => {
            errors.push(Diagnostic::new(
                "`infra.environment` declares both `python` and `rust`: choose one",
                Some(rust.span()),
            ));
            None
        }
        (None, None) => {
            errors.push(
                Diagnostic::new("`infra.environment` is empty", Some(span))
                    .with_help("declare `python = { requirements = \"requirements.txt\" }` or `rust = { lockfile = \"Cargo.lock\" }`"),
            );
            None
        }
        (Some(python), None) => {
            let python = python.into_inner();
            let requirements = path(
                "infra.environment.python.requirements",
                &python.requirements,
                errors,
            )?;
            let venv = match &python.venv {
                Some(v) => path("infra.environment.python.venv", v, errors)?,
                None => PathBuf::from(".venv"),
            };
            Some(EnvironmentSpec::Python {
                requirements,
                venv,
                python: python.python.unwrap_or_else(|| "python3".to_owned()),
            })
        }
        (None, Some(rust)) => {
            let rust = rust.into_inner();
            let lockfile = match &rust.lockfile {
                Some(l) => path("infra.environment.rust.lockfile", l, errors)?,
                None => PathBuf::from("Cargo.lock"),
            };
            Some(EnvironmentSpec::Rust {
                lockfile,
                build_args: rust.build_args,
            })
        }
    }
}

fn port(what: &str, value: &Spanned<i64>, errors: &mut Vec<Diagnostic>) -> Option<u16> {
    match u16::try_from(*value.get_ref()) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            errors.push(Diagnostic::new(
                format!(
                    "`{what}` must be a port between 1 and 65535, found {}",
                    value.get_ref()
                ),
                Some(value.span()),
            ));
            None
        }
    }
}

fn compile_service(
    name: &str,
    service: Spanned<ServiceWire>,
    errors: &mut Vec<Diagnostic>,
) -> Option<ServiceSpec> {
    let span = service.span();
    let wire = service.into_inner();
    let before = errors.len();
    let what = |field: &str| format!("infra.services.{name}.{field}");
    if wire.command.get_ref().is_empty() || wire.command.get_ref()[0].trim().is_empty() {
        errors.push(
            Diagnostic::new(
                format!("`{}` must name a program", what("command")),
                Some(wire.command.span()),
            )
            .with_help(
                "write the program and its arguments, like [\".venv/bin/python\", \"-m\", \"app\"]",
            ),
        );
    }
    for word in wire.command.get_ref() {
        check_placeholders(word, wire.command.span(), errors);
    }
    let port_value = match &wire.port {
        Some(p) => port(&what("port"), p, errors).unwrap_or(8080),
        None => 8080,
    };
    let host_port = wire
        .host_port
        .as_ref()
        .and_then(|p| port(&what("host-port"), p, errors));
    let (replicas, replica_range) =
        compile_replicas(&what("replicas"), wire.replicas.as_ref(), errors);
    let most = replica_range.as_ref().map_or(replicas, |r| r.max);
    if host_port.is_some() && most > 1 {
        errors.push(
            Diagnostic::new(
                format!(
                    "`{}` pins one port, but the service has {} replicas",
                    what("host-port"),
                    if replica_range.is_some() {
                        format!("up to {most}")
                    } else {
                        most.to_string()
                    }
                ),
                wire.host_port.as_ref().map(|p| p.span()),
            )
            .with_help("drop `host-port` (each replica then gets its own port) or use one replica"),
        );
    }
    let health = match &wire.health {
        None => {
            errors.push(
                Diagnostic::new(
                    format!("service `{name}` has no health check"),
                    Some(span.clone()),
                )
                .with_help("add `health = { path = \"/health\" }`: a deploy waits for it"),
            );
            None
        }
        Some(h) => {
            let h = h.get_ref();
            if !h.path.get_ref().starts_with('/') {
                errors.push(Diagnostic::new(
                    format!(
                        "`{}` must start with `/`, found `{}`",
                        what("health.path"),
                        h.path.get_ref()
                    ),
                    Some(h.path.span()),
                ));
            }
            Some(HealthSpec {
                path: h.path.get_ref().clone(),
                interval: duration(
                    &what("health.interval"),
                    h.interval.as_ref(),
                    DEFAULT_INTERVAL,
                    errors,
                ),
                timeout: duration(
                    &what("health.timeout"),
                    h.timeout.as_ref(),
                    DEFAULT_TIMEOUT,
                    errors,
                ),
                deadline: duration(
                    &what("health.deadline"),
                    h.deadline.as_ref(),
                    DEFAULT_DEADLINE,
                    errors,
                ),
            })
        }
    };
    let mut resources = Resources::default();
    if let Some(r) = &wire.resources {
        if let Some(cpus) = &r.cpus {
            if !(cpus.get_ref().is_finite() && *cpus.get_ref() > 0.0 && *cpus.get_ref() <= 1024.0) {
                errors.push(Diagnostic::new(
                    format!(
                        "`{}` must be a positive number of CPUs, found {}",
                        what("resources.cpus"),
                        cpus.get_ref()
                    ),
                    Some(cpus.span()),
                ));
            }
            resources.cpus = Some(*cpus.get_ref());
        }
        if let Some(memory) = &r.memory {
            match parse_bytes(memory.get_ref()) {
                Ok(b) if b >= 6 * 1024 * 1024 => resources.memory = Some(b),
                Ok(_) => errors.push(Diagnostic::new(
                    format!(
                        "`{}` must be at least 6MiB (Docker's minimum)",
                        what("resources.memory")
                    ),
                    Some(memory.span()),
                )),
                Err(e) => errors.push(Diagnostic::new(e, Some(memory.span()))),
            }
        }
    }
    let mut env = BTreeMap::new();
    for (key, value) in wire.env {
        let key_span = key.span();
        let key = key.into_inner();
        if !is_env_name(&key) {
            errors.push(Diagnostic::new(
                format!("invalid environment variable name `{key}`"),
                Some(key_span),
            ));
            continue;
        }
        let value_span = value.span();
        let value = match value.into_inner() {
            EnvWire::Literal(value) => {
                check_placeholders(&value, value_span, errors);
                EnvValue::Literal { value }
            }
            EnvWire::FromEnv(f) => {
                if !is_env_name(&f.from_env) {
                    errors.push(Diagnostic::new(
                        format!(
                            "invalid environment variable name `{}` in `from-env`",
                            f.from_env
                        ),
                        Some(value_span),
                    ));
                }
                EnvValue::FromEnv {
                    var: f.from_env,
                    secret: f.secret,
                }
            }
        };
        env.insert(key, value);
    }
    let model_dir = wire
        .model_dir
        .as_ref()
        .and_then(|m| path(&what("model-dir"), m, errors));
    let build = wire.build.as_ref().and_then(|b| {
        let b_span = b.span();
        let b = b.get_ref();
        match (&b.binary, &b.dockerfile, &b.image) {
            (Some(binary), None, None) => {
                let binary = path(&what("build.binary"), binary, errors)?;
                let files = b
                    .files
                    .iter()
                    .filter_map(|f| path(&what("build.files"), f, errors))
                    .collect();
                Some(BuildSpec::Binary { binary, files })
            }
            (None, Some(dockerfile), None) => {
                let dockerfile = path(&what("build.dockerfile"), dockerfile, errors)?;
                let context = match &b.context {
                    Some(c) => path(&what("build.context"), c, errors)?,
                    None => PathBuf::from("."),
                };
                Some(BuildSpec::Dockerfile {
                    dockerfile,
                    context,
                })
            }
            (None, None, Some(image)) => Some(BuildSpec::Image {
                image: image.get_ref().clone(),
            }),
            _ => {
                errors.push(Diagnostic::new(
                    format!(
                        "`{}` needs exactly one of `binary`, `dockerfile` or `image`",
                        what("build")
                    ),
                    Some(b_span),
                ));
                None
            }
        }
    });
    let stop_grace = duration(
        &what("stop-grace"),
        wire.stop_grace.as_ref(),
        DEFAULT_GRACE,
        errors,
    );
    // Unlike the other durations, no drain at all is a valid choice.
    let drain = match wire.drain.as_ref() {
        Some(d) if humantime::parse_duration(d.get_ref()).is_ok_and(|d| d.is_zero()) => {
            Duration::ZERO
        }
        d => duration(&what("drain"), d, DEFAULT_DRAIN, errors),
    };
    let user = wire
        .user
        .map(|u| u.into_inner())
        .unwrap_or_else(|| DEFAULT_USER.to_owned());
    if errors.len() > before {
        return None;
    }
    Some(ServiceSpec {
        name: name.to_owned(),
        command: wire.command.into_inner(),
        port: port_value,
        host_port,
        replicas,
        replica_range,
        restart: wire.restart.unwrap_or_default(),
        health: health?,
        resources,
        env,
        model_dir,
        build,
        read_only: wire.read_only.unwrap_or(true),
        user,
        stop_grace,
        drain,
        host_network: false,
        engine_socket: false,
        state_dir: None,
    })
}

/// `replicas`: a fixed count (0 to [`MAX_REPLICAS`], default 1), or a
/// range whose count a controller owns (1 <= min <= max <= [`MAX_REPLICAS`];
/// a new instance starts at `min`). Scaling to zero is a fixed `0`: a range
/// starting at 0 would need `plan` to tell "scaled to zero" from "never
/// created", which it does not yet.
fn compile_replicas(
    what: &str,
    value: Option<&Spanned<ReplicasWire>>,
    errors: &mut Vec<Diagnostic>,
) -> (u32, Option<ReplicaRange>) {
    let Some(value) = value else {
        return (1, None);
    };
    let span = value.span();
    match value.get_ref() {
        ReplicasWire::Count(n) if (0..=MAX_REPLICAS).contains(n) => (*n as u32, None),
        ReplicasWire::Count(n) => {
            errors.push(Diagnostic::new(
                format!("`{what}` must be between 0 and {MAX_REPLICAS}, found {n}"),
                Some(span),
            ));
            (1, None)
        }
        ReplicasWire::Range(RangeWire { min, max, owner }) => {
            let before = errors.len();
            if !(1..=MAX_REPLICAS).contains(min) {
                errors.push(
                    Diagnostic::new(
                        format!("`{what}.min` must be between 1 and {MAX_REPLICAS}, found {min}"),
                        Some(span.clone()),
                    )
                    .with_help("a range cannot start at 0 yet; write `replicas = 0` to run none"),
                );
            }
            if !(1..=MAX_REPLICAS).contains(max) {
                errors.push(Diagnostic::new(
                    format!("`{what}.max` must be between 1 and {MAX_REPLICAS}, found {max}"),
                    Some(span.clone()),
                ));
            } else if max < min {
                errors.push(Diagnostic::new(
                    format!("`{what}.max` ({max}) is less than `{what}.min` ({min})"),
                    Some(span.clone()),
                ));
            }
            let owner = owner.clone().unwrap_or_else(|| AUTOSCALER.to_owned());
            if !is_name(&owner) {
                errors.push(
                    Diagnostic::new(
                        format!("invalid controller name `{owner}` in `{what}.owner`"),
                        Some(span),
                    )
                    .with_help("use lowercase letters, digits and `-`, starting with a letter (at most 40)"),
                );
            }
            if errors.len() > before {
                return (1, None);
            }
            let (min, max) = (*min as u32, *max as u32);
            (min, Some(ReplicaRange { min, max, owner }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("256MiB").unwrap(), 256 * 1024 * 1024);
        assert_eq!(parse_bytes("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
    }
}
