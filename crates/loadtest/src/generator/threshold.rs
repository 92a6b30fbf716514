//! Thresholds: `p99 < 200ms`, `error_rate < 1%`, `rps > 500`, checked
//! against a result.
//!
//! A threshold is `METRIC OP VALUE`:
//! - latency metrics `pNN` (any quantile: `p50`, `p99.9`), `mean`, `min`,
//!   `max`, with a duration (`200ms`, `1.5s`, `250us`; a bare number is
//!   milliseconds), read from the exact histogram;
//! - `error_rate`, with a percentage (`1%`) or a fraction (`0.01`);
//! - `rps`, `requests`, `errors`, with a number;
//! - `OP` is `<`, `<=`, `>` or `>=`.
//!
//! A latency threshold on a run without a single response fails: there is
//! nothing to show it holds.

use std::fmt;

use hdrhistogram::Histogram;
use mlops_release::driver::TrafficReport;
use serde::{Deserialize, Serialize};

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A latency quantile, in (0, 1].
    Quantile(f64),
    /// The mean latency.
    Mean,
    /// The lowest latency.
    Min,
    /// The highest latency.
    Max,
    /// Requests per second achieved.
    Rps,
    /// Requests with an outcome.
    Requests,
    /// Failed requests.
    Errors,
    /// Failed requests over requests.
    ErrorRate,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Below,
    /// `<=`
    AtMost,
    /// `>`
    Above,
    /// `>=`
    AtLeast,
}

impl Op {
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Self::Below => actual < limit,
            Self::AtMost => actual <= limit,
            Self::Above => actual > limit,
            Self::AtLeast => actual >= limit,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Self::Below => "<",
            Self::AtMost => "<=",
            Self::Above => ">",
            Self::AtLeast => ">=",
        }
    }
}

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// As written.
    pub text: String,
    /// What it measures.
    pub metric: Metric,
    /// How it compares.
    pub op: Op,
    /// The limit, in the metric's unit: milliseconds for latencies, a
    /// fraction for the error rate, a count or rate otherwise.
    pub limit: f64,
}

/// A threshold that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("threshold `{text}`: {reason}")]
pub struct ThresholdError {
    /// As written.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// A threshold checked against a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The threshold as written.
    pub threshold: String,
    /// The measured value in the metric's unit (milliseconds, fraction,
    /// count, rate); `None` when there was nothing to measure.
    pub actual: Option<f64>,
    /// The limit, in the same unit.
    pub limit: f64,
    /// Whether it held.
    pub passed: bool,
    /// One line for a person: the value, and by how much it missed.
    pub detail: String,
}

impl Threshold {
    /// Parses `METRIC OP VALUE` (spaces optional).
    pub fn parse(text: &str) -> Result<Self, ThresholdError> {
        let bad = |reason: &str| ThresholdError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let at = text
            .find(['<', '>', '='])
            .ok_or_else(|| bad("expected METRIC < VALUE (or <=, >, >=), like `p99 < 200ms`"))?;
        let name = text[..at].trim();
        let rest = &text[at..];
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::AtMost, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::AtLeast, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Below, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Above, v)
        } else {
            return Err(bad("the comparison must be <, <=, > or >="));
        };
        let value = value.trim();
        let metric = metric(name).ok_or_else(|| {
            bad(&format!(
                "unknown metric `{name}`; one of pNN (p50, p99, p99.9), mean, min, max, rps, requests, errors, error_rate"
            ))
        })?;
        let limit = match metric {
            Metric::Quantile(_) | Metric::Mean | Metric::Min | Metric::Max => {
                millis(value).ok_or_else(|| {
                    bad(&format!(
                        "`{value}` is not a duration (like 200ms, 1.5s, 250us)"
                    ))
                })?
            }
            Metric::ErrorRate => fraction(value).ok_or_else(|| {
                bad(&format!(
                    "`{value}` is not a rate: write a percentage (1%) or a fraction from 0 to 1 (0.01)"
                ))
            })?,
            Metric::Rps | Metric::Requests | Metric::Errors => value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| bad(&format!("`{value}` is not a number of at least 0")))?,
        };
        Ok(Self {
            text: text.trim().to_owned(),
            metric,
            op,
            limit,
        })
    }

    /// Checks the threshold against a report and its latency histogram
    /// (microseconds).
    pub fn check(&self, report: &TrafficReport, latency: &Histogram<u64>) -> Verdict {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let latency_of =
            |f: &dyn Fn(&Histogram<u64>) -> f64| (!latency.is_empty()).then(|| f(latency));
        let actual = match self.metric {
            Metric::Quantile(q) => latency_of(&|h| ms(h.value_at_quantile(q))),
            Metric::Mean => latency_of(&|h| h.mean() / 1000.0),
            Metric::Min => latency_of(&|h| ms(h.min())),
            Metric::Max => latency_of(&|h| ms(h.max())),
            Metric::Rps => Some(report.rps),
            Metric::Requests => Some(report.requests as f64),
            Metric::Errors => Some(report.errors as f64),
            Metric::ErrorRate => {
                (report.requests > 0).then(|| report.errors as f64 / report.requests as f64)
            }
        };
        let passed = actual.is_some_and(|a| self.op.holds(a, self.limit));
        let detail = match actual {
            None => format!(
                "{}: failed, nothing to measure ({})",
                self.text,
                if report.requests == 0 {
                    "no request got an outcome"
                } else {
                    "no response"
                }
            ),
            Some(a) if passed => {
                format!("{}: passed, {} = {}", self.text, self.name(), self.show(a))
            }
            Some(a) => {
                let by = (a - self.limit).abs();
                let relative = if self.limit != 0.0 {
                    format!(" ({:.0}%)", by / self.limit.abs() * 100.0)
                } else {
                    String::new()
                };
                let side = if matches!(self.op, Op::Below | Op::AtMost) {
                    "over"
                } else {
                    "under"
                };
                format!(
                    "{}: FAILED, {} = {}, {}{relative} {side} the limit of {}",
                    self.text,
                    self.name(),
                    self.show(a),
                    self.show(by),
                    self.show(self.limit)
                )
            }
        };
        Verdict {
            threshold: self.text.clone(),
            actual,
            limit: self.limit,
            passed,
            detail,
        }
    }

    fn name(&self) -> String {
        match self.metric {
            Metric::Quantile(q) => format!("p{}", trim(q * 100.0)),
            Metric::Mean => "mean".into(),
            Metric::Min => "min".into(),
            Metric::Max => "max".into(),
            Metric::Rps => "rps".into(),
            Metric::Requests => "requests".into(),
            Metric::Errors => "errors".into(),
            Metric::ErrorRate => "error_rate".into(),
        }
    }

    fn show(&self, value: f64) -> String {
        match self.metric {
            Metric::Quantile(_) | Metric::Mean | Metric::Min | Metric::Max => {
                format!("{} ms", trim(value))
            }
            Metric::ErrorRate => format!("{}%", trim(value * 100.0)),
            Metric::Rps => format!("{}/s", trim(value)),
            Metric::Requests | Metric::Errors => trim(value),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.name(),
            self.op.symbol(),
            self.show(self.limit)
        )
    }
}

/// Checks every threshold; the verdicts in order.
pub fn check_all(
    thresholds: &[Threshold],
    report: &TrafficReport,
    latency: &Histogram<u64>,
) -> Vec<Verdict> {
    thresholds
        .iter()
        .map(|t| t.check(report, latency))
        .collect()
}

/// A number with at most 3 decimals, without trailing zeros.
fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

fn metric(name: &str) -> Option<Metric> {
    Some(match name {
        "mean" => Metric::Mean,
        "min" => Metric::Min,
        "max" => Metric::Max,
        "rps" => Metric::Rps,
        "requests" => Metric::Requests,
        "errors" => Metric::Errors,
        "error_rate" => Metric::ErrorRate,
        _ => {
            let digits = name.strip_prefix('p')?;
            if !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return None;
            }
            let percent: f64 = digits.parse().ok()?;
            if !(percent > 0.0 && percent <= 100.0) {
                return None;
            }
            Metric::Quantile(percent / 100.0)
        }
    })
}

/// A duration in milliseconds: `200ms`, `1.5s`, `250us`, `2m`, or a bare
/// number of milliseconds.
fn millis(value: &str) -> Option<f64> {
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "us" | "µs" => 0.001,
        "s" => 1000.0,
        "m" => 60_000.0,
        _ => return None,
    };
    Some(number * scale).filter(|v| v.is_finite() && *v >= 0.0)
}

fn fraction(value: &str) -> Option<f64> {
    let parsed = match value.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().ok()? / 100.0,
        None => value.parse::<f64>().ok()?,
    };
    Some(parsed).filter(|v| (0.0..=1.0).contains(v))
}

#[cfg(test)]
mod tests {
    use mlops_release::driver::latency_histogram;

    use super::*;

    fn report(requests: u64, errors: u64, rps: f64) -> TrafficReport {
        serde_json::from_value(serde_json::json!({
            "target": "http://127.0.0.1:1/", "method": "GET", "target_rps": null,
            "planned": requests, "requests": requests, "errors": errors,
            "errors_by_kind": {"status_4xx": 0, "status_5xx": errors, "connect": 0,
                               "timeout": 0, "transport": 0},
            "status": {"1xx": 0, "2xx": requests - errors, "3xx": 0, "4xx": 0, "5xx": errors},
            "bytes_sent": 0, "bytes_received": 0, "elapsed_s": 1.0, "rps": rps,
            "latency_ms": null, "per_second": [], "stopped": "completed",
            "abandoned": 0, "observed_dropped": 0
        }))
        .unwrap()
    }

    #[test]
    fn thresholds_parse_with_their_units() {
        let t = |text: &str| Threshold::parse(text).unwrap();
        assert_eq!(t("p99 < 200ms").metric, Metric::Quantile(0.99));
        assert_eq!(t("p99 < 200ms").limit, 200.0);
        assert_eq!(t("p99.9<=1.5s").limit, 1500.0);
        assert_eq!(t("p99.9<=1.5s").op, Op::AtMost);
        assert_eq!(t("max < 250us").limit, 0.25);
        assert_eq!(t("mean < 12").limit, 12.0);
        assert_eq!(t("error_rate < 1%").limit, 0.01);
        assert_eq!(t("error_rate <= 0.05").limit, 0.05);
        assert_eq!(t("rps > 500").op, Op::Above);
        assert_eq!(t("requests >= 10").limit, 10.0);
        assert_eq!(t("p50 < 2s").to_string(), "p50 < 2000 ms");
    }

    #[test]
    fn bad_thresholds_say_what_is_wrong() {
        for (text, says) in [
            ("p99 200ms", "expected METRIC"),
            ("latency < 1s", "unknown metric `latency`"),
            ("p0 < 1s", "unknown metric"),
            ("p101 < 1s", "unknown metric"),
            ("p99 < fast", "not a duration"),
            ("p99 < 5h", "not a duration"),
            ("p99 = 5ms", "must be <, <=, > or >="),
            ("error_rate < 5", "percentage"),
            ("rps > -1", "at least 0"),
        ] {
            let e = Threshold::parse(text).unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
            assert!(
                e.to_string().starts_with(&format!("threshold `{text}`")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_failed_threshold_says_by_how_much() {
        let mut latency = latency_histogram();
        for micros in [1_000, 2_000, 312_400] {
            latency.record(micros).unwrap();
        }
        let r = report(100, 3, 480.0);
        let v = Threshold::parse("p99 < 200ms").unwrap().check(&r, &latency);
        assert!(!v.passed);
        assert!((v.actual.unwrap() - 312.4).abs() < 0.5, "{v:?}");
        assert!(v.detail.contains("FAILED, p99 = 312."), "{}", v.detail);
        assert!(
            v.detail.contains("over the limit of 200 ms"),
            "{}",
            v.detail
        );
        assert!(v.detail.contains("(56%)"), "{}", v.detail);
        let v = Threshold::parse("rps > 500").unwrap().check(&r, &latency);
        assert!(!v.passed);
        assert_eq!(
            v.detail,
            "rps > 500: FAILED, rps = 480/s, 20/s (4%) under the limit of 500/s"
        );
        let v = Threshold::parse("error_rate < 5%")
            .unwrap()
            .check(&r, &latency);
        assert!(v.passed, "{v:?}");
        assert_eq!(v.detail, "error_rate < 5%: passed, error_rate = 3%");
        let v = Threshold::parse("errors <= 2").unwrap().check(&r, &latency);
        assert!(!v.passed);
    }

    #[test]
    fn nothing_measured_fails_a_threshold() {
        let empty = latency_histogram();
        let v = Threshold::parse("p99 < 1s")
            .unwrap()
            .check(&report(0, 0, 0.0), &empty);
        assert!(!v.passed);
        assert_eq!(v.actual, None);
        assert!(
            v.detail.contains("no request got an outcome"),
            "{}",
            v.detail
        );
        let v = Threshold::parse("error_rate < 1%")
            .unwrap()
            .check(&report(0, 0, 0.0), &empty);
        assert!(!v.passed);
        // Requests that all failed without a response: latency has nothing.
        let v = Threshold::parse("max < 1s")
            .unwrap()
            .check(&report(5, 5, 5.0), &empty);
        assert!(v.detail.contains("no response"), "{}", v.detail);
    }
}
