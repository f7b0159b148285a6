//! # alluvium-connectors
//!
//! Connectors between the Alluvium engine and the systems around it. Each connector is a
//! module; today:
//!
//! - [`kafka`]: the Kafka source (a [`alluvium_engine::PartitionReader`] over rdkafka with
//!   manual partition assignment), topic administration and a reliable producer.
//! - [`lake`]: the Iceberg sink (SQL catalog on SQLite or PostgreSQL, local or S3 storage):
//!   append-only tables get worker-written Parquet files, current-state tables new files plus
//!   position deletes, committed at the manifest level with the epoch and positions in each
//!   snapshot; plus maintenance (compaction, snapshot expiry).
//! - [`warehouse`]: a PostgreSQL sink that applies each epoch's changes to keyed tables as
//!   deletes and upserts in one transaction with the source positions.
//!
//! - [`rest`]: the REST ingest service (`POST /v1/orders` → Kafka, answered only once the
//!   broker acknowledged every event).
//!
//! - [`files`]: finished files of a folder or S3 prefix into Kafka, once each (durable
//!   ledger; an interrupted file resumes by reading the topic back).
//!
//! - [`cdc`]: PostgreSQL change data capture (pgoutput slot, consistent snapshot) into Kafka
//!   as Debezium envelopes.
//!
//! - [`secret`]: credentials that print as `***`.
//!
//! All follow the same pattern:
//! the engine owns epochs and the commit protocol; a connector only moves bytes.

#![warn(missing_docs)]

pub mod cdc;
pub mod files;
pub mod kafka;
pub mod lake;
pub mod rest;
pub mod secret;
pub mod warehouse;
