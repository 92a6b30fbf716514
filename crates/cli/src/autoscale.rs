//! `mlops autoscale simulate FILE...`: run autoscaling scenarios through
//! the `hpa` and `kpa` policies (`mlops_loadtest::autoscale`) and say
//! whether each decided as its `expect` says.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use mlops_loadtest::autoscale::scenario;

use crate::{Failure, exit, fail};

#[derive(Subcommand)]
pub(crate) enum AutoscaleCommand {
    /// Decide each scenario (JSON: an HPA sync or a KPA sequence) and
    /// compare with its `expect`: exit 0 when all match, 1 when one does
    /// not, 2 on a file that is not a scenario
    Simulate(SimulateArgs),
}

#[derive(Args)]
pub(crate) struct SimulateArgs {
    /// Scenario files
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print one JSON object per file (the decision, with `file`, `id`,
    /// `passed` and the `mismatches`)
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(command: &AutoscaleCommand) -> Result<u8, Failure> {
    let AutoscaleCommand::Simulate(a) = command;
    // Every file is read and parsed before anything is decided: one bad
    // file is a bad invocation.
    let mut scenarios = Vec::new();
    for f in &a.files {
        let text = std::fs::read_to_string(f).map_err(|e| {
            fail(
                exit::INVALID,
                anyhow::anyhow!("cannot read {}: {e}", f.display()),
            )
        })?;
        let s = scenario::parse(&text)
            .map_err(|e| fail(exit::INVALID, anyhow::anyhow!("{}: {e}", f.display())))?;
        scenarios.push((f, s));
    }
    let mut out = io::stdout().lock();
    let mut failed = 0;
    for (f, s) in &scenarios {
        let name = s.id.clone().unwrap_or_else(|| f.display().to_string());
        if let Some(why) = &s.skip {
            if a.json {
                let line = serde_json::json!({ "file": f, "id": s.id, "skipped": why });
                writeln!(out, "{line}")?;
            } else {
                writeln!(out, "{name}: skipped ({why})")?;
            }
            continue;
        }
        let got = scenario::simulate(&s.case);
        let mismatches = s
            .expect
            .as_ref()
            .map(|e| scenario::check(e, &got))
            .unwrap_or_default();
        let passed = s.expect.as_ref().map(|_| mismatches.is_empty());
        if passed == Some(false) {
            failed += 1;
        }
        if a.json {
            let mut line = got.clone();
            if let Some(o) = line.as_object_mut() {
                o.insert("file".into(), serde_json::json!(f));
                o.insert("id".into(), serde_json::json!(s.id));
                o.insert("passed".into(), serde_json::json!(passed));
                o.insert("mismatches".into(), serde_json::json!(mismatches));
            }
            writeln!(out, "{line}")?;
        } else {
            let verdict = match passed {
                Some(true) => "as expected",
                Some(false) => "NOT as expected",
                None => "no expectation",
            };
            writeln!(out, "{name}: {got} — {verdict}")?;
            for m in &mismatches {
                writeln!(out, "  {m}")?;
            }
        }
    }
    if !a.json {
        writeln!(
            out,
            "{} scenario(s), {failed} not as expected",
            scenarios.len()
        )?;
    }
    Ok(if failed > 0 {
        exit::RUN_FAILED
    } else {
        exit::OK
    })
}
