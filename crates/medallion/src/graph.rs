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
use alluvium_dq::{dq_results, gate, live_predicate, reconcile, referential, Check, DqResult};
use alluvium_engine::latest::latest_by_key;
use alluvium_engine::left_join::left_join;
use alluvium_engine::shared::Shared;
use alluvium_engine::{Epoch, WorkerContext};
use differential_dataflow::collection::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Partition;
use timely::dataflow::StreamVec;

use crate::codes::Currencies;
use crate::customers::{self, Change};
use crate::products::{self, ProductVersion};
use crate::quality::{table_name, MedallionRules, CUSTOMERS, ORDERS, PRODUCTS};
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
    /// The data-quality rules (built-in, with the rules file applied).
    pub rules: Arc<MedallionRules>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            topics: Topics::with_prefix(""),
            currencies: Currencies::default(),
            rules: Arc::new(MedallionRules::default()),
        }
    }
}

/// A record after parsing and validation. The kinds are boxed (the order shared, as it stays
/// from here on): a record moves through the parser's output and the routing, and moving
/// ~300 bytes per record there was most of the routing's time (`Partition`, 6 % of a worker).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Parsed {
    Order(Shared<OrderEvent>),
    Product(Box<ProductVersion>),
    Customer(Box<Change>),
    Quarantine(Box<QuarantineRow>),
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
    Parsed::Quarantine(Box::new(QuarantineRow {
        source: source.into(),
        record_key: rej.record_key.map(Into::into),
        rule: rej.rule.into(),
        detail: rej.detail.into(),
        payload: r
            .payload
            .as_deref()
            .map(|p| Text::from(String::from_utf8_lossy(p)))
            .unwrap_or_else(|| Text::from("")),
        topic: Text::from(&*r.topic),
        partition: r.partition,
        offset: r.offset,
        ingested_at: r.ingested_at,
    }))
}

/// A message a declared `drop` rule rejected, for the quarantine.
fn dropped_by(source: &str, r: &KafkaRecord, key: &Text, rule: &str) -> Parsed {
    let rejection = Rejection {
        rule: "",
        detail: format!("failed the data-quality rule `{rule}`"),
        record_key: Some(key.to_string()),
    };
    match quarantine(source, r, rejection) {
        Parsed::Quarantine(mut q) => {
            q.rule = Text::from(rule);
            Parsed::Quarantine(q)
        }
        other => other,
    }
}

/// Parses and validates one record into `out`: the parsed record (or its quarantine row) and
/// its `dq.results` checks — one per checked row, one per failed rule.
fn parse_into(r: KafkaRecord, config: &PipelineConfig, out: &mut Vec<Parsed>) {
    let rules = &config.rules;
    let topics = &config.topics;
    let topic: &str = &r.topic;
    if topic == topics.orders {
        out.push(Parsed::Check(Check::row(table_name(ORDERS))));
        match crate::orders::validate(r.payload.as_deref().unwrap_or(b""), &config.currencies) {
            Ok(e) => {
                let verdict = rules.orders.check(&e);
                for &i in &verdict.failed {
                    let name = &rules.orders.rules()[i].def.name;
                    out.push(Parsed::Check(rules.failure(ORDERS, name)));
                }
                match verdict.dropped_by {
                    Some(i) => {
                        let name = &rules.orders.rules()[i].def.name;
                        out.push(Parsed::Check(rules.failure(ORDERS, name)));
                        out.push(dropped_by("orders", &r, &e.order_id, name));
                    }
                    None => out.push(Parsed::Order(Shared::new(e))),
                }
            }
            Err(rej) => {
                out.push(Parsed::Check(rules.failure(ORDERS, rej.rule)));
                out.push(quarantine("orders", &r, rej));
            }
        }
    } else if topic == topics.products {
        out.push(Parsed::Check(Check::row(table_name(PRODUCTS))));
        match products::validate(r.payload.as_deref().unwrap_or(b""), &config.currencies) {
            Ok(v) => {
                let verdict = rules.products.check(&v.1);
                for &i in &verdict.failed {
                    let name = &rules.products.rules()[i].def.name;
                    out.push(Parsed::Check(rules.failure(PRODUCTS, name)));
                }
                match verdict.dropped_by {
                    Some(i) => {
                        let name = &rules.products.rules()[i].def.name;
                        out.push(Parsed::Check(rules.failure(PRODUCTS, name)));
                        out.push(dropped_by("products", &r, &v.1.product_id, name));
                    }
                    None => out.push(Parsed::Product(Box::new(v))),
                }
            }
            Err(rej) => {
                out.push(Parsed::Check(rules.failure(PRODUCTS, rej.rule)));
                out.push(quarantine("products", &r, rej));
            }
        }
    } else if topic == topics.customers {
        match customers::parse(
            r.payload.as_deref(),
            r.key.as_deref(),
            r.partition,
            r.offset,
        ) {
            Ok(Some(c)) => {
                out.push(Parsed::Check(Check::row(table_name(CUSTOMERS))));
                if let Some(row) = &c.row {
                    // Customers are never quarantined (spec §3.3): every failure only counts.
                    let verdict = rules.customers.check(row);
                    for &i in &verdict.failed {
                        let name = &rules.customers.rules()[i].def.name;
                        out.push(Parsed::Check(rules.failure(CUSTOMERS, name)));
                    }
                }
                out.push(Parsed::Customer(Box::new(c)));
            }
            // A tombstone: nothing to check.
            Ok(None) => {}
            Err(rej) => {
                out.push(Parsed::Check(Check::row(table_name(CUSTOMERS))));
                out.push(Parsed::Check(rules.failure(CUSTOMERS, rej.rule)));
                out.push(quarantine("customers", &r, rej));
            }
        }
    }
}

/// A customer's segment and country, as the facts carry them.
type CustomerAttrs = (Option<Text>, Option<Text>);

/// An order line before its product is joined: the order (shared with the orders'
/// arrangements), the line number, the item, and the customer's attributes (one per order).
/// The product join's arrangement holds every live line: as a fact of its own (ten strings
/// and a heap block each) the lines were its largest memory (docs/performance.md, stop 19).
type Line = (Shared<OrderEvent>, i64, Item, Arc<CustomerAttrs>);

/// `(orders, revenue cents, first order_ts, last order_ts)` of a customer and currency.
type LtvAggregate = (i64, i128, i64, i64);

fn not_revenue(status: &str) -> bool {
    status == "cancelled" || status == "refunded"
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
    /// Every `dq.results` row, after the gate (also in `tables`). A sink must not commit an
    /// epoch before these have passed it: give its positions
    /// [`alluvium_engine::barrier::after`] this stream.
    pub dq: VecCollection<'s, Epoch, DqResult>,
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
                topic: Text::from(&*r.topic),
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
    let records = alluvium_engine::metrics::metered(records, "records");
    let cfg = config.clone();
    // Parse once, then route each kind to its own stream: no branch sees (or clones) the
    // records of another.
    // One buffer for every record's output, rather than a `Vec` per record (`flat_map`).
    let parsed: StreamVec<'s, Epoch, (Parsed, Epoch, isize)> =
        records.inner.unary(Pipeline, "Parse", move |_cap, _info| {
            let mut out: Vec<Parsed> = Vec::new();
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let mut session = output.session(&cap);
                    for (r, t, diff) in data.flat_map(|batch| batch.drain(..)) {
                        parse_into(r, &cfg, &mut out);
                        session.give_iterator(out.drain(..).map(|p| (p, t, diff)));
                    }
                });
            }
        });
    let mut parts = parsed
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
        Arc::new(config.rules.row_results.clone()),
    );

    // Silver orders: the valid event with the greatest (event_ts, event_id) per order.
    // Values reach `reduce` sorted, and `OrderEvent` orders by (event_ts, event_id) first, so
    // the current event is the last one; duplicates of an event collapse to one value.
    let events = order_part.flat_map(|p| match p {
        // Shared from here on: the arrangement of orders by customer clones every event on
        // each merge of its batches, and an event owns eight strings and a vector of items
        // (deep clones made those merges the slowest steps of small epochs, up to 0.6 s).
        // `Shared`, not `Arc`: arrangements compare an event with itself all the time (a
        // retraction meets its insertion, a line its order's other lines), and `Arc`'s `Ord`
        // then compared every field and item (the product join a third faster end to end,
        // stop 20).
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
        order_id: e.order_id.clone(),
        customer_id: e.customer_id,
        status: e.status.clone(),
        order_ts: e.order_ts,
        event_ts: e.event_ts,
        currency: e.currency.clone(),
        shipping_country: e.shipping_country.clone(),
        shipping_city: e.shipping_city.clone(),
        payment_method: e.payment_method.clone(),
    });
    let silver_items = current.clone().flat_map(|(_, e)| {
        (0..e.items.len()).map(move |i| {
            let item = &e.items[i];
            SilverOrderItem {
                order_id: e.order_id.clone(),
                line_no: i as i64 + 1,
                line_total: item.unit_price.times(item.quantity),
                product_id: item.product_id.clone(),
                quantity: item.quantity,
                unit_price: item.unit_price,
            }
        })
    });

    // Silver products: the valid version with the greatest (updated_at, file, line).
    let products = product_part.flat_map(|p| match p {
        Parsed::Product(version) => {
            let (order, product) = *version;
            Some((product.product_id.clone(), (order, product)))
        }
        _ => None,
    });
    let products =
        latest_by_key(products, "LatestProduct", ctx).map(|(_, (_, p)): (Text, ProductVersion)| p);

    // Silver customers and dim_customers, from the change stream in log order.
    let changes = customer_part.flat_map(|p| match p {
        Parsed::Customer(c) => Some((c.customer_id, *c)),
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

    // Facts: order lines with the customer's and the product's current attributes (left
    // joins). The customer is joined per order, before the order becomes lines: the orders
    // arranged by customer are fewer and smaller than their lines, and only the product join
    // arranges the lines.
    let customer_attrs = customers_now
        .clone()
        .map(|c| (c.customer_id, (c.segment.clone(), c.country.clone())));
    let lines = left_join(
        current.map(|(_, e)| (e.customer_id, e)),
        customer_attrs,
        |e: &Shared<OrderEvent>, attrs: Option<&CustomerAttrs>| {
            let customer = Arc::new(attrs.cloned().unwrap_or((None, None)));
            e.items
                .iter()
                .enumerate()
                .map(|(i, item)| (e.clone(), i as i64 + 1, item.clone(), customer.clone()))
                .collect::<Vec<Line>>()
        },
    )
    .flat_map(|lines| lines);
    let product_attrs = products
        .clone()
        .map(|p| (p.product_id.clone(), (p.category.clone(), p.brand.clone())));
    let facts = left_join(
        lines.map(|line| (line.2.product_id.clone(), line)),
        product_attrs,
        |(e, line_no, item, customer): &Line, attrs: Option<&(Text, Option<Text>)>| {
            let (category, brand) = match attrs {
                Some((category, brand)) => (Some(category.clone()), brand.clone()),
                None => (None, None),
            };
            // Shared from here on: the facts fan out to five consumers (aggregates, rules,
            // the sinks), and cloning a fact cloned ten strings (perf: 5 % in clones/drops).
            Arc::new(Fact {
                order_id: e.order_id.clone(),
                line_no: *line_no,
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
                category,
                brand,
                customer_segment: customer.0.clone(),
                customer_country: customer.1.clone(),
            })
        },
    );

    // Gold aggregates over orders that count as revenue.
    // Sums carried in differences (`sales`): an epoch's cost does not grow with a day's lines.
    let daily_sales =
        crate::sales::daily_sales(facts.clone().filter(|f| !not_revenue(&f.status)).map(|f| {
            let category = f.category.clone().unwrap_or_else(|| "unknown".into());
            (
                (
                    f.order_date,
                    category,
                    f.shipping_country.clone(),
                    f.currency.clone(),
                ),
                f.order_id.clone(),
                f.quantity,
                f.line_total.0,
            )
        }));
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
        Parsed::Quarantine(q) => Some(*q),
        _ => None,
    });
    let quarantine_counts = quarantine_rows
        .clone()
        .map(|q| (q.source, q.rule))
        .count()
        .map(|((source, rule), n)| TableRow::QuarantineCount(source, rule, n as i64));

    // Collection rules over the live tables, then every result through the gate (which
    // stops the run, before the epoch commits, on a failing `fail` rule).
    let rules = &config.rules;
    let (orphan_orders, _) = referential(
        silver_orders
            .clone()
            .map(|o| (o.customer_id, o.order_id.clone())),
        customers_now.clone().map(|c| c.customer_id),
        rules.orphan_orders.clone(),
    );
    // A line whose product is unknown is a fact the product join left without a category
    // (products always have one): no second arrangement of the lines needed.
    let orphan_lines = live_predicate(
        facts.clone(),
        rules.orphan_order_lines.clone(),
        |f: &Arc<Fact>| f.category.is_some(),
    );
    let revenue = reconcile(
        daily_sales
            .clone()
            // Truncating: the rule compares sums modulo 2^64 (see `reconcile`).
            .map(|d| d.revenue as i64),
        facts
            .clone()
            .filter(|f| !not_revenue(&f.status))
            .map(|f| f.line_total.0),
        rules.revenue_reconciles.clone(),
    );
    let dq = gate(
        dq.concat(orphan_orders)
            .concat(orphan_lines)
            .concat(revenue),
        ctx,
    );

    // Every table's changes are counted per stage (`alluvium_stage_records_total`).
    use alluvium_engine::metrics::metered as m;
    let tables = m(silver_orders, "silver.orders")
        .map(|r| TableRow::SilverOrder(Arc::new(r)))
        .concat(
            m(silver_items, "silver.order_items").map(|r| TableRow::SilverOrderItem(Arc::new(r))),
        )
        .concat(
            m(products.clone(), "silver.products").map(|r| TableRow::SilverProduct(Arc::new(r))),
        )
        .concat(products.map(|r| TableRow::DimProduct(Arc::new(r))))
        .concat(m(customers_now, "silver.customers").map(|r| TableRow::SilverCustomer(Arc::new(r))))
        .concat(m(dim_customers, "gold.dim_customers").map(|r| TableRow::DimCustomer(Arc::new(r))))
        .concat(m(facts, "gold.fact_order_items").map(TableRow::Fact))
        .concat(m(daily_sales, "gold.daily_sales").map(|r| TableRow::DailySales(Arc::new(r))))
        .concat(m(customer_ltv, "gold.customer_ltv").map(|r| TableRow::CustomerLtv(Arc::new(r))))
        .concat(quarantine_counts)
        .concat(dq.clone().map(|r| TableRow::Dq(Arc::new(r))));
    let quarantine_rows = m(quarantine_rows, "silver.quarantine");
    Outputs {
        tables,
        quarantine: quarantine_rows,
        bronze,
        dq,
    }
}
