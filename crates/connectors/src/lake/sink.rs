//! [`IcebergSink`]: the engine [`Sink`] that keeps a set of Iceberg tables equal to a
//! collection, one snapshot per table per epoch.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::Arc;

use alluvium_engine::{
    Checkpoint, Epoch, EpochToCommit, Positions, Sink, SinkCommitter, SinkError, SinkWriter,
};
use iceberg::spec::{
    deserialize_data_file_from_json, serialize_data_file_to_json, DataFile, DataFileFormat,
    FormatVersion, PartitionKey, Struct, Transform,
};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::{IcebergWriter as _, IcebergWriterBuilder};
use iceberg::{Catalog, NamespaceIdent, TableIdent};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::catalog::CatalogWriter;
use super::commit::{
    commit_snapshot, ensure_table, last_commit, live_files_and_deletes, ManifestCache,
    SnapshotChange, EPOCH_PROPERTY, POSITIONS_PROPERTY,
};
use super::deletes::{read_live_rows, write_position_deletes, DeletedPositions};
use super::lease::{Claim, WriterLease};
use super::table::{group_by_partition, to_record_batch, Partitioner, Row, TableDef, TableMode};
use super::{LakeConfig, LakeError};

/// Maps a collection row to `(table index, values)`, or `None` for rows of no lake table.
pub type LakeRowMapper<D> = Arc<dyn Fn(&D) -> Option<(usize, Row)> + Send + Sync>;

/// The lakehouse sink over rows of type `D`.
pub struct IcebergSink<D> {
    config: Arc<LakeConfig>,
    tables: Arc<Vec<TableDef>>,
    mapper: LakeRowMapper<D>,
    /// Each table's last epoch as first reported by [`IcebergSink::table_checkpoints`] — what
    /// the run's resume plan was built from. The committer refuses to start on tables that
    /// moved since: another instance committed to them.
    planned: Arc<std::sync::Mutex<Option<Vec<Option<Epoch>>>>>,
    /// The writer lease its commits hold (shared by the sinks of one pipeline).
    lease: Arc<WriterLease>,
    _rows: PhantomData<fn() -> D>,
}

impl<D> Clone for IcebergSink<D> {
    fn clone(&self) -> Self {
        IcebergSink {
            config: self.config.clone(),
            tables: self.tables.clone(),
            mapper: self.mapper.clone(),
            planned: self.planned.clone(),
            lease: self.lease.clone(),
            _rows: PhantomData,
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, LakeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LakeError::Config(format!("starting an async runtime: {e}")))
}

fn ident(def: &TableDef) -> TableIdent {
    TableIdent::new(NamespaceIdent::new(def.namespace.clone()), def.name.clone())
}

impl<D> IcebergSink<D> {
    /// A sink writing `tables` into the lake of `config`; `mapper` says which table (an index
    /// into `tables`) a row belongs to and its values.
    pub fn new(
        config: LakeConfig,
        tables: Vec<TableDef>,
        mapper: impl Fn(&D) -> Option<(usize, Row)> + Send + Sync + 'static,
    ) -> Result<Self, LakeError> {
        config.validate()?;
        for t in &tables {
            t.schema()?;
            t.partitioner()?;
        }
        // Alone, a sink's lease is named after its tables; pipelines with several sinks on
        // one lake give them one lease ([`IcebergSink::with_lease`]).
        let lease = WriterLease::new(format!(
            "tables:{}",
            tables
                .iter()
                .map(TableDef::qualified_name)
                .collect::<Vec<_>>()
                .join(",")
        ));
        Ok(IcebergSink {
            config: Arc::new(config),
            tables: Arc::new(tables),
            mapper: Arc::new(mapper),
            planned: Arc::new(std::sync::Mutex::new(None)),
            lease,
            _rows: PhantomData,
        })
    }

    /// The sink with `lease` as its writer lease: give every sink of one pipeline on one lake
    /// the same lease, so a later instance fences all of them at once.
    pub fn with_lease(mut self, lease: Arc<WriterLease>) -> Self {
        self.lease = lease;
        self
    }

    /// Claims the sink's writer lease for this process (once; later calls return at once):
    /// from then on every commit of an earlier instance of the pipeline fails, so call it
    /// before [`IcebergSink::table_checkpoints`] builds the run's plan. The committer claims
    /// it itself if nobody did.
    pub fn claim(&self) -> Result<Claim, LakeError> {
        // The sinks of one pipeline share the lease: only the first opens the database.
        if let Some(claim) = self.lease.held() {
            return Ok(claim);
        }
        let rt = runtime()?;
        rt.block_on(async {
            let catalog = self.config.open_catalog().await?;
            let writer = self.config.catalog_writer(catalog).await?;
            self.lease.claim(&self.config, &writer).await
        })
    }

    /// The table definitions.
    pub fn tables(&self) -> &[TableDef] {
        &self.tables
    }

    /// Creates the namespaces and tables that do not exist yet, and returns each table's last
    /// committed epoch and positions (`None` for a table this sink never committed to).
    /// Give all of them to the run's [`alluvium_engine::ResumePlan`]: tables left at different
    /// epochs by a crash then each get exactly the epochs they miss.
    pub fn table_checkpoints(&self) -> Result<Vec<Option<Checkpoint>>, LakeError> {
        let rt = runtime()?;
        rt.block_on(async {
            let catalog = self.config.open_catalog().await?;
            let mut out = Vec::with_capacity(self.tables.len());
            for def in self.tables.iter() {
                let table = ensure_table(catalog.as_ref(), def).await?;
                check_partitioning(def, &table)?;
                out.push(last_commit(&table)?);
            }
            if let Ok(mut planned) = self.planned.lock() {
                planned.get_or_insert_with(|| {
                    out.iter().map(|c| c.as_ref().map(|c| c.epoch)).collect()
                });
            }
            Ok(out)
        })
    }
}

/// What a worker hands to the committer for one table.
#[derive(Debug, Serialize, Deserialize)]
pub enum StagedTable {
    /// Data files this worker wrote (append-only tables), as Iceberg's JSON form of a
    /// `DataFile`.
    Files {
        /// Table index.
        table: usize,
        /// The files.
        files: Vec<String>,
    },
    /// Row changes (current-state tables), applied by the committer.
    Changes {
        /// Table index.
        table: usize,
        /// `(row, diff)`.
        rows: Vec<(Row, isize)>,
    },
}

/// A table loaded for writing: its definition, current state and derived helpers.
pub(crate) struct OpenTable {
    pub(crate) def: TableDef,
    pub(crate) table: Table,
    partitioner: Partitioner,
    arrow_schema: arrow::datatypes::SchemaRef,
}

impl OpenTable {
    pub(crate) fn new(def: TableDef, table: Table) -> Result<Self, LakeError> {
        check_partitioning(&def, &table)?;
        let arrow_schema = Arc::new(
            iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema()).map_err(
                |e| LakeError::iceberg(format!("Arrow schema of {}", def.qualified_name()), e),
            )?,
        );
        Ok(OpenTable {
            partitioner: def.partitioner()?,
            def,
            table,
            arrow_schema,
        })
    }

    /// Writes `rows` (with multiplicities) as Parquet data files, one set per partition.
    pub(crate) async fn write_files(
        &self,
        config: &LakeConfig,
        prefix: &str,
        rows: &[(&Row, usize)],
    ) -> Result<Vec<DataFile>, LakeError> {
        let groups = group_by_partition(&self.partitioner, rows.iter().map(|(r, n)| (*r, *n)))?;
        let mut files = Vec::new();
        for (i, (partition, rows)) in groups.into_iter().enumerate() {
            files.extend(
                self.write_partition_files(config, &format!("{prefix}-{i}"), partition, &rows)
                    .await?,
            );
        }
        Ok(files)
    }

    /// Writes `rows` (with multiplicities), all of `partition`, as Parquet data files (more
    /// than one when they pass the target file size), in the order given.
    pub(crate) async fn write_partition_files(
        &self,
        config: &LakeConfig,
        prefix: &str,
        partition: Struct,
        rows: &[(&Row, usize)],
    ) -> Result<Vec<DataFile>, LakeError> {
        let name = self.def.qualified_name();
        let metadata = self.table.metadata();
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().as_ref().clone();
        let partitioned = !spec.fields().is_empty();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let location = DefaultLocationGenerator::new(metadata)
            .map_err(|e| LakeError::iceberg(format!("data location of {name}"), e))?;
        let names =
            DefaultFileNameGenerator::new(prefix.to_string(), None, DataFileFormat::Parquet);
        let rolling = RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(props, schema.clone()),
            config.target_file_size,
            self.table.file_io().clone(),
            location,
            names,
        );
        let key = partitioned.then(|| PartitionKey::new(spec, schema, partition));
        let mut writer = DataFileWriterBuilder::new(rolling)
            .build(key)
            .await
            .map_err(|e| LakeError::iceberg(format!("opening a data file of {name}"), e))?;
        // Bounded batches keep memory flat for large epochs.
        for chunk in rows.chunks(8192) {
            let batch = to_record_batch(
                &self.def,
                &self.arrow_schema,
                chunk.iter().map(|(r, n)| (*r, *n)),
            )?;
            writer
                .write(batch)
                .await
                .map_err(|e| LakeError::iceberg(format!("writing a data file of {name}"), e))?;
        }
        writer
            .close()
            .await
            .map_err(|e| LakeError::iceberg(format!("closing a data file of {name}"), e))
    }

    fn partition_type(&self) -> Result<iceberg::spec::StructType, LakeError> {
        let metadata = self.table.metadata();
        metadata
            .default_partition_spec()
            .partition_type(metadata.current_schema())
            .map_err(|e| {
                LakeError::iceberg(
                    format!("partition type of {}", self.def.qualified_name()),
                    e,
                )
            })
    }
}

/// Refuses a table whose partitioning in the lake is not the definition's: rows would be
/// filed under partition values of another spec (a lake written by another version or
/// pipeline). Spec evolution is not supported.
fn check_partitioning(def: &TableDef, table: &Table) -> Result<(), LakeError> {
    let wanted = def.partition_spec()?;
    let wanted: Vec<(i32, Transform)> = wanted
        .fields()
        .iter()
        .map(|f| (f.source_id, f.transform))
        .collect();
    let spec = table.metadata().default_partition_spec();
    let found: Vec<(i32, Transform)> = spec
        .fields()
        .iter()
        .map(|f| (f.source_id, f.transform))
        .collect();
    if wanted == found {
        return Ok(());
    }
    let show = |fields: &[(i32, Transform)]| {
        if fields.is_empty() {
            return "nothing (unpartitioned)".to_string();
        }
        let columns = table.metadata().current_schema();
        fields
            .iter()
            .map(|(id, t)| {
                let column = columns.field_by_id(*id).map_or("?", |f| f.name.as_str());
                format!("{t}({column})")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(LakeError::Config(format!(
        "table {} is partitioned by {} in the lake, but this pipeline partitions it by {}: \
         the lake was written by another version of the pipeline; write to a new lake (and \
         rebuild it with `alluvium replay` from the old bronze tables) or drop the table",
        def.qualified_name(),
        show(&found),
        show(&wanted)
    )))
}

async fn open_tables(
    catalog: &dyn Catalog,
    defs: &[TableDef],
) -> Result<Vec<OpenTable>, LakeError> {
    let mut out = Vec::with_capacity(defs.len());
    for def in defs {
        let table = ensure_table(catalog, def).await?;
        out.push(OpenTable::new(def.clone(), table)?);
    }
    Ok(out)
}

/// The per-worker half: writes append-only rows as data files, forwards current-state changes.
pub struct IcebergWriter<D> {
    worker: usize,
    config: Arc<LakeConfig>,
    mapper: LakeRowMapper<D>,
    rt: tokio::runtime::Runtime,
    tables: Vec<OpenTable>,
}

impl<D: 'static> SinkWriter<D> for IcebergWriter<D> {
    type Staged = Vec<StagedTable>;

    fn stage(
        &mut self,
        epoch: Epoch,
        updates: &[(D, isize)],
    ) -> Result<Option<Self::Staged>, SinkError> {
        let mut per_table: Vec<Vec<(Row, isize)>> = vec![Vec::new(); self.tables.len()];
        for (d, diff) in updates {
            if let Some((t, row)) = (self.mapper)(d) {
                if let Some(rows) = per_table.get_mut(t) {
                    rows.push((row, *diff));
                }
            }
        }
        let mut staged = Vec::new();
        for (t, rows) in per_table.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let open = &self.tables[t];
            match open.def.mode {
                TableMode::CurrentState => staged.push(StagedTable::Changes { table: t, rows }),
                TableMode::Append => {
                    if let Some((row, diff)) = rows.iter().find(|(_, d)| *d < 0) {
                        return Err(SinkError::Fatal(format!(
                            "append-only table {} received a retraction ({diff}) of {row:?}",
                            open.def.qualified_name()
                        )));
                    }
                    let counted: Vec<(&Row, usize)> =
                        rows.iter().map(|(r, d)| (r, *d as usize)).collect();
                    let prefix = format!(
                        "e{epoch}-w{}-{}",
                        self.worker,
                        uuid::Uuid::new_v4().simple()
                    );
                    let files =
                        self.rt
                            .block_on(open.write_files(&self.config, &prefix, &counted))?;
                    let partition_type = open.partition_type()?;
                    let files = files
                        .into_iter()
                        .map(|f| {
                            serialize_data_file_to_json(f, &partition_type, FormatVersion::V2)
                                .map_err(|e| {
                                    LakeError::iceberg("serialising a data file".into(), e)
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    staged.push(StagedTable::Files { table: t, files });
                }
            }
        }
        Ok((!staged.is_empty()).then_some(staged))
    }
}

/// The committer: one snapshot per changed table per epoch.
pub struct IcebergCommitter {
    config: Arc<LakeConfig>,
    rt: Arc<tokio::runtime::Runtime>,
    catalog: Arc<dyn Catalog>,
    writer: CatalogWriter,
    tables: Vec<OpenTable>,
    last_epoch: Vec<Option<Epoch>>,
    /// Per current-state table, where each live row is (built on first use).
    indexes: Vec<Option<RowIndex>>,
    /// Per table, the manifests read so far.
    manifests: Vec<ManifestCache>,
    /// The writer lease every commit holds.
    claim: Claim,
}

/// One table's mutable state, lent to its commit.
struct TableState<'a> {
    open: &'a mut OpenTable,
    index: &'a mut Option<RowIndex>,
    last_epoch: &'a mut Option<Epoch>,
    manifests: &'a mut ManifestCache,
    claim: &'a Claim,
}

/// Where the rows of a current-state table live: each live row's 128-bit hash → its
/// `(file, position)` (one entry per copy), and each live data file's path, partition and
/// number of live rows. A retraction then becomes a position delete, found without reading
/// any file. Built by reading the table once when the committer starts (or after a failed
/// commit). Memory: a 32-byte entry per live row (37–74 bytes with the map's free slots).
struct RowIndex {
    rows: foldhash::HashMap<u128, Locations>,
    files: HashMap<u32, IndexedFile>,
    next_file: u32,
    partitioned: bool,
}

/// The copies of one row (almost always one). The rare list is boxed so that an entry of
/// the index takes 32 bytes, not 48: the index holds every live row of the table.
enum Locations {
    One(Location),
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Location>>),
}

// An index entry, `(hash, copies)`, stays at 32 bytes.
const _: () = assert!(std::mem::size_of::<(u128, Locations)>() == 32);

/// A row copy: the index of its data file and its position in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    file: u32,
    pos: u32,
}

struct IndexedFile {
    path: Arc<str>,
    partition: Struct,
    /// Rows of the file not deleted yet; at zero the file leaves the index (and the table,
    /// where that is cheap: [`SnapshotChange::removable`]).
    live: u64,
}

/// A row's 128-bit identity in the index: XXH3-128 of the row's `Hash` encoding (which
/// is prefix-free: strings end in a marker, variants start with their tag). A collision
/// would delete the wrong row without reading it, so the index keys on 128 bits (a
/// collision among 10^9 rows has odds of ~10^-21). `buf` is reused between rows, so hashing
/// allocates nothing.
fn row_hash(row: &Row, buf: &mut Vec<u8>) -> u128 {
    use std::hash::Hash;
    buf.clear();
    row.hash(&mut ByteEncoder(buf));
    twox_hash::XxHash3_128::oneshot(buf)
}

/// A [`std::hash::Hasher`] that only collects what is written, for [`row_hash`].
struct ByteEncoder<'a>(&'a mut Vec<u8>);

impl std::hash::Hasher for ByteEncoder<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn finish(&self) -> u64 {
        // Never asked: `row_hash` hashes the collected bytes itself.
        0
    }
}

impl RowIndex {
    /// Reads every live data file of the table, minus the rows its position deletes remove.
    async fn build(open: &OpenTable) -> Result<Self, LakeError> {
        let partitioned = !open
            .table
            .metadata()
            .default_partition_spec()
            .fields()
            .is_empty();
        let mut index = RowIndex {
            rows: foldhash::HashMap::default(),
            files: HashMap::new(),
            next_file: 0,
            partitioned,
        };
        let (data, deletes) = live_files_and_deletes(&open.table).await?;
        let deleted = DeletedPositions::read(&open.table, &deletes).await?;
        let mut buf = Vec::new();
        for file in data {
            let path = file.file_path();
            let rows = read_live_rows(&open.table, path, deleted.of(path)).await?;
            let id = index.add_file(path.into(), file.partition().clone(), rows.len() as u64);
            for (pos, row) in rows {
                index.remember(row_hash(&row, &mut buf), id, pos);
            }
        }
        Ok(index)
    }

    fn add_file(&mut self, path: Arc<str>, partition: Struct, live: u64) -> u32 {
        let id = self.next_file;
        self.next_file += 1;
        let partition = if self.partitioned {
            partition
        } else {
            Struct::empty()
        };
        self.files.insert(
            id,
            IndexedFile {
                path,
                partition,
                live,
            },
        );
        id
    }

    /// Records a copy of the row whose [`row_hash`] is `hash` at `pos` of `file`.
    fn remember(&mut self, hash: u128, file: u32, pos: i64) {
        let at = Location {
            file,
            pos: pos as u32,
        };
        match self.rows.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Locations::One(at));
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let entry = o.get_mut();
                match entry {
                    Locations::One(first) => *entry = Locations::Many(Box::new(vec![*first, at])),
                    Locations::Many(all) => all.push(at),
                }
            }
        }
    }

    /// Removes one copy of the row whose [`row_hash`] is `h` and returns where it was.
    fn take(&mut self, h: u128) -> Option<Location> {
        let entry = self.rows.get_mut(&h)?;
        let (at, now_empty) = match entry {
            Locations::One(at) => (*at, true),
            Locations::Many(all) => {
                let at = all.pop()?;
                (at, all.is_empty())
            }
        };
        if now_empty {
            self.rows.remove(&h);
        }
        Some(at)
    }
}

/// Rows per data file position: positions are `u32` in the index.
const MAX_ROWS_PER_FILE: u64 = u32::MAX as u64;

/// A partition's inserted rows with their copies, and each row's [`row_hash`].
type PartitionInserts<'a> = (Vec<(&'a Row, usize)>, Vec<u128>);

impl IcebergCommitter {
    /// Applies current-state changes as merge-on-read: the epoch's inserted rows become new
    /// data files, its retractions become position deletes (one small file per partition)
    /// found through the table's [`RowIndex`]; a file whose every row is deleted is also
    /// removed where its manifest is small ([`SnapshotChange::removable`]). No existing file is
    /// read or rewritten, nor any big manifest, so a commit costs the size of the epoch's
    /// changes, not of the rows and files around them. `alluvium maintain` later folds the
    /// deletes into compacted files.
    async fn apply_changes(
        config: &LakeConfig,
        open: &OpenTable,
        index: &mut RowIndex,
        epoch: Epoch,
        rows: impl Iterator<Item = &(Row, isize)>,
    ) -> Result<SnapshotChange, LakeError> {
        let name = open.def.qualified_name();
        // Each change is hashed once, to its index identity, and netted under it (hashing
        // rows was the committer's top cost in perf, and rows are borrowed, not cloned).
        let mut buf = Vec::new();
        let mut diffs: foldhash::HashMap<u128, (&Row, isize)> = foldhash::HashMap::default();
        for (row, d) in rows {
            diffs.entry(row_hash(row, &mut buf)).or_insert((row, 0)).1 += d;
        }
        diffs.retain(|_, (_, d)| *d != 0);
        let mut change = SnapshotChange::default();
        if diffs.is_empty() {
            return Ok(change);
        }
        let started = std::time::Instant::now();
        // Retractions: where each retracted copy lives.
        let mut deleted: foldhash::HashMap<u32, Vec<i64>> = foldhash::HashMap::default();
        for (hash, (row, d)) in diffs.iter().filter(|(_, (_, d))| *d < 0) {
            for _ in 0..-d {
                let at = index.take(*hash).ok_or_else(|| {
                    LakeError::Data(format!(
                        "table {name}: epoch {epoch} retracts a row the table does not hold: {row:?}"
                    ))
                })?;
                deleted.entry(at.file).or_default().push(at.pos as i64);
            }
        }
        let mut deletes: foldhash::HashMap<Struct, Vec<(Arc<str>, i64)>> =
            foldhash::HashMap::default();
        let mut positions_deleted = 0usize;
        for (file, positions) in deleted {
            let Some(f) = index.files.get_mut(&file) else {
                return Err(LakeError::Data(format!(
                    "table {name}: row index out of date"
                )));
            };
            f.live = f.live.saturating_sub(positions.len() as u64);
            let dead = f.live == 0;
            positions_deleted += positions.len();
            let out = deletes.entry(f.partition.clone()).or_default();
            out.extend(positions.into_iter().map(|p| (f.path.clone(), p)));
            if dead {
                // Every row gone. Its positions are deleted like any others, and the commit
                // also removes the file if the manifest listing it is small (then those
                // deletes dangle, harmlessly); removing it from a big merged manifest would
                // rewrite every entry of it, so there it stays until compaction.
                change.removable.insert(f.path.to_string());
                index.files.remove(&file);
            }
        }
        let prefix = format!("e{epoch}-c-{}", uuid::Uuid::new_v4().simple());
        for (partition, mut entries) in deletes {
            change
                .added
                .push(write_position_deletes(&open.table, partition, &prefix, &mut entries).await?);
        }
        // Inserts: new data files, per partition; a row's position is its place in the
        // order written (files of one partition roll over in that order).
        let mut by_partition: foldhash::HashMap<Struct, PartitionInserts<'_>> =
            foldhash::HashMap::default();
        for (hash, (row, n)) in diffs.into_iter().filter(|(_, (_, d))| *d > 0) {
            let partition = if index.partitioned {
                open.partitioner.partition(row)?
            } else {
                Struct::empty()
            };
            let (rows, hashes) = by_partition.entry(partition).or_default();
            rows.push((row, n as usize));
            hashes.push(hash);
        }
        let mut rows_inserted = 0usize;
        for (i, (partition, (rows, hashes))) in by_partition.into_iter().enumerate() {
            let files = open
                .write_partition_files(config, &format!("{prefix}-{i}"), partition.clone(), &rows)
                .await?;
            let written: u64 = files.iter().map(|f| f.record_count()).sum();
            let expected: usize = rows.iter().map(|(_, n)| *n).sum();
            if written != expected as u64 {
                return Err(LakeError::Data(format!(
                    "table {name}: wrote {written} rows for {expected} inserted"
                )));
            }
            let mut copies = rows
                .iter()
                .zip(&hashes)
                .flat_map(|((_, n), h)| std::iter::repeat_n(*h, *n));
            for file in &files {
                if file.record_count() > MAX_ROWS_PER_FILE {
                    return Err(LakeError::Data(format!(
                        "table {name}: a data file of more than {MAX_ROWS_PER_FILE} rows"
                    )));
                }
                let id = index.add_file(
                    file.file_path().into(),
                    partition.clone(),
                    file.record_count(),
                );
                for pos in 0..file.record_count() as i64 {
                    let Some(hash) = copies.next() else {
                        return Err(LakeError::Data(format!(
                            "table {name}: fewer rows than the files hold"
                        )));
                    };
                    index.remember(hash, id, pos);
                }
            }
            rows_inserted += expected;
            change.added.extend(files);
        }
        tracing::debug!(
            table = %name,
            epoch,
            rows_inserted,
            positions_deleted,
            files_removed = change.removed.len(),
            files_added = change.added.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "current-state changes written"
        );
        Ok(change)
    }

    /// Commits one table's part of an epoch (tables commit concurrently).
    async fn commit_table(
        config: &LakeConfig,
        writer: &CatalogWriter,
        catalog: &dyn Catalog,
        state: TableState<'_>,
        epoch: Epoch,
        pieces: Vec<&StagedTable>,
        positions: &str,
    ) -> Result<(), LakeError> {
        let TableState {
            open: slot,
            index: index_slot,
            last_epoch,
            claim,
            manifests,
        } = state;
        let mut attempts = 0;
        loop {
            let open = &*slot;
            let name = open.def.qualified_name();
            let mut change = match open.def.mode {
                TableMode::Append => {
                    let partition_type = open.partition_type()?;
                    let spec_id = open.table.metadata().default_partition_spec_id();
                    let schema = open.table.metadata().current_schema().clone();
                    let mut change = SnapshotChange::default();
                    for piece in &pieces {
                        if let StagedTable::Files { files, .. } = piece {
                            for f in files {
                                change.added.push(
                                    deserialize_data_file_from_json(
                                        f,
                                        spec_id,
                                        &partition_type,
                                        &schema,
                                    )
                                    .map_err(|e| {
                                        LakeError::iceberg("reading a staged data file".into(), e)
                                    })?,
                                );
                            }
                        }
                    }
                    change
                }
                TableMode::CurrentState => {
                    if index_slot.is_none() {
                        *index_slot = Some(RowIndex::build(open).await?);
                    }
                    let Some(index) = index_slot.as_mut() else {
                        return Err(LakeError::Data("row index missing".into()));
                    };
                    let rows = pieces.iter().flat_map(|p| match p {
                        StagedTable::Changes { rows, .. } => rows.as_slice(),
                        StagedTable::Files { .. } => &[],
                    });
                    match Self::apply_changes(config, open, index, epoch, rows).await {
                        Ok(change) => change,
                        Err(e) => {
                            *index_slot = None; // rebuilt from the table on retry
                            return Err(e);
                        }
                    }
                }
            };
            if change.added.is_empty() && change.removed.is_empty() {
                return Ok(());
            }
            change
                .properties
                .insert(EPOCH_PROPERTY.into(), epoch.to_string());
            change
                .properties
                .insert(POSITIONS_PROPERTY.into(), positions.to_string());
            let committed =
                commit_snapshot(config, writer, &open.table, change, manifests, Some(claim)).await;
            if committed.is_err() {
                // The index already reflects the failed change: rebuild it from the table.
                *index_slot = None;
            }
            match committed {
                Ok(table) => {
                    slot.table = table;
                    *last_epoch = Some(epoch);
                    return Ok(());
                }
                // Someone committed in between — a compaction or expiry by `alluvium
                // maintain` (retry on its result), or another instance of this pipeline
                // (fenced). Other failures may come from the same cause: maintenance expired
                // the snapshot this commit builds on and deleted its manifest list. So any
                // failure but a data error reloads the table and tries again.
                Err(e)
                    if attempts < 5
                        && !matches!(
                            e,
                            LakeError::Data(_)
                                | LakeError::Fenced { .. }
                                | LakeError::Superseded { .. }
                        ) =>
                {
                    attempts += 1;
                    let table = catalog
                        .load_table(&ident(&slot.def))
                        .await
                        .map_err(|e| LakeError::iceberg(format!("reloading {name}"), e))?;
                    if let Some(found) = last_commit(&table)? {
                        if Some(found.epoch) != *last_epoch {
                            // The commit may have landed with its answer lost (a timeout, a
                            // dropped connection): the table then holds this very epoch with
                            // these very positions, and the epoch is done — committing it
                            // again would apply its changes twice.
                            if found.epoch == epoch
                                && serde_json::from_str::<Positions>(positions).ok()
                                    == Some(found.positions)
                            {
                                tracing::warn!(table = %name, epoch, error = %e, "the commit landed though its answer was lost");
                                manifests.clear();
                                slot.table = table;
                                *last_epoch = Some(epoch);
                                return Ok(());
                            }
                            return Err(LakeError::Fenced {
                                table: name,
                                found: found.epoch,
                                epoch,
                            });
                        }
                    }
                    tracing::warn!(table = %name, epoch, error = %e, "commit failed, retrying on the table's current snapshot");
                    manifests.clear();
                    slot.table = table;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl IcebergCommitter {
    /// Commits consecutive epochs (oldest first) as one snapshot per table, labelled with
    /// the last epoch and its positions. A table takes only the pieces of the epochs after
    /// its own checkpoint (tables can be epochs apart after a crash, and a retry must not
    /// apply a group twice to a table that committed it).
    fn commit_epochs(
        &mut self,
        group: &[(Epoch, &[Vec<StagedTable>], &Positions)],
    ) -> Result<(), SinkError> {
        let Some(&(epoch, _, positions)) = group.last() else {
            return Ok(());
        };
        let positions = serde_json::to_string(positions)
            .map_err(|e| SinkError::Fatal(format!("serialising positions: {e}")))?;
        let mut by_table: Vec<Vec<(Epoch, &StagedTable)>> = vec![Vec::new(); self.tables.len()];
        for (piece_epoch, staged, _) in group {
            for piece in staged.iter().flatten() {
                let t = match piece {
                    StagedTable::Files { table, .. } | StagedTable::Changes { table, .. } => *table,
                };
                if let Some(v) = by_table.get_mut(t) {
                    v.push((*piece_epoch, piece));
                }
            }
        }
        let rt = self.rt.clone();
        let (config, writer, catalog, claim) = (
            &self.config,
            &self.writer,
            self.catalog.as_ref(),
            &self.claim,
        );
        let commits = self
            .tables
            .iter_mut()
            .zip(self.indexes.iter_mut())
            .zip(self.last_epoch.iter_mut())
            .zip(self.manifests.iter_mut())
            .zip(by_table)
            .filter_map(|((((open, index), last_epoch), manifests), pieces)| {
                // Only what this table has not committed (before a restart or a retry).
                let pieces: Vec<&StagedTable> = pieces
                    .into_iter()
                    .filter(|(e, _)| !last_epoch.is_some_and(|last| last >= *e))
                    .map(|(_, p)| p)
                    .collect();
                if pieces.is_empty() {
                    return None;
                }
                let state = TableState {
                    open,
                    index,
                    last_epoch,
                    manifests,
                    claim,
                };
                Some(Self::commit_table(
                    config, writer, catalog, state, epoch, pieces, &positions,
                ))
            });
        // The tables' commits are independent: their I/O overlaps. Every one runs to its
        // end even when another fails — a commit cancelled half-way would leave its table's
        // row index and last epoch out of step with what the catalog holds.
        let results = rt.block_on(futures::future::join_all(commits));
        results
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), |e| Err(SinkError::from(e)))
    }
}

impl SinkCommitter for IcebergCommitter {
    type Staged = Vec<StagedTable>;

    fn commit(
        &mut self,
        epoch: Epoch,
        staged: &[Self::Staged],
        positions: &Positions,
    ) -> Result<(), SinkError> {
        self.commit_epochs(&[(epoch, staged, positions)])
    }

    /// Waiting epochs commit together: a snapshot per table costs about the same for one
    /// epoch's changes as for several (files per partition, manifests, the catalog swap), and
    /// a current-state row inserted and retracted within the group is never written.
    fn max_group(&self) -> usize {
        MAX_EPOCHS_PER_COMMIT
    }

    fn commit_interval(&self) -> Option<std::time::Duration> {
        self.config.commit_interval
    }

    fn commit_group(&mut self, group: &[EpochToCommit<Self::Staged>]) -> Result<(), SinkError> {
        let group: Vec<(Epoch, &[Vec<StagedTable>], &Positions)> = group
            .iter()
            .map(|(e, staged, positions)| (*e, staged.as_slice(), positions))
            .collect();
        self.commit_epochs(&group)
    }
}

/// At most this many waiting epochs go into one lake commit.
const MAX_EPOCHS_PER_COMMIT: usize = 16;

impl<D: 'static> Sink<D> for IcebergSink<D> {
    type Staged = Vec<StagedTable>;
    type Writer = IcebergWriter<D>;
    type Committer = IcebergCommitter;

    fn name(&self) -> String {
        // Unique per sink of a lake: the first table and how many more.
        let first = self
            .tables
            .first()
            .map(TableDef::qualified_name)
            .unwrap_or_default();
        format!(
            "iceberg:{first}+{} in {}",
            self.tables.len().saturating_sub(1),
            self.config.warehouse
        )
    }

    fn claim(&self) -> Result<(), SinkError> {
        IcebergSink::claim(self)?;
        Ok(())
    }

    fn checkpoint(&self) -> Result<Option<Checkpoint>, SinkError> {
        // The sink as a whole is at the least of its tables' epochs.
        let all = self.table_checkpoints()?;
        let mut least: Option<Checkpoint> = None;
        for c in all {
            let Some(c) = c else { return Ok(None) };
            if least.as_ref().is_none_or(|l| c.epoch < l.epoch) {
                least = Some(c);
            }
        }
        Ok(least)
    }

    fn writer(&self, worker: usize) -> Result<Self::Writer, SinkError> {
        let rt = runtime()?;
        let tables = rt.block_on(async {
            let catalog = self.config.open_catalog().await?;
            open_tables(catalog.as_ref(), &self.tables).await
        })?;
        Ok(IcebergWriter {
            worker,
            config: self.config.clone(),
            mapper: self.mapper.clone(),
            rt,
            tables,
        })
    }

    fn committer(&self) -> Result<Self::Committer, SinkError> {
        let rt = runtime()?;
        let (catalog, writer, tables, claim) = rt.block_on(async {
            let catalog = self.config.open_catalog().await?;
            let writer = self.config.catalog_writer(catalog.clone()).await?;
            // The lease first: once it is ours, no earlier instance moves a table, and the
            // check below compares the plan with tables that stay as they are.
            let claim = self.lease.claim(&self.config, &writer).await?;
            let tables = open_tables(catalog.as_ref(), &self.tables).await?;
            Ok::<_, LakeError>((catalog, writer, tables, claim))
        })?;
        let last_epoch = tables
            .iter()
            .map(|t| last_commit(&t.table).map(|c| c.map(|c| c.epoch)))
            .collect::<Result<Vec<_>, _>>()?;
        // Tables that moved between the plan and now were committed to by another instance:
        // committing on top would write this run's epochs twice (its plan never saw theirs).
        if let Some(planned) = self.planned.lock().ok().and_then(|p| p.clone()) {
            for ((def, planned), found) in self.tables.iter().zip(planned).zip(&last_epoch) {
                if planned != *found {
                    return Err(LakeError::MovedSincePlan {
                        table: def.qualified_name(),
                        planned,
                        found: *found,
                    }
                    .into());
                }
            }
        }
        Ok(IcebergCommitter {
            config: self.config.clone(),
            rt: Arc::new(rt),
            catalog,
            writer,
            indexes: tables.iter().map(|_| None).collect(),
            manifests: tables.iter().map(|_| ManifestCache::new()).collect(),
            tables,
            last_epoch,
            claim,
        })
    }
}

/// Keeps the set of tables this sink knows, for tests and tools.
pub fn table_names(defs: &[TableDef]) -> HashSet<String> {
    defs.iter().map(TableDef::qualified_name).collect()
}
