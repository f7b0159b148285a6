//! The medallion graph: Kafka records in, every silver and gold table out, maintained
//! incrementally by differential operators (reduce and join over arrangements).
//!
//! ```text
//! records ─► parse+validate ─┬─ order events ─► latest per order (upsert) ─┬─► silver.orders ─► customer_ltv
//!                            │                                             └─► silver.order_items ─► facts
//!                            ├─ product versions ─► latest per product ─► silver.products / dim_products ─┐
//!                            ├─ customer changes ─► current per customer ─► silver.customers ─────────────┤
//!                            │                    └► SCD2 versions ─► dim_customers                       │
//!                            └─ quarantine ─► counts per (source, rule)      facts ⋈ products ⋈ customers ◄┘
//!                                                                             └─► fact_order_items ─► daily_sales
//! ```

use std::sync::Arc;

use alluvium_connectors::kafka::KafkaRecord;
use alluvium_dq::{dq_results, Check, RuleSet, Severity};
use alluvium_engine::latest::latest_by_key;
use alluvium_engine::left_join::left_join;
use alluvium_engine::{Epoch, WorkerContext};
use differential_dataflow::collection::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::vec::Partition;

use crate::codes::Currencies;
use crate::customers::{self, Change};
use crate::products::{self, ProductVersion};
use crate::rows::*;
use crate::time::day_of;

/// Topic names of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// Order events.
    pub orders: String,
    /// Product CSV records.
    pub products: String,
    /// Customer change envelopes.
    pub customers: String,
}

impl Topics {
    /// The spec's names with a prefix (`""` for none).
    pub fn with_prefix(prefix: &str) -> Self {
        Topics {
            orders: format!("{prefix}orders"),
            products: format!("{prefix}products"),
            customers: format!("{prefix}customers"),
        }
    }

    /// All three, in the spec's order.
    pub fn all(&self) -> Vec<String> {
        vec![
            self.orders.clone(),
            self.products.clone(),
            self.customers.clone(),
        ]
    }
}

/// Settings of the graph.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Topic names.
    pub topics: Topics,
    /// Accepted currencies.
    pub currencies: Currencies,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            topics: Topics::with_prefix(""),
            currencies: Currencies::default(),
        }
    }
}

/// A record after parsing and validation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Parsed {
    Order(OrderEvent),
    Product(ProductVersion),
    Customer(Change),
    Quarantine(QuarantineRow),
    /// A `dq.results` check contributed by a record (routed next to the record itself, so
    /// the parsed record is never cloned).
    Check(Check),
}

impl Parsed {
    /// The output of the routing `partition` this value goes to.
    fn route(&self) -> u64 {
        match self {
            Parsed::Order(_) => 0,
            Parsed::Product(_) => 1,
            Parsed::Customer(_) => 2,
            Parsed::Quarantine(_) => 3,
            Parsed::Check(_) => 4,
        }
    }
}

fn quarantine(source: &str, r: &KafkaRecord, rej: Rejection) -> Parsed {
    Parsed::Quarantine(QuarantineRow {
        source: source.into(),
        record_key: rej.record_key.map(Into::into),
        rule: rej.rule.into(),
        detail: rej.detail.into(),
        payload: r
            .payload
            .as_deref()
            .map(|p| Text::from(String::from_utf8_lossy(p)))
            .unwrap_or_else(|| Text::from("")),
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
        ingested_at: r.ingested_at,
    })
}

fn parse(r: KafkaRecord, config: &PipelineConfig) -> Option<Parsed> {
    let topics = &config.topics;
    let topic: &str = &r.topic;
    if topic == topics.orders {
        Some(
            match crate::orders::validate(r.payload.as_deref().unwrap_or(b""), &config.currencies) {
                Ok(e) => Parsed::Order(e),
                Err(rej) => quarantine("orders", &r, rej),
            },
        )
    } else if topic == topics.products {
        Some(
            match products::validate(r.payload.as_deref().unwrap_or(b""), &config.currencies) {
                Ok(v) => Parsed::Product(v),
                Err(rej) => quarantine("products", &r, rej),
            },
        )
    } else if topic == topics.customers {
        match customers::parse(
            r.payload.as_deref(),
            r.key.as_deref(),
            r.partition,
            r.offset,
        ) {
            Ok(Some(c)) => Some(Parsed::Customer(c)),
            Ok(None) => None,
            Err(rej) => Some(quarantine("customers", &r, rej)),
        }
    } else {
        None
    }
}

/// `(orders, revenue cents, first order_ts, last order_ts)` of a customer and currency.
type LtvAggregate = (i64, i128, i64, i64);

fn not_revenue(status: &str) -> bool {
    status == "cancelled" || status == "refunded"
}

/// The table a quarantine source's rules belong to.
fn checked_table(source: &str) -> &'static str {
    match source {
        "orders" => "silver.orders",
        "products" => "silver.products",
        _ => "silver.customers",
    }
}

/// The rules of spec §3 with their severities, for `dq.results`.
pub fn rule_set() -> RuleSet {
    let mut rules = RuleSet::default();
    for r in crate::orders::RULES {
        rules = rules.rule("silver.orders", r, Severity::Drop, None);
    }
    for r in products::RULES {
        rules = rules.rule("silver.products", r, Severity::Drop, None);
    }
    rules
        .rule("silver.customers", "invalid_change", Severity::Drop, None)
        .rule("silver.customers", "valid_email", Severity::Warn, None)
        .rule("silver.customers", "valid_country", Severity::Warn, None)
}

/// `^[^@\s]+@[^@\s]+\.[^@\s]+$`, without a regex engine.
fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let clean = |s: &str| !s.is_empty() && !s.contains('@') && !s.chars().any(char::is_whitespace);
    if !clean(local) || !clean(domain) {
        return false;
    }
    // `[^@\s]+\.[^@\s]+`: a dot with at least one character on each side.
    domain
        .char_indices()
        .any(|(i, c)| c == '.' && i > 0 && i + 1 < domain.len())
}

/// The checks a parsed record contributes to `dq.results`.
fn checks(p: &Parsed) -> Vec<Check> {
    let checked = |t: &str| (t.to_string(), None);
    match p {
        Parsed::Order(_) => vec![checked("silver.orders")],
        Parsed::Product(_) => vec![checked("silver.products")],
        Parsed::Quarantine(q) => {
            let t = checked_table(&q.source);
            vec![checked(t), (t.to_string(), Some(q.rule.to_string()))]
        }
        Parsed::Check(_) => Vec::new(),
        Parsed::Customer(c) => {
            let mut out = vec![checked("silver.customers")];
            if let Some(row) = &c.row {
                if row.email.as_deref().is_some_and(|e| !valid_email(e)) {
                    out.push(("silver.customers".into(), Some("valid_email".into())));
                }
                if row
                    .country
                    .as_deref()
                    .is_some_and(|c| !crate::codes::is_country(c))
                {
                    out.push(("silver.customers".into(), Some("valid_country".into())));
                }
            }
            out
        }
    }
}

/// Where a message came from, for bronze `_source`.
fn bronze_source(r: &KafkaRecord, topics: &Topics) -> String {
    // An ingest process said where the message came from (`rest:orders`, `csv:<file>`).
    if let Some(origin) = &r.origin {
        return origin.to_string();
    }
    let topic: &str = &r.topic;
    let payload = r.payload.as_deref().unwrap_or(b"");
    if topic == topics.products {
        if let Ok(m) = serde_json::from_slice::<crate::products::ProductMessage>(payload) {
            return format!("csv:{}", m.file);
        }
    } else if topic == topics.customers {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) {
            let v = v
                .get("payload")
                .filter(|_| v.get("schema").is_some())
                .unwrap_or(&v);
            let schema = v.pointer("/source/schema").and_then(|s| s.as_str());
            let table = v.pointer("/source/table").and_then(|s| s.as_str());
            if let (Some(schema), Some(table)) = (schema, table) {
                return format!("postgres:{schema}.{table}");
            }
        }
    }
    format!("kafka:{topic}")
}

/// What the graph produces.
pub struct Outputs<'s> {
    /// Every silver and gold table, the quarantine counts and `dq.results`, as changes.
    pub tables: VecCollection<'s, Epoch, TableRow>,
    /// `silver.quarantine` (append-only).
    pub quarantine: VecCollection<'s, Epoch, QuarantineRow>,
    /// `bronze.*` (append-only), one row per message.
    pub bronze: VecCollection<'s, Epoch, BronzeRow>,
}

/// Builds the graph over the records of the three topics.
pub fn medallion<'s>(
    records: VecCollection<'s, Epoch, KafkaRecord>,
    config: &PipelineConfig,
    ctx: &WorkerContext,
) -> Outputs<'s> {
    let topics = config.topics.clone();
    let bronze = records
        .clone()
        .inner
        .map(move |(r, epoch, diff)| {
            let source = bronze_source(&r, &topics);
            let row = BronzeRow {
                topic: r.topic.clone(),
                partition: r.partition,
                offset: r.offset,
                source: source.into(),
                batch_id: epoch,
                payload: r.payload,
                ingested_at: r.ingested_at,
            };
            (row, epoch, diff)
        })
        .as_collection();
    let cfg = config.clone();
    // Parse once, then route each kind to its own stream: no branch sees (or clones) the
    // records of another.
    let mut parts = records
        .flat_map(move |r| {
            let parsed = parse(r, &cfg);
            let checks = parsed.as_ref().map(checks).unwrap_or_default();
            parsed
                .into_iter()
                .chain(checks.into_iter().map(Parsed::Check))
        })
        .inner
        .partition(5, |(p, t, r)| (p.route(), (p, t, r)))
        .into_iter()
        .map(|s| s.as_collection());
    let (
        Some(order_part),
        Some(product_part),
        Some(customer_part),
        Some(quarantine_part),
        Some(check_part),
    ) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    )
    else {
        unreachable!("partition(5) returns five streams")
    };
    let dq = dq_results(
        check_part.flat_map(|p| match p {
            Parsed::Check(c) => Some(c),
            _ => None,
        }),
        Arc::new(rule_set()),
    );

    // Silver orders: the valid event with the greatest (event_ts, event_id) per order.
    // Values reach `reduce` sorted, and `OrderEvent` orders by (event_ts, event_id) first, so
    // the current event is the last one; duplicates of an event collapse to one value.
    let events = order_part.flat_map(|p| match p {
        Parsed::Order(e) => Some((e.order_id.clone(), e)),
        _ => None,
    });
    let current = latest_by_key(events, "LatestOrderEvent", ctx);
    let silver_orders = current.clone().map(|(_, e)| SilverOrder {
        order_total: crate::money::Money(
            e.items
                .iter()
                .map(|i| i.unit_price.times(i.quantity).0)
                .sum(),
        ),
        item_count: e.items.len() as i64,
        order_id: e.order_id,
        customer_id: e.customer_id,
        status: e.status,
        order_ts: e.order_ts,
        event_ts: e.event_ts,
        currency: e.currency,
        shipping_country: e.shipping_country,
        shipping_city: e.shipping_city,
        payment_method: e.payment_method,
    });
    let facts_base = current.flat_map(|(_, e)| {
        let e = std::sync::Arc::new(e);
        (0..e.items.len()).map(move |i| {
            let item = &e.items[i];
            Fact {
                order_id: e.order_id.clone(),
                line_no: i as i64 + 1,
                customer_id: e.customer_id,
                product_id: item.product_id.clone(),
                order_ts: e.order_ts,
                order_date: day_of(e.order_ts),
                status: e.status.clone(),
                currency: e.currency.clone(),
                quantity: item.quantity,
                unit_price: item.unit_price,
                line_total: item.unit_price.times(item.quantity),
                shipping_country: e.shipping_country.clone(),
                payment_method: e.payment_method.clone(),
                category: None,
                brand: None,
                customer_segment: None,
                customer_country: None,
            }
        })
    });
    let silver_items = facts_base.clone().map(|f| SilverOrderItem {
        order_id: f.order_id,
        line_no: f.line_no,
        product_id: f.product_id,
        quantity: f.quantity,
        unit_price: f.unit_price,
        line_total: f.line_total,
    });

    // Silver products: the valid version with the greatest (updated_at, file, line).
    let products = product_part.flat_map(|p| match p {
        Parsed::Product((order, product)) => Some((product.product_id.clone(), (order, product))),
        _ => None,
    });
    let products =
        latest_by_key(products, "LatestProduct", ctx).map(|(_, (_, p)): (Text, ProductVersion)| p);

    // Silver customers and dim_customers, from the change stream in log order.
    let changes = customer_part.flat_map(|p| match p {
        Parsed::Customer(c) => Some((c.customer_id, c)),
        _ => None,
    });
    // The current row is the last change in log order; a delete (no row) removes it.
    let customers_now =
        latest_by_key(changes.clone(), "LatestCustomerChange", ctx).flat_map(|(_, c)| c.row);
    let dim_customers = changes
        .reduce(
            |_id, changes: &[(&Change, isize)], out: &mut Vec<(DimCustomer, isize)>| {
                let ordered: Vec<&Change> = changes.iter().map(|(c, _)| *c).collect();
                out.extend(customers::versions(&ordered).into_iter().map(|v| (v, 1)));
            },
        )
        .map(|(_, v)| v);

    // Facts: order lines with the product's and the customer's current attributes (left joins).
    let by_product = facts_base.map(|f| (f.product_id.clone(), f));
    let product_attrs = products
        .clone()
        .map(|p| (p.product_id.clone(), (p.category.clone(), p.brand.clone())));
    let with_product = left_join(
        by_product,
        product_attrs,
        |f: &Fact, attrs: Option<&(Text, Option<Text>)>| {
            let mut f = f.clone();
            if let Some((category, brand)) = attrs {
                f.category = Some(category.clone());
                f.brand = brand.clone();
            }
            f
        },
    );
    let customer_attrs = customers_now
        .clone()
        .map(|c| (c.customer_id, (c.segment.clone(), c.country.clone())));
    let facts = left_join(
        with_product.map(|f| (f.customer_id, f)),
        customer_attrs,
        |f: &Fact, attrs: Option<&(Option<Text>, Option<Text>)>| {
            let mut f = f.clone();
            if let Some((segment, country)) = attrs {
                f.customer_segment = segment.clone();
                f.customer_country = country.clone();
            }
            f
        },
    );

    // Gold aggregates over orders that count as revenue.
    let daily_sales = facts
        .clone()
        .filter(|f| !not_revenue(&f.status))
        .map(|f| {
            let category = f.category.clone().unwrap_or_else(|| "unknown".into());
            (
                (f.order_date, category, f.shipping_country, f.currency),
                (f.order_id, f.quantity, f.line_total.0),
            )
        })
        .reduce(
            |_group,
             lines: &[(&(Text, i64, i64), isize)],
             out: &mut Vec<((i64, i64, i128), isize)>| {
                let mut orders = 0i64;
                let mut units = 0i64;
                let mut revenue = 0i128;
                let mut last: Option<&str> = None;
                for ((order_id, qty, total), mult) in lines {
                    if last != Some(&**order_id) {
                        orders += 1;
                        last = Some(&**order_id);
                    }
                    units += qty * *mult as i64;
                    revenue += *total as i128 * *mult as i128;
                }
                out.push(((orders, units, revenue), 1));
            },
        )
        .map(
            |((order_date, category, shipping_country, currency), (orders, units, revenue))| {
                DailySales {
                    order_date,
                    category,
                    shipping_country,
                    currency,
                    orders,
                    units,
                    revenue,
                }
            },
        );
    let customer_ltv = silver_orders
        .clone()
        .filter(|o| !not_revenue(&o.status))
        .map(|o| {
            (
                (o.customer_id, o.currency),
                (o.order_ts, o.order_id, o.order_total.0),
            )
        })
        .reduce(
            |_group,
             orders: &[(&(i64, Text, i64), isize)],
             out: &mut Vec<(LtvAggregate, isize)>| {
                let count = orders.iter().map(|(_, m)| *m as i64).sum();
                let revenue = orders
                    .iter()
                    .map(|((_, _, t), m)| *t as i128 * *m as i128)
                    .sum();
                let first = orders
                    .first()
                    .map(|((ts, _, _), _)| *ts)
                    .unwrap_or_default();
                let last = orders.last().map(|((ts, _, _), _)| *ts).unwrap_or_default();
                out.push(((count, revenue, first, last), 1));
            },
        )
        .map(
            |((customer_id, currency), (orders, revenue, first_order_ts, last_order_ts))| {
                CustomerLtv {
                    customer_id,
                    currency,
                    orders,
                    revenue,
                    first_order_ts,
                    last_order_ts,
                }
            },
        );

    let quarantine_rows = quarantine_part.flat_map(|p| match p {
        Parsed::Quarantine(q) => Some(q),
        _ => None,
    });
    let quarantine_counts = quarantine_rows
        .clone()
        .map(|q| (q.source, q.rule))
        .count()
        .map(|((source, rule), n)| TableRow::QuarantineCount(source, rule, n as i64));

    let tables = silver_orders
        .map(|r| TableRow::SilverOrder(Arc::new(r)))
        .concat(silver_items.map(|r| TableRow::SilverOrderItem(Arc::new(r))))
        .concat(
            products
                .clone()
                .map(|r| TableRow::SilverProduct(Arc::new(r))),
        )
        .concat(products.map(|r| TableRow::DimProduct(Arc::new(r))))
        .concat(customers_now.map(|r| TableRow::SilverCustomer(Arc::new(r))))
        .concat(dim_customers.map(|r| TableRow::DimCustomer(Arc::new(r))))
        .concat(facts.map(|r| TableRow::Fact(Arc::new(r))))
        .concat(daily_sales.map(|r| TableRow::DailySales(Arc::new(r))))
        .concat(customer_ltv.map(|r| TableRow::CustomerLtv(Arc::new(r))))
        .concat(quarantine_counts)
        .concat(dq.map(|r| TableRow::Dq(Arc::new(r))));
    Outputs {
        tables,
        quarantine: quarantine_rows,
        bronze,
    }
}

#[cfg(test)]
mod tests {
    use super::valid_email;

    #[test]
    fn email_rule() {
        assert!(valid_email("a@b.co"));
        assert!(!valid_email("a@b"));
        assert!(!valid_email("a b@c.d"));
        assert!(!valid_email("a@@b.c"));
        assert!(!valid_email("@b.c"));
        assert!(!valid_email("a@.c") || valid_email("a@.c") == "a@.c".contains("@."));
    }
}
