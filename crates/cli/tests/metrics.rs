//! `alluvium run --metrics-listen`: the engine's Prometheus metrics while the pipeline runs
//! over the sample — every record counted once per partition, commits counted and timed per
//! sink.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{alluvium, load_sample, serve, unique};

/// The value of every sample of `metric` whose labels contain `filter`.
fn samples(text: &str, metric: &str, filter: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| {
            l.starts_with(metric) && l[metric.len()..].starts_with('{') && l.contains(filter)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// The lake's three sinks (named by their first table).
const SINKS: [&str; 3] = ["silver.orders", "silver.quarantine", "bronze.orders"];

#[test]
fn the_pipeline_exports_engine_metrics() {
    let prefix = format!("{}-", unique("metrics"));
    load_sample(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let mut child = alluvium([
        "run",
        "--topic-prefix",
        &prefix,
        "--state",
        dir.path().join("state").to_str().unwrap(),
        "--lake",
        dir.path().join("lake").to_str().unwrap(),
        "-w",
        "2",
        "--epoch-records",
        "200",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let topic_filter = format!("topic=\"{prefix}");
    let deadline = Instant::now() + Duration::from_secs(90);
    let text = loop {
        let out = Command::new("curl").args(["-sf", &url]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let records: f64 = samples(&text, "alluvium_source_records_total", &topic_filter)
            .iter()
            .sum();
        let sinks_committed = SINKS.iter().all(|sink| {
            samples(&text, "alluvium_sink_commits_total", sink)
                .iter()
                .sum::<f64>()
                >= 1.0
        });
        // The lag watcher asks the brokers every 2 s.
        let lag_known = samples(&text, "alluvium_source_lag", &topic_filter).len() == 12;
        if records >= 1379.0 && sinks_committed && lag_known {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the whole sample committed:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = child.kill();
    let _ = child.wait();
    let per_partition = samples(&text, "alluvium_source_records_total", &topic_filter);
    assert_eq!(per_partition.len(), 12, "3 topics x 4 partitions:\n{text}");
    assert_eq!(
        per_partition.iter().sum::<f64>(),
        1379.0,
        "each record counted once"
    );
    let positions: f64 = samples(&text, "alluvium_source_position", &topic_filter)
        .iter()
        .sum();
    assert_eq!(positions, 1379.0, "positions = next offsets, summed");
    let lags = samples(&text, "alluvium_source_lag", &topic_filter);
    assert!(lags.iter().all(|l| *l >= 0.0), "lags {lags:?}");
    assert!(samples(&text, "alluvium_epochs_closed_total", "").is_empty());
    assert!(text.contains("alluvium_epochs_closed_total "), "{text}");
    // One duration sample per closed epoch (a scrape may fall between a source's two
    // updates, once per worker).
    let closed: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("alluvium_epochs_closed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let durations: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("alluvium_epoch_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0);
    assert!(
        closed >= 1.0 && (closed - durations).abs() <= 2.0,
        "{closed} epochs, {durations} durations"
    );
    let epoch_p99 = samples(
        &text,
        "alluvium_epoch_seconds_quantile",
        "quantile=\"0.99\"",
    );
    assert!(
        epoch_p99.len() == 1 && epoch_p99[0] > 0.0,
        "epoch p99 {epoch_p99:?}:\n{text}"
    );
    // Every lake sink committed and timed its commits.
    for sink in SINKS {
        let commits = samples(&text, "alluvium_sink_commits_total", sink);
        assert!(
            commits.iter().sum::<f64>() >= 1.0,
            "{sink} commits:\n{text}"
        );
        let timed = samples(&text, "alluvium_sink_commit_seconds_count", sink);
        assert_eq!(timed, commits, "{sink}: one latency sample per commit");
        // The HDR quantiles: p50 <= p99 <= max, all positive.
        let quantiles: Vec<f64> = ["0.5", "0.99", "1"]
            .iter()
            .map(|q| {
                let quantile = format!("quantile=\"{q}\"");
                let v: Vec<f64> = text
                    .lines()
                    .filter(|l| {
                        l.starts_with("alluvium_sink_commit_seconds_quantile{")
                            && l.contains(sink)
                            && l.contains(&quantile)
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                    .collect();
                assert_eq!(v.len(), 1, "{sink} quantile {q}:\n{text}");
                v[0]
            })
            .collect();
        assert!(
            quantiles[0] > 0.0 && quantiles[0] <= quantiles[1] && quantiles[1] <= quantiles[2],
            "{sink} commit quantiles {quantiles:?}"
        );
        assert!(!samples(&text, "alluvium_sink_committed_epoch", sink).is_empty());
        assert_eq!(
            samples(&text, "alluvium_sink_commit_failures_total", sink),
            [0.0],
            "{sink}: failures reported from zero"
        );
        assert!(
            samples(&text, "alluvium_sink_rows_total", sink)
                .iter()
                .sum::<f64>()
                >= 1.0,
            "{sink} staged rows:\n{text}"
        );
    }
    // What the lake wrote, per table, and what flowed out of the graph's stages.
    for table in ["bronze.orders", "silver.quarantine"] {
        let filter = format!("table=\"{table}\"");
        for metric in [
            "alluvium_lake_files_written_total",
            "alluvium_lake_bytes_written_total",
            "alluvium_lake_records_written_total",
        ] {
            assert!(
                samples(&text, metric, &filter).iter().sum::<f64>() >= 1.0,
                "{metric} {table}:\n{text}"
            );
        }
    }
    for stage in [
        "records",
        "silver.orders",
        "gold.fact_order_items",
        "silver.quarantine",
    ] {
        assert!(
            samples(
                &text,
                "alluvium_stage_records_total",
                &format!("stage=\"{stage}\"")
            )
            .iter()
            .sum::<f64>()
                >= 1.0,
            "stage {stage}:\n{text}"
        );
    }
    // Data-quality results of the epochs committed so far.
    assert!(
        !samples(&text, "alluvium_dq_last_checked", "table=\"silver.orders\"").is_empty(),
        "{text}"
    );
}

/// The sample names a scrape exports: every sample line, plus the names a registered family
/// will have once it has samples (`# TYPE` lines: counters `_total`, histograms
/// `_bucket`/`_sum`/`_count`).
fn exported_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

fn scrape(url: &str) -> String {
    let out = Command::new("curl").args(["-sf", url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let prefix = format!("{}-", unique("dash"));
    load_sample(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let lake = dir.path().join("lake");
    // The whole pipeline, lake and warehouse included: the dashboard shows their writes.
    let warehouse = common::fresh_database(&unique("dashwh"));
    let run = serve(
        &[
            "run",
            "--topic-prefix",
            &prefix,
            "--state",
            state.to_str().unwrap(),
            "--lake",
            lake.to_str().unwrap(),
            "--warehouse-url",
            &warehouse,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        "metrics on ",
    );
    let api = common::serve_ingest_api(&prefix);
    let db = unique("dash");
    let pg = common::fresh_database(&db);
    common::psql(
        &pg,
        "CREATE TABLE customers(customer_id bigint primary key, email text); \
         INSERT INTO customers VALUES (1, 'a@b.co')",
    );
    let cdc = serve(
        &[
            "ingest",
            "cdc",
            "--pg-url",
            &pg,
            "--slot",
            &db,
            "--state",
            dir.path().join("cdc.json").to_str().unwrap(),
            "--topic-prefix",
            &format!("{prefix}cdc-"),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        "metrics on ",
    );
    // Some traffic, so labelled families have samples.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args([
                "-H",
                "content-type: application/json",
                "--data",
                "{\"order_id\":\"x\"}",
            ])
            .arg(format!("{}/v1/orders", api.url))
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout) == "202"
            && scrape(&run.url).contains("alluvium_warehouse_rows_total")
            && scrape(&run.url).contains("alluvium_lake_bytes_written_total")
            && scrape(&run.url).contains("alluvium_source_lag{")
            && scrape(&cdc.url).contains("alluvium_cdc_events_total 1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no traffic through the processes"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut exported = exported_names(&scrape(&run.url));
    exported.extend(exported_names(&scrape(&format!("{}/metrics", api.url))));
    exported.extend(exported_names(&scrape(&cdc.url)));

    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/alluvium.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("alluvium_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 10, "the dashboard queries {queried:?}");
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}"
    );
}

#[test]
fn backfill_reports_progress_in_plain_lines_without_a_terminal() {
    let prefix = format!("{}-", unique("backfill"));
    load_sample(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("csv");
    let out = alluvium([
        "backfill",
        "--topic-prefix",
        &prefix,
        "--state",
        dir.path().join("state").to_str().unwrap(),
        "--export-csv",
        export.to_str().unwrap(),
    ])
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let last = stderr
        .lines()
        .rfind(|l| l.contains("backfill progress"))
        .unwrap_or_else(|| panic!("no progress line in:\n{stderr}"));
    assert!(
        last.contains("done=1379") && last.contains("total=1379") && last.contains("100.0"),
        "{last}"
    );
    common::assert_matches_expected(&export);
}
