//! `alluvium ingest csv` against the real broker and S3 server: the sample's product files,
//! a file with every CSV corner case, the `.done` marker rule, an S3 prefix, and crashes in
//! the middle of a file — every record in the topic exactly once.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use alluvium_medallion::products::{product_file_messages, ProductMessage};
use common::{alluvium, brokers, case, read_topic, service_env, unique, ReadMessage};

/// (file, record index) → (key, payload).
type Records = BTreeMap<(String, u64), (Option<Vec<u8>>, Vec<u8>)>;

fn ingest(args: &[&str]) -> Output {
    alluvium(["ingest", "csv"].iter().chain(args))
        .output()
        .expect("running alluvium ingest csv")
}

fn ingest_ok(args: &[&str]) -> String {
    let out = ingest(args);
    assert!(
        out.status.success(),
        "ingest csv failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the topic must hold for these files: (file, record index) → (key, payload).
fn expected(files: &[(&str, &[u8])]) -> Records {
    let mut out = BTreeMap::new();
    for (name, bytes) in files {
        for (i, m) in product_file_messages(name, bytes).into_iter().enumerate() {
            out.insert((name.to_string(), i as u64), m);
        }
    }
    out
}

/// The topic as (file, record index) → (key, payload); panics on a record stored twice.
fn stored(messages: &[ReadMessage]) -> Records {
    let mut out = BTreeMap::new();
    for m in messages {
        let origin = m.origin.clone().expect("alluvium-source header");
        let file = origin.strip_prefix("csv:").expect("csv: source").to_owned();
        let record: u64 = m.headers["alluvium-record"].parse().expect("record index");
        assert_eq!(m.headers["alluvium-file"].len(), 64, "sha256 hex");
        let before = out.insert((file.clone(), record), (m.key.clone(), m.payload.clone()));
        assert!(before.is_none(), "{file} record {record} stored twice");
    }
    out
}

fn sample_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(case().join("products"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn sample_product_files_are_ingested_once() {
    let prefix = unique("csv") + "_";
    let drop = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let ledger = state.path().join("ledger.json");
    let files = sample_files();
    for (name, bytes) in &files {
        std::fs::write(drop.path().join(name), bytes).unwrap();
    }
    // Not product files: ignored.
    std::fs::write(drop.path().join("README.txt"), "not a csv").unwrap();
    let args = [
        "--dir",
        drop.path().to_str().unwrap(),
        "--ledger",
        ledger.to_str().unwrap(),
        "--settle-ms",
        "0",
        "--until-idle",
        "--topic-prefix",
        &prefix,
    ];
    let out = ingest_ok(&args);
    assert!(out.contains("ingested 3 files"), "{out}");
    let want = expected(
        &files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect::<Vec<_>>(),
    );
    let topic = format!("{prefix}products");
    let got = stored(&read_topic(&brokers(), &topic, want.len()));
    assert_eq!(got, want);

    // Again: nothing new. A changed file under an old name is a new file.
    let out = ingest_ok(&args);
    assert!(out.contains("ingested 0 files"), "{out}");
    let (name, bytes) = &files[0];
    let mut changed = bytes.clone();
    changed.extend_from_slice(b"P-NEW,SKU-NEW,New thing,Toys,Acme,1.00,EUR,true,2026-03-09\n");
    std::fs::write(drop.path().join(name), &changed).unwrap();
    let out = ingest_ok(&args);
    assert!(out.contains("ingested 1 files"), "{out}");
    let all = read_topic(
        &brokers(),
        &topic,
        want.len() + product_file_messages(name, &changed).len(),
    );
    assert_eq!(
        all.len(),
        want.len() + product_file_messages(name, &changed).len()
    );
    let ledger_text = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(ledger_text.matches("\"state\": \"done\"").count(), 4);
}

/// Every RFC 4180 case of spec §1.2, and rows that must reach quarantine.
const CORNER_CASES: &[u8] = b"\xef\xbb\xbfUpdated_At,CURRENCY,unit_price,Name,product_id,category,extra,brand,sku,active\r\n\
2026-03-01,eur,19.99,\"Mug, large\",P-1,Kitchen,x,,S1,true\r\n\
2026-03-01,EUR,5.00,\"The \"\"best\"\" pen\",P-2,Office,,Bic,,\r\n\
2026-03-01,EUR,7.50,\"Two\r\nline name\",P-3,Office,,,,no\r\n\
2026-03-01,EUR,1.00,too few fields\r\n\
2026-03-01,EUR,2.00,\"Caf\xe9\",P-4,Food,,,,1\r\n\
2026-03-01,EUR,3.00,\"\xc3\xa9l\xc3\xa8ve \xe2\x9c\x93\",P-5,Food,,,,y\r\n\
2026-03-01,EUR,4.00,\"unterminated,P-6,Food,,,,y\r\n";

#[test]
fn every_csv_corner_case_reaches_kafka() {
    let prefix = unique("csvcorner") + "_";
    let drop = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(drop.path().join("corner.CSV"), CORNER_CASES).unwrap();
    let out = ingest_ok(&[
        "--dir",
        drop.path().to_str().unwrap(),
        "--ledger",
        state.path().join("l.json").to_str().unwrap(),
        "--settle-ms",
        "0",
        "--until-idle",
        "--topic-prefix",
        &prefix,
    ]);
    assert!(out.contains("ingested 1 files"), "{out}");
    let want = expected(&[("corner.CSV", CORNER_CASES)]);
    let got = stored(&read_topic(
        &brokers(),
        &format!("{prefix}products"),
        want.len(),
    ));
    assert_eq!(got, want);
    let messages: Vec<ProductMessage> = got
        .values()
        .map(|(_, p)| serde_json::from_slice(p).unwrap())
        .collect();
    let by_line: HashMap<u64, &ProductMessage> = messages.iter().map(|m| (m.line, m)).collect();
    let field = |line: u64, name: &str| -> String {
        let m = by_line[&line];
        let i = m
            .header
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name))
            .unwrap_or_else(|| panic!("no {name} in {:?}", m.header));
        m.fields[i].clone()
    };
    assert_eq!(field(2, "name"), "Mug, large");
    assert_eq!(field(3, "name"), "The \"best\" pen");
    assert_eq!(
        field(4, "name"),
        "Two\r\nline name",
        "newline inside quotes kept"
    );
    // The record after a two-line record starts on line 6.
    assert!(
        by_line[&6].error.as_deref().unwrap().contains("fields"),
        "{:?}",
        by_line[&6]
    );
    assert!(by_line[&7].error.as_deref().unwrap().contains("UTF-8"));
    assert_eq!(field(8, "name"), "élève ✓");
    assert!(by_line.contains_key(&9), "the unterminated record is kept");
    assert!(by_line[&9].error.is_some() || by_line[&9].fields.len() != 10);
    // Keys: the trimmed product_id when the record has one.
    let keys: Vec<Option<String>> = got
        .values()
        .map(|(k, _)| k.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()))
        .collect();
    assert_eq!(keys[0].as_deref(), Some("P-1"));
}

/// A child process killed when the test ends, even by a failed assertion.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn marker_rule_waits_for_done_files() {
    let prefix = unique("csvmark") + "_";
    let drop = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let files = sample_files();
    std::fs::write(drop.path().join(&files[0].0), &files[0].1).unwrap();
    std::fs::write(drop.path().join(&files[1].0), &files[1].1).unwrap();
    std::fs::write(drop.path().join(format!("{}.done", files[1].0)), "").unwrap();
    let child = alluvium([
        "ingest",
        "csv",
        "--dir",
        drop.path().to_str().unwrap(),
        "--ledger",
        state.path().join("l.json").to_str().unwrap(),
        "--ready",
        "marker",
        "--poll-ms",
        "100",
        "--topic-prefix",
        &prefix,
    ])
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let mut child = KillOnDrop(child);
    let topic = format!("{prefix}products");
    let second = product_file_messages(&files[1].0, &files[1].1).len();
    let got = stored(&read_topic(&brokers(), &topic, second));
    assert!(
        got.keys().all(|(f, _)| *f == files[1].0),
        "only the marked file"
    );
    assert_eq!(got.len(), second);
    std::fs::write(drop.path().join(format!("{}.done", files[0].0)), "").unwrap();
    let first = product_file_messages(&files[0].0, &files[0].1).len();
    let got = stored(&read_topic(&brokers(), &topic, first + second));
    assert_eq!(got.len(), first + second);
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}

#[test]
fn s3_prefix_is_ingested() {
    let prefix = unique("csvs3") + "_";
    let endpoint = service_env("ALLUVIUM_S3_ENDPOINT");
    let bucket = service_env("ALLUVIUM_S3_BUCKET");
    let folder = unique("drops");
    let files = sample_files();
    for (name, bytes) in &files {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), bytes).unwrap();
        let status = Command::new("curl")
            // -T: a plain PUT of the bytes (a form content type makes moto parse the body).
            .args(["-sf", "--max-time", "30", "-T"])
            .arg(tmp.path())
            .arg(format!("{endpoint}/{bucket}/{folder}/incoming/{name}"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let state = tempfile::tempdir().unwrap();
    let url = format!("s3://{bucket}/{folder}/incoming");
    let out = ingest_ok(&[
        "--url",
        &url,
        "--s3-endpoint",
        &endpoint,
        "--ledger",
        state.path().join("l.json").to_str().unwrap(),
        "--settle-ms",
        "0",
        "--until-idle",
        "--topic-prefix",
        &prefix,
    ]);
    assert!(out.contains("ingested 3 files"), "{out}");
    let want = expected(
        &files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect::<Vec<_>>(),
    );
    let got = stored(&read_topic(
        &brokers(),
        &format!("{prefix}products"),
        want.len(),
    ));
    assert_eq!(got, want);
}

/// A product CSV of `rows` records.
fn big_csv(rows: usize) -> Vec<u8> {
    let mut s =
        String::from("product_id,sku,name,category,brand,unit_price,currency,active,updated_at\n");
    for i in 0..rows {
        s.push_str(&format!(
            "P-{i},SKU-{i},\"Product {i}, boxed\",Cat{},Brand,{}.{:02},EUR,true,2026-03-01 10:00:00\n",
            i % 7,
            i % 500,
            i % 100
        ));
    }
    s.into_bytes()
}

#[test]
fn crashes_mid_file_neither_duplicate_nor_skip_records() {
    let prefix = unique("csvkill") + "_";
    let drop = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let ledger = state.path().join("l.json");
    let big = big_csv(60_000);
    std::fs::write(drop.path().join("big.csv"), &big).unwrap();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "ingest",
            "csv",
            "--dir",
            drop.path().to_str().unwrap(),
            "--ledger",
            ledger.to_str().unwrap(),
            "--settle-ms",
            "0",
            "--until-idle",
            "--chunk-records",
            "2000",
            "--topic-prefix",
            &prefix,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // 1. Aimed: abort right after the 3rd chunk was acknowledged (6,000 records in Kafka,
    //    the ledger still says "producing").
    let out = alluvium(args(&[]))
        .env("ALLUVIUM_FAILPOINT", "file_chunk_acked:big.csv:3")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint aborts");
    assert!(std::fs::read_to_string(&ledger)
        .unwrap()
        .contains("producing"));
    // 2. Random SIGKILLs while records are in flight.
    let mut rng = rand::rng();
    let mut mid_file = 0;
    for _ in 0..3 {
        let mut child = alluvium(args(&[]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = rand::Rng::random_range(&mut rng, 300..1500);
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(wait) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        if std::fs::read_to_string(&ledger)
            .unwrap()
            .contains("producing")
        {
            mid_file += 1;
        }
    }
    assert!(
        mid_file > 0,
        "at least one SIGKILL hit the middle of the file"
    );
    // 3. A clean run to the end.
    let out = alluvium(args(&[])).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = expected(&[("big.csv", &big)]);
    let got = stored(&read_topic(
        &brokers(),
        &format!("{prefix}products"),
        want.len(),
    ));
    assert_eq!(got.len(), want.len(), "no record skipped");
    assert!(got == want, "every record exactly as made from the file");
    assert!(std::fs::read_to_string(&ledger)
        .unwrap()
        .contains("\"done\""));
}
