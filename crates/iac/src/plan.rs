//! Desired state against actual state: what an apply would do.
//!
//! For each declared service the plan keeps the instance that already runs
//! its revision, healthy, at the declared scale, and otherwise proposes the
//! smallest change: create, replace (new revision: start new, wait healthy,
//! stop old), scale, repair (drift: a replica or supervisor killed, a
//! container stopped behind our back — a fresh instance replaces it), or
//! remove (a service no longer declared, a leftover instance).
//!
//! What a controller owns is not the plan's to change: an instance a
//! controller started ([`Instance::owner`]) and a replica count within a
//! declared range ([`ServiceSpec::replica_range`]) are listed in
//! [`Plan::owned`] and left alone; a count outside the range is scaled back
//! to its nearest bound.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::provider::{Desired, Instance, ModelRef, ProviderError};
use crate::spec::{BuildSpec, EnvValue, ServiceSpec};

/// One change an apply makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Start the service; nothing runs.
    Create {
        /// The service.
        service: String,
        /// Its revision.
        revision: String,
        /// Replicas.
        replicas: u32,
        /// The model version it will serve.
        model_version: Option<String>,
    },
    /// A new revision: start it, wait until healthy, then stop the old one.
    Replace {
        /// The service.
        service: String,
        /// The running instance.
        instance: String,
        /// Its revision.
        from: String,
        /// The new revision.
        to: String,
        /// What changed.
        why: Vec<String>,
    },
    /// Same revision, another replica count.
    Scale {
        /// The service.
        service: String,
        /// The instance.
        instance: String,
        /// Replicas now.
        from: u32,
        /// Replicas wanted.
        to: u32,
    },
    /// Drift: the instance is not what was applied; a fresh one replaces it.
    Repair {
        /// The service.
        service: String,
        /// The instance.
        instance: String,
        /// What is wrong.
        drift: Vec<String>,
    },
    /// Stop and remove an instance.
    Remove {
        /// The service.
        service: String,
        /// The instance.
        instance: String,
        /// Why.
        why: String,
    },
}

impl Action {
    /// The service the action is about.
    pub fn service(&self) -> &str {
        match self {
            Action::Create { service, .. }
            | Action::Replace { service, .. }
            | Action::Scale { service, .. }
            | Action::Repair { service, .. }
            | Action::Remove { service, .. } => service,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Create {
                service,
                revision,
                replicas,
                model_version,
            } => {
                write!(
                    f,
                    "+ create  {service} (revision {}, {replicas} replica{}",
                    short(revision),
                    plural(*replicas)
                )?;
                if let Some(v) = model_version {
                    write!(f, ", model {v}")?;
                }
                write!(f, ")")
            }
            Action::Replace {
                service,
                from,
                to,
                why,
                ..
            } => write!(
                f,
                "~ replace {service} (revision {} -> {}: {})",
                short(from),
                short(to),
                why.join("; ")
            ),
            Action::Scale {
                service, from, to, ..
            } => write!(f, "~ scale   {service} ({from} -> {to} replicas)"),
            Action::Repair { service, drift, .. } => {
                write!(f, "! repair  {service} (drift: {})", drift.join("; "))
            }
            Action::Remove {
                service,
                instance,
                why,
            } => write!(f, "- remove  {service} (instance {instance}: {why})"),
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn short(revision: &str) -> &str {
    &revision[..revision.len().min(12)]
}

/// Something a controller owns, which `plan` shows and leaves alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "owns", rename_all = "kebab-case")]
pub enum Owned {
    /// A whole instance the controller started (a canary): never removed,
    /// repaired, replaced or scaled by `apply`.
    Instance {
        /// The service.
        service: String,
        /// The instance.
        instance: String,
        /// The controller.
        owner: String,
        /// Its revision.
        revision: String,
        /// The model version it serves.
        model_version: Option<String>,
        /// Its replica count.
        replicas: u32,
        /// Whether the service is still declared.
        declared: bool,
    },
    /// The replica count of a declared service's instance, within the
    /// declared range: the controller moves it, `apply` does not.
    Replicas {
        /// The service.
        service: String,
        /// The instance.
        instance: String,
        /// The controller.
        owner: String,
        /// The count now.
        replicas: u32,
        /// The declared range.
        min: u32,
        /// The declared range.
        max: u32,
    },
}

impl fmt::Display for Owned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owned::Instance {
                service,
                instance,
                owner,
                revision,
                model_version,
                replicas,
                declared,
            } => {
                write!(
                    f,
                    "= {service}/{instance} owned by {owner} (revision {}, {replicas} replica{}",
                    short(revision),
                    plural(*replicas)
                )?;
                if let Some(v) = model_version {
                    write!(f, ", model {v}")?;
                }
                if !declared {
                    write!(f, "; the service is no longer declared")?;
                }
                write!(f, ")")
            }
            Owned::Replicas {
                service,
                instance,
                owner,
                replicas,
                min,
                max,
            } => write!(
                f,
                "= {service}/{instance} replicas owned by {owner} ({replicas}, within {min}..={max})"
            ),
        }
    }
}

/// What an apply would do, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Plan {
    /// The changes.
    pub actions: Vec<Action>,
    /// Services that already match.
    pub unchanged: Vec<String>,
    /// What controllers own, left alone (not changes).
    pub owned: Vec<Owned>,
}

impl Plan {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// What the last apply recorded about a service, to explain a replace.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The definition it applied.
    pub spec: Option<ServiceSpec>,
    /// The model version.
    pub model_version: Option<String>,
    /// The digests of the values it read from the caller's environment
    /// ([`env_digests`]).
    pub env_digests: BTreeMap<String, String>,
}

/// The replica count `apply` wants for an instance of `spec` that has
/// `current` replicas: the fixed count, or, with a range, the current count
/// brought into the range (unchanged when already in it).
pub fn wanted_replicas(spec: &ServiceSpec, current: u32) -> u32 {
    let (min, max) = spec.replica_bounds();
    // Not `clamp`: a range built by hand (the fields are public) may have
    // min > max, and that must not panic; the manifest refuses it.
    current.max(min).min(max.max(min))
}

fn owned_instance(instance: &Instance, owner: &str, declared: bool) -> Owned {
    Owned::Instance {
        service: instance.service.clone(),
        instance: instance.id.clone(),
        owner: owner.to_owned(),
        revision: instance.revision.clone(),
        model_version: instance.model_version.clone(),
        replicas: instance.desired_replicas,
        declared,
    }
}

/// Diffs the desired services against the observed instances. Instances a
/// controller owns ([`Instance::owner`]) are listed in [`Plan::owned`] and
/// never changed; a replica count within a declared range is the range
/// owner's and is not scaled.
pub fn plan(
    desired: &[Desired],
    observed: &[Instance],
    recorded: &BTreeMap<String, Recorded>,
) -> Plan {
    let mut plan = Plan::default();
    let mut by_service: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for instance in observed {
        match &instance.owner {
            Some(owner) => {
                let declared = desired.iter().any(|d| d.spec.name == instance.service);
                plan.owned.push(owned_instance(instance, owner, declared));
            }
            None => by_service
                .entry(&instance.service)
                .or_default()
                .push(instance),
        }
    }
    for d in desired {
        let name = d.spec.name.as_str();
        let mut instances = by_service.remove(name).unwrap_or_default();
        // Keep the best: right revision and healthy, then right revision,
        // then healthy, then any.
        instances.sort_by_key(|i| (i.revision != d.revision, !i.is_healthy()));
        let mut rest = instances.into_iter();
        match rest.next() {
            None if d.spec.replicas == 0 => plan.unchanged.push(name.to_owned()),
            None => plan.actions.push(Action::Create {
                service: name.to_owned(),
                revision: d.revision.clone(),
                replicas: d.spec.replicas,
                model_version: d.model.as_ref().map(|m| m.version.clone()),
            }),
            Some(current) if current.revision != d.revision => plan.actions.push(Action::Replace {
                service: name.to_owned(),
                instance: current.id.clone(),
                from: current.revision.clone(),
                to: d.revision.clone(),
                why: why_replace(d, current, recorded.get(name)),
            }),
            Some(current) => {
                let want = wanted_replicas(&d.spec, current.desired_replicas);
                let broken = !current.problems.is_empty()
                    || current.replicas.iter().any(|r| {
                        r.index < want.min(current.desired_replicas)
                            && !(r.state == crate::ReplicaState::Running && r.healthy)
                    })
                    || current.replicas.len() < current.desired_replicas.min(want) as usize;
                if broken {
                    plan.actions.push(Action::Repair {
                        service: name.to_owned(),
                        instance: current.id.clone(),
                        drift: current.drift(),
                    })
                } else if current.desired_replicas != want {
                    plan.actions.push(Action::Scale {
                        service: name.to_owned(),
                        instance: current.id.clone(),
                        from: current.desired_replicas,
                        to: want,
                    })
                } else {
                    plan.unchanged.push(name.to_owned());
                    if let Some(range) = &d.spec.replica_range {
                        plan.owned.push(Owned::Replicas {
                            service: name.to_owned(),
                            instance: current.id.clone(),
                            owner: range.owner.clone(),
                            replicas: want,
                            min: range.min,
                            max: range.max,
                        });
                    }
                }
            }
        }
        for extra in rest {
            plan.actions.push(Action::Remove {
                service: name.to_owned(),
                instance: extra.id.clone(),
                why: "a second instance (left by an interrupted apply)".to_owned(),
            });
        }
    }
    for (service, instances) in by_service {
        for instance in instances {
            plan.actions.push(Action::Remove {
                service: service.to_owned(),
                instance: instance.id.clone(),
                why: "the service is no longer declared".to_owned(),
            });
        }
    }
    plan
}

fn why_replace(d: &Desired, current: &Instance, recorded: Option<&Recorded>) -> Vec<String> {
    let mut why = Vec::new();
    let new_version = d.model.as_ref().map(|m| m.version.as_str());
    if current.model_version.as_deref() != new_version {
        why.push(format!(
            "model {} -> {}",
            current.model_version.as_deref().unwrap_or("none"),
            new_version.unwrap_or("none")
        ));
    }
    if let Some(old) = recorded.and_then(|r| r.spec.as_ref()) {
        let (a, b) = (
            serde_json::to_value(old).unwrap_or_default(),
            serde_json::to_value(&d.spec).unwrap_or_default(),
        );
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            let mut fields: Vec<&String> = a.keys().chain(b.keys()).collect();
            fields.sort();
            fields.dedup();
            for field in fields {
                if !["replicas", "replica_range", "drain"].contains(&field.as_str())
                    && a.get(field) != b.get(field)
                {
                    why.push(format!("`{}` changed", field.replace('_', "-")));
                }
            }
        }
    }
    if let Some(old) = recorded {
        let mut vars: Vec<&String> = old.env_digests.keys().chain(d.env_digests.keys()).collect();
        vars.sort();
        vars.dedup();
        for var in vars {
            if old.env_digests.get(var) != d.env_digests.get(var) {
                why.push(format!("the value of `{var}` in the environment changed"));
            }
        }
    }
    if why.is_empty() {
        why.push(
            if d.model.is_none() {
                "the program, the model directory or a file the service names in it, or the definition changed"
            } else {
                "the program or the definition changed"
            }
            .to_owned(),
        );
    }
    why
}

/// The revision of a service: a digest of its definition, the model
/// version (without one: the model directory's path and the files the
/// service names in it), the digests of the values it reads from the caller's
/// environment (see [`env_digests`]), and the bytes of the program or
/// binary it runs.
pub fn revision(
    spec: &ServiceSpec,
    model: Option<&ModelRef>,
    root: &Path,
    env_digests: &BTreeMap<String, String>,
) -> String {
    let mut hasher = blake3::Hasher::new();
    // The replica count (fixed or a range) is scale and the drain a way of
    // stopping, not identity.
    let shape = ServiceSpec {
        replicas: 0,
        replica_range: None,
        drain: Duration::ZERO,
        ..spec.clone()
    };
    hasher.update(serde_json::to_string(&shape).unwrap_or_default().as_bytes());
    hasher.update(b"\0model\0");
    let mut files = Vec::new();
    match model {
        // A version is its content: its files are verified against it.
        Some(m) => {
            hasher.update(m.version.as_bytes());
        }
        // No version: the directory `{model-dir}` means (the path every
        // provider uses: another directory is another revision) and the
        // files the service names in it (new bytes in `{model-dir}/model.json`
        // are a new revision). Other files in it are not read: the project
        // itself is the default, and its state changes as services run.
        None => {
            let dir = crate::provider::model_dir(root, spec, None);
            hasher.update(b"dir\0");
            hasher.update(dir.to_string_lossy().as_bytes());
            files.extend(
                crate::provider::named_model_files(spec)
                    .into_iter()
                    .map(|f| dir.join(f)),
            );
        }
    }
    for (var, digest) in env_digests {
        hasher.update(b"\0env\0");
        hasher.update(var.as_bytes());
        hasher.update(b"=");
        hasher.update(digest.as_bytes());
    }
    if spec.command[0].contains('/') {
        files.push(root.join(&spec.command[0]));
    }
    match &spec.build {
        Some(BuildSpec::Binary {
            binary,
            files: extra,
        }) => {
            files.push(root.join(binary));
            files.extend(extra.iter().map(|f| root.join(f)));
        }
        Some(BuildSpec::Dockerfile { dockerfile, .. }) => files.push(root.join(dockerfile)),
        _ => {}
    }
    for file in files {
        hasher.update(b"\0file\0");
        hasher.update(file.to_string_lossy().as_bytes());
        if file.is_file()
            && let Ok(mut f) = std::fs::File::open(&file)
        {
            let _ = std::io::copy(&mut f, &mut hasher);
        }
    }
    hasher.finalize().to_hex()[..16].to_owned()
}

/// The desired state of a service: its revision and the values it reads
/// from `caller_env` (missing ones are an error naming the variable).
pub fn desired(
    spec: &ServiceSpec,
    model: Option<ModelRef>,
    root: &Path,
    caller_env: impl Fn(&str) -> Option<String>,
) -> Result<Desired, ProviderError> {
    let mut from_env = BTreeMap::new();
    for (key, value) in &spec.env {
        if let EnvValue::FromEnv { var, secret } = value {
            match caller_env(var) {
                Some(v) => {
                    from_env.insert(var.clone(), v);
                }
                None => {
                    return Err(ProviderError::Invalid {
                        service: spec.name.clone(),
                        detail: format!(
                            "`{key}` reads {}`{var}` from the environment, which is not set; export it before applying",
                            if *secret { "the secret " } else { "" }
                        ),
                    });
                }
            }
        }
    }
    let env_digests = env_digests(root, &from_env).map_err(|e| ProviderError::Invalid {
        service: spec.name.clone(),
        detail: e,
    })?;
    Ok(Desired {
        revision: revision(spec, model.as_ref(), root, &env_digests),
        spec: spec.clone(),
        model,
        from_env,
        env_digests,
        owner: None,
    })
}

/// Where [`env_digests`] keeps its key, under the project.
pub const REVISION_KEY: &str = ".mlops/infra/revision.key";

/// A digest of each value read from the caller's environment, keyed with
/// the project's random key ([`REVISION_KEY`]): it changes when the value
/// does — rotating a secret makes a new revision, so `apply` rolls the
/// service — and tells nothing about the value to anyone without the key,
/// so it may be kept in the ledger and in labels.
pub fn env_digests(
    root: &Path,
    from_env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    if from_env.is_empty() {
        return Ok(BTreeMap::new());
    }
    let path = root.join(REVISION_KEY);
    let key = revision_key(&path).map_err(|e| {
        format!(
            "cannot read or make the key that digests values from the environment, {}: {e}",
            path.display()
        )
    })?;
    Ok(from_env
        .iter()
        .map(|(var, value)| {
            let digest = blake3::keyed_hash(&key, value.as_bytes());
            (var.clone(), digest.to_hex()[..16].to_owned())
        })
        .collect())
}

fn read_revision_key(path: &Path) -> std::io::Result<[u8; 32]> {
    let bytes = std::fs::read(path)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it holds {} bytes, not a 32-byte key; delete it to make a new one (services reading values from the environment are then replaced once)",
                bytes.len()
            ),
        )
    })
}

/// The 32-byte key at `path`, made from the system's random source on first
/// use (owner-only permissions; when two processes race, the first one
/// linked in place wins and both use it).
fn revision_key(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;

    let read = read_revision_key;
    match read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&key)?;
            f.sync_all()
        })
        .and_then(|()| match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        });
    let _ = std::fs::remove_file(&tmp);
    written?;
    read(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Replica, ReplicaState};
    use crate::spec::{InfraSpec, ProviderKind};

    fn desired(replicas: &str) -> Desired {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mlops.toml"),
            format!(
                "[project]\nname = \"p\"\n\n[iac.steps.noop]\nrun = \"true\"\n\n[infra.services.web]\ncommand = [\"srv\"]\nreplicas = {replicas}\nhealth = {{ path = \"/\" }}\n"
            ),
        )
        .unwrap();
        let spec = InfraSpec::load(dir.path()).unwrap().services["web"].clone();
        let mut d = super::desired(&spec, None, dir.path(), |_| None).unwrap();
        d.revision = "rev".into();
        d
    }

    /// A healthy instance of `web` with `replicas` replicas.
    fn instance(id: &str, service: &str, replicas: u32, owner: Option<&str>) -> Instance {
        Instance {
            id: id.into(),
            provider: ProviderKind::Local,
            service: service.into(),
            revision: "rev".into(),
            model_version: None,
            desired_replicas: replicas,
            replicas: (0..replicas)
                .map(|index| Replica {
                    index,
                    state: ReplicaState::Running,
                    healthy: true,
                    health_error: None,
                    endpoint: None,
                    handle: String::new(),
                    restarts: 0,
                    last_exit: None,
                })
                .collect(),
            problems: Vec::new(),
            owner: owner.map(str::to_owned),
        }
    }

    /// The plan of `web` declared with `replicas` against `observed`, as
    /// its action and owned lines.
    fn check(replicas: &str, observed: &[Instance], expect: &[&str]) {
        let plan = plan(&[desired(replicas)], observed, &BTreeMap::new());
        let got: Vec<String> = plan
            .actions
            .iter()
            .map(ToString::to_string)
            .chain(plan.owned.iter().map(ToString::to_string))
            .collect();
        assert_eq!(got, expect, "replicas = {replicas}, observed {observed:?}");
    }

    #[test]
    fn what_controllers_own_is_left_alone() {
        let canary = instance("c", "web", 1, Some("release"));
        let mut broken = canary.clone();
        broken.problems.push("its supervisor is gone".into());
        broken.revision = "old".into();
        check(
            "2",
            &[instance("s", "web", 2, None), canary.clone()],
            &["= web/c owned by release (revision rev, 1 replica)"],
        );
        check(
            "2",
            &[instance("s", "web", 2, None), broken],
            &["= web/c owned by release (revision old, 1 replica)"],
        );
        check(
            "2",
            std::slice::from_ref(&canary),
            &[
                "+ create  web (revision rev, 2 replicas)",
                "= web/c owned by release (revision rev, 1 replica)",
            ],
        );
        check(
            "2",
            &[
                instance("s", "web", 2, None),
                instance("o", "api", 1, Some("release")),
            ],
            &[
                "= api/o owned by release (revision rev, 1 replica; the service is no longer declared)",
            ],
        );
    }

    #[test]
    fn a_count_within_its_range_is_the_owners() {
        let at = |n| [instance("s", "web", n, None)];
        check(
            "{ min = 1, max = 3 }",
            &at(2),
            &["= web/s replicas owned by autoscaler (2, within 1..=3)"],
        );
        check(
            "{ min = 1, max = 3, owner = \"hpa\" }",
            &at(3),
            &["= web/s replicas owned by hpa (3, within 1..=3)"],
        );
        check(
            "{ min = 3, max = 4 }",
            &at(2),
            &["~ scale   web (2 -> 3 replicas)"],
        );
        check(
            "{ min = 1, max = 3 }",
            &at(5),
            &["~ scale   web (5 -> 3 replicas)"],
        );
        check(
            "{ min = 2, max = 3 }",
            &[],
            &["+ create  web (revision rev, 2 replicas)"],
        );
        check("2", &at(3), &["~ scale   web (3 -> 2 replicas)"]);
        check("2", &at(2), &[]);
    }

    /// Without a model version, the model directory's path and the bytes of
    /// the files the service names in it are the revision's; other files in
    /// it are not. A version stands for its files.
    #[test]
    fn an_unversioned_model_dir_enters_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["a", "b"] {
            std::fs::create_dir(root.join(sub)).unwrap();
            std::fs::write(root.join(sub).join("model.json"), "{}").unwrap();
        }
        std::fs::write(
            root.join("mlops.toml"),
            "[project]\nname = \"p\"\n\n[iac.steps.noop]\nrun = \"true\"\n\n[infra.services.web]\ncommand = [\"srv\", \"--model={model-dir}/model.json\"]\nmodel-dir = \"a\"\nhealth = { path = \"/\" }\n",
        )
        .unwrap();
        let spec = InfraSpec::load(root).unwrap().services["web"].clone();
        let none = BTreeMap::new();
        let rev = |spec: &ServiceSpec| revision(spec, None, root, &none);
        let first = rev(&spec);
        std::fs::write(root.join("a/other.bin"), "not named").unwrap();
        assert_eq!(rev(&spec), first, "an unnamed file");
        std::fs::write(root.join("a/model.json"), "{ }").unwrap();
        let second = rev(&spec);
        assert_ne!(second, first, "the named file");
        // The same files elsewhere: another directory, another revision.
        std::fs::write(root.join("b/model.json"), "{ }").unwrap();
        let moved = ServiceSpec {
            model_dir: Some("b".into()),
            ..spec.clone()
        };
        assert_ne!(rev(&moved), second, "another directory");
        // A link is the directory it points to.
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        let linked = ServiceSpec {
            model_dir: Some("link".into()),
            ..spec.clone()
        };
        let through_link = ServiceSpec {
            model_dir: Some("a".into()),
            ..linked.clone()
        };
        assert_eq!(
            crate::provider::model_dir(root, &linked, None),
            crate::provider::model_dir(root, &through_link, None)
        );
        // A version: its name, not the directory's files.
        let model = ModelRef {
            version: "m:1".into(),
            dir: root.join("a"),
        };
        let versioned = revision(&spec, Some(&model), root, &none);
        std::fs::write(root.join("a/model.json"), "{  }").unwrap();
        assert_eq!(revision(&spec, Some(&model), root, &none), versioned);
    }

    #[test]
    fn named_model_files_are_read_from_command_and_env() {
        let mut spec = desired("1").spec;
        spec.command = [
            "srv",
            "--model={model-dir}/model.json",
            "{model-dir}/a/b.bin,{model-dir}/c.txt",
            "{model-dir}/../escape",
            "{model-dir}",
            "{model-dir}/shard-{replica}.bin",
        ]
        .map(String::from)
        .to_vec();
        spec.env.insert(
            "VOCAB".into(),
            EnvValue::Literal {
                value: "{model-dir}/vocab.txt".into(),
            },
        );
        let files: Vec<String> = crate::provider::named_model_files(&spec)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(files, ["a/b.bin", "c.txt", "model.json", "vocab.txt"]);
    }
}
