//! Position deletes: how current-state tables drop rows without rewriting files
//! (merge-on-read).
//!
//! An Iceberg v2 *position delete file* lists `(file_path, pos)` pairs: "row `pos` of data
//! file `file_path` is gone". It applies to the data files of its partition whose data
//! sequence number is not newer than its own, so a snapshot can remove single rows by adding
//! a small file instead of rewriting the files that hold them. iceberg-rust 0.10.1 reads such
//! files in its scans but has no writer for them; this module writes them (a two-column
//! Parquet file with the reserved field ids 2147483546 and 2147483545, rows sorted by path
//! and position, as the spec requires) and reads them back, for the sink's row index, for
//! [`super::read`] and for compaction.
//!
//! Readers that apply position deletes: iceberg-rust's scan, PyIceberg, DuckDB, Spark, Trino.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Struct};
use iceberg::table::Table;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::table::{from_record_batch, Row};
use super::LakeError;

/// Reserved field id of `file_path` in position delete files (Iceberg spec).
const FILE_PATH_FIELD_ID: i32 = 2147483546;
/// Reserved field id of `pos` in position delete files (Iceberg spec).
const POS_FIELD_ID: i32 = 2147483545;

fn delete_schema() -> Arc<Schema> {
    let field = |name: &str, ty: DataType, id: i32| {
        Field::new(name, ty, false).with_metadata(HashMap::from([(
            parquet::arrow::PARQUET_FIELD_ID_META_KEY.to_string(),
            id.to_string(),
        )]))
    };
    Arc::new(Schema::new(vec![
        field("file_path", DataType::Utf8, FILE_PATH_FIELD_ID),
        field("pos", DataType::Int64, POS_FIELD_ID),
    ]))
}

/// Writes one position delete file for `partition` under the table's data folder and
/// returns its description for a delete manifest. `deletes` is sorted here (the spec wants
/// rows ordered by path, then position).
pub(crate) async fn write_position_deletes(
    table: &Table,
    partition: Struct,
    name_prefix: &str,
    deletes: &mut [(Arc<str>, i64)],
) -> Result<DataFile, LakeError> {
    let name = table.identifier().to_string();
    deletes.sort_unstable();
    let batch = RecordBatch::try_new(
        delete_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                deletes.iter().map(|(p, _)| &**p),
            )),
            Arc::new(Int64Array::from_iter_values(
                deletes.iter().map(|(_, i)| *i),
            )),
        ],
    )
    .map_err(|e| LakeError::Data(format!("position deletes of {name}: {e}")))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))
        .map_err(|e| LakeError::Data(format!("position deletes of {name}: {e}")))?;
    writer
        .write(&batch)
        .map_err(|e| LakeError::Data(format!("position deletes of {name}: {e}")))?;
    writer
        .close()
        .map_err(|e| LakeError::Data(format!("position deletes of {name}: {e}")))?;
    let path = format!(
        "{}/data/{name_prefix}-deletes-{}.parquet",
        table.metadata().location(),
        uuid::Uuid::new_v4().simple()
    );
    let size = bytes.len() as u64;
    table
        .file_io()
        .new_output(&path)
        .map_err(|e| LakeError::iceberg(format!("creating {path}"), e))?
        .write(bytes.into())
        .await
        .map_err(|e| LakeError::iceberg(format!("writing {path}"), e))?;
    let referenced = match deletes {
        [(first, _), .., (last, _)] if first == last => Some(first.to_string()),
        [(only, _)] => Some(only.to_string()),
        _ => None,
    };
    DataFileBuilder::default()
        .content(DataContentType::PositionDeletes)
        .file_path(path)
        .file_format(DataFileFormat::Parquet)
        .partition(partition)
        .partition_spec_id(table.metadata().default_partition_spec_id())
        .record_count(deletes.len() as u64)
        .file_size_in_bytes(size)
        .referenced_data_file(referenced)
        .build()
        .map_err(|e| LakeError::Data(format!("describing a delete file of {name}: {e}")))
}

/// Deleted positions per data file path, each list sorted and free of duplicates.
#[derive(Debug, Default)]
pub(crate) struct DeletedPositions {
    by_path: HashMap<String, Vec<i64>>,
}

impl DeletedPositions {
    /// Reads every given position delete file (other delete kinds are refused: this
    /// project never writes them and applying them is not implemented).
    pub(crate) async fn read(table: &Table, deletes: &[DataFile]) -> Result<Self, LakeError> {
        let mut by_path: HashMap<String, Vec<i64>> = HashMap::new();
        for file in deletes {
            let path = file.file_path();
            if file.content_type() != DataContentType::PositionDeletes {
                return Err(LakeError::Data(format!(
                    "table {}: {path} holds equality deletes, which this project does not read",
                    table.identifier()
                )));
            }
            for batch in read_batches(table, path).await? {
                let paths = batch
                    .column_by_name("file_path")
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>());
                let positions = batch
                    .column_by_name("pos")
                    .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
                let (Some(paths), Some(positions)) = (paths, positions) else {
                    return Err(LakeError::Data(format!(
                        "{path} is not a position delete file (file_path, pos)"
                    )));
                };
                for i in 0..batch.num_rows() {
                    if paths.is_null(i) || positions.is_null(i) {
                        continue;
                    }
                    by_path
                        .entry(paths.value(i).to_string())
                        .or_default()
                        .push(positions.value(i));
                }
            }
        }
        for positions in by_path.values_mut() {
            positions.sort_unstable();
            positions.dedup();
        }
        Ok(DeletedPositions { by_path })
    }

    /// The deleted positions of one data file, sorted.
    pub(crate) fn of(&self, path: &str) -> &[i64] {
        self.by_path.get(path).map(Vec::as_slice).unwrap_or(&[])
    }
}

async fn read_batches(table: &Table, path: &str) -> Result<Vec<RecordBatch>, LakeError> {
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
    reader
        .map(|b| b.map_err(|e| LakeError::Data(format!("reading {path}: {e}"))))
        .collect()
}

/// The live rows of one data file with their positions, skipping the `deleted` ones
/// (sorted).
pub(crate) async fn read_live_rows(
    table: &Table,
    path: &str,
    deleted: &[i64],
) -> Result<Vec<(i64, Row)>, LakeError> {
    let mut rows = Vec::new();
    let mut pos = 0i64;
    let mut next_deleted = deleted.iter().peekable();
    for batch in read_batches(table, path).await? {
        for row in from_record_batch(&batch)? {
            while next_deleted.peek().is_some_and(|d| **d < pos) {
                next_deleted.next();
            }
            if next_deleted.peek() != Some(&&pos) {
                rows.push((pos, row));
            }
            pos += 1;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use alluvium_engine::{Positions, Sink, SinkCommitter, SinkWriter};
    use iceberg::spec::Transform;

    use super::super::commit::{ensure_table, live_files_and_deletes};
    use super::super::maintain::{maintain, MaintainOptions};
    use super::super::read::{blocking, scan_table_blocking, scan_table_with_iceberg};
    use super::super::sink::IcebergWriter;
    use super::super::table::{Column, ColumnType, TableDef, TableMode, Value};
    use super::super::{IcebergSink, LakeConfig};

    /// `(id, group, text)`: partitioned by `group`.
    type Thing = (i64, i64, String);

    fn def() -> TableDef {
        TableDef::new(
            "silver",
            "things",
            TableMode::CurrentState,
            vec![
                Column::required("id", ColumnType::Long),
                Column::required("grp", ColumnType::Long),
                Column::optional("text", ColumnType::String),
            ],
        )
        .partitioned_by("grp", Transform::Identity)
    }

    fn sink(config: &LakeConfig) -> IcebergSink<Thing> {
        IcebergSink::new(config.clone(), vec![def()], |t: &Thing| {
            Some((
                0,
                vec![
                    Value::Long(t.0),
                    Value::Long(t.1),
                    Value::String(t.2.as_str().into()),
                ],
            ))
        })
        .unwrap()
    }

    fn rows_of(model: &BTreeMap<Thing, usize>) -> Vec<Vec<Value>> {
        let mut rows: Vec<Vec<Value>> = model
            .iter()
            .flat_map(|(t, n)| {
                std::iter::repeat_n(
                    vec![
                        Value::Long(t.0),
                        Value::Long(t.1),
                        Value::String(t.2.as_str().into()),
                    ],
                    *n,
                )
            })
            .collect();
        rows.sort_by_key(|r| format!("{r:?}"));
        rows
    }

    fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
        rows.sort_by_key(|r| format!("{r:?}"));
        rows
    }

    /// A tiny deterministic generator (no test dependency needed).
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Runs `epochs` random epochs of inserts, duplicates, updates and retractions (some
    /// emptying whole files) through a fresh sink, checking the table after each commit.
    fn run_epochs(
        config: &LakeConfig,
        model: &mut BTreeMap<Thing, usize>,
        rng: &mut Rng,
        epochs: std::ops::Range<u64>,
    ) {
        let sink = sink(config);
        sink.table_checkpoints().unwrap();
        let mut writer = sink.writer(0).unwrap();
        let mut committer = sink.committer().unwrap();
        let mut waiting = Vec::new();
        let mut grouped = 0;
        for epoch in epochs.clone() {
            let mut updates: Vec<(Thing, isize)> = Vec::new();
            let live: Vec<Thing> = model.keys().cloned().collect();
            for _ in 0..rng.below(25) {
                let id = rng.below(1_000) as i64;
                let t = (id, id % 3, format!("v{}", rng.below(4)));
                let copies = if rng.below(10) == 0 { 2 } else { 1 };
                updates.push((t, copies));
            }
            // Retract a random share of the live rows (all of them now and then).
            let share = if rng.below(8) == 0 { 1 } else { 4 };
            for t in &live {
                if rng.below(share) == 0 {
                    updates.push((t.clone(), -(model[t] as isize)));
                }
            }
            for (t, d) in &updates {
                let n = model.entry(t.clone()).or_default();
                *n = (*n as isize + d) as usize;
            }
            model.retain(|_, n| *n > 0);
            let staged: Vec<_> = writer.stage(epoch, &updates).unwrap().into_iter().collect();
            waiting.push((epoch, staged, Positions::new()));
            // Now and then let epochs wait and commit them as a group (a committer that
            // fell behind); a group committed twice (a retry) changes nothing.
            if rng.below(3) == 0 && epoch + 1 < epochs.end {
                continue;
            }
            match waiting.as_slice() {
                [(epoch, staged, positions)] => {
                    committer.commit(*epoch, staged, positions).unwrap()
                }
                group => {
                    committer.commit_group(group).unwrap();
                    committer.commit_group(group).unwrap();
                    grouped += 1;
                }
            }
            waiting.clear();
            assert_eq!(
                sorted(scan_table_blocking(config, &def()).unwrap()),
                rows_of(model),
                "epoch {epoch}"
            );
        }
        assert!(
            grouped > 0 || epochs.end - epochs.start < 10,
            "no group commit"
        );
    }

    /// `alluvium maintain`'s compaction alone (no expiry).
    fn compact(config: &LakeConfig) -> Vec<super::super::maintain::TableReport> {
        blocking(maintain(
            config,
            &[def()],
            &MaintainOptions {
                expire_older_than_ms: None,
                ..MaintainOptions::default()
            },
        ))
        .unwrap()
    }

    fn delete_files(config: &LakeConfig) -> usize {
        blocking(async {
            let catalog = config.open_catalog().await?;
            let table = ensure_table(catalog.as_ref(), &def()).await?;
            Ok(live_files_and_deletes(&table).await?.1.len())
        })
        .unwrap()
    }

    /// Merge-on-read end to end: random changes committed as data files plus position
    /// deletes read back exactly by this crate and by iceberg-rust's own scan, after a
    /// restart (index rebuilt from files and deletes), and after compaction folded the
    /// deletes away.
    #[test]
    fn position_deletes_keep_every_reader_exact() {
        let dir = tempfile::tempdir().unwrap();
        let config = LakeConfig::local(dir.path()).unwrap();
        let mut model = BTreeMap::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        run_epochs(&config, &mut model, &mut rng, 1..25);
        assert!(
            delete_files(&config) > 0,
            "no position deletes were written"
        );
        let iceberg_rows = blocking(scan_table_with_iceberg(&config, &def())).unwrap();
        assert_eq!(sorted(iceberg_rows), rows_of(&model));

        // A restarted committer rebuilds its index from the data files minus the deletes.
        run_epochs(&config, &mut model, &mut rng, 25..40);

        // Compaction applies the deletes and removes every delete file.
        let reports = compact(&config);
        assert!(reports[0].delete_files_removed > 0, "{reports:?}");
        assert_eq!(delete_files(&config), 0);
        assert_eq!(
            sorted(scan_table_blocking(&config, &def()).unwrap()),
            rows_of(&model)
        );
        let iceberg_rows = blocking(scan_table_with_iceberg(&config, &def())).unwrap();
        assert_eq!(sorted(iceberg_rows), rows_of(&model));
        run_epochs(&config, &mut model, &mut rng, 40..50);
    }

    fn manifest_count(config: &LakeConfig) -> usize {
        blocking(async {
            let catalog = config.open_catalog().await?;
            let table = ensure_table(catalog.as_ref(), &def()).await?;
            let Some(snapshot) = table.metadata().current_snapshot() else {
                return Ok(0);
            };
            let list = table
                .manifest_list_reader(snapshot)
                .load()
                .await
                .map_err(|e| crate::lake::LakeError::iceberg("manifest list".into(), e))?;
            Ok(list.entries().len())
        })
        .unwrap()
    }

    /// A fresh lake with `merge_count`, after the same 24 random epochs every time.
    fn history(merge_count: usize) -> (tempfile::TempDir, LakeConfig, BTreeMap<Thing, usize>, Rng) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = LakeConfig::local(dir.path()).unwrap();
        config.manifest_merge_count = merge_count;
        let mut model = BTreeMap::new();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        run_epochs(&config, &mut model, &mut rng, 1..25);
        (dir, config, model, rng)
    }

    /// Manifest merging: with a merge count of 4, a table committed 40 times lists at most
    /// 4 manifests, and every reader (ours after each commit, iceberg-rust's scan, a
    /// restarted committer rebuilding its index) still sees exactly the model's rows — the
    /// merged entries keep the sequence numbers that decide which deletes apply to them.
    #[test]
    fn merged_manifests_keep_every_reader_exact() {
        let (_dir, config, mut model, mut rng) = history(4);
        assert!(
            delete_files(&config) > 0,
            "no position deletes were written"
        );
        let merged = manifest_count(&config);
        assert!((1..=4).contains(&merged), "{merged} manifests");
        let iceberg_rows = blocking(scan_table_with_iceberg(&config, &def())).unwrap();
        assert_eq!(sorted(iceberg_rows), rows_of(&model));
        run_epochs(&config, &mut model, &mut rng, 25..40);
        assert!(manifest_count(&config) <= 4);
        let iceberg_rows = blocking(scan_table_with_iceberg(&config, &def())).unwrap();
        assert_eq!(sorted(iceberg_rows), rows_of(&model));

        // Without merging the same history lists a manifest or two per commit.
        let (_dir, unmerged, _, _) = history(0);
        let unmerged_count = manifest_count(&unmerged);
        assert!(unmerged_count > 8, "{unmerged_count}");
    }

    /// The table as committed now.
    fn table(config: &LakeConfig) -> iceberg::table::Table {
        blocking(async {
            let catalog = config.open_catalog().await?;
            ensure_table(catalog.as_ref(), &def()).await
        })
        .unwrap()
    }

    /// Bounded history: with a retention of 4 snapshots the committer expires its oldest
    /// snapshots as it commits — through manifest merges and a compaction (whose removed
    /// files are found through their `DELETED` entries) — and every reader still sees exactly
    /// the model's rows; no file is left that
    /// no snapshot references (the files of expired snapshots, including the compacted-away
    /// data and delete files, were deleted), and old metadata files beyond the metadata log
    /// are deleted too.
    #[test]
    fn committing_expires_old_snapshots_and_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = LakeConfig::local(dir.path()).unwrap();
        config.manifest_merge_count = 4;
        config.retain_snapshots = 4;
        let mut model = BTreeMap::new();
        let mut rng = Rng(0x6a09_e667_f3bc_c908);
        let no_orphans = |config: &LakeConfig| {
            let orphans = blocking(super::super::maintain::orphan_files_local(
                &table(config),
                std::time::Duration::ZERO,
            ))
            .unwrap();
            assert!(orphans.is_empty(), "unreferenced files: {orphans:?}");
        };
        run_epochs(&config, &mut model, &mut rng, 1..30);
        let snapshots = table(&config).metadata().snapshots().count();
        assert!((4..=6).contains(&snapshots), "{snapshots} snapshots");
        no_orphans(&config);

        // Compaction removes data and delete files; once its snapshot is expired they go.
        let reports = compact(&config);
        assert!(reports[0].files_compacted > 0, "{reports:?}");
        run_epochs(&config, &mut model, &mut rng, 30..40);
        no_orphans(&config);
        let iceberg_rows = blocking(scan_table_with_iceberg(&config, &def())).unwrap();
        assert_eq!(sorted(iceberg_rows), rows_of(&model));

        // More commits than the metadata log holds (100): older metadata files are deleted.
        run_epochs(&config, &mut model, &mut rng, 40..170);
        let t = table(&config);
        assert!(t.metadata().snapshots().count() <= 6);
        let metadata_dir = t
            .metadata()
            .location()
            .trim_start_matches("file://")
            .to_string()
            + "/metadata";
        let metadata_files = std::fs::read_dir(&metadata_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".metadata.json")
            })
            .count();
        assert_eq!(metadata_files, t.metadata().metadata_log().len() + 1);
        assert!(metadata_files <= 101, "{metadata_files} metadata files");
        no_orphans(&config);
        let iceberg_rows = blocking(scan_table_with_iceberg(&config, &def())).unwrap();
        assert_eq!(sorted(iceberg_rows), rows_of(&model));
    }

    /// A table the lake holds with another partitioning than the definition's is refused
    /// before anything is written, naming the table and both partitionings.
    #[test]
    fn a_table_partitioned_otherwise_in_the_lake_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = LakeConfig::local(dir.path()).unwrap();
        let mut model = BTreeMap::new();
        let mut rng = Rng(7);
        run_epochs(&config, &mut model, &mut rng, 1..3);
        let other = def().partitioned_by("id", Transform::Bucket(4));
        let sink: IcebergSink<Thing> =
            IcebergSink::new(config.clone(), vec![other], |_: &Thing| None).unwrap();
        let error = sink.table_checkpoints().unwrap_err().to_string();
        assert!(
            error.contains("silver.things")
                && error.contains("identity(grp)")
                && error.contains("bucket[4](id)"),
            "{error}"
        );
        assert!(sink.committer().is_err());
        // The table itself is untouched.
        assert_eq!(
            sorted(scan_table_blocking(&config, &def()).unwrap()),
            rows_of(&model)
        );
    }

    /// A second instance claims the lake before it plans: from then on the first one can
    /// commit nothing (fenced, naming the generations), and the second goes on from exactly
    /// what the first committed.
    #[test]
    fn a_later_claim_fences_the_earlier_committer() {
        let dir = tempfile::tempdir().unwrap();
        let config = LakeConfig::local(dir.path()).unwrap();
        let stage = |writer: &mut IcebergWriter<Thing>, epoch, t: &Thing| -> Vec<_> {
            writer
                .stage(epoch, &[(t.clone(), 1)])
                .unwrap()
                .into_iter()
                .collect()
        };
        let (a, b, c) = (
            (1, 1, "a".to_string()),
            (2, 2, "b".to_string()),
            (3, 0, "c".to_string()),
        );
        let old = sink(&config);
        old.table_checkpoints().unwrap();
        let mut old_writer = old.writer(0).unwrap();
        let mut old_committer = old.committer().unwrap(); // claims the lease
        old_committer
            .commit(1, &stage(&mut old_writer, 1, &a), &Positions::new())
            .unwrap();

        let new = sink(&config);
        let first = new.claim().unwrap().generation;
        assert_eq!(
            new.claim().unwrap().generation,
            first,
            "claimed once per run"
        );
        let error = old_committer
            .commit(2, &stage(&mut old_writer, 2, &b), &Positions::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("fenced") && error.contains(&format!("generation {first}")),
            "{error}"
        );
        let planned = new.table_checkpoints().unwrap();
        assert_eq!(planned[0].as_ref().map(|c| c.epoch), Some(1));
        let mut new_writer = new.writer(0).unwrap();
        let mut new_committer = new.committer().unwrap();
        new_committer
            .commit(2, &stage(&mut new_writer, 2, &c), &Positions::new())
            .unwrap();
        let model: BTreeMap<Thing, usize> = [(a, 1), (c, 1)].into_iter().collect();
        assert_eq!(
            sorted(scan_table_blocking(&config, &def()).unwrap()),
            rows_of(&model)
        );
        // `alluvium maintain` holds no lease: it still compacts beside the new instance.
        compact(&config);
        assert_eq!(
            sorted(scan_table_blocking(&config, &def()).unwrap()),
            rows_of(&model)
        );
    }
}
