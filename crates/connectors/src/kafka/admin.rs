//! Topic administration: create topics, read end offsets.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::config::KafkaConfig;
use super::error::KafkaConnectorError;

fn runtime() -> Result<tokio::runtime::Runtime, KafkaConnectorError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| KafkaConnectorError::Config {
            key: "runtime".into(),
            reason: format!("could not start an async runtime: {e}"),
        })
}

/// Creates `topic` with `partitions` partitions unless it exists. Returns whether it was created.
pub fn ensure_topic(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Result<bool, KafkaConnectorError> {
    config.validate()?;
    let admin: AdminClient<DefaultClientContext> =
        config
            .client_config()
            .create()
            .map_err(|source| KafkaConnectorError::Client {
                context: "creating the Kafka admin client".into(),
                source,
            })?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(config.request_timeout));
    let rt = runtime()?;
    let results = config.with_retries(&format!("creating topic {topic}"), || {
        rt.block_on(admin.create_topics([&new], &opts))
    })?;
    // One topic was asked for, so there is one result.
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => Ok(false),
        Some(Err((name, code))) => Err(KafkaConnectorError::Client {
            context: format!("creating topic {name}"),
            source: rdkafka::error::KafkaError::AdminOp(code),
        }),
    }
}

/// The high watermark (next offset to be written) of every partition of `topic`.
pub fn end_offsets(
    config: &KafkaConfig,
    topic: &str,
) -> Result<Vec<(i32, i64)>, KafkaConnectorError> {
    config.validate()?;
    let consumer: BaseConsumer =
        config
            .client_config()
            .create()
            .map_err(|source| KafkaConnectorError::Client {
                context: "creating a Kafka client".into(),
                source,
            })?;
    let md = config.with_retries(&format!("fetching metadata of {topic}"), || {
        consumer.fetch_metadata(Some(topic), config.request_timeout)
    })?;
    let mut out = Vec::new();
    for t in md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
    {
        for p in t.partitions() {
            let (_, high) = config.with_retries(
                &format!("fetching end offsets of {topic}[{}]", p.id()),
                || consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5)),
            )?;
            out.push((p.id(), high));
        }
    }
    if out.is_empty() {
        return Err(KafkaConnectorError::MissingTopic {
            topic: topic.into(),
            brokers: config.brokers.clone(),
        });
    }
    out.sort_unstable();
    Ok(out)
}
