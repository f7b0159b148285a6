//! Reading tables back as [`Row`]s, for exports, checks and tools (readers that query should
//! use an engine: PyIceberg, DuckDB, Spark).
//!
//! [`scan_table`] reads the live data files of the current snapshot directly: the tables this
//! sink writes never carry delete files, so those files are exactly the table. It also works
//! where iceberg-rust 0.10.1's own scan does not: that scan resolves the column name
//! `_partition` (a bronze and quarantine column of the spec) to its reserved metadata column
//! and fails with "field not found". [`scan_table_with_iceberg`] is the library's scan, for
//! every other table.

use futures::TryStreamExt;
use iceberg::table::Table;
use iceberg::{Catalog, NamespaceIdent, TableIdent};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::commit::live_files;
use super::table::{from_record_batch, Row, TableDef};
use super::{LakeConfig, LakeError};

async fn load(config: &LakeConfig, def: &TableDef) -> Result<Option<Table>, LakeError> {
    let catalog = config.open_catalog().await?;
    let ident = TableIdent::new(NamespaceIdent::new(def.namespace.clone()), def.name.clone());
    let name = def.qualified_name();
    if !catalog
        .table_exists(&ident)
        .await
        .map_err(|e| LakeError::iceberg(format!("looking up {name}"), e))?
    {
        return Ok(None);
    }
    let table = catalog
        .load_table(&ident)
        .await
        .map_err(|e| LakeError::iceberg(format!("loading {name}"), e))?;
    Ok(table
        .metadata()
        .current_snapshot()
        .is_some()
        .then_some(table))
}

/// Reads every row of one data file.
pub(crate) async fn read_data_file(table: &Table, path: &str) -> Result<Vec<Row>, LakeError> {
    let bytes = table
        .file_io()
        .new_input(path)
        .map_err(|e| LakeError::iceberg(format!("opening {path}"), e))?
        .read()
        .await
        .map_err(|e| LakeError::iceberg(format!("reading {path}"), e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| LakeError::Data(format!("reading {path}: {e}")))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| LakeError::Data(format!("reading {path}: {e}")))?;
        rows.extend(from_record_batch(&batch)?);
    }
    Ok(rows)
}

/// Every row of `def`'s current snapshot (empty when the table does not exist yet), in the
/// column order of `def`.
pub async fn scan_table(config: &LakeConfig, def: &TableDef) -> Result<Vec<Row>, LakeError> {
    let Some(table) = load(config, def).await? else {
        return Ok(Vec::new());
    };
    let mut rows = Vec::new();
    for file in live_files(&table).await? {
        rows.extend(read_data_file(&table, file.file_path()).await?);
    }
    Ok(rows)
}

/// The same rows through iceberg-rust's own table scan (not for tables with a `_partition`
/// column, see the module docs).
pub async fn scan_table_with_iceberg(
    config: &LakeConfig,
    def: &TableDef,
) -> Result<Vec<Row>, LakeError> {
    let Some(table) = load(config, def).await? else {
        return Ok(Vec::new());
    };
    let name = def.qualified_name();
    let columns: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
    let stream = table
        .scan()
        .select(columns)
        .build()
        .map_err(|e| LakeError::iceberg(format!("planning a scan of {name}"), e))?
        .to_arrow()
        .await
        .map_err(|e| LakeError::iceberg(format!("scanning {name}"), e))?;
    let batches: Vec<_> = stream
        .try_collect()
        .await
        .map_err(|e| LakeError::iceberg(format!("scanning {name}"), e))?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(from_record_batch(batch)?);
    }
    Ok(rows)
}

/// Runs `f` on a private runtime, for synchronous callers.
pub fn blocking<T>(
    f: impl std::future::Future<Output = Result<T, LakeError>>,
) -> Result<T, LakeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LakeError::Config(format!("starting an async runtime: {e}")))?
        .block_on(f)
}

/// [`scan_table`] for synchronous callers.
pub fn scan_table_blocking(config: &LakeConfig, def: &TableDef) -> Result<Vec<Row>, LakeError> {
    blocking(scan_table(config, def))
}
