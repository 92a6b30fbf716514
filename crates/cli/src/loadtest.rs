//! `mlops loadtest run URL` and `mlops loadtest merge FILE...`: the load
//! generator by hand, as handy as wrk or oha, and the exact merge of
//! several generators' results (`mlops_loadtest::generator`).

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use mlops_loadtest::generator::{
    self, LoadResult, RemoteError, RunSpec, Threshold, check_all, html_report, merge,
    per_second_csv, run_on_workers, serve_worker, summary_table,
};
use mlops_release::driver::{CsvColumns, DriverSettings, RateStage, Samples, Workload};
use tokio_util::sync::CancellationToken;

use crate::{Failure, exit, fail};

/// The longest run `mlops loadtest run` accepts.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

#[derive(Subcommand)]
pub(crate) enum LoadtestCommand {
    /// Send load to an http:// URL and report rate, errors and latency
    /// (exit 0; 1 when a threshold failed or nothing answered; 2 on bad
    /// input; 130 on Ctrl-C, after the summary of what was sent)
    Run(Box<RunArgs>),
    /// Merge result files of generators that ran together (`run --out`),
    /// exactly: counts add, latency histograms add without loss
    Merge(MergeArgs),
    /// Serve runs for a coordinator (`run --worker URL`) until Ctrl-C:
    /// POST /run with the token of --token-file
    Worker(WorkerArgs),
}

/// Where a worker's token lives by default (relative to the current
/// directory), for the worker and its coordinator alike.
const WORKER_TOKEN: &str = ".mlops/loadtest/worker.token";

#[derive(Args)]
pub(crate) struct WorkerArgs {
    /// The address to listen on (a loopback one unless the network between
    /// coordinator and worker is private: the token travels in clear)
    #[arg(long, value_name = "ADDR")]
    listen: std::net::SocketAddr,
    /// The token file, created (mode 0600) when missing [default:
    /// .mlops/loadtest/worker.token]
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The target: an http:// URL
    url: String,
    /// Keep-alive connections. Without --rate or --stage, the workload is
    /// closed: this many users, each sending its next request when the
    /// last is answered (and --think has passed)
    #[arg(short, long, default_value_t = 10, value_name = "N")]
    connections: usize,
    /// How long to send for
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Open workload: requests per second, sent on schedule whether or not
    /// earlier ones were answered; latency runs from each request's
    /// intended send time
    #[arg(short, long, value_name = "R", conflicts_with = "stages")]
    rate: Option<f64>,
    /// Open workload in stages, in order: DURATION:RATE (constant) or
    /// DURATION:FROM-TO (a linear ramp), e.g. `--stage 10s:0-200 --stage
    /// 30s:200`; replaces --rate and --duration
    #[arg(long = "stage", value_name = "DURATION:RATE", value_parser = parse_stage, conflicts_with = "duration")]
    stages: Vec<RateStage>,
    /// Closed workload: the pause between a user's response and its next
    /// request
    #[arg(long, value_parser = parse_duration, conflicts_with_all = ["rate", "stages"])]
    think: Option<Duration>,
    /// The HTTP method [default: GET, or POST with a body]
    #[arg(short, long)]
    method: Option<String>,
    /// The request body, sent with every request
    #[arg(long, value_name = "FILE", conflicts_with = "samples")]
    body_file: Option<PathBuf>,
    /// Request bodies from sample data, cycled in order: JSON lines (each
    /// line a body) or a CSV whose rows become Open Inference Protocol v2
    /// requests
    #[arg(long, value_name = "FILE")]
    samples: Option<PathBuf>,
    /// With a CSV --samples: columns not to send (say, the label)
    #[arg(long, value_name = "COLUMN", requires = "samples")]
    exclude_column: Vec<String>,
    /// An extra request header, `Name: value` (repeatable)
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A request without a complete response this long after it was due
    /// counts as a timeout (at most 60s)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Send no more requests than this
    #[arg(long, default_value_t = 100_000_000, value_name = "N")]
    max_requests: u64,
    /// A pass/fail check on the result, like `p99 < 200ms`, `error_rate <
    /// 1%`, `rps > 500` (repeatable); a failed one exits 1
    #[arg(short, long = "threshold", value_name = "CHECK")]
    thresholds: Vec<String>,
    /// Print the result as one JSON object (the file --out writes)
    #[arg(long)]
    json: bool,
    /// Write the result as JSON, histograms included, for `merge`
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the per-second series as CSV
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Write a self-contained HTML report (charts of rate, latency and
    /// errors over the run)
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// No progress line
    #[arg(short, long)]
    quiet: bool,
    /// Run on these workers (`mlops loadtest worker`), each taking an
    /// equal share of the load, and merge their results (repeatable)
    #[arg(long = "worker", value_name = "URL")]
    workers: Vec<String>,
    /// The workers' token file [default: .mlops/loadtest/worker.token]
    #[arg(long, value_name = "PATH", requires = "workers")]
    worker_token_file: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct MergeArgs {
    /// Result files (`mlops loadtest run --out`, or earlier merges)
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// A pass/fail check on the merged result (repeatable); a failed one
    /// exits 1
    #[arg(short, long = "threshold", value_name = "CHECK")]
    thresholds: Vec<String>,
    /// Print the merged result as one JSON object
    #[arg(long)]
    json: bool,
    /// Write the merged result as JSON
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the merged per-second series as CSV
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Write a self-contained HTML report of the merge
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub(crate) fn run(command: LoadtestCommand) -> Result<u8, Failure> {
    match command {
        LoadtestCommand::Run(args) => run_load(*args),
        LoadtestCommand::Merge(args) => run_merge(&args),
        LoadtestCommand::Worker(args) => run_worker(&args),
    }
}

fn invalid(error: impl Into<anyhow::Error>) -> Failure {
    fail(exit::INVALID, error)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 10s or 1m30s: {e}"))
}

fn parse_stage(s: &str) -> Result<RateStage, String> {
    let (duration, rates) = s.split_once(':').ok_or_else(|| {
        format!("`{s}` is not DURATION:RATE or DURATION:FROM-TO (like 30s:100 or 10s:0-200)")
    })?;
    let duration = parse_duration(duration.trim())?;
    let rate = |r: &str| {
        r.trim()
            .parse::<f64>()
            .map_err(|_| format!("`{r}` in `{s}` is not a rate in requests per second"))
    };
    let (from, to) = match rates.split_once('-') {
        Some((from, to)) => (rate(from)?, rate(to)?),
        None => {
            let r = rate(rates)?;
            (r, r)
        }
    };
    Ok(RateStage { duration, from, to })
}

fn thresholds(texts: &[String]) -> Result<Vec<Threshold>, Failure> {
    texts
        .iter()
        .map(|t| Threshold::parse(t).map_err(invalid))
        .collect()
}

fn samples(args: &RunArgs) -> Result<Samples, Failure> {
    if let Some(path) = &args.body_file {
        let body = std::fs::read(path)
            .with_context(|| format!("cannot read the body file {}", path.display()))
            .map_err(invalid)?;
        return Samples::from_bodies([Bytes::from(body)]).map_err(invalid);
    }
    if let Some(path) = &args.samples {
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        return if is_csv {
            let columns = if args.exclude_column.is_empty() {
                CsvColumns::All
            } else {
                CsvColumns::Exclude(args.exclude_column.clone())
            };
            Samples::from_csv(path, &columns)
        } else {
            Samples::from_json_lines(path)
        }
        .map_err(invalid);
    }
    Ok(Samples::from_bodies([Bytes::new()]).expect("one body"))
}

fn settings(args: &RunArgs, has_body: bool) -> Result<DriverSettings, Failure> {
    let workload = if !args.stages.is_empty() {
        Workload::Open {
            stages: args.stages.clone(),
        }
    } else if let Some(rate) = args.rate {
        Workload::constant(rate, args.duration)
    } else {
        Workload::Closed {
            users: args.connections,
            think: args.think.unwrap_or_default(),
            duration: args.duration,
        }
    };
    if workload.duration() > MAX_DURATION {
        return Err(invalid(anyhow::anyhow!(
            "a run lasts at most 24h, not {}",
            humantime::format_duration(workload.duration())
        )));
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| invalid(anyhow::anyhow!("--header `{h}` is not `Name: value`")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut settings = DriverSettings::with_workload(&args.url, workload, args.max_requests);
    settings.method = args
        .method
        .clone()
        .unwrap_or_else(|| if has_body { "POST" } else { "GET" }.to_owned())
        .to_ascii_uppercase();
    settings.headers = headers;
    settings.timeout = args.timeout;
    settings.connections = args.connections;
    settings.keep_second_histograms = true;
    Ok(settings)
}

fn run_load(args: RunArgs) -> Result<u8, Failure> {
    // Everything a user can get wrong is checked before a request is sent.
    let checks = thresholds(&args.thresholds)?;
    let samples = samples(&args)?;
    let has_body = samples.bodies().iter().any(|b| !b.is_empty());
    let settings = settings(&args, has_body)?;
    let total = settings.workload.duration();
    let (settings_for_spec, samples_for_spec) = (settings.clone(), samples.clone());
    let driver = settings.compile(samples).map_err(invalid)?;
    for path in [&args.out, &args.csv, &args.html].into_iter().flatten() {
        check_writable(path)?;
    }
    let progress = !args.quiet && !args.json && io::stderr().is_terminal();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if !args.workers.is_empty() {
        let file = args
            .worker_token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(WORKER_TOKEN));
        // The workers' token is read, never made here: a new one would
        // only be refused by them.
        if !file.is_file() {
            return Err(invalid(anyhow::anyhow!(
                "no worker token at {}: a worker writes its token when it starts (`mlops loadtest worker`); give its file with --worker-token-file",
                file.display()
            )));
        }
        let token = crate::gateway::token_at(&file).map_err(crate::gateway::token_failure)?;
        let spec = RunSpec::new(&settings_for_spec, &samples_for_spec);
        if !args.quiet && !args.json {
            eprintln!("running on {} workers…", args.workers.len());
        }
        let outcome = runtime.block_on(async {
            tokio::select! {
                results = run_on_workers(&args.workers, &token, &spec) => Some(results),
                // Dropping the calls closes their connections: each worker
                // abandons its share.
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        let Some(outcome) = outcome else {
            eprintln!("interrupted: the workers' runs were abandoned; no result to report");
            return Ok(exit::CANCELLED);
        };
        let results = outcome.map_err(|e| match e {
            RemoteError::WorkerUrl(_) | RemoteError::Spec(_) => invalid(e),
            e => fail(exit::RUN_FAILED, e),
        })?;
        let mut merged = merge(&results).map_err(|e| fail(exit::RUN_FAILED, e))?;
        return report_run(&mut merged, &checks, &args, false);
    }
    let (mut result, interrupted) = runtime.block_on(async {
        let stop = CancellationToken::new();
        let interrupt = {
            let stop = stop.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    stop.cancel();
                }
            })
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let printer = tokio::spawn(async move {
            let mut shown = false;
            while let Some(bucket) = rx.recv().await {
                if progress {
                    let line = progress_line(&bucket, total);
                    eprint!("\r{line:<79}");
                    shown = true;
                }
            }
            if shown {
                eprint!("\r{:79}\r", "");
            }
        });
        let result = generator::run(&driver, &stop, Some(tx)).await;
        let _ = printer.await;
        interrupt.abort();
        (result, stop.is_cancelled())
    });
    let result = result.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
    report_run(result, &checks, &args, interrupted)
}

/// Checks the thresholds, writes the exports, prints the result; the exit
/// code.
fn report_run(
    result: &mut LoadResult,
    checks: &[Threshold],
    args: &RunArgs,
    interrupted: bool,
) -> Result<u8, Failure> {
    let latency = result
        .latency()
        .map_err(|e| anyhow::anyhow!("the run's own histogram: {e}"))?;
    result.thresholds = check_all(checks, &result.report, &latency);
    let exports = Exports {
        out: args.out.as_deref(),
        csv: args.csv.as_deref(),
        html: args.html.as_deref(),
    };
    finish(result, args.json, &exports)?;
    let r = &result.report;
    if interrupted {
        return Ok(exit::CANCELLED);
    }
    let answered = r.requests
        - r.errors_by_kind.connect
        - r.errors_by_kind.timeout
        - r.errors_by_kind.transport;
    if r.requests > 0 && answered == 0 {
        eprintln!(
            "error: no response from {} ({} connection errors, {} timeouts, {} transport errors): is the service up?",
            r.target,
            r.errors_by_kind.connect,
            r.errors_by_kind.timeout,
            r.errors_by_kind.transport
        );
        return Ok(exit::RUN_FAILED);
    }
    Ok(threshold_code(result))
}

/// `mlops loadtest worker`: serves runs until Ctrl-C or SIGTERM.
fn run_worker(args: &WorkerArgs) -> Result<u8, Failure> {
    let file = args
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(WORKER_TOKEN));
    let token = crate::gateway::token_at(&file).map_err(crate::gateway::token_failure)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))
            .map_err(invalid)?;
        let addr = listener.local_addr().context("the listening address")?;
        eprintln!(
            "worker listening on http://{addr} (POST /run with the token in {})",
            std::path::absolute(&file).unwrap_or(file.clone()).display()
        );
        let stop = CancellationToken::new();
        let signals = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
                stop.cancel();
            })
        };
        serve_worker(listener, token, stop).await;
        signals.abort();
        eprintln!("worker stopped");
        Ok::<_, Failure>(exit::OK)
    })
}

fn progress_line(bucket: &mlops_release::driver::SecondBucket, total: Duration) -> String {
    let latency = bucket.latency_ms.map_or_else(
        || "no response".to_owned(),
        |l| format!("p50 {:.2} ms  p99 {:.2} ms", l.p50, l.p99),
    );
    format!(
        "[{:>4}s/{}s] {:>8}/s  errors {:<6} {latency}",
        bucket.second + 1,
        total.as_secs_f64().ceil(),
        bucket.requests,
        bucket.errors.total(),
    )
}

fn run_merge(args: &MergeArgs) -> Result<u8, Failure> {
    let checks = thresholds(&args.thresholds)?;
    for path in [&args.out, &args.csv, &args.html].into_iter().flatten() {
        check_writable(path)?;
    }
    let mut results = Vec::new();
    for file in &args.files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))
            .map_err(invalid)?;
        let result: LoadResult = serde_json::from_str(&text)
            .with_context(|| {
                format!(
                    "{} is not a load result (`mlops loadtest run --out`)",
                    file.display()
                )
            })
            .map_err(invalid)?;
        result
            .check(results.len() + 1)
            .with_context(|| file.display().to_string())
            .map_err(invalid)?;
        results.push(result);
    }
    let mut merged = merge(&results).map_err(invalid)?;
    let latency = merged
        .latency()
        .map_err(|e| anyhow::anyhow!("the merged histogram: {e}"))?;
    merged.thresholds = check_all(&checks, &merged.report, &latency);
    let exports = Exports {
        out: args.out.as_deref(),
        csv: args.csv.as_deref(),
        html: args.html.as_deref(),
    };
    finish(&merged, args.json, &exports)?;
    Ok(threshold_code(&merged))
}

fn threshold_code(result: &LoadResult) -> u8 {
    if result.thresholds.iter().all(|v| v.passed) {
        exit::OK
    } else {
        exit::RUN_FAILED
    }
}

/// Refuses an output path whose directory does not exist, before the run.
fn check_writable(path: &Path) -> Result<(), Failure> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir
        && !dir.is_dir()
    {
        return Err(invalid(anyhow::anyhow!(
            "cannot write {}: {} is not a directory",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Where to write a result's exports.
struct Exports<'a> {
    out: Option<&'a Path>,
    csv: Option<&'a Path>,
    html: Option<&'a Path>,
}

/// Writes the exports and prints the result: the summary table (with the
/// thresholds), or JSON with failed thresholds said again on stderr.
fn finish(result: &LoadResult, json: bool, exports: &Exports<'_>) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(result).context("cannot serialize the result")?;
    if let Some(path) = exports.out {
        std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = exports.csv {
        std::fs::write(path, per_second_csv(result))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = exports.html {
        let title = format!("Load test of {}", result.report.target);
        std::fs::write(path, html_report(result, &title))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut stdout = io::stdout().lock();
    if json {
        writeln!(
            stdout,
            "{}",
            serde_json::to_string(result).context("cannot serialize the result")?
        )?;
    } else {
        write!(stdout, "{}", summary_table(result))?;
    }
    if json {
        // The table says it otherwise.
        for v in result.thresholds.iter().filter(|v| !v.passed) {
            eprintln!("threshold failed: {}", v.detail);
        }
    }
    Ok(())
}
