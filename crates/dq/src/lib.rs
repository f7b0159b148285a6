//! # alluvium-dq
//!
//! Data-quality rules for pipelines on the Alluvium engine: severities (warn, drop, fail),
//! thresholds, quarantine and results tables.
//!
//! Work in progress (issue 6); this crate currently only defines the vocabulary.

#![warn(missing_docs)]

/// What happens to a row that breaks a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Count it, keep the row.
    Warn,
    /// Quarantine the row with the rule's name.
    Drop,
    /// Stop before the epoch commits.
    Fail,
}
