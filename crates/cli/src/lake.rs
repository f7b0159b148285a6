//! Lake options shared by the commands that write or read the Iceberg lake, and
//! `alluvium lake …` (export).

use std::path::PathBuf;

use alluvium_connectors::lake::{LakeConfig, S3Options};
use alluvium_connectors::secret::Secret;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};

/// Where the Iceberg lake is. Either `--lake DIR` (SQLite catalog and warehouse on local
/// disk), or `--lake-warehouse` (`file:///…` or `s3://bucket/prefix`) with
/// `--lake-catalog-uri` (a SQL catalog's database, or a REST catalog's URL).
#[derive(Debug, Args, Clone, Default)]
pub struct LakeArgs {
    /// A lake on local disk: catalog `DIR/catalog.db` (SQLite), data in `DIR/warehouse`.
    #[arg(long, env = "ALLUVIUM_LAKE")]
    pub lake: Option<PathBuf>,
    /// Warehouse root (`file:///abs/dir` or `s3://bucket/prefix`); needs --lake-catalog-uri.
    #[arg(long, env = "ALLUVIUM_LAKE_WAREHOUSE")]
    pub lake_warehouse: Option<String>,
    /// The catalog: a database (`sqlite:///abs/path/catalog.db?mode=rwc` or
    /// `postgresql://…`, Iceberg's SQL catalog) or a REST catalog (`http://host:port`,
    /// without `/v1`).
    #[arg(long, env = "ALLUVIUM_LAKE_CATALOG_URI")]
    pub lake_catalog_uri: Option<String>,
    /// Bearer token for a REST catalog.
    #[arg(long, env = "ALLUVIUM_LAKE_CATALOG_TOKEN", hide_env_values = true)]
    pub lake_catalog_token: Option<Secret>,
    /// Catalog name (PyIceberg's `SqlCatalog(NAME, …)` must use the same).
    #[arg(long, default_value = "alluvium")]
    pub lake_catalog_name: String,
    /// Target size of the Parquet data files, MiB.
    #[arg(long, default_value_t = 128)]
    pub lake_file_mib: usize,
    /// Merge a table's small manifests once a commit would list this many (0: never).
    #[arg(long, default_value_t = 100)]
    pub lake_manifest_merge_count: usize,
    /// Commit the lake at most once per this many milliseconds (0: every epoch): epochs that
    /// complete sooner are committed together, one snapshot per table. The warehouse still
    /// commits every epoch.
    #[arg(long, default_value_t = 0)]
    pub lake_commit_ms: u64,
    /// Snapshots each table keeps as the pipeline commits (0: all, until `alluvium maintain`
    /// expires them). Once a table holds half as many again, a commit expires the oldest and
    /// deletes the files only they used.
    #[arg(long, default_value_t = alluvium_connectors::lake::DEFAULT_RETAIN_SNAPSHOTS)]
    pub lake_retain_snapshots: usize,
    /// Object storage settings for an `s3://` warehouse.
    #[command(flatten)]
    pub s3: S3Args,
}

/// S3 settings of commands that read or write object storage.
#[derive(Debug, Args, Clone, Default)]
pub struct S3Args {
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
    pub s3_secret_access_key: Option<Secret>,
    /// Virtual-hosted-style S3 addressing instead of path style.
    #[arg(long)]
    pub s3_virtual_hosted: bool,
}

impl S3Args {
    /// The connectors' S3 options.
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            path_style: !self.s3_virtual_hosted,
        }
    }
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
                LakeConfig::new(uri, warehouse.clone())
            }
        };
        config.catalog_name = self.lake_catalog_name.clone();
        config.catalog_token = self.lake_catalog_token.clone();
        config.target_file_size = self.lake_file_mib.max(1) * 1024 * 1024;
        config.manifest_merge_count = self.lake_manifest_merge_count;
        config.commit_interval = (self.lake_commit_ms > 0)
            .then(|| std::time::Duration::from_millis(self.lake_commit_ms));
        config.retain_snapshots = self.lake_retain_snapshots;
        config.s3 = self.s3.options();
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

/// Arguments of `alluvium maintain`.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Compact, per partition, the data files smaller than this many MiB.
    #[arg(long, default_value_t = 32)]
    pub small_file_mib: u64,
    /// Do not compact.
    #[arg(long)]
    pub no_compact: bool,
    /// Expire snapshots older than this many minutes (and delete the files only they use).
    #[arg(long, default_value_t = 24 * 60)]
    pub expire_older_than_minutes: i64,
    /// Keep at least this many snapshots per table.
    #[arg(long, default_value_t = 10)]
    pub retain_last: usize,
    /// Also delete files no snapshot references (crashed commit attempts) older than this many
    /// minutes — lakes on local disk only.
    #[arg(long)]
    pub remove_orphans_older_than_minutes: Option<u64>,
}

/// Entry point of `alluvium maintain`.
pub fn maintain(args: MaintainArgs) -> Result<()> {
    use alluvium_connectors::lake::maintain::{maintain, orphan_files_local, MaintainOptions};
    use alluvium_connectors::lake::read::blocking;
    let config = args
        .lake
        .config()?
        .context("invalid configuration: `--lake` or `--lake-warehouse` is required")?;
    let options = MaintainOptions {
        compact: !args.no_compact,
        small_file_bytes: args.small_file_mib * 1024 * 1024,
        expire_older_than_ms: Some(args.expire_older_than_minutes * 60_000),
        retain_last: args.retain_last,
    };
    let defs = alluvium_medallion::lake::all_defs();
    let reports = blocking(maintain(&config, &defs, &options))?;
    println!(
        "{:<26} {:>10} {:>8} {:>8} {:>8} {:>8}  note",
        "table", "compacted", "deletes", "written", "expired", "deleted"
    );
    for r in &reports {
        println!(
            "{:<26} {:>10} {:>8} {:>8} {:>8} {:>8}  {}",
            r.table,
            r.files_compacted,
            r.delete_files_removed,
            r.files_written,
            r.snapshots_expired,
            r.files_deleted,
            r.skipped.as_deref().unwrap_or("")
        );
    }
    if let Some(minutes) = args.remove_orphans_older_than_minutes {
        let removed = blocking(async {
            let catalog = config.open_catalog().await?;
            let mut removed = 0;
            for def in &defs {
                let table =
                    alluvium_connectors::lake::commit::ensure_table(catalog.as_ref(), def).await?;
                for path in
                    orphan_files_local(&table, std::time::Duration::from_secs(minutes * 60)).await?
                {
                    std::fs::remove_file(&path).map_err(|e| {
                        alluvium_connectors::lake::LakeError::Data(format!(
                            "removing {}: {e}",
                            path.display()
                        ))
                    })?;
                    removed += 1;
                }
            }
            Ok(removed)
        })?;
        println!("removed {removed} orphan files");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::LakeArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        lake: LakeArgs,
    }

    #[test]
    fn lake_options_print_no_credentials() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from([
            "alluvium",
            "--lake-warehouse",
            "s3://bucket/lake",
            "--lake-catalog-uri",
            "http://127.0.0.1:8181",
            "--lake-catalog-token",
            "token-abc",
            "--s3-secret-access-key",
            "key-xyz",
        ])?;
        let printed = format!("{:?} {:?}", cli.lake, cli.lake.config()?);
        assert!(!printed.contains("token-abc"), "{printed}");
        assert!(!printed.contains("key-xyz"), "{printed}");
        let config = cli
            .lake
            .config()?
            .ok_or_else(|| anyhow::anyhow!("no lake"))?;
        assert_eq!(
            config.catalog_token.as_ref().map(|t| t.expose()),
            Some("token-abc")
        );
        assert_eq!(
            config.s3.secret_access_key.as_ref().map(|t| t.expose()),
            Some("key-xyz")
        );
        Ok(())
    }
}
