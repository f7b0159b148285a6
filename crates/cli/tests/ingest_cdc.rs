//! `alluvium ingest cdc` against a real PostgreSQL (`wal_level=logical`) and the real broker:
//! the sample's `customers_*.sql` captured (snapshot, then live changes) and run through the
//! pipeline to the expected tables; a table altered with a new column; the slot-lag metric;
//! and a crash between produce and slot advance that loses nothing.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    alluvium, assert_matches_expected_as, brokers, case, fresh_database, ok, psql, psql_file,
    read_topic, unique,
};

/// Slots are per cluster, so each test names its own after its database.
fn cdc_args(url: &str, prefix: &str, state: &Path, slot: &str) -> Vec<String> {
    [
        "ingest",
        "cdc",
        "--pg-url",
        url,
        "--slot",
        slot,
        "--state",
        state.to_str().unwrap(),
        "--topic-prefix",
        prefix,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Orders and products of the sample into the topics (customers come from PostgreSQL).
fn load_orders_and_products(prefix: &str) {
    let dir = tempfile::tempdir().unwrap();
    for f in ["orders.jsonl", "orders_not_json.txt"] {
        std::fs::copy(case().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir(dir.path().join("products")).unwrap();
    for e in std::fs::read_dir(case().join("products")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join("products").join(p.file_name().unwrap())).unwrap();
    }
    ok([
        "fixture",
        "load",
        dir.path().to_str().unwrap(),
        "--topic-prefix",
        prefix,
    ]);
}

/// Runs the pipeline over the topics until drained and returns the export folder.
fn run_pipeline(prefix: &str, dir: &Path) -> PathBuf {
    let export = dir.join("csv");
    ok([
        "run",
        "--topic-prefix",
        prefix,
        "--state",
        dir.join("state").to_str().unwrap(),
        "--until-idle",
        "--export-csv",
        export.to_str().unwrap(),
        "-w",
        "2",
    ]);
    export
}

fn envelopes(prefix: &str, at_least: usize) -> Vec<(Option<Vec<u8>>, serde_json::Value)> {
    envelopes_of(prefix, at_least, "postgres:public.customers")
}

fn envelopes_of(
    prefix: &str,
    at_least: usize,
    origin: &str,
) -> Vec<(Option<Vec<u8>>, serde_json::Value)> {
    read_topic(&brokers(), &format!("{prefix}customers"), at_least)
        .into_iter()
        .map(|m| {
            assert_eq!(m.origin.as_deref(), Some(origin));
            (
                m.key,
                serde_json::from_slice(&m.payload).expect("JSON envelope"),
            )
        })
        .collect()
}

#[test]
fn live_capture_of_the_sample_gives_the_expected_tables() {
    let db = unique("cdc_live");
    let url = fresh_database(&db);
    let prefix = format!("{db}_");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cdc.json");
    psql_file(&url, &case().join("customers_snapshot.sql"));

    // Capture runs; the changes happen while it does.
    let mut args = cdc_args(&url, &prefix, &state, &db);
    args.extend(["--metrics-listen".into(), "127.0.0.1:0".into()]);
    let mut child = alluvium(&args).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    // Kept open until the process ended: it prints a summary when it stops.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let metrics_url = line
        .trim()
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let snapshot = envelopes(&prefix, 109);
    assert_eq!(snapshot.len(), 109);
    assert!(snapshot.iter().all(|(_, e)| e["op"] == "r"));
    psql_file(&url, &case().join("customers_changes.sql"));
    // A new column: the envelope carries it, the pipeline ignores it. The update keeps
    // `updated_at`, so the tables stay as expected.
    psql(
        &url,
        "ALTER TABLE customers ADD COLUMN loyalty_tier text; \
         UPDATE customers SET loyalty_tier = 'gold' WHERE customer_id = 1",
    );
    let all = envelopes(&prefix, 208);
    assert_eq!(all.len(), 208, "109 snapshot rows + 98 changes + 1 update");
    let ops = all.iter().fold(HashMap::new(), |mut m, (_, e)| {
        *m.entry(e["op"].as_str().unwrap().to_owned()).or_insert(0) += 1;
        m
    });
    let expected_ops = std::fs::read_to_string(case().join("customers_debezium.jsonl"))
        .unwrap()
        .lines()
        .fold(HashMap::new(), |mut m, l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            *m.entry(e["op"].as_str().unwrap().to_owned()).or_insert(0) += 1;
            m
        });
    let mut with_alter = expected_ops.clone();
    *with_alter.entry("u".to_owned()).or_insert(0) += 1;
    assert_eq!(
        ops, with_alter,
        "the same operations as the Debezium fixture"
    );
    let (key, last) = all
        .iter()
        .rev()
        .find(|(_, e)| e["after"]["customer_id"] == 1)
        .unwrap();
    assert_eq!(last["after"]["loyalty_tier"], "gold");
    assert_eq!(key.as_deref(), Some(&br#"{"customer_id":1}"#[..]));
    let delete = all.iter().find(|(_, e)| e["op"] == "d").unwrap();
    assert!(
        delete.1["before"]["customer_id"].is_i64(),
        "deletes carry the key"
    );
    // Snapshot rows sit at the slot's consistent point, before every streamed change.
    let lsn = |e: &serde_json::Value| e["source"]["lsn"].as_u64().unwrap();
    let snapshot_lsn = all
        .iter()
        .filter(|(_, e)| e["op"] == "r")
        .map(|(_, e)| lsn(e))
        .max();
    let first_change = all
        .iter()
        .filter(|(_, e)| e["op"] != "r")
        .map(|(_, e)| lsn(e))
        .min();
    assert!(
        snapshot_lsn < first_change,
        "{snapshot_lsn:?} < {first_change:?}"
    );

    // The slot lag metric, then a clean stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let out = Command::new("curl")
            .args(["-sf", &metrics_url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("alluvium_cdc_events_total 208") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metrics.contains("alluvium_cdc_slot_lag_bytes "),
        "{metrics}"
    );
    assert!(
        metrics.contains("alluvium_cdc_events_total 208"),
        "{metrics}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut summary).unwrap();
    assert!(
        summary.contains("109 snapshot rows and 99 changes"),
        "{summary}"
    );

    load_orders_and_products(&prefix);
    let export = run_pipeline(&prefix, dir.path());
    assert_matches_expected_as(&export, true);
}

#[test]
fn crash_between_produce_and_slot_advance_loses_nothing() {
    let db = unique("cdc_crash");
    let url = fresh_database(&db);
    let prefix = format!("{db}_");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cdc.json");
    psql_file(&url, &case().join("customers_snapshot.sql"));
    let mut args = cdc_args(&url, &prefix, &state, &db);
    args.push("--until-idle".into());
    let out = alluvium(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    psql_file(&url, &case().join("customers_changes.sql"));
    // Produced and acknowledged, then killed before the slot moves.
    let out = alluvium(&args)
        .env("ALLUVIUM_FAILPOINT", format!("cdc_before_advance:{db}:1"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint aborts");
    assert_eq!(envelopes(&prefix, 207).len(), 207);
    // The restart sends the unconfirmed transactions again: duplicates, nothing lost.
    let out = alluvium(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 snapshot rows and 98 changes"));
    assert_eq!(envelopes(&prefix, 305).len(), 109 + 2 * 98);
    // Nothing more after that: the slot has moved.
    let out = alluvium(&args).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 snapshot rows and 0 changes"));

    load_orders_and_products(&prefix);
    let export = run_pipeline(&prefix, dir.path());
    assert_matches_expected_as(&export, true);
}

#[test]
fn unchanged_toasted_values_and_replica_identity_full() {
    let db = unique("cdc_toast");
    let url = fresh_database(&db);
    let prefix = format!("{db}_");
    let dir = tempfile::tempdir().unwrap();
    // A value large and random enough to be stored out of line (TOAST).
    let big: String = (0..20_000)
        .map(|i| char::from(b'a' + ((i * 7919 + i / 13) % 26) as u8))
        .collect();
    psql(
        &url,
        &format!(
            "CREATE TABLE notes(id bigint primary key, body text, n int); \
             ALTER TABLE notes ALTER COLUMN body SET STORAGE EXTERNAL; \
             INSERT INTO notes VALUES (1, '{big}', 0), (2, '{big}', 0)"
        ),
    );
    let mut args = cdc_args(&url, &prefix, &dir.path().join("cdc.json"), &db);
    args.extend([
        "--table".into(),
        "public.notes".into(),
        "--until-idle".into(),
    ]);
    ok(&args);
    // Default replica identity: the unchanged TOASTed body is not in the WAL.
    psql(&url, "UPDATE notes SET n = 1 WHERE id = 1");
    // FULL: the old row carries it, and deletes carry the whole row.
    psql(
        &url,
        "ALTER TABLE notes REPLICA IDENTITY FULL; UPDATE notes SET n = 2 WHERE id = 2; \
         DELETE FROM notes WHERE id = 2",
    );
    ok(&args);
    let all = envelopes_of(&prefix, 5, "postgres:public.notes");
    let find = |op: &str, id: i64, n: Option<i64>| {
        all.iter()
            .map(|(_, e)| e)
            .find(|e| {
                e["op"] == op
                    && (e["after"]["id"] == id || e["before"]["id"] == id)
                    && n.is_none_or(|n| e["after"]["n"] == n)
            })
            .unwrap_or_else(|| panic!("no {op} of {id}"))
            .clone()
    };
    assert_eq!(find("r", 1, None)["after"]["body"], big.as_str());
    assert_eq!(
        find("u", 1, Some(1))["after"]["body"],
        "__debezium_unavailable_value"
    );
    let full = find("u", 2, Some(2));
    assert_eq!(
        full["after"]["body"],
        big.as_str(),
        "taken from the full old row"
    );
    assert_eq!(full["before"]["n"], 0);
    let delete = find("d", 2, None);
    assert_eq!(
        delete["before"]["n"], 2,
        "FULL: deletes carry the whole old row"
    );
}
