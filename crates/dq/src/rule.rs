//! What a rule is, apart from what it checks: its name, the table it guards, its severity and
//! its threshold — and how a count of failures becomes a verdict.
//!
//! A rule's *severity* says what happens to a failing row: `warn` counts it, `drop`
//! quarantines it, `fail` stops the pipeline before the epoch commits. A *threshold*
//! (`max_failed_rows`, `max_failed_ratio` of the rows checked in the epoch) tolerates some
//! failures: within it a `fail` rule passes, past it any rule does not pass and — unless the
//! rule is declared with `escalate = false` — stops the pipeline like a `fail` rule.

use serde::{Deserialize, Serialize};

use alluvium_engine::Epoch;

use crate::result::DqResult;

/// What happens to a row that breaks a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Count it, keep the row.
    Warn,
    /// Quarantine the row with the rule's name.
    Drop,
    /// Stop before the epoch commits.
    Fail,
}

impl Severity {
    /// `warn`, `drop` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warn => "warn",
            Severity::Drop => "drop",
            Severity::Fail => "fail",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many failures a rule tolerates per epoch. Both limits may be set; the stricter wins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// At most this many failed rows.
    pub max_failed_rows: Option<i64>,
    /// At most this share (0..=1) of the rows checked.
    pub max_failed_ratio: Option<f64>,
}

impl Threshold {
    /// No tolerance: a rule passes only when nothing failed.
    pub const NONE: Threshold = Threshold {
        max_failed_rows: None,
        max_failed_ratio: None,
    };

    /// At most `n` failed rows.
    pub fn rows(n: i64) -> Self {
        Threshold {
            max_failed_rows: Some(n),
            max_failed_ratio: None,
        }
    }

    /// At most `ratio` of the rows checked.
    pub fn ratio(ratio: f64) -> Self {
        Threshold {
            max_failed_rows: None,
            max_failed_ratio: Some(ratio),
        }
    }

    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.max_failed_rows.is_some() || self.max_failed_ratio.is_some()
    }

    /// The failures allowed among `checked` rows, `None` when no limit is set.
    pub fn allowed(&self, checked: i64) -> Option<i64> {
        let by_ratio = self
            .max_failed_ratio
            .map(|r| (r * checked.max(0) as f64).floor() as i64);
        match (self.max_failed_rows, by_ratio) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A rule's identity and policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleDef {
    /// The table it guards (`silver.orders`, ...).
    pub table: String,
    /// The rule's name, unique within its table; quarantine rows carry it.
    pub name: String,
    /// What happens to a failing row.
    pub severity: Severity,
    /// Failures tolerated per epoch.
    pub threshold: Threshold,
    /// Whether failures past the threshold stop the pipeline (default `true`).
    pub escalate: bool,
}

impl RuleDef {
    /// A rule without threshold that escalates.
    pub fn new(table: impl Into<String>, name: impl Into<String>, severity: Severity) -> Self {
        RuleDef {
            table: table.into(),
            name: name.into(),
            severity,
            threshold: Threshold::NONE,
            escalate: true,
        }
    }

    /// The same rule with `threshold`.
    pub fn with_threshold(mut self, threshold: Threshold) -> Self {
        self.threshold = threshold;
        self
    }

    /// The same rule, reporting (`passed = false`) instead of stopping past its threshold.
    pub fn report_only(mut self) -> Self {
        self.escalate = false;
        self
    }

    /// The verdict on `failed` of `checked` rows in `epoch`.
    pub fn result(&self, epoch: Epoch, checked: i64, failed: i64, evaluated_at: i64) -> DqResult {
        let allowed = self.threshold.allowed(checked);
        DqResult {
            epoch,
            table_name: self.table.clone(),
            rule: self.name.clone(),
            severity: self.severity,
            checked,
            failed,
            threshold: allowed,
            passed: failed <= allowed.unwrap_or(0),
            stops: self.stops(checked, failed),
            evaluated_at,
        }
    }

    /// Whether `failed` of `checked` rows stop the pipeline.
    pub fn stops(&self, checked: i64, failed: i64) -> bool {
        let allowed = self.threshold.allowed(checked);
        if failed <= allowed.unwrap_or(0) {
            return false;
        }
        match self.severity {
            Severity::Fail => true,
            // Past a threshold a warn/drop rule escalates (when asked to).
            Severity::Warn | Severity::Drop => allowed.is_some() && self.escalate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_escalation() {
        let warn = RuleDef::new("t", "r", Severity::Warn);
        assert!(
            !warn.stops(100, 100),
            "a warn rule without threshold never stops"
        );
        let r = warn.result(1, 100, 3, 0);
        assert!(!r.passed && !r.stops && r.threshold.is_none());

        let five_percent = warn.clone().with_threshold(Threshold::ratio(0.05));
        assert!(!five_percent.stops(100, 5));
        assert!(five_percent.stops(100, 6));
        assert_eq!(five_percent.result(1, 100, 6, 0).threshold, Some(5));
        assert!(!five_percent.clone().report_only().stops(100, 6));
        assert!(
            !five_percent
                .clone()
                .report_only()
                .result(1, 100, 6, 0)
                .passed
        );

        let fail = RuleDef::new("t", "r", Severity::Fail);
        assert!(fail.stops(10, 1));
        assert!(!fail.stops(10, 0));
        let tolerant = fail.with_threshold(Threshold {
            max_failed_rows: Some(3),
            max_failed_ratio: Some(0.5),
        });
        assert_eq!(
            tolerant.threshold.allowed(4),
            Some(2),
            "the stricter limit wins"
        );
        assert!(!tolerant.stops(4, 2));
        assert!(tolerant.stops(4, 3));
        assert!(tolerant.stops(100, 4));
    }
}
