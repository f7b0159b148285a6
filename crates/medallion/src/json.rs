//! Named fields of a JSON object, borrowed from the text.
//!
//! Parsing an order event into a `serde_json::Value` built a map node and a `String` per key
//! and per value, then threw them away: ~15 % of the pipeline's time (perf). Validation only
//! needs a handful of named fields, so [`fields`] scans the object once and keeps, per wanted
//! name, the raw text of its value (a `&RawValue`, no copy); [`Json`] then says what such a
//! value is, decoding a string only when it contains escapes. Unwanted fields are skipped
//! (still checked for syntax), and a name given twice keeps its last value, as
//! `serde_json::Value` does.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON value as validation sees it, borrowed from the text where possible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool,
    /// A number, as written.
    Number(&'a str),
    /// A string, unescaped.
    String(Cow<'a, str>),
    /// An object (its text).
    Object(&'a str),
    /// An array (its text).
    Array(&'a str),
}

impl<'a> Json<'a> {
    /// Classifies a raw value.
    pub fn of(raw: &'a RawValue) -> Json<'a> {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'n') => Json::Null,
            Some(b't' | b'f') => Json::Bool,
            Some(b'"') => {
                let inner = &text[1..text.len().saturating_sub(1).max(1)];
                if inner.contains('\\') {
                    // Escapes: let serde_json decode them (the text is valid JSON already).
                    match serde_json::from_str::<String>(text) {
                        Ok(s) => Json::String(Cow::Owned(s)),
                        Err(_) => Json::String(Cow::Borrowed(inner)),
                    }
                } else {
                    Json::String(Cow::Borrowed(inner))
                }
            }
            Some(b'{') => Json::Object(text),
            Some(b'[') => Json::Array(text),
            _ => Json::Number(text),
        }
    }

    /// The string, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A field name, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct Fields<'n, 'o, 'a> {
    names: &'n [&'n str],
    out: &'o mut [Option<&'a RawValue>],
}

impl<'de, 'n, 'o> DeserializeSeed<'de> for Fields<'n, 'o, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'n, 'o> Visitor<'de> for Fields<'n, 'o, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            // Many wanted names share a length (`event_id`, `order_id`, `currency`, …):
            // the first byte tells most of them apart without a call to `memcmp`.
            let first = key.as_bytes().first();
            match self
                .names
                .iter()
                .position(|n| n.as_bytes().first() == first && *n == key)
            {
                Some(i) => self.out[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Reads the JSON object `text` (the whole text: trailing characters are an error) and
/// puts, for each of `names`, the raw value of that field into the same slot of `out`
/// (`None` when absent). Fails when `text` is not JSON or not an object.
pub fn fields<'a>(
    text: &'a str,
    names: &[&str],
    out: &mut [Option<&'a RawValue>],
) -> Result<(), serde_json::Error> {
    out.iter_mut().for_each(|o| *o = None);
    let mut de = serde_json::Deserializer::from_str(text);
    Fields { names, out }.deserialize(&mut de)?;
    de.end()
}

/// The raw values of a JSON array's text.
pub fn elements(text: &str) -> Result<Vec<&RawValue>, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(text: &'a str, names: &[&str]) -> Vec<Option<Json<'a>>> {
        let mut out = vec![None; names.len()];
        fields(text, names, &mut out).unwrap();
        out.into_iter().map(|r| r.map(Json::of)).collect()
    }

    #[test]
    fn fields_are_borrowed_classified_and_last_wins() {
        let text = r#" {"a": "x\"y", "b": 12.50, "a\u0062": null, "c": {"d": [1]}, "e": [ ], "b": -3, "z": {"deep": [1, {"x": 2}]}} "#;
        let got = get(text, &["a", "b", "ab", "c", "e", "missing"]);
        assert_eq!(got[0], Some(Json::String(Cow::Owned("x\"y".into()))));
        assert_eq!(got[1], Some(Json::Number("-3")));
        assert_eq!(got[2], Some(Json::Null));
        assert_eq!(got[3], Some(Json::Object(r#"{"d": [1]}"#)));
        assert_eq!(got[4], Some(Json::Array("[ ]")));
        assert_eq!(got[5], None);
        assert!(matches!(
            get(r#"{"s": "plain"}"#, &["s"])[0],
            Some(Json::String(Cow::Borrowed("plain")))
        ));
    }

    #[test]
    fn not_an_object_or_not_json_fails() {
        let mut out = [None];
        for bad in ["[1]", "{} {}", "{\"a\": }", "\"s\"", "", "{\"a\": 1,}"] {
            assert!(fields(bad, &["a"], &mut out).is_err(), "{bad}");
        }
    }
}
