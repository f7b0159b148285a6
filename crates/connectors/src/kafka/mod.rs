//! Kafka: the one data bus of an Alluvium deployment.
//!
//! - [`KafkaConfig`]: brokers and client settings, validated up front.
//! - [`KafkaReader`] / [`kafka_source`]: reads a set of topics into the dataflow, the
//!   partitions spread over all workers by manual assignment (no consumer group, no
//!   rebalancing; the engine's checkpoints, not Kafka's committed offsets, say where to resume).
//! - [`admin`]: create topics, read end offsets.
//! - [`producer`]: an idempotent, `acks=all` producer that reports delivery failures.

pub mod admin;
mod config;
mod error;
pub mod producer;
mod record;
mod source;

pub use config::KafkaConfig;
pub use error::KafkaConnectorError;
pub use record::{KafkaRecord, SOURCE_HEADER};
pub use source::{kafka_source, KafkaReader};
