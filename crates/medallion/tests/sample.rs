//! The public sample (`tests/fixtures/sample-small`) through the whole graph, in memory:
//! every silver and gold table and the quarantine counts must equal `expected/*.csv`, whatever
//! the epoch sizes and worker counts.

use std::path::{Path, PathBuf};

use alluvium_medallion::export::tables;
use alluvium_medallion::fixture::load;
use alluvium_medallion::memory::{partition, run};
use alluvium_medallion::{PipelineConfig, TableRow, Topics};
use proptest::prelude::*;

fn case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sample-small")
}

fn read_expected(file: &str) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(case().join("expected").join(file)).unwrap();
    let mut rows: Vec<Vec<String>> = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect();
    if file == "dim_customers.csv" {
        // `valid_to_check` describes how to compare, it is not a column.
        for row in &mut rows {
            row.pop();
        }
    }
    rows.sort();
    rows
}

fn check(rows: &[TableRow]) {
    let mut failures = Vec::new();
    for (file, _header, got) in tables(rows) {
        let expected = read_expected(file);
        if got != expected {
            let missing: Vec<_> = expected
                .iter()
                .filter(|r| !got.contains(r))
                .take(3)
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|r| !expected.contains(r))
                .take(3)
                .collect();
            failures.push(format!(
                "{file}: {} rows vs {} expected\n  missing: {missing:?}\n  extra: {extra:?}",
                got.len(),
                expected.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn run_case(workers: usize, epoch_records: usize, partitions: usize) -> Vec<TableRow> {
    let messages = load(&case(), &Topics::with_prefix("")).unwrap();
    let logs = partition(&messages, partitions);
    let dir = tempfile::tempdir().unwrap();
    run(
        &logs,
        dir.path(),
        workers,
        epoch_records,
        &PipelineConfig::default(),
    )
    .unwrap()
}

/// `dq.results` summed over epochs: failures per quarantine rule equal the quarantine counts,
/// and every message was checked once.
fn check_dq(rows: &[TableRow]) {
    use std::collections::BTreeMap;
    let mut failed: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut checked: BTreeMap<String, i64> = BTreeMap::new();
    let mut epochs_tables = std::collections::BTreeSet::new();
    for r in rows {
        if let TableRow::Dq(d) = r {
            *failed
                .entry((d.table_name.clone(), d.rule.clone()))
                .or_default() += d.failed;
            if !d.table_name.starts_with("silver.") {
                continue;
            }
            if epochs_tables.insert((d.epoch, d.table_name.clone())) {
                *checked.entry(d.table_name.clone()).or_default() += d.checked;
            }
            assert_eq!(d.passed, d.failed == 0);
        }
    }
    // The collection rules describe the live tables: their last results are the final state.
    let last = |rule: &str| {
        rows.iter()
            .filter_map(|r| match r {
                TableRow::Dq(d) if d.rule == rule => Some(d),
                _ => None,
            })
            .max_by_key(|d| d.epoch)
            .map(|d| (d.checked, d.failed, d.passed))
    };
    // 47 of the 300 orders point at customers that never arrive: past the 5 % threshold.
    assert_eq!(last("orphan_orders"), Some((300, 47, false)));
    assert_eq!(last("orphan_order_lines"), Some((781, 16, false)));
    assert_eq!(last("revenue_reconciles"), Some((1, 0, true)));
    assert!(rows.iter().all(|r| match r {
        TableRow::Dq(d) if d.rule == "revenue_reconciles" => d.passed,
        _ => true,
    }));
    assert_eq!(checked.get("silver.orders"), Some(&1052));
    assert_eq!(checked.get("silver.products"), Some(&120));
    assert_eq!(checked.get("silver.customers"), Some(&207));
    for row in read_expected("quarantine_counts.csv") {
        let table = format!("silver.{}", row[0]);
        let n: i64 = row[2].parse().unwrap();
        assert_eq!(
            failed
                .get(&(table.clone(), row[1].clone()))
                .copied()
                .unwrap_or(0),
            n,
            "{table} {}",
            row[1]
        );
    }
}

#[test]
fn sample_one_worker_one_epoch() {
    let rows = run_case(1, 1_000_000, 4);
    check(&rows);
    check_dq(&rows);
}

#[test]
fn sample_two_workers_small_epochs() {
    let rows = run_case(2, 37, 3);
    check(&rows);
    check_dq(&rows);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, .. ProptestConfig::default() })]

    /// Random epoch sizes, partition counts and worker counts: always the expected tables.
    #[test]
    fn sample_is_independent_of_epochs_and_workers(workers in 1usize..3, epoch in 5usize..2000, partitions in 1usize..5) {
        check(&run_case(workers, epoch, partitions));
    }
}
