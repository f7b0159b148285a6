//! A deterministic generator of realistic pipeline input, with the spec's dirty cases.
//!
//! Same [`GeneratorConfig`] (seed included), same messages, in the same order. It produces
//! what the three entry points would put on Kafka: order events (every status change of an
//! order is a new event carrying the whole order; retried duplicates; late, out-of-order
//! events; events breaking each rule; payloads that are not JSON), product CSV drops (quoting,
//! every boolean and timestamp form, rows breaking each rule), and customer change envelopes
//! (snapshot, inserts, updates, deletes, re-creations).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fixture::Message;
use crate::graph::Topics;
use crate::products::csv_messages;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Distinct orders.
    pub orders: usize,
    /// Distinct products.
    pub products: usize,
    /// Distinct customers.
    pub customers: usize,
    /// Share of events and rows that break a rule (0..1).
    pub invalid_rate: f64,
    /// Share of events sent twice (client retries).
    pub duplicate_rate: f64,
    /// Product CSV files.
    pub product_files: usize,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 1,
            orders: 1_000,
            products: 100,
            customers: 200,
            invalid_rate: 0.05,
            duplicate_rate: 0.05,
            product_files: 3,
        }
    }
}

impl GeneratorConfig {
    /// `orders` orders with a catalogue and a customer base in proportion (one product per
    /// 20 orders, at least 50; one customer per 10 orders, at least 100) — the demo's shape.
    pub fn scaled(orders: usize, seed: u64) -> Self {
        GeneratorConfig {
            seed,
            orders,
            products: (orders / 20).max(50),
            customers: (orders / 10).max(100),
            ..GeneratorConfig::default()
        }
    }
}

const STATUSES: [&str; 4] = ["created", "paid", "shipped", "delivered"];
const CURRENCIES: [&str; 6] = ["EUR", "usd", "GBP", "JPY", "chf", "TWD"];
const COUNTRIES: [&str; 10] = ["DE", "fr", "US", "GB", "JP", "tw", "NL", "CH", "BR", "ZA"];
const CITIES: [&str; 6] = ["Berlin", "Kraków", "Zürich", "القاهرة", "Reykjavík", "東京"];
const CATEGORIES: [&str; 6] = [
    "Beauty",
    "books",
    "TOYS",
    "Électronique",
    "Office, Supplies",
    "grocery",
];
const BRANDS: [&str; 5] = ["Acme", "Globex", "Müller & Söhne", "", "Umbrella"];
const PAYMENTS: [&str; 4] = [" Card ", "PayPal", "apple_pay", "BANK_TRANSFER"];

/// 2026-03-01T00:00:00Z in seconds.
const BASE_SECS: i64 = 1_772_323_200;

fn ts(secs: i64, micros: u32, offset_min: i32) -> String {
    let local = secs + offset_min as i64 * 60;
    let days = local.div_euclid(86_400);
    let rem = local.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    let zone = if offset_min == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        format!(
            "{sign}{:02}:{:02}",
            offset_min.abs() / 60,
            offset_min.abs() % 60
        )
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}{zone}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn pick<T: Copy>(rng: &mut StdRng, xs: &[T]) -> T {
    xs[rng.random_range(0..xs.len())]
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// One order event as JSON; `break_rule` (1..=10) makes it fail that rule of spec §3.1.
fn order_event(
    rng: &mut StdRng,
    cfg: &GeneratorConfig,
    order: usize,
    seq: usize,
    status: &str,
    order_secs: i64,
    break_rule: Option<u8>,
) -> String {
    let event_id = format!("e-{:x}-{order}-{seq}", cfg.seed);
    let order_id = format!("O-{order:07}");
    let customer = rng.random_range(1..=cfg.customers.max(1) as i64 + cfg.customers as i64 / 20);
    let offset = pick(rng, &[0, 60, -300, 330, 540, -570]);
    let event_secs = order_secs + (seq as i64) * rng.random_range(600..86_400);
    let mut items = Vec::new();
    for _ in 0..rng.random_range(1..=4) {
        let pid = format!(
            "P-{:05}",
            rng.random_range(1..=cfg.products.max(1) + cfg.products / 10)
        );
        let qty = rng.random_range(1..=5);
        let cents = rng.random_range(100..100_000);
        let price = if rng.random_bool(0.5) {
            format!("\"{}.{:02}\"", cents / 100, cents % 100)
        } else {
            format!("{}.{:02}", cents / 100, cents % 100)
        };
        items.push(format!(
            "{{\"product_id\": \"{pid}\", \"quantity\": {qty}, \"unit_price\": {price}}}"
        ));
    }
    let mut f: Vec<(String, String)> = vec![
        ("event_id".into(), json_str(&event_id)),
        ("order_id".into(), json_str(&order_id)),
        ("customer_id".into(), customer.to_string()),
        ("status".into(), json_str(status)),
        (
            "event_ts".into(),
            json_str(&ts(event_secs, rng.random_range(0..1_000_000), offset)),
        ),
        (
            "order_ts".into(),
            json_str(&ts(order_secs, rng.random_range(0..1_000) * 1000, 0)),
        ),
        ("currency".into(), json_str(pick(rng, &CURRENCIES))),
        ("items".into(), format!("[{}]", items.join(", "))),
        (
            "shipping".into(),
            format!(
                "{{\"country\": {}, \"city\": {}}}",
                json_str(pick(rng, &COUNTRIES)),
                json_str(pick(rng, &CITIES))
            ),
        ),
        ("payment_method".into(), json_str(pick(rng, &PAYMENTS))),
    ];
    let set = |f: &mut Vec<(String, String)>, k: &str, v: &str| {
        if let Some(e) = f.iter_mut().find(|(n, _)| n == k) {
            e.1 = v.to_string();
        }
    };
    match break_rule {
        Some(2) => set(&mut f, "currency", "\"  \""),
        Some(3) => set(&mut f, "customer_id", "\"42\""),
        Some(4) => set(&mut f, "status", "\"lost\""),
        Some(5) => set(&mut f, "order_ts", "\"2026-03-01\""),
        Some(6) => set(&mut f, "currency", "\"XYZ\""),
        Some(7) => set(&mut f, "shipping", "{\"country\": \"UK\"}"),
        Some(8) => set(&mut f, "items", "[]"),
        Some(9) => set(
            &mut f,
            "items",
            "[{\"product_id\": \"P-00001\", \"quantity\": 0, \"unit_price\": \"1.00\"}]",
        ),
        Some(10) => set(
            &mut f,
            "items",
            "[{\"product_id\": \"P-00001\", \"quantity\": 1, \"unit_price\": \"1.999\"}]",
        ),
        _ => {}
    }
    let body: Vec<String> = f.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}", body.join(", "))
}

fn products_csv(rng: &mut StdRng, cfg: &GeneratorConfig, file: usize) -> String {
    let mut out =
        String::from("product_id,sku,name,category,brand,unit_price,currency,active,updated_at\n");
    let per_file = cfg.products.div_ceil(cfg.product_files.max(1)) + cfg.products / 5;
    for _ in 0..per_file {
        let id = rng.random_range(1..=cfg.products.max(1));
        let cents = rng.random_range(100..100_000);
        let mut price = format!("{}.{:02}", cents / 100, cents % 100);
        let mut currency = pick(rng, &CURRENCIES).to_string();
        let mut active = pick(rng, &["true", "False", "1", "0", "yes", "N", ""]).to_string();
        let secs =
            BASE_SECS - 30 * 86_400 + file as i64 * 7 * 86_400 + rng.random_range(0..6 * 86_400);
        let mut updated = match rng.random_range(0..4) {
            0 => ts(secs, rng.random_range(0..1_000_000), 0),
            1 => ts(secs, 0, 60).replace('T', " "),
            2 => ts(secs, rng.random_range(0..1_000_000), 0)
                .trim_end_matches('Z')
                .replace('T', " "),
            _ => ts(secs, 0, 0)[..10].to_string(),
        };
        let mut name = format!("\"Product \"\"{id}\"\", deluxe\"");
        if rng.random_bool(cfg.invalid_rate) {
            match rng.random_range(0..6) {
                0 => name = String::new(),
                1 => price = "-1".into(),
                2 => currency = "XXX".into(),
                3 => active = "maybe".into(),
                4 => updated = "yesterday".into(),
                _ => {
                    out.push_str(&format!("P-{id:05},only,three\n"));
                    continue;
                }
            }
        }
        out.push_str(&format!(
            "P-{id:05},SKU-{:05},{name},\"{}\",{},{price},{currency},{active},{updated}\n",
            id * 7,
            pick(rng, &CATEGORIES),
            pick(rng, &BRANDS)
        ));
    }
    out
}

fn envelope(op: &str, id: i64, after: Option<String>, lsn: i64, commit_ms: i64) -> String {
    let before = if op == "d" {
        format!("{{\"customer_id\":{id}}}")
    } else {
        "null".into()
    };
    let after = after.unwrap_or_else(|| "null".into());
    format!(
        "{{\"before\":{before},\"after\":{after},\"source\":{{\"connector\":\"postgresql\",\"ts_ms\":{commit_ms},\"schema\":\"public\",\"table\":\"customers\",\"txId\":{},\"lsn\":{lsn}}},\"op\":\"{op}\",\"ts_ms\":{commit_ms}}}",
        lsn / 8
    )
}

fn customer_row(rng: &mut StdRng, id: i64, updated_secs: i64) -> String {
    let email = if rng.random_bool(0.05) {
        "not-an-email".to_string()
    } else {
        format!(" User{id}@Shop.Example.org ")
    };
    format!(
        "{{\"customer_id\":{id},\"email\":{},\"full_name\":\"Customer {id}\",\"country\":{},\"city\":{},\"segment\":{},\"created_at\":\"{}\",\"updated_at\":\"{}\"}}",
        json_str(&email),
        json_str(pick(rng, &COUNTRIES)),
        json_str(pick(rng, &CITIES)),
        json_str(pick(rng, &[" Retail", "VIP ", "gold"])),
        ts(BASE_SECS - 400 * 86_400, 0, 0),
        ts(updated_secs, rng.random_range(0..1_000_000), 0)
    )
}

/// Generated input as the three entry points receive it: customer change envelopes (what a
/// CDC capture produces), product CSV files (what lands in the drop folder) and order events
/// (what clients POST), each in send order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedInput {
    /// Customer change envelopes for the customers topic.
    pub customers: Vec<Message>,
    /// Product CSV files: name and contents, in name (= ingestion) order.
    pub product_files: Vec<(String, Vec<u8>)>,
    /// Order events for the orders topic (some deliberately not JSON).
    pub orders: Vec<Message>,
}

impl GeneratedInput {
    /// The messages of all three topics, in send order: customers, then products (one per
    /// CSV record, as the CSV ingest produces them), then orders.
    pub fn into_messages(self, topics: &Topics) -> Vec<Message> {
        let mut out = self.customers;
        for (name, bytes) in &self.product_files {
            for msg in csv_messages(name, bytes) {
                let key = msg.fields.first().map(|p| p.as_bytes().to_vec());
                let payload = serde_json::to_vec(&msg).unwrap_or_default();
                out.push(Message {
                    topic: topics.products.clone(),
                    key,
                    payload,
                    source: format!("csv:{name}"),
                });
            }
        }
        out.extend(self.orders);
        out
    }
}

/// Generates the messages of all three topics, in send order.
pub fn generate(cfg: &GeneratorConfig, topics: &Topics) -> Vec<Message> {
    generate_input(cfg, topics).into_messages(topics)
}

/// Generates the input of the three entry points (see [`GeneratedInput`]).
pub fn generate_input(cfg: &GeneratorConfig, topics: &Topics) -> GeneratedInput {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut out = Vec::new();

    // Customers: snapshot, then changes (updates, deletes, re-creations).
    let mut lsn = 1_000_000i64;
    let mut commit_ms = BASE_SECS * 1000;
    let push_customer = |out: &mut Vec<Message>, id: i64, payload: String| {
        out.push(Message {
            topic: topics.customers.clone(),
            key: Some(id.to_string().into_bytes()),
            payload: payload.into_bytes(),
            source: "generator:customers".into(),
        });
    };
    for id in 1..=cfg.customers as i64 {
        lsn += 8;
        let row = customer_row(&mut rng, id, BASE_SECS - 100 * 86_400 + id);
        push_customer(&mut out, id, envelope("r", id, Some(row), lsn, commit_ms));
    }
    for _ in 0..cfg.customers / 2 {
        lsn += 8;
        commit_ms += rng.random_range(1_000..600_000);
        let id = rng.random_range(1..=cfg.customers as i64);
        if rng.random_bool(0.15) {
            push_customer(&mut out, id, envelope("d", id, None, lsn, commit_ms));
        } else {
            let op = if rng.random_bool(0.1) { "c" } else { "u" };
            let row = customer_row(&mut rng, id, commit_ms / 1000);
            push_customer(&mut out, id, envelope(op, id, Some(row), lsn, commit_ms));
        }
    }

    // Products: CSV drops, in file order.
    let product_files = (0..cfg.product_files)
        .map(|file| {
            let name = format!("products_{:03}.csv", file + 1);
            (name, products_csv(&mut rng, cfg, file).into_bytes())
        })
        .collect();

    // Orders: every status change is a new event; some duplicated, some late, some broken.
    let mut events: Vec<(i64, String, String)> = Vec::new();
    for order in 1..=cfg.orders {
        let order_secs = BASE_SECS + rng.random_range(0..30 * 86_400);
        let steps = rng.random_range(1..=4);
        let final_status = match rng.random_range(0..10) {
            0 => Some("cancelled"),
            1 => Some("refunded"),
            _ => None,
        };
        for seq in 0..steps + usize::from(final_status.is_some()) {
            let status = match STATUSES.get(seq) {
                Some(s) if seq < steps => *s,
                _ => final_status.unwrap_or("delivered"),
            };
            let broken = rng
                .random_bool(cfg.invalid_rate)
                .then(|| rng.random_range(1..=10u8));
            let body = if broken == Some(1) {
                pick(
                    &mut rng,
                    &[
                        "{\"event_id\": \"broken",
                        "[1, 2]",
                        "null",
                        "\u{fffd}not json",
                    ],
                )
                .to_string()
            } else {
                order_event(&mut rng, cfg, order, seq, status, order_secs, broken)
            };
            // Arrival order: roughly by time, with some events late.
            let arrival = order_secs
                + seq as i64 * 3_600
                + if rng.random_bool(0.1) {
                    rng.random_range(0..200_000)
                } else {
                    0
                };
            let copies = if rng.random_bool(cfg.duplicate_rate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                events.push((arrival, format!("O-{order:07}"), body.clone()));
            }
        }
    }
    events.sort_by_key(|e| e.0);
    let orders = events
        .into_iter()
        .map(|(_, order_id, body)| Message {
            topic: topics.orders.clone(),
            key: Some(order_id.into_bytes()),
            payload: body.into_bytes(),
            source: "generator:orders".into(),
        })
        .collect();
    GeneratedInput {
        customers: out,
        product_files,
        orders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_dirty() {
        let cfg = GeneratorConfig {
            orders: 300,
            ..GeneratorConfig::default()
        };
        let topics = Topics::with_prefix("");
        let a = generate(&cfg, &topics);
        let b = generate(&cfg, &topics);
        assert_eq!(a, b);
        let c = generate(
            &GeneratorConfig {
                seed: 2,
                ..cfg.clone()
            },
            &topics,
        );
        assert_ne!(a, c);
        let currencies = crate::codes::Currencies::default();
        let mut rules = std::collections::BTreeSet::new();
        for m in a.iter().filter(|m| m.topic == "orders") {
            if let Err(r) = crate::orders::validate(&m.payload, &currencies) {
                rules.insert(r.rule);
            }
        }
        for r in crate::orders::RULES {
            assert!(rules.contains(r), "no event breaks {r}");
        }
        let mut product_rules = std::collections::BTreeSet::new();
        for m in a.iter().filter(|m| m.topic == "products") {
            if let Err(r) = crate::products::validate(&m.payload, &currencies) {
                product_rules.insert(r.rule);
            }
        }
        assert!(product_rules.len() >= 4, "{product_rules:?}");
    }
}
