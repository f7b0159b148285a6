//! Order events: the validation rules of spec §3.1, in their order.

use serde_json::{Map, Value};

use crate::codes::{is_country, Currencies, STATUSES};
use crate::money::Money;
use crate::rows::{Item, OrderEvent, Rejection};
use crate::time::parse_rfc3339;

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

fn reject(rule: &'static str, detail: impl Into<String>, key: &Option<String>) -> Rejection {
    Rejection {
        rule,
        detail: detail.into(),
        record_key: key.clone(),
    }
}

/// Absent, null, or a blank string.
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
pub fn validate(payload: &[u8], currencies: &Currencies) -> Result<OrderEvent, Rejection> {
    let none = None;
    // 1. json_parse
    let text = std::str::from_utf8(payload)
        .map_err(|e| reject("json_parse", format!("not UTF-8: {e}"), &none))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| reject("json_parse", format!("not JSON: {e}"), &none))?;
    let Value::Object(obj) = value else {
        return Err(reject("json_parse", "not a JSON object", &none));
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
                &key,
            ));
        }
    }
    let shipping: Option<&Map<String, Value>> = obj.get("shipping").and_then(Value::as_object);
    if missing(shipping.and_then(|s| s.get("country"))) {
        return Err(reject(
            "missing_field",
            "`shipping.country` is missing",
            &key,
        ));
    }
    let shipping =
        shipping.ok_or_else(|| reject("missing_field", "`shipping.country` is missing", &key))?;
    let event_id = id_text(obj.get("event_id"))
        .ok_or_else(|| reject("missing_field", "`event_id` is not a string", &key))?;
    let order_id = id_text(obj.get("order_id"))
        .ok_or_else(|| reject("missing_field", "`order_id` is not a string", &key))?;

    // 3. invalid_customer_id
    let customer_id = obj
        .get("customer_id")
        .and_then(json_integer)
        .filter(|c| *c >= 1)
        .ok_or_else(|| {
            reject(
                "invalid_customer_id",
                "`customer_id` is not an integer >= 1",
                &key,
            )
        })?;

    // 4. invalid_status
    let status = match obj.get("status") {
        Some(Value::String(s)) => Some(s.trim().to_lowercase()),
        _ => None,
    }
    .filter(|s| STATUSES.contains(&s.as_str()))
    .ok_or_else(|| reject("invalid_status", "`status` is not a known status", &key))?;

    // 5. invalid_timestamp
    let ts = |field: &str| match obj.get(field) {
        Some(Value::String(s)) => parse_rfc3339(s),
        _ => None,
    };
    let event_ts = ts("event_ts").ok_or_else(|| {
        reject(
            "invalid_timestamp",
            "`event_ts` is not an RFC 3339 timestamp in range",
            &key,
        )
    })?;
    let order_ts = ts("order_ts").ok_or_else(|| {
        reject(
            "invalid_timestamp",
            "`order_ts` is not an RFC 3339 timestamp in range",
            &key,
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
            &key,
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
            &key,
        )
    })?;

    // 8. invalid_items
    let items = match obj.get("items") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 500 => a,
        _ => {
            return Err(reject(
                "invalid_items",
                "`items` is not an array of 1 to 500 entries",
                &key,
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
                    &key,
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
                    &key,
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
                    &key,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
