//! `alluvium demo` runs the whole medallion pipeline on embedded defaults (no service): the
//! lake (SQLite catalog, local files) always, a private PostgreSQL warehouse when PostgreSQL
//! is installed (it is where the tests run), data-quality results and query hints.

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
    // Data-quality results and how to query them.
    for hint in [
        "orphan_orders",
        "alluvium dq report --lake",
        "SqlCatalog('alluvium'",
    ] {
        assert!(stdout.contains(hint), "{hint} missing:\n{stdout}");
    }
    // The lake holds the same gold tables as the CSV export.
    let lake = dir.path().join("lake");
    let exported = dir.path().join("lake-csv");
    let out = Command::new(env!("CARGO_BIN_EXE_alluvium"))
        .args(["lake", "export", "--lake"])
        .arg(&lake)
        .arg("--out")
        .arg(&exported)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sorted = |p: std::path::PathBuf| {
        let mut lines: Vec<String> = std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(exported.join("daily_sales.csv")),
        sorted(dir.path().join("csv/daily_sales.csv"))
    );
    // PostgreSQL is installed here: the warehouse ran in a private server, now stopped.
    assert!(
        stdout.contains("warehouse: a private PostgreSQL"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gold.fact_order_items") && stdout.contains("warehouse (PostgreSQL)"),
        "{stdout}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_alluvium"))
        .args(["demo", "--orders", "50", "--no-warehouse", "--out"])
        .arg(dir.path().join("again"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("private PostgreSQL"));
}
