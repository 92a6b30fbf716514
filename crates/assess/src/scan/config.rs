//! Evidence from configuration files: environments and lockfiles,
//! containers, infrastructure and Kubernetes manifests, monitoring and
//! alerting, dashboards, repository policy (code owners, dependency bots,
//! secret-scanning hooks, release tooling), data schemas, DVC, MLflow and
//! make targets.
//!
//! Configuration a tool applies as written (a lockfile, a Dockerfile, alert
//! rules) is automated evidence; what a person runs (a make target) carries
//! the `run_by` words that make it automated when automation runs it.

use std::path::Path;
use std::sync::LazyLock;

use regex::bytes::Regex;

use super::files::{Kind, Lock};
use super::text::{cut, find_line, line_at, mentions_training, pattern, shell_lines};
use super::{Collector, FileCtx};
use crate::evidence::{Evidence, Signal, Source};

/// Evidence of a file the scan does not read (its name says enough).
pub(super) fn unread(rel: &str, name: &str, kind: Kind, out: &mut Collector) {
    let dir = rel.rsplit_once('/').map_or("", |(dir, _)| dir);
    let file = |signal, summary: String| Evidence::file(signal, rel, None, summary);
    match kind {
        Kind::Data => {
            out.data_dirs.insert(dir.to_owned());
            let stem = name.split('.').next().unwrap_or(name);
            out.data_stems.insert(format!("{dir}/{stem}"));
        }
        Kind::Compose => {
            out.push(file(Signal::Container, format!("{rel}: Compose services")).automated())
        }
        Kind::Jmx => out.push(
            file(Signal::LoadTest, format!("{rel}: JMeter test plan"))
                .run_by(["jmeter".to_owned(), rel.to_owned()]),
        ),
        Kind::GitleaksConfig => {
            // A configuration nothing runs scans nothing.
            out.push(
                file(
                    Signal::SecretScanning,
                    format!("{rel}: gitleaks configuration"),
                )
                .run_by(["gitleaks", "gitleaks-action"]),
            );
        }
        Kind::DvcLock => out.push(
            file(
                Signal::Reproducibility,
                format!("{rel}: DVC records the hashes of every stage's inputs and outputs"),
            )
            .run_by(["dvc repro", "dvc exp run"]),
        ),
        Kind::Schema => out.schema_files.push(rel.to_owned()),
        Kind::ParamsYaml => {
            out.params_dirs.insert(dir.to_owned());
        }
        Kind::GreatExpectations => out.push(
            file(
                Signal::DataTests,
                format!("{rel}: a Great Expectations project"),
            )
            .run_by(["great_expectations", "gx", "run_checkpoint"]),
        ),
        Kind::MlModel => out.push(file(
            Signal::Packaging,
            format!("{rel}: an MLflow model package"),
        )),
        Kind::Bentofile => out.push(
            file(
                Signal::Packaging,
                format!("{rel}: a BentoML build definition"),
            )
            .run_by(["bentoml build"]),
        ),
        Kind::InfraFile => {
            let what = match name.to_ascii_lowercase().as_str() {
                "fly.toml" => "Fly.io app definition",
                "cdk.json" => "AWS CDK app",
                "pulumi.yaml" | "pulumi.yml" => "Pulumi project",
                "serverless.yml" | "serverless.yaml" => "Serverless Framework service",
                n if n.starts_with("skaffold") => "Skaffold pipeline",
                _ => "Bicep template",
            };
            out.push(file(Signal::InfrastructureCode, format!("{rel}: {what}")).automated());
        }
        Kind::DependencyBot => {
            let tool = if name.starts_with("dependabot") {
                "Dependabot version updates"
            } else {
                "Renovate configuration"
            };
            out.push(file(Signal::DependencyUpdates, format!("{rel}: {tool}")).automated());
        }
        Kind::Lockfile(Lock::Pixi) => {
            out.push(
                file(
                    Signal::LockedEnvironment,
                    format!("{rel} pins the environment"),
                )
                .automated(),
            );
        }
        Kind::Notebook => out.push(notebook_evidence(rel, None)),
        _ => {}
    }
}

/// The notebook itself: done by hand unless automation executes it.
pub(super) fn notebook_evidence(rel: &str, cells: Option<usize>) -> Evidence {
    let summary = match cells {
        Some(n) => format!("{rel}: Jupyter notebook ({n} cells)"),
        None => format!("{rel}: Jupyter notebook"),
    };
    Evidence::file(Signal::Notebook, rel, None, summary)
        .run_by([rel.to_owned(), "--nbmake".to_owned()])
}

/// Evidence of a configuration file, from its text.
pub(super) fn read(ctx: &FileCtx<'_>, kind: Kind, text: &str, out: &mut Collector) {
    match kind {
        Kind::Requirements => requirements(ctx.rel, text, out),
        Kind::CondaEnvironment => conda_environment(ctx.rel, text, out),
        Kind::Lockfile(lock) => lockfile(ctx.rel, lock, text, out),
        Kind::CargoToml => cargo_toml(ctx, text, out),
        Kind::Dockerfile => dockerfile(ctx.rel, text, out),
        Kind::Terraform => terraform(ctx, text, out),
        Kind::Yaml => yaml(ctx, text, out),
        Kind::DashboardJson => dashboard(ctx.rel, text, out),
        Kind::Codeowners => {
            let rules = text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .count();
            out.push(
                Evidence::file(
                    Signal::CodeReview,
                    ctx.rel,
                    None,
                    format!("{}: {rules} code-ownership rules", ctx.rel),
                )
                .automated(),
            );
        }
        Kind::PreCommit => pre_commit(ctx.rel, text, out),
        Kind::Changelog => changelog(ctx.rel, text, out),
        Kind::ReleaseConfig => {
            let tool = if ctx.name.starts_with(".releaserc") {
                "semantic-release"
            } else if ctx.name == "cliff.toml" {
                "git-cliff"
            } else {
                "release-please"
            };
            out.push(
                Evidence::file(
                    Signal::ReleaseVersioning,
                    ctx.rel,
                    None,
                    format!("{}: {tool} configuration", ctx.rel),
                )
                .automated(),
            );
        }
        Kind::DvcYaml => dvc_yaml(ctx, text, out),
        Kind::MlProject => {
            let entries = children_of(text, "entry_points");
            out.push(
                Evidence::file(
                    Signal::TrainingPipeline,
                    ctx.rel,
                    None,
                    format!(
                        "{}: MLflow project (entry points: {})",
                        ctx.rel,
                        entries.join(", ")
                    ),
                )
                .run_by(["mlflow run"]),
            );
        }
        Kind::Makefile => makefile(ctx.rel, text, out),
        Kind::Shell => {
            let lines = shell_lines(text.lines().enumerate().map(|(i, l)| (i + 1, l.to_owned())));
            out.scripts.insert(ctx.rel.to_owned(), lines);
        }
        Kind::Lua => {
            if let Some((line, _)) = find_line(text, |l| l.contains("wrk.")) {
                out.push(
                    Evidence::file(
                        Signal::LoadTest,
                        ctx.rel,
                        Some(line),
                        format!("{}: wrk script", ctx.rel),
                    )
                    .run_by(["wrk".to_owned(), ctx.rel.to_owned()]),
                );
            }
        }
        _ => {}
    }
}

/// `requirements*.txt`: locked when every requirement is pinned with `==`
/// and hashed; otherwise the first offending line.
fn requirements(rel: &str, text: &str, out: &mut Collector) {
    let mut total = 0usize;
    let mut offending: Vec<(usize, String)> = Vec::new();
    let mut logical = String::new();
    let mut start = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = if raw.trim_start().starts_with('#') {
            ""
        } else {
            raw.split(" #").next().unwrap_or(raw)
        };
        if logical.is_empty() {
            start = index + 1;
        }
        let line = line.trim_end();
        let (content, continued) = match line.strip_suffix('\\') {
            Some(content) => (content, true),
            None => (line, false),
        };
        logical.push_str(content.trim());
        logical.push(' ');
        if continued {
            continue;
        }
        let requirement = logical.trim().to_owned();
        logical.clear();
        if requirement.is_empty() {
            continue;
        }
        let editable = requirement.starts_with("-e ") || requirement.starts_with("--editable");
        if requirement.starts_with('-') && !editable {
            continue; // an option: --index-url, -r other.txt, --only-binary
        }
        if editable {
            let target = requirement.split_whitespace().nth(1).unwrap_or("");
            if target.starts_with('.') || target.starts_with('/') {
                continue; // the project itself
            }
        }
        total += 1;
        let pinned = !editable && (requirement.contains("==") || requirement.contains(" @ "));
        let hashed = requirement.contains("--hash");
        if !(pinned && hashed) {
            let shown = requirement
                .split(" --hash")
                .next()
                .unwrap_or(&requirement)
                .trim();
            offending.push((start, cut(shown, 60)));
        }
    }
    if total == 0 {
        return;
    }
    match offending.first() {
        None => out.push(
            Evidence::file(
                Signal::LockedEnvironment,
                rel,
                None,
                format!("{rel}: {total} packages pinned with hashes"),
            )
            .automated(),
        ),
        Some((line, shown)) => out.push(Evidence::file(
            Signal::UnpinnedRequirements,
            rel,
            Some(*line),
            format!(
                "{rel}: {} of {total} requirements not pinned with == and --hash (first: line {line}, `{shown}`)",
                offending.len()
            ),
        )),
    }
}

/// A conda `environment.yml`: unpinned when a dependency has no version.
fn conda_environment(rel: &str, text: &str, out: &mut Collector) {
    let mut in_deps = false;
    let mut pip_indent: Option<usize> = None;
    let mut total = 0usize;
    let mut offending: Vec<(usize, String)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        if indent == 0 && !trimmed.starts_with('-') {
            in_deps = trimmed.starts_with("dependencies:");
            pip_indent = None;
            continue;
        }
        if !in_deps {
            continue;
        }
        let Some(item) = trimmed.strip_prefix("- ") else {
            continue;
        };
        let item = item
            .split(" #")
            .next()
            .unwrap_or(item)
            .trim()
            .trim_matches(['"', '\'']);
        if pip_indent.is_some_and(|pip| indent <= pip) {
            pip_indent = None;
        }
        if item == "pip:" {
            pip_indent = Some(indent);
            continue;
        }
        if item == "pip" {
            continue;
        }
        total += 1;
        let pinned = if pip_indent.is_some() {
            item.contains("==")
        } else {
            item.contains('=') || item.contains('@')
        };
        if !pinned {
            offending.push((index + 1, cut(item, 60)));
        }
    }
    if let Some((line, shown)) = offending.first() {
        out.push(Evidence::file(
            Signal::UnpinnedRequirements,
            rel,
            Some(*line),
            format!(
                "{rel}: {} of {total} dependencies not pinned (first: line {line}, `{shown}`)",
                offending.len()
            ),
        ));
    }
}

fn lockfile(rel: &str, lock: Lock, text: &str, out: &mut Collector) {
    let count = |test: fn(&str) -> bool| text.lines().filter(|l| test(l)).count();
    let packages = match lock {
        Lock::Packages => count(|l| l.trim() == "[[package]]"),
        Lock::Pipfile => count(|l| l.contains("\"version\": \"==")),
        Lock::Renv => count(|l| l.contains("\"Package\":")),
        Lock::CondaYaml => count(|l| l.trim_start().starts_with("- name:")),
        Lock::CondaExplicit => count(|l| l.starts_with("http")),
        Lock::Pixi => 0,
    };
    let summary = if packages == 1 {
        format!("{rel} pins 1 package")
    } else if packages > 0 {
        format!("{rel} pins {packages} packages")
    } else {
        format!("{rel} pins the environment")
    };
    out.push(Evidence::file(Signal::LockedEnvironment, rel, None, summary).automated());
}

fn cargo_toml(ctx: &FileCtx<'_>, text: &str, out: &mut Collector) {
    if let Ok(table) = toml::from_str::<toml::Table>(text)
        && let Some(name) = table
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
    {
        out.cargo_packages
            .insert(ctx.dir().to_owned(), name.to_owned());
    }
    static METRICS: LazyLock<Regex> = LazyLock::new(|| {
        pattern(
            r"(?m)^\s*(prometheus|prometheus-client|metrics-exporter-prometheus|opentelemetry[\w-]*|autometrics)\s*(=|\.workspace)",
        )
    });
    if let Some(m) = METRICS.captures(text.as_bytes()) {
        let whole = m.get(0).map_or(0, |m| m.start());
        let crate_name = m.get(1).map_or("", |c| text.get(c.range()).unwrap_or(""));
        out.push(
            Evidence::file(
                Signal::Metrics,
                ctx.rel,
                Some(line_at(text, whole)),
                format!("{}: depends on {crate_name}", ctx.rel),
            )
            .automated(),
        );
    }
}

fn dockerfile(rel: &str, text: &str, out: &mut Collector) {
    let from = find_line(text, |l| {
        l.trim_start()
            .get(..5)
            .is_some_and(|head| head.eq_ignore_ascii_case("from "))
    });
    let (line, summary) = match from {
        Some((line, l)) => {
            let image = l
                .split_whitespace()
                .find(|w| !w.starts_with("--") && !w.eq_ignore_ascii_case("from"));
            (
                Some(line),
                format!("{rel}: container image from {}", image.unwrap_or("?")),
            )
        }
        None => (None, format!("{rel}: container definition")),
    };
    out.push(Evidence::file(Signal::Container, rel, line, summary).automated());
}

fn terraform(ctx: &FileCtx<'_>, text: &str, out: &mut Collector) {
    out.terraform
        .entry(ctx.dir().to_owned())
        .or_default()
        .push(ctx.rel.to_owned());
    static RESOURCE: LazyLock<Regex> = LazyLock::new(|| pattern(r#"(?m)^\s*resource\s+"(\w+)""#));
    let mut seen = Vec::new();
    for caps in RESOURCE.captures_iter(text.as_bytes()) {
        let (Some(all), Some(ty)) = (caps.get(0), caps.get(1)) else {
            continue;
        };
        let ty = text.get(ty.range()).unwrap_or("");
        let signal = match ty {
            t if t.starts_with("kubernetes_horizontal_pod_autoscaler")
                || t.starts_with("aws_appautoscaling_")
                || t.starts_with("aws_autoscaling_policy")
                || t == "google_compute_autoscaler"
                || t == "azurerm_monitor_autoscale_setting" =>
            {
                Signal::Autoscaling
            }
            "aws_cloudwatch_metric_alarm"
            | "google_monitoring_alert_policy"
            | "azurerm_monitor_metric_alert"
            | "grafana_rule_group"
            | "datadog_monitor"
            | "newrelic_alert_policy" => Signal::Alerting,
            "grafana_dashboard"
            | "aws_cloudwatch_dashboard"
            | "google_monitoring_dashboard"
            | "datadog_dashboard" => Signal::Dashboards,
            t if t.starts_with("kubernetes_deployment")
                || matches!(
                    t,
                    "helm_release"
                        | "aws_sagemaker_endpoint"
                        | "google_cloud_run_service"
                        | "google_cloud_run_v2_service"
                        | "aws_ecs_service"
                        | "azurerm_container_app"
                        | "google_vertex_ai_endpoint"
                ) =>
            {
                Signal::Deployment
            }
            _ => continue,
        };
        if seen.contains(&signal) {
            continue;
        }
        seen.push(signal);
        out.push(
            Evidence::file(
                signal,
                ctx.rel,
                Some(line_at(text, all.start())),
                format!("{}: Terraform resource {ty}", ctx.rel),
            )
            .automated(),
        );
    }
}

/// One YAML document's facts.
#[derive(Default)]
struct Document {
    api_version: Option<String>,
    kind: Option<(String, usize)>,
    weight: Option<usize>,
    canary_traffic: Option<usize>,
    knative_autoscaling: Option<usize>,
    abort_scale_down: Option<usize>,
    trains: bool,
}

/// Other YAML: Kubernetes manifests, Helm, Kustomize, CloudFormation,
/// Prometheus configuration and rules, Alertmanager.
fn yaml(ctx: &FileCtx<'_>, text: &str, out: &mut Collector) {
    let rel = ctx.rel;
    let lower = ctx.name.to_ascii_lowercase();
    let push = |out: &mut Collector, signal, line, summary: String| {
        out.push(Evidence::file(signal, rel, line, summary).automated());
    };
    match lower.as_str() {
        "chart.yaml" | "chart.yml" => {
            let name = top_scalar(text, "name").unwrap_or_default();
            push(
                out,
                Signal::InfrastructureCode,
                None,
                format!("{rel}: Helm chart {name}"),
            );
            return;
        }
        "kustomization.yaml" | "kustomization.yml" => {
            push(
                out,
                Signal::InfrastructureCode,
                None,
                format!("{rel}: Kustomize configuration"),
            );
            return;
        }
        _ => {}
    }
    let mut documents = vec![Document::default()];
    let mut scrape_configs = None;
    let mut groups = false;
    let mut alerts: Vec<usize> = Vec::new();
    let mut route = false;
    let mut receivers = None;
    let mut cloudformation = None;
    for (index, raw) in text.lines().enumerate() {
        let no = index + 1;
        if raw.starts_with("---") {
            documents.push(Document::default());
            continue;
        }
        let doc = documents.last_mut().expect("one document at least");
        let trimmed = raw.trim_start();
        let top = raw.len() == trimmed.len();
        if top {
            if let Some(v) = trimmed.strip_prefix("apiVersion:") {
                doc.api_version = Some(v.trim().to_owned());
            } else if let Some(v) = trimmed.strip_prefix("kind:") {
                doc.kind = Some((
                    v.split('#')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .trim_matches(['"', '\''])
                        .to_owned(),
                    no,
                ));
            } else if trimmed.starts_with("scrape_configs:") {
                scrape_configs = Some(no);
            } else if trimmed.starts_with("groups:") {
                groups = true;
            } else if trimmed.starts_with("route:") {
                route = true;
            } else if trimmed.starts_with("receivers:") {
                receivers = Some(no);
            } else if trimmed.starts_with("AWSTemplateFormatVersion") {
                cloudformation = Some(no);
            }
        } else {
            let key = trimmed.trim_start_matches("- ");
            if key.starts_with("weight:") {
                doc.weight.get_or_insert(no);
            } else if key.starts_with("canaryTrafficPercent") {
                doc.canary_traffic.get_or_insert(no);
            } else if key.starts_with("autoscaling.knative.dev/") {
                doc.knative_autoscaling.get_or_insert(no);
            } else if key.starts_with("abortScaleDownDelaySeconds") {
                doc.abort_scale_down.get_or_insert(no);
            } else if key.starts_with("alert:") {
                alerts.push(no);
            }
        }
        if !doc.trains && mentions_training(raw) {
            doc.trains = true;
        }
    }
    kubernetes(rel, &documents, out);
    if let Some(line) = scrape_configs {
        let jobs = text.matches("job_name:").count();
        push(
            out,
            Signal::MonitoringConfig,
            Some(line),
            format!("{rel}: Prometheus scrape configuration ({jobs} jobs)"),
        );
    }
    if groups && let Some(&first) = alerts.first() {
        push(
            out,
            Signal::Alerting,
            Some(first),
            format!("{rel}: {} Prometheus alert rules", alerts.len()),
        );
    }
    if (route && receivers.is_some()) || lower.starts_with("alertmanager.") {
        push(
            out,
            Signal::Alerting,
            receivers,
            format!("{rel}: Alertmanager configuration"),
        );
    }
    if let Some(line) = cloudformation {
        push(
            out,
            Signal::InfrastructureCode,
            Some(line),
            format!("{rel}: CloudFormation template"),
        );
    }
}

fn kubernetes(rel: &str, documents: &[Document], out: &mut Collector) {
    let mut kinds: Vec<&str> = Vec::new();
    let mut first_line = None;
    for doc in documents {
        let (Some(api), Some((kind, line))) = (&doc.api_version, &doc.kind) else {
            continue;
        };
        let line = Some(*line);
        first_line = first_line.or(line);
        if !kinds.contains(&kind.as_str()) {
            kinds.push(kind);
        }
        let mut push = |signal, what: &str| {
            out.push(Evidence::file(signal, rel, line, format!("{rel}: {what}")).automated());
        };
        let knative = api.starts_with("serving.knative.dev");
        match kind.as_str() {
            "Deployment" | "StatefulSet" | "DaemonSet" | "InferenceService"
            | "SeldonDeployment" => {
                push(Signal::Deployment, &format!("Kubernetes {kind}"));
            }
            "Service" if knative => push(Signal::Deployment, "Knative Service"),
            "Rollout" => {
                push(Signal::ProgressiveDelivery, "Argo Rollouts Rollout");
                push(
                    Signal::Rollback,
                    "Argo Rollouts Rollout (aborts and rolls back)",
                );
            }
            "Canary" => {
                push(Signal::ProgressiveDelivery, "Flagger Canary");
                push(
                    Signal::Rollback,
                    "Flagger Canary (rolls back on failed analysis)",
                );
            }
            "HorizontalPodAutoscaler" | "VerticalPodAutoscaler" | "ScaledObject" => {
                push(Signal::Autoscaling, &format!("Kubernetes {kind}"));
            }
            "ServiceMonitor" | "PodMonitor" | "Probe" => push(
                Signal::MonitoringConfig,
                &format!("Prometheus Operator {kind}"),
            ),
            "PrometheusRule" => push(Signal::Alerting, "Prometheus Operator PrometheusRule"),
            "CronJob" | "CronWorkflow" if doc.trains => {
                push(Signal::ScheduledRetraining, &format!("{kind} that trains"))
            }
            "Workflow" | "WorkflowTemplate" | "Pipeline" | "PipelineRun" if doc.trains => {
                push(Signal::TrainingPipeline, &format!("{kind} that trains"));
            }
            _ => {}
        }
        let lines = [
            (
                doc.weight.filter(|_| kind == "VirtualService"),
                Signal::ProgressiveDelivery,
                "weighted routes",
            ),
            (
                doc.canary_traffic,
                Signal::ProgressiveDelivery,
                "canary traffic percentage",
            ),
            (
                doc.knative_autoscaling,
                Signal::Autoscaling,
                "Knative autoscaling",
            ),
            (
                doc.abort_scale_down,
                Signal::Rollback,
                "rollout abort settings",
            ),
        ];
        for (at, signal, what) in lines {
            if let Some(at) = at {
                out.push(
                    Evidence::file(signal, rel, Some(at), format!("{rel}: {what}")).automated(),
                );
            }
        }
    }
    if !kinds.is_empty() {
        out.push(
            Evidence::file(
                Signal::InfrastructureCode,
                rel,
                first_line,
                format!("{rel}: Kubernetes manifest ({})", kinds.join(", ")),
            )
            .automated(),
        );
    }
}

/// A top-level `key: value` scalar.
fn top_scalar(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().trim_matches(['"', '\'']).to_owned())
    })
}

/// The keys one level under a top-level `key:`.
fn children_of(text: &str, key: &str) -> Vec<String> {
    let mut inside = false;
    let mut indent = None;
    let mut children = Vec::new();
    for raw in text.lines() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let this = raw.len() - trimmed.len();
        if this == 0 {
            inside = trimmed
                .strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'));
            continue;
        }
        if !inside {
            continue;
        }
        let level = *indent.get_or_insert(this);
        if this == level
            && let Some((name, _)) = trimmed.split_once(':')
        {
            children.push(name.trim().trim_matches(['"', '\'']).to_owned());
        }
    }
    children
}

fn dashboard(rel: &str, text: &str, out: &mut Collector) {
    if !(text.contains("\"panels\"") && text.contains("\"title\"")) {
        return;
    }
    let panels = text.matches("\"gridPos\"").count();
    out.push(
        Evidence::file(
            Signal::Dashboards,
            rel,
            None,
            format!("{rel}: Grafana dashboard ({panels} panels)"),
        )
        .automated(),
    );
}

fn pre_commit(rel: &str, text: &str, out: &mut Collector) {
    const HOOKS: &[&str] = &[
        "gitleaks",
        "detect-secrets",
        "trufflehog",
        "ggshield",
        "detect-private-key",
        "git-secrets",
    ];
    let Some((line, found)) = find_line(text, |l| HOOKS.iter().any(|h| l.contains(h))) else {
        return;
    };
    let hook = HOOKS
        .iter()
        .find(|h| found.contains(*h))
        .copied()
        .unwrap_or("secret");
    out.push(
        Evidence::file(
            Signal::SecretScanning,
            rel,
            Some(line),
            format!("{rel}: pre-commit hook {hook}"),
        )
        .automated(),
    );
}

fn changelog(rel: &str, text: &str, out: &mut Collector) {
    static VERSION: LazyLock<Regex> =
        LazyLock::new(|| pattern(r"(?m)^#{1,3}\s*\[?v?(\d+\.\d+[\w.\-+]*)"));
    let versions: Vec<&str> = VERSION
        .captures_iter(text.as_bytes())
        .filter_map(|c| c.get(1).and_then(|m| text.get(m.range())))
        .collect();
    let summary = match versions.first() {
        Some(latest) => format!(
            "{rel}: {} released versions (latest {latest})",
            versions.len()
        ),
        None => format!("{rel}: a changelog"),
    };
    out.push(Evidence::file(
        Signal::ReleaseVersioning,
        rel,
        None,
        summary,
    ));
}

fn dvc_yaml(ctx: &FileCtx<'_>, text: &str, out: &mut Collector) {
    let stages = children_of(text, "stages");
    let shown: Vec<&str> = stages.iter().take(5).map(String::as_str).collect();
    let more = if stages.len() > 5 { ", …" } else { "" };
    out.push(
        Evidence::file(
            Signal::TrainingPipeline,
            ctx.rel,
            None,
            format!(
                "{}: DVC pipeline with {} stages ({}{more})",
                ctx.rel,
                stages.len(),
                shown.join(", ")
            ),
        )
        .run_by(["dvc repro", "dvc exp run"]),
    );
    let params = find_line(text, |l| {
        let t = l.trim_start().trim_start_matches("- ");
        t.starts_with("params:") && l.starts_with(' ')
    })
    .map(|(line, _)| line);
    out.dvc_pipelines
        .push((ctx.dir().to_owned(), ctx.rel.to_owned(), params));
}

/// Make targets; a `train` target is a training pipeline someone runs with
/// `make train`. Every target is kept: automation that runs `make X` runs
/// its recipe.
fn makefile(rel: &str, text: &str, out: &mut Collector) {
    let mut current: Vec<String> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        if let Some(recipe) = raw.strip_prefix('\t') {
            let command = recipe.trim().trim_start_matches(['@', '-', '+']).trim();
            if !command.is_empty() && !command.starts_with('#') {
                for name in &current {
                    if let Some(target) = out.make_targets.get_mut(name) {
                        target.recipe.push((index + 1, command.to_owned()));
                    }
                }
            }
            continue;
        }
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        current.clear();
        if raw.starts_with([' ', '.'])
            || raw.contains(":=")
            || raw.contains("::=")
            || raw.contains("?=")
        {
            continue;
        }
        let Some((names, rest)) = raw.split_once(':') else {
            continue;
        };
        if names.contains('=') || names.contains('$') {
            continue;
        }
        let (prerequisites, inline) = match rest.split_once(';') {
            Some((pre, cmd)) => (pre, Some(cmd.trim())),
            None => (rest, None),
        };
        let prerequisites: Vec<String> = prerequisites
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        for name in names.split_whitespace() {
            let target = out.make_targets.entry(name.to_owned()).or_default();
            target.file = rel.to_owned();
            target.prerequisites.extend(prerequisites.iter().cloned());
            if let Some(cmd) = inline.filter(|c| !c.is_empty()) {
                target.recipe.push((index + 1, cmd.to_owned()));
            }
            current.push(name.to_owned());
            if name.starts_with("train") || name.starts_with("retrain") {
                out.push(
                    Evidence::file(
                        Signal::TrainingPipeline,
                        rel,
                        Some(index + 1),
                        format!("{rel}: make target `{name}`"),
                    )
                    .run_by([format!("make {name}")]),
                );
            }
        }
    }
}

/// The request file of a `smoke` step: cases that expect given outputs
/// check the model's answers, not only that it answers.
pub(super) fn smoke_file(root: &Path, rel: &str, step: &Source, out: &mut Collector) {
    // The path comes from the manifest: only a regular file inside the
    // project, and no more than any other file (a FIFO or `/dev/zero` must
    // not hang or exhaust the scan).
    let relative = Path::new(rel);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return;
    }
    let path = root.join(relative);
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return;
    };
    if !meta.is_file() || meta.len() > super::MAX_READ {
        return;
    }
    let mut bytes = Vec::new();
    let read = std::fs::File::open(&path).and_then(|f| {
        std::io::Read::read_to_end(&mut std::io::Read::take(f, super::MAX_READ), &mut bytes)
    });
    let (Ok(_), Ok(text)) = (read, String::from_utf8(bytes)) else {
        return;
    };
    let checked = text.matches("\"outputs\"").count();
    if checked == 0 {
        return;
    }
    out.push(
        Evidence::file(
            Signal::NumericalChecks,
            rel,
            None,
            format!(
                "{rel}: {checked} smoke cases check the model's outputs (step at {})",
                step.describe()
            ),
        )
        .automated(),
    );
}
