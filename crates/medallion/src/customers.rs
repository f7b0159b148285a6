//! Customer changes: Debezium envelopes (spec §1.3, §3.3, §7).

use serde_json::Value;

use crate::rows::{Customer, Rejection};
use crate::time::{parse_rfc3339, Micros};

/// One change of the customers table.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Change {
    /// Log order: `(lsn, partition, offset)`.
    pub order: (i64, i32, i64),
    /// The customer.
    pub customer_id: i64,
    /// The new row (`None` for a delete).
    pub row: Option<Customer>,
    /// Commit time of the change (`source.ts_ms`), in microseconds.
    pub committed_at: Option<Micros>,
}

fn invalid(detail: impl Into<String>) -> Rejection {
    Rejection {
        rule: "invalid_change",
        detail: detail.into(),
        record_key: None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn integer(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_str().parse().ok(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn timestamp(v: Option<&Value>) -> Option<Micros> {
    match v? {
        Value::String(s) => parse_rfc3339(s.trim()),
        _ => None,
    }
}

/// Cleans a row image per spec §3.3.
fn customer(after: &serde_json::Map<String, Value>, customer_id: i64) -> Customer {
    Customer {
        customer_id,
        email: text(after.get("email")).map(|s| s.to_lowercase().into()),
        full_name: text(after.get("full_name")).map(Into::into),
        country: text(after.get("country")).map(|s| s.to_uppercase().into()),
        city: text(after.get("city")).map(Into::into),
        segment: text(after.get("segment")).map(|s| s.to_lowercase().into()),
        created_at: timestamp(after.get("created_at")),
        updated_at: timestamp(after.get("updated_at")),
    }
}

/// The customer id in a message key: `79`, `"79"`, `{"customer_id": 79}`, or Debezium's
/// `{"schema": .., "payload": {"customer_id": 79}}`.
fn key_id(key: Option<&[u8]>) -> Option<i64> {
    let v: Value = serde_json::from_slice(key?).ok()?;
    let v = match v.get("payload") {
        Some(p) if v.get("schema").is_some() => p.clone(),
        _ => v,
    };
    match &v {
        Value::Object(o) => integer(o.get("customer_id")),
        other => integer(Some(other)),
    }
}

/// Parses one message of the customers topic. `Ok(None)` for tombstones (a null or empty
/// value). A delete whose `before` image lacks the id takes it from the message key.
pub fn parse(
    payload: Option<&[u8]>,
    key: Option<&[u8]>,
    partition: i32,
    offset: i64,
) -> Result<Option<Change>, Rejection> {
    let Some(payload) = payload.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| invalid(format!("not JSON: {e}")))?;
    // Debezium's {schema, payload} wrapper.
    let value = match value {
        Value::Object(mut o) if o.contains_key("payload") && o.contains_key("schema") => {
            o.remove("payload").unwrap_or(Value::Null)
        }
        v => v,
    };
    let Value::Object(env) = value else {
        return match value {
            Value::Null => Ok(None),
            _ => Err(invalid("not a JSON object")),
        };
    };
    let source = env.get("source").and_then(Value::as_object);
    let lsn = source
        .and_then(|s| integer(s.get("lsn")))
        .unwrap_or(i64::MIN);
    let committed_at = source
        .and_then(|s| integer(s.get("ts_ms")))
        .map(|ms| ms * 1000);
    let order = (lsn, partition, offset);
    match env.get("op").and_then(Value::as_str) {
        Some("r" | "c" | "u") => {
            let after = env
                .get("after")
                .and_then(Value::as_object)
                .ok_or_else(|| invalid("no `after` image"))?;
            let id = integer(after.get("customer_id"))
                .ok_or_else(|| invalid("no `customer_id` in `after`"))?;
            Ok(Some(Change {
                order,
                customer_id: id,
                row: Some(customer(after, id)),
                committed_at,
            }))
        }
        Some("d") => {
            let id = env
                .get("before")
                .and_then(Value::as_object)
                .and_then(|b| integer(b.get("customer_id")))
                .or_else(|| key_id(key))
                .ok_or_else(|| invalid("delete without `before.customer_id` or a key"))?;
            Ok(Some(Change {
                order,
                customer_id: id,
                row: None,
                committed_at,
            }))
        }
        Some(op) => Err(invalid(format!("unknown op `{op}`"))),
        None => Err(invalid("no `op`")),
    }
}

/// The current row of a customer after `changes` (sorted in log order): the last change wins,
/// a delete removes the row.
pub fn current(changes: &[&Change]) -> Option<Customer> {
    changes.last().and_then(|c| c.row.clone())
}

/// The SCD2 versions of a customer from its changes in log order (spec §4, §7).
pub fn versions(changes: &[&Change]) -> Vec<crate::rows::DimCustomer> {
    let mut out: Vec<crate::rows::DimCustomer> = Vec::new();
    let mut current: Option<usize> = None;
    for c in changes {
        match &c.row {
            Some(row) => {
                let to_dim = |row: &Customer| crate::rows::DimCustomer {
                    customer_id: row.customer_id,
                    email: row.email.clone(),
                    full_name: row.full_name.clone(),
                    country: row.country.clone(),
                    city: row.city.clone(),
                    segment: row.segment.clone(),
                    valid_from: row.updated_at,
                    valid_to: None,
                    is_current: true,
                };
                match current {
                    Some(i) if out[i].valid_from == row.updated_at => out[i] = to_dim(row),
                    Some(i) => {
                        out[i].valid_to = row.updated_at;
                        out[i].is_current = false;
                        out.push(to_dim(row));
                        current = Some(out.len() - 1);
                    }
                    None => {
                        out.push(to_dim(row));
                        current = Some(out.len() - 1);
                    }
                }
            }
            None => {
                if let Some(i) = current.take() {
                    out[i].valid_to = c.committed_at;
                    out[i].is_current = false;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_versions() {
        let c = br#"{"before":null,"after":{"customer_id":7,"email":" A@B.CO ","segment":" VIP ","country":"de","updated_at":"2026-01-01T00:00:00Z"},"source":{"lsn":10,"ts_ms":1000},"op":"c"}"#;
        let u = br#"{"schema":{},"payload":{"after":{"customer_id":7,"updated_at":"2026-02-01T00:00:00Z"},"source":{"lsn":20,"ts_ms":2000},"op":"u"}}"#;
        let d = br#"{"before":{"customer_id":7},"after":null,"source":{"lsn":30,"ts_ms":3000},"op":"d"}"#;
        let c = parse(Some(c), None, 0, 0).unwrap().unwrap();
        assert_eq!(c.row.as_ref().unwrap().email.as_deref(), Some("a@b.co"));
        assert_eq!(c.row.as_ref().unwrap().segment.as_deref(), Some("vip"));
        let u = parse(Some(u), None, 0, 1).unwrap().unwrap();
        let d = parse(Some(d), None, 0, 2).unwrap().unwrap();
        assert_eq!(
            current(&[&c, &u]).unwrap().updated_at,
            u.row.as_ref().unwrap().updated_at
        );
        assert_eq!(current(&[&c, &u, &d]), None);
        let v = versions(&[&c, &u, &d]);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].valid_to, v[1].valid_from);
        assert_eq!(v[1].valid_to, Some(3_000_000));
        assert!(!v[1].is_current);
        assert_eq!(parse(None, None, 0, 3).unwrap(), None);
        assert_eq!(parse(Some(b""), None, 0, 3).unwrap(), None);
        let keyed = parse(
            Some(br#"{"op":"d","before":null,"source":{"lsn":40}}"#),
            Some(br#"{"customer_id":7}"#),
            0,
            5,
        )
        .unwrap()
        .unwrap();
        assert_eq!((keyed.customer_id, keyed.row.is_none()), (7, true));
        assert_eq!(
            parse(Some(b"nope"), None, 0, 4).unwrap_err().rule,
            "invalid_change"
        );
        assert_eq!(
            parse(Some(br#"{"op":"x"}"#), None, 0, 4).unwrap_err().rule,
            "invalid_change"
        );
        assert_eq!(
            parse(Some(br#"{"op":"d","before":null}"#), None, 0, 4)
                .unwrap_err()
                .rule,
            "invalid_change"
        );
    }
}
