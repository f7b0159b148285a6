//! [`IcebergSink`]: the engine [`Sink`] that keeps a set of Iceberg tables equal to a
//! collection, one snapshot per table per epoch.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::Arc;

use alluvium_engine::{Checkpoint, Epoch, Positions, Sink, SinkCommitter, SinkError, SinkWriter};
use iceberg::spec::{
    deserialize_data_file_from_json, serialize_data_file_to_json, DataFile, DataFileFormat,
    FormatVersion, PartitionKey, Struct,
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
use iceberg_catalog_sql::SqlCatalog;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::commit::{
    commit_snapshot, ensure_table, last_commit, live_files, ManifestCache, SnapshotChange,
    EPOCH_PROPERTY, POSITIONS_PROPERTY,
};
use super::read::read_data_file;
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
    _rows: PhantomData<fn() -> D>,
}

impl<D> Clone for IcebergSink<D> {
    fn clone(&self) -> Self {
        IcebergSink {
            config: self.config.clone(),
            tables: self.tables.clone(),
            mapper: self.mapper.clone(),
            planned: self.planned.clone(),
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
        Ok(IcebergSink {
            config: Arc::new(config),
            tables: Arc::new(tables),
            mapper: Arc::new(mapper),
            planned: Arc::new(std::sync::Mutex::new(None)),
            _rows: PhantomData,
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
                let table = ensure_table(&catalog, def).await?;
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
        let groups = group_by_partition(&self.partitioner, rows.iter().map(|(r, n)| (*r, *n)))?;
        let mut files = Vec::new();
        for (i, (partition, rows)) in groups.into_iter().enumerate() {
            let names = DefaultFileNameGenerator::new(
                format!("{prefix}-{i}"),
                None,
                DataFileFormat::Parquet,
            );
            let rolling = RollingFileWriterBuilder::new(
                ParquetWriterBuilder::new(props.clone(), schema.clone()),
                config.target_file_size,
                self.table.file_io().clone(),
                location.clone(),
                names,
            );
            let key =
                partitioned.then(|| PartitionKey::new(spec.clone(), schema.clone(), partition));
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
            files.extend(
                writer
                    .close()
                    .await
                    .map_err(|e| LakeError::iceberg(format!("closing a data file of {name}"), e))?,
            );
        }
        Ok(files)
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

async fn open_tables(catalog: &SqlCatalog, defs: &[TableDef]) -> Result<Vec<OpenTable>, LakeError> {
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
        updates: Vec<(D, isize)>,
    ) -> Result<Option<Self::Staged>, SinkError> {
        let mut per_table: Vec<Vec<(Row, isize)>> = vec![Vec::new(); self.tables.len()];
        for (d, diff) in updates {
            if let Some((t, row)) = (self.mapper)(&d) {
                if let Some(rows) = per_table.get_mut(t) {
                    rows.push((row, diff));
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
    catalog: SqlCatalog,
    pool: sqlx::AnyPool,
    tables: Vec<OpenTable>,
    last_epoch: Vec<Option<Epoch>>,
    /// Per current-state table, where each live row is (built on first use).
    indexes: Vec<Option<RowIndex>>,
    /// Per table, the manifests read so far.
    manifests: Vec<ManifestCache>,
}

/// One table's mutable state, lent to its commit.
struct TableState<'a> {
    open: &'a mut OpenTable,
    index: &'a mut Option<RowIndex>,
    last_epoch: &'a mut Option<Epoch>,
    manifests: &'a mut ManifestCache,
}

/// Where the rows of a current-state table live: a row's hash → the file groups holding it
/// (one entry per copy), and each group's files and partition. A retraction then rewrites
/// only the group holding the row (typically the small files of recent epochs), not the whole
/// partition. Memory: roughly 40 bytes per live row.
struct RowIndex {
    rows: HashMap<u64, Vec<u32>>,
    groups: HashMap<u32, (Vec<String>, Struct)>,
    next_group: u32,
    partitioned: bool,
}

fn row_hash(row: &Row) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    row.hash(&mut h);
    h.finish()
}

impl RowIndex {
    /// Reads every live file of the table (once per committer, or after a conflict).
    async fn build(open: &OpenTable) -> Result<Self, LakeError> {
        let partitioned = !open
            .table
            .metadata()
            .default_partition_spec()
            .fields()
            .is_empty();
        let mut index = RowIndex {
            rows: HashMap::new(),
            groups: HashMap::new(),
            next_group: 0,
            partitioned,
        };
        for file in live_files(&open.table).await? {
            let partition = if partitioned {
                file.partition().clone()
            } else {
                Struct::empty()
            };
            let group = index.add_group(vec![file.file_path().to_string()], partition);
            for row in read_data_file(&open.table, file.file_path()).await? {
                index.remember(&row, group);
            }
        }
        Ok(index)
    }

    fn add_group(&mut self, paths: Vec<String>, partition: Struct) -> u32 {
        let id = self.next_group;
        self.next_group += 1;
        self.groups.insert(id, (paths, partition));
        id
    }

    fn remember(&mut self, row: &Row, group: u32) {
        self.rows.entry(row_hash(row)).or_default().push(group);
    }

    /// Removes one copy of `row` and returns the group holding it.
    fn take(&mut self, row: &Row) -> Option<u32> {
        let h = row_hash(row);
        let groups = self.rows.get_mut(&h)?;
        let g = groups.pop();
        if groups.is_empty() {
            self.rows.remove(&h);
        }
        g
    }

    /// Removes the entry of one copy of `row` in `group` (the row moves to a new group).
    fn forget(&mut self, row: &Row, group: u32) {
        let h = row_hash(row);
        if let Some(groups) = self.rows.get_mut(&h) {
            if let Some(i) = groups.iter().position(|g| *g == group) {
                groups.swap_remove(i);
            }
            if groups.is_empty() {
                self.rows.remove(&h);
            }
        }
    }
}

impl IcebergCommitter {
    /// Applies current-state changes by rewriting only the file groups that hold retracted
    /// rows (found through the table's [`RowIndex`]); inserted rows and the surviving rows of
    /// rewritten groups go to new files, per partition.
    async fn rewrite(
        config: &LakeConfig,
        open: &OpenTable,
        index: &mut RowIndex,
        epoch: Epoch,
        rows: Vec<(Row, isize)>,
    ) -> Result<SnapshotChange, LakeError> {
        let name = open.def.qualified_name();
        let mut diffs: HashMap<Row, isize> = HashMap::new();
        for (row, d) in rows {
            *diffs.entry(row).or_default() += d;
        }
        diffs.retain(|_, d| *d != 0);
        let mut change = SnapshotChange::default();
        if diffs.is_empty() {
            return Ok(change);
        }
        // Which groups hold the retracted rows.
        let mut touched: HashMap<u32, HashMap<Row, isize>> = HashMap::new();
        for (row, d) in diffs.iter().filter(|(_, d)| **d < 0) {
            for _ in 0..-d {
                let group = index.take(row).ok_or_else(|| {
                    LakeError::Data(format!(
                        "table {name}: epoch {epoch} retracts a row the table does not hold: {row:?}"
                    ))
                })?;
                *touched
                    .entry(group)
                    .or_default()
                    .entry(row.clone())
                    .or_default() += 1;
            }
        }
        // Rewrite them: their rows minus the retracted ones, plus the inserted rows.
        let mut next: HashMap<Struct, Vec<(Row, usize)>> = HashMap::new();
        for (group, mut retracted) in touched {
            let Some((paths, partition)) = index.groups.remove(&group) else {
                return Err(LakeError::Data(format!(
                    "table {name}: row index out of date"
                )));
            };
            let out = next.entry(partition).or_default();
            for path in paths {
                for row in read_data_file(&open.table, &path).await? {
                    if let Some(n) = retracted.get_mut(&row).filter(|n| **n > 0) {
                        *n -= 1; // retracted: its index entry was taken above
                        continue;
                    }
                    index.forget(&row, group);
                    out.push((row, 1));
                }
                change.removed.insert(path);
            }
            if let Some((row, _)) = retracted.iter().find(|(_, n)| **n > 0) {
                return Err(LakeError::Data(format!(
                    "table {name}: row index out of date (a retracted row is not in its file): {row:?}"
                )));
            }
        }
        for (row, d) in diffs.into_iter().filter(|(_, d)| *d > 0) {
            let partition = if index.partitioned {
                open.partitioner.partition(&row)?
            } else {
                Struct::empty()
            };
            next.entry(partition).or_default().push((row, d as usize));
        }
        for (partition, rows) in next {
            if rows.is_empty() {
                continue;
            }
            let refs: Vec<(&Row, usize)> = rows.iter().map(|(r, n)| (r, *n)).collect();
            let prefix = format!("e{epoch}-c-{}", uuid::Uuid::new_v4().simple());
            let files = open.write_files(config, &prefix, &refs).await?;
            let group = index.add_group(
                files.iter().map(|f| f.file_path().to_string()).collect(),
                partition,
            );
            for (row, n) in &rows {
                for _ in 0..*n {
                    index.remember(row, group);
                }
            }
            change.added.extend(files);
        }
        Ok(change)
    }

    /// Commits one table's part of an epoch (tables commit concurrently).
    async fn commit_table(
        config: &LakeConfig,
        pool: &sqlx::AnyPool,
        catalog: &SqlCatalog,
        state: TableState<'_>,
        epoch: Epoch,
        pieces: Vec<&StagedTable>,
        positions: &str,
    ) -> Result<(), LakeError> {
        let TableState {
            open: slot,
            index: index_slot,
            last_epoch,
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
                    let rows: Vec<(Row, isize)> = pieces
                        .iter()
                        .flat_map(|p| match p {
                            StagedTable::Changes { rows, .. } => rows.clone(),
                            StagedTable::Files { .. } => Vec::new(),
                        })
                        .collect();
                    match Self::rewrite(config, open, index, epoch, rows).await {
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
            let committed = commit_snapshot(config, pool, &open.table, change, manifests).await;
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
                        && !matches!(e, LakeError::Data(_) | LakeError::Fenced { .. }) =>
                {
                    attempts += 1;
                    let table = catalog
                        .load_table(&ident(&slot.def))
                        .await
                        .map_err(|e| LakeError::iceberg(format!("reloading {name}"), e))?;
                    if let Some(found) = last_commit(&table)?.map(|c| c.epoch) {
                        if Some(found) != *last_epoch {
                            return Err(LakeError::Fenced {
                                table: name,
                                found,
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

impl SinkCommitter for IcebergCommitter {
    type Staged = Vec<StagedTable>;

    fn commit(
        &mut self,
        epoch: Epoch,
        staged: &[Self::Staged],
        positions: &Positions,
    ) -> Result<(), SinkError> {
        let positions = serde_json::to_string(positions)
            .map_err(|e| SinkError::Fatal(format!("serialising positions: {e}")))?;
        let mut by_table: Vec<Vec<&StagedTable>> = vec![Vec::new(); self.tables.len()];
        for piece in staged.iter().flatten() {
            let t = match piece {
                StagedTable::Files { table, .. } | StagedTable::Changes { table, .. } => *table,
            };
            if let Some(v) = by_table.get_mut(t) {
                v.push(piece);
            }
        }
        let rt = self.rt.clone();
        let (config, pool, catalog) = (&self.config, &self.pool, &self.catalog);
        let commits = self
            .tables
            .iter_mut()
            .zip(self.indexes.iter_mut())
            .zip(self.last_epoch.iter_mut())
            .zip(self.manifests.iter_mut())
            .zip(by_table)
            // Nothing to do, or committed before a restart.
            .filter(|((((_, _), last), _), pieces)| {
                !pieces.is_empty() && !last.is_some_and(|e| e >= epoch)
            })
            .map(|((((open, index), last_epoch), manifests), pieces)| {
                let state = TableState {
                    open,
                    index,
                    last_epoch,
                    manifests,
                };
                Self::commit_table(config, pool, catalog, state, epoch, pieces, &positions)
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
            open_tables(&catalog, &self.tables).await
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
        let (catalog, pool, tables) = rt.block_on(async {
            let catalog = self.config.open_catalog().await?;
            let pool = self.config.catalog_pool().await?;
            let tables = open_tables(&catalog, &self.tables).await?;
            Ok::<_, LakeError>((catalog, pool, tables))
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
            pool,
            indexes: tables.iter().map(|_| None).collect(),
            manifests: tables.iter().map(|_| ManifestCache::new()).collect(),
            tables,
            last_epoch,
        })
    }
}

/// Keeps the set of tables this sink knows, for tests and tools.
pub fn table_names(defs: &[TableDef]) -> HashSet<String> {
    defs.iter().map(TableDef::qualified_name).collect()
}
