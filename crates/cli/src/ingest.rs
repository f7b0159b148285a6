//! `alluvium ingest api|…`: the processes that bring the outside world into Kafka.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alluvium_connectors::cdc::{CdcCapture, CdcConfig, CdcMetrics};
use alluvium_connectors::files::{
    DropFolder, FileIngester, FileMessage, IngestOptions, Ledger, ReadyRule,
};
use alluvium_connectors::kafka::admin::ensure_topic;
use alluvium_connectors::rest::{ApiConfig, ApiMetrics, Auth, IngestApi};
use alluvium_medallion::products::for_each_product_file_message;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::fixture::TopicArgs;
use crate::lake::S3Args;

/// Ingest processes.
#[derive(Debug, Subcommand)]
pub enum IngestCommand {
    /// Serve `POST /v1/orders` (JSON object, array or NDJSON) into the `orders` topic,
    /// answering 202 only after the broker acknowledged every event.
    Api(ApiArgs),
    /// Ingest finished CSV product files from a folder or S3 prefix into the `products`
    /// topic, each file once (durable ledger; an interrupted file resumes without
    /// duplicates or gaps).
    Csv(CsvArgs),
    /// Capture a PostgreSQL table's changes (initial snapshot, then inserts, updates,
    /// deletes) into the `customers` topic as Debezium envelopes.
    Cdc(CdcArgs),
}

/// Arguments of `alluvium ingest cdc`.
#[derive(Debug, Args)]
pub struct CdcArgs {
    /// The source database (`postgresql://user@host:port/db`; needs `wal_level=logical`
    /// and the REPLICATION attribute or superuser).
    #[arg(long, env = "ALLUVIUM_CDC_PG_URL")]
    pub pg_url: String,
    /// The captured table.
    #[arg(long, default_value = "public.customers")]
    pub table: String,
    /// Replication slot (created when missing). Default: `alluvium_<table>`.
    #[arg(long)]
    pub slot: Option<String>,
    /// Publication (created when missing). Default: `alluvium_<table>`.
    #[arg(long)]
    pub publication: Option<String>,
    /// The capture's state file (consistent point, snapshot); keep it with the slot.
    #[arg(long, default_value = "state/cdc-customers.json")]
    pub state: PathBuf,
    /// Exit once the snapshot and every change so far are in Kafka.
    #[arg(long)]
    pub until_idle: bool,
    /// Serve `/metrics` (slot lag, events) and `/healthz` on this address.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Kafka and the pipeline's topics.
    #[command(flatten)]
    pub kafka: TopicArgs,
}

/// Arguments of `alluvium ingest csv`.
#[derive(Debug, Args)]
pub struct CsvArgs {
    /// A local drop folder.
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    pub dir: Option<PathBuf>,
    /// An object-store drop prefix, `s3://bucket/prefix`.
    #[arg(long)]
    pub url: Option<String>,
    /// The ledger file recording what was ingested (keep it with the deployment's state).
    #[arg(long, default_value = "state/csv-ledger.json")]
    pub ledger: PathBuf,
    /// When a file is finished: `stable` (size and modification time unchanged for
    /// --settle-ms) or `marker` (a `<file>.done` object exists).
    #[arg(long, value_enum, default_value_t = Ready::Stable)]
    pub ready: Ready,
    /// Settle time of `--ready stable`.
    #[arg(long, default_value_t = 2_000)]
    pub settle_ms: u64,
    /// How often the folder is listed.
    #[arg(long, default_value_t = 1_000)]
    pub poll_ms: u64,
    /// Exit once every file is ingested and none is being written.
    #[arg(long)]
    pub until_idle: bool,
    /// Kafka and the pipeline's topics.
    #[command(flatten)]
    pub kafka: TopicArgs,
    /// Records sent between two waits for the broker's acknowledgements.
    #[arg(long, default_value_t = 5_000)]
    pub chunk_records: usize,
    /// Object storage settings for `--url s3://…`.
    #[command(flatten)]
    pub s3: S3Args,
}

/// The finished-file rule.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Ready {
    /// Size and modification time unchanged for the settle time.
    Stable,
    /// A `<file>.done` marker exists.
    Marker,
}

/// Arguments of `alluvium ingest api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", env = "ALLUVIUM_API_LISTEN")]
    pub listen: SocketAddr,
    /// Kafka and the pipeline's topics.
    #[command(flatten)]
    pub kafka: TopicArgs,
    /// Accepted bearer tokens (repeat the flag, or comma-separate them in the variable).
    #[arg(
        long = "token",
        env = "ALLUVIUM_API_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tokens: Vec<String>,
    /// Accept requests without a token. Never the default.
    #[arg(long)]
    pub no_auth: bool,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// How long a request waits for the broker's acknowledgements before it gets 503.
    #[arg(long, default_value_t = 10_000)]
    pub delivery_timeout_ms: u64,
    /// Most messages queued in the producer; a request that finds the queue full gets 503.
    #[arg(long, default_value_t = 100_000)]
    pub max_queued_messages: u32,
}

/// Entry point of `alluvium ingest`.
pub fn run(cmd: IngestCommand) -> Result<()> {
    match cmd {
        IngestCommand::Api(args) => api(args),
        IngestCommand::Csv(args) => csv(args),
        IngestCommand::Cdc(args) => cdc(args),
    }
}

fn api(args: ApiArgs) -> Result<()> {
    let auth = match (args.no_auth, args.tokens.is_empty()) {
        (true, true) => Auth::Disabled,
        (true, false) => bail!("--no-auth and --token (ALLUVIUM_API_TOKENS) contradict each other"),
        (false, _) => Auth::BearerTokens(args.tokens),
    };
    let topics = args.kafka.topics();
    let mut config = ApiConfig::new(topics.orders.clone(), auth);
    config.source_label = "rest:orders".into();
    config.listen = args.listen;
    config.max_body_bytes = args.max_body_bytes;
    config.delivery_timeout = Duration::from_millis(args.delivery_timeout_ms);
    config.max_queued_messages = args.max_queued_messages;
    config.validate()?;
    let kafka = args.kafka.config();
    ensure_topic(&kafka, &config.topic, args.kafka.partitions)?;

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ApiMetrics::register(&mut registry);
    let listen = config.listen;
    let topic = config.topic.clone();
    let api = IngestApi::new(config, &kafka, metrics, Arc::new(registry))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        tracing::info!(address = %local, %topic, "ingest API listening");
        // The line tests and scripts wait for (the port may have been chosen by the OS).
        println!("listening on http://{local}");
        api.serve(listener, shutdown_signal()).await?;
        tracing::info!("ingest API stopped; in-flight requests drained");
        Ok(())
    })
}

fn csv(args: CsvArgs) -> Result<()> {
    let topics = args.kafka.topics();
    let folder = match (&args.dir, &args.url) {
        (Some(dir), _) => DropFolder::local(dir)?,
        (None, Some(url)) => DropFolder::s3(url, &args.s3.options())?,
        (None, None) => bail!("give --dir or --url"),
    };
    let ledger = Ledger::open(&args.ledger)?;
    let kafka = args.kafka.config();
    ensure_topic(&kafka, &topics.products, args.kafka.partitions)?;
    let mut options = IngestOptions::csv(topics.products.clone());
    options.ready = match args.ready {
        Ready::Stable => ReadyRule::Stable(Duration::from_millis(args.settle_ms)),
        Ready::Marker => ReadyRule::Marker,
    };
    options.chunk = args.chunk_records;
    let convert = |name: &str, bytes: &[u8], emit: &mut dyn FnMut(FileMessage)| {
        for_each_product_file_message(name, bytes, |key, payload| {
            emit(FileMessage { key, payload })
        })
    };
    let mut ingester = FileIngester::new(folder, ledger, kafka, options, convert)?;
    // SIGTERM / Ctrl-C: finish the file in hand, then stop (a SIGKILL is safe too: the
    // next run resumes the file from the topic).
    let stop = stop_flag()?;
    tracing::info!(folder = ?args.dir.as_ref().map(|d| d.display().to_string()).or(args.url.clone()), topic = %topics.products, "CSV ingest started");
    let reports = ingester.run(Duration::from_millis(args.poll_ms), args.until_idle, || {
        stop.load(Ordering::Relaxed)
    })?;
    let records: u64 = reports.iter().map(|r| r.records).sum();
    println!("ingested {} files ({records} records)", reports.len());
    Ok(())
}

fn cdc(args: CdcArgs) -> Result<()> {
    let topics = args.kafka.topics();
    let mut config = CdcConfig::new(
        args.pg_url,
        args.table,
        topics.customers.clone(),
        args.state,
    );
    if let Some(slot) = args.slot {
        config.slot = slot;
    }
    if let Some(p) = args.publication {
        config.publication = p;
    }
    let kafka = args.kafka.config();
    ensure_topic(&kafka, &topics.customers, args.kafka.partitions)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = CdcMetrics::register(&mut registry);
    if let Some(addr) = args.metrics_listen {
        crate::metrics_http::serve_in_background(addr, Arc::new(registry))?;
    }
    let mut capture = CdcCapture::new(config, kafka, metrics)?;
    let stop = stop_flag()?;
    let report = capture.run(args.until_idle, || stop.load(Ordering::Relaxed))?;
    println!(
        "captured {} snapshot rows and {} changes",
        report.snapshot_rows, report.changes
    );
    Ok(())
}

/// A flag raised by SIGTERM or Ctrl-C, for loops that stop between batches.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the signal handler")?;
    }
    Ok(stop)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: draining in-flight requests");
}
