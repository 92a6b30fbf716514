//! `mlops model`: the model registry from the command line. Lists versions,
//! shows one with its lineage, compares two, and moves a version between
//! stages. The registry itself lives in `mlops_core::registry`; this module
//! only parses, looks up and prints.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use mlops_ci::metrics::{Metrics, flatten, fmt_value};
use mlops_core::Ledger;
use mlops_core::ledger::STATE_DIR;
use mlops_core::registry::{ModelStage, ModelVersion, RegistryError};
use serde_json::json;

use crate::{Failure, exit, fail};

#[derive(Subcommand)]
pub(crate) enum ModelCommand {
    /// List registered model versions, newest first
    List {
        /// Project directory
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Only the versions of this model
        #[arg(long)]
        model: Option<String>,
        /// Print a JSON array
        #[arg(long)]
        json: bool,
    },
    /// Show a version: lineage, files, metrics and stage history
    Show {
        /// The version: MODEL:N, N, MODEL@latest, MODEL@production or a digest prefix
        version: String,
        /// Project directory
        #[arg(long, default_value = ".")]
        path: PathBuf,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Compare two versions: metrics, lineage and files
    Diff {
        /// The first version
        a: String,
        /// The second version (a bare number means the first one's model)
        b: String,
        /// Project directory
        #[arg(long, default_value = ".")]
        path: PathBuf,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Move a version to a stage; promoting archives the version it replaces
    Stage {
        /// The version
        version: String,
        /// none, staging, production or archived
        #[arg(value_parser = parse_stage)]
        stage: ModelStage,
        /// Why (kept in the stage history)
        #[arg(long)]
        reason: String,
        /// Who (default: $USER)
        #[arg(long)]
        actor: Option<String>,
        /// Project directory
        #[arg(long, default_value = ".")]
        path: PathBuf,
    },
}

fn parse_stage(s: &str) -> Result<ModelStage, String> {
    s.parse()
}

pub(crate) fn run(cmd: ModelCommand) -> Result<u8, Failure> {
    match cmd {
        ModelCommand::List { path, model, json } => list(&path, model.as_deref(), json),
        ModelCommand::Show {
            version,
            path,
            json,
        } => show(&path, &version, json),
        ModelCommand::Diff { a, b, path, json } => diff(&path, &a, &b, json),
        ModelCommand::Stage {
            version,
            stage,
            reason,
            actor,
            path,
        } => set_stage(&path, &version, stage, &reason, actor),
    }
}

/// The ledger holding the registry; a missing one is bad input.
fn registry(path: &Path) -> Result<Ledger, Failure> {
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
                    "no model registry in {} (no {STATE_DIR}/ledger.db); register a model with a `package` step and `mlops pipeline run` first",
                    path.display()
                ),
            )
        })
}

/// Ledger failures are the engine's; everything else is what was asked.
fn registry_failure(e: RegistryError) -> Failure {
    match e {
        RegistryError::Ledger(_) => fail(exit::ENGINE, e),
        _ => fail(exit::INVALID, e),
    }
}

fn find(ledger: &Ledger, model: Option<&str>, spec: &str) -> Result<ModelVersion, Failure> {
    ledger
        .find_model_version(model, spec)
        .map_err(registry_failure)
}

fn numeric_metrics(v: &ModelVersion) -> Metrics {
    let mut m = Metrics::new();
    if let Some(value) = &v.metrics {
        flatten("", value, &mut m);
    }
    m
}

fn short(hash: &str, n: usize) -> &str {
    &hash[..hash.len().min(n)]
}

/// `2026-01-02T03:04:05.678Z` → `2026-01-02 03:04:05`.
fn when(rfc3339: &str) -> String {
    short(rfc3339, 19).replacen('T', " ", 1)
}

fn commit_text(v: &ModelVersion, n: usize) -> String {
    match (&v.commit, v.dirty) {
        (Some(c), false) => short(c, n).to_owned(),
        (Some(c), true) => format!("{}-dirty", short(c, n)),
        (None, _) => "-".to_owned(),
    }
}

fn list(path: &Path, model: Option<&str>, json: bool) -> Result<u8, Failure> {
    let ledger = registry(path)?;
    let versions = ledger.model_versions(model).map_err(registry_failure)?;
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&versions)?)?;
        return Ok(exit::OK);
    }
    if versions.is_empty() {
        match model {
            Some(m) => writeln!(out, "no versions of model `{m}` registered")?,
            None => writeln!(out, "no model versions registered")?,
        }
        return Ok(exit::OK);
    }
    let rows: Vec<[String; 6]> = versions
        .iter()
        .map(|v| {
            let metrics = numeric_metrics(v);
            let mut shown: Vec<String> = metrics
                .iter()
                .take(3)
                .map(|(k, x)| format!("{k}={}", fmt_value(*x)))
                .collect();
            if metrics.len() > 3 {
                shown.push("…".to_owned());
            }
            [
                v.id(),
                v.stage.to_string(),
                when(&v.created_at),
                commit_text(v, 8),
                if shown.is_empty() {
                    "-".to_owned()
                } else {
                    shown.join(" ")
                },
                short(&v.digest, 12).to_owned(),
            ]
        })
        .collect();
    let header = ["version", "stage", "created", "commit", "metrics", "digest"].map(String::from);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(exit::OK)
}

fn show(path: &Path, spec: &str, json: bool) -> Result<u8, Failure> {
    let ledger = registry(path)?;
    let v = find(&ledger, None, spec)?;
    let history = ledger
        .model_stage_history(&v.model, v.number)
        .map_err(registry_failure)?;
    let mut out = io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(&v)?;
        value["stage_history"] = serde_json::to_value(&history)?;
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(exit::OK);
    }
    writeln!(out, "{} ({})", v.id(), v.stage)?;
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
    let fields = [
        ("digest", format!("sha256:{}", v.digest)),
        ("created", v.created_at.clone()),
        ("stored in", v.path.clone()),
        (
            "commit",
            match &v.commit {
                Some(c) if v.dirty => format!("{c} (working tree dirty)"),
                Some(c) => c.clone(),
                None => "- (not a git repository, or no commits)".to_owned(),
            },
        ),
        ("data hash", opt(&v.data_hash)),
        (
            "run",
            match (v.run_id, &v.step) {
                (Some(r), Some(s)) => format!("{r}, step {s}"),
                (Some(r), None) => r.to_string(),
                (None, _) => "-".to_owned(),
            },
        ),
        (
            "parent",
            v.parent
                .map_or_else(|| "-".to_owned(), |p| format!("{}:{p}", v.model)),
        ),
    ];
    for (k, value) in fields {
        writeln!(out, "  {k:<10} {value}")?;
    }
    writeln!(out, "files ({}, {} bytes)", v.files.len(), v.bytes())?;
    let size_width = v
        .files
        .iter()
        .map(|f| f.size.to_string().len())
        .max()
        .unwrap_or(1);
    for f in &v.files {
        writeln!(out, "  {}  {:>size_width$}  {}", f.sha256, f.size, f.path)?;
    }
    match &v.metrics {
        None => writeln!(out, "metrics: none recorded")?,
        Some(m) => {
            let numeric = numeric_metrics(&v);
            writeln!(out, "metrics")?;
            if numeric.is_empty() {
                writeln!(out, "  {m}")?;
            }
            let width = numeric.keys().map(String::len).max().unwrap_or(0);
            for (k, x) in &numeric {
                writeln!(out, "  {k:<width$}  {}", fmt_value(*x))?;
            }
        }
    }
    if history.is_empty() {
        writeln!(out, "stage history: none (never staged)")?;
    } else {
        writeln!(out, "stage history")?;
        for c in &history {
            writeln!(
                out,
                "  {}  {:<10}  by {}: {}",
                when(&c.at),
                c.stage,
                c.actor,
                c.reason
            )?;
        }
    }
    Ok(exit::OK)
}

/// What differs between two versions.
fn compare(a: &ModelVersion, b: &ModelVersion) -> serde_json::Value {
    let (ma, mb) = (numeric_metrics(a), numeric_metrics(b));
    let names: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    let metrics: Vec<serde_json::Value> = names
        .into_iter()
        .map(|name| {
            let (x, y) = (ma.get(name).copied(), mb.get(name).copied());
            json!({
                "name": name,
                "a": x,
                "b": y,
                "delta": x.zip(y).map(|(x, y)| y - x),
            })
        })
        .collect();
    let lineage = json!({
        "commit": [a.commit, b.commit],
        "dirty": [a.dirty, b.dirty],
        "data_hash": [a.data_hash, b.data_hash],
        "run_id": [a.run_id, b.run_id],
        "step": [a.step, b.step],
        "parent": [a.parent, b.parent],
        "stage": [a.stage, b.stage],
        "created_at": [a.created_at, b.created_at],
    });
    let fa: BTreeMap<&str, _> = a.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let fb: BTreeMap<&str, _> = b.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let added: Vec<_> = fb
        .iter()
        .filter(|(p, _)| !fa.contains_key(*p))
        .map(|(_, f)| f)
        .collect();
    let removed: Vec<_> = fa
        .iter()
        .filter(|(p, _)| !fb.contains_key(*p))
        .map(|(_, f)| f)
        .collect();
    let mut changed = Vec::new();
    let mut unchanged = 0;
    for (p, x) in &fa {
        if let Some(y) = fb.get(p) {
            if x.sha256 == y.sha256 {
                unchanged += 1;
            } else {
                changed.push(json!({"path": p, "a": x, "b": y}));
            }
        }
    }
    json!({
        "a": a.id(),
        "b": b.id(),
        "same_artifact": a.digest == b.digest,
        "metrics": metrics,
        "lineage": lineage,
        "files": {
            "added": added,
            "removed": removed,
            "changed": changed,
            "unchanged": unchanged,
        },
    })
}

fn diff(path: &Path, a: &str, b: &str, json: bool) -> Result<u8, Failure> {
    let ledger = registry(path)?;
    let va = find(&ledger, None, a)?;
    // `mlops model diff iris:1 2`: a bare number is the first one's model.
    let b_model =
        (b == "latest" || b.bytes().all(|c| c.is_ascii_digit())).then_some(va.model.as_str());
    let vb = find(&ledger, b_model, b)?;
    let d = compare(&va, &vb);
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&d)?)?;
        return Ok(exit::OK);
    }
    let (ida, idb) = (va.id(), vb.id());
    writeln!(out, "{ida} → {idb}")?;
    if va.digest == vb.digest {
        writeln!(
            out,
            "  the same artifact (sha256 {})",
            short(&va.digest, 12)
        )?;
    }
    let num = |x: &serde_json::Value| x.as_f64().map_or_else(|| "-".to_owned(), fmt_value);
    let rows: Vec<[String; 4]> = d["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let delta = match m["delta"].as_f64() {
                Some(x) if x > 0.0 => format!("+{}", fmt_value(x)),
                Some(0.0) => "=".to_owned(),
                Some(x) => fmt_value(x),
                None => String::new(),
            };
            [
                m["name"].as_str().unwrap_or_default().to_owned(),
                num(&m["a"]),
                num(&m["b"]),
                delta,
            ]
        })
        .collect();
    let mut lineage_rows: Vec<[String; 3]> = Vec::new();
    let opt = |s: &Option<String>, n: usize| {
        s.as_deref()
            .map_or("-".to_owned(), |s| short(s, n).to_owned())
    };
    let num_opt = |x: Option<i64>| x.map_or("-".to_owned(), |x| x.to_string());
    for (k, x, y) in [
        ("commit", commit_text(&va, 12), commit_text(&vb, 12)),
        ("data hash", opt(&va.data_hash, 12), opt(&vb.data_hash, 12)),
        ("run", num_opt(va.run_id), num_opt(vb.run_id)),
        ("step", opt(&va.step, 64), opt(&vb.step, 64)),
        ("parent", num_opt(va.parent), num_opt(vb.parent)),
        ("stage", va.stage.to_string(), vb.stage.to_string()),
        ("created", when(&va.created_at), when(&vb.created_at)),
    ] {
        lineage_rows.push([k.to_owned(), x, y]);
    }
    // Labels are indented by two under their section's heading.
    let label = rows
        .iter()
        .map(|r| r[0].chars().count())
        .chain(lineage_rows.iter().map(|r| r[0].len()))
        .max()
        .unwrap_or(0)
        .max("metrics".len() - 2);
    let column = |i: usize, id: &str| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain(lineage_rows.iter().map(|r| r[i].chars().count()))
            .chain([id.chars().count()])
            .max()
            .unwrap_or(0)
    };
    let (w1, w2) = (column(1, &ida), column(2, &idb));
    let mut line = |text: String| writeln!(out, "{}", text.trim_end());
    let heading = label + 2;
    if rows.is_empty() {
        line("metrics: none recorded".to_owned())?;
    } else {
        line(format!(
            "{:<heading$}  {ida:<w1$}  {idb:<w2$}  delta",
            "metrics"
        ))?;
        for [name, x, y, delta] in &rows {
            line(format!("  {name:<label$}  {x:<w1$}  {y:<w2$}  {delta}"))?;
        }
    }
    line(format!("{:<heading$}  {ida:<w1$}  {idb}", "lineage"))?;
    for [k, x, y] in &lineage_rows {
        let same = if x == y { "(same)" } else { "" };
        line(format!("  {k:<label$}  {x:<w1$}  {y:<w2$}  {same}"))?;
    }
    let files = &d["files"];
    let list = |key: &str| files[key].as_array().cloned().unwrap_or_default();
    let (added, removed, changed) = (list("added"), list("removed"), list("changed"));
    writeln!(
        out,
        "files: {} added, {} removed, {} changed, {} unchanged",
        added.len(),
        removed.len(),
        changed.len(),
        files["unchanged"]
    )?;
    for f in &added {
        writeln!(
            out,
            "  + {} ({} bytes)",
            f["path"].as_str().unwrap_or_default(),
            f["size"]
        )?;
    }
    for f in &removed {
        writeln!(
            out,
            "  - {} ({} bytes)",
            f["path"].as_str().unwrap_or_default(),
            f["size"]
        )?;
    }
    for f in &changed {
        writeln!(
            out,
            "  ~ {}: sha256 {} → {}, {} → {} bytes",
            f["path"].as_str().unwrap_or_default(),
            short(f["a"]["sha256"].as_str().unwrap_or_default(), 12),
            short(f["b"]["sha256"].as_str().unwrap_or_default(), 12),
            f["a"]["size"],
            f["b"]["size"]
        )?;
    }
    Ok(exit::OK)
}

fn set_stage(
    path: &Path,
    spec: &str,
    stage: ModelStage,
    reason: &str,
    actor: Option<String>,
) -> Result<u8, Failure> {
    let ledger = registry(path)?;
    let v = find(&ledger, None, spec)?;
    let actor = actor
        .filter(|a| !a.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    let t = ledger
        .set_model_stage(&v.model, v.number, stage, &actor, reason)
        .map_err(registry_failure)?;
    let mut out = io::stdout().lock();
    write!(out, "{}: {} → {}", v.id(), t.from, t.to)?;
    match t.archived {
        Some(n) => writeln!(out, " (archived {}:{n}, which was in {})", v.model, t.to)?,
        None => writeln!(out)?,
    }
    Ok(exit::OK)
}
