//! Change data capture from PostgreSQL into Kafka, as Debezium-compatible envelopes.
//!
//! How it works, and why this way:
//!
//! - **Protocol**: a logical replication slot with the built-in `pgoutput` plugin, read with
//!   `pg_logical_slot_peek_binary_changes` over an ordinary `tokio-postgres` connection and
//!   advanced with `pg_replication_slot_advance` — only once Kafka acknowledged everything up
//!   to the new position. A crash between produce and advance replays those transactions:
//!   duplicates, never loss (the pipeline orders customer changes by LSN, so a replayed change
//!   changes nothing). `tokio-postgres` has no replication-protocol mode, and the SQL
//!   functions need none; the cost is re-decoding a peeked batch, bounded by
//!   [`CdcConfig::batch_changes`]. Messages are decoded by [`pgoutput`].
//! - **Initial snapshot, exactly consistent with the slot**: the slot is created first (its
//!   consistent point `C`); then a `REPEATABLE READ` transaction reads the table and records
//!   its snapshot (`pg_current_snapshot()`: xmin, xmax, in-progress xids). Snapshot rows are
//!   emitted as `op: "r"` at LSN `C - 1` (a streamed change may start exactly at `C`, and
//!   consumers order a row's changes by LSN). Streaming starts at `C` and *skips every transaction
//!   the snapshot already saw* (visible in that recorded snapshot), so each committed
//!   transaction is reflected exactly once: in the snapshot, or as change events — the same
//!   guarantee as an exported snapshot, without the replication protocol.
//! - **State**: a small JSON file (slot, consistent point, snapshot, whether the snapshot was
//!   completely produced). The slot itself is the durable stream position.
//! - **Deletes** carry the key (`before` = key columns under the default replica identity,
//!   the whole old row under `REPLICA IDENTITY FULL`). An update that leaves a TOASTed value
//!   unchanged does not send it: it is taken from the old image when the replica identity is
//!   `FULL`, otherwise the envelope holds Debezium's `__debezium_unavailable_value`.
//! - **Schema changes**: pgoutput sends a relation message before the first change after an
//!   `ALTER TABLE`; envelopes carry the new columns from then on.
//! - **Lag**: `pg_current_wal_lsn() - confirmed_flush_lsn` of the slot, in bytes, as the
//!   metric `alluvium_cdc_slot_lag_bytes`.

mod capture;
pub mod envelope;
pub mod pgoutput;

pub use capture::{CdcCapture, CdcConfig, CdcMetrics, CdcReport};

use thiserror::Error;

/// An error of change capture, naming what was being done.
#[derive(Debug, Error)]
pub enum CdcError {
    /// A setting is invalid.
    #[error("invalid CDC configuration `{key}`: {reason}")]
    Config {
        /// The setting.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// PostgreSQL failed.
    #[error("{context}: {source}")]
    Postgres {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The replication stream held something this decoder does not understand.
    #[error("decoding the change stream at {lsn}: {source}")]
    Decode {
        /// Where.
        lsn: String,
        /// What.
        #[source]
        source: pgoutput::DecodeError,
    },
    /// Reading or writing the state file failed.
    #[error("CDC state {path}: {reason}")]
    State {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaConnectorError),
}

impl CdcError {
    /// Whether retrying later may succeed (connection trouble, broker trouble).
    pub fn is_transient(&self) -> bool {
        match self {
            CdcError::Postgres { source, .. } => source.is_closed() || source.code().is_none(),
            CdcError::Kafka(_) => true,
            _ => false,
        }
    }
}
