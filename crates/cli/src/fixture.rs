//! `alluvium fixture load DIR`: a case folder into the topics, in file order.

use std::path::PathBuf;
use std::time::Duration;

use alluvium_connectors::kafka::admin::ensure_topic;
use alluvium_connectors::kafka::producer::ReliableProducer;
use alluvium_connectors::kafka::KafkaConfig;
use alluvium_medallion::fixture::load;
use alluvium_medallion::Topics;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};

/// Fixture commands.
#[derive(Debug, Subcommand)]
pub enum FixtureCommand {
    /// Produce a case folder (orders.jsonl, orders_not_json.txt, products/*.csv,
    /// customers_debezium.jsonl) into the pipeline's topics.
    Load(LoadArgs),
}

/// Arguments of `alluvium fixture load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The case folder.
    pub dir: PathBuf,
    /// Kafka and the pipeline's topics.
    #[command(flatten)]
    pub kafka: TopicArgs,
}

/// Entry point of `alluvium fixture`.
pub fn run(cmd: FixtureCommand) -> Result<()> {
    let FixtureCommand::Load(args) = cmd;
    let config = args.kafka.config();
    config.validate()?;
    let topics = args.kafka.topics();
    let messages = load(&args.dir, &topics)
        .with_context(|| format!("reading case folder {}", args.dir.display()))?;
    for t in topics.all() {
        ensure_topic(&config, &t, args.kafka.partitions)?;
    }
    let producer = ReliableProducer::new(&config)?;
    for m in &messages {
        producer.send(&m.topic, m.key.as_deref(), &m.payload)?;
    }
    producer.flush(Duration::from_secs(120))?;
    tracing::info!(messages = messages.len(), dir = %args.dir.display(), "fixture loaded");
    println!(
        "produced {} messages from {}",
        messages.len(),
        args.dir.display()
    );
    Ok(())
}

/// Kafka and the pipeline's topics, as every command that writes them takes them.
#[derive(Debug, Args)]
pub struct TopicArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "ALLUVIUM_KAFKA_BROKERS")]
    pub brokers: String,
    /// Prefix of the topic names (`<prefix>orders`, `<prefix>products`, `<prefix>customers`).
    #[arg(long, default_value = "", env = "ALLUVIUM_TOPIC_PREFIX")]
    pub topic_prefix: String,
    /// Partitions of a topic when it has to be created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
}

impl TopicArgs {
    /// The Kafka client configuration.
    pub fn config(&self) -> KafkaConfig {
        KafkaConfig::new(self.brokers.clone())
    }

    /// The pipeline's topic names.
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }
}
