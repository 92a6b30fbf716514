//! `mlops drift REFERENCE CURRENT`: per feature, the drift tests, their
//! values and the verdict (`mlops_apm::drift`).

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use mlops_apm::drift::{Dataset, ReadOptions, Thresholds, Verdict, compare};

use crate::{Failure, exit, fail};

#[derive(Args)]
pub(crate) struct DriftArgs {
    /// The reference data (the training CSV, or JSON lines)
    reference: PathBuf,
    /// The current data (CSV or JSON lines)
    current: PathBuf,
    /// PSI at or above which a numeric feature drifted
    #[arg(long, default_value_t = Thresholds::default().psi)]
    psi: f64,
    /// Wasserstein-1 over the reference's standard deviation at or above
    /// which a numeric feature drifted
    #[arg(long, default_value_t = Thresholds::default().wasserstein)]
    wasserstein: f64,
    /// KS statistic at or above which (with p < alpha) a numeric feature
    /// drifted
    #[arg(long, default_value_t = Thresholds::default().ks)]
    ks: f64,
    /// Jensen-Shannon distance at or above which (with the chi-square
    /// p < alpha) a categorical feature drifted
    #[arg(long, default_value_t = Thresholds::default().js)]
    js: f64,
    /// Significance level of the KS and chi-square tests
    #[arg(long, default_value_t = Thresholds::default().alpha)]
    alpha: f64,
    /// Fewer values than this on either side is insufficient data
    #[arg(long, default_value_t = Thresholds::default().min_samples)]
    min_samples: u64,
    /// Numeric values each file may hold in memory, in MiB; past it
    /// columns spill to temporary files (the comparison then holds about
    /// two columns per core)
    #[arg(long, default_value_t = ReadOptions::default().memory >> 20)]
    memory_mib: u64,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

/// Exit 0: no drift; 1: drift; 3: insufficient data to say; 2: bad input.
pub(crate) fn run(a: &DriftArgs) -> Result<u8, Failure> {
    for (name, v) in [
        ("--psi", a.psi),
        ("--wasserstein", a.wasserstein),
        ("--ks", a.ks),
        ("--js", a.js),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(fail(
                exit::INVALID,
                anyhow::anyhow!("{name} must be a positive number, not {v}"),
            ));
        }
    }
    if !(a.alpha > 0.0 && a.alpha < 1.0) {
        return Err(fail(
            exit::INVALID,
            anyhow::anyhow!("--alpha must be between 0 and 1, not {}", a.alpha),
        ));
    }
    let t = Thresholds {
        psi: a.psi,
        wasserstein: a.wasserstein,
        ks: a.ks,
        js: a.js,
        alpha: a.alpha,
        min_samples: a.min_samples.max(1),
    };
    let options = ReadOptions {
        memory: a.memory_mib.saturating_mul(1 << 20),
    };
    let (reference, current) = std::thread::scope(|s| {
        let r = s.spawn(|| Dataset::read_with(&a.reference, options));
        let c = Dataset::read_with(&a.current, options);
        (
            r.join()
                .unwrap_or_else(|_| Err(mlops_apm::drift::DriftError::Empty(a.reference.clone()))),
            c,
        )
    });
    let reference = reference.map_err(|e| fail(exit::INVALID, e))?;
    let current = current.map_err(|e| fail(exit::INVALID, e))?;
    let report = compare(&reference, &current, &t);
    let mut out = io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} ({} rows) against {} ({} rows)",
            report.current, report.current_rows, report.reference, report.reference_rows
        )?;
        writeln!(
            out,
            "{:<24} {:<12} {:<56} verdict",
            "feature", "kind", "tests"
        )?;
        for f in &report.features {
            let tests: Vec<String> = f
                .tests
                .iter()
                .map(|t| match t.p_value {
                    Some(p) => format!("{} {:.3} (p {:.2e})", t.test, t.value, p),
                    None => format!("{} {:.3}", t.test, t.value),
                })
                .collect();
            writeln!(
                out,
                "{:<24} {:<12} {:<56} {}",
                f.feature,
                f.kind,
                tests.join(", "),
                match f.verdict {
                    Verdict::NoDrift => "no drift".to_owned(),
                    _ => format!("{}: {}", f.verdict.as_str(), f.reason),
                }
            )?;
        }
        for f in &report.only_in_reference {
            writeln!(out, "{f:<24} only in the reference")?;
        }
        for f in &report.only_in_current {
            writeln!(out, "{f:<24} only in the current data")?;
        }
        writeln!(
            out,
            "{}{}",
            report.verdict.as_str(),
            if report.drifted.is_empty() {
                String::new()
            } else {
                format!(": {}", report.drifted.join(", "))
            }
        )?;
    }
    Ok(match report.verdict {
        Verdict::NoDrift => exit::OK,
        Verdict::Drift => exit::RUN_FAILED,
        Verdict::InsufficientData => exit::REFUSED,
    })
}
