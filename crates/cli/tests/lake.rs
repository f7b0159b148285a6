//! The Iceberg lake against the real services: the sample through the broker into a lake on
//! local disk (with the PostgreSQL warehouse beside it) and into one on the S3 server, read
//! back with our export, with iceberg-rust's own scan and with PyIceberg — all equal to
//! `expected/`; bronze holds every Kafka offset exactly once. Then SIGKILLs at random points
//! (during file writes and between the Iceberg commits and the warehouse commit) and a
//! restart: the lake and the warehouse are exact, no epoch was committed twice.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use alluvium_connectors::lake::read::{blocking, scan_table, scan_table_with_iceberg};
use alluvium_connectors::lake::{LakeConfig, S3Options};
use alluvium_medallion::lake::{bronze_defs, table_defs};
use rand::Rng;

mod common;
use common::{
    alluvium, assert_matches_expected, assert_warehouse_matches, case, fresh_database,
    later_claim_fences_the_earlier, load_sample as load, ok, psql, run_into_lake, service_env,
    sorted_csv, unique,
};

/// The sample loaded into topics of a fresh prefix named after `name`, and a directory for
/// the test's state and lake.
fn loaded(name: &str) -> (String, tempfile::TempDir) {
    let prefix = prefix(name);
    load(&prefix);
    (prefix, tempfile::tempdir().unwrap())
}

fn prefix(name: &str) -> String {
    format!("{}-", unique(name))
}

/// The sample has 1,379 messages; bronze must hold each `(topic, partition, offset)` once.
fn assert_bronze_exact(config: &LakeConfig) {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for def in bronze_defs() {
        let rows = blocking(scan_table(config, &def)).unwrap();
        for r in rows {
            total += 1;
            let key = (r[5].clone(), r[6].clone(), r[7].clone());
            assert!(seen.insert(key.clone()), "bronze holds {key:?} twice");
        }
    }
    assert_eq!(total, 1379, "bronze rows");
}

/// iceberg-rust's own scan reads the silver and gold tables as our export does.
fn assert_iceberg_scan_agrees(config: &LakeConfig) {
    for def in table_defs() {
        let mut ours = blocking(scan_table(config, &def)).unwrap();
        let mut theirs = blocking(scan_table_with_iceberg(config, &def)).unwrap();
        ours.sort();
        theirs.sort();
        assert!(
            !ours.is_empty() || def.namespace == "dq",
            "{} is empty",
            def.qualified_name()
        );
        assert_eq!(ours, theirs, "{}", def.qualified_name());
    }
}

/// PyIceberg or DuckDB (tests/interop/read_lake.py) reads every silver and gold table equal
/// to `expected/`, and (PyIceberg) every table carries the epoch property.
fn assert_engine_reads(
    engine: &str,
    uri: &str,
    warehouse: &str,
    s3_endpoint: Option<&str>,
    out: &Path,
) {
    assert_engine_reads_with_token(engine, uri, warehouse, s3_endpoint, None, out);
}

/// [`assert_engine_reads`] sending a REST catalog `token`.
fn assert_engine_reads_with_token(
    engine: &str,
    uri: &str,
    warehouse: &str,
    s3_endpoint: Option<&str>,
    token: Option<&str>,
    out: &Path,
) {
    let python = service_env("ALLUVIUM_PYTHON");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/read_lake.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args([engine, "alluvium", uri, warehouse])
        .arg(out);
    if let Some(e) = s3_endpoint {
        cmd.arg(e);
    }
    match token {
        Some(token) => cmd.env("ALLUVIUM_LAKE_CATALOG_TOKEN", token),
        None => cmd.env_remove("ALLUVIUM_LAKE_CATALOG_TOKEN"),
    };
    let output = cmd.output().expect("running python");
    assert!(
        output.status.success(),
        "{engine}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(
        listing.lines().count() >= 14,
        "tables seen by {engine}: {listing}"
    );
    for line in listing.lines() {
        assert!(!line.ends_with(" None"), "no epoch in the snapshot: {line}");
    }
    for def in table_defs() {
        let expected = match def.namespace.as_str() {
            "silver" => format!("silver_{}.csv", def.name),
            "gold" => format!("{}.csv", def.name),
            _ => continue,
        };
        let drop_last = def.name == "dim_customers";
        let text = std::fs::read_to_string(case().join("expected").join(&expected)).unwrap();
        let want = sorted_csv(&text, true, drop_last);
        let got_text =
            std::fs::read_to_string(out.join(format!("{}.csv", def.qualified_name()))).unwrap();
        let got = sorted_csv(&got_text, true, false);
        assert_eq!(got, want, "{engine}'s {}", def.qualified_name());
    }
}

/// `alluvium lake export` of the local lake in `lake` into `out`, compared with `expected/`.
fn assert_lake_matches_expected(lake: &Path, out: &Path) {
    ok([
        "lake",
        "export",
        "--lake",
        lake.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_matches_expected(out);
}

/// Every table's current snapshot lists at most `most` manifests, though the run committed
/// many more epochs than that.
fn assert_manifests_merged(config: &LakeConfig, most: usize) {
    blocking(async {
        let catalog = config.open_catalog().await?;
        for def in table_defs() {
            let t = alluvium_connectors::lake::commit::ensure_table(catalog.as_ref(), &def).await?;
            let Some(snapshot) = t.metadata().current_snapshot() else {
                continue;
            };
            let list = t.manifest_list_reader(snapshot).load().await.map_err(|e| {
                alluvium_connectors::lake::LakeError::Data(format!("manifest list: {e}"))
            })?;
            assert!(
                list.entries().len() <= most,
                "{}: {} manifests after {} snapshots",
                def.qualified_name(),
                list.entries().len(),
                t.metadata().snapshots().count()
            );
        }
        Ok(())
    })
    .unwrap();
}

/// `alluvium lake export` of the lake given by `lake` (flags) into `out`, compared with
/// `expected/`.
fn export_matches_expected(lake: &[&str], out: &Path) {
    let mut args = vec!["lake", "export", "--out", out.to_str().unwrap()];
    args.extend(lake);
    ok(args);
    assert_matches_expected(out);
}

/// A lake in the catalog `uri` with its warehouse on the test S3 server at `endpoint`.
fn s3_lake(uri: &str, warehouse: &str, endpoint: &str) -> LakeConfig {
    let mut config = LakeConfig::new(uri, warehouse);
    config.s3 = S3Options {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        path_style: true,
    };
    config
}

fn local_config(dir: &Path) -> LakeConfig {
    LakeConfig::local(dir).unwrap()
}

#[test]
fn sample_into_local_and_s3_lakes_reads_back_exactly() {
    let (prefix, dir) = loaded("lake");
    let lake = dir.path().join("lake");
    let url = fresh_database(&unique("lake").to_lowercase());
    ok([
        "run",
        "--topic-prefix",
        &prefix,
        "--state",
        dir.path().join("state").to_str().unwrap(),
        "--until-idle",
        "--lake",
        lake.to_str().unwrap(),
        "--warehouse-url",
        &url,
        "-w",
        "2",
        "--epoch-records",
        "60",
        "--epoch-ms",
        "20",
        // Merge manifests early, so that every reader below reads merged ones.
        "--lake-manifest-merge-count",
        "4",
    ]);
    assert_lake_matches_expected(&lake, &dir.path().join("csv"));
    let config = local_config(&lake);
    assert_manifests_merged(&config, 4);
    assert_bronze_exact(&config);
    assert_iceberg_scan_agrees(&config);
    assert_warehouse_matches(&url);
    // The warehouse's progress is the epoch of the gold snapshots.
    let progress = psql(&url, "SELECT epoch FROM pipeline.progress");
    let gold = alluvium_connectors::lake::read::blocking(async {
        let catalog = config.open_catalog().await?;
        let mut epochs = BTreeSet::new();
        for def in table_defs().iter().filter(|d| d.namespace == "gold") {
            let t = alluvium_connectors::lake::commit::ensure_table(catalog.as_ref(), def).await?;
            if let Some(c) = alluvium_connectors::lake::commit::last_commit(&t)? {
                epochs.insert(c.epoch);
            }
        }
        Ok(epochs)
    })
    .unwrap();
    let last_gold = gold.iter().max().copied().unwrap();
    assert_eq!(progress.trim().parse::<u64>().unwrap(), last_gold);
    let uri = format!("sqlite:///{}", lake.join("catalog.db").display());
    let warehouse = format!("file://{}", lake.join("warehouse").display());
    // Retractions were committed as position deletes, which every reader below applies.
    assert!(
        delete_files(&config) > 0,
        "no current-state table has position deletes"
    );
    assert_engine_reads("pyiceberg", &uri, &warehouse, None, &dir.path().join("py"));
    assert_engine_reads("duckdb", &uri, &warehouse, None, &dir.path().join("duckdb"));

    // Maintenance: compact, expire all but the last snapshot, remove orphans; the tables are
    // unchanged, and a restarted pipeline finds its epoch in the compacted snapshots (it
    // neither re-appends bronze nor changes anything).
    ok([
        "maintain",
        "--lake",
        lake.to_str().unwrap(),
        "--expire-older-than-minutes",
        "0",
        "--retain-last",
        "1",
        "--remove-orphans-older-than-minutes",
        "0",
    ]);
    blocking(async {
        let catalog = config.open_catalog().await?;
        for def in bronze_defs() {
            let t = alluvium_connectors::lake::commit::ensure_table(catalog.as_ref(), &def).await?;
            assert_eq!(
                t.metadata().snapshots().count(),
                1,
                "{}",
                def.qualified_name()
            );
            // Every commit wrote a new metadata file; none was written over.
            let current = t.metadata_location().unwrap_or_default().to_string();
            let log: Vec<&str> = t
                .metadata()
                .metadata_log()
                .iter()
                .map(|m| m.metadata_file.as_str())
                .collect();
            assert!(
                log.len() >= 2 && !log.contains(&current.as_str()),
                "{current} {log:?}"
            );
            let files = alluvium_connectors::lake::commit::live_files(&t).await?;
            let mut days = BTreeSet::new();
            for f in &files {
                assert!(
                    days.insert(format!("{:?}", f.partition())),
                    "{}: uncompacted",
                    def.qualified_name()
                );
            }
        }
        Ok(())
    })
    .unwrap();
    ok([
        "run",
        "--topic-prefix",
        &prefix,
        "--state",
        dir.path().join("state").to_str().unwrap(),
        "--until-idle",
        "--lake",
        lake.to_str().unwrap(),
    ]);
    assert_lake_matches_expected(&lake, &dir.path().join("csv-after-maintain"));
    // Compaction folded the deletes into the files (the run after it changed nothing).
    assert_eq!(delete_files(&config), 0);
    assert_bronze_exact(&config);

    // The same into the S3 server, with the catalog in its own SQLite file.
    let endpoint = service_env("ALLUVIUM_S3_ENDPOINT");
    let bucket = service_env("ALLUVIUM_S3_BUCKET");
    let s3_warehouse = format!("s3://{bucket}/{}", unique("lake"));
    let catalog_db = dir.path().join("s3-catalog.db");
    let catalog_uri = format!("sqlite://{}?mode=rwc", catalog_db.display());
    let lake_flags = [
        "--lake-warehouse",
        s3_warehouse.as_str(),
        "--lake-catalog-uri",
        catalog_uri.as_str(),
        "--s3-endpoint",
        endpoint.as_str(),
    ];
    run_into_lake(
        &prefix,
        &dir.path().join("s3-state"),
        &lake_flags,
        // The lake commits the epochs of each 100 ms together.
        &["--epoch-records", "100", "--lake-commit-ms", "100"],
    );
    export_matches_expected(&lake_flags, &dir.path().join("s3-csv"));
    let s3_config = s3_lake(&catalog_uri, &s3_warehouse, &endpoint);
    assert_bronze_exact(&s3_config);
    let uri = format!("sqlite:///{}", catalog_db.display());
    assert_engine_reads(
        "pyiceberg",
        &uri,
        &s3_warehouse,
        Some(&endpoint),
        &dir.path().join("s3-py"),
    );

    // The PostgreSQL-backed catalog, data on local disk, one worker, one epoch.
    let catalog_url = fresh_database(&unique("catalog").to_lowercase());
    let pg_warehouse = format!("file://{}", dir.path().join("pg-warehouse").display());
    let pg_flags = catalog_flags(pg_warehouse.as_str(), catalog_url.as_str());
    run_into_lake(
        &prefix,
        &dir.path().join("pg-state"),
        &pg_flags,
        &["--epoch-records", "100000", "--epoch-ms", "60000"],
    );
    export_matches_expected(&pg_flags, &dir.path().join("pg-csv"));
    let tables = psql(
        &catalog_url,
        "SELECT count(*) FROM iceberg_tables WHERE catalog_name = 'alluvium'",
    );
    assert_eq!(tables.trim(), "14", "tables in the PostgreSQL catalog");
}

#[test]
fn killed_pipeline_leaves_an_exact_lake_and_warehouse() {
    let (prefix, dir) = loaded("lakekill");
    let lake = dir.path().join("lake");
    let url = fresh_database(&unique("lakekill").to_lowercase());
    let state = dir.path().join("state");
    let run_args = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "run",
            "--topic-prefix",
            &prefix,
            "--state",
            state.to_str().unwrap(),
            "--lake",
            lake.to_str().unwrap(),
            "--warehouse-url",
            &url,
            "--epoch-records",
            "40",
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
    let config = local_config(&lake);
    let lake_commits = || -> Vec<_> {
        blocking(async {
            let catalog = config.open_catalog().await?;
            let t =
                alluvium_connectors::lake::commit::ensure_table(catalog.as_ref(), &table_defs()[0])
                    .await?;
            alluvium_connectors::lake::commit::last_commit(&t)
        })
        .into_iter()
        .flatten()
        .collect()
    };
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut i = 0;
    loop {
        // Six kills at random points; on a loaded machine (CI runs tests side by side) all
        // six may come before the first commit, so later runs live longer, until one has
        // committed (at most six more).
        let life = if i < 6 { 300..1500 } else { 1500..4000 };
        let mut child = alluvium(run_args(&["-w", if i % 2 == 0 { "1" } else { "2" }]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(life)));
        // SIGKILL (std's kill): no chance to finish a file, a manifest or a transaction.
        if child.try_wait().unwrap().is_none() {
            kills += 1;
            let _ = child.kill();
            let _ = child.wait();
        } else {
            let out = child.wait_with_output().unwrap();
            let kept = dir.keep();
            panic!(
                "run {i} stopped by itself (lake kept in {}): {}",
                kept.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        i += 1;
        if i >= 12 || (i >= 6 && !lake_commits().is_empty()) {
            break;
        }
    }
    assert!(kills >= 5, "only {kills} runs were killed mid-way");
    let committed = lake_commits();
    assert!(
        !committed.is_empty(),
        "the killed runs committed nothing to the lake"
    );

    let args = run_args(&["--until-idle", "-w", "2"]);
    ok(args);
    assert_lake_matches_expected(&lake, &dir.path().join("csv"));
    assert_bronze_exact(&config);
    assert_warehouse_matches(&url);
    assert_each_epoch_once(&config);
}

/// Epochs are committed in order, each once, in every table's snapshot history (a
/// compaction snapshot repeats the epoch it compacted: those are told apart by their
/// `replace` operation).
fn assert_each_epoch_once(config: &LakeConfig) {
    blocking(async {
        let catalog = config.open_catalog().await?;
        for def in table_defs().iter().chain(bronze_defs().iter()) {
            let t = alluvium_connectors::lake::commit::ensure_table(catalog.as_ref(), def).await?;
            let mut epochs: Vec<u64> = t
                .metadata()
                .snapshots()
                .filter(|s| s.summary().operation != iceberg::spec::Operation::Replace)
                .filter_map(|s| {
                    s.summary()
                        .additional_properties
                        .get("alluvium.epoch")
                        .map(|e| e.parse().unwrap())
                })
                .collect();
            let n = epochs.len();
            epochs.sort();
            epochs.dedup();
            assert_eq!(
                epochs.len(),
                n,
                "{}: an epoch was committed twice",
                def.qualified_name()
            );
        }
        Ok(())
    })
    .unwrap();
}

/// Arguments of a small-epoch run of the sample into `lake`.
fn small_epoch_run(prefix: &str, state: &Path, lake: &Path) -> Vec<String> {
    small_epoch_run_into(prefix, state, &["--lake", lake.to_str().unwrap()])
}

/// Arguments of a small-epoch run of the sample into the lake of `lake_flags`.
fn small_epoch_run_into(prefix: &str, state: &Path, lake_flags: &[&str]) -> Vec<String> {
    [
        "run",
        "--topic-prefix",
        prefix,
        "--state",
        state.to_str().unwrap(),
    ]
    .into_iter()
    .chain(lake_flags.iter().copied())
    .chain([
        "--epoch-records",
        "40",
        "--epoch-ms",
        "10",
        "--max-inflight-epochs",
        "1",
        "--until-idle",
    ])
    .map(str::to_string)
    .collect()
}

#[test]
fn a_second_instance_on_the_same_lake_is_fenced() {
    let (prefix, dir) = loaded("fence");
    let lake = dir.path().join("lake");
    // Two instances of the same pipeline, started together on the same lake.
    let spawn = |state: &str| {
        alluvium(small_epoch_run(&prefix, &dir.path().join(state), &lake))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a"), spawn("b"));
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let fenced = outs
        .iter()
        .filter(|o| !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("fenced"))
        .count();
    for o in &outs {
        assert!(
            o.status.success() || String::from_utf8_lossy(&o.stderr).contains("fenced"),
            "an instance failed otherwise: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The instance that claimed the lake last runs to the end; the other stops at its next
    // commit after that claim.
    assert!(
        fenced >= 1,
        "neither instance was fenced: the runs did not overlap"
    );
    assert_eq!(fenced, 1, "both instances were fenced");
    // A run after them leaves every table exact and each offset once.
    ok(small_epoch_run(&prefix, &dir.path().join("c"), &lake));
    let config = local_config(&lake);
    assert_lake_matches_expected(&lake, &dir.path().join("csv"));
    assert_bronze_exact(&config);
    assert_each_epoch_once(&config);
}

#[test]
fn maintenance_while_the_pipeline_commits() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake_flags = ["--lake", lake.to_str().unwrap()];
    maintenance_while_committing(&dir, &lake_flags, &local_config(&lake), || {
        lake.join("catalog.db").exists()
    });
}

/// The same in a REST catalog: `alluvium maintain` commits through the server, the
/// pipeline's commit then fails its `assert-ref-snapshot-id` (409), reloads the table and
/// retries on top of the maintenance snapshot.
#[test]
fn maintenance_while_the_pipeline_commits_in_a_rest_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = file_warehouse(dir.path());
    let server = common::rest_catalog(&warehouse, &dir.path().join("rustberg.log"));
    let lake_flags = catalog_flags(&warehouse, &server.url);
    let config = LakeConfig::new(server.url.clone(), warehouse.clone());
    maintenance_while_committing(&dir, &lake_flags, &config, || true);
}

/// Runs the sample in small epochs into the lake of `lake_flags` while `alluvium maintain`
/// compacts and expires it over and over (once `ready`): commits must meet maintenance
/// snapshots, retry on them, and leave exact tables, each epoch and each offset once.
fn maintenance_while_committing(
    dir: &tempfile::TempDir,
    lake_flags: &[&str],
    config: &LakeConfig,
    ready: impl Fn() -> bool,
) {
    let prefix = prefix("maintrun");
    load(&prefix);
    let run = small_epoch_run_into(&prefix, &dir.path().join("state"), lake_flags);
    let mut pipeline = alluvium(run)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut maintain = vec![
        "maintain",
        "--retain-last",
        "1",
        "--expire-older-than-minutes",
        "0",
    ];
    maintain.extend(lake_flags);
    let mut maintained = 0;
    while pipeline.try_wait().unwrap().is_none() {
        if ready() {
            // Compaction and expiry commit snapshots the pipeline's next commit must build on.
            let out = alluvium(&maintain).output().unwrap();
            if out.status.success() {
                maintained += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = pipeline.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pipeline failed: {stderr}");
    assert!(
        maintained > 0,
        "maintenance never ran while the pipeline did"
    );
    let retried = stderr
        .matches("retrying on the table's current snapshot")
        .count();
    eprintln!("{maintained} maintenance runs; {retried} commit conflicts retried");
    assert!(
        retried > 0,
        "no commit met a maintenance snapshot: the path was not exercised"
    );
    export_matches_expected(lake_flags, &dir.path().join("csv"));
    assert_bronze_exact(config);
    assert_each_epoch_once(config);
}

/// The last epoch committed to a lake table, if any.
fn lake_epoch(config: &LakeConfig, def: &alluvium_connectors::lake::TableDef) -> Option<u64> {
    blocking(async {
        let catalog = config.open_catalog().await?;
        let t = alluvium_connectors::lake::commit::ensure_table(catalog.as_ref(), def).await?;
        alluvium_connectors::lake::commit::last_commit(&t)
    })
    .unwrap()
    .map(|c| c.epoch)
}

#[test]
fn aimed_crashes_between_the_lake_and_the_warehouse_and_during_file_writes() {
    let (prefix, dir) = loaded("lakeaim");
    let lake = dir.path().join("lake");
    let url = fresh_database(&unique("lakeaim").to_lowercase());
    let state = dir.path().join("state");
    let args: Vec<String> = [
        "run",
        "--topic-prefix",
        &prefix,
        "--state",
        state.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
        "--warehouse-url",
        &url,
        // Large upserts through COPY + merge, small ones through unnest: both paths.
        "--warehouse-bulk-rows",
        "40",
        "--epoch-records",
        "100",
        "--epoch-ms",
        "10",
        "--max-inflight-epochs",
        "1",
        "--until-idle",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let crash = |failpoint: &str| {
        let status = alluvium(&args)
            .env("ALLUVIUM_FAILPOINT", failpoint)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(
            !status.success(),
            "the failpoint {failpoint} was not reached"
        );
    };
    let config = local_config(&lake);
    let orders = &table_defs()[0];

    // 1. The warehouse stops before its 3rd commit while the lake goes on; once the lake is
    //    ahead, SIGKILL: a crash between the lake's and the warehouse's commits.
    let mut child = alluvium(&args)
        .env(
            "ALLUVIUM_FAILPOINT",
            "hang_before_commit:warehouse:medallion:3",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let (lake_at, warehouse_at) = loop {
        let lake_at = lake_epoch(&config, orders).unwrap_or(0);
        let progress = psql(
            &url,
            "SELECT coalesce(max(epoch), 0) FROM pipeline.progress",
        );
        let warehouse_at: u64 = progress.trim().parse().unwrap_or(0);
        if warehouse_at > 0 && lake_at > warehouse_at {
            break (lake_at, warehouse_at);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the lake never got ahead of the warehouse ({lake_at} vs {warehouse_at})"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(warehouse_at < lake_at);

    // 2. Bronze files of an epoch written, not committed: they stay unreferenced (orphans).
    crash("after_stage:iceberg:bronze.orders:2");
    let orphans = blocking(async {
        let catalog = config.open_catalog().await?;
        let mut n = 0;
        for def in bronze_defs() {
            let t = alluvium_connectors::lake::commit::ensure_table(catalog.as_ref(), &def).await?;
            n += alluvium_connectors::lake::maintain::orphan_files_local(&t, Duration::ZERO)
                .await?
                .len();
        }
        Ok(n)
    })
    .unwrap();
    assert!(orphans > 0, "no data files of the crashed epoch were left");

    // 3. Run to the end: every table exact, each offset once in bronze; maintenance removes the
    //    orphans and changes no table.
    let status = alluvium(&args).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    assert_lake_matches_expected(&lake, &dir.path().join("csv"));
    assert_bronze_exact(&config);
    assert_warehouse_matches(&url);
    let out = alluvium([
        "maintain",
        "--lake",
        lake.to_str().unwrap(),
        "--no-compact",
        "--remove-orphans-older-than-minutes",
        "0",
    ])
    .output()
    .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("removed ") && !l.starts_with("removed 0 ")),
        "{text}"
    );
    assert_lake_matches_expected(&lake, &dir.path().join("csv-after-maintain"));
    assert_bronze_exact(&config);
}

/// Live position delete files over every current-state table of the lake.
fn delete_files(config: &LakeConfig) -> usize {
    blocking(async {
        let catalog = config.open_catalog().await?;
        let mut n = 0;
        for def in table_defs() {
            let t = alluvium_connectors::lake::commit::ensure_table(catalog.as_ref(), &def).await?;
            n += alluvium_connectors::lake::commit::live_files_and_deletes(&t)
                .await?
                .1
                .len();
        }
        Ok(n)
    })
    .unwrap()
}

/// The writer lease in a PostgreSQL-backed catalog: once a second instance claimed it, the
/// first one's commit fails (fenced) even on a table the second has not touched, and the
/// lake keeps exactly what the first committed before.
#[test]
fn a_later_claim_fences_the_earlier_committer_in_a_postgres_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let catalog_url = fresh_database(&unique("leasecat").to_lowercase());
    let config = LakeConfig::new(
        catalog_url,
        format!("file://{}", dir.path().join("warehouse").display()),
    );
    later_claim_fences_in(&config);
}

/// [`later_claim_fences_the_earlier`] on a current-state table of the lake `config`.
fn later_claim_fences_in(config: &LakeConfig) {
    use alluvium_connectors::lake::{Column, ColumnType, IcebergSink, TableDef, TableMode, Value};
    let def = TableDef::new(
        "silver",
        "kv",
        TableMode::CurrentState,
        vec![
            Column::required("k", ColumnType::Long),
            Column::optional("v", ColumnType::String),
        ],
    );
    let sink = || {
        IcebergSink::new(config.clone(), vec![def.clone()], |r: &(i64, String)| {
            Some((
                0,
                vec![Value::Long(r.0), Value::String(r.1.as_str().into())],
            ))
        })
        .unwrap()
    };
    let row = |k: i64| [((k, format!("v{k}")), 1isize)];
    let (old, new) = (sink(), sink());
    let error = later_claim_fences_the_earlier(&old, &new, [&row(1), &row(2)], &row(3));
    let generation = new.claim().unwrap().generation; // already held: no new claim
    assert!(
        error.contains("fenced") && error.contains(&format!("generation {generation}")),
        "{error}"
    );
    let mut rows = blocking(scan_table(config, &def)).unwrap();
    rows.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        rows,
        vec![
            vec![Value::Long(1), Value::String("v1".into())],
            vec![Value::Long(3), Value::String("v3".into())],
        ]
    );
}

/// The sample through an Iceberg REST catalog (rustberg) over local disk, then over S3: the pipeline
/// creates its tables through the catalog, commits every epoch as a REST commit (a
/// transaction with the writer lease), expires old snapshots as it goes; our export,
/// iceberg-rust's scan and PyIceberg (through the same REST catalog) read every table equal
/// to `expected/`; `alluvium maintain` compacts and expires through the catalog, and a
/// restarted pipeline finds its epochs and changes nothing.
#[test]
fn sample_through_a_rest_catalog_reads_back_exactly() {
    let (prefix, dir) = loaded("rest");
    let warehouse = file_warehouse(dir.path());
    let server = common::rest_catalog(&warehouse, &dir.path().join("rustberg.log"));
    let lake_flags = catalog_flags(warehouse.as_str(), server.url.as_str());
    let state = dir.path().join("state");
    let run = |extra: &[&str]| run_into_lake(&prefix, &state, &lake_flags, extra);
    let export = |name: &str| export_matches_expected(&lake_flags, &dir.path().join(name));
    run(&[
        "-w",
        "2",
        "--epoch-records",
        "60",
        "--epoch-ms",
        "20",
        "--lake-manifest-merge-count",
        "4",
        // Expire as the pipeline commits: the REST commit carries `remove-snapshots`.
        "--lake-retain-snapshots",
        "4",
    ]);
    export("csv");
    let config = LakeConfig::new(server.url.clone(), warehouse.clone());
    assert_bronze_exact(&config);
    assert_iceberg_scan_agrees(&config);
    assert_each_epoch_once(&config);
    blocking(async {
        let catalog = config.open_catalog().await?;
        for def in table_defs() {
            let t = alluvium_connectors::lake::commit::ensure_table(catalog.as_ref(), &def).await?;
            let snapshots = t.metadata().snapshots().count();
            assert!(
                snapshots <= 6,
                "{}: {snapshots} snapshots",
                def.qualified_name()
            );
            assert!(
                t.metadata()
                    .location()
                    .starts_with(&format!("{warehouse}/")),
                "{} is at {}",
                def.qualified_name(),
                t.metadata().location()
            );
        }
        Ok(())
    })
    .unwrap();
    assert_engine_reads(
        "pyiceberg",
        &server.url,
        &warehouse,
        None,
        &dir.path().join("py"),
    );

    let mut maintain = vec![
        "maintain",
        "--expire-older-than-minutes",
        "0",
        "--retain-last",
        "1",
    ];
    maintain.extend(lake_flags);
    ok(maintain);
    blocking(async {
        let catalog = config.open_catalog().await?;
        for def in bronze_defs() {
            let t = alluvium_connectors::lake::commit::ensure_table(catalog.as_ref(), &def).await?;
            assert_eq!(
                t.metadata().snapshots().count(),
                1,
                "{}",
                def.qualified_name()
            );
        }
        Ok(())
    })
    .unwrap();
    run(&[]);
    export("csv-after-maintain");
    assert_bronze_exact(&config);
    assert_eq!(delete_files(&config), 0, "compaction left position deletes");

    // The same through a REST catalog whose warehouse is on the S3 server.
    let endpoint = service_env("ALLUVIUM_S3_ENDPOINT");
    let bucket = service_env("ALLUVIUM_S3_BUCKET");
    let s3_warehouse = format!("s3://{bucket}/{}", unique("rest"));
    let s3_server = common::rest_catalog(&s3_warehouse, &dir.path().join("rustberg-s3.log"));
    let s3_flags = [
        "--lake-warehouse",
        s3_warehouse.as_str(),
        "--lake-catalog-uri",
        s3_server.url.as_str(),
        "--s3-endpoint",
        endpoint.as_str(),
    ];
    run_into_lake(
        &prefix,
        &dir.path().join("s3-state"),
        &s3_flags,
        &["--epoch-records", "100"],
    );
    export_matches_expected(&s3_flags, &dir.path().join("s3-csv"));
    let s3_config = s3_lake(&s3_server.url, &s3_warehouse, &endpoint);
    assert_bronze_exact(&s3_config);
    assert_engine_reads(
        "pyiceberg",
        &s3_server.url,
        &s3_warehouse,
        Some(&endpoint),
        &dir.path().join("s3-py"),
    );
}

/// The writer lease in a REST catalog: once a second instance claimed it (an empty
/// snapshot of the lease table), the first one's commit — a transaction asserting the
/// lease's snapshot — fails (fenced), and the table keeps exactly what the first committed
/// before.
#[test]
fn a_later_claim_fences_the_earlier_committer_in_a_rest_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = file_warehouse(dir.path());
    let server = common::rest_catalog(&warehouse, &dir.path().join("rustberg.log"));
    later_claim_fences_in(&LakeConfig::new(server.url.clone(), warehouse));
}

/// A REST catalog that authenticates (API keys sent as bearer tokens): the pipeline's every
/// request carries the configured token. Without one, or with a key that may only read, a
/// run stops before it consumes anything, with the catalog's refusal (401 / 403, not
/// retried as a failure of the catalog); with a writer's key it commits the sample exactly,
/// and a reader's key reads it back (our export and PyIceberg).
#[test]
fn a_rest_catalog_with_api_keys_admits_only_a_writer() {
    const WRITER: &str = "rb_alluvium_writer_0123456789";
    const READER: &str = "rb_alluvium_reader_0123456789";
    let (prefix, dir) = loaded("restauth");
    let warehouse = file_warehouse(dir.path());
    let server = common::rest_catalog_with_keys(
        &warehouse,
        &dir.path().join("rustberg.log"),
        &[("writer", WRITER), ("reader", READER)],
    );
    let lake_flags = catalog_flags(warehouse.as_str(), server.url.as_str());
    let state = dir.path().join("state");
    let refused = |token: Option<&str>, status: &str| {
        let mut args = vec![
            "run",
            "--topic-prefix",
            prefix.as_str(),
            "--state",
            state.to_str().unwrap(),
            "--until-idle",
        ];
        args.extend(lake_flags);
        let mut cmd = alluvium(&args);
        match token {
            Some(t) => cmd.env("ALLUVIUM_LAKE_CATALOG_TOKEN", t),
            None => cmd.env_remove("ALLUVIUM_LAKE_CATALOG_TOKEN"),
        };
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{token:?} was admitted: {stderr}");
        assert!(stderr.contains(status), "{token:?}: {stderr}");
        assert!(!stderr.contains("transient"), "{token:?}: {stderr}");
        assert!(!stderr.contains(READER), "the token was printed: {stderr}");
    };
    refused(None, "HTTP 401");
    refused(Some(READER), "HTTP 403");
    assert_eq!(
        parquet_files(&dir.path().join("warehouse")),
        0,
        "a refused run wrote data"
    );

    run_into_lake(
        &prefix,
        &state,
        &[&lake_flags[..], &["--lake-catalog-token", WRITER]].concat(),
        &["-w", "2", "--epoch-records", "200"],
    );
    export_matches_expected(
        &[&lake_flags[..], &["--lake-catalog-token", READER]].concat(),
        &dir.path().join("csv"),
    );
    assert_engine_reads_with_token(
        "pyiceberg",
        &server.url,
        &warehouse,
        None,
        Some(READER),
        &dir.path().join("py"),
    );
}

/// A warehouse on local disk under `dir`, as a `file://` URL.
fn file_warehouse(dir: &Path) -> String {
    format!("file://{}", dir.join("warehouse").display())
}

/// The flags of a lake in the catalog `uri` (a database or a REST catalog) with its warehouse
/// at `warehouse`.
fn catalog_flags<'a>(warehouse: &'a str, uri: &'a str) -> [&'a str; 4] {
    ["--lake-warehouse", warehouse, "--lake-catalog-uri", uri]
}

/// The Parquet files under `dir`, recursively (0 when it does not exist).
fn parquet_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| match p.is_dir() {
            true => parquet_files(&p),
            false => usize::from(p.extension().is_some_and(|x| x == "parquet")),
        })
        .sum()
}

/// Lost answers: a commit the REST catalog applied but whose answer never reached the
/// pipeline (every third transaction's connection is closed once the server has it) is
/// recognised on retry — the table already holds that epoch with those positions — and not
/// applied twice, nor taken for another instance's commit. The tables come out exact, each
/// epoch once, each offset once.
#[test]
fn a_rest_commit_whose_answer_is_lost_counts_once() {
    let (prefix, dir) = loaded("restlost");
    let warehouse = file_warehouse(dir.path());
    let server = common::rest_catalog(&warehouse, &dir.path().join("rustberg.log"));
    let proxy = common::lossy_tcp_proxy(&server.url, b"/transactions/commit", 3);
    let lake_flags = catalog_flags(warehouse.as_str(), proxy.url.as_str());
    run_into_lake(
        &prefix,
        &dir.path().join("state"),
        &lake_flags,
        &["--epoch-records", "150", "--epoch-ms", "20"],
    );
    let lost = proxy.lost.load(std::sync::atomic::Ordering::SeqCst);
    assert!(lost >= 5, "only {lost} answers were lost");
    let direct = catalog_flags(warehouse.as_str(), server.url.as_str());
    export_matches_expected(&direct, &dir.path().join("csv"));
    let config = LakeConfig::new(server.url.clone(), warehouse.clone());
    assert_bronze_exact(&config);
    assert_each_epoch_once(&config);
}

/// A REST catalog that is not up yet when the pipeline starts (a deployment starting its
/// services together): the claim and the checkpoints are retried with backoff, and the run
/// goes on once the catalog answers, with exact tables.
#[test]
fn a_rest_catalog_that_starts_late_is_waited_for() {
    let (prefix, dir) = loaded("restlate");
    let warehouse = file_warehouse(dir.path());
    let port = common::stable_free_port();
    let uri = format!("http://127.0.0.1:{port}");
    let lake_flags = catalog_flags(warehouse.as_str(), uri.as_str());
    let state = dir.path().join("state");
    let mut args = vec![
        "run",
        "--topic-prefix",
        prefix.as_str(),
        "--state",
        state.to_str().unwrap(),
        "--until-idle",
    ];
    args.extend(lake_flags);
    let pipeline = alluvium(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _server = common::rest_catalog_on(
        port,
        None,
        &warehouse,
        &dir.path().join("rustberg.log"),
        &[],
    );
    let out = pipeline.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("retrying"),
        "the catalog was never waited for: {stderr}"
    );
    export_matches_expected(&lake_flags, &dir.path().join("csv"));
}

/// A REST catalog that goes away in the middle of a run and comes back (restarted on its
/// own persistent catalog): the commits that meet it down fail, are retried with backoff,
/// and go through once it answers again. The tables come out exact, each epoch once.
#[test]
fn a_rest_catalog_restarted_mid_run_is_retried() {
    let (prefix, dir) = loaded("restrestart");
    let warehouse = file_warehouse(dir.path());
    let catalog = dir.path().join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    let port = common::stable_free_port();
    let log = |n: &str| dir.path().join(format!("rustberg-{n}.log"));
    let server = common::rest_catalog_on(port, Some(&catalog), &warehouse, &log("1"), &[]);
    let uri = server.url.clone();
    let lake_flags = catalog_flags(&warehouse, &uri);
    let run = small_epoch_run_into(&prefix, &dir.path().join("state"), &lake_flags);
    let pipeline = alluvium(run)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Down once the pipeline has committed something, for two seconds.
    let bronze = dir.path().join("warehouse");
    for _ in 0..200 {
        if parquet_files(&bronze) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server);
    std::thread::sleep(Duration::from_secs(2));
    let _server = common::rest_catalog_on(port, Some(&catalog), &warehouse, &log("2"), &[]);
    let out = pipeline.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pipeline failed: {stderr}");
    assert!(
        stderr.contains("commit failed, retrying"),
        "no commit met the catalog down: {stderr}"
    );
    export_matches_expected(&lake_flags, &dir.path().join("csv"));
    let config = LakeConfig::new(uri.clone(), warehouse.clone());
    assert_bronze_exact(&config);
    assert_each_epoch_once(&config);
}
