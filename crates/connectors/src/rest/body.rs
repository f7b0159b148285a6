//! A request body into events: one JSON object, a JSON array of values, or NDJSON.
//!
//! Each event keeps the exact bytes the client sent (the pipeline's bronze layer stores them
//! as received), so splitting never re-serialises: `serde_json`'s `RawValue` hands back the
//! slice of the body each array element occupies. Nothing is validated beyond "is JSON" —
//! business rules belong to the pipeline, where a bad event is quarantined, not lost.

use serde_json::value::RawValue;

/// The body formats `POST /v1/orders` accepts, from the request's `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json` (or any `+json` type): one JSON value; an array is many events.
    Json,
    /// `application/x-ndjson` (also `application/jsonl`, `application/json-seq` is not
    /// accepted): one JSON value per line, blank lines ignored.
    Ndjson,
}

impl BodyFormat {
    /// The format of a `Content-Type` header value, or `None` for a type this API does not
    /// take (answered `415`). Parameters such as `charset=utf-8` are ignored.
    pub fn from_content_type(value: &str) -> Option<BodyFormat> {
        let mime = value.split(';').next().unwrap_or("").trim();
        let mime = mime.to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Some(BodyFormat::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => Some(BodyFormat::Ndjson),
            m if m.starts_with("application/") && m.ends_with("+json") => Some(BodyFormat::Json),
            _ => None,
        }
    }
}

/// One event of a request: its bytes as received and its Kafka key.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event's JSON text exactly as the client sent it (surrounding whitespace excluded).
    pub raw: &'a [u8],
    /// The key field's value when it is a JSON string (so that all events of one entity land
    /// in one partition); `None` otherwise.
    pub key: Option<String>,
}

/// Why a body was rejected (`400`); nothing of it is produced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// The body (or one NDJSON line) is not JSON.
    #[error("{where_}: not JSON: {reason}")]
    NotJson {
        /// `body` or `line N`.
        where_: String,
        /// The parser's message.
        reason: String,
    },
}

/// The key of an event: the value of `key_field` when the event is an object holding a
/// string there. Any parse problem just means "no key". Only that field is decoded; the
/// others are skipped without allocating.
fn key_of(raw: &RawValue, key_field: &str) -> Option<String> {
    struct KeyVisitor<'k>(&'k str);
    impl<'de> serde::de::Visitor<'de> for KeyVisitor<'_> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if name == self.0 {
                    let value: &'de RawValue = map.next_value()?;
                    // Last occurrence wins, as in most JSON readers.
                    found = serde_json::from_str::<String>(value.get()).ok();
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    if !raw.get().starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    serde::Deserializer::deserialize_map(&mut de, KeyVisitor(key_field))
        .ok()
        .flatten()
}

fn not_json(where_: impl Into<String>, e: &serde_json::Error) -> BodyError {
    BodyError::NotJson {
        where_: where_.into(),
        reason: e.to_string(),
    }
}

/// Splits `body` into events. A JSON array gives one event per element (whatever its type:
/// a non-object reaches the pipeline's quarantine); any other JSON value is one event. For
/// NDJSON every non-blank line must be JSON, else the whole body is rejected.
pub fn split_events<'a>(
    format: BodyFormat,
    body: &'a [u8],
    key_field: &str,
) -> Result<Vec<Event<'a>>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotJson {
        where_: "body".into(),
        reason: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
    })?;
    let event = |raw: &'a RawValue| Event {
        raw: raw.get().as_bytes(),
        key: key_of(raw, key_field),
    };
    match format {
        BodyFormat::Json => {
            let value: &RawValue = serde_json::from_str(text).map_err(|e| not_json("body", &e))?;
            if value.get().starts_with('[') {
                let items: Vec<&RawValue> =
                    serde_json::from_str(value.get()).map_err(|e| not_json("body", &e))?;
                Ok(items.into_iter().map(event).collect())
            } else {
                Ok(vec![event(value)])
            }
        }
        BodyFormat::Ndjson => {
            let mut out = Vec::new();
            for (i, line) in text.split('\n').enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                // The line's bytes exactly as sent (only its terminator removed): clients
                // expect bronze to hold each line unchanged.
                let line = line.strip_suffix('\r').unwrap_or(line);
                let value: &RawValue = serde_json::from_str(line)
                    .map_err(|e| not_json(format!("line {}", i + 1), &e))?;
                out.push(Event {
                    raw: line.as_bytes(),
                    key: key_of(value, key_field),
                });
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raws(events: &[Event<'_>]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8_lossy(e.raw).into_owned())
            .collect()
    }

    #[test]
    fn content_types() {
        use BodyFormat::*;
        assert_eq!(
            BodyFormat::from_content_type("application/json"),
            Some(Json)
        );
        assert_eq!(
            BodyFormat::from_content_type("Application/JSON; charset=utf-8"),
            Some(Json)
        );
        assert_eq!(
            BodyFormat::from_content_type("application/x-ndjson"),
            Some(Ndjson)
        );
        assert_eq!(
            BodyFormat::from_content_type("application/vnd.api+json"),
            Some(Json)
        );
        assert_eq!(BodyFormat::from_content_type("text/plain"), None);
        assert_eq!(BodyFormat::from_content_type(""), None);
    }

    #[test]
    fn one_object_is_kept_byte_for_byte() -> Result<(), BodyError> {
        let body = b"  {\"order_id\": \"O-1\", \"unit_price\": 19.990, \"x\": \"\\u00e9\"}\n";
        let events = split_events(BodyFormat::Json, body, "order_id")?;
        assert_eq!(
            raws(&events),
            ["{\"order_id\": \"O-1\", \"unit_price\": 19.990, \"x\": \"\\u00e9\"}"]
        );
        assert_eq!(events[0].key.as_deref(), Some("O-1"));
        Ok(())
    }

    #[test]
    fn array_elements_are_events_whatever_their_type() -> Result<(), BodyError> {
        let body = br#"[{"order_id":"A"}, {"order_id": 7}, 42, "s", {"x":{"order_id":"N"}}]"#;
        let events = split_events(BodyFormat::Json, body, "order_id")?;
        assert_eq!(
            raws(&events),
            [
                r#"{"order_id":"A"}"#,
                r#"{"order_id": 7}"#,
                "42",
                "\"s\"",
                r#"{"x":{"order_id":"N"}}"#
            ]
        );
        let keys: Vec<_> = events.iter().map(|e| e.key.as_deref()).collect();
        assert_eq!(keys, [Some("A"), None, None, None, None]);
        assert!(split_events(BodyFormat::Json, b"[]", "order_id")?.is_empty());
        Ok(())
    }

    #[test]
    fn ndjson_lines_blank_lines_skipped() -> Result<(), BodyError> {
        let body = b"{\"order_id\":\"A\"}\r\n\n  \n{\"order_id\":\"B\",\"v\":[1,2]}\n  {\"order_id\":\"C\"} \n";
        let events = split_events(BodyFormat::Ndjson, body, "order_id")?;
        assert_eq!(
            raws(&events),
            [
                r#"{"order_id":"A"}"#,
                r#"{"order_id":"B","v":[1,2]}"#,
                r#"  {"order_id":"C"} "#
            ]
        );
        assert_eq!(events[2].key.as_deref(), Some("C"));
        Ok(())
    }

    #[test]
    fn not_json_is_rejected_whole() {
        for (format, body, where_) in [
            (BodyFormat::Json, &b"{\"order_id\": "[..], "body"),
            (BodyFormat::Json, b"hello", "body"),
            (BodyFormat::Json, b"{} {}", "body"),
            (BodyFormat::Json, b"", "body"),
            (BodyFormat::Json, b"{\"a\":\"\xff\"}", "body"),
            (BodyFormat::Ndjson, b"{}\n{oops}\n{}", "line 2"),
        ] {
            match split_events(format, body, "order_id") {
                Err(BodyError::NotJson { where_: w, .. }) => assert_eq!(w, where_),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }
}
