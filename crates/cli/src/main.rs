//! The `mlops` binary: argument parsing, terminal output and exit codes.
//! Everything else lives in the libraries; this crate is the only one that
//! prints.

mod assess;
mod autoscale;
mod drift;
mod gateway;
mod infra;
mod loadtest;
mod logs;
mod model;
mod monitor;
mod output;
mod release;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use mlops_core::{
    CancellationToken, ExecError, Executor, KindRegistry, Ledger, Manifest, ManifestError,
    RunOptions, RunStatus, Selection, Stage, init, ledger::STATE_DIR, manifest,
};

use output::{EventPrinter, Mode};

/// Exit codes, documented in README.md.
mod exit {
    /// The command did what was asked; a run passed.
    pub(crate) const OK: u8 = 0;
    /// A run happened and failed: a step failed, timed out or was gated.
    pub(crate) const RUN_FAILED: u8 = 1;
    /// Bad invocation or invalid input (manifest, paths).
    pub(crate) const INVALID: u8 = 2;
    /// Refused: a selected stage lacks evidence for an earlier one, another
    /// run holds the project, or there is nothing to resume.
    pub(crate) const REFUSED: u8 = 3;
    /// The engine itself failed (ledger, file system).
    pub(crate) const ENGINE: u8 = 4;
    /// Cancelled (Ctrl-C).
    pub(crate) const CANCELLED: u8 = 130;
}

#[derive(Parser)]
#[command(
    name = "mlops",
    version,
    about = "Take a model from \"works on my machine\" to a monitored, load-tested, auto-scaled service, one maturity stage at a time"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a starter mlops.toml from what the project contains
    Init {
        /// Project directory
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Overwrite an existing mlops.toml
        #[arg(long)]
        force: bool,
    },
    /// Check mlops.toml and report every problem at once
    Validate {
        /// Project directory
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Print the JSON Schema of mlops.toml (for editors)
    Schema,
    /// Plan, run and inspect the project's pipeline
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Connect the pipeline to a CI system
    #[command(subcommand)]
    Ci(CiCommand),
    /// Work with data files and their schemas
    #[command(subcommand)]
    Data(DataCommand),
    /// Plan, apply, destroy and inspect the services declared in [infra]
    #[command(subcommand)]
    Infra(infra::InfraCommand),
    /// Work with registered model versions
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Releases (stage 4): status, history, promote, abort, rollback
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Search the release environment's logs and the gateway's prediction
    /// log (by service, variant, time, status, request id, text)
    Logs(Box<logs::LogsArgs>),
    /// Data drift between a reference and current data (CSV or JSON lines),
    /// per feature: exit 0 none, 1 drift, 3 too little data to say
    Drift(drift::DriftArgs),
    /// Monitoring (stage 5): series, SLO alerts and scrape targets of the
    /// release environment; start or stop its collector
    Monitor(Box<monitor::MonitorArgs>),
    /// Assess a repository's maturity from evidence (HTML, Markdown or JSON report)
    Assess(assess::AssessArgs),
    /// Reverse-proxy to upstreams, balanced, until Ctrl-C (metrics on --admin)
    Gateway(gateway::GatewayArgs),
    /// Autoscaling (stage 6): simulate the `hpa` (Kubernetes) and `kpa`
    /// (Knative) policies on scenario files
    #[command(subcommand)]
    Autoscale(autoscale::AutoscaleCommand),
    /// Load testing (stage 6): send load to a URL with thresholds, merge
    /// the results of several generators
    #[command(subcommand)]
    Loadtest(loadtest::LoadtestCommand),
    /// Run the release gateway as a supervised service (internal)
    #[command(hide = true, name = mlops_release::service::SERVE_SUBCOMMAND)]
    GatewayServe {
        /// The state directory: config.json, admin.token
        #[arg(long)]
        state: PathBuf,
        /// The data plane's address
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The admin API's port on 127.0.0.1
        #[arg(long)]
        admin_port: u16,
    },
    /// Run the metrics collector as a supervised service (internal)
    #[command(hide = true, name = mlops_apm::collector::service::SERVE_SUBCOMMAND)]
    CollectorServe {
        /// The state directory: collector.json, metrics.db
        #[arg(long)]
        state: PathBuf,
        /// The admin API's port on 127.0.0.1
        #[arg(long)]
        admin_port: u16,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Propose a data-validation schema from a reference CSV or JSON-lines file
    InferSchema {
        /// The reference data file
        file: PathBuf,
        /// Write the schema here instead of to stdout
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Overwrite an existing output file
        #[arg(long)]
        force: bool,
        /// Propose `allowed` values for string columns with at most this many
        /// distinct values (0: never)
        #[arg(long, default_value_t = 20)]
        max_allowed: usize,
    },
}

#[derive(Subcommand)]
enum CiCommand {
    /// Write a workflow that installs mlops and runs the pipeline on every push
    Export {
        /// The CI system
        #[arg(value_parser = ["github", "gitlab"])]
        system: String,
        /// Project directory
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Where to write it (default: .github/workflows/mlops.yml or
        /// .gitlab-ci.yml at the repository root); `-` for stdout
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Overwrite an existing file
        #[arg(long)]
        force: bool,
        /// The shell command the workflow uses to install mlops
        #[arg(long, value_name = "COMMAND", default_value = DEFAULT_INSTALL)]
        install: String,
    },
}

/// How a generated workflow installs mlops.
const DEFAULT_INSTALL: &str = concat!(
    "cargo install --locked --git ",
    env!("CARGO_PKG_REPOSITORY"),
    " mlops-cli"
);

#[derive(Subcommand)]
enum PipelineCommand {
    /// Print the stages and steps in the order they run
    Plan {
        /// Project directory
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Output format
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// Run the pipeline, stage gate by stage gate
    Run(RunArgs),
    /// Show the last run (or another one)
    Status {
        /// Project directory
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The run to show (default: the last one)
        #[arg(long)]
        run: Option<i64>,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// List recorded runs, newest first
    History {
        /// Project directory
        #[arg(default_value = ".")]
        path: PathBuf,
        /// How many runs
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print a JSON array
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Project directory
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Run only this stage (refused unless every earlier stage has passed for this commit)
    #[arg(long, value_name = "STAGE", conflicts_with_all = ["from", "resume"])]
    stage: Option<Stage>,
    /// Run this stage and every later one (same evidence rule as --stage)
    #[arg(long, value_name = "STAGE", conflicts_with = "resume")]
    from: Option<Stage>,
    /// Finish the last unfinished run without rerunning its passed steps
    #[arg(long)]
    resume: bool,
    /// Rerun steps even when their inputs are unchanged
    #[arg(long)]
    force: bool,
    /// Steps to run at once (default: the number of cores)
    #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Print events as JSON lines
    #[arg(long)]
    json: bool,
    /// Run only the steps whose inputs changed since this git revision
    /// (and what depends on them); other steps reuse their last pass
    #[arg(long, value_name = "REV", conflicts_with_all = ["resume", "force"])]
    changed_since: Option<String>,
    /// Also write the run as JUnit XML to this file (for CI systems)
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// The provider for infrastructure and deploy steps, overriding
    /// `[infra] provider`
    #[arg(long, value_parser = ["local", "docker"])]
    provider: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    Text,
    Dot,
    Json,
}

/// What every stage crate contributes (kinds, sections, evidence), one
/// entry point each, in climbing order; `provider` is `pipeline run
/// --provider`, handed to the stage-1 and stage-3 kinds as an option.
fn registry(provider: Option<mlops_iac::ProviderKind>) -> KindRegistry {
    type Register = fn(&mut KindRegistry) -> Result<(), mlops_core::RegistryError>;
    const STAGES: &[Register] = &[
        mlops_iac::register,
        mlops_ci::register,
        mlops_cd::register,
        mlops_release::register,
        mlops_apm::register,
        mlops_loadtest::register,
    ];
    let mut registry = KindRegistry::new();
    registry.set_option(mlops_iac::IacOptions {
        supervisor: infra::supervisor(),
        provider,
    });
    // The release gateway runs as this program's hidden `gateway-serve`.
    if let Ok(exe) = std::env::current_exe() {
        registry.set_option(mlops_release::service::GatewayProgram::mlops(&exe));
        // The collector, as its hidden `collector-serve`.
        registry.set_option(mlops_apm::collector::service::CollectorProgram::mlops(exe));
    }
    for register in STAGES.iter() {
        // Names are fixed in the stage crates; a clash is a bug that the
        // tests catch, not something a user can cause.
        register(&mut registry).expect("stage crates register distinct names");
    }
    registry
}

/// An error with the exit code it should produce.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        let code = if is_broken_pipe(&error) {
            exit::OK
        } else {
            exit::ENGINE
        };
        Failure { code, error }
    }
}

fn fail(code: u8, error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code,
        error: error.into(),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // `infra plan --detailed-exitcode` keeps 2 for "changes": any
            // error, a bad argument included, is 1 there (as Terraform's).
            let detailed = std::env::args().any(|a| a == "--detailed-exitcode");
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ if detailed => exit::RUN_FAILED,
                _ => exit::INVALID,
            });
        }
    };
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) if f.code == exit::OK => ExitCode::SUCCESS,
        Err(f) => {
            // Manifest diagnostics render themselves in full.
            match f.error.downcast_ref::<ManifestError>() {
                Some(ManifestError::Invalid(d)) => eprintln!("{d}"),
                _ => eprintln!("error: {:#}", f.error),
            }
            ExitCode::from(f.code)
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Init { path, force } => cmd_init(&path, force),
        Command::Validate { path } => cmd_validate(&path),
        Command::Schema => {
            let schema =
                serde_json::to_string_pretty(&manifest::wire::json_schema_with(&registry(None)))?;
            writeln!(io::stdout().lock(), "{schema}")?;
            Ok(exit::OK)
        }
        Command::Pipeline(PipelineCommand::Plan { path, format }) => cmd_plan(&path, format),
        Command::Pipeline(PipelineCommand::Run(args)) => {
            let junit = args.junit.clone();
            let project = args.path.clone();
            let result = cmd_run(args);
            match (&junit, &result) {
                (Some(file), Err(f)) if f.code != exit::OK => {
                    // The run did not happen: the CI system still gets a
                    // report that says why.
                    let name = project_name(&project);
                    write_file(
                        file,
                        &mlops_ci::export::error_junit(&name, &format!("{:#}", f.error)),
                    )?;
                }
                _ => {}
            }
            result
        }
        Command::Infra(command) => infra::run(command),
        Command::Model(command) => model::run(command),
        Command::Release(command) => release::run(command),
        Command::Assess(args) => assess::run(args),
        Command::Gateway(args) => gateway::run(args),
        Command::Monitor(args) => monitor::run(*args),
        Command::Drift(args) => drift::run(&args),
        Command::Autoscale(command) => autoscale::run(&command),
        Command::Loadtest(command) => loadtest::run(command),
        Command::Logs(args) => logs::run(&args),
        Command::CollectorServe { state, admin_port } => {
            use mlops_apm::collector::service::{ServeOptions, serve_main};
            use mlops_release::service::EventLog;
            let options = ServeOptions { state, admin_port };
            Ok(match serve_main(&options, EventLog::new(io::stderr())) {
                c if c == ExitCode::SUCCESS => exit::OK,
                _ => exit::ENGINE,
            })
        }
        Command::GatewayServe {
            state,
            listen,
            admin_port,
        } => {
            use mlops_release::service::{EventLog, ServeOptions, serve_main};
            let options = ServeOptions {
                state,
                listen,
                admin_port,
            };
            Ok(match serve_main(&options, EventLog::new(io::stderr())) {
                c if c == ExitCode::SUCCESS => exit::OK,
                _ => exit::ENGINE,
            })
        }
        Command::Data(DataCommand::InferSchema {
            file,
            output,
            force,
            max_allowed,
        }) => cmd_infer_schema(&file, output.as_deref(), force, max_allowed),
        Command::Ci(CiCommand::Export {
            system,
            path,
            output,
            force,
            install,
        }) => cmd_ci_export(&system, &path, output, force, &install),
        Command::Pipeline(PipelineCommand::Status { path, run, json }) => {
            cmd_status(&path, run, json)
        }
        Command::Pipeline(PipelineCommand::History { path, limit, json }) => {
            cmd_history(&path, limit, json)
        }
    }
}

fn load(path: &Path) -> Result<Manifest, Failure> {
    load_with(path, &registry(None))
}

fn load_with(path: &Path, registry: &KindRegistry) -> Result<Manifest, Failure> {
    if !path.is_dir() {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!("project directory {} does not exist", path.display()),
        ));
    }
    Manifest::load(path, registry).map_err(|e| match &e {
        // Text that is not UTF-8 is bad input; anything else is the system.
        ManifestError::Read { source, .. } if source.kind() != io::ErrorKind::InvalidData => {
            fail(exit::ENGINE, e)
        }
        _ => fail(exit::INVALID, e),
    })
}

fn cmd_init(path: &Path, force: bool) -> Result<u8, Failure> {
    let scaffold =
        init::scaffold_with(path, &registry(None)).map_err(|e| fail(exit::INVALID, e))?;
    let written = scaffold.write(path, force).map_err(|e| match e {
        init::InitError::Exists(_) => fail(exit::INVALID, e),
        _ => fail(exit::ENGINE, e),
    })?;
    let mut out = io::stdout().lock();
    writeln!(out, "wrote {}", written.display())?;
    for finding in &scaffold.findings {
        writeln!(out, "  - {finding}")?;
    }
    writeln!(out, "next: mlops pipeline run {}", path.display())?;
    Ok(exit::OK)
}

fn cmd_validate(path: &Path) -> Result<u8, Failure> {
    let m = load(path)?;
    let stages: Vec<&str> = m.pipeline.stages().iter().map(|s| s.name()).collect();
    writeln!(
        io::stdout().lock(),
        "{} is valid: {} steps in {} stages ({})",
        m.path.display(),
        m.pipeline.steps().len(),
        stages.len(),
        stages.join(", ")
    )?;
    Ok(exit::OK)
}

fn cmd_plan(path: &Path, format: PlanFormat) -> Result<u8, Failure> {
    let m = load(path)?;
    let mut out = io::stdout().lock();
    match format {
        PlanFormat::Dot => write!(out, "{}", m.pipeline.to_dot())?,
        PlanFormat::Json => {
            let plan = output::plan_json(&m);
            writeln!(out, "{}", serde_json::to_string_pretty(&plan)?)?;
        }
        PlanFormat::Text => output::write_plan(&mut out, &m)?,
    }
    Ok(exit::OK)
}

fn cmd_run(args: RunArgs) -> Result<u8, Failure> {
    let provider = args
        .provider
        .as_deref()
        .map(str::parse::<mlops_iac::ProviderKind>)
        .transpose()
        .map_err(|e| fail(exit::INVALID, anyhow::anyhow!(e)))?;
    let m = load_with(&args.path, &registry(provider))?;
    let selection = match (args.stage, args.from) {
        (Some(s), _) => Selection::Stage(s),
        (None, Some(s)) => Selection::From(s),
        (None, None) => Selection::All,
    };
    // One worker: the executor's coordinator polls every step's future
    // itself, and the only other tasks are the printer and the Ctrl-C
    // handler, so a second worker added nothing but cross-thread wake-ups
    // (10,000-step DAG: 1.5 futex calls and 4.5 context switches per step
    // with two workers, 0.5 and 3.3 with one; fan-out 1.18x ninja -> 1.07x).
    // Not the current-thread runtime: there `block_on`'s thread runs the
    // coordinator, and the same fan-out took 1.42-1.50x ninja.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut executor = Executor::new(&m.root).map_err(|e| fail(exit::ENGINE, e))?;
        let events = executor.subscribe();
        let mode = if args.json {
            Mode::Json
        } else {
            Mode::detect()
        };
        let printer =
            tokio::spawn(EventPrinter::new(mode).consume(events));

        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ncancelling: stopping running steps (SIGTERM, then SIGKILL after a few seconds)");
                on_signal.cancel();
                // Exiting now would leave the steps' process groups running;
                // the executor kills them within its grace period.
                while tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("still stopping running steps");
                }
            }
        });
        let mut opts = RunOptions {
            selection,
            force: args.force,
            resume: args.resume,
            cancel,
            ..RunOptions::default()
        };
        if let Some(jobs) = args.jobs {
            opts.jobs = jobs.into();
        }
        opts.changed_since = args.changed_since.clone();
        let result = executor.run(&m.pipeline, opts).await;
        drop(executor);
        let printed = printer.await;
        let report = result.map_err(|e| {
            let code = match e {
                ExecError::Refused { .. }
                | ExecError::NothingToResume(_)
                | ExecError::ResumeCommitChanged { .. }
                | ExecError::Ledger(mlops_core::LedgerError::Busy { .. }) => exit::REFUSED,
                ExecError::StageNotEnabled(_) | ExecError::ChangedSince(_) => exit::INVALID,
                _ => exit::ENGINE,
            };
            fail(code, e)
        })?;
        match printed {
            Ok(Err(e)) => return Err(Failure::from(e)),
            Err(e) => {
                return Err(fail(
                    exit::ENGINE,
                    anyhow::anyhow!("output task failed: {e}"),
                ));
            }
            Ok(Ok(())) => {}
        }
        if let Some(file) = &args.junit {
            let ledger = Ledger::open(&m.root).map_err(|e| fail(exit::ENGINE, e))?;
            let run = ledger.run(report.run_id)?.ok_or_else(|| {
                fail(exit::ENGINE, anyhow::anyhow!("run {} vanished from the ledger", report.run_id))
            })?;
            write_file(file, &mlops_ci::export::run_junit(&run))?;
        }
        Ok(match report.status {
            RunStatus::Passed => exit::OK,
            RunStatus::Cancelled => exit::CANCELLED,
            RunStatus::Failed | RunStatus::Running => exit::RUN_FAILED,
        })
    })
}

fn open_ledger(path: &Path) -> Result<Ledger, Failure> {
    if !path.is_dir() {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!("project directory {} does not exist", path.display()),
        ));
    }
    Ledger::open_existing(path)
        .map_err(|e| fail(exit::ENGINE, e))?
        .ok_or_else(|| {
            fail(
                exit::INVALID,
                anyhow::anyhow!(
                    "no runs recorded in {} (no {}/ledger.db); run `mlops pipeline run {}` first",
                    path.display(),
                    STATE_DIR,
                    path.display()
                ),
            )
        })
}

fn cmd_status(path: &Path, run: Option<i64>, json: bool) -> Result<u8, Failure> {
    let ledger = open_ledger(path)?;
    let id = match run {
        Some(id) => id,
        None => ledger.last_run_id()?.ok_or_else(|| {
            fail(
                exit::INVALID,
                anyhow::anyhow!("no runs recorded in {}", path.display()),
            )
        })?,
    };
    let summary = ledger.run(id)?.ok_or_else(|| {
        fail(
            exit::INVALID,
            anyhow::anyhow!("no run {id} in {}", path.display()),
        )
    })?;
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        output::write_status(&mut out, &summary, &registry(None))?;
    }
    Ok(exit::OK)
}

fn cmd_history(path: &Path, limit: usize, json: bool) -> Result<u8, Failure> {
    let ledger = open_ledger(path)?;
    let runs = ledger.history(limit)?;
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&runs)?)?;
    } else {
        output::write_history(&mut out, &runs)?;
    }
    Ok(exit::OK)
}

/// The project's name from its manifest, or its directory's name.
fn project_name(path: &Path) -> String {
    Manifest::load(path, &registry(None))
        .map(|m| m.pipeline.project().to_owned())
        .unwrap_or_else(|_| {
            std::fs::canonicalize(path)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "project".to_owned())
        })
}

/// Writes a whole file, creating its directory.
fn write_file(path: &Path, text: &str) -> Result<(), Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn cmd_ci_export(
    system: &str,
    path: &Path,
    output: Option<PathBuf>,
    force: bool,
    install: &str,
) -> Result<u8, Failure> {
    use mlops_ci::export::{CiSystem, WorkflowSpec, workflow};
    let system: CiSystem = system
        .parse()
        .map_err(|e: String| fail(exit::INVALID, anyhow::anyhow!(e)))?;
    let m = load(path)?;
    let root = std::fs::canonicalize(&m.root).unwrap_or_else(|_| m.root.clone());
    let repo_root = git_root(&root).unwrap_or_else(|| root.clone());
    let spec =
        WorkflowSpec::for_project(m.pipeline.project(), &root, &repo_root, install.to_owned());
    let text = workflow(system, &spec);
    let target = match output {
        Some(p) if p.as_os_str() == "-" => {
            write!(io::stdout().lock(), "{text}")?;
            return Ok(exit::OK);
        }
        Some(p) => p,
        None => repo_root.join(system.default_path()),
    };
    if target.exists() && !force {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!("{} exists; pass --force to overwrite it", target.display()),
        ));
    }
    write_file(&target, &text)?;
    writeln!(
        io::stdout().lock(),
        "wrote {} (runs `mlops pipeline run` in {} on every push)",
        target.display(),
        spec.project_dir
    )?;
    Ok(exit::OK)
}

/// The working directory of the git repository holding `dir`.
fn git_root(dir: &Path) -> Option<PathBuf> {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.join(".git").exists() {
            return Some(d.to_path_buf());
        }
        cur = d.parent();
    }
    None
}

fn cmd_infer_schema(
    file: &Path,
    output: Option<&Path>,
    force: bool,
    max_allowed: usize,
) -> Result<u8, Failure> {
    use mlops_ci::data::{DataError, InferOptions, infer_schema};
    if let Some(out) = output
        && out.exists()
        && !force
    {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!("{} exists; pass --force to overwrite it", out.display()),
        ));
    }
    let options = InferOptions {
        max_allowed_values: max_allowed,
        ..InferOptions::default()
    };
    let schema = infer_schema(file, &options).map_err(|e| match e {
        // Reading failed for a reason of the system, not of the file.
        DataError::Read { ref source, .. } if source.kind() != io::ErrorKind::NotFound => {
            fail(exit::ENGINE, e)
        }
        _ => fail(exit::INVALID, e),
    })?;
    let text = format!(
        "# Proposed by `mlops data infer-schema {}`: review the bounds before relying on them.\n{}",
        file.display(),
        schema.to_toml()
    );
    match output {
        Some(out) => {
            write_file(out, &text)?;
            writeln!(io::stdout().lock(), "wrote {}", out.display())?;
        }
        None => write!(io::stdout().lock(), "{text}")?,
    }
    Ok(exit::OK)
}
