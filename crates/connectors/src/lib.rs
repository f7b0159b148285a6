//! # alluvium-connectors
//!
//! Connectors between the Alluvium engine and the systems around it. Each connector is a
//! module; today:
//!
//! - [`kafka`]: the Kafka source (a [`alluvium_engine::PartitionReader`] over rdkafka with
//!   manual partition assignment), topic administration and a reliable producer.
//! - [`warehouse`]: a PostgreSQL sink that applies each epoch's changes to keyed tables as
//!   deletes and upserts in one transaction with the source positions.
//!
//! REST ingest, CSV files, PostgreSQL CDC, Iceberg and the warehouse follow the same pattern:
//! the engine owns epochs and the commit protocol; a connector only moves bytes.

#![warn(missing_docs)]

pub mod kafka;
pub mod lake;
pub mod warehouse;
