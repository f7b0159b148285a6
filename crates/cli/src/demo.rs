//! `alluvium demo`: the medallion pipeline end to end with nothing installed.
//!
//! Generates a deliberately dirty stream of orders, products and customer changes, lays it
//! out as partitioned topics in memory (keyed like Kafka's partitioner), runs the pipeline
//! through the engine's in-memory source until the partitions are drained, commits every
//! table, exports them as CSV, and prints what it built — checking that every message was
//! read and checked.
//!
//! (librdkafka's in-process mock cluster is not used: at this volume it advanced consumer
//! positions past messages it never delivered — see docs/testing.md.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use alluvium_engine::sinks::file::FileSink;
use alluvium_medallion::export::write_csv;
use alluvium_medallion::generate::{generate, GeneratorConfig};
use alluvium_medallion::memory::{partition, run as run_memory};
use alluvium_medallion::{PipelineConfig, TableRow, Topics};
use anyhow::{Context, Result};
use clap::Args;

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
    let topics = Topics::with_prefix("");
    let t = Instant::now();
    let generator = GeneratorConfig {
        seed: args.seed,
        orders: args.orders,
        products: (args.orders / 20).max(50),
        customers: (args.orders / 10).max(100),
        ..GeneratorConfig::default()
    };
    let messages = generate(&generator, &topics);
    let logs = partition(&messages, 4);
    let order_events = messages.iter().filter(|m| m.topic == topics.orders).count();
    println!(
        "generated {} messages ({order_events} order events) in {:.2?}",
        messages.len(),
        t.elapsed()
    );

    let out = match args.out {
        Some(p) => p,
        None => std::env::temp_dir().join(format!("alluvium-demo-{}", std::process::id())),
    };
    let state = out.join("state");
    let csv = out.join("csv");
    let t = Instant::now();
    let rows = run_memory(
        &logs,
        &state.join("tables"),
        args.workers,
        50_000,
        &PipelineConfig::default(),
    )?;
    let elapsed = t.elapsed();
    write_csv(&csv, &rows).with_context(|| format!("writing CSV files to {}", csv.display()))?;

    let sink = FileSink::<TableRow>::new(state.join("tables"));
    let table = sink
        .read_state()?
        .context("the pipeline committed nothing")?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut checked: BTreeMap<String, i64> = BTreeMap::new();
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
            TableRow::Dq(d) => {
                // One row per rule: count each epoch's checked messages once (first rule).
                if matches!(
                    d.rule.as_str(),
                    "json_parse" | "csv_parse" | "invalid_change"
                ) {
                    *checked.entry(d.table_name.clone()).or_default() += d.checked;
                }
                "dq.results"
            }
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
