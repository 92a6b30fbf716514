//! Classifying files by their path alone, before reading any.

/// The CI systems whose configuration the scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CiSystem {
    GithubActions,
    GitlabCi,
    Circleci,
    AzurePipelines,
    Jenkins,
    Travis,
    Bitbucket,
    Buildkite,
    Drone,
}

impl CiSystem {
    /// The name in [`crate::evidence::AutomatedCommand::system`].
    pub(super) fn id(self) -> &'static str {
        match self {
            CiSystem::GithubActions => "github-actions",
            CiSystem::GitlabCi => "gitlab-ci",
            CiSystem::Circleci => "circleci",
            CiSystem::AzurePipelines => "azure-pipelines",
            CiSystem::Jenkins => "jenkins",
            CiSystem::Travis => "travis",
            CiSystem::Bitbucket => "bitbucket",
            CiSystem::Buildkite => "buildkite",
            CiSystem::Drone => "drone",
        }
    }

    /// Every system.
    const ALL: [CiSystem; 9] = [
        CiSystem::GithubActions,
        CiSystem::GitlabCi,
        CiSystem::Circleci,
        CiSystem::AzurePipelines,
        CiSystem::Jenkins,
        CiSystem::Travis,
        CiSystem::Bitbucket,
        CiSystem::Buildkite,
        CiSystem::Drone,
    ];

    /// The system named `id` (see [`CiSystem::id`]).
    pub(super) fn from_id(id: &str) -> Option<CiSystem> {
        CiSystem::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The name for people.
    pub(super) fn title(self) -> &'static str {
        match self {
            CiSystem::GithubActions => "GitHub Actions",
            CiSystem::GitlabCi => "GitLab CI",
            CiSystem::Circleci => "CircleCI",
            CiSystem::AzurePipelines => "Azure Pipelines",
            CiSystem::Jenkins => "Jenkins",
            CiSystem::Travis => "Travis CI",
            CiSystem::Bitbucket => "Bitbucket Pipelines",
            CiSystem::Buildkite => "Buildkite",
            CiSystem::Drone => "Drone",
        }
    }
}

/// Lockfiles, by format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lock {
    /// `[[package]]` tables: Cargo.lock, poetry.lock, uv.lock, pdm.lock.
    Packages,
    /// Pipfile.lock.
    Pipfile,
    /// renv.lock.
    Renv,
    /// conda-lock YAML.
    CondaYaml,
    /// An explicit conda lockfile: one package URL a line.
    CondaExplicit,
    /// pixi.lock.
    Pixi,
}

/// What a file is, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `mlops.toml` at the root.
    Manifest,
    Python,
    Notebook,
    R,
    Rust,
    /// JavaScript or TypeScript (k6 scripts).
    Script,
    /// Lua (wrk scripts).
    Lua,
    /// A shell script: automation may run it.
    Shell,
    /// A JMeter test plan.
    Jmx,
    Requirements,
    CondaEnvironment,
    Lockfile(Lock),
    CargoToml,
    /// `*.schema.toml`, `*.schema.json`, `schema.json`.
    Schema,
    /// A data file (CSV, Parquet, …): not read, remembered for schemas.
    Data,
    /// A Great Expectations project's configuration.
    GreatExpectations,
    Dockerfile,
    Compose,
    Terraform,
    /// Other infrastructure definitions, by name.
    InfraFile,
    /// YAML not otherwise classified: Kubernetes, Prometheus, Helm, …
    Yaml,
    /// JSON in a Grafana or dashboards directory, or named `*dashboard*`.
    DashboardJson,
    Ci(CiSystem),
    Codeowners,
    DependencyBot,
    GitleaksConfig,
    PreCommit,
    Changelog,
    ReleaseConfig,
    DvcYaml,
    DvcLock,
    ParamsYaml,
    MlProject,
    MlModel,
    Bentofile,
    Makefile,
}

impl Kind {
    /// Whether the scan reads the file's content.
    pub(super) fn is_read(self) -> bool {
        !matches!(
            self,
            Kind::Data
                | Kind::Compose
                | Kind::Schema
                | Kind::Jmx
                | Kind::GitleaksConfig
                | Kind::DvcLock
                | Kind::ParamsYaml
                | Kind::MlModel
                | Kind::Bentofile
                | Kind::InfraFile
                | Kind::DependencyBot
                | Kind::GreatExpectations
        ) && !matches!(self, Kind::Lockfile(Lock::Pixi))
    }
}

const DATA_EXTENSIONS: &[&str] = &[
    "csv", "tsv", "parquet", "jsonl", "ndjson", "feather", "arrow", "avro", "orc", "xlsx",
];

/// What the file at `rel` (named `name`) is, if the scan cares.
pub(super) fn classify(rel: &str, name: &str) -> Option<Kind> {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map_or("", |(_, ext)| ext);
    let dir = rel.rsplit_once('/').map_or("", |(dir, _)| dir);
    let at_root = dir.is_empty();

    if let Some(system) = ci_system(&lower, dir) {
        return Some(Kind::Ci(system));
    }
    let kind = match lower.as_str() {
        "mlops.toml" if at_root => Kind::Manifest,
        "cargo.lock" | "poetry.lock" | "uv.lock" | "pdm.lock" => Kind::Lockfile(Lock::Packages),
        "pipfile.lock" => Kind::Lockfile(Lock::Pipfile),
        "renv.lock" => Kind::Lockfile(Lock::Renv),
        "pixi.lock" => Kind::Lockfile(Lock::Pixi),
        "conda-lock.yml" | "conda-lock.yaml" => Kind::Lockfile(Lock::CondaYaml),
        "cargo.toml" => Kind::CargoToml,
        "environment.yml" | "environment.yaml" => Kind::CondaEnvironment,
        "containerfile" => Kind::Dockerfile,
        "docker-compose.yml" | "docker-compose.yaml" | "compose.yml" | "compose.yaml" => {
            Kind::Compose
        }
        "codeowners" if matches!(dir, "" | ".github" | "docs" | ".gitlab") => Kind::Codeowners,
        "dependabot.yml" | "dependabot.yaml" if dir == ".github" => Kind::DependencyBot,
        "renovate.json" | "renovate.json5" | ".renovaterc" | ".renovaterc.json"
        | ".renovaterc.json5"
            if matches!(dir, "" | ".github" | ".gitlab") =>
        {
            Kind::DependencyBot
        }
        "great_expectations.yml" | "great_expectations.yaml" => Kind::GreatExpectations,
        ".gitleaks.toml" | "gitleaks.toml" => Kind::GitleaksConfig,
        ".pre-commit-config.yaml" | ".pre-commit-config.yml" => Kind::PreCommit,
        "release-please-config.json" | ".release-please-manifest.json" | "cliff.toml" => {
            Kind::ReleaseConfig
        }
        "dvc.yaml" | "dvc.yml" => Kind::DvcYaml,
        "dvc.lock" => Kind::DvcLock,
        "params.yaml" | "params.yml" => Kind::ParamsYaml,
        "mlproject" => Kind::MlProject,
        "mlmodel" => Kind::MlModel,
        "bentofile.yaml" | "bentofile.yml" => Kind::Bentofile,
        "makefile" | "gnumakefile" if at_root => Kind::Makefile,
        "fly.toml" | "skaffold.yaml" | "skaffold.yml" | "cdk.json" | "pulumi.yaml"
        | "pulumi.yml" | "serverless.yml" | "serverless.yaml" => Kind::InfraFile,
        "schema.json" => Kind::Schema,
        _ => return classify_by_pattern(rel, &lower, ext, dir),
    };
    Some(kind)
}

fn classify_by_pattern(rel: &str, lower: &str, ext: &str, dir: &str) -> Option<Kind> {
    if lower.starts_with("dockerfile") || lower.ends_with(".dockerfile") {
        return Some(Kind::Dockerfile);
    }
    if lower.starts_with("changelog") {
        return Some(Kind::Changelog);
    }
    if lower.starts_with(".releaserc") {
        return Some(Kind::ReleaseConfig);
    }
    if lower.ends_with(".conda-lock.yml") || lower.ends_with(".conda-lock.yaml") {
        return Some(Kind::Lockfile(Lock::CondaYaml));
    }
    if lower.starts_with("conda-") && lower.ends_with(".lock") {
        return Some(Kind::Lockfile(Lock::CondaExplicit));
    }
    if ext == "txt"
        && (lower.starts_with("requirements") || dir.rsplit('/').next() == Some("requirements"))
    {
        return Some(Kind::Requirements);
    }
    if lower.ends_with(".schema.toml") || lower.ends_with(".schema.json") {
        return Some(Kind::Schema);
    }
    let kind = match ext {
        "py" => Kind::Python,
        "ipynb" => Kind::Notebook,
        "r" => Kind::R,
        "rs" => Kind::Rust,
        "js" | "ts" | "mjs" if !lower.ends_with(".min.js") && !lower.ends_with(".d.ts") => {
            Kind::Script
        }
        "lua" => Kind::Lua,
        "sh" | "bash" => Kind::Shell,
        "jmx" => Kind::Jmx,
        "tf" => Kind::Terraform,
        "bicep" => Kind::InfraFile,
        "yml" | "yaml" => Kind::Yaml,
        "json" if is_dashboard_json(rel, lower) => Kind::DashboardJson,
        "mk" => Kind::Makefile,
        e if DATA_EXTENSIONS.contains(&e) => Kind::Data,
        _ => return None,
    };
    Some(kind)
}

fn is_dashboard_json(rel: &str, lower: &str) -> bool {
    lower.contains("dashboard")
        || rel.split('/').rev().skip(1).any(|part| {
            part.eq_ignore_ascii_case("grafana") || part.eq_ignore_ascii_case("dashboards")
        })
}

fn ci_system(lower: &str, dir: &str) -> Option<CiSystem> {
    let yaml = lower.ends_with(".yml") || lower.ends_with(".yaml");
    let system = match (dir, lower) {
        (".github/workflows", _) if yaml => CiSystem::GithubActions,
        ("", ".gitlab-ci.yml" | ".gitlab-ci.yaml") => CiSystem::GitlabCi,
        (_, l) if l.len() > ".gitlab-ci.yml".len() && l.ends_with(".gitlab-ci.yml") => {
            CiSystem::GitlabCi
        }
        (".circleci", "config.yml" | "config.yaml") => CiSystem::Circleci,
        (_, l) if yaml && l.starts_with("azure-pipelines") => CiSystem::AzurePipelines,
        (".azure-pipelines" | ".azuredevops" | ".pipelines", _) if yaml => CiSystem::AzurePipelines,
        ("" | "jenkins" | "ci" | ".jenkins", l)
            if l == "jenkinsfile" || l.starts_with("jenkinsfile.") =>
        {
            CiSystem::Jenkins
        }
        ("", ".travis.yml" | ".travis.yaml") => CiSystem::Travis,
        ("", "bitbucket-pipelines.yml" | "bitbucket-pipelines.yaml") => CiSystem::Bitbucket,
        (".buildkite", l) if yaml && l.starts_with("pipeline") => CiSystem::Buildkite,
        ("", ".drone.yml" | ".drone.yaml") => CiSystem::Drone,
        _ => return None,
    };
    Some(system)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(rel: &str) -> Option<Kind> {
        classify(rel, rel.rsplit('/').next().unwrap())
    }

    #[test]
    fn files_are_classified_by_path() {
        assert_eq!(
            kind(".github/workflows/ci.yml"),
            Some(Kind::Ci(CiSystem::GithubActions))
        );
        assert_eq!(kind("sub/.github/workflows/ci.yml"), Some(Kind::Yaml));
        assert_eq!(kind(".gitlab-ci.yml"), Some(Kind::Ci(CiSystem::GitlabCi)));
        assert_eq!(kind("mlops.toml"), Some(Kind::Manifest));
        assert_eq!(kind("examples/wine/mlops.toml"), None);
        assert_eq!(kind("requirements-dev.txt"), Some(Kind::Requirements));
        assert_eq!(kind("requirements/base.txt"), Some(Kind::Requirements));
        assert_eq!(kind("requirements.in"), None);
        assert_eq!(kind("docker/Dockerfile.gpu"), Some(Kind::Dockerfile));
        assert_eq!(kind("api.Dockerfile"), Some(Kind::Dockerfile));
        assert_eq!(kind("ops/grafana/model.json"), Some(Kind::DashboardJson));
        assert_eq!(kind("data/model.json"), None);
        assert_eq!(kind("data/iris.schema.toml"), Some(Kind::Schema));
        assert_eq!(kind("data/iris.csv"), Some(Kind::Data));
        assert_eq!(
            kind("env/conda-linux-64.lock"),
            Some(Kind::Lockfile(Lock::CondaExplicit))
        );
        assert_eq!(kind("Jenkinsfile"), Some(Kind::Ci(CiSystem::Jenkins)));
    }
}
