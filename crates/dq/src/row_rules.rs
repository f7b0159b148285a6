//! Rules that judge one row at a time: `not_null`, `accepted_values`, `range`, `regex`,
//! `predicate` (any closure) and `freshness`.
//!
//! A [`RowRules`] is the ordered list of rules of one table. [`RowRules::check`] runs them on
//! a row: the first failing `drop` rule decides the row's fate (it is quarantined under that
//! rule's name, the rules after it are not run), `warn` and `fail` failures are only counted.
//! Rules that name a column read it through [`Fields`], which row types implement once;
//! `predicate` rules take the typed row itself.

use std::sync::Arc;

use crate::rule::{RuleDef, Severity, Threshold};

/// A column's value, borrowed from a row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// SQL null, or a missing optional value.
    Null,
    /// Text.
    Str(&'a str),
    /// An integer (also timestamps in microseconds and dates in days).
    Int(i64),
    /// A fixed-point decimal: `units / 10^scale`.
    Decimal(i128, u32),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Value<'_> {
    /// The value as a number, when it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Decimal(units, scale) => Some(units as f64 / 10f64.powi(scale as i32)),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }
}

/// Read access to a row's columns by name, for rules declared by column (in code or in TOML).
pub trait Fields {
    /// The value of `column`, `None` when the row has no such column.
    fn field(&self, column: &str) -> Option<Value<'_>>;

    /// The column names, for checking declared rules at start.
    fn columns() -> &'static [&'static str];
}

type Check<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;

/// One rule over rows of type `T`: its definition and its check (`true` = the row passes).
pub struct RowRule<T> {
    /// Name, table, severity, threshold.
    pub def: RuleDef,
    check: Check<T>,
}

impl<T> Clone for RowRule<T> {
    fn clone(&self) -> Self {
        RowRule {
            def: self.def.clone(),
            check: self.check.clone(),
        }
    }
}

impl<T> std::fmt::Debug for RowRule<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowRule").field("def", &self.def).finish()
    }
}

impl<T: 'static> RowRule<T> {
    /// A rule from any check (`true` = the row passes).
    pub fn predicate(def: RuleDef, check: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        RowRule {
            def,
            check: Arc::new(check),
        }
    }

    /// Whether `row` passes.
    #[inline]
    pub fn passes(&self, row: &T) -> bool {
        (self.check)(row)
    }

    /// Fails rows whose event time (microseconds) lags the wall clock by more than
    /// `max_lag_micros` when checked. Freshness depends on when a row is seen, so it can only
    /// warn: the rule's severity is forced to `warn` and it never escalates.
    pub fn freshness(
        mut def: RuleDef,
        max_lag_micros: i64,
        event_time: impl Fn(&T) -> Option<i64> + Send + Sync + 'static,
    ) -> Self {
        def.severity = Severity::Warn;
        def.escalate = false;
        RowRule::predicate(def, move |row| match event_time(row) {
            Some(t) => alluvium_engine::epoch::now_micros() - t <= max_lag_micros,
            None => true,
        })
    }
}

impl<T: Fields + 'static> RowRule<T> {
    /// Fails rows whose `column` is null.
    pub fn not_null(def: RuleDef, column: &str) -> Self {
        let column = column.to_owned();
        RowRule::predicate(def, move |row: &T| {
            !matches!(row.field(&column), None | Some(Value::Null))
        })
    }

    /// Fails rows whose `column` is not null and not one of `values` (compared as text;
    /// integers and booleans by their decimal / `true`-`false` text).
    pub fn accepted_values(def: RuleDef, column: &str, values: &[&str]) -> Self {
        let column = column.to_owned();
        let mut values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        values.sort();
        RowRule::predicate(def, move |row: &T| match row.field(&column) {
            None | Some(Value::Null) => true,
            Some(Value::Str(s)) => values.binary_search_by(|v| v.as_str().cmp(s)).is_ok(),
            Some(Value::Int(i)) => values.contains(&i.to_string()),
            Some(Value::Bool(b)) => values.contains(&b.to_string()),
            Some(_) => false,
        })
    }

    /// Fails rows whose numeric `column` is outside `min..=max` (either bound optional), or
    /// not a number. Nulls pass (combine with `not_null`).
    pub fn range(def: RuleDef, column: &str, min: Option<f64>, max: Option<f64>) -> Self {
        let column = column.to_owned();
        RowRule::predicate(def, move |row: &T| match row.field(&column) {
            None | Some(Value::Null) => true,
            Some(v) => v
                .as_f64()
                .is_some_and(|x| min.is_none_or(|m| x >= m) && max.is_none_or(|m| x <= m)),
        })
    }

    /// Fails rows whose text `column` does not match `pattern` (anchor it with `^…$` for a
    /// whole-value match). Nulls pass.
    pub fn regex(def: RuleDef, column: &str, pattern: &str) -> Result<Self, regex::Error> {
        let column = column.to_owned();
        let re = regex::Regex::new(pattern)?;
        Ok(RowRule::predicate(def, move |row: &T| {
            match row.field(&column) {
                None | Some(Value::Null) => true,
                Some(Value::Str(s)) => re.is_match(s),
                Some(_) => false,
            }
        }))
    }
}

/// What [`RowRules::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowVerdict {
    /// The first failing `drop` rule (index in the rule list): quarantine the row.
    pub dropped_by: Option<usize>,
    /// Every other failing rule, in rule order.
    pub failed: Vec<usize>,
}

/// The rules of one table, in the order they run.
pub struct RowRules<T> {
    table: String,
    rules: Vec<RowRule<T>>,
}

impl<T> Clone for RowRules<T> {
    fn clone(&self) -> Self {
        RowRules {
            table: self.table.clone(),
            rules: self.rules.clone(),
        }
    }
}

impl<T> std::fmt::Debug for RowRules<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowRules")
            .field("table", &self.table)
            .field("rules", &self.rules)
            .finish()
    }
}

impl<T: 'static> RowRules<T> {
    /// No rules yet for `table`.
    pub fn new(table: impl Into<String>) -> Self {
        RowRules {
            table: table.into(),
            rules: Vec::new(),
        }
    }

    /// The table the rules guard.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[RowRule<T>] {
        &self.rules
    }

    /// A definition for a rule of this table (builder helper).
    pub fn def(&self, name: &str, severity: Severity) -> RuleDef {
        RuleDef::new(self.table.clone(), name, severity)
    }

    /// Appends `rule` (its table is set to this list's).
    pub fn push(&mut self, mut rule: RowRule<T>) {
        rule.def.table = self.table.clone();
        self.rules.push(rule);
    }

    /// Appends `rule` (builder style).
    pub fn with(mut self, rule: RowRule<T>) -> Self {
        self.push(rule);
        self
    }

    /// Replaces the policy (severity, threshold, escalation) of the rule called `name`;
    /// `false` when there is none.
    pub fn set_policy(
        &mut self,
        name: &str,
        severity: Severity,
        threshold: Threshold,
        escalate: bool,
    ) -> bool {
        match self.rules.iter_mut().find(|r| r.def.name == name) {
            Some(r) => {
                r.def.severity = severity;
                r.def.threshold = threshold;
                r.def.escalate = escalate;
                true
            }
            None => false,
        }
    }

    /// Runs the rules on `row`. Allocates only when a rule fails.
    pub fn check(&self, row: &T) -> RowVerdict {
        let mut verdict = RowVerdict::default();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.passes(row) {
                continue;
            }
            if rule.def.severity == Severity::Drop {
                verdict.dropped_by = Some(i);
                break;
            }
            verdict.failed.push(i);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Order {
        id: Option<String>,
        qty: i64,
        status: String,
        email: Option<String>,
    }

    impl Fields for Order {
        fn field(&self, column: &str) -> Option<Value<'_>> {
            Some(match column {
                "id" => self.id.as_deref().map_or(Value::Null, Value::Str),
                "qty" => Value::Int(self.qty),
                "status" => Value::Str(&self.status),
                "email" => self.email.as_deref().map_or(Value::Null, Value::Str),
                _ => return None,
            })
        }
        fn columns() -> &'static [&'static str] {
            &["id", "qty", "status", "email"]
        }
    }

    fn order(id: Option<&str>, qty: i64, status: &str, email: Option<&str>) -> Order {
        Order {
            id: id.map(str::to_owned),
            qty,
            status: status.into(),
            email: email.map(str::to_owned),
        }
    }

    #[test]
    fn each_kind_and_the_first_drop_wins() {
        let rules = RowRules::<Order>::new("orders");
        let d = |n, s| rules.def(n, s);
        let rules = RowRules::new("orders")
            .with(RowRule::not_null(d("id_present", Severity::Drop), "id"))
            .with(RowRule::range(
                d("qty_range", Severity::Drop),
                "qty",
                Some(1.0),
                Some(10.0),
            ))
            .with(RowRule::accepted_values(
                d("known_status", Severity::Warn),
                "status",
                &["paid", "shipped"],
            ))
            .with(
                RowRule::regex(
                    d("email_shape", Severity::Warn),
                    "email",
                    r"^[^@\s]+@[^@\s]+$",
                )
                .unwrap(),
            )
            .with(RowRule::predicate(
                d("even_qty", Severity::Fail),
                |o: &Order| o.qty % 2 == 0,
            ));
        assert_eq!(
            rules.check(&order(Some("a"), 2, "paid", Some("x@y"))),
            RowVerdict::default()
        );
        // Null email passes the regex; unknown status and odd quantity are counted.
        assert_eq!(
            rules.check(&order(Some("a"), 3, "lost", None)),
            RowVerdict {
                dropped_by: None,
                failed: vec![2, 4]
            }
        );
        // Two drop rules broken: the first one decides, later rules do not run.
        assert_eq!(
            rules.check(&order(None, 99, "lost", Some("bad"))),
            RowVerdict {
                dropped_by: Some(0),
                failed: vec![]
            }
        );
        assert_eq!(
            rules
                .check(&order(Some("a"), 0, "paid", Some("bad")))
                .dropped_by,
            Some(1)
        );
        assert!(rules.rules().iter().all(|r| r.def.table == "orders"));
    }

    #[test]
    fn freshness_only_warns() {
        let now = alluvium_engine::epoch::now_micros();
        let rule = RowRule::freshness(
            RuleDef::new("t", "fresh", Severity::Fail),
            60_000_000,
            |t: &i64| Some(*t),
        );
        assert_eq!(rule.def.severity, Severity::Warn);
        assert!(!rule.def.escalate);
        assert!(rule.passes(&(now - 1_000_000)));
        assert!(!rule.passes(&(now - 120_000_000)));
    }
}
