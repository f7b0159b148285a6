//! Table maintenance: compacting small files and expiring old snapshots (`alluvium maintain`).
//!
//! Every epoch adds files (append-only tables) or rewrites the files of touched partitions
//! (current-state tables), so a long-running pipeline leaves many small files and a long
//! snapshot history. Maintenance, safe to run beside a live pipeline:
//!
//! - **compaction**: per partition, the data files smaller than a threshold are read and
//!   rewritten as one file (rolling at the target size) in a single overwrite snapshot; a
//!   partition that has position deletes (current-state tables, see [`super::deletes`]) is
//!   rewritten whole with the deletes applied, and its delete files are removed. The
//!   snapshot carries the epoch and positions of the table's last committed epoch — it holds
//!   exactly that epoch's rows — so recovery and fencing see no difference. If the pipeline
//!   commits in between, the compare-and-swap fails and the table is skipped this time;
//! - **expiry**: snapshots older than a cutoff are dropped from the metadata (keeping at least
//!   the last N and always the current one), then the data files, manifests and manifest lists
//!   that no remaining snapshot references are deleted.
//!
//! Files of commit attempts that never committed (a crash during a write) are referenced by
//! no snapshot and cannot be found without listing storage; [`orphan_files_local`] lists them
//! for lakes on local disk.

use std::collections::{HashMap, HashSet};

use iceberg::spec::Struct;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::Catalog;

use super::catalog::CatalogWriter;
use super::commit::{
    commit_snapshot, ensure_table, last_commit, live_files_and_deletes, SnapshotChange,
    EPOCH_PROPERTY, POSITIONS_PROPERTY,
};
use super::deletes::{read_live_rows, DeletedPositions};
use super::sink::OpenTable;
use super::table::{Row, TableDef};
use super::{LakeConfig, LakeError};

/// What maintenance does.
#[derive(Clone, Debug)]
pub struct MaintainOptions {
    /// Compact files smaller than `small_file_bytes`.
    pub compact: bool,
    /// Files below this size are compacted (when a partition has two or more of them).
    pub small_file_bytes: u64,
    /// Expire snapshots older than this many milliseconds (`None`: no expiry).
    pub expire_older_than_ms: Option<i64>,
    /// Keep at least this many snapshots (≥ 1).
    pub retain_last: usize,
}

impl Default for MaintainOptions {
    fn default() -> Self {
        MaintainOptions {
            compact: true,
            small_file_bytes: 32 * 1024 * 1024,
            expire_older_than_ms: Some(24 * 3600 * 1000),
            retain_last: 10,
        }
    }
}

/// What maintenance did to one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableReport {
    /// `namespace.table`.
    pub table: String,
    /// Small files replaced by compaction.
    pub files_compacted: usize,
    /// Files compaction wrote.
    pub files_written: usize,
    /// Position delete files folded into the compacted files.
    pub delete_files_removed: usize,
    /// Snapshots expired.
    pub snapshots_expired: usize,
    /// Data files, manifests and manifest lists deleted after expiry.
    pub files_deleted: usize,
    /// Set when the table was skipped (e.g. the pipeline committed during compaction).
    pub skipped: Option<String>,
}

/// Runs maintenance on every table of `defs`.
pub async fn maintain(
    config: &LakeConfig,
    defs: &[TableDef],
    options: &MaintainOptions,
) -> Result<Vec<TableReport>, LakeError> {
    if options.retain_last == 0 {
        return Err(LakeError::Config("`retain_last` must be at least 1".into()));
    }
    let catalog = config.open_catalog().await?;
    let writer = config.catalog_writer(catalog.clone()).await?;
    let mut reports = Vec::with_capacity(defs.len());
    for def in defs {
        let mut report = TableReport {
            table: def.qualified_name(),
            ..TableReport::default()
        };
        let mut table = ensure_table(catalog.as_ref(), def).await?;
        if options.compact {
            match compact(
                config,
                &writer,
                def,
                &table,
                options.small_file_bytes,
                &mut report,
            )
            .await
            {
                Ok(Some(t)) => table = t,
                Ok(None) => {}
                Err(LakeError::Conflict(_)) => {
                    report.skipped = Some("the pipeline committed during compaction".into());
                    table = catalog.load_table(table.identifier()).await.map_err(|e| {
                        LakeError::iceberg(format!("reloading {}", report.table), e)
                    })?;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(age) = options.expire_older_than_ms {
            expire(
                catalog.as_ref(),
                &table,
                age,
                options.retain_last,
                &mut report,
            )
            .await?;
        }
        reports.push(report);
    }
    Ok(reports)
}

async fn compact(
    config: &LakeConfig,
    writer: &CatalogWriter,
    def: &TableDef,
    table: &Table,
    small: u64,
    report: &mut TableReport,
) -> Result<Option<Table>, LakeError> {
    let Some(checkpoint) = last_commit(table)? else {
        return Ok(None); // nothing committed by a pipeline yet
    };
    // Per partition: its small files, and whether position deletes apply to it. A
    // partition with deletes is compacted whole (every data file read with its deletes
    // applied and rewritten), so its delete files can all be removed.
    let (data, delete_files) = live_files_and_deletes(table).await?;
    let mut with_deletes: HashMap<Struct, Vec<String>> = HashMap::new();
    for file in &delete_files {
        with_deletes
            .entry(file.partition().clone())
            .or_default()
            .push(file.file_path().to_string());
    }
    let mut groups: HashMap<Struct, Vec<String>> = HashMap::new();
    for file in &data {
        if file.file_size_in_bytes() < small || with_deletes.contains_key(file.partition()) {
            groups
                .entry(file.partition().clone())
                .or_default()
                .push(file.file_path().to_string());
        }
    }
    groups.retain(|partition, files| files.len() >= 2 || with_deletes.contains_key(partition));
    if groups.is_empty() {
        return Ok(None);
    }
    let deleted = DeletedPositions::read(table, &delete_files).await?;
    let open = OpenTable::new(def.clone(), table.clone())?;
    let mut change = SnapshotChange::default();
    let mut rows: Vec<Row> = Vec::new();
    for (partition, files) in &groups {
        for path in files {
            rows.extend(
                read_live_rows(table, path, deleted.of(path))
                    .await?
                    .into_iter()
                    .map(|(_, row)| row),
            );
            change.removed.insert(path.clone());
        }
        for path in with_deletes.get(partition).into_iter().flatten() {
            change.removed.insert(path.clone());
            report.delete_files_removed += 1;
        }
    }
    let counted: Vec<(&Row, usize)> = rows.iter().map(|r| (r, 1)).collect();
    let prefix = format!("compact-{}", uuid::Uuid::new_v4().simple());
    change.added = open.write_files(config, &prefix, &counted).await?;
    report.files_compacted = change.removed.len() - report.delete_files_removed;
    report.files_written = change.added.len();
    change
        .properties
        .insert(EPOCH_PROPERTY.into(), checkpoint.epoch.to_string());
    change.properties.insert(
        POSITIONS_PROPERTY.into(),
        serde_json::to_string(&checkpoint.positions)
            .map_err(|e| LakeError::Data(format!("serialising positions: {e}")))?,
    );
    change
        .properties
        .insert("alluvium.maintenance".into(), "compact".into());
    commit_snapshot(config, writer, table, change, &mut Default::default(), None)
        .await
        .map(Some)
}

/// Every file a snapshot of `table` references: manifest lists, manifests, data files.
async fn referenced_files(table: &Table) -> Result<HashSet<String>, LakeError> {
    let name = table.identifier().to_string();
    let mut files = HashSet::new();
    let mut manifests_seen = HashSet::new();
    for snapshot in table.metadata().snapshots() {
        files.insert(snapshot.manifest_list().to_string());
        let list = table
            .manifest_list_reader(snapshot)
            .load()
            .await
            .map_err(|e| LakeError::iceberg(format!("reading a manifest list of {name}"), e))?;
        for manifest in list.entries() {
            if !manifests_seen.insert(manifest.manifest_path.clone()) {
                continue;
            }
            files.insert(manifest.manifest_path.clone());
            let m = manifest
                .load_manifest(table.file_io())
                .await
                .map_err(|e| LakeError::iceberg(format!("reading a manifest of {name}"), e))?;
            for entry in m.entries() {
                files.insert(entry.file_path().to_string());
            }
        }
    }
    Ok(files)
}

async fn expire(
    catalog: &dyn Catalog,
    table: &Table,
    older_than_ms: i64,
    retain_last: usize,
    report: &mut TableReport,
) -> Result<(), LakeError> {
    let name = report.table.clone();
    let before_count = table.metadata().snapshots().count();
    if before_count <= retain_last {
        return Ok(());
    }
    let before = referenced_files(table).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let tx = Transaction::new(table);
    let tx = tx
        .expire_snapshots()
        .expire_older_than_ms(now - older_than_ms)
        .retain_last(retain_last)
        .apply(tx)
        .map_err(|e| LakeError::iceberg(format!("expiring snapshots of {name}"), e))?;
    let table = tx
        .commit(catalog)
        .await
        .map_err(|e| LakeError::iceberg(format!("expiring snapshots of {name}"), e))?;
    report.snapshots_expired = before_count - table.metadata().snapshots().count();
    let after = referenced_files(&table).await?;
    for path in before.difference(&after) {
        table
            .file_io()
            .delete(path)
            .await
            .map_err(|e| LakeError::iceberg(format!("deleting {path}"), e))?;
        report.files_deleted += 1;
    }
    Ok(())
}

/// The data and metadata files under a local table's folder that no snapshot and no metadata
/// file references (leftovers of commit attempts that crashed), older than `min_age`.
pub async fn orphan_files_local(
    table: &Table,
    min_age: std::time::Duration,
) -> Result<Vec<std::path::PathBuf>, LakeError> {
    let Some(root) = table.metadata().location().strip_prefix("file://") else {
        return Ok(Vec::new());
    };
    let mut referenced = referenced_files(table).await?;
    if let Some(m) = table.metadata_location() {
        referenced.insert(m.to_string());
    }
    for entry in table.metadata().metadata_log() {
        referenced.insert(entry.metadata_file.clone());
    }
    let referenced: HashSet<String> = referenced
        .into_iter()
        .map(|p| p.trim_start_matches("file://").to_string())
        .collect();
    let mut orphans = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let old_enough = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            let is_metadata_json = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".metadata.json"));
            if old_enough
                && !is_metadata_json
                && !referenced.contains(path.to_string_lossy().as_ref())
            {
                orphans.push(path);
            }
        }
    }
    Ok(orphans)
}
