use std::sync::Arc;

use serde::{Deserialize, Serialize};

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
    /// When the engine read the message (microseconds since the Unix epoch).
    pub ingested_at: i64,
}
