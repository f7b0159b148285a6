//! Rules declared in TOML.
//!
//! A file holds a list of `[[rules]]`. A rule with a `check` is a new row rule on a table the
//! pipeline exposes; a rule without one changes the policy (severity, threshold, escalation)
//! of a rule the pipeline already has, e.g. to turn a warning into a stop:
//!
//! ```toml
//! [[rules]]
//! table = "silver.orders"
//! name = "reasonable_item_count"
//! check = "range"            # not_null | accepted_values | range | regex
//! column = "item_count"
//! min = 1
//! max = 50
//! severity = "warn"          # warn | drop | fail
//! max_failed_ratio = 0.01    # past 1 % of the epoch's rows ...
//! escalate = true            # ... stop the pipeline (the default)
//!
//! [[rules]]
//! table = "gold.fact_order_items"
//! name = "orphan_orders"
//! severity = "warn"
//! max_failed_ratio = 0.05
//! escalate = true
//! ```
//!
//! Unknown keys, a missing `column`/`values`/`pattern` for a check, a column the table does
//! not have, a bad pattern or a ratio outside 0..=1 fail at start with the offending key.

use std::path::Path;

use serde::Deserialize;

use crate::row_rules::{Fields, RowRule};
use crate::rule::{RuleDef, Severity, Threshold};

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum DqConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key of the wrong type or unknown.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line, column and key).
        message: String,
    },
    /// A value that parses but does not make sense.
    #[error("invalid configuration `{key}`: {reason}")]
    Invalid {
        /// The key, e.g. `rules[2].column`.
        key: String,
        /// Why.
        reason: String,
    },
}

/// The checks a declared row rule can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// `column` is not null.
    NotNull,
    /// `column` is one of `values` (nulls pass).
    AcceptedValues,
    /// `column` is a number within `min..=max` (nulls pass).
    Range,
    /// `column` matches `pattern` (nulls pass).
    Regex,
}

/// One `[[rules]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The table (`silver.orders`, ...).
    pub table: String,
    /// The rule's name (a new one, or one the pipeline has).
    pub name: String,
    /// The check of a new rule; absent to change an existing rule's policy.
    pub check: Option<CheckKind>,
    /// The column a check reads.
    pub column: Option<String>,
    /// `accepted_values`: the accepted values.
    pub values: Option<Vec<String>>,
    /// `range`: the least accepted value.
    pub min: Option<f64>,
    /// `range`: the greatest accepted value.
    pub max: Option<f64>,
    /// `regex`: the pattern.
    pub pattern: Option<String>,
    /// `warn` (default for new rules), `drop` or `fail`.
    pub severity: Option<Severity>,
    /// Failures tolerated per epoch, in rows.
    pub max_failed_rows: Option<i64>,
    /// Failures tolerated per epoch, as a share of the rows checked.
    pub max_failed_ratio: Option<f64>,
    /// Whether failures past the threshold stop the pipeline.
    pub escalate: Option<bool>,
}

/// A rules file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DqConfig {
    /// The rules, in file order.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

impl DqConfig {
    /// Reads and checks a rules file.
    pub fn load(path: &Path) -> Result<Self, DqConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| DqConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks rules from TOML text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, DqConfigError> {
        let config: DqConfig = toml::from_str(text).map_err(|e| DqConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        for (i, rule) in config.rules.iter().enumerate() {
            rule.validate(i)?;
        }
        Ok(config)
    }

    /// The rules of `table` that declare a check.
    pub fn new_rules<'a>(
        &'a self,
        table: &'a str,
    ) -> impl Iterator<Item = (usize, &'a RuleConfig)> {
        self.rules
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.table == table && r.check.is_some())
    }

    /// `default` with the policy the file gives the rule of the same table and name, if any.
    pub fn policy(&self, default: RuleDef) -> RuleDef {
        let (table, name) = (default.table.clone(), default.name.clone());
        self.rules
            .iter()
            .filter(|r| r.check.is_none() && r.table == table && r.name == name)
            .fold(default, |def, r| r.apply(def))
    }

    /// Fails, naming the key, for policy entries that match none of `known` rules (a typo
    /// would otherwise silently change nothing).
    pub fn check_overrides<'a>(
        &self,
        known: impl IntoIterator<Item = &'a RuleDef>,
    ) -> Result<(), DqConfigError> {
        let known: Vec<&RuleDef> = known.into_iter().collect();
        for (i, r) in self.rules.iter().enumerate() {
            if r.check.is_none() && !known.iter().any(|k| k.table == r.table && k.name == r.name) {
                let mut names: Vec<String> = known
                    .iter()
                    .map(|k| format!("{}.{}", k.table, k.name))
                    .collect();
                names.sort();
                return Err(DqConfigError::Invalid {
                    key: format!("rules[{i}].name"),
                    reason: format!(
                        "`{}` is not a rule of `{}` and has no `check`; known rules: {}",
                        r.name,
                        r.table,
                        names.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

impl RuleConfig {
    fn invalid(i: usize, key: &str, reason: impl Into<String>) -> DqConfigError {
        DqConfigError::Invalid {
            key: format!("rules[{i}].{key}"),
            reason: reason.into(),
        }
    }

    fn validate(&self, i: usize) -> Result<(), DqConfigError> {
        if self.name.trim().is_empty() {
            return Err(Self::invalid(i, "name", "must not be empty"));
        }
        if self.table.trim().is_empty() {
            return Err(Self::invalid(i, "table", "must not be empty"));
        }
        if let Some(r) = self.max_failed_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(Self::invalid(
                    i,
                    "max_failed_ratio",
                    format!("{r} is not within 0..=1"),
                ));
            }
        }
        if let Some(n) = self.max_failed_rows {
            if n < 0 {
                return Err(Self::invalid(i, "max_failed_rows", "must not be negative"));
            }
        }
        let Some(kind) = self.check else {
            for (key, set) in [
                ("column", self.column.is_some()),
                ("values", self.values.is_some()),
                ("min", self.min.is_some()),
                ("max", self.max.is_some()),
                ("pattern", self.pattern.is_some()),
            ] {
                if set {
                    return Err(Self::invalid(i, key, "only a rule with a `check` reads it"));
                }
            }
            return Ok(());
        };
        if self.column.is_none() {
            return Err(Self::invalid(i, "column", "required by every check"));
        }
        match kind {
            CheckKind::AcceptedValues if self.values.is_none() => {
                Err(Self::invalid(i, "values", "required by `accepted_values`"))
            }
            CheckKind::Range if self.min.is_none() && self.max.is_none() => Err(Self::invalid(
                i,
                "min",
                "`range` needs `min`, `max` or both",
            )),
            CheckKind::Regex => match &self.pattern {
                None => Err(Self::invalid(i, "pattern", "required by `regex`")),
                Some(p) => regex::Regex::new(p)
                    .map(|_| ())
                    .map_err(|e| Self::invalid(i, "pattern", e.to_string())),
            },
            _ => Ok(()),
        }
    }

    fn threshold(&self) -> Threshold {
        Threshold {
            max_failed_rows: self.max_failed_rows,
            max_failed_ratio: self.max_failed_ratio,
        }
    }

    /// `def` with the policy this entry sets.
    fn apply(&self, mut def: RuleDef) -> RuleDef {
        if let Some(s) = self.severity {
            def.severity = s;
        }
        if self.max_failed_rows.is_some() || self.max_failed_ratio.is_some() {
            def.threshold = self.threshold();
        }
        if let Some(e) = self.escalate {
            def.escalate = e;
        }
        def
    }

    /// The row rule this entry declares (entry `i` of the file), for rows of type `T`.
    pub fn row_rule<T: Fields + 'static>(&self, i: usize) -> Result<RowRule<T>, DqConfigError> {
        let def = self.apply(RuleDef::new(
            self.table.clone(),
            self.name.clone(),
            Severity::Warn,
        ));
        let column = self.column.as_deref().unwrap_or_default();
        if !T::columns().contains(&column) {
            return Err(Self::invalid(
                i,
                "column",
                format!(
                    "`{column}` is not a column of `{}` (columns: {})",
                    self.table,
                    T::columns().join(", ")
                ),
            ));
        }
        Ok(match self.check {
            Some(CheckKind::NotNull) | None => RowRule::not_null(def, column),
            Some(CheckKind::AcceptedValues) => {
                let values: Vec<&str> = self.values.iter().flatten().map(String::as_str).collect();
                RowRule::accepted_values(def, column, &values)
            }
            Some(CheckKind::Range) => RowRule::range(def, column, self.min, self.max),
            Some(CheckKind::Regex) => {
                RowRule::regex(def, column, self.pattern.as_deref().unwrap_or_default())
                    .map_err(|e| Self::invalid(i, "pattern", e.to_string()))?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row_rules::Value;

    struct Row(i64);
    impl Fields for Row {
        fn field(&self, column: &str) -> Option<Value<'_>> {
            (column == "n").then_some(Value::Int(self.0))
        }
        fn columns() -> &'static [&'static str] {
            &["n"]
        }
    }

    #[test]
    fn declared_rules_and_policies() {
        let config = DqConfig::parse(
            r#"
            [[rules]]
            table = "t"
            name = "small"
            check = "range"
            column = "n"
            max = 10
            severity = "drop"

            [[rules]]
            table = "t"
            name = "builtin"
            severity = "fail"
            max_failed_ratio = 0.5
            "#,
            "test.toml",
        )
        .unwrap();
        let (i, entry) = config.new_rules("t").next().unwrap();
        let rule: RowRule<Row> = entry.row_rule(i).unwrap();
        assert_eq!(rule.def.severity, Severity::Drop);
        assert!(rule.passes(&Row(10)) && !rule.passes(&Row(11)));
        let def = config.policy(RuleDef::new("t", "builtin", Severity::Warn));
        assert_eq!(def.severity, Severity::Fail);
        assert_eq!(def.threshold, Threshold::ratio(0.5));
        assert!(config
            .check_overrides([&RuleDef::new("t", "builtin", Severity::Warn)])
            .is_ok());
        let err = config
            .check_overrides([&RuleDef::new("t", "other", Severity::Warn)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("rules[1].name"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[[rules]]\ntable='t'\nname='x'\ncheck='range'\ncolumn='n'",
                "rules[0].min",
            ),
            (
                "[[rules]]\ntable='t'\nname='x'\ncheck='regex'\ncolumn='n'\npattern='('",
                "rules[0].pattern",
            ),
            (
                "[[rules]]\ntable='t'\nname='x'\nmax_failed_ratio=2.0",
                "rules[0].max_failed_ratio",
            ),
            (
                "[[rules]]\ntable='t'\nname='x'\ncolumn='n'",
                "rules[0].column",
            ),
            (
                "[[rules]]\ntable='t'\nname='x'\ncheck='not_null'",
                "rules[0].column",
            ),
        ];
        for (text, key) in cases {
            let err = DqConfig::parse(text, "f.toml").unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = DqConfig::parse("[[rules]]\ntable='t'\nname='x'\ncheck='nope'", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.toml") && err.contains("nope"), "{err}");
        let err = DqConfig::parse("[[rules]]\ntable='t'\nname='x'\ncolour='red'", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        let entry = DqConfig::parse(
            "[[rules]]\ntable='t'\nname='x'\ncheck='not_null'\ncolumn='m'",
            "f.toml",
        )
        .unwrap();
        let err = entry.rules[0].row_rule::<Row>(0).unwrap_err().to_string();
        assert!(
            err.contains("rules[0].column") && err.contains("`m`"),
            "{err}"
        );
    }
}
