//! `alluvium produce`: generated keyed messages for the demo graph.

use std::time::Duration;

use alluvium_connectors::kafka::admin::ensure_topic;
use alluvium_connectors::kafka::producer::ReliableProducer;
use alluvium_connectors::kafka::KafkaConfig;
use anyhow::Result;
use clap::Args;
use rand::{Rng, SeedableRng};

/// Arguments of `alluvium produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "ALLUVIUM_KAFKA_BROKERS")]
    pub brokers: String,
    /// Topic to write (created if missing).
    #[arg(long)]
    pub topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Messages to produce.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100)]
    pub keys: u64,
    /// Seed of the generator (same seed, same messages).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The `i`-th generated message of a seeded stream: `(key, value)`.
pub fn generate(seed: u64, keys: u64, count: u64) -> impl Iterator<Item = (String, i64)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count).map(move |_| {
        (
            format!("k{}", rng.random_range(0..keys.max(1))),
            rng.random_range(-1000..1000),
        )
    })
}

/// Produces generated messages to the existing `topic`, waiting for every acknowledgement.
pub fn produce(config: &KafkaConfig, topic: &str, seed: u64, keys: u64, count: u64) -> Result<()> {
    let producer = ReliableProducer::new(config)?;
    for (key, value) in generate(seed, keys, count) {
        producer.send(topic, Some(key.as_bytes()), value.to_string().as_bytes())?;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

/// Entry point of `alluvium produce`.
pub fn run(args: ProduceArgs) -> Result<()> {
    let config = KafkaConfig::new(args.brokers);
    ensure_topic(&config, &args.topic, args.partitions)?;
    produce(&config, &args.topic, args.seed, args.keys, args.count)?;
    tracing::info!(topic = %args.topic, count = args.count, "produced");
    Ok(())
}
