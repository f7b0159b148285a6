//! Row images as Debezium JSON envelopes.
//!
//! The shape follows Debezium's PostgreSQL connector with the JSON converter and schemas
//! off: `{"before", "after", "source", "op", "ts_ms", "transaction"}`, so a pipeline reading
//! our topic also reads one written by Debezium itself. Column values are typed from their
//! PostgreSQL type: integers and numerics as JSON numbers (exact), booleans as booleans,
//! `timestamptz` as ISO-8601 UTC strings (`2026-03-01T10:15:00.25Z`), everything else as
//! its text form.

use serde_json::{Map, Value};

use super::pgoutput::{RelationColumn, Tuple, TupleValue};

/// Debezium's stand-in for a TOASTed value that an update did not change and the old image
/// does not carry (replica identity not `FULL`).
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

const BOOL: u32 = 16;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const OID: u32 = 26;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const NUMERIC: u32 = 1700;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;

/// A column value in PostgreSQL's text output (session `TimeZone = UTC`, `DateStyle = ISO`)
/// as a JSON value.
pub fn value_json(type_oid: u32, text: &str) -> Value {
    match type_oid {
        BOOL => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            other => Value::String(other.into()),
        },
        INT2 | INT4 | INT8 | OID | FLOAT4 | FLOAT8 | NUMERIC => text
            .parse::<serde_json::Number>()
            .map(Value::Number)
            // NaN, Infinity: no JSON number for them.
            .unwrap_or_else(|_| Value::String(text.into())),
        TIMESTAMPTZ => Value::String(iso_utc(text)),
        TIMESTAMP => Value::String(text.replacen(' ', "T", 1)),
        _ => Value::String(text.into()),
    }
}

/// `2024-04-22 10:56:48.632483+00` → `2024-04-22T10:56:48.632483Z`.
fn iso_utc(text: &str) -> String {
    let t = text.replacen(' ', "T", 1);
    match t.strip_suffix("+00") {
        Some(base) => format!("{base}Z"),
        None => t,
    }
}

/// A row image as a JSON object. `keys_only` keeps just the replica-identity columns (a
/// delete's or key-changing update's old key). An unchanged TOASTed value is taken from
/// `old` when that full old image has it, else Debezium's placeholder.
pub fn row_json(
    columns: &[RelationColumn],
    tuple: &Tuple,
    keys_only: bool,
    old: Option<&Tuple>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (i, (col, value)) in columns.iter().zip(tuple).enumerate() {
        if keys_only && !col.key {
            continue;
        }
        let v = match value {
            TupleValue::Null => Value::Null,
            TupleValue::Text(t) => value_json(col.type_oid, t),
            TupleValue::UnchangedToast => match old.and_then(|o| o.get(i)) {
                Some(TupleValue::Text(t)) => value_json(col.type_oid, t),
                Some(TupleValue::Null) => Value::Null,
                _ => Value::String(UNAVAILABLE_VALUE.into()),
            },
        };
        out.insert(col.name.clone(), v);
    }
    out
}

/// Where a change came from: Debezium's `source` block.
#[derive(Clone, Debug)]
pub struct Source<'a> {
    /// The logical server name (Debezium `name`, the topic prefix of a Debezium deployment).
    pub server: &'a str,
    /// Database name.
    pub db: &'a str,
    /// Schema.
    pub schema: &'a str,
    /// Table.
    pub table: &'a str,
    /// Commit time (snapshot: read time), ms since the Unix epoch.
    pub ts_ms: i64,
    /// Transaction id (none for snapshot rows).
    pub tx_id: Option<u32>,
    /// LSN of the change (snapshot rows: the slot's consistent point).
    pub lsn: u64,
    /// `"first"`, `"true"`, `"last"` for snapshot rows, `"false"` for streamed changes.
    pub snapshot: &'a str,
}

/// A Debezium envelope: `op` is `r`, `c`, `u` or `d`.
pub fn envelope(
    op: &str,
    before: Option<Map<String, Value>>,
    after: Option<Map<String, Value>>,
    source: &Source<'_>,
    now_ms: i64,
) -> Vec<u8> {
    let source = serde_json::json!({
        "version": concat!("alluvium-", env!("CARGO_PKG_VERSION")),
        "connector": "postgresql",
        "name": source.server,
        "ts_ms": source.ts_ms,
        "snapshot": source.snapshot,
        "db": source.db,
        "sequence": null,
        "schema": source.schema,
        "table": source.table,
        "txId": source.tx_id,
        "lsn": source.lsn,
        "xmin": null,
    });
    let env = serde_json::json!({
        "before": before.map(Value::Object),
        "after": after.map(Value::Object),
        "source": source,
        "op": op,
        "ts_ms": now_ms,
        "transaction": null,
    });
    env.to_string().into_bytes()
}

/// The message key: the key columns as a JSON object (`{"customer_id":7}`), as Debezium
/// writes it.
pub fn key_json(columns: &[RelationColumn], tuple: &Tuple) -> Vec<u8> {
    Value::Object(row_json(columns, tuple, true, None))
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed() {
        assert_eq!(value_json(INT8, "42"), serde_json::json!(42));
        assert_eq!(value_json(BOOL, "t"), serde_json::json!(true));
        assert_eq!(value_json(NUMERIC, "19.990").to_string(), "19.990");
        assert_eq!(value_json(NUMERIC, "NaN"), serde_json::json!("NaN"));
        assert_eq!(
            value_json(TIMESTAMPTZ, "2024-04-22 10:56:48.632483+00"),
            serde_json::json!("2024-04-22T10:56:48.632483Z")
        );
        assert_eq!(
            value_json(TIMESTAMPTZ, "2025-02-20 17:13:08+00"),
            serde_json::json!("2025-02-20T17:13:08Z")
        );
        assert_eq!(value_json(25, "Zoë"), serde_json::json!("Zoë"));
    }

    #[test]
    fn keys_old_images_and_toast() {
        let cols = vec![
            RelationColumn {
                key: true,
                name: "id".into(),
                type_oid: INT8,
            },
            RelationColumn {
                key: false,
                name: "bio".into(),
                type_oid: 25,
            },
        ];
        let new = vec![TupleValue::Text("7".into()), TupleValue::UnchangedToast];
        let old = vec![
            TupleValue::Text("7".into()),
            TupleValue::Text("long".into()),
        ];
        assert_eq!(
            Value::Object(row_json(&cols, &new, false, Some(&old))),
            serde_json::json!({"id": 7, "bio": "long"})
        );
        assert_eq!(
            Value::Object(row_json(&cols, &new, false, None)),
            serde_json::json!({"id": 7, "bio": UNAVAILABLE_VALUE})
        );
        assert_eq!(key_json(&cols, &new), br#"{"id":7}"#.to_vec());
    }
}
