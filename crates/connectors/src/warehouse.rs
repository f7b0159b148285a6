//! The PostgreSQL warehouse sink: keyed tables kept equal to a collection, exactly once.
//!
//! Each epoch's consolidated changes are applied in ONE transaction: for every table, the
//! retracted rows are deleted by key, rows replacing a retracted row are upserted (`INSERT …
//! ON CONFLICT DO UPDATE`), rows under a key no change retracted are plainly inserted (the
//! warehouse holds exactly the collection as of its last commit, so their key is new; should
//! the table hold it anyway, the epoch is applied again with upserts), and
//! `pipeline.progress` gets the epoch and the source positions. Rows travel as one array
//! parameter per column (`unnest`), or, from [`DEFAULT_BULK_ROWS`] rows on, by `COPY` —
//! straight into the table for inserts, through a temporary table for upserts — so an epoch
//! costs a handful of statements whatever its size.
//!
//! Exactly once: the progress row only moves forward (`… WHERE progress.epoch < new epoch`);
//! a writer that finds it already at or past its epoch rolls back — a stale writer is fenced
//! by the database itself. On start, [`PgSink::checkpoint`] reads the progress row.
//!
//! Two instances writing at once would still interleave their epochs, which end at different
//! source positions. So a run first claims the pipeline's row in `pipeline.writers`
//! ([`Sink::claim`]), incrementing its generation, and every epoch's transaction begins by
//! reading that row `FOR SHARE`: a transaction of an older generation rolls back and its
//! instance stops (fenced), and a claim waits for a transaction in flight to end.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use alluvium_engine::{
    Checkpoint, Epoch, EpochToCommit, Positions, Sink, SinkCommitter, SinkError, SinkWriter,
};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

/// A column type of a warehouse table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgType {
    /// `text`
    Text,
    /// `bigint`
    BigInt,
    /// `numeric(p, s)`
    Numeric(u8, u8),
    /// `timestamptz` (values as [`PgValue::Timestamp`])
    Timestamptz,
    /// `date` (values as [`PgValue::Date`])
    Date,
    /// `boolean`
    Boolean,
}

impl PgType {
    fn sql(self) -> String {
        match self {
            PgType::Text => "text".into(),
            PgType::BigInt => "bigint".into(),
            PgType::Numeric(p, s) => format!("numeric({p},{s})"),
            PgType::Timestamptz => "timestamptz".into(),
            PgType::Date => "date".into(),
            PgType::Boolean => "boolean".into(),
        }
    }
    fn array(self) -> &'static str {
        match self {
            PgType::BigInt => "int8[]",
            PgType::Boolean => "bool[]",
            PgType::Timestamptz => "timestamptz[]",
            PgType::Date => "date[]",
            PgType::Text | PgType::Numeric(..) => "text[]",
        }
    }
}

/// A value of a row, in the representation that travels to PostgreSQL.
///
/// Typed, so that a worker maps a row without formatting or allocating: short text is inline
/// (`SmolStr`), timestamps, dates and decimals stay integers. The committer sends timestamps
/// and dates in PostgreSQL's binary form and writes the `COPY` text straight into its buffer.
/// `None` is SQL null in any variant. [`PgWriter`] refuses a value whose variant does not fit
/// its column (see [`PgValue::fits`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PgValue {
    /// For text columns; also accepted by numeric columns (PostgreSQL parses it).
    Text(Option<SmolStr>),
    /// For bigint columns.
    Int(Option<i64>),
    /// For boolean columns.
    Bool(Option<bool>),
    /// For timestamptz columns: microseconds since 1970-01-01 00:00 UTC.
    Timestamp(Option<i64>),
    /// For date columns: days since 1970-01-01.
    Date(Option<i32>),
    /// For numeric columns: the unscaled value (`12.50` in a `numeric(18,2)` column is
    /// `1250`).
    Decimal(Option<i128>),
}

impl PgValue {
    /// Whether this value can go into a column of type `ty`.
    pub fn fits(&self, ty: PgType) -> bool {
        use PgValue::*;
        match (self, ty) {
            (Text(None) | Int(None) | Bool(None), _) => true,
            (Timestamp(None) | Date(None) | Decimal(None), _) => true,
            (Text(_), PgType::Text | PgType::Numeric(..)) => true,
            (Int(_), PgType::BigInt) => true,
            (Bool(_), PgType::Boolean) => true,
            // Within what the committer can convert (chrono's range, wider than PostgreSQL's).
            (Timestamp(Some(us)), PgType::Timestamptz) => {
                chrono::DateTime::from_timestamp_micros(*us).is_some()
            }
            (Date(Some(d)), PgType::Date) => date_of(*d).is_some(),
            (Decimal(_), PgType::Numeric(..)) => true,
            _ => false,
        }
    }
}

/// A keyed table: the first `key` columns form the primary key.
#[derive(Clone, Debug)]
pub struct PgTable {
    /// Qualified name, e.g. `gold.daily_sales`.
    pub name: String,
    /// Columns in order.
    pub columns: Vec<(String, PgType)>,
    /// Number of leading key columns.
    pub key: usize,
}

/// Maps a collection row to `(table index, values)`, or `None` for rows of no table.
pub type RowMapper<D> = fn(&D) -> Option<(usize, Vec<PgValue>)>;

/// The warehouse sink.
pub struct PgSink<D> {
    url: String,
    pipeline: String,
    tables: Arc<Vec<PgTable>>,
    mapper: RowMapper<D>,
    bulk_rows: usize,
    /// The generation of `pipeline.writers` this run claimed (shared by the clones).
    claimed: Arc<std::sync::Mutex<Option<i64>>>,
    _rows: PhantomData<fn() -> D>,
}

/// Upserts of at least this many rows into one table go through `COPY` (see
/// [`PgSink::with_bulk_rows`]).
pub const DEFAULT_BULK_ROWS: usize = 10_000;

impl<D> Clone for PgSink<D> {
    fn clone(&self) -> Self {
        PgSink {
            url: self.url.clone(),
            pipeline: self.pipeline.clone(),
            tables: self.tables.clone(),
            mapper: self.mapper,
            bulk_rows: self.bulk_rows,
            claimed: self.claimed.clone(),
            _rows: PhantomData,
        }
    }
}

fn transient(context: &str) -> impl FnOnce(tokio_postgres::Error) -> SinkError + '_ {
    move |e| {
        // Connection-level failures may heal; SQL errors will not.
        match e.as_db_error() {
            Some(db) => SinkError::Fatal(format!(
                "{context}: {} ({})",
                db.message(),
                db.code().code()
            )),
            None => SinkError::Transient(format!("{context}: {e}")),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, SinkError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SinkError::Fatal(format!("starting an async runtime: {e}")))
}

async fn connect(url: &str) -> Result<Client, SinkError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| SinkError::Transient(format!("connecting to the warehouse: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "warehouse connection closed");
        }
    });
    Ok(client)
}

impl<D> PgSink<D> {
    /// A sink for `tables` at `url` (`postgresql://user@host:port/db`), recording progress under
    /// `pipeline` in `pipeline.progress`.
    pub fn new(
        url: impl Into<String>,
        pipeline: impl Into<String>,
        tables: Vec<PgTable>,
        mapper: RowMapper<D>,
    ) -> Self {
        PgSink {
            url: url.into(),
            pipeline: pipeline.into(),
            tables: Arc::new(tables),
            mapper,
            bulk_rows: DEFAULT_BULK_ROWS,
            claimed: Arc::new(std::sync::Mutex::new(None)),
            _rows: PhantomData,
        }
    }

    /// Upserts of at least `rows` rows into one table are streamed with `COPY … FROM STDIN`
    /// into a temporary table and merged from there (`INSERT … SELECT … ON CONFLICT`), still
    /// inside the epoch's transaction; smaller ones are one `INSERT … SELECT FROM unnest(…)`.
    pub fn with_bulk_rows(mut self, rows: usize) -> Self {
        self.bulk_rows = rows.max(1);
        self
    }

    /// The DDL that creates the schemas, tables and the progress table (idempotent).
    pub fn ddl(&self) -> Vec<String> {
        let mut out = vec![
            "CREATE SCHEMA IF NOT EXISTS pipeline".to_string(),
            "CREATE TABLE IF NOT EXISTS pipeline.progress (pipeline text PRIMARY KEY, epoch bigint NOT NULL, \
             positions jsonb NOT NULL, committed_at timestamptz NOT NULL DEFAULT now())"
                .to_string(),
            "CREATE TABLE IF NOT EXISTS pipeline.writers (pipeline text PRIMARY KEY, generation bigint NOT NULL, \
             holder text NOT NULL, claimed_at timestamptz NOT NULL DEFAULT now())"
                .to_string(),
        ];
        for t in self.tables.iter() {
            if let Some((schema, _)) = t.name.split_once('.') {
                out.push(format!("CREATE SCHEMA IF NOT EXISTS {schema}"));
            }
            let cols: Vec<String> = t
                .columns
                .iter()
                .map(|(c, ty)| format!("{c} {}", ty.sql()))
                .collect();
            let key: Vec<&str> = t.columns[..t.key].iter().map(|(c, _)| c.as_str()).collect();
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))",
                t.name,
                cols.join(", "),
                key.join(", ")
            ));
        }
        out
    }

    /// Runs `op` with a connection, retrying connection failures with backoff.
    fn with_client<T>(
        &self,
        what: &str,
        op: impl AsyncFnOnce(&Client) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        let rt = runtime()?;
        rt.block_on(async {
            let mut delay = Duration::from_millis(200);
            let mut attempt = 0;
            let client = loop {
                match connect(&self.url).await {
                    Ok(c) => break c,
                    Err(e) if attempt < 5 => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "{what}: warehouse unreachable, retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => {
                        return Err(SinkError::Transient(format!(
                            "{what}: warehouse unreachable after {} attempts: {e}",
                            attempt + 1
                        )))
                    }
                }
            };
            op(&client).await
        })
    }
}

impl<D> PgSink<D> {
    /// This run's generation of the pipeline's `pipeline.writers` row, claimed on first use:
    /// the claim increments it, and every transaction of an older generation fails from then
    /// on.
    fn claimed_generation(&self) -> Result<i64, SinkError> {
        let mut claimed = self
            .claimed
            .lock()
            .map_err(|_| SinkError::Fatal("the warehouse claim lock is poisoned".into()))?;
        if let Some(generation) = *claimed {
            return Ok(generation);
        }
        let ddl = self.ddl();
        let pipeline = self.pipeline.clone();
        let generation = self.with_client(
            "claiming the warehouse",
            async move |client: &Client| {
                create_tables(client, &ddl).await?;
                let row = client
                    .query_one(
                        "INSERT INTO pipeline.writers (pipeline, generation, holder) VALUES ($1, 1, $2) \
                         ON CONFLICT (pipeline) DO UPDATE SET generation = pipeline.writers.generation + 1, \
                         holder = EXCLUDED.holder, claimed_at = now() RETURNING generation",
                        &[&pipeline, &crate::lake::lease::holder()],
                    )
                    .await
                    .map_err(transient("claiming pipeline.writers"))?;
                Ok(row.get::<_, i64>(0))
            },
        )?;
        tracing::info!(pipeline = %self.pipeline, generation, "claimed the warehouse");
        *claimed = Some(generation);
        Ok(generation)
    }
}

/// Runs the idempotent DDL of [`PgSink::ddl`].
async fn create_tables(client: &Client, ddl: &[String]) -> Result<(), SinkError> {
    for stmt in ddl {
        client
            .batch_execute(stmt)
            .await
            .map_err(transient("creating the warehouse tables"))?;
    }
    Ok(())
}

impl<D: 'static> Sink<D> for PgSink<D> {
    type Staged = Vec<(u32, Vec<PgValue>, i64)>;
    type Writer = PgWriter<D>;
    type Committer = PgCommitter;

    fn name(&self) -> String {
        format!("warehouse:{}", self.pipeline)
    }

    fn checkpoint(&self) -> Result<Option<Checkpoint>, SinkError> {
        let ddl = self.ddl();
        let pipeline = self.pipeline.clone();
        self.with_client(
            "reading the warehouse checkpoint",
            async move |client: &Client| {
                create_tables(client, &ddl).await?;
                let row = client
                    .query_opt(
                        "SELECT epoch, positions::text FROM pipeline.progress WHERE pipeline = $1",
                        &[&pipeline],
                    )
                    .await
                    .map_err(transient("reading pipeline.progress"))?;
                let Some(row) = row else { return Ok(None) };
                let epoch: i64 = row.get(0);
                let positions: String = row.get(1);
                let positions: Positions = serde_json::from_str(&positions).map_err(|e| {
                    SinkError::Fatal(format!("pipeline.progress positions are corrupt: {e}"))
                })?;
                Ok(Some(Checkpoint {
                    epoch: epoch as Epoch,
                    positions,
                }))
            },
        )
    }

    fn writer(&self, _worker: usize) -> Result<PgWriter<D>, SinkError> {
        Ok(PgWriter {
            mapper: self.mapper,
            tables: self.tables.clone(),
            _rows: PhantomData,
        })
    }

    fn claim(&self) -> Result<(), SinkError> {
        self.claimed_generation().map(|_| ())
    }

    fn committer(&self) -> Result<PgCommitter, SinkError> {
        let generation = self.claimed_generation()?;
        Ok(PgCommitter {
            generation,
            url: self.url.clone(),
            pipeline: self.pipeline.clone(),
            tables: self.tables.clone(),
            bulk_rows: self.bulk_rows,
            runtime: Some(runtime()?),
            client: None,
        })
    }
}

/// Maps each worker's changes to table rows.
pub struct PgWriter<D> {
    mapper: RowMapper<D>,
    tables: Arc<Vec<PgTable>>,
    _rows: PhantomData<fn() -> D>,
}

/// Checks a mapped row against its table: a mapper bug (a value for a column of another
/// type, a missing or extra column) stops the run naming the table and column, instead of
/// surfacing later as a PostgreSQL error on a whole epoch or as silently wrong data.
fn check_row(tables: &[PgTable], t: usize, row: &[PgValue]) -> Result<(), SinkError> {
    let table = tables.get(t).ok_or_else(|| {
        SinkError::Fatal(format!(
            "warehouse row for table #{t}, which is not defined"
        ))
    })?;
    if row.len() != table.columns.len() {
        return Err(SinkError::Fatal(format!(
            "warehouse row for {} has {} values for {} columns",
            table.name,
            row.len(),
            table.columns.len()
        )));
    }
    for (v, (name, ty)) in row.iter().zip(&table.columns) {
        if !v.fits(*ty) {
            return Err(SinkError::Fatal(format!(
                "warehouse row for {}: column {name} ({ty:?}) cannot take {v:?}",
                table.name
            )));
        }
    }
    Ok(())
}

impl<D: 'static> SinkWriter<D> for PgWriter<D> {
    type Staged = Vec<(u32, Vec<PgValue>, i64)>;

    fn stage(
        &mut self,
        _epoch: Epoch,
        updates: &[(D, isize)],
    ) -> Result<Option<Self::Staged>, SinkError> {
        let mut rows: Self::Staged = Vec::with_capacity(updates.len());
        for (row, diff) in updates {
            if let Some((t, v)) = (self.mapper)(row) {
                check_row(&self.tables, t, &v)?;
                rows.push((t as u32, v, *diff as i64));
            }
        }
        Ok((!rows.is_empty()).then_some(rows))
    }
}

/// Applies an epoch in one transaction.
pub struct PgCommitter {
    /// The `pipeline.writers` generation every transaction checks.
    generation: i64,
    url: String,
    pipeline: String,
    tables: Arc<Vec<PgTable>>,
    bulk_rows: usize,
    /// Taken out while an epoch is applied (the connection task lives on it).
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<Client>,
}

/// One array parameter per column, typed as [`PgType::array`] says.
fn column_arrays<'a>(
    ty: &[(String, PgType)],
    rows: &[&'a [PgValue]],
) -> Vec<Box<dyn ToSql + Sync + Send + 'a>> {
    fn column<'a, T: 'a>(
        rows: &[&'a [PgValue]],
        c: usize,
        f: impl Fn(&'a PgValue) -> Option<T>,
    ) -> Vec<Option<T>> {
        rows.iter().map(|r| f(&r[c])).collect()
    }
    (0..ty.len())
        .map(|c| -> Box<dyn ToSql + Sync + Send + 'a> {
            match ty[c].1 {
                PgType::BigInt => Box::new(column(rows, c, |v| match v {
                    PgValue::Int(v) => *v,
                    _ => None,
                })),
                PgType::Boolean => Box::new(column(rows, c, |v| match v {
                    PgValue::Bool(v) => *v,
                    _ => None,
                })),
                // Binary on the wire: PostgreSQL parses no text, we format none.
                PgType::Timestamptz => Box::new(column(rows, c, |v| match v {
                    PgValue::Timestamp(Some(us)) => chrono::DateTime::from_timestamp_micros(*us),
                    _ => None,
                })),
                PgType::Date => Box::new(column(rows, c, |v| match v {
                    PgValue::Date(Some(d)) => date_of(*d),
                    _ => None,
                })),
                PgType::Numeric(_, scale) => Box::new(column(rows, c, move |v| match v {
                    PgValue::Decimal(Some(d)) => {
                        let mut text = Vec::with_capacity(24);
                        push_decimal(&mut text, *d, scale);
                        // ASCII digits, sign and point: never lossy.
                        Some(String::from_utf8_lossy(&text).into_owned())
                    }
                    PgValue::Text(t) => t.as_deref().map(String::from),
                    _ => None,
                })),
                PgType::Text => Box::new(column(rows, c, |v| match v {
                    PgValue::Text(v) => v.as_deref(),
                    _ => None,
                })),
            }
        })
        .collect()
}

/// The date `days` after 1970-01-01 (`None` out of chrono's range, which is wider than
/// PostgreSQL's).
fn date_of(days: i32) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
        .checked_add_signed(chrono::TimeDelta::try_days(i64::from(days))?)
}

/// `unscaled / 10^scale` as decimal text (`-1250`, scale 2 → `-12.50`).
fn push_decimal(out: &mut Vec<u8>, unscaled: i128, scale: u8) {
    if unscaled < 0 {
        out.push(b'-');
    }
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(unscaled.unsigned_abs()).as_bytes();
    let scale = usize::from(scale);
    if scale == 0 {
        out.extend_from_slice(digits);
        return;
    }
    if digits.len() <= scale {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits);
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    }
}

/// The `ON CONFLICT` action of an upsert into `table`: overwrite the non-key columns.
fn on_conflict(table: &PgTable) -> String {
    let update: Vec<String> = table.columns[table.key..]
        .iter()
        .map(|(c, _)| format!("{c} = EXCLUDED.{c}"))
        .collect();
    if update.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", update.join(", "))
    }
}

/// One value of a column of type `ty` in PostgreSQL's CSV `COPY` format: NULL unquoted and
/// empty, text always quoted, written straight into `out`.
fn push_csv(out: &mut Vec<u8>, value: &PgValue, ty: PgType) {
    use std::io::Write as _;
    match value {
        PgValue::Text(None)
        | PgValue::Int(None)
        | PgValue::Bool(None)
        | PgValue::Timestamp(None)
        | PgValue::Date(None)
        | PgValue::Decimal(None) => {}
        PgValue::Int(Some(v)) => out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
        PgValue::Bool(Some(v)) => out.push(if *v { b't' } else { b'f' }),
        PgValue::Timestamp(Some(us)) => {
            // `2026-11-27 05:50:56.457907+00` (`PgWriter` let only convertible values
            // through); writing into a `Vec` cannot fail.
            if let Some(t) = chrono::DateTime::from_timestamp_micros(*us) {
                let _ = write!(out, "{}+00", t.naive_utc());
            }
        }
        PgValue::Date(Some(d)) => {
            if let Some(d) = date_of(*d) {
                let _ = write!(out, "{d}");
            }
        }
        PgValue::Decimal(Some(d)) => {
            let scale = match ty {
                PgType::Numeric(_, s) => s,
                _ => 0,
            };
            push_decimal(out, *d, scale);
        }
        PgValue::Text(Some(t)) => {
            out.push(b'"');
            for b in t.bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        }
    }
}

/// The `unnest` arguments for `cols`: one array parameter per column, `$1::text[], …`.
fn unnest_arrays(cols: &[(String, PgType)]) -> String {
    let arrays: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(k, (_, ty))| format!("${}::{}", k + 1, ty.array()))
        .collect();
    arrays.join(", ")
}

/// The parameters as `execute` takes them.
fn param_refs<'p>(params: &'p [Box<dyn ToSql + Sync + Send + '_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// `INSERT INTO table … SELECT … FROM unnest(one array per column)` followed by `tail`
/// (an `ON CONFLICT` clause or nothing), with its parameters.
fn unnest_insert<'a>(
    table: &PgTable,
    names: &[&str],
    rows: &[&'a [PgValue]],
    tail: &str,
) -> (String, Vec<Box<dyn ToSql + Sync + Send + 'a>>) {
    let cols = &table.columns;
    let params = column_arrays(cols, rows);
    let select: Vec<String> = (0..cols.len())
        .map(|k| format!("d.{}::{}", names[k], cols[k].1.sql()))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS d({}) {}",
        table.name,
        names.join(", "),
        select.join(", "),
        unnest_arrays(cols),
        names.join(", "),
        tail
    );
    (sql, params)
}

/// Streams `rows` into `target` with `COPY … FROM STDIN` (CSV, 1 MiB messages).
async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    target: &str,
    columns: &[(String, PgType)],
    rows: &[&[PgValue]],
) -> Result<(), tokio_postgres::Error> {
    let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    use futures::SinkExt;
    let sink = tx
        .copy_in(&format!(
            "COPY {target} ({}) FROM STDIN WITH (FORMAT csv)",
            names.join(", ")
        ))
        .await?;
    let mut sink = std::pin::pin!(sink);
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    for row in rows {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            push_csv(&mut buf, v, columns[i].1);
        }
        buf.push(b'\n');
        if buf.len() >= 1 << 20 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut buf)))
                .await?;
        }
    }
    if !buf.is_empty() {
        sink.send(bytes::Bytes::from(buf)).await?;
    }
    sink.as_mut().finish().await?;
    Ok(())
}

/// The bulk upsert: `COPY` the rows into a temporary copy of the table, then merge.
async fn copy_upsert(
    tx: &tokio_postgres::Transaction<'_>,
    table: &PgTable,
    rows: &[&[PgValue]],
) -> Result<(), SinkError> {
    let names: Vec<&str> = table.columns.iter().map(|(c, _)| c.as_str()).collect();
    let stage = "alluvium_stage";
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS pg_temp.{stage}; \
         CREATE TEMP TABLE {stage} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
        table.name
    ))
    .await
    .map_err(transient(&format!(
        "creating the staging table for {}",
        table.name
    )))?;
    copy_rows(tx, stage, &table.columns, rows)
        .await
        .map_err(transient(&format!("copying into {}", table.name)))?;
    let on_conflict = on_conflict(table);
    tx.batch_execute(&format!(
        "INSERT INTO {t} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({key}) {on_conflict}; DROP TABLE {stage}",
        t = table.name,
        cols = names.join(", "),
        key = names[..table.key].join(", "),
    ))
    .await
    .map_err(transient(&format!("merging into {}", table.name)))?;
    Ok(())
}

/// Why applying a group of changes failed.
enum ApplyError {
    /// A row sent as new found its key taken (SQLSTATE 23505): the table holds a row the
    /// pipeline did not write (or lost track of). The group is then applied again with
    /// every insert as an upsert.
    KeyExists(String),
    /// Anything else.
    Sink(SinkError),
}

impl From<SinkError> for ApplyError {
    fn from(e: SinkError) -> Self {
        ApplyError::Sink(e)
    }
}

/// Maps an error of a plain insert into `table`: a taken key is [`ApplyError::KeyExists`].
fn insert_error(table: &str) -> impl FnOnce(tokio_postgres::Error) -> ApplyError + '_ {
    move |e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            ApplyError::KeyExists(table.to_string())
        } else {
            ApplyError::Sink(transient(&format!("inserting into {table}"))(e))
        }
    }
}

impl PgCommitter {
    /// Applies `changes` and moves the progress row to `epoch`, in one transaction. With
    /// `plain_inserts`, rows whose key is new are inserted without `ON CONFLICT` (and in bulk
    /// copied straight into the table): no staging table, no conflict check beyond the
    /// primary key's own.
    async fn apply(
        &mut self,
        epoch: Epoch,
        changes: &[(u32, &[PgValue], NetChange)],
        positions: &Positions,
        plain_inserts: bool,
    ) -> Result<(), ApplyError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect(&self.url).await?);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(SinkError::Transient("no warehouse connection".into()).into());
        };
        let tx = client
            .transaction()
            .await
            .map_err(transient("starting the warehouse transaction"))?;
        // FOR SHARE: a newer run's claim waits for this transaction, and this one sees a
        // claim that committed before it.
        let writer = tx
            .query_opt(
                "SELECT generation, holder FROM pipeline.writers WHERE pipeline = $1 FOR SHARE",
                &[&self.pipeline],
            )
            .await
            .map_err(transient("reading pipeline.writers"))?;
        if let Some(row) = writer {
            let found: i64 = row.get(0);
            if found != self.generation {
                let holder: String = row.get(1);
                let _ = tx.rollback().await;
                return Err(SinkError::Fatal(format!(
                    "warehouse pipeline `{}` was claimed by generation {found} ({holder}) after this run's generation {}: another pipeline instance is writing it (fenced)",
                    self.pipeline, self.generation
                ))
                .into());
            }
        }
        let mut written: Vec<(&str, u64, u64)> = Vec::with_capacity(self.tables.len());
        let mut deletes: Vec<&[PgValue]> = Vec::new();
        let mut inserts: Vec<&[PgValue]> = Vec::new();
        let mut upserts: Vec<&[PgValue]> = Vec::new();
        for (i, table) in self.tables.iter().enumerate() {
            deletes.clear();
            inserts.clear();
            upserts.clear();
            for (_, row, change) in changes.iter().filter(|(t, _, _)| *t as usize == i) {
                match change {
                    NetChange::Delete => deletes.push(row),
                    NetChange::Insert if plain_inserts => inserts.push(row),
                    NetChange::Insert | NetChange::Upsert => upserts.push(row),
                }
            }
            written.push((
                &table.name,
                (inserts.len() + upserts.len()) as u64,
                deletes.len() as u64,
            ));
            let cols = &table.columns;
            let names: Vec<&str> = cols.iter().map(|(c, _)| c.as_str()).collect();
            if !deletes.is_empty() {
                let params = column_arrays(&cols[..table.key], &deletes);
                let cond: Vec<String> = (0..table.key)
                    .map(|k| format!("t.{0} = d.{0}::{1}", names[k], cols[k].1.sql()))
                    .collect();
                let sql = format!(
                    "DELETE FROM {} t USING unnest({}) AS d({}) WHERE {}",
                    table.name,
                    unnest_arrays(&cols[..table.key]),
                    names[..table.key].join(", "),
                    cond.join(" AND ")
                );
                tx.execute(&sql, &param_refs(&params))
                    .await
                    .map_err(transient(&format!("deleting from {}", table.name)))?;
            }
            if inserts.len() >= self.bulk_rows {
                copy_rows(&tx, &table.name, &table.columns, &inserts)
                    .await
                    .map_err(insert_error(&table.name))?;
            } else if !inserts.is_empty() {
                let (sql, params) = unnest_insert(table, &names, &inserts, "");
                tx.execute(&sql, &param_refs(&params))
                    .await
                    .map_err(insert_error(&table.name))?;
            }
            if upserts.len() >= self.bulk_rows {
                copy_upsert(&tx, table, &upserts).await?;
            } else if !upserts.is_empty() {
                let on_conflict = format!(
                    "ON CONFLICT ({}) {}",
                    names[..table.key].join(", "),
                    on_conflict(table)
                );
                let (sql, params) = unnest_insert(table, &names, &upserts, &on_conflict);
                tx.execute(&sql, &param_refs(&params))
                    .await
                    .map_err(transient(&format!("upserting into {}", table.name)))?;
            }
        }
        let positions_json = serde_json::to_string(positions)
            .map_err(|e| SinkError::Fatal(format!("encoding positions: {e}")))?;
        let moved = tx
            .execute(
                "INSERT INTO pipeline.progress (pipeline, epoch, positions) VALUES ($1, $2, $3::text::jsonb) \
                 ON CONFLICT (pipeline) DO UPDATE SET epoch = EXCLUDED.epoch, positions = EXCLUDED.positions, committed_at = now() \
                 WHERE pipeline.progress.epoch < EXCLUDED.epoch",
                &[&self.pipeline, &(epoch as i64), &positions_json],
            )
            .await
            .map_err(transient("recording progress"))?;
        if moved != 1 {
            // This epoch, with these positions, is already there: our own earlier attempt
            // committed and only its answer was lost (the connection dropped during `COMMIT`).
            // What this attempt applied again is already in the tables: done. (Another
            // instance could not have committed it: its claim would have fenced us above.)
            let found = tx
                .query_opt(
                    "SELECT epoch, positions::text FROM pipeline.progress WHERE pipeline = $1",
                    &[&self.pipeline],
                )
                .await
                .map_err(transient("reading progress"))?;
            let committed = found.is_some_and(|row| {
                row.get::<_, i64>(0) == epoch as i64
                    && serde_json::from_str::<Positions>(row.get::<_, &str>(1))
                        .ok()
                        .as_ref()
                        == Some(positions)
            });
            let _ = tx.rollback().await;
            if committed {
                tracing::warn!(
                    pipeline = %self.pipeline,
                    epoch,
                    "the warehouse already holds this epoch: an earlier attempt committed though its answer was lost"
                );
                return Ok(());
            }
            // Another writer committed this epoch (or a later one): fence ourselves off.
            return Err(SinkError::Fatal(format!(
                "warehouse progress of `{}` is already at or past epoch {epoch}: a stale writer was fenced",
                self.pipeline
            ))
            .into());
        }
        tx.commit()
            .await
            .map_err(transient("committing the warehouse transaction"))?;
        let metrics = warehouse_metrics();
        for (table, upserts, deletes) in written {
            for (op, n) in [("upsert", upserts), ("delete", deletes)] {
                metrics
                    .rows
                    .get_or_create(&WarehouseLabels {
                        table: table.to_owned(),
                        op,
                    })
                    .inc_by(n);
            }
        }
        Ok(())
    }
}

impl PgCommitter {
    /// Applies netted changes and the progress row in one transaction.
    fn run(
        &mut self,
        epoch: Epoch,
        netted: &[(u32, &[PgValue], NetChange)],
        positions: &Positions,
    ) -> Result<(), SinkError> {
        let rt = match self.runtime.take() {
            Some(rt) => rt,
            None => runtime()?,
        };
        let mut result = rt.block_on(self.apply(epoch, netted, positions, true));
        if let Err(ApplyError::KeyExists(table)) = &result {
            tracing::warn!(
                table = %table,
                epoch,
                "a row added as new found its key already in the warehouse (a row the pipeline \
                 did not write?): the epoch is applied again with upserts"
            );
            result = rt.block_on(self.apply(epoch, netted, positions, false));
        }
        self.runtime = Some(rt);
        let result = result.map_err(|e| match e {
            ApplyError::Sink(e) => e,
            ApplyError::KeyExists(table) => SinkError::Fatal(format!(
                "an upsert into {table} found its key taken: the table's primary key is not the sink's key"
            )),
        });
        if matches!(result, Err(SinkError::Transient(_))) {
            self.client = None;
        }
        result
    }
}

impl SinkCommitter for PgCommitter {
    type Staged = Vec<(u32, Vec<PgValue>, i64)>;

    fn commit(
        &mut self,
        epoch: Epoch,
        staged: &[Self::Staged],
        positions: &Positions,
    ) -> Result<(), SinkError> {
        // An update arrives as the old row retracted and the new one added: the upsert of
        // the new row replaces the old one by key, so the delete is left out (half the rows
        // PostgreSQL writes for updates).
        let tables = self.tables.clone();
        self.run(epoch, &net_changes(&tables, staged.iter()), positions)
    }

    /// Waiting epochs go in one transaction: a commit's cost is mostly round trips and the
    /// fsync of the transaction, not rows.
    fn max_group(&self) -> usize {
        MAX_EPOCHS_PER_TRANSACTION
    }

    fn commit_group(&mut self, group: &[EpochToCommit<Self::Staged>]) -> Result<(), SinkError> {
        let Some((epoch, _, positions)) = group.last() else {
            return Ok(());
        };
        let tables = self.tables.clone();
        let netted = net_changes(&tables, group.iter().flat_map(|(_, s, _)| s));
        self.run(*epoch, &netted, positions)
    }
}

/// At most this many waiting epochs go into one warehouse transaction.
const MAX_EPOCHS_PER_TRANSACTION: usize = 16;

/// What the warehouse does with one row of netted changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NetChange {
    /// Add the row; no row of the group removed its key, so the key is new (the warehouse
    /// holds exactly the collection as of its last commit).
    Insert,
    /// Add the row, replacing the row its key holds.
    Upsert,
    /// Delete the row's key.
    Delete,
}

/// The net effect of several epochs' changes on keyed tables, as one epoch's worth: equal
/// rows' diffs are summed; a row left added is inserted — as an upsert when a row of the
/// group retracted its key, which then holds a row it replaces; a row left retracted becomes
/// a delete of its key, unless a row added under the same key replaces it anyway. (Applied
/// one after another, a key added, updated and then removed across the epochs must end
/// absent, and one `INSERT … ON CONFLICT` cannot take a key twice.)
fn net_changes<'a>(
    tables: &[PgTable],
    staged: impl Iterator<Item = &'a Vec<(u32, Vec<PgValue>, i64)>>,
) -> Vec<(u32, &'a [PgValue], NetChange)> {
    /// A distinct row of the changes: its net diff, its key's group, and the next distinct
    /// row of that group.
    struct Slot<'a> {
        table: u32,
        row: &'a [PgValue],
        diff: i64,
        group: usize,
        next: Option<usize>,
    }
    /// The changes under one key: the first of its distinct rows (a chain through
    /// `Slot::next`), whether any change retracted a row of the key, whether a row of the
    /// key is left added.
    #[derive(Default)]
    struct Group {
        first: Option<usize>,
        retracted: bool,
        added: bool,
    }
    // Each change is hashed once, by its key (foldhash: SipHash over every column was the
    // committer's largest cost in perf, and hashing whole rows and keys apart took three
    // hashes per row). A key has few distinct rows (its old and new versions), so rows are
    // netted by comparison within the key's chain. `slots` keeps first-seen order.
    let mut by_key: foldhash::HashMap<(u32, &[PgValue]), usize> = foldhash::HashMap::default();
    let mut groups: Vec<Group> = Vec::new();
    let mut slots: Vec<Slot<'a>> = Vec::new();
    for (t, row, diff) in staged.flatten() {
        let key = tables.get(*t as usize).map_or(row.len(), |table| table.key);
        let g = *by_key
            .entry((*t, &row[..key.min(row.len())]))
            .or_insert_with(|| {
                groups.push(Group::default());
                groups.len() - 1
            });
        let group = &mut groups[g];
        group.retracted |= *diff < 0;
        let mut at = group.first;
        while let Some(i) = at {
            if slots[i].row == row.as_slice() {
                break;
            }
            at = slots[i].next;
        }
        match at {
            Some(i) => slots[i].diff += diff,
            None => {
                slots.push(Slot {
                    table: *t,
                    row,
                    diff: *diff,
                    group: g,
                    next: group.first,
                });
                group.first = Some(slots.len() - 1);
            }
        }
    }
    drop(by_key);
    for slot in slots.iter().filter(|s| s.diff > 0) {
        groups[slot.group].added = true;
    }
    slots
        .into_iter()
        .filter_map(|slot| {
            let group = &groups[slot.group];
            let change = if slot.diff > 0 {
                if group.retracted {
                    NetChange::Upsert
                } else {
                    NetChange::Insert
                }
            } else if slot.diff < 0 && !group.added {
                NetChange::Delete
            } else {
                return None;
            };
            Some((slot.table, slot.row, change))
        })
        .collect()
}

/// Labels of the warehouse's row counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct WarehouseLabels {
    /// `schema.table`.
    pub table: String,
    /// `upsert` or `delete`.
    pub op: &'static str,
}

/// The warehouse's write metrics (prefix `alluvium_warehouse_`).
#[derive(Debug, Default)]
pub struct WarehouseMetrics {
    /// Rows upserted and deleted by committed transactions, per table.
    pub rows: prometheus_client::metrics::family::Family<
        WarehouseLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl WarehouseMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry
            .sub_registry_with_prefix("alluvium_warehouse")
            .register(
                "rows",
                "Rows upserted and deleted by committed warehouse transactions, per table",
                self.rows.clone(),
            );
    }
}

/// The process's warehouse metrics.
pub fn warehouse_metrics() -> &'static WarehouseMetrics {
    static METRICS: std::sync::OnceLock<WarehouseMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(WarehouseMetrics::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal(v: i128, scale: u8) -> String {
        let mut out = Vec::new();
        push_decimal(&mut out, v, scale);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn decimals_are_placed_by_their_scale() {
        assert_eq!(decimal(1250, 2), "12.50");
        assert_eq!(decimal(-1250, 2), "-12.50");
        assert_eq!(decimal(5, 2), "0.05");
        assert_eq!(decimal(-5, 2), "-0.05");
        assert_eq!(decimal(0, 2), "0.00");
        assert_eq!(decimal(100, 2), "1.00");
        assert_eq!(decimal(-7, 0), "-7");
        assert_eq!(
            decimal(i128::MIN, 2),
            "-1701411834604692317316873037158841057.28"
        );
    }

    fn csv(v: PgValue, ty: PgType) -> String {
        let mut out = Vec::new();
        push_csv(&mut out, &v, ty);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn copy_text_of_each_type() {
        use PgType::*;
        assert_eq!(
            csv(PgValue::Timestamp(Some(0)), Timestamptz),
            "1970-01-01 00:00:00+00"
        );
        assert_eq!(
            csv(PgValue::Timestamp(Some(1_764_000_000_123_456)), Timestamptz),
            "2025-11-24 16:00:00.123456+00"
        );
        assert_eq!(
            csv(PgValue::Timestamp(Some(-1)), Timestamptz),
            "1969-12-31 23:59:59.999999+00"
        );
        assert_eq!(csv(PgValue::Date(Some(0)), Date), "1970-01-01");
        assert_eq!(csv(PgValue::Date(Some(-1)), Date), "1969-12-31");
        assert_eq!(csv(PgValue::Date(Some(20_419)), Date), "2025-11-27");
        assert_eq!(csv(PgValue::Decimal(Some(-305)), Numeric(18, 2)), "-3.05");
        assert_eq!(csv(PgValue::Int(Some(-42)), BigInt), "-42");
        assert_eq!(csv(PgValue::Text(Some("a\"b".into())), Text), "\"a\"\"b\"");
        assert_eq!(csv(PgValue::Text(None), Text), "");
        assert_eq!(csv(PgValue::Timestamp(None), Timestamptz), "");
    }

    fn text(v: &str) -> PgValue {
        PgValue::Text(Some(v.into()))
    }

    #[test]
    fn changes_net_to_one_change_per_row_in_first_seen_order() {
        let tables = vec![
            PgTable {
                name: "gold.t".into(),
                columns: vec![("id".into(), PgType::Text), ("v".into(), PgType::Text)],
                key: 1,
            },
            PgTable {
                name: "gold.u".into(),
                columns: vec![("id".into(), PgType::Text)],
                key: 1,
            },
        ];
        let row = |t: u32, id: &str, v: &str, diff: i64| match t {
            0 => (t, vec![text(id), text(v)], diff),
            _ => (t, vec![text(id)], diff),
        };
        let epochs = [
            vec![
                row(0, "new", "1", 1),    // a new key: insert
                row(0, "upd", "old", -1), // a key updated: upsert of the new row only
                row(0, "gone", "x", -1),  // a key removed: delete
                row(0, "upd", "new", 1),  //
                row(0, "churn", "a", 1),  // added, changed and removed again: nothing
                row(1, "new", "", 1),     // the same key in another table: its own change
                row(0, "same", "s", -1),  // retracted and added again: nothing
            ],
            vec![
                row(0, "churn", "a", -1),
                row(0, "churn", "b", 1),
                row(0, "same", "s", 1),
                row(0, "churn", "b", -1),
                row(0, "new", "1", 1), // a second copy: still one insert
            ],
        ];
        let netted = net_changes(&tables, epochs.iter());
        let got: Vec<(u32, Vec<String>, NetChange)> = netted
            .into_iter()
            .map(|(t, row, change)| {
                let values = row
                    .iter()
                    .map(|v| match v {
                        PgValue::Text(Some(s)) => s.to_string(),
                        other => format!("{other:?}"),
                    })
                    .collect();
                (t, values, change)
            })
            .collect();
        let want = |t: u32, values: &[&str], change: NetChange| {
            (t, values.iter().map(|v| v.to_string()).collect(), change)
        };
        assert_eq!(
            got,
            vec![
                want(0, &["new", "1"], NetChange::Insert),
                want(0, &["gone", "x"], NetChange::Delete),
                want(0, &["upd", "new"], NetChange::Upsert),
                want(1, &["new"], NetChange::Insert),
            ]
        );
    }

    #[test]
    fn a_value_of_another_type_is_refused_naming_the_column() {
        let tables = vec![PgTable {
            name: "gold.t".into(),
            columns: vec![
                ("id".into(), PgType::BigInt),
                ("at".into(), PgType::Timestamptz),
            ],
            key: 1,
        }];
        let ok = [PgValue::Int(Some(1)), PgValue::Timestamp(Some(5))];
        assert!(check_row(&tables, 0, &ok).is_ok());
        let nulls = [PgValue::Int(Some(1)), PgValue::Text(None)];
        assert!(check_row(&tables, 0, &nulls).is_ok());
        let text = [
            PgValue::Int(Some(1)),
            PgValue::Text(Some("2026-01-01".into())),
        ];
        let err = check_row(&tables, 0, &text).unwrap_err().to_string();
        assert!(err.contains("gold.t") && err.contains("column at"), "{err}");
        let short = [PgValue::Int(Some(1))];
        assert!(check_row(&tables, 0, &short).is_err());
        assert!(check_row(&tables, 1, &ok).is_err());
        let far = [PgValue::Int(Some(1)), PgValue::Timestamp(Some(i64::MAX))];
        assert!(check_row(&tables, 0, &far).is_err());
    }
}
