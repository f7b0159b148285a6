//! The medallion pipeline through the real broker: `alluvium fixture load` the public sample,
//! `alluvium run --until-idle --export-csv`, and compare every table with `expected/`:
//! streaming with small epochs on 2 workers, batch mode, and streaming with SIGKILLs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn brokers() -> String {
    std::env::var("ALLUVIUM_KAFKA_BROKERS")
        .expect("ALLUVIUM_KAFKA_BROKERS is not set: start the test services with `scripts/services.sh up` (or run scripts/test.sh)")
}

fn case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sample-small")
}

fn alluvium(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_alluvium"))
        .args(args)
        .env("ALLUVIUM_KAFKA_BROKERS", brokers())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running alluvium")
}

fn ok(args: &[&str]) {
    let out = alluvium(args);
    assert!(
        out.status.success(),
        "alluvium {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rows(path: &Path, drop_last: bool) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows: Vec<Vec<String>> = r
        .records()
        .map(|rec| {
            let mut v: Vec<String> = rec.unwrap().iter().map(str::to_owned).collect();
            if drop_last {
                v.pop();
            }
            v
        })
        .collect();
    rows.sort();
    rows
}

fn assert_matches_expected(export: &Path) {
    let tables = [
        "silver_orders.csv",
        "silver_order_items.csv",
        "silver_products.csv",
        "silver_customers.csv",
        "dim_customers.csv",
        "dim_products.csv",
        "fact_order_items.csv",
        "daily_sales.csv",
        "customer_ltv.csv",
        "quarantine_counts.csv",
    ];
    for t in tables {
        let expected = rows(&case().join("expected").join(t), t == "dim_customers.csv");
        let got = rows(&export.join(t), false);
        assert_eq!(got.len(), expected.len(), "{t}: row count");
        assert_eq!(got, expected, "{t}");
    }
}

fn load(prefix: &str) {
    ok(&[
        "fixture",
        "load",
        case().to_str().unwrap(),
        "--topic-prefix",
        prefix,
    ]);
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}-", std::process::id())
}

#[test]
fn streaming_and_batch_give_the_expected_tables() {
    let prefix = unique("med");
    load(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let (state, export) = (dir.path().join("stream"), dir.path().join("stream-csv"));
    ok(&[
        "run",
        "--topic-prefix",
        &prefix,
        "--state",
        state.to_str().unwrap(),
        "--until-idle",
        "--export-csv",
        export.to_str().unwrap(),
        "-w",
        "2",
        "--epoch-records",
        "50",
        "--epoch-ms",
        "20",
    ]);
    assert_matches_expected(&export);

    let (state, export) = (dir.path().join("batch"), dir.path().join("batch-csv"));
    ok(&[
        "run",
        "--topic-prefix",
        &prefix,
        "--state",
        state.to_str().unwrap(),
        "--batch",
        "--export-csv",
        export.to_str().unwrap(),
    ]);
    assert_matches_expected(&export);

    // Batch mode refuses to overwrite existing tables.
    let out = alluvium(&[
        "run",
        "--topic-prefix",
        &prefix,
        "--state",
        state.to_str().unwrap(),
        "--batch",
    ]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--state"));
}

#[test]
fn killed_and_restarted_pipeline_gives_the_expected_tables() {
    let prefix = unique("medkill");
    load(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let export = dir.path().join("csv");
    let run_args = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "run",
            "--topic-prefix",
            &prefix,
            "--state",
            state.to_str().unwrap(),
            "--epoch-records",
            "20",
            "--epoch-ms",
            "10",
            "--max-inflight-epochs",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    for (i, delay) in [150u64, 400, 250, 600].into_iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_alluvium"))
            .args(run_args(&["-w", if i % 2 == 0 { "1" } else { "2" }]))
            .env("ALLUVIUM_KAFKA_BROKERS", brokers())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    let before = std::fs::read_to_string(state.join("tables/commits.log")).unwrap_or_default();
    assert!(
        before.lines().count() > 0,
        "the killed runs committed nothing"
    );
    let args = run_args(&[
        "--until-idle",
        "--export-csv",
        export.to_str().unwrap(),
        "-w",
        "2",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args);
    assert_matches_expected(&export);
    let commits = std::fs::read_to_string(state.join("tables/commits.log")).unwrap();
    let epochs: Vec<u64> = commits.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "an epoch was committed twice"
    );
}
