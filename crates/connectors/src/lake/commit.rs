//! The manifest-level commit that iceberg-rust 0.10.1 does not offer: add data and position
//! delete files *and remove* files in one snapshot, with our own compare-and-swap on the
//! catalog row.
//!
//! iceberg-rust's only snapshot action is `fast_append`, and its `Catalog::update_table`
//! reloads the table and retries on conflict, so it can neither add delete files nor remove
//! files (both needed for current-state tables and compaction) nor fence a stale writer. A
//! commit here is the standard Iceberg v2 procedure, done by hand:
//!
//! 1. read the current snapshot's manifest list; manifests that hold none of the removed
//!    files are carried over as they are; the others are rewritten with the removed files
//!    marked `DELETED` and the rest `EXISTING` (keeping their sequence numbers);
//! 2. write one new data manifest with the added data files and one delete manifest with the
//!    added position delete files (`ADDED`, the new sequence number);
//! 3. write the manifest list, the snapshot (summary: operation, file/record counts, and the
//!    caller's properties such as the epoch and source positions) and the next metadata file;
//! 4. swap the catalog row's `metadata_location` from the version we read to the new one
//!    with one conditional `UPDATE`; zero rows updated means someone else committed first
//!    ([`LakeError::Conflict`]), and nothing of ours is referenced. In a REST catalog the
//!    server writes the metadata file and does the swap: the snapshot is sent as a commit
//!    request with requirements (see `lake::rest`).
//!
//! Files written for an attempt that does not commit are left unreferenced in the table's
//! `data/` and `metadata/` folders; `alluvium maintain` removes such orphans.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use alluvium_engine::{Checkpoint, Epoch, Positions};
use iceberg::spec::{
    DataContentType, DataFile, DataFileFormat, FormatVersion, ManifestContentType, ManifestFile,
    ManifestListWriter, ManifestWriter, ManifestWriterBuilder, Operation, Snapshot,
    SnapshotReference, SnapshotRetention, Summary, TableMetadata, MAIN_BRANCH,
};
use iceberg::table::Table;
use iceberg::MetadataLocation;
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent, TableUpdate};

use super::catalog::CatalogWriter;
use super::lease::{self, Claim};
use super::retention;
use super::table::TableDef;
use super::{LakeConfig, LakeError};

/// Manifests at least this large are left alone by merging (Iceberg's
/// `commit.manifest.target-size-bytes`): merging rewrites every entry it carries, so a
/// manifest that has grown to this size is not rewritten again and again.
const MANIFEST_TARGET_BYTES: i64 = 8 * 1024 * 1024;

/// A wholly deleted data file is removed from a manifest of at most this many live entries
/// ([`SnapshotChange::removable`]). Young files, which die most often, sit in the small
/// manifests of recent commits; removing one from a merged manifest of thousands would
/// rewrite all of them.
pub const SMALL_MANIFEST_ENTRIES: usize = 100;

/// A writer of one new manifest of `content` for snapshot `id`, at `path`.
fn manifest_writer(
    table: &Table,
    path: String,
    id: i64,
    content: ManifestContentType,
) -> Result<ManifestWriter, LakeError> {
    let name = table.identifier();
    let metadata = table.metadata();
    let output = table
        .file_io()
        .new_output(path)
        .map_err(err(format!("creating a manifest of {name}")))?;
    let builder = ManifestWriterBuilder::new(
        output,
        Some(id),
        metadata.current_schema().clone(),
        metadata.default_partition_spec().as_ref().clone(),
    );
    Ok(match content {
        ManifestContentType::Data => builder.build_v2_data(),
        ManifestContentType::Deletes => builder.build_v2_deletes(),
    })
}

/// The manifest `file` lists, from `cache` or read (and then cached).
async fn cached_manifest(
    table: &Table,
    file: &ManifestFile,
    cache: &mut ManifestCache,
) -> Result<std::sync::Arc<iceberg::spec::Manifest>, LakeError> {
    if let Some(m) = cache.get(&file.manifest_path) {
        return Ok(m.clone());
    }
    let m = std::sync::Arc::new(
        file.load_manifest(table.file_io())
            .await
            .map_err(err(format!("reading a manifest of {}", table.identifier())))?,
    );
    cache.insert(file.manifest_path.clone(), m.clone());
    Ok(m)
}

/// Merges, per kind (data, deletes), the manifests smaller than [`MANIFEST_TARGET_BYTES`] into
/// one new manifest once the list would hold `merge_count` manifests or more. Live entries
/// are carried as `EXISTING` with their snapshot id and sequence numbers, so readers apply
/// position deletes exactly as before. Files this commit removes stay listed as `DELETED`
/// (as Iceberg's merge does): that entry is how expiry later finds a removed file once no
/// kept snapshot uses it ([`super::retention`]). Older `DELETED` entries are dropped. A
/// manifest this very commit rewrote and now merges is listed nowhere: it is deleted.
/// Returns the list in its new form (merged manifests last).
async fn merge_small_manifests(
    merge_count: usize,
    table: &Table,
    manifests: Vec<ManifestFile>,
    cache: &mut ManifestCache,
    id: i64,
    manifest_path: &mut impl FnMut() -> String,
) -> Result<Vec<ManifestFile>, LakeError> {
    // Room for the one or two manifests this commit adds.
    if merge_count == 0 || manifests.len() + 2 < merge_count {
        return Ok(manifests);
    }
    let name = table.identifier().to_string();
    let mut kept = Vec::new();
    let mut merged = Vec::new();
    for content in [ManifestContentType::Data, ManifestContentType::Deletes] {
        let (small, rest): (Vec<ManifestFile>, Vec<ManifestFile>) = manifests
            .iter()
            .filter(|m| m.content == content)
            .cloned()
            .partition(|m| m.manifest_length < MANIFEST_TARGET_BYTES);
        kept.extend(rest);
        if small.len() < 2 {
            kept.extend(small);
            continue;
        }
        let mut writer = manifest_writer(table, manifest_path(), id, content)?;
        let mut entries = 0usize;
        for manifest in &small {
            let m = cached_manifest(table, manifest, cache).await?;
            for entry in m.entries().iter() {
                let seq = entry.sequence_number().unwrap_or(0);
                if entry.is_alive() {
                    writer
                        .add_existing_file(
                            entry.data_file().clone(),
                            entry.snapshot_id().unwrap_or(id),
                            seq,
                            entry.file_sequence_number,
                        )
                        .map_err(err(format!("merging manifests of {name}")))?;
                } else if entry.snapshot_id() == Some(id) {
                    writer
                        .add_delete_file(entry.data_file().clone(), seq, entry.file_sequence_number)
                        .map_err(err(format!("merging manifests of {name}")))?;
                } else {
                    continue;
                }
                entries += 1;
            }
        }
        for manifest in small.iter().filter(|m| m.added_snapshot_id == id) {
            if let Err(e) = table.file_io().delete(&manifest.manifest_path).await {
                tracing::warn!(table = %name, path = %manifest.manifest_path, error = %e, "could not delete a manifest merged in the commit that wrote it");
            }
        }
        // Manifests whose every file was removed leave nothing to list.
        if entries > 0 {
            merged.push(
                writer
                    .write_manifest_file()
                    .await
                    .map_err(err(format!("writing a manifest of {name}")))?,
            );
        }
        tracing::debug!(table = %name, ?content, manifests = small.len(), entries, "merged manifests");
    }
    kept.extend(merged);
    Ok(kept)
}

/// Snapshot summary key holding the epoch a snapshot commits.
pub const EPOCH_PROPERTY: &str = "alluvium.epoch";
/// Snapshot summary key holding the source positions (JSON) at the end of that epoch.
pub const POSITIONS_PROPERTY: &str = "alluvium.positions";

fn err(context: impl Into<String>) -> impl FnOnce(iceberg::Error) -> LakeError {
    let context = context.into();
    move |e| LakeError::iceberg(context, e)
}

/// Creates the table's namespace and the table itself when they do not exist, and loads it.
pub async fn ensure_table(
    catalog: &(impl Catalog + ?Sized),
    def: &TableDef,
) -> Result<Table, LakeError> {
    let namespace = NamespaceIdent::new(def.namespace.clone());
    let name = def.qualified_name();
    if !catalog
        .namespace_exists(&namespace)
        .await
        .map_err(err(format!("looking up namespace {}", def.namespace)))?
    {
        // A concurrent creator may win the race: then the namespace exists now. Otherwise the
        // refusal itself (a catalog that denies this credential, say) is the error to report,
        // not the table creation that would fail for want of a namespace.
        if let Err(e) = catalog.create_namespace(&namespace, HashMap::new()).await {
            match catalog.namespace_exists(&namespace).await {
                Ok(true) => {
                    tracing::debug!(error = %e, namespace = %def.namespace, "namespace creation raced")
                }
                _ => {
                    return Err(LakeError::iceberg(
                        format!("creating namespace {}", def.namespace),
                        e,
                    ))
                }
            }
        }
    }
    let ident = TableIdent::new(namespace.clone(), def.name.clone());
    if catalog
        .table_exists(&ident)
        .await
        .map_err(err(format!("looking up table {name}")))?
    {
        return catalog
            .load_table(&ident)
            .await
            .map_err(err(format!("loading table {name}")));
    }
    let creation = TableCreation::builder()
        .name(def.name.clone())
        .schema(def.schema()?)
        .partition_spec(def.partition_spec()?)
        .properties(HashMap::from([(
            "write.parquet.compression-codec".to_string(),
            "zstd".to_string(),
        )]))
        .build();
    match catalog.create_table(&namespace, creation).await {
        Ok(table) => Ok(table),
        // Another process (a peer of the cluster, a reader) created it meanwhile.
        Err(e) => match catalog.table_exists(&ident).await {
            Ok(true) => catalog
                .load_table(&ident)
                .await
                .map_err(err(format!("loading table {name}"))),
            _ => Err(LakeError::iceberg(format!("creating table {name}"), e)),
        },
    }
}

/// The last epoch committed to `table` by this sink, and its positions: the newest snapshot on
/// the main branch's ancestry that carries [`EPOCH_PROPERTY`] (maintenance snapshots, which
/// do not, are walked past).
pub fn last_commit(table: &Table) -> Result<Option<Checkpoint>, LakeError> {
    let metadata = table.metadata();
    let mut next = metadata.current_snapshot_id();
    while let Some(id) = next {
        let Some(snapshot) = metadata.snapshot_by_id(id) else {
            break; // expired ancestry: nothing older is known
        };
        let props = &snapshot.summary().additional_properties;
        if let Some(epoch) = props.get(EPOCH_PROPERTY) {
            let epoch: Epoch = epoch.parse().map_err(|_| {
                LakeError::Data(format!(
                    "snapshot {id} of {}: bad {EPOCH_PROPERTY} `{epoch}`",
                    table.identifier()
                ))
            })?;
            let positions: Positions = match props.get(POSITIONS_PROPERTY) {
                Some(p) => serde_json::from_str(p).map_err(|e| {
                    LakeError::Data(format!(
                        "snapshot {id} of {}: bad {POSITIONS_PROPERTY}: {e}",
                        table.identifier()
                    ))
                })?,
                None => Positions::new(),
            };
            return Ok(Some(Checkpoint { epoch, positions }));
        }
        next = snapshot.parent_snapshot_id();
    }
    Ok(None)
}

/// The live data files of the table's current snapshot.
pub async fn live_files(table: &Table) -> Result<Vec<DataFile>, LakeError> {
    Ok(live_files_and_deletes(table).await?.0)
}

/// The live data files and the live delete files of the table's current snapshot.
pub async fn live_files_and_deletes(
    table: &Table,
) -> Result<(Vec<DataFile>, Vec<DataFile>), LakeError> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let name = table.identifier().to_string();
    let list = table
        .manifest_list_reader(snapshot)
        .load()
        .await
        .map_err(err(format!("reading the manifest list of {name}")))?;
    let (mut data, mut deletes) = (Vec::new(), Vec::new());
    for manifest in list.entries() {
        let m = manifest
            .load_manifest(table.file_io())
            .await
            .map_err(err(format!("reading a manifest of {name}")))?;
        let live = m
            .entries()
            .iter()
            .filter(|e| e.is_alive())
            .map(|e| e.data_file().clone());
        match manifest.content {
            ManifestContentType::Data => data.extend(live),
            ManifestContentType::Deletes => deletes.extend(live),
        }
    }
    Ok((data, deletes))
}

/// Manifests already read, by path (manifest files are immutable): a committer checks the
/// manifests of every commit for removed files without reading them again.
pub type ManifestCache = HashMap<String, std::sync::Arc<iceberg::spec::Manifest>>;

/// What one snapshot changes.
#[derive(Debug, Default)]
pub struct SnapshotChange {
    /// Files to add: data files and position delete files (told apart by their content
    /// type; they go to a data and a delete manifest).
    pub added: Vec<DataFile>,
    /// Paths of live data or delete files to remove.
    pub removed: HashSet<String>,
    /// Paths of live data files whose every row is deleted (by position deletes): removed
    /// where that is cheap — when the manifest listing the file holds at most
    /// [`SMALL_MANIFEST_ENTRIES`] live entries or is rewritten anyway — and otherwise left
    /// listed, wholly deleted, until compaction.
    pub removable: HashSet<String>,
    /// Extra summary properties (epoch, positions, ...).
    pub properties: HashMap<String, String>,
}

pub(crate) fn snapshot_id(table: &Table) -> i64 {
    loop {
        let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) >> 1) as i64;
        if id != 0 && table.metadata().snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// Commits `change` on top of the snapshot `table` was loaded at, and returns the table as
/// committed. [`LakeError::Conflict`] when another writer committed in between;
/// [`LakeError::Superseded`] when `claim` (the writer lease the commit holds, if any) has
/// been claimed by a later run.
pub(crate) async fn commit_snapshot(
    config: &LakeConfig,
    writer: &CatalogWriter,
    table: &Table,
    change: SnapshotChange,
    cache: &mut ManifestCache,
    claim: Option<&Claim>,
) -> Result<Table, LakeError> {
    let metadata = table.metadata();
    if metadata.format_version() != FormatVersion::V2 {
        return Err(LakeError::Data(format!(
            "table {}: only Iceberg format v2 tables are supported",
            table.identifier()
        )));
    }
    let name = table.identifier().to_string();
    let file_io = table.file_io();
    let id = snapshot_id(table);
    let parent = metadata.current_snapshot_id();
    let sequence = metadata.next_sequence_number();
    let commit_uuid = uuid::Uuid::new_v4();
    let location = metadata.location();
    let mut counter = 0;
    let mut manifest_path = || {
        counter += 1;
        format!("{location}/metadata/{commit_uuid}-m{counter}.avro")
    };

    // 1. Carry over or rewrite the current manifests.
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let (mut removed_files, mut removed_records) = (0u64, 0u64);
    let (mut removed_delete_files, mut removed_deletes) = (0u64, 0u64);
    // Live entries carried into rewritten manifests (a cost that grows with the manifest).
    let mut rewritten_entries = 0usize;
    if let Some(current) = metadata.current_snapshot() {
        let list = table
            .manifest_list_reader(current)
            .load()
            .await
            .map_err(err(format!("reading the manifest list of {name}")))?;
        for manifest in list.consume_entries() {
            // A manifest whose files were all deleted by an earlier snapshot holds nothing.
            if manifest.added_files_count == Some(0)
                && manifest.existing_files_count == Some(0)
                && manifest.added_snapshot_id != metadata.current_snapshot_id().unwrap_or(-1)
            {
                continue;
            }
            let is_data = manifest.content == ManifestContentType::Data;
            // Removing a wholly deleted file rewrites its manifest, every entry of it: worth it
            // for a small manifest (readers skip the file), not for a big merged one. The
            // list's counts say which is which without reading the manifest.
            let small = is_data
                && manifest
                    .added_files_count
                    .zip(manifest.existing_files_count)
                    .is_some_and(|(a, e)| (a as usize + e as usize) <= SMALL_MANIFEST_ENTRIES);
            let may_remove = small && !change.removable.is_empty();
            if change.removed.is_empty() && !may_remove {
                manifests.push(manifest);
                continue;
            }
            let m = cached_manifest(table, &manifest, cache).await?;
            let live = || m.entries().iter().filter(|e| e.is_alive());
            let must = !change.removed.is_empty()
                && live().any(|e| change.removed.contains(e.file_path()));
            let may = may_remove && live().any(|e| change.removable.contains(e.file_path()));
            if !must && !may {
                manifests.push(manifest);
                continue;
            }
            let mut writer = manifest_writer(table, manifest_path(), id, manifest.content)?;
            let mut kept = 0;
            for entry in m.entries().iter().filter(|e| e.is_alive()) {
                let seq = entry.sequence_number().unwrap_or(0);
                let file_seq = entry.file_sequence_number;
                if change.removed.contains(entry.file_path())
                    || change.removable.contains(entry.file_path())
                {
                    if is_data {
                        removed_files += 1;
                        removed_records += entry.data_file().record_count();
                    } else {
                        removed_delete_files += 1;
                        removed_deletes += entry.data_file().record_count();
                    }
                    writer
                        .add_delete_file(entry.data_file().clone(), seq, file_seq)
                        .map_err(err(format!("rewriting a manifest of {name}")))?;
                } else {
                    kept += 1;
                    writer
                        .add_existing_file(
                            entry.data_file().clone(),
                            entry.snapshot_id().unwrap_or(id),
                            seq,
                            file_seq,
                        )
                        .map_err(err(format!("rewriting a manifest of {name}")))?;
                }
            }
            rewritten_entries += kept;
            manifests.push(
                writer
                    .write_manifest_file()
                    .await
                    .map_err(err(format!("writing a manifest of {name}")))?,
            );
        }
    }

    // 1b. Too many manifests: merge the small ones of each kind.
    let mut manifests = merge_small_manifests(
        config.manifest_merge_count,
        table,
        manifests,
        cache,
        id,
        &mut manifest_path,
    )
    .await?;

    // 2. The new files: data files in one manifest, position deletes in another.
    let (added, added_delete_files): (Vec<DataFile>, Vec<DataFile>) = change
        .added
        .into_iter()
        .partition(|f| f.content_type() == DataContentType::Data);
    let added_files = added.len() as u64;
    let added_records: u64 = added.iter().map(|f| f.record_count()).sum();
    let added_bytes: u64 = added
        .iter()
        .chain(&added_delete_files)
        .map(|f| f.file_size_in_bytes())
        .sum();
    let added_deletes: u64 = added_delete_files.iter().map(|f| f.record_count()).sum();
    let added_delete_count = added_delete_files.len() as u64;
    for (files, content) in [
        (added, ManifestContentType::Data),
        (added_delete_files, ManifestContentType::Deletes),
    ] {
        if files.is_empty() {
            continue;
        }
        let mut writer = manifest_writer(table, manifest_path(), id, content)?;
        for file in files {
            writer
                .add_file(file, sequence)
                .map_err(err(format!("writing a manifest of {name}")))?;
        }
        manifests.push(
            writer
                .write_manifest_file()
                .await
                .map_err(err(format!("writing a manifest of {name}")))?,
        );
    }

    // 3. Manifest list, snapshot, metadata file.
    let list_path = format!(
        "{location}/metadata/snap-{id}-0-{commit_uuid}.{}",
        DataFileFormat::Avro
    );
    let list_output = file_io
        .new_output(list_path.clone())
        .map_err(err(format!("creating the manifest list of {name}")))?;
    let list_writer = list_output
        .writer()
        .await
        .map_err(err(format!("creating the manifest list of {name}")))?;
    let mut list = ManifestListWriter::v2(list_writer, id, parent, sequence);
    // Manifests no longer listed (rewritten or merged) need not stay cached.
    let listed: HashSet<&str> = manifests.iter().map(|m| m.manifest_path.as_str()).collect();
    cache.retain(|path, _| listed.contains(path.as_str()));
    list.add_manifests(manifests.into_iter())
        .map_err(err(format!("writing the manifest list of {name}")))?;
    list.close()
        .await
        .map_err(err(format!("writing the manifest list of {name}")))?;

    let previous = metadata
        .current_snapshot()
        .map(|s| s.summary().additional_properties.clone())
        .unwrap_or_default();
    let total = |key: &str| -> u64 { previous.get(key).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let mut properties = change.properties;
    properties.insert("added-data-files".into(), added_files.to_string());
    properties.insert("added-records".into(), added_records.to_string());
    properties.insert("deleted-data-files".into(), removed_files.to_string());
    properties.insert("deleted-records".into(), removed_records.to_string());
    properties.insert(
        "total-data-files".into(),
        (total("total-data-files") + added_files)
            .saturating_sub(removed_files)
            .to_string(),
    );
    properties.insert(
        "total-records".into(),
        (total("total-records") + added_records)
            .saturating_sub(removed_records)
            .to_string(),
    );
    properties.insert("added-delete-files".into(), added_delete_count.to_string());
    properties.insert("added-position-deletes".into(), added_deletes.to_string());
    properties.insert(
        "removed-delete-files".into(),
        removed_delete_files.to_string(),
    );
    properties.insert(
        "removed-position-deletes".into(),
        removed_deletes.to_string(),
    );
    properties.insert(
        "total-delete-files".into(),
        (total("total-delete-files") + added_delete_count)
            .saturating_sub(removed_delete_files)
            .to_string(),
    );
    properties.insert(
        "total-position-deletes".into(),
        (total("total-position-deletes") + added_deletes)
            .saturating_sub(removed_deletes)
            .to_string(),
    );
    properties.insert("total-equality-deletes".into(), "0".into());
    let operation = if removed_files == 0 && added_delete_count == 0 && removed_delete_files == 0 {
        Operation::Append
    } else {
        Operation::Overwrite
    };
    let snapshot = next_snapshot(
        metadata,
        id,
        list_path,
        Summary {
            operation,
            additional_properties: properties,
        },
    );
    // 3b. Drop the oldest snapshots beyond the retention, in this same metadata file. A
    // failure to plan it only postpones it: the commit goes on without.
    let expiry = retention::plan(table, config.retain_snapshots)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(table = %name, error = %e, "not expiring snapshots in this commit");
            None
        })
        .unwrap_or_default();
    let (committed, old_metadata) = match writer {
        CatalogWriter::Rest(rest) => {
            // 4'. The server writes the metadata file (and deletes old ones as it is set to);
            // it applies the changes only if the table is still the one we loaded and
            // `main` still points at our parent.
            let (requirements, mut updates) = super::rest::snapshot_commit(metadata, snapshot);
            if !expiry.snapshot_ids.is_empty() {
                updates.push(TableUpdate::RemoveSnapshots {
                    snapshot_ids: expiry.snapshot_ids.clone(),
                });
            }
            let committed = rest.commit(table, requirements, updates, claim).await?;
            (committed, Vec::new())
        }
        CatalogWriter::Sql(pool) => {
            let current_location = table
                .metadata_location()
                .ok_or_else(|| LakeError::Data(format!("table {name} has no metadata location")))?
                .to_string();
            let built = metadata
                .clone()
                .into_builder(Some(current_location.clone()))
                .add_snapshot(snapshot)
                .and_then(|b| {
                    b.set_ref(
                        MAIN_BRANCH,
                        SnapshotReference::new(id, SnapshotRetention::branch(None, None, None)),
                    )
                })
                .map(|b| b.remove_snapshots(&expiry.snapshot_ids))
                .and_then(|b| b.build())
                .map_err(err(format!("building the next metadata of {name}")))?;
            let new_metadata = built.metadata;
            let new_location = MetadataLocation::from_str(&current_location)
                .map_err(err(format!("parsing the metadata location of {name}")))?
                // A new file (next version, new uuid): the current one is never written
                // over, so a crash mid-write leaves the committed metadata intact.
                .with_next_version();
            new_metadata
                .write_to(file_io, &new_location)
                .await
                .map_err(err(format!("writing the metadata file of {name}")))?;

            // 4. Compare-and-swap the catalog row.
            let new_location = new_location.to_string();
            swap_metadata_location(config, pool, table, &current_location, &new_location, claim)
                .await?;
            let committed = Table::builder()
                .metadata(new_metadata)
                .metadata_location(new_location)
                .identifier(table.identifier().clone())
                .file_io(file_io.clone())
                .runtime(
                    iceberg::Runtime::try_current()
                        .map_err(err(format!("reloading {name}: no async runtime")))?,
                )
                .build()
                .map_err(err(format!("reloading {name}")))?;
            // The metadata files that fell off the metadata log (Iceberg's
            // `write.metadata.delete-after-commit.enabled`; the log keeps
            // `write.metadata.previous-versions-max`, 100).
            let old_metadata = built
                .expired_metadata_logs
                .into_iter()
                .map(|log| log.metadata_file)
                .collect();
            (committed, old_metadata)
        }
    };
    super::metrics::lake_metrics().committed(&name, added_files, added_bytes, added_records);
    tracing::debug!(
        table = %name,
        added_files,
        added_delete_files = added_delete_count,
        removed_files,
        rewritten_entries,
        snapshots = committed.metadata().snapshots().count(),
        "committed a snapshot"
    );
    // 5. Committed: with a retention set, delete what only the expired snapshots used and
    // the metadata files we wrote that fell off the log.
    if config.retain_snapshots > 0 {
        if !expiry.snapshot_ids.is_empty() {
            tracing::debug!(table = %name, snapshots = expiry.snapshot_ids.len(), files = expiry.files.len(), "expired snapshots");
        }
        retention::delete_files(table, expiry.files.into_iter().chain(old_metadata)).await;
    }
    Ok(committed)
}

/// Snapshot `id` of a table at `metadata`: a child of its current snapshot, with the next
/// sequence number, the manifest list at `list_path` and `summary`.
pub(crate) fn next_snapshot(
    metadata: &TableMetadata,
    id: i64,
    list_path: String,
    summary: Summary,
) -> Snapshot {
    Snapshot::builder()
        .with_manifest_list(list_path)
        .with_snapshot_id(id)
        .with_parent_snapshot_id(metadata.current_snapshot_id())
        .with_sequence_number(metadata.next_sequence_number())
        .with_summary(summary)
        .with_schema_id(metadata.current_schema_id())
        .with_timestamp_ms(now_ms())
        .build()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn swap_metadata_location(
    config: &LakeConfig,
    pool: &sqlx::AnyPool,
    table: &Table,
    from: &str,
    to: &str,
    claim: Option<&Claim>,
) -> Result<(), LakeError> {
    let mut sql = if config.is_postgres() {
        "UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2 \
         WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5 AND metadata_location = $6"
    } else {
        "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND metadata_location = ?"
    }
    .to_string();
    if claim.is_some() {
        // The swap holds only while the lease is still ours, in the same statement.
        sql.push_str(lease::condition(config));
    }
    let ident = table.identifier();
    let mut query = sqlx::query(&sql)
        .bind(to)
        .bind(from)
        .bind(&config.catalog_name)
        .bind(ident.namespace().join("."))
        .bind(ident.name())
        .bind(from);
    if let Some(claim) = claim {
        query = query
            .bind(&config.catalog_name)
            .bind(&claim.writer)
            .bind(claim.generation);
    }
    let result = query
        .execute(pool)
        .await
        .map_err(|source| LakeError::Catalog {
            source: Box::new(source),
            context: format!("committing {ident} in the catalog"),
        })?;
    if result.rows_affected() == 0 {
        if let Some(claim) = claim {
            if let Some((found, holder)) = lease::current(config, pool, &claim.writer).await? {
                if found != claim.generation {
                    return Err(LakeError::Superseded {
                        writer: claim.writer.clone(),
                        claimed: claim.generation,
                        found,
                        holder,
                    });
                }
            }
        }
        return Err(LakeError::Conflict(ident.to_string()));
    }
    Ok(())
}
