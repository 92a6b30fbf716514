//! `mlops assess`: the maturity-assessment report.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use mlops_assess::render::{self, Format};
use mlops_assess::{AssessError, Options};

use crate::{Failure, exit, fail};

/// `mlops assess` arguments.
#[derive(Args)]
pub(crate) struct AssessArgs {
    /// The repository or project directory (it needs no mlops.toml)
    #[arg(default_value = ".")]
    path: PathBuf,
    /// html, md or json; by default from --output's extension, else md
    #[arg(long, short = 'f')]
    format: Option<String>,
    /// Write the report here instead of to stdout
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Exit with 1 when the six-stage maturity level is below LEVEL (0-6)
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(0..=6))]
    fail_under: Option<u8>,
    /// Scan only the working tree for committed secrets, not the git history
    #[arg(long)]
    no_history: bool,
}

pub(crate) fn run(args: AssessArgs) -> Result<u8, Failure> {
    let format = match (&args.format, &args.output) {
        (Some(f), _) => f
            .parse::<Format>()
            .map_err(|e| fail(exit::INVALID, anyhow::anyhow!(e)))?,
        (None, Some(out)) => format_of(out).unwrap_or(Format::Markdown),
        (None, None) => Format::Markdown,
    };
    if let Some(out) = &args.output
        && let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!(
                "cannot write {}: directory {} does not exist",
                out.display(),
                parent.display()
            ),
        ));
    }
    let options = Options {
        history: !args.no_history,
        ..Options::default()
    };
    let report = mlops_assess::assess(&args.path, &options).map_err(|e| match e {
        AssessError::Scan(_) => fail(exit::INVALID, e),
        AssessError::Runs { .. } => fail(exit::ENGINE, e),
    })?;
    let text = render::render(&report, format);
    match &args.output {
        Some(out) => {
            write_atomically(out, &text).map_err(|e| {
                fail(
                    exit::ENGINE,
                    anyhow::Error::new(e).context(format!("cannot write {}", out.display())),
                )
            })?;
            eprintln!(
                "{}: stage level {}/6, Microsoft level {}/4, ML Test Score {}; wrote {}",
                report.repository.name,
                report.stage_level,
                report.microsoft_level,
                mlops_assess::score::fmt_score(report.ml_test_score.score),
                out.display()
            );
        }
        None => io::stdout().lock().write_all(text.as_bytes())?,
    }
    if let Some(level) = args.fail_under
        && report.stage_level < level
    {
        eprintln!(
            "error: the maturity level is {} (stage {} is the next to climb), under --fail-under {level}",
            report.stage_level,
            report.stage_level + 1
        );
        return Ok(exit::RUN_FAILED);
    }
    Ok(exit::OK)
}

fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()? {
        "html" | "htm" => Some(Format::Html),
        "md" | "markdown" => Some(Format::Markdown),
        "json" => Some(Format::Json),
        _ => None,
    }
}

/// Writes through a temporary file in the same directory, so a reader
/// (or a crash) never sees half a report.
fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
