//! Per-epoch rule counts: the `dq.results` rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use alluvium_engine::epoch::now_micros;
use alluvium_engine::Epoch;
use differential_dataflow::collection::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::Severity;

/// One checked record (`rule: None`) or one failure of a rule (`rule: Some(name)`), for a table.
pub type Check = (String, Option<String>);

/// The rules of each table, in report order, with severity and an optional threshold
/// (maximum failed rows per epoch before the rule does not pass).
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    /// `table → [(rule, severity, max_failed_rows)]`.
    pub tables: BTreeMap<String, Vec<(String, Severity, Option<i64>)>>,
}

impl RuleSet {
    /// Adds a rule of `table`.
    pub fn rule(
        mut self,
        table: &str,
        rule: &str,
        severity: Severity,
        max_failed_rows: Option<i64>,
    ) -> Self {
        self.tables
            .entry(table.into())
            .or_default()
            .push((rule.into(), severity, max_failed_rows));
        self
    }
}

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
    /// Records checked in the epoch.
    pub checked: i64,
    /// Records that failed the rule in the epoch.
    pub failed: i64,
    /// Maximum failed rows for the rule to pass (`None`: any failure fails it).
    pub threshold: Option<i64>,
    /// Whether `failed` is within the threshold.
    pub passed: bool,
    /// When the counts were taken (microseconds; metadata, the only wall-clock value).
    pub evaluated_at: i64,
}

/// Counts `checks` per epoch into `dq.results` rows: for every table with at least one checked
/// record in an epoch, one row per rule of that table (zero failures included). Rows of an
/// epoch appear at that epoch, once its frontier has passed.
pub fn dq_results<'s>(
    checks: VecCollection<'s, Epoch, Check>,
    rules: Arc<RuleSet>,
) -> VecCollection<'s, Epoch, DqResult> {
    checks
        .inner
        .unary_frontier(
            Exchange::new(|((table, _), _, _): &(Check, Epoch, isize)| {
                table.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                    (h ^ b as u64).wrapping_mul(0x100000001b3)
                })
            }),
            "DqResults",
            move |_cap, _info| {
                type Counts = HashMap<String, (i64, HashMap<String, i64>)>;
                let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Counts)> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        for batch in data {
                            for ((table, rule), time, diff) in batch.drain(..) {
                                let entry = pending
                                    .entry(time)
                                    .or_insert_with(|| (cap.delayed(&time, 0), HashMap::new()));
                                let counts = entry.1.entry(table).or_default();
                                match rule {
                                    None => counts.0 += diff as i64,
                                    Some(r) => *counts.1.entry(r).or_default() += diff as i64,
                                }
                            }
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        let epoch = *entry.key();
                        if frontier.less_equal(&epoch) {
                            break;
                        }
                        let (cap, counts) = entry.remove();
                        let evaluated_at = now_micros();
                        let mut session = output.session(&cap);
                        let mut tables: Vec<_> = counts.into_iter().collect();
                        tables.sort_by(|a, b| a.0.cmp(&b.0));
                        for (table, (checked, failures)) in tables {
                            let Some(table_rules) = rules.tables.get(&table) else {
                                continue;
                            };
                            for (rule, severity, threshold) in table_rules {
                                let failed = failures.get(rule).copied().unwrap_or(0);
                                session.give((
                                    DqResult {
                                        epoch,
                                        table_name: table.clone(),
                                        rule: rule.clone(),
                                        severity: *severity,
                                        checked,
                                        failed,
                                        threshold: *threshold,
                                        passed: failed <= threshold.unwrap_or(0),
                                        evaluated_at,
                                    },
                                    epoch,
                                    1isize,
                                ));
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}
