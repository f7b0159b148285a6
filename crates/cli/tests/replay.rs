//! `alluvium replay`: the sample through the broker into a lake, then every table rebuilt
//! from that lake's bronze tables into a second lake — equal to `expected/`, bronze and the
//! quarantine equal row for row (original topics, partitions, offsets, sources, ingestion
//! times) — and a pipeline run from the broker on the rebuilt lake continues where bronze
//! ended: it reads nothing twice, and what arrives later once.

use std::path::Path;

use alluvium_connectors::lake::read::{blocking, scan_table};
use alluvium_connectors::lake::{LakeConfig, Row, Value};
use alluvium_medallion::lake::{bronze_defs, quarantine_def};

mod common;
use common::{alluvium, assert_matches_expected, load_sample, ok, run_into_lake, unique};

/// Bronze (without `_batch_id`, the epoch that wrote the row) and quarantine rows, sorted.
fn recorded_rows(lake: &Path) -> Vec<(String, Vec<Row>)> {
    let config = LakeConfig::local(lake).unwrap();
    let mut defs = bronze_defs();
    defs.push(quarantine_def());
    defs.iter()
        .map(|def| {
            let mut rows = blocking(scan_table(&config, def)).unwrap();
            if def.namespace == "bronze" {
                for r in &mut rows {
                    r[4] = Value::Null;
                }
            }
            rows.sort();
            (def.qualified_name(), rows)
        })
        .collect()
}

fn run_into(prefix: &str, lake: &Path, state: &Path) {
    run_into_lake(
        prefix,
        state,
        &["--lake", lake.to_str().unwrap()],
        &["-w", "2", "--epoch-records", "200", "--epoch-ms", "20"],
    );
}

#[test]
fn replay_rebuilds_every_table_from_bronze_and_the_broker_continues_after_it() {
    let prefix = format!("{}-", unique("replay"));
    load_sample(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    run_into(&prefix, &original, &dir.path().join("state-a"));

    let rebuilt = dir.path().join("rebuilt");
    let export = dir.path().join("csv");
    ok([
        "replay",
        "--from-lake",
        original.to_str().unwrap(),
        "--lake",
        rebuilt.to_str().unwrap(),
        "-w",
        "2",
        "--epoch-records",
        "300",
        "--export-csv",
        export.to_str().unwrap(),
    ]);
    assert_matches_expected(&export);
    let before = recorded_rows(&original);
    let after = recorded_rows(&rebuilt);
    for ((table, a), (_, b)) in before.iter().zip(&after) {
        assert!(!a.is_empty(), "{table} is empty");
        assert_eq!(a.len(), b.len(), "{table}: rows");
        assert!(a == b, "{table} differs after the replay");
    }

    // The rebuilt lake's checkpoints are Kafka positions: a run from the broker reads the
    // topics again only to rebuild its state and commits nothing new...
    run_into(&prefix, &rebuilt, &dir.path().join("state-b"));
    assert_eq!(recorded_rows(&rebuilt), after, "records read twice");
    // ...and what arrives later is read once (5 messages that are not orders: 5 bronze
    // rows, 5 quarantine rows).
    ok([
        "produce",
        "--topic",
        &format!("{prefix}orders"),
        "--count",
        "5",
    ]);
    run_into(&prefix, &rebuilt, &dir.path().join("state-b"));
    let later = recorded_rows(&rebuilt);
    for ((table, a), (_, b)) in after.iter().zip(&later) {
        let new = if table == "bronze.orders" || table == "silver.quarantine" {
            5
        } else {
            0
        };
        assert_eq!(b.len(), a.len() + new, "{table}");
    }
    let export = dir.path().join("csv-after-run");
    ok([
        "lake",
        "export",
        "--lake",
        rebuilt.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    let quarantine = std::fs::read_to_string(export.join("quarantine_counts.csv")).unwrap();
    assert!(!quarantine.is_empty());
}

#[test]
fn replay_refuses_its_own_lake_and_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let out = alluvium([
        "replay",
        "--from-lake",
        lake.to_str().unwrap(),
        "--lake",
        "x",
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`--from-lake`") && stderr.contains("no lake"),
        "{stderr}"
    );

    // A lake with a catalog (made by a replay of an empty lake into itself is refused first).
    std::fs::write(lake.join("catalog.db"), b"").unwrap();
    let out = alluvium([
        "replay",
        "--from-lake",
        lake.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`--lake`") && stderr.contains("another lake"),
        "{stderr}"
    );
}
