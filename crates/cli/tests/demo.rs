//! `alluvium demo` runs the whole medallion pipeline on embedded defaults (no service).

use std::process::Command;

#[test]
fn demo_runs_on_embedded_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_alluvium"))
        .args(["demo", "--orders", "400", "--out"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in [
        "silver.orders",
        "gold.fact_order_items",
        "gold.daily_sales",
        "dq.results",
        "orders/json_parse",
    ] {
        assert!(
            stdout.contains(table),
            "{table} missing from the summary:\n{stdout}"
        );
    }
    let daily = std::fs::read_to_string(dir.path().join("csv/daily_sales.csv")).unwrap();
    assert!(daily.starts_with("order_date,category,shipping_country,currency,orders,units,revenue"));
    assert!(daily.lines().count() > 10);
}
