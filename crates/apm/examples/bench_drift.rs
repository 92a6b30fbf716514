//! A benchmark, not a test: the drift tests of `mlops drift` (KS,
//! Wasserstein-1 and PSI on every numeric feature) against scipy's on the
//! same files, side by side in one run.
//!
//! ```sh
//! python3 -m venv /tmp/scipyenv && /tmp/scipyenv/bin/pip install scipy numpy
//! cargo run --release -p mlops-apm --example bench_drift -- --rows 1000000 --features 20 --rounds 3 --python /tmp/scipyenv/bin/python
//! ```
//!
//! It writes a reference and a current CSV (normal features, the current
//! one shifted and scaled) into a temporary directory, then alternates, per
//! round: ours (reading both files, and the tests alone) and scipy's
//! (`bench_drift_scipy.py`: numpy's loadtxt, and the tests alone:
//! `ks_2samp`, `wasserstein_distance`, and PSI over numpy's quantile bins).
//! It prints the medians and the ratios.
//!
//! `--memory-mib N` reads within a memory budget of N MiB (numeric
//! columns past it spill to temporary files); `--no-scipy` runs ours
//! alone. The process's peak resident memory is printed at the end:
//!
//! ```sh
//! cargo run --release -p mlops-apm --example bench_drift -- --rounds 1 --no-scipy
//! cargo run --release -p mlops-apm --example bench_drift -- --rounds 1 --no-scipy --memory-mib 32
//! ```

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use mlops_apm::drift::{Dataset, ReadOptions, Thresholds, compare};

/// SplitMix64, then Box-Muller: deterministic normals.
struct Normals(u64);

impl Normals {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn write_csv(path: &Path, rows: usize, features: usize, shift: f64, scale: f64, seed: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let header: Vec<String> = (0..features).map(|f| format!("f{f}")).collect();
    writeln!(out, "{}", header.join(",")).unwrap();
    let mut g = Normals(seed);
    let mut line = String::new();
    for _ in 0..rows {
        line.clear();
        for f in 0..features {
            if f > 0 {
                line.push(',');
            }
            let x = g.normal() * scale + shift + f as f64;
            line.push_str(&format!("{x:.6}"));
        }
        writeln!(out, "{line}").unwrap();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn main() {
    let rows: usize = arg("--rows", "1000000").parse().expect("--rows N");
    let features: usize = arg("--features", "20").parse().expect("--features N");
    let rounds: usize = arg("--rounds", "3").parse().expect("--rounds N");
    let python = arg("--python", "python3");
    let scipy = !std::env::args().any(|a| a == "--no-scipy");
    let options = match std::env::args().position(|a| a == "--memory-mib") {
        Some(_) => ReadOptions {
            memory: arg("--memory-mib", "1024")
                .parse::<u64>()
                .expect("--memory-mib N")
                << 20,
        },
        None => ReadOptions::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let (r, c) = (
        dir.path().join("reference.csv"),
        dir.path().join("current.csv"),
    );
    eprintln!(
        "writing {rows} rows x {features} features twice into {}",
        dir.path().display()
    );
    write_csv(&r, rows, features, 0.0, 1.0, 1);
    write_csv(&c, rows, features, 0.05, 1.1, 2);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bench_drift_scipy.py");
    let t = Thresholds::default();
    let (mut ours_all, mut ours_tests, mut py_all, mut py_tests) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let start = Instant::now();
        let (rd, cd) = (
            Dataset::read_with(&r, options).unwrap(),
            Dataset::read_with(&c, options).unwrap(),
        );
        let read = start.elapsed().as_secs_f64();
        let tests = Instant::now();
        let report = compare(&rd, &cd, &t);
        let tests = tests.elapsed().as_secs_f64();
        assert_eq!(report.features.len(), features);
        ours_all.push(read + tests);
        ours_tests.push(tests);
        drop((rd, cd));
        if !scipy {
            eprintln!(
                "round {round}: ours {:.2} s ({read:.2} reading, {tests:.2} testing)",
                read + tests
            );
            continue;
        }
        let out = Command::new(&python)
            .arg(&script)
            .arg(&r)
            .arg(&c)
            .output()
            .expect("run python with scipy (see the module docs)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let times: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (pl, pt) = (
            times["load_s"].as_f64().unwrap(),
            times["tests_s"].as_f64().unwrap(),
        );
        py_all.push(pl + pt);
        py_tests.push(pt);
        // Both agree on the first feature's statistics.
        let f0 = &report.features[0];
        let ks = f0.tests.iter().find(|x| x.test == "ks").unwrap().value;
        let py_ks = times["f0_ks"].as_f64().unwrap();
        assert!((ks - py_ks).abs() < 1e-9, "KS {ks} vs scipy {py_ks}");
        eprintln!(
            "round {round}: ours {:.2} s ({read:.2} reading, {tests:.2} testing), scipy {:.2} s ({pl:.2} loading, {pt:.2} testing)",
            read + tests,
            pl + pt
        );
    }
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "?".to_owned());
    println!(
        "budget {} MiB: peak resident memory {peak}",
        options.memory >> 20
    );
    if !scipy {
        println!(
            "ours: {:.2} s in all, {:.2} s testing (medians)",
            median(ours_all),
            median(ours_tests)
        );
        return;
    }
    let (oa, ot, pa, pt) = (
        median(ours_all),
        median(ours_tests),
        median(py_all),
        median(py_tests),
    );
    println!("| | mlops (median s) | scipy (median s) | scipy / mlops |");
    println!("|---|---|---|---|");
    println!(
        "| tests only (KS + Wasserstein + PSI, {features} features) | {ot:.2} | {pt:.2} | {:.1}x |",
        pt / ot
    );
    println!(
        "| reading both files and testing | {oa:.2} | {pa:.2} | {:.1}x |",
        pa / oa
    );
}
