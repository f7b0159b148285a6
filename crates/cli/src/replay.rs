//! `alluvium replay`: rebuild the pipeline's tables from a lake's bronze tables.
//!
//! The same graph as `alluvium run`, fed from the bronze rows (with their original topics,
//! partitions and offsets) instead of Kafka, in large epochs, into another lake (or file
//! tables) and optionally a warehouse. Uses: apply changed rules or a fixed bug to all of
//! history after the broker deleted it; build a second lake. Because the replay keeps the
//! offsets, its checkpoints are Kafka positions: `alluvium run` on the new lake continues
//! from the broker where bronze ended, and a replay that was interrupted resumes.

use std::path::PathBuf;
use std::sync::Arc;

use alluvium_connectors::lake::LakeConfig;
use alluvium_engine::sinks::file::FileSink;
use alluvium_medallion::codes::Currencies;
use alluvium_medallion::lake::LakeSinks;
use alluvium_medallion::quality::MedallionRules;
use alluvium_medallion::replay::bronze_logs;
use alluvium_medallion::sinks::PipelineSinks;
use alluvium_medallion::warehouse::warehouse_sink;
use alluvium_medallion::{PipelineConfig, TableRow, Topics};
use anyhow::{Context, Result};
use clap::Args;

use crate::lake::LakeArgs;

/// Arguments of `alluvium replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The lake to replay, on local disk (`DIR/catalog.db`, `DIR/warehouse`): its bronze
    /// tables are read, nothing in it is written.
    #[arg(long, required_unless_present = "from_lake_warehouse")]
    pub from_lake: Option<PathBuf>,
    /// Warehouse root of the lake to replay (`file:///…` or `s3://…`; S3 settings as for the
    /// target); needs --from-lake-catalog-uri.
    #[arg(long, conflicts_with = "from_lake", requires = "from_lake_catalog_uri")]
    pub from_lake_warehouse: Option<String>,
    /// Catalog database of the lake to replay (`sqlite:///…` or `postgresql://…`).
    #[arg(long)]
    pub from_lake_catalog_uri: Option<String>,
    /// Prefix of the topic names when a bronze table is empty (otherwise the names come
    /// from its `_topic` column).
    #[arg(long, default_value = "")]
    pub topic_prefix: String,
    /// File tables to commit to when there is no target lake.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Also write every silver/gold table and the quarantine counts as CSV into this
    /// directory when the replay ends.
    #[arg(long)]
    pub export_csv: Option<PathBuf>,
    /// PostgreSQL warehouse to keep the gold tables in.
    #[arg(long, env = "ALLUVIUM_WAREHOUSE_URL")]
    pub warehouse_url: Option<String>,
    /// Name of this pipeline in the warehouse's `pipeline.progress`.
    #[arg(long, default_value = "medallion")]
    pub pipeline_name: String,
    /// Accepted currencies, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub currencies: Option<Vec<String>>,
    /// Data-quality rules file (TOML, see docs/quality.md).
    #[arg(long, env = "ALLUVIUM_DQ_CONFIG")]
    pub dq_config: Option<PathBuf>,
    /// Worker threads.
    #[arg(short = 'w', long, default_value_t = 1, env = "ALLUVIUM_WORKERS")]
    pub workers: usize,
    /// Records per epoch (replays commit in few, large epochs).
    #[arg(long, default_value_t = 1_000_000)]
    pub epoch_records: usize,
    /// The lake to write.
    #[command(flatten)]
    pub lake: LakeArgs,
}

impl ReplayArgs {
    fn source_lake(&self) -> Result<LakeConfig> {
        let mut config = match (&self.from_lake, &self.from_lake_warehouse) {
            (Some(dir), _) => {
                anyhow::ensure!(
                    dir.join("catalog.db").is_file(),
                    "invalid configuration `--from-lake`: {} holds no lake (no catalog.db)",
                    dir.display()
                );
                LakeConfig::local(dir)?
            }
            (None, Some(warehouse)) => {
                let uri = self.from_lake_catalog_uri.clone().context(
                    "invalid configuration: `--from-lake-warehouse` needs `--from-lake-catalog-uri`",
                )?;
                LakeConfig::new(uri, warehouse.clone())
            }
            (None, None) => anyhow::bail!(
                "invalid configuration: give `--from-lake` or `--from-lake-warehouse`"
            ),
        };
        config.catalog_name = self.lake.lake_catalog_name.clone();
        config.s3 = self.lake.s3.options();
        config.validate()?;
        Ok(config)
    }
}

/// Entry point of `alluvium replay`.
pub fn run(args: ReplayArgs) -> Result<()> {
    anyhow::ensure!(
        args.workers > 0,
        "invalid configuration `--workers`: must be at least 1"
    );
    anyhow::ensure!(
        args.epoch_records > 0,
        "invalid configuration `--epoch-records`: must be at least 1"
    );
    let source = args.source_lake()?;
    let target = args.lake.config()?;
    if let Some(t) = &target {
        anyhow::ensure!(
            t.catalog_uri != source.catalog_uri || t.warehouse != source.warehouse,
            "invalid configuration `--lake`: the replay must write another lake than the one it \
             reads (its bronze tables would get every row twice)"
        );
    }
    anyhow::ensure!(
        target.is_some() || args.state.is_some(),
        "invalid configuration: give a lake to write (`--lake` or `--lake-warehouse`) or `--state`"
    );
    let dq = match &args.dq_config {
        Some(path) => alluvium_dq::DqConfig::load(path)?,
        None => alluvium_dq::DqConfig::default(),
    };

    let t = std::time::Instant::now();
    let bronze = bronze_logs(&source, &Topics::with_prefix(&args.topic_prefix))
        .context("reading the bronze tables to replay")?;
    tracing::info!(
        records = bronze.records(),
        orders = %bronze.topics.orders,
        products = %bronze.topics.products,
        customers = %bronze.topics.customers,
        elapsed = ?t.elapsed(),
        "bronze tables read"
    );
    let config = PipelineConfig {
        topics: bronze.topics.clone(),
        currencies: args
            .currencies
            .as_ref()
            .map(Currencies::new)
            .unwrap_or_default(),
        rules: Arc::new(MedallionRules::new(&dq)?),
    };
    let table = match (&target, &args.state) {
        (None, Some(state)) => Some(FileSink::<TableRow>::new(state.join("tables"))),
        _ => None,
    };
    let sinks = PipelineSinks {
        table: table.clone(),
        lake: match &target {
            Some(c) => {
                Some(LakeSinks::new(c, &config.topics).context("setting up the target lake")?)
            }
            None => None,
        },
        warehouse: args
            .warehouse_url
            .as_deref()
            .map(|url| warehouse_sink(url, &args.pipeline_name)),
    };
    let progress = crate::progress::Progress::start("replay", bronze.records() as u64);
    let t = std::time::Instant::now();
    let result = alluvium_medallion::memory::run_with_sinks(
        &bronze.logs,
        sinks,
        args.workers,
        args.epoch_records,
        &config,
    );
    progress.finish();
    result.context("replaying the bronze tables")?;
    println!(
        "replayed {} bronze records in {:.2?}",
        bronze.records(),
        t.elapsed()
    );
    if let Some(dir) = &args.export_csv {
        crate::run::export_csv(dir, target.as_ref(), table.as_ref())?;
    }
    Ok(())
}
