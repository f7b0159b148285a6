//! `alluvium keyed-stats`: the demo graph from Kafka into a durable file table.

use std::path::PathBuf;
use std::time::Instant;

use alluvium_connectors::kafka::{kafka_source, KafkaConfig, KafkaRecord};
use alluvium_engine::demo::keyed_stats;
use alluvium_engine::sinks::file::FileSink;
use alluvium_engine::{commit_sink, execute, Rehydration, ResumePlan, Sink, SourceOptions};
use anyhow::{Context, Result};
use clap::Args;
use timely::dataflow::operators::probe::Handle as ProbeHandle;

use crate::cluster::{ClusterArgs, EpochArgs};

/// A row of the result table: key, count, sum.
pub type StatsRow = (String, i64, i64);

/// Arguments of `alluvium keyed-stats`.
#[derive(Debug, Args)]
pub struct KeyedStatsArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "ALLUVIUM_KAFKA_BROKERS")]
    pub brokers: String,
    /// Topic to read (messages: key = group, payload = decimal integer).
    #[arg(long)]
    pub topic: String,
    /// Directory of the result table (state.json, commits.log).
    #[arg(long)]
    pub state: PathBuf,
    /// Start-up retries (exponential backoff) before the brokers are reported unreachable.
    #[arg(long, default_value_t = 5)]
    pub kafka_retries: u32,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub epochs: EpochArgs,
}

/// Decodes a message of the demo topic: key as UTF-8 (lossy), payload as a decimal integer.
/// Messages without a key or with a non-numeric payload are not counted.
pub fn decode(record: &KafkaRecord) -> Option<(String, i64)> {
    let key = String::from_utf8_lossy(record.key.as_deref()?).into_owned();
    let value = std::str::from_utf8(record.payload.as_deref()?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some((key, value))
}

/// Runs the demo graph from `config`/`topic` into `sink` until the run mode says stop.
pub fn run_pipeline(
    config: KafkaConfig,
    topic: String,
    sink: FileSink<StatsRow>,
    cluster: &ClusterArgs,
    epochs: &EpochArgs,
) -> Result<()> {
    let cluster = cluster.config()?;
    let options = SourceOptions {
        epochs: epochs.policy()?,
        mode: epochs.mode(),
        ..SourceOptions::default()
    };
    let checkpoint = sink.checkpoint().context("reading the sink's checkpoint")?;
    if let Some(c) = &checkpoint {
        tracing::info!(epoch = c.epoch, "resuming after committed epoch");
    }
    let plan = ResumePlan::from_checkpoints([checkpoint], Rehydration::FromStart)?;
    let topics = vec![topic];
    execute(&cluster, move |worker, ctx| {
        let probe = ProbeHandle::new();
        worker.dataflow(|scope| {
            let (records, positions) = kafka_source(
                scope,
                &config,
                &topics,
                ctx,
                &options,
                &plan,
                Some(probe.clone()),
            );
            let stats = keyed_stats(records.flat_map(|r| decode(&r)));
            commit_sink(stats, positions, &sink, &plan, ctx, &probe).map_err(|e| e.to_string())
        })
    })?;
    Ok(())
}

/// Entry point of `alluvium keyed-stats`.
pub fn run(args: KeyedStatsArgs) -> Result<()> {
    let mut config = KafkaConfig::new(args.brokers.clone());
    config.retries = args.kafka_retries;
    config.validate()?;
    let sink = FileSink::<StatsRow>::new(&args.state);
    let started = Instant::now();
    run_pipeline(
        config,
        args.topic.clone(),
        sink.clone(),
        &args.cluster,
        &args.epochs,
    )?;
    if args.cluster.process == 0 {
        let state = sink.read_state()?;
        let (epoch, rows) = state.map(|s| (s.epoch, s.rows.len())).unwrap_or((0, 0));
        tracing::info!(epoch, rows, elapsed = ?started.elapsed(), "stopped");
    }
    Ok(())
}
