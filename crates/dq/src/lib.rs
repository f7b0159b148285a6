//! # alluvium-dq
//!
//! Data quality for pipelines on the Alluvium engine. A pipeline reports, for every record it
//! checks, a [`Check`]: which table it was checked for, and each rule it failed. This crate
//! turns those into [`DqResult`] rows — one per rule per table per epoch, the `dq.results`
//! table of the medallion spec (§5) — with the severity and threshold of each rule.
//!
//! Rules with thresholds that stop the pipeline, declarative rule sets and reports follow in
//! a later issue; the counting here is already exact and epoch-aligned.

#![warn(missing_docs)]

mod epoch_counts;

pub use epoch_counts::{dq_results, Check, DqResult, RuleSet};

/// What happens to a row that breaks a rule.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
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
