//! Prometheus metrics of the rules (prefix `alluvium_dq_`), updated by the [gate](crate::gate).

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a rule's metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The table.
    pub table: String,
    /// The rule.
    pub rule: String,
    /// `warn`, `drop` or `fail`.
    pub severity: String,
}

/// The metrics of every rule of the process.
#[derive(Debug, Default)]
pub struct DqMetrics {
    /// Failures summed over epochs (row rules: failing rows).
    pub failed_total: Family<RuleLabels, Counter>,
    /// Epochs in which the rule did not pass.
    pub not_passed: Family<RuleLabels, Counter>,
    /// Rows checked in the last evaluated epoch.
    pub checked: Family<RuleLabels, Gauge>,
    /// Rows failed in the last evaluated epoch.
    pub failed: Family<RuleLabels, Gauge>,
}

impl DqMetrics {
    /// Registers the metrics (prefix `alluvium_dq_`) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("alluvium_dq");
        r.register(
            "failed",
            "Failures of each rule, summed over epochs",
            self.failed_total.clone(),
        );
        r.register(
            "not_passed",
            "Epochs in which each rule did not pass",
            self.not_passed.clone(),
        );
        r.register(
            "last_checked",
            "Rows each rule checked in the last evaluated epoch",
            self.checked.clone(),
        );
        r.register(
            "last_failed",
            "Rows that failed each rule in the last evaluated epoch",
            self.failed.clone(),
        );
    }
}

/// The process's rule metrics.
pub fn dq_metrics() -> &'static DqMetrics {
    static METRICS: OnceLock<DqMetrics> = OnceLock::new();
    METRICS.get_or_init(DqMetrics::default)
}
