//! A case folder as Kafka messages, in the order they are to be sent (spec §1; the layout of
//! `tests/fixtures/sample-small`): `orders.jsonl` (one event per line), `orders_not_json.txt`
//! (base64 payloads), `products/*.csv` in name order, `customers_debezium.jsonl`.

use std::path::{Path, PathBuf};

use base64::Engine;
use thiserror::Error;

use crate::graph::Topics;
use crate::products::product_file_messages;

/// An error reading a case folder.
#[derive(Debug, Error)]
pub enum FixtureError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A line of `orders_not_json.txt` is not base64.
    #[error("{path} line {line}: not base64: {reason}")]
    Base64 {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The decoder's message.
        reason: String,
    },
}

/// One message to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Target topic.
    pub topic: String,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub payload: Vec<u8>,
    /// The input file it came from (bronze `_source`).
    pub source: String,
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, FixtureError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FixtureError::Io {
            path: path.into(),
            source,
        }),
    }
}

/// Lines split on `\n` only (U+2028 is not a line break), without a trailing empty line.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

fn json_key(line: &[u8], field: &str) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    match v.get(field)? {
        serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

fn customer_key(line: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let v = v
        .get("payload")
        .filter(|_| v.get("schema").is_some())
        .unwrap_or(&v);
    ["after", "before"].iter().find_map(|img| {
        v.get(img)?
            .get("customer_id")
            .map(|id| id.to_string().into_bytes())
    })
}

/// Reads every input of a case folder as messages, in send order.
pub fn load(dir: &Path, topics: &Topics) -> Result<Vec<Message>, FixtureError> {
    let mut out = Vec::new();
    if let Some(bytes) = read(&dir.join("orders.jsonl"))? {
        for line in lines(&bytes) {
            out.push(Message {
                topic: topics.orders.clone(),
                key: json_key(line, "order_id"),
                payload: line.to_vec(),
                source: "orders.jsonl".into(),
            });
        }
    }
    let path = dir.join("orders_not_json.txt");
    if let Some(bytes) = read(&path)? {
        for (i, line) in lines(&bytes).enumerate() {
            let payload = base64::engine::general_purpose::STANDARD
                .decode(line.trim_ascii())
                .map_err(|e| FixtureError::Base64 {
                    path: path.clone(),
                    line: i + 1,
                    reason: e.to_string(),
                })?;
            out.push(Message {
                topic: topics.orders.clone(),
                key: None,
                payload,
                source: "orders_not_json.txt".into(),
            });
        }
    }
    let products_dir = dir.join("products");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&products_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("csv")))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(FixtureError::Io {
                path: products_dir,
                source,
            })
        }
    };
    files.sort();
    for path in files {
        let bytes = read(&path)?.unwrap_or_default();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (key, payload) in product_file_messages(&name, &bytes) {
            out.push(Message {
                topic: topics.products.clone(),
                key,
                payload,
                source: name.clone(),
            });
        }
    }
    if let Some(bytes) = read(&dir.join("customers_debezium.jsonl"))? {
        for line in lines(&bytes) {
            out.push(Message {
                topic: topics.customers.clone(),
                key: customer_key(line),
                payload: line.to_vec(),
                source: "customers_debezium.jsonl".into(),
            });
        }
    }
    Ok(out)
}
