//! Evidence from what automated commands do: deploy, roll back, release,
//! load-test, scan for secrets, run the pipeline, retrain on a schedule.
//!
//! Every such evidence is automated and sits at the command's line.

use std::sync::LazyLock;

use regex::bytes::RegexSet;

use super::files::CiSystem;
use super::link::only_installs;
use super::text::{cut, pattern_set};
use super::{Invocation, Origin};
use crate::evidence::{Evidence, Signal, Source};

/// A pattern over one command line.
struct CommandRule {
    signal: Signal,
    /// Only for CI commands (an `mlops.toml` step does not run the
    /// pipeline it is part of).
    ci_only: bool,
    /// Also for commands that only install packages.
    on_install: bool,
    pattern: &'static str,
}

/// A command that trains: a `train` word, script or module
/// (`python -m pkg.train`, `make train`, `train_model.py`), or a pipeline
/// runner. Not `training_results.json`.
const TRAINS: &str = r"(?i)(?:^|[\s/.:])(?:re)?train(?:ing)?(?:_(?:model|models|pipeline|job))?(?:\.py|\.r|\.sh|\.ipynb)?(?:\s|$|;|&|\))|\bmlops\s+pipeline\s+run\b|\bdvc\s+repro\b|\bdvc\s+exp\s+run\b|\bmlflow\s+run\b";

const RULES: &[CommandRule] = &[
    CommandRule {
        signal: Signal::SecretScanning,
        ci_only: false,
        on_install: false,
        pattern: r"\b(?:gitleaks|trufflehog|detect-secrets|ggshield|git-secrets|secretlint)\b",
    },
    CommandRule {
        signal: Signal::IntegrationTests,
        ci_only: true,
        on_install: false,
        pattern: r"\bmlops\s+pipeline\s+run\b|\bdvc\s+repro\b",
    },
    CommandRule {
        signal: Signal::IntegrationTests,
        ci_only: false,
        on_install: false,
        pattern: r"\b(?:pytest|cargo\s+test|cargo\s+nextest)\b.*\b(?:integration|e2e)\b",
    },
    CommandRule {
        signal: Signal::Deployment,
        ci_only: false,
        on_install: false,
        pattern: r"\bkubectl\s+(?:apply|create|set\s+image|rollout\s+restart)\b|\bhelm\s+(?:upgrade|install)\b|\bdocker\s+push\b|\baz\s+ml\s+(?:online-deployment|online-endpoint|model\s+deploy)\b|\bgcloud\s+(?:run|app)\s+deploy\b|\b(?:serverless|sls)\s+deploy\b|\bmlops\s+infra\s+apply\b|\b(?:fly|flyctl)\s+deploy\b|\bterraform\s+apply\b|\bpulumi\s+up\b|\bargocd\s+app\s+sync\b|\baws\s+ecs\s+update-service\b|\bskaffold\s+(?:run|deploy)\b|\bcdk\s+deploy\b|^uses: (?:azure/webapps-deploy|azure/k8s-deploy|google-github-actions/deploy-cloudrun|aws-actions/amazon-ecs-deploy-task-definition)|^task: (?:HelmDeploy|KubernetesManifest|Kubernetes|AzureWebApp\w*|AzureFunctionApp\w*|AzureRmWebAppDeployment|AzureResourceManagerTemplateDeployment|AzureResourceGroupDeployment|AzureContainerApps)@",
    },
    CommandRule {
        signal: Signal::SmokeTests,
        ci_only: false,
        on_install: false,
        pattern: r"\b(?:curl|wget|http|httpie)\b.*(?:/healthz?|/readyz?|/livez?|/predict|/infer|/invocations|/v2/models|/v2/health|/ping)\b|\bsmoke[_-]?tests?\b",
    },
    CommandRule {
        signal: Signal::LoadTest,
        ci_only: false,
        on_install: false,
        pattern: r"\blocust\b|\bk6\s+run\b|\bwrk2?\s+-|\bhey\s+-|\bab\s+-[nckt]\b|\bvegeta\s+attack\b|\bjmeter\s+-n\b|\bartillery\s+run\b|\boha\s+-|\bbombardier\s+-|\bsiege\s+-|^uses: grafana/(?:k6-action|run-k6-action|setup-k6-action)",
    },
    CommandRule {
        signal: Signal::Rollback,
        ci_only: false,
        on_install: false,
        pattern: r"\bkubectl\s+rollout\s+undo\b|\bhelm\s+rollback\b|\bkubectl\s+argo\s+rollouts\s+(?:abort|undo)\b|\bmlops\b.*\brollback\b",
    },
    CommandRule {
        signal: Signal::ProgressiveDelivery,
        ci_only: false,
        on_install: false,
        pattern: r"\bkubectl\s+argo\s+rollouts\s+(?:promote|set)\b|\bupdate-traffic\b|--traffic\b|\bflagger\b|\bmlops\s+release\b.*\b(?:canary|shadow|blue-?green)\b",
    },
    CommandRule {
        signal: Signal::ReleaseVersioning,
        ci_only: false,
        on_install: false,
        pattern: r"\bsemantic-release\b|\brelease-please\b|\bgh\s+release\s+create\b|\bgit\s+tag\b|\bcargo\s+release\b|\bbump2?version\b|\bcz\s+bump\b|\bchangeset\s+version\b|^uses: (?:google-github-actions/release-please-action|googleapis/release-please-action|softprops/action-gh-release|actions/create-release|cycjimmy/semantic-release-action|ncipollo/release-action)",
    },
    CommandRule {
        signal: Signal::DataTests,
        ci_only: false,
        on_install: false,
        pattern: r"\b(?:great_expectations|gx)\s+checkpoint\b|\bmlops\s+data\s+validate\b",
    },
    CommandRule {
        signal: Signal::ModelValidation,
        ci_only: false,
        on_install: false,
        pattern: r"--(?:min|max)[-_](?:accuracy|f1\w*|auc|roc[-_]auc|rmse|r2|precision|recall|mae|mse|log[-_]?loss)\b",
    },
    CommandRule {
        signal: Signal::LockedEnvironment,
        ci_only: false,
        on_install: true,
        pattern: r"\bcargo\s+(?:build|fetch|install|check)\b.*--(?:locked|frozen)\b|\bpip3?\s+install\b.*--require-hashes|\buv\s+sync\b.*--(?:locked|frozen)\b|\bpoetry\s+install\b|\bpipenv\s+(?:sync|install\s+--deploy)\b|\bpdm\s+sync\b|\bconda-lock\s+install\b|\bnpm\s+ci\b|\brenv::restore\b",
    },
    CommandRule {
        signal: Signal::ExperimentTracking,
        ci_only: false,
        on_install: false,
        pattern: r"\bmlflow\s+run\b|\bdvc\s+exp\s+run\b",
    },
    CommandRule {
        signal: Signal::TrainingPipeline,
        ci_only: true,
        on_install: false,
        pattern: TRAINS,
    },
];

static SET: LazyLock<RegexSet> = LazyLock::new(|| pattern_set(RULES.iter().map(|r| r.pattern)));
static TRAINS_SET: LazyLock<RegexSet> = LazyLock::new(|| pattern_set([TRAINS]));

/// The evidence the command lines show.
pub(super) fn evidence(invocations: &[Invocation]) -> Vec<Evidence> {
    let mut out = Vec::new();
    for invocation in invocations {
        let text = invocation.text.as_bytes();
        let install = only_installs(&invocation.text);
        let Source::File { path, line } = &invocation.source else {
            continue;
        };
        let mut summary = format!(
            "{} runs `{}`",
            who(&invocation.system),
            cut(&invocation.text, 100)
        );
        if let Some(via) = &invocation.via {
            summary.push_str(&format!(" (through {})", via.describe()));
        }
        let ci = invocation.origin == Origin::Ci;
        let mut signals: Vec<Signal> = Vec::new();
        for index in SET.matches(text).iter() {
            let rule = &RULES[index];
            if (rule.ci_only && !ci) || (install && !rule.on_install) {
                continue;
            }
            if !signals.contains(&rule.signal) {
                signals.push(rule.signal);
            }
        }
        if invocation.on_schedule && !install && ci && TRAINS_SET.is_match(text) {
            signals.push(Signal::ScheduledRetraining);
        }
        for signal in signals {
            let summary = if signal == Signal::ScheduledRetraining {
                format!("{summary} on a schedule")
            } else {
                summary.clone()
            };
            out.push(Evidence::file(signal, path.clone(), *line, summary).automated());
        }
    }
    out
}

fn who(system: &str) -> &str {
    match system {
        "mlops" => "the mlops pipeline",
        other => match CiSystem::from_id(other) {
            Some(ci) => ci.title(),
            None => other,
        },
    }
}
