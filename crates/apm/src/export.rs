//! The SLOs and scrape targets for the monitoring systems teams already
//! run: Prometheus recording and alerting rules (the same multiwindow
//! burn-rate rules the collector evaluates, the same windows scaled by the
//! same period, the same minimum-traffic guard), a Prometheus scrape
//! configuration, and a Grafana dashboard.
//!
//! The YAML is written by hand, every string double-quoted with JSON
//! escapes (valid YAML), in a stable order so that diffs are reviewable.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::settings::{ApmSettings, Objective, Slo};
use crate::slo::{BurnRule, DURATION, REQUESTS, workbook_rules};

/// The rules file's name, as the scrape configuration refers to it.
pub const RULES_FILE: &str = "mlops-rules.yml";
/// The scrape configuration's file name.
pub const CONFIG_FILE: &str = "prometheus.yml";
/// The Grafana dashboard's file name.
pub const DASHBOARD_FILE: &str = "mlops-dashboard.json";

/// A scrape target: a job name and `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// The job (`mlops-gateway`, `mlops-collector`).
    pub job: String,
    /// `host:port`.
    pub address: String,
}

/// What an export wrote, and what it could not express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// File name to content.
    pub files: Vec<(String, String)>,
    /// What the files cannot say as the collector does.
    pub warnings: Vec<String>,
}

/// A duration as Prometheus writes one (`1h`, `6m56s666ms`).
pub fn prometheus_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= size {
            let _ = write!(out, "{}{unit}", ms / size);
            ms %= size;
        }
    }
    out
}

/// The recording rule name of an SLO's error ratio over `window`.
pub fn ratio_record(window: Duration) -> String {
    format!("slo:mlops_errors:ratio_rate{}", prometheus_duration(window))
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// `{a="x",b="y"}` from pairs, or nothing.
fn selector(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", q(v))).collect();
    format!("{{{}}}", inner.join(","))
}

/// The `le` label the gateway writes for a bound in seconds.
fn le(seconds: f64) -> String {
    format!("{seconds}")
}

/// The PromQL of an SLO's bad-request ratio over `window`.
pub fn error_ratio_expr(slo: &Slo, window: Duration) -> String {
    let w = prometheus_duration(window);
    let mut base: Vec<(&str, String)> = Vec::new();
    if let Some(v) = &slo.variant {
        base.push(("variant", v.clone()));
    }
    match slo.objective {
        Objective::Availability => {
            let mut bad = base.clone();
            bad.push(("code", "5xx".to_owned()));
            format!(
                "sum(rate({REQUESTS}{}[{w}])) / sum(rate({REQUESTS}{}[{w}]))",
                selector(&bad),
                selector(&base)
            )
        }
        Objective::Latency { threshold } => {
            let mut good = base.clone();
            good.push(("le", le(threshold.as_secs_f64())));
            format!(
                "1 - (sum(rate({DURATION}_bucket{}[{w}])) / sum(rate({DURATION}_count{}[{w}])))",
                selector(&good),
                selector(&base)
            )
        }
    }
}

/// A name for an alert: `MlopsSlo` and the SLO's and rule's names in
/// camel case.
fn alert_name(slo: &str, rule: &str) -> String {
    let camel = |s: &str| -> String {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| !p.is_empty())
            .map(|p| {
                let mut c = p.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    };
    format!("MlopsSlo{}{}", camel(slo), camel(rule))
}

/// The rules file: per SLO, a recording rule of its error ratio over each
/// window the alert rules use, and an alerting rule per burn-rate rule.
pub fn rules(settings: &ApmSettings, buckets: &[f64]) -> (String, Vec<String>) {
    let rules = workbook_rules(settings.period);
    let mut warnings = Vec::new();
    let mut windows: Vec<Duration> = rules.iter().flat_map(|r| [r.long, r.short]).collect();
    windows.sort();
    windows.dedup();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# mlops SLO rules, from [apm] (period {}): multiwindow burn-rate alerts as in the SRE workbook.\n# Written by `mlops monitor export prometheus`; check with `promtool check rules`.",
        prometheus_duration(settings.period)
    );
    out.push_str("groups:\n");
    out.push_str("  - name: \"mlops-slo-ratios\"\n    rules:\n");
    for slo in settings.slos.values() {
        if let Objective::Latency { threshold } = slo.objective {
            let t = threshold.as_secs_f64();
            if !buckets.iter().any(|b| (b - t).abs() < 1e-12) {
                warnings.push(format!(
                    "SLO `{}`: the gateway has no latency bucket at {t} s; the rules read `le=\"{}\"`, which Prometheus will not find (the collector interpolates between buckets)",
                    slo.name,
                    le(t)
                ));
            }
        }
        for w in &windows {
            let _ = writeln!(out, "      - record: {}", q(&ratio_record(*w)));
            let _ = writeln!(out, "        expr: {}", q(&error_ratio_expr(slo, *w)));
            let _ = writeln!(out, "        labels:\n          slo: {}", q(&slo.name));
        }
    }
    out.push_str("  - name: \"mlops-slo-alerts\"\n    rules:\n");
    for slo in settings.slos.values() {
        for rule in &rules {
            let _ = write!(out, "{}", alert(slo, rule, settings));
        }
    }
    if settings.slos.is_empty() {
        // A group with no rules is valid; say why it is empty.
        out.push_str("      []\n");
        warnings.push("[apm.slo] declares no SLO: the rules file has no rules".to_owned());
    }
    (
        out.replace("    rules:\n      []\n", "    rules: []\n"),
        warnings,
    )
}

fn alert(slo: &Slo, rule: &BurnRule, settings: &ApmSettings) -> String {
    let factor = rule.burn_rate * slo.budget();
    let sel = selector(&[("slo", slo.name.clone())]);
    let mut total_sel: Vec<(&str, String)> = Vec::new();
    if let Some(v) = &slo.variant {
        total_sel.push(("variant", v.clone()));
    }
    let expr = format!(
        "{long}{sel} > ({rate} * {budget})\nand\n{short}{sel} > ({rate} * {budget})\nand on()\nsum(increase({REQUESTS}{total}[{lw}])) >= {min}",
        long = ratio_record(rule.long),
        short = ratio_record(rule.short),
        rate = rule.burn_rate,
        budget = slo.budget(),
        total = selector(&total_sel),
        lw = prometheus_duration(rule.long),
        min = settings.min_requests,
    );
    let mut out = String::new();
    let _ = writeln!(
        out,
        "      - alert: {}",
        q(&alert_name(&slo.name, &rule.name))
    );
    let _ = writeln!(out, "        expr: {}", q(&expr));
    let _ = writeln!(
        out,
        "        for: {}",
        q(&prometheus_duration(settings.hold))
    );
    let _ = writeln!(
        out,
        "        labels:\n          severity: {}\n          slo: {}\n          rule: {}",
        q(rule.severity.as_str()),
        q(&slo.name),
        q(&rule.name)
    );
    let _ = writeln!(
        out,
        "        annotations:\n          summary: {}\n          description: {}",
        q(&format!(
            "SLO {} is burning its error budget over {} times too fast",
            slo.name, rule.burn_rate
        )),
        q(&format!(
            "Both the {} and the {} windows burn faster than {} (over {} of the budget of {} spent); fewer than {} requests never alert.",
            prometheus_duration(rule.long),
            prometheus_duration(rule.short),
            rule.burn_rate,
            factor,
            slo.budget(),
            settings.min_requests
        ))
    );
    out
}

/// The scrape configuration: every target every `scrape-interval`, the
/// rules evaluated as often, `labels` on every series.
pub fn scrape_config(
    settings: &ApmSettings,
    targets: &[ScrapeTarget],
    labels: &[(&str, String)],
) -> String {
    let interval = prometheus_duration(settings.scrape_interval);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# mlops scrape configuration, written by `mlops monitor export prometheus`; check with `promtool check config`.\nglobal:\n  scrape_interval: {}\n  evaluation_interval: {}\nrule_files:\n  - {}\nscrape_configs:",
        q(&interval),
        q(&interval),
        q(RULES_FILE)
    );
    for t in targets {
        let _ = writeln!(
            out,
            "  - job_name: {}\n    metrics_path: \"/metrics\"\n    static_configs:\n      - targets: [{}]",
            q(&t.job),
            q(&t.address)
        );
        if !labels.is_empty() {
            out.push_str("        labels:\n");
            for (k, v) in labels {
                let _ = writeln!(out, "          {k}: {}", q(v));
            }
        }
    }
    out
}

/// A Grafana dashboard (schema 39) reading a Prometheus data source: the
/// request rate and error ratio per variant, latency quantiles, the SLOs'
/// burn rates over the fast page's windows, replicas' CPU and memory.
pub fn grafana_dashboard(settings: &ApmSettings, service: &str) -> String {
    let ds = json!({ "type": "prometheus", "uid": "${DS_PROMETHEUS}" });
    let panel =
        |id: u32, title: &str, unit: &str, targets: Vec<(String, String)>, x: u32, y: u32| {
            json!({
                "id": id,
                "type": "timeseries",
                "title": title,
                "datasource": ds,
                "gridPos": { "h": 8, "w": 12, "x": x, "y": y },
                "fieldConfig": { "defaults": { "unit": unit }, "overrides": [] },
                "options": { "legend": { "displayMode": "list", "placement": "bottom" } },
                "targets": targets.into_iter().enumerate().map(|(i, (expr, legend))| json!({
                    "refId": ((b'A' + i as u8) as char).to_string(),
                    "datasource": ds,
                    "expr": expr,
                    "legendFormat": legend,
                })).collect::<Vec<_>>(),
            })
        };
    let fast = workbook_rules(settings.period)
        .into_iter()
        .next()
        .map_or(Duration::from_secs(300), |r| r.short);
    let w = prometheus_duration(fast.max(settings.scrape_interval * 4));
    let mut panels = vec![
        panel(
            1,
            "Requests per second by variant",
            "reqps",
            vec![(
                format!("sum by (variant) (rate({REQUESTS}[{w}]))"),
                "{{variant}}".into(),
            )],
            0,
            0,
        ),
        panel(
            2,
            "Error ratio (5xx) by variant",
            "percentunit",
            vec![(
                format!(
                    "sum by (variant) (rate({REQUESTS}{{code=\"5xx\"}}[{w}])) / sum by (variant) (rate({REQUESTS}[{w}]))"
                ),
                "{{variant}}".into(),
            )],
            12,
            0,
        ),
        panel(
            3,
            "Latency quantiles",
            "s",
            [0.5, 0.95, 0.99]
                .iter()
                .map(|qn| {
                    (
                        format!(
                            "histogram_quantile({qn}, sum by (le, variant) (rate({DURATION}_bucket[{w}])))"
                        ),
                        format!("p{} {{{{variant}}}}", qn * 100.0),
                    )
                })
                .collect(),
            0,
            8,
        ),
        panel(
            4,
            "Replicas' CPU and memory",
            "short",
            vec![
                (
                    format!("rate(mlops_replica_cpu_seconds_total[{w}])"),
                    "cpu {{replica}}".into(),
                ),
                (
                    "mlops_replica_memory_bytes / 1048576".into(),
                    "MiB {{replica}}".into(),
                ),
            ],
            12,
            8,
        ),
    ];
    for (i, slo) in settings.slos.values().enumerate() {
        let rules = workbook_rules(settings.period);
        panels.push(panel(
            5 + i as u32,
            &format!("SLO {}: burn rate", slo.name),
            "short",
            rules
                .iter()
                .take(2)
                .flat_map(|r| [r.long, r.short])
                .map(|win| {
                    (
                        format!(
                            "{}{{slo={}}} / {}",
                            ratio_record(win),
                            q(&slo.name),
                            slo.budget()
                        ),
                        format!("over {}", prometheus_duration(win)),
                    )
                })
                .collect(),
            (i as u32 % 2) * 12,
            16 + (i as u32 / 2) * 8,
        ));
    }
    let dashboard = json!({
        "__inputs": [{
            "name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
            "pluginId": "prometheus", "pluginName": "Prometheus"
        }],
        "title": format!("mlops: {service}"),
        "uid": format!("mlops-{}", service.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>()),
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "time": { "from": "now-1h", "to": "now" },
        "refresh": "10s",
        "tags": ["mlops"],
        "panels": panels,
        "templating": { "list": [] },
        "annotations": { "list": [] },
    });
    serde_json::to_string_pretty(&dashboard).unwrap_or_default() + "\n"
}

/// Everything `mlops monitor export prometheus` writes.
pub fn prometheus(
    settings: &ApmSettings,
    targets: &[ScrapeTarget],
    labels: &[(&str, String)],
    buckets: &[f64],
) -> Export {
    let (rules, warnings) = rules(settings, buckets);
    Export {
        files: vec![
            (
                CONFIG_FILE.to_owned(),
                scrape_config(settings, targets, labels),
            ),
            (RULES_FILE.to_owned(), rules),
        ],
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_prometheus_reads_them() {
        assert_eq!(prometheus_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(prometheus_duration(Duration::from_secs(259_200)), "3d");
        assert_eq!(
            prometheus_duration(Duration::from_millis(416_666)),
            "6m56s666ms"
        );
        assert_eq!(prometheus_duration(Duration::from_millis(2500)), "2s500ms");
        assert_eq!(prometheus_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn expressions_select_the_slo_s_requests() {
        let slo = Slo {
            name: "fast".into(),
            objective: Objective::Latency {
                threshold: Duration::from_millis(250),
            },
            target: 0.99,
            variant: Some("stable".into()),
        };
        assert_eq!(
            error_ratio_expr(&slo, Duration::from_secs(300)),
            "1 - (sum(rate(mlops_gateway_request_duration_seconds_bucket{variant=\"stable\",le=\"0.25\"}[5m])) / sum(rate(mlops_gateway_request_duration_seconds_count{variant=\"stable\"}[5m])))"
        );
        assert_eq!(
            alert_name("availability", "page-fast"),
            "MlopsSloAvailabilityPageFast"
        );
    }
}
