//! The sample through all three entry points with the pipeline running: orders POSTed to
//! `alluvium ingest api`, the CSV files dropped into the folder `alluvium ingest csv`
//! watches, the customers SQL run against PostgreSQL captured by `alluvium ingest cdc` — and
//! `alluvium run` (streaming, Iceberg lake) reaches exactly the expected silver and gold
//! tables. The not-JSON payloads, which cannot pass the API, go to Kafka directly.

mod common;

use std::time::{Duration, Instant};

use alluvium_connectors::lake::read::{blocking, scan_table};
use alluvium_connectors::lake::{LakeConfig, Value};
use alluvium_medallion::lake::bronze_defs;
use common::{
    alluvium, case, expected_mismatch, fresh_database, ok, psql_file, spawn_quiet, unique,
};

#[test]
fn the_sample_through_api_csv_and_cdc_with_the_pipeline_running() {
    let db = unique("e2e");
    let pg = fresh_database(&db);
    let prefix = format!("{db}_");
    let dir = tempfile::tempdir().unwrap();
    let drop_dir = dir.path().join("drops");
    std::fs::create_dir_all(&drop_dir).unwrap();
    psql_file(&pg, &case().join("customers_snapshot.sql"));

    // The three ingest processes (each creates its topic).
    let api = common::serve_ingest_api(&prefix);
    let url = api.url.clone();
    let _csv = spawn_quiet(&[
        "ingest",
        "csv",
        "--dir",
        drop_dir.to_str().unwrap(),
        "--ledger",
        dir.path().join("csv-ledger.json").to_str().unwrap(),
        "--settle-ms",
        "300",
        "--poll-ms",
        "200",
        "--topic-prefix",
        &prefix,
    ]);
    let _cdc = spawn_quiet(&[
        "ingest",
        "cdc",
        "--pg-url",
        &pg,
        "--slot",
        &db,
        "--state",
        dir.path().join("cdc.json").to_str().unwrap(),
        "--topic-prefix",
        &prefix,
    ]);
    // Wait for the API (its topic exists then); the others create theirs at start too.
    let client = reqwest::blocking_client();
    wait_until(Duration::from_secs(30), "the API is ready", || {
        client.get_status(&format!("{url}/readyz")) == Some(200)
    });

    // The pipeline, streaming, into a local Iceberg lake.
    let lake = dir.path().join("lake");
    let topics_exist = || {
        common::topic_exists(&format!("{prefix}products"))
            && common::topic_exists(&format!("{prefix}customers"))
    };
    wait_until(Duration::from_secs(30), "all topics exist", topics_exist);
    let _pipeline = spawn_quiet(&[
        "run",
        "--topic-prefix",
        &prefix,
        "--state",
        dir.path().join("state").to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
        "-w",
        "2",
        "--epoch-ms",
        "200",
    ]);

    // Orders over HTTP: NDJSON batches of up to 100 lines, each line's bytes unchanged.
    let orders = std::fs::read(case().join("orders.jsonl")).unwrap();
    let lines: Vec<&[u8]> = orders
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    for batch in lines.chunks(100) {
        let body = batch.join(&b'\n');
        let (status, text) = client.post_ndjson(&format!("{url}/v1/orders"), body);
        assert_eq!(status, 202, "{text}");
    }
    // Product files dropped one by one.
    let mut files: Vec<_> = std::fs::read_dir(case().join("products"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        std::fs::copy(&f, drop_dir.join(f.file_name().unwrap())).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    // Customer changes in the database.
    psql_file(&pg, &case().join("customers_changes.sql"));
    // The payloads that are not JSON: straight into Kafka.
    let not_json = dir.path().join("not-json");
    std::fs::create_dir_all(&not_json).unwrap();
    std::fs::copy(
        case().join("orders_not_json.txt"),
        not_json.join("orders_not_json.txt"),
    )
    .unwrap();
    ok([
        "fixture",
        "load",
        not_json.to_str().unwrap(),
        "--topic-prefix",
        &prefix,
    ]);

    // The lake converges on the expected tables while the pipeline keeps running.
    let export = dir.path().join("export");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = alluvium([
            "lake",
            "export",
            "--lake",
            lake.to_str().unwrap(),
            "--out",
            export.to_str().unwrap(),
        ])
        .output()
        .unwrap();
        let last = if out.status.success() {
            match expected_mismatch(&export, true) {
                None => break,
                Some(diff) => diff,
            }
        } else {
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        assert!(
            Instant::now() < deadline,
            "the lake never matched expected/: {last}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // Bronze says where each message came from.
    let config = LakeConfig::local(&lake).unwrap();
    let mut sources = std::collections::BTreeMap::new();
    for def in bronze_defs() {
        let col = def
            .columns
            .iter()
            .position(|c| c.name == "_source")
            .unwrap();
        for row in blocking(scan_table(&config, &def)).unwrap() {
            let source = match &row[col] {
                Value::String(s) => s.split(':').next().unwrap_or("").to_owned(),
                other => format!("{other:?}"),
            };
            *sources.entry((def.name.clone(), source)).or_insert(0) += 1;
        }
    }
    let count = |table: &str, source: &str| {
        sources
            .get(&(table.to_owned(), source.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(count("orders", "rest"), 1040, "{sources:?}");
    assert_eq!(count("orders", "kafka"), 12, "{sources:?}");
    assert_eq!(count("products", "csv"), 120, "{sources:?}");
    assert_eq!(count("customers", "postgres"), 207, "{sources:?}");
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A tiny blocking HTTP client over reqwest's async one.
mod reqwest {
    pub struct Client {
        rt: tokio::runtime::Runtime,
        inner: ::reqwest::Client,
    }

    pub fn blocking_client() -> Client {
        Client {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            inner: ::reqwest::Client::new(),
        }
    }

    impl Client {
        pub fn get_status(&self, url: &str) -> Option<u16> {
            self.rt
                .block_on(self.inner.get(url).send())
                .ok()
                .map(|r| r.status().as_u16())
        }

        pub fn post_ndjson(&self, url: &str, body: Vec<u8>) -> (u16, String) {
            self.rt.block_on(async {
                let r = self
                    .inner
                    .post(url)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            })
        }
    }
}
