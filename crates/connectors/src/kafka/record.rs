use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The Kafka header naming where a message came from (`rest:orders`, `csv:<file>`, ...):
/// set by Alluvium's ingest processes, read into [`KafkaRecord::origin`] (bronze `_source`).
pub const SOURCE_HEADER: &str = "alluvium-source";

/// One Kafka message as it enters the dataflow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KafkaRecord {
    /// The topic (shared among all records of the topic).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
    /// The message key, when present.
    pub key: Option<Vec<u8>>,
    /// The message payload, when present (bytes as produced; never decoded here).
    pub payload: Option<Vec<u8>>,
    /// The message timestamp (milliseconds since the Unix epoch), when the broker set one.
    pub timestamp_ms: Option<i64>,
    /// The message's [`SOURCE_HEADER`], when it has one (shared among records with the same
    /// value).
    pub origin: Option<Arc<str>>,
    /// When the engine read the message (microseconds since the Unix epoch).
    pub ingested_at: i64,
}
