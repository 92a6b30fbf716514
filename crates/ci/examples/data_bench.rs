//! Benchmark: streaming `data-validation` of a large CSV, side by side with
//! `wc -l` reading the same file (the floor for "read every byte once").
//!
//! ```sh
//! cargo run --release -p mlops-ci --example data_bench -- [SIZE_MB] [RUNS]
//! ```
//!
//! Generates a CSV of about SIZE_MB (default 1024) in a temporary directory,
//! then, RUNS times (default 3), times `wc -l` and `validate_file` with a
//! schema that checks every column. Prints medians, the ratio, the rows per
//! second and the peak resident memory of this process.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use mlops_ci::data::{Schema, ValidateOptions, validate_file};

const SCHEMA: &str = r#"
format = "csv"
rows = { min = 1 }

[columns.id]
type = "integer"
min = 0

[columns.group]
type = "string"
allowed = ["alpha", "beta", "gamma", "delta"]

[columns.score]
type = "float"
min = -1000.0
max = 1000.0

[columns.flag]
type = "boolean"

[columns.label]
type = "string"
pattern = "^[a-z]+-[0-9]+$"
max-length = 32
"#;

fn generate(path: &Path, bytes: u64) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let header = b"id,group,score,flag,label\n";
    out.write_all(header)?;
    let mut written = header.len() as u64;
    let groups = ["alpha", "beta", "gamma", "delta"];
    let mut row = 0u64;
    // A small deterministic generator: no dependency for random numbers.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while written < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let line = format!(
            "{row},{},{:.4},{},item-{}\n",
            groups[(x % 4) as usize],
            (x % 2_000_000) as f64 / 1000.0 - 1000.0,
            if x & 1 == 0 { "true" } else { "false" },
            x % 100_000
        );
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        row += 1;
    }
    out.flush()?;
    Ok(row)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let size_mb: u64 = args.next().map_or(Ok(1024), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("large.csv");
    let rows = generate(&path, size_mb << 20)?;
    let size = std::fs::metadata(&path)?.len();
    let rss_before = peak_rss_kib().unwrap_or(0);
    let schema = Schema::parse(SCHEMA).map_err(|d| format!("{d:?}"))?;

    let (mut anchor, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let out = std::process::Command::new("wc")
            .arg("-l")
            .arg(&path)
            .output()?;
        anchor.push(t.elapsed());
        assert!(out.status.success(), "wc -l failed");

        let t = Instant::now();
        let report = validate_file(&path, &schema, &ValidateOptions::default())?;
        ours.push(t.elapsed());
        assert!(report.passed, "the generated file must pass: {report}");
        assert_eq!(report.rows, rows);
    }
    let (a, o) = (median(anchor), median(ours));
    let rss_after = peak_rss_kib().unwrap_or(0);
    println!(
        "file: {:.0} MiB, {rows} rows, {runs} runs (medians)",
        size as f64 / 1048576.0
    );
    println!("wc -l            {:>8.2?}", a);
    println!(
        "validate_file    {:>8.2?}  ({:.1}x wc -l, {:.1} M rows/s, {:.0} MiB/s)",
        o,
        o.as_secs_f64() / a.as_secs_f64(),
        rows as f64 / o.as_secs_f64() / 1e6,
        size as f64 / 1048576.0 / o.as_secs_f64()
    );
    println!(
        "peak RSS         {} KiB (before validating: {} KiB)",
        rss_after, rss_before
    );
    Ok(())
}
