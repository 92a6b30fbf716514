//! Tidy checks: the invariants of `docs/ARCHITECTURE.md` that a test can
//! check by reading the workspace's own files (as rust-analyzer's tidy
//! tests do).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Each crate under `crates/` and the `mlops-*` crates it depends on
/// (normal dependencies; dev-dependencies are for tests).
fn crate_dependencies() -> BTreeMap<String, Vec<String>> {
    let mut crates = BTreeMap::new();
    for entry in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let manifest: toml::Table = toml::from_str(&text).unwrap();
        let name = manifest["package"]["name"].as_str().unwrap().to_owned();
        let deps = manifest
            .get("dependencies")
            .and_then(toml::Value::as_table)
            .map(|t| {
                t.keys()
                    .filter(|k| k.starts_with("mlops-"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        crates.insert(name, deps);
    }
    crates
}

/// The stage crates in climbing order.
const STAGES: [&str; 6] = [
    "mlops-iac",
    "mlops-ci",
    "mlops-cd",
    "mlops-release",
    "mlops-apm",
    "mlops-loadtest",
];

#[test]
fn a_stage_crate_depends_only_on_core_and_earlier_stages() {
    let crates = crate_dependencies();
    assert!(crates.contains_key("mlops-core"), "{crates:?}");
    assert_eq!(
        crates["mlops-core"],
        Vec::<String>::new(),
        "core depends on no other crate"
    );
    for (i, stage) in STAGES.iter().enumerate() {
        let Some(deps) = crates.get(*stage) else {
            continue;
        };
        for dep in deps {
            assert!(
                dep == "mlops-core" || STAGES[..i].contains(&dep.as_str()),
                "{stage} depends on {dep}: a stage crate may depend only on mlops-core and earlier stages"
            );
        }
    }
    for (name, deps) in &crates {
        if name != "mlops-cli" {
            assert!(
                !deps.iter().any(|d| d == "mlops-cli" || d == "mlops-assess"),
                "{name} depends on the binary or the assessment: {deps:?}"
            );
        }
    }
    assert_eq!(
        crates["mlops-testkit"],
        ["mlops-core"],
        "testkit serves every crate's tests, so it depends on core alone"
    );
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_cli_prints() {
    let mut offenders = Vec::new();
    let mut checked = 0;
    for (name, _) in crate_dependencies() {
        if name == "mlops-cli" || name == "mlops-testkit" {
            continue;
        }
        let dir = workspace()
            .join("crates")
            .join(name.trim_start_matches("mlops-"));
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for file in files {
            // A crate's own binaries (`src/bin/`) are programs: they may
            // print. So is the local provider's supervisor, the body of
            // `mlops infra supervise` and `mlops-supervise`, a process of
            // its own whose stderr is its log file.
            if file.components().any(|c| c.as_os_str() == "bin")
                || file.ends_with("iac/src/local/supervisor.rs")
            {
                continue;
            }
            checked += 1;
            let text = std::fs::read_to_string(&file).unwrap();
            // Unit tests at the bottom of a module may print.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                // `println!(` also finds `eprintln!(`, `print!(` `eprint!(`.
                if ["println!(", "print!(", "dbg!("]
                    .iter()
                    .any(|mac| line.contains(mac))
                {
                    offenders.push(format!("{}:{}: {line}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(checked > 50, "the walk found only {checked} files");
    assert!(
        offenders.is_empty(),
        "only cli prints; found:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn stage_kinds_reach_the_ledger_only_through_the_step_context() {
    // In-process steps are polled on the coordinator's one worker: SQLite
    // must run on the blocking pool, through `StepContext::ledger()` (or a
    // `LedgerHandle`), never through a `Ledger` a kind opens itself.
    let mut offenders = Vec::new();
    for stage in ["iac", "ci", "cd", "release", "apm", "loadtest"] {
        let mut files = Vec::new();
        rust_files(
            &workspace().join("crates").join(stage).join("src"),
            &mut files,
        );
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                if [
                    "Ledger::open(",
                    "Ledger::open_existing(",
                    "Ledger::open_snapshot(",
                ]
                .iter()
                .any(|call| line.contains(call))
                {
                    offenders.push(format!("{}:{}: {line}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "stage crates open no ledger of their own; use ctx.ledger():\n{}",
        offenders.join("\n")
    );
}
