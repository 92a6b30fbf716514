//! `mlops_release::stats` against scipy: every case of the shared reference file
//! (`shared/reference/stats_scipy.json`) and of our own generated file
//! (`tests/data/scipy_cases.json`, from `tests/data/gen_scipy_cases.py`), plus
//! the inputs each function must refuse.
//!
//! Every comparison goes through [`Report::check`]: relative error at most
//! 1e-6 (statistics within 1e-12 of zero are compared absolutely, where a
//! relative error is rounding noise). Run with `--no-capture` to see the largest
//! relative error per function.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mlops_release::stats::{
    StatsError, TestOutcome, chi_square_2x2, fisher_exact_2x2, ks_two_sample, mann_whitney_u, psi,
    welch_t_test,
};
use serde_json::Value;

const RELATIVE_TOLERANCE: f64 = 1e-6;
const STATISTIC_ABSOLUTE_FLOOR: f64 = 1e-12;

/// What scipy says a call should give.
enum Expect {
    /// A statistic and p-value (`None` statistic: +∞).
    Outcome {
        statistic: Option<f64>,
        p_value: f64,
    },
    /// A PSI value.
    Score(f64),
    /// Only a p-value (the reference gives no statistic).
    PValue(f64),
    /// An error whose message contains this text.
    Error(String),
}

/// Largest relative error per function, and every failure.
#[derive(Default)]
struct Report {
    max_relative_error: BTreeMap<String, f64>,
    cases: usize,
    failures: Vec<String>,
}

impl Report {
    /// The one comparison helper: `got` against `want` for case `id` of `function`.
    fn check(&mut self, function: &str, id: &str, got: Result<Got, StatsError>, want: Expect) {
        self.cases += 1;
        let label = format!("{function} [{id}]");
        match (got, want) {
            (Ok(Got::Outcome(got)), Expect::Outcome { statistic, p_value }) => {
                match statistic {
                    Some(s) => self.close(function, &label, "statistic", got.statistic, s, true),
                    None if got.statistic == f64::INFINITY => {}
                    None => self.failures.push(format!(
                        "{label}: statistic {} where scipy has +inf",
                        got.statistic
                    )),
                }
                self.close(function, &label, "p-value", got.p_value, p_value, false);
            }
            (Ok(Got::Outcome(got)), Expect::PValue(want)) => {
                self.close(function, &label, "p-value", got.p_value, want, false)
            }
            (Ok(Got::Score(got)), Expect::Score(want)) => {
                self.close(function, &label, "value", got, want, true)
            }
            (Err(error), Expect::Error(text)) => {
                let message = error.to_string();
                if !message.contains(&text) || message != message.to_lowercase() {
                    self.failures.push(format!(
                        "{label}: error {message:?} should be lowercase and mention {text:?}"
                    ));
                }
            }
            (Err(error), _) => self
                .failures
                .push(format!("{label}: unexpected error: {error}")),
            (Ok(got), Expect::Error(text)) => self
                .failures
                .push(format!("{label}: got {got:?}, expected an error ({text})")),
            (Ok(got), _) => self
                .failures
                .push(format!("{label}: got {got:?}, wrong kind")),
        }
    }

    fn close(&mut self, function: &str, label: &str, what: &str, got: f64, want: f64, stat: bool) {
        let error = (got - want).abs();
        let relative = if want == 0.0 {
            error
        } else {
            error / want.abs()
        };
        let ok = got.is_finite()
            && (relative <= RELATIVE_TOLERANCE || (stat && error <= STATISTIC_ABSOLUTE_FLOOR));
        if !ok {
            self.failures.push(format!(
                "{label}: {what} {got:e}, scipy {want:e} (relative error {relative:e})"
            ));
        }
        let key = format!("{function} {what}");
        let max = self.max_relative_error.entry(key).or_insert(0.0);
        if !(stat && error <= STATISTIC_ABSOLUTE_FLOOR) {
            *max = max.max(relative);
        }
    }

    fn finish(self, source: &str) {
        println!("{source}: {} checks", self.cases);
        for (key, max) in &self.max_relative_error {
            println!("  max relative error {key}: {max:.3e}");
        }
        assert!(
            self.failures.is_empty(),
            "{} of {} checks against {source} failed:\n{}",
            self.failures.len(),
            self.cases,
            self.failures.join("\n")
        );
    }
}

#[derive(Debug)]
enum Got {
    Outcome(TestOutcome),
    Score(f64),
}

fn outcome(result: Result<TestOutcome, StatsError>) -> Result<Got, StatsError> {
    result.map(Got::Outcome)
}

fn load(relative: &str, what: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {what} at {} ({e}); it should be there",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

fn num(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

fn table(value: &Value) -> [[u64; 2]; 2] {
    let cell = |r: usize, c: usize| value[r][c].as_u64().expect("a count");
    [[cell(0, 0), cell(0, 1)], [cell(1, 0), cell(1, 1)]]
}

fn expect(value: &Value) -> Expect {
    Expect::Outcome {
        statistic: value["statistic"].as_f64(),
        p_value: num(&value["pvalue"]),
    }
}

#[test]
fn shared_reference_cases() {
    let data = load(
        "../../../shared/reference/stats_scipy.json",
        "the shared scipy reference (shared/reference/stats_scipy.json, next to the repository)",
    );
    let mut report = Report::default();
    let cases = |key: &str| data[key].as_array().expect("a list of cases").clone();
    for case in cases("welch_t") {
        let got = outcome(welch_t_test(&floats(&case["a"]), &floats(&case["b"])));
        report.check(
            "welch_t_test",
            case["id"].as_str().unwrap(),
            got,
            expect(&case),
        );
    }
    for case in cases("mann_whitney_u") {
        let got = outcome(mann_whitney_u(&floats(&case["a"]), &floats(&case["b"])));
        let want = Expect::Outcome {
            statistic: Some(num(&case["U1"])),
            p_value: num(&case["pvalue_auto"]),
        };
        report.check("mann_whitney_u", case["id"].as_str().unwrap(), got, want);
    }
    for case in cases("ks_2samp") {
        let got = outcome(ks_two_sample(&floats(&case["a"]), &floats(&case["b"])));
        let want = Expect::Outcome {
            statistic: Some(num(&case["statistic"])),
            p_value: num(&case["pvalue_auto_exact"]),
        };
        report.check("ks_two_sample", case["id"].as_str().unwrap(), got, want);
    }
    for case in cases("chi2_2x2") {
        let id = case["id"].as_str().unwrap();
        let t = table(&case["table"]);
        report.check(
            "chi_square_2x2",
            id,
            outcome(chi_square_2x2(t, false)),
            expect(&case["no_correction"]),
        );
        report.check(
            "chi_square_2x2 yates",
            id,
            outcome(chi_square_2x2(t, true)),
            expect(&case["yates"]),
        );
        if let Some(p) = case["fisher_exact_two_sided_pvalue"].as_f64() {
            let got = outcome(fisher_exact_2x2(t));
            report.check("fisher_exact_2x2", id, got, Expect::PValue(p));
        }
    }
    for case in data["psi"]["cases"].as_array().expect("psi cases") {
        let got = psi(&floats(&case["reference"]), &floats(&case["current"]), 10).map(Got::Score);
        report.check(
            "psi",
            case["id"].as_str().unwrap(),
            got,
            Expect::Score(num(&case["psi"])),
        );
    }
    report.finish("shared/reference/stats_scipy.json");
}

#[test]
fn generated_scipy_cases() {
    let data = load(
        "tests/data/scipy_cases.json",
        "our scipy cases (regenerate with tests/data/gen_scipy_cases.py)",
    );
    let mut report = Report::default();
    for case in data["two_sample"].as_array().expect("two_sample cases") {
        let id = case["id"].as_str().unwrap();
        let (a, b) = (floats(&case["a"]), floats(&case["b"]));
        let want = |key: &str, undefined: &'static str| match case.get(key) {
            Some(v) => expect(v),
            None => Expect::Error(undefined.into()),
        };
        report.check(
            "welch_t_test",
            id,
            outcome(welch_t_test(&a, &b)),
            want("welch_t", "welch"),
        );
        report.check(
            "mann_whitney_u",
            id,
            outcome(mann_whitney_u(&a, &b)),
            want("mann_whitney_u", "same"),
        );
        report.check(
            "ks_two_sample",
            id,
            outcome(ks_two_sample(&a, &b)),
            want("ks_2samp", "ks"),
        );
    }
    for case in data["tables"].as_array().expect("table cases") {
        let t = table(&case["table"]);
        let id = format!("{t:?}");
        let want = |key: &str| match case.get(key) {
            Some(v) => expect(v),
            None => Expect::Error("is all zeros".into()),
        };
        report.check(
            "fisher_exact_2x2",
            &id,
            outcome(fisher_exact_2x2(t)),
            want("fisher"),
        );
        report.check(
            "chi_square_2x2",
            &id,
            outcome(chi_square_2x2(t, false)),
            want("chi2"),
        );
        report.check(
            "chi_square_2x2 yates",
            &id,
            outcome(chi_square_2x2(t, true)),
            want("chi2_yates"),
        );
    }
    for case in data["psi"].as_array().expect("psi cases") {
        let bins = case["bins"].as_u64().expect("bins") as usize;
        let got = psi(&floats(&case["reference"]), &floats(&case["current"]), bins).map(Got::Score);
        report.check(
            "psi",
            case["id"].as_str().unwrap(),
            got,
            Expect::Score(num(&case["psi"])),
        );
    }
    report.finish("tests/data/scipy_cases.json");
}

#[test]
fn refused_inputs() {
    let mut report = Report::default();
    let ok = [1.0, 2.0, 3.0];
    // (id, a, b, message for a two-sample test, message for psi(a, b))
    type SampleCase<'a> = (&'a str, &'a [f64], &'a [f64], &'a str, &'a str);
    let samples: [SampleCase; 6] = [
        (
            "empty a",
            &[],
            &ok,
            "sample a is empty",
            "sample reference is empty",
        ),
        (
            "empty b",
            &ok,
            &[],
            "sample b is empty",
            "sample current is empty",
        ),
        (
            "nan",
            &[1.0, f64::NAN],
            &ok,
            "sample a holds a non-finite value (nan) at index 1",
            "sample reference holds a non-finite value (nan) at index 1",
        ),
        (
            "infinity",
            &ok,
            &[f64::INFINITY, 0.0],
            "sample b holds a non-finite value (+inf) at index 0",
            "sample current holds a non-finite value (+inf) at index 0",
        ),
        (
            "negative infinity",
            &ok,
            &[0.0, f64::NEG_INFINITY],
            "(-inf) at index 1",
            "(-inf) at index 1",
        ),
        (
            "nan first",
            &[f64::NAN, 1.0],
            &ok,
            "(nan) at index 0",
            "(nan) at index 0",
        ),
    ];
    for (id, a, b, text, psi_text) in samples {
        let want = || Expect::Error(text.into());
        report.check("welch_t_test", id, outcome(welch_t_test(a, b)), want());
        report.check("mann_whitney_u", id, outcome(mann_whitney_u(a, b)), want());
        report.check("ks_two_sample", id, outcome(ks_two_sample(a, b)), want());
        report.check(
            "psi",
            id,
            psi(a, b, 10).map(Got::Score),
            Expect::Error(psi_text.into()),
        );
    }
    let constant = [2.0, 2.0, 2.0];
    let refusals: [(&str, &str, Result<Got, StatsError>, &str); 4] = [
        (
            "welch_t_test",
            "both constant",
            outcome(welch_t_test(&constant, &[5.0, 5.0])),
            "welch t-test: both samples are constant (zero variance in both)",
        ),
        (
            "welch_t_test",
            "one value",
            outcome(welch_t_test(&[1.0], &ok)),
            "sample a has 1 value(s), the test needs at least 2",
        ),
        (
            "mann_whitney_u",
            "all equal",
            outcome(mann_whitney_u(&constant, &[2.0])),
            "every value of both samples is the same",
        ),
        (
            "psi",
            "one bin",
            psi(&ok, &ok, 1).map(Got::Score),
            "psi needs at least 2",
        ),
    ];
    for (function, id, got, text) in refusals {
        report.check(function, id, got, Expect::Error(text.into()));
    }
    for (id, t, margin) in [
        ("empty row 1", [[0, 0], [3, 4]], "row 1"),
        ("empty row 2", [[1, 2], [0, 0]], "row 2"),
        ("empty column 1", [[0, 2], [0, 4]], "column 1"),
        ("empty column 2", [[1, 0], [3, 0]], "column 2"),
        ("all zero", [[0, 0], [0, 0]], "row 1"),
    ] {
        let want = || Expect::Error(format!("{margin} of the table"));
        report.check("fisher_exact_2x2", id, outcome(fisher_exact_2x2(t)), want());
        report.check(
            "chi_square_2x2",
            id,
            outcome(chi_square_2x2(t, false)),
            want(),
        );
        report.check(
            "chi_square_2x2 yates",
            id,
            outcome(chi_square_2x2(t, true)),
            want(),
        );
    }
    report.finish("refused inputs");
}

#[test]
fn outcome_serializes_with_public_field_names() {
    let outcome = TestOutcome {
        statistic: 1.5,
        p_value: 0.25,
    };
    let json = serde_json::to_value(outcome).unwrap();
    assert_eq!(json, serde_json::json!({"statistic": 1.5, "p_value": 0.25}));
    assert_eq!(
        serde_json::from_value::<TestOutcome>(json).unwrap(),
        outcome
    );
}
