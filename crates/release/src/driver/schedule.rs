//! When requests go: the two workload models.
//!
//! - **Open**: arrivals follow a schedule whatever the server does. The
//!   schedule is a list of stages, each holding the arrival rate constant or
//!   ramping it linearly from one rate to another; request `i` is due at the
//!   time `t` where the expected number of arrivals since the start, the
//!   integral of the rate, reaches `i`. A constant rate `r` gives `i / r`.
//! - **Closed**: a fixed number of users, each sending a request, waiting
//!   for its response, thinking, and sending the next, until the duration
//!   is over. Latency runs from each send; the rate is whatever the server
//!   allows, which is what the model measures (and why it hides stalls the
//!   open model shows).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One stage of an open workload: for `duration`, the arrival rate goes
/// linearly from `from` to `to` requests per second (equal for a constant
/// rate; 0 is allowed at either end, so a ramp can start from nothing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateStage {
    /// How long the stage lasts.
    #[serde(with = "text_duration")]
    pub duration: Duration,
    /// The rate at the stage's start, in requests per second.
    pub from: f64,
    /// The rate at the stage's end.
    pub to: f64,
}

impl RateStage {
    /// A constant `rate` for `duration`.
    pub fn constant(rate: f64, duration: Duration) -> Self {
        Self {
            duration,
            from: rate,
            to: rate,
        }
    }

    /// The requests the stage holds: the integral of its rate.
    fn arrivals(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.duration.as_secs_f64()
    }
}

/// How the load is offered.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Arrivals on a schedule of stages, one after the other.
    Open {
        /// The stages, in order; their durations add up to the run's.
        stages: Vec<RateStage>,
    },
    /// `users` users, each on its own keep-alive connection, sending one
    /// request at a time for `duration`, pausing `think` after each
    /// response.
    Closed {
        /// The virtual users (1 to 1024).
        users: usize,
        /// The pause between a response and the user's next request.
        think: Duration,
        /// No request is sent this long after the start or later.
        duration: Duration,
    },
}

impl Workload {
    /// An open workload at a constant `rate` for `duration`.
    pub fn constant(rate: f64, duration: Duration) -> Self {
        Self::Open {
            stages: vec![RateStage::constant(rate, duration)],
        }
    }

    /// How long requests are sent for.
    pub fn duration(&self) -> Duration {
        match self {
            Self::Open { stages } => stages.iter().map(|s| s.duration).sum(),
            Self::Closed { duration, .. } => *duration,
        }
    }
}

/// A checked workload, as the tally reads it.
#[derive(Debug, Clone)]
pub(super) enum Schedule {
    Open(Arrivals),
    Closed {
        users: usize,
        think: Duration,
        duration: Duration,
    },
}

/// The compiled stages of an open workload.
#[derive(Debug, Clone)]
pub(super) struct Arrivals {
    stages: Vec<Compiled>,
    /// The requests due within the workload's duration, capped by the
    /// run's maximum.
    pub(super) planned: u64,
    /// The mean rate over the whole duration.
    pub(super) mean_rate: f64,
}

#[derive(Debug, Clone)]
struct Compiled {
    /// Seconds from the run's start to the stage's.
    start: f64,
    length: f64,
    from: f64,
    to: f64,
    /// Arrivals due before the stage.
    first: f64,
    /// Arrivals due within it.
    count: f64,
}

impl Arrivals {
    /// Compiles checked stages (finite, non-negative rates, some arrivals).
    pub(super) fn new(stages: &[RateStage], max_requests: u64) -> Self {
        let mut compiled = Vec::with_capacity(stages.len());
        let (mut start, mut first) = (0.0, 0.0);
        for stage in stages {
            let count = stage.arrivals();
            compiled.push(Compiled {
                start,
                length: stage.duration.as_secs_f64(),
                from: stage.from,
                to: stage.to,
                first,
                count,
            });
            start += stage.duration.as_secs_f64();
            first += count;
        }
        Self {
            stages: compiled,
            planned: whole_arrivals(first).min(max_requests),
            mean_rate: if start > 0.0 { first / start } else { 0.0 },
        }
    }

    /// When request `index` (below `planned`) is due, after the start.
    pub(super) fn due(&self, index: u64) -> Duration {
        let i = index as f64;
        let mut with_arrivals = self.stages.iter().filter(|s| s.count > 0.0);
        let stage = with_arrivals
            .clone()
            .find(|s| s.first + s.count > i)
            .or_else(|| with_arrivals.next_back())
            .expect("a checked schedule has arrivals");
        let k = (i - stage.first).max(0.0);
        let into = if k == 0.0 {
            0.0
        } else if (stage.to - stage.from).abs() <= f64::EPSILON * stage.from.abs().max(1.0) {
            k / stage.from
        } else {
            // from·τ + (to − from)·τ² / (2·length) = k, solved in the form
            // that stays exact when the rate barely changes.
            let slope = (stage.to - stage.from) / stage.length;
            let root = (stage.from * stage.from + 2.0 * slope * k).max(0.0).sqrt();
            2.0 * k / (stage.from + root)
        };
        Duration::from_secs_f64((stage.start + into.min(stage.length)).max(0.0))
    }
}

/// How many requests are due among `arrivals` expected ones (request `i` is
/// due when `i` have arrived, so request 0 is due at the start).
fn whole_arrivals(arrivals: f64) -> u64 {
    // A product like 100.0 * 0.3 is often an integer computed with a
    // rounding error (30.000000000000004): do not plan a request for it.
    let rounded = arrivals.round();
    let count = if (arrivals - rounded).abs() <= 1e-9 * rounded.max(1.0) {
        rounded
    } else {
        arrivals.ceil()
    };
    (count as u64).max(1)
}

/// Durations in a stage as human text (`30s`, `1m 30s`) or as seconds.
mod text_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Seconds(f64),
        }
        match Either::deserialize(d)? {
            Either::Text(t) => humantime::parse_duration(&t).map_err(serde::de::Error::custom),
            Either::Seconds(s) => Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due_times(stages: &[RateStage], max: u64) -> Vec<f64> {
        let arrivals = Arrivals::new(stages, max);
        (0..arrivals.planned)
            .map(|i| arrivals.due(i).as_secs_f64())
            .collect()
    }

    #[test]
    fn planned_requests_count_the_due_times_inside_the_duration() {
        let check = |rate, millis, max, expect| {
            let stage = RateStage::constant(rate, Duration::from_millis(millis));
            assert_eq!(
                Arrivals::new(&[stage], max).planned,
                expect,
                "rate {rate}, {millis} ms, max {max}"
            );
        };
        check(100.0, 300, 1000, 30);
        check(200.0, 250, 1000, 50);
        check(200.0, 250, 20, 20);
        check(3.0, 1000, 1000, 3);
        check(2.5, 1000, 1000, 3);
        check(0.5, 1000, 1000, 1);
        check(1e9, 1000, 7, 7);
        check(1e-12, 1000, 7, 1);
    }

    #[test]
    fn a_constant_rate_spaces_requests_evenly() {
        let due = due_times(&[RateStage::constant(4.0, Duration::from_secs(1))], 100);
        assert_eq!(due, [0.0, 0.25, 0.5, 0.75]);
    }

    #[test]
    fn a_ramp_from_nothing_packs_requests_towards_its_end() {
        // 0 → 20/s over 1 s: 10 arrivals; the k-th is due at sqrt(k/10) s.
        let due = due_times(
            &[RateStage {
                duration: Duration::from_secs(1),
                from: 0.0,
                to: 20.0,
            }],
            100,
        );
        assert_eq!(due.len(), 10);
        for (k, t) in due.iter().enumerate() {
            let expect = (k as f64 / 10.0).sqrt();
            assert!((t - expect).abs() < 1e-9, "request {k}: {t} vs {expect}");
        }
    }

    #[test]
    fn steps_follow_each_other_and_empty_stages_are_pauses() {
        let stages = [
            RateStage::constant(2.0, Duration::from_secs(1)),
            RateStage::constant(0.0, Duration::from_secs(2)),
            RateStage::constant(4.0, Duration::from_secs(1)),
            // A ramp down: 4 → 0 over 1 s holds 2 arrivals, due at 4 s and
            // at the τ where 4τ − 2τ² = 1.
            RateStage {
                duration: Duration::from_secs(1),
                from: 4.0,
                to: 0.0,
            },
        ];
        let due = due_times(&stages, 100);
        let ramp = 1.0 - 0.5f64.sqrt();
        let expect = [0.0, 0.5, 3.0, 3.25, 3.5, 3.75, 4.0, 4.0 + ramp];
        assert_eq!(due.len(), expect.len(), "{due:?}");
        for (t, e) in due.iter().zip(expect) {
            assert!((t - e).abs() < 1e-9, "{due:?} vs {expect:?}");
        }
        assert!((Arrivals::new(&stages, 100).mean_rate - 8.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn due_times_never_go_back_nor_leave_the_duration() {
        let stages = [
            RateStage {
                duration: Duration::from_millis(700),
                from: 3.0,
                to: 1000.0,
            },
            RateStage::constant(0.0, Duration::from_millis(300)),
            RateStage {
                duration: Duration::from_millis(1300),
                from: 900.0,
                to: 7.0,
            },
        ];
        let due = due_times(&stages, 1_000_000);
        assert!(due.windows(2).all(|w| w[0] <= w[1]));
        assert!(due.iter().all(|t| *t < 2.3), "{:?}", due.last());
        assert!(!due.iter().any(|t| (0.7..1.0).contains(t)), "the pause");
    }

    #[test]
    fn stages_read_durations_as_text_or_seconds() {
        let stage: RateStage =
            serde_json::from_str(r#"{"duration": "1m 30s", "from": 1, "to": 2}"#).unwrap();
        assert_eq!(stage.duration, Duration::from_secs(90));
        let stage: RateStage =
            serde_json::from_str(r#"{"duration": 2.5, "from": 1, "to": 2}"#).unwrap();
        assert_eq!(stage.duration, Duration::from_millis(2500));
        assert_eq!(serde_json::to_value(stage).unwrap()["duration"], "2s 500ms");
    }
}
