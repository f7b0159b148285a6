//! The PostgreSQL warehouse against a real server: the sample through the broker into the
//! gold tables, compared with `expected/`; then SIGKILLs at random points (including between
//! the file-table commit and the warehouse commit) and a restart: the warehouse equals the
//! expected tables and the committed file tables, and its progress row equals theirs.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{
    alluvium, assert_warehouse_matches, fresh_database, later_claim_fences_the_earlier,
    load_sample as load, psql, unique,
};

fn run_args(prefix: &str, state: &Path, url: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["run", "--topic-prefix", prefix, "--state"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.push(state.to_string_lossy().into_owned());
    v.extend(
        [
            "--warehouse-url",
            url,
            "--epoch-records",
            "40",
            "--epoch-ms",
            "15",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn gold_tables_in_the_warehouse_equal_the_expected() {
    let prefix = format!("{}-", unique("wh"));
    load(&prefix);
    let url = fresh_database(&unique("wh"));
    let dir = tempfile::tempdir().unwrap();
    let out = alluvium(run_args(
        &prefix,
        dir.path(),
        &url,
        &["--until-idle", "-w", "2"],
    ))
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_warehouse_matches(&url);
    // The progress row holds the same epoch as the file tables.
    let epoch = psql(
        &url,
        "SELECT epoch FROM pipeline.progress WHERE pipeline = 'medallion'",
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("tables/state.json")).unwrap())
            .unwrap();
    assert_eq!(epoch.trim(), state["epoch"].to_string());
    // dq.results, committed with the gold tables: the spec rules' failures add up to the
    // quarantine counts, and the last orphan count is the sample's 47 of 300 orders.
    assert_eq!(
        psql(
            &url,
            "SELECT sum(failed) FROM dq.results WHERE table_name = 'silver.orders' AND rule = 'json_parse'"
        )
        .trim(),
        "12"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT checked || '/' || failed || '/' || passed FROM dq.results \
             WHERE rule = 'orphan_orders' ORDER BY epoch DESC LIMIT 1"
        )
        .trim(),
        "300/47/false"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM dq.results WHERE rule = 'revenue_reconciles' AND NOT passed"
        )
        .trim(),
        "0"
    );
    // A rerun commits nothing new and changes nothing.
    let out = alluvium(run_args(&prefix, dir.path(), &url, &["--until-idle"]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_warehouse_matches(&url);
}

#[test]
fn killed_pipeline_leaves_an_exact_warehouse() {
    let prefix = format!("{}-", unique("whkill"));
    load(&prefix);
    let url = fresh_database(&unique("whkill"));
    let dir = tempfile::tempdir().unwrap();
    for delay in [300u64, 700, 450, 900, 600] {
        let mut child = alluvium(run_args(
            &prefix,
            dir.path(),
            &url,
            &["--max-inflight-epochs", "1"],
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = alluvium(run_args(
        &prefix,
        dir.path(),
        &url,
        &["--until-idle", "-w", "2"],
    ))
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_warehouse_matches(&url);
    let commits = std::fs::read_to_string(dir.path().join("tables/commits.log")).unwrap();
    let epochs: Vec<u64> = commits.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "an epoch was committed twice"
    );
}

#[test]
fn unreachable_warehouse_is_reported_after_retries() {
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let out = alluvium(run_args(
        "none-",
        dir.path(),
        "postgresql://postgres@127.0.0.1:1/nothing",
        &["--until-idle"],
    ))
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("warehouse unreachable after 6 attempts"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(60));
}

/// A sink of `(key, value)` rows into `t.kv` (key `k`), whose upserts of at least
/// `bulk_rows` rows take the `COPY` path.
fn kv_sink(
    url: &str,
    pipeline: &str,
    bulk_rows: usize,
) -> alluvium_connectors::warehouse::PgSink<(i64, String)> {
    use alluvium_connectors::warehouse::{PgSink, PgTable, PgType, PgValue};
    let table = PgTable {
        name: "t.kv".into(),
        columns: vec![("k".into(), PgType::BigInt), ("v".into(), PgType::Text)],
        key: 1,
    };
    PgSink::new(url, pipeline, vec![table], |r: &(i64, String)| {
        Some((
            0,
            vec![
                PgValue::Int(Some(r.0)),
                PgValue::Text(Some(r.1.as_str().into())),
            ],
        ))
    })
    .with_bulk_rows(bulk_rows)
}

/// A committer that fell behind commits the waiting epochs in one transaction: keys added,
/// updated and removed across the group must end as if the epochs had been applied one by
/// one (random epochs and groups against a model, checked in PostgreSQL after each commit),
/// through the `unnest` statements and through `COPY`.
#[test]
fn waiting_epochs_committed_together_equal_one_by_one() {
    for bulk_rows in [alluvium_connectors::warehouse::DEFAULT_BULK_ROWS, 1] {
        epochs_committed_together_equal_one_by_one(bulk_rows);
    }
}

fn epochs_committed_together_equal_one_by_one(bulk_rows: usize) {
    use alluvium_engine::{Positions, Sink, SinkCommitter, SinkWriter};
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    let url = fresh_database(&unique("whgroup"));
    let sink = kv_sink(&url, "group-test", bulk_rows);
    assert_eq!(sink.checkpoint().unwrap(), None);
    let mut writer = sink.writer(0).unwrap();
    let mut committer = sink.committer().unwrap();
    assert!(committer.max_group() > 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut model: BTreeMap<i64, String> = BTreeMap::new();
    let mut waiting = Vec::new();
    let mut groups = 0;
    for epoch in 1..=60u64 {
        let mut updates: Vec<((i64, String), isize)> = Vec::new();
        let mut touched = std::collections::HashSet::new();
        for _ in 0..rng.random_range(0..8) {
            let k = rng.random_range(0..20i64);
            if !touched.insert(k) {
                continue;
            }
            let old = model.get(&k).cloned();
            let new = (rng.random_range(0..3) > 0).then(|| format!("v{epoch}-{k}"));
            if let Some(old) = &old {
                updates.push(((k, old.clone()), -1));
            }
            match new {
                Some(v) => {
                    updates.push(((k, v.clone()), 1));
                    model.insert(k, v);
                }
                None => {
                    model.remove(&k);
                }
            }
        }
        let staged: Vec<_> = writer.stage(epoch, &updates).unwrap().into_iter().collect();
        waiting.push((epoch, staged, Positions::new()));
        if rng.random_range(0..3) == 0 && epoch < 60 {
            continue;
        }
        if waiting.len() > 1 {
            groups += 1;
        }
        committer.commit_group(&waiting).unwrap();
        waiting.clear();
        let expected: String = model.iter().map(|(k, v)| format!("{k}|{v}\n")).collect();
        assert_eq!(
            psql(&url, "SELECT k, v FROM t.kv ORDER BY k"),
            expected,
            "after epoch {epoch}"
        );
        assert_eq!(
            psql(&url, "SELECT epoch FROM pipeline.progress").trim(),
            epoch.to_string()
        );
    }
    assert!(groups > 5, "only {groups} groups");
}

/// Rows whose key no change of the group retracted are inserted without `ON CONFLICT`. If
/// the table holds such a key anyway (a row written by someone else), the epoch is applied
/// again as upserts: the pipeline's row replaces it, nothing is lost and nothing fails.
#[test]
fn a_key_already_in_the_table_is_replaced_by_a_new_row() {
    use alluvium_engine::{Positions, Sink, SinkCommitter, SinkWriter};
    for bulk_rows in [alluvium_connectors::warehouse::DEFAULT_BULK_ROWS, 1] {
        let url = fresh_database(&unique("whtaken"));
        let sink = kv_sink(&url, "taken-test", bulk_rows);
        assert_eq!(sink.checkpoint().unwrap(), None); // creates the tables
        let mut writer = sink.writer(0).unwrap();
        let mut committer = sink.committer().unwrap();
        psql(&url, "INSERT INTO t.kv VALUES (1, 'written by hand')");
        let staged: Vec<_> = writer
            .stage(2, &[((1, "a".into()), 1), ((2, "b".into()), 1)])
            .unwrap()
            .into_iter()
            .collect();
        committer.commit(2, &staged, &Positions::new()).unwrap();
        assert_eq!(psql(&url, "SELECT k, v FROM t.kv ORDER BY k"), "1|a\n2|b\n");
        // And a row replaced by key afterwards goes the upsert way.
        let staged: Vec<_> = writer
            .stage(3, &[((2, "b".into()), -1), ((2, "c".into()), 1)])
            .unwrap()
            .into_iter()
            .collect();
        committer.commit(3, &staged, &Positions::new()).unwrap();
        assert_eq!(psql(&url, "SELECT k, v FROM t.kv ORDER BY k"), "1|a\n2|c\n");
        assert_eq!(
            psql(&url, "SELECT epoch FROM pipeline.progress").trim(),
            "3"
        );
    }
}

/// A second instance claims the warehouse before it plans: the first one's next transaction
/// rolls back (fenced, naming the generations), and the second goes on from exactly what the
/// first committed.
#[test]
fn a_later_claim_fences_the_earlier_warehouse_committer() {
    let url = fresh_database(&unique("whclaim"));
    let row = |k: i64| [((k, format!("v{k}")), 1isize)];
    let error = later_claim_fences_the_earlier(
        &kv_sink(&url, "claim-test", 10),
        &kv_sink(&url, "claim-test", 10),
        [&row(1), &row(2)],
        &row(3),
    );
    assert!(
        error.contains("fenced") && error.contains("generation 2"),
        "{error}"
    );
    assert_eq!(
        psql(&url, "SELECT k, v FROM t.kv ORDER BY k"),
        "1|v1\n3|v3\n"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT epoch, generation FROM pipeline.progress JOIN pipeline.writers USING (pipeline)"
        )
        .trim(),
        "2|2"
    );
}

/// Lost answers: every second `COMMIT` reaches PostgreSQL and commits, but the connection
/// drops before the answer comes back. The retry finds its epoch with its positions already
/// in `pipeline.progress` and counts it as committed — neither applying it twice nor taking
/// it for another instance's commit (which would stop the run). The warehouse ends exact.
#[test]
fn a_warehouse_commit_whose_answer_is_lost_counts_once() {
    let prefix = format!("{}-", unique("whlost"));
    load(&prefix);
    let url = fresh_database(&unique("whlost"));
    let (authority, rest) = url
        .trim_start_matches("postgresql://")
        .split_once('/')
        .unwrap();
    let (user, upstream) = authority.split_once('@').unwrap();
    // PostgreSQL's simple query `COMMIT` (what tokio-postgres sends to end a transaction).
    let proxy = common::lossy_tcp_proxy(upstream, b"Q\0\0\0\x0bCOMMIT\0", 2);
    let through_proxy = format!("postgresql://{user}@{}/{rest}", proxy.url);
    let dir = tempfile::tempdir().unwrap();
    common::ok(run_args(
        &prefix,
        dir.path(),
        &through_proxy,
        &["--until-idle", "-w", "2"],
    ));
    let lost = proxy.lost.load(std::sync::atomic::Ordering::SeqCst);
    assert!(lost >= 2, "only {lost} answers were lost");
    assert_warehouse_matches(&url);
}
