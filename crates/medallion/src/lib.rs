//! # alluvium-medallion
//!
//! The e-commerce reference pipeline (Bronze → Silver → Gold) on the Alluvium engine, as
//! specified in `docs/spec/medallion.md`. It is a *user* of `alluvium-engine`: everything
//! e-commerce lives here, nothing of it in the engine.
//!
//! Work in progress (issue 3); this crate currently only fixes its place in the workspace.

#![warn(missing_docs)]

/// The Kafka topics the pipeline reads, in the order the spec lists them.
pub const TOPICS: [&str; 3] = ["orders", "products", "customers"];
