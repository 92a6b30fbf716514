//! The built-in stage-1 step kinds: `environment` (the declared environment
//! builds from pinned inputs) and `infra-apply` (the declared services
//! converge, and the plan after the apply is empty).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mlops_core::manifest::Diagnostic;
use mlops_core::{
    CommandEnd, EvidenceKind, KindParams, KindRegistry, RegistryError, Stage, StepAction,
    StepContext, StepFailure, StepKind,
};
use serde::{Deserialize, Serialize};

use crate::apply::{self, ApplyContext};
use crate::local::{LocalProvider, SupervisorCommand};
use crate::provider::{Provider, ProviderError, Scope};
use crate::spec::{EnvironmentSpec, InfraSpec, ProviderKind};

/// How stage-1 and stage-3 kinds reach providers: an option the embedding
/// program sets on the registry ([`KindRegistry::set_option`]); without
/// it, [`IacOptions::default`].
#[derive(Debug, Clone)]
pub struct IacOptions {
    /// How the local provider starts supervisors.
    pub supervisor: SupervisorCommand,
    /// Overrides the manifest's provider for every step (`--provider`).
    pub provider: Option<ProviderKind>,
}

impl Default for IacOptions {
    /// Supervisors are `mlops-supervise`, from beside the running program
    /// (or the directory above it, where cargo puts test binaries' siblings)
    /// or else from `PATH`; the manifest chooses the provider.
    fn default() -> Self {
        let exe = std::env::current_exe().ok();
        let program = exe
            .iter()
            .flat_map(|e| e.ancestors().skip(1).take(2))
            .map(|dir| dir.join("mlops-supervise"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| "mlops-supervise".into());
        IacOptions {
            supervisor: SupervisorCommand {
                program,
                args: Vec::new(),
            },
            provider: None,
        }
    }
}

/// The evidence kinds stage 1 records.
pub mod evidence {
    /// `environment`: the environment built from pinned inputs.
    pub const ENVIRONMENT: &str = "environment";
    /// `infra-apply`: the services converged, the plan after empty.
    pub const INFRA_APPLY: &str = "infra-apply";
}

/// Registers stage 1: the `[infra]` section, the kinds `environment` and
/// `infra-apply`, and their evidence.
pub fn register(registry: &mut KindRegistry) -> Result<(), RegistryError> {
    registry.register_section(crate::spec::section())?;
    registry.register(Arc::new(EnvironmentKind))?;
    registry.register(Arc::new(InfraApplyKind))?;
    for name in [evidence::ENVIRONMENT, evidence::INFRA_APPLY] {
        registry.register_evidence(EvidenceKind {
            name,
            stage: Stage::Iac,
            summarize,
        })?;
    }
    Ok(())
}

/// A provider of `kind`.
pub async fn provider_for(
    kind: ProviderKind,
    supervisor: &SupervisorCommand,
) -> Result<Box<dyn Provider>, ProviderError> {
    match kind {
        ProviderKind::Local => Ok(Box::new(LocalProvider::new(supervisor.clone()))),
        ProviderKind::Docker => Ok(Box::new(crate::docker::DockerProvider::connect().await?)),
    }
}

/// Reads a step kind's `provider` parameter.
pub fn provider_param(
    value: Option<&toml::Spanned<String>>,
) -> Result<Option<ProviderKind>, Diagnostic> {
    value
        .map(|p| {
            p.get_ref()
                .parse::<ProviderKind>()
                .map_err(|e| Diagnostic::new(e, Some(p.span())))
        })
        .transpose()
}

/// What a step that acts on `[infra]` knows of it, fixed when the manifest
/// was compiled: the compiled section, the project's name, the provider in
/// effect and the registry's [`IacOptions`]. Nothing is read again at run
/// time.
#[derive(Debug, Clone)]
pub struct StepInfra {
    /// `[infra]`, compiled.
    pub spec: Arc<InfraSpec>,
    /// The project's name (labels, instance names).
    pub project: String,
    /// The provider the step acts through: the run's `--provider`, else
    /// the step's `provider`, else `[infra] provider`.
    pub provider: ProviderKind,
    /// How providers are reached.
    pub options: Arc<IacOptions>,
}

impl StepInfra {
    /// Reads `[infra]` for a kind being compiled: `parts` are the parts the
    /// step depends on (`&["services", "iris"]`). They join its
    /// fingerprint with `[project] name` and the provider in effect (so a
    /// result recorded through one provider never stands for another).
    /// Without a compiled `[infra]` the kind cannot compile: when the
    /// section failed, its errors are reported already and this adds none.
    pub fn read(
        params: &KindParams<'_>,
        parts: &[&[&str]],
        step_provider: Option<ProviderKind>,
    ) -> Result<StepInfra, Vec<Diagnostic>> {
        let mut spec = None;
        for part in parts {
            spec = params.section::<InfraSpec>(crate::spec::SECTION, part);
        }
        let spec = match spec.or_else(|| params.section::<InfraSpec>(crate::spec::SECTION, &[])) {
            Some(spec) => spec,
            None if params.section_failed(crate::spec::SECTION) => return Err(Vec::new()),
            None => {
                return Err(vec![Diagnostic::new(
                    "this kind needs the `[infra]` section, which no registered stage crate provides",
                    Some(params.span()),
                )
                .with_help("register stage 1 (`mlops_iac::register`) before the kinds that use it")]);
            }
        };
        let options = params.option::<IacOptions>().unwrap_or_default();
        let provider = options.provider.or(step_provider).unwrap_or(spec.provider);
        params.depends_on_value("the provider in effect", &provider.to_string());
        // Values the services read from the environment when applied are
        // part of what the step does: a rotated secret must not leave a
        // cached deploy standing. Only keyed digests are kept (the key is
        // the one revisions use), never the values.
        let services: Vec<&str> = match parts {
            [] => Vec::new(),
            parts if parts.iter().any(|p| p == &["services"]) => {
                spec.services.keys().map(String::as_str).collect()
            }
            parts => parts
                .iter()
                .filter_map(|p| match p {
                    ["services", name] => Some(*name),
                    _ => None,
                })
                .collect(),
        };
        let mut vars = std::collections::BTreeSet::new();
        for service in services.iter().filter_map(|s| spec.services.get(*s)) {
            for value in service.env.values() {
                if let crate::spec::EnvValue::FromEnv { var, .. } = value {
                    vars.insert(var.clone());
                }
            }
        }
        if !vars.is_empty() {
            let set: BTreeMap<String, String> = vars
                .iter()
                .filter_map(|v| Some((v.clone(), std::env::var(v).ok()?)))
                .collect();
            // The key is made here if it is missing (the apply would make
            // it); a directory that cannot hold it gets no digests, so
            // nothing is reused.
            let digests = params
                .project_root()
                .and_then(|root| crate::plan::env_digests(root, &set).ok());
            for var in &vars {
                let state = match (&digests, set.contains_key(var)) {
                    (_, false) => "unset".to_owned(),
                    (Some(d), true) => d.get(var).cloned().unwrap_or_default(),
                    // No key to digest it with: never the same twice, so
                    // no result is reused.
                    (None, true) => {
                        format!("set, not digested ({:?})", std::time::SystemTime::now())
                    }
                };
                params
                    .depends_on_value(&format!("the value of `{var}` in the environment"), &state);
            }
        }
        Ok(StepInfra {
            spec,
            project: params.project_name().unwrap_or_default(),
            provider,
            options,
        })
    }

    /// [`StepInfra::read`] for a kind acting on one `service`, which
    /// `[infra.services]` must declare: problems go to `errors` (none of
    /// its own when `[infra]` failed to compile; an empty name is the
    /// kind's to report).
    pub fn read_service(
        params: &KindParams<'_>,
        service: &toml::Spanned<String>,
        step_provider: Option<ProviderKind>,
        errors: &mut Vec<Diagnostic>,
    ) -> Option<StepInfra> {
        let name = service.get_ref();
        match StepInfra::read(params, &[&["services", name.as_str()]], step_provider) {
            Err(more) => {
                errors.extend(more);
                None
            }
            Ok(infra) => {
                if !name.trim().is_empty() && !infra.spec.services.contains_key(name) {
                    errors.push(
                        Diagnostic::new(
                            format!("no service `{name}` in [infra.services]"),
                            Some(service.span()),
                        )
                        .with_help("declare how the model is served in `[infra.services.NAME]`"),
                    );
                }
                Some(infra)
            }
        }
    }

    /// Where a step acts: the provider in effect, connected, and the scope
    /// of `environment` in the project.
    pub async fn target(
        &self,
        ctx: &StepContext,
        environment: &str,
    ) -> Result<(ProviderKind, Box<dyn Provider>, Scope), ProviderError> {
        let provider = provider_for(self.provider, &self.options.supervisor).await?;
        let scope = Scope {
            project: self.project.clone(),
            environment: environment.to_owned(),
            root: ctx.project_root.clone(),
        };
        Ok((self.provider, provider, scope))
    }
}

/// One line about a piece of stage-1 evidence, for `pipeline status`.
fn summarize(evidence: &mlops_core::Evidence) -> Option<String> {
    let b = &evidence.body;
    Some(match evidence.kind.as_str() {
        evidence::ENVIRONMENT => format!(
            "{} environment {}",
            b["type"].as_str().unwrap_or("?"),
            if b["reused"] == true {
                "up to date"
            } else {
                "built"
            }
        ),
        evidence::INFRA_APPLY => {
            let actions = b["actions"].as_array().map_or(0, Vec::len);
            let services = b["instances"].as_array().map_or(0, Vec::len);
            format!(
                "{} `{}`: {actions} changes, {services} services healthy, plan empty",
                b["provider"].as_str().unwrap_or("?"),
                b["environment"].as_str().unwrap_or("?"),
            )
        }
        _ => return None,
    })
}

// ---- environment -------------------------------------------------------------

struct EnvironmentKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EnvironmentWire {}

#[derive(Serialize)]
struct EnvironmentEvidence {
    #[serde(rename = "type")]
    kind: &'static str,
    lockfile: String,
    lock_hash: String,
    reused: bool,
    packages: usize,
}

impl StepKind for EnvironmentKind {
    fn name(&self) -> &'static str {
        "environment"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Iac)
    }

    fn summary(&self) -> &'static str {
        "builds [infra.environment] from pinned inputs: a virtualenv with --require-hashes, or cargo build --locked"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let _: EnvironmentWire = params.deserialize().map_err(|d| vec![d])?;
        let environment = params
            .section::<InfraSpec>(crate::spec::SECTION, &["environment"])
            .and_then(|spec| spec.environment.clone());
        Ok(Arc::new(move |ctx: StepContext| {
            let environment = environment.clone();
            async move { build_environment(&ctx, environment).await }
        }))
    }
}

async fn build_environment(
    ctx: &StepContext,
    environment: Option<EnvironmentSpec>,
) -> Result<(), StepFailure> {
    let Some(env) = environment else {
        return Err(StepFailure::new(
            "no [infra.environment] in mlops.toml: declare `python = { requirements = \"requirements.txt\" }` or `rust = { lockfile = \"Cargo.lock\" }`",
        ));
    };
    match env {
        EnvironmentSpec::Python {
            requirements,
            venv,
            python,
        } => python_env(ctx, &requirements, &venv, &python).await,
        EnvironmentSpec::Rust {
            lockfile,
            build_args,
        } => rust_env(ctx, &lockfile, &build_args).await,
    }
}

/// What is wrong with a requirements file: lines not pinned with `==` or
/// without a `--hash`. Returns the number of requirements.
pub fn check_requirements(text: &str, name: &str) -> Result<usize, Vec<String>> {
    let mut problems = Vec::new();
    let mut count = 0;
    // Join continuation lines, remembering where each requirement starts.
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or("").trim_end();
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        let continued = line.ends_with('\\');
        acc.push_str(line.trim_end_matches('\\'));
        acc.push(' ');
        if continued {
            pending = Some((start, acc));
        } else {
            logical.push((start, acc));
        }
    }
    if let Some(p) = pending {
        logical.push(p);
    }
    for (line_no, text) in logical {
        let t = text.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with('-') {
            // Options such as --index-url; `-r`/`-e` escape pinning.
            if t.starts_with("-r")
                || t.starts_with("--requirement")
                || t.starts_with("-e")
                || t.starts_with("--editable")
            {
                problems.push(format!(
                    "{name}:{line_no}: `{}` cannot be pinned with hashes; list the packages themselves",
                    t.split_whitespace().next().unwrap_or(t)
                ));
            }
            continue;
        }
        count += 1;
        let requirement = t.split_whitespace().next().unwrap_or(t);
        if !requirement.contains("==") {
            problems.push(format!(
                "{name}:{line_no}: `{requirement}` is not pinned with `==`"
            ));
        }
        if !t.contains("--hash=") {
            problems.push(format!("{name}:{line_no}: `{requirement}` has no `--hash`"));
        }
    }
    if problems.is_empty() {
        Ok(count)
    } else {
        Err(problems)
    }
}

const VENV_MARKER: &str = ".mlops-requirements.blake3";

async fn python_env(
    ctx: &StepContext,
    requirements: &Path,
    venv: &Path,
    python: &str,
) -> Result<(), StepFailure> {
    let file = ctx.project_root.join(requirements);
    let text = tokio::fs::read_to_string(&file).await.map_err(|e| {
        StepFailure::new(format!(
            "missing requirements file {} ({e}); pin every package with `pip-compile --generate-hashes`",
            file.display()
        ))
    })?;
    let name = requirements.display().to_string();
    let packages = check_requirements(&text, &name).map_err(|problems| {
        StepFailure::new(format!(
            "{name} is not pinned with hashes:\n  {}\nregenerate it with `pip-compile --generate-hashes`",
            problems.join("\n  ")
        ))
    })?;
    let lock_hash = blake3::hash(text.as_bytes()).to_hex().to_string();
    let venv_dir = ctx.project_root.join(venv);
    let marker = venv_dir.join(VENV_MARKER);
    let reused = tokio::fs::read_to_string(&marker)
        .await
        .is_ok_and(|m| m.trim() == lock_hash)
        && venv_dir.join("bin/python").exists();
    if reused {
        ctx.log(format!("{}: up to date with {name}", venv.display()));
    } else {
        ctx.log(format!(
            "building {} from {name} ({packages} packages)",
            venv.display()
        ));
        if venv_dir.exists() {
            tokio::fs::remove_dir_all(&venv_dir).await.map_err(|e| {
                StepFailure::new(format!("cannot remove the old {}: {e}", venv_dir.display()))
            })?;
        }
        let quoted = |p: &Path| shell_quote(&p.to_string_lossy());
        let command = format!(
            "{python} -m venv {venv} && {venv}/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: -r {req}",
            python = shell_quote(python),
            venv = quoted(&venv_dir),
            req = quoted(&file),
        );
        match ctx.run_command(&command).await {
            CommandEnd::Success => {}
            CommandEnd::Failure { reason, .. } => {
                return Err(StepFailure::new(format!(
                    "building the virtualenv {} failed ({reason}); see the step log for pip's output",
                    venv.display()
                )));
            }
            CommandEnd::Cancelled => return Err(StepFailure::new("cancelled")),
        }
        tokio::fs::write(&marker, &lock_hash)
            .await
            .map_err(|e| StepFailure::new(format!("cannot write {}: {e}", marker.display())))?;
    }
    ctx.record(
        evidence::ENVIRONMENT,
        &EnvironmentEvidence {
            kind: "python",
            lockfile: name,
            lock_hash,
            reused,
            packages,
        },
    );
    Ok(())
}

async fn rust_env(
    ctx: &StepContext,
    lockfile: &Path,
    build_args: &[String],
) -> Result<(), StepFailure> {
    let file = ctx.project_root.join(lockfile);
    let text = tokio::fs::read(&file).await.map_err(|e| {
        StepFailure::new(format!(
            "missing lockfile {} ({e}); run `cargo generate-lockfile` and commit Cargo.lock",
            file.display()
        ))
    })?;
    let packages = String::from_utf8_lossy(&text)
        .matches("[[package]]")
        .count();
    let args: Vec<String> = build_args.iter().map(|a| shell_quote(a)).collect();
    let command = format!("cargo build --locked {}", args.join(" "));
    ctx.log(format!("$ {command}"));
    match ctx.run_command(&command).await {
        CommandEnd::Success => {}
        CommandEnd::Failure { reason, .. } => {
            return Err(StepFailure::new(format!(
                "`{command}` failed ({reason}); if cargo says the lock file needs to be updated, {} is out of date with Cargo.toml: run `cargo update -w` and commit it",
                lockfile.display()
            )));
        }
        CommandEnd::Cancelled => return Err(StepFailure::new("cancelled")),
    }
    ctx.record(
        evidence::ENVIRONMENT,
        &EnvironmentEvidence {
            kind: "rust",
            lockfile: lockfile.display().to_string(),
            lock_hash: blake3::hash(&text).to_hex().to_string(),
            reused: false,
            packages,
        },
    );
    Ok(())
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

// ---- infra-apply -------------------------------------------------------------

struct InfraApplyKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct InfraApplyWire {
    environment: Option<String>,
    provider: Option<toml::Spanned<String>>,
    services: Option<Vec<String>>,
}

#[derive(Serialize)]
struct InfraApplyEvidence {
    environment: String,
    provider: ProviderKind,
    apply_id: Option<i64>,
    actions: Vec<crate::plan::Action>,
    instances: Vec<serde_json::Value>,
}

impl StepKind for InfraApplyKind {
    fn name(&self) -> &'static str {
        "infra-apply"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Iac)
    }

    fn summary(&self) -> &'static str {
        "converges the [infra] services in an environment; passes when the plan after the apply is empty"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let wire: InfraApplyWire = params.deserialize().map_err(|d| vec![d])?;
        let provider = provider_param(wire.provider.as_ref()).map_err(|d| vec![d])?;
        let environment = wire.environment.unwrap_or_else(|| "dev".to_owned());
        let services = wire.services;
        if services.as_ref().is_some_and(Vec::is_empty) {
            return Err(vec![
                Diagnostic::new(
                    "`services` is empty: the step would apply nothing",
                    Some(params.span()),
                )
                .with_help("name the services to apply, or leave `services` out to apply them all"),
            ]);
        }
        let infra = match &services {
            None => StepInfra::read(params, &[&["services"]], provider)?,
            Some(names) => {
                let parts: Vec<[&str; 2]> =
                    names.iter().map(|n| ["services", n.as_str()]).collect();
                let parts: Vec<&[&str]> = parts.iter().map(|p| p.as_slice()).collect();
                StepInfra::read(params, &parts, provider)?
            }
        };
        let unknown: Vec<Diagnostic> = services
            .iter()
            .flatten()
            .filter(|s| !infra.spec.services.contains_key(*s))
            .map(|s| {
                Diagnostic::new(
                    format!("no service `{s}` in [infra.services]"),
                    Some(params.span()),
                )
            })
            .collect();
        if !unknown.is_empty() {
            return Err(unknown);
        }
        Ok(Arc::new(move |ctx: StepContext| {
            let infra = infra.clone();
            let environment = environment.clone();
            let services = services.clone();
            async move { infra_apply(&ctx, &infra, &environment, services.as_deref()).await }
        }))
    }
}

async fn infra_apply(
    ctx: &StepContext,
    infra: &StepInfra,
    environment: &str,
    services: Option<&[String]>,
) -> Result<(), StepFailure> {
    let spec = infra.spec.as_ref();
    let (kind, provider, scope) = infra
        .target(ctx, environment)
        .await
        .map_err(|e| StepFailure::new(e.to_string()))?;
    let ledger = ctx.ledger();
    let fail = |e: &dyn std::fmt::Display| StepFailure::new(e.to_string());
    let desired = apply::desired_state(spec, &scope, ledger, provider.as_ref(), &BTreeMap::new())
        .await
        .map_err(|e| fail(&e))?;
    let report = apply::apply(
        provider.as_ref(),
        &scope,
        ledger,
        &desired,
        services,
        &ApplyContext {
            actor: format!("step {}", ctx.step),
            step: Some((ctx.run_id, ctx.step.clone())),
            on_ready: None,
        },
    )
    .await
    .map_err(|e| fail(&e))?;
    for action in &report.actions {
        ctx.log(action.to_string());
    }
    ctx.log(format!("{kind} `{environment}`: plan after apply is empty"));
    let instances = report
        .instances
        .iter()
        .map(|i| serde_json::json!({"service": i.service, "instance": i.id, "revision": i.revision, "endpoints": i.endpoints(), "owner": i.owner}))
        .collect();
    ctx.record(
        evidence::INFRA_APPLY,
        &InfraApplyEvidence {
            environment: environment.to_owned(),
            provider: kind,
            apply_id: report.apply_id,
            actions: report.actions,
            instances,
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_must_be_pinned_with_hashes() {
        let good = "# comment\nnumpy==2.4.6 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n--index-url https://pypi.org/simple\nsix==1.16.0 --hash=sha256:cc\n";
        assert_eq!(check_requirements(good, "r.txt"), Ok(2));
        let bad = "numpy>=2\nsix==1.16.0\n-r other.txt\n";
        let problems = check_requirements(bad, "r.txt").unwrap_err();
        assert!(
            problems.contains(&"r.txt:1: `numpy>=2` is not pinned with `==`".to_owned()),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"r.txt:2: `six==1.16.0` has no `--hash`".to_owned()),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("r.txt:3: `-r`")),
            "{problems:?}"
        );
    }
}
