//! Bounded history: a committing pipeline expires its own oldest snapshots as it goes.
//!
//! Every commit adds a snapshot to the table's metadata, and every commit writes the whole
//! metadata again: one JSON file listing every snapshot, about 2 KB each with its summary
//! (the epoch and the source positions among it). A pipeline committing every 200 ms adds
//! 18,000 snapshots an hour per table, so without expiry the metadata file — serialised,
//! written and fsynced per table per commit — grows without bound, and with it the time and
//! the disk space of every commit (measured: p99 latency from 1.1 s after 30 s of a steady
//! 10 k events/s to 4.5 s after three minutes, docs/performance.md). `alluvium maintain`
//! expires snapshots too, but hourly maintenance is far too seldom for that rate.
//!
//! So a commit that would leave more than `retain + retain / 2` snapshots on the main branch
//! also drops the oldest ones, keeping `retain` (the new one included), in the same metadata
//! file it writes anyway; after the catalog swap it deletes the files only the dropped
//! snapshots referenced. Expiring a batch at a time makes the work a fraction of a commit on
//! average.
//!
//! Finding those files cheaply rests on how this crate commits ([`super::commit`]): history is
//! linear, and each commit's manifest list is its parent's with some manifests replaced
//! (rewritten with removed files marked `DELETED`, merged, or dropped when empty) and new ones
//! added; a manifest that leaves the list never comes back, and a removed file is never added
//! again (paths are unique). Hence, for the dropped snapshots `E` and the oldest kept one `K`:
//!
//! - a manifest some snapshot of `E` lists is still used iff `K` lists it (had a later kept
//!   snapshot listed it, so would `K`, which lies between);
//! - a data or delete file is used by no kept snapshot iff a manifest only `E` lists marks it
//!   `DELETED`: it was removed at or before the last dropped snapshot (before `K`), and its
//!   live entries are in manifests replaced by then. Files still live are carried into
//!   manifests `K` lists and are not touched.
//!
//! So the manifest lists of `E` and `K` are read, plus those manifests only `E` lists that
//! count deleted files — not every manifest of every snapshot, as general expiry must
//! ([`super::maintain`]).
//!
//! Snapshots that a tag or branch other than `main` points at are kept, with everything
//! older. Readers still planning a scan of a snapshot `retain` commits old may find its files
//! gone; the retention is a setting ([`super::LakeConfig::retain_snapshots`]).

use std::collections::HashSet;

use iceberg::spec::{ManifestStatus, MAIN_BRANCH};
use iceberg::table::Table;

use super::LakeError;

/// The snapshots a commit drops, and the files only they referenced.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Expiry {
    /// Ids of the dropped snapshots, newest first.
    pub snapshot_ids: Vec<i64>,
    /// Manifest lists, manifests, data and delete files to delete after the commit.
    pub files: Vec<String>,
}

/// What the next commit of `table` should expire so that `retain` snapshots remain with the
/// one it adds, or `None` while the main branch holds no more than `retain + retain / 2` with
/// it (or `retain` is 0: no expiry).
pub(crate) async fn plan(table: &Table, retain: usize) -> Result<Option<Expiry>, LakeError> {
    if retain == 0 {
        return Ok(None);
    }
    // The oldest kept snapshot must be one that exists already (`validate` refuses 1).
    let retain = retain.max(2);
    let metadata = table.metadata();
    // The main branch's ancestry, newest first, as far as it is known.
    let mut chain = Vec::new();
    let mut next = metadata.current_snapshot_id();
    while let Some(snapshot) = next.and_then(|id| metadata.snapshot_by_id(id)) {
        chain.push(snapshot.clone());
        next = snapshot.parent_snapshot_id();
    }
    if chain.len() < retain + retain / 2 {
        return Ok(None);
    }
    // Snapshots a tag or another branch points at are kept, and so is everything newer.
    let tagged = other_refs(table)?;
    let first_dropped = match chain
        .iter()
        .rposition(|s| tagged.contains(&s.snapshot_id()))
    {
        Some(t) => (t + 1).max(retain - 1),
        None => retain - 1,
    };
    if first_dropped >= chain.len() {
        return Ok(None);
    }
    let name = table.identifier().to_string();
    let read_list = |snapshot: &iceberg::spec::SnapshotRef| {
        let name = &name;
        let reader = table.manifest_list_reader(snapshot);
        async move {
            reader.load().await.map_err(|e| {
                LakeError::iceberg(format!("reading a manifest list of {name} to expire it"), e)
            })
        }
    };
    let oldest_kept = &chain[first_dropped - 1];
    let kept: HashSet<String> = read_list(oldest_kept)
        .await?
        .consume_entries()
        .into_iter()
        .map(|m| m.manifest_path)
        .collect();
    let mut expiry = Expiry::default();
    let mut seen = HashSet::new();
    for snapshot in &chain[first_dropped..] {
        expiry.snapshot_ids.push(snapshot.snapshot_id());
        expiry.files.push(snapshot.manifest_list().to_string());
        for manifest in read_list(snapshot).await?.consume_entries() {
            if kept.contains(&manifest.manifest_path)
                || !seen.insert(manifest.manifest_path.clone())
            {
                continue;
            }
            if manifest.deleted_files_count != Some(0) {
                let m = manifest.load_manifest(table.file_io()).await.map_err(|e| {
                    LakeError::iceberg(format!("reading a manifest of {name} to expire it"), e)
                })?;
                expiry.files.extend(
                    m.entries()
                        .iter()
                        .filter(|e| e.status() == ManifestStatus::Deleted)
                        .map(|e| e.file_path().to_string()),
                );
            }
            expiry.files.push(manifest.manifest_path);
        }
    }
    Ok(Some(expiry))
}

/// Snapshot ids that refs other than `main` point at. iceberg-rust 0.10.1 has no accessor
/// for the refs, so they are read from the metadata's serialised form (only when a commit is
/// about to expire snapshots).
fn other_refs(table: &Table) -> Result<HashSet<i64>, LakeError> {
    let json = serde_json::to_value(table.metadata()).map_err(|e| {
        LakeError::Data(format!(
            "serialising the metadata of {}: {e}",
            table.identifier()
        ))
    })?;
    Ok(json
        .get("refs")
        .and_then(|r| r.as_object())
        .map(|refs| {
            refs.iter()
                .filter(|(name, _)| name.as_str() != MAIN_BRANCH)
                .filter_map(|(_, r)| r.get("snapshot-id").and_then(|id| id.as_i64()))
                .collect()
        })
        .unwrap_or_default())
}

/// Deletes `files` (after the commit that stopped referencing them). A failure is logged, not
/// returned: the commit stands, and a file left behind is an orphan, which `alluvium
/// maintain --remove-orphans-older-than-minutes` removes on local lakes.
pub(crate) async fn delete_files(table: &Table, files: impl IntoIterator<Item = String>) {
    for path in files {
        if let Err(e) = table.file_io().delete(&path).await {
            tracing::warn!(table = %table.identifier(), %path, error = %e, "could not delete a file of an expired snapshot");
        }
    }
}
