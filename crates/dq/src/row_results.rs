//! `dq.results` of row rules: what the checked rows of each table add up to per epoch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use alluvium_engine::epoch::now_micros;
use alluvium_engine::Epoch;
use differential_dataflow::collection::VecCollection;
use serde::{Deserialize, Serialize};

use crate::counts::{epoch_sums, route_str};
use crate::result::DqResult;
use crate::rule::{RuleDef, Severity, Threshold};

/// One checked row of a table (`rule: None`) or one failure of a rule of that table. Names
/// are shared (`Arc<str>`), so a check costs no allocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Check {
    /// The table.
    pub table: Arc<str>,
    /// The failed rule, `None` for "a row was checked".
    pub rule: Option<Arc<str>>,
}

impl Check {
    /// A row of `table` was checked.
    pub fn row(table: &Arc<str>) -> Self {
        Check {
            table: table.clone(),
            rule: None,
        }
    }

    /// A row of `table` failed `rule`.
    pub fn failure(table: &Arc<str>, rule: &Arc<str>) -> Self {
        Check {
            table: table.clone(),
            rule: Some(rule.clone()),
        }
    }
}

/// The row rules of every table, in report order: which rules get a `dq.results` row.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    tables: BTreeMap<String, Vec<RuleDef>>,
}

impl RuleSet {
    /// Adds (or replaces, by table and name) a rule.
    pub fn add(&mut self, def: RuleDef) {
        let rules = self.tables.entry(def.table.clone()).or_default();
        match rules.iter_mut().find(|r| r.name == def.name) {
            Some(r) => *r = def,
            None => rules.push(def),
        }
    }

    /// Adds a rule (builder style).
    pub fn rule(
        mut self,
        table: &str,
        rule: &str,
        severity: Severity,
        threshold: Threshold,
    ) -> Self {
        self.add(RuleDef::new(table, rule, severity).with_threshold(threshold));
        self
    }

    /// The rules of `table`, in order.
    pub fn of(&self, table: &str) -> &[RuleDef] {
        self.tables.get(table).map_or(&[], Vec::as_slice)
    }

    /// The rule `name` of `table`.
    pub fn get(&self, table: &str, name: &str) -> Option<&RuleDef> {
        self.of(table).iter().find(|r| r.name == name)
    }

    /// Mutable access to the rule `name` of `table`.
    pub fn get_mut(&mut self, table: &str, name: &str) -> Option<&mut RuleDef> {
        self.tables
            .get_mut(table)?
            .iter_mut()
            .find(|r| r.name == name)
    }

    /// Every rule, table by table.
    pub fn iter(&self) -> impl Iterator<Item = &RuleDef> {
        self.tables.values().flatten()
    }
}

/// Counts `checks` per epoch into `dq.results` rows: for every table with at least one
/// checked row in an epoch, one row per rule of that table (zero failures included). Rows of
/// an epoch appear at that epoch, once its frontier has passed.
pub fn dq_results<'s>(
    checks: VecCollection<'s, Epoch, Check>,
    rules: Arc<RuleSet>,
) -> VecCollection<'s, Epoch, DqResult> {
    epoch_sums(
        checks,
        "DqResults",
        |c: &Check| Some((c.clone(), 1)),
        |c: &Check| route_str(&c.table),
        move |epoch, sums: HashMap<Check, i64>, out| {
            let evaluated_at = now_micros();
            let mut checked: BTreeMap<Arc<str>, i64> = BTreeMap::new();
            for (c, n) in &sums {
                if c.rule.is_none() {
                    *checked.entry(c.table.clone()).or_default() += n;
                }
            }
            for (table, checked) in checked {
                for def in rules.of(&table) {
                    let failed = sums
                        .iter()
                        .filter(|(c, _)| {
                            c.table == table && c.rule.as_deref() == Some(def.name.as_str())
                        })
                        .map(|(_, n)| *n)
                        .sum();
                    out.push(def.result(epoch, checked, failed, evaluated_at));
                }
            }
        },
    )
}
