//! `alluvium demo`: the engine end to end with nothing installed.
//!
//! Starts librdkafka's in-process mock cluster (a Kafka-protocol broker inside this process),
//! produces generated keyed messages, runs the demo graph until idle into a local file table,
//! and prints what it did.

use std::path::PathBuf;
use std::time::Instant;

use alluvium_connectors::kafka::KafkaConfig;
use alluvium_engine::demo::keyed_stats_reference;
use alluvium_engine::sinks::file::FileSink;
use anyhow::{Context, Result};
use clap::Args;
use rdkafka::mocking::MockCluster;

use crate::cluster::{ClusterArgs, EpochArgs};
use crate::keyed_stats::{run_pipeline, StatsRow};
use crate::produce::{generate, produce};

/// Arguments of `alluvium demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Messages to generate.
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Worker threads.
    #[arg(short = 'w', long, default_value_t = 2)]
    pub workers: usize,
    /// Where to keep the result table (default: a fresh temporary directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Entry point of `alluvium demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    let cluster = MockCluster::new(1).context("starting the embedded Kafka cluster")?;
    let topic = "demo-events";
    cluster
        .create_topic(topic, 4, 1)
        .context("creating the demo topic in the embedded cluster")?;
    let config = KafkaConfig::new(cluster.bootstrap_servers());
    println!("embedded Kafka cluster at {}", config.brokers);

    let t = Instant::now();
    produce(&config, topic, 7, args.keys, args.records)?;
    println!(
        "produced {} messages over {} keys in {:.2?}",
        args.records,
        args.keys,
        t.elapsed()
    );

    let out = match args.out {
        Some(p) => p,
        None => tempfile_dir()?,
    };
    let sink = FileSink::<StatsRow>::new(&out);
    let cluster_args = ClusterArgs {
        workers: args.workers,
        processes: 1,
        process: 0,
        hostfile: None,
        base_port: 2101,
    };
    let epochs = EpochArgs {
        epoch_records: 50_000,
        epoch_ms: 250,
        max_inflight_epochs: 4,
        until_idle: true,
        idle_timeout_ms: None,
    };
    let t = Instant::now();
    run_pipeline(
        config,
        topic.to_string(),
        sink.clone(),
        &cluster_args,
        &epochs,
    )?;
    let elapsed = t.elapsed();
    let state = sink
        .read_state()?
        .context("the pipeline committed nothing")?;
    let commits = sink.commit_log()?.len();
    println!(
        "pipeline: {} workers, {} epochs committed, {:.2?} ({:.0} records/s)",
        args.workers,
        commits,
        elapsed,
        args.records as f64 / elapsed.as_secs_f64()
    );
    let expected = keyed_stats_reference(generate(7, args.keys, args.records));
    let got: Vec<StatsRow> = state.rows.iter().map(|(r, _)| r.clone()).collect();
    let ok = got == expected;
    println!(
        "result table: {} keys in {}/state.json — {}",
        got.len(),
        out.display(),
        if ok {
            "matches a direct computation"
        } else {
            "DIFFERS from a direct computation"
        }
    );
    let mut top = got.clone();
    top.sort_by_key(|r| std::cmp::Reverse(r.1));
    println!("{:<10} {:>8} {:>10}", "key", "count", "sum");
    for (k, c, s) in top.iter().take(5) {
        println!("{k:<10} {c:>8} {s:>10}");
    }
    anyhow::ensure!(ok, "the committed table differs from the expected result");
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("alluvium-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
