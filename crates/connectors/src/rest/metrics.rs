//! The ingest service's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

/// Labels of an event counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EventLabels {
    pub outcome: &'static str,
}

/// Request, event and broker-health metrics of one ingest service.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) latency: Family<RequestLabels, Histogram>,
    pub(crate) events: Family<EventLabels, Counter>,
    pub(crate) broker_ready: Gauge,
}

impl ApiMetrics {
    /// Creates the metrics and registers them (prefix `alluvium_api_`) in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ApiMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                // 0.5 ms .. ~16 s
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            events: Family::default(),
            broker_ready: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("alluvium_api");
        r.register(
            "requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "HTTP request latency by route and status",
            m.latency.clone(),
        );
        r.register(
            "events",
            "Events received, by outcome (accepted = acknowledged by the broker)",
            m.events.clone(),
        );
        r.register(
            "broker_ready",
            "1 when the last broker probe succeeded and the topic exists",
            m.broker_ready.clone(),
        );
        m
    }
}
