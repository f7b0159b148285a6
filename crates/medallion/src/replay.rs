//! Replaying the pipeline from a lake's bronze tables.
//!
//! Bronze keeps every message the pipeline read — payload bytes, topic, partition, offset,
//! where it came from and when it was ingested — so the silver and gold tables can be rebuilt
//! from it after the broker deleted the messages: to apply changed rules or a fixed bug to
//! all of history, or to build a second lake. [`bronze_logs`] reads the three bronze tables
//! back as [`RecordedLog`]s that the same graph replays with the original offsets (see
//! `alluvium_engine::recorded`), so a replayed record is exactly the record the live pipeline
//! saw: same bronze row, same quarantine row, same checkpoint positions.
//!
//! The bronze rows are held in memory for the replay (about the size of their payloads).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use alluvium_connectors::kafka::KafkaRecord;
use alluvium_connectors::lake::read::scan_table_blocking;
use alluvium_connectors::lake::{LakeConfig, LakeError, Value};
use alluvium_engine::RecordedLog;

use crate::graph::Topics;
use crate::lake::bronze_defs;

/// The bronze tables of a lake as replayable logs.
#[derive(Clone, Debug)]
pub struct BronzeLogs {
    /// The topics the bronze rows were read from (as recorded in `_topic`).
    pub topics: Topics,
    /// One log per topic: orders, products, customers.
    pub logs: Vec<RecordedLog<KafkaRecord>>,
}

impl BronzeLogs {
    /// Records held, over all topics.
    pub fn records(&self) -> usize {
        self.logs.iter().map(RecordedLog::len).sum()
    }
}

fn bad(table: &str, what: &str) -> LakeError {
    LakeError::Data(format!("{table}: {what}"))
}

/// Reads `bronze.orders`, `bronze.products` and `bronze.customers` of the lake. A table
/// holding rows of several topics is an error (the pipeline writes one topic per table); a
/// table without rows gets the name `default` would have (`<prefix>orders`, …).
pub fn bronze_logs(config: &LakeConfig, default: &Topics) -> Result<BronzeLogs, LakeError> {
    let defaults = [&default.orders, &default.products, &default.customers];
    let mut names = Vec::with_capacity(3);
    let mut logs = Vec::with_capacity(3);
    for (def, default_name) in bronze_defs().iter().zip(defaults) {
        let table = def.qualified_name();
        let rows = scan_table_blocking(config, def)?;
        let topics: BTreeSet<&str> = rows
            .iter()
            .filter_map(|r| match r.get(5) {
                Some(Value::String(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        if topics.len() > 1 {
            return Err(bad(
                &table,
                &format!("rows of several topics ({topics:?}); replay one pipeline's lake"),
            ));
        }
        let name: String = topics
            .first()
            .map_or_else(|| default_name.clone(), |t| (*t).to_owned());
        let topic: Arc<str> = Arc::from(name.as_str());
        // Sources repeat (one per CSV file, REST, CDC): one shared string per distinct one.
        let mut origins: HashSet<Arc<str>> = HashSet::new();
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            records.push(bronze_record(&table, row, &topic, &mut origins)?);
        }
        logs.push(
            RecordedLog::new(name.clone(), records).map_err(|e| bad(&table, &e.to_string()))?,
        );
        names.push(name);
    }
    let mut names = names.into_iter();
    let mut next = || names.next().unwrap_or_default();
    Ok(BronzeLogs {
        topics: Topics {
            orders: next(),
            products: next(),
            customers: next(),
        },
        logs,
    })
}

/// One bronze row (columns of [`bronze_defs`]) as the record the source had read.
fn bronze_record(
    table: &str,
    row: Vec<Value>,
    topic: &Arc<str>,
    origins: &mut HashSet<Arc<str>>,
) -> Result<(i32, i64, KafkaRecord), LakeError> {
    let mut cells = row.into_iter();
    let mut cell = || cells.next().unwrap_or(Value::Null);
    let (text, bytes, ingested_at, source, _batch, _topic, partition, offset) = (
        cell(),
        cell(),
        cell(),
        cell(),
        cell(),
        cell(),
        cell(),
        cell(),
    );
    let payload = match (text, bytes) {
        (Value::String(t), _) => Some(t.as_bytes().to_vec()),
        (_, Value::Binary(b)) => Some(b),
        _ => None,
    };
    let (Value::Long(ingested_at), Value::Int(partition), Value::Long(offset)) =
        (ingested_at, partition, offset)
    else {
        return Err(bad(
            table,
            "a row without `_ingested_at`, `_partition` or `_offset`",
        ));
    };
    let origin = match source {
        Value::String(s) => Some(match origins.get(s.as_str()) {
            Some(o) => o.clone(),
            None => {
                let o: Arc<str> = Arc::from(s);
                origins.insert(o.clone());
                o
            }
        }),
        _ => None,
    };
    Ok((
        partition,
        offset,
        KafkaRecord {
            topic: topic.clone(),
            partition,
            offset,
            // Bronze keeps no key: the graph never reads it (it keys by the payload's ids).
            key: None,
            payload,
            timestamp_ms: None,
            origin,
            ingested_at,
        },
    ))
}
