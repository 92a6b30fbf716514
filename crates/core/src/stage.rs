//! The six stages of the DevOps-for-data-science maturity model, in the order
//! a team climbs them. This module owns their names and order; what each stage
//! does lives in the stage crates.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One step of the maturity model. The derived order is the climbing order:
/// `Iac < Ci < Cd < Release < Apm < Loadtest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Infrastructure as Code: the environment is declared and rebuildable.
    Iac,
    /// Continuous Integration and automated testing.
    Ci,
    /// Continuous Delivery: package, deploy to staging, smoke-test.
    Cd,
    /// Release management: versions, canary, shadow, promotion, rollback.
    Release,
    /// Application Performance Monitoring.
    Apm,
    /// Load testing and auto-scale.
    Loadtest,
}

impl Stage {
    /// Every stage, in climbing order.
    pub const ALL: [Stage; 6] = [
        Stage::Iac,
        Stage::Ci,
        Stage::Cd,
        Stage::Release,
        Stage::Apm,
        Stage::Loadtest,
    ];

    /// The key of the stage's table in `mlops.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Iac => "iac",
            Stage::Ci => "ci",
            Stage::Cd => "cd",
            Stage::Release => "release",
            Stage::Apm => "apm",
            Stage::Loadtest => "loadtest",
        }
    }

    /// The human title of the stage, as the maturity model names it.
    pub fn title(self) -> &'static str {
        match self {
            Stage::Iac => "Infrastructure as Code",
            Stage::Ci => "Continuous Integration and automated testing",
            Stage::Cd => "Continuous Delivery",
            Stage::Release => "Release Management",
            Stage::Apm => "Application Performance Monitoring",
            Stage::Loadtest => "Load testing and auto-scale",
        }
    }

    /// 1-based position on the maturity ladder.
    pub fn level(self) -> u8 {
        self as u8 + 1
    }

    /// The stage before this one, if any.
    pub fn previous(self) -> Option<Stage> {
        let i = self as usize;
        (i > 0).then(|| Stage::ALL[i - 1])
    }

    /// The stage after this one, if any.
    pub fn next(self) -> Option<Stage> {
        Stage::ALL.get(self as usize + 1).copied()
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a stage name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage `{0}`; the stages are iac, ci, cd, release, apm, loadtest")]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.name() == s)
            .ok_or_else(|| UnknownStage(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_names_round_trip() {
        for (i, stage) in Stage::ALL.into_iter().enumerate() {
            assert_eq!(stage.level() as usize, i + 1);
            assert_eq!(stage.name().parse::<Stage>(), Ok(stage));
        }
        assert!(Stage::Iac < Stage::Loadtest);
        assert_eq!(Stage::Ci.previous(), Some(Stage::Iac));
        assert_eq!(Stage::Iac.previous(), None);
        assert_eq!(Stage::Loadtest.next(), None);
        assert!("prod".parse::<Stage>().is_err());
    }
}
