//! The Iceberg tables of the medallion pipeline (spec §2–§5): their schemas, partitioning,
//! and how the pipeline's rows map onto them for
//! [`alluvium_connectors::lake::IcebergSink`].
//!
//! Partitioning follows how the tables are read and how they change: bronze and quarantine
//! by ingestion day (append-only, pruned by time), facts and daily sales by order day (each
//! epoch mostly touches recent days, so compaction mostly rewrites recent partitions), orders by order day,
//! order lines and lifetime values by a hash bucket of their key; the small dimension and
//! current-state tables are not partitioned.

use std::sync::Arc;

use alluvium_connectors::lake::lease::WriterLease;
use alluvium_connectors::lake::Transform;
use alluvium_connectors::lake::{
    Column, ColumnType, IcebergSink, LakeConfig, LakeError, Row, TableDef, TableMode, Value,
};

use crate::graph::Topics;
use crate::rows::{BronzeRow, QuarantineRow, TableRow, Text};

use ColumnType::*;

const MONEY: ColumnType = Decimal(18, 2);
const SUM: ColumnType = Decimal(38, 2);

fn req(name: &str, ty: ColumnType) -> Column {
    Column::required(name, ty)
}
fn opt(name: &str, ty: ColumnType) -> Column {
    Column::optional(name, ty)
}

fn product_columns() -> Vec<Column> {
    vec![
        req("product_id", String),
        opt("sku", String),
        req("name", String),
        req("category", String),
        opt("brand", String),
        req("list_price", MONEY),
        req("currency", String),
        req("active", Bool),
        req("updated_at", Timestamptz),
    ]
}

/// The current-state silver and gold tables and `dq.results`, in the order
/// [`table_row`] numbers them.
pub fn table_defs() -> Vec<TableDef> {
    use TableMode::*;
    vec![
        TableDef::new(
            "silver",
            "orders",
            CurrentState,
            vec![
                req("order_id", String),
                req("customer_id", Long),
                req("status", String),
                req("order_ts", Timestamptz),
                req("event_ts", Timestamptz),
                req("currency", String),
                req("shipping_country", String),
                opt("shipping_city", String),
                opt("payment_method", String),
                req("item_count", Long),
                req("order_total", MONEY),
            ],
        )
        .partitioned_by("order_ts", Transform::Day),
        TableDef::new(
            "silver",
            "order_items",
            CurrentState,
            vec![
                req("order_id", String),
                req("line_no", Long),
                req("product_id", String),
                req("quantity", Long),
                req("unit_price", MONEY),
                req("line_total", MONEY),
            ],
        )
        .partitioned_by("order_id", Transform::Bucket(4)),
        TableDef::new("silver", "products", CurrentState, product_columns()),
        TableDef::new(
            "silver",
            "customers",
            CurrentState,
            vec![
                req("customer_id", Long),
                opt("email", String),
                opt("full_name", String),
                opt("country", String),
                opt("city", String),
                opt("segment", String),
                opt("created_at", Timestamptz),
                opt("updated_at", Timestamptz),
            ],
        ),
        TableDef::new(
            "gold",
            "dim_customers",
            CurrentState,
            vec![
                req("customer_id", Long),
                opt("email", String),
                opt("full_name", String),
                opt("country", String),
                opt("city", String),
                opt("segment", String),
                opt("valid_from", Timestamptz),
                opt("valid_to", Timestamptz),
                req("is_current", Bool),
            ],
        ),
        TableDef::new("gold", "dim_products", CurrentState, product_columns()),
        TableDef::new(
            "gold",
            "fact_order_items",
            CurrentState,
            vec![
                req("order_id", String),
                req("line_no", Long),
                req("customer_id", Long),
                req("product_id", String),
                req("order_ts", Timestamptz),
                req("order_date", Date),
                req("status", String),
                req("currency", String),
                req("quantity", Long),
                req("unit_price", MONEY),
                req("line_total", MONEY),
                req("shipping_country", String),
                opt("payment_method", String),
                opt("category", String),
                opt("brand", String),
                opt("customer_segment", String),
                opt("customer_country", String),
            ],
        )
        .partitioned_by("order_date", Transform::Day),
        TableDef::new(
            "gold",
            "daily_sales",
            CurrentState,
            vec![
                req("order_date", Date),
                req("category", String),
                req("shipping_country", String),
                req("currency", String),
                req("orders", Long),
                req("units", Long),
                req("revenue", SUM),
            ],
        )
        .partitioned_by("order_date", Transform::Day),
        TableDef::new(
            "gold",
            "customer_ltv",
            CurrentState,
            vec![
                req("customer_id", Long),
                req("currency", String),
                req("orders", Long),
                req("revenue", SUM),
                req("first_order_ts", Timestamptz),
                req("last_order_ts", Timestamptz),
            ],
        )
        .partitioned_by("customer_id", Transform::Bucket(4)),
        TableDef::new(
            "dq",
            "results",
            Append,
            vec![
                req("epoch", Long),
                req("table_name", String),
                req("rule", String),
                req("severity", String),
                req("checked", Long),
                req("failed", Long),
                opt("threshold", Long),
                req("passed", Bool),
                req("evaluated_at", Timestamptz),
            ],
        ),
    ]
}

// The lake's strings are `Text` too: a copy of the inline value (or a reference count).
fn s(v: &Text) -> Value {
    Value::String(v.clone())
}
fn os(v: &Option<Text>) -> Value {
    v.clone().map_or(Value::Null, Value::String)
}
fn money(cents: i64) -> Value {
    Value::Decimal(cents as i128)
}

fn product_row(p: &crate::rows::Product) -> Row {
    vec![
        s(&p.product_id),
        os(&p.sku),
        s(&p.name),
        s(&p.category),
        os(&p.brand),
        money(p.list_price.0),
        s(&p.currency),
        Value::Bool(p.active),
        Value::Long(p.updated_at),
    ]
}

/// The lake row of a table row: `(index into` [`table_defs`]`, values)`, `None` for rows
/// kept only by other sinks (quarantine counts).
pub fn table_row(row: &TableRow) -> Option<(usize, Row)> {
    Some(match row {
        TableRow::SilverOrder(o) => (
            0,
            vec![
                s(&o.order_id),
                Value::Long(o.customer_id),
                s(&o.status),
                Value::Long(o.order_ts),
                Value::Long(o.event_ts),
                s(&o.currency),
                s(&o.shipping_country),
                os(&o.shipping_city),
                os(&o.payment_method),
                Value::Long(o.item_count),
                money(o.order_total.0),
            ],
        ),
        TableRow::SilverOrderItem(i) => (
            1,
            vec![
                s(&i.order_id),
                Value::Long(i.line_no),
                s(&i.product_id),
                Value::Long(i.quantity),
                money(i.unit_price.0),
                money(i.line_total.0),
            ],
        ),
        TableRow::SilverProduct(p) => (2, product_row(p)),
        TableRow::SilverCustomer(c) => (
            3,
            vec![
                Value::Long(c.customer_id),
                os(&c.email),
                os(&c.full_name),
                os(&c.country),
                os(&c.city),
                os(&c.segment),
                Value::opt_long(c.created_at),
                Value::opt_long(c.updated_at),
            ],
        ),
        TableRow::DimCustomer(d) => (
            4,
            vec![
                Value::Long(d.customer_id),
                os(&d.email),
                os(&d.full_name),
                os(&d.country),
                os(&d.city),
                os(&d.segment),
                Value::opt_long(d.valid_from),
                Value::opt_long(d.valid_to),
                Value::Bool(d.is_current),
            ],
        ),
        TableRow::DimProduct(p) => (5, product_row(p)),
        TableRow::Fact(f) => (
            6,
            vec![
                s(&f.order_id),
                Value::Long(f.line_no),
                Value::Long(f.customer_id),
                s(&f.product_id),
                Value::Long(f.order_ts),
                Value::Int(f.order_date),
                s(&f.status),
                s(&f.currency),
                Value::Long(f.quantity),
                money(f.unit_price.0),
                money(f.line_total.0),
                s(&f.shipping_country),
                os(&f.payment_method),
                os(&f.category),
                os(&f.brand),
                os(&f.customer_segment),
                os(&f.customer_country),
            ],
        ),
        TableRow::DailySales(d) => (
            7,
            vec![
                Value::Int(d.order_date),
                s(&d.category),
                s(&d.shipping_country),
                s(&d.currency),
                Value::Long(d.orders),
                Value::Long(d.units),
                Value::Decimal(d.revenue),
            ],
        ),
        TableRow::CustomerLtv(l) => (
            8,
            vec![
                Value::Long(l.customer_id),
                s(&l.currency),
                Value::Long(l.orders),
                Value::Decimal(l.revenue),
                Value::Long(l.first_order_ts),
                Value::Long(l.last_order_ts),
            ],
        ),
        TableRow::Dq(d) => (
            9,
            vec![
                Value::Long(d.epoch as i64),
                Value::String(d.table_name.as_str().into()),
                Value::String(d.rule.as_str().into()),
                Value::String(d.severity.as_str().into()),
                Value::Long(d.checked),
                Value::Long(d.failed),
                Value::opt_long(d.threshold),
                Value::Bool(d.passed),
                Value::Long(d.evaluated_at),
            ],
        ),
        TableRow::QuarantineCount(..) => return None,
    })
}

/// `silver.quarantine`.
pub fn quarantine_def() -> TableDef {
    TableDef::new(
        "silver",
        "quarantine",
        TableMode::Append,
        vec![
            req("source", String),
            opt("record_key", String),
            req("rule", String),
            req("detail", String),
            req("payload", String),
            req("_topic", String),
            req("_partition", Int),
            req("_offset", Long),
            req("_ingested_at", Timestamptz),
        ],
    )
    .partitioned_by("_ingested_at", Transform::Day)
}

fn quarantine_row(q: &QuarantineRow) -> Option<(usize, Row)> {
    Some((
        0,
        vec![
            s(&q.source),
            os(&q.record_key),
            s(&q.rule),
            s(&q.detail),
            s(&q.payload),
            s(&q.topic),
            Value::Int(q.partition),
            Value::Long(q.offset),
            Value::Long(q.ingested_at),
        ],
    ))
}

/// `bronze.orders`, `bronze.products`, `bronze.customers` (in that order).
pub fn bronze_defs() -> Vec<TableDef> {
    ["orders", "products", "customers"]
        .into_iter()
        .map(|name| {
            TableDef::new(
                "bronze",
                name,
                TableMode::Append,
                vec![
                    // The payload as text when it is UTF-8; otherwise null, and the bytes are
                    // in `payload_bytes` (never dropped).
                    opt("payload", String),
                    opt("payload_bytes", Binary),
                    req("_ingested_at", Timestamptz),
                    req("_source", String),
                    req("_batch_id", Long),
                    req("_topic", String),
                    req("_partition", Int),
                    req("_offset", Long),
                ],
            )
            .partitioned_by("_ingested_at", Transform::Day)
        })
        .collect()
}

fn bronze_row(topics: &Topics, b: &BronzeRow) -> Option<(usize, Row)> {
    let topic: &str = &b.topic;
    let table = if topic == topics.orders {
        0
    } else if topic == topics.products {
        1
    } else if topic == topics.customers {
        2
    } else {
        return None;
    };
    let (text, bytes) = match &b.payload {
        None => (Value::Null, Value::Null),
        Some(p) => match std::str::from_utf8(p) {
            Ok(t) => (Value::String(t.into()), Value::Null),
            Err(_) => (Value::Null, Value::Binary(p.clone())),
        },
    };
    Some((
        table,
        vec![
            text,
            bytes,
            Value::Long(b.ingested_at),
            s(&b.source),
            Value::Long(b.batch_id as i64),
            s(&b.topic),
            Value::Int(b.partition),
            Value::Long(b.offset),
        ],
    ))
}

impl LakeSinks {
    /// The lake they write.
    pub fn config(&self) -> &LakeConfig {
        &self.config
    }
}

/// Every table of the lake: [`table_defs`], [`quarantine_def`] and [`bronze_defs`].
pub fn all_defs() -> Vec<TableDef> {
    let mut defs = table_defs();
    defs.push(quarantine_def());
    defs.extend(bronze_defs());
    defs
}

/// The name of the medallion pipeline's writer lease in a lake's catalog database
/// (table `alluvium_writers`).
pub const LEASE: &str = "alluvium-medallion";

/// The three lake sinks of the pipeline: silver/gold/dq tables, the quarantine, and bronze.
pub struct LakeSinks {
    config: LakeConfig,
    /// Silver and gold current-state tables and `dq.results`.
    pub tables: IcebergSink<TableRow>,
    /// `silver.quarantine`.
    pub quarantine: IcebergSink<QuarantineRow>,
    /// `bronze.*`.
    pub bronze: IcebergSink<BronzeRow>,
}

impl LakeSinks {
    /// The sinks of a pipeline reading `topics` into the lake of `config`.
    pub fn new(config: &LakeConfig, topics: &Topics) -> Result<Self, LakeError> {
        let topics = Arc::new(topics.clone());
        // One lease for the three sinks: a new instance fences all of them at once, so every
        // table a run plans from was written by one instance.
        let lease = WriterLease::new(LEASE);
        Ok(LakeSinks {
            config: config.clone(),
            tables: IcebergSink::new(config.clone(), table_defs(), table_row)?
                .with_lease(lease.clone()),
            quarantine: IcebergSink::new(config.clone(), vec![quarantine_def()], quarantine_row)?
                .with_lease(lease.clone()),
            bronze: IcebergSink::new(config.clone(), bronze_defs(), move |b: &BronzeRow| {
                bronze_row(&topics, b)
            })?
            .with_lease(lease),
        })
    }
}

fn format_cell(v: &Value, ty: ColumnType) -> std::string::String {
    use crate::money::format_cents;
    use crate::time::{format_date, format_ts};
    match (v, ty) {
        (Value::Null, _) => "\\N".into(),
        (Value::Long(t), Timestamptz) => format_ts(*t),
        (Value::Int(d), Date) => format_date(*d),
        (Value::Decimal(c), _) => format_cents(*c),
        (Value::Bool(b), _) => b.to_string(),
        (Value::Long(n), _) => n.to_string(),
        (Value::Int(n), _) => n.to_string(),
        (Value::String(s), _) => s.to_string(),
        (Value::Binary(b), _) => std::string::String::from_utf8_lossy(b).into_owned(),
    }
}

fn write_rows(
    path: &std::path::Path,
    header: &[&str],
    mut rows: Vec<Vec<std::string::String>>,
) -> Result<(), LakeError> {
    rows.sort();
    let io =
        |e: &dyn std::fmt::Display| LakeError::Data(format!("writing {}: {e}", path.display()));
    let mut w = csv::Writer::from_path(path).map_err(|e| io(&e))?;
    w.write_record(header).map_err(|e| io(&e))?;
    for r in rows {
        w.write_record(&r).map_err(|e| io(&e))?;
    }
    w.flush().map_err(|e| io(&e))
}

/// Writes the current snapshot of every silver and gold table of the lake as CSV into `dir`,
/// in the names and value formats of the fixtures' `expected/` folder
/// (`silver_<table>.csv`, `<gold table>.csv`), plus `quarantine_counts.csv` counted from
/// `silver.quarantine` — so a lake can be diffed against a reference like `--export-csv`.
pub fn export_csv(config: &LakeConfig, dir: &std::path::Path) -> Result<(), LakeError> {
    use alluvium_connectors::lake::read::scan_table_blocking;
    std::fs::create_dir_all(dir)
        .map_err(|e| LakeError::Data(format!("creating {}: {e}", dir.display())))?;
    for def in table_defs() {
        let file = match def.namespace.as_str() {
            "silver" => format!("silver_{}.csv", def.name),
            "gold" => format!("{}.csv", def.name),
            _ => continue,
        };
        let rows = scan_table_blocking(config, &def)?
            .iter()
            .map(|r| {
                r.iter()
                    .zip(&def.columns)
                    .map(|(v, c)| format_cell(v, c.ty))
                    .collect()
            })
            .collect();
        let header: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
        write_rows(&dir.join(file), &header, rows)?;
    }
    let mut counts: std::collections::BTreeMap<(std::string::String, std::string::String), i64> =
        std::collections::BTreeMap::new();
    for (source, rules) in crate::export::RULES {
        for rule in rules {
            counts.insert((source.to_string(), rule.to_string()), 0);
        }
    }
    for row in scan_table_blocking(config, &quarantine_def())? {
        if let (Some(Value::String(source)), Some(Value::String(rule))) = (row.first(), row.get(2))
        {
            *counts
                .entry((source.to_string(), rule.to_string()))
                .or_default() += 1;
        }
    }
    let rows = counts
        .into_iter()
        .map(|((s, r), n)| vec![s, r, n.to_string()])
        .collect();
    write_rows(
        &dir.join("quarantine_counts.csv"),
        &["source", "rule", "count"],
        rows,
    )
}
