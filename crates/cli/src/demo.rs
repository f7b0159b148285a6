//! `alluvium demo`: the medallion pipeline end to end with nothing installed.
//!
//! Starts librdkafka's in-process mock cluster (a Kafka-protocol broker inside this process),
//! produces a generated, deliberately dirty stream of orders, products and customer changes,
//! runs the pipeline until the topics are drained, and prints what it built.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use alluvium_connectors::kafka::producer::ReliableProducer;
use alluvium_connectors::kafka::KafkaConfig;
use alluvium_engine::sinks::file::FileSink;
use alluvium_medallion::generate::{generate, GeneratorConfig};
use alluvium_medallion::{TableRow, Topics};
use anyhow::{Context, Result};
use clap::Args;
use rdkafka::mocking::MockCluster;

use crate::cluster::{ClusterArgs, EpochArgs};
use crate::run::RunArgs;

/// Arguments of `alluvium demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Orders to generate (each has 1 to 5 events).
    #[arg(long, default_value_t = 20_000)]
    pub orders: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads.
    #[arg(short = 'w', long, default_value_t = 2)]
    pub workers: usize,
    /// Where to keep the tables and their CSV export (default: a fresh temporary directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Entry point of `alluvium demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    let cluster = MockCluster::new(1).context("starting the embedded Kafka cluster")?;
    let topics = Topics::with_prefix("");
    for t in topics.all() {
        cluster
            .create_topic(&t, 4, 1)
            .with_context(|| format!("creating topic {t} in the embedded cluster"))?;
    }
    let config = KafkaConfig::new(cluster.bootstrap_servers());
    println!("embedded Kafka cluster at {}", config.brokers);

    let t = Instant::now();
    let generator = GeneratorConfig {
        seed: args.seed,
        orders: args.orders,
        products: (args.orders / 20).max(50),
        customers: (args.orders / 10).max(100),
        ..GeneratorConfig::default()
    };
    let messages = generate(&generator, &topics);
    let producer = ReliableProducer::new(&config)?;
    for m in &messages {
        producer.send(&m.topic, m.key.as_deref(), &m.payload)?;
    }
    producer.flush(Duration::from_secs(120))?;
    let order_events = messages.iter().filter(|m| m.topic == topics.orders).count();
    println!(
        "produced {} messages ({order_events} order events) in {:.2?}",
        messages.len(),
        t.elapsed()
    );

    let out = match args.out {
        Some(p) => p,
        None => std::env::temp_dir().join(format!("alluvium-demo-{}", std::process::id())),
    };
    let state = out.join("state");
    let csv = out.join("csv");
    let run_args = RunArgs {
        brokers: config.brokers.clone(),
        topic_prefix: String::new(),
        state: Some(state.clone()),
        export_csv: Some(csv.clone()),
        batch: false,
        currencies: None,
        warehouse_url: None,
        pipeline_name: "medallion".into(),
        kafka_retries: 3,
        cluster: ClusterArgs {
            workers: args.workers,
            processes: 1,
            process: 0,
            hostfile: None,
            base_port: 2101,
        },
        epochs: EpochArgs {
            epoch_records: 50_000,
            epoch_ms: 250,
            max_inflight_epochs: 4,
            until_idle: true,
            idle_timeout_ms: None,
        },
    };
    let t = Instant::now();
    crate::run::run(run_args)?;
    let elapsed = t.elapsed();

    let sink = FileSink::<TableRow>::new(state.join("tables"));
    let table = sink
        .read_state()?
        .context("the pipeline committed nothing")?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut quarantined: BTreeMap<String, i64> = BTreeMap::new();
    for (row, _) in &table.rows {
        let name = match row {
            TableRow::SilverOrder(_) => "silver.orders",
            TableRow::SilverOrderItem(_) => "silver.order_items",
            TableRow::SilverProduct(_) => "silver.products",
            TableRow::SilverCustomer(_) => "silver.customers",
            TableRow::DimCustomer(_) => "gold.dim_customers",
            TableRow::DimProduct(_) => "gold.dim_products",
            TableRow::Fact(_) => "gold.fact_order_items",
            TableRow::DailySales(_) => "gold.daily_sales",
            TableRow::CustomerLtv(_) => "gold.customer_ltv",
            TableRow::Dq(_) => "dq.results",
            TableRow::QuarantineCount(source, rule, n) => {
                quarantined.insert(format!("{source}/{rule}"), *n);
                continue;
            }
        };
        *counts.entry(name).or_default() += 1;
    }
    println!(
        "pipeline: {} workers, {} epochs committed, {:.2?} ({:.0} messages/s)",
        args.workers,
        sink.commit_log()?.len(),
        elapsed,
        messages.len() as f64 / elapsed.as_secs_f64()
    );
    println!("\n{:<24} {:>8}", "table", "rows");
    for (name, n) in &counts {
        println!("{name:<24} {n:>8}");
    }
    println!("\n{:<32} {:>8}", "quarantine (source/rule)", "rows");
    for (rule, n) in &quarantined {
        println!("{rule:<32} {n:>8}");
    }
    println!("\nCSV of every table: {}", csv.display());
    println!(
        "  e.g. python3 -c \"import csv; print(list(csv.reader(open('{}/daily_sales.csv')))[:5])\"",
        csv.display()
    );
    println!("  or:  duckdb -c \"select * from read_csv_auto('{}/daily_sales.csv') order by revenue desc limit 5\"", csv.display());
    anyhow::ensure!(
        counts.get("gold.fact_order_items").copied().unwrap_or(0) > 0,
        "the demo built no facts"
    );
    Ok(())
}
