//! The autoscaling policies against the reference scenarios taken from
//! Kubernetes' and Knative's test suites (`shared/reference/autoscale/`,
//! beside the repository): every scenario's `expect` must hold.

use std::path::PathBuf;

use mlops_loadtest::autoscale::scenario;

fn reference_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/autoscale");
    assert!(
        dir.is_dir(),
        "the autoscale reference scenarios (shared/reference/autoscale, next to the repository) are missing at {}",
        dir.display()
    );
    dir
}

#[test]
fn every_reference_scenario_decides_as_upstream() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(reference_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{files:?}");
    let mut failures = Vec::new();
    let (mut hpa, mut kpa) = (0, 0);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let s = scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if s.skip.is_some() {
            continue;
        }
        match s.case {
            scenario::Case::Hpa(..) => hpa += 1,
            scenario::Case::Kpa(..) => kpa += 1,
        }
        let got = scenario::simulate(&s.case);
        let expect = s
            .expect
            .expect("every reference scenario expects something");
        for miss in scenario::check(&expect, &got) {
            failures.push(format!("{}: {miss} ({got})", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(hpa >= 15 && kpa >= 4, "{hpa} hpa and {kpa} kpa scenarios");
}

#[test]
fn a_misspelt_key_or_a_bad_value_is_refused_by_name() {
    let base = r#"{"policy": "hpa", "current_replicas": 3, "min_replicas": 1, "max_replicas": 10, "recommendation": 5"#;
    let e = scenario::parse(&format!(r#"{base}, "behaviour": {{}}}}"#)).unwrap_err();
    assert!(e.to_string().contains("behaviour"), "{e}");
    let e = scenario::parse(&format!(
        r#"{base}, "behavior": {{"scale_up": {{"select_policy": "most"}}}}}}"#
    ))
    .unwrap_err();
    assert!(e.to_string().contains("most"), "{e}");
    let e = scenario::parse(r#"{"policy": "vpa"}"#).unwrap_err();
    assert!(e.to_string().contains("vpa"), "{e}");
    assert!(scenario::parse("not json").is_err());
    let e = scenario::parse(
        r#"{"policy": "kpa", "target": 0, "panic_threshold": 2, "max_scale_up_rate": 10, "max_scale_down_rate": 2, "stable_window_s": 60, "observations": []}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("target"), "{e}");
}
