//! Reading tables back as [`Row`]s, for exports, checks and tools (readers that query should
//! use an engine: PyIceberg, DuckDB, Spark).
//!
//! [`scan_table`] reads the live data files of the current snapshot directly and leaves out
//! the rows the snapshot's position deletes remove (current-state tables drop rows that way,
//! see [`super::deletes`]). It also works
//! where iceberg-rust 0.10.1's own scan does not: that scan resolves the column name
//! `_partition` (a bronze and quarantine column of the spec) to its reserved metadata column
//! and fails with "field not found". [`scan_table_with_iceberg`] is the library's scan, for
//! every other table.

use futures::TryStreamExt;
use iceberg::table::Table;
use iceberg::{NamespaceIdent, TableIdent};

use super::commit::live_files_and_deletes;
use super::deletes::{read_live_rows, DeletedPositions};
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

/// Every row of `def`'s current snapshot (empty when the table does not exist yet), in the
/// column order of `def`.
pub async fn scan_table(config: &LakeConfig, def: &TableDef) -> Result<Vec<Row>, LakeError> {
    let Some(table) = load(config, def).await? else {
        return Ok(Vec::new());
    };
    let (data, deletes) = live_files_and_deletes(&table).await?;
    let deleted = DeletedPositions::read(&table, &deletes).await?;
    let mut rows = Vec::new();
    for file in data {
        let path = file.file_path();
        rows.extend(
            read_live_rows(&table, path, deleted.of(path))
                .await?
                .into_iter()
                .map(|(_, row)| row),
        );
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
