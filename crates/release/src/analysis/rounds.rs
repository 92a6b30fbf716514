//! The step-level controller logic: a pure state machine from a sequence of
//! analysis verdicts (one per round) to continue, promote, roll back or pause.
//!
//! After each round's verdict the counters move — a pass extends the pass
//! streak and ends the failure streak; a fail extends the failure streak and
//! the failure total and ends the pass streak; an inconclusive round adds to
//! the inconclusive total and ends the pass streak, leaving the failure
//! streak as it was (no evidence either way) — and the first rule that holds
//! decides:
//!
//! 1. **Roll back** when the failures counted by `failure-count`
//!    (`total`, the default: every failing round, as Argo Rollouts counts
//!    for `failureLimit`; `consecutive`: the current failure streak) exceed
//!    `failure-limit`. With
//!    `failure-limit = 0` (Argo's default) the first failing round rolls back.
//! 2. **`on-inconclusive`** (pause, the default, as Argo does; or roll back)
//!    when the inconclusive rounds in total exceed `inconclusive-limit`.
//! 3. **Promote early** when the pass streak reaches `promote-after-passes`.
//! 4. At the last planned round (`rounds`, Argo's `count`): promote on a
//!    pass, roll back on a fail, `on-inconclusive` on an inconclusive round —
//!    a candidate is promoted only on the evidence of a passing round.
//! 5. Otherwise **continue** with the next round.
//!
//! Promote, roll back and pause end the step: a tracker asked again repeats
//! its decision and counts nothing. The state is serializable so a
//! controller can persist it between rounds and resume after a restart.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use super::StepVerdict;

/// How a step turns round verdicts into a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RoundPolicy {
    /// Planned rounds; the last one decides if nothing did earlier.
    pub rounds: NonZeroU32,
    /// Failing rounds tolerated; one more rolls back.
    pub failure_limit: u32,
    /// Whether `failure-limit` bounds the failure streak or every failure.
    pub failure_count: FailureCount,
    /// Consecutive passing rounds that promote before the last round.
    pub promote_after_passes: Option<NonZeroU32>,
    /// Inconclusive rounds tolerated in total; one more triggers
    /// `on-inconclusive`.
    pub inconclusive_limit: u32,
    /// What too many inconclusive rounds (or an inconclusive last round) do.
    pub on_inconclusive: InconclusiveAction,
}

impl Default for RoundPolicy {
    /// Five rounds, no failure tolerated, no early promotion, and three
    /// inconclusive rounds tolerated before pausing — more than Argo's
    /// default of none, because the first rounds of a low-traffic canary are
    /// usually below the minimum sample size.
    fn default() -> Self {
        Self {
            rounds: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            failure_limit: 0,
            failure_count: FailureCount::Total,
            promote_after_passes: None,
            inconclusive_limit: 3,
            on_inconclusive: InconclusiveAction::Pause,
        }
    }
}

/// Which failures `failure-limit` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureCount {
    /// The current streak of failing rounds; a passing round resets it.
    Consecutive,
    /// Every failing round of the step (Argo Rollouts' `failureLimit`).
    #[default]
    Total,
}

/// What an inconclusive analysis leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InconclusiveAction {
    /// Stop and wait for a human (the candidate keeps its traffic share).
    #[default]
    Pause,
    /// Treat it as a failure.
    Rollback,
}

/// What the controller does after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepAction {
    /// Run another round.
    Continue,
    /// The candidate becomes stable.
    Promote,
    /// The candidate is removed, stable takes all traffic.
    Rollback,
    /// Stop and wait for a human.
    Pause,
}

impl StepAction {
    /// Whether the action ends the step.
    #[must_use]
    pub fn is_final(self) -> bool {
        self != Self::Continue
    }
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RoundDecision {
    /// What to do.
    pub action: StepAction,
    /// The round (1-based) whose verdict decided it.
    pub round: u32,
    /// A sentence for humans.
    pub reason: String,
}

/// The counters of a step's rounds so far.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RoundState {
    /// Rounds recorded.
    pub round: u32,
    /// The current streak of passing rounds.
    pub consecutive_passes: u32,
    /// The current streak of failing rounds.
    pub consecutive_failures: u32,
    /// Failing rounds in total.
    pub failures: u32,
    /// Inconclusive rounds in total.
    pub inconclusives: u32,
    /// The final decision, once made.
    pub decided: Option<RoundDecision>,
}

/// The state machine: a policy and the counters of the rounds so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundTracker {
    policy: RoundPolicy,
    state: RoundState,
}

impl RoundTracker {
    /// A step with no rounds yet.
    #[must_use]
    pub fn new(policy: RoundPolicy) -> Self {
        Self::resume(policy, RoundState::default())
    }

    /// A step resumed from persisted counters.
    #[must_use]
    pub fn resume(policy: RoundPolicy, state: RoundState) -> Self {
        Self { policy, state }
    }

    /// The decision after feeding `verdicts` to a new tracker in order (the
    /// last decision; `Continue` at round 0 for none).
    #[must_use]
    pub fn replay(policy: RoundPolicy, verdicts: &[StepVerdict]) -> RoundDecision {
        let mut tracker = Self::new(policy);
        let mut last = RoundDecision {
            action: StepAction::Continue,
            round: 0,
            reason: "no round yet".to_owned(),
        };
        for &verdict in verdicts {
            last = tracker.record(verdict);
        }
        last
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &RoundPolicy {
        &self.policy
    }

    /// The counters, to persist.
    #[must_use]
    pub fn state(&self) -> &RoundState {
        &self.state
    }

    /// Records one round's verdict and decides (the rules of the module
    /// docs). After a final decision, repeats it and records nothing.
    pub fn record(&mut self, verdict: StepVerdict) -> RoundDecision {
        if let Some(decided) = &self.state.decided {
            return decided.clone();
        }
        let s = &mut self.state;
        s.round += 1;
        match verdict {
            StepVerdict::Pass => {
                s.consecutive_passes += 1;
                s.consecutive_failures = 0;
            }
            StepVerdict::Fail => {
                s.consecutive_passes = 0;
                s.consecutive_failures += 1;
                s.failures += 1;
            }
            StepVerdict::Inconclusive => {
                s.consecutive_passes = 0;
                s.inconclusives += 1;
            }
        }
        let (action, reason) = self.decide(verdict);
        let decision = RoundDecision {
            action,
            round: self.state.round,
            reason,
        };
        if action.is_final() {
            self.state.decided = Some(decision.clone());
        }
        decision
    }

    fn decide(&self, verdict: StepVerdict) -> (StepAction, String) {
        let (p, s) = (&self.policy, &self.state);
        let inconclusive_action = match p.on_inconclusive {
            InconclusiveAction::Pause => StepAction::Pause,
            InconclusiveAction::Rollback => StepAction::Rollback,
        };
        let (counted, how) = match p.failure_count {
            FailureCount::Consecutive => (s.consecutive_failures, "consecutive failing"),
            FailureCount::Total => (s.failures, "failing"),
        };
        if counted > p.failure_limit {
            return (
                StepAction::Rollback,
                format!(
                    "{counted} {how} round(s) exceed failure-limit {}",
                    p.failure_limit
                ),
            );
        }
        if s.inconclusives > p.inconclusive_limit {
            return (
                inconclusive_action,
                format!(
                    "{} inconclusive round(s) exceed inconclusive-limit {}",
                    s.inconclusives, p.inconclusive_limit
                ),
            );
        }
        if let Some(n) = p.promote_after_passes
            && s.consecutive_passes >= n.get()
        {
            return (
                StepAction::Promote,
                format!("{} consecutive passing rounds", s.consecutive_passes),
            );
        }
        if s.round >= p.rounds.get() {
            let reason = format!("last planned round ({}) was {verdict}", p.rounds);
            let action = match verdict {
                StepVerdict::Pass => StepAction::Promote,
                StepVerdict::Fail => StepAction::Rollback,
                StepVerdict::Inconclusive => inconclusive_action,
            };
            return (action, reason);
        }
        (
            StepAction::Continue,
            format!("round {} of {} was {verdict}", s.round, p.rounds),
        )
    }
}
