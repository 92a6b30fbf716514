//! Evidence from CI configuration: the file itself, the commands its jobs
//! run (with their lines), and what its triggers show — pull or merge
//! requests (code review), version tags (release versioning), schedules.
//!
//! YAML is read through [`super::yaml::outline`]; Jenkinsfiles by pattern.
//! A file that does not read is a note, with its line, and shows nothing.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::bytes::Regex;

use super::files::CiSystem;
use super::text::{line_at, pattern, shell_lines};
use super::yaml::{self, Node, Value, YamlError};
use super::{Collector, FileCtx, Origin};
use crate::evidence::{AutomatedCommand, Evidence, Signal, Source};

/// A command of a CI file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Command {
    line: usize,
    text: String,
    /// Runs only on a schedule.
    scheduled: bool,
    /// Runs on a schedule, perhaps among other triggers.
    on_schedule: bool,
}

/// What a CI file shows.
#[derive(Debug, Default)]
struct CiFile {
    name: Option<String>,
    triggers: Vec<String>,
    commands: Vec<Command>,
    /// The line showing it runs on pull or merge requests.
    reviews: Option<usize>,
    /// The line showing it runs on version tags or releases.
    tags: Option<usize>,
}

/// Reads one CI file.
pub(super) fn scan(ctx: &FileCtx<'_>, system: CiSystem, text: &str, out: &mut Collector) {
    let read = match system {
        CiSystem::GithubActions => github(text),
        CiSystem::GitlabCi => gitlab(text),
        CiSystem::Jenkins => Ok(jenkins(text)),
        other => generic(other, text),
    };
    let ci = match read {
        Ok(ci) => ci,
        Err(err) => {
            out.notes
                .push(format!("{}:{}: {}", ctx.rel, err.line, err.message));
            return;
        }
    };
    let rel = ctx.rel;
    let mut summary = format!("{rel}: {} configuration", system.title());
    if let Some(name) = &ci.name {
        summary.push_str(&format!(" `{name}`"));
    }
    let mut facts = Vec::new();
    if !ci.triggers.is_empty() {
        facts.push(format!("on {}", ci.triggers.join(", ")));
    }
    facts.push(format!("{} commands", ci.commands.len()));
    summary.push_str(&format!(" ({})", facts.join("; ")));
    out.push(Evidence::file(Signal::CiConfig, rel, None, summary).automated());
    if let Some(line) = ci.reviews {
        out.push(
            Evidence::file(
                Signal::CodeReview,
                rel,
                Some(line),
                format!("{rel}: CI runs on every pull or merge request"),
            )
            .automated(),
        );
    }
    if let Some(line) = ci.tags {
        out.push(
            Evidence::file(
                Signal::ReleaseVersioning,
                rel,
                Some(line),
                format!("{rel}: CI runs on version tags or releases"),
            )
            .automated(),
        );
    }
    for command in ci.commands {
        out.command(
            AutomatedCommand {
                system: system.id().to_owned(),
                command: command.text,
                source: Source::file(rel, Some(command.line)),
                scheduled: command.scheduled,
            },
            Origin::Ci,
            command.on_schedule,
        );
    }
}

/// The commands of a value (a script block, a list item), one a line.
fn commands_of(
    lines: Vec<(usize, String)>,
    scheduled: bool,
    on_schedule: bool,
    out: &mut Vec<Command>,
) {
    out.extend(shell_lines(lines).into_iter().map(|(line, text)| Command {
        line,
        text,
        scheduled,
        on_schedule,
    }));
}

fn github(text: &str) -> Result<CiFile, YamlError> {
    let nodes = yaml::outline(text)?;
    let top = |key: &str| {
        nodes
            .iter()
            .find(|n| n.ancestors.is_empty() && n.key.as_deref() == Some(key))
    };
    let Some(on) = top("on").or_else(|| top("true")) else {
        return Err(YamlError {
            line: 1,
            message: "a workflow needs `on:` (its triggers)".to_owned(),
        });
    };
    if top("jobs").is_none() {
        return Err(YamlError {
            line: 1,
            message: "a workflow needs `jobs:`".to_owned(),
        });
    }
    let on_key = on.key.clone().unwrap_or_default();
    let mut triggers: Vec<(String, usize)> = Vec::new();
    match &on.value {
        Value::Scalar(s) => triggers.push((s.clone(), on.line)),
        Value::Flow(f) => triggers.extend(yaml::flow_items(f).into_iter().map(|t| (t, on.line))),
        _ => {}
    }
    for node in &nodes {
        if node.ancestors.len() == 1 && node.ancestors[0] == on_key {
            if let Some(key) = &node.key {
                triggers.push((key.clone(), node.line));
            }
        } else if node.ancestors.len() == 2
            && node.ancestors[0] == on_key
            && node.is_item_value()
            && let Value::Scalar(s) = &node.value
        {
            triggers.push((s.clone(), node.line));
        }
    }
    let names: Vec<&str> = triggers.iter().map(|(t, _)| t.as_str()).collect();
    let on_schedule = names.contains(&"schedule");
    let scheduled = on_schedule
        && names
            .iter()
            .all(|t| matches!(*t, "schedule" | "workflow_dispatch"));
    let reviews = triggers
        .iter()
        .find(|(t, _)| {
            matches!(
                t.as_str(),
                "pull_request" | "pull_request_target" | "merge_group"
            )
        })
        .map(|(_, line)| *line);
    let tags = nodes
        .iter()
        .find(|n| {
            (n.is_under(&[&on_key, "push"]) && n.key.as_deref() == Some("tags"))
                || (n.ancestors.len() == 1
                    && n.ancestors[0] == on_key
                    && n.key.as_deref() == Some("push")
                    && matches!(&n.value, Value::Flow(f) if f.contains("tags")))
        })
        .map(|n| n.line)
        .or_else(|| {
            triggers
                .iter()
                .find(|(t, _)| t == "release")
                .map(|(_, line)| *line)
        });
    let mut commands = Vec::new();
    for node in &nodes {
        match node.key.as_deref() {
            Some("run") if node.ancestors.iter().any(|a| a == "steps") => {
                commands_of(node.strings(), scheduled, on_schedule, &mut commands);
            }
            Some("uses") => {
                if let Value::Scalar(action) = &node.value {
                    commands.push(Command {
                        line: node.line,
                        text: format!("uses: {action}"),
                        scheduled,
                        on_schedule,
                    });
                }
            }
            _ => {}
        }
    }
    let name = top("name").and_then(|n| match &n.value {
        Value::Scalar(s) => Some(s.clone()),
        _ => None,
    });
    Ok(CiFile {
        name,
        triggers: dedup(names.iter().map(|t| (*t).to_owned())),
        commands,
        reviews,
        tags,
    })
}

/// Whether YAML outside the usual places is an Azure Pipelines definition
/// or template: top-level `stages:`, `jobs:` or `steps:`, with Azure's
/// trigger keys or its step items (`- task:`, `- script:`, `- template:`),
/// and neither a Kubernetes `apiVersion:` nor a GitHub `on:`.
pub(super) fn is_azure_pipeline(text: &str) -> bool {
    let mut structure = false;
    let mut trigger = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t', '#', '-']) {
            continue;
        }
        match line.split(':').next().unwrap_or("").trim() {
            "stages" | "jobs" | "steps" => structure = true,
            "trigger" | "pr" | "schedules" | "pool" | "extends" => trigger = true,
            "apiVersion" | "on" | "\"on\"" | "kind" => return false,
            _ => {}
        }
    }
    structure
        && (trigger
            || text.lines().any(|l| {
                let item = l.trim_start();
                [
                    "- task:",
                    "- template:",
                    "- script:",
                    "- bash:",
                    "- pwsh:",
                    "- powershell:",
                ]
                .iter()
                .any(|step| item.starts_with(step))
            }))
}

fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items.filter(|i| seen.insert(i.clone())).collect()
}

const GITLAB_SCRIPTS: &[&str] = &["script", "before_script", "after_script"];

fn gitlab(text: &str) -> Result<CiFile, YamlError> {
    let nodes = yaml::outline(text)?;
    // Jobs whose rules run them on a schedule.
    let mut scheduled_jobs: HashMap<&str, bool> = HashMap::new();
    let mut reviews = None;
    let mut tags = None;
    for node in &nodes {
        let Some(job) = node.ancestors.first() else {
            continue;
        };
        let strings = node.strings();
        let says = |needle: &str| strings.iter().any(|(_, s)| s.contains(needle));
        let in_rules = node
            .ancestors
            .iter()
            .any(|a| matches!(a.as_str(), "rules" | "only" | "except" | "workflow"));
        if in_rules && says("schedule") {
            let negated = node.ancestors.iter().any(|a| a == "except") || says("!=");
            let entry = scheduled_jobs.entry(job.as_str()).or_insert(true);
            *entry &= !negated;
        }
        if reviews.is_none() && says("merge_request") {
            reviews = Some(node.line);
        }
        if tags.is_none()
            && (says("CI_COMMIT_TAG")
                || (node.parent_key() == Some("only") && strings.iter().any(|(_, s)| s == "tags")))
        {
            tags = Some(node.line);
        }
    }
    let mut commands = Vec::new();
    for node in &nodes {
        let under_script = node.is_item_value()
            && node.ancestors.len() >= 2
            && GITLAB_SCRIPTS.contains(&node.ancestors[node.ancestors.len() - 2].as_str());
        let script_key = node
            .key
            .as_deref()
            .is_some_and(|k| GITLAB_SCRIPTS.contains(&k));
        if under_script || script_key {
            let job = node.ancestors.first().map_or("", String::as_str);
            let scheduled = scheduled_jobs.get(job).copied().unwrap_or(false);
            commands_of(node.strings(), scheduled, scheduled, &mut commands);
        }
    }
    let mut triggers = Vec::new();
    if reviews.is_some() {
        triggers.push("merge requests".to_owned());
    }
    if scheduled_jobs.values().any(|s| *s) {
        triggers.push("schedule".to_owned());
    }
    Ok(CiFile {
        name: None,
        triggers,
        commands,
        reviews,
        tags,
    })
}

/// CircleCI, Azure Pipelines, Travis, Bitbucket, Buildkite, Drone: the
/// values of their command keys, and any schedule.
fn generic(system: CiSystem, text: &str) -> Result<CiFile, YamlError> {
    let keys: &[&str] = match system {
        CiSystem::Circleci => &["run", "command"],
        CiSystem::AzurePipelines => &["script", "bash", "pwsh", "powershell", "inlineScript"],
        CiSystem::Travis => &[
            "script",
            "install",
            "before_install",
            "before_script",
            "after_script",
            "after_success",
            "before_deploy",
        ],
        CiSystem::Bitbucket => &["script", "after-script"],
        CiSystem::Buildkite | CiSystem::Drone => &["command", "commands"],
        _ => &[],
    };
    let nodes = yaml::outline(text)?;
    let scalar_is = |n: &Node, want: &str| matches!(&n.value, Value::Scalar(s) if s == want);
    let on_schedule = nodes.iter().any(|n| {
        matches!(n.key.as_deref(), Some("schedule" | "schedules" | "cron"))
            || (n.parent_key() == Some("event") && n.strings().iter().any(|(_, s)| s == "cron"))
    });
    let reviews = nodes
        .iter()
        .find(|n| {
            (n.key.as_deref() == Some("pr") && n.ancestors.is_empty() && !scalar_is(n, "none"))
                || n.key.as_deref() == Some("pull-requests")
                || n.strings().iter().any(|(_, s)| s == "pull_request")
        })
        .map(|n| n.line);
    let tags = nodes
        .iter()
        .find(|n| {
            let trigger = n.ancestors.iter().any(|a| {
                matches!(
                    a.as_str(),
                    "trigger" | "pipelines" | "filters" | "when" | "event"
                )
            });
            (trigger
                && (n.key.as_deref() == Some("tags")
                    || n.strings().iter().any(|(_, s)| s == "tag")))
                || (n.ancestors.is_empty() && n.key.as_deref() == Some("tags"))
        })
        .map(|n| n.line);
    // Azure runs a pipeline only on its schedules when `trigger: none`; the
    // other systems' schedules are read as the only trigger.
    let scheduled = on_schedule
        && (system != CiSystem::AzurePipelines
            || nodes.iter().any(|n| {
                n.ancestors.is_empty()
                    && n.key.as_deref() == Some("trigger")
                    && scalar_is(n, "none")
            }));
    let mut commands = Vec::new();
    for node in &nodes {
        let under_key = node.is_item_value()
            && node.ancestors.len() >= 2
            && keys.contains(&node.ancestors[node.ancestors.len() - 2].as_str());
        let is_key = node.key.as_deref().is_some_and(|k| keys.contains(&k));
        if under_key || is_key {
            commands_of(node.strings(), scheduled, on_schedule, &mut commands);
        } else if system == CiSystem::AzurePipelines
            && node.key.as_deref() == Some("task")
            && let Value::Scalar(task) = &node.value
        {
            commands.push(Command {
                line: node.line,
                text: format!("task: {task}"),
                scheduled,
                on_schedule,
            });
        }
    }
    let mut triggers = Vec::new();
    if on_schedule {
        triggers.push("schedule".to_owned());
    }
    Ok(CiFile {
        name: None,
        triggers,
        commands,
        reviews,
        tags,
    })
}

/// A Jenkinsfile: `sh`, `bat` and `powershell` steps.
fn jenkins(text: &str) -> CiFile {
    static STEP: LazyLock<Regex> = LazyLock::new(|| {
        pattern(r#"\b(?:sh|bat|pwsh|powershell)\s*\(?\s*(?:script\s*:\s*)?('''|"""|'|")"#)
    });
    let on_schedule = text.contains("cron(") || text.contains("cron '") || text.contains("cron \"");
    let mut commands = Vec::new();
    for caps in STEP.captures_iter(text.as_bytes()) {
        let Some(quote) = caps.get(1) else {
            continue;
        };
        let delimiter = text.get(quote.range()).unwrap_or("'");
        let body_start = quote.end();
        let rest = text.get(body_start..).unwrap_or("");
        let body_end = if delimiter.len() == 3 {
            rest.find(delimiter)
        } else {
            rest.find([delimiter.chars().next().unwrap_or('\''), '\n'])
        };
        let Some(end) = body_end else {
            continue;
        };
        let first_line = line_at(text, body_start);
        let lines = rest[..end]
            .lines()
            .enumerate()
            .map(|(i, l)| (first_line + i, l.to_owned()))
            .collect();
        commands_of(lines, on_schedule, on_schedule, &mut commands);
    }
    let find = |needle: &str| text.find(needle).map(|at| line_at(text, at));
    CiFile {
        name: None,
        triggers: if on_schedule {
            vec!["schedule".to_owned()]
        } else {
            Vec::new()
        },
        commands,
        reviews: find("changeRequest()"),
        tags: find("buildingTag()"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(commands: &[Command]) -> Vec<(usize, &str, bool)> {
        commands
            .iter()
            .map(|c| (c.line, c.text.as_str(), c.scheduled))
            .collect()
    }

    #[test]
    fn github_runs_uses_and_triggers() {
        let text = "\
name: CI
on:
  push:
    tags: ['v*']
  pull_request:
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: pip install -r requirements.txt
      - name: Test
        run: |
          python -m pytest \\
            -q
          # done
          echo ok
";
        let ci = github(text).unwrap();
        assert_eq!(ci.triggers, ["push", "pull_request"]);
        assert_eq!(ci.reviews, Some(5));
        assert_eq!(ci.tags, Some(4));
        assert_eq!(
            lines(&ci.commands),
            [
                (10, "uses: actions/checkout@v4", false),
                (11, "pip install -r requirements.txt", false),
                (14, "python -m pytest -q", false),
                (17, "echo ok", false),
            ]
        );
    }

    #[test]
    fn github_schedule_only_workflows_are_scheduled() {
        let text = "on:\n  schedule:\n    - cron: '0 3 * * 1'\n  workflow_dispatch:\njobs:\n  retrain:\n    steps:\n      - run: python train.py\n";
        let ci = github(text).unwrap();
        assert_eq!(lines(&ci.commands), [(8, "python train.py", true)]);
        let text = "on: [push, schedule]\njobs:\n  a:\n    steps:\n      - run: make\n";
        let ci = github(text).unwrap();
        assert!(!ci.commands[0].scheduled && ci.commands[0].on_schedule);
    }

    #[test]
    fn gitlab_scripts_rules_and_merge_requests() {
        let text = "\
stages: [test]
test:
  rules:
    - if: $CI_PIPELINE_SOURCE == \"merge_request_event\"
  before_script: pip install -r requirements.txt
  script:
  - pytest -q
  - |
    python -m model.train
nightly:
  rules:
    - if: $CI_PIPELINE_SOURCE == \"schedule\"
  script: [\"python -m model.train\"]
";
        let ci = gitlab(text).unwrap();
        assert_eq!(ci.reviews, Some(4));
        assert_eq!(
            lines(&ci.commands),
            [
                (5, "pip install -r requirements.txt", false),
                (7, "pytest -q", false),
                (9, "python -m model.train", false),
                (13, "python -m model.train", true),
            ]
        );
    }

    #[test]
    fn circleci_run_and_command_keys() {
        let text = "\
version: 2.1
jobs:
  test:
    steps:
      - checkout
      - run: pytest
      - run:
          name: Train
          command: |
            python train.py
";
        let ci = generic(CiSystem::Circleci, text).unwrap();
        assert_eq!(
            lines(&ci.commands),
            [(6, "pytest", false), (10, "python train.py", false)]
        );
    }

    #[test]
    fn jenkins_sh_steps() {
        let text = "pipeline {\n  stages {\n    stage('t') { steps { sh 'pytest -q' } }\n    stage('u') { steps { sh '''\n      make train\n      make deploy\n    ''' } }\n  }\n}\n";
        let ci = jenkins(text);
        assert_eq!(
            lines(&ci.commands),
            [
                (3, "pytest -q", false),
                (5, "make train", false),
                (6, "make deploy", false)
            ]
        );
    }
}
