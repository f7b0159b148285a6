//! `alluvium run --metrics-listen`: the engine's Prometheus metrics while the pipeline runs
//! over the sample — every record counted once per partition, commits counted and timed per
//! sink.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{alluvium, load_sample, unique};

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
        let sinks_committed = SINKS
            .iter()
            .all(|sink| !samples(&text, "alluvium_sink_commits_total", sink).is_empty());
        if records >= 1379.0 && sinks_committed {
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
    assert!(samples(&text, "alluvium_epochs_closed_total", "").is_empty());
    assert!(text.contains("alluvium_epochs_closed_total "), "{text}");
    // Every lake sink committed and timed its commits.
    for sink in SINKS {
        let commits = samples(&text, "alluvium_sink_commits_total", sink);
        assert!(
            commits.iter().sum::<f64>() >= 1.0,
            "{sink} commits:\n{text}"
        );
        let timed = samples(&text, "alluvium_sink_commit_seconds_count", sink);
        assert_eq!(timed, commits, "{sink}: one latency sample per commit");
        assert!(!samples(&text, "alluvium_sink_committed_epoch", sink).is_empty());
    }
}
