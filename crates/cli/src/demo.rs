//! `alluvium demo`: the medallion pipeline end to end with nothing installed.
//!
//! Generates a deliberately dirty stream of orders, products and customer changes, lays it
//! out as partitioned topics in memory (keyed like Kafka's partitioner), runs the pipeline
//! through the engine's in-memory source until the partitions are drained, and commits every
//! table to a local Iceberg lake (SQLite catalog), to a private PostgreSQL warehouse when
//! PostgreSQL is installed (skipped with a message otherwise), and to file tables; then
//! exports them as CSV and prints what it built — rows per table, the quarantine, the
//! data-quality results, the rate — and how to query the results.
//!
//! (librdkafka's in-process mock cluster is not used: at this volume it advanced consumer
//! positions past messages it never delivered — see docs/testing.md.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use alluvium_connectors::lake::LakeConfig;
use alluvium_engine::sinks::file::FileSink;
use alluvium_medallion::export::write_csv;
use alluvium_medallion::generate::{generate, GeneratorConfig};
use alluvium_medallion::lake::LakeSinks;
use alluvium_medallion::memory::{partition, run_with_sinks};
use alluvium_medallion::sinks::PipelineSinks;
use alluvium_medallion::warehouse::warehouse_sink;
use alluvium_medallion::{PipelineConfig, TableRow, Topics};
use anyhow::{Context, Result};
use clap::Args;

use crate::private_pg::PrivatePostgres;

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
    /// Skip the warehouse even when PostgreSQL is installed.
    #[arg(long)]
    pub no_warehouse: bool,
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
    let lake_dir = out.join("lake");
    let lake_config = LakeConfig::local(&lake_dir)?;
    let postgres = if args.no_warehouse {
        None
    } else {
        match PrivatePostgres::start(&out) {
            Ok(Some(pg)) => {
                println!("warehouse: a private PostgreSQL at {}", pg.url);
                Some(pg)
            }
            Ok(None) => {
                println!(
                    "warehouse: skipped — PostgreSQL is not installed (initdb/postgres not on PATH \
                     or in /usr/lib/postgresql/*/bin); the lake and the CSV files hold every table"
                );
                None
            }
            Err(e) => {
                println!("warehouse: skipped — the private PostgreSQL did not start: {e:#}");
                None
            }
        }
    };
    let sinks = PipelineSinks {
        table: Some(FileSink::<TableRow>::new(state.join("tables"))),
        lake: Some(LakeSinks::new(&lake_config, &topics).context("setting up the lake")?),
        warehouse: postgres.as_ref().map(|pg| warehouse_sink(&pg.url, "demo")),
    };
    let t = Instant::now();
    run_with_sinks(
        &logs,
        sinks,
        args.workers,
        50_000,
        &PipelineConfig::default(),
    )?;
    let elapsed = t.elapsed();
    let sink = FileSink::<TableRow>::new(state.join("tables"));
    let table = sink
        .read_state()?
        .context("the pipeline committed nothing")?;
    let rows: Vec<TableRow> = table
        .rows
        .iter()
        .flat_map(|(r, n)| std::iter::repeat_n(r.clone(), (*n).max(0) as usize))
        .collect();
    write_csv(&csv, &rows).with_context(|| format!("writing CSV files to {}", csv.display()))?;
    // The last result of every data-quality rule: the state at the end of the run.
    let mut last_dq: BTreeMap<(String, String), &alluvium_dq::DqResult> = BTreeMap::new();
    for (row, _) in &table.rows {
        if let TableRow::Dq(d) = row {
            let key = (d.table_name.clone(), d.rule.clone());
            if last_dq.get(&key).is_none_or(|l| l.epoch < d.epoch) {
                last_dq.insert(key, d);
            }
        }
    }
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
    println!(
        "\n{:<24} {:<20} {:<8} {:>8} {:>8} {:>9}  passed  (last epoch of each rule that found something)",
        "dq table", "rule", "severity", "checked", "failed", "threshold"
    );
    let mut quiet = 0;
    for ((t, rule), d) in &last_dq {
        if d.failed == 0 {
            quiet += 1;
            continue;
        }
        println!(
            "{t:<24} {rule:<20} {:<8} {:>8} {:>8} {:>9}  {}",
            d.severity.as_str(),
            d.checked,
            d.failed,
            d.threshold.map_or("-".into(), |t| t.to_string()),
            if d.passed { "yes" } else { "NO" }
        );
    }
    println!("({quiet} more rules found nothing in their last epoch)");
    if let Some(pg) = &postgres {
        if let Ok(out) = std::process::Command::new("psql")
            .arg(&pg.url)
            .args([
                "-Atc",
                "select 'gold.fact_order_items', count(*) from gold.fact_order_items \
                 union all select 'gold.daily_sales', count(*) from gold.daily_sales \
                 union all select 'dq.results', count(*) from dq.results",
            ])
            .output()
        {
            println!("\nwarehouse (PostgreSQL):");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let (t, n) = line.split_once('|').unwrap_or((line, ""));
                println!("  {t:<24} {n:>8}");
            }
        }
    }

    let lake_abs = std::fs::canonicalize(&lake_dir).unwrap_or(lake_dir.clone());
    println!("\nQuery the results:");
    println!(
        "  data quality:  alluvium dq report --lake {}",
        lake_abs.display()
    );
    println!(
        "  PyIceberg:     python3 -c \"from pyiceberg.catalog.sql import SqlCatalog; \
         c = SqlCatalog('alluvium', uri='sqlite:///{0}/catalog.db', warehouse='file://{0}/warehouse'); \
         print(c.load_table('gold.daily_sales').scan().to_arrow().sort_by([('revenue', 'descending')]).slice(0, 5))\"",
        lake_abs.display()
    );
    println!("  DuckDB (CSV):  duckdb -c \"select * from read_csv_auto('{}/daily_sales.csv') order by revenue desc limit 5\"", csv.display());
    println!("  CSV files:     {}", csv.display());
    if postgres.is_some() {
        println!(
            "  PostgreSQL:    the private server lived for the demo only; keep a warehouse with \
             `alluvium run --warehouse-url postgresql://…` and query it with psql \
             (select * from gold.daily_sales order by revenue desc limit 5)"
        );
    }
    anyhow::ensure!(
        counts.get("gold.fact_order_items").copied().unwrap_or(0) > 0,
        "the demo built no facts"
    );
    Ok(())
}
