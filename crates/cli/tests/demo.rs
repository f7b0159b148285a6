//! `alluvium demo` runs the whole medallion pipeline on embedded defaults (no service): the
//! lake (SQLite catalog, local files) always, a private PostgreSQL warehouse when PostgreSQL
//! is installed (it is where the tests run), data-quality results and query hints. Its input
//! goes through the real entry points (REST API, CSV drop folder) into the embedded broker,
//! and the tables it builds equal the in-memory pipeline's over the same input.

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
    assert!(
        stdout.contains("order events through the REST API"),
        "{stdout}"
    );
    assert_same_tables_as_in_memory(400, 1, &dir.path().join("csv"));
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

/// Run by an unprivileged user (here `nobody`, when the tests run as root and `setpriv` is
/// there), the demo starts its private PostgreSQL as that user.
#[test]
fn demo_runs_as_an_unprivileged_user() {
    use std::os::unix::fs::PermissionsExt;
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0"
        || Command::new("setpriv").arg("--version").output().is_err()
    {
        eprintln!("not root or no setpriv: the demo already runs unprivileged in the other test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "env"])
        .arg(format!("HOME={}", dir.path().display()))
        .arg("RUST_LOG=warn")
        .arg(env!("CARGO_BIN_EXE_alluvium"))
        .args(["demo", "--orders", "100", "--out"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo as nobody failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("warehouse: a private PostgreSQL"),
        "{stdout}"
    );
    assert!(stdout.contains("warehouse (PostgreSQL)"), "{stdout}");
}

/// The demo's tables equal the in-memory pipeline's over the same generated input (the
/// events the API refuses as not JSON left out): nothing lost or doubled on the way through
/// the API, the drop folder and the embedded broker.
fn assert_same_tables_as_in_memory(orders: usize, seed: u64, demo_csv: &std::path::Path) {
    use alluvium_medallion::generate::{generate_input, GeneratorConfig};
    use alluvium_medallion::{PipelineConfig, Topics};
    let topics = Topics::with_prefix("");
    let mut input = generate_input(&GeneratorConfig::scaled(orders, seed), &topics);
    input
        .orders
        .retain(|m| serde_json::from_slice::<&serde_json::value::RawValue>(&m.payload).is_ok());
    let messages = input.into_messages(&topics);
    let logs = alluvium_medallion::memory::partition(&messages, 3);
    let state = tempfile::tempdir().unwrap();
    let rows =
        alluvium_medallion::memory::run(&logs, state.path(), 2, 1_000, &PipelineConfig::default())
            .unwrap();
    let reference = state.path().join("csv");
    alluvium_medallion::export::write_csv(&reference, &rows).unwrap();
    let mut compared = 0;
    for entry in std::fs::read_dir(&reference).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        let sorted = |p: &std::path::Path| {
            let mut lines: Vec<String> = std::fs::read_to_string(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .lines()
                .map(str::to_owned)
                .collect();
            lines.sort();
            lines
        };
        let expected = sorted(&path);
        assert_eq!(
            sorted(&demo_csv.join(name)),
            expected,
            "{name:?} differs from the in-memory run"
        );
        assert!(expected.len() > 1, "{name:?} is empty");
        compared += 1;
    }
    assert!(compared >= 10, "only {compared} tables compared");
}
