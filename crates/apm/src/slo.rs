//! SLOs evaluated as multiwindow, multi-burn-rate alerts (the SRE
//! workbook, chapter 5, "Alerting on SLOs").
//!
//! An SLO with target `t` has an error budget `1 - t`. The *burn rate* of
//! a window is its share of bad requests divided by the budget: 1 spends
//! the budget exactly over the period. An alert rule fires when both its
//! long and its short window burn faster than its rate — the long window
//! makes it significant, the short one makes it reset soon after the
//! problem stops. The workbook's three rules for a 30-day period:
//!
//! | rule        | long | short | burn rate | budget spent when it fires |
//! |-------------|------|-------|-----------|----------------------------|
//! | `page-fast` | 1h   | 5m    | 14.4      | 2 %                        |
//! | `page-slow` | 6h   | 30m   | 6         | 5 %                        |
//! | `ticket`    | 3d   | 6h    | 1         | 10 %                       |
//!
//! Windows scale with the configured period (`period = "6h"` makes
//! `page-fast` 30 s over 2.5 s), so a test sees an alert in seconds. A
//! long window with fewer than `min-requests` requests never alerts: a
//! handful of requests, one of them failed, is not an outage.
//!
//! [`evaluate`] is the pure decision (counts in, verdict out);
//! [`Alert::step`] the state machine (inactive, pending, firing,
//! resolved); [`counts`] reads the counts from the [`Store`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{Objective, Slo, scaled};
use crate::tsdb::{Millis, Selector, Store, TsdbError};

/// The gateway's request counter, by variant and status class (`code`).
pub const REQUESTS: &str = "mlops_gateway_requests_total";
/// The gateway's latency histogram, by variant.
pub const DURATION: &str = "mlops_gateway_request_duration_seconds";

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Someone must act now.
    Page,
    /// Someone must act within days.
    Ticket,
}

impl Severity {
    /// `page` or `ticket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One multiwindow burn-rate rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnRule {
    /// Its name: `page-fast`, `page-slow` or `ticket`.
    pub name: String,
    /// How urgent its alert is.
    pub severity: Severity,
    /// The long window.
    pub long: Duration,
    /// The short window.
    pub short: Duration,
    /// The burn rate both windows must exceed.
    pub burn_rate: f64,
}

/// The workbook's three rules, their windows scaled to `period`.
pub fn workbook_rules(period: Duration) -> Vec<BurnRule> {
    let h = |n: u64| Duration::from_secs(n * 3600);
    let m = |n: u64| Duration::from_secs(n * 60);
    [
        ("page-fast", Severity::Page, h(1), m(5), 14.4),
        ("page-slow", Severity::Page, h(6), m(30), 6.0),
        ("ticket", Severity::Ticket, h(72), h(6), 1.0),
    ]
    .into_iter()
    .map(|(name, severity, long, short, burn_rate)| BurnRule {
        name: name.to_owned(),
        severity,
        long: scaled(long, period),
        short: scaled(short, period),
        burn_rate,
    })
    .collect()
}

/// Requests in a window: how many, and how many were bad.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Every request the SLO counts.
    pub total: f64,
    /// Those that missed the objective.
    pub bad: f64,
}

impl Counts {
    /// The share of bad requests (0 with no requests).
    pub fn error_ratio(&self) -> f64 {
        if self.total > 0.0 {
            (self.bad / self.total).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// A rule evaluated on one SLO's counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The SLO's name.
    pub slo: String,
    /// The rule's name.
    pub rule: String,
    /// The rule's severity.
    pub severity: Severity,
    /// The long window's counts.
    pub long: Counts,
    /// The short window's counts.
    pub short: Counts,
    /// The long window's burn rate.
    pub burn_long: f64,
    /// The short window's burn rate.
    pub burn_short: f64,
    /// The rate both must exceed.
    pub threshold: f64,
    /// Whether the alert condition holds.
    pub breached: bool,
    /// Why a breach was not called one (too few requests), if so.
    pub guarded: Option<String>,
}

/// The pure decision: whether `rule` is breached for `slo` given the
/// counts of its long and short windows and the minimum traffic.
pub fn evaluate(
    slo: &Slo,
    rule: &BurnRule,
    long: Counts,
    short: Counts,
    min_requests: u64,
) -> Evaluation {
    let budget = slo.budget();
    let burn = |c: &Counts| c.error_ratio() / budget;
    let (burn_long, burn_short) = (burn(&long), burn(&short));
    let over = burn_long > rule.burn_rate && burn_short > rule.burn_rate;
    let guarded = (over && long.total < min_requests as f64).then(|| {
        format!(
            "{} requests in the long window, fewer than min-requests = {min_requests}",
            long.total
        )
    });
    Evaluation {
        slo: slo.name.clone(),
        rule: rule.name.clone(),
        severity: rule.severity,
        long,
        short,
        burn_long,
        burn_short,
        threshold: rule.burn_rate,
        breached: over && guarded.is_none(),
        guarded,
    }
}

/// The counts of `slo` over `[from, to)` from the gateway's series in
/// `store`. Latency: requests within the threshold are the `le` bucket
/// at the threshold; when the threshold is not a bucket bound, the count
/// is interpolated linearly between the bounds around it (the gateway's
/// buckets include the SLO thresholds it is configured with, so this is
/// the exception).
pub fn counts(store: &Store, slo: &Slo, from: Millis, to: Millis) -> Result<Counts, TsdbError> {
    let mut matchers = Vec::new();
    if let Some(v) = &slo.variant {
        matchers.push(("variant".to_owned(), v.clone()));
    }
    match slo.objective {
        Objective::Availability => {
            let selector = Selector {
                name: REQUESTS.to_owned(),
                matchers: matchers.clone(),
            };
            let total = store.increase(&selector, from, to)?;
            let bad = store.increase(&selector.with("code", "5xx"), from, to)?;
            Ok(Counts { total, bad })
        }
        Objective::Latency { threshold } => {
            let buckets = store.bucket_increases(DURATION, &matchers, from, to)?;
            let total = buckets.last().map_or(0.0, |b| b.1);
            let good = within(&buckets, threshold.as_secs_f64());
            Ok(Counts {
                total,
                bad: (total - good).max(0.0),
            })
        }
    }
}

/// How many observations of a cumulative histogram are at most `x`.
pub fn within(buckets: &[(f64, f64)], x: f64) -> f64 {
    let (mut prev_bound, mut prev_count) = (0.0, 0.0);
    for &(bound, count) in buckets {
        let count = count.max(prev_count);
        if (bound - x).abs() <= 1e-12 * x.abs().max(1.0) {
            return count;
        }
        if bound > x {
            if bound.is_infinite() {
                return prev_count;
            }
            let share = (x - prev_bound) / (bound - prev_bound);
            return prev_count + (count - prev_count) * share.clamp(0.0, 1.0);
        }
        prev_bound = bound;
        prev_count = count;
    }
    prev_count
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition does not hold (and never fired since it last did).
    Inactive,
    /// The condition holds, not yet for `for`.
    Pending,
    /// The condition has held for `for`: delivered.
    Firing,
    /// It fired and the condition no longer holds: delivered.
    Resolved,
}

impl AlertState {
    /// Its name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    /// The state named `s` (`inactive` for anything unknown).
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => AlertState::Pending,
            "firing" => AlertState::Firing,
            "resolved" => AlertState::Resolved,
            _ => AlertState::Inactive,
        }
    }
}

/// One SLO's alert for one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The SLO.
    pub slo: String,
    /// The rule.
    pub rule: String,
    /// Its state.
    pub state: AlertState,
    /// Since when it is in that state.
    pub since: Millis,
}

impl Alert {
    /// A new, inactive alert.
    pub fn new(slo: &str, rule: &str, now: Millis) -> Self {
        Alert {
            slo: slo.to_owned(),
            rule: rule.to_owned(),
            state: AlertState::Inactive,
            since: now,
        }
    }

    /// The state after an evaluation at `now` found the condition
    /// `breached`, with `hold` the time it must hold before it fires.
    /// Returns the new state when it changed.
    pub fn step(&mut self, breached: bool, now: Millis, hold: Duration) -> Option<AlertState> {
        use AlertState::*;
        let held = now - self.since >= hold.as_millis() as Millis;
        let next = match (self.state, breached) {
            (Inactive | Resolved, true) if hold.is_zero() => Firing,
            (Inactive | Resolved, true) => Pending,
            (Pending, true) if held => Firing,
            (Pending, true) => Pending,
            (Pending, false) => Inactive,
            (Firing, true) => Firing,
            (Firing, false) => Resolved,
            (Inactive, false) => Inactive,
            (Resolved, false) => Resolved,
        };
        (next != self.state).then(|| {
            self.state = next;
            self.since = now;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slo(target: f64) -> Slo {
        Slo {
            name: "availability".into(),
            objective: Objective::Availability,
            target,
            variant: None,
        }
    }

    #[test]
    fn workbook_windows_scale_with_the_period() {
        let rules = workbook_rules(Duration::from_secs(30 * 86_400));
        assert_eq!(rules[0].long, Duration::from_secs(3600));
        assert_eq!(rules[0].short, Duration::from_secs(300));
        assert_eq!(rules[2].long, Duration::from_secs(3 * 86_400));
        let rules = workbook_rules(Duration::from_secs(6 * 3600));
        assert_eq!(rules[0].long, Duration::from_secs(30));
        assert_eq!(rules[0].short, Duration::from_millis(2500));
    }

    /// The workbook's example: a 99.9 % SLO, 1.44 % errors in both
    /// windows is a burn rate of 14.4 — exactly the threshold, not above.
    #[test]
    fn burn_rate_must_exceed_the_threshold_in_both_windows() {
        let rule = &workbook_rules(Duration::from_secs(30 * 86_400))[0];
        let c = |bad, total| Counts { bad, total };
        let e = evaluate(&slo(0.999), rule, c(144.0, 10_000.0), c(20.0, 1000.0), 20);
        assert!((e.burn_long - 14.4).abs() < 1e-9);
        assert!(!e.breached);
        let e = evaluate(&slo(0.999), rule, c(150.0, 10_000.0), c(20.0, 1000.0), 20);
        assert!(e.breached, "{e:?}");
        // The short window recovered: no alert.
        let e = evaluate(&slo(0.999), rule, c(150.0, 10_000.0), c(1.0, 1000.0), 20);
        assert!(!e.breached);
    }

    #[test]
    fn a_handful_of_requests_never_alerts() {
        let rule = &workbook_rules(Duration::from_secs(30 * 86_400))[0];
        let c = |bad, total| Counts { bad, total };
        let e = evaluate(&slo(0.999), rule, c(3.0, 5.0), c(3.0, 5.0), 20);
        assert!(!e.breached);
        assert!(e.guarded.is_some());
        let e = evaluate(&slo(0.999), rule, c(3.0, 20.0), c(3.0, 5.0), 20);
        assert!(e.breached);
    }

    #[test]
    fn alerts_go_pending_firing_resolved() {
        let hold = Duration::from_secs(10);
        let mut a = Alert::new("a", "page-fast", 0);
        assert_eq!(a.step(false, 1_000, hold), None);
        assert_eq!(a.step(true, 2_000, hold), Some(AlertState::Pending));
        assert_eq!(a.step(true, 5_000, hold), None);
        assert_eq!(a.step(true, 12_000, hold), Some(AlertState::Firing));
        assert_eq!(a.step(true, 13_000, hold), None);
        assert_eq!(a.step(false, 14_000, hold), Some(AlertState::Resolved));
        assert_eq!(a.step(false, 15_000, hold), None);
        // A pending alert that stops holding never fired.
        assert_eq!(a.step(true, 16_000, hold), Some(AlertState::Pending));
        assert_eq!(a.step(false, 17_000, hold), Some(AlertState::Inactive));
        // With no hold it fires at once.
        assert_eq!(
            a.step(true, 18_000, Duration::ZERO),
            Some(AlertState::Firing)
        );
    }

    #[test]
    fn within_reads_and_interpolates_buckets() {
        let b = [
            (0.1, 50.0),
            (0.25, 80.0),
            (0.5, 90.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(within(&b, 0.25), 80.0);
        assert_eq!(within(&b, 0.05), 25.0);
        assert!((within(&b, 0.375) - 85.0).abs() < 1e-9);
        assert_eq!(within(&b, 10.0), 90.0);
    }

    #[test]
    fn counts_come_from_the_gateway_series() {
        use crate::tsdb::{Retention, Sample, SeriesKey, SeriesKind};
        let mut store = Store::in_memory(Retention::default()).unwrap();
        let req = |code: &str, v: f64| Sample {
            key: SeriesKey::new(REQUESTS, [("variant", "stable"), ("code", code)]),
            kind: SeriesKind::Counter,
            value: v,
        };
        store
            .append(0, &[req("2xx", 0.0), req("5xx", 0.0)], false)
            .unwrap();
        store
            .append(1_000, &[req("2xx", 95.0), req("5xx", 5.0)], false)
            .unwrap();
        let c = counts(&store, &slo(0.99), 0, 2_000).unwrap();
        assert_eq!(
            c,
            Counts {
                total: 100.0,
                bad: 5.0
            }
        );
    }
}
