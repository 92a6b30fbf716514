//! `mlops drift` as a user runs it: the iris data against itself, against
//! a copy with one feature scaled, too few rows, and bad files; exit codes
//! 0 (no drift), 1 (drift), 3 (insufficient data), 2 (bad input).

use std::path::{Path, PathBuf};
use std::process::Command;

fn iris() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/iris/data/iris.csv")
}

fn drift(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_mlops"))
        .arg("drift")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn drift_reports_per_feature_and_exits_by_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let iris = iris();
    let text = std::fs::read_to_string(&iris).unwrap();
    // petal_length (the third column) 1.5 times longer.
    let mut scaled = String::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            scaled.push_str(line);
        } else {
            let mut f: Vec<String> = line.split(',').map(str::to_owned).collect();
            f[2] = (f[2].parse::<f64>().unwrap() * 1.5).to_string();
            scaled.push_str(&f.join(","));
        }
        scaled.push('\n');
    }
    let shifted = dir.path().join("shifted.csv");
    std::fs::write(&shifted, scaled).unwrap();
    let i = iris.to_str().unwrap();

    let (code, out, err) = drift(&[i, i, "--min-samples", "50"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.trim_end().ends_with("no drift"), "{out}");

    let (code, out, err) = drift(&[
        i,
        shifted.to_str().unwrap(),
        "--min-samples",
        "50",
        "--json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["verdict"], "drift");
    // With no memory budget every numeric column spills to disk: the same
    // report.
    let (code, spilled, err) = drift(&[
        i,
        shifted.to_str().unwrap(),
        "--min-samples",
        "50",
        "--memory-mib",
        "0",
        "--json",
    ]);
    assert_eq!(code, 1, "{spilled}{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&spilled).unwrap(),
        report
    );
    assert_eq!(report["drifted"], serde_json::json!(["petal_length"]));
    let petal = report["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "petal_length")
        .unwrap();
    let tests: Vec<&str> = petal["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["test"].as_str().unwrap())
        .collect();
    assert_eq!(tests, ["psi", "ks", "wasserstein"]);
    let species = report["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "species")
        .unwrap();
    assert_eq!(species["kind"], "categorical");

    // Fewer rows than asked for: no verdict either way.
    let (code, out, _) = drift(&[i, i, "--min-samples", "1000"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("insufficient data"), "{out}");

    let ragged = dir.path().join("ragged.csv");
    std::fs::write(&ragged, "a,b\n1,2\n3\n").unwrap();
    let (code, _, err) = drift(&[i, ragged.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("ragged.csv:3"), "{err}");
    let (code, _, err) = drift(&[i, "/nonexistent/data.csv"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/data.csv"), "{err}");
    let (code, _, err) = drift(&[i, i, "--psi", "-1"]);
    assert_eq!(code, 2, "{err}");
}
