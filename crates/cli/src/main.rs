//! The `mlops` binary: argument parsing, terminal output and exit codes.
//! Everything else lives in the libraries; this crate is the only one that
//! prints.

mod output;

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
}

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
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    Text,
    Dot,
    Json,
}

/// The registry of built-in step kinds every stage crate contributes to.
fn kinds() -> KindRegistry {
    KindRegistry::new()
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
    let cli = Cli::parse();
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
            let schema = serde_json::to_string_pretty(&manifest::wire::json_schema())?;
            writeln!(io::stdout().lock(), "{schema}")?;
            Ok(exit::OK)
        }
        Command::Pipeline(PipelineCommand::Plan { path, format }) => cmd_plan(&path, format),
        Command::Pipeline(PipelineCommand::Run(args)) => cmd_run(args),
        Command::Pipeline(PipelineCommand::Status { path, run, json }) => {
            cmd_status(&path, run, json)
        }
        Command::Pipeline(PipelineCommand::History { path, limit, json }) => {
            cmd_history(&path, limit, json)
        }
    }
}

fn load(path: &Path) -> Result<Manifest, Failure> {
    if !path.is_dir() {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!("project directory {} does not exist", path.display()),
        ));
    }
    Manifest::load(path, &kinds()).map_err(|e| match &e {
        // Text that is not UTF-8 is bad input; anything else is the system.
        ManifestError::Read { source, .. } if source.kind() != io::ErrorKind::InvalidData => {
            fail(exit::ENGINE, e)
        }
        _ => fail(exit::INVALID, e),
    })
}

fn cmd_init(path: &Path, force: bool) -> Result<u8, Failure> {
    let scaffold = init::scaffold(path).map_err(|e| fail(exit::INVALID, e))?;
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
    let m = load(&args.path)?;
    let selection = match (args.stage, args.from) {
        (Some(s), _) => Selection::Stage(s),
        (None, Some(s)) => Selection::From(s),
        (None, None) => Selection::All,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
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
        let result = executor.run(&m.pipeline, opts).await;
        drop(executor);
        let printed = printer.await;
        let report = result.map_err(|e| {
            let code = match e {
                ExecError::Refused { .. }
                | ExecError::NothingToResume(_)
                | ExecError::ResumeCommitChanged { .. }
                | ExecError::Ledger(mlops_core::LedgerError::Busy { .. }) => exit::REFUSED,
                ExecError::StageNotEnabled(_) => exit::INVALID,
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
        output::write_status(&mut out, &summary)?;
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
