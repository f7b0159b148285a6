//! Commits through an Iceberg REST catalog.
//!
//! A REST catalog owns its tables' metadata files: a client does not write the next metadata
//! file and swap a pointer (as with the SQL catalog), it sends the *changes* — add this
//! snapshot, point `main` at it, drop those old snapshots — with *requirements* the server
//! checks atomically before it applies them: the table is still the one we loaded
//! (`assert-table-uuid`) and `main` still points at the snapshot our commit builds on
//! (`assert-ref-snapshot-id`). A failed requirement is `409 Conflict`: someone else committed
//! first, and nothing of ours is referenced. This is the same compare-and-swap as the SQL
//! catalog's conditional `UPDATE`, performed by the server.
//!
//! iceberg-rust 0.10.1 reaches that endpoint only through `Catalog::update_table`, whose
//! commit type cannot be built outside the crate, so the commit request is sent here; loading
//! and creating tables go through iceberg-rust's `RestCatalog`.
//!
//! **The writer lease** (see [`super::lease`]) lives in the catalog as a table of its own,
//! `alluvium.<lease>_lease`, that holds no data: claiming it commits an empty snapshot to it
//! (its sequence number is the generation, its summary names the holder), with the same
//! `assert-ref-snapshot-id` requirement, so two claims never both win. Every data commit of a
//! run that holds the lease is sent as a multi-table transaction
//! (`POST /v1/{prefix}/transactions/commit`) whose second entry asserts that the lease table's
//! `main` is still the claim's snapshot: a later claim makes every earlier holder's commit
//! fail as a whole. The catalog must implement that endpoint (optional in the REST spec); a
//! catalog that does not is reported at the first commit.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::spec::{
    ManifestListWriter, Operation, Snapshot, SnapshotReference, SnapshotRetention, Summary,
    TableMetadata, MAIN_BRANCH,
};
use iceberg::table::Table;
use iceberg::{Catalog, NamespaceIdent, TableIdent, TableRequirement, TableUpdate};
use serde::{Deserialize, Serialize};

use super::lease::Claim;
use super::{LakeConfig, LakeError};
use crate::secret::Secret;

/// Namespace of the lease tables.
const LEASE_NAMESPACE: &str = "alluvium";
/// The lease snapshot's summary property that names its holder.
const HOLDER_PROPERTY: &str = "alluvium.lease-holder";

/// A connection to a REST catalog for commits: the HTTP client, the catalog's base URL with
/// its prefix, and iceberg-rust's catalog for loading tables.
pub(crate) struct RestWriter {
    http: reqwest::Client,
    /// `{uri}/v1` or `{uri}/v1/{prefix}`.
    base: reqwest::Url,
    token: Option<Secret>,
    catalog: Arc<dyn Catalog>,
    /// Whether the server implements multi-table transactions.
    transactions: bool,
}

/// `GET /v1/config`'s answer: the prefix comes from the overrides.
#[derive(Deserialize)]
struct CatalogConfig {
    #[serde(default)]
    overrides: HashMap<String, String>,
    #[serde(default)]
    defaults: HashMap<String, String>,
    /// The endpoints the server implements (REST spec 1.x). Absent (an older server): it is
    /// assumed to implement transactions, and a first commit reports the server's answer
    /// if it does not.
    #[serde(default)]
    endpoints: Option<Vec<String>>,
}

/// The endpoint the writer lease needs.
const TRANSACTIONS_ENDPOINT: &str = "POST /v1/{prefix}/transactions/commit";

/// One table's entry of a commit: what the server checks and what it applies.
#[derive(Serialize)]
struct CommitTableRequest<'a> {
    identifier: &'a TableIdent,
    requirements: &'a [TableRequirement],
    updates: &'a [TableUpdate],
}

#[derive(Serialize)]
struct CommitTransactionRequest<'a> {
    #[serde(rename = "table-changes")]
    table_changes: Vec<CommitTableRequest<'a>>,
}

/// What the server says when it refuses a request (`{"error": {"message": …}}`).
#[derive(Deserialize)]
struct ErrorResponse {
    error: ErrorModel,
}

#[derive(Deserialize)]
struct ErrorModel {
    message: String,
}

impl RestWriter {
    /// Connects to the catalog of `config` (asks it for its prefix).
    pub(crate) async fn connect(
        config: &LakeConfig,
        catalog: Arc<dyn Catalog>,
    ) -> Result<Self, LakeError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| rest_error("building the HTTP client", None, e.to_string()))?;
        let uri = config.catalog_uri.trim_end_matches('/');
        let mut request = http
            .get(format!("{uri}/v1/config"))
            .query(&[("warehouse", config.warehouse.as_str())]);
        if let Some(token) = &config.catalog_token {
            request = request.bearer_auth(token.expose());
        }
        let context = format!("reading the REST catalog's configuration at {uri}/v1/config");
        let response = request
            .send()
            .await
            .map_err(|e| rest_error(&context, None, e.to_string()))?;
        let response = check(response, &context).await?;
        let answer: CatalogConfig = response
            .json()
            .await
            .map_err(|e| rest_error(&context, None, e.to_string()))?;
        let prefix = answer
            .overrides
            .get("prefix")
            .or_else(|| answer.defaults.get("prefix"))
            .filter(|p| !p.is_empty());
        let base = match prefix {
            Some(p) => format!("{uri}/v1/{p}"),
            None => format!("{uri}/v1"),
        };
        let base = reqwest::Url::parse(&base).map_err(|e| {
            LakeError::Config(format!("`lake.catalog_uri`: `{uri}` is not a URL: {e}"))
        })?;
        let transactions = answer
            .endpoints
            .as_ref()
            .is_none_or(|e| e.iter().any(|e| e == TRANSACTIONS_ENDPOINT));
        Ok(RestWriter {
            http,
            base,
            token: config.catalog_token.clone(),
            catalog,
            transactions,
        })
    }

    /// A `POST` to the base URL plus `segments`, each percent-encoded as one path segment.
    fn post(&self, segments: &[&str]) -> Result<reqwest::RequestBuilder, LakeError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| rest_error("building a URL", None, format!("{} has no path", self.base)))?
            .pop_if_empty()
            .extend(segments);
        let request = self.http.post(url);
        Ok(match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        })
    }

    /// Commits `updates` to `table` under `requirements` and returns the table as committed.
    /// With a `claim`, the commit is a transaction that also asserts the lease is still ours.
    pub(crate) async fn commit(
        &self,
        table: &Table,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
        claim: Option<&Claim>,
    ) -> Result<Table, LakeError> {
        let ident = table.identifier();
        let entry = CommitTableRequest {
            identifier: ident,
            requirements: &requirements,
            updates: &updates,
        };
        let context = format!("committing {ident} in the REST catalog");
        let lease_ident;
        let lease_requirement;
        let response = match claim.and_then(|c| c.lease_snapshot.map(|s| (c, s))) {
            None => {
                // Namespace levels are joined by the unit separator (REST spec).
                let namespace = ident.namespace().join("\u{1f}");
                self.post(&["namespaces", &namespace, "tables", ident.name()])?
                    .json(&entry)
                    .send()
                    .await
            }
            Some((claim, lease_snapshot)) => {
                lease_ident = lease_table(&claim.writer);
                lease_requirement = [TableRequirement::RefSnapshotIdMatch {
                    r#ref: MAIN_BRANCH.to_string(),
                    snapshot_id: Some(lease_snapshot),
                }];
                let lease = CommitTableRequest {
                    identifier: &lease_ident,
                    requirements: &lease_requirement,
                    updates: &[],
                };
                let body = CommitTransactionRequest {
                    table_changes: vec![entry, lease],
                };
                self.post(&["transactions", "commit"])?
                    .json(&body)
                    .send()
                    .await
            }
        }
        .map_err(|e| rest_error(&context, None, e.to_string()))?;
        if response.status() == reqwest::StatusCode::CONFLICT {
            if let Some(claim) = claim {
                let (found, holder) = self.lease_state(&claim.writer).await?;
                if found.map(|f| f.0) != claim.lease_snapshot {
                    let (generation, holder) = match (found, holder) {
                        (Some((_, generation)), holder) => (generation, holder),
                        (None, _) => (0, "nobody (the lease table was reset)".into()),
                    };
                    return Err(LakeError::Superseded {
                        writer: claim.writer.clone(),
                        claimed: claim.generation,
                        found: generation,
                        holder,
                    });
                }
            }
            return Err(LakeError::Conflict(ident.to_string()));
        }
        check(response, &context).await?;
        // The server applied exactly these updates to the metadata they were checked against,
        // which is the metadata we hold: apply them here too rather than load the table again
        // (a `GET` of the whole metadata, up to hundreds of KB, per table per commit; a
        // transaction's answer carries none). What differs from the server's copy (its
        // metadata file's location and log, its update time) is nothing a commit reads. Should
        // the local apply fail, the table is loaded as committed.
        match applied(table, updates) {
            Ok(committed) => Ok(committed),
            Err(e) => {
                tracing::debug!(table = %ident, error = %e, "loading the table after its commit");
                self.catalog.load_table(ident).await.map_err(|e| {
                    LakeError::iceberg(format!("reloading {ident} after its commit"), e)
                })
            }
        }
    }

    /// Claims the lease `writer`: commits the next empty snapshot to its table (created on
    /// first use). Retries when another claim wins the race.
    pub(crate) async fn claim(&self, writer: &str, holder: &str) -> Result<Claim, LakeError> {
        if !self.transactions {
            return Err(LakeError::Config(format!(
                "`lake.catalog_uri`: the REST catalog at {} does not list `{TRANSACTIONS_ENDPOINT}` \
                 among its endpoints; the lake's writer lease commits through it",
                self.base
            )));
        }
        let ident = lease_table(writer);
        let table = self.lease_table(&ident).await?;
        let mut table = table;
        for _ in 0..20 {
            let metadata = table.metadata();
            let parent = metadata.current_snapshot_id();
            let sequence = metadata.next_sequence_number();
            let id = super::commit::snapshot_id(&table);
            // A snapshot needs a manifest list, even an empty one.
            let list_path = format!(
                "{}/metadata/snap-{id}-{}.avro",
                metadata.location(),
                uuid::Uuid::new_v4()
            );
            let output = table
                .file_io()
                .new_output(&list_path)
                .map_err(|e| LakeError::iceberg(format!("writing the lease {ident}"), e))?;
            let list = ManifestListWriter::v2(
                output
                    .writer()
                    .await
                    .map_err(|e| LakeError::iceberg(format!("writing the lease {ident}"), e))?,
                id,
                parent,
                sequence,
            );
            list.close()
                .await
                .map_err(|e| LakeError::iceberg(format!("writing the lease {ident}"), e))?;
            let snapshot = super::commit::next_snapshot(
                metadata,
                id,
                list_path,
                Summary {
                    operation: Operation::Append,
                    additional_properties: HashMap::from([(
                        HOLDER_PROPERTY.to_string(),
                        holder.to_string(),
                    )]),
                },
            );
            let (requirements, mut updates) = snapshot_commit(metadata, snapshot);
            // Old claims are history nobody reads: keep the last few.
            let old: Vec<i64> = metadata
                .snapshots()
                .filter(|s| s.sequence_number() + 8 < sequence)
                .map(|s| s.snapshot_id())
                .collect();
            if !old.is_empty() {
                updates.push(TableUpdate::RemoveSnapshots { snapshot_ids: old });
            }
            match self.commit(&table, requirements, updates, None).await {
                Ok(_) => {
                    return Ok(Claim {
                        writer: writer.to_string(),
                        generation: sequence,
                        lease_snapshot: Some(id),
                    })
                }
                Err(LakeError::Conflict(_)) => {
                    table =
                        self.catalog.load_table(&ident).await.map_err(|e| {
                            LakeError::iceberg(format!("loading the lease {ident}"), e)
                        })?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(LakeError::Conflict(ident.to_string()))
    }

    /// The lease's current snapshot and generation, and its holder.
    async fn lease_state(&self, writer: &str) -> Result<(Option<(i64, i64)>, String), LakeError> {
        let ident = lease_table(writer);
        let table = self
            .catalog
            .load_table(&ident)
            .await
            .map_err(|e| LakeError::iceberg(format!("loading the lease {ident}"), e))?;
        Ok(match table.metadata().current_snapshot() {
            Some(s) => (
                Some((s.snapshot_id(), s.sequence_number())),
                s.summary()
                    .additional_properties
                    .get(HOLDER_PROPERTY)
                    .cloned()
                    .unwrap_or_default(),
            ),
            None => (None, String::new()),
        })
    }

    /// The lease table, created on first use.
    async fn lease_table(&self, ident: &TableIdent) -> Result<Table, LakeError> {
        let def = super::TableDef::new(
            LEASE_NAMESPACE,
            ident.name(),
            super::TableMode::Append,
            vec![super::Column::optional("holder", super::ColumnType::String)],
        );
        super::commit::ensure_table(self.catalog.as_ref(), &def).await
    }
}

/// `table` after `updates`, applied as the catalog applies them.
fn applied(table: &Table, updates: Vec<TableUpdate>) -> iceberg::Result<Table> {
    let mut builder = table.metadata().clone().into_builder(None);
    for update in updates {
        builder = update.apply(builder)?;
    }
    Table::builder()
        .metadata(builder.build()?.metadata)
        .identifier(table.identifier().clone())
        .file_io(table.file_io().clone())
        .runtime(iceberg::Runtime::try_current()?)
        .build()
}

/// What makes `snapshot` (a child of the table's current snapshot) the table's `main`: the
/// requirements the server checks (the same table, `main` still at the snapshot's parent)
/// and the updates it then applies.
pub(crate) fn snapshot_commit(
    metadata: &TableMetadata,
    snapshot: Snapshot,
) -> (Vec<TableRequirement>, Vec<TableUpdate>) {
    let requirements = vec![
        TableRequirement::UuidMatch {
            uuid: metadata.uuid(),
        },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: MAIN_BRANCH.to_string(),
            snapshot_id: snapshot.parent_snapshot_id(),
        },
    ];
    let reference = SnapshotReference::new(
        snapshot.snapshot_id(),
        SnapshotRetention::branch(None, None, None),
    );
    let updates = vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: MAIN_BRANCH.to_string(),
            reference,
        },
    ];
    (requirements, updates)
}

/// The table that holds lease `writer`: `alluvium.<writer>_lease`, `-` and `.` made `_`.
fn lease_table(writer: &str) -> TableIdent {
    let name: String = writer
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    TableIdent::new(
        NamespaceIdent::new(LEASE_NAMESPACE.to_string()),
        format!("{name}_lease"),
    )
}

/// `Ok` for a 2xx answer; otherwise the server's message.
async fn check(response: reqwest::Response, context: &str) -> Result<reqwest::Response, LakeError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorResponse>(&body)
        .map(|e| e.error.message)
        .unwrap_or(body);
    Err(rest_error(context, Some(status.as_u16()), message))
}

fn rest_error(context: &str, status: Option<u16>, message: String) -> LakeError {
    LakeError::Rest {
        context: context.to_string(),
        status,
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use iceberg::spec::{Operation, Summary};
    use iceberg::TableUpdate;

    use super::{applied, snapshot_commit};
    use crate::lake::commit::{ensure_table, next_snapshot, snapshot_id};
    use crate::lake::read::blocking;
    use crate::lake::{Column, ColumnType, LakeConfig, LakeError, TableDef, TableMode};

    /// A commit's updates applied to the metadata we hold give the table the catalog now has
    /// (the snapshot is current, on its parent, with the next sequence number; expired
    /// snapshots are gone), without falling back to loading it.
    #[test]
    fn commits_apply_locally_as_the_catalog_applies_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = LakeConfig::local(dir.path()).unwrap();
        blocking(async {
            let catalog = config.open_catalog().await?;
            let def = TableDef::new(
                "t",
                "applied",
                TableMode::Append,
                vec![Column::optional("x", ColumnType::String)],
            );
            let mut table = ensure_table(catalog.as_ref(), &def).await?;
            let mut ids = Vec::new();
            for round in 0..5 {
                let metadata = table.metadata();
                let (id, sequence) = (snapshot_id(&table), metadata.next_sequence_number());
                let list = format!("{}/metadata/snap-{id}.avro", metadata.location());
                let summary = Summary {
                    operation: Operation::Append,
                    additional_properties: HashMap::new(),
                };
                let snapshot = next_snapshot(metadata, id, list, summary);
                let (_, mut updates) = snapshot_commit(metadata, snapshot);
                if round == 4 {
                    updates.push(TableUpdate::RemoveSnapshots {
                        snapshot_ids: ids[..2].to_vec(),
                    });
                }
                table = applied(&table, updates)
                    .map_err(|e| LakeError::iceberg("applying a commit".into(), e))?;
                let current = table.metadata().current_snapshot().unwrap();
                assert_eq!(current.snapshot_id(), id);
                assert_eq!(current.sequence_number(), sequence);
                assert_eq!(current.parent_snapshot_id(), ids.last().copied());
                ids.push(id);
            }
            let kept: Vec<i64> = table
                .metadata()
                .snapshots()
                .map(|s| s.snapshot_id())
                .collect();
            assert_eq!(kept.len(), 3);
            assert!(ids[2..].iter().all(|id| kept.contains(id)));
            Ok(())
        })
        .unwrap();
    }
}
