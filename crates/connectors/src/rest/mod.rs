//! REST ingest: `POST /v1/orders` into a Kafka topic, acknowledged only once stored.
//!
//! The service is a thin, strict front of Kafka. A request's body is split into events
//! ([`body`]: one JSON object, an array, or NDJSON), each event is produced exactly as the
//! client sent it (key = its `order_id` when that is a string, header
//! `alluvium-source: rest:<topic>` for bronze `_source`), and the request is answered `202`
//! only after the broker acknowledged *every* one of them (idempotent producer, `acks=all`).
//! Anything else is an error the client can act on:
//!
//! | status | when |
//! |---|---|
//! | `202 {"accepted": n}` | all `n` events acknowledged by the broker |
//! | `400` | the body (or an NDJSON line) is not JSON; nothing produced |
//! | `401` | bearer token missing or wrong (tokens compared in constant time) |
//! | `413` | body over [`ApiConfig::max_body_bytes`] |
//! | `415` | `Content-Type` not JSON / NDJSON |
//! | `503` + `Retry-After` | broker unreachable, producer queue full, or delivery failed |
//!
//! Events are not validated here: a malformed order must reach bronze and then quarantine.
//! A `503` after part of a request was stored is safe to retry: the pipeline deduplicates
//! by `event_id`. `/healthz`, `/readyz` (broker reachable and topic present), `/metrics`
//! (Prometheus text) and `/openapi.json` (docs/api/openapi.json) complete the service.

pub mod body;
mod config;
mod metrics;
mod server;

pub use config::{ApiConfig, Auth};
pub use metrics::ApiMetrics;
pub use server::{metrics_router, IngestApi};

use thiserror::Error;

/// An error starting or running the ingest service.
#[derive(Debug, Error)]
pub enum RestError {
    /// A setting is invalid.
    #[error("invalid API configuration `{key}`: {reason}")]
    Config {
        /// The setting.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The Kafka producer could not be created.
    #[error("creating the Kafka producer for the API: {0}")]
    Producer(#[source] rdkafka::error::KafkaError),
    /// Listening or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
