//! Executor benchmark: mlops against ninja on the same DAGs of no-op shell
//! steps, and the per-step overhead of in-process steps.
//!
//! ```text
//! cargo build --release -p mlops-cli --bin mlops --example bench_dag
//! target/release/examples/bench_dag --steps 10000 --runs 5 --jobs 2
//! ```
//!
//! `--only shell` or `--only in-process` runs one half; `--shape NAME`
//! (`fan-out`, `chain`, `layered`) one shape. `--compare PATH` runs a second
//! `mlops` binary alternately with the other two, on its own copy of each
//! DAG, and adds its column: before/after numbers for shell steps from one
//! invocation.
//!
//! `--dir DIR` puts the scratch projects in DIR and leaves them there. By
//! default they go to the system's temporary directory and are removed at
//! exit, which on ext4 without a journal makes file creation near them
//! slower for the next few minutes (another invocation pays for it).
//!
//! Before the shell table, the benchmark times creating 1,000 empty files
//! in its scratch directory: on ext4 without a journal that cost swings
//! with how many files were deleted nearby in the last minutes (see
//! docs/benchmarks.md), and it is what a step that prints pays for its log
//! file (ninja writes none; mlops makes none for a step that prints
//! nothing, like the `true` steps here, and a build before that did), so
//! the line says what the file system charged during this run.
//!
//! Each shape is written once as `mlops.toml` and as `build.ninja` (same
//! nodes, same edges, `true` as every command, run through `/bin/sh -c` by
//! both), then the two tools run alternately `--runs` times from a clean
//! state; the report gives medians and the ratio. Results belong in
//! docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mlops_core::{Executor, Pipeline, RunOptions, RunStatus, Stage, Step, StepFailure};

struct Args {
    steps: usize,
    runs: usize,
    jobs: usize,
    mlops: PathBuf,
    ninja: String,
    only: Option<String>,
    shape: Option<String>,
    compare: Option<PathBuf>,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let default_mlops = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("mlops"))
        .unwrap_or_else(|| PathBuf::from("mlops"));
    let mut args = Args {
        steps: 10_000,
        runs: 5,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mlops: default_mlops,
        ninja: "ninja".to_owned(),
        only: None,
        shape: None,
        compare: None,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--steps" => args.steps = value()?.parse().map_err(|e| format!("--steps: {e}"))?,
            "--runs" => args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--jobs" => args.jobs = value()?.parse().map_err(|e| format!("--jobs: {e}"))?,
            "--mlops" => args.mlops = PathBuf::from(value()?),
            "--ninja" => args.ninja = value()?,
            "--only" => args.only = Some(value()?),
            "--shape" => args.shape = Some(value()?),
            "--compare" => args.compare = Some(PathBuf::from(value()?)),
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}; see the module docs")),
        }
    }
    if args.steps < 2 || args.runs == 0 || args.jobs == 0 {
        return Err("--steps must be at least 2, --runs and --jobs at least 1".to_owned());
    }
    if let Some(only) = args
        .only
        .as_deref()
        .filter(|o| !["shell", "in-process"].contains(o))
    {
        return Err(format!("--only {only}: expected `shell` or `in-process`"));
    }
    if let Some(shape) = args
        .shape
        .as_deref()
        .filter(|s| !["fan-out", "chain", "layered"].contains(s))
    {
        return Err(format!(
            "--shape {shape}: expected `fan-out`, `chain` or `layered`"
        ));
    }
    Ok(args)
}

/// A DAG as dependency lists: `deps[i]` are the nodes `i` waits for (all < i).
type Dag = Vec<Vec<usize>>;

fn fan_out(n: usize) -> Dag {
    (0..n)
        .map(|i| if i == 0 { vec![] } else { vec![0] })
        .collect()
}

fn chain(n: usize) -> Dag {
    (0..n)
        .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
        .collect()
}

/// 100 layers (or fewer); each node depends on 1–3 nodes of the layer
/// before, chosen by a fixed-seed generator.
fn layered(n: usize) -> Dag {
    let layers = 100.min(n);
    let width = n.div_ceil(layers);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|i| {
            let layer = i / width;
            if layer == 0 {
                return vec![];
            }
            let start = (layer - 1) * width;
            let count = 1 + (next() % 3) as usize;
            let mut deps: Vec<usize> = (0..count)
                .map(|_| start + (next() as usize % width))
                .collect();
            deps.sort_unstable();
            deps.dedup();
            deps
        })
        .collect()
}

fn write_projects(dir: &Path, dag: &Dag) -> std::io::Result<()> {
    let mut toml = String::from("[project]\nname = \"bench\"\n\n");
    let mut ninja = String::from("rule noop\n  command = true\n\n");
    for (i, deps) in dag.iter().enumerate() {
        let _ = write!(toml, "[iac.steps.s{i}]\nrun = \"true\"\n");
        if !deps.is_empty() {
            let list: Vec<String> = deps.iter().map(|d| format!("\"s{d}\"")).collect();
            let _ = writeln!(toml, "depends-on = [{}]", list.join(", "));
        }
        toml.push('\n');
        let order: Vec<String> = deps.iter().map(|d| format!("s{d}")).collect();
        if order.is_empty() {
            let _ = writeln!(ninja, "build s{i}: noop");
        } else {
            let _ = writeln!(ninja, "build s{i}: noop || {}", order.join(" "));
        }
    }
    std::fs::write(dir.join("mlops.toml"), toml)?;
    std::fs::write(dir.join("build.ninja"), ninja)
}

/// A scratch directory: in the system's temporary directory, removed at
/// exit; or, with `--dir DIR`, in DIR and left there.
fn scratch(args: &Args) -> Result<tempfile::TempDir, String> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("bench-dag-");
    let dir = match &args.dir {
        Some(parent) => builder.disable_cleanup(true).tempdir_in(parent),
        None => builder.tempdir(),
    };
    dir.map_err(|e| format!("cannot create a scratch directory: {e}"))
}

fn time(mut cmd: Command) -> Result<Duration, String> {
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(format!("{cmd:?} failed: {status}"));
    }
    Ok(elapsed)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn shell_shape(
    args: &Args,
    name: &str,
    dag: &Dag,
    keep: &mut Vec<tempfile::TempDir>,
) -> Result<(), String> {
    let dir = scratch(args)?;
    write_projects(dir.path(), dag).map_err(|e| e.to_string())?;
    // The other binary gets its own copy: its ledger may have another
    // schema, and each tool should find only its own runs.
    let compare_dir = match &args.compare {
        Some(_) => {
            let d = scratch(args)?;
            write_projects(d.path(), dag).map_err(|e| e.to_string())?;
            Some(d)
        }
        None => None,
    };
    let mlops_run = |binary: &Path, dir: &Path| {
        // The ledger and logs stay, as in real use: deleting tens of
        // thousands of files right before a run makes ext4's inode
        // allocation scan them (`recently_deleted`), a cost no user pays.
        let mut mlops = Command::new(binary);
        mlops
            .args(["pipeline", "run", "--jobs", &args.jobs.to_string()])
            .arg(dir);
        time(mlops)
    };
    let (mut ninja_times, mut mlops_times, mut compare_times) =
        (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        let _ = std::fs::remove_file(dir.path().join(".ninja_log"));
        let mut ninja = Command::new(&args.ninja);
        ninja
            .arg("-C")
            .arg(dir.path())
            .arg("-j")
            .arg(args.jobs.to_string());
        ninja_times.push(time(ninja)?);
        match (&args.compare, &compare_dir) {
            (Some(other), Some(other_dir)) => {
                // Alternate which mlops goes first after ninja.
                if run % 2 == 0 {
                    mlops_times.push(mlops_run(&args.mlops, dir.path())?);
                    compare_times.push(mlops_run(other, other_dir.path())?);
                } else {
                    compare_times.push(mlops_run(other, other_dir.path())?);
                    mlops_times.push(mlops_run(&args.mlops, dir.path())?);
                }
            }
            _ => mlops_times.push(mlops_run(&args.mlops, dir.path())?),
        }
    }
    let n = median(ninja_times).as_secs_f64();
    let m = median(mlops_times).as_secs_f64();
    let mut row = format!(
        "| {name:<8} | {:>6} | {n:>9.2} | {m:>9.2} | {:>5.2}x |",
        dag.len(),
        m / n
    );
    if !compare_times.is_empty() {
        let c = median(compare_times).as_secs_f64();
        let _ = write!(row, " {c:>11.2} | {:>5.2}x |", c / n);
    }
    println!("{row}");
    keep.push(dir);
    keep.extend(compare_dir);
    Ok(())
}

/// Microseconds to create (and close) one empty file in a new directory
/// under `parent`, over 1,000 files; the files stay until the end.
fn file_creation_cost(parent: &Path) -> Result<f64, String> {
    let dir = parent.join("file-creation");
    std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
    let start = Instant::now();
    for i in 0..1000 {
        std::fs::File::create(dir.join(format!("f{i}.log"))).map_err(|e| e.to_string())?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / 1000.0)
}

fn in_process(
    args: &Args,
    name: &str,
    dag: &Dag,
    runtime: &tokio::runtime::Runtime,
    keep: &mut Vec<tempfile::TempDir>,
) -> Result<(), String> {
    let steps: Vec<Step> = dag
        .iter()
        .enumerate()
        .map(|(i, deps)| {
            Step::task(format!("s{i}"), Stage::Iac, "noop", |_ctx| async {
                Ok::<(), StepFailure>(())
            })
            .depends_on(deps.iter().map(|d| format!("s{d}")))
        })
        .collect();
    let pipeline = Pipeline::new("bench", steps, None).map_err(|e| format!("{e:?}"))?;
    let mut times = Vec::new();
    for _ in 0..args.runs {
        let dir = scratch(args)?;
        let executor = Executor::new(dir.path()).map_err(|e| e.to_string())?;
        let opts = RunOptions {
            jobs: args.jobs,
            ..RunOptions::default()
        };
        let start = Instant::now();
        let report = runtime
            .block_on(executor.run(&pipeline, opts))
            .map_err(|e| e.to_string())?;
        times.push(start.elapsed());
        if report.status != RunStatus::Passed {
            return Err(format!("in-process run {name} did not pass"));
        }
        keep.push(dir);
    }
    let m = median(times);
    println!(
        "| {name:<8} | {:>6} | {:>9.3} | {:>8.2} |",
        dag.len(),
        m.as_secs_f64(),
        m.as_secs_f64() * 1e6 / dag.len() as f64
    );
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let shapes: Vec<(&str, Dag)> = [
        ("fan-out", fan_out as fn(usize) -> Dag),
        ("chain", chain),
        ("layered", layered),
    ]
    .into_iter()
    .filter(|(name, _)| args.shape.as_deref().is_none_or(|s| s == *name))
    .map(|(name, make)| (name, make(args.steps)))
    .collect();
    // Scratch directories are removed only at exit, for the same reason the
    // ledger is kept between runs.
    let mut keep = Vec::new();
    let want = |part: &str| args.only.as_deref().is_none_or(|o| o == part);
    if want("shell") {
        println!(
            "shell steps (`true`), --jobs {}, median of {} runs, ledger kept between runs\n",
            args.jobs, args.runs
        );
        let scratch = scratch(&args).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1);
        });
        match file_creation_cost(scratch.path()) {
            Ok(us) => {
                println!("creating an empty file here costs {us:.1} µs (ext4 inode allocation)\n")
            }
            Err(e) => eprintln!("warning: cannot time file creation: {e}"),
        }
        keep.push(scratch);
        if args.compare.is_some() {
            println!(
                "| shape    |  steps | ninja (s) | mlops (s) | ratio  | compare (s) | ratio  |"
            );
            println!(
                "|----------|-------:|----------:|----------:|-------:|------------:|-------:|"
            );
        } else {
            println!("| shape    |  steps | ninja (s) | mlops (s) | ratio  |");
            println!("|----------|-------:|----------:|----------:|-------:|");
        }
        for (name, dag) in &shapes {
            if let Err(e) = shell_shape(&args, name, dag, &mut keep) {
                eprintln!("error: {name}: {e}");
                std::process::exit(1);
            }
        }
    }
    if !want("in-process") {
        return;
    }
    println!(
        "\nin-process no-op steps, --jobs {}, median of {} runs\n",
        args.jobs, args.runs
    );
    println!("| shape    |  steps | total (s) | µs/step  |");
    println!("|----------|-------:|----------:|---------:|");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for (name, dag) in &shapes {
        if let Err(e) = in_process(&args, name, dag, &runtime, &mut keep) {
            eprintln!("error: {name}: {e}");
            std::process::exit(1);
        }
    }
}
