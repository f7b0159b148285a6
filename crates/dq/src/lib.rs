//! # alluvium-dq
//!
//! Data quality for any pipeline on the Alluvium engine: rules, their verdicts per epoch, and
//! a gate that stops the pipeline before a failing epoch commits.
//!
//! ## The idea
//!
//! A rule judges rows, and a verdict is a number: how many of the rows checked in an epoch
//! failed. What follows from a failure is the rule's [`Severity`] — `warn` counts it, `drop`
//! quarantines the row under the rule's name, `fail` stops the pipeline — and its
//! [`Threshold`], past which even a `warn` rule stops it ([`RuleDef`]). Each rule yields one
//! [`DqResult`] per epoch: the `dq.results` table.
//!
//! Two kinds of rules:
//! - **Row rules** ([`RowRules`]): `not_null`, `accepted_values`, `range`, `regex`,
//!   `predicate` (any closure), `freshness`. The pipeline runs them where it has the row
//!   ([`RowRules::check`]), quarantines what a `drop` rule rejects, and reports a [`Check`] per
//!   row and per failure; [`dq_results`] adds the checks up per epoch.
//! - **Collection rules** ([`unique`], [`referential`], [`reconcile`], [`volume`],
//!   [`live_predicate`]): dataflow operators over differential collections, maintained
//!   incrementally.
//!
//! All results go through [`gate`], which counts them into Prometheus metrics
//! ([`metrics::dq_metrics`]) and fails the run on a stopping result while it still holds the
//! epoch. Rules are declared in Rust (builders below) or in TOML ([`DqConfig`]).
//!
//! ```
//! use alluvium_dq::{RowRule, RowRules, RuleDef, Severity, Threshold};
//!
//! struct Order { qty: i64 }
//! let rules = RowRules::new("orders")
//!     .with(RowRule::predicate(
//!         RuleDef::new("orders", "positive_qty", Severity::Drop),
//!         |o: &Order| o.qty > 0,
//!     ))
//!     .with(RowRule::predicate(
//!         RuleDef::new("orders", "small_qty", Severity::Warn)
//!             .with_threshold(Threshold::ratio(0.05)),
//!         |o: &Order| o.qty < 100,
//!     ));
//! assert_eq!(rules.check(&Order { qty: 0 }).dropped_by, Some(0));
//! assert_eq!(rules.check(&Order { qty: 500 }).failed, vec![1]);
//! ```

#![warn(missing_docs)]

mod collection_rules;
mod config;
mod counts;
mod gate;
pub mod metrics;
mod result;
mod row_results;
mod row_rules;
mod rule;

pub use collection_rules::{live_predicate, reconcile, referential, unique, volume};
pub use config::{CheckKind, DqConfig, DqConfigError, RuleConfig};
pub use gate::gate;
pub use result::DqResult;
pub use row_results::{dq_results, Check, RuleSet};
pub use row_rules::{Fields, RowRule, RowRules, RowVerdict, Value};
pub use rule::{RuleDef, Severity, Threshold};
