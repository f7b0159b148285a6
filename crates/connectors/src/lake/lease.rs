//! One writing instance per pipeline and lake: a generation number in the catalog database.
//!
//! Every lake table is its own checkpoint, and a run's resume plan is built from all of them
//! together. That is only sound if every table was written by the same run: two instances of
//! a pipeline cut their epochs at different source positions, so a table left at epoch 57 of
//! one and another at epoch 57 (or 60) of the other describe positions no single replay can
//! pass through, and the next run would compute wrong changes for one of them. Fencing each
//! table on its own (a writer that finds a later epoch stops) does not prevent this: both
//! instances go on committing to the tables the other has not touched yet.
//!
//! So writers are fenced per *lease* — a name shared by all sinks of one pipeline on one lake
//! (the medallion pipeline uses one for its three lake sinks). A run claims the lease before
//! it reads its checkpoints, which increments the lease's generation in the catalog database
//! (table `alluvium_writers`; in a REST catalog, a lease table of its own: see
//! [`super::rest`]). Every commit's compare-and-swap of the catalog row holds only
//! while the generation is still its own, in the same statement. So once a claim returns, no
//! older instance commits anything more — its next commit fails with
//! [`LakeError::Superseded`] and it stops — and the tables the new run plans from stay as it
//! read them. This is Kafka's producer epoch and ZooKeeper's fencing token, in the catalog.
//!
//! `alluvium maintain` takes no lease: its compactions change no table's content or epoch, and
//! a conflicting commit is retried by either side.

use std::sync::Arc;

use super::catalog::CatalogWriter;
use super::{LakeConfig, LakeError};

/// A lease held by this process: the generation its commits are conditional on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The lease's name.
    pub writer: String,
    /// The generation this process claimed.
    pub generation: i64,
    /// In a REST catalog, the lease table's snapshot this claim committed (every commit
    /// asserts it is still current); `None` in a SQL catalog.
    pub lease_snapshot: Option<i64>,
}

/// A named writer lease of one lake, claimed at most once per process and shared by the
/// sinks of one pipeline (clone the `Arc`).
#[derive(Debug)]
pub struct WriterLease {
    name: String,
    claim: tokio::sync::Mutex<Option<Claim>>,
}

impl WriterLease {
    /// A lease named `name` (e.g. the pipeline's name), not claimed yet.
    pub fn new(name: impl Into<String>) -> Arc<Self> {
        Arc::new(WriterLease {
            name: name.into(),
            claim: tokio::sync::Mutex::new(None),
        })
    }

    /// The claim this process holds, if it claimed already (no database round trip).
    pub(crate) fn held(&self) -> Option<Claim> {
        self.claim.try_lock().ok().and_then(|held| held.clone())
    }

    /// Claims the lease (increments its generation, fencing every earlier holder) unless this
    /// process already holds it; returns the claim either way.
    pub(crate) async fn claim(
        &self,
        config: &LakeConfig,
        writer: &CatalogWriter,
    ) -> Result<Claim, LakeError> {
        let mut held = self.claim.lock().await;
        if let Some(claim) = held.as_ref() {
            return Ok(claim.clone());
        }
        let claim = match writer {
            CatalogWriter::Sql(pool) => Claim {
                writer: self.name.clone(),
                generation: next_generation(config, pool, &self.name).await?,
                lease_snapshot: None,
            },
            CatalogWriter::Rest(rest) => rest.claim(&self.name, &holder()).await?,
        };
        tracing::info!(lease = %self.name, generation = claim.generation, catalog = %config.catalog_name, "claimed the lake's writer lease");
        *held = Some(claim.clone());
        Ok(claim)
    }
}

/// Whoever holds the lease now, for errors: `(generation, holder)`.
pub(crate) async fn current(
    config: &LakeConfig,
    pool: &sqlx::AnyPool,
    writer: &str,
) -> Result<Option<(i64, String)>, LakeError> {
    use sqlx::Row as _;
    let sql = if config.is_postgres() {
        "SELECT generation, holder FROM alluvium_writers WHERE catalog_name = $1 AND writer = $2"
    } else {
        "SELECT generation, holder FROM alluvium_writers WHERE catalog_name = ? AND writer = ?"
    };
    let row = sqlx::query(sql)
        .bind(&config.catalog_name)
        .bind(writer)
        .fetch_optional(pool)
        .await
        .map_err(catalog_error(format!("reading the lease {writer}")))?;
    row.map(|r| {
        Ok((
            r.try_get::<i64, _>(0)
                .map_err(catalog_error(format!("reading the lease {writer}")))?,
            r.try_get::<String, _>(1).unwrap_or_default(),
        ))
    })
    .transpose()
}

/// The SQL condition (appended to the compare-and-swap's `WHERE`) that the lease is still at
/// the claimed generation. It takes three parameters after the swap's own six: the catalog
/// name, the writer and the generation.
pub(crate) fn condition(config: &LakeConfig) -> &'static str {
    if config.is_postgres() {
        // FOR SHARE: a claim (an UPDATE of the lease row) waits for a commit that holds the
        // row, and a commit waiting for a claim re-checks the generation it commits on.
        " AND EXISTS (SELECT 1 FROM alluvium_writers WHERE catalog_name = $7 AND writer = $8 \
         AND generation = $9 FOR SHARE)"
    } else {
        // SQLite runs one writing statement at a time over the whole database.
        " AND EXISTS (SELECT 1 FROM alluvium_writers WHERE catalog_name = ? AND writer = ? \
         AND generation = ?)"
    }
}

async fn next_generation(
    config: &LakeConfig,
    pool: &sqlx::AnyPool,
    writer: &str,
) -> Result<i64, LakeError> {
    use sqlx::Row as _;
    // Beside the SQL catalog's own tables.
    let create = "CREATE TABLE IF NOT EXISTS alluvium_writers (catalog_name TEXT NOT NULL, \
         writer TEXT NOT NULL, generation BIGINT NOT NULL, holder TEXT, \
         PRIMARY KEY (catalog_name, writer))";
    // Two instances starting at once may both create the table; PostgreSQL then refuses one
    // (a unique violation in its catalog), which a second try no longer meets.
    if sqlx::query(create).execute(pool).await.is_err() {
        sqlx::query(create)
            .execute(pool)
            .await
            .map_err(catalog_error("creating alluvium_writers".into()))?;
    }
    let sql = if config.is_postgres() {
        "INSERT INTO alluvium_writers (catalog_name, writer, generation, holder) VALUES ($1, $2, 1, $3) \
         ON CONFLICT (catalog_name, writer) DO UPDATE SET generation = alluvium_writers.generation + 1, \
         holder = EXCLUDED.holder RETURNING generation"
    } else {
        "INSERT INTO alluvium_writers (catalog_name, writer, generation, holder) VALUES (?, ?, 1, ?) \
         ON CONFLICT (catalog_name, writer) DO UPDATE SET generation = alluvium_writers.generation + 1, \
         holder = excluded.holder RETURNING generation"
    };
    let row = sqlx::query(sql)
        .bind(&config.catalog_name)
        .bind(writer)
        .bind(holder())
        .fetch_one(pool)
        .await
        .map_err(catalog_error(format!("claiming the lease {writer}")))?;
    row.try_get::<i64, _>(0)
        .map_err(catalog_error(format!("claiming the lease {writer}")))
}

/// Who this process is, for the error another instance reports: host, pid and time.
pub(crate) fn holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| "unknown host".into());
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "pid {} on {host}, claimed at unix time {since}",
        std::process::id()
    )
}

fn catalog_error(context: String) -> impl FnOnce(sqlx::Error) -> LakeError {
    move |source| LakeError::Catalog {
        context,
        source: Box::new(source),
    }
}
