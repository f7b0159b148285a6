//! A reliable producer: idempotent, `acks=all`, and a flush that fails loudly when any
//! message was not acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::config::KafkaConfig;
use super::error::KafkaConnectorError;

/// Counts delivery failures reported by librdkafka.
#[derive(Default)]
pub struct DeliveryTracker {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut slot) = self.first_error.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// An idempotent producer with delivery tracking.
pub struct ReliableProducer {
    producer: ThreadedProducer<DeliveryTracker>,
}

impl ReliableProducer {
    /// Connects to the brokers of `config`.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaConnectorError> {
        config.validate()?;
        let mut client = config.client_config();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        let producer = client
            .create_with_context(DeliveryTracker::default())
            .map_err(|source| KafkaConnectorError::Client {
                context: "creating the Kafka producer".into(),
                source,
            })?;
        Ok(ReliableProducer { producer })
    }

    /// Queues one message, waiting while the local queue is full.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), KafkaConnectorError> {
        self.send_with_headers(topic, key, payload, None)
    }

    /// Queues one message with headers, waiting while the local queue is full.
    pub fn send_with_headers(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaConnectorError> {
        let mut record = BaseRecord::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((source, _)) => {
                    return Err(KafkaConnectorError::Client {
                        context: format!("producing to {topic}"),
                        source,
                    })
                }
            }
        }
    }

    /// Waits until every queued message is acknowledged; fails if any was not.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaConnectorError> {
        self.producer
            .flush(timeout)
            .map_err(|source| KafkaConnectorError::Client {
                context: "flushing the producer".into(),
                source,
            })?;
        let tracker = self.producer.context();
        let failed = tracker.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = tracker
                .first_error
                .lock()
                .ok()
                .and_then(|s| s.clone())
                .unwrap_or_default();
            return Err(KafkaConnectorError::Config {
                key: "kafka.brokers".into(),
                reason: format!("{failed} messages were not acknowledged (first error: {first})"),
            });
        }
        Ok(())
    }
}
