//! `mlops_release::analysis` against reference cases: verdicts of the release
//! analysis on deterministic pseudo-random measurements, and the round state
//! machine's decisions over sequences of verdicts.
//!
//! Every case goes through [`check`], which also checks the invariants every
//! record must hold: each check's verdict follows from its evidence, the
//! step's from its checks, and the record survives a JSON round trip, so a
//! user can recompute the verdict from what was recorded. Samples come from a
//! seeded xorshift generator (normal values by Box-Muller): no clock, no
//! network, the same numbers on every run.

use std::num::NonZeroU32;

use mlops_release::analysis::sequential::{CumulativeCounts, ErrorRateMsprt};
use mlops_release::analysis::{
    AnalysisConfig, CheckName, CheckVerdict, Evidence, FailureCount, InconclusiveAction,
    RoundPolicy, RoundState, RoundTracker, StepAction, StepAnalysis, StepVerdict, TableTest,
    VariantMeasurements, analyze,
};
use mlops_release::stats::chi_square_2x2;

/// xorshift64* with Box-Muller normals.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Avoid the all-zero state; mix the seed so close seeds diverge.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// How to generate one variant's measurements.
#[derive(Clone, Copy)]
struct Spec {
    seed: u64,
    requests: u64,
    /// Errors are exactly `round(requests · error_rate)`.
    error_rate: f64,
    /// Latency ~ N(mean, sd) ms, clipped at 0.1 ms.
    latency: (f64, f64),
    latency_samples: usize,
    /// Predictions ~ N(mean, sd), when given.
    predictions: Option<(f64, f64, usize)>,
}

/// A well-behaved variant: 5000 requests, 0.1 % errors, 20 ± 3 ms.
const BASE: Spec = Spec {
    seed: 1,
    requests: 5000,
    error_rate: 0.001,
    latency: (20.0, 3.0),
    latency_samples: 2000,
    predictions: Some((0.0, 1.0, 2000)),
};

impl Spec {
    fn seed(self, seed: u64) -> Self {
        Self { seed, ..self }
    }

    fn measure(self) -> VariantMeasurements {
        let mut rng = Rng::new(self.seed);
        let (mean, sd) = self.latency;
        let latencies_ms = (0..self.latency_samples)
            .map(|_| rng.normal(mean, sd).max(0.1))
            .collect();
        let predictions = self
            .predictions
            .map(|(mean, sd, n)| (0..n).map(|_| rng.normal(mean, sd)).collect());
        VariantMeasurements {
            requests: self.requests,
            errors: (self.requests as f64 * self.error_rate).round() as u64,
            latencies_ms,
            predictions,
        }
    }
}

/// A configuration with both SLOs set: at most 1 % errors and 100 ms p99.
fn with_slos() -> AnalysisConfig {
    AnalysisConfig {
        max_error_rate: Some(0.01),
        max_p99_latency_ms: Some(100.0),
        ..AnalysisConfig::default()
    }
}

enum Case {
    /// One analysis step.
    Analyze {
        stable: Option<VariantMeasurements>,
        candidate: VariantMeasurements,
        config: AnalysisConfig,
    },
    /// A sequence of round verdicts fed to a state machine.
    Rounds {
        policy: RoundPolicy,
        verdicts: Vec<StepVerdict>,
    },
}

enum Expected {
    /// The step's verdict; the checks that fail and those skipped (every
    /// other check that ran passes, or — for an inconclusive gate — only the
    /// gate ran); and tests the 2×2 checks must have chosen.
    Verdict {
        verdict: StepVerdict,
        failing: &'static [CheckName],
        skipped: &'static [CheckName],
        table_tests: &'static [(CheckName, TableTest)],
    },
    /// An error whose message contains each text.
    Error(&'static [&'static str]),
    /// The action after each verdict.
    Actions(&'static [StepAction]),
}

fn verdict(
    verdict: StepVerdict,
    failing: &'static [CheckName],
    skipped: &'static [CheckName],
) -> Expected {
    Expected::Verdict {
        verdict,
        failing,
        skipped,
        table_tests: &[],
    }
}

const COMPARISONS: &[CheckName] = &[
    CheckName::ErrorRate,
    CheckName::LatencyMedian,
    CheckName::LatencyP99,
    CheckName::Predictions,
];

/// The one helper: runs `case` and compares with `expected`.
#[track_caller]
fn check(name: &str, case: Case, expected: Expected) {
    match (case, expected) {
        (
            Case::Analyze {
                stable,
                candidate,
                config,
            },
            expected,
        ) => {
            let got = analyze(stable.as_ref(), &candidate, &config);
            match (got, expected) {
                (
                    Ok(got),
                    Expected::Verdict {
                        verdict,
                        failing,
                        skipped,
                        table_tests,
                    },
                ) => {
                    let record = serde_json::to_string_pretty(&got).expect("record serializes");
                    assert_eq!(got.verdict, verdict, "{name}: verdict\n{record}");
                    check_invariants(name, &got, &record);
                    if verdict == StepVerdict::Inconclusive
                        && got.checks[0].verdict == CheckVerdict::Inconclusive
                    {
                        assert_eq!(got.checks.len(), 1, "{name}: only the gate runs\n{record}");
                    }
                    for c in &got.checks[1..] {
                        let want = if failing.contains(&c.name) {
                            CheckVerdict::Fail
                        } else if skipped.contains(&c.name) {
                            CheckVerdict::Skipped
                        } else {
                            CheckVerdict::Pass
                        };
                        assert_eq!(c.verdict, want, "{name}: check {}\n{record}", c.name);
                    }
                    for (check_name, test) in table_tests {
                        let c = got.checks.iter().find(|c| c.name == *check_name);
                        let chosen = match c.map(|c| &c.evidence) {
                            Some(Evidence::Proportions(e)) => e.outcome.test,
                            Some(Evidence::Tail(e)) => e.outcome.test,
                            _ => panic!("{name}: {check_name} has no 2x2 table\n{record}"),
                        };
                        assert_eq!(chosen, *test, "{name}: test of {check_name}\n{record}");
                    }
                }
                (Err(error), Expected::Error(texts)) => {
                    let message = error.to_string();
                    for text in texts {
                        assert!(message.contains(text), "{name}: {message:?} lacks {text:?}");
                    }
                }
                (Ok(got), _) => {
                    panic!("{name}: unexpected verdict {}: {}", got.verdict, got.reason)
                }
                (Err(error), _) => panic!("{name}: unexpected error: {error}"),
            }
        }
        (Case::Rounds { policy, verdicts }, Expected::Actions(actions)) => {
            assert_eq!(
                verdicts.len(),
                actions.len(),
                "{name}: one action per verdict"
            );
            let mut tracker = RoundTracker::new(policy.clone());
            for (i, (&v, &want)) in verdicts.iter().zip(actions).enumerate() {
                // Persist and resume between rounds, as a restarted controller does.
                let saved = serde_json::to_string(tracker.state()).expect("state serializes");
                let state: RoundState = serde_json::from_str(&saved).expect("state parses");
                tracker = RoundTracker::resume(policy.clone(), state);
                let got = tracker.record(v);
                assert_eq!(
                    got.action,
                    want,
                    "{name}: round {} ({v}): {}",
                    i + 1,
                    got.reason
                );
            }
            let replayed = RoundTracker::replay(policy, &verdicts);
            assert_eq!(
                Some(replayed.action),
                actions.last().copied(),
                "{name}: replay"
            );
        }
        (Case::Rounds { .. }, _) => panic!("{name}: a rounds case expects actions"),
    }
}

/// What every record must satisfy.
#[track_caller]
fn check_invariants(name: &str, got: &StepAnalysis, record: &str) {
    let parsed: StepAnalysis = serde_json::from_str(record).expect("record parses back");
    assert_eq!(&parsed, got, "{name}: json round trip");
    for c in &parsed.checks {
        assert_eq!(
            c.evidence.verdict(),
            c.verdict,
            "{name}: {} recomputed from its evidence",
            c.name
        );
        assert!(!c.reason.is_empty(), "{name}: {} has a reason", c.name);
    }
    assert_eq!(
        StepVerdict::combine(&parsed.checks),
        parsed.verdict,
        "{name}: step verdict recomputed"
    );
    assert_eq!(
        parsed.checks[0].name,
        CheckName::SampleSize,
        "{name}: gate first"
    );
    assert!(!got.reason.is_empty(), "{name}: a step reason");
}

fn analysis(stable: Option<Spec>, candidate: Spec, config: AnalysisConfig) -> Case {
    Case::Analyze {
        stable: stable.map(Spec::measure),
        candidate: candidate.measure(),
        config,
    }
}

#[test]
fn a_good_candidate_passes() {
    check(
        "good candidate",
        analysis(Some(BASE), BASE.seed(2), with_slos()),
        verdict(StepVerdict::Pass, &[], &[]),
    );
}

#[test]
fn added_errors_fail() {
    let bad = Spec {
        error_rate: 0.05,
        ..BASE.seed(2)
    };
    check(
        "5% vs 0.1% on 5000 requests, with slos",
        analysis(Some(BASE), bad, with_slos()),
        Expected::Verdict {
            verdict: StepVerdict::Fail,
            failing: &[CheckName::ErrorRateSlo, CheckName::ErrorRate],
            skipped: &[],
            table_tests: &[(CheckName::ErrorRate, TableTest::ChiSquareYates)],
        },
    );
    check(
        "5% vs 0.1% on 5000 requests, comparison alone",
        analysis(Some(BASE), bad, AnalysisConfig::default()),
        verdict(
            StepVerdict::Fail,
            &[CheckName::ErrorRate],
            &[CheckName::ErrorRateSlo, CheckName::LatencyP99Slo],
        ),
    );
}

#[test]
fn a_significant_but_small_error_increase_passes() {
    // 0.4 pp more errors on 100k requests: p ≈ 1e-30, below the 1 pp threshold.
    let stable = Spec {
        requests: 100_000,
        ..BASE
    };
    let candidate = Spec {
        error_rate: 0.005,
        ..stable.seed(2)
    };
    check(
        "0.5% vs 0.1% on 100k requests",
        analysis(Some(stable), candidate, with_slos()),
        verdict(StepVerdict::Pass, &[], &[]),
    );
}

#[test]
fn rare_errors_are_tested_exactly() {
    // 0 vs 2 errors in 200 requests: expected counts of 1, Fisher's exact test.
    let stable = Spec {
        requests: 200,
        error_rate: 0.0,
        latency_samples: 200,
        predictions: None,
        ..BASE
    };
    let candidate = Spec {
        error_rate: 0.01,
        ..stable.seed(2)
    };
    check(
        "0/200 vs 2/200",
        analysis(Some(stable), candidate, AnalysisConfig::default()),
        Expected::Verdict {
            verdict: StepVerdict::Pass,
            failing: &[],
            skipped: &[
                CheckName::ErrorRateSlo,
                CheckName::LatencyP99Slo,
                CheckName::Predictions,
            ],
            table_tests: &[(CheckName::ErrorRate, TableTest::FisherExact)],
        },
    );
    // No errors anywhere: the test is undefined, the rates are equal.
    check(
        "0/200 vs 0/200",
        analysis(
            Some(stable),
            Spec {
                error_rate: 0.0,
                ..candidate
            },
            with_slos(),
        ),
        verdict(StepVerdict::Pass, &[], &[CheckName::Predictions]),
    );
}

#[test]
fn added_latency_fails() {
    let slow = Spec {
        latency: (70.0, 3.0),
        ..BASE.seed(2)
    };
    // p99 ≈ 77 ms stays within the 100 ms SLO: the comparison catches it.
    check(
        "+50 ms on 20 ms",
        analysis(Some(BASE), slow, with_slos()),
        verdict(
            StepVerdict::Fail,
            &[CheckName::LatencyMedian, CheckName::LatencyP99],
            &[],
        ),
    );
}

#[test]
fn a_slower_tail_alone_fails_the_p99_check() {
    // Same median; 5 % of the candidate's requests take 60 ± 5 ms.
    let stable = Spec {
        latency_samples: 5000,
        ..BASE
    };
    let mut candidate = Spec {
        latency_samples: 5000,
        ..BASE.seed(2)
    }
    .measure();
    for (i, l) in candidate.latencies_ms.iter_mut().enumerate() {
        if i % 20 == 0 {
            *l += 40.0;
        }
    }
    check(
        "tail +40 ms on 5% of requests",
        Case::Analyze {
            stable: Some(stable.measure()),
            candidate,
            config: with_slos(),
        },
        verdict(StepVerdict::Fail, &[CheckName::LatencyP99], &[]),
    );
}

#[test]
fn a_tiny_significant_latency_difference_passes() {
    let stable = Spec {
        requests: 100_000,
        latency_samples: 100_000,
        predictions: None,
        ..BASE
    };
    let candidate = Spec {
        latency: (21.0, 3.0),
        ..stable.seed(2)
    };
    let case = analysis(Some(stable), candidate, with_slos());
    // The shift is significant — the point of the case is that it passes anyway.
    if let Case::Analyze {
        stable: Some(s),
        candidate: c,
        ..
    } = &case
    {
        let p = mlops_release::stats::mann_whitney_u(&c.latencies_ms, &s.latencies_ms)
            .expect("test runs")
            .p_value;
        assert!(p < 1e-100, "+1 ms on 100k samples is significant, p = {p}");
    }
    check(
        "+1 ms on 100k samples",
        case,
        verdict(StepVerdict::Pass, &[], &[CheckName::Predictions]),
    );
}

#[test]
fn shifted_predictions_fail() {
    let shifted = Spec {
        predictions: Some((0.5, 1.0, 2000)),
        ..BASE.seed(2)
    };
    check(
        "predictions shifted by half a standard deviation",
        analysis(Some(BASE), shifted, with_slos()),
        verdict(StepVerdict::Fail, &[CheckName::Predictions], &[]),
    );
    let widened = Spec {
        predictions: Some((0.0, 2.0, 2000)),
        ..BASE.seed(2)
    };
    check(
        "predictions twice as spread",
        analysis(Some(BASE), widened, with_slos()),
        verdict(StepVerdict::Fail, &[CheckName::Predictions], &[]),
    );
    let only_candidate = Spec {
        predictions: None,
        ..BASE
    };
    check(
        "predictions from the candidate only",
        analysis(Some(only_candidate), shifted, with_slos()),
        verdict(StepVerdict::Pass, &[], &[CheckName::Predictions]),
    );
}

#[test]
fn too_few_samples_are_inconclusive() {
    let few = Spec {
        requests: 50,
        latency_samples: 50,
        ..BASE.seed(2)
    };
    check(
        "50 requests",
        analysis(Some(BASE), few, with_slos()),
        verdict(StepVerdict::Inconclusive, &[], &[]),
    );
    // Even a dreadful candidate is not judged before the minimum.
    check(
        "50 requests, half failing, +200 ms",
        analysis(
            Some(BASE),
            Spec {
                error_rate: 0.5,
                latency: (220.0, 3.0),
                ..few
            },
            with_slos(),
        ),
        verdict(StepVerdict::Inconclusive, &[], &[]),
    );
    // The stable variant counts too, and so do prediction samples.
    check(
        "stable with 50 latency samples",
        analysis(
            Some(Spec {
                latency_samples: 50,
                ..BASE
            }),
            BASE.seed(2),
            with_slos(),
        ),
        verdict(StepVerdict::Inconclusive, &[], &[]),
    );
    check(
        "candidate with 50 predictions",
        analysis(
            Some(BASE),
            Spec {
                predictions: Some((0.0, 1.0, 50)),
                ..BASE.seed(2)
            },
            with_slos(),
        ),
        verdict(StepVerdict::Inconclusive, &[], &[]),
    );
}

#[test]
fn without_stable_the_slos_judge_alone() {
    let breaching = Spec {
        error_rate: 0.03,
        ..BASE
    };
    check(
        "first release, 3% errors against a 1% slo",
        analysis(None, breaching, with_slos()),
        verdict(StepVerdict::Fail, &[CheckName::ErrorRateSlo], COMPARISONS),
    );
    check(
        "first release, p99 above the slo",
        analysis(
            None,
            Spec {
                latency: (150.0, 10.0),
                ..BASE
            },
            with_slos(),
        ),
        verdict(StepVerdict::Fail, &[CheckName::LatencyP99Slo], COMPARISONS),
    );
    check(
        "first release within the slos",
        analysis(None, BASE, with_slos()),
        verdict(StepVerdict::Pass, &[], COMPARISONS),
    );
    check(
        "first release, no slo: nothing to judge by",
        analysis(None, BASE, AnalysisConfig::default()),
        verdict(
            StepVerdict::Inconclusive,
            &[],
            &[
                CheckName::ErrorRateSlo,
                CheckName::LatencyP99Slo,
                CheckName::ErrorRate,
                CheckName::LatencyMedian,
                CheckName::LatencyP99,
                CheckName::Predictions,
            ],
        ),
    );
}

#[test]
fn invalid_inputs_are_refused() {
    check(
        "more errors than requests",
        Case::Analyze {
            stable: None,
            candidate: VariantMeasurements {
                requests: 10,
                errors: 11,
                latencies_ms: vec![1.0],
                predictions: None,
            },
            config: with_slos(),
        },
        Expected::Error(&["candidate", "11 errors out of 10 requests"]),
    );
    check(
        "nan latency",
        Case::Analyze {
            stable: Some(VariantMeasurements {
                requests: 10,
                errors: 0,
                latencies_ms: vec![1.0, f64::NAN],
                predictions: None,
            }),
            candidate: BASE.measure(),
            config: with_slos(),
        },
        Expected::Error(&["stable", "latency sample", "index 1"]),
    );
    check(
        "every config problem at once",
        analysis(
            None,
            BASE,
            AnalysisConfig {
                alpha: 1.5,
                psi_bins: 1,
                max_error_rate: Some(2.0),
                ..AnalysisConfig::default()
            },
        ),
        Expected::Error(&["alpha is 1.5", "psi-bins is 1", "max-error-rate is 2"]),
    );
    check(
        "psi-bins has an upper bound",
        analysis(
            None,
            BASE,
            AnalysisConfig {
                psi_bins: 1_000_000_000,
                ..AnalysisConfig::default()
            },
        ),
        Expected::Error(&["psi-bins is 1000000000, it must be from 2 to 1000"]),
    );
}

fn rounds(policy: RoundPolicy, verdicts: &str) -> Case {
    let verdicts = verdicts
        .chars()
        .map(|c| match c {
            'P' => StepVerdict::Pass,
            'F' => StepVerdict::Fail,
            'I' => StepVerdict::Inconclusive,
            other => panic!("unknown verdict {other:?}"),
        })
        .collect();
    Case::Rounds { policy, verdicts }
}

fn n(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).expect("non-zero")
}

#[test]
fn the_round_state_machine_decides() {
    use StepAction::{Continue as C, Pause, Promote, Rollback};
    let default = RoundPolicy::default;
    check(
        "five passes promote",
        rounds(default(), "PPPPP"),
        Expected::Actions(&[C, C, C, C, Promote]),
    );
    check(
        "failure-limit 0: the first failure rolls back, and the decision stands",
        rounds(default(), "PFPP"),
        Expected::Actions(&[C, Rollback, Rollback, Rollback]),
    );
    let tolerant = RoundPolicy {
        rounds: n(10),
        failure_limit: 2,
        failure_count: FailureCount::Consecutive,
        ..default()
    };
    check(
        "failure-limit 2, consecutive: a pass resets the streak",
        rounds(tolerant.clone(), "FFPFFF"),
        Expected::Actions(&[C, C, C, C, C, Rollback]),
    );
    check(
        "failure-limit 2, consecutive: an inconclusive round does not reset it",
        rounds(tolerant.clone(), "FFIF"),
        Expected::Actions(&[C, C, C, Rollback]),
    );
    check(
        "failure-limit 2, total (argo's, the default)",
        rounds(
            RoundPolicy {
                rounds: n(10),
                failure_limit: 2,
                ..default()
            },
            "FPFPF",
        ),
        Expected::Actions(&[C, C, C, C, Rollback]),
    );
    check(
        "a last round failing within the limit still rolls back",
        rounds(
            RoundPolicy {
                rounds: n(3),
                ..tolerant.clone()
            },
            "PPF",
        ),
        Expected::Actions(&[C, C, Rollback]),
    );
    let early = RoundPolicy {
        rounds: n(10),
        promote_after_passes: Some(n(3)),
        ..default()
    };
    check(
        "early promotion after 3 consecutive passes",
        rounds(early.clone(), "IPPP"),
        Expected::Actions(&[C, C, C, Promote]),
    );
    check(
        "an inconclusive round breaks the pass streak",
        rounds(early, "PPIPPP"),
        Expected::Actions(&[C, C, C, C, C, Promote]),
    );
    let strict = RoundPolicy {
        inconclusive_limit: 1,
        ..default()
    };
    check(
        "inconclusive-limit 1, pause",
        rounds(strict.clone(), "IPI"),
        Expected::Actions(&[C, C, Pause]),
    );
    check(
        "inconclusive-limit 1, roll back",
        rounds(
            RoundPolicy {
                on_inconclusive: InconclusiveAction::Rollback,
                ..strict
            },
            "IPI",
        ),
        Expected::Actions(&[C, C, Rollback]),
    );
    check(
        "an inconclusive last round pauses",
        rounds(default(), "PPPPI"),
        Expected::Actions(&[C, C, C, C, Pause]),
    );
    check(
        "default: three inconclusive rounds are tolerated, the fourth pauses",
        rounds(
            RoundPolicy {
                rounds: n(10),
                ..default()
            },
            "IIII",
        ),
        Expected::Actions(&[C, C, C, Pause]),
    );
}

#[test]
fn the_analysis_config_reads_from_kebab_case() {
    let config: AnalysisConfig = serde_json::from_str(
        r#"{"alpha": 0.01, "max-error-rate": 0.02, "latency-p99-increase": {"ms": 10, "percent": 5}}"#,
    )
    .expect("config parses");
    assert_eq!(config.alpha, 0.01);
    assert_eq!(config.max_error_rate, Some(0.02));
    assert_eq!(config.latency_p99_increase.ms, 10.0);
    assert_eq!(config.psi_bins, AnalysisConfig::default().psi_bins);
    let unknown = serde_json::from_str::<AnalysisConfig>(r#"{"alpah": 0.01}"#);
    assert!(unknown.is_err(), "unknown fields are refused");
}

/// Simulates `rounds` looks at cumulative counts under a true null (both
/// variants at `rate`), `per_round` requests per variant per round, and
/// counts the simulations in which each rule ever rejects.
fn peeking_false_positives(simulations: u64, rounds: u32, per_round: u64, rate: f64) -> (f64, f64) {
    let msprt = ErrorRateMsprt::default();
    let (mut naive, mut sequential) = (0u64, 0u64);
    for sim in 0..simulations {
        let mut rng = Rng::new(1000 + sim);
        let (mut s, mut c) = (
            CumulativeCounts {
                requests: 0,
                errors: 0,
            },
            CumulativeCounts {
                requests: 0,
                errors: 0,
            },
        );
        let (mut p, mut naive_hit, mut sequential_hit) = (1.0, false, false);
        for _ in 0..rounds {
            for counts in [&mut s, &mut c] {
                counts.requests += per_round;
                counts.errors += (0..per_round).filter(|_| rng.uniform() < rate).count() as u64;
            }
            let table = [
                [s.requests - s.errors, s.errors],
                [c.requests - c.errors, c.errors],
            ];
            naive_hit |= chi_square_2x2(table, false).is_ok_and(|o| o.p_value < 0.05);
            let round = msprt.round(p, s, c).expect("valid counts");
            p = round.p_value;
            sequential_hit |= round.significant;
        }
        naive += u64::from(naive_hit);
        sequential += u64::from(sequential_hit);
    }
    (
        naive as f64 / simulations as f64,
        sequential as f64 / simulations as f64,
    )
}

#[test]
fn the_msprt_keeps_its_false_positive_rate_when_peeking() {
    let (naive, sequential) = peeking_false_positives(400, 20, 500, 0.05);
    eprintln!("false positives over 20 looks: chi-square {naive}, msprt {sequential}");
    assert!(
        naive > 0.12,
        "a fixed-sample test read 20 times rejects a true null often (got {naive})"
    );
    assert!(
        sequential <= 0.05,
        "the msprt rejects a true null at most alpha of the time (got {sequential})"
    );
}

#[test]
fn the_msprt_detects_a_real_difference() {
    let msprt = ErrorRateMsprt::default();
    let mut rng = Rng::new(7);
    let (mut s, mut c) = (
        CumulativeCounts {
            requests: 0,
            errors: 0,
        },
        CumulativeCounts {
            requests: 0,
            errors: 0,
        },
    );
    let mut p = 1.0;
    let mut rejected_at = None;
    for round in 1..=20 {
        for (counts, rate) in [(&mut s, 0.01), (&mut c, 0.03)] {
            counts.requests += 500;
            counts.errors += (0..500).filter(|_| rng.uniform() < rate).count() as u64;
        }
        let r = msprt.round(p, s, c).expect("valid counts");
        assert!(r.p_value <= p, "the always-valid p-value never rises");
        p = r.p_value;
        if r.significant && rejected_at.is_none() {
            rejected_at = Some(round);
        }
    }
    let round = rejected_at.expect("3% vs 1% is detected within 20 rounds of 500");
    assert!(round <= 8, "detected at round {round}");
    let refused = msprt.round(
        1.0,
        CumulativeCounts {
            requests: 0,
            errors: 0,
        },
        c,
    );
    assert!(refused.is_err_and(|e| e.to_string().contains("0 requests with 0 errors")));
}

#[test]
fn the_msprt_refuses_a_previous_p_value_that_is_not_a_probability() {
    let msprt = ErrorRateMsprt::default();
    let counts = CumulativeCounts {
        requests: 100,
        errors: 1,
    };
    for bad in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
        let err = msprt.round(bad, counts, counts).unwrap_err().to_string();
        assert!(err.contains("previous p-value"), "{bad}: {err}");
    }
    assert!(msprt.round(1.0, counts, counts).is_ok());
}
