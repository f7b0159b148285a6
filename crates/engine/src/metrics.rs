//! Process-wide metrics of the engine, for Prometheus.
//!
//! The engine counts as it runs — records read per source partition, epochs closed, commits
//! per sink with their latency — into one set of metrics per process ([`engine_metrics`]).
//! Counting costs a few relaxed atomic additions per read chunk and per commit, never per
//! record. A binary that serves `/metrics` registers them with [`EngineMetrics::register`];
//! one that does not pays nothing more.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::quantiles::Quantiles;

/// An empty label set (metrics with no labels of their own).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NoLabels {}

/// Labels of a source partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic (or log) name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// Labels of a sink.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// The sink's name.
    pub sink: String,
}

/// Labels of a stage of a graph.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// The stage's name (`parsed`, `silver.orders`, ...).
    pub stage: String,
}

/// The engine's metrics (cheap to clone: every family is shared).
#[derive(Clone, Debug)]
pub struct EngineMetrics {
    /// Records read, per partition.
    pub source_records: Family<PartitionLabels, Counter>,
    /// The next offset to read, per partition.
    pub source_position: Family<PartitionLabels, Gauge>,
    /// Records between the read position and the partition's end, per partition (set by
    /// sources that can ask, e.g. the Kafka reader).
    pub source_lag: Family<PartitionLabels, Gauge>,
    /// Live epochs closed by the sources (summed over workers).
    pub epochs_closed: Counter,
    /// How long each live epoch stayed open on a source (its duration), per worker source.
    pub epoch_seconds: Histogram,
    /// Epoch duration quantiles (HDR histogram; `alluvium_epoch_seconds_quantile`).
    pub epoch_quantiles: Arc<Quantiles<NoLabels>>,
    /// Epochs committed, per sink.
    pub commits: Family<SinkLabels, Counter>,
    /// Commits that failed for good, per sink.
    pub commit_failures: Family<SinkLabels, Counter>,
    /// Commit latency (retries included), per sink.
    pub commit_seconds: Family<SinkLabels, Histogram>,
    /// Commit latency quantiles per sink (HDR histogram;
    /// `alluvium_sink_commit_seconds_quantile`).
    pub commit_quantiles: Arc<Quantiles<SinkLabels>>,
    /// The last epoch committed, per sink.
    pub committed_epoch: Family<SinkLabels, Gauge>,
    /// Row changes staged for commit, per sink (insertions and retractions).
    pub sink_rows: Family<SinkLabels, Counter>,
    /// Updates flowing out of a named stage of a graph ([`metered`]).
    pub stage_records: Family<StageLabels, Counter>,
    /// Records read by every source of the process (not exported: progress reporting reads
    /// it; Prometheus sums the per-partition counters instead).
    pub records_read: Counter,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            source_records: Family::default(),
            source_position: Family::default(),
            source_lag: Family::default(),
            epochs_closed: Counter::default(),
            // 1 ms .. ~65 s
            epoch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            epoch_quantiles: Arc::new(Quantiles::new(
                "epoch_seconds_quantile",
                "Epoch duration quantiles over the process's lifetime (HDR histogram)",
            )),
            commits: Family::default(),
            commit_failures: Family::default(),
            commit_seconds: Family::new_with_constructor(|| {
                // 1 ms .. ~65 s
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
            commit_quantiles: Arc::new(Quantiles::new(
                "sink_commit_seconds_quantile",
                "Commit latency quantiles per sink over the process's lifetime (HDR histogram)",
            )),
            committed_epoch: Family::default(),
            sink_rows: Family::default(),
            stage_records: Family::default(),
            records_read: Counter::default(),
        }
    }
}

impl EngineMetrics {
    /// Registers every metric (prefix `alluvium_`) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("alluvium");
        r.register(
            "source_records",
            "Records read from each source partition",
            self.source_records.clone(),
        );
        r.register(
            "source_position",
            "Next offset to read in each source partition",
            self.source_position.clone(),
        );
        r.register(
            "source_lag",
            "Records between the read position and the end of each source partition",
            self.source_lag.clone(),
        );
        r.register(
            "epochs_closed",
            "Live epochs closed by the sources (all workers)",
            self.epochs_closed.clone(),
        );
        r.register(
            "epoch_seconds",
            "How long each live epoch stayed open on a source (epoch duration)",
            self.epoch_seconds.clone(),
        );
        r.register(
            "sink_commits",
            "Epochs committed per sink",
            self.commits.clone(),
        );
        r.register(
            "sink_commit_failures",
            "Commits that failed after their retries, per sink",
            self.commit_failures.clone(),
        );
        r.register(
            "sink_commit_seconds",
            "Time to commit one epoch (retries included), per sink",
            self.commit_seconds.clone(),
        );
        r.register(
            "sink_committed_epoch",
            "The last epoch committed, per sink",
            self.committed_epoch.clone(),
        );
        r.register(
            "sink_rows",
            "Row changes (insertions and retractions) staged for commit, per sink",
            self.sink_rows.clone(),
        );
        r.register(
            "stage_records",
            "Updates out of each named stage of the graph",
            self.stage_records.clone(),
        );
        r.register_collector(Box::new(self.epoch_quantiles.clone()));
        r.register_collector(Box::new(self.commit_quantiles.clone()));
    }
}

/// Counts the updates of `collection` into `alluvium_stage_records_total{stage}`, one counter
/// addition per batch (not per record), and passes the collection on unchanged.
pub fn metered<'s, D>(
    collection: differential_dataflow::collection::VecCollection<'s, crate::Epoch, D>,
    stage: &str,
) -> differential_dataflow::collection::VecCollection<'s, crate::Epoch, D>
where
    D: Clone + 'static,
{
    let counter = engine_metrics()
        .stage_records
        .get_or_create(&StageLabels {
            stage: stage.to_owned(),
        })
        .clone();
    collection.inspect_batch(move |_time, batch| {
        counter.inc_by(batch.len() as u64);
    })
}

/// The process's engine metrics.
pub fn engine_metrics() -> &'static EngineMetrics {
    static METRICS: OnceLock<EngineMetrics> = OnceLock::new();
    METRICS.get_or_init(EngineMetrics::default)
}
