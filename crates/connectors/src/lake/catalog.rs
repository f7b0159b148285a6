//! What a commit goes through to become current: the catalog database or a REST catalog.
//!
//! Both are a compare-and-swap of the table's current metadata. With Iceberg's SQL catalog
//! the committer writes the next metadata file itself and swaps the catalog row's pointer
//! with one conditional `UPDATE` (see [`super::commit`]); a REST catalog writes the metadata
//! file and checks the commit's requirements on the server (see [`super::rest`]).

use super::rest::RestWriter;

/// The connection a lake's commits (and its writer lease) go through.
pub(crate) enum CatalogWriter {
    /// Iceberg's SQL catalog: a pool on its database (SQLite or PostgreSQL).
    Sql(sqlx::AnyPool),
    /// A REST catalog.
    Rest(RestWriter),
}
