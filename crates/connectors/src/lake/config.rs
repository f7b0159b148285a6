//! Where the lake lives: the catalog (a database or a REST server) and the warehouse location.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use iceberg::io::{
    S3_ACCESS_KEY_ID, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION, S3_SECRET_ACCESS_KEY,
};
use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_rest::{
    RestCatalogBuilder, REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE,
};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalStorageFactory;
use serde::{Deserialize, Serialize};

use super::catalog::CatalogWriter;
use super::rest::RestWriter;
use super::LakeError;
use crate::secret::{redact_url, Secret};

/// S3-compatible object storage settings (used when the warehouse is `s3://…`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Options {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000` (empty: AWS).
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<Secret>,
    /// Path-style addressing (needed by most self-hosted servers).
    pub path_style: bool,
}

/// Snapshots a table keeps by default as the pipeline commits ([`LakeConfig::retain_snapshots`]):
/// 20 s of history at five commits a second, and the metadata file stays near 200–300 KB.
pub const DEFAULT_RETAIN_SNAPSHOTS: usize = 100;

/// The lake: an Iceberg catalog (SQL or REST) and a warehouse location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LakeConfig {
    /// Catalog name: PyIceberg's `SqlCatalog(NAME, …)` must use the same one.
    pub catalog_name: String,
    /// The catalog: a database (`sqlite:///abs/path/catalog.db` or
    /// `postgresql://user@host/db`: Iceberg's SQL catalog) or a REST catalog's base URL
    /// (`http://host:8181`, without `/v1`).
    pub catalog_uri: String,
    /// Bearer token sent to a REST catalog (`None`: no `Authorization` header).
    #[serde(default)]
    pub catalog_token: Option<Secret>,
    /// Warehouse root: `file:///abs/dir` or `s3://bucket/prefix`.
    pub warehouse: String,
    /// Object storage settings for `s3://` warehouses.
    pub s3: S3Options,
    /// Target size of data files, bytes.
    pub target_file_size: usize,
    /// A commit merges a table's small manifests of one kind (data or deletes) into one once
    /// it would list this many (Iceberg's `commit.manifest.min-count-to-merge`, default
    /// 100). Every commit adds a manifest or two: without merging, the manifest list — read
    /// by every commit and every reader's scan planning — grows without bound.
    pub manifest_merge_count: usize,
    /// The least time between two commits of the lake's tables (`None`: every epoch is
    /// committed as soon as it is complete). Epochs that complete sooner are committed
    /// together: one snapshot per table per interval, fewer and larger files.
    pub commit_interval: Option<std::time::Duration>,
    /// Snapshots a table keeps as the pipeline commits (0: all, until `alluvium maintain`
    /// expires them). A commit that would leave more than half as many again drops the
    /// oldest down to this many, deletes the files only they used, and deletes the metadata
    /// files that fell off the metadata log. Every commit rewrites the table metadata, which
    /// lists every snapshot: without a bound, commits slow down as the history grows.
    pub retain_snapshots: usize,
}

impl LakeConfig {
    /// A lake with its catalog at `catalog_uri` and its data under `warehouse`, catalog name
    /// `alluvium`, 128 MiB data files, no S3 settings.
    pub fn new(catalog_uri: impl Into<String>, warehouse: impl Into<String>) -> Self {
        LakeConfig {
            catalog_name: "alluvium".into(),
            catalog_uri: catalog_uri.into(),
            catalog_token: None,
            warehouse: warehouse.into(),
            s3: S3Options::default(),
            target_file_size: 128 * 1024 * 1024,
            manifest_merge_count: 100,
            commit_interval: None,
            retain_snapshots: DEFAULT_RETAIN_SNAPSHOTS,
        }
    }

    /// A lake on local disk under `dir`: catalog `dir/catalog.db` (SQLite), data in
    /// `dir/warehouse`. The directory is created if needed.
    pub fn local(dir: &Path) -> Result<Self, LakeError> {
        std::fs::create_dir_all(dir.join("warehouse")).map_err(|e| {
            LakeError::Config(format!("`lake.dir`: creating {}: {e}", dir.display()))
        })?;
        let dir = std::fs::canonicalize(dir).map_err(|e| {
            LakeError::Config(format!("`lake.dir`: resolving {}: {e}", dir.display()))
        })?;
        Ok(LakeConfig::new(
            format!("sqlite://{}?mode=rwc", dir.join("catalog.db").display()),
            format!("file://{}", dir.join("warehouse").display()),
        ))
    }

    /// Checks the settings, naming the key that is wrong.
    pub fn validate(&self) -> Result<(), LakeError> {
        if self.catalog_name.is_empty() {
            return Err(LakeError::Config("`lake.catalog_name` is empty".into()));
        }
        if !(self.catalog_uri.starts_with("sqlite:")
            || self.catalog_uri.starts_with("postgres://")
            || self.catalog_uri.starts_with("postgresql://")
            || self.is_rest())
        {
            return Err(LakeError::Config(format!(
                "`lake.catalog_uri` must be sqlite:…, postgresql://… or http(s)://… (a REST catalog), got `{}`",
                self.catalog_uri
            )));
        }
        if !(self.warehouse.starts_with("file://") || self.warehouse.starts_with("s3://")) {
            return Err(LakeError::Config(format!(
                "`lake.warehouse` must be file:///… or s3://bucket/…, got `{}`",
                self.warehouse
            )));
        }
        if self.target_file_size < 1024 {
            return Err(LakeError::Config(
                "`lake.target_file_size` must be at least 1024 bytes".into(),
            ));
        }
        if self.retain_snapshots == 1 {
            // Expiry compares with the oldest kept snapshot that already exists.
            return Err(LakeError::Config(
                "`lake.retain_snapshots` must be 0 (keep every snapshot) or at least 2".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn is_postgres(&self) -> bool {
        self.catalog_uri.starts_with("postgres")
    }

    /// Whether the catalog is a REST catalog (`http://…` or `https://…`).
    pub fn is_rest(&self) -> bool {
        self.catalog_uri.starts_with("http://") || self.catalog_uri.starts_with("https://")
    }

    fn storage_props(&self) -> HashMap<String, String> {
        let mut props = HashMap::new();
        if self.warehouse.starts_with("s3://") {
            let s3 = &self.s3;
            if let Some(v) = &s3.endpoint {
                props.insert(S3_ENDPOINT.to_string(), v.clone());
            }
            props.insert(
                S3_REGION.to_string(),
                s3.region.clone().unwrap_or_else(|| "us-east-1".into()),
            );
            if let Some(v) = &s3.access_key_id {
                props.insert(S3_ACCESS_KEY_ID.to_string(), v.clone());
            }
            if let Some(v) = &s3.secret_access_key {
                props.insert(S3_SECRET_ACCESS_KEY.to_string(), v.expose().to_owned());
            }
            props.insert(S3_PATH_STYLE_ACCESS.to_string(), s3.path_style.to_string());
        }
        props
    }

    /// Opens the catalog (a SQL catalog creates its tables in the database on first use).
    pub async fn open_catalog(&self) -> Result<Arc<dyn Catalog>, LakeError> {
        self.validate()?;
        let factory = if self.warehouse.starts_with("s3://") {
            OpenDalStorageFactory::S3 {
                customized_credential_load: None,
            }
        } else {
            OpenDalStorageFactory::Fs
        };
        if self.is_rest() {
            let mut props = self.storage_props();
            props.insert(REST_CATALOG_PROP_URI.to_string(), self.catalog_uri.clone());
            props.insert(
                REST_CATALOG_PROP_WAREHOUSE.to_string(),
                self.warehouse.clone(),
            );
            if let Some(token) = &self.catalog_token {
                props.insert("token".to_string(), token.expose().to_owned());
            }
            let catalog = RestCatalogBuilder::default()
                .with_storage_factory(Arc::new(factory))
                .load(&self.catalog_name, props)
                .await
                .map_err(|e| {
                    LakeError::iceberg(
                        format!(
                            "opening the REST catalog at {}",
                            redact_url(&self.catalog_uri)
                        ),
                        e,
                    )
                })?;
            return Ok(Arc::new(catalog));
        }
        sqlx::any::install_default_drivers();
        let style = if self.is_postgres() {
            SqlBindStyle::DollarNumeric
        } else {
            SqlBindStyle::QMark
        };
        SqlCatalogBuilder::default()
            .uri(self.catalog_uri.clone())
            .warehouse_location(self.warehouse.clone())
            .sql_bind_style(style)
            .with_storage_factory(Arc::new(factory))
            .load(&self.catalog_name, self.storage_props())
            .await
            .map(|c| Arc::new(c) as Arc<dyn Catalog>)
            .map_err(|e| {
                LakeError::iceberg(
                    format!("opening the catalog at {}", redact_url(&self.catalog_uri)),
                    e,
                )
            })
    }

    /// What commits go through: a connection pool on the catalog database, or the REST
    /// catalog's commit endpoint. `catalog` is the catalog [`LakeConfig::open_catalog`] opened.
    pub(crate) async fn catalog_writer(
        &self,
        catalog: Arc<dyn Catalog>,
    ) -> Result<CatalogWriter, LakeError> {
        if self.is_rest() {
            Ok(CatalogWriter::Rest(
                RestWriter::connect(self, catalog).await?,
            ))
        } else {
            Ok(CatalogWriter::Sql(self.catalog_pool().await?))
        }
    }

    /// A connection pool on the catalog database, for the sink's compare-and-swap commits.
    async fn catalog_pool(&self) -> Result<sqlx::AnyPool, LakeError> {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&self.catalog_uri)
            .await
            .map_err(|source| LakeError::Catalog {
                source: Box::new(source),
                context: format!(
                    "connecting to the catalog database {}",
                    redact_url(&self.catalog_uri)
                ),
            })
    }
}
