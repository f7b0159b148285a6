//! The capture loop: slot, snapshot, stream, produce, advance.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::envelope::{envelope, key_json, row_json, Source};
use super::pgoutput::{decode, OldTuple, PgOutput, Relation, RelationColumn, Tuple, TupleValue};
use super::CdcError;
use crate::kafka::producer::ReliableProducer;
use crate::kafka::{KafkaConfig, SOURCE_HEADER};

/// Settings of one table's change capture.
#[derive(Clone, Debug)]
pub struct CdcConfig {
    /// PostgreSQL connection URL (`postgresql://user@host:port/db`).
    pub pg_url: String,
    /// The captured table, `schema.table`.
    pub table: String,
    /// Publication (created for the table when missing).
    pub publication: String,
    /// Replication slot (created when missing).
    pub slot: String,
    /// Kafka topic of the envelopes.
    pub topic: String,
    /// Debezium's logical server name (`source.name`).
    pub server_name: String,
    /// The state file.
    pub state_path: PathBuf,
    /// Most changes decoded per round trip (whole transactions are always kept together).
    pub batch_changes: i32,
    /// Wait between polls when nothing is new.
    pub poll: Duration,
}

impl CdcConfig {
    /// Defaults for `table`: publication and slot `alluvium_<table>`, server name `alluvium`,
    /// batches of 10 000 changes, 200 ms polls.
    pub fn new(
        pg_url: impl Into<String>,
        table: impl Into<String>,
        topic: impl Into<String>,
        state_path: impl Into<PathBuf>,
    ) -> Self {
        let table = table.into();
        let short = table.rsplit('.').next().unwrap_or(&table).to_string();
        CdcConfig {
            pg_url: pg_url.into(),
            publication: format!("alluvium_{short}"),
            slot: format!("alluvium_{short}"),
            table,
            topic: topic.into(),
            server_name: "alluvium".into(),
            state_path: state_path.into(),
            batch_changes: 10_000,
            poll: Duration::from_millis(200),
        }
    }

    fn validate(&self) -> Result<(&str, &str), CdcError> {
        let bad = |key: &str, reason: String| CdcError::Config {
            key: key.into(),
            reason,
        };
        let (schema, table) = self
            .table
            .split_once('.')
            .ok_or_else(|| bad("cdc.table", format!("`{}` is not schema.table", self.table)))?;
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        for (key, v) in [
            ("cdc.table", schema),
            ("cdc.table", table),
            ("cdc.slot", self.slot.as_str()),
            ("cdc.publication", self.publication.as_str()),
        ] {
            if !ident(v) {
                return Err(bad(
                    key,
                    format!("`{v}` must be a lower-case identifier (a-z, 0-9, _)"),
                ));
            }
        }
        if self.topic.is_empty() {
            return Err(bad("cdc.topic", "is empty".into()));
        }
        if self.batch_changes < 1 {
            return Err(bad("cdc.batch_changes", "must be at least 1".into()));
        }
        Ok((schema, table))
    }
}

/// The capture's durable state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    slot: String,
    /// The slot's consistent point (LSN of the snapshot rows).
    consistent_lsn: u64,
    /// The snapshot the initial rows were read in; transactions visible in it are skipped.
    snapshot: Option<PgSnapshot>,
    /// Every snapshot row is acknowledged by Kafka.
    snapshot_done: bool,
}

/// A `pg_snapshot`: which transactions a read saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PgSnapshot {
    xmin: u64,
    xmax: u64,
    xip: Vec<u64>,
}

impl PgSnapshot {
    /// Parses `xmin:xmax:xip1,xip2` (the text of `pg_current_snapshot()`).
    fn parse(text: &str) -> Option<PgSnapshot> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        Some(PgSnapshot { xmin, xmax, xip })
    }

    /// Whether the committed transaction `xid` (32 bits, as in the WAL) was visible to this
    /// snapshot — i.e. its effects are already in the snapshot rows.
    fn saw(&self, xid: u32) -> bool {
        let full = widen(xid, self.xmax);
        full < self.xmin || (full < self.xmax && !self.xip.contains(&full))
    }
}

/// A 32-bit xid extended to 64 bits with the epoch of a nearby full xid.
fn widen(xid: u32, reference: u64) -> u64 {
    const HALF: u64 = 1 << 31;
    let candidate = (reference & !0xFFFF_FFFF) | u64::from(xid);
    if candidate > reference + HALF {
        candidate.saturating_sub(1 << 32)
    } else if candidate + HALF < reference {
        candidate + (1 << 32)
    } else {
        candidate
    }
}

fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Microseconds since 2000-01-01 (PostgreSQL's epoch) to ms since 1970-01-01.
fn pg_time_to_unix_ms(us: i64) -> i64 {
    us.div_euclid(1000) + 946_684_800_000
}

/// Metrics of one capture.
#[derive(Clone, Debug, Default)]
pub struct CdcMetrics {
    /// Bytes of WAL the slot holds back (`pg_current_wal_lsn() - confirmed_flush_lsn`).
    pub slot_lag_bytes: Gauge,
    /// Change events produced (snapshot rows included).
    pub events: Counter,
    /// Transactions skipped because the snapshot already held them.
    pub skipped_transactions: Counter,
}

impl CdcMetrics {
    /// Creates and registers the metrics (prefix `alluvium_cdc_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = CdcMetrics::default();
        let r = registry.sub_registry_with_prefix("alluvium_cdc");
        r.register(
            "slot_lag_bytes",
            "WAL bytes the replication slot holds back",
            m.slot_lag_bytes.clone(),
        );
        r.register(
            "events",
            "Change events produced to Kafka",
            m.events.clone(),
        );
        r.register(
            "skipped_transactions",
            "Streamed transactions already contained in the initial snapshot",
            m.skipped_transactions.clone(),
        );
        m
    }
}

/// What a capture run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CdcReport {
    /// Snapshot rows produced.
    pub snapshot_rows: u64,
    /// Change events produced.
    pub changes: u64,
}

/// Change capture of one table.
pub struct CdcCapture {
    config: CdcConfig,
    kafka: KafkaConfig,
    metrics: CdcMetrics,
    db: String,
}

/// A change waiting for its transaction's commit.
struct Pending {
    key: Vec<u8>,
    value: Vec<u8>,
}

impl CdcCapture {
    /// A capture; nothing is contacted until [`CdcCapture::run`].
    pub fn new(
        config: CdcConfig,
        kafka: KafkaConfig,
        metrics: CdcMetrics,
    ) -> Result<Self, CdcError> {
        config.validate()?;
        kafka.validate()?;
        let db = config
            .pg_url
            .parse::<tokio_postgres::Config>()
            .map_err(|source| CdcError::Postgres {
                context: "`cdc.pg_url`".into(),
                source,
            })?
            .get_dbname()
            .unwrap_or("postgres")
            .to_string();
        Ok(CdcCapture {
            config,
            kafka,
            metrics,
            db,
        })
    }

    fn load_state(&self) -> Result<Option<State>, CdcError> {
        let path = &self.config.state_path;
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| CdcError::State {
                    path: path.display().to_string(),
                    reason: format!("not a CDC state file: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CdcError::State {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    fn save_state(&self, state: &State) -> Result<(), CdcError> {
        let path = &self.config.state_path;
        let err = |reason: String| CdcError::State {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| err(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| err(e.to_string()))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    /// Runs until `stop` returns true (checked between batches), or — with `until_idle` —
    /// until a poll finds no new change. Connection failures are retried with backoff.
    pub fn run(
        &mut self,
        until_idle: bool,
        mut stop: impl FnMut() -> bool,
    ) -> Result<CdcReport, CdcError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CdcError::Config {
                key: "runtime".into(),
                reason: format!("could not start an async runtime: {e}"),
            })?;
        let mut report = CdcReport::default();
        let mut backoff = Duration::from_millis(200);
        let mut attempts = 0;
        loop {
            match runtime.block_on(self.session(until_idle, &mut stop, &mut report)) {
                Ok(()) => return Ok(report),
                Err(e) if e.is_transient() && attempts < 30 => {
                    attempts += 1;
                    tracing::warn!(error = %e, attempt = attempts, retry_in = ?backoff, "change capture failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn connect(&self) -> Result<Client, CdcError> {
        let (client, connection) = tokio_postgres::connect(&self.config.pg_url, NoTls)
            .await
            .map_err(|source| CdcError::Postgres {
                context: "connecting to the source database".into(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "source database connection closed");
            }
        });
        // Value text forms the envelope conversion expects.
        client
            .batch_execute(
                "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 3",
            )
            .await
            .map_err(pg("setting up the session"))?;
        Ok(client)
    }

    async fn session(
        &mut self,
        until_idle: bool,
        stop: &mut impl FnMut() -> bool,
        report: &mut CdcReport,
    ) -> Result<(), CdcError> {
        let client = self.connect().await?;
        let (schema, table) = self.config.validate()?;
        let (schema, table) = (schema.to_string(), table.to_string());
        self.ensure_publication(&client, &schema, &table).await?;
        let slot_lsn = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots \
                 WHERE slot_name = $1 AND database = current_database()",
                &[&self.config.slot],
            )
            .await
            .map_err(pg("looking up the replication slot"))?
            .map(|r| r.get::<_, Option<String>>(0));
        let mut state = match (self.load_state()?, slot_lsn) {
            (Some(s), Some(_)) if s.slot == self.config.slot => s,
            (Some(s), None) if s.snapshot_done => {
                // The slot was dropped: changes since were lost to it. Start over with a new
                // snapshot (the pipeline's keyed state absorbs the repeated rows).
                tracing::error!(slot = %s.slot, "replication slot is gone; taking a new snapshot");
                self.create_slot(&client).await?
            }
            (_, Some(_)) => {
                return Err(CdcError::Config {
                    key: "cdc.slot".into(),
                    reason: format!(
                        "slot `{}` exists but the state file {} does not describe it; drop the slot or give its state file",
                        self.config.slot,
                        self.config.state_path.display()
                    ),
                })
            }
            (_, None) => self.create_slot(&client).await?,
        };
        let producer = ReliableProducer::new(&self.kafka)?;
        let origin = format!("postgres:{schema}.{table}");
        if !state.snapshot_done {
            let rows = self
                .snapshot(&client, &schema, &table, &producer, &origin, &mut state)
                .await?;
            report.snapshot_rows += rows;
            state.snapshot_done = true;
            self.save_state(&state)?;
            tracing::info!(rows, lsn = %lsn_text(state.consistent_lsn), "initial snapshot produced");
        }
        let mut relations: HashMap<u32, Relation> = HashMap::new();
        while !stop() {
            let produced = self
                .stream_batch(&client, &producer, &origin, &state, &mut relations)
                .await?;
            report.changes += produced.0;
            self.update_lag(&client).await;
            if !produced.1 {
                if until_idle {
                    return Ok(());
                }
                tokio::time::sleep(self.config.poll).await;
            }
        }
        Ok(())
    }

    async fn ensure_publication(
        &self,
        client: &Client,
        schema: &str,
        table: &str,
    ) -> Result<(), CdcError> {
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&self.config.publication],
            )
            .await
            .map_err(pg("looking up the publication"))?
            .is_some();
        if !exists {
            // Identifiers were validated as plain lower-case names.
            client
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {schema}.{table}",
                    self.config.publication
                ))
                .await
                .map_err(pg("creating the publication"))?;
            tracing::info!(publication = %self.config.publication, "publication created");
        }
        Ok(())
    }

    async fn create_slot(&self, client: &Client) -> Result<State, CdcError> {
        let row = client
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&self.config.slot],
            )
            .await
            .map_err(pg("creating the replication slot"))?;
        let text: String = row.get(0);
        let lsn = parse_lsn(&text).ok_or_else(|| CdcError::Config {
            key: "cdc.slot".into(),
            reason: format!("unreadable LSN `{text}`"),
        })?;
        let state = State {
            slot: self.config.slot.clone(),
            consistent_lsn: lsn,
            snapshot: None,
            snapshot_done: false,
        };
        self.save_state(&state)?;
        tracing::info!(slot = %self.config.slot, lsn = %text, "replication slot created");
        Ok(state)
    }

    /// Reads the table in one `REPEATABLE READ` transaction and produces every row as `r`.
    async fn snapshot(
        &self,
        client: &Client,
        schema: &str,
        table: &str,
        producer: &ReliableProducer,
        origin: &str,
        state: &mut State,
    ) -> Result<u64, CdcError> {
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(pg("starting the snapshot transaction"))?;
        let snap: String = client
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .await
            .map_err(pg("reading the snapshot"))?
            .get(0);
        let snapshot = PgSnapshot::parse(&snap).ok_or_else(|| CdcError::Config {
            key: "cdc.snapshot".into(),
            reason: format!("unreadable pg_snapshot `{snap}`"),
        })?;
        let columns = table_columns(client, schema, table).await?;
        if columns.is_empty() {
            return Err(CdcError::Config {
                key: "cdc.table".into(),
                reason: format!("table {schema}.{table} does not exist or has no columns"),
            });
        }
        let order: Vec<&str> = columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.as_str())
            .collect();
        let select = format!(
            "SELECT {} FROM {schema}.{table}{}",
            columns
                .iter()
                .map(|c| quote_ident(&c.name))
                .collect::<Vec<_>>()
                .join(", "),
            if order.is_empty() {
                String::new()
            } else {
                format!(
                    " ORDER BY {}",
                    order
                        .iter()
                        .map(|c| quote_ident(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        let messages = client
            .simple_query(&select)
            .await
            .map_err(pg("reading the snapshot rows"))?;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(pg("ending the snapshot transaction"))?;
        let rows: Vec<Tuple> = messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..columns.len())
                        .map(|i| match r.get(i) {
                            Some(v) => TupleValue::Text(v.to_string()),
                            None => TupleValue::Null,
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        let read_at = now_ms();
        let n = rows.len();
        for (i, row) in rows.iter().enumerate() {
            let source = Source {
                server: &self.config.server_name,
                db: &self.db,
                schema,
                table,
                ts_ms: read_at,
                tx_id: None,
                // The first streamed change can start exactly at the consistent point: one
                // below it, snapshot rows sort strictly before every change.
                lsn: state.consistent_lsn.saturating_sub(1),
                snapshot: match i {
                    0 if n > 1 => "first",
                    i if i + 1 == n => "last",
                    _ => "true",
                },
            };
            let value = envelope(
                "r",
                None,
                Some(row_json(&columns, row, false, None)),
                &source,
                now_ms(),
            );
            self.send(producer, origin, &key_json(&columns, row), &value)?;
        }
        producer.flush(Duration::from_secs(60))?;
        self.metrics.events.inc_by(n as u64);
        state.snapshot = Some(snapshot);
        Ok(n as u64)
    }

    fn send(
        &self,
        producer: &ReliableProducer,
        origin: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), CdcError> {
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: SOURCE_HEADER,
            value: Some(origin.as_bytes()),
        });
        producer.send_with_headers(&self.config.topic, Some(key), value, Some(headers))?;
        Ok(())
    }

    /// Peeks one batch of whole transactions, produces the changes of those the snapshot did
    /// not see, waits for Kafka, then advances the slot past them. Returns (events produced,
    /// whether anything was decoded).
    async fn stream_batch(
        &self,
        client: &Client,
        producer: &ReliableProducer,
        origin: &str,
        state: &State,
        relations: &mut HashMap<u32, Relation>,
    ) -> Result<(u64, bool), CdcError> {
        let rows = client
            .query(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
                 'proto_version', '1', 'publication_names', $3)",
                &[
                    &self.config.slot,
                    &self.config.batch_changes,
                    &self.config.publication,
                ],
            )
            .await
            .map_err(pg("reading the replication slot"))?;
        if rows.is_empty() {
            return Ok((0, false));
        }
        let mut produced = 0u64;
        let mut txn: Option<(u32, i64, Vec<Pending>)> = None;
        let mut advance_to: Option<u64> = None;
        for row in &rows {
            let lsn_str: String = row.get(0);
            let data: Vec<u8> = row.get(1);
            let lsn = parse_lsn(&lsn_str).unwrap_or(0);
            let msg = decode(&data).map_err(|source| CdcError::Decode {
                lsn: lsn_str.clone(),
                source,
            })?;
            match msg {
                PgOutput::Begin {
                    xid, commit_time, ..
                } => txn = Some((xid, commit_time, Vec::new())),
                PgOutput::Relation(r) => {
                    relations.insert(r.id, r);
                }
                PgOutput::Commit { end_lsn, .. } => {
                    if let Some((xid, _, changes)) = txn.take() {
                        let seen = state.snapshot.as_ref().is_some_and(|s| s.saw(xid));
                        if seen {
                            self.metrics.skipped_transactions.inc();
                        } else {
                            for c in &changes {
                                self.send(producer, origin, &c.key, &c.value)?;
                            }
                            produced += changes.len() as u64;
                        }
                    }
                    advance_to = Some(end_lsn.max(lsn));
                }
                PgOutput::Truncate { .. } => {
                    tracing::error!(lsn = %lsn_str, "TRUNCATE of a captured table: not representable as row changes; ignored (re-snapshot to recover)");
                }
                PgOutput::Insert { .. } | PgOutput::Update { .. } | PgOutput::Delete { .. } => {
                    let Some((xid, commit_time, changes)) = txn.as_mut() else {
                        continue;
                    };
                    if let Some(p) = self.change(&msg, relations, *xid, *commit_time, lsn) {
                        changes.push(p);
                    }
                }
                PgOutput::Other(_) => {}
            }
        }
        producer.flush(Duration::from_secs(60))?;
        self.metrics.events.inc_by(produced);
        alluvium_engine::failpoint::hit("cdc_before_advance", &self.config.slot);
        if let Some(to) = advance_to {
            let to = lsn_text(to);
            client
                .query(
                    "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                    &[&self.config.slot, &to],
                )
                .await
                .map_err(pg("advancing the replication slot"))?;
        }
        Ok((produced, true))
    }

    /// The envelope of one row change.
    fn change(
        &self,
        msg: &PgOutput,
        relations: &HashMap<u32, Relation>,
        xid: u32,
        commit_time: i64,
        lsn: u64,
    ) -> Option<Pending> {
        let (relation, op, before, after, key_tuple): (u32, &str, _, _, &Tuple) = match msg {
            PgOutput::Insert { relation, new } => (*relation, "c", None, Some((new, None)), new),
            PgOutput::Update { relation, old, new } => {
                let old_full = match old {
                    Some(OldTuple::Full(t)) => Some(t),
                    _ => None,
                };
                (*relation, "u", old.as_ref(), Some((new, old_full)), new)
            }
            PgOutput::Delete { relation, old } => {
                let t = match old {
                    OldTuple::Key(t) | OldTuple::Full(t) => t,
                };
                (*relation, "d", Some(old), None, t)
            }
            _ => return None,
        };
        let Some(rel) = relations.get(&relation) else {
            tracing::error!(relation, "change for a relation never described; skipped");
            return None;
        };
        let before = before.map(|old| match old {
            OldTuple::Key(t) => row_json(&rel.columns, t, true, None),
            OldTuple::Full(t) => row_json(&rel.columns, t, false, None),
        });
        let after = after.map(|(new, old)| row_json(&rel.columns, new, false, old));
        let source = Source {
            server: &self.config.server_name,
            db: &self.db,
            schema: &rel.namespace,
            table: &rel.name,
            ts_ms: pg_time_to_unix_ms(commit_time),
            tx_id: Some(xid),
            lsn,
            snapshot: "false",
        };
        Some(Pending {
            key: key_json(&rel.columns, key_tuple),
            value: envelope(op, before, after, &source, now_ms()),
        })
    }

    async fn update_lag(&self, client: &Client) {
        let lag = client
            .query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.config.slot],
            )
            .await;
        match lag {
            Ok(Some(row)) => {
                let bytes: Option<i64> = row.get(0);
                self.metrics.slot_lag_bytes.set(bytes.unwrap_or(0));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the slot lag"),
        }
    }
}

/// The table's columns in order, with the primary key marked.
async fn table_columns(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<RelationColumn>, CdcError> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::oid, \
                    COALESCE(a.attnum = ANY(i.indkey::int2[]), false) \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(pg("reading the table's columns"))?;
    Ok(rows
        .iter()
        .map(|r| RelationColumn {
            name: r.get(0),
            type_oid: r.get(1),
            key: r.get(2),
        })
        .collect())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> CdcError {
    move |source| CdcError::Postgres {
        context: context.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_visibility() {
        let s = PgSnapshot::parse("740:750:742,745").unwrap();
        assert!(s.saw(739), "committed before xmin");
        assert!(s.saw(741), "committed between, not in progress");
        assert!(!s.saw(742), "in progress at the snapshot");
        assert!(!s.saw(750), "started after");
        assert!(!s.saw(9999));
        assert_eq!(
            PgSnapshot::parse("5:5:"),
            Some(PgSnapshot {
                xmin: 5,
                xmax: 5,
                xip: vec![]
            })
        );
        // Epochs: a snapshot in epoch 1 and a 32-bit xid just after the wrap.
        let s =
            PgSnapshot::parse(&format!("{}:{}:", (1u64 << 32) + 10, (1u64 << 32) + 20)).unwrap();
        assert!(s.saw(5));
        assert!(!s.saw(25));
        assert!(s.saw(u32::MAX - 3), "end of the previous epoch");
    }

    #[test]
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("x"), None);
    }

    #[test]
    fn pg_epoch() {
        assert_eq!(pg_time_to_unix_ms(0), 946_684_800_000);
        assert_eq!(pg_time_to_unix_ms(1_500), 946_684_800_001);
    }
}
