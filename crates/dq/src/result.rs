//! `dq.results` rows: one per rule per table per epoch.

use serde::{Deserialize, Serialize};

use alluvium_engine::Epoch;

use crate::rule::Severity;

/// A row of `dq.results`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DqResult {
    /// The epoch the counts belong to.
    pub epoch: Epoch,
    /// The checked table (`silver.orders`, ...).
    pub table_name: String,
    /// The rule.
    pub rule: String,
    /// `warn`, `drop` or `fail`.
    pub severity: Severity,
    /// Rows checked in the epoch (for rules over a whole collection: its rows at the epoch).
    pub checked: i64,
    /// Rows that failed the rule.
    pub failed: i64,
    /// The failures the rule tolerates among `checked` rows (`None`: no threshold, any
    /// failure makes it not pass).
    pub threshold: Option<i64>,
    /// Whether `failed` is within the threshold.
    pub passed: bool,
    /// Whether this result stops the pipeline before the epoch commits.
    #[serde(default)]
    pub stops: bool,
    /// When the counts were taken (microseconds; metadata, the only wall-clock value).
    pub evaluated_at: i64,
}

impl std::fmt::Display for DqResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rule `{}` ({}) on table `{}` in epoch {}: {} of {} rows failed",
            self.rule, self.severity, self.table_name, self.epoch, self.failed, self.checked
        )?;
        match self.threshold {
            Some(t) => write!(f, " (threshold {t})"),
            None => Ok(()),
        }
    }
}
