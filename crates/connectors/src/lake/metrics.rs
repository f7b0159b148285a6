//! What the lake writes, for Prometheus (prefix `alluvium_lake_`), counted once per committed
//! snapshot: data files, their bytes and their records, per table. Compactions by
//! `alluvium maintain` count too (they write files).

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of a lake table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// `namespace.table`.
    pub table: String,
}

/// The lake's write metrics.
#[derive(Debug, Default)]
pub struct LakeMetrics {
    /// Data files added by committed snapshots.
    pub files: Family<TableLabels, Counter>,
    /// Bytes of those files.
    pub bytes: Family<TableLabels, Counter>,
    /// Records in those files.
    pub records: Family<TableLabels, Counter>,
}

impl LakeMetrics {
    /// Registers the metrics (prefix `alluvium_lake_`) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("alluvium_lake");
        r.register(
            "files_written",
            "Data files added by committed snapshots, per table",
            self.files.clone(),
        );
        r.register(
            "bytes_written",
            "Bytes of the data files added by committed snapshots, per table",
            self.bytes.clone(),
        );
        r.register(
            "records_written",
            "Records in the data files added by committed snapshots, per table",
            self.records.clone(),
        );
    }

    /// Counts one committed snapshot of `table`.
    pub fn committed(&self, table: &str, files: u64, bytes: u64, records: u64) {
        let labels = TableLabels {
            table: table.to_owned(),
        };
        self.files.get_or_create(&labels).inc_by(files);
        self.bytes.get_or_create(&labels).inc_by(bytes);
        self.records.get_or_create(&labels).inc_by(records);
    }
}

/// The process's lake metrics.
pub fn lake_metrics() -> &'static LakeMetrics {
    static METRICS: OnceLock<LakeMetrics> = OnceLock::new();
    METRICS.get_or_init(LakeMetrics::default)
}
