//! The Iceberg lakehouse sink.
//!
//! A pipeline's tables become Iceberg tables in a SQL catalog (SQLite file by default,
//! PostgreSQL by configuration) or a REST catalog, over local disk or S3-compatible storage,
//! committed once per epoch through the engine's commit protocol:
//!
//! - **append-only tables** (bronze, quarantine, `dq.results`): every worker writes its rows of
//!   the epoch as Parquet data files, in parallel; the committer adds all of them in one
//!   snapshot per table;
//! - **current-state tables** (silver, gold): the epoch's retractions and insertions travel to
//!   the committer, which writes the inserted rows as new data files and the retractions as
//!   position deletes (merge-on-read, see `deletes`) and commits one snapshot per table, so
//!   a commit costs the size of the changes. See [`commit`] for the manifest-level commit
//!   iceberg-rust 0.10.1 lacks.
//!
//! Exactly once: each snapshot's summary carries `alluvium.epoch` and `alluvium.positions`.
//! On start the sink walks each table's snapshots back to the last one it wrote; each table is
//! its own checkpoint (a crash between two tables' commits leaves them one epoch apart, and the
//! engine's resume plan replays exactly the epochs each one misses). A commit is a
//! compare-and-swap of the catalog row (in a REST catalog, a commit request whose
//! requirements the server checks), and a writer that finds a later epoch already in the
//! table stops (it is stale: fenced). Beyond single tables, a run claims the pipeline's
//! [`lease::WriterLease`] before it plans: every commit of an older instance fails from then
//! on, so all tables a plan reads come from one run.

mod catalog;
pub mod commit;
mod config;
mod deletes;
pub mod lease;
pub mod maintain;
pub mod metrics;
pub mod read;
mod rest;
mod retention;
pub mod sink;
pub mod table;

pub use config::{LakeConfig, S3Options, DEFAULT_RETAIN_SNAPSHOTS};
/// Partition transforms (`Day`, `Identity`, `Bucket(n)`, ...), re-exported from iceberg.
pub use iceberg::spec::Transform;
pub use sink::{IcebergSink, LakeRowMapper};
pub use table::{Column, ColumnType, Row, TableDef, TableMode, Value};

use thiserror::Error;

/// An error of the lakehouse sink.
#[derive(Debug, Error)]
pub enum LakeError {
    /// A configuration value is wrong; the message names the key.
    #[error("invalid lake configuration: {0}")]
    Config(String),
    /// A row does not fit its table.
    #[error("{0}")]
    Data(String),
    /// An operation of the Iceberg library failed.
    #[error("{context}: {source}")]
    Iceberg {
        /// What was being done.
        context: String,
        /// The library's error (boxed: it is large).
        #[source]
        source: Box<iceberg::Error>,
    },
    /// The catalog database failed.
    #[error("{context}: {source}")]
    Catalog {
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: Box<sqlx::Error>,
    },
    /// A REST catalog refused a request or could not be reached.
    #[error("{context}: {}{message}", status.map(|s| format!("HTTP {s}: ")).unwrap_or_default())]
    Rest {
        /// What was being done.
        context: String,
        /// The HTTP status (`None`: no answer).
        status: Option<u16>,
        /// The server's message, or the transport's error.
        message: String,
    },
    /// Another writer changed the table between our read and our compare-and-swap.
    #[error("table {0} was changed by another writer during the commit")]
    Conflict(String),
    /// The table already holds a later epoch than the one being committed: this writer is
    /// stale and must stop.
    #[error("table {table} already holds epoch {found}, not committing epoch {epoch}: another pipeline instance is writing it (fenced)")]
    Fenced {
        /// The table.
        table: String,
        /// The epoch found in the table.
        found: u64,
        /// The epoch this writer tried to commit.
        epoch: u64,
    },
    /// A later run claimed this writer's lease: another instance of the pipeline started on
    /// this lake, and this one must stop.
    #[error("the lake's writer lease `{writer}` was claimed by generation {found} ({holder}) after this run's generation {claimed}: another pipeline instance is writing this lake (fenced)")]
    Superseded {
        /// The lease.
        writer: String,
        /// This run's generation.
        claimed: i64,
        /// The generation found.
        found: i64,
        /// Who claimed it (host, pid, time).
        holder: String,
    },
    /// A table was committed to between this run's resume plan and its committer's start:
    /// another instance of the pipeline is writing it.
    #[error("table {table} moved from epoch {planned:?} to {found:?} after this run planned its resume: another pipeline instance is writing it (fenced)")]
    MovedSincePlan {
        /// The table.
        table: String,
        /// The last epoch the plan saw.
        planned: Option<u64>,
        /// The last epoch found when the committer started.
        found: Option<u64>,
    },
}

impl LakeError {
    pub(crate) fn iceberg(context: String, source: iceberg::Error) -> Self {
        match rest_refusal(&source) {
            Some((status, message)) => LakeError::Rest {
                context,
                status: Some(status),
                message,
            },
            None => LakeError::Iceberg {
                context,
                source: Box::new(source),
            },
        }
    }

    /// Whether retrying may succeed (lost races, I/O and network failures).
    pub fn is_transient(&self) -> bool {
        match self {
            LakeError::Conflict(_) => true,
            // No answer, the server failed, a timeout or a rate limit: other 4xx are
            // refusals that repeat.
            LakeError::Rest { status, .. } => {
                status.is_none_or(|s| s >= 500 || s == 408 || s == 429)
            }
            LakeError::Catalog { source, .. } => !matches!(
                **source,
                sqlx::Error::Database(_) | sqlx::Error::Configuration(_)
            ),
            LakeError::Iceberg { source, .. } => {
                matches!(
                    source.kind(),
                    iceberg::ErrorKind::Unexpected | iceberg::ErrorKind::CatalogCommitConflicts
                ) || source.retryable()
            }
            _ => false,
        }
    }
}

/// A REST catalog's refusal as iceberg-rust reports it: an `Unexpected` error whose context
/// holds the HTTP `status` (and every response header) and the server's `json` answer. The
/// crate offers no accessor for the context, so it is read from the error's text. Returns
/// the status and the server's message (`error.message`; the error's own text when the
/// answer has none), so that a refused credential reads "HTTP 403: …" and is not retried
/// as if the catalog had failed.
fn rest_refusal(e: &iceberg::Error) -> Option<(u16, String)> {
    if e.kind() != iceberg::ErrorKind::Unexpected {
        return None;
    }
    let text = e.to_string();
    let at = text.find("status: ")? + "status: ".len();
    let status: u16 = text.get(at..at + 3)?.parse().ok()?;
    let message = text
        .find("json: ")
        .and_then(|at| {
            let answer = serde_json::Deserializer::from_str(&text[at + "json: ".len()..])
                .into_iter::<serde_json::Value>()
                .next()?
                .ok()?;
            Some(answer.pointer("/error/message")?.as_str()?.to_owned())
        })
        .unwrap_or_else(|| e.message().to_owned());
    Some((status, message))
}

impl From<LakeError> for alluvium_engine::SinkError {
    fn from(e: LakeError) -> Self {
        if e.is_transient() {
            alluvium_engine::SinkError::Transient(e.to_string())
        } else {
            alluvium_engine::SinkError::Fatal(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LakeError;

    /// A REST catalog's answers: no answer, server failures, timeouts and rate limits are
    /// retried; refusals (bad request, forbidden, not found) stop the run, with the server's
    /// message in the error.
    #[test]
    fn rest_errors_retry_only_what_may_pass() {
        let rest = |status: Option<u16>| LakeError::Rest {
            context: "committing silver.orders in the REST catalog".into(),
            status,
            message: "the server said so".into(),
        };
        for status in [None, Some(500), Some(503), Some(408), Some(429)] {
            assert!(rest(status).is_transient(), "{status:?}");
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(!rest(Some(status)).is_transient(), "{status}");
        }
        assert_eq!(
            rest(Some(403)).to_string(),
            "committing silver.orders in the REST catalog: HTTP 403: the server said so"
        );
        // iceberg-rust's report of a refusal (its REST client's shape): read as one.
        let refusal = iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            "Received response with unexpected status code",
        )
        .with_context("status", "403 Forbidden")
        .with_context("headers", r#"{"content-type": "application/json"}"#)
        .with_context(
            "json",
            r#"{"error":{"message":"No policy permits 'create'","type":"ForbiddenException","code":403}}"#,
        );
        let e = LakeError::iceberg("creating namespace bronze".into(), refusal);
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "creating namespace bronze: HTTP 403: No policy permits 'create'"
        );
        let unavailable = iceberg::Error::new(iceberg::ErrorKind::Unexpected, "unexpected")
            .with_context("status", "503 Service Unavailable");
        let e = LakeError::iceberg("loading bronze.orders".into(), unavailable);
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "loading bronze.orders: HTTP 503: unexpected");
        assert_eq!(
            rest(None).to_string(),
            "committing silver.orders in the REST catalog: the server said so"
        );
    }
}
