//! The drift statistics of `mlops_release::stats` against scipy: every
//! case of `tests/data/drift_cases.json` (from
//! `tests/data/gen_drift_cases.py`), to 1e-9 relative (1e-12 absolute
//! near zero), and the inputs scipy refuses refused here too.

use mlops_release::stats::{chi_square_homogeneity, jensen_shannon, wasserstein};
use serde_json::Value;

fn cases() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/drift_cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[track_caller]
fn close(what: &str, got: f64, want: f64) {
    let ok = if want.abs() < 1e-12 {
        got.abs() < 1e-12
    } else {
        ((got - want) / want).abs() <= 1e-9
    };
    assert!(ok, "{what}: got {got}, scipy {want}");
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn counts(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn wasserstein_matches_scipy() {
    let cases = cases();
    let list = cases["wasserstein"].as_array().unwrap();
    assert!(list.len() >= 12);
    for c in list {
        let got = wasserstein(&floats(&c["a"]), &floats(&c["b"])).unwrap();
        close(
            c["id"].as_str().unwrap(),
            got,
            c["distance"].as_f64().unwrap(),
        );
    }
}

#[test]
fn chi_square_homogeneity_matches_scipy() {
    let cases = cases();
    let list = cases["chi_square_homogeneity"].as_array().unwrap();
    assert!(list.len() >= 10);
    for c in list {
        let id = c["id"].as_str().unwrap();
        let got = chi_square_homogeneity(&counts(&c["a"]), &counts(&c["b"]));
        if c["error"] == true {
            assert!(got.is_err(), "{id}: scipy refuses it, got {got:?}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{id}: {e}"));
        close(
            &format!("{id} statistic"),
            got.statistic,
            c["statistic"].as_f64().unwrap(),
        );
        close(
            &format!("{id} p-value"),
            got.p_value,
            c["pvalue"].as_f64().unwrap(),
        );
    }
}

#[test]
fn jensen_shannon_matches_scipy() {
    let cases = cases();
    for c in cases["jensen_shannon"].as_array().unwrap() {
        let got = jensen_shannon(&floats(&c["p"]), &floats(&c["q"])).unwrap();
        close(
            c["id"].as_str().unwrap(),
            got,
            c["distance"].as_f64().unwrap(),
        );
    }
}
