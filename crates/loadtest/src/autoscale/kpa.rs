//! The `kpa` policy: the decision of Knative's autoscaler
//! (`pkg/autoscaler/scaling`), one observation at a time.
//!
//! From the observed total concurrency (or request rate) over the stable
//! window and over the shorter panic window, and the ready pods `n`
//! (taken as at least 1):
//!
//! - `stable = ⌈observed_stable / target⌉`, `panic = ⌈observed_panic /
//!   target⌉`, each kept within `[⌊n / max_scale_down_rate⌋ (0 when the
//!   revision is not reachable), ⌈max_scale_up_rate · n⌉]`, and raised to
//!   `activation_scale` when above 0;
//! - panic mode starts when `panic / n ≥ panic_threshold` (unclamped), is
//!   extended while that holds, and ends a stable window after it last
//!   held. In panic mode the count is the larger of the two and never goes
//!   down; otherwise it is `stable`;
//! - with a scale-down delay, the count is the highest decided within the
//!   delay.

use std::collections::VecDeque;
use std::time::Duration;

/// The autoscaler's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Kpa {
    /// Concurrency (or requests per second) one replica should carry.
    pub target: f64,
    /// Panic when the panic window asks for this many times the ready pods
    /// (2.0 = 200 %).
    pub panic_threshold: f64,
    /// At most this factor up per decision.
    pub max_scale_up_rate: f64,
    /// At most this factor down per decision.
    pub max_scale_down_rate: f64,
    /// The stable window (and how long panic lasts after it last held).
    pub stable_window: Duration,
    /// Whether the revision receives traffic (an unreachable one may go to
    /// zero at once).
    pub reachable: bool,
    /// The fewest replicas once above zero (1 = off).
    pub activation_scale: i32,
    /// Scale-downs wait this long: the highest count decided within it is
    /// kept (zero = off).
    pub scale_down_delay: Duration,
}

/// One observation at time `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// When, from the start of the scenario.
    pub at: Duration,
    /// Ready pods now.
    pub ready_pods: i32,
    /// The total observed over the stable window.
    pub stable: f64,
    /// The total observed over the panic window.
    pub panic: f64,
}

/// The autoscaler's state between decisions.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    spec: Kpa,
    /// When panic mode was last (re)entered.
    panic_since: Option<Duration>,
    max_panic_pods: i32,
    /// Decisions within the scale-down delay.
    recent: VecDeque<(Duration, i32)>,
}

impl Autoscaler {
    /// An autoscaler out of panic mode.
    pub fn new(spec: Kpa) -> Self {
        Autoscaler {
            spec,
            panic_since: None,
            max_panic_pods: 0,
            recent: VecDeque::new(),
        }
    }

    /// Whether it is in panic mode.
    pub fn panicking(&self) -> bool {
        self.panic_since.is_some()
    }

    /// The desired replica count after `seen`.
    pub fn decide(&mut self, seen: &Observation) -> i32 {
        let s = &self.spec;
        let ready = f64::from(seen.ready_pods.max(1));
        let max_up = (s.max_scale_up_rate * ready).ceil();
        let max_down = if s.reachable {
            (ready / s.max_scale_down_rate).floor()
        } else {
            0.0
        };
        let dspc = (seen.stable / s.target).ceil();
        let dppc = (seen.panic / s.target).ceil();
        let clamp = |x: f64| x.max(max_down).min(max_up) as i32;
        let mut stable = clamp(dspc);
        let mut panic = clamp(dppc);
        if s.activation_scale > 1 {
            if dspc > 0.0 && s.activation_scale > stable {
                stable = s.activation_scale;
            }
            if dppc > 0.0 && s.activation_scale > panic {
                panic = s.activation_scale;
            }
        }
        let over = dppc / ready >= s.panic_threshold;
        match self.panic_since {
            _ if over => self.panic_since = Some(seen.at),
            Some(since) if since + s.stable_window < seen.at => {
                self.panic_since = None;
                self.max_panic_pods = 0;
            }
            _ => {}
        }
        let mut desired = stable;
        if self.panic_since.is_some() {
            desired = desired.max(panic);
            // No scale-down while panicking.
            self.max_panic_pods = self.max_panic_pods.max(desired);
            desired = self.max_panic_pods;
        }
        if !s.scale_down_delay.is_zero() {
            let delay = s.scale_down_delay;
            self.recent.push_back((seen.at, desired));
            while self
                .recent
                .front()
                .is_some_and(|(t, _)| *t + delay <= seen.at)
            {
                self.recent.pop_front();
            }
            desired = self.recent.iter().map(|r| r.1).max().unwrap_or(desired);
        }
        desired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Kpa {
        Kpa {
            target: 10.0,
            panic_threshold: 2.0,
            max_scale_up_rate: 10.0,
            max_scale_down_rate: 2.0,
            stable_window: Duration::from_secs(60),
            reachable: true,
            activation_scale: 1,
            scale_down_delay: Duration::ZERO,
        }
    }

    fn at(s: u64, ready: i32, stable: f64, panic: f64) -> Observation {
        Observation {
            at: Duration::from_secs(s),
            ready_pods: ready,
            stable,
            panic,
        }
    }

    #[test]
    fn scale_down_is_bounded_by_the_rate_and_zero_needs_unreachable() {
        let mut a = Autoscaler::new(spec());
        // 10 ready, nothing observed: at most halved.
        assert_eq!(a.decide(&at(0, 10, 0.0, 0.0)), 5);
        let mut a = Autoscaler::new(Kpa {
            reachable: false,
            ..spec()
        });
        assert_eq!(a.decide(&at(0, 10, 0.0, 0.0)), 0);
    }

    #[test]
    fn a_scale_down_delay_keeps_the_highest_recent_count() {
        let mut a = Autoscaler::new(Kpa {
            scale_down_delay: Duration::from_secs(30),
            max_scale_down_rate: 100.0,
            ..spec()
        });
        assert_eq!(a.decide(&at(0, 5, 50.0, 50.0)), 5);
        assert_eq!(a.decide(&at(10, 5, 10.0, 10.0)), 5);
        assert_eq!(a.decide(&at(29, 5, 10.0, 10.0)), 5);
        assert_eq!(a.decide(&at(31, 5, 10.0, 10.0)), 1);
    }
}
