//! The tables as CSV files, in the names, columns and value formats of the fixtures'
//! `expected/` folder: `\N` for NULL, `YYYY-MM-DDTHH:MM:SS.ffffffZ`, `YYYY-MM-DD`, two-place
//! decimals, `true`/`false`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::money::format_cents;
use crate::rows::TableRow;
use crate::time::{format_date, format_ts, Micros};

const NULL: &str = "\\N";

fn opt(v: &Option<crate::rows::Text>) -> String {
    v.as_deref().unwrap_or(NULL).to_string()
}

fn opt_ts(v: Option<Micros>) -> String {
    v.map(format_ts).unwrap_or_else(|| NULL.into())
}

/// The rules listed in `quarantine_counts.csv` even when nothing broke them.
pub(crate) const RULES: [(&str, &[&str]); 2] = [
    ("orders", &crate::orders::RULES),
    ("products", &crate::products::RULES),
];

/// A table as `(file name, header, rows)`.
pub type CsvTable = (&'static str, Vec<&'static str>, Vec<Vec<String>>);

/// Every table as `(file name, header, rows)`, rows sorted.
pub fn tables<'a>(rows: impl IntoIterator<Item = &'a TableRow>) -> Vec<CsvTable> {
    let mut by_file: BTreeMap<&'static str, Vec<Vec<String>>> = BTreeMap::new();
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (source, rules) in RULES {
        for rule in rules {
            counts.insert((source.to_string(), rule.to_string()), 0);
        }
    }
    for row in rows {
        let (file, cells): (&'static str, Vec<String>) = match row {
            TableRow::SilverOrder(o) => (
                "silver_orders.csv",
                vec![
                    o.order_id.to_string(),
                    o.customer_id.to_string(),
                    o.status.to_string(),
                    format_ts(o.order_ts),
                    format_ts(o.event_ts),
                    o.currency.to_string(),
                    o.shipping_country.to_string(),
                    opt(&o.shipping_city),
                    opt(&o.payment_method),
                    o.item_count.to_string(),
                    o.order_total.to_string(),
                ],
            ),
            TableRow::SilverOrderItem(i) => (
                "silver_order_items.csv",
                vec![
                    i.order_id.to_string(),
                    i.line_no.to_string(),
                    i.product_id.to_string(),
                    i.quantity.to_string(),
                    i.unit_price.to_string(),
                    i.line_total.to_string(),
                ],
            ),
            TableRow::SilverProduct(p) | TableRow::DimProduct(p) => (
                if matches!(row, TableRow::SilverProduct(_)) {
                    "silver_products.csv"
                } else {
                    "dim_products.csv"
                },
                vec![
                    p.product_id.to_string(),
                    opt(&p.sku),
                    p.name.to_string(),
                    p.category.to_string(),
                    opt(&p.brand),
                    p.list_price.to_string(),
                    p.currency.to_string(),
                    p.active.to_string(),
                    format_ts(p.updated_at),
                ],
            ),
            TableRow::SilverCustomer(c) => (
                "silver_customers.csv",
                vec![
                    c.customer_id.to_string(),
                    opt(&c.email),
                    opt(&c.full_name),
                    opt(&c.country),
                    opt(&c.city),
                    opt(&c.segment),
                    opt_ts(c.created_at),
                    opt_ts(c.updated_at),
                ],
            ),
            TableRow::DimCustomer(d) => (
                "dim_customers.csv",
                vec![
                    d.customer_id.to_string(),
                    opt(&d.email),
                    opt(&d.full_name),
                    opt(&d.country),
                    opt(&d.city),
                    opt(&d.segment),
                    opt_ts(d.valid_from),
                    opt_ts(d.valid_to),
                    d.is_current.to_string(),
                ],
            ),
            TableRow::Fact(f) => (
                "fact_order_items.csv",
                vec![
                    f.order_id.to_string(),
                    f.line_no.to_string(),
                    f.customer_id.to_string(),
                    f.product_id.to_string(),
                    format_ts(f.order_ts),
                    format_date(f.order_date),
                    f.status.to_string(),
                    f.currency.to_string(),
                    f.quantity.to_string(),
                    f.unit_price.to_string(),
                    f.line_total.to_string(),
                    f.shipping_country.to_string(),
                    opt(&f.payment_method),
                    opt(&f.category),
                    opt(&f.brand),
                    opt(&f.customer_segment),
                    opt(&f.customer_country),
                ],
            ),
            TableRow::DailySales(d) => (
                "daily_sales.csv",
                vec![
                    format_date(d.order_date),
                    d.category.to_string(),
                    d.shipping_country.to_string(),
                    d.currency.to_string(),
                    d.orders.to_string(),
                    d.units.to_string(),
                    format_cents(d.revenue),
                ],
            ),
            TableRow::CustomerLtv(l) => (
                "customer_ltv.csv",
                vec![
                    l.customer_id.to_string(),
                    l.currency.to_string(),
                    l.orders.to_string(),
                    format_cents(l.revenue),
                    format_ts(l.first_order_ts),
                    format_ts(l.last_order_ts),
                ],
            ),
            TableRow::QuarantineCount(source, rule, n) => {
                counts.insert((source.to_string(), rule.to_string()), *n);
                continue;
            }
            TableRow::Dq(_) => continue,
        };
        by_file.entry(file).or_default().push(cells);
    }
    by_file.insert(
        "quarantine_counts.csv",
        counts
            .into_iter()
            .map(|((s, r), n)| vec![s, r, n.to_string()])
            .collect(),
    );
    let headers: [(&str, &[&str]); 11] = [
        (
            "silver_orders.csv",
            &[
                "order_id",
                "customer_id",
                "status",
                "order_ts",
                "event_ts",
                "currency",
                "shipping_country",
                "shipping_city",
                "payment_method",
                "item_count",
                "order_total",
            ],
        ),
        (
            "silver_order_items.csv",
            &[
                "order_id",
                "line_no",
                "product_id",
                "quantity",
                "unit_price",
                "line_total",
            ],
        ),
        (
            "silver_products.csv",
            &[
                "product_id",
                "sku",
                "name",
                "category",
                "brand",
                "list_price",
                "currency",
                "active",
                "updated_at",
            ],
        ),
        (
            "silver_customers.csv",
            &[
                "customer_id",
                "email",
                "full_name",
                "country",
                "city",
                "segment",
                "created_at",
                "updated_at",
            ],
        ),
        (
            "dim_customers.csv",
            &[
                "customer_id",
                "email",
                "full_name",
                "country",
                "city",
                "segment",
                "valid_from",
                "valid_to",
                "is_current",
            ],
        ),
        (
            "dim_products.csv",
            &[
                "product_id",
                "sku",
                "name",
                "category",
                "brand",
                "list_price",
                "currency",
                "active",
                "updated_at",
            ],
        ),
        (
            "fact_order_items.csv",
            &[
                "order_id",
                "line_no",
                "customer_id",
                "product_id",
                "order_ts",
                "order_date",
                "status",
                "currency",
                "quantity",
                "unit_price",
                "line_total",
                "shipping_country",
                "payment_method",
                "category",
                "brand",
                "customer_segment",
                "customer_country",
            ],
        ),
        (
            "daily_sales.csv",
            &[
                "order_date",
                "category",
                "shipping_country",
                "currency",
                "orders",
                "units",
                "revenue",
            ],
        ),
        (
            "customer_ltv.csv",
            &[
                "customer_id",
                "currency",
                "orders",
                "revenue",
                "first_order_ts",
                "last_order_ts",
            ],
        ),
        ("quarantine_counts.csv", &["source", "rule", "count"]),
        ("", &[]),
    ];
    headers
        .into_iter()
        .filter(|(f, _)| !f.is_empty())
        .map(|(file, header)| {
            let mut rows = by_file.remove(file).unwrap_or_default();
            rows.sort();
            (file, header.to_vec(), rows)
        })
        .collect()
}

/// Writes every table as `dir/<file>.csv`.
pub fn write_csv<'a>(
    dir: &Path,
    rows: impl IntoIterator<Item = &'a TableRow>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, header, rows) in tables(rows) {
        let mut w = csv::Writer::from_path(dir.join(file)).map_err(std::io::Error::other)?;
        w.write_record(&header).map_err(std::io::Error::other)?;
        for r in rows {
            w.write_record(&r).map_err(std::io::Error::other)?;
        }
        w.flush()?;
    }
    Ok(())
}
