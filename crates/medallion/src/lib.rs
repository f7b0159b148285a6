//! # alluvium-medallion
//!
//! The e-commerce reference pipeline (Bronze → Silver → Gold) on the Alluvium engine, as
//! specified in `docs/spec/medallion.md`. It is a *user* of `alluvium-engine`: everything
//! e-commerce lives here, nothing of it in the engine.
//!
//! - [`orders`], [`products`], [`customers`]: parsing and the validation rules of spec §3.
//! - [`graph`]: the differential graph that maintains every silver and gold table.
//! - [`sales`]: `daily_sales` as sums carried in differential differences.
//! - [`export`]: the tables as CSV in the format of the fixtures' `expected/` files.
//! - [`memory`]: running the pipeline over in-memory messages (tests, benches).
//! - [`generate`]: a deterministic generator of realistic, dirty input at any size.
//! - [`fixture`]: a case folder (like `tests/fixtures/sample-small`) as Kafka messages.
//! - [`warehouse`]: the gold tables of the PostgreSQL warehouse and their row mapping.
//! - [`money`], [`time`], [`codes`]: exact decimals, spec timestamps, code lists.

#![warn(missing_docs)]

pub mod codes;
pub mod customers;
pub mod export;
pub mod fixture;
pub mod generate;
pub mod graph;
pub mod json;
pub mod lake;
pub mod memory;
pub mod money;
pub mod orders;
pub mod products;
pub mod quality;
pub mod replay;
pub mod rows;
pub mod sales;
pub mod sinks;
pub mod time;
pub mod warehouse;

pub use graph::{medallion, PipelineConfig, Topics};
pub use rows::TableRow;
