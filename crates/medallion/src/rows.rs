//! The rows of the silver and gold tables, and the quarantine. Columns are those of
//! `docs/spec/medallion.md` (§3–§4), in the same order; timestamps are UTC microseconds,
//! dates UTC day numbers, money cents.
#![allow(missing_docs)]

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Immutable text with O(1) clones: up to 23 bytes inside the value itself, longer behind an
/// `Arc`. Rows are cloned into every arrangement and join output and their ids and codes are
/// compared in every sort and merge; the pipeline's ids and codes are short, so a clone is a
/// copy of 24 bytes and a comparison reads the batch's own memory — an `Arc<str>` made each of
/// them a visit to a heap cell elsewhere (a cache miss on large arrangements).
pub type Text = smol_str::SmolStr;

use crate::money::Money;
use crate::time::Micros;

/// A valid, normalised order event (the input of silver).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderEvent {
    /// Ordering key first: the current event is the greatest `(event_ts, event_id)`.
    pub event_ts: Micros,
    /// Event id (dedup key).
    pub event_id: Text,
    /// Order id.
    pub order_id: Text,
    /// Customer id.
    pub customer_id: i64,
    /// Lowercase status.
    pub status: Text,
    /// Order timestamp.
    pub order_ts: Micros,
    /// Uppercase currency.
    pub currency: Text,
    /// Uppercase country.
    pub shipping_country: Text,
    /// City as given.
    pub shipping_city: Option<Text>,
    /// Trimmed, lowercase.
    pub payment_method: Option<Text>,
    /// The items in order.
    pub items: Vec<Item>,
}

/// An order line of an event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Item {
    /// Product id as given.
    pub product_id: Text,
    /// 1..=1000.
    pub quantity: i64,
    /// Unit price.
    pub unit_price: Money,
}

/// `silver.orders`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SilverOrder {
    pub order_id: Text,
    pub customer_id: i64,
    pub status: Text,
    pub order_ts: Micros,
    pub event_ts: Micros,
    pub currency: Text,
    pub shipping_country: Text,
    pub shipping_city: Option<Text>,
    pub payment_method: Option<Text>,
    pub item_count: i64,
    pub order_total: Money,
}

/// `silver.order_items`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SilverOrderItem {
    pub order_id: Text,
    pub line_no: i64,
    pub product_id: Text,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

/// `silver.products` and `gold.dim_products`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Product {
    pub product_id: Text,
    pub sku: Option<Text>,
    pub name: Text,
    pub category: Text,
    pub brand: Option<Text>,
    pub list_price: Money,
    pub currency: Text,
    pub active: bool,
    pub updated_at: Micros,
}

/// `silver.customers`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Customer {
    pub customer_id: i64,
    pub email: Option<Text>,
    pub full_name: Option<Text>,
    pub country: Option<Text>,
    pub city: Option<Text>,
    pub segment: Option<Text>,
    pub created_at: Option<Micros>,
    pub updated_at: Option<Micros>,
}

/// `gold.dim_customers` (SCD type 2).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DimCustomer {
    pub customer_id: i64,
    pub email: Option<Text>,
    pub full_name: Option<Text>,
    pub country: Option<Text>,
    pub city: Option<Text>,
    pub segment: Option<Text>,
    pub valid_from: Option<Micros>,
    pub valid_to: Option<Micros>,
    pub is_current: bool,
}

/// `gold.fact_order_items`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fact {
    /// Integers first: facts are sorted and compared in every arrangement they live in, and
    /// order ids share long prefixes, so comparing `order_ts` first avoids most string
    /// comparisons (the derived order only has to be total, not meaningful).
    pub order_ts: Micros,
    pub line_no: i64,
    pub customer_id: i64,
    pub order_id: Text,
    pub product_id: Text,
    pub order_date: i32,
    pub status: Text,
    pub currency: Text,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
    pub shipping_country: Text,
    pub payment_method: Option<Text>,
    pub category: Option<Text>,
    pub brand: Option<Text>,
    pub customer_segment: Option<Text>,
    pub customer_country: Option<Text>,
}

/// `gold.daily_sales`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DailySales {
    pub order_date: i32,
    pub category: Text,
    pub shipping_country: Text,
    pub currency: Text,
    pub orders: i64,
    pub units: i64,
    /// Cents, `decimal(38,2)`.
    pub revenue: i128,
}

/// `gold.customer_ltv`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CustomerLtv {
    pub customer_id: i64,
    pub currency: Text,
    pub orders: i64,
    /// Cents, `decimal(38,2)`.
    pub revenue: i128,
    pub first_order_ts: Micros,
    pub last_order_ts: Micros,
}

/// Why a message was rejected: the rule, a short message, and the record key when readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The rule name of spec §3 (`json_parse`, `missing_field`, ...).
    pub rule: &'static str,
    /// A short human message.
    pub detail: String,
    /// The order or product id, when it could be read.
    pub record_key: Option<String>,
}

/// `silver.quarantine`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuarantineRow {
    pub source: Text,
    pub record_key: Option<Text>,
    pub rule: Text,
    pub detail: Text,
    /// The payload as text (invalid UTF-8 replaced; the bronze table keeps the bytes).
    pub payload: Text,
    pub topic: Text,
    pub partition: i32,
    pub offset: i64,
    pub ingested_at: i64,
}

/// One row of any table the pipeline maintains, for sinks that take all tables at once.
///
/// Rows are behind `Arc`s: sinks sort and move every change of an epoch, and a 48-byte enum
/// moves far faster than the 224-byte largest row. Its hash covers the table and the row's
/// key only (see the `Hash` impl).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TableRow {
    SilverOrder(Arc<SilverOrder>),
    SilverOrderItem(Arc<SilverOrderItem>),
    SilverProduct(Arc<Product>),
    SilverCustomer(Arc<Customer>),
    DimCustomer(Arc<DimCustomer>),
    DimProduct(Arc<Product>),
    Fact(Arc<Fact>),
    DailySales(Arc<DailySales>),
    CustomerLtv(Arc<CustomerLtv>),
    /// Quarantine rows per `(source, rule)`.
    QuarantineCount(Text, Text, i64),
    /// A `dq.results` row (append-only).
    Dq(Arc<alluvium_dq::DqResult>),
}

/// The table and the row's key, not every column: sinks hash every change of an epoch
/// (to route it to a worker and to consolidate it), and hashing whole facts cost more than
/// the rest of consolidation (perf). Equal rows have equal keys, so equal hashes; the versions
/// of one key in an epoch (an update's `-old`/`+new`) share a hash and are told apart by `Eq`.
impl std::hash::Hash for TableRow {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            TableRow::SilverOrder(o) => o.order_id.hash(state),
            TableRow::SilverOrderItem(i) => (&i.order_id, i.line_no).hash(state),
            TableRow::SilverProduct(p) | TableRow::DimProduct(p) => p.product_id.hash(state),
            TableRow::SilverCustomer(c) => c.customer_id.hash(state),
            TableRow::DimCustomer(c) => (c.customer_id, c.valid_from).hash(state),
            TableRow::Fact(f) => (&f.order_id, f.line_no).hash(state),
            TableRow::DailySales(d) => {
                (d.order_date, &d.category, &d.shipping_country, &d.currency).hash(state)
            }
            TableRow::CustomerLtv(l) => (l.customer_id, &l.currency).hash(state),
            TableRow::QuarantineCount(source, rule, _) => (source, rule).hash(state),
            TableRow::Dq(d) => (d.epoch, &d.table_name, &d.rule).hash(state),
        }
    }
}

/// A `bronze.*` row: one per Kafka message, the payload as it came.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BronzeRow {
    pub topic: Text,
    pub partition: i32,
    pub offset: i64,
    /// `csv:<file>`, `postgres:<schema>.<table>`, or `kafka:<topic>` when the message does not say.
    pub source: Text,
    /// The epoch that wrote the row.
    pub batch_id: u64,
    /// The raw bytes (not necessarily UTF-8).
    pub payload: Option<Vec<u8>>,
    pub ingested_at: i64,
}
