//! `alluvium run`: the e-commerce medallion pipeline from Kafka.

use std::path::PathBuf;

use alluvium_connectors::kafka::{kafka_source, KafkaConfig};
use alluvium_engine::runtime::from_worker_zero;
use alluvium_engine::sinks::file::FileSink;
use alluvium_engine::{execute, ClusterConfig, Rehydration, ResumePlan, SourceOptions};
use alluvium_medallion::codes::Currencies;
use alluvium_medallion::lake::LakeSinks;
use alluvium_medallion::quality::MedallionRules;
use alluvium_medallion::sinks::PipelineSinks;
use alluvium_medallion::warehouse::warehouse_sink;
use alluvium_medallion::{medallion, PipelineConfig, TableRow, Topics};
use anyhow::{Context, Result};
use clap::Args;
use timely::dataflow::operators::probe::Handle as ProbeHandle;

use crate::cluster::{ClusterArgs, EpochArgs};

/// Arguments of `alluvium run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "ALLUVIUM_KAFKA_BROKERS")]
    pub brokers: String,
    /// Prefix of the topic names (`orders`, `products`, `customers`).
    #[arg(long, default_value = "", env = "ALLUVIUM_TOPIC_PREFIX")]
    pub topic_prefix: String,
    /// Directory of the pipeline's committed tables. Default:
    /// `alluvium-state/<topic prefix>-<hash of the brokers>`, so that runs against other
    /// topics or another cluster never resume from each other's checkpoints.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Also write every silver/gold table and the quarantine counts as CSV into this directory
    /// when the run ends (with --until-idle).
    #[arg(long)]
    pub export_csv: Option<PathBuf>,
    /// Batch mode: the same graph over the topics' whole history in a few large epochs
    /// (implies --until-idle and 1,000,000-record epochs), into a fresh state directory.
    #[arg(long)]
    pub batch: bool,
    /// PostgreSQL warehouse to keep the gold tables in (schema `gold`, progress in
    /// `pipeline.progress`), e.g. `postgresql://user@host:5432/db`.
    #[arg(long, env = "ALLUVIUM_WAREHOUSE_URL")]
    pub warehouse_url: Option<String>,
    /// Upserts of at least this many rows into one warehouse table in one epoch go through
    /// `COPY` into a temporary table and a merge (fewer round trips for large epochs).
    #[arg(long, default_value_t = alluvium_connectors::warehouse::DEFAULT_BULK_ROWS)]
    pub warehouse_bulk_rows: usize,
    /// Name of this pipeline in `pipeline.progress`.
    #[arg(long, default_value = "medallion")]
    pub pipeline_name: String,
    /// Accepted currencies, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub currencies: Option<Vec<String>>,
    /// Start-up retries (exponential backoff) before the brokers are reported unreachable.
    #[arg(long, default_value_t = 5)]
    pub kafka_retries: u32,
    /// An extra librdkafka setting, `KEY=VALUE` (repeatable; e.g. `security.protocol=SASL_SSL`,
    /// `sasl.username=…`, `queued.max.messages.kbytes=16384`) for every Kafka client of the
    /// run; the consumer's group and offset settings stay Alluvium's. An unknown key fails
    /// the start, named by librdkafka.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_kafka_option)]
    pub kafka_options: Vec<(String, String)>,
    /// Serve the engine's metrics (`/metrics`: records per partition, epochs, commits and
    /// commit latency per sink) and `/healthz` on this address.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Data-quality rules file (TOML, see docs/quality.md): new row rules on the silver
    /// tables, and other severities/thresholds for the built-in rules.
    #[arg(long, env = "ALLUVIUM_DQ_CONFIG")]
    pub dq_config: Option<PathBuf>,
    #[command(flatten)]
    pub lake: crate::lake::LakeArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub epochs: EpochArgs,
}

/// Parses one `--kafka-option`: `KEY=VALUE`, the key not empty.
fn parse_kafka_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// The default state directory of a pipeline reading `prefix*` topics on `brokers`.
fn default_state(brokers: &str, prefix: &str) -> PathBuf {
    let hash = brokers.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let prefix = if prefix.is_empty() {
        "default"
    } else {
        prefix.trim_end_matches(['-', '.', '_'])
    };
    PathBuf::from("alluvium-state").join(format!("{prefix}-{:08x}", hash as u32))
}

/// Entry point of `alluvium run`.
pub fn run(mut args: RunArgs) -> Result<()> {
    let mut kafka = KafkaConfig::new(args.brokers.clone());
    kafka.retries = args.kafka_retries;
    kafka.settings = args.kafka_options.clone();
    kafka.validate()?;
    let cluster = args.cluster.config()?;
    if let Some(addr) = args.metrics_listen {
        let mut registry = prometheus_client::registry::Registry::default();
        alluvium_engine::metrics::engine_metrics().register(&mut registry);
        alluvium_dq::metrics::dq_metrics().register(&mut registry);
        alluvium_connectors::lake::metrics::lake_metrics().register(&mut registry);
        alluvium_connectors::warehouse::warehouse_metrics().register(&mut registry);
        crate::metrics_http::serve_in_background(addr, std::sync::Arc::new(registry))?;
    }
    let state = args
        .state
        .clone()
        .unwrap_or_else(|| default_state(&args.brokers, &args.topic_prefix));
    if args.batch {
        args.epochs.until_idle = true;
        args.epochs.epoch_records = args.epochs.epoch_records.max(1_000_000);
        args.epochs.epoch_ms = args.epochs.epoch_ms.max(60_000);
        if state.join("tables").exists() {
            anyhow::bail!(
                "invalid configuration `--state`: batch mode rebuilds every table from history; {} already holds tables",
                state.display()
            );
        }
    }
    // Batch mode reads a known amount of history: show how far it is.
    let progress = if args.batch {
        let topics = Topics::with_prefix(&args.topic_prefix);
        let mut total = 0u64;
        for t in topics.all() {
            for (_, end) in alluvium_connectors::kafka::admin::end_offsets(&kafka, &t)? {
                total += u64::try_from(end).unwrap_or(0);
            }
        }
        Some(crate::progress::Progress::start("backfill", total))
    } else {
        None
    };
    let dq = match &args.dq_config {
        Some(path) => alluvium_dq::DqConfig::load(path)?,
        None => alluvium_dq::DqConfig::default(),
    };
    let config = PipelineConfig {
        topics: Topics::with_prefix(&args.topic_prefix),
        currencies: args
            .currencies
            .as_ref()
            .map(Currencies::new)
            .unwrap_or_default(),
        rules: std::sync::Arc::new(MedallionRules::new(&dq)?),
    };
    let mut epochs = args.epochs.policy()?;
    // Epochs the lake holds back for its commit interval are uncommitted: leave the sources
    // room for them on top of the configured backpressure, or they would pause every interval.
    if args.lake.lake_commit_ms > 0 {
        let held = args
            .lake
            .lake_commit_ms
            .div_ceil(args.epochs.epoch_ms.max(1));
        epochs.max_inflight_epochs += usize::try_from(held).unwrap_or(usize::MAX);
    }
    let options = SourceOptions {
        epochs,
        mode: args.epochs.mode(),
        ..SourceOptions::default()
    };
    let warehouse = args.warehouse_url.as_deref().map(|url| {
        warehouse_sink(url, &args.pipeline_name).with_bulk_rows(args.warehouse_bulk_rows)
    });
    let lake = match args.lake.config()? {
        Some(c) => Some(LakeSinks::new(&c, &config.topics).context("setting up the Iceberg lake")?),
        None => None,
    };
    // The file table (a whole-table JSON rewritten per commit, for small runs and tests) only
    // when there is no lake: the lake holds every table, and `--export-csv` reads it.
    let sink = match &lake {
        None => {
            tracing::info!(state = %state.display(), "committed tables");
            Some(FileSink::<TableRow>::new(state.join("tables")))
        }
        Some(_) => None,
    };
    let sinks = PipelineSinks {
        table: sink.clone(),
        lake,
        warehouse,
    };
    let lake_config = sinks.lake.as_ref().map(|l| l.config().clone());
    run_medallion(&kafka, &cluster, &config, options, sinks)?;
    if let Some(p) = progress {
        p.finish();
    }
    if let (Some(dir), 0) = (&args.export_csv, args.cluster.process) {
        export_csv(dir, lake_config.as_ref(), sink.as_ref())?;
    }
    Ok(())
}

/// Writes the committed silver/gold tables and quarantine counts as CSV into `dir`: from the
/// lake when there is one, else from the file table.
pub(crate) fn export_csv(
    dir: &std::path::Path,
    lake: Option<&alluvium_connectors::lake::LakeConfig>,
    table: Option<&FileSink<TableRow>>,
) -> Result<()> {
    if let Some(l) = lake {
        alluvium_medallion::lake::export_csv(l, dir)
            .with_context(|| format!("writing CSV files to {}", dir.display()))?;
        println!("exported the lake's tables to {}", dir.display());
    } else if let Some(sink) = table {
        let state = sink
            .read_state()?
            .context("the pipeline committed nothing")?;
        let epoch = state.epoch;
        let rows: Vec<TableRow> = state.expanded_rows();
        alluvium_medallion::export::write_csv(dir, &rows)
            .with_context(|| format!("writing CSV files to {}", dir.display()))?;
        println!("exported the tables of epoch {epoch} to {}", dir.display());
    }
    Ok(())
}

/// Runs the medallion graph from the Kafka topics of `config` into `sinks` until the source
/// ends (`options.mode`), resuming every sink from its own checkpoint.
pub(crate) fn run_medallion(
    kafka: &KafkaConfig,
    cluster: &ClusterConfig,
    config: &PipelineConfig,
    options: SourceOptions,
    sinks: PipelineSinks,
) -> Result<()> {
    // Process 0 (it hosts the committers) fences earlier instances of the pipeline first,
    // so no checkpoint it reads below can move under this run's plan, and then hands that
    // plan to every process: another process reading the checkpoints itself, a moment
    // earlier, could see other ones. Sinks at different checkpoints (a crash between their
    // commits) each get exactly the epochs they miss: every checkpoint becomes a replay
    // boundary.
    let plan = if cluster.process == 0 {
        sinks.claim().context("claiming the sinks for this run")?;
        Some(ResumePlan::from_checkpoints(
            sinks
                .checkpoints()
                .context("reading the sinks' checkpoints")?,
            Rehydration::FromStart,
        )?)
    } else {
        None
    };
    let topics = config.topics.all();
    let kafka = kafka.clone();
    let graph_config = config.clone();
    execute(cluster, move |worker, ctx| {
        let plan = from_worker_zero(worker, plan.clone())
            .map_err(|e| format!("sharing the resume plan: {e}"))?;
        let probe = ProbeHandle::new();
        worker.dataflow(|scope| {
            let (records, positions) = kafka_source(
                scope,
                &kafka,
                &topics,
                ctx,
                &options,
                &plan,
                Some(probe.clone()),
            );
            let outputs = medallion(records, &graph_config, ctx);
            sinks.attach(outputs, positions, &plan, ctx, &probe)
        })
    })?;
    Ok(())
}
