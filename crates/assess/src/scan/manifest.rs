//! Evidence from `mlops.toml`: the pipeline's steps, read leniently.
//!
//! The file is parsed as plain TOML, not compiled into a pipeline: a
//! manifest `mlops validate` would reject still shows what its author meant
//! to automate. Every step is automated (the pipeline runs it); a `run` step
//! and a `kind` step's `with.command` are [`AutomatedCommand`]s, and every
//! string of a `kind` step's `with` table is a reference that links the
//! files it names (a data-validation step's schema file).

use mlops_core::Stage;
use toml::{Table, Value};

use super::link::Target;
use super::text::{cut, line_at};
use super::{Collector, Origin};
use crate::evidence::{AutomatedCommand, Evidence, Signal, Source};

const FILE: &str = "mlops.toml";

/// Reads `mlops.toml`; returns `[project] name`.
pub(super) fn scan(text: &str, out: &mut Collector) -> Option<String> {
    let table = match toml::from_str::<Table>(text) {
        Ok(table) => table,
        Err(err) => {
            let at = err
                .span()
                .map(|span| format!(":{}", line_at(text, span.start)))
                .unwrap_or_default();
            out.notes.push(format!(
                "{FILE}{at}: {}",
                err.message().trim_end_matches('.')
            ));
            return None;
        }
    };
    let name = table
        .get("project")
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(infra) = table.get("infra").and_then(Value::as_table) {
        let services = infra
            .get("services")
            .and_then(Value::as_table)
            .map_or(0, Table::len);
        let provider = infra.get("provider").and_then(Value::as_str).unwrap_or("?");
        out.push(
            Evidence::file(
                Signal::InfrastructureCode,
                FILE,
                header_line(text, &["infra"]),
                format!(
                    "{FILE}: [infra] declares {services} service{} (provider {provider})",
                    if services == 1 { "" } else { "s" }
                ),
            )
            .automated(),
        );
    }
    for stage in Stage::ALL {
        let Some(steps) = table
            .get(stage.name())
            .and_then(|s| s.get("steps"))
            .and_then(Value::as_table)
        else {
            continue;
        };
        for (name, step) in steps {
            if let Some(step) = step.as_table() {
                scan_step(text, stage, name, step, out);
            }
        }
    }
    name
}

fn scan_step(text: &str, stage: Stage, name: &str, step: &Table, out: &mut Collector) {
    let line = header_line(text, &[stage.name(), "steps", name]);
    let source = Source::file(FILE, line);
    let run = step.get("run").and_then(Value::as_str);
    let kind = step.get("kind").and_then(Value::as_str);
    let with = step.get("with").and_then(Value::as_table);
    let with_command = with.and_then(|w| w.get("command")).and_then(Value::as_str);
    if let Some(run) = run {
        out.command(mlops_command(run, &source), Origin::Mlops, false);
    }
    if let Some(command) = with_command {
        out.command(mlops_command(command, &source), Origin::Mlops, false);
    }
    if let Some(with) = with {
        let mut strings = Vec::new();
        collect_strings(with, &mut strings);
        out.references.extend(
            strings
                .iter()
                .filter_map(|s| Target::new(s, source.clone(), source.describe())),
        );
    }
    let evidence =
        |signal, summary: String| Evidence::file(signal, FILE, line, summary).automated();
    let shown = run
        .or(with_command)
        .map(|c| format!(" (`{}`)", cut(c, 80)))
        .unwrap_or_default();
    let param = |key: &str| with.and_then(|w| w.get(key)).and_then(Value::as_str);
    if let Some(kind) = kind {
        let step = format!("{FILE}: step `{name}`");
        match kind {
            "environment" => out.push(evidence(
                Signal::LockedEnvironment,
                format!("{step} builds the environment from pinned inputs"),
            )),
            "infra-apply" => out.push(evidence(
                Signal::Deployment,
                format!("{step} converges the [infra] services"),
            )),
            "tests" => out.push(evidence(
                Signal::UnitTests,
                format!("{step} runs the tests{shown} and reads their JUnit report"),
            )),
            "data-validation" => out.push(evidence(
                Signal::DataTests,
                format!(
                    "{step} checks {} against {}",
                    param("file").unwrap_or("the data"),
                    param("schema-file").unwrap_or("a schema")
                ),
            )),
            "model-gate" => {
                let thresholds: Vec<&str> = with
                    .and_then(|w| w.get("thresholds"))
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                out.push(evidence(
                    Signal::ModelValidation,
                    format!("{step} gates the model on {}", thresholds.join(", ")),
                ));
                if param("baseline") != Some("none") {
                    out.push(evidence(
                        Signal::BaselineComparison,
                        format!("{step} allows no regression against the last passing run"),
                    ));
                }
            }
            "reproducibility" => out.push(evidence(
                Signal::Reproducibility,
                format!("{step} trains twice and compares the results"),
            )),
            "secret-scan" => out.push(evidence(
                Signal::SecretScanning,
                format!("{step} scans the tree and the git history for credentials"),
            )),
            "package" => {
                let model = param("model").unwrap_or("the model");
                out.push(evidence(
                    Signal::Packaging,
                    format!("{step} packages {model} as a content-addressed artifact"),
                ));
                out.push(evidence(
                    Signal::ModelRegistry,
                    format!("{step} registers {model} in the mlops registry"),
                ));
            }
            "deploy" => {
                let model = param("model").or(param("service")).unwrap_or("the model");
                let environment = param("environment").unwrap_or("an environment");
                out.push(evidence(
                    Signal::Deployment,
                    format!("{step} deploys {model} to {environment}"),
                ));
                out.push(evidence(
                    Signal::ModelRegistry,
                    format!("{step} deploys a registered version of {model}"),
                ));
            }
            // mlops's release kinds: an analysis that takes a failing
            // candidate out, and a promotion that publishes a release
            // version and notes (a shadow never promotes).
            "canary" | "blue-green" | "ab" => {
                out.push(evidence(
                    Signal::Rollback,
                    format!("{step} rolls a candidate back when its analysis fails"),
                ));
                out.push(evidence(
                    Signal::ReleaseVersioning,
                    format!("{step} gives each promotion a release version and notes"),
                ));
            }
            "shadow" => out.push(evidence(
                Signal::Rollback,
                format!("{step} archives a candidate whose answers disagree"),
            )),
            // mlops's SLO check: it runs the environment's metrics
            // collector (monitoring) and judges the SLOs (alerting).
            "slo-check" => out.push(evidence(
                Signal::MonitoringConfig,
                format!("{step} runs a metrics collector on the release environment"),
            )),
            "smoke" => {
                out.push(evidence(
                    Signal::SmokeTests,
                    format!(
                        "{step} sends {} to every replica",
                        param("requests").unwrap_or("sample requests")
                    ),
                ));
                if let Some(requests) = param("requests") {
                    out.smoke_files.push((requests.to_owned(), source.clone()));
                }
            }
            _ => {}
        }
    }
    let words = format!(
        "{name} {} {}",
        kind.unwrap_or(""),
        run.or(with_command).unwrap_or("")
    )
    .to_ascii_lowercase();
    for (signal, what) in stage_signals(stage, &words) {
        out.push(evidence(
            signal,
            format!("{FILE}: {} step `{name}` {what}{shown}", stage.name()),
        ));
    }
    if kind.is_none() && mentions(&words, &["train", "training", "retrain", "fit"]) {
        out.push(evidence(
            Signal::TrainingPipeline,
            format!("{FILE}: step `{name}` trains{shown}"),
        ));
    }
    if mentions(&words, &["smoke"]) && kind != Some("smoke") {
        out.push(evidence(
            Signal::SmokeTests,
            format!("{FILE}: step `{name}` runs smoke tests{shown}"),
        ));
    }
}

fn mlops_command(command: &str, source: &Source) -> AutomatedCommand {
    AutomatedCommand {
        system: "mlops".to_owned(),
        command: command.to_owned(),
        source: source.clone(),
        scheduled: false,
    }
}

/// Whether `text` holds one of `words` as a word (`load-check` holds
/// `load`; `download` does not).
fn mentions(text: &str, words: &[&str]) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|part| words.contains(&part))
}

/// Signals a step shows by its stage and what it says (name, kind,
/// command).
fn stage_signals(stage: Stage, words: &str) -> Vec<(Signal, &'static str)> {
    let mut found = Vec::new();
    let says = |list: &[&str]| {
        mentions(words, list)
            || list
                .iter()
                .any(|w| w.contains(['-', '/']) && words.contains(w))
    };
    match stage {
        Stage::Release => {
            if says(&[
                "canary",
                "shadow",
                "blue-green",
                "bluegreen",
                "ab",
                "a/b",
                "split",
                "traffic",
            ]) {
                found.push((Signal::ProgressiveDelivery, "releases progressively"));
            }
            if says(&["rollback", "roll-back", "revert", "undo"]) {
                found.push((Signal::Rollback, "rolls back"));
            }
            if says(&[
                "version",
                "versions",
                "tag",
                "changelog",
                "release-notes",
                "notes",
                "semver",
            ]) {
                found.push((Signal::ReleaseVersioning, "versions the release"));
            }
        }
        Stage::Apm => {
            let mut any = false;
            if says(&[
                "alert",
                "alerts",
                "alerting",
                "slo",
                "slos",
                "error-budget",
                "budget",
            ]) {
                found.push((Signal::Alerting, "checks alerts or SLOs"));
                any = true;
            }
            if says(&["drift", "psi"]) {
                found.push((Signal::DriftMonitoring, "monitors drift"));
                any = true;
            }
            if says(&["dashboard", "dashboards", "grafana"]) {
                found.push((Signal::Dashboards, "provides a dashboard"));
                any = true;
            }
            if !any || says(&["scrape", "metrics", "monitor", "monitoring", "prometheus"]) {
                found.push((Signal::MonitoringConfig, "monitors the service"));
            }
        }
        Stage::Loadtest => {
            if says(&[
                "autoscale",
                "autoscaling",
                "autoscaler",
                "scale",
                "scaling",
                "hpa",
                "replicas",
            ]) {
                found.push((Signal::Autoscaling, "scales the service"));
            } else if !says(&["stop", "teardown", "cleanup", "clean", "down"]) {
                found.push((Signal::LoadTest, "load-tests the service"));
            }
        }
        _ => {}
    }
    found
}

fn collect_strings(table: &Table, out: &mut Vec<String>) {
    fn value(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| value(i, out)),
            Value::Table(t) => collect_strings(t, out),
            _ => {}
        }
    }
    for (key, v) in table {
        if key != "command" {
            value(v, out);
        }
    }
}

/// The line of the table header `[a.b.c]` (keys may be quoted).
fn header_line(text: &str, path: &[&str]) -> Option<usize> {
    text.lines().enumerate().find_map(|(index, line)| {
        let inner = line.trim().strip_prefix('[')?;
        if inner.starts_with('[') {
            return None;
        }
        let inner = &inner[..inner.find(']')?];
        let keys: Vec<&str> = inner
            .split('.')
            .map(|k| k.trim().trim_matches(['"', '\'']))
            .collect();
        (keys == path).then_some(index + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_with_quotes_and_spaces() {
        let text =
            "[project]\nname = \"x\"\n\n[ ci . steps . \"unit-tests\" ]\nrun = \"cargo test\"\n";
        assert_eq!(header_line(text, &["ci", "steps", "unit-tests"]), Some(4));
        assert_eq!(header_line(text, &["cd", "steps", "unit-tests"]), None);
    }

    #[test]
    fn words_are_whole() {
        assert!(mentions("load-check cargo run", &["load"]));
        assert!(!mentions("download", &["load"]));
    }
}
