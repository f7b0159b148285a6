use thiserror::Error;

/// An error of the Kafka connector; each names the broker, topic or setting concerned.
#[derive(Debug, Error)]
pub enum KafkaConnectorError {
    /// A setting is invalid.
    #[error("invalid Kafka configuration `{key}`: {reason}")]
    Config {
        /// The setting.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The brokers could not be reached (after retries).
    #[error("Kafka brokers {brokers} unreachable after {attempts} attempts: {source}")]
    Unreachable {
        /// The bootstrap servers.
        brokers: String,
        /// How many times it was tried.
        attempts: u32,
        /// The last error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic does not exist (or has no partitions).
    #[error("Kafka topic `{topic}` does not exist on {brokers}")]
    MissingTopic {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
    /// A checkpoint refers to offsets the topic does not have (topic recreated or truncated).
    #[error("checkpoint is ahead of {partition}: committed position {committed}, but the partition ends at {end}")]
    CheckpointAhead {
        /// The partition.
        partition: String,
        /// The position in the checkpoint.
        committed: i64,
        /// The partition's high watermark.
        end: i64,
    },
    /// Any other client error, with what was being done.
    #[error("{context}: {source}")]
    Client {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}
