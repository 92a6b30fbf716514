//! The statuses of runs, stages and steps, shared by the executor, the
//! ledger and every report. Their kebab-case names are part of the JSON
//! output contract.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a step ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Not finished (maybe not started).
    Pending,
    /// Ran and succeeded.
    Passed,
    /// Ran and failed.
    Failed,
    /// Skipped: the same definition and inputs passed before and the outputs
    /// are intact.
    Cached,
    /// Not run because an earlier stage or a dependency did not pass.
    Gated,
    /// Killed at its timeout (after its retries).
    TimedOut,
    /// Stopped by cancellation.
    Cancelled,
}

impl StepStatus {
    /// Every status.
    pub const ALL: [StepStatus; 7] = [
        StepStatus::Pending,
        StepStatus::Passed,
        StepStatus::Failed,
        StepStatus::Cached,
        StepStatus::Gated,
        StepStatus::TimedOut,
        StepStatus::Cancelled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Passed => "passed",
            StepStatus::Failed => "failed",
            StepStatus::Cached => "cached",
            StepStatus::Gated => "gated",
            StepStatus::TimedOut => "timed-out",
            StepStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the step counts as evidence that it passed.
    pub fn is_success(self) -> bool {
        matches!(self, StepStatus::Passed | StepStatus::Cached)
    }
}

/// How a run ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// In progress, or interrupted without a chance to record an end.
    Running,
    /// Every selected step passed or was cached.
    Passed,
    /// A step failed, timed out or was gated.
    Failed,
    /// Stopped by cancellation.
    Cancelled,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Running,
        RunStatus::Passed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Passed => "passed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// The state of a whole stage within a run, derived from its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageStatus {
    /// Some step has not finished.
    Pending,
    /// Every step passed or was cached.
    Passed,
    /// A step failed or timed out.
    Failed,
    /// Not run because an earlier stage did not pass.
    Gated,
    /// Stopped by cancellation.
    Cancelled,
}

impl StageStatus {
    /// Folds the statuses of a stage's steps.
    pub fn of_steps(steps: impl IntoIterator<Item = StepStatus>) -> StageStatus {
        let (mut failed, mut cancelled, mut pending, mut gated, mut any) =
            (false, false, false, false, false);
        for s in steps {
            any = true;
            match s {
                StepStatus::Failed | StepStatus::TimedOut => failed = true,
                StepStatus::Cancelled => cancelled = true,
                StepStatus::Pending => pending = true,
                StepStatus::Gated => gated = true,
                StepStatus::Passed | StepStatus::Cached => {}
            }
        }
        if failed {
            StageStatus::Failed
        } else if cancelled {
            StageStatus::Cancelled
        } else if pending || !any {
            StageStatus::Pending
        } else if gated {
            StageStatus::Gated
        } else {
            StageStatus::Passed
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Pending => "pending",
            StageStatus::Passed => "passed",
            StageStatus::Failed => "failed",
            StageStatus::Gated => "gated",
            StageStatus::Cancelled => "cancelled",
        }
    }
}

macro_rules! display_and_parse {
    ($t:ty, $all:expr) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $all.into_iter()
                    .find(|x| x.as_str() == s)
                    .ok_or_else(|| format!("unknown status `{s}`"))
            }
        }
    };
}

display_and_parse!(StepStatus, StepStatus::ALL);
display_and_parse!(RunStatus, RunStatus::ALL);

impl fmt::Display for StageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for s in StepStatus::ALL {
            assert_eq!(s.as_str().parse::<StepStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn stage_status_folds_steps() {
        use StepStatus::*;
        assert_eq!(StageStatus::of_steps([Passed, Cached]), StageStatus::Passed);
        assert_eq!(StageStatus::of_steps([Passed, Gated]), StageStatus::Gated);
        assert_eq!(StageStatus::of_steps([Failed, Gated]), StageStatus::Failed);
        assert_eq!(
            StageStatus::of_steps([Passed, Pending]),
            StageStatus::Pending
        );
        assert_eq!(StageStatus::of_steps([TimedOut]), StageStatus::Failed);
        assert_eq!(
            StageStatus::of_steps([Cancelled, Passed]),
            StageStatus::Cancelled
        );
    }
}
