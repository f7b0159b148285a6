//! Lake options shared by the commands that write or read the Iceberg lake, and
//! `alluvium lake …` (export).

use std::path::PathBuf;

use alluvium_connectors::lake::{LakeConfig, S3Options};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};

/// Where the Iceberg lake is. Either `--lake DIR` (SQLite catalog and warehouse on local
/// disk), or `--lake-warehouse` (`file:///…` or `s3://bucket/prefix`) with
/// `--lake-catalog-uri`.
#[derive(Debug, Args, Clone, Default)]
pub struct LakeArgs {
    /// A lake on local disk: catalog `DIR/catalog.db` (SQLite), data in `DIR/warehouse`.
    #[arg(long, env = "ALLUVIUM_LAKE")]
    pub lake: Option<PathBuf>,
    /// Warehouse root (`file:///abs/dir` or `s3://bucket/prefix`); needs --lake-catalog-uri.
    #[arg(long, env = "ALLUVIUM_LAKE_WAREHOUSE")]
    pub lake_warehouse: Option<String>,
    /// Catalog database: `sqlite:///abs/path/catalog.db?mode=rwc` or `postgresql://…`.
    #[arg(long, env = "ALLUVIUM_LAKE_CATALOG_URI")]
    pub lake_catalog_uri: Option<String>,
    /// Catalog name (PyIceberg's `SqlCatalog(NAME, …)` must use the same).
    #[arg(long, default_value = "alluvium")]
    pub lake_catalog_name: String,
    /// Target size of the Parquet data files, MiB.
    #[arg(long, default_value_t = 128)]
    pub lake_file_mib: usize,
    /// S3 endpoint, for S3-compatible servers.
    #[arg(long, env = "ALLUVIUM_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "AWS_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Virtual-hosted-style S3 addressing instead of path style.
    #[arg(long)]
    pub s3_virtual_hosted: bool,
}

impl LakeArgs {
    /// The lake configuration, or `None` when no lake was asked for.
    pub fn config(&self) -> Result<Option<LakeConfig>> {
        let mut config = match (&self.lake, &self.lake_warehouse) {
            (Some(_), Some(_)) => anyhow::bail!(
                "invalid configuration: give either `--lake` or `--lake-warehouse`, not both"
            ),
            (None, None) => return Ok(None),
            (Some(dir), None) => LakeConfig::local(dir)?,
            (None, Some(warehouse)) => {
                let uri = self.lake_catalog_uri.clone().context(
                    "invalid configuration: `--lake-warehouse` needs `--lake-catalog-uri`",
                )?;
                let mut c = LakeConfig::local(&std::env::temp_dir().join("alluvium-unused"))?;
                c.catalog_uri = uri;
                c.warehouse = warehouse.clone();
                c
            }
        };
        config.catalog_name = self.lake_catalog_name.clone();
        config.target_file_size = self.lake_file_mib.max(1) * 1024 * 1024;
        config.s3 = S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            path_style: !self.s3_virtual_hosted,
        };
        config.validate()?;
        Ok(Some(config))
    }
}

/// `alluvium lake …`
#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// Write the current snapshot of every silver and gold table as CSV (the names and formats
    /// of a fixture's `expected/` folder), plus `quarantine_counts.csv`.
    Export {
        #[command(flatten)]
        lake: LakeArgs,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Entry point of `alluvium lake`.
pub fn run(cmd: LakeCommand) -> Result<()> {
    match cmd {
        LakeCommand::Export { lake, out } => {
            let config = lake
                .config()?
                .context("invalid configuration: `--lake` or `--lake-warehouse` is required")?;
            alluvium_medallion::lake::export_csv(&config, &out)?;
            println!("exported the lake's tables to {}", out.display());
            Ok(())
        }
    }
}
