//! Order events: the validation rules of spec §3.1, in their order.

use std::fmt;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserializer as _;
use serde_json::value::RawValue;

use crate::json::{position, ArraySeed, Json, Key, Nested, ObjectSeed};

use crate::codes::{is_country, Currencies, STATUSES};
use crate::money::Money;
use crate::rows::{Item, OrderEvent, Rejection, Text};
use crate::time::parse_rfc3339;
use smol_str::StrExt;

/// The order rules of spec §3.1, in the order they are checked.
pub const RULES: [&str; 10] = [
    "json_parse",
    "missing_field",
    "invalid_customer_id",
    "invalid_status",
    "invalid_timestamp",
    "invalid_currency",
    "invalid_country",
    "invalid_items",
    "invalid_quantity",
    "invalid_price",
];

fn reject(rule: &'static str, detail: impl Into<String>, key: Option<&str>) -> Rejection {
    Rejection {
        rule,
        detail: detail.into(),
        record_key: key.map(str::to_owned),
    }
}

/// `s.to_lowercase()` as [`Text`], without a heap string for the usual short ASCII value.
/// Non-ASCII text takes `str::to_lowercase` (final sigma and all), so results are the same.
fn lower(s: &str) -> Text {
    if s.is_ascii() {
        s.to_ascii_lowercase_smolstr()
    } else {
        s.to_lowercase().into()
    }
}

/// `s.to_uppercase()` as [`Text`]; see [`lower`] (`ß` still becomes `SS`).
fn upper(s: &str) -> Text {
    if s.is_ascii() {
        s.to_ascii_uppercase_smolstr()
    } else {
        s.to_uppercase().into()
    }
}

/// Absent, null, or a blank string.
fn missing(v: &Option<Json>) -> bool {
    match v {
        None | Some(Json::Null) => true,
        Some(Json::String(s)) => s.trim().is_empty(),
        _ => false,
    }
}

fn json_integer(v: &Option<Json>) -> Option<i64> {
    match v {
        Some(Json::Number(t)) if !t.contains(['.', 'e', 'E']) => t.parse().ok(),
        _ => None,
    }
}

fn id_text(v: &Option<Json>) -> Option<Text> {
    match v.as_ref()? {
        Json::String(s) => Some(Text::from(s.as_ref())),
        Json::Number(n) => Some(Text::from(*n)),
        _ => None,
    }
}

/// A free-text field: strings as they are, other values as compact JSON text (what
/// `serde_json::Value`'s `to_string` gives), `null` as none.
fn free_text(v: Option<&RawValue>) -> Option<Text> {
    let raw = v?;
    match Json::of(raw) {
        Json::Null => None,
        Json::String(s) => Some(Text::from(s.as_ref())),
        _ => serde_json::from_str::<serde_json::Value>(raw.get())
            .ok()
            .map(|v| v.to_string().into()),
    }
}

/// The fields of an order event that validation reads, in this order.
const FIELDS: [&str; 10] = [
    "event_id",
    "order_id",
    "customer_id",
    "status",
    "event_ts",
    "order_ts",
    "currency",
    "items",
    "shipping",
    "payment_method",
];
/// The fields that must be present (spec §3.1 rule 2), as indexes into [`FIELDS`].
const REQUIRED: std::ops::Range<usize> = 0..9;
/// `items` and `shipping` in [`FIELDS`]: read where they stand, not kept as text.
const ITEMS: usize = 7;
const SHIPPING: usize = 8;
/// The fields of an item that validation reads.
const ITEM_FIELDS: [&str; 3] = ["product_id", "quantity", "unit_price"];
/// The fields of `shipping` that validation reads.
const SHIPPING_FIELDS: [&str; 2] = ["country", "city"];

/// An order event's fields, read in one pass over its text: the raw text of the plain
/// fields (`items` and `shipping` slots stay `None`), and the wanted fields of each item and
/// of `shipping`.
#[derive(Default)]
struct EventFields<'a> {
    raw: [Option<&'a RawValue>; 10],
    items: Nested<Vec<[Option<&'a RawValue>; 3]>>,
    shipping: Nested<[Option<&'a RawValue>; 2]>,
}

impl<'de> Visitor<'de> for &mut EventFields<'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        // A name given twice keeps its last value, as `serde_json::Value` does.
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match position(&FIELDS, &key) {
                Some(ITEMS) => {
                    self.items = map.next_value_seed(ArraySeed {
                        names: &ITEM_FIELDS,
                    })?
                }
                Some(SHIPPING) => {
                    self.shipping = map.next_value_seed(ObjectSeed {
                        names: &SHIPPING_FIELDS,
                    })?
                }
                Some(i) => self.raw[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

impl<'a> EventFields<'a> {
    /// Reads the JSON object `text` (the whole text). Fails when it is not JSON or not an
    /// object.
    fn read(text: &'a str) -> Result<Self, serde_json::Error> {
        let mut fields = EventFields::default();
        let mut de = serde_json::Deserializer::from_str(text);
        (&mut de).deserialize_map(&mut fields)?;
        de.end()?;
        Ok(fields)
    }
}

/// Validates one order event payload against spec §3.1, rule by rule in the spec's order,
/// and normalises it. The first failing rule decides the rejection.
pub fn validate(payload: &[u8], currencies: &Currencies) -> Result<OrderEvent, Rejection> {
    // 1. json_parse
    // SIMD validation: the whole payload is checked for every event. Only a failure asks
    // `std` again, for its description of the error.
    let text = simdutf8::basic::from_utf8(payload).map_err(|_| {
        let detail = match std::str::from_utf8(payload) {
            Err(e) => format!("not UTF-8: {e}"),
            Ok(_) => "not UTF-8".to_owned(),
        };
        reject("json_parse", detail, None)
    })?;
    let Ok(EventFields {
        raw,
        items,
        shipping,
    }) = EventFields::read(text)
    else {
        // Not JSON, or not an object: say which, in serde_json's words (rare: no hurry).
        return Err(match serde_json::from_str::<serde_json::Value>(text) {
            Err(e) => reject("json_parse", format!("not JSON: {e}"), None),
            Ok(_) => reject("json_parse", "not a JSON object", None),
        });
    };
    let f: [Option<Json>; 10] = raw.map(|r| r.map(Json::of));
    let [event_id_f, order_id_f, customer_id_f, status_f, event_ts_f, order_ts_f, currency_f, _, _, _] =
        &f;
    // Rejections name the order; borrowed, since valid events (most) never need it.
    let key = order_id_f.as_ref().and_then(Json::as_str);

    // 2. missing_field
    for i in REQUIRED {
        let is_missing = match i {
            ITEMS => items.is_missing(),
            SHIPPING => shipping.is_missing(),
            _ => missing(&f[i]),
        };
        if is_missing {
            return Err(reject(
                "missing_field",
                format!("`{}` is missing", FIELDS[i]),
                key,
            ));
        }
    }
    let shipping = match shipping {
        Nested::Read(fields) => Some(fields),
        _ => None,
    };
    let country_f = shipping.and_then(|s| s[0]).map(Json::of);
    if shipping.is_none() || missing(&country_f) {
        return Err(reject(
            "missing_field",
            "`shipping.country` is missing",
            key,
        ));
    }
    let event_id = id_text(event_id_f)
        .ok_or_else(|| reject("missing_field", "`event_id` is not a string", key))?;
    let order_id = id_text(order_id_f)
        .ok_or_else(|| reject("missing_field", "`order_id` is not a string", key))?;

    // 3. invalid_customer_id
    let customer_id = json_integer(customer_id_f)
        .filter(|c| *c >= 1)
        .ok_or_else(|| {
            reject(
                "invalid_customer_id",
                "`customer_id` is not an integer >= 1",
                key,
            )
        })?;

    // 4. invalid_status
    let status = status_f
        .as_ref()
        .and_then(Json::as_str)
        .map(|s| lower(s.trim()))
        .filter(|s| STATUSES.contains(&s.as_str()))
        .ok_or_else(|| reject("invalid_status", "`status` is not a known status", key))?;

    // 5. invalid_timestamp
    let ts = |v: &Option<Json>| v.as_ref().and_then(Json::as_str).and_then(parse_rfc3339);
    let event_ts = ts(event_ts_f).ok_or_else(|| {
        reject(
            "invalid_timestamp",
            "`event_ts` is not an RFC 3339 timestamp in range",
            key,
        )
    })?;
    let order_ts = ts(order_ts_f).ok_or_else(|| {
        reject(
            "invalid_timestamp",
            "`order_ts` is not an RFC 3339 timestamp in range",
            key,
        )
    })?;

    // 6. invalid_currency
    let currency = currency_f
        .as_ref()
        .and_then(Json::as_str)
        .map(|s| upper(s.trim()))
        .filter(|c| currencies.contains(c))
        .ok_or_else(|| {
            reject(
                "invalid_currency",
                "`currency` is not an accepted currency",
                key,
            )
        })?;

    // 7. invalid_country
    let shipping_country = country_f
        .as_ref()
        .and_then(Json::as_str)
        .map(|s| upper(s.trim()))
        .filter(|c| is_country(c))
        .ok_or_else(|| {
            reject(
                "invalid_country",
                "`shipping.country` is not an ISO 3166-1 alpha-2 code",
                key,
            )
        })?;

    // 8. invalid_items
    let items = match items {
        Nested::Read(items) => Some(items),
        _ => None,
    }
    .filter(|a| !a.is_empty() && a.len() <= 500)
    .ok_or_else(|| {
        reject(
            "invalid_items",
            "`items` is not an array of 1 to 500 entries",
            key,
        )
    })?;
    // Each item's product_id, quantity and unit_price (all `None` for a non-object item).
    let item_fields: Vec<[Option<Json>; 3]> = items
        .iter()
        .map(|raw| raw.map(|r| r.map(Json::of)))
        .collect();
    // Rules 8–10 each look at every item before the next rule looks at any, so that the
    // first failing rule (not the first failing item) names the rejection.
    fn product<'a>(fields: &'a [Option<Json<'_>>; 3]) -> Option<&'a str> {
        let p = fields[0].as_ref().and_then(Json::as_str)?;
        (!p.trim().is_empty()).then_some(p)
    }
    let quantity =
        |fields: &[Option<Json>; 3]| json_integer(&fields[1]).filter(|q| (1..=1000).contains(q));
    if let Some(i) = item_fields.iter().position(|f| product(f).is_none()) {
        return Err(reject(
            "invalid_items",
            format!("item {} has no product_id", i + 1),
            key,
        ));
    }

    // 9. invalid_quantity
    if let Some(i) = item_fields.iter().position(|f| quantity(f).is_none()) {
        return Err(reject(
            "invalid_quantity",
            format!("item {} has a quantity outside 1..=1000", i + 1),
            key,
        ));
    }

    // 10. invalid_price
    let mut parsed = Vec::with_capacity(items.len());
    for (i, fields) in item_fields.iter().enumerate() {
        let price = match &fields[2] {
            Some(Json::String(s)) => Money::parse_price(s),
            Some(Json::Number(n)) => Money::parse_price(n),
            _ => None,
        };
        match (price, product(fields), quantity(fields)) {
            (Some(unit_price), Some(product_id), Some(quantity)) => parsed.push(Item {
                product_id: product_id.into(),
                quantity,
                unit_price,
            }),
            _ => {
                return Err(reject(
                    "invalid_price",
                    format!("item {} has an invalid unit_price", i + 1),
                    key,
                ))
            }
        }
    }

    Ok(OrderEvent {
        event_ts,
        event_id,
        order_id,
        customer_id,
        status,
        order_ts,
        currency,
        shipping_country,
        shipping_city: free_text(shipping.and_then(|s| s[1])),
        payment_method: free_text(raw[9]).map(|p| lower(p.trim())),
        items: parsed,
    })
}

/// The first implementation, over `serde_json::Value`: kept as the reference the borrowed
/// parse is checked against.
#[cfg(test)]
mod reference {
    use serde_json::{Map, Value};

    use super::reject;
    use crate::codes::{is_country, Currencies, STATUSES};
    use crate::money::Money;
    use crate::rows::{Item, OrderEvent, Rejection};
    use crate::time::parse_rfc3339;

    fn missing(v: Option<&Value>) -> bool {
        match v {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.trim().is_empty(),
            _ => false,
        }
    }

    /// The text of a JSON integer token (no fraction, no exponent), parsed to i64.
    fn json_integer(v: &Value) -> Option<i64> {
        match v {
            Value::Number(n) => {
                let t = n.as_str();
                if t.contains(['.', 'e', 'E']) {
                    None
                } else {
                    t.parse().ok()
                }
            }
            _ => None,
        }
    }

    /// An id "taken as given": a string as is, an integer token as its text.
    fn id_text(v: Option<&Value>) -> Option<String> {
        match v? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.as_str().to_owned()),
            _ => None,
        }
    }

    /// Text of an optional free-form field: strings as given, other JSON as its text.
    fn free_text(v: Option<&Value>) -> Option<String> {
        match v? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// Validates one order event payload; the first failing rule wins.
    pub fn validate_with_value(
        payload: &[u8],
        currencies: &Currencies,
    ) -> Result<OrderEvent, Rejection> {
        // 1. json_parse
        let text = std::str::from_utf8(payload)
            .map_err(|e| reject("json_parse", format!("not UTF-8: {e}"), None))?;
        let value: Value = serde_json::from_str(text)
            .map_err(|e| reject("json_parse", format!("not JSON: {e}"), None))?;
        let Value::Object(obj) = value else {
            return Err(reject("json_parse", "not a JSON object", None));
        };
        let key = match obj.get("order_id") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };

        // 2. missing_field
        for field in [
            "event_id",
            "order_id",
            "customer_id",
            "status",
            "event_ts",
            "order_ts",
            "currency",
            "items",
            "shipping",
        ] {
            if missing(obj.get(field)) {
                return Err(reject(
                    "missing_field",
                    format!("`{field}` is missing"),
                    key.as_deref(),
                ));
            }
        }
        let shipping: Option<&Map<String, Value>> = obj.get("shipping").and_then(Value::as_object);
        if missing(shipping.and_then(|s| s.get("country"))) {
            return Err(reject(
                "missing_field",
                "`shipping.country` is missing",
                key.as_deref(),
            ));
        }
        let shipping = shipping.ok_or_else(|| {
            reject(
                "missing_field",
                "`shipping.country` is missing",
                key.as_deref(),
            )
        })?;
        let event_id = id_text(obj.get("event_id")).ok_or_else(|| {
            reject(
                "missing_field",
                "`event_id` is not a string",
                key.as_deref(),
            )
        })?;
        let order_id = id_text(obj.get("order_id")).ok_or_else(|| {
            reject(
                "missing_field",
                "`order_id` is not a string",
                key.as_deref(),
            )
        })?;

        // 3. invalid_customer_id
        let customer_id = obj
            .get("customer_id")
            .and_then(json_integer)
            .filter(|c| *c >= 1)
            .ok_or_else(|| {
                reject(
                    "invalid_customer_id",
                    "`customer_id` is not an integer >= 1",
                    key.as_deref(),
                )
            })?;

        // 4. invalid_status
        let status = match obj.get("status") {
            Some(Value::String(s)) => Some(s.trim().to_lowercase()),
            _ => None,
        }
        .filter(|s| STATUSES.contains(&s.as_str()))
        .ok_or_else(|| {
            reject(
                "invalid_status",
                "`status` is not a known status",
                key.as_deref(),
            )
        })?;

        // 5. invalid_timestamp
        let ts = |field: &str| match obj.get(field) {
            Some(Value::String(s)) => parse_rfc3339(s),
            _ => None,
        };
        let event_ts = ts("event_ts").ok_or_else(|| {
            reject(
                "invalid_timestamp",
                "`event_ts` is not an RFC 3339 timestamp in range",
                key.as_deref(),
            )
        })?;
        let order_ts = ts("order_ts").ok_or_else(|| {
            reject(
                "invalid_timestamp",
                "`order_ts` is not an RFC 3339 timestamp in range",
                key.as_deref(),
            )
        })?;

        // 6. invalid_currency
        let currency = match obj.get("currency") {
            Some(Value::String(s)) => Some(s.trim().to_uppercase()),
            _ => None,
        }
        .filter(|c| currencies.contains(c))
        .ok_or_else(|| {
            reject(
                "invalid_currency",
                "`currency` is not an accepted currency",
                key.as_deref(),
            )
        })?;

        // 7. invalid_country
        let shipping_country = match shipping.get("country") {
            Some(Value::String(s)) => Some(s.trim().to_uppercase()),
            _ => None,
        }
        .filter(|c| is_country(c))
        .ok_or_else(|| {
            reject(
                "invalid_country",
                "`shipping.country` is not an ISO 3166-1 alpha-2 code",
                key.as_deref(),
            )
        })?;

        // 8. invalid_items
        let items = match obj.get("items") {
            Some(Value::Array(a)) if !a.is_empty() && a.len() <= 500 => a,
            _ => {
                return Err(reject(
                    "invalid_items",
                    "`items` is not an array of 1 to 500 entries",
                    key.as_deref(),
                ))
            }
        };
        let mut product_ids = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_object().and_then(|o| o.get("product_id")) {
                Some(Value::String(p)) if !p.trim().is_empty() => product_ids.push(p.clone()),
                _ => {
                    return Err(reject(
                        "invalid_items",
                        format!("item {} has no product_id", i + 1),
                        key.as_deref(),
                    ))
                }
            }
        }

        // 9. invalid_quantity
        let mut quantities = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.get("quantity").and_then(json_integer) {
                Some(q) if (1..=1000).contains(&q) => quantities.push(q),
                _ => {
                    return Err(reject(
                        "invalid_quantity",
                        format!("item {} has a quantity outside 1..=1000", i + 1),
                        key.as_deref(),
                    ))
                }
            }
        }

        // 10. invalid_price
        let mut parsed = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let price = match item.get("unit_price") {
                Some(Value::String(s)) => Money::parse_price(s),
                Some(Value::Number(n)) => Money::parse_price(n.as_str()),
                _ => None,
            };
            match price {
                Some(p) => parsed.push(Item {
                    product_id: std::mem::take(&mut product_ids[i]).into(),
                    quantity: quantities[i],
                    unit_price: p,
                }),
                None => {
                    return Err(reject(
                        "invalid_price",
                        format!("item {} has an invalid unit_price", i + 1),
                        key.as_deref(),
                    ))
                }
            }
        }

        Ok(OrderEvent {
            event_ts,
            event_id: event_id.into(),
            order_id: order_id.into(),
            customer_id,
            status: status.into(),
            order_ts,
            currency: currency.into(),
            shipping_country: shipping_country.into(),
            shipping_city: free_text(shipping.get("city")).map(Into::into),
            payment_method: free_text(obj.get("payment_method"))
                .map(|p| p.trim().to_lowercase().into()),
            items: parsed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const GOOD: &str = r#"{"event_id": "e-1", "order_id": "O-1", "customer_id": 42, "status": " Paid ",
        "event_ts": "2026-03-01T10:15:00.250Z", "order_ts": "2026-03-01T10:02:11Z", "currency": "eur",
        "items": [{"product_id": "P-001", "quantity": 2, "unit_price": "19.99"}, {"product_id": "P-2", "quantity": 1, "unit_price": 5}],
        "shipping": {"country": "de", "city": "Berlin"}, "payment_method": " Card "}"#;

    fn with(field: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(GOOD).unwrap();
        let mut target = &mut v;
        let parts: Vec<&str> = field.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            target = target.get_mut(*p).unwrap();
        }
        let last = parts[parts.len() - 1];
        if value == "<absent>" {
            target.as_object_mut().unwrap().remove(last);
        } else {
            target[last] = serde_json::from_str(value).unwrap();
        }
        v.to_string()
    }

    fn rule(payload: &str) -> &'static str {
        match validate(payload.as_bytes(), &Currencies::default()) {
            Ok(_) => "ok",
            Err(r) => r.rule,
        }
    }

    #[test]
    fn a_good_event_is_normalised() {
        let e = validate(GOOD.as_bytes(), &Currencies::default()).unwrap();
        assert_eq!(
            (&*e.status, &*e.currency, &*e.shipping_country),
            ("paid", "EUR", "DE")
        );
        assert_eq!(e.payment_method.as_deref(), Some("card"));
        assert_eq!(e.items[0].unit_price, Money(1999));
        assert_eq!(e.items[1].unit_price, Money(500));
    }

    #[test]
    fn each_rule_in_order() {
        assert_eq!(rule("[1]"), "json_parse");
        assert_eq!(rule("{} {}"), "json_parse");
        assert_eq!(rule(&with("event_id", "\"  \"")), "missing_field");
        assert_eq!(rule(&with("shipping", "\"DE\"")), "missing_field");
        assert_eq!(rule(&with("shipping.country", "null")), "missing_field");
        assert_eq!(rule(&with("items", "<absent>")), "missing_field");
        assert_eq!(rule(&with("customer_id", "\"42\"")), "invalid_customer_id");
        assert_eq!(rule(&with("customer_id", "42.0")), "invalid_customer_id");
        assert_eq!(rule(&with("customer_id", "0")), "invalid_customer_id");
        assert_eq!(
            rule(&with("customer_id", "99999999999999999999")),
            "invalid_customer_id"
        );
        assert_eq!(rule(&with("status", "2")), "invalid_status");
        assert_eq!(rule(&with("status", "\"canceled\"")), "invalid_status");
        assert_eq!(
            rule(&with("event_ts", "\"2026-03-01\"")),
            "invalid_timestamp"
        );
        assert_eq!(rule(&with("currency", "\"XXX\"")), "invalid_currency");
        assert_eq!(rule(&with("shipping.country", "\"UK\"")), "invalid_country");
        assert_eq!(rule(&with("items", "{}")), "invalid_items");
        assert_eq!(rule(&with("items", "[]")), "invalid_items");
        assert_eq!(
            rule(&with("items", "[{\"product_id\": 3}]")),
            "invalid_items"
        );
        assert_eq!(
            rule(&with(
                "items",
                "[{\"product_id\": \"P\", \"quantity\": 1001, \"unit_price\": \"1\"}]"
            )),
            "invalid_quantity"
        );
        assert_eq!(
            rule(&with(
                "items",
                "[{\"product_id\": \"P\", \"quantity\": 1, \"unit_price\": 1e2}]"
            )),
            "invalid_price"
        );
    }

    #[test]
    fn two_broken_rules_report_the_first() {
        // bad currency and bad country: currency comes first
        let two = with("currency", "\"XXX\"").replace("\"de\"", "\"UK\"");
        assert_eq!(rule(&two), "invalid_currency");
        // bad quantity in item 1 and bad price in item 2: quantity comes first
        let items = "[{\"product_id\": \"P\", \"quantity\": 0, \"unit_price\": \"1\"}, {\"product_id\": \"Q\", \"quantity\": 1, \"unit_price\": \"-1\"}]";
        assert_eq!(rule(&with("items", items)), "invalid_quantity");
    }

    /// The borrowed parse gives exactly what the `Value`-based reference gives — the event
    /// or the same rule, detail and key — over generated events (with the generator's dirty
    /// cases), hand-made edge cases, and thousands of random mutations of them.
    #[test]
    fn borrowed_parse_equals_the_reference() {
        use rand::{Rng, SeedableRng};
        let cur = Currencies::default();
        let topics = crate::Topics::with_prefix("");
        let input = crate::generate::generate_input(
            &crate::generate::GeneratorConfig::scaled(2_000, 3),
            &topics,
        );
        let mut payloads: Vec<Vec<u8>> = input.orders.into_iter().map(|m| m.payload).collect();
        for (field, value) in [
            ("event_id", "12"),
            ("event_id", "\"a\\u0041\""),
            ("order_id", "7.5"),
            ("customer_id", "-0"),
            ("customer_id", "1e3"),
            ("status", "\" PAID\\t\""),
            ("shipping", "null"),
            ("shipping", "[]"),
            ("shipping.city", "{\"a\": [1, 2]}"),
            ("shipping.city", "12.50"),
            ("shipping.city", "null"),
            ("payment_method", "[\"x\", {\"y\": null}]"),
            ("payment_method", "true"),
            ("items", "[1]"),
            ("items", "5"),
            ("items", "1e400"),
            ("items", "null"),
            ("items", "\" \""),
            ("items", "\"x\""),
            ("items", "true"),
            ("items", "{\"product_id\": \"P\"}"),
            ("items", "[5, -1e400, [1, {}], {}, \"s\", null]"),
            ("items", "[{\"product_id\": \"P\", \"quantity\": 1e400, \"unit_price\": 1}]"),
            ("items", "[{\"product_id\": \"P\", \"quantity\": 1, \"unit_price\": 1}, {}]"),
            ("shipping", "1e400"),
            ("shipping", "{}"),
            ("shipping", "\"  \""),
            ("shipping", "[{\"country\": \"DE\"}]"),
            ("shipping", "{\"country\": \"DE\", \"country\": null}"),
            ("shipping", "{\"city\": \"X\", \"country\": \"FR\"}"),
            ("items", "[{\"product_id\": \" \"}]"),
            ("items", "[{\"product_id\": \"P\", \"quantity\": 2, \"unit_price\": \"1.5\", \"quantity\": 3}]"),
            ("items", "[{\"product_id\": \"P\\\"\", \"quantity\": 1, \"unit_price\": 10}]"),
            // Case mapping outside ASCII: `ſ` upper-cases to `S`, `ß` to `SS`, a final `Σ`
            // lower-cases to `ς` (whole-string rules, not char by char).
            ("currency", "\"uſd\""),
            ("currency", "\"eur\\u00df\""),
            ("shipping.country", "\"dſ\""),
            ("status", "\"PAİD\""),
            ("payment_method", "\" KARTΣ \""),
            ("payment_method", "\"ΣΑΣ card\""),
        ] {
            payloads.push(with(field, value).into_bytes());
        }
        payloads.push(br#"{"order_id": "O", "order_id": "P"}"#.to_vec());
        // A field given twice: the last one counts, whatever the first one was.
        payloads.push(
            with("items", "5")
                .replacen(
                    '{',
                    r#"{"items": [{"product_id": "P", "quantity": 1, "unit_price": 1}], "#,
                    1,
                )
                .into_bytes(),
        );
        payloads.push(
            GOOD.replacen('{', r#"{"items": null, "shipping": 3, "#, 1)
                .into_bytes(),
        );
        payloads.push(b"{\"event_id\": \"e\"} x".to_vec());
        payloads.push(b"\xff{}".to_vec());
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let base = payloads.clone();
        for _ in 0..20_000 {
            let mut p = base[rng.random_range(0..base.len())].clone();
            for _ in 0..rng.random_range(1..4) {
                if p.is_empty() {
                    break;
                }
                let i = rng.random_range(0..p.len());
                match rng.random_range(0..4) {
                    0 => {
                        p.remove(i);
                    }
                    1 => {
                        let set = b"{}[]\",:0 \\n-.e";
                        p[i] = set[rng.random_range(0..set.len())];
                    }
                    2 => p.insert(i, b"\"1 ,}"[rng.random_range(0..5)]),
                    _ => p.truncate(i),
                }
            }
            payloads.push(p);
        }
        let mut accepted = 0;
        for p in &payloads {
            let fast = validate(p, &cur);
            let reference = reference::validate_with_value(p, &cur);
            assert_eq!(fast, reference, "{}", String::from_utf8_lossy(p));
            accepted += fast.is_ok() as usize;
        }
        assert!(accepted > 2_000, "{accepted}");
    }
}
