//! The rows of the silver and gold tables, and the quarantine. Columns are those of
//! `docs/spec/medallion.md` (§3–§4), in the same order; timestamps are UTC microseconds,
//! dates UTC day numbers, money cents.
#![allow(missing_docs)]

use serde::{Deserialize, Serialize};

use crate::money::Money;
use crate::time::Micros;

/// A valid, normalised order event (the input of silver).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderEvent {
    /// Ordering key first: the current event is the greatest `(event_ts, event_id)`.
    pub event_ts: Micros,
    /// Event id (dedup key).
    pub event_id: String,
    /// Order id.
    pub order_id: String,
    /// Customer id.
    pub customer_id: i64,
    /// Lowercase status.
    pub status: String,
    /// Order timestamp.
    pub order_ts: Micros,
    /// Uppercase currency.
    pub currency: String,
    /// Uppercase country.
    pub shipping_country: String,
    /// City as given.
    pub shipping_city: Option<String>,
    /// Trimmed, lowercase.
    pub payment_method: Option<String>,
    /// The items in order.
    pub items: Vec<Item>,
}

/// An order line of an event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Item {
    /// Product id as given.
    pub product_id: String,
    /// 1..=1000.
    pub quantity: i64,
    /// Unit price.
    pub unit_price: Money,
}

/// `silver.orders`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SilverOrder {
    pub order_id: String,
    pub customer_id: i64,
    pub status: String,
    pub order_ts: Micros,
    pub event_ts: Micros,
    pub currency: String,
    pub shipping_country: String,
    pub shipping_city: Option<String>,
    pub payment_method: Option<String>,
    pub item_count: i64,
    pub order_total: Money,
}

/// `silver.order_items`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SilverOrderItem {
    pub order_id: String,
    pub line_no: i64,
    pub product_id: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

/// `silver.products` and `gold.dim_products`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Product {
    pub product_id: String,
    pub sku: Option<String>,
    pub name: String,
    pub category: String,
    pub brand: Option<String>,
    pub list_price: Money,
    pub currency: String,
    pub active: bool,
    pub updated_at: Micros,
}

/// `silver.customers`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Customer {
    pub customer_id: i64,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub segment: Option<String>,
    pub created_at: Option<Micros>,
    pub updated_at: Option<Micros>,
}

/// `gold.dim_customers` (SCD type 2).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DimCustomer {
    pub customer_id: i64,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub segment: Option<String>,
    pub valid_from: Option<Micros>,
    pub valid_to: Option<Micros>,
    pub is_current: bool,
}

/// `gold.fact_order_items`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fact {
    pub order_id: String,
    pub line_no: i64,
    pub customer_id: i64,
    pub product_id: String,
    pub order_ts: Micros,
    pub order_date: i32,
    pub status: String,
    pub currency: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
    pub shipping_country: String,
    pub payment_method: Option<String>,
    pub category: Option<String>,
    pub brand: Option<String>,
    pub customer_segment: Option<String>,
    pub customer_country: Option<String>,
}

/// `gold.daily_sales`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DailySales {
    pub order_date: i32,
    pub category: String,
    pub shipping_country: String,
    pub currency: String,
    pub orders: i64,
    pub units: i64,
    /// Cents, `decimal(38,2)`.
    pub revenue: i128,
}

/// `gold.customer_ltv`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CustomerLtv {
    pub customer_id: i64,
    pub currency: String,
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
    pub source: String,
    pub record_key: Option<String>,
    pub rule: String,
    pub detail: String,
    /// The payload as text (invalid UTF-8 replaced; the bronze table keeps the bytes).
    pub payload: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub ingested_at: i64,
}

/// One row of any table the pipeline maintains, for sinks that take all tables at once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TableRow {
    SilverOrder(SilverOrder),
    SilverOrderItem(SilverOrderItem),
    SilverProduct(Product),
    SilverCustomer(Customer),
    DimCustomer(DimCustomer),
    DimProduct(Product),
    Fact(Fact),
    DailySales(DailySales),
    CustomerLtv(CustomerLtv),
    /// Quarantine rows per `(source, rule)`.
    QuarantineCount(String, String, i64),
    /// A `dq.results` row (append-only).
    Dq(alluvium_dq::DqResult),
}

/// A `bronze.*` row: one per Kafka message, the payload as it came.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BronzeRow {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `csv:<file>`, `postgres:<schema>.<table>`, or `kafka:<topic>` when the message does not say.
    pub source: String,
    /// The epoch that wrote the row.
    pub batch_id: u64,
    /// The raw bytes (not necessarily UTF-8).
    pub payload: Option<Vec<u8>>,
    pub ingested_at: i64,
}
