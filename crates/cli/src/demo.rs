//! `alluvium demo`: the medallion pipeline end to end with nothing installed.
//!
//! Generates a deliberately dirty stream of orders, products and customer changes and feeds
//! it through the real entry points into an embedded Kafka-protocol broker (librdkafka's
//! in-process mock cluster): orders are POSTed to the REST ingest API, product CSV files are
//! dropped into a folder the CSV ingest picks up, customer change envelopes are produced as
//! a CDC capture would. Then the pipeline reads the topics until they are drained and
//! commits every table to a local Iceberg lake (SQLite catalog), to a private PostgreSQL
//! warehouse when PostgreSQL is installed (skipped with a message otherwise), and to file
//! tables; exports them as CSV and prints what it built — rows per table, the quarantine,
//! the data-quality results, the rates — and how to query the results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alluvium_connectors::files::{
    DropFolder, FileIngester, FileMessage, IngestOptions, Ledger, ReadyRule,
};
use alluvium_connectors::kafka::producer::ReliableProducer;
use alluvium_connectors::kafka::KafkaConfig;
use alluvium_connectors::lake::LakeConfig;
use alluvium_connectors::rest::{ApiConfig, ApiMetrics, Auth, IngestApi};
use alluvium_engine::sinks::file::FileSink;
use alluvium_engine::{ClusterConfig, EpochPolicy, RunMode, SourceOptions};
use alluvium_medallion::export::write_csv;
use alluvium_medallion::fixture::Message;
use alluvium_medallion::generate::{generate_input, GeneratorConfig};
use alluvium_medallion::lake::LakeSinks;
use alluvium_medallion::products::for_each_product_file_message;
use alluvium_medallion::sinks::PipelineSinks;
use alluvium_medallion::warehouse::warehouse_sink;
use alluvium_medallion::{PipelineConfig, TableRow, Topics};
use anyhow::{Context, Result};
use clap::Args;
use rdkafka::mocking::MockCluster;

use crate::private_pg::PrivatePostgres;

/// Least partitions of a demo topic.
const MIN_PARTITIONS: i32 = 4;
/// Bytes per partition the demo aims for: the embedded broker deletes a partition's oldest
/// messages past 5 MiB (librdkafka's mock log size), so a topic gets enough partitions to
/// keep each well under it.
const BYTES_PER_PARTITION: usize = 2 << 20;
/// Order events per POST (NDJSON).
const EVENTS_PER_REQUEST: usize = 500;
/// POSTs in flight at once.
const CONCURRENT_REQUESTS: usize = 4;

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

/// What the ingest step delivered to the broker.
struct Ingested {
    /// Order events the API acknowledged (202).
    orders_accepted: usize,
    /// Order events the API refused (400: not JSON); a client would get the error back.
    orders_refused: usize,
    /// Product records the CSV ingest produced.
    product_records: u64,
    /// Customer change envelopes produced.
    customer_changes: usize,
}

/// Entry point of `alluvium demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    let topics = Topics::with_prefix("");
    let t = Instant::now();
    let generator = GeneratorConfig::scaled(args.orders, args.seed);
    let input = generate_input(&generator, &topics);
    println!(
        "generated {} order events, {} product files, {} customer changes in {:.2?}",
        input.orders.len(),
        input.product_files.len(),
        input.customers.len(),
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
    // The embedded broker lives (on this thread: it is not Send) until the demo ends.
    let broker = MockCluster::new(1).context("starting the embedded Kafka-protocol broker")?;
    let product_bytes = input.product_files.iter().map(|f| f.1.len()).sum();
    let mut created = Vec::new();
    for (topic, bytes) in [
        (&topics.orders, payload_bytes(&input.orders)),
        (&topics.products, product_bytes),
        (&topics.customers, payload_bytes(&input.customers)),
    ] {
        let partitions = partitions_for(bytes);
        broker
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("creating topic {topic} on the embedded broker"))?;
        created.push(format!("{topic} ({partitions} partitions)"));
    }
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    println!(
        "broker: embedded Kafka-protocol broker at {}, topics {}",
        kafka.brokers,
        created.join(", ")
    );
    let t = Instant::now();
    let ingested = ingest(&input, &kafka, &topics, &out)?;
    let messages = ingested.orders_accepted as u64
        + ingested.product_records
        + ingested.customer_changes as u64;
    println!(
        "ingest: {} order events through the REST API ({} refused: not JSON), {} product records \
         from {} CSV files, {} customer changes — {messages} messages in {:.2?}",
        ingested.orders_accepted,
        ingested.orders_refused,
        ingested.product_records,
        input.product_files.len(),
        ingested.customer_changes,
        t.elapsed()
    );

    let sinks = PipelineSinks {
        table: Some(FileSink::<TableRow>::new(state.join("tables"))),
        lake: Some(LakeSinks::new(&lake_config, &topics).context("setting up the lake")?),
        warehouse: postgres.as_ref().map(|pg| warehouse_sink(&pg.url, "demo")),
    };
    let options = SourceOptions {
        epochs: EpochPolicy {
            max_records: 50_000,
            max_duration: Duration::from_millis(500),
            max_inflight_epochs: 4,
        },
        mode: RunMode::UntilIdle { idle_timeout: None },
        ..SourceOptions::default()
    };
    let t = Instant::now();
    crate::run::run_medallion(
        &kafka,
        &ClusterConfig::single(args.workers),
        &PipelineConfig::default(),
        options,
        sinks,
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
                    *checked.entry(d.rule.clone()).or_default() += d.checked;
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
        messages as f64 / elapsed.as_secs_f64()
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
    // Every event the API acknowledged went through the pipeline's checks: nothing was lost
    // between the API, the broker and the graph.
    let orders_checked = checked.get("json_parse").copied().unwrap_or(0);
    anyhow::ensure!(
        orders_checked == ingested.orders_accepted as i64,
        "the API acknowledged {} order events but the pipeline checked {orders_checked}",
        ingested.orders_accepted
    );
    Ok(())
}

fn payload_bytes(messages: &[Message]) -> usize {
    messages.iter().map(|m| m.payload.len() + 64).sum()
}

/// Partitions for a topic of `bytes` on the embedded broker (see [`BYTES_PER_PARTITION`]).
fn partitions_for(bytes: usize) -> i32 {
    i32::try_from(bytes.div_ceil(BYTES_PER_PARTITION))
        .unwrap_or(i32::MAX)
        .clamp(MIN_PARTITIONS, 1024)
}

/// Feeds the generated input through the entry points into the broker: customers as change
/// envelopes (what `alluvium ingest cdc` produces from PostgreSQL), product CSV files through
/// a drop folder and the CSV ingest, orders as NDJSON POSTs to the REST ingest API.
fn ingest(
    input: &alluvium_medallion::generate::GeneratedInput,
    kafka: &KafkaConfig,
    topics: &Topics,
    out: &Path,
) -> Result<Ingested> {
    let producer = ReliableProducer::new(kafka)?;
    for m in &input.customers {
        producer.send(&m.topic, m.key.as_deref(), &m.payload)?;
    }
    producer
        .flush(Duration::from_secs(60))
        .context("producing the customer changes")?;

    let drop = out.join("drop");
    std::fs::create_dir_all(&drop).with_context(|| format!("creating {}", drop.display()))?;
    for (name, bytes) in &input.product_files {
        let path = drop.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut options = IngestOptions::csv(topics.products.clone());
    // The files are complete before the ingest starts.
    options.ready = ReadyRule::Stable(Duration::ZERO);
    let convert = |name: &str, bytes: &[u8], emit: &mut dyn FnMut(FileMessage)| {
        for_each_product_file_message(name, bytes, |key, payload| {
            emit(FileMessage { key, payload })
        })
    };
    let mut files = FileIngester::new(
        DropFolder::local(&drop)?,
        Ledger::open(&out.join("state").join("csv-ledger.json"))?,
        kafka.clone(),
        options,
        convert,
    )?;
    let reports = files.run(Duration::from_millis(100), true, || false)?;
    let product_records = reports.iter().map(|r| r.records).sum();

    let (orders_accepted, orders_refused) = post_orders(&input.orders, kafka, &topics.orders)?;
    Ok(Ingested {
        orders_accepted,
        orders_refused,
        product_records,
        customer_changes: input.customers.len(),
    })
}

/// Serves the REST ingest API on a free local port and POSTs `orders` to it as NDJSON, a
/// few requests at a time. Events that are not JSON are sent one per request, as a client
/// would, and refused (400). Returns the events accepted and refused.
fn post_orders(orders: &[Message], kafka: &KafkaConfig, topic: &str) -> Result<(usize, usize)> {
    let mut config = ApiConfig::new(topic, Auth::Disabled);
    config.source_label = "rest:orders".into();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ApiMetrics::register(&mut registry);
    let api = IngestApi::new(config, kafka, metrics, Arc::new(registry))?;
    let (json, not_json): (Vec<&Message>, Vec<&Message>) = orders
        .iter()
        .partition(|m| serde_json::from_slice::<&serde_json::value::RawValue>(&m.payload).is_ok());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("listening on a local port")?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(api.serve(listener, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        // Ready once the API has reached the broker.
        let ready = Instant::now();
        loop {
            let status = client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .map(|r| r.status());
            if matches!(status, Ok(s) if s.is_success()) {
                break;
            }
            anyhow::ensure!(
                ready.elapsed() < Duration::from_secs(30),
                "the ingest API did not become ready: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let url = format!("{base}/v1/orders");
        let post = |body: Vec<u8>| {
            let request = client
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .body(body);
            async move {
                let response = request.send().await.context("POSTing order events")?;
                Ok::<_, anyhow::Error>(response.status())
            }
        };
        let mut accepted = 0;
        for chunk in json.chunks(EVENTS_PER_REQUEST * CONCURRENT_REQUESTS) {
            let requests = chunk.chunks(EVENTS_PER_REQUEST).map(|events| {
                let mut body = Vec::new();
                for e in events {
                    body.extend_from_slice(&e.payload);
                    body.push(b'\n');
                }
                post(body)
            });
            for (status, n) in futures::future::join_all(requests)
                .await
                .into_iter()
                .zip(chunk.chunks(EVENTS_PER_REQUEST).map(<[_]>::len))
            {
                let status = status?;
                anyhow::ensure!(status.as_u16() == 202, "the ingest API answered {status}");
                accepted += n;
            }
        }
        let mut refused = 0;
        for e in &not_json {
            let status = post(e.payload.clone()).await?;
            anyhow::ensure!(
                status.as_u16() == 400,
                "the ingest API answered {status} to an event that is not JSON"
            );
            refused += 1;
        }
        let _ = stop.send(());
        server.await.context("the ingest API task")??;
        Ok((accepted, refused))
    })
}
