//! Benchmark: `mlops assess` on a generated repository of 10,000 files and
//! 1,000 commits, side by side with the floor any such tool has: `git log
//! -p` piped through `grep` (every added line of the history) plus `grep -r`
//! over the tree (every file), which is what reading the evidence costs with
//! the standard tools.
//!
//! ```sh
//! cargo build --release -p mlops-assess --example bench_assess
//! target/release/examples/bench_assess --files 10000 --commits 1000 --runs 5
//! ```
//!
//! The tools run alternately; the output gives each run and the medians.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use git2::{Repository, Signature, Time};

const SECRET: &str = r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----";

fn main() {
    let mut files = 10_000usize;
    let mut commits = 1_000usize;
    let mut runs = 5usize;
    let mut keep: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--files" => files = value().parse().expect("--files N"),
            "--commits" => commits = value().parse().expect("--commits N"),
            "--runs" => runs = value().parse().expect("--runs N"),
            "--dir" => keep = Some(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(commits > 0 && files >= commits, "need files >= commits > 0");

    let tmp = tempfile::tempdir().expect("a temporary directory");
    let root = keep.map_or_else(|| tmp.path().join("repo"), Into::into);
    let started = Instant::now();
    generate(&root, files, commits);
    println!(
        "generated {} files in {} commits at {} in {:.1?}",
        files,
        commits,
        root.display(),
        started.elapsed()
    );

    let mut full = Vec::new();
    let mut tree_only = Vec::new();
    let mut static_scan = Vec::new();
    let mut anchor = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let report =
            mlops_assess::assess(&root, &mlops_assess::Options::default()).expect("the assessment");
        full.push(t.elapsed());
        let t = Instant::now();
        let no_history = mlops_assess::Options {
            history: false,
            ..mlops_assess::Options::default()
        };
        mlops_assess::assess(&root, &no_history).expect("the assessment");
        tree_only.push(t.elapsed());
        let t = Instant::now();
        mlops_assess::scan::scan(&root).expect("the static scan");
        static_scan.push(t.elapsed());
        let t = Instant::now();
        run_anchor(&root);
        anchor.push(t.elapsed());
        println!(
            "run {}: assess {:.2?} (no history {:.2?}, static scan {:.2?}), anchor {:.2?}; {} files \
             read, {} commits scanned, {} evidence, level {}",
            i + 1,
            full[i],
            tree_only[i],
            static_scan[i],
            anchor[i],
            report.repository.files,
            report.secret_scan.commits,
            report.evidence.len(),
            report.stage_level
        );
    }
    let (f, n, a) = (
        median(&mut full),
        median(&mut tree_only),
        median(&mut anchor),
    );
    let st = median(&mut static_scan);
    println!();
    println!("| | median of {runs} | vs anchor |");
    println!("|---|--:|--:|");
    println!(
        "| `mlops assess` (tree + {commits}-commit history) | {f:.2?} | {:.2}x |",
        ratio(f, a)
    );
    println!(
        "| `mlops assess --no-history` | {n:.2?} | {:.2}x |",
        ratio(n, a)
    );
    println!(
        "| static scan only (`mlops_assess::scan::scan`) | {st:.2?} | {:.2}x |",
        ratio(st, a)
    );
    println!("| anchor: `git log -p \\| grep` + `grep -r` | {a:.2?} | 1.00x |");
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ratio(x: Duration, anchor: Duration) -> f64 {
    x.as_secs_f64() / anchor.as_secs_f64()
}

fn run_anchor(root: &Path) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git log -p --no-color | grep -cE '{SECRET}' >/dev/null; \
             grep -rIcE '{SECRET}' --exclude-dir=.git . >/dev/null; true"
        ))
        .current_dir(root)
        .status()
        .expect("sh runs");
    assert!(status.success());
}

/// A repository that looks like a data-science project grown over time:
/// each commit adds `files / commits` files (Python modules and tests,
/// YAML, Markdown, JSON, notebooks) and edits two earlier ones.
fn generate(root: &Path, files: usize, commits: usize) {
    std::fs::create_dir_all(root).expect("the repository directory");
    let repo = Repository::init(root).expect("git init");
    let per_commit = files / commits;
    let mut written: Vec<String> = Vec::new();
    let mut parent: Option<git2::Oid> = None;
    let mut n = 0usize;
    for c in 0..commits {
        let mut index = repo.index().expect("the index");
        let mut batch = Vec::new();
        if c == 0 {
            for (path, text) in fixed_files() {
                batch.push((path.to_owned(), text.to_owned()));
            }
        }
        for _ in 0..per_commit {
            let (path, text) = generated_file(n);
            n += 1;
            batch.push((path, text));
        }
        for k in 0..2 {
            if let Some(p) = written.get((c * 7 + k * 13) % written.len().max(1)) {
                let mut text = std::fs::read_to_string(root.join(p)).unwrap_or_default();
                text.push_str(&format!("# edited in commit {c}\nvalue_{c} = {}\n", c * k));
                batch.push((p.clone(), text));
            }
        }
        for (path, text) in batch {
            let full = root.join(&path);
            std::fs::create_dir_all(full.parent().expect("a parent")).expect("a directory");
            std::fs::write(&full, text).expect("a file");
            index.add_path(Path::new(&path)).expect("git add");
            if !written.contains(&path) {
                written.push(path);
            }
        }
        index.write().expect("the index");
        let tree = repo
            .find_tree(index.write_tree().expect("a tree"))
            .expect("the tree");
        let when = Signature::new(
            "bench",
            "bench@example.invalid",
            &Time::new(1_700_000_000 + c as i64 * 3600, 0),
        )
        .expect("a signature");
        let parents: Vec<git2::Commit<'_>> = parent
            .map(|p| repo.find_commit(p).expect("the parent"))
            .into_iter()
            .collect();
        let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let id = repo
            .commit(
                Some("HEAD"),
                &when,
                &when,
                &format!("commit {c}"),
                &tree,
                &refs,
            )
            .expect("a commit");
        parent = Some(id);
    }
}

fn fixed_files() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "requirements.txt",
            "numpy==2.1.3 --hash=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
        ),
        ("Dockerfile", "FROM python:3.11-slim\nCOPY . /app\n"),
        (
            ".github/workflows/ci.yml",
            "on: [push, pull_request]\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - run: python -m pytest -q\n      - run: python -m project.train\n",
        ),
    ]
}

fn generated_file(n: usize) -> (String, String) {
    let pkg = format!("pkg{:03}", n / 100);
    match n % 10 {
        0..=3 => (format!("project/{pkg}/module_{n}.py"), python_module(n)),
        4 | 5 => (format!("tests/{pkg}/test_module_{n}.py"), python_test(n)),
        6 => (format!("config/{pkg}/settings_{n}.yaml"), yaml(n)),
        7 => (format!("docs/{pkg}/page_{n}.md"), markdown(n)),
        8 => (format!("data/{pkg}/sample_{n}.json"), json(n)),
        _ => (format!("notebooks/{pkg}/explore_{n}.ipynb"), notebook(n)),
    }
}

fn python_module(n: usize) -> String {
    let mut s =
        String::from("import numpy as np\nfrom sklearn.linear_model import LogisticRegression\n\n");
    for f in 0..12 {
        s.push_str(&format!(
            "def feature_{n}_{f}(frame):\n    \"\"\"Feature {f} of module {n}.\"\"\"\n    values = frame['column_{f}'].to_numpy()\n    return np.log1p(values) * {f}.5 + {n}\n\n"
        ));
    }
    if n.is_multiple_of(40) {
        s.push_str("def train(X, y):\n    return LogisticRegression(random_state=0).fit(X, y)\n");
    }
    s
}

fn python_test(n: usize) -> String {
    let mut s = format!("import numpy as np\nfrom project import module_{n}\n\n");
    for t in 0..8 {
        s.push_str(&format!(
            "def test_feature_{n}_{t}():\n    out = module_{n}.feature_{n}_{t}(frame())\n    assert np.isfinite(out).all()\n\n"
        ));
    }
    s
}

fn yaml(n: usize) -> String {
    let mut s = format!("name: settings-{n}\nparameters:\n");
    for k in 0..30 {
        s.push_str(&format!("  key_{k}: {}\n", n * k));
    }
    s
}

fn markdown(n: usize) -> String {
    let mut s = format!("# Page {n}\n\n");
    for p in 0..10 {
        s.push_str(&format!(
            "Paragraph {p} explains how feature {n} is computed from the raw columns and why.\n\n"
        ));
    }
    s
}

fn json(n: usize) -> String {
    let rows: Vec<String> = (0..40)
        .map(|r| {
            format!(
                "{{\"id\": {r}, \"value\": {}.25, \"label\": \"class-{}\"}}",
                r * n,
                r % 3
            )
        })
        .collect();
    format!("[{}]\n", rows.join(",\n"))
}

fn notebook(n: usize) -> String {
    format!(
        "{{\"cells\": [{{\"cell_type\": \"code\", \"source\": [\"import pandas as pd\\n\", \"frame = pd.read_csv('data_{n}.csv')\\n\"]}}], \"metadata\": {{}}, \"nbformat\": 4, \"nbformat_minor\": 5}}\n"
    )
}
