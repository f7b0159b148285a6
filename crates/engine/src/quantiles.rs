//! Latency quantiles from HDR histograms, exported as gauges.
//!
//! Prometheus histograms (the `_bucket` series of [`crate::metrics`]) aggregate across
//! processes but only know their fixed buckets; an operator asking "what was the p99 commit
//! of this sink" wants the number itself. [`Quantiles`] records every duration in an
//! [HdrHistogram](https://hdrhistogram.github.io/HdrHistogram/) (3 significant digits, from
//! 1 µs to about an hour, a few KiB per label set) and exports chosen quantiles as gauges,
//! `<name>{…, quantile="0.99"} <seconds>`, the shape of a Prometheus summary. Quantiles are
//! over the process's lifetime; they cannot be summed across processes (use the histograms
//! for that).

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// The quantiles exported (1.0 is the maximum).
pub const EXPORTED: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 1.0];

/// Largest duration tracked exactly, in microseconds (longer ones count as this).
const MAX_MICROS: u64 = 3_600_000_000;

/// Duration quantiles per label set `L`, recorded into HDR histograms and exported as gauges.
#[derive(Debug)]
pub struct Quantiles<L> {
    name: &'static str,
    help: &'static str,
    histograms: Mutex<HashMap<L, Histogram<u64>>>,
}

impl<L> Quantiles<L>
where
    L: Clone + Eq + Hash,
{
    /// Quantiles exported as `<prefix>_<name>{…, quantile}` with help text `help`.
    pub fn new(name: &'static str, help: &'static str) -> Self {
        Quantiles {
            name,
            help,
            histograms: Mutex::new(HashMap::new()),
        }
    }

    /// Records one duration under `labels`.
    pub fn record(&self, labels: &L, duration: Duration) {
        let micros = u64::try_from(duration.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        let mut histograms = self
            .histograms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !histograms.contains_key(labels) {
            match Histogram::new_with_bounds(1, MAX_MICROS, 3) {
                Ok(h) => {
                    histograms.insert(labels.clone(), h);
                }
                // Fixed, valid bounds: cannot happen; a metric is not worth a panic.
                Err(_) => return,
            }
        }
        if let Some(h) = histograms.get_mut(labels) {
            h.saturating_record(micros);
        }
    }

    /// The `q` quantile (0..=1) recorded under `labels`, if anything was.
    pub fn quantile(&self, labels: &L, q: f64) -> Option<Duration> {
        let histograms = self
            .histograms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let h = histograms.get(labels).filter(|h| !h.is_empty())?;
        Some(Duration::from_micros(h.value_at_quantile(q)))
    }

    /// Durations recorded under `labels`.
    pub fn count(&self, labels: &L) -> u64 {
        let histograms = self
            .histograms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        histograms.get(labels).map_or(0, Histogram::len)
    }
}

/// The label of a quantile.
#[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct QuantileLabel {
    quantile: String,
}

impl<L> Collector for Quantiles<L>
where
    L: EncodeLabelSet + Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Copy the values out first: encoding must not hold the lock recorders wait on.
        let values: Vec<(L, Vec<(f64, f64)>)> = {
            let histograms = self
                .histograms
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            histograms
                .iter()
                .filter(|(_, h)| !h.is_empty())
                .map(|(l, h)| {
                    let qs = EXPORTED
                        .iter()
                        .map(|&q| (q, h.value_at_quantile(q) as f64 / 1e6))
                        .collect();
                    (l.clone(), qs)
                })
                .collect()
        };
        if values.is_empty() {
            return Ok(());
        }
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, None, MetricType::Gauge)?;
        for (labels, qs) in &values {
            for (q, seconds) in qs {
                let label = QuantileLabel {
                    quantile: q.to_string(),
                };
                let both = (labels.clone(), label);
                ConstGauge::new(*seconds).encode(metric.encode_family(&both)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
    struct Sink {
        sink: String,
    }

    #[test]
    fn records_and_exports_quantiles() {
        let q = std::sync::Arc::new(Quantiles::<Sink>::new("commit_seconds_quantile", "Commit"));
        let lake = Sink {
            sink: "lake".into(),
        };
        assert_eq!(q.quantile(&lake, 0.5), None);
        for ms in 1..=100 {
            q.record(&lake, Duration::from_millis(ms));
        }
        assert_eq!(q.count(&lake), 100);
        let p50 = q.quantile(&lake, 0.5).unwrap().as_secs_f64();
        let p99 = q.quantile(&lake, 0.99).unwrap().as_secs_f64();
        assert!((0.0495..=0.0505).contains(&p50), "p50 {p50}");
        assert!((0.0985..=0.0995).contains(&p99), "p99 {p99}");
        // Longer than the tracked range: counted as the maximum, not lost.
        q.record(&lake, Duration::from_secs(10_000));
        assert_eq!(q.quantile(&lake, 1.0).unwrap().as_secs(), 3_600);

        let mut registry = Registry::default();
        registry
            .sub_registry_with_prefix("alluvium")
            .register_collector(Box::new(q.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("# TYPE alluvium_commit_seconds_quantile gauge"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("alluvium_commit_seconds_quantile{sink=\"lake\",quantile=\"0.5\"}")
            })
            .unwrap_or_else(|| panic!("{text}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(
            value,
            q.quantile(&lake, 0.5).unwrap().as_secs_f64(),
            "{line}"
        );
    }
}
