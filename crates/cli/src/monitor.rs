//! `mlops monitor`: the release environment's metrics, alerts and scrape
//! targets, read from its collector's database (`mlops_apm`), and the
//! collector started by hand.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mlops_apm::collector::service::{CollectorProgram, CollectorService, state_dir};
use mlops_apm::collector::{CollectorConfig, alerts, targets};
use mlops_apm::settings::ApmSettings;
use mlops_apm::tsdb::{self, Selector, SeriesKind, Store};
use mlops_core::{LedgerHandle, Stage};
use mlops_iac::{InfraSpec, ProviderKind, Scope};
use mlops_release::service::{GatewayProgram, GatewayService};
use mlops_release::settings::ReleaseSettings;

use crate::{Failure, exit, fail};

/// `mlops monitor`: the dashboard, or one of the subcommands.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct MonitorArgs {
    #[command(subcommand)]
    command: Option<MonitorCommand>,
    #[command(flatten)]
    dashboard: DashboardArgs,
}

/// The dashboard's options.
#[derive(Args)]
pub(crate) struct DashboardArgs {
    /// Write a static dashboard to FILE and exit (else serve it live)
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Where to serve the live dashboard (a loopback address)
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Show this long back from now
    #[arg(long, default_value = "15m")]
    since: String,
    /// One point per STEP (default: the range / 120)
    #[arg(long)]
    step: Option<String>,
    /// Seconds between reloads of the live page
    #[arg(long, default_value_t = 5)]
    refresh: u32,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand)]
pub(crate) enum MonitorCommand {
    /// Print a series over time: a counter's rate per second, a gauge's
    /// average, or a histogram's quantile (--quantile), per step
    Query(QueryArgs),
    /// The SLO alerts: each rule's state and burn rates, the transitions
    /// since --since, and their webhook deliveries
    Alerts {
        /// Transitions since this long ago
        #[arg(long, default_value = "1h")]
        since: String,
        #[command(flatten)]
        target: Target,
    },
    /// The scrape targets: up or down, and why the last failure failed
    Targets(Target),
    /// The slowest recent requests, as the gateway's latency buckets named
    /// them (OpenMetrics exemplars), with their ids: follow one with
    /// `mlops logs --request-id ID`
    Exemplars {
        /// From this long ago (exemplars are kept as long as raw points)
        #[arg(long, default_value = "15m")]
        since: String,
        /// Only requests at least this slow
        #[arg(long, default_value = "0s")]
        min: String,
        /// Only this variant's requests
        #[arg(long)]
        variant: Option<String>,
        /// At most this many, the slowest first
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Start the environment's collector (or reconfigure it from `[apm]`);
    /// it keeps running after this command
    Start(Target),
    /// Stop the environment's collector (its database stays)
    Stop(Target),
    /// Write the SLOs as Prometheus recording and alerting rules with a
    /// scrape configuration (`prometheus`), or a Grafana dashboard
    /// (`grafana`)
    Export {
        /// What to write for
        #[arg(value_parser = ["prometheus", "grafana"])]
        system: String,
        /// A directory to write the files into, or `-` for stdout
        #[arg(long, short = 'o', default_value = "-")]
        output: String,
        /// The gateway's admin address (`127.0.0.1:PORT`) to scrape
        /// (default: the running gateway's)
        #[arg(long)]
        gateway: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args)]
pub(crate) struct Target {
    /// Project directory
    #[arg(long, default_value = ".")]
    path: PathBuf,
    /// The release environment (default: `[release] environment`)
    #[arg(long = "env")]
    environment: Option<String>,
    /// The provider (default: `[infra] provider`)
    #[arg(long, value_parser = ["local", "docker"])]
    provider: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct QueryArgs {
    /// The series: a name, optionally with labels, like
    /// `mlops_gateway_requests_total{code="5xx"}`
    series: String,
    /// From this long ago
    #[arg(long, default_value = "15m")]
    since: String,
    /// The step between points
    #[arg(long, default_value = "10s")]
    step: String,
    /// Only this variant's series
    #[arg(long)]
    variant: Option<String>,
    /// More label matchers, `NAME=VALUE`
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The quantile (0..1) of a histogram (its `_bucket` series)
    #[arg(long)]
    quantile: Option<f64>,
    /// Print CSV (time, labels, value)
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    #[command(flatten)]
    target: Target,
}

pub(crate) fn run(args: MonitorArgs) -> Result<u8, Failure> {
    let Some(command) = args.command else {
        return dashboard(&args.dashboard);
    };
    match command {
        MonitorCommand::Query(q) => query(&q),
        MonitorCommand::Alerts { since, target } => show_alerts(&target, &since),
        MonitorCommand::Targets(t) => show_targets(&t),
        MonitorCommand::Exemplars {
            since,
            min,
            variant,
            limit,
            target,
        } => show_exemplars(&target, &since, &min, variant.as_deref(), limit),
        MonitorCommand::Start(t) => start_or_stop(&t, true),
        MonitorCommand::Stop(t) => start_or_stop(&t, false),
        MonitorCommand::Export {
            system,
            output,
            gateway,
            target,
        } => export(&target, &system, &output, gateway),
    }
}

/// What the commands act on: the manifest's released service, its
/// environment, the project.
struct Project {
    root: PathBuf,
    scope: Scope,
    service: String,
    model: Option<String>,
    settings: ApmSettings,
    spec: std::sync::Arc<InfraSpec>,
    provider: ProviderKind,
}

fn project(t: &Target) -> Result<Project, Failure> {
    let manifest = crate::load(&t.path)?;
    let release = manifest
        .section::<ReleaseSettings>(Stage::Release.name())
        .map(|s| (*s).clone())
        .unwrap_or_default();
    let Some(service) = release.service.clone() else {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!(
                "{} has no `[release] service`: there is no release environment to monitor",
                manifest.path.display()
            ),
        ));
    };
    let settings = manifest
        .section::<ApmSettings>(Stage::Apm.name())
        .map(|s| (*s).clone())
        .unwrap_or_default();
    let spec = InfraSpec::from_manifest(&manifest);
    let provider: ProviderKind = match &t.provider {
        Some(p) => p
            .parse()
            .map_err(|e: String| fail(exit::INVALID, anyhow::anyhow!(e)))?,
        None => spec.provider,
    };
    let root = std::fs::canonicalize(&manifest.root).unwrap_or(manifest.root.clone());
    Ok(Project {
        scope: Scope {
            project: manifest.project.name.clone(),
            environment: t
                .environment
                .clone()
                .unwrap_or_else(|| release.environment.clone()),
            root: root.clone(),
        },
        root,
        service,
        model: release.model.clone(),
        settings,
        spec,
        provider,
    })
}

/// The collector's database, which must exist.
fn open_store(p: &Project) -> Result<Store, Failure> {
    let dir = state_dir(&p.scope, &p.service);
    if !dir.join(tsdb::DB_FILE).is_file() {
        return Err(fail(
            exit::REFUSED,
            anyhow::anyhow!(
                "no metrics for `{}` in `{}` yet: its collector has never run (an `slo-check` step or `mlops monitor start` starts it)",
                p.service,
                p.scope.environment
            ),
        ));
    }
    Store::open_read(&dir).map_err(|e| fail(exit::ENGINE, e))
}

fn duration(what: &str, s: &str) -> Result<Duration, Failure> {
    humantime::parse_duration(s).map_err(|e| {
        fail(
            exit::INVALID,
            anyhow::anyhow!(
                "invalid duration `{s}` for {what}: {e} (write \"90s\", \"15m\", \"1h\")"
            ),
        )
    })
}

/// `name` or `name{a="x",b="y"}`.
fn parse_series(s: &str) -> Result<Selector, Failure> {
    let bad = |why: &str| {
        fail(
            exit::INVALID,
            anyhow::anyhow!(
                "invalid series `{s}`: {why} (write `name` or `name{{label=\"value\"}}`)"
            ),
        )
    };
    let Some(open) = s.find('{') else {
        if !is_name(s, true) {
            return Err(bad(
                "a name is letters, digits, `_` and `:`, not starting with a digit",
            ));
        }
        return Ok(Selector::name(s));
    };
    let name = &s[..open];
    if !is_name(name, true) {
        return Err(bad(
            "a name is letters, digits, `_` and `:`, not starting with a digit",
        ));
    }
    let rest = s[open + 1..]
        .strip_suffix('}')
        .ok_or_else(|| bad("no closing `}`"))?;
    let mut selector = Selector::name(name);
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let label: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        let label = label.trim();
        if label.ends_with(['!', '~']) || chars.peek() == Some(&'~') {
            return Err(bad(
                "only equality matchers (label=\"value\") are supported",
            ));
        }
        if !is_name(label, false) {
            return Err(bad(&format!(
                "`{label}` is not a label name (letters, digits and `_`, not starting with a digit)"
            )));
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(bad("a matcher is label=\"value\""));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => return Err(bad("unfinished escape")),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => return Err(bad("unfinished value")),
            }
        }
        selector = selector.with(label, value);
    }
    Ok(selector)
}

/// A metric name (`colon`) or label name as Prometheus writes them.
fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// At most this many steps in one query, as Prometheus allows.
const MAX_STEPS: i64 = 11_000;

fn query(q: &QueryArgs) -> Result<u8, Failure> {
    let p = project(&q.target)?;
    let mut selector = parse_series(&q.series)?;
    if let Some(v) = &q.variant {
        selector = selector.with("variant", v);
    }
    for l in &q.labels {
        let Some((k, v)) = l.split_once('=') else {
            return Err(fail(
                exit::INVALID,
                anyhow::anyhow!("invalid --label `{l}`: write NAME=VALUE"),
            ));
        };
        selector = selector.with(k, v);
    }
    let since = duration("--since", &q.since)?;
    let step = duration("--step", &q.step)?;
    if let Some(quantile) = q.quantile
        && !(0.0..=1.0).contains(&quantile)
    {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!("--quantile must be between 0 and 1, not {quantile}"),
        ));
    }
    let to = tsdb::now_ms() + 1;
    let from = to.saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
    let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
    let steps = (to - from) / step_ms;
    if steps > MAX_STEPS {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!(
                "--since {} in steps of --step {} is {steps} steps, more than {MAX_STEPS}: raise --step or shorten --since",
                q.since,
                q.step
            ),
        ));
    }
    let store = open_store(&p)?;
    let series = match q.quantile {
        None => store
            .range(&selector, from, to, step)
            .map_err(|e| fail(exit::ENGINE, e))?,
        Some(quantile) => {
            let mut points = Vec::new();
            let mut t = from;
            while t < to {
                if let Some(v) = store
                    .quantile(quantile, &selector.name, &selector.matchers, t, t + step_ms)
                    .map_err(|e| fail(exit::ENGINE, e))?
                {
                    points.push(tsdb::Point { ts: t, value: v });
                }
                t = t.saturating_add(step_ms);
            }
            let mut labels: std::collections::BTreeMap<String, String> =
                selector.matchers.iter().cloned().collect();
            labels.insert("quantile".into(), quantile.to_string());
            if points.is_empty() {
                Vec::new()
            } else {
                vec![tsdb::SeriesPoints {
                    key: tsdb::SeriesKey {
                        name: selector.name.clone(),
                        labels,
                    },
                    kind: SeriesKind::Gauge,
                    points,
                }]
            }
        }
    };
    if series.is_empty() {
        let names = store.names();
        return Err(fail(
            exit::REFUSED,
            anyhow::anyhow!(
                "no series `{}` with data in the last {}{}",
                q.series,
                q.since,
                if names.is_empty() {
                    String::new()
                } else {
                    format!("; series held: {}", names.join(", "))
                }
            ),
        ));
    }
    let mut out = io::stdout().lock();
    if q.target.json {
        let json: Vec<serde_json::Value> = series
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.key.name,
                    "labels": s.key.labels,
                    "kind": s.kind,
                    "unit": match (s.kind, q.quantile) {
                        (_, Some(_)) => "seconds",
                        (SeriesKind::Counter, None) => "per second",
                        (SeriesKind::Gauge, None) => "average",
                    },
                    "points": s.points.iter().map(|pt| serde_json::json!({
                        "ts_ms": pt.ts,
                        "time": mlops_core::ledger::format_ms(pt.ts),
                        "value": pt.value,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else if q.csv {
        let mut keys: Vec<&String> = series.iter().flat_map(|s| s.key.labels.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut header = vec!["time".to_owned(), "ts_ms".to_owned(), "name".to_owned()];
        header.extend(keys.iter().map(|k| (*k).clone()));
        header.push("value".to_owned());
        rows.push(header);
        for s in &series {
            for pt in &s.points {
                let mut row = vec![
                    mlops_core::ledger::format_ms(pt.ts),
                    pt.ts.to_string(),
                    s.key.name.clone(),
                ];
                row.extend(
                    keys.iter()
                        .map(|k| s.key.labels.get(*k).cloned().unwrap_or_default()),
                );
                row.push(pt.value.to_string());
                rows.push(row);
            }
        }
        for row in rows {
            writeln!(
                out,
                "{}",
                row.iter()
                    .map(|f| csv_field(f))
                    .collect::<Vec<_>>()
                    .join(",")
            )?;
        }
    } else {
        for s in &series {
            writeln!(
                out,
                "{} ({})",
                s.key,
                match (s.kind, q.quantile) {
                    (_, Some(_)) => "seconds",
                    (SeriesKind::Counter, None) => "per second",
                    (SeriesKind::Gauge, None) => "average",
                }
            )?;
            for pt in &s.points {
                writeln!(
                    out,
                    "  {}  {}",
                    mlops_core::ledger::format_ms(pt.ts),
                    pt.value
                )?;
            }
        }
    }
    Ok(exit::OK)
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_owned()
    }
}

/// `now - since`, saturating.
fn ago(since: Duration) -> i64 {
    tsdb::now_ms().saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

fn show_exemplars(
    t: &Target,
    since: &str,
    min: &str,
    variant: Option<&str>,
    limit: usize,
) -> Result<u8, Failure> {
    let p = project(t)?;
    let since = duration("--since", since)?;
    let min = duration("--min", min)?;
    let store = open_store(&p)?;
    let mut selector = Selector::name("mlops_gateway_request_duration_seconds_bucket");
    if let Some(v) = variant {
        selector = selector.with("variant", v);
    }
    let found = store
        .exemplars(
            &selector,
            ago(since),
            tsdb::now_ms() + 1,
            min.as_secs_f64(),
            limit.max(1),
        )
        .map_err(|e| fail(exit::ENGINE, e))?;
    let mut out = io::stdout().lock();
    if t.json {
        serde_json::to_writer_pretty(&mut out, &found)?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    if found.is_empty() {
        writeln!(
            out,
            "no exemplars in the last {}: no requests through the gateway, or none that slow",
            humantime::format_duration(since)
        )?;
        return Ok(exit::OK);
    }
    for e in &found {
        writeln!(
            out,
            "{}  {:<8} {:>10.3} ms  (bucket le={})  {}",
            mlops_core::ledger::format_ms(e.ts),
            e.key.label("variant").unwrap_or("-"),
            e.value * 1000.0,
            e.key.label("le").unwrap_or("?"),
            e.request_id
        )?;
    }
    writeln!(
        out,
        "\nfollow one end to end: mlops logs --request-id {}",
        found[0].request_id
    )?;
    Ok(exit::OK)
}

fn show_alerts(t: &Target, since: &str) -> Result<u8, Failure> {
    let p = project(t)?;
    let since = duration("--since", since)?;
    let store = open_store(&p)?;
    let engine = |e| fail(exit::ENGINE, e);
    let states = alerts::alerts(&store).map_err(engine)?;
    let events = alerts::events(&store, ago(since)).map_err(engine)?;
    let deliveries = alerts::deliveries(&store).map_err(engine)?;
    let mut out = io::stdout().lock();
    if t.json {
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({ "alerts": states, "events": events, "deliveries": deliveries }),
        )?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    if states.is_empty() {
        writeln!(
            out,
            "no SLO alerts: [apm.slo] declares no SLO, or the collector has not evaluated one yet"
        )?;
    }
    for a in &states {
        writeln!(
            out,
            "{:<20} {:<10} {:<7} {:<9} since {}  burn {:.2} (long) {:.2} (short), threshold {}",
            a.slo,
            a.rule,
            a.severity,
            a.state.as_str(),
            mlops_core::ledger::format_ms(a.since),
            a.evaluation["burn_long"].as_f64().unwrap_or(0.0),
            a.evaluation["burn_short"].as_f64().unwrap_or(0.0),
            a.evaluation["threshold"]
        )?;
    }
    if !events.is_empty() {
        writeln!(out, "\ntransitions:")?;
        for e in &events {
            let d: Vec<String> = deliveries
                .iter()
                .filter(|d| d.event == e.id)
                .map(|d| format!("{} after {} attempts ({})", d.outcome, d.attempts, d.detail))
                .collect();
            writeln!(
                out,
                "  {}  {}/{} {}{}",
                mlops_core::ledger::format_ms(e.ts),
                e.slo,
                e.rule,
                e.state.as_str(),
                if d.is_empty() {
                    String::new()
                } else {
                    format!(" — webhook {}", d.join(", "))
                }
            )?;
        }
    }
    Ok(exit::OK)
}

fn show_targets(t: &Target) -> Result<u8, Failure> {
    let p = project(t)?;
    let store = open_store(&p)?;
    let list = targets(&store).map_err(|e| fail(exit::ENGINE, e))?;
    let mut out = io::stdout().lock();
    if t.json {
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    for target in &list {
        writeln!(
            out,
            "{:<4} {:<40} {}  last {}{}",
            if target.up { "up" } else { "DOWN" },
            target.name,
            target.url,
            mlops_core::ledger::format_ms(target.last_ts),
            match (&target.last_error, target.up) {
                (Some(e), false) => format!("  ({e})"),
                (Some(e), true) => format!("  (failed {} times; last: {e})", target.failures),
                (None, _) => String::new(),
            }
        )?;
    }
    Ok(if list.iter().all(|t| t.up) {
        exit::OK
    } else {
        exit::RUN_FAILED
    })
}

fn start_or_stop(t: &Target, start: bool) -> Result<u8, Failure> {
    let p = project(t)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let provider = mlops_iac::kinds::provider_for(p.provider, &crate::infra::supervisor())
            .await
            .map_err(|e| fail(exit::RUN_FAILED, e))?;
        let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mlops"));
        let ledger = LedgerHandle::for_project(p.root.clone());
        let collector = CollectorService::new(
            &p.scope,
            provider.as_ref(),
            ledger.clone(),
            &p.service,
            CollectorProgram::mlops(&program),
        );
        let mut out = io::stdout().lock();
        if !start {
            let stopped = collector.stop().await.map_err(|e| fail(exit::RUN_FAILED, e))?;
            writeln!(
                out,
                "{}",
                if stopped {
                    format!("stopped the collector of `{}` in `{}`", p.service, p.scope.environment)
                } else {
                    format!("no collector of `{}` runs in `{}`", p.service, p.scope.environment)
                }
            )?;
            return Ok(exit::OK);
        }
        let gateway = GatewayService::new(
            &p.scope,
            provider.as_ref(),
            ledger,
            &p.service,
            GatewayProgram::mlops(&program),
        );
        let client = gateway.client().await.map_err(|e| {
            fail(
                exit::REFUSED,
                anyhow::anyhow!(
                    "{e}: the collector scrapes the gateway the release stage runs; run the release stage first"
                ),
            )
        })?;
        mlops_apm::slo_check::ensure_slo_buckets(&client, &p.settings)
            .await
            .map_err(|e| fail(exit::RUN_FAILED, e))?;
        let config = CollectorConfig::from_settings(
            &p.settings,
            &p.scope.environment,
            Some(&p.service),
            Some(client.admin_url().to_owned()),
        );
        let instance = collector
            .ensure(&p.spec, &config)
            .await
            .map_err(|e| fail(exit::RUN_FAILED, e))?;
        if t.json {
            serde_json::to_writer_pretty(&mut out, &instance)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "the collector of `{}` in `{}` runs ({}), every {:?}, {} SLOs; database {}",
                p.service,
                p.scope.environment,
                instance.id,
                config.interval(),
                config.slos.len(),
                display(&state_dir(&p.scope, &p.service).join(tsdb::DB_FILE), &p.root)
            )?;
        }
        Ok(exit::OK)
    })
}

fn display(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn export(t: &Target, system: &str, output: &str, gateway: Option<String>) -> Result<u8, Failure> {
    use mlops_apm::export::{self as ex, ScrapeTarget};
    let p = project(t)?;
    let files = if system == "grafana" {
        vec![(
            ex::DASHBOARD_FILE.to_owned(),
            ex::grafana_dashboard(&p.settings, &p.service),
        )]
    } else {
        let address = match gateway {
            Some(a) => a,
            None => running_gateway_admin(&p)?,
        };
        let mut targets = vec![ScrapeTarget {
            job: "mlops-gateway".to_owned(),
            address,
        }];
        if let Some(a) = running_collector_admin(&p) {
            targets.push(ScrapeTarget {
                job: "mlops-collector".to_owned(),
                address: a,
            });
        }
        let labels = [
            ("service", p.service.clone()),
            ("environment", p.scope.environment.clone()),
        ];
        let e = ex::prometheus(
            &p.settings,
            &targets,
            &labels,
            // The gateway gets these from `slo-check` and `monitor start`.
            &p.settings.gateway_latency_bounds(),
        );
        for w in &e.warnings {
            eprintln!("warning: {w}");
        }
        e.files
    };
    if output == "-" {
        let mut out = io::stdout().lock();
        for (name, text) in &files {
            if files.len() > 1 {
                writeln!(out, "# ---- {name} ----")?;
            }
            write!(out, "{text}")?;
        }
        return Ok(exit::OK);
    }
    let dir = PathBuf::from(output);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .map_err(|e| fail(exit::INVALID, e))?;
    for (name, text) in &files {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(|e| fail(exit::ENGINE, e))?;
        println!("wrote {}", path.display());
    }
    Ok(exit::OK)
}

fn running_gateway_admin(p: &Project) -> Result<String, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let provider = mlops_iac::kinds::provider_for(p.provider, &crate::infra::supervisor())
            .await
            .map_err(|e| fail(exit::RUN_FAILED, e))?;
        let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mlops"));
        let gateway = GatewayService::new(
            &p.scope,
            provider.as_ref(),
            LedgerHandle::for_project(p.root.clone()),
            &p.service,
            GatewayProgram::mlops(program),
        );
        let client = gateway.client().await.map_err(|e| {
            fail(
                exit::REFUSED,
                anyhow::anyhow!(
                    "{e}: the scrape configuration needs the gateway's address; run the release stage, or give it with --gateway 127.0.0.1:PORT"
                ),
            )
        })?;
        Ok(client
            .admin_url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned())
    })
}

/// The running collector's admin address, if it runs.
fn running_collector_admin(p: &Project) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let provider = mlops_iac::kinds::provider_for(p.provider, &crate::infra::supervisor())
            .await
            .ok()?;
        let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mlops"));
        let collector = CollectorService::new(
            &p.scope,
            provider.as_ref(),
            LedgerHandle::for_project(p.root.clone()),
            &p.service,
            CollectorProgram::mlops(program),
        );
        let instance = collector.instance().await.ok()??;
        let endpoint = instance.replicas.first()?.endpoint.clone()?;
        Some(endpoint.trim_start_matches("http://").to_owned())
    })
}

/// The page of the dashboard as of now.
fn dashboard_page(p: &Project, a: &DashboardArgs, live: bool) -> Result<String, Failure> {
    use mlops_apm::dashboard::{self, DriftRow, Event, Page};
    let since = duration("--since", &a.since)?;
    let step = match &a.step {
        Some(s) => duration("--step", s)?,
        None => (since / 120).max(std::time::Duration::from_secs(1)),
    };
    let store = open_store(p)?;
    let to = tsdb::now_ms() + 1;
    let from = to - since.as_millis() as i64;
    // Production changes of the released model: the release events.
    let mut events = Vec::new();
    if let (Some(model), Ok(Some(ledger))) = (&p.model, mlops_core::Ledger::open_snapshot(&p.root))
    {
        let changes = ledger
            .production_changes()
            .map_err(|e| fail(exit::ENGINE, e))?;
        for c in changes.iter().filter(|c| &c.model == model) {
            let Ok(t) = humantime::parse_rfc3339(&c.at) else {
                continue;
            };
            let ts = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            events.push(Event {
                ts,
                label: format!(
                    "{}:{} {}",
                    c.model,
                    c.number,
                    if c.is_rollback() {
                        "rolled back to"
                    } else {
                        "promoted"
                    }
                ),
            });
        }
    }
    // The newest drift report the pipeline recorded.
    let drift = mlops_core::Ledger::open_snapshot(&p.root)
        .ok()
        .flatten()
        .and_then(|l| l.step_evidence(1).ok())
        .and_then(|records| {
            records
                .into_iter()
                .find(|r| r.kind == mlops_apm::evidence::DRIFT)
        })
        .map(|r| {
            let rows = r.body["features"]
                .as_array()
                .map(|features| {
                    features
                        .iter()
                        .map(|f| DriftRow {
                            feature: f["feature"].as_str().unwrap_or("").to_owned(),
                            tests: f["tests"]
                                .as_array()
                                .map(|t| {
                                    t.iter()
                                        .map(|t| {
                                            format!(
                                                "{} {:.3}",
                                                t["test"].as_str().unwrap_or(""),
                                                t["value"].as_f64().unwrap_or(f64::NAN)
                                            )
                                        })
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                })
                                .unwrap_or_default(),
                            verdict: f["verdict"].as_str().unwrap_or("").replace('-', " "),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                format!("run {} (step {}, {})", r.run_id, r.step, r.run_started_at),
                rows,
            )
        });
    let page = Page {
        title: format!("{} in {}", p.service, p.scope.environment),
        from,
        to,
        step,
        events,
        drift,
        refresh: live.then_some(a.refresh.max(1)),
    };
    dashboard::render(&store, &page).map_err(|e| fail(exit::ENGINE, e))
}

/// `mlops monitor`: the dashboard, live on loopback or as a snapshot.
fn dashboard(a: &DashboardArgs) -> Result<u8, Failure> {
    let p = project(&a.target)?;
    if let Some(file) = &a.snapshot {
        let html = dashboard_page(&p, a, false)?;
        std::fs::write(file, html)
            .with_context(|| format!("cannot write {}", file.display()))
            .map_err(|e| fail(exit::ENGINE, e))?;
        println!("wrote {}", file.display());
        return Ok(exit::OK);
    }
    if !a.listen.ip().is_loopback() {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!("--listen must be a loopback address, not {}", a.listen),
        ));
    }
    // The page must render before anything listens: no store is no page.
    dashboard_page(&p, a, true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))
            .map_err(|e| fail(exit::INVALID, e))?;
        let addr = listener.local_addr()?;
        println!(
            "the dashboard of `{}` in `{}` is at http://{addr}/ (Ctrl-C stops it)",
            p.service, p.scope.environment
        );
        let (since, step) = (a.since.clone(), a.step.clone());
        let refresh = a.refresh;
        let page = move || {
            let args = DashboardArgs {
                snapshot: None,
                listen: addr,
                since: since.clone(),
                step: step.clone(),
                refresh,
                target: Target {
                    path: p.root.clone(),
                    environment: Some(p.scope.environment.clone()),
                    provider: None,
                    json: false,
                },
            };
            dashboard_page(&p, &args, true).map_err(|e| e.error.to_string())
        };
        let serve = mlops_apm::dashboard::serve(listener, page);
        tokio::select! {
            () = serve => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(exit::OK)
    })
}
