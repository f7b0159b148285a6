//! File drops into Kafka: every finished file of a folder or object-store prefix, produced
//! once, even across crashes.
//!
//! The idea: a file is turned into an ordered list of messages by a caller-supplied function
//! (for the medallion pipeline, one product message per CSV record); the connector's job is
//! to get *each of those messages into the topic exactly once*.
//!
//! - **Where**: a [`DropFolder`] is a local directory or an `s3://bucket/prefix`, both read
//!   through `object_store`, so there is one code path.
//! - **When a file is finished** ([`ReadyRule`]): by default when its size, modification time
//!   and ETag stay the same over a settle period (writers that write in place); or, for
//!   writers that can, when a marker object `<name>.done` exists.
//! - **Once**: a durable [`Ledger`] (a JSON file replaced atomically) records each file by
//!   name and SHA-256 of its content. Before the first message of a file is sent, the ledger
//!   notes the topic's end offsets; when the file is complete it is marked done. Every
//!   message carries headers naming its file content and record index
//!   (`alluvium-file`, `alluvium-record`), so a restart in the middle of a file reads the
//!   topic back from the noted offsets, sees exactly which records made it, and sends only
//!   the others: no duplicate, no gap — without Kafka transactions (which the test broker
//!   does not isolate) and without a ledger write per record.
//! - A changed file under an old name has another hash, so it is a new file and ingested
//!   again; an unchanged file is never ingested twice.

mod folder;
mod ingest;
mod ledger;

pub use folder::{DropFolder, FileMeta, ReadyRule};
pub use ingest::{
    FileIngester, FileMessage, FileReport, IngestOptions, FILE_HEADER, RECORD_HEADER,
};
pub use ledger::{FileEntry, FileState, Ledger};

use thiserror::Error;

/// An error of the file connector, naming the file, folder or setting concerned.
#[derive(Debug, Error)]
pub enum FilesError {
    /// A setting is invalid.
    #[error("invalid file-ingest configuration `{key}`: {reason}")]
    Config {
        /// The setting.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Listing or reading the folder failed.
    #[error("{context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Reading or writing the ledger failed.
    #[error("ledger {path}: {reason}")]
    Ledger {
        /// The ledger file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Kafka failed (after the producer's own retries).
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaConnectorError),
}
