//! The gold tables of the PostgreSQL warehouse (spec §4): their schema, keys, and how
//! [`TableRow`]s map onto them for [`alluvium_connectors::warehouse::PgSink`].

use alluvium_connectors::warehouse::{PgSink, PgTable, PgType, PgValue};

use crate::rows::{TableRow, Text};

fn table(name: &str, key: usize, columns: &[(&str, PgType)]) -> PgTable {
    PgTable {
        name: name.into(),
        columns: columns.iter().map(|(c, t)| (c.to_string(), *t)).collect(),
        key,
    }
}

/// The five gold tables, primary keys first.
pub fn gold_tables() -> Vec<PgTable> {
    use PgType::*;
    let money = Numeric(18, 2);
    let sum = Numeric(38, 2);
    vec![
        table(
            "gold.dim_customers",
            2,
            &[
                ("customer_id", BigInt),
                ("valid_from", Timestamptz),
                ("email", Text),
                ("full_name", Text),
                ("country", Text),
                ("city", Text),
                ("segment", Text),
                ("valid_to", Timestamptz),
                ("is_current", Boolean),
            ],
        ),
        table(
            "gold.dim_products",
            1,
            &[
                ("product_id", Text),
                ("sku", Text),
                ("name", Text),
                ("category", Text),
                ("brand", Text),
                ("list_price", money),
                ("currency", Text),
                ("active", Boolean),
                ("updated_at", Timestamptz),
            ],
        ),
        table(
            "gold.fact_order_items",
            2,
            &[
                ("order_id", Text),
                ("line_no", BigInt),
                ("customer_id", BigInt),
                ("product_id", Text),
                ("order_ts", Timestamptz),
                ("order_date", Date),
                ("status", Text),
                ("currency", Text),
                ("quantity", BigInt),
                ("unit_price", money),
                ("line_total", money),
                ("shipping_country", Text),
                ("payment_method", Text),
                ("category", Text),
                ("brand", Text),
                ("customer_segment", Text),
                ("customer_country", Text),
            ],
        ),
        table(
            "gold.daily_sales",
            4,
            &[
                ("order_date", Date),
                ("category", Text),
                ("shipping_country", Text),
                ("currency", Text),
                ("orders", BigInt),
                ("units", BigInt),
                ("revenue", sum),
            ],
        ),
        table(
            "gold.customer_ltv",
            2,
            &[
                ("customer_id", BigInt),
                ("currency", Text),
                ("orders", BigInt),
                ("revenue", sum),
                ("first_order_ts", Timestamptz),
                ("last_order_ts", Timestamptz),
            ],
        ),
    ]
}

/// `dq.results`: append-only, one row per rule per table per epoch (never updated).
pub fn dq_results_table() -> PgTable {
    use PgType::*;
    table(
        "dq.results",
        3,
        &[
            ("epoch", BigInt),
            ("table_name", Text),
            ("rule", Text),
            ("severity", Text),
            ("checked", BigInt),
            ("failed", BigInt),
            ("threshold", BigInt),
            ("passed", Boolean),
            ("evaluated_at", Timestamptz),
        ],
    )
}

/// Every table the pipeline keeps in the warehouse: the gold tables, then `dq.results`.
pub fn warehouse_tables() -> Vec<PgTable> {
    let mut tables = gold_tables();
    tables.push(dq_results_table());
    tables
}

// `String::from(&str)`, not `to_string()`: `Text` has no specialised `to_string`, so that
// went through the formatting machinery for every column of every row (perf).
// Text is the same inline string type on both sides: a copy, no allocation for short values.
fn t(v: &Text) -> PgValue {
    PgValue::Text(Some(v.clone()))
}
fn ot(v: &Option<Text>) -> PgValue {
    PgValue::Text(v.clone())
}
fn s(v: &str) -> PgValue {
    PgValue::Text(Some(v.into()))
}
fn i(v: i64) -> PgValue {
    PgValue::Int(Some(v))
}
fn ts(micros: i64) -> PgValue {
    PgValue::Timestamp(Some(micros))
}
fn date(days: i32) -> PgValue {
    PgValue::Date(Some(days))
}
fn money(cents: i128) -> PgValue {
    PgValue::Decimal(Some(cents))
}

/// The warehouse row of a table row (index into [`warehouse_tables`]), `None` for rows that
/// are neither gold nor `dq.results`. A `dim_customers`
/// version without `valid_from` (a change without `updated_at`) has no key and is skipped.
pub fn gold_row(row: &TableRow) -> Option<(usize, Vec<PgValue>)> {
    Some(match row {
        TableRow::DimCustomer(d) => (
            0,
            vec![
                i(d.customer_id),
                ts(d.valid_from?),
                ot(&d.email),
                ot(&d.full_name),
                ot(&d.country),
                ot(&d.city),
                ot(&d.segment),
                PgValue::Timestamp(d.valid_to),
                PgValue::Bool(Some(d.is_current)),
            ],
        ),
        TableRow::DimProduct(p) => (
            1,
            vec![
                t(&p.product_id),
                ot(&p.sku),
                t(&p.name),
                t(&p.category),
                ot(&p.brand),
                money(i128::from(p.list_price.0)),
                t(&p.currency),
                PgValue::Bool(Some(p.active)),
                ts(p.updated_at),
            ],
        ),
        TableRow::Fact(f) => (
            2,
            vec![
                t(&f.order_id),
                i(f.line_no),
                i(f.customer_id),
                t(&f.product_id),
                ts(f.order_ts),
                date(f.order_date),
                t(&f.status),
                t(&f.currency),
                i(f.quantity),
                money(i128::from(f.unit_price.0)),
                money(i128::from(f.line_total.0)),
                t(&f.shipping_country),
                ot(&f.payment_method),
                ot(&f.category),
                ot(&f.brand),
                ot(&f.customer_segment),
                ot(&f.customer_country),
            ],
        ),
        TableRow::DailySales(d) => (
            3,
            vec![
                date(d.order_date),
                t(&d.category),
                t(&d.shipping_country),
                t(&d.currency),
                i(d.orders),
                i(d.units),
                money(d.revenue),
            ],
        ),
        TableRow::CustomerLtv(l) => (
            4,
            vec![
                i(l.customer_id),
                t(&l.currency),
                i(l.orders),
                money(l.revenue),
                ts(l.first_order_ts),
                ts(l.last_order_ts),
            ],
        ),
        TableRow::Dq(d) => (
            5,
            vec![
                i(i64::try_from(d.epoch).unwrap_or(i64::MAX)),
                s(&d.table_name),
                s(&d.rule),
                s(d.severity.as_str()),
                i(d.checked),
                i(d.failed),
                PgValue::Int(d.threshold),
                PgValue::Bool(Some(d.passed)),
                ts(d.evaluated_at),
            ],
        ),
        _ => return None,
    })
}

/// The warehouse sink of the medallion pipeline.
pub fn warehouse_sink(url: &str, pipeline: &str) -> PgSink<TableRow> {
    PgSink::new(url, pipeline, warehouse_tables(), gold_row)
}
