//! Named fields of a JSON object, borrowed from the text.
//!
//! Parsing an order event into a `serde_json::Value` built a map node and a `String` per key
//! and per value, then threw them away: ~15 % of the pipeline's time (perf). Validation only
//! needs a handful of named fields, so [`read_fields`] scans an object once and keeps, per
//! wanted name, the raw text of its value (a `&RawValue`, no copy); [`Json`] then says what such a
//! value is, decoding a string only when it contains escapes. Unwanted fields are skipped
//! (still checked for syntax), and a name given twice keeps its last value, as
//! `serde_json::Value` does.
//!
//! A nested object or array that validation looks into is better not kept as text: parsing
//! it again scans it again. [`ObjectSeed`] and [`ArraySeed`] read such a field where it
//! stands, in the same pass, and say what it was when it is not the container wanted
//! ([`Nested`]).

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
pub struct Key<'a>(pub Cow<'a, str>);

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

/// The index of `key` in `names`.
#[inline]
pub fn position(names: &[&str], key: &str) -> Option<usize> {
    // Many wanted names share a length (`event_id`, `order_id`, `currency`, …): the first
    // byte tells most of them apart without a call to `memcmp`.
    let first = key.as_bytes().first();
    names
        .iter()
        .position(|n| n.as_bytes().first() == first && *n == key)
}

/// Reads the rest of an object from `map`, putting the raw value of each of `names` into
/// the same slot of `out` (a name given twice keeps its last value) and skipping the others.
pub fn read_fields<'de, M: MapAccess<'de>>(
    mut map: M,
    names: &[&str],
    out: &mut [Option<&'de RawValue>],
) -> Result<(), M::Error> {
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        match position(names, &key) {
            Some(i) => out[i] = Some(map.next_value::<&'de RawValue>()?),
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

/// A field read where it stands, in the one pass over the object around it, by an
/// [`ObjectSeed`] or an [`ArraySeed`]: the container it should be, read, or what else it was.
///
/// Keeping such a field as text and parsing it again costs a scan per level: an order's
/// items were scanned three times (perf: the skipping scans were ~20 % of validation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Nested<T> {
    /// Not in the object (the default, until the field is met).
    #[default]
    Absent,
    /// `null`.
    Null,
    /// A string; `blank` when it holds nothing but white space.
    String {
        /// Only white space (or empty).
        blank: bool,
    },
    /// A number, a boolean, or the other kind of container.
    Other,
    /// The container wanted, read.
    Read(T),
}

impl<T> Nested<T> {
    /// Absent, `null`, or a blank string.
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            Nested::Absent | Nested::Null | Nested::String { blank: true }
        )
    }
}

/// With serde_json's `arbitrary_precision` (on in this workspace), a number reaches a
/// visitor as a map with this one key; it must read as [`Nested::Other`], not an object.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Reads what a container reader does not: scalars, and the other kind of container.
trait Container<'de>: Sized {
    type Out;
    /// Reads an object whose first key (if any) has been read already.
    fn map<M: MapAccess<'de>>(self, first: Option<Key<'de>>, map: M)
        -> Result<Self::Out, M::Error>;
    fn seq<S: SeqAccess<'de>>(self, seq: S) -> Result<Option<Self::Out>, S::Error>;
    fn wants_map(&self) -> bool;
}

struct NestedVisitor<C>(C);

impl<'de, C: Container<'de>> Visitor<'de> for NestedVisitor<C> {
    type Value = Nested<C::Out>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Nested::Null)
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Nested::String {
            blank: v.trim().is_empty(),
        })
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Nested::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Nested::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Nested::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Nested::Other)
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let first = map.next_key::<Key<'de>>()?;
        let is_number = first.as_ref().is_some_and(|k| k.0 == NUMBER_TOKEN);
        if is_number || !self.0.wants_map() {
            if first.is_some() {
                map.next_value::<IgnoredAny>()?;
            }
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Nested::Other);
        }
        self.0.map(first, map).map(Nested::Read)
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        if self.0.wants_map() {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Nested::Other);
        }
        Ok(self.0.seq(seq)?.map_or(Nested::Other, Nested::Read))
    }
}

/// Reads an object field's wanted fields (as [`read_fields`] does) where it stands.
pub struct ObjectSeed<'n, const N: usize> {
    /// The wanted field names.
    pub names: &'n [&'n str; N],
}

impl<'de, const N: usize> Container<'de> for ObjectSeed<'_, N> {
    type Out = [Option<&'de RawValue>; N];
    fn map<M: MapAccess<'de>>(
        self,
        first: Option<Key<'de>>,
        mut map: M,
    ) -> Result<Self::Out, M::Error> {
        let mut out = [None; N];
        if let Some(Key(first)) = first {
            // The first key was read to tell a number from an object: take its value here.
            match position(self.names, &first) {
                Some(i) => out[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        read_fields(map, self.names, &mut out)?;
        Ok(out)
    }
    fn seq<S: SeqAccess<'de>>(self, _: S) -> Result<Option<Self::Out>, S::Error> {
        Ok(None)
    }
    fn wants_map(&self) -> bool {
        true
    }
}

impl<'de, const N: usize> DeserializeSeed<'de> for ObjectSeed<'_, N> {
    type Value = Nested<[Option<&'de RawValue>; N]>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(NestedVisitor(self))
    }
}

/// Reads an array field where it stands: per element, the wanted fields of an object, all
/// `None` for an element that is not an object.
pub struct ArraySeed<'n, const N: usize> {
    /// The wanted field names of each element.
    pub names: &'n [&'n str; N],
}

impl<'de, const N: usize> Container<'de> for ArraySeed<'_, N> {
    type Out = Vec<[Option<&'de RawValue>; N]>;
    fn map<M: MapAccess<'de>>(self, _: Option<Key<'de>>, _: M) -> Result<Self::Out, M::Error> {
        // Not called: `wants_map` is false.
        Ok(Vec::new())
    }
    fn seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Option<Self::Out>, S::Error> {
        let mut out = Vec::new();
        while let Some(element) = seq.next_element_seed(ObjectSeed { names: self.names })? {
            out.push(match element {
                Nested::Read(fields) => fields,
                _ => [None; N],
            });
        }
        Ok(Some(out))
    }
    fn wants_map(&self) -> bool {
        false
    }
}

impl<'de, const N: usize> DeserializeSeed<'de> for ArraySeed<'_, N> {
    type Value = Nested<Vec<[Option<&'de RawValue>; N]>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(NestedVisitor(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` (the whole text) read by `seed`.
    fn read<'a, S: DeserializeSeed<'a>>(text: &'a str, seed: S) -> serde_json::Result<S::Value> {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = seed.deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }

    fn object<'a, const N: usize>(
        text: &'a str,
        names: &[&str; N],
    ) -> Nested<[Option<Json<'a>>; N]> {
        match read(text, ObjectSeed { names }).unwrap() {
            Nested::Read(raw) => Nested::Read(raw.map(|r| r.map(Json::of))),
            Nested::Absent => Nested::Absent,
            Nested::Null => Nested::Null,
            Nested::String { blank } => Nested::String { blank },
            Nested::Other => Nested::Other,
        }
    }

    #[test]
    fn fields_are_borrowed_classified_and_last_wins() {
        let text = r#" {"a": "x\"y", "b": 12.50, "a\u0062": null, "c": {"d": [1]}, "e": [ ], "b": -3, "z": {"deep": [1, {"x": 2}]}} "#;
        let Nested::Read(got) = object(text, &["a", "b", "ab", "c", "e", "missing"]) else {
            panic!("an object");
        };
        assert_eq!(got[0], Some(Json::String(Cow::Owned("x\"y".into()))));
        assert_eq!(got[1], Some(Json::Number("-3")));
        assert_eq!(got[2], Some(Json::Null));
        assert_eq!(got[3], Some(Json::Object(r#"{"d": [1]}"#)));
        assert_eq!(got[4], Some(Json::Array("[ ]")));
        assert_eq!(got[5], None);
        assert!(matches!(
            object(r#"{"s": "plain"}"#, &["s"]),
            Nested::Read([Some(Json::String(Cow::Borrowed("plain")))])
        ));
    }

    #[test]
    fn other_values_say_what_they_were() {
        let names = &["a"];
        assert_eq!(object("{}", names), Nested::Read([None]));
        assert_eq!(object("null", names), Nested::Null);
        assert_eq!(object(r#"" \t ""#, names), Nested::String { blank: true });
        assert_eq!(object(r#""x""#, names), Nested::String { blank: false });
        // Numbers (also beyond f64's range), booleans and arrays are not objects.
        for other in ["1e400", "-0", "true", "[{\"a\": 1}]"] {
            assert_eq!(object(other, names), Nested::Other, "{other}");
        }
        let items = read(
            r#"[{"a": 1, "b": 2}, 5, [], {"a": -1e400}, {}]"#,
            ArraySeed { names },
        )
        .unwrap();
        let Nested::Read(items) = items else {
            panic!("an array: {items:?}");
        };
        let got: Vec<Option<&str>> = items.iter().map(|[a]| a.map(RawValue::get)).collect();
        assert_eq!(got, [Some("1"), None, None, Some("-1e400"), None]);
        assert!(matches!(
            read("{}", ArraySeed { names }).unwrap(),
            Nested::Other
        ));
    }

    #[test]
    fn not_json_fails() {
        for bad in [
            "{} {}",
            "{\"a\": }",
            "",
            "{\"a\": 1,}",
            "[1,]",
            "{\"a\": [1}",
        ] {
            assert!(read(bad, ObjectSeed { names: &["a"] }).is_err(), "{bad}");
            assert!(read(bad, ArraySeed { names: &["a"] }).is_err(), "{bad}");
        }
    }
}
